// attention_test.cpp — the fused attention kernels against naive double-precision attention that materialises the
// whole score matrix: odd sequence lengths (1, 7, 33, 129), Tq != Tk with causal masks aligned at the end, GQA and MQA,
// key lengths including 0 and Tk, lse; the backward against central finite differences of a double forward on tiny
// shapes (with += semantics proved) and against a naive double backward on shapes that span several tiles;
// determinism across thread counts; key lengths out of range throw before anything is written.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "check.h"
#include "core/context.h"
#include "core/error.h"
#include "cpu/kernels.h"
#include "ref_util.h"

using namespace sf;

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Shape5 {
  int64_t B, Hq, Hkv, Tq, Tk, D;
  bool causal;
  std::vector<int32_t> lens;  // empty: no key_lengths
  float scale;                // 0: 1 / sqrt(D)
};

cpu::AttentionDesc desc_of(const Shape5& s) {
  cpu::AttentionDesc d;
  d.B = s.B;
  d.Hq = s.Hq;
  d.Hkv = s.Hkv;
  d.Tq = s.Tq;
  d.Tk = s.Tk;
  d.D = s.D;
  d.causal = s.causal;
  d.scale = s.scale > 0 ? s.scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(s.D)));
  d.key_lengths = s.lens.empty() ? nullptr : s.lens.data();
  return d;
}

using sftest::randvec;
std::vector<float> poisoned(size_t n) {
  std::vector<float> v(n);
  if (n > 0) std::memset(v.data(), 0xff, n * sizeof(float));  // NaN: an unwritten element fails every check (memset(nullptr) is UB)
  return v;
}
template <typename T>
std::vector<double> to_d(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

using sftest::sees;

// Naive attention in double: the full (Tq, Tk) score matrix of every (b, h). o (B, Hq, Tq, D), lse (B, Hq, Tq).
void ref_forward(const cpu::AttentionDesc& d, const std::vector<double>& q, const std::vector<double>& k,
                 const std::vector<double>& v, std::vector<double>& o, std::vector<double>& lse) {
  const int64_t D = d.D, G = d.Hq / d.Hkv;
  o.assign(static_cast<size_t>(d.B * d.Hq * d.Tq * D), 0.0);
  lse.assign(static_cast<size_t>(d.B * d.Hq * d.Tq), -kInf);
  std::vector<double> s(static_cast<size_t>(d.Tk));
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.Hq; ++h) {
      const int64_t bh = b * d.Hq + h, bk = b * d.Hkv + h / G;
      for (int64_t i = 0; i < d.Tq; ++i) {
        double mx = -kInf;
        for (int64_t j = 0; j < d.Tk; ++j) {
          double x = 0;
          for (int64_t c = 0; c < D; ++c) x += q[(bh * d.Tq + i) * D + c] * k[(bk * d.Tk + j) * D + c];
          s[j] = sees(d, b, i, j) ? x * d.scale : -kInf;
          mx = std::max(mx, s[j]);
        }
        if (mx == -kInf) continue;  // sees nothing: o = 0, lse = -inf
        double sum = 0;
        for (int64_t j = 0; j < d.Tk; ++j) sum += std::exp(s[j] - mx);
        lse[bh * d.Tq + i] = mx + std::log(sum);
        for (int64_t j = 0; j < d.Tk; ++j) {
          const double p = std::exp(s[j] - mx) / sum;
          for (int64_t c = 0; c < D; ++c) o[(bh * d.Tq + i) * D + c] += p * v[(bk * d.Tk + j) * D + c];
        }
      }
    }
}

// Naive backward in double (dq, dk, dv written, not accumulated), from the textbook formulas.
void ref_backward(const cpu::AttentionDesc& d, const std::vector<double>& q, const std::vector<double>& k,
                  const std::vector<double>& v, const std::vector<double>& dout, std::vector<double>& dq,
                  std::vector<double>& dk, std::vector<double>& dv) {
  const int64_t D = d.D, G = d.Hq / d.Hkv;
  std::vector<double> o, lse;
  ref_forward(d, q, k, v, o, lse);
  dq.assign(q.size(), 0.0);
  dk.assign(k.size(), 0.0);
  dv.assign(v.size(), 0.0);
  std::vector<double> p(static_cast<size_t>(d.Tk)), dp(static_cast<size_t>(d.Tk));
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t h = 0; h < d.Hq; ++h) {
      const int64_t bh = b * d.Hq + h, bk = b * d.Hkv + h / G;
      for (int64_t i = 0; i < d.Tq; ++i) {
        const double L = lse[bh * d.Tq + i];
        if (L == -kInf) continue;
        const double* qi = &q[(bh * d.Tq + i) * D];
        const double* gi = &dout[(bh * d.Tq + i) * D];
        double delta = 0;
        for (int64_t j = 0; j < d.Tk; ++j) {
          double x = 0, y = 0;
          for (int64_t c = 0; c < D; ++c) {
            x += qi[c] * k[(bk * d.Tk + j) * D + c];
            y += gi[c] * v[(bk * d.Tk + j) * D + c];
          }
          p[j] = sees(d, b, i, j) ? std::exp(x * d.scale - L) : 0.0;
          dp[j] = y;
          delta += p[j] * y;
        }
        for (int64_t j = 0; j < d.Tk; ++j) {
          const double ds = p[j] * (dp[j] - delta) * d.scale;
          for (int64_t c = 0; c < D; ++c) {
            dq[(bh * d.Tq + i) * D + c] += ds * k[(bk * d.Tk + j) * D + c];
            dk[(bk * d.Tk + j) * D + c] += ds * qi[c];
            dv[(bk * d.Tk + j) * D + c] += p[j] * gi[c];
          }
        }
      }
    }
}

