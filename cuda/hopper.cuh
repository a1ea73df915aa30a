// hopper.cuh — the sm_90a pieces of the Hopper bf16 GEMM (cuda/gemm_sm90.cu): shared-memory addresses, matrix
// descriptors, wgmma.mma_async m64n128k16 (bf16 operands from shared memory, fp32 accumulators) and its fences, and
// fence.proxy.async. Real PTX under nvcc (only in code compiled for sm_90a: callers guard their bodies with
// SF_HOPPER_CODE); under SF_CUDA_EMU the emulation of cuda/emu (emu.cpp documents the layouts it reads, per the PTX
// ISA's "Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions" sections "Matrix Descriptor Format",
// "Shared Memory Matrix Layout" and the wgmma m64nNk16 register fragments).
#pragma once
#include "cuda_common.cuh"

// True in the code that may use wgmma: the sm_90a device pass and the CPU lane.
#if defined(SF_CUDA_EMU) || (defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL))
#define SF_HOPPER_CODE 1
#else
#define SF_HOPPER_CODE 0
#endif

namespace sf::cuda {

// The shared-state-space address of p (in the lane: its offset in the block's dynamic shared memory).
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
#if defined(SF_CUDA_EMU)
  return ::sfemu::smem_addr(p);
#else
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
#endif
}

// A wgmma matrix descriptor (PTX ISA, "Matrix Descriptor Format"): bits 0-13 the start address >> 4, 16-29 the
// leading dimension byte offset >> 4, 32-45 the stride dimension byte offset >> 4, 49-51 the base offset (0 here),
// 62-63 the swizzle mode (0 none, 1 128-byte, 2 64-byte, 3 32-byte).
constexpr int kSwizzle128B = 1;
__device__ __forceinline__ uint64_t wgmma_desc(uint32_t addr, uint32_t lbo, uint32_t sbo, int swizzle) {
  return static_cast<uint64_t>((addr & 0x3ffffu) >> 4) | static_cast<uint64_t>((lbo >> 4) & 0x3fffu) << 16 |
         static_cast<uint64_t>((sbo >> 4) & 0x3fffu) << 32 | static_cast<uint64_t>(swizzle & 3) << 62;
}

// wgmma.fence.sync.aligned: orders the accumulator registers' prior accesses before the next wgmma.mma_async (needed
// before the first one, and after any other instruction touched the accumulators).
__device__ __forceinline__ void wgmma_fence() {
#if defined(SF_CUDA_EMU)
  ::sfemu::wgmma_fence();
#elif SF_HOPPER_CODE
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
// wgmma.commit_group.sync.aligned: this warpgroup's uncommitted wgmma operations become one group.
__device__ __forceinline__ void wgmma_commit() {
#if defined(SF_CUDA_EMU)
  ::sfemu::wgmma_commit();
#elif SF_HOPPER_CODE
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// wgmma.wait_group.sync.aligned N: at most the N most recent groups still pending; the accumulators of the others
// may be read from now on.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if defined(SF_CUDA_EMU)
  ::sfemu::wgmma_wait(N);
#elif SF_HOPPER_CODE
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// fence.proxy.async.shared::cta: this thread's generic-proxy writes to shared memory (st.shared, cp.async) become
// visible to the async proxy, which wgmma reads its shared-memory operands through. A no-op in the lane.
__device__ __forceinline__ void fence_proxy_async() {
#if SF_HOPPER_CODE && !defined(SF_CUDA_EMU)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16: D (64 x 128, fp32; 64 registers per thread of the
// warpgroup) = A (64 x 16) * B (16 x 128) + (scale_d ? D : 0), A and B bf16 in shared memory through the descriptors,
// both K-major (imm-trans-a = imm-trans-b = 0), imm-scale-a = imm-scale-b = 1. D fragment: thread (warp w of the
// warpgroup, g = lane / 4, t = lane % 4) holds d[4 j + {0,1}] = D(16 w + g, 8 j + 2 t + {0,1}) and d[4 j + {2,3}] =
// D(16 w + g + 8, 8 j + 2 t + {0,1}), j = 0..15.
__device__ __forceinline__ void wgmma_m64n128k16_bf16(float (&d)[64], uint64_t desc_a, uint64_t desc_b, int scale_d) {
#if defined(SF_CUDA_EMU)
  ::sfemu::wgmma_bf16(d, 128, desc_a, desc_b, scale_d != 0);
#elif SF_HOPPER_CODE
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
#else
  (void)d, (void)desc_a, (void)desc_b, (void)scale_d;
#endif
}

}  // namespace sf::cuda
