// context.h — everything one addon instance owns: the CPU thread pool and one Backend per device.
//
// There is no global mutable state in the native code: the Node-API binding creates one Context per instance
// (main thread, each worker thread) and destroys it when that environment shuts down. Backends are created lazily;
// the CUDA ones only when a CUDA device is first used.
#pragma once
#include <map>
#include <memory>
#include <mutex>

#include "backend.h"
#include "thread_pool.h"

namespace sf {

class Context {
 public:
  Context();
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  ThreadPool& pool() { return *pool_; }
  Backend& backend(Device d, const char* op = "sharedformer");  // throws, naming op, if d is unavailable
  Backend& cpu() { return *cpu_; }
  const CudaInfo& cuda_info();
  // Every backend created so far (for memory reports and synchronisation).
  std::vector<Backend*> backends();

 private:
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Backend> cpu_;
  std::mutex mu_;
  std::map<int, std::unique_ptr<Backend>> cuda_;
  bool probed_ = false;
  CudaInfo cuda_info_;
};

}  // namespace sf
