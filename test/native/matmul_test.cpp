// matmul_test.cpp — the packed matmul against a naive double-precision product: every transpose combination, odd
// sizes, batches with broadcast operands, alpha/beta accumulation, bias and GELU epilogues; the linear layer's backward
// (built from matmul with transposes and bias_grad) against central finite differences; determinism across thread
// counts.
#include <cstring>
#include <random>
#include <tuple>

#include "check.h"
#include "core/context.h"
#include "cpu/kernels.h"
#include "cpu/simd.h"

using namespace sf;

namespace {

std::vector<float> randvec(size_t n, std::mt19937& g, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

double gelu_d(double x) { return 0.5 * x * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

// op(A)[i][k], op(B)[k][j] for one batch entry
double naive_entry(const float* A, const float* B, int64_t M, int64_t N, int64_t K, bool ta, bool tb, int64_t i,
                   int64_t j) {
  double s = 0;
  for (int64_t k = 0; k < K; ++k) s += double(ta ? A[k * M + i] : A[i * K + k]) * double(tb ? B[j * K + k] : B[k * N + j]);
  return s;
}

struct Case {
  int64_t batch, M, N, K;
  bool ta, tb, bcast_b, bias, gelu;
  float alpha, beta;
  cpu::MatmulPath path = cpu::MatmulPath::Auto;
  bool bcast_a = false;  // A's batch stride 0 (one A for every batch entry)
};

void run_case(Context& ctx, const Case& c, std::mt19937& g) {
  const int64_t a_n = c.M * c.K, b_n = c.K * c.N, c_n = c.M * c.N;
  auto A = randvec(static_cast<size_t>(a_n * (c.bcast_a ? 1 : c.batch)), g);
  auto B = randvec(static_cast<size_t>(b_n * (c.bcast_b ? 1 : c.batch)), g);
  auto bias = randvec(static_cast<size_t>(c.N), g);
  auto C0 = randvec(static_cast<size_t>(c_n * c.batch), g);
  std::vector<float> C = C0, P(C.size());
  if (c.beta == 0.0f) std::memset(C.data(), 0xff, C.size() * 4);  // NaN: beta = 0 must ignore the old contents
  std::memset(P.data(), 0xff, P.size() * 4);
  cpu::MatmulDesc d = cpu::matmul_desc(c.M, c.N, c.K, c.ta, c.tb, A.data(), B.data(), C.data());
  d.batch = c.batch;
  d.a_stride = c.bcast_a ? 0 : a_n;
  d.path = c.path;
  d.b_stride = c.bcast_b ? 0 : b_n;
  d.c_stride = c_n;
  d.alpha = c.alpha;
  d.beta = c.beta;
  d.bias = c.bias ? bias.data() : nullptr;
  d.act = c.gelu ? cpu::Activation::Gelu : cpu::Activation::None;
  d.preact = c.gelu ? P.data() : nullptr;
  cpu::matmul(ctx.pool(), d);
  double worst = 0;
  bool finite = true;
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = 0; j < c.N; ++j) {
        const float* Ab = A.data() + (c.bcast_a ? 0 : b * a_n);
        const float* Bb = B.data() + (c.bcast_b ? 0 : b * b_n);
        double pre = c.alpha * naive_entry(Ab, Bb, c.M, c.N, c.K, c.ta, c.tb, i, j);
        size_t idx = static_cast<size_t>(b * c_n + i * c.N + j);
        if (c.beta != 0.0f) pre += double(c.beta) * C0[idx];
        if (c.bias) pre += bias[static_cast<size_t>(j)];
        double want = c.gelu ? gelu_d(pre) : pre;
        double tol_scale = 1.0 + std::sqrt(double(c.K)) + std::fabs(want);
        finite = finite && std::isfinite(C[idx]);
        worst = std::max(worst, std::fabs(C[idx] - want) / tol_scale);
        if (c.gelu) worst = std::max(worst, std::fabs(P[idx] - pre) / tol_scale);
      }
  if (!(finite && worst < 1e-5))  // fp32 accumulation of K terms, scaled by 1 + sqrt(K) + |value|
    sfcheck::fail(__FILE__, __LINE__,
                  cat("matmul batch=", c.batch, " M=", c.M, " N=", c.N, " K=", c.K, " ta=", c.ta, " tb=", c.tb,
                      " bcast=", c.bcast_b, " bcast_a=", c.bcast_a, " path=", int(c.path), " bias=", c.bias, " gelu=", c.gelu, " beta=", c.beta, ": worst scaled err ",
                      worst, finite ? "" : " (non-finite output)"));
}

}  // namespace

TEST(matmul_matches_naive_on_odd_shapes_and_all_transposes) {
  Context ctx;
  std::mt19937 g(1);
  const int64_t sizes[] = {1, 7, 33, 129};
  for (int64_t M : sizes)
    for (int64_t N : sizes)
      for (int64_t K : {int64_t{1}, int64_t{7}, int64_t{129}, int64_t{300}})
        for (int t = 0; t < 4; ++t) run_case(ctx, {1, M, N, K, bool(t & 1), bool(t & 2), false, false, false, 1, 0}, g);
}

TEST(matmul_batches_broadcasts_and_epilogues) {
  Context ctx;
  std::mt19937 g(2);
  for (int t = 0; t < 4; ++t) {
    bool ta = t & 1, tb = t & 2;
    run_case(ctx, {3, 33, 65, 17, ta, tb, false, false, false, 1, 0}, g);
    run_case(ctx, {3, 33, 65, 17, ta, tb, true, false, false, 1, 0}, g);
    run_case(ctx, {2, 45, 70, 260, ta, tb, true, true, false, 1, 0}, g);          // K spans two packed blocks
    run_case(ctx, {2, 45, 70, 260, ta, tb, false, true, true, 1, 0}, g);          // bias + GELU + preact
    run_case(ctx, {2, 19, 40, 530, ta, tb, false, false, false, 0.5f, 1.0f}, g);  // accumulate (gradients)
    run_case(ctx, {1, 19, 40, 9, ta, tb, false, true, true, -2.0f, 0.25f}, g);
  }
}

// The skinny path (M <= 16: decoding) and the packed path, each forced, on the shapes where they differ most: every
// M up to 17, K below, at and around the vector widths (4, 8, 16) and across several of them, N around the 4-column
// and 4-vector groups and the 64-column tasks; every transpose; bias, GELU (with the pre-activation), accumulation,
// batches with either operand broadcast.
TEST(matmul_skinny_and_packed_paths_match_naive) {
  Context ctx;
  std::mt19937 g(7);
  for (auto path : {cpu::MatmulPath::Skinny, cpu::MatmulPath::Packed})
    for (int64_t M : {1, 2, 3, 4, 5, 8, 9, 16, 17})
      for (int64_t N : {1, 3, 5, 17, 63, 64, 65, 130})
        for (int64_t K : {1, 3, 8, 15, 16, 17, 33, 257})
          for (int t = 0; t < 4; ++t) {
            const bool epi = (M + N + K + t) % 3 == 0;  // a third of the cases with bias + GELU + accumulation
            run_case(ctx, {1, M, N, K, bool(t & 1), bool(t & 2), false, epi, epi, epi ? 0.5f : 1.0f, epi ? 1.0f : 0.0f, path}, g);
          }
  for (auto path : {cpu::MatmulPath::Skinny, cpu::MatmulPath::Packed})
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      run_case(ctx, {3, 1, 130, 70, ta, tb, true, true, true, 1, 0, path}, g);              // a shared weight (decoding)
      run_case(ctx, {4, 5, 33, 41, ta, tb, false, false, false, 1, 0, path, true}, g);      // A broadcast
      run_case(ctx, {2, 16, 200, 300, ta, tb, false, true, false, -1.5f, 0.25f, path}, g);  // several tasks per entry
    }
}

