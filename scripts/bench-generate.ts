// The `generate` suite of scripts/bench.ts (`npm run bench -- generate [--json FILE]`): inference of a pre-LN decoder
// LM (config `small`: d 256, 4 heads, 6 layers, dFF 1024, vocab 256, maxSeq 144, tied embeddings, fp32), sharing
// 'none' and 'all' (one block for every layer), on the CPU, each measurement against references in the same run.
//
// Measurements (ours), each timed after one warm-up run; ms is the median of SF_GEN_RUNS runs (default 5):
//   prefill B1, T 128 — DecodeSession.prefill, the serving path of generate(): a session (KV caches of maxSeq
//     positions) is made, the 128-token prompt goes through the model in one causal pass that fills the caches, and the
//     last position's logits are read (await data()); the session is disposed. tokens_per_s = 128 / seconds.
//   prefill B8, T 128 — Decoder.forward under noGrad in eval mode, all logits (8, 128, vocab) read: DecodeSession and
//     generate() take one sequence, so a batch of prompts is served (scored) by the full forward pass, with no cache.
//     tokens_per_s = 8 × 128 / seconds.
//   decode B1 — model.generate(prompt, {maxNewTokens: 128, temperature: 0}) on a 16-token prompt: greedy, over the KV
//     cache. ms is the whole call, the prompt's prefill included (one 16-token pass; 127 single-token steps follow);
//     tokens_per_s = 128 / seconds of that call. The references are timed the same way (prefill + 127 steps + argmax).
//     During the timed runs a 1 ms setInterval measures the event loop's lag (actual interval - 1 ms): lag_p99_ms is
//     the 99th percentile over every interval of the timed runs.
//   calls_per_token — addon calls counted in a separate, untimed pass: every function of the cached addon object
//     (native(): kernels, tensor factories, isHandle, ...) and every Tensor member that crosses into its native handle
//     (data/read, dispose, view/window, shape, size, disposed, ...) is wrapped in place for the pass and restored after
//     (lib/ reaches the handle only through Tensor: lib/tensor.ts). Decode rows: calls during generate() / 128 (the
//     prompt's prefill included, as in ms); prefill rows: calls per prefill (one call of the row's batch).
//
// References, each its own row (ref, ref_ms, ratio = ref_ms / ms: above 1 we are faster; note that the train suite's
// ratio is the other way round, ours / PyTorch):
//   PyTorch fp32 and PyTorch bf16 (torch.autocast('cpu', bfloat16)) — scripts/torch_decode_ref.py under Debian's
//     /usr/bin/python3 with OpenBLAS verified (findTorch, scripts/bench/common.ts) at our thread count: the same model
//     with the same weights (Decoder.save to a temporary safetensors file, read in gen_model_fixture's layout), prefill
//     B1 over preallocated KV caches (last logits), prefill B8 as the full forward (all logits), and a KV-cache greedy
//     decode, all under inference_mode. PyTorch fp32's greedy tokens must equal ours: a mismatch is printed as MISMATCH
//     with PyTorch's top-1/top-2 margin there (a near-tie that summation order may flip) and, unless that margin is
//     below 1e-3, makes the suite exit 1. bf16's tokens may differ: how many match is reported. Our B8 logits are
//     compared with PyTorch fp32's (max abs diff). bf16 runs SF_GEN_BF16_RUNS times (default 1; 0 skips bf16): CPUs
//     without native bf16 arithmetic (no AVX-512 BF16 / AMX) run it at about 1 GFLOP/s, minutes per sharing plan.
//   onnxruntime-node (prefill only) — the fp32 full forward exported by the PyTorch script (torch.onnx.export, opset 14,
//     dynamic batch, T 128), run by onnxruntime-node 1.31.x with intraOpNumThreads = our threads. It is installed on
//     demand outside the project (npm install --ignore-scripts --no-save --prefix ~/.cache/sharedformer-bench/ort;
//     $XDG_CACHE_HOME is honoured), never into package.json. It computes every position's logits at B1 too (ours: the
//     last one; the head is under 1% of the FLOPs here). Its logits are compared with ours (max abs diff, printed).
//     With sharing 'all' the exported graph holds a copy of the block per layer (tracing inlines the weights).
// PyTorch's OpenMP threads spin at each op's barrier: on a loaded machine (load average above the cores) a descheduled
// thread stalls every op, and its times can be an order of magnitude slower (prefill B1 at load 3.4 on 2 cores: 690 ms,
// 34 ms with OMP_WAIT_POLICY=PASSIVE). The environment reaches the script, so such a run can set OMP_WAIT_POLICY=PASSIVE.
// Without PyTorch (or OpenBLAS) there are no PyTorch and no onnxruntime rows (the ONNX model comes from PyTorch); without
// onnxruntime no onnxruntime rows; the suite prints why. A measurement with no reference at all gets one row, ref 'none'.
//
// Rows: {suite, config, share, batch, prompt, new_tokens, ms, tokens_per_s, calls_per_token, ref, ref_ms, ratio}, plus
// lag_p99_ms on decode rows, check (the correctness check of that reference: tokens or logits) where there is one, and
// the machine: cpu, threads, loadavg (the 1-minute load average after the sharing plan's rows).
//
// SF_GEN_CONFIGS=small|medium|sharing (medium: d 512, 8 heads, 12 layers, dFF 2048; only when named; sharing: the
// section below, alone when it is the only name), SF_GEN_SHARES=none,all, SF_GEN_RUNS=N (default 5), SF_GEN_BF16_RUNS=N
// (default 1, 0: no bf16).
//
// The sharing section (issue 19, point 5: the sharing advantage, measured): only with SF_GEN_SHARING=1 (after the rows
// above) or when SF_GEN_CONFIGS names `sharing`: about 35 s on 2 cores, up to a minute loaded. Ours only, no
// references. Greedy decode tokens/s (model.generate, temperature 0, replayed steps; the 16-token prompt's prefill
// included) of 64 new tokens, sharing 'all' against 'none', at d 256, 512 and 1024 (SF_GEN_SHARING_DIMS=256,512,1024),
// 12 layers, heads d/64, dFF 4d, vocab 256, maxSeq 80: median of SF_GEN_RUNS runs (default 3 here) after one warm-up
// each, the two plans' runs interleaved. With it, what one decode step reads, from the model itself (its blocks' parameters(), checked against
// its store's bytes and its accounting()): weight bytes touched (per applied layer its attention and FFN blocks, fp32,
// a shared block once per layer that applies it; plus the final norm, the head, which tied is the whole token
// embedding, and one token and one position row), unique weight bytes (each block once: what a cache must hold for a
// step to read no weight from memory), and K/V bytes at the mean number of keys (accounting's KV bytes per token ×
// (16 + 64 / 2)). The table gives CPU 0's L2 and L3 sizes (sysfs) and which one the unique bytes fit in.
// Rows: {suite, config: 'sharing', share, d, layers, prompt, new_tokens, ms, tokens_per_s, weight_bytes_per_step,
// unique_weight_bytes_per_step, kv_bytes_per_step, speedup_vs_none (tokens/s over the 'none' row's at the same d), cpu,
// threads, loadavg, l2_bytes, l3_bytes}.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism, homedir, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as sf from '../lib/index.ts';
import { native } from '../lib/native.ts';
import { TRAIN_CONFIGS, PY, cacheBytes, cpuCaches, cpuModel, findTorch, formatBytes, median, quantile, timeRuns, warnLoad } from './bench/common.ts';

