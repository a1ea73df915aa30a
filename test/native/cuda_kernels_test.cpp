// cuda_kernels_test.cpp — every CUDA kernel of cuda/pointwise.cu, embedding.cu, optim.cu and l2.cu against the CPU
// kernel of native/cpu (the reference) on fresh random inputs (the seed is printed), at sizes that are not multiples
// of any block or tile size. Device outputs are poisoned with NaN first, so an element a kernel forgets to write fails;
// a NaN where the CPU has a number always fails. fp32 tolerance: 1e-5 relative (to max(|ref|, the mean |ref|)).
// Exits 77 (ctest's SKIP) printing the reason when there is no usable GPU or the binary was built without CUDA.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/context.h"
#include "core/error.h"

#if SHAREDFORMER_WITH_CUDA
#include "../../cuda/kernels.h"
#ifdef SF_CUDA_EMU
#include <cuda_runtime.h>  // the CPU lane's runtime and its test hooks (sfemu::stream_window, fail_next)
#endif
#include "cpu/kernels.h"

using namespace sf;

namespace {

int failures = 0;
void expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok" : "not ok", what.c_str());
  if (!ok) ++failures;
}

const float kNaN = std::numeric_limits<float>::quiet_NaN();

struct Env {
  Context& ctx;
  Backend& gpu;
  cuda::Stream s;
  ThreadPool& pool;
  std::mt19937_64 rng;

  std::vector<float> randn(int64_t n, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = d(rng);
    return v;
  }
  std::vector<float> uniform(int64_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = d(rng);
    return v;
  }
  // A device tensor holding v (a host copy is kept by the caller).
  Tensor up(const std::vector<float>& v) {
    Tensor t = empty_tensor(gpu.allocator(), {static_cast<int64_t>(v.size())}, DType::f32, "test");
    if (!v.empty()) gpu.copy_from_host(t, v.data());
    return t;
  }
  Tensor up_i(const std::vector<int32_t>& v) {
    Tensor t = empty_tensor(gpu.allocator(), {static_cast<int64_t>(v.size())}, DType::i32, "test");
    if (!v.empty()) gpu.copy_from_host(t, v.data());
    return t;
  }
  // A device tensor of n floats, all NaN.
  Tensor poisoned(int64_t n) { return up(std::vector<float>(static_cast<size_t>(n), kNaN)); }
  std::vector<float> down(const Tensor& t) {  // synchronises the stream
    std::vector<float> v(static_cast<size_t>(t.numel()));
    if (!v.empty()) gpu.copy_to_host(v.data(), t);
    return v;
  }
};

// Max relative error of got vs ref, relative to max(|ref_i|, mean |ref|); NaN in got where ref is a number -> inf.
// Where ref is NaN, got must be NaN too.
double rel_err(const std::vector<float>& ref, const std::vector<float>& got) {
  if (ref.size() != got.size()) return INFINITY;
  double mean = 0;
  for (float r : ref)
    if (std::isfinite(r)) mean += std::fabs(r);
  mean = ref.empty() ? 1.0 : std::max(mean / static_cast<double>(ref.size()), 1e-30);
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const float r = ref[i], g = got[i];
    if (std::isnan(r)) {
      if (!std::isnan(g)) return INFINITY;
      continue;
    }
    if (std::isnan(g)) return INFINITY;
    if (std::isinf(r) || std::isinf(g)) {
      if (r != g) return INFINITY;
      continue;
    }
    const double e = std::fabs(static_cast<double>(r) - g) / std::max(std::fabs(static_cast<double>(r)), mean);
    worst = std::max(worst, e);
  }
  return worst;
}

void near(const std::vector<float>& ref, const std::vector<float>& got, double tol, const std::string& what) {
  const double e = rel_err(ref, got);
  char buf[64];
  std::snprintf(buf, sizeof buf, " (max rel err %.3g)", e);
  expect(e <= tol, what + buf);
}

constexpr double kTol = 1e-5;

// For sums: max |got - ref| / max scale, where scale[j] bounds the magnitude of element j's terms (the rounding error
// of a sum in any order is proportional to it). A NaN or a size mismatch never passes.
void near_sum(const std::vector<float>& ref, const std::vector<float>& got, const std::vector<double>& scale,
              double tol, const std::string& what) {
  double num = got.size() == ref.size() ? 0.0 : INFINITY, den = 0.0;
  for (size_t i = 0; i < ref.size() && i < got.size(); ++i) {
    const double d = std::fabs(static_cast<double>(got[i]) - ref[i]);
    num = std::isnan(d) ? INFINITY : std::max(num, d);
    den = std::max(den, scale[i]);
  }
  const double e = den > 0 ? num / den : num;
  char buf[64];
  std::snprintf(buf, sizeof buf, " (max err / sum of |terms| %.3g)", e);
  expect(e <= tol, what + buf);
}

// Element-wise: max over j of |got[j] - ref[j]| / scale[j], where scale[j] bounds the magnitude of the terms that make
// element j (a result that cancels, as b1 * m + (1 - b1) * g can, is only as exact as its terms are large: two devices
// that contract a * b + c differently may differ by a rounding of the terms, not of the result). NaN matches NaN only.
void near_each(const std::vector<float>& ref, const std::vector<float>& got, const std::vector<double>& scale,
               double tol, const std::string& what) {
  double e = got.size() == ref.size() && scale.size() == ref.size() ? 0.0 : INFINITY;
  for (size_t i = 0; i < ref.size() && i < got.size() && i < scale.size(); ++i) {
    if (std::isnan(ref[i]) || std::isnan(got[i])) {
      if (std::isnan(ref[i]) != std::isnan(got[i])) e = INFINITY;
      continue;
    }
    const double d = std::fabs(static_cast<double>(got[i]) - ref[i]);
    e = std::max(e, d == 0.0 ? 0.0 : d / std::max(scale[i], 1e-30));
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, " (max err / |terms| %.3g)", e);
  expect(e <= tol, what + buf);
}

