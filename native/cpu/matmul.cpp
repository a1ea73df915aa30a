// matmul.cpp — C = act(alpha * op(A) @ op(B) + beta * C + bias), batched, any transposes (see kernels.h).
//
// Goto/BLIS scheme. For each block of KC columns of op(A) (rows of op(B)):
//   1. pack op(A) into slivers of MR rows, k-major:   Ap[sliver][k][MR]   (zero-padded to a multiple of MR)
//   2. pack op(B) into panels of NR columns, k-major: Bp[panel][k][NR]    (zero-padded to a multiple of NR)
//   3. every (MR x NR) tile of C is one register-blocked micro-kernel call: MR x NR/W accumulators in vector
//      registers, one broadcast of A and NR/W loads of B per k. Tiles are grouped (MC rows x NG columns) into tasks
//      for the thread pool; inside a task the A sliver stays in L1 while the B panels stream from L2.
// Packing absorbs the transposes, so the micro-kernel sees one layout. The first K block applies beta, the last one
// adds the bias while the tile is still in registers; GELU (and the stored pre-activation) follows as a second pass
// over each finished task block while it is still in L2.
// Micro-kernel shapes: AVX-512 8 x 32 (16 zmm accumulators), AVX2 6 x 16 (12 ymm), portable 4 x 16.
//
// The skinny path (M <= kSkinnyM rows of op(A) per batch entry: decoding, tiny batches) packs nothing: repacking B
// costs as much as the whole product when A has one row. B is read once, in its stored layout, threaded across the
// columns of C (tasks of kSkinnyCols columns over every batch entry, on one thread when the whole product is small):
//   trans_b (B is (N, K), a linear layer's weight): C[i][j] is the dot product of row i of A and row j of B, both
//     contiguous: 8 rows of B for one row of A (4 for several) per pass, W-lane accumulators summed by a tree;
//   !trans_b (B is (K, N)): rows of C are sums of rows of B scaled by A[i][k], 8 (or 4) vectors of columns per pass.
// Rows of A go RA at a time (4 with AVX-512, else 2), the rest in one group of exactly their number.
// trans_a copies op(A) (at most kSkinnyM x K per batch entry) to row-major scratch first. Each element of C is summed
// in one fixed order whatever the thread count. MatmulDesc::path forces either path (tests, benchmarks).
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels.h"
#include "simd.h"

#if SF_HAS_X86
#include <immintrin.h>
#endif

