// cuda_persistent_test.cpp — cuda::shared_block_decode (the persistent kernel for a shared block at small batch)
// against the per-layer path composed from the existing kernels of cuda/kernels.h on the same device (layernorm_forward,
// matmul with bias / fused GELU, kv_append per sequence, attention_forward with key lengths, axpby), the composition
// DecodeSession.step runs for one layer (lib/models/generate.ts, lib/nn/layers.ts), applied L times with the same
// weights and one KV cache per layer. Those kernels are checked against the CPU kernels by their own tests.
//
// Random weights (one flat buffer, as the parameter store's), inputs and caches whose history holds finite markers
// beyond each row's position (never to be read: a read would change the output); d 64 / 128, heads 1..4 with GQA and
// MQA cases, d_ff 2..4 d, L 1..4, M 1..32 (one and two m-tiles), positions that differ per sequence up to the last
// slot of the cache, grids of the default size, fewer blocks than the tiles need (chunked shares) and more blocks
// than tiles (empty shares). Checked: the increments of x (x - x0) and the K/V written at each row's position
// (bf16 tolerance 1e-2, against the per-layer path in bf16 and in fp32), every other cache element and the guard zones
// bit-for-bit untouched, two runs bit-identical; and the refusals (weights over the device's shared memory, a grid
// that cannot be resident, precision, post-LN, M > 32, sizes off the tiles) that throw before writing anything.
// Skips (exit 77) without CUDA or a GPU.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>

#include "check.h"

#ifndef SHAREDFORMER_WITH_CUDA
int main() {
  std::printf("SKIP: this build has no CUDA kernels (SHAREDFORMER_CUDA=OFF or nvcc not found)\n");
  return 77;
}
#else
#include "../../cuda/kernels.h"
#include "core/backend.h"
#include "core/context.h"
#include "cuda_util.h"

using namespace sf;
using sfcuda::DeviceBuf;

namespace {

struct Case {
  int64_t d, heads, kv_heads, d_ff;
  int layers;
  int64_t M, t_max;
  std::vector<int32_t> pos;  // per row
  bool bias = true;
  int grid_blocks = 0;
};

std::string describe(const Case& c) {
  return cat("d=", c.d, " H=", c.heads, " Hkv=", c.kv_heads, " dff=", c.d_ff, " L=", c.layers, " M=", c.M,
             " Tmax=", c.t_max, c.bias ? "" : " no-bias", c.grid_blocks ? cat(" grid=", c.grid_blocks) : std::string());
}

constexpr float kMarker = 40.0f;  // cache history past a row's position: finite, large enough to show if it is read

// The block's parameters in one flat buffer (offsets in floats), as the ParameterStore holds them.
struct Params {
  int64_t ln1_w, ln1_b, wq, bq, wk, bk, wv, bv, wo, bo, ln2_w, ln2_b, w1, b1, w2, b2, total;
};

Params layout(const Case& c) {
  const int64_t d = c.d, kvd = c.kv_heads * (c.d / c.heads), f = c.d_ff;
  Params p{};
  int64_t at = 0;
  auto take = [&at](int64_t n) {
    const int64_t o = at;
    at += n;
    return o;
  };
  p.ln1_w = take(d), p.ln1_b = take(d);
  p.wq = take(d * d), p.bq = take(d), p.wk = take(kvd * d), p.bk = take(kvd), p.wv = take(kvd * d), p.bv = take(kvd);
  p.wo = take(d * d), p.bo = take(d);
  p.ln2_w = take(d), p.ln2_b = take(d);
  p.w1 = take(f * d), p.b1 = take(f), p.w2 = take(d * f), p.b2 = take(d);
  p.total = at;
  return p;
}

std::vector<float> random_params(const Case& c, const Params& p, std::mt19937& rng) {
  std::vector<float> v(static_cast<size_t>(p.total));
  const int64_t d = c.d, kvd = c.kv_heads * (c.d / c.heads), f = c.d_ff;
  auto fill = [&](int64_t off, int64_t n, float lo, float hi) {
    std::uniform_real_distribution<float> u(lo, hi);
    for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(off + i)] = u(rng);
  };
  // weights ~ U(+-sqrt(3 / K)): unit-variance outputs, so that every sub-layer moves x as much as x itself
  auto weight = [&](int64_t off, int64_t n, int64_t K) {
    const float a = std::sqrt(3.0f / static_cast<float>(K));
    fill(off, n, -a, a);
  };
  fill(p.ln1_w, d, 0.5f, 1.5f), fill(p.ln1_b, d, -0.3f, 0.3f), fill(p.ln2_w, d, 0.5f, 1.5f), fill(p.ln2_b, d, -0.3f, 0.3f);
  weight(p.wq, d * d, d), weight(p.wk, kvd * d, d), weight(p.wv, kvd * d, d), weight(p.wo, d * d, d);
  weight(p.w1, f * d, d), weight(p.w2, d * f, f);
  for (auto [off, n] : {std::pair{p.bq, d}, {p.bk, kvd}, {p.bv, kvd}, {p.bo, d}, {p.b1, f}, {p.b2, d}})
    fill(off, n, -0.5f, 0.5f);
  return v;
}

