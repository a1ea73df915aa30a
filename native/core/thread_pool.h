// thread_pool.h — a persistent pool of worker threads for CPU kernels.
//
// One pool per addon instance (no global state). parallel_for(n, grain, fn) splits [0, n) into chunks of at least
// `grain` items; the calling thread works too, and the call returns when every chunk is done. Kernels are issued from
// one thread at a time (the device stream's thread), but the pool also guards against concurrent callers.
// Size: SHAREDFORMER_NUM_THREADS if set, else the machine's hardware threads; set_threads() changes it at run time.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace sf {

class ThreadPool {
 public:
  using RangeFn = std::function<void(int64_t begin, int64_t end)>;

  explicit ThreadPool(int threads = 0);  // 0: from the environment / machine
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return nthreads_.load(); }
  void set_threads(int n);  // 1 <= n <= 1024

  // Runs fn over [0, n) in chunks of >= grain items; fn(begin, end) is called once per chunk.
  void parallel_for(int64_t n, int64_t grain, const RangeFn& fn);

  static int default_threads();

  // Scratch memory for the kernel now running (packed matmul panels, partial sums): one 64-byte-aligned buffer per
  // pool that grows to the largest request and is reused by every later kernel — kernels run one at a time on the
  // device stream, so no two use it at once. Valid until the next call.
  float* workspace(size_t floats);

 private:
  void start(int n);
  void stop();
  void worker_loop();
  void run_chunks();

  std::mutex call_mu_;  // one parallel_for at a time
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  std::vector<std::thread> workers_;
  bool quit_ = false;
  std::atomic<uint64_t> generation_{0};  // bumped (under mu_) to publish a job
  std::atomic<int> active_{0};           // workers still inside the current job
  // current job
  const RangeFn* fn_ = nullptr;
  int64_t n_ = 0, chunk_ = 1, nchunks_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int> nthreads_{1};
  struct FreeDeleter {
    void operator()(float* p) const noexcept;
  };
  std::unique_ptr<float, FreeDeleter> ws_;
  size_t ws_floats_ = 0;
};

}  // namespace sf
