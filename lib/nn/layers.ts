// layers.ts — Linear, LayerNorm, Embedding, MultiHeadAttention (self-attention, GQA/MQA via kvHeads, cross-layer K/V
// reuse) and FeedForward, each declaring its parameters in a ParameterBuilder; their forward passes are the
// differentiable ops of lib/ops.
import { Module } from './module.ts';
import type { Parameter, ParameterBuilder } from '../params.ts';
import type { Tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { kvAppend } from '../kernels.ts';

/** A fully connected layer y = x W^T + b (W stored as (out, in), as PyTorch), optionally with a fused GELU. */
export class Linear extends Module {
  readonly weight: Parameter; // (out, in), as PyTorch
  readonly bias: Parameter | null;
  constructor(b: ParameterBuilder, name: string, readonly inFeatures: number, readonly outFeatures: number, opts: { bias?: boolean; std?: number } = {}) {
    super();
    this.weight = this.addParameter('weight', b.declare(`${name}.weight`, [outFeatures, inFeatures], { kind: 'normal', std: opts.std ?? 0.02 }, true));
    this.bias = opts.bias === false ? null : this.addParameter('bias', b.declare(`${name}.bias`, [outFeatures], { kind: 'zeros' }, false));
  }
  /** x W^T + b over the last dimension of x, with GELU applied when `activation` is gelu (fused into the product). */
  forward(x: Tensor, activation: 'none' | 'gelu' = 'none'): Tensor {
    return ops.linear(x, this.weight.value, this.bias?.value ?? null, activation);
  }
}

/** Anything that maps (..., in) to (..., out) like a Linear layer. */
export interface LinearLike extends Module {
  /** The layer applied to x (..., in) -> (..., out), with an optional fused GELU. */
  forward(x: Tensor, activation?: 'none' | 'gelu'): Tensor;
}

/**
 * Makes the linear layer for one weight role ('attn.wq', 'ffn.fc1', ...) of one block: a plain Linear, or a factored
 * one whose weight is partly shared across layers (basis, delta).
 */
export type LinearFactory = (b: ParameterBuilder, name: string, role: string, inFeatures: number, outFeatures: number, opts: { bias: boolean }) => LinearLike;

export const plainLinear: LinearFactory = (b, name, _role, i, o, opts) => new Linear(b, name, i, o, opts);

/**
 * The feed-forward activation: 'gelu_tanh' (GPT-2's GELU, PyTorch's approximate='tanh'; fused into the matmul's
 * epilogue) or 'gelu_erf' (the exact GELU, BERT's "gelu": a separate elementwise op after the matmul).
 */
export type Activation = 'gelu_tanh' | 'gelu_erf';

/** layer(x) followed by the activation: fused into the product for gelu_tanh, an elementwise op for gelu_erf. */
export function activated(layer: LinearLike, x: Tensor, activation: Activation): Tensor {
  return activation === 'gelu_erf' ? ops.gelu(layer.forward(x), 'none') : layer.forward(x, 'gelu');
}

/**
 * Basis sharing: W_l = W_S · C_l, y = act((x W_S) C_l + b_l). W_S (in -> r) is shared by every layer of a stack for
 * this role ('<stack>basis.<role>.weight', where <stack> is opts.stack: '' for a Decoder or Encoder, 'enc.' / 'dec.'
 * in an EncoderDecoder), C_l (r -> out) and the bias belong to the layer. Two thin products instead of one.
 */
export class BasisLinear extends Module implements LinearLike {
  readonly basis: Parameter; // (r, in)
  readonly coef: Parameter; // (out, r)
  readonly bias: Parameter | null;
  constructor(b: ParameterBuilder, name: string, role: string, inF: number, outF: number, rank: number, opts: { bias: boolean; stack?: string }) {
    super();
    this.basis = this.addParameter('basis', b.declare(`${opts.stack ?? ''}basis.${role}.weight`, [rank, inF], { kind: 'normal', std: 0.02 }, true));
    this.coef = this.addParameter('coef', b.declare(`${name}.coef`, [outF, rank], { kind: 'normal', std: 1 / Math.sqrt(rank) }, true));
    this.bias = opts.bias ? this.addParameter('bias', b.declare(`${name}.bias`, [outF], { kind: 'zeros' }, false)) : null;
  }
  /** (x B^T) C^T + b: the shared basis, then the per-layer coefficients; an optional fused GELU. */
  forward(x: Tensor, activation: 'none' | 'gelu' = 'none'): Tensor {
    return ops.linear(ops.linear(x, this.basis.value, null), this.coef.value, this.bias?.value ?? null, activation);
  }
}

/**
 * Shared weight plus a per-layer low-rank delta (Relaxed Recursive Transformers): W_l = W_S + B_l A_l,
 * y = act(x W_S + (x B_l) A_l + b_l). W_S ('<stack>delta.<role>.weight', as for BasisLinear) is shared by a stack; B_l (in -> r, random) and A_l
 * (r -> out, zero: the delta starts at 0) and the bias belong to the layer.
 */
export class DeltaLinear extends Module implements LinearLike {
  readonly shared: Parameter; // (out, in)
  readonly down: Parameter; // B_l: (r, in)
  readonly up: Parameter; // A_l: (out, r)
  readonly bias: Parameter | null;
  constructor(b: ParameterBuilder, name: string, role: string, inF: number, outF: number, rank: number, opts: { bias: boolean; stack?: string }) {
    super();
    this.shared = this.addParameter('shared', b.declare(`${opts.stack ?? ''}delta.${role}.weight`, [outF, inF], { kind: 'normal', std: 0.02 }, true));
    this.down = this.addParameter('down', b.declare(`${name}.down`, [rank, inF], { kind: 'normal', std: 0.02 }, true));
    this.up = this.addParameter('up', b.declare(`${name}.up`, [outF, rank], { kind: 'zeros' }, true));
    this.bias = opts.bias ? this.addParameter('bias', b.declare(`${name}.bias`, [outF], { kind: 'zeros' }, false)) : null;
  }
  /** x (W + A B)^T + b, computed as x W^T + b + (x B^T) A^T; then GELU when `activation` is gelu. */
  forward(x: Tensor, activation: 'none' | 'gelu' = 'none'): Tensor {
    const base = ops.linear(x, this.shared.value, this.bias?.value ?? null);
    const low = ops.linear(ops.linear(x, this.down.value, null), this.up.value, null);
    const y = ops.add(base, low);
    return activation === 'gelu' ? ops.gelu(y) : y;
  }
}

/** A residual connection: h + out, normalised afterwards for post-LN sub-layers. */
function postResidual(norm: 'pre' | 'post', ln: LayerNorm, h: Tensor, out: Tensor): Tensor {
  const sum = ops.add(h, out);
  return norm === 'pre' ? sum : ln.forward(sum);
}

/** Layer normalization over the last dimension, with a weight and a bias. */
export class LayerNorm extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter;
  constructor(b: ParameterBuilder, name: string, dim: number, readonly eps = 1e-5) {
    super();
    this.weight = this.addParameter('weight', b.declare(`${name}.weight`, [dim], { kind: 'ones' }, false));
    this.bias = this.addParameter('bias', b.declare(`${name}.bias`, [dim], { kind: 'zeros' }, false));
  }
  /** Normalizes x over its last dimension, then scales by weight and adds bias. */
  forward(x: Tensor): Tensor {
    return ops.layerNorm(x, this.weight.value, this.bias.value, this.eps);
  }
}

