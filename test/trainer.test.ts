// The Trainer: loss goes down, evaluation, events and the async iterator, AbortSignal, bit-exact resumption on the
// CPU, and clear errors for bad options; plus the character tokenizer and the batch sampler.
import anyTest from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Decoder, type DecoderConfig } from '../lib/models/decoder.ts';
import { CharTokenizer, TokenDataset } from '../lib/data/index.ts';
import { Trainer, evaluate, type StepInfo } from '../lib/train/trainer.ts';
import { recordHook, resetTape } from '../lib/autograd.ts';

const test = anyTest.serial;
const text = 'the cat sat on the mat. the dog sat on the log. a cat and a dog sat on a mat and a log. '.repeat(40);
const tok = CharTokenizer.fromText(text);
const data = new TokenDataset(tok.encode(text), tok.vocabSize);
const cfg: DecoderConfig = { vocab: tok.vocabSize, dModel: 32, heads: 4, dFF: 64, layers: 4, maxSeq: 32, sharing: { strategy: 'all' }, seed: 3 };

test('the character tokenizer round-trips and refuses unknown characters', (t) => {
  t.is(tok.decode(tok.encode('the mat.')), 'the mat.');
  t.throws(() => tok.encode('the zebra'), { instanceOf: RangeError, message: /character "z" at position 4/ });
  t.throws(() => tok.decode([999]), { instanceOf: RangeError, message: /id 999/ });
  t.deepEqual(CharTokenizer.fromJSON(JSON.parse(JSON.stringify(tok))).chars, tok.chars);
});

test('batches are a pure function of (split, seed, index) and targets are ids shifted by one', (t) => {
  const a = data.batch('train', 3, 8, 5, 7), b = data.batch('train', 3, 8, 5, 7), c = data.batch('train', 3, 8, 5, 8);
  t.deepEqual(Array.from(a.ids.dataSync()), Array.from(b.ids.dataSync()));
  t.notDeepEqual(Array.from(a.ids.dataSync()), Array.from(c.ids.dataSync()));
  const ids = a.ids.dataSync(), tg = a.targets.dataSync();
  for (let i = 0; i < 7; i++) t.is(tg[i], ids[i + 1]);
  t.throws(() => data.batch('val', 1, 100000, 1, 0), { instanceOf: RangeError, message: /fewer than a window/ });
});

test('training lowers the loss; events, the async iterator and evaluation report it', async (t) => {
  resetTape();
  const model = new Decoder(cfg);
  const trainer = new Trainer(model, data, { steps: 40, batchSize: 8, seqLen: 32, lr: 3e-3, warmup: 5, evalEvery: 20, evalBatches: 4 });
  const events: StepInfo[] = [];
  let evals = 0;
  trainer.on('step', (s: StepInfo) => events.push(s));
  trainer.on('eval', () => evals++);
  const before = await trainer.evaluate(4);
  const seen: number[] = [];
  for await (const s of trainer.steps()) seen.push(s.step);
  t.deepEqual(seen, Array.from({ length: 40 }, (_, i) => i + 1));
  t.is(events.length, 40);
  t.true(events.every((e) => e.tokensPerSec > 0 && Number.isFinite(e.loss) && e.gradNorm! > 0));
  t.true(events[0].lr < events[5].lr, 'warmup raises the learning rate');
  t.true(events[39].lr < events[10].lr, 'cosine decay lowers it');
  const after = await trainer.evaluate(4);
  t.true(after.loss < before.loss - 0.5, `validation loss ${before.loss} -> ${after.loss}`);
  t.is(after.bpc, after.loss / Math.LN2);
  t.is(evals, 2 + 2, 'two scheduled evaluations and two asked for');
  trainer.dispose();
  model.store.dispose();
});