namespace sf::cpu {

using namespace sf::simd;

namespace {

constexpr int64_t KC = 256;  // depth of one packed block
constexpr int64_t NG = 256;  // columns of C per task (a multiple of every NR)

// Register blocking per ISA: MR x NR tile, MC rows of C per task (a multiple of MR). Chosen by measurement with
// sf_bench on Zen 4 (AVX-512: 8 x 32 with 64-row tasks beat 6 x 32 and 12 x 32 by 5-15% on the 256-wide shapes).
template <typename V>
struct Shape_;
template <>
struct Shape_<f32x16> {
  static constexpr int MR = 8, NR = 32, MC = 64;  // 16 zmm accumulators
};
template <>
struct Shape_<f32x8> {
  static constexpr int MR = 6, NR = 16, MC = 48;  // 12 ymm accumulators of 16 registers
};
template <>
struct Shape_<f32x4> {
  static constexpr int MR = 4, NR = 16, MC = 48;
};

// Ap[s][k][MR] for rows [0, M) of op(A), depth [k0, k0 + kc). op(A)[i][k] = trans_a ? A[k][i] : A[i][k].
template <int MR>
void pack_a(const float* A, bool trans_a, int64_t M, int64_t K, int64_t k0, int64_t kc, float* Ap, int64_t s) {
  float* dst = Ap + s * kc * MR;
  const int64_t i0 = s * MR;
  const int64_t rows = std::min<int64_t>(MR, M - i0);
  if (!trans_a) {  // A is (M, K): row i, column k at A[i * K + k]
    for (int64_t k = 0; k < kc; ++k) {
      for (int64_t r = 0; r < rows; ++r) dst[k * MR + r] = A[(i0 + r) * K + k0 + k];
      for (int64_t r = rows; r < MR; ++r) dst[k * MR + r] = 0.0f;
    }
  } else {  // A is (K, M): op(A)[i][k] = A[k * M + i], contiguous along i
    for (int64_t k = 0; k < kc; ++k) {
      const float* src = A + (k0 + k) * M + i0;
      for (int64_t r = 0; r < rows; ++r) dst[k * MR + r] = src[r];
      for (int64_t r = rows; r < MR; ++r) dst[k * MR + r] = 0.0f;
    }
  }
}

// Bp[p][k][NR] for columns [0, N) of op(B). op(B)[k][j] = trans_b ? B[j][k] : B[k][j].
template <int NR>
void pack_b(const float* B, bool trans_b, int64_t N, int64_t K, int64_t k0, int64_t kc, float* Bp, int64_t p) {
  float* dst = Bp + p * kc * NR;
  const int64_t j0 = p * NR;
  const int64_t cols = std::min<int64_t>(NR, N - j0);
  if (!trans_b) {  // B is (K, N): contiguous along j
    for (int64_t k = 0; k < kc; ++k) {
      const float* src = B + (k0 + k) * N + j0;
      float* d = dst + k * NR;
      if (cols == NR) {
        std::memcpy(d, src, NR * sizeof(float));
      } else {
        for (int64_t c = 0; c < cols; ++c) d[c] = src[c];
        for (int64_t c = cols; c < NR; ++c) d[c] = 0.0f;
      }
    }
  } else {  // B is (N, K): op(B)[k][j] = B[j * K + k]; read rows of B, write columns of the panel
    int64_t c = 0;
#if SF_HAS_X86
    // 4 x 4 blocks transposed in SSE registers (baseline x86-64): 4 loads and 4 stores for 16 elements
    for (; c + 4 <= cols; c += 4) {
      const float* s0 = B + (j0 + c) * K + k0;
      int64_t k = 0;
      for (; k + 4 <= kc; k += 4) {
        __m128 r0 = _mm_loadu_ps(s0 + k), r1 = _mm_loadu_ps(s0 + K + k), r2 = _mm_loadu_ps(s0 + 2 * K + k),
               r3 = _mm_loadu_ps(s0 + 3 * K + k);
        _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
        _mm_storeu_ps(dst + k * NR + c, r0);
        _mm_storeu_ps(dst + (k + 1) * NR + c, r1);
        _mm_storeu_ps(dst + (k + 2) * NR + c, r2);
        _mm_storeu_ps(dst + (k + 3) * NR + c, r3);
      }
      for (; k < kc; ++k)
        for (int64_t q = 0; q < 4; ++q) dst[k * NR + c + q] = s0[q * K + k];
    }
#endif
    for (; c < cols; ++c) {
      const float* src = B + (j0 + c) * K + k0;
      for (int64_t k = 0; k < kc; ++k) dst[k * NR + c] = src[k];
    }
    for (c = cols; c < NR; ++c)
      for (int64_t k = 0; k < kc; ++k) dst[k * NR + c] = 0.0f;
  }
}

struct Epilogue {
  float alpha, beta;
  bool first, last;  // first K block: apply beta; last K block: bias, pre-activation, activation
  const float* bias;  // (N) or null
  Activation act;
};

template <typename V>
SF_INLINE V finish(V acc, const float* cold, const Epilogue& e, const float* bias_j) {
  V x = acc * e.alpha;
  if (e.first) {
    if (e.beta != 0.0f) x += e.beta * load<V>(cold);
  } else {
    x += load<V>(cold);
  }
  if (e.last && bias_j) x += load<V>(bias_j);
  return x;
}

inline float finish_scalar(float acc, float cold, const Epilogue& e, const float* bias_j) {
  float x = acc * e.alpha;
  if (e.first) {
    if (e.beta != 0.0f) x += e.beta * cold;
  } else {
    x += cold;
  }
  if (e.last && bias_j) x += *bias_j;
  return x;
}

// The activation runs as a second pass over a finished block of C (still in L2), not inside the micro-kernel:
// its constants would otherwise take the registers the accumulators need.
template <typename V>
SF_INLINE void activation_pass(float* C, float* P, int64_t ldc, int64_t rows, int64_t cols) {
  constexpr int W = Traits<V>::W;
  for (int64_t i = 0; i < rows; ++i) {
    float* c = C + i * ldc;
    float* p = P ? P + i * ldc : nullptr;
    int64_t j = 0;
    for (; j + W <= cols; j += W) {
      V x = load<V>(c + j);
      if (p) store<V>(p + j, x);
      store<V>(c + j, gelu(x));
    }
    for (; j < cols; ++j) {
      if (p) p[j] = c[j];
      c[j] = gelu_scalar(c[j]);
    }
  }
}

// One MR x NR tile: C[0:rows, 0:cols] (leading dimension ldc) from packed slivers a (kc x MR) and b (kc x NR).
template <typename V>
SF_INLINE void micro_kernel(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc, int64_t rows, int64_t cols, const Epilogue& e, const float* bias) {
  constexpr int MR = Shape_<V>::MR, NR = Shape_<V>::NR, W = Traits<V>::W, NV = NR / W;
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[i][j] = V{};
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    V bv[NV];
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) bv[j] = load<V>(b + k * NR + j * W);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const float av = a[k * MR + i];  // scalar * vector: one broadcast (an embedded {1toW} operand on AVX-512)
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) acc[i][j] += av * bv[j];
    }
  }
  if (rows == MR && cols == NR) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
      for (int j = 0; j < NV; ++j) {
        float* cp = c + i * ldc + j * W;
        store<V>(cp, finish<V>(acc[i][j], cp, e, bias ? bias + j * W : nullptr));
      }
    return;
  }
  float tile[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NV; ++j) store<V>(&tile[i][j * W], acc[i][j]);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      c[i * ldc + j] = finish_scalar(tile[i][j], c[i * ldc + j], e, bias ? bias + j : nullptr);
}