/**
 * The masked-LM prediction head of BERT and ALBERT: a dense layer (dModel -> width), the activation, a LayerNorm,
 * then the output matrix (the token embedding, tied, or an own one) plus an output bias over the vocabulary.
 */
export class MlmHead extends Module {
  readonly dense: Linear;
  readonly ln: LayerNorm;
  readonly bias: Parameter; // (vocab)
  constructor(b: ParameterBuilder, name: string, dModel: number, width: number, vocab: number, readonly activation: Activation, eps: number) {
    super();
    this.dense = this.addModule('dense', new Linear(b, `${name}.dense`, dModel, width));
    this.ln = this.addModule('ln', new LayerNorm(b, `${name}.ln`, width, eps));
    this.bias = this.addParameter('bias', b.declare(`${name}.bias`, [vocab], { kind: 'zeros' }, false));
  }
  /** h (..., dModel) -> logits (..., vocab) = LN(act(h W^T + b)) out^T + bias, for the output matrix out (vocab, width). */
  forward(h: Tensor, out: Tensor): Tensor {
    return ops.linear(this.ln.forward(activated(this.dense, h, this.activation)), out, this.bias.value);
  }
}

/** A lookup table of `num` vectors of size `dim`. */
export class Embedding extends Module {
  readonly weight: Parameter; // (num, dim)
  constructor(b: ParameterBuilder, name: string, readonly num: number, readonly dim: number, std = 0.02) {
    super();
    this.weight = this.addParameter('weight', b.declare(`${name}.weight`, [num, dim], { kind: 'normal', std }, false));
  }
  /** The rows of the table for int32 ids: (...) -> (..., dim). */
  forward(ids: Tensor): Tensor {
    return ops.embedding(ids, this.weight.value);
  }
}

