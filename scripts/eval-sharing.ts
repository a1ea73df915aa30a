// npm run eval:sharing [-- --steps N] [--only NAME[,NAME...]] [--eval-batches N] [--eval-every N] [--json FILE]
//                      [--doc FILE | --no-doc] [--list]
// npm run eval:sharing -- --merge A.json,B.json,... [--doc FILE | --no-doc]   (one table from separate runs' --json)
//
// Cross-layer parameter sharing on character-level tiny-shakespeare: the same small decoder trained with every
// sharing strategy for the same number of steps, reporting validation loss (nats per character), bits per character,
// unique parameters, parameter bytes, training tokens/s and wall time per run.
//
// Data: ../shared/data/tinyshakespeare.txt (see ../shared/data/README.md), first 90% train, last 10% validation,
// characters as tokens (65 kinds). The script stops with a clear message when the file is absent; nothing else in
// the package needs it.
//
// Model and training, identical for every run (nanoGPT's shakespeare_char CPU configuration): pre-LN decoder,
// dModel 128, 4 heads, dFF 512, context 64, tied embeddings, no dropout; batch 12, AdamW lr 1e-3 (beta2 0.99, weight
// decay 0.1 on matrices), 100 warmup steps then cosine to 1e-4 at the last step, gradient clipping at 1, the same
// batch sequence (seed 1337) and the same validation batches for every run.
//
// Runs (--list prints them): unshared with 4 and 8 layers; 8 layers sharing all; sequence / cycle / cycle-rev with 4
// unique blocks over 8 layers; attention-only and FFN-only sharing over 8; delta rank 8 and basis rank 32 over 8;
// GQA (kvHeads 2, no sharing, 8 layers); cross-layer KV in pairs (kvShareGroup 2, no other sharing, 8 layers).
//
// Output: a table on stdout, docs/sharing-eval.md (a markdown table with the command and date; --doc FILE writes
// elsewhere, --no-doc not at all; with --only the doc is written only when --doc is given, so a partial run never
// overwrites the full table; text outside the generated block's markers is kept), and with --json FILE every row
// plus the settings. With --eval-every, the validation curves of every run go to a loss-curve SVG next to the doc
// (docs/sharing-eval.svg). --merge renders the doc and the plot from the --json files of runs made separately (say,
// one `--only` run at a time, so that a long evaluation can be spread over several sittings); their step counts and
// settings must agree.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { loadavg } from 'node:os';
import * as sf from '../lib/index.ts';
import type { DecoderConfig } from '../lib/models/decoder.ts';
import type { SharingConfig } from '../lib/sharing/plan.ts';

const ROOT = join(import.meta.dirname, '..');
const DATA = join(ROOT, '..', 'shared', 'data', 'tinyshakespeare.txt');

interface RunSpec {
  name: string;
  description: string;
  layers: number;
  kvHeads?: number;
  sharing: Partial<SharingConfig>;
}

const RUNS: RunSpec[] = [
  { name: 'none-4', description: 'unshared, 4 layers', layers: 4, sharing: { strategy: 'none' } },
  { name: 'none-8', description: 'unshared, 8 layers', layers: 8, sharing: { strategy: 'none' } },
  { name: 'all-8', description: 'one block for all 8 layers', layers: 8, sharing: { strategy: 'all' } },
  { name: 'sequence-4x8', description: 'sequence, 4 unique over 8', layers: 8, sharing: { strategy: 'sequence', unique: 4 } },
  { name: 'cycle-4x8', description: 'cycle, 4 unique over 8', layers: 8, sharing: { strategy: 'cycle', unique: 4 } },
  { name: 'cycle-rev-4x8', description: 'cycle-rev, 4 unique over 8', layers: 8, sharing: { strategy: 'cycle-rev', unique: 4 } },
  { name: 'attention-8', description: 'attention shared, FFN per layer, 8 layers', layers: 8, sharing: { strategy: 'attention' } },
  { name: 'ffn-8', description: 'FFN shared, attention per layer, 8 layers', layers: 8, sharing: { strategy: 'ffn' } },
  { name: 'delta-r8-8', description: 'shared W + per-layer rank-8 delta, 8 layers', layers: 8, sharing: { strategy: 'delta', rank: 8 } },
  { name: 'basis-r32-8', description: 'shared rank-32 basis + per-layer coefficients, 8 layers', layers: 8, sharing: { strategy: 'basis', rank: 32 } },
  { name: 'gqa-kv2-8', description: 'GQA, 2 K/V heads, unshared, 8 layers', layers: 8, kvHeads: 2, sharing: { strategy: 'none' } },
  { name: 'cla-2-8', description: 'cross-layer KV in pairs (kvShareGroup 2), unshared, 8 layers', layers: 8, sharing: { strategy: 'none', kvShareGroup: 2 } },
];

