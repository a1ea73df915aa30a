// encoder.ts — the bidirectional encoder (BERT/ALBERT-style, pre-LN) with cross-layer parameter sharing, a masked-LM
// head (tied to the token embedding by default) and an optional sequence-classification head on the first position.
//
//   ids (B, T) -> token + position embedding -> plan-indexed blocks (no causal mask; keys past keyLengths[b] masked)
//   -> final LayerNorm -> hidden (B, T, C) -> MLM logits (B, T, V) | class logits (B, classes) from position 0
import { Module } from '../nn/module.ts';
import { LayerNorm, Linear, type Activation } from '../nn/layers.ts';
import { ParameterBuilder, ParameterStore } from '../params.ts';
import { Tensor, tensor, type Device } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { scope, track } from '../autograd.ts';
import { makePlan, type SharingConfig, type SharingPlan } from '../sharing/plan.ts';
import { accountEncoder, type Accounting } from '../sharing/accounting.ts';
import { BlockStack, Model, TokenIO, checkDims, STACK_CONFIG_KEYS, checkIds, checkNorm, checkTargets, formatSummary, idsShape, persistingL2Summary, type Dims } from './stack.ts';
import { checkInt, checkKeys, checkNumber, checkOptions, describe } from '../validate.ts';
import type { StackConfig } from './stack.ts';

/**
 * An encoder's configuration: the shared StackConfig fields, plus an optional classification head and the parts of
 * BERT and ALBERT (token types, embedding LayerNorm, no final LayerNorm, LayerNorm epsilon, exact GELU, the MLM
 * prediction head, the pooler) — what fromPretrained sets for those checkpoints (docs/models.md).
 */
export interface EncoderConfig extends StackConfig {
  /** Adds a classification head with this many classes (on the first position, as BERT's [CLS]). */
  numClasses?: number;
  /** Token-type (segment) embeddings with this many types (BERT and ALBERT: 2); encode() takes `tokenTypes`. */
  typeVocab?: number;
  /**
   * A LayerNorm over the summed embeddings (BERT, ALBERT). Token, position and type embeddings then have the embedding
   * width (factorizedEmbedding when set) and the projection to dModel comes after the norm, as in ALBERT. Default false.
   */
  embeddingNorm?: boolean;
  /** The LayerNorm after the last layer (default true; BERT and ALBERT, post-LN, have none). */
  finalNorm?: boolean;
  /** Epsilon of every LayerNorm (default 1e-5; BERT and ALBERT: 1e-12). */
  layerNormEps?: number;
  /** The feed-forward (and MLM head) activation: 'gelu_tanh' (default) or 'gelu_erf' (BERT's exact GELU). */
  activation?: Activation;
  /** The MLM prediction head: dense -> activation -> LayerNorm -> output matrix + bias (BERT, ALBERT). Default false. */
  mlmTransform?: boolean;
  /** BERT's pooler before the classifier: tanh(W h[CLS] + b). Default false. */
  pooler?: boolean;
}

/** The keys of EncoderConfig. */
export const ENCODER_CONFIG_KEYS = [...STACK_CONFIG_KEYS, 'numClasses', 'typeVocab', 'embeddingNorm', 'finalNorm', 'layerNormEps', 'activation', 'mlmTransform', 'pooler'] as const;

/** Options of Encoder.encode() and the losses built on it. */
export interface EncodeOptions {
  /** int32 [B] (or numbers): keys at positions >= keyLengths[b] are padding. */
  keyLengths?: Tensor | number[];
  depth?: number;
  /** int32 (B, T): the token type of each position (needs typeVocab; default all 0). */
  tokenTypes?: Tensor;
}

function checkBool(v: unknown, name: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw new TypeError(`Encoder: ${name} must be a boolean, got ${describe(v)}`);
  return v;
}

/**
 * A bidirectional (BERT / ALBERT-style) encoder with padding masks, masked-LM and classification heads, and cross-layer
 * sharing.
 */
export class Encoder extends Model {
  readonly dims: Dims & {
    layers: number; tiedEmbeddings: boolean; numClasses: number; factorizedEmbedding?: number; norm: 'pre' | 'post';
    typeVocab?: number; embeddingNorm: boolean; finalNorm: boolean; layerNormEps: number; activation: Activation;
    mlmTransform: boolean; pooler: boolean;
  };
  readonly plan: SharingPlan;
  readonly store: ParameterStore;
  readonly stack: BlockStack;
  /** The final LayerNorm; null with finalNorm false. */
  readonly lnF: LayerNorm | null;
  readonly io: TokenIO;
  readonly pooler: Linear | null;
  readonly classifier: Linear | null;

