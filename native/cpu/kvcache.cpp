// kvcache.cpp — kv_append: writes a chunk of new keys (or values) into a preallocated KV cache (see kernels.h).
//
// Incremental decoding keeps each layer's K and V for every position seen so far in a cache (B, H, Tmax, D) sized
// once for the longest sequence, and appends the n new positions of each step at `pos`: for every (b, h) that is one
// contiguous run of n * D floats on both sides (src (B, H, n, D) is dense), so the copy is B * H memcpys, split by
// rows of D floats across the pool when the chunk is large (a prefill) and done inline when it is small (one token per
// step: a few KiB, where waking threads would cost more than the copy). Purely memory-bound; memcpy is already the
// widest copy the CPU has. Every element of the destination window is written by exactly one task, positions outside
// [pos, pos + n) are never touched: deterministic for any thread count.
#include <algorithm>
#include <cstring>

#include "kernels.h"

namespace sf::cpu {

namespace {
constexpr int64_t kGrain = 16384;  // floats per parallel task, at least
}  // namespace

void kv_append(ThreadPool& pool, const float* src, float* cache, int64_t B, int64_t H, int64_t n, int64_t Tmax,
               int64_t D, int64_t pos) {
  if (B <= 0 || H <= 0 || n <= 0 || D <= 0) return;
  const int64_t rows = B * H * n;  // rows of D floats in src (B, H, n, D)
  // Rows [lo, hi) of src go to cache (B, H, Tmax, D) rows (bh * Tmax + pos + t): a run of consecutive rows that
  // stays within one (b, h) is contiguous on both sides and moves as one memcpy.
  auto copy = [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi;) {
      const int64_t bh = r / n, t = r % n;
      const int64_t run = std::min(hi, (bh + 1) * n) - r;
      std::memcpy(cache + (bh * Tmax + pos + t) * D, src + r * D, static_cast<size_t>(run * D) * sizeof(float));
      r += run;
    }
  };
  if (rows * D <= kGrain) {
    copy(0, rows);
    return;
  }
  pool.parallel_for(rows, std::max<int64_t>(1, kGrain / D), copy);
}

}  // namespace sf::cpu
