// gemm_sm90.cu — the Hopper bf16 GEMM (issue 14): wgmma.mma_async with both operands in shared memory through matrix
// descriptors (128-byte swizzle), fp32 accumulators; compiled for sm_90a only (its own translation unit; CMakeLists.txt
// builds it with CUDA architecture 90a-real), selected at run time by SHAREDFORMER_GEMM=wgmma on a device of compute
// capability 9.0, never by default (docs/gpu.md, "The Hopper path"). Same operands as gemm_bf16_kernel (bf16 in
// global memory) and the same epilogue (gemm_bf16.cuh, finish); it takes the K-major case only — op(A) and op(B)^T
// k-contiguous (!trans_a, trans_b: y = x W^T) — and the caller runs the pipelined kernel for the other three.
//
//  * 128 x 128 block tile, 256 threads = 2 warpgroups, each owning 64 rows x 128 columns: wgmma m64n128k16, 64 fp32
//    accumulators per thread. 64 k per stage (128 bytes of bf16 per tile row: one 128-byte swizzle row), 4 stages of
//    cp.async 16-byte copies (the TMA variant below stages by TMA instead): 3 k tiles in flight while one is
//    multiplied.
//  * Shared memory per stage: the A tile (128 rows x 128 bytes) then the B tile (same), 16 KiB each, in the layout the
//    descriptors describe: row r at r * 128 bytes, its 16-byte chunk c at slot c ^ (r % 8) (the 128-byte swizzle of a
//    1024-byte-aligned tile, PTX ISA "Shared Memory Matrix Layout"); stride byte offset 1024 (8-row groups), leading
//    byte offset unused (16 given). 4 stages = 128 KiB + 1 KiB to align the stages to 1024 bytes: 129 KiB dynamic.
//  * Per k tile: cp.async.wait_group, fence.proxy.async (the copies visible to the async proxy), __syncthreads, the
//    next tile's copies issued, then wgmma.fence, 4 wgmma (descriptor start advanced 32 bytes per k16 step),
//    wgmma.commit_group and wgmma.wait_group 0 (the stage is refilled after the next barrier).
//  * Epilogue through shared memory as in gemm_bf16_kernel: the accumulators to a 128 x 128 fp32 tile over the
//    stages, then each thread finishes consecutive elements (alpha, beta C — not read when beta = 0 —, bias, GELU
//    with preact). Edges: chunks cut by M, N or K use the src-size form (zero-filled); an operand that is not 16-byte
//    aligned is loaded with scalar loads; K = 0 runs the epilogue alone.
//
// The TMA variant (gemm_wgmma_tma_kernel), run instead when both operands allow a tensor map (base address, leading
// dimension and batch stride multiples of 16 bytes; sizes within the map's limits): warp-specialized, 288 threads =
// the same 2 consumer warpgroups (wgmma m64n128k16, the same descriptors and epilogue) + 1 producer warp whose lane 0
// stages the k tiles by cp.async.bulk.tensor (TMA) into a ring of 5 stages. Operands that do not allow a tensor map,
// or a tensor map the driver's encoder refuses, run the cp.async kernel (launch_wgmma returns why). Never run on a
// GPU: lane-verified only (docs/gpu.md).
//  * A and B as 3-D tensor maps (k innermost, rows, batch entry), box 64 k (128 bytes) x 128 rows,
//    CU_TENSOR_MAP_SWIZZLE_128B (the layout the descriptors' 128-byte swizzle reads, from 1024-byte-aligned stages),
//    out-of-bounds elements filled with zeros (the edges in M, N and K: the zero fill of the cp.async kernel). A
//    broadcast operand (batch stride 0) has one batch entry, loaded at batch coordinate 0.
//  * Per stage two mbarriers: "full" (count 1: the producer's arrive.expect_tx of the stage's 32 KiB, completed by the
//    two copies) and "empty" (count 8: lane 0 of each consumer warp, after the wgmma.wait_group that completes the
//    stage's wgmma reads). K tile `it` (counted over the batch entries) uses stage it % 5 in round it / 5: consumers
//    wait on full with parity round & 1, the producer on empty with parity (round & 1) ^ 1 (a fresh barrier passes).
//  * Shared memory: 1 KiB alignment + 5 x 32 KiB stages + the 10 barriers = 161 KiB + 80 bytes. The epilogue reuses
//    the stages as the C tile (after a __syncthreads: every k tile consumed, every copy landed), then every thread
//    fences its generic accesses against the next batch entry's copies (fence.proxy.async) before the next barrier.

