// npm run bench [-- SUITE ...] [--json FILE]
//
// Suites:
//   kernels — every CPU kernel forward and backward at transformer shapes, the machine's measured FMA peak and copy
//             bandwidth, each kernel's share of them, and OpenBLAS sgemm in the same run as the matmul reference
//             (native: scripts/bench/sf_bench.cpp, built with CMake into build-native/; runs without Node too)
//   tensors — memory-bound tensor kernels (fill, copy, random) against a reference measured in the same run: the
//             plain JavaScript typed-array equivalent, and the machine's copy bandwidth (one large memcpy on the
//             native thread pool). Ratios, never absolute thresholds.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as sf from '../lib/index.ts';

interface Row {
  name: string;
  shape: number[] | string;
  ms: number;
  gbps?: number;
  gflops?: number;
  ref: string;
  ref_ms?: number;
  ratio?: number;
  peak_share?: number;
}

/** Builds (if needed) and runs the native kernel benchmark; its own table goes to stdout, its rows come back. */
async function benchKernels(): Promise<Row[]> {
  const root = join(import.meta.dirname, '..');
  const dir = join(root, 'build-native');
  const run = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`bench: ${cmd} ${args.join(' ')} failed`);
  };
  if (!existsSync(join(dir, 'CMakeCache.txt'))) run('cmake', ['-S', '.', '-B', dir, '-DCMAKE_BUILD_TYPE=Release']);
  run('cmake', ['--build', dir, '--target', 'sf_bench', '-j', '2']);
  const tmp = mkdtempSync(join(tmpdir(), 'sf-bench-'));
  try {
    const extra = process.env.SF_BENCH_ARGS ? process.env.SF_BENCH_ARGS.split(' ') : [];
    run(join(dir, 'sf_bench'), ['--json', join(tmp, 'rows.json'), ...extra]);
    return JSON.parse(readFileSync(join(tmp, 'rows.json'), 'utf8')) as Row[];
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Median wall time of fn over `reps` runs after one warm-up, in ms. */
async function time(fn: () => Promise<void> | void, reps = 7): Promise<number> {
  await fn();
  const out: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return median(out);
}

async function benchTensors(): Promise<Row[]> {
  const rows: Row[] = [];
  const n = 1 << 24; // 64 MiB of float32: larger than any cache
  const bytes = n * 4;
  const host = new Float32Array(n);
  const host2 = new Float32Array(n);

  const src = sf.rand([n], { seed: 1 });
  sf.synchronizeSync();

  const fillMs = await time(() => {
    const t = sf.full([n], 1.5);
    sf.synchronizeSync();
    t.dispose();
  });
  const fillRef = await time(() => void host.fill(1.5));
  rows.push({ name: 'full (fill)', shape: [n], ms: fillMs, gbps: bytes / fillMs / 1e6, ref: 'Float32Array.fill', ref_ms: fillRef, ratio: fillMs / fillRef });

  const copyMs = await time(() => {
    const t = src.clone();
    sf.synchronizeSync();
    t.dispose();
  });
  const copyRef = await time(() => void host2.set(host));
  rows.push({ name: 'clone (copy)', shape: [n], ms: copyMs, gbps: (2 * bytes) / copyMs / 1e6, ref: 'Float32Array.set', ref_ms: copyRef, ratio: copyMs / copyRef });

  const randMs = await time(() => {
    const t = sf.rand([n], { seed: 2 });
    sf.synchronizeSync();
    t.dispose();
  });
  const randRef = await time(() => {
    for (let i = 0; i < n; i++) host[i] = Math.random();
  }, 3);
  rows.push({ name: 'rand (Philox uniform)', shape: [n], ms: randMs, gbps: bytes / randMs / 1e6, ref: 'Math.random loop', ref_ms: randRef, ratio: randMs / randRef });

  const randnMs = await time(() => {
    const t = sf.randn([n], { seed: 3 });
    sf.synchronizeSync();
    t.dispose();
  });
  rows.push({ name: 'randn (Philox Box-Muller)', shape: [n], ms: randnMs, gbps: bytes / randnMs / 1e6, ref: 'rand (same run)', ref_ms: randMs, ratio: randnMs / randMs });

  const readMs = await time(async () => void (await src.data()));
  rows.push({ name: 'data() (device to new host array)', shape: [n], ms: readMs, gbps: (2 * bytes) / readMs / 1e6, ref: 'Float32Array.set', ref_ms: copyRef, ratio: readMs / copyRef });
  src.dispose();
  return rows;
}

const args = process.argv.slice(2);
const jsonIdx = args.indexOf('--json');
const jsonFile = jsonIdx >= 0 ? args[jsonIdx + 1] : undefined;
if (jsonIdx >= 0 && !jsonFile) {
  console.error('bench: --json needs a file name');
  process.exit(2);
}
const suites = args.filter((a, i) => !a.startsWith('--') && i !== jsonIdx + 1);
const known: Record<string, () => Promise<Row[]>> = { kernels: benchKernels, tensors: benchTensors };
const chosen = suites.length ? suites : Object.keys(known);
for (const s of chosen) {
  if (!known[s]) {
    console.error(`bench: unknown suite '${s}'; known: ${Object.keys(known).join(', ')}`);
    process.exit(2);
  }
}

const b = sf.backends();
console.log(`sharedformer bench — ${b.cpu.threads} CPU threads, ${b.cpu.simd}; CUDA ${b.cuda.available ? 'available' : 'unavailable'}`);
const all: Row[] = [];
for (const s of chosen) {
  const rows = await known[s]();
  all.push(...rows);
  if (s === 'kernels') continue; // sf_bench printed its own table
  console.log(`\n${s}`);
  console.table(rows.map((r) => ({ name: r.name, shape: Array.isArray(r.shape) ? `[${r.shape.join(', ')}]` : r.shape, ms: r.ms.toFixed(2), 'GB/s': r.gbps?.toFixed(1), ref: r.ref, 'ref ms': r.ref_ms?.toFixed(2), ratio: r.ratio?.toFixed(2) })));
}
if (jsonFile) writeFileSync(jsonFile, JSON.stringify(all, null, 2) + '\n');
