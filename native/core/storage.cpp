#include "storage.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "error.h"

namespace sf {

void* BlockCache::take(size_t rounded) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = free_.find(rounded);
  if (it == free_.end()) return nullptr;
  void* p = it->second;
  free_.erase(it);
  cached_ -= rounded;
  return p;
}

// Removes what [begin, end) covers from the failed ranges (the caller holds failed_mu_).
static void trim(std::vector<Storage::FailedRange>& failed, size_t begin, size_t end) {
  std::vector<Storage::FailedRange> kept;
  for (Storage::FailedRange& r : failed) {
    if (!ranges_meet(r.begin, r.end, begin, end)) {
      kept.push_back(std::move(r));
      continue;
    }
    // What the new range does not cover keeps its own failure.
    if (r.begin < begin) kept.push_back({r.begin, begin, r.failure});
    if (end < r.end && begin < end) kept.push_back({end, r.end, r.failure});
  }
  failed = std::move(kept);
}

// The newest failure replaces older ones where it covers them, so a read names the op that last wrote the bytes.
void Storage::mark_failed(size_t begin, size_t end, FailurePtr f) {
  std::lock_guard<std::mutex> lk(failed_mu_);
  trim(failed_, begin, end);
  if (failed_.size() >= kMaxFailedRanges) {
    size_t b = begin, e = end;
    for (const FailedRange& r : failed_) b = std::min(b, r.begin), e = std::max(e, r.end);
    failed_.clear();
    begin = b, end = e;
  }
  failed_.push_back({begin, end, std::move(f)});
  any_failed_.store(true, std::memory_order_release);
}

void Storage::mark_written(size_t begin, size_t end) {
  if (!any_failed_.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lk(failed_mu_);
  trim(failed_, begin, end);
  any_failed_.store(!failed_.empty(), std::memory_order_release);
}

FailurePtr Storage::failure(size_t begin, size_t end) const {
  if (!any_failed_.load(std::memory_order_acquire)) return nullptr;
  std::lock_guard<std::mutex> lk(failed_mu_);
  for (const FailedRange& r : failed_)
    if (ranges_meet(r.begin, r.end, begin, end)) return r.failure;
  return nullptr;
}

bool BlockCache::put(size_t rounded, void* p) {
  std::lock_guard<std::mutex> lk(mu_);
  if (cached_ + rounded > limit_) return false;
  free_.emplace(rounded, p);
  cached_ += rounded;
  return true;
}

static size_t physical_memory() {
  long pages = sysconf(_SC_PHYS_PAGES);
  long page = sysconf(_SC_PAGESIZE);
  return (pages > 0 && page > 0) ? static_cast<size_t>(pages) * static_cast<size_t>(page) : (size_t{1} << 40);
}

CpuAllocator::CpuAllocator() : Allocator(Device{DeviceType::CPU, 0}), limit_(physical_memory()), cache_(limit_ / 8) {}

void* CpuAllocator::allocate(size_t bytes) {
  if (bytes > limit_)
    range_error("cpu allocator: cannot allocate ", bytes, " bytes: more than the machine's physical memory (", limit_,
                " bytes)");
  size_t rounded = BlockCache::round(bytes);
  if (void* p = cache_.take(rounded)) return p;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) {
    empty_cache();
    p = std::aligned_alloc(64, rounded);
  }
  if (!p) range_error("cpu allocator: out of memory allocating ", bytes, " bytes");
  return p;
}

void CpuAllocator::deallocate(void* p, size_t bytes) noexcept {
  if (!cache_.put(BlockCache::round(bytes), p)) std::free(p);
}

void CpuAllocator::empty_cache() noexcept {
  cache_.drain([](void* p) { std::free(p); });
}

}  // namespace sf
