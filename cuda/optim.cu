// optim.cu — the optimizer kernels over one flat buffer on CUDA: AdamW, SGD, the deterministic sum of squares, an
// in-place scale, and global-norm clipping without a host round trip (see kernels.h; native/cpu/optim.cpp is the
// reference; AdamW's constants and per-element update are native/core/adamw_math.h's, shared with it).
//
// sum_squares: squares are added in double per fixed 4096-element chunk (one block per chunk, a fixed tree inside
// the block), then the chunk sums are added by one block in a fixed order: the same bits on every run. clip_by_norm
// reads that sum from device memory, so clipping the gradients never waits for the host.
#include <cmath>
#include <cstdint>

#include "../native/core/adamw_math.h"
#include "../native/core/dtype.h"
#include "cuda_common.cuh"
#include "scratch.cuh"

namespace sf::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = 4096;  // elements per partial sum of sum_squares (as the CPU's)

struct Sqrtf {
  SF_HD float operator()(float x) const { return sqrtf(x); }
};

__global__ void adamw_kernel(AdamWConst c, float* __restrict__ param, const float* __restrict__ grad,
                             float* __restrict__ m, float* __restrict__ v, const float* __restrict__ decay,
                             uint16_t* __restrict__ p16, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float p = param[i];
    const float g = grad[i], dec = decay ? decay[i] : 1.0f;
    float mm = m[i], vv = v[i];
    adamw_update(c, p, g, mm, vv, dec, decay != nullptr, Sqrtf{});  // adamw_math.h
    param[i] = p;
    m[i] = mm;
    v[i] = vv;
    if (p16) p16[i] = f32_to_bf16(p);  // the bf16 copy, in the same pass
  }
}

struct SgdConst {
  float lr, momentum, one_minus_dampening, weight_decay;
  bool nesterov, first_step, use_momentum;
};

__global__ void sgd_kernel(SgdConst c, float* __restrict__ param, const float* __restrict__ grad,
                           float* __restrict__ buf, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float p = param[i];
    float d = c.weight_decay != 0.0f ? grad[i] + c.weight_decay * p : grad[i];
    if (c.use_momentum) {
      const float b = c.first_step ? d : c.momentum * buf[i] + c.one_minus_dampening * d;
      buf[i] = b;
      d = c.nesterov ? d + c.momentum * b : b;
    }
    param[i] = p - c.lr * d;
  }
}

// part[chunk] = sum of x^2 over the chunk, in double; one block of kThreads per chunk.
__global__ void sumsq_chunks_kernel(const float* __restrict__ x, int64_t n, double* __restrict__ part) {
  __shared__ double red[kThreads];
  const int64_t b = blockIdx.x * kChunk, e = min(n, b + kChunk);
  double s = 0.0;
  for (int64_t i = b + threadIdx.x; i < e; i += blockDim.x) {
    const double u = x[i];
    s += u * u;
  }
  red[threadIdx.x] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (static_cast<int>(threadIdx.x) < w) red[threadIdx.x] += red[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) part[blockIdx.x] = red[0];
}

// *out = sum of part[0, chunks) in a fixed order (strided per thread, then a fixed tree); one block.
__global__ void sum_parts_kernel(const double* __restrict__ part, int64_t chunks, double* __restrict__ out) {
  __shared__ double red[kThreads];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < chunks; i += blockDim.x) s += part[i];
  red[threadIdx.x] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (static_cast<int>(threadIdx.x) < w) red[threadIdx.x] += red[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) *out = red[0];
}

__global__ void scale_kernel(float* __restrict__ x, int64_t n, float s) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] *= s;
}

// norm = sqrt(*sumsq); coef = max_norm / (norm + eps) (double, as the CPU binding); x *= coef when coef < 1.
__global__ void clip_kernel(float* __restrict__ x, int64_t n, const double* __restrict__ sumsq, double max_norm,
                            double eps, float* __restrict__ norm_out) {
  const double norm = sqrt(*sumsq);
  const double coef = max_norm / (norm + eps);
  if (norm_out && blockIdx.x == 0 && threadIdx.x == 0) *norm_out = static_cast<float>(norm);
  if (!(coef < 1.0)) return;
  const float f = static_cast<float>(coef);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    x[i] *= f;
}

}  // namespace

void adamw(Stream s, const cpu::AdamWDesc& d, float* param, const float* grad, float* m, float* v, const float* decay,
           int64_t n, uint16_t* param_bf16) {
  if (n <= 0) return;
  const AdamWConst c = adamw_constants(d.lr, d.beta1, d.beta2, d.eps, d.weight_decay, d.step);  // as the CPU's
  SF_LAUNCH(adamw_kernel, (grid_for(n, kThreads), kThreads, 0, s), c, param, grad, m, v, decay, param_bf16, n);
  check_launch("adamw");
}

void sgd(Stream s, const cpu::SgdDesc& d, float* param, const float* grad, float* buf, int64_t n) {
  if (n <= 0) return;
  SgdConst c;
  c.lr = d.lr;
  c.momentum = d.momentum;
  c.one_minus_dampening = static_cast<float>(1.0 - static_cast<double>(d.dampening));
  c.weight_decay = d.weight_decay;
  c.nesterov = d.nesterov;
  c.first_step = d.first_step;
  c.use_momentum = d.momentum != 0.0f && buf != nullptr;
  SF_LAUNCH(sgd_kernel, (grid_for(n, kThreads), kThreads, 0, s), c, param, grad, buf, n);
  check_launch("sgd");
}

void sum_squares(Stream s, const float* x, int64_t n, double* out) {
  if (n <= 0) {
    SF_CUDA_CALL(cudaMemsetAsync(out, 0, sizeof(double), s));
    return;
  }
  const int64_t chunks = ceil_div(n, kChunk);
  if (chunks > INT32_MAX) error("sum_squares: ", n, " elements is more than the CUDA kernel handles");
  Scratch part(s, static_cast<size_t>(chunks) * sizeof(double), "sum_squares");
  SF_LAUNCH(sumsq_chunks_kernel, (static_cast<unsigned>(chunks), kThreads, 0, s), x, n, part.as<double>());
  check_launch("sum_squares (chunks)");
  SF_LAUNCH(sum_parts_kernel, (1, kThreads, 0, s), part.as<double>(), chunks, out);
  check_launch("sum_squares");
}

void scale_inplace(Stream s, float* x, int64_t n, float scale) {
  if (n <= 0) return;
  SF_LAUNCH(scale_kernel, (grid_for(n, kThreads), kThreads, 0, s), x, n, scale);
  check_launch("scale_inplace");
}

void clip_by_norm(Stream s, float* x, int64_t n, const double* sumsq, float max_norm, float eps, float* norm_out) {
  SF_LAUNCH(clip_kernel, (grid_for(n > 0 ? n : 1, kThreads), kThreads, 0, s), x, n, sumsq, static_cast<double>(max_norm),
                                                                      static_cast<double>(eps), norm_out);
  check_launch("clip_by_norm");
}

}  // namespace sf::cuda
