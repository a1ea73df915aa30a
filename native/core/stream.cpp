#include "stream.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "error.h"

namespace sf {

Stream::Stream(std::string name) : name_(std::move(name)) {
  const char* p = std::getenv("SHAREDFORMER_PROFILE");
  profile_ = p && *p && std::strcmp(p, "0") != 0;
  thread_ = std::thread([this] { loop(); });
}

Stream::~Stream() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    quit_ = true;
  }
  cv_work_.notify_all();
  thread_.join();
  if (!profile_ || profile_ops_.empty()) return;
  std::sort(profile_ops_.begin(), profile_ops_.end(),
            [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  double total = 0;
  for (const auto& [op, t] : profile_ops_) total += t.ms;
  std::fprintf(stderr, "sharedformer profile, %s stream: %.1f ms in %zu ops\n", name_.c_str(), total, profile_ops_.size());
  for (const auto& [op, t] : profile_ops_)
    std::fprintf(stderr, "  %-28s %10.2f ms %6.1f%% %9lld calls %9.1f us/call\n", op.c_str(), t.ms, 100 * t.ms / total,
                 static_cast<long long>(t.calls), 1000 * t.ms / static_cast<double>(t.calls));
}

namespace {
[[noreturn]] void refuse(const char* op, const std::string& stream) {
  error(op, ": cannot run while the ", stream,
        " stream records (a read or synchronisation inside a recording; the recorded work has not run)");
}
}  // namespace

uint64_t Stream::submit(const char* op, Task task, Effects effects, Record rec) {
  std::lock_guard<std::mutex> lk(mu_);
  if (capture_ && std::this_thread::get_id() == capture_thread_) {
    if (rec != Record::Allow) refuse(op, name_);
    capture_->items.push_back(Item{op, std::move(task), std::move(effects)});
    return submitted_;  // nothing new to wait for: the recorded task does not run now
  }
  queue_.push_back(Item{op, std::move(task), std::move(effects)});
  uint64_t t = ++submitted_;
  cv_work_.notify_one();
  return t;
}

uint64_t Stream::last_ticket() {
  std::lock_guard<std::mutex> lk(mu_);
  return submitted_;
}

void Stream::wait(uint64_t ticket) {
  std::unique_lock<std::mutex> lk(mu_);
  if (capture_ && std::this_thread::get_id() == capture_thread_) refuse("wait", name_);
  cv_done_.wait(lk, [&] { return completed_ >= ticket; });
}

std::vector<FailurePtr> Stream::take_failures(size_t* dropped) {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<FailurePtr> out;
  out.swap(failures_);
  if (dropped) *dropped = dropped_;
  dropped_ = 0;
  return out;
}

void Stream::begin_capture(const char* op) {
  std::lock_guard<std::mutex> lk(mu_);
  if (capture_) error(op, ": the ", name_, " stream is already recording");
  capture_ = std::make_unique<Recording>();
  capture_thread_ = std::this_thread::get_id();
}

std::shared_ptr<const Stream::Recording> Stream::end_capture(const char* op) {
  std::lock_guard<std::mutex> lk(mu_);
  if (!capture_ || capture_thread_ != std::this_thread::get_id()) error(op, ": the ", name_, " stream is not recording");
  std::shared_ptr<const Recording> r(capture_.release());
  capture_thread_ = {};
  return r;
}

void Stream::abort_capture() noexcept {
  std::unique_ptr<Recording> dropped;  // released outside the lock (it may free tensors)
  std::lock_guard<std::mutex> lk(mu_);
  if (!capture_ || capture_thread_ != std::this_thread::get_id()) return;
  dropped = std::move(capture_);
  capture_thread_ = {};
}

bool Stream::capturing_here() const {
  std::lock_guard<std::mutex> lk(mu_);
  return capture_ && capture_thread_ == std::this_thread::get_id();
}

bool Stream::capturing() const {
  std::lock_guard<std::mutex> lk(mu_);
  return capture_ != nullptr;
}

uint64_t Stream::replay(const Recording& r) {
  std::lock_guard<std::mutex> lk(mu_);
  if (capture_ && std::this_thread::get_id() == capture_thread_) {  // a replay inside a capture is recorded too
    for (const Item& it : r.items) capture_->items.push_back(it);
    return submitted_;
  }
  for (const Item& it : r.items) queue_.push_back(it);
  submitted_ += r.items.size();
  cv_work_.notify_one();
  return submitted_;
}

void Stream::refuse_if_capturing(const char* op) const {
  if (capturing_here()) refuse(op, name_);
}

void Stream::run_sync(const char* op, Task task) {
  refuse_if_capturing(op);
  std::exception_ptr failed;
  // The wrapper never throws, so the stream records nothing: the error goes to this caller only.
  wait(submit(op, [&failed, &task] {
    try {
      task();
    } catch (...) {
      failed = std::current_exception();
    }
  }));
  if (!failed) return;
  try {
    std::rethrow_exception(failed);
  } catch (const Error& e) {
    throw Error(e.kind(), cat(op, " (", name_, " stream): ", e.what()));
  } catch (const std::exception& e) {
    error(op, " (", name_, " stream): ", e.what());
  } catch (...) {
    error(op, " (", name_, " stream): unknown error");
  }
}

// Runs one task with its effects (see stream.h); returns its failure, or null.
FailurePtr Stream::run_item(Item& item) {
  FailurePtr failure;
  // Whatever the task writes is no longer what an upload noted (Storage::note_ids); an upload notes it again itself.
  // and every storage it writes gets a new write version, so no copy recorded before mirrors it any more
  // (Storage::mirrors); a task that writes a copy records what it mirrors itself, after its write.
  for (const Tensor& t : item.effects.writes) {
    if (!t.storage) continue;
    t.storage->forget_ids(t.byte_begin(), t.byte_end());
    t.storage->bump_version();
  }
  for (const Tensor& t : item.effects.reads) {
    if (FailurePtr f = t.failure()) {
      failure = std::make_shared<Failure>(
          Failure{f->kind, cat(item.op, " (", name_, " stream): an input holds the output of a failed op: ", f->message)});
      break;
    }
  }
  if (!failure) {
    try {
      item.task();
    } catch (const Error& e) {
      failure = std::make_shared<Failure>(Failure{e.kind(), cat(item.op, " (", name_, " stream): ", e.what())});
    } catch (const std::exception& e) {
      failure = std::make_shared<Failure>(Failure{ErrorKind::Generic, cat(item.op, " (", name_, " stream): ", e.what())});
    } catch (...) {
      failure = std::make_shared<Failure>(Failure{ErrorKind::Generic, cat(item.op, " (", name_, " stream): unknown error")});
    }
  }
  for (const Tensor& t : item.effects.writes) {
    if (failure) {
      t.storage->mark_failed(t.byte_begin(), t.byte_end(), failure);
      t.storage->forget_ids(t.byte_begin(), t.byte_end());  // a task that noted ids and then threw
    } else {
      t.storage->mark_written(t.byte_begin(), t.byte_end());
    }
  }
  return failure;
}

void Stream::loop() {
  for (;;) {
    Item item;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_work_.wait(lk, [&] { return quit_ || !queue_.empty(); });
      if (queue_.empty()) return;  // quit requested and drained
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    const auto t0 = profile_ ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    FailurePtr failure = run_item(item);
    if (profile_) {
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      auto it = std::find_if(profile_ops_.begin(), profile_ops_.end(), [&](const auto& e) { return e.first == item.op; });
      if (it == profile_ops_.end()) it = profile_ops_.insert(profile_ops_.end(), {item.op, OpTime{}});
      it->second.ms += ms;
      it->second.calls += 1;
    }
    item = Item{};  // release captured tensors before signalling completion
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (failure) {
        if (failures_.size() < kMaxKept)
          failures_.push_back(std::move(failure));
        else
          ++dropped_;
      }
      ++completed_;
    }
    cv_done_.notify_all();
  }
}

}  // namespace sf
