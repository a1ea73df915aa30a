// persistent.cu — a persistent kernel for a shared block at small batch (decode): one cooperative launch applies one
// pre-LN Transformer block to the L consecutive layers that reuse it, for M <= 32 rows (M sequences, one new token
// each), with the block's weights held in shared memory as bf16 for the whole launch. The block (lib/nn/layers.ts,
// MultiHeadAttention.forwardStep + FeedForward, as DecodeSession.step composes them), per layer l and row b:
//
//   h  = LN1(x)                                   layer norm over d_model, eps, weight and bias (fp32)
//   q  = h Wq^T + bq,  k = h Wk^T + bk,  v = h Wv^T + bv          (Linear: W stored (out, in); biases optional)
//   k_cache[l][b, hk, pos_b, :] = k[hk],  v_cache[l][...] = v[hk]  (kv_append at the row's own position pos_b)
//   o[h] = softmax(scale * q[h] . K[b, h / (H / Hkv), j]) V[...] over keys j in [0, pos_b] (key length pos_b + 1,
//          no causal mask: the cache holds no later position; GQA: query head h uses K/V head h / (H / Hkv))
//   x += o Wo^T + bo                              (residual, fp32)
//   x += gelu_tanh(LN2(x) W1^T + b1) W2^T + b2    (GELU tanh form, fused as matmul's epilogue does)
//
// Design:
//  * Weights. The four products are GEMVs over M <= 32 rows: Wqkv = [Wq; Wk; Wv] (d + 2 Hkv Dh outputs), Wo (d),
//    W1 (d_ff) and W2 (d, over d_ff inputs). Each is cut into tiles of 8 output columns (one mma n-tile); each block
//    of the grid owns a contiguous run of every matrix's tiles (a floor/ceil share; the blocks that get one more
//    tile rotate from one matrix to the next, so that the remainders do not pile up on block 0) and converts them
//    from the fp32 master weights to bf16 into its shared memory ONCE, at the start of the launch: 12 d^2 bf16
//    weights (MHA, d_ff = 4 d) are 24 d^2 bytes: 6 MiB at d = 512, 24 MiB at d = 1024, spread over one block per SM
//    (H200: 132 SMs x 227 KiB = 29 MiB; at d = 1024 the largest share is 197,760 bytes, plus up to 16,640 bytes of
//    reduction space and row statistics at M = 32; at d = 512, 66,176 bytes).
//    Rows of a tile are padded by 8 bf16 (16 bytes), which makes every B-fragment load bank-conflict free.
//  * Products: bf16 mma.sync m16n8k16 with fp32 accumulators. At M <= 32 a GEMV is bound by reading the weights
//    from shared memory, not by arithmetic: the tensor cores read each weight once per layer and reuse each
//    activation fragment across the block's n-tiles in registers, where fp32 FMA over the same bf16 weights would
//    read every activation once per (row, column) from shared memory or L1, and the M = 1..16 padding of the m16
//    tile costs no shared-memory traffic. Rows >= M are zero fragments (never loaded). The 8 warps of a block split
//    K (k-steps w, w + 8, ...) over all the block's n-tiles, then add their partial tiles in a fixed order through
//    shared memory (deterministic), 2 n-tiles at a time, and the epilogue (bias, KV-cache write, GELU, residual)
//    runs on the sums.
//  * Activations. Every block needs all of K for its columns: the A fragments come straight from global memory (L2):
//    layer norm is applied on the fly (each block computes the M rows' mean and rstd itself, two-pass as
//    layernorm_forward, instead of a grid sync and a round trip), the attention output o and the GELU output u are
//    stored once as bf16 (the rounding the per-layer bf16 matmul applies when it loads them) in stream-ordered
//    scratch, q in fp32.
//  * Attention (fp32 SIMT, as the fp32 flash kernel): one warp per (row, head) pair over the grid's warps; lane j
//    scores key j of each 32-key chunk, online softmax, O += P V with lanes over the head dimension. The new token's
//    K and V were written into the cache by the QKV phase.
//  * Phases and grid syncs per layer: QKV (+ KV-cache write) | attention | Wo + residual | W1 + GELU | W2 + residual,
//    a grid_sync() after each (5 per layer, 5 L - 1 in all): each phase reads what others wrote in the previous one.
//    Residual updates are in place: a column of x is read and written only by the block that owns it in that phase.
//  * Grid: one block of 256 threads per SM (grid_blocks overrides, for tests), checked against
//    cudaOccupancyMaxActiveBlocksPerMultiprocessor so that every block is resident; shared memory per block is the
//    largest share of any block. A shape that does not fit (weights over the device's shared memory, occupancy 0,
//    dimensions that are not multiples of the tiles, post-LN, a precision other than BF16, no cooperative launch) is
//    refused by shared_block_plan with a reason naming the sizes; shared_block_decode then throws sf::Error and
//    launches nothing. Callers use the per-layer path instead.
//  * Only dynamic shared memory is used (the CPU lane's static __shared__ is one per OS thread, which the
//    interleaved blocks of a cooperative launch would share).
#include <cmath>

