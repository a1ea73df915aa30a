// trainer.ts — the training loop for a language model: batches by index, gradient accumulation, a schedule, clipping,
// AdamW over the flat buffer, evaluation, checkpoints that resume bit-exactly on the CPU, AbortSignal cancellation, and
// per-step events. Each step queues its kernels and then awaits the loss, so the event loop keeps running while the
// step computes: a server that trains in the background keeps answering requests.
import { EventEmitter } from 'node:events';
import { backward, noGrad, releaseTape, resolveStackedGrads, tidy, type StackedGradsOptions } from '../autograd.ts';
import { AdamW, clipGradNorm, warmupCosine, warmupLinear } from '../optim/index.ts';
import { sumSquares } from '../kernels.ts';
import { loadCheckpoint, saveCheckpoint, saveCheckpointAsync } from '../io/checkpoint.ts';
import type { Model } from '../models/stack.ts';
import type { CheckpointMeta } from '../io/checkpoint.ts';
import type { TokenDataset } from '../data/index.ts';
import { full, tensor, type Tensor } from '../tensor.ts';
import { native } from '../native.ts';
import { withPrecision } from '../ops/index.ts';
import { checkInt, checkObject, describe } from '../validate.ts';
import { axpby } from '../kernels.ts';
import * as dist from '../distributed/index.ts';
import { DataParallel, type DistributedOption, type CommPlan } from '../distributed/data-parallel.ts';
import { withLayerHook } from '../models/stack.ts';
import type { Precision } from '../kernels.ts';

/**
 * What a Trainer trains: a Model (lib/models/stack.ts: the flat ParameterStore, zeroGrad) that takes a batch of token
 * ids and its targets to a loss (a language model: Decoder), has a context and vocabulary, and describes itself for
 * checkpoints.
 */
export type TrainableModel = Model & {
  readonly config: { readonly maxSeq: number; readonly vocab: number };
  /** The mean token loss of ids (B, T) against targets (B, T), as a scalar tensor. */
  loss(ids: Tensor, targets: Tensor): Tensor;
  /** What a checkpoint records about the model (its kind, config and sharing plan). */
  meta(): CheckpointMeta;
};

/** How evaluate() samples the validation split: `batches` fixed batches of batchSize x seqLen, chosen by `seed`. */
export interface EvaluateOptions {
  batches: number;
  batchSize: number;
  seqLen: number;
  seed: number;
}

/**
 * Mean validation loss (nats per token) of `model` over fixed validation batches, without gradients; each forward
 * pass runs inside tidy(), so its intermediates are freed batch by batch. Trainer.evaluate uses it with the
 * trainer's batch shape and seed.
 */
export async function evaluate(model: TrainableModel, data: TokenDataset, o: EvaluateOptions): Promise<number> {
  checkObject('evaluate', o, 'options', ' {batches, batchSize, seqLen, seed}');
  for (const k of ['batches', 'batchSize', 'seqLen', 'seed'] as const) checkInt('evaluate', o[k], k, k === 'seed' ? 0 : 1, Number.MAX_SAFE_INTEGER);
  if (o.seqLen > model.config.maxSeq) throw new RangeError(`evaluate: seqLen ${o.seqLen} exceeds the model's maxSeq ${model.config.maxSeq}`);
  let sum = 0;
  for (let i = 0; i < o.batches; i++) {
    const { ids, targets } = data.batch('val', o.batchSize, o.seqLen, o.seed, i, model.store.device);
    const l = noGrad(() => tidy(() => model.loss(ids, targets))); // frees the pass's intermediates
    sum += (await l.data())[0];
    for (const t of [l, ids, targets]) t.dispose();
  }
  return sum / o.batches;
}

