// Shared by the benchmark suites of scripts/bench.ts, scripts/bench-distributed.ts and scripts/bench-generate.ts (and
// the distributed suite's worker, scripts/bench/distributed-worker.ts): the benchmark models, the median and timing
// helpers, the machine's description (CPU model, caches, load), and the PyTorch reference finder.
import { existsSync, readFileSync, readdirSync, realpathSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';

/** A benchmark decoder LM: pre-LN, tied embeddings, fp32. */
export interface TrainConfig {
  vocab: number;
  dModel: number;
  heads: number;
  dFF: number;
  layers: number;
  seq: number;
  batch: number;
}

/** The benchmark models of the train suite (and of the distributed suite, which runs `small`). */
export const TRAIN_CONFIGS: Record<string, TrainConfig> = {
  small: { vocab: 256, dModel: 256, heads: 4, dFF: 1024, layers: 6, seq: 128, batch: 8 },
  medium: { vocab: 256, dModel: 512, heads: 8, dFF: 2048, layers: 12, seq: 256, batch: 4 },
  small12b1: { vocab: 256, dModel: 256, heads: 4, dFF: 1024, layers: 12, seq: 128, batch: 1 },
};

/** The median (the upper one of an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** The q-quantile (0..1) of xs: the smallest sample with at least q of the samples at or below it. */
export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

/** Runs fn `warmup` times, then `runs` times; returns each timed run's wall time in ms. */
export async function timeRuns(fn: () => Promise<unknown> | unknown, runs: number, warmup = 1): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

/** The CPU's model name (/proc/cpuinfo, else os.cpus()). */
export function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) return m[1].trim();
  } catch {}
  return cpus()[0]?.model ?? 'unknown CPU';
}

/** One cache of CPU 0 as Linux describes it (/sys/devices/system/cpu/cpu0/cache/index*). */
export interface CpuCache {
  level: number;
  /** 'Data', 'Instruction' or 'Unified'. */
  type: string;
  bytes: number;
  /** The CPUs that share it (shared_cpu_list), e.g. '0' or '0-1'. */
  sharedWith: string;
}

/** CPU 0's caches, by level (empty where sysfs does not describe them). */
export function cpuCaches(): CpuCache[] {
  const dir = '/sys/devices/system/cpu/cpu0/cache';
  const out: CpuCache[] = [];
  let entries: string[] = [];
  try {
    entries = readdirSync(dir).filter((e) => /^index\d+$/.test(e));
  } catch {
    return out;
  }
  for (const e of entries) {
    try {
      const read = (f: string) => readFileSync(join(dir, e, f), 'utf8').trim();
      const m = /^(\d+)([KMG]?)$/i.exec(read('size'));
      if (!m) continue;
      const unit = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2].toUpperCase() as '' | 'K' | 'M' | 'G'];
      out.push({ level: Number(read('level')), type: read('type'), bytes: Number(m[1]) * unit, sharedWith: read('shared_cpu_list') });
    } catch {}
  }
  return out.sort((a, b) => a.level - b.level || a.type.localeCompare(b.type));
}

/** The unified (or data) cache of a level in bytes, or null when there is none. */
export function cacheBytes(caches: readonly CpuCache[], level: number): number | null {
  return caches.find((c) => c.level === level && c.type !== 'Instruction')?.bytes ?? null;
}

/** Bytes as KiB / MiB / GiB, one decimal where it is not whole. */
export function formatBytes(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${Number.isInteger(n) ? n : n.toFixed(1)} ${units[i]}`;
}

/** Warns when the 1-minute load average exceeds the cores: other processes shared the CPU. */
export function warnLoad(suite: string, when: string, cores: number): void {
  const l = loadavg()[0];
  if (l > cores)
    console.warn(`${suite}: WARNING: 1-minute load average ${l.toFixed(2)} ${when} exceeds the ${cores} cores: other processes share the CPU, the times are not representative`);
}

export const PY = '/usr/bin/python3';
export const TORCH_REF = join(import.meta.dirname, '..', 'torch_train_ref.py');

/** The OpenBLAS builds of the reference BLAS (libblas.so.3) that Debian's alternatives can select, existing here. */
function openblasCandidates(): string[] {
  const triplet = process.arch === 'arm64' ? 'aarch64-linux-gnu' : 'x86_64-linux-gnu';
  const out: string[] = [];
  for (const v of ['openblas-openmp', 'openblas-pthread', 'openblas-serial', 'openblas']) {
    const p = join('/usr/lib', triplet, v, 'libblas.so.3');
    if (existsSync(p)) out.push(realpathSync(p));
  }
  return out;
}

export type TorchEnv = { ok: true; env: NodeJS.ProcessEnv; how: string; probe: Record<string, unknown> } | { ok: false; reason: string };

/**
 * Finds a PyTorch that runs on OpenBLAS: Debian's python3-torch (BLAS_INFO=generic) calls whatever libblas.so.3 the
 * alternatives system selects, so the probe reads the library actually mapped after an sgemm. When that is not
 * OpenBLAS, LD_LIBRARY_PATH and then LD_PRELOAD point at an OpenBLAS libblas.so.3, each verified by probing again.
 */
export function findTorch(threads: number): TorchEnv {
  if (!existsSync(PY)) return { ok: false, reason: `${PY} not found` };
  const base: NodeJS.ProcessEnv = { ...process.env, OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads) };
  const probe = (env: NodeJS.ProcessEnv) => {
    const r = spawnSync(PY, [TORCH_REF, '--probe'], { env, encoding: 'utf8', timeout: 120_000 });
    let j: Record<string, unknown> | undefined;
    try {
      j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
    } catch {
      j = undefined;
    }
    return { status: r.status, json: j, err: (r.stderr || r.error?.message || '').trim().split('\n').pop() ?? '' };
  };
  const first = probe(base);
  if (!first.json) return { ok: false, reason: `PyTorch under ${PY} is not usable: ${first.err || `exit ${first.status}`}` };
  if (first.json.openblas) return { ok: true, env: base, how: 'system libblas.so.3 alternative', probe: first.json };
  for (const lib of openblasCandidates()) {
    const dir = dirname(lib);
    const tries: [string, NodeJS.ProcessEnv][] = [
      [`LD_LIBRARY_PATH=${dir}`, { ...base, LD_LIBRARY_PATH: [dir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':') }],
      [`LD_PRELOAD=${lib}`, { ...base, LD_PRELOAD: [lib, process.env.LD_PRELOAD].filter(Boolean).join(' ') }],
    ];
    for (const [how, env] of tries) {
      const p = probe(env);
      if (p.json?.openblas) return { ok: true, env, how, probe: p.json };
    }
  }
  return { ok: false, reason: `PyTorch uses ${JSON.stringify(first.json.blas_libs)}, not OpenBLAS, and no OpenBLAS libblas.so.3 could be selected` };
}
