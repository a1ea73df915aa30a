// seq2seq.ts — the encoder–decoder (sequence to sequence) with cross-attention, and encoder–decoder sharing (Tied
// Transformers, Xia et al. 2019): with shareEncoderDecoder the decoder's self-attention and FFN blocks ARE the
// encoder's blocks (run with a causal mask), so the two stacks hold one set of weights; each decoder layer keeps its
// own cross-attention. One token embedding serves source, target and the output head (tied by default).
//
//   src (B, S) -> encoder stack (bidirectional, source padding masked) -> LayerNorm -> memory (B, S, C)
//   tgt (B, T) -> for each decoder layer: causal self-attention, cross-attention over memory, FFN -> LayerNorm -> logits
import { Module } from '../nn/module.ts';
import { LayerNorm, MultiHeadAttention } from '../nn/layers.ts';
import { ParameterBuilder, ParameterStore } from '../params.ts';
import { Tensor, tensor, type Device } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { scope, track } from '../autograd.ts';
import { makePlan, type SharingConfig, type SharingPlan } from '../sharing/plan.ts';
import { BlockStack, Model, TokenIO, checkDims, checkIds, checkTargets, idsShape, persistingL2Summary, type Dims } from './stack.ts';
import { checkInt, checkKeys, checkOptions } from '../validate.ts';

/**
 * The shape of an EncoderDecoder: sizes, depths, sharing of each side and whether the decoder reuses the encoder
 * blocks.
 */
export interface EncoderDecoderConfig {
  vocab: number;
  dModel: number;
  heads: number;
  kvHeads?: number;
  dFF: number;
  encoderLayers: number;
  decoderLayers: number;
  maxSeq: number;
  /**
   * The encoder's sharing plan. With basis or delta sharing, the shared W_S of each role belongs to the encoder stack
   * ('enc.basis.<role>.weight'); a decoder with basis or delta sharing has its own ('dec.basis.<role>.weight', of its
   * own rank).
   */
  sharing?: Partial<SharingConfig>;
  /** The decoder's own plan (not with shareEncoderDecoder, where the decoder follows the encoder's). */
  decoderSharing?: Partial<SharingConfig>;
  /**
   * Decoder self-attention and FFN reuse the encoder's blocks (needs encoderLayers == decoderLayers): the only way to
   * share weights, basis or delta W_S included, across the two stacks.
   */
  shareEncoderDecoder?: boolean;
  tiedEmbeddings?: boolean;
  bias?: boolean;
  seed?: number;
  device?: Device;
}

/**
 * A sequence-to-sequence Transformer (encoder, decoder with cross-attention) with cross-layer and optional encoder-
 * decoder sharing.
 */
export class EncoderDecoder extends Model {
  readonly dims: Dims & { encoderLayers: number; decoderLayers: number; tiedEmbeddings: boolean; shared: boolean };
  readonly encoderPlan: SharingPlan;
  readonly decoderPlan: SharingPlan;
  readonly store: ParameterStore;
  readonly encoder: BlockStack;
  readonly decoder: BlockStack;
  readonly cross: MultiHeadAttention[] = [];
  readonly lnEnc: LayerNorm;
  readonly lnDec: LayerNorm;
  readonly io: TokenIO;

  constructor(config: EncoderDecoderConfig) {
    super();
    const d = checkDims('EncoderDecoder', config as unknown as Record<string, unknown>);
    checkKeys('EncoderDecoder', config, [
      'vocab', 'dModel', 'heads', 'kvHeads', 'dFF', 'encoderLayers', 'decoderLayers', 'maxSeq', 'sharing', 'decoderSharing',
      'shareEncoderDecoder', 'tiedEmbeddings', 'bias', 'seed', 'device',
    ], 'config key');
    const encoderLayers = checkInt('EncoderDecoder', config.encoderLayers, 'encoderLayers', 1);
    const decoderLayers = checkInt('EncoderDecoder', config.decoderLayers, 'decoderLayers', 1);
    const shared = config.shareEncoderDecoder ?? false;
    if (shared && encoderLayers !== decoderLayers)
      throw new RangeError(`EncoderDecoder: shareEncoderDecoder needs as many decoder as encoder layers, got ${encoderLayers} and ${decoderLayers}`);
    if (shared && config.decoderSharing)
      throw new TypeError(
        `EncoderDecoder: decoderSharing cannot be combined with shareEncoderDecoder (the decoder reuses the encoder's blocks, and with basis or delta sharing its W_S, so it follows the encoder's plan and rank; got decoderSharing ${JSON.stringify(config.decoderSharing)})`,
      );
    this.dims = { ...d, encoderLayers, decoderLayers, tiedEmbeddings: config.tiedEmbeddings ?? true, shared };
    const planDims = { dModel: d.dModel, dFF: d.dFF, kvDim: d.kvHeads * (d.dModel / d.heads) };
    this.encoderPlan = makePlan(config.sharing, encoderLayers, planDims);
    this.decoderPlan = shared ? this.encoderPlan : makePlan(config.decoderSharing, decoderLayers, planDims);
    const b = new ParameterBuilder();
    const add = { add: <M extends Module>(n: string, m: M) => this.addModule(n, m) };
    this.io = new TokenIO(add, b, d, { tied: this.dims.tiedEmbeddings }, () => this.store.device);
    this.encoder = new BlockStack(add, b, 'enc.', this.encoderPlan, d, false);
    this.decoder = shared ? this.encoder : new BlockStack(add, b, 'dec.', this.decoderPlan, d, true);
    for (let l = 0; l < decoderLayers; l++)
      this.cross.push(this.addModule(`cross.${l}`, new MultiHeadAttention(b, `cross.${l}`, { dModel: d.dModel, heads: d.heads, kvHeads: d.kvHeads, bias: d.bias, causal: false })));
    this.lnEnc = this.addModule('ln_enc', new LayerNorm(b, 'ln_enc', d.dModel));
    this.lnDec = this.addModule('ln_dec', new LayerNorm(b, 'ln_dec', d.dModel));
    this.io.declareOutput(add, b);
    this.store = new ParameterStore(b, { device: config.device ?? 'cpu', seed: config.seed ?? 0 });
  }

