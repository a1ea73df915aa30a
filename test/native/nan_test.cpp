// nan_test.cpp — NaN and Inf placement in the CPU kernels: a non-finite input must give a non-finite output exactly
// where IEEE arithmetic over the entries each output can see puts one, and nowhere else. Every case is checked
// element by element against a straightforward double-precision reference written here, that reads only the visible
// entries (no max subtraction, no masking by multiplication): a NaN reference element must be NaN in the kernel, an
// infinite one the same infinity, a finite one finite and close. Attention forward and backward (causal, key_lengths
// padding, GQA; a NaN in one key, one query, the last value row, one dout row; an Inf in masked values and keys),
// cross-entropy, softmax, layer norm, GELU (tanh and erf forms), the sum of squares and bias_grad. The kernels run the
// widest ISA variant of the CPU: run with SHAREDFORMER_ISA=avx2 and =portable too to cover the others.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "core/context.h"
#include "cpu/kernels.h"
#include "ref_util.h"

using namespace sf;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
const float kNaNf = std::numeric_limits<float>::quiet_NaN();
const float kInff = std::numeric_limits<float>::infinity();

using sftest::randvec;

// Element-wise placement check: NaN where the reference is NaN, the same infinity where it is infinite, finite and
// within tol (relative to 1 + |ref|) elsewhere. Reports the first few mismatches; returns their count.
int placement_errors(const char* what, const std::vector<float>& got, const std::vector<double>& ref, double tol,
                     int64_t row = 0) {
  int bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double a = got[i], b = ref[i];
    bool ok;
    if (std::isnan(b))
      ok = std::isnan(a);
    else if (std::isinf(b))
      ok = a == b;
    else
      ok = std::isfinite(a) && std::fabs(a - b) <= tol * (1.0 + std::fabs(b));
    if (!ok) {
      if (bad < 4)
        std::fprintf(stderr, "  %s[%zu] (row %lld): got %g, want %g\n", what, i,
                     static_cast<long long>(row ? static_cast<int64_t>(i) / row : 0), a, b);
      ++bad;
    }
  }
  return bad;
}

// ---- attention --------------------------------------------------------------------------------------------------
struct Attn {
  int64_t B, Hq, Hkv, Tq, Tk, D;
  bool causal;
  std::vector<int32_t> lens;  // empty: no key_lengths
  cpu::AttentionDesc desc() const {
    cpu::AttentionDesc d;
    d.B = B, d.Hq = Hq, d.Hkv = Hkv, d.Tq = Tq, d.Tk = Tk, d.D = D;
    d.causal = causal;
    d.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
    d.key_lengths = lens.empty() ? nullptr : lens.data();
    return d;
  }
};

using sftest::sees;

// o = sum_j exp(s_j) v_j / sum_j exp(s_j), lse = log sum_j exp(s_j) over the visible keys only, in double (scores
// here are small: no max subtraction needed, so a NaN or Inf goes exactly where IEEE arithmetic takes it).
void ref_forward(const cpu::AttentionDesc& d, const std::vector<float>& q, const std::vector<float>& k,
                 const std::vector<float>& v, std::vector<double>& o, std::vector<double>& lse) {
  const int64_t D = d.D, G = d.Hq / d.Hkv;
  o.assign(static_cast<size_t>(d.B * d.Hq * d.Tq * D), 0.0);
  lse.assign(static_cast<size_t>(d.B * d.Hq * d.Tq), -kInf);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.Hq; ++h) {
      const int64_t bh = b * d.Hq + h, bk = b * d.Hkv + h / G;
      for (int64_t i = 0; i < d.Tq; ++i) {
        double sum = 0;
        bool any = false;
        std::vector<double> acc(static_cast<size_t>(D), 0.0);
        for (int64_t j = 0; j < d.Tk; ++j) {
          if (!sees(d, b, i, j)) continue;
          any = true;
          double x = 0;
          for (int64_t c = 0; c < D; ++c) x += double(q[(bh * d.Tq + i) * D + c]) * k[(bk * d.Tk + j) * D + c];
          const double p = std::exp(x * d.scale);
          sum += p;
          for (int64_t c = 0; c < D; ++c) acc[c] += p * v[(bk * d.Tk + j) * D + c];
        }
        if (!any) continue;  // sees nothing: o = 0, lse = -inf
        lse[bh * d.Tq + i] = std::log(sum);
        for (int64_t c = 0; c < D; ++c) o[(bh * d.Tq + i) * D + c] = acc[c] / sum;
      }
    }
}

