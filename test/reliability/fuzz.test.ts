// Issue 8, point 4 (second half): a seeded fuzzer feeds mutated safetensors files (bit flips, special bytes, cuts,
// splices, length fields, JSON-aware edits of numbers, strings and structure) to the loader, in child processes so
// that a crash or a hang is seen: every mutation either loads into a self-consistent file or throws SafetensorsError.
import test from 'ava';
import { FULL, record, runChild } from './child.ts';

const TOTAL = FULL ? 12_000 : 2_000;
const CHILDREN = FULL ? 4 : 2;
const SEED = 20251129;

test(`${TOTAL} mutated safetensors files: no crash, no hang, only SafetensorsError or a consistent load`, async (t) => {
  t.timeout(FULL ? 1_200_000 : 110_000);
  const per = Math.ceil(TOTAL / CHILDREN);
  const t0 = performance.now();
  const runs = await Promise.all(Array.from({ length: CHILDREN }, (_, c) => runChild('fuzz-runner.ts', [SEED, c * per, Math.min(per, TOTAL - c * per)], { timeoutMs: 600_000 })));
  const ms = performance.now() - t0;
  let loads = 0, errors = 0, fromFiles = 0, maxMs = 0, count = 0;
  const unexpected: string[] = [];
  for (const r of runs) {
    t.is(r.signal, null, `a fuzz child was killed (${r.timedOut ? 'hang' : 'crash'}): ${r.stderr.slice(-1000)}`);
    t.is(r.code, 0, r.stderr.slice(-1000));
    for (const l of r.stdout.split('\n').filter(Boolean)) {
      const m = JSON.parse(l);
      if (m.done) {
        loads += m.loads;
        errors += m.errors;
        fromFiles += m.fromFiles;
        count += m.count;
        maxMs = Math.max(maxMs, m.maxMs);
      } else unexpected.push(`mutation ${m.i}: ${m.unexpected} (${m.hex})`);
    }
  }
  t.is(count, TOTAL);
  t.deepEqual(unexpected, [], 'every mutation loads consistently or throws SafetensorsError');
  t.is(loads + errors + unexpected.length, TOTAL);
  t.true(loads > 0 && errors > 0, 'the mutations reach both outcomes');
  t.log(`${TOTAL} mutations (seed ${SEED}; ${fromFiles} through files) in ${(ms / 1000).toFixed(1)} s: ${errors} SafetensorsError, ${loads} consistent loads, ${unexpected.length} unexpected; slowest load ${maxMs.toFixed(1)} ms`);
  await record('fuzz', { mutations: TOTAL, seed: SEED, viaFiles: fromFiles, errors, loads, unexpected: unexpected.length, slowestLoadMs: maxMs, seconds: ms / 1000 });
});
