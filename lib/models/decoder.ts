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
import { LayerNorm, type Embedding, type FeedForward, type Linear, type MultiHeadAttention } from '../nn/layers.ts';
import { ParameterBuilder, ParameterStore } from '../params.ts';
import { Tensor } from '../tensor.ts';
import type { Device } from '../tensor.ts';
import * as ops from '../ops/index.ts';
import { loadCheckpoint, saveCheckpoint, type CheckpointMeta } from '../io/checkpoint.ts';
import { readSafetensorsHeader, type SafeTensorInfo } from '../io/safetensors.ts';
import { statSync, type Stats } from 'node:fs';
import { makePlan, type SharingConfig, type SharingPlan } from '../sharing/plan.ts';
import { BlockStack, Model, TokenIO, checkDims, STACK_CONFIG_KEYS, checkIds, checkNorm, checkTargets, formatSummary, idsShape, persistingL2Summary } from './stack.ts';
import { checkInt, checkKeys, checkOptions } from '../validate.ts';
import type { StackConfig } from './stack.ts';
import { accountDecoder, type Accounting } from '../sharing/accounting.ts';
import { generate, generateStream, type GenerateOptions } from './generate.ts';
import { scope } from '../autograd.ts';

// declaredParameters(): the constructor runs (every check, every declaration) and stops before the store is allocated.
let declaring = false;
class Declared {
  constructor(readonly parameters: { name: string; shape: number[] }[]) {}
}

/**
 * The parameters (name and shape, in store order) a Decoder of this config would have, with the config checked exactly
 * as the constructor checks it (the same errors), but without allocating anything: what a checkpoint's tensors can be
 * compared with before a model is built for it.
 */
export function declaredParameters(config: DecoderConfig): { name: string; shape: number[] }[] {
  declaring = true;
  try {
    new Decoder(config);
  } catch (e) {
    if (e instanceof Declared) return e.parameters;
    throw e;
  } finally {
    declaring = false;
  }
  throw new Error('declaredParameters: the Decoder constructor did not stop before allocating');
}

/** The optimizer moments a Trainer checkpoint holds besides the parameters (Trainer.save). */
export const TRAINER_MOMENTS: readonly string[] = Object.freeze(['optimizer.m', 'optimizer.v']);

/**
 * Checks, from a checkpoint's header alone and before anything is allocated, that its tensors are the parameters of a
 * Decoder of `config`: the configuration is valid, there are no more unique blocks than tensors (so the check itself
 * stays small), the parameters' total size fits the file's tensors, and every parameter is there as F32 of its shape,
 * with nothing else beside a Trainer's optimizer moments (each of the parameters' size). Throws an Error whose message
 * starts with `where` (a RangeError or TypeError from the configuration's own checks is reported as "invalid model
 * configuration in its metadata").
 */
export function checkDecoderCheckpoint(where: string, config: DecoderConfig, tensors: ReadonlyMap<string, SafeTensorInfo>): void {
  let params: { name: string; shape: number[] }[];
  try {
    // The plan first (small: one entry per layer, layers <= MAX_LAYERS): a model declares a few parameters per unique
    // block, so more unique blocks than the file has tensors cannot be the file's model.
    const plan = makePlan(config.sharing, config.layers);
    if (plan.uniqueAttention + plan.uniqueFfn > tensors.size)
      throw new Error(`${where}: its metadata describes ${plan.uniqueAttention + plan.uniqueFfn} unique blocks, but the file holds only ${tensors.size} tensors`);
    params = declaredParameters(config);
  } catch (e) {
    if (e instanceof TypeError || e instanceof RangeError)
      throw new Error(`${where}: invalid model configuration in its metadata: ${String(e.message).split('\n')[0]}`);
    throw e;
  }
  const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
  const numel = params.reduce((a, p) => a + size(p.shape), 0);
  let fileNumel = 0;
  for (const [k, t] of tensors) if (!TRAINER_MOMENTS.includes(k)) fileNumel += size(t.shape);
  if (numel > fileNumel)
    throw new Error(`${where}: its metadata describes a model of ${numel.toLocaleString('en-US')} parameters (${(numel * 4).toLocaleString('en-US')} bytes), but the file's tensors hold ${fileNumel.toLocaleString('en-US')} values; not building it`);
  const declared = new Set(params.map((p) => p.name));
  for (const p of params) {
    const t = tensors.get(p.name);
    if (!t) throw new Error(`${where} lacks the parameter '${p.name}' that the model configuration in its metadata declares`);
    if (t.dtype !== 'F32') throw new Error(`${where}: '${p.name}' is ${t.dtype}, expected F32`);
    if (t.shape.join() !== p.shape.join())
      throw new Error(`${where}: '${p.name}' has shape [${t.shape.join(', ')}], but the model configuration in its metadata gives it [${p.shape.join(', ')}]`);
  }
  for (const [k, t] of tensors) {
    if (TRAINER_MOMENTS.includes(k)) {
      if (t.dtype !== 'F32' || t.shape.length !== 1 || t.shape[0] !== numel) throw new Error(`${where}: '${k}' is not F32 [${numel}] (the parameters' size)`);
    } else if (!declared.has(k)) throw new Error(`${where} has a tensor '${k}' that the model configuration in its metadata has no place for`);
  }
}

