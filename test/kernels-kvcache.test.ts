// kernels-kvcache.test.ts — appending to a KV cache through the binding (native/addon/ops_kvcache.cpp) and the typed
// wrapper (lib/kernels.ts) against a JavaScript reference: windows at the start, middle and end of NaN-poisoned and
// filled caches, a prefill followed by one-position appends, the returned object; and every class of bad argument
// throwing the right error class with a message naming the op, before anything is written.
import anyTest from 'ava';

import { Tensor, full, kernels, tensor, zeros } from '../lib/index.ts';
import { native } from '../lib/native.ts';
import { throwsExactly, type ErrorClass } from './helpers/check.ts';
import { Random } from './helpers/random.ts';

const test = anyTest.serial;
const n = native() as any;

const randArray = (r: Random, len: number) => Array.from({ length: len }, () => Math.fround(r.uniform()));
const f32 = (data: ArrayLike<number>, shape: number[]) => tensor(Float32Array.from(data), shape);
const wrap = (h: unknown) => new Tensor(h as any);

/** cache [B, H, Tmax, D] with [:, :, pos:pos+n, :] replaced by src [B, H, n, D]. */
function appendRef(cache: ArrayLike<number>, src: ArrayLike<number>, [B, H, Tmax, D]: number[], nn: number, pos: number): number[] {
  const out = Array.from(cache);
  for (let bh = 0; bh < B * H; bh++)
    for (let t = 0; t < nn; t++)
      for (let d = 0; d < D; d++) out[(bh * Tmax + pos + t) * D + d] = src[(bh * nn + t) * D + d];
  return out;
}

// [B, H, Tmax, D, n, pos]
const cases: number[][] = [
  [1, 1, 1, 1, 1, 0],
  [1, 1, 7, 1, 1, 6],
  [2, 3, 33, 7, 1, 0],
  [2, 3, 33, 7, 1, 32],
  [1, 4, 33, 16, 7, 13],
  [3, 7, 129, 5, 33, 96],
  [1, 2, 129, 33, 129, 0],
  [1, 12, 256, 64, 64, 100],
];

// ---- values -------------------------------------------------------------------------------------------------------

test('kvAppend writes the window of a poisoned and of a filled cache, and returns the given cache', (t) => {
  cases.forEach(([B, H, Tmax, D, nn, pos], idx) => {
    const r = new Random(10 + idx);
    const src = randArray(r, B * H * nn * D), init = randArray(r, B * H * Tmax * D);
    const s = f32(src, [B, H, nn, D]);
    const poisoned = full([B, H, Tmax, D], NaN), filled = f32(init, [B, H, Tmax, D]);
    const label = `[${B}, ${H}, ${Tmax}, ${D}] n ${nn} pos ${pos}`;
    try {
      t.is(n.kvAppend(poisoned.handle, s.handle, pos), poisoned.handle, `${label}: returns the given cache`);
      const got = Array.from(poisoned.dataSync());
      const want = appendRef(new Array(got.length).fill(NaN), src, [B, H, Tmax, D], nn, pos);
      t.deepEqual(got, want, `${label}: window = src, the rest still NaN`);
      n.kvAppend(filled.handle, s.handle, pos);
      t.deepEqual(Array.from(filled.dataSync()), appendRef(init, src, [B, H, Tmax, D], nn, pos), `${label}: filled cache`);
    } finally {
      for (const z of [s, poisoned, filled]) z.dispose();
    }
  });
});

