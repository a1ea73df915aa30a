// record.test.ts — recording an op sequence and replaying it (lib/record.ts: record / replay / writeInto / freeRecording;
// native/core/stream.h, native/addon/ops_record.cpp): a replay with new inputs written into the recorded input tensors
// computes the new results (against a JavaScript reference); nothing recorded runs before a replay; kvAppend reads a
// tensor-valued position when it runs, and a bad one fails that op on its stream, poisoning the cache and nothing
// unrelated; reading inside a recording, nesting one, replaying a freed one and bad arguments are clear errors; an
// exception inside record() leaves no recording open; memory comes back when the recording is freed.
import anyTest from 'ava';

import { Tensor, freeRecording, kernels, memory, record, replay, synchronizeSync, tensor, writeInto, zeros, type Recording } from '../lib/index.ts';
import { native } from '../lib/native.ts';
import { Random } from './helpers/random.ts';

const test = anyTest.serial;

const counts = () => {
  synchronizeSync();
  const c = memory().cpu;
  return { tensors: c.tensors, storages: c.storages, bytes: c.bytes };
};

/** y = x W^T + b, naive in float64. */
function linearRef(x: ArrayLike<number>, w: ArrayLike<number>, b: ArrayLike<number>, M: number, N: number, K: number): number[] {
  const y: number[] = [];
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let s = b[j];
      for (let k = 0; k < K; k++) s += x[i * K + k] * w[j * K + k];
      y.push(s);
    }
  return y;
}

test('a replay reads the inputs written before it: matmul + bias recorded once, replayed with new x', async (t) => {
  const r = new Random(3);
  const M = 1, N = 37, K = 53;
  const rand = (n: number) => Float32Array.from({ length: n }, () => r.uniform(-1, 1));
  const w = tensor(rand(N * K), [N, K]);
  const b = tensor(rand(N), [N]);
  const x = zeros([M, K]);
  const before = counts();
  const { result: y, recording } = record('cpu', () => kernels.matmul(x, w, { transB: true, bias: b }));
  t.is(recording.device, 'cpu');
  t.is(recording.tasks, 1, 'one kernel recorded');
  const wv = await w.data(), bv = await b.data();
  for (let rep = 0; rep < 4; rep++) {
    const xv = rand(M * K);
    writeInto(x, xv);
    replay(recording);
    const got = await y.data();
    const want = linearRef(xv, wv, bv, M, N, K);
    const err = Math.max(...want.map((v, i) => Math.abs(v - got[i]) / (1 + Math.abs(v))));
    t.true(err < 1e-5, `replay ${rep}: y = x W^T + b (max rel err ${err})`);
  }
  freeRecording(recording);
  freeRecording(recording); // idempotent
  t.throws(() => replay(recording), { message: /^replay: the recording has been freed$/ });
  y.dispose();
  t.deepEqual(counts(), before, 'memory is back once the recording and its output are freed');
  for (const z of [w, b, x]) z.dispose();
});

test('nothing recorded runs until replayed; the recorded ops run in order, every replay', async (t) => {
  const acc = zeros([4]);
  const one = tensor(Float32Array.of(1, 2, 3, 4), [4]);
  const { recording } = record('cpu', () => {
    kernels.axpby(one, 1, acc, 1, { out: acc }); // acc += one
    kernels.axpby(acc, 2, acc, 0, { out: acc }); // acc = 2 acc
  });
  t.deepEqual(Array.from(await acc.data()), [0, 0, 0, 0], 'recording ran nothing');
  replay(recording);
  replay(recording);
  t.deepEqual(Array.from(await acc.data()), [6, 12, 18, 24], '((0 + x) 2 + x) 2 = 6x: two replays, each in order');
  freeRecording(recording);
  acc.dispose();
  one.dispose();
});

