// cuda_backend.cu — the CUDA backend: device probing, a caching allocator, one cudaStream per device, and the
// elementary kernels (fill, random, copies) that mirror native/cpu/cpu_backend.cpp, which is their reference.
//
// The CUDA runtime is linked statically, so the addon needs only the NVIDIA driver. Without a driver or a GPU,
// cuda_probe() reports available = false and the reason, and everything runs on the CPU.
#include <cuda_runtime.h>

#include <cstdint>

#include "../native/core/backend.h"
#include "cuda_common.cuh"
#include "l2_plan.h"
#include "../native/core/philox.h"

namespace sf {

namespace {

[[noreturn]] void cuda_fail(cudaError_t e, const char* what) {
  error("CUDA error in ", what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
}
#define SF_CUDA_CHECK(expr)                      \
  do {                                           \
    cudaError_t sf_e_ = (expr);                  \
    if (sf_e_ != cudaSuccess) cuda_fail(sf_e_, #expr); \
  } while (0)

// Binds the calling thread to a device for the lifetime of the guard (JS thread, stream thread, libuv thread).
struct DeviceGuard {
  int prev = -1;
  explicit DeviceGuard(int dev) {
    cudaGetDevice(&prev);
    if (prev != dev) SF_CUDA_CHECK(cudaSetDevice(dev));
  }
  ~DeviceGuard() {
    int cur = -1;
    cudaGetDevice(&cur);
    if (prev >= 0 && cur != prev) cudaSetDevice(prev);
  }
};

// Caching allocator: freed blocks go to a per-size free list and are handed out again without cudaMalloc, so a
// training step reaches a steady state with no allocator calls. All work on a device runs on its one stream, so a
// block freed by the host can be reused by later work on that stream without an extra synchronisation.
class CudaCachingAllocator final : public Allocator {
 public:
  explicit CudaCachingAllocator(int dev) : Allocator(Device{DeviceType::CUDA, dev}), cache_(SIZE_MAX) {}
  ~CudaCachingAllocator() override { empty_cache(); }

  void* allocate(size_t bytes) override {
    size_t size = BlockCache::round(bytes);
    if (void* p = cache_.take(size)) return p;
    DeviceGuard g(device().index);
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, size);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      empty_cache();
      e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      range_error("cuda:", device().index, " out of memory: asked for ", bytes, " bytes, ", free_b, " of ", total_b,
                  " bytes free");
    }
    return p;
  }

  void deallocate(void* p, size_t bytes) noexcept override { cache_.put(BlockCache::round(bytes), p); }

  void empty_cache() noexcept override {
    int prev = -1;
    cudaGetDevice(&prev);
    cudaSetDevice(device().index);
    cudaDeviceSynchronize();
    cache_.drain([](void* p) { cudaFree(p); });
    cudaMemPool_t pool = nullptr;  // and the kernels' workspace pool (cuda/scratch.cuh)
    if (cudaDeviceGetDefaultMemPool(&pool, device().index) == cudaSuccess) cudaMemPoolTrimTo(pool, 0);
    cudaGetLastError();
    if (prev >= 0) cudaSetDevice(prev);
  }
  size_t cached_bytes() override { return cache_.cached_bytes(); }

 private:
  BlockCache cache_;
};

template <typename T>
__global__ void fill_kernel(T* __restrict__ p, int64_t n, T v) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    p[i] = v;
}

// out: float32 (is_bf16 = false) or bfloat16 storage; same element -> counter mapping as the CPU kernel.
__global__ void random_kernel(void* __restrict__ out, bool is_bf16, int64_t n, int kind, uint64_t seed,
                              uint64_t offset, float a, float b) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint64_t e = offset + static_cast<uint64_t>(i);
    float v = kind == 0 ? a + (b - a) * uniform_at(seed, e) : a + b * normal_at(seed, e);
    if (is_bf16)
      static_cast<uint16_t*>(out)[i] = f32_to_bf16(v);  // dtype.h, host and device
    else
      static_cast<float*>(out)[i] = v;
  }
}