const DECODE_REF = join(import.meta.dirname, 'torch_decode_ref.py');
const PREFILL_T = 128;
const PROMPT = 16;
const NEW_TOKENS = 128;
const MAX_SEQ = 144; // >= PREFILL_T and >= PROMPT + NEW_TOKENS - 1
const BATCHES = [1, 8];
const ORT_VERSION = '1.31';
const ORT_DIR = join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'sharedformer-bench', 'ort');
/** A PyTorch fp32 token mismatch where PyTorch's top-1 / top-2 margin is at least this fails the suite. */
const TIE_MARGIN = 1e-3;

/** The benchmark models: the train suite's dimensions, maxSeq 144. */
const GEN_CONFIGS = Object.fromEntries(
  (['small', 'medium'] as const).map((name) => {
    const { vocab, dModel, heads, dFF, layers } = TRAIN_CONFIGS[name];
    return [name, { vocab, dModel, heads, dFF, layers, maxSeq: MAX_SEQ }];
  }),
);
const GEN_ON_REQUEST = new Set(['medium']);

export interface GenRow {
  suite: 'generate';
  config: string;
  share: 'none' | 'all';
  batch: number;
  /** Prompt tokens: 128 for prefill, 16 for decode. */
  prompt: number;
  /** 0 for prefill, 128 for decode. */
  new_tokens: number;
  ms: number;
  tokens_per_s: number;
  /** Decode: addon calls per generated token; prefill: addon calls per prefill call. */
  calls_per_token: number;
  /** 'PyTorch fp32', 'PyTorch bf16', 'onnxruntime-node 1.31.x', or 'none'. */
  ref: string;
  ref_ms: number | null;
  /** ref_ms / ms: above 1, we are faster. */
  ratio: number | null;
  lag_p99_ms?: number;
  /** The reference's correctness check against ours (tokens or logits), where it has one. */
  check?: string;
  cpu: string;
  threads: number;
  loadavg: number;
}

/** One of our measurements and the references' times for it. */
interface Measurement {
  batch: number;
  prompt: number;
  newTokens: number;
  ms: number;
  calls: number;
  lagP99?: number;
  refs: { ref: string; ms: number; check?: string }[];
}

// ---- counting addon calls --------------------------------------------------------------------------------------------

/** Tensor members that call into the native handle, and the handle member each one reaches. */
const TENSOR_METHODS: Record<string, string> = {
  data: 'read', dataSync: 'readSync', sharedData: 'shared', to: 'to', clone: 'clone', view: 'view', window: 'view',
  sharesStorageWith: 'sameStorage', dispose: 'dispose',
};
const TENSOR_GETTERS: Record<string, string> = { shape: 'shape', dtype: 'dtype', device: 'device', size: 'size', rank: 'shape', disposed: 'disposed' };