test('kvAppend with a tensor position: read when it runs; one out of range fails that op on its stream only', async (t) => {
  const cache = zeros([1, 2, 4, 3]);
  const src = tensor(Float32Array.from({ length: 6 }, (_, i) => i + 1), [1, 2, 1, 3]);
  const pos = tensor(Int32Array.of(0), [1]);
  const other = tensor(Float32Array.of(7), [1]);
  const { recording } = record('cpu', () => kernels.kvAppend(cache, src, pos));
  for (const p of [2, 0, 3]) {
    writeInto(pos, Int32Array.of(p));
    replay(recording);
  }
  const c = Array.from(await cache.data());
  const row = (h: number, p: number) => c.slice((h * 4 + p) * 3, (h * 4 + p + 1) * 3);
  for (const p of [0, 2, 3]) {
    t.deepEqual(row(0, p), [1, 2, 3], `head 0, position ${p}`);
    t.deepEqual(row(1, p), [4, 5, 6], `head 1, position ${p}`);
  }
  t.deepEqual(row(0, 1), [0, 0, 0], 'position 1 untouched');
  // an out-of-range position fails the replayed op: the cache rejects with its error, an unrelated tensor reads fine
  writeInto(pos, Int32Array.of(4));
  replay(recording);
  await t.throwsAsync(() => cache.data(), { instanceOf: RangeError, message: /kvAppend \(cpu stream\): kvAppend: pos \(from a tensor\) \+ n = 4 \+ 1 is outside the cache length Tmax = 4/ });
  t.deepEqual(Array.from(await other.data()), [7], 'an unrelated tensor is not failed');
  writeInto(pos, Int32Array.of(-1));
  replay(recording);
  await t.throwsAsync(() => cache.data(), { instanceOf: Error }, 'a negative position fails too (the cache stays failed)');
  // the binding's own checks of a tensor position, before anything runs
  const bad: [unknown, RegExp, ErrorConstructor][] = [
    [tensor(Float32Array.of(0), [1]), /^kvAppend: pos must be int32/, TypeError],
    [tensor(Int32Array.of(0, 1), [2]), /^kvAppend: pos must have shape \[1\]/, RangeError],
  ];
  for (const [p, message, cls] of bad) {
    t.throws(() => kernels.kvAppend(zeros([1, 2, 4, 3]), src, p as Tensor), { instanceOf: cls, message });
    (p as Tensor).dispose();
  }
  freeRecording(recording);
  for (const z of [cache, src, pos, other]) z.dispose();
});

test('misuse: reading inside a recording, nesting, a throwing body, bad handles and writeInto arguments', async (t) => {
  const x = tensor(Float32Array.of(1, 2), [2]);
  t.throws(() => record('cpu', () => x.dataSync()), { message: /^Tensor\.dataSync: cannot run while the cpu stream records/ }, 'a host read inside record() throws');
  t.deepEqual(Array.from(x.dataSync()), [1, 2], 'no recording is left open: reads work again');
  const { result: read } = record('cpu', () => x.data()); // data() is async: its promise rejects
  await t.throwsAsync(read, { message: /^Tensor\.data: cannot run while the cpu stream records/ }, 'an async read is refused too');
  t.throws(() => record('cpu', () => synchronizeSync()), { message: /cannot run while the cpu stream records/ }, 'synchronizeSync too');
  t.throws(() => record('cpu', () => record('cpu', () => 0)), { message: /^recordBegin: the cpu stream is already recording$/ });
  const y = zeros([2]);
  t.throws(() => record('cpu', () => {
    kernels.axpby(x, 1, x, 0, { out: y });
    throw new Error('boom');
  }), { message: 'boom' });
  kernels.axpby(x, 3, x, 0, { out: y }); // runs now: nothing is recording
  t.deepEqual(Array.from(await y.data()), [3, 6], 'after a throwing body, ops run again (the recorded axpby never ran)');
  t.throws(() => replay({} as Recording), { instanceOf: TypeError, message: /^replay: expected a Recording made by record\(\)$/ });
  const n = native() as unknown as Record<string, (...a: unknown[]) => unknown>;
  t.throws(() => n.replay({}), { instanceOf: TypeError, message: /^replay: expected a recording/ });
  t.throws(() => n.recordEnd('cpu'), { message: /^recordEnd: the cpu stream is not recording$/ });
  t.throws(() => writeInto(x, Int32Array.of(1, 2)), { instanceOf: TypeError, message: /^writeInto: dst is .* needs a Float32Array/ });
  t.throws(() => writeInto(x, Float32Array.of(1)), { instanceOf: RangeError, message: /^writeInto: data has 1 elements but dst \[2\] has 2$/ });
  t.throws(() => writeInto(x, [1, 2] as unknown as Float32Array), { instanceOf: TypeError, message: /^writeInto: data must be a typed array/ });
  x.dispose();
  y.dispose();
});
