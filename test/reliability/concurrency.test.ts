// Issue 8, point 3: four models train in four worker threads (each with its own addon instance) while the main
// thread serves HTTP requests on 127.0.0.1 that use the addon too: no crash, no cross-talk, and each model's losses
// are bit-identical to the same seed trained alone with the same thread count.
import test from 'ava';
import { createServer } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { Worker } from 'node:worker_threads';
import { kernels, memory, randn } from '../../lib/index.ts';
import { FULL, record } from './child.ts';
import type { JobResult } from './train-job.ts';

const STEPS = FULL ? 200 : 30;
const REQUESTS = FULL ? 1000 : 150;
const THREADS = 1; // per worker: four workers on a loaded 2-core machine; the references use the same count
const SEEDS = [11, 22, 33, 44];

const bootstrap = new URL('../fixtures/ts-worker.mjs', import.meta.url);
const entry = new URL('./train-worker.ts', import.meta.url).href;

function trainInWorker(seed: number): Promise<JobResult> {
  const worker = new Worker(bootstrap, { workerData: { entry, seed, steps: STEPS, threads: THREADS } });
  return new Promise((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => code !== 0 && reject(new Error(`worker ${seed} exited with ${code}`)));
  });
}

/** What a request computes in the main thread: the sum of a product of two seeded random matrices. */
async function work(seed: number): Promise<number> {
  const a = randn([24, 32], { seed }), b = randn([32, 16], { seed: seed + 1 });
  const c = kernels.matmul(a, b);
  const d = await c.data();
  for (const x of [a, b, c]) x.dispose();
  let s = 0;
  for (let i = 0; i < d.length; i++) s += d[i];
  return s;
}

test('four workers train while the main thread serves HTTP: no crash, no cross-talk, losses equal to training alone', async (t) => {
  const expected = new Map<number, number>();
  for (let k = 0; k < 8; k++) expected.set(k, await work(k)); // answers computed before anything else runs

  const server = createServer(async (req, res) => {
    const k = Number(new URL(req.url!, 'http://x').searchParams.get('k'));
    if (!Number.isInteger(k) || k < 0 || k > 7) {
      res.writeHead(400).end('{"error":"k must be an integer in [0, 7]"}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ k, sum: await work(k) }));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;

  const t0 = performance.now();
  const jobs = Promise.all(SEEDS.map(trainInWorker));
  let served = 0, wrong = 0, failed = 0;
  const latencies: number[] = [];
  // A bounded number of requests, four at a time, while the workers train.
  await Promise.all(Array.from({ length: 4 }, async (_, lane) => {
    for (let r = lane; r < REQUESTS; r += 4) {
      const k = r % 8;
      const q0 = performance.now();
      try {
        const body = (await (await fetch(`http://127.0.0.1:${port}/work?k=${k}`)).json()) as { k: number; sum: number };
        if (body.k !== k || body.sum !== expected.get(k)) wrong++;
        served++;
      } catch {
        failed++;
      }
      latencies.push(performance.now() - q0);
    }
  }));
  const bad = await fetch(`http://127.0.0.1:${port}/work?k=9`);
  t.is(bad.status, 400);
  const together = await jobs;
  const concurrentMs = performance.now() - t0;
  server.close();

  // The same seeds trained alone, one at a time, with the same thread count.
  const alone: JobResult[] = [];
  for (const s of SEEDS) alone.push(await trainInWorker(s));

  t.is(served, REQUESTS);
  t.is(failed, 0);
  t.is(wrong, 0, 'every response equals the value computed before the workers started');
  for (let i = 0; i < SEEDS.length; i++) {
    const a = together[i], b = alone[i];
    t.is(a.seed, SEEDS[i]);
    t.is(a.threads, THREADS);
    t.is(a.losses.length, STEPS);
    t.true(a.losses.every(Number.isFinite));
    t.deepEqual(a.losses, b.losses, `seed ${a.seed}: losses bit-identical to training alone`);
    t.is(a.params, b.params, `seed ${a.seed}: final parameters bit-identical`);
    t.is(a.tensorsLeft, 0, `seed ${a.seed}: the worker's instance freed everything`);
  }
  t.is(new Set(together.map((r) => r.params)).size, SEEDS.length, 'different seeds train different models');
  t.true(together.every((r) => r.losses[STEPS - 1] < r.losses[0]), 'every model learns');
  t.is(memory().cpu.tensors, 0, "the main thread's instance holds nothing after the requests");
  latencies.sort((a, b) => a - b);
  const p50 = latencies[Math.floor(latencies.length / 2)], p99 = latencies[Math.floor(latencies.length * 0.99)];
  t.log(`4 workers x ${STEPS} steps with ${REQUESTS} requests served in ${(concurrentMs / 1000).toFixed(1)} s; request latency p50 ${p50.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms`);
  await record('concurrency', { workers: SEEDS.length, steps: STEPS, requests: REQUESTS, threadsPerWorker: THREADS, seconds: concurrentMs / 1000, p50ms: p50, p99ms: p99, identical: true });
});