const HP = {
  dModel: 128, heads: 4, dFF: 512, context: 64, batch: 12,
  lr: 1e-3, minLr: 1e-4, warmup: 100, beta2: 0.99, weightDecay: 0.1, clip: 1, seed: 1337, initSeed: 1,
};

export interface EvalRow {
  name: string;
  description: string;
  layers: number;
  kvHeads: number;
  sharing: Partial<SharingConfig>;
  plan: string;
  steps: number;
  train_loss: number;
  val_loss: number;
  bpc: number;
  unique_parameters: number;
  parameter_bytes: number;
  tokens_per_s: number;
  ms_per_step: number;
  wall_s: number;
  /** The 1-minute load average when the run ended (other processes sharing the CPU slow tokens/s). */
  loadavg: number;
  /** Validation loss during training when --eval-every is set: [step, nats]. */
  curve?: [number, number][];
}

function usage(msg: string): never {
  console.error(`eval:sharing: ${msg}`);
  console.error('usage: npm run eval:sharing [-- --steps N] [--only NAME[,NAME...]] [--eval-batches N] [--eval-every N] [--json FILE] [--doc FILE | --no-doc] [--list]');
  console.error('       npm run eval:sharing -- --merge A.json,B.json,... [--doc FILE | --no-doc]');
  console.error(`runs: ${RUNS.map((r) => r.name).join(', ')}`);
  process.exit(2);
}

