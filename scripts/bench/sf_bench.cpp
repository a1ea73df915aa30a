// sf_bench — the native kernel benchmarks (no Node needed): `npm run bench -- kernels` builds and runs it.
//
//   sf_bench [--json FILE] [--threads N] [--quick] [--only SUBSTRING]
//
// Memory-bound rows report GB/s of minimum traffic and, as `ratio`, their share of the measured copy bandwidth;
// attention rows compare the fused kernel with matmul + softmax + matmul composed from the same kernels (ratio > 1:
// fused is faster). The composed attention stores B x H x T x T probabilities; the fused one stores B x H x T.
//
// Measures, in one run: the machine's fp32 FMA peak (independent FMA chains on every thread) and copy bandwidth
// (a large parallel memcpy), then every CPU kernel forward and backward at transformer shapes, reporting GFLOP/s or
// GB/s and the share of the measured peak. Where OpenBLAS is installed (libopenblas.so.0, loaded at run time with
// dlopen: the addon never links it), each matmul row also times cblas_sgemm on the same operands with the same
// thread count as `ref`, and `ratio` is OpenBLAS time / our time (> 1: we are faster).
#include <dlfcn.h>

#include <cmath>
#include <cstring>
#include <string>

#include "bench_common.h"
#include "core/context.h"
#include "cpu/kernels.h"
#include "cpu/simd.h"

using namespace sf;
using sfbench::Row;

namespace {

// ---- machine peaks ------------------------------------------------------------------------------------------------
template <typename V>
void fma_chains_body(int64_t iters, float* sink) {
  V acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = simd::splat<V>(0.001f * static_cast<float>(i));
  const V m = simd::splat<V>(0.999999f), a = simd::splat<V>(1e-7f);
  for (int64_t it = 0; it < iters; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = acc[i] * m + a;
  V s = acc[0];
  for (int i = 1; i < 12; ++i) s += acc[i];
  *sink = simd::hsum(s);
}
SF_VARIANTS(fma_chains, (int64_t iters, float* sink), (iters, sink), fma_chains_body)

double measure_fma_peak(ThreadPool& pool) {
  const int t = pool.threads();
  const int64_t iters = 20'000'000;
  const int W = simd::best_isa() == simd::Isa::Avx512 ? 16 : simd::best_isa() == simd::Isa::Avx2 ? 8 : 4;
  std::vector<float> sink(static_cast<size_t>(t));
  auto fn = SF_PICK(fma_chains);
  double ms = sfbench::time_ms([&] {
    pool.parallel_for(t, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) fn(iters, &sink[static_cast<size_t>(i)]);
    });
  }, 1, 3);
  return 2.0 * 12 * W * static_cast<double>(iters) * t / (ms * 1e6);
}

double measure_copy_gbps(ThreadPool& pool) {
  const size_t n = size_t{1} << 26;  // 256 MiB each way
  std::vector<char> a(n, 1), b(n, 2);
  double ms = sfbench::time_ms([&] {
    pool.parallel_for(static_cast<int64_t>(n), 1 << 20, [&](int64_t lo, int64_t hi) {
      std::memcpy(b.data() + lo, a.data() + lo, static_cast<size_t>(hi - lo));
    });
  }, 1, 5);
  return 2.0 * static_cast<double>(n) / (ms * 1e6);
}

// ---- OpenBLAS, when installed ---------------------------------------------------------------------------------------
struct OpenBlas {
  void* lib = nullptr;
  using Sgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
  Sgemm sgemm = nullptr;
  using Sgemv = void (*)(int, int, int, int, float, const float*, int, const float*, int, float, float*, int);
  Sgemv sgemv = nullptr;
  void (*set_threads)(int) = nullptr;
  OpenBlas() {
    for (const char* name : {"libopenblas.so.0", "libopenblas.so"}) {
      lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (lib) break;
    }
    if (!lib) return;
    sgemm = reinterpret_cast<Sgemm>(dlsym(lib, "cblas_sgemm"));
    sgemv = reinterpret_cast<Sgemv>(dlsym(lib, "cblas_sgemv"));
    set_threads = reinterpret_cast<void (*)(int)>(dlsym(lib, "openblas_set_num_threads"));
  }
  ~OpenBlas() {
    if (lib) dlclose(lib);
  }
  bool ok() const { return sgemm != nullptr; }
};
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