/**
 * Runs fn with every function of the cached addon object and every handle-reaching Tensor member wrapped in place by a
 * counter; restores them after. Returns fn's result and the calls by name ('addon.matmul', 'handle.read', ...).
 */
async function countNativeCalls<T>(fn: () => Promise<T>): Promise<{ result: T; calls: Map<string, number> }> {
  const calls = new Map<string, number>();
  const bump = (name: string) => calls.set(name, (calls.get(name) ?? 0) + 1);
  const restore: (() => void)[] = [];
  const addon = native() as unknown as Record<string, unknown>;
  for (const [k, f] of Object.entries(addon)) {
    if (typeof f !== 'function' || k === 'TensorHandle') continue;
    addon[k] = function (this: unknown, ...args: unknown[]) {
      bump(`addon.${k}`);
      return (f as (...a: unknown[]) => unknown).apply(this, args);
    };
    restore.push(() => void (addon[k] = f));
  }
  const proto = sf.Tensor.prototype as unknown as Record<string, unknown>;
  const wrapMember = (member: string, to: string, getter: boolean) => {
    const d = Object.getOwnPropertyDescriptor(proto, member);
    if (!d || (getter ? !d.get : typeof d.value !== 'function')) throw new Error(`bench generate: Tensor.${member} is not a ${getter ? 'getter' : 'method'} any more: update the call counter`);
    const orig = (getter ? d.get : d.value) as (...a: unknown[]) => unknown;
    const counted = function (this: unknown, ...args: unknown[]) {
      bump(`handle.${to}`);
      return orig.apply(this, args);
    };
    Object.defineProperty(proto, member, getter ? { ...d, get: counted } : { ...d, value: counted });
    restore.push(() => Object.defineProperty(proto, member, d));
  };
  try {
    for (const [m, to] of Object.entries(TENSOR_METHODS)) wrapMember(m, to, false);
    for (const [m, to] of Object.entries(TENSOR_GETTERS)) wrapMember(m, to, true);
    const result = await fn();
    return { result, calls };
  } finally {
    for (const r of restore.reverse()) r();
  }
}

const totalCalls = (calls: Map<string, number>) => [...calls.values()].reduce((a, b) => a + b, 0);

/** The most frequent calls, per `per` (a token, or a call). */
function topCalls(calls: Map<string, number>, per: number, n = 8): string {
  return [...calls.entries()].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, v]) => `${k} ${(v / per).toFixed(1)}`).join(', ');
}

// ---- event-loop lag ---------------------------------------------------------------------------------------------------

/** Runs fn with a 1 ms interval timer; returns fn's result and each interval's lag (actual - 1 ms, >= 0). */
async function withLag<T>(fn: () => Promise<T>): Promise<{ result: T; lags: number[] }> {
  const lags: number[] = [];
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    lags.push(Math.max(0, now - last - 1));
    last = now;
  }, 1);
  try {
    const result = await fn();
    await new Promise((r) => setTimeout(r, 2)); // lets the interval that spans the end of fn fire
    return { result, lags };
  } finally {
    clearInterval(timer);
  }
}

// ---- onnxruntime-node, installed on demand outside the project ----------------------------------------------------------

interface OrtTensor {
  data: Float32Array;
  dims: readonly number[];
}
interface Ort {
  InferenceSession: {
    create(path: string, options: Record<string, unknown>): Promise<{ run(feeds: Record<string, unknown>): Promise<Record<string, OrtTensor>>; release(): Promise<void> }>;
  };
  Tensor: new (type: 'int64', data: BigInt64Array, dims: number[]) => unknown;
}

type OrtFound = { ok: true; ort: Ort; version: string } | { ok: false; reason: string };