// The two paths on the same inputs agree to fp32 rounding of the K terms (they sum in different orders), on the scale
// the naive comparison uses.
TEST(matmul_skinny_path_agrees_with_packed_path) {
  Context ctx;
  std::mt19937 g(8);
  for (int64_t M : {1, 4, 11, 16})
    for (int t = 0; t < 4; ++t) {
      const int64_t N = 259, K = 263;
      auto A = randvec(static_cast<size_t>(M * K), g), B = randvec(static_cast<size_t>(K * N), g), bias = randvec(N, g);
      std::vector<float> C1(static_cast<size_t>(M * N)), C2(C1.size()), P1(C1.size()), P2(C1.size());
      for (auto* c : {&C1, &C2, &P1, &P2}) std::memset(c->data(), 0xff, c->size() * 4);  // NaN: every output written
      for (int p = 0; p < 2; ++p) {
        cpu::MatmulDesc d = cpu::matmul_desc(M, N, K, t & 1, t & 2, A.data(), B.data(), p ? C2.data() : C1.data());
        d.bias = bias.data();
        d.act = cpu::Activation::Gelu;
        d.preact = p ? P2.data() : P1.data();
        d.path = p ? cpu::MatmulPath::Packed : cpu::MatmulPath::Skinny;
        cpu::matmul(ctx.pool(), d);
      }
      double worst = 0;
      for (size_t i = 0; i < C1.size(); ++i) {
        worst = std::max(worst, std::fabs(double(C1[i]) - C2[i]) / (1.0 + std::sqrt(double(K))));
        worst = std::max(worst, std::fabs(double(P1[i]) - P2[i]) / (1.0 + std::sqrt(double(K))));
        if (!std::isfinite(C1[i]) || !std::isfinite(P1[i])) worst = INFINITY;
      }
      if (!(worst < 1e-5)) sfcheck::fail(__FILE__, __LINE__, cat("skinny vs packed M=", M, " t=", t, ": ", worst));
    }
}

