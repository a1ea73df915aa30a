// optim.cpp — optimizer steps over one flat buffer: AdamW, SGD (momentum, Nesterov), the sum of squares behind
// gradient-norm clipping, and an in-place scale (see kernels.h).
//
// Every kernel here is one streaming pass over a few float arrays (AdamW reads p, g, m, v and writes p, m, v: 28
// bytes per parameter), so it is memory-bound: the hot loops are vectorised (SF_VARIANTS) to keep up with memory, and
// the work is split into fixed blocks of kBlock elements handed to the pool. Each element's arithmetic is the same
// whichever thread runs it, and the last partial vector goes through the same vector code (padded through a small
// buffer), so results are bit-identical for any thread count. sum_squares adds squares in double, per fixed
// 4096-element chunk, then adds the chunk sums in order: deterministic, and accurate far beyond float.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../core/adamw_math.h"
#include "../core/dtype.h"
#include "kernels.h"
#include "simd.h"

#if SF_HAS_X86
#include <immintrin.h>
#endif

namespace sf::cpu {

using namespace sf::simd;

namespace {

constexpr int64_t kBlock = 16384;  // elements per pool task (a multiple of every vector width)
constexpr int64_t kChunk = 4096;   // elements per partial sum of sum_squares (fixed by kernels.h)

// Vector square root. The x86 versions are compiled for their ISA and reach the SF_VARIANTS entry points by flatten
// inlining (an always_inline function with a target attribute could not be inlined into the ISA-neutral templates).
// Arguments go by pointer so that a call that is not inlined (an -O0 build) does not pass vectors across an ABI edge.
template <typename V>
inline void sqrt_to(V* out, const V* x) {
  for (int i = 0; i < Traits<V>::W; ++i) (*out)[i] = std::sqrt((*x)[i]);
}
#if SF_HAS_X86
template <>
__attribute__((target("avx512f"))) inline void sqrt_to(f32x16* out, const f32x16* x) {
  // the masked form with every lane selected: _mm512_sqrt_ps trips -Wmaybe-uninitialized in GCC 12's header
  *out = (f32x16)_mm512_mask_sqrt_ps((__m512)*x, static_cast<__mmask16>(0xffff), (__m512)*x);
}
template <>
__attribute__((target("avx"))) inline void sqrt_to(f32x8* out, const f32x8* x) {
  *out = (f32x8)_mm256_sqrt_ps((__m256)*x);
}
template <>
inline void sqrt_to(f32x4* out, const f32x4* x) {
  *out = (f32x4)_mm_sqrt_ps((__m128)*x);
}
#endif
template <typename V>
SF_INLINE V vsqrt(V x) {
  V r;
  sqrt_to<V>(&r, &x);
  return r;
}


// ---- AdamW ------------------------------------------------------------------------------------------------------
// The constants and the per-element update are native/core/adamw_math.h's (shared with cuda/optim.cu).
struct VecSqrt {
  template <typename V>
  SF_INLINE V operator()(V x) const {
    return vsqrt(x);
  }
};

template <typename V>
void adamw_body(const AdamWConst& c, float* param, const float* grad, float* m, float* v, const float* decay,
                uint16_t* p16, int64_t lo, int64_t hi) {
  constexpr int W = Traits<V>::W;
  const bool mask = decay != nullptr;
  const V one = splat<V>(1.0f);
  int64_t i = lo;
  for (; i + W <= hi; i += W) {
    V p = load<V>(param + i), mm = load<V>(m + i), vv = load<V>(v + i);
    adamw_update<V>(c, p, load<V>(grad + i), mm, vv, mask ? load<V>(decay + i) : one, mask, VecSqrt{});
    store<V>(param + i, p);
    store<V>(m + i, mm);
    store<V>(v + i, vv);
    if (p16)
      for (int e = 0; e < W; ++e) p16[i + e] = f32_to_bf16(param[i + e]);  // still in L1
  }
  if (i < hi) {
    const int64_t k = hi - i;
    V p = load_part<V>(param + i, k, 0.0f), mm = load_part<V>(m + i, k, 0.0f), vv = load_part<V>(v + i, k, 0.0f);
    adamw_update<V>(c, p, load_part<V>(grad + i, k, 0.0f), mm, vv, mask ? load_part<V>(decay + i, k, 0.0f) : one, mask,
                    VecSqrt{});
    store_part<V>(param + i, p, k);
    store_part<V>(m + i, mm, k);
    store_part<V>(v + i, vv, k);
    if (p16)
      for (int64_t e = 0; e < k; ++e) p16[i + e] = f32_to_bf16(param[i + e]);
  }
}
SF_VARIANTS(adamw_range,
            (const AdamWConst& c, float* param, const float* grad, float* m, float* v, const float* decay,
             uint16_t* p16, int64_t lo, int64_t hi),
            (c, param, grad, m, v, decay, p16, lo, hi), adamw_body)

// ---- SGD --------------------------------------------------------------------------------------------------------
struct SgdConst {
  float lr, momentum, one_minus_dampening, weight_decay;
  bool nesterov, first_step, use_momentum;
};

template <typename V>
SF_INLINE void sgd_vec(const SgdConst& c, V& p, V g, V& b) {
  V d = c.weight_decay != 0.0f ? g + c.weight_decay * p : g;  // L2: the decay joins the gradient
  if (c.use_momentum) {
    b = c.first_step ? d : c.momentum * b + c.one_minus_dampening * d;
    d = c.nesterov ? d + c.momentum * b : b;
  }
  p = p - c.lr * d;
}

template <typename V>
void sgd_body(const SgdConst& c, float* param, const float* grad, float* buf, int64_t lo, int64_t hi) {
  constexpr int W = Traits<V>::W;
  int64_t i = lo;
  for (; i + W <= hi; i += W) {
    V p = load<V>(param + i), b = c.use_momentum ? load<V>(buf + i) : V{};
    sgd_vec<V>(c, p, load<V>(grad + i), b);
    store<V>(param + i, p);
    if (c.use_momentum) store<V>(buf + i, b);
  }
  if (i < hi) {
    const int64_t k = hi - i;
    V p = load_part<V>(param + i, k, 0.0f), b = c.use_momentum ? load_part<V>(buf + i, k, 0.0f) : V{};
    sgd_vec<V>(c, p, load_part<V>(grad + i, k, 0.0f), b);
    store_part<V>(param + i, p, k);
    if (c.use_momentum) store_part<V>(buf + i, b, k);
  }
}
SF_VARIANTS(sgd_range, (const SgdConst& c, float* param, const float* grad, float* buf, int64_t lo, int64_t hi),
            (c, param, grad, buf, lo, hi), sgd_body)

// ---- sum of squares ---------------------------------------------------------------------------------------------
// Half a vector of floats (H), widened to a full register of doubles (D): the accumulators stay in registers.
template <typename V>
struct Wide;
template <>
struct Wide<f32x16> {
  typedef float H __attribute__((vector_size(32)));
  typedef double D __attribute__((vector_size(64)));
};
template <>
struct Wide<f32x8> {
  typedef float H __attribute__((vector_size(16)));
  typedef double D __attribute__((vector_size(32)));
};
template <>
struct Wide<f32x4> {
  typedef float H __attribute__((vector_size(8)));
  typedef double D __attribute__((vector_size(16)));
};

// acc[k] += p[k HW .. (k+1) HW)^2 in double, k < 4.
template <typename V>
SF_INLINE void sumsq_step(const float* p, typename Wide<V>::D* acc) {
  using H = typename Wide<V>::H;
  using D = typename Wide<V>::D;
  constexpr int HW = Traits<V>::W / 2;
  for (int k = 0; k < 4; ++k) {
    H h;
    std::memcpy(&h, p + k * HW, sizeof h);
    D u = __builtin_convertvector(h, D);
    acc[k] += u * u;
  }
}

// out[j] = sum of x^2 over chunk j (kChunk elements, the last one shorter), in double, for chunks [lo, hi).
template <typename V>
void sumsq_body(const float* x, int64_t n, int64_t lo, int64_t hi, double* out) {
  using D = typename Wide<V>::D;
  constexpr int HW = Traits<V>::W / 2, STEP = 4 * HW;  // floats per half vector, per step
  for (int64_t j = lo; j < hi; ++j) {
    const int64_t b = j * kChunk, e = std::min(n, b + kChunk);
    D acc[4] = {};
    int64_t i = b;
    for (; i + STEP <= e; i += STEP) sumsq_step<V>(x + i, acc);
    if (i < e) {  // the end of the last chunk, zero-padded
      float pad[STEP] = {};
      std::memcpy(pad, x + i, static_cast<size_t>(e - i) * sizeof(float));
      sumsq_step<V>(pad, acc);
    }
    const D t = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    double s = 0.0;
    for (int l = 0; l < HW; ++l) s += t[l];
    out[j] = s;
  }
}
SF_VARIANTS(sumsq_range, (const float* x, int64_t n, int64_t lo, int64_t hi, double* out), (x, n, lo, hi, out),
            sumsq_body)

// ---- scale ------------------------------------------------------------------------------------------------------
template <typename V>
void scale_body(float* x, float s, int64_t lo, int64_t hi) {
  constexpr int W = Traits<V>::W;
  int64_t i = lo;
  for (; i + 4 * W <= hi; i += 4 * W) {
    store<V>(x + i, load<V>(x + i) * s);
    store<V>(x + i + W, load<V>(x + i + W) * s);
    store<V>(x + i + 2 * W, load<V>(x + i + 2 * W) * s);
    store<V>(x + i + 3 * W, load<V>(x + i + 3 * W) * s);
  }
  for (; i + W <= hi; i += W) store<V>(x + i, load<V>(x + i) * s);
  if (i < hi) store_part<V>(x + i, load_part<V>(x + i, hi - i, 0.0f) * s, hi - i);
}
SF_VARIANTS(scale_range, (float* x, float s, int64_t lo, int64_t hi), (x, s, lo, hi), scale_body)

// Runs fn(lo, hi) over [0, n) in fixed blocks of kBlock elements (so that block edges do not depend on the pool).
template <typename F>
void for_blocks(ThreadPool& pool, int64_t n, F&& fn) {
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  pool.parallel_for(blocks, 1, [&](int64_t b0, int64_t b1) { fn(b0 * kBlock, std::min(n, b1 * kBlock)); });
}

}  // namespace

void adamw(ThreadPool& pool, const AdamWDesc& d, float* param, const float* grad, float* m, float* v,
           const float* decay, int64_t n, uint16_t* param_bf16) {
  if (n <= 0) return;
  const AdamWConst c = adamw_constants(d.lr, d.beta1, d.beta2, d.eps, d.weight_decay, d.step);
  auto fn = SF_PICK(adamw_range);
  for_blocks(pool, n, [&](int64_t lo, int64_t hi) { fn(c, param, grad, m, v, decay, param_bf16, lo, hi); });
}

void sgd(ThreadPool& pool, const SgdDesc& d, float* param, const float* grad, float* buf, int64_t n) {
  if (n <= 0) return;
  SgdConst c;
  c.lr = d.lr;
  c.momentum = d.momentum;
  c.one_minus_dampening = static_cast<float>(1.0 - static_cast<double>(d.dampening));
  c.weight_decay = d.weight_decay;
  c.nesterov = d.nesterov;
  c.first_step = d.first_step;
  c.use_momentum = d.momentum != 0.0f && buf != nullptr;
  auto fn = SF_PICK(sgd_range);
  for_blocks(pool, n, [&](int64_t lo, int64_t hi) { fn(c, param, grad, buf, lo, hi); });
}

double sum_squares(ThreadPool& pool, const float* x, int64_t n) {
  if (n <= 0) return 0.0;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  double* part = reinterpret_cast<double*>(pool.workspace(static_cast<size_t>(chunks) * 2));  // (chunks) doubles
  auto fn = SF_PICK(sumsq_range);
  pool.parallel_for(chunks, 4, [&](int64_t lo, int64_t hi) { fn(x, n, lo, hi, part); });
  double s = 0.0;
  for (int64_t j = 0; j < chunks; ++j) s += part[j];
  return s;
}

void scale_inplace(ThreadPool& pool, float* x, int64_t n, float s) {
  if (n <= 0) return;
  auto fn = SF_PICK(scale_range);
  for_blocks(pool, n, [&](int64_t lo, int64_t hi) { fn(x, s, lo, hi); });
}

}  // namespace sf::cpu
