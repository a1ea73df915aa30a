// norm_kernels_test.cpp — layer norm, GELU (tanh and exact erf forms), softmax, axpby and dropout (native/cpu)
// against naive double-precision references, their backward passes against central finite differences (accumulating into
// pre-filled buffers), the dropout mask against the Philox formula, and bit-identical results for 1 and 3 threads.
// The vector erf of simd.h and the erf GELU are also swept over every binade of float (denormals, +-0, +-inf, NaN),
// with their maximum errors in ulps printed.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "core/context.h"
#include "core/philox.h"
#include "cpu/dropout.h"
#include "cpu/kernels.h"
#include "cpu/simd.h"

using namespace sf;

namespace {

using Vec = std::vector<float>;
using DVec = std::vector<double>;

struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t seed) : g(seed) {}
  float uniform(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(g); }
  Vec vec(int64_t n, float lo, float hi) {
    Vec v(static_cast<size_t>(n));
    for (auto& x : v) x = uniform(lo, hi);
    return v;
  }
  int64_t pick(std::initializer_list<int64_t> xs) {
    std::vector<int64_t> v(xs);
    return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(g)];
  }
};

Vec poisoned(int64_t n) {
  Vec v(static_cast<size_t>(n));
  std::memset(v.data(), 0xff, v.size() * sizeof(float));  // NaN: an unwritten element fails every comparison
  return v;
}

