// npm run bench [-- SUITE ...] [--json FILE]
//
// Suites:
//   kernels — every CPU kernel forward and backward at transformer shapes, the machine's measured FMA peak and copy
//             bandwidth, each kernel's share of them, and OpenBLAS sgemm in the same run as the matmul reference
//             (native: scripts/bench/sf_bench.cpp, built with plain CMake into build-bench/, CPU only, or into an
//             existing build-native/; it says which and how long; runs without Node too)
//   tensors — memory-bound tensor kernels (fill, copy, random) against a reference measured in the same run: the
//             plain JavaScript typed-array equivalent, and the machine's copy bandwidth (one large memcpy on the
//             native thread pool). Ratios, never absolute thresholds.
//   train   — one training step (forward + backward + AdamW, fp32) of a pre-LN decoder LM, small (d=256, 4 heads,
//             6 layers, seq 128, batch 8) and medium (d=512, 8 heads, 12 layers, seq 256, batch 4), vocab 256, dFF 4d,
//             sharing 'none' and 'all': ms per step (median of N steps after warm-up), tokens/s, a forward /
//             backward / optimizer breakdown (separate, synchronized steps), and the same model trained by PyTorch
//             in the same run as the reference (scripts/torch_train_ref.py under /usr/bin/python3, with OpenBLAS
//             verified, at our thread count): ratio = our ms / PyTorch ms. Without PyTorch or OpenBLAS the suite
//             runs without the reference and says why. Not part of the default suites (minutes): name it.
//             SF_TRAIN_CONFIGS=small|medium restricts it; SF_TRAIN_STEPS=N sets the timed steps (default 10 small,
//             5 medium; 2 warm-up steps, 3 phase steps).
//             SF_TRAIN_SHARES=none,all restricts the sharing plans. SF_TRAIN_STACKED=off,on runs each row with stacked
//             weight gradients off and on (backward()'s stackedGrads; default: the device's default only); the
//             PyTorch reference then runs once per (config, share). Config 'small12b1' (d=256, 12 layers, seq 128,
//             batch 1: few tokens per layer, where stacking should help most) runs only when named in SF_TRAIN_CONFIGS.
//   distributed — data-parallel training of the `small` train model (scripts/bench-distributed.ts): world 1 (one plain
//             process), world 2 (`mpirun -np 2`, plain data parallel; and with distributed.overlap) and world 2 with
//             ZeRO-1, sharing 'none' and 'all': ms per step, ms in collectives, flat-buffer bytes per step (asserted:
//             4 × unique parameters, 8 × with ZeRO-1), ratio to world 1; PyTorch DDP (gloo) as the reference when
//             Debian's torch has it; then a
//             model of step time against world size (1–64) over 25 Gb/s Ethernet and 400 Gb/s InfiniBand. Needs
//             mpirun (as root: OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1). Not a default suite: name it.
//             SF_DIST_STEPS=N timed steps (default 5, after 2 warm-up steps); SF_DIST_SHARES=none,all.
//   generate — inference of the `small` decoder LM (d 256, 4 heads, 6 layers, dFF 1024, vocab 256, maxSeq 144, tied),
//             sharing 'none' and 'all' (scripts/bench-generate.ts): prefill of 128 tokens at B1 (DecodeSession.prefill,
//             generate()'s path) and B8 (Decoder.forward), and greedy decode of 128 tokens after a 16-token prompt
//             (model.generate, temperature 0; its time includes the prompt's prefill): ms (median), tokens/s, addon
//             calls per token (a separate counting pass), the event loop's p99 lag during decode; each against PyTorch
//             fp32 and bf16 autocast (scripts/torch_decode_ref.py, same weights, KV-cache greedy decode whose fp32
//             tokens must equal ours) and, for prefill, onnxruntime-node (installed on demand into
//             ~/.cache/sharedformer-bench/ort, never the project) on the model exported from PyTorch; one row per
//             reference, ratio = ref ms / our ms (above 1: we are faster). Not a default suite: name it.
//             SF_GEN_CONFIGS=small|medium, SF_GEN_SHARES=none,all, SF_GEN_RUNS=N (default 5), SF_GEN_BF16_RUNS=N
//             (default 1; 0 skips bf16, which is slow on CPUs without native bf16).
//             Its sharing section (the sharing advantage, measured) is not run by default, as it takes 35 s to a minute
//             on 2 cores: SF_GEN_SHARING=1 adds it, SF_GEN_CONFIGS=sharing runs it alone (no PyTorch needed). Greedy
//             decode tokens/s of 64 new tokens after 16, sharing 'all' vs 'none', at d 256, 512, 1024 (12 layers,
//             heads d/64, dFF 4d, vocab 256; SF_GEN_SHARING_DIMS restricts), median of 3 runs (SF_GEN_RUNS), ours only;
//             with the weight bytes one step touches and its unique weight bytes (each shared block once), the K/V
//             bytes it reads, CPU 0's L2/L3 sizes, and speedup_vs_none.
//
// With no SUITE: kernels and tensors.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as sf from '../lib/index.ts';
import { TRAIN_CONFIGS, PY, TORCH_REF, findTorch, median, timeRuns } from './bench/common.ts';
import { benchDistributed } from './bench-distributed.ts';
import { benchGenerate } from './bench-generate.ts';

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
  const run = (cmd: string, args: string[]) => {
    const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`bench: ${cmd} ${args.join(' ')} failed`);
  };
  // sf_bench is a plain C++ program linked to the core, so it needs a plain CMake tree: the addon's build/ is a cmake-js
  // tree, where CMakeLists.txt leaves the benchmarks out. An existing tree is reused: build-bench/ (this suite's own),
  // else build-native/ (`npm run test:native`'s, CUDA kernels included when nvcc was found). Otherwise build-bench/ is
  // configured with only what sf_bench needs: CPU kernels, no CUDA, no native tests, no CPU lane.
  const bench = join(root, 'build-bench');
  const native = join(root, 'build-native');
  const cores = availableParallelism();
  let dir = bench;
  if (existsSync(join(bench, 'CMakeCache.txt'))) {
    console.error(`bench kernels: building sf_bench in the existing CMake tree build-bench/`);
  } else if (existsSync(join(native, 'CMakeCache.txt'))) {
    dir = native;
    console.error(`bench kernels: building sf_bench in the existing CMake tree build-native/ (from npm run test:native)`);
  } else {
    console.error(
      `bench kernels: configuring a CMake tree of its own in build-bench/ (sf_bench is a plain C++ program; the addon's ` +
        `cmake-js tree in build/ does not build it), CPU kernels only, and compiling the core into it: about ` +
        `${cores >= 4 ? 'half a minute' : '1 minute'} on ${cores} cores, once; later runs reuse it`,
    );
    const gen = spawnSync('ninja', ['--version']).status === 0 ? ['-G', 'Ninja'] : [];
    run('cmake', ['-S', '.', '-B', dir, ...gen, '-DCMAKE_BUILD_TYPE=Release', '-DSHAREDFORMER_CUDA=OFF',
      '-DSHAREDFORMER_TESTS=OFF', '-DSHAREDFORMER_CUDA_EMU=OFF', '-DSHAREDFORMER_BENCH=ON']);
  }
  run('cmake', ['--build', dir, '--target', 'sf_bench', '-j', String(cores)]);
  const tmp = mkdtempSync(join(tmpdir(), 'sf-bench-'));
  try {
    const extra = process.env.SF_BENCH_ARGS ? process.env.SF_BENCH_ARGS.split(' ') : [];
    run(join(dir, 'sf_bench'), ['--json', join(tmp, 'rows.json'), ...extra]);
    return JSON.parse(readFileSync(join(tmp, 'rows.json'), 'utf8')) as Row[];
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

/** Median wall time of fn over `reps` runs after one warm-up, in ms. */
async function time(fn: () => Promise<void> | void, reps = 7): Promise<number> {
  return median(await timeRuns(fn, reps));
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

// ---- train: one training step of a decoder LM, against PyTorch in the same run -------------------------------------
// (the models, TRAIN_CONFIGS, and the PyTorch finder live in scripts/bench/common.ts, shared with the distributed suite)

/** Configs run only when SF_TRAIN_CONFIGS names them. */
const TRAIN_ON_REQUEST = new Set(['small12b1']);

interface TrainRow {
  suite: 'train';
  config: string;
  share: 'none' | 'all';
  /** Stacked weight gradients: 'on', 'off', or 'default' (the device's default). */
  stacked: 'on' | 'off' | 'default';
  parameters: number;
  ms_per_step: number;
  tokens_per_s: number;
  /** Model FLOPs per second: 3 × the forward FLOPs per token (sharing/accounting.ts) × tokens/s, in GFLOP/s. */
  gflops: number;
  fwd_ms: number;
  bwd_ms: number;
  opt_ms: number;
  ref: string;
  ref_ms_per_step?: number;
  ref_tokens_per_s?: number;
  ref_fwd_ms?: number;
  ref_bwd_ms?: number;
  ref_opt_ms?: number;
  ratio?: number;
  /** Every timed step, ms (ours, and PyTorch's): the spread shows interference from other processes. */
  steps_ms: number[];
  ref_steps_ms?: number[];
  /** The 1-minute load average after the row (above the thread count: other processes shared the CPU). */
  loadavg: number;
}

async function benchTrain(): Promise<TrainRow[]> {
  const threads = sf.getNumThreads();
  const only = process.env.SF_TRAIN_CONFIGS?.split(',').map((s) => s.trim()).filter(Boolean);
  for (const c of only ?? []) if (!TRAIN_CONFIGS[c]) throw new Error(`bench train: unknown config '${c}' in SF_TRAIN_CONFIGS; known: ${Object.keys(TRAIN_CONFIGS).join(', ')}`);
  const stepsEnv = process.env.SF_TRAIN_STEPS ? Number(process.env.SF_TRAIN_STEPS) : undefined;
  if (stepsEnv !== undefined && !(Number.isInteger(stepsEnv) && stepsEnv >= 1)) throw new Error(`bench train: SF_TRAIN_STEPS must be a positive integer, got ${process.env.SF_TRAIN_STEPS}`);
  const warmup = 2, phaseSteps = 3;
  const shares = (process.env.SF_TRAIN_SHARES ?? 'none,all').split(',').map((s) => s.trim()).filter(Boolean);
  for (const s of shares) if (s !== 'none' && s !== 'all') throw new Error(`bench train: SF_TRAIN_SHARES takes none and all, got '${s}'`);
  const stackedModes = (process.env.SF_TRAIN_STACKED ?? 'default').split(',').map((s) => s.trim()).filter(Boolean);
  for (const s of stackedModes) if (!['on', 'off', 'default'].includes(s)) throw new Error(`bench train: SF_TRAIN_STACKED takes on, off and default, got '${s}'`);

  const torch = findTorch(threads);
  if (torch.ok) {
    const p = torch.probe;
    console.log(`\ntrain: reference PyTorch ${p.torch} (BLAS_INFO=${p.blas_info}; loaded ${(p.blas_libs as string[]).join(', ')} via ${torch.how}), ` +
      `${p.threads} threads, OPENBLAS_NUM_THREADS=${p.openblas_num_threads}, sgemm 1024³ ${p.sgemm_1024_gflops} GFLOP/s`);
  } else console.log(`\ntrain: no PyTorch reference — ${torch.reason}`);

  const rows: TrainRow[] = [];
  for (const [name, c] of Object.entries(TRAIN_CONFIGS)) {
    if (only ? !only.includes(name) : TRAIN_ON_REQUEST.has(name)) continue;
    const steps = stepsEnv ?? (name === 'medium' ? 5 : 10);
    for (const share of shares as ('none' | 'all')[]) for (const [si, stacked] of (stackedModes as ('on' | 'off' | 'default')[]).entries()) {
      const stackedGrads = stacked === 'default' ? undefined : stacked === 'on';
      const model = new sf.Decoder({ vocab: c.vocab, dModel: c.dModel, heads: c.heads, dFF: c.dFF, layers: c.layers, maxSeq: c.seq, sharing: { strategy: share }, seed: 1 });
      const opt = new sf.AdamW(model.store, { lr: 1e-4, beta1: 0.9, beta2: 0.99, weightDecay: 0.1 });
      const n = c.batch * c.seq;
      const idsArr = new Int32Array(n), tgArr = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        idsArr[i] = (i * 7919 + 13) % c.vocab;
        tgArr[i] = (i * 104729 + 7) % c.vocab;
      }
      const ids = sf.tensor(idsArr, [c.batch, c.seq]), targets = sf.tensor(tgArr, [c.batch, c.seq]);
      const step = async () => {
        model.zeroGrad();
        const loss = model.loss(ids, targets);
        sf.backward(loss, { stackedGrads });
        opt.update();
        await loss.data();
        loss.dispose();
        await sf.synchronize();
      };
      const ms = await timeRuns(step, steps, warmup);
      const fwd: number[] = [], bwd: number[] = [], upd: number[] = [];
      for (let i = 0; i < phaseSteps; i++) {
        const t0 = performance.now();
        model.zeroGrad();
        const loss = model.loss(ids, targets);
        await loss.data();
        const t1 = performance.now();
        sf.backward(loss, { stackedGrads });
        await sf.synchronize();
        const t2 = performance.now();
        opt.update();
        await sf.synchronize();
        const t3 = performance.now();
        loss.dispose();
        fwd.push(t1 - t0);
        bwd.push(t2 - t1);
        upd.push(t3 - t2);
      }
      const flopsPerToken = model.accounting().flopsPerToken;
      const parameters = model.numParameters;
      sf.releaseTape();
      opt.dispose();
      ids.dispose();
      targets.dispose();
      model.store.dispose();

      const med = median(ms);
      const row: TrainRow = {
        suite: 'train', config: name, share, stacked, parameters, ms_per_step: med, tokens_per_s: n / (med / 1000),
        gflops: (3 * flopsPerToken * n) / (med / 1000) / 1e9,
        fwd_ms: median(fwd), bwd_ms: median(bwd), opt_ms: median(upd), ref: torch.ok ? 'PyTorch (same run)' : 'none',
        steps_ms: ms, loadavg: 0,
      };
      if (torch.ok && si === 0) {
        const cfg = JSON.stringify({ ...c, threads });
        const r = spawnSync(PY, [TORCH_REF, '--config', cfg, '--share', share, '--steps', String(steps), '--warmup', String(warmup), '--phase-steps', String(phaseSteps)],
          { env: torch.env, encoding: 'utf8', timeout: 1_800_000 });
        try {
          const j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
          if (j.parameters !== parameters) throw new Error(`PyTorch model has ${j.parameters} parameters, ours ${parameters}`);
          if (!(j.blas_libs as string[]).some((l) => /openblas/i.test(l))) throw new Error(`PyTorch ran on ${JSON.stringify(j.blas_libs)}, not OpenBLAS`);
          Object.assign(row, {
            ref_ms_per_step: j.ms_per_step, ref_tokens_per_s: j.tokens_per_s, ref_fwd_ms: j.fwd_ms, ref_bwd_ms: j.bwd_ms, ref_opt_ms: j.opt_ms,
            ratio: med / j.ms_per_step, ref_steps_ms: j.steps_ms,
          });
        } catch (e) {
          row.ref = `PyTorch failed: ${(e as Error).message}; ${(r.stderr || '').trim().split('\n').pop() ?? ''}`;
        }
      }
      row.loadavg = loadavg()[0];
      rows.push(row);
      const f = (x?: number) => (x === undefined ? '-' : x.toFixed(1));
      console.log(`  ${name}/${share}${stacked === 'default' ? '' : `/stacked ${stacked}`}: ${f(row.ms_per_step)} ms/step (fwd ${f(row.fwd_ms)}, bwd ${f(row.bwd_ms)}, opt ${f(row.opt_ms)}); ` +
        `PyTorch ${f(row.ref_ms_per_step)} (fwd ${f(row.ref_fwd_ms)}, bwd ${f(row.ref_bwd_ms)}, opt ${f(row.ref_opt_ms)}); ratio ${row.ratio?.toFixed(2) ?? '-'}`);
    }
  }
  console.log('\ntrain');
  console.table(rows.map((r) => ({
    config: r.config, share: r.share, stacked: r.stacked, params: r.parameters, 'ms/step': r.ms_per_step.toFixed(1), 'tokens/s': Math.round(r.tokens_per_s),
    'GFLOP/s': r.gflops.toFixed(1), 'fwd/bwd/opt ms': `${r.fwd_ms.toFixed(0)}/${r.bwd_ms.toFixed(0)}/${r.opt_ms.toFixed(0)}`,
    'ref ms/step': r.ref_ms_per_step?.toFixed(1), 'ref fwd/bwd/opt': r.ref_fwd_ms === undefined ? undefined : `${r.ref_fwd_ms.toFixed(0)}/${r.ref_bwd_ms!.toFixed(0)}/${r.ref_opt_ms!.toFixed(0)}`,
    ratio: r.ratio?.toFixed(2), load: r.loadavg.toFixed(1),
  })));
  return rows;
}

const args = process.argv.slice(2);
const jsonIdx = args.indexOf('--json');
const jsonFile = jsonIdx >= 0 ? args[jsonIdx + 1] : undefined;
if (jsonIdx >= 0 && !jsonFile) {
  console.error('bench: --json needs a file name');
  process.exit(2);
}
const suites = args.filter((a, i) => !a.startsWith('--') && (jsonIdx < 0 || i !== jsonIdx + 1));
const known: Record<string, () => Promise<object[]>> = { kernels: benchKernels, tensors: benchTensors, train: benchTrain, distributed: benchDistributed, generate: benchGenerate };
const chosen = suites.length ? suites : ['kernels', 'tensors'];
for (const s of chosen) {
  if (!known[s]) {
    console.error(`bench: unknown suite '${s}'; known: ${Object.keys(known).join(', ')}`);
    process.exit(2);
  }
}

const b = sf.backends();
console.log(`sharedformer bench — ${b.cpu.threads} CPU threads, ${b.cpu.simd}; CUDA ${b.cuda.available ? 'available' : 'unavailable'}`);
const all: object[] = [];
for (const s of chosen) {
  const rows = await known[s]();
  all.push(...rows);
  if (s !== 'tensors') continue; // sf_bench and the other suites printed their own tables
  console.log(`\n${s}`);
  console.table((rows as Row[]).map((r) => ({ name: r.name, shape: Array.isArray(r.shape) ? `[${r.shape.join(', ')}]` : r.shape, ms: r.ms.toFixed(2), 'GB/s': r.gbps?.toFixed(1), ref: r.ref, 'ref ms': r.ref_ms?.toFixed(2), ratio: r.ratio?.toFixed(2) })));
}
if (jsonFile) writeFileSync(jsonFile, JSON.stringify(all, null, 2) + '\n');