struct Inputs {
  std::vector<float> q, k, v;
};
Inputs make_inputs(const cpu::AttentionDesc& d, std::mt19937& g) {
  const size_t nq = static_cast<size_t>(d.B * d.Hq * d.Tq * d.D), nk = static_cast<size_t>(d.B * d.Hkv * d.Tk * d.D);
  return {randvec(nq, g), randvec(nk, g), randvec(nk, g)};
}

// Max over elements of |a - b| / (1 + |b|), with matching infinities counted as equal; NaN counts as a failure.
double max_err(const std::vector<float>& a, const std::vector<double>& b) {
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(b[i]) && a[i] == b[i]) continue;
    const double x = std::fabs(static_cast<double>(a[i]) - b[i]) / (1.0 + std::fabs(b[i]));
    if (!(x <= e)) e = std::isnan(x) ? kInf : x;
  }
  return e;
}

void forward_case(Context& ctx, const Shape5& s, std::mt19937& g) {
  const cpu::AttentionDesc d = desc_of(s);
  Inputs in = make_inputs(d, g);
  auto o = poisoned(in.q.size());
  auto lse = poisoned(static_cast<size_t>(d.B * d.Hq * d.Tq));
  cpu::attention_forward(ctx.pool(), d, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data());
  std::vector<double> ro, rl;
  ref_forward(d, to_d(in.q), to_d(in.k), to_d(in.v), ro, rl);
  const double eo = max_err(o, ro), el = max_err(lse, rl);
  if (!(eo < 2e-5 && el < 2e-5))
    std::fprintf(stderr, "  forward B=%lld Hq=%lld Hkv=%lld Tq=%lld Tk=%lld D=%lld causal=%d lens=%d: o %.3g lse %.3g\n",
                 (long long)d.B, (long long)d.Hq, (long long)d.Hkv, (long long)d.Tq, (long long)d.Tk,
                 (long long)d.D, d.causal, d.key_lengths != nullptr, eo, el);
  CHECK(eo < 2e-5);
  CHECK(el < 2e-5);
}

}  // namespace

TEST(forward_matches_naive_attention) {
  Context ctx;
  std::mt19937 g(1);
  const std::vector<Shape5> shapes = {
      {1, 1, 1, 1, 1, 1, false, {}, 0},
      {1, 1, 1, 1, 1, 1, true, {}, 0},
      {2, 2, 2, 7, 7, 5, true, {}, 0},
      {2, 2, 2, 7, 7, 5, false, {}, 2.0f},
      {1, 4, 2, 33, 33, 16, true, {}, 0},               // GQA
      {2, 3, 1, 129, 129, 8, false, {}, 0},             // MQA, several query blocks and key tiles
      {2, 3, 1, 129, 129, 33, true, {}, 0.5f},          // MQA causal
      {1, 2, 2, 7, 33, 64, true, {}, 0},                // Tq < Tk: causal aligned at the end (KV cache)
      {2, 2, 1, 33, 129, 33, true, {}, 0},              // Tq < Tk, MQA
      {1, 2, 2, 1, 129, 7, true, {}, 0},                // one new query over a long cache
      {1, 1, 1, 129, 7, 4, true, {}, 0},                // Tq > Tk: the first queries see nothing
      {1, 2, 1, 130, 200, 100, false, {}, 0},           // D not a multiple of any vector width
      {3, 2, 2, 33, 33, 16, false, {0, 33, 17}, 0},     // key lengths 0 and Tk
      {3, 4, 2, 129, 129, 8, true, {129, 0, 70}, 0},    // causal and key lengths
      {2, 2, 2, 7, 129, 5, true, {1, 128}, 0},          // Tq < Tk with key lengths
      {2, 2, 2, 7, 0, 5, false, {}, 0},                 // no keys at all
      {2, 2, 1, 65, 1, 3, false, {1, 0}, 0},
      {1, 2, 1, 5, 6, 0, true, {}, 1.0f},               // D = 0: every score is 0, o is empty
  };
  for (const auto& s : shapes) forward_case(ctx, s, g);
}

