// Distributed training (issue 16; docs/distributed.md): collectives, bit-exact data-parallel training against one
// process that accumulates the same micro-batches, ZeRO-1, checkpoints resumed at another world size, faults (a rank
// killed, ranks that disagree, a failed input), the process without MPI, bad arguments, and NCCL on GPUs.
//
// Every job runs under `mpirun --oversubscribe` (test/helpers/mpi.ts) with a wall-clock limit, in a worker script of
// test/distributed/: init() in the ava process would tie MPI to it. Without mpirun, or as root without Open MPI's
// OMPI_ALLOW_RUN_AS_ROOT* variables, the MPI tests are skipped and the reason is printed — unless SF_REQUIRE_MPI=1
// (CI, .ci/run), which makes them fail instead.
import anyTest, { type ExecutionContext } from 'ava';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backends } from '../lib/index.ts';
import { mpirun, node, mpiUnavailable, mpiRequired, type JobResult } from './helpers/mpi.ts';

const noMpi = mpiUnavailable();
if (noMpi)
  console.log(mpiRequired
    ? `# test/distributed.test.ts: SF_REQUIRE_MPI=1 but MPI jobs cannot run here: ${noMpi} (the MPI tests fail)`
    : `# test/distributed.test.ts: the MPI tests are skipped: ${noMpi}`);
/** The tests that need mpirun: skipped (the reason printed above) when MPI cannot run, unless SF_REQUIRE_MPI=1. */
const mpiTest = noMpi && !mpiRequired ? anyTest.serial.skip : anyTest.serial;
/** In an MPI test: false (after failing it) when MPI cannot run and SF_REQUIRE_MPI=1 asks for it. */
function mpiReady(t: ExecutionContext): boolean {
  if (!noMpi) return true;
  t.fail(`SF_REQUIRE_MPI=1 but MPI jobs cannot run here: ${noMpi}`);
  return false;
}

const dir = mkdtempSync(join(tmpdir(), 'sf-dist-'));
anyTest.after.always(() => rmSync(dir, { recursive: true, force: true }));

const COLL = 'test/distributed/collectives-worker.ts';
const TRAIN = 'test/distributed/train-worker.ts';
const JOB_MS = 60_000;

const describeJob = (j: JobResult) =>
  `exit ${j.code}${j.signal ? ` (${j.signal})` : ''}${j.timedOut ? ', timed out' : ''} after ${Math.round(j.ms)} ms\n--- stdout\n${j.out.slice(-3000)}\n--- stderr\n${j.err.slice(-3000)}`;

/** The RESULT lines of a job, parsed, sorted by rank. */
function results<T>(j: JobResult): T[] {
  const rank = (x: T) => (x as { rank?: number }).rank ?? 0;
  return j.out.split('\n').filter((l) => l.startsWith('RESULT ')).map((l) => JSON.parse(l.slice(7)) as T)
    .sort((a, b) => rank(a) - rank(b));
}

interface TrainOut {
  losses: number[];
  values: number[];
  step: number;
  numel: number;
  world: number;
  comm: { world: number; bytes: number; ms: number }[];
  plan: { bytesPerStep: number; collectives: { kind: string; elements: number }[] } | null;
}

// One run of train-worker.ts per distinct command (np 0: one plain process), shared by the tests that need it.
const runs = new Map<string, Promise<TrainOut>>();
let runCount = 0;
function train(np: number, args: string[]): Promise<TrainOut> {
  const key = `${np} ${args.join(' ')}`;
  let p = runs.get(key);
  if (!p) {
    const out = join(dir, `run-${runCount++}.json`);
    const argv = [...args, '--out', out];
    p = (np === 0 ? node(TRAIN, argv, { timeoutMs: JOB_MS }) : mpirun(np, TRAIN, argv, { timeoutMs: JOB_MS })).then((j) => {
      if (j.code !== 0 || j.timedOut || !existsSync(out)) throw new Error(`train-worker ${key} failed: ${describeJob(j)}`);
      return JSON.parse(readFileSync(out, 'utf8')) as TrainOut;
    });
    runs.set(key, p);
  }
  return p;
}