// Tasks [lo, hi) of the (MC x NG) task grid over C, for one packed K block.
template <typename V>
void tile_tasks_body(int64_t lo, int64_t hi, const MatmulDesc& d, const float* Ap, const float* Bp, int64_t kc,
                     const Epilogue& e, float* C, float* P, int64_t ng) {
  constexpr int MR = Shape_<V>::MR, NR = Shape_<V>::NR, MC = Shape_<V>::MC;
  const int64_t M = d.M, N = d.N;
  const int64_t slivers = (M + MR - 1) / MR, panels = (N + NR - 1) / NR;
  const int64_t ntasks = (N + ng - 1) / ng;
  for (int64_t t = lo; t < hi; ++t) {
    const int64_t mt = t / ntasks, nt = t % ntasks;
    const int64_t s_end = std::min(slivers, (mt + 1) * MC / MR), p_end = std::min(panels, (nt + 1) * ng / NR);
    for (int64_t s = mt * MC / MR; s < s_end; ++s) {
      const int64_t i0 = s * MR, rows = std::min<int64_t>(MR, M - i0);
      for (int64_t p = nt * ng / NR; p < p_end; ++p) {
        const int64_t j0 = p * NR, cols = std::min<int64_t>(NR, N - j0);
        micro_kernel<V>(kc, Ap + s * kc * MR, Bp + p * kc * NR, C + i0 * N + j0, N, rows, cols, e,
                        d.bias ? d.bias + j0 : nullptr);
      }
    }
    if (e.last && e.act == Activation::Gelu) {
      const int64_t i0 = mt * MC, j0 = nt * ng;
      activation_pass<V>(C + i0 * N + j0, P ? P + i0 * N + j0 : nullptr, N, std::min<int64_t>(MC, M - i0),
                         std::min(ng, N - j0));
    }
  }
}
SF_VARIANTS(tile_tasks,
            (int64_t lo, int64_t hi, const MatmulDesc& d, const float* Ap, const float* Bp, int64_t kc,
             const Epilogue& e, float* C, float* P, int64_t ng),
            (lo, hi, d, Ap, Bp, kc, e, C, P, ng), tile_tasks_body)