/** Options of Decoder.load. */
export interface DecoderLoadOptions {
  /** Where the model is built: 'cpu' (default), 'cuda' or 'cuda:N'. */
  device?: Device;
}

/** A decoder's configuration: the shared StackConfig fields (vocab, dModel, heads, sharing, ...). */
export type DecoderConfig = StackConfig;

/**
 * A causal (GPT-style) language model whose blocks are shared across layers as its sharing plan says; trains with
 * loss() and generates over a KV cache.
 */
export class Decoder extends Model {
  readonly config: Required<Omit<DecoderConfig, 'sharing' | 'seed' | 'device' | 'factorizedEmbedding'>> & {
    sharing: Partial<SharingConfig>;
    factorizedEmbedding?: number;
  };
  readonly plan: SharingPlan;
  readonly store: ParameterStore;
  /** Token embedding, positions and output head. */
  readonly io: TokenIO;
  /** The unique blocks, indexed per layer by the plan. */
  readonly stack: BlockStack;
  readonly lnF: LayerNorm;

  constructor(config: DecoderConfig) {
    super();
    const d = checkDims('Decoder', config as unknown as Record<string, unknown>);
    checkKeys('Decoder', config, STACK_CONFIG_KEYS, 'config key');
    const layers = checkInt('Decoder', config.layers, 'layers', 1);
    const E = config.factorizedEmbedding === undefined ? undefined : checkInt('Decoder', config.factorizedEmbedding, 'factorizedEmbedding', 1);
    this.plan = makePlan(config.sharing, layers, { dModel: d.dModel, dFF: d.dFF, kvDim: d.kvHeads * (d.dModel / d.heads) });
    const tied = config.tiedEmbeddings ?? true;
    const norm = checkNorm('Decoder', config.norm);
    this.config = { ...d, layers, tiedEmbeddings: tied, norm, sharing: config.sharing ?? {}, ...(E !== undefined ? { factorizedEmbedding: E } : {}) };
    const b = new ParameterBuilder();
    const add = { add: <M extends Module>(n: string, m: M) => this.addModule(n, m) };
    this.io = new TokenIO(add, b, d, { tied, factorized: E }, () => this.store.device);
    this.stack = new BlockStack(add, b, '', this.plan, d, true, norm);
    this.lnF = this.addModule('ln_f', new LayerNorm(b, 'ln_f', d.dModel));
    this.io.declareOutput(add, b);
    if (declaring) throw new Declared(b.parameters.map((p) => ({ name: p.name, shape: p.shape })));
    this.store = new ParameterStore(b, { device: config.device ?? 'cpu', seed: config.seed ?? 0 });
  }

  /** The token embedding. */
  get tok(): Embedding {
    return this.io.tok;
  }
  /** The learned position embedding. */
  get pos(): Embedding {
    return this.io.pos;
  }
  /** The output projection, or null when it is tied to the token embedding. */
  get head(): Linear | null {
    return this.io.head;
  }
  /** The unique attention blocks (layers that share a block share its entry). */
  get attn(): MultiHeadAttention[] {
    return this.stack.attn;
  }
  /** The unique feed-forward blocks. */
  get ffn(): FeedForward[] {
    return this.stack.ffn;
  }

  /** ids int32 (B, T) -> logits (B, T, vocab). `depth` applies a shared stack for another number of layers. */
  forward(ids: Tensor, options?: { depth?: number }): Tensor {
    options = checkOptions('Decoder.forward', options);
    checkIds('Decoder.forward', ids, this.config.maxSeq);
    const depth = options.depth;
    // a scope frees the pass's tensors but the logits (recorded ones are pinned by the tape until it is released)
    return scope(() => this.io.logits(this.lnF.forward(this.stack.run(this.io.embed(ids), { depth }))));
  }

  /** The mean next-token cross-entropy of logits(ids) against targets (B, T) (ignoreIndex -100). */
  loss(ids: Tensor, targets: Tensor, options: { depth?: number } = {}): Tensor {
    const shape = idsShape(ids);
    if (shape) checkTargets('Decoder.loss', targets, shape); // before the forward pass records anything
    return scope(() => this.tokenLoss(this.forward(ids, options), targets, 'Decoder.loss')); // frees the logits
  }