struct Opts {
  std::string json, only;
  int threads = 0;
  bool quick = false;
};

bool wanted(const Opts& o, const std::string& name) { return o.only.empty() || name.find(o.only) != std::string::npos; }

void bench_matmul(ThreadPool& pool, const Opts& o, double peak, OpenBlas& blas, std::vector<Row>& rows) {
  struct S {
    int64_t M, N, K;
  };
  std::vector<S> shapes = {{1024, 256, 768}, {1024, 768, 256}, {1024, 1024, 1024}, {4096, 256, 1024}};
  if (o.quick) shapes = {{1024, 1024, 1024}};
  if (blas.set_threads) blas.set_threads(pool.threads());
  for (const S& s : shapes) {
    // NT: forward y = x W^T; NN: dx = dy W; TN: dW = dy^T x (the three products of a linear layer)
    for (int t : {2, 0, 1}) {
      const bool ta = t & 1, tb = t & 2;
      std::string name = std::string("matmul ") + (ta ? "T" : "N") + (tb ? "T" : "N");
      if (!wanted(o, name)) continue;
      auto A = sfbench::randn(static_cast<size_t>(s.M * s.K), 1), B = sfbench::randn(static_cast<size_t>(s.K * s.N), 2);
      std::vector<float> C(static_cast<size_t>(s.M * s.N));
      cpu::MatmulDesc d = cpu::matmul_desc(s.M, s.N, s.K, ta, tb, A.data(), B.data(), C.data());
      double ms = sfbench::time_ms([&] { cpu::matmul(pool, d); });
      double flops = 2.0 * s.M * s.N * s.K;
      Row r;
      r.name = name;
      r.shape = std::to_string(s.M) + "x" + std::to_string(s.N) + "x" + std::to_string(s.K);
      r.ms = ms;
      r.gflops = flops / (ms * 1e6);
      r.peak_share = r.gflops / peak;
      if (blas.ok()) {
        const int lda = static_cast<int>(ta ? s.M : s.K), ldb = static_cast<int>(tb ? s.K : s.N);
        double rms = sfbench::time_ms([&] {
          blas.sgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, static_cast<int>(s.M),
                     static_cast<int>(s.N), static_cast<int>(s.K), 1.0f, A.data(), lda, B.data(), ldb, 0.0f, C.data(),
                     static_cast<int>(s.N));
        });
        r.ref = "OpenBLAS sgemm";
        r.ref_ms = rms;
        r.ratio = rms / ms;
      }
      rows.push_back(r);
    }
  }
  // epilogue cost: bias + GELU fused vs plain
  if (wanted(o, "matmul NT +bias+gelu")) {
    const int64_t M = 1024, N = 1024, K = 256;
    auto A = sfbench::randn(size_t(M * K), 3), B = sfbench::randn(size_t(K * N), 4), bias = sfbench::randn(size_t(N), 5);
    std::vector<float> C(static_cast<size_t>(M * N)), P(static_cast<size_t>(M * N));
    cpu::MatmulDesc d = cpu::matmul_desc(M, N, K, false, true, A.data(), B.data(), C.data());
    double plain = sfbench::time_ms([&] { cpu::matmul(pool, d); });
    d.bias = bias.data();
    d.act = cpu::Activation::Gelu;
    d.preact = P.data();
    double fused = sfbench::time_ms([&] { cpu::matmul(pool, d); });
    Row r;
    r.name = "matmul NT +bias+gelu";
    r.shape = "1024x1024x256";
    r.ms = fused;
    r.gflops = 2.0 * M * N * K / (fused * 1e6);
    r.peak_share = r.gflops / peak;
    r.ref = "same matmul, no epilogue";
    r.ref_ms = plain;
    r.ratio = plain / fused;
    rows.push_back(r);
  }
}


