// attention.cu — flash attention, forward and backward: the CUDA twin of cpu::attention_forward/backward (same
// AttentionDesc and semantics: GQA, causal aligned at the end, key_lengths padding — a DEVICE pointer here — lse
// saved, fully masked rows give o = 0 and lse = -inf; backward accumulates into dq, dk, dv). Design (docs/gpu.md,
// "Kernels: GEMM and attention"):
//
//  * Head dimension: the kernels are templates on DP in {32, 64, 128}; a D below DP is zero-padded in shared memory
//    and registers (loads past D read 0, stores past D are skipped). D > 128 is refused.
//  * Forward, F32 (also used for TF32): SIMT fp32. One block of 4 warps per (b, head, 16 queries); each warp owns 4
//    query rows. K and V tiles of 32 keys in shared memory; lane j scores key j against the warp's rows (one exact
//    fp32 dot product each), then an online softmax (running max and sum, exp(m_old - m_new) rescaling of the
//    accumulator), then O += P V with lanes over the head dimension.
//  * Forward, BF16 (AttentionImpl::Tiled, the default: attn_fwd_fa_kernel): K and V rounded to bf16 once per call
//    into stream-ordered scratch (rows padded to DP), then one block of 8 warps per (b, head, 128 queries), key tiles
//    of 64 loaded by a 2-stage cp.async pipeline into XOR-swizzled shared memory as they are in memory (no
//    transposition), K fragments by ldmatrix, V fragments by ldmatrix.trans; the rest as the legacy kernel below.
//  * Forward, BF16 legacy (AttentionImpl::Legacy, SHAREDFORMER_ATTENTION=legacy: attn_fwd_bf16_kernel): tensor cores.
//    One block of 4 warps per (b, head, 64 queries); each warp owns 16 query rows whose
//    Q fragments stay in registers (bf16) for the whole kernel. Per tile of 64 keys: K (bf16, row-major) and V^T
//    (bf16, transposed while staged) in shared memory; S = Q K^T by mma.sync m16n8k16 into fp32, scale, mask and
//    online softmax in fp32 on the accumulator fragments (row max / sum over the 4 lanes of a quad), P rounded to
//    bf16 straight from the S accumulators into A fragments (FlashAttention-2 register reuse), O += P V by mma.sync.
//  * Backward: FlashAttention-2 style, P recomputed from lse, delta = rowsum(dO * O) recomputed per query tile (no
//    scratch buffer), two passes with no atomics, so the results are deterministic:
//      pass 1, one block per (b, kv head, key tile): walks every query head of its GQA group and every query tile
//        that sees its keys, accumulates dV += P^T dO and dK += dS^T Q in registers, adds them to dk, dv once;
//      pass 2, one block per (b, query head, query tile): walks the key tiles it sees, dQ += dS K in registers.
//    F32 (and TF32): SIMT fp32, tiles of 32 keys x 32 queries, one lane per key (pass 1) or query (pass 2).
//    BF16: tensor cores, 4 warps each owning 16 keys (pass 1: 64 keys x 32-query tiles) or 16 queries (pass 2: 64
//    queries x 64-key tiles); Q, K, V, dO staged as bf16 in shared memory, row-major and (for the second product's
//    B operand) transposed; S and dP by mma.sync into fp32, P and dS in fp32, then rounded into A fragments for dV,
//    dK (pass 1) or dQ (pass 2). Shared memory at D = 128: 73 KB (pass 1), 87 KB (pass 2): fits sm_86/89 too.
//    BF16 tiled (the default; the kernels above are AttentionImpl::Legacy): K, V, Q, dO rounded to bf16 once into
//    scratch (the forward's pre-pass); pass 1 (attn_bwd_dkv_fa_kernel) streams 32-query Q and dO tiles, pass 2
//    (attn_bwd_dq_fa_kernel) 64-key K and V tiles, through the forward's cp.async pipeline and swizzled tiles, with
//    fragments by ldmatrix, and by ldmatrix.trans for the products that contract over queries or keys.
//  * Causal and padding: a block only visits key tiles some of its queries see, and masks per (query, key) inside.
//  * NaN and Inf (as the CPU kernels): a masked (query, key) pair is never multiplied. Scores are masked by selecting
//    -inf, masked P and dS are selected to 0, the SIMT loops skip masked pairs, and the tensor-core products (where
//    a masked 0 meets the values of the other operand: P V, P^T dO, dS^T Q, dS K) run on values that are zeroed past
//    the last key or query the block needs, with a flag raised while staging when a value that some query of the
//    block must not see is Inf or NaN; then that tile's product is summed per (query, key) pair with a predicate (slow,
//    but only non-finite data pays). A fully masked row gives o = 0 and lse = -inf; any other row divides by its sum,
//    so a NaN score gives a NaN row and lse. warp_max / fmaxf drop NaN, which is harmless here: exp(s - max) of the NaN
//    score is NaN whatever the max, and the sum carries it.
#include <cmath>
#include <cstdlib>
#include <string>

#include "cuda_common.cuh"
#include "scratch.cuh"

namespace sf::cuda {

namespace {

struct AttnArgs {
  int64_t B, Hq, Hkv, Tq, Tk, D;
  float scale;
  bool causal;
  const int32_t* key_lengths;  // device (B) or null
  const float *q, *k, *v, *o, *lse, *dout;
  float *out, *out_lse, *dq, *dk, *dv;
};

// Keys of batch element b that are not padding, clamped to [0, Tk].
__device__ __forceinline__ int64_t key_len(const AttnArgs& a, int64_t b) {
  int64_t L = a.key_lengths ? static_cast<int64_t>(a.key_lengths[b]) : a.Tk;
  return L < 0 ? 0 : (L > a.Tk ? a.Tk : L);
}
// Keys query i sees: [0, visible(i)). Non-decreasing in i.
__device__ __forceinline__ int64_t visible(const AttnArgs& a, int64_t L, int64_t i) {
  int64_t n = L;
  if (a.causal) {
    int64_t c = i + (a.Tk - a.Tq) + 1;
    if (c < 0) c = 0;
    if (c < n) n = c;
  }
  return n;
}

constexpr float kNegInf = -INFINITY;

// The bf16 in the low (hi = false) or high half of a packed pair, as fp32.
__device__ __forceinline__ float bf16_half(uint32_t w, bool hi) { return __uint_as_float(hi ? (w & 0xffff0000u) : (w << 16)); }
// x rounded to bf16 (round to nearest even, as pack_bf16x2), as fp32.
__device__ __forceinline__ float round_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
// Bits of a packed bf16 pair that are Inf or NaN (exponent all ones): bit 0 for the low half, bit 1 for the high one.
__device__ __forceinline__ int nonfinite_halves(uint32_t w) {
  return ((w & 0x7f80u) == 0x7f80u ? 1 : 0) | ((w & 0x7f800000u) == 0x7f800000u ? 2 : 0);
}
// The first query that sees every key of [0, kend) (Tq when none does).
__device__ __forceinline__ int64_t first_seeing_all(const AttnArgs& a, int64_t L, int64_t kend) {
  if (L < kend) return a.Tq;
  if (!a.causal) return 0;
  const int64_t i = kend - (a.Tk - a.Tq) - 1;
  return i < 0 ? 0 : i;
}

// ---- forward, fp32 SIMT -----------------------------------------------------------------------------------------
constexpr int kFQ = 16;  // queries per block
constexpr int kFK = 32;  // keys per tile (one per lane)

template <int DP>
__global__ void __launch_bounds__(128) attn_fwd_f32_kernel(AttnArgs a) {
  constexpr int C = DP / 32;  // head-dimension values per lane
  __shared__ float Qs[kFQ][DP];
  __shared__ float Ks[kFK][DP + 1];
  __shared__ float Vs[kFK][DP];
  __shared__ float Ps[4][4][kFK];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t BH = a.B * a.Hq, nqb = (a.Tq + kFQ - 1) / kFQ;
  const int64_t bh = static_cast<int64_t>(blockIdx.x) % BH, qb = nqb - 1 - static_cast<int64_t>(blockIdx.x) / BH;
  const int64_t b = bh / a.Hq, h = bh % a.Hq, hk = h / (a.Hq / a.Hkv);
  const int64_t i0 = qb * kFQ, D = a.D, Tk = a.Tk;
  const float* Q = a.q + bh * a.Tq * D;
  const float* K = a.k + (b * a.Hkv + hk) * Tk * D;
  const float* V = a.v + (b * a.Hkv + hk) * Tk * D;
  const int64_t L = key_len(a, b);

  for (int idx = tid; idx < kFQ * DP; idx += 128) {
    const int r = idx / DP, d = idx % DP;
    Qs[r][d] = (i0 + r < a.Tq && d < D) ? a.scale * Q[(i0 + r) * D + d] : 0.0f;
  }
  float o[4][C], m[4], l[4];
  int64_t nv[4];
#pragma unroll
  for (int rr = 0; rr < 4; ++rr) {
    m[rr] = kNegInf;
    l[rr] = 0.0f;
    nv[rr] = visible(a, L, i0 + warp * 4 + rr);
#pragma unroll
    for (int c = 0; c < C; ++c) o[rr][c] = 0.0f;
  }
  const int64_t last = (i0 + kFQ <= a.Tq ? i0 + kFQ : a.Tq) - 1;
  const int64_t nmax = visible(a, L, last);
  __syncthreads();

  for (int64_t j0 = 0; j0 < nmax; j0 += kFK) {
    for (int idx = tid; idx < kFK * DP; idx += 128) {
      const int j = idx / DP, d = idx % DP;
      const bool in = j0 + j < Tk && d < D;
      Ks[j][d] = in ? K[(j0 + j) * D + d] : 0.0f;
      Vs[j][d] = in ? V[(j0 + j) * D + d] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < 4; ++rr) {
      const int r = warp * 4 + rr;
      float s = 0.0f;
#pragma unroll 16
      for (int d = 0; d < DP; ++d) s = fmaf(Qs[r][d], Ks[lane][d], s);
      if (j0 + lane >= nv[rr]) s = kNegInf;
      const float mnew = fmaxf(m[rr], warp_max(s));
      const float base = mnew == kNegInf ? 0.0f : mnew;  // nothing seen yet: exp(-inf - 0) = 0
      const float alpha = expf(m[rr] - base);
      const float p = expf(s - base);
      l[rr] = l[rr] * alpha + warp_sum(p);
      m[rr] = mnew;
#pragma unroll
      for (int c = 0; c < C; ++c) o[rr][c] *= alpha;
      Ps[warp][rr][lane] = p;
    }
    __syncwarp();
#pragma unroll
    for (int rr = 0; rr < 4; ++rr) {
      // the keys of this tile the row sees (a warp-uniform bound): a masked key is skipped, not multiplied by its
      // P = 0 (its value may be Inf or NaN)
      const int64_t seen = nv[rr] - j0;
      const int jn = seen <= 0 ? 0 : (seen >= kFK ? kFK : static_cast<int>(seen));
#pragma unroll 8
      for (int j = 0; j < jn; ++j) {
        const float p = Ps[warp][rr][j];
#pragma unroll
        for (int c = 0; c < C; ++c) o[rr][c] = fmaf(p, Vs[j][lane + 32 * c], o[rr][c]);
      }
    }
    __syncthreads();  // Ks, Vs and Ps are rewritten by the next tile
  }

#pragma unroll
  for (int rr = 0; rr < 4; ++rr) {
    const int64_t i = i0 + warp * 4 + rr;
    if (i >= a.Tq) continue;
    const bool any = nv[rr] > 0;  // l is NaN after a NaN score: the row is NaN then, not "sees nothing"
    const float inv = any ? 1.0f / l[rr] : 0.0f;
    float* O = a.out + (bh * a.Tq + i) * D;
#pragma unroll
    for (int c = 0; c < C; ++c)
      if (lane + 32 * c < D) O[lane + 32 * c] = o[rr][c] * inv;
    if (lane == 0 && a.out_lse) a.out_lse[bh * a.Tq + i] = any ? m[rr] + logf(l[rr]) : kNegInf;
  }
}

// ---- forward, bf16 tensor cores (legacy: SHAREDFORMER_ATTENTION=legacy) ------------------------------------------
constexpr int kBQ = 64;  // queries per block (16 per warp)
constexpr int kBK = 64;  // keys per tile

template <int DP>
__global__ void __launch_bounds__(128) attn_fwd_bf16_kernel(AttnArgs a) {
  constexpr int KS = DP / 2 + 4;    // words per K row (bf16 pairs along d), padded: conflict-free fragment loads
  constexpr int VS = kBK / 2 + 4;   // words per V^T row (bf16 pairs along keys), padded
  constexpr int NF = kBK / 8;       // n-fragments of S (8 keys each)
  constexpr int ND = DP / 8;        // n-fragments of O (8 dims each)
  constexpr int KD = DP / 16;       // k-steps of Q K^T
  __shared__ uint32_t Ks[kBK * KS];  // Ks[key][d pair]
  __shared__ uint32_t Vt[DP * VS];   // Vt[d][key pair]
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, gq = lane / 4, tq = lane % 4;
  const int64_t BH = a.B * a.Hq, nqb = (a.Tq + kBQ - 1) / kBQ;
  const int64_t bh = static_cast<int64_t>(blockIdx.x) % BH, qb = nqb - 1 - static_cast<int64_t>(blockIdx.x) / BH;
  const int64_t b = bh / a.Hq, h = bh % a.Hq, hk = h / (a.Hq / a.Hkv);
  const int64_t i0 = qb * kBQ, D = a.D, Tk = a.Tk, Tq = a.Tq;
  const float* Q = a.q + bh * Tq * D;
  const float* K = a.k + (b * a.Hkv + hk) * Tk * D;
  const float* V = a.v + (b * a.Hkv + hk) * Tk * D;
  const int64_t L = key_len(a, b);
  const int64_t r0 = i0 + warp * 16 + gq, r1 = r0 + 8;  // this thread's two query rows

  auto qval = [&](int64_t r, int d) { return (r < Tq && d < D) ? Q[r * D + d] : 0.0f; };
  uint32_t qa[KD][4];
#pragma unroll
  for (int ks = 0; ks < KD; ++ks) {
    const int d = ks * 16 + 2 * tq;
    qa[ks][0] = pack_bf16x2(qval(r0, d), qval(r0, d + 1));
    qa[ks][1] = pack_bf16x2(qval(r1, d), qval(r1, d + 1));
    qa[ks][2] = pack_bf16x2(qval(r0, d + 8), qval(r0, d + 9));
    qa[ks][3] = pack_bf16x2(qval(r1, d + 8), qval(r1, d + 9));
  }
  float oacc[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) oacc[n][e] = 0.0f;
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.0f, 0.0f};  // l: this lane's partial sums (quad-summed at the end)
  const int64_t nv[2] = {visible(a, L, r0), visible(a, L, r1)};
  const int64_t last = (i0 + kBQ <= Tq ? i0 + kBQ : Tq) - 1;
  const int64_t nmax = visible(a, L, last), nmin = visible(a, L, i0);  // keys [0, nmin): seen by every query

