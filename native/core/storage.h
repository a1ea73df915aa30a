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
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "device.h"
#include "error.h"

namespace sf {

struct MemoryCounters {
  std::atomic<int64_t> bytes{0};     // bytes held by live storages
  std::atomic<int64_t> storages{0};  // live storages
  std::atomic<int64_t> tensors{0};   // live tensor handles (views included), kept by the binding
  std::atomic<int64_t> peak_bytes{0};
  std::atomic<int64_t> packed{0};        // of the storages: packed weight copies (cpu/packed_weights.cpp)
  std::atomic<int64_t> packed_bytes{0};  // and their bytes

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
  // Returns cached free blocks to the system; bytes still cached afterwards (0 unless the backend cannot release).
  virtual void empty_cache() noexcept {}
  virtual size_t cached_bytes() { return 0; }

  Device device() const { return device_; }
  MemoryCounters& counters() { return counters_; }

 private:
  Device device_;
  MemoryCounters counters_;
};

// Freed blocks by rounded size, for reuse without a trip to the system allocator (page faults on the host, cudaMalloc's
// synchronisation on the GPU). Thread-safe. Sizes round to 512-byte granules up to 1 MiB, then to 2 MiB granules, so
// the waste is bounded and a training step's allocations reach a steady state of exact hits.
class BlockCache {
 public:
  explicit BlockCache(size_t limit_bytes) : limit_(limit_bytes) {}
  static size_t round(size_t b) {
    if (b <= (size_t{1} << 20)) return (b + 511) / 512 * 512;
    return (b + (size_t{2} << 20) - 1) / (size_t{2} << 20) * (size_t{2} << 20);
  }
  // A cached block of exactly `rounded` bytes, or null.
  void* take(size_t rounded);
  // Keeps the block unless that would exceed the limit; returns false (caller frees it) then.
  bool put(size_t rounded, void* p);
  // Empties the cache, handing every block to `release(p)`.
  template <typename F>
  void drain(F&& release) {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& kv : free_) release(kv.second);
    free_.clear();
    cached_ = 0;
  }
  size_t cached_bytes() {
    std::lock_guard<std::mutex> lk(mu_);
    return cached_;
  }

 private:
  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  size_t cached_ = 0;
  size_t limit_;
};

// Why an op on a stream failed: the error's kind (TypeError / RangeError / Error in JavaScript) and its message, which
// names the op and the stream. Shared by every byte range that op was to write.
struct Failure {
  ErrorKind kind;
  std::string message;
};
using FailurePtr = std::shared_ptr<const Failure>;

// [b1, e1) and [b2, e2) share a byte, or start at the same byte (so an empty range is caught where it lies).
inline bool ranges_meet(size_t b1, size_t e1, size_t b2, size_t e2) { return (b1 < e2 && b2 < e1) || b1 == b2; }

// What is known of a run of int32 values without reading them back: the two smallest and the two largest distinct
// values (min2 / max2 are absent — INT64_MAX / INT64_MIN — when there is no second distinct value; min1 / max1 too
// for no values). Enough to prove on the host that every value other than one skipped value lies in [lo, hi): the
// skipped value can only be min1 or max1 when it is not strictly inside, and then min2 / max2 bound the rest. The
// bounds of a run also bound every part of it, so a summary trimmed to what a later write did not touch stays sound.
struct IdBounds {
  int64_t min1 = INT64_MAX, min2 = INT64_MAX, max1 = INT64_MIN, max2 = INT64_MIN;
  static IdBounds of(const int32_t* v, int64_t n);
  static IdBounds single(int32_t v) { return IdBounds{v, INT64_MAX, v, INT64_MIN}; }
  // Bounds of the union of two runs.
  static IdBounds merge(const IdBounds& a, const IdBounds& b);
  // Every value lies in [lo, hi), or equals skip when has_skip. False means "not proven", not "invalid".
  bool all_valid(int64_t lo, int64_t hi, bool has_skip, int32_t skip) const;
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
  const std::shared_ptr<Allocator>& allocator_ptr() const { return alloc_; }

  // A consumer's derived data about this storage's bytes, freed with the storage (one kind per build: the CPU
  // matmul's packed weights, cpu/packed_weights.cpp). The consumer keeps its own locking and checks write_version()
  // before trusting what it derived.
  struct Attachment {
    virtual ~Attachment() = default;
  };
  template <class T>
  T& attachment() {
    std::lock_guard<std::mutex> lk(attach_mu_);
    if (!attach_) attach_ = std::make_unique<T>();
    return static_cast<T&>(*attach_);
  }