// dq, dk, dv over the visible (query, key) pairs only, from the textbook formulas (p from the reference forward).
void ref_backward(const cpu::AttentionDesc& d, const std::vector<float>& q, const std::vector<float>& k,
                  const std::vector<float>& v, const std::vector<float>& dout, std::vector<double>& dq,
                  std::vector<double>& dk, std::vector<double>& dv) {
  const int64_t D = d.D, G = d.Hq / d.Hkv;
  std::vector<double> o, lse;
  ref_forward(d, q, k, v, o, lse);
  dq.assign(q.size(), 0.0);
  dk.assign(k.size(), 0.0);
  dv.assign(v.size(), 0.0);
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.Hq; ++h) {
      const int64_t bh = b * d.Hq + h, bk = b * d.Hkv + h / G;
      for (int64_t i = 0; i < d.Tq; ++i) {
        const float* qi = &q[(bh * d.Tq + i) * D];
        const float* gi = &dout[(bh * d.Tq + i) * D];
        double delta = 0;  // rowsum(dO * O), as the kernels compute it
        for (int64_t c = 0; c < D; ++c) delta += gi[c] * o[(bh * d.Tq + i) * D + c];
        for (int64_t j = 0; j < d.Tk; ++j) {
          if (!sees(d, b, i, j)) continue;
          double x = 0, y = 0;
          for (int64_t c = 0; c < D; ++c) {
            x += double(qi[c]) * k[(bk * d.Tk + j) * D + c];
            y += double(gi[c]) * v[(bk * d.Tk + j) * D + c];
          }
          const double p = std::exp(x * d.scale - lse[bh * d.Tq + i]);
          const double ds = p * (y - delta) * d.scale;
          for (int64_t c = 0; c < D; ++c) {
            dq[(bh * d.Tq + i) * D + c] += ds * k[(bk * d.Tk + j) * D + c];
            dk[(bk * d.Tk + j) * D + c] += ds * qi[c];
            dv[(bk * d.Tk + j) * D + c] += p * gi[c];
          }
        }
      }
    }
}

struct AttnIn {
  std::vector<float> q, k, v, dout;
};
AttnIn attn_inputs(const Attn& s, std::mt19937& g) {
  const size_t nq = static_cast<size_t>(s.B * s.Hq * s.Tq * s.D), nk = static_cast<size_t>(s.B * s.Hkv * s.Tk * s.D);
  return {randvec(nq, g), randvec(nk, g), randvec(nk, g), randvec(nq, g)};
}

// Runs the forward (and, with grads, the backward with 1 thread = fused schedule and 8 = two-pass) and checks every
// output's placement against the reference. Returns the number of misplaced elements.
int attention_case(Context& ctx, const char* name, const Attn& s, const AttnIn& in, bool grads) {
  const cpu::AttentionDesc d = s.desc();
  std::vector<double> ro, rl;
  ref_forward(d, in.q, in.k, in.v, ro, rl);
  int bad = 0;
  const int restore = ctx.pool().threads();
  for (int threads : {1, 8}) {
    ctx.pool().set_threads(threads);
    std::vector<float> o(in.q.size(), kNaNf), lse(static_cast<size_t>(d.B * d.Hq * d.Tq), kNaNf);
    cpu::attention_forward(ctx.pool(), d, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data());
    const std::string n = name;
    bad += placement_errors((n + " o").c_str(), o, ro, 2e-5, d.D);
    bad += placement_errors((n + " lse").c_str(), lse, rl, 2e-5, 1);
    if (!grads) continue;
    std::vector<double> rdq, rdk, rdv;
    ref_backward(d, in.q, in.k, in.v, in.dout, rdq, rdk, rdv);
    std::vector<float> dq(in.q.size(), 0.0f), dk(in.k.size(), 0.0f), dv(in.v.size(), 0.0f);
    cpu::attention_backward(ctx.pool(), d, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data(),
                            in.dout.data(), dq.data(), dk.data(), dv.data());
    bad += placement_errors((n + " dq").c_str(), dq, rdq, 1e-4, d.D);
    bad += placement_errors((n + " dk").c_str(), dk, rdk, 1e-4, d.D);
    bad += placement_errors((n + " dv").c_str(), dv, rdv, 1e-4, d.D);
  }
  ctx.pool().set_threads(restore);
  if (bad) std::fprintf(stderr, "  %s: %d misplaced elements\n", name, bad);
  return bad;
}

