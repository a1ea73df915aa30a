// layernorm.cpp — layer normalisation over the last dimension: y = (x - mean) * rstd * w + b (see kernels.h).
//
// Forward: one row per step, three sweeps over the row while it sits in L1 (sum -> mean, sum of squared deviations ->
// rstd, then y), so the row is read from memory once and the variance is the accurate two-pass one. mean and rstd are
// saved for the backward pass. Rows are independent: any split over threads gives the same bits.
// Backward, with xhat = (x - mean) * rstd and g = dy * w:
//   dx += rstd * (g - mean(g) - xhat * mean(g * xhat)),   dw += sum over rows of dy * xhat,   db += sum of dy.
// dx is per row. dw and db are reductions over rows, made deterministic by splitting the rows into fixed chunks that
// depend only on the row count (not on the thread count): each chunk sums its rows in order into its own partial
// (dw, db) in the pool workspace, then the partials are added in chunk order.
// All hot loops are templates over the vector type, instantiated per ISA by SF_VARIANTS.
#include <algorithm>
#include <cmath>

#include "kernels.h"
#include "simd.h"

namespace sf::cpu {

using namespace sf::simd;

namespace {

// Row chunk of the dw/db reduction: at least kMinChunkRows rows, and at most kMaxChunks chunks (bounds the workspace).
constexpr int64_t kMinChunkRows = 64;
constexpr int64_t kMaxChunks = 1024;

// sum of xr[0, C)
template <typename V>
SF_INLINE float row_sum(const float* xr, int64_t C) {
  constexpr int W = Traits<V>::W;
  V s0{}, s1{};
  int64_t j = 0;
  for (; j + 2 * W <= C; j += 2 * W) {
    s0 += load<V>(xr + j);
    s1 += load<V>(xr + j + W);
  }
  for (; j + W <= C; j += W) s0 += load<V>(xr + j);
  float s = hsum(s0 + s1);
  for (; j < C; ++j) s += xr[j];
  return s;
}

// sum of (xr[j] - m)^2 over [0, C)
template <typename V>
SF_INLINE float row_sq_dev(const float* xr, int64_t C, float m) {
  constexpr int W = Traits<V>::W;
  const V mv = splat<V>(m);
  V s0{}, s1{};
  int64_t j = 0;
  for (; j + 2 * W <= C; j += 2 * W) {
    V d0 = load<V>(xr + j) - mv, d1 = load<V>(xr + j + W) - mv;
    s0 += d0 * d0;
    s1 += d1 * d1;
  }
  for (; j + W <= C; j += W) {
    V d = load<V>(xr + j) - mv;
    s0 += d * d;
  }
  float s = hsum(s0 + s1);
  for (; j < C; ++j) s += (xr[j] - m) * (xr[j] - m);
  return s;
}

// Rows [lo, hi): x, y (rows, C); w, b (C); mean, rstd (rows).
template <typename V>
void ln_forward_body(int64_t lo, int64_t hi, const float* x, const float* w, const float* b, float* y, float* mean,
                     float* rstd, int64_t C, float eps) {
  constexpr int W = Traits<V>::W;
  const float inv_c = 1.0f / static_cast<float>(C);
  for (int64_t r = lo; r < hi; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    const float m = row_sum<V>(xr, C) * inv_c;
    const float var = row_sq_dev<V>(xr, C, m) * inv_c;
    const float rs = 1.0f / std::sqrt(var + eps);
    mean[r] = m;
    rstd[r] = rs;
    const V mv = splat<V>(m), rv = splat<V>(rs);
    int64_t j = 0;
    for (; j + W <= C; j += W) store<V>(yr + j, (load<V>(xr + j) - mv) * rv * load<V>(w + j) + load<V>(b + j));
    for (; j < C; ++j) yr[j] = (xr[j] - m) * rs * w[j] + b[j];
  }
}
SF_VARIANTS(ln_forward,
            (int64_t lo, int64_t hi, const float* x, const float* w, const float* b, float* y, float* mean,
             float* rstd, int64_t C, float eps),
            (lo, hi, x, w, b, y, mean, rstd, C, eps), ln_forward_body)

// Rows [r0, r1) of the backward pass (one chunk). dx (rows, C) += ... (null to skip); pdw, pdb (C): this chunk's
// partial sums of dy * xhat and dy, overwritten. One code path whether or not dw/db are wanted, so that dx has the
// same bits either way.
template <typename V>
void ln_backward_body(int64_t r0, int64_t r1, const float* dy, const float* x, const float* w, const float* mean,
                      const float* rstd, float* dx, float* pdw, float* pdb, int64_t C) {
  constexpr int W = Traits<V>::W;
  const float inv_c = 1.0f / static_cast<float>(C);
  for (int64_t j = 0; j < C; ++j) {
    pdw[j] = 0.0f;
    pdb[j] = 0.0f;
  }
  for (int64_t r = r0; r < r1; ++r) {
    const float* dyr = dy + r * C;
    const float* xr = x + r * C;
    const float m = mean[r], rs = rstd[r];
    const V mv = splat<V>(m), rv = splat<V>(rs);
    // sweep 1: sum(g), sum(g * xhat) and the dw/db partials
    V sg{}, sgx{};
    float sg_s = 0.0f, sgx_s = 0.0f;
    int64_t j = 0;
    for (; j + W <= C; j += W) {
      const V d = load<V>(dyr + j), xh = (load<V>(xr + j) - mv) * rv, g = rounded(d * load<V>(w + j));
      sg += g;
      sgx += g * xh;
      store<V>(pdw + j, load<V>(pdw + j) + d * xh);
      store<V>(pdb + j, load<V>(pdb + j) + d);
    }
    for (; j < C; ++j) {
      const float d = dyr[j], xh = (xr[j] - m) * rs, g = rounded(d * w[j]);
      sg_s += g;
      sgx_s += g * xh;
      pdw[j] += d * xh;
      pdb[j] += d;
    }
    if (!dx) continue;
    // sweep 2: dx += rstd * (g - mean(g) - xhat * mean(g * xhat)); g rounded in both sweeps (simd::rounded), so that
    // g - mean(g) is exactly 0 where every g is equal (C = 1): a fused d * w - a would leave d * w's rounding error
    // times rstd (up to 1 / sqrt(eps))
    const float a = (hsum(sg) + sg_s) * inv_c, c = (hsum(sgx) + sgx_s) * inv_c;
    const V av = splat<V>(a), cv = splat<V>(c);
    float* dxr = dx + r * C;
    j = 0;
    for (; j + W <= C; j += W) {
      const V xh = (load<V>(xr + j) - mv) * rv, g = rounded(load<V>(dyr + j) * load<V>(w + j));
      store<V>(dxr + j, load<V>(dxr + j) + rv * (g - av - xh * cv));
    }
    for (; j < C; ++j) {
      const float xh = (xr[j] - m) * rs, g = rounded(dyr[j] * w[j]);
      dxr[j] += rs * (g - a - xh * c);
    }
  }
}
SF_VARIANTS(ln_backward,
            (int64_t r0, int64_t r1, const float* dy, const float* x, const float* w, const float* mean,
             const float* rstd, float* dx, float* pdw, float* pdb, int64_t C),
            (r0, r1, dy, x, w, mean, rstd, dx, pdw, pdb, C), ln_backward_body)

// Columns [lo, hi): out[j] += sum over chunks k (in order) of part[k * stride + j].
template <typename V>
void sum_partials_body(int64_t lo, int64_t hi, const float* part, int64_t nchunks, int64_t stride, float* out) {
  constexpr int W = Traits<V>::W;
  int64_t j = lo;
  for (; j + W <= hi; j += W) {
    V s{};
    for (int64_t k = 0; k < nchunks; ++k) s += load<V>(part + k * stride + j);
    store<V>(out + j, load<V>(out + j) + s);
  }
  for (; j < hi; ++j) {
    float s = 0.0f;
    for (int64_t k = 0; k < nchunks; ++k) s += part[k * stride + j];
    out[j] += s;
  }
}
SF_VARIANTS(sum_partials, (int64_t lo, int64_t hi, const float* part, int64_t nchunks, int64_t stride, float* out),
            (lo, hi, part, nchunks, stride, out), sum_partials_body)

// Rows per parallel task for row-wise work: about 16K elements per task.
int64_t row_grain(int64_t C) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)); }

}  // namespace

