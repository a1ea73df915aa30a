// train_kernels_test.cpp — embedding, cross-entropy and optimizer kernels (embedding.cpp, cross_entropy.cpp,
// optim.cpp) against naive double-precision references, gradients against central finite differences, bad ids and
// targets refused before anything is written, and bit-identical results for thread counts 1 and 3.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "check.h"
#include "core/context.h"
#include "core/error.h"
#include "cpu/kernels.h"

using namespace sf;

namespace {

using Vec = std::vector<float>;
using IVec = std::vector<int32_t>;

const int64_t kSizes[] = {1, 7, 33, 129};

Vec randu(std::mt19937& g, int64_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  Vec v(static_cast<size_t>(n));
  for (auto& x : v) x = d(g);
  return v;
}
IVec randi(std::mt19937& g, int64_t n, int32_t lo, int32_t hi) {  // [lo, hi)
  std::uniform_int_distribution<int32_t> d(lo, hi - 1);
  IVec v(static_cast<size_t>(n));
  for (auto& x : v) x = d(g);
  return v;
}
Vec poisoned(int64_t n) {
  Vec v(static_cast<size_t>(n));
  std::memset(v.data(), 0xff, v.size() * sizeof(float));  // NaN: an unwritten element fails every check
  return v;
}
bool all_poison(const Vec& v) {
  for (float x : v) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if (u != 0xffffffffu) return false;
  }
  return true;
}
// max |a - b| / (atol + rtol |b|) <= 1 for every element (NaN fails)
template <typename A, typename B>
bool close(const A& a, const B& b, double atol, double rtol) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    double x = a[i], y = b[i];
    if (!(std::fabs(x - y) <= atol + rtol * std::fabs(y))) {
      std::fprintf(stderr, "    mismatch at %zu: %.9g vs %.9g\n", i, x, y);
      return false;
    }
  }
  return true;
}
bool same_bits(const Vec& a, const Vec& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// ---- naive references (double) ----------------------------------------------------------------------------------
// mean over counted rows of lse - x[t] (0 when none)
double ce_ref(const std::vector<double>& x, const IVec& t, int64_t N, int64_t V, int32_t ignore) {
  double total = 0.0;
  int64_t count = 0;
  for (int64_t r = 0; r < N; ++r) {
    if (t[r] == ignore) continue;
    double mx = -INFINITY;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, x[r * V + j]);
    double s = 0.0;
    for (int64_t j = 0; j < V; ++j) s += std::exp(x[r * V + j] - mx);
    total += mx + std::log(s) - x[r * V + t[r]];
    ++count;
  }
  return count ? total / static_cast<double>(count) : 0.0;
}
std::vector<double> ce_grad_ref(const std::vector<double>& x, const IVec& t, int64_t N, int64_t V, int32_t ignore,
                                double scale) {
  int64_t count = 0;
  for (int64_t r = 0; r < N; ++r) count += t[r] != ignore;
  std::vector<double> d(x.size(), 0.0);
  for (int64_t r = 0; r < N; ++r) {
    if (t[r] == ignore) continue;
    double mx = -INFINITY;
    for (int64_t j = 0; j < V; ++j) mx = std::max(mx, x[r * V + j]);
    double s = 0.0;
    for (int64_t j = 0; j < V; ++j) s += std::exp(x[r * V + j] - mx);
    for (int64_t j = 0; j < V; ++j)
      d[r * V + j] = (std::exp(x[r * V + j] - mx) / s - (j == t[r] ? 1.0 : 0.0)) * scale / static_cast<double>(count);
  }
  return d;
}
std::vector<double> widen(const Vec& v) { return std::vector<double>(v.begin(), v.end()); }

}  // namespace

// ---- embedding --------------------------------------------------------------------------------------------------