std::string sz(std::initializer_list<int64_t> dims) {
  std::string s;
  for (int64_t d : dims) s += (s.empty() ? "" : "x") + std::to_string(d);
  return s;
}

// ---- layer norm ---------------------------------------------------------------------------------------------------

void test_layernorm(Env& e) {
  for (int64_t rows : {int64_t{1}, int64_t{37}, int64_t{1031}}) {
    for (int64_t C : {int64_t{1}, int64_t{7}, int64_t{129}, int64_t{1000}}) {
      const std::string tag = " " + sz({rows, C});
      auto x = e.randn(rows * C, 2.0f), w = e.randn(C), b = e.randn(C);
      for (int64_t i = 0; i < rows * C; i += 3) x[static_cast<size_t>(i)] += 0.5f;
      std::vector<float> y(x.size()), mean(static_cast<size_t>(rows)), rstd(static_cast<size_t>(rows));
      cpu::layernorm_forward(e.pool, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C, 1e-5f);
      Tensor gx = e.up(x), gw = e.up(w), gb = e.up(b), gy = e.poisoned(rows * C), gm = e.poisoned(rows),
             gr = e.poisoned(rows);
      cuda::layernorm_forward(e.s, gx.data<float>(), gw.data<float>(), gb.data<float>(), gy.data<float>(),
                              gm.data<float>(), gr.data<float>(), rows, C, 1e-5f);
      near(y, e.down(gy), kTol, "layernorm_forward y" + tag);
      // a row's mean can cancel to near 0: its error is measured against the mean of |x| (the terms' scale)
      std::vector<double> mean_terms(static_cast<size_t>(rows), 0.0);
      for (int64_t i = 0; i < rows * C; ++i) mean_terms[static_cast<size_t>(i / C)] += std::fabs(x[static_cast<size_t>(i)]) / C;
      near_each(mean, e.down(gm), mean_terms, kTol, "layernorm_forward mean" + tag);
      near(rstd, e.down(gr), kTol, "layernorm_forward rstd" + tag);

      // backward: accumulates into random initial gradients
      auto dy = e.randn(rows * C), dx0 = e.randn(rows * C), dw0 = e.randn(C), db0 = e.randn(C);
      auto dx = dx0, dw = dw0, db = db0;
      cpu::layernorm_backward(e.pool, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), dw.data(),
                              db.data(), rows, C);
      Tensor gdy = e.up(dy), gdx = e.up(dx0), gdw = e.up(dw0), gdb = e.up(db0), gmean = e.up(mean),
             grstd = e.up(rstd);
      cuda::layernorm_backward(e.s, gdy.data<float>(), gx.data<float>(), gw.data<float>(), gmean.data<float>(),
                               grstd.data<float>(), gdx.data<float>(), gdw.data<float>(), gdb.data<float>(), rows, C);
      near(dx, e.down(gdx), kTol, "layernorm_backward dx" + tag);
      const auto gdw1 = e.down(gdw), gdb1 = e.down(gdb);
      // dw and db are sums over rows, summed in another order on the device: their rounding error is bounded by the
      // sum of the terms' magnitudes, not by the result's (a column whose sum cancels to near 0 is still exact to
      // ~1e-7 of its terms). So the scale is max over columns of |dw0| + sum |dy * xhat| (|db0| + sum |dy|).
      std::vector<double> wscale(static_cast<size_t>(C)), bscale(static_cast<size_t>(C));
      for (int64_t j = 0; j < C; ++j) {
        wscale[static_cast<size_t>(j)] = std::fabs(dw0[static_cast<size_t>(j)]);
        bscale[static_cast<size_t>(j)] = std::fabs(db0[static_cast<size_t>(j)]);
      }
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < C; ++j) {
          const size_t i = static_cast<size_t>(r * C + j);
          const double xh = (static_cast<double>(x[i]) - mean[static_cast<size_t>(r)]) * rstd[static_cast<size_t>(r)];
          wscale[static_cast<size_t>(j)] += std::fabs(dy[i] * xh);
          bscale[static_cast<size_t>(j)] += std::fabs(dy[i]);
        }
      near_sum(dw, gdw1, wscale, kTol, "layernorm_backward dw" + tag);
      near_sum(db, gdb1, bscale, kTol, "layernorm_backward db" + tag);
      // determinism: the same call again (from the same initial values) gives the same bits
      Tensor gdw2 = e.up(dw0), gdb2 = e.up(db0);
      cuda::layernorm_backward(e.s, gdy.data<float>(), gx.data<float>(), gw.data<float>(), gmean.data<float>(),
                               grstd.data<float>(), nullptr, gdw2.data<float>(), gdb2.data<float>(), rows, C);
      const auto r2w = e.down(gdw2), r2b = e.down(gdb2);
      expect(std::memcmp(r2w.data(), gdw1.data(), r2w.size() * 4) == 0 &&
                 std::memcmp(r2b.data(), gdb1.data(), r2b.size() * 4) == 0,
             "layernorm_backward dw/db deterministic (dx null)" + tag);
      // only dw (db and dx null) leaves the others alone and still matches
      Tensor gdw3 = e.up(dw0);
      cuda::layernorm_backward(e.s, gdy.data<float>(), gx.data<float>(), gw.data<float>(), gmean.data<float>(),
                               grstd.data<float>(), nullptr, gdw3.data<float>(), nullptr, rows, C);
      near(dw, e.down(gdw3), kTol, "layernorm_backward dw alone" + tag);
    }
  }
}

// ---- GELU, softmax, axpby -----------------------------------------------------------------------------------------