// Bpre: op(B) pre-packed by pack_b_full (its block at k0 starts k0 * panels * NR floats in), or null.
template <typename V>
void matmul_one(ThreadPool& pool, const MatmulDesc& d, const float* A, const float* B, float* C, float* P,
                const float* Bpre) {
  constexpr int MR = Shape_<V>::MR, NR = Shape_<V>::NR, MC = Shape_<V>::MC;
  const int64_t M = d.M, N = d.N, K = d.K;
  const int64_t slivers = (M + MR - 1) / MR, panels = (N + NR - 1) / NR;
  const int64_t kcmax = std::min<int64_t>(KC, K);
  float* ws = pool.workspace(static_cast<size_t>((slivers * MR + (Bpre ? 0 : panels * NR)) * kcmax));
  float* Ap = ws;
  float* Bws = ws + slivers * MR * kcmax;
  // Columns per task: NG, halved (down to NR) while the task grid has fewer than 4 tasks per thread, so that a small
  // product (M of a few dozen to a few hundred: prefill) still gives every thread an even share. The tiling does not
  // change any element's arithmetic (each is one micro-kernel sum per K block, in order): the same bits for any ng.
  const int64_t mtasks = (M + MC - 1) / MC;
  int64_t ng = NG;
  while (ng > NR && mtasks * ((N + ng - 1) / ng) < 4 * static_cast<int64_t>(pool.threads())) ng /= 2;
  const int64_t ntasks = (N + ng - 1) / ng;
  for (int64_t k0 = 0; k0 < K; k0 += KC) {
    const int64_t kc = std::min<int64_t>(KC, K - k0);
    const Epilogue e{d.alpha, d.beta, k0 == 0, k0 + kc >= K, d.bias, d.act};
    const float* Bp = Bpre ? Bpre + k0 * panels * NR : Bws;
    pool.parallel_for(slivers + (Bpre ? 0 : panels), 4, [&](int64_t lo, int64_t hi) {
      for (int64_t t = lo; t < hi; ++t) {
        if (t < slivers)
          pack_a<MR>(A, d.trans_a, M, K, k0, kc, Ap, t);
        else
          pack_b<NR>(B, d.trans_b, N, K, k0, kc, Bws, t - slivers);
      }
    });
    pool.parallel_for(mtasks * ntasks, 1, [&](int64_t lo, int64_t hi) {
      SF_VARIANT(V, tile_tasks)(lo, hi, d, Ap, Bp, kc, e, C, P, ng);
    });
  }
}

// ---- the skinny path -------------------------------------------------------------------------------------------

constexpr int64_t kSkinnyCols = 64;          // columns of C per task
constexpr int64_t kSkinnyMinWork = 1 << 17;  // multiply-adds below which a product runs on the calling thread alone

template <typename V>
struct SkinnyRows_ {
  static constexpr int RA = 2;  // rows of A per pass: 4 x 2 accumulators + 6 loads fit 16 registers
};
template <>
struct SkinnyRows_<f32x16> {
  static constexpr int RA = 4;  // 32 zmm registers: 4 x 4 accumulators
};

// The sum of a vector's lanes by halving (log2 W steps).
template <typename V>
SF_INLINE float tree_sum(V v) {
  constexpr int W = Traits<V>::W;
  float b[W];
  store<V>(b, v);
#pragma GCC unroll 4
  for (int w = W / 2; w >= 1; w /= 2)
#pragma GCC unroll 8
    for (int i = 0; i < w; ++i) b[i] += b[i + w];
  return b[0];
}

// The dot products C[i + r][j + q] = A[i + r] . B[j + q] (trans_b: rows of B) for R rows of A and JB rows of B; nj of
// the JB are real (the rest repeat the last row and are not stored). R and JB are compile-time: every accumulator is a
// register and no lane of work is wasted on padding rows. One row of A takes 8 rows of B (8 independent FMA chains
// hide the FMA latency); several take 4.
template <typename V, int R, int JB>
SF_INLINE void skinny_dot(const MatmulDesc& d, const float* A, const float* B, float* C, int64_t i, int64_t j,
                          int64_t nj, const Epilogue& e) {
  constexpr int W = Traits<V>::W;
  const int64_t N = d.N, K = d.K;
  const float* a[R];
  const float* b[JB];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) a[r] = A + (i + r) * K;