#include "gemm_bf16.cuh"
#include "hopper.cuh"

namespace sf::cuda {

using gemm_detail::Gemm16Args;

namespace {

constexpr int kHB = 128;                                     // block tile, rows and columns
constexpr int kHK = 64;                                      // k per stage (128 bytes per tile row)
constexpr int kHStages = 4;                                  // pipeline depth
constexpr int kHThreads = 256;                               // two warpgroups
constexpr int kHTile = kHB * kHK / 8;                        // 16-byte chunks in one operand's tile (1024)
constexpr int kHStageBytes = 2 * kHTile * 16;                // 32 KiB
constexpr int kHSmemBytes = kHStages * kHStageBytes + 1024;  // + alignment of the stages to 1024 bytes
static_assert(kHStages * kHStageBytes >= kHB * kHB * 4, "the epilogue's C tile reuses the stages");

// One operand's tile loads for one stage: 128 rows (panel rows r0 ..) x 8 chunks (k0 + 8 c ..), four chunks per
// thread (chunk column t % 8, rows t / 8 + 32 i); row r's chunk c goes to slot r * 8 + (c ^ (r % 8)).
__device__ __forceinline__ void load_tile_sm90(uint4* tile, const uint16_t* X, int64_t base, int64_t ld, bool vec,
                                               int64_t R, int64_t K, int64_t r0, int64_t k0) {
  const int t = static_cast<int>(threadIdx.x), chunk = t % 8;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int row = t / 8 + 32 * i;
    int64_t n = K - k0 - chunk * 8;
    n = r0 + row < R ? (n < 0 ? 0 : (n > 8 ? 8 : n)) : 0;
    const int valid = static_cast<int>(n);
    const uint16_t* src = valid > 0 ? X + base + (r0 + row) * ld + k0 + chunk * 8 : X;
    uint4* dst = tile + row * 8 + (chunk ^ (row & 7));
    if (vec) {
      if (valid == 8)
        cp_async16(dst, src);
      else
        cp_async16_zfill(dst, src, 2 * valid);
    } else {
      uint16_t h[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) h[e] = e < valid ? src[e] : uint16_t{0};
      uint4 v;
      memcpy(&v, h, sizeof v);
      *dst = v;
    }
  }
}

// One k tile (64 k) of a stage multiplied by this warpgroup (both kernels): A's rows at a_addr (this warpgroup's 64),
// B's tile at b_addr; wgmma.fence, 4 wgmma (descriptor start + 32 bytes per k16 step), commit, wait until complete
// (the stage may be refilled after this returns).
__device__ __forceinline__ void wgmma_k_tile(float (&acc)[64], uint32_t a_addr, uint32_t b_addr) {
  wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < kHK / 16; ++ks)  // k16 step ks: 32 bytes further along every 128-byte row
    wgmma_m64n128k16_bf16(acc, wgmma_desc(a_addr + 32 * ks, 16, 1024, kSwizzle128B),
                          wgmma_desc(b_addr + 32 * ks, 16, 1024, kSwizzle128B), 1);
  wgmma_commit();
  wgmma_wait<0>();
}

// The accumulators of warpgroup wg into the 128 x 128 fp32 C tile ct (both kernels): row r's 8-float group c / 8 at
// slot (c / 8) ^ (r % 8), as the epilogue reads it.
__device__ __forceinline__ void store_acc_tile(float* ct, const float (&acc)[64], int wg, int tid) {
  const int lane = tid % 32, wq = (tid % 128) / 32, gq = lane / 4, tq = lane % 4;
#pragma unroll
  for (int j = 0; j < 16; ++j)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int r = wg * 64 + wq * 16 + gq + 8 * h, c = 8 * j + 2 * tq;
      *reinterpret_cast<float2*>(&ct[r * kHB + (c ^ ((r & 7) << 3))]) =
          make_float2(acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
    }
}