float& at(std::vector<float>& x, int64_t T, int64_t D, int64_t bh, int64_t t, int64_t c) {
  return x[static_cast<size_t>((bh * T + t) * D + c)];
}

}  // namespace

TEST(attention_nan_in_a_key_reaches_exactly_the_queries_that_see_it) {
  Context ctx;
  std::mt19937 g(11);
  for (bool causal : {true, false}) {
    const Attn s{1, 2, 1, 80, 80, 16, causal, {}};  // GQA: both query heads read kv head 0
    AttnIn in = attn_inputs(s, g);
    at(in.k, s.Tk, s.D, 0, 37, 5) = kNaNf;
    CHECK(attention_case(ctx, causal ? "key NaN causal" : "key NaN", s, in, true) == 0);
  }
  // the NaN key beyond key_lengths of its batch element: nobody sees it
  const Attn s{2, 2, 2, 70, 70, 8, false, {40, 70}};
  AttnIn in = attn_inputs(s, g);
  at(in.k, s.Tk, s.D, 0, 55, 1) = kNaNf;
  at(in.k, s.Tk, s.D, 3, 10, 1) = kNaNf;
  CHECK(attention_case(ctx, "key NaN padding", s, in, true) == 0);
}

TEST(attention_nan_in_a_query_stays_in_its_row) {
  Context ctx;
  std::mt19937 g(12);
  for (bool causal : {true, false}) {
    const Attn s{1, 2, 1, 80, 80, 16, causal, {}};
    for (int64_t row : {0, 10, 79}) {
      AttnIn in = attn_inputs(s, g);
      at(in.q, s.Tq, s.D, 1, row, 3) = kNaNf;
      CHECK(attention_case(ctx, causal ? "query NaN causal" : "query NaN", s, in, true) == 0);
    }
  }
}

TEST(attention_nan_or_inf_in_the_last_value_row_reaches_only_the_last_query_when_causal) {
  Context ctx;
  std::mt19937 g(13);
  for (float bad : {kNaNf, kInff, -kInff}) {
    for (int64_t T : {80, 64, 7, 130}) {
      const Attn s{1, 2, 1, T, T, 16, true, {}};
      AttnIn in = attn_inputs(s, g);
      at(in.v, s.Tk, s.D, 0, T - 1, 3) = bad;  // only o[T - 1][3] sees it (lse stays finite)
      CHECK(attention_case(ctx, "last value row", s, in, std::isnan(bad)) == 0);
    }
  }
  // a KV-cache shape: Tq < Tk, causal aligned at the end
  const Attn s{1, 2, 2, 20, 90, 8, true, {}};
  AttnIn in = attn_inputs(s, g);
  at(in.v, s.Tk, s.D, 1, 89, 0) = kNaNf;
  at(in.k, s.Tk, s.D, 0, 88, 0) = kNaNf;
  CHECK(attention_case(ctx, "kv cache", s, in, true) == 0);
}