unsigned grid_for(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65535 * 8 ? blocks : 65535 * 8);
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int dev)
      : Backend(std::make_shared<CudaCachingAllocator>(dev), "cuda:" + std::to_string(dev)), dev_(dev) {
    l2_.device = dev_;
    DeviceGuard g(dev_);
    SF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    // The kernels' workspaces (cuda/scratch.cuh) come from the device's stream-ordered pool: keep what it has
    // reserved instead of returning it at every synchronisation, so a steady-state step makes no cudaMalloc call.
    // (A device without pools makes the workspaces fall back to cudaMalloc; see scratch.cuh.)
    int pools = 0;
    cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, dev_);
    cudaMemPool_t pool = nullptr;
    if (pools && cudaDeviceGetDefaultMemPool(&pool, dev_) == cudaSuccess) {
      uint64_t threshold = UINT64_MAX;
      SF_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    }
    cudaGetLastError();
  }
  ~CudaBackend() override {
    stream().wait_all();
    DeviceGuard g(dev_);
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }

  void fill(const Tensor& t, double value) override {
    DeviceGuard g(dev_);
    const int64_t n = t.numel();
    switch (t.dtype) {
      case DType::f32:
        SF_LAUNCH(fill_kernel<float>, (grid_for(n, 256), 256, 0, stream_), t.data<float>(), n, static_cast<float>(value));
        break;
      case DType::i32:
        SF_LAUNCH(fill_kernel<int32_t>, (grid_for(n, 256), 256, 0, stream_), t.data<int32_t>(), n, static_cast<int32_t>(value));
        break;
      case DType::bf16:
        SF_LAUNCH(fill_kernel<uint16_t>, (grid_for(n, 256), 256, 0, stream_), t.data<uint16_t>(), n,
                                                                      f32_to_bf16(static_cast<float>(value)));
        break;
    }
    SF_CUDA_CHECK(cudaGetLastError());
  }

  void random(const Tensor& t, RandomKind kind, uint64_t seed, uint64_t offset, float a, float b) override {
    DeviceGuard g(dev_);
    const int64_t n = t.numel();
    SF_LAUNCH(random_kernel, (grid_for(n, 256), 256, 0, stream_), t.raw(), t.dtype == DType::bf16, n, static_cast<int>(kind),
                                                         seed, offset, a, b);
    SF_CUDA_CHECK(cudaGetLastError());
  }

  void copy_from_host(const Tensor& dst, const void* src) override {
    DeviceGuard g(dev_);
    SF_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src, dst.nbytes(), cudaMemcpyHostToDevice, stream_));
    SF_CUDA_CHECK(cudaStreamSynchronize(stream_));  // src is host memory the caller may release afterwards
  }
  void copy_to_host(void* dst, const Tensor& src) override {
    DeviceGuard g(dev_);
    SF_CUDA_CHECK(cudaMemcpyAsync(dst, src.raw(), src.nbytes(), cudaMemcpyDeviceToHost, stream_));
    SF_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy(const Tensor& dst, const Tensor& src) override {
    DeviceGuard g(dev_);
    SF_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), dst.nbytes(), cudaMemcpyDeviceToDevice, stream_));
  }

  void* native_stream() override { return stream_; }
  void make_current() override {
    int cur = -1;
    if (cudaGetDevice(&cur) != cudaSuccess || cur != dev_) SF_CUDA_CHECK(cudaSetDevice(dev_));
  }
  cuda::L2State* l2_state() override { return &l2_; }
  cuda::GemmImpl gemm_impl() const override { return gemm_; }

 private:
  int dev_;
  cudaStream_t stream_ = nullptr;
  // The shared-weight L2 window of this device's stream (cuda/l2.cu): the set-aside is set once per backend, and the
  // current window and the reason persisting L2 is off, if it is, live here (no static state).
  cuda::L2State l2_;
  // SHAREDFORMER_GEMM=legacy selects the fp32-operand bf16 mma kernel instead of the pipelined one, =wgmma the Hopper
  // kernel (NT products on a device of compute capability 9.0; lane-verified only); read once here.
  const cuda::GemmImpl gemm_ = cuda::gemm_impl_from_env();
};

}  // namespace

CudaInfo cuda_probe() {
  CudaInfo info;
  info.compiled = true;
#ifdef SHAREDFORMER_CUDA_ARCHS
  {
    std::string s = SHAREDFORMER_CUDA_ARCHS, cur;
    for (char c : s) {
      if (c == ';' || c == ',' || c == ' ') {
        if (!cur.empty()) info.architectures.push_back(cur);
        cur.clear();
      } else {
        cur += c;
      }
    }
    if (!cur.empty()) info.architectures.push_back(cur);
  }
#endif
  cudaRuntimeGetVersion(&info.runtime_version);
  cudaError_t e = cudaDriverGetVersion(&info.driver_version);
  if (e != cudaSuccess || info.driver_version == 0) {
    info.reason = "no NVIDIA driver was found (libcuda.so could not be loaded); running on the CPU";
    cudaGetLastError();
    return info;
  }
  int n = 0;
  e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    info.reason = cat("the NVIDIA driver reports no usable device: ", cudaGetErrorName(e), " (",
                      cudaGetErrorString(e), ")");
    cudaGetLastError();
    return info;
  }
  if (n == 0) {
    info.reason = "no CUDA device is present";
    return info;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    CudaDeviceInfo d;
    d.index = i;
    d.name = p.name;
    d.major = p.major;
    d.minor = p.minor;
    d.total_bytes = static_cast<int64_t>(p.totalGlobalMem);
    d.multiprocessors = p.multiProcessorCount;
    info.devices.push_back(d);
  }
  if (info.devices.empty()) {
    info.reason = "device properties could not be read";
    return info;
  }
  if (info.devices[0].major < 8) {
    info.reason = cat("CUDA device 0 (", info.devices[0].name, ") has compute capability ", info.devices[0].major, ".",
                      info.devices[0].minor, "; sharedformer needs 8.0 or newer");
    info.devices.clear();
    return info;
  }
  info.available = true;
  return info;
}

std::unique_ptr<Backend> make_cuda_backend(int index) { return std::make_unique<CudaBackend>(index); }

}  // namespace sf