__global__ void __launch_bounds__(kHThreads, 1) gemm_wgmma_kernel(Gemm16Args g) {
#if SF_HOPPER_CODE
  SF_DYNAMIC_SMEM(smem_raw);
  // the stages start at the first 1024-byte boundary of the shared state space (the swizzle pattern's period)
  const uint32_t pad = (1024u - (smem_addr(smem_raw) & 1023u)) & 1023u;
  unsigned char* const base = smem_raw + pad;
  uint4* const smem = reinterpret_cast<uint4*>(base);  // stage st: A tile at st * 2 * kHTile, then the B tile
  const uint32_t base_addr = smem_addr(base);
  const int tid = threadIdx.x, wg = tid / 128;
  const int64_t ntn = (g.N + kHB - 1) / kHB;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) / ntn * kHB, n0 = static_cast<int64_t>(blockIdx.x) % ntn * kHB;
  const int64_t nk = (g.K + kHK - 1) / kHK;

  for (int64_t bz = blockIdx.y; bz < g.batch; bz += gridDim.y) {
    float acc[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
    auto load_stage = [&](int st, int64_t kt) {
      uint4* t = smem + st * 2 * kHTile;
      load_tile_sm90(t, g.a, bz * g.sa, g.lda, g.a_vec, g.M, g.K, m0, kt * kHK);
      load_tile_sm90(t + kHTile, g.b, bz * g.sb, g.ldb, g.b_vec, g.N, g.K, n0, kt * kHK);
    };
#pragma unroll
    for (int st = 0; st < kHStages - 1; ++st) {
      if (st < nk) load_stage(st, st);
      cp_async_commit();
    }
    for (int64_t kt = 0; kt < nk; ++kt) {
      cp_async_wait<kHStages - 2>();  // this thread's copies of k tile kt have landed
      fence_proxy_async();            // and are visible to wgmma's (async proxy) reads
      __syncthreads();                // everyone's, and both warpgroups are done with k tile kt - 1 (refilled below)
      const int64_t next = kt + kHStages - 1;
      if (next < nk) load_stage(static_cast<int>(next % kHStages), next);
      cp_async_commit();
      const uint32_t a_addr = base_addr + static_cast<uint32_t>((kt % kHStages) * kHStageBytes + wg * 64 * 128);
      const uint32_t b_addr = base_addr + static_cast<uint32_t>((kt % kHStages) * kHStageBytes + kHTile * 16);
      wgmma_k_tile(acc, a_addr, b_addr);
    }
    cp_async_wait<0>();
    __syncthreads();  // both warpgroups are done with the stages: they now hold the fp32 C tile
    float* const ct = reinterpret_cast<float*>(base);
    store_acc_tile(ct, acc, wg, tid);
    __syncthreads();
    float* C = g.c + bz * g.sc;
    float* P = g.preact ? g.preact + bz * g.sc : nullptr;
#pragma unroll 1
    for (int e = tid; e < kHB * kHB; e += kHThreads) {
      const int r = e / kHB, c = e % kHB;
      gemm_detail::finish(g, C, P, m0 + r, n0 + c, ct[r * kHB + (c ^ ((r & 7) << 3))]);
    }
    __syncthreads();  // the C tile is read before the next batch entry's prologue refills the stages
  }
#else
  (void)g;
#endif
}

constexpr int kTStages = 5;                                          // TMA ring depth
constexpr int kTThreads = 288;                                       // two consumer warpgroups + one producer warp
constexpr int kTConsumers = 256;                                     // threads 0 .. 255: the consumer warpgroups
constexpr int kTBarOffset = kTStages * kHStageBytes;                 // the mbarriers follow the stages
constexpr int kTSmemBytes = 1024 + kTBarOffset + 2 * kTStages * 8;   // + alignment of the stages to 1024 bytes
static_assert(kTBarOffset >= kHB * kHB * 4, "the epilogue's C tile reuses the stages");
static_assert(kTSmemBytes <= 227 * 1024, "over the 227 KiB of shared memory a block may opt into");