TEST(forward_large_scores_do_not_overflow) {
  Context ctx;
  std::mt19937 g(2);
  // Scores up to ~ 20 * D = 320: exp overflows float unless the online softmax subtracts the running max.
  for (bool causal : {false, true}) forward_case(ctx, {1, 2, 2, 70, 150, 16, causal, {}, 20.0f}, g);
}

namespace {

// dq, dk, dv accumulated into buffers that start at random values; returns the increments.
struct Grads {
  std::vector<float> dq, dk, dv;
};
Grads kernel_grads(Context& ctx, const cpu::AttentionDesc& d, const Inputs& in, const std::vector<float>& dout,
                   std::mt19937& g) {
  auto o = poisoned(in.q.size());
  auto lse = poisoned(static_cast<size_t>(d.B * d.Hq * d.Tq));
  cpu::attention_forward(ctx.pool(), d, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data());
  Grads r{randvec(in.q.size(), g, 1.0f, 3.0f), randvec(in.k.size(), g, 1.0f, 3.0f), randvec(in.v.size(), g, 1.0f, 3.0f)};
  const Grads init = r;
  cpu::attention_backward(ctx.pool(), d, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data(), dout.data(),
                          r.dq.data(), r.dk.data(), r.dv.data());
  for (size_t i = 0; i < r.dq.size(); ++i) r.dq[i] -= init.dq[i];
  for (size_t i = 0; i < r.dk.size(); ++i) r.dk[i] -= init.dk[i];
  for (size_t i = 0; i < r.dv.size(); ++i) r.dv[i] -= init.dv[i];
  return r;
}

double abs_err(const std::vector<float>& a, const std::vector<double>& b) {
  double e = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!(x <= e)) e = std::isnan(x) ? kInf : x;
  }
  return e;
}

}  // namespace

TEST(backward_matches_finite_differences) {
  Context ctx;
  std::mt19937 g(3);
  const std::vector<Shape5> shapes = {
      {2, 4, 2, 5, 5, 3, false, {}, 0},
      {2, 4, 2, 7, 7, 4, true, {}, 0},
      {2, 4, 2, 6, 9, 8, true, {}, 0},          // Tq < Tk
      {2, 4, 2, 9, 6, 5, true, {}, 0},          // Tq > Tk: queries that see nothing get no gradient
      {2, 4, 1, 8, 8, 3, false, {0, 5}, 1.5f},  // MQA, key lengths 0 and 5
      {2, 4, 2, 7, 9, 6, true, {9, 4}, 0},
  };
  // 1 thread runs the fused schedule, 8 threads the two-pass one for these few (b, kv head) pairs.
  for (int threads : {1, 8})
  for (const auto& s : shapes) {
    ctx.pool().set_threads(threads);
    const cpu::AttentionDesc d = desc_of(s);
    Inputs in = make_inputs(d, g);
    const auto R = randvec(in.q.size(), g);  // dL/do for L = sum(o * R)
    Grads kg = kernel_grads(ctx, d, in, R, g);
    std::vector<double> q = to_d(in.q), k = to_d(in.k), v = to_d(in.v);
    auto loss = [&] {
      std::vector<double> o, lse;
      ref_forward(d, q, k, v, o, lse);
      double L = 0;
      for (size_t i = 0; i < o.size(); ++i) L += o[i] * R[i];
      return L;
    };
    const double h = 1e-4;
    auto numeric = [&](std::vector<double>& x) {
      std::vector<double> grad(x.size());
      for (size_t i = 0; i < x.size(); ++i) {
        const double x0 = x[i];
        x[i] = x0 + h;
        const double lp = loss();
        x[i] = x0 - h;
        const double lm = loss();
        x[i] = x0;
        grad[i] = (lp - lm) / (2 * h);
      }
      return grad;
    };
    const double eq = abs_err(kg.dq, numeric(q)), ek = abs_err(kg.dk, numeric(k)), ev = abs_err(kg.dv, numeric(v));
    if (!(eq < 5e-6 && ek < 5e-6 && ev < 5e-6))
      std::fprintf(stderr, "  backward Tq=%lld Tk=%lld D=%lld: dq %.3g dk %.3g dv %.3g\n", (long long)d.Tq,
                   (long long)d.Tk, (long long)d.D, eq, ek, ev);
    CHECK(eq < 5e-6);
    CHECK(ek < 5e-6);
    CHECK(ev < 5e-6);
  }
}