/** The shape of a MultiHeadAttention block. */
export interface AttentionConfig {
  dModel: number;
  heads: number;
  /** K/V heads (GQA; 1 = MQA). Default: heads. */
  kvHeads?: number;
  bias?: boolean;
  causal?: boolean;
  /** Makes the projections (default: plain Linear layers). */
  linear?: LinearFactory;
  /** 'pre' (default): the sub-layer normalises its input; 'post': the residual sum is normalised after it. */
  norm?: 'pre' | 'post';
  /** The LayerNorm's epsilon (default 1e-5; BERT and ALBERT use 1e-12). */
  eps?: number;
  /** Whether this block has its own K/V projections (false for blocks used only by layers that reuse another
   * layer's K and V under cross-layer KV sharing). Default true. */
  ownKV?: boolean;
}

/** Pre-LN self-attention sub-layer: LayerNorm, Q/K/V projections, flash attention, output projection. */
export class MultiHeadAttention extends Module {
  readonly ln: LayerNorm;
  readonly wq: LinearLike;
  readonly wk: LinearLike | null;
  readonly wv: LinearLike | null;
  readonly wo: LinearLike;
  readonly heads: number;
  readonly kvHeads: number;
  readonly causal: boolean;
  readonly norm: 'pre' | 'post';
  constructor(b: ParameterBuilder, name: string, c: AttentionConfig) {
    super();
    this.norm = c.norm ?? 'pre';
    this.heads = c.heads;
    this.kvHeads = c.kvHeads ?? c.heads;
    this.causal = c.causal ?? true;
    const dh = c.dModel / c.heads;
    const bias = c.bias ?? true;
    this.ln = this.addModule('ln', new LayerNorm(b, `${name}.ln`, c.dModel, c.eps));
    const mk = c.linear ?? plainLinear;
    this.wq = this.addModule('wq', mk(b, `${name}.wq`, 'attn.wq', c.dModel, c.dModel, { bias }));
    const ownKV = c.ownKV ?? true;
    this.wk = ownKV ? this.addModule('wk', mk(b, `${name}.wk`, 'attn.wk', c.dModel, this.kvHeads * dh, { bias })) : null;
    this.wv = ownKV ? this.addModule('wv', mk(b, `${name}.wv`, 'attn.wv', c.dModel, this.kvHeads * dh, { bias })) : null;
    this.wo = this.addModule('wo', mk(b, `${name}.wo`, 'attn.wo', c.dModel, c.dModel, { bias }));
  }

  /** K and V (B, Hkv, T, Dh) of the normalised input h = ln(x). */
  keysValues(h: Tensor): { k: Tensor; v: Tensor } {
    if (!this.wk || !this.wv) throw new Error('MultiHeadAttention: this block has no K/V projections (it reuses another layer\'s K and V)');
    return { k: splitHeads(this.wk.forward(h), this.kvHeads), v: splitHeads(this.wv.forward(h), this.kvHeads) };
  }

  /**
   * x (B, T, C) -> the sub-layer's output (B, T, C), without the residual. With `kv`, reuses those keys and values
   * (cross-layer K/V sharing) instead of computing its own; returns the K/V it used.
   *
   * Incremental decoding (BlockStack.run with a KV cache): with `cache` (and no `kv`), this layer's own K and V of the
   * T positions of x (B = 1) are written into cache.k / cache.v (1, Hkv, capacity, Dh) at cache.pos. At position 0
   * (the prompt) the layer attends to its own K/V (causal) and returns them, for the layers that reuse them in the
   * same pass; at a later position (T = 1) it attends to the cache's first pos + 1 keys (`keyLengths`, causal false:
   * the cache holds no later position) and returns the cache, which a layer reusing this layer's K/V then reads.
   * With one position the head split and merge are reshapes (a view, no copy).
   */
  forward(
    x: Tensor,
    kv?: { k: Tensor; v: Tensor },
    options: { keyLengths?: Tensor; memory?: Tensor; causal?: boolean; cache?: { k: Tensor; v: Tensor; pos: number; at?: Tensor } } = {},
  ): { out: Tensor; kv: { k: Tensor; v: Tensor } } {
    const h = this.norm === 'pre' ? this.ln.forward(x) : x;
    const q = splitHeads(this.wq.forward(h), this.heads);
    // keys and values: reused (cross-layer sharing), from `memory` (cross-attention over an encoder's output, which
    // is already normalised), or from this input (and then appended to the cache when decoding)
    let used = kv;
    if (!used) {
      used = this.keysValues(options.memory ?? h);
      const c = options.cache;
      if (c) {
        kvAppend(c.k, used.k, c.at ?? c.pos); // `at`: the position read when the op runs (a replayed step)
        kvAppend(c.v, used.v, c.at ?? c.pos);
        if (c.pos > 0) used = { k: c.k, v: c.v };
      }
    }
    const causal = options.causal ?? (this.causal && !options.memory); // a block shared by encoder and decoder is told
    const o = ops.attention(q, used.k, used.v, { causal, keyLengths: options.keyLengths });
    return { out: this.wo.forward(mergeHeads(o)), kv: used };
  }

