// permute.cpp — dst (A, C, B, D) (= or +=) src (A, B, C, D): the two middle dimensions swapped (see kernels.h).
//
// The Transformer's head split (B, T, H, Dh) -> (B, H, T, Dh) and merge back: tensors are dense with no strides, so
// the attention kernels need their heads laid out contiguously. Purely memory-bound: every element is read once and
// written once (dst is read too with accumulate), and rows of D elements stay contiguous on both sides.
//
// For each a this is a transpose of a (B, C) matrix whose elements are D-rows, done in tiles of Bt x Ct D-rows
// (Bt = 16, Ct * D ~ 256 floats): a tile reads Bt runs of Ct * D contiguous floats and writes Ct runs of Bt * D, so
// that both sides stream whole cache lines even when D is tiny, and the few lines in flight do not collide in the
// cache when the strides are powers of two (taller tiles ran 2-3x slower at D = 1). Tiles are the units of
// parallel_for.
// A D-row is moved by code specialised on D: D <= 8 known at compile time (a few moves, no loop or call per row),
// 8 < D < 16 by two overlapping 8-float moves (copy) or a short loop (accumulate), longer rows by a vector loop, or
// by memcpy when copying D >= 64; a loop over a run-time D ran at a third to a half of the speed for D = 2 to 8.
// When B = 1 or C = 1 the permutation is the identity and the buffer is copied (or added) flat.
// Every element of dst is written by exactly one tile: deterministic for any thread count.
#include <algorithm>
#include <cstring>

#include "kernels.h"
#include "simd.h"

