// cuda_common.cuh — device helpers shared by the kernel files of cuda/ (gemm.cu, attention.cu, pointwise.cu, ...):
// launch/error checking that turns CUDA errors into sf::Error naming the kernel, grid sizing, tf32/bf16 rounding,
// and the tanh-form GELU used by the matmul epilogue and the pointwise kernels (same formula as native/cpu/simd.h).
//
// Header only, no mutable state. Include it from .cu files only (it needs cuda_runtime.h / cuda_bf16.h).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#if !defined(SF_CUDA_EMU)
#include <cooperative_groups.h>
#endif

#include <cstdint>
#include <cstring>
#include <tuple>
#include <utility>

#include "../native/core/error.h"
#include "kernels.h"

namespace sf::cuda {

// Throws sf::Error naming `what` if `e` is not cudaSuccess.
inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    error("CUDA error in ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  }
}

// Call right after a <<<...>>> launch: a launch-configuration error (bad grid, too much shared memory, no kernel
// image for this GPU) becomes sf::Error naming the kernel. Asynchronous faults surface at the next stream sync.
inline void check_launch(const char* kernel) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    error("CUDA kernel launch failed: ", kernel, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  }
}

#define SF_CUDA_CALL(expr) ::sf::cuda::check((expr), #expr)

// Kernel launches and dynamic shared memory are written with these two macros so that the same sources also compile as
// host C++ in the CPU lane (cuda/emu, SF_CUDA_EMU), which runs them over an emulation of the CUDA execution model:
//   SF_LAUNCH(kernel, (grid, block, smem_bytes, stream), args...)   is   kernel<<<grid, block, smem_bytes, stream>>>(args...)
//   SF_DYNAMIC_SMEM(name);   declares the block's dynamic shared memory as `unsigned char name[]` (16-byte aligned).
#define SF_UNPAREN(...) __VA_ARGS__
#if defined(SF_CUDA_EMU)
#define SF_LAUNCH(kernel, cfg, ...) \
  ::sfemu::launch(#kernel, reinterpret_cast<const void*>(&kernel), SF_UNPAREN cfg, [&] { kernel(__VA_ARGS__); })
#define SF_DYNAMIC_SMEM(name) unsigned char* name = ::sfemu::dynamic_smem()
#define SF_LAUNCH_COOPERATIVE(kernel, cfg, ...)                                                          \
  ::sfemu::launch_cooperative(#kernel, reinterpret_cast<const void*>(&kernel), SF_UNPAREN cfg, \
                              [&] { kernel(__VA_ARGS__); })
#else
#define SF_LAUNCH(kernel, cfg, ...) kernel<<<SF_UNPAREN cfg>>>(__VA_ARGS__)
#define SF_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
// A cooperative launch (every block resident, grid_sync() allowed); returns the cudaError_t of
// cudaLaunchCooperativeKernel: SF_LAUNCH_COOPERATIVE(kernel, (grid, block, smem, stream), args...).
#define SF_LAUNCH_COOPERATIVE(kernel, cfg, ...) ::sf::cuda::launch_cooperative(kernel, SF_UNPAREN cfg, __VA_ARGS__)
#endif

// Number of blocks of `threads` threads that cover n items, capped so that grid-stride loops take the rest
// (cap: 65535 * 32 blocks, far below the 2^31-1 limit of gridDim.x). n <= 0 gives 1 (callers skip empty launches).
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 32) {
  if (n <= 0) return 1;
  int64_t b = (n + threads - 1) / threads;
  if (b > max_blocks) b = max_blocks;
  return static_cast<unsigned>(b);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- device helpers -----------------------------------------------------------------------------------------------

// fp32 -> tf32 (round to nearest, ties away, as the tensor cores expect); returned as the 32-bit register pattern.
__device__ __forceinline__ uint32_t to_tf32(float x) {
#if defined(SF_CUDA_EMU)
  return ::sfemu::cvt_rna_tf32(x);
#else
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
#endif
}

// Two fp32 -> a packed bf16x2 register (lo in the low half), round to nearest even.
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t r;
  memcpy(&r, &v, sizeof r);  // a register move (no type-punned pointer)
  return r;
}

// tanh-form GELU, same constants as native/cpu/simd.h: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
__device__ __forceinline__ float gelu_tanh(float x) {
  const float k0 = 0.7978845608028654f, k1 = 0.044715f;
  float u = k0 * (x + k1 * x * x * x);
  return 0.5f * x * (1.0f + tanhf(u));
}