TEST(backward_matches_naive_backward_across_tiles) {
  Context ctx;
  std::mt19937 g(4);
  const std::vector<Shape5> shapes = {
      {1, 2, 1, 129, 129, 8, false, {}, 0},
      {2, 2, 2, 129, 129, 33, true, {}, 0},
      {1, 4, 2, 33, 200, 16, true, {}, 0},         // Tq < Tk
      {1, 2, 2, 200, 70, 7, true, {}, 0},          // Tq > Tk
      {3, 2, 1, 100, 130, 5, true, {0, 130, 66}, 0},
      {2, 2, 2, 1, 7, 64, false, {3, 7}, 0},
  };
  for (int threads : {1, 8})
  for (const auto& s : shapes) {
    ctx.pool().set_threads(threads);
    const cpu::AttentionDesc d = desc_of(s);
    Inputs in = make_inputs(d, g);
    const auto R = randvec(in.q.size(), g);
    Grads kg = kernel_grads(ctx, d, in, R, g);
    std::vector<double> dq, dk, dv;
    ref_backward(d, to_d(in.q), to_d(in.k), to_d(in.v), to_d(R), dq, dk, dv);
    const double eq = abs_err(kg.dq, dq), ek = abs_err(kg.dk, dk), ev = abs_err(kg.dv, dv);
    if (!(eq < 5e-6 && ek < 5e-6 && ev < 5e-6))
      std::fprintf(stderr, "  backward Tq=%lld Tk=%lld D=%lld: dq %.3g dk %.3g dv %.3g\n", (long long)d.Tq,
                   (long long)d.Tk, (long long)d.D, eq, ek, ev);
    CHECK(eq < 5e-6);
    CHECK(ek < 5e-6);
    CHECK(ev < 5e-6);
  }
}

TEST(results_do_not_depend_on_the_thread_count) {
  Context ctx;
  std::mt19937 g(5);
  // 1 thread: the fused backward; 3 threads: the two-pass backward for the first shape (4 (b, kv head) pairs), the
  // fused one for the second (6 pairs). Every output must be bit-identical.
  const std::vector<Shape5> shapes = {{2, 4, 2, 150, 190, 40, true, {190, 77}, 0},
                                      {3, 2, 2, 100, 70, 16, false, {70, 0, 31}, 0}};
  for (const auto& s : shapes) {
    const cpu::AttentionDesc d = desc_of(s);
    Inputs in = make_inputs(d, g);
    const auto R = randvec(in.q.size(), g);
    std::vector<float> out[2][5];
    for (int run = 0; run < 2; ++run) {
      ctx.pool().set_threads(run == 0 ? 1 : 3);
      auto o = poisoned(in.q.size()), lse = poisoned(static_cast<size_t>(d.B * d.Hq * d.Tq));
      std::vector<float> dq(in.q.size(), 0.5f), dk(in.k.size(), 0.5f), dv(in.v.size(), 0.5f);
      cpu::attention_forward(ctx.pool(), d, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data());
      cpu::attention_backward(ctx.pool(), d, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data(), R.data(),
                              dq.data(), dk.data(), dv.data());
      out[run][0] = o;
      out[run][1] = lse;
      out[run][2] = dq;
      out[run][3] = dk;
      out[run][4] = dv;
    }
    for (int i = 0; i < 5; ++i)
      CHECK(std::memcmp(out[0][i].data(), out[1][i].data(), out[0][i].size() * sizeof(float)) == 0);
  }
}

TEST(key_lengths_out_of_range_throw_before_writing) {
  Context ctx;
  std::mt19937 g(6);
  for (int32_t bad : {-1, 8}) {
    const Shape5 s{2, 2, 2, 5, 7, 4, false, {3, bad}, 0};
    const cpu::AttentionDesc d = desc_of(s);
    Inputs in = make_inputs(d, g);
    std::vector<float> o(in.q.size(), 7.0f), lse(static_cast<size_t>(d.B * d.Hq * d.Tq), 7.0f);
    CHECK_THROWS(cpu::attention_forward(ctx.pool(), d, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data()),
                 ErrorKind::Range);
    std::vector<float> dq(in.q.size(), 7.0f), dk(in.k.size(), 7.0f), dv(in.v.size(), 7.0f);
    CHECK_THROWS(cpu::attention_backward(ctx.pool(), d, in.q.data(), in.k.data(), in.v.data(), o.data(), lse.data(),
                                         o.data(), dq.data(), dk.data(), dv.data()),
                 ErrorKind::Range);
    bool untouched = true;
    for (auto* vec : {&o, &lse, &dq, &dk, &dv})
      for (float x : *vec) untouched = untouched && x == 7.0f;
    CHECK(untouched);
  }
}

TEST_MAIN()
