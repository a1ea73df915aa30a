// pointwise.cu — the CUDA kernels of layer norm, GELU (tanh and erf forms), softmax, axpby, dropout, the head
// permutation and the KV-cache append (see kernels.h; the CPU kernels of native/cpu are the reference and the formulas
// below are theirs, except the erf GELU's, which is CUDA's normcdff where the CPU has its own polynomials).
//
//  * Row kernels (layer norm, softmax) run one block per row: block-wide reductions (warp shuffles, then one value per
//    warp through shared memory, always combined in the same order), so a row's result does not depend on the grid.
//  * Layer norm's dw/db are reductions over rows. They are deterministic without float atomics: the rows are cut into
//    fixed chunks (chunk size from the row count only), each block sums its chunk's rows in order into its own
//    partial row of a scratch buffer, and a second kernel adds the partials in chunk order into dw/db.
//  * Dropout draws the mask from the Philox dropout stream exactly as the CPU (native/cpu/dropout.h): element i uses
//    counter e = offset + i, word e % 4 of block e / 4. One thread generates one Philox block and serves its (up to)
//    four elements, so the masks are bit-identical to the CPU's.
#include <cstdint>

#include "../native/cpu/dropout.h"
#include "cuda_common.cuh"
#include "scratch.cuh"

namespace sf::cuda {

namespace {

constexpr int kRowThreads = 256;  // threads per row block (layer norm, softmax)
constexpr int kThreads = 256;     // threads per block of the flat kernels

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi), as native/cpu/simd.h
constexpr float kGeluA = 0.044715f;

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result. `red` holds 32
// floats. The warps' partial sums are added in warp order: the same bits on every run.

// ---- layer norm ---------------------------------------------------------------------------------------------------

__global__ void ln_forward_kernel(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b,
                                  float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd,
                                  int64_t rows, int64_t C, float eps) {
  __shared__ float red[32];
  const float inv_c = 1.0f / static_cast<float>(C);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * C;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) s += xr[j];
    const float m = block_sum(s, red) * inv_c;
    float q = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
      const float d = xr[j] - m;
      q += d * d;
    }
    const float var = block_sum(q, red) * inv_c;
    const float rs = 1.0f / sqrtf(var + eps);
    if (threadIdx.x == 0) {
      mean[r] = m;
      rstd[r] = rs;
    }
    float* yr = y + r * C;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) yr[j] = (xr[j] - m) * rs * w[j] + b[j];
  }
}

// dx += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w, one block per row.
__global__ void ln_backward_dx_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                      const float* __restrict__ w, const float* __restrict__ mean,
                                      const float* __restrict__ rstd, float* __restrict__ dx, int64_t rows,
                                      int64_t C) {
  __shared__ float red[32];
  const float inv_c = 1.0f / static_cast<float>(C);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* dyr = dy + r * C;
    const float* xr = x + r * C;
    const float m = mean[r], rs = rstd[r];
    float sg = 0.0f, sgx = 0.0f;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
      const float xh = (xr[j] - m) * rs, g = __fmul_rn(dyr[j], w[j]);
      sg += g;
      sgx += g * xh;
    }
    const float a = block_sum(sg, red) * inv_c;
    const float c = block_sum(sgx, red) * inv_c;
    float* dxr = dx + r * C;
    for (int64_t j = threadIdx.x; j < C; j += blockDim.x) {
      // g rounded (never fused into g - a): with C = 1, a == g and g - a is exactly 0, as on the CPU; a fused
      // dy * w - a would leave the rounding error of dy * w, times rstd (up to 1 / sqrt(eps)).
      const float xh = (xr[j] - m) * rs, g = __fmul_rn(dyr[j], w[j]);
      dxr[j] += rs * (g - a - xh * c);
    }
  }
}

// Partial dw/db of one chunk of rows: pdw[chunk][j] = sum over the chunk's rows (in order) of dy * xhat, pdb of dy.
// grid (column blocks, chunks).
__global__ void ln_backward_partial_kernel(const float* __restrict__ dy, const float* __restrict__ x,
                                           const float* __restrict__ mean, const float* __restrict__ rstd,
                                           float* __restrict__ pdw, float* __restrict__ pdb, int64_t rows, int64_t C,
                                           int64_t chunk_rows) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  if (j >= C) return;
  const int64_t r0 = chunk * chunk_rows, r1 = min(rows, r0 + chunk_rows);
  float sw = 0.0f, sb = 0.0f;
  for (int64_t r = r0; r < r1; ++r) {
    const float d = dy[r * C + j];
    sw += d * ((x[r * C + j] - mean[r]) * rstd[r]);
    sb += d;
  }
  pdw[chunk * C + j] = sw;
  pdb[chunk * C + j] = sb;
}