// Caches (M, Hkv, Tmax, Dh): random history before each row's position, markers from it on.
std::vector<float> random_cache(const Case& c, std::mt19937& rng) {
  const int64_t Dh = c.d / c.heads;
  std::vector<float> v = sfcuda::uniform(c.M * c.kv_heads * c.t_max * Dh, rng, -1.5f, 1.5f);
  for (int64_t b = 0; b < c.M; ++b)
    for (int64_t h = 0; h < c.kv_heads; ++h)
      for (int64_t t = c.pos[static_cast<size_t>(b)]; t < c.t_max; ++t)
        for (int64_t e = 0; e < Dh; ++e) v[static_cast<size_t>(((b * c.kv_heads + h) * c.t_max + t) * Dh + e)] = kMarker;
  return v;
}

cuda::SharedBlockDesc make_desc(const Case& c, const float* P, const Params& p, float* x, const int32_t* pos,
                                const std::vector<std::unique_ptr<DeviceBuf<float>>>& kc,
                                const std::vector<std::unique_ptr<DeviceBuf<float>>>& vc) {
  cuda::SharedBlockDesc d;
  d.M = c.M, d.d_model = c.d, d.heads = c.heads, d.kv_heads = c.kv_heads, d.head_dim = c.d / c.heads, d.d_ff = c.d_ff;
  d.ln1_w = P + p.ln1_w, d.ln1_b = P + p.ln1_b, d.ln2_w = P + p.ln2_w, d.ln2_b = P + p.ln2_b;
  d.wq = P + p.wq, d.wk = P + p.wk, d.wv = P + p.wv, d.wo = P + p.wo, d.w1 = P + p.w1, d.w2 = P + p.w2;
  if (c.bias) d.bq = P + p.bq, d.bk = P + p.bk, d.bv = P + p.bv, d.bo = P + p.bo, d.b1 = P + p.b1, d.b2 = P + p.b2;
  d.layers = c.layers;
  for (int l = 0; l < c.layers; ++l) d.k_cache[l] = kc[static_cast<size_t>(l)]->get(), d.v_cache[l] = vc[static_cast<size_t>(l)]->get();
  d.t_max = c.t_max;
  d.positions = pos;
  d.x = x;
  d.grid_blocks = c.grid_blocks;
  return d;
}

