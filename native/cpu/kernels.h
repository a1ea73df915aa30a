// kernels.h — the CPU kernel library: the reference implementation of every op (the CUDA kernels are tested against
// these) and the fast path on the CPU. One file per kind of layer (matmul.cpp, layernorm.cpp, gelu.cpp, softmax.cpp,
// attention.cpp, embedding.cpp, cross_entropy.cpp, elementwise.cpp, optim.cpp, permute.cpp, kvcache.cpp), each opening with what it computes
// and why it is shaped that way.
//
// Conventions, stated once:
//  * Raw float32 / int32 pointers to dense row-major data; shapes in comments beside each buffer, e.g. // (B, T, C).
//  * Every argument has been validated by the caller (native/addon/ops_*.cpp): shapes, dtypes, devices, sizes.
//    Kernels check only what depends on data values (token ids, class targets) and throw sf::Error before writing.
//  * Backward kernels ACCUMULATE into gradient outputs (dx += ..., dw += ...): a weight used by L layers receives the
//    sum of its L contributions with no extra copies. The caller zeroes a gradient buffer when it starts a step.
//  * Reductions are deterministic: the result does not depend on the thread count or on scheduling.
//  * All work runs on the given ThreadPool; a kernel returns when it is finished.
#pragma once
#include <cstdint>

#include "../core/thread_pool.h"

