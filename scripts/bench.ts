// npm run bench [-- SUITE ...] [--json FILE]
//
// Suites:
//   tensors — memory-bound tensor kernels (fill, copy, random) against a reference measured in the same run: the
//             plain JavaScript typed-array equivalent, and the machine's copy bandwidth (one large memcpy on the
//             native thread pool). Ratios, never absolute thresholds.
// Later issues add `kernels` (every op forward and backward) and `train` (end-to-end steps against PyTorch).
import { writeFileSync } from 'node:fs';
import * as sf from '../lib/index.ts';

interface Row {
  name: string;
  shape: number[];
  ms: number;
  gbps: number;
  ref: string;
  ref_ms: number;
  ratio: number;
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
const known: Record<string, () => Promise<Row[]>> = { tensors: benchTensors };
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
  console.log(`\n${s}`);
  console.table(rows.map((r) => ({ name: r.name, shape: `[${r.shape.join(', ')}]`, ms: r.ms.toFixed(2), 'GB/s': r.gbps.toFixed(1), ref: r.ref, 'ref ms': r.ref_ms.toFixed(2), ratio: r.ratio.toFixed(2) })));
}
if (jsonFile) writeFileSync(jsonFile, JSON.stringify(all, null, 2) + '\n');