TEST(attention_inf_in_masked_values_and_keys_changes_nothing) {
  Context ctx;
  std::mt19937 g(14);
  {  // padding: keys beyond key_lengths hold Inf and NaN
    const Attn s{3, 2, 1, 70, 70, 16, false, {33, 70, 1}};
    AttnIn in = attn_inputs(s, g);
    for (int64_t c = 0; c < s.D; ++c) {
      at(in.v, s.Tk, s.D, 0, 40, c) = kInff;
      at(in.v, s.Tk, s.D, 0, 69, c) = -kInff;
      at(in.k, s.Tk, s.D, 0, 50, c) = kInff;
      at(in.v, s.Tk, s.D, 2, 1, c) = kNaNf;
      at(in.k, s.Tk, s.D, 2, 2, c) = kNaNf;
    }
    CHECK(attention_case(ctx, "padding Inf", s, in, true) == 0);
  }
  {  // causal and padding together: future keys and padded keys non-finite
    const Attn s{2, 4, 2, 100, 100, 8, true, {60, 100}};
    AttnIn in = attn_inputs(s, g);
    for (int64_t c = 0; c < s.D; ++c) {
      at(in.v, s.Tk, s.D, 0, 70, c) = kInff;   // padded
      at(in.k, s.Tk, s.D, 1, 65, c) = kInff;   // padded
      at(in.v, s.Tk, s.D, 2, 99, c) = kNaNf;   // only query 99 sees it
      at(in.k, s.Tk, s.D, 3, 98, c) = kNaNf;   // queries 98, 99 see it
    }
    CHECK(attention_case(ctx, "causal padding Inf", s, in, true) == 0);
  }
}

TEST(attention_backward_nan_in_dout_reaches_only_the_keys_its_query_sees) {
  Context ctx;
  std::mt19937 g(15);
  for (int64_t T : {80, 200}) {
    const Attn s{1, 2, 1, T, T, 16, true, {}};
    AttnIn in = attn_inputs(s, g);
    at(in.dout, s.Tq, s.D, 0, 0, 2) = kNaNf;  // query 0 sees key 0 only
    CHECK(attention_case(ctx, "dout NaN", s, in, true) == 0);
  }
  const Attn s{2, 2, 2, 70, 70, 8, false, {30, 70}};  // padding: query rows of batch 0 see 30 keys
  AttnIn in = attn_inputs(s, g);
  at(in.dout, s.Tq, s.D, 1, 5, 0) = kNaNf;
  CHECK(attention_case(ctx, "dout NaN padding", s, in, true) == 0);
}

// ---- cross-entropy ----------------------------------------------------------------------------------------------
TEST(cross_entropy_nan_logit_gives_nan_loss_and_nan_only_in_its_row) {
  Context ctx;
  {  // the report's case
    std::vector<float> x = {1.0f, kNaNf, 2.0f};
    std::vector<int32_t> t = {2};
    std::vector<float> d(3, 0.0f);
    const float loss = cpu::cross_entropy(ctx.pool(), x.data(), t.data(), 1, 3, -100, d.data(), 1.0f);
    CHECK(std::isnan(loss));
    for (float v : d) CHECK(std::isnan(v));
  }
  std::mt19937 g(16);
  for (int64_t V : {3, 5, 16, 37, 100}) {
    for (int64_t pos : {int64_t{0}, V / 2, V - 1}) {
      const int64_t N = 4;
      auto x = randvec(static_cast<size_t>(N * V), g, -3.0f, 3.0f);
      x[static_cast<size_t>(1 * V + pos)] = kNaNf;
      std::vector<int32_t> t = {0, static_cast<int32_t>((pos + 1) % V), 1, -100};
      std::vector<float> d(x.size(), 7.0f);
      const float loss = cpu::cross_entropy(ctx.pool(), x.data(), t.data(), N, V, -100, d.data(), 1.0f);
      CHECK(std::isnan(loss));
      for (int64_t r = 0; r < N; ++r) {
        // reference: softmax over the row in double, minus one at the target, over 3 counted rows
        double sum = 0;
        for (int64_t j = 0; j < V; ++j) sum += std::exp(double(x[r * V + j]));
        std::vector<double> ref(static_cast<size_t>(V), 0.0);
        for (int64_t j = 0; j < V && t[r] != -100; ++j)
          ref[j] = (std::exp(double(x[r * V + j])) / sum - (j == t[r] ? 1.0 : 0.0)) / 3.0;
        std::vector<float> got(d.begin() + r * V, d.begin() + (r + 1) * V);
        CHECK(placement_errors("dlogits", got, ref, 1e-5) == 0);
      }
      // without dlogits: the loss alone
      CHECK(std::isnan(cpu::cross_entropy(ctx.pool(), x.data(), t.data(), N, V, -100, nullptr, 1.0f)));
      // the NaN row ignored: a finite loss
      t[1] = -100;
      CHECK(std::isfinite(cpu::cross_entropy(ctx.pool(), x.data(), t.data(), N, V, -100, nullptr, 1.0f)));
    }
  }
}