TEST(embedding_forward_gathers_rows) {
  Context ctx;
  std::mt19937 g(1);
  for (int64_t n : kSizes)
    for (int64_t C : kSizes)
      for (int64_t V : {int64_t{1}, int64_t{7}, int64_t{300}}) {
        Vec table = randu(g, V * C);
        IVec ids = randi(g, n, 0, static_cast<int32_t>(V));
        Vec out = poisoned(n * C);
        cpu::embedding_forward(ctx.pool(), ids.data(), n, table.data(), V, C, out.data());
        bool ok = true;
        for (int64_t i = 0; i < n; ++i)
          for (int64_t c = 0; c < C; ++c) ok = ok && out[i * C + c] == table[ids[i] * C + c];
        CHECK(ok);
      }
}

TEST(embedding_backward_matches_scatter_and_finite_differences) {
  Context ctx;
  std::mt19937 g(2);
  for (int64_t n : kSizes)
    for (int64_t C : {int64_t{1}, int64_t{7}, int64_t{33}, int64_t{300}})
      for (int64_t V : {int64_t{1}, int64_t{5}, int64_t{129}}) {  // V = 5: many repeated ids
        IVec ids = randi(g, n, 0, static_cast<int32_t>(V));
        Vec dout = randu(g, n * C);
        Vec base = randu(g, V * C);
        Vec dtable = base;
        cpu::embedding_backward(ctx.pool(), ids.data(), n, dout.data(), V, C, dtable.data());
        std::vector<double> ref(static_cast<size_t>(V * C), 0.0), got(ref.size());
        for (int64_t i = 0; i < n; ++i)
          for (int64_t c = 0; c < C; ++c) ref[ids[i] * C + c] += dout[i * C + c];
        for (size_t k = 0; k < ref.size(); ++k) got[k] = static_cast<double>(dtable[k]) - base[k];
        CHECK(close(got, ref, 1e-5, 1e-5));
      }
  // Finite differences: L = sum(table[ids] * R), dL/dtable by central differences in double.
  const int64_t n = 9, C = 7, V = 4;
  IVec ids = randi(g, n, 0, V);
  ids[3] = ids[5] = ids[8];  // a repeated id for sure
  Vec R = randu(g, n * C), table = randu(g, V * C);
  auto loss = [&](const std::vector<double>& tb) {
    double L = 0.0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < C; ++c) L += tb[ids[i] * C + c] * R[i * C + c];
    return L;
  };
  std::vector<double> tb = widen(table), fd(tb.size());
  const double h = 1e-3;
  for (size_t k = 0; k < tb.size(); ++k) {
    const double keep = tb[k];
    tb[k] = keep + h;
    const double up = loss(tb);
    tb[k] = keep - h;
    const double down = loss(tb);
    tb[k] = keep;
    fd[k] = (up - down) / (2 * h);
  }
  Vec base = randu(g, V * C), dtable = base;
  cpu::embedding_backward(ctx.pool(), ids.data(), n, R.data(), V, C, dtable.data());
  std::vector<double> got(dtable.size());
  for (size_t k = 0; k < got.size(); ++k) got[k] = static_cast<double>(dtable[k]) - base[k];
  CHECK(close(got, fd, 1e-5, 1e-4));
}

TEST(embedding_out_of_range_ids_throw_before_writing) {
  Context ctx;
  std::mt19937 g(3);
  const int64_t n = 7, C = 5, V = 256;
  Vec table = randu(g, V * C);
  for (int32_t bad : {256, -1, 300}) {
    for (int64_t pos : {int64_t{0}, int64_t{5}, n - 1}) {
      IVec ids = randi(g, n, 0, V);
      ids[pos] = bad;
      Vec out = poisoned(n * C);
      bool thrown = false;
      try {
        cpu::embedding_forward(ctx.pool(), ids.data(), n, table.data(), V, C, out.data());
      } catch (const Error& e) {
        thrown = e.kind() == ErrorKind::Range &&
                 std::string(e.what()) ==
                     "embedding: token id " + std::to_string(bad) + " at position " + std::to_string(pos) +
                     " is out of range [0, 256)";
      }
      CHECK(thrown);
      CHECK(all_poison(out));
      Vec dout = randu(g, n * C), dtable = randu(g, V * C), before = dtable;
      CHECK_THROWS(cpu::embedding_backward(ctx.pool(), ids.data(), n, dout.data(), V, C, dtable.data()),
                   ErrorKind::Range);
      CHECK(same_bits(dtable, before));
    }
  }
  const int32_t bad_ids[] = {0, 256};  // rows of width 0: nothing to copy, but the id is still checked
  CHECK_THROWS(cpu::embedding_forward(ctx.pool(), bad_ids, 2, table.data(), V, 0, nullptr), ErrorKind::Range);
  CHECK_THROWS(cpu::embedding_backward(ctx.pool(), bad_ids, 2, nullptr, V, 0, nullptr), ErrorKind::Range);
}