/** Options of a Trainer: steps, batch shape, optimizer, schedule, clipping, evaluation, checkpoints, cancellation. */
export interface TrainerOptions {
  /** Optimizer steps to reach. */
  steps: number;
  batchSize: number;
  /** Tokens per sequence (at most the model's maxSeq). */
  seqLen: number;
  lr: number;
  /** Final learning rate of the schedule (default lr / 10). */
  minLr?: number;
  /** Linear warmup steps (default 0). */
  warmup?: number;
  schedule?: 'cosine' | 'linear' | 'constant';
  weightDecay?: number;
  beta1?: number;
  beta2?: number;
  /** Clip the global gradient norm to this (default 1; 0 turns clipping off). */
  clip?: number;
  /** Micro-batches per optimizer step (gradient accumulation; default 1). */
  accumulate?: number;
  /** Evaluate every this many steps (0: only when asked). */
  evalEvery?: number;
  /** Validation batches per evaluation (default 20). */
  evalBatches?: number;
  /** Seed of the batch sampler. */
  seed?: number;
  /** Write a checkpoint to `path` every `every` steps and at the end (and when aborted). */
  checkpoint?: { path: string; every?: number };
  /**
   * Stops training cleanly between steps (after writing a checkpoint when configured). Distributed, every rank stops
   * after the same step: the step after the signal fires carries it to every rank (with the gathered losses), so one
   * more step runs.
   */
  signal?: AbortSignal;
  /**
   * What a NaN or infinite loss or gradient norm does (checked before the optimizer update, so the parameters and the
   * optimizer state are never touched by it): 'error' (default) rejects with an Error naming the step; 'skip' drops
   * the step (no update; the step still counts, so the next one sees the next batch) and emits 'skip'.
   */
  nonFinite?: 'error' | 'skip';
  /**
   * Arithmetic of the matmuls and attention on CUDA (ops.withPrecision): 'fp32' (default), 'tf32' or 'bf16' (tensor
   * cores, fp32 accumulation; parameters, gradients and optimizer state stay fp32). The CPU computes in fp32 always.
   */
  precision?: Precision;
  /**
   * Keep a bf16 copy of the flat parameter buffer (ParameterStore.enableBf16Copy): AdamW writes it in the same pass as
   * each update, and bf16 matmuls read the weights from it instead of converting them in every layer that uses them.
   * Default: on with precision 'bf16' on a CUDA model, off otherwise (the CPU computes in fp32 and does not read it).
   */
  bf16Copy?: boolean;
  /**
   * Stacked weight gradients for blocks shared across layers (backward()'s stackedGrads): true, false, or
   * { enabled, budgetBytes }. Default: off (STACKED_GRADS_DEFAULT: slower on the CPU, unmeasured on CUDA); 256 MiB budget.
   */
  stackedGrads?: boolean | StackedGradsOptions;
  /**
   * Data-parallel training over the ranks of an MPI job (docs/distributed.md; distributed.init() is called if it has
   * not been). true: plain data parallel — each rank runs `accumulate` micro-batches of its own (rank-strided over the
   * global batch index: rank r of W takes micro-batches k·W + r of each step), then one all-reduce of the flat
   * gradient buffer; W ranks with batch b train on exactly the batches of one process with accumulate W.
   * { zero: 1 }: ZeRO-1 — a reduce-scatter of the gradients, each rank runs AdamW on its contiguous shard of the flat
   * buffers and holds only that shard's moments, then an all-gather of the parameters. Clipping uses the global
   * norm. Every rank starts from rank 0's parameters; only rank 0 writes checkpoints (save() is a collective under
   * ZeRO-1: call it on every rank).
   */
  distributed?: DistributedOption;
}

/** What each optimizer step reports (the 'step' event and steps()). */
export interface StepInfo {
  /** 1-based optimizer step just completed. */
  step: number;
  loss: number;
  lr: number;
  /** Gradient norm before clipping (when clipping is on). */
  gradNorm?: number;
  tokensPerSec: number;
  elapsedMs: number;
  etaMs: number;
  /** True when the step was dropped for a non-finite loss or gradient (nonFinite: 'skip'); loss is then that value. */
  skipped?: boolean;
  /**
   * Distributed training: the world size, the flat-buffer bytes this step's collectives moved (4 per unique parameter;
   * twice that with ZeRO-1) and the milliseconds this rank spent inside collectives since the previous step.
   */
  comm?: { world: number; bytes: number; ms: number };
}

/** What an evaluation on the validation split reports (the 'eval' event). */
export interface EvalInfo {
  step: number;
  /** Mean validation cross-entropy, nats per token. */
  loss: number;
  /** The same in bits per token (bits per character for a character model). */
  bpc: number;
}

/** What run() returns when training ends or is aborted. */
export interface TrainResult {
  steps: number;
  loss: number;
  val?: EvalInfo;
  aborted: boolean;
  tokensPerSec: number;
  /** Steps dropped for a non-finite loss or gradient (nonFinite: 'skip'). */
  skipped: number;
}

