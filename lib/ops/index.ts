// ops — differentiable operations. Each pairs its forward native call with the backward native calls, side by side.
// Inputs that need gradients are parameters (views into the flat parameter buffer) or outputs of recorded ops; the
// backward closures add into tape.gradFor(input), which for a parameter is its gradient view (so shared weights sum
// their uses in place). Every tensor an op makes belongs to the innermost scope (autograd.ts, track()); when the op
// records, its closure's tensors (inputs, outputs, saved statistics) are pinned by the tape, so no scope frees them
// before the tape is released.
import { Tensor, zeros } from '../tensor.ts';
import * as K from '../kernels.ts';
import { bf16TwinOf, recording, tape, track, type Tape } from '../autograd.ts';
import { checkOptions, describe } from '../validate.ts';

// ---- precision scope ------------------------------------------------------------------------------------------------
// The arithmetic of the matmuls (linear, matmul) and of attention on CUDA: 'fp32' unless a withPrecision() scope says
// otherwise. Each op reads it when it runs forward and its backward uses the same precision, so a step recorded inside
// withPrecision('bf16', ...) is bf16 in both directions even when backward() is called after the scope has ended.
// On the CPU every precision computes in fp32. (The scope is synchronous: it ends when fn returns.)
let precisionNow: K.Precision = 'fp32';
const PRECISIONS: readonly K.Precision[] = ['fp32', 'tf32', 'bf16'];

/** Runs fn with matmuls and attention in `precision` on CUDA (fp32 master weights and gradients either way). */
export function withPrecision<T>(precision: K.Precision, fn: () => T): T {
  if (!PRECISIONS.includes(precision))
    throw new TypeError(`withPrecision: precision must be one of 'fp32', 'tf32', 'bf16', got ${String(precision)}`);
  const before = precisionNow;
  precisionNow = precision;
  try {
    return fn();
  } finally {
    precisionNow = before;
  }
}

/** The precision ops use now (see withPrecision). */
export function currentPrecision(): K.Precision {
  return precisionNow;
}

const rows = (t: Tensor) => t.shape.slice(0, -1).reduce((a, b) => a * b, 1);
const as2d = (t: Tensor) => t.view([rows(t), t.shape[t.rank - 1]]);

/** Adds g (viewed to t's shape) into t's gradient. */
function addGrad(tp: Tape, t: Tensor, g: Tensor, scale = 1): void {
  if (g.shape.length === t.shape.length && g.shape.every((d, i) => d === t.shape[i])) {
    tp.accumulate(t, g, scale);
    return;
  }
  const gv = g.view(t.shape);
  tp.accumulate(t, gv, scale);
  gv.dispose(); // a view holds its storage: release it now, not at garbage collection
}

// ---- reshape --------------------------------------------------------------------------------------------------------
// forward: the same storage under another shape (no copy);  backward: dx += dout viewed as x
/** The same storage under another shape (no copy); differentiable. */
export function reshape(x: Tensor, shape: number[]): Tensor {
  const rec = recording(x);
  const out = track(x.view(shape), rec);
  if (rec)
    tape().record('reshape', [out], (tp) => {
      const g = tp.gradOf(out);
      if (g) addGrad(tp, x, g);
    }, [x]);
  return out;
}

// ---- embedding ------------------------------------------------------------------------------------------------------
// forward: out = table[ids];  backward: dtable += scatter(dout, ids)
/** Rows of `table` picked by int32 `ids`; differentiable in the table. */
export function embedding(ids: Tensor, table: Tensor): Tensor {
  const rec = recording(table);
  const out = track(K.embedding(ids, table), rec);
  if (rec)
    tape().record('embedding', [out], (tp) => {
      const g = tp.gradOf(out);
      if (g) K.embeddingBackward(ids, g, tp.gradFor(table));
    }, [ids, table]);
  return out;
}

// ---- add ------------------------------------------------------------------------------------------------------------
// forward: out = a + b (same shape; the residual stream);  backward: da += dout, db += dout
/** Element-wise a + b of two tensors of the same shape; differentiable. */
export function add(a: Tensor, b: Tensor): Tensor {
  const rec = recording(a, b);
  const out = track(K.axpby(a, 1, b, 1), rec);
  if (rec)
    tape().record('add', [out], (tp) => {
      const g = tp.gradOf(out);
      if (!g) return;
      if (tp.requiresGrad(a)) addGrad(tp, a, g);
      if (tp.requiresGrad(b)) addGrad(tp, b, g);
    }, [a, b]);
  return out;
}