// Every |got - want| <= atol + rtol * |want|; reports the first offender.
template <typename T>
bool near_all(const T* got, const double* want, int64_t n, double atol, double rtol, const char* what) {
  for (int64_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(got[i]), w = want[i];
    if (!(std::fabs(g - w) <= atol + rtol * std::fabs(w))) {
      std::fprintf(stderr, "    %s[%lld]: got %.9g, want %.9g\n", what, static_cast<long long>(i), g, w);
      return false;
    }
  }
  return true;
}
bool near_all(const Vec& got, const DVec& want, double atol, double rtol, const char* what) {
  return got.size() == want.size() &&
         near_all(got.data(), want.data(), static_cast<int64_t>(got.size()), atol, rtol, what);
}
bool same_bits(const Vec& a, const Vec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

DVec to_d(const Vec& v) { return DVec(v.begin(), v.end()); }

// Central differences of L at every element of p (double): dL/dp[i] ~ (L(p + h e_i) - L(p - h e_i)) / 2h.
template <typename F>
DVec numeric_grad(DVec& p, F&& L, double h = 1e-4) {
  DVec g(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    const double keep = p[i];
    p[i] = keep + h;
    const double up = L();
    p[i] = keep - h;
    const double down = L();
    p[i] = keep;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

// Analytic gradient accumulated into a buffer pre-filled with `base`: returns buffer - base (proves +=).
DVec minus(const Vec& acc, const Vec& base) {
  DVec d(acc.size());
  for (size_t i = 0; i < acc.size(); ++i) d[i] = static_cast<double>(acc[i]) - static_cast<double>(base[i]);
  return d;
}

// Gradient tolerance: relative to the largest reference component.
double grad_tol(const DVec& ref, double rel) {
  double m = 0;
  for (double v : ref) m = std::max(m, std::fabs(v));
  return rel * (1.0 + m);
}

// ---- references ---------------------------------------------------------------------------------------------------
void ref_layernorm(const DVec& x, const DVec& w, const DVec& b, int64_t rows, int64_t C, double eps, DVec& y,
                   DVec& mean, DVec& rstd) {
  y.assign(x.size(), 0);
  mean.assign(static_cast<size_t>(rows), 0);
  rstd.assign(static_cast<size_t>(rows), 0);
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x.data() + r * C;
    double m = 0, v = 0;
    for (int64_t j = 0; j < C; ++j) m += xr[j];
    m /= static_cast<double>(C);
    for (int64_t j = 0; j < C; ++j) v += (xr[j] - m) * (xr[j] - m);
    v /= static_cast<double>(C);
    const double rs = 1.0 / std::sqrt(v + eps);
    mean[static_cast<size_t>(r)] = m;
    rstd[static_cast<size_t>(r)] = rs;
    for (int64_t j = 0; j < C; ++j) y[static_cast<size_t>(r * C + j)] = (xr[j] - m) * rs * w[j] + b[j];
  }
}

double ref_gelu(double x) { return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }

void ref_softmax(const DVec& x, int64_t rows, int64_t n, DVec& y) {
  y.assign(x.size(), 0);
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x.data() + r * n;
    double m = -INFINITY, s = 0;
    for (int64_t j = 0; j < n; ++j) m = std::max(m, xr[j]);
    for (int64_t j = 0; j < n; ++j) s += std::exp(xr[j] - m);
    for (int64_t j = 0; j < n; ++j) y[static_cast<size_t>(r * n + j)] = std::exp(xr[j] - m) / s;
  }
}

bool ref_keep(uint64_t seed, uint64_t e, float p) {  // written out from philox.h, independent of dropout.h
  Philox4 blk = philox_block(seed, e / 4, kStreamDropout);
  return static_cast<float>(blk.v[e % 4] >> 8) / 16777216.0f >= p;
}

double dot(const DVec& a, const DVec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

// ---- layer norm ---------------------------------------------------------------------------------------------------

TEST(layernorm_forward_matches_double_reference) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(1);
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (int64_t rows : {1, 7, 33, 129})
    for (int64_t C : {1, 7, 33, 129, 768}) shapes.emplace_back(rows, C);
  for (int k = 0; k < 6; ++k)
    shapes.emplace_back(rng.pick({1, 2, 5, 64, 65, 300}), rng.pick({3, 16, 17, 31, 48, 1000}));
  for (auto [rows, C] : shapes) {
    const float shift = rng.uniform(-4.0f, 4.0f);  // a non-zero mean
    Vec x = rng.vec(rows * C, shift - 1.5f, shift + 1.5f), w = rng.vec(C, 0.5f, 1.5f), b = rng.vec(C, -1.0f, 1.0f);
    Vec y = poisoned(rows * C), mean = poisoned(rows), rstd = poisoned(rows);
    cpu::layernorm_forward(pool, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C, 1e-5f);
    DVec ry, rm, rr;
    ref_layernorm(to_d(x), to_d(w), to_d(b), rows, C, 1e-5, ry, rm, rr);
    const std::string tag = "rows " + std::to_string(rows) + " C " + std::to_string(C);
    CHECK(near_all(mean, rm, 1e-5, 1e-5, ("mean " + tag).c_str()));
    CHECK(near_all(rstd, rr, 1e-5, 1e-4, ("rstd " + tag).c_str()));
    CHECK(near_all(y, ry, 1e-4, 1e-4, ("y " + tag).c_str()));
  }
}

TEST(layernorm_backward_matches_finite_differences) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(2);
  // rows 200 spans several 64-row chunks of the dw/db reduction
  const std::vector<std::pair<int64_t, int64_t>> shapes{{1, 1}, {3, 7}, {2, 33}, {5, 17}, {200, 7}, {1, 129}};
  for (auto [rows, C] : shapes) {
    const double eps = 1e-5;
    Vec x = rng.vec(rows * C, -1.0f, 2.0f), w = rng.vec(C, 0.5f, 1.5f), b = rng.vec(C, -1.0f, 1.0f);
    Vec R = rng.vec(rows * C, -1.0f, 1.0f);  // L = sum(y * R), so dy = R
    Vec y = poisoned(rows * C), mean = poisoned(rows), rstd = poisoned(rows);
    cpu::layernorm_forward(pool, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C,
                           static_cast<float>(eps));
    Vec dx0 = rng.vec(rows * C, -1.0f, 1.0f), dw0 = rng.vec(C, -1.0f, 1.0f), db0 = rng.vec(C, -1.0f, 1.0f);
    Vec dx = dx0, dw = dw0, db = db0;
    cpu::layernorm_backward(pool, R.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), dw.data(),
                            db.data(), rows, C);

    DVec xd = to_d(x), wd = to_d(w), bd = to_d(b), Rd = to_d(R);
    auto L = [&, rows = rows, C = C] {  // structured bindings are captured by copy: C++17 (clang) cannot capture them
      DVec yy, mm, rr;
      ref_layernorm(xd, wd, bd, rows, C, eps, yy, mm, rr);
      return dot(yy, Rd);
    };
    DVec gx = numeric_grad(xd, L), gw = numeric_grad(wd, L), gb = numeric_grad(bd, L);
    const std::string tag = " rows " + std::to_string(rows) + " C " + std::to_string(C);
    CHECK(near_all(minus(dx, dx0).data(), gx.data(), rows * C, grad_tol(gx, 2e-4), 1e-3, ("dx" + tag).c_str()));
    CHECK(near_all(minus(dw, dw0).data(), gw.data(), C, grad_tol(gw, 2e-4), 1e-3, ("dw" + tag).c_str()));
    CHECK(near_all(minus(db, db0).data(), gb.data(), C, grad_tol(gb, 2e-4), 1e-3, ("db" + tag).c_str()));

    // Any subset of gradients: each one identical to the full call's.
    Vec dx2 = dx0, dw2 = dw0, db2 = db0;
    cpu::layernorm_backward(pool, R.data(), x.data(), w.data(), mean.data(), rstd.data(), dx2.data(), nullptr, nullptr,
                            rows, C);
    cpu::layernorm_backward(pool, R.data(), x.data(), w.data(), mean.data(), rstd.data(), nullptr, dw2.data(), nullptr,
                            rows, C);
    cpu::layernorm_backward(pool, R.data(), x.data(), w.data(), mean.data(), rstd.data(), nullptr, nullptr, db2.data(),
                            rows, C);
    CHECK(same_bits(dx2, dx));
    CHECK(same_bits(dw2, dw));
    CHECK(same_bits(db2, db));
  }
}

// ---- GELU ---------------------------------------------------------------------------------------------------------

