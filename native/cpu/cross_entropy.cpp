// cross_entropy.cpp — fused softmax cross-entropy: the mean loss and, in the same pass, its gradient (see kernels.h).
//
// loss_r = logsumexp(x_r) - x_r[t_r]; dlogits_r = (softmax(x_r) - onehot(t_r)) * grad_scale / count.
// One task handles whole rows; a row is read three times while it sits in cache (a 32000-wide row is 125 KiB, in L2):
//   1. the row maximum;
//   2. e = exp(x - max) (simd::exp) summed in float vectors, e stored into dlogits when it is wanted;
//   3. dlogits *= scale / sum, and scale subtracted at the target.
// With dlogits == logits the row is overwritten in place (the target's logit is read before pass 2). The per-row
// losses go to the pool workspace in double and are added in row order, so the loss does not depend on the thread
// count; each row's arithmetic does not either (the partial last vector is padded, not handled by a scalar loop).
// Targets are all checked before anything is written.
// NaN: a NaN logit makes its row's loss (so the mean loss) and its row of dlogits NaN, and no other row: exp(x - max)
// of the NaN element is NaN whatever the max (simd::exp keeps NaN; the max may drop it, see simd.h) and the sum spreads
// it. A +inf logit gives NaN the same way (inf - inf), as in PyTorch.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../core/error.h"
#include "kernels.h"
#include "simd.h"

namespace sf::cpu {

using namespace sf::simd;

namespace {


struct CeArgs {
  const float* logits;     // (N, V)
  const int32_t* targets;  // (N)
  int64_t V;
  int32_t ignore_index;
  float* dlogits;   // (N, V) or null; may equal logits
  float scale;      // grad_scale / count
  double* losses;   // (N) per-row losses (0 on ignored rows)
};

template <typename V>
void ce_rows_body(const CeArgs& a, int64_t lo, int64_t hi) {
  constexpr int W = Traits<V>::W;
  const int64_t n = a.V, full = n / W * W, rest = n - full;
  for (int64_t r = lo; r < hi; ++r) {
    const float* x = a.logits + r * n;
    float* d = a.dlogits ? a.dlogits + r * n : nullptr;
    const int32_t t = a.targets[r];
    if (t == a.ignore_index) {
      a.losses[r] = 0.0;
      if (d) std::memset(d, 0, static_cast<size_t>(n) * sizeof(float));
      continue;
    }
    const float xt = x[t];
    // 1. maximum
    V m0 = splat<V>(-INFINITY), m1 = m0;
    int64_t i = 0;
    for (; i + 2 * W <= full; i += 2 * W) {
      m0 = vmax(m0, load<V>(x + i));
      m1 = vmax(m1, load<V>(x + i + W));
    }
    if (i < full) m0 = vmax(m0, load<V>(x + i));
    if (rest) m1 = vmax(m1, load_part<V>(x + full, rest, -INFINITY));
    const float mx = hmax(vmax(m0, m1));
    // 2. e = exp(x - max), summed (stored into d when wanted)
    const V vm = splat<V>(mx);
    V s0{}, s1{};
    i = 0;
    for (; i + 2 * W <= full; i += 2 * W) {
      V e0 = exp(load<V>(x + i) - vm), e1 = exp(load<V>(x + i + W) - vm);
      s0 += e0;
      s1 += e1;
      if (d) {
        store<V>(d + i, e0);
        store<V>(d + i + W, e1);
      }
    }
    if (i < full) {
      V e0 = exp(load<V>(x + i) - vm);
      s0 += e0;
      if (d) store<V>(d + i, e0);
    }
    if (rest) {
      V e1 = exp(load_part<V>(x + full, rest, -INFINITY) - vm);  // padding lanes give exp(-inf) = 0
      s1 += e1;
      if (d) store_part<V>(d + full, e1, rest);
    }
    const float sum = hsum(s0 + s1);
    a.losses[r] = static_cast<double>(mx) + std::log(static_cast<double>(sum)) - static_cast<double>(xt);
    if (!d) continue;
    // 3. d = e * scale / sum - scale * onehot
    const V f = splat<V>(a.scale / sum);
    for (i = 0; i + W <= full; i += W) store<V>(d + i, load<V>(d + i) * f);
    if (rest) store_part<V>(d + full, load_part<V>(d + full, rest, 0.0f) * f, rest);
    d[t] -= a.scale;
  }
}
SF_VARIANTS(ce_rows, (const CeArgs& a, int64_t lo, int64_t hi), (a, lo, hi), ce_rows_body)

}  // namespace

float cross_entropy(ThreadPool& pool, const float* logits, const int32_t* targets, int64_t N, int64_t V,
                    int32_t ignore_index, float* dlogits, float grad_scale) {
  // logits (N, V), targets (N), dlogits (N, V) or null
  if (N <= 0) return 0.0f;
  int64_t count = 0;
  for (int64_t r = 0; r < N; ++r) {
    const int32_t t = targets[r];
    if (t == ignore_index) continue;
    if (t < 0 || t >= V)
      range_error("cross_entropy: target ", t, " at row ", r, " is out of range [0, ", V, ") and is not ignore_index (",
                  ignore_index, ")");
    ++count;
  }
  if (V <= 0) return 0.0f;  // N rows of nothing: every target was ignore_index (else the check above threw)
  CeArgs a;
  a.logits = logits;
  a.targets = targets;
  a.V = V;
  a.ignore_index = ignore_index;
  a.dlogits = dlogits;
  a.scale = count ? static_cast<float>(static_cast<double>(grad_scale) / static_cast<double>(count)) : 0.0f;
  a.losses = reinterpret_cast<double*>(pool.workspace(static_cast<size_t>(N) * 2));  // (N) doubles
  auto fn = SF_PICK(ce_rows);
  const int64_t grain = std::max<int64_t>(1, 16384 / V);
  pool.parallel_for(N, grain, [&](int64_t lo, int64_t hi) { fn(a, lo, hi); });
  if (count == 0) return 0.0f;
  double total = 0.0;
  for (int64_t r = 0; r < N; ++r) total += a.losses[r];
  return static_cast<float>(total / static_cast<double>(count));
}

}  // namespace sf::cpu
