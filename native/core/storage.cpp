#include "storage.h"

#include <unistd.h>

#include <cstdlib>

#include "error.h"

namespace sf {

CpuAllocator::CpuAllocator() : Allocator(Device{DeviceType::CPU, 0}) {
  long pages = sysconf(_SC_PHYS_PAGES);
  long page = sysconf(_SC_PAGESIZE);
  limit_ = (pages > 0 && page > 0) ? static_cast<size_t>(pages) * static_cast<size_t>(page) : (size_t{1} << 40);
}

void* CpuAllocator::allocate(size_t bytes) {
  if (bytes > limit_)
    range_error("cpu allocator: cannot allocate ", bytes, " bytes: more than the machine's physical memory (", limit_,
                " bytes)");
  size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) range_error("cpu allocator: out of memory allocating ", bytes, " bytes");
  return p;
}

void CpuAllocator::deallocate(void* p, size_t) noexcept { std::free(p); }

}  // namespace sf