/** onnxruntime-node 1.31.x from ORT_DIR, installed there first (npm, --ignore-scripts: the CPU binary ships in the package) when absent. */
function loadOrt(): OrtFound {
  const installed = (): string | undefined => {
    try {
      const v = (createRequire(join(ORT_DIR, 'index.js'))('onnxruntime-node/package.json') as { version: string }).version;
      return v.startsWith(`${ORT_VERSION}.`) ? v : undefined;
    } catch {
      return undefined;
    }
  };
  let version = installed();
  if (!version) {
    console.log(`generate: installing onnxruntime-node@${ORT_VERSION} into ${ORT_DIR} (outside the project; about 300 MB, once)`);
    const r = spawnSync('npm', ['install', '--ignore-scripts', '--no-save', '--no-audit', '--no-fund', '--prefix', ORT_DIR, `onnxruntime-node@${ORT_VERSION}`],
      { stdio: ['ignore', 2, 2], timeout: 600_000 });
    version = installed();
    if (!version) return { ok: false, reason: `npm install of onnxruntime-node@${ORT_VERSION} into ${ORT_DIR} failed (${r.error?.message ?? `exit ${r.status}`})` };
  }
  try {
    return { ok: true, ort: createRequire(join(ORT_DIR, 'index.js'))('onnxruntime-node') as Ort, version };
  } catch (e) {
    return { ok: false, reason: `onnxruntime-node ${version} in ${ORT_DIR} does not load: ${(e as Error).message.split('\n')[0]}` };
  }
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

// ---- the suite --------------------------------------------------------------------------------------------------------

function positiveEnv(name: string, fallback: number, min = 1): number {
  const v = process.env[name] === undefined ? fallback : Number(process.env[name]);
  if (!(Number.isInteger(v) && v >= min)) throw new Error(`bench generate: ${name} must be an integer >= ${min}, got ${process.env[name]}`);
  return v;
}

export async function benchGenerate(): Promise<(GenRow | GenSharingRow)[]> {
  const threads = sf.getNumThreads();
  const cores = availableParallelism();
  const cpu = cpuModel();
  const only = process.env.SF_GEN_CONFIGS?.split(',').map((s) => s.trim()).filter(Boolean);
  for (const c of only ?? [])
    if (!GEN_CONFIGS[c] && c !== 'sharing') throw new Error(`bench generate: unknown config '${c}' in SF_GEN_CONFIGS; known: ${Object.keys(GEN_CONFIGS).join(', ')}, sharing`);
  const sharing = sharingFlag() || (only?.includes('sharing') ?? false);
  const configs = Object.keys(GEN_CONFIGS).filter((name) => (only ? only.includes(name) : !GEN_ON_REQUEST.has(name)));
  if (configs.length === 0) return benchSharing(positiveEnv('SF_GEN_RUNS', SHARING_RUNS)); // the sharing section alone: no references
  const shares = (process.env.SF_GEN_SHARES ?? 'none,all').split(',').map((s) => s.trim()).filter(Boolean);
  if (shares.length === 0) throw new Error('bench generate: SF_GEN_SHARES names no sharing plan');
  for (const s of shares) if (s !== 'none' && s !== 'all') throw new Error(`bench generate: SF_GEN_SHARES takes none and all, got '${s}'`);
  const runs = positiveEnv('SF_GEN_RUNS', 5);
  const bf16Runs = positiveEnv('SF_GEN_BF16_RUNS', 1, 0);

  console.log(`\ngenerate: ${cpu}, ${cores} cores, ${threads} threads (ours; PyTorch and onnxruntime get the same); 1-minute load average before: ${loadavg()[0].toFixed(2)}`);
  console.log(`generate: prefill B1 and B8 of ${PREFILL_T} tokens, greedy decode of ${NEW_TOKENS} tokens after ${PROMPT}; ${runs} timed runs after 1 warm-up (PyTorch bf16: ${bf16Runs})`);
  warnLoad('generate', 'before the suite', cores);
  const torch = findTorch(threads);
  if (torch.ok) {
    const p = torch.probe;
    console.log(`generate: reference PyTorch ${p.torch} (loaded ${(p.blas_libs as string[]).join(', ')} via ${torch.how}), ${p.threads} threads`);
  } else console.log(`generate: no PyTorch reference, and no onnxruntime one (its ONNX model is exported by PyTorch) — ${torch.reason}`);
  const ort: OrtFound = torch.ok ? loadOrt() : { ok: false, reason: 'no PyTorch to export the ONNX model' };
  if (ort.ok) console.log(`generate: reference onnxruntime-node ${ort.version} (${ORT_DIR}), prefill only`);
  else if (torch.ok) console.log(`generate: no onnxruntime reference — ${ort.reason}`);

  const rows: GenRow[] = [];
  let failed = false;
  const tmp = mkdtempSync(join(tmpdir(), 'sf-bench-gen-'));
  try {
    for (const name of configs) {
      const c = GEN_CONFIGS[name];
      // the inputs: a B8 batch of 128-token prompts (its first row is the B1 prompt), the decode prompt its first 16
      const ids8 = Array.from({ length: 8 }, (_, r) => Array.from({ length: PREFILL_T }, (_, i) => ((r * PREFILL_T + i) * 7919 + 13) % c.vocab));
      const prompt = ids8[0].slice(0, PROMPT);
      const inputsPath = join(tmp, 'inputs.json');
      writeFileSync(inputsPath, JSON.stringify({ prefill: ids8, prompt, new_tokens: NEW_TOKENS, capacity: c.maxSeq }));

      for (const share of shares as ('none' | 'all')[]) {
        const model = new sf.Decoder({ ...c, sharing: { strategy: share }, seed: 1 });
        model.eval();
        const ids8T = sf.tensor(Int32Array.from(ids8.flat()), [8, PREFILL_T]);
        const prefill1 = async () => {
          const s = new sf.DecodeSession(model, c.maxSeq);
          try {
            const l = s.prefill(ids8[0]);
            try {
              return (await l.data()) as Float32Array;
            } finally {
              l.dispose();
            }
          } finally {
            s.dispose();
          }
        };
        const prefill8 = async () => {
          const l = sf.noGrad(() => model.forward(ids8T));
          try {
            return (await l.data()) as Float32Array;
          } finally {
            l.dispose();
          }
        };
        const decode = () => model.generate(prompt, { maxNewTokens: NEW_TOKENS, temperature: 0 });

        // ours, timed
        const ms1 = await timeRuns(prefill1, runs);
        const ms8 = await timeRuns(prefill8, runs);
        const tokens = await decode(); // the warm-up run
        const msDec: number[] = [];
        const lags: number[] = [];
        for (let i = 0; i < runs; i++) {
          const r = await withLag(async () => {
            const t0 = performance.now();
            const out = await decode();
            msDec.push(performance.now() - t0);
            return out;
          });
          lags.push(...r.lags);
          if (r.result.join() !== tokens.join()) throw new Error(`bench generate: ${name}/${share}: a timed greedy run gave other tokens than the first`);
        }
        // ours, counted (untimed)
        const c1 = await countNativeCalls(prefill1);
        const c8 = await countNativeCalls(prefill8);
        const cDec = await countNativeCalls(decode);
        const logits1 = c1.result, logits8 = c8.result;
        console.log(`  ${name}/${share}: addon calls per decoded token ${(totalCalls(cDec.calls) / NEW_TOKENS).toFixed(1)} (${topCalls(cDec.calls, NEW_TOKENS)}); ` +
          `per B1 prefill ${totalCalls(c1.calls)}, per B8 prefill ${totalCalls(c8.calls)}`);

        const m: Measurement[] = [
          { batch: 1, prompt: PREFILL_T, newTokens: 0, ms: median(ms1), calls: totalCalls(c1.calls), refs: [] },
          { batch: 8, prompt: PREFILL_T, newTokens: 0, ms: median(ms8), calls: totalCalls(c8.calls), refs: [] },
          { batch: 1, prompt: PROMPT, newTokens: NEW_TOKENS, ms: median(msDec), calls: totalCalls(cDec.calls) / NEW_TOKENS, lagP99: quantile(lags, 0.99), refs: [] },
        ];

        // PyTorch fp32 / bf16, and the ONNX export
        let onnxPath: string | undefined;
        if (torch.ok) {
          const weights = join(tmp, `${name}-${share}.safetensors`);
          const logitsPath = join(tmp, `${name}-${share}.logits`);
          const onnx = join(tmp, `${name}-${share}.onnx`);
          model.save(weights);
          const cfg = JSON.stringify({ ...c, seq: c.maxSeq, share, threads });
          const args = [DECODE_REF, '--weights', weights, '--config', cfg, '--inputs', inputsPath, '--runs', String(runs), '--bf16-runs', String(bf16Runs),
            '--dtypes', bf16Runs > 0 ? 'fp32,bf16' : 'fp32', '--logits', logitsPath, ...(ort.ok ? ['--onnx', onnx] : [])];
          const r = spawnSync(PY, args, { env: torch.env, encoding: 'utf8', timeout: 3_600_000, maxBuffer: 64 << 20 });
          try {
            const j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '');
            if (j.parameters !== model.numParameters) throw new Error(`PyTorch model has ${j.parameters} parameters, ours ${model.numParameters}`);
            if (!(j.blas_libs as string[]).some((l) => /openblas/i.test(l))) throw new Error(`PyTorch ran on ${JSON.stringify(j.blas_libs)}, not OpenBLAS`);
            const raw = readFileSync(logitsPath);
            const ref8 = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
            const d8 = maxAbsDiff(logits8, ref8);
            console.log(`  ${name}/${share}: B8 prefill logits, max |ours - PyTorch fp32| = ${d8.toExponential(2)}`);
            for (const dtype of ['fp32', 'bf16'] as const) {
              const res = j[dtype];
              if (!res) continue;
              const ref = `PyTorch ${dtype}`;
              if (res.error) {
                console.log(`  ${name}/${share}: ${ref} failed: ${res.error}`);
                continue;
              }
              const theirs = res.tokens as number[];
              const margins = res.margins as number[];
              const same = tokens.filter((t, i) => t === theirs[i]).length;
              const first = tokens.findIndex((t, i) => t !== theirs[i]);
              let check = `greedy tokens ${same}/${NEW_TOKENS} equal ours`;
              if (first >= 0) check += `; first difference at token ${first} (ours ${tokens[first]}, theirs ${theirs[first]}, their top-1/top-2 margin ${margins[first].toExponential(2)})`;
              if (dtype === 'fp32') {
                if (first >= 0) {
                  check = `MISMATCH: ${check}`;
                  if (margins[first] >= TIE_MARGIN) failed = true;
                }
                console.log(`  ${name}/${share}: ${first >= 0 ? 'MISMATCH: ' : ''}PyTorch fp32 ${check.replace(/^MISMATCH: /, '')} (smallest margin of theirs ${Math.min(...margins).toExponential(2)})`);
              } else console.log(`  ${name}/${share}: PyTorch bf16 ${check}`);
              m[0].refs.push({ ref, ms: median(res.prefill_b1_ms) });
              m[1].refs.push({ ref, ms: median(res.prefill_b8_ms), check: dtype === 'fp32' ? `B8 logits max abs diff ${d8.toExponential(2)}` : undefined });
              m[2].refs.push({ ref, ms: median(res.decode_ms), check });
            }
            if (j.onnx) onnxPath = j.onnx;
            else if (ort.ok) console.log(`  ${name}/${share}: no onnxruntime rows: the ONNX export failed: ${j.onnx_error}`);
          } catch (e) {
            console.log(`  ${name}/${share}: no PyTorch rows: ${(e as Error).message}; ${(r.stderr || r.error?.message || '').trim().split('\n').pop() ?? ''}`);
          }
        }

        // onnxruntime-node, prefill
        if (ort.ok && onnxPath && existsSync(onnxPath)) {
          try {
            const session = await ort.ort.InferenceSession.create(onnxPath, {
              intraOpNumThreads: threads, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
            });
            const refName = `onnxruntime-node ${ort.version}`;
            for (const [i, B] of BATCHES.entries()) {
              const feeds = { ids: new ort.ort.Tensor('int64', BigInt64Array.from(ids8.slice(0, B).flat(), BigInt), [B, PREFILL_T]) };
              let out: OrtTensor | undefined;
              const ms = await timeRuns(async () => void (out = (await session.run(feeds)).logits), runs);
              const V = c.vocab;
              const d = B === 1 ? maxAbsDiff(logits1, out!.data.subarray((PREFILL_T - 1) * V, PREFILL_T * V)) : maxAbsDiff(logits8, out!.data);
              const check = `${B === 1 ? 'last-position ' : ''}logits max abs diff ${d.toExponential(2)}`;
              console.log(`  ${name}/${share}: onnxruntime B${B} prefill ${check}`);
              m[i].refs.push({ ref: refName, ms: median(ms), check });
            }
            await session.release();
          } catch (e) {
            console.log(`  ${name}/${share}: no onnxruntime rows: ${(e as Error).message.split('\n')[0]}`);
          }
        }
        ids8T.dispose();
        model.store.dispose();

        const load = loadavg()[0];
        for (const x of m) {
          const base = {
            suite: 'generate' as const, config: name, share, batch: x.batch, prompt: x.prompt, new_tokens: x.newTokens, ms: x.ms,
            tokens_per_s: (x.newTokens || x.batch * x.prompt) / (x.ms / 1000), calls_per_token: x.calls,
          };
          const machine = { cpu, threads, loadavg: load };
          const lag = x.lagP99 === undefined ? {} : { lag_p99_ms: x.lagP99 };
          if (x.refs.length === 0) rows.push({ ...base, ref: 'none', ref_ms: null, ratio: null, ...lag, ...machine });
          for (const r of x.refs)
            rows.push({ ...base, ref: r.ref, ref_ms: r.ms, ratio: r.ms / x.ms, ...lag, ...(r.check ? { check: r.check } : {}), ...machine });
        }
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  console.log('\ngenerate');
  console.table(rows.map((r) => ({
    config: r.config, share: r.share, B: r.batch, prompt: r.prompt, new: r.new_tokens, ms: r.ms.toFixed(1), 'tokens/s': Math.round(r.tokens_per_s),
    'calls/tok': r.calls_per_token.toFixed(1), 'lag p99 ms': r.lag_p99_ms?.toFixed(2), ref: r.ref, 'ref ms': r.ref_ms?.toFixed(1), ratio: r.ratio?.toFixed(2),
    load: r.loadavg.toFixed(1),
  })));
  console.log('generate: ratio = ref ms / our ms (above 1: we are faster); decode ms and tokens/s include the 16-token prompt\'s prefill; ' +
    'prefill calls/tok are calls per prefill');
  console.log(`generate: 1-minute load average after: ${loadavg()[0].toFixed(2)}`);
  warnLoad('generate', 'after the suite', cores);
  if (failed) {
    console.error('generate: PyTorch fp32 greedy tokens differ from ours where PyTorch\'s top-1 / top-2 margin is not a near-tie (see MISMATCH above)');
    process.exitCode = 1;
  }
  return sharing ? [...rows, ...(await benchSharing(positiveEnv('SF_GEN_RUNS', SHARING_RUNS)))] : rows;
}

// ---- the sharing section: decode tokens/s of sharing 'all' against 'none', and the bytes one step reads ---------------

/** The section's models: d 256, 512, 1024 (SF_GEN_SHARING_DIMS), 12 layers, heads d/64, dFF 4d, vocab 256. */
const SHARING_DIMS = [256, 512, 1024];
const SHARING_LAYERS = 12;
const SHARING_VOCAB = 256;
/** New tokens per greedy decode: 64 keeps the section well under 3 minutes on 2 cores, loaded (d 1024 'none' streams 600 MB a step). */
const SHARING_NEW_TOKENS = 64;
/** Timed runs per model unless SF_GEN_RUNS says otherwise. */
const SHARING_RUNS = 3;

export interface GenSharingRow {
  suite: 'generate';
  config: 'sharing';
  share: 'none' | 'all';
  d: number;
  layers: number;
  /** Prompt tokens (16). */
  prompt: number;
  new_tokens: number;
  /** Median ms of model.generate (greedy), the prompt's prefill included. */
  ms: number;
  tokens_per_s: number;
  /** Weight bytes a decode step reads: every applied layer's blocks (shared ones once per layer), final norm, head, embedding rows. */
  weight_bytes_per_step: number;
  /** The same with every block counted once: what must stay in cache for a step to read no weight from memory. */
  unique_weight_bytes_per_step: number;
  /** K and V bytes read by a step at the mean number of keys of the decode (prompt + new_tokens / 2). */
  kv_bytes_per_step: number;
  /** tokens_per_s / the 'none' row's at the same d (1 for 'none'). */
  speedup_vs_none: number;
  cpu: string;
  threads: number;
  /** The 1-minute load average after the d's rows. */
  loadavg: number;
  l2_bytes: number | null;
  l3_bytes: number | null;
}

/** The bytes one decode step reads, from the model's modules (checked against its store and its accounting). */
interface StepBytes {
  /** Weights touched: per applied layer its attention and FFN blocks' parameters, plus `io`. */
  weights: number;
  /** Weights with each block counted once, plus `io`. */
  unique: number;
  /** Final LayerNorm, head (the whole token embedding when tied), one token-embedding row and one position row. */
  io: number;
  /** K and V read at the mean number of keys, every applied layer that holds a cache. */
  kv: number;
  meanKeys: number;
}

function decodeStepBytes(m: sf.Decoder, prompt: number, newTokens: number): StepBytes {
  const perParam = m.store.bytes / m.store.numel; // 4: fp32
  const bytesOf = (mod: { parameters(): { size: number }[] }) => mod.parameters().reduce((a, p) => a + p.size, 0) * perParam;
  const attn = m.attn.map(bytesOf), ffn = m.ffn.map(bytesOf);
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
  const acc = m.accounting();
  const { vocab, maxSeq } = m.config;
  const tok = bytesOf(m.tok), pos = bytesOf(m.pos), lnF = bytesOf(m.lnF), head = m.head ? bytesOf(m.head) : 0;
  // the modules hold every unique parameter once, as the store and the plan's accounting count them
  if (sum(attn) + sum(ffn) + tok + pos + lnF + head !== m.store.bytes)
    throw new Error(`bench generate: the model's modules hold ${sum(attn) + sum(ffn) + tok + pos + lnF + head} parameter bytes, its store ${m.store.bytes}: update decodeStepBytes`);
  if (sum(attn) + sum(ffn) !== (acc.breakdown.attention + acc.breakdown.ffn) * perParam)
    throw new Error(`bench generate: the blocks hold ${sum(attn) + sum(ffn)} bytes, the accounting says ${(acc.breakdown.attention + acc.breakdown.ffn) * perParam}`);
  const io = lnF + (m.head ? head + tok / vocab : tok) + pos / maxSeq;
  const weights = sum(acc.perLayer.map((l) => attn[l.attention] + ffn[l.ffn])) + io;
  const unique = sum([...new Set(acc.perLayer.map((l) => l.attention))].map((b) => attn[b])) + sum([...new Set(acc.perLayer.map((l) => l.ffn))].map((b) => ffn[b])) + io;
  // generate() feeds the prompt in one pass, then newTokens - 1 steps at positions prompt .. prompt + newTokens - 2,
  // the step at position t attending to t + 1 keys: prompt + newTokens / 2 on average
  const meanKeys = prompt + newTokens / 2;
  return { weights, unique, io, kv: acc.kvCacheBytesPerToken * meanKeys, meanKeys };
}

/** SF_GEN_SHARING: '1' runs the sharing section, '0' (or unset) does not. */
function sharingFlag(): boolean {
  const v = process.env.SF_GEN_SHARING;
  if (v === undefined || v === '' || v === '0') return false;
  if (v === '1') return true;
  throw new Error(`bench generate: SF_GEN_SHARING must be 0 or 1, got '${v}'`);
}

/**
 * Greedy decode (model.generate, temperature 0, replayed steps) of SHARING_NEW_TOKENS after a 16-token prompt with
 * sharing 'none' and 'all' at each d: median ms of `runs` runs after one warm-up each, the two plans' runs
 * interleaved (their order alternating) so that a change of load hits both; and the bytes a step reads.
 */
async function benchSharing(runs: number): Promise<GenSharingRow[]> {
  const threads = sf.getNumThreads();
  const cores = availableParallelism();
  const cpu = cpuModel();
  const caches = cpuCaches();
  const l2 = cacheBytes(caches, 2), l3 = cacheBytes(caches, 3);
  const dims = (process.env.SF_GEN_SHARING_DIMS ?? SHARING_DIMS.join(',')).split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  if (dims.length === 0 || dims.some((d) => !(Number.isInteger(d) && d >= 64 && d % 64 === 0)))
    throw new Error(`bench generate: SF_GEN_SHARING_DIMS must list multiples of 64, got '${process.env.SF_GEN_SHARING_DIMS}'`);
  const N = SHARING_NEW_TOKENS;
  const cacheText = caches.map((c) => `L${c.level}${c.type === 'Data' ? 'd' : c.type === 'Instruction' ? 'i' : ''} ${formatBytes(c.bytes)} (cpus ${c.sharedWith})`).join(', ') || 'not described by sysfs';
  console.log(`\ngenerate/sharing: ${cpu}, ${cores} cores, ${threads} threads; CPU 0's caches: ${cacheText}; 1-minute load average before: ${loadavg()[0].toFixed(2)}`);
  console.log(`generate/sharing: greedy decode of ${N} tokens after ${PROMPT} (model.generate, prompt prefill included), sharing none vs all, ` +
    `d ${dims.join('/')}, ${SHARING_LAYERS} layers, heads d/64, dFF 4d, vocab ${SHARING_VOCAB}; median of ${runs} runs after 1 warm-up, the plans interleaved`);
  warnLoad('generate/sharing', 'before the section', cores);

  const rows: GenSharingRow[] = [];
  const prompt = Array.from({ length: PROMPT }, (_, i) => (i * 7919 + 13) % SHARING_VOCAB);
  for (const d of dims) {
    const cfg = { vocab: SHARING_VOCAB, dModel: d, heads: d / 64, dFF: 4 * d, layers: SHARING_LAYERS, maxSeq: PROMPT + N };
    const shares = ['none', 'all'] as const;
    const models = shares.map((share) => new sf.Decoder({ ...cfg, sharing: { strategy: share }, seed: 1 }));
    try {
      for (const m of models) m.eval();
      const decode = (m: sf.Decoder) => m.generate(prompt, { maxNewTokens: N, temperature: 0 });
      const first: number[][] = [];
      for (const m of models) first.push(await decode(m)); // the warm-ups
      const ms: number[][] = shares.map(() => []);
      for (let r = 0; r < runs; r++) {
        for (const i of r % 2 ? [1, 0] : [0, 1]) {
          const t0 = performance.now();
          const out = await decode(models[i]);
          ms[i].push(performance.now() - t0);
          if (out.join() !== first[i].join()) throw new Error(`bench generate: sharing d ${d}/${shares[i]}: a timed greedy run gave other tokens than the warm-up`);
        }
      }
      const load = loadavg()[0];
      const med = ms.map(median);
      shares.forEach((share, i) => {
        const b = decodeStepBytes(models[i], PROMPT, N);
        console.log(`  sharing d ${d}/${share}: per step ${formatBytes(b.weights)} of weights touched (${formatBytes(b.unique)} unique; final norm, head and ` +
          `embedding rows ${formatBytes(b.io)} of both), K/V ${formatBytes(b.kv)} at ${b.meanKeys} keys; runs ${ms[i].map((x) => x.toFixed(0)).join(', ')} ms`);
        rows.push({
          suite: 'generate', config: 'sharing', share, d, layers: SHARING_LAYERS, prompt: PROMPT, new_tokens: N, ms: med[i], tokens_per_s: N / (med[i] / 1000),
          weight_bytes_per_step: b.weights, unique_weight_bytes_per_step: b.unique, kv_bytes_per_step: b.kv, speedup_vs_none: med[0] / med[i],
          cpu, threads, loadavg: load, l2_bytes: l2, l3_bytes: l3,
        });
      });
    } finally {
      for (const m of models) m.store.dispose();
    }
  }

  const fits = (n: number) => (l2 !== null && n <= l2 ? 'L2' : l3 !== null && n <= l3 ? 'L3' : 'no');
  console.log(`\ngenerate/sharing: ${cpu}, ${threads} threads, L2 ${l2 === null ? '?' : formatBytes(l2)}, L3 ${l3 === null ? '?' : formatBytes(l3)}`);
  console.table(rows.map((r) => ({
    d: r.d, share: r.share, layers: r.layers, new: r.new_tokens, ms: r.ms.toFixed(1), 'tokens/s': r.tokens_per_s.toFixed(1),
    'weights MiB/step': (r.weight_bytes_per_step / 2 ** 20).toFixed(2), 'unique MiB/step': (r.unique_weight_bytes_per_step / 2 ** 20).toFixed(2),
    'KV MiB/step': (r.kv_bytes_per_step / 2 ** 20).toFixed(2), 'unique fits': fits(r.unique_weight_bytes_per_step),
    'GB/s touched': ((r.weight_bytes_per_step + r.kv_bytes_per_step) / 1e9 / (r.ms / 1000 / r.new_tokens)).toFixed(1),
    'speedup vs none': r.speedup_vs_none.toFixed(2), load: r.loadavg.toFixed(2),
  })));
  console.log('generate/sharing: ms and tokens/s include the prompt\'s prefill (one pass); weights: fp32 parameters of every applied layer\'s blocks, ' +
    'the final norm, the head (tied: the whole token embedding) and one token and one position row; unique: each block once; ' +
    '"unique fits": the smallest cache of CPU 0 that holds the unique bytes (L2 per core); GB/s touched = (weights + KV) per step / (ms / new tokens)');
  console.log(`generate/sharing: 1-minute load average after: ${loadavg()[0].toFixed(2)}`);
  warnLoad('generate/sharing', 'after the section', cores);
  return rows;
}
