// attention.cpp — fused scaled-dot-product attention, forward and backward (see kernels.h for the exact semantics).
//
// Flash-attention scheme on the CPU: no Tq x Tk matrix is ever formed; scratch memory is linear in T.
//   forward, one task per (b, query head, block of BQ queries): the block's scaled Q^T is packed once; for each tile
//     of BK keys (tiles above the causal diagonal or past key_lengths are skipped) S^T = K_tile Q^T, masks, an online
//     softmax (running max m, running sum l, the accumulator rescaled by exp(m_old - m_new)), O^T += V_tile^T P^T.
//   backward (FlashAttention-2): delta_i = rowsum(dO_i * O_i), then per (query tile, key block) recompute S and
//     P = exp(S - lse), dP = dO V^T, dS = P (dP - delta); dV += P^T dO, dK += scale dS^T Q, dQ += scale dS K.
//     Two schedules, both deterministic and race-free (every gradient element is summed by one task, in a fixed order):
//     * fused: one task per (b, kv head) walks its key blocks in order, over every query head of the group, and
//       accumulates dK, dV per block and dQ for the whole sequence in scratch: 5 products per tile.
//     * two-pass: pass 1, one task per (b, kv head, key block): dK, dV; pass 2, one task per (b, query head, query
//       block): dQ, recomputing S and dP: 7 products per tile, but 1 + Tk / BK times as many tasks.
//     The fused one is used unless B * Hkv tasks would leave too many threads idle. Every row of every tile is computed
//     by the same operations in both, so the gradients are bit-identical whichever runs (and whatever the thread count).
// Layout: every small product is C (M x N) = A (M x K) B (K x N) with N, the packed block (queries in the forward,
// keys in the backward; padded to the vector width), along the vector lanes and A read in place from q/k/v/dout with
// broadcasts: the online softmax's maxima and sums are lane-wise (no horizontal reductions) and only the block a task
// keeps is packed. Micro-tiles: AVX-512 4 x 64, AVX2 6 x 16, portable 4 x 16 (register-blocked, as in matmul.cpp).
// NaN and Inf: a masked (query, key) pair is never multiplied. Scores are masked by selecting -inf (not by adding a
// mask), and where a masked exact 0 of P or dS would meet a value it hides (P V in the forward; dO^T P, Q^T dS, dS K in
// the backward) a cheap per-tile check of the hidden rows sends non-finite data to a path that skips the masked
// entries, so a NaN or Inf reaches exactly the outputs and gradients of the queries that see it.
// Scratch: one slice of pool.workspace() per worker slot (tasks are pulled from an atomic counter, so a slot is used
// by one thread at a time) of O((D + BK) * BQ) floats, plus Tq * D per query head of a group in the fused backward;
// the backward also keeps delta (B, Hq, Tq), and the two-pass schedule the packed K^T, V^T, K (3x the size of k).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>

#include "../core/error.h"
#include "kernels.h"
#include "simd.h"

namespace sf::cpu {

using namespace sf::simd;

namespace {

constexpr int64_t BQ = 64;  // queries per block (forward and dQ tasks) and per query tile (backward)
constexpr int64_t BK = 64;  // keys per tile (forward) and per key block (backward)
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

template <typename V>
struct Tile_;
template <>
struct Tile_<f32x16> {
  static constexpr int MR = 4, NR = 64;
};
template <>
struct Tile_<f32x8> {
  static constexpr int MR = 6, NR = 16;
};
template <>
struct Tile_<f32x4> {
  static constexpr int MR = 4, NR = 16;
};
static_assert(Tile_<f32x8>::MR <= 6 && Tile_<f32x16>::MR <= 6 && Tile_<f32x4>::MR <= 6, "panel() handles MR <= 6");

constexpr int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

enum class Mode { Store, Add, ScaleAdd };  // C = AB; C += AB; C = C * alpha[n] + AB

// C[0:R][0:NV*W] (row stride ldc) op= sum_k A(m, k) B[k][0:NV*W], A(m, k) = a[m * sm + k * sk], B rows of stride ldb.
// Each output row is one fused multiply-add chain over k in order, whatever R: a row's result does not depend on the
// rows it is grouped with (the backward relies on this for results that do not depend on the thread count).
template <typename V, int R, int NV>
SF_INLINE void micro(int64_t kc, const float* __restrict a, int64_t sm, int64_t sk, const float* __restrict b,
                     int64_t ldb, float* __restrict c, int64_t ldc, Mode mode, const float* alpha) {
  constexpr int W = Traits<V>::W;
  V acc[R][NV];
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) acc[i][j] = V{};
  for (int64_t k = 0; k < kc; ++k) {
    V bv[NV];
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) bv[j] = load<V>(b + k * ldb + j * W);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const float av = a[i * sm + k * sk];  // one broadcast
#pragma GCC unroll 8
      for (int j = 0; j < NV; ++j) acc[i][j] += av * bv[j];
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NV; ++j) {
      float* cp = c + i * ldc + j * W;
      if (mode == Mode::Store)
        store<V>(cp, acc[i][j]);
      else if (mode == Mode::Add)
        store<V>(cp, load<V>(cp) + acc[i][j]);
      else
        store<V>(cp, load<V>(cp) * load<V>(alpha + j * W) + acc[i][j]);
    }
}