// NaN and infinity reach exactly the outputs IEEE arithmetic says, on the skinny path: a NaN in row i of op(A) makes
// row i of C NaN, a NaN in column j of op(B) column j; inf * 0 is NaN; the lanes that pad a partial vector are not
// visible inputs and make nothing NaN.
TEST(matmul_skinny_path_propagates_nan_exactly) {
  Context ctx;
  std::mt19937 g(9);
  const float nan = std::nanf(""), inf = INFINITY;
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    const int64_t M = 5, N = 37, K = 19;
    auto A = randvec(M * K, g), B = randvec(K * N, g);
    auto at = [&](int64_t i, int64_t k) -> float& { return A[size_t(ta ? k * M + i : i * K + k)]; };
    auto bt = [&](int64_t k, int64_t j) -> float& { return B[size_t(tb ? j * K + k : k * N + j)]; };
    at(1, 18) = nan;  // row 1 of C
    bt(0, 36) = nan;  // column 36 of C
    at(3, 4) = inf;   // row 3 is inf * B[4][j]: NaN where that is 0, +-inf elsewhere ...
    bt(4, 2) = 0.0f;  // ... so C[3][2] is NaN
    std::vector<float> C(size_t(M * N));
    std::memset(C.data(), 0xff, C.size() * 4);
    cpu::MatmulDesc d = cpu::matmul_desc(M, N, K, ta, tb, A.data(), B.data(), C.data());
    d.path = cpu::MatmulPath::Skinny;
    cpu::matmul(ctx.pool(), d);
    bool ok = true;
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        const float c = C[size_t(i * N + j)];
        const bool want_nan = i == 1 || j == 36 || (i == 3 && j == 2);
        if (want_nan != std::isnan(c)) ok = false;
        if (i == 3 && !want_nan && !std::isinf(c)) ok = false;
      }
    if (!ok) sfcheck::fail(__FILE__, __LINE__, cat("skinny NaN propagation ta=", ta, " tb=", tb));
  }
}

// A pre-packed B (pack_b_full, read through d.b_packed) gives the bits of packing B in the product, for every
// transpose, odd sizes, several K blocks (K > 256), partial column panels, beta and the bias + GELU epilogue; the
// packed copy is exactly packed_b_floats long (its padding is written, NaN-filled beforehand) and NaN in B reaches
// exactly the columns it should.
TEST(matmul_prepacked_b_gives_the_same_bits) {
  Context ctx;
  std::mt19937 g(10);
  for (auto [M, N, K] : {std::tuple<int64_t, int64_t, int64_t>{17, 33, 7}, {50, 259, 263}, {128, 1024, 256},
                         {33, 17, 600}, {200, 5, 1}})
    for (int t = 0; t < 4; ++t) {
      const bool ta = t & 1, tb = t & 2;
      auto A = randvec(size_t(M * K), g), B = randvec(size_t(K * N), g), bias = randvec(size_t(N), g);
      B[size_t((K / 2) * N + N / 3)] = std::nanf("");  // one NaN in B: column tb ? ... : N / 3 of C
      auto C0 = randvec(size_t(M * N), g);
      std::vector<float> packed(size_t(cpu::packed_b_floats(N, K)) + 16);
      std::memset(packed.data(), 0xff, packed.size() * 4);
      cpu::pack_b_full(ctx.pool(), B.data(), tb, N, K, packed.data());
      bool tail_kept = true;  // nothing written past packed_b_floats
      for (size_t i = packed.size() - 16; i < packed.size(); ++i) tail_kept &= std::isnan(packed[i]);
      CHECK(tail_kept);
      std::vector<float> C1 = C0, C2 = C0, P1(C0.size()), P2(C0.size());
      for (int p = 0; p < 2; ++p) {
        cpu::MatmulDesc d = cpu::matmul_desc(M, N, K, ta, tb, A.data(), B.data(), p ? C2.data() : C1.data());
        d.beta = 0.5f;
        d.bias = bias.data();
        d.act = cpu::Activation::Gelu;
        d.preact = p ? P2.data() : P1.data();
        d.path = cpu::MatmulPath::Packed;
        if (p) d.b_packed = packed.data();
        CHECK(cpu::uses_packed_path(d));
        cpu::matmul(ctx.pool(), d);
      }
      if (std::memcmp(C1.data(), C2.data(), C1.size() * 4) != 0 || std::memcmp(P1.data(), P2.data(), P1.size() * 4) != 0)
        sfcheck::fail(__FILE__, __LINE__, cat("prepacked B differs: M=", M, " N=", N, " K=", K, " t=", t));
      // the NaN reaches column j of op(B) (B is (K, N) or, transposed, (N, K)) and no other
      const int64_t flat = (K / 2) * N + N / 3, j_nan = tb ? flat / K : flat % N;
      bool nan_ok = true;
      for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) nan_ok &= std::isnan(C2[size_t(i * N + j)]) == (j == j_nan);
      if (!nan_ok) sfcheck::fail(__FILE__, __LINE__, cat("prepacked NaN column: M=", M, " N=", N, " K=", K, " t=", t));
    }
  // the skinny path packs nothing: not a packed-path product
  cpu::MatmulDesc d = cpu::matmul_desc(16, 8, 8, false, false, nullptr, nullptr, nullptr);
  CHECK(!cpu::uses_packed_path(d));
  d.path = cpu::MatmulPath::Packed;
  CHECK(cpu::uses_packed_path(d));
  d.K = 0;
  CHECK(!cpu::uses_packed_path(d));
}

