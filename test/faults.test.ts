// faults.test.ts — regression tests of issue 13 (parts 3, 4, 5, 7): multi-step mutations are all-or-nothing
// (loadStateDict, checkpoint load, Trainer.resume, Model.to), losses and decode sessions refuse what they cannot use,
// basis/delta sharing in an encoder–decoder is per stack, and the CLI's bench flags, checkpoint metadata and
// backward-after-release errors are loud and name the culprit.
import anyTest from 'ava';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Decoder, type DecoderConfig } from '../lib/models/decoder.ts';
import { Encoder } from '../lib/models/encoder.ts';
import { EncoderDecoder, type EncoderDecoderConfig } from '../lib/models/seq2seq.ts';
import { DecodeSession } from '../lib/models/generate.ts';
import { Trainer } from '../lib/train/trainer.ts';
import { TokenDataset } from '../lib/data/index.ts';
import { saveCheckpoint } from '../lib/io/checkpoint.ts';
import { saveSafetensors, type SafeTensor } from '../lib/io/safetensors.ts';
import { Tensor, tensor, full } from '../lib/tensor.ts';
import { backward, releaseTape, resetTape } from '../lib/autograd.ts';
import { memory } from '../lib/runtime.ts';
import { loadModel, benchArgs, invocationDir, CliError } from '../lib/cli/index.ts';
import { run } from './helpers/cli.ts';

const test = anyTest.serial;
const dir = mkdtempSync(join(tmpdir(), 'sf-faults-'));
anyTest.after.always(() => rmSync(dir, { recursive: true, force: true }));

const CFG: DecoderConfig = { vocab: 11, dModel: 8, heads: 2, dFF: 16, layers: 2, maxSeq: 8, seed: 3 };
const values = (m: { store: { values: Tensor } }) => Array.from(m.store.values.dataSync());
const ids = (B: number, T: number, V: number, seed = 1) =>
  tensor(Int32Array.from({ length: B * T }, (_, i) => (i * 7 + seed * 3) % V), [B, T]);
const cpuTensors = () => memory().cpu.tensors;

// ------------------------------------------------------------------------------------------ 3. all-or-nothing loads

/** A state dict of `m` whose every value differs from the model's (value + 1). */
function shiftedStateDict(m: Decoder): Record<string, Tensor> {
  const sd: Record<string, Tensor> = {};
  for (const p of m.parameters()) {
    const v = Float32Array.from(p.value.dataSync() as Float32Array, (x) => x + 1);
    sd[p.name] = tensor(v, p.shape);
  }
  return sd;
}

for (const [what, bad] of [
  ['an int32 tensor', (shape: number[]) => full(shape, 1, { dtype: 'int32' })],
  ['a bfloat16 tensor', (shape: number[]) => full(shape, 1, { dtype: 'bfloat16' })],
  ['a disposed tensor', (shape: number[]) => { const x = full(shape, 1); x.dispose(); return x; }],
  ['a tensor of the wrong shape', (shape: number[]) => full([...shape, 1], 1)],
  ['a number', () => 7 as unknown as Tensor],
] as [string, (shape: number[]) => Tensor][]) {
  test(`loadStateDict with ${what} as its last entry changes nothing and names the key`, (t) => {
    const m = new Decoder(CFG);
    const before = values(m);
    const sd = shiftedStateDict(m);
    const params = m.parameters();
    const last = params[params.length - 1];
    sd[last.name].dispose();
    sd[last.name] = bad(last.shape);
    const e = t.throws(() => m.loadStateDict(sd));
    t.regex(e!.message, /^loadStateDict: /);
    t.true(e!.message.includes(`'${last.name}'`), e!.message);
    t.deepEqual(values(m), before, 'no parameter was overwritten');
    for (const x of Object.values(sd)) if (x instanceof Tensor) x.dispose();
    m.store.dispose();
  });
}

