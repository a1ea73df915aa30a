// embedding.cpp — token embedding lookup and its gradient (see kernels.h).
//
// Forward is a gather of table rows: every id is checked first (so a bad id throws before anything is written), then
// rows are copied in parallel. Backward is a scatter-add into the table, where repeated ids make rows collide. To be
// deterministic without atomics, the table is split into (vocabulary range x column block) tiles, each owned by one
// task; a task walks the tokens in order and adds the ones whose id falls in its vocabulary range. Every element of
// dtable therefore receives its contributions in token order, whatever the thread count. Column blocks give the
// parallelism for wide rows; vocabulary ranges give it for narrow rows (each task rescans the ids: n int32 reads).
#include <algorithm>
#include <cstring>

#include "../core/error.h"
#include "kernels.h"

namespace sf::cpu {

namespace {

constexpr int64_t kColBlock = 256;  // floats per column block of the backward tiles (1 KiB)

void check_ids(const int32_t* ids, int64_t n, int64_t V) {
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= V)
      range_error("embedding: token id ", ids[i], " at position ", i, " is out of range [0, ", V, ")");
}

}  // namespace

void embedding_forward(ThreadPool& pool, const int32_t* ids, int64_t n, const float* table, int64_t V, int64_t C,
                       float* out) {
  // ids (n), table (V, C), out (n, C)
  check_ids(ids, n, V);  // even when C = 0: a bad id is an error whatever the width
  if (n <= 0 || C <= 0) return;
  const int64_t grain = std::max<int64_t>(1, 8192 / C);
  pool.parallel_for(n, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      std::memcpy(out + i * C, table + static_cast<int64_t>(ids[i]) * C, static_cast<size_t>(C) * sizeof(float));
  });
}

void embedding_backward(ThreadPool& pool, const int32_t* ids, int64_t n, const float* dout, int64_t V, int64_t C,
                        float* dtable) {
  // ids (n), dout (n, C), dtable (V, C) +=
  check_ids(ids, n, V);  // even when C = 0: a bad id is an error whatever the width
  if (n <= 0 || C <= 0) return;
  const int64_t cblocks = (C + kColBlock - 1) / kColBlock;
  const int64_t want = 4 * static_cast<int64_t>(pool.threads());
  const int64_t vparts = std::min<int64_t>(V, std::max<int64_t>(1, (want + cblocks - 1) / cblocks));
  pool.parallel_for(vparts * cblocks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t vp = t / cblocks, cb = t % cblocks;
      const int64_t v0 = V * vp / vparts, v1 = V * (vp + 1) / vparts;
      const int64_t c0 = cb * kColBlock, w = std::min(C, c0 + kColBlock) - c0;
      for (int64_t i = 0; i < n; ++i) {
        const int64_t id = ids[i];
        if (id < v0 || id >= v1) continue;
        float* __restrict dst = dtable + id * C + c0;
        const float* __restrict src = dout + i * C + c0;
        for (int64_t j = 0; j < w; ++j) dst[j] += src[j];
      }
    }
  });
}

}  // namespace sf::cpu
