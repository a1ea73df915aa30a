// kernels-train.test.ts — the training ops through the binding (native/addon/ops_train.cpp): embedding forward and
// backward, fused cross-entropy, AdamW, SGD, sum of squares, gradient clipping and scale, against small JavaScript
// references; data-dependent failures (bad ids and targets) surfacing at the next synchronisation without partial
// writes; and every class of bad argument throwing the right error class with a message naming the op.
import anyTest, { type ExecutionContext } from 'ava';

import { Tensor, full, synchronize, synchronizeSync, tensor, zeros } from '../lib/index.ts';
import { native } from '../lib/native.ts';
import { assertClose } from './helpers/close.ts';
import { throwsExactly, type ErrorClass } from './helpers/check.ts';
import { Random } from './helpers/random.ts';

const test = anyTest.serial;
const n = native() as any;

const randArray = (r: Random, len: number, lo = -1, hi = 1) => Array.from({ length: len }, () => Math.fround(r.uniform(lo, hi))); // exact in float32
const f32 = (data: number[], shape: number[]) => tensor(Float32Array.from(data), shape);
const i32 = (data: number[], shape: number[]) => tensor(Int32Array.from(data), shape);
const wrap = (h: unknown) => new Tensor(h as any);

// ---- references ---------------------------------------------------------------------------------------------------

function crossEntropyRef(x: ArrayLike<number>, targets: ArrayLike<number>, V: number, ignore: number, gradScale: number) {
  const rows = targets.length;
  let count = 0;
  for (let r = 0; r < rows; r++) if (targets[r] !== ignore) count++;
  let total = 0;
  const d = new Float64Array(x.length);
  for (let r = 0; r < rows; r++) {
    const tr = targets[r];
    if (tr === ignore) continue;
    let mx = -Infinity;
    for (let j = 0; j < V; j++) mx = Math.max(mx, x[r * V + j]);
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(x[r * V + j] - mx);
    total += mx + Math.log(s) - x[r * V + tr];
    for (let j = 0; j < V; j++) d[r * V + j] = ((Math.exp(x[r * V + j] - mx) / s - (j === tr ? 1 : 0)) * gradScale) / count;
  }
  return { loss: count ? total / count : 0, d };
}

// ---- embedding ----------------------------------------------------------------------------------------------------

test('embeddingForward gathers table rows for ids of any rank', async (t) => {
  const r = new Random(1);
  const V = 5, C = 3;
  const tableData = randArray(r, V * C);
  const table = f32(tableData, [V, C]);
  const idsData = [4, 0, 2, 2, 1, 4];
  const ids = i32(idsData, [2, 3]);
  const out = wrap(n.embeddingForward(ids.handle, table.handle, null));
  t.deepEqual(out.shape, [2, 3, C]);
  const want = idsData.flatMap((id) => tableData.slice(id * C, id * C + C));
  assertClose(t, await out.data(), want, { what: 'embedding' });
  // a given out is written and returned
  const given = full([6, C], 7);
  const ids1 = i32(idsData, [6]);
  const back = n.embeddingForward(ids1.handle, table.handle, given.handle);
  t.is(back, given.handle);
  assertClose(t, await given.data(), want, { what: 'embedding into out' });
});

test('embeddingBackward accumulates a scatter of dout, repeated ids included', async (t) => {
  const r = new Random(2);
  const V = 4, C = 5;
  const idsData = [1, 3, 1, 1, 0, 3, 2];
  const ids = i32(idsData, [7]);
  const doutData = randArray(r, 7 * C);
  const baseData = randArray(r, V * C);
  const dout = f32(doutData, [7, C]);
  const dtable = f32(baseData, [V, C]);
  t.is(n.embeddingBackward(ids.handle, dout.handle, dtable.handle), dtable.handle);
  const want = baseData.slice();
  idsData.forEach((id, i) => {
    for (let c = 0; c < C; c++) want[id * C + c] += doutData[i * C + c];
  });
  assertClose(t, await dtable.data(), want, { abs: 1e-6, rel: 1e-6, what: 'dtable' });
});