  /** src (B, S) -> memory (B, S, C). srcLengths: the unpadded length of each source. */
  encode(src: Tensor, srcLengths?: Tensor): Tensor {
    checkIds('EncoderDecoder.encode', src, this.dims.maxSeq);
    return this.lnEnc.forward(this.encoder.run(this.io.embed(src), { keyLengths: srcLengths, causal: false }));
  }

  /** Logits (B, T, V) of the target tokens given the source. */
  forward(src: Tensor, tgt: Tensor, options?: { srcLengths?: number[] }): Tensor {
    options = checkOptions('EncoderDecoder.forward', options);
    const [B, S] = checkIds('EncoderDecoder.forward', src, this.dims.maxSeq);
    const [Bt] = checkIds('EncoderDecoder.forward', tgt, this.dims.maxSeq);
    if (B !== Bt) throw new RangeError(`EncoderDecoder.forward: source batch ${B} differs from target batch ${Bt}`);
    const sl = options.srcLengths;
    if (sl !== undefined && (!Array.isArray(sl) || sl.length !== B || sl.some((x) => !Number.isInteger(x) || x < 1 || x > S)))
      throw new RangeError(`EncoderDecoder.forward: srcLengths must be ${B} integers in [1, ${S}], got ${JSON.stringify(sl)}`);
    // a scope frees the pass's tensors (the key lengths included) but the logits; what attention's backward needs is
    // pinned by the tape while it records
    return scope(() => {
      const kl = sl === undefined ? undefined : track(tensor(Int32Array.from(sl), [B], { device: this.store.device }));
      const memory = this.encode(src, kl);
      const between = (l: number, h: Tensor) => ops.add(h, this.cross[l].forward(h, undefined, { memory, keyLengths: kl }).out);
      const h = this.lnDec.forward(this.decoder.run(this.io.embed(tgt), { causal: true, between }));
      return this.io.logits(h);
    });
  }

  /**
   * As Module.loadStateDict, and also reads a state dict saved before the shared W_S of basis / delta sharing carried
   * its stack's prefix: an old 'basis.<role>.weight' (one W_S that both stacks used) goes to each stack's
   * '<stack>.basis.<role>.weight' it names, which reproduces the old model exactly. Every entry is still checked before
   * anything is written.
   */
  override loadStateDict(sd: Record<string, Tensor>): void {
    if (typeof sd !== 'object' || sd === null || Array.isArray(sd)) return super.loadStateDict(sd);
    const names = new Set(this.store.parameters.map((p) => p.name));
    let mapped: Record<string, Tensor> | null = null;
    for (const k of Object.keys(sd)) {
      if (names.has(k) || !/^(basis|delta)\./.test(k)) continue;
      const to = ['enc.', 'dec.'].map((s) => s + k).filter((n) => names.has(n) && !Object.hasOwn(sd, n));
      if (to.length === 0) continue;
      mapped ??= { ...sd };
      delete mapped[k];
      for (const n of to) mapped[n] = sd[k];
    }
    super.loadStateDict(mapped ?? sd);
  }

  /** Mean next-token cross-entropy of forward(src, tgtIn) against tgtOut (B, T) (ignoreIndex -100). */
  loss(src: Tensor, tgtIn: Tensor, tgtOut: Tensor, options: { srcLengths?: number[] } = {}): Tensor {
    const shape = idsShape(tgtIn);
    if (shape) checkTargets('EncoderDecoder.loss', tgtOut, shape); // before the forward pass records anything
    return scope(() => this.tokenLoss(this.forward(src, tgtIn, options), tgtOut, 'EncoderDecoder.loss')); // frees the logits
  }


  /**
   * Both stacks' per-layer blocks (and which are the encoder's), then unique parameters and bytes, and whether the
   * shared-weight persisting-L2 window is in effect on the model's device (when not, why).
   */
  summary(): string {
    const lines = [`EncoderDecoder: encoder ${this.encoderPlan.describe()}`];
    lines.push(this.dims.shared ? '  decoder: self-attention and FFN blocks are the encoder\'s (run causally), own cross-attention per layer' : `  decoder: ${this.decoderPlan.describe()}, own cross-attention per layer`);
    lines.push(`  unique parameters   ${this.numParameters.toLocaleString('en-US')}`);
    lines.push(`  parameter bytes     ${this.store.bytes.toLocaleString('en-US')}`);
    lines.push(`  applied depth       ${this.dims.encoderLayers} encoder + ${this.dims.decoderLayers} decoder layers`);
    lines.push(`  persisting L2       ${persistingL2Summary(this.store.device, [this.encoderPlan, this.decoderPlan])}`);
    return lines.join('\n');
  }
}
