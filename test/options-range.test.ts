// Issue 13, faults 4 and 6: every float option goes through one float32-range check (a value that overflows to
// Infinity or underflows to 0 in float32 is refused, naming the op and the option); matmul refuses a preact window
// that overlaps bias; shapes whose non-zero dimensions multiply past 2^48 are refused even with a zero dimension.
import anyTest from 'ava';
import { kernels, randn, zeros } from '../lib/index.ts';

const test = anyTest.serial;

test('matmul alpha / beta outside float32 range are refused, as axpby refuses them', (t) => {
  const a = randn([2, 3], { seed: 1 }), b = randn([3, 2], { seed: 2 });
  t.throws(() => kernels.matmul(a, b, { alpha: 1e39 }), { instanceOf: RangeError, message: /matmul.*alpha.*1e\+39.*float32/ });
  t.throws(() => kernels.matmul(a, b, { out: zeros([2, 2]), beta: -1e39 }), { instanceOf: RangeError, message: /matmul.*beta/ });
  t.throws(() => kernels.matmul(a, b, { alpha: 1e-46 }), { instanceOf: RangeError, message: /matmul.*alpha.*rounds to 0/ });
  t.throws(() => kernels.axpby(a, 1e39, a, 1), { instanceOf: RangeError, message: /axpby.*alpha/ });
  t.throws(() => kernels.axpby(a, 1e-46, a, 1), { instanceOf: RangeError, message: /axpby.*alpha.*rounds to 0/ });
  t.notThrows(() => kernels.matmul(a, b, { alpha: 1e-40 })); // a float32 subnormal is representable
});

test('attention scale that rounds to 0 in float32 is refused', (t) => {
  const q = randn([1, 1, 2, 4], { seed: 3 });
  t.throws(() => kernels.attention(q, q, q, { scale: 1e-46 }), { instanceOf: RangeError, message: /attention.*scale/ });
  t.throws(() => kernels.attention(q, q, q, { scale: 1e39 }), { instanceOf: RangeError, message: /attention.*scale/ });
});

test('other float options: layerNorm eps, dropout p, AdamW lr, scale', (t) => {
  const x = randn([2, 4], { seed: 4 }), w = randn([4], { seed: 5 }), bb = randn([4], { seed: 6 });
  t.throws(() => kernels.layerNorm(x, w, bb, { eps: 1e-50 }), { instanceOf: RangeError, message: /layernorm.*eps/i });
  t.throws(() => kernels.scale(x, 1e39), { instanceOf: RangeError, message: /scale.*s = 1e\+39/ });
  const p = randn([4], { seed: 7 }), g = randn([4], { seed: 8 }), m = zeros([4]), v = zeros([4]);
  t.throws(() => kernels.adamw(p, g, m, v, { lr: 1e39, step: 1 }), { instanceOf: RangeError, message: /adamw.*lr/ });
});

test('matmul refuses a preact window overlapping bias', (t) => {
  const a = randn([2, 3], { seed: 9 }), b = randn([3, 2], { seed: 10 });
  const buf = zeros([6]);
  const bias = buf.window(0, [2]);
  const preact = buf.window(1, [2, 2]); // shares bias[1]
  t.throws(() => kernels.matmul(a, b, { bias, activation: 'gelu', preact }), {
    instanceOf: RangeError,
    message: /matmul: preact must not overlap bias/,
  });
});

test('a shape with a zero dimension is still bounded: no signed overflow in the element count', (t) => {
  t.throws(() => zeros([2 ** 47, 2 ** 47, 0]), { instanceOf: RangeError, message: /zeros.*2\^48/ });
  t.is(zeros([2 ** 20, 0, 2 ** 20]).size, 0);
});
