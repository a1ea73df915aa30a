// stack.ts — what every model shares: checked dimensions, the token + learned-position input, and a stack of unique
// attention and FFN blocks indexed per layer by a SharingPlan.
import { Module } from '../nn/module.ts';
import { PARAM_ALIGN, type Parameter, type ParameterStore } from '../params.ts';
import { BasisLinear, DeltaLinear, Embedding, FeedForward, LayerNorm, Linear, MlmHead, MultiHeadAttention, plainLinear, type Activation, type LinearFactory } from '../nn/layers.ts';
import type { ParameterBuilder } from '../params.ts';
import { Tensor, tensor, type Device } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import * as K from '../kernels.ts';
import { handOver, scope, track } from '../autograd.ts';
import { native } from '../native.ts';
import { appliedLayers, kvProjectionBlocks, type LayerPlan, type SharingConfig, type SharingPlan } from '../sharing/plan.ts';
import type { Accounting } from '../sharing/accounting.ts';
import { checkInt, checkObject } from '../validate.ts';

/** The configuration every single-stack model (Decoder, Encoder) shares. */
export interface StackConfig {
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
  /** Factorized embedding size E (ALBERT): a V x E table and an E -> dModel projection. */
  factorizedEmbedding?: number;
  /** Where the LayerNorms sit: 'pre' (default; the sub-layer normalises its input) or 'post' (after each residual sum). */
  norm?: 'pre' | 'post';
  bias?: boolean;
  /** Parameter initialisation seed (Philox; the same values on every device). */
  seed?: number;
  device?: Device;
}

/** The sizes shared by the models: vocabulary, widths, heads and sequence length. */
export interface Dims {
  vocab: number;
  dModel: number;
  heads: number;
  kvHeads: number;
  dFF: number;
  maxSeq: number;
  bias: boolean;
}

/** The keys of StackConfig (Decoder's config; Encoder adds numClasses). */
export const STACK_CONFIG_KEYS = [
  'vocab', 'dModel', 'heads', 'kvHeads', 'dFF', 'layers', 'maxSeq', 'sharing', 'tiedEmbeddings', 'factorizedEmbedding',
  'norm', 'bias', 'seed', 'device',
] as const;

/** Validates the dimensions every model has (integers, dModel % heads, heads % kvHeads). */
export function checkDims(who: string, c: Partial<Dims> & Record<string, unknown>): Dims {
  checkObject(who, c, 'config');
  const heads = checkInt(who, c.heads, 'heads', 1);
  const d: Dims = {
    vocab: checkInt(who, c.vocab, 'vocab', 1),
    dModel: checkInt(who, c.dModel, 'dModel', 1),
    heads,
    kvHeads: checkInt(who, c.kvHeads ?? heads, 'kvHeads', 1),
    dFF: checkInt(who, c.dFF, 'dFF', 1),
    maxSeq: checkInt(who, c.maxSeq, 'maxSeq', 1),
    bias: c.bias ?? true,
  };
  if (d.dModel % d.heads) throw new RangeError(`${who}: dModel (${d.dModel}) must be a multiple of heads (${d.heads})`);
  if (d.heads % d.kvHeads) throw new RangeError(`${who}: heads (${d.heads}) must be a multiple of kvHeads (${d.kvHeads})`);
  return d;
}

/** 'pre' (default) or 'post', else a TypeError naming the model. */
export function checkNorm(who: string, v: unknown): 'pre' | 'post' {
  if (v === undefined) return 'pre';
  if (v !== 'pre' && v !== 'post') throw new TypeError(`${who}: norm must be 'pre' or 'post', got ${JSON.stringify(v)}`);
  return v;
}

/** Checks a batch of token ids: int32 (B, T), non-empty, T <= maxSeq. */
export function checkIds(who: string, ids: unknown, maxSeq: number): [number, number] {
  if (!(ids instanceof Tensor)) throw new TypeError(`${who}: ids must be a Tensor`);
  if (ids.dtype !== 'int32' || ids.rank !== 2) throw new TypeError(`${who}: ids must be int32 of shape [B, T], got ${ids.toString()}`);
  const [B, T] = ids.shape;
  if (T > maxSeq) throw new RangeError(`${who}: sequence length ${T} exceeds the model's maximum ${maxSeq}`);
  if (T === 0 || B === 0) throw new RangeError(`${who}: empty batch ${ids.toString()}`);
  return [B, T];
}