TEST(matmul_with_k_zero_applies_beta_and_epilogue) {
  Context ctx;
  std::mt19937 g(3);
  run_case(ctx, {2, 5, 6, 0, false, false, false, true, true, 1, 0.5f}, g);
  run_case(ctx, {1, 5, 6, 0, true, true, false, false, false, 1, 0}, g);
}

TEST(matmul_is_identical_for_any_thread_count) {
  std::mt19937 g(4);
  // the packed path, and the skinny path at a size split across threads
  for (auto [M, N, K, tb] : {std::tuple<int64_t, int64_t, int64_t, bool>{257, 131, 517, true}, {3, 3000, 700, false},
                             {3, 3000, 700, true}}) {
    const auto A = randvec(size_t(M * K), g), B = randvec(size_t(K * N), g);
    std::vector<float> C1(size_t(M * N)), C3(C1.size());
    for (int threads : {1, 3}) {
      ThreadPool pool(threads);
      cpu::matmul(pool, cpu::matmul_desc(M, N, K, false, tb, A.data(), B.data(), threads == 1 ? C1.data() : C3.data()));
    }
    CHECK(std::memcmp(C1.data(), C3.data(), C1.size() * 4) == 0);
  }
}

// Linear layer with GELU: y = gelu(x W^T + b), loss = sum(y * R). Backward from matmul kernels:
//   dpre = R * gelu'(pre);  dx += dpre W;  dW += dpre^T x;  db += colsum(dpre)
TEST(linear_backward_from_matmul_matches_finite_differences) {
  Context ctx;
  std::mt19937 g(5);
  const int64_t T = 6, Cin = 5, Cout = 7;
  auto x = randvec(T * Cin, g), W = randvec(Cout * Cin, g), b = randvec(Cout, g), R = randvec(T * Cout, g);
  auto loss = [&](const std::vector<float>& xx, const std::vector<float>& WW, const std::vector<float>& bb,
                  int which, size_t idx, double delta) {
    double s = 0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t o = 0; o < Cout; ++o) {
        double pre = (which == 2 && size_t(o) == idx) ? double(bb[size_t(o)]) + delta : double(bb[size_t(o)]);
        for (int64_t i = 0; i < Cin; ++i) {
          double xv = xx[size_t(t * Cin + i)] + ((which == 0 && size_t(t * Cin + i) == idx) ? delta : 0.0);
          double wv = WW[size_t(o * Cin + i)] + ((which == 1 && size_t(o * Cin + i) == idx) ? delta : 0.0);
          pre += xv * wv;
        }
        s += gelu_d(pre) * R[size_t(t * Cout + o)];
      }
    return s;
  };
  // forward with the kernel (pre-activation saved)
  std::vector<float> y(T * Cout), pre(T * Cout);
  cpu::MatmulDesc f;
  f.M = T;
  f.N = Cout;
  f.K = Cin;
  f.trans_b = true;
  f.a = x.data();
  f.b = W.data();
  f.c = y.data();
  f.bias = b.data();
  f.act = cpu::Activation::Gelu;
  f.preact = pre.data();
  cpu::matmul(ctx.pool(), f);
  std::vector<float> dpre(T * Cout);
  for (size_t i = 0; i < dpre.size(); ++i) dpre[i] = R[i] * simd::gelu_grad_scalar(pre[i]);
  // gradients start from a known value to prove accumulation
  std::vector<float> dx(T * Cin, 0.5f), dW(Cout * Cin, -0.25f), db(Cout, 1.0f);
  cpu::MatmulDesc bx;  // dx (T, Cin) += dpre (T, Cout) @ W (Cout, Cin)
  bx.M = T;
  bx.N = Cin;
  bx.K = Cout;
  bx.a = dpre.data();
  bx.b = W.data();
  bx.c = dx.data();
  bx.beta = 1.0f;
  cpu::matmul(ctx.pool(), bx);
  cpu::MatmulDesc bw;  // dW (Cout, Cin) += dpre^T (Cout, T) @ x (T, Cin)
  bw.M = Cout;
  bw.N = Cin;
  bw.K = T;
  bw.trans_a = true;
  bw.a = dpre.data();
  bw.b = x.data();
  bw.c = dW.data();
  bw.beta = 1.0f;
  cpu::matmul(ctx.pool(), bw);
  cpu::bias_grad(ctx.pool(), dpre.data(), T, Cout, db.data());
  const double h = 1e-4;
  auto fd = [&](int which, size_t idx) { return (loss(x, W, b, which, idx, h) - loss(x, W, b, which, idx, -h)) / (2 * h); };
  double worst = 0;
  for (size_t i = 0; i < dx.size(); ++i) worst = std::max(worst, std::fabs((dx[i] - 0.5) - fd(0, i)));
  for (size_t i = 0; i < dW.size(); ++i) worst = std::max(worst, std::fabs((dW[i] + 0.25) - fd(1, i)));
  for (size_t i = 0; i < db.size(); ++i) worst = std::max(worst, std::fabs((db[i] - 1.0) - fd(2, i)));
  CHECK(worst < 2e-4);
}

