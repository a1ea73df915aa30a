// npm run eval:convert [-- --base-steps N] [--uptrain-steps N] [--eval-batches N] [--json FILE] [--no-doc]
//
// Pretrained -> shared on character-level tiny-shakespeare (../shared/data/tinyshakespeare.txt): an unshared 8-layer
// decoder is trained for --base-steps (default 1000); convertSharing turns it into three shared models — cycle (4
// unique blocks over 8 layers), all (one block), and delta (one block plus a rank-8 delta per layer, the truncated SVD
// of each layer's difference to the block) — whose validation loss is measured right after the conversion and during
// --uptrain-steps (default 1000) of uptraining (a fresh AdamW, 100 warmup steps, cosine to 1e-4); next to them, the
// same three shared models trained from scratch for the same total number of steps (base + uptrain). Model and
// optimizer settings are eval:sharing's (dModel 128, 4 heads, dFF 512, context 64, batch 12, lr 1e-3, beta2 0.99,
// weight decay 0.1, clip 1). Every evaluation uses the same --eval-batches (default 50) validation batches.
//
// Output: a table on stdout, docs/convert-eval.md and docs/convert-eval.svg (validation curves), --json FILE rows.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cpus, loadavg } from 'node:os';
import * as sf from '../lib/index.ts';
import type { SharingConfig } from '../lib/sharing/plan.ts';

const ROOT = join(import.meta.dirname, '..');
const DATA = join(ROOT, '..', 'shared', 'data', 'tinyshakespeare.txt');
const HP = { dModel: 128, heads: 4, dFF: 512, context: 64, batch: 12, lr: 1e-3, minLr: 1e-4, warmup: 100, beta2: 0.99, weightDecay: 0.1, clip: 1, seed: 1337, initSeed: 1, evalSeed: 4242 };
const TARGETS: { name: string; sharing: Partial<SharingConfig> }[] = [
  { name: 'cycle-4x8', sharing: { strategy: 'cycle', unique: 4 } },
  { name: 'all-8', sharing: { strategy: 'all' } },
  { name: 'delta-r8-8', sharing: { strategy: 'delta', rank: 8 } },
];

function args() {
  const o = { baseSteps: 1000, uptrainSteps: 1000, evalBatches: 50, json: undefined as string | undefined, doc: true };
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    const int = () => {
      const n = Number(a[++i]);
      if (!Number.isInteger(n) || n < 1) throw new Error(`eval:convert: ${a[i - 1]} needs a positive integer`);
      return n;
    };
    if (a[i] === '--base-steps') o.baseSteps = int();
    else if (a[i] === '--uptrain-steps') o.uptrainSteps = int();
    else if (a[i] === '--eval-batches') o.evalBatches = int();
    else if (a[i] === '--json') o.json = a[++i];
    else if (a[i] === '--no-doc') o.doc = false;
    else throw new Error(`eval:convert: unknown argument ${a[i]}`);
  }
  return o;
}

const o = args();
if (!existsSync(DATA)) {
  console.error(`eval:convert: ${DATA} is missing (see ../shared/data/README.md)`);
  process.exit(1);
}
const text = readFileSync(DATA, 'utf8');
const tok = sf.CharTokenizer.fromText(text);
const data = new sf.TokenDataset(tok.encode(text), tok.vocabSize);
const evalOpts = { batches: o.evalBatches, batchSize: HP.batch, seqLen: HP.context, seed: HP.evalSeed };
const val = (m: sf.Decoder) => sf.evaluate(m, data, evalOpts);
const t0 = performance.now();
const load0 = loadavg()[0];

/** Trains `model` for `steps` (a fresh AdamW, warmup then cosine), evaluating at the steps in `at`; returns [step, loss]. */
async function train(model: sf.Decoder, steps: number, at: Set<number>, label: string): Promise<{ curve: [number, number][]; msPerStep: number }> {
  const trainer = new sf.Trainer(model, data, {
    steps, batchSize: HP.batch, seqLen: HP.context, lr: HP.lr, minLr: HP.minLr, warmup: HP.warmup, schedule: 'cosine',
    beta2: HP.beta2, weightDecay: HP.weightDecay, clip: HP.clip, seed: HP.seed,
  });
  const curve: [number, number][] = [];
  let ms = 0, tick = performance.now();
  for await (const s of trainer.steps()) {
    ms += performance.now() - tick;
    if (at.has(s.step)) {
      const v = await val(model);
      curve.push([s.step, v]);
      process.stdout.write(`  ${label} step ${s.step}/${steps} train ${s.loss.toFixed(3)} val ${v.toFixed(4)} ${(ms / s.step).toFixed(0)} ms/step\n`);
    }
    tick = performance.now();
  }
  sf.releaseTape();
  trainer.dispose();
  return { curve, msPerStep: ms / steps };
}
const every = (n: number, k: number) => new Set([...Array(Math.floor(n / k)).keys()].map((i) => (i + 1) * k).concat([n]));

console.log(`eval:convert: base none-8 ${o.baseSteps} steps, uptraining ${o.uptrainSteps}, scratch ${o.baseSteps + o.uptrainSteps}; ${cpus()[0]?.model}, load ${load0.toFixed(2)}`);
const base = new sf.Decoder({ vocab: tok.vocabSize, dModel: HP.dModel, heads: HP.heads, dFF: HP.dFF, layers: 8, maxSeq: HP.context, sharing: { strategy: 'none' }, seed: HP.initSeed });
const baseRun = await train(base, o.baseSteps, every(o.baseSteps, 100), 'none-8 base');
const baseVal = baseRun.curve.at(-1)![1];