// ---- cross-entropy ----------------------------------------------------------------------------------------------

TEST(cross_entropy_matches_naive_loss_and_gradient) {
  Context ctx;
  std::mt19937 g(4);
  for (int64_t N : kSizes)
    for (int64_t V : {int64_t{1}, int64_t{7}, int64_t{33}, int64_t{129}, int64_t{1000}}) {
      Vec x = randu(g, N * V, -4.0f, 4.0f);
      IVec t = randi(g, N, 0, static_cast<int32_t>(V));
      for (int64_t r = 0; r < N; r += 3) t[r] = -100;  // every third row ignored (row 0 included)
      const float gs = 0.75f;
      Vec d = poisoned(N * V);
      const float loss = cpu::cross_entropy(ctx.pool(), x.data(), t.data(), N, V, -100, d.data(), gs);
      const std::vector<double> xd = widen(x);
      CHECK_NEAR(loss, ce_ref(xd, t, N, V, -100), 1e-5 * (1 + std::log(static_cast<double>(V))));
      CHECK(close(d, ce_grad_ref(xd, t, N, V, -100, gs), 1e-7, 1e-5));
      // without dlogits: the same loss
      const float loss2 = cpu::cross_entropy(ctx.pool(), x.data(), t.data(), N, V, -100, nullptr, gs);
      CHECK_EQ(loss, loss2);
      // in place: dlogits is the logits buffer
      Vec xi = x;
      const float loss3 = cpu::cross_entropy(ctx.pool(), xi.data(), t.data(), N, V, -100, xi.data(), gs);
      CHECK_EQ(loss, loss3);
      CHECK(same_bits(xi, d));
    }
}

TEST(cross_entropy_gradient_matches_finite_differences) {
  Context ctx;
  std::mt19937 g(5);
  for (int64_t V : {int64_t{7}, int64_t{33}}) {
    const int64_t N = 5;
    Vec x = randu(g, N * V, -3.0f, 3.0f);
    IVec t = randi(g, N, 0, static_cast<int32_t>(V));
    t[2] = 7777;  // a custom ignore_index
    const float gs = 1.7f;
    Vec d = poisoned(N * V);
    cpu::cross_entropy(ctx.pool(), x.data(), t.data(), N, V, 7777, d.data(), gs);
    std::vector<double> xd = widen(x), fd(xd.size());
    const double h = 1e-4;
    for (size_t k = 0; k < xd.size(); ++k) {
      const double keep = xd[k];
      xd[k] = keep + h;
      const double up = ce_ref(xd, t, N, V, 7777);
      xd[k] = keep - h;
      const double down = ce_ref(xd, t, N, V, 7777);
      xd[k] = keep;
      fd[k] = gs * (up - down) / (2 * h);
    }
    CHECK(close(d, fd, 1e-6, 1e-4));
  }
}

TEST(cross_entropy_with_every_row_ignored_is_zero) {
  Context ctx;
  std::mt19937 g(6);
  const int64_t N = 7, V = 33;
  Vec x = randu(g, N * V);
  IVec t(N, -100);
  Vec d = poisoned(N * V);
  CHECK_EQ(cpu::cross_entropy(ctx.pool(), x.data(), t.data(), N, V, -100, d.data(), 1.0f), 0.0f);
  bool zero = true;
  for (float v : d) zero = zero && v == 0.0f;
  CHECK(zero);
}