// With one column, xhat = 0 and dx = rstd (g - mean(g) - 0) = 0 exactly, whatever dy and w: a product dy * w fused
// into g - mean(g) would leave its rounding error times rstd = 1 / sqrt(eps) ~ 316 (up to 2e-5 |g| per element).
// Also two equal columns (x and g constant per row): the same exact zero.
TEST(layernorm_backward_dx_is_exactly_zero_where_xhat_is_zero) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(11);
  for (int64_t C : {int64_t{1}, int64_t{2}}) {  // (the scalar path; wider rows take the vector path, whose row mean is not exact)
    const int64_t rows = 257;
    Vec x(static_cast<size_t>(rows * C)), w(static_cast<size_t>(C), 0.0f), b(static_cast<size_t>(C), 0.0f);
    Vec dy(static_cast<size_t>(rows * C));
    const Vec xr = rng.vec(rows, -3.0f, 3.0f), dyr = rng.vec(rows, -2.0f, 2.0f), wr = rng.vec(1, 0.3f, 1.7f);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < C; ++j) {
        x[static_cast<size_t>(r * C + j)] = xr[static_cast<size_t>(r)];    // constant row: xhat = 0
        dy[static_cast<size_t>(r * C + j)] = dyr[static_cast<size_t>(r)];  // with w constant: every g equal
      }
    for (float& v : w) v = wr[0];
    Vec y = poisoned(rows * C), mean = poisoned(rows), rstd = poisoned(rows);
    cpu::layernorm_forward(pool, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C, 1e-5f);
    Vec dx(static_cast<size_t>(rows * C), 0.0f);
    cpu::layernorm_backward(pool, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), nullptr, nullptr,
                            rows, C);
    float worst = 0.0f;
    for (float v : dx) worst = std::max(worst, std::fabs(v));
    if (worst != 0.0f) std::printf("  C %lld: max |dx| %g\n", static_cast<long long>(C), static_cast<double>(worst));
    CHECK_EQ(worst, 0.0f);
  }
}

TEST(gelu_forward_matches_double_reference) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(3);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{33}, int64_t{129}, int64_t{100003}, rng.pick({5, 999, 4097})}) {
    Vec x = rng.vec(n, -8.0f, 8.0f), y = poisoned(n);
    cpu::gelu_forward(pool, x.data(), y.data(), n);
    DVec ref(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) ref[static_cast<size_t>(i)] = ref_gelu(x[static_cast<size_t>(i)]);
    CHECK(near_all(y, ref, 2e-6, 2e-6, ("gelu n " + std::to_string(n)).c_str()));
  }
}

TEST(gelu_backward_matches_finite_differences) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(4);
  for (int64_t n : {1, 7, 33, 129}) {
    Vec x = rng.vec(n, -5.0f, 5.0f), R = rng.vec(n, -1.0f, 1.0f);
    Vec dx0 = rng.vec(n, -1.0f, 1.0f), dx = dx0;
    cpu::gelu_backward(pool, x.data(), R.data(), dx.data(), n);
    DVec xd = to_d(x), Rd = to_d(R);
    auto L = [&] {
      double s = 0;
      for (size_t i = 0; i < xd.size(); ++i) s += ref_gelu(xd[i]) * Rd[i];
      return s;
    };
    DVec gx = numeric_grad(xd, L);
    CHECK(near_all(minus(dx, dx0).data(), gx.data(), n, 1e-5, 1e-4, ("dgelu n " + std::to_string(n)).c_str()));
  }
}

// ---- exact (erf) GELU -------------------------------------------------------------------------------------------
// gelu(x) = x Phi(x), gelu'(x) = Phi(x) + x phi(x), Phi the normal CDF and phi its density. The double reference
// writes Phi(x) = erfc(-x / sqrt 2) / 2 — the same function as (1 + erf(x / sqrt 2)) / 2, but without the
// cancellation that leaves no correct digit of Phi (even in double) in the negative tail, where gelu is still a normal
// float down to x ~ -13. At +-inf and NaN it gives IEEE's values, which are PyTorch's: gelu(+inf) = +inf,
// gelu(-inf) = -inf * 0 = NaN, gelu'(+-inf) = NaN, NaN -> NaN.

double ref_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }
double ref_gelu_erf(double x) { return x * ref_cdf(x); }
double ref_gelu_erf_grad(double x) { return ref_cdf(x) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI); }

// |got - want| in units of the float spacing at want (2^-149 below FLT_MIN); 0 where both are NaN or the same
// infinity, infinite where only one of them is.
double ulps(float got, double want) {
  if (std::isnan(want) || std::isnan(got)) return std::isnan(want) && std::isnan(got) ? 0.0 : INFINITY;
  if (std::isinf(want) || std::isinf(got)) return static_cast<double>(got) == want ? 0.0 : INFINITY;
  const double aw = std::fabs(want);
  const double ulp = aw < FLT_MIN ? std::ldexp(1.0, -149) : std::ldexp(1.0, std::ilogb(aw) - 23);
  return std::fabs(static_cast<double>(got) - want) / ulp;
}

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Every 509th float bit pattern (8.4 million values of both signs: every binade, denormals and NaNs included), the
// special values, and the neighbours of the points where the kernels switch formulas or saturate.
Vec sweep_values() {
  Vec v;
  v.reserve((uint64_t{1} << 32) / 509 + 200);
  for (uint64_t b = 0; b < (uint64_t{1} << 32); b += 509) v.push_back(from_bits(static_cast<uint32_t>(b)));
  const float den = std::numeric_limits<float>::denorm_min();
  for (float s : {0.0f, den, 2 * den, FLT_MIN, FLT_MAX, INFINITY, NAN, 1e-20f, 0.7518f, 0.75179732f, 0.5f, 0.70710677f,
                  1.0f, 3.9f, 4.0f, 5.5f, 8.0f, 13.0f, 13.5f, 14.0f, 14.5f, 15.0f, 16.0f, 1e30f}) {
    for (float t : {s, std::nextafter(s, 0.0f), std::nextafter(s, INFINITY)}) {
      v.push_back(t);
      v.push_back(-t);
    }
  }
  return v;
}