const f32bits = (a: number[]) => new Uint32Array(Float32Array.from(a).buffer);
/** The first index where a and b differ as float32 bits (or in length), -1 when they are the same bits. */
function firstBitDiff(a: number[], b: number[]): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  const x = f32bits(a), y = f32bits(b);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return i;
  return -1;
}
function sameBits(t: ExecutionContext, what: string, a: TrainOut, b: TrainOut, lossesFrom = 0) {
  const bl = b.losses.slice(lossesFrom);
  const li = firstBitDiff(a.losses, bl);
  t.is(li, -1, `${what}: losses differ at ${li}: ${a.losses} vs ${bl}`);
  const vi = firstBitDiff(a.values, b.values);
  t.is(vi, -1, `${what}: parameter ${vi} differs: ${a.values[vi]} vs ${b.values[vi]}`);
  t.true(a.values.length > 0, `${what}: no parameters`);
}

// --- a. collectives ----------------------------------------------------------------------------------------------

interface CollResult {
  rank: number;
  info: { rank: number; worldSize: number; localRank: number; localSize: number; backend: string; library: string };
  checks: number;
  failures: string[];
  statsBefore: { seconds: number; bytes: number; calls: number };
  statsAfter: { seconds: number; bytes: number; calls: number };
  initialized: boolean;
}

for (const np of [2, 3]) {
  mpiTest(`collectives on ${np} ranks: allReduce sum/mean, reduceScatter of 10, allGather (in place too), broadcast from root 1 (float32, int32), barrier: the exact float32 sums in rank order; info() and stats()`, async (t) => {
    if (!mpiReady(t)) return;
    t.timeout(90_000);
    const j = await mpirun(np, COLL, ['--mode', 'collectives'], { timeoutMs: JOB_MS });
    t.is(j.code, 0, describeJob(j));
    const rs = results<CollResult>(j);
    t.deepEqual(rs.map((r) => r.rank), Array.from({ length: np }, (_, r) => r), describeJob(j));
    for (const r of rs) {
      t.deepEqual(r.failures, [], `rank ${r.rank}`);
      t.is(r.checks, 11, `rank ${r.rank} ran ${r.checks} checks`);
      t.is(r.info.rank, r.rank);
      t.is(r.info.worldSize, np);
      t.is(r.info.localSize, np); // one machine
      t.true(r.info.localRank >= 0 && r.info.localRank < np);
      t.is(r.info.backend, 'mpi');
      t.regex(r.info.library, /Open MPI|MPICH|MPI/);
      t.true(r.initialized);
      t.deepEqual(r.statsBefore, { seconds: 0, bytes: 0, calls: 0 }, `rank ${r.rank}: stats() before any collective`);
      t.true(r.statsAfter.calls >= 10, `rank ${r.rank}: ${r.statsAfter.calls} calls`);
      t.true(r.statsAfter.bytes > 0 && r.statsAfter.seconds > 0, JSON.stringify(r.statsAfter));
    }
    t.deepEqual(new Set(rs.map((r) => r.info.localRank)).size, np, 'local ranks are distinct');
  });
}

// --- b. bit-exact training ---------------------------------------------------------------------------------------

for (const share of ['all', 'none'] as const) {
  mpiTest(`training, sharing '${share}': 2 ranks give the losses and parameters of one process with accumulate 2, bit for bit; bytes per step = 4 x unique parameters`, async (t) => {
    if (!mpiReady(t)) return;
    t.timeout(120_000);
    const [two, one] = await Promise.all([
      train(2, ['--share', share]),
      train(0, ['--share', share, '--single', '--accumulate', '2']),
    ]);
    t.is(two.world, 2);
    t.is(two.losses.length, 4);
    sameBits(t, `np=2 vs accumulate 2 (share ${share})`, two, one);
    t.deepEqual(two.plan, { bytesPerStep: 4 * two.numel, collectives: [{ kind: 'allReduce', elements: two.numel }] });
    t.is(two.comm.length, 4);
    for (const c of two.comm) {
      t.is(c.world, 2);
      t.is(c.bytes, 4 * two.numel);
      t.true(c.ms >= 0);
    }
    t.is(one.plan, null);
  });
}