#include "cuda_common.cuh"
#include "scratch.cuh"

namespace sf::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kNT = 8;   // n-tiles whose accumulators a warp holds at once (a chunk; more tiles take more chunks)
constexpr int kRed = 2;  // n-tiles reduced across warps at a time (the reduction buffer's width: 16 columns)
constexpr int kMats = 4;  // Wqkv, Wo, W1, W2

struct Layout {
  int G;               // blocks
  int tiles[kMats];    // 8-column tiles of each matrix
  int K[kMats];        // inputs of each matrix
  int off[kMats];      // the first block that gets one more tile of matrix i
  int64_t red_offset;  // bytes: the reduction buffer, after the largest weight share
};

struct Share {
  int start, count;  // tiles
};

// Block j's tiles of a matrix of `tiles` tiles over G blocks: floor/ceil shares by the block's rank in an order
// rotated by `off` (rank 0 = block off gets the first tiles).
__host__ __device__ inline Share share_of(int tiles, int G, int off, int j) {
  const int base = tiles / G, rem = tiles % G;
  const int r = (j - off + G) % G;
  return Share{r * base + (r < rem ? r : rem), base + (r < rem ? 1 : 0)};
}

// Bytes of shared memory for n tiles of K inputs: 8 rows of K + 8 bf16 (the padding).
__host__ __device__ inline int64_t tile_bytes(int K) { return int64_t{8} * (K + 8) * 2; }

struct Scr {
  float* q;             // (M, d) fp32
  __nv_bfloat16* o;     // (M, d) bf16: attention output
  __nv_bfloat16* u;     // (M, d_ff) bf16: GELU output
};

// ---- A-fragment loaders: a packed bf16 pair A[row][k], A[row][k + 1] (0 for rows >= M) ---------------------------

// Layer norm applied on the fly to x (fp32), with the block's per-row statistics.
struct LoadLN {
  const float* x;
  const float* mean;
  const float* rstd;
  const float* w;
  const float* b;
  int M, K;
  __device__ __forceinline__ uint32_t operator()(int row, int k) const {
    if (row >= M) return 0u;
    const float m = mean[row], r = rstd[row];
    const float v0 = (x[static_cast<int64_t>(row) * K + k] - m) * r * w[k] + b[k];
    const float v1 = (x[static_cast<int64_t>(row) * K + k + 1] - m) * r * w[k + 1] + b[k + 1];
    return pack_bf16x2(v0, v1);
  }
};

// A bf16 activation stored by an earlier phase.
struct LoadBf16 {
  const __nv_bfloat16* a;
  int M, K;
  __device__ __forceinline__ uint32_t operator()(int row, int k) const {
    if (row >= M) return 0u;
    return *reinterpret_cast<const uint32_t*>(a + static_cast<int64_t>(row) * K + k);  // k even, K % 16 == 0
  }
};

// ---- epilogues: (row, output column, accumulated sum) -------------------------------------------------------------

