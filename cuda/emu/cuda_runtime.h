// cuda_runtime.h of the CPU lane (cuda/emu) — stands in for the CUDA runtime header when the kernel sources of cuda/
// are compiled as host C++ (SF_CUDA_EMU; see cuda/emu/emu.cpp and docs/gpu.md "The CPU lane").
//
// Two halves:
//  * Device side: the execution model the kernels are written against. Every CUDA thread of a block is a fiber;
//    threadIdx / blockIdx / blockDim / gridDim read the current fiber's indices; __syncthreads and the warp
//    collectives (__shfl*_sync, __syncwarp, the mma wrappers of cuda_common.cuh) switch fibers, so the threads of a
//    block interleave only at those points, in a fixed order (forward, or reverse with SFEMU_ORDER=reverse).
//    __shared__ variables are per-OS-thread statics (blocks run one after another); dynamic shared memory is filled
//    with 0xff bytes (NaN as float) before every block.
//  * Host side: the runtime API calls that cuda/ and the tests use, over host memory, with one emulated device and
//    streams that run every operation at once (in issue order, which is the order a CUDA stream guarantees).
//
// Faults the emulation detects (a warp collective a lane of its mask never reaches, a deadlock at a barrier, a launch
// configuration CUDA would refuse) abort the process with a message naming the kernel, block and thread: a test fails.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The vector types, with CUDA's alignment (a misaligned vector access is what the alignment exposes on a GPU).
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(16) int4 {
  int x, y, z, w;
};
inline float2 make_float2(float x, float y) { return float2{x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorNoDevice = 100,
  cudaErrorNotSupported = 801,
  cudaErrorLaunchFailure = 719,
  cudaErrorCooperativeLaunchTooLarge = 720,
};
using cudaError = cudaError_t;

struct CUstream_st;
using cudaStream_t = CUstream_st*;
struct CUmemPool_st;
using cudaMemPool_t = CUmemPool_st*;

enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
enum cudaDeviceAttr {
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrL2CacheSize = 38,
  cudaDevAttrMaxPersistingL2CacheSize = 108,
  cudaDevAttrMaxAccessPolicyWindowSize = 109,
  cudaDevAttrMemoryPoolsSupported = 115,
  cudaDevAttrCooperativeLaunch = 95,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaLimit { cudaLimitPersistingL2CacheSize = 0x06 };
enum cudaMemPoolAttr { cudaMemPoolAttrReleaseThreshold = 4 };
enum cudaAccessProperty { cudaAccessPropertyNormal = 0, cudaAccessPropertyStreaming = 1, cudaAccessPropertyPersisting = 2 };
enum cudaStreamAttrID { cudaStreamAttributeAccessPolicyWindow = 1 };
constexpr unsigned cudaStreamNonBlocking = 1;

struct cudaAccessPolicyWindow {
  void* base_ptr;
  size_t num_bytes;
  float hitRatio;
  cudaAccessProperty hitProp;
  cudaAccessProperty missProp;
};
union cudaStreamAttrValue {
  cudaAccessPolicyWindow accessPolicyWindow;
};
struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int major, minor;
  int multiProcessorCount;
  int l2CacheSize;
  int persistingL2CacheMaxSize;
  int accessPolicyMaxWindowSize;
  size_t sharedMemPerBlockOptin;
  int clockRate;
};

// ---- host API ------------------------------------------------------------------------------------------------------
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetDevice(int* dev);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaGetDeviceCount(int* n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int dev);
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int dev);
cudaError_t cudaRuntimeGetVersion(int* v);
cudaError_t cudaDriverGetVersion(int* v);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b);
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t s);
cudaError_t cudaFreeAsync(void* p, cudaStream_t s);
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* pool, int dev);
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t pool, cudaMemPoolAttr a, void* v);
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t pool, size_t keep);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind k);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind k, cudaStream_t s = nullptr);
cudaError_t cudaMemset(void* dst, int v, size_t bytes);
cudaError_t cudaMemsetAsync(void* dst, int v, size_t bytes, cudaStream_t s = nullptr);
cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamSetAttribute(cudaStream_t s, cudaStreamAttrID a, const cudaStreamAttrValue* v);
cudaError_t cudaStreamGetAttribute(cudaStream_t s, cudaStreamAttrID a, cudaStreamAttrValue* v);
cudaError_t cudaDeviceSetLimit(cudaLimit l, size_t v);
cudaError_t cudaDeviceGetLimit(size_t* v, cudaLimit l);
cudaError_t cudaCtxResetPersistingL2Cache();
// Driver entry points (the addon never links the driver): "cuTensorMapEncodeTiled" gives the emulated encoder of
// cuda/emu/cuda.h; any other symbol is not found.
enum cudaDriverEntryPointQueryResult {
  cudaDriverEntryPointSuccess = 0,
  cudaDriverEntryPointSymbolNotFound = 1,
  cudaDriverEntryPointVersionNotSufficent = 2
};
enum cudaGetDriverEntryPointFlags { cudaEnableDefault = 0x0 };
cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** funcPtr, unsigned int cudaVersion,
                                             unsigned long long flags,
                                             cudaDriverEntryPointQueryResult* driverStatus = nullptr);
