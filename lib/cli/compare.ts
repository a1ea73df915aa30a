// compare.ts — `sharedformer compare`: one model per sharing strategy, each trained by runTraining at equal steps on
// the same batches; a table, compare.json and the loss-curve SVG (lib/plot.ts).
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Trainer } from '../train/trainer.ts';
import { writeFileAtomic } from '../io/safetensors.ts';
import { lossCurveSvg } from '../plot.ts';
import { getNumThreads, setNumThreads } from '../runtime.ts';
import { STRATEGIES, type SharingConfig } from '../sharing/plan.ts';
import { CliError, EXIT_INTERRUPTED, EXIT_OK, UsageError, firstLine, fmt, jsonLine, message, say, tableLines, version, type CliIO } from './common.ts';
import { DEFAULT_MODEL, buildModel, modelConfigFrom, readConfigFile, trainConfigFrom } from './config.ts';
import { encode, loadData, makeDataset, newTokenizer, unitOf } from './data.ts';
import { checkDevice } from './device.ts';
import { COMMON, DATA_FLAGS, MODEL_FLAGS, QUIET, TRAIN_FLAGS, invocationDir, str, type Command, type Flags } from './flags.ts';
import { runTraining } from './run-training.ts';
import { TRAIN_SPECS } from './train.ts';

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
  const tok = newTokenizer(f, text);
  const unit = unitOf(tok);
  const data = makeDataset(encode(tok, text, label), tok.vocabSize, tcfg.seqLen, label, unit);
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
    model: { ...base, sharing: undefined, vocab: tok.vocabSize }, train: tcfg, evalEvery, data: source, unit, ...(unit === 'token' ? { tokenizer: (tok as { sha256: string }).sha256 } : {}), device,
    threads: getNumThreads(), version: version(), date: new Date().toISOString(),
  };
  const line = (s = '') => { if (!json) say(io, s); };
  if (json) jsonLine(io, { type: 'start', strategies: entries.map((e) => e.name), ...settings });
  line(`compare   ${entries.length} sharing strategies at ${tcfg.steps} steps each: ${entries.map((e) => e.name).join(', ')}`);
  line(`model     ${layers} layers, dModel ${base.dModel}, ${base.heads} heads, dFF ${base.dFF}, context ${base.maxSeq}, vocabulary ${tok.vocabSize}, on ${device}`);
  line(`data      ${label}: ${fmt(data.train.length)} train / ${fmt(data.val.length)} validation ${unit === 'char' ? 'characters' : 'tokens'}; the same batches for every run`);
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
    line();
    line(`[${i + 1}/${configs.length}] ${c.name}: ${model.plan.describe()}; ${fmt(acc.uniqueParameters)} unique parameters, ${fmt(acc.parameterBytes)} bytes`);
    try {
      const r = await runTraining({
        model, data, options: { ...tcfg, evalEvery, signal },
        progress: { out: io.stderr, label: c.name.padEnd(Math.max(...entries.map((e) => e.name.length))), quiet: f.quiet === true },
        errorPrefix: `${c.name}: `,
      });
      if (signal.aborted || !r.val) break;
      const row: CompareRow = {
        name: c.name, plan: model.plan.describe(), uniqueParameters: acc.uniqueParameters, parameterBytes: acc.parameterBytes,
        steps: r.step, trainLoss: r.last?.loss ?? null, valLoss: r.val.loss, bpc: r.val.bpc, tokensPerSec: r.tokensPerSec, trainSeconds: r.seconds, curve: r.curve,
      };
      rows.push(row);
      write(true);
      if (json) jsonLine(io, { type: 'result', ...row, curve: undefined });
      else line(`        validation loss ${row.valLoss.toFixed(4)} nats/${unit} = ${row.bpc.toFixed(3)} bits/${unit}; ${fmt(row.tokensPerSec)} tokens/s; ${r.seconds.toFixed(1)} s`);
    } finally {
      model.store.dispose();
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
  const head = ['strategy', 'unique params', 'bytes', ...(ref ? ['vs none'] : []), 'val loss', `bits/${unit}`, 'tokens/s'];
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

export const compareCmd: Command = {
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
};