TEST(cross_entropy_out_of_range_targets_throw_before_writing) {
  Context ctx;
  std::mt19937 g(7);
  const int64_t N = 9, V = 256;
  for (int32_t bad : {256, -1, -99}) {
    for (int64_t pos : {int64_t{0}, int64_t{5}, N - 1}) {
      Vec x = randu(g, N * V);
      IVec t = randi(g, N, 0, V);
      t[pos] = bad;
      Vec d = poisoned(N * V);
      bool thrown = false;
      try {
        cpu::cross_entropy(ctx.pool(), x.data(), t.data(), N, V, -100, d.data(), 1.0f);
      } catch (const Error& e) {
        thrown = e.kind() == ErrorKind::Range &&
                 std::string(e.what()).find("cross_entropy: target " + std::to_string(bad) + " at row " +
                                           std::to_string(pos) + " is out of range [0, 256)") == 0;
      }
      CHECK(thrown);
      CHECK(all_poison(d));
      Vec xi = x;  // in place: the logits are untouched
      CHECK_THROWS(cpu::cross_entropy(ctx.pool(), xi.data(), t.data(), N, V, -100, xi.data(), 1.0f), ErrorKind::Range);
      CHECK(same_bits(xi, x));
    }
  }
}

// ---- optimizers -------------------------------------------------------------------------------------------------

// torch.optim.AdamW's step, in double: decoupled decay, then the bias-corrected Adam update.
static void adamw_ref(const cpu::AdamWDesc& d, std::vector<double>& p, const Vec& g, std::vector<double>& m,
                      std::vector<double>& v, const Vec* decay) {
  const double lr = d.lr, b1 = d.beta1, b2 = d.beta2, eps = d.eps, wd = d.weight_decay;
  const double bc1 = 1 - std::pow(b1, static_cast<double>(d.step)), bc2 = 1 - std::pow(b2, static_cast<double>(d.step));
  for (size_t i = 0; i < p.size(); ++i) {
    p[i] *= 1 - lr * wd * (decay ? (*decay)[i] : 1.0);
    m[i] = b1 * m[i] + (1 - b1) * g[i];
    v[i] = b2 * v[i] + (1 - b2) * double(g[i]) * g[i];
    p[i] -= lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
  }
}

TEST(adamw_three_steps_match_torch_formula) {
  Context ctx;
  std::mt19937 gen(8);
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{33}, int64_t{129}, int64_t{40001}})
    for (bool masked : {false, true}) {
      Vec p = randu(gen, n), m = randu(gen, n, 0.0f, 0.1f), v = randu(gen, n, 0.0f, 0.01f);
      Vec decay = randu(gen, n, 0.0f, 1.0f);
      for (int64_t i = 0; i < n; i += 2) decay[i] = 0.0f;
      std::vector<double> pr = widen(p), mr = widen(m), vr = widen(v);
      cpu::AdamWDesc d;
      d.lr = 3e-3f;
      d.beta1 = 0.9f;
      d.beta2 = 0.95f;
      d.eps = 1e-6f;
      d.weight_decay = 0.1f;
      for (int64_t step = 1; step <= 3; ++step) {
        d.step = step;
        Vec g = randu(gen, n);
        cpu::adamw(ctx.pool(), d, p.data(), g.data(), m.data(), v.data(), masked ? decay.data() : nullptr, n);
        adamw_ref(d, pr, g, mr, vr, masked ? &decay : nullptr);
      }
      CHECK(close(p, pr, 1e-6, 1e-5));
      CHECK(close(m, mr, 1e-7, 1e-5));
      CHECK(close(v, vr, 1e-9, 1e-5));
    }
}

