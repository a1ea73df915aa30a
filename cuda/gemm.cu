// gemm.cu — C[b] = act(alpha * op(A[b]) @ op(B[b]) + beta * C[b] + bias), the CUDA twin of cpu::matmul (same
// MatmulDesc, same epilogue order: alpha * acc, + beta * C (C not read when beta = 0), + bias, then GELU with the
// pre-activation stored), and the bias gradient. Our own kernels, no cuBLAS. Design (see docs/gpu.md, "Kernels: GEMM
// and attention"):
//
//  * Both operands are seen as "row panels" X(r, k): op(A) with r = m, and op(B)^T with r = n. Each one is either
//    k-contiguous in memory (A plain, B transposed) or r-contiguous (A transposed, B plain); the tile loaders pick
//    the thread mapping that keeps global reads coalesced in either case, so the four transpose combinations run the
//    same kernel. Every load is bounds-checked (zero-filled outside M, N, K): any size works.
//  * Precision::F32: SIMT fp32 FMA, 128 x 128 x 8 tiles, 256 threads, 8 x 8 outputs per thread (two 4 x 4 quads per
//    dimension, the layout that keeps shared-memory reads conflict-free), double-buffered shared memory.
//  * Precision::TF32 / BF16: tensor cores through mma.sync (m16n8k8 tf32 / m16n8k16 bf16), fp32 accumulators.
//    128 x 128 block tile, 8 warps as 2 x 4, 64 x 32 per warp (4 x 4 mma tiles). Each shared-memory row holds 16
//    32-bit words along k: 16 tf32 values or 16 bf16 pairs (32 values), so both precisions share one layout and one
//    fragment-loading code; rows are padded to 20 words, which makes every fragment load conflict-free. Operands are
//    rounded (cvt.rna.tf32 / round-to-nearest-even bf16) when the staged registers are written to shared memory.
//    Double-buffered: the next k-tile's global loads are in flight while the current one is multiplied.
//  * Batches: blockIdx.y walks the batch (stride 0 = broadcast operand), blockIdx.x the output tiles.
//  * bias_grad: two passes without float atomics. Pass 1, a grid of (32-column tiles) x (row chunks) sized for about
//    three blocks per SM (from rows, n and the SM count only), writes each chunk's column sums (8 row lanes per
//    column, each summing its rows in order, lanes added in order) to a stream-ordered scratch buffer; pass 2 adds
//    each column's chunk sums in chunk order into dbias. One chunk (few rows, or enough column tiles to fill the GPU)
//    adds straight into dbias. Deterministic on one device.
#include <cstdlib>
#include <string>

#include "cuda_common.cuh"
#include "gemm_bf16.cuh"
#include "scratch.cuh"

namespace sf::cuda {

using gemm_detail::finish;
using gemm_detail::Gemm16Args;

namespace {

struct GemmArgs {
  int64_t batch, M, N, K;
  bool ta, tb, gelu;
  const float* a;
  int64_t sa;
  const float* b;
  int64_t sb;
  float* c;
  int64_t sc;
  float alpha, beta;
  const float* bias;
  float* preact;
};

// Element (r, k) of a row panel with R rows and K columns: X[r * K + k] when k-contiguous, else X[k * R + r].
__device__ __forceinline__ float panel_at(const float* X, bool kc, int64_t R, int64_t K, int64_t r, int64_t k) {
  if (r >= R || k >= K) return 0.0f;
  return kc ? X[r * K + k] : X[k * R + r];
}

// The 4 x 4 mma tiles' accumulators of one thread (both tensor-core kernels), zeroed.
__device__ __forceinline__ void zero_acc(float (&acc)[4][4][4]) {
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
}

// ---- fp32 SIMT ----------------------------------------------------------------------------------------------------
constexpr int kSB = 128;     // block tile, rows and columns
constexpr int kSK = 8;       // k per stage
constexpr int kSPad = 4;     // row padding (floats) of the k-major shared tiles
constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) gemm_f32_kernel(GemmArgs g) {
  __shared__ __align__(16) float As[2][kSK][kSB + kSPad];  // As[k][m]
  __shared__ __align__(16) float Bs[2][kSK][kSB + kSPad];  // Bs[k][n]
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int64_t ntn = (g.N + kSB - 1) / kSB;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) / ntn * kSB, n0 = static_cast<int64_t>(blockIdx.x) % ntn * kSB;
  const bool akc = !g.ta, bkc = g.tb;
  const int64_t nk = (g.K + kSK - 1) / kSK;

