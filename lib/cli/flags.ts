// flags.ts — the CLI's flag parser: `--name value`, `--name=value` and boolean `--name` checked against a table of
// specs (kind, range, choices), typed getters, the flag tables the commands share, and the checks of the training
// output flags (--keep, --keep-best, --patience) against each other.
import { resolve } from 'node:path';
import { packageRoot } from '../native.ts';
import { STRATEGIES } from '../sharing/plan.ts';
import { UsageError, type CliIO } from './common.ts';

export interface FlagSpec {
  kind: 'bool' | 'string' | 'int' | 'number';
  /** Placeholder for the value in the usage text. */
  arg?: string;
  help: string;
  min?: number;
  max?: number;
  /** The minimum is exclusive. */
  above?: boolean;
  choices?: readonly string[];
  /** Left out of the usage text (test and tuning switches). */
  hidden?: boolean;
  /** A file or folder: resolved against the invoking directory (invocationDir()). */
  path?: boolean;
}

export type Specs = Record<string, FlagSpec>;
export type Flags = Record<string, string | number | boolean | undefined>;

export const COMMON: Specs = {
  json: { kind: 'bool', help: 'print results as JSON, one object per line' },
  threads: { kind: 'int', arg: 'N', min: 1, max: 1024, help: 'CPU threads (default: all; or SHAREDFORMER_NUM_THREADS)' },
  help: { kind: 'bool', help: 'show this command\'s usage' },
};
export const QUIET: Specs = { quiet: { kind: 'bool', help: 'no progress bar' } };

export const MODEL_FLAGS: Specs = {
  'd-model': { kind: 'int', arg: 'N', min: 1, help: 'model width (default 128)' },
  heads: { kind: 'int', arg: 'N', min: 1, help: 'attention heads (default 4)' },
  'kv-heads': { kind: 'int', arg: 'N', min: 1, help: 'K/V heads, fewer than heads for GQA/MQA (default: heads)' },
  'd-ff': { kind: 'int', arg: 'N', min: 1, help: 'feed-forward width (default 512)' },
  layers: { kind: 'int', arg: 'N', min: 1, help: 'applied layers (default 6)' },
  'max-seq': { kind: 'int', arg: 'N', min: 2, help: 'context length in characters (default 64)' },
  strategy: { kind: 'string', arg: 'S', choices: STRATEGIES, help: `sharing strategy (default all): ${STRATEGIES.join(', ')}` },
  unique: { kind: 'int', arg: 'U', min: 1, help: 'unique blocks, for sequence, cycle and cycle-rev' },
  rank: { kind: 'int', arg: 'R', min: 1, help: 'rank, for basis and delta' },
  'kv-share': { kind: 'int', arg: 'S', min: 1, help: 'cross-layer K/V sharing: groups of S layers reuse one K/V (default 1, off)' },
  norm: { kind: 'string', arg: 'N', choices: ['pre', 'post'], help: 'LayerNorm placement, pre or post (default pre)' },
  device: { kind: 'string', arg: 'D', choices: ['cpu', 'cuda'], help: 'cpu or cuda (default cpu)' },
};

export const TRAIN_FLAGS: Specs = {
  steps: { kind: 'int', arg: 'N', min: 1, help: 'optimizer steps to reach, counted from 0 even when resuming (default 1000)' },
  batch: { kind: 'int', arg: 'B', min: 1, help: 'sequences per batch (default 16)' },
  seq: { kind: 'int', arg: 'T', min: 1, help: 'characters per sequence (default: max-seq)' },
  lr: { kind: 'number', arg: 'X', min: 0, above: true, help: 'peak learning rate (default 0.003)' },
  'min-lr': { kind: 'number', arg: 'X', min: 0, help: 'final learning rate (default lr/10)' },
  warmup: { kind: 'int', arg: 'N', min: 0, help: 'linear warmup steps (default 5% of steps, at most 100)' },
  schedule: { kind: 'string', arg: 'S', choices: ['cosine', 'linear', 'constant'], help: 'cosine, linear or constant (default cosine)' },
  'weight-decay': { kind: 'number', arg: 'X', min: 0, help: 'AdamW weight decay (default 0.1)' },
  clip: { kind: 'number', arg: 'X', min: 0, help: 'clip the gradient norm to X; 0 turns clipping off (default 1)' },
  accumulate: { kind: 'int', arg: 'N', min: 1, help: 'micro-batches per step (default 1)' },
  'eval-every': { kind: 'int', arg: 'N', min: 0, help: 'evaluate every N steps; 0 only at the end (default steps/4)' },
  'eval-batches': { kind: 'int', arg: 'N', min: 1, help: 'validation batches per evaluation (default 20)' },
  seed: { kind: 'int', arg: 'N', min: 0, max: 0xffffffff, help: 'seed of the initialisation and the batches (default 1)' },
};

