// Design invariant 7 (issue 13, faults 1 and 8): an op that fails on its stream marks every tensor it writes as failed;
// reading such a tensor (data, dataSync, toArray, sharedData, use as an input of a later op) rejects with that op's
// error; reads of unrelated tensors are never affected; synchronize() reports each failure once, naming the ops; and
// a pending read holds no libuv pool thread.
import anyTest from 'ava';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { Tensor, full, kernels, randn, synchronize, synchronizeSync, tensor, zeros } from '../lib/index.ts';
import { native } from '../lib/native.ts';

const test = anyTest.serial;
const ids = (a: number[]) => tensor(Int32Array.from(a), [a.length], { dtype: 'int32' });

// Starts each test with no failure left over from an earlier one.
async function clean() {
  await synchronize().catch(() => undefined);
}

test('embedding: a failed op\'s output rejects with its error; recycled memory is never returned; unrelated reads resolve', async (t) => {
  await clean();
  const table = randn([5, 4], { seed: 1 });
  const bad = ids([1, 9, 2]); // 9 is outside [0, 5)
  const old = full([3, 4], 42);
  await old.data();
  old.dispose(); // its block is cached and would be recycled for `out`
  const out = kernels.embedding(bad, table);
  const z = await zeros([1]).data(); // unrelated: resolves
  t.deepEqual(Array.from(z), [0]);
  const e = await t.throwsAsync(() => out.data());
  t.true(e instanceof RangeError, String(e));
  t.regex(e!.message, /Tensor\.data/);
  t.regex(e!.message, /embedding/);
  t.regex(e!.message, /token id 9/);
  // every way of reading it rejects, each time
  t.throws(() => out.dataSync(), { message: /embedding.*token id 9/ });
  await t.throwsAsync(() => out.data(), { message: /token id 9/ });
  t.throws(() => out.toArray(), { message: /token id 9/ });
  t.throws(() => out.sharedData(), { message: /token id 9/ });
  // a later op that reads it fails too, with the original cause, and its own output is failed
  const y = kernels.gelu(out);
  const e2 = await t.throwsAsync(() => y.data());
  t.regex(e2!.message, /geluForward/);
  t.regex(e2!.message, /embedding.*token id 9/);
  // synchronize reports the failures once, naming the ops
  const s = await t.throwsAsync(() => synchronize());
  t.regex(s!.message, /embedding/);
  t.regex(s!.message, /geluForward/);
  await t.notThrowsAsync(() => synchronize());
  t.notThrows(() => synchronizeSync());
});

test('a failed op whose output is disposed affects no later read', async (t) => {
  await clean();
  const table = randn([5, 4], { seed: 2 });
  kernels.embedding(ids([0, 7]), table).dispose();
  t.deepEqual(Array.from(await full([2], 3).data()), [3, 3]);
  t.deepEqual(Array.from(full([2], 4).dataSync()), [4, 4]);
  // still reported by the next synchronize, once
  await t.throwsAsync(() => synchronize(), { message: /embedding/ });
  t.notThrows(() => synchronizeSync());
});

test('crossEntropy with a target out of range: the loss rejects instead of reading as a small finite number', async (t) => {
  await clean();
  const logits = randn([3, 5], { seed: 3 });
  const loss = kernels.crossEntropy(logits, ids([1, 5, 2]));
  const e = await t.throwsAsync(() => loss.data());
  t.regex(e!.message, /cross_?entropy|crossEntropy/i);
  t.regex(e!.message, /target 5/);
  t.true(e instanceof RangeError);
  await clean();
});

test('attention keyLengths above Tk: o and lse reject', async (t) => {
  await clean();
  const q = randn([2, 1, 3, 4], { seed: 4 }), k = randn([2, 1, 3, 4], { seed: 5 }), v = randn([2, 1, 3, 4], { seed: 6 });
  const kl = ids([3, 4]);
  const { o, lse } = kernels.attention(q, k, v, { keyLengths: kl });
  await t.throwsAsync(() => o.data(), { message: /key_lengths\[1\] = 4/ });
  await t.throwsAsync(() => lse.data(), { message: /key_lengths\[1\] = 4/ });
  t.is((await q.data()).length, 24); // the inputs are fine
  await clean();
});