namespace sf::cpu {

enum class Activation : int { None = 0, Gelu = 1 };

// ---- matmul.cpp -------------------------------------------------------------------------------------------------
// C[b] = act(alpha * op(A[b]) @ op(B[b]) + beta * C[b] + bias), op(X) = X or X^T, for b in [0, batch).
//   op(A) is (M, K): A is (M, K), or (K, M) when trans_a.   op(B) is (K, N): B is (K, N), or (N, K) when trans_b.
//   A batch stride of 0 broadcasts that operand over the batch (a weight shared by every batch element).
//   With act = Gelu and preact != null, the pre-activation value is stored there (for GELU's backward).
//   beta = 0 ignores C's old contents (NaN included); beta = 1 accumulates (gradients).
// Which algorithm computes it: Auto is the skinny path for M <= kSkinnyM, else the packed one (matmul.cpp). The
// others force one, for tests and benchmarks; every path gives every shape, transpose and epilogue.
enum class MatmulPath : int { Auto = 0, Packed = 1, Skinny = 2 };
constexpr int64_t kSkinnyM = 16;
struct MatmulDesc {
  int64_t batch = 1, M = 0, N = 0, K = 0;
  bool trans_a = false, trans_b = false;
  const float* a = nullptr;
  int64_t a_stride = 0;  // elements between batch entries of A
  const float* b = nullptr;
  int64_t b_stride = 0;
  float* c = nullptr;  // (batch, M, N)
  int64_t c_stride = 0;
  float alpha = 1.0f, beta = 0.0f;
  const float* bias = nullptr;  // (N) or null
  Activation act = Activation::None;
  float* preact = nullptr;  // (batch, M, N) or null; same strides as C
  MatmulPath path = MatmulPath::Auto;
  // op(B) already packed by pack_b_full (batch 1, packed path only; null: the product packs B itself). The same bits
  // either way: packing copies values.
  const float* b_packed = nullptr;
};
// One product C = op(A) @ op(B) (M, N, K): batch 1, alpha 1, beta 0, no epilogue, the path chosen by size; callers set
// the rest (batch and strides, scaling, bias, activation) on the result.
inline MatmulDesc matmul_desc(int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b, const float* a, const float* b,
                              float* c) {
  MatmulDesc d;
  d.M = M;
  d.N = N;
  d.K = K;
  d.trans_a = trans_a;
  d.trans_b = trans_b;
  d.a = a;
  d.b = b;
  d.c = c;
  return d;
}
void matmul(ThreadPool& pool, const MatmulDesc& d);
// Whether d runs the packed path (the one that packs op(B), and so can read a pre-packed copy).
bool uses_packed_path(const MatmulDesc& d);
// The packed path's layout of op(B) (K, N) on this machine's ISA, whole: per block of 256 rows of K, the NR-wide
// column panels, zero-padded. packed_b_floats: its size in floats; pack_b_full writes it (threaded over panels).
int64_t packed_b_floats(int64_t N, int64_t K);
void pack_b_full(ThreadPool& pool, const float* B, bool trans_b, int64_t N, int64_t K, float* dst);
// dbias (N) += sum over rows of dy (rows, N): the bias gradient of a linear layer.
void bias_grad(ThreadPool& pool, const float* dy, int64_t rows, int64_t n, float* dbias);

// ---- layernorm.cpp ----------------------------------------------------------------------------------------------
// y = (x - mean) * rstd * w + b over the last dimension C of rows x C; saves mean and rstd (rows) for backward.
void layernorm_forward(ThreadPool& pool, const float* x, const float* w, const float* b, float* y, float* mean,
                       float* rstd, int64_t rows, int64_t C, float eps);
// dx += ..., dw += ..., db += ... (dx, dw or db may be null to skip them)
void layernorm_backward(ThreadPool& pool, const float* dy, const float* x, const float* w, const float* mean,
                        const float* rstd, float* dx, float* dw, float* db, int64_t rows, int64_t C);

// ---- gelu.cpp ---------------------------------------------------------------------------------------------------
// GELU, tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) — GPT-2's and PyTorch's approximate='tanh'.
void gelu_forward(ThreadPool& pool, const float* x, float* y, int64_t n);
void gelu_backward(ThreadPool& pool, const float* x, const float* dy, float* dx, int64_t n);  // dx += gelu'(x) dy
// GELU, exact form: x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) — BERT's and PyTorch's approximate='none'. Within a few
// ulp of the correctly rounded value for every float, tails included (simd.h gelu_erf); IEEE (and PyTorch) values at
// the non-finite inputs: gelu(+inf) = +inf, gelu(-inf) = NaN, gelu'(+-inf) = NaN, NaN -> NaN.
void gelu_erf_forward(ThreadPool& pool, const float* x, float* y, int64_t n);
void gelu_erf_backward(ThreadPool& pool, const float* x, const float* dy, float* dx, int64_t n);  // dx += gelu'(x) dy
// tanh (BERT's and ALBERT's pooler): within 4 ulp of the correctly rounded value (an odd polynomial below |x| 0.4,
// 1 - 2 / (exp(2|x|) + 1) above); tanh(+-inf) = +-1, tanh(-0) = -0, NaN -> NaN. Backward from x: dx += (1 - tanh(x)^2) dy.
void tanh_forward(ThreadPool& pool, const float* x, float* y, int64_t n);
void tanh_backward(ThreadPool& pool, const float* x, const float* dy, float* dx, int64_t n);

// ---- softmax.cpp ------------------------------------------------------------------------------------------------
// Row-wise softmax over the last dimension n.
void softmax_forward(ThreadPool& pool, const float* x, float* y, int64_t rows, int64_t n);
void softmax_backward(ThreadPool& pool, const float* y, const float* dy, float* dx, int64_t rows, int64_t n);  // +=

// ---- attention.cpp ----------------------------------------------------------------------------------------------
// Fused scaled-dot-product attention, flash-attention scheme: tiles of keys, online softmax, no Tq x Tk matrix.
//   q (B, Hq, Tq, D), k and v (B, Hkv, Tk, D) with Hq % Hkv == 0 (query head h uses K/V head h / (Hq / Hkv): GQA,
//   MQA when Hkv = 1), o (B, Hq, Tq, D), lse (B, Hq, Tq) = log-sum-exp of each query's scaled scores.
//   causal: query i sees keys j <= i + (Tk - Tq) (aligned at the end, as with a KV cache).
//   key_lengths (B) or null: in batch element b only keys j < key_lengths[b] are seen (padding mask).
//   A query that sees no key gets o = 0 and lse = -inf.
struct AttentionDesc {
  int64_t B = 0, Hq = 0, Hkv = 0, Tq = 0, Tk = 0, D = 0;
  float scale = 1.0f;
  bool causal = false;
  const int32_t* key_lengths = nullptr;
};
void attention_forward(ThreadPool& pool, const AttentionDesc& d, const float* q, const float* k, const float* v,
                       float* o, float* lse);
// Recomputes the probabilities from q, k and lse; dq += ..., dk += ..., dv += ... (deterministic)
void attention_backward(ThreadPool& pool, const AttentionDesc& d, const float* q, const float* k, const float* v,
                        const float* o, const float* lse, const float* dout, float* dq, float* dk, float* dv);

// ---- embedding.cpp ----------------------------------------------------------------------------------------------
// out (n, C) = table[ids] with table (V, C). Throws (before writing) if an id is outside [0, V).
void embedding_forward(ThreadPool& pool, const int32_t* ids, int64_t n, const float* table, int64_t V, int64_t C,
                       float* out);
// dtable (V, C) += scatter of dout (n, C) by ids, deterministically (same order for any thread count).
void embedding_backward(ThreadPool& pool, const int32_t* ids, int64_t n, const float* dout, int64_t V, int64_t C,
                        float* dtable);

// ---- cross_entropy.cpp ------------------------------------------------------------------------------------------
// Fused softmax cross-entropy over logits (N, V) and targets (N). Rows whose target equals ignore_index do not count.
// Returns the mean loss over counted rows (0 when none) and, when dlogits != null, WRITES (not +=: it starts the
// backward pass) dlogits = (softmax(logits) - onehot(target)) * grad_scale / count, zero on ignored rows. dlogits may
// be the logits buffer itself. Throws (before writing) if a counted target is outside [0, V).
float cross_entropy(ThreadPool& pool, const float* logits, const int32_t* targets, int64_t N, int64_t V,
                    int32_t ignore_index, float* dlogits, float grad_scale);

// ---- elementwise.cpp --------------------------------------------------------------------------------------------
// out = alpha * a + beta * b (residual add, scale, axpy); out may alias a or b.
void axpby(ThreadPool& pool, const float* a, float alpha, const float* b, float beta, float* out, int64_t n);
// Inverted dropout: y = x * keep / (1 - p) with keep = uniform(seed, offset + i) >= p from the Philox dropout
// stream (philox.h), identical on every device; p = 0 copies.
void dropout_forward(ThreadPool& pool, const float* x, float* y, int64_t n, float p, uint64_t seed, uint64_t offset);
void dropout_backward(ThreadPool& pool, const float* dy, float* dx, int64_t n, float p, uint64_t seed,
                      uint64_t offset);  // dx += keep * dy / (1 - p), the mask regenerated from (seed, offset)

// ---- optim.cpp --------------------------------------------------------------------------------------------------
// AdamW over one flat buffer (Loshchilov & Hutter): m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr * (mhat / (sqrt(vhat) + eps) + wd * decay[i] * p) with bias-corrected mhat, vhat at `step` (1-based).
// decay (n) is a per-element multiplier of the weight decay (0 for norms, biases, embeddings), or null for all 1.
struct AdamWDesc {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.01f;
  int64_t step = 1;
};
// param_bf16 (may be null): also receives the updated parameters rounded to bf16 (f32_to_bf16) — the copy of the flat
// parameter buffer that bf16 kernels read, written in the same pass (one conversion per step for a shared block).
void adamw(ThreadPool& pool, const AdamWDesc& d, float* param, const float* grad, float* m, float* v,
           const float* decay, int64_t n, uint16_t* param_bf16 = nullptr);
// SGD with momentum (PyTorch's semantics: buf = momentum * buf + (1 - dampening) * g, first step buf = g;
// nesterov uses g + momentum * buf); weight decay is L2 added to g. buf may be null when momentum = 0.
struct SgdDesc {
  float lr = 1e-2f, momentum = 0.0f, dampening = 0.0f, weight_decay = 0.0f;
  bool nesterov = false;
  bool first_step = true;
};
void sgd(ThreadPool& pool, const SgdDesc& d, float* param, const float* grad, float* buf, int64_t n);
// Sum of squares in double, summed in fixed 4096-element chunks in order: deterministic for any thread count.
double sum_squares(ThreadPool& pool, const float* x, int64_t n);
// x *= s
void scale_inplace(ThreadPool& pool, float* x, int64_t n, float s);

// ---- permute.cpp ------------------------------------------------------------------------------------------------
// dst (A, C, B, D) (= or +=) src (A, B, C, D): swaps the two middle dimensions. Used to split attention heads,
// (B, T, H, Dh) -> (B, H, T, Dh), and to merge them back. accumulate = true adds into dst (backward).
void permute0213(ThreadPool& pool, const float* src, float* dst, int64_t A, int64_t B, int64_t C, int64_t D,
                 bool accumulate);

// ---- kvcache.cpp ------------------------------------------------------------------------------------------------
// cache (B, H, Tmax, D)[:, :, pos:pos+n, :] = src (B, H, n, D): appends n positions of keys or values to a KV cache
// for incremental decoding. The caller guarantees 0 <= pos, pos + n <= Tmax and that src and cache do not overlap;
// nothing outside the window is written.
void kv_append(ThreadPool& pool, const float* src, float* cache, int64_t B, int64_t H, int64_t n, int64_t Tmax,
               int64_t D, int64_t pos);

}  // namespace sf::cpu
