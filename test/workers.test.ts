// Design invariant 6: the addon keeps its state per instance, so it loads and works in several threads at once.
import test from 'ava';
import { Worker } from 'node:worker_threads';
import * as sf from '../lib/index.ts';
import { expectedSums } from './fixtures/sums.ts';

const bootstrap = new URL('./fixtures/ts-worker.mjs', import.meta.url);
const entry = new URL('./fixtures/worker.ts', import.meta.url).href;

function runWorker(seed: number, n: number, rounds: number): { started: Promise<void>; done: Promise<any>; worker: Worker } {
  const worker = new Worker(bootstrap, { workerData: { entry, seed, n, rounds } });
  let started!: () => void;
  const startedP = new Promise<void>((r) => (started = r));
  const done = new Promise((resolve, reject) => {
    worker.on('message', (m) => (m.started ? started() : resolve(m)));
    worker.once('error', reject);
    worker.once('exit', (code) => code !== 0 && reject(new Error(`worker exited with ${code}`)));
  });
  return { started: startedP, done, worker };
}

test('the addon works in the main thread and two worker threads at once', async (t) => {
  const n = 200_000, rounds = 5;
  const a = runWorker(11, n, rounds);
  const b = runWorker(22, n, rounds);
  const mine = await expectedSums(33, n, rounds); // the main thread works meanwhile
  const [ra, rb] = await Promise.all([a.done, b.done]);
  t.deepEqual(ra.sums, await expectedSums(11, n, rounds));
  t.deepEqual(rb.sums, await expectedSums(22, n, rounds));
  t.is(mine.length, rounds);
  t.notDeepEqual(ra.sums, rb.sums);
  // Each instance has its own counters: a worker sees only its own tensors, all disposed.
  t.is(ra.memory.cpu.tensors, 0);
  t.is(ra.memory.cpu.bytes, 0);
  t.is(rb.memory.cpu.bytes, 0);
  t.true(ra.threads >= 1);
  await Promise.all([a.worker.terminate(), b.worker.terminate()]);
});

test('terminating a worker while its kernels run does not disturb the process', async (t) => {
  const workers = [runWorker(1, 4_000_000, 50), runWorker(2, 4_000_000, 50)];
  await Promise.all(workers.map((w) => w.started)); // both have queued kernels on their own streams
  await Promise.all(workers.map((w) => w.worker.terminate()));
  for (const w of workers) w.done.catch(() => {});
  const x = sf.randn([1000], { seed: 4 });
  t.is((await x.data()).length, 1000);
  x.dispose();
});
