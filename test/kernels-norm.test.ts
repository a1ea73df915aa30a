// kernels-norm.test.ts — layer norm, GELU (tanh and exact erf forms), tanh, softmax, axpby and dropout through the binding
// (native/addon/ops_norm.cpp) against small JavaScript references: forward values, accumulating backward passes,
// outputs given or allocated, the in-place forms axpby allows, the dropout mask against a JavaScript Philox, and every
// class of bad argument throwing the right error class with a message naming the op. ops.gelu's two forms: values,
// gradients through backward() against the derivative and finite differences, and its argument check.
import anyTest, { type ExecutionContext } from 'ava';

import { ParameterBuilder, ParameterStore, Tensor, backward, kernels, ops, tensor, zeros } from '../lib/index.ts';
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
const read = (h: any) => Array.from(h.readSync() as Float32Array);

// ---- references ---------------------------------------------------------------------------------------------------

function layernormRef(x: number[], w: number[], b: number[], C: number, eps: number) {
  const rows = x.length / C;
  const y: number[] = [], mean: number[] = [], rstd: number[] = [];
  for (let r = 0; r < rows; r++) {
    const row = x.slice(r * C, (r + 1) * C);
    const m = row.reduce((s, v) => s + v, 0) / C;
    const v = row.reduce((s, u) => s + (u - m) ** 2, 0) / C;
    const rs = 1 / Math.sqrt(v + eps);
    mean.push(m);
    rstd.push(rs);
    for (let j = 0; j < C; j++) y.push((row[j] - m) * rs * w[j] + b[j]);
  }
  return { y, mean, rstd };
}

function layernormBackwardRef(dy: number[], x: number[], w: number[], C: number, eps: number) {
  const rows = x.length / C;
  const { mean, rstd } = layernormRef(x, w, w, C, eps);
  const dx: number[] = [], dw = new Array(C).fill(0), db = new Array(C).fill(0);
  for (let r = 0; r < rows; r++) {
    let sg = 0, sgx = 0;
    const xh: number[] = [], g: number[] = [];
    for (let j = 0; j < C; j++) {
      xh.push((x[r * C + j] - mean[r]) * rstd[r]);
      g.push(dy[r * C + j] * w[j]);
      sg += g[j];
      sgx += g[j] * xh[j];
      dw[j] += dy[r * C + j] * xh[j];
      db[j] += dy[r * C + j];
    }
    for (let j = 0; j < C; j++) dx.push(rstd[r] * (g[j] - sg / C - (xh[j] * sgx) / C));
  }
  return { dx, dw, db };
}

const K = Math.sqrt(2 / Math.PI);
const geluRef = (x: number) => 0.5 * x * (1 + Math.tanh(K * (x + 0.044715 * x ** 3)));
function geluGradRef(x: number) {
  const t = Math.tanh(K * (x + 0.044715 * x ** 3));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * K * (1 + 3 * 0.044715 * x * x);
}

// The exact GELU in double: x Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2, with erfc(z), z >= 0, from the series
// erf(z) = 2 / sqrt(pi) exp(-z^2) sum_n (2 z^2)^n z / (1 3 5 ... (2n + 1)) (positive terms) below z = 3 and the
// continued fraction erfc(z) = exp(-z^2) / sqrt(pi) / (z + (1/2) / (z + 1 / (z + (3/2) / (z + ...)))) above. Checked
// against mpmath to 2e-11 relative (worst just below z = 3, where 1 - erf cancels); float's ulp is 6e-8.
function erfcPos(z: number): number {
  if (z < 3) {
    let term = z, sum = z;
    for (let k = 1; term > 1e-17 * sum; k++) {
      term *= (2 * z * z) / (2 * k + 1);
      sum += term;
    }
    return 1 - (2 / Math.sqrt(Math.PI)) * Math.exp(-z * z) * sum;
  }
  let f = z;
  for (let k = 80; k >= 1; k--) f = z + k / 2 / f;
  return Math.exp(-z * z) / Math.sqrt(Math.PI) / f;
}
const normCdf = (x: number) => (x < 0 ? 0.5 * erfcPos(-x / Math.SQRT2) : 1 - 0.5 * erfcPos(x / Math.SQRT2));
const geluErfRef = (x: number) => x * normCdf(x);
const geluErfGradRef = (x: number) => normCdf(x) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);

function softmaxRef(x: number[], N: number) {
  const y: number[] = [];
  for (let r = 0; r < x.length / N; r++) {
    const row = x.slice(r * N, (r + 1) * N);
    const m = Math.max(...row);
    const e = row.map((v) => Math.exp(v - m));
    const s = e.reduce((a, v) => a + v, 0);
    for (const v of e) y.push(v / s);
  }
  return y;
}

// Philox-4x32-10 (native/core/philox.h) with BigInt arithmetic, and the dropout keep rule (native/cpu/dropout.h).
function philox(c: bigint[], k0: bigint, k1: bigint): bigint[] {
  const M = 0xffffffffn;
  let [c0, c1, c2, c3] = c;
  for (let r = 0; r < 10; r++) {
    const p0 = 0xd2511f53n * c0, p1 = 0xcd9e8d57n * c2;
    [c0, c1, c2, c3] = [(p1 >> 32n) ^ c1 ^ k0, p1 & M, (p0 >> 32n) ^ c3 ^ k1, p0 & M];
    k0 = (k0 + 0x9e3779b9n) & M;
    k1 = (k1 + 0xbb67ae85n) & M;
  }
  return [c0, c1, c2, c3];
}
function keepRef(seed: bigint, e: bigint, p: number): boolean {
  const blk = e >> 2n;
  const words = philox([blk & 0xffffffffn, blk >> 32n, 2n /* kStreamDropout */, 0n], seed & 0xffffffffn, seed >> 32n);
  const u = Number(words[Number(e & 3n)] >> 8n) / 16777216;
  return u >= Math.fround(p);
}