mpiTest("training: the shared decoder's bytes per step are the unshared one's times the ratio of their unique parameters", async (t) => {
  if (!mpiReady(t)) return;
  t.timeout(120_000);
  const [all, none] = await Promise.all([train(2, ['--share', 'all']), train(2, ['--share', 'none'])]);
  t.true(all.numel < none.numel, `${all.numel} vs ${none.numel}`);
  t.is(all.plan!.bytesPerStep * none.numel, none.plan!.bytesPerStep * all.numel);
  t.log(`bytes per step: shared ${all.plan!.bytesPerStep}, unshared ${none.plan!.bytesPerStep} (ratio ${(none.plan!.bytesPerStep / all.plan!.bytesPerStep).toFixed(3)})`);
});

for (const np of [2, 3]) {
  mpiTest(`training on ${np} ranks: ZeRO-1 gives the parameters and losses of plain data parallel, bit for bit; its bytes per step = 8 x unique parameters`, async (t) => {
    if (!mpiReady(t)) return;
    t.timeout(120_000);
    const [plain, zero] = await Promise.all([train(np, ['--share', 'all']), train(np, ['--share', 'all', '--zero', '1'])]);
    sameBits(t, `np=${np}: ZeRO-1 vs plain`, zero, plain);
    t.deepEqual(zero.plan, {
      bytesPerStep: 8 * zero.numel,
      collectives: [{ kind: 'reduceScatter', elements: zero.numel }, { kind: 'allGather', elements: zero.numel }],
    });
    for (const c of zero.comm) t.is(c.bytes, 8 * zero.numel);
  });
}

for (const np of [2, 3]) {
  mpiTest(`training on ${np} ranks with overlap (each layer's buckets reduced during backward): the parameters and losses of plain data parallel, bit for bit, for the shared and the unshared decoder`, async (t) => {
    if (!mpiReady(t)) return;
    t.timeout(150_000);
    for (const share of ['all', 'none'] as const) {
      const [plain, overlapped] = await Promise.all([train(np, ['--share', share]), train(np, ['--share', share, '--overlap'])]);
      sameBits(t, `np=${np}, share ${share}: overlap vs plain`, overlapped, plain);
      t.is(overlapped.plan!.bytesPerStep, 4 * overlapped.numel);
      t.is(overlapped.plan!.collectives.reduce((s, c) => s + c.elements, 0), overlapped.numel);
      t.true(overlapped.plan!.collectives.every((c) => c.kind === 'allReduce'));
      if (share === 'none') t.true(overlapped.plan!.collectives.length > 1, 'one bucket per layer at least');
    }
  });
}

mpiTest('training on 3 ranks gives the losses and parameters of one process with accumulate 3, bit for bit, shared and unshared', async (t) => {
  if (!mpiReady(t)) return;
  t.timeout(120_000);
  for (const share of ['all', 'none'] as const) {
    const [three, one] = await Promise.all([train(3, ['--share', share]), train(0, ['--share', share, '--single', '--accumulate', '3'])]);
    t.is(three.world, 3);
    sameBits(t, `np=3 vs accumulate 3 (share ${share})`, three, one);
    t.is(three.plan!.bytesPerStep, 4 * three.numel);
  }
});

// --- c. resume at another world size -----------------------------------------------------------------------------

mpiTest('a checkpoint written at 2 ranks (step 2 of 4) resumed in one process with accumulate 2: the uninterrupted 2-rank run, bit for bit', async (t) => {
  if (!mpiReady(t)) return;
  t.timeout(120_000);
  const ck = join(dir, 'np2-step2.safetensors');
  const [whole, first] = await Promise.all([train(2, ['--share', 'all']), train(2, ['--share', 'all', '--stop-at', '2', '--ckpt', ck])]);
  t.is(first.step, 2);
  t.is(firstBitDiff(first.losses, whole.losses.slice(0, 2)), -1, `the first half's losses ${first.losses} vs ${whole.losses}`);
  const resumed = await train(0, ['--share', 'all', '--single', '--accumulate', '2', '--resume', ck]);
  t.is(resumed.step, 4);
  t.is(resumed.losses.length, 2);
  sameBits(t, 'resumed at np=1 vs uninterrupted np=2', resumed, whole, 2);
});