TEST(bias_grad_accumulates_column_sums) {
  Context ctx;
  std::mt19937 g(6);
  for (int64_t rows : {int64_t{1}, int64_t{33}, int64_t{1000}})
    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{300}}) {
      auto dy = randvec(size_t(rows * n), g);
      std::vector<float> db(size_t(n), 2.0f);
      cpu::bias_grad(ctx.pool(), dy.data(), rows, n, db.data());
      double worst = 0;
      for (int64_t j = 0; j < n; ++j) {
        double s = 2.0;
        for (int64_t r = 0; r < rows; ++r) s += dy[size_t(r * n + j)];
        worst = std::max(worst, std::fabs(db[size_t(j)] - s) / (1 + std::sqrt(double(rows))));
      }
      CHECK(worst < 1e-5);
    }
}

TEST(simd_exp_tanh_gelu_match_libm) {
  double e_exp = 0, e_tanh = 0, e_gelu = 0, e_grad = 0;
  for (float x = -90.0f; x <= 90.0f; x += 0.0137f) {
    simd::f32x8 v = simd::splat<simd::f32x8>(x);
    double ex = std::exp(double(x));
    if (ex > 1e-37 && ex < 1e38) e_exp = std::max(e_exp, std::fabs(simd::exp(v)[0] - ex) / ex);
    e_tanh = std::max(e_tanh, std::fabs(simd::tanh(v)[3] - std::tanh(double(x))));
    if (std::fabs(x) < 20) {
      e_gelu = std::max(e_gelu, std::fabs(simd::gelu(v)[5] - gelu_d(x)) / (1 + std::fabs(x)));
      double h = 1e-5, gd = (gelu_d(x + h) - gelu_d(x - h)) / (2 * h);
      e_grad = std::max(e_grad, std::fabs(simd::gelu_grad(v)[7] - gd));
    }
  }
  CHECK(e_exp < 5e-7);
  CHECK(e_tanh < 5e-7);
  CHECK(e_gelu < 5e-7);
  CHECK(e_grad < 5e-6);
  CHECK(simd::exp(simd::splat<simd::f32x4>(-1000.0f))[0] == 0.0f);
  CHECK(std::isinf(simd::exp(simd::splat<simd::f32x4>(1000.0f))[0]));
}

TEST_MAIN()