// Rows [0, M) of one column panel of NV vectors: MR rows at a time, then the remaining rows.
template <typename V, int NV>
SF_INLINE void panel(int64_t M, int64_t K, const float* a, int64_t sm, int64_t sk, const float* b, int64_t ldb,
                     float* c, int64_t ldc, Mode mode, const float* alpha) {
  constexpr int MR = Tile_<V>::MR;
  int64_t m0 = 0;
  for (; m0 + MR <= M; m0 += MR) micro<V, MR, NV>(K, a + m0 * sm, sm, sk, b, ldb, c + m0 * ldc, ldc, mode, alpha);
  switch (M - m0) {  // MR <= 6
    case 1: micro<V, 1, NV>(K, a + m0 * sm, sm, sk, b, ldb, c + m0 * ldc, ldc, mode, alpha); break;
    case 2: micro<V, 2, NV>(K, a + m0 * sm, sm, sk, b, ldb, c + m0 * ldc, ldc, mode, alpha); break;
    case 3: micro<V, 3, NV>(K, a + m0 * sm, sm, sk, b, ldb, c + m0 * ldc, ldc, mode, alpha); break;
    case 4: micro<V, 4, NV>(K, a + m0 * sm, sm, sk, b, ldb, c + m0 * ldc, ldc, mode, alpha); break;
    case 5: micro<V, 5, NV>(K, a + m0 * sm, sm, sk, b, ldb, c + m0 * ldc, ldc, mode, alpha); break;
    default: break;
  }
}

// C (M x N, stride ldc) op= A (M x K, A(m, k) = a[m * sm + k * sk]) B (K x N, stride ldb); N is a multiple of W.
template <typename V>
SF_INLINE void gemm(int64_t M, int64_t N, int64_t K, const float* a, int64_t sm, int64_t sk, const float* b,
                    int64_t ldb, float* c, int64_t ldc, Mode mode, const float* alpha) {
  constexpr int W = Traits<V>::W, NR = Tile_<V>::NR;
  int64_t n0 = 0;
  for (; n0 + NR <= N; n0 += NR)
    panel<V, NR / W>(M, K, a, sm, sk, b + n0, ldb, c + n0, ldc, mode, alpha ? alpha + n0 : nullptr);
  for (; n0 < N; n0 += W) panel<V, 1>(M, K, a, sm, sk, b + n0, ldb, c + n0, ldc, mode, alpha ? alpha + n0 : nullptr);
}

template <typename V>
SF_INLINE V select(typename Traits<V>::I mask, V a, V b) {  // mask ? a : b, lane-wise
  using I = typename Traits<V>::I;
  return (V)(((I)a & mask) | ((I)b & ~mask));
}

// True if any of x[0, n) is Inf or NaN (x * 0 is 0 for a finite x, NaN otherwise). Guards the products below where a
// masked entry is an exact 0 that meets a value of a key or query it hides: 0 * Inf and 0 * NaN are NaN, so those
// products take a slower path that skips masked entries instead of multiplying them, when (only when) this is true.
template <typename V>
SF_INLINE bool any_nonfinite(const float* x, int64_t n) {
  constexpr int W = Traits<V>::W;
  V acc = splat<V>(0.0f);
  int64_t i = 0;
  for (; i + W <= n; i += W) acc += load<V>(x + i) * 0.0f;
  float s = hsum(acc);
  for (; i < n; ++i) s += x[i] * 0.0f;
  return s != s;
}

// Everything a task needs: the kernels' arguments, plus the backward's delta and packed key blocks.
struct Job {
  AttentionDesc d;
  const float *q, *k, *v, *o, *lse, *dout;
  float *out, *out_lse, *dq, *dk, *dv;
  float* delta;         // (B, Hq, Tq): rowsum(dO * O)
  const float* packed;  // every key block packed (two-pass backward), or null
};

// Keys query i of batch element b sees: [0, visible(i)).
inline int64_t visible(const AttentionDesc& d, int64_t b, int64_t i) {
  int64_t n = d.key_lengths ? d.key_lengths[b] : d.Tk;
  if (d.causal) n = std::min(n, std::max<int64_t>(0, i + (d.Tk - d.Tq) + 1));
  return n;
}

