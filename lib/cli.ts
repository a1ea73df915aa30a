// cli.ts — the `sharedformer` command line: demo, train, eval, generate, compare, info, bench, help (docs/cli.md).
//
// main(argv, io) runs one command and resolves to its exit code; it never calls process.exit. Results go to
// io.stdout (human text, or one JSON object per line with --json); progress bars, notices and errors go to io.stderr.
// Exit codes: 0 success; 2 usage errors (unknown command or flag, a missing or malformed value, a missing required
// flag, an invalid model or training configuration); 1 runtime errors (a file that cannot be read or is not a
// checkpoint, text the tokenizer cannot encode, data too small, a failure while training); 130 interrupted (SIGINT,
// or io.signal aborted), after writing the checkpoint. Errors are one line on stderr: `sharedformer CMD: message`
// (SHAREDFORMER_DEBUG=1 adds the stack).
import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { Decoder, TRAINER_MOMENTS, checkDecoderCheckpoint, type DecoderConfig } from './models/decoder.ts';
import { Trainer, type EvalInfo, type StepInfo, type TrainerOptions } from './train/trainer.ts';
import { CharTokenizer, TokenDataset } from './data/index.ts';
import { describeCorpus, generateCorpus } from './data/corpus.ts';
import { SafetensorsError, readSafetensorsHeader, writeFileAtomic, type SafeTensorInfo } from './io/safetensors.ts';
import { lossCurveSvg } from './plot.ts';
import { differingKeys, loadCheckpoint } from './io/checkpoint.ts';
import { backends, buildInfo, getNumThreads, setNumThreads } from './runtime.ts';
import { packageRoot } from './native.ts';
import { STRATEGIES, makePlan, type SharingConfig } from './sharing/plan.ts';
import { noGrad, releaseTape } from './autograd.ts';
import type { Device } from './tensor.ts';

// ---------------------------------------------------------------------------------------------------------------------
// I/O and errors

/** Where the CLI writes: anything with write(); isTTY decides between a redrawn progress bar and periodic lines. */
export interface CliStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface CliIO {
  stdout: CliStream;
  stderr: CliStream;
  /**
   * Interrupts `train` and `demo` when aborted, as Ctrl-C does (train writes its checkpoint and exits 130). When
   * given, main() installs no SIGINT handler of its own.
   */
  signal?: AbortSignal;
}

/** A mistake in how the command was called: exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** A failure while doing the work (I/O, bad file contents): exit code 1, the message printed without a stack. */
export class CliError extends Error {
  override name = 'CliError';
}

const EXIT_OK = 0;
const EXIT_RUNTIME = 1;
const EXIT_USAGE = 2;
const EXIT_INTERRUPTED = 130;

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return i < 0 ? s : s.slice(0, i);
}