// The skinny path (M <= 16 rows: decoding one token, tiny batches). Bandwidth-bound: GB/s counts the bytes of B (the
// weight) read per call, and `peak` is their share of the measured copy bandwidth. "cold": every call reads another
// copy of the weight, out of a rotation of at least 64 MiB (an unshared model, each layer's weights from memory);
// "warm": the same weight every call (a shared block, from cache). The references run on the same operands with the
// same threads: OpenBLAS sgemv for one row (the kernel torch.mv calls in Debian's PyTorch) or sgemm for several, and
// our packed path (which repacks the weight on every call).
void bench_skinny(ThreadPool& pool, const Opts& o, double copy, OpenBlas& blas, std::vector<Row>& rows) {
  struct S {
    int64_t M, N, K;
    bool tb;
  };
  std::vector<S> shapes = {{1, 768, 256, true},  {1, 1024, 256, true},   {1, 256, 1024, true}, {1, 1024, 256, false},
                           {1, 4096, 1024, true}, {1, 1024, 4096, true}, {4, 1024, 256, true}, {16, 4096, 1024, true}};
  if (o.quick) shapes = {{1, 1024, 256, true}};
  if (blas.set_threads) blas.set_threads(pool.threads());
  for (const S& s : shapes) {
    const std::string name = std::string("matmul skinny N") + (s.tb ? "T" : "N");
    if (!wanted(o, name)) continue;
    const int64_t M = s.M, N = s.N, K = s.K;
    const bool tb = s.tb;
    const size_t bsize = static_cast<size_t>(K * N);
    const double bytes = 4.0 * static_cast<double>(bsize);
    const size_t copies = static_cast<size_t>(std::max(1.0, std::ceil(64.0 * 1024 * 1024 / bytes)));
    std::vector<std::vector<float>> Bs;
    for (size_t c = 0; c < copies; ++c) Bs.push_back(sfbench::randn(bsize, 10 + static_cast<uint32_t>(c)));
    auto A = sfbench::randn(static_cast<size_t>(M * K), 9);
    std::vector<float> C(static_cast<size_t>(M * N));
    size_t next = 0;
    auto ours = [&](cpu::MatmulPath path, bool cold) {
      cpu::MatmulDesc d =
          cpu::matmul_desc(M, N, K, false, tb, A.data(), Bs[cold ? next++ % copies : 0].data(), C.data());
      d.path = path;
      cpu::matmul(pool, d);
    };
    auto ref = [&](bool cold) {
      const float* B = Bs[cold ? next++ % copies : 0].data();
      if (M == 1 && blas.sgemv)  // y = W x (W: N x K) or y = x B = B^T x (B: K x N)
        blas.sgemv(kRowMajor, tb ? kNoTrans : kTrans, static_cast<int>(tb ? N : K), static_cast<int>(tb ? K : N), 1.0f,
                   B, static_cast<int>(tb ? K : N), A.data(), 1, 0.0f, C.data(), 1);
      else
        blas.sgemm(kRowMajor, kNoTrans, tb ? kTrans : kNoTrans, static_cast<int>(M), static_cast<int>(N),
                   static_cast<int>(K), 1.0f, A.data(), static_cast<int>(K), B, static_cast<int>(tb ? K : N), 0.0f,
                   C.data(), static_cast<int>(N));
    };
    const std::string shape = std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K);
    for (bool cold : {true, false}) {
      const double ms = sfbench::time_ms([&] { ours(cpu::MatmulPath::Auto, cold); });
      const double packed = sfbench::time_ms([&] { ours(cpu::MatmulPath::Packed, cold); });
      Row r;
      r.name = name + (cold ? " cold" : " warm");
      r.shape = shape;
      r.ms = ms;
      r.gbps = bytes / (ms * 1e6);
      r.gflops = 2.0 * static_cast<double>(M * N * K) / (ms * 1e6);
      r.peak_share = r.gbps / copy;
      Row p = r;
      p.ref = "our packed path";
      p.ref_ms = packed;
      p.ratio = packed / ms;
      if (blas.ok()) {
        const double rms = sfbench::time_ms([&] { ref(cold); });
        r.ref = M == 1 && blas.sgemv ? "OpenBLAS sgemv (torch.mv)" : "OpenBLAS sgemm";
        r.ref_ms = rms;
        r.ratio = rms / ms;
        rows.push_back(r);
      }
      rows.push_back(p);
    }
  }
}