#pragma GCC unroll 8
  for (int q = 0; q < JB; ++q) b[q] = B + (j + std::min<int64_t>(q, nj - 1)) * K;
  V acc[R][JB];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int q = 0; q < JB; ++q) acc[r][q] = V{};
  int64_t k = 0;
  for (; k + W <= K; k += W) {
    V av[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) av[r] = load<V>(a[r] + k);
#pragma GCC unroll 8
    for (int q = 0; q < JB; ++q) {
      const V bv = load<V>(b[q] + k);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][q] += av[r] * bv;
    }
  }
  if (k < K) {  // the partial last vector: zero-filled lanes in both operands add 0 * 0
    const int64_t kr = K - k;
    V av[R];
    for (int r = 0; r < R; ++r) av[r] = load_part<V>(a[r] + k, kr, 0.0f);
    for (int q = 0; q < JB; ++q) {
      const V bv = load_part<V>(b[q] + k, kr, 0.0f);
      for (int r = 0; r < R; ++r) acc[r][q] += av[r] * bv;
    }
  }
  for (int r = 0; r < R; ++r)
    for (int64_t q = 0; q < nj; ++q) {
      float* c = C + (i + r) * N + j + q;
      *c = finish_scalar(tree_sum<V>(acc[r][q]), *c, e, d.bias ? d.bias + j + q : nullptr);
    }
}

