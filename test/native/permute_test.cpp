// permute_test.cpp — the head split/merge permutation dst (A, C, B, D) (= or +=) src (A, B, C, D) against a naive
// loop: random shapes with odd sizes (1, 7, 33, 129), every specialised row length D with partial tiles along b and c,
// the identity cases B = 1 and C = 1, outputs poisoned with NaN before every run; += semantics into a pre-filled dst;
// the backward (the inverse permutation, accumulating) against central finite differences of L = sum(out * R); the
// round trip split -> merge is the identity; results identical for thread counts 1 and 3; empty dimensions write
// nothing.
#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "check.h"
#include "ref_util.h"
#include "core/context.h"
#include "cpu/kernels.h"

using namespace sf;

namespace {

struct Dims4 {
  int64_t A, B, C, D;
  int64_t numel() const { return A * B * C * D; }
};

using sftest::randvec;
std::vector<float> poisoned(size_t n) {
  std::vector<float> v(n);
  std::memset(v.data(), 0xff, n * sizeof(float));  // NaN: an unwritten element fails every check
  return v;
}

// The naive permutation in double: out (A, C, B, D) = x (A, B, C, D) with b and c swapped.
std::vector<double> ref_permute(const Dims4& s, const std::vector<double>& x) {
  std::vector<double> out(static_cast<size_t>(s.numel()));
  for (int64_t a = 0; a < s.A; ++a)
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t c = 0; c < s.C; ++c)
        for (int64_t d = 0; d < s.D; ++d)
          out[static_cast<size_t>(((a * s.C + c) * s.B + b) * s.D + d)] =
              x[static_cast<size_t>(((a * s.B + b) * s.C + c) * s.D + d)];
  return out;
}

std::vector<double> to_d(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

// Fixed shapes (odd sizes, identity cases, several tiles of b) and random ones drawn from {1, 2, 7, 33}.
std::vector<Dims4> shapes() {
  std::vector<Dims4> s = {
      {1, 1, 1, 1},   {2, 7, 3, 1},   {1, 33, 7, 2},  {3, 7, 33, 5},  {2, 1, 7, 33},   {2, 7, 1, 33},
      {1, 129, 3, 7}, {2, 3, 5, 129}, {1, 33, 2, 129}, {2, 300, 5, 3}, {1, 520, 3, 1}, {2, 16, 8, 64},
  };
  // Every row length the kernel specialises (1 to 8, 9 to 15, 16 and up), with partial tiles along b and c.
  for (int64_t D : {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 15, 16, 17, 31, 64, 65, 257}) s.push_back({2, 19, 256 / D + 7, D});
  std::mt19937 g(1234);
  const int64_t pick[] = {1, 2, 7, 33};
  std::uniform_int_distribution<int> u(0, 3);
  for (int i = 0; i < 12; ++i) s.push_back({pick[u(g)], pick[u(g)], pick[u(g)], pick[u(g)]});
  return s;
}

}  // namespace

TEST(permute_matches_the_naive_permutation) {
  Context ctx;
  std::mt19937 g(1);
  for (const Dims4& s : shapes()) {
    const size_t n = static_cast<size_t>(s.numel());
    std::vector<float> x = randvec(n, g);
    std::vector<float> y = poisoned(n);
    cpu::permute0213(ctx.pool(), x.data(), y.data(), s.A, s.B, s.C, s.D, false);
    std::vector<double> want = ref_permute(s, to_d(x));
    int bad = 0;
    for (size_t i = 0; i < n; ++i) bad += !(static_cast<double>(y[i]) == want[i]);  // a copy is exact
    if (bad)
      std::fprintf(stderr, "  shape (%ld, %ld, %ld, %ld): %d wrong\n", static_cast<long>(s.A), static_cast<long>(s.B),
                   static_cast<long>(s.C), static_cast<long>(s.D), bad);
    CHECK_EQ(bad, 0);
  }
}

TEST(accumulate_adds_into_a_prefilled_dst) {
  Context ctx;
  std::mt19937 g(2);
  for (const Dims4& s : shapes()) {
    const size_t n = static_cast<size_t>(s.numel());
    std::vector<float> x = randvec(n, g);
    std::vector<float> init = randvec(n, g, 1.0f, 2.0f);
    std::vector<float> y = init;
    cpu::permute0213(ctx.pool(), x.data(), y.data(), s.A, s.B, s.C, s.D, true);
    std::vector<double> p = ref_permute(s, to_d(x));
    int bad = 0;
    for (size_t i = 0; i < n; ++i) bad += !(y[i] == init[i] + static_cast<float>(p[i]));  // one float add: exact match
    CHECK_EQ(bad, 0);
    // A second accumulation adds again.
    cpu::permute0213(ctx.pool(), x.data(), y.data(), s.A, s.B, s.C, s.D, true);
    double worst = 0;
    for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(y[i] - (init[i] + 2.0 * p[i])));
    CHECK(worst <= 1e-6);
  }
}

