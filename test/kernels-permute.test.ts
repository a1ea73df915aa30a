// kernels-permute.test.ts — the head split/merge permutation through the binding (native/addon/ops_permute.cpp) and
// the typed wrappers (lib/kernels.ts) against a JavaScript reference: permute0213 into new and given (NaN-poisoned)
// outputs, accumulation into a pre-filled out, splitHeads / mergeHeads and their round trip, empty dimensions; and
// every class of bad argument throwing the right error class with a message naming the op, before anything is written.
import anyTest from 'ava';

import { Tensor, full, kernels, tensor, zeros } from '../lib/index.ts';
import { native } from '../lib/native.ts';
import { assertClose } from './helpers/close.ts';
import { throwsExactly, type ErrorClass } from './helpers/check.ts';
import { Random } from './helpers/random.ts';

const test = anyTest.serial;
const n = native() as any;

const randArray = (r: Random, len: number, lo = -1, hi = 1) =>
  Array.from({ length: len }, () => Math.fround(r.uniform(lo, hi))); // exact in float32
const f32 = (data: ArrayLike<number>, shape: number[]) => tensor(Float32Array.from(data), shape);
const wrap = (h: unknown) => new Tensor(h as any);
const prod = (s: number[]) => s.reduce((a, x) => a * x, 1);

/** out [A, C, B, D] = x [A, B, C, D] with the middle dimensions swapped. */
function permuteRef(x: ArrayLike<number>, [A, B, C, D]: number[]): number[] {
  const out = new Array(x.length);
  for (let a = 0; a < A; a++)
    for (let b = 0; b < B; b++)
      for (let c = 0; c < C; c++)
        for (let d = 0; d < D; d++) out[((a * C + c) * B + b) * D + d] = x[((a * B + b) * C + c) * D + d];
  return out;
}

const shapes: number[][] = [
  [1, 1, 1, 1],
  [2, 7, 3, 1],
  [1, 33, 7, 2],
  [3, 7, 33, 5],
  [2, 1, 7, 33],
  [2, 7, 1, 33],
  [1, 3, 5, 129],
  [2, 300, 5, 3],
  [2, 16, 8, 64],
];

// ---- values -------------------------------------------------------------------------------------------------------

test('permute0213 matches the reference, into a new out and into a given (poisoned) one', (t) => {
  shapes.forEach((s, idx) => {
    const [A, B, C, D] = s;
    const x = randArray(new Random(100 + idx), prod(s));
    const src = f32(x, s);
    const want = permuteRef(x, s);
    const y = wrap(n.permute0213(src.handle));
    const out = full([A, C, B, D], NaN);
    try {
      t.deepEqual(y.shape, [A, C, B, D], `${s}: shape`);
      t.deepEqual(Array.from(y.dataSync()), want, `${s}: new out`);
      const r = n.permute0213(src.handle, out.handle, { accumulate: false });
      t.is(r, out.handle, `${s}: returns the given out`);
      t.deepEqual(Array.from(out.dataSync()), want, `${s}: given out`);
    } finally {
      for (const z of [src, y, out]) z.dispose();
    }
  });
});

test('permute0213 with accumulate adds into out', (t) => {
  shapes.forEach((s, idx) => {
    const [A, B, C, D] = s;
    const r = new Random(200 + idx);
    const x = randArray(r, prod(s)), init = randArray(r, prod(s), 1, 2);
    const src = f32(x, s), out = f32(init, [A, C, B, D]);
    try {
      n.permute0213(src.handle, out.handle, { accumulate: true });
      const p = permuteRef(x, s);
      assertClose(t, out.dataSync(), p.map((v, i) => Math.fround(init[i] + v)), { what: `${s}: out += permuted` });
    } finally {
      for (const z of [src, out]) z.dispose();
    }
  });
});