  // Loader mapping for one 128 x 8 panel tile, 4 elements per thread: k fastest when k-contiguous, else r fastest.
  auto rr_of = [&](int i, bool kc) { const int idx = tid + i * kThreads; return kc ? idx / kSK : idx % kSB; };
  auto kk_of = [&](int i, bool kc) { const int idx = tid + i * kThreads; return kc ? idx % kSK : idx / kSB; };

  for (int64_t bz = blockIdx.y; bz < g.batch; bz += gridDim.y) {
    const float* A = g.a + bz * g.sa;
    const float* B = g.b + bz * g.sb;
    float* C = g.c + bz * g.sc;
    float* P = g.preact ? g.preact + bz * g.sc : nullptr;
    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[i][j] = 0.0f;
    float ra[4], rb[4];
    auto load = [&](int64_t k0) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        ra[i] = panel_at(A, akc, g.M, g.K, m0 + rr_of(i, akc), k0 + kk_of(i, akc));
        rb[i] = panel_at(B, bkc, g.N, g.K, n0 + rr_of(i, bkc), k0 + kk_of(i, bkc));
      }
    };
    auto store = [&](int buf) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        As[buf][kk_of(i, akc)][rr_of(i, akc)] = ra[i];
        Bs[buf][kk_of(i, bkc)][rr_of(i, bkc)] = rb[i];
      }
    };
    if (nk > 0) {
      load(0);
      store(0);
      __syncthreads();
    }
    for (int64_t kt = 0; kt < nk; ++kt) {
      const int cur = static_cast<int>(kt & 1);
      if (kt + 1 < nk) load((kt + 1) * kSK);
#pragma unroll
      for (int k = 0; k < kSK; ++k) {
        float a[8], b[8];
        const float4 a0 = *reinterpret_cast<const float4*>(&As[cur][k][ty * 4]);
        const float4 a1 = *reinterpret_cast<const float4*>(&As[cur][k][64 + ty * 4]);
        const float4 b0 = *reinterpret_cast<const float4*>(&Bs[cur][k][tx * 4]);
        const float4 b1 = *reinterpret_cast<const float4*>(&Bs[cur][k][64 + tx * 4]);
        a[0] = a0.x, a[1] = a0.y, a[2] = a0.z, a[3] = a0.w, a[4] = a1.x, a[5] = a1.y, a[6] = a1.z, a[7] = a1.w;
        b[0] = b0.x, b[1] = b0.y, b[2] = b0.z, b[3] = b0.w, b[4] = b1.x, b[5] = b1.y, b[6] = b1.z, b[7] = b1.w;
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
      if (kt + 1 < nk) store(cur ^ 1);
      __syncthreads();  // the next stage is written; this one may be overwritten from now on
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int64_t m = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int64_t n = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + j - 4);
        finish(g, C, P, m, n, acc[i][j]);
      }
    }
  }
}

// ---- tensor cores (mma.sync) ----------------------------------------------------------------------------------------
constexpr int kTB = 128;  // block tile, rows and columns
constexpr int kTW = 16;   // 32-bit words per tile row along k (16 tf32 or 32 bf16 values)
constexpr int kTS = 20;   // row stride in words: 4 words of padding make the fragment loads conflict-free

