// kernels.ts — the kernel library as plain functions on Tensors: each is one native call, validated before any
// memory is touched, queued on the device stream (nothing waits unless you read a result). Forward and backward sit
// side by side. Backward functions ACCUMULATE into the gradient tensors you pass (+=), so a weight used by several
// layers receives the sum of their contributions; zero a gradient before a step.
//
// The model layer (autograd, modules) is built from these; they are exported for people who compose their own
// layers or benchmark kernels.
import { native } from './native.ts';
import { Tensor, handleOf } from './tensor.ts';
import { checkOptions } from './validate.ts';

const n = () => native() as unknown as Record<string, (...args: unknown[]) => any>;
const h = (t: unknown, op: string, name: string) => handleOf(t, op, name);
const maybe = (t: Tensor | null | undefined, op: string, name: string) => (t == null ? null : h(t, op, name));
const wrap = (x: unknown) => new Tensor(x as never);
/** The caller's `out` tensor when one was given (the op wrote into it), else a Tensor for the new result. */
const outOr = (out: unknown, res: unknown) => (out ? (out as Tensor) : wrap(res));

function opts(o: unknown, op: string): Record<string, unknown> {
  return checkOptions(op, o as Record<string, unknown> | undefined);
}

/** Replaces Tensor-valued options by their native handles (checked), leaving the rest as given. */
function nativeOpts(o: Record<string, unknown>, op: string, tensorKeys: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = { ...o };
  for (const k of tensorKeys) if (o[k] != null) out[k] = h(o[k], op, `option ${k}`);
  return out;
}

// ---- matmul ---------------------------------------------------------------------------------------------------------

/**
 * Arithmetic of matmul and attention on CUDA: 'fp32' (default; exact fp32 FMA), 'tf32' or 'bf16' (tensor cores: the
 * operands are rounded to tf32 / bf16 as tiles are loaded, products are accumulated in fp32; inputs, outputs, master
 * weights and gradients stay fp32 in memory). On the CPU every precision computes in fp32.
 */
export type Precision = 'fp32' | 'tf32' | 'bf16';

/** Options of kernels.matmul(): transposes, scaling, accumulation, a fused bias and GELU epilogue. */
export interface MatmulOptions {
  /** Write (or, with beta, accumulate) into this tensor instead of a new one. */
  out?: Tensor;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  /** out = alpha * op(a) @ op(b) + beta * out (beta != 0 needs `out`). */
  beta?: number;
  /** Added to every row: shape [N]. */
  bias?: Tensor;
  activation?: 'none' | 'gelu';
  /** With activation 'gelu': receives the value before GELU (for the backward pass). */
  preact?: Tensor;
  /** CUDA arithmetic (default 'fp32'); the CPU computes in fp32 whatever this says. */
  precision?: Precision;
  /**
   * A bfloat16 twin of `a` / `b` (same shape and device, sharing no memory with `out` or `preact`): normally the
   * parameter's window of the store's bf16 copy (ParameterStore.enableBf16Copy). On CUDA with precision 'bf16' the
   * kernel reads it instead of converting that operand, if, in stream order, it still mirrors the operand's current
   * values (written by the AdamW step that last wrote them; see bf16CopyCurrent); otherwise it converts as without it.
   * The result is the same either way. The CPU does not read it.
   */
  aBf16?: Tensor;
  bBf16?: Tensor;
}

/**
 * act(alpha * op(a) @ op(b) + beta * out + bias). a: [..., M, K] (or [..., K, M] with transA), b: [..., K, N] (or
 * [..., N, K] with transB); batch dimensions match, or one operand is 2-D and is broadcast.
 */
export function matmul(a: Tensor, b: Tensor, options?: MatmulOptions): Tensor {
  const o = opts(options, 'matmul');
  const res = n().matmul(h(a, 'matmul', 'a'), h(b, 'matmul', 'b'), maybe(o.out as Tensor, 'matmul', 'out'),
    nativeOpts(o, 'matmul', ['bias', 'preact', 'aBf16', 'bBf16']));
  return outOr(o.out, res);
}

/**
 * Whether `copy` (bfloat16, x's shape, same device) is, at this point of the device's stream, a current bf16 copy of
 * `x`: written with x's values by an AdamW step (kernels.adamw's bf16Copy), with no write to either buffer since.
 * What matmul's aBf16 / bBf16 decide by. Returns an int32 scalar tensor (1 or 0), computed in stream order.
 */
