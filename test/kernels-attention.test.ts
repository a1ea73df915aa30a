// kernels-attention.test.ts — fused scaled-dot-product attention through the binding (native/addon/ops_attention.cpp)
// against a small JavaScript reference: forward values and lse with the default and an explicit scale, causal masks
// with Tq != Tk, grouped- and multi-query heads, key lengths (0 and Tk included); the backward's accumulation into
// dq, dk, dv against analytic gradients; and every class of bad argument throwing the right error class with a
// message naming the op.
import anyTest, { type ExecutionContext } from 'ava';

import { Tensor, synchronizeSync, tensor, zeros } from '../lib/index.ts';
import { native } from '../lib/native.ts';
import { assertClose } from './helpers/close.ts';
import { throwsExactly, type ErrorClass } from './helpers/check.ts';
import { Random } from './helpers/random.ts';

const test = anyTest.serial;
const n = native() as any;

const randArray = (r: Random, len: number, lo = -1, hi = 1) =>
  Array.from({ length: len }, () => Math.fround(r.uniform(lo, hi))); // exact in float32
const f32 = (data: ArrayLike<number>, shape: number[]) => tensor(Float32Array.from(data), shape);
const i32 = (data: number[]) => tensor(Int32Array.from(data), [data.length]);
const wrap = (h: unknown) => new Tensor(h as any);

// ---- reference ----------------------------------------------------------------------------------------------------

interface Cfg {
  B: number;
  Hq: number;
  Hkv: number;
  Tq: number;
  Tk: number;
  D: number;
  causal: boolean;
  scale?: number;
  lens?: number[];
}

/** o, lse and (given dout) dq, dk, dv, by the textbook formulas with the whole score matrix. */
function attentionRef(c: Cfg, q: number[], k: number[], v: number[], dout?: number[]) {
  const { B, Hq, Hkv, Tq, Tk, D } = c;
  const scale = c.scale ?? 1 / Math.sqrt(D);
  const G = Hq / Hkv;
  const o = new Array(B * Hq * Tq * D).fill(0), lse = new Array(B * Hq * Tq).fill(-Infinity);
  const dq = new Array(q.length).fill(0), dk = new Array(k.length).fill(0), dv = new Array(v.length).fill(0);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++) {
      const bh = b * Hq + h, bk = b * Hkv + Math.floor(h / G);
      for (let i = 0; i < Tq; i++) {
        const qi = (bh * Tq + i) * D;
        const s: number[] = [];
        for (let j = 0; j < Tk; j++) {
          const seen = (!c.lens || j < c.lens[b]) && (!c.causal || j <= i + Tk - Tq);
          let x = 0;
          for (let e = 0; e < D; e++) x += q[qi + e] * k[(bk * Tk + j) * D + e];
          s.push(seen ? x * scale : -Infinity);
        }
        const mx = Math.max(...s);
        if (mx === -Infinity) continue;
        const sum = s.reduce((a, x) => a + Math.exp(x - mx), 0);
        lse[bh * Tq + i] = mx + Math.log(sum);
        const p = s.map((x) => Math.exp(x - mx) / sum);
        for (let j = 0; j < Tk; j++) for (let e = 0; e < D; e++) o[qi + e] += p[j] * v[(bk * Tk + j) * D + e];
        if (!dout) continue;
        const dp = p.map((_, j) => {
          let y = 0;
          for (let e = 0; e < D; e++) y += dout[qi + e] * v[(bk * Tk + j) * D + e];
          return y;
        });
        const delta = p.reduce((a, pj, j) => a + pj * dp[j], 0);
        for (let j = 0; j < Tk; j++) {
          const ds = p[j] * (dp[j] - delta) * scale;
          for (let e = 0; e < D; e++) {
            const kj = (bk * Tk + j) * D + e;
            dq[qi + e] += ds * k[kj];
            dk[kj] += ds * q[qi + e];
            dv[kj] += p[j] * dout[qi + e];
          }
        }
      }
    }
  return { o, lse, dq, dk, dv };
}