/** --tokenizer FILE: subword tokens from a Hugging Face tokenizer.json; a checkpoint embeds it. */
export const TOKENIZER_FLAG: Specs[string] = {
  kind: 'string', arg: 'FILE', path: true,
  help: 'a Hugging Face tokenizer.json (BPE, WordPiece or Unigram) for subword tokens instead of characters; checkpoints embed it, and a checkpoint refuses another one',
};

export const DATA_FLAGS: Specs = {
  data: { kind: 'string', arg: 'FILE', path: true, help: 'a UTF-8 text file' },
  corpus: { kind: 'string', arg: 'NAME', choices: ['default'], help: 'the embedded corpus instead of a file' },
  'corpus-chars': { kind: 'int', arg: 'N', min: 1000, help: 'characters of the embedded corpus (default 400000)' },
  tokenizer: TOKENIZER_FLAG,
};

export interface Command {
  summary: string;
  usage: string;
  specs: Specs;
  examples: string[];
  run(flags: Flags, io: CliIO, signal: AbortSignal): Promise<number>;
  /** Verbs that must follow the command (`tokenizer train`); the flags come after the verb, which run() sees as flags.verb. */
  verbs?: string[];
  /** Takes SIGINT (train, demo). */
  interruptible?: boolean;
}

/** Parses `--name value`, `--name=value` and boolean `--name` against specs; throws UsageError for anything else. */
export function parseFlags(argv: string[], specs: Specs): Flags {
  const out: Flags = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--') || a === '--') throw new UsageError(`unexpected argument '${a}' (flags start with --)`);
    const eq = a.indexOf('=');
    const name = eq < 0 ? a.slice(2) : a.slice(2, eq);
    const spec = Object.hasOwn(specs, name) ? specs[name] : undefined;
    if (!spec) {
      const prefix = (a: string, b: string) => { let i = 0; while (i < a.length && a[i] === b[i]) i++; return i; };
      const near = Object.keys(specs).filter((k) => !specs[k].hidden && (k.includes(name) || name.includes(k) || prefix(k, name) >= Math.max(4, Math.min(k.length, name.length) - 1)));
      throw new UsageError(`unknown flag --${name}${near.length ? ` (did you mean --${near[0]}?)` : ''}`);
    }
    let raw: string | undefined;
    if (spec.kind === 'bool') {
      if (eq >= 0) {
        const v = a.slice(eq + 1);
        if (v !== 'true' && v !== 'false') throw new UsageError(`--${name} takes no value (or =true / =false), got '${v}'`);
        out[name] = v === 'true';
      } else out[name] = true;
      continue;
    }
    if (eq >= 0) raw = a.slice(eq + 1);
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) raw = argv[++i];
    if (raw === undefined) throw new UsageError(`--${name} needs a value${spec.arg ? ` (${spec.arg})` : ''}`);
    out[name] = parseValue(name, spec, raw);
    if (spec.path && raw !== '') out[name] = resolve(invocationDir(), raw);
  }
  return out;
}