// ---- layer norm ---------------------------------------------------------------------------------------------------

test('layernormForward returns [y, mean, rstd] matching the reference', (t) => {
  const r = new Random(1);
  for (const [shape, eps] of [[[2, 3, 7], 1e-5], [[5, 33], 1e-3], [[17], 1e-5]] as [number[], number][]) {
    const C = shape[shape.length - 1];
    const size = shape.reduce((a, v) => a * v, 1);
    const xd = randArray(r, size, 1, 4), wd = randArray(r, C, 0.5, 1.5), bd = randArray(r, C);
    const x = f32(xd, shape), w = f32(wd, [C]), b = f32(bd, [C]);
    const res = n.layernormForward(x.handle, w.handle, b.handle, eps === 1e-5 ? undefined : { eps });
    t.true(Array.isArray(res));
    t.is(res.length, 3);
    const [y, mean, rstd] = res.map(wrap);
    t.deepEqual(y.shape, shape);
    t.deepEqual(mean.shape, shape.slice(0, -1));
    t.deepEqual(rstd.shape, shape.slice(0, -1));
    const ref = layernormRef(xd, wd, bd, C, eps);
    assertClose(t, y.dataSync(), ref.y, { abs: 1e-5, rel: 1e-4, what: `y ${shape}` });
    assertClose(t, mean.dataSync(), ref.mean, { abs: 1e-6, rel: 1e-5, what: `mean ${shape}` });
    assertClose(t, rstd.dataSync(), ref.rstd, { abs: 1e-6, rel: 1e-4, what: `rstd ${shape}` });
    for (const z of [x, w, b, y, mean, rstd]) z.dispose();
  }
});

test('layernormBackward accumulates dx, dw and db, any of them null', (t) => {
  const r = new Random(2);
  const rows = 6, C = 13, eps = 1e-5;
  const xd = randArray(r, rows * C, -1, 2), wd = randArray(r, C, 0.5, 1.5), bd = randArray(r, C), dyd = randArray(r, rows * C);
  const x = f32(xd, [2, 3, C]), w = f32(wd, [C]), b = f32(bd, [C]), dy = f32(dyd, [2, 3, C]);
  const [y, mean, rstd] = n.layernormForward(x.handle, w.handle, b.handle).map(wrap);
  const ref = layernormBackwardRef(dyd, xd, wd, C, eps);
  const dx0 = randArray(r, rows * C), dw0 = randArray(r, C), db0 = randArray(r, C);
  const dx = f32(dx0, [2, 3, C]), dw = f32(dw0, [C]), db = f32(db0, [C]);
  t.is(n.layernormBackward(dy.handle, x.handle, w.handle, mean.handle, rstd.handle, dx.handle, dw.handle, db.handle), undefined);
  assertClose(t, dx.dataSync().map((v, i) => v - dx0[i]), ref.dx, { abs: 1e-5, rel: 1e-4, what: 'dx' });
  assertClose(t, dw.dataSync().map((v, i) => v - dw0[i]), ref.dw, { abs: 1e-5, rel: 1e-4, what: 'dw' });
  assertClose(t, db.dataSync().map((v, i) => v - db0[i]), ref.db, { abs: 1e-5, rel: 1e-4, what: 'db' });
  // only dw: dx and db untouched elsewhere; dw receives a second contribution
  const dwOnce = Array.from(dw.dataSync());
  n.layernormBackward(dy.handle, x.handle, w.handle, mean.handle, rstd.handle, null, dw.handle, null);
  assertClose(t, dw.dataSync().map((v, i) => v - dwOnce[i]), ref.dw, { abs: 1e-5, rel: 1e-4, what: 'dw again' });
  const dx2 = zeros([2, 3, C]);
  n.layernormBackward(dy.handle, x.handle, w.handle, mean.handle, rstd.handle, dx2.handle, null, null);
  assertClose(t, dx2.dataSync(), ref.dx, { abs: 1e-5, rel: 1e-4, what: 'dx alone' });
  for (const z of [x, w, b, dy, y, mean, rstd, dx, dw, db, dx2]) z.dispose();
});

// ---- GELU and softmax ---------------------------------------------------------------------------------------------

test('geluForward and geluBackward match the reference; out is allocated or filled', (t) => {
  const r = new Random(3);
  const xd = randArray(r, 3 * 37, -6, 6), dyd = randArray(r, 3 * 37), dx0 = randArray(r, 3 * 37);
  const x = f32(xd, [3, 37]), dy = f32(dyd, [3, 37]), dx = f32(dx0, [3, 37]);
  const y = wrap(n.geluForward(x.handle, null));
  t.deepEqual(y.shape, [3, 37]);
  assertClose(t, y.dataSync(), xd.map(geluRef), { abs: 2e-6, rel: 2e-6, what: 'gelu' });
  const out = zeros([3, 37]);
  t.is(n.geluForward(x.handle, out.handle), out.handle);
  assertClose(t, out.dataSync(), xd.map(geluRef), { abs: 2e-6, rel: 2e-6, what: 'gelu into out' });
  t.is(n.geluBackward(x.handle, dy.handle, dx.handle), dx.handle);
  assertClose(t, dx.dataSync().map((v, i) => v - dx0[i]), xd.map((v, i) => geluGradRef(v) * dyd[i]), { abs: 1e-5, rel: 1e-4, what: 'dgelu' });
  for (const z of [x, dy, dx, y, out]) z.dispose();
});