  constructor(config: EncoderConfig) {
    super();
    const d = checkDims('Encoder', config as unknown as Record<string, unknown>);
    checkKeys('Encoder', config, ENCODER_CONFIG_KEYS, 'config key');
    const layers = checkInt('Encoder', config.layers, 'layers', 1);
    const numClasses = config.numClasses === undefined ? 0 : checkInt('Encoder', config.numClasses, 'numClasses', 2);
    const E = config.factorizedEmbedding === undefined ? undefined : checkInt('Encoder', config.factorizedEmbedding, 'factorizedEmbedding', 1);
    const typeVocab = config.typeVocab === undefined ? undefined : checkInt('Encoder', config.typeVocab, 'typeVocab', 1);
    const eps = config.layerNormEps === undefined ? 1e-5 : checkNumber('Encoder', config.layerNormEps, 'layerNormEps', { min: Number.MIN_VALUE });
    const activation = config.activation ?? 'gelu_tanh';
    if (activation !== 'gelu_tanh' && activation !== 'gelu_erf') throw new TypeError(`Encoder: activation must be 'gelu_tanh' or 'gelu_erf', got ${describe(activation)}`);
    this.dims = {
      ...d, layers, tiedEmbeddings: checkBool(config.tiedEmbeddings, 'tiedEmbeddings', true), numClasses, factorizedEmbedding: E,
      norm: checkNorm('Encoder', config.norm), typeVocab, embeddingNorm: checkBool(config.embeddingNorm, 'embeddingNorm', false),
      finalNorm: checkBool(config.finalNorm, 'finalNorm', true), layerNormEps: eps, activation,
      mlmTransform: checkBool(config.mlmTransform, 'mlmTransform', false), pooler: checkBool(config.pooler, 'pooler', false),
    };
    if (this.dims.pooler && !numClasses) throw new RangeError('Encoder: pooler needs a classification head (numClasses): the pooler feeds it');
    this.plan = makePlan(config.sharing, layers, { dModel: d.dModel, dFF: d.dFF, kvDim: d.kvHeads * (d.dModel / d.heads) });
    const b = new ParameterBuilder();
    const add = { add: <M extends Module>(n: string, m: M) => this.addModule(n, m) };
    const dm = this.dims;
    this.io = new TokenIO(add, b, d, {
      tied: dm.tiedEmbeddings, factorized: E, types: typeVocab, normEps: dm.embeddingNorm ? eps : undefined,
      mlm: dm.mlmTransform ? { activation, eps } : undefined,
    }, () => this.store.device);
    this.stack = new BlockStack(add, b, '', this.plan, d, false, dm.norm, { eps, activation });
    this.lnF = dm.finalNorm ? this.addModule('ln_f', new LayerNorm(b, 'ln_f', d.dModel, eps)) : null;
    this.io.declareOutput(add, b);
    this.pooler = dm.pooler ? this.addModule('pooler', new Linear(b, 'pooler', d.dModel, d.dModel)) : null;
    this.classifier = numClasses ? this.addModule('cls', new Linear(b, 'cls', d.dModel, numClasses)) : null;
    this.store = new ParameterStore(b, { device: config.device ?? 'cpu', seed: config.seed ?? 0 });
  }

  private lengths(B: number, T: number, kl: Tensor | number[] | undefined): Tensor | undefined {
    if (kl === undefined || kl instanceof Tensor) return kl;
    if (!Array.isArray(kl) || kl.length !== B || kl.some((x) => !Number.isInteger(x) || x < 0 || x > T))
      throw new RangeError(`Encoder: keyLengths must be ${B} integers in [0, ${T}], got ${JSON.stringify(kl)}`);
    return track(tensor(Int32Array.from(kl), [B], { device: this.store.device })); // the encode pass's scope frees it
  }