  for (int64_t j0 = 0; j0 < nmax; j0 += kBK) {
    for (int idx = tid; idx < kBK * (DP / 2); idx += 128) {  // K: pairs along d
      const int j = idx / (DP / 2), w = idx % (DP / 2), d = 2 * w;
      const int64_t kj = j0 + j;
      const float x0 = (kj < Tk && d < D) ? K[kj * D + d] : 0.0f;
      const float x1 = (kj < Tk && d + 1 < D) ? K[kj * D + d + 1] : 0.0f;
      Ks[j * KS + w] = pack_bf16x2(x0, x1);
    }
    // V^T: pairs along keys, zero from nmax on (no query of the block sees those keys: their P is 0 and so must their
    // value be). vbad: a key in [nmin, nmax), masked for some query, has an Inf or NaN value.
    int vbad = 0;
    for (int idx = tid; idx < DP * (kBK / 2); idx += 128) {
      const int d = idx % DP, w = idx / DP;
      const int64_t kj = j0 + 2 * w;
      const float x0 = (kj < nmax && d < D) ? V[kj * D + d] : 0.0f;
      const float x1 = (kj + 1 < nmax && d < D) ? V[(kj + 1) * D + d] : 0.0f;
      const uint32_t pv = pack_bf16x2(x0, x1);
      const int nf = nonfinite_halves(pv);
      vbad |= ((nf & 1) && kj >= nmin) || ((nf & 2) && kj + 1 >= nmin);
      Vt[d * VS + w] = pv;
    }
    const bool slow = __syncthreads_or(vbad) != 0;

    float s[NF][4];
#pragma unroll
    for (int n = 0; n < NF; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = 0.0f;
      const uint32_t* kr = Ks + (n * 8 + gq) * KS;
#pragma unroll
      for (int ks = 0; ks < KD; ++ks)
        mma_bf16(s[n], qa[ks][0], qa[ks][1], qa[ks][2], qa[ks][3], kr[ks * 8 + tq], kr[ks * 8 + tq + 4]);
    }
    // scale, mask, online softmax; element e of fragment n: row (e < 2 ? r0 : r1), key j0 + 8n + 2tq + (e & 1)
    float mx[2] = {kNegInf, kNegInf};
#pragma unroll
    for (int n = 0; n < NF; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t key = j0 + n * 8 + 2 * tq + (e & 1);
        float x = s[n][e] * a.scale;
        if (key >= nv[e >> 1]) x = kNegInf;
        s[n][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    float alpha[2], base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float mnew = fmaxf(m[r], mx[r]);
      base[r] = mnew == kNegInf ? 0.0f : mnew;
      alpha[r] = expf(m[r] - base[r]);
      m[r] = mnew;
      l[r] *= alpha[r];
    }
#pragma unroll
    for (int n = 0; n < NF; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = expf(s[n][e] - base[e >> 1]);
        s[n][e] = p;
        l[e >> 1] += p;
      }
#pragma unroll
    for (int n = 0; n < ND; ++n) {
      oacc[n][0] *= alpha[0];
      oacc[n][1] *= alpha[0];
      oacc[n][2] *= alpha[1];
      oacc[n][3] *= alpha[1];
    }
    if (!slow) {
      // O += P V: k-step kk covers keys 16kk .. 16kk + 15 = S fragments 2kk and 2kk + 1
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) {
        const uint32_t p0 = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
        const uint32_t p1 = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
        const uint32_t p2 = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        const uint32_t p3 = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int n = 0; n < ND; ++n) {
          const uint32_t* vr = Vt + (n * 8 + gq) * VS + kk * 8;
          mma_bf16(oacc[n], p0, p1, p2, p3, vr[tq], vr[tq + 4]);
        }
      }
    } else {
      // The same sum per (query, key) pair, over the keys each row sees: key kl's P of this thread's rows is held by
      // lane (gq, (kl % 8) / 2) of the quad, as element kl % 2 (row r0) and 2 + kl % 2 (row r1) of fragment kl / 8.
#pragma unroll 1
      for (int kl = 0; kl < kBK; ++kl) {
        const int fn = kl >> 3, odd = kl & 1, src = (lane & ~3) | ((kl & 7) >> 1);
        float own0 = 0.0f, own1 = 0.0f;
#pragma unroll
        for (int n = 0; n < NF; ++n)
          if (n == fn) {
            own0 = odd ? s[n][1] : s[n][0];
            own1 = odd ? s[n][3] : s[n][2];
          }
        const float p0 = round_bf16(__shfl_sync(0xffffffffu, own0, src));
        const float p1 = round_bf16(__shfl_sync(0xffffffffu, own1, src));
        const bool see0 = j0 + kl < nv[0], see1 = j0 + kl < nv[1];
#pragma unroll
        for (int n = 0; n < ND; ++n)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float v = bf16_half(Vt[(n * 8 + 2 * tq + e) * VS + (kl >> 1)], odd != 0);
            if (see0) oacc[n][e] = fmaf(p0, v, oacc[n][e]);
            if (see1) oacc[n][2 + e] = fmaf(p1, v, oacc[n][2 + e]);
          }
      }
    }
    __syncthreads();  // Ks and Vt are rewritten by the next tile
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = r == 0 ? r0 : r1;
    if (i >= Tq) continue;
    const bool any = nv[r] > 0;  // l is NaN after a NaN score: the row is NaN then, not "sees nothing"
    const float inv = any ? 1.0f / l[r] : 0.0f;
    float* O = a.out + (bh * Tq + i) * D;
#pragma unroll
    for (int n = 0; n < ND; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int d = n * 8 + 2 * tq + e;
        if (d < D) O[d] = oacc[n][2 * r + e] * inv;
      }
    if (tq == 0 && a.out_lse) a.out_lse[bh * Tq + i] = any ? m[r] + logf(l[r]) : kNegInf;
  }
}

// ---- forward, bf16 tensor cores, FlashAttention-2 tiling (the default bf16 forward) -------------------------------
// A pre-pass (kv_to_bf16_kernel) rounds K and V to bf16 once per call into stream-ordered scratch, rows padded with
// zeros from D to DP elements (DP / 8 16-byte chunks per key, every chunk 16-byte aligned: one cp.async each). The
// kernel: one block of 8 warps per (b, head, 128 queries), each warp owning 16 query rows whose Q fragments stay in
// registers (bf16, rounded from fp32 while loaded) for the whole kernel. Key tiles of 64, K and V tiles stored as they
// are in memory (row = key, DP / 8 chunks, XOR-swizzled: fa_swz), loaded by a kFStages-deep cp.async pipeline (the
// next key tile in flight while the current one is multiplied); K fragments by ldmatrix, V fragments by ldmatrix.trans
// (V is never transposed while staged). Shared memory: kFStages x 2 tiles x 64 keys x DP x 2 bytes (DP 128: 64 KiB,
// 64: 32 KiB, 32: 16 KiB; dynamic). The rest (online softmax on the S accumulators, P rounded straight into A
// fragments, the NaN rules) is attn_fwd_bf16_kernel's: V rows from nmax on are zero-filled by the copy, and a tile
// that holds keys of [nmin, nmax) is scanned in shared memory for Inf / NaN values (flag raised by __syncthreads_or).
constexpr int kFWarps = 8;             // warps per block
constexpr int kFTQ = kFWarps * 16;     // queries per block
constexpr int kFTK = 64;               // keys per tile
constexpr int kFStages = 2;            // cp.async pipeline depth (kFStages - 1 key tiles in flight)
constexpr int kFThreads = kFWarps * 32;

template <int DP>
__host__ __device__ constexpr int fa_tile_chunks() { return kFTK * DP / 8; }  // 16-byte chunks in one K or V tile
template <int DP>
__host__ __device__ constexpr int fa_smem_bytes() { return kFStages * 2 * fa_tile_chunks<DP>() * 16; }

// The slot (in 16-byte chunks) of chunk `chunk` of key row `row` of a K or V tile. DP 64 and 128: rows of 8 or 16
// chunks (128 or 256 bytes, each starting at bank 0): chunk ^ (row % 8) puts the 8 rows of one chunk column (an
// ldmatrix matrix, either kind) in 8 different 16-byte bank groups. DP 32: rows of 4 chunks, two rows per 128-byte
// line: chunk ^ ((row / 2) % 4), as the GEMM's k-contiguous tiles.
template <int DP>
__device__ __forceinline__ int fa_swz(int row, int chunk) {
  if constexpr (DP == 32)
    return row * 4 + (chunk ^ ((row >> 1) & 3));
  else
    return row * (DP / 8) + (chunk ^ (row & 7));
}

// K and V (rows = B * Hkv * Tk keys of D fp32) -> bf16 pairs, rows of DP / 2 words, zeros past D.
template <int DP>
__global__ void kv_to_bf16_kernel(const float* __restrict__ k, const float* __restrict__ v, int64_t rows, int64_t D,
                                  uint32_t* __restrict__ kb, uint32_t* __restrict__ vb) {
  const int64_t n = rows * (DP / 2);
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / (DP / 2);
    const int d = 2 * static_cast<int>(i % (DP / 2));
    const float* kr = k + r * D;
    const float* vr = v + r * D;
    kb[i] = pack_bf16x2(d < D ? kr[d] : 0.0f, d + 1 < D ? kr[d + 1] : 0.0f);
    vb[i] = pack_bf16x2(d < D ? vr[d] : 0.0f, d + 1 < D ? vr[d + 1] : 0.0f);
  }
}

