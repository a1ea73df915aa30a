// The `distributed` suite of scripts/bench.ts (`npm run bench -- distributed [--json FILE]`): data-parallel training
// of the train suite's `small` model (scripts/bench/common.ts: d 256, 4 heads, 6 layers, seq 128, batch 8 per rank,
// vocab 256), sharing 'none' and 'all', in three settings per sharing:
//   world 1  — one plain process (no distributed option), all cores' threads;
//   world 2  — `mpirun -np 2 --oversubscribe --bind-to none`, Trainer distributed: true (one all-reduce of the flat
//              gradient buffer per step), floor(cores / 2) threads per rank;
//   world 2, overlap — distributed: { overlap: true }: the all-reduce in per-layer buckets, each started on the
//              communication thread as soon as its layer's backward has made its gradients final (issue 16 asks to
//              keep overlap only if this shows it helps);
//   world 2, ZeRO-1 — the same job with distributed: { zero: 1 } (reduce-scatter + all-gather).
// Every row is a fresh process (or job) of scripts/bench/distributed-worker.ts, which times SF_DIST_STEPS (default 5)
// Trainer steps after 2 warm-up steps and reports from rank 0: ms_per_step (median), comm_ms (median of
// StepInfo.comm.ms: rank 0's time inside collectives), bytes_per_step (trainer.commPlan.bytesPerStep, asserted on
// every rank to be 4 × unique parameters, 8 × with ZeRO-1), the unique parameters. ratio_vs_single = ms_per_step /
// the world-1 ms_per_step of the same sharing (world 2 trains twice the tokens per step).
//
// Reference: when Debian's /usr/bin/python3 has torch.distributed with gloo (and a PyTorch on OpenBLAS: the train
// suite's findTorch), scripts/torch_ddp_ref.py trains the same model with DistributedDataParallel (gloo; ZeRO-1 rows:
// ZeroRedundancyOptimizer) at the same world size and threads in the same run: ratio = ours / PyTorch (DDP always
// overlaps its bucketed all-reduce with backward: the plain and the overlap rows share one DDP run). Otherwise every
// row says why there is no reference.
//
// Then a model of step time against world size, printed as markdown tables for docs/distributed.md: for W in 1..64,
// 25 Gb/s Ethernet and 400 Gb/s InfiniBand, shared and unshared, computed from this run's world-1 ms_per_step and
// exact byte counts (see modelRows for the formula and its assumptions).
//
// SF_DIST_STEPS=N (timed steps, default 5), SF_DIST_SHARES=none,all (the sharing plans).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { mpiUnavailable } from '../test/helpers/mpi.ts';
import { TRAIN_CONFIGS, PY, cpuModel, findTorch, warnLoad, type TorchEnv } from './bench/common.ts';

const ROOT = join(import.meta.dirname, '..');
const WORKER = join(import.meta.dirname, 'bench', 'distributed-worker.ts');
const DDP_REF = join(import.meta.dirname, 'torch_ddp_ref.py');
const CONFIG = 'small';
const WARMUP = 2;
/** Per row (one job): minutes of the small model at 2 threads are far below it; a hung job fails the suite. */
const JOB_TIMEOUT_MS = 600_000;
/**
 * mpirun's options: --oversubscribe (more ranks than cores is allowed: needed on a 2-core machine), --bind-to none
 * (Open MPI binds each rank to one core by default at np <= 2, which would serialise a rank's threads; the OS places
 * them instead).
 */
const MPIRUN_OPTS = ['--oversubscribe', '--bind-to', 'none'];

/** The model's network links: bandwidth in bits/s and the per-message latency alpha in seconds. */
export const LINKS = [
  { name: '25 Gb/s Ethernet', short: '25 GbE', bitsPerSec: 25e9, alpha: 5e-6 },
  { name: '400 Gb/s InfiniBand', short: '400 Gb IB', bitsPerSec: 400e9, alpha: 1e-6 },
] as const;
export const MODEL_WORLDS = [1, 2, 4, 8, 16, 32, 64];

