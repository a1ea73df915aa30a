// backend.h — one device's memory, stream and elementary kernels.
//
// A Backend owns its device's allocator and its in-order Stream. The methods below are the kernels themselves: they
// are called from inside Stream tasks (never from the JavaScript thread) after the binding has validated every
// argument, so they assume shapes, dtypes and sizes are right. The CPU backend (native/cpu) is the reference; the CUDA
// backend (cuda/) implements the same methods and is tested against it.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "stream.h"
#include "tensor.h"

namespace sf {

namespace cuda {
struct L2State;               // cuda/l2_plan.h
enum class GemmImpl : int;    // cuda/kernels.h
}

enum class RandomKind : int { Uniform = 0, Normal = 1 };

// Derived destructors must drain the stream first (stream().wait_all()): queued tasks call the
// derived kernels, which must not run on a half-destroyed object.
class Backend {
 public:
  Backend(std::shared_ptr<Allocator> alloc, const std::string& stream_name)
      : alloc_(std::move(alloc)), stream_(stream_name) {}
  virtual ~Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  Device device() const { return alloc_->device(); }
  const std::shared_ptr<Allocator>& allocator() const { return alloc_; }
  Stream& stream() { return stream_; }

  // t[:] = value (converted to t.dtype)
  virtual void fill(const Tensor& t, double value) = 0;
  // Uniform: a + (b - a) * U[0,1); Normal: a + b * N(0,1); element i uses counter (offset + i) — see philox.h
  virtual void random(const Tensor& t, RandomKind kind, uint64_t seed, uint64_t offset, float a, float b) = 0;
  // dst (this device) <- src (host memory holding dst.nbytes() bytes)
  virtual void copy_from_host(const Tensor& dst, const void* src) = 0;
  // copy_from_host, and for an int32 dst also notes the bounds of the values written on dst's storage
  // (Storage::note_ids), so that an op that trusts ids can skip its device check. src must not change during the call
  // (a private copy of the caller's data); call it from the stream task whose effects write dst.
  void upload(const Tensor& dst, const void* src) {
    copy_from_host(dst, src);
    if (dst.dtype == DType::i32 && dst.numel() > 0)
      dst.storage->note_ids(dst.byte_begin(), dst.byte_end(),
                            IdBounds::of(static_cast<const int32_t*>(src), dst.numel()));
  }
  // dst (host memory, src.nbytes() bytes) <- src (this device)
  virtual void copy_to_host(void* dst, const Tensor& src) = 0;
  // dst <- src, both on this device, same dtype and element count
  virtual void copy(const Tensor& dst, const Tensor& src) = 0;

  // The device's native queue for kernels launched by the op bindings: the cudaStream_t of a CUDA backend (cast to
  // void*), null on the CPU. Work enqueued on it from this backend's Stream tasks runs in submission order.
  virtual void* native_stream() { return nullptr; }
  // Makes this backend's device current on the calling thread (cudaSetDevice); called by every op task before it
  // launches kernels. A no-op on the CPU.
  virtual void make_current() {}
  // The device's persisting-L2 state (cuda/l2_plan.h), owned by a CUDA backend; null on the CPU. Touched only from this
  // backend's Stream tasks (cuda::persist_l2, and reports read with stream().run_sync), hence in submission order and
  // never concurrently.
  virtual cuda::L2State* l2_state() { return nullptr; }
  // The bf16 GEMM implementation this device's matmuls use (cuda/kernels.h, GemmImpl): read once, when a CUDA backend
  // is created, from SHAREDFORMER_GEMM; the default (0, the pipelined kernel) on the CPU, where it is not used.
  virtual cuda::GemmImpl gemm_impl() const { return cuda::GemmImpl{}; }

 private:
  std::shared_ptr<Allocator> alloc_;
  Stream stream_;
};

// What the CUDA side of this binary can do on this machine.
struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;
  int64_t total_bytes = 0;
  int multiprocessors = 0;
};
struct CudaInfo {
  bool compiled = false;   // this binary contains CUDA kernels
  bool available = false;  // ... and a driver and at least one device were found
  std::string reason;      // why not, when !available
  int runtime_version = 0, driver_version = 0;
  std::vector<CudaDeviceInfo> devices;
  std::vector<std::string> architectures;  // the SASS/PTX targets compiled in
};

// Implemented in cuda/ when built with CUDA, else in native/core/no_cuda.cpp.
CudaInfo cuda_probe();
std::unique_ptr<Backend> make_cuda_backend(int index);

}  // namespace sf
