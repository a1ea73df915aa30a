// distributed-worker.ts — one rank of a row of `npm run bench -- distributed` (scripts/bench-distributed.ts): trains
// a benchmark model (scripts/bench/common.ts) with the Trainer for --warmup + --steps optimizer steps on synthetic
// tokens and writes, from rank 0, a JSON object to --out: the median ms per step of the timed steps, the median ms
// this rank spent in collectives per step (StepInfo.comm.ms), the flat-buffer bytes per step (trainer.commPlan), the
// unique parameters, and every timed step.
//
//   mpirun -np 2 --oversubscribe --bind-to none node --import tsx scripts/bench/distributed-worker.ts \
//     --config small --share all --zero 0 [--overlap] --threads 1 --steps 5 --warmup 2 --world 2 --out FILE
//   node --import tsx scripts/bench/distributed-worker.ts --single --config small --share all --threads 2 ... (world 1)
//
// --single: one plain process, no distributed option (the world-1 row). Otherwise the Trainer runs with
// distributed: { zero, overlap } (--overlap: plain data parallel's all-reduce in per-layer buckets started during
// backward) and the script checks, on every rank, that the world size is --world and that the bytes per
// step are 4 × unique parameters (8 × with ZeRO-1: reduce-scatter + all-gather) in trainer.commPlan and in every
// StepInfo.comm; any mismatch throws, which exits non-zero and aborts the job (the bench then fails, naming it).
// Errors are printed and also written to --out's name + `.error-rank<R>` before the script exits: mpirun can end the
// job before it has forwarded a failing rank's stderr, and the file is read by the bench either way.
// Trainer settings: lr 1e-4 constant, AdamW (0.9, 0.99, weight decay 0.1), clipping at global norm 1 (the Trainer's
// default; a real training step, so distributed runs include the norm's collective).
import { writeFileSync } from 'node:fs';
import { Decoder, TokenDataset, Trainer, setNumThreads, getNumThreads, distributed as dist } from '../../lib/index.ts';
import { TRAIN_CONFIGS, median } from './common.ts';

const args = process.argv.slice(2);
/** This process's rank as the launcher tells it (Open MPI, MPICH/PMI), for the error file before MPI is up. */
const launcherRank = process.env.OMPI_COMM_WORLD_RANK ?? process.env.PMI_RANK ?? '0';

