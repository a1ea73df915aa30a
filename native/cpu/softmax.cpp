// softmax.cpp — row-wise softmax over the last dimension, forward and backward (see kernels.h).
//
// Forward, per row (the row stays in L1/L2 between sweeps): m = max(x); y = exp(x - m) with the running sum;
// y *= 1 / sum.
// Subtracting the max keeps every exponent <= 0, so nothing overflows. exp is simd.h's polynomial, not libm.
// NaN semantics follow PyTorch: a NaN anywhere in a row, a +inf, or a row that is all -inf makes the row NaN (x - max
// is NaN for a NaN x, for +inf - +inf and for -inf - -inf; simd::exp keeps it, and the sum spreads it over the row;
// the max itself may drop a NaN, see simd.h).
// Backward: dx += y * (dy - sum(y * dy)), per row. Rows are independent, so any thread split gives the same bits.
#include <algorithm>
#include <cmath>

#include "kernels.h"
#include "simd.h"

namespace sf::cpu {

using namespace sf::simd;

namespace {

// Rows [lo, hi) of x, y (rows, n).
template <typename V>
void softmax_forward_body(int64_t lo, int64_t hi, const float* x, float* y, int64_t n) {
  constexpr int W = Traits<V>::W;
  for (int64_t r = lo; r < hi; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    // max
    float m = -INFINITY;
    int64_t j = 0;
    if (n >= W) {
      V m0 = load<V>(xr), m1 = m0;
      for (j = W; j + 2 * W <= n; j += 2 * W) {
        m0 = vmax(m0, load<V>(xr + j));
        m1 = vmax(m1, load<V>(xr + j + W));
      }
      for (; j + W <= n; j += W) m0 = vmax(m0, load<V>(xr + j));
      m = hmax(vmax(m0, m1));
    }
    for (; j < n; ++j) m = xr[j] > m ? xr[j] : m;
    // exp and sum
    const V mv = splat<V>(m);
    V s0{}, s1{};
    j = 0;
    for (; j + 2 * W <= n; j += 2 * W) {
      const V e0 = simd::exp(load<V>(xr + j) - mv), e1 = simd::exp(load<V>(xr + j + W) - mv);
      store<V>(yr + j, e0);
      store<V>(yr + j + W, e1);
      s0 += e0;
      s1 += e1;
    }
    for (; j + W <= n; j += W) {
      const V e = simd::exp(load<V>(xr + j) - mv);
      store<V>(yr + j, e);
      s0 += e;
    }
    float s = hsum(s0 + s1);
    if (j < n) {  // the tail through the same vector exp, on a padded copy (padding -inf gives exp = 0)
      float buf[W];
      for (int k = 0; k < W; ++k) buf[k] = j + k < n ? xr[j + k] : -INFINITY;
      const V d = load<V>(buf) - mv;
      store<V>(buf, simd::exp(d));
      for (int64_t k = 0; j + k < n; ++k) {
        yr[j + k] = buf[k];
        s += buf[k];
      }
    }
    // normalise
    const V inv = splat<V>(1.0f / s);
    j = 0;
    for (; j + W <= n; j += W) store<V>(yr + j, load<V>(yr + j) * inv);
    for (; j < n; ++j) yr[j] *= 1.0f / s;
  }
}
SF_VARIANTS(softmax_fwd, (int64_t lo, int64_t hi, const float* x, float* y, int64_t n), (lo, hi, x, y, n),
            softmax_forward_body)

// Rows [lo, hi): dx += y * (dy - sum(y * dy)); y, dy, dx (rows, n).
template <typename V>
void softmax_backward_body(int64_t lo, int64_t hi, const float* y, const float* dy, float* dx, int64_t n) {
  constexpr int W = Traits<V>::W;
  for (int64_t r = lo; r < hi; ++r) {
    const float* yr = y + r * n;
    const float* dyr = dy + r * n;
    float* dxr = dx + r * n;
    V s0{}, s1{};
    int64_t j = 0;
    for (; j + 2 * W <= n; j += 2 * W) {
      s0 += load<V>(yr + j) * load<V>(dyr + j);
      s1 += load<V>(yr + j + W) * load<V>(dyr + j + W);
    }
    for (; j + W <= n; j += W) s0 += load<V>(yr + j) * load<V>(dyr + j);
    float s = hsum(s0 + s1);
    for (; j < n; ++j) s += yr[j] * dyr[j];
    const V sv = splat<V>(s);
    j = 0;
    for (; j + W <= n; j += W) store<V>(dxr + j, load<V>(dxr + j) + load<V>(yr + j) * (load<V>(dyr + j) - sv));
    for (; j < n; ++j) dxr[j] += yr[j] * (dyr[j] - s);
  }
}
SF_VARIANTS(softmax_bwd, (int64_t lo, int64_t hi, const float* y, const float* dy, float* dx, int64_t n),
            (lo, hi, y, dy, dx, n), softmax_backward_body)

int64_t row_grain(int64_t n) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)); }

}  // namespace

void softmax_forward(ThreadPool& pool, const float* x, float* y, int64_t rows, int64_t n) {
  if (n <= 0) return;
  auto fn = SF_PICK(softmax_fwd);
  pool.parallel_for(rows, row_grain(n), [&](int64_t lo, int64_t hi) { fn(lo, hi, x, y, n); });
}

void softmax_backward(ThreadPool& pool, const float* y, const float* dy, float* dx, int64_t rows, int64_t n) {
  if (n <= 0) return;
  auto fn = SF_PICK(softmax_bwd);
  pool.parallel_for(rows, row_grain(n), [&](int64_t lo, int64_t hi) { fn(lo, hi, y, dy, dx, n); });
}

}  // namespace sf::cpu