void test_gelu(Env& e) {
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{1000003}}) {
    auto x = e.randn(n, 3.0f);
    if (n > 10) {
      x[0] = 30.0f;
      x[1] = -30.0f;
      x[2] = 0.0f;
    }
    std::vector<float> y(x.size());
    cpu::gelu_forward(e.pool, x.data(), y.data(), n);
    Tensor gx = e.up(x), gy = e.poisoned(n);
    cuda::gelu_forward(e.s, gx.data<float>(), gy.data<float>(), n);
    near(y, e.down(gy), kTol, "gelu_forward n=" + std::to_string(n));
    auto dy = e.randn(n), dx = e.randn(n);
    Tensor gdy = e.up(dy), gdx = e.up(dx);
    cpu::gelu_backward(e.pool, x.data(), dy.data(), dx.data(), n);
    cuda::gelu_backward(e.s, gx.data<float>(), gdy.data<float>(), gdx.data<float>(), n);
    near(dx, e.down(gdx), kTol, "gelu_backward n=" + std::to_string(n));
  }
}

// The exact (erf) GELU: x Phi(x) with CUDA's normcdff, against the CPU's polynomial kernel; the tails (30 saturates,
// -12 is far below 1 but still a normal float: the relative check scales it by the mean |ref|).
void test_gelu_erf(Env& e) {
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{1000003}}) {
    auto x = e.randn(n, 3.0f);
    if (n > 10) {
      x[0] = 30.0f;
      x[1] = -30.0f;
      x[2] = 0.0f;
      x[3] = -12.0f;
      x[4] = -0.7517974f;  // gelu' = 0 near here
    }
    std::vector<float> y(x.size());
    cpu::gelu_erf_forward(e.pool, x.data(), y.data(), n);
    Tensor gx = e.up(x), gy = e.poisoned(n);
    cuda::gelu_erf_forward(e.s, gx.data<float>(), gy.data<float>(), n);
    near(y, e.down(gy), kTol, "gelu_erf_forward n=" + std::to_string(n));
    auto dy = e.randn(n), dx = e.randn(n);
    Tensor gdy = e.up(dy), gdx = e.up(dx);
    cpu::gelu_erf_backward(e.pool, x.data(), dy.data(), dx.data(), n);
    cuda::gelu_erf_backward(e.s, gx.data<float>(), gdy.data<float>(), gdx.data<float>(), n);
    near(dx, e.down(gdx), kTol, "gelu_erf_backward n=" + std::to_string(n));
  }
}

// tanh: CUDA's tanhf against the CPU's kernel; saturation, +-0 and the CPU's polynomial range.
void test_tanh(Env& e) {
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{1000003}}) {
    auto x = e.randn(n, 2.0f);
    if (n > 10) {
      x[0] = 30.0f;
      x[1] = -30.0f;
      x[2] = 0.0f;
      x[3] = 0.1f;
      x[4] = -0.25f;
    }
    std::vector<float> y(x.size());
    cpu::tanh_forward(e.pool, x.data(), y.data(), n);
    Tensor gx = e.up(x), gy = e.poisoned(n);
    cuda::tanh_forward(e.s, gx.data<float>(), gy.data<float>(), n);
    near(y, e.down(gy), kTol, "tanh_forward n=" + std::to_string(n));
    auto dy = e.randn(n), dx = e.randn(n);
    Tensor gdy = e.up(dy), gdx = e.up(dx);
    cpu::tanh_backward(e.pool, x.data(), dy.data(), dx.data(), n);
    cuda::tanh_backward(e.s, gx.data<float>(), gdy.data<float>(), gdx.data<float>(), n);
    near(dx, e.down(gdx), kTol, "tanh_backward n=" + std::to_string(n));
  }
}

void test_softmax(Env& e) {
  for (int64_t rows : {int64_t{1}, int64_t{17}}) {
    for (int64_t n : {int64_t{1}, int64_t{5}, int64_t{1025}, int64_t{32001}}) {
      const std::string tag = " " + sz({rows, n});
      auto x = e.randn(rows * n, 4.0f);
      if (rows > 1 && n > 2) {  // NaN semantics: a NaN, a +inf, an all -inf row make the row NaN
        x[static_cast<size_t>(n + 1)] = kNaN;
        x[static_cast<size_t>(2 * n)] = INFINITY;
        for (int64_t j = 0; j < n; ++j) x[static_cast<size_t>(3 * n + j)] = -INFINITY;
        x[static_cast<size_t>(4 * n)] = -INFINITY;  // one -inf in a normal row: probability 0
      }
      std::vector<float> y(x.size());
      cpu::softmax_forward(e.pool, x.data(), y.data(), rows, n);
      Tensor gx = e.up(x), gy = e.poisoned(rows * n);
      cuda::softmax_forward(e.s, gx.data<float>(), gy.data<float>(), rows, n);
      near(y, e.down(gy), kTol, "softmax_forward" + tag);
      // backward on finite probabilities
      auto xf = e.randn(rows * n, 2.0f);
      std::vector<float> yf(xf.size());
      cpu::softmax_forward(e.pool, xf.data(), yf.data(), rows, n);
      auto dy = e.randn(rows * n), dx = e.randn(rows * n);
      Tensor gyf = e.up(yf), gdy = e.up(dy), gdx = e.up(dx);
      cpu::softmax_backward(e.pool, yf.data(), dy.data(), dx.data(), rows, n);
      cuda::softmax_backward(e.s, gyf.data<float>(), gdy.data<float>(), gdx.data<float>(), rows, n);
      near(dx, e.down(gdx), kTol, "softmax_backward" + tag);
    }
  }
}

