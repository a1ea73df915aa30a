#include "storage.h"

#include <unistd.h>

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