const configs: [string, Cfg][] = [
  ['plain', { B: 2, Hq: 2, Hkv: 2, Tq: 7, Tk: 7, D: 5, causal: false }],
  ['causal', { B: 1, Hq: 2, Hkv: 2, Tq: 9, Tk: 9, D: 4, causal: true, scale: 0.7 }],
  ['causal, Tq < Tk (KV cache)', { B: 2, Hq: 2, Hkv: 1, Tq: 3, Tk: 11, D: 6, causal: true }],
  ['causal, Tq > Tk (first queries see nothing)', { B: 1, Hq: 1, Hkv: 1, Tq: 8, Tk: 5, D: 3, causal: true }],
  ['GQA with key lengths 0, Tk and between', { B: 3, Hq: 4, Hkv: 2, Tq: 6, Tk: 6, D: 8, causal: false, lens: [0, 6, 2] }],
  ['MQA, causal, key lengths', { B: 2, Hq: 3, Hkv: 1, Tq: 70, Tk: 70, D: 4, causal: true, lens: [70, 33] }],
];

function makeInputs(c: Cfg, seed: number) {
  const r = new Random(seed);
  const nq = c.B * c.Hq * c.Tq * c.D, nk = c.B * c.Hkv * c.Tk * c.D;
  return { q: randArray(r, nq), k: randArray(r, nk), v: randArray(r, nk), dout: randArray(r, nq), init: randArray(r, nq + 2 * nk, 1, 2) };
}

function options(c: Cfg, kl?: Tensor) {
  const o: Record<string, unknown> = { causal: c.causal };
  if (c.scale !== undefined) o.scale = c.scale;
  if (kl) o.keyLengths = kl.handle;
  return o;
}

// ---- values -------------------------------------------------------------------------------------------------------

test('attentionForward matches the reference: o and lse, masks, GQA/MQA, key lengths', (t) => {
  configs.forEach(([label, c], idx) => {
    const x = makeInputs(c, 10 + idx);
    const q = f32(x.q, [c.B, c.Hq, c.Tq, c.D]), k = f32(x.k, [c.B, c.Hkv, c.Tk, c.D]), v = f32(x.v, [c.B, c.Hkv, c.Tk, c.D]);
    const kl = c.lens ? i32(c.lens) : undefined;
    const [oh, lh] = n.attentionForward(q.handle, k.handle, v.handle, options(c, kl));
    const o = wrap(oh), lse = wrap(lh);
    try {
      t.deepEqual(o.shape, [c.B, c.Hq, c.Tq, c.D], `${label}: o shape`);
      t.deepEqual(lse.shape, [c.B, c.Hq, c.Tq], `${label}: lse shape`);
      const ref = attentionRef(c, x.q, x.k, x.v);
      assertClose(t, o.dataSync(), ref.o, { abs: 1e-5, rel: 1e-5, what: `${label}: o` });
      assertClose(t, lse.dataSync(), ref.lse, { abs: 1e-5, rel: 1e-5, what: `${label}: lse` });
    } finally {
      for (const z of [q, k, v, o, lse, kl]) z?.dispose();
    }
  });
});

test('a query that sees no key gets o = 0 and lse = -Infinity', (t) => {
  const q = f32([1, 2, 3, 4], [1, 1, 2, 2]), k = f32([1, 1, 1, 1], [1, 1, 2, 2]), v = f32([5, 6, 7, 8], [1, 1, 2, 2]);
  const kl = i32([0]);
  const [oh, lh] = n.attentionForward(q.handle, k.handle, v.handle, { keyLengths: kl.handle });
  const o = wrap(oh), lse = wrap(lh);
  t.deepEqual(Array.from(o.dataSync()), [0, 0, 0, 0]);
  t.deepEqual(Array.from(lse.dataSync()), [-Infinity, -Infinity]);
  // With one key, every query returns that key's value and lse is its scaled score.
  const kl1 = i32([1]);
  const [oh1, lh1] = n.attentionForward(q.handle, k.handle, v.handle, { keyLengths: kl1.handle, scale: 0.5 });
  const o1 = wrap(oh1), lse1 = wrap(lh1);
  t.deepEqual(Array.from(o1.dataSync()), [5, 6, 5, 6]);
  assertClose(t, lse1.dataSync(), [1.5, 3.5], { abs: 1e-6, rel: 1e-6, what: 'lse with one key' });
  for (const z of [q, k, v, kl, o, lse, kl1, o1, lse1]) z.dispose();
});

