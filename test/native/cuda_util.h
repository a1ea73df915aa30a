// cuda_util.h — helpers of the CUDA kernel tests (cuda_gemm_test, cuda_attention_test): device buffers (RAII) with
// guard zones that must come back untouched, NaN poisoning, a stream, the error measure of the issue
// (max |gpu - ref| / max |ref| over a tensor; a NaN or a mismatched infinity never passes) and random inputs.
// Only compiled when the build has CUDA (SHAREDFORMER_WITH_CUDA).
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "../../cuda/kernels.h"
#include "check.h"
#include "core/error.h"

namespace sfcuda {

inline void ok_or_throw(cudaError_t e, const char* what) {
  if (e != cudaSuccess) sf::error("test: ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}

constexpr int64_t kGuard = 67;         // floats after every buffer that no kernel may touch
constexpr float kSentinel = 1234.5f;  // their value

// A device array of n floats (or int32) plus kGuard sentinel floats after it.
template <typename T>
class DeviceBuf {
 public:
  explicit DeviceBuf(int64_t n) : n_(n) {
    ok_or_throw(cudaMalloc(&p_, static_cast<size_t>(n + kGuard) * sizeof(T)), "cudaMalloc");
    std::vector<T> g(static_cast<size_t>(kGuard), static_cast<T>(kSentinel));
    ok_or_throw(cudaMemcpy(p_ + n, g.data(), g.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy guard");
  }
  DeviceBuf(const std::vector<T>& host) : DeviceBuf(static_cast<int64_t>(host.size())) { upload(host); }
  ~DeviceBuf() { cudaFree(p_); }
  DeviceBuf(const DeviceBuf&) = delete;
  DeviceBuf& operator=(const DeviceBuf&) = delete;

  T* get() const { return p_; }
  int64_t size() const { return n_; }
  void upload(const std::vector<T>& host) {
    if (static_cast<int64_t>(host.size()) != n_) sf::error("test: upload of ", host.size(), " into ", n_);
    ok_or_throw(cudaMemcpy(p_, host.data(), static_cast<size_t>(n_) * sizeof(T), cudaMemcpyHostToDevice), "upload");
  }
  std::vector<T> download() const {
    std::vector<T> h(static_cast<size_t>(n_));
    ok_or_throw(cudaMemcpy(h.data(), p_, static_cast<size_t>(n_) * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return h;
  }
  bool guard_intact() const {
    std::vector<T> g(static_cast<size_t>(kGuard));
    ok_or_throw(cudaMemcpy(g.data(), p_ + n_, g.size() * sizeof(T), cudaMemcpyDeviceToHost), "guard");
    for (T x : g)
      if (x != static_cast<T>(kSentinel)) return false;
    return true;
  }

 private:
  T* p_ = nullptr;
  int64_t n_;
};

class TestStream {
 public:
  TestStream() { ok_or_throw(cudaStreamCreate(&s_), "cudaStreamCreate"); }
  ~TestStream() { cudaStreamDestroy(s_); }
  TestStream(const TestStream&) = delete;
  TestStream& operator=(const TestStream&) = delete;
  cudaStream_t get() const { return s_; }
  void sync() const { ok_or_throw(cudaStreamSynchronize(s_), "cudaStreamSynchronize (a kernel faulted)"); }

 private:
  cudaStream_t s_ = nullptr;
};

inline std::vector<float> nans(int64_t n) {
  return std::vector<float>(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
}

inline std::vector<float> uniform(int64_t n, std::mt19937& rng, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

// max |got - ref| / max |ref|, over elements where ref is finite; +inf when a NaN appears in got, when got and ref
// disagree on an infinity, or when the sizes differ. With base (same size), compares got - base with ref - base:
// the increments of an accumulating kernel. ref all zero: the absolute error.
inline double rel_err(const std::vector<float>& got, const std::vector<float>& ref,
                      const std::vector<float>* base = nullptr) {
  const double inf = std::numeric_limits<double>::infinity();
  if (got.size() != ref.size() || (base && base->size() != ref.size())) return inf;
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    double g = got[i], r = ref[i];
    if (std::isnan(g) || std::isnan(r)) return inf;
    if (std::isinf(r) || std::isinf(g)) {
      if (g != r) return inf;
      continue;
    }
    if (base) {
      g -= (*base)[i];
      r -= (*base)[i];
    }
    num = std::max(num, std::fabs(g - r));
    den = std::max(den, std::fabs(r));
  }
  return den > 0 ? num / den : num;
}

}  // namespace sfcuda

namespace sfcuda {

inline const char* name_of(sf::cuda::Precision p) {
  return p == sf::cuda::Precision::F32 ? "f32" : (p == sf::cuda::Precision::TF32 ? "tf32" : "bf16");
}
// The tolerances: fp32 1e-5, tf32 1e-3, bf16 1e-2 (relative error as measured by rel_err).
inline double tol_of(sf::cuda::Precision p) {
  return p == sf::cuda::Precision::F32 ? 1e-5 : (p == sf::cuda::Precision::TF32 ? 1e-3 : 1e-2);
}
inline void expect(const char* file, int line, const std::string& what, double err, double tol) {
  const bool ok = err <= tol;  // false for NaN
  std::printf("  %s %s: rel err %.3g (tol %.0e)\n", ok ? "ok" : "FAIL", what.c_str(), err, tol);
  if (!ok) sfcheck::fail(file, line, what);
}

}  // namespace sfcuda
#define EXPECT_ERR(what, err, tol) sfcuda::expect(__FILE__, __LINE__, (what), (err), (tol))