export interface DistRow {
  suite: 'distributed';
  config: string;
  share: 'none' | 'all';
  world: number;
  /** 0: plain data parallel (or world 1); 1: ZeRO-1. */
  zero: 0 | 1;
  /** distributed.overlap: per-layer buckets reduced during backward. */
  overlap: boolean;
  /** Collectives on the flat buffer per step (trainer.commPlan; with overlap, one per bucket). */
  collectives: number;
  /** Overlap: buckets of the last step that a layer's hook started during backward (the rest start after it). */
  hook_starts: number;
  threads_per_rank: number;
  ms_per_step: number;
  /**
   * Rank 0's median ms inside collectives per step (StepInfo.comm.ms); 0 at world 1. With overlap, the communication
   * thread's time in the buckets' all-reduces, alongside backward: not time added to the step.
   */
  comm_ms: number;
  /** Flat-buffer bytes of the step's collectives (trainer.commPlan.bytesPerStep); 0 at world 1. */
  bytes_per_step: number;
  unique_params: number;
  /** Tokens trained per optimizer step over all ranks (batch × seq × world). */
  tokens_per_step: number;
  tokens_per_s: number;
  /** ms_per_step / the world-1 ms_per_step of the same sharing. */
  ratio_vs_single: number;
  /** 'PyTorch DDP (gloo), same run', or why there is none. */
  ref: string;
  ref_ms_per_step?: number;
  /** ours / PyTorch. */
  ratio?: number;
  steps_ms: number[];
  comm_ms_steps: number[];
  ref_steps_ms?: number[];
  /** How the row ran: the command line, without the worker's arguments. */
  launcher: string;
  /** The 1-minute load average after the row. */
  loadavg: number;
}

export interface DistModelRow {
  suite: 'distributed-model';
  share: 'none' | 'all';
  link: string;
  scaling: 'weak' | 'strong';
  world: number;
  compute_ms: number;
  comm_ms: number;
  ms_per_step: number;
  /** Weak scaling: compute_ms_single / ms_per_step (per-rank throughput kept). Strong: compute_ms_single / ms_per_step. */
  efficiency: number;
  speedup: number;
}

/** One row's job: the worker under `mpirun -np world` (or one plain process at world 1); its JSON from rank 0. */
function runWorker(share: string, world: number, zero: 0 | 1, overlap: boolean, threads: number, steps: number, tmp: string): { json: Record<string, unknown>; launcher: string } {
  const out = join(tmp, `${share}-w${world}-z${zero}${overlap ? '-overlap' : ''}.json`);
  const workerArgs = [process.execPath, '--import', 'tsx', WORKER, '--config', CONFIG, '--share', share, '--zero', String(zero),
    ...(overlap ? ['--overlap'] : []), '--threads', String(threads), '--steps', String(steps), '--warmup', String(WARMUP), '--out', out];
  const [cmd, argv, launcher] = world === 1
    ? [workerArgs[0], [...workerArgs.slice(1), '--single'], 'node (one process)']
    : ['mpirun', ['-np', String(world), ...MPIRUN_OPTS, ...workerArgs, '--world', String(world)], `mpirun -np ${world} ${MPIRUN_OPTS.join(' ')}`];
  const r = spawnSync(cmd, argv, { cwd: ROOT, encoding: 'utf8', timeout: JOB_TIMEOUT_MS, maxBuffer: 64 << 20 });
  const what = `${CONFIG}/${share} world ${world}${zero ? ' ZeRO-1' : ''}${overlap ? ' overlap' : ''} (${launcher})`;
  if (r.error || r.status !== 0) {
    // The ranks' own error messages: the worker writes them to files, since MPI_Abort can end the job before mpirun
    // has forwarded a rank's stderr.
    const errors = readdirSync(tmp).filter((f) => f.startsWith(`${basename(out)}.error-rank`)).sort()
      .map((f) => `${f.slice(basename(out).length + 1)}: ${readFileSync(join(tmp, f), 'utf8').trim().split('\n')[0]}`);
    const tail = `${r.stderr ?? ''}${r.stdout ?? ''}`.trim().split('\n').slice(-15).join('\n');
    throw new Error(`bench distributed: ${what} failed: ${r.error?.message ?? `exit ${r.status}${r.signal ? `, ${r.signal}` : ''}`}` +
      `${errors.length ? `\n${errors.join('\n')}` : ''}\n${tail}`);
  }
  try {
    return { json: JSON.parse(readFileSync(out, 'utf8')), launcher };
  } catch (e) {
    throw new Error(`bench distributed: ${what} exited 0 but wrote no readable result to ${out}: ${(e as Error).message}`);
  }
}