// Prefill-sized products (128 rows: one 128-token prompt; 1024: eight) with the weight pre-packed, as the addon does
// for a weight read again at the same values (native/cpu/packed_weights.cpp), against packing it in every call and
// against OpenBLAS sgemm. Shapes of the d 256 model of the generate suite: x W^T for QKV, the projection, FFN in/out.
void bench_prepacked(ThreadPool& pool, const Opts& o, double peak, OpenBlas& blas, std::vector<Row>& rows) {
  struct S {
    int64_t M, N, K;
  };
  std::vector<S> shapes = {{128, 768, 256}, {128, 256, 256}, {128, 1024, 256}, {128, 256, 1024}, {1024, 1024, 256}};
  if (o.quick) shapes = {{128, 1024, 256}};
  if (!wanted(o, "matmul prepacked NT")) return;
  if (blas.set_threads) blas.set_threads(pool.threads());
  for (const S& s : shapes) {
    auto A = sfbench::randn(static_cast<size_t>(s.M * s.K), 21), B = sfbench::randn(static_cast<size_t>(s.K * s.N), 22);
    std::vector<float> C(static_cast<size_t>(s.M * s.N));
    std::vector<float> packed(static_cast<size_t>(cpu::packed_b_floats(s.N, s.K)));
    cpu::pack_b_full(pool, B.data(), true, s.N, s.K, packed.data());
    cpu::MatmulDesc d = cpu::matmul_desc(s.M, s.N, s.K, false, true, A.data(), B.data(), C.data());
    const double per_call = sfbench::time_ms([&] { cpu::matmul(pool, d); });
    d.b_packed = packed.data();
    const double ms = sfbench::time_ms([&] { cpu::matmul(pool, d); });
    Row r;
    r.name = "matmul prepacked NT";
    r.shape = std::to_string(s.M) + "x" + std::to_string(s.N) + "x" + std::to_string(s.K);
    r.ms = ms;
    r.gflops = 2.0 * static_cast<double>(s.M * s.N * s.K) / (ms * 1e6);
    r.peak_share = r.gflops / peak;
    Row p = r;
    p.ref = "packing B in the call";
    p.ref_ms = per_call;
    p.ratio = per_call / ms;
    rows.push_back(p);
    if (blas.ok()) {
      r.ref = "OpenBLAS sgemm";
      r.ref_ms = sfbench::time_ms([&] {
        blas.sgemm(kRowMajor, kNoTrans, kTrans, static_cast<int>(s.M), static_cast<int>(s.N), static_cast<int>(s.K), 1.0f,
                   A.data(), static_cast<int>(s.K), B.data(), static_cast<int>(s.K), 0.0f, C.data(), static_cast<int>(s.N));
      });
      r.ratio = r.ref_ms / ms;
      rows.push_back(r);
    }
  }
}

// A memory-bound kernel row: `bytes` is the minimum traffic (reads + writes) of one call.
Row mem_row(const std::string& name, const std::string& shape, double ms, double bytes, double copy_gbps) {
  Row r;
  r.name = name;
  r.shape = shape;
  r.ms = ms;
  r.gbps = bytes / (ms * 1e6);
  r.ref = "copy bandwidth";
  r.ratio = r.gbps / copy_gbps;
  return r;
}