test('loadStateDict refuses a non-object, and still loads a good state dict', (t) => {
  const m = new Decoder(CFG);
  t.throws(() => m.loadStateDict(null as unknown as Record<string, Tensor>), { instanceOf: TypeError, message: /^loadStateDict: / });
  const sd = shiftedStateDict(m);
  const want = m.parameters().flatMap((p) => Array.from(sd[p.name].dataSync()));
  m.loadStateDict(sd);
  // the parameters back to back: the flat buffer without its alignment padding (zero; checked too)
  t.deepEqual(Array.from(m.store.pack(m.store.values.dataSync() as Float32Array)), want);
  t.true(values(m).every((x, i) => m.store.parameters.some((p) => i >= p.offset && i < p.offset + p.size) || x === 0), 'the padding stays 0');
  for (const x of Object.values(sd)) x.dispose();
  m.store.dispose();
});

/** Writes `m`'s parameters as a checkpoint, with the last parameter stored as `lastDtype`. */
function writeWithBadLast(path: string, m: Decoder, lastDtype: 'I32' | 'BF16'): void {
  const all = m.store.values.dataSync() as Float32Array;
  const tensors = new Map<string, SafeTensor>();
  const ps = m.store.parameters;
  ps.forEach((p, i) => {
    const data = all.slice(p.offset, p.offset + p.size).map((x) => x + 1);
    if (i < ps.length - 1) tensors.set(p.name, { dtype: 'F32', shape: p.shape, data });
    else if (lastDtype === 'I32') tensors.set(p.name, { dtype: 'I32', shape: p.shape, data: new Int32Array(p.size) });
    else tensors.set(p.name, { dtype: 'BF16', shape: p.shape, data: new Uint16Array(p.size) });
  });
  saveSafetensors(path, tensors, { format: 'sharedformer', ...m.meta() });
}

test('Decoder.load with a bad last tensor changes nothing', (t) => {
  const m = new Decoder(CFG);
  const before = values(m);
  for (const dt of ['I32', 'BF16'] as const) {
    const p = join(dir, `bad-last-${dt}.safetensors`);
    writeWithBadLast(p, m, dt);
    t.throws(() => m.load(p), { message: new RegExp(`^loadCheckpoint: .*${dt}`) });
    t.deepEqual(values(m), before);
  }
  m.store.dispose();
});

function trainer(m: Decoder): Trainer {
  const tokens = Int32Array.from({ length: 400 }, (_, i) => (i * 5 + (i >> 2)) % CFG.vocab);
  return new Trainer(m, new TokenDataset(tokens, CFG.vocab), { steps: 4, batchSize: 2, seqLen: 4, lr: 1e-2, evalBatches: 1 });
}

test('Trainer.resume from a file with bad trainer metadata changes no parameter, moment or step', async (t) => {
  const m = new Decoder(CFG);
  const tr = trainer(m);
  for await (const s of tr.steps()) if (s.step === 2) break;
  const good = join(dir, 'trainer-good.safetensors');
  await tr.save(good);
  // Another model's parameters and moments, so that a half-applied resume would show.
  const other = new Decoder({ ...CFG, seed: 99 });
  const moments = new Map<string, Float32Array>([
    ['optimizer.m', new Float32Array(other.store.numel).fill(0.5)],
    ['optimizer.v', new Float32Array(other.store.numel).fill(0.25)],
  ]);
  const state = () => ({ p: values(m), mo: Array.from(tr.opt.m.dataSync()), v: Array.from(tr.opt.v.dataSync()), step: tr.step, adam: tr.opt.stepCount });
  const before = state();
  for (const [name, trainerMeta] of [
    ['no trainer metadata', undefined],
    ['unreadable trainer metadata', '{step'],
    ['a fractional step', JSON.stringify({ step: 1.5, adamStep: 1 })],
    ['a negative step', JSON.stringify({ step: -1, adamStep: 0 })],
  ] as [string, string | undefined][]) {
    const p = join(dir, `trainer-bad.safetensors`);
    saveCheckpoint(p, other.store, other.meta(), trainerMeta === undefined ? {} : { trainer: trainerMeta }, moments);
    const e = t.throws(() => tr.resume(p), undefined, name);
    t.regex(e!.message, /^Trainer\.resume: /, name);
    t.deepEqual(state(), before, `${name}: nothing changed`);
  }
  // A bad last tensor: optimizer.v one element short.
  const p2 = join(dir, 'trainer-bad-v.safetensors');
  const shortV = new Map(moments);
  shortV.set('optimizer.v', new Float32Array(other.store.numel - 1));
  saveCheckpoint(p2, other.store, other.meta(), { trainer: JSON.stringify({ step: 3, adamStep: 3 }) }, shortV);
  t.throws(() => tr.resume(p2), { message: /^loadCheckpoint: .* lacks 'optimizer\.v' as F32/ });
  t.deepEqual(state(), before, 'short optimizer.v: nothing changed');
  tr.resume(good); // and a good file still resumes
  t.deepEqual(state(), before);
  tr.dispose();
  other.store.dispose();
  m.store.dispose();
  releaseTape();
});

