// layers.ts — Linear, LayerNorm, Embedding, MultiHeadAttention (self-attention, GQA/MQA via kvHeads, cross-layer K/V
// reuse) and FeedForward, each declaring its parameters in a ParameterBuilder; their forward passes are the
// differentiable ops of lib/ops.
import { Module } from './module.ts';
import type { Parameter, ParameterBuilder } from '../params.ts';
import type { Tensor } from '../tensor.ts';
import * as ops from '../ops/index.ts';

export class Linear extends Module {
  readonly weight: Parameter; // (out, in), as PyTorch
  readonly bias: Parameter | null;
  constructor(b: ParameterBuilder, name: string, readonly inFeatures: number, readonly outFeatures: number, opts: { bias?: boolean; std?: number } = {}) {
    super();
    this.weight = this.addParameter('weight', b.declare(`${name}.weight`, [outFeatures, inFeatures], { kind: 'normal', std: opts.std ?? 0.02 }, true));
    this.bias = opts.bias === false ? null : this.addParameter('bias', b.declare(`${name}.bias`, [outFeatures], { kind: 'zeros' }, false));
  }
  forward(x: Tensor, activation: 'none' | 'gelu' = 'none'): Tensor {
    return ops.linear(x, this.weight.value, this.bias?.value ?? null, activation);
  }
}

export class LayerNorm extends Module {
  readonly weight: Parameter;
  readonly bias: Parameter;
  constructor(b: ParameterBuilder, name: string, dim: number, readonly eps = 1e-5) {
    super();
    this.weight = this.addParameter('weight', b.declare(`${name}.weight`, [dim], { kind: 'ones' }, false));
    this.bias = this.addParameter('bias', b.declare(`${name}.bias`, [dim], { kind: 'zeros' }, false));
  }
  forward(x: Tensor): Tensor {
    return ops.layerNorm(x, this.weight.value, this.bias.value, this.eps);
  }
}

export class Embedding extends Module {
  readonly weight: Parameter; // (num, dim)
  constructor(b: ParameterBuilder, name: string, readonly num: number, readonly dim: number, std = 0.02) {
    super();
    this.weight = this.addParameter('weight', b.declare(`${name}.weight`, [num, dim], { kind: 'normal', std }, false));
  }
  forward(ids: Tensor): Tensor {
    return ops.embedding(ids, this.weight.value);
  }
}

export interface AttentionConfig {
  dModel: number;
  heads: number;
  /** K/V heads (GQA; 1 = MQA). Default: heads. */
  kvHeads?: number;
  bias?: boolean;
  causal?: boolean;
  /** Whether this block has its own K/V projections (false for blocks used only by layers that reuse another
   * layer's K and V under cross-layer KV sharing). Default true. */
  ownKV?: boolean;
}

/** Pre-LN self-attention sub-layer: LayerNorm, Q/K/V projections, flash attention, output projection. */
export class MultiHeadAttention extends Module {
  readonly ln: LayerNorm;
  readonly wq: Linear;
  readonly wk: Linear | null;
  readonly wv: Linear | null;
  readonly wo: Linear;
  readonly heads: number;
  readonly kvHeads: number;
  readonly causal: boolean;
  constructor(b: ParameterBuilder, name: string, c: AttentionConfig) {
    super();
    this.heads = c.heads;
    this.kvHeads = c.kvHeads ?? c.heads;
    this.causal = c.causal ?? true;
    const dh = c.dModel / c.heads;
    const bias = c.bias ?? true;
    this.ln = this.addModule('ln', new LayerNorm(b, `${name}.ln`, c.dModel));
    this.wq = this.addModule('wq', new Linear(b, `${name}.wq`, c.dModel, c.dModel, { bias }));
    const ownKV = c.ownKV ?? true;
    this.wk = ownKV ? this.addModule('wk', new Linear(b, `${name}.wk`, c.dModel, this.kvHeads * dh, { bias })) : null;
    this.wv = ownKV ? this.addModule('wv', new Linear(b, `${name}.wv`, c.dModel, this.kvHeads * dh, { bias })) : null;
    this.wo = this.addModule('wo', new Linear(b, `${name}.wo`, c.dModel, c.dModel, { bias }));
  }

  /** K and V (B, Hkv, T, Dh) of the normalised input h = ln(x). */
  keysValues(h: Tensor): { k: Tensor; v: Tensor } {
    if (!this.wk || !this.wv) throw new Error('MultiHeadAttention: this block has no K/V projections (it reuses another layer\'s K and V)');
    return { k: ops.splitHeads(this.wk.forward(h), this.kvHeads), v: ops.splitHeads(this.wv.forward(h), this.kvHeads) };
  }

  /**
   * x (B, T, C) -> the sub-layer's output (B, T, C), without the residual. With `kv`, reuses those keys and values
   * (cross-layer K/V sharing) instead of computing its own; returns the K/V it used.
   */
  forward(x: Tensor, kv?: { k: Tensor; v: Tensor }): { out: Tensor; kv: { k: Tensor; v: Tensor } } {
    const h = this.ln.forward(x);
    const q = ops.splitHeads(this.wq.forward(h), this.heads);
    const used = kv ?? this.keysValues(h);
    const o = ops.attention(q, used.k, used.v, { causal: this.causal });
    return { out: this.wo.forward(ops.mergeHeads(o)), kv: used };
  }
}

/** Pre-LN feed-forward sub-layer: LayerNorm, Linear + GELU (fused), Linear. */
export class FeedForward extends Module {
  readonly ln: LayerNorm;
  readonly fc1: Linear;
  readonly fc2: Linear;
  constructor(b: ParameterBuilder, name: string, dModel: number, dFF: number, bias = true) {
    super();
    this.ln = this.addModule('ln', new LayerNorm(b, `${name}.ln`, dModel));
    this.fc1 = this.addModule('fc1', new Linear(b, `${name}.fc1`, dModel, dFF, { bias }));
    this.fc2 = this.addModule('fc2', new Linear(b, `${name}.fc2`, dFF, dModel, { bias }));
  }
  forward(x: Tensor): Tensor {
    return this.fc2.forward(this.fc1.forward(this.ln.forward(x), 'gelu'));
  }
}