/** The `distributed` option: null (one process), or the ZeRO stage (0: plain data parallel; 1) and overlap. */
function distributedOption(v: unknown): { zero: 0 | 1; overlap: boolean } | null {
  if (v === undefined || v === false) return null;
  if (v === true) return { zero: 0, overlap: false };
  if (typeof v === 'object' && v !== null && !Array.isArray(v)) {
    const bad = Object.keys(v).find((k) => k !== 'zero' && k !== 'overlap');
    if (bad !== undefined) throw new TypeError(`Trainer: distributed has an unknown key '${bad}' (it takes { zero?: 0 | 1, overlap?: boolean })`);
    const { zero = 0, overlap = false } = v as { zero?: unknown; overlap?: unknown };
    if (zero !== 0 && zero !== 1) throw new RangeError(`Trainer: distributed.zero must be 0 or 1 (ZeRO stage 1), got ${describe(zero)}`);
    if (typeof overlap !== 'boolean') throw new TypeError(`Trainer: distributed.overlap must be a boolean, got ${describe(overlap)}`);
    return { zero, overlap };
  }
  throw new TypeError(`Trainer: distributed must be true, false or { zero?: 0 | 1, overlap?: boolean }, got ${describe(v)}`);
}

function positiveInt(v: unknown, name: string, allowZero = false): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < (allowZero ? 0 : 1))
    throw new RangeError(`Trainer: ${name} must be a ${allowZero ? 'non-negative' : 'positive'} integer, got ${describe(v)}`);
  return v;
}
function finite(v: unknown, name: string, lo = -Infinity): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo) throw new RangeError(`Trainer: ${name} must be a finite number >= ${lo}, got ${describe(v)}`);
  return v;
}

/**
 * Trains a model on a TokenDataset with AdamW: schedules, accumulation, clipping, evaluation, checkpoints and bit-exact
 * resume.
 */
export class Trainer extends EventEmitter {
  readonly opt: AdamW;
  readonly options: Required<Omit<TrainerOptions, 'checkpoint' | 'signal' | 'stackedGrads' | 'distributed'>> & Pick<TrainerOptions, 'checkpoint' | 'signal' | 'stackedGrads' | 'distributed'>;
  /** Distributed training (options.distributed): this rank's collectives and shard; null in one process. */
  readonly dp: DataParallel | null = null;
  /** Optimizer steps completed. */
  step = 0;
  /** Steps dropped for a non-finite loss or gradient so far (nonFinite: 'skip'). */
  skipped = 0;
  private lastLoss = NaN;