// Design invariant 7: the failure stays with the outputs (every read rejects, naming the op), synchronize reports it
// once, and the ids are checked before anything is written (the windows beside a failed output keep their values).
test('an out-of-range id fails at the next synchronisation, naming the op, the id and the position, without writing', async (t) => {
  const table = zeros([256, 3]);
  const ids = i32([1, 2, 3, 4, 5, 300, 7], [7]);
  const buf = full([3, 7, 3], 7);
  const out = wrap(buf.handle.view(21, [7, 3])), before = wrap(buf.handle.view(0, [21])), after = wrap(buf.handle.view(42, [21]));
  n.embeddingForward(ids.handle, table.handle, out.handle);
  for (let i = 0; i < 2; i++) {
    const err = await t.throwsAsync(() => out.data());
    t.regex(err!.message, /^Tensor\.data: this tensor holds the output of a failed op: embeddingForward \(cpu stream\): embedding: token id 300 at position 5 is out of range \[0, 256\)$/);
  }
  t.true((await before.data()).every((v) => v === 7) && (await after.data()).every((v) => v === 7), 'no stray write');
  t.throws(() => synchronizeSync(), { message: /embeddingForward.*token id 300/ });
  // the same through synchronizeSync, and for the backward pass
  const neg = i32([0, -1], [2]);
  n.embeddingForward(neg.handle, table.handle, null);
  t.throws(() => synchronizeSync(), { message: /embedding: token id -1 at position 1 is out of range \[0, 256\)/ });
  t.notThrows(() => synchronizeSync(), 'reported once');
  const gbuf = full([3, 256, 3], 2);
  const dtable = wrap(gbuf.handle.view(768, [256, 3])), gbefore = wrap(gbuf.handle.view(0, [768])), gafter = wrap(gbuf.handle.view(1536, [768]));
  n.embeddingBackward(ids.handle, full([7, 3], 1).handle, dtable.handle);
  await t.throwsAsync(() => dtable.data(), { message: /^Tensor\.data: this tensor holds the output of a failed op: embeddingBackward \(cpu stream\): embedding: token id 300 at position 5/ });
  t.true((await gbefore.data()).every((v) => v === 2) && (await gafter.data()).every((v) => v === 2), 'no stray write');
  await t.throwsAsync(() => synchronize(), { message: /embeddingBackward/ });
});

// ---- cross-entropy ------------------------------------------------------------------------------------------------

test('crossEntropy returns the mean loss over counted rows and writes dlogits', async (t) => {
  const r = new Random(3);
  const V = 7;
  const xData = randArray(r, 2 * 3 * V, -3, 3);
  const tData = [3, -100, 0, 6, 2, -100];
  const logits = f32(xData, [2, 3, V]);
  const targets = i32(tData, [2, 3]);
  const ref = crossEntropyRef(xData, tData, V, -100, 0.5);
  const dl = full([2, 3, V], NaN);
  const loss = wrap(n.crossEntropy(logits.handle, targets.handle, { gradScale: 0.5, dlogits: dl.handle }));
  t.deepEqual(loss.shape, []);
  t.is(loss.dtype, 'float32');
  t.is(loss.device, 'cpu');
  assertClose(t, await loss.data(), [ref.loss], { abs: 1e-6, rel: 1e-6, what: 'loss' });
  assertClose(t, await dl.data(), ref.d, { abs: 1e-7, rel: 1e-5, what: 'dlogits' });
  // the loss alone; then in place (dlogits is the logits tensor)
  const loss2 = wrap(n.crossEntropy(logits.handle, targets.handle));
  t.is((await loss2.data())[0], (await loss.data())[0]);
  const loss3 = wrap(n.crossEntropy(logits.handle, targets.handle, { gradScale: 0.5, dlogits: logits.handle }));
  t.is((await loss3.data())[0], (await loss.data())[0]);
  t.deepEqual(await logits.data(), await dl.data());
  // a custom ignoreIndex, and rank-1 logits (one row, a scalar target)
  const one = f32([0.5, -1, 2], [3]);
  const tgt = i32([1], []);
  const l1 = wrap(n.crossEntropy(one.handle, tgt.handle, { ignoreIndex: 5 }));
  assertClose(t, await l1.data(), [crossEntropyRef([0.5, -1, 2], [1], 3, 5, 1).loss], { abs: 1e-6, rel: 1e-6, what: 'rank-1 logits' });
});