// The sizes every phase needs, copied out of the kernel's parameter (never referenced: taking the address of a
// kernel parameter would make nvcc copy the whole descriptor to local memory).
struct Geo {
  int M, D, F, H, Hkv, Dh;
  int64_t Tmax;
  const int32_t* pos;
};

// QKV: q (fp32 scratch), or this row's K / V written into the layer's cache at the row's position.
struct EpiQKV {
  Geo g;
  const float *bq, *bk, *bv;
  float* q;
  float* kc;
  float* vc;
  __device__ __forceinline__ void operator()(int m, int n, float s) const {
    const int kvd = g.Hkv * g.Dh;
    if (n < g.D) {
      q[static_cast<int64_t>(m) * g.D + n] = s + (bq ? bq[n] : 0.0f);
      return;
    }
    const bool is_k = n < g.D + kvd;
    const int j = is_k ? n - g.D : n - g.D - kvd;
    const float* bias = is_k ? bk : bv;
    const int64_t pos = g.pos[m];
    if (pos < 0 || pos >= g.Tmax) return;  // outside the cache: the caller's contract; never written
    float* c = is_k ? kc : vc;
    c[((static_cast<int64_t>(m) * g.Hkv + j / g.Dh) * g.Tmax + pos) * g.Dh + j % g.Dh] = s + (bias ? bias[j] : 0.0f);
  }
};

// x[m][n] += s + bias[n] (Wo and W2: the residual, in place; only this block touches column n in this phase).
struct EpiResidual {
  float* x;
  const float* bias;
  int N;
  __device__ __forceinline__ void operator()(int m, int n, float s) const {
    float* p = x + static_cast<int64_t>(m) * N + n;
    *p = *p + (s + (bias ? bias[n] : 0.0f));
  }
};

// u[m][n] = bf16(gelu(s + b1[n])).
struct EpiGelu {
  __nv_bfloat16* u;
  const float* bias;
  int N;
  __device__ __forceinline__ void operator()(int m, int n, float s) const {
    u[static_cast<int64_t>(m) * N + n] = __float2bfloat16_rn(gelu_tanh(s + (bias ? bias[n] : 0.0f)));
  }
};

// out[:, share] = A (M x K) W[share]^T through the epilogue. ws: the block's share, 8 (K + 8) bf16 per tile, rows
// k-contiguous; red: kWarps * M * kRed * 8 floats.
template <class Load, class Epi>
__device__ void gemv(const uint32_t* ws, Share sh, int K, int M, const Load& ld, const Epi& ep, float* red) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int Kw = (K + 8) / 2, nk = K / 16;
  const bool two = M > 16;  // a second m-tile (rows 16..31)
  for (int c0 = 0; c0 < sh.count; c0 += kNT) {
    const int nt = sh.count - c0 < kNT ? sh.count - c0 : kNT;
    float acc[2][kNT][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int jt = 0; jt < kNT; ++jt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][jt][e] = 0.0f;
    for (int s = warp; s < nk; s += kWarps) {
      const int k0 = s * 16;
      uint32_t a[2][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) {
        const int r = mt * 16 + g;
        const bool on = mt == 0 || two;
        a[mt][0] = on ? ld(r, k0 + 2 * t) : 0u;
        a[mt][1] = on ? ld(r + 8, k0 + 2 * t) : 0u;
        a[mt][2] = on ? ld(r, k0 + 2 * t + 8) : 0u;
        a[mt][3] = on ? ld(r + 8, k0 + 2 * t + 8) : 0u;
      }
#pragma unroll
      for (int jt = 0; jt < kNT; ++jt) {
        if (jt < nt) {
          const uint32_t* wr = ws + static_cast<int64_t>((c0 + jt) * 8 + g) * Kw + k0 / 2 + t;
          const uint32_t b0 = wr[0], b1 = wr[4];
          mma_bf16(acc[0][jt], a[0][0], a[0][1], a[0][2], a[0][3], b0, b1);
          if (two) mma_bf16(acc[1][jt], a[1][0], a[1][1], a[1][2], a[1][3], b0, b1);
        }
      }
    }
    // partial tiles of the 8 warps added in warp order, kRed tiles at a time
    constexpr int W = kRed * 8;
    for (int r0 = 0; r0 < nt; r0 += kRed) {
#pragma unroll
      for (int jt = 0; jt < kNT; ++jt) {
        if (jt < r0 || jt >= r0 + kRed || jt >= nt) continue;
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const int row = mt * 16 + g + 8 * hf;
            if (row >= M) continue;
            float* p = red + (static_cast<int64_t>(warp) * M + row) * W + (jt - r0) * 8 + 2 * t;
            p[0] = acc[mt][jt][2 * hf];
            p[1] = acc[mt][jt][2 * hf + 1];
          }
      }
      __syncthreads();  // every warp's partials are in red
      const int cols = (nt - r0 < kRed ? nt - r0 : kRed) * 8;
      for (int idx = threadIdx.x; idx < M * cols; idx += blockDim.x) {
        const int m = idx / cols, c = idx % cols;
        float s = 0.0f;
        for (int w = 0; w < kWarps; ++w) s += red[(static_cast<int64_t>(w) * M + m) * W + c];
        ep(m, (sh.start + c0 + r0) * 8 + c, s);
      }
      __syncthreads();  // red is rewritten by the next group
    }
  }
}

