#include "storage.h"

#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

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

IdBounds IdBounds::of(const int32_t* v, int64_t n) {
  IdBounds b;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t x = v[i];
    if (x < b.min1) {
      b.min2 = b.min1;
      b.min1 = x;
    } else if (x != b.min1 && x < b.min2) {
      b.min2 = x;
    }
    if (x > b.max1) {
      b.max2 = b.max1;
      b.max1 = x;
    } else if (x != b.max1 && x > b.max2) {
      b.max2 = x;
    }
  }
  return b;
}

// Every value of either run other than the union's min1 is >= its own run's min1 (when that is larger) or its min2
// (when its min1 is the union's), so the smallest candidate above min1 bounds them all; the same for the maxima.
IdBounds IdBounds::merge(const IdBounds& a, const IdBounds& b) {
  IdBounds r;
  r.min1 = std::min(a.min1, b.min1);
  r.max1 = std::max(a.max1, b.max1);
  for (int64_t c : {a.min1, a.min2, b.min1, b.min2})
    if (c > r.min1 && c < r.min2) r.min2 = c;
  for (int64_t c : {a.max1, a.max2, b.max1, b.max2})
    if (c < r.max1 && c > r.max2) r.max2 = c;
  return r;
}

bool IdBounds::all_valid(int64_t lo, int64_t hi, bool has_skip, int32_t skip) const {
  const int64_t least = has_skip && min1 == skip ? min2 : min1;  // bounds of the values other than skip
  const int64_t most = has_skip && max1 == skip ? max2 : max1;
  if (least > most) return true;  // no value, or every value is skip
  return least >= lo && most < hi;
}

// Removes what [begin, end) covers from the noted ranges (the caller holds ids_mu_); what stays keeps its bounds,
// which still bound the part that stays.
static void trim_ids(std::vector<Storage::IdRange>& ids, size_t begin, size_t end) {
  std::vector<Storage::IdRange> kept;
  for (const Storage::IdRange& r : ids) {
    if (!(r.begin < end && begin < r.end)) {
      kept.push_back(r);
      continue;
    }
    if (r.begin < begin) kept.push_back({r.begin, begin, r.bounds});
    if (end < r.end) kept.push_back({end, r.end, r.bounds});
  }
  ids = std::move(kept);
}

void Storage::note_ids(size_t begin, size_t end, const IdBounds& b) {
  if (begin >= end) return;
  std::lock_guard<std::mutex> lk(ids_mu_);
  trim_ids(ids_, begin, end);
  while (ids_.size() >= kMaxIdRanges) ids_.erase(ids_.begin());  // the oldest: its bytes become unknown
  ids_.push_back({begin, end, b});
  any_ids_.store(true, std::memory_order_release);
}

void Storage::forget_ids(size_t begin, size_t end) {
  if (begin >= end || !any_ids_.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lk(ids_mu_);
  trim_ids(ids_, begin, end);
  any_ids_.store(!ids_.empty(), std::memory_order_release);
}

std::optional<IdBounds> Storage::known_ids(size_t begin, size_t end) const {
  if (begin >= end) return IdBounds{};  // nothing to know
  if (!any_ids_.load(std::memory_order_acquire)) return std::nullopt;
  std::vector<IdRange> meet;
  {
    std::lock_guard<std::mutex> lk(ids_mu_);
    for (const IdRange& r : ids_)
      if (r.begin < end && begin < r.end) meet.push_back(r);
  }
  std::sort(meet.begin(), meet.end(), [](const IdRange& a, const IdRange& b) { return a.begin < b.begin; });
  IdBounds b;
  size_t covered = begin;  // [begin, covered) is covered so far
  for (const IdRange& r : meet) {
    if (r.begin > covered) return std::nullopt;  // a gap: those bytes are unknown
    covered = std::max(covered, r.end);
    b = IdBounds::merge(b, r.bounds);
  }
  if (covered < end) return std::nullopt;
  return b;
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
#if defined(__GLIBC__)
  // free() gives memory back to the system only from the top of an arena: the pages of blocks freed below a live one
  // (and of the small native objects of tensors the garbage collector has finalized since) stay resident. Emptying
  // the cache is when a caller asks for memory back, so every arena's wholly free pages are released too.
  malloc_trim(0);
#endif
}

void Storage::note_mirror(const std::shared_ptr<Storage>& src, size_t src_begin, size_t src_end, size_t dst_begin) {
  std::lock_guard<std::mutex> lk(mirror_mu_);
  if (!src || src_end < src_begin || (src_end - src_begin) % 4 != 0) {
    mirror_.reset();
    return;
  }
  mirror_ = Mirror{src, src->write_version(), write_version(), src_begin, src_end, dst_begin};
}

void Storage::forget_mirror() {
  std::lock_guard<std::mutex> lk(mirror_mu_);
  mirror_.reset();
}

bool Storage::mirrors(const Storage& src, size_t src_begin, size_t src_end, size_t dst_begin) const {
  if (host_writable_.load(std::memory_order_acquire) || src.host_writable_.load(std::memory_order_acquire)) return false;
  std::lock_guard<std::mutex> lk(mirror_mu_);
  if (!mirror_) return false;
  const Mirror& m = *mirror_;
  const std::shared_ptr<Storage> s = m.src.lock();
  if (s.get() != &src) return false;
  if (m.src_version != src.write_version() || m.dst_version != write_version()) return false;
  if (src_begin < m.src_begin || src_end > m.src_end || src_end < src_begin) return false;
  if ((src_begin - m.src_begin) % 4 != 0) return false;
  return dst_begin == m.dst_begin + (src_begin - m.src_begin) / 2;
}

}  // namespace sf