export function bf16CopyCurrent(x: Tensor, copy: Tensor): Tensor {
  return wrap(n().bf16CopyCurrent(h(x, 'bf16CopyCurrent', 'x'), h(copy, 'bf16CopyCurrent', 'copy')));
}

/** dbias += the sum of dy over every dimension but the last. */
export function biasGrad(dy: Tensor, dbias: Tensor): Tensor {
  n().biasGrad(h(dy, 'biasGrad', 'dy'), h(dbias, 'biasGrad', 'dbias'));
  return dbias;
}

// ---- layer norm, GELU, softmax ----------------------------------------------------------------------------------------

/** Layer norm over the last dimension; returns y and the saved mean and rstd (shape x.shape[:-1]). */
export function layerNorm(x: Tensor, w: Tensor, b: Tensor, options?: { eps?: number }): { y: Tensor; mean: Tensor; rstd: Tensor } {
  const op = 'layernorm';
  const [y, mean, rstd] = n().layernormForward(h(x, op, 'x'), h(w, op, 'w'), h(b, op, 'b'), opts(options, op));
  return { y: wrap(y), mean: wrap(mean), rstd: wrap(rstd) };
}

/** dx += ..., dw += ..., db += ... (pass only the gradients you want). */
export function layerNormBackward(
  dy: Tensor, x: Tensor, w: Tensor, mean: Tensor, rstd: Tensor, grads: { dx?: Tensor; dw?: Tensor; db?: Tensor },
): void {
  const op = 'layernormBackward';
  const g = opts(grads, op);
  n().layernormBackward(h(dy, op, 'dy'), h(x, op, 'x'), h(w, op, 'w'), h(mean, op, 'mean'), h(rstd, op, 'rstd'),
    maybe(g.dx as Tensor, op, 'dx'), maybe(g.dw as Tensor, op, 'dw'), maybe(g.db as Tensor, op, 'db'));
}

/** GELU, tanh form (PyTorch's approximate='tanh'). */
export function gelu(x: Tensor, options?: { out?: Tensor }): Tensor {
  const o = opts(options, 'gelu');
  return outOr(o.out, n().geluForward(h(x, 'gelu', 'x'), maybe(o.out as Tensor, 'gelu', 'out')));
}
/** dx += gelu'(x) * dy */
export function geluBackward(x: Tensor, dy: Tensor, dx: Tensor): Tensor {
  n().geluBackward(h(x, 'geluBackward', 'x'), h(dy, 'geluBackward', 'dy'), h(dx, 'geluBackward', 'dx'));
  return dx;
}

/**
 * GELU, exact form: x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) (PyTorch's default approximate='none'; BERT's). Within a
 * few ulp of the exact value for every float, the far negative tail included; gelu(+Inf) = +Inf, gelu(-Inf) = NaN and
 * NaN stays NaN, as PyTorch computes them.
 */
export function geluErf(x: Tensor, options?: { out?: Tensor }): Tensor {
  const o = opts(options, 'geluErf');
  return outOr(o.out, n().geluErfForward(h(x, 'geluErf', 'x'), maybe(o.out as Tensor, 'geluErf', 'out')));
}
/** dx += gelu'(x) * dy for the exact form: gelu'(x) = Phi(x) + x phi(x) (NaN at +-Inf, as PyTorch). */
export function geluErfBackward(x: Tensor, dy: Tensor, dx: Tensor): Tensor {
  n().geluErfBackward(h(x, 'geluErfBackward', 'x'), h(dy, 'geluErfBackward', 'dy'), h(dx, 'geluErfBackward', 'dx'));
  return dx;
}

/** tanh(x) elementwise, within a few ulp (tanh(+-Inf) = +-1, NaN stays NaN). */
export function tanh(x: Tensor, options?: { out?: Tensor }): Tensor {
  const o = opts(options, 'tanh');
  return outOr(o.out, n().tanhForward(h(x, 'tanh', 'x'), maybe(o.out as Tensor, 'tanh', 'out')));
}
/** dx += (1 - tanh(x)^2) * dy. */
export function tanhBackward(x: Tensor, dy: Tensor, dx: Tensor): Tensor {
  n().tanhBackward(h(x, 'tanhBackward', 'x'), h(dy, 'tanhBackward', 'dy'), h(dx, 'tanhBackward', 'dx'));
  return dx;
}