mpiTest('a checkpoint written at 2 ranks resumed at 3 ranks: one process with accumulate 2 then resumed with accumulate 3, bit for bit', async (t) => {
  if (!mpiReady(t)) return;
  t.timeout(150_000);
  const ck2 = join(dir, 'np2-step2.safetensors'), ck1 = join(dir, 'single-step2.safetensors');
  await Promise.all([
    train(2, ['--share', 'all', '--stop-at', '2', '--ckpt', ck2]),
    train(0, ['--share', 'all', '--single', '--accumulate', '2', '--stop-at', '2', '--ckpt', ck1]),
  ]);
  const [three, one] = await Promise.all([
    train(3, ['--share', 'all', '--resume', ck2]),
    train(0, ['--share', 'all', '--single', '--accumulate', '3', '--resume', ck1]),
  ]);
  t.is(three.world, 3);
  t.is(three.losses.length, 2);
  sameBits(t, 'np=2 -> np=3 vs accumulate 2 -> accumulate 3', three, one);
});

mpiTest('a checkpoint of 2 ranks x accumulate 3 resumed at 3 ranks x accumulate 2 (the same 6 micro-batches per step): within 1e-6 of the uninterrupted run', async (t) => {
  if (!mpiReady(t)) return;
  t.timeout(150_000);
  const ck = join(dir, 'np2-acc3-step2.safetensors');
  const common = ['--share', 'all', '--lr', '1e-3'];
  const [whole] = await Promise.all([
    train(2, [...common, '--accumulate', '3']),
    train(2, [...common, '--accumulate', '3', '--stop-at', '2', '--ckpt', ck]),
  ]);
  const resumed = await train(3, [...common, '--accumulate', '2', '--resume', ck]);
  t.is(resumed.losses.length, 2);
  const tail = whole.losses.slice(2);
  const lossRel = Math.max(...tail.map((l, i) => Math.abs(resumed.losses[i] - l) / Math.abs(l)));
  let d = 0, a = 0;
  for (let i = 0; i < whole.values.length; i++) {
    d += (resumed.values[i] - whole.values[i]) ** 2;
    a += whole.values[i] ** 2;
  }
  const paramRel = Math.sqrt(d) / Math.sqrt(a);
  t.log(`np=2 x accumulate 3 -> np=3 x accumulate 2 at lr 1e-3: losses ${lossRel.toExponential(3)} relative (max), parameters ||a-b||/||a|| = ${paramRel.toExponential(3)}; bit-identical parameters: ${firstBitDiff(whole.values, resumed.values) === -1}`);
  t.is(resumed.values.length, whole.values.length);
  t.true(lossRel <= 1e-6, `losses differ by ${lossRel} relative`);
  t.true(paramRel <= 1e-6, `parameters differ by ${paramRel} relative`);
});

// --- d. faults ---------------------------------------------------------------------------------------------------

mpiTest('a rank killed with SIGKILL mid-training: mpirun exits non-zero within 30 s naming rank 1, and the last checkpoint loads', async (t) => {
  if (!mpiReady(t)) return;
  t.timeout(90_000);
  const ck = join(dir, 'killed.safetensors');
  const j = await mpirun(2, TRAIN, ['--share', 'all', '--steps', '200', '--ckpt', ck, '--ckpt-every', '1', '--die-rank', '1', '--die-step', '2'], { timeoutMs: 60_000 });
  t.false(j.timedOut, describeJob(j));
  t.not(j.code, 0, describeJob(j));
  t.true(j.ms < 30_000, `mpirun took ${Math.round(j.ms)} ms`);
  t.regex(j.out + j.err, /\brank 1\b/, describeJob(j)); // Open MPI: "mpirun noticed that process rank 1 ... exited on signal 9"
  t.true(existsSync(ck), 'a checkpoint was written');
  const load = await node('test/distributed/load-checkpoint.ts', [ck], { timeoutMs: JOB_MS });
  t.is(load.code, 0, describeJob(load));
  const r = JSON.parse(load.out.split('\n').find((l) => l.startsWith('RESULT '))!.slice(7)) as { step: number; numel: number; finite: boolean };
  t.true(r.step >= 1 && r.step < 200, `checkpoint of step ${r.step}`);
  t.true(r.numel > 0 && r.finite);
});