test('empty dimensions: D = 0, Tk = 0 and Tq = 0', (t) => {
  // D = 0: every score is 0, so lse = log(number of keys seen); o is empty.
  const q0 = zeros([1, 1, 3, 0]), k0 = zeros([1, 1, 4, 0]);
  const [oh, lh] = n.attentionForward(q0.handle, k0.handle, k0.handle, { causal: true });
  t.deepEqual(wrap(oh).shape, [1, 1, 3, 0]);
  assertClose(t, wrap(lh).dataSync(), [Math.log(2), Math.log(3), Math.log(4)], { abs: 1e-6, rel: 1e-6, what: 'lse with D = 0' });
  // Tk = 0: no query sees a key; the backward adds nothing.
  const q = f32([1, 2, 3, 4], [1, 1, 2, 2]), kE = zeros([1, 1, 0, 2]);
  const [oh2, lh2] = n.attentionForward(q.handle, kE.handle, kE.handle);
  t.deepEqual(Array.from(wrap(oh2).dataSync()), [0, 0, 0, 0]);
  t.deepEqual(Array.from(wrap(lh2).dataSync()), [-Infinity, -Infinity]);
  const dq = f32([1, 1, 1, 1], [1, 1, 2, 2]), dkE = zeros([1, 1, 0, 2]), dvE = zeros([1, 1, 0, 2]);
  n.attentionBackward(q.handle, kE.handle, kE.handle, oh2, lh2, q.handle, dq.handle, dkE.handle, dvE.handle);
  t.deepEqual(Array.from(dq.dataSync()), [1, 1, 1, 1]);
  // Tq = 0: empty outputs.
  const qE = zeros([2, 1, 0, 2]), k = zeros([2, 1, 3, 2]);
  const [oh3, lh3] = n.attentionForward(qE.handle, k.handle, k.handle, { causal: true });
  t.deepEqual(wrap(oh3).shape, [2, 1, 0, 2]);
  t.deepEqual(wrap(lh3).shape, [2, 1, 0]);
  for (const h of [oh, lh, oh2, lh2, oh3, lh3]) h.dispose();
  for (const z of [q0, k0, q, kE, dq, dkE, dvE, qE, k]) z.dispose();
});

test('attentionBackward accumulates the reference gradients into dq, dk, dv', (t) => {
  configs.forEach(([label, c], idx) => {
    const x = makeInputs(c, 20 + idx);
    const qs = [c.B, c.Hq, c.Tq, c.D], ks = [c.B, c.Hkv, c.Tk, c.D];
    const nq = x.q.length, nk = x.k.length;
    const q = f32(x.q, qs), k = f32(x.k, ks), v = f32(x.v, ks), dout = f32(x.dout, qs);
    const kl = c.lens ? i32(c.lens) : undefined;
    const [oh, lh] = n.attentionForward(q.handle, k.handle, v.handle, options(c, kl));
    const dqInit = x.init.slice(0, nq), dkInit = x.init.slice(nq, nq + nk), dvInit = x.init.slice(nq + nk);
    const dq = f32(dqInit, qs), dk = f32(dkInit, ks), dv = f32(dvInit, ks);
    const o = wrap(oh), lse = wrap(lh);
    try {
      const r = n.attentionBackward(q.handle, k.handle, v.handle, oh, lh, dout.handle, dq.handle, dk.handle, dv.handle, options(c, kl));
      t.is(r, undefined, `${label}: returns undefined`);
      const ref = attentionRef(c, x.q, x.k, x.v, x.dout);
      assertClose(t, dq.dataSync(), ref.dq.map((g, i) => g + dqInit[i]), { abs: 2e-5, rel: 1e-5, what: `${label}: dq` });
      assertClose(t, dk.dataSync(), ref.dk.map((g, i) => g + dkInit[i]), { abs: 2e-5, rel: 1e-5, what: `${label}: dk` });
      assertClose(t, dv.dataSync(), ref.dv.map((g, i) => g + dvInit[i]), { abs: 2e-5, rel: 1e-5, what: `${label}: dv` });
    } finally {
      for (const z of [q, k, v, dout, kl, o, lse, dq, dk, dv]) z?.dispose();
    }
  });
});

// ---- errors -------------------------------------------------------------------------------------------------------