// ---- softmax, layer norm, GELU, sum of squares ------------------------------------------------------------------
TEST(softmax_nan_stays_in_its_row) {
  Context ctx;
  std::mt19937 g(17);
  for (int64_t n : {1, 3, 16, 37, 100}) {
    for (int64_t pos : {int64_t{0}, n / 2, n - 1}) {
      const int64_t rows = 3;
      auto x = randvec(static_cast<size_t>(rows * n), g, -3.0f, 3.0f);
      x[static_cast<size_t>(n + pos)] = kNaNf;
      std::vector<float> y(x.size(), 7.0f);
      cpu::softmax_forward(ctx.pool(), x.data(), y.data(), rows, n);
      std::vector<double> ref(x.size());
      for (int64_t r = 0; r < rows; ++r) {
        double s = 0;
        for (int64_t j = 0; j < n; ++j) s += std::exp(double(x[r * n + j]));
        for (int64_t j = 0; j < n; ++j) ref[r * n + j] = std::exp(double(x[r * n + j])) / s;
      }
      CHECK(placement_errors("softmax", y, ref, 1e-5, n) == 0);
      // backward: NaN in dy of row 2 only
      auto dy = randvec(x.size(), g);
      dy[static_cast<size_t>(2 * n + pos)] = kNaNf;
      std::vector<float> dx(x.size(), 0.0f);
      cpu::softmax_backward(ctx.pool(), y.data(), dy.data(), dx.data(), rows, n);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < n; ++j) CHECK(std::isnan(dx[r * n + j]) == (r != 0));
    }
  }
}

TEST(layernorm_nan_stays_in_its_row) {
  Context ctx;
  std::mt19937 g(18);
  for (int64_t C : {1, 5, 16, 37}) {
    const int64_t rows = 3;
    auto x = randvec(static_cast<size_t>(rows * C), g);
    x[static_cast<size_t>(C + C / 2)] = kNaNf;
    auto w = randvec(static_cast<size_t>(C), g), b = randvec(static_cast<size_t>(C), g);
    std::vector<float> y(x.size()), mean(rows), rstd(rows);
    cpu::layernorm_forward(ctx.pool(), x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C,
                           1e-5f);
    for (int64_t r = 0; r < rows; ++r) {
      double m = 0, v = 0;
      for (int64_t j = 0; j < C; ++j) m += x[r * C + j];
      m /= double(C);
      for (int64_t j = 0; j < C; ++j) v += (x[r * C + j] - m) * (x[r * C + j] - m);
      const double rs = 1.0 / std::sqrt(v / double(C) + 1e-5);
      std::vector<double> ref(static_cast<size_t>(C));
      for (int64_t j = 0; j < C; ++j) ref[j] = (x[r * C + j] - m) * rs * w[j] + b[j];
      CHECK(placement_errors("layernorm", std::vector<float>(y.begin() + r * C, y.begin() + (r + 1) * C), ref,
                             1e-4) == 0);
    }
    // backward: the NaN row's dx is NaN, the others finite; dw, db NaN (they sum over every row)
    auto dy = randvec(x.size(), g);
    std::vector<float> dx(x.size(), 0.0f), dw(static_cast<size_t>(C), 0.0f), db(static_cast<size_t>(C), 0.0f);
    cpu::layernorm_backward(ctx.pool(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(),
                            dw.data(), db.data(), rows, C);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < C; ++j) CHECK(std::isnan(dx[r * C + j]) == (r == 1));
    for (int64_t j = 0; j < C; ++j) CHECK(std::isnan(dw[j]) && std::isfinite(db[j]));
  }
}

