// Issue 8, point 5: a NaN or Infinity in the loss or the gradients stops the Trainer with an error naming the step
// (default), or skips the step with nonFinite: 'skip'; the bad values never reach the parameters, the optimizer state
// or a checkpoint on disk. Faults are injected into a parameter (a NaN loss) and into a gradient (a finite loss with
// an infinite gradient).
import anyTest from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CharTokenizer, Decoder, TokenDataset, Trainer, loadSafetensors, type StepInfo } from '../../lib/index.ts';
import { resetTape } from '../../lib/autograd.ts';

const test = anyTest.serial;
const text = 'the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. '.repeat(30);
const tok = CharTokenizer.fromText(text);
const data = new TokenDataset(tok.encode(text), tok.vocabSize);
const cfg = { vocab: tok.vocabSize, dModel: 16, heads: 2, dFF: 32, layers: 2, maxSeq: 16, seed: 5 };
const opts = { steps: 8, batchSize: 4, seqLen: 16, lr: 3e-3, warmup: 0 };

let dir: string;
test.before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sf-numerics-'));
});
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

// in the packed layout (parameters back to back, the alignment padding of the flat buffers dropped), as a checkpoint
// stores the moments
const snapshot = (tr: Trainer) => ({
  values: tr.model.store.pack(tr.model.store.values.dataSync() as Float32Array),
  m: tr.model.store.pack(tr.opt.m.dataSync() as Float32Array),
  v: tr.model.store.pack(tr.opt.v.dataSync() as Float32Array),
});
const allFinite = (a: ArrayLike<number>) => Array.prototype.every.call(a, Number.isFinite);
const bitsEqual = (a: Float32Array, b: Float32Array) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

/** The parameters and moments stored in a checkpoint, in the store's order (packed, as snapshot()). */
function fromFile(path: string, tr: Trainer) {
  const f = loadSafetensors(path);
  const values = new Float32Array(tr.model.store.numel);
  for (const p of tr.model.store.parameters) values.set(f.tensors.get(p.name)!.data as Float32Array, p.packedOffset);
  return { values, m: f.tensors.get('optimizer.m')!.data as Float32Array, v: f.tensors.get('optimizer.v')!.data as Float32Array, md: f.metadata };
}

/** Makes the next zeroGrad() leave +Infinity in one gradient element (backward adds to it): a finite loss, an infinite gradient. */
function poisonNextGradient(model: Decoder): void {
  const orig = model.zeroGrad.bind(model);
  model.zeroGrad = () => {
    orig();
    (model.store.grads.sharedData() as Float32Array)[3] = Infinity;
    model.zeroGrad = orig;
  };
}

test('a NaN loss (poisoned parameter) stops training with an error naming the step; the last checkpoint is the good one', async (t) => {
  resetTape();
  const path = join(dir, 'nan-loss.safetensors');
  const model = new Decoder(cfg);
  const tr = new Trainer(model, data, { ...opts, checkpoint: { path, every: 1 } });
  let good: ReturnType<typeof snapshot> | undefined;
  tr.on('checkpoint', ({ step }: { step: number }) => {
    if (step !== 3) return;
    good = snapshot(tr);
    (model.store.values.sharedData() as Float32Array)[7] = NaN; // after the step-3 checkpoint is on disk
  });
  const err = await t.throwsAsync(tr.run(), { instanceOf: Error, message: /the loss is NaN at step 4\b/ });
  t.regex(err!.message, /before the update/);
  t.is(tr.step, 3, 'the failed step is not counted');
  // The update did not run: the moments are exactly those of step 3 (the poisoned parameter aside, nothing moved).
  const after = snapshot(tr);
  t.true(bitsEqual(after.m, good!.m) && bitsEqual(after.v, good!.v), 'AdamW moments untouched by the NaN step');
  const file = fromFile(path, tr);
  t.is(JSON.parse(file.md.trainer).step, 3);
  t.true(bitsEqual(file.values, good!.values), 'the checkpoint on disk holds the step-3 parameters');
  t.true(bitsEqual(file.m, good!.m) && bitsEqual(file.v, good!.v));
  t.true(allFinite(file.values) && allFinite(file.m) && allFinite(file.v));
  tr.dispose();
  model.store.dispose();
});