// Error scale of gelu'(x) = Phi(x) + x phi(x): the ulp of the larger of the terms and the sum (the two terms cancel
// near the minimum of gelu at x = -0.7518, where gelu' crosses 0; any float evaluation is only that good there).
double grad_ulps(float got, double x) {
  const double want = ref_gelu_erf_grad(x);
  if (!std::isfinite(want)) return ulps(got, want);
  const double xphi = x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
  const double scale = std::max({std::fabs(want), ref_cdf(x), std::fabs(xphi)});
  const double ulp = scale < FLT_MIN ? std::ldexp(1.0, -149) : std::ldexp(1.0, std::ilogb(scale) - 23);
  return std::isfinite(got) ? std::fabs(static_cast<double>(got) - want) / ulp : INFINITY;
}

// The vector erf against std::erf in double, over the sweep, for every vector width (the generic instantiations:
// compiled here without the kernels' target attributes).
template <typename V>
double erf_max_ulps(const Vec& xs, float* worst_x) {
  constexpr int W = simd::Traits<V>::W;
  double worst = 0;
  for (size_t i = 0; i + W <= xs.size(); i += W) {
    const V r = simd::erf(simd::load<V>(xs.data() + i));
    for (int j = 0; j < W; ++j) {
      const double e = ulps(r[j], std::erf(static_cast<double>(xs[i + static_cast<size_t>(j)])));
      if (!(e <= worst)) worst = e, *worst_x = xs[i + static_cast<size_t>(j)];
    }
  }
  return worst;
}

TEST(simd_erf_matches_double_erf_over_every_binade) {
  Vec xs = sweep_values();
  while (xs.size() % 16) xs.push_back(0.25f);
  float wx4 = 0, wx8 = 0, wx16 = 0;
  const double e4 = erf_max_ulps<simd::f32x4>(xs, &wx4), e8 = erf_max_ulps<simd::f32x8>(xs, &wx8),
               e16 = erf_max_ulps<simd::f32x16>(xs, &wx16);
  std::printf("  simd::erf max error: %.2f ulp (x4, at %.9g), %.2f (x8, at %.9g), %.2f (x16, at %.9g); %zu values\n",
              e4, static_cast<double>(wx4), e8, static_cast<double>(wx8), e16, static_cast<double>(wx16), xs.size());
  // over all 2^32 floats (measured once, not in this test): 1.57 ulp with FMA, 1.94 without (this test's generic
  // vectors and the portable variant)
  CHECK(e4 <= 2.5);
  CHECK(e8 <= 2.5);
  CHECK(e16 <= 2.5);
  // the exact values: odd, saturated, NaN kept
  const simd::f32x4 s = simd::erf(simd::f32x4{-0.0f, INFINITY, -INFINITY, NAN});
  CHECK(s[0] == 0.0f && std::signbit(s[0]));
  CHECK(s[1] == 1.0f && s[2] == -1.0f && std::isnan(s[3]));
}

TEST(gelu_erf_matches_double_reference_over_every_binade) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  const Vec xs = sweep_values();
  const int64_t n = static_cast<int64_t>(xs.size());
  Vec y = poisoned(n), dx(xs.size(), 0.0f), dy(xs.size(), 1.0f);
  cpu::gelu_erf_forward(pool, xs.data(), y.data(), n);
  cpu::gelu_erf_backward(pool, xs.data(), dy.data(), dx.data(), n);  // 0 + gelu'(x) * 1: exactly gelu'(x)
  double fwd = 0, bwd = 0, fwd_abs = 0, bwd_abs = 0;
  float fwd_x = 0, bwd_x = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const double x = xs[i], want = ref_gelu_erf(x), gwant = ref_gelu_erf_grad(x);
    const double e = ulps(y[i], want), g = grad_ulps(dx[i], x);
    if (!(e <= fwd)) fwd = e, fwd_x = xs[i];
    if (!(g <= bwd)) bwd = g, bwd_x = xs[i];
    if (std::fabs(x) <= 16) {  // absolute errors where gelu is O(1) and below
      fwd_abs = std::max(fwd_abs, std::fabs(y[i] - want));
      bwd_abs = std::max(bwd_abs, std::fabs(dx[i] - gwant));
    }
  }
  std::printf("  gelu_erf_forward  max error %.2f ulp (at x = %.9g), max abs error %.3g for |x| <= 16\n", fwd,
              static_cast<double>(fwd_x), fwd_abs);
  std::printf("  gelu_erf_backward max error %.2f ulp of max(|gelu'|, Phi, |x phi|) (at x = %.9g), max abs error %.3g"
              " for |x| <= 16; %zu values\n", bwd, static_cast<double>(bwd_x), bwd_abs, xs.size());
  // over all 2^32 floats (measured once, not in this test): forward 3.96 ulp with FMA (the AVX2 and AVX-512 variants),
  // 4.74 without (portable); backward 2.61 and 3.01 ulp of the terms
  CHECK(fwd <= 5.0);
  CHECK(bwd <= 4.0);
  // the special values, exactly
  const Vec sx = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1e30f, -1e30f, -20.0f};
  Vec sy = poisoned(9), sg(9, 0.0f), one(9, 1.0f);
  cpu::gelu_erf_forward(pool, sx.data(), sy.data(), 9);
  cpu::gelu_erf_backward(pool, sx.data(), one.data(), sg.data(), 9);
  CHECK(sy[0] == 0.0f && !std::signbit(sy[0]) && sy[1] == 0.0f && std::signbit(sy[1]));  // +-0 keep their sign
  CHECK(sy[2] == INFINITY && std::isnan(sy[3]) && std::isnan(sy[4]) && std::isnan(sy[5]));
  CHECK(sy[6] == 1e30f && sy[7] == 0.0f && sy[8] == 0.0f);
  CHECK(sg[0] == 0.5f && sg[1] == 0.5f && std::isnan(sg[2]) && std::isnan(sg[3]) && std::isnan(sg[4]));
  CHECK(std::isnan(sg[5]) && sg[6] == 1.0f && sg[7] == 0.0f && sg[8] == 0.0f);
}