void test_axpby(Env& e) {
  for (int64_t n : {int64_t{1}, int64_t{999}, int64_t{1000003}}) {
    auto a = e.randn(n), b = e.randn(n);
    std::vector<float> out(a.size());
    cpu::axpby(e.pool, a.data(), 0.75f, b.data(), -1.5f, out.data(), n);
    Tensor ga = e.up(a), gb = e.up(b), go = e.poisoned(n);
    cuda::axpby(e.s, ga.data<float>(), 0.75f, gb.data<float>(), -1.5f, go.data<float>(), n);
    near(out, e.down(go), kTol, "axpby n=" + std::to_string(n));
    // in place: out = a
    cuda::axpby(e.s, ga.data<float>(), 0.75f, gb.data<float>(), -1.5f, ga.data<float>(), n);
    near(out, e.down(ga), kTol, "axpby in place (out = a) n=" + std::to_string(n));
  }
}

// ---- dropout: the same mask as the CPU, bit for bit -----------------------------------------------------------------

void test_dropout(Env& e) {
  for (float p : {0.0f, 0.1f, 0.5f, 0.9f}) {
    for (int64_t n : {int64_t{1}, int64_t{6}, int64_t{1000003}}) {
      for (uint64_t offset : {uint64_t{0}, uint64_t{5}, (uint64_t{1} << 33) + 3}) {
        const std::string tag = " p=" + std::to_string(p) + " n=" + std::to_string(n) + " offset=" +
                                std::to_string(offset);
        const uint64_t seed = 0x9e3779b97f4a7c15ULL ^ static_cast<uint64_t>(n);
        auto x = e.randn(n);
        std::vector<float> y(x.size());
        cpu::dropout_forward(e.pool, x.data(), y.data(), n, p, seed, offset);
        Tensor gx = e.up(x), gy = e.poisoned(n);
        cuda::dropout_forward(e.s, gx.data<float>(), gy.data<float>(), n, p, seed, offset);
        const auto got = e.down(gy);
        bool same_mask = true;
        for (size_t i = 0; i < got.size(); ++i) same_mask = same_mask && ((y[i] == 0.0f) == (got[i] == 0.0f));
        expect(same_mask, "dropout_forward mask identical" + tag);
        near(y, got, kTol, "dropout_forward" + tag);
        auto dy = e.randn(n), dx = e.randn(n);
        Tensor gdy = e.up(dy), gdx = e.up(dx);
        cpu::dropout_backward(e.pool, dy.data(), dx.data(), n, p, seed, offset);
        cuda::dropout_backward(e.s, gdy.data<float>(), gdx.data<float>(), n, p, seed, offset);
        near(dx, e.down(gdx), kTol, "dropout_backward" + tag);
      }
    }
  }
}

// ---- permutation, KV cache ------------------------------------------------------------------------------------------

void test_permute(Env& e) {
  for (auto dims : {std::vector<int64_t>{1, 1, 1, 1}, std::vector<int64_t>{3, 5, 7, 9}, std::vector<int64_t>{2, 33, 12, 64}}) {
    const int64_t A = dims[0], B = dims[1], C = dims[2], D = dims[3], n = A * B * C * D;
    const std::string tag = " " + sz({A, B, C, D});
    auto src = e.randn(n);
    std::vector<float> dst(src.size());
    cpu::permute0213(e.pool, src.data(), dst.data(), A, B, C, D, false);
    Tensor gs = e.up(src), gd = e.poisoned(n);
    cuda::permute0213(e.s, gs.data<float>(), gd.data<float>(), A, B, C, D, false);
    const auto got = e.down(gd);
    expect(std::memcmp(got.data(), dst.data(), got.size() * 4) == 0, "permute0213 exact" + tag);
    auto acc = e.randn(n);
    Tensor ga = e.up(acc);
    cpu::permute0213(e.pool, src.data(), acc.data(), A, B, C, D, true);
    cuda::permute0213(e.s, gs.data<float>(), ga.data<float>(), A, B, C, D, true);
    near(acc, e.down(ga), kTol, "permute0213 accumulate" + tag);
  }
}

void test_kv_append(Env& e) {
  const int64_t B = 2, H = 3, Tmax = 11, D = 5;
  for (auto [pos, n] : {std::pair<int64_t, int64_t>{0, 1}, {4, 6}, {10, 1}, {0, 11}, {3, 0}}) {
    auto cache = e.randn(B * H * Tmax * D), src = e.randn(B * H * n * D);
    Tensor gc = e.up(cache), gs = e.up(src);
    cpu::kv_append(e.pool, src.data(), cache.data(), B, H, n, Tmax, D, pos);
    cuda::kv_append(e.s, gs.data<float>(), gc.data<float>(), B, H, n, Tmax, D, pos);
    const auto got = e.down(gc);
    expect(std::memcmp(got.data(), cache.data(), got.size() * 4) == 0,
           "kv_append exact, nothing outside the window touched, pos=" + std::to_string(pos) + " n=" +
               std::to_string(n));
  }
}

// ---- ids, embedding, cross-entropy ----------------------------------------------------------------------------------

void test_check_ids(Env& e) {
  std::vector<int32_t> ids(100003);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(i % 50);
  Tensor g = e.up_i(ids);
  expect(cuda::check_ids(e.s, g.data<int32_t>(), static_cast<int64_t>(ids.size()), 0, 50, 0) == -1,
         "check_ids: all valid -> -1");
  ids[70001] = 50;
  ids[90000] = -1;
  ids[99999] = -100;
  Tensor g2 = e.up_i(ids);
  expect(cuda::check_ids(e.s, g2.data<int32_t>(), static_cast<int64_t>(ids.size()), 0, 50, 0) == 70001,
         "check_ids: first offending position");
  ids[70001] = 3;
  ids[90000] = 4;
  Tensor g3 = e.up_i(ids);
  expect(cuda::check_ids(e.s, g3.data<int32_t>(), static_cast<int64_t>(ids.size()), 0, 50, -100) == -1,
         "check_ids: the skip value is not an error");
  expect(cuda::check_ids(e.s, g3.data<int32_t>(), static_cast<int64_t>(ids.size()), 0, 50, 0) == 99999,
         "check_ids: without skipping it, -100 is");
  expect(cuda::check_ids(e.s, g3.data<int32_t>(), 0, 0, 50, 0) == -1, "check_ids: n = 0 -> -1");
}

