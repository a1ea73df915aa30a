// decoder.ts — the decoder-only language model (GPT-style, pre-LN) with cross-layer parameter sharing.
//
//   ids (B, T) -> token embedding + learned positions -> for each applied layer l:
//        h = h + attention[plan(l).attention](h)   (K/V from layer plan(l).kvSource under cross-layer KV sharing)
//        h = h + ffn[plan(l).ffn](h)
//   -> final LayerNorm -> head (tied to the token embedding by default) -> logits (B, T, V)
//
// Unique blocks are built once; layers index them through the SharingPlan, so a shared block's parameters are one set
// of views into the ParameterStore and its gradient views receive the sum of every use.
import { Module } from '../nn/module.ts';
import { BasisLinear, DeltaLinear, Embedding, FeedForward, LayerNorm, Linear, MultiHeadAttention, plainLinear, type LinearFactory } from '../nn/layers.ts';
import { ParameterBuilder, ParameterStore } from '../params.ts';
import { Tensor, tensor } from '../tensor.ts';
import type { Device } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { loadCheckpoint, saveCheckpoint, type CheckpointMeta } from '../io/checkpoint.ts';
import { appliedLayers, kvProjectionBlocks, makePlan, type SharingConfig, type SharingPlan } from '../sharing/plan.ts';
import { accountDecoder, type Accounting } from '../sharing/accounting.ts';
import { generate, type GenerateOptions } from './generate.ts';

export interface DecoderConfig {
  vocab: number;
  dModel: number;
  heads: number;
  /** K/V heads: fewer than heads shares each K/V head among a group of query heads (GQA; 1 = MQA). */
  kvHeads?: number;
  dFF: number;
  layers: number;
  maxSeq: number;
  sharing?: Partial<SharingConfig>;
  /** Output head tied to the token embedding (Press & Wolf). Default true. */
  tiedEmbeddings?: boolean;
  bias?: boolean;
  /** Parameter initialisation seed (Philox; the same values on every device). */
  seed?: number;
  device?: Device;
}

function checkInt(v: unknown, name: string, lo: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new TypeError(`Decoder: ${name} must be an integer, got ${String(v)}`);
  if (v < lo) throw new RangeError(`Decoder: ${name} must be at least ${lo}, got ${v}`);
  return v;
}

export class Decoder extends Module {
  readonly config: Required<Omit<DecoderConfig, 'sharing' | 'seed' | 'device'>> & { sharing: Partial<SharingConfig> };
  readonly plan: SharingPlan;
  readonly store: ParameterStore;
  readonly tok: Embedding;
  readonly pos: Embedding;
  readonly attn: MultiHeadAttention[];
  readonly ffn: FeedForward[];
  readonly lnF: LayerNorm;
  readonly head: Linear | null;
  private positions = new Map<string, Tensor>();

  constructor(config: DecoderConfig) {
    super();
    if (typeof config !== 'object' || config === null) throw new TypeError('Decoder: config must be an object');
    const vocab = checkInt(config.vocab, 'vocab', 1);
    const dModel = checkInt(config.dModel, 'dModel', 1);
    const heads = checkInt(config.heads, 'heads', 1);
    const kvHeads = checkInt(config.kvHeads ?? heads, 'kvHeads', 1);
    const dFF = checkInt(config.dFF, 'dFF', 1);
    const layers = checkInt(config.layers, 'layers', 1);
    const maxSeq = checkInt(config.maxSeq, 'maxSeq', 1);
    if (dModel % heads) throw new RangeError(`Decoder: dModel (${dModel}) must be a multiple of heads (${heads})`);
    if (heads % kvHeads) throw new RangeError(`Decoder: heads (${heads}) must be a multiple of kvHeads (${kvHeads})`);
    this.plan = makePlan(config.sharing, layers, { dModel, dFF, kvDim: kvHeads * (dModel / heads) });
    const tied = config.tiedEmbeddings ?? true;
    const bias = config.bias ?? true;
    this.config = { vocab, dModel, heads, kvHeads, dFF, layers, maxSeq, tiedEmbeddings: tied, bias, sharing: config.sharing ?? {} };

    const b = new ParameterBuilder();
    this.tok = this.addModule('tok', new Embedding(b, 'tok', vocab, dModel));
    this.pos = this.addModule('pos', new Embedding(b, 'pos', maxSeq, dModel));
    const ownsKV = new Set(kvProjectionBlocks(this.plan));
    // basis / delta: every block (one per layer) makes its projections from a weight shared across layers per role
    const rank = this.plan.rank ?? 0;
    const linear: LinearFactory =
      this.plan.strategy === 'basis'
        ? (bb, name, role, i, o, opts) => new BasisLinear(bb, name, role, i, o, rank, opts)
        : this.plan.strategy === 'delta'
          ? (bb, name, role, i, o, opts) => new DeltaLinear(bb, name, role, i, o, rank, opts)
          : plainLinear;
    this.attn = [];
    for (let i = 0; i < this.plan.uniqueAttention; i++)
      this.attn.push(this.addModule(`attn.${i}`, new MultiHeadAttention(b, `attn.${i}`, { dModel, heads, kvHeads, bias, causal: true, ownKV: ownsKV.has(i), linear })));
    this.ffn = [];
    for (let i = 0; i < this.plan.uniqueFfn; i++) this.ffn.push(this.addModule(`ffn.${i}`, new FeedForward(b, `ffn.${i}`, dModel, dFF, bias, linear)));
    this.lnF = this.addModule('ln_f', new LayerNorm(b, 'ln_f', dModel));
    this.head = tied ? null : this.addModule('head', new Linear(b, 'head', dModel, vocab, { bias: false }));
    this.store = new ParameterStore(b, { device: config.device ?? 'cpu', seed: config.seed ?? 0 });
  }