  constructor(readonly model: TrainableModel, readonly data: TokenDataset, options: TrainerOptions) {
    super();
    checkObject('Trainer', options, 'options');
    const o = options;
    const steps = positiveInt(o.steps, 'steps');
    const batchSize = positiveInt(o.batchSize, 'batchSize');
    const seqLen = positiveInt(o.seqLen, 'seqLen');
    if (seqLen > model.config.maxSeq) throw new RangeError(`Trainer: seqLen ${seqLen} exceeds the model's maxSeq ${model.config.maxSeq}`);
    if (data.vocabSize !== model.config.vocab) throw new RangeError(`Trainer: the data has ${data.vocabSize} token kinds, the model's vocabulary ${model.config.vocab}`);
    const lr = finite(o.lr, 'lr', 0);
    const schedule = o.schedule ?? 'cosine';
    if (!['cosine', 'linear', 'constant'].includes(schedule)) throw new TypeError(`Trainer: schedule must be 'cosine', 'linear' or 'constant', got ${String(schedule)}`);
    if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw new TypeError('Trainer: signal must be an AbortSignal');
    if (o.checkpoint !== undefined && (typeof o.checkpoint?.path !== 'string' || o.checkpoint.path === ''))
      throw new TypeError('Trainer: checkpoint.path must be a non-empty string');
    const nonFinite = o.nonFinite ?? 'error';
    const precision = o.precision ?? 'fp32';
    if (!['fp32', 'tf32', 'bf16'].includes(precision)) throw new TypeError(`Trainer: precision must be 'fp32', 'tf32' or 'bf16', got ${String(precision)}`);
    if (nonFinite !== 'error' && nonFinite !== 'skip') throw new TypeError(`Trainer: nonFinite must be 'error' or 'skip', got ${String(nonFinite)}`);
    resolveStackedGrads(o.stackedGrads, model.store.device, 'Trainer'); // refuses a malformed option now, not at the first step
    const dopt = distributedOption(o.distributed);
    const zero = dopt?.zero ?? null;
    const bf16Copy = o.bf16Copy ?? (precision === 'bf16' && model.store.device !== 'cpu' && zero !== 1);
    if (typeof bf16Copy !== 'boolean') throw new TypeError(`Trainer: bf16Copy must be a boolean, got ${String(bf16Copy)}`);
    if (bf16Copy && zero === 1)
      throw new RangeError('Trainer: bf16Copy cannot be used with distributed: { zero: 1 } (each rank updates only its shard, so its copy of the rest would be stale)');
    this.options = {
      steps, batchSize, seqLen, lr, schedule,
      minLr: finite(o.minLr ?? lr / 10, 'minLr', 0),
      warmup: positiveInt(o.warmup ?? 0, 'warmup', true),
      weightDecay: finite(o.weightDecay ?? 0.1, 'weightDecay', 0),
      beta1: finite(o.beta1 ?? 0.9, 'beta1', 0),
      beta2: finite(o.beta2 ?? 0.99, 'beta2', 0),
      clip: finite(o.clip ?? 1, 'clip', 0),
      accumulate: positiveInt(o.accumulate ?? 1, 'accumulate'),
      evalEvery: positiveInt(o.evalEvery ?? 0, 'evalEvery', true),
      evalBatches: positiveInt(o.evalBatches ?? 20, 'evalBatches'),
      seed: positiveInt(o.seed ?? 1337, 'seed', true),
      checkpoint: o.checkpoint,
      signal: o.signal,
      nonFinite,
      precision,
      bf16Copy,
      stackedGrads: o.stackedGrads,
      distributed: o.distributed,
    };
    if (dopt) {
      if (dopt.overlap && resolveStackedGrads(o.stackedGrads, model.store.device, 'Trainer'))
        throw new RangeError('Trainer: distributed.overlap cannot be used with stackedGrads (a stacked weight gradient is written after the layers\' hooks have run)');
      if (dopt.overlap && this.options.accumulate !== 1)
        throw new RangeError(`Trainer: distributed.overlap needs accumulate 1 (gradients are final only after the last micro-batch), got accumulate ${this.options.accumulate}`);
      if (!dist.isInitialized()) dist.init({ device: model.store.device === 'cpu' ? 'cpu' : 'cuda' });
      this.dp = new DataParallel(model.store, dopt.zero, dopt.overlap);
      this.dp.broadcastParameters();
    }
    if (bf16Copy) model.store.enableBf16Copy(); // stale until the first AdamW step writes it
    this.opt = new AdamW(model.store, { lr, beta1: this.options.beta1, beta2: this.options.beta2, weightDecay: this.options.weightDecay },
      this.dp?.zero ? { window: this.dp.window } : {});
  }

  /** Distributed training: the flat-buffer collectives of one step and their bytes (null in one process). */
  get commPlan(): CommPlan | null {
    return this.dp?.plan ?? null;
  }

  /** Whether this process writes checkpoints, logs and plots: rank 0 of a distributed job, or a lone process. */
  get isMain(): boolean {
    return (this.dp?.rank ?? 0) === 0;
  }

  /** The learning rate of 0-based step `s`. */
  lrAt(s: number): number {
    const o = this.options;
    const sched = { lr: o.lr, warmup: o.warmup, total: o.steps, minLr: o.minLr };
    if (o.schedule === 'cosine') return warmupCosine(s, sched);
    if (o.schedule === 'linear') return warmupLinear(s, sched);
    return s < o.warmup ? (o.lr * (s + 1)) / o.warmup : o.lr;
  }