test('Model.to a device that cannot be used changes nothing and leaks nothing', (t) => {
  const m = new Decoder(CFG);
  const before = values(m);
  const n = cpuTensors();
  for (const d of ['cuda:97', 'gpu', 42] as unknown as ('cpu' | 'cuda')[]) {
    t.throws(() => m.to(d));
    t.is(m.store.device, 'cpu');
    t.is(m.parameters()[0].value.device, 'cpu');
    t.deepEqual(values(m), before);
  }
  t.is(cpuTensors(), n);
  const l = m.loss(ids(1, 4, 11), ids(1, 4, 11, 2)); // still usable
  t.true(Number.isFinite(l.dataSync()[0]));
  releaseTape();
  m.store.dispose();
});

// ---------------------------------------------------------------------------------- 4. shapes and ids that are refused

test('Decoder.loss needs targets of exactly the ids\' shape', (t) => {
  resetTape();
  const m = new Decoder(CFG);
  const x = ids(2, 4, 11);
  for (const shape of [[4, 2], [8], [1, 2, 4]]) {
    const y = tensor(new Int32Array(8), shape);
    const e = t.throws(() => m.loss(x, y), { instanceOf: RangeError });
    t.regex(e!.message, /^Decoder\.loss: targets must have shape \[2, 4\]/);
    t.true(e!.message.includes(`[${shape.join(', ')}]`), e!.message);
    y.dispose();
  }
  t.is(m.loss(x, ids(2, 4, 11, 5)).size, 1);
  releaseTape();
  m.store.dispose();
});

test('Encoder.mlmLoss and EncoderDecoder.loss need targets of exactly the expected shape', (t) => {
  resetTape();
  const e = new Encoder({ ...CFG });
  const x = ids(2, 4, 11);
  const flat = tensor(new Int32Array(8), [8]);
  const err = t.throws(() => e.mlmLoss(x, flat), { instanceOf: RangeError });
  t.regex(err!.message, /^Encoder\.mlmLoss: targets must have shape \[2, 4\].*\[8\]/);
  const s2s = new EncoderDecoder({ vocab: 11, dModel: 8, heads: 2, dFF: 16, encoderLayers: 1, decoderLayers: 1, maxSeq: 8 });
  const src = ids(2, 3, 11);
  const err2 = t.throws(() => s2s.loss(src, x, flat), { instanceOf: RangeError });
  t.regex(err2!.message, /^EncoderDecoder\.loss: targets must have shape \[2, 4\].*\[8\]/);
  const t42 = tensor(new Int32Array(8), [4, 2]);
  t.throws(() => s2s.loss(src, x, t42), { instanceOf: RangeError, message: /^EncoderDecoder\.loss: .*\[4, 2\]/ });
  t.throws(() => e.mlmLoss(x, tensor(new Float32Array(8), [2, 4])), { instanceOf: TypeError, message: /^Encoder\.mlmLoss: targets must be int32/ });
  flat.dispose();
  t42.dispose();
  releaseTape();
  e.store.dispose();
  s2s.store.dispose();
});

test('Encoder.classificationLoss needs labels of shape [B]', (t) => {
  resetTape();
  const e = new Encoder({ ...CFG, numClasses: 3 });
  const x = ids(2, 4, 11);
  const labels = tensor(Int32Array.from([0, 2]), [2, 1]);
  t.throws(() => e.classificationLoss(x, labels), { instanceOf: RangeError, message: /^Encoder\.classificationLoss: labels must have shape \[2\] \(one per sequence\), got \[2, 1\]/ });
  const ok = tensor(Int32Array.from([0, 2]), [2]);
  t.is(e.classificationLoss(x, ok).size, 1);
  for (const y of [labels, ok]) y.dispose();
  releaseTape();
  e.store.dispose();
});

