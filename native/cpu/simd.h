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

// ---- erf and the exact (erf) GELU ------------------------------------------------------------------------------
// Phi(x) = (1 + erf(x / sqrt 2)) / 2 is the standard normal CDF, phi(x) = c exp(-x^2 / 2) its density, with
// c = 1 / sqrt(2 pi). Two approximations, fitted by scripts/fit_gelu_erf.py for the smallest maximum relative error
// (in double: 7.1e-10 and 1.5e-10, far below float's 6e-8):
//   |x| <= 1:            Phi(x) = 1/2 + x P(x^2),                  P of degree 5
//   0.5 <= a <= 15:      Phi(-a) = exp(-a^2 / 2) c q(a) / (a q(a) + p(a)),   p of degree 4, q of degree 5
// The tail form is Mills' ratio, Phi(-a) = phi(a) / (a + s) with s = p / q: an error in s moves the result by less
// than s / (a + s) < 0.6 of it, and rounding errors of q cancel between numerator and denominator. erf(t) is the
// same pair at x = sqrt 2 t, with the coefficients rescaled at compile time: erf(t) = t E(t^2), E_k = 2 sqrt2 2^k P_k;
// erfc(t) = exp(-t^2) / sqrt(pi) qt(t) / (t qt(t) + pt(t)), qt_k = q_k 2^(k/2), pt_k = p_k 2^((k-1)/2).
namespace erf_detail {
constexpr double kSmall[6] = {0.39894228011766308, -0.066490359923376458, 0.0099733234085354859,
                              -0.0011863299374429599, 0.00011348636608145279, -7.654205680201337e-06};
constexpr double kTailP[5] = {0.79788525327080073, 0.53492333135413128, 0.1843022566022966, 0.034931394611021842,
                              0.0031683179565386577};
constexpr double kTailQ[6] = {1, 1.1258634922282182, 0.60709631295026956, 0.19047665532903613, 0.034938061842163644,
                              0.0031681980644086699};
constexpr double kSqrt2 = 1.4142135623730951;

template <size_t N>
struct Coefs {
  float v[N];
};
// c_k scale sqrt2^(k step) (minus `minus0` at k = 0), computed in double and rounded to float once
template <size_t N>
constexpr Coefs<N> scaled(const double (&c)[N], double scale, int step, double minus0 = 0) {
  Coefs<N> r{};
  for (size_t k = 0; k < N; ++k) {
    double f = scale;
    for (int i = 0; i < static_cast<int>(k) * step; ++i) f *= kSqrt2;
    r.v[k] = static_cast<float>(c[k] * f - (k == 0 ? minus0 : 0.0));
  }
  return r;
}

inline constexpr Coefs<6> kGeluSmall = scaled(kSmall, 1.0, 0);
inline constexpr Coefs<5> kGeluTailP = scaled(kTailP, 1.0, 0);
inline constexpr Coefs<6> kGeluTailQ = scaled(kTailQ, 1.0, 0);
inline constexpr Coefs<6> kErfSmall = scaled(kSmall, 2 * kSqrt2, 2, 1.0);  // 2 sqrt2 2^k, minus 1 at k = 0
inline constexpr Coefs<5> kErfTailP = scaled(kTailP, 1.0 / kSqrt2, 1);     // 2^((k-1)/2)
inline constexpr Coefs<6> kErfTailQ = scaled(kTailQ, 1.0, 1);              // 2^(k/2)
// c 2^-64 and 2^-64 / sqrt(pi) as a float plus a correction (exact scalings by 2^-64 of the float pair)
constexpr double kC = 0.398942280401432678, kInvSqrtPi = 0.564189583547756287;
constexpr float kC64 = static_cast<float>(kC) * 0x1p-64f;
constexpr float kC64Lo = static_cast<float>(kC - static_cast<float>(kC)) * 0x1p-64f;
constexpr float kInvSqrtPi64 = static_cast<float>(kInvSqrtPi) * 0x1p-64f;
}  // namespace erf_detail

// c[0] + c[1] x + ... by Horner's rule
template <typename V, size_t N>
SF_INLINE V poly(V x, const erf_detail::Coefs<N>& c) {
  V r = splat<V>(c.v[N - 1]);
  for (size_t k = N - 1; k-- > 0;) r = r * x + c.v[k];
  return r;
}

