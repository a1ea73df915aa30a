// kernels.h — the CUDA kernel library: one launch function per CPU kernel of native/cpu/kernels.h, with the same
// arguments and the same meaning (read that file's conventions first; they hold here too), except:
//
//  * The first argument is the CUDA stream (the device's one stream, owned by its Backend). Every function only
//    ENQUEUES work on that stream and returns; pointers are device pointers. Launch errors are turned into sf::Error
//    (naming the kernel) at once; asynchronous faults surface at the next synchronisation of the stream.
//  * Backward kernels accumulate (dx += ...), as on the CPU.
//  * Data-dependent checks (token ids, class targets, key lengths) are done BEFORE the kernel that trusts them, so
//    that an out-of-range id throws the CPU kernel's error and nothing is written: by the bindings on the host when
//    the ids were uploaded from host memory and not written since (Storage::known_ids), else by check_ids().
//  * Results that are scalars on the CPU (cross-entropy loss, sum of squares) are written to device memory.
//  * Matmul and attention take a Precision: F32 (exact fp32 FMA, the reference-grade path), TF32 or BF16 (tensor
//    cores via mma.sync; operands rounded to tf32/bf16 while tiles are loaded — or, for the pipelined bf16 GEMM, by a
//    conversion pass into scratch — products accumulated in fp32). Inputs and outputs stay fp32 in memory: master
//    weights and gradients are fp32 whatever the precision.
//
// This header has no CUDA types, so that the C++ bindings (compiled by the host compiler) can include it. The
// functions are defined in cuda/*.cu when the addon is built with CUDA; a build without CUDA never calls them (no
// tensor can live on a CUDA device there) and links native/core/no_cuda.cpp instead, which does not define them.
#pragma once
#include <cstdint>
#include <string>

#include "../native/cpu/kernels.h"
#include "l2_plan.h"

struct CUstream_st;