void test_embedding(Env& e) {
  std::uniform_int_distribution<int32_t> pick(0, 49);
  for (int64_t C : {int64_t{1}, int64_t{33}, int64_t{300}}) {
    for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{20011}}) {
      const int64_t V = 50;
      const std::string tag = " n=" + std::to_string(n) + " C=" + std::to_string(C);
      std::vector<int32_t> ids(static_cast<size_t>(n));
      for (auto& id : ids) id = pick(e.rng) % (n > 100 ? 50 : 7);  // many repeats
      auto table = e.randn(V * C);
      std::vector<float> out(static_cast<size_t>(n * C));
      cpu::embedding_forward(e.pool, ids.data(), n, table.data(), V, C, out.data());
      Tensor gi = e.up_i(ids), gt = e.up(table), go = e.poisoned(n * C);
      cuda::embedding_forward(e.s, gi.data<int32_t>(), n, gt.data<float>(), V, C, go.data<float>());
      const auto got = e.down(go);
      expect(std::memcmp(got.data(), out.data(), got.size() * 4) == 0, "embedding_forward exact" + tag);

      auto dout = e.randn(n * C), dtable = e.randn(V * C);
      Tensor gdo = e.up(dout), gdt = e.up(dtable), gdt2 = e.up(dtable);
      cpu::embedding_backward(e.pool, ids.data(), n, dout.data(), V, C, dtable.data());
      cuda::embedding_backward(e.s, gi.data<int32_t>(), n, gdo.data<float>(), V, C, gdt.data<float>());
      cuda::embedding_backward(e.s, gi.data<int32_t>(), n, gdo.data<float>(), V, C, gdt2.data<float>());
      const auto b1 = e.down(gdt), b2 = e.down(gdt2);
      near(dtable, b1, kTol, "embedding_backward" + tag);
      expect(std::memcmp(b1.data(), dtable.data(), b1.size() * 4) == 0,
             "embedding_backward bit-identical to the CPU (token order per row)" + tag);
      expect(std::memcmp(b1.data(), b2.data(), b1.size() * 4) == 0, "embedding_backward deterministic" + tag);
    }
  }
}

void test_cross_entropy(Env& e) {
  for (int64_t N : {int64_t{1}, int64_t{67}, int64_t{1000}}) {
    for (int64_t V : {int64_t{1}, int64_t{7}, int64_t{5003}}) {
      for (int mode = 0; mode < 3; ++mode) {  // 0: dlogits separate, 1: in place, 2: loss only
        const std::string tag = " " + sz({N, V}) + (mode == 0 ? " separate" : mode == 1 ? " in place" : " loss only");
        std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(V - 1));
        std::vector<int32_t> t(static_cast<size_t>(N));
        for (size_t i = 0; i < t.size(); ++i) t[i] = i % 5 == 3 ? -100 : pick(e.rng);
        auto x = e.randn(N * V, 3.0f);
        std::vector<float> d(x.size());
        auto xcpu = x;
        float* dcpu = mode == 0 ? d.data() : mode == 1 ? xcpu.data() : nullptr;
        const float loss = cpu::cross_entropy(e.pool, xcpu.data(), t.data(), N, V, -100, dcpu, 0.5f);
        Tensor gx = e.up(x), gt = e.up_i(t), gd = e.poisoned(N * V), gl = e.poisoned(1);
        float* dg = mode == 0 ? gd.data<float>() : mode == 1 ? gx.data<float>() : nullptr;
        cuda::cross_entropy(e.s, gx.data<float>(), gt.data<int32_t>(), N, V, -100, dg, 0.5f, gl.data<float>());
        near({loss}, e.down(gl), kTol, "cross_entropy loss" + tag);
        if (mode == 0) near(d, e.down(gd), kTol, "cross_entropy dlogits" + tag);
        if (mode == 1) near(xcpu, e.down(gx), kTol, "cross_entropy dlogits" + tag);
      }
    }
  }
  // every row ignored: loss 0, dlogits 0
  std::vector<int32_t> t(9, -1);
  auto x = e.randn(9 * 4);
  Tensor gx = e.up(x), gt = e.up_i(t), gd = e.poisoned(9 * 4), gl = e.poisoned(1);
  cuda::cross_entropy(e.s, gx.data<float>(), gt.data<int32_t>(), 9, 4, -1, gd.data<float>(), 1.0f, gl.data<float>());
  const auto l = e.down(gl), d = e.down(gd);
  expect(l[0] == 0.0f && std::all_of(d.begin(), d.end(), [](float v) { return v == 0.0f; }),
         "cross_entropy: every row ignored -> loss 0 and dlogits 0");
}