  /**
   * One optimizer step (accumulating micro-batches); resolves with its loss once the kernels have run. Each
   * micro-batch's gradient is computed alone (into zeroed gradients) and added to the sum of the earlier ones, so
   * accumulate: k sums k whole micro-batch gradients — the same sum, bit for bit, as k ranks' all-reduce (k = 2).
   */
  private async trainStep(): Promise<{ loss: number; lr: number; gradNorm?: number; skipped?: boolean }> {
    const o = this.options;
    const m = this.model;
    const dp = this.dp;
    const world = dp?.world ?? 1, rank = dp?.rank ?? 0;
    const micro = o.accumulate * world; // micro-batches per optimizer step, over all ranks
    m.zeroGrad();
    const losses: Tensor[] = [];
    let acc: Tensor | null = null;
    try {
      for (let k = 0; k < o.accumulate; k++) {
        if (k > 0) {
          acc ??= full([m.store.length], 0, { device: m.store.device });
          native().copyInto(acc.handle, m.store.grads.handle);
          m.zeroGrad();
        }
        const index = this.step * micro + k * world + rank; // rank-strided over the global micro-batch index
        const { ids, targets } = this.data.batch('train', o.batchSize, o.seqLen, o.seed, index, m.store.device);
        const forward = () => withPrecision(o.precision, () => m.loss(ids, targets));
        // overlap: the layers' hooks on the tape start each bucket's all-reduce during backward
        const loss = dp?.overlap ? withLayerHook(dp.layerHook, forward) : forward();
        // Building a pass's graph is synchronous JavaScript: the event loop gets a turn between the forward and the
        // backward (the forward's kernels run meanwhile), so a server training in the background stalls for one pass at
        // most, not for a whole step. Backward follows this loss's graph only; a graph other code records meanwhile is
        // freed with the tape, and its own backward() then says so.
        // Two immediates: the second is queued from the check phase, so it runs in the next turn of the loop, after
        // that turn's due timers and ready I/O (one immediate would run in this turn's check phase, before either).
        await new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve)));
        backward(loss, { scale: 1 / micro, stackedGrads: o.stackedGrads });
        ids.dispose();
        targets.dispose();
        losses.push(loss);
        if (k > 0) axpby(m.store.grads, 1, acc!, 1, { out: m.store.grads });
      }
    } finally {
      acc?.dispose();
    }
    const statsBefore = dp ? dist.stats() : null;
    dp?.reduceGradients();
    // The norm before clipping, or (clipping off) the sum of squares: either is finite exactly when every gradient is.
    const norm = dp ? dp.clip(o.clip) : o.clip > 0 ? clipGradNorm(m.store, o.clip) : sumSquares(m.store.grads);
    const lr = this.lrAt(this.step);
    const values = await this.lossValues(losses);
    let sum = 0;
    for (const v of values) sum += v; // in the order of the global micro-batch index
    const normValue = (await norm.data())[0];
    norm.dispose();
    const gradNorm = o.clip > 0 ? normValue : undefined;
    const loss = sum / micro;
    // Checked before the update: a NaN/Infinity never reaches the parameters or the AdamW moments. Every rank sees the
    // same loss and norm (both global), so every rank takes the same decision.
    if (!Number.isFinite(loss) || !Number.isFinite(normValue)) {
      const what = !Number.isFinite(loss) ? `the loss is ${loss}` : `the gradient ${o.clip > 0 ? 'norm' : 'sum of squares'} is ${normValue} (loss ${loss})`;
      if (o.nonFinite === 'error')
        throw new Error(`Trainer: ${what} at step ${this.step + 1}; stopping before the update (parameters and checkpoints keep step ${this.step})`);
      m.zeroGrad();
      this.step += 1;
      this.skipped += 1;
      this.emit('skip', { step: this.step, loss, gradNorm: normValue, reason: what });
      return { loss, lr, gradNorm, skipped: true };
    }
    this.opt.update(lr);
    dp?.gatherParameters();
    this.step += 1;
    if (dp && statsBefore) {
      const after = dist.stats();
      this.lastComm = { world, bytes: dp.plan.bytesPerStep, ms: (after.seconds - statsBefore.seconds) * 1000 };
    }
    return { loss, lr, gradNorm };
  }

  private lastComm: StepInfo['comm'] | undefined;
  /** Distributed: a rank's AbortSignal had fired when the last step's losses were gathered (all ranks stop after it). */
  private stopAgreed = false;

  /**
   * The loss of every micro-batch of the step in the order of the global micro-batch index (disposing the local
   * ones): in one process, this process's; distributed, every rank's, gathered (micro-batch k of rank r is global
   * micro-batch k·W + r).
   */
  private async lossValues(losses: Tensor[]): Promise<number[]> {
    const dp = this.dp;
    try {
      if (!dp) {
        const out: number[] = [];
        for (const l of losses) out.push((await l.data())[0]); // awaiting: the event loop runs while the step computes
        return out;
      }
      // each rank's losses and, last, whether its AbortSignal has fired: every rank then stops after the same step
      const A = losses.length, W = dp.world, E = A + 1;
      const device = this.model.store.device;
      const mine = full([E], this.options.signal?.aborted ? 1 : 0, { device }), all = full([E * W], 0, { device });
      try {
        losses.forEach((l, k) => {
          const w = mine.window(k, []);
          native().copyInto(w.handle, l.handle);
          w.dispose();
        });
        dist.allGather(all, mine);
        const v = (await all.data()) as Float32Array; // rank-major: [r][k]
        const out: number[] = [];
        for (let k = 0; k < A; k++) for (let r = 0; r < W; r++) out.push(v[r * E + k]);
        for (let r = 0; r < W; r++) if (v[r * E + A] !== 0) this.stopAgreed = true;
        return out;
      } finally {
        mine.dispose();
        all.dispose();
      }
    } finally {
      for (const l of losses) l.dispose();
    }
  }

  /** Mean validation loss over `batches` fixed validation batches (the same batches every time). */
  async evaluate(batches = this.options.evalBatches): Promise<EvalInfo> {
    const o = this.options;
    const loss = await evaluate(this.model, this.data, { batches, batchSize: o.batchSize, seqLen: o.seqLen, seed: o.seed });
    const info = { step: this.step, loss, bpc: loss / Math.LN2 };
    this.emit('eval', info);
    return info;
  }

  /** Runs the remaining steps, yielding after each one. Stops early, cleanly, when the signal aborts. */
  async *steps(): AsyncGenerator<StepInfo> {
    const o = this.options;
    const t0 = performance.now();
    const start = this.step;
    const tokensPerStep = o.batchSize * o.seqLen * o.accumulate * (this.dp?.world ?? 1);
    this.stopAgreed = false;
    while (this.step < o.steps) {
      // Distributed, the ranks must stop after the same step: a signal counts once every rank knows of it (it travels
      // with the next step's gathered losses), not when this rank sees it.
      if (this.dp ? this.stopAgreed : o.signal?.aborted) break;
      const { loss, lr, gradNorm, skipped } = await this.trainStep();
      if (!skipped) this.lastLoss = loss;
      const elapsedMs = performance.now() - t0;
      const done = this.step - start;
      const info: StepInfo = {
        step: this.step, loss, lr, gradNorm,
        tokensPerSec: (done * tokensPerStep) / (elapsedMs / 1000),
        elapsedMs,
        etaMs: (elapsedMs / done) * (o.steps - this.step),
        ...(skipped ? { skipped: true } : {}),
        ...(this.dp && this.lastComm ? { comm: this.lastComm } : {}),
      };
      this.emit('step', info);
      yield info;
      if (o.evalEvery && this.step % o.evalEvery === 0) await this.evaluate();
      if (o.checkpoint?.every && this.step % o.checkpoint.every === 0) await this.save(o.checkpoint.path);
    }
  }

  /** Trains to options.steps (or until aborted), evaluates, writes the final checkpoint when configured. */
  async run(): Promise<TrainResult> {
    const t0 = performance.now();
    const start = this.step;
    for await (const _ of this.steps());
    const aborted = this.step < this.options.steps;
    const tokens = (this.step - start) * this.options.batchSize * this.options.seqLen * this.options.accumulate * (this.dp?.world ?? 1);
    const tokensPerSec = tokens / ((performance.now() - t0) / 1000);
    const val = aborted ? undefined : await this.evaluate();
    if (this.options.checkpoint) await this.save(this.options.checkpoint.path);
    releaseTape();
    return { steps: this.step, loss: this.lastLoss, val, aborted, tokensPerSec, skipped: this.skipped };
  }

  /**
   * Writes model, optimizer moments and the step atomically (safetensors) without blocking the event loop; resume()
   * continues bit-exactly. The parameters, both moments and the step counters are taken at the call (the three reads
   * are enqueued together, so a step begun while the file is being written does not mix into it); the 'checkpoint'
   * event fires once the file is in place. saveSync() is the blocking form.
   */
  async save(path: string, extra: Record<string, string> = {}): Promise<void> {
    const step = this.step, adamStep = this.opt.stepCount;
    const s = this.model.store, dp = this.dp;
    // ZeRO-1: the moments are gathered from every rank's shard (a collective, so every rank calls save())
    const moments = dp?.zero
      ? Promise.all([dp.gatherMoment(this.opt.m), dp.gatherMoment(this.opt.v)])
      : Promise.all([this.opt.m.data(), this.opt.v.data()]).then((a) => a.map((x) => s.pack(x as Float32Array)));
    const [values, [m, v]] = await Promise.all([s.values.data(), moments]);
    if (!this.isMain) return; // only rank 0 writes
    await saveCheckpointAsync(path, s, values as Float32Array, this.model.meta(), ...this.checkpointExtra(extra, step, adamStep, m, v));
    this.emit('checkpoint', { step, path });
  }

  /**
   * save(), blocking the calling thread until the file is written (for exit paths that cannot wait). Not under
   * ZeRO-1 (whose moments need a collective: use save()); on a rank other than 0 of a distributed job it writes nothing.
   */
  saveSync(path: string, extra: Record<string, string> = {}): void {
    if (this.dp?.zero) throw new Error('Trainer.saveSync: under distributed: { zero: 1 } the moments are sharded; use await save() on every rank');
    if (!this.isMain) return;
    const m = this.opt.m.dataSync(), v = this.opt.v.dataSync(); // saveCheckpoint reads the parameters itself
    const s = this.model.store;
    saveCheckpoint(path, s, this.model.meta(), ...this.checkpointExtra(extra, this.step, this.opt.stepCount, s.pack(m as Float32Array), s.pack(v as Float32Array)));
    this.emit('checkpoint', { step: this.step, path });
  }

  /** The metadata, moments (packed) and finiteness check of a trainer checkpoint (save / saveSync). */
  private checkpointExtra(extra: Record<string, string>, step: number, adamStep: number, m: Float32Array, v: Float32Array):
    [Record<string, string>, Map<string, Float32Array>, { who: string; when: string }] {
    const moments = new Map<string, Float32Array>([
      // in the packed layout (no alignment padding): the file format does not depend on the padding
      ['optimizer.m', m],
      ['optimizer.v', v],
    ]);
    // Never replace a good checkpoint with a corrupted one: every value written must be finite.
    return [{ ...extra, trainer: JSON.stringify({ step, adamStep }) }, moments, { who: 'Trainer.save', when: `at step ${step}` }];
  }

  /**
   * Restores what save() wrote into this trainer's model and optimizer; returns the file's metadata. Everything (the
   * parameters, both moments, the step counters) is checked before anything is written: a failed resume changes
   * nothing.
   */
  resume(path: string): Record<string, string> {
    const m = new Float32Array(this.model.store.numel), v = new Float32Array(this.model.store.numel);
    let steps: { step: number; adamStep: number } | undefined;
    const checkTrainer = (md: Record<string, string>) => {
      let t: { step?: unknown; adamStep?: unknown };
      try {
        t = JSON.parse(md.trainer ?? 'null') ?? {};
      } catch {
        throw new Error(`Trainer.resume: ${path} has unreadable trainer metadata`);
      }
      if (typeof t !== 'object' || !Number.isInteger(t.step) || !Number.isInteger(t.adamStep))
        throw new Error(`Trainer.resume: ${path} was not written by a Trainer (no step in its metadata)`);
      const [step, adamStep] = [t.step as number, t.adamStep as number];
      if (step < 0 || adamStep < 0 || adamStep > step || !Number.isSafeInteger(step))
        throw new RangeError(`Trainer.resume: ${path} holds an impossible step (step ${step}, optimizer step ${adamStep})`);
      steps = { step, adamStep };
    };
    const sources: Tensor[] = [];
    let md: Record<string, string>;
    try {
      md = loadCheckpoint(path, this.model.store, this.model.meta(), new Map([['optimizer.m', m], ['optimizer.v', v]]), (meta) => {
        checkTrainer(meta);
        // m and v hold the file's moments now; their device copies are made before the parameters are written, so
        // that a failed allocation changes nothing.
        // (the file holds them packed; the store's layout has the alignment padding, zero)
        // (ZeRO-1: only this rank's window [lo, hi) of them)
        const [lo, hi] = this.opt.window;
        for (const src of [m, v]) sources.push(tensor(this.model.store.unpack(src).subarray(lo, hi), [hi - lo], { device: this.model.store.device }));
      });
      const n = native();
      n.copyInto(this.opt.m.handle, sources[0].handle);
      n.copyInto(this.opt.v.handle, sources[1].handle);
    } finally {
      for (const t of sources) t.dispose();
    }
    this.step = steps!.step;
    this.opt.stepCount = steps!.adamStep;
    return md;
  }

  /** Frees the optimizer's state tensors (and the distributed buffers). */
  dispose(): void {
    this.opt.dispose();
    this.dp?.dispose();
  }
}