function parseValue(name: string, spec: FlagSpec, raw: string): string | number {
  if (spec.kind === 'string') {
    if (spec.choices && !spec.choices.includes(raw)) throw new UsageError(`--${name} must be one of ${spec.choices.join(', ')}; got '${raw}'`);
    return raw;
  }
  const v = raw.trim() === '' ? NaN : Number(raw);
  if (!Number.isFinite(v)) throw new UsageError(`--${name} expects a number, got '${raw}'`);
  if (spec.kind === 'int' && !Number.isSafeInteger(v)) throw new UsageError(`--${name} expects an integer, got '${raw}'`);
  if (spec.min !== undefined && (spec.above ? v <= spec.min : v < spec.min))
    throw new UsageError(`--${name} must be ${spec.above ? '>' : '>='} ${spec.min}, got ${raw}`);
  if (spec.max !== undefined && v > spec.max) throw new UsageError(`--${name} must be <= ${spec.max}, got ${raw}`);
  return v;
}

/**
 * The folder the command was invoked from, against which every path flag is resolved: INIT_CWD when npm set it and
 * moved the process to the package folder (`npm run cli` runs there, and INIT_CWD is where npm was run); otherwise
 * the working directory (`npx sharedformer` in the user's folder, or a program that called main() after chdir — a
 * stale INIT_CWD from the npm command that started it must not win over its own working directory).
 */
export function invocationDir(): string {
  const init = process.env.INIT_CWD;
  const cwd = process.cwd();
  return init && resolve(cwd) === resolve(packageRoot) ? resolve(init) : cwd;
}

export function str(f: Flags, k: string): string | undefined {
  return f[k] as string | undefined;
}
export function num(f: Flags, k: string): number | undefined {
  return f[k] as number | undefined;
}

/** Data-parallel training of `train` under mpirun (docs/cli.md, docs/distributed.md). */
export const DIST_FLAGS: Specs = {
  distributed: { kind: 'bool', help: 'data-parallel training over the ranks of an MPI job (run under mpirun; rank 0 prints and writes the files)' },
  zero: { kind: 'string', arg: 'N', choices: ['0', '1'], help: 'ZeRO stage: 0 all-reduces the gradients, 1 also shards the optimizer state over the ranks (implies --distributed; default 0)' },
};

/**
 * The Trainer's `distributed` option from --distributed and --zero N (which implies it): undefined (one process),
 * true (--distributed alone) or { zero }. --distributed=false with --zero is a contradiction, refused.
 */
export function distributedOption(f: Flags): true | { zero: 0 | 1 } | undefined {
  const zero = f.zero === undefined ? undefined : (Number(f.zero) as 0 | 1);
  if (zero !== undefined && f.distributed === false) throw new UsageError(`--zero ${f.zero} implies --distributed, but --distributed=false was given`);
  if (zero !== undefined) return { zero };
  return f.distributed === true ? true : undefined;
}

/** The training outputs of `train`: rotation of periodic checkpoints, the best checkpoint, early stopping. */
export const OUTPUT_FLAGS: Specs = {
  keep: { kind: 'int', arg: 'N', min: 1, help: 'keep the newest N checkpoints of --checkpoint-every as OUT.step-S.safetensors (older ones are deleted)' },
  'keep-best': { kind: 'bool', help: 'keep the checkpoint of the lowest validation loss as OUT.best.safetensors' },
  patience: { kind: 'int', arg: 'P', min: 1, help: 'stop early when the validation loss has not improved for P evaluations (needs --eval-every)' },
};

/**
 * Checks the training output flags against each other and the evaluation period: --keep rotates the checkpoints
 * of --checkpoint-every, and --patience counts periodic evaluations (evalEvery > 0).
 */
export function checkOutputFlags(f: Flags, evalEvery: number): void {
  if (f.keep !== undefined && f['checkpoint-every'] === undefined)
    throw new UsageError(`--keep ${f.keep} rotates the checkpoints that --checkpoint-every N writes; give --checkpoint-every too`);
  if (f.patience !== undefined && !(evalEvery > 0))
    throw new UsageError(`--patience ${f.patience} counts periodic evaluations, but --eval-every is ${evalEvery} (only at the end); give --eval-every N`);
}