template <bool BF16>
__global__ void __launch_bounds__(kThreads) gemm_mma_kernel(GemmArgs g) {
  constexpr int E = BF16 ? 2 : 1;  // values per word
  constexpr int BK = kTW * E;      // k per stage
  __shared__ __align__(16) uint32_t As[2][kTB * kTS];  // As[m][word]
  __shared__ __align__(16) uint32_t Bs[2][kTB * kTS];  // Bs[n][word]
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int gq = lane / 4, tq = lane % 4;
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
  const int64_t ntn = (g.N + kTB - 1) / kTB;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) / ntn * kTB, n0 = static_cast<int64_t>(blockIdx.x) % ntn * kTB;
  const bool akc = !g.ta, bkc = g.tb;
  const int64_t nk = (g.K + BK - 1) / BK;

  // Loader mapping for one 128-row x 16-word tile, 8 words per thread: word fastest when k-contiguous (each
  // thread reads E consecutive floats), row fastest otherwise (the warp reads 32 consecutive floats per value).
  auto rr_of = [&](int i, bool kc) { const int idx = tid + i * kThreads; return kc ? idx / kTW : idx % kTB; };
  auto ww_of = [&](int i, bool kc) { const int idx = tid + i * kThreads; return kc ? idx % kTW : idx / kTB; };

  for (int64_t bz = blockIdx.y; bz < g.batch; bz += gridDim.y) {
    const float* A = g.a + bz * g.sa;
    const float* B = g.b + bz * g.sb;
    float* C = g.c + bz * g.sc;
    float* P = g.preact ? g.preact + bz * g.sc : nullptr;
    float acc[4][4][4];
    zero_acc(acc);
    float ra[8][E], rb[8][E];
    auto load = [&](int64_t k0) {
#pragma unroll
      for (int i = 0; i < 8; ++i)
#pragma unroll
        for (int e = 0; e < E; ++e) {
          ra[i][e] = panel_at(A, akc, g.M, g.K, m0 + rr_of(i, akc), k0 + ww_of(i, akc) * E + e);
          rb[i][e] = panel_at(B, bkc, g.N, g.K, n0 + rr_of(i, bkc), k0 + ww_of(i, bkc) * E + e);
        }
    };
    auto word = [](const float (&v)[E]) -> uint32_t {
      if constexpr (BF16)
        return pack_bf16x2(v[0], v[1]);
      else
        return to_tf32(v[0]);
    };
    auto store = [&](int buf) {
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        As[buf][rr_of(i, akc) * kTS + ww_of(i, akc)] = word(ra[i]);
        Bs[buf][rr_of(i, bkc) * kTS + ww_of(i, bkc)] = word(rb[i]);
      }
    };
    if (nk > 0) {
      load(0);
      store(0);
      __syncthreads();
    }
    for (int64_t kt = 0; kt < nk; ++kt) {
      const int cur = static_cast<int>(kt & 1);
      if (kt + 1 < nk) load((kt + 1) * BK);
      const uint32_t* as = As[cur];
      const uint32_t* bs = Bs[cur];
#pragma unroll
      for (int kw = 0; kw < kTW; kw += 8) {  // two mma k-steps per stage (8 words each)
        uint32_t af[4][4], bf[4][2];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int r = wm + i * 16 + gq;
          af[i][0] = as[r * kTS + kw + tq];
          af[i][1] = as[(r + 8) * kTS + kw + tq];
          af[i][2] = as[r * kTS + kw + tq + 4];
          af[i][3] = as[(r + 8) * kTS + kw + tq + 4];
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int c = wn + j * 8 + gq;
          bf[j][0] = bs[c * kTS + kw + tq];
          bf[j][1] = bs[c * kTS + kw + tq + 4];
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            if constexpr (BF16)
              mma_bf16(acc[i][j], af[i][0], af[i][1], af[i][2], af[i][3], bf[j][0], bf[j][1]);
            else
              mma_tf32(acc[i][j], af[i][0], af[i][1], af[i][2], af[i][3], bf[j][0], bf[j][1]);
          }
      }
      if (kt + 1 < nk) store(cur ^ 1);
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t m = m0 + wm + i * 16 + gq, n = n0 + wn + j * 8 + 2 * tq;
        finish(g, C, P, m, n, acc[i][j][0]);
        finish(g, C, P, m, n + 1, acc[i][j][1]);
        finish(g, C, P, m + 8, n, acc[i][j][2]);
        finish(g, C, P, m + 8, n + 1, acc[i][j][3]);
      }
  }
}

// ---- bf16 operands in memory: cp.async pipeline, swizzled shared memory, ldmatrix ----------------------------------
// gemm_bf16_kernel<L>: A and B are bf16 in global memory (op(A) and op(B)^T seen as row panels, as above; L's bit 0
// says op(A) is k-contiguous, bit 1 that op(B)^T is). 128 x 128 block tile, 8 warps as 2 x 4 with 64 x 32 each (4 x 4
// m16n8k16 tiles, fp32 accumulators), 32 k per stage, a 4-stage cp.async pipeline (3 k tiles in flight while one is
// multiplied), fragments loaded with ldmatrix (.trans for an r-contiguous panel). One stage holds the A and the B tile
// as 16-byte chunks (8 bf16 along the contiguous coordinate), 2 x 8 KiB; 4 stages = 64 KiB of dynamic shared memory,
// two blocks per SM on sm_80 (164 KiB) and sm_90 (227 KiB). The chunks are XOR-swizzled so that the 8 row addresses of
// every ldmatrix matrix, and the cp.async writes, fall in 8 distinct 16-byte bank groups (see swz below).
constexpr int kPB = 128;                                 // block tile, rows and columns
constexpr int kPK = 32;                                  // k per stage: two m16n8k16 steps
constexpr int kPStages = 4;                              // pipeline depth
constexpr int kPTile = kPB * kPK / 8;                    // 16-byte chunks in one operand's tile (512)
constexpr int kPSmemBytes = kPStages * 2 * kPTile * 16;  // 65536, also the epilogue's 128 x 128 fp32 tile
static_assert(kPSmemBytes >= kPB * kPB * 4, "the epilogue's C tile reuses the stages");