// With a bf16 copy: the same parameters, moments and bits as without, and the copy is exactly f32_to_bf16 of the
// updated parameters (every element, vector body and tail), NaN included.
TEST(adamw_writes_the_bf16_copy_in_the_same_pass) {
  Context ctx;
  std::mt19937 gen(9);
  for (int64_t n : {int64_t{1}, int64_t{15}, int64_t{16}, int64_t{33}, int64_t{40001}}) {
    Vec p = randu(gen, n), m = randu(gen, n, 0.0f, 0.1f), v = randu(gen, n, 0.0f, 0.01f);
    Vec p2 = p, m2 = m, v2 = v;
    if (n > 20) p[7] = p2[7] = std::numeric_limits<float>::quiet_NaN();
    std::vector<uint16_t> copy(static_cast<size_t>(n), 0xdead);
    cpu::AdamWDesc d;
    d.lr = 1e-2f;
    for (int64_t step = 1; step <= 2; ++step) {
      d.step = step;
      Vec g = randu(gen, n);
      cpu::adamw(ctx.pool(), d, p.data(), g.data(), m.data(), v.data(), nullptr, n, copy.data());
      cpu::adamw(ctx.pool(), d, p2.data(), g.data(), m2.data(), v2.data(), nullptr, n);
    }
    CHECK(std::memcmp(p.data(), p2.data(), p.size() * 4) == 0);
    CHECK(std::memcmp(m.data(), m2.data(), m.size() * 4) == 0);
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) bad += copy[static_cast<size_t>(i)] != f32_to_bf16(p[static_cast<size_t>(i)]);
    CHECK_EQ(bad, 0);
  }
}

// torch.optim.SGD's step, in double.
static void sgd_ref(const cpu::SgdDesc& d, std::vector<double>& p, const Vec& g, std::vector<double>& buf) {
  for (size_t i = 0; i < p.size(); ++i) {
    double dp = g[i] + double(d.weight_decay) * p[i];
    if (d.momentum != 0.0f) {
      buf[i] = d.first_step ? dp : double(d.momentum) * buf[i] + (1 - double(d.dampening)) * dp;
      dp = d.nesterov ? dp + double(d.momentum) * buf[i] : buf[i];
    }
    p[i] -= double(d.lr) * dp;
  }
}

TEST(sgd_variants_match_torch_formula) {
  Context ctx;
  std::mt19937 gen(9);
  struct Case {
    float momentum, dampening, wd;
    bool nesterov;
  };
  const Case cases[] = {{0, 0, 0, false},           {0, 0, 0.01f, false},   {0.9f, 0, 0, false},
                        {0.9f, 0.1f, 0.01f, false}, {0.9f, 0, 0.01f, true}, {0.5f, 0, 0, true}};
  for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{33}, int64_t{129}, int64_t{40001}})
    for (const Case& c : cases) {
      Vec p = randu(gen, n), buf = poisoned(n);  // the first step overwrites buf
      std::vector<double> pr = widen(p), br(static_cast<size_t>(n), 0.0);
      cpu::SgdDesc d;
      d.lr = 0.05f;
      d.momentum = c.momentum;
      d.dampening = c.dampening;
      d.weight_decay = c.wd;
      d.nesterov = c.nesterov;
      for (int step = 1; step <= 3; ++step) {
        d.first_step = step == 1;
        Vec g = randu(gen, n);
        cpu::sgd(ctx.pool(), d, p.data(), g.data(), c.momentum != 0 ? buf.data() : nullptr, n);
        sgd_ref(d, pr, g, br);
      }
      CHECK(close(p, pr, 1e-6, 1e-5));
      if (c.momentum != 0) CHECK(close(buf, br, 1e-6, 1e-5));
      if (c.momentum == 0) CHECK(all_poison(buf));
    }
}