/** The package version, from package.json next to lib/ (or dist/). */
export function version(): string {
  try {
    return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const fixed = (n: number | undefined, d: number): string => (n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(d));

function clock(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '--:--';
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), ss = s % 60;
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${String(ss).padStart(2, '0')}` : `${m}:${String(ss).padStart(2, '0')}`;
}

// ---------------------------------------------------------------------------------------------------------------------
// Flags

interface FlagSpec {
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

type Specs = Record<string, FlagSpec>;
type Flags = Record<string, string | number | boolean | undefined>;

const COMMON: Specs = {
  json: { kind: 'bool', help: 'print results as JSON, one object per line' },
  threads: { kind: 'int', arg: 'N', min: 1, max: 1024, help: 'CPU threads (default: all; or SHAREDFORMER_NUM_THREADS)' },
  help: { kind: 'bool', help: 'show this command\'s usage' },
};
const QUIET: Specs = { quiet: { kind: 'bool', help: 'no progress bar' } };

const MODEL_FLAGS: Specs = {
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

const TRAIN_FLAGS: Specs = {
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

const DATA_FLAGS: Specs = {
  data: { kind: 'string', arg: 'FILE', path: true, help: 'a UTF-8 text file' },
  corpus: { kind: 'string', arg: 'NAME', choices: ['default'], help: 'the embedded corpus instead of a file' },
  'corpus-chars': { kind: 'int', arg: 'N', min: 1000, help: 'characters of the embedded corpus (default 400000)' },
};

interface Command {
  summary: string;
  usage: string;
  specs: Specs;
  examples: string[];
  run(flags: Flags, io: CliIO, signal: AbortSignal): Promise<number>;
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

function str(f: Flags, k: string): string | undefined {
  return f[k] as string | undefined;
}
function num(f: Flags, k: string): number | undefined {
  return f[k] as number | undefined;
}

/**
 * Why `bytes` is not UTF-8 text, or undefined when it is: a NUL byte, or a byte sequence that is not UTF-8 (overlong
 * forms, surrogates and code points above U+10FFFF included), with its offset.
 */
export function notText(bytes: Uint8Array): string | undefined {
  const nul = bytes.indexOf(0);
  if (nul >= 0) return `it holds a NUL byte at offset ${nul}, so it is binary, not text`;
  const n = bytes.length;
  for (let i = 0; i < n; ) {
    const b = bytes[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    let len = 0, min = 0, cp = 0;
    if (b >= 0xc2 && b <= 0xdf) [len, min, cp] = [2, 0x80, b & 0x1f];
    else if (b >= 0xe0 && b <= 0xef) [len, min, cp] = [3, 0x800, b & 0x0f];
    else if (b >= 0xf0 && b <= 0xf4) [len, min, cp] = [4, 0x10000, b & 0x07];
    const bad = () => `it is not valid UTF-8 (byte 0x${b.toString(16).padStart(2, '0')} at offset ${i} does not start a valid UTF-8 character)`;
    if (len === 0 || i + len > n) return bad();
    for (let k = 1; k < len; k++) {
      const c = bytes[i + k];
      if ((c & 0xc0) !== 0x80) return bad();
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return bad();
    i += len;
  }
  return undefined;
}

function readText(path: string, what: string): string {
  let text: string;
  try {
    const bytes = readFileSync(path);
    const why = what === '--data' ? notText(bytes) : undefined;
    if (why !== undefined) throw new CliError(`${what} ${path} is not UTF-8 text: ${why}; the data must be a UTF-8 text file`);
    text = bytes.toString('utf8');
  } catch (e) {
    if (e instanceof CliError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : code === 'EACCES' ? 'permission denied' : firstLine(message(e));
    throw new CliError(`cannot read ${what} ${path}: ${why}`);
  }
  if (text.length === 0) throw new CliError(`${what} ${path} is empty`);
  return text;
}

// ---------------------------------------------------------------------------------------------------------------------
// Progress

/** A progress bar: redrawn in place with \r when the stream is a terminal, otherwise a line every `every` steps. */
export class Progress {
  private drawn = false;
  private lastDraw = 0;
  private readonly every: number;
  constructor(
    private readonly out: CliStream,
    private readonly label: string,
    private readonly total: number,
    private readonly quiet = false,
  ) {
    this.every = Math.max(1, Math.round(total / 10));
  }

  line(s: StepInfo): string {
    const width = 24;
    const filled = Math.min(width, Math.round((width * s.step) / this.total));
    const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
    const w = String(this.total).length;
    return `${this.label} [${bar}] ${String(s.step).padStart(w)}/${this.total}  loss ${s.loss.toFixed(3)}  ${fmt(s.tokensPerSec)} tok/s  ETA ${clock(s.etaMs)}`;
  }

  update(s: StepInfo): void {
    if (this.quiet) return;
    if (this.out.isTTY) {
      const now = performance.now();
      if (s.step < this.total && now - this.lastDraw < 80) return;
      this.lastDraw = now;
      let l = this.line(s);
      if (this.out.columns && l.length >= this.out.columns) l = l.slice(0, this.out.columns - 1);
      this.out.write(`\r${l}\x1b[K`);
      this.drawn = true;
    } else if (s.step === 1 || s.step % this.every === 0 || s.step === this.total) {
      this.out.write(`${this.line(s)}\n`);
    }
  }

  /** Erases the bar before other output (it comes back on the next update). */
  clear(): void {
    if (this.drawn) this.out.write('\r\x1b[K');
    this.drawn = false;
  }

  /** Ends the bar's line. */
  done(): void {
    if (this.drawn) this.out.write('\n');
    this.drawn = false;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// Models, data, checkpoints

type ModelConfig = Omit<DecoderConfig, 'vocab' | 'device'>;
type TrainConfig = Omit<TrainerOptions, 'checkpoint' | 'signal' | 'beta1' | 'beta2'>;
/** Where the training text came from (recorded in checkpoints, so that resume and eval can default to it). */
type DataSource = { corpus: 'default'; chars: number } | { file: string };

const DEFAULT_MODEL: ModelConfig = { dModel: 128, heads: 4, dFF: 512, layers: 6, maxSeq: 64, sharing: { strategy: 'all' } };
const MODEL_KEYS = ['dModel', 'heads', 'kvHeads', 'dFF', 'layers', 'maxSeq', 'sharing', 'tiedEmbeddings', 'factorizedEmbedding', 'bias', 'norm'] as const;
const TRAIN_KEYS = ['steps', 'batchSize', 'seqLen', 'lr', 'minLr', 'warmup', 'schedule', 'weightDecay', 'clip', 'accumulate', 'evalEvery', 'evalBatches', 'seed'] as const;
const FLAG_TO_MODEL: Record<string, (typeof MODEL_KEYS)[number]> = {
  'd-model': 'dModel', heads: 'heads', 'kv-heads': 'kvHeads', 'd-ff': 'dFF', layers: 'layers', 'max-seq': 'maxSeq', norm: 'norm',
};
const FLAG_TO_TRAIN: Record<string, (typeof TRAIN_KEYS)[number]> = {
  steps: 'steps', batch: 'batchSize', seq: 'seqLen', lr: 'lr', 'min-lr': 'minLr', warmup: 'warmup', schedule: 'schedule',
  'weight-decay': 'weightDecay', clip: 'clip', accumulate: 'accumulate', 'eval-every': 'evalEvery', 'eval-batches': 'evalBatches', seed: 'seed',
};

/** Printable ASCII, tab and newline: the default vocabulary, so any ASCII prompt can be given to the trained model. */
function defaultChars(): string[] {
  const cs = ['\t', '\n'];
  for (let c = 32; c < 127; c++) cs.push(String.fromCharCode(c));
  return cs;
}

/** The tokenizer of a new model: the data's characters only, or (default) printable ASCII plus the data's characters. */
function vocabulary(text: string, fromData: boolean): CharTokenizer {
  return fromData ? CharTokenizer.fromText(text) : new CharTokenizer([...new Set([...defaultChars(), ...text])].sort());
}

function parseJSON(text: string, what: string, err: (m: string) => Error): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw err(`${what} is not valid JSON: ${firstLine(message(e))}`);
  }
}

/** Reads a --config file: a flat JSON object of model keys (DecoderConfig) and training keys (TrainerOptions). */
function readConfigFile(path: string): { model: Partial<ModelConfig>; train: Partial<TrainConfig> } {
  const o = parseJSON(readText(path, '--config'), `--config ${path}`, (m) => new UsageError(m));
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new UsageError(`--config ${path} must hold a JSON object`);
  const model: Record<string, unknown> = {}, train: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) {
    if ((MODEL_KEYS as readonly string[]).includes(k)) model[k] = v;
    else if ((TRAIN_KEYS as readonly string[]).includes(k)) train[k] = v;
    else
      throw new UsageError(
        `--config ${path}: unknown key '${k}'${k === 'vocab' ? ' (the vocabulary comes from the data)' : ''}; model keys: ${MODEL_KEYS.join(', ')}; training keys: ${TRAIN_KEYS.join(', ')}`,
      );
  }
  return { model: model as Partial<ModelConfig>, train: train as Partial<TrainConfig> };
}

/** base, then the --config file's keys, then flags. */
function modelConfigFrom(base: ModelConfig, file: Partial<ModelConfig>, f: Flags): ModelConfig {
  const c: ModelConfig = { ...base, ...file, sharing: { ...(file.sharing ?? base.sharing ?? {}) } };
  for (const [flag, key] of Object.entries(FLAG_TO_MODEL)) if (f[flag] !== undefined) (c as Record<string, unknown>)[key] = f[flag];
  const s: Partial<SharingConfig> = c.sharing ?? {};
  if (f.strategy !== undefined && f.strategy !== s.strategy) {
    // A new strategy drops the old one's options (unique, rank, custom); K/V sharing works with every strategy.
    c.sharing = { strategy: f.strategy as SharingConfig['strategy'], ...(s.kvShareGroup !== undefined ? { kvShareGroup: s.kvShareGroup } : {}) };
  }
  if (f.unique !== undefined) c.sharing = { ...c.sharing, unique: f.unique as number };
  if (f.rank !== undefined) c.sharing = { ...c.sharing, rank: f.rank as number };
  if (f['kv-share'] !== undefined) c.sharing = { ...c.sharing, kvShareGroup: f['kv-share'] as number };
  return c;
}

function trainConfigFrom(base: Partial<TrainConfig> & { data?: DataSource }, file: Partial<TrainConfig>, f: Flags, maxSeq: number): TrainConfig {
  const { data: _recorded, ...stored } = base;
  const c: Partial<TrainConfig> = { ...stored, ...file };
  for (const [flag, key] of Object.entries(FLAG_TO_TRAIN)) if (f[flag] !== undefined) (c as Record<string, unknown>)[key] = f[flag];
  const steps = c.steps ?? 1000;
  return {
    ...c,
    steps,
    batchSize: c.batchSize ?? 16,
    seqLen: c.seqLen ?? maxSeq,
    lr: c.lr ?? 3e-3,
    warmup: c.warmup ?? Math.min(100, Math.round(steps * 0.05)),
    schedule: c.schedule ?? 'cosine',
    evalEvery: c.evalEvery ?? (steps >= 20 ? Math.floor(steps / 4) : 0),
    evalBatches: c.evalBatches ?? 20,
    seed: c.seed ?? 1,
  };
}

function checkDevice(device: string | undefined): Device {
  if (device === undefined || device === 'cpu') return 'cpu';
  const cuda = backends().cuda;
  if (!cuda.available) {
    const why = (cuda.reason ?? (cuda.compiled ? 'no usable GPU was found' : 'the addon was built without CUDA')).replace(/[\s.;,]+$/, '');
    throw new CliError(`--device cuda: CUDA was requested but is not available here, because ${why}. Give --device cpu (the default) to run on the CPU`);
  }
  return 'cuda';
}

/** Builds a Decoder; the library's validation errors become usage errors (the configuration came from the user). */
function buildModel(cfg: ModelConfig, vocab: number, device: Device): Decoder {
  try {
    return new Decoder({ ...cfg, vocab, device });
  } catch (e) {
    if (e instanceof TypeError || e instanceof RangeError) throw new UsageError(`invalid model configuration: ${firstLine(message(e))}`);
    throw e;
  }
}

interface Loaded {
  model: Decoder;
  tokenizer: CharTokenizer;
  modelConfig: ModelConfig;
  trainConfig?: Partial<TrainConfig> & { data?: DataSource };
  metadata: Record<string, string>;
}

/** The optimizer moments a Trainer checkpoint holds besides the parameters. */
const MOMENTS = TRAINER_MOMENTS;

/**
 * The metadata of a checkpoint written by `sharedformer train`: tokenizer, model and training configuration. Only the
 * header is read. The model configuration is checked as the Decoder checks it and its parameters (names, shapes, F32)
 * against the file's tensors, before any model is built: the file is at fault for whatever is wrong (CliError, exit
 * 1), and a small file cannot make the CLI allocate a large model (the parameters must be the file's tensors).
 */
function readCheckpointMeta(path: string, what: string): Omit<Loaded, 'model'> & { hasMoments: boolean } {
  let file: ReturnType<typeof readSafetensorsHeader>;
  try {
    file = readSafetensorsHeader(path);
  } catch (e) {
    if (e instanceof SafetensorsError) {
      const m = firstLine(message(e)), prefix = `safetensors ${path}: `;
      const why = m.startsWith(prefix) ? m.slice(prefix.length) : m;
      if (why === 'not a regular file') throw new CliError(`cannot read ${what} ${path}: it is not a regular file`);
      throw new CliError(`${what} ${path} is not a safetensors checkpoint (${why})`);
    }
    const code = (e as NodeJS.ErrnoException).code;
    throw new CliError(`cannot read ${what} ${path}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : firstLine(message(e))}`);
  }
  const md = file.metadata;
  if (md.format !== 'sharedformer' || md.model !== 'decoder') throw new CliError(`${what} ${path} is not a sharedformer decoder checkpoint`);
  if (!md.tokenizer) throw new CliError(`${what} ${path} has no tokenizer in its metadata (it was not written by 'sharedformer train')`);
  const bad = (m: string) => new CliError(m);
  let tokenizer: CharTokenizer;
  try {
    tokenizer = CharTokenizer.fromJSON(parseJSON(md.tokenizer, `the tokenizer in ${path}`, bad));
  } catch (e) {
    throw new CliError(`${what} ${path}: ${firstLine(message(e))}`);
  }
  const isObject = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);
  let modelConfig: ModelConfig;
  if (md.modelConfig !== undefined) {
    const mc = parseJSON(md.modelConfig, `the model configuration in ${path}`, bad);
    if (!isObject(mc)) throw new CliError(`${what} ${path}: the model configuration in its metadata is not a JSON object`);
    modelConfig = mc as ModelConfig;
  } else {
    const config = parseJSON(md.config, `the config in ${path}`, bad);
    const plan = parseJSON(md.plan, `the plan in ${path}`, bad) as { sharing?: unknown } | null;
    if (!isObject(config) || !isObject(plan)) throw new CliError(`${what} ${path}: the config and plan in its metadata must be JSON objects`);
    modelConfig = { ...(config as object), sharing: plan!.sharing } as ModelConfig;
  }
  delete (modelConfig as { vocab?: number }).vocab;
  delete (modelConfig as { device?: unknown }).device;
  const trainConfig = md.trainConfig ? (parseJSON(md.trainConfig, `the training configuration in ${path}`, bad) as Loaded['trainConfig']) : undefined;
  if (trainConfig !== undefined) checkRecordedTraining(`${what} ${path}`, trainConfig);
  checkCheckpointTensors(path, what, modelConfig, tokenizer.vocabSize, file.tensors);
  return { tokenizer, modelConfig, trainConfig, metadata: md, hasMoments: file.tensors.has('optimizer.m') };
}

/** The largest batch a checkpoint's recorded training configuration may ask eval or a resumed train for (--batch may ask more). */
export const MAX_RECORDED_BATCH = 4096;
/** The largest embedded corpus a checkpoint may record (--corpus-chars may ask more). */
export const MAX_RECORDED_CORPUS_CHARS = 100_000_000;

/**
 * Checks the training configuration recorded in a checkpoint, which eval and train --resume use as defaults: an object
 * of training keys with values of the right kinds, a batch of at most MAX_RECORDED_BATCH sequences and a data source
 * that is a file name or the embedded corpus of at most MAX_RECORDED_CORPUS_CHARS characters, so that a file cannot
 * make eval allocate what nobody asked for. The file is at fault for what is wrong (CliError, exit 1).
 */
function checkRecordedTraining(where: string, tc: unknown): void {
  const fault = (m: string) => new CliError(`${where}: the training configuration in its metadata ${m}`);
  if (typeof tc !== 'object' || tc === null || Array.isArray(tc)) throw fault('is not a JSON object');
  for (const [k, v] of Object.entries(tc)) {
    if (k === 'data') {
      const d = v as { file?: unknown; corpus?: unknown; chars?: unknown } | null;
      const fileOk = typeof d === 'object' && d !== null && typeof d.file === 'string' && d.file !== '' && Object.keys(d).length === 1;
      const corpusOk = typeof d === 'object' && d !== null && d.corpus === 'default' && Number.isSafeInteger(d.chars) && (d.chars as number) >= 1000 &&
        (d.chars as number) <= MAX_RECORDED_CORPUS_CHARS && Object.keys(d).length === 2;
      if (!fileOk && !corpusOk)
        throw fault(`has data ${JSON.stringify(v)?.slice(0, 80)}; expected { "file": NAME } or { "corpus": "default", "chars": 1000..${MAX_RECORDED_CORPUS_CHARS} }`);
    } else if (!(TRAIN_KEYS as readonly string[]).includes(k)) {
      throw fault(`has the unknown key '${k}'`);
    } else if (k === 'schedule') {
      if (!['cosine', 'linear', 'constant'].includes(v as string)) throw fault(`has schedule ${JSON.stringify(v)}`);
    } else if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw fault(`has ${k} = ${JSON.stringify(v)}, not a finite number >= 0`);
    }
  }
}

/** A batch size recorded in a checkpoint, used only when no flag or --config gives one: at most MAX_RECORDED_BATCH. */
function checkRecordedBatch(where: string, b: number | undefined): void {
  if (b !== undefined && !(Number.isSafeInteger(b) && b >= 1 && b <= MAX_RECORDED_BATCH))
    throw new CliError(`${where}: the training configuration in its metadata asks for batch size ${b}; at most ${MAX_RECORDED_BATCH} is taken from a file (give --batch to choose)`);
}

/** checkDecoderCheckpoint (models/decoder.ts) with its findings as the CLI's errors: the file is at fault (exit 1). */
function checkCheckpointTensors(path: string, what: string, config: ModelConfig, vocab: number, tensors: Map<string, SafeTensorInfo>): void {
  try {
    checkDecoderCheckpoint(`${what} ${path}`, { ...config, vocab } as DecoderConfig, tensors);
  } catch (e) {
    throw new CliError(firstLine(message(e)));
  }
}

/** Loads a model for inference from a checkpoint written by `sharedformer train` (optimizer moments are skipped). */
export function loadModel(path: string, device: Device = 'cpu', meta = readCheckpointMeta(path, '--model')): Loaded {
  let model: Decoder;
  try {
    model = new Decoder({ ...meta.modelConfig, vocab: meta.tokenizer.vocabSize, device });
  } catch (e) {
    // readCheckpointMeta checked this configuration; a failure here is still the file's.
    if (e instanceof TypeError || e instanceof RangeError) throw new CliError(`--model ${path}: invalid model configuration in its metadata: ${firstLine(message(e))}`);
    throw e;
  }
  const extra = new Map<string, Float32Array>();
  if (meta.hasMoments) for (const k of MOMENTS) extra.set(k, new Float32Array(model.store.numel));
  try {
    loadCheckpoint(path, model.store, model.meta(), extra);
  } catch (e) {
    model.store.dispose();
    throw new CliError(firstLine(message(e)));
  }
  model.eval();
  return { model, ...meta };
}

function loadData(f: Flags, recorded: DataSource | undefined, needed: string): { text: string; source: DataSource; label: string } {
  const file = str(f, 'data'), corpus = str(f, 'corpus');
  if (file !== undefined && corpus !== undefined) throw new UsageError('give either --data FILE or --corpus default, not both');
  let source: DataSource;
  if (file !== undefined) source = { file: resolve(file) };
  else if (corpus !== undefined) source = { corpus: 'default', chars: num(f, 'corpus-chars') ?? 400_000 };
  else if (recorded) {
    source = recorded;
    // A path recorded in a checkpoint is read only if it is a regular file (not /dev/zero, a FIFO, a directory).
    if ('file' in source) {
      let regular = false;
      try {
        regular = statSync(source.file).isFile();
      } catch {
        regular = true; // readText says why it cannot be read
      }
      if (!regular) throw new CliError(`the data file recorded in the checkpoint, ${source.file}, is not a regular file; give --data FILE`);
    }
  } else throw new UsageError(`${needed} needs --data FILE or --corpus default`);
  if ('file' in source) return { text: readText(source.file, '--data'), source, label: source.file };
  return { text: generateCorpus(source.chars), source, label: `the embedded corpus (${fmt(source.chars)} characters)` };
}

function encode(tok: CharTokenizer, text: string, what: string): Int32Array {
  try {
    return tok.encode(text);
  } catch (e) {
    throw new CliError(`${what}: ${firstLine(message(e)).replace(/^CharTokenizer\.encode: /, '')} of the model`);
  }
}

function makeDataset(tokens: Int32Array, vocab: number, seqLen: number, label: string): TokenDataset {
  const data = new TokenDataset(tokens, vocab);
  const need = seqLen + 1;
  if (data.train.length < need || data.val.length < need)
    throw new CliError(
      `${label} is too small: ${fmt(tokens.length)} characters give ${fmt(data.train.length)} for training and ${fmt(data.val.length)} for validation (the last 10%); each needs at least seq + 1 = ${need}`,
    );
  return data;
}

/** Mean validation loss over `batches` fixed batches, exactly as Trainer.evaluate computes it. */
async function evaluate(model: Decoder, data: TokenDataset, batches: number, B: number, T: number, seed: number): Promise<number> {
  let sum = 0;
  for (let i = 0; i < batches; i++) {
    const { ids, targets } = data.batch('val', B, T, seed, i, model.store.device);
    const l = noGrad(() => model.loss(ids, targets));
    sum += (await l.data())[0];
    for (const t of [l, ids, targets]) t.dispose();
  }
  return sum / batches;
}

/**
 * Generates `n` characters after `prompt` with Decoder.generate's sliding window (`slide: true`: windows of up to
 * maxSeq / 2 new characters, each a fresh KV-cache pass over the last characters). onText receives the text as it is
 * made. An empty prompt starts as at the beginning of a line.
 */
export async function generateText(
  model: Decoder, tok: CharTokenizer, prompt: string, n: number,
  o: { temperature?: number; topK?: number; topP?: number; seed: number; onText?: (s: string) => void },
): Promise<string> {
  const W = model.config.maxSeq;
  if (W < 2) throw new CliError(`the model's context (maxSeq ${W}) is too short to generate from`);
  let ctx = Array.from(encode(tok, prompt, 'the prompt'));
  if (ctx.length === 0) {
    const start = tok.chars.indexOf('\n');
    ctx = [start >= 0 ? start : 0];
  }
  const onText = o.onText;
  const ids = await model.generate(ctx, {
    maxNewTokens: n, temperature: o.temperature, topK: o.topK, topP: o.topP, seed: o.seed, slide: true,
    ...(onText ? { onTokens: (ids: number[]) => onText(tok.decode(ids)) } : {}),
  });
  return tok.decode(ids);
}

/**
 * SIGINTs within this many milliseconds of the previous one count as one: `npm run cli` forwards the SIGINT that a
 * terminal's Ctrl-C also sends to the whole process group, so one keypress can arrive twice.
 */
const SIGINT_BURST_MS = 300;

/**
 * SIGINT -> abort; or io.signal when the caller gives one. The first Ctrl-C requests a stop after the current step
 * (train then writes its checkpoint); a second one does not lose it: the command goes on finishing the step and the
 * checkpoint, and says so; a third quits at once (exit 130, no checkpoint).
 */
function interrupts(io: CliIO): { signal: AbortSignal; dispose(): void } {
  if (io.signal) return { signal: io.signal, dispose() {} };
  const ac = new AbortController();
  let presses = 0, lastAt = -Infinity;
  const onInt = () => {
    const now = performance.now();
    const burst = now - lastAt < SIGINT_BURST_MS;
    lastAt = now;
    if (burst && presses > 0) return;
    presses++;
    if (presses === 1) {
      io.stderr.write('\ninterrupted: stopping after the current step (Ctrl-C twice more to quit at once, without a checkpoint)\n');
      ac.abort();
    } else if (presses === 2) {
      io.stderr.write('\nfinishing the current step and the checkpoint... (Ctrl-C once more to quit at once, without it)\n');
    } else {
      io.stderr.write('\nquitting without finishing\n');
      process.exit(EXIT_INTERRUPTED);
    }
  };
  process.on('SIGINT', onInt);
  return { signal: ac.signal, dispose: () => void process.off('SIGINT', onInt) };
}

const hex4 = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
/**
 * Text made safe to print: every C0 control but tab and newline, DEL, every C1 control (ESC, CSI, ... which a terminal
 * would act on) written as \u001b and the like. Generated text and file names may hold any character.
 */
export function printable(s: string): string {
  return s.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, hex4);
}
/** One JSON object per line; JSON.stringify escapes C0 controls, and DEL, C1 controls, U+2028 and U+2029 are escaped too. */
const jsonLine = (io: CliIO, o: object) => io.stdout.write(`${JSON.stringify(o).replace(/[\x7f-\x9f\u2028\u2029]/g, hex4)}\n`);
const say = (io: CliIO, s = '') => io.stdout.write(`${printable(s)}\n`);