test('crossEntropy with every row ignored is 0 with a zero gradient', async (t) => {
  const logits = f32([1, 2, 3, 4, 5, 6], [2, 3]);
  const targets = i32([-100, -100], [2]);
  const dl = full([2, 3], NaN);
  const loss = wrap(n.crossEntropy(logits.handle, targets.handle, { dlogits: dl.handle }));
  t.deepEqual(Array.from(await loss.data()), [0]);
  t.true((await dl.data()).every((v) => v === 0));
});

test('an out-of-range target fails at the next synchronisation without writing dlogits', async (t) => {
  const logits = zeros([9, 256]);
  const targets = i32([0, 1, 2, 3, 4, 256, 6, -100, 8], [9]);
  const dl = full([9, 256], 3);
  const loss = wrap(n.crossEntropy(logits.handle, targets.handle, { dlogits: dl.handle }));
  const err = await t.throwsAsync(() => loss.data());
  t.regex(err!.message, /^Tensor\.data: this tensor holds the output of a failed op: crossEntropy \(cpu stream\): cross_entropy: target 256 at row 5 is out of range \[0, 256\)/);
  // dlogits is an output of the failed op: it carries the failure too (never a half-written gradient)
  await t.throwsAsync(() => dl.data(), { message: /crossEntropy.*target 256/ });
  await t.throwsAsync(() => synchronize(), { message: /crossEntropy/ });
});

// ---- optimizers ---------------------------------------------------------------------------------------------------

// float32 -> bfloat16 -> float32, round to nearest even (as f32_to_bf16 in native/core/dtype.h), written out here.
const bf16Round = (x: number): number => {
  const u = new Uint32Array(Float32Array.of(x).buffer)[0];
  const r = (u + 0x7fff + ((u >>> 16) & 1)) >>> 0;
  return new Float32Array(Uint32Array.of((r >>> 16) << 16).buffer)[0];
};

test('adamw bf16Copy: the updated parameters rounded to bf16, written in the same pass; the step is unchanged', async (t) => {
  const r = new Random(5);
  const N = 37;  // a vector body and a tail
  const p0 = randArray(r, N);
  const a = f32(p0, [N]), b = f32(p0, [N]), ma = zeros([N]), va = zeros([N]), mb = zeros([N]), vb = zeros([N]);
  const copy = full([N], 7, { dtype: 'bfloat16' });
  for (let step = 1; step <= 2; step++) {
    const g = f32(randArray(r, N), [N]);
    t.is(n.adamw(a.handle, g.handle, ma.handle, va.handle, { lr: 0.01, step, bf16Copy: copy.handle }), undefined);
    n.adamw(b.handle, g.handle, mb.handle, vb.handle, { lr: 0.01, step });
  }
  const pa = Array.from(await a.data());
  t.deepEqual(pa, Array.from(await b.data()), 'the parameters are those of a step without the copy');
  t.deepEqual(Array.from(await ma.data()), Array.from(await mb.data()), 'the first moments too');
  t.deepEqual(Array.from(await copy.data()), pa.map(bf16Round), 'the copy is every updated parameter rounded to bf16');
  const p = f32([1, 2], [2]), g2 = f32([0.5, -0.5], [2]), m2 = zeros([2]), v2 = zeros([2]);
  throwsExactly(t, () => n.adamw(p.handle, g2.handle, m2.handle, v2.handle, { lr: 0.1, step: 1, bf16Copy: zeros([2]).handle }),
    TypeError, /^adamw: option bf16Copy must be a bfloat16 tensor, got float32$/, 'a float32 copy');
  throwsExactly(t, () => n.adamw(p.handle, g2.handle, m2.handle, v2.handle, { lr: 0.1, step: 1, bf16Copy: zeros([3], { dtype: 'bfloat16' }).handle }),
    RangeError, /^adamw: option bf16Copy must have shape \[2\]/, 'a copy of another shape');
  t.deepEqual(Array.from(await p.data()), [1, 2], 'nothing was written by the refused calls');
});