// ---- linear ---------------------------------------------------------------------------------------------------------
// forward: y = act(x W^T + b), x (..., in), W (out, in) as PyTorch stores it, GELU fused into the matmul (saving the
// pre-activation);  backward: dpre = gelu'(pre) dy;  dx += dpre W;  dW += dpre^T x;  db += colsum(dpre)
/** x W^T + b with an optional fused GELU; differentiable in x, W and b. */
export function linear(x: Tensor, w: Tensor, b: Tensor | null, activation: 'none' | 'gelu' = 'none'): Tensor {
  const rec = recording(x, w, b);
  const precision = precisionNow;
  // bf16: a weight whose store keeps a bf16 copy passes its window of it (read instead of converting W, while current)
  const w16 = precision === 'bf16' ? bf16TwinOf(w) : undefined;
  // recording with GELU: the matmul's epilogue also writes the pre-activation, which backward needs (one kernel, no
  // separate GELU pass over the output)
  const preact = activation === 'gelu' && rec ? track(zeros([...x.shape.slice(0, -1), w.shape[0]], { device: x.device }), rec) : null;
  const y = track(K.matmul(x, w, { transB: true, bias: b ?? undefined, activation, preact: preact ?? undefined, precision, bBf16: w16 }), rec);
  if (rec) {
    const tp0 = tape();
    // A weight (a parameter) used by several linear ops on this tape — a block shared by several layers — may have its
    // dW (and, when every use adds the same bias, its db) stacked into one product over all uses (autograd.ts).
    const group = tp0.requiresGrad(w) && w.rank === 2 ? tp0.noteWeightUse(w, b, precision, rows(x)) : null;
    tp0.record('linear', [y], (tp) => {
      const gy = tp.gradOf(y);
      if (!gy) {
        if (group) tp.deferWeightGrad(group, null, null); // counted as visited: the group flushes after its last use
        return;
      }
      let g = gy;
      if (preact) {
        g = track(K.geluBackward(preact, gy, zeros(gy.shape, { device: gy.device }))); // the graph's scope owns it
      }
      const g2 = as2d(g);
      let deferred = false;
      if (group) {
        const x2 = as2d(x), gw = as2d(g);
        deferred = tp.deferWeightGrad(group, x2, gw); // the tape owns x2 and gw when it took them
        if (!deferred) {
          x2.dispose();
          gw.dispose();
        }
      }
      if (!deferred && tp.requiresGrad(w)) {
        const x2 = as2d(x);
        K.matmul(g2, x2, { transA: true, beta: 1, out: tp.gradFor(w), precision });
        x2.dispose();
      }
      // the bias: stacked with dW when every use of the weight adds this same bias, else here
      if (b && tp.requiresGrad(b) && !(deferred && group!.sameBias)) K.biasGrad(g2, tp.gradFor(b));
      if (tp.requiresGrad(x)) {
        const gx = as2d(tp.gradFor(x));
        K.matmul(g2, w, { beta: 1, out: gx, precision, bBf16: w16 });
        gx.dispose();
      }
      g2.dispose(); // views hold their storage: release them now, not at garbage collection
    }, [x, w, b, preact]);
  }
  return y;
}

// ---- gelu -----------------------------------------------------------------------------------------------------------
// forward: y = gelu(x), tanh form or exact (erf) form;  backward: dx += gelu'(x) dy of the same form
/**
 * GELU; differentiable. approximate: 'tanh' (the default; GPT-2's, PyTorch's approximate='tanh') or 'none' (the exact
 * x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)): BERT's, PyTorch's default), as torch.nn.functional.gelu names them.
 */
export function gelu(x: Tensor, approximate: 'tanh' | 'none' = 'tanh'): Tensor {
  if (approximate !== 'tanh' && approximate !== 'none')
    throw new TypeError(`ops.gelu: approximate must be 'tanh' or 'none', got ${describe(approximate)}`);
  const exact = approximate === 'none';
  const rec = recording(x);
  const y = track(exact ? K.geluErf(x) : K.gelu(x), rec);
  if (rec)
    tape().record(exact ? 'geluErf' : 'gelu', [y], (tp) => {
      const g = tp.gradOf(y);
      if (g) (exact ? K.geluErfBackward : K.geluBackward)(x, g, tp.gradFor(x));
    }, [x]);
  return y;
}

// ---- tanh -----------------------------------------------------------------------------------------------------------
// forward: y = tanh(x);  backward: dx += (1 - tanh(x)^2) dy
/** tanh; differentiable (BERT's pooler). */
export function tanh(x: Tensor): Tensor {
  const rec = recording(x);
  const y = track(K.tanh(x), rec);
  if (rec)
    tape().record('tanh', [y], (tp) => {
      const g = tp.gradOf(y);
      if (g) K.tanhBackward(x, g, tp.gradFor(x));
    }, [x]);
  return y;
}

// ---- matmul (weights made from weights: basis and delta sharing) -----------------------------------------------------
// forward: C = A B (2-D);  backward: dA += dC B^T;  dB += A^T dC
/** The 2-D matrix product A B; differentiable. */
export function matmul(a: Tensor, b: Tensor): Tensor {
  const rec = recording(a, b);
  const precision = precisionNow;
  // bf16: parameters whose store keeps a bf16 copy pass their windows of it (see linear)
  const a16 = precision === 'bf16' ? bf16TwinOf(a) : undefined, b16 = precision === 'bf16' ? bf16TwinOf(b) : undefined;
  const c = track(K.matmul(a, b, { precision, aBf16: a16, bBf16: b16 }), rec);
  if (rec)
    tape().record('matmul', [c], (tp) => {
      const g = tp.gradOf(c);
      if (!g) return;
      if (tp.requiresGrad(a)) K.matmul(g, b, { transB: true, beta: 1, out: tp.gradFor(a), precision, bBf16: b16 });
      if (tp.requiresGrad(b)) K.matmul(a, g, { transA: true, beta: 1, out: tp.gradFor(b), precision, aBf16: a16 });
    }, [a, b]);
  return c;
}