/** What a TokenIO has besides the token table and positions (the Encoder's options; a Decoder uses tied/factorized). */
export interface TokenIOOptions {
  tied: boolean;
  /** E: a V x E table and an E -> d projection (ALBERT). */
  factorized?: number;
  /** Token-type (segment) embeddings: this many types (BERT and ALBERT: 2). */
  types?: number;
  /**
   * A LayerNorm over the sum of the embeddings (BERT, ALBERT), with this epsilon. Token, type and position embeddings
   * then all have the embedding width (E when factorized) and are summed and normalised before the projection to d,
   * as ALBERT does; without it positions (and types) are added after the projection, in width d.
   */
  normEps?: number;
  /** The masked-LM prediction head (BERT, ALBERT): dense -> activation -> LayerNorm -> output matrix + bias. */
  mlm?: { activation: Activation; eps: number };
}

/**
 * The model's edges: token embedding (optionally factorized, ALBERT: V x E then a projection E -> d), learned
 * positions, optional token types and embedding LayerNorm, and the output head — tied to the token embedding by
 * default (Press & Wolf), through an own d -> E projection when factorized, or an untied V x d matrix; or BERT's
 * prediction head (MlmHead) before the output matrix. Position-id tensors are cached per (B, T).
 */
export class TokenIO {
  readonly tok: Embedding;
  readonly pos: Embedding;
  readonly type: Embedding | null; // token types, options.types only
  readonly norm: LayerNorm | null; // over the summed embeddings, options.normEps only
  readonly inProj: Linear | null; // E -> d, factorized only
  outProj: Linear | null = null; // d -> E, factorized and tied only (without the MLM head)
  head: Linear | null = null; // d (or the MLM head's width) -> V, untied only
  mlm: MlmHead | null = null;
  private positions = new Map<string, Tensor>();
  /** Declares the input side (tok, pos, type, emb_ln, tok_proj); declareOutput() declares the head after the blocks. */
  constructor(
    owner: { add: <M extends Module>(name: string, m: M) => M },
    b: ParameterBuilder,
    private d: Dims,
    private o: TokenIOOptions,
    private device: () => Device,
  ) {
    const E = o.factorized;
    // with the embedding LayerNorm everything is summed in the embedding width, else positions and types in d
    const added = o.normEps !== undefined ? E ?? d.dModel : d.dModel;
    this.tok = owner.add('tok', new Embedding(b, 'tok', d.vocab, E ?? d.dModel));
    this.pos = owner.add('pos', new Embedding(b, 'pos', d.maxSeq, added));
    this.type = o.types !== undefined ? owner.add('type', new Embedding(b, 'type', o.types, added)) : null;
    this.norm = o.normEps !== undefined ? owner.add('emb_ln', new LayerNorm(b, 'emb_ln', added, o.normEps)) : null;
    this.inProj = E !== undefined ? owner.add('tok_proj', new Linear(b, 'tok_proj', E, d.dModel, { bias: d.bias })) : null;
  }
  /** Declares the output side: the MLM head, head_proj (factorized and tied) or head (untied); nothing when simply tied. */
  declareOutput(owner: { add: <M extends Module>(name: string, m: M) => M }, b: ParameterBuilder): void {
    const { d, o } = this;
    const width = o.mlm ? o.factorized ?? d.dModel : d.dModel;
    if (o.mlm) this.mlm = owner.add('mlm', new MlmHead(b, 'mlm', d.dModel, width, d.vocab, o.mlm.activation, o.mlm.eps));
    else if (o.factorized !== undefined && o.tied) this.outProj = owner.add('head_proj', new Linear(b, 'head_proj', d.dModel, o.factorized, { bias: d.bias }));
    if (!o.tied) this.head = owner.add('head', new Linear(b, 'head', width, d.vocab, { bias: false }));
  }
  /** Forgets cached position ids (after the model moved to another device). */
  clearCache(): void {
    for (const p of this.positions.values()) p.dispose();
    this.positions.clear();
  }