test('splitHeads and mergeHeads move heads, accumulate, and round-trip to the identity', (t) => {
  const cases: [number, number, number, number][] = [[2, 7, 3, 5], [1, 33, 4, 16], [3, 1, 2, 7], [2, 9, 1, 33], [1, 65, 12, 1]];
  cases.forEach(([B, T, H, Dh], idx) => {
    const r = new Random(300 + idx);
    const x = randArray(r, B * T * H * Dh), init = randArray(r, B * T * H * Dh, 1, 2);
    const xt = f32(x, [B, T, H * Dh]);
    const heads = wrap(n.splitHeads(xt.handle, H));
    const merged = wrap(n.mergeHeads(heads.handle));
    const acc = f32(init, [B, T, H * Dh]);
    const label = `[${B}, ${T}, ${H} * ${Dh}]`;
    try {
      t.deepEqual(heads.shape, [B, H, T, Dh], `${label}: split shape`);
      t.deepEqual(Array.from(heads.dataSync()), permuteRef(x, [B, T, H, Dh]), `${label}: split values`);
      t.deepEqual(merged.shape, [B, T, H * Dh], `${label}: merge shape`);
      t.deepEqual(Array.from(merged.dataSync()), x, `${label}: split then merge is the identity`);
      t.is(n.mergeHeads(heads.handle, acc.handle, { accumulate: true }), acc.handle, `${label}: returns the given out`);
      assertClose(t, acc.dataSync(), x.map((v, i) => Math.fround(init[i] + v)), { what: `${label}: merge accumulates` });
    } finally {
      for (const z of [xt, heads, merged, acc]) z.dispose();
    }
  });
});

test('the typed wrappers in lib/kernels.ts', (t) => {
  const [B, T, H, Dh] = [2, 5, 3, 4];
  const x = randArray(new Random(7), B * T * H * Dh);
  const xt = f32(x, [B, T, H * Dh]);
  const heads = kernels.splitHeads(xt, H);
  t.deepEqual(heads.shape, [B, H, T, Dh]);
  t.deepEqual(Array.from(heads.dataSync()), permuteRef(x, [B, T, H, Dh]));
  const merged = kernels.mergeHeads(heads);
  t.deepEqual(Array.from(merged.dataSync()), x);
  const out = zeros([B, T, H * Dh]);
  t.is(kernels.mergeHeads(heads, { out }), out, 'mergeHeads returns the given out');
  t.is(kernels.mergeHeads(heads, { out, accumulate: true }), out);
  assertClose(t, out.dataSync(), x.map((v) => Math.fround(2 * v)), { what: 'mergeHeads accumulates' });
  const src = f32(x, [B, T, H, Dh]);
  const p = kernels.permute0213(src);
  t.deepEqual(p.shape, [B, H, T, Dh]);
  t.deepEqual(Array.from(p.dataSync()), permuteRef(x, [B, T, H, Dh]));
  const pout = full([B, H, T, Dh], 1);
  t.is(kernels.permute0213(src, { out: pout, accumulate: true }), pout);
  assertClose(t, pout.dataSync(), permuteRef(x, [B, T, H, Dh]).map((v) => Math.fround(1 + v)), { what: 'permute0213 accumulates' });
  throwsExactly(t, () => kernels.splitHeads('x' as any, 2), TypeError, /^splitHeads: x must be a Tensor, got "x"/, 'wrapper, non-tensor x');
  throwsExactly(t, () => kernels.mergeHeads(heads, { out: 3 as any }), TypeError, /^mergeHeads: out must be a Tensor, got 3/, 'wrapper, non-tensor out');
  throwsExactly(t, () => kernels.permute0213(src, 5 as any), TypeError, /^permute0213: options must be an object/, 'wrapper, bad options');
  throwsExactly(t, () => kernels.permute0213(src, { accumulate: true }), RangeError, /^permute0213: accumulate = true adds into out, but no out was given/, 'wrapper, accumulate without out');
  for (const z of [xt, heads, merged, out, src, p, pout]) z.dispose();
});

test('empty dimensions give empty outputs and write nothing', (t) => {
  for (const s of [[0, 2, 3, 4], [2, 0, 3, 4], [2, 3, 0, 4], [2, 3, 4, 0]]) {
    const [A, B, C, D] = s;
    const src = zeros(s);
    const y = wrap(n.permute0213(src.handle));
    t.deepEqual(y.shape, [A, C, B, D]);
    t.is(y.size, 0);
    for (const z of [src, y]) z.dispose();
  }
  const x = zeros([2, 0, 6]);
  const heads = wrap(n.splitHeads(x.handle, 3));
  t.deepEqual(heads.shape, [2, 3, 0, 2]);
  const merged = wrap(n.mergeHeads(heads.handle));
  t.deepEqual(merged.shape, [2, 0, 6]);
  const xz = zeros([2, 3, 0]);
  const hz = wrap(n.splitHeads(xz.handle, 5));
  t.deepEqual(hz.shape, [2, 5, 3, 0]);
  for (const z of [x, heads, merged, xz, hz]) z.dispose();
});

// ---- errors -------------------------------------------------------------------------------------------------------