// ---- layer norm -------------------------------------------------------------------------------------------------------
// forward: y = (x - mean) rstd w + b, saving mean and rstd;  backward: dx, dw, db (+=)
/** Layer normalization over the last dimension; differentiable in x, w and b. */
export function layerNorm(x: Tensor, w: Tensor, b: Tensor, eps = 1e-5): Tensor {
  const rec = recording(x, w, b);
  const { y, mean, rstd } = K.layerNorm(x, w, b, { eps });
  track(y, rec);
  if (!rec) {
    mean.dispose();
    rstd.dispose();
    return y;
  }
  track(mean, rec);
  track(rstd, rec);
  tape().record('layerNorm', [y], (tp) => {
    const g = tp.gradOf(y);
    if (!g) return;
    K.layerNormBackward(g, x, w, mean, rstd, {
      dx: tp.requiresGrad(x) ? tp.gradFor(x) : undefined,
      dw: tp.requiresGrad(w) ? tp.gradFor(w) : undefined,
      db: tp.requiresGrad(b) ? tp.gradFor(b) : undefined,
    });
  }, [x, w, b, mean, rstd]);
  return y;
}

// ---- attention heads -------------------------------------------------------------------------------------------------
// forward: (B, T, H*Dh) -> (B, H, T, Dh);  backward: merge the gradient back (+=)
/** (B, T, H*Dh) -> (B, H, T, Dh); differentiable. */
export function splitHeads(x: Tensor, heads: number): Tensor {
  const rec = recording(x);
  const out = track(K.splitHeads(x, heads), rec);
  if (rec)
    tape().record('splitHeads', [out], (tp) => {
      const g = tp.gradOf(out);
      if (g) K.mergeHeads(g, { out: tp.gradFor(x), accumulate: true });
    }, [x]);
  return out;
}

// forward: (B, H, T, Dh) -> (B, T, H*Dh);  backward: split the gradient back (+=)
/** (B, H, T, Dh) -> (B, T, H*Dh); differentiable. */
export function mergeHeads(x: Tensor): Tensor {
  const rec = recording(x);
  const out = track(K.mergeHeads(x), rec);
  if (rec)
    tape().record('mergeHeads', [out], (tp) => {
      const g = tp.gradOf(out);
      if (!g) return;
      const [B, H, T, Dh] = x.shape;
      const gv = g.view([B, T, H, Dh]);
      K.permute0213(gv, { out: tp.gradFor(x), accumulate: true });
      gv.dispose();
    }, [x]);
  return out;
}

// ---- attention --------------------------------------------------------------------------------------------------------
// forward: flash attention, saving the log-sum-exp;  backward: dq, dk, dv (+=), recomputing the probabilities
/** Scaled dot-product attention (flash-attention scheme; causal, padding, GQA); differentiable in q, k and v. */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: K.AttentionOptions = {}): Tensor {
  const rec = recording(q, k, v);
  if (options.precision === undefined && precisionNow !== 'fp32') options = { ...options, precision: precisionNow };
  const { o, lse } = K.attention(q, k, v, options);
  track(o, rec);
  if (!rec) {
    lse.dispose();
    return o;
  }
  track(lse, rec);
  tape().record('attention', [o], (tp) => {
    const g = tp.gradOf(o);
    if (!g) return;
    K.attentionBackward(q, k, v, o, lse, g, { dq: tp.gradFor(q), dk: tp.gradFor(k), dv: tp.gradFor(v) }, options);
  }, [q, k, v, lse, options.keyLengths]);
  return o;
}

// ---- loss ---------------------------------------------------------------------------------------------------------------
// forward: the mean cross-entropy over non-ignored targets, dlogits written in the same pass when recording;
// backward: dlogits (scaled by backward()'s scale) becomes the logits' gradient — no second pass over the logits
/** Mean cross-entropy of logits against int32 targets, as a scalar tensor; differentiable in the logits. */
export function crossEntropy(logits: Tensor, targets: Tensor, options: { ignoreIndex?: number } = {}): Tensor {
  checkOptions('ops.crossEntropy', options);
  const rec = recording(logits);
  const dlogits = rec ? track(zeros(logits.shape, { device: logits.device }), rec) : undefined;
  const loss = track(K.crossEntropy(logits, targets, { ignoreIndex: options.ignoreIndex, dlogits }), rec);
  if (rec) {
    tape().addRoot(loss);
    tape().record('crossEntropy', [loss], (tp) => {
      if (tp.seed !== loss) {
        // another loss's root: no gradient reaches it (its graph is left alone), unless an op consumed this loss
        if (tp.gradOf(loss)) throw new Error('backward: a crossEntropy loss can only be the root of backward()');
        return;
      }
      tp.accumulate(logits, dlogits!, tp.seedScale, true);
    }, [logits, dlogits]);
  }
  return loss;
}