  /**
   * ids (B, T) -> token + position (+ type) embeddings (B, T, d); positions 0..T-1 unless given (int32 (B, T)); token
   * types (int32 (B, T), checked by the caller) 0 unless given.
   */
  embed(ids: Tensor, positions?: Tensor, types?: Tensor): Tensor {
    const [B, T] = ids.shape;
    let p = positions;
    if (!p) {
      const key = `${B}x${T}`;
      p = this.positions.get(key);
      if (!p) {
        const a = new Int32Array(B * T);
        for (let i = 0; i < B * T; i++) a[i] = i % T;
        p = tensor(a, [B, T], { device: this.device() });
        this.positions.set(key, p);
      }
    }
    const pos = p;
    return scope(() => {
      const typeTable = this.type;
      // (token + type) + position, as transformers' BertEmbeddings and AlbertEmbeddings sum them; type 0 by default
      const withType = (x: Tensor) => (typeTable ? ops.add(x, typeTable.forward(types ?? this.zeroTypes(B, T))) : x);
      const t = this.tok.forward(ids);
      if (this.norm) {
        const e = this.norm.forward(ops.add(withType(t), this.pos.forward(pos)));
        return this.inProj ? this.inProj.forward(e) : e;
      }
      return ops.add(withType(this.inProj ? this.inProj.forward(t) : t), this.pos.forward(pos));
    });
  }
  /** int32 zeros (B, T): the token types when none are given (the scope of the pass frees them). */
  private zeroTypes(B: number, T: number): Tensor {
    return track(tensor(new Int32Array(B * T), [B, T], { device: this.device() }));
  }
  /** h (..., d) -> logits (..., V). */
  logits(h: Tensor): Tensor {
    if (this.mlm) {
      const out = this.head ? this.head.weight.value : this.tok.weight.value;
      return this.mlm.forward(h, out);
    }
    if (this.head) return this.head.forward(h);
    return scope(() => ops.linear(this.outProj ? this.outProj.forward(h) : h, this.tok.weight.value, null));
  }
}

/**
 * The linear-layer factory a plan calls for: plain, or factored over a per-role shared weight (basis, delta). The
 * shared weight belongs to one stack: its name starts with the stack's prefix ('enc.basis.attn.wq.weight'), so the
 * two stacks of an EncoderDecoder each have their own (they share one only as one stack, with shareEncoderDecoder).
 */
export function linearFor(plan: SharingPlan, stack = ''): LinearFactory {
  const r = plan.rank ?? 0;
  if (plan.strategy === 'basis') return (b, name, role, i, o, opts) => new BasisLinear(b, name, role, i, o, r, { ...opts, stack });
  if (plan.strategy === 'delta') return (b, name, role, i, o, opts) => new DeltaLinear(b, name, role, i, o, r, { ...opts, stack });
  return plainLinear;
}

/** n rounded up to the alignment of parameter offsets. */
function alignUp(n: number): number {
  return Math.ceil(n / PARAM_ALIGN) * PARAM_ALIGN;
}

/** Whether two applied layers use the same attention and FFN blocks. */
function sameBlocks(a: { attention: number; ffn: number } | undefined, b: { attention: number; ffn: number } | undefined): boolean {
  return !!a && !!b && a.attention === b.attention && a.ffn === b.ffn;
}

/** Whether some consecutive layers of the plan (at `depth`) apply the same blocks: the runs a persisting-L2 window serves. */
export function hasSharedRuns(plan: SharingPlan, depth?: number): boolean {
  const layers = appliedLayers(plan, depth);
  return layers.some((lp, l) => l > 0 && sameBlocks(layers[l - 1], lp));
}

/**
 * The parameters a persisting-L2 window over `params` covers: a window is ONE contiguous range of the flat parameter
 * buffer and must cover exactly the tensors passed (kernels.persistL2 refuses a gap), so of the parameters (each once,
 * ordered by offset, adjacent ones merged) the largest contiguous run, the first of equals. With plan 'all' a run's
 * attention and FFN blocks are adjacent (declared one after the other), so this is all of them; with 'sequence' and
 * several unique blocks, attention block i and FFN block i are apart (all attention blocks are declared first), and
 * so are factored layers' shared weights, so it is the larger contiguous part (usually the FFN block). "Contiguous"
 * counts the alignment padding between adjacent parameters (PARAM_ALIGN) as part of the run: the window passed to
 * persistL2 is then one tensor over the run's bytes, padding included (ParameterStore.span).
 */