// The slot (in 16-byte chunks) of chunk `chunk` of tile row `row`. A k-contiguous tile is 128 rows of 4 chunks (64
// bytes): chunk ^ ((row / 2) % 4) puts rows r .. r+7 of one chunk column in 8 different bank groups (two rows share a
// 128-byte line, the XOR spreads the four line pairs). An r-contiguous tile is 32 k rows of 16 chunks (256 bytes, every
// row starting at bank 0): chunk ^ (row % 8).
template <bool KC>
__device__ __forceinline__ int swz(int row, int chunk) {
  if constexpr (KC)
    return row * 4 + (chunk ^ ((row >> 1) & 3));
  else
    return row * 16 + (chunk ^ (row & 7));
}

// The tile loads of one operand, two 16-byte chunks per thread per stage. A chunk is 8 elements along the contiguous
// coordinate; elements outside the panel (R rows, K columns) are zeros. This thread's two chunks share their chunk
// column and lie 64 rows (k-contiguous panel: tile rows are panel rows) or 16 k rows (r-contiguous: tile rows are k)
// apart, so one element offset (`base`, the first chunk's at k0 = 0) and the panel's sizes say where both are.
// vec: cp.async16 (the src-size form for a chunk cut by the edge, or wholly outside); otherwise 8 scalar loads and one
// 16-byte shared store (an operand that is not 16-byte aligned).
template <bool KC>
__device__ __forceinline__ int64_t tile_base(int64_t ld, int64_t r0) {  // this thread's first chunk at k0 = 0
  const int t = static_cast<int>(threadIdx.x);
  return KC ? (r0 + t / 4) * ld + (t % 4) * 8 : (t / 16) * ld + r0 + (t % 16) * 8;
}
template <bool KC>
__device__ __forceinline__ void load_tile16(uint4* tile, const uint16_t* X, int64_t base, int64_t ld, bool vec,
                                            int64_t R, int64_t K, int64_t r0, int64_t k0) {
  constexpr int kRowStep = KC ? kThreads / 4 : kThreads / 16;  // tile rows between a thread's two chunks
  const int t = static_cast<int>(threadIdx.x);
  const int row0 = KC ? t / 4 : t / 16, chunk = KC ? t % 4 : t % 16;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = row0 + i * kRowStep;
    // KC: panel row r0 + row, elements k0 + 8 chunk ...; RC: k row k0 + row, elements r0 + 8 chunk ...
    const bool inside = KC ? r0 + row < R : k0 + row < K;
    int64_t n = KC ? K - k0 - chunk * 8 : R - r0 - chunk * 8;  // elements left along the contiguous coordinate
    n = inside ? (n < 0 ? 0 : (n > 8 ? 8 : n)) : 0;
    const int valid = static_cast<int>(n);
    const uint16_t* src = valid > 0 ? X + base + (KC ? k0 : k0 * ld) + i * kRowStep * ld : X;
    uint4* dst = tile + swz<KC>(row, chunk);
    if (vec) {
      if (valid == 8)
        cp_async16(dst, src);
      else
        cp_async16_zfill(dst, src, 2 * valid);
    } else {
      uint16_t h[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) h[e] = e < valid ? src[e] : uint16_t{0};
      uint4 v;
      memcpy(&v, h, sizeof v);
      *dst = v;
    }
  }
}