  /**
   * Generates up to options.maxNewTokens token ids after `prompt` (int32 [T0] or [1, T0], or an array of ids) over a
   * KV cache, under noGrad: greedy with temperature 0, else sampled (topK, topP, seeded). Stops early after options.eos.
   * The prompt plus maxNewTokens must fit in maxSeq (else RangeError), unless options.slide is true: then the context
   * window slides (windows of up to maxSeq / 2 new tokens, each a fresh pass over the last maxSeq - n tokens, as
   * `sharedformer generate` does). options.onTokens sees the new ids as they are made. Resolves to the new ids,
   * without the prompt. See lib/models/generate.ts.
   */
  generate(prompt: Tensor | number[], options: GenerateOptions): Promise<number[]> {
    return generate(this, prompt, options);
  }

  /**
   * The tokens of generate(prompt, options) as an async iterator, each yielded as soon as it is sampled (for servers
   * that stream tokens): `for await (const id of model.generateStream(prompt, { maxNewTokens: 64 })) ...`. The event
   * loop runs between tokens; breaking out of the loop stops decoding and frees its memory. Options are checked at the
   * call, the prompt when iteration starts.
   */
  generateStream(prompt: Tensor | number[], options: GenerateOptions): AsyncGenerator<number, void, undefined> {
    return generateStream(this, prompt, options);
  }


  /** Closed-form accounting of this model (optionally at a run-time depth): parameters, bytes, FLOPs, KV cache. */
  accounting(options: { depth?: number } = {}): Accounting {
    const c = this.config;
    return accountDecoder(
      { vocab: c.vocab, dModel: c.dModel, heads: c.heads, kvHeads: c.kvHeads, dFF: c.dFF, layers: c.layers, maxSeq: c.maxSeq, tiedEmbeddings: c.tiedEmbeddings, bias: c.bias, factorizedEmbedding: c.factorizedEmbedding },
      this.plan,
      options,
    );
  }

  /**
   * A printable summary: per applied layer, which attention block (and whose K/V) and which FFN block it uses; then
   * unique parameters, parameter bytes, applied depth, FLOPs per token and KV-cache bytes per token; then whether the
   * shared-weight persisting-L2 window is in effect on the model's device and, when not, why.
   */
  summary(options: { depth?: number } = {}): string {
    return formatSummary('Decoder', this.plan, this.accounting(options), persistingL2Summary(this.store.device, [this.plan], options.depth));
  }


  /** @internal The checkpoint identity of this model: kind, config and plan. */
  meta(): CheckpointMeta {
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

  /**
   * Builds the model a checkpoint holds (written by save(), Trainer.save or `sharedformer train`): its configuration and
   * sharing plan come from the file's metadata, are checked against the file's tensors before anything is allocated,
   * and the parameters are then loaded (a Trainer's optimizer moments are skipped). The model is in training mode, as
   * a new one is. PyTorch users rebuild the module and call load_state_dict; here the file says what to build.
   */
  static load(path: string, options: DecoderLoadOptions = {}): Decoder {
    const who = 'Decoder.load';
    if (typeof path !== 'string' || path === '') throw new TypeError(`${who}: path must be a non-empty string, got ${typeof path === 'string' ? 'an empty string' : path === null ? 'null' : typeof path}`);
    const o = checkOptions(who, options as DecoderLoadOptions | undefined, ['device']);
    let st: Stats;
    try {
      st = statSync(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new Error(`${who}: cannot read ${path}: ${code === 'ENOENT' ? 'no such file' : String((e as Error).message).split('\n')[0]}`);
    }
    if (st.isDirectory()) throw new Error(`${who}: cannot read ${path}: it is a directory`);
    let file: ReturnType<typeof readSafetensorsHeader>;
    try {
      file = readSafetensorsHeader(path);
    } catch (e) {
      throw new Error(`${who}: ${path} is not a readable safetensors checkpoint: ${String((e as Error).message).split('\n')[0]}`);
    }
    const md = file.metadata;
    if (md.format !== 'sharedformer') throw new Error(`${who}: ${path} is not a sharedformer checkpoint (metadata format = ${JSON.stringify(md.format)})`);
    if (md.model !== 'decoder') throw new Error(`${who}: ${path} holds a ${JSON.stringify(md.model)} model, not a decoder`);
    const parse = (key: 'config' | 'plan'): Record<string, unknown> => {
      let v: unknown;
      try {
        v = JSON.parse(md[key] ?? '');
      } catch {
        throw new Error(`${who}: ${path}: the ${key} in its metadata is not JSON`);
      }
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${who}: ${path}: the ${key} in its metadata is not a JSON object`);
      return v as Record<string, unknown>;
    };
    const dims = parse('config'), plan = parse('plan');
    const config = { ...dims, sharing: plan.sharing, device: o.device } as DecoderConfig;
    checkDecoderCheckpoint(`${who}: ${path}`, config, file.tensors);
    const model = new Decoder(config);
    try {
      const moments = new Map<string, Float32Array>();
      for (const k of TRAINER_MOMENTS) if (file.tensors.has(k)) moments.set(k, new Float32Array(file.tensors.get(k)!.shape[0]));
      loadCheckpoint(path, model.store, model.meta(), moments);
    } catch (e) {
      model.store.dispose();
      throw e;
    }
    return model;
  }
}