TEST(gelu_erf_forward_odd_sizes_match_reference_and_thread_count) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(21);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{17}, int64_t{8193}, int64_t{100003}}) {
    Vec x = rng.vec(n, -9.0f, 9.0f);
    Vec y1 = poisoned(n), y3 = poisoned(n);
    pool.set_threads(1);
    cpu::gelu_erf_forward(pool, x.data(), y1.data(), n);
    pool.set_threads(3);
    cpu::gelu_erf_forward(pool, x.data(), y3.data(), n);
    CHECK(same_bits(y1, y3));
    double worst = 0;
    for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, ulps(y3[i], ref_gelu_erf(x[i])));
    if (!(worst <= 5.0)) std::fprintf(stderr, "    gelu_erf n %lld: %.2f ulp\n", static_cast<long long>(n), worst);
    CHECK(worst <= 5.0);
  }
}

TEST(gelu_erf_backward_matches_derivative_and_finite_differences) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(22);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{17}, int64_t{8193}, int64_t{100003}}) {
    Vec x = rng.vec(n, -7.0f, 7.0f), R = rng.vec(n, -1.0f, 1.0f);
    Vec dx0 = rng.vec(n, -1.0f, 1.0f), dx1 = dx0, dx3 = dx0;
    pool.set_threads(1);
    cpu::gelu_erf_backward(pool, x.data(), R.data(), dx1.data(), n);
    pool.set_threads(3);
    cpu::gelu_erf_backward(pool, x.data(), R.data(), dx3.data(), n);
    CHECK(same_bits(dx1, dx3));
    const DVec got = minus(dx3, dx0);  // proves += (dx0 is not zero)
    // L = sum R_i gelu(x_i): dL/dx_i by central differences of the double reference (elementwise, so per element),
    // and the analytic derivative in double
    DVec fd(x.size()), an(x.size());
    const double h = 1e-4;
    for (size_t i = 0; i < x.size(); ++i) {
      const double xi = x[i];
      fd[i] = R[i] * (ref_gelu_erf(xi + h) - ref_gelu_erf(xi - h)) / (2 * h);
      an[i] = R[i] * ref_gelu_erf_grad(xi);
    }
    // the float result carries the rounding of dx0 + g dy (|dx0| < 1): 1.2e-7 absolute
    CHECK(near_all(got.data(), an.data(), n, 2.5e-7, 5e-7, ("dgelu_erf vs derivative n " + std::to_string(n)).c_str()));
    CHECK(near_all(got.data(), fd.data(), n, 5e-7, 1e-6, ("dgelu_erf vs finite differences n " + std::to_string(n)).c_str()));
  }
}

// ---- tanh (the pooler's activation) -----------------------------------------------------------------------------

TEST(tanh_matches_double_reference_special_values_and_thread_count) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(31);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{17}, int64_t{8193}, int64_t{100003}}) {
    Vec x = rng.vec(n, -6.0f, 6.0f);
    for (size_t i = 0; i < x.size(); i += 3) x[i] *= 0.07f;  // the polynomial's range |x| < 0.4 too
    Vec y1 = poisoned(n), y3 = poisoned(n);
    pool.set_threads(1);
    cpu::tanh_forward(pool, x.data(), y1.data(), n);
    pool.set_threads(3);
    cpu::tanh_forward(pool, x.data(), y3.data(), n);
    CHECK(same_bits(y1, y3));
    double worst = 0;
    for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, ulps(y3[i], std::tanh(static_cast<double>(x[i]))));
    if (!(worst <= 4.0)) std::fprintf(stderr, "    tanh n %lld: %.2f ulp\n", static_cast<long long>(n), worst);
    CHECK(worst <= 4.0);
  }
  // every binade from denormals to saturation, both signs, and the branch point 0.4
  Vec x;
  for (int e = -149; e <= 5; ++e)
    for (float m : {1.0f, 1.2345f, 1.5f, 1.999f}) {
      x.push_back(std::ldexp(m, e));
      x.push_back(-std::ldexp(m, e));
    }
  for (float v : {0.3999999f, 0.4f, 0.4000001f, -0.4f}) x.push_back(v);
  Vec y = poisoned(static_cast<int64_t>(x.size()));
  cpu::tanh_forward(pool, x.data(), y.data(), static_cast<int64_t>(x.size()));
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) worst = std::max(worst, ulps(y[i], std::tanh(static_cast<double>(x[i]))));
  if (!(worst <= 4.0)) std::fprintf(stderr, "    tanh binades: %.2f ulp\n", worst);
  CHECK(worst <= 4.0);
  const Vec sx = {0.0f, -0.0f, INFINITY, -INFINITY, std::nanf(""), 1e30f, -1e30f};
  Vec sy = poisoned(7), sg(7, 0.0f);
  const Vec one(7, 1.0f);
  cpu::tanh_forward(pool, sx.data(), sy.data(), 7);
  cpu::tanh_backward(pool, sx.data(), one.data(), sg.data(), 7);
  CHECK(sy[0] == 0.0f && !std::signbit(sy[0]) && sy[1] == 0.0f && std::signbit(sy[1]));  // +-0 keep their sign
  CHECK(sy[2] == 1.0f && sy[3] == -1.0f && std::isnan(sy[4]) && sy[5] == 1.0f && sy[6] == -1.0f);
  CHECK(sg[0] == 1.0f && sg[1] == 1.0f && sg[2] == 0.0f && sg[3] == 0.0f && std::isnan(sg[4]) && sg[5] == 0.0f);
}