// Floats of workspace per slot, a multiple of 16 (64 bytes) so that every slot stays aligned.
int64_t fwd_slot(int64_t D) { return round_up(2 * D * BQ + BK * BQ + 4 * BQ, 16); }

// ---- forward: one (b, h, query block) --------------------------------------------------------------------------
template <typename V>
void forward_block_body(const Job& job, int64_t t, float* ws) {
  using I = typename Traits<V>::I;
  constexpr int W = Traits<V>::W;
  const AttentionDesc& d = job.d;
  const int64_t D = d.D, Tq = d.Tq, Tk = d.Tk, BH = d.B * d.Hq, nblk = (Tq + BQ - 1) / BQ;
  const int64_t bh = t % BH, ib = nblk - 1 - t / BH;  // the longest (causal) blocks first
  const int64_t b = bh / d.Hq, h = bh % d.Hq, hk = h / (d.Hq / d.Hkv);
  const int64_t i0 = ib * BQ, rows = std::min(BQ, Tq - i0), Np = round_up(rows, W);
  const float* Q = job.q + (bh * Tq + i0) * D;         // (rows, D)
  const float* K = job.k + (b * d.Hkv + hk) * Tk * D;  // (Tk, D)
  const float* Vm = job.v + (b * d.Hkv + hk) * Tk * D;  // (Tk, D)
  float* Qt = ws;                // (D, Np): scale * Q^T, zero-padded columns
  float* Ot = Qt + D * BQ;       // (D, Np): unnormalised O^T
  float* St = Ot + D * BQ;       // (BK, Np): S^T, then P^T, of one key tile
  float* m = St + BK * BQ;       // (Np) running max
  float* l = m + BQ;             // (Np) running sum
  float* al = l + BQ;            // (Np) rescale factor of this tile
  int32_t* nv = reinterpret_cast<int32_t*>(al + BQ);  // (Np) keys visible to each query

  for (int64_t i = 0; i < Np; ++i) {
    nv[i] = static_cast<int32_t>(visible(d, b, i0 + std::min(i, rows - 1)));  // padding: as the last row
    m[i] = kNegInf;
    l[i] = 0.0f;
  }
  for (int64_t x = 0; x < D; ++x) {
    for (int64_t i = 0; i < rows; ++i) Qt[x * Np + i] = d.scale * Q[i * D + x];
    for (int64_t i = rows; i < Np; ++i) Qt[x * Np + i] = 0.0f;
  }
  std::memset(Ot, 0, sizeof(float) * static_cast<size_t>(D * Np));
  const int64_t nmin = nv[0], nmax = nv[rows - 1];  // visible() is non-decreasing in i
  const V ninf = splat<V>(kNegInf), zero = splat<V>(0.0f);

  for (int64_t j0 = 0; j0 < nmax; j0 += BK) {
    const int64_t nk = std::min(BK, nmax - j0);
    gemm<V>(nk, Np, D, K + j0 * D, D, 1, Qt, Np, St, Np, Mode::Store, nullptr);  // S^T (nk, Np)
    for (int64_t j = std::max<int64_t>(0, nmin - j0); j < nk; ++j) {             // rows some query must not see
      const I jv = (I){} + static_cast<int32_t>(j0 + j);
      for (int64_t c = 0; c < Np; c += W) {
        I see;
        std::memcpy(&see, nv + c, sizeof see);
        store<V>(St + j * Np + c, select<V>(see > jv, load<V>(St + j * Np + c), ninf));
      }
    }
    for (int64_t c = 0; c < Np; c += W) {  // online softmax, lane-wise over queries
      const V mold = load<V>(m + c);
      V mx = mold;
      for (int64_t j = 0; j < nk; ++j) mx = vmax(mx, load<V>(St + j * Np + c));
      const V base = select<V>(mx == ninf, zero, mx);  // a query that has seen nothing yet: exp(-inf - 0) = 0
      const V a = simd::exp(mold - base);
      V s = zero;
      for (int64_t j = 0; j < nk; ++j) {
        const V p = simd::exp(load<V>(St + j * Np + c) - base);
        store<V>(St + j * Np + c, p);
        s += p;
      }
      store<V>(l + c, load<V>(l + c) * a + s);
      store<V>(m + c, mx);
      store<V>(al + c, a);
    }
    // O^T = O^T a + V^T P^T. Keys [j0, j0 + nall) are seen by every query of the block; a later key of the tile is
    // masked for some (P = 0 there), and if its value is Inf or NaN the product would put 0 * Inf = NaN into a query
    // that cannot see it: then those keys are added per query with a select (rare: only non-finite values pay).
    const int64_t nall = std::clamp<int64_t>(nmin - j0, 0, nk);
    if (nall == nk || !any_nonfinite<V>(Vm + (j0 + nall) * D, (nk - nall) * D)) {
      gemm<V>(D, Np, nk, Vm + j0 * D, 1, D, St, Np, Ot, Np, Mode::ScaleAdd, al);
    } else {
      gemm<V>(D, Np, nall, Vm + j0 * D, 1, D, St, Np, Ot, Np, Mode::ScaleAdd, al);  // nall = 0: O^T *= a
      for (int64_t j = nall; j < nk; ++j) {
        const I jv = (I){} + static_cast<int32_t>(j0 + j);
        for (int64_t x = 0; x < D; ++x) {
          const V vx = splat<V>(Vm[(j0 + j) * D + x]);
          for (int64_t c = 0; c < Np; c += W) {
            I see;
            std::memcpy(&see, nv + c, sizeof see);
            const V pv = vx * load<V>(St + j * Np + c);
            store<V>(Ot + x * Np + c, load<V>(Ot + x * Np + c) + select<V>(see > jv, pv, zero));
          }
        }
      }
    }
  }

  float* O = job.out + (bh * Tq + i0) * D;  // (rows, D)
  for (int64_t i = 0; i < rows; ++i) {
    // l is 0 only for a query that sees nothing (else its largest score gives exp(0) = 1) or whose every score is
    // -inf (then o = 0 / 0 = NaN, as IEEE has it); a NaN l (a NaN score) makes the row and lse NaN.
    const bool any = nv[i] > 0;
    const float inv = any ? 1.0f / l[i] : 0.0f;
    for (int64_t x = 0; x < D; ++x) O[i * D + x] = Ot[x * Np + i] * inv;
    if (job.out_lse) job.out_lse[bh * Tq + i0 + i] = any ? m[i] + std::log(l[i]) : kNegInf;
  }
}
SF_VARIANTS(forward_block, (const Job& job, int64_t t, float* ws), (job, t, ws), forward_block_body)