export function l2Span(params: readonly Parameter[]): Parameter[] {
  const sorted = [...new Set(params)].filter((p) => p.size > 0).sort((a, b) => a.offset - b.offset);
  let best: Parameter[] = [], bestSize = 0;
  let run: Parameter[] = [], runSize = 0, end = -1;
  const close = () => {
    if (runSize > bestSize) [best, bestSize] = [run, runSize];
  };
  // Parameters never overlap: a run continues where the previous one ends, rounded up to the 128-byte alignment of
  // every offset (PARAM_ALIGN): the padding between adjacent parameters holds no parameter, so it is not a gap.
  for (const p of sorted) {
    if (run.length && p.offset !== alignUp(end)) {
      close();
      [run, runSize] = [[], 0];
    }
    run.push(p);
    runSize += p.size;
    end = p.offset + p.size;
  }
  close();
  return best;
}

/**
 * The persisting-L2 line of a model's summary(): whether the shared-weight window is in effect on the model's device
 * and, when not, why (the device's state comes from backends(); see docs/gpu.md).
 */
export function persistingL2Summary(device: Device, plans: readonly SharingPlan[], depth?: number): string {
  if (!plans.some((p) => hasSharedRuns(p, depth))) return 'not used (no consecutive layers apply the same blocks)';
  if (device === 'cpu') return 'not used (the model is on the CPU; persisting L2 is a CUDA feature)';
  const index = device === 'cuda' ? 0 : Number(device.slice('cuda:'.length));
  const d = native().backends().cuda.devices.find((x) => x.index === index);
  if (!d) return `inactive on ${device}: the device is not reported by backends()`;
  const l2 = d.persistingL2;
  if (!l2.active) return `inactive on ${device}: ${l2.reason ?? 'no reason reported'}`;
  return `active on ${device} (set-aside ${l2.setAsideBytes.toLocaleString('en-US')} bytes; ${l2.windows.toLocaleString('en-US')} windows so far, ` +
    `the last ${l2.lastWindowBytes.toLocaleString('en-US')} bytes with hit ratio ${+l2.lastHitRatio.toFixed(3)}; window now: ${l2.window})`;
}

/** Called by BlockStack.run before each applied layer (withLayerHook). */
export type LayerHook = (stack: BlockStack, layer: number, plan: LayerPlan) => void;
let layerHook: LayerHook | null = null;

/**
 * Runs fn with `hook` called by every BlockStack.run before each layer it applies (nested calls replace the hook for
 * their duration). Distributed training uses it to learn, during the forward pass, where each layer starts on the
 * tape, so that the gradients of the blocks a layer is the first to use can be reduced as soon as that layer's
 * backward has run (lib/distributed/data-parallel.ts).
 */
export function withLayerHook<T>(hook: LayerHook, fn: () => T): T {
  const prev = layerHook;
  layerHook = hook;
  try {
    return fn();
  } finally {
    layerHook = prev;
  }
}

/** The unique blocks of one stack, registered on `owner` under `${prefix}attn.i` and `${prefix}ffn.i`. */
export class BlockStack {
  readonly attn: MultiHeadAttention[] = [];
  readonly ffn: FeedForward[] = [];
  constructor(
    owner: { add: <M extends Module>(name: string, m: M) => M },
    b: ParameterBuilder,
    prefix: string,
    readonly plan: SharingPlan,
    d: Dims,
    readonly causal: boolean,
    readonly norm: 'pre' | 'post' = 'pre',
    o: { eps?: number; activation?: Activation } = {},
  ) {
    const ownsKV = new Set(kvProjectionBlocks(plan));
    const linear = linearFor(plan, prefix);
    for (let i = 0; i < plan.uniqueAttention; i++)
      this.attn.push(owner.add(`${prefix}attn.${i}`, new MultiHeadAttention(b, `${prefix}attn.${i}`, { dModel: d.dModel, heads: d.heads, kvHeads: d.kvHeads, bias: d.bias, causal, ownKV: ownsKV.has(i), linear, norm, eps: o.eps })));
    for (let i = 0; i < plan.uniqueFfn; i++)
      this.ffn.push(owner.add(`${prefix}ffn.${i}`, new FeedForward(b, `${prefix}ffn.${i}`, d.dModel, d.dFF, d.bias, linear, norm, o)));
  }