test('a step gives the event loop a turn between its forward and its backward (each synchronous part is one pass)', async (t) => {
  // A server that trains in the background answers requests in the gaps of the step: building a pass's graph is
  // synchronous JavaScript, so the step yields once after the forward, and the longest stall is one pass, not two.
  resetTape();
  const model = new Decoder(cfg);
  const loss = model.loss.bind(model);
  const seen: boolean[] = [];
  model.loss = (ids, targets) => {
    // A timer that is due when the forward ends (as a server's timers and requests are) must run before the backward.
    let turned = false;
    const t0 = performance.now();
    setTimeout(() => (turned = true), 0);
    const l = loss(ids, targets);
    while (performance.now() - t0 < 3); // setTimeout's 0 is 1 ms: make sure it is due
    recordHook(() => seen.push(turned)); // the first node backward runs
    return l;
  };
  const trainer = new Trainer(model, data, { steps: 3, batchSize: 2, seqLen: 16, lr: 1e-3, warmup: 0, accumulate: 2 });
  await trainer.run();
  t.deepEqual(seen, [true, true, true, true, true, true], 'every micro-batch backward starts after the due timer ran');
  trainer.dispose();
  model.store.dispose();
});

test('an AbortSignal stops training cleanly between steps and writes the checkpoint', async (t) => {
  resetTape();
  const dir = mkdtempSync(join(tmpdir(), 'sf-trainer-'));
  try {
    const model = new Decoder(cfg);
    const ac = new AbortController();
    const path = join(dir, 'ckpt.safetensors');
    const trainer = new Trainer(model, data, { steps: 100, batchSize: 4, seqLen: 16, lr: 1e-3, signal: ac.signal, checkpoint: { path } });
    trainer.on('step', (s: StepInfo) => s.step === 3 && ac.abort());
    const r = await trainer.run();
    t.true(r.aborted);
    t.is(r.steps, 3);
    const again = new Trainer(new Decoder(cfg), data, { steps: 100, batchSize: 4, seqLen: 16, lr: 1e-3 });
    again.resume(path);
    t.is(again.step, 3);
    trainer.dispose();
    again.dispose();
    model.store.dispose();
    again.model.store.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('resuming from a checkpoint continues bit-exactly on the CPU', async (t) => {
  resetTape();
  const dir = mkdtempSync(join(tmpdir(), 'sf-resume-'));
  try {
    const opts = { steps: 8, batchSize: 4, seqLen: 16, lr: 2e-3, warmup: 2, accumulate: 2 };
    const straight = new Trainer(new Decoder(cfg), data, opts);
    const lossesA: number[] = [];
    for await (const s of straight.steps()) lossesA.push(s.loss);

    const path = join(dir, 'half.safetensors');
    const first = new Trainer(new Decoder(cfg), data, { ...opts });
    const lossesB: number[] = [];
    for await (const s of first.steps()) {
      lossesB.push(s.loss);
      if (s.step === 4) break;
    }
    await first.save(path);
    const second = new Trainer(new Decoder({ ...cfg, seed: 77 }), data, opts); // different init: resume overwrites it
    second.resume(path);
    for await (const s of second.steps()) lossesB.push(s.loss);
    t.deepEqual(lossesB, lossesA);
    t.deepEqual(Array.from(second.model.store.values.dataSync()), Array.from(straight.model.store.values.dataSync()));
    for (const tr of [straight, first, second]) {
      tr.dispose();
      tr.model.store.dispose();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bad trainer options are clear errors', (t) => {
  const model = new Decoder(cfg);
  const base = { steps: 1, batchSize: 1, seqLen: 8, lr: 1e-3 };
  t.throws(() => new Trainer(model, data, { ...base, steps: 0 }), { instanceOf: RangeError, message: /steps must be a positive integer/ });
  t.throws(() => new Trainer(model, data, { ...base, seqLen: 64 }), { instanceOf: RangeError, message: /seqLen 64 exceeds the model's maxSeq 32/ });
  t.throws(() => new Trainer(model, data, { ...base, lr: NaN }), { instanceOf: RangeError, message: /lr must be a finite number/ });
  t.throws(() => new Trainer(model, data, { ...base, schedule: 'steep' as any }), { instanceOf: TypeError, message: /schedule/ });
  t.throws(() => new Trainer(model, new TokenDataset(new Int32Array(100), 3), base), { instanceOf: RangeError, message: /3 token kinds/ });
  model.store.dispose();
});

test('evaluation and tidy() free an inference pass\'s intermediates at once (no garbage collection needed)', async (t) => {
  resetTape();
  const { memory, synchronizeSync, tidy, noGrad } = await import('../lib/index.ts');
  const packedBefore = memory().cpu.packedStorages;
  const model = new Decoder(cfg);
  const trainer = new Trainer(model, data, { steps: 1, batchSize: 2, seqLen: 16, lr: 1e-3 });
  await trainer.evaluate(1);
  synchronizeSync();
  const before = memory().cpu;
  await trainer.evaluate(3);
  const { ids, targets } = data.batch('val', 2, 16, 1, 0);
  const loss = noGrad(() => tidy(() => model.loss(ids, targets)));
  t.true(Number.isFinite(loss.dataSync()[0]), 'the returned tensor survives tidy()');
  for (const x of [loss, ids, targets]) x.dispose();
  synchronizeSync();
  const after = memory().cpu;
  t.is(after.tensors, before.tensors);
  // every intermediate is freed; what may stay are copies of the model's weights the CPU matmul keeps packed (a weight
  // read twice at the same values), which belong to the model and go with it
  t.is(after.storages - after.packedStorages, before.storages - before.packedStorages);
  // at most two copies of each weight (the forward's and the backward's layout), panels padded to the register tile
  t.true(after.packedBytes <= 4 * (model.store.length + 1024) * 4, `packed copies ${after.packedBytes} bytes`);
  trainer.dispose();
  model.store.dispose();
  synchronizeSync();
  t.is(memory().cpu.packedStorages, packedBefore, 'the packed copies are freed with the model');
});

/**
 * Runs collections until the finalizers of tensors that earlier code dropped without dispose() have run (they free
 * whenever a collection happens): a count of live tensors taken after it changes only by what the test itself does.
 */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    (globalThis as { gc?: () => void }).gc?.();
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('scope(): a recorded pass made inside scopes survives them (the tape pins it), and backward frees it all', async (t) => {
  resetTape();
  const { memory, synchronizeSync, scope, keep, backward, noGrad } = await import('../lib/index.ts');
  const model = new Decoder(cfg);
  const { ids, targets } = data.batch('train', 2, 16, 1, 0);
  const reference = noGrad(() => model.loss(ids, targets)); // caches the position ids of this shape
  const want = reference.dataSync()[0];
  reference.dispose();
  await settle();
  synchronizeSync();
  const before = memory().cpu;
  // the loss is recorded inside two scopes and not returned from the inner one: keep() moves it out of its freeing;
  // every intermediate is pinned by the tape and survives both scopes for backward()
  const loss = scope(() => scope(() => keep(model.loss(ids, targets))));
  t.false(loss.disposed);
  t.is(loss.dataSync()[0], want, 'the recorded pass computes what the inference pass did');
  model.zeroGrad();
  backward(loss);
  const g = model.store.grads.dataSync() as Float32Array;
  t.true(g.some((x) => x !== 0), 'gradients flowed through tensors made inside the scopes');
  t.false(loss.disposed, 'the loss stays readable after backward()');
  loss.dispose();
  synchronizeSync();
  const after = memory().cpu;
  t.is(after.tensors, before.tensors, 'backward() released everything the scopes handed to the graph');
  // packed copies of the shared block's weights (read by each of the 4 layers) are the model's, not the pass's
  t.is(after.storages - after.packedStorages, before.storages - before.packedStorages);
  // a training loop inside one long-lived scope: each backward() frees its step's activations (the pinned tensors
  // went to the graph's scope, not up to the loop's), so memory is flat across steps
  scope(() => {
    const counts: number[] = [];
    for (let step = 0; step < 3; step++) {
      const l = model.loss(ids, targets);
      backward(l);
      l.dispose();
      synchronizeSync();
      counts.push(memory().cpu.tensors);
    }
    t.deepEqual(counts, [before.tensors, before.tensors, before.tensors], 'no step leaves tensors in the enclosing scope');
  });
  for (const x of [ids, targets]) x.dispose();
  model.store.dispose();
});

test('scope() refuses an async function: a scope cannot span an await', async (t) => {
  const { memory, synchronizeSync, scope, tidy, ops, tensor } = await import('../lib/index.ts');
  const x = tensor(new Float32Array([1, 2, 3, 4]), [2, 2]);
  synchronizeSync();
  const before = memory().cpu.tensors;
  let resumed = false;
  for (const [name, fn] of [['scope', scope], ['tidy', tidy]] as const) {
    t.throws(() => fn(async () => {
      const y = ops.add(x, x); // made before the await: freed when the refusal closes the scope
      await new Promise((r) => setTimeout(r, 5));
      resumed = true;
      return y;
    }), { instanceOf: TypeError, message: /^scope: fn returned a Promise — a scope cannot span an await/ }, name);
    synchronizeSync();
    t.is(memory().cpu.tensors, before, `${name}: what the refused fn made before its await is freed`);
  }
  await new Promise((r) => setTimeout(r, 20)); // the refused functions finish without an unhandled rejection
  t.true(resumed);
  x.dispose();
});

test('evaluate() is Trainer.evaluate as a function (what eval in the CLI uses), freeing each pass, with clear errors', async (t) => {
  resetTape();
  const { memory, synchronizeSync } = await import('../lib/index.ts');
  const model = new Decoder(cfg);
  const trainer = new Trainer(model, data, { steps: 1, batchSize: 2, seqLen: 16, lr: 1e-3, seed: 5 });
  const viaTrainer = await trainer.evaluate(3);
  // collect before each count, so that only what evaluate() leaves behind can differ (the count fell by 4 in CI
  // without this)
  await settle();
  synchronizeSync();
  const before = memory().cpu;
  t.is(await evaluate(model, data, { batches: 3, batchSize: 2, seqLen: 16, seed: 5 }), viaTrainer.loss);
  await settle();
  synchronizeSync();
  const after = memory().cpu;
  t.is(after.tensors, before.tensors, 'nothing left behind');
  t.is(after.storages, before.storages);
  const o = { batches: 1, batchSize: 1, seqLen: 8, seed: 0 };
  await t.throwsAsync(evaluate(model, data, { ...o, batches: 0 }), { instanceOf: RangeError, message: /^evaluate: batches must be an integer in \[1, 2\^53 - 1\], got 0/ });
  await t.throwsAsync(evaluate(model, data, { ...o, seed: -1 }), { instanceOf: RangeError, message: /^evaluate: seed must be an integer in \[0, 2\^53 - 1\], got -1/ });
  await t.throwsAsync(evaluate(model, data, { ...o, batches: 2 ** 60 }), { instanceOf: RangeError, message: /^evaluate: batches must be an integer in \[1, 2\^53 - 1\], got 1152921504606847000/ });
  await t.throwsAsync(evaluate(model, data, { ...o, batchSize: '2' as any }), { instanceOf: TypeError, message: /^evaluate: batchSize must be an integer, got "2"/ });
  await t.throwsAsync(evaluate(model, data, { ...o, seqLen: 64 }), { instanceOf: RangeError, message: /^evaluate: seqLen 64 exceeds the model's maxSeq 32/ });
  await t.throwsAsync(evaluate(model, data, null as any), { instanceOf: TypeError, message: /^evaluate: options must be an object/ });
  trainer.dispose();
  model.store.dispose();
});

test('Trainer.save writes without blocking the event loop, the same bytes as saveSync, from the state at the call', async (t) => {
  resetTape();
  const dir = mkdtempSync(join(tmpdir(), 'sf-save-'));
  try {
    const model = new Decoder(cfg);
    const tr = new Trainer(model, data, { steps: 4, batchSize: 2, seqLen: 16, lr: 1e-3 });
    const it = tr.steps();
    await it.next();
    await it.next();
    const events: { step: number; path: string }[] = [];
    tr.on('checkpoint', (e: { step: number; path: string }) => events.push(e));
    const a = join(dir, 'a.safetensors'), b = join(dir, 'b.safetensors'), c = join(dir, 'c.safetensors');
    let ticked = false;
    setImmediate(() => (ticked = true));
    await tr.save(a);
    t.true(ticked, 'the event loop ran other work while the checkpoint was written');
    tr.saveSync(b);
    t.deepEqual(readFileSync(a), readFileSync(b), 'save() and saveSync() write the same bytes');
    // a step taken while save() is still writing does not mix into the file: it holds the state at the call
    const pending = tr.save(c);
    await it.next();
    await pending;
    t.is(tr.step, 3);
    t.deepEqual(readFileSync(c), readFileSync(a), 'the file holds step 2, not a mix with step 3');
    t.deepEqual(events, [{ step: 2, path: a }, { step: 2, path: b }, { step: 2, path: c }]);
    const again = new Trainer(new Decoder(cfg), data, { steps: 4, batchSize: 2, seqLen: 16, lr: 1e-3 });
    again.resume(c);
    t.is(again.step, 2);
    await it.return(undefined);
    tr.dispose();
    again.dispose();
    model.store.dispose();
    again.model.store.dispose();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