// Rows [j0, j0 + ROWS) of X (bf16, rows of DP) into a swizzled tile; rows from nrows on are zero-filled. NT: the
// block's threads.
template <int DP, int NT = kFThreads, int ROWS = kFTK>
__device__ __forceinline__ void fa_load_tile(uint4* tile, const uint16_t* X, int64_t j0, int64_t nrows) {
  constexpr int CH = DP / 8;
#pragma unroll
  for (int c = threadIdx.x; c < ROWS * CH; c += NT) {
    const int r = c / CH, ch = c % CH;
    const bool in = j0 + r < nrows;
    cp_async16_zfill(tile + fa_swz<DP>(r, ch), in ? X + (j0 + r) * DP + ch * 8 : X, in ? 16 : 0);
  }
}

struct FaArgs {
  AttnArgs a;
  const uint16_t *kb, *vb;  // K, V as bf16, rows of DP
};

template <int DP>
__global__ void __launch_bounds__(kFThreads, 1) attn_fwd_fa_kernel(FaArgs fa) {
  constexpr int NF = kFTK / 8;  // n-fragments of S (8 keys each)
  constexpr int ND = DP / 8;    // n-fragments of O (8 dims each)
  constexpr int KD = DP / 16;   // k-steps of Q K^T
  constexpr int TC = fa_tile_chunks<DP>();
  const AttnArgs& a = fa.a;
  SF_DYNAMIC_SMEM(smem_raw);
  uint4* const smem = reinterpret_cast<uint4*>(smem_raw);  // stage st: K tile at st * 2 * TC, then the V tile
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, gq = lane / 4, tq = lane % 4;
  const int lj = lane / 8, li = lane % 8;  // the ldmatrix matrix and row this lane addresses
  const int64_t BH = a.B * a.Hq, nqb = (a.Tq + kFTQ - 1) / kFTQ;
  const int64_t bh = static_cast<int64_t>(blockIdx.x) % BH, qb = nqb - 1 - static_cast<int64_t>(blockIdx.x) / BH;
  const int64_t b = bh / a.Hq, h = bh % a.Hq, hk = h / (a.Hq / a.Hkv);
  const int64_t i0 = qb * kFTQ, D = a.D, Tk = a.Tk, Tq = a.Tq;
  const float* Q = a.q + bh * Tq * D;
  const uint16_t* K = fa.kb + (b * a.Hkv + hk) * Tk * DP;
  const uint16_t* V = fa.vb + (b * a.Hkv + hk) * Tk * DP;
  const int64_t L = key_len(a, b);
  const int64_t r0 = i0 + warp * 16 + gq, r1 = r0 + 8;  // this thread's two query rows
  const int64_t last = (i0 + kFTQ <= Tq ? i0 + kFTQ : Tq) - 1;
  const int64_t nmax = visible(a, L, last), nmin = visible(a, L, i0);  // keys [0, nmin): seen by every query
  const int64_t ntiles = (nmax + kFTK - 1) / kFTK;
  auto load_stage = [&](int st, int64_t jt) {
    uint4* t = smem + st * 2 * TC;
    fa_load_tile<DP>(t, K, jt * kFTK, nmax);       // keys no query of the block sees are not read
    fa_load_tile<DP>(t + TC, V, jt * kFTK, nmax);  // and V is zero there (their P is 0 and so must their value be)
  };
  // prologue: key tiles 0 .. kFStages-2 in flight (one commit group each, empty past the last tile), then Q
#pragma unroll
  for (int st = 0; st < kFStages - 1; ++st) {
    if (st < ntiles) load_stage(st, st);
    cp_async_commit();
  }

  auto qval = [&](int64_t r, int d) { return (r < Tq && d < D) ? Q[r * D + d] : 0.0f; };
  uint32_t qa[KD][4];
#pragma unroll
  for (int ks = 0; ks < KD; ++ks) {
    const int d = ks * 16 + 2 * tq;
    qa[ks][0] = pack_bf16x2(qval(r0, d), qval(r0, d + 1));
    qa[ks][1] = pack_bf16x2(qval(r1, d), qval(r1, d + 1));
    qa[ks][2] = pack_bf16x2(qval(r0, d + 8), qval(r0, d + 9));
    qa[ks][3] = pack_bf16x2(qval(r1, d + 8), qval(r1, d + 9));
  }
  float oacc[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) oacc[n][e] = 0.0f;
  float m[2] = {kNegInf, kNegInf}, l[2] = {0.0f, 0.0f};  // l: this lane's partial sums (quad-summed at the end)
  const int64_t nv[2] = {visible(a, L, r0), visible(a, L, r1)};

  for (int64_t jt = 0; jt < ntiles; ++jt) {
    cp_async_wait<kFStages - 2>();  // this thread's copies of key tile jt have landed
    __syncthreads();  // everyone's have, and every warp is done with key tile jt - 1, whose stage is refilled below
    const int64_t next = jt + kFStages - 1;
    if (next < ntiles) load_stage(static_cast<int>(next % kFStages), next);
    cp_async_commit();
    const int64_t j0 = jt * kFTK;
    const uint4* Ks = smem + static_cast<int>(jt % kFStages) * 2 * TC;
    const uint4* Vs = Ks + TC;
    // A key of [nmin, nmax) is masked for some query: if its value is Inf or NaN, this tile's P V takes the slow path
    // (block-uniform condition, so the barrier is reached by all or none).
    bool slow = false;
    if (j0 + kFTK > nmin) {
      int vbad = 0;
      for (int c = tid; c < TC; c += kFThreads) {
        const int r = c / (DP / 8);
        if (j0 + r < nmin) continue;
        const uint4 w = Vs[c];  // any chunk of row r (the swizzle permutes chunks within the row)
        vbad |= nonfinite_halves(w.x) | nonfinite_halves(w.y) | nonfinite_halves(w.z) | nonfinite_halves(w.w);
      }
      slow = __syncthreads_or(vbad) != 0;
    }

    float s[NF][4];
#pragma unroll
    for (int n = 0; n < NF; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < KD; ++ks)
#pragma unroll
      for (int np = 0; np < NF / 2; ++np) {
        // matrices (keys 16np + 0-7, d 16ks + 0-7), (same keys, d + 8-15), (keys + 8-15, d 0-7), (keys + 8-15, d 8-15)
        // = b0, b1 of S fragment 2np, then of 2np + 1
        uint32_t r[4];
        ldmatrix_x4(r, Ks + fa_swz<DP>(np * 16 + (lj >> 1) * 8 + li, ks * 2 + (lj & 1)));
        mma_bf16(s[2 * np], qa[ks][0], qa[ks][1], qa[ks][2], qa[ks][3], r[0], r[1]);
        mma_bf16(s[2 * np + 1], qa[ks][0], qa[ks][1], qa[ks][2], qa[ks][3], r[2], r[3]);
      }
    // scale, mask, online softmax; element e of fragment n: row (e < 2 ? r0 : r1), key j0 + 8n + 2tq + (e & 1)
    float mx[2] = {kNegInf, kNegInf};
#pragma unroll
    for (int n = 0; n < NF; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t key = j0 + n * 8 + 2 * tq + (e & 1);
        float x = s[n][e] * a.scale;
        if (key >= nv[e >> 1]) x = kNegInf;
        s[n][e] = x;
        mx[e >> 1] = fmaxf(mx[e >> 1], x);
      }
    float alpha[2], base[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float mnew = fmaxf(m[r], mx[r]);
      base[r] = mnew == kNegInf ? 0.0f : mnew;
      alpha[r] = expf(m[r] - base[r]);
      m[r] = mnew;
      l[r] *= alpha[r];
    }
#pragma unroll
    for (int n = 0; n < NF; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = expf(s[n][e] - base[e >> 1]);
        s[n][e] = p;
        l[e >> 1] += p;
      }
#pragma unroll
    for (int n = 0; n < ND; ++n) {
      oacc[n][0] *= alpha[0];
      oacc[n][1] *= alpha[0];
      oacc[n][2] *= alpha[1];
      oacc[n][3] *= alpha[1];
    }
    if (!slow) {
      // O += P V: k-step kk covers keys 16kk .. 16kk + 15 = S fragments 2kk and 2kk + 1
#pragma unroll
      for (int kk = 0; kk < kFTK / 16; ++kk) {
        const uint32_t p0 = pack_bf16x2(s[2 * kk][0], s[2 * kk][1]);
        const uint32_t p1 = pack_bf16x2(s[2 * kk][2], s[2 * kk][3]);
        const uint32_t p2 = pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        const uint32_t p3 = pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int dp = 0; dp < ND / 2; ++dp) {
          // with .trans: matrices (keys 16kk + 0-7, d 16dp + 0-7), (keys + 8-15, same d), (keys 0-7, d + 8-15),
          // (keys 8-15, d 8-15) = b0, b1 of O fragment 2dp, then of 2dp + 1
          uint32_t r[4];
          ldmatrix_x4_trans(r, Vs + fa_swz<DP>(kk * 16 + (lj & 1) * 8 + li, dp * 2 + (lj >> 1)));
          mma_bf16(oacc[2 * dp], p0, p1, p2, p3, r[0], r[1]);
          mma_bf16(oacc[2 * dp + 1], p0, p1, p2, p3, r[2], r[3]);
        }
      }
    } else {
      // The same sum per (query, key) pair, over the keys each row sees: key kl's P of this thread's rows is held by
      // lane (gq, (kl % 8) / 2) of the quad, as element kl % 2 (row r0) and 2 + kl % 2 (row r1) of fragment kl / 8.
      const uint32_t* Vw = reinterpret_cast<const uint32_t*>(Vs);
#pragma unroll 1
      for (int kl = 0; kl < kFTK; ++kl) {
        const int fn = kl >> 3, odd = kl & 1, src = (lane & ~3) | ((kl & 7) >> 1);
        float own0 = 0.0f, own1 = 0.0f;
#pragma unroll
        for (int n = 0; n < NF; ++n)
          if (n == fn) {
            own0 = odd ? s[n][1] : s[n][0];
            own1 = odd ? s[n][3] : s[n][2];
          }
        const float p0 = round_bf16(__shfl_sync(0xffffffffu, own0, src));
        const float p1 = round_bf16(__shfl_sync(0xffffffffu, own1, src));
        const bool see0 = j0 + kl < nv[0], see1 = j0 + kl < nv[1];
#pragma unroll
        for (int n = 0; n < ND; ++n) {
          const uint32_t w = Vw[fa_swz<DP>(kl, n) * 4 + tq];  // V[kl][8n + 2tq], V[kl][8n + 2tq + 1]
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float v = bf16_half(w, e != 0);
            if (see0) oacc[n][e] = fmaf(p0, v, oacc[n][e]);
            if (see1) oacc[n][2 + e] = fmaf(p1, v, oacc[n][2 + e]);
          }
        }
      }
    }
  }
  cp_async_wait<0>();  // (only empty groups can be pending here)

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = r == 0 ? r0 : r1;
    if (i >= Tq) continue;
    const bool any = nv[r] > 0;  // l is NaN after a NaN score: the row is NaN then, not "sees nothing"
    const float inv = any ? 1.0f / l[r] : 0.0f;
    float* O = a.out + (bh * Tq + i) * D;
#pragma unroll
    for (int n = 0; n < ND; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int d = n * 8 + 2 * tq + e;
        if (d < D) O[d] = oacc[n][2 * r + e] * inv;
      }
    if (tq == 0 && a.out_lse) a.out_lse[bh * Tq + i] = any ? m[r] + logf(l[r]) : kNegInf;
  }
}

// ---- backward, fp32 SIMT ----------------------------------------------------------------------------------------
constexpr int kT = 32;  // queries per query tile and keys per key tile in the backward

// Shared memory of the backward kernels (dynamic): K, V, Q, dO tiles (rows padded to DP + 1), P and dS, and per
// query row lse, delta and the number of visible keys.
template <int DP>
struct BwdSmem {
  float K[kT][DP + 1], V[kT][DP + 1], Q[kT][DP + 1], dO[kT][DP + 1];
  float P[kT][kT + 1], dS[kT][kT + 1];
  float lse[kT], delta[kT];
  int64_t nv[kT];
};