// ---- backward ----------------------------------------------------------------------------------------------------
// delta[r] = dot(dout[r], o[r]) for rows [lo, hi) of (rows, D).
template <typename V>
void row_dot_body(const float* dout, const float* o, int64_t D, float* delta, int64_t lo, int64_t hi) {
  constexpr int W = Traits<V>::W;
  for (int64_t r = lo; r < hi; ++r) {
    const float* x = dout + r * D;
    const float* y = o + r * D;
    V acc = splat<V>(0.0f);
    int64_t c = 0;
    for (; c + W <= D; c += W) acc += load<V>(x + c) * load<V>(y + c);
    float s = hsum(acc);
    for (; c < D; ++c) s += x[c] * y[c];
    delta[r] = s;
  }
}
SF_VARIANTS(row_dot, (const float* dout, const float* o, int64_t D, float* delta, int64_t lo, int64_t hi),
            (dout, o, D, delta, lo, hi), row_dot_body)

// One key block of one (b, kv head), packed once and used by every query tile that meets it.
struct KeyBlock {
  int64_t b, hk, j0, nk, Np, Dp;  // keys [j0, j0 + nk); Np = nk rounded up to W; Dp = D rounded up to W
  const float* Kt;  // (D, Np): scale * K^T, zero-padded columns
  const float* Vt;  // (D, Np): V^T
  const float* Ks;  // (nk, Dp): scale * K, zero-padded columns (for dQ)
  float* dKt;       // (D, Np): dK^T / scale of this block, or null when only dQ is wanted
  float* dVt;       // (D, Np)
  float* P;         // (BQ, Np) scratch: S, then P
  float* dS;        // (BQ, Np) scratch: dP, then dS
};

// Floats of one packed key block (Kt, Vt, Ks), and of a task's scratch (a packed block, dKt, dVt, P, dS).
int64_t packed_floats(int64_t D, int64_t Dp) { return 2 * D * BK + BK * Dp; }
int64_t scratch_floats(int64_t D, int64_t Dp) { return packed_floats(D, Dp) + 2 * D * BK + 2 * BQ * BK; }

// Packs key block jb of (b, hk) into dst (packed_floats).
template <typename V>
SF_INLINE void pack_key_block(const Job& job, int64_t b, int64_t hk, int64_t jb, float* dst) {
  constexpr int W = Traits<V>::W;
  const AttentionDesc& d = job.d;
  const int64_t D = d.D, j0 = jb * BK, nk = std::min(BK, d.Tk - j0), Np = round_up(nk, W), Dp = round_up(D, W);
  const float* K = job.k + ((b * d.Hkv + hk) * d.Tk + j0) * D;   // (nk, D)
  const float* Vm = job.v + ((b * d.Hkv + hk) * d.Tk + j0) * D;  // (nk, D)
  float* Kt = dst;            // (D, Np)
  float* Vt = Kt + D * BK;    // (D, Np)
  float* Ks = Vt + D * BK;    // (nk, Dp)
  for (int64_t x = 0; x < D; ++x) {
    for (int64_t j = 0; j < nk; ++j) {
      Kt[x * Np + j] = d.scale * K[j * D + x];
      Vt[x * Np + j] = Vm[j * D + x];
    }
    for (int64_t j = nk; j < Np; ++j) Kt[x * Np + j] = Vt[x * Np + j] = 0.0f;
  }
  for (int64_t j = 0; j < nk; ++j) {
    for (int64_t x = 0; x < D; ++x) Ks[j * Dp + x] = d.scale * K[j * D + x];
    for (int64_t x = D; x < Dp; ++x) Ks[j * Dp + x] = 0.0f;
  }
}

