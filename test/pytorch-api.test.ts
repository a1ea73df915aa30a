// The names a PyTorch user reaches for (issue 15, point 7): loss.backward(), await loss.item(), opt.step(),
// opt.zeroGrad(), the optimizer's step counter as stepCount, and Decoder.load(path) building the model a checkpoint
// holds. Each is checked against the primitives it stands for (backward(loss), data(), update(), store.zeroGrad(),
// new Decoder(config) + load), bit for bit.
import anyTest from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Decoder, type DecoderConfig } from '../lib/models/decoder.ts';
import { AdamW, SGD } from '../lib/optim/index.ts';
import { backward, releaseTape, resetTape } from '../lib/autograd.ts';
import { tensor, full } from '../lib/tensor.ts';
import * as ops from '../lib/ops/index.ts';
import { CharTokenizer, TokenDataset } from '../lib/data/index.ts';
import { Trainer } from '../lib/train/trainer.ts';
import { loadSafetensors, saveSafetensors } from '../lib/io/safetensors.ts';

const test = anyTest.serial;
const cfg: DecoderConfig = { vocab: 13, dModel: 16, heads: 2, dFF: 32, layers: 3, maxSeq: 8, sharing: { strategy: 'all' }, seed: 11 };
const batch = () => ({
  ids: tensor(Int32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]), [2, 6]),
  targets: tensor(Int32Array.from([2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0]), [2, 6]),
});
const bits = (a: ArrayLike<number>) => Array.from(new Uint32Array(Float32Array.from(a).buffer));

test('a PyTorch-style loop (zeroGrad, loss.backward(), opt.step(), await loss.item()) equals the primitives bit for bit', async (t) => {
  resetTape();
  const a = new Decoder(cfg), b = new Decoder(cfg);
  const oa = new AdamW(a.store, { lr: 1e-2 }), ob = new AdamW(b.store, { lr: 1e-2 });
  const { ids, targets } = batch();
  for (let i = 0; i < 3; i++) {
    oa.zeroGrad();
    const la = a.loss(ids, targets);
    la.backward();
    oa.step();
    const itemA = await la.item();

    b.store.zeroGrad();
    const lb = b.loss(ids, targets);
    backward(lb);
    ob.update();
    const itemB = (await lb.data())[0];
    t.is(typeof itemA, 'number');
    t.is(itemA, itemB, `step ${i + 1}: the same loss`);
    la.dispose();
    lb.dispose();
  }
  t.deepEqual(bits(a.store.values.dataSync()), bits(b.store.values.dataSync()), 'the same parameters after 3 steps');
  t.is(oa.stepCount, 3);
  t.is(ob.stepCount, 3);
  // opt.step(lr) overrides the rate as update(lr) does
  oa.zeroGrad();
  b.store.zeroGrad();
  const la = a.loss(ids, targets);
  la.backward();
  const lb = b.loss(ids, targets);
  lb.backward();
  oa.step(3e-3);
  ob.update(3e-3);
  t.deepEqual(bits(a.store.values.dataSync()), bits(b.store.values.dataSync()), 'step(lr) = update(lr)');
  la.dispose();
  lb.dispose();
  ids.dispose();
  targets.dispose();
  oa.dispose();
  ob.dispose();
  a.store.dispose();
  b.store.dispose();
});

test('opt.zeroGrad() zeroes the store\'s gradients; SGD has the same names', (t) => {
  resetTape();
  const m = new Decoder(cfg);
  const opt = new SGD(m.store, { lr: 0.1, momentum: 0.9 });
  const { ids, targets } = batch();
  const l = m.loss(ids, targets);
  l.backward();
  t.true(Array.from(m.store.grads.dataSync()).some((g) => g !== 0), 'backward wrote gradients');
  const before = bits(m.store.values.dataSync());
  opt.step();
  t.notDeepEqual(bits(m.store.values.dataSync()), before, 'step() updated the parameters');
  t.is(opt.stepCount, 1);
  opt.zeroGrad();
  t.true(Array.from(m.store.grads.dataSync()).every((g) => g === 0), 'zeroGrad() zeroed every gradient');
  l.dispose();
  ids.dispose();
  targets.dispose();
  opt.dispose();
  m.store.dispose();
});