// mean and rstd of the M rows of x (M x C), as layernorm_forward (two passes), one warp per row; then a barrier.
__device__ void row_stats(const float* x, int M, int C, float eps, float* mean, float* rstd) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float inv_c = 1.0f / static_cast<float>(C);
  for (int m = warp; m < M; m += kWarps) {
    const float* xr = x + static_cast<int64_t>(m) * C;
    float s = 0.0f;
    for (int j = lane; j < C; j += 32) s += xr[j];
    const float mu = warp_sum(s) * inv_c;
    float q = 0.0f;
    for (int j = lane; j < C; j += 32) {
      const float dv = xr[j] - mu;
      q += dv * dv;
    }
    const float var = warp_sum(q) * inv_c;
    if (lane == 0) {
      mean[m] = mu;
      rstd[m] = 1.0f / sqrtf(var + eps);
    }
  }
  __syncthreads();
}

// One warp per (row, head) pair over the grid's warps: o[b, h] = softmax(scale q K^T) V over keys [0, pos_b].
__device__ void attend(const Geo& g, const float* kc, const float* vc, const float* q, __nv_bfloat16* o,
                       float scale) {
  const int lane = threadIdx.x % 32;
  const int gw = static_cast<int>(blockIdx.x) * kWarps + static_cast<int>(threadIdx.x) / 32;
  const int nw = static_cast<int>(gridDim.x) * kWarps;
  const int H = g.H, Dh = g.Dh, D = g.D, group = g.H / g.Hkv;
  const int64_t Tmax = g.Tmax;
  for (int p = gw; p < g.M * H; p += nw) {
    const int b = p / H, h = p % H, hk = h / group;
    const int64_t pos = g.pos[b];
    const int64_t L = (pos < 0 || pos >= Tmax) ? 0 : pos + 1;
    const float* qv = q + static_cast<int64_t>(b) * D + h * Dh;
    const float* K = kc + (static_cast<int64_t>(b) * g.Hkv + hk) * Tmax * Dh;
    const float* V = vc + (static_cast<int64_t>(b) * g.Hkv + hk) * Tmax * Dh;
    float mx = -INFINITY, sum = 0.0f, acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // Dh <= 128: lanes own dims lane + 32 i
    for (int64_t j0 = 0; j0 < L; j0 += 32) {
      const int64_t jk = j0 + lane;
      float sc = -INFINITY;
      if (jk < L) {
        float dot = 0.0f;
        const float* kr = K + jk * Dh;
        for (int e = 0; e < Dh; ++e) dot += qv[e] * kr[e];
        sc = dot * scale;
      }
      const float mn = fmaxf(mx, warp_max(sc));  // finite: key j0 < L is in this chunk
      const float pj = jk < L ? expf(sc - mn) : 0.0f;
      const float corr = expf(mx - mn);  // 0 on the first chunk
      sum = sum * corr + warp_sum(pj);
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[i] *= corr;
      const int nj = L - j0 < 32 ? static_cast<int>(L - j0) : 32;
      for (int jj = 0; jj < nj; ++jj) {
        const float pb = __shfl_sync(0xffffffffu, pj, jj);
        const float* vr = V + (j0 + jj) * Dh;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int e = lane + 32 * i;
          if (e < Dh) acc[i] += pb * vr[e];
        }
      }
      mx = mn;
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int e = lane + 32 * i;
      if (e < Dh) o[static_cast<int64_t>(b) * D + h * Dh + e] = __float2bfloat16_rn(L > 0 ? acc[i] / sum : 0.0f);
    }
  }
}

