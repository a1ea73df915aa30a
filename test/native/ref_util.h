// ref_util.h — small pieces that several native tests' references share: seeded random vectors, and which keys an
// attention query sees (the rule every attention kernel and reference follows).
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "cpu/kernels.h"

namespace sftest {

// n uniform floats in [lo, hi) from g.
inline std::vector<float> randvec(size_t n, std::mt19937& g, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

// Whether query i of batch element b sees key j: below key_lengths[b] (when given) and, when causal, not after the
// query's own position (queries are the last Tq of Tk positions).
inline bool sees(const sf::cpu::AttentionDesc& d, int64_t b, int64_t i, int64_t j) {
  if (d.key_lengths && j >= d.key_lengths[b]) return false;
  if (d.causal && j > i + (d.Tk - d.Tq)) return false;
  return true;
}

}  // namespace sftest