// Loads rows [i0, i0 + kT) of query head bh: Q, dO, lse, delta = rowsum(dO * O), visible keys (0 past Tq).
template <int DP>
__device__ void load_query_tile(const AttnArgs& a, BwdSmem<DP>& sm, int64_t bh, int64_t L, int64_t i0) {
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int64_t D = a.D;
  for (int idx = tid; idx < kT * DP; idx += 128) {
    const int r = idx / DP, d = idx % DP;
    const int64_t i = i0 + r;
    const bool in = i < a.Tq && d < D;
    sm.Q[r][d] = in ? a.q[(bh * a.Tq + i) * D + d] : 0.0f;
    sm.dO[r][d] = in ? a.dout[(bh * a.Tq + i) * D + d] : 0.0f;
  }
  for (int r = warp; r < kT; r += 4) {
    const int64_t i = i0 + r;
    float s = 0.0f;
    if (i < a.Tq)
      for (int64_t d = lane; d < D; d += 32) s += a.dout[(bh * a.Tq + i) * D + d] * a.o[(bh * a.Tq + i) * D + d];
    s = warp_sum(s);
    if (lane == 0) {
      sm.delta[r] = s;
      sm.lse[r] = i < a.Tq ? a.lse[bh * a.Tq + i] : 0.0f;
      sm.nv[r] = i < a.Tq ? visible(a, L, i) : 0;
    }
  }
}

// Loads keys [j0, j0 + kT) of kv head (b, hk) into K, V (zero past Tk and D).
template <int DP>
__device__ void load_key_tile(const AttnArgs& a, BwdSmem<DP>& sm, int64_t bhk, int64_t j0) {
  const int64_t D = a.D;
  for (int idx = threadIdx.x; idx < kT * DP; idx += 128) {
    const int j = idx / DP, d = idx % DP;
    const bool in = j0 + j < a.Tk && d < D;
    sm.K[j][d] = in ? a.k[(bhk * a.Tk + j0 + j) * D + d] : 0.0f;
    sm.V[j][d] = in ? a.v[(bhk * a.Tk + j0 + j) * D + d] : 0.0f;
  }
}

// P = exp(scale Q K^T - lse) (0 where masked) and dS = P (dO V^T - delta) for the tiles in shared memory.
template <int DP>
__device__ void tile_scores(const AttnArgs& a, BwdSmem<DP>& sm, int64_t j0) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll 2
  for (int r = warp; r < kT; r += 4) {
    float s = 0.0f, dp = 0.0f;
#pragma unroll 16
    for (int d = 0; d < DP; ++d) {
      s = fmaf(sm.Q[r][d], sm.K[lane][d], s);
      dp = fmaf(sm.dO[r][d], sm.V[lane][d], dp);
    }
    const bool see = j0 + lane < sm.nv[r];  // masked: P = dS = 0 by a select (dp may be NaN there)
    const float p = see ? expf(s * a.scale - sm.lse[r]) : 0.0f;
    sm.P[r][lane] = p;
    sm.dS[r][lane] = see ? p * (dp - sm.delta[r]) : 0.0f;
  }
}

// Pass 1: dK, dV of keys [j0, j0 + kT) of kv head (b, hk), over every query head of the group.
template <int DP>
__global__ void __launch_bounds__(128) attn_bwd_dkv_kernel(AttnArgs a) {
  constexpr int C = DP / 4;  // head dims per thread: d = warp + 4 c
  SF_DYNAMIC_SMEM(smem_raw);
  BwdSmem<DP>& sm = *reinterpret_cast<BwdSmem<DP>*>(smem_raw);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t BHk = a.B * a.Hkv, bhk = static_cast<int64_t>(blockIdx.x) % BHk;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) / BHk * kT;
  const int64_t b = bhk / a.Hkv, hk = bhk % a.Hkv, G = a.Hq / a.Hkv;
  const int64_t L = key_len(a, b);
  if (j0 >= L) return;  // no query sees these keys: their gradients get nothing
  float dk[C], dv[C];
#pragma unroll
  for (int c = 0; c < C; ++c) dk[c] = dv[c] = 0.0f;
  load_key_tile<DP>(a, sm, bhk, j0);
  int64_t first = 0;  // the first query that sees key j0
  if (a.causal) {
    first = j0 - (a.Tk - a.Tq);
    if (first < 0) first = 0;
  }
  for (int64_t g = 0; g < G; ++g) {
    const int64_t bh = b * a.Hq + hk * G + g;
    for (int64_t i0 = first; i0 < a.Tq; i0 += kT) {
      load_query_tile<DP>(a, sm, bh, L, i0);
      __syncthreads();
      tile_scores<DP>(a, sm, j0);
      __syncthreads();
#pragma unroll 4
      for (int r = 0; r < kT; ++r) {
        if (j0 + lane >= sm.nv[r]) continue;  // masked: skipped, not 0 times a dO or Q value that may be Inf/NaN
        const float p = sm.P[r][lane], ds = sm.dS[r][lane];
#pragma unroll
        for (int c = 0; c < C; ++c) {
          dv[c] = fmaf(p, sm.dO[r][warp + 4 * c], dv[c]);
          dk[c] = fmaf(ds, sm.Q[r][warp + 4 * c], dk[c]);
        }
      }
      __syncthreads();  // the next query tile overwrites Q, dO, P, dS
    }
  }
  const int64_t j = j0 + lane;
  if (j < a.Tk) {
    float* dK = a.dk + (bhk * a.Tk + j) * a.D;
    float* dV = a.dv + (bhk * a.Tk + j) * a.D;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int d = warp + 4 * c;
      if (d < a.D) {
        dK[d] += a.scale * dk[c];
        dV[d] += dv[c];
      }
    }
  }
}

// Pass 2: dQ of queries [i0, i0 + kT) of query head bh, over the key tiles they see.
template <int DP>
__global__ void __launch_bounds__(128) attn_bwd_dq_kernel(AttnArgs a) {
  constexpr int C = DP / 4;
  SF_DYNAMIC_SMEM(smem_raw);
  BwdSmem<DP>& sm = *reinterpret_cast<BwdSmem<DP>*>(smem_raw);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t BH = a.B * a.Hq, nqb = (a.Tq + kT - 1) / kT;
  const int64_t bh = static_cast<int64_t>(blockIdx.x) % BH, qb = nqb - 1 - static_cast<int64_t>(blockIdx.x) / BH;
  const int64_t b = bh / a.Hq, hk = (bh % a.Hq) / (a.Hq / a.Hkv), bhk = b * a.Hkv + hk;
  const int64_t i0 = qb * kT;
  const int64_t L = key_len(a, b);
  float dq[C];
#pragma unroll
  for (int c = 0; c < C; ++c) dq[c] = 0.0f;
  load_query_tile<DP>(a, sm, bh, L, i0);
  const int64_t last = (i0 + kT <= a.Tq ? i0 + kT : a.Tq) - 1;
  const int64_t nmax = visible(a, L, last);
  for (int64_t j0 = 0; j0 < nmax; j0 += kT) {
    load_key_tile<DP>(a, sm, bhk, j0);
    __syncthreads();
    tile_scores<DP>(a, sm, j0);
    __syncthreads();
#pragma unroll 4
    for (int j = 0; j < kT; ++j) {
      if (j0 + j >= sm.nv[lane]) continue;  // masked: skipped, not 0 times a key that may be Inf/NaN
      const float ds = sm.dS[lane][j];
#pragma unroll
      for (int c = 0; c < C; ++c) dq[c] = fmaf(ds, sm.K[j][warp + 4 * c], dq[c]);
    }
    __syncthreads();  // the next key tile overwrites K, V, P, dS
  }
  const int64_t i = i0 + lane;
  if (i < a.Tq) {
    float* dQ = a.dq + (bh * a.Tq + i) * a.D;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      const int d = warp + 4 * c;
      if (d < a.D) dQ[d] += a.scale * dq[c];
    }
  }
}

// ---- backward, bf16 tensor cores --------------------------------------------------------------------------------
// 4 warps of 16 keys (pass 1) or queries (pass 2); operands are staged in shared memory as bf16 pairs, either
// row-major (rows of keys or queries, pairs along d) or transposed (rows of d, pairs along the keys or queries),
// padded so that every fragment load is conflict-free. Products by mma.sync m16n8k16
// with fp32 accumulators; softmax recomputation, masking and dS in fp32 on the accumulator fragments; P and dS go
// from those accumulators straight into A fragments (rounded to bf16) for the next product.
constexpr int kBT = 64;  // keys per tile (pass 1) and queries per tile (pass 2), 16 per warp
constexpr int kBU = 32;  // queries per tile in pass 1, keys per step in pass 2 (keeps pass 1 under 99 KB of smem)

// Words per row of a row-major tile (pairs along d) and of a transposed tile of R rows (pairs along the rows).
template <int DP>
__host__ __device__ constexpr int row_words() { return DP / 2 + 4; }
template <int R>
__host__ __device__ constexpr int col_words() { return R / 2 + 4; }

// dst (row-major, R rows) = rows [r0, r0 + R) of src (n, D) fp32, zero past n and D. Returns non-zero (this thread's
// part) if a staged value of a row in [clo, chi) is Inf or NaN as bf16.
template <int DP, int R>
__device__ __forceinline__ int stage_rows(uint32_t* dst, const float* src, int64_t r0, int64_t n, int64_t D,
                                          int64_t clo = 0, int64_t chi = 0) {
  constexpr int RS = row_words<DP>();
  int bad = 0;
  for (int idx = threadIdx.x; idx < R * (DP / 2); idx += 128) {
    const int j = idx / (DP / 2), w = idx % (DP / 2), d = 2 * w;
    const int64_t r = r0 + j;
    const float x0 = (r < n && d < D) ? src[r * D + d] : 0.0f;
    const float x1 = (r < n && d + 1 < D) ? src[r * D + d + 1] : 0.0f;
    const uint32_t pk = pack_bf16x2(x0, x1);
    bad |= r >= clo && r < chi && nonfinite_halves(pk) != 0;
    dst[j * RS + w] = pk;
  }
  return bad;
}
// dst (transposed: DP rows of R values) = rows [r0, r0 + R) of src (n, D) fp32, transposed, zero past n and D.
// Returns non-zero (this thread's part) if a staged value of a row in [clo, chi) is Inf or NaN as bf16.
template <int DP, int R>
__device__ __forceinline__ int stage_cols(uint32_t* dst, const float* src, int64_t r0, int64_t n, int64_t D,
                                          int64_t clo = 0, int64_t chi = 0) {
  constexpr int TS = col_words<R>();
  int bad = 0;
  for (int idx = threadIdx.x; idx < DP * (R / 2); idx += 128) {
    const int d = idx % DP, w = idx / DP;
    const int64_t r = r0 + 2 * w;
    const float x0 = (r < n && d < D) ? src[r * D + d] : 0.0f;
    const float x1 = (r + 1 < n && d < D) ? src[(r + 1) * D + d] : 0.0f;
    const uint32_t pk = pack_bf16x2(x0, x1);
    const int nf = nonfinite_halves(pk);
    bad |= ((nf & 1) && r >= clo && r < chi) || ((nf & 2) && r + 1 >= clo && r + 1 < chi);
    dst[d * TS + w] = pk;
  }
  return bad;
}

// Per query row of an R-query tile: lse, delta = rowsum(dO * O) over the bf16-rounded dO and O (summed in fp32),
// visible keys. The rounding matches dP = dO V^T, whose operands are bf16: where one key is visible, O = V of that key
// and dP - delta is exactly 0 as in exact arithmetic (with fp32 operands here it was dO's bf16 rounding error, which
// the CPU lane's padding test measured at 3% of dk).
template <int R>
__device__ __forceinline__ void stage_query_stats(const AttnArgs& a, float* lse_s, float* delta_s, int* nv_s,
                                                  int64_t bh, int64_t L, int64_t i0) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int r = warp; r < R; r += 4) {
    const int64_t i = i0 + r;
    float s = 0.0f;
    if (i < a.Tq)
      for (int64_t d = lane; d < a.D; d += 32)
        s += round_bf16(a.dout[(bh * a.Tq + i) * a.D + d]) * round_bf16(a.o[(bh * a.Tq + i) * a.D + d]);
    s = warp_sum(s);
    if (lane == 0) {
      delta_s[r] = s;
      lse_s[r] = i < a.Tq ? a.lse[bh * a.Tq + i] : 0.0f;
      nv_s[r] = i < a.Tq ? static_cast<int>(visible(a, L, i)) : 0;
    }
  }
}