test('DecodeSession.prefill and step refuse ids that are not integers in [0, vocab)', (t) => {
  const m = new Decoder(CFG);
  const s = new DecodeSession(m, 6);
  for (const bad of [1.5, 2 ** 32 + 3, NaN, -1, 11, Infinity]) {
    t.throws(() => s.prefill([1, bad]), { instanceOf: RangeError, message: /^DecodeSession\.prefill: ids\[1\] = .* is not a token id in \[0, 11\)/ }, String(bad));
    t.is(s.position, 0);
  }
  t.throws(() => s.prefill([1, '2' as unknown as number]), { instanceOf: TypeError, message: /^DecodeSession\.prefill: ids\[1\]/ });
  s.prefill([1, 2]).dispose();
  for (const bad of [1.5, 2 ** 32 + 3, NaN, -1, 11]) {
    t.throws(() => s.step(bad), { instanceOf: RangeError, message: /^DecodeSession\.step: id .* is not a token id in \[0, 11\)/ }, String(bad));
    t.is(s.position, 2);
  }
  t.throws(() => s.step('3' as unknown as number), { instanceOf: TypeError, message: /^DecodeSession\.step: / });
  s.step(3).dispose();
  t.is(s.position, 3);
  s.dispose();
  m.store.dispose();
});

// --------------------------------------------------------------------- 5. basis / delta sharing in an encoder–decoder

const S2S: EncoderDecoderConfig = { vocab: 11, dModel: 8, heads: 2, dFF: 16, encoderLayers: 2, decoderLayers: 2, maxSeq: 8, seed: 1 };

for (const strategy of ['basis', 'delta'] as const) {
  test(`EncoderDecoder with ${strategy} sharing in both stacks: one W_S per stack and role`, (t) => {
    const m = new EncoderDecoder({ ...S2S, sharing: { strategy, rank: 2 }, decoderSharing: { strategy, rank: 2 } });
    const names = m.store.parameters.map((p) => p.name);
    t.true(names.includes(`enc.${strategy}.attn.wq.weight`), names.join());
    t.true(names.includes(`dec.${strategy}.attn.wq.weight`), names.join());
    t.true(names.includes(`enc.${strategy}.ffn.fc1.weight`), names.join());
    t.true(names.includes(`dec.${strategy}.ffn.fc2.weight`), names.join());
    t.false(names.some((n) => n.startsWith(`${strategy}.`)), 'no unprefixed (cross-stack) shared weight');
    const w = (x: unknown) => (x as Record<string, { name: string }>)[strategy === 'basis' ? 'basis' : 'shared'];
    t.not(w(m.encoder.attn[0].wq), w(m.decoder.attn[0].wq));
    t.is(w(m.encoder.attn[0].wq), w(m.encoder.attn[1].wq), 'shared across the layers of a stack');
    t.is(w(m.decoder.attn[0].wq).name, `dec.${strategy}.attn.wq.weight`);
    m.store.dispose();
  });
}

test('EncoderDecoder: basis sharing with different ranks in the two stacks builds', (t) => {
  const m = new EncoderDecoder({ ...S2S, sharing: { strategy: 'basis', rank: 2 }, decoderSharing: { strategy: 'basis', rank: 3 } });
  t.deepEqual(m.store.byName('enc.basis.attn.wq.weight')!.shape, [2, 8]);
  t.deepEqual(m.store.byName('dec.basis.attn.wq.weight')!.shape, [3, 8]);
  m.store.dispose();
});

test('EncoderDecoder: shareEncoderDecoder shares the basis across the stacks; a decoder plan is refused with it', (t) => {
  const m = new EncoderDecoder({ ...S2S, sharing: { strategy: 'basis', rank: 2 }, shareEncoderDecoder: true });
  const names = m.store.parameters.map((p) => p.name);
  t.true(names.includes('enc.basis.attn.wq.weight'));
  t.false(names.some((n) => n.startsWith('dec.')));
  t.is(m.decoder, m.encoder);
  m.store.dispose();
  t.throws(() => new EncoderDecoder({ ...S2S, sharing: { strategy: 'basis', rank: 2 }, decoderSharing: { strategy: 'basis', rank: 3 }, shareEncoderDecoder: true }), {
    instanceOf: TypeError,
    message: /^EncoderDecoder: decoderSharing cannot be combined with shareEncoderDecoder/,
  });
});

