// npm run reliability — the reliability suite (test/reliability, issue 8) at its full counts: 100,000 tensor cycles
// and 1,000 training steps for memory, 60 SIGKILLs, 12,000 fuzzed files, hostile calls plus seeded double faults,
// 200-step concurrency and determinism runs, and the silent-wrong-result classes (issue 13: kernels against float64
// references, NaN placement, poisoning, atomicity). `npm test` (and CI) runs the same tests at reduced counts.
//   npm run reliability [-- --json FILE] [-- --match PATTERN]   (needs a built addon; SHAREDFORMER_BINARY is honoured)
// One test file at a time, so that the timings and RSS figures are not disturbed by the others. Prints a table of the
// figures each test recorded, and exits non-zero when any test failed.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const args = process.argv.slice(2);
const opt = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const jsonOut = opt('--json');
const match = opt('--match');

const out = mkdtempSync(join(tmpdir(), 'sf-reliability-'));
const t0 = performance.now();
const ava = spawnSync(
  process.execPath,
  [join(root, 'node_modules/ava/entrypoints/cli.mjs'), 'test/reliability/*.test.ts', '--concurrency=1', '--timeout=60m', '--verbose', ...(match ? ['--match', match] : [])],
  { cwd: root, stdio: 'inherit', env: { ...process.env, SHAREDFORMER_RELIABILITY: 'full', SHAREDFORMER_RELIABILITY_OUT: out } },
);
const seconds = (performance.now() - t0) / 1000;

const figures: Record<string, Record<string, unknown>> = {};
for (const f of readdirSync(out).sort()) figures[f.replace(/\.json$/, '')] = JSON.parse(readFileSync(join(out, f), 'utf8'));
rmSync(out, { recursive: true, force: true });

const fmt = (v: unknown): string => (typeof v === 'number' ? (Number.isInteger(v) ? v.toLocaleString('en-US') : v.toFixed(2)) : typeof v === 'object' ? JSON.stringify(v) : String(v));
const skip = new Set(['name', 'full', 'problems', 'params']);
console.log('\nreliability figures (full counts):');
for (const [name, f] of Object.entries(figures)) {
  const parts = Object.entries(f).filter(([k]) => !skip.has(k)).map(([k, v]) => `${k} ${k === 'seed' ? String(v) : fmt(v)}`);
  console.log(`  ${name.padEnd(18)} ${parts.join(', ')}`);
}
// Issue 13: the silent-wrong-result classes (silent.test.ts) each record silentWrong; their sum is the headline figure.
const silent = Object.entries(figures).filter(([, f]) => typeof f.silentWrong === 'number');
if (silent.length) {
  const total = silent.reduce((a, [, f]) => a + (f.silentWrong as number), 0);
  console.log(`  silent wrong results: ${total} (${silent.map(([n, f]) => `${n} ${f.silentWrong}`).join(', ')})`);
  for (const [n, f] of silent) for (const p of ((f.problems as string[]) ?? []).slice(0, 3)) console.log(`    ${n}: ${p.slice(0, 300)}`);
}
console.log(`  total: ${seconds.toFixed(0)} s, ava exit code ${ava.status}`);
if (jsonOut) writeFileSync(jsonOut, JSON.stringify({ seconds, status: ava.status, figures }, null, 2));
process.exit(ava.status ?? 1);
