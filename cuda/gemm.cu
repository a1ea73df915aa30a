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
#include "cuda_common.cuh"
#include "scratch.cuh"

namespace sf::cuda {

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

// One output element: the CPU epilogue's order (cpu/matmul.cpp finish_scalar, then the activation pass).
__device__ __forceinline__ void finish(const GemmArgs& g, float* C, float* P, int64_t m, int64_t n, float acc) {
  if (m >= g.M || n >= g.N) return;
  const int64_t idx = m * g.N + n;
  float x = acc * g.alpha;
  if (g.beta != 0.0f) x += g.beta * C[idx];
  if (g.bias) x += g.bias[n];
  if (g.gelu) {
    if (P) P[idx] = x;
    x = gelu_tanh(x);
  }
  C[idx] = x;
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
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;
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

void matmul(Stream s, const cpu::MatmulDesc& d, Precision p) {
  if (d.batch <= 0 || d.M <= 0 || d.N <= 0) return;
  if (d.K < 0) range_error("cuda matmul: K = ", d.K, " is negative");
  GemmArgs g{d.batch, d.M, d.N, d.K, d.trans_a, d.trans_b, d.act == cpu::Activation::Gelu, d.a, d.a_stride, d.b,
             d.b_stride, d.c, d.c_stride, d.alpha, d.beta, d.bias, d.preact};
  const int64_t tiles = ceil_div(d.M, 128) * ceil_div(d.N, 128);
  if (tiles > 0x7fffffffLL)
    range_error("cuda matmul: ", d.M, " x ", d.N, " output needs ", tiles, " tiles, more than a grid holds");
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(d.batch < 65535 ? d.batch : 65535));
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
      SF_LAUNCH(gemm_mma_kernel<true>, (grid, kThreads, 0, s), g);
      check_launch("gemm_mma_kernel<bf16>");
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