// The per-layer path: the kernels the library composes for one decode step of one layer, L times.
void per_layer(cudaStream_t s, const cuda::SharedBlockDesc& d, const std::vector<int32_t>& pos_host,
               const int32_t* key_lengths, cuda::Precision prec) {
  const int64_t M = d.M, D = d.d_model, Dh = d.head_dim, kvd = d.kv_heads * Dh, F = d.d_ff;
  DeviceBuf<float> h(M * D), q(M * D), k(M * kvd), v(M * kvd), o(M * D), y(M * D), u(M * F), mean(M), rstd(M),
      lse(M * d.heads);
  auto linear = [&](const float* a, const float* w, const float* b, float* out, int64_t N, int64_t K, bool gelu) {
    cpu::MatmulDesc m;
    m.M = M, m.N = N, m.K = K, m.trans_b = true, m.a = a, m.b = w, m.c = out, m.bias = b;
    m.a_stride = M * K, m.b_stride = N * K, m.c_stride = M * N;
    m.act = gelu ? cpu::Activation::Gelu : cpu::Activation::None;
    cuda::matmul(s, m, prec);
  };
  for (int l = 0; l < d.layers; ++l) {
    cuda::layernorm_forward(s, d.x, d.ln1_w, d.ln1_b, h.get(), mean.get(), rstd.get(), M, D, d.eps);
    linear(h.get(), d.wq, d.bq, q.get(), D, D, false);
    linear(h.get(), d.wk, d.bk, k.get(), kvd, D, false);
    linear(h.get(), d.wv, d.bv, v.get(), kvd, D, false);
    for (int64_t b = 0; b < M; ++b) {  // one sequence at a time: kv_append takes one position
      const int64_t at = b * d.kv_heads * d.t_max * Dh;
      cuda::kv_append(s, k.get() + b * kvd, d.k_cache[l] + at, 1, d.kv_heads, 1, d.t_max, Dh, pos_host[static_cast<size_t>(b)]);
      cuda::kv_append(s, v.get() + b * kvd, d.v_cache[l] + at, 1, d.kv_heads, 1, d.t_max, Dh, pos_host[static_cast<size_t>(b)]);
    }
    cpu::AttentionDesc a;
    a.B = M, a.Hq = d.heads, a.Hkv = d.kv_heads, a.Tq = 1, a.Tk = d.t_max, a.D = Dh;
    a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(Dh)));
    a.causal = false, a.key_lengths = key_lengths;
    cuda::attention_forward(s, a, q.get(), d.k_cache[l], d.v_cache[l], o.get(), lse.get(), prec);
    linear(o.get(), d.wo, d.bo, y.get(), D, D, false);
    cuda::axpby(s, d.x, 1.0f, y.get(), 1.0f, d.x, M * D);
    cuda::layernorm_forward(s, d.x, d.ln2_w, d.ln2_b, h.get(), mean.get(), rstd.get(), M, D, d.eps);
    linear(h.get(), d.w1, d.b1, u.get(), F, D, true);
    linear(u.get(), d.w2, d.b2, y.get(), D, F, false);
    cuda::axpby(s, d.x, 1.0f, y.get(), 1.0f, d.x, M * D);
  }
}

// The K/V written at each row's position (gathered), and whether everything else equals the initial cache bits.
std::vector<float> written(const Case& c, const std::vector<float>& cache) {
  const int64_t Dh = c.d / c.heads;
  std::vector<float> w;
  for (int64_t b = 0; b < c.M; ++b)
    for (int64_t h = 0; h < c.kv_heads; ++h)
      for (int64_t e = 0; e < Dh; ++e)
        w.push_back(cache[static_cast<size_t>(((b * c.kv_heads + h) * c.t_max + c.pos[static_cast<size_t>(b)]) * Dh + e)]);
  return w;
}
bool rest_untouched(const Case& c, const std::vector<float>& got, const std::vector<float>& init) {
  const int64_t Dh = c.d / c.heads;
  for (int64_t b = 0; b < c.M; ++b)
    for (int64_t h = 0; h < c.kv_heads; ++h)
      for (int64_t t = 0; t < c.t_max; ++t) {
        if (t == c.pos[static_cast<size_t>(b)]) continue;
        const size_t at = static_cast<size_t>(((b * c.kv_heads + h) * c.t_max + t) * Dh);
        if (std::memcmp(&got[at], &init[at], static_cast<size_t>(Dh) * sizeof(float)) != 0) return false;
      }
  return true;
}