/** Softmax over the last dimension. */
export function softmax(x: Tensor, options?: { out?: Tensor }): Tensor {
  const o = opts(options, 'softmax');
  return outOr(o.out, n().softmaxForward(h(x, 'softmax', 'x'), maybe(o.out as Tensor, 'softmax', 'out')));
}
/** dx += softmax backward, from the forward's output y. */
export function softmaxBackward(y: Tensor, dy: Tensor, dx: Tensor): Tensor {
  n().softmaxBackward(h(y, 'softmaxBackward', 'y'), h(dy, 'softmaxBackward', 'dy'), h(dx, 'softmaxBackward', 'dx'));
  return dx;
}

// ---- elementwise, dropout --------------------------------------------------------------------------------------------

/** alpha * a + beta * b (residual add, scale); `out` may be a or b. */
export function axpby(a: Tensor, alpha: number, b: Tensor, beta: number, options?: { out?: Tensor }): Tensor {
  const o = opts(options, 'axpby');
  return outOr(o.out, n().axpby(h(a, 'axpby', 'a'), alpha, h(b, 'axpby', 'b'), beta, maybe(o.out as Tensor, 'axpby', 'out')));
}

/**
 * dst[dstOffset + i] = src[srcOffset + i] for i < length, for each (dstOffset, srcOffset, length) triple of
 * `segments` (float32 tensors on one device, disjoint; the rest of dst keeps its values). Packs the flat buffers'
 * parameters back to back (ParameterStore.packSegments) and unpacks them. One op, one stream task.
 */
export function copySegments(dst: Tensor, src: Tensor, segments: Float64Array): Tensor {
  n().copySegments(h(dst, 'copySegments', 'dst'), h(src, 'copySegments', 'src'), segments);
  return dst;
}

/** Options of kernels.dropout(): the probability and the Philox stream that makes the mask. */
export interface DropoutOptions {
  /** Probability of zeroing an element, in [0, 1). */
  p: number;
  seed: number | bigint;
  /** First counter of the Philox stream (advance it by x.size per call). */
  offset?: number | bigint;
}
/** Inverted dropout with a counter-based mask: the same (seed, offset) gives the same mask on every device. */
export function dropout(x: Tensor, options: DropoutOptions & { out?: Tensor }): Tensor {
  const o = opts(options, 'dropout');
  return outOr(o.out, n().dropoutForward(h(x, 'dropout', 'x'), maybe(o.out as Tensor, 'dropout', 'out'), nativeOpts(o, 'dropout', [])));
}
/** dx += mask * dy / (1 - p), the mask regenerated from (seed, offset). */
export function dropoutBackward(dy: Tensor, dx: Tensor, options: DropoutOptions): Tensor {
  n().dropoutBackward(h(dy, 'dropoutBackward', 'dy'), h(dx, 'dropoutBackward', 'dx'), opts(options, 'dropoutBackward'));
  return dx;
}

// ---- attention ---------------------------------------------------------------------------------------------------------

/** Options of kernels.attention() and kernels.attentionBackward(). */
export interface AttentionOptions {
  causal?: boolean;
  /** Default 1 / sqrt(D). */
  scale?: number;
  /** int32 [B]: keys at positions >= keyLengths[b] are masked (padding). */
  keyLengths?: Tensor;
  /** CUDA arithmetic (default 'fp32'); the CPU computes in fp32 whatever this says. */
  precision?: Precision;
  /**
   * A bfloat16 twin of `a` / `b` (same shape and device, sharing no memory with `out` or `preact`): normally the
   * parameter's window of the store's bf16 copy (ParameterStore.enableBf16Copy). On CUDA with precision 'bf16' the
   * kernel reads it instead of converting that operand, if, in stream order, it still mirrors the operand's current
   * values (written by the AdamW step that last wrote them; see bf16CopyCurrent); otherwise it converts as without it.
   * The result is the same either way. The CPU does not read it.
   */
  aBf16?: Tensor;
  bBf16?: Tensor;
}
/**
 * Fused scaled-dot-product attention (flash-attention scheme: no T x T matrix). q [B, Hq, Tq, D], k and v
 * [B, Hkv, Tk, D] with Hq a multiple of Hkv (GQA; MQA when Hkv = 1). Returns o [B, Hq, Tq, D] and the log-sum-exp
 * lse [B, Hq, Tq] that the backward pass needs.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options?: AttentionOptions): { o: Tensor; lse: Tensor } {
  const op = 'attention';
  const [o, lse] = n().attentionForward(h(q, op, 'q'), h(k, op, 'k'), h(v, op, 'v'), nativeOpts(opts(options, op), op, ['keyLengths']));
  return { o: wrap(o), lse: wrap(lse) };
}
/** dq += ..., dk += ..., dv += ..., recomputing the probabilities from q, k and lse. */
export function attentionBackward(
  q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, dout: Tensor,
  grads: { dq: Tensor; dk: Tensor; dv: Tensor }, options?: AttentionOptions,
): void {
  const op = 'attentionBackward';
  const g = opts(grads, op);
  n().attentionBackward(h(q, op, 'q'), h(k, op, 'k'), h(v, op, 'v'), h(o, op, 'o'), h(lse, op, 'lse'), h(dout, op, 'dout'),
    h(g.dq, op, 'dq'), h(g.dk, op, 'dk'), h(g.dv, op, 'dv'), nativeOpts(opts(options, op), op, ['keyLengths']));
}

