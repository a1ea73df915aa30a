// The distributed pieces that run in one process (the multi-rank jobs are test/distributed.test.ts): the packing of the
// flat buffers (ParameterStore.packSegments / flatRange, kernels.copySegments), AdamW over a window of the store
// (ZeRO-1's shard), the accumulation of whole micro-batch gradients, the Trainer's `distributed` option checks, and a
// job of one rank (an MPI singleton: this process, no mpirun) — every collective is then the identity, and distributed
// training equals one process bit for bit.
import anyTest from 'ava';
import { Decoder, type DecoderConfig } from '../lib/models/decoder.ts';
import { CharTokenizer, TokenDataset } from '../lib/data/index.ts';
import { Trainer } from '../lib/train/trainer.ts';
import { AdamW } from '../lib/optim/index.ts';
import { backward, resetTape } from '../lib/autograd.ts';
import { axpby, copySegments, crossEntropy, embedding } from '../lib/kernels.ts';
import { full, tensor, randn, type Tensor } from '../lib/tensor.ts';
import { backends, synchronize } from '../lib/runtime.ts';
import { native } from '../lib/native.ts';
import * as dist from '../lib/distributed/index.ts';
import { mpiRequired } from './helpers/mpi.ts';

const test = anyTest.serial;
const text = 'the cat sat on the mat. the dog sat on the log. a cat and a dog sat on a mat and a log. '.repeat(20);
const tok = CharTokenizer.fromText(text);
const data = new TokenDataset(tok.encode(text), tok.vocabSize);
// dModel 20, dFF 36: parameter sizes that are not multiples of 32, so the flat buffers have alignment padding
const cfg = (strategy: 'all' | 'none'): DecoderConfig => ({ vocab: tok.vocabSize, dModel: 20, heads: 2, dFF: 36, layers: 3, maxSeq: 16, sharing: { strategy }, seed: 5 });
const bits = (a: ArrayLike<number>) => Array.from(new Uint32Array(Float32Array.from(a).buffer));

test('packSegments and flatRange describe the packed layout exactly (padding left out), whole and by shard', async (t) => {
  const m = new Decoder(cfg('none'));
  const s = m.store;
  t.true(s.length > s.numel, 'this model has alignment padding');
  const values = (await s.values.data()) as Float32Array;
  const packed = s.pack(values);
  const out = full([s.numel], 0);
  copySegments(out, s.values, s.packSegments(0, s.numel, true));
  t.deepEqual(bits(await out.data()), bits(packed));
  // back again: unpacking into a zeroed flat buffer gives the values (padding zero)
  const back = full([s.length], 0);
  copySegments(back, out, s.packSegments(0, s.numel, false));
  t.deepEqual(bits(await back.data()), bits(values));
  for (const [a, b] of [[0, 1], [3, 517], [100, s.numel], [s.numel - 7, s.numel], [1234, 1235]] as const) {
    const part = full([b - a], 0);
    copySegments(part, s.values, s.packSegments(a, b, true));
    t.deepEqual(bits(await part.data()), bits(packed.subarray(a, b)), `[${a}, ${b})`);
    // the flat window holds exactly those positions: relative to its start (base), the same segments read them
    const [lo, hi] = s.flatRange(a, b);
    const win = s.values.window(lo, [hi - lo]);
    const part2 = full([b - a], 0);
    copySegments(part2, win, s.packSegments(a, b, true, lo));
    t.deepEqual(bits(await part2.data()), bits(packed.subarray(a, b)));
    const inside = s.parameters.filter((p) => p.packedOffset < b && p.packedOffset + p.size > a);
    t.is(lo, inside[0].offset + Math.max(0, a - inside[0].packedOffset));
    const last = inside[inside.length - 1];
    t.is(hi, last.offset + (b - last.packedOffset));
    for (const x of [part, part2, win]) x.dispose();
  }
  t.deepEqual(s.flatRange(5, 5), [0, 0]);
  for (const x of [out, back]) x.dispose();
  m.store.dispose();
});