TEST(tanh_backward_matches_derivative_and_finite_differences) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(32);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{17}, int64_t{8193}}) {
    Vec x = rng.vec(n, -4.0f, 4.0f), R = rng.vec(n, -1.0f, 1.0f);
    Vec dx0 = rng.vec(n, -1.0f, 1.0f), dx1 = dx0, dx3 = dx0;
    pool.set_threads(1);
    cpu::tanh_backward(pool, x.data(), R.data(), dx1.data(), n);
    pool.set_threads(3);
    cpu::tanh_backward(pool, x.data(), R.data(), dx3.data(), n);
    CHECK(same_bits(dx1, dx3));
    const DVec got = minus(dx3, dx0);  // proves += (dx0 is not zero)
    DVec fd(x.size()), an(x.size());
    const double h = 1e-4;
    for (size_t i = 0; i < x.size(); ++i) {
      const double xi = x[i], t = std::tanh(xi);
      fd[i] = R[i] * (std::tanh(xi + h) - std::tanh(xi - h)) / (2 * h);
      an[i] = R[i] * (1 - t * t);
    }
    CHECK(near_all(got.data(), an.data(), n, 2.5e-7, 5e-7, ("dtanh vs derivative n " + std::to_string(n)).c_str()));
    CHECK(near_all(got.data(), fd.data(), n, 5e-7, 1e-6, ("dtanh vs finite differences n " + std::to_string(n)).c_str()));
  }
}

// ---- softmax ------------------------------------------------------------------------------------------------------

TEST(softmax_forward_matches_double_reference) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(5);
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (int64_t rows : {1, 7, 33, 129})
    for (int64_t n : {1, 7, 33, 129, 1000}) shapes.emplace_back(rows, n);
  for (int k = 0; k < 4; ++k) shapes.emplace_back(rng.pick({2, 9, 64}), rng.pick({3, 16, 17, 50257}));
  for (auto [rows, n] : shapes) {
    Vec x = rng.vec(rows * n, -10.0f, 10.0f);
    for (int64_t r = 0; r < rows; r += 2)  // large offsets on some rows: exp must not overflow
      for (int64_t j = 0; j < n; ++j) x[static_cast<size_t>(r * n + j)] += 80.0f;
    Vec y = poisoned(rows * n);
    cpu::softmax_forward(pool, x.data(), y.data(), rows, n);
    DVec ref;
    ref_softmax(to_d(x), rows, n, ref);
    CHECK(near_all(y, ref, 1e-7, 2e-5, ("softmax rows " + std::to_string(rows) + " n " + std::to_string(n)).c_str()));
  }
}

TEST(softmax_forward_infinities_and_nan) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  const float inf = INFINITY, nan = NAN;
  const int64_t n = 19;  // a vector part and a tail for every ISA
  Vec x(5 * n, 1.0f);
  for (int64_t j = 0; j < n; ++j) x[static_cast<size_t>(j)] = -inf;  // row 0: all -inf -> NaN (0/0, as PyTorch)
  x[static_cast<size_t>(n + 3)] = nan;                                   // row 1: a NaN -> NaN row
  x[static_cast<size_t>(2 * n + 18)] = inf;                              // row 2: +inf -> NaN row
  x[static_cast<size_t>(3 * n + 0)] = -inf;                              // row 3: masked entries -> exactly 0
  x[static_cast<size_t>(3 * n + 17)] = -inf;
  Vec y = poisoned(5 * n);
  cpu::softmax_forward(pool, x.data(), y.data(), 5, n);
  bool nan_rows = true;
  for (int64_t j = 0; j < 3 * n; ++j) nan_rows = nan_rows && std::isnan(y[static_cast<size_t>(j)]);
  CHECK(nan_rows);
  CHECK(y[static_cast<size_t>(3 * n)] == 0.0f && y[static_cast<size_t>(3 * n + 17)] == 0.0f);
  CHECK_NEAR(y[static_cast<size_t>(3 * n + 1)], 1.0 / 17, 1e-7);
  CHECK_NEAR(y[static_cast<size_t>(4 * n + 5)], 1.0 / 19, 1e-7);
}

