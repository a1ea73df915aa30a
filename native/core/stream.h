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
//
// Recording (record/replay of a decode step; docs/architecture.md "Decoding"). Between begin_capture() and
// end_capture(), what the capturing thread submits is recorded, not run: the tasks with their effects, holding the
// tensors they touch. replay(recording) queues every recorded task again, in order, under one lock: one call from
// JavaScript stands for the whole op sequence. A task reads its tensors' memory when it runs, so new inputs written
// into the recorded input tensors before a replay give that replay's results; values a binding captured as numbers
// are the recording's. Each replayed task is an ordinary task: it checks its inputs for failures, and a failure
// marks what it writes. Only work submitted with Record::Allow is recorded; anything else submitted, and any wait,
// on the recording thread throws (a host read inside a recording would read memory the recorded work has not
// written yet).
#pragma once
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
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
  struct Item {
    const char* op;
    Task task;
    Effects effects;
  };
  // The tasks one capture recorded (immutable once made; replays copy them).
  struct Recording {
    std::vector<Item> items;
  };

  explicit Stream(std::string name);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Whether a task may be recorded (see "Recording" above): Allow for kernel work that owns what it captures (ops,
  // fills, uploads of staged data); Refuse (the default) for everything else — host reads, synchronisation, work
  // that waits on another stream — which then throws on a thread that is recording, naming op.
  enum class Record { Refuse, Allow };
  uint64_t submit(const char* op, Task task, Effects effects = {}, Record rec = Record::Refuse);
  // Blocks until the work up to ticket is done. Throws only on a thread that is recording (the recorded work has
  // not run: nothing to wait for would be a stale read).
  void wait(uint64_t ticket);
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

  // Starts recording what the calling thread submits (Error if a capture is already open).
  void begin_capture(const char* op);
  // Ends the capture and returns what it recorded (Error if the calling thread has none open).
  std::shared_ptr<const Recording> end_capture(const char* op);
  // Ends the capture, if the calling thread has one open, and drops what it recorded (never throws).
  void abort_capture() noexcept;
  bool capturing() const;
  // Throws, naming op, when the calling thread is recording on this stream.
  void refuse_if_capturing(const char* op) const;
  // Queues every task of r, in order; returns the ticket of the last one.
  uint64_t replay(const Recording& r);

 private:
  void loop();
  FailurePtr run_item(Item& item);

  std::string name_;
  bool capturing_here() const;  // the calling thread has a capture open
  mutable std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  std::deque<Item> queue_;
  uint64_t submitted_ = 0, completed_ = 0;
  bool quit_ = false;
  std::vector<FailurePtr> failures_;
  size_t dropped_ = 0;
  // SHAREDFORMER_PROFILE=1 (read at construction): the time each op's tasks took on this stream, printed to stderr
  // by the destructor, slowest first. Touched only by the stream's thread.
  struct OpTime {
    double ms = 0;
    int64_t calls = 0;
  };
  bool profile_ = false;
  std::vector<std::pair<std::string, OpTime>> profile_ops_;
  std::thread::id capture_thread_{};      // the thread whose submits are recorded; none when not capturing
  std::unique_ptr<Recording> capture_;  // what it has recorded so far
  std::thread thread_;
};

}  // namespace sf