// The backward of out = permute0213(x) is dx += permute0213(dout) on (A, C, B, D): checked by central differences of
// L = sum(out * R), the forward computed in double.
TEST(backward_matches_finite_differences) {
  Context ctx;
  std::mt19937 g(3);
  const Dims4 cases[] = {{1, 3, 2, 1}, {2, 3, 4, 5}, {1, 7, 3, 2}, {2, 1, 3, 3}};
  for (const Dims4& s : cases) {
    const size_t n = static_cast<size_t>(s.numel());
    std::vector<float> x = randvec(n, g), R = randvec(n, g);
    std::vector<double> xd = to_d(x), Rd = to_d(R);
    auto loss = [&](const std::vector<double>& in) {
      std::vector<double> out = ref_permute(s, in);
      double L = 0;
      for (size_t i = 0; i < n; ++i) L += out[i] * Rd[i];
      return L;
    };
    std::vector<float> init = randvec(n, g, 1.0f, 2.0f);
    std::vector<float> dx = init;
    // R is shaped like out (A, C, B, D); permuting it back swaps C and B again.
    cpu::permute0213(ctx.pool(), R.data(), dx.data(), s.A, s.C, s.B, s.D, true);
    const double h = 1e-3;
    double worst = 0;
    for (size_t i = 0; i < n; ++i) {
      std::vector<double> xp = xd, xm = xd;
      xp[i] += h;
      xm[i] -= h;
      const double num = (loss(xp) - loss(xm)) / (2 * h);
      worst = std::max(worst, std::fabs((static_cast<double>(dx[i]) - init[i]) - num));
    }
    CHECK(worst <= 1e-5);
  }
}

TEST(split_then_merge_is_the_identity) {
  Context ctx;
  std::mt19937 g(4);
  struct Heads {
    int64_t B, T, H, Dh;
  };
  for (const Heads& s : {Heads{2, 7, 3, 5}, Heads{1, 33, 4, 16}, Heads{3, 1, 2, 7}, Heads{2, 129, 1, 33},
                         Heads{1, 65, 12, 1}}) {
    const size_t n = static_cast<size_t>(s.B * s.T * s.H * s.Dh);
    std::vector<float> x = randvec(n, g);  // (B, T, H * Dh)
    std::vector<float> heads = poisoned(n), back = poisoned(n);
    cpu::permute0213(ctx.pool(), x.data(), heads.data(), s.B, s.T, s.H, s.Dh, false);     // -> (B, H, T, Dh)
    cpu::permute0213(ctx.pool(), heads.data(), back.data(), s.B, s.H, s.T, s.Dh, false);  // -> (B, T, H * Dh)
    CHECK(std::memcmp(back.data(), x.data(), n * sizeof(float)) == 0);
    // Head h of token t sits at heads[b][h][t].
    const int64_t b = s.B - 1, t = s.T / 2, hh = s.H - 1;
    CHECK(heads[static_cast<size_t>(((b * s.H + hh) * s.T + t) * s.Dh)] ==
          x[static_cast<size_t>(((b * s.T + t) * s.H + hh) * s.Dh)]);
  }
}

TEST(results_do_not_depend_on_the_thread_count) {
  Context ctx;
  std::mt19937 g(5);
  for (const Dims4& s : {Dims4{2, 300, 5, 3}, Dims4{3, 33, 7, 129}, Dims4{4, 64, 8, 16}, Dims4{1, 1, 1000, 33}}) {
    const size_t n = static_cast<size_t>(s.numel());
    std::vector<float> x = randvec(n, g), init = randvec(n, g);
    std::vector<float> y[2], z[2];
    for (int run = 0; run < 2; ++run) {
      ctx.pool().set_threads(run == 0 ? 1 : 3);
      y[run] = poisoned(n);
      cpu::permute0213(ctx.pool(), x.data(), y[run].data(), s.A, s.B, s.C, s.D, false);
      z[run] = init;
      cpu::permute0213(ctx.pool(), x.data(), z[run].data(), s.A, s.B, s.C, s.D, true);
    }
    CHECK(std::memcmp(y[0].data(), y[1].data(), n * sizeof(float)) == 0);
    CHECK(std::memcmp(z[0].data(), z[1].data(), n * sizeof(float)) == 0);
  }
}

TEST(empty_dimensions_write_nothing) {
  Context ctx;
  float x[4] = {1, 2, 3, 4}, y[4] = {7, 7, 7, 7};
  const Dims4 cases[] = {{0, 2, 2, 1}, {1, 0, 2, 2}, {1, 2, 0, 2}, {1, 2, 2, 0}};
  for (const Dims4& s : cases)
    for (bool acc : {false, true}) cpu::permute0213(ctx.pool(), x, y, s.A, s.B, s.C, s.D, acc);
  for (float v : y) CHECK(v == 7.0f);
}

TEST_MAIN()