TEST(sum_squares_scale_and_clip_match_naive) {
  Context ctx;
  std::mt19937 gen(10);
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{33}, int64_t{129}, int64_t{4096}, int64_t{100003}}) {
    Vec x = randu(gen, n, -3.0f, 3.0f);
    double ref = 0.0;
    for (float v : x) ref += double(v) * v;
    const double ss = cpu::sum_squares(ctx.pool(), x.data(), n);
    CHECK_NEAR(ss, ref, 1e-12 * (1 + ref));
    Vec y = x;
    cpu::scale_inplace(ctx.pool(), y.data(), n, -0.37f);
    bool ok = true;
    for (int64_t i = 0; i < n; ++i) ok = ok && y[i] == x[i] * -0.37f;
    CHECK(ok);
    // clipping as clipGradNorm does it: scale by min(1, max_norm / (norm + eps)), norm before clipping
    const double max_norm = 0.5 * std::sqrt(ref) + 0.1, eps = 1e-6;
    Vec c = x;
    const double norm = std::sqrt(cpu::sum_squares(ctx.pool(), c.data(), n));
    const double coef = std::min(1.0, max_norm / (norm + eps));
    if (coef < 1.0) cpu::scale_inplace(ctx.pool(), c.data(), n, static_cast<float>(coef));
    double after = 0.0;
    for (float v : c) after += double(v) * v;
    CHECK_NEAR(std::sqrt(after), std::min(std::sqrt(ref), max_norm), 1e-5 * (1 + max_norm));
  }
}

// ---- determinism ------------------------------------------------------------------------------------------------

TEST(results_are_bit_identical_for_1_and_3_threads) {
  Context ctx;
  std::mt19937 gen(11);
  const int64_t n = 100003;  // several blocks and chunks, and a partial last vector
  const Vec x = randu(gen, n), g = randu(gen, n), m0 = randu(gen, n, 0, 0.1f), v0 = randu(gen, n, 0, 0.01f),
            dec = randu(gen, n, 0, 1);
  const int64_t N = 257, V = 1001, C = 129, EV = 40;
  const Vec logits = randu(gen, N * V, -5, 5);
  IVec targets = randi(gen, N, 0, static_cast<int32_t>(V));
  targets[7] = -100;
  const IVec ids = randi(gen, N, 0, static_cast<int32_t>(EV));
  const Vec dout = randu(gen, N * C), table0 = randu(gen, EV * C);

  struct Out {
    Vec p, m, v, sp, sb, sc, dl, dt;
    float loss;
    double ss;
  };
  auto run = [&](int threads) {
    ctx.pool().set_threads(threads);
    Out o;
    o.p = x, o.m = m0, o.v = v0;
    cpu::AdamWDesc ad;
    ad.step = 2;
    cpu::adamw(ctx.pool(), ad, o.p.data(), g.data(), o.m.data(), o.v.data(), dec.data(), n);
    o.sp = x, o.sb = m0;
    cpu::SgdDesc sd;
    sd.momentum = 0.9f;
    sd.nesterov = true;
    sd.weight_decay = 0.01f;
    sd.first_step = false;
    cpu::sgd(ctx.pool(), sd, o.sp.data(), g.data(), o.sb.data(), n);
    o.sc = x;
    cpu::scale_inplace(ctx.pool(), o.sc.data(), n, 0.3f);
    o.ss = cpu::sum_squares(ctx.pool(), x.data(), n);
    o.dl = poisoned(N * V);
    o.loss = cpu::cross_entropy(ctx.pool(), logits.data(), targets.data(), N, V, -100, o.dl.data(), 1.0f);
    o.dt = table0;
    cpu::embedding_backward(ctx.pool(), ids.data(), N, dout.data(), EV, C, o.dt.data());
    return o;
  };
  const Out a = run(1), b = run(3);
  CHECK(same_bits(a.p, b.p) && same_bits(a.m, b.m) && same_bits(a.v, b.v));
  CHECK(same_bits(a.sp, b.sp) && same_bits(a.sb, b.sb));
  CHECK(same_bits(a.sc, b.sc));
  CHECK(std::memcmp(&a.ss, &b.ss, sizeof(double)) == 0);
  CHECK(std::memcmp(&a.loss, &b.loss, sizeof(float)) == 0);
  CHECK(same_bits(a.dl, b.dl));
  CHECK(same_bits(a.dt, b.dt));
}

TEST_MAIN()
