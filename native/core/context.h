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
#include "comm.h"
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

  // The distributed runtime (comm.h): null until init_comm(), which loads and initialises MPI (throws naming what to
  // install when it is missing). What backends() reports about MPI and NCCL is probed once (comm_probe()).
  Comm* comm();
  Comm& init_comm();
  const CommProbe& comm_probe();

 private:
  std::unique_ptr<ThreadPool> pool_;
  std::unique_ptr<Backend> cpu_;
  std::mutex mu_;
  std::map<int, std::unique_ptr<Backend>> cuda_;
  bool probed_ = false;
  CudaInfo cuda_info_;
  std::unique_ptr<Comm> comm_;
  std::unique_ptr<CommProbe> comm_probe_;
};

}  // namespace sf