test('attentionForward: bad arguments throw the right class naming the op', (t) => {
  const q = zeros([2, 4, 3, 8]), k = zeros([2, 2, 5, 8]), v = zeros([2, 2, 5, 8]);
  const qi = zeros([2, 4, 3, 8], { dtype: 'int32' });
  const q3 = zeros([4, 3, 8]), kBadB = zeros([1, 2, 5, 8]), kBadD = zeros([2, 2, 5, 4]), kBadH = zeros([2, 3, 5, 8]);
  const k0 = zeros([2, 0, 5, 8]);
  const kl = i32([1, 5]), klF = zeros([2]), klShape = i32([1, 2, 3]);
  const gone = zeros([2, 4, 3, 8]);
  gone.dispose();
  const op = 'attentionForward';
  const F = (a: any, b: any, c: any, o?: any) => () => n.attentionForward(a, b, c, o);
  const cases: [string, () => unknown, ErrorClass, RegExp][] = [
    ['too few arguments', () => n.attentionForward(q.handle, k.handle), TypeError, /^attentionForward: expected 3 argument/],
    ['a non-tensor q', F({}, k.handle, v.handle), TypeError, /^attentionForward: q must be a Tensor, got an object/],
    ['a number as v', F(q.handle, k.handle, 3), TypeError, /^attentionForward: v must be a Tensor, got 3/],
    ['a disposed q', F(gone.handle, k.handle, v.handle), Error, /^attentionForward: q has been disposed/],
    ['an int32 q', F(qi.handle, k.handle, v.handle), TypeError, /^attentionForward: q must be float32/],
    ['a rank-3 q', F(q3.handle, k.handle, v.handle), RangeError, /^attentionForward: q must have rank 4, got shape \[4, 3, 8\]/],
    ['v not shaped like k', F(q.handle, k.handle, q.handle), RangeError, /^attentionForward: v must have the shape of k/],
    ['different B', F(q.handle, kBadB.handle, kBadB.handle), RangeError, /^attentionForward: .*must agree on B and D/],
    ['different D', F(q.handle, kBadD.handle, kBadD.handle), RangeError, /^attentionForward: .*must agree on B and D/],
    ['Hq not a multiple of Hkv', F(q.handle, kBadH.handle, kBadH.handle), RangeError, /^attentionForward: the query heads Hq must be a multiple/],
    ['Hkv = 0', F(q.handle, k0.handle, k0.handle), RangeError, /^attentionForward: the query heads Hq must be a multiple/],
    ['options not an object', F(q.handle, k.handle, v.handle, 5), TypeError, /^attentionForward: options must be an object/],
    ['causal not a boolean', F(q.handle, k.handle, v.handle, { causal: 1 }), TypeError, /^attentionForward: option causal must be a boolean/],
    ['scale NaN', F(q.handle, k.handle, v.handle, { scale: NaN }), RangeError, /^attentionForward: option scale must be finite, got NaN/],
    ['scale Infinity', F(q.handle, k.handle, v.handle, { scale: Infinity }), RangeError, /^attentionForward: option scale must be finite/],
    ['scale 0', F(q.handle, k.handle, v.handle, { scale: 0 }), RangeError, /^attentionForward: option scale must be a finite number > 0, got 0/],
    ['scale negative', F(q.handle, k.handle, v.handle, { scale: -1 }), RangeError, /^attentionForward: option scale must be a finite number > 0/],
    ['scale beyond float', F(q.handle, k.handle, v.handle, { scale: 1e300 }), RangeError, /^attentionForward: option scale = 1e\+300 is out of float32 range/],
    ['scale below float', F(q.handle, k.handle, v.handle, { scale: 1e-46 }), RangeError, /^attentionForward: option scale = 1e-46 is out of float32 range \(it rounds to 0\)/],
    ['scale a string', F(q.handle, k.handle, v.handle, { scale: '1' }), TypeError, /^attentionForward: option scale must be a number/],
    ['keyLengths float32', F(q.handle, k.handle, v.handle, { keyLengths: klF.handle }), TypeError, /^attentionForward: option keyLengths must be int32/],
    ['keyLengths of shape [3]', F(q.handle, k.handle, v.handle, { keyLengths: klShape.handle }), RangeError, /^attentionForward: option keyLengths must have shape \[2\], got \[3\]/],
    ['keyLengths not a tensor', F(q.handle, k.handle, v.handle, { keyLengths: [1, 2] }), TypeError, /^attentionForward: option keyLengths must be a Tensor/],
  ];
  for (const [label, fn, cls, msg] of cases) throwsExactly(t, fn, cls, msg, `${op} with ${label}`);
  // Valid calls still work after all that (and keyLengths = null means no padding mask).
  for (const opts of [{ keyLengths: kl.handle }, { keyLengths: null }, undefined]) {
    const [oh, lh] = n.attentionForward(q.handle, k.handle, v.handle, opts);
    t.deepEqual(wrap(oh).shape, [2, 4, 3, 8]);
    oh.dispose();
    lh.dispose();
  }
  for (const z of [q, k, v, qi, q3, kBadB, kBadD, kBadH, k0, kl, klF, klShape]) z.dispose();
});