// Values across the range: both formula switches of the CPU kernel (-0.5, 1), gelu's minimum (-0.7518), the far
// negative tail (a normal float down to x ~ -13, denormal to -14.5), large positive x.
const ERF_EDGES = [-14.2, -13, -11.5, -9, -7.25, -5.5, -3.1, -1, -0.7517974, -0.5, -0.4999, 0, 1e-30, 0.3, 0.9999, 1, 2.5, 5.5, 9, 1e6];

test('geluErfForward and geluErfBackward match an erf reference; out is allocated or filled', (t) => {
  const r = new Random(31);
  const xd = [...ERF_EDGES, ...randArray(r, 3 * 41 - ERF_EDGES.length, -7, 7)].map(Math.fround);
  const dyd = randArray(r, 3 * 41), dx0 = randArray(r, 3 * 41);
  const x = f32(xd, [3, 41]), dy = f32(dyd, [3, 41]), dx = f32(dx0, [3, 41]);
  const y = wrap(n.geluErfForward(x.handle, null));
  t.deepEqual(y.shape, [3, 41]);
  // a few ulp of every value, tails included (relative, with a floor at the smallest normal float)
  assertClose(t, y.dataSync(), xd.map(geluErfRef), { abs: 1e-44, rel: 6e-7, what: 'gelu erf' });
  const out = zeros([3, 41]);
  t.is(n.geluErfForward(x.handle, out.handle), out.handle);
  t.deepEqual(Array.from(out.dataSync()), Array.from(y.dataSync()), 'into out: the same bits');
  t.is(n.geluErfBackward(x.handle, dy.handle, dx.handle), dx.handle);
  // dx0 + g dy rounds to the float spacing of dx0 (|dx0| < 1): 6e-8 absolute
  assertClose(t, dx.dataSync().map((v, i) => v - dx0[i]), xd.map((v, i) => geluErfGradRef(v) * dyd[i]), { abs: 2e-7, rel: 1e-6, what: 'dgelu erf' });
  // not the tanh form: they differ by up to 5e-4 around |x| = 2
  const tanh = wrap(n.geluForward(x.handle, null)).dataSync();
  t.true(xd.some((v, i) => Math.abs(tanh[i] - geluErfRef(v)) > 1e-4), 'the tanh form is measurably different');
  for (const z of [x, dy, dx, y, out]) z.dispose();
});

test('geluErf keeps NaN in place; +inf -> +inf, -inf -> NaN, gradients at +-inf NaN (as PyTorch)', (t) => {
  const xd = [0.5, NaN, -2, Infinity, -Infinity, 0, -0, -30, 30];
  const x = f32(xd, [9]);
  const y = Array.from(kernels.geluErf(x).dataSync());
  t.true(Number.isNaN(y[1]) && Number.isNaN(y[4]));
  t.is(y[3], Infinity);
  t.true(Object.is(y[5], 0) && Object.is(y[6], -0), 'gelu(+-0) = +-0');
  t.true(Object.is(y[7], -0), 'gelu(-30) underflows to -0');
  t.is(y[8], 30);
  for (const i of [0, 2]) t.true(Math.abs(y[i] - geluErfRef(xd[i])) <= 1e-6 * Math.abs(geluErfRef(xd[i])));
  const dx = kernels.geluErfBackward(x, f32(new Array(9).fill(1), [9]), zeros([9]));
  const g = Array.from(dx.dataSync());
  t.deepEqual(g.map(Number.isNaN), [false, true, false, true, true, false, false, false, false]);
  t.true(g[5] === 0.5 && g[6] === 0.5 && g[7] === 0 && g[8] === 1, `gelu'(+-0, -30, 30): ${g.slice(5)}`);
});