template <int L>
__global__ void __launch_bounds__(kThreads, 2) gemm_bf16_kernel(Gemm16Args g) {
  constexpr bool AKC = (L & 1) != 0, BKC = (L & 2) != 0;
  SF_DYNAMIC_SMEM(smem_raw);
  uint4* const smem = reinterpret_cast<uint4*>(smem_raw);  // stage st: A tile at st * 2 * kPTile, then the B tile
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int gq = lane / 4, tq = lane % 4;
  const int lj = lane / 8, li = lane % 8;  // the ldmatrix matrix and row this lane addresses
  const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
  const int64_t ntn = (g.N + kPB - 1) / kPB;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) / ntn * kPB, n0 = static_cast<int64_t>(blockIdx.x) % ntn * kPB;
  const int64_t nk = (g.K + kPK - 1) / kPK;

  for (int64_t bz = blockIdx.y; bz < g.batch; bz += gridDim.y) {
    const int64_t abase = bz * g.sa + tile_base<AKC>(g.lda, m0), bbase = bz * g.sb + tile_base<BKC>(g.ldb, n0);
    float acc[4][4][4];
    zero_acc(acc);
    auto load_stage = [&](int st, int64_t kt) {
      uint4* t = smem + st * 2 * kPTile;
      load_tile16<AKC>(t, g.a, abase, g.lda, g.a_vec, g.M, g.K, m0, kt * kPK);
      load_tile16<BKC>(t + kPTile, g.b, bbase, g.ldb, g.b_vec, g.N, g.K, n0, kt * kPK);
    };
    // prologue: k tiles 0 .. kPStages-2 in flight, one commit group each (empty past the last tile)
#pragma unroll
    for (int st = 0; st < kPStages - 1; ++st) {
      if (st < nk) load_stage(st, st);
      cp_async_commit();
    }
    for (int64_t kt = 0; kt < nk; ++kt) {
      cp_async_wait<kPStages - 2>();  // this thread's copies of k tile kt have landed
      __syncthreads();                // everyone's have, and every warp is done with k tile kt - 1 (refilled below)
      const int64_t next = kt + kPStages - 1;
      if (next < nk) load_stage(static_cast<int>(next % kPStages), next);
      cp_async_commit();
      const uint4* as = smem + static_cast<int>(kt % kPStages) * 2 * kPTile;
      const uint4* bs = as + kPTile;
#pragma unroll
      for (int ks = 0; ks < kPK / 16; ++ks) {
        // B first (8 registers held through the step), then A one 16-row tile at a time (4 registers), so that the
        // fragments in flight stay small beside the 64 accumulators.
        uint32_t bf[4][2];
        // B: for n tiles 2 jp and 2 jp + 1, matrices (tile 2jp, k 0-7), (2jp, k 8-15), (2jp+1, k 0-7), (2jp+1, k 8-15)
#pragma unroll
        for (int jp = 0; jp < 2; ++jp) {
          uint32_t r[4];
          if constexpr (BKC) {
            const int row = wn + jp * 16 + (lj >> 1) * 8 + li;
            ldmatrix_x4(r, bs + swz<true>(row, ks * 2 + (lj & 1)));
          } else {
            const int krow = ks * 16 + (lj & 1) * 8 + li;
            ldmatrix_x4_trans(r, bs + swz<false>(krow, (wn + jp * 16) / 8 + (lj >> 1)));
          }
          bf[2 * jp][0] = r[0];
          bf[2 * jp][1] = r[1];
          bf[2 * jp + 1][0] = r[2];
          bf[2 * jp + 1][1] = r[3];
        }
        // A: matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15) = a0..a3
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          uint32_t af[4];
          if constexpr (AKC) {
            const int row = wm + i * 16 + (lj & 1) * 8 + li;
            ldmatrix_x4(af, as + swz<true>(row, ks * 2 + (lj >> 1)));
          } else {
            const int krow = ks * 16 + (lj >> 1) * 8 + li;
            ldmatrix_x4_trans(af, as + swz<false>(krow, (wm + i * 16) / 8 + (lj & 1)));
          }
#pragma unroll
          for (int j = 0; j < 4; ++j) mma_bf16(acc[i][j], af[0], af[1], af[2], af[3], bf[j][0], bf[j][1]);
        }
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // every warp is done with the pipeline's stages: they now hold the fp32 C tile
    // Epilogue through shared memory: the accumulators go to a 128 x 128 fp32 tile (64 KiB, the stages' space; row r's
    // column c at r * 128 + (c ^ 8 (r % 8)), which keeps the fragment stores conflict-free per half warp), then each
    // thread finishes whole rows' worth of consecutive elements: coalesced C / preact / bias accesses, and the
    // accumulators are dead before the GELU epilogue needs registers.
    float* const ct = reinterpret_cast<float*>(smem_raw);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = wm + i * 16 + gq + 8 * h, c = wn + j * 8 + 2 * tq;
          *reinterpret_cast<float2*>(&ct[r * kPB + (c ^ ((r & 7) << 3))]) =
              make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
        }
    __syncthreads();
    float* C = g.c + bz * g.sc;
    float* P = g.preact ? g.preact + bz * g.sc : nullptr;
#pragma unroll 1
    for (int e = tid; e < kPB * kPB; e += kThreads) {
      const int r = e / kPB, c = e % kPB;
      finish(g, C, P, m0 + r, n0 + c, ct[r * kPB + (c ^ ((r & 7) << 3))]);
    }
    __syncthreads();  // the C tile is read before the next batch entry's prologue refills the stages
  }
}