test('step is a method: assigning to it, a closure or a non-number rate are refused by name', (t) => {
  const m = new Decoder(cfg);
  const opt = new AdamW(m.store, { lr: 1e-3 });
  t.throws(() => {
    (opt as unknown as { step: number }).step = 7;
  }, { instanceOf: TypeError });
  t.is(typeof opt.step, 'function', 'the method survives');
  t.throws(() => opt.step((() => 1) as unknown as number), { instanceOf: TypeError, message: /AdamW\.step: takes an optional learning rate, not a closure/ });
  t.throws(() => opt.step('0.1' as unknown as number), { instanceOf: TypeError, message: /AdamW\.step: lr must be a number, got string/ });
  t.throws(() => opt.step(NaN), { instanceOf: RangeError });
  t.is(opt.stepCount, 0, 'a refused step counts nothing');
  const sgd = new SGD(m.store, { lr: 1e-3 });
  t.throws(() => sgd.step((() => 1) as unknown as number), { instanceOf: TypeError, message: /SGD\.step: takes an optional learning rate, not a closure/ });
  opt.dispose();
  sgd.dispose();
  m.store.dispose();
});

test('item() reads the one element of a one-element tensor and rejects otherwise', async (t) => {
  const s = full([], 2.5), one = tensor([[-3]]), two = tensor([1, 2]), i = tensor(Int32Array.from([7]), [1]);
  t.is(await s.item(), 2.5);
  t.is(await one.item(), -3);
  t.is(await i.item(), 7);
  await t.throwsAsync(two.item(), { instanceOf: RangeError, message: /Tensor\.item: .*shape \[2\] \(2 elements\)/ });
  const nan = full([1], NaN);
  t.true(Number.isNaN(await nan.item()), 'NaN is read as NaN');
  two.dispose();
  await t.throwsAsync(two.item(), { message: /disposed/ });
  for (const x of [s, one, i, nan]) x.dispose();
});

test('loss.backward() refuses what backward() refuses, with the same errors', (t) => {
  resetTape();
  const v = full([2], 1);
  t.throws(() => v.backward(), { instanceOf: RangeError, message: /backward: loss must be a scalar/ });
  const s = full([1], 1);
  t.throws(() => s.backward(), { message: /backward: the loss is not on the current tape/ });
  v.dispose();
  s.dispose();
});