  /**
   * Applies the plan's layers to h (B, T, C): residual sub-layers, pre-LN or post-LN. `between(l, h)` runs after layer l's
   * attention (the encoder–decoder's cross-attention goes there). This is the one layer loop: training, evaluation
   * and incremental decoding all run it. With `kv` (decoding one sequence, B = 1), each layer that computes its own
   * K/V writes them into its slot of the cache at kv.pos, and attends as MultiHeadAttention.forward says (the prompt
   * at pos 0 causally; one later position with causal false and keyLengths [pos + 1], which the caller passes).
   *
   * Each sub-layer runs in its own scope (autograd.ts): what it makes is freed when it ends, except its output (and
   * K/V a later layer reuses), so inference holds one layer's intermediates at a time; recorded tensors are pinned by
   * the tape and survive. The input h stays the caller's.
   */
  run(h: Tensor, o: { depth?: number; keyLengths?: Tensor; causal?: boolean; between?: (l: number, h: Tensor) => Tensor; kv?: KVCache } = {}): Tensor {
    const layers = appliedLayers(this.plan, o.depth);
    const kv = o.kv;
    if (kv && kv.layers.length !== layers.length)
      throw new RangeError(`BlockStack.run: the KV cache has ${kv.layers.length} layers, the plan applies ${layers.length}`);
    const reused = new Set(layers.filter((lp, l) => lp.kvSource !== l).map((lp) => lp.kvSource));
    const causal = o.causal ?? this.causal;
    return scope(() => {
      const kvOf: { k: Tensor; v: Tensor }[] = [];
      // Shared weights on chip (CUDA): while consecutive layers apply the same attention and FFN blocks (plans 'all',
      // 'sequence'), those blocks' parameters persist in L2 for the run of layers, so the second and later layers read
      // them from L2 instead of HBM. A window is one contiguous range of the flat parameter buffer and covers exactly
      // the bytes passed: l2Span picks the largest contiguous part of the blocks' parameters (all of them with plan
      // 'all', whose one attention and one FFN block are declared one after the other), alignment padding counted as
      // contiguous. When the store keeps a bf16 copy the window is over the copy's bytes of that run (half as many).
      // A no-op on the CPU; best effort on CUDA (backends() and summary() say whether it is in effect).
      const onCuda = h.device !== 'cpu';
      let persisting = false;
      try {
        layers.forEach((lp, l) => {
          if (onCuda) {
            const inRun = sameBlocks(layers[l - 1], lp) || sameBlocks(lp, layers[l + 1]);
            if (inRun && !sameBlocks(layers[l - 1], lp)) {
              // one tensor over the run's bytes (the alignment padding between its parameters included): of the store's
              // bf16 copy when it keeps one (what bf16 matmuls read while it is current), else of the fp32 values
              const span = l2Span([...this.attn[lp.attention].parameters(), ...this.ffn[lp.ffn].parameters()]);
              const store = span[0]?._store;
              if (store) {
                const win = store.span(span, store.bf16Copy ? 'bf16' : 'values');
                persisting = K.persistL2(win) || persisting;
                win.dispose();
              }
            } else if (!inRun && persisting) {
              K.persistL2(null);
              persisting = false;
            }
          }
          layerHook?.(this, l, lp);
          const attn = this.attn[lp.attention], ffn = this.ffn[lp.ffn];
          const reuse = lp.kvSource !== l ? kvOf[lp.kvSource] : undefined;
          const slot = kv && !reuse ? kv.layers[l] : null;
          const a = scope(() => {
            handOver(h); // the previous layer's output is freed with this sub-layer's scope (the caller's input is not)
            const r = attn.forward(h, reuse, { keyLengths: o.keyLengths, causal, cache: slot ? { k: slot.k, v: slot.v, pos: kv!.pos, at: kv!.at } : undefined });
            const sum = attn.residual(h, r.out);
            return { h: o.between ? o.between(l, sum) : sum, kv: reused.has(l) ? r.kv : null };
          });
          if (a.kv) kvOf[l] = a.kv;
          h = scope(() => {
            handOver(a.h);
            return ffn.residual(a.h, ffn.forward(a.h));
          });
        });
      } finally {
        if (persisting) K.persistL2(null);
      }
      return h;
    });
  }
}

/**
 * The KV cache of one sequence being decoded (lib/models/generate.ts), as BlockStack.run reads it: per applied layer,
 * the K and V (1, Hkv, capacity, Dh) it writes, or null for a layer that reuses another layer's (cross-layer KV
 * sharing); and the position of the first position of the h that run() is given.
 */
export interface KVCache {
  readonly layers: readonly ({ k: Tensor; v: Tensor } | null)[];
  readonly pos: number;
  /** pos as an int32 tensor [1] that kvAppend reads when it runs (a recorded decode step; DecodeSession). */
  readonly at?: Tensor;
}