// fp32 -> bf16 (round to nearest even) for the pipelined kernel's operands: src is n_batch matrices of rows x cols
// (batch stride ss, row stride cols); dst the same with rows padded to ldd (a multiple of 8) and zeros in the padding,
// batch stride rows * ldd. One block per row (grid-stride over rows).
__global__ void to_bf16_kernel(const float* __restrict__ src, int64_t ss, int64_t n_batch, int64_t rows,
                               int64_t cols, int64_t ldd, uint16_t* __restrict__ dst) {
  for (int64_t row = blockIdx.x; row < n_batch * rows; row += gridDim.x) {
    const int64_t b = row / rows, r = row % rows;
    const float* x = src + b * ss + r * cols;
    uint16_t* y = dst + row * ldd;
    for (int64_t c = threadIdx.x; c < ldd; c += blockDim.x) {
      const __nv_bfloat16 v = __float2bfloat16_rn(c < cols ? x[c] : 0.0f);
      uint16_t u;
      memcpy(&u, &v, sizeof u);
      y[c] = u;
    }
  }
}

template <int L>
void launch_bf16(Stream s, const Gemm16Args& g, dim3 grid) {
  check(cudaFuncSetAttribute(gemm_bf16_kernel<L>, cudaFuncAttributeMaxDynamicSharedMemorySize, kPSmemBytes),
        "cudaFuncSetAttribute(gemm_bf16_kernel)");
  SF_LAUNCH(gemm_bf16_kernel<L>, (grid, kThreads, kPSmemBytes, s), g);
  check_launch("gemm_bf16_kernel");
}

dim3 gemm_grid(const cpu::MatmulDesc& d, const char* what) {
  const int64_t tiles = ceil_div(d.M, 128) * ceil_div(d.N, 128);
  if (tiles > 0x7fffffffLL)
    range_error(what, ": ", d.M, " x ", d.N, " output needs ", tiles, " tiles, more than a grid holds");
  return dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(d.batch < 65535 ? d.batch : 65535));
}

// Launches the pipelined kernel on bf16 operands a (op(A)'s memory, leading dimension lda) and b (ldb).
// impl Wgmma (WgmmaCpAsync): the Hopper kernel (gemm_sm90.cu; with TMA staging where the operands allow it, or
// never) for the K-major case when it can run on this device.
void run_bf16(Stream s, const cpu::MatmulDesc& d, const uint16_t* a, int64_t lda, int64_t sa, const uint16_t* b,
              int64_t ldb, int64_t sb, GemmImpl impl) {
  auto vec = [](const uint16_t* p, int64_t ld, int64_t st) {
    return reinterpret_cast<uintptr_t>(p) % 16 == 0 && ld % 8 == 0 && st % 8 == 0;
  };
  Gemm16Args g{d.batch, d.M,  d.N, d.K, d.act == cpu::Activation::Gelu, a, lda, sa, b, ldb, sb, vec(a, lda, sa),
               vec(b, ldb, sb), d.c, d.c_stride, d.alpha, d.beta, d.bias, d.preact};
  const dim3 grid = gemm_grid(d, "cuda matmul");
  switch ((d.trans_a ? 0 : 1) | (d.trans_b ? 2 : 0)) {
    case 0: launch_bf16<0>(s, g, grid); break;
    case 1: launch_bf16<1>(s, g, grid); break;
    case 2: launch_bf16<2>(s, g, grid); break;
    default:
      if ((impl != GemmImpl::Wgmma && impl != GemmImpl::WgmmaCpAsync) ||
          !gemm_detail::launch_wgmma(s, g, grid, impl == GemmImpl::Wgmma).launched)  // (its fallback note unused)
        launch_bf16<3>(s, g, grid);
      break;
  }
}