// Key block jb of (b, hk) with its scratch in ws (scratch_floats): packed there, or taken from `packed` (every block
// packed beforehand, in (b, hk, jb) order) when given.
template <typename V>
SF_INLINE KeyBlock key_block(const Job& job, int64_t b, int64_t hk, int64_t jb, float* ws, const float* packed,
                             bool grads_kv) {
  constexpr int W = Traits<V>::W;
  const AttentionDesc& d = job.d;
  const int64_t D = d.D;
  KeyBlock kb;
  kb.b = b;
  kb.hk = hk;
  kb.j0 = jb * BK;
  kb.nk = std::min(BK, d.Tk - kb.j0);
  kb.Np = round_up(kb.nk, W);
  kb.Dp = round_up(D, W);
  const int64_t pf = packed_floats(D, kb.Dp);
  const float* src = ws;
  if (packed)
    src = packed + ((b * d.Hkv + hk) * ((d.Tk + BK - 1) / BK) + jb) * pf;
  else
    pack_key_block<V>(job, b, hk, jb, ws);
  kb.Kt = src;
  kb.Vt = src + D * BK;
  kb.Ks = src + 2 * D * BK;
  kb.dKt = grads_kv ? ws + pf : nullptr;
  kb.dVt = grads_kv ? ws + pf + D * BK : nullptr;
  kb.P = ws + pf + 2 * D * BK;
  kb.dS = kb.P + BQ * BK;
  if (grads_kv) {
    std::memset(kb.dKt, 0, sizeof(float) * static_cast<size_t>(D * kb.Np));
    std::memset(kb.dVt, 0, sizeof(float) * static_cast<size_t>(D * kb.Np));
  }
  return kb;
}

// Packs every key block: task t is block t % nkb of (b, hk) = t / nkb.
template <typename V>
void pack_task_body(const Job& job, int64_t t, float* ws) {
  constexpr int W = Traits<V>::W;
  const AttentionDesc& d = job.d;
  const int64_t nkb = (d.Tk + BK - 1) / BK, bhk = t / nkb;
  pack_key_block<V>(job, bhk / d.Hkv, bhk % d.Hkv, t % nkb, ws + t * packed_floats(d.D, round_up(d.D, W)));
}
SF_VARIANTS(pack_task, (const Job& job, int64_t t, float* ws), (job, t, ws), pack_task_body)

// The first query of every (b, h) that sees key j0 (when causal; else 0).
inline int64_t first_query(const AttentionDesc& d, int64_t j0) {
  return d.causal ? std::max<int64_t>(0, j0 - (d.Tk - d.Tq)) : 0;
}