test('a prefill then one position per step builds the whole sequence (typed wrapper)', (t) => {
  const [B, H, T, D, n0] = [1, 4, 20, 8, 6];
  const r = new Random(5);
  const seq = randArray(r, B * H * T * D); // [B, H, T, D]
  const chunk = (t0: number, len: number) => {
    const c: number[] = [];
    for (let bh = 0; bh < B * H; bh++) for (let i = 0; i < len * D; i++) c.push(seq[(bh * T + t0) * D + i]);
    return f32(c, [B, H, len, D]);
  };
  const cache = full([B, H, T, D], NaN);
  const c0 = chunk(0, n0);
  t.is(kernels.kvAppend(cache, c0, 0), cache, 'the wrapper returns cache');
  c0.dispose();
  for (let p = n0; p < T; p++) {
    const c1 = chunk(p, 1);
    kernels.kvAppend(cache, c1, p);
    c1.dispose();
  }
  t.deepEqual(Array.from(cache.dataSync()), seq);
  throwsExactly(t, () => kernels.kvAppend('c' as any, cache, 0), TypeError, /^kvAppend: cache must be a Tensor, got "c"/, 'wrapper, non-tensor cache');
  throwsExactly(t, () => kernels.kvAppend(cache, null as any, 0), TypeError, /^kvAppend: src must be a Tensor, got null/, 'wrapper, null src');
  const s = zeros([B, H, 2, D]);
  throwsExactly(t, () => kernels.kvAppend(cache, s, T - 1), RangeError, /^kvAppend: pos \+ n = 19 \+ 2 exceeds the cache length Tmax = 20/, 'wrapper, past the end');
  for (const z of [cache, s]) z.dispose();
});

test('empty dimensions are accepted and write nothing', (t) => {
  const cache = full([1, 2, 3, 4], 7);
  const s0 = zeros([1, 2, 0, 4]);
  t.is(n.kvAppend(cache.handle, s0.handle, 3), cache.handle, 'n = 0 at pos = Tmax');
  const c0 = zeros([1, 0, 3, 4]), s1 = zeros([1, 0, 2, 4]);
  n.kvAppend(c0.handle, s1.handle, 1);
  t.true(Array.from(cache.dataSync()).every((v) => v === 7));
  for (const z of [cache, s0, c0, s1]) z.dispose();
});

// ---- errors -------------------------------------------------------------------------------------------------------