test('EncoderDecoder.loadStateDict reads a state dict with the old, unprefixed W_S names into both stacks', (t) => {
  for (const strategy of ['basis', 'delta'] as const) {
    const cfg: EncoderDecoderConfig = { ...S2S, sharing: { strategy, rank: 2 }, decoderSharing: { strategy, rank: 2 } };
    const src = new EncoderDecoder({ ...cfg, seed: 7 });
    const sd = src.stateDict();
    // The old layout: one '<strategy>.<role>.weight' per role, which both stacks used.
    const old: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(sd)) {
      if (k.startsWith(`dec.${strategy}.`)) v.dispose();
      else old[k.startsWith(`enc.${strategy}.`) ? k.slice(4) : k] = v;
    }
    t.truthy(old[`${strategy}.attn.wq.weight`]);
    const m = new EncoderDecoder(cfg);
    m.loadStateDict(old);
    const w = (name: string) => Array.from(m.store.byName(name)!.value.dataSync());
    t.deepEqual(w(`enc.${strategy}.attn.wq.weight`), Array.from(old[`${strategy}.attn.wq.weight`].dataSync()));
    t.deepEqual(w(`dec.${strategy}.attn.wq.weight`), w(`enc.${strategy}.attn.wq.weight`));
    t.deepEqual(w('enc.attn.0.ln.weight'), Array.from(old['enc.attn.0.ln.weight'].dataSync()));
    // A bad entry still changes nothing.
    const before = Array.from(m.store.values.dataSync());
    const other = new EncoderDecoder({ ...cfg, seed: 8 });
    const again = other.stateDict();
    other.store.dispose();
    again['ln_dec.bias'].dispose();
    again['ln_dec.bias'] = full([3], 0);
    t.throws(() => m.loadStateDict(again), { message: /^loadStateDict: 'ln_dec\.bias' has shape \[3\]/ });
    t.deepEqual(Array.from(m.store.values.dataSync()), before);
    for (const v of [...Object.values(old), ...Object.values(again)]) v.dispose();
    src.store.dispose();
    m.store.dispose();
  }
});

test('Decoder and Encoder keep the basis names of existing checkpoints', (t) => {
  const m = new Decoder({ ...CFG, sharing: { strategy: 'basis', rank: 2 } });
  t.truthy(m.store.byName('basis.attn.wq.weight'));
  m.store.dispose();
  const e = new Encoder({ ...CFG, sharing: { strategy: 'delta', rank: 2 } });
  t.truthy(e.store.byName('delta.attn.wq.weight'));
  e.store.dispose();
});

// --------------------------------------------------------------------------------------------------------------- 7. CLI

test('bench refuses unknown flags and suites, and --json without a file, with exit 2 (nothing runs)', async (t) => {
  for (const [argv, re] of [
    [['bench', '--bogus-flag'], /^sharedformer bench: unknown flag --bogus-flag/],
    [['bench', 'kernels', '--bogus-flag=1'], /^sharedformer bench: unknown flag --bogus-flag/],
    [['bench', 'nosuch'], /^sharedformer bench: unknown suite 'nosuch'/],
    [['bench', '--json'], /^sharedformer bench: --json needs a value/],
    [['bench', 'tensors', '--json'], /^sharedformer bench: --json needs a value/],
  ] as [string[], RegExp][]) {
    const r = await run(argv);
    t.is(r.code, 2, argv.join(' '));
    t.regex(r.err, re, argv.join(' '));
    t.is(r.out, '', 'nothing ran');
  }
});

/** A checkpoint as `sharedformer train` writes it (tokenizer and model configuration in the metadata). */
function cliCheckpoint(path: string, modelConfig: object, cfg: DecoderConfig = CFG, extra: Record<string, string> = {}): void {
  const m = new Decoder(cfg);
  const chars = Array.from({ length: cfg.vocab }, (_, i) => String.fromCharCode(97 + i));
  saveCheckpoint(path, m.store, m.meta(), { tokenizer: JSON.stringify({ type: 'char', chars }), modelConfig: JSON.stringify(modelConfig), ...extra });
  m.store.dispose();
}
const { vocab: _v, ...MODEL_CONFIG } = CFG;
const textFile = join(dir, 'abc.txt');
writeFileSync(textFile, 'abcdefghijk'.repeat(200));