  /** The residual connection of this sub-layer: h + out (pre-LN), or LayerNorm(h + out) (post-LN). */
  residual(h: Tensor, out: Tensor): Tensor {
    return postResidual(this.norm, this.ln, h, out);
  }
}

/** (B, T, H*Dh) -> (B, H, T, Dh); with T = 1 a reshape (a view, no copy). Differentiable. */
function splitHeads(y: Tensor, heads: number): Tensor {
  const [B, T, HD] = y.shape;
  return T === 1 ? ops.reshape(y, [B, heads, 1, HD / heads]) : ops.splitHeads(y, heads);
}

/** (B, H, T, Dh) -> (B, T, H*Dh); with T = 1 a reshape (a view, no copy). Differentiable. */
function mergeHeads(o: Tensor): Tensor {
  const [B, H, T, Dh] = o.shape;
  return T === 1 ? ops.reshape(o, [B, 1, H * Dh]) : ops.mergeHeads(o);
}

/** Feed-forward sub-layer: (pre-LN: LayerNorm,) Linear + GELU (fused), Linear. */
export class FeedForward extends Module {
  readonly ln: LayerNorm;
  readonly fc1: LinearLike;
  readonly fc2: LinearLike;
  readonly activation: Activation;
  constructor(
    b: ParameterBuilder, name: string, dModel: number, dFF: number, bias = true, linear: LinearFactory = plainLinear,
    readonly norm: 'pre' | 'post' = 'pre',
    o: { eps?: number; activation?: Activation } = {},
  ) {
    super();
    this.activation = o.activation ?? 'gelu_tanh';
    this.ln = this.addModule('ln', new LayerNorm(b, `${name}.ln`, dModel, o.eps));
    this.fc1 = this.addModule('fc1', linear(b, `${name}.fc1`, 'ffn.fc1', dModel, dFF, { bias }));
    this.fc2 = this.addModule('fc2', linear(b, `${name}.fc2`, 'ffn.fc2', dFF, dModel, { bias }));
  }
  /** The feed-forward sub-layer applied to x (B, T, C); returns its output (the caller adds the residual). */
  forward(x: Tensor): Tensor {
    return this.fc2.forward(activated(this.fc1, this.norm === 'pre' ? this.ln.forward(x) : x, this.activation));
  }
  /** h + out (pre-LN), or LayerNorm(h + out) (post-LN). */
  residual(h: Tensor, out: Tensor): Tensor {
    return postResidual(this.norm, this.ln, h, out);
  }
}

/** The shape of a TransformerBlock: attention plus a feed-forward width. */
export interface TransformerBlockConfig extends AttentionConfig {
  dFF: number;
  /** The feed-forward activation (default 'gelu_tanh'). */
  activation?: Activation;
}

/**
 * One Transformer layer: self-attention then feed-forward, each with its residual connection, pre-LN by default or
 * post-LN (`norm: 'post'`). The models index attention and FFN sub-layers separately (so that a plan can share one
 * without the other); this block is for composing layers by hand — using one block at several depths shares it.
 */
export class TransformerBlock extends Module {
  readonly attn: MultiHeadAttention;
  readonly ffn: FeedForward;
  constructor(b: ParameterBuilder, name: string, c: TransformerBlockConfig) {
    super();
    this.attn = this.addModule('attn', new MultiHeadAttention(b, `${name}.attn`, c));
    this.ffn = this.addModule('ffn', new FeedForward(b, `${name}.ffn`, c.dModel, c.dFF, c.bias ?? true, c.linear ?? plainLinear, c.norm ?? 'pre', { eps: c.eps, activation: c.activation }));
  }
  /** h (B, T, C) -> (B, T, C). */
  forward(h: Tensor, options: { keyLengths?: Tensor } = {}): Tensor {
    const a = this.attn.residual(h, this.attn.forward(h, undefined, options).out);
    return this.ffn.residual(a, this.ffn.forward(a));
  }
}