template <typename T>
cudaError_t cudaMalloc(T** p, size_t bytes) {  // as cuda_runtime.h's C++ overload
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
template <typename T>
cudaError_t cudaMallocAsync(T** p, size_t bytes, cudaStream_t s) {
  return cudaMallocAsync(reinterpret_cast<void**>(p), bytes, s);
}
cudaError_t sfemu_func_set_attribute(const void* f, cudaFuncAttribute a, int v);
cudaError_t sfemu_occupancy(int* blocks, const void* f, int threads, size_t smem);
template <typename F>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, F* f, int threads, size_t smem) {
  return sfemu_occupancy(blocks, reinterpret_cast<const void*>(f), threads, smem);
}
struct cudaFuncAttributes {
  int maxThreadsPerBlock;
};
template <typename F>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, F*) {  // every kernel has an image on the emulated device
  a->maxThreadsPerBlock = 1024;
  return cudaSuccess;
}
template <typename F>
cudaError_t cudaFuncSetAttribute(F* f, cudaFuncAttribute a, int v) {
  return sfemu_func_set_attribute(reinterpret_cast<const void*>(f), a, v);
}

// ---- the execution model -------------------------------------------------------------------------------------------
namespace sfemu {

// Runs `body` once per thread of every block of the grid (blocks one after another on the calling thread), as
// kernel<<<grid, block, smem, stream>>> would; a configuration CUDA refuses sets the last error instead.
void launch(const char* kernel, const void* fn, dim3 grid, dim3 block, size_t smem, cudaStream_t s,
            const std::function<void()>& body);

// A cooperative launch (cudaLaunchCooperativeKernel): every block resident at once, as the occupancy allows (refused
// with cudaErrorCooperativeLaunchTooLarge otherwise); grid_sync() is cooperative_groups::this_grid().sync().
cudaError_t launch_cooperative(const char* kernel, const void* fn, dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                               const std::function<void()>& body);
void grid_sync();
int occupancy(int threads, size_t smem);  // blocks per SM of the emulated device

const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
unsigned char* dynamic_smem();

int syncthreads(int pred);  // __syncthreads / __syncthreads_or: the OR of pred over the block
// A warp collective: every lane of `mask` deposits `mine` (n words) and waits for the others; returns the 32 lanes'
// deposits (slot l of lane l; valid until this lane's next collective). `what` names the collective: lanes of one
// exchange must all call the same one with the same mask.
const uint64_t* warp_exchange(const char* what, unsigned mask, const uint64_t* mine, int n);
int lane_id();
[[noreturn]] void fault(const char* what);

// mma.sync per the PTX ISA's fragment layouts (the wrappers of cuda_common.cuh call these; see emu.cpp).
void mma_m16n8k8_tf32(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1);
void mma_m16n8k16_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0, uint32_t b1);
uint32_t cvt_rna_tf32(float x);
// cp.async.cg.shared.global (16 bytes, the bytes past src_bytes zero-filled), cp.async.commit_group and
// cp.async.wait_group N, per thread: a copy lands in shared memory only when the issuing thread's wait completes its
// group (see emu.cpp). ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16 as a warp collective: `row` is this
// lane's row address, out[0..num) its registers.
void cp_async(void* smem, const void* gmem, int src_bytes);
void cp_async_commit();
void cp_async_wait(int pending);
void ldmatrix(uint32_t* out, int num, bool trans, const void* row);
// Hopper (cuda/hopper.cuh): shared-memory addresses (offsets in the block's dynamic shared memory) and wgmma as a
// warpgroup collective reading its operands through matrix descriptors (emu.cpp documents the layouts emulated).
uint32_t smem_addr(const void* p);
void wgmma_fence();
void wgmma_bf16(float* d, int n, uint64_t desc_a, uint64_t desc_b, bool scale_d);
void wgmma_commit();
void wgmma_wait(int pending);
// mbarrier (PTX ISA, "Parallel Synchronization and Communication Instructions: mbarrier") at a shared-memory address
// (smem_addr), and cp.async.bulk.tensor (TMA) loads completing on one: emu.cpp documents the emulated semantics.
void mbar_init(uint32_t bar, uint32_t count);
void mbar_arrive(uint32_t bar);
void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes);
void mbar_wait(uint32_t bar, uint32_t parity);
void tma_load(void* smem, const void* tensor_map, const int32_t* coords, int rank, uint32_t bar);