// acc[n] (n < 4: 32 columns from c0) += A (the warp's 16 rows of the row-major tile `as`, rows a0..a0+15) times the
// row-major tile `bs`'s rows c0 .. c0 + 31 transposed: acc = A_rows . B_rows^T over d.
template <int DP>
__device__ __forceinline__ void mma_rows_rows(float (&acc)[4][4], const uint32_t* as, int a0, const uint32_t* bs,
                                              int c0) {
  constexpr int RS = row_words<DP>();
  const int lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
#pragma unroll
  for (int n = 0; n < 4; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[n][e] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < DP / 16; ++ks) {
    const uint32_t* ar = as + (a0 + gq) * RS + ks * 8 + tq;
    const uint32_t f0 = ar[0], f1 = ar[8 * RS], f2 = ar[4], f3 = ar[8 * RS + 4];
#pragma unroll
    for (int n = 0; n < 4; ++n) {
      const uint32_t* br = bs + (c0 + n * 8 + gq) * RS + ks * 8 + tq;
      mma_bf16(acc[n], f0, f1, f2, f3, br[0], br[4]);
    }
  }
}

// out[nd] += X (16 rows x 32 columns, as fp32 accumulator fragments x[4][4]) times the transposed tile `ts` (of R
// values per row) columns c0 .. c0 + 31 (the contraction index), for every d: out (16 x DP) += X . T[c0 .. c0 + 31][d].
template <int DP, int R>
__device__ __forceinline__ void mma_frag_cols(float (&out)[DP / 8][4], const float (&x)[4][4], const uint32_t* ts,
                                              int c0) {
  const int lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4;
#pragma unroll
  for (int kk = 0; kk < 2; ++kk) {
    const uint32_t p0 = pack_bf16x2(x[2 * kk][0], x[2 * kk][1]);
    const uint32_t p1 = pack_bf16x2(x[2 * kk][2], x[2 * kk][3]);
    const uint32_t p2 = pack_bf16x2(x[2 * kk + 1][0], x[2 * kk + 1][1]);
    const uint32_t p3 = pack_bf16x2(x[2 * kk + 1][2], x[2 * kk + 1][3]);
#pragma unroll
    for (int nd = 0; nd < DP / 8; ++nd) {
      const uint32_t* tr = ts + (nd * 8 + gq) * col_words<R>() + c0 / 2 + kk * 8 + tq;
      mma_bf16(out[nd], p0, p1, p2, p3, tr[0], tr[4]);
    }
  }
}

// Shared-memory words of the two passes (a word per bf16 pair, plus lse, delta and visible keys per query row).
template <int DP>
constexpr int dkv_bf16_words() {
  return 2 * kBT * row_words<DP>() + 2 * kBU * row_words<DP>() + 2 * DP * col_words<kBU>() + 3 * kBU;
}
template <int DP>
constexpr int dq_bf16_words() {
  return 4 * kBT * row_words<DP>() + DP * col_words<kBT>() + 3 * kBT;
}

// Pass 1: dK, dV of keys [j0, j0 + 64) of kv head (b, hk); warp w owns keys j0 + 16w .. j0 + 16w + 15. Query tiles
// of 32.
template <int DP>
__global__ void __launch_bounds__(128) attn_bwd_dkv_bf16_kernel(AttnArgs a) {
  constexpr int ND = DP / 8, RW = row_words<DP>(), CW = col_words<kBU>();
  SF_DYNAMIC_SMEM(smem_raw);
  uint32_t* Ks = reinterpret_cast<uint32_t*>(smem_raw);  // (64 keys, d pairs)
  uint32_t* Vs = Ks + kBT * RW;                          // (64 keys, d pairs)
  uint32_t* Qs = Vs + kBT * RW;                          // (32 queries, d pairs)
  uint32_t* dOs = Qs + kBU * RW;                         // (32 queries, d pairs)
  uint32_t* Qt = dOs + kBU * RW;                         // (DP, query pairs)
  uint32_t* dOt = Qt + DP * CW;                          // (DP, query pairs)
  float* lse_s = reinterpret_cast<float*>(dOt + DP * CW);
  float* delta_s = lse_s + kBU;
  int* nv_s = reinterpret_cast<int*>(delta_s + kBU);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, gq = lane / 4, tq = lane % 4;
  const int64_t BHk = a.B * a.Hkv, bhk = static_cast<int64_t>(blockIdx.x) % BHk;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) / BHk * kBT;
  const int64_t b = bhk / a.Hkv, hk = bhk % a.Hkv, G = a.Hq / a.Hkv, D = a.D;
  const int64_t L = key_len(a, b);
  if (j0 >= L) return;  // no query sees these keys
  stage_rows<DP, kBT>(Ks, a.k + bhk * a.Tk * D, j0, a.Tk, D);
  stage_rows<DP, kBT>(Vs, a.v + bhk * a.Tk * D, j0, a.Tk, D);
  float dk[ND][4], dv[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.0f;
  int64_t first = 0;  // the first query that sees key j0
  if (a.causal) {
    first = j0 - (a.Tk - a.Tq);
    if (first < 0) first = 0;
  }
  // Queries before qall miss a key of this tile that gets a gradient (keys past Tk get none): their masked P, dS are
  // zeros that the products below would multiply by their dO, Q rows, so those rows are checked while staged.
  const int64_t qall = first_seeing_all(a, L, j0 + kBT < a.Tk ? j0 + kBT : a.Tk);
  const int kl0 = warp * 16 + gq;  // this thread's keys (local): kl0 and kl0 + 8
  for (int64_t g = 0; g < G; ++g) {
    const int64_t bh = b * a.Hq + hk * G + g;
    const float* Q = a.q + bh * a.Tq * D;
    const float* dO = a.dout + bh * a.Tq * D;
    for (int64_t i0 = first; i0 < a.Tq; i0 += kBU) {
      int bad = stage_rows<DP, kBU>(Qs, Q, i0, a.Tq, D, 0, qall);
      bad |= stage_rows<DP, kBU>(dOs, dO, i0, a.Tq, D, 0, qall);
      stage_cols<DP, kBU>(Qt, Q, i0, a.Tq, D);
      stage_cols<DP, kBU>(dOt, dO, i0, a.Tq, D);
      stage_query_stats<kBU>(a, lse_s, delta_s, nv_s, bh, L, i0);
      const bool slow = __syncthreads_or(bad) != 0;  // a masked pair would meet an Inf or NaN
      float s[4][4], dp[4][4];
      mma_rows_rows<DP>(s, Ks, warp * 16, Qs, 0);    // S^T = K Q^T (16 keys x 32 queries per warp)
      mma_rows_rows<DP>(dp, Vs, warp * 16, dOs, 0);  // dP^T = V dO^T
#pragma unroll
      for (int n = 0; n < 4; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int ql = n * 8 + 2 * tq + (e & 1);
          const int64_t key = j0 + kl0 + (e >> 1) * 8;
          const bool see = key < nv_s[ql];  // masked: P = dS = 0 by a select (dp may be NaN there)
          const float p = see ? expf(s[n][e] * a.scale - lse_s[ql]) : 0.0f;
          s[n][e] = p;
          dp[n][e] = see ? p * (dp[n][e] - delta_s[ql]) : 0.0f;
        }
      if (!slow) {
        mma_frag_cols<DP, kBU>(dv, s, dOt, 0);  // dV += P^T dO
        mma_frag_cols<DP, kBU>(dk, dp, Qt, 0);  // dK += dS^T Q
      } else {
        // The same sums per (key, query) pair over the pairs that see each other: query ql's P and dS of this
        // thread's keys are held by lane (gq, (ql % 8) / 2), as elements ql % 2 (key kl0) and 2 + ql % 2 (kl0 + 8)
        // of fragment ql / 8.
#pragma unroll 1
        for (int ql = 0; ql < kBU; ++ql) {
          const int fq = ql >> 3, odd = ql & 1, src = (lane & ~3) | ((ql & 7) >> 1);
          float op0 = 0.0f, op1 = 0.0f, od0 = 0.0f, od1 = 0.0f;
#pragma unroll
          for (int n = 0; n < 4; ++n)
            if (n == fq) {
              op0 = odd ? s[n][1] : s[n][0];
              op1 = odd ? s[n][3] : s[n][2];
              od0 = odd ? dp[n][1] : dp[n][0];
              od1 = odd ? dp[n][3] : dp[n][2];
            }
          const float p0 = round_bf16(__shfl_sync(0xffffffffu, op0, src));
          const float p1 = round_bf16(__shfl_sync(0xffffffffu, op1, src));
          const float ds0 = round_bf16(__shfl_sync(0xffffffffu, od0, src));
          const float ds1 = round_bf16(__shfl_sync(0xffffffffu, od1, src));
          const int64_t key0 = j0 + kl0;
          const bool see0 = key0 < nv_s[ql], see1 = key0 + 8 < nv_s[ql];
#pragma unroll
          for (int n = 0; n < ND; ++n)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float go = bf16_half(dOs[ql * RW + n * 4 + tq], e != 0);
              const float qv = bf16_half(Qs[ql * RW + n * 4 + tq], e != 0);
              if (see0) {
                dv[n][e] = fmaf(p0, go, dv[n][e]);
                dk[n][e] = fmaf(ds0, qv, dk[n][e]);
              }
              if (see1) {
                dv[n][2 + e] = fmaf(p1, go, dv[n][2 + e]);
                dk[n][2 + e] = fmaf(ds1, qv, dk[n][2 + e]);
              }
            }
        }
      }
      __syncthreads();  // the next query tile overwrites the staged tiles
    }
  }
#pragma unroll
  for (int n = 0; n < ND; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t key = j0 + kl0 + (e >> 1) * 8;
      const int d = n * 8 + 2 * tq + (e & 1);
      if (key < a.Tk && d < D) {
        a.dk[(bhk * a.Tk + key) * D + d] += a.scale * dk[n][e];
        a.dv[(bhk * a.Tk + key) * D + d] += dv[n][e];
      }
    }
}