// One tile: queries [i0, i0 + rows) of head bh against key block kb. Recomputes S = Q (scale K)^T and P =
// exp(S - lse), dP = dO V^T and dS = P (dP - delta), masked per query; then dV^T += dO^T P and dK^T += Q^T dS (when
// kb.dKt), and dQ (rows, Dp) += dS (scale K) (when dq). Every row's values are computed by the same operations,
// whichever tile it falls in, so the fused and the two-pass schedules below give bit-identical gradients.
template <typename V>
SF_INLINE void backward_tile(const Job& job, const KeyBlock& kb, int64_t bh, int64_t i0, int64_t rows, float* dq) {
  constexpr int W = Traits<V>::W;
  const AttentionDesc& d = job.d;
  const int64_t D = d.D, Tq = d.Tq, Np = kb.Np;
  const float* Q = job.q + (bh * Tq + i0) * D;     // (rows, D)
  const float* dO = job.dout + (bh * Tq + i0) * D;  // (rows, D)
  const float* lse = job.lse + bh * Tq + i0;        // (rows)
  const float* delta = job.delta + bh * Tq + i0;    // (rows)
  float* P = kb.P;    // (rows, Np)
  float* dS = kb.dS;  // (rows, Np)
  int32_t sees[BQ];  // keys of the block each row sees, non-decreasing in r
  gemm<V>(rows, Np, D, Q, D, 1, kb.Kt, Np, P, Np, Mode::Store, nullptr);    // S
  gemm<V>(rows, Np, D, dO, D, 1, kb.Vt, Np, dS, Np, Mode::Store, nullptr);  // dP
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t see = std::clamp<int64_t>(visible(d, kb.b, i0 + r) - kb.j0, 0, kb.nk);  // keys this query sees
    sees[r] = static_cast<int32_t>(see);
    float* pr = P + r * Np;
    float* dr = dS + r * Np;
    if (see > 0) {
      const V lv = splat<V>(lse[r]), dl = splat<V>(delta[r]);
      for (int64_t c = 0; c < see; c += W) {
        const V p = simd::exp(load<V>(pr + c) - lv);
        store<V>(pr + c, p);
        store<V>(dr + c, p * (load<V>(dr + c) - dl));
      }
    }
    for (int64_t c = see; c < Np; ++c) pr[c] = dr[c] = 0.0f;
  }
  // Masked P and dS entries are exact zeros; multiplied by a non-finite value of what they hide (a row of dO or Q for
  // dV, dK; a key for dQ) they would give NaN where IEEE arithmetic over the visible pairs gives none. Rows [0, part)
  // miss some key of the block (a prefix: sees[] is non-decreasing); when such a row holds an Inf or NaN, it is added
  // over its visible keys only. The check reads those rows once per tile; only non-finite data takes the slow path.
  int64_t part = 0;
  while (part < rows && sees[part] < kb.nk) ++part;
  if (kb.dKt) {
    // dV^T += dO^T P, dK^T += Q^T dS
    const bool bad_do = part > 0 && any_nonfinite<V>(dO, part * D);
    const bool bad_q = part > 0 && any_nonfinite<V>(Q, part * D);
    const int64_t r0v = bad_do ? part : 0, r0k = bad_q ? part : 0;
    gemm<V>(D, Np, rows - r0v, dO + r0v * D, 1, D, P + r0v * Np, Np, kb.dVt, Np, Mode::Add, nullptr);
    gemm<V>(D, Np, rows - r0k, Q + r0k * D, 1, D, dS + r0k * Np, Np, kb.dKt, Np, Mode::Add, nullptr);
    // out^T += A^T M over rows [0, r0), each row over its visible keys only
    auto add_visible = [&](int64_t r0, const float* A, const float* M, float* out) {
      for (int64_t r = 0; r < r0; ++r)
        for (int64_t x = 0; x < D; ++x) {
          const float a = A[r * D + x];
          for (int64_t c = 0; c < sees[r]; ++c) out[x * Np + c] += a * M[r * Np + c];
        }
    };
    add_visible(r0v, dO, P, kb.dVt);
    add_visible(r0k, Q, dS, kb.dKt);
  }
  if (dq) {
    // dQ += dS K. Rows [0, bad) have a masked key whose K row is non-finite (the last such key is kbad; again a
    // prefix): each is summed over its own visible keys only, by the same chain of multiply-adds over keys in order
    // that the block product runs (a row's result does not depend on its tile, so both schedules agree bit for bit).
    int64_t bad = 0;
    if (part > 0) {
      int64_t kbad = -1;
      for (int64_t j = kb.nk - 1; j >= sees[0] && kbad < 0; --j)
        if (any_nonfinite<V>(kb.Ks + j * kb.Dp, kb.Dp)) kbad = j;
      while (bad < part && sees[bad] <= kbad) ++bad;
    }
    gemm<V>(rows - bad, kb.Dp, kb.nk, dS + bad * Np, Np, 1, kb.Ks, kb.Dp, dq + bad * kb.Dp, kb.Dp, Mode::Add, nullptr);
    for (int64_t r = 0; r < bad; ++r)
      gemm<V>(1, kb.Dp, sees[r], dS + r * Np, Np, 1, kb.Ks, kb.Dp, dq + r * kb.Dp, kb.Dp, Mode::Add, nullptr);
  }
}

// dk, dv (nk, D) += the key block's accumulated gradients.
inline void store_dkv(const Job& job, const KeyBlock& kb) {
  const AttentionDesc& d = job.d;
  const int64_t D = d.D, Np = kb.Np;
  float* dk = job.dk + ((kb.b * d.Hkv + kb.hk) * d.Tk + kb.j0) * D;  // (nk, D)
  float* dv = job.dv + ((kb.b * d.Hkv + kb.hk) * d.Tk + kb.j0) * D;  // (nk, D)
  for (int64_t j = 0; j < kb.nk; ++j)
    for (int64_t x = 0; x < D; ++x) {
      dk[j * D + x] += d.scale * kb.dKt[x * Np + j];
      dv[j * D + x] += kb.dVt[x * Np + j];
    }
}