// Design invariant 7: the kernel's check fails the op on the stream; its outputs then carry that failure (every read
// rejects with it, naming the op), and the check runs before anything is written: windows of the same buffer beside
// a failed gradient keep their values.
test('key lengths outside [0, Tk] are reported by the kernel, naming the op, and nothing is written', (t) => {
  const q = zeros([2, 1, 3, 4]), k = zeros([2, 1, 5, 4]), v = zeros([2, 1, 5, 4]);
  for (const bad of [[1, 6], [-1, 2]]) {
    const kl = i32(bad);
    const [oh, lh] = n.attentionForward(q.handle, k.handle, v.handle, { keyLengths: kl.handle });
    const o = wrap(oh);
    for (let i = 0; i < 2; i++) // every read rejects, not only the first
      t.throws(() => o.dataSync(), { instanceOf: RangeError, message: /^Tensor\.dataSync: this tensor holds the output of a failed op: attentionForward \(cpu stream\): attention_forward: key_lengths\[\d\] = -?\d+ is outside \[0, Tk = 5\]/ });
    // dq is the middle window of a buffer of 7s: the windows around it must stay 7 (no partial or stray write)
    const buf = tensor(new Float32Array(72).fill(7), [72]);
    const dq = wrap(buf.handle.view(24, [2, 1, 3, 4])), before = wrap(buf.handle.view(0, [24])), after = wrap(buf.handle.view(48, [24]));
    const dk = zeros([2, 1, 5, 4]), dv = zeros([2, 1, 5, 4]);
    n.attentionBackward(q.handle, k.handle, v.handle, q.handle, lh, q.handle, dq.handle, dk.handle, dv.handle, { keyLengths: kl.handle });
    t.throws(() => dq.dataSync(), { instanceOf: RangeError, message: /attentionBackward \(cpu stream\): (an input holds the output of a failed op: attentionForward|attention_backward: key_lengths)/ });
    t.throws(() => dk.dataSync(), { instanceOf: RangeError, message: /attentionBackward/ });
    t.true(Array.from(before.dataSync()).every((x) => x === 7), 'the window before dq untouched');
    t.true(Array.from(after.dataSync()).every((x) => x === 7), 'the window after dq untouched');
    // with a valid lse the backward kernel's own check reports it
    const [, lh2] = n.attentionForward(q.handle, k.handle, v.handle, {});
    // (dk and dv of the call above carry its failure, and gradients accumulate: a backward into them fails with it)
    const dq2 = zeros([2, 1, 3, 4]), dk2 = zeros([2, 1, 5, 4]), dv2 = zeros([2, 1, 5, 4]);
    n.attentionBackward(q.handle, k.handle, v.handle, q.handle, lh2, q.handle, dq2.handle, dk2.handle, dv2.handle, { keyLengths: kl.handle });
    t.throws(() => dq2.dataSync(), { instanceOf: RangeError, message: /^Tensor\.dataSync: this tensor holds the output of a failed op: attentionBackward \(cpu stream\): attention_backward: key_lengths/ });
    t.throws(() => synchronizeSync(), { message: /attentionForward.*attentionBackward/ });
    for (const z of [kl, o, dq, dk, dv, dq2, dk2, dv2, buf, before, after]) z.dispose();
    lh.dispose();
    lh2.dispose();
  }
  for (const z of [q, k, v]) z.dispose();
});