test('copySegments copies each triple, leaves the rest of dst, and refuses bad segments before touching memory', async (t) => {
  const src = tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const dst = full([6], -1);
  copySegments(dst, src, new Float64Array([0, 7, 2, 4, 1, 1]));
  t.deepEqual(Array.from(await dst.data()), [7, 8, -1, -1, 1, -1]);
  t.throws(() => copySegments(dst, src, [0, 1, 2] as unknown as Float64Array), { instanceOf: TypeError, message: /copySegments: segments must be a Float64Array/ });
  t.throws(() => copySegments(dst, src, new Float64Array([0, 1])), { instanceOf: RangeError, message: /copySegments: segments has 2 numbers, not a multiple of 3/ });
  t.throws(() => copySegments(dst, src, new Float64Array([0, 0, 1, 5, 0, 2])), { instanceOf: RangeError, message: /segment 1 writes dst\[5, 7\), past its 6 elements/ });
  t.throws(() => copySegments(dst, src, new Float64Array([0, 9, 2])), { instanceOf: RangeError, message: /segment 0 reads src\[9, 11\), past its 10 elements/ });
  t.throws(() => copySegments(dst, src, new Float64Array([0, 1.5, 1])), { instanceOf: RangeError, message: /segments\[1\] must be a non-negative integer, got 1.5/ });
  t.throws(() => copySegments(dst, src, new Float64Array([-1, 0, 1])), { instanceOf: RangeError, message: /segments\[0\] must be a non-negative integer, got -1/ });
  const w = src.window(2, [4]);
  t.throws(() => copySegments(w, src, new Float64Array([0, 0, 1])), { instanceOf: RangeError, message: /copySegments: dst must not overlap src/ });
  t.deepEqual(Array.from(await dst.data()), [7, 8, -1, -1, 1, -1], 'a refused call changed nothing');
  for (const x of [src, dst, w]) x.dispose();
});

test('AdamW over a window of the store (a ZeRO-1 shard) updates exactly that window as the whole-store AdamW does', async (t) => {
  const make = () => {
    const m = new Decoder(cfg('none'));
    const g = randn([m.store.length], { seed: 9 });
    native().copyInto(m.store.grads.handle, g.handle);
    g.dispose();
    return m;
  };
  const a = make(), b = make();
  const [lo, hi] = a.store.flatRange(700, 3000);
  const whole = new AdamW(a.store, { lr: 1e-2, weightDecay: 0.1 });
  const part = new AdamW(b.store, { lr: 1e-2, weightDecay: 0.1 }, { window: [lo, hi] });
  t.deepEqual(part.window, [lo, hi]);
  t.is(part.bytes, 8 * (hi - lo));
  const before = (await b.store.values.data()) as Float32Array;
  for (let i = 0; i < 3; i++) {
    whole.step();
    part.step();
  }
  const va = (await a.store.values.data()) as Float32Array, vb = (await b.store.values.data()) as Float32Array;
  t.deepEqual(bits(vb.subarray(lo, hi)), bits(va.subarray(lo, hi)), 'the window: bit for bit');
  t.deepEqual(bits(vb.subarray(0, lo)), bits(before.subarray(0, lo)), 'before the window: untouched');
  t.deepEqual(bits(vb.subarray(hi)), bits(before.subarray(hi)), 'after it: untouched');
  t.deepEqual(bits(await part.m.data()), bits(((await whole.m.data()) as Float32Array).subarray(lo, hi)));
  t.deepEqual(bits(await part.v.data()), bits(((await whole.v.data()) as Float32Array).subarray(lo, hi)));
  for (const w of [[-1, 4], [5, 4], [0, a.store.length + 1], [0.5, 3], 'all']) {
    t.throws(() => new AdamW(a.store, { lr: 1 }, { window: w as [number, number] }), { instanceOf: RangeError, message: /AdamW: window must be \[lo, hi\] with 0 <= lo <= hi <= \d+/ });
  }
  for (const x of [whole, part]) x.dispose();
  a.store.dispose();
  b.store.dispose();
});

test('accumulate: k sums k whole micro-batch gradients, each computed alone (what k ranks sum)', async (t) => {
  resetTape();
  const opts = { steps: 1, batchSize: 2, seqLen: 16, lr: 1e-2, clip: 0, seed: 4, accumulate: 2 };
  const a = new Decoder(cfg('all'));
  const trainer = new Trainer(a, data, opts);
  for await (const _ of trainer.steps());
  // by hand: micro-batch 0 alone, micro-batch 1 alone, added, then the same AdamW update
  const b = new Decoder(cfg('all'));
  const grads: Float32Array[] = [];
  for (const k of [0, 1]) {
    b.zeroGrad();
    const { ids, targets } = data.batch('train', 2, 16, 4, k);
    backward(b.loss(ids, targets), { scale: 0.5 });
    grads.push((await b.store.grads.data()) as Float32Array);
  }
  const sum = tensor(grads[0].map((x, i) => Math.fround(x + grads[1][i])), [b.store.length]);
  native().copyInto(b.store.grads.handle, sum.handle);
  const opt = new AdamW(b.store, { lr: trainer.lrAt(0), beta1: 0.9, beta2: 0.99, weightDecay: 0.1 });
  opt.step();
  t.deepEqual(bits(await b.store.values.data()), bits(await a.store.values.data()));
  trainer.dispose();
  opt.dispose();
  sum.dispose();
  a.store.dispose();
  b.store.dispose();
});