namespace sf::cuda {

using Stream = CUstream_st*;

enum class Precision : int { F32 = 0, TF32 = 1, BF16 = 2 };

// ---- gemm.cu ----------------------------------------------------------------------------------------------------
// Same descriptor as cpu::matmul (batch strides, transposes, alpha/beta, bias, GELU epilogue with preact).
// Precision::BF16 has two implementations (docs/gpu.md, "The pipelined bf16 GEMM"): Pipelined (the default) rounds A
// and B to bf16 into a stream-ordered scratch buffer and runs the cp.async / ldmatrix kernel of matmul_bf16; Legacy
// runs the fp32-operand mma kernel that rounds while it loads tiles. The CUDA backend reads the choice once, from
// SHAREDFORMER_GEMM=legacy (gemm_impl_from_env), when it is created. F32 and TF32 ignore it. Wgmma
// (SHAREDFORMER_GEMM=wgmma; docs/gpu.md, "The Hopper path"): the sm_90a wgmma kernel of gemm_sm90.cu for the K-major
// case (!trans_a, trans_b) on a device of compute capability 9.0, the pipelined kernel otherwise (other transposes,
// other devices); lane-verified only, never the default. The wgmma kernel stages its operands by TMA where both allow
// tensor maps (16-byte aligned, strides multiples of 16 bytes), by cp.async otherwise. WgmmaCpAsync: the same, always
// with cp.async staging (the benchmark's comparison of the two; not selectable by the environment).
enum class GemmImpl : int { Pipelined = 0, Legacy = 1, Wgmma = 2, WgmmaCpAsync = 3 };
GemmImpl gemm_impl_from_env();
// Whether GemmImpl::Wgmma runs the wgmma kernel on the current device (compute capability 9.0 and an sm_90a image).
bool gemm_wgmma_usable();
// a16 / b16 (Pipelined BF16 only; ignored otherwise): the operand already in bf16, in d.a's / d.b's layout (what
// adamw's bf16 copy of the flat parameter buffer holds): that operand is not converted, only the other one is.
void matmul(Stream s, const cpu::MatmulDesc& d, Precision p, GemmImpl impl = GemmImpl::Pipelined,
            const uint16_t* a16 = nullptr, const uint16_t* b16 = nullptr);
// The pipelined bf16 GEMM on operands that are bf16 in memory (bit patterns, round-to-nearest-even bf16): `a` and
// `b` replace d.a and d.b (which are not read) with the same layout (op(A) is M x K, or K x M with trans_a; a_stride
// and b_stride in elements, 0 = broadcast); C, bias and preact stay fp32. Any size and alignment: an operand whose
// address, leading dimension or batch stride is not a multiple of 16 bytes is loaded with scalar loads instead of
// cp.async. Lane-verified only (the CPU lane), not yet run on a GPU.
// impl: Wgmma tries the Hopper kernel as above; anything else runs the pipelined kernel.
void matmul_bf16(Stream s, const cpu::MatmulDesc& d, const uint16_t* a, const uint16_t* b,
                 GemmImpl impl = GemmImpl::Pipelined);
// dbias += column sums of dy (rows, n): two passes over (column tiles) x (row chunks) sized from the SM count, partial
// sums in stream-ordered scratch, added in a fixed order (deterministic on one device; no float atomics).
void bias_grad(Stream s, const float* dy, int64_t rows, int64_t n, float* dbias);

// ---- attention.cu -----------------------------------------------------------------------------------------------
// Flash attention, same descriptor and semantics as cpu::attention_forward/backward (GQA, causal aligned at the
// end, key_lengths as a DEVICE pointer or null, lse saved, recompute in backward, fully masked rows give o = 0 and
// lse = -inf). D <= 128.
// Precision::BF16 forward (and backward, below) has two implementations (docs/gpu.md, "Attention"): Tiled (the
// default: K and V rounded to bf16 into stream-ordered scratch, FlashAttention-2 tiling with a cp.async pipeline and
// ldmatrix; lane-verified only) and Legacy (the earlier kernels that round and transpose while they stage tiles),
// kept for comparison on a first GPU run. attention_impl_from_env() reads SHAREDFORMER_ATTENTION=legacy once per
// process. F32 and TF32 ignore it.
enum class AttentionImpl : int { Tiled = 0, Legacy = 1 };
AttentionImpl attention_impl_from_env();
void attention_forward(Stream s, const cpu::AttentionDesc& d, const float* q, const float* k, const float* v,
                       float* o, float* lse, Precision p, AttentionImpl impl = attention_impl_from_env());
// Precision::BF16 backward: Tiled rounds K, V, Q and dO to bf16 into scratch and runs both passes on them (cp.async,
// ldmatrix; lane-verified only), Legacy the earlier kernels that round and transpose while staging.
void attention_backward(Stream s, const cpu::AttentionDesc& d, const float* q, const float* k, const float* v,
                        const float* o, const float* lse, const float* dout, float* dq, float* dk, float* dv,
                        Precision p, AttentionImpl impl = attention_impl_from_env());

// ---- pointwise.cu -----------------------------------------------------------------------------------------------
void layernorm_forward(Stream s, const float* x, const float* w, const float* b, float* y, float* mean, float* rstd,
                       int64_t rows, int64_t C, float eps);
void layernorm_backward(Stream s, const float* dy, const float* x, const float* w, const float* mean,
                        const float* rstd, float* dx, float* dw, float* db, int64_t rows, int64_t C);
void gelu_forward(Stream s, const float* x, float* y, int64_t n);
void gelu_backward(Stream s, const float* x, const float* dy, float* dx, int64_t n);
void gelu_erf_forward(Stream s, const float* x, float* y, int64_t n);  // x Phi(x), PyTorch's approximate='none'
void gelu_erf_backward(Stream s, const float* x, const float* dy, float* dx, int64_t n);
void tanh_forward(Stream s, const float* x, float* y, int64_t n);  // tanhf
void tanh_backward(Stream s, const float* x, const float* dy, float* dx, int64_t n);  // dx += (1 - tanh(x)^2) dy
void softmax_forward(Stream s, const float* x, float* y, int64_t rows, int64_t n);
void softmax_backward(Stream s, const float* y, const float* dy, float* dx, int64_t rows, int64_t n);
void axpby(Stream s, const float* a, float alpha, const float* b, float beta, float* out, int64_t n);
void dropout_forward(Stream s, const float* x, float* y, int64_t n, float p, uint64_t seed, uint64_t offset);
void dropout_backward(Stream s, const float* dy, float* dx, int64_t n, float p, uint64_t seed, uint64_t offset);
void permute0213(Stream s, const float* src, float* dst, int64_t A, int64_t B, int64_t C, int64_t D,
                 bool accumulate);
void kv_append(Stream s, const float* src, float* cache, int64_t B, int64_t H, int64_t n, int64_t Tmax, int64_t D,
               int64_t pos);

// ---- embedding.cu -----------------------------------------------------------------------------------------------
// Returns the index of the first id (in order) outside [lo, hi) and != skip, or -1: enqueues a reduction, then
// synchronises the stream and reads one integer back. The bindings call it before embedding / cross_entropy /
// attention with key lengths only for ids not known on the host (written on the device, or whose upload's bounds do
// not prove them valid): the error path and kernel-written ids pay the drain, uploaded valid ids do not.
int64_t check_ids(Stream s, const int32_t* ids, int64_t n, int32_t lo, int32_t hi, int32_t skip);
void embedding_forward(Stream s, const int32_t* ids, int64_t n, const float* table, int64_t V, int64_t C, float* out);
// Deterministic (no float atomics whose order varies): rows of dtable gathered by sorted id, summed in id order.
void embedding_backward(Stream s, const int32_t* ids, int64_t n, const float* dout, int64_t V, int64_t C,
                        float* dtable);
// loss (1 float, device) = mean over counted rows; dlogits as in cpu::cross_entropy (written, may alias logits).
void cross_entropy(Stream s, const float* logits, const int32_t* targets, int64_t N, int64_t V, int32_t ignore_index,
                   float* dlogits, float grad_scale, float* loss);

// ---- optim.cu ---------------------------------------------------------------------------------------------------
// param_bf16 (may be null): the updated parameters rounded to bf16, as cpu::adamw writes them (the same bits).
void adamw(Stream s, const cpu::AdamWDesc& d, float* param, const float* grad, float* m, float* v, const float* decay,
           int64_t n, uint16_t* param_bf16 = nullptr);
void sgd(Stream s, const cpu::SgdDesc& d, float* param, const float* grad, float* buf, int64_t n);
// out (1 double, device) = sum of squares, in fixed chunks in a fixed order: deterministic run to run.
void sum_squares(Stream s, const float* x, int64_t n, double* out);
void scale_inplace(Stream s, float* x, int64_t n, float scale);
// Global-norm clipping without a host round trip: norm = sqrt(*sumsq); x *= min(1, max_norm / (norm + eps));
// norm_out (1 float, device, may be null) receives the norm.
void clip_by_norm(Stream s, float* x, int64_t n, const double* sumsq, float max_norm, float eps, float* norm_out);

// ---- persistent.cu ----------------------------------------------------------------------------------------------
// A shared block at small batch (decode): ONE cooperative launch applies a pre-LN Transformer block (attention + FFN,
// the block of lib/nn/layers.ts) to L consecutive layers that reuse its weights, for M <= 32 rows (M sequences, one
// new token each). Per layer l, for every row b (sequence b, its new token at position positions[b]):
//   h = LN1(x); q = h Wq^T + bq; k = h Wk^T + bk; v = h Wv^T + bv;
//   k_cache[l][b, :, positions[b], :] = k, same for v (kv_append);
//   o = attention(q, k_cache[l][b], v_cache[l][b]) over keys [0, positions[b]] (key length positions[b] + 1, GQA);
//   x += o Wo^T + bo;  x += gelu_tanh(LN2(x) W1^T + b1) W2^T + b2.
// The block's fp32 master weights are converted to bf16 ONCE per launch into the shared memory of the grid's blocks
// (each block keeps the output columns it computes) and used by every layer: weights and activations in bf16,
// accumulation, layer norm, softmax and the residual stream in fp32 (agreement with the per-layer path ~1e-2).
// Precision must be BF16. Not every shape fits (see shared_block_plan): callers ask first and fall back to the
// per-layer path (layernorm_forward, matmul, kv_append, attention_forward, axpby) when it does not.
// docs/gpu.md "The persistent decode kernel". NOT yet run on a GPU (verified in the CPU lane only).
constexpr int kSharedBlockMaxLayers = 64;
constexpr int kSharedBlockMaxRows = 32;
struct SharedBlockDesc {
  int64_t M = 0;  // rows: sequences, one new token each, 1..32
  int64_t d_model = 0, heads = 0, kv_heads = 0, head_dim = 0, d_ff = 0;
  float eps = 1e-5f;    // layer norm
  float scale = 0.0f;   // attention scale; 0 = 1 / sqrt(head_dim)
  bool pre_ln = true;   // post-LN blocks are refused (the per-layer path serves them)
  // The block's fp32 master weights (device; the flat parameter buffer), as Linear stores them: (out, in) row-major.
  // Biases may be null (bias: false); layer norm weights may not.
  const float *ln1_w = nullptr, *ln1_b = nullptr;
  const float *wq = nullptr, *bq = nullptr, *wk = nullptr, *bk = nullptr, *wv = nullptr, *bv = nullptr;
  const float *wo = nullptr, *bo = nullptr;
  const float *ln2_w = nullptr, *ln2_b = nullptr;
  const float *w1 = nullptr, *b1 = nullptr, *w2 = nullptr, *b2 = nullptr;
  int layers = 0;  // L, 1..kSharedBlockMaxLayers
  // Per layer: its own KV cache, (M, kv_heads, t_max, head_dim) each (every layer appends its own K/V).
  float* k_cache[kSharedBlockMaxLayers] = {};
  float* v_cache[kSharedBlockMaxLayers] = {};
  int64_t t_max = 0;
  // DEVICE int32 (M): the position of row b's new token; the caller guarantees 0 <= positions[b] < t_max (as for
  // kv_append); a position outside is neither written nor attended (that row's attention output is then 0).
  const int32_t* positions = nullptr;
  float* x = nullptr;   // (M, d_model), updated in place through the L layers
  int grid_blocks = 0;  // 0: one block per SM; else this many (tests), as long as they can all be resident
};
struct SharedBlockPlan {
  bool fits = false;
  std::string reason;         // why not, naming the sizes (empty when it fits)
  int blocks = 0, threads = 0;
  int64_t smem_bytes = 0;     // dynamic shared memory per block
  int64_t weight_bytes = 0;   // the block's bf16 weights, all blocks together
  int sms = 0, blocks_per_sm = 0;
};
// Whether (and how) shared_block_decode runs this shape on the current device. Host only, enqueues nothing.
SharedBlockPlan shared_block_plan(const SharedBlockDesc& d, Precision p);
// Enqueues the launch; throws sf::Error with the plan's reason when it does not fit (never computes garbage).
void shared_block_decode(Stream s, const SharedBlockDesc& d, Precision p);

// ---- l2.cu ------------------------------------------------------------------------------------------------------
// The shared-weight path: while consecutive layers reuse one block, the block's bytes [base, base + bytes) are
// marked persisting in L2 for this stream (cudaAccessPolicyWindow), so the second and later layers read them from
// L2 instead of HBM. persist_l2(s, st, nullptr, 0) ends the window. `st` is the device's state, owned by its CUDA
// backend (Backend::l2_state()); the decisions are cuda/l2_plan.h's (set-aside set once per device to its maximum,
// hitRatio = min(1, set-aside / window), missProp normal, a window capped at the device's maximum window).
// Best effort and stream-ordered: it NEVER throws a CUDA error — a failed call (MPS, MIG, no persisting L2) is cleared
// and recorded in `st` (its reason is reported by backends()), and persisting L2 stays off on that device. Ending a
// window re-sets it over the same bytes with hitProp normal, so that the kernels queued after it demote the lines
// (cudaCtxResetPersistingL2Cache is not used: it is not ordered with the stream); a second end clears the window.
enum class L2Status : int {
  Off = 0,         // persisting L2 is off on this device (no persisting L2, or a call failed): st.reason says why
  Unchanged = 1,   // nothing to do (an end with no window)
  Persisting = 2,  // a persisting window is set
  Demoting = 3,    // the window was ended: a normal window over the same bytes demotes its lines
  Cleared = 4,     // the stream has no window any more
};
L2Status persist_l2(Stream s, L2State& st, const void* base, int64_t bytes);

}  // namespace sf::cuda