// Test hooks (emulation only): the last access-policy window set on a stream, the persisting-L2 limit, and an error
// that the next call of the named runtime function returns (to rehearse MPS/MIG refusals).
cudaAccessPolicyWindow stream_window(cudaStream_t s);
size_t persisting_limit();
void fail_next(const char* function, cudaError_t e);
int resets();  // cudaCtxResetPersistingL2Cache calls so far
long launches(const char* kernel);  // launches of the named kernel so far (that passed the launch checks)

template <typename T>
uint64_t to_word(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "warp shuffle of a type over 8 bytes");
  uint64_t w = 0;
  std::memcpy(&w, &v, sizeof v);
  return w;
}
template <typename T>
T from_word(uint64_t w) {
  T v;
  std::memcpy(&v, &w, sizeof v);
  return v;
}

}  // namespace sfemu

#define threadIdx (::sfemu::thread_idx())
#define blockIdx (::sfemu::block_idx())
#define blockDim (::sfemu::block_dim())
#define gridDim (::sfemu::grid_dim())
#define warpSize 32

inline void __syncthreads() { ::sfemu::syncthreads(0); }
inline int __syncthreads_or(int pred) { return ::sfemu::syncthreads(pred != 0); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::sfemu::warp_exchange("__syncwarp", mask, nullptr, 0); }

template <typename T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  const uint64_t w = ::sfemu::to_word(v);
  const uint64_t* all = ::sfemu::warp_exchange("__shfl_sync", mask, &w, 1);
  const int lane = ::sfemu::lane_id();
  const int from = (lane & ~(width - 1)) + (src & (width - 1));
  return ::sfemu::from_word<T>(all[from]);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const uint64_t w = ::sfemu::to_word(v);
  const uint64_t* all = ::sfemu::warp_exchange("__shfl_xor_sync", mask, &w, 1);
  const int lane = ::sfemu::lane_id();
  int from = lane ^ lane_mask;
  if ((from & ~(width - 1)) != (lane & ~(width - 1))) from = lane;  // outside the segment: own value (PTX shfl.bfly)
  return ::sfemu::from_word<T>(all[from]);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const uint64_t w = ::sfemu::to_word(v);
  const uint64_t* all = ::sfemu::warp_exchange("__shfl_down_sync", mask, &w, 1);
  const int lane = ::sfemu::lane_id();
  const int from = lane + static_cast<int>(delta);
  return ::sfemu::from_word<T>(all[(from & ~(width - 1)) == (lane & ~(width - 1)) ? from : lane]);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  const uint64_t w = pred != 0;
  const uint64_t* all = ::sfemu::warp_exchange("__ballot_sync", mask, &w, 1);
  unsigned r = 0;
  for (int l = 0; l < 32; ++l)
    if ((mask >> l) & 1u) r |= static_cast<unsigned>(all[l] != 0) << l;
  return r;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }

// Atomics: the threads of the emulation never run at the same time, so a read-modify-write is atomic as written.
template <typename T>
T atomicAdd(T* p, T v) {
  T old = *p;
  *p = old + v;
  return old;
}
template <typename T>
T atomicMin(T* p, T v) {
  T old = *p;
  if (v < old) *p = v;
  return old;
}
template <typename T>
T atomicMax(T* p, T v) {
  T old = *p;
  if (v > old) *p = v;
  return old;
}

inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline int __float_as_int(float f) { return static_cast<int>(__float_as_uint(f)); }
inline float __int_as_float(int i) { return __uint_as_float(static_cast<unsigned>(i)); }
// The _rn intrinsics are never contracted into a fused multiply-add (the empty asm keeps the rounded product).
inline float __fmul_rn(float a, float b) {
  volatile float r = a * b;
  return r;
}
inline float __fadd_rn(float a, float b) {
  volatile float r = a + b;
  return r;
}
inline float __fdividef(float a, float b) { return a / b; }
inline float __expf(float x) { return std::exp(x); }
// normcdff: the normal CDF, 0.5 erfc(-x / sqrt 2), evaluated in double (CUDA's is within 5 ulp of it).
inline float normcdff(float x) {
  return static_cast<float>(0.5 * std::erfc(-static_cast<double>(x) * 0.70710678118654752440));
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

// CUDA's global min / max overloads for device code.
#define SFEMU_MINMAX(T)                             \
  inline T min(T a, T b) { return b < a ? b : a; } \
  inline T max(T a, T b) { return a < b ? b : a; }
SFEMU_MINMAX(int)
SFEMU_MINMAX(unsigned)
SFEMU_MINMAX(long)
SFEMU_MINMAX(unsigned long)
SFEMU_MINMAX(long long)
SFEMU_MINMAX(unsigned long long)
#undef SFEMU_MINMAX
inline float min(float a, float b) { return std::fmin(a, b); }
inline float max(float a, float b) { return std::fmax(a, b); }
