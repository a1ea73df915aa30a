// dropout.h — the dropout keep-mask, one formula for every device (the CPU kernels in elementwise.cpp and, later, the
// CUDA kernels include it): element e (= offset + index) reads word e % 4 of Philox block e / 4 in the dropout stream,
// turns its top 24 bits into u in [0, 1), and is kept when u >= p. Kept elements are scaled by 1 / (1 - p) (inverted
// dropout), so the backward pass needs only (seed, offset, p) to regenerate the mask — nothing is stored.
#pragma once
#include <cstdint>

#include "../core/philox.h"

namespace sf {

// Whether a random word keeps its element at drop probability p.
SF_HD bool dropout_keep_word(uint32_t word, float p) { return u32_to_unit(word) >= p; }

// Whether element e of the dropout stream of `seed` is kept at drop probability p (the single-element form; the
// kernels draw one Philox block per four elements and call dropout_keep_word on each word).
SF_HD bool dropout_keep_at(uint64_t seed, uint64_t e, float p) {
  Philox4 r = philox_block(seed, e >> 2, kStreamDropout);
  return dropout_keep_word(r.v[e & 3], p);
}

// The factor applied to kept elements, 1 / (1 - p), computed in float identically everywhere.
SF_HD float dropout_scale(float p) { return 1.0f / (1.0f - p); }

}  // namespace sf