test('permute0213: bad arguments throw the right class naming the op, before anything is written', (t) => {
  const src = f32(randArray(new Random(1), 2 * 3 * 4 * 5), [2, 3, 4, 5]);
  const out = full([2, 4, 3, 5], 7);
  const srcI = zeros([2, 3, 4, 5], { dtype: 'int32' }), outI = zeros([2, 4, 3, 5], { dtype: 'int32' });
  const src3 = zeros([6, 4, 5]), src5 = zeros([1, 2, 3, 4, 5]);
  const outBad = zeros([2, 3, 4, 5]);
  const gone = zeros([2, 3, 4, 5]);
  gone.dispose();
  const big = zeros([2 * 120]);
  const srcView = wrap(big.handle.view(0, [2, 3, 4, 5])), outView = wrap(big.handle.view(100, [2, 4, 3, 5])); // partial overlap
  const sq = zeros([1, 2, 2, 3]); // its permutation has its own shape: out = src passes the shape check
  const P = (...a: unknown[]) => () => n.permute0213(...a);
  const cases: [string, () => unknown, ErrorClass, RegExp][] = [
    ['no arguments', P(), TypeError, /^permute0213: expected 1 argument/],
    ['a non-tensor src', P({}), TypeError, /^permute0213: src must be a Tensor, got an object/],
    ['a number as src', P(3), TypeError, /^permute0213: src must be a Tensor, got 3/],
    ['a disposed src', P(gone.handle), Error, /^permute0213: src has been disposed/],
    ['an int32 src', P(srcI.handle), TypeError, /^permute0213: src must be float32/],
    ['a rank-3 src', P(src3.handle), RangeError, /^permute0213: src must have rank 4, got shape \[6, 4, 5\]/],
    ['a rank-5 src', P(src5.handle), RangeError, /^permute0213: src must have rank 4, got shape \[1, 2, 3, 4, 5\]/],
    ['a non-tensor out', P(src.handle, 'y'), TypeError, /^permute0213: out must be a Tensor, got 'y'/],
    ['an int32 out', P(src.handle, outI.handle), TypeError, /^permute0213: out must be float32/],
    ['out of the wrong shape', P(src.handle, outBad.handle), RangeError, /^permute0213: out must have shape \[2, 4, 3, 5\], got \[2, 3, 4, 5\]/],
    ['out = src', P(sq.handle, sq.handle), RangeError, /^permute0213: out must not overlap src/],
    ['overlapping windows', P(srcView.handle, outView.handle), RangeError, /^permute0213: out must not overlap src/],
    ['options not an object', P(src.handle, out.handle, 5), TypeError, /^permute0213: options must be an object/],
    ['accumulate NaN', P(src.handle, out.handle, { accumulate: NaN }), TypeError, /^permute0213: option accumulate must be a boolean, got NaN/],
    ['accumulate a string', P(src.handle, out.handle, { accumulate: 'yes' }), TypeError, /^permute0213: option accumulate must be a boolean/],
    ['accumulate without out', P(src.handle, null, { accumulate: true }), RangeError, /^permute0213: accumulate = true adds into out, but no out was given/],
  ];
  for (const [label, fn, cls, msg] of cases) throwsExactly(t, fn, cls, msg, `permute0213 with ${label}`);
  t.true(Array.from(out.dataSync()).every((v) => v === 7), 'out untouched');
  t.true(Array.from(big.dataSync()).every((v) => v === 0), 'overlapping buffer untouched');
  for (const z of [src, out, srcI, outI, src3, src5, outBad, srcView, outView, big, sq]) z.dispose();
});