// dw[j] += sum over chunks (in order) of pdw[chunk][j]; the same for db. Either output may be null.
__global__ void ln_backward_reduce_kernel(const float* __restrict__ pdw, const float* __restrict__ pdb,
                                          float* __restrict__ dw, float* __restrict__ db, int64_t chunks, int64_t C) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < C;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float sw = 0.0f, sb = 0.0f;
    for (int64_t k = 0; k < chunks; ++k) {
      sw += pdw[k * C + j];
      sb += pdb[k * C + j];
    }
    if (dw) dw[j] += sw;
    if (db) db[j] += sb;
  }
}

// ---- GELU (the CPU's sigmoid form: 0.5 (1 + tanh u) = 1 / (1 + exp(-2u))) -----------------------------------------

__device__ __forceinline__ float gelu_f(float x) {
  const float u = kGeluC * (x + kGeluA * x * x * x);
  return x / (1.0f + expf(-2.0f * u));
}
__device__ __forceinline__ float gelu_grad_f(float x) {
  const float x2 = x * x;
  const float u = kGeluC * (x + kGeluA * x2 * x);
  const float sg = 1.0f / (1.0f + expf(-2.0f * u));
  return sg + 2.0f * x * sg * (1.0f - sg) * kGeluC * (1.0f + 3.0f * kGeluA * x2);
}

__global__ void gelu_forward_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = gelu_f(x[i]);
}
__global__ void gelu_backward_kernel(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx,
                                     int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dx[i] += gelu_grad_f(x[i]) * dy[i];
}

// ---- GELU, exact form: x Phi(x), Phi the normal CDF (BERT's; PyTorch's approximate='none') -----------------------
// normcdff rather than 0.5 (1 + erff(x / sqrt 2)): the same function, but accurate in relative terms in the negative
// tail, where 1 + erff cancels to no correct digit below x ~ -5.5 (the CPU kernel keeps those digits too). Non-finite
// values as the CPU's (and PyTorch's): gelu(+inf) = +inf, gelu(-inf) = -inf * 0 = NaN, gelu'(+-inf) = NaN.

constexpr float kInvSqrt2Pi = 0.3989422804014327f;  // 1 / sqrt(2 pi)

__device__ __forceinline__ float gelu_erf_f(float x) { return x * normcdff(x); }
__device__ __forceinline__ float gelu_erf_grad_f(float x) {
  return normcdff(x) + x * (kInvSqrt2Pi * expf(-0.5f * x * x));
}

__global__ void gelu_erf_forward_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = gelu_erf_f(x[i]);
}
__global__ void gelu_erf_backward_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                         float* __restrict__ dx, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dx[i] += gelu_erf_grad_f(x[i]) * dy[i];
}

// ---- tanh (the pooler's activation) -------------------------------------------------------------------------------

__global__ void tanh_forward_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = tanhf(x[i]);
}
__global__ void tanh_backward_kernel(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx,
                                     int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float t = tanhf(x[i]);
    dx[i] += (1.0f - t * t) * dy[i];
  }
}

// ---- softmax ------------------------------------------------------------------------------------------------------
// NaN semantics as the CPU's (and PyTorch's): a NaN, a +inf or an all -inf row gives a NaN row, which here follows from
// the arithmetic itself (x - max is NaN there, and the NaN reaches the sum).

__global__ void softmax_forward_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t rows, int64_t n) {
  __shared__ float red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) m = fmaxf(m, xr[j]);
    m = block_max(m, red);
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) {
      const float e = expf(xr[j] - m);
      yr[j] = e;
      s += e;
    }
    s = block_sum(s, red);
    const float inv = 1.0f / s;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) yr[j] *= inv;
  }
}

__global__ void softmax_backward_kernel(const float* __restrict__ y, const float* __restrict__ dy,
                                        float* __restrict__ dx, int64_t rows, int64_t n) {
  __shared__ float red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* yr = y + r * n;
    const float* dyr = dy + r * n;
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) s += yr[j] * dyr[j];
    s = block_sum(s, red);
    float* dxr = dx + r * n;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) dxr[j] += yr[j] * (dyr[j] - s);
  }
}

// ---- axpby --------------------------------------------------------------------------------------------------------
// out may alias a or b exactly: each element is read before it is written by the same thread. (No __restrict__.)
__global__ void axpby_kernel(const float* a, float alpha, const float* b, float beta, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = alpha * a[i] + beta * b[i];
}