test('adamw follows torch.optim.AdamW over three steps, with a decay mask', async (t) => {
  const r = new Random(4);
  const N = 37;
  const p0 = randArray(r, N);
  const mask = Array.from({ length: N }, (_, i) => (i % 3 === 0 ? 0 : 1));
  const opts = { lr: 0.01, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0.1 };
  const param = f32(p0, [N]), m = zeros([N]), v = zeros([N]), decay = f32(mask, [N]);
  const p = p0.slice(), mr = new Array(N).fill(0), vr = new Array(N).fill(0);
  for (let step = 1; step <= 3; step++) {
    const g = randArray(r, N);
    const grad = f32(g, [N]);
    t.is(n.adamw(param.handle, grad.handle, m.handle, v.handle, { ...opts, step, decayMask: decay.handle }), undefined);
    const bc1 = 1 - opts.beta1 ** step, bc2 = 1 - opts.beta2 ** step;
    for (let i = 0; i < N; i++) {
      p[i] *= 1 - opts.lr * opts.weightDecay * mask[i];
      mr[i] = opts.beta1 * mr[i] + (1 - opts.beta1) * g[i];
      vr[i] = opts.beta2 * vr[i] + (1 - opts.beta2) * g[i] * g[i];
      p[i] -= ((opts.lr / bc1) * mr[i]) / (Math.sqrt(vr[i]) / Math.sqrt(bc2) + opts.eps);
    }
  }
  assertClose(t, await param.data(), p, { abs: 1e-6, rel: 1e-5, what: 'param' });
  assertClose(t, await m.data(), mr, { abs: 1e-7, rel: 1e-5, what: 'm' });
  assertClose(t, await v.data(), vr, { abs: 1e-9, rel: 1e-5, what: 'v' });
  // defaults: beta1 0.9, beta2 0.999, eps 1e-8, weightDecay 0.01, no mask
  const q = f32([1, -2], [2]), g2 = f32([0.5, 0.25], [2]), m2 = zeros([2]), v2 = zeros([2]);
  n.adamw(q.handle, g2.handle, m2.handle, v2.handle, { lr: 0.1, step: 1 });
  // step 1: mhat = g, vhat = g^2, update = g / (|g| + eps) = sign(g)
  assertClose(t, await q.data(), [1 * (1 - 0.001) - 0.1, -2 * (1 - 0.001) - 0.1], { abs: 1e-6, rel: 1e-6, what: 'default adamw' });
});

test('sgd follows torch.optim.SGD: momentum, dampening, nesterov, weight decay', async (t) => {
  const r = new Random(5);
  const N = 19;
  const cases = [
    { lr: 0.1 },
    { lr: 0.1, weightDecay: 0.01 },
    { lr: 0.05, momentum: 0.9, dampening: 0.1, weightDecay: 0.01 },
    { lr: 0.05, momentum: 0.9, nesterov: true },
  ];
  for (const c of cases) {
    const p0 = randArray(r, N);
    const param = f32(p0, [N]);
    const buf = c.momentum ? zeros([N]) : null;
    const p = p0.slice(), b = new Array(N).fill(0);
    const mom = c.momentum ?? 0, damp = c.dampening ?? 0, wd = c.weightDecay ?? 0;
    for (let step = 1; step <= 3; step++) {
      const g = randArray(r, N);
      const opts = { ...c, firstStep: step === 1 };
      t.is(n.sgd(param.handle, f32(g, [N]).handle, buf ? buf.handle : null, opts), undefined);
      for (let i = 0; i < N; i++) {
        let d = g[i] + wd * p[i];
        if (mom) {
          b[i] = step === 1 ? d : mom * b[i] + (1 - damp) * d;
          d = c.nesterov ? d + mom * b[i] : b[i];
        }
        p[i] -= c.lr * d;
      }
    }
    assertClose(t, await param.data(), p, { abs: 1e-6, rel: 1e-5, what: `sgd ${JSON.stringify(c)}` });
    if (buf) assertClose(t, await buf.data(), b, { abs: 1e-6, rel: 1e-5, what: `sgd buffer ${JSON.stringify(c)}` });
  }
});