// The fp32 master weight rows of the four matrices (Wqkv concatenates Wq, Wk, Wv).
struct Sources {
  const float *wq, *wk, *wv, *wo, *w1, *w2;
  __device__ __forceinline__ const float* row(int i, int n, int D, int kvd, int F) const {
    switch (i) {
      case 0:
        if (n < D) return wq + static_cast<int64_t>(n) * D;
        if (n < D + kvd) return wk + static_cast<int64_t>(n - D) * D;
        return wv + static_cast<int64_t>(n - D - kvd) * D;
      case 1: return wo + static_cast<int64_t>(n) * D;
      case 2: return w1 + static_cast<int64_t>(n) * D;
      default: return w2 + static_cast<int64_t>(n) * F;
    }
  }
};

__global__ void __launch_bounds__(kThreads, 1) shared_block_kernel(SharedBlockDesc d, Layout lay, Scr scr, float scale) {
  SF_DYNAMIC_SMEM(smem);
  const int G = static_cast<int>(gridDim.x), j = static_cast<int>(blockIdx.x);
  const int M = static_cast<int>(d.M), D = static_cast<int>(d.d_model), F = static_cast<int>(d.d_ff);
  const Geo geo{M, D, F, static_cast<int>(d.heads), static_cast<int>(d.kv_heads), static_cast<int>(d.head_dim),
                d.t_max, d.positions};
  const Sources src_w{d.wq, d.wk, d.wv, d.wo, d.w1, d.w2};
  const int kvd = geo.Hkv * geo.Dh;
  Share sh[kMats];
  const uint32_t* ws[kMats];
  int64_t off = 0;
  // the block's share of each matrix, converted to bf16 once for the whole launch
  for (int i = 0; i < kMats; ++i) {
    sh[i] = share_of(lay.tiles[i], G, lay.off[i], j);
    uint32_t* w = reinterpret_cast<uint32_t*>(smem + off);
    ws[i] = w;
    const int K = lay.K[i], Kw = (K + 8) / 2, half = K / 2;
    const int total = sh[i].count * 8 * half;
    for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
      const int r = idx / half, kp = idx % half;
      const float* src = src_w.row(i, sh[i].start * 8 + r, D, kvd, F);
      w[static_cast<int64_t>(r) * Kw + kp] = pack_bf16x2(src[2 * kp], src[2 * kp + 1]);
    }
    off += sh[i].count * tile_bytes(K);
  }
  float* red = reinterpret_cast<float*>(smem + lay.red_offset);
  float* mean = red + kWarps * M * kRed * 8;
  float* rstd = mean + kSharedBlockMaxRows;
  __syncthreads();  // the weights are in place (row_stats' barrier, next, would order them too)

  for (int l = 0; l < d.layers; ++l) {
    // 1. h = LN1(x); q, and this token's K and V into the layer's cache
    row_stats(d.x, M, D, d.eps, mean, rstd);
    gemv(ws[0], sh[0], D, M, LoadLN{d.x, mean, rstd, d.ln1_w, d.ln1_b, M, D},
         EpiQKV{geo, d.bq, d.bk, d.bv, scr.q, d.k_cache[l], d.v_cache[l]}, red);
    grid_sync();
    // 2. attention over the cache (keys [0, pos_b])
    attend(geo, d.k_cache[l], d.v_cache[l], scr.q, scr.o, scale);
    grid_sync();
    // 3. x += o Wo^T + bo
    gemv(ws[1], sh[1], D, M, LoadBf16{scr.o, M, D}, EpiResidual{d.x, d.bo, D}, red);
    grid_sync();
    // 4. u = gelu(LN2(x) W1^T + b1)
    row_stats(d.x, M, D, d.eps, mean, rstd);
    gemv(ws[2], sh[2], D, M, LoadLN{d.x, mean, rstd, d.ln2_w, d.ln2_b, M, D}, EpiGelu{scr.u, d.b1, F}, red);
    grid_sync();
    // 5. x += u W2^T + b2
    gemv(ws[3], sh[3], F, M, LoadBf16{scr.u, M, F}, EpiResidual{d.x, d.b2, D}, red);
    if (l + 1 < d.layers) grid_sync();
  }
}