  /** Checks token types: int32 (B, T) with values in [0, typeVocab), on an encoder that has them. */
  private types(B: number, T: number, tt: unknown): Tensor | undefined {
    if (tt === undefined) return undefined;
    const n = this.dims.typeVocab;
    if (n === undefined) throw new TypeError('Encoder: tokenTypes given, but this encoder has no token-type embeddings (set typeVocab)');
    if (!(tt instanceof Tensor) || tt.dtype !== 'int32' || tt.rank !== 2 || tt.shape[0] !== B || tt.shape[1] !== T)
      throw new TypeError(`Encoder: tokenTypes must be an int32 Tensor of shape [${B}, ${T}] (as the ids), got ${tt instanceof Tensor ? tt.toString() : describe(tt)}`);
    // the embedding lookup checks every id against the table's rows on its stream (an out-of-range type fails the op)
    return tt;
  }

  /** ids (B, T) -> hidden states (B, T, C) after the final LayerNorm (after the last layer when finalNorm is false). */
  encode(ids: Tensor, options?: EncodeOptions): Tensor {
    options = checkOptions('Encoder.encode', options, ['keyLengths', 'depth', 'tokenTypes']);
    const [B, T] = checkIds('Encoder', ids, this.dims.maxSeq);
    const o = options;
    const types = this.types(B, T, o.tokenTypes);
    // a scope frees the pass's tensors (key lengths made here included) but its output; what attention's backward
    // needs is pinned by the tape while it records
    return scope(() => {
      const kl = this.lengths(B, T, o.keyLengths);
      const h = this.stack.run(this.io.embed(ids, undefined, types), { depth: o.depth, keyLengths: kl });
      return this.lnF ? this.lnF.forward(h) : h;
    });
  }

  /** Masked-LM logits (B, T, V). */
  mlmLogits(ids: Tensor, options: EncodeOptions = {}): Tensor {
    return scope(() => this.io.logits(this.encode(ids, options)));
  }

  /** Mean cross-entropy of the MLM logits over positions whose target is not -100 (the unmasked ones). */
  mlmLoss(ids: Tensor, targets: Tensor, options: EncodeOptions = {}): Tensor {
    const shape = idsShape(ids);
    if (shape) checkTargets('Encoder.mlmLoss', targets, shape); // before the forward pass records anything
    return scope(() => this.tokenLoss(this.mlmLogits(ids, options), targets, 'Encoder.mlmLoss')); // frees the logits
  }

  /** Class logits (B, numClasses) from the first position's hidden state. */
  classify(ids: Tensor, options: EncodeOptions = {}): Tensor {
    if (!this.classifier) throw new Error('Encoder.classify: this encoder has no classification head (set numClasses)');
    const classifier = this.classifier;
    return scope(() => {
      const h = this.encode(ids, options);
      const [B, T, C] = h.shape;
      const first = track(tensor(Int32Array.from({ length: B }, (_, i) => i * T), [B], { device: this.store.device }));
      const cls = ops.embedding(first, ops.reshape(h, [B * T, C])); // row b * T of the flattened states
      return classifier.forward(this.pooler ? ops.tanh(this.pooler.forward(cls)) : cls);
    });
  }

  /** Mean cross-entropy of classify() against labels int32 [B]. */
  classificationLoss(ids: Tensor, labels: Tensor, options: EncodeOptions = {}): Tensor {
    const shape = idsShape(ids);
    if (shape) checkTargets('Encoder.classificationLoss', labels, [shape[0]], 'labels', 'one per sequence'); // before the forward pass
    return scope(() => ops.crossEntropy(this.classify(ids, options), labels)); // frees the logits
  }

  /** Unique parameters, bytes, applied depth and FLOPs per token of this encoder (at `depth` layers when given). */
  accounting(options: { depth?: number } = {}): Accounting {
    const d = this.dims;
    return accountEncoder({ ...d, tiedEmbeddings: d.tiedEmbeddings, factorizedEmbedding: d.factorizedEmbedding, numClasses: d.numClasses }, this.plan, options);
  }

  /**
   * Per-layer blocks, unique parameters, bytes, applied depth, FLOPs per token (KV cache: none, an encoder caches
   * nothing), and whether the shared-weight persisting-L2 window is in effect on the model's device (when not, why).
   */
  summary(options: { depth?: number } = {}): string {
    return formatSummary('Encoder', this.plan, this.accounting(options), persistingL2Summary(this.store.device, [this.plan], options.depth));
  }
}
