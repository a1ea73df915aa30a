// train.ts — `sharedformer train`: a model from flags, --config or a checkpoint to resume, trained by runTraining with
// its checkpoint, log, loss-curve SVG, rotation, best checkpoint and early stopping; with --distributed (or --zero N)
// one rank of a data-parallel job started by mpirun, where rank 0 alone prints and writes files.
import { existsSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { differingKeys } from '../io/checkpoint.ts';
import { getNumThreads, setNumThreads } from '../runtime.ts';
import type { EvalInfo } from '../train/trainer.ts';
import type { Device } from '../tensor.ts';
import * as distributed from '../distributed/index.ts';
import { CliError, EXIT_INTERRUPTED, EXIT_OK, RankError, UsageError, fixed, fmt, jsonLine, say, version, type CliIO } from './common.ts';
import { readCheckpointMeta, checkRecordedBatch } from './checkpoint.ts';
import { DEFAULT_MODEL, FLAG_TO_TRAIN, buildModel, modelConfigFrom, readConfigFile, trainConfigFrom } from './config.ts';
import { checkpointTokenizer, encode, loadData, makeDataset, newTokenizer, unitOf } from './data.ts';
import { checkDevice } from './device.ts';
import { COMMON, DATA_FLAGS, DIST_FLAGS, MODEL_FLAGS, OUTPUT_FLAGS, QUIET, TRAIN_FLAGS, checkOutputFlags, distributedOption, num, str, type Command, type Flags, type Specs } from './flags.ts';
import { outputPaths, runTraining } from './run-training.ts';

export const TRAIN_SPECS: Specs = {
  ...DATA_FLAGS,
  config: { kind: 'string', arg: 'FILE', path: true, help: 'a JSON object of model and training keys (flags override it)' },
  'vocab-from-data': { kind: 'bool', help: 'vocabulary: only the characters of the data (default: printable ASCII, tab, newline and the data\'s characters)' },
  out: { kind: 'string', arg: 'FILE', path: true, help: 'the checkpoint to write (.safetensors; required); OUT.log.jsonl and OUT.loss.svg go next to it' },
  resume: { kind: 'string', arg: 'FILE', path: true, help: 'continue from a checkpoint written by train (model, optimizer, step, tokenizer and settings)' },
  'checkpoint-every': { kind: 'int', arg: 'N', min: 1, help: 'also write the checkpoint every N steps' },
  ...OUTPUT_FLAGS,
  ...MODEL_FLAGS,
  ...TRAIN_FLAGS,
  ...DIST_FLAGS,
  ...QUIET,
  ...COMMON,
};

const ranks = (n: number) => `${n} rank${n === 1 ? '' : 's'}`;

/** Where the ranks of a distributed run other than 0 write: nowhere (their errors still reach stderr, from main()). */
const SILENT: CliIO = { stdout: { write: () => true }, stderr: { write: () => true } };

async function trainCommand(f: Flags, io: CliIO, signal: AbortSignal): Promise<number> {
  const dopt = distributedOption(f);
  if (str(f, 'out') === undefined) throw new UsageError('--out FILE.safetensors is required');
  const device = checkDevice(str(f, 'device'));
  if (dopt === undefined) return trainRun(f, io, signal, device, undefined);
  // Joins the MPI job first (without MPI: distributed.init's one error, which says what to install), so that every
  // later error names its rank, and the ranks other than 0 print nothing else.
  const place = distributed.init({ device });
  try {
    return await trainRun(f, place.rank === 0 ? io : SILENT, signal, device, dopt);
  } catch (e) {
    throw new RankError(place.rank, e);
  }
}

async function trainRun(f: Flags, io: CliIO, signal: AbortSignal, device: Device, dopt: ReturnType<typeof distributedOption>): Promise<number> {
  const json = f.json === true;
  const out = str(f, 'out')!;
  if (!existsSync(dirname(resolve(out)))) throw new CliError(`cannot write --out ${out}: the folder ${dirname(resolve(out))} does not exist`);
  const resumePath = str(f, 'resume');
  const file = str(f, 'config') !== undefined ? readConfigFile(str(f, 'config')!) : { model: {}, train: {} };
  if (f.threads !== undefined) setNumThreads(f.threads as number);

  const prior = resumePath !== undefined ? readCheckpointMeta(resumePath, '--resume') : undefined;
  if (prior && f['vocab-from-data']) throw new UsageError('--vocab-from-data cannot be used with --resume (the vocabulary comes from the checkpoint)');
  const recordedTok = prior ? checkpointTokenizer(f, prior.tokenizer, `--resume ${resumePath}`) : undefined;
  if (prior && !prior.hasMoments) throw new CliError(`--resume ${resumePath} holds no optimizer state (it was not written by a Trainer)`);
  const { text, source, label } = loadData(f, prior?.trainConfig?.data, 'train');
  const tok = recordedTok ?? newTokenizer(f, text);
  const unit = unitOf(tok);
  const tokens = encode(tok, text, label);

  const mcfg = modelConfigFrom(prior?.modelConfig ?? DEFAULT_MODEL, file.model, f);
  if (prior) {
    // The model's shape cannot change on resuming: name the keys that differ, not the two configurations.
    const diff = differingKeys(modelConfigFrom(prior.modelConfig, {}, {}), mcfg);
    if (diff.length)
      throw new CliError(`cannot resume from ${resumePath}: it holds a different model than requested: ${diff.join(', ')} (checkpoint -> requested; leave out the flags or --config keys that change the model)`);
  }
  if (f.batch === undefined && file.train.batchSize === undefined) checkRecordedBatch(`--resume ${resumePath}`, prior?.trainConfig?.batchSize);
  const tcfg = trainConfigFrom(prior?.trainConfig ?? {}, file.train, f, mcfg.maxSeq ?? 64);
  checkOutputFlags(f, tcfg.evalEvery ?? 0);
  const data = makeDataset(tokens, tok.vocabSize, tcfg.seqLen, label, unit);
  const model = buildModel({ ...mcfg, seed: mcfg.seed ?? tcfg.seed }, tok.vocabSize, device);
  try {
    const files = outputPaths(out);
    const steps = tcfg.steps;
    const r = await runTraining({
      model, data, options: { ...tcfg, signal, ...(dopt !== undefined ? { distributed: dopt } : {}) },
      progress: { out: io.stderr, label: 'train', quiet: f.quiet === true },
      resume: resumePath,
      checkpoint: {
        path: out,
        extra: {
          tokenizer: JSON.stringify(tok.toJSON()),
          modelConfig: JSON.stringify({ ...mcfg, seed: mcfg.seed ?? tcfg.seed }),
          trainConfig: JSON.stringify({ ...tcfg, data: source }),
          cli: `sharedformer ${version()}`,
        },
        every: num(f, 'checkpoint-every'),
        keep: num(f, 'keep'),
        keepBest: f['keep-best'] === true,
        plot: {
          name: basename(out).replace(/\.safetensors$/, ''),
          title: `sharedformer train: ${model.plan.describe()}; ${mcfg.layers} layers, dModel ${model.config.dModel}, ${steps} steps`,
          subtitle: `${label.replace(/^the /, '')}; batch ${tcfg.batchSize} x ${tcfg.seqLen}; ${new Date().toISOString().slice(0, 10)}`,
        },
      },
      patience: num(f, 'patience'),
      invalid: (why) => {
        // Resuming with no training flag and no --config training key: the configuration is the checkpoint's own.
        const fromUser = Object.keys(FLAG_TO_TRAIN).some((k) => f[k] !== undefined) || Object.keys(file.train).length > 0;
        return prior && !fromUser ? new CliError(`--resume ${resumePath}: ${why} (recorded in its metadata)`) : new UsageError(why);
      },
      onStart: (trainer) => {
        const acc = model.accounting();
        const start = trainer.step;
        const dp = trainer.dp;
        if (json) {
          jsonLine(io, {
            type: 'start', model: { ...mcfg, vocab: tok.vocabSize }, plan: model.plan.describe(), uniqueParameters: acc.uniqueParameters,
            parameterBytes: acc.parameterBytes, train: tcfg, data: source, characters: tokens.length, tokens: tokens.length, tokenizer: unit === 'char' ? 'char' : (tok as { sha256: string }).sha256, startStep: start, device,
            log: files.log, plot: files.plot,
            ...(dp ? { world: dp.world, zero: dp.zero, comm_bytes: dp.plan.bytesPerStep } : {}),
          });
        } else {
          say(io, `model     ${model.plan.describe()}; ${fmt(acc.uniqueParameters)} unique parameters (${fmt(acc.parameterBytes)} bytes)`);
          say(io, `          dModel ${model.config.dModel}, ${model.config.heads} heads, dFF ${model.config.dFF}, context ${model.config.maxSeq}, vocabulary ${tok.vocabSize}, on ${device}`);
          say(io, `data      ${label}: ${fmt(tokens.length)} ${unit === 'char' ? 'characters' : 'tokens'} (${fmt(data.train.length)} train, ${fmt(data.val.length)} validation)`);
          say(io, `training  steps ${start} -> ${steps}, batch ${tcfg.batchSize} x ${tcfg.seqLen}${(tcfg.accumulate ?? 1) > 1 ? ` x ${tcfg.accumulate}` : ''}, lr ${tcfg.lr} (${tcfg.schedule}, warmup ${tcfg.warmup}), ${getNumThreads()} CPU threads`);
          if (dp) {
            const moved = dp.zero ? 'reduce-scattered and all-gathered' : 'all-reduced';
            const global = tcfg.batchSize * (tcfg.accumulate ?? 1) * dp.world;
            say(io, `world     ${ranks(dp.world)}, ZeRO-${dp.zero}${dp.zero ? ' (optimizer state sharded)' : ' (plain data parallel)'}: ${fmt(acc.uniqueParameters)} unique parameters, ${fmt(dp.plan.bytesPerStep)} bytes of flat buffer ${moved} per step; ${global} sequences per step over all ranks`);
          }
          if (resumePath !== undefined) say(io, `resumed   from ${resumePath} at step ${start}`);
        }
      },
      onEval: (e: EvalInfo) => {
        if (json) jsonLine(io, { type: 'eval', step: e.step, loss: e.loss, bpc: e.bpc });
        else say(io, `step ${String(e.step).padStart(String(steps).length)}  validation loss ${e.loss.toFixed(4)}  ${e.bpc.toFixed(3)} bits/${unit}`);
      },
      onCheckpoint: (c) => {
        if (json) jsonLine(io, { type: 'checkpoint', step: c.step, path: c.path, ...(c.kind === 'best' ? { best: true, valLoss: c.valLoss } : {}) });
        else if (c.kind === 'best') say(io, `best      step ${c.step} (validation loss ${c.valLoss!.toFixed(4)}) written to ${c.path}`);
        else say(io, `checkpoint step ${c.step} written to ${c.path}`);
      },
    });
    if (r.interrupted) {
      if (json) jsonLine(io, { type: 'interrupted', step: r.step, steps, checkpoint: out, losses: r.losses });
      else say(io, `interrupted at step ${r.step} of ${steps}; checkpoint written to ${out} (continue with --resume ${out})`);
      return EXIT_INTERRUPTED;
    }
    const val = r.val!;
    // This session's steps, time and throughput (StepInfo.tokensPerSec counts this session only); the step reached apart.
    const sessionSteps = r.step - r.start;
    if (json)
      jsonLine(io, {
        type: 'train', steps: sessionSteps, step: r.step, startStep: r.start, loss: r.last?.loss ?? null, valLoss: val.loss, bpc: val.bpc,
        tokensPerSec: r.tokensPerSec, seconds: r.seconds, checkpoint: out, log: files.log, plot: files.plot, best: r.best?.path ?? null,
        earlyStop: r.earlyStop ?? null, losses: r.losses,
        ...(r.comm ? { world: r.comm.world, zero: r.comm.zero, comm_bytes: r.comm.bytesPerStep, comm_ms: r.comm.msPerStep, comm_share: r.comm.share } : {}),
      });
    else {
      if (r.earlyStop) say(io, `stopped   early at step ${r.step} of ${steps}: ${r.earlyStop.reason} (--patience ${r.earlyStop.patience})`);
      const reached = r.start > 0 ? ` (step ${r.start} -> ${r.step})` : '';
      say(io, `done      ${sessionSteps} steps${reached} in ${r.seconds.toFixed(1)} s (${fmt(r.tokensPerSec)} tokens/s); train loss ${fixed(r.last?.loss, 4)}, validation loss ${val.loss.toFixed(4)} (${val.bpc.toFixed(3)} bits/${unit})`);
      if (r.comm)
        say(io, `comm      ${ranks(r.comm.world)} (ZeRO-${r.comm.zero}): ${fmt(r.comm.bytesPerStep)} bytes per step; ${r.comm.msPerStep.toFixed(1)} ms per step in collectives on rank 0 (${(100 * r.comm.share).toFixed(1)}% of the step time)`);
      say(io, `saved     ${out}`);
      say(io, `          ${files.log} (log), ${files.plot} (loss curve)${r.best ? `, ${r.best.path} (best: step ${r.best.step})` : ''}`);
    }
    return EXIT_OK;
  } finally {
    model.store.dispose();
  }
}

export const trainCmd: Command = {
  summary: 'train a character-level language model and write a checkpoint',
  usage: 'sharedformer train (--data FILE | --corpus default) --out FILE.safetensors [options]',
  specs: TRAIN_SPECS,
  examples: [
    'sharedformer train --corpus default --steps 2000 --out story.safetensors',
    'sharedformer train --data notes.txt --strategy cycle-rev --unique 3 --layers 6 --out notes.safetensors --checkpoint-every 200 --keep 3',
    'sharedformer train --corpus default --steps 4000 --eval-every 200 --keep-best --patience 5 --out story.safetensors',
    'sharedformer train --resume notes.safetensors --steps 4000 --out notes.safetensors',
    'mpirun -np 2 --oversubscribe npx sharedformer train --corpus default --steps 2000 --distributed --zero 1 --out story.safetensors',
  ],
  interruptible: true,
  run: trainCommand,
};