__global__ void __launch_bounds__(kTThreads, 1)
    gemm_wgmma_tma_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
                          Gemm16Args g) {
#if SF_HOPPER_CODE
  SF_DYNAMIC_SMEM(smem_raw);
  const uint32_t pad = (1024u - (smem_addr(smem_raw) & 1023u)) & 1023u;
  unsigned char* const base = smem_raw + pad;
  const uint32_t base_addr = smem_addr(base);
  uint64_t* const full = reinterpret_cast<uint64_t*>(base + kTBarOffset);
  uint64_t* const empty = full + kTStages;
  const int tid = threadIdx.x, wg = tid / 128, lane = tid % 32;
  const bool producer = tid >= kTConsumers;
  if (tid == 0) {
    for (int st = 0; st < kTStages; ++st) {
      mbar_init(&full[st], 1);
      mbar_init(&empty[st], kTConsumers / 32);
    }
    fence_mbarrier_init();
  }
  __syncthreads();  // the barriers are initialised before anyone uses them
  const int64_t ntn = (g.N + kHB - 1) / kHB;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) / ntn * kHB, n0 = static_cast<int64_t>(blockIdx.x) % ntn * kHB;
  const int64_t nk = (g.K + kHK - 1) / kHK;
  uint32_t it = 0;  // k tiles staged (producer) or consumed (consumers) so far, over the batch entries

  for (int64_t bz = blockIdx.y; bz < g.batch; bz += gridDim.y) {
    float acc[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
    if (producer) {
      if (lane == 0) {
        const int32_t za = g.sa == 0 ? 0 : static_cast<int32_t>(bz), zb = g.sb == 0 ? 0 : static_cast<int32_t>(bz);
        for (int64_t kt = 0; kt < nk; ++kt, ++it) {
          const int st = static_cast<int>(it % kTStages);
          const uint32_t round = it / kTStages;
          mbar_wait(&empty[st], (round & 1u) ^ 1u);  // the consumers are done with the stage's previous k tile
          mbar_arrive_expect_tx(&full[st], kHStageBytes);
          unsigned char* const stage = base + st * kHStageBytes;
          tma_load_3d(stage, &map_a, static_cast<int32_t>(kt * kHK), static_cast<int32_t>(m0), za, &full[st]);
          tma_load_3d(stage + kHTile * 16, &map_b, static_cast<int32_t>(kt * kHK), static_cast<int32_t>(n0), zb,
                      &full[st]);
        }
      }
    } else {
      for (int64_t kt = 0; kt < nk; ++kt, ++it) {
        const int st = static_cast<int>(it % kTStages);
        mbar_wait(&full[st], (it / kTStages) & 1u);  // k tile kt has landed in the stage
        const uint32_t a_addr = base_addr + static_cast<uint32_t>(st * kHStageBytes + wg * 64 * 128);
        const uint32_t b_addr = base_addr + static_cast<uint32_t>(st * kHStageBytes + kHTile * 16);
        wgmma_k_tile(acc, a_addr, b_addr);
        if (lane == 0) mbar_arrive(&empty[st]);  // this warp's reads of the stage are complete: it may be refilled
      }
    }
    __syncthreads();  // every k tile consumed (so every copy landed): the stages now hold the fp32 C tile
    float* const ct = reinterpret_cast<float*>(base);
    if (!producer) store_acc_tile(ct, acc, wg, tid);
    __syncthreads();
    float* C = g.c + bz * g.sc;
    float* P = g.preact ? g.preact + bz * g.sc : nullptr;
#pragma unroll 1
    for (int e = tid; e < kHB * kHB; e += kTThreads) {
      const int r = e / kHB, c = e % kHB;
      gemm_detail::finish(g, C, P, m0 + r, n0 + c, ct[r * kHB + (c ^ ((r & 7) << 3))]);
    }
    fence_proxy_async();  // this thread's generic accesses to the stages before the next entry's bulk copies into them
    __syncthreads();      // the C tile is read before the producer refills the stages
  }
#else
  (void)map_a, (void)map_b, (void)g;
#endif
}