test('a checkpoint whose metadata holds an invalid or oversized config is the file\'s fault: exit 1, naming the file', async (t) => {
  const ok = join(dir, 'ok.safetensors');
  cliCheckpoint(ok, MODEL_CONFIG);
  const loaded = loadModel(ok);
  t.is(loaded.model.config.layers, 2);
  loaded.model.store.dispose();
  for (const [name, mc, re] of [
    ['an invalid config', { ...MODEL_CONFIG, dModel: 30, heads: 4 }, /invalid model configuration .*multiple of heads/],
    ['a config with an unknown key', { ...MODEL_CONFIG, layer: 3 }, /invalid model configuration/],
    ['a config that is not an object', 7, /model configuration/],
    ['more layers than the file holds', { ...MODEL_CONFIG, layers: 40 }, /unique blocks, but the file holds only/],
    ['more layers, all shared', { ...MODEL_CONFIG, layers: 40, sharing: { strategy: 'all' } }, /has a tensor 'attn.1.ln.bias' that the model configuration in its metadata has no place for/],
    ['a huge config', { ...MODEL_CONFIG, dModel: 4096, heads: 4, dFF: 16384, maxSeq: 1 << 20 }, /describes a model of [0-9,]+ parameters .* but the file's tensors hold [0-9,]+ values/],
  ] as [string, unknown, RegExp][]) {
    const p = join(dir, `bad-config.safetensors`);
    cliCheckpoint(p, mc as object);
    const r = await run(['eval', '--model', p, '--data', textFile]);
    t.is(r.code, 1, `${name}: ${r.err}`);
    t.regex(r.err, /^sharedformer eval: /, name);
    t.true(r.err.includes(p), `${name} names the file: ${r.err}`);
    t.regex(r.err, re, name);
    t.false(r.err.includes('(see: sharedformer help'), name);
    const n = cpuTensors();
    t.throws(() => loadModel(p), { instanceOf: CliError }, name);
    t.is(cpuTensors(), n, `${name}: nothing left allocated`);
  }
});

test('loadModel checks the file\'s tensors against the config before building the model', (t) => {
  const p = join(dir, 'mismatch.safetensors');
  // The file holds a 2-layer model; its metadata claims 3 layers of the same widths.
  cliCheckpoint(p, { ...MODEL_CONFIG, layers: 3 });
  const size = statSync(p).size;
  const e = t.throws(() => loadModel(p), { instanceOf: CliError });
  t.regex(e!.message, /--model .*mismatch\.safetensors/);
  t.regex(e!.message, /parameters|tensor/);
  t.true(size < 1e6);
  // Names: the file holds an untied head, 'head.weight', which the metadata's (tied) config has no place for.
  const q = join(dir, 'mismatch-names.safetensors');
  cliCheckpoint(q, MODEL_CONFIG, { ...CFG, tiedEmbeddings: false });
  const e2 = t.throws(() => loadModel(q), { instanceOf: CliError });
  t.regex(e2!.message, /mismatch-names\.safetensors/);
  t.regex(e2!.message, /head\.weight/);
});

test('what a checkpoint records about training is checked before eval uses it: exit 1, naming the file', async (t) => {
  const p = join(dir, 'recorded.safetensors');
  const tc = (o: unknown) => ({ trainConfig: JSON.stringify(o) });
  cliCheckpoint(p, MODEL_CONFIG, CFG, tc({ batchSize: 1e9, seqLen: 8, seed: 1, data: { file: textFile } }));
  let r = await run(['eval', '--model', p, '--batches', '1']);
  t.is(r.code, 1, r.err);
  t.regex(r.err, /^sharedformer eval: --model .*recorded\.safetensors: the training configuration in its metadata asks for batch size 1000000000; at most 4096/);
  r = await run(['eval', '--model', p, '--batches', '1', '--batch', '2', '--json']);
  t.is(r.code, 0, `--batch overrides the recorded batch: ${r.err}`);
  for (const [name, o, re] of [
    ['a recorded /dev/zero', { data: { file: '/dev/zero' } }, /\/dev\/zero, is not a regular file; give --data FILE/],
    ['a recorded directory', { data: { file: dir } }, /is not a regular file/],
    ['a huge recorded corpus', { data: { corpus: 'default', chars: 1e12 } }, /has data .*expected/],
    ['a recorded config that is not an object', [1, 2], /is not a JSON object/],
    ['an unknown recorded key', { batch: 3 }, /has the unknown key 'batch'/],
    ['a recorded string where a number belongs', { seed: 'x' }, /has seed = "x", not a finite number/],
  ] as [string, unknown, RegExp][]) {
    cliCheckpoint(p, MODEL_CONFIG, CFG, tc(o));
    r = await run(['eval', '--model', p, '--batches', '1']);
    t.is(r.code, 1, `${name}: ${r.err}`);
    t.true(r.err.includes(p) || r.err.includes('recorded in the checkpoint'), `${name}: ${r.err}`);
    t.regex(r.err, re, name);
  }
});

test('train --resume from a checkpoint whose recorded training configuration is invalid is the file\'s fault', async (t) => {
  const p = join(dir, 'resume-bad.safetensors');
  const m = new Decoder(CFG);
  const chars = Array.from({ length: CFG.vocab }, (_, i) => String.fromCharCode(97 + i));
  const moments = new Map([['optimizer.m', new Float32Array(m.store.numel)], ['optimizer.v', new Float32Array(m.store.numel)]]);
  saveCheckpoint(p, m.store, m.meta(), {
    tokenizer: JSON.stringify({ type: 'char', chars }), modelConfig: JSON.stringify(MODEL_CONFIG),
    trainConfig: JSON.stringify({ steps: 4, batchSize: 2, seqLen: 64, lr: 0.01, seed: 1, data: { file: textFile } }),
    trainer: JSON.stringify({ step: 1, adamStep: 1 }),
  }, moments);
  m.store.dispose();
  const out = join(dir, 'resume-out.safetensors');
  let r = await run(['train', '--resume', p, '--out', out, '--quiet']);
  t.is(r.code, 1, r.err);
  t.regex(r.err, /^sharedformer train: --resume .*resume-bad\.safetensors: invalid training configuration: seqLen 64 exceeds .* \(recorded in its metadata\)/);
  r = await run(['train', '--resume', p, '--out', out, '--quiet', '--seq', '99']); // the user's own value: a usage error
  t.is(r.code, 2, r.err);
  t.regex(r.err, /invalid training configuration: seqLen 99 exceeds/);
});

test('bench passes its suites and --json FILE (either spelling) on to scripts/bench.ts', (t) => {
  t.deepEqual(benchArgs([]), []);
  // bench runs in the package folder: a relative --json FILE is resolved against the invoking folder first
  const rows = join(invocationDir(), 'rows.json');
  t.deepEqual(benchArgs(['kernels', '--json', 'rows.json']), ['kernels', '--json', rows]);
  t.deepEqual(benchArgs(['--json=rows.json', 'tensors', 'train']), ['tensors', 'train', '--json', rows]);
  t.deepEqual(benchArgs(['--json', '/abs/rows.json']), ['--json', '/abs/rows.json']);
  t.throws(() => benchArgs(['--json=']), { message: /--json needs a value/ });
  t.throws(() => benchArgs(['-x']), { message: /unknown suite '-x'/ });
});

test('backward after releaseTape() says backward: and why', (t) => {
  resetTape();
  const m = new Decoder(CFG);
  const loss = m.loss(ids(1, 4, 11), ids(1, 4, 11, 2));
  releaseTape();
  // the loss stays readable (a scalar); its graph is gone, and backward() says who freed it
  t.throws(() => backward(loss), { instanceOf: Error, message: /^backward: this loss's graph has already been freed: by releaseTape\(\); compute the loss again$/ });
  t.true(Number.isFinite(loss.dataSync()[0]));
  loss.dispose();
  t.throws(() => backward(loss), { instanceOf: Error, message: /^backward: the loss has been disposed/ });
  const kept = m.loss(ids(1, 4, 11), ids(1, 4, 11, 2));
  releaseTape([kept]);
  t.throws(() => backward(kept), { instanceOf: Error, message: /^backward: / });
  kept.dispose();
  m.store.dispose();
});