// ---- dropout ------------------------------------------------------------------------------------------------------
// Thread k handles Philox block first_block + k, i.e. counters 4 (first_block + k) + w, w < 4, and the elements
// i = counter - offset that fall in [0, n). Acc: y += x * m (backward), else y = x * m, m = keep ? scale : 0.
template <bool Acc>
__global__ void dropout_kernel(const float* __restrict__ x, float* __restrict__ y, int64_t n, float p, uint64_t seed,
                               uint64_t offset, uint64_t first_block, int64_t nblocks) {
  const float scale = dropout_scale(p);
  for (int64_t k = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; k < nblocks;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t blk = first_block + static_cast<uint64_t>(k);
    const Philox4 r = philox_block(seed, blk, kStreamDropout);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const uint64_t e = blk * 4 + static_cast<uint64_t>(w);
      if (e < offset) continue;
      const uint64_t i = e - offset;
      if (i >= static_cast<uint64_t>(n)) continue;
      const float m = dropout_keep_word(r.v[w], p) ? scale : 0.0f;
      if (Acc)
        y[i] = y[i] + x[i] * m;
      else
        y[i] = x[i] * m;
    }
  }
}

// ---- head permutation, KV cache -----------------------------------------------------------------------------------

// dst (A, C, B, D) (= or +=) src (A, B, C, D); one thread per destination element (coalesced writes, D-contiguous
// reads).
template <bool Acc>
__global__ void permute0213_kernel(const float* __restrict__ src, float* __restrict__ dst, int64_t A, int64_t B,
                                   int64_t C, int64_t D) {
  const int64_t total = A * B * C * D;
  for (int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; o < total;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = o % D;
    int64_t t = o / D;
    const int64_t b = t % B;  // dst index: ((a * C + c) * B + b) * D + d
    t /= B;
    const int64_t c = t % C;
    const int64_t a = t / C;
    const float v = src[((a * B + b) * C + c) * D + d];
    if (Acc)
      dst[o] += v;
    else
      dst[o] = v;
  }
}

// cache (B, H, Tmax, D)[:, :, pos:pos+n, :] = src (B, H, n, D); one thread per source element.
__global__ void kv_append_kernel(const float* __restrict__ src, float* __restrict__ cache, int64_t BH, int64_t n,
                                 int64_t Tmax, int64_t D, int64_t pos) {
  const int64_t total = BH * n * D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = i % D;
    const int64_t t = (i / D) % n;
    const int64_t bh = i / (D * n);
    cache[(bh * Tmax + pos + t) * D + d] = src[i];
  }
}

// Blocks for a row kernel: one per row, capped (the kernels loop over the rest).
unsigned row_grid(int64_t rows) { return static_cast<unsigned>(rows < 65535LL * 16 ? rows : 65535LL * 16); }

}  // namespace

void layernorm_forward(Stream s, const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                       int64_t rows, int64_t C, float eps) {
  if (rows <= 0 || C <= 0) return;
  SF_LAUNCH(ln_forward_kernel, (row_grid(rows), kRowThreads, 0, s), x, w, b, y, mean, rstd, rows, C, eps);
  check_launch("layernorm_forward");
}

void layernorm_backward(Stream s, const float* dy, const float* x, const float* w, const float* mean,
                        const float* rstd, float* dx, float* dw, float* db, int64_t rows, int64_t C) {
  if (rows <= 0 || C <= 0) return;
  if (dx) {
    SF_LAUNCH(ln_backward_dx_kernel, (row_grid(rows), kRowThreads, 0, s), dy, x, w, mean, rstd, dx, rows, C);
    check_launch("layernorm_backward (dx)");
  }
  if (!dw && !db) return;
  // Chunks of at least 32 rows and at most 1024 chunks: they depend on the row count only.
  int64_t chunk_rows = ceil_div(rows, 1024);
  if (chunk_rows < 32) chunk_rows = 32;
  const int64_t chunks = ceil_div(rows, chunk_rows);
  Scratch part(s, static_cast<size_t>(2 * chunks * C) * sizeof(float), "layernorm_backward");
  float* pdw = part.as<float>();
  float* pdb = pdw + chunks * C;
  const int t = 128;
  dim3 grid(static_cast<unsigned>(ceil_div(C, t)), static_cast<unsigned>(chunks));
  SF_LAUNCH(ln_backward_partial_kernel, (grid, t, 0, s), dy, x, mean, rstd, pdw, pdb, rows, C, chunk_rows);
  check_launch("layernorm_backward (dw/db partials)");
  SF_LAUNCH(ln_backward_reduce_kernel, (grid_for(C, kThreads), kThreads, 0, s), pdw, pdb, dw, db, chunks, C);
  check_launch("layernorm_backward (dw/db)");
}

void gelu_forward(Stream s, const float* x, float* y, int64_t n) {
  if (n <= 0) return;
  SF_LAUNCH(gelu_forward_kernel, (grid_for(n, kThreads), kThreads, 0, s), x, y, n);
  check_launch("gelu_forward");
}

