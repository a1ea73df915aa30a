// gelu.cpp — GELU, forward and backward, in two forms (see kernels.h): the tanh form (GPT-2's and PyTorch's
// approximate='tanh') and the exact erf form (BERT's, PyTorch's default approximate='none'); and tanh itself (the
// pooler's activation), through the same elementwise bodies.
//
// Purely elementwise: the flat range is split over the thread pool and each piece runs the vector gelu / gelu_grad of
// simd.h (polynomial exp, no libm calls; the formula matmul's fused GELU epilogue uses), or gelu_erf / gelu_erf_grad
// (a polynomial near 0, Mills' ratio times an exp of the exactly carried x^2 / 2 in the tails; no libm calls either),
// two vectors per step. The exp and the division make the tanh forward about as compute- as memory-bound on one
// core; the erf forward takes about 1.7x its time there, the erf backward up to 1.3x the tanh backward's (AVX2,
// sf_bench "gelu erf fwd" / "gelu erf bwd"). The tail shorter than a vector goes through the same vector code on a
// padded copy, so an element gets the same bits wherever a thread's range cuts.
#include <cstring>

#include "kernels.h"
#include "simd.h"

namespace sf::cpu {

using namespace sf::simd;

namespace {

constexpr int64_t kGrain = 8192;  // elements per parallel task, at least

// The two forms, as types the bodies below take: f(x) and f'(x) on a vector.
struct TanhForm {
  template <typename V>
  static SF_INLINE V f(V x) { return gelu(x); }
  template <typename V>
  static SF_INLINE V df(V x) { return gelu_grad(x); }
};
struct ErfForm {
  template <typename V>
  static SF_INLINE V f(V x) { return gelu_erf(x); }
  template <typename V>
  static SF_INLINE V df(V x) { return gelu_erf_grad(x); }
};

// tanh: an odd Taylor polynomial to x^13 for |x| < 0.4 (the next term, 929569/638512875 x^15, is below 5e-9 of the
// value there), else sign(x) (1 - 2 / (exp(2|x|) + 1)), which loses about a bit and a half to cancellation at |x| =
// 0.4 and less as |x| grows; the derivative 1 - tanh^2 from the same value. NaN goes through the exp (NaN); +-inf
// gives +-1. Measured: within 4 ulp of the correctly rounded value (test/native/norm_kernels_test.cpp).
template <typename V>
SF_INLINE V tanh_act(V x) {
  const V ax = x < 0.0f ? -x : x;
  const V x2 = x * x;
  const V p = x + x * x2 * (-1.0f / 3 + x2 * (2.0f / 15 + x2 * (-17.0f / 315 + x2 * (62.0f / 2835 + x2 * (-1382.0f / 155925 + x2 * (21844.0f / 6081075))))));
  const V big = 1.0f - 2.0f / (exp(ax * 2.0f) + 1.0f);
  const V signed_big = x < 0.0f ? -big : big;
  const V t = ax < 0.4f ? p : signed_big;
  return x == 0.0f ? x : t;  // -0 stays -0 (the polynomial's x + (-0)(+0)(-1/3...) would give +0)
}
struct TanhAct {
  template <typename V>
  static SF_INLINE V f(V x) { return tanh_act(x); }
  template <typename V>
  static SF_INLINE V df(V x) {
    const V t = tanh_act(x);
    return 1.0f - t * t;
  }
};

// y[i] = f(x[i]) for i in [lo, hi)
template <typename F, typename V>
void forward_body(int64_t lo, int64_t hi, const float* x, float* y) {
  constexpr int W = Traits<V>::W;
  int64_t i = lo;
  for (; i + 2 * W <= hi; i += 2 * W) {
    store<V>(y + i, F::f(load<V>(x + i)));
    store<V>(y + i + W, F::f(load<V>(x + i + W)));
  }
  for (; i + W <= hi; i += W) store<V>(y + i, F::f(load<V>(x + i)));
  if (i < hi) {
    const size_t bytes = static_cast<size_t>(hi - i) * sizeof(float);
    float buf[W] = {};
    std::memcpy(buf, x + i, bytes);
    store<V>(buf, F::f(load<V>(buf)));
    std::memcpy(y + i, buf, bytes);
  }
}

// dx[i] += f'(x[i]) * dy[i] for i in [lo, hi)
template <typename F, typename V>
void backward_body(int64_t lo, int64_t hi, const float* x, const float* dy, float* dx) {
  constexpr int W = Traits<V>::W;
  int64_t i = lo;
  for (; i + 2 * W <= hi; i += 2 * W) {
    store<V>(dx + i, load<V>(dx + i) + F::df(load<V>(x + i)) * load<V>(dy + i));
    store<V>(dx + i + W, load<V>(dx + i + W) + F::df(load<V>(x + i + W)) * load<V>(dy + i + W));
  }
  for (; i + W <= hi; i += W) store<V>(dx + i, load<V>(dx + i) + F::df(load<V>(x + i)) * load<V>(dy + i));
  if (i < hi) {
    const size_t bytes = static_cast<size_t>(hi - i) * sizeof(float);
    float bx[W] = {}, bdy[W] = {}, bdx[W] = {};
    std::memcpy(bx, x + i, bytes);
    std::memcpy(bdy, dy + i, bytes);
    std::memcpy(bdx, dx + i, bytes);
    store<V>(bdx, load<V>(bdx) + F::df(load<V>(bx)) * load<V>(bdy));
    std::memcpy(dx + i, bdx, bytes);
  }
}

template <typename V>
void gelu_forward_body(int64_t lo, int64_t hi, const float* x, float* y) {
  forward_body<TanhForm, V>(lo, hi, x, y);
}
template <typename V>
void gelu_backward_body(int64_t lo, int64_t hi, const float* x, const float* dy, float* dx) {
  backward_body<TanhForm, V>(lo, hi, x, dy, dx);
}
template <typename V>
void gelu_erf_forward_body(int64_t lo, int64_t hi, const float* x, float* y) {
  forward_body<ErfForm, V>(lo, hi, x, y);
}
template <typename V>
void gelu_erf_backward_body(int64_t lo, int64_t hi, const float* x, const float* dy, float* dx) {
  backward_body<ErfForm, V>(lo, hi, x, dy, dx);
}
template <typename V>
void tanh_forward_body(int64_t lo, int64_t hi, const float* x, float* y) {
  forward_body<TanhAct, V>(lo, hi, x, y);
}
template <typename V>
void tanh_backward_body(int64_t lo, int64_t hi, const float* x, const float* dy, float* dx) {
  backward_body<TanhAct, V>(lo, hi, x, dy, dx);
}
SF_VARIANTS(tanh_fwd, (int64_t lo, int64_t hi, const float* x, float* y), (lo, hi, x, y), tanh_forward_body)
SF_VARIANTS(tanh_bwd, (int64_t lo, int64_t hi, const float* x, const float* dy, float* dx), (lo, hi, x, dy, dx),
            tanh_backward_body)
SF_VARIANTS(gelu_fwd, (int64_t lo, int64_t hi, const float* x, float* y), (lo, hi, x, y), gelu_forward_body)
SF_VARIANTS(gelu_bwd, (int64_t lo, int64_t hi, const float* x, const float* dy, float* dx), (lo, hi, x, dy, dx),
            gelu_backward_body)
SF_VARIANTS(gelu_erf_fwd, (int64_t lo, int64_t hi, const float* x, float* y), (lo, hi, x, y), gelu_erf_forward_body)
SF_VARIANTS(gelu_erf_bwd, (int64_t lo, int64_t hi, const float* x, const float* dy, float* dx), (lo, hi, x, dy, dx),
            gelu_erf_backward_body)

}  // namespace

void gelu_forward(ThreadPool& pool, const float* x, float* y, int64_t n) {
  auto fn = SF_PICK(gelu_fwd);
  pool.parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) { fn(lo, hi, x, y); });
}

void gelu_backward(ThreadPool& pool, const float* x, const float* dy, float* dx, int64_t n) {
  auto fn = SF_PICK(gelu_bwd);
  pool.parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) { fn(lo, hi, x, dy, dx); });
}

void gelu_erf_forward(ThreadPool& pool, const float* x, float* y, int64_t n) {
  auto fn = SF_PICK(gelu_erf_fwd);
  pool.parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) { fn(lo, hi, x, y); });
}

void gelu_erf_backward(ThreadPool& pool, const float* x, const float* dy, float* dx, int64_t n) {
  auto fn = SF_PICK(gelu_erf_bwd);
  pool.parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) { fn(lo, hi, x, dy, dx); });
}

void tanh_forward(ThreadPool& pool, const float* x, float* y, int64_t n) {
  auto fn = SF_PICK(tanh_fwd);
  pool.parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) { fn(lo, hi, x, y); });
}

void tanh_backward(ThreadPool& pool, const float* x, const float* dy, float* dx, int64_t n) {
  auto fn = SF_PICK(tanh_bwd);
  pool.parallel_for(n, kGrain, [&](int64_t lo, int64_t hi) { fn(lo, hi, x, dy, dx); });
}

}  // namespace sf::cpu
