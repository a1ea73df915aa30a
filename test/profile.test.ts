// profile.test.ts — SHAREDFORMER_PROFILE=1 (native/core/stream.cpp): a process that ran ops prints, when it ends, each
// op's time on the CPU stream with its call count, slowest first, and the total; without the variable (or with 0) it
// prints nothing. Run in child processes, since the table is printed when the stream is destroyed.
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const root = join(import.meta.dirname, '..');
const script = `
import { kernels, randn, synchronizeSync } from './lib/index.ts';
const a = randn([64, 32]), w = randn([48, 32]);
for (let i = 0; i < 5; i++) kernels.matmul(a, w, { transB: true }).dispose();
kernels.gelu(a).dispose();
synchronizeSync();
`;

function run(profile: string | undefined): string {
  const env = { ...process.env };
  delete env.SHAREDFORMER_PROFILE;
  if (profile !== undefined) env.SHAREDFORMER_PROFILE = profile;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, env, encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`the child failed (${r.status}): ${r.stderr}`);
  return r.stderr;
}

test('SHAREDFORMER_PROFILE=1 prints each op\'s time and calls on the CPU stream when the process ends; otherwise nothing', (t) => {
  const out = run('1');
  const head = out.match(/sharedformer profile, cpu stream: ([\d.]+) ms in (\d+) ops/);
  t.truthy(head, out);
  const row = (op: string) => out.match(new RegExp(`^  ${op} +([\\d.]+) ms +([\\d.]+)% +(\\d+) calls +([\\d.]+) us/call$`, 'm'));
  const mm = row('matmul'), gelu = row('geluForward'), rnd = row('randn');
  t.truthy(mm, `a matmul row: ${out}`);
  t.truthy(gelu, `a geluForward row: ${out}`);
  t.truthy(rnd, `a randn row: ${out}`);
  t.is(mm?.[3], '5', 'five matmul calls');
  t.is(gelu?.[3], '1', 'one gelu call');
  t.is(rnd?.[3], '2', 'two randn calls');
  const times = [...out.matchAll(/^  \S+ +([\d.]+) ms/gm)].map((m) => Number(m[1]));
  t.deepEqual(times, times.slice().sort((a, b) => b - a), 'slowest first');
  t.is(run(undefined), '', 'nothing without the variable');
  t.is(run('0'), '', 'nothing with 0');
});