// C[i + r][j : j + cols] = sum over k of A[i + r][k] B[k][j : j + cols] (!trans_b: rows of B) for R rows of A, JV
// vectors of columns (cols <= JV * W; a partial last vector is zero-filled).
template <typename V, int R, int JV>
SF_INLINE void skinny_axpy(const MatmulDesc& d, const float* A, const float* B, float* C, int64_t i, int64_t j,
                           int64_t cols, const Epilogue& e) {
  constexpr int W = Traits<V>::W;
  const int64_t N = d.N, K = d.K;
  const float* a[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) a[r] = A + (i + r) * K;
  V acc[R][JV];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int q = 0; q < JV; ++q) acc[r][q] = V{};
  if (cols == JV * W) {
    for (int64_t k = 0; k < K; ++k) {
      const float* brow = B + k * N + j;
#pragma GCC unroll 8
      for (int q = 0; q < JV; ++q) {
        const V bv = load<V>(brow + q * W);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) acc[r][q] += a[r][k] * bv;
      }
    }
  } else {
    const int64_t full = cols / W;
    for (int64_t k = 0; k < K; ++k) {
      const float* brow = B + k * N + j;
      for (int64_t q = 0; q < JV; ++q) {
        const V bv = q < full ? load<V>(brow + q * W) : q * W < cols ? load_part<V>(brow + q * W, cols - q * W, 0.0f) : V{};
        for (int r = 0; r < R; ++r) acc[r][q] += a[r][k] * bv;
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    float row[JV * W];
    for (int q = 0; q < JV; ++q) store<V>(row + q * W, acc[r][q]);
    float* c = C + (i + r) * N + j;
    for (int64_t q = 0; q < cols; ++q) c[q] = finish_scalar(row[q], c[q], e, d.bias ? d.bias + j + q : nullptr);
  }
}

// Rows [i, i + R) of C, columns [j0, j1), for a compile-time R: one row of A streams with 8 rows (vectors) of B at a
// time, several with 4.
template <typename V, int R>
SF_INLINE void skinny_rows(const MatmulDesc& d, const float* A, const float* B, float* C, int64_t i, int64_t j0,
                           int64_t j1, const Epilogue& e) {
  constexpr int W = Traits<V>::W, JB = R == 1 ? 8 : 4;
  if (d.trans_b) {
    for (int64_t j = j0; j < j1; j += JB) skinny_dot<V, R, JB>(d, A, B, C, i, j, std::min<int64_t>(JB, j1 - j), e);
  } else {
    for (int64_t j = j0; j < j1; j += JB * W) skinny_axpy<V, R, JB>(d, A, B, C, i, j, std::min<int64_t>(JB * W, j1 - j), e);
  }
}

// C[i][j0:j1] for every row i < M of one batch entry. A: M x K row-major; B: (N, K) when trans_b, else (K, N). Rows go
// RA at a time (RA = 4 with AVX-512's 32 registers, else 2), the last group with exactly the rows that are left.
template <typename V>
void skinny_cols_body(const MatmulDesc& d, const float* A, const float* B, float* C, float* P, int64_t j0,
                      int64_t j1, const Epilogue& e) {
  constexpr int RA = SkinnyRows_<V>::RA;
  int64_t i = 0;
  for (; i + RA <= d.M; i += RA) skinny_rows<V, RA>(d, A, B, C, i, j0, j1, e);
  switch (d.M - i) {
    case 3: skinny_rows<V, 3>(d, A, B, C, i, j0, j1, e); break;
    case 2: skinny_rows<V, 2>(d, A, B, C, i, j0, j1, e); break;
    case 1: skinny_rows<V, 1>(d, A, B, C, i, j0, j1, e); break;
    default: break;
  }
  if (e.act == Activation::Gelu)
    activation_pass<V>(C + j0, P ? P + j0 : nullptr, d.N, d.M, j1 - j0);
}
SF_VARIANTS(skinny_cols,
            (const MatmulDesc& d, const float* A, const float* B, float* C, float* P, int64_t j0, int64_t j1,
             const Epilogue& e),
            (d, A, B, C, P, j0, j1, e), skinny_cols_body)

template <typename V>
void matmul_skinny(ThreadPool& pool, const MatmulDesc& d) {
  const int64_t M = d.M, N = d.N, K = d.K;
  const float* A = d.a;
  int64_t a_stride = d.a_stride;
  if (d.trans_a) {  // op(A) to row-major scratch, every batch entry (at most kSkinnyM x K each)
    const int64_t n_a = d.a_stride == 0 ? 1 : d.batch;
    float* ws = pool.workspace(static_cast<size_t>(n_a * M * K));
    for (int64_t b = 0; b < n_a; ++b) {
      const float* src = d.a + b * d.a_stride;
      float* dst = ws + b * M * K;
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < M; ++i) dst[i * K + k] = src[k * M + i];
    }
    A = ws;
    a_stride = d.a_stride == 0 ? 0 : M * K;
  }
  const Epilogue e{d.alpha, d.beta, true, true, d.bias, d.act};
  const int64_t tiles = (N + kSkinnyCols - 1) / kSkinnyCols, tasks = d.batch * tiles;
  // one thread for a small product: waking a worker costs more than it saves, and a spinning worker competes with
  // the stream thread on a small machine
  const int64_t work_per_task = std::max<int64_t>(1, M * K * std::min(N, kSkinnyCols));
  const int64_t grain = std::max<int64_t>(1, kSkinnyMinWork / work_per_task);
  pool.parallel_for(tasks, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t b = t / tiles, j0 = (t % tiles) * kSkinnyCols, j1 = std::min(N, j0 + kSkinnyCols);
      SF_VARIANT(V, skinny_cols)(d, A + b * a_stride, d.b + b * d.b_stride, d.c + b * d.c_stride,
                                 d.preact ? d.preact + b * d.c_stride : nullptr, j0, j1, e);
    }
  });
}

template <typename V>
void matmul_body(ThreadPool& pool, const MatmulDesc& d) {
  if (!uses_packed_path(d)) {  // matmul() has answered K == 0 and the empty products already
    matmul_skinny<V>(pool, d);
    return;
  }
  for (int64_t b = 0; b < d.batch; ++b)
    matmul_one<V>(pool, d, d.a + b * d.a_stride, d.b + b * d.b_stride, d.c + b * d.c_stride,
                  d.preact ? d.preact + b * d.c_stride : nullptr, d.batch == 1 ? d.b_packed : nullptr);
}