test('attentionBackward: bad arguments throw the right class naming the op', (t) => {
  const qs = [2, 4, 3, 8], ks = [2, 2, 5, 8];
  const q = zeros(qs), k = zeros(ks), v = zeros(ks), o = zeros(qs), lse = zeros([2, 4, 3]), dout = zeros(qs);
  const dq = zeros(qs), dk = zeros(ks), dv = zeros(ks);
  const dqBad = zeros([2, 4, 3, 4]), dkBad = zeros([2, 2, 4, 8]), lseBad = zeros([2, 4, 4]), oBad = zeros([2, 4, 3, 7]);
  const dqInt = zeros(qs, { dtype: 'int32' });
  const big = zeros([2 * 4 * 3 * 8 * 2]);
  const dqView = wrap(big.handle.view(0, qs)), doutView = wrap(big.handle.view(8, qs)); // overlapping windows
  const h = (x: Tensor) => x.handle;
  const args = [q, k, v, o, lse, dout, dq, dk, dv].map(h);
  const B = (i: number, x: unknown) => () => {
    const a: unknown[] = [...args];
    a[i] = x;
    return n.attentionBackward(...a);
  };
  const O = (opts: unknown) => () => n.attentionBackward(...args, opts);
  const cases: [string, () => unknown, ErrorClass, RegExp][] = [
    ['too few arguments', () => n.attentionBackward(...args.slice(0, 8)), TypeError, /^attentionBackward: expected 9 argument/],
    ['a non-tensor dout', B(5, 'x'), TypeError, /^attentionBackward: dout must be a Tensor, got 'x'/],
    ['an int32 dq', B(6, h(dqInt)), TypeError, /^attentionBackward: dq must be float32/],
    ['dq of the wrong shape', B(6, h(dqBad)), RangeError, /^attentionBackward: dq must have shape \[2, 4, 3, 8\], got \[2, 4, 3, 4\]/],
    ['dk of the wrong shape', B(7, h(dkBad)), RangeError, /^attentionBackward: dk must have shape \[2, 2, 5, 8\], got \[2, 2, 4, 8\]/],
    ['dv of the wrong shape', B(8, h(dqBad)), RangeError, /^attentionBackward: dv must have shape \[2, 2, 5, 8\]/],
    ['o of the wrong shape', B(3, h(oBad)), RangeError, /^attentionBackward: o must have shape \[2, 4, 3, 8\]/],
    ['lse of the wrong shape', B(4, h(lseBad)), RangeError, /^attentionBackward: lse must have shape \[2, 4, 3\], got \[2, 4, 4\]/],
    ['dq = q', B(6, h(q)), RangeError, /^attentionBackward: dq must not overlap q/],
    ['dk = k', B(7, h(k)), RangeError, /^attentionBackward: dk must not overlap k/],
    ['dv = v', B(8, h(v)), RangeError, /^attentionBackward: dv must not overlap v/],
    ['dq = o', B(6, h(o)), RangeError, /^attentionBackward: dq must not overlap o/],
    ['dk = dv', B(8, h(dk)), RangeError, /^attentionBackward: dk must not overlap dv/],
    ['scale NaN', O({ scale: NaN }), RangeError, /^attentionBackward: option scale must be finite/],
    ['scale 0', O({ scale: 0 }), RangeError, /^attentionBackward: option scale must be a finite number > 0/],
    ['keyLengths float32', O({ keyLengths: h(lse) }), TypeError, /^attentionBackward: option keyLengths must be int32/],
  ];
  for (const [label, fn, cls, msg] of cases) throwsExactly(t, fn, cls, msg, `attentionBackward with ${label}`);
  // Overlapping windows of one buffer (partial overlap) are refused too.
  const a2 = [...args];
  a2[5] = h(doutView);
  a2[6] = h(dqView);
  throwsExactly(t, () => n.attentionBackward(...a2), RangeError, /^attentionBackward: dq must not overlap dout/, 'overlapping windows');
  // Nothing above ran: the gradients are still zero.
  t.true([dq, dk, dv].every((g) => Array.from(g.dataSync()).every((x) => x === 0)));
  for (const z of [q, k, v, o, lse, dout, dq, dk, dv, dqBad, dkBad, lseBad, oBad, dqInt, dqView, doutView, big]) z.dispose();
});
