// kvcache_test.cpp — kv_append, cache (B, H, Tmax, D)[:, :, pos:pos+n, :] = src (B, H, n, D), against a naive loop:
// random shapes with odd sizes (1, 7, 33, 129), windows at the start, middle and end of the cache, into a cache
// poisoned with NaN (the window must hold src exactly and everything else must stay NaN, bit for bit) and into a cache
// of random values (left unchanged outside the window); a prefill followed by one-position appends builds the whole
// sequence; chunks large enough to run on several threads; results identical for thread counts 1 and 3; empty
// dimensions write nothing. (A copy has no backward kernel: the gradient of src is the window of the cache's.)
#include <cstring>
#include <random>
#include <vector>

#include "check.h"
#include "core/context.h"
#include "cpu/kernels.h"

using namespace sf;

namespace {

struct Case {
  int64_t B, H, n, Tmax, D, pos;
  size_t src_numel() const { return static_cast<size_t>(B * H * n * D); }
  size_t cache_numel() const { return static_cast<size_t>(B * H * Tmax * D); }
};

std::vector<float> randvec(size_t n, std::mt19937& g) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}
std::vector<float> poisoned(size_t n) {
  std::vector<float> v(n);
  std::memset(v.data(), 0xff, n * sizeof(float));
  return v;
}

// The naive append, in double: a copy of `before` with the window replaced by src.
std::vector<double> ref_append(const Case& c, const std::vector<float>& before, const std::vector<float>& src) {
  std::vector<double> out(before.begin(), before.end());
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.H; ++h)
      for (int64_t t = 0; t < c.n; ++t)
        for (int64_t d = 0; d < c.D; ++d)
          out[static_cast<size_t>(((b * c.H + h) * c.Tmax + c.pos + t) * c.D + d)] =
              src[static_cast<size_t>(((b * c.H + h) * c.n + t) * c.D + d)];
  return out;
}

bool in_window(const Case& c, size_t i) {
  const int64_t t = (static_cast<int64_t>(i) / c.D) % c.Tmax;
  return t >= c.pos && t < c.pos + c.n;
}

std::vector<Case> cases() {
  std::vector<Case> s = {
      {1, 1, 1, 1, 1, 0},    {1, 1, 1, 7, 1, 6},     {2, 3, 1, 33, 7, 0},   {2, 3, 1, 33, 7, 32},
      {1, 4, 7, 33, 16, 13}, {3, 7, 33, 129, 5, 96}, {1, 2, 129, 129, 33, 0}, {2, 1, 5, 9, 129, 4},
      {1, 12, 64, 256, 64, 100},  // 393,216 floats: several parallel tasks, runs split inside one (b, h)
      {4, 8, 128, 130, 32, 1},
  };
  std::mt19937 g(99);
  const int64_t pick[] = {1, 2, 7, 33};
  std::uniform_int_distribution<int> u(0, 3);
  for (int i = 0; i < 12; ++i) {
    Case c{pick[u(g)], pick[u(g)], pick[u(g)], 0, pick[u(g)], 0};
    c.Tmax = c.n + pick[u(g)] - 1;
    c.pos = std::uniform_int_distribution<int64_t>(0, c.Tmax - c.n)(g);
    s.push_back(c);
  }
  return s;
}

void report(const Case& c, int bad) {
  if (bad)
    std::fprintf(stderr, "  B %ld H %ld n %ld Tmax %ld D %ld pos %ld: %d wrong\n", static_cast<long>(c.B),
                 static_cast<long>(c.H), static_cast<long>(c.n), static_cast<long>(c.Tmax), static_cast<long>(c.D),
                 static_cast<long>(c.pos), bad);
}

}  // namespace

TEST(append_into_a_poisoned_cache_writes_exactly_the_window) {
  Context ctx;
  std::mt19937 g(1);
  for (const Case& c : cases()) {
    std::vector<float> src = randvec(c.src_numel(), g);
    std::vector<float> cache = poisoned(c.cache_numel());
    const std::vector<float> before = cache;
    cpu::kv_append(ctx.pool(), src.data(), cache.data(), c.B, c.H, c.n, c.Tmax, c.D, c.pos);
    std::vector<double> want = ref_append(c, before, src);
    int bad = 0;
    for (size_t i = 0; i < cache.size(); ++i) {
      if (in_window(c, i))
        bad += !(static_cast<double>(cache[i]) == want[i]);  // a copy is exact
      else
        bad += std::memcmp(&cache[i], &before[i], sizeof(float)) != 0;  // still the NaN pattern
    }
    report(c, bad);
    CHECK_EQ(bad, 0);
  }
}

