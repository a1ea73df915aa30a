// Design invariant 5: kernel work runs on the device stream's native thread; awaiting a result never blocks the
// event loop, and dataSync()/synchronizeSync() are the blocking variants for scripts.
import anyTest from 'ava';
import { Tensor, randn, synchronize, synchronizeSync } from '../lib/index.ts';
import { native } from '../lib/native.ts';

const test = anyTest.serial;
const n = native() as any;

test('a timer keeps firing while a long matmul runs', async (t) => {
  const a = randn([1536, 1536], { seed: 1 }), b = randn([1536, 1536], { seed: 2 });
  await synchronize();
  const delays: number[] = [];
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    delays.push(now - last);
    last = now;
  }, 5);
  const t0 = performance.now();
  let c = new Tensor(n.matmul(a.handle, b.handle, null, {}));
  for (let i = 0; i < 5; i++) c = new Tensor(n.matmul(c.handle, b.handle, null, { alpha: 1 / 40 })); // ~6 x 7 GFLOP
  const queued = performance.now() - t0;
  const data = await c.data();
  const total = performance.now() - t0;
  clearInterval(timer);
  t.is(data.length, 1536 * 1536);
  t.true(data.every(Number.isFinite));
  t.true(queued < total / 5, `queueing 6 matmuls took ${queued.toFixed(1)} of ${total.toFixed(1)} ms`);
  // Relative criteria, not absolute times: on a loaded machine everything slows, but a blocked event loop would show
  // as one stall as long as the whole computation.
  t.true(delays.length >= 5, `${delays.length} timer ticks in ${total.toFixed(0)} ms`);
  const worst = Math.max(...delays);
  t.true(worst < total / 3, `the event loop stalled for ${worst.toFixed(1)} ms of ${total.toFixed(0)} ms`);
});

test('dataSync and synchronizeSync block until the work is done', (t) => {
  const a = randn([512, 512], { seed: 3 });
  const c = new Tensor(n.matmul(a.handle, a.handle, null, { transB: true }));
  synchronizeSync();
  const d = c.dataSync();
  // a @ a^T is symmetric with a positive diagonal
  t.true(Math.abs(d[1 * 512 + 7] - d[7 * 512 + 1]) < 1e-3);
  t.true(d[5 * 512 + 5] > 0);
});

test('a failing kernel rejects the next await with the op named, and later work still runs', async (t) => {
  // embedding with an out-of-range id fails on the stream: the error surfaces at the next synchronisation
  const table = randn([10, 4], { seed: 4 });
  const ids = new Tensor(n.fromArray(Int32Array.from([1, 2, 42]), [3], 'int32', 'cpu'));
  const out = new Tensor(n.embeddingForward(ids.handle, table.handle, null));
  const err = await t.throwsAsync(() => out.data());
  t.regex(err!.message, /embedding/);
  t.regex(err!.message, /42/);
  const ok = randn([3], { seed: 5 });
  t.is((await ok.data()).length, 3);
});