// bias_grad, pass 1. Block (tile, chunk) of kBiasCols x kBiasLanes threads: column col = tile * kBiasCols + x sums
// the chunk's rows r0 + y, r0 + y + kBiasLanes, ... (in that order) in thread (x, y); then thread (x, 0) adds the
// kBiasLanes sums in lane order. With one chunk the sum goes straight into dbias[col] (partial is null); otherwise
// into partial[chunk * n + col], for pass 2.
constexpr int kBiasCols = 32, kBiasLanes = 8;
__global__ void bias_grad_partial_kernel(const float* __restrict__ dy, int64_t rows, int64_t n, int64_t chunk_rows,
                                         float* __restrict__ partial, float* __restrict__ dbias) {
  __shared__ float part[kBiasLanes][kBiasCols + 1];
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kBiasCols + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * chunk_rows;
  const int64_t r1 = rows < r0 + chunk_rows ? rows : r0 + chunk_rows;
  float acc = 0.0f;
  if (col < n)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kBiasLanes) acc += dy[r * n + col];
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y != 0 || col >= n) return;
  float t = part[0][threadIdx.x];
  for (int y = 1; y < kBiasLanes; ++y) t += part[y][threadIdx.x];
  if (partial)
    partial[chunk * n + col] = t;
  else
    dbias[col] += t;
}

// bias_grad, pass 2: dbias[j] += the chunks' partial sums of column j, added in chunk order.
__global__ void bias_grad_reduce_kernel(const float* __restrict__ partial, int64_t chunks, int64_t n,
                                        float* __restrict__ dbias) {
  for (int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; j < n;
       j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float t = partial[j];
    for (int64_t k = 1; k < chunks; ++k) t += partial[k * n + j];
    dbias[j] += t;
  }
}

}  // namespace

GemmImpl gemm_impl_from_env() {
  const char* e = std::getenv("SHAREDFORMER_GEMM");
  if (e && std::string(e) == "legacy") return GemmImpl::Legacy;
  if (e && std::string(e) == "wgmma") return GemmImpl::Wgmma;
  return GemmImpl::Pipelined;
}

void matmul_bf16(Stream s, const cpu::MatmulDesc& d, const uint16_t* a, const uint16_t* b, GemmImpl impl) {
  if (d.batch <= 0 || d.M <= 0 || d.N <= 0) return;
  if (d.K < 0) range_error("cuda matmul: K = ", d.K, " is negative");
  run_bf16(s, d, a, d.trans_a ? d.M : d.K, d.a_stride, b, d.trans_b ? d.K : d.N, d.b_stride, impl);
}