  // Failed ranges (design invariant 7). A stream task that fails marks the byte ranges its op was to write; one that
  // succeeds clears the ranges it wrote. Reading a range, or using it as an op's input, first asks failure(): the
  // first failure whose range meets [begin, end), or null. Only stream tasks mark and clear, in stream order, so a
  // read that waits for the work before it sees the state that work left. At most kMaxFailedRanges ranges are kept;
  // past that they merge into one covering range (a wider poison, never a lost one).
  void mark_failed(size_t begin, size_t end, FailurePtr f);
  void mark_written(size_t begin, size_t end);
  FailurePtr failure(size_t begin, size_t end) const;
  static constexpr size_t kMaxFailedRanges = 64;
  struct FailedRange {
    size_t begin, end;
    FailurePtr failure;
  };

  // Known int32 contents (IdBounds), so that an op that trusts ids can skip its device check. An upload from host
  // memory notes the bounds of the values it wrote (note_ids, from inside its stream task, after the copy); the
  // stream forgets them over every range a task writes, before the task runs and again if it fails (stream.cpp), so
  // any other write — a kernel, a device-to-device copy, a partial write through a view — leaves its bytes unknown.
  // known_ids(begin, end): the bounds of everything in [begin, end) when noted ranges cover all of it, else nullopt.
  // Ranges are in bytes; an int32 read of a range is covered only where all four bytes of each value are. At most
  // kMaxIdRanges are kept (an older one is dropped past that: forgetting is always sound).
  void note_ids(size_t begin, size_t end, const IdBounds& b);
  void forget_ids(size_t begin, size_t end);
  std::optional<IdBounds> known_ids(size_t begin, size_t end) const;
  static constexpr size_t kMaxIdRanges = 16;
  struct IdRange {
    size_t begin, end;
    IdBounds bounds;
  };

  // Write versions and mirrors: whether this storage holds, right now, a converted copy of another storage's bytes
  // (the bf16 copy of the flat parameter buffer, written by the AdamW step that updated the fp32 values). The stream
  // bumps the write version of every storage a task writes, before the task runs (stream.cpp, beside forget_ids), so
  // every write by any path — a kernel, a copy, an upload, a failed op — changes it. The task that writes a copy
  // records, after its write and from inside the task, what it mirrors (note_mirror: the source storage, its fp32 byte
  // range and the current versions of both storages). A consumer asks, from inside its own stream task, whether a
  // range of the copy is still current for a range of the source (mirrors): only if neither storage has been written
  // since, and the ranges correspond element for element (fp32 byte b <-> bf16 byte dst_begin + (b - src_begin) / 2).
  // Any doubt answers false, so a consumer falls back to converting the fp32 values itself: the copy never fools.
  // A storage whose memory JavaScript can write directly (Tensor.sharedData) neither mirrors nor is mirrored.
  uint64_t write_version() const { return version_.load(std::memory_order_acquire); }
  void bump_version() { version_.fetch_add(1, std::memory_order_acq_rel); }
  void mark_host_writable() { host_writable_.store(true, std::memory_order_release); }
  bool host_writable() const { return host_writable_.load(std::memory_order_acquire); }
  void note_mirror(const std::shared_ptr<Storage>& src, size_t src_begin, size_t src_end, size_t dst_begin);
  void forget_mirror();
  bool mirrors(const Storage& src, size_t src_begin, size_t src_end, size_t dst_begin) const;

 private:
  std::shared_ptr<Allocator> alloc_;
  size_t bytes_;
  void* ptr_ = nullptr;
  mutable std::mutex failed_mu_;
  std::vector<FailedRange> failed_;
  std::atomic<bool> any_failed_{false};  // lock-free fast path for the common case of no failure
  mutable std::mutex ids_mu_;
  std::vector<IdRange> ids_;
  std::atomic<bool> any_ids_{false};  // lock-free fast path: most storages hold no noted ids
  std::atomic<uint64_t> version_{0};
  std::atomic<bool> host_writable_{false};
  struct Mirror {
    std::weak_ptr<Storage> src;  // expired when the source is gone (no false match with a later storage at its address)
    uint64_t src_version = 0, dst_version = 0;
    size_t src_begin = 0, src_end = 0, dst_begin = 0;
  };
  mutable std::mutex mirror_mu_;
  std::optional<Mirror> mirror_;
  std::mutex attach_mu_;
  std::unique_ptr<Attachment> attach_;
};

// Host memory: 64-byte aligned (one cache line, one AVX-512 vector), with freed blocks cached for reuse (up to 1/8 of
// physical memory) so that a training step does not page-fault its activations in afresh every time. Requests larger
// than the machine's physical memory are refused up front, because Linux overcommit would otherwise hand out the
// address space and the process would be killed when the pages are touched.
class CpuAllocator final : public Allocator {
 public:
  CpuAllocator();
  ~CpuAllocator() override { empty_cache(); }
  void* allocate(size_t bytes) override;
  void deallocate(void* p, size_t bytes) noexcept override;
  void empty_cache() noexcept override;
  size_t cached_bytes() override { return cache_.cached_bytes(); }
  size_t limit() const { return limit_; }

 private:
  size_t limit_;
  BlockCache cache_;
};

}  // namespace sf
