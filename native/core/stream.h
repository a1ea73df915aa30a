// stream.h — an in-order queue of work for one device, executed by one native thread.
//
// Every op validates its arguments and allocates its outputs on the JavaScript thread, then submits the kernel work
// here and returns at once (design invariant 5: the event loop is never blocked by kernels). Work runs in submission
// order, so a later op sees the results of earlier ones. submit() returns a ticket; wait(ticket) blocks until that
// work is done.
//
// Errors of queued work (design invariant 7). A task is submitted with its effects: the tensors it reads and the ones
// it writes. Before it runs, the stream asks each input for a failure (storage.h); if one has failed, the task does
// not run and fails with that cause. A task that fails (throws, or has a failed input) marks every range it writes as
// failed with its error, which names the op and the stream; one that succeeds clears the ranges it wrote. Reading a
// tensor therefore fails exactly when the op that last wrote it failed, and never because of unrelated work. Every
// failure is also kept for take_failures() (synchronize()), which hands them out once. Before a task runs (and again
// when it fails) the stream also forgets the int32 bounds an upload noted over what it writes (Storage::note_ids), so
// only an upload, noting them again inside its own task, leaves ids known on the host. run_sync() is for the host's
// own work (reads): it throws that task's error to its caller and records nothing.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tensor.h"

namespace sf {

// What a task touches: the tensors it reads (checked for failures first) and the ones it writes (marked failed when
// it fails, cleared when it succeeds). An accumulating output (`+=`) is in both.
struct Effects {
  std::vector<Tensor> reads, writes;
};

class Stream {
 public:
  using Task = std::function<void()>;

  explicit Stream(std::string name);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  uint64_t submit(const char* op, Task task, Effects effects = {});
  void wait(uint64_t ticket);  // blocks until the work up to ticket is done; never throws
  void wait_all() { wait(last_ticket()); }
  uint64_t last_ticket();
  // The failures since the last call (oldest first), and how many more were dropped past kMaxKept; each is handed
  // out once.
  std::vector<FailurePtr> take_failures(size_t* dropped = nullptr);
  static constexpr size_t kMaxKept = 64;
  // Submit and wait, for host work whose result the caller needs now: throws the task's own error (sf::Error with
  // its kind, naming op and stream), and nothing else.
  void run_sync(const char* op, Task task);
  const std::string& name() const { return name_; }

 private:
  struct Item {
    const char* op;
    Task task;
    Effects effects;
  };
  void loop();
  FailurePtr run_item(Item& item);

  std::string name_;
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  std::deque<Item> queue_;
  uint64_t submitted_ = 0, completed_ = 0;
  bool quit_ = false;
  std::vector<FailurePtr> failures_;
  size_t dropped_ = 0;
  std::thread thread_;
};

}  // namespace sf