Layout layout_for(const SharedBlockDesc& d, int G) {
  Layout lay{};
  lay.G = G;
  const int64_t kvd = d.kv_heads * d.head_dim;
  const int64_t N[kMats] = {d.d_model + 2 * kvd, d.d_model, d.d_ff, d.d_model};
  const int64_t K[kMats] = {d.d_model, d.d_model, d.d_model, d.d_ff};
  int off = 0;
  for (int i = 0; i < kMats; ++i) {
    lay.tiles[i] = static_cast<int>(N[i] / 8);
    lay.K[i] = static_cast<int>(K[i]);
    lay.off[i] = off;
    off = (off + lay.tiles[i] % G) % G;
  }
  int64_t most = 0;
  for (int j = 0; j < G; ++j) {
    int64_t bytes = 0;
    for (int i = 0; i < kMats; ++i) bytes += share_of(lay.tiles[i], G, lay.off[i], j).count * tile_bytes(lay.K[i]);
    if (bytes > most) most = bytes;
  }
  lay.red_offset = most;  // a multiple of 16
  return lay;
}

int64_t smem_of(const SharedBlockDesc& d, const Layout& lay) {
  return lay.red_offset + static_cast<int64_t>(sizeof(float)) * (kWarps * d.M * kRed * 8 + 2 * kSharedBlockMaxRows);
}

}  // namespace

