// The distributed benchmark suite (scripts/bench-distributed.ts) without running it: its model of step time against
// world size follows the formula docs/benchmarks.md states, and bad SF_DIST_* settings are refused before any job starts.
import test from 'ava';
import { benchDistributed, modelRows, LINKS, MODEL_WORLDS } from '../scripts/bench-distributed.ts';

const close = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));

test('the step-time model: compute plus a ring all-reduce, weak and strong scaling, every world and link', (t) => {
  const single = new Map([['none', { ms: 200, bytes: 4 * 4_837_376 }], ['all', { ms: 190, bytes: 4 * 888_576 }]]);
  const rows = modelRows(single);
  t.is(rows.length, 2 * LINKS.length * 2 * MODEL_WORLDS.length);
  t.deepEqual(MODEL_WORLDS, [1, 2, 4, 8, 16, 32, 64]);
  t.deepEqual(LINKS.map((l) => [l.bitsPerSec, l.alpha]), [[25e9, 5e-6], [400e9, 1e-6]]);
  for (const r of rows) {
    const s = single.get(r.share)!;
    const link = LINKS.find((l) => l.name === r.link)!;
    const W = r.world;
    const comm = W === 1 ? 0 : 1000 * ((2 * (W - 1)) / W * s.bytes / (link.bitsPerSec / 8) + 2 * (W - 1) * link.alpha);
    const compute = r.scaling === 'weak' ? s.ms : s.ms / W;
    t.true(close(r.comm_ms, comm), `${r.share} ${r.link} W=${W}: comm ${r.comm_ms}, expected ${comm}`);
    t.true(close(r.compute_ms, compute));
    t.true(close(r.ms_per_step, compute + comm));
    t.true(close(r.efficiency, s.ms / (compute + comm)));
    t.true(close(r.speedup, r.scaling === 'weak' ? (W * s.ms) / (compute + comm) : s.ms / (compute + comm)));
  }
  // One worked value: the unshared model's 19,349,504 bytes at W = 2 over 25 Gb/s: 1 x 19,349,504 / 3.125e9 s + 2 x 5 us.
  const r = rows.find((x) => x.share === 'none' && x.world === 2 && x.scaling === 'weak' && x.link.startsWith('25'))!;
  t.true(close(r.comm_ms, 6.19184128 + 0.01));
  // Fewer unique parameters, less time in the all-reduce, at every world size and link.
  for (const a of rows.filter((x) => x.share === 'all' && x.world > 1)) {
    const n = rows.find((x) => x.share === 'none' && x.world === a.world && x.link === a.link && x.scaling === a.scaling)!;
    t.true(a.comm_ms < n.comm_ms);
  }
});

test.serial('bad SF_DIST_STEPS and SF_DIST_SHARES are refused, naming the value, before any job runs', async (t) => {
  const saved = { steps: process.env.SF_DIST_STEPS, shares: process.env.SF_DIST_SHARES };
  try {
    for (const bad of ['0', '-1', '2.5', 'x']) {
      process.env.SF_DIST_STEPS = bad;
      await t.throwsAsync(benchDistributed(), { message: `bench distributed: SF_DIST_STEPS must be a positive integer, got ${bad}` });
    }
    delete process.env.SF_DIST_STEPS;
    process.env.SF_DIST_SHARES = 'none,cycle';
    await t.throwsAsync(benchDistributed(), { message: `bench distributed: SF_DIST_SHARES takes none and all, got 'cycle'` });
    process.env.SF_DIST_SHARES = ' , ';
    await t.throwsAsync(benchDistributed(), { message: /SF_DIST_SHARES names no sharing plan/ });
  } finally {
    for (const [k, v] of [['SF_DIST_STEPS', saved.steps], ['SF_DIST_SHARES', saved.shares]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
});