TEST(append_leaves_the_rest_of_a_filled_cache_unchanged) {
  Context ctx;
  std::mt19937 g(2);
  for (const Case& c : cases()) {
    std::vector<float> src = randvec(c.src_numel(), g);
    std::vector<float> cache = randvec(c.cache_numel(), g);
    const std::vector<float> before = cache;
    cpu::kv_append(ctx.pool(), src.data(), cache.data(), c.B, c.H, c.n, c.Tmax, c.D, c.pos);
    std::vector<double> want = ref_append(c, before, src);
    int bad = 0;
    for (size_t i = 0; i < cache.size(); ++i) bad += !(static_cast<double>(cache[i]) == want[i]);
    report(c, bad);
    CHECK_EQ(bad, 0);
  }
}

// A prefill of n0 positions then one position per step: the cache ends up holding the whole sequence.
TEST(prefill_then_single_positions_build_the_sequence) {
  Context ctx;
  std::mt19937 g(3);
  struct Seq {
    int64_t B, H, T, n0, D;
  };
  for (const Seq& s : {Seq{1, 4, 33, 7, 16}, Seq{2, 3, 20, 1, 7}, Seq{1, 1, 129, 100, 33}, Seq{3, 2, 9, 9, 1}}) {
    std::vector<float> full = randvec(static_cast<size_t>(s.B * s.H * s.T * s.D), g);  // (B, H, T, D)
    std::vector<float> cache = poisoned(full.size());
    auto chunk = [&](int64_t t0, int64_t n) {  // full[:, :, t0:t0+n, :] as a dense (B, H, n, D)
      std::vector<float> c(static_cast<size_t>(s.B * s.H * n * s.D));
      for (int64_t bh = 0; bh < s.B * s.H; ++bh)
        std::memcpy(&c[static_cast<size_t>(bh * n * s.D)], &full[static_cast<size_t>((bh * s.T + t0) * s.D)],
                    static_cast<size_t>(n * s.D) * sizeof(float));
      return c;
    };
    std::vector<float> c0 = chunk(0, s.n0);
    cpu::kv_append(ctx.pool(), c0.data(), cache.data(), s.B, s.H, s.n0, s.T, s.D, 0);
    for (int64_t t = s.n0; t < s.T; ++t) {
      std::vector<float> c1 = chunk(t, 1);
      cpu::kv_append(ctx.pool(), c1.data(), cache.data(), s.B, s.H, 1, s.T, s.D, t);
    }
    CHECK(std::memcmp(cache.data(), full.data(), full.size() * sizeof(float)) == 0);
  }
}

TEST(results_do_not_depend_on_the_thread_count) {
  Context ctx;
  std::mt19937 g(4);
  for (const Case& c : {Case{1, 12, 64, 256, 64, 100}, Case{4, 8, 128, 130, 32, 1}, Case{2, 3, 129, 200, 129, 71},
                        Case{1, 1, 1000, 1000, 33, 0}}) {
    std::vector<float> src = randvec(c.src_numel(), g), init = randvec(c.cache_numel(), g);
    std::vector<float> out[2];
    for (int run = 0; run < 2; ++run) {
      ctx.pool().set_threads(run == 0 ? 1 : 3);
      out[run] = init;
      cpu::kv_append(ctx.pool(), src.data(), out[run].data(), c.B, c.H, c.n, c.Tmax, c.D, c.pos);
    }
    CHECK(std::memcmp(out[0].data(), out[1].data(), out[0].size() * sizeof(float)) == 0);
    std::vector<double> want = ref_append(c, init, src);
    int bad = 0;
    for (size_t i = 0; i < want.size(); ++i) bad += !(static_cast<double>(out[0][i]) == want[i]);
    CHECK_EQ(bad, 0);
  }
}

TEST(empty_dimensions_write_nothing) {
  Context ctx;
  float src[4] = {1, 2, 3, 4}, cache[8] = {7, 7, 7, 7, 7, 7, 7, 7};
  const Case cs[] = {{0, 1, 1, 2, 2, 0}, {1, 0, 1, 2, 2, 0}, {1, 1, 0, 2, 2, 1}, {1, 1, 1, 2, 0, 0}};
  for (const Case& c : cs) cpu::kv_append(ctx.pool(), src, cache, c.B, c.H, c.n, c.Tmax, c.D, c.pos);
  for (float v : cache) CHECK(v == 7.0f);
}

TEST_MAIN()
