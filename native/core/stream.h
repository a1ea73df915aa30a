// stream.h — an in-order queue of work for one device, executed by one native thread.
//
// Every op validates its arguments and allocates its outputs on the JavaScript thread, then submits the kernel work
// here and returns at once (design invariant 5: the event loop is never blocked by kernels). Work runs in submission
// order, so a later op sees the results of earlier ones. submit() returns a ticket; wait(ticket) blocks until that
// work is done. A task that throws records its error; the next wait() rethrows it (naming the op and the stream) and
// clears it. The destructor drains the queue, then joins the thread.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace sf {

class Stream {
 public:
  using Task = std::function<void()>;

  explicit Stream(std::string name);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  uint64_t submit(const char* op, Task task);
  void wait(uint64_t ticket);  // throws sf::Error if any task so far failed
  void wait_done(uint64_t ticket);  // waits without consuming or throwing an error (cross-stream ordering)
  void wait_all() { wait(last_ticket()); }
  uint64_t last_ticket();
  // Submit and wait: for work whose result the caller needs now.
  void run_sync(const char* op, Task task) { wait(submit(op, std::move(task))); }

 private:
  void loop();

  std::string name_;
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  std::deque<std::pair<const char*, Task>> queue_;
  uint64_t submitted_ = 0, completed_ = 0;
  bool quit_ = false;
  std::string error_;
  std::thread thread_;
};

}  // namespace sf