void layernorm_forward(ThreadPool& pool, const float* x, const float* w, const float* b, float* y, float* mean,
                       float* rstd, int64_t rows, int64_t C, float eps) {
  if (rows <= 0 || C <= 0) return;
  auto fn = SF_PICK(ln_forward);
  pool.parallel_for(rows, row_grain(C), [&](int64_t lo, int64_t hi) { fn(lo, hi, x, w, b, y, mean, rstd, C, eps); });
}

void layernorm_backward(ThreadPool& pool, const float* dy, const float* x, const float* w, const float* mean,
                        const float* rstd, float* dx, float* dw, float* db, int64_t rows, int64_t C) {
  if (rows <= 0 || C <= 0 || (!dx && !dw && !db)) return;
  auto fn = SF_PICK(ln_backward);
  // Fixed chunks of rows (a function of `rows` only), each with its own (dw, db) partial: part[k] = [dw (C), db (C)].
  // The partials are made even when only dx is wanted (a few L1-resident adds per element), so dx never depends on
  // which gradients were asked for.
  const int64_t chunk_rows = std::max(kMinChunkRows, (rows + kMaxChunks - 1) / kMaxChunks);
  const int64_t nchunks = (rows + chunk_rows - 1) / chunk_rows;
  float* part = pool.workspace(static_cast<size_t>(nchunks * 2 * C));  // (nchunks, 2, C)
  pool.parallel_for(nchunks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t k = lo; k < hi; ++k) {
      const int64_t r0 = k * chunk_rows, r1 = std::min(rows, r0 + chunk_rows);
      fn(r0, r1, dy, x, w, mean, rstd, dx, part + k * 2 * C, part + k * 2 * C + C, C);
    }
  });
  auto sum = SF_PICK(sum_partials);
  if (!dw && !db) return;
  pool.parallel_for(C, 256, [&](int64_t lo, int64_t hi) {
    if (dw) sum(lo, hi, part, nchunks, 2 * C, dw);
    if (db) sum(lo, hi, part + C, nchunks, 2 * C, db);
  });
}

}  // namespace sf::cpu
