// simd.h — portable vectors for the CPU kernels (GCC/Clang vector extensions) and run-time ISA dispatch.
//
// A kernel is written once as a template over a vector type V (f32x16, f32x8 or f32x4) and instantiated in entry
// points compiled for a target ISA with SF_TARGET_AVX512 / SF_TARGET_AVX2 plus `flatten`, so that everything it calls
// is inlined and compiled for that ISA; the binary itself targets baseline x86-64 (or any other CPU: the portable
// instantiation uses plain vectors that the compiler lowers to SSE, NEON, ...). dispatch() picks the widest variant
// the running CPU supports, once per call site.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "cpu_features.h"

namespace sf::simd {

typedef float f32x16 __attribute__((vector_size(64)));
typedef float f32x8 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));
typedef int32_t i32x16 __attribute__((vector_size(64)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef int32_t i32x4 __attribute__((vector_size(16)));

template <typename V>
struct Traits;
template <>
struct Traits<f32x16> {
  static constexpr int W = 16;
  using I = i32x16;
};
template <>
struct Traits<f32x8> {
  static constexpr int W = 8;
  using I = i32x8;
};
template <>
struct Traits<f32x4> {
  static constexpr int W = 4;
  using I = i32x4;
};

#define SF_INLINE inline __attribute__((always_inline))

template <typename V>
SF_INLINE V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename V>
SF_INLINE void store(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}
// The first k (< W) elements of p as a vector, the other lanes `fill`; and the inverse. For partial last vectors that
// must go through the same vector arithmetic as full ones (the same rounding wherever a thread's range ends).
template <typename V>
SF_INLINE V load_part(const float* p, int64_t k, float fill) {
  float b[Traits<V>::W];
  for (int i = 0; i < Traits<V>::W; ++i) b[i] = fill;
  std::memcpy(b, p, static_cast<size_t>(k) * sizeof(float));
  return load<V>(b);
}
template <typename V>
SF_INLINE void store_part(float* p, V v, int64_t k) {
  float b[Traits<V>::W];
  store<V>(b, v);
  std::memcpy(p, b, static_cast<size_t>(k) * sizeof(float));
}
template <typename V>
SF_INLINE V splat(float s) {
  V v;  // element-wise fill: compiles to one broadcast (the arithmetic forms do not, with GCC 12)
  for (int i = 0; i < Traits<V>::W; ++i) v[i] = s;
  return v;
}
template <typename V>
SF_INLINE float hsum(V v) {
  float s = 0.0f;
  for (int i = 0; i < Traits<V>::W; ++i) s += v[i];
  return s;
}
// The largest lane; NaN if any lane is NaN (a horizontal reduction runs once per row: the extra test is free).
template <typename V>
SF_INLINE float hmax(V v) {
  float s = v[0];
  for (int i = 1; i < Traits<V>::W; ++i) s = (v[i] > s || v[i] != v[i]) ? v[i] : s;
  return s;
}
// Lane-wise max / min with the x86 maxps / minps rule: where either operand is NaN the result is b. So vmax(m, x)
// lets a NaN x in but a later vmax(m, y) drops it again: a running max over a row may miss a NaN. The kernels that
// take one (softmax, cross-entropy, attention) do not need it to: they then compute exp(x - max) of every element
// they reduced, and a NaN x gives a NaN there whatever the max, which the sum carries to the whole row.
template <typename V>
SF_INLINE V vmax(V a, V b) {
  return a > b ? a : b;
}
template <typename V>
SF_INLINE V vmin(V a, V b) {
  return a < b ? a : b;
}

// exp(x) for float vectors: x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-6 polynomial, 2^n by exponent bits.
// Relative error < 2e-7 over the float range; inputs below -87.3 give 0 (no denormals), above 88.7 give +inf, NaN
// gives NaN (the clamp takes x as the second operand of vmax / vmin, so a NaN passes through into the polynomial).
template <typename V>
SF_INLINE V exp(V x) {
  using I = typename Traits<V>::I;
  const V lo = splat<V>(-87.3f), hi = splat<V>(88.7f);
  V xc = vmin(hi, vmax(lo, x));
  const V magic = splat<V>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  V t = xc * 1.44269504088896341f + magic;
  V n = t - magic;
  I ni = (I)t - (I)magic;
  V r = xc - n * 0.693145751953125f;
  r = r - n * 1.428606765330187045e-06f;
  V p = splat<V>(1.0f / 720);
  p = p * r + (1.0f / 120);
  p = p * r + (1.0f / 24);
  p = p * r + (1.0f / 6);
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  V y = p * (V)((ni + 127) << 23);
  y = x < lo ? splat<V>(0.0f) : y;  // (written as selects: GCC 12 scalarises mask arithmetic on 512-bit vectors)
  return x > hi ? splat<V>(INFINITY) : y;
}

// tanh(x) = sign(x) (1 - 2 / (exp(2|x|) + 1)); absolute error < 2e-7.
template <typename V>
SF_INLINE V tanh(V x) {
  V ax = x < 0.0f ? -x : x;
  V e = exp(ax * 2.0f);
  V t = 1.0f - 2.0f / (e + 1.0f);
  return x < 0.0f ? -t : t;
}

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluA = 0.044715f;

// GELU through the identity 0.5 (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + exp(-2u)): one exp and one division.
// (For u -> -inf, exp overflows to +inf and the quotient goes to -0 / 0, the right limit.)
template <typename V>
SF_INLINE V gelu(V x) {
  V u = kGeluC * (x + kGeluA * x * x * x);
  return x / (1.0f + exp(-2.0f * u));
}
// d gelu / dx = s + 2 x s (1 - s) u'(x), with s = sigmoid(2u) and u' = c (1 + 3 a x^2)
template <typename V>
SF_INLINE V gelu_grad(V x) {
  V x2 = x * x;
  V u = kGeluC * (x + kGeluA * x2 * x);
  V sg = 1.0f / (1.0f + exp(-2.0f * u));
  return sg + 2.0f * x * sg * (1.0f - sg) * kGeluC * (1.0f + 3.0f * kGeluA * x2);
}

inline float gelu_scalar(float x) { return 0.5f * x * (1.0f + std::tanh(kGeluC * (x + kGeluA * x * x * x))); }
inline float gelu_grad_scalar(float x) {
  float t = std::tanh(kGeluC * (x + kGeluA * x * x * x));
  return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * kGeluC * (1.0f + 3.0f * kGeluA * x * x);
}

enum class Isa { Portable = 0, Avx2 = 1, Avx512 = 2 };

// v exactly as rounded: an empty asm the compiler cannot see through, so that a product is not fused into the
// subtraction that follows it (layer norm's g - mean(g) must be exactly 0 when every g is the same value).
template <typename V>
__attribute__((always_inline)) inline V rounded(V v) {
  // a memory operand works for every vector width under GCC and clang (a register constraint for a 512-bit vector
  // is refused by clang in a function compiled without AVX-512); the store and reload stay in L1
  asm("" : "+m"(v));
  return v;
}

// The widest instruction set this CPU runs, detected once per process (an immutable constant of the machine, not
// mutable state). SHAREDFORMER_ISA=avx2|portable narrows it — for testing every variant on one machine; a request
// wider than the CPU supports is ignored.
inline Isa best_isa() {
  static const Isa isa = [] {
    CpuFeatures f = detect_cpu_features();
    std::string l = f.level();
    Isa hw = l == "avx512" ? Isa::Avx512 : l == "avx2" ? Isa::Avx2 : Isa::Portable;
    const char* env = std::getenv("SHAREDFORMER_ISA");
    Isa want = hw;
    if (env && std::string(env) == "avx2") want = Isa::Avx2;
    if (env && std::string(env) == "portable") want = Isa::Portable;
    return static_cast<int>(want) < static_cast<int>(hw) ? want : hw;
  }();
  return isa;
}

}  // namespace sf::simd

#if defined(__x86_64__) || defined(__i386__)
#define SF_HAS_X86 1
#define SF_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,bmi2"), flatten))
#define SF_TARGET_AVX2 __attribute__((target("avx2,fma,bmi2"), flatten))
#else
#define SF_HAS_X86 0
#define SF_TARGET_AVX512 __attribute__((flatten))
#define SF_TARGET_AVX2 __attribute__((flatten))
#endif
#define SF_TARGET_PORTABLE __attribute__((flatten))

// Kernels are templates over the vector type V. The functions that run inside thread-pool tasks (lambdas are not
// covered by an enclosing function's target attribute) are instantiated once per ISA by SF_VARIANTS, each compiled
// for its ISA with everything it calls inlined (flatten):
//   SF_VARIANTS(rows, (const float* x, int64_t n), (x, n), rows_body)
// defines rows_avx512 (rows_body<f32x16>), rows_avx2 (<f32x8>), rows_portable (<f32x4>), and
// Variant<f32x16>::rows ... so that code templated on V finds its own instantiation: SF_VARIANT(V, rows).
// SF_PICK(rows) is the variant for the running CPU.
#define SF_VARIANTS(name, params, args, body)                                                   \
  SF_TARGET_AVX512 static void name##_avx512 params { body<::sf::simd::f32x16> args; }          \
  SF_TARGET_AVX2 static void name##_avx2 params { body<::sf::simd::f32x8> args; }               \
  SF_TARGET_PORTABLE static void name##_portable params { body<::sf::simd::f32x4> args; }       \
  template <typename V>                                                                         \
  struct name##_variant;                                                                        \
  template <>                                                                                   \
  struct name##_variant<::sf::simd::f32x16> {                                                   \
    [[maybe_unused]] static constexpr auto fn = &name##_avx512;                                 \
  };                                                                                            \
  template <>                                                                                   \
  struct name##_variant<::sf::simd::f32x8> {                                                    \
    [[maybe_unused]] static constexpr auto fn = &name##_avx2;                                   \
  };                                                                                            \
  template <>                                                                                   \
  struct name##_variant<::sf::simd::f32x4> {                                                    \
    [[maybe_unused]] static constexpr auto fn = &name##_portable;                               \
  };
#define SF_VARIANT(V, name) (name##_variant<V>::fn)
#define SF_PICK(name)                                                                                    \
  (::sf::simd::best_isa() == ::sf::simd::Isa::Avx512 ? &name##_avx512                                 \
   : ::sf::simd::best_isa() == ::sf::simd::Isa::Avx2 ? &name##_avx2                                   \
                                                       : &name##_portable)