// Pass 2: dQ of queries [i0, i0 + 64) of query head bh; warp w owns queries i0 + 16w .. i0 + 16w + 15. Key tiles of
// 64, taken 32 keys at a time.
template <int DP>
__global__ void __launch_bounds__(128) attn_bwd_dq_bf16_kernel(AttnArgs a) {
  constexpr int ND = DP / 8, RW = row_words<DP>();
  SF_DYNAMIC_SMEM(smem_raw);
  uint32_t* Qs = reinterpret_cast<uint32_t*>(smem_raw);  // (64 queries, d pairs)
  uint32_t* dOs = Qs + kBT * RW;                         // (64 queries, d pairs)
  uint32_t* Ks = dOs + kBT * RW;                         // (64 keys, d pairs)
  uint32_t* Vs = Ks + kBT * RW;                          // (64 keys, d pairs)
  uint32_t* Kt = Vs + kBT * RW;                          // (DP, key pairs)
  float* lse_s = reinterpret_cast<float*>(Kt + DP * col_words<kBT>());
  float* delta_s = lse_s + kBT;
  int* nv_s = reinterpret_cast<int*>(delta_s + kBT);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, gq = lane / 4, tq = lane % 4;
  const int64_t BH = a.B * a.Hq, nqb = (a.Tq + kBT - 1) / kBT;
  const int64_t bh = static_cast<int64_t>(blockIdx.x) % BH, qb = nqb - 1 - static_cast<int64_t>(blockIdx.x) / BH;
  const int64_t b = bh / a.Hq, hk = (bh % a.Hq) / (a.Hq / a.Hkv), bhk = b * a.Hkv + hk, D = a.D;
  const int64_t i0 = qb * kBT;
  const int64_t L = key_len(a, b);
  stage_rows<DP, kBT>(Qs, a.q + bh * a.Tq * D, i0, a.Tq, D);
  stage_rows<DP, kBT>(dOs, a.dout + bh * a.Tq * D, i0, a.Tq, D);
  stage_query_stats<kBT>(a, lse_s, delta_s, nv_s, bh, L, i0);
  float dq[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dq[n][e] = 0.0f;
  const int ql0 = warp * 16 + gq;  // this thread's queries (local): ql0 and ql0 + 8
  const int64_t last = (i0 + kBT <= a.Tq ? i0 + kBT : a.Tq) - 1;
  const int64_t nmax = visible(a, L, last), nmin = visible(a, L, i0);  // keys [0, nmin): seen by every query
  const float* K = a.k + bhk * a.Tk * D;
  const float* V = a.v + bhk * a.Tk * D;
  for (int64_t j0 = 0; j0 < nmax; j0 += kBT) {
    stage_rows<DP, kBT>(Ks, K, j0, a.Tk, D);
    stage_rows<DP, kBT>(Vs, V, j0, a.Tk, D);
    // K^T (the B operand of dQ += dS K, where masked dS are zeros) is zero from nmax on (no query here sees those
    // keys); a key in [nmin, nmax), masked for some query, with an Inf or NaN raises the flag.
    const int bad = stage_cols<DP, kBT>(Kt, K, j0, nmax, D, nmin, nmax);
    const bool slow = __syncthreads_or(bad) != 0;
#pragma unroll 1
    for (int kh = 0; kh < kBT; kh += kBU) {  // 32 keys at a time
      float s[4][4], dp[4][4];
      mma_rows_rows<DP>(s, Qs, warp * 16, Ks, kh);    // S = Q K^T
      mma_rows_rows<DP>(dp, dOs, warp * 16, Vs, kh);  // dP = dO V^T
#pragma unroll
      for (int n = 0; n < 4; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int ql = ql0 + (e >> 1) * 8;
          const int64_t key = j0 + kh + n * 8 + 2 * tq + (e & 1);
          const bool see = key < nv_s[ql];  // masked: dS = 0 by a select (dp may be NaN there)
          const float p = see ? expf(s[n][e] * a.scale - lse_s[ql]) : 0.0f;
          dp[n][e] = see ? p * (dp[n][e] - delta_s[ql]) : 0.0f;
        }
      if (!slow) {
        mma_frag_cols<DP, kBT>(dq, dp, Kt, kh);  // dQ += dS K
      } else {
        // The same sum per (query, key) pair over the keys each query sees: key kl's dS of this thread's queries is
        // held by lane (gq, (kl % 8) / 2), as elements kl % 2 (query ql0) and 2 + kl % 2 (ql0 + 8) of fragment kl / 8.
#pragma unroll 1
        for (int kl = 0; kl < kBU; ++kl) {
          const int fk = kl >> 3, odd = kl & 1, src = (lane & ~3) | ((kl & 7) >> 1);
          float own0 = 0.0f, own1 = 0.0f;
#pragma unroll
          for (int n = 0; n < 4; ++n)
            if (n == fk) {
              own0 = odd ? dp[n][1] : dp[n][0];
              own1 = odd ? dp[n][3] : dp[n][2];
            }
          const float ds0 = round_bf16(__shfl_sync(0xffffffffu, own0, src));
          const float ds1 = round_bf16(__shfl_sync(0xffffffffu, own1, src));
          const int64_t key = j0 + kh + kl;
          const bool see0 = key < nv_s[ql0], see1 = key < nv_s[ql0 + 8];
#pragma unroll
          for (int n = 0; n < ND; ++n)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float kv = bf16_half(Ks[(kh + kl) * RW + n * 4 + tq], e != 0);
              if (see0) dq[n][e] = fmaf(ds0, kv, dq[n][e]);
              if (see1) dq[n][2 + e] = fmaf(ds1, kv, dq[n][2 + e]);
            }
        }
      }
    }
    __syncthreads();  // the next key tile overwrites Ks, Vs, Kt
  }
#pragma unroll
  for (int n = 0; n < ND; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t i = i0 + ql0 + (e >> 1) * 8;
      const int d = n * 8 + 2 * tq + (e & 1);
      if (i < a.Tq && d < D) a.dq[(bh * a.Tq + i) * D + d] += a.scale * dq[n][e];
    }
}

// Pass 2, tiled (the default bf16 dQ pass): as attn_bwd_dq_bf16_kernel, but K and V come bf16 from the scratch rows of
// kv_to_bf16_kernel, 64-key tiles loaded by the forward's kFStages-deep cp.async pipeline into the forward's swizzled
// layout (fa_swz): K fragments of S = Q K^T and V fragments of dP = dO V^T by ldmatrix, K fragments of dQ += dS K by
// ldmatrix.trans (no K^T staged). Q and dO are staged once, row-major, padded (row_words), from fp32.
template <int DP>
__host__ __device__ constexpr int dq_fa_smem_bytes() {
  return kFStages * 2 * fa_tile_chunks<DP>() * 16 + (2 * kBT * row_words<DP>() + 3 * kBT) * 4;
}

// acc[n] (n < 4: keys c0 .. c0 + 31 of the swizzled tile) = A (the warp's 16 rows a0.. of the row-major padded tile
// `as`) times the tile's rows transposed, over d.
template <int DP>
__device__ __forceinline__ void mma_rows_tile(float (&acc)[4][4], const uint32_t* as, int a0, const uint4* tile,
                                              int c0) {
  constexpr int RS = row_words<DP>();
  const int lane = threadIdx.x % 32, gq = lane / 4, tq = lane % 4, lj = lane / 8, li = lane % 8;
#pragma unroll
  for (int n = 0; n < 4; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[n][e] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < DP / 16; ++ks) {
    const uint32_t* ar = as + (a0 + gq) * RS + ks * 8 + tq;
    const uint32_t f0 = ar[0], f1 = ar[8 * RS], f2 = ar[4], f3 = ar[8 * RS + 4];
#pragma unroll
    for (int np = 0; np < 2; ++np) {
      uint32_t r[4];
      ldmatrix_x4(r, tile + fa_swz<DP>(c0 + np * 16 + (lj >> 1) * 8 + li, ks * 2 + (lj & 1)));
      mma_bf16(acc[2 * np], f0, f1, f2, f3, r[0], r[1]);
      mma_bf16(acc[2 * np + 1], f0, f1, f2, f3, r[2], r[3]);
    }
  }
}

template <int DP>
__global__ void __launch_bounds__(128, 1) attn_bwd_dq_fa_kernel(FaArgs fa) {
  constexpr int ND = DP / 8, RW = row_words<DP>(), TC = fa_tile_chunks<DP>();
  const AttnArgs& a = fa.a;
  SF_DYNAMIC_SMEM(smem_raw);
  uint4* const stages = reinterpret_cast<uint4*>(smem_raw);   // stage st: K tile at st * 2 * TC, then the V tile
  uint32_t* Qs = reinterpret_cast<uint32_t*>(stages + kFStages * 2 * TC);  // (64 queries, d pairs)
  uint32_t* dOs = Qs + kBT * RW;                                          // (64 queries, d pairs)
  float* lse_s = reinterpret_cast<float*>(dOs + kBT * RW);
  float* delta_s = lse_s + kBT;
  int* nv_s = reinterpret_cast<int*>(delta_s + kBT);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, gq = lane / 4, tq = lane % 4;
  const int lj = lane / 8, li = lane % 8;
  const int64_t BH = a.B * a.Hq, nqb = (a.Tq + kBT - 1) / kBT;
  const int64_t bh = static_cast<int64_t>(blockIdx.x) % BH, qb = nqb - 1 - static_cast<int64_t>(blockIdx.x) / BH;
  const int64_t b = bh / a.Hq, hk = (bh % a.Hq) / (a.Hq / a.Hkv), bhk = b * a.Hkv + hk, D = a.D;
  const int64_t i0 = qb * kBT;
  const int64_t L = key_len(a, b);
  const int ql0 = warp * 16 + gq;  // this thread's queries (local): ql0 and ql0 + 8
  const int64_t last = (i0 + kBT <= a.Tq ? i0 + kBT : a.Tq) - 1;
  const int64_t nmax = visible(a, L, last), nmin = visible(a, L, i0);  // keys [0, nmin): seen by every query
  const int64_t ntiles = (nmax + kBT - 1) / kBT;
  const uint16_t* K = fa.kb + bhk * a.Tk * DP;
  const uint16_t* V = fa.vb + bhk * a.Tk * DP;
  auto load_stage = [&](int st, int64_t jt) {
    uint4* t = stages + st * 2 * TC;
    fa_load_tile<DP, 128>(t, K, jt * kBT, nmax);  // K (the B operand of dQ += dS K) is zero from nmax on
    fa_load_tile<DP, 128>(t + TC, V, jt * kBT, nmax);
  };
#pragma unroll
  for (int st = 0; st < kFStages - 1; ++st) {
    if (st < ntiles) load_stage(st, st);
    cp_async_commit();
  }
  stage_rows<DP, kBT>(Qs, a.q + bh * a.Tq * D, i0, a.Tq, D);
  stage_rows<DP, kBT>(dOs, a.dout + bh * a.Tq * D, i0, a.Tq, D);
  stage_query_stats<kBT>(a, lse_s, delta_s, nv_s, bh, L, i0);
  float dq[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dq[n][e] = 0.0f;
  for (int64_t jt = 0; jt < ntiles; ++jt) {
    cp_async_wait<kFStages - 2>();  // key tile jt: this thread's copies have landed
    __syncthreads();  // everyone's have (and Q, dO, the stats are staged); every warp is done with key tile jt - 1
    const int64_t next = jt + kFStages - 1;
    if (next < ntiles) load_stage(static_cast<int>(next % kFStages), next);
    cp_async_commit();
    const int64_t j0 = jt * kBT;
    const uint4* Ks = stages + static_cast<int>(jt % kFStages) * 2 * TC;
    const uint4* Vs = Ks + TC;
    // a key in [nmin, nmax), masked for some query, with an Inf or NaN in K raises the flag (block-uniform test)
    bool slow = false;
    if (j0 + kBT > nmin) {
      int kbad = 0;
      for (int c = tid; c < TC; c += 128) {
        if (j0 + c / (DP / 8) < nmin) continue;
        const uint4 w = Ks[c];
        kbad |= nonfinite_halves(w.x) | nonfinite_halves(w.y) | nonfinite_halves(w.z) | nonfinite_halves(w.w);
      }
      slow = __syncthreads_or(kbad) != 0;
    }
#pragma unroll 1
    for (int kh = 0; kh < kBT; kh += kBU) {  // 32 keys at a time
      float s[4][4], dp[4][4];
      mma_rows_tile<DP>(s, Qs, warp * 16, Ks, kh);    // S = Q K^T
      mma_rows_tile<DP>(dp, dOs, warp * 16, Vs, kh);  // dP = dO V^T
#pragma unroll
      for (int n = 0; n < 4; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int ql = ql0 + (e >> 1) * 8;
          const int64_t key = j0 + kh + n * 8 + 2 * tq + (e & 1);
          const bool see = key < nv_s[ql];  // masked: dS = 0 by a select (dp may be NaN there)
          const float p = see ? expf(s[n][e] * a.scale - lse_s[ql]) : 0.0f;
          dp[n][e] = see ? p * (dp[n][e] - delta_s[ql]) : 0.0f;
        }
      if (!slow) {
        // dQ += dS K: k-step kk covers keys kh + 16kk .. + 15; with .trans, matrices (keys 0-7, d 16np + 0-7),
        // (keys 8-15, same d), (keys 0-7, d + 8-15), (keys 8-15, d + 8-15) = b0, b1 of dQ fragment 2np, then 2np + 1
#pragma unroll
        for (int kk = 0; kk < 2; ++kk) {
          const uint32_t p0 = pack_bf16x2(dp[2 * kk][0], dp[2 * kk][1]);
          const uint32_t p1 = pack_bf16x2(dp[2 * kk][2], dp[2 * kk][3]);
          const uint32_t p2 = pack_bf16x2(dp[2 * kk + 1][0], dp[2 * kk + 1][1]);
          const uint32_t p3 = pack_bf16x2(dp[2 * kk + 1][2], dp[2 * kk + 1][3]);
#pragma unroll
          for (int np = 0; np < ND / 2; ++np) {
            uint32_t r[4];
            ldmatrix_x4_trans(r, Ks + fa_swz<DP>(kh + kk * 16 + (lj & 1) * 8 + li, np * 2 + (lj >> 1)));
            mma_bf16(dq[2 * np], p0, p1, p2, p3, r[0], r[1]);
            mma_bf16(dq[2 * np + 1], p0, p1, p2, p3, r[2], r[3]);
          }
        }
      } else {
        // The same sum per (query, key) pair over the keys each query sees: key kl's dS of this thread's queries is
        // held by lane (gq, (kl % 8) / 2), as elements kl % 2 (query ql0) and 2 + kl % 2 (ql0 + 8) of fragment kl / 8.
        const uint32_t* Kw = reinterpret_cast<const uint32_t*>(Ks);
#pragma unroll 1
        for (int kl = 0; kl < kBU; ++kl) {
          const int fk = kl >> 3, odd = kl & 1, src = (lane & ~3) | ((kl & 7) >> 1);
          float own0 = 0.0f, own1 = 0.0f;
#pragma unroll
          for (int n = 0; n < 4; ++n)
            if (n == fk) {
              own0 = odd ? dp[n][1] : dp[n][0];
              own1 = odd ? dp[n][3] : dp[n][2];
            }
          const float ds0 = round_bf16(__shfl_sync(0xffffffffu, own0, src));
          const float ds1 = round_bf16(__shfl_sync(0xffffffffu, own1, src));
          const int64_t key = j0 + kh + kl;
          const bool see0 = key < nv_s[ql0], see1 = key < nv_s[ql0 + 8];
#pragma unroll
          for (int n = 0; n < ND; ++n) {
            const uint32_t w = Kw[fa_swz<DP>(kh + kl, n) * 4 + tq];  // K[key][8n + 2tq], K[key][8n + 2tq + 1]
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float kv = bf16_half(w, e != 0);
              if (see0) dq[n][e] = fmaf(ds0, kv, dq[n][e]);
              if (see1) dq[n][2 + e] = fmaf(ds1, kv, dq[n][2 + e]);
            }
          }
        }
      }
    }
  }
  cp_async_wait<0>();  // (only empty groups can be pending here)
#pragma unroll
  for (int n = 0; n < ND; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t i = i0 + ql0 + (e >> 1) * 8;
      const int d = n * 8 + 2 * tq + (e & 1);
      if (i < a.Tq && d < D) a.dq[(bh * a.Tq + i) * a.D + d] += a.scale * dq[n][e];
    }
}