mpiTest('a rank that passes a tensor of another size to allReduce: every rank throws "the ranks disagree" naming both sizes and exits non-zero within 30 s', async (t) => {
  if (!mpiReady(t)) return;
  t.timeout(90_000);
  const j = await mpirun(2, COLL, ['--mode', 'mismatch'], { timeoutMs: 60_000 });
  t.false(j.timedOut, describeJob(j));
  t.not(j.code, 0, describeJob(j));
  t.true(j.ms < 30_000, `mpirun took ${Math.round(j.ms)} ms`);
  const errors = j.out.split('\n').filter((l) => l.startsWith('ERROR rank '));
  t.is(errors.length, 2, describeJob(j));
  for (const r of [0, 1]) {
    const line = errors.find((l) => l.startsWith(`ERROR rank ${r}:`)) ?? '';
    t.regex(line, new RegExp(`RangeError: .*allReduce: rank ${r} of 2: the ranks disagree`), line);
    t.regex(line, /rank 0 calls allReduce with 4 elements/, line);
    t.regex(line, /rank 1 calls allReduce with 5 elements/, line);
  }
});

mpiTest("a rank whose input to a collective failed on the stream: it names its own failure, the other rank says rank 1's input had failed; no hang, and the job goes on", async (t) => {
  if (!mpiReady(t)) return;
  t.timeout(90_000);
  const j = await mpirun(2, COLL, ['--mode', 'poison'], { timeoutMs: 60_000 });
  t.false(j.timedOut, describeJob(j));
  t.is(j.code, 0, describeJob(j));
  const rs = results<{ rank: number; error: { type: string; message: string } | null; after: number[] }>(j);
  t.is(rs.length, 2, describeJob(j));
  const [r0, r1] = rs;
  t.truthy(r1.error, 'rank 1 got an error');
  t.regex(r1.error!.message, /allReduce: rank 1 of 2: its input had failed/);
  t.regex(r1.error!.message, /embedding.*token id 9/);
  t.truthy(r0.error, 'rank 0 got an error');
  t.regex(r0.error!.message, /allReduce: rank 0 of 2: the input of rank 1 had failed/);
  for (const r of rs) t.deepEqual(r.after, [3, 3, 3], `rank ${r.rank}: a later allReduce`);
});

// --- e. without MPI ----------------------------------------------------------------------------------------------

anyTest.serial('without MPI (SHAREDFORMER_MPI_LIB pointing nowhere): init() and Trainer distributed throw what to install; backends() says why; plain training works', async (t) => {
  t.timeout(90_000);
  const j = await node(COLL, ['--mode', 'nompi'], { timeoutMs: JOB_MS, env: { SHAREDFORMER_MPI_LIB: '/nonexistent/libmpi.so.40' } });
  t.is(j.code, 0, describeJob(j));
  const [r] = results<{
    mpi: { found: boolean; reason?: string; library: string; initialized: boolean };
    initError: { type: string; message: string } | null;
    trainerError: { type: string; message: string } | null;
    losses: number[];
    initialized: boolean;
  }>(j);
  t.truthy(r, describeJob(j));
  t.false(r.mpi.found);
  t.false(r.mpi.initialized);
  t.regex(r.mpi.reason ?? '', /\/nonexistent\/libmpi\.so\.40/);
  for (const e of [r.initError, r.trainerError]) {
    t.truthy(e);
    t.is(e!.type, 'Error');
    t.regex(e!.message, /MPI is not available/);
    t.true(e!.message.includes('apt-get install openmpi-bin libopenmpi-dev'), e!.message);
  }
  t.is(r.trainerError!.message, r.initError!.message);
  t.false(r.initialized);
  t.is(r.losses.length, 2);
  t.true(r.losses.every(Number.isFinite), String(r.losses));
});