// ---------------------------------------------------------------------------------------------------------------------
// train

async function trainCommand(f: Flags, io: CliIO, signal: AbortSignal): Promise<number> {
  const json = f.json === true;
  const out = str(f, 'out');
  if (out === undefined) throw new UsageError('--out FILE.safetensors is required');
  if (!existsSync(dirname(resolve(out)))) throw new CliError(`cannot write --out ${out}: the folder ${dirname(resolve(out))} does not exist`);
  const resumePath = str(f, 'resume');
  const file = str(f, 'config') !== undefined ? readConfigFile(str(f, 'config')!) : { model: {}, train: {} };
  const device = checkDevice(str(f, 'device'));
  if (f.threads !== undefined) setNumThreads(f.threads as number);

  const prior = resumePath !== undefined ? readCheckpointMeta(resumePath, '--resume') : undefined;
  if (prior && f['vocab-from-data']) throw new UsageError('--vocab-from-data cannot be used with --resume (the vocabulary comes from the checkpoint)');
  if (prior && !prior.hasMoments) throw new CliError(`--resume ${resumePath} holds no optimizer state (it was not written by a Trainer)`);
  const { text, source, label } = loadData(f, prior?.trainConfig?.data, 'train');
  const tok = prior?.tokenizer ?? vocabulary(text, f['vocab-from-data'] === true);
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
  const data = makeDataset(tokens, tok.vocabSize, tcfg.seqLen, label);
  const model = buildModel({ ...mcfg, seed: mcfg.seed ?? tcfg.seed }, tok.vocabSize, device);
  let trainer: Trainer;
  try {
    trainer = new Trainer(model, data, { ...tcfg, signal });
  } catch (e) {
    model.store.dispose();
    if (e instanceof TypeError || e instanceof RangeError) {
      const why = `invalid training configuration: ${firstLine(message(e)).replace(/^Trainer: /, '')}`;
      // Resuming with no training flag and no --config training key: the configuration is the checkpoint's own.
      const fromUser = Object.keys(FLAG_TO_TRAIN).some((k) => f[k] !== undefined) || Object.keys(file.train).length > 0;
      if (prior && !fromUser) throw new CliError(`--resume ${resumePath}: ${why} (recorded in its metadata)`);
      throw new UsageError(why);
    }
    throw e;
  }
  try {
    if (resumePath !== undefined) {
      try {
        trainer.resume(resumePath);
      } catch (e) {
        throw new CliError(`cannot resume from ${resumePath}: ${firstLine(message(e)).replace(/^(loadCheckpoint|Trainer\.resume): /, '')}`);
      }
    }
    const extra = {
      tokenizer: JSON.stringify(tok.toJSON()),
      modelConfig: JSON.stringify({ ...mcfg, seed: mcfg.seed ?? tcfg.seed }),
      trainConfig: JSON.stringify({ ...tcfg, data: source }),
      cli: `sharedformer ${version()}`,
    };
    const save = () => {
      try {
        trainer.saveSync(out, extra);
      } catch (e) {
        throw new CliError(`cannot write the checkpoint ${out}: ${firstLine(message(e))}`);
      }
    };
    const acc = model.accounting();
    const start = trainer.step;
    if (json) {
      jsonLine(io, {
        type: 'start', model: { ...mcfg, vocab: tok.vocabSize }, plan: model.plan.describe(), uniqueParameters: acc.uniqueParameters,
        parameterBytes: acc.parameterBytes, train: tcfg, data: source, characters: tokens.length, startStep: start, device,
      });
    } else {
      say(io, `model     ${model.plan.describe()}; ${fmt(acc.uniqueParameters)} unique parameters (${fmt(acc.parameterBytes)} bytes)`);
      say(io, `          dModel ${model.config.dModel}, ${model.config.heads} heads, dFF ${model.config.dFF}, context ${model.config.maxSeq}, vocabulary ${tok.vocabSize}, on ${device}`);
      say(io, `data      ${label}: ${fmt(tokens.length)} characters (${fmt(data.train.length)} train, ${fmt(data.val.length)} validation)`);
      say(io, `training  steps ${start} -> ${tcfg.steps}, batch ${tcfg.batchSize} x ${tcfg.seqLen}${(tcfg.accumulate ?? 1) > 1 ? ` x ${tcfg.accumulate}` : ''}, lr ${tcfg.lr} (${tcfg.schedule}, warmup ${tcfg.warmup}), ${getNumThreads()} CPU threads`);
      if (resumePath !== undefined) say(io, `resumed   from ${resumePath} at step ${start}`);
    }

    const progress = new Progress(io.stderr, 'train', tcfg.steps, f.quiet === true);
    let lastEval: EvalInfo | undefined;
    trainer.on('eval', (e: EvalInfo) => {
      lastEval = e;
      progress.clear();
      if (json) jsonLine(io, { type: 'eval', step: e.step, loss: e.loss, bpc: e.bpc });
      else say(io, `step ${String(e.step).padStart(String(tcfg.steps).length)}  validation loss ${e.loss.toFixed(4)}  ${e.bpc.toFixed(3)} bits/char`);
    });
    const every = num(f, 'checkpoint-every');
    const t0 = performance.now();
    let last: StepInfo | undefined;
    try {
      for await (const s of trainer.steps()) {
        last = s;
        progress.update(s);
        if (every && s.step % every === 0 && s.step < tcfg.steps) {
          save();
          progress.clear();
          if (json) jsonLine(io, { type: 'checkpoint', step: s.step, path: out });
          else say(io, `checkpoint step ${s.step} written to ${out}`);
        }
      }
    } catch (e) {
      progress.done();
      // A failed step (say, a non-finite loss) leaves the last checkpoint in place.
      throw new CliError(firstLine(message(e)).replace(/^Trainer: /, ''));
    }
    progress.done();
    const seconds = (performance.now() - t0) / 1000;
    if (trainer.step < tcfg.steps && signal.aborted) {
      save();
      releaseTape();
      if (json) jsonLine(io, { type: 'interrupted', step: trainer.step, steps: tcfg.steps, checkpoint: out });
      else say(io, `interrupted at step ${trainer.step} of ${tcfg.steps}; checkpoint written to ${out} (continue with --resume ${out})`);
      return EXIT_INTERRUPTED;
    }
    // The final evaluation (unless --eval-every just made it).
    const val = lastEval?.step === trainer.step ? lastEval : await trainer.evaluate();
    save();
    releaseTape();
    // This session's steps, time and throughput (StepInfo.tokensPerSec counts this session only); the step reached apart.
    const tokensPerSec = last ? last.tokensPerSec : 0;
    const sessionSteps = trainer.step - start;
    if (json)
      jsonLine(io, {
        type: 'train', steps: sessionSteps, step: trainer.step, startStep: start, loss: last?.loss ?? null, valLoss: val.loss, bpc: val.bpc,
        tokensPerSec, seconds, checkpoint: out,
      });
    else {
      const reached = start > 0 ? ` (step ${start} -> ${trainer.step})` : '';
      say(io, `done      ${sessionSteps} steps${reached} in ${seconds.toFixed(1)} s (${fmt(tokensPerSec)} tokens/s); train loss ${fixed(last?.loss, 4)}, validation loss ${val.loss.toFixed(4)} (${val.bpc.toFixed(3)} bits/char)`);
      say(io, `saved     ${out}`);
    }
    return EXIT_OK;
  } finally {
    trainer.removeAllListeners();
    trainer.dispose();
    model.store.dispose();
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// eval, generate

async function evalCommand(f: Flags, io: CliIO): Promise<number> {
  const path = str(f, 'model');
  if (path === undefined) throw new UsageError('--model FILE.safetensors is required');
  if (f.threads !== undefined) setNumThreads(f.threads as number);
  const device = checkDevice(str(f, 'device'));
  const meta = readCheckpointMeta(path, '--model');
  const { text, label } = loadData(f, meta.trainConfig?.data, 'eval');
  const tc = meta.trainConfig ?? {};
  const maxSeq = meta.modelConfig.maxSeq ?? 64;
  if (f.batch === undefined) checkRecordedBatch(`--model ${path}`, tc.batchSize);
  const B = num(f, 'batch') ?? tc.batchSize ?? 16;
  const T = num(f, 'seq') ?? Math.min(tc.seqLen ?? maxSeq, maxSeq);
  if (T > maxSeq) throw new UsageError(`--seq ${T} exceeds the model's context (maxSeq ${maxSeq})`);
  const seed = num(f, 'seed') ?? tc.seed ?? 1;
  const batches = num(f, 'batches') ?? 20;
  const tokens = encode(meta.tokenizer, text, label);
  const data = makeDataset(tokens, meta.tokenizer.vocabSize, T, label);
  const { model } = loadModel(path, device, meta);
  try {
    const loss = await evaluate(model, data, batches, B, T, seed);
    const bpc = loss / Math.LN2;
    if (f.json) jsonLine(io, { type: 'eval', model: path, data: label, loss, bpc, batches, batchSize: B, seqLen: T, characters: batches * B * T });
    else {
      say(io, `validation loss ${loss.toFixed(4)} nats/char  ${bpc.toFixed(3)} bits/char`);
      say(io, `(${batches} batches of ${B} x ${T} characters from the validation split, the last 10%, of ${label})`);
    }
    return EXIT_OK;
  } finally {
    releaseTape();
    model.store.dispose();
  }
}

async function generateCommand(f: Flags, io: CliIO): Promise<number> {
  const path = str(f, 'model');
  if (path === undefined) throw new UsageError('--model FILE.safetensors is required');
  if (f.threads !== undefined) setNumThreads(f.threads as number);
  const prompt = str(f, 'prompt') ?? '';
  const n = num(f, 'tokens') ?? 200;
  const seed = num(f, 'seed') ?? Math.floor(Math.random() * 0x7fffffff);
  const temperature = num(f, 'temperature') ?? 0.8;
  const topK = num(f, 'top-k'), topP = num(f, 'top-p');
  const { model, tokenizer } = loadModel(path, checkDevice(str(f, 'device')));
  try {
    encode(tokenizer, prompt, 'the prompt'); // before anything is printed
    if (f.json) {
      const text = await generateText(model, tokenizer, prompt, n, { temperature, topK, topP, seed });
      jsonLine(io, { type: 'generate', prompt, text, tokens: n, temperature, topK: topK ?? null, topP: topP ?? null, seed });
    } else {
      io.stdout.write(printable(prompt));
      await generateText(model, tokenizer, prompt, n, { temperature, topK, topP, seed, onText: (s) => io.stdout.write(printable(s)) });
      io.stdout.write('\n');
    }
    return EXIT_OK;
  } finally {
    model.store.dispose();
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// info, bench

async function infoCommand(f: Flags, io: CliIO): Promise<number> {
  const b = buildInfo();
  const be = backends();
  const info = {
    version: version(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    addon: b.path,
    build: { builder: b.builder, version: b.version, napiVersion: b.napiVersion, compiler: b.compiler ?? null, cuda: b.cuda },
    cuda: { compiled: be.cuda.compiled, available: be.cuda.available, reason: be.cuda.reason ?? null, devices: be.cuda.devices, architectures: be.cuda.architectures },
    cpu: { threads: getNumThreads(), simd: be.cpu.simd, features: be.cpu.features },
  };
  if (f.json) {
    jsonLine(io, { type: 'info', ...info });
    return EXIT_OK;
  }
  say(io, `sharedformer ${info.version} (Node ${info.node}, ${info.platform})`);
  say(io, `addon   ${info.addon}`);
  say(io, `build   ${b.builder}, N-API ${b.napiVersion}${b.compiler ? `, ${b.compiler}` : ''}; CUDA kernels ${be.cuda.compiled ? 'compiled' : 'not compiled'}`);
  if (be.cuda.available)
    for (const d of be.cuda.devices) say(io, `CUDA    device ${d.index}: ${d.name} (sm_${d.computeCapability.replace('.', '')}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB)`);
  else say(io, `CUDA    unavailable${be.cuda.reason ? `: ${be.cuda.reason}` : ''}`);
  say(io, `CPU     ${info.cpu.threads} threads, ${info.cpu.simd}${be.cpu.features.length ? ` (${be.cpu.features.join(' ')})` : ''}`);
  return EXIT_OK;
}

/** How `sharedformer bench ARGS` runs scripts/bench.ts, or why it cannot (the script ships only in a checkout). */
export function benchInvocation(args: string[], root: string = packageRoot): { command: string; args: string[]; cwd: string } {
  const script = join(root, 'scripts', 'bench.ts');
  if (!existsSync(script))
    throw new CliError(`bench runs scripts/bench.ts, which only a checkout of the repository has (not found in ${root}); clone it, run npm ci, then npm run bench`);
  if (!existsSync(join(root, 'node_modules', 'tsx')))
    throw new CliError(`bench needs tsx, a development dependency: run npm ci in ${root}`);
  return { command: process.execPath, args: ['--import', 'tsx', script, ...args], cwd: root };
}

/** The suites of scripts/bench.ts (kernels and tensors by default; train only when named). */
const BENCH_SUITES = ['kernels', 'tensors', 'train'] as const;
const BENCH_SPECS: Specs = {
  json: { kind: 'string', arg: 'FILE', path: true, help: 'also write the rows to FILE as JSON' },
  help: COMMON.help,
};

/**
 * Checks `bench` arguments as every other command checks its own: suites by name, then --json FILE (or
 * --json=FILE); anything else is a UsageError (exit 2), so a typo never starts the whole default benchmark. Returns
 * the arguments for scripts/bench.ts: the suites, then --json FILE.
 */
export function benchArgs(args: string[]): string[] {
  const suites: string[] = [];
  const flags: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith('--')) {
      if (!(BENCH_SUITES as readonly string[]).includes(a)) throw new UsageError(`unknown suite '${a}'; suites: ${BENCH_SUITES.join(', ')}`);
      suites.push(a);
      continue;
    }
    flags.push(a);
    if (a === '--json' && i + 1 < args.length && !args[i + 1].startsWith('--')) flags.push(args[++i]);
  }
  const f = parseFlags(flags, BENCH_SPECS);
  const json = str(f, 'json');
  if (json === '') throw new UsageError('--json needs a value (FILE)');
  return [...suites, ...(json !== undefined ? ['--json', json] : [])];
}

async function benchCommand(args: string[], io: CliIO): Promise<number> {
  const inv = benchInvocation(benchArgs(args));
  const inherit = io.stdout === process.stdout && io.stderr === process.stderr;
  return new Promise((done, fail) => {
    const child = spawn(inv.command, inv.args, { cwd: inv.cwd, stdio: inherit ? 'inherit' : ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (d: Buffer) => io.stdout.write(d.toString()));
    child.stderr?.on('data', (d: Buffer) => io.stderr.write(d.toString()));
    child.on('error', (e) => fail(new CliError(`could not start the benchmark: ${e.message}`)));
    child.on('close', (code, sig) => done(code ?? (sig === 'SIGINT' ? EXIT_INTERRUPTED : EXIT_RUNTIME)));
  });
}

// ---------------------------------------------------------------------------------------------------------------------
// demo

/** The demo's models: small enough that a few hundred steps fit in half a minute on two CPU cores. */
const DEMO_MODEL = { dModel: 64, heads: 4, dFF: 256, layers: 6, maxSeq: 32 };
const DEMO_BATCH = 16;
const DEMO_LR = 5e-3;

interface DemoRow {
  strategy: string;
  plan: string;
  uniqueParameters: number;
  parameterBytes: number;
  steps: number;
  valLoss: number;
  bpc: number;
  tokensPerSec: number;
  trainSeconds: number;
}

async function demoCommand(f: Flags, io: CliIO, signal: AbortSignal): Promise<number> {
  const began = performance.now();
  const json = f.json === true;
  const tiny = f.tiny === true;
  const seconds = num(f, 'seconds') ?? 60;
  const seed = num(f, 'seed') ?? 1;
  if (f.threads !== undefined) setNumThreads(f.threads as number);
  const base = tiny ? { dModel: 16, heads: 2, dFF: 32, layers: 2, maxSeq: 16 } : DEMO_MODEL;
  const dims = {
    dModel: num(f, 'd-model') ?? base.dModel, heads: num(f, 'heads') ?? base.heads, dFF: num(f, 'd-ff') ?? base.dFF,
    layers: num(f, 'layers') ?? base.layers, maxSeq: num(f, 'max-seq') ?? base.maxSeq,
  };
  const shared: Partial<SharingConfig> = { strategy: (str(f, 'strategy') ?? 'all') as SharingConfig['strategy'] };
  if (f.unique !== undefined) shared.unique = f.unique as number;
  if (f.rank !== undefined) shared.rank = f.rank as number;
  if (shared.strategy === 'none') throw new UsageError('--strategy none is what the shared model is compared with; pick a sharing strategy');
  const B = num(f, 'batch') ?? (tiny ? 4 : DEMO_BATCH), T = dims.maxSeq, lr = num(f, 'lr') ?? DEMO_LR;
  buildModel({ ...dims, sharing: shared }, 64, 'cpu').store.dispose(); // a bad combination of flags fails before any output
  const evalBatches = tiny ? 2 : 20;
  const sampleChars = tiny ? 24 : 160;

  const corpus = describeCorpus(tiny ? 30_000 : 400_000, 1);
  const tok = CharTokenizer.fromText(corpus.text);
  const data = new TokenDataset(tok.encode(corpus.text), tok.vocabSize);
  const progressQuiet = f.quiet === true;
  const line = (s = '') => { if (!json) say(io, s); };
  if (json)
    jsonLine(io, {
      type: 'corpus', characters: corpus.text.length, stories: corpus.stories, alphabet: corpus.alphabet,
      unigramBitsPerChar: corpus.unigramBitsPerChar, sourceBitsPerChar: corpus.sourceBitsPerChar,
    });
  line(`sharedformer demo: a shared model (${shared.strategy}) vs. an unshared one of the same depth, on the embedded corpus`);
  line(`corpus   ${fmt(corpus.text.length)} characters of generated stories (${fmt(corpus.stories)} stories, ${corpus.alphabet} distinct characters)`);
  line(`         unigram entropy ${corpus.unigramBitsPerChar.toFixed(2)} bits/char; the generator's own entropy ${corpus.sourceBitsPerChar.toFixed(2)} bits/char`);
  line(`model    ${dims.layers} layers, dModel ${dims.dModel}, ${dims.heads} heads, dFF ${dims.dFF}, context ${dims.maxSeq}; batch ${B} x ${T}, AdamW lr ${lr}, cosine; ${getNumThreads()} CPU threads`);

  const build = (which: 'shared' | 'none') => buildModel({ ...dims, sharing: which === 'shared' ? shared : { strategy: 'none' }, seed }, tok.vocabSize, 'cpu');
  const options = (steps: number): TrainerOptions => ({
    steps, batchSize: B, seqLen: T, lr, warmup: Math.max(1, Math.round(steps * 0.05)), evalBatches, seed, signal,
  });

  // Steps: time a few steps of a throwaway copy of the shared model, then give each model half of --seconds (the
  // calibration, evaluations and samples add a few seconds).
  let steps = num(f, 'steps');
  if (steps === undefined) {
    const probe = build('shared');
    const pt = new Trainer(probe, data, options(8));
    const times: number[] = [];
    let t = performance.now();
    for await (const _ of pt.steps()) {
      const now = performance.now();
      times.push(now - t);
      t = now;
      if (signal.aborted) break;
    }
    pt.dispose();
    probe.store.dispose();
    releaseTape();
    const timed = times.slice(3).sort((a, b) => a - b); // the first steps warm the allocator up
    const ms = timed.length ? timed[Math.floor(timed.length / 2)] : 1000;
    steps = Math.max(10, Math.floor((seconds * 1000 * 0.5) / ms));
    line(`steps    ${steps} per model (${ms.toFixed(0)} ms per step measured; --seconds ${seconds})`);
  }

  const rows: DemoRow[] = [];
  for (const [i, which] of (['shared', 'none'] as const).entries()) {
    if (signal.aborted) break;
    const model = build(which);
    const strategy = model.plan.strategy;
    const acc = model.accounting();
    line();
    line(`[${i + 1}/2] ${which === 'shared' ? 'shared' : 'unshared'}: ${model.plan.describe()}; ${fmt(acc.uniqueParameters)} unique parameters, ${fmt(acc.parameterBytes)} bytes`);
    const trainer = new Trainer(model, data, options(steps));
    const progress = new Progress(io.stderr, which === 'shared' ? 'shared  ' : 'unshared', steps, progressQuiet);
    const t0 = performance.now();
    let last: StepInfo | undefined;
    try {
      for await (const s of trainer.steps()) {
        last = s;
        progress.update(s);
      }
    } finally {
      progress.done();
    }
    const trainSeconds = (performance.now() - t0) / 1000;
    if (signal.aborted) {
      trainer.dispose();
      model.store.dispose();
      releaseTape();
      break;
    }
    const val = await trainer.evaluate();
    const row: DemoRow = {
      strategy, plan: model.plan.describe(), uniqueParameters: acc.uniqueParameters, parameterBytes: acc.parameterBytes,
      steps, valLoss: val.loss, bpc: val.bpc, tokensPerSec: last?.tokensPerSec ?? 0, trainSeconds,
    };
    rows.push(row);
    if (json) jsonLine(io, { type: 'model', ...row });
    line(`        trained ${steps} steps in ${trainSeconds.toFixed(1)} s; train loss ${fixed(last?.loss, 3)}; validation loss ${val.loss.toFixed(3)} nats/char = ${val.bpc.toFixed(2)} bits/char`);
    if (which === 'shared') {
      model.eval();
      line('        samples (temperature 0.8, top-k 40):');
      const prompts = ['Once upon a time', '"Where is', 'The old fisherman'];
      for (const [k, prompt] of prompts.entries()) {
        const text = await generateText(model, tok, prompt, sampleChars, { temperature: 0.8, topK: 40, seed: seed + k });
        if (json) jsonLine(io, { type: 'sample', strategy, prompt, text, temperature: 0.8, topK: 40, seed: seed + k });
        line(`        ${k + 1}> ${(prompt + text).replace(/\n/g, '\n           ')}`);
      }
    }
    trainer.dispose();
    model.store.dispose();
    releaseTape();
  }
  if (signal.aborted) {
    io.stderr.write('demo interrupted\n');
    return EXIT_INTERRUPTED;
  }
  if (!json) {
    line();
    line(`comparison (${steps} steps each; the same data, batches, schedule and seed)`);
    const head = ['strategy', 'unique parameters', 'parameter bytes', 'val loss', 'bits/char', 'tokens/s'];
    const cells = rows.map((r) => [r.strategy, fmt(r.uniqueParameters), fmt(r.parameterBytes), r.valLoss.toFixed(3), r.bpc.toFixed(2), fmt(r.tokensPerSec)]);
    for (const l of tableLines(head, cells)) line(l);
    if (rows.length === 2) {
      const [a, n] = rows;
      line(`  the shared model keeps ${(a.uniqueParameters / n.uniqueParameters * 100).toFixed(0)}% of the parameters (${(n.uniqueParameters / a.uniqueParameters).toFixed(1)}x fewer) at ${(a.bpc - n.bpc >= 0 ? '+' : '')}${(a.bpc - n.bpc).toFixed(2)} bits/char`);
    }
    line(`  reference: uniform ${Math.log2(tok.vocabSize).toFixed(2)} bits/char; unigram ${corpus.unigramBitsPerChar.toFixed(2)}; the generator's entropy ${corpus.sourceBitsPerChar.toFixed(2)}`);
    line(`total ${((performance.now() - began) / 1000).toFixed(1)} s`);
  }
  return EXIT_OK;
}

// ---------------------------------------------------------------------------------------------------------------------
// compare

/** Right-aligned columns (the first left-aligned), two spaces apart, indented by two. */
function tableLines(head: string[], cells: string[][]): string[] {
  const w = head.map((h, j) => Math.max(h.length, ...cells.map((c) => c[j].length)));
  const row = (c: string[]) => `  ${c.map((x, j) => (j === 0 ? x.padEnd(w[j]) : x.padStart(w[j]))).join('  ')}`.trimEnd();
  return [row(head), ...cells.map(row)];
}

const TAKES_UNIQUE = new Set(['sequence', 'cycle', 'cycle-rev']);
const TAKES_RANK = new Set(['basis', 'delta']);

/** One entry of --strategies: `none`, `all`, `cycle-rev:3` (unique blocks), `delta:8` (rank), ... */
export function parseStrategyList(list: string, layers: number): { name: string; sharing: Partial<SharingConfig> }[] {
  const entries = list.split(',').map((s) => s.trim());
  if (entries.some((e) => e === '')) throw new UsageError(`--strategies has an empty entry in '${list}' (a comma-separated list like none,all,cycle-rev:3)`);
  const seen = new Set<string>();
  return entries.map((entry) => {
    const m = /^([a-z-]+)(?::(\d+))?$/.exec(entry);
    const strategy = m?.[1] ?? entry;
    if (!m || !STRATEGIES.includes(strategy as SharingConfig['strategy']) || strategy === 'custom')
      throw new UsageError(`--strategies: unknown entry '${entry}'; use ${STRATEGIES.filter((s) => s !== 'custom').join(', ')}, with :U (unique blocks) for sequence, cycle and cycle-rev and :R (rank) for basis and delta`);
    const n = m[2] === undefined ? undefined : Number(m[2]);
    const sharing: Partial<SharingConfig> = { strategy: strategy as SharingConfig['strategy'] };
    if (TAKES_UNIQUE.has(strategy)) {
      if (n === undefined) throw new UsageError(`--strategies: '${entry}' needs the number of unique blocks, e.g. ${strategy}:${Math.max(1, Math.floor(layers / 2))}`);
      if (n < 1 || n > layers) throw new UsageError(`--strategies: '${entry}': unique blocks must be in [1, ${layers}] (--layers ${layers})`);
      sharing.unique = n;
    } else if (TAKES_RANK.has(strategy)) {
      if (n === undefined) throw new UsageError(`--strategies: '${entry}' needs a rank, e.g. ${strategy}:8`);
      if (n < 1) throw new UsageError(`--strategies: '${entry}': the rank must be >= 1`);
      sharing.rank = n;
    } else if (n !== undefined) {
      throw new UsageError(`--strategies: '${entry}': ${strategy} takes no number`);
    }
    if (seen.has(entry)) throw new UsageError(`--strategies: '${entry}' is listed twice`);
    seen.add(entry);
    return { name: entry, sharing };
  });
}

/** A row of the comparison (and of compare.json). */
export interface CompareRow {
  name: string;
  plan: string;
  uniqueParameters: number;
  parameterBytes: number;
  steps: number;
  trainLoss: number | null;
  valLoss: number;
  bpc: number;
  tokensPerSec: number;
  trainSeconds: number;
  curve: { train: [number, number][]; val: [number, number][] };
}

async function compareCommand(f: Flags, io: CliIO, signal: AbortSignal): Promise<number> {
  const began = performance.now();
  const json = f.json === true;
  const outDir = str(f, 'out') ?? resolve(invocationDir(), 'sharedformer-compare');
  if (existsSync(outDir) && !statSync(outDir).isDirectory()) throw new CliError(`cannot write --out ${outDir}: it exists and is not a folder`);
  const file = str(f, 'config') !== undefined ? readConfigFile(str(f, 'config')!) : { model: {}, train: {} };
  const device = checkDevice(str(f, 'device'));
  if (f.threads !== undefined) setNumThreads(f.threads as number);
  if (file.model.sharing !== undefined) throw new UsageError(`--config: 'sharing' does not apply to compare; list the strategies with --strategies`);

  const base = modelConfigFrom(DEFAULT_MODEL, file.model, f);
  const layers = base.layers;
  const entries = parseStrategyList(str(f, 'strategies') ?? `none,all,cycle-rev:${Math.max(1, Math.floor(layers / 2))}`, layers);
  const tcfg = trainConfigFrom({ steps: 300 }, file.train, f, base.maxSeq ?? 64);
  const evalEvery = tcfg.evalEvery || Math.max(1, Math.floor(tcfg.steps / 10));
  const { text, source, label } = loadData(f.data === undefined && f.corpus === undefined ? { ...f, corpus: 'default' } : f, undefined, 'compare');
  const tok = vocabulary(text, f['vocab-from-data'] === true);
  const data = makeDataset(encode(tok, text, label), tok.vocabSize, tcfg.seqLen, label);
  const configs = entries.map((e) => ({ ...e, model: { ...base, sharing: { ...e.sharing, ...(base.sharing?.kvShareGroup ? { kvShareGroup: base.sharing.kvShareGroup } : {}) }, seed: base.seed ?? tcfg.seed } }));
  // Every model is built once before any training, so that a bad combination fails at once; and the options too.
  for (const c of configs) {
    const m = buildModel(c.model, tok.vocabSize, device);
    try {
      new Trainer(m, data, { ...tcfg, evalEvery: 0 }).dispose();
    } catch (e) {
      if (e instanceof TypeError || e instanceof RangeError) throw new UsageError(`invalid training configuration: ${firstLine(message(e)).replace(/^Trainer: /, '')}`);
      throw e;
    } finally {
      m.store.dispose();
    }
  }
  try {
    mkdirSync(outDir, { recursive: true });
  } catch (e) {
    throw new CliError(`cannot create --out ${outDir}: ${firstLine(message(e))}`);
  }

  const settings = {
    model: { ...base, sharing: undefined, vocab: tok.vocabSize }, train: tcfg, evalEvery, data: source, device,
    threads: getNumThreads(), version: version(), date: new Date().toISOString(),
  };
  const line = (s = '') => { if (!json) say(io, s); };
  if (json) jsonLine(io, { type: 'start', strategies: entries.map((e) => e.name), ...settings });
  line(`compare   ${entries.length} sharing strategies at ${tcfg.steps} steps each: ${entries.map((e) => e.name).join(', ')}`);
  line(`model     ${layers} layers, dModel ${base.dModel}, ${base.heads} heads, dFF ${base.dFF}, context ${base.maxSeq}, vocabulary ${tok.vocabSize}, on ${device}`);
  line(`data      ${label}: ${fmt(data.train.length)} train / ${fmt(data.val.length)} validation characters; the same batches for every run`);
  line(`training  batch ${tcfg.batchSize} x ${tcfg.seqLen}, lr ${tcfg.lr} (${tcfg.schedule}, warmup ${tcfg.warmup}), validation every ${evalEvery} steps on ${tcfg.evalBatches} batches, ${getNumThreads()} CPU threads`);

  const rows: CompareRow[] = [];
  const write = (partial: boolean) => {
    const report = { ...settings, partial, rows };
    writeFileAtomic(join(outDir, 'compare.json'), `${JSON.stringify(report, null, 2)}\n`);
    if (rows.length)
      writeFileAtomic(join(outDir, 'loss.svg'), lossCurveSvg(rows.map((r) => ({ name: r.name, train: r.curve.train, val: r.curve.val })), {
        title: `sharedformer compare: ${layers} layers, dModel ${base.dModel}, ${tcfg.steps} steps`,
        subtitle: `${label.replace(/^the /, '')}; batch ${tcfg.batchSize} x ${tcfg.seqLen}; ${settings.date.slice(0, 10)}`,
      }));
  };
  for (const [i, c] of configs.entries()) {
    if (signal.aborted) break;
    const model = buildModel(c.model, tok.vocabSize, device);
    const acc = model.accounting();
    const trainer = new Trainer(model, data, { ...tcfg, evalEvery, signal });
    const curve: CompareRow['curve'] = { train: [], val: [] };
    let lastEval: EvalInfo | undefined;
    trainer.on('eval', (e: EvalInfo) => {
      lastEval = e;
      curve.val.push([e.step, e.loss]);
    });
    line();
    line(`[${i + 1}/${configs.length}] ${c.name}: ${model.plan.describe()}; ${fmt(acc.uniqueParameters)} unique parameters, ${fmt(acc.parameterBytes)} bytes`);
    const progress = new Progress(io.stderr, c.name.padEnd(Math.max(...entries.map((e) => e.name.length))), tcfg.steps, f.quiet === true);
    const t0 = performance.now();
    let last: StepInfo | undefined;
    try {
      for await (const s of trainer.steps()) {
        last = s;
        curve.train.push([s.step, s.loss]);
        progress.update(s);
      }
      progress.done();
      if (signal.aborted) break;
      const trainSeconds = (performance.now() - t0) / 1000;
      const val = lastEval?.step === trainer.step ? lastEval : await trainer.evaluate();
      const row: CompareRow = {
        name: c.name, plan: model.plan.describe(), uniqueParameters: acc.uniqueParameters, parameterBytes: acc.parameterBytes,
        steps: trainer.step, trainLoss: last?.loss ?? null, valLoss: val.loss, bpc: val.bpc, tokensPerSec: last?.tokensPerSec ?? 0, trainSeconds, curve,
      };
      rows.push(row);
      write(true);
      if (json) jsonLine(io, { type: 'result', ...row, curve: undefined });
      else line(`        validation loss ${row.valLoss.toFixed(4)} nats/char = ${row.bpc.toFixed(3)} bits/char; ${fmt(row.tokensPerSec)} tokens/s; ${trainSeconds.toFixed(1)} s`);
    } catch (e) {
      progress.done();
      throw new CliError(`${c.name}: ${firstLine(message(e)).replace(/^Trainer: /, '')}`);
    } finally {
      trainer.removeAllListeners();
      trainer.dispose();
      model.store.dispose();
      releaseTape();
    }
  }
  write(signal.aborted);
  const files = { json: join(outDir, 'compare.json'), plot: rows.length ? join(outDir, 'loss.svg') : null };
  if (signal.aborted) {
    if (json) jsonLine(io, { type: 'interrupted', completed: rows.length, of: entries.length, ...files });
    else io.stderr.write(`compare interrupted after ${rows.length} of ${entries.length} runs; partial results in ${files.json}\n`);
    return EXIT_INTERRUPTED;
  }
  if (json) {
    jsonLine(io, { type: 'compare', ...files, seconds: (performance.now() - began) / 1000 });
    return EXIT_OK;
  }
  const ref = rows.find((r) => r.name === 'none');
  const head = ['strategy', 'unique params', 'bytes', ...(ref ? ['vs none'] : []), 'val loss', 'bits/char', 'tokens/s'];
  const cells = rows.map((r) => [
    r.name, fmt(r.uniqueParameters), fmt(r.parameterBytes), ...(ref ? [`${((100 * r.uniqueParameters) / ref.uniqueParameters).toFixed(0)}%`] : []),
    r.valLoss.toFixed(4), r.bpc.toFixed(3), fmt(r.tokensPerSec),
  ]);
  line();
  line(`comparison (${tcfg.steps} steps each; the same data, batches, schedule, initialisation seed and validation batches)`);
  for (const l of tableLines(head, cells)) line(l);
  line(`wrote     ${files.json}`);
  line(`          ${files.plot} (loss curves; open it in a browser)`);
  line(`total     ${((performance.now() - began) / 1000).toFixed(1)} s`);
  return EXIT_OK;
}

// ---------------------------------------------------------------------------------------------------------------------
// commands and help

const TRAIN_SPECS: Specs = {
  ...DATA_FLAGS,
  config: { kind: 'string', arg: 'FILE', path: true, help: 'a JSON object of model and training keys (flags override it)' },
  'vocab-from-data': { kind: 'bool', help: 'vocabulary: only the characters of the data (default: printable ASCII, tab, newline and the data\'s characters)' },
  out: { kind: 'string', arg: 'FILE', path: true, help: 'the checkpoint to write (.safetensors; required)' },
  resume: { kind: 'string', arg: 'FILE', path: true, help: 'continue from a checkpoint written by train (model, optimizer, step, tokenizer and settings)' },
  'checkpoint-every': { kind: 'int', arg: 'N', min: 1, help: 'also write the checkpoint every N steps' },
  ...MODEL_FLAGS,
  ...TRAIN_FLAGS,
  ...QUIET,
  ...COMMON,
};

const COMMANDS: Record<string, Command> = {
  demo: {
    summary: 'train a shared and an unshared model on the embedded corpus and compare them',
    usage: 'sharedformer demo [--seconds 60] [--json]',
    specs: {
      seconds: { kind: 'number', arg: 'S', min: 0, above: true, help: 'about how long the whole demo takes (default 60)' },
      seed: { kind: 'int', arg: 'N', min: 0, max: 0xffffffff, help: 'seed of the initialisation, batches and samples (default 1)' },
      tiny: { kind: 'bool', help: 'tiny model and corpus (tests)', hidden: true },
      steps: { kind: 'int', arg: 'N', min: 1, help: 'fixed steps per model instead of timing the first steps' },
      strategy: { ...MODEL_FLAGS.strategy, help: 'the shared model\'s strategy (default all); compared with none' },
      unique: MODEL_FLAGS.unique,
      rank: MODEL_FLAGS.rank,
      'd-model': { ...MODEL_FLAGS['d-model'], help: `model width (default ${DEMO_MODEL.dModel})` },
      heads: { ...MODEL_FLAGS.heads, help: `attention heads (default ${DEMO_MODEL.heads})` },
      'd-ff': { ...MODEL_FLAGS['d-ff'], help: `feed-forward width (default ${DEMO_MODEL.dFF})` },
      layers: { ...MODEL_FLAGS.layers, help: `layers of both models (default ${DEMO_MODEL.layers})` },
      'max-seq': { ...MODEL_FLAGS['max-seq'], help: `context, and characters per training sequence (default ${DEMO_MODEL.maxSeq})` },
      batch: { ...TRAIN_FLAGS.batch, help: `sequences per batch (default ${DEMO_BATCH})` },
      lr: { ...TRAIN_FLAGS.lr, help: `peak learning rate (default ${DEMO_LR})` },
      ...QUIET,
      ...COMMON,
    },
    examples: ['sharedformer demo', 'sharedformer demo --seconds 180 --json > demo.jsonl'],
    interruptible: true,
    run: demoCommand,
  },
  train: {
    summary: 'train a character-level language model and write a checkpoint',
    usage: 'sharedformer train (--data FILE | --corpus default) --out FILE.safetensors [options]',
    specs: TRAIN_SPECS,
    examples: [
      'sharedformer train --corpus default --steps 2000 --out story.safetensors',
      'sharedformer train --data notes.txt --strategy cycle-rev --unique 3 --layers 6 --out notes.safetensors --checkpoint-every 200',
      'sharedformer train --resume notes.safetensors --steps 4000 --out notes.safetensors',
    ],
    interruptible: true,
    run: trainCommand,
  },
  eval: {
    summary: 'validation loss and bits per character of a checkpoint',
    usage: 'sharedformer eval --model FILE.safetensors [--data FILE | --corpus default] [--batches N]',
    specs: {
      model: { kind: 'string', arg: 'FILE', path: true, help: 'a checkpoint written by train (required)' },
      ...DATA_FLAGS,
      batches: { kind: 'int', arg: 'N', min: 1, help: 'validation batches (default 20)' },
      batch: { kind: 'int', arg: 'B', min: 1, help: 'sequences per batch (default: as trained)' },
      seq: { kind: 'int', arg: 'T', min: 1, help: 'characters per sequence (default: as trained)' },
      seed: { kind: 'int', arg: 'N', min: 0, max: 0xffffffff, help: 'which batches (default: as trained)' },
      device: MODEL_FLAGS.device,
      ...COMMON,
    },
    examples: ['sharedformer eval --model story.safetensors', 'sharedformer eval --model notes.safetensors --data more-notes.txt --batches 50'],
    run: (f, io) => evalCommand(f, io),
  },
  generate: {
    summary: 'continue a prompt with a trained model',
    usage: 'sharedformer generate --model FILE.safetensors --prompt TEXT [--tokens N] [sampling options]',
    specs: {
      model: { kind: 'string', arg: 'FILE', path: true, help: 'a checkpoint written by train (required)' },
      prompt: { kind: 'string', arg: 'TEXT', help: 'the text to continue (default: empty, as at the start of a line)' },
      tokens: { kind: 'int', arg: 'N', min: 0, help: 'characters to generate (default 200)' },
      temperature: { kind: 'number', arg: 'T', min: 0, help: 'softmax temperature; 0 is greedy (default 0.8)' },
      'top-k': { kind: 'int', arg: 'K', min: 1, help: 'sample among the K most likely characters' },
      'top-p': { kind: 'number', arg: 'P', min: 0, above: true, max: 1, help: 'nucleus sampling, in (0, 1]' },
      seed: { kind: 'int', arg: 'N', min: 0, max: 0x7fffffff, help: 'sampling seed (default: random)' },
      device: MODEL_FLAGS.device,
      ...COMMON,
    },
    examples: ['sharedformer generate --model story.safetensors --prompt "Once upon a time" --tokens 300 --top-k 40 --seed 7'],
    run: (f, io) => generateCommand(f, io),
  },
  compare: {
    summary: 'train one model per sharing strategy at equal steps; one table, compare.json and a loss-curve SVG',
    usage: 'sharedformer compare [--strategies none,all,cycle-rev:3] [--data FILE | --corpus default] [--out DIR] [options]',
    specs: {
      strategies: { kind: 'string', arg: 'LIST', help: 'comma-separated: none, all, attention, ffn, sandwich, sequence:U, cycle:U, cycle-rev:U, basis:R, delta:R (default none,all,cycle-rev:layers/2)' },
      ...DATA_FLAGS,
      data: { ...DATA_FLAGS.data, help: 'a UTF-8 text file (default: the embedded corpus)' },
      'vocab-from-data': TRAIN_SPECS['vocab-from-data'],
      config: { kind: 'string', arg: 'FILE', path: true, help: 'a JSON object of model and training keys, as for train (no sharing key)' },
      out: { kind: 'string', arg: 'DIR', path: true, help: 'folder for compare.json and loss.svg (default ./sharedformer-compare, in the invoking folder)' },
      ...Object.fromEntries(Object.entries(MODEL_FLAGS).filter(([k]) => !['strategy', 'unique', 'rank'].includes(k))),
      ...TRAIN_FLAGS,
      steps: { ...TRAIN_FLAGS.steps, help: 'optimizer steps of every run (default 300)' },
      'eval-every': { ...TRAIN_FLAGS['eval-every'], help: 'validation points of the curves every N steps (default steps/10)' },
      ...QUIET,
      ...COMMON,
    },
    examples: [
      'sharedformer compare',
      'sharedformer compare --strategies none,all,cycle:3,cycle-rev:3,delta:8 --layers 6 --steps 1000 --out runs/six',
      'sharedformer compare --data notes.txt --strategies none,all --steps 500 --json > compare.jsonl',
    ],
    interruptible: true,
    run: compareCommand,
  },
  info: {
    summary: 'version, how the addon was built, CUDA, CPU threads and SIMD level',
    usage: 'sharedformer info [--json]',
    specs: { json: COMMON.json, help: COMMON.help },
    examples: ['sharedformer info', 'sharedformer info --json'],
    run: (f, io) => infoCommand(f, io),
  },
  bench: {
    summary: 'the benchmarks (npm run bench); from a checkout of the repository only',
    usage: 'sharedformer bench [kernels] [tensors] [train] [--json FILE]',
    specs: BENCH_SPECS,
    examples: ['sharedformer bench kernels', 'sharedformer bench tensors --json rows.json'],
    run: async () => EXIT_USAGE, // argv goes to scripts/bench.ts unparsed (see main)
  },
};

function flagLines(specs: Specs): string[] {
  const rows = Object.entries(specs)
    .filter(([, s]) => !s.hidden)
    .map(([k, s]) => [`--${k}${s.kind === 'bool' ? '' : ` ${s.arg ?? 'V'}`}`, s.help]);
  const w = Math.max(0, ...rows.map((r) => r[0].length));
  return rows.map(([a, b]) => `    ${a.padEnd(w)}  ${b}`);
}

/** Usage of one command, or of all of them. */
export function usage(cmd?: string): string {
  if (cmd !== undefined && COMMANDS[cmd]) {
    const c = COMMANDS[cmd];
    const lines = [`${c.usage}`, '', `${c.summary}.`, ''];
    if (cmd === 'bench') lines.push('  Runs `node --import tsx scripts/bench.ts SUITES [--json FILE]` in the package folder, once the arguments check out.', '  Suites: kernels, tensors (default both), train; --json FILE (or --json=FILE) writes the rows. Anything else is a usage error (exit 2).');
    else lines.push('  flags:', ...flagLines(c.specs));
    lines.push('', '  examples:', ...c.examples.map((e) => `    ${e}`));
    return lines.join('\n');
  }
  const lines = [
    `sharedformer ${version()}: Transformers with cross-layer parameter sharing`,
    '',
    'usage: sharedformer <command> [flags]     (sharedformer help <command> for one command)',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([k, c]) => `  ${k.padEnd(9)} ${c.summary}`),
    `  ${'help'.padEnd(9)} this text; help <command> for one command`,
    '',
  ];
  for (const [k, c] of Object.entries(COMMANDS)) {
    lines.push(`${c.usage}`);
    if (k === 'bench') lines.push('    suites kernels, tensors (default both), train; --json FILE writes the rows; anything else is a usage error');
    else lines.push(...flagLines(c.specs));
    lines.push('');
  }
  lines.push('exit codes: 0 success, 1 runtime error, 2 usage error, 130 interrupted (train writes its checkpoint first)');
  lines.push('docs: docs/cli.md');
  return lines.join('\n');
}

function report(e: unknown, io: CliIO, cmd: string | undefined): number {
  const where = cmd && COMMANDS[cmd] ? `sharedformer ${cmd}` : 'sharedformer';
  const debug = process.env.SHAREDFORMER_DEBUG && process.env.SHAREDFORMER_DEBUG !== '0';
  if (e instanceof UsageError) {
    io.stderr.write(`${where}: ${printable(e.message).replace(/[\t\n]/g, (c) => (c === '\t' ? '\\t' : '\\n'))} (see: sharedformer help${cmd && COMMANDS[cmd] ? ` ${cmd}` : ''})\n`);
    return EXIT_USAGE;
  }
  const m = message(e);
  const more = m.includes('\n') && !debug ? ' (SHAREDFORMER_DEBUG=1 shows the details)' : '';
  io.stderr.write(`${where}: ${printable(firstLine(m)).replace(/\t/g, '\\t')}${more}\n`);
  if (debug && e instanceof Error && e.stack) io.stderr.write(`${e.stack}\n`);
  return EXIT_RUNTIME;
}

/** Runs the command line `argv` (without node and the script); resolves to the exit code. */
export async function main(argv: string[], io: CliIO = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
      const topic = cmd === 'help' ? rest[0] : undefined;
      if (topic !== undefined && !COMMANDS[topic]) throw new UsageError(`no such command '${topic}'; commands: ${Object.keys(COMMANDS).join(', ')}`);
      io.stdout.write(`${usage(topic)}\n`);
      return EXIT_OK;
    }
    if (cmd === '--version' || cmd === 'version') {
      io.stdout.write(`${version()}\n`);
      return EXIT_OK;
    }
    const c = COMMANDS[cmd];
    if (!c) throw new UsageError(`unknown command '${cmd}'; commands: ${Object.keys(COMMANDS).join(', ')}, help`);
    if (cmd === 'bench') {
      if (rest.includes('--help') || rest.includes('-h')) {
        io.stdout.write(`${usage('bench')}\n`);
        return EXIT_OK;
      }
      return await benchCommand(rest, io);
    }
    const flags = parseFlags(rest, c.specs);
    if (flags.help) {
      io.stdout.write(`${usage(cmd)}\n`);
      return EXIT_OK;
    }
    if (!c.interruptible) return await c.run(flags, io, new AbortController().signal);
    const int = interrupts(io);
    try {
      return await c.run(flags, io, int.signal);
    } finally {
      int.dispose();
    }
  } catch (e) {
    return report(e, io, cmd);
  }
}

/** train as a function: the exit code, with `signal` standing in for Ctrl-C (an aborted signal stops at once). */
export function train(argv: string[], io: CliIO, signal?: AbortSignal): Promise<number> {
  return main(['train', ...argv], signal ? { ...io, signal } : io);
}