// dq (rows, D) += acc (rows, Dp).
inline void store_dq(float* dq, const float* acc, int64_t rows, int64_t D, int64_t Dp) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t x = 0; x < D; ++x) dq[i * D + x] += acc[i * Dp + x];
}

// The key block's dK, dV over every query head of its group, query tiles of BQ from the first query that sees it;
// with dq_acc (G, Tq, Dp), the dQ contributions too.
template <typename V>
SF_INLINE void key_block_pass(const Job& job, const KeyBlock& kb, float* dq_acc) {
  const AttentionDesc& d = job.d;
  const int64_t G = d.Hq / d.Hkv, L = d.key_lengths ? d.key_lengths[kb.b] : d.Tk;
  if (L <= kb.j0) return;  // no query sees these keys
  for (int64_t g = 0; g < G; ++g) {
    const int64_t bh = kb.b * d.Hq + kb.hk * G + g;
    for (int64_t i0 = first_query(d, kb.j0); i0 < d.Tq; i0 += BQ)
      backward_tile<V>(job, kb, bh, i0, std::min(BQ, d.Tq - i0),
                       dq_acc ? dq_acc + (g * d.Tq + i0) * kb.Dp : nullptr);
  }
}

// Fused schedule, one task per (b, kv head): every key block in order, dK, dV and dQ in one pass.
template <typename V>
void fused_task_body(const Job& job, int64_t t, float* ws) {
  constexpr int W = Traits<V>::W;
  const AttentionDesc& d = job.d;
  const int64_t b = t / d.Hkv, hk = t % d.Hkv, G = d.Hq / d.Hkv, Dp = round_up(d.D, W);
  float* dq_acc = ws + scratch_floats(d.D, Dp);  // (G, Tq, Dp)
  std::memset(dq_acc, 0, sizeof(float) * static_cast<size_t>(G * d.Tq * Dp));
  for (int64_t jb = 0; jb * BK < d.Tk; ++jb) {
    const KeyBlock kb = key_block<V>(job, b, hk, jb, ws, nullptr, true);
    key_block_pass<V>(job, kb, dq_acc);
    store_dkv(job, kb);
  }
  for (int64_t g = 0; g < G; ++g) {
    const int64_t bh = b * d.Hq + hk * G + g;
    store_dq(job.dq + bh * d.Tq * d.D, dq_acc + g * d.Tq * Dp, d.Tq, d.D, Dp);
  }
}
SF_VARIANTS(fused_task, (const Job& job, int64_t t, float* ws), (job, t, ws), fused_task_body)

// Two-pass schedule, pass 1: one task per (b, kv head, key block): dK, dV.
template <typename V>
void dkv_task_body(const Job& job, int64_t t, float* ws) {
  const AttentionDesc& d = job.d;
  const int64_t BHk = d.B * d.Hkv, bhk = t % BHk, jb = t / BHk;  // early key blocks (most queries if causal) first
  const KeyBlock kb = key_block<V>(job, bhk / d.Hkv, bhk % d.Hkv, jb, ws, job.packed, true);
  key_block_pass<V>(job, kb, nullptr);
  store_dkv(job, kb);
}
SF_VARIANTS(dkv_task, (const Job& job, int64_t t, float* ws), (job, t, ws), dkv_task_body)

// Two-pass schedule, pass 2: one task per (b, query head, block of BQ queries): dQ over the key blocks it sees.
template <typename V>
void dq_task_body(const Job& job, int64_t t, float* ws) {
  constexpr int W = Traits<V>::W;
  const AttentionDesc& d = job.d;
  const int64_t BH = d.B * d.Hq, nblk = (d.Tq + BQ - 1) / BQ;
  const int64_t bh = t % BH, ib = nblk - 1 - t / BH;  // the longest (causal) blocks first
  const int64_t b = bh / d.Hq, hk = (bh % d.Hq) / (d.Hq / d.Hkv), Dp = round_up(d.D, W);
  const int64_t i0 = ib * BQ, rows = std::min(BQ, d.Tq - i0);
  const int64_t L = d.key_lengths ? d.key_lengths[b] : d.Tk;
  float* acc = ws + scratch_floats(d.D, Dp);  // (rows, Dp)
  std::memset(acc, 0, sizeof(float) * static_cast<size_t>(rows * Dp));
  // The same key blocks, in the same order, as the fused schedule's tiles that contain these queries.
  for (int64_t jb = 0; jb * BK < d.Tk && jb * BK < L && first_query(d, jb * BK) < i0 + rows; ++jb) {
    const KeyBlock kb = key_block<V>(job, b, hk, jb, ws, job.packed, false);
    // A query before the key block's first viewer is in no fused tile; here its dS row is 0 and adds nothing.
    backward_tile<V>(job, kb, bh, i0, rows, acc);
  }
  store_dq(job.dq + (bh * d.Tq + i0) * d.D, acc, rows, d.D, Dp);
}
SF_VARIANTS(dq_task, (const Job& job, int64_t t, float* ws), (job, t, ws), dq_task_body)