SharedBlockPlan shared_block_plan(const SharedBlockDesc& d, Precision p) {
  SharedBlockPlan plan;
  plan.threads = kThreads;
  auto no = [&plan](auto&&... why) {
    plan.reason = cat("shared_block_decode: ", why...);
    return plan;
  };
  if (p != Precision::BF16) return no("needs precision bf16 (it holds the weights as bf16); use the per-layer path");
  if (!d.pre_ln) return no("post-LN blocks are not supported (pre-LN only); use the per-layer path");
  if (d.M < 1 || d.M > kSharedBlockMaxRows) return no("M = ", d.M, " rows; the kernel serves 1..", kSharedBlockMaxRows);
  if (d.layers < 1 || d.layers > kSharedBlockMaxLayers)
    return no("layers = ", d.layers, "; the kernel serves 1..", kSharedBlockMaxLayers);
  if (d.heads < 1 || d.kv_heads < 1 || d.heads % d.kv_heads != 0 || d.head_dim < 1 || d.d_model != d.heads * d.head_dim)
    return no("inconsistent heads: d_model ", d.d_model, ", heads ", d.heads, ", kv_heads ", d.kv_heads, ", head_dim ",
              d.head_dim);
  if (d.d_model % 16 != 0 || d.d_ff % 16 != 0 || d.d_ff < 16 || d.head_dim % 8 != 0 || d.head_dim > 128)
    return no("d_model ", d.d_model, " and d_ff ", d.d_ff, " must be multiples of 16 and head_dim ", d.head_dim,
              " a multiple of 8 up to 128");
  if (d.d_model > (int64_t{1} << 20) || d.d_ff > (int64_t{1} << 20) || d.t_max < 1 || d.t_max > (int64_t{1} << 30))
    return no("sizes out of range: d_model ", d.d_model, ", d_ff ", d.d_ff, ", t_max ", d.t_max);
  if (!d.x || !d.positions || !d.ln1_w || !d.ln1_b || !d.ln2_w || !d.ln2_b || !d.wq || !d.wk || !d.wv || !d.wo ||
      !d.w1 || !d.w2)
    return no("a null pointer among x, positions, the layer norms and the weights");
  for (int l = 0; l < d.layers; ++l)
    if (!d.k_cache[l] || !d.v_cache[l]) return no("layer ", l, " has no KV cache");
  int dev = 0, sms = 0, coop = 0, optin = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute(SM count)");
  check(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev), "cudaDeviceGetAttribute(cooperative)");
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
        "cudaDeviceGetAttribute(shared memory opt-in)");
  plan.sms = sms;
  if (!coop) return no("the device does not support cooperative launches");
  const int G = d.grid_blocks > 0 ? d.grid_blocks : sms;
  const Layout lay = layout_for(d, G);
  const int64_t kvd = d.kv_heads * d.head_dim;
  plan.blocks = G;
  plan.weight_bytes = 2 * ((d.d_model + 2 * kvd) * d.d_model + d.d_model * d.d_model + 2 * d.d_ff * d.d_model);
  plan.smem_bytes = smem_of(d, lay);
  if (plan.smem_bytes > optin)
    return no("the block's weights do not fit: ", plan.weight_bytes, " bytes of bf16 weights (d_model ", d.d_model,
              ", d_ff ", d.d_ff, ", kv width ", kvd, ") over ", G, " blocks need ", plan.smem_bytes,
              " bytes of shared memory per block (M = ", d.M, "), the device allows ", optin);
  check(cudaFuncSetAttribute(shared_block_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(plan.smem_bytes)),
        "cudaFuncSetAttribute(shared_block_kernel)");
  int occ = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, shared_block_kernel, kThreads,
                                                      static_cast<size_t>(plan.smem_bytes)),
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor(shared_block_kernel)");
  plan.blocks_per_sm = occ;
  if (static_cast<int64_t>(occ) * sms < G)
    return no(G, " blocks of ", kThreads, " threads with ", plan.smem_bytes, " bytes of shared memory cannot all be ",
              "resident: ", occ, " per SM on ", sms, " SMs");
  plan.fits = true;
  return plan;
}

void shared_block_decode(Stream s, const SharedBlockDesc& d, Precision p) {
  const SharedBlockPlan plan = shared_block_plan(d, p);
  if (!plan.fits) error(plan.reason);
  const Layout lay = layout_for(d, plan.blocks);
  Scratch buf(s, static_cast<size_t>(d.M * (4 * d.d_model + 2 * d.d_model + 2 * d.d_ff)), "shared_block_decode");
  Scr scr;
  scr.q = buf.as<float>();
  scr.o = reinterpret_cast<__nv_bfloat16*>(scr.q + d.M * d.d_model);
  scr.u = scr.o + d.M * d.d_model;
  const float scale = d.scale != 0.0f ? d.scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(d.head_dim)));
  const cudaError_t e = SF_LAUNCH_COOPERATIVE(shared_block_kernel,
                                              (dim3(static_cast<unsigned>(plan.blocks)), dim3(kThreads),
                                               static_cast<size_t>(plan.smem_bytes), s),
                                              d, lay, scr, scale);
  if (e != cudaSuccess) {
    cudaGetLastError();
    error("CUDA kernel launch failed: shared_block_kernel (", plan.blocks, " blocks, ", plan.smem_bytes,
          " bytes of shared memory each): ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")");
  }
}

}  // namespace sf::cuda
