// scratch.cuh — stream-ordered device scratch memory for the kernels of cuda/ that need a workspace (partial sums,
// sort buffers, a flag read back by the host).
//
// The launch functions of kernels.h take only a stream, so their temporary buffers come from the device's stream-
// ordered pool (cudaMallocAsync / cudaFreeAsync): the free is queued behind the kernels that use the buffer, and the
// pool keeps the memory (the CUDA backend raises its release threshold), so a steady-state training step makes no
// cudaMalloc call. Include from .cu files only.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>

#include "../native/core/error.h"

namespace sf::cuda {

class Scratch {
 public:
  Scratch(cudaStream_t s, size_t bytes, const char* op) : s_(s) {
    if (bytes == 0) return;
    cudaError_t e = cudaMallocAsync(&p_, bytes, s);
    if (e == cudaErrorNotSupported) {  // a device without stream-ordered pools: plain memory, freed after a sync
      cudaGetLastError();
      pooled_ = false;
      e = cudaMalloc(&p_, bytes);
    }
    if (e != cudaSuccess) {
      p_ = nullptr;
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      range_error(op, ": CUDA out of memory for the kernel's workspace: asked for ", bytes, " bytes, ", free_b, " of ",
                  total_b, " bytes free (", cudaGetErrorName(e), ")");
    }
  }
  ~Scratch() {
    if (!p_) return;
    if (pooled_) {
      cudaFreeAsync(p_, s_);
    } else {
      cudaStreamSynchronize(s_);  // the kernels that use the buffer must be done before it is freed
      cudaFree(p_);
    }
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  template <typename T>
  T* as() const {
    return static_cast<T*>(p_);
  }

 private:
  cudaStream_t s_;
  void* p_ = nullptr;
  bool pooled_ = true;
};

}  // namespace sf::cuda