// Pass 1, tiled (the default bf16 dK/dV pass): as attn_bwd_dkv_bf16_kernel, but Q and dO come bf16 from scratch rows
// of DP (kv_to_bf16_kernel on q and dout), 32-query tiles (every query tile of every query head of the GQA group, in
// one sequence) loaded by a kFStages-deep cp.async pipeline into the swizzled layout of fa_swz; the Q and dO
// fragments of S^T = K Q^T and dP^T = V dO^T by ldmatrix, those of dV += P^T dO and dK += dS^T Q by ldmatrix.trans
// from the same row-major tiles (no transposed copies). K and V (the A operands) are staged once from fp32.
template <int DP>
__host__ __device__ constexpr int dkv_fa_smem_bytes() {
  return kFStages * 2 * (kBU * DP / 8) * 16 + (2 * kBT * row_words<DP>() + kFStages * 3 * kBU) * 4;
}

// out[nd] += X (16 rows x 32 columns, fp32 accumulator fragments x[4][4]) times rows c0 .. c0 + 31 of the swizzled
// row-major tile `tile` (the contraction index), for every d: fragments by ldmatrix.trans.
template <int DP>
__device__ __forceinline__ void mma_frag_tile(float (&out)[DP / 8][4], const float (&x)[4][4], const uint4* tile,
                                              int c0) {
  const int lane = threadIdx.x % 32, lj = lane / 8, li = lane % 8;
#pragma unroll
  for (int kk = 0; kk < 2; ++kk) {
    const uint32_t p0 = pack_bf16x2(x[2 * kk][0], x[2 * kk][1]);
    const uint32_t p1 = pack_bf16x2(x[2 * kk][2], x[2 * kk][3]);
    const uint32_t p2 = pack_bf16x2(x[2 * kk + 1][0], x[2 * kk + 1][1]);
    const uint32_t p3 = pack_bf16x2(x[2 * kk + 1][2], x[2 * kk + 1][3]);
#pragma unroll
    for (int np = 0; np < DP / 16; ++np) {
      uint32_t r[4];
      ldmatrix_x4_trans(r, tile + fa_swz<DP>(c0 + kk * 16 + (lj & 1) * 8 + li, np * 2 + (lj >> 1)));
      mma_bf16(out[2 * np], p0, p1, p2, p3, r[0], r[1]);
      mma_bf16(out[2 * np + 1], p0, p1, p2, p3, r[2], r[3]);
    }
  }
}

struct FaBwdArgs {
  AttnArgs a;
  const uint16_t *qb, *dob;  // Q, dO as bf16, rows of DP
};

template <int DP>
__global__ void __launch_bounds__(128, 1) attn_bwd_dkv_fa_kernel(FaBwdArgs fb) {
  constexpr int ND = DP / 8, RW = row_words<DP>(), TC = kBU * DP / 8;  // TC: chunks of a 32-query tile
  const AttnArgs& a = fb.a;
  SF_DYNAMIC_SMEM(smem_raw);
  uint4* const stages = reinterpret_cast<uint4*>(smem_raw);  // stage st: Q tile at st * 2 * TC, then the dO tile
  uint32_t* Ks = reinterpret_cast<uint32_t*>(stages + kFStages * 2 * TC);  // (64 keys, d pairs)
  uint32_t* Vs = Ks + kBT * RW;                                           // (64 keys, d pairs)
  float* stats = reinterpret_cast<float*>(Vs + kBT * RW);  // stage st: lse, delta, visible keys of its 32 queries
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, gq = lane / 4, tq = lane % 4;
  const int64_t BHk = a.B * a.Hkv, bhk = static_cast<int64_t>(blockIdx.x) % BHk;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) / BHk * kBT;
  const int64_t b = bhk / a.Hkv, hk = bhk % a.Hkv, G = a.Hq / a.Hkv, D = a.D;
  const int64_t L = key_len(a, b);
  if (j0 >= L) return;  // no query sees these keys
  int64_t first = 0;  // the first query that sees key j0
  if (a.causal) {
    first = j0 - (a.Tk - a.Tq);
    if (first < 0) first = 0;
  }
  // Queries before qall miss a key of this tile that gets a gradient (keys past Tk get none): their masked P, dS are
  // zeros that the products below would multiply by their dO, Q rows, so those rows are checked once landed.
  const int64_t qall = first_seeing_all(a, L, j0 + kBT < a.Tk ? j0 + kBT : a.Tk);
  const int64_t nqt = first < a.Tq ? (a.Tq - first + kBU - 1) / kBU : 0;  // query tiles per query head
  const int64_t ntiles = G * nqt;
  auto tile_head = [&](int64_t t) { return b * a.Hq + hk * G + t / nqt; };  // bh of tile t
  auto tile_i0 = [&](int64_t t) { return first + (t % nqt) * kBU; };
  auto load_stage = [&](int st, int64_t t) {
    const int64_t bh = tile_head(t), i0 = tile_i0(t);
    uint4* s = stages + st * 2 * TC;
    const int64_t n = a.Tq - i0;  // rows of this head left from i0
    fa_load_tile<DP, 128, kBU>(s, fb.qb + (bh * a.Tq + i0) * DP, 0, n);
    fa_load_tile<DP, 128, kBU>(s + TC, fb.dob + (bh * a.Tq + i0) * DP, 0, n);
    float* st_s = stats + st * 3 * kBU;
    stage_query_stats<kBU>(a, st_s, st_s + kBU, reinterpret_cast<int*>(st_s + 2 * kBU), bh, L, i0);
  };
#pragma unroll
  for (int st = 0; st < kFStages - 1; ++st) {
    if (st < ntiles) load_stage(st, st);
    cp_async_commit();
  }
  stage_rows<DP, kBT>(Ks, a.k + bhk * a.Tk * D, j0, a.Tk, D);
  stage_rows<DP, kBT>(Vs, a.v + bhk * a.Tk * D, j0, a.Tk, D);
  float dk[ND][4], dv[ND][4];
#pragma unroll
  for (int n = 0; n < ND; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.0f;
  const int kl0 = warp * 16 + gq;  // this thread's keys (local): kl0 and kl0 + 8
  for (int64_t t = 0; t < ntiles; ++t) {
    cp_async_wait<kFStages - 2>();  // query tile t: this thread's copies have landed
    __syncthreads();  // everyone's have (and its stats, K, V are staged); every warp is done with query tile t - 1
    const int64_t next = t + kFStages - 1;
    if (next < ntiles) load_stage(static_cast<int>(next % kFStages), next);
    cp_async_commit();
    const int64_t i0 = tile_i0(t);
    const int cur = static_cast<int>(t % kFStages);
    const uint4* Qt = stages + cur * 2 * TC;
    const uint4* dOt = Qt + TC;
    const float* lse_s = stats + cur * 3 * kBU;
    const float* delta_s = lse_s + kBU;
    const int* nv_s = reinterpret_cast<const int*>(lse_s + 2 * kBU);
    // a masked pair would meet an Inf or NaN: a Q or dO value of a query before qall (block-uniform test)
    bool slow = false;
    if (i0 < qall) {
      int bad = 0;
      for (int c = tid; c < TC; c += 128) {
        if (i0 + c / (DP / 8) >= qall) continue;
        const uint4 w = Qt[c], u = dOt[c];
        bad |= nonfinite_halves(w.x) | nonfinite_halves(w.y) | nonfinite_halves(w.z) | nonfinite_halves(w.w) |
               nonfinite_halves(u.x) | nonfinite_halves(u.y) | nonfinite_halves(u.z) | nonfinite_halves(u.w);
      }
      slow = __syncthreads_or(bad) != 0;
    }
    float s[4][4], dp[4][4];
    mma_rows_tile<DP>(s, Ks, warp * 16, Qt, 0);    // S^T = K Q^T (16 keys x 32 queries per warp)
    mma_rows_tile<DP>(dp, Vs, warp * 16, dOt, 0);  // dP^T = V dO^T
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int ql = n * 8 + 2 * tq + (e & 1);
        const int64_t key = j0 + kl0 + (e >> 1) * 8;
        const bool see = key < nv_s[ql];  // masked: P = dS = 0 by a select (dp may be NaN there)
        const float p = see ? expf(s[n][e] * a.scale - lse_s[ql]) : 0.0f;
        s[n][e] = p;
        dp[n][e] = see ? p * (dp[n][e] - delta_s[ql]) : 0.0f;
      }
    if (!slow) {
      mma_frag_tile<DP>(dv, s, dOt, 0);  // dV += P^T dO
      mma_frag_tile<DP>(dk, dp, Qt, 0);  // dK += dS^T Q
    } else {
      // The same sums per (key, query) pair over the pairs that see each other: query ql's P and dS of this
      // thread's keys are held by lane (gq, (ql % 8) / 2), as elements ql % 2 (key kl0) and 2 + ql % 2 (kl0 + 8)
      // of fragment ql / 8.
      const uint32_t* Qw = reinterpret_cast<const uint32_t*>(Qt);
      const uint32_t* dOw = reinterpret_cast<const uint32_t*>(dOt);
#pragma unroll 1
      for (int ql = 0; ql < kBU; ++ql) {
        const int fq = ql >> 3, odd = ql & 1, src = (lane & ~3) | ((ql & 7) >> 1);
        float op0 = 0.0f, op1 = 0.0f, od0 = 0.0f, od1 = 0.0f;
#pragma unroll
        for (int n = 0; n < 4; ++n)
          if (n == fq) {
            op0 = odd ? s[n][1] : s[n][0];
            op1 = odd ? s[n][3] : s[n][2];
            od0 = odd ? dp[n][1] : dp[n][0];
            od1 = odd ? dp[n][3] : dp[n][2];
          }
        const float p0 = round_bf16(__shfl_sync(0xffffffffu, op0, src));
        const float p1 = round_bf16(__shfl_sync(0xffffffffu, op1, src));
        const float ds0 = round_bf16(__shfl_sync(0xffffffffu, od0, src));
        const float ds1 = round_bf16(__shfl_sync(0xffffffffu, od1, src));
        const int64_t key0 = j0 + kl0;
        const bool see0 = key0 < nv_s[ql], see1 = key0 + 8 < nv_s[ql];
#pragma unroll
        for (int n = 0; n < ND; ++n) {
          const int slot = fa_swz<DP>(ql, n) * 4 + tq;  // (query ql, d 8n + 2tq and + 1)
          const uint32_t gw = dOw[slot], qw = Qw[slot];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float go = bf16_half(gw, e != 0);
            const float qv = bf16_half(qw, e != 0);
            if (see0) {
              dv[n][e] = fmaf(p0, go, dv[n][e]);
              dk[n][e] = fmaf(ds0, qv, dk[n][e]);
            }
            if (see1) {
              dv[n][2 + e] = fmaf(p1, go, dv[n][2 + e]);
              dk[n][2 + e] = fmaf(ds1, qv, dk[n][2 + e]);
            }
          }
        }
      }
    }
  }
  cp_async_wait<0>();  // (only empty groups can be pending here)