test('splitHeads: bad arguments throw the right class naming the op', (t) => {
  const x = zeros([2, 3, 12]), xi = zeros([2, 3, 12], { dtype: 'int32' }), x4 = zeros([2, 3, 4, 3]), x2 = zeros([6, 12]);
  const gone = zeros([2, 3, 12]);
  gone.dispose();
  const S = (...a: unknown[]) => () => n.splitHeads(...a);
  const cases: [string, () => unknown, ErrorClass, RegExp][] = [
    ['one argument', S(x.handle), TypeError, /^splitHeads: expected 2 argument/],
    ['a non-tensor x', S([1, 2], 2), TypeError, /^splitHeads: x must be a Tensor, got an array of length 2/],
    ['a disposed x', S(gone.handle, 2), Error, /^splitHeads: x has been disposed/],
    ['an int32 x', S(xi.handle, 2), TypeError, /^splitHeads: x must be float32/],
    ['a rank-4 x', S(x4.handle, 2), RangeError, /^splitHeads: x must have rank 3, got shape \[2, 3, 4, 3\]/],
    ['a rank-2 x', S(x2.handle, 2), RangeError, /^splitHeads: x must have rank 3, got shape \[6, 12\]/],
    ['heads a string', S(x.handle, '2'), TypeError, /^splitHeads: heads must be an integer, got '2'/],
    ['heads undefined', S(x.handle, undefined), TypeError, /^splitHeads: heads must be an integer, got undefined/],
    ['heads NaN', S(x.handle, NaN), RangeError, /^splitHeads: heads must be an integer, got NaN/],
    ['heads 2.5', S(x.handle, 2.5), RangeError, /^splitHeads: heads must be an integer, got 2.5/],
    ['heads 0', S(x.handle, 0), RangeError, /^splitHeads: heads must be between 1 and 2147483647, got 0/],
    ['heads -3', S(x.handle, -3), RangeError, /^splitHeads: heads must be between 1 and 2147483647, got -3/],
    ['heads not dividing', S(x.handle, 5), RangeError, /^splitHeads: heads = 5 must divide the last dimension of x \(B, T, H \* Dh\), got x \[2, 3, 12\]/],
  ];
  for (const [label, fn, cls, msg] of cases) throwsExactly(t, fn, cls, msg, `splitHeads with ${label}`);
  for (const z of [x, xi, x4, x2]) z.dispose();
});

test('mergeHeads: bad arguments throw the right class naming the op, before anything is written', (t) => {
  const x = zeros([2, 3, 4, 5]), out = full([2, 4, 15], 7);
  const xi = zeros([2, 3, 4, 5], { dtype: 'int32' }), x3 = zeros([2, 4, 15]);
  const outBad = zeros([2, 4, 3, 5]), outBad2 = zeros([2, 3, 20]), outI = zeros([2, 4, 15], { dtype: 'int32' });
  const gone = zeros([2, 3, 4, 5]);
  gone.dispose();
  const big = zeros([240]);
  const xView = wrap(big.handle.view(0, [2, 3, 4, 5])), outView = wrap(big.handle.view(119, [2, 4, 15]));
  const M = (...a: unknown[]) => () => n.mergeHeads(...a);
  const cases: [string, () => unknown, ErrorClass, RegExp][] = [
    ['no arguments', M(), TypeError, /^mergeHeads: expected 1 argument/],
    ['a non-tensor x', M('x'), TypeError, /^mergeHeads: x must be a Tensor, got 'x'/],
    ['a disposed x', M(gone.handle), Error, /^mergeHeads: x has been disposed/],
    ['an int32 x', M(xi.handle), TypeError, /^mergeHeads: x must be float32/],
    ['a rank-3 x', M(x3.handle), RangeError, /^mergeHeads: x must have rank 4, got shape \[2, 4, 15\]/],
    ['a disposed out', M(x.handle, gone.handle), Error, /^mergeHeads: out has been disposed/],
    ['an int32 out', M(x.handle, outI.handle), TypeError, /^mergeHeads: out must be float32/],
    ['a rank-4 out', M(x.handle, outBad.handle), RangeError, /^mergeHeads: out must have shape \[2, 4, 15\], got \[2, 4, 3, 5\]/],
    ['out of the wrong shape', M(x.handle, outBad2.handle), RangeError, /^mergeHeads: out must have shape \[2, 4, 15\], got \[2, 3, 20\]/],
    ['overlapping windows', M(xView.handle, outView.handle), RangeError, /^mergeHeads: out must not overlap x/],
    ['options an array', M(x.handle, out.handle, []), TypeError, /^mergeHeads: options must be an object/],
    ['accumulate NaN', M(x.handle, out.handle, { accumulate: NaN }), TypeError, /^mergeHeads: option accumulate must be a boolean, got NaN/],
    ['accumulate without out', M(x.handle, undefined, { accumulate: true }), RangeError, /^mergeHeads: accumulate = true adds into out, but no out was given/],
  ];
  for (const [label, fn, cls, msg] of cases) throwsExactly(t, fn, cls, msg, `mergeHeads with ${label}`);
  t.true(Array.from(out.dataSync()).every((v) => v === 7), 'out untouched');
  t.true(Array.from(big.dataSync()).every((v) => v === 0), 'overlapping buffer untouched');
  for (const z of [x, out, xi, x3, outBad, outBad2, outI, xView, outView, big]) z.dispose();
});