void bench_memory_bound(ThreadPool& pool, const Opts& o, double copy, std::vector<Row>& rows) {
  std::vector<std::pair<int64_t, int64_t>> shapes = {{1024, 256}, {4096, 768}, {4096, 1024}};
  if (o.quick) shapes = {{4096, 768}};
  for (const auto& shape : shapes) {
    const int64_t T = shape.first, C = shape.second;  // plain variables: lambdas below capture them (clang refuses bindings)
    const size_t N = static_cast<size_t>(T * C);
    const std::string sh = std::to_string(T) + "x" + std::to_string(C);
    const double n = static_cast<double>(N);
    auto x = sfbench::randn(N, 1), dy = sfbench::randn(N, 2), w = sfbench::randn(size_t(C), 3), b = sfbench::randn(size_t(C), 4);
    std::vector<float> y(N), dx(N), dw(static_cast<size_t>(C)), db(static_cast<size_t>(C)), mean(static_cast<size_t>(T)), rstd(static_cast<size_t>(T));
    if (wanted(o, "layernorm")) {
      double f = sfbench::time_ms([&] { cpu::layernorm_forward(pool, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), T, C, 1e-5f); });
      rows.push_back(mem_row("layernorm fwd", sh, f, 8 * n, copy));
      double bw = sfbench::time_ms([&] { cpu::layernorm_backward(pool, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), dw.data(), db.data(), T, C); });
      rows.push_back(mem_row("layernorm bwd", sh, bw, 16 * n, copy));
    }
    if (wanted(o, "gelu")) {
      rows.push_back(mem_row("gelu fwd", sh, sfbench::time_ms([&] { cpu::gelu_forward(pool, x.data(), y.data(), int64_t(N)); }), 8 * n, copy));
      rows.push_back(mem_row("gelu bwd", sh, sfbench::time_ms([&] { cpu::gelu_backward(pool, x.data(), dy.data(), dx.data(), int64_t(N)); }), 16 * n, copy));
      rows.push_back(mem_row("gelu erf fwd", sh, sfbench::time_ms([&] { cpu::gelu_erf_forward(pool, x.data(), y.data(), int64_t(N)); }), 8 * n, copy));
      rows.push_back(mem_row("gelu erf bwd", sh, sfbench::time_ms([&] { cpu::gelu_erf_backward(pool, x.data(), dy.data(), dx.data(), int64_t(N)); }), 16 * n, copy));
    }
    if (wanted(o, "softmax")) {
      rows.push_back(mem_row("softmax fwd", sh, sfbench::time_ms([&] { cpu::softmax_forward(pool, x.data(), y.data(), T, C); }), 8 * n, copy));
      rows.push_back(mem_row("softmax bwd", sh, sfbench::time_ms([&] { cpu::softmax_backward(pool, y.data(), dy.data(), dx.data(), T, C); }), 16 * n, copy));
    }
    if (wanted(o, "residual")) {
      rows.push_back(mem_row("residual add (axpby)", sh, sfbench::time_ms([&] { cpu::axpby(pool, x.data(), 1.0f, dy.data(), 1.0f, y.data(), int64_t(N)); }), 12 * n, copy));
    }
    if (wanted(o, "dropout")) {
      rows.push_back(mem_row("dropout fwd p=0.1", sh, sfbench::time_ms([&] { cpu::dropout_forward(pool, x.data(), y.data(), int64_t(N), 0.1f, 7, 0); }), 8 * n, copy));
      rows.push_back(mem_row("dropout bwd p=0.1", sh, sfbench::time_ms([&] { cpu::dropout_backward(pool, dy.data(), dx.data(), int64_t(N), 0.1f, 7, 0); }), 16 * n, copy));
    }
    if (wanted(o, "embedding")) {
      const int64_t V = 32000;
      auto table = sfbench::randn(size_t(V * C), 5);
      std::vector<float> dtable(static_cast<size_t>(V * C));
      std::vector<int32_t> ids(static_cast<size_t>(T));
      std::mt19937 g(6);
      for (auto& id : ids) id = static_cast<int32_t>(g() % V);
      rows.push_back(mem_row("embedding fwd V=32000", sh, sfbench::time_ms([&] { cpu::embedding_forward(pool, ids.data(), T, table.data(), V, C, y.data()); }), 8 * n, copy));
      rows.push_back(mem_row("embedding bwd V=32000", sh, sfbench::time_ms([&] { cpu::embedding_backward(pool, ids.data(), T, dy.data(), V, C, dtable.data()); }), 12 * n, copy));
    }
  }
  if (wanted(o, "cross_entropy")) {
    for (const auto& shape : std::vector<std::pair<int64_t, int64_t>>{{4096, 256}, {4096, 32000}}) {
      const int64_t N = shape.first, V = shape.second;  // plain variables, as above
      if (o.quick && V > 256) continue;
      auto logits = sfbench::randn(size_t(N * V), 7);
      std::vector<float> dl(static_cast<size_t>(N * V));
      std::vector<int32_t> tg(static_cast<size_t>(N));
      std::mt19937 g(8);
      for (auto& t : tg) t = static_cast<int32_t>(g() % V);
      double ms = sfbench::time_ms([&] { cpu::cross_entropy(pool, logits.data(), tg.data(), N, V, -100, dl.data(), 1.0f); });
      rows.push_back(mem_row("cross_entropy loss+dlogits", std::to_string(N) + "x" + std::to_string(V), ms, 8.0 * N * V, copy));
    }
  }
  if (wanted(o, "adamw") || wanted(o, "norm")) {
    const int64_t P = o.quick ? 4'000'000 : 16'000'000;
    auto p = sfbench::randn(size_t(P), 9), g = sfbench::randn(size_t(P), 10);
    std::vector<float> m(static_cast<size_t>(P)), v(static_cast<size_t>(P)), mask(size_t(P), 1.0f);
    cpu::AdamWDesc d;
    const std::string sh = std::to_string(P / 1'000'000) + "M params";
    if (wanted(o, "adamw")) {
      rows.push_back(mem_row("adamw", sh, sfbench::time_ms([&] { cpu::adamw(pool, d, p.data(), g.data(), m.data(), v.data(), nullptr, P); }), 28.0 * P, copy));
      rows.push_back(mem_row("adamw + decay mask", sh, sfbench::time_ms([&] { cpu::adamw(pool, d, p.data(), g.data(), m.data(), v.data(), mask.data(), P); }), 32.0 * P, copy));
    }
    if (wanted(o, "norm")) {
      rows.push_back(mem_row("global norm (sum of squares)", sh, sfbench::time_ms([&] { (void)cpu::sum_squares(pool, g.data(), P); }), 4.0 * P, copy));
      rows.push_back(mem_row("clip (scale in place)", sh, sfbench::time_ms([&] { cpu::scale_inplace(pool, g.data(), P, 1.0f); }), 8.0 * P, copy));
    }
  }
}