namespace sf::cpu {

using namespace sf::simd;

namespace {

constexpr int64_t kGrain = 16384;     // elements per parallel task, at least
constexpr int64_t kMemcpyMin = 64;    // rows at least this long are copied with memcpy
constexpr int64_t kTileB = 16;        // D-rows of src per tile (runs written to dst: kTileB * D floats)
constexpr int64_t kTileRun = 256;     // about Ct * D floats: the runs read from src

// d[0, n) (= or +=) s[0, n): memcpy or a vector loop; two vectors per step, a scalar tail (an add rounds the same in
// a lane or alone).
template <typename V>
SF_INLINE void row(const float* __restrict s, float* __restrict d, int64_t n, bool acc) {
  constexpr int W = Traits<V>::W;
  int64_t i = 0;
  if (acc) {
    for (; i + 2 * W <= n; i += 2 * W) {
      store<V>(d + i, load<V>(d + i) + load<V>(s + i));
      store<V>(d + i + W, load<V>(d + i + W) + load<V>(s + i + W));
    }
    for (; i + W <= n; i += W) store<V>(d + i, load<V>(d + i) + load<V>(s + i));
    for (; i < n; ++i) d[i] += s[i];
  } else if (n >= kMemcpyMin) {
    std::memcpy(d, s, static_cast<size_t>(n) * sizeof(float));
  } else {
    for (; i + 2 * W <= n; i += 2 * W) {
      store<V>(d + i, load<V>(s + i));
      store<V>(d + i + W, load<V>(s + i + W));
    }
    for (; i + W <= n; i += W) store<V>(d + i, load<V>(s + i));
    for (; i < n; ++i) d[i] = s[i];
  }
}

// One D-row: DK > 0 is D itself (<= 8, known at compile time); DK = -1: 8 < D < 16; DK = 0: D >= 16.
template <typename V, int DK>
SF_INLINE void drow(const float* __restrict s, float* __restrict d, int64_t D, bool acc) {
  if constexpr (DK > 0) {
    if (acc) {
      for (int k = 0; k < DK; ++k) d[k] += s[k];
    } else {
      std::memcpy(d, s, DK * sizeof(float));
    }
  } else if constexpr (DK < 0) {
    if (acc) {
      for (int64_t k = 0; k < D; ++k) d[k] += s[k];
    } else {  // [0, 8) and [D - 8, D) overlap: every element is written, with its own value
      const f32x8 lo = load<f32x8>(s), hi = load<f32x8>(s + D - 8);
      store<f32x8>(d, lo);
      store<f32x8>(d + D - 8, hi);
    }
  } else {
    row<V>(s, d, D, acc);
  }
}

struct Tiling {
  int64_t A, B, C, D;
  int64_t Bt, Ct;    // tile: Bt values of b x Ct values of c
  int64_t nbt, nct;  // tiles along b and c
};

// Tiles [lo, hi); tile u = (a * nbt + bt) * nct + ct covers b in [bt * Bt, +Bt) and c in [ct * Ct, +Ct).
template <typename V, int DK>
SF_INLINE void tiles(int64_t lo, int64_t hi, const float* src, float* dst, const Tiling& m, bool acc) {
  const int64_t D = DK > 0 ? DK : m.D;
  const int64_t sstride = m.C * D;  // between consecutive b in src (A, B, C, D)
  for (int64_t u = lo; u < hi; ++u) {
    const int64_t ct = u % m.nct, r = u / m.nct;
    const int64_t bt = r % m.nbt, a = r / m.nbt;
    const int64_t b0 = bt * m.Bt, b1 = std::min(m.B, b0 + m.Bt);
    const int64_t c0 = ct * m.Ct, c1 = std::min(m.C, c0 + m.Ct);
    for (int64_t c = c0; c < c1; ++c) {
      const float* s = src + ((a * m.B + b0) * m.C + c) * D;  // src[a][b0][c], then down b
      float* d = dst + ((a * m.C + c) * m.B + b0) * D;        // dst[a][c][b0], contiguous along b
      for (int64_t b = b0; b < b1; ++b, s += sstride, d += D) drow<V, DK>(s, d, D, acc);
    }
  }
}

template <typename V>
void tiles_body(int64_t lo, int64_t hi, const float* src, float* dst, Tiling m, bool acc) {
  switch (m.D) {
    case 1: return tiles<V, 1>(lo, hi, src, dst, m, acc);
    case 2: return tiles<V, 2>(lo, hi, src, dst, m, acc);
    case 3: return tiles<V, 3>(lo, hi, src, dst, m, acc);
    case 4: return tiles<V, 4>(lo, hi, src, dst, m, acc);
    case 5: return tiles<V, 5>(lo, hi, src, dst, m, acc);
    case 6: return tiles<V, 6>(lo, hi, src, dst, m, acc);
    case 7: return tiles<V, 7>(lo, hi, src, dst, m, acc);
    case 8: return tiles<V, 8>(lo, hi, src, dst, m, acc);
    default:
      if (m.D < 16) return tiles<V, -1>(lo, hi, src, dst, m, acc);
      return tiles<V, 0>(lo, hi, src, dst, m, acc);
  }
}
SF_VARIANTS(permute_tiles, (int64_t lo, int64_t hi, const float* src, float* dst, Tiling m, bool acc),
            (lo, hi, src, dst, m, acc), tiles_body)

// dst[lo, hi) (= or +=) src[lo, hi): the identity case.
template <typename V>
void flat_body(int64_t lo, int64_t hi, const float* src, float* dst, bool acc) {
  row<V>(src + lo, dst + lo, hi - lo, acc);
}
SF_VARIANTS(permute_flat, (int64_t lo, int64_t hi, const float* src, float* dst, bool acc), (lo, hi, src, dst, acc),
            flat_body)

}  // namespace

void permute0213(ThreadPool& pool, const float* src, float* dst, int64_t A, int64_t B, int64_t C, int64_t D,
                 bool accumulate) {
  if (A <= 0 || B <= 0 || C <= 0 || D <= 0) return;
  if (B == 1 || C == 1) {  // (A, 1, C, D) -> (A, C, 1, D) and (A, B, 1, D) -> (A, 1, B, D) keep the memory order
    auto fn = SF_PICK(permute_flat);
    pool.parallel_for(A * B * C * D, kGrain, [&](int64_t lo, int64_t hi) { fn(lo, hi, src, dst, accumulate); });
    return;
  }
  Tiling m;
  m.A = A;
  m.B = B;
  m.C = C;
  m.D = D;
  m.Bt = std::min(B, kTileB);
  m.Ct = std::min(C, std::max<int64_t>(1, kTileRun / D));
  m.nbt = (B + m.Bt - 1) / m.Bt;
  m.nct = (C + m.Ct - 1) / m.Ct;
  const int64_t grain = std::max<int64_t>(1, kGrain / (m.Bt * m.Ct * D));  // tiles per task
  auto fn = SF_PICK(permute_tiles);
  pool.parallel_for(A * m.nbt * m.nct, grain, [&](int64_t lo, int64_t hi) { fn(lo, hi, src, dst, m, accumulate); });
}

}  // namespace sf::cpu