/** What every model shares: its ParameterStore and TokenIO, moving, counting, zeroing, and the token loss. */
export abstract class Model extends Module {
  abstract readonly store: ParameterStore;
  abstract readonly io: TokenIO;

  /** Moves every parameter (the one flat buffer, its gradients and decay mask) to `device`, like nn.Module.to. */
  to(device: Device): this {
    this.store.moveTo(device, `${this.constructor.name}.to`);
    this.io.clearCache();
    return this;
  }

  /** The one flat buffer of unique parameters (and gradients): `.bytes`, `.table()`, `.parameters`. */
  get parameterStore(): ParameterStore {
    return this.store;
  }

  /** Unique parameters (the store's size). */
  get numParameters(): number {
    return this.store.numel;
  }

  /** Zeroes every gradient: one fill over the flat gradient buffer. */
  zeroGrad(): void {
    this.store.zeroGrad();
  }

  /**
   * Mean cross-entropy of logits (B, T, V) against targets (B, T); targets equal to -100 do not count. `who` names the
   * public method in errors.
   */
  protected tokenLoss(logits: Tensor, targets: Tensor, who = 'loss'): Tensor {
    const [B, T] = logits.shape;
    checkTargets(who, targets, [B, T]);
    // (B, T, V) logits against (B, T) targets as they are: the loss op takes (..., V), and its dlogits becomes the
    // logits' gradient directly (no reshape recorded, whose backward would copy dlogits into a second buffer)
    return ops.crossEntropy(logits, targets);
  }
}

/**
 * Checks a loss's targets: an int32 Tensor of exactly `shape` (the ids' [B, T]); a tensor with the right number of
 * elements in another shape is refused too. Run before the forward pass when the ids' shape is known.
 */
export function checkTargets(who: string, targets: unknown, shape: readonly number[], name = 'targets', as = 'as the ids'): void {
  const want = `[${shape.join(', ')}]`;
  if (!(targets instanceof Tensor)) throw new TypeError(`${who}: ${name} must be an int32 Tensor of shape ${want}`);
  if (targets.disposed) throw new Error(`${who}: ${name} has been disposed`);
  if (targets.dtype !== 'int32') throw new TypeError(`${who}: ${name} must be int32 of shape ${want}, got ${targets.toString()}`);
  if (targets.shape.length !== shape.length || targets.shape.some((d, i) => d !== shape[i]))
    throw new RangeError(`${who}: ${name} must have shape ${want} (${as}), got [${targets.shape.join(', ')}]`);
}

/** The [B, T] of ids that look like a batch (an int32 rank-2 tensor), else undefined (the forward pass reports it). */
export function idsShape(ids: unknown): [number, number] | undefined {
  return ids instanceof Tensor && !ids.disposed && ids.rank === 2 ? [ids.shape[0], ids.shape[1]] : undefined;
}

/**
 * A printable summary: per applied layer, which attention block (and whose K/V) and which FFN block it uses; then
 * unique parameters, parameter bytes, applied depth, FLOPs per token and KV-cache bytes per token; then, when given,
 * whether the shared-weight L2 window is in effect (persistingL2Summary).
 */
export function formatSummary(title: string, plan: SharingPlan, a: Accounting, persistingL2?: string): string {
  const lines = [`${title}: ${plan.describe()}`];
  for (const l of a.perLayer)
    lines.push(`  layer ${String(l.layer).padStart(2)}: attention block ${l.attention}${l.kvSource !== l.layer ? ` (K/V of layer ${l.kvSource})` : ''}, ffn block ${l.ffn}`);
  lines.push(`  unique parameters   ${a.uniqueParameters.toLocaleString('en-US')}`);
  lines.push(`  parameter bytes     ${a.parameterBytes.toLocaleString('en-US')} (gradients the same; AdamW state twice that)`);
  lines.push(`  applied depth       ${a.appliedDepth}`);
  lines.push(`  FLOPs per token     ${a.flopsPerToken.toLocaleString('en-US')} (forward)`);
  lines.push(`  KV cache per token  ${a.kvCacheBytesPerToken.toLocaleString('en-US')} bytes`);
  if (persistingL2 !== undefined) lines.push(`  persisting L2       ${persistingL2}`);
  return lines.join('\n');
}