test('ops.gelu: the tanh form by default, the exact form with approximate = none, both differentiable', (t) => {
  const r = new Random(33);
  const B = 3, V = 11;
  const xd = [...ERF_EDGES.slice(4, 18), ...randArray(r, B * V - 14, -4, 4)].map(Math.fround);
  const targets = tensor(Int32Array.from([2, 7, 10]), [B]);
  const x = f32(xd, [B, V]);
  // forward: the default and 'tanh' are kernels.gelu bit for bit; 'none' is the erf form
  const bits = (a: Tensor) => Array.from(new Uint32Array(Float32Array.from(a.dataSync()).buffer));
  t.deepEqual(bits(ops.gelu(x)), bits(kernels.gelu(x)));
  t.deepEqual(bits(ops.gelu(x, 'tanh')), bits(kernels.gelu(x)));
  assertClose(t, ops.gelu(x, 'none').dataSync(), xd.map(geluErfRef), { abs: 1e-44, rel: 6e-7, what: "ops.gelu(x, 'none')" });
  // gradients: loss = crossEntropy(gelu(x)), x a parameter
  const lossRef = (v: number[], f: (u: number) => number) => {
    let l = 0;
    for (let b = 0; b < B; b++) {
      const row = v.slice(b * V, (b + 1) * V).map(f);
      const m = Math.max(...row);
      const lse = m + Math.log(row.reduce((s, u) => s + Math.exp(u - m), 0));
      l += lse - row[targets.dataSync()[b]];
    }
    return l / B;
  };
  for (const [form, f, df] of [['none', geluErfRef, geluErfGradRef], ['tanh', geluRef, geluGradRef]] as const) {
    const pb = new ParameterBuilder();
    const p = pb.declare('x', [B, V], { kind: 'zeros' }, false);
    const store = new ParameterStore(pb);
    (store.values.sharedData() as Float32Array).set(xd, p.offset);
    const loss = ops.crossEntropy(ops.gelu(p.value, form), targets);
    t.true(Math.abs(loss.dataSync()[0] - lossRef(xd, f)) <= 1e-6 * lossRef(xd, f), `${form}: the loss`);
    backward(loss);
    const got = Array.from(p.grad.dataSync());
    // analytic: dL/dx = gelu'(x) (softmax(gelu(x)) - onehot) / B
    const want = xd.map((v, i) => {
      const b = Math.floor(i / V), row = xd.slice(b * V, (b + 1) * V).map(f);
      const m = Math.max(...row), z = row.reduce((s, u) => s + Math.exp(u - m), 0);
      const sm = Math.exp(f(v) - m) / z - (i % V === targets.dataSync()[b] ? 1 : 0);
      return (df(v) * sm) / B;
    });
    assertClose(t, got, want, { abs: 1e-7, rel: 1e-5, what: `${form}: dx vs the derivative` });
    // central differences of the double loss
    const h = 1e-5;
    const fd = xd.map((_, i) => {
      const up = xd.slice(), dn = xd.slice();
      up[i] += h;
      dn[i] -= h;
      return (lossRef(up, f) - lossRef(dn, f)) / (2 * h);
    });
    assertClose(t, got, fd, { abs: 1e-7, rel: 1e-5, what: `${form}: dx vs finite differences` });
    loss.dispose();
    store.dispose();
  }
  // NaN stays in place through ops.gelu(x, 'none')
  const withNaN = ops.gelu(f32([1, NaN, -1], [3]), 'none').dataSync();
  t.deepEqual(Array.from(withNaN).map(Number.isNaN), [false, true, false]);
  // the argument is checked
  for (const bad of ['erf', 'exact', '', null, 1, true]) {
    const e = t.throws(() => ops.gelu(x, bad as never), { instanceOf: TypeError });
    t.regex(e!.message, /^ops\.gelu: approximate must be 'tanh' or 'none', got /, String(bad));
  }
  t.regex(t.throws(() => ops.gelu(x, 'erf' as never))!.message, /got "erf"$/);
  x.dispose();
});

test('tanhForward / tanhBackward and ops.tanh: Math.tanh values, +-0, +-inf and NaN, gradients against the derivative and finite differences', (t) => {
  const r = new Random(34);
  const xd = [0, -0, 1e-30, -1e-6, 0.1, 0.3999999, 0.4, 0.4000001, -0.7, 1, 2.5, -9, 20, ...randArray(r, 40, -5, 5)].map(Math.fround);
  const x = f32(xd, [xd.length]);
  const y = kernels.tanh(x).dataSync();
  // within 4 ulp of the float nearest tanh (Math.tanh in double), the signs of zeros kept
  xd.forEach((v, i) => {
    const want = Math.tanh(v), ulp = Math.max(2 ** -149, 2 ** (Math.floor(Math.log2(Math.abs(want) || 2 ** -149)) - 23));
    t.true(Math.abs(y[i] - want) <= 4 * ulp, `tanh(${v}) = ${y[i]}, want ${want}`);
    if (v === 0) t.is(Object.is(y[i], -0), Object.is(v, -0), 'the sign of zero');
  });
  t.deepEqual(Array.from(kernels.tanh(f32([Infinity, -Infinity, NaN], [3])).dataSync()), [1, -1, NaN]);
  // out given; backward accumulates (1 - tanh^2) dy
  const out = zeros([xd.length]);
  t.is(kernels.tanh(x, { out }), out);
  t.deepEqual(Array.from(out.dataSync()), Array.from(y));
  const dy = randArray(r, xd.length), dx0 = randArray(r, xd.length);
  const dx = f32(dx0, [xd.length]);
  kernels.tanhBackward(x, f32(dy, [xd.length]), dx);
  assertClose(t, dx.dataSync(), xd.map((v, i) => dx0[i] + (1 - Math.tanh(v) ** 2) * dy[i]), { abs: 3e-7, rel: 1e-6, what: 'tanhBackward' });
  // ops.tanh through backward(): loss = crossEntropy(tanh(x))
  const B = 2, V = 5;
  const xs = randArray(r, B * V, -3, 3), targets = tensor(Int32Array.from([1, 4]), [B]);
  const lossRef = (v: number[]) => {
    let l = 0;
    for (let b = 0; b < B; b++) {
      const row = v.slice(b * V, (b + 1) * V).map(Math.tanh);
      const m = Math.max(...row);
      l += m + Math.log(row.reduce((s, u) => s + Math.exp(u - m), 0)) - row[[1, 4][b]];
    }
    return l / B;
  };
  const pb = new ParameterBuilder();
  const p = pb.declare('x', [B, V], { kind: 'zeros' }, false);
  const store = new ParameterStore(pb);
  (store.values.sharedData() as Float32Array).set(xs, p.offset);
  const loss = ops.crossEntropy(ops.tanh(p.value), targets);
  t.true(Math.abs(loss.dataSync()[0] - lossRef(xs)) <= 1e-6 * lossRef(xs), 'the loss');
  backward(loss);
  const h = 1e-5;
  const fd = xs.map((_, i) => {
    const up = xs.slice(), dn = xs.slice();
    up[i] += h;
    dn[i] -= h;
    return (lossRef(up) - lossRef(dn)) / (2 * h);
  });
  assertClose(t, Array.from(p.grad.dataSync()), fd, { abs: 1e-7, rel: 1e-5, what: 'ops.tanh: dx vs finite differences' });
  loss.dispose();
  store.dispose();
  // bad arguments name the op
  t.throws(() => n.tanhForward(1, null), { instanceOf: TypeError, message: /tanhForward/ });
  t.throws(() => n.tanhBackward(x.handle, x.handle, zeros([3]).handle), { message: /tanhBackward/ });
  x.dispose();
});