// exp(-k a^2) = scale (1 + s) 2^-64 for a in [0, 15] and k = 1/2 or 1: scale a power of two (a normal float for every
// a here, down to e^-112.5: the caller scales back once, rounding a denormal result once), |s| < 0.42 (the caller
// multiplies by 1 + s with one fused multiply-add, not rounding 1 + s). a^2 is carried exactly: a = ah + al with ah the
// leading 12 bits of a, so k ah^2, which sets the exponent, is exact, and only k (2 ah al + al^2) < 2^-10 k a^2 is
// rounded (exp(-k a^2) of a rounded a^2 would be off by k a^2 2^-24 relative: 50 ulp at a = 10). exp(r) - 1,
// |r| <= ln2 / 2, by Cephes' expf polynomial.
template <typename V>
SF_INLINE void exp_neg_square_2p64(V a, float k, V& scale, V& s) {
  using I = typename Traits<V>::I;
  const V ah = (V)((I)a & ~0xfff);
  const V al = a - ah;
  const V h = (ah * ah) * k;  // exact: 24 bits, times a power of 2
  const V l = (al * (ah + ah + al)) * k;
  const V magic = splat<V>(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  const V t = h * -1.44269504088896341f + magic;
  const V n = t - magic;  // round(-h / ln 2), in [-163, 0]
  const I ni = (I)t - (I)magic;
  V r = n * -0.693145751953125f - h;  // exact (ln2's leading 15 bits times n <= 163; Sterbenz)
  r = (r - n * 1.428606765330187045e-06f) - l;
  V p = splat<V>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  s = p * (r * r) + r;
  scale = (V)((ni + (127 + 64)) << 23);  // 2^(n + 64)
}

// erf(t) for float vectors: t + t (E(t^2) - 1) below 0.7 (E - 1, not E, so that nothing is rounded near 1), else
// 1 - erfc(|t|) with the sign of t; 1 from |t| = 4 on (erf(3.92) already rounds to 1), -0 for -0, NaN for NaN. Within
// 1.57 ulp of the exact erf over all 2^32 floats with fused multiply-adds (the AVX2 and AVX-512 builds), 1.94 without
// (test/native/norm_kernels_test.cpp sweeps every binade).
template <typename V>
SF_INLINE V erf(V t) {
  using I = typename Traits<V>::I;
  using namespace erf_detail;
  const V a = (V)((I)t & 0x7fffffff);
  const V ac = vmin(a, splat<V>(4.0f));  // (a NaN a becomes 4: its lane is replaced below)
  V scale, s;
  exp_neg_square_2p64(ac, 1.0f, scale, s);
  const V q = poly(ac, kErfTailQ), p = poly(ac, kErfTailP);
  const V big = 1.0f - scale * ((q * s + q) / (ac * q + p)) * kInvSqrtPi64;
  const V small = t + t * poly(t * t, kErfSmall);
  const V r = a < 0.7f ? small : (V)((I)big | ((I)t & ~0x7fffffff));
  return t == t ? r : t;
}

// The exact GELU, x Phi(x) (PyTorch's approximate='none'), and its derivative Phi(x) + x phi(x): the small form on
// (-0.5, 1); for x <= -0.5 the tail x Phi(-|x|), which keeps its relative accuracy down to denormal results (x ~
// -14.5; 1 + erf(x / sqrt 2) in float, as PyTorch computes it, has no correct digit below x ~ -5.5); for x >= 1,
// x (1 - Phi(-x)). Over all 2^32 floats, gelu is within 3.96 ulp of the exact value with fused multiply-adds (AVX2,
// AVX-512), 4.74 without; gelu' within 2.61 (3.01) ulp of the larger of Phi(x), |x phi(x)|, its two terms, which cancel
// where gelu' crosses 0 at x = -0.7518 (test/native/norm_kernels_test.cpp sweeps every binade). Non-finite inputs
// follow IEEE on x Phi(x) and Phi(x) + x phi(x), as PyTorch does: gelu(+inf) = +inf, gelu(-inf) = -inf * 0 = NaN,
// gelu'(+-inf) = NaN, NaN -> NaN; beyond |x| = 15, Phi(-|x|) is 0.
template <typename V>
SF_INLINE V gelu_erf(V x) {
  using I = typename Traits<V>::I;
  using namespace erf_detail;
  const V a = (V)((I)x & 0x7fffffff);
  const V ac = vmin(a, splat<V>(15.0f));  // (NaN becomes 15)
  V scale, s;
  exp_neg_square_2p64(ac, 0.5f, scale, s);
  scale = a < 15.0f ? scale : splat<V>(0.0f);  // Phi(-a) = 0 beyond 15 (and for NaN)
  const V q = poly(ac, kGeluTailQ), p = poly(ac, kGeluTailP);
  const V m = (x * scale) * ((q * s + q) / (ac * q + p));  // x Phi(-a) 2^64 / c
  const V yn = (V)((I)(m * kC64 + m * kC64Lo) | ~0x7fffffff);  // x <= -0.5: x Phi(x) < 0 (-0 where it underflows)
  const V yp = a < 15.0f ? x - (m * kC64 + m * kC64Lo) : x;  // x >= 1: x - x Phi(-x) (x itself beyond 15: +inf)
  V ys = x * 0.5f + x * (x * poly(x * x, kGeluSmall));
  ys = (V)((I)ys | ((I)x & ~0x7fffffff));  // gelu has the sign of x here: -0 (+0 + -0 would give +0) at x = -0
  const V y = x < 1.0f ? ys : yp;
  return x <= -0.5f ? yn : y;
}
template <typename V>
SF_INLINE V gelu_erf_grad(V x) {
  using I = typename Traits<V>::I;
  using namespace erf_detail;
  const V a = (V)((I)x & 0x7fffffff);
  const V ac = vmin(a, splat<V>(15.0f));
  V scale, s;
  exp_neg_square_2p64(ac, 0.5f, scale, s);
  scale = a < 15.0f ? scale : splat<V>(0.0f);
  const V q = poly(ac, kGeluTailQ), p = poly(ac, kGeluTailP);
  // Phi(-a) + x phi(x) = c 2^-64 scale (1 + s) (q / (a q + p) + x), and 1 - Phi(-a) + x phi(x) likewise
  const V w = q / (ac * q + p);
  const V wn = x + w, wp = x - w;
  const V gn = scale * (wn * s + wn);
  const V gp = scale * (wp * s + wp);
  const V ph = scale * kC64;  // exp(-x^2/2) c / (1 + s)
  const V gs = 0.5f + x * (poly(x * x, kGeluSmall) + (ph * s + ph));
  const V g = x < 1.0f ? gs : 1.0f + (gp * kC64 + gp * kC64Lo);
  return x <= -0.5f ? gn * kC64 + gn * kC64Lo : g;
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