test('the Trainer\'s distributed option is checked before anything is made', (t) => {
  const m = new Decoder(cfg('all'));
  const base = { steps: 1, batchSize: 2, seqLen: 16, lr: 1e-3 };
  t.throws(() => new Trainer(m, data, { ...base, distributed: 'yes' as never }), { instanceOf: TypeError, message: /Trainer: distributed must be true, false or \{ zero\?: 0 \| 1, overlap\?: boolean \}, got "yes"/ });
  t.throws(() => new Trainer(m, data, { ...base, distributed: { zero: 2 as never } }), { instanceOf: RangeError, message: /distributed\.zero must be 0 or 1 \(ZeRO stage 1\), got 2/ });
  t.throws(() => new Trainer(m, data, { ...base, distributed: { zreo: 1 } as never }), { instanceOf: TypeError, message: /distributed has an unknown key 'zreo'/ });
  t.throws(() => new Trainer(m, data, { ...base, distributed: { overlap: 1 as never } }), { instanceOf: TypeError, message: /distributed\.overlap must be a boolean, got 1/ });
  t.throws(() => new Trainer(m, data, { ...base, accumulate: 2, distributed: { overlap: true } }), { instanceOf: RangeError, message: /overlap needs accumulate 1/ });
  t.throws(() => new Trainer(m, data, { ...base, stackedGrads: true, distributed: { overlap: true } }), { instanceOf: RangeError, message: /overlap cannot be used with stackedGrads/ });
  t.throws(() => new Trainer(m, data, { ...base, bf16Copy: true, distributed: { zero: 1 } }), { instanceOf: RangeError, message: /bf16Copy cannot be used with distributed: \{ zero: 1 \}/ });
  t.false(dist.isInitialized(), 'no refused option initialised MPI');
  m.store.dispose();
});

// ---- a job of one rank: this process (MPI singleton) ----------------------------------------------------------------

const mpiMissing = backends().distributed.mpi.found ? null : `MPI not found: ${backends().distributed.mpi.reason}`;
function needMpi(t: { fail: (m: string) => void; log: (m: string) => void; pass: () => void }): boolean {
  if (!mpiMissing) return true;
  if (mpiRequired) t.fail(mpiMissing);
  else {
    t.log(`skipped: ${mpiMissing}`);
    t.pass();
  }
  return false;
}

test('before init(), a collective says to call it', (t) => {
  t.false(dist.isInitialized());
  t.is(dist.info(), null);
  const x = tensor([1]);
  t.throws(() => dist.allReduce(x), { instanceOf: Error, message: /allReduce: distributed\.init\(\) has not been called \(start the ranks with `mpirun -np N \.\.\.` and call distributed\.init\(\) first\)/ });
  t.throws(() => dist.shardRange(4), { message: /distributed\.shardRange: distributed\.init\(\) has not been called/ });
  x.dispose();
});

test('one rank (no mpirun): init, the collectives are the identity, barrier, stats, backends', async (t) => {
  if (!needMpi(t)) return;
  const i = dist.init();
  t.like(i, { rank: 0, worldSize: 1, localRank: 0, localSize: 1, backend: 'mpi' });
  t.regex(i.library, /Open MPI/);
  t.deepEqual(dist.init(), i, 'init again: the same');
  t.deepEqual(dist.info(), i);
  t.true(backends().distributed.mpi.initialized);
  const x = tensor([1.5, -2, 3e-8]);
  const before = dist.stats();
  t.is(dist.allReduce(x, 'sum'), x);
  dist.allReduce(x, 'mean');
  t.deepEqual(Array.from(await x.data()), Array.from(Float32Array.from([1.5, -2, 3e-8])));
  const out = full([3], 0);
  dist.reduceScatter(out, x);
  t.deepEqual(Array.from(await out.data()), Array.from(await x.data()));
  const g = full([3], 0);
  dist.allGather(g, x);
  t.deepEqual(Array.from(await g.data()), Array.from(await x.data()));
  dist.allGather(g, g.window(0, [3])); // in place: the input is this rank's window of out
  const ids = tensor([4, 5], [2], { dtype: 'int32' });
  dist.broadcast(ids, 0);
  t.deepEqual(Array.from(await ids.data()), [4, 5]);
  await dist.barrier();
  t.deepEqual(dist.shardRange(10), [0, 10]);
  const after = dist.stats();
  t.true(after.calls > before.calls && after.bytes > before.bytes && after.seconds >= before.seconds);
  const n2 = dist.clipGradNorm(tensor([3, 4]), 0);
  t.is((await n2.data())[0], 25, 'maxNorm 0: the global sum of squares');
  const y = tensor([3, 4]);
  t.is((await dist.clipGradNorm(y, 1, { eps: 0 }).data())[0], 5);
  t.deepEqual(Array.from(await y.data()), [0.6000000238418579, 0.800000011920929], 'scaled as clipGradNorm does');
  for (const z of [x, out, g, ids, y, n2]) z.dispose();
});

