// cpu_kernels_test.cpp — the CPU backend's fill, random and copy kernels against naive loops and known answers.
#include <cstring>

#include "check.h"
#include "core/context.h"
#include "core/philox.h"
#include "cpu/cpu_backend.h"

using namespace sf;

// Known-answer vectors of Philox-4x32-10 from the Random123 distribution (kat_vectors).
TEST(philox_matches_random123_known_answers) {
  Philox4 a = philox4x32_10(0, 0, 0, 0, 0, 0);
  CHECK_EQ(a.v[0], 0x6627e8d5u);
  CHECK_EQ(a.v[1], 0xe169c58du);
  CHECK_EQ(a.v[2], 0xbc57ac4cu);
  CHECK_EQ(a.v[3], 0x9b00dbd8u);
  Philox4 b = philox4x32_10(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu);
  CHECK_EQ(b.v[0], 0x408f276du);
  CHECK_EQ(b.v[1], 0x41c83b0eu);
  CHECK_EQ(b.v[2], 0xa20bc7c6u);
  CHECK_EQ(b.v[3], 0x6d5451fdu);
  Philox4 c = philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  CHECK_EQ(c.v[0], 0xd16cfe09u);
  CHECK_EQ(c.v[1], 0x94fdccebu);
  CHECK_EQ(c.v[2], 0x5001e420u);
  CHECK_EQ(c.v[3], 0x24126ea1u);
}

static Tensor poisoned(Context& ctx, Shape s, DType dt) {
  Tensor t = empty_tensor(ctx.cpu().allocator(), s, dt, "t");
  std::memset(t.raw(), 0xff, t.nbytes());  // NaN for floats: an unwritten element fails every check
  return t;
}

TEST(fill_writes_every_element_in_every_dtype) {
  Context ctx;
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{33}, int64_t{129}, int64_t{200001}}) {
    Tensor f = poisoned(ctx, {n}, DType::f32);
    Tensor i = poisoned(ctx, {n}, DType::i32);
    Tensor h = poisoned(ctx, {n}, DType::bf16);
    ctx.cpu().stream().run_sync("fill", [&] {
      ctx.cpu().fill(f, 2.5);
      ctx.cpu().fill(i, -7);
      ctx.cpu().fill(h, 0.1);
    });
    bool ok = true;
    for (int64_t k = 0; k < n; ++k)
      ok = ok && f.data<float>()[k] == 2.5f && i.data<int32_t>()[k] == -7 && h.data<uint16_t>()[k] == f32_to_bf16(0.1f);
    CHECK(ok);
  }
}

TEST(random_is_a_pure_function_of_seed_and_counter) {
  Context ctx;
  const int64_t n = 1001;
  Tensor u = poisoned(ctx, {n}, DType::f32);
  Tensor tail = poisoned(ctx, {n - 10}, DType::f32);
  Tensor g = poisoned(ctx, {n}, DType::f32);
  ctx.cpu().stream().run_sync("rand", [&] {
    ctx.cpu().random(u, RandomKind::Uniform, 42, 0, -1.0f, 3.0f);
    ctx.cpu().random(tail, RandomKind::Uniform, 42, 10, -1.0f, 3.0f);
    ctx.cpu().random(g, RandomKind::Normal, 42, 0, 1.0f, 2.0f);
  });
  bool same = true, range = true, naive = true;
  for (int64_t k = 0; k < n; ++k) {
    float x = u.data<float>()[k];
    range = range && x >= -1.0f && x < 3.0f;
    naive = naive && x == -1.0f + 4.0f * uniform_at(42, static_cast<uint64_t>(k)) &&
            g.data<float>()[k] == 1.0f + 2.0f * normal_at(42, static_cast<uint64_t>(k));
    if (k >= 10) same = same && tail.data<float>()[k - 10] == x;
  }
  CHECK(range);
  CHECK(naive);
  CHECK(same);
  // uniform word e%4 of block e/4, by hand
  Philox4 blk = philox_block(42, 1, kStreamUniform);
  CHECK_EQ(uniform_at(42, 6), u32_to_unit(blk.v[2]));
}

TEST(random_moments_are_right) {
  Context ctx;
  const int64_t n = 1 << 20;
  Tensor u = poisoned(ctx, {n}, DType::f32);
  Tensor g = poisoned(ctx, {n}, DType::f32);
  ctx.cpu().stream().run_sync("rand", [&] {
    ctx.cpu().random(u, RandomKind::Uniform, 7, 0, 0.0f, 1.0f);
    ctx.cpu().random(g, RandomKind::Normal, 7, 0, 0.0f, 1.0f);
  });
  double su = 0, su2 = 0, sg = 0, sg2 = 0, sg4 = 0;
  for (int64_t k = 0; k < n; ++k) {
    double x = u.data<float>()[k], y = g.data<float>()[k];
    su += x;
    su2 += x * x;
    sg += y;
    sg2 += y * y;
    sg4 += y * y * y * y;
  }
  double N = static_cast<double>(n);
  CHECK_NEAR(su / N, 0.5, 0.002);
  CHECK_NEAR(su2 / N - (su / N) * (su / N), 1.0 / 12, 0.001);
  CHECK_NEAR(sg / N, 0.0, 0.005);
  CHECK_NEAR(sg2 / N, 1.0, 0.005);
  CHECK_NEAR(sg4 / N, 3.0, 0.05);  // the normal's kurtosis
}

TEST(copies_move_bytes_exactly) {
  Context ctx;
  const int64_t n = 300007;
  std::vector<float> host(static_cast<size_t>(n)), back(static_cast<size_t>(n), -1.0f);
  for (int64_t k = 0; k < n; ++k) host[static_cast<size_t>(k)] = static_cast<float>(k) * 0.5f;
  Tensor a = poisoned(ctx, {n}, DType::f32);
  Tensor b = poisoned(ctx, {n}, DType::f32);
  ctx.cpu().stream().run_sync("copy", [&] {
    ctx.cpu().copy_from_host(a, host.data());
    ctx.cpu().copy(b, a);
    ctx.cpu().copy_to_host(back.data(), b);
  });
  CHECK(std::memcmp(host.data(), back.data(), host.size() * 4) == 0);
}

TEST_MAIN()