// NaN placement (issue 13): a NaN logit makes its row's dlogits and the mean loss NaN, and nothing else; a NaN in a
// row of layer norm's input stays in that row (dx too); GELU (both forms) keeps NaN in place. The CPU kernels are checked against
// a double reference in nan_test; rel_err requires NaN exactly where the CPU has one.
void test_nan_placement(Env& e) {
  for (int64_t V : {int64_t{3}, int64_t{7}, int64_t{5003}}) {
    const int64_t N = 5;
    const std::string tag = " " + sz({N, V});
    std::vector<int32_t> t = {0, static_cast<int32_t>(V - 1), 1 % static_cast<int32_t>(V), -100, 0};
    auto x = e.randn(N * V, 3.0f);
    x[static_cast<size_t>(1 * V + V / 2)] = kNaN;
    x[static_cast<size_t>(3 * V)] = kNaN;  // an ignored row: no effect
    std::vector<float> d(x.size());
    const float loss = cpu::cross_entropy(e.pool, x.data(), t.data(), N, V, -100, d.data(), 1.0f);
    expect(std::isnan(loss), "cpu cross_entropy: NaN logit -> NaN loss" + tag);
    Tensor gx = e.up(x), gt = e.up_i(t), gd = e.poisoned(N * V), gl = e.poisoned(1);
    cuda::cross_entropy(e.s, gx.data<float>(), gt.data<int32_t>(), N, V, -100, gd.data<float>(), 1.0f,
                        gl.data<float>());
    near({loss}, e.down(gl), kTol, "cross_entropy NaN loss" + tag);
    near(d, e.down(gd), kTol, "cross_entropy NaN dlogits row" + tag);
  }
  for (int64_t C : {int64_t{7}, int64_t{1000}}) {
    const int64_t rows = 4;
    const std::string tag = " " + sz({rows, C});
    auto x = e.randn(rows * C), w = e.randn(C), b = e.randn(C), dy = e.randn(rows * C);
    x[static_cast<size_t>(2 * C + 1)] = kNaN;
    std::vector<float> y(x.size()), mean(rows), rstd(rows), dx(x.size(), 0.0f);
    cpu::layernorm_forward(e.pool, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C, 1e-5f);
    cpu::layernorm_backward(e.pool, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), nullptr,
                            nullptr, rows, C);
    Tensor gx = e.up(x), gw = e.up(w), gb = e.up(b), gy = e.poisoned(rows * C), gm = e.poisoned(rows),
           gr = e.poisoned(rows), gdy = e.up(dy), gdx = e.up(std::vector<float>(x.size(), 0.0f));
    cuda::layernorm_forward(e.s, gx.data<float>(), gw.data<float>(), gb.data<float>(), gy.data<float>(),
                            gm.data<float>(), gr.data<float>(), rows, C, 1e-5f);
    near(y, e.down(gy), kTol, "layernorm_forward NaN row" + tag);
    cuda::layernorm_backward(e.s, gdy.data<float>(), gx.data<float>(), gw.data<float>(), gm.data<float>(),
                             gr.data<float>(), gdx.data<float>(), nullptr, nullptr, rows, C);
    near(dx, e.down(gdx), kTol, "layernorm_backward NaN row" + tag);
  }
  auto x = e.randn(1001);
  x[500] = kNaN;
  std::vector<float> y(x.size());
  cpu::gelu_forward(e.pool, x.data(), y.data(), 1001);
  Tensor gx = e.up(x), gy = e.poisoned(1001);
  cuda::gelu_forward(e.s, gx.data<float>(), gy.data<float>(), 1001);
  near(y, e.down(gy), kTol, "gelu_forward NaN in place");
  // the erf GELU: NaN in place, gelu(+inf) = +inf, gelu(-inf) = NaN, gelu'(+-inf) = NaN (as PyTorch; nan_test)
  x[0] = std::numeric_limits<float>::infinity();
  x[1000] = -std::numeric_limits<float>::infinity();
  std::vector<float> ye(x.size()), dy = e.randn(1001), dxe = e.randn(1001);
  cpu::gelu_erf_forward(e.pool, x.data(), ye.data(), 1001);
  Tensor gxe = e.up(x), gye = e.poisoned(1001), gdy = e.up(dy), gdxe = e.up(dxe);
  cuda::gelu_erf_forward(e.s, gxe.data<float>(), gye.data<float>(), 1001);
  near(ye, e.down(gye), kTol, "gelu_erf_forward NaN in place, +-inf");
  cpu::gelu_erf_backward(e.pool, x.data(), dy.data(), dxe.data(), 1001);
  cuda::gelu_erf_backward(e.s, gxe.data<float>(), gdy.data<float>(), gdxe.data<float>(), 1001);
  near(dxe, e.down(gdxe), kTol, "gelu_erf_backward NaN in place, +-inf");
  expect(std::isnan(ye[500]) && ye[0] == x[0] && std::isnan(ye[1000]) && std::isnan(dxe[0]) && std::isnan(dxe[1000]) &&
             std::isnan(dxe[500]) && std::isfinite(ye[1]) && std::isfinite(dxe[1]),
         "cpu gelu_erf: NaN in place, gelu(+inf) = +inf, gelu(-inf) = NaN, gelu'(+-inf) = NaN");
}

// ---- optimizers, norms ----------------------------------------------------------------------------------------------

