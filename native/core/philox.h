// philox.h — the counter-based random number generator shared by every device.
//
// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), the generator of cuRAND and
// PyTorch's CUDA backend. A random value is a pure function of (seed, element index): no state, no ordering between
// threads, so a CPU thread pool and a CUDA grid produce the same stream, and a tensor can be regenerated from
// (seed, offset) alone — which is what dropout's backward does.
//
// Streams (the third counter word selects one, so they never overlap):
//   uniform: element e takes word e%4 of block e/4           -> [0, 1) with 24 random bits (bit-exact everywhere)
//   normal:  element e takes words 2(e%2), 2(e%2)+1 of block e/2 -> Box–Muller (float math: within a few ulp
//            across devices, not bit-exact, because libm's log/cos differ)
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SF_HD __host__ __device__ __forceinline__
#else
#define SF_HD inline
#endif

namespace sf {

struct Philox4 {
  uint32_t v[4];
};

SF_HD uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

SF_HD Philox4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0;
    uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

enum : uint32_t { kStreamUniform = 0, kStreamNormal = 1, kStreamDropout = 2 };

SF_HD Philox4 philox_block(uint64_t seed, uint64_t block, uint32_t stream) {
  return philox4x32_10(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), stream, 0u,
                       static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// 24 random bits -> [0, 1), exactly representable in float.
SF_HD float u32_to_unit(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }

SF_HD float uniform_at(uint64_t seed, uint64_t e) {
  Philox4 r = philox_block(seed, e >> 2, kStreamUniform);
  return u32_to_unit(r.v[e & 3]);
}

// Box–Muller from two random words: u1 in (0, 1] so the log is finite, u2 in [0, 1).
SF_HD float box_muller(uint32_t a, uint32_t b) {
  float u1 = static_cast<float>((a >> 8) + 1u) * (1.0f / 16777216.0f);
  float u2 = u32_to_unit(b);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864769f * u2);
}

SF_HD float normal_at(uint64_t seed, uint64_t e) {
  Philox4 r = philox_block(seed, e >> 1, kStreamNormal);
  return box_muller(r.v[(e & 1) * 2], r.v[(e & 1) * 2 + 1]);
}

}  // namespace sf