template <typename V>
void pack_b_full_body(ThreadPool& pool, const float* B, bool trans_b, int64_t N, int64_t K, float* dst) {
  constexpr int NR = Shape_<V>::NR;
  const int64_t panels = (N + NR - 1) / NR;
  for (int64_t k0 = 0; k0 < K; k0 += KC) {
    const int64_t kc = std::min<int64_t>(KC, K - k0);
    pool.parallel_for(panels, 4, [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) pack_b<NR>(B, trans_b, N, K, k0, kc, dst + k0 * panels * NR, p);
    });
  }
}

template <typename V>
int64_t packed_b_floats_body(int64_t N, int64_t K) {
  constexpr int NR = Shape_<V>::NR;
  return (N + NR - 1) / NR * NR * K;
}

void matmul_dispatch(ThreadPool& pool, const MatmulDesc& d) {
  switch (best_isa()) {
    case Isa::Avx512: matmul_body<f32x16>(pool, d); break;
    case Isa::Avx2: matmul_body<f32x8>(pool, d); break;
    default: matmul_body<f32x4>(pool, d); break;
  }
}

}  // namespace

bool uses_packed_path(const MatmulDesc& d) {
  if (d.batch <= 0 || d.M <= 0 || d.N <= 0 || d.K == 0) return false;
  return !(d.path == MatmulPath::Skinny || (d.path == MatmulPath::Auto && d.M <= kSkinnyM));
}

int64_t packed_b_floats(int64_t N, int64_t K) {
  switch (best_isa()) {
    case Isa::Avx512: return packed_b_floats_body<f32x16>(N, K);
    case Isa::Avx2: return packed_b_floats_body<f32x8>(N, K);
    default: return packed_b_floats_body<f32x4>(N, K);
  }
}

void pack_b_full(ThreadPool& pool, const float* B, bool trans_b, int64_t N, int64_t K, float* dst) {
  switch (best_isa()) {
    case Isa::Avx512: pack_b_full_body<f32x16>(pool, B, trans_b, N, K, dst); break;
    case Isa::Avx2: pack_b_full_body<f32x8>(pool, B, trans_b, N, K, dst); break;
    default: pack_b_full_body<f32x4>(pool, B, trans_b, N, K, dst); break;
  }
}

void matmul(ThreadPool& pool, const MatmulDesc& d) {
  if (d.batch <= 0 || d.M <= 0 || d.N <= 0) return;
  if (d.K == 0) {  // no products: C = beta * C, then the epilogue
    const Epilogue e{d.alpha, d.beta, true, true, d.bias, d.act};
    for (int64_t b = 0; b < d.batch; ++b) {
      float* C = d.c + b * d.c_stride;
      float* P = d.preact ? d.preact + b * d.c_stride : nullptr;
      pool.parallel_for(d.M, 16, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i)
          for (int64_t j = 0; j < d.N; ++j) {
            float x = finish_scalar(0.0f, C[i * d.N + j], e, d.bias ? d.bias + j : nullptr);
            if (d.act == Activation::Gelu) {
              if (P) P[i * d.N + j] = x;
              x = gelu_scalar(x);
            }
            C[i * d.N + j] = x;
          }
      });
    }
    return;
  }
  matmul_dispatch(pool, d);
}

void bias_grad(ThreadPool& pool, const float* dy, int64_t rows, int64_t n, float* dbias) {
  // Columns are split across threads; each column sums its rows in row order, so the result is deterministic.
  pool.parallel_for(n, 256, [&](int64_t lo, int64_t hi) {
    std::vector<float> acc(static_cast<size_t>(hi - lo), 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = dy + r * n + lo;
      for (int64_t j = 0; j < hi - lo; ++j) acc[static_cast<size_t>(j)] += row[j];
    }
    for (int64_t j = lo; j < hi; ++j) dbias[j] += acc[static_cast<size_t>(j - lo)];
  });
}

}  // namespace sf::cpu
