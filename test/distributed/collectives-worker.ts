// collectives-worker.ts — one rank of the collective tests of test/distributed.test.ts. Each rank checks the
// collectives of lib/distributed against a naive expectation computed here in JS from rank-specific deterministic data
// (sums in rank order, each addition rounded to float32 with Math.fround, so the expectation is bit-exact), and prints
// one line `RESULT {json}` that the test parses. Run by `mpirun -np N node --import tsx
// test/distributed/collectives-worker.ts --mode MODE`; --mode nompi runs without mpirun.
//   --mode collectives   allReduce sum/mean, reduceScatter (n not divisible by the world), allGather in place and not,
//                        broadcast from root 1 (float32, int32), barrier, info(), stats(): RESULT {rank, failures, ...}
//   --mode mismatch      rank 1 passes a tensor one element longer to allReduce: every rank prints ERROR and exits 3
//   --mode poison        rank 1's input comes from an op that failed on the stream (an embedding with an id out of
//                        range): every rank prints RESULT {rank, error, after} (after: an allReduce that follows)
//   --mode badargs       bad arguments (op 'max', wrong reduceScatter size, broadcast root out of range, Trainer's
//                        distributed option): RESULT {rank, errors: {name: {type, message}}}
//   --mode nompi         (no mpirun; SHAREDFORMER_MPI_LIB pointing nowhere) what a process without MPI sees
//   --mode nccl          CUDA tensors (one GPU per rank, by localRank) through NCCL against CPU tensors through MPI
import { backends, full, kernels, synchronize, tensor, type Tensor } from '../../lib/index.ts';
import * as dist from '../../lib/distributed/index.ts';
import { Decoder } from '../../lib/models/decoder.ts';
import { CharTokenizer, TokenDataset } from '../../lib/data/index.ts';
import { Trainer } from '../../lib/train/trainer.ts';

