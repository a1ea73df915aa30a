#include "stream.h"

#include <exception>

#include "error.h"

namespace sf {

Stream::Stream(std::string name) : name_(std::move(name)) { thread_ = std::thread([this] { loop(); }); }

Stream::~Stream() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    quit_ = true;
  }
  cv_work_.notify_all();
  thread_.join();
}

uint64_t Stream::submit(const char* op, Task task) {
  std::lock_guard<std::mutex> lk(mu_);
  queue_.emplace_back(op, std::move(task));
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
  cv_done_.wait(lk, [&] { return completed_ >= ticket; });
  if (!error_.empty()) {
    std::string e = error_;
    error_.clear();
    error(e);
  }
}

void Stream::wait_done(uint64_t ticket) {
  std::unique_lock<std::mutex> lk(mu_);
  cv_done_.wait(lk, [&] { return completed_ >= ticket; });
}

void Stream::loop() {
  for (;;) {
    std::pair<const char*, Task> item;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_work_.wait(lk, [&] { return quit_ || !queue_.empty(); });
      if (queue_.empty()) return;  // quit requested and drained
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    std::string failure;
    try {
      item.second();
    } catch (const std::exception& e) {
      failure = cat(item.first, " (", name_, " stream): ", e.what());
    } catch (...) {
      failure = cat(item.first, " (", name_, " stream): unknown error");
    }
    item.second = nullptr;  // release captured tensors before signalling completion
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (!failure.empty() && error_.empty()) error_ = failure;
      ++completed_;
    }
    cv_done_.notify_all();
  }
}

}  // namespace sf
