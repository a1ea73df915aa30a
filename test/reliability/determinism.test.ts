// Issue 8, point 6: on the CPU with a fixed thread count, the same seed gives bit-identical losses (and final
// parameters) across runs — two separate child processes, compared as IEEE bit patterns. Each thread count is its
// own contract: the CPU kernels split work by thread, so 1 and 2 threads may differ in the last bits (reported, not
// asserted). On CUDA the reductions are designed deterministic (fixed-order partial sums, no float atomics); that is
// not verified here (no GPU) — see docs/reliability.md.
import test from 'ava';
import { FULL, record, runChild } from './child.ts';
import type { JobResult } from './train-job.ts';

const STEPS = FULL ? 200 : 40;
const SEED = 7;

async function run(threads: number): Promise<JobResult> {
  const r = await runChild('determinism-child.ts', [SEED, STEPS, threads], { timeoutMs: 300_000 });
  if (r.code !== 0) throw new Error(`determinism child exited with ${r.code} ${r.signal}: ${r.stderr.slice(-1500)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}
const bits = (xs: number[]) => Buffer.from(Float64Array.from(xs).buffer).toString('hex');

for (const threads of [1, 2]) {
  test(`same seed, ${threads} thread${threads > 1 ? 's' : ''}: bit-identical losses in two processes`, async (t) => {
    const [a, b] = [await run(threads), await run(threads)]; // one after the other: each has the cores it asked for
    t.is(a.threads, threads);
    t.is(a.losses.length, STEPS);
    t.is(bits(a.losses), bits(b.losses), 'every loss, bit for bit');
    t.is(a.params, b.params, 'the final parameters, bit for bit');
    t.true(a.losses[STEPS - 1] < a.losses[0], 'the model learns (the comparison is not between constants)');
    t.log(`${STEPS} steps, ${threads} thread(s): losses ${a.losses[0].toFixed(4)} -> ${a.losses[STEPS - 1].toFixed(4)} identical in two processes; parameters sha256 ${a.params.slice(0, 16)}`);
    await record(`determinism-${threads}`, { steps: STEPS, threads, identical: true, firstLoss: a.losses[0], lastLoss: a.losses[STEPS - 1], params: a.params });
  });
}

test('a different seed gives different losses (the check above can fail)', async (t) => {
  const r = await runChild('determinism-child.ts', [SEED + 1, 5, 1], { timeoutMs: 300_000 });
  const other = JSON.parse(r.stdout.trim().split('\n').pop()!) as JobResult;
  const same = await run(1);
  t.not(bits(other.losses), bits(same.losses.slice(0, 5)));
});