interface Row { name: string; plan: string; unique_parameters: number; relative_error: number; val_converted: number; val_uptrain_200: number; val_uptrain_end: number; val_scratch_200: number; val_scratch_end: number; uptrain_curve: [number, number][]; scratch_curve: [number, number][] }
const rows: Row[] = [];
const total = o.baseSteps + o.uptrainSteps;
for (const t of TARGETS) {
  const { model, report } = sf.convertSharing(base, t.sharing);
  const v0 = await val(model);
  console.log(`${t.name}: converted (${model.plan.describe()}); mean relative weight error ${report.meanRelativeError.toFixed(3)}; val ${v0.toFixed(4)}`);
  const up = await train(model, o.uptrainSteps, every(o.uptrainSteps, 100).add(200), `${t.name} uptrain`);
  const unique = model.accounting().uniqueParameters;
  model.store.dispose();
  const scratch = new sf.Decoder({ vocab: tok.vocabSize, dModel: HP.dModel, heads: HP.heads, dFF: HP.dFF, layers: 8, maxSeq: HP.context, sharing: t.sharing, seed: HP.initSeed });
  const sc = await train(scratch, total, every(total, 100).add(200).add(o.baseSteps + 200), `${t.name} scratch`);
  scratch.store.dispose();
  const at = (c: [number, number][], s: number) => c.find(([k]) => k === s)?.[1] ?? NaN;
  rows.push({
    name: t.name, plan: scratch.plan.describe(), unique_parameters: unique, relative_error: report.meanRelativeError, val_converted: v0,
    val_uptrain_200: at(up.curve, 200), val_uptrain_end: up.curve.at(-1)![1], val_scratch_200: at(sc.curve, o.baseSteps + 200), val_scratch_end: sc.curve.at(-1)![1],
    uptrain_curve: up.curve.map(([s, v]) => [o.baseSteps + s, v]), scratch_curve: sc.curve,
  });
}
base.store.dispose();
const wall = (performance.now() - t0) / 1000, load1 = loadavg()[0];
const f4 = (x: number) => x.toFixed(4);
const table = [
  `| target | plan | unique params | weight error after conversion | val right after conversion | val after 200 uptraining steps | val after ${o.uptrainSteps} | scratch at step ${o.baseSteps + 200} | scratch at step ${total} |`,
  '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ...rows.map((r) => `| ${r.name} | ${r.plan} | ${r.unique_parameters.toLocaleString('en-US')} | ${(100 * r.relative_error).toFixed(1)}% | ${f4(r.val_converted)} | ${f4(r.val_uptrain_200)} | ${f4(r.val_uptrain_end)} | ${f4(r.val_scratch_200)} | ${f4(r.val_scratch_end)} |`),
];
console.log(`\nbase none-8 after ${o.baseSteps} steps: val ${f4(baseVal)} (${baseRun.msPerStep.toFixed(0)} ms/step)\n${table.join('\n')}\nwall ${(wall / 60).toFixed(1)} min, load ${load0.toFixed(2)} -> ${load1.toFixed(2)}`);
if (o.json) writeFileSync(o.json, JSON.stringify({ settings: { ...HP, ...o, cpu: cpus()[0]?.model, loadavg: [load0, load1], wall_s: wall }, base_val: baseVal, base_curve: baseRun.curve, rows }, null, 1));
if (o.doc) {
  const svg = sf.lossCurveSvg([
    { name: 'none-8 (base)', val: baseRun.curve },
    ...rows.flatMap((r) => [{ name: `${r.name} converted`, val: [[o.baseSteps, r.val_converted] as [number, number], ...r.uptrain_curve] }, { name: `${r.name} scratch`, val: r.scratch_curve }]),
  ], { title: 'Pretrained -> shared: uptraining a converted model vs training it from scratch', subtitle: `tiny-shakespeare, chars; validation loss (nats/char); base none-8 trained ${o.baseSteps} steps, then converted` });
  writeFileSync(join(ROOT, 'docs', 'convert-eval.svg'), svg);
  writeFileSync(join(ROOT, 'docs', 'convert-eval.md'), [
    '# Pretrained -> shared: converting an unshared model (measured)',
    '',
    `Command: \`npm run eval:convert${process.argv.slice(2).length ? ` -- ${process.argv.slice(2).join(' ')}` : ''}\` (scripts/eval-convert.ts). ${new Date().toISOString().slice(0, 10)}, ${cpus()[0]?.model}, ${sf.getNumThreads()} threads, 1-minute load average ${load0.toFixed(2)} -> ${load1.toFixed(2)}, ${(wall / 60).toFixed(1)} minutes.`,
    '',
    `An unshared 8-layer decoder (dModel ${HP.dModel}, ${HP.heads} heads, dFF ${HP.dFF}, context ${HP.context}; characters of tiny-shakespeare) trained for ${o.baseSteps} steps reaches validation loss **${f4(baseVal)}** nats/char. \`convertSharing\` turns it into each shared model below (blocks = means of the layers mapped to them; delta = the mean block plus each layer's rank-8 truncated SVD of its difference), which is then uptrained for ${o.uptrainSteps} steps with a fresh AdamW (lr ${HP.lr}, ${HP.warmup} warmup steps, cosine to ${HP.minLr}, batch ${HP.batch}). "Scratch" trains the same shared model from a random initialisation for the same total ${total} steps (its cosine schedule spans all ${total}). All validation losses: ${o.evalBatches} fixed batches of the last 10% of the text. Weight error: ‖W_converted − W_original‖_F / ‖W_original‖_F averaged over every projection of every layer.`,
    '',
    ...table,
    '',
    '![validation curves](convert-eval.svg)',
    '',
    'cycle + rank-8 deltas is not in the table: the `delta` strategy shares one block across all layers (Relaxed Recursive Transformers with one recursion block); a cycle of several blocks with per-layer deltas is not a plan sharedformer has yet.',
    '',
  ].join('\n'));
}