const args = process.argv.slice(2);
const opt = (name: string, def?: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const mode = opt('mode', 'collectives')!;

const print = (o: unknown) => console.log(`RESULT ${JSON.stringify(o)}`);
const errorOf = (e: unknown) => ({ type: (e as Error)?.constructor?.name ?? typeof e, message: String((e as Error)?.message ?? e) });

/** Rank r's deterministic data: n float32 values that do not add exactly (so the order of the sum matters). */
export function rankData(r: number, count: number, salt = 0): Float32Array {
  const a = new Float32Array(count);
  for (let i = 0; i < count; i++) a[i] = Math.fround(Math.sin(1.7 * r + 0.37 * i + salt) * (1 + r) * 3.3 + 1e-3 * i);
  return a;
}

/** The sum over ranks 0..W-1 of rankData, in rank order, rounded to float32 after each addition. */
function rankSum(world: number, count: number, salt = 0): Float32Array {
  const acc = rankData(0, count, salt);
  for (let r = 1; r < world; r++) {
    const x = rankData(r, count, salt);
    for (let i = 0; i < count; i++) acc[i] = Math.fround(acc[i] + x[i]);
  }
  return acc;
}

/** [begin, end) of rank r's shard of n (the first n % W ranks one longer). */
function shard(count: number, world: number, r: number): [number, number] {
  const base = Math.floor(count / world), extra = count % world;
  const begin = r * base + Math.min(r, extra);
  return [begin, begin + base + (r < extra ? 1 : 0)];
}

const bits = (a: ArrayLike<number>) => Array.from(new Uint32Array(Float32Array.from(a).buffer));

function sameBits(failures: string[], what: string, got: ArrayLike<number>, want: ArrayLike<number>) {
  const g = bits(got), w = bits(want);
  if (g.length !== w.length) failures.push(`${what}: ${g.length} elements, expected ${w.length}`);
  else {
    const i = g.findIndex((x, k) => x !== w[k]);
    if (i >= 0) failures.push(`${what}: element ${i} is ${got[i]}, expected ${want[i]} (not the same bits)`);
  }
}

async function collectives() {
  const info = dist.init();
  const { rank, worldSize: W } = info;
  const failures: string[] = [];
  let checks = 0;
  const check = async (what: string, t: Tensor, want: ArrayLike<number>) => {
    checks++;
    sameBits(failures, what, await t.data(), want);
  };
  const statsBefore = dist.stats();

  // allReduce sum and mean
  const n = 37;
  const a = tensor(rankData(rank, n), [n]);
  dist.allReduce(a, 'sum');
  await check('allReduce sum', a, rankSum(W, n));
  const m = tensor(rankData(rank, n, 1), [n]);
  dist.allReduce(m, 'mean');
  await check('allReduce mean', m, rankSum(W, n, 1).map((x) => Math.fround(x / W)));
  const d = tensor(rankData(rank, n, 5), [n]);
  dist.allReduce(d); // the default op is the sum
  await check('allReduce default op', d, rankSum(W, n, 5));

  // reduceScatter: n = 10 over the world (over 3: shards 4, 3, 3)
  const rn = 10;
  const [b, e] = shard(rn, W, rank);
  const sr = dist.shardRange(rn);
  checks++;
  if (sr[0] !== b || sr[1] !== e) failures.push(`shardRange(${rn}) is [${sr}], expected [${b}, ${e}]`);
  const rin = tensor(rankData(rank, rn, 2), [rn]);
  const rout = full([e - b], -1);
  dist.reduceScatter(rout, rin, 'sum');
  await check('reduceScatter sum', rout, rankSum(W, rn, 2).slice(b, e));
  const rmean = full([e - b], -1);
  dist.reduceScatter(rmean, rin, 'mean');
  await check('reduceScatter mean', rmean, rankSum(W, rn, 2).slice(b, e).map((x) => Math.fround(x / W)));

  // allGather: into a separate output, and in place (the input is this rank's window of out)
  const gn = 10;
  const gather = new Float32Array(gn);
  for (let r = 0; r < W; r++) {
    const [gb, ge] = shard(gn, W, r);
    gather.set(rankData(r, gn, 3).subarray(gb, ge), gb);
  }
  const [gb, ge] = shard(gn, W, rank);
  const gin = tensor(rankData(rank, gn, 3).slice(gb, ge), [ge - gb]);
  const gout = full([gn], -1);
  dist.allGather(gout, gin);
  await check('allGather', gout, gather);
  const own = full([gn], -1);
  const ownWindow = own.window(gb, [ge - gb]);
  ownWindow.sharedData().set(rankData(rank, gn, 3).subarray(gb, ge));
  dist.allGather(own, ownWindow);
  await check('allGather in place', own, gather);

  // broadcast from root 1 (float32 and int32)
  const root = 1 % W;
  const bf = tensor(rankData(rank, 7, 4), [7]);
  dist.broadcast(bf, root);
  await check('broadcast float32', bf, rankData(root, 7, 4));
  const bi = tensor(Int32Array.from({ length: 5 }, (_, i) => 1000 * rank + i - 7), [5], { dtype: 'int32' });
  dist.broadcast(bi, root);
  checks++;
  const biv = Array.from(await bi.data());
  const biw = Array.from({ length: 5 }, (_, i) => 1000 * root + i - 7);
  if (JSON.stringify(biv) !== JSON.stringify(biw)) failures.push(`broadcast int32: [${biv}], expected [${biw}]`);

  // barrier: every rank has passed the barrier only once every rank reached it
  await dist.barrier();
  checks++;

  const statsAfter = dist.stats();
  print({ rank, info, checks, failures, statsBefore, statsAfter, initialized: dist.isInitialized() });
}

async function mismatch() {
  const { rank } = dist.init();
  const count = rank === 1 ? 5 : 4;
  try {
    const t = dist.allReduce(full([count], 1), 'sum');
    await t.data();
    console.log(`ERROR rank ${rank}: no error`);
  } catch (e) {
    console.log(`ERROR rank ${rank}: ${errorOf(e).type}: ${errorOf(e).message}`);
  }
  process.exit(3);
}

async function poison() {
  const { rank } = dist.init();
  let x: Tensor;
  if (rank === 1) {
    const table = full([5, 4], 1);
    x = kernels.embedding(tensor(Int32Array.from([9]), [1], { dtype: 'int32' }), table); // id 9 is outside [0, 5)
  } else x = full([1, 4], 1);
  let error: unknown = null;
  try {
    dist.allReduce(x, 'sum');
    await x.data();
  } catch (e) {
    error = errorOf(e);
  }
  await synchronize().catch(() => undefined); // the failures are reported; the job goes on
  // the ranks are still in step: a later collective works
  const y = dist.allReduce(full([3], rank + 1), 'sum');
  const after = Array.from(await y.data());
  print({ rank, error, after });
}

function tinyTrainerData() {
  const text = 'the cat sat on the mat. '.repeat(20);
  const tok = CharTokenizer.fromText(text);
  const data = new TokenDataset(tok.encode(text), tok.vocabSize);
  const model = new Decoder({ vocab: tok.vocabSize, dModel: 16, heads: 2, dFF: 32, layers: 2, maxSeq: 8, seed: 1 });
  return { model, data };
}

async function badargs() {
  const { rank, worldSize: W } = dist.init();
  const errors: Record<string, unknown> = {};
  const attempt = (name: string, f: () => unknown) => {
    try {
      f();
      errors[name] = null;
    } catch (e) {
      errors[name] = errorOf(e);
    }
  };
  const t = full([6], 1);
  attempt('allReduce op max', () => dist.allReduce(t, 'max' as never));
  attempt('reduceScatter op max', () => dist.reduceScatter(full([3], 0), full([6], 1), 'max' as never));
  attempt('reduceScatter wrong out size', () => dist.reduceScatter(full([4], 0), full([10], 1)));
  attempt('allGather wrong in size', () => dist.allGather(full([10], 0), full([7], 1)));
  attempt('broadcast root out of range', () => dist.broadcast(t, W));
  attempt('broadcast root negative', () => dist.broadcast(t, -1));
  const { model, data } = tinyTrainerData();
  for (const [name, v] of [['zero 2', { zero: 2 }], ['foo 1', { foo: 1 }], ["'yes'", 'yes'], ["overlap 'yes'", { overlap: 'yes' }]] as const)
    attempt(`Trainer distributed ${name}`, () => new Trainer(model, data, { steps: 1, lr: 1e-3, batchSize: 1, seqLen: 8, distributed: v as never }));
  // after all of that, the job still works
  const ok = Array.from(await dist.allReduce(full([2], 1), 'sum').data());
  print({ rank, world: W, errors, ok });
}

async function nompi() {
  const report = backends().distributed;
  let initError: unknown = null, trainerError: unknown = null;
  try {
    dist.init();
  } catch (e) {
    initError = errorOf(e);
  }
  const { model, data } = tinyTrainerData();
  try {
    new Trainer(model, data, { steps: 1, lr: 1e-3, batchSize: 1, seqLen: 8, distributed: true });
  } catch (e) {
    trainerError = errorOf(e);
  }
  // everything else still works: a plain training step
  const trainer = new Trainer(model, data, { steps: 2, lr: 1e-3, batchSize: 2, seqLen: 8, seed: 1 });
  const losses: number[] = [];
  for await (const s of trainer.steps()) losses.push(s.loss);
  trainer.dispose();
  print({ mpi: report.mpi, initError, trainerError, losses, initialized: dist.isInitialized() });
}

async function nccl() {
  const cuda = backends().cuda;
  const info = dist.init({ device: `cuda:${localRankFromEnv()}` });
  const { rank, worldSize: W, localRank } = info;
  const device = `cuda:${localRank}` as const;
  const failures: string[] = [];
  const n = 1000, rn = 10;
  const cmp = async (what: string, g: Tensor, c: Tensor) => sameBits(failures, what, await g.data(), await c.data());
  // all-reduce sum and mean
  for (const op of ['sum', 'mean'] as const) {
    const c = tensor(rankData(rank, n, 7), [n]), g = tensor(rankData(rank, n, 7), [n], { device });
    dist.allReduce(c, op);
    dist.allReduce(g, op);
    await cmp(`allReduce ${op}`, g, c);
  }
  // reduce-scatter (n not divisible by the world)
  const [b, e] = dist.shardRange(rn);
  for (const op of ['sum', 'mean'] as const) {
    const cin = tensor(rankData(rank, rn, 8), [rn]), gin = tensor(rankData(rank, rn, 8), [rn], { device });
    const cout = full([e - b], 0), gout = full([e - b], 0, { device });
    dist.reduceScatter(cout, cin, op);
    dist.reduceScatter(gout, gin, op);
    await cmp(`reduceScatter ${op}`, gout, cout);
  }
  // all-gather
  const mine = rankData(rank, rn, 9).slice(b, e);
  const cout = full([rn], 0), gout = full([rn], 0, { device });
  dist.allGather(cout, tensor(mine, [e - b]));
  dist.allGather(gout, tensor(mine, [e - b], { device }));
  await cmp('allGather', gout, cout);
  print({ rank, world: W, device, cuda: cuda.available, failures });
}

function localRankFromEnv(): number {
  return Number(process.env.OMPI_COMM_WORLD_LOCAL_RANK ?? process.env.MPI_LOCALRANKID ?? 0);
}

const modes: Record<string, () => Promise<void>> = { collectives, mismatch, poison, badargs, nompi, nccl };
const run = modes[mode];
if (!run) throw new Error(`collectives-worker: unknown --mode ${mode}`);
await run();
