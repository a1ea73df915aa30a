// Issue 8, point 1: a generated suite of bad calls over the exported API and the CLI, run in batches in child
// processes so that a native crash is seen (as a signal) instead of taking the test runner down. Every case must end
// in a thrown Error (or a rejected promise) whose message is non-empty and names the function or op.
import test from 'ava';
import { buildCases, coverage } from './hostile-cases.ts';
import { FULL, record, runChild } from './child.ts';

// CI: each bad value of each argument once (the table). Full run: plus 12 seeded random double faults per function.
const PAIRS = FULL ? 12 : 0;
const BATCHES = FULL ? 8 : 4;
const PARALLEL = 2;

interface Outcome {
  i: number;
  kind: 'error' | 'non-error' | 'returned' | 'crash' | 'hang';
  name?: string;
  message?: string;
  unhandled?: string[];
}

test('hostile input: every bad call throws a clear Error, none crashes', async (t) => {
  t.timeout(FULL ? 1_800_000 : 600_000);
  const cases = buildCases(PAIRS);
  const outcomes = new Map<number, Outcome>();
  const leaks: number[] = [];
  let children = 0;
  const t0 = performance.now();

  /** Runs [from, to) in children until every case has an outcome: a crash or hang is charged to its case, then the rest goes on. */
  const runRange = async (from: number, to: number): Promise<void> => {
    let next = from;
    while (next < to) {
      let started = -1, finished = false;
      children++;
      const r = await runChild('hostile-runner.ts', [next, to, PAIRS], {
        timeoutMs: 60_000 + 2_000 * (to - next),
        onLine: (l) => {
          const m = JSON.parse(l);
          if (m.done) {
            leaks.push(m.leakedTensors);
            finished = true;
          }
          else if (m.start) started = m.i;
          else outcomes.set(m.i, m);
        },
      });
      if (r.code === 0 && !r.signal && finished) break;
      // The process died: the case that started without an end killed it (or hung).
      const culprit = started >= 0 && !outcomes.has(started) ? started : next;
      outcomes.set(culprit, { i: culprit, kind: r.timedOut ? 'hang' : 'crash', message: `exit ${r.code} signal ${r.signal}${finished ? '' : ' before finishing its batch'}: ${r.stderr.slice(-2000)}` });
      next = culprit + 1;
    }
  };
  const per = Math.ceil(cases.length / BATCHES);
  const ranges = Array.from({ length: BATCHES }, (_, b) => [b * per, Math.min(cases.length, (b + 1) * per)] as const);
  const queue = ranges.slice();
  await Promise.all(Array.from({ length: PARALLEL }, async () => {
    for (let r = queue.shift(); r; r = queue.shift()) await runRange(r[0], r[1]);
  }));

  const problems: string[] = [];
  let errors = 0, crashes = 0;
  for (let i = 0; i < cases.length; i++) {
    const o = outcomes.get(i);
    const k = cases[i];
    if (!o) {
      problems.push(`${k.id}: no outcome`);
      continue;
    }
    if (o.kind === 'crash' || o.kind === 'hang') crashes++;
    const clear = o.kind === 'error' && typeof o.message === 'string' && o.message.trim().length > 0 && k.expect.test(o.message);
    if (clear) errors++;
    else problems.push(`${k.id}: ${o.kind}${o.name ? ` ${o.name}` : ''}: ${JSON.stringify(o.message ?? '')} (expected a message matching ${k.expect})`);
    if (o.unhandled?.length) problems.push(`${k.id}: unhandled rejection/exception: ${o.unhandled.join('; ')}`);
  }
  const ms = performance.now() - t0;
  const cov = coverage();
  t.log(`${cases.length} cases over ${cov.functions} functions and ${cov.cliCommands} CLI commands in ${children} child processes, ${(ms / 1000).toFixed(1)} s: ` +
    `${errors} clear errors, ${crashes} crashes/hangs, ${problems.length} problems; tensors left after GC per batch: [${leaks.join(', ')}]`);
  await record('hostile', { cases: cases.length, functions: cov.functions, cliCommands: cov.cliCommands, errors, crashes, problems: problems.length, children, seconds: ms / 1000, leakedTensorsPerBatch: leaks });
  if (problems.length) t.log(problems.slice(0, 60).join('\n'));
  t.true(cases.length >= 500, `${cases.length} cases (at least 500)`);
  t.is(crashes, 0, 'no case crashes or hangs');
  t.deepEqual(problems, [], 'every case ends in a clear Error');
  t.deepEqual(leaks, leaks.map(() => 0), 'no tensor outlives its batch (what the failed calls made was freed)');
});
