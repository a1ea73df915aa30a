// determinism-child.ts — trains the job of train-job.ts in a fresh process and prints its result as one JSON line.
//   node --import tsx determinism-child.ts SEED STEPS THREADS
import { trainLosses } from './train-job.ts';

const [seed, steps, threads] = process.argv.slice(2).map(Number);
process.stdout.write(`${JSON.stringify(await trainLosses(seed, steps, threads))}\n`);