test('an infinite gradient with a finite loss stops training too, before the update', async (t) => {
  resetTape();
  const model = new Decoder(cfg);
  const tr = new Trainer(model, data, { ...opts, clip: 0 }); // clipping off: the check uses the sum of squares
  tr.on('step', (s: StepInfo) => s.step === 2 && poisonNextGradient(model));
  let before: ReturnType<typeof snapshot> | undefined;
  tr.on('step', (s: StepInfo) => s.step === 2 && (before = snapshot(tr)));
  await t.throwsAsync(tr.run(), { instanceOf: Error, message: /the gradient sum of squares is Infinity \(loss [0-9.]+\) at step 3\b/ });
  const after = snapshot(tr);
  t.true(bitsEqual(after.values, before!.values) && bitsEqual(after.m, before!.m) && bitsEqual(after.v, before!.v), 'parameters and moments untouched');
  tr.dispose();
  model.store.dispose();
});

test("nonFinite: 'skip' drops the poisoned steps, keeps training, and reports them", async (t) => {
  resetTape();
  const path = join(dir, 'skip.safetensors');
  const model = new Decoder(cfg);
  const tr = new Trainer(model, data, { ...opts, nonFinite: 'skip', checkpoint: { path, every: 2 } });
  const skips: { step: number; reason: string }[] = [];
  const steps: StepInfo[] = [];
  const snaps = new Map<number, ReturnType<typeof snapshot>>();
  tr.on('skip', (s: { step: number; reason: string }) => skips.push(s));
  tr.on('step', (s: StepInfo) => {
    steps.push(s);
    snaps.set(s.step, snapshot(tr));
    if (s.step === 2 || s.step === 5) poisonNextGradient(model); // steps 3 and 6 see an infinite gradient
  });
  const r = await tr.run();
  t.is(r.steps, 8);
  t.is(r.skipped, 2);
  t.deepEqual(skips.map((s) => s.step), [3, 6]);
  t.regex(skips[0].reason, /gradient norm is Infinity/);
  t.deepEqual(steps.filter((s) => s.skipped).map((s) => s.step), [3, 6]);
  for (const k of [3, 6]) {
    const a = snaps.get(k - 1)!, b = snaps.get(k)!;
    t.true(bitsEqual(a.values, b.values) && bitsEqual(a.m, b.m) && bitsEqual(a.v, b.v), `skipped step ${k} changed nothing`);
  }
  t.false(bitsEqual(snaps.get(4)!.values, snaps.get(3)!.values), 'training goes on after a skipped step');
  t.is(tr.opt.stepCount, 6, 'AdamW counted only the 6 real updates');
  t.true(Number.isFinite(r.loss));
  const file = fromFile(path, tr);
  t.true(allFinite(file.values) && allFinite(file.m) && allFinite(file.v));
  t.is(JSON.parse(file.md.trainer).step, 8);
  tr.dispose();
  model.store.dispose();
});

test('Trainer.save refuses to write non-finite parameters and leaves the previous file as it was', async (t) => {
  resetTape();
  const path = join(dir, 'refuse.safetensors');
  const model = new Decoder(cfg);
  const tr = new Trainer(model, data, opts);
  await tr.save(path);
  const bytes = readFileSync(path);
  (model.store.values.sharedData() as Float32Array)[model.store.byName('ln_f.weight')!.offset] = -Infinity;
  const refused = /Trainer\.save: parameters \(ln_f\.weight\) element \d+ is -Infinity at step 0; not writing/;
  await t.throwsAsync(tr.save(path), { instanceOf: Error, message: refused });
  t.throws(() => tr.saveSync(path), { instanceOf: Error, message: refused });
  t.deepEqual(readFileSync(path), bytes);
  t.throws(() => new Trainer(model, data, { ...opts, nonFinite: 'ignore' as never }), { instanceOf: TypeError, message: /Trainer: nonFinite must be 'error' or 'skip'/ });
  tr.dispose();
  model.store.dispose();
});