TEST(gelu_nan_and_inf_stay_in_place) {
  Context ctx;
  for (int64_t n : {1, 7, 16, 37, 100}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) x[i] = 0.1f * static_cast<float>(i % 13) - 0.6f;
    x[static_cast<size_t>(n / 2)] = kNaNf;
    if (n > 2) x[static_cast<size_t>(n - 1)] = kInff;
    std::vector<float> y(x.size(), 7.0f), dx(x.size(), 0.0f), dy(x.size(), 1.0f);
    cpu::gelu_forward(ctx.pool(), x.data(), y.data(), n);
    cpu::gelu_backward(ctx.pool(), x.data(), dy.data(), dx.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const bool nan = i == n / 2, inf = n > 2 && i == n - 1;
      CHECK(std::isnan(y[i]) == nan);
      if (!inf) CHECK(std::isnan(dx[i]) == nan);  // gelu'(inf) is 1 + inf * 0 by the formula: not checked
      if (inf) CHECK(y[i] == kInff);
      if (!nan && !inf) CHECK(std::isfinite(y[i]) && std::isfinite(dx[i]));
    }
  }
}

// The exact (erf) GELU follows IEEE arithmetic on x Phi(x) and Phi(x) + x phi(x), as PyTorch does: NaN in -> NaN out
// at that element only; gelu(+inf) = +inf, gelu(-inf) = -inf * 0 = NaN, gelu'(+-inf) = +-inf * 0 = NaN.
TEST(gelu_erf_nan_and_inf_stay_in_place) {
  Context ctx;
  for (int64_t n : {1, 7, 16, 37, 100}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) x[i] = 0.7f * static_cast<float>(i % 13) - 4.2f;
    x[static_cast<size_t>(n / 2)] = kNaNf;
    if (n > 2) x[static_cast<size_t>(n - 1)] = kInff;
    if (n > 3) x[0] = -kInff;
    std::vector<float> y(x.size(), 7.0f), dx(x.size(), 0.0f), dy(x.size(), 1.0f);
    cpu::gelu_erf_forward(ctx.pool(), x.data(), y.data(), n);
    cpu::gelu_erf_backward(ctx.pool(), x.data(), dy.data(), dx.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      const bool nan = i == n / 2, inf = n > 2 && i == n - 1, ninf = n > 3 && i == 0;
      CHECK(std::isnan(y[i]) == (nan || ninf));
      CHECK(std::isnan(dx[i]) == (nan || inf || ninf));
      if (inf) CHECK(y[i] == kInff);
      if (!nan && !inf && !ninf) CHECK(std::isfinite(y[i]) && std::isfinite(dx[i]));
    }
  }
}

TEST(sum_of_squares_and_bias_grad_propagate_nan) {
  Context ctx;
  for (int64_t n : {1, 7, 5000, 20000}) {
    std::vector<float> x(static_cast<size_t>(n), 0.5f);
    CHECK(std::isfinite(cpu::sum_squares(ctx.pool(), x.data(), n)));
    x[static_cast<size_t>(n - 1)] = kNaNf;
    CHECK(std::isnan(cpu::sum_squares(ctx.pool(), x.data(), n)));
    x[static_cast<size_t>(n - 1)] = kInff;
    CHECK(std::isinf(cpu::sum_squares(ctx.pool(), x.data(), n)));
  }
  const int64_t rows = 50, n = 300;
  std::vector<float> dy(static_cast<size_t>(rows * n), 0.25f), db(static_cast<size_t>(n), 0.0f);
  dy[static_cast<size_t>(17 * n + 123)] = kNaNf;
  cpu::bias_grad(ctx.pool(), dy.data(), rows, n, db.data());
  for (int64_t j = 0; j < n; ++j) CHECK(std::isnan(db[j]) == (j == 123));
}

TEST_MAIN()