// ---- embedding, loss ----------------------------------------------------------------------------------------------------

/** table[ids]: ids int32 of any shape, table [V, C] → [...ids.shape, C]. An id outside [0, V) fails the op. */
export function embedding(ids: Tensor, table: Tensor, options?: { out?: Tensor }): Tensor {
  const o = opts(options, 'embedding');
  return outOr(o.out, n().embeddingForward(h(ids, 'embedding', 'ids'), h(table, 'embedding', 'table'), maybe(o.out as Tensor, 'embedding', 'out')));
}
/** dtable += the scatter of dout by ids (deterministic). */
export function embeddingBackward(ids: Tensor, dout: Tensor, dtable: Tensor): Tensor {
  const op = 'embeddingBackward';
  n().embeddingBackward(h(ids, op, 'ids'), h(dout, op, 'dout'), h(dtable, op, 'dtable'));
  return dtable;
}

/** Options of kernels.crossEntropy(). */
export interface CrossEntropyOptions {
  /** Targets equal to this do not count (default -100, as PyTorch). */
  ignoreIndex?: number;
  /** Multiplies dlogits (e.g. 1 / gradient-accumulation steps). */
  gradScale?: number;
  /** Receives (softmax - onehot) * gradScale / count; may be the logits tensor itself. */
  dlogits?: Tensor;
}
/** Fused softmax cross-entropy: the mean loss over counted rows as a scalar tensor, and dlogits in the same pass. */
export function crossEntropy(logits: Tensor, targets: Tensor, options?: CrossEntropyOptions): Tensor {
  const op = 'crossEntropy';
  return wrap(n().crossEntropy(h(logits, op, 'logits'), h(targets, op, 'targets'), nativeOpts(opts(options, op), op, ['dlogits'])));
}

// ---- optimizers over flat buffers ----------------------------------------------------------------------------------------

/** Hyperparameters of one kernels.adamw() step. */
export interface AdamWOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** 1-based step number, for bias correction. */
  step: number;
  /** Per-element multiplier of the weight decay (0 for norms, biases, embeddings). */
  decayMask?: Tensor;
  /**
   * A bfloat16 tensor of param's shape on its device (sharing no memory with the others): written in the same pass with
   * the updated parameters rounded to bf16 (round to nearest even) — the bf16 copy of the flat buffer that bf16
   * kernels read, one conversion per step however many layers share a block.
   */
  bf16Copy?: Tensor;
}
/** One AdamW step over a flat buffer, in place (param, m, v; and bf16Copy when given). */
export function adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, options: AdamWOptions): void {
  const op = 'adamw';
  n().adamw(h(param, op, 'param'), h(grad, op, 'grad'), h(m, op, 'm'), h(v, op, 'v'), nativeOpts(opts(options, op), op, ['decayMask', 'bf16Copy']));
}

/** Hyperparameters of one kernels.sgd() step. */
export interface SgdOptions {
  lr: number;
  momentum?: number;
  dampening?: number;
  weightDecay?: number;
  nesterov?: boolean;
  /**
   * Required when momentum > 0 (the buffer itself cannot tell): true on the first step, which initialises the
   * momentum buffer with the gradient, as PyTorch does.
   */
  firstStep?: boolean;
}
/** One SGD step (PyTorch's semantics), in place; `buf` is the momentum buffer (needed when momentum > 0). */
export function sgd(param: Tensor, grad: Tensor, buf: Tensor | null, options: SgdOptions): void {
  const op = 'sgd';
  n().sgd(h(param, op, 'param'), h(grad, op, 'grad'), maybe(buf, op, 'buf'), opts(options, op));
}