test('sumSquares, clipGradNorm and scale', async (t) => {
  const r = new Random(6);
  const data = randArray(r, 1000);
  const ss = data.reduce((a, x) => a + Math.fround(x) ** 2, 0);
  const x = f32(data, [10, 100]);
  const s = wrap(n.sumSquares(x.handle));
  t.deepEqual(s.shape, []);
  assertClose(t, await s.data(), [ss], { rel: 1e-6, what: 'sumSquares' });
  // clipping to half the norm: returns the norm before clipping, scales by maxNorm / (norm + eps)
  const norm = Math.sqrt(ss);
  const g = f32(data, [1000]);
  const got = wrap(n.clipGradNorm(g.handle, norm / 2));
  assertClose(t, await got.data(), [norm], { rel: 1e-6, what: 'norm before clipping' });
  const coef = norm / 2 / (norm + 1e-6);
  assertClose(t, await g.data(), data.map((v) => Math.fround(v) * coef), { abs: 1e-7, rel: 1e-6, what: 'clipped grad' });
  // a large maxNorm leaves the gradient alone
  const h = f32(data, [1000]);
  wrap(n.clipGradNorm(h.handle, norm * 2, { eps: 0 }));
  assertClose(t, await h.data(), data, { what: 'unclipped grad' });
  // scale in place, returning x
  const y = f32([1, -2, 3], [3]);
  t.is(n.scale(y.handle, -0.5), y.handle);
  t.deepEqual(Array.from(await y.data()), [-0.5, 1, -1.5]);
  // empty tensors
  const e = zeros([0, 4]);
  t.deepEqual(Array.from(await wrap(n.sumSquares(e.handle)).data()), [0]);
});

// ---- bad arguments ------------------------------------------------------------------------------------------------