// --- g. bad arguments --------------------------------------------------------------------------------------------

mpiTest('bad arguments on 2 ranks: op max, a reduceScatter out of the wrong size, a broadcast root out of range, Trainer distributed {zero: 2} / {foo: 1} / "yes" / {overlap: "yes"}', async (t) => {
  if (!mpiReady(t)) return;
  t.timeout(90_000);
  const j = await mpirun(2, COLL, ['--mode', 'badargs'], { timeoutMs: JOB_MS });
  t.is(j.code, 0, describeJob(j));
  const rs = results<{ rank: number; errors: Record<string, { type: string; message: string } | null>; ok: number[] }>(j);
  t.is(rs.length, 2, describeJob(j));
  for (const { rank, errors: e, ok } of rs) {
    const is = (name: string, type: string, re: RegExp) => {
      t.truthy(e[name], `rank ${rank}: ${name} threw nothing`);
      t.is(e[name]?.type, type, `rank ${rank}: ${name}: ${e[name]?.message}`);
      t.regex(e[name]?.message ?? '', re, `rank ${rank}: ${name}`);
    };
    is('allReduce op max', 'TypeError', /allReduce: op must be 'sum' or 'mean', got "max"/);
    is('reduceScatter op max', 'TypeError', /reduceScatter: op must be 'sum' or 'mean', got "max"/);
    is('reduceScatter wrong out size', 'RangeError', /reduceScatter: rank \d of 2: out has 4 elements.*\b5\b/);
    is('allGather wrong in size', 'RangeError', /allGather: rank \d of 2: in has 7 elements; its shard of out \(10 elements\) has 5/);
    is('broadcast root out of range', 'RangeError', /broadcast: root must be between 0 and 1, got 2/);
    is('broadcast root negative', 'RangeError', /broadcast: root must be between 0 and 1, got -1/);
    is('Trainer distributed zero 2', 'RangeError', /Trainer: distributed\.zero must be 0 or 1.*got 2/);
    is('Trainer distributed foo 1', 'TypeError', /Trainer: distributed has an unknown key 'foo'/);
    is("Trainer distributed 'yes'", 'TypeError', /Trainer: distributed must be true, false or \{ zero\?: 0 \| 1, overlap\?: boolean \}, got "yes"/);
    is("Trainer distributed overlap 'yes'", 'TypeError', /Trainer: distributed\.overlap must be a boolean, got "yes"/);
    t.deepEqual(ok, [2, 2], `rank ${rank}: the job still works`);
  }
});

// --- f. NCCL -----------------------------------------------------------------------------------------------------

const be = backends();
const gpus = be.cuda.available ? be.cuda.devices.length : 0;
const ncclMissing = !be.cuda.available
  ? `CUDA is not available: ${be.cuda.reason ?? 'unknown reason'}`
  : !be.distributed.nccl.found
    ? `NCCL is not available: ${be.distributed.nccl.reason ?? 'libnccl.so.2 not found'}`
    : gpus < 2
      ? `2 GPUs are needed (one per rank), this machine has ${gpus}`
      : null;
if (ncclMissing) console.log(`# test/distributed.test.ts: the NCCL test is skipped: ${ncclMissing}`);
(ncclMissing ? anyTest.serial.skip : mpiTest)('NCCL all-reduce / reduce-scatter / all-gather of CUDA tensors equal the CPU (MPI) results', async (t) => {
  if (!mpiReady(t)) return;
  t.timeout(120_000);
  const j = await mpirun(2, COLL, ['--mode', 'nccl'], { timeoutMs: 90_000 });
  t.is(j.code, 0, describeJob(j));
  const rs = results<{ rank: number; world: number; device: string; failures: string[] }>(j);
  t.is(rs.length, 2, describeJob(j));
  for (const r of rs) t.deepEqual(r.failures, [], `rank ${r.rank} on ${r.device}`);
  t.not(rs[0].device, rs[1].device, 'one GPU per rank');
});