void test_adamw(Env& e) {
  for (int64_t n : {int64_t{1}, int64_t{1000}, int64_t{1000003}}) {
    for (bool masked : {false, true}) {
      const std::string tag = " n=" + std::to_string(n) + (masked ? " with decay mask" : "");
      auto p = e.randn(n), g = e.randn(n, 0.1f), m = e.randn(n, 0.01f), v = e.uniform(n, 0.0f, 0.01f);
      std::vector<float> mask(static_cast<size_t>(n));
      for (size_t i = 0; i < mask.size(); ++i) mask[i] = i % 3 == 0 ? 0.0f : 1.0f;
      Tensor gp = e.up(p), gg = e.up(g), gm = e.up(m), gv = e.up(v), gmask = e.up(mask);
      // The terms' magnitudes, per element: every m is a convex combination of m0 and g, so |m0| + |g| bounds the
      // terms of b1 * m + (1 - b1) * g at every step; p's terms are the old p and its step. (v's terms are >= 0.)
      std::vector<double> m_terms(static_cast<size_t>(n)), p_terms(static_cast<size_t>(n), 0.0);
      for (size_t i = 0; i < m_terms.size(); ++i) m_terms[i] = std::fabs(m[i]) + std::fabs(g[i]);
      cpu::AdamWDesc d;
      d.lr = 3e-3f;
      d.weight_decay = 0.1f;
      for (int64_t step = 1; step <= 3; ++step) {
        d.step = step;
        const std::vector<float> before = p;
        cpu::adamw(e.pool, d, p.data(), g.data(), m.data(), v.data(), masked ? mask.data() : nullptr, n);
        cuda::adamw(e.s, d, gp.data<float>(), gg.data<float>(), gm.data<float>(), gv.data<float>(),
                    masked ? gmask.data<float>() : nullptr, n);
        for (size_t i = 0; i < p_terms.size(); ++i)
          p_terms[i] = std::max(p_terms[i], std::fabs(before[i]) + std::fabs(static_cast<double>(p[i]) - before[i]));
      }
      near_each(p, e.down(gp), p_terms, kTol, "adamw param" + tag);
      near_each(m, e.down(gm), m_terms, kTol, "adamw m" + tag);
      near(v, e.down(gv), kTol, "adamw v" + tag);
      // one more step with the bf16 copy: the copy is f32_to_bf16 of the device's own updated parameters, bit for bit
      Tensor gc = e.up(std::vector<float>(static_cast<size_t>((n + 1) / 2), 0.0f));  // n bf16 elements (+ slack)
      d.step = 4;
      cuda::adamw(e.s, d, gp.data<float>(), gg.data<float>(), gm.data<float>(), gv.data<float>(),
                  masked ? gmask.data<float>() : nullptr, n, static_cast<uint16_t*>(gc.raw()));
      const std::vector<float> pf = e.down(gp), cw = e.down(gc);
      std::vector<uint16_t> c16(static_cast<size_t>(n));
      std::memcpy(c16.data(), cw.data(), c16.size() * 2);
      int64_t bad = 0;
      for (int64_t i = 0; i < n; ++i) bad += c16[static_cast<size_t>(i)] != f32_to_bf16(pf[static_cast<size_t>(i)]);
      expect(bad == 0, "adamw bf16 copy = the updated parameters rounded to bf16" + tag);
    }
  }
}

void test_sgd(Env& e) {
  const int64_t n = 100003;
  struct Case {
    float momentum, dampening, wd;
    bool nesterov;
  };
  for (Case c : {Case{0, 0, 0, false}, Case{0.9f, 0, 1e-2f, false}, Case{0.9f, 0.1f, 0, false},
                 Case{0.9f, 0, 1e-3f, true}}) {
    const std::string tag = " momentum=" + std::to_string(c.momentum) + " dampening=" + std::to_string(c.dampening) +
                            " wd=" + std::to_string(c.wd) + (c.nesterov ? " nesterov" : "");
    auto p = e.randn(n), g = e.randn(n);
    Tensor gp = e.up(p), gg = e.up(g), gb = e.poisoned(n);  // the first step must overwrite the buffer
    std::vector<float> b(static_cast<size_t>(n), kNaN);
    cpu::SgdDesc d;
    d.lr = 0.05f;
    d.momentum = c.momentum;
    d.dampening = c.dampening;
    d.weight_decay = c.wd;
    d.nesterov = c.nesterov;
    for (int step = 0; step < 3; ++step) {
      d.first_step = step == 0;
      cpu::sgd(e.pool, d, p.data(), g.data(), c.momentum > 0 ? b.data() : nullptr, n);
      cuda::sgd(e.s, d, gp.data<float>(), gg.data<float>(), c.momentum > 0 ? gb.data<float>() : nullptr, n);
    }
    near(p, e.down(gp), kTol, "sgd param" + tag);
    if (c.momentum > 0) near(b, e.down(gb), kTol, "sgd buffer" + tag);
  }
}

void test_norms(Env& e) {
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{4095}, int64_t{4097}, int64_t{1000003}}) {
    const std::string tag = " n=" + std::to_string(n);
    auto x = e.randn(n, 0.3f);
    const double ref = cpu::sum_squares(e.pool, x.data(), n);
    Tensor gx = e.up(x), out = e.poisoned(2), out2 = e.poisoned(2);  // 2 floats: 1 double
    cuda::sum_squares(e.s, gx.data<float>(), n, static_cast<double*>(out.raw()));
    cuda::sum_squares(e.s, gx.data<float>(), n, static_cast<double*>(out2.raw()));
    double got = 0, got2 = 0;
    e.gpu.copy_to_host(&got, out);
    e.gpu.copy_to_host(&got2, out2);
    expect(std::fabs(got - ref) <= 1e-12 * std::max(1.0, ref) && !std::isnan(got),
           "sum_squares (double)" + tag + " " + std::to_string(got) + " vs " + std::to_string(ref));
    expect(std::memcmp(&got, &got2, sizeof got) == 0, "sum_squares deterministic" + tag);

    // scale_inplace
    auto y = x;
    cpu::scale_inplace(e.pool, y.data(), n, -0.37f);
    Tensor gy = e.up(x);
    cuda::scale_inplace(e.s, gy.data<float>(), n, -0.37f);
    near(y, e.down(gy), kTol, "scale_inplace" + tag);

    // clip_by_norm, as the CPU binding computes it: clipping (max_norm below the norm) and not clipping
    for (float max_norm : {0.5f, 1e6f}) {
      const double norm = std::sqrt(ref);
      const double coef = static_cast<double>(max_norm) / (norm + 1e-6);
      auto c = x;
      if (coef < 1.0) cpu::scale_inplace(e.pool, c.data(), n, static_cast<float>(coef));
      Tensor gc = e.up(x), gn = e.poisoned(1);
      cuda::clip_by_norm(e.s, gc.data<float>(), n, static_cast<const double*>(out.raw()), max_norm, 1e-6f,
                         gn.data<float>());
      near(c, e.down(gc), kTol, "clip_by_norm values max_norm=" + std::to_string(max_norm) + tag);
      near({static_cast<float>(norm)}, e.down(gn), kTol, "clip_by_norm norm" + tag);
    }
  }
}