/** Why there is no PyTorch DDP reference, or the environment to run it in. */
function findDdp(threads: number): TorchEnv {
  const r = spawnSync(PY, ['-c', 'import torch.distributed as d; print(d.is_available(), d.is_gloo_available())'], { encoding: 'utf8', timeout: 120_000 });
  if (r.error || r.status !== 0) {
    const why = r.error?.message ?? ((r.stderr || '').trim().split('\n').pop() || `exit ${r.status}`);
    return { ok: false, reason: `no torch.distributed under ${PY}: ${why}` };
  }
  if (r.stdout.trim() !== 'True True') return { ok: false, reason: `torch.distributed under ${PY} has no gloo backend (is_available, is_gloo_available: ${r.stdout.trim()})` };
  return findTorch(threads);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** scripts/torch_ddp_ref.py at `world` processes (env:// rendezvous on a free local port); rank 0's JSON. */
async function runDdp(torch: Extract<TorchEnv, { ok: true }>, share: string, world: number, zero: 0 | 1, threads: number, steps: number): Promise<Record<string, unknown>> {
  const c = TRAIN_CONFIGS[CONFIG];
  const port = await freePort();
  const args = [DDP_REF, '--config', JSON.stringify({ ...c, threads }), '--share', share, '--zero', String(zero), '--steps', String(steps), '--warmup', String(WARMUP)];
  const procs = Array.from({ length: world }, (_, rank) => {
    const env = { ...torch.env, OPENBLAS_NUM_THREADS: String(threads), OMP_NUM_THREADS: String(threads), RANK: String(rank), LOCAL_RANK: String(rank),
      WORLD_SIZE: String(world), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port),
      GLOO_SOCKET_IFNAME: torch.env.GLOO_SOCKET_IFNAME ?? 'lo' }; // every rank is on this machine: gloo over loopback
    const p = spawn(PY, args, { cwd: ROOT, env });
    let out = '', err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    return new Promise<{ rank: number; code: number | null; out: string; err: string }>((resolve) => {
      const timer = setTimeout(() => p.kill('SIGKILL'), JOB_TIMEOUT_MS);
      p.on('close', (code) => {
        clearTimeout(timer);
        resolve({ rank, code, out, err });
      });
    });
  });
  const results = await Promise.all(procs);
  const bad = results.find((r) => r.code !== 0);
  if (bad) throw new Error(`rank ${bad.rank} exited ${bad.code}: ${bad.err.trim().split('\n').pop() ?? ''}`);
  return JSON.parse(results[0].out.trim().split('\n').pop() ?? '');
}

/**
 * The step-time model: t(W) = compute + ring all-reduce time, with
 *   ring all-reduce = 2 (W - 1) / W × bytes / bandwidth + 2 (W - 1) × alpha
 * (bytes = the flat gradient buffer, 4 × unique parameters; ZeRO-1's reduce-scatter + all-gather moves the same volume
 * in a ring, so its rows are the same), no overlap of communication with compute (the Trainer's default: it reduces
 * after the backward pass), and each rank as fast as this run's world-1 process. Weak scaling: a fixed per-rank batch, so
 * compute per step stays compute_ms_single and the global batch grows W×; efficiency = compute_ms_single / t(W).
 * Strong scaling: a fixed global batch, compute = compute_ms_single / W; speedup = compute_ms_single / t(W) (the
 * batch must split into W parts: beyond 8 ranks, read it as a larger global batch at the measured time per sequence).
 */
export function modelRows(single: Map<string, { ms: number; bytes: number }>): DistModelRow[] {
  const rows: DistModelRow[] = [];
  for (const [share, s] of single) for (const link of LINKS) for (const scaling of ['weak', 'strong'] as const) for (const W of MODEL_WORLDS) {
    const commS = W === 1 ? 0 : ((2 * (W - 1)) / W) * (s.bytes / (link.bitsPerSec / 8)) + 2 * (W - 1) * link.alpha;
    const compute = scaling === 'weak' ? s.ms : s.ms / W;
    const t = compute + commS * 1000;
    rows.push({ suite: 'distributed-model', share: share as 'none' | 'all', link: link.name, scaling, world: W, compute_ms: compute, comm_ms: commS * 1000, ms_per_step: t,
      efficiency: s.ms / t, speedup: scaling === 'weak' ? (W * s.ms) / t : s.ms / t });
  }
  return rows;
}

function printModel(single: Map<string, { ms: number; bytes: number; unique: number; threads: number }>, rows: DistModelRow[]): void {
  const shares = [...single.keys()];
  const cell = (share: string, link: string, scaling: string, W: number) => {
    const r = rows.find((x) => x.share === share && x.link === link && x.scaling === scaling && x.world === W)!;
    return scaling === 'weak'
      ? `${r.ms_per_step.toFixed(1)} (${(r.efficiency * 100).toFixed(0)}%)`
      : `${r.ms_per_step.toFixed(1)} (${r.speedup.toFixed(1)}×)`;
  };
  const head = `| W | ${shares.flatMap((s) => LINKS.map((l) => `${s}, ${l.short}`)).join(' | ')} |`;
  const rule = `|---:|${shares.flatMap(() => LINKS.map(() => '---:')).join('|')}|`;
  console.log(`\n### Model: step time against world size (${CONFIG}, from this run)\n`);
  for (const [share, s] of single)
    console.log(`- share ${share}: compute ${s.ms.toFixed(1)} ms/step (measured, world 1, ${s.threads} threads), ` +
      `${s.bytes.toLocaleString('en-US')} bytes all-reduced per step (4 × ${s.unique.toLocaleString('en-US')} unique parameters)`);
  console.log(`- communication: ring all-reduce, 2 (W − 1) / W × bytes / bandwidth + 2 (W − 1) × α, with ` +
    `${LINKS.map((l) => `${l.name} (α = ${l.alpha * 1e6} µs)`).join(' and ')}; no overlap with compute (the Trainer's default); every rank as fast as the measured world-1 process` +
    `; ZeRO-1 (reduce-scatter + all-gather) moves the same volume in a ring, so the same times`);
  console.log(`\n**Weak scaling** (fixed per-rank batch: compute per step stays the world-1 time, the global batch grows W×): ms/step (efficiency = compute / step time)\n`);
  console.log(head);
  console.log(rule);
  for (const W of MODEL_WORLDS) console.log(`| ${W} | ${shares.flatMap((s) => LINKS.map((l) => cell(s, l.name, 'weak', W))).join(' | ')} |`);
  console.log(`\n**Strong scaling** (fixed global batch: compute / W, which assumes the global batch splits into W equal parts — ` +
    `beyond ${TRAIN_CONFIGS[CONFIG].batch} ranks a larger global batch than the measured one, at the measured time per sequence): ms/step (speedup over one rank)\n`);
  console.log(head);
  console.log(rule);
  for (const W of MODEL_WORLDS) console.log(`| ${W} | ${shares.flatMap((s) => LINKS.map((l) => cell(s, l.name, 'strong', W))).join(' | ')} |`);
}

export async function benchDistributed(): Promise<(DistRow | DistModelRow)[]> {
  const stepsEnv = process.env.SF_DIST_STEPS ?? '5';
  const steps = Number(stepsEnv);
  if (!(Number.isInteger(steps) && steps >= 1)) throw new Error(`bench distributed: SF_DIST_STEPS must be a positive integer, got ${stepsEnv}`);
  const shares = (process.env.SF_DIST_SHARES ?? 'none,all').split(',').map((s) => s.trim()).filter(Boolean);
  if (shares.length === 0) throw new Error(`bench distributed: SF_DIST_SHARES names no sharing plan`);
  for (const s of shares) if (s !== 'none' && s !== 'all') throw new Error(`bench distributed: SF_DIST_SHARES takes none and all, got '${s}'`);
  const noMpi = mpiUnavailable();
  if (noMpi) throw new Error(`bench distributed: MPI jobs cannot run here: ${noMpi}`);

  const cores = availableParallelism();
  const world2Threads = Math.max(1, Math.floor(cores / 2));
  const mpiVersion = spawnSync('mpirun', ['--version'], { encoding: 'utf8' }).stdout.trim().split('\n')[0];
  const c = TRAIN_CONFIGS[CONFIG];
  console.log(`\ndistributed: ${cpuModel()}, ${cores} cores; 1-minute load average before: ${loadavg()[0].toFixed(2)}; ${mpiVersion}`);
  console.log(`distributed: ${CONFIG} (d ${c.dModel}, ${c.heads} heads, ${c.layers} layers, seq ${c.seq}, batch ${c.batch} per rank, vocab ${c.vocab}); ` +
    `${steps} timed steps after ${WARMUP} warm-up; world 1: ${cores} threads; world 2: ${world2Threads} thread(s) per rank (floor(cores / 2))`);
  warnLoad('distributed', 'before the suite', cores);

  const torch = findDdp(world2Threads);
  if (torch.ok) console.log(`distributed: reference PyTorch ${torch.probe.torch} DDP (gloo), BLAS ${(torch.probe.blas_libs as string[]).join(', ')} via ${torch.how}`);
  else console.log(`distributed: no PyTorch DDP reference — ${torch.reason}`);

  const tmp = mkdtempSync(join(tmpdir(), 'sf-bench-dist-'));
  const rows: DistRow[] = [];
  try {
    for (const share of shares as ('none' | 'all')[]) {
      let single: DistRow | undefined;
      const refs = new Map<string, Record<string, unknown> | Error>(); // one PyTorch run per (world, zero)
      for (const [world, zero, overlap] of [[1, 0, false], [2, 0, false], [2, 0, true], [2, 1, false]] as [number, 0 | 1, boolean][]) {
        const threads = world === 1 ? cores : world2Threads;
        const { json: j, launcher } = runWorker(share, world, zero, overlap, threads, steps, tmp);
        const unique = j.unique_params as number;
        // The worker asserted these on every rank; checked again here against what it reported.
        const expected = world === 1 ? 0 : (zero ? 8 : 4) * unique;
        if (j.bytes_per_step !== expected || j.world !== world)
          throw new Error(`bench distributed: ${share} world ${world} zero ${zero} reported ${j.bytes_per_step} bytes per step at world ${j.world}, expected ${expected} (${zero ? 8 : 4} × ${unique} unique parameters) at world ${world}`);
        if (single && unique !== single.unique_params)
          throw new Error(`bench distributed: ${share} world ${world} has ${unique} unique parameters, world 1 had ${single.unique_params}`);
        const ms = j.ms_per_step as number;
        const row: DistRow = {
          suite: 'distributed', config: CONFIG, share, world, zero, overlap, collectives: j.collectives as number, hook_starts: j.hook_starts as number,
          threads_per_rank: j.threads_per_rank as number,
          ms_per_step: ms, comm_ms: j.comm_ms as number, bytes_per_step: expected, unique_params: unique,
          tokens_per_step: j.tokens_per_step as number, tokens_per_s: (j.tokens_per_step as number) / (ms / 1000),
          ratio_vs_single: single ? ms / single.ms_per_step : 1,
          ref: torch.ok ? 'PyTorch DDP (gloo), same run' : `none: ${torch.reason}`,
          steps_ms: j.steps_ms as number[], comm_ms_steps: j.comm_ms_steps as number[], launcher, loadavg: 0,
        };
        if (torch.ok) {
          const key = `${world}/${zero}`;
          if (!refs.has(key)) refs.set(key, await runDdp(torch, share, world, zero, threads, steps).catch((e: Error) => e));
          try {
            const p = refs.get(key)!;
            if (p instanceof Error) throw p;
            if (p.parameters !== unique) throw new Error(`PyTorch model has ${p.parameters} parameters, ours ${unique}`);
            if (!(p.blas_libs as string[]).some((l) => /openblas/i.test(l))) throw new Error(`PyTorch ran on ${JSON.stringify(p.blas_libs)}, not OpenBLAS`);
            row.ref_ms_per_step = p.ms_per_step as number;
            row.ref_steps_ms = p.steps_ms as number[];
            row.ratio = ms / row.ref_ms_per_step;
          } catch (e) {
            row.ref = `PyTorch DDP failed: ${(e as Error).message}`;
          }
        }
        row.loadavg = loadavg()[0];
        single ??= row;
        rows.push(row);
        const f = (x?: number) => (x === undefined ? '-' : x.toFixed(1));
        console.log(`  ${CONFIG}/${share} world ${world}${zero ? ' ZeRO-1' : ''}${overlap ? ' overlap' : ''}: ${f(ms)} ms/step (comm ${f(row.comm_ms)} ms, ${row.bytes_per_step} bytes), ` +
          `${row.threads_per_rank} thread(s)/rank, ×${row.ratio_vs_single.toFixed(2)} of world 1; PyTorch ${f(row.ref_ms_per_step)}; ratio ${row.ratio?.toFixed(2) ?? '-'}`);
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  console.log('\ndistributed');
  console.table(rows.map((r) => ({
    share: r.share, world: r.world, zero: r.zero, overlap: r.overlap ? `on (${r.hook_starts}/${r.collectives} in bwd)` : '', 'threads/rank': r.threads_per_rank, 'unique params': r.unique_params, 'ms/step': r.ms_per_step.toFixed(1),
    'comm ms': r.comm_ms.toFixed(1), 'bytes/step': r.bytes_per_step, 'tokens/s': Math.round(r.tokens_per_s), 'vs world 1': r.ratio_vs_single.toFixed(2),
    'ref ms/step': r.ref_ms_per_step?.toFixed(1), ratio: r.ratio?.toFixed(2), load: r.loadavg.toFixed(1),
  })));
  if (!torch.ok) console.log(`(no reference: ${torch.reason})`);
  console.log(`distributed: 1-minute load average after: ${loadavg()[0].toFixed(2)}`);
  warnLoad('distributed', 'after the suite', cores);

  const single = new Map<string, { ms: number; bytes: number; unique: number; threads: number }>();
  for (const r of rows) if (r.world === 1) single.set(r.share, { ms: r.ms_per_step, bytes: 4 * r.unique_params, unique: r.unique_params, threads: r.threads_per_rank });
  const model = modelRows(single);
  printModel(single, model);
  return [...rows, ...model];
}
