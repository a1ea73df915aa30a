// encoder.ts — the bidirectional encoder (BERT/ALBERT-style, pre-LN) with cross-layer parameter sharing, a masked-LM
// head (tied to the token embedding by default) and an optional sequence-classification head on the first position.
//
//   ids (B, T) -> token + position embedding -> plan-indexed blocks (no causal mask; keys past keyLengths[b] masked)
//   -> final LayerNorm -> hidden (B, T, C) -> MLM logits (B, T, V) | class logits (B, classes) from position 0
import { Module } from '../nn/module.ts';
import { LayerNorm, Linear } from '../nn/layers.ts';
import { ParameterBuilder, ParameterStore } from '../params.ts';
import { Tensor, tensor, type Device } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { scope, track } from '../autograd.ts';
import { makePlan, type SharingConfig, type SharingPlan } from '../sharing/plan.ts';
import { accountEncoder, type Accounting } from '../sharing/accounting.ts';
import { BlockStack, Model, TokenIO, checkDims, STACK_CONFIG_KEYS, checkIds, checkNorm, checkTargets, formatSummary, idsShape, persistingL2Summary, type Dims } from './stack.ts';
import { checkInt, checkKeys, checkOptions } from '../validate.ts';
import type { StackConfig } from './stack.ts';

/** An encoder's configuration: the shared StackConfig fields, plus an optional classification head. */
export interface EncoderConfig extends StackConfig {
  /** Adds a classification head with this many classes (on the first position, as BERT's [CLS]). */
  numClasses?: number;
}

/** Options of Encoder.encode() and the losses built on it. */
export interface EncodeOptions {
  /** int32 [B] (or numbers): keys at positions >= keyLengths[b] are padding. */
  keyLengths?: Tensor | number[];
  depth?: number;
}

/**
 * A bidirectional (BERT / ALBERT-style) encoder with padding masks, masked-LM and classification heads, and cross-layer
 * sharing.
 */
export class Encoder extends Model {
  readonly dims: Dims & { layers: number; tiedEmbeddings: boolean; numClasses: number; factorizedEmbedding?: number; norm: 'pre' | 'post' };
  readonly plan: SharingPlan;
  readonly store: ParameterStore;
  readonly stack: BlockStack;
  readonly lnF: LayerNorm;
  readonly io: TokenIO;
  readonly classifier: Linear | null;

  constructor(config: EncoderConfig) {
    super();
    const d = checkDims('Encoder', config as unknown as Record<string, unknown>);
    checkKeys('Encoder', config, [...STACK_CONFIG_KEYS, 'numClasses'], 'config key');
    const layers = checkInt('Encoder', config.layers, 'layers', 1);
    const numClasses = config.numClasses === undefined ? 0 : checkInt('Encoder', config.numClasses, 'numClasses', 2);
    const E = config.factorizedEmbedding === undefined ? undefined : checkInt('Encoder', config.factorizedEmbedding, 'factorizedEmbedding', 1);
    this.dims = { ...d, layers, tiedEmbeddings: config.tiedEmbeddings ?? true, numClasses, factorizedEmbedding: E, norm: checkNorm('Encoder', config.norm) };
    this.plan = makePlan(config.sharing, layers, { dModel: d.dModel, dFF: d.dFF, kvDim: d.kvHeads * (d.dModel / d.heads) });
    const b = new ParameterBuilder();
    const add = { add: <M extends Module>(n: string, m: M) => this.addModule(n, m) };
    this.io = new TokenIO(add, b, d, { tied: this.dims.tiedEmbeddings, factorized: E }, () => this.store.device);
    this.stack = new BlockStack(add, b, '', this.plan, d, false, this.dims.norm);
    this.lnF = this.addModule('ln_f', new LayerNorm(b, 'ln_f', d.dModel));
    this.io.declareOutput(add, b);
    this.classifier = numClasses ? this.addModule('cls', new Linear(b, 'cls', d.dModel, numClasses)) : null;
    this.store = new ParameterStore(b, { device: config.device ?? 'cpu', seed: config.seed ?? 0 });
  }

  private lengths(B: number, T: number, kl: Tensor | number[] | undefined): Tensor | undefined {
    if (kl === undefined || kl instanceof Tensor) return kl;
    if (!Array.isArray(kl) || kl.length !== B || kl.some((x) => !Number.isInteger(x) || x < 0 || x > T))
      throw new RangeError(`Encoder: keyLengths must be ${B} integers in [0, ${T}], got ${JSON.stringify(kl)}`);
    return track(tensor(Int32Array.from(kl), [B], { device: this.store.device })); // the encode pass's scope frees it
  }

  /** ids (B, T) -> hidden states (B, T, C) after the final LayerNorm. */
  encode(ids: Tensor, options?: EncodeOptions): Tensor {
    options = checkOptions('Encoder.encode', options);
    const [B, T] = checkIds('Encoder', ids, this.dims.maxSeq);
    const o = options;
    // a scope frees the pass's tensors (key lengths made here included) but its output; what attention's backward
    // needs is pinned by the tape while it records
    return scope(() => {
      const kl = this.lengths(B, T, o.keyLengths);
      return this.lnF.forward(this.stack.run(this.io.embed(ids), { depth: o.depth, keyLengths: kl }));
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
      return classifier.forward(cls);
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
    return accountEncoder({ ...d, tiedEmbeddings: d.tiedEmbeddings, factorizedEmbedding: d.factorizedEmbedding }, this.plan, options);
  }

  /**
   * Per-layer blocks, unique parameters, bytes, applied depth, FLOPs per token (KV cache: none, an encoder caches
   * nothing), and whether the shared-weight persisting-L2 window is in effect on the model's device (when not, why).
   */
  summary(options: { depth?: number } = {}): string {
    return formatSummary('Encoder', this.plan, this.accounting(options), persistingL2Summary(this.store.device, [this.plan], options.depth));
  }
}
