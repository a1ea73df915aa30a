// hopper.cuh — the sm_90a pieces of the Hopper bf16 GEMM (cuda/gemm_sm90.cu): shared-memory addresses, matrix
// descriptors, wgmma.mma_async m64n128k16 (bf16 operands from shared memory, fp32 accumulators) and its fences, and
// fence.proxy.async. Real PTX under nvcc (only in code compiled for sm_90a: callers guard their bodies with
// SF_HOPPER_CODE); under SF_CUDA_EMU the emulation of cuda/emu (emu.cpp documents the layouts it reads, per the PTX
// ISA's "Asynchronous Warpgroup Level Matrix Multiply-Accumulate Instructions" sections "Matrix Descriptor Format",
// "Shared Memory Matrix Layout" and the wgmma m64nNk16 register fragments). Also the TMA staging of the
// warp-specialized kernel: mbarrier (init, arrive, arrive.expect_tx, try_wait.parity), fence.mbarrier_init and
// cp.async.bulk.tensor loads through a CUtensorMap (PTX ISA, "mbarrier" and "cp.async.bulk.tensor"; emu.cpp documents
// the emulation).
#pragma once
#include "cuda_common.cuh"
#if defined(SF_CUDA_EMU)
#include "cuda.h"  // cuda/emu's: CUtensorMap and the tensor map enums
#else
#include <cuda.h>  // types only: the driver is never linked (cuTensorMapEncodeTiled comes through the runtime)
#endif

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

// ---- mbarrier (PTX ISA, "Parallel Synchronization and Communication Instructions: mbarrier") ---------------------
// An mbarrier is a uint64_t in shared memory (8-byte aligned). Each phase completes when `count` arrivals have been
// made and the transaction count (bytes announced by expect_tx, minus bytes completed by the bulk copies that name the
// barrier) is back at zero; then the next phase begins. try_wait.parity(p) succeeds once the phase of parity p — the
// current phase or the one before it — has completed: a fresh barrier (phase 0 under way) passes a wait on parity 1.

// mbarrier.init.shared::cta.b64 [bar], count.
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
#if defined(SF_CUDA_EMU)
  ::sfemu::mbar_init(smem_addr(bar), count);
#elif SF_HOPPER_CODE
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
#else
  (void)bar, (void)count;
#endif
}
// fence.mbarrier_init.release.cluster: the initialisations above are visible (to the other threads after the next
// barrier, and to the async proxy: the bulk copies that complete on them). A no-op in the lane.
__device__ __forceinline__ void fence_mbarrier_init() {
#if SF_HOPPER_CODE && !defined(SF_CUDA_EMU)
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
// mbarrier.arrive.shared::cta.b64 (release, CTA scope): one arrival of the current phase.
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
#if defined(SF_CUDA_EMU)
  ::sfemu::mbar_arrive(smem_addr(bar));
#elif SF_HOPPER_CODE
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(smem_addr(bar))
               : "memory");
#else
  (void)bar;
#endif
}
// mbarrier.arrive.expect_tx.shared::cta.b64: the transaction count += bytes, then one arrival.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
#if defined(SF_CUDA_EMU)
  ::sfemu::mbar_arrive_expect_tx(smem_addr(bar), bytes);
#elif SF_HOPPER_CODE
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n}\n" ::"r"(
                   smem_addr(bar)),
               "r"(bytes)
               : "memory");
#else
  (void)bar, (void)bytes;
#endif
}
// Waits until the phase of parity `parity` has completed: mbarrier.try_wait.parity.shared::cta.b64 (acquire, CTA
// scope) in a loop (each try may suspend the thread for a system-dependent time before it reports false).
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
#if defined(SF_CUDA_EMU)
  ::sfemu::mbar_wait(smem_addr(bar), parity);
#elif SF_HOPPER_CODE
  const uint32_t addr = smem_addr(bar);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(addr), "r"(parity)
        : "memory");
  } while (!done);
#else
  (void)bar, (void)parity;
#endif
}

// cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [dst], [map, {c0, c1, c2}], [bar]: the
// box of the tensor map (a const __grid_constant__ kernel parameter, passed by address) at element coordinates c0
// (innermost), c1, c2 into shared memory at dst (128-byte aligned; 1024-byte aligned for the 128-byte swizzle pattern
// the wgmma descriptors read), elements outside the tensor written as zeros; the copy completes the box's bytes on
// bar. Issued by one thread. The 2-D form is the same with two coordinates.
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, int32_t c0, int32_t c1, int32_t c2,
                                            uint64_t* bar) {
#if defined(SF_CUDA_EMU)
  const int32_t c[3] = {c0, c1, c2};
  ::sfemu::tma_load(dst, map, c, 3, smem_addr(bar));
#elif SF_HOPPER_CODE
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::
          "r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
      : "memory");
#else
  (void)dst, (void)map, (void)c0, (void)c1, (void)c2, (void)bar;
#endif
}
__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, int32_t c0, int32_t c1, uint64_t* bar) {
#if defined(SF_CUDA_EMU)
  const int32_t c[2] = {c0, c1};
  ::sfemu::tma_load(dst, map, c, 2, smem_addr(bar));
#elif SF_HOPPER_CODE
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(smem_addr(bar))
      : "memory");
#else
  (void)dst, (void)map, (void)c0, (void)c1, (void)bar;
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
