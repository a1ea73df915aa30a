// run-training.ts — the one training loop of the CLI, used by train, demo and compare: the Trainer, resuming, the
// progress bar, evaluations, periodic and final checkpoints, the checkpoint on Ctrl-C, and the training outputs of
// `train` (a JSON-lines log, the loss-curve SVG, rotation of periodic checkpoints, the best checkpoint by validation
// loss, early stopping).
import { appendFileSync, closeSync, copyFileSync, existsSync, fsyncSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { Trainer, type EvalInfo, type StepInfo, type TrainableModel, type TrainerOptions } from '../train/trainer.ts';
import type { TokenDataset } from '../data/index.ts';
import { readSafetensorsHeader, writeFileAtomic } from '../io/safetensors.ts';
import { lossCurveSvg } from '../plot.ts';
import { releaseTape } from '../autograd.ts';
import { CliError, UsageError, firstLine, jsonText, message } from './common.ts';
import { Progress } from './progress.ts';
import type { CliStream } from './common.ts';

/** One optimizer step as --json and the log report it: the step, its training loss and learning rate, and its time. */
export interface StepRecord {
  step: number;
  loss: number;
  lr: number;
  /** Wall time since the previous step ended (or since training began), evaluations and checkpoints in between included. */
  ms: number;
  /** Distributed training (only then): the world size. */
  world?: number;
  /** Distributed: the flat-buffer bytes the step's collectives moved (Trainer.commPlan.bytesPerStep). */
  comm_bytes?: number;
  /** Distributed: this rank's milliseconds inside collectives during the step (StepInfo.comm.ms). */
  comm_ms?: number;
}

/** The files next to a checkpoint `out`: OUT.log.jsonl, OUT.loss.svg, OUT.best.safetensors, OUT.step-S.safetensors. */
export function outputPaths(out: string): { log: string; plot: string; best: string; step(s: number): string; stepPattern: RegExp } {
  const stem = out.replace(/\.safetensors$/, '');
  const esc = basename(stem).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return {
    log: `${stem}.log.jsonl`,
    plot: `${stem}.loss.svg`,
    best: `${stem}.best.safetensors`,
    step: (s) => `${stem}.step-${String(s).padStart(6, '0')}.safetensors`,
    stepPattern: new RegExp(`^${esc}\\.step-(\\d+)\\.safetensors$`),
  };
}

/** The checkpoint of a training run and the files written next to it (train). */
export interface CheckpointOutputs {
  /** The checkpoint: written at the end, when interrupted, and every `every` steps. */
  path: string;
  /** Metadata of every checkpoint (tokenizer, configurations). */
  extra: Record<string, string>;
  every?: number;
  /** Keep the newest `keep` periodic checkpoints as OUT.step-S.safetensors too (older ones are deleted). */
  keep?: number;
  /** Keep the checkpoint of the lowest validation loss as OUT.best.safetensors. */
  keepBest?: boolean;
  /** The loss-curve SVG's series name, title and subtitle (as compare writes them). */
  plot: { name: string; title: string; subtitle: string };
}

export interface RunTrainingOptions {
  model: TrainableModel;
  data: TokenDataset;
  /** The Trainer's options; `signal` is the user's interruption (Ctrl-C). */
  options: TrainerOptions;
  /** The progress bar (null: none). */
  progress: { out: CliStream; label: string; quiet: boolean } | null;
  /** A checkpoint written by train to continue from. */
  resume?: string;
  checkpoint?: CheckpointOutputs;
  /** Stop when the validation loss has not improved for this many evaluations. */
  patience?: number;
  /** Evaluate at the end unless the last periodic evaluation was at the last step (default true). */
  finalEval?: boolean;
  /** Prefixes the errors of a failed step (compare: the strategy's name). */
  errorPrefix?: string;
  /** The error for options the Trainer refuses (TypeError or RangeError); default: a UsageError. */
  invalid?: (why: string) => Error;
  /** After resuming, before the first step. */
  onStart?(trainer: Trainer): void;
  onStep?(s: StepInfo): void;
  /** Every evaluation (the progress bar is cleared first). */
  onEval?(e: EvalInfo): void;
  /** Every checkpoint written while training: periodic ones and a new best (the progress bar is cleared first). */
  onCheckpoint?(c: { step: number; path: string; kind: 'periodic' | 'best'; valLoss?: number }): void;
}

export interface TrainingResult {
  /** The step training started from (0, or the resumed checkpoint's). */
  start: number;
  /** The step reached. */
  step: number;
  /** The last step of this session. */
  last?: StepInfo;
  /** The final evaluation (none when interrupted or finalEval is false). */
  val?: EvalInfo;
  /** This session's steps. */
  losses: StepRecord[];
  /** Training and validation loss by step, earlier sessions' included when resuming with a log. */
  curve: { train: [number, number][]; val: [number, number][] };
  /** Stopped by the user's signal before the last step. */
  interrupted: boolean;
  /** Stopped by --patience: why. */
  earlyStop?: { reason: string; patience: number; bestStep: number; bestValLoss: number };
  /** The best checkpoint written (keepBest). */
  best?: { step: number; valLoss: number; path: string };
  seconds: number;
  tokensPerSec: number;
  /**
   * Distributed training (only then): the world size, the ZeRO stage, the flat-buffer bytes of one step's collectives,
   * this rank's mean milliseconds inside collectives per step of this session, and their share of the steps' time.
   */
  comm?: { world: number; zero: 0 | 1; bytesPerStep: number; msPerStep: number; share: number };
}

/** Distributed: the mean time per step inside collectives over this session's steps, and its share of their time. */
function commSummary(steps: StepRecord[], world: number, zero: 0 | 1, bytesPerStep: number): NonNullable<TrainingResult['comm']> {
  let comm = 0, total = 0;
  for (const s of steps) {
    comm += s.comm_ms ?? 0;
    total += s.ms;
  }
  return { world, zero, bytesPerStep, msPerStep: steps.length ? comm / steps.length : 0, share: total > 0 ? comm / total : 0 };
}

/** The validation loss recorded in a best checkpoint written earlier, if there is one to beat. */
function recordedBest(path: string): { step: number; valLoss: number } | undefined {
  if (!existsSync(path)) return undefined;
  try {
    const md = readSafetensorsHeader(path).metadata;
    const valLoss = Number(md.bestValLoss), step = Number(md.bestStep);
    return Number.isFinite(valLoss) && Number.isSafeInteger(step) ? { step, valLoss } : undefined;
  } catch {
    return undefined; // not a checkpoint of ours: the first evaluation replaces it
  }
}

/** The curve of earlier sessions from a log (up to step `upTo`); lines that are not ours are skipped. */
function curveFromLog(path: string, upTo: number): TrainingResult['curve'] {
  const curve: TrainingResult['curve'] = { train: [], val: [] };
  if (!existsSync(path)) return curve;
  for (const l of readFileSync(path, 'utf8').split('\n')) {
    let r: { type?: unknown; step?: unknown; loss?: unknown; valLoss?: unknown };
    try {
      r = JSON.parse(l);
    } catch {
      continue;
    }
    if (typeof r !== 'object' || r === null || typeof r.step !== 'number' || r.step > upTo) continue;
    if (r.type === 'step' && typeof r.loss === 'number') curve.train.push([r.step, r.loss]);
    else if (r.type === 'eval' && typeof r.valLoss === 'number') curve.val.push([r.step, r.valLoss]);
  }
  return curve;
}

/**
 * Trains `model` to options.steps: the one loop of train, demo and compare. Builds the Trainer (its refusals become
 * `invalid`'s error), resumes, draws the progress bar, reports evaluations, writes the periodic checkpoints (and
 * rotates them), the best one, the log and the SVG, stops early by `patience`, and at the end (unless interrupted)
 * evaluates and writes the final checkpoint; when the user's signal stops it first, the checkpoint is still written.
 * The model stays the caller's; the Trainer is disposed before it returns.
 *
 * Distributed (options.distributed): every rank runs this loop and takes the same decisions (losses and validation
 * losses are the same on every rank), but only rank 0 (trainer.isMain) writes the checkpoints, the log, the SVG and
 * the rotated copies; checkpoints are written with save() on every rank, a collective under ZeRO-1. The progress
 * bar and the callbacks run on every rank: the caller keeps other ranks quiet (train gives them no progress bar).
 */
export async function runTraining(r: RunTrainingOptions): Promise<TrainingResult> {
  const userSignal = r.options.signal;
  // Early stopping aborts the Trainer between steps, as the user's signal does, but is told apart from it.
  const early = new AbortController();
  const signal = r.patience !== undefined ? (userSignal ? AbortSignal.any([userSignal, early.signal]) : early.signal) : userSignal;
  let trainer: Trainer;
  try {
    trainer = new Trainer(r.model, r.data, { ...r.options, signal });
  } catch (e) {
    if (e instanceof TypeError || e instanceof RangeError) {
      const why = `invalid training configuration: ${firstLine(message(e)).replace(/^Trainer: /, '')}`;
      throw r.invalid ? r.invalid(why) : new UsageError(why);
    }
    throw e;
  }
  const total = trainer.options.steps;
  const ck = r.checkpoint;
  const files = ck ? outputPaths(ck.path) : undefined;
  const progress = r.progress ? new Progress(r.progress.out, r.progress.label, total, r.progress.quiet) : undefined;
  // Distributed: only rank 0 writes files; checkpoints go through save() on every rank (a collective under ZeRO-1).
  const main = trainer.isMain, dp = trainer.dp;
  const t0 = performance.now();
  try {
    if (r.resume !== undefined) {
      try {
        trainer.resume(r.resume);
      } catch (e) {
        throw new CliError(`cannot resume from ${r.resume}: ${firstLine(message(e)).replace(/^(loadCheckpoint|Trainer\.resume): /, '')}`);
      }
    }
    const start = trainer.step;
    const resuming = r.resume !== undefined;
    const log = (o: object) => {
      if (!files || !main) return;
      try {
        appendFileSync(files.log, `${jsonText(o)}\n`);
      } catch (e) {
        throw new CliError(`cannot write the log ${files.log}: ${firstLine(message(e))}`);
      }
    };
    if (files && main) {
      // A new run starts a new log; a run resumed into the same checkpoint appends to its log, and one resumed into
      // another checkpoint starts from a copy of the log it resumed from.
      const from = resuming ? outputPaths(r.resume!).log : undefined;
      try {
        if (from === undefined) writeFileSync(files.log, '');
        else if (from !== files.log) {
          if (existsSync(from)) copyFileSync(from, files.log);
          else writeFileSync(files.log, '');
        }
      } catch (e) {
        throw new CliError(`cannot write the log ${files.log}: ${firstLine(message(e))}`);
      }
    }
    const curve = files && main && resuming ? curveFromLog(files.log, start) : { train: [], val: [] } as TrainingResult['curve'];
    log({ type: 'start', step: start, steps: total, resumed: resuming, time: new Date().toISOString() });
    r.onStart?.(trainer);

    const plot = () => {
      if (!files || !ck || !main || (curve.train.length === 0 && curve.val.length === 0)) return;
      try {
        writeFileAtomic(files.plot, lossCurveSvg([{ name: ck.plot.name, train: curve.train, val: curve.val }], { title: ck.plot.title, subtitle: ck.plot.subtitle }));
      } catch (e) {
        throw new CliError(`cannot write the loss curve ${files.plot}: ${firstLine(message(e))}`);
      }
    };
    const cannotWrite = (path: string, e: unknown) => new CliError(`cannot write the checkpoint ${path}: ${firstLine(message(e))}`);
    /** One process: written before it returns. Distributed: save() on every rank, awaited (rank 0 writes). */
    const save = async (path: string, extra: Record<string, string> = {}) => {
      try {
        if (dp) await trainer.save(path, { ...ck!.extra, ...extra });
        else trainer.saveSync(path, { ...ck!.extra, ...extra });
      } catch (e) {
        throw cannotWrite(path, e);
      }
    };
    /** The checkpoint, the log's note of it and the SVG. */
    const checkpoint = async () => {
      await save(ck!.path);
      log({ type: 'checkpoint', step: trainer.step, path: ck!.path });
      plot();
    };
    /** Rotation: the newest `keep` periodic checkpoints as OUT.step-S.safetensors (a copy, fsynced, renamed into place). */
    const rotate = () => {
      if (!ck?.keep || !files || !main) return;
      const target = files.step(trainer.step), tmp = `${target}.tmp-${process.pid}`;
      try {
        copyFileSync(ck.path, tmp);
        const fd = openSync(tmp, 'r+');
        try {
          fsyncSync(fd); // on disk before it takes the name, as writeFileAtomic does
        } finally {
          closeSync(fd);
        }
        renameSync(tmp, target);
        const dir = dirname(ck.path);
        const kept = readdirSync(dir)
          .map((n) => ({ n, m: files.stepPattern.exec(n) }))
          .filter((x) => x.m !== null)
          .map((x) => ({ path: join(dir, x.n), step: Number(x.m![1]) }))
          .sort((a, b) => b.step - a.step);
        for (const old of kept.slice(ck.keep)) rmSync(old.path, { force: true });
      } catch (e) {
        rmSync(tmp, { force: true });
        throw new CliError(`cannot keep the checkpoint ${target}: ${firstLine(message(e))}`);
      }
    };

    let best = ck?.keepBest && files && resuming ? recordedBest(files.best) : undefined;
    let bestPath: TrainingResult['best'];
    let sinceBest = 0, patienceBest = Infinity, patienceStep = start;
    let earlyStop: TrainingResult['earlyStop'];
    let lastEval: EvalInfo | undefined;
    /**
     * Distributed: best checkpoints being written (started by the 'eval' handler, which cannot wait), each resolving
     * to its error or null (a rejection left unhandled until settle() would end the process).
     */
    let pending: Promise<unknown>[] = [];
    const settle = async () => {
      const p = pending;
      pending = [];
      const failed = (await Promise.all(p)).find((x) => x !== null);
      if (failed !== undefined) throw failed;
    };
    trainer.on('eval', (e: EvalInfo) => {
      lastEval = e;
      curve.val.push([e.step, e.loss]);
      progress?.clear();
      log({ type: 'eval', step: e.step, valLoss: e.loss, bpc: e.bpc, elapsedMs: performance.now() - t0 });
      r.onEval?.(e);
      if (ck?.keepBest && files && (best === undefined || e.loss < best.valLoss)) {
        best = { step: e.step, valLoss: e.loss };
        const written = () => {
          bestPath = { step: e.step, valLoss: e.loss, path: files.best };
          log({ type: 'best', step: e.step, valLoss: e.loss, path: files.best });
          r.onCheckpoint?.({ step: e.step, path: files.best, kind: 'best', valLoss: e.loss });
        };
        const extra = { bestValLoss: String(e.loss), bestStep: String(e.step) };
        if (!dp) {
          try {
            trainer.saveSync(files.best, { ...ck.extra, ...extra });
          } catch (err) {
            throw cannotWrite(files.best, err);
          }
          written();
        } else {
          // The handler cannot wait: save() takes the values now (its collectives are queued on every rank in the
          // same order) and is awaited before the next step is reported and before training ends (settle()).
          pending.push(save(files.best, extra).then(written).then(() => null, (err: unknown) => err));
        }
      }
      if (r.patience !== undefined && !early.signal.aborted) {
        if (e.loss < patienceBest) {
          patienceBest = e.loss;
          patienceStep = e.step;
          sinceBest = 0;
        } else if (++sinceBest >= r.patience && e.step < total) {
          earlyStop = {
            reason: `the validation loss has not improved for ${r.patience} evaluation${r.patience === 1 ? '' : 's'} (best ${patienceBest.toFixed(4)} at step ${patienceStep})`,
            patience: r.patience, bestStep: patienceStep, bestValLoss: patienceBest,
          };
          early.abort();
        }
      }
    });

    const losses: StepRecord[] = [];
    let last: StepInfo | undefined;
    let prevMs = 0;
    try {
      for await (const s of trainer.steps()) {
        await settle();
        last = s;
        const now = performance.now() - t0;
        const rec: StepRecord = {
          step: s.step, loss: s.loss, lr: s.lr, ms: now - prevMs,
          ...(s.comm ? { world: s.comm.world, comm_bytes: s.comm.bytes, comm_ms: s.comm.ms } : {}),
        };
        prevMs = now;
        losses.push(rec);
        curve.train.push([s.step, s.loss]);
        log({ type: 'step', ...rec, ...(s.gradNorm !== undefined ? { gradNorm: s.gradNorm } : {}), ...(s.skipped ? { skipped: true } : {}), elapsedMs: now });
        progress?.update(s);
        r.onStep?.(s);
        if (ck?.every && s.step % ck.every === 0 && s.step < total) {
          await checkpoint();
          rotate();
          progress?.clear();
          r.onCheckpoint?.({ step: s.step, path: ck.path, kind: 'periodic' });
        }
      }
      await settle();
    } catch (e) {
      progress?.done();
      // A failed step (say, a non-finite loss) leaves the last checkpoint in place.
      throw new CliError(`${r.errorPrefix ?? ''}${firstLine(message(e)).replace(/^Trainer: /, '')}`);
    }
    progress?.done();
    const seconds = (performance.now() - t0) / 1000;
    const result = (val: EvalInfo | undefined, interrupted: boolean): TrainingResult => ({
      start, step: trainer.step, last, val, losses, curve, interrupted, earlyStop, best: bestPath, seconds,
      tokensPerSec: last ? last.tokensPerSec : 0,
      ...(dp ? { comm: commSummary(losses, dp.world, dp.zero, dp.plan.bytesPerStep) } : {}),
    });
    // Distributed, the Trainer stops every rank after the same step when any rank's signal fires (that rank's alone,
    // say a SIGINT sent to one process): every rank then takes this path, and writes (rank 0) the same checkpoint.
    if (trainer.step < total && (userSignal?.aborted || (dp !== null && earlyStop === undefined))) {
      if (ck) await checkpoint();
      log({ type: 'end', step: trainer.step, reason: 'interrupted' });
      return result(undefined, true);
    }
    let val: EvalInfo | undefined;
    try {
      // The final evaluation (unless --eval-every just made it).
      if (r.finalEval !== false) val = lastEval?.step === trainer.step ? lastEval : await trainer.evaluate();
      await settle();
    } catch (e) {
      if (e instanceof CliError) throw e;
      throw new CliError(`${r.errorPrefix ?? ''}${firstLine(message(e)).replace(/^Trainer: /, '')}`);
    }
    if (ck) await checkpoint();
    log({ type: 'end', step: trainer.step, reason: earlyStop ? 'early stop' : 'done', ...(earlyStop ? { why: earlyStop.reason } : {}) });
    return result(val, false);
  } finally {
    trainer.removeAllListeners();
    trainer.dispose();
    releaseTape();
  }
}