void test_persist_l2(Env& e) {
  auto x = e.randn(1 << 20);
  Tensor gx = e.up(x);
  bool ok = true;
  std::string why;
  cuda::L2State l2;  // the test's own state (a backend owns one per device)
  try {
    cuda::persist_l2(e.s, l2, gx.raw(), static_cast<int64_t>(gx.nbytes()));
    // work on the stream under the window gives the same results
    auto y = x;
    cpu::scale_inplace(e.pool, y.data(), static_cast<int64_t>(y.size()), 2.0f);
    cuda::scale_inplace(e.s, gx.data<float>(), gx.numel(), 2.0f);
    const double err = rel_err(y, e.down(gx));
    ok = err == 0.0;
    cuda::persist_l2(e.s, l2, nullptr, 0);
    e.down(gx);
  } catch (const std::exception& ex) {
    ok = false;
    why = ex.what();
  }
  expect(ok, "persist_l2: set and end a window, kernels unaffected " + why);
#ifdef SF_CUDA_EMU
  // The CPU lane records what reaches the runtime: the window is exactly the bytes asked for (within the device's
  // maximum), misses stay normal, the set-aside is set once, ending demotes the same bytes, and a refused call (MPS,
  // MIG) neither throws nor leaves a window.
  {
    cuda::L2State st;
    const int64_t bytes = 3 << 20;
    cuda::persist_l2(e.s, st, gx.raw(), bytes);
    const cudaAccessPolicyWindow w = sfemu::stream_window(e.s);
    expect(w.base_ptr == gx.raw() && w.num_bytes == static_cast<size_t>(bytes) &&
               w.hitProp == cudaAccessPropertyPersisting && w.missProp == cudaAccessPropertyNormal &&
               w.hitRatio == 1.0f,
           "persist_l2 (CPU lane): the window covers exactly the bytes asked for, missProp normal, hit ratio 1");
    const size_t carve = sfemu::persisting_limit();
    sfemu::fail_next("cudaDeviceSetLimit", cudaErrorNotSupported);  // a second call must not set it again
    cuda::persist_l2(e.s, st, static_cast<const char*>(gx.raw()) + 4096, bytes);
    expect(cudaGetLastError() == cudaSuccess && sfemu::persisting_limit() == carve && carve > 0 &&
               sfemu::stream_window(e.s).base_ptr == static_cast<const char*>(gx.raw()) + 4096,
           "persist_l2 (CPU lane): the set-aside is set once; a later window does not touch it");
    cuda::persist_l2(e.s, st, nullptr, 0);
    const cudaAccessPolicyWindow d = sfemu::stream_window(e.s);
    expect(d.num_bytes == static_cast<size_t>(bytes) && d.hitProp == cudaAccessPropertyNormal && sfemu::resets() == 0,
           "persist_l2 (CPU lane): ending demotes the same bytes on the stream (no cudaCtxResetPersistingL2Cache)");
    cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, 0);  // (consumes the injection above if it is still pending)
    cudaDeviceSetLimit(cudaLimitPersistingL2CacheSize, 0);  // no set-aside in effect: a refusal leaves none
    cudaGetLastError();
    cuda::L2State mps;
    sfemu::fail_next("cudaDeviceSetLimit", cudaErrorNotSupported);
    bool threw = false;
    try {
      cuda::persist_l2(e.s, mps, gx.raw(), bytes);
    } catch (const std::exception&) {
      threw = true;
    }
    expect(!threw && cudaGetLastError() == cudaSuccess && !mps.reason.empty(),
           "persist_l2 (CPU lane): a refused set-aside (MPS) does not throw, leaves no error and says why: " +
               mps.reason);
  }
#endif
}

}  // namespace

int main() {
  Context ctx;
  const CudaInfo& info = ctx.cuda_info();
  if (!info.available) {
    std::printf("SKIP: no usable CUDA device: %s\n", info.reason.c_str());
    return 77;
  }
  Backend& gpu = ctx.backend(Device{DeviceType::CUDA, 0});
  gpu.make_current();
  // Fresh random inputs on every run; SF_TEST_SEED=<seed printed by a failing run> replays that run's inputs.
  const char* fixed = std::getenv("SF_TEST_SEED");
  const uint64_t seed = fixed ? std::strtoull(fixed, nullptr, 10) : std::random_device{}();
  std::printf("# seed %llu, device %s\n", static_cast<unsigned long long>(seed), info.devices[0].name.c_str());
  Env e{ctx, gpu, static_cast<cuda::Stream>(gpu.native_stream()), ctx.pool(), std::mt19937_64(seed)};
  try {
    test_layernorm(e);
    test_gelu(e);
    test_gelu_erf(e);
    test_tanh(e);
    test_softmax(e);
    test_axpby(e);
    test_dropout(e);
    test_permute(e);
    test_kv_append(e);
    test_check_ids(e);
    test_embedding(e);
    test_cross_entropy(e);
    test_nan_placement(e);
    test_adamw(e);
    test_sgd(e);
    test_norms(e);
    test_persist_l2(e);
  } catch (const std::exception& ex) {
    expect(false, std::string("unexpected exception: ") + ex.what());
  }
  std::printf("%s (seed %llu)\n", failures ? "FAILED" : "all CUDA kernel checks passed",
              static_cast<unsigned long long>(seed));
  return failures ? 1 : 0;
}

#else  // built without CUDA

int main() {
  std::printf("SKIP: this binary was built without CUDA (SHAREDFORMER_CUDA=OFF or no nvcc): no CUDA kernel to test\n");
  return 77;
}

#endif