test('softmaxForward and softmaxBackward over the last dimension', (t) => {
  const r = new Random(4);
  const N = 21;
  const xd = randArray(r, 4 * N, -8, 8), dyd = randArray(r, 4 * N), dx0 = randArray(r, 4 * N);
  const x = f32(xd, [2, 2, N]), dy = f32(dyd, [2, 2, N]), dx = f32(dx0, [2, 2, N]);
  const y = wrap(n.softmaxForward(x.handle, null));
  const yr = softmaxRef(xd, N);
  assertClose(t, y.dataSync(), yr, { abs: 1e-7, rel: 1e-5, what: 'softmax' });
  const out = zeros([2, 2, N]);
  t.is(n.softmaxForward(x.handle, out.handle), out.handle);
  assertClose(t, out.dataSync(), yr, { abs: 1e-7, rel: 1e-5, what: 'softmax into out' });
  t.is(n.softmaxBackward(y.handle, dy.handle, dx.handle), dx.handle);
  const want: number[] = [];
  for (let r0 = 0; r0 < 4; r0++) {
    let s = 0;
    for (let j = 0; j < N; j++) s += yr[r0 * N + j] * dyd[r0 * N + j];
    for (let j = 0; j < N; j++) want.push(yr[r0 * N + j] * (dyd[r0 * N + j] - s));
  }
  assertClose(t, dx.dataSync().map((v, i) => v - dx0[i]), want, { abs: 1e-6, rel: 1e-4, what: 'dsoftmax' });
  // an all -inf row is NaN (0/0, as in PyTorch); a -inf entry is exactly 0
  const m = wrap(n.softmaxForward(f32([-Infinity, -Infinity, 0, -Infinity], [2, 2]).handle, null));
  const mv = m.dataSync();
  t.true(Number.isNaN(mv[0]) && Number.isNaN(mv[1]));
  t.deepEqual([mv[2], mv[3]], [1, 0]);
  for (const z of [x, dy, dx, y, out, m]) z.dispose();
});

// ---- axpby --------------------------------------------------------------------------------------------------------

test('axpby computes alpha * a + beta * b, into a new tensor or in place', (t) => {
  const r = new Random(5);
  const ad = randArray(r, 35), bd = randArray(r, 35);
  const want = ad.map((v, i) => 0.5 * v - 2 * bd[i]);
  const a = f32(ad, [5, 7]), b = f32(bd, [5, 7]);
  const o = wrap(n.axpby(a.handle, 0.5, b.handle, -2, null));
  t.deepEqual(o.shape, [5, 7]);
  assertClose(t, o.dataSync(), want, { abs: 1e-6, rel: 1e-6, what: 'axpby' });
  t.is(n.axpby(a.handle, 0.5, b.handle, -2, a.handle), a.handle); // a = 0.5 a - 2 b
  assertClose(t, a.dataSync(), want, { abs: 1e-6, rel: 1e-6, what: 'in place into a' });
  const a2 = f32(ad, [5, 7]);
  t.is(n.axpby(a2.handle, 0.5, b.handle, -2, b.handle), b.handle); // b = 0.5 a - 2 b
  assertClose(t, b.dataSync(), want, { abs: 1e-6, rel: 1e-6, what: 'in place into b' });
  // a window of a larger buffer, exactly aliased, is also in place
  const big = f32(ad.concat(bd), [70]);
  const w0 = big.window(35, [5, 7]);
  n.axpby(w0.handle, 2, w0.handle, 1, w0.handle);
  assertClose(t, w0.dataSync(), bd.map((v) => 3 * v), { abs: 1e-6, rel: 1e-6, what: 'window in place' });
  for (const z of [a, b, o, a2, big, w0]) z.dispose();
});

// ---- dropout ------------------------------------------------------------------------------------------------------