using BlockFn = void (*)(const Job&, int64_t, float*);

// Runs fn over tasks [0, ntasks): one workspace slot of `slot` floats per worker, tasks pulled from a shared counter.
void run_blocks(ThreadPool& pool, const Job& job, BlockFn fn, int64_t ntasks, float* ws, int64_t slot) {
  if (ntasks <= 0) return;
  const int64_t slots = std::min<int64_t>(pool.threads(), ntasks);
  std::atomic<int64_t> next{0};
  pool.parallel_for(slots, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t s = lo; s < hi; ++s)
      for (int64_t t = next.fetch_add(1); t < ntasks; t = next.fetch_add(1)) fn(job, t, ws + s * slot);
  });
}

void check_key_lengths(const AttentionDesc& d, const char* what) {
  if (!d.key_lengths) return;
  for (int64_t b = 0; b < d.B; ++b)
    if (d.key_lengths[b] < 0 || d.key_lengths[b] > d.Tk)
      range_error(what, ": key_lengths[", b, "] = ", d.key_lengths[b], " is outside [0, Tk = ", d.Tk, "]");
}

}  // namespace

void attention_forward(ThreadPool& pool, const AttentionDesc& d, const float* q, const float* k, const float* v,
                       float* o, float* lse) {
  check_key_lengths(d, "attention_forward");
  if (d.B <= 0 || d.Hq <= 0 || d.Tq <= 0) return;
  Job job{d, q, k, v, nullptr, nullptr, nullptr, o, lse, nullptr, nullptr, nullptr, nullptr, nullptr};
  const int64_t ntasks = d.B * d.Hq * ((d.Tq + BQ - 1) / BQ);
  const int64_t slot = fwd_slot(d.D);
  const int64_t slots = std::min<int64_t>(pool.threads(), ntasks);
  float* ws = pool.workspace(static_cast<size_t>(slots * slot));
  run_blocks(pool, job, SF_PICK(forward_block), ntasks, ws, slot);
}

void attention_backward(ThreadPool& pool, const AttentionDesc& d, const float* q, const float* k, const float* v,
                        const float* o, const float* lse, const float* dout, float* dq, float* dk, float* dv) {
  check_key_lengths(d, "attention_backward");
  if (d.B <= 0 || d.Hq <= 0 || d.Tq <= 0 || d.Tk <= 0) return;  // no query sees a key: every gradient is 0
  const int64_t rows = d.B * d.Hq * d.Tq, G = d.Hq / d.Hkv;
  const int64_t Dp = round_up(d.D, 16), dsize = round_up(rows, 16);  // Dp: the widest vector's padding
  const int64_t nfused = d.B * d.Hkv, threads = pool.threads();
  // The fused schedule does 5 products per tile, the two-pass one 7 (S and dP twice) but in finer tasks: fused
  // unless its coarser tasks would leave too many threads idle. Both give bit-identical results (see backward_tile).
  const bool fused = 5 * threads * ((nfused + threads - 1) / threads) <= 7 * nfused;
  const int64_t nkb = (d.Tk + BK - 1) / BK, ndq = d.B * d.Hq * ((d.Tq + BQ - 1) / BQ), ndkv = nfused * nkb;
  const int64_t psize = fused ? 0 : round_up(ndkv * packed_floats(d.D, Dp), 16);
  const int64_t slot = round_up(scratch_floats(d.D, Dp) + (fused ? G * d.Tq * Dp : BQ * Dp), 16);
  const int64_t slots = std::min<int64_t>(threads, fused ? nfused : std::max(ndq, ndkv));
  float* ws = pool.workspace(static_cast<size_t>(dsize + psize + slots * slot));
  Job job{d, q, k, v, o, lse, dout, nullptr, nullptr, dq, dk, dv, ws, fused ? nullptr : ws + dsize};
  auto row_dot = SF_PICK(row_dot);
  pool.parallel_for(rows, 64, [&](int64_t lo, int64_t hi) { row_dot(dout, o, d.D, ws, lo, hi); });  // delta
  float* scratch = ws + dsize + psize;
  if (fused) {
    run_blocks(pool, job, SF_PICK(fused_task), nfused, scratch, slot);
  } else {
    auto pack = SF_PICK(pack_task);
    pool.parallel_for(ndkv, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) pack(job, t, ws + dsize);
    });
    run_blocks(pool, job, SF_PICK(dkv_task), ndkv, scratch, slot);
    run_blocks(pool, job, SF_PICK(dq_task), ndq, scratch, slot);
  }
}

}  // namespace sf::cpu