test('one rank: bad arguments are refused by name before anything runs', (t) => {
  if (!needMpi(t)) return;
  dist.init();
  const x = tensor([1, 2, 3]);
  t.throws(() => dist.allReduce(x, 'max' as never), { instanceOf: TypeError, message: /allReduce: op must be 'sum' or 'mean', got "max"/ });
  t.throws(() => dist.reduceScatter(full([2], 0), x), { instanceOf: RangeError, message: /reduceScatter: rank 0 of 1: out has 2 elements; its shard of in \(3 elements\) has 3/ });
  t.throws(() => dist.allGather(full([4], 0), x), { instanceOf: RangeError, message: /allGather: rank 0 of 1: in has 3 elements; its shard of out \(4 elements\) has 4/ });
  t.throws(() => dist.broadcast(x, 1), { instanceOf: RangeError, message: /broadcast: root must be between 0 and 0, got 1/ });
  t.throws(() => dist.allReduce(tensor([1], [1], { dtype: 'int32' })), { instanceOf: TypeError, message: /allReduce/ });
  t.throws(() => dist.init({ device: 'gpu' }), { instanceOf: TypeError, message: /distributed\.init: device must be 'cpu', 'cuda' or 'cuda:N', got "gpu"/ });
  x.dispose();
});

test('one rank: a collective whose input had failed fails with that cause (and the job goes on)', async (t) => {
  if (!needMpi(t)) return;
  dist.init();
  await synchronize().catch(() => undefined);
  const table = randn([5, 4], { seed: 1 });
  const bad = embedding(tensor([1, 9], [2], { dtype: 'int32' }), table); // token id 9 is outside [0, 5): fails
  dist.allReduce(bad);
  await t.throwsAsync(() => bad.data(), { message: /allReduce: rank 0 of 1: its input had failed: .*token id 9/ });
  const ok = dist.allReduce(tensor([2]));
  t.deepEqual(Array.from(await ok.data()), [2], 'the next collective runs');
  await synchronize().catch(() => undefined);
  for (const z of [table, bad, ok]) z.dispose();
});

test('one rank: distributed training (plain, ZeRO-1, overlapped) equals one process bit for bit', async (t) => {
  if (!needMpi(t)) return;
  for (const strategy of ['all', 'none'] as const) {
    const run = async (distributed?: boolean | { zero?: 0 | 1; overlap?: boolean }) => {
      resetTape();
      const m = new Decoder(cfg(strategy));
      const tr = new Trainer(m, data, { steps: 3, batchSize: 2, seqLen: 16, lr: 1e-2, seed: 2, ...(distributed ? { distributed } : {}) });
      const losses: number[] = [];
      const comm: unknown[] = [];
      for await (const s of tr.steps()) {
        losses.push(s.loss);
        comm.push(s.comm);
      }
      const out = { losses, values: bits(await m.store.values.data()), comm, plan: tr.commPlan, numel: m.store.numel, hookStarts: tr.dp?.hookStarts ?? 0 };
      tr.dispose();
      m.store.dispose();
      return out;
    };
    const one = await run();
    for (const d of [true, { zero: 1 as const }, { overlap: true }]) {
      const r = await run(d);
      t.deepEqual(r.losses, one.losses, `${strategy} ${JSON.stringify(d)}: losses`);
      t.deepEqual(r.values, one.values, `${strategy} ${JSON.stringify(d)}: parameters`);
      const zero = typeof d === 'object' && 'zero' in d;
      t.is(r.plan!.bytesPerStep, (zero ? 8 : 4) * one.numel, 'bytes per step: 4 per unique parameter (x2 with ZeRO-1)');
      t.true(r.comm.every((c) => (c as { world: number }).world === 1));
      if (typeof d === 'object' && d.overlap) {
        // one bucket per layer that is the first to use a block (3 layers unshared, 1 shared), started by its hook
        // during backward; the last bucket (embeddings, final norm) after it
        t.is(r.hookStarts, strategy === 'none' ? 3 : 1, 'buckets started during backward');
        t.is(r.plan!.collectives.length, (strategy === 'none' ? 3 : 1) + 1);
      }
    }
    t.is(one.plan, null);
  }
});

test('one rank: an AbortSignal stops every rank after the same step (the step after it fires carries it)', async (t) => {
  if (!needMpi(t)) return;
  resetTape();
  const m = new Decoder(cfg('all'));
  const ac = new AbortController();
  const tr = new Trainer(m, data, { steps: 10, batchSize: 2, seqLen: 16, lr: 1e-3, signal: ac.signal, distributed: true });
  tr.on('step', (s: { step: number }) => {
    if (s.step === 2) ac.abort();
  });
  const r = await tr.run();
  t.true(r.aborted);
  t.is(r.steps, 3, 'step 3 gathered the signal; every rank stops after it');
  tr.dispose();
  m.store.dispose();
});