test('kvAppend: bad arguments throw the right class naming the op, before anything is written', (t) => {
  const cache = full([2, 3, 8, 4], 7), src = f32(randArray(new Random(1), 2 * 3 * 2 * 4), [2, 3, 2, 4]);
  const cacheI = zeros([2, 3, 8, 4], { dtype: 'int32' }), srcI = zeros([2, 3, 2, 4], { dtype: 'int32' });
  const cache3 = zeros([6, 8, 4]), src5 = zeros([1, 2, 3, 2, 4]), src3 = zeros([6, 2, 4]);
  const srcB = zeros([1, 3, 2, 4]), srcH = zeros([2, 1, 2, 4]), srcD = zeros([2, 3, 2, 5]), srcLong = zeros([2, 3, 9, 4]);
  const gone = zeros([2, 3, 2, 4]);
  gone.dispose();
  const big = zeros([2 * 3 * 8 * 4 + 58]);
  const cacheView = wrap(big.handle.view(0, [2, 3, 8, 4])), srcView = wrap(big.handle.view(180, [2, 3, 2, 4])); // partial overlap
  const srcApart = wrap(big.handle.view(240, [1, 1, 2, 5])); // shares the storage, not the bytes (but a bad shape)
  const A = (...a: unknown[]) => () => n.kvAppend(...a);
  const cases: [string, () => unknown, ErrorClass, RegExp][] = [
    ['no arguments', A(), TypeError, /^kvAppend: expected 3 argument/],
    ['two arguments', A(cache.handle, src.handle), TypeError, /^kvAppend: expected 3 argument/],
    ['a non-tensor cache', A({}, src.handle, 0), TypeError, /^kvAppend: cache must be a Tensor, got an object/],
    ['a number as src', A(cache.handle, 3, 0), TypeError, /^kvAppend: src must be a Tensor, got 3/],
    ['a disposed cache', A(gone.handle, src.handle, 0), Error, /^kvAppend: cache has been disposed/],
    ['a disposed src', A(cache.handle, gone.handle, 0), Error, /^kvAppend: src has been disposed/],
    ['pos a string', A(cache.handle, src.handle, '1'), TypeError, /^kvAppend: pos must be an integer, got '1'/],
    ['pos undefined', A(cache.handle, src.handle, undefined), TypeError, /^kvAppend: pos must be an integer, got undefined/],
    ['pos NaN', A(cache.handle, src.handle, NaN), RangeError, /^kvAppend: pos must be an integer, got NaN/],
    ['pos Infinity', A(cache.handle, src.handle, Infinity), RangeError, /^kvAppend: pos must be an integer, got Infinity/],
    ['pos 1.5', A(cache.handle, src.handle, 1.5), RangeError, /^kvAppend: pos must be an integer, got 1.5/],
    ['pos -1', A(cache.handle, src.handle, -1), RangeError, /^kvAppend: pos must be between 0 and \d+, got -1/],
    ['an int32 cache', A(cacheI.handle, src.handle, 0), TypeError, /^kvAppend: cache must be float32/],
    ['an int32 src', A(cache.handle, srcI.handle, 0), TypeError, /^kvAppend: src must be float32/],
    ['a rank-3 cache', A(cache3.handle, src.handle, 0), RangeError, /^kvAppend: cache must have rank 4, got shape \[6, 8, 4\]/],
    ['a rank-5 src', A(cache.handle, src5.handle, 0), RangeError, /^kvAppend: src must have rank 4, got shape \[1, 2, 3, 2, 4\]/],
    ['a rank-3 src', A(cache.handle, src3.handle, 0), RangeError, /^kvAppend: src must have rank 4, got shape \[6, 2, 4\]/],
    ['B mismatch', A(cache.handle, srcB.handle, 0), RangeError, /^kvAppend: src \(B, H, n, D\) must match cache \(B, H, Tmax, D\) in B, H and D, got src \[1, 3, 2, 4\] and cache \[2, 3, 8, 4\]/],
    ['H mismatch', A(cache.handle, srcH.handle, 0), RangeError, /^kvAppend: src .* must match cache .*, got src \[2, 1, 2, 4\]/],
    ['D mismatch', A(cache.handle, srcD.handle, 0), RangeError, /^kvAppend: src .* must match cache .*, got src \[2, 3, 2, 5\]/],
    ['pos + n > Tmax', A(cache.handle, src.handle, 7), RangeError, /^kvAppend: pos \+ n = 7 \+ 2 exceeds the cache length Tmax = 8 \(cache \[2, 3, 8, 4\], src \[2, 3, 2, 4\]\)/],
    ['n > Tmax', A(cache.handle, srcLong.handle, 0), RangeError, /^kvAppend: pos \+ n = 0 \+ 9 exceeds the cache length Tmax = 8/],
    ['a huge pos', A(cache.handle, src.handle, 2 ** 40), RangeError, /^kvAppend: pos \+ n = 1099511627776 \+ 2 exceeds/],
    ['src = cache', A(cache.handle, cache.handle, 0), RangeError, /^kvAppend: cache must not overlap src \(they share memory\)/],
    ['overlapping windows', A(cacheView.handle, srcView.handle, 0), RangeError, /^kvAppend: cache must not overlap src \(they share memory\)/],
    ['same storage, a bad shape', A(cacheView.handle, srcApart.handle, 0), RangeError, /^kvAppend: src .* must match cache/],
  ];
  for (const [label, fn, cls, msg] of cases) throwsExactly(t, fn, cls, msg, `kvAppend with ${label}`);
  t.true(Array.from(cache.dataSync()).every((v) => v === 7), 'cache untouched');
  t.true(Array.from(big.dataSync()).every((v) => v === 0), 'overlapping buffer untouched');
  for (const z of [cache, src, cacheI, srcI, cache3, src5, src3, srcB, srcH, srcD, srcLong, big, cacheView, srcView, srcApart]) z.dispose();
});

test('kvAppend: src may be a disjoint window of the cache\'s own storage', (t) => {
  const big = f32(Array.from({ length: 1 * 2 * 4 * 3 + 2 * 3 }, (_, i) => i), [30]);
  const cache = wrap(big.handle.view(0, [1, 2, 4, 3])), src = wrap(big.handle.view(24, [1, 2, 1, 3]));
  n.kvAppend(cache.handle, src.handle, 2);
  const got = Array.from(cache.dataSync());
  t.deepEqual(got.slice(6, 9), [24, 25, 26]);
  t.deepEqual(got.slice(18, 21), [27, 28, 29]);
  t.deepEqual(got.slice(0, 6), [0, 1, 2, 3, 4, 5]);
  for (const z of [cache, src, big]) z.dispose();
});