test('overwriting a failed tensor (fill, copy, a successful op writing it) makes it valid again; accumulating into it keeps it failed', async (t) => {
  await clean();
  const table = randn([5, 4], { seed: 7 });
  const out = zeros([2, 4]);
  kernels.embedding(ids([0, 11]), table, { out });
  await t.throwsAsync(() => out.data(), { message: /token id 11/ });
  // an accumulating op reads its output: it fails and the tensor stays failed
  kernels.geluBackward(randn([2, 4], { seed: 8 }), randn([2, 4], { seed: 9 }), out);
  await t.throwsAsync(() => out.data(), { message: /geluBackward.*token id 11/ });
  // a successful overwrite clears it
  kernels.embedding(ids([0, 1]), table, { out });
  const got = await out.data();
  const tab = await table.data();
  t.deepEqual(Array.from(got), [...tab.slice(0, 4), ...tab.slice(4, 8)]);
  kernels.embedding(ids([0, 12]), table, { out });
  (native() as any).fillInto(out.handle, 0); // what zeroGrad does
  t.deepEqual(Array.from(await out.data()), new Array(8).fill(0));
  await clean();
});

test('only the failed window of a shared buffer is failed: other views of the same storage read normally', async (t) => {
  await clean();
  const table = randn([5, 2], { seed: 10 });
  const buf = zeros([4, 2]);
  const lo = buf.window(0, [2, 2]), hi = buf.window(4, [2, 2]);
  kernels.embedding(ids([1, 2]), table, { out: hi });
  kernels.embedding(ids([1, 99]), table, { out: lo });
  await t.throwsAsync(() => lo.data(), { message: /token id 99/ });
  const h = await hi.data();
  const tab = await table.data();
  t.deepEqual(Array.from(h), Array.from(tab.slice(2, 6)));
  await t.throwsAsync(() => buf.data(), { message: /token id 99/ }); // the whole buffer covers the failed window
  await clean();
});

test('clone and to() of a failed tensor fail with the cause', async (t) => {
  await clean();
  const out = kernels.embedding(ids([3, 30]), randn([5, 4], { seed: 11 }));
  const c = out.clone();
  await t.throwsAsync(() => c.data(), { message: /Tensor\.clone.*embedding.*token id 30/ });
  await clean();
});

test('waiting holds no libuv pool thread: file reads stay prompt while 32 reads wait on long work', async (t) => {
  await clean();
  const n = native() as any;
  const a = randn([768, 768], { seed: 12 }), b = randn([768, 768], { seed: 13 });
  await a.data();
  // long work on the CPU stream, then 32 pending reads behind it (more than libuv's 4 pool threads)
  let c = new Tensor(n.matmul(a.handle, b.handle, null, {}));
  for (let i = 0; i < 12; i++) c = new Tensor(n.matmul(c.handle, b.handle, null, { alpha: 1 / 28 }));
  const t0 = performance.now();
  const reads = Array.from({ length: 32 }, () => c.data());
  const file = fileURLToPath(import.meta.url);
  const r0 = performance.now();
  let fileDone = 0;
  const text = await readFile(file, 'utf8');
  fileDone = performance.now() - r0;
  const all = await Promise.all(reads);
  const total = performance.now() - t0;
  t.true(text.includes('libuv'));
  t.is(all.length, 32);
  t.true(all.every((d) => d.length === 768 * 768));
  // With a pool thread parked per pending read, the file read would wait for the whole computation.
  t.true(fileDone < total / 4, `fs.readFile took ${fileDone.toFixed(1)} ms while the reads took ${total.toFixed(1)} ms`);
});

test('a settled read holds no memory: right after `await t.data(); t.dispose()` the bytes are freed', async (t) => {
  await clean();
  const { memory } = await import('../lib/index.ts');
  let leftover = 0;
  for (let i = 0; i < 300; i++) {
    // Compared with the bytes just before: tensors of earlier tests that the garbage collector frees meanwhile can
    // only lower the count, never raise it.
    const before = memory().cpu.bytes;
    const x = randn([50_000], { seed: i });
    await x.data();
    x.dispose();
    if (memory().cpu.bytes > before) leftover++;
  }
  t.is(leftover, 0, `${leftover} of 300 reads still held their tensor after settling`);
});