  private positionIds(B: number, T: number): Tensor {
    const key = `${B}x${T}`;
    let p = this.positions.get(key);
    if (!p) {
      const a = new Int32Array(B * T);
      for (let i = 0; i < B * T; i++) a[i] = i % T;
      p = tensor(a, [B, T], { device: this.store.device });
      this.positions.set(key, p);
    }
    return p;
  }

  /** ids int32 (B, T) -> logits (B, T, vocab). `depth` applies a shared stack for another number of layers. */
  forward(ids: Tensor, options: { depth?: number } = {}): Tensor {
    if (!(ids instanceof Tensor)) throw new TypeError('Decoder.forward: ids must be a Tensor');
    if (ids.dtype !== 'int32' || ids.rank !== 2) throw new TypeError(`Decoder.forward: ids must be int32 of shape [B, T], got ${ids.toString()}`);
    const [B, T] = ids.shape;
    if (T > this.config.maxSeq) throw new RangeError(`Decoder.forward: sequence length ${T} exceeds the model's maximum ${this.config.maxSeq}`);
    if (T === 0 || B === 0) throw new RangeError(`Decoder.forward: empty batch ${ids.toString()}`);
    let h = ops.add(this.tok.forward(ids), this.pos.forward(this.positionIds(B, T)));
    const layers = appliedLayers(this.plan, options.depth);
    const kvOf: { k: Tensor; v: Tensor }[] = [];
    layers.forEach((lp, l) => {
      const reuse = lp.kvSource !== l ? kvOf[lp.kvSource] : undefined;
      const { out, kv } = this.attn[lp.attention].forward(h, reuse);
      kvOf[l] = kv;
      h = ops.add(h, out);
      h = ops.add(h, this.ffn[lp.ffn].forward(h));
    });
    h = this.lnF.forward(h);
    return this.head ? this.head.forward(h) : ops.linear(h, this.tok.weight.value, null);
  }

  /** The mean next-token cross-entropy of logits(ids) against targets (B, T) (ignoreIndex -100). */
  loss(ids: Tensor, targets: Tensor, options: { depth?: number } = {}): Tensor {
    const logits = this.forward(ids, options);
    const [B, T, V] = logits.shape;
    const flat = targets.view([B * T]);
    const loss = ops.crossEntropy(ops.reshape(logits, [B * T, V]), flat);
    flat.dispose();
    return loss;
  }

  /**
   * Generates up to options.maxNewTokens token ids after `prompt` (int32 [T0] or [1, T0], or an array of ids) over a
   * KV cache, under noGrad: greedy with temperature 0, else sampled (topK, topP, seeded). Stops early after options.eos.
   * The prompt plus maxNewTokens must fit in maxSeq (else RangeError). Resolves to the new ids, without the prompt.
   * See lib/models/generate.ts.
   */
  generate(prompt: Tensor | number[], options: GenerateOptions): Promise<number[]> {
    return generate(this, prompt, options);
  }

  /** Unique parameters (the store's size). */
  get numParameters(): number {
    return this.store.numel;
  }

  zeroGrad(): void {
    this.store.zeroGrad();
  }

  /** Closed-form accounting of this model (optionally at a run-time depth): parameters, bytes, FLOPs, KV cache. */
  accounting(options: { depth?: number } = {}): Accounting {
    const c = this.config;
    return accountDecoder(
      { vocab: c.vocab, dModel: c.dModel, heads: c.heads, kvHeads: c.kvHeads, dFF: c.dFF, layers: c.layers, maxSeq: c.maxSeq, tiedEmbeddings: c.tiedEmbeddings, bias: c.bias },
      this.plan,
      options,
    );
  }

  /**
   * A printable summary: per applied layer, which attention block (and whose K/V) and which FFN block it uses; then
   * unique parameters, parameter bytes, applied depth, FLOPs per token and KV-cache bytes per token.
   */
  summary(options: { depth?: number } = {}): string {
    const a = this.accounting(options);
    const lines = [`Decoder: ${this.plan.describe()}`];
    for (const l of a.perLayer)
      lines.push(`  layer ${String(l.layer).padStart(2)}: attention block ${l.attention}${l.kvSource !== l.layer ? ` (K/V of layer ${l.kvSource})` : ''}, ffn block ${l.ffn}`);
    lines.push(`  unique parameters   ${a.uniqueParameters.toLocaleString('en-US')}`);
    lines.push(`  parameter bytes     ${a.parameterBytes.toLocaleString('en-US')} (gradients the same; AdamW state twice that)`);
    lines.push(`  applied depth       ${a.appliedDepth}`);
    lines.push(`  FLOPs per token     ${a.flopsPerToken.toLocaleString('en-US')} (forward)`);
    lines.push(`  KV cache per token  ${a.kvCacheBytesPerToken.toLocaleString('en-US')} bytes`);
    return lines.join('\n');
  }

  private meta(): CheckpointMeta {
    const { sharing, ...dims } = this.config;
    return {
      model: 'decoder',
      config: JSON.stringify(dims),
      plan: JSON.stringify({ sharing, layers: this.plan.layers }),
    };
  }

  /** Saves the parameters (each unique tensor once) atomically as safetensors, config and plan in __metadata__. */
  save(path: string): void {
    saveCheckpoint(path, this.store, this.meta());
  }

  /** Loads parameters saved by save(); refuses a file whose config or sharing plan differs, or that is corrupt. */
  load(path: string): void {
    loadCheckpoint(path, this.store, this.meta());
  }
}