test('Decoder.load(path) builds the model a checkpoint holds: config, plan and parameters, bit for bit', async (t) => {
  resetTape();
  const dir = mkdtempSync(join(tmpdir(), 'sf-load-'));
  try {
    const c: DecoderConfig = { ...cfg, sharing: { strategy: 'cycle', unique: 2 }, layers: 4, seed: 5 };
    const m = new Decoder(c);
    const path = join(dir, 'm.safetensors');
    m.save(path);
    const loaded = Decoder.load(path);
    t.deepEqual(loaded.config, m.config);
    t.deepEqual(loaded.plan.layers, m.plan.layers);
    t.deepEqual(bits(loaded.store.values.dataSync()), bits(m.store.values.dataSync()));
    const { ids } = batch();
    const la = m.forward(ids), lb = loaded.forward(ids);
    t.deepEqual(bits(la.dataSync()), bits(lb.dataSync()), 'the same logits');
    // a Trainer checkpoint (with optimizer moments) loads too; the moments are skipped
    const text = 'abcdefghijkl '.repeat(50);
    const tok = CharTokenizer.fromText(text);
    const tm = new Decoder({ ...c, vocab: tok.vocabSize });
    const tr = new Trainer(tm, new TokenDataset(tok.encode(text), tok.vocabSize), { steps: 2, batchSize: 2, seqLen: 8, lr: 1e-3 });
    await tr.run();
    const tpath = join(dir, 't.safetensors');
    await tr.save(tpath);
    const tl = Decoder.load(tpath);
    t.deepEqual(bits(tl.store.values.dataSync()), bits(tm.store.values.dataSync()));
    for (const x of [la, lb, ids]) x.dispose();
    tr.dispose();
    for (const x of [m, loaded, tm, tl]) x.store.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('Decoder.load refuses, by name, a missing file, a non-checkpoint, another model kind and tensors that disagree with the metadata', (t) => {
  resetTape();
  const dir = mkdtempSync(join(tmpdir(), 'sf-load-'));
  try {
    t.throws(() => Decoder.load(join(dir, 'none.safetensors')), { message: /^Decoder\.load: cannot read .*none\.safetensors: no such file$/ });
    t.throws(() => Decoder.load(dir), { message: /^Decoder\.load: cannot read .*: it is a directory$/ });
    t.throws(() => Decoder.load(''), { instanceOf: TypeError, message: /Decoder\.load: path must be a non-empty string/ });
    t.throws(() => Decoder.load(join(dir, 'x'), { dev: 'cpu' } as never), { instanceOf: TypeError, message: /Decoder\.load: unknown option "dev"/ });
    const text = join(dir, 'notes.txt');
    writeFileSync(text, 'hello, this is not a checkpoint at all');
    t.throws(() => Decoder.load(text), { message: /^Decoder\.load: .*notes\.txt is not a readable safetensors checkpoint/ });
    const m = new Decoder(cfg);
    const path = join(dir, 'm.safetensors');
    m.save(path);
    const f = loadSafetensors(path);
    const tensors = new Map([...f.tensors].map(([k, v]) => [k, { dtype: 'F32' as const, shape: v.shape, data: v.data as Float32Array }]));
    const rewrite = (name: string, md: Record<string, string>, ts = tensors) => {
      const p = join(dir, name);
      saveSafetensors(p, ts, md);
      return p;
    };
    const { data_sha256: _digest, ...md } = f.metadata;
    t.throws(() => Decoder.load(rewrite('enc.safetensors', { ...md, model: 'encoder' })), { message: /holds a "encoder" model, not a decoder/ });
    t.throws(() => Decoder.load(rewrite('plain.safetensors', { note: 'x' })), { message: /is not a sharedformer checkpoint/ });
    // the metadata says dModel 32: the file's tensors are dModel 16, so nothing is built
    const wide = JSON.stringify({ ...JSON.parse(md.config), dModel: 32, dFF: 64 });
    t.throws(() => Decoder.load(rewrite('wide.safetensors', { ...md, config: wide })), { message: /^Decoder\.load: .*wide\.safetensors: .*(has shape|describes a model of)/ });
    // an invalid configuration (heads not dividing dModel) is the file's fault
    const bad = JSON.stringify({ ...JSON.parse(md.config), heads: 3 });
    t.throws(() => Decoder.load(rewrite('bad.safetensors', { ...md, config: bad })), { message: /invalid model configuration in its metadata/ });
    t.throws(() => Decoder.load(rewrite('json.safetensors', { ...md, plan: '{' })), { message: /the plan in its metadata is not JSON/ });
    const extra = new Map(tensors);
    extra.set('stray', { dtype: 'F32', shape: [1], data: new Float32Array(1) });
    t.throws(() => Decoder.load(rewrite('stray.safetensors', md, extra)), { message: /has a tensor 'stray'/ });
    m.store.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// The tape's rules (issue 15, point 8): a loss recorded beside another can still be back-propagated alone; the other
// one's graph is freed with the tape, and backward() of it then says exactly why; nothing stays stuck.
const gradsAfter = (m: Decoder, fn: () => void) => {
  m.store.zeroGrad();
  fn();
  return Array.from(m.store.grads.dataSync());
};
const batch2 = () => ({
  ids: tensor(Int32Array.from([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]), [2, 6]),
  targets: tensor(Int32Array.from([1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9]), [2, 6]),
});

test('two losses on the tape: backward() of one gives its gradients alone, the other then fails exactly, and the next step works', (t) => {
  resetTape();
  const m = new Decoder(cfg);
  const b1 = batch(), b2 = batch2();
  const alone = gradsAfter(m, () => m.loss(b2.ids, b2.targets).backward());
  let l1!: ReturnType<Decoder['loss']>;
  const both = gradsAfter(m, () => {
    l1 = m.loss(b1.ids, b1.targets); // recorded, never back-propagated
    const l2 = m.loss(b2.ids, b2.targets);
    l2.backward();
  });
  t.deepEqual(bits(both), bits(alone), 'backward(l2) gives l2\'s gradients, untouched by l1\'s graph');
  t.false(l1.disposed, 'the other loss stays readable');
  t.true(Number.isFinite(l1.dataSync()[0]));
  t.throws(() => l1.backward(), { message: /^backward: this loss's graph has already been freed: by the backward\(\) of another loss recorded on the same tape .*; compute the loss again$/ });
  // nothing is stuck: the next loss back-propagates as usual
  const again = gradsAfter(m, () => m.loss(b2.ids, b2.targets).backward());
  t.deepEqual(bits(again), bits(alone));
  l1.dispose();
  for (const x of [b1.ids, b1.targets, b2.ids, b2.targets]) x.dispose();
  m.store.dispose();
});

test('backward() of the same loss twice, or after releaseTape(), names the cause; retain runs it again with the same gradients', (t) => {
  resetTape();
  const m = new Decoder(cfg);
  const { ids, targets } = batch();
  const once = gradsAfter(m, () => m.loss(ids, targets).backward());
  const l = m.loss(ids, targets);
  l.backward();
  t.throws(() => l.backward(), { message: /already been freed: by an earlier backward\(\) of this loss \(backward\(loss, \{ retain: true \}\) keeps it/ });
  const r = m.loss(ids, targets);
  releaseTape();
  t.throws(() => r.backward(), { message: /already been freed: by releaseTape\(\); compute the loss again/ });
  // retain: the second pass gives exactly the first pass's gradients again (sum = 2x), as PyTorch's retain_graph
  const twice = gradsAfter(m, () => {
    const k = m.loss(ids, targets);
    k.backward({ retain: true });
    k.backward();
  });
  // (not bit for bit: the second pass adds each shared use into a buffer that already holds the first pass's sum)
  const scale = Math.max(...once.map(Math.abs));
  const worst = Math.max(...twice.map((g, i) => Math.abs(g - 2 * once[i]))) / scale;
  t.true(worst < 1e-6, `two passes over a retained tape = 2 x one pass (max error ${worst} of the largest gradient)`);
  for (const x of [l, r, ids, targets]) x.dispose();
  m.store.dispose();
});

test('backward() of an op on losses (their sum) is refused by name before anything runs, and the next step works', (t) => {
  resetTape();
  const m = new Decoder(cfg);
  const b1 = batch(), b2 = batch2();
  const alone = gradsAfter(m, () => m.loss(b2.ids, b2.targets).backward());
  m.store.zeroGrad();
  const l1 = m.loss(b1.ids, b1.targets), l2 = m.loss(b2.ids, b2.targets);
  const sum = ops.add(l1, l2);
  t.throws(() => sum.backward(), { message: /^backward: the loss must be the output of a recorded loss op .*call backward\(\) on each in turn/ });
  t.true(Array.from(m.store.grads.dataSync()).every((g) => g === 0), 'no gradient was written');
  const again = gradsAfter(m, () => m.loss(b2.ids, b2.targets).backward());
  t.deepEqual(bits(again), bits(alone), 'the next loss back-propagates alone');
  for (const x of [sum, l1, l2, b1.ids, b1.targets, b2.ids, b2.targets]) x.dispose();
  m.store.dispose();
});