test('dropoutForward follows the Philox dropout stream at (seed, offset); the backward replays it', (t) => {
  const r = new Random(6);
  const len = 203, p = 0.3;
  const xd = randArray(r, len, 0.5, 2);
  const x = f32(xd, [7, 29]);
  for (const [seed, offset] of [[0, 0], [12345, 7], [2n ** 40n + 3n, 2n ** 33n + 1n]] as [number | bigint, number | bigint][]) {
    const y = wrap(n.dropoutForward(x.handle, null, { p, seed, offset }));
    t.deepEqual(y.shape, [7, 29]);
    const yv = y.dataSync();
    let ok = true;
    for (let i = 0; i < len; i++) {
      const keep = keepRef(BigInt(seed), BigInt(offset) + BigInt(i), p);
      const want = keep ? Math.fround(xd[i] * Math.fround(1 / Math.fround(1 - Math.fround(p)))) : 0;
      if (yv[i] !== want) ok = false;
    }
    t.true(ok, `mask at seed ${seed}, offset ${offset}`);
    const dy = f32(randArray(r, len, 0.5, 2), [7, 29]);
    const dx0 = randArray(r, len);
    const dx = f32(dx0, [7, 29]);
    t.is(n.dropoutBackward(dy.handle, dx.handle, { p, seed, offset }), dx.handle);
    const dxv = dx.dataSync(), dyv = dy.dataSync();
    let same = true;
    for (let i = 0; i < len; i++) {
      const want = yv[i] !== 0 ? dx0[i] + dyv[i] / (1 - p) : dx0[i];
      if (Math.abs(dxv[i] - want) > 1e-5) same = false;
    }
    t.true(same, `backward replays the mask at seed ${seed}, offset ${offset}`);
    for (const z of [y, dy, dx]) z.dispose();
  }
  // statistics and p = 0
  const ones = f32(new Array(20000).fill(1), [20000]);
  const half = wrap(n.dropoutForward(ones.handle, null, { p: 0.5, seed: 9 }));
  const dropped = half.dataSync().filter((v) => v === 0).length / 20000;
  t.true(Math.abs(dropped - 0.5) < 0.02, `dropped fraction ${dropped}`);
  const same = wrap(n.dropoutForward(x.handle, zeros([7, 29]).handle, { p: 0, seed: 1, offset: 3 }));
  t.deepEqual(Array.from(same.dataSync()), Array.from(x.dataSync()));
  for (const z of [x, ones, half, same]) z.dispose();
});

// ---- errors -------------------------------------------------------------------------------------------------------