struct Run {
  std::vector<float> x;
  std::vector<std::vector<float>> k, v;
  bool guards = true, rest = true;
};

// One path over fresh copies of the same inputs: the persistent kernel (ref = false) or the per-layer path.
Run run_path(const Case& c, const Params& p, const std::vector<float>& params, const std::vector<float>& x0,
             const std::vector<std::vector<float>>& k0, const std::vector<std::vector<float>>& v0, bool ref,
             cuda::Precision prec, const sfcuda::TestStream& st) {
  DeviceBuf<float> P(params), x(x0);
  DeviceBuf<int32_t> pos(c.pos);
  std::vector<int32_t> kl(c.pos);
  for (int32_t& t : kl) ++t;
  DeviceBuf<int32_t> key_lengths(kl);
  std::vector<std::unique_ptr<DeviceBuf<float>>> kc, vc;
  for (int l = 0; l < c.layers; ++l) {
    kc.push_back(std::make_unique<DeviceBuf<float>>(k0[static_cast<size_t>(l)]));
    vc.push_back(std::make_unique<DeviceBuf<float>>(v0[static_cast<size_t>(l)]));
  }
  const cuda::SharedBlockDesc d = make_desc(c, P.get(), p, x.get(), pos.get(), kc, vc);
  if (ref) {
    per_layer(st.get(), d, c.pos, key_lengths.get(), prec);
  } else {
    cuda::shared_block_decode(st.get(), d, prec);
  }
  st.sync();
  Run r;
  r.x = x.download();
  r.guards = P.guard_intact() && x.guard_intact() && pos.guard_intact() && P.download() == params;
  for (int l = 0; l < c.layers; ++l) {
    r.k.push_back(kc[static_cast<size_t>(l)]->download());
    r.v.push_back(vc[static_cast<size_t>(l)]->download());
    r.guards = r.guards && kc[static_cast<size_t>(l)]->guard_intact() && vc[static_cast<size_t>(l)]->guard_intact();
    r.rest = r.rest && rest_untouched(c, r.k.back(), k0[static_cast<size_t>(l)]) &&
             rest_untouched(c, r.v.back(), v0[static_cast<size_t>(l)]);
  }
  return r;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void run_case(const Case& c, std::mt19937& rng, const sfcuda::TestStream& st, bool twice) {
  const std::string tag = describe(c);
  const Params p = layout(c);
  const std::vector<float> params = random_params(c, p, rng);
  const std::vector<float> x0 = sfcuda::uniform(c.M * c.d, rng);
  std::vector<std::vector<float>> k0, v0;
  for (int l = 0; l < c.layers; ++l) k0.push_back(random_cache(c, rng)), v0.push_back(random_cache(c, rng));

  const cuda::SharedBlockPlan plan = cuda::shared_block_plan(
      [&] {
        cuda::SharedBlockDesc d;
        d.M = c.M, d.d_model = c.d, d.heads = c.heads, d.kv_heads = c.kv_heads, d.head_dim = c.d / c.heads;
        d.d_ff = c.d_ff, d.layers = c.layers, d.t_max = c.t_max, d.grid_blocks = c.grid_blocks;
        const float* any = params.data();  // non-null stand-ins: the plan only checks them
        d.ln1_w = d.ln1_b = d.ln2_w = d.ln2_b = d.wq = d.wk = d.wv = d.wo = d.w1 = d.w2 = any;
        d.x = const_cast<float*>(any);
        d.positions = c.pos.data();
        for (int l = 0; l < c.layers; ++l) d.k_cache[l] = d.v_cache[l] = const_cast<float*>(any);
        return d;
      }(),
      cuda::Precision::BF16);
  std::printf("%s: %d blocks x %d threads, %lld bytes of shared memory each (%lld bytes of bf16 weights)\n",
              tag.c_str(), plan.blocks, plan.threads, static_cast<long long>(plan.smem_bytes),
              static_cast<long long>(plan.weight_bytes));
  CHECK(plan.fits);
  if (!plan.fits) {
    std::printf("  %s\n", plan.reason.c_str());
    return;
  }
  const Run got = run_path(c, p, params, x0, k0, v0, false, cuda::Precision::BF16, st);
  CHECK(got.guards);
  CHECK(got.rest);
  for (cuda::Precision prec : {cuda::Precision::BF16, cuda::Precision::F32}) {
    const Run ref = run_path(c, p, params, x0, k0, v0, true, prec, st);
    CHECK(ref.guards && ref.rest);
    const std::string vs = cat(tag, " vs per-layer ", sfcuda::name_of(prec));
    EXPECT_ERR(vs + ": x - x0", sfcuda::rel_err(got.x, ref.x, &x0), sfcuda::tol_of(cuda::Precision::BF16));
    for (int l = 0; l < c.layers; ++l) {
      EXPECT_ERR(cat(vs, ": K written, layer ", l),
                 sfcuda::rel_err(written(c, got.k[static_cast<size_t>(l)]), written(c, ref.k[static_cast<size_t>(l)])),
                 sfcuda::tol_of(cuda::Precision::BF16));
      EXPECT_ERR(cat(vs, ": V written, layer ", l),
                 sfcuda::rel_err(written(c, got.v[static_cast<size_t>(l)]), written(c, ref.v[static_cast<size_t>(l)])),
                 sfcuda::tol_of(cuda::Precision::BF16));
    }
  }
  if (twice) {  // deterministic: a second launch gives the same bits
    const Run again = run_path(c, p, params, x0, k0, v0, false, cuda::Precision::BF16, st);
    CHECK(same_bits(again.x, got.x));
    for (int l = 0; l < c.layers; ++l)
      CHECK(same_bits(again.k[static_cast<size_t>(l)], got.k[static_cast<size_t>(l)]) &&
            same_bits(again.v[static_cast<size_t>(l)], got.v[static_cast<size_t>(l)]));
  }
}

TEST(persistent_small_shapes_match_per_layer_path) {
  sfcuda::TestStream st;
  std::mt19937 rng(1234);
  // one row, one layer
  run_case(Case{64, 2, 2, 256, 1, 1, 8, {3}}, rng, st, true);
  // GQA (4 query heads over 2 K/V heads, Dh 16), 3 layers, positions 0 (no history) .. Tmax - 1 (the last slot)
  run_case(Case{64, 4, 2, 256, 3, 3, 16, {0, 7, 15}}, rng, st, false);
  // MQA, Dh 32, no biases, 4 layers, 8 rows
  run_case(Case{128, 4, 1, 512, 4, 8, 40, {39, 0, 5, 31, 32, 33, 12, 1}, false}, rng, st, false);
}

TEST(persistent_two_m_tiles_and_odd_grids) {
  sfcuda::TestStream st;
  std::mt19937 rng(99);
  // 20 rows (two m-tiles, the second partial), Dh 64, 3 key chunks of 32; 3 blocks: shares of 16 Wqkv tiles, more
  // than one register chunk of 8
  std::vector<int32_t> pos(20);
  for (int i = 0; i < 20; ++i) pos[static_cast<size_t>(i)] = (i * 37) % 70;
  run_case(Case{128, 2, 2, 512, 2, 20, 70, pos, true, 3}, rng, st, true);
  // 32 rows, one head of 64, d_ff 2 d; 16 blocks (two per SM): more blocks than Wo or W2 tiles (empty shares)
  std::vector<int32_t> pos32(32);
  for (int i = 0; i < 32; ++i) pos32[static_cast<size_t>(i)] = 31 - i;
  run_case(Case{64, 1, 1, 128, 2, 32, 33, pos32, true, 16}, rng, st, false);
  // Dh 128 (every lane owns 4 dimensions), GQA 2 -> 1
  run_case(Case{256, 2, 1, 256, 1, 2, 5, {4, 2}, true, 0}, rng, st, false);
}

// Shapes and settings it does not serve are refused with a reason, and shared_block_decode then throws before
// writing anything (callers fall back to the per-layer path).
TEST(persistent_refuses_what_does_not_fit) {
  sfcuda::TestStream st;
  std::vector<float> host(64, 0.5f);
  DeviceBuf<float> any(host);
  DeviceBuf<int32_t> pos(std::vector<int32_t>(40, 0));
  auto desc = [&](int64_t d, int64_t heads, int64_t dff, int64_t M) {
    cuda::SharedBlockDesc s;
    s.M = M, s.d_model = d, s.heads = heads, s.kv_heads = heads, s.head_dim = d / heads, s.d_ff = dff;
    s.ln1_w = s.ln1_b = s.ln2_w = s.ln2_b = s.wq = s.wk = s.wv = s.wo = s.w1 = s.w2 = any.get();
    s.x = any.get(), s.positions = pos.get(), s.layers = 2, s.t_max = 8;
    for (int l = 0; l < 2; ++l) s.k_cache[l] = s.v_cache[l] = any.get();
    return s;
  };
  auto refused = [&](const cuda::SharedBlockDesc& s, cuda::Precision p, const char* needle) {
    const cuda::SharedBlockPlan plan = cuda::shared_block_plan(s, p);
    std::printf("  refused: %s\n", plan.reason.c_str());
    CHECK(!plan.fits);
    CHECK(plan.reason.find(needle) != std::string::npos);
    bool thrown = false;
    try {
      cuda::shared_block_decode(st.get(), s, p);
    } catch (const sf::Error& e) {
      thrown = std::string(e.what()) == plan.reason;
    }
    CHECK(thrown);
    st.sync();
    CHECK(any.download() == host && any.guard_intact());
  };
  // d 1024, d_ff 4096: 24 MiB of bf16 weights over the emulated 8 SMs (227 KiB each)
  refused(desc(1024, 16, 4096, 1), cuda::Precision::BF16, "do not fit");
  // fits in shared memory with 8 blocks of 1.5 MiB / 8, but 9 such blocks cannot all be resident on 8 SMs
  cuda::SharedBlockDesc s9 = desc(256, 4, 1024, 4);
  s9.grid_blocks = 8;
  CHECK(cuda::shared_block_plan(s9, cuda::Precision::BF16).fits);
  s9.grid_blocks = 9;
  refused(s9, cuda::Precision::BF16, "resident");
  refused(desc(64, 2, 256, 1), cuda::Precision::F32, "bf16");
  refused(desc(64, 2, 256, 33), cuda::Precision::BF16, "M = 33");
  refused(desc(72, 2, 256, 1), cuda::Precision::BF16, "multiples of 16");
  refused(desc(64, 2, 200, 1), cuda::Precision::BF16, "multiples of 16");
  cuda::SharedBlockDesc post = desc(64, 2, 256, 1);
  post.pre_ln = false;
  refused(post, cuda::Precision::BF16, "post-LN");
  cuda::SharedBlockDesc nocache = desc(64, 2, 256, 1);
  nocache.v_cache[1] = nullptr;
  refused(nocache, cuda::Precision::BF16, "KV cache");
}

}  // namespace

int main() {
  const CudaInfo info = cuda_probe();
  if (!info.available) {
    std::printf("SKIP: no usable CUDA device: %s\n", info.reason.c_str());
    return 77;
  }
  return sfcheck::run_all();
}
#endif