// Compute capability 9.0 and an sm_90a image of the kernel (cudaFuncGetAttributes fails without one), on the current
// device. Asked on every call (two attribute queries and one function query, microseconds; only under the opt-in
// switch) rather than cached: the library keeps no static mutable state.
bool usable_here() {
  int dev = 0, major = 0, minor = 0;
  bool ok = cudaGetDevice(&dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess && major == 9 &&
            minor == 0;
  if (ok) {
    cudaFuncAttributes fa;
    ok = cudaFuncGetAttributes(&fa, gemm_wgmma_kernel) == cudaSuccess;
  }
  if (!ok) (void)cudaGetLastError();  // a refusal above is an answer, not an error for the next launch check
  return ok;
}

// cuTensorMapEncodeTiled's signature (cudaTypedefs.h's PFN_cuTensorMapEncodeTiled_v12000).
using EncodeTiled = CUresult(CUDAAPI*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                       const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                       CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// Why a K-major bf16 operand (rows x K per batch entry at p, leading dimension ld, batch stride st, in elements)
// cannot be described by a tensor map (empty when it can): TMA needs the base address 16-byte aligned, the strides
// multiples of 16 bytes and strides below 2^40 bytes; the kernel's tile coordinates are 32-bit signed (PTX .s32).
std::string tma_refusal(const char* name, const uint16_t* p, int64_t rows, int64_t K, int64_t ld, int64_t st,
                        int64_t batch) {
  if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return cat("operand ", name, " is not 16-byte aligned");
  if (ld % 8 != 0) return cat("operand ", name, ": leading dimension ", ld, " is not a multiple of 8 elements");
  if (batch > 1 && st % 8 != 0) return cat("operand ", name, ": batch stride ", st, " is not a multiple of 8 elements");
  const int64_t lim = (int64_t{1} << 31) - 1;
  if (rows > lim || K > lim || batch > lim || ld >= (int64_t{1} << 39) ||
      (batch > 1 && st >= (int64_t{1} << 39)))
    return cat("operand ", name, ": sizes (", rows, " x ", K, ", ld ", ld, ", batch stride ", st,
               ") beyond a tensor map");
  return {};
}

// The tensor map of a K-major bf16 operand: dimensions {K, rows, batch entries} (K = 0: 1, never loaded; a broadcast
// operand: 1 entry), strides {2 ld, 2 st} bytes, box 64 x 128 x 1, 128-byte swizzle, zero fill. An empty string, or
// why the encoder refused (naming the function, its result and the values).
std::string encode_operand(EncodeTiled encode, CUtensorMap* map, const char* name, const uint16_t* p, int64_t rows,
                           int64_t K, int64_t ld, int64_t st, int64_t batch) {
  const bool batched = batch > 1 && st != 0;
  const int64_t ldm = K > 0 ? ld : 8;  // K = 0 (ld may be 0): a 16-byte row stride, for a map that is never read
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(K > 0 ? K : 1), static_cast<cuuint64_t>(rows),
                              static_cast<cuuint64_t>(batched ? batch : 1)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(ldm) * 2,
                                 static_cast<cuuint64_t>(batched ? st : ldm * rows) * 2};
  const cuuint32_t box[3] = {kHK, kHB, 1}, estr[3] = {1, 1, 1};
  const CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<uint16_t*>(p), dims, strides, box,
                            estr, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r == CUDA_SUCCESS) return {};
  return cat("cuTensorMapEncodeTiled(operand ", name, ": dims ", dims[0], " x ", dims[1], " x ", dims[2], ", strides ",
             strides[0], ", ", strides[1], " bytes) returned CUresult ", static_cast<int>(r));
}

}  // namespace

bool gemm_wgmma_usable() { return usable_here(); }

gemm_detail::WgmmaRun gemm_detail::launch_wgmma(Stream s, const Gemm16Args& g, dim3 grid, bool tma) {
  WgmmaRun run;
  if (!usable_here()) return run;
  run.launched = true;
  // the TMA kernel where both operands allow a tensor map and the driver's encoder is reachable and accepts them
  run.fallback = tma ? tma_refusal("A", g.a, g.M, g.K, g.lda, g.sa, g.batch) : "cp.async staging asked for";
  if (run.fallback.empty()) run.fallback = tma_refusal("B", g.b, g.N, g.K, g.ldb, g.sb, g.batch);
  CUtensorMap map_a{}, map_b{};
  if (run.fallback.empty()) {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q);
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess || !fn) {
      (void)cudaGetLastError();  // a refusal is an answer, not an error for the next launch check
      run.fallback = cat("cudaGetDriverEntryPointByVersion(cuTensorMapEncodeTiled, 12000): ", cudaGetErrorName(e),
                         ", query result ", static_cast<int>(q));
    } else {
      const EncodeTiled encode = reinterpret_cast<EncodeTiled>(fn);
      run.fallback = encode_operand(encode, &map_a, "A", g.a, g.M, g.K, g.lda, g.sa, g.batch);
      if (run.fallback.empty()) run.fallback = encode_operand(encode, &map_b, "B", g.b, g.N, g.K, g.ldb, g.sb, g.batch);
    }
  }
  if (run.fallback.empty()) {
    run.tma = true;
    check(cudaFuncSetAttribute(gemm_wgmma_tma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kTSmemBytes),
          "cudaFuncSetAttribute(gemm_wgmma_tma_kernel)");
    SF_LAUNCH(gemm_wgmma_tma_kernel, (grid, kTThreads, kTSmemBytes, s), map_a, map_b, g);
    check_launch("gemm_wgmma_tma_kernel");
    return run;
  }
  check(cudaFuncSetAttribute(gemm_wgmma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kHSmemBytes),
        "cudaFuncSetAttribute(gemm_wgmma_kernel)");
  SF_LAUNCH(gemm_wgmma_kernel, (grid, kHThreads, kHSmemBytes, s), g);
  check_launch("gemm_wgmma_kernel");
  return run;
}

}  // namespace sf::cuda