#pragma unroll
  for (int n = 0; n < ND; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t key = j0 + kl0 + (e >> 1) * 8;
      const int d = n * 8 + 2 * tq + (e & 1);
      if (key < a.Tk && d < D) {
        a.dk[(bhk * a.Tk + key) * D + d] += a.scale * dk[n][e];
        a.dv[(bhk * a.Tk + key) * D + d] += dv[n][e];
      }
    }
}

// ---- host side ----------------------------------------------------------------------------------------------------
void check_desc(const cpu::AttentionDesc& d, const char* what) {
  if (d.B < 0 || d.Hq < 0 || d.Hkv <= 0 || d.Tq < 0 || d.Tk < 0 || d.D < 0)
    range_error(what, ": bad shape B = ", d.B, ", Hq = ", d.Hq, ", Hkv = ", d.Hkv, ", Tq = ", d.Tq, ", Tk = ", d.Tk,
                ", D = ", d.D);
  if (d.Hq % d.Hkv != 0) range_error(what, ": Hq = ", d.Hq, " is not a multiple of Hkv = ", d.Hkv);
  if (d.D > 128) range_error(what, ": head dimension D = ", d.D, " is above the CUDA kernels' limit of 128");
}

int padded_d(int64_t D) { return D <= 32 ? 32 : (D <= 64 ? 64 : 128); }

unsigned blocks(int64_t n, const char* what) {
  if (n > 0x7fffffffLL) range_error(what, ": ", n, " blocks, more than a grid holds");
  return static_cast<unsigned>(n);
}

AttnArgs make_args(const cpu::AttentionDesc& d) {
  AttnArgs a{};
  a.B = d.B, a.Hq = d.Hq, a.Hkv = d.Hkv, a.Tq = d.Tq, a.Tk = d.Tk, a.D = d.D;
  a.scale = d.scale;
  a.causal = d.causal;
  a.key_lengths = d.key_lengths;
  return a;
}

template <typename Kernel>
void allow_smem(Kernel* kernel, int bytes, const char* name) {
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes), name);
}

template <int DP>
void launch_forward(Stream s, const AttnArgs& a, Precision p, AttentionImpl impl) {
  if (p == Precision::BF16 && impl == AttentionImpl::Legacy) {
    const unsigned n = blocks(a.B * a.Hq * ceil_div(a.Tq, kBQ), "attention_forward");
    SF_LAUNCH(attn_fwd_bf16_kernel<DP>, (n, 128, 0, s), a);
    check_launch("attn_fwd_bf16_kernel");
  } else if (p == Precision::BF16) {
    // K and V rounded to bf16 once, rows padded to DP (kv_to_bf16_kernel), then the tiled kernel
    const unsigned n = blocks(a.B * a.Hq * ceil_div(a.Tq, kFTQ), "attention_forward");
    const int64_t rows = a.B * a.Hkv * a.Tk;
    Scratch buf(s, static_cast<size_t>(2 * rows * DP) * sizeof(uint16_t), "attention_forward (bf16 K and V)");
    uint32_t* kb = buf.as<uint32_t>();
    uint32_t* vb = kb + rows * (DP / 2);
    if (rows > 0) {
      SF_LAUNCH(kv_to_bf16_kernel<DP>, (grid_for(rows * (DP / 2), 256), 256, 0, s), a.k, a.v, rows, a.D, kb, vb);
      check_launch("kv_to_bf16_kernel");
    }
    const int bytes = fa_smem_bytes<DP>();
    allow_smem(attn_fwd_fa_kernel<DP>, bytes, "cudaFuncSetAttribute(attn_fwd_fa_kernel)");
    const FaArgs fa{a, reinterpret_cast<const uint16_t*>(kb), reinterpret_cast<const uint16_t*>(vb)};
    SF_LAUNCH(attn_fwd_fa_kernel<DP>, (n, kFThreads, bytes, s), fa);
    check_launch("attn_fwd_fa_kernel");
  } else {
    const unsigned n = blocks(a.B * a.Hq * ceil_div(a.Tq, kFQ), "attention_forward");
    SF_LAUNCH(attn_fwd_f32_kernel<DP>, (n, 128, 0, s), a);
    check_launch("attn_fwd_f32_kernel");
  }
}

template <int DP>
void launch_backward(Stream s, const AttnArgs& a, Precision p, AttentionImpl impl) {
  if (p == Precision::BF16) {
    const unsigned nk = blocks(a.B * a.Hkv * ceil_div(a.Tk, kBT), "attention_backward");
    const unsigned nq = blocks(a.B * a.Hq * ceil_div(a.Tq, kBT), "attention_backward");
    if (impl == AttentionImpl::Legacy) {
      const int dkv_bytes = static_cast<int>(sizeof(uint32_t)) * dkv_bf16_words<DP>();
      const int dq_bytes = static_cast<int>(sizeof(uint32_t)) * dq_bf16_words<DP>();
      allow_smem(attn_bwd_dkv_bf16_kernel<DP>, dkv_bytes, "cudaFuncSetAttribute(attn_bwd_dkv_bf16_kernel)");
      allow_smem(attn_bwd_dq_bf16_kernel<DP>, dq_bytes, "cudaFuncSetAttribute(attn_bwd_dq_bf16_kernel)");
      SF_LAUNCH(attn_bwd_dkv_bf16_kernel<DP>, (nk, 128, dkv_bytes, s), a);
      check_launch("attn_bwd_dkv_bf16_kernel");
      SF_LAUNCH(attn_bwd_dq_bf16_kernel<DP>, (nq, 128, dq_bytes, s), a);
      check_launch("attn_bwd_dq_bf16_kernel");
      return;
    }
    // Tiled: K, V, Q and dO rounded to bf16 once, rows padded to DP (as the forward), in one scratch buffer
    const int64_t rows = a.B * a.Hkv * a.Tk, qrows = a.B * a.Hq * a.Tq;
    Scratch buf(s, static_cast<size_t>(2 * (rows + qrows) * DP) * sizeof(uint16_t),
                "attention_backward (bf16 K, V, Q and dO)");
    uint32_t* kb = buf.as<uint32_t>();
    uint32_t* vb = kb + rows * (DP / 2);
    uint32_t* qb = vb + rows * (DP / 2);
    uint32_t* gb = qb + qrows * (DP / 2);
    SF_LAUNCH(kv_to_bf16_kernel<DP>, (grid_for(rows * (DP / 2), 256), 256, 0, s), a.k, a.v, rows, a.D, kb, vb);
    check_launch("kv_to_bf16_kernel");
    SF_LAUNCH(kv_to_bf16_kernel<DP>, (grid_for(qrows * (DP / 2), 256), 256, 0, s), a.q, a.dout, qrows, a.D, qb, gb);
    check_launch("kv_to_bf16_kernel");
    const int fk_bytes = dkv_fa_smem_bytes<DP>();
    allow_smem(attn_bwd_dkv_fa_kernel<DP>, fk_bytes, "cudaFuncSetAttribute(attn_bwd_dkv_fa_kernel)");
    const FaBwdArgs fb{a, reinterpret_cast<const uint16_t*>(qb), reinterpret_cast<const uint16_t*>(gb)};
    SF_LAUNCH(attn_bwd_dkv_fa_kernel<DP>, (nk, 128, fk_bytes, s), fb);
    check_launch("attn_bwd_dkv_fa_kernel");
    const int fq_bytes = dq_fa_smem_bytes<DP>();
    allow_smem(attn_bwd_dq_fa_kernel<DP>, fq_bytes, "cudaFuncSetAttribute(attn_bwd_dq_fa_kernel)");
    const FaArgs fa{a, reinterpret_cast<const uint16_t*>(kb), reinterpret_cast<const uint16_t*>(vb)};
    SF_LAUNCH(attn_bwd_dq_fa_kernel<DP>, (nq, 128, fq_bytes, s), fa);
    check_launch("attn_bwd_dq_fa_kernel");
    return;
  }
  const int bytes = static_cast<int>(sizeof(BwdSmem<DP>));
  allow_smem(attn_bwd_dkv_kernel<DP>, bytes, "cudaFuncSetAttribute(attn_bwd_dkv_kernel)");
  allow_smem(attn_bwd_dq_kernel<DP>, bytes, "cudaFuncSetAttribute(attn_bwd_dq_kernel)");
  SF_LAUNCH(attn_bwd_dkv_kernel<DP>, (blocks(a.B * a.Hkv * ceil_div(a.Tk, kT), "attention_backward"), 128, bytes, s), a);
  check_launch("attn_bwd_dkv_kernel");
  SF_LAUNCH(attn_bwd_dq_kernel<DP>, (blocks(a.B * a.Hq * ceil_div(a.Tq, kT), "attention_backward"), 128, bytes, s), a);
  check_launch("attn_bwd_dq_kernel");
}

}  // namespace

AttentionImpl attention_impl_from_env() {
  static const AttentionImpl impl = [] {
    const char* e = std::getenv("SHAREDFORMER_ATTENTION");
    return e && std::string(e) == "legacy" ? AttentionImpl::Legacy : AttentionImpl::Tiled;
  }();
  return impl;
}

void attention_forward(Stream s, const cpu::AttentionDesc& d, const float* q, const float* k, const float* v,
                       float* o, float* lse, Precision p, AttentionImpl impl) {
  check_desc(d, "attention_forward");
  if (d.B == 0 || d.Hq == 0 || d.Tq == 0) return;
  AttnArgs a = make_args(d);
  a.q = q, a.k = k, a.v = v, a.out = o, a.out_lse = lse;
  switch (padded_d(d.D)) {
    case 32: launch_forward<32>(s, a, p, impl); break;
    case 64: launch_forward<64>(s, a, p, impl); break;
    default: launch_forward<128>(s, a, p, impl); break;
  }
}

void attention_backward(Stream s, const cpu::AttentionDesc& d, const float* q, const float* k, const float* v,
                        const float* o, const float* lse, const float* dout, float* dq, float* dk, float* dv,
                        Precision p, AttentionImpl impl) {
  check_desc(d, "attention_backward");
  if (d.B == 0 || d.Hq == 0 || d.Tq == 0 || d.Tk == 0) return;  // no query sees a key: every gradient is 0
  AttnArgs a = make_args(d);
  a.q = q, a.k = k, a.v = v, a.o = o, a.lse = lse, a.dout = dout, a.dq = dq, a.dk = dk, a.dv = dv;
  switch (padded_d(d.D)) {
    case 32: launch_backward<32>(s, a, p, impl); break;
    case 64: launch_backward<64>(s, a, p, impl); break;
    default: launch_backward<128>(s, a, p, impl); break;
  }
}

}  // namespace sf::cuda
