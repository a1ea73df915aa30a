// train-worker.ts — trains one small model in a worker thread (its own addon instance) and posts every step's loss.
// workerData: { seed, steps, threads }. Loaded through test/fixtures/ts-worker.mjs (which registers tsx).
import { parentPort, workerData } from 'node:worker_threads';
import { trainLosses } from './train-job.ts';

const { seed, steps, threads } = workerData as { seed: number; steps: number; threads: number };
parentPort!.postMessage(await trainLosses(seed, steps, threads));
