// elementwise.cpp — axpby (residual adds, scaling) and inverted dropout, forward and backward (see kernels.h).
//
// All three are flat loops split over the thread pool; the hot loops are vector templates instantiated per ISA by
// SF_VARIANTS. axpby reads a[i] and b[i] before writing out[i], so out may be a or b itself.
// Dropout draws its mask from the Philox dropout stream (dropout.h, the formula shared with the CUDA kernels): element
// i uses counter e = offset + i, word e % 4 of block e / 4. Blocks are generated kBatch at a time with the blocks as
// the loop the compiler vectorizes, so the ten Philox rounds run kBatch lanes wide (vector 32 x 32 -> 64-bit
// multiplies). Batches are aligned to multiples of 64 counters; one cut by a thread's range runs on a padded copy. The
// backward regenerates the same mask from (seed, offset, p): nothing is stored. Kept elements are x * (1 / (1 - p)),
// dropped ones x * 0; p = 0 is a copy (forward) or a plain add (backward).
#include <algorithm>
#include <cstring>

#include "dropout.h"
#include "kernels.h"
#include "simd.h"

namespace sf::cpu {

using namespace sf::simd;

namespace {

constexpr int64_t kGrain = 16384;  // elements per parallel task, at least
constexpr int kBatch = 16;          // Philox blocks generated together (64 elements)

// out[i] = alpha * a[i] + beta * b[i] for i in [lo, hi)
template <typename V>
void axpby_body(int64_t lo, int64_t hi, const float* a, float alpha, const float* b, float beta, float* out) {
  constexpr int W = Traits<V>::W;
  const V av = splat<V>(alpha), bv = splat<V>(beta);
  int64_t i = lo;
  for (; i + 2 * W <= hi; i += 2 * W) {
    const V r0 = av * load<V>(a + i) + bv * load<V>(b + i);
    const V r1 = av * load<V>(a + i + W) + bv * load<V>(b + i + W);
    store<V>(out + i, r0);
    store<V>(out + i + W, r1);
  }
  for (; i + W <= hi; i += W) store<V>(out + i, av * load<V>(a + i) + bv * load<V>(b + i));
  if (i < hi) {  // the same vector expression on padded copies: no scalar rounding that differs from the vector one
    const size_t bytes = static_cast<size_t>(hi - i) * sizeof(float);
    float ba[W] = {}, bb[W] = {};
    std::memcpy(ba, a + i, bytes);
    std::memcpy(bb, b + i, bytes);
    store<V>(ba, av * load<V>(ba) + bv * load<V>(bb));
    std::memcpy(out + i, ba, bytes);
  }
}
SF_VARIANTS(axpby_v, (int64_t lo, int64_t hi, const float* a, float alpha, const float* b, float beta, float* out),
            (lo, hi, a, alpha, b, beta, out), axpby_body)

// words[4 * k + j] = word j of Philox block (block0 + k) of the dropout stream, k < kBatch: philox4x32_10 (philox.h)
// written with the blocks as the outer loop and the ten rounds inside, which the vectorizer turns into kBatch-lane
// vector code (32 x 32 -> 64-bit multiplies as vpmuludq / vpmullq), with an interleaving store into element order.
SF_INLINE void philox_batch(uint64_t seed, uint64_t block0, uint32_t* __restrict words) {
  const uint32_t s0 = static_cast<uint32_t>(seed), s1 = static_cast<uint32_t>(seed >> 32);
  for (int k = 0; k < kBatch; ++k) {
    const uint64_t blk = block0 + static_cast<uint64_t>(k);
    uint32_t c0 = static_cast<uint32_t>(blk), c1 = static_cast<uint32_t>(blk >> 32), c2 = kStreamDropout, c3 = 0u;
    uint32_t k0 = s0, k1 = s1;
    for (int r = 0; r < 10; ++r) {
      const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
      const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
      c1 = static_cast<uint32_t>(p1);
      c3 = static_cast<uint32_t>(p0);
      c0 = n0;
      c2 = n2;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    words[4 * k + 0] = c0;
    words[4 * k + 1] = c1;
    words[4 * k + 2] = c2;
    words[4 * k + 3] = c3;
  }
}

// One group of G = 4 * kBatch elements whose counters start on a multiple of G: y = x * m (Acc: y += x * m) with
// m = scale where u32_to_unit(word) >= p (dropout_keep_word), else 0. The mask enters as a factor so that a dropped inf
// or NaN gives NaN, as x * mask * scale does in PyTorch.
constexpr int64_t G = 4 * kBatch;
template <bool Acc>
SF_INLINE void dropout_group(const uint32_t* words, const float* x, float* y, float p, float scale) {
  for (int64_t k = 0; k < G; ++k) {
    const float m = dropout_keep_word(words[k], p) ? scale : 0.0f;
    if (Acc)
      y[k] = y[k] + x[k] * m;
    else
      y[k] = x[k] * m;
  }
}

// Elements [lo, hi), counters e = offset + i, walked in groups of G aligned to multiples of G. A group cut by the range
// (at most the first and the last) runs through the same code on a padded copy, so an element gets the same bits
// whichever thread's range it falls in.
template <typename V, bool Acc>
SF_INLINE void dropout_body(int64_t lo, int64_t hi, const float* x, float* y, float p, uint64_t seed,
                            uint64_t offset) {
  const float scale = dropout_scale(p);
  alignas(64) uint32_t words[G];
  int64_t i = lo;
  while (i < hi) {
    const uint64_t e = offset + static_cast<uint64_t>(i);
    const uint64_t g0 = e & ~static_cast<uint64_t>(G - 1);  // the group's first counter
    const int64_t k0 = static_cast<int64_t>(e - g0);
    const int64_t cnt = std::min(G - k0, hi - i);
    philox_batch(seed, g0 >> 2, words);
    if (cnt == G) {
      dropout_group<Acc>(words, x + i, y + i, p, scale);
    } else {
      alignas(64) float bx[G] = {}, by[G] = {};
      const size_t bytes = static_cast<size_t>(cnt) * sizeof(float);
      std::memcpy(bx + k0, x + i, bytes);
      if (Acc) std::memcpy(by + k0, y + i, bytes);
      dropout_group<Acc>(words, bx, by, p, scale);
      std::memcpy(y + i, by + k0, bytes);
    }
    i += cnt;
  }
}
template <typename V>
void dropout_fwd_body(int64_t lo, int64_t hi, const float* x, float* y, float p, uint64_t seed, uint64_t offset) {
  dropout_body<V, false>(lo, hi, x, y, p, seed, offset);
}
template <typename V>
void dropout_bwd_body(int64_t lo, int64_t hi, const float* dy, float* dx, float p, uint64_t seed, uint64_t offset) {
  dropout_body<V, true>(lo, hi, dy, dx, p, seed, offset);
}
SF_VARIANTS(dropout_fwd, (int64_t lo, int64_t hi, const float* x, float* y, float p, uint64_t seed, uint64_t offset),
            (lo, hi, x, y, p, seed, offset), dropout_fwd_body)
SF_VARIANTS(dropout_bwd, (int64_t lo, int64_t hi, const float* dy, float* dx, float p, uint64_t seed, uint64_t offset),
            (lo, hi, dy, dx, p, seed, offset), dropout_bwd_body)

}  // namespace

void axpby(ThreadPool& pool, const float* a, float alpha, const float* b, float beta, float* out, int64_t n) {
  auto fn = SF_PICK(axpby_v);
  pool.parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) { fn(lo, hi, a, alpha, b, beta, out); });
}

void dropout_forward(ThreadPool& pool, const float* x, float* y, int64_t n, float p, uint64_t seed, uint64_t offset) {
  if (p == 0.0f) {  // every u >= 0: all kept, scale 1
    pool.parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) {
      std::memcpy(y + lo, x + lo, static_cast<size_t>(hi - lo) * sizeof(float));
    });
    return;
  }
  auto fn = SF_PICK(dropout_fwd);
  pool.parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) { fn(lo, hi, x, y, p, seed, offset); });
}

void dropout_backward(ThreadPool& pool, const float* dy, float* dx, int64_t n, float p, uint64_t seed,
                      uint64_t offset) {
  if (p == 0.0f) {  // dx += dy
    auto fn = SF_PICK(axpby_v);
    pool.parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) { fn(lo, hi, dx, 1.0f, dy, 1.0f, dx); });
    return;
  }
  auto fn = SF_PICK(dropout_bwd);
  pool.parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) { fn(lo, hi, dy, dx, p, seed, offset); });
}

}  // namespace sf::cpu