test('bad arguments throw the right error class with a message naming the op', (t) => {
  const table = zeros([5, 3]);
  const ids = i32([0, 1], [2]);
  const fl = zeros([2]);
  const p = zeros([4]), g = zeros([4]), m = zeros([4]), v = zeros([4]);
  const logits = zeros([2, 5]), targets = i32([0, 1], [2]);
  const big = zeros([40]);
  const disposed = zeros([2]);
  disposed.dispose();
  const adam = { lr: 0.1, step: 1 };
  const cases: [string, () => unknown, ErrorClass, RegExp][] = [
    // embeddingForward
    ['no arguments', () => n.embeddingForward(), TypeError, /^embeddingForward: expected 2 argument/],
    ['ids not a tensor', () => n.embeddingForward([0, 1], table.handle, null), TypeError, /^embeddingForward: ids must be a Tensor/],
    ['disposed ids', () => n.embeddingForward(disposed.handle, table.handle, null), Error, /^embeddingForward: ids has been disposed/],
    ['float ids', () => n.embeddingForward(fl.handle, table.handle, null), TypeError, /^embeddingForward: ids must be int32/],
    ['int table', () => n.embeddingForward(ids.handle, ids.handle, null), TypeError, /^embeddingForward: table must be float32/],
    ['rank-1 table', () => n.embeddingForward(ids.handle, fl.handle, null), RangeError, /^embeddingForward: table must have rank 2/],
    ['scalar ids', () => n.embeddingForward(i32([0], []).handle, table.handle, null), RangeError, /^embeddingForward: ids must have rank 1 to 7/],
    ['wrong out shape', () => n.embeddingForward(ids.handle, table.handle, zeros([2, 4]).handle), RangeError, /^embeddingForward: out must have shape \[2, 3\], got \[2, 4\]/],
    ['out overlapping table', () => n.embeddingForward(ids.handle, big.window(0, [5, 3]).handle, big.window(9, [2, 3]).handle), RangeError, /^embeddingForward: out must not overlap table/],
    // embeddingBackward
    ['dout shape', () => n.embeddingBackward(ids.handle, zeros([2, 4]).handle, table.handle), RangeError, /^embeddingBackward: dout must have shape \[2, 3\]/],
    ['dtable overlapping dout', () => n.embeddingBackward(ids.handle, big.window(0, [2, 3]).handle, big.window(3, [5, 3]).handle), RangeError, /^embeddingBackward: dtable must not overlap dout/],
    ['dtable not a tensor', () => n.embeddingBackward(ids.handle, zeros([2, 3]).handle, {}), TypeError, /^embeddingBackward: dtable must be a Tensor/],
    // crossEntropy
    ['float targets', () => n.crossEntropy(logits.handle, fl.handle), TypeError, /^crossEntropy: targets must be int32/],
    ['targets shape', () => n.crossEntropy(logits.handle, i32([0, 1, 2], [3]).handle), RangeError, /^crossEntropy: targets must have shape \[2\], got \[3\]/],
    ['int logits', () => n.crossEntropy(targets.handle, targets.handle), TypeError, /^crossEntropy: logits must be float32/],
    ['NaN gradScale', () => n.crossEntropy(logits.handle, targets.handle, { gradScale: NaN }), RangeError, /^crossEntropy: option gradScale must be finite, got NaN/],
    ['fractional ignoreIndex', () => n.crossEntropy(logits.handle, targets.handle, { ignoreIndex: 1.5 }), RangeError, /^crossEntropy: option ignoreIndex must be an integer/],
    ['options not an object', () => n.crossEntropy(logits.handle, targets.handle, 3), TypeError, /^crossEntropy: options must be an object/],
    ['dlogits shape', () => n.crossEntropy(logits.handle, targets.handle, { dlogits: zeros([2, 4]).handle }), RangeError, /^crossEntropy: option dlogits must have shape \[2, 5\]/],
    ['dlogits partly overlapping', () => n.crossEntropy(big.window(0, [2, 5]).handle, targets.handle, { dlogits: big.window(5, [2, 5]).handle }), RangeError, /^crossEntropy: option dlogits partly overlaps logits/],
    ['dlogits not a tensor', () => n.crossEntropy(logits.handle, targets.handle, { dlogits: 'x' }), TypeError, /^crossEntropy: option dlogits must be a Tensor/],
    // adamw
    ['adamw without lr', () => n.adamw(p.handle, g.handle, m.handle, v.handle, { step: 1 }), TypeError, /^adamw: option lr is required/],
    ['adamw without step', () => n.adamw(p.handle, g.handle, m.handle, v.handle, { lr: 0.1 }), TypeError, /^adamw: option step is required/],
    ['adamw step 0', () => n.adamw(p.handle, g.handle, m.handle, v.handle, { lr: 0.1, step: 0 }), RangeError, /^adamw: option step must be between 1 and/],
    ['adamw NaN lr', () => n.adamw(p.handle, g.handle, m.handle, v.handle, { lr: NaN, step: 1 }), RangeError, /^adamw: option lr must be finite, got NaN/],
    ['adamw negative lr', () => n.adamw(p.handle, g.handle, m.handle, v.handle, { ...adam, lr: -1 }), RangeError, /^adamw: option lr must be >= 0/],
    ['adamw beta1 = 1', () => n.adamw(p.handle, g.handle, m.handle, v.handle, { ...adam, beta1: 1 }), RangeError, /^adamw: option beta1 must be in \[0, 1\)/],
    ['adamw beta2 < 0', () => n.adamw(p.handle, g.handle, m.handle, v.handle, { ...adam, beta2: -0.1 }), RangeError, /^adamw: option beta2 must be in \[0, 1\)/],
    ['adamw eps = 0', () => n.adamw(p.handle, g.handle, m.handle, v.handle, { ...adam, eps: 0 }), RangeError, /^adamw: option eps must be > 0/],
    ['adamw negative weightDecay', () => n.adamw(p.handle, g.handle, m.handle, v.handle, { ...adam, weightDecay: -0.1 }), RangeError, /^adamw: option weightDecay must be >= 0/],
    ['adamw string beta1', () => n.adamw(p.handle, g.handle, m.handle, v.handle, { ...adam, beta1: '0.9' }), TypeError, /^adamw: option beta1 must be a number/],
    ['adamw grad shape', () => n.adamw(p.handle, zeros([5]).handle, m.handle, v.handle, adam), RangeError, /^adamw: grad must have shape \[4\], got \[5\]/],
    ['adamw int grad', () => n.adamw(p.handle, i32([0, 0, 0, 0], [4]).handle, m.handle, v.handle, adam), TypeError, /^adamw: grad must be float32/],
    ['adamw m is param', () => n.adamw(p.handle, g.handle, p.handle, v.handle, adam), RangeError, /^adamw: param must not overlap m/],
    ['adamw v overlapping grad', () => n.adamw(p.handle, big.window(0, [4]).handle, m.handle, big.window(2, [4]).handle, adam), RangeError, /^adamw: v must not overlap grad/],
    ['adamw mask shape', () => n.adamw(p.handle, g.handle, m.handle, v.handle, { ...adam, decayMask: zeros([3]).handle }), RangeError, /^adamw: option decayMask must have shape \[4\]/],
    ['adamw disposed v', () => n.adamw(p.handle, g.handle, m.handle, disposed.handle, adam), Error, /^adamw: v has been disposed/],
    ['adamw missing options', () => n.adamw(p.handle, g.handle, m.handle, v.handle), TypeError, /^adamw: expected 5 argument/],
    // sgd
    ['sgd momentum without buf', () => n.sgd(p.handle, g.handle, null, { lr: 0.1, momentum: 0.9, firstStep: true }), RangeError, /^sgd: momentum 0.9 needs a momentum buffer/],
    ['sgd momentum without firstStep', () => n.sgd(p.handle, g.handle, m.handle, { lr: 0.1, momentum: 0.9 }), TypeError, /^sgd: option firstStep is required/],
    ['sgd nesterov without momentum', () => n.sgd(p.handle, g.handle, null, { lr: 0.1, nesterov: true }), RangeError, /^sgd: nesterov needs momentum > 0 and dampening = 0/],
    ['sgd nesterov with dampening', () => n.sgd(p.handle, g.handle, m.handle, { lr: 0.1, momentum: 0.9, dampening: 0.1, nesterov: true, firstStep: true }), RangeError, /^sgd: nesterov needs/],
    ['sgd without lr', () => n.sgd(p.handle, g.handle, null, {}), TypeError, /^sgd: option lr is required/],
    ['sgd Infinity lr', () => n.sgd(p.handle, g.handle, null, { lr: Infinity }), RangeError, /^sgd: option lr must be finite/],
    ['sgd negative momentum', () => n.sgd(p.handle, g.handle, m.handle, { lr: 0.1, momentum: -1 }), RangeError, /^sgd: option momentum must be >= 0/],
    ['sgd buf is param', () => n.sgd(p.handle, g.handle, p.handle, { lr: 0.1, momentum: 0.9, firstStep: true }), RangeError, /^sgd: buf must not overlap param/],
    ['sgd buf shape', () => n.sgd(p.handle, g.handle, zeros([3]).handle, { lr: 0.1, momentum: 0.9, firstStep: true }), RangeError, /^sgd: buf must have shape \[4\]/],
    ['sgd nesterov not a boolean', () => n.sgd(p.handle, g.handle, null, { lr: 0.1, nesterov: 1 }), TypeError, /^sgd: option nesterov must be a boolean/],
    // sumSquares, clipGradNorm, scale
    ['sumSquares of int32', () => n.sumSquares(ids.handle), TypeError, /^sumSquares: x must be float32/],
    ['sumSquares of a number', () => n.sumSquares(3), TypeError, /^sumSquares: x must be a Tensor/],
    ['clipGradNorm maxNorm 0', () => n.clipGradNorm(g.handle, 0), RangeError, /^clipGradNorm: maxNorm must be > 0, got 0/],
    ['clipGradNorm maxNorm NaN', () => n.clipGradNorm(g.handle, NaN), RangeError, /^clipGradNorm: maxNorm must be finite, got NaN/],
    ['clipGradNorm maxNorm string', () => n.clipGradNorm(g.handle, '1'), TypeError, /^clipGradNorm: maxNorm must be a number/],
    ['clipGradNorm negative eps', () => n.clipGradNorm(g.handle, 1, { eps: -1 }), RangeError, /^clipGradNorm: option eps must be >= 0/],
    ['clipGradNorm disposed', () => n.clipGradNorm(disposed.handle, 1), Error, /^clipGradNorm: grad has been disposed/],
    ['scale by NaN', () => n.scale(g.handle, NaN), RangeError, /^scale: s must be finite, got NaN/],
    ['scale by a string', () => n.scale(g.handle, 'x'), TypeError, /^scale: s must be a number/],
    ['scale of int32', () => n.scale(ids.handle, 2), TypeError, /^scale: x must be float32/],
  ];
  for (const [label, fn, cls, message] of cases) throwsExactly(t, fn, cls, message, label);
});