void gelu_backward(Stream s, const float* x, const float* dy, float* dx, int64_t n) {
  if (n <= 0) return;
  SF_LAUNCH(gelu_backward_kernel, (grid_for(n, kThreads), kThreads, 0, s), x, dy, dx, n);
  check_launch("gelu_backward");
}

void gelu_erf_forward(Stream s, const float* x, float* y, int64_t n) {
  if (n <= 0) return;
  SF_LAUNCH(gelu_erf_forward_kernel, (grid_for(n, kThreads), kThreads, 0, s), x, y, n);
  check_launch("gelu_erf_forward");
}

void gelu_erf_backward(Stream s, const float* x, const float* dy, float* dx, int64_t n) {
  if (n <= 0) return;
  SF_LAUNCH(gelu_erf_backward_kernel, (grid_for(n, kThreads), kThreads, 0, s), x, dy, dx, n);
  check_launch("gelu_erf_backward");
}

void tanh_forward(Stream s, const float* x, float* y, int64_t n) {
  if (n <= 0) return;
  SF_LAUNCH(tanh_forward_kernel, (grid_for(n, kThreads), kThreads, 0, s), x, y, n);
  check_launch("tanh_forward");
}

void tanh_backward(Stream s, const float* x, const float* dy, float* dx, int64_t n) {
  if (n <= 0) return;
  SF_LAUNCH(tanh_backward_kernel, (grid_for(n, kThreads), kThreads, 0, s), x, dy, dx, n);
  check_launch("tanh_backward");
}

void softmax_forward(Stream s, const float* x, float* y, int64_t rows, int64_t n) {
  if (rows <= 0 || n <= 0) return;
  SF_LAUNCH(softmax_forward_kernel, (row_grid(rows), kRowThreads, 0, s), x, y, rows, n);
  check_launch("softmax_forward");
}

void softmax_backward(Stream s, const float* y, const float* dy, float* dx, int64_t rows, int64_t n) {
  if (rows <= 0 || n <= 0) return;
  SF_LAUNCH(softmax_backward_kernel, (row_grid(rows), kRowThreads, 0, s), y, dy, dx, rows, n);
  check_launch("softmax_backward");
}

void axpby(Stream s, const float* a, float alpha, const float* b, float beta, float* out, int64_t n) {
  if (n <= 0) return;
  SF_LAUNCH(axpby_kernel, (grid_for(n, kThreads), kThreads, 0, s), a, alpha, b, beta, out, n);
  check_launch("axpby");
}

namespace {
template <bool Acc>
void dropout_launch(Stream s, const float* x, float* y, int64_t n, float p, uint64_t seed, uint64_t offset,
                    const char* name) {
  if (n <= 0) return;
  const uint64_t first = offset >> 2, last = (offset + static_cast<uint64_t>(n) - 1) >> 2;
  const int64_t nblocks = static_cast<int64_t>(last - first + 1);
  SF_LAUNCH(dropout_kernel<Acc>, (grid_for(nblocks, kThreads), kThreads, 0, s), x, y, n, p, seed, offset, first, nblocks);
  check_launch(name);
}
}  // namespace

void dropout_forward(Stream s, const float* x, float* y, int64_t n, float p, uint64_t seed, uint64_t offset) {
  dropout_launch<false>(s, x, y, n, p, seed, offset, "dropout_forward");
}

void dropout_backward(Stream s, const float* dy, float* dx, int64_t n, float p, uint64_t seed, uint64_t offset) {
  dropout_launch<true>(s, dy, dx, n, p, seed, offset, "dropout_backward");
}

void permute0213(Stream s, const float* src, float* dst, int64_t A, int64_t B, int64_t C, int64_t D,
                 bool accumulate) {
  const int64_t total = A * B * C * D;
  if (total <= 0) return;
  if (accumulate)
    SF_LAUNCH(permute0213_kernel<true>, (grid_for(total, kThreads), kThreads, 0, s), src, dst, A, B, C, D);
  else
    SF_LAUNCH(permute0213_kernel<false>, (grid_for(total, kThreads), kThreads, 0, s), src, dst, A, B, C, D);
  check_launch("permute0213");
}

void kv_append(Stream s, const float* src, float* cache, int64_t B, int64_t H, int64_t n, int64_t Tmax, int64_t D,
               int64_t pos) {
  const int64_t total = B * H * n * D;
  if (total <= 0) return;
  SF_LAUNCH(kv_append_kernel, (grid_for(total, kThreads), kThreads, 0, s), src, cache, B * H, n, Tmax, D, pos);
  check_launch("kv_append");
}

}  // namespace sf::cuda
