// storage.h — refcounted device memory.
//
// An Allocator hands out raw bytes on one device and keeps that device's live-byte counters. A Storage owns one
// allocation (RAII: freed by the allocator that made it when the last reference goes). Tensors are views into a
// Storage, so many tensors — every parameter of a model, say — can share one buffer. A Storage holds a shared_ptr
// to its allocator, so memory can be released safely even after the addon instance that made it has been torn down.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "device.h"

namespace sf {

struct MemoryCounters {
  std::atomic<int64_t> bytes{0};     // bytes held by live storages
  std::atomic<int64_t> storages{0};  // live storages
  std::atomic<int64_t> tensors{0};   // live tensor handles (views included), kept by the binding
  std::atomic<int64_t> peak_bytes{0};

  void add_bytes(int64_t n) {
    int64_t now = bytes.fetch_add(n) + n;
    int64_t peak = peak_bytes.load();
    while (now > peak && !peak_bytes.compare_exchange_weak(peak, now)) {
    }
  }
};

class Allocator {
 public:
  explicit Allocator(Device d) : device_(d) {}
  virtual ~Allocator() = default;
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // Throws sf::Error (Range) when the request cannot be met; never returns null for bytes > 0.
  virtual void* allocate(size_t bytes) = 0;
  virtual void deallocate(void* p, size_t bytes) noexcept = 0;

  Device device() const { return device_; }
  MemoryCounters& counters() { return counters_; }

 private:
  Device device_;
  MemoryCounters counters_;
};

class Storage {
 public:
  Storage(std::shared_ptr<Allocator> alloc, size_t bytes) : alloc_(std::move(alloc)), bytes_(bytes) {
    ptr_ = bytes_ ? alloc_->allocate(bytes_) : nullptr;
    alloc_->counters().add_bytes(static_cast<int64_t>(bytes_));
    alloc_->counters().storages.fetch_add(1);
  }
  ~Storage() {
    if (ptr_) alloc_->deallocate(ptr_, bytes_);
    alloc_->counters().bytes.fetch_sub(static_cast<int64_t>(bytes_));
    alloc_->counters().storages.fetch_sub(1);
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return alloc_->device(); }
  Allocator& allocator() const { return *alloc_; }

 private:
  std::shared_ptr<Allocator> alloc_;
  size_t bytes_;
  void* ptr_ = nullptr;
};

// Host memory: 64-byte aligned (one cache line, one AVX-512 vector). Requests larger than the machine's physical
// memory are refused up front, because Linux overcommit would otherwise hand out the address space and the process
// would be killed when the pages are touched.
class CpuAllocator final : public Allocator {
 public:
  CpuAllocator();
  void* allocate(size_t bytes) override;
  void deallocate(void* p, size_t bytes) noexcept override;
  size_t limit() const { return limit_; }

 private:
  size_t limit_;
};

}  // namespace sf