// Fused flash attention against the same computation composed from matmul + softmax + matmul (which stores the
// B x H x T x T probabilities), forward and backward, at B = 8, H = 4, D = 64.
void bench_attention(ThreadPool& pool, const Opts& o, double peak, std::vector<Row>& rows) {
  if (!wanted(o, "attention")) return;
  const int64_t B = 8, H = 4, D = 64;
  std::vector<int64_t> Ts = {128, 256, 512, 1024};
  if (o.quick) Ts = {256};
  for (int64_t T : Ts) {
    for (bool causal : {false, true}) {
      const size_t qn = size_t(B * H * T * D), sn = size_t(B * H * T * T);
      auto q = sfbench::randn(qn, 11, 0.5f), k = sfbench::randn(qn, 12, 0.5f), v = sfbench::randn(qn, 13), dout = sfbench::randn(qn, 14);
      std::vector<float> out(qn), lse(static_cast<size_t>(B * H * T)), dq(qn), dk(qn), dv(qn);
      cpu::AttentionDesc a;
      a.B = B;
      a.Hq = H;
      a.Hkv = H;
      a.Tq = T;
      a.Tk = T;
      a.D = D;
      a.scale = 1.0f / 8.0f;
      a.causal = causal;
      const double fwd_flops = 4.0 * B * H * T * T * D * (causal ? 0.5 : 1.0);
      const std::string sh = "B8 H4 T" + std::to_string(T) + " D64" + (causal ? " causal" : "");
      double f = sfbench::time_ms([&] { cpu::attention_forward(pool, a, q.data(), k.data(), v.data(), out.data(), lse.data()); });
      double bw = sfbench::time_ms([&] { cpu::attention_backward(pool, a, q.data(), k.data(), v.data(), out.data(), lse.data(), dout.data(), dq.data(), dk.data(), dv.data()); });
      // the composed reference (non-causal only: the composition has no mask kernel; causal rows compare to it too)
      std::vector<float> S(sn), dP(sn), dS(sn);
      auto mm = [&](const float* A, const float* Bm, float* Cm, int64_t M, int64_t N, int64_t K, bool ta, bool tb, float alpha, float beta) {
        cpu::MatmulDesc d;
        d.batch = B * H;
        d.M = M;
        d.N = N;
        d.K = K;
        d.trans_a = ta;
        d.trans_b = tb;
        d.a = A;
        d.a_stride = M * K;
        d.b = Bm;
        d.b_stride = K * N;
        d.c = Cm;
        d.c_stride = M * N;
        d.alpha = alpha;
        d.beta = beta;
        cpu::matmul(pool, d);
      };
      double cf = sfbench::time_ms([&] {
        mm(q.data(), k.data(), S.data(), T, T, D, false, true, 0.125f, 0.0f);
        cpu::softmax_forward(pool, S.data(), S.data(), B * H * T, T);
        mm(S.data(), v.data(), out.data(), T, D, T, false, false, 1.0f, 0.0f);
      });
      double cb = sfbench::time_ms([&] {
        mm(dout.data(), v.data(), dP.data(), T, T, D, false, true, 1.0f, 0.0f);      // dP = dO V^T
        mm(S.data(), dout.data(), dv.data(), T, D, T, true, false, 1.0f, 1.0f);      // dV += P^T dO
        std::fill(dS.begin(), dS.end(), 0.0f);
        cpu::softmax_backward(pool, S.data(), dP.data(), dS.data(), B * H * T, T);  // dS
        mm(dS.data(), k.data(), dq.data(), T, D, T, false, false, 0.125f, 1.0f);     // dQ += dS K
        mm(dS.data(), q.data(), dk.data(), T, D, T, true, false, 0.125f, 1.0f);      // dK += dS^T Q
      });
      Row rf;
      rf.name = "attention fwd (flash)";
      rf.shape = sh;
      rf.ms = f;
      rf.gflops = fwd_flops / (f * 1e6);
      rf.peak_share = rf.gflops / peak;
      rf.ref = "matmul+softmax+matmul";
      rf.ref_ms = cf;
      rf.ratio = cf / f;
      rows.push_back(rf);
      Row rb;
      rb.name = "attention bwd (flash)";
      rb.shape = sh;
      rb.ms = bw;
      rb.gflops = 2.5 * fwd_flops / (bw * 1e6);
      rb.peak_share = rb.gflops / peak;
      rb.ref = "composed backward";
      rb.ref_ms = cb;
      rb.ratio = cb / bw;
      rows.push_back(rb);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  Opts o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json" && i + 1 < argc)
      o.json = argv[++i];
    else if (a == "--threads" && i + 1 < argc)
      o.threads = std::atoi(argv[++i]);
    else if (a == "--only" && i + 1 < argc)
      o.only = argv[++i];
    else if (a == "--quick")
      o.quick = true;
    else {
      std::fprintf(stderr, "usage: sf_bench [--json FILE] [--threads N] [--quick] [--only SUBSTRING]\n");
      return 2;
    }
  }
  ThreadPool pool(o.threads);
  OpenBlas blas;
  CpuFeatures f = detect_cpu_features();
  const double peak = measure_fma_peak(pool);
  const double copy = measure_copy_gbps(pool);
  std::printf("sf_bench: %d threads, %s; measured fp32 FMA peak %.1f GFLOP/s, copy bandwidth %.1f GB/s; OpenBLAS %s\n\n",
              pool.threads(), f.level().c_str(), peak, copy, blas.ok() ? "found" : "not installed (no matmul ref)");
  std::vector<Row> rows;
  {
    Row p;
    p.name = "machine: fp32 FMA peak";
    p.shape = std::to_string(pool.threads()) + " threads";
    p.gflops = peak;
    rows.push_back(p);
    Row c;
    c.name = "machine: copy bandwidth";
    c.shape = "256 MiB";
    c.gbps = copy;
    rows.push_back(c);
  }
  bench_matmul(pool, o, peak, blas, rows);
  bench_skinny(pool, o, copy, blas, rows);
  bench_prepacked(pool, o, peak, blas, rows);
  bench_attention(pool, o, peak, rows);
  bench_memory_bound(pool, o, copy, rows);
  sfbench::print_rows(rows);
  if (!o.json.empty()) sfbench::write_json(rows, o.json);
  return 0;
}
