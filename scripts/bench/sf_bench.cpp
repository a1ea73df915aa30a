// sf_bench — the native kernel benchmarks (no Node needed): `npm run bench -- kernels` builds and runs it.
//
//   sf_bench [--json FILE] [--threads N] [--quick] [--only SUBSTRING]
//
// Measures, in one run: the machine's fp32 FMA peak (independent FMA chains on every thread) and copy bandwidth
// (a large parallel memcpy), then every CPU kernel forward and backward at transformer shapes, reporting GFLOP/s or
// GB/s and the share of the measured peak. Where OpenBLAS is installed (libopenblas.so.0, loaded at run time with
// dlopen: the addon never links it), each matmul row also times cblas_sgemm on the same operands with the same
// thread count as `ref`, and `ratio` is OpenBLAS time / our time (> 1: we are faster).
#include <dlfcn.h>

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
  void (*set_threads)(int) = nullptr;
  OpenBlas() {
    for (const char* name : {"libopenblas.so.0", "libopenblas.so"}) {
      lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (lib) break;
    }
    if (!lib) return;
    sgemm = reinterpret_cast<Sgemm>(dlsym(lib, "cblas_sgemm"));
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
      cpu::MatmulDesc d;
      d.M = s.M;
      d.N = s.N;
      d.K = s.K;
      d.trans_a = ta;
      d.trans_b = tb;
      d.a = A.data();
      d.b = B.data();
      d.c = C.data();
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
    std::vector<float> C(size_t(M * N)), P(size_t(M * N));
    cpu::MatmulDesc d;
    d.M = M;
    d.N = N;
    d.K = K;
    d.trans_b = true;
    d.a = A.data();
    d.b = B.data();
    d.c = C.data();
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
  sfbench::print_rows(rows);
  if (!o.json.empty()) sfbench::write_json(rows, o.json);
  return 0;
}
