// cpu_backend.h — the reference backend: host memory, the thread pool, and the elementary kernels.
#pragma once
#include "../core/backend.h"
#include "../core/thread_pool.h"

namespace sf {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(ThreadPool& pool);
  // Queued tasks call this object's kernels: finish them before this part of the object is destroyed.
  ~CpuBackend() override { stream().wait_all(); }

  void fill(const Tensor& t, double value) override;
  void random(const Tensor& t, RandomKind kind, uint64_t seed, uint64_t offset, float a, float b) override;
  void copy_from_host(const Tensor& dst, const void* src) override;
  void copy_to_host(void* dst, const Tensor& src) override;
  void copy(const Tensor& dst, const Tensor& src) override;

  ThreadPool& pool() { return pool_; }

 private:
  ThreadPool& pool_;
};

}  // namespace sf