function parseArgs(argv: string[]) {
  const o = { steps: 2000, only: undefined as string[] | undefined, evalBatches: 50, evalEvery: 0, json: undefined as string | undefined, doc: undefined as string | undefined, noDoc: false, list: false, merge: undefined as string[] | undefined };
  const int = (v: string | undefined, flag: string, min: number) => {
    const n = Number(v);
    if (v === undefined || !Number.isInteger(n) || n < min) usage(`${flag} needs an integer >= ${min}, got ${v ?? 'nothing'}`);
    return n;
  };
  const str = (v: string | undefined, flag: string) => {
    if (v === undefined || v.startsWith('--')) usage(`${flag} needs a value`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf('=');
    const [flag, inline] = a.startsWith('--') && eq > 0 ? [a.slice(0, eq), a.slice(eq + 1)] : [a, undefined];
    const val = () => inline ?? argv[++i];
    switch (flag) {
      case '--steps': o.steps = int(val(), flag, 1); break;
      case '--only': o.only = str(val(), flag).split(',').map((s) => s.trim()).filter(Boolean); break;
      case '--eval-batches': o.evalBatches = int(val(), flag, 1); break;
      case '--eval-every': o.evalEvery = int(val(), flag, 0); break;
      case '--json': o.json = str(val(), flag); break;
      case '--doc': o.doc = str(val(), flag); break;
      case '--no-doc': o.noDoc = true; break;
      case '--list': o.list = true; break;
      case '--merge': o.merge = str(val(), flag).split(',').map((x) => x.trim()).filter(Boolean); break;
      default: usage(`unknown argument '${a}'`);
    }
  }
  if (o.only) for (const n of o.only) if (!RUNS.some((r) => r.name === n)) usage(`unknown run '${n}'`);
  return o;
}

const fmtInt = (n: number) => n.toLocaleString('en-US');
const fmtDur = (s: number) => (s >= 3600 ? `${(s / 3600).toFixed(1)} h` : s >= 120 ? `${(s / 60).toFixed(1)} min` : `${s.toFixed(0)} s`);

async function runOne(spec: RunSpec, data: sf.TokenDataset, vocab: number, o: ReturnType<typeof parseArgs>): Promise<EvalRow> {
  const t0 = performance.now();
  const cfg: DecoderConfig = {
    vocab, dModel: HP.dModel, heads: HP.heads, kvHeads: spec.kvHeads ?? HP.heads, dFF: HP.dFF, layers: spec.layers,
    maxSeq: HP.context, sharing: spec.sharing, seed: HP.initSeed,
  };
  const model = new sf.Decoder(cfg);
  const acc = model.accounting();
  const trainer = new sf.Trainer(model, data, {
    steps: o.steps, batchSize: HP.batch, seqLen: HP.context, lr: HP.lr, minLr: HP.minLr, warmup: HP.warmup,
    schedule: 'cosine', beta2: HP.beta2, weightDecay: HP.weightDecay, clip: HP.clip, seed: HP.seed,
    evalBatches: o.evalBatches,
  });
  const curve: [number, number][] = [];
  let trainMs = 0;
  let lastLoss = NaN;
  let tick = performance.now();
  const every = Math.max(1, Math.floor(o.steps / 10));
  for await (const s of trainer.steps()) {
    const now = performance.now();
    trainMs += now - tick;
    lastLoss = s.loss;
    if (s.step % every === 0 || s.step === o.steps)
      process.stdout.write(`  ${spec.name} step ${s.step}/${o.steps} loss ${s.loss.toFixed(3)} lr ${s.lr.toExponential(2)} ${(trainMs / s.step).toFixed(0)} ms/step\n`);
    if (o.evalEvery && s.step % o.evalEvery === 0 && s.step !== o.steps) {
      const e = await trainer.evaluate();
      curve.push([s.step, e.loss]);
      process.stdout.write(`  ${spec.name} step ${s.step} val ${e.loss.toFixed(4)}\n`);
    }
    tick = performance.now();
  }
  const val = await trainer.evaluate();
  if (o.evalEvery) curve.push([o.steps, val.loss]);
  sf.releaseTape();
  trainer.dispose();
  model.store.dispose();
  const wall = (performance.now() - t0) / 1000;
  return {
    name: spec.name, description: spec.description, layers: spec.layers, kvHeads: cfg.kvHeads!, sharing: spec.sharing,
    plan: model.plan.describe(), steps: o.steps, train_loss: lastLoss, val_loss: val.loss, bpc: val.bpc,
    unique_parameters: acc.uniqueParameters, parameter_bytes: acc.parameterBytes,
    tokens_per_s: (o.steps * HP.batch * HP.context) / (trainMs / 1000), ms_per_step: trainMs / o.steps, wall_s: wall, loadavg: loadavg()[0],
    ...(o.evalEvery ? { curve } : {}),
  };
}

function markdown(rows: EvalRow[], o: { steps: number; evalBatches: number }, command: string, date: string, totalS: number, load: string): string {
  const b = sf.backends();
  const lines = [
    '# Cross-layer sharing on tiny-shakespeare (character level)',
    '',
    `Generated by ${command} on ${date} (${b.cpu.threads} CPU threads, ${b.cpu.simd}; total wall time ${fmtDur(totalS)};`,
    `1-minute load average ${load}; a load above the thread count means other processes shared the CPU, and tokens/s are lower than on an idle machine).`,
    '',
    `Every run: pre-LN decoder, dModel ${HP.dModel}, ${HP.heads} heads, dFF ${HP.dFF}, context ${HP.context}, tied embeddings, no dropout;`,
    `batch ${HP.batch}, **${o.steps} steps** (${fmtInt(o.steps * HP.batch * HP.context)} training tokens), AdamW lr ${HP.lr} (beta2 ${HP.beta2},`,
    `weight decay ${HP.weightDecay}), ${HP.warmup} warmup steps then cosine to ${HP.minLr} at step ${o.steps}, clip ${HP.clip}; the same batches for every run.`,
    `Validation: the last 10% of the text, ${o.evalBatches} fixed batch${o.evalBatches === 1 ? '' : 'es'} of ${HP.batch}×${HP.context} characters (${fmtInt(o.evalBatches * HP.batch * HP.context)} predictions).`,
    'Parameter bytes are fp32 unique parameters (gradients the same again, AdamW state twice that).',
    'Tokens/s counts training steps only; wall time includes model construction and the final evaluation.',
    '',
    '| run | layers | plan | val loss (nats) | bits/char | unique params | param bytes | tokens/s | ms/step | wall |',
    '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    const plan = r.plan.replace(/\|/g, '\\|');
    lines.push(`| ${r.name} | ${r.layers} | ${plan}${r.kvHeads !== HP.heads ? `, kvHeads ${r.kvHeads}` : ''} | ${r.val_loss.toFixed(4)} | ${r.bpc.toFixed(4)} | ${fmtInt(r.unique_parameters)} | ${fmtInt(r.parameter_bytes)} | ${fmtInt(Math.round(r.tokens_per_s))} | ${r.ms_per_step.toFixed(1)} | ${fmtDur(r.wall_s)} |`);
  }
  return lines.join('\n') + '\n';
}

const BEGIN = '<!-- eval-sharing:begin (generated by scripts/eval-sharing.ts; edit outside these markers) -->';
const END = '<!-- eval-sharing:end -->';

/** The generated block between markers; text before and after them in an existing doc (notes) is kept. */
function withNotes(path: string, generated: string): string {
  const block = `${BEGIN}\n${generated}${END}\n`;
  const old = existsSync(path) ? readFileSync(path, 'utf8') : '';
  const i = old.indexOf(BEGIN), j = old.indexOf(END);
  if (i < 0 || j < i) return block;
  return old.slice(0, i) + block + old.slice(j + END.length).replace(/^\n/, '');
}

/** The validation curves of the rows that have one, as an SVG next to the doc (`x.md` -> `x.svg`). */
function writePlot(doc: string, rows: EvalRow[], steps: number, date: string): void {
  const series = rows.filter((r) => r.curve?.length).map((r) => ({ name: r.name, val: r.curve! }));
  if (!series.length) return;
  const svg = doc.replace(/\.md$/, '') + '.svg';
  writeFileSync(svg, sf.lossCurveSvg(series, {
    title: `Validation loss on tiny-shakespeare, ${steps} steps`,
    subtitle: `dModel ${HP.dModel}, ${HP.heads} heads, dFF ${HP.dFF}, context ${HP.context}, batch ${HP.batch}; ${date}`,
    width: 900, height: 540,
  }));
  console.log(`wrote ${relative(process.cwd(), svg) || svg}`);
}

interface EvalFile {
  command: string;
  date: string;
  settings: { steps: number; evalBatches: number; evalEvery: number; loadavg_start_end: number[] };
  total_wall_s: number;
  rows: EvalRow[];
}

/** --merge: one doc and plot from the --json files of separate runs. */
function merge(o: ReturnType<typeof parseArgs>): void {
  const files = o.merge!.map((f) => {
    if (!existsSync(f)) usage(`--merge: no such file ${f}`);
    return { path: f, ...(JSON.parse(readFileSync(f, 'utf8')) as EvalFile) };
  });
  const steps = files[0].settings.steps, evalBatches = files[0].settings.evalBatches;
  for (const f of files)
    if (f.settings.steps !== steps || f.settings.evalBatches !== evalBatches)
      usage(`--merge: ${f.path} has ${f.settings.steps} steps and ${f.settings.evalBatches} validation batches, ${files[0].path} ${steps} and ${evalBatches}`);
  const rows = files.flatMap((f) => f.rows).sort((a, b) => RUNS.findIndex((r) => r.name === a.name) - RUNS.findIndex((r) => r.name === b.name));
  const names = rows.map((r) => r.name);
  const dup = names.find((n, i) => names.indexOf(n) !== i);
  if (dup) usage(`--merge: run ${dup} appears twice`);
  const loads = files.flatMap((f) => f.settings.loadavg_start_end);
  const totalS = files.reduce((a, f) => a + f.total_wall_s, 0);
  const dates = [...new Set(files.map((f) => f.date))].sort();
  const command = `${files.length} separate runs of \`npm run eval:sharing -- --steps ${steps} --only NAME${files[0].settings.evalEvery ? ` --eval-every ${files[0].settings.evalEvery}` : ''} --json FILE\`, merged by \`npm run eval:sharing -- --merge FILE,...\``;
  const doc = o.noDoc ? undefined : (o.doc ?? join(ROOT, 'docs', 'sharing-eval.md'));
  console.table(rows.map((r) => ({ run: r.name, 'val loss': r.val_loss.toFixed(4), 'bits/char': r.bpc.toFixed(4), params: r.unique_parameters, 'ms/step': r.ms_per_step.toFixed(1) })));
  if (!doc) return;
  mkdirSync(dirname(doc), { recursive: true });
  writeFileSync(doc, withNotes(doc, markdown(rows, { ...o, steps, evalBatches }, command, dates.join(' to '), totalS, `between ${Math.min(...loads).toFixed(1)} and ${Math.max(...loads).toFixed(1)} at the runs' starts and ends`)));
  console.log(`wrote ${relative(process.cwd(), doc) || doc}`);
  writePlot(doc, rows, steps, dates.join(' to '));
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (o.merge) return merge(o);
  if (o.list) {
    for (const r of RUNS) console.log(`${r.name.padEnd(15)} ${r.description}`);
    return;
  }
  if (!existsSync(DATA)) {
    console.error(`eval:sharing: the corpus is missing: ${DATA}\n` +
      'It is tiny-shakespeare (1,115,394 bytes, data/tinyshakespeare/input.txt of the char-rnn repository); put it there\n' +
      '(see ../shared/data/README.md) and run again. The library itself does not need it.');
    process.exit(1);
  }
  const text = readFileSync(DATA, 'utf8');
  const tok = sf.CharTokenizer.fromText(text);
  const data = new sf.TokenDataset(tok.encode(text), tok.vocabSize, 0.9);
  const runs = o.only ? RUNS.filter((r) => o.only!.includes(r.name)) : RUNS;
  const b = sf.backends();
  console.log(`eval:sharing — ${fmtInt(text.length)} characters, vocabulary ${tok.vocabSize}, train ${fmtInt(data.train.length)} / val ${fmtInt(data.val.length)}; ` +
    `${runs.length} run(s) × ${o.steps} steps; ${b.cpu.threads} CPU threads, ${b.cpu.simd}`);

  const t0 = performance.now();
  const load0 = loadavg()[0];
  const rows: EvalRow[] = [];
  for (const spec of runs) {
    const r = await runOne(spec, data, tok.vocabSize, o);
    rows.push(r);
    console.log(`${r.name}: val ${r.val_loss.toFixed(4)} nats (${r.bpc.toFixed(4)} bits/char), ${fmtInt(r.unique_parameters)} unique parameters, ` +
      `${fmtInt(Math.round(r.tokens_per_s))} tokens/s, ${fmtDur(r.wall_s)}`);
  }
  const totalS = (performance.now() - t0) / 1000;
  const load = [load0, loadavg()[0]];
  console.table(rows.map((r) => ({
    run: r.name, layers: r.layers, 'val loss': r.val_loss.toFixed(4), 'bits/char': r.bpc.toFixed(4), params: r.unique_parameters,
    bytes: r.parameter_bytes, 'tokens/s': Math.round(r.tokens_per_s), 'ms/step': r.ms_per_step.toFixed(1), 'wall s': r.wall_s.toFixed(1),
  })));
  console.log(`total wall time ${fmtDur(totalS)}`);

  const command = ['npm run eval:sharing', ...(process.argv.length > 2 ? ['--', ...process.argv.slice(2)] : [])].join(' ');
  const date = new Date().toISOString().slice(0, 10);
  const settings = { ...HP, loadavg_start_end: load, steps: o.steps, evalBatches: o.evalBatches, evalEvery: o.evalEvery, vocab: tok.vocabSize, trainTokens: data.train.length, valTokens: data.val.length };
  if (o.json) {
    mkdirSync(dirname(o.json), { recursive: true });
    writeFileSync(o.json, JSON.stringify({ command, date, settings, total_wall_s: totalS, rows }, null, 2) + '\n');
    console.log(`wrote ${o.json}`);
  }
  const doc = o.noDoc ? undefined : (o.doc ?? (o.only ? undefined : join(ROOT, 'docs', 'sharing-eval.md')));
  if (doc) {
    mkdirSync(dirname(doc), { recursive: true });
    writeFileSync(doc, withNotes(doc, markdown(rows, o, `\`${command}\``, date, totalS, `${load.map((x) => x.toFixed(1)).join(' → ')} at start and end`)));
    console.log(`wrote ${relative(process.cwd(), doc) || doc}`);
    writePlot(doc, rows, o.steps, date);
  }
}

await main();