void matmul(Stream s, const cpu::MatmulDesc& d, Precision p, GemmImpl impl, const uint16_t* a16_in,
            const uint16_t* b16_in) {
  if (d.batch <= 0 || d.M <= 0 || d.N <= 0) return;
  if (d.K < 0) range_error("cuda matmul: K = ", d.K, " is negative");
  GemmArgs g{d.batch, d.M, d.N, d.K, d.trans_a, d.trans_b, d.act == cpu::Activation::Gelu, d.a, d.a_stride, d.b,
             d.b_stride, d.c, d.c_stride, d.alpha, d.beta, d.bias, d.preact};
  const dim3 grid = gemm_grid(d, "cuda matmul");
  switch (p) {
    case Precision::F32:
      SF_LAUNCH(gemm_f32_kernel, (grid, kThreads, 0, s), g);
      check_launch("gemm_f32_kernel");
      break;
    case Precision::TF32:
      SF_LAUNCH(gemm_mma_kernel<false>, (grid, kThreads, 0, s), g);
      check_launch("gemm_mma_kernel<tf32>");
      break;
    case Precision::BF16:
      if (impl == GemmImpl::Legacy) {
        SF_LAUNCH(gemm_mma_kernel<true>, (grid, kThreads, 0, s), g);
        check_launch("gemm_mma_kernel<bf16>");
      } else {
        // A and B rounded to bf16 into stream-ordered scratch, each row padded to a multiple of 8 elements (so every
        // tile load is a 16-byte cp.async); a broadcast operand (stride 0) is converted once. An operand given in bf16
        // (a16_in / b16_in: a current bf16 copy) is read where it is, in its own layout, and takes no scratch.
        struct Op {
          const float* x;
          int64_t stride, n_batch, rows, cols, ld;
          size_t bytes;
        };
        auto op = [&](const float* x, int64_t stride, int64_t rows, int64_t cols) {
          const int64_t nb = stride == 0 ? 1 : d.batch, ld = ceil_div(cols, 8) * 8;
          return Op{x, stride, nb, rows, cols, ld, static_cast<size_t>(ceil_div(nb * rows * ld * 2, 256) * 256)};
        };
        Op oa = op(d.a, d.a_stride, d.trans_a ? d.K : d.M, d.trans_a ? d.M : d.K);
        Op ob = op(d.b, d.b_stride, d.trans_b ? d.N : d.K, d.trans_b ? d.K : d.N);
        if (a16_in) oa.bytes = 0;
        if (b16_in) ob.bytes = 0;
        Scratch buf(s, oa.bytes + ob.bytes, "matmul (bf16 operands)");
        uint16_t* a16 = buf.as<uint16_t>();
        uint16_t* b16 = a16 + oa.bytes / 2;
        auto convert = [&](const Op& o, uint16_t* dst) {
          const int64_t rows = o.n_batch * o.rows;
          if (rows == 0) return;
          SF_LAUNCH(to_bf16_kernel, (grid_for(rows, 1), 256, 0, s), o.x, o.stride, o.n_batch, o.rows, o.cols, o.ld,
                    dst);
          check_launch("to_bf16_kernel");
        };
        if (!a16_in) convert(oa, a16);
        if (!b16_in) convert(ob, b16);
        run_bf16(s, d, a16_in ? a16_in : a16, a16_in ? oa.cols : oa.ld,
                 oa.stride == 0 ? 0 : a16_in ? d.a_stride : oa.rows * oa.ld, b16_in ? b16_in : b16,
                 b16_in ? ob.cols : ob.ld, ob.stride == 0 ? 0 : b16_in ? d.b_stride : ob.rows * ob.ld, impl);
      }
      break;
    default:
      range_error("cuda matmul: unknown precision ", static_cast<int>(p));
  }
}

// About kBiasBlocksPerSm blocks per SM over (column tiles) x (row chunks); a chunk has at least kBiasMinChunkRows
// rows (the last may have fewer). The split depends on (rows, n, SM count) only, so the order of every fp32 addition,
// and so the result's bits, are the same on every run on one device.
constexpr int64_t kBiasBlocksPerSm = 3, kBiasMinChunkRows = 64;

void bias_grad(Stream s, const float* dy, int64_t rows, int64_t n, float* dbias) {
  if (n <= 0) return;
  const int64_t tiles = ceil_div(n, kBiasCols);
  if (tiles > 0x7fffffffLL) range_error("cuda bias_grad: ", n, " columns need ", tiles, " tiles, more than a grid holds");
  int dev = 0, sms = 0;
  SF_CUDA_CALL(cudaGetDevice(&dev));
  SF_CUDA_CALL(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const int64_t r = rows > 1 ? rows : 1;  // rows = 0 still launches one chunk, which adds 0 (as the CPU kernel does)
  int64_t chunks = ceil_div(kBiasBlocksPerSm * (sms > 1 ? sms : 1), tiles);
  const int64_t most = ceil_div(r, kBiasMinChunkRows);
  if (chunks > most) chunks = most;
  if (chunks > 65535) chunks = 65535;  // gridDim.y
  if (chunks < 1) chunks = 1;
  const int64_t chunk_rows = ceil_div(r, chunks);
  chunks = ceil_div(r, chunk_rows);  // no empty chunk: (chunks - 1) * chunk_rows < r <= chunks * chunk_rows
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks));
  const dim3 block(kBiasCols, kBiasLanes);
  if (chunks == 1) {
    SF_LAUNCH(bias_grad_partial_kernel, (grid, block, 0, s), dy, rows, n, chunk_rows, nullptr, dbias);
    check_launch("bias_grad_partial_kernel");
    return;
  }
  Scratch part(s, static_cast<size_t>(chunks * n) * sizeof(float), "bias_grad");
  float* partial = part.as<float>();
  SF_LAUNCH(bias_grad_partial_kernel, (grid, block, 0, s), dy, rows, n, chunk_rows, partial, dbias);
  check_launch("bias_grad_partial_kernel");
  SF_LAUNCH(bias_grad_reduce_kernel, (grid_for(n, 256), 256, 0, s), partial, chunks, n, dbias);
  check_launch("bias_grad_reduce_kernel");
}

}  // namespace sf::cuda
