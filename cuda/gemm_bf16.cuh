// gemm_bf16.cuh — what the bf16 GEMM kernels of gemm.cu (the pipelined kernel) and gemm_sm90.cu (the Hopper wgmma
// kernel, compiled for sm_90a only, in its own translation unit) share: their arguments, the epilogue of one output
// element, and the entry point of the Hopper kernel.
#pragma once
#include <string>

#include "cuda_common.cuh"

namespace sf::cuda::gemm_detail {

struct Gemm16Args {
  int64_t batch, M, N, K;
  bool gelu;
  const uint16_t* a;  // op(A) as a row panel (m, k): a[m * lda + k] when k-contiguous, else a[k * lda + m]
  int64_t lda, sa;
  const uint16_t* b;  // op(B)^T as a row panel (n, k), likewise with ldb
  int64_t ldb, sb;
  bool a_vec, b_vec;  // cp.async16 allowed: the base address, ld and batch stride are all multiples of 16 bytes
  float* c;
  int64_t sc;
  float alpha, beta;
  const float* bias;
  float* preact;
};

// One output element: the CPU epilogue's order (cpu/matmul.cpp finish_scalar, then the activation pass).
template <typename G>  // GemmArgs or Gemm16Args
__device__ __forceinline__ void finish(const G& g, float* C, float* P, int64_t m, int64_t n, float acc) {
  if (m >= g.M || n >= g.N) return;
  const int64_t idx = m * g.N + n;
  float x = acc * g.alpha;
  if (g.beta != 0.0f) x += g.beta * C[idx];
  if (g.bias) x += g.bias[n];
  if (g.gelu) {
    if (P) P[idx] = x;
    x = gelu_tanh(x);
  }
  C[idx] = x;
}

// What launch_wgmma did: launched (false: nothing, the caller runs the pipelined kernel), with the TMA kernel (tma)
// or with the cp.async one, and then why not TMA (fallback: an operand's alignment or strides, or the refusal of the
// driver's tensor map encoder, naming the call and the values).
struct WgmmaRun {
  bool launched = false;
  bool tma = false;
  std::string fallback;
};

// The Hopper kernels (gemm_sm90.cu) on K-major operands (op(A) and op(B)^T k-contiguous: !trans_a, trans_b), on a
// device of compute capability 9.0: the TMA kernel when allowed (tma) and both operands allow tensor maps, else the
// cp.async one.
// Nothing is launched when neither can run here (another device, or no sm_90a image in this build), for the caller to
// run the pipelined kernel instead.
WgmmaRun launch_wgmma(Stream s, const Gemm16Args& g, dim3 grid, bool tma = true);

}  // namespace sf::cuda::gemm_detail