test('bad arguments throw the right error class with a message naming the op', (t) => {
  const x = zeros([2, 3]), w = zeros([3]), b = zeros([3]), st = zeros([2]);
  const ints = tensor(Int32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]);
  const big = zeros([40]);
  const disposed = zeros([2, 3]);
  disposed.dispose();
  const dop = { p: 0.1, seed: 1 };
  const cases: [string, () => unknown, ErrorClass, RegExp][] = [
    // layernormForward
    ['ln no arguments', () => n.layernormForward(), TypeError, /^layernormForward: expected 3 argument/],
    ['ln x not a tensor', () => n.layernormForward([1, 2], w.handle, b.handle), TypeError, /^layernormForward: x must be a Tensor/],
    ['ln disposed x', () => n.layernormForward(disposed.handle, w.handle, b.handle), Error, /^layernormForward: x has been disposed/],
    ['ln int32 x', () => n.layernormForward(ints.handle, w.handle, b.handle), TypeError, /^layernormForward: x must be float32/],
    ['ln scalar x', () => n.layernormForward(zeros([]).handle, w.handle, b.handle), RangeError, /^layernormForward: x must have rank 1 to 8/],
    ['ln C = 0', () => n.layernormForward(zeros([2, 0]).handle, zeros([0]).handle, zeros([0]).handle), RangeError, /^layernormForward: x must have a last dimension \(C\) of at least 1, got shape \[2, 0\]/],
    ['ln w shape', () => n.layernormForward(x.handle, zeros([4]).handle, b.handle), RangeError, /^layernormForward: w must have shape \[3\], got \[4\]/],
    ['ln b shape', () => n.layernormForward(x.handle, w.handle, zeros([1, 3]).handle), RangeError, /^layernormForward: b must have shape \[3\], got \[1, 3\]/],
    ['ln eps NaN', () => n.layernormForward(x.handle, w.handle, b.handle, { eps: NaN }), RangeError, /^layernormForward: option eps must be finite, got NaN/],
    ['ln eps 0', () => n.layernormForward(x.handle, w.handle, b.handle, { eps: 0 }), RangeError, /^layernormForward: option eps must be > 0/],
    ['ln eps negative', () => n.layernormForward(x.handle, w.handle, b.handle, { eps: -1e-5 }), RangeError, /^layernormForward: option eps must be > 0/],
    ['ln eps below float', () => n.layernormForward(x.handle, w.handle, b.handle, { eps: 1e-60 }), RangeError, /^layernormForward: option eps = 1e-60 is out of float32 range \(it rounds to 0\)/],
    ['ln eps string', () => n.layernormForward(x.handle, w.handle, b.handle, { eps: '1' }), TypeError, /^layernormForward: option eps must be a number/],
    ['ln options not an object', () => n.layernormForward(x.handle, w.handle, b.handle, 5), TypeError, /^layernormForward: options must be an object/],
    // layernormBackward
    ['lnb too few arguments', () => n.layernormBackward(x.handle, x.handle, w.handle), TypeError, /^layernormBackward: expected 5 argument/],
    ['lnb dy shape', () => n.layernormBackward(zeros([3, 3]).handle, x.handle, w.handle, st.handle, st.handle, null, null, null), RangeError, /^layernormBackward: dy must have shape \[2, 3\], got \[3, 3\]/],
    ['lnb mean shape', () => n.layernormBackward(x.handle, x.handle, w.handle, zeros([3]).handle, st.handle, null, null, null), RangeError, /^layernormBackward: mean must have shape \[2\], got \[3\]/],
    ['lnb rstd dtype', () => n.layernormBackward(x.handle, x.handle, w.handle, st.handle, tensor(Int32Array.from([1, 1]), [2]).handle, null, null, null), TypeError, /^layernormBackward: rstd must be float32/],
    ['lnb dx shape', () => n.layernormBackward(x.handle, x.handle, w.handle, st.handle, st.handle, zeros([6]).handle, null, null), RangeError, /^layernormBackward: dx must have shape \[2, 3\], got \[6\]/],
    ['lnb dw shape', () => n.layernormBackward(x.handle, x.handle, w.handle, st.handle, st.handle, null, zeros([2]).handle, null), RangeError, /^layernormBackward: dw must have shape \[3\], got \[2\]/],
    ['lnb db not a tensor', () => n.layernormBackward(x.handle, x.handle, w.handle, st.handle, st.handle, null, null, [0, 0, 0]), TypeError, /^layernormBackward: db must be a Tensor/],
    ['lnb dx is x', () => n.layernormBackward(zeros([2, 3]).handle, x.handle, w.handle, st.handle, st.handle, x.handle, null, null), RangeError, /^layernormBackward: dx must not overlap x/],
    ['lnb dw is w', () => n.layernormBackward(x.handle, zeros([2, 3]).handle, w.handle, st.handle, st.handle, null, w.handle, null), RangeError, /^layernormBackward: dw must not overlap w/],
    ['lnb dw overlaps db', () => n.layernormBackward(x.handle, x.handle, w.handle, st.handle, st.handle, null, big.window(0, [3]).handle, big.window(2, [3]).handle), RangeError, /^layernormBackward: dw must not overlap db/],
    ['lnb disposed dw', () => n.layernormBackward(x.handle, x.handle, w.handle, st.handle, st.handle, null, disposed.handle, null), Error, /^layernormBackward: dw has been disposed/],
    // gelu
    ['gelu x not a tensor', () => n.geluForward(3, null), TypeError, /^geluForward: x must be a Tensor, got 3/],
    ['gelu int32', () => n.geluForward(ints.handle, null), TypeError, /^geluForward: x must be float32/],
    ['gelu out shape', () => n.geluForward(x.handle, zeros([3, 2]).handle), RangeError, /^geluForward: out must have shape \[2, 3\], got \[3, 2\]/],
    ['gelu out is x', () => n.geluForward(x.handle, x.handle), RangeError, /^geluForward: out must not overlap x/],
    ['gelu disposed x', () => n.geluForward(disposed.handle), Error, /^geluForward: x has been disposed/],
    ['geluBackward dy shape', () => n.geluBackward(x.handle, zeros([6]).handle, zeros([2, 3]).handle), RangeError, /^geluBackward: dy must have shape \[2, 3\], got \[6\]/],
    ['geluBackward dx overlaps dy', () => n.geluBackward(x.handle, big.window(0, [2, 3]).handle, big.window(5, [2, 3]).handle), RangeError, /^geluBackward: dx must not overlap dy/],
    ['geluBackward missing dx', () => n.geluBackward(x.handle, x.handle), TypeError, /^geluBackward: expected 3 argument/],
    ['geluErf x not a tensor', () => n.geluErfForward(3, null), TypeError, /^geluErfForward: x must be a Tensor, got 3/],
    ['geluErf int32', () => n.geluErfForward(ints.handle, null), TypeError, /^geluErfForward: x must be float32/],
    ['geluErf out shape', () => n.geluErfForward(x.handle, zeros([3, 2]).handle), RangeError, /^geluErfForward: out must have shape \[2, 3\], got \[3, 2\]/],
    ['geluErf out is x', () => n.geluErfForward(x.handle, x.handle), RangeError, /^geluErfForward: out must not overlap x/],
    ['geluErf disposed x', () => n.geluErfForward(disposed.handle), Error, /^geluErfForward: x has been disposed/],
    ['geluErfBackward dy shape', () => n.geluErfBackward(x.handle, zeros([6]).handle, zeros([2, 3]).handle), RangeError, /^geluErfBackward: dy must have shape \[2, 3\], got \[6\]/],
    ['geluErfBackward dx overlaps dy', () => n.geluErfBackward(x.handle, big.window(0, [2, 3]).handle, big.window(5, [2, 3]).handle), RangeError, /^geluErfBackward: dx must not overlap dy/],
    ['geluErfBackward dx is x', () => n.geluErfBackward(x.handle, zeros([2, 3]).handle, x.handle), RangeError, /^geluErfBackward: dx must not overlap x/],
    ['geluErfBackward int32 dy', () => n.geluErfBackward(x.handle, ints.handle, zeros([2, 3]).handle), TypeError, /^geluErfBackward: dy must be float32/],
    ['geluErfBackward missing dx', () => n.geluErfBackward(x.handle, x.handle), TypeError, /^geluErfBackward: expected 3 argument/],
    // softmax
    ['softmax scalar', () => n.softmaxForward(zeros([]).handle, null), RangeError, /^softmaxForward: x must have rank 1 to 8/],
    ['softmax out dtype', () => n.softmaxForward(x.handle, ints.handle), TypeError, /^softmaxForward: out must be float32/],
    ['softmax out overlaps x', () => n.softmaxForward(big.window(0, [2, 3]).handle, big.window(3, [2, 3]).handle), RangeError, /^softmaxForward: out must not overlap x/],
    ['softmaxBackward dx shape', () => n.softmaxBackward(x.handle, x.handle, zeros([2, 4]).handle), RangeError, /^softmaxBackward: dx must have shape \[2, 3\], got \[2, 4\]/],
    ['softmaxBackward dx is y', () => n.softmaxBackward(x.handle, zeros([2, 3]).handle, x.handle), RangeError, /^softmaxBackward: dx must not overlap y/],
    ['softmaxBackward y a string', () => n.softmaxBackward('y', x.handle, x.handle), TypeError, /^softmaxBackward: y must be a Tensor, got 'y'/],
    // axpby
    ['axpby alpha NaN', () => n.axpby(x.handle, NaN, x.handle, 1, null), RangeError, /^axpby: alpha must be finite, got NaN/],
    ['axpby beta string', () => n.axpby(x.handle, 1, x.handle, '1', null), TypeError, /^axpby: beta must be a number/],
    ['axpby beta out of float range', () => n.axpby(x.handle, 1, x.handle, 1e300, null), RangeError, /^axpby: beta = 1e\+300 is out of float32 range/],
    ['axpby shapes differ', () => n.axpby(x.handle, 1, zeros([3, 2]).handle, 1, null), RangeError, /^axpby: a and b must have the same shape, got \[2, 3\] and \[3, 2\]/],
    ['axpby int32 b', () => n.axpby(x.handle, 1, ints.handle, 1, null), TypeError, /^axpby: b must be float32/],
    ['axpby out shape', () => n.axpby(x.handle, 1, x.handle, 1, zeros([6]).handle), RangeError, /^axpby: out must have shape \[2, 3\], got \[6\]/],
    ['axpby out partly overlapping a', () => n.axpby(big.window(0, [2, 3]).handle, 1, x.handle, 1, big.window(1, [2, 3]).handle), RangeError, /^axpby: out partly overlaps a/],
    ['axpby out partly overlapping b', () => n.axpby(x.handle, 1, big.window(10, [2, 3]).handle, 1, big.window(7, [2, 3]).handle), RangeError, /^axpby: out partly overlaps b/],
    ['axpby missing beta', () => n.axpby(x.handle, 1, x.handle), TypeError, /^axpby: expected 4 argument/],
    ['axpby disposed out', () => n.axpby(x.handle, 1, x.handle, 1, disposed.handle), Error, /^axpby: out has been disposed/],
    // dropout
    ['dropout p = 1', () => n.dropoutForward(x.handle, null, { p: 1, seed: 1 }), RangeError, /^dropoutForward: option p must be in \[0, 1\), got 1/],
    ['dropout p negative', () => n.dropoutForward(x.handle, null, { p: -0.1, seed: 1 }), RangeError, /^dropoutForward: option p must be in \[0, 1\)/],
    ['dropout p rounds to 1', () => n.dropoutForward(x.handle, null, { p: 1 - 1e-10, seed: 1 }), RangeError, /^dropoutForward: option p must be in \[0, 1\)/],
    ['dropout p NaN', () => n.dropoutForward(x.handle, null, { p: NaN, seed: 1 }), RangeError, /^dropoutForward: option p must be finite, got NaN/],
    ['dropout p missing', () => n.dropoutForward(x.handle, null, { seed: 1 }), TypeError, /^dropoutForward: option p .* is required/],
    ['dropout seed missing', () => n.dropoutForward(x.handle, null, { p: 0.1 }), TypeError, /^dropoutForward: option seed is required/],
    ['dropout seed negative', () => n.dropoutForward(x.handle, null, { p: 0.1, seed: -1 }), RangeError, /^dropoutForward: option seed must be a non-negative safe integer/],
    ['dropout seed fractional', () => n.dropoutForward(x.handle, null, { p: 0.1, seed: 1.5 }), RangeError, /^dropoutForward: option seed must be a non-negative safe integer/],
    ['dropout seed bigint too big', () => n.dropoutForward(x.handle, null, { p: 0.1, seed: 2n ** 64n }), RangeError, /^dropoutForward: option seed must be a bigint in \[0, 2\^64\)/],
    ['dropout offset string', () => n.dropoutForward(x.handle, null, { ...dop, offset: '3' }), TypeError, /^dropoutForward: option offset must be a non-negative integer or bigint/],
    ['dropout offset NaN', () => n.dropoutForward(x.handle, null, { ...dop, offset: NaN }), RangeError, /^dropoutForward: option offset must be a non-negative safe integer/],
    ['dropout out is x', () => n.dropoutForward(x.handle, x.handle, dop), RangeError, /^dropoutForward: out must not overlap x/],
    ['dropout int32 x', () => n.dropoutForward(ints.handle, null, dop), TypeError, /^dropoutForward: x must be float32/],
    ['dropout no options', () => n.dropoutForward(x.handle, null), TypeError, /^dropoutForward: expected 3 argument/],
    ['dropout options a number', () => n.dropoutForward(x.handle, null, 0.5), TypeError, /^dropoutForward: options must be an object/],
    ['dropoutBackward dx shape', () => n.dropoutBackward(x.handle, zeros([3, 2]).handle, dop), RangeError, /^dropoutBackward: dx must have shape \[2, 3\], got \[3, 2\]/],
    ['dropoutBackward dx is dy', () => n.dropoutBackward(x.handle, x.handle, dop), RangeError, /^dropoutBackward: dx must not overlap dy/],
    ['dropoutBackward p = 2', () => n.dropoutBackward(x.handle, zeros([2, 3]).handle, { p: 2, seed: 0 }), RangeError, /^dropoutBackward: option p must be in \[0, 1\)/],
    ['dropoutBackward dy disposed', () => n.dropoutBackward(disposed.handle, x.handle, dop), Error, /^dropoutBackward: dy has been disposed/],
  ];
  for (const [label, fn, cls, message] of cases) throwsExactly(t, fn, cls, message, label);
  for (const z of [x, w, b, st, ints, big]) z.dispose();
});