TEST(softmax_backward_matches_finite_differences) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(6);
  for (auto [rows, n] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 7}, {2, 33}, {1, 129}, {4, 17}}) {
    Vec x = rng.vec(rows * n, -3.0f, 3.0f), R = rng.vec(rows * n, -1.0f, 1.0f);
    Vec y = poisoned(rows * n);
    cpu::softmax_forward(pool, x.data(), y.data(), rows, n);
    Vec dx0 = rng.vec(rows * n, -1.0f, 1.0f), dx = dx0;
    cpu::softmax_backward(pool, y.data(), R.data(), dx.data(), rows, n);
    DVec xd = to_d(x), Rd = to_d(R);
    auto L = [&, rows = rows, n = n] {  // see above
      DVec yy;
      ref_softmax(xd, rows, n, yy);
      return dot(yy, Rd);
    };
    DVec gx = numeric_grad(xd, L);
    CHECK(near_all(minus(dx, dx0).data(), gx.data(), rows * n, grad_tol(gx, 1e-5), 1e-4,
                   ("dsoftmax rows " + std::to_string(rows) + " n " + std::to_string(n)).c_str()));
  }
}

// ---- axpby --------------------------------------------------------------------------------------------------------

TEST(axpby_matches_reference_and_may_alias) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(7);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{33}, int64_t{129}, int64_t{100003}}) {
    Vec a = rng.vec(n, -2.0f, 2.0f), b = rng.vec(n, -2.0f, 2.0f);
    const float alpha = rng.uniform(-2.0f, 2.0f), beta = rng.uniform(-2.0f, 2.0f);
    DVec ref(static_cast<size_t>(n));
    for (size_t i = 0; i < ref.size(); ++i) ref[i] = double{alpha} * a[i] + double{beta} * b[i];
    Vec out = poisoned(n);
    cpu::axpby(pool, a.data(), alpha, b.data(), beta, out.data(), n);
    const std::string tag = "axpby n " + std::to_string(n);
    CHECK(near_all(out, ref, 1e-6, 1e-6, tag.c_str()));
    Vec ina = a, inb = b;  // in place: out is a, then out is b — the same bits as a separate output
    cpu::axpby(pool, ina.data(), alpha, b.data(), beta, ina.data(), n);
    cpu::axpby(pool, a.data(), alpha, inb.data(), beta, inb.data(), n);
    CHECK(same_bits(ina, out));
    CHECK(same_bits(inb, out));
  }
}

// ---- dropout ------------------------------------------------------------------------------------------------------

TEST(dropout_forward_follows_the_philox_mask) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(8);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{33}, int64_t{129}, int64_t{100003}}) {
    for (uint64_t offset : {uint64_t{0}, uint64_t{5}, uint64_t{1} << 34 | 3}) {
      const uint64_t seed = 0x123456789abcdefull + offset;
      const float p = 0.3f, scale = 1.0f / (1.0f - p);
      Vec x = rng.vec(n, 0.5f, 2.0f), y = poisoned(n);
      cpu::dropout_forward(pool, x.data(), y.data(), n, p, seed, offset);
      bool ok = true, helper = true;
      for (int64_t i = 0; i < n; ++i) {
        const uint64_t e = offset + static_cast<uint64_t>(i);
        const bool keep = ref_keep(seed, e, p);
        helper = helper && keep == dropout_keep_at(seed, e, p);
        ok = ok && y[static_cast<size_t>(i)] == (keep ? x[static_cast<size_t>(i)] * scale : 0.0f);
      }
      CHECK(ok);
      CHECK(helper);
      // the boundary: an element whose u equals p exactly is kept (u >= p)
      if (n > 3) {
        const float pe = u32_to_unit(philox_block(seed, (offset + 3) / 4, kStreamDropout).v[(offset + 3) % 4]);
        Vec z = poisoned(n);
        cpu::dropout_forward(pool, x.data(), z.data(), n, pe, seed, offset);
        CHECK(z[3] == x[3] * (1.0f / (1.0f - pe)));
      }
      // a window of the same stream: elements [10, n) with offset + 10 are the same values
      if (n > 10) {
        Vec tail = poisoned(n - 10);
        cpu::dropout_forward(pool, x.data() + 10, tail.data(), n - 10, p, seed, offset + 10);
        CHECK(std::memcmp(tail.data(), y.data() + 10, tail.size() * sizeof(float)) == 0);
      }
    }
  }
}

TEST(dropout_mask_statistics) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  const int64_t n = 1 << 20;
  Vec x(static_cast<size_t>(n), 1.0f);
  for (float p : {0.1f, 0.5f, 0.9f}) {
    Vec y = poisoned(n);
    cpu::dropout_forward(pool, x.data(), y.data(), n, p, 42, 0);
    int64_t dropped = 0;
    double sum = 0;
    for (float v : y) {
      dropped += v == 0.0f;
      sum += v;
    }
    // binomial: the standard deviation of the dropped fraction is sqrt(p (1 - p) / n) < 5e-4
    CHECK_NEAR(static_cast<double>(dropped) / static_cast<double>(n), p, 3e-3);
    CHECK_NEAR(sum / static_cast<double>(n), 1.0, 0.02);  // inverted dropout keeps the mean
  }
  // different seeds give different masks
  Vec a = poisoned(4096), b = poisoned(4096);
  cpu::dropout_forward(pool, x.data(), a.data(), 4096, 0.5f, 1, 0);
  cpu::dropout_forward(pool, x.data(), b.data(), 4096, 0.5f, 2, 0);
  CHECK(!same_bits(a, b));
}