/** The sum of squares as a scalar tensor (deterministic). */
export function sumSquares(x: Tensor): Tensor {
  return wrap(n().sumSquares(h(x, 'sumSquares', 'x')));
}
/** Scales grad in place so that its L2 norm is at most maxNorm; returns the norm before clipping (scalar tensor). */
export function clipGradNorm(grad: Tensor, maxNorm: number, options?: { eps?: number }): Tensor {
  return wrap(n().clipGradNorm(h(grad, 'clipGradNorm', 'grad'), maxNorm, opts(options, 'clipGradNorm')));
}
/** x *= s, in place. */
export function scale(x: Tensor, s: number): Tensor {
  n().scale(h(x, 'scale', 'x'), s);
  return x;
}

// ---- head split / merge ----------------------------------------------------------------------------------------------

/** Options of the head split / merge permutations. */
export interface PermuteOptions {
  /** Write (or, with accumulate, add) into this tensor instead of a new one. */
  out?: Tensor;
  /** out += the permuted input (a backward pass); needs `out`. */
  accumulate?: boolean;
}
/** Swaps the two middle dimensions: src [A, B, C, D] → [A, C, B, D]. */
export function permute0213(src: Tensor, options?: PermuteOptions): Tensor {
  const op = 'permute0213';
  const o = opts(options, op);
  return outOr(o.out, n().permute0213(h(src, op, 'src'), maybe(o.out as Tensor, op, 'out'), nativeOpts(o, op, [])));
}
/** Splits attention heads: x [B, T, H * Dh] → [B, H, T, Dh], with heads = H dividing the last dimension. */
export function splitHeads(x: Tensor, heads: number): Tensor {
  return wrap(n().splitHeads(h(x, 'splitHeads', 'x'), heads));
}
/** Merges attention heads back: x [B, H, T, Dh] → [B, T, H * Dh] (with accumulate, out += ...: the split's backward). */
export function mergeHeads(x: Tensor, options?: PermuteOptions): Tensor {
  const op = 'mergeHeads';
  const o = opts(options, op);
  return outOr(o.out, n().mergeHeads(h(x, op, 'x'), maybe(o.out as Tensor, op, 'out'), nativeOpts(o, op, [])));
}

// ---- KV cache ----------------------------------------------------------------------------------------------------------

/**
 * Appends n positions to a KV cache in place: cache [B, H, Tmax, D][:, :, pos:pos+n, :] = src [B, H, n, D], with
 * 0 <= pos and pos + n <= Tmax (incremental decoding). Returns cache. `pos` may be an int32 tensor [1] on the cache's
 * device, read when the op runs (a recorded decode step, replayed with new positions: see `record`); a position out
 * of range then fails the op on its stream and marks the cache failed.
 */
export function kvAppend(cache: Tensor, src: Tensor, pos: number | Tensor): Tensor {
  const op = 'kvAppend';
  n().kvAppend(h(cache, op, 'cache'), h(src, op, 'src'), pos instanceof Tensor ? h(pos, op, 'pos') : pos);
  return cache;
}

// ---- shared weights on chip ----------------------------------------------------------------------------------------

/**
 * Marks the bytes of `t` (or of several tensors of one buffer that together cover ONE contiguous range, e.g. a block's
 * adjacent parameters) as persisting in the L2 cache of their CUDA device, for the work queued after it, until
 * `persistL2(null)` ends the window on every CUDA device. Used by the layer stack while consecutive layers apply the
 * same block, so the second and later layers read the shared weights from L2. The window covers exactly the bytes
 * passed: tensors whose union has a gap throw a RangeError naming it (on every device). Ending is stream-ordered: the
 * work queued after it demotes the persisting lines. Best effort: where persisting L2 is unavailable (no persisting
 * L2, MPS, MIG) nothing fails; `backends().cuda.devices[i].persistingL2` says whether it is in effect and, if not,
 * why. Returns whether a CUDA device was asked (false for CPU or empty tensors: a no-op).
 */
export function persistL2(t: Tensor | readonly Tensor[] | null): boolean {
  const op = 'persistL2';
  if (t == null) return n().persistL2(null) as boolean;
  if (Array.isArray(t)) return n().persistL2(t.map((x, i) => h(x, op, `tensors[${i}]`))) as boolean;
  return n().persistL2(h(t, op, 't')) as boolean;
}