// D (16x8, fp32) += A (16x8, tf32, row) * B (8x8, tf32, col). Fragments (g = lane / 4, t = lane % 4):
//   a0 = A[g][t], a1 = A[g+8][t], a2 = A[g][t+4], a3 = A[g+8][t+4];  b0 = B[t][g], b1 = B[t+4][g];
//   c0 = C[g][2t], c1 = C[g][2t+1], c2 = C[g+8][2t], c3 = C[g+8][2t+1].
__device__ __forceinline__ void mma_tf32(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
#if defined(SF_CUDA_EMU)
  ::sfemu::mma_m16n8k8_tf32(c, a0, a1, a2, a3, b0, b1);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

// D (16x8, fp32) += A (16x16, bf16, row) * B (16x8, bf16, col). Each register holds two bf16 along k (low half first):
//   a0 = A[g][2t..2t+1], a1 = A[g+8][2t..2t+1], a2 = A[g][2t+8..2t+9], a3 = A[g+8][2t+8..2t+9];
//   b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g];  c as for mma_tf32.
__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
#if defined(SF_CUDA_EMU)
  ::sfemu::mma_m16n8k16_bf16(c, a0, a1, a2, a3, b0, b1);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

// ---- asynchronous copies and matrix loads (sm_80+) ------------------------------------------------------------------
// Real PTX under nvcc; under SF_CUDA_EMU the emulation of cuda/emu (emu.cpp documents how faithfully).
//
// cp.async.cg.shared.global [smem], [gmem], 16 (PTX ISA, "cp.async"): an asynchronous 16-byte copy from global to
// shared memory, bypassing L1. Both addresses 16-byte aligned. The copy belongs to no group until cp_async_commit();
// its bytes are only guaranteed in shared memory after the issuing thread's cp_async_wait<N>() has completed its group,
// and visible to the other threads of the block after a __syncthreads() that follows that wait.
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
#if defined(SF_CUDA_EMU)
  (void)p;
  return 0;
#else
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
#endif
}
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
#if defined(SF_CUDA_EMU)
  ::sfemu::cp_async(smem, gmem, 16);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_u32(smem)), "l"(__cvta_generic_to_global(gmem))
               : "memory");
#endif
}
// The src-size form: copies the first src_bytes (0..16) bytes of gmem and writes zeros over the rest of the 16 bytes.
// gmem must still be a valid, 16-byte aligned global address when src_bytes is 0 (nothing is read from it).
__device__ __forceinline__ void cp_async16_zfill(void* smem, const void* gmem, int src_bytes) {
#if defined(SF_CUDA_EMU)
  ::sfemu::cp_async(smem, gmem, src_bytes);
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)),
               "l"(__cvta_generic_to_global(gmem)), "r"(src_bytes)
               : "memory");
#endif
}
// cp.async.commit_group: the copies issued by this thread since the last commit become one group (possibly empty).
__device__ __forceinline__ void cp_async_commit() {
#if defined(SF_CUDA_EMU)
  ::sfemu::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// cp.async.wait_group N: waits until at most the N most recent committed groups of this thread are pending (every
// older group has landed). N = 0 waits for all committed groups.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(SF_CUDA_EMU)
  ::sfemu::cp_async_wait(N);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16 (PTX ISA, "ldmatrix"): a warp collective loading four 8 x 8
// matrices of 16-bit elements. Lane 8 j + i passes the address of row i of matrix j (16 contiguous bytes, 16-byte
// aligned). Register j of lane l (g = l / 4, t = l % 4) receives from matrix j elements (row g, columns 2t, 2t+1);
// with .trans, elements (rows 2t, 2t+1, column g) — i.e. the fragment of the transposed matrix. The lower column (row)
// is in the low half. So a row-major 16 x 16 tile loaded as matrices (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15),
// (8-15, 8-15) gives exactly the A fragment a0..a3 of mma_bf16; a k-major tile with .trans gives it too.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
#if defined(SF_CUDA_EMU)
  ::sfemu::ldmatrix(r, 4, false, row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(row)));
#endif
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
#if defined(SF_CUDA_EMU)
  ::sfemu::ldmatrix(r, 4, true, row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(row)));
#endif
}
// The .x2 forms: two matrices, addresses from lanes 0-15 (the other lanes' addresses are ignored but must be valid
// shared addresses on some GPUs: pass the same pattern as for .x4).
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* row) {
#if defined(SF_CUDA_EMU)
  ::sfemu::ldmatrix(r, 2, false, row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(smem_u32(row)));
#endif
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row) {
#if defined(SF_CUDA_EMU)
  ::sfemu::ldmatrix(r, 2, true, row);
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(smem_u32(row)));
#endif
}

#if !defined(SF_CUDA_EMU)
template <typename... P, typename... A>
cudaError_t launch_cooperative(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                               A&&... args) {
  // each argument converted to the kernel's parameter type, then passed by address as the API wants
  std::tuple<P...> values(std::forward<A>(args)...);
  return std::apply(
      [&](auto&... v) {
        void* p[] = {static_cast<void*>(&v)...};
        return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(kernel), grid, block, p, smem, s);
      },
      values);
}
#endif

// cooperative_groups::this_grid().sync(): every thread of a cooperative launch waits for all the others.
__device__ __forceinline__ void grid_sync() {
#if defined(SF_CUDA_EMU)
  ::sfemu::grid_sync();
#else
  cooperative_groups::this_grid().sync();
#endif
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Block-wide sum / max of one float per thread (blockDim.x a multiple of 32); red: __shared__ float[blockDim.x / 32].
// Every thread gets the result, summed over warps in a fixed order (deterministic). Safe to call back to back.
// NaN: warp_max / block_max use fmaxf, which drops a NaN operand (the max of the other values comes back). Their users
// (softmax, cross-entropy, attention) do not rely on the max to see a NaN: they then take exp(x - max) of every element
// they reduced, which is NaN for a NaN x whatever the max, and the sum carries it to the whole row, as on the CPU.
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();  // red may still be read by a previous reduction
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float s = 0.0f;
  for (int w = 0; w < nw; ++w) s += red[w];
  return s;
}

__device__ __forceinline__ float block_max(float v, float* red) {
  v = warp_max(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float m = red[0];
  for (int w = 1; w < nw; ++w) m = fmaxf(m, red[w]);
  return m;
}

}  // namespace sf::cuda