async function main(): Promise<void> {
  const opt = (name: string, def?: string): string => {
    const i = args.indexOf(`--${name}`);
    const v = i >= 0 ? args[i + 1] : def;
    if (v === undefined) throw new Error(`distributed-worker: --${name} is required`);
    return v;
  };
  const int = (name: string, def?: string, min = 1): number => {
    const v = Number(opt(name, def));
    if (!Number.isInteger(v) || v < min) throw new Error(`distributed-worker: --${name} must be an integer >= ${min}, got ${opt(name, def)}`);
    return v;
  };
  const single = args.includes('--single');
  const configName = opt('config', 'small');
  const c = TRAIN_CONFIGS[configName];
  if (!c) throw new Error(`distributed-worker: unknown --config '${configName}'; known: ${Object.keys(TRAIN_CONFIGS).join(', ')}`);
  const share = opt('share', 'all');
  if (share !== 'all' && share !== 'none') throw new Error(`distributed-worker: --share takes all or none, got '${share}'`);
  const zero = int('zero', '0', 0);
  if (zero !== 0 && zero !== 1) throw new Error(`distributed-worker: --zero takes 0 or 1, got ${zero}`);
  const overlap = args.includes('--overlap');
  if (overlap && (single || zero)) throw new Error('distributed-worker: --overlap is for plain data parallel (not --single, not --zero 1)');
  const threads = int('threads');
  const steps = int('steps', '5');
  const warmup = int('warmup', '2', 0);
  const expectedWorld = single ? 1 : int('world');
  const out = opt('out');

  setNumThreads(threads);

  // Synthetic tokens (a fixed LCG stream over the whole vocabulary): the step time does not depend on the text.
  const tokens = new Int32Array(1 << 18);
  let x = 12345;
  for (let i = 0; i < tokens.length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    tokens[i] = (x >>> 8) % c.vocab;
  }
  const data = new TokenDataset(tokens, c.vocab);
  const model = new Decoder({ vocab: c.vocab, dModel: c.dModel, heads: c.heads, dFF: c.dFF, layers: c.layers, maxSeq: c.seq, sharing: { strategy: share }, seed: 1 });
  const trainer = new Trainer(model, data, {
    steps: warmup + steps, batchSize: c.batch, seqLen: c.seq, lr: 1e-4, schedule: 'constant', beta1: 0.9, beta2: 0.99, weightDecay: 0.1, seed: 1,
    ...(single ? {} : { distributed: { zero: zero as 0 | 1, overlap } }),
  });

  const unique = model.store.numel;
  const info = single ? null : dist.info();
  const rank = info?.rank ?? 0;
  const world = info?.worldSize ?? 1;
  const fail = (what: string): never => {
    throw new Error(`distributed-worker (rank ${rank} of ${world}, ${configName}/${share}, zero ${zero}${overlap ? ', overlap' : ''}): ${what}`);
  };
  if (world !== expectedWorld) fail(`the job has ${world} ranks, the bench asked for ${expectedWorld}`);
  const expectedBytes = single ? 0 : (zero ? 8 : 4) * unique;
  const plan = trainer.commPlan;
  if (!single && plan?.bytesPerStep !== expectedBytes)
    fail(`trainer.commPlan.bytesPerStep is ${plan?.bytesPerStep}, expected ${expectedBytes} (${zero ? 8 : 4} x ${unique} unique parameters)`);

  const stepsMs: number[] = [], commMs: number[] = [];
  let t0 = performance.now();
  for await (const s of trainer.steps()) {
    const t = performance.now();
    if (!single) {
      if (!s.comm) fail(`step ${s.step} reported no comm`);
      else if (s.comm.bytes !== expectedBytes) fail(`step ${s.step} reported ${s.comm.bytes} bytes, expected ${expectedBytes}`);
      else if (s.comm.world !== world) fail(`step ${s.step} reported world ${s.comm.world}, expected ${world}`);
    }
    if (!Number.isFinite(s.loss)) fail(`step ${s.step} has loss ${s.loss}`);
    if (s.step > warmup) {
      stepsMs.push(t - t0);
      if (s.comm) commMs.push(s.comm.ms);
    }
    t0 = t;
  }
  if (stepsMs.length !== steps) fail(`timed ${stepsMs.length} steps, expected ${steps}`);
  if (rank === 0) {
    writeFileSync(out, JSON.stringify({
      config: configName, share, world, zero: single ? 0 : zero, overlap, threads_per_rank: getNumThreads(),
      ms_per_step: median(stepsMs), comm_ms: single ? 0 : median(commMs), bytes_per_step: expectedBytes, unique_params: unique,
      tokens_per_step: c.batch * c.seq * world, steps_ms: stepsMs, comm_ms_steps: commMs,
      collectives: trainer.commPlan?.collectives.length ?? 0, hook_starts: overlap ? trainer.dp!.hookStarts : 0,
      mpi_library: info ? dist.info()?.library : undefined,
    }));
  }
  trainer.dispose();
  model.store.dispose();
}

try {
  await main();
} catch (e) {
  const msg = e instanceof Error ? (e.stack ?? e.message) : String(e);
  const i = args.indexOf('--out');
  if (i >= 0 && args[i + 1]) {
    try {
      writeFileSync(`${args[i + 1]}.error-rank${launcherRank}`, msg + '\n');
    } catch {}
  }
  process.stderr.write(`${msg}\n`);
  process.exit(1);
}