TEST(dropout_backward_regenerates_the_mask) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(9);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{33}, int64_t{129}, int64_t{70001}}) {
    const float p = 0.25f;
    const uint64_t seed = 77, offset = 1234567;
    Vec x = rng.vec(n, 0.5f, 2.0f), y = poisoned(n);
    cpu::dropout_forward(pool, x.data(), y.data(), n, p, seed, offset);
    Vec dy = rng.vec(n, 0.5f, 2.0f), dx0 = rng.vec(n, -1.0f, 1.0f), dx = dx0;
    cpu::dropout_backward(pool, dy.data(), dx.data(), n, p, seed, offset);
    bool ok = true;
    for (size_t i = 0; i < y.size(); ++i) {  // x > 0, so a zero output means dropped
      const double want = y[i] != 0.0f ? double{dx0[i]} + double{dy[i]} / (1.0 - p) : double{dx0[i]};
      ok = ok && (y[i] != 0.0f ? std::fabs(dx[i] - want) <= 1e-6 * (1 + std::fabs(want)) : dx[i] == dx0[i]);
    }
    CHECK(ok);
  }
  // finite differences of L = sum(dropout(x) * R) (linear, so the differences are exact up to rounding)
  const int64_t n = 45;
  Vec x = rng.vec(n, -1.0f, 1.0f), R = rng.vec(n, -1.0f, 1.0f), dx0 = rng.vec(n, -1.0f, 1.0f), dx = dx0;
  cpu::dropout_backward(pool, R.data(), dx.data(), n, 0.4f, 5, 3);
  DVec xd = to_d(x), Rd = to_d(R);
  auto L = [&] {
    double s = 0;
    for (int64_t i = 0; i < n; ++i)
      if (ref_keep(5, 3 + static_cast<uint64_t>(i), 0.4f))
        s += xd[static_cast<size_t>(i)] / (1.0 - 0.4f) * Rd[static_cast<size_t>(i)];
    return s;
  };
  DVec gx = numeric_grad(xd, L);
  CHECK(near_all(minus(dx, dx0).data(), gx.data(), n, 1e-5, 1e-5, "ddropout"));
}

TEST(dropout_p0_is_identity) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(10);
  const int64_t n = 50001;
  Vec x = rng.vec(n, -2.0f, 2.0f), y = poisoned(n);
  cpu::dropout_forward(pool, x.data(), y.data(), n, 0.0f, 9, 1);
  CHECK(same_bits(x, y));
  Vec dx0 = rng.vec(n, -1.0f, 1.0f), dx = dx0;
  cpu::dropout_backward(pool, x.data(), dx.data(), n, 0.0f, 9, 1);
  bool ok = true;
  for (size_t i = 0; i < dx.size(); ++i) ok = ok && dx[i] == dx0[i] + x[i];
  CHECK(ok);
}

// ---- determinism --------------------------------------------------------------------------------------------------

TEST(results_identical_for_1_and_3_threads) {
  Context ctx;
  ThreadPool& pool = ctx.pool();
  Rng rng(11);
  const int64_t rows = 777, C = 129, n = rows * C;  // 13 chunks of the dw/db reduction
  Vec x = rng.vec(n, -2.0f, 2.0f), w = rng.vec(C, 0.5f, 1.5f), b = rng.vec(C, -1.0f, 1.0f), dy = rng.vec(n, -1, 1);
  auto run = [&](int threads) {
    pool.set_threads(threads);
    std::vector<Vec> out;
    Vec y = poisoned(n), mean = poisoned(rows), rstd = poisoned(rows);
    cpu::layernorm_forward(pool, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C, 1e-5f);
    Vec dx(static_cast<size_t>(n), 0.5f), dw(static_cast<size_t>(C), 0.25f), db(static_cast<size_t>(C), -0.5f);
    cpu::layernorm_backward(pool, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), dw.data(),
                            db.data(), rows, C);
    Vec g = poisoned(n), dg(static_cast<size_t>(n), 1.0f);
    cpu::gelu_forward(pool, x.data(), g.data(), n);
    cpu::gelu_backward(pool, x.data(), dy.data(), dg.data(), n);
    Vec ge = poisoned(n), dge(static_cast<size_t>(n), 1.0f);
    cpu::gelu_erf_forward(pool, x.data(), ge.data(), n);
    cpu::gelu_erf_backward(pool, x.data(), dy.data(), dge.data(), n);
    Vec s = poisoned(n), ds(static_cast<size_t>(n), 1.0f);
    cpu::softmax_forward(pool, x.data(), s.data(), rows, C);
    cpu::softmax_backward(pool, s.data(), dy.data(), ds.data(), rows, C);
    Vec ax = poisoned(n);
    cpu::axpby(pool, x.data(), 0.5f, dy.data(), -2.0f, ax.data(), n);
    Vec dr = poisoned(n), ddr(static_cast<size_t>(n), 1.0f);
    cpu::dropout_forward(pool, x.data(), dr.data(), n, 0.1f, 3, 7);
    cpu::dropout_backward(pool, dy.data(), ddr.data(), n, 0.1f, 3, 7);
    return std::vector<Vec>{y, mean, rstd, dx, dw, db, g, dg, ge, dge, s, ds, ax, dr, ddr};
  };
  std::vector<Vec> one = run(1), three = run(3);
  for (size_t k = 0; k < one.size(); ++k) {
    if (!same_bits(one[k], three[k])) std::fprintf(stderr, "    output %zu differs\n", k);
    CHECK(same_bits(one[k], three[k]));
  }
}

TEST_MAIN()
