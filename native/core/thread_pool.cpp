#include "thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>

#include "error.h"

namespace sf {

int ThreadPool::default_threads() {
  if (const char* env = std::getenv("SHAREDFORMER_NUM_THREADS")) {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v >= 1 && v <= 1024) return static_cast<int>(v);
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw ? static_cast<int>(std::min(hw, 1024u)) : 1;
}

void ThreadPool::FreeDeleter::operator()(float* p) const noexcept { std::free(p); }

float* ThreadPool::workspace(size_t floats) {
  if (floats > ws_floats_) {
    size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    ws_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!ws_) {
      ws_floats_ = 0;
      range_error("thread pool: cannot allocate ", bytes, " bytes of kernel workspace");
    }
    ws_floats_ = floats;
  }
  return ws_.get();
}

ThreadPool::ThreadPool(int threads) { start(threads > 0 ? threads : default_threads()); }

ThreadPool::~ThreadPool() { stop(); }

void ThreadPool::start(int n) {
  quit_ = false;
  generation_.store(0);
  for (int i = 1; i < n; ++i) workers_.emplace_back([this] { worker_loop(); });
  nthreads_.store(n);
}

void ThreadPool::stop() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    quit_ = true;
  }
  cv_work_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::set_threads(int n) {
  if (n < 1 || n > 1024) range_error("setNumThreads: thread count must be between 1 and 1024, got ", n);
  std::lock_guard<std::mutex> call(call_mu_);
  if (n == threads()) return;
  stop();
  start(n);
}

void ThreadPool::run_chunks() {
  for (;;) {
    int64_t c = next_.fetch_add(1, std::memory_order_relaxed);
    if (c >= nchunks_) return;
    int64_t b = c * chunk_;
    (*fn_)(b, std::min(n_, b + chunk_));
  }
}

namespace {
// Spins up to ~50 us for cond() before the caller falls back to blocking: kernels issue parallel loops back to back,
// and a condition-variable wake-up costs tens of microseconds — as much as a small kernel.
template <typename F>
bool spin_until(F&& cond) {
  auto start = std::chrono::steady_clock::now();
  for (int i = 1;; ++i) {
    if (cond()) return true;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
    if ((i & 63) == 0 && std::chrono::steady_clock::now() - start > std::chrono::microseconds(50)) return false;
  }
}
}  // namespace

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    if (!spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; })) {
      std::unique_lock<std::mutex> lk(mu_);
      cv_work_.wait(lk, [&] { return quit_ || generation_.load(std::memory_order_acquire) != seen; });
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (quit_) return;
    }
    seen = generation_.load(std::memory_order_acquire);
    run_chunks();
    if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lk(mu_);
      cv_done_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, const RangeFn& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  std::lock_guard<std::mutex> call(call_mu_);
  const int64_t t = threads();
  if (t == 1 || n <= grain) {
    fn(0, n);
    return;
  }
  // Aim for ~4 chunks per thread for load balance, never below the grain.
  int64_t chunk = std::max(grain, (n + 4 * t - 1) / (4 * t));
  {
    std::lock_guard<std::mutex> lk(mu_);
    fn_ = &fn;
    n_ = n;
    chunk_ = chunk;
    nchunks_ = (n + chunk - 1) / chunk;
    next_.store(0);
    active_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_work_.notify_all();
  run_chunks();
  if (!spin_until([&] { return active_.load(std::memory_order_acquire) == 0; })) {
    std::unique_lock<std::mutex> lk(mu_);
    cv_done_.wait(lk, [&] { return active_.load(std::memory_order_acquire) == 0; });
  }
  fn_ = nullptr;
}

}  // namespace sf
