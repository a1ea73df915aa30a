// silent-kernels.ts — issue 13, classes 1 and 3 of the silent-wrong-result suite (silent.test.ts): every kernel of
// lib/kernels.ts against a float64 JavaScript reference (reference.ts) under seeded valid and mutated inputs (edge
// shapes with zero or one-sized dimensions, extreme magnitudes, NaN/Inf sprinkled, out-of-range ids / targets /
// keyLengths / positions, an output aliasing an input exactly or partly, and every float tensor a window of one
// buffer with sentinel gaps between them). A case ends in one of:
//   loud:   the call throws, or a read of its outputs rejects, with an Error naming the op (every output rejects);
//   match:  every output equals the reference (fp32 tolerance; NaN exactly where the reference has NaN, infinities
//           sign-equal), no sentinel gap or input that is not an output changed;
//   silent: anything else (a value off, a NaN that should not be there or is missing, a bad id read as data, a stray
//           write, an output that resolves while its sibling rejects) — a silent wrong result;
//   unclear: an error that does not name the op (reported, and fails the suite as the hostile suite would).
import * as sf from '../../lib/index.ts';
import { Tensor, kernels as K, tensor } from '../../lib/index.ts';
import { closeTo } from '../helpers/close.ts';
import { Random } from '../helpers/random.ts';
import * as R from './reference.ts';

type F = Float64Array;

// ---- seeded generation ----------------------------------------------------------------------------------------------

export type Mut = 'valid' | 'edge' | 'extreme' | 'nonfinite' | 'badIndex' | 'alias';

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** A dimension in [lo, hi]; with 'edge', often 0 or 1 (zero only when zeroOk). */
function dim(r: Random, m: Mut, lo: number, hi: number, zeroOk = true): number {
  if (m === 'edge' && r.chance(0.4)) return zeroOk && r.chance(0.5) ? 0 : 1;
  return r.int(lo, hi);
}

/** Uniform values in [-1, 1) times mag. */
function vals(r: Random, n: number, mag = 1, lo = -1, hi = 1): F {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = (lo + (hi - lo) * r.next()) * mag;
  return a;
}

/** Puts 1 to 3 non-finite values (NaN, +Inf, -Inf) at random positions of a; returns the positions. */
function sprinkle(r: Random, a: F, kinds: number[] = [NaN, Infinity, -Infinity], at?: number[]): number[] {
  if (!a.length) return [];
  const pos: number[] = [];
  const k = r.int(1, 3);
  for (let i = 0; i < k; i++) {
    const p = at?.length ? r.pick(at) : r.int(0, a.length - 1);
    a[p] = r.pick(kinds);
    pos.push(p);
  }
  return pos;
}

/** A magnitude for 'extreme' cases (the kernel's safe range: no intermediate an fp32 formula must overflow). */
const mag = (r: Random, m: Mut, choices: number[]) => (m === 'extreme' ? r.pick(choices) : 1);

// ---- case description -----------------------------------------------------------------------------------------------

export interface Arr {
  shape: number[];
  data: ArrayLike<number>;
  int?: boolean;
}
/** What an output must hold: `want` (float64, compared after rounding to float32), elements whose value the rule leaves open. */
export interface Expect {
  want: F;
  /** Elements not checked (no convention; e.g. the mean of a zero-width row). */
  skip?: (i: number) => boolean;
  /** Elements where a second value is also right (e.g. gelu(-Inf): IEEE's NaN or the limit 0). */
  alt?: Map<number, number>;
  /** Absolute tolerance as a fraction of this scale (default: the largest finite |want| of the output). */
  scale?: number;
  /** Per-element scale of the absolute tolerance instead (elementwise kernels: the size of the element's own terms). */
  elemScale?: F;
}
export type Vals = Record<string, F>;
export interface Built {
  desc: string;
  arrays: Record<string, Arr>;
  /** Arrays the call writes (in place); their values after the call are outputs. */
  writes: string[];
  /** Place array `out` over array `on`, shifted by `shift` elements (0: the same elements). */
  alias?: { out: string; on: string; shift: number };
  /** Runs the op; returns the new tensors it made, by name. */
  call(t: Record<string, Tensor>): Partial<Record<string, Tensor>>;
  /** The outputs the reference gives for the values the tensors held before the call, or 'error' (the op must fail). */
  ref(x: Vals): Partial<Record<string, Expect | F>> | 'error';
  /** Custom check instead of ref (dropout): returns a mismatch or null. */
  check?(x: Vals, got: Record<string, Float32Array>): string | null;
  rtol?: number;
}
export interface Spec {
  name: string;
  /** What a clear error's message must contain. */
  op: RegExp;
  muts: Mut[];
  /** NaN placement cases (class 3) when mutated with 'nonfinite'. */
  nanClass?: boolean;
  build(r: Random, m: Mut): Built;
}

const ids = (a: ArrayLike<number>, shape: number[]): Arr => ({ shape, data: a, int: true });
const arr = (shape: number[], data: ArrayLike<number>): Arr => ({ shape, data });

// ---- the kernels ------------------------------------------------------------------------------------------------------

const GELU_MAGS = [1e-30, 1e3, 1e15];
const geluAlt = (x: F, f: (v: number) => number, lim: (v: number) => number) => {
  const alt = new Map<number, number>();
  x.forEach((v, i) => {
    if (!Number.isFinite(v) && !Number.isNaN(v)) alt.set(i, lim(v));
  });
  void f;
  return alt;
};

/**
 * NaN/Inf for attention: half of the cases hit only masked keys/values (past keyLengths, or in the causal future of
 * every query), which no output may see; the rest go anywhere in `any`. Returns which.
 */
function sprinkleAttention(r: Random, o: { B: number; Hkv: number; Tq: number; Tk: number; D: number; causal: boolean; kl?: Int32Array }, any: F[], kv: F[]): string {
  const masked: number[] = [];
  for (let b = 0; b < o.B; b++)
    for (let h = 0; h < o.Hkv; h++)
      for (let j = 0; j < o.Tk; j++) {
        const pastLen = o.kl ? j >= o.kl[b] : false, future = o.causal && j > o.Tq - 1 + (o.Tk - o.Tq);
        if (pastLen || future) for (let d = 0; d < o.D; d++) masked.push(((b * o.Hkv + h) * o.Tk + j) * o.D + d);
      }
  if (masked.length && r.chance(0.5)) {
    sprinkle(r, r.pick(kv), undefined, masked);
    return 'masked';
  }
  sprinkle(r, r.pick(any));
  return 'anywhere';
}

export const SPECS: Spec[] = [
  {
    name: 'matmul', op: /matmul/i, muts: ['valid', 'edge', 'extreme', 'nonfinite', 'alias'],
    build(r, m) {
      const M = dim(r, m, 1, 7), N = dim(r, m, 1, 7), Kd = dim(r, m, 1, 9);
      const mode = r.pick(['2d', 'both', 'a3', 'b3'] as const);
      const batch = mode === '2d' ? 1 : dim(r, m, 1, 3);
      const transA = r.chance(0.5), transB = r.chance(0.5);
      const alpha = r.pick([1, 0.5, -2]), beta = r.pick([0, 0, 1, 0.5]);
      const hasBias = r.chance(0.5), gelu = r.chance(0.3), hasPre = gelu && r.chance(0.6);
      const hasOut = beta !== 0 || r.chance(0.5);
      const aB = mode === 'both' || mode === 'a3', bB = mode === 'both' || mode === 'b3';
      const aShape = [...(aB ? [batch] : []), ...(transA ? [Kd, M] : [M, Kd])];
      const bShape = [...(bB ? [batch] : []), ...(transB ? [N, Kd] : [Kd, N])];
      const oShape = [...(aB || bB ? [batch] : []), M, N];
      const ma = mag(r, m, [1e-30, 1e15, 1e-10]), mb = mag(r, m, [1e-5, 1e10, 1]);
      const a = vals(r, numel(aShape), ma), b = vals(r, numel(bShape), mb);
      const out = vals(r, numel(oShape), ma * mb), bias = vals(r, N, ma * mb);
      if (m === 'nonfinite') sprinkle(r, r.pick([a, b, out, ...(hasBias ? [bias] : [])]));
      if (beta === 0 && hasOut && r.chance(0.3)) out.fill(NaN); // beta = 0 ignores out's old contents
      const arrays: Record<string, Arr> = { a: arr(aShape, a), b: arr(bShape, b) };
      if (hasOut) arrays.out = arr(oShape, out);
      if (hasBias) arrays.bias = arr([N], bias);
      if (hasPre) arrays.preact = arr(oShape, vals(r, numel(oShape)));
      let alias: Built['alias'];
      if (m === 'alias') {
        const outs = [...(hasOut ? ['out'] : []), ...(hasPre ? ['preact'] : [])];
        if (!outs.length) arrays.out = arr(oShape, out);
        const o = outs.length ? r.pick(outs) : 'out';
        alias = { out: o, on: r.pick(['a', 'b', ...(hasBias ? ['bias'] : []), ...(o === 'preact' && hasOut ? ['out'] : [])]), shift: r.pick([0, 0, 1, -1]) };
      }
      const isOut = 'out' in arrays;
      const opts = { transA, transB, alpha, beta: isOut ? beta : 0, activation: gelu ? 'gelu' : 'none' } as const;
      return {
        desc: `matmul a[${aShape}] b[${bShape}] trans ${+transA}${+transB} alpha ${alpha} beta ${opts.beta} bias ${+hasBias} gelu ${+gelu} preact ${+hasPre} out ${+isOut}`,
        arrays, alias, writes: [...(isOut ? ['out'] : []), ...(hasPre ? ['preact'] : [])],
        call: (t) => {
          const y = K.matmul(t.a, t.b, { ...opts, out: t.out, bias: t.bias, preact: t.preact });
          return isOut ? {} : { y };
        },
        ref: (x) => {
          const mo = { batch, M, N, K: Kd, aBatched: aB, bBatched: bB, transA, transB, alpha, beta: opts.beta, bias: x.bias, gelu };
          const { y, pre } = R.matmulRef(x.a, x.b, x.out, mo);
          // fp32 error is relative to the size of the terms (sum |a||b| ...), not of their possibly cancelling sum
          const abs = (v?: F) => v && v.map(Math.abs);
          const terms = R.matmulRef(abs(x.a)!, abs(x.b)!, abs(x.out), { ...mo, alpha: Math.abs(alpha), beta: Math.abs(opts.beta), bias: abs(x.bias), gelu: false }).pre;
          const scale = terms.reduce((a, v) => (Number.isFinite(v) ? Math.max(a, v) : a), 0);
          const res: Record<string, Expect> = { [isOut ? 'out' : 'y']: { want: y, scale: gelu ? Math.max(scale, y.reduce((a, v) => (Number.isFinite(v) ? Math.max(a, Math.abs(v)) : a), 0)) : scale } };
          if (hasPre) res.preact = { want: pre, scale };
          return res;
        },
      };
    },
  },
  {
    name: 'biasGrad', op: /biasGrad/i, muts: ['valid', 'edge', 'extreme', 'nonfinite', 'alias'],
    build(r, m) {
      const rows = [dim(r, m, 1, 3), dim(r, m, 1, 6)], N = dim(r, m, 1, 8);
      const dy = vals(r, numel(rows) * N, mag(r, m, [1e-30, 1e30])), db = vals(r, N);
      if (m === 'nonfinite') sprinkle(r, dy);
      return {
        desc: `biasGrad dy[${rows},${N}]`, arrays: { dy: arr([...rows, N], dy), dbias: arr([N], db) }, writes: ['dbias'],
        alias: m === 'alias' ? { out: 'dbias', on: 'dy', shift: r.pick([0, 1]) } : undefined,
        call: (t) => (K.biasGrad(t.dy, t.dbias), {}),
        ref: (x) => ({ dbias: R.biasGradRef(x.dy, x.dbias, N) }),
      };
    },
  },
  {
    name: 'layerNorm', op: /layer_?norm/i, muts: ['valid', 'edge', 'extreme', 'nonfinite'], nanClass: true,
    build(r, m) {
      const lead = [dim(r, m, 1, 3), dim(r, m, 1, 5)], C = dim(r, m, 1, 16);
      const eps = r.pick([1e-5, 1e-3]);
      const x = vals(r, numel(lead) * C, mag(r, m, [1e-30, 1e15, 1e-3]));
      x.forEach((v, i) => (x[i] = v + (m === 'extreme' ? 0 : 0.3)));
      const w = vals(r, C, 1, 0.5, 1.5), b = vals(r, C);
      if (m === 'nonfinite') sprinkle(r, r.pick([x, x, w, b]));
      return {
        desc: `layerNorm x[${lead},${C}] eps ${eps}`, arrays: { x: arr([...lead, C], x), w: arr([C], w), b: arr([C], b) }, writes: [],
        call: (t) => K.layerNorm(t.x, t.w, t.b, { eps }),
        ref: (x) => {
          const o = R.layerNormRef(x.x, x.w, x.b, C, eps, numel(lead));
          return { y: o.y, mean: { want: o.mean, skip: () => C === 0 }, rstd: { want: o.rstd, skip: () => C === 0 } };
        },
      };
    },
  },
  {
    name: 'layerNormBackward', op: /layer_?norm/i, muts: ['valid', 'edge', 'extreme', 'alias'],
    build(r, m) {
      const rows = dim(r, m, 1, 6), C = dim(r, m, 1, 12);
      // mean and rstd as the forward computes them from the fp32 x (else x - mean is an fp32 rounding error times rstd)
      const x = vals(r, rows * C, mag(r, m, [1e-3, 1e6])).map(Math.fround), w = vals(r, C, 1, 0.5, 1.5);
      const st = R.layerNormRef(x, w, new Float64Array(C), C, 1e-5, rows);
      const dy = vals(r, rows * C, mag(r, m, [1e-20, 1e10]));
      const which = r.pick([['dx', 'dw', 'db'], ['dx'], ['dw', 'db'], ['db'], ['dx', 'dw']]);
      const arrays: Record<string, Arr> = { dy: arr([rows, C], dy), x: arr([rows, C], x), w: arr([C], w), mean: arr([rows], st.mean), rstd: arr([rows], st.rstd) };
      for (const g of which) arrays[g] = arr(g === 'dx' ? [rows, C] : [C], vals(r, g === 'dx' ? rows * C : C));
      return {
        desc: `layerNormBackward [${rows},${C}] grads ${which}`, arrays, writes: which,
        alias: m === 'alias' ? { out: which[0], on: r.pick(['dy', 'x', 'w', 'mean', 'rstd', ...which.slice(1)]), shift: r.pick([0, 1]) } : undefined,
        call: (t) => (K.layerNormBackward(t.dy, t.x, t.w, t.mean, t.rstd, { dx: t.dx, dw: t.dw, db: t.db }), {}),
        ref: (x) => {
          const o = R.layerNormBackwardRef(x.dy, x.x, x.w, x.mean, x.rstd, C, x.dx, x.dw, x.db);
          // fp32 error scales with the terms, which cancel (g - mean(g) - xhat mean(g xhat)): bound them
          const mx = (a?: F) => (a ? a.reduce((s, v) => Math.max(s, Math.abs(v)), 0) : 0);
          let xh = 0;
          for (let i = 0; i < rows * C; i++) xh = Math.max(xh, Math.abs((x.x[i] - x.mean[Math.floor(i / C)]) * x.rstd[Math.floor(i / C)]));
          const dyw = mx(x.dy) * mx(x.w);
          const scales: Record<string, number> = {
            dx: mx(x.rstd) * dyw * (2 + xh * xh) + mx(x.dx), dw: rows * mx(x.dy) * xh + mx(x.dw), db: rows * mx(x.dy) + mx(x.db),
          };
          const res: Record<string, Expect> = {};
          for (const g of which) res[g] = { want: o[g as 'dx']!, scale: scales[g] };
          return res;
        },
      };
    },
  },
  {
    name: 'gelu', op: /gelu/i, muts: ['valid', 'edge', 'extreme', 'nonfinite', 'alias'],
    build(r, m) {
      const shape = [dim(r, m, 1, 4), dim(r, m, 1, 9)], n = numel(shape);
      const x = vals(r, n, mag(r, m, GELU_MAGS) * 3);
      if (m === 'nonfinite') sprinkle(r, x);
      const hasOut = m === 'alias' || r.chance(0.5);
      const arrays: Record<string, Arr> = { x: arr(shape, x) };
      if (hasOut) arrays.out = arr(shape, vals(r, n));
      return {
        desc: `gelu [${shape}] out ${+hasOut}`, arrays, writes: hasOut ? ['out'] : [],
        alias: m === 'alias' ? { out: 'out', on: 'x', shift: r.pick([0, 1, -1]) } : undefined,
        call: (t) => {
          const y = K.gelu(t.x, { out: t.out });
          return hasOut ? {} : { y };
        },
        ref: (x) => ({ [hasOut ? 'out' : 'y']: { want: x.x.map(R.geluScalar), alt: geluAlt(x.x, R.geluScalar, (v) => (v > 0 ? v : 0)), elemScale: x.x.map(Math.abs) } }),
      };
    },
  },
  {
    name: 'geluBackward', op: /gelu/i, muts: ['valid', 'edge', 'extreme', 'nonfinite', 'alias'],
    build(r, m) {
      const shape = [dim(r, m, 1, 4), dim(r, m, 1, 9)], n = numel(shape);
      const x = vals(r, n, mag(r, m, GELU_MAGS) * 3), dy = vals(r, n), dx = vals(r, n);
      if (m === 'nonfinite') sprinkle(r, r.pick([x, dy]));
      return {
        desc: `geluBackward [${shape}]`, arrays: { x: arr(shape, x), dy: arr(shape, dy), dx: arr(shape, dx) }, writes: ['dx'],
        alias: m === 'alias' ? { out: 'dx', on: r.pick(['x', 'dy']), shift: r.pick([0, 1]) } : undefined,
        call: (t) => (K.geluBackward(t.x, t.dy, t.dx), {}),
        ref: (x) => {
          const alt = new Map<number, number>();
          const want = x.dx.map((d, i) => {
            const xi = x.x[i];
            if (xi === Infinity || xi === -Infinity) alt.set(i, d + (xi > 0 ? 1 : 0) * x.dy[i]);
            return d + R.geluGradScalar(xi) * x.dy[i];
          });
          return { dx: { want, alt, elemScale: x.dx.map((d, i) => Math.abs(d) + Math.abs(x.dy[i]) * Math.min(10, Math.max(1, Math.abs(x.x[i])))) } };
        },
      };
    },
  },
  // the exact (erf) form: IEEE on x Phi(x) and Phi(x) + x phi(x) at +-Inf too (gelu(-Inf) = NaN, as PyTorch), no alternative
  {
    name: 'geluErf', op: /gelu/i, muts: ['valid', 'edge', 'extreme', 'nonfinite', 'alias'],
    build(r, m) {
      const shape = [dim(r, m, 1, 4), dim(r, m, 1, 9)], n = numel(shape);
      const x = vals(r, n, mag(r, m, GELU_MAGS) * 3);
      if (m === 'nonfinite') sprinkle(r, x);
      const hasOut = m === 'alias' || r.chance(0.5);
      const arrays: Record<string, Arr> = { x: arr(shape, x) };
      if (hasOut) arrays.out = arr(shape, vals(r, n));
      return {
        desc: `geluErf [${shape}] out ${+hasOut}`, arrays, writes: hasOut ? ['out'] : [],
        alias: m === 'alias' ? { out: 'out', on: 'x', shift: r.pick([0, 1, -1]) } : undefined,
        call: (t) => {
          const y = K.geluErf(t.x, { out: t.out });
          return hasOut ? {} : { y };
        },
        ref: (x) => ({ [hasOut ? 'out' : 'y']: { want: x.x.map(R.geluErfScalar), elemScale: x.x.map(Math.abs) } }),
      };
    },
  },
  {
    name: 'geluErfBackward', op: /gelu/i, muts: ['valid', 'edge', 'extreme', 'nonfinite', 'alias'],
    build(r, m) {
      const shape = [dim(r, m, 1, 4), dim(r, m, 1, 9)], n = numel(shape);
      const x = vals(r, n, mag(r, m, GELU_MAGS) * 3), dy = vals(r, n), dx = vals(r, n);
      if (m === 'nonfinite') sprinkle(r, r.pick([x, dy]));
      return {
        desc: `geluErfBackward [${shape}]`, arrays: { x: arr(shape, x), dy: arr(shape, dy), dx: arr(shape, dx) }, writes: ['dx'],
        alias: m === 'alias' ? { out: 'dx', on: r.pick(['x', 'dy']), shift: r.pick([0, 1]) } : undefined,
        call: (t) => (K.geluErfBackward(t.x, t.dy, t.dx), {}),
        ref: (x) => ({
          dx: {
            want: x.dx.map((d, i) => d + R.geluErfGradScalar(x.x[i]) * x.dy[i]),
            elemScale: x.dx.map((d, i) => Math.abs(d) + Math.abs(x.dy[i]) * Math.min(10, Math.max(1, Math.abs(x.x[i])))),
          },
        }),
      };
    },
  },
  {
    name: 'softmax', op: /softmax/i, muts: ['valid', 'edge', 'extreme', 'nonfinite', 'alias'], nanClass: true,
    build(r, m) {
      const shape = [dim(r, m, 1, 3), dim(r, m, 1, 4), dim(r, m, 1, 12)], C = shape[2], n = numel(shape);
      const x = vals(r, n, mag(r, m, [1e-30, 1e30, 80]) * 4);
      if (m === 'nonfinite') sprinkle(r, x, r.pick([[NaN], [Infinity], [-Infinity], [NaN, Infinity, -Infinity]]));
      const hasOut = m === 'alias' || r.chance(0.5);
      const arrays: Record<string, Arr> = { x: arr(shape, x) };
      if (hasOut) arrays.out = arr(shape, vals(r, n));
      return {
        desc: `softmax [${shape}] out ${+hasOut}`, arrays, writes: hasOut ? ['out'] : [],
        alias: m === 'alias' ? { out: 'out', on: 'x', shift: r.pick([0, 1, -1]) } : undefined,
        call: (t) => {
          const y = K.softmax(t.x, { out: t.out });
          return hasOut ? {} : { y };
        },
        ref: (x) => ({ [hasOut ? 'out' : 'y']: R.softmaxRef(x.x, C) }),
      };
    },
  },
  {
    name: 'softmaxBackward', op: /softmax/i, muts: ['valid', 'edge', 'extreme', 'alias'],
    build(r, m) {
      const shape = [dim(r, m, 1, 4), dim(r, m, 1, 12)], C = shape[1], n = numel(shape);
      const y = R.softmaxRef(vals(r, n, 3), C), dy = vals(r, n, mag(r, m, [1e-30, 1e20])), dx = vals(r, n);
      return {
        desc: `softmaxBackward [${shape}]`, arrays: { y: arr(shape, y), dy: arr(shape, dy), dx: arr(shape, dx) }, writes: ['dx'],
        alias: m === 'alias' ? { out: 'dx', on: r.pick(['y', 'dy']), shift: r.pick([0, 1]) } : undefined,
        call: (t) => (K.softmaxBackward(t.y, t.dy, t.dx), {}),
        ref: (x) => ({ dx: { want: R.softmaxBackwardRef(x.y, x.dy, x.dx, C), scale: 2 * x.dy.reduce((s, v) => Math.max(s, Math.abs(v)), 0) + x.dx.reduce((s, v) => Math.max(s, Math.abs(v)), 0) } }),
      };
    },
  },
  {
    name: 'axpby', op: /axpby/i, muts: ['valid', 'edge', 'extreme', 'nonfinite', 'alias'],
    build(r, m) {
      const shape = [dim(r, m, 1, 5), dim(r, m, 1, 9)], n = numel(shape);
      const alpha = r.pick([1, -0.5, 3, 0]), beta = r.pick([1, 2, -1, 0]);
      const a = vals(r, n, mag(r, m, [1e-30, 1e30])), b = vals(r, n, mag(r, m, [1e-30, 1e30]));
      if (m === 'nonfinite') sprinkle(r, alpha === 0 ? b : beta === 0 ? a : r.pick([a, b]));
      const outMode = m === 'alias' ? 'alias' : r.pick(['new', 'sep', 'a', 'b'] as const);
      const arrays: Record<string, Arr> = { a: arr(shape, a), b: arr(shape, b) };
      if (outMode === 'sep' || outMode === 'alias') arrays.out = arr(shape, vals(r, n));
      const inPlace = outMode === 'a' || outMode === 'b';
      const writes = outMode === 'new' ? [] : inPlace ? [outMode] : ['out'];
      return {
        desc: `axpby [${shape}] alpha ${alpha} beta ${beta} out ${outMode}`, arrays, writes,
        alias: outMode === 'alias' ? { out: 'out', on: r.pick(['a', 'b']), shift: r.pick([0, 0, 1, -1]) } : undefined,
        call: (t) => {
          const out = outMode === 'new' ? undefined : inPlace ? t[outMode] : t.out;
          const y = K.axpby(t.a, alpha, t.b, beta, { out });
          return outMode === 'new' ? { y } : {};
        },
        ref: (x) => ({ [writes[0] ?? 'y']: { want: x.a.map((v, i) => alpha * v + beta * x.b[i]), elemScale: x.a.map((v, i) => Math.abs(alpha * v) + Math.abs(beta * x.b[i])) } }),
      };
    },
  },
  {
    name: 'dropout', op: /dropout/i, muts: ['valid', 'edge', 'extreme', 'nonfinite'],
    build(r, m) {
      const shape = [dim(r, m, 1, 8), dim(r, m, 1, 64)], n = numel(shape);
      const p = r.pick([0, 0.1, 0.5, 0.9]), seed = r.int(0, 1e6), offset = r.int(0, 1000);
      const x = vals(r, n, mag(r, m, [1e-30, 1e30]), 0.5, 1.5), dy = vals(r, n, 1, 0.5, 1.5), dx = vals(r, n);
      if (m === 'nonfinite') sprinkle(r, x);
      return {
        desc: `dropout [${shape}] p ${p} seed ${seed} offset ${offset}`, arrays: { x: arr(shape, x), dy: arr(shape, dy), dx: arr(shape, dx) }, writes: ['dx'],
        call: (t) => {
          const y = K.dropout(t.x, { p, seed, offset });
          K.dropoutBackward(t.dy, t.dx, { p, seed, offset });
          return { y };
        },
        ref: () => ({}),
        // The mask itself is Philox's; what is checked: each y is 0 or x / (1 - p), dx += dy / (1 - p) exactly where y kept x.
        check: (x, got) => {
          const k = 1 / (1 - p);
          let kept = 0;
          for (let i = 0; i < n; i++) {
            // dy is in [0.5, 1.5) and dx in [-1, 1): whether dx moved says whether the element was kept
            const y = got.y[i], xi = x.x[i], keep = got.dx[i] !== Math.fround(x.dx[i]);
            if (keep) kept++;
            const wantY = keep ? Math.fround(xi * k) : 0;
            // a dropped NaN or infinity: 0, or IEEE's x * 0 = NaN
            const ok = closeTo(y, wantY, 1e-6, Math.abs(wantY) * 1e-6) || (!keep && !Number.isFinite(xi) && Number.isNaN(y));
            if (!ok) return `y[${i}] = ${y}, expected ${wantY} (x = ${xi}, kept ${keep})`;
            const wantD = Math.fround(x.dx[i] + (keep ? x.dy[i] * k : 0));
            if (!closeTo(got.dx[i], wantD, 1e-6, 1e-6)) return `dx[${i}] = ${got.dx[i]}, expected ${wantD} (kept ${keep})`;
          }
          if (p === 0 && kept !== n) return `p = 0 dropped ${n - kept} of ${n}`;
          if (n >= 256 && Math.abs(kept / n - (1 - p)) > 0.15) return `kept ${kept} of ${n} at p = ${p}`;
          return null;
        },
      };
    },
  },
  {
    name: 'embedding', op: /embedding/i, muts: ['valid', 'edge', 'extreme', 'nonfinite', 'badIndex', 'alias'],
    build(r, m) {
      const V = dim(r, m, 1, 9, false), C = dim(r, m, 1, 6), idShape = r.chance(0.5) ? [dim(r, m, 1, 7)] : [dim(r, m, 1, 3), dim(r, m, 1, 4)];
      const n = numel(idShape);
      const id = Int32Array.from({ length: n }, () => r.int(0, V - 1));
      if (m === 'badIndex' && n) id[r.int(0, n - 1)] = r.pick([V, -1, V + 1000, 2147483647, -2147483648]);
      const table = vals(r, V * C, mag(r, m, [1e-38, 1e38]));
      if (m === 'nonfinite') sprinkle(r, table);
      const hasOut = m === 'alias' || r.chance(0.4);
      const arrays: Record<string, Arr> = { ids: ids(id, idShape), table: arr([V, C], table) };
      if (hasOut) arrays.out = arr([...idShape, C], vals(r, n * C));
      return {
        desc: `embedding ids[${idShape}]=${Array.from(id).slice(0, 8)} table[${V},${C}] out ${+hasOut}`, arrays, writes: hasOut ? ['out'] : [],
        alias: m === 'alias' ? { out: 'out', on: 'table', shift: r.pick([0, 1]) } : undefined,
        call: (t) => {
          const y = K.embedding(t.ids, t.table, { out: t.out });
          return hasOut ? {} : { y };
        },
        ref: (x) => (Array.from(id).some((v) => v < 0 || v >= V) ? 'error' : { [hasOut ? 'out' : 'y']: R.embeddingRef(id, x.table, C) }),
      };
    },
  },
  {
    name: 'embeddingBackward', op: /embedding/i, muts: ['valid', 'edge', 'extreme', 'nonfinite', 'badIndex', 'alias'],
    build(r, m) {
      const V = dim(r, m, 1, 9, false), C = dim(r, m, 1, 6), n = dim(r, m, 1, 12);
      const id = Int32Array.from({ length: n }, () => r.int(0, V - 1));
      if (m === 'badIndex' && n) id[r.int(0, n - 1)] = r.pick([V, -1, V + 7, 2147483647]);
      const dout = vals(r, n * C, mag(r, m, [1e-30, 1e30])), dtable = vals(r, V * C);
      if (m === 'nonfinite') sprinkle(r, dout);
      return {
        desc: `embeddingBackward ids[${n}]=${Array.from(id).slice(0, 8)} dtable[${V},${C}]`,
        arrays: { ids: ids(id, [n]), dout: arr([n, C], dout), dtable: arr([V, C], dtable) }, writes: ['dtable'],
        alias: m === 'alias' ? { out: 'dtable', on: 'dout', shift: r.pick([0, 1]) } : undefined,
        call: (t) => (K.embeddingBackward(t.ids, t.dout, t.dtable), {}),
        ref: (x) => (Array.from(id).some((v) => v < 0 || v >= V) ? 'error' : { dtable: R.embeddingBackwardRef(id, x.dout, x.dtable, C) }),
      };
    },
  },
  {
    name: 'crossEntropy', op: /cross_?entropy/i, muts: ['valid', 'edge', 'extreme', 'nonfinite', 'badIndex', 'alias'], nanClass: true,
    build(r, m) {
      const N = dim(r, m, 1, 8), V = dim(r, m, 1, 12, false);
      const ignoreIndex = r.pick([undefined, -1, 0, 3]);
      const ign = ignoreIndex ?? -100;
      const gradScale = r.pick([undefined, 0.5, 2]);
      const t = Int32Array.from({ length: N }, () => (r.chance(0.2) ? ign : r.int(0, V - 1)));
      if (m === 'badIndex' && N) t[r.int(0, N - 1)] = r.pick([V, -5, V + 100, 2147483647].filter((v) => v !== ign));
      const logits = vals(r, N * V, mag(r, m, [1e-30, 1e30, 50]) * 3);
      if (m === 'nonfinite') sprinkle(r, logits, r.pick([[NaN], [Infinity], [-Infinity], [NaN, Infinity, -Infinity]]));
      const dMode = m === 'alias' ? 'alias' : r.pick(['none', 'sep', 'inplace'] as const);
      const arrays: Record<string, Arr> = { logits: arr([N, V], logits), targets: ids(t, [N]) };
      if (dMode === 'sep' || dMode === 'alias') arrays.dlogits = arr([N, V], vals(r, N * V));
      const dName = dMode === 'inplace' ? 'logits' : 'dlogits';
      return {
        desc: `crossEntropy [${N},${V}] targets ${Array.from(t)} ignore ${ignoreIndex} gradScale ${gradScale} dlogits ${dMode}`,
        arrays, writes: dMode === 'none' ? [] : [dName],
        alias: dMode === 'alias' ? { out: 'dlogits', on: 'logits', shift: r.pick([1, -1, V]) } : undefined,
        call: (x) => ({ loss: K.crossEntropy(x.logits, x.targets, { ignoreIndex, gradScale, dlogits: dMode === 'none' ? undefined : x[dName] }) }),
        ref: (x) => {
          if (Array.from(t).some((v) => v !== ign && (v < 0 || v >= V))) return 'error';
          const o = R.crossEntropyRef(x.logits, t, V, ign, gradScale ?? 1);
          // the loss is logsumexp - x[t] per row: its fp32 error is relative to the logits' size, not to the (possibly tiny) loss
          let big = 0;
          for (let i = 0; i < N * V; i++) if (t[Math.floor(i / V)] !== ign && Number.isFinite(x.logits[i])) big = Math.max(big, Math.abs(x.logits[i]));
          return { loss: { want: Float64Array.of(o.loss), scale: Math.max(Math.abs(o.loss), big * 0.01) }, ...(dMode === 'none' ? {} : { [dName]: o.d }) };
        },
      };
    },
  },
  {
    name: 'attention', op: /attention/i, muts: ['valid', 'edge', 'extreme', 'nonfinite', 'badIndex'], nanClass: true,
    build(r, m) {
      const B = dim(r, m, 1, 3), Hkv = dim(r, m, 1, 2, false), G = r.pick([1, 1, 2, 3]), Hq = Hkv * G;
      const Tk = dim(r, m, 1, 9), Tq = r.chance(0.3) ? 1 : dim(r, m, 1, Math.max(1, Tk)), D = dim(r, m, 1, 8, false);
      const causal = r.chance(0.5), scale = r.chance(0.7) ? 1 / Math.sqrt(D) : r.pick([0.1, 1, 2]);
      const kl = r.chance(0.5) || m === 'badIndex' ? Int32Array.from({ length: B }, () => r.int(0, Tk)) : undefined;
      if (m === 'badIndex' && kl && B) kl[r.int(0, B - 1)] = r.pick([Tk + 1, -1, 2147483647]);
      const qm = mag(r, m, [1e-30, 1e-3, 3]), vm = mag(r, m, [1e-30, 1e30, 1]);
      const q = vals(r, B * Hq * Tq * D, qm), k = vals(r, B * Hkv * Tk * D, 1), v = vals(r, B * Hkv * Tk * D, vm);
      const where = m === 'nonfinite' ? sprinkleAttention(r, { B, Hkv, Tq, Tk, D, causal, kl }, [q, k, v], [k, v]) : '';
      const arrays: Record<string, Arr> = { q: arr([B, Hq, Tq, D], q), k: arr([B, Hkv, Tk, D], k), v: arr([B, Hkv, Tk, D], v) };
      if (kl) arrays.kl = ids(kl, [B]);
      const o = { B, Hq, Hkv, Tq, Tk, D, causal, scale, keyLengths: kl };
      return {
        desc: `attention q[${B},${Hq},${Tq},${D}] kv[${B},${Hkv},${Tk},${D}] causal ${+causal} scale ${scale.toPrecision(3)} keyLengths ${kl ? Array.from(kl) : '-'} ${where}`,
        arrays, writes: [],
        call: (t) => K.attention(t.q, t.k, t.v, { causal, scale, keyLengths: t.kl }),
        ref: (x) => (kl && Array.from(kl).some((L) => L < 0 || L > Tk) ? 'error' : R.attentionRef(x.q, x.k, x.v, o)),
      };
    },
  },
  {
    name: 'attentionBackward', op: /attention/i, muts: ['valid', 'edge', 'badIndex', 'alias', 'nonfinite'], nanClass: true,
    build(r, m) {
      const B = dim(r, m, 1, 2), Hkv = dim(r, m, 1, 2, false), G = r.pick([1, 2]), Hq = Hkv * G;
      const Tk = dim(r, m, 1, 7), Tq = dim(r, m, 1, Math.max(1, Tk)), D = dim(r, m, 1, 6, false);
      const causal = r.chance(0.5), scale = 1 / Math.sqrt(D);
      const kl = r.chance(0.5) || m === 'badIndex' ? Int32Array.from({ length: B }, () => r.int(0, Tk)) : undefined;
      const o = { B, Hq, Hkv, Tq, Tk, D, causal, scale, keyLengths: kl };
      const q = vals(r, B * Hq * Tq * D), k = vals(r, B * Hkv * Tk * D), v = vals(r, B * Hkv * Tk * D), dout = vals(r, B * Hq * Tq * D);
      // NaN/Inf in q, k, v (o and lse are the forward's of the same values) or in dout
      const where = m === 'nonfinite' ? sprinkleAttention(r, { B, Hkv, Tq, Tk, D, causal, kl }, [q, k, v, dout, dout], [k, v]) : '';
      const fw = R.attentionRef(q, k, v, o);
      if (m === 'badIndex' && kl && B) kl[r.int(0, B - 1)] = r.pick([Tk + 1, -1]);
      const qs = [B, Hq, Tq, D], ks = [B, Hkv, Tk, D];
      const arrays: Record<string, Arr> = {
        q: arr(qs, q), k: arr(ks, k), v: arr(ks, v), o: arr(qs, fw.o), lse: arr([B, Hq, Tq], fw.lse), dout: arr(qs, dout),
        dq: arr(qs, vals(r, numel(qs))), dk: arr(ks, vals(r, numel(ks))), dv: arr(ks, vals(r, numel(ks))),
      };
      if (kl) arrays.kl = ids(kl, [B]);
      return {
        desc: `attentionBackward q[${qs}] kv[${ks}] causal ${+causal} keyLengths ${kl ? Array.from(kl) : '-'} ${where}`,
        arrays, writes: ['dq', 'dk', 'dv'],
        alias: m === 'alias' ? ((out: string) => ({ out, on: r.pick(['q', 'k', 'v', 'dout', 'dq', 'dk', 'dv'].filter((n) => n !== out)), shift: r.pick([0, 1]) }))(r.pick(['dq', 'dk', 'dv'])) : undefined,
        call: (t) => (K.attentionBackward(t.q, t.k, t.v, t.o, t.lse, t.dout, { dq: t.dq, dk: t.dk, dv: t.dv }, { causal, scale, keyLengths: t.kl }), {}),
        ref: (x) => (kl && Array.from(kl).some((L) => L < 0 || L > Tk) ? 'error' : R.attentionBackwardRef(x.q, x.k, x.v, x.o, x.lse, x.dout, x.dq, x.dk, x.dv, o)),
      };
    },
  },
  {
    name: 'adamw', op: /adamw/i, muts: ['valid', 'edge', 'extreme', 'nonfinite', 'alias'],
    build(r, m) {
      const n = dim(r, m, 1, 70);
      const o = { lr: r.pick([1e-3, 0.1]), beta1: r.pick([0.9, 0]), beta2: r.pick([0.999, 0.95]), eps: r.pick([1e-8, 1e-6]), wd: r.pick([0, 0.01, 0.1]), step: r.int(1, 500) };
      const hasMask = r.chance(0.3);
      const p = vals(r, n), g = vals(r, n, mag(r, m, [1e-30, 1e15, 1e-6])), mm = vals(r, n, 0.1), v = vals(r, n, 0.01, 0, 1);
      if (m === 'nonfinite') sprinkle(r, r.pick([p, g]));
      const arrays: Record<string, Arr> = { p: arr([n], p), g: arr([n], g), m: arr([n], mm), v: arr([n], v) };
      if (hasMask) arrays.mask = arr([n], Float64Array.from({ length: n }, () => r.pick([0, 1])));
      return {
        desc: `adamw [${n}] ${JSON.stringify(o)} mask ${+hasMask}`, arrays, writes: ['p', 'm', 'v'],
        alias: m === 'alias' ? ((out: string) => ({ out, on: r.pick(['g', 'p', 'm', 'v', ...(hasMask ? ['mask'] : [])].filter((n) => n !== out)), shift: r.pick([0, 1]) }))(r.pick(['p', 'm', 'v'])) : undefined,
        call: (t) => (K.adamw(t.p, t.g, t.m, t.v, { lr: o.lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, weightDecay: o.wd, step: o.step, decayMask: t.mask }), {}),
        ref: (x) => {
          const res = R.adamwRef(x.p, x.g, x.m, x.v, { ...o, mask: x.mask });
          // per element: the decayed parameter and the update, which may cancel
          const bc1 = 1 - o.beta1 ** o.step, bc2 = 1 - o.beta2 ** o.step;
          const upd = res.m.map((mm, i) => (o.lr / bc1) * Math.abs(mm) / (Math.sqrt(res.v[i]) / Math.sqrt(bc2) + o.eps));
          return { p: { want: res.p, elemScale: x.p.map((v, i) => Math.abs(v) + upd[i]) }, m: { want: res.m, elemScale: x.m.map((v, i) => Math.abs(o.beta1 * v) + Math.abs((1 - o.beta1) * x.g[i])) }, v: { want: res.v, elemScale: new Float64Array(n) } };
        },
      };
    },
  },
  {
    name: 'sgd', op: /sgd/i, muts: ['valid', 'edge', 'extreme', 'nonfinite', 'alias'],
    build(r, m) {
      const n = dim(r, m, 1, 70);
      const momentum = r.pick([0, 0.9]), nesterov = momentum > 0 && r.chance(0.5);
      const o = { lr: r.pick([0.01, 0.5]), momentum, dampening: nesterov ? 0 : r.pick([0, 0.1]), wd: r.pick([0, 0.01]), nesterov, first: r.chance(0.3) };
      const p = vals(r, n), g = vals(r, n, mag(r, m, [1e-30, 1e30])), buf = vals(r, n);
      if (m === 'nonfinite') sprinkle(r, r.pick([p, g, buf]));
      const arrays: Record<string, Arr> = { p: arr([n], p), g: arr([n], g) };
      if (momentum) arrays.buf = arr([n], buf);
      return {
        desc: `sgd [${n}] ${JSON.stringify(o)}`, arrays, writes: momentum ? ['p', 'buf'] : ['p'],
        alias: m === 'alias' ? { out: momentum && r.chance(0.5) ? 'buf' : 'p', on: 'g', shift: r.pick([0, 1]) } : undefined,
        call: (t) => (K.sgd(t.p, t.g, t.buf ?? null, { lr: o.lr, momentum, dampening: o.dampening, weightDecay: o.wd, nesterov, ...(momentum ? { firstStep: o.first } : {}) }), {}),
        ref: (x) => {
          const res = R.sgdRef(x.p, x.g, x.buf, o);
          const d = x.p.map((v, i) => Math.abs(x.g[i]) + o.wd * Math.abs(v) + (x.buf ? momentum * Math.abs(x.buf[i]) : 0));
          const ps = x.p.map((v, i) => Math.abs(v) + 2 * o.lr * d[i]);
          return momentum ? { p: { want: res.p, elemScale: ps }, buf: { want: res.buf!, elemScale: d } } : { p: { want: res.p, elemScale: ps } };
        },
      };
    },
  },
  {
    name: 'sumSquares', op: /sum_?squares/i, muts: ['valid', 'edge', 'extreme', 'nonfinite'], nanClass: true,
    build(r, m) {
      const n = r.chance(0.2) ? r.int(4000, 9000) : dim(r, m, 1, 100);
      const x = vals(r, n, mag(r, m, [1e-30, 1e20, 1e18]));
      if (m === 'nonfinite') sprinkle(r, x, r.pick([[NaN], [Infinity], [-Infinity], [NaN, Infinity, -Infinity]]));
      return {
        desc: `sumSquares [${n}]`, arrays: { x: arr([n], x) }, writes: [],
        call: (t) => ({ s: K.sumSquares(t.x) }),
        ref: (x) => ({ s: Float64Array.of(R.sumSquaresRef(x.x)) }),
      };
    },
  },
  {
    name: 'clipGradNorm', op: /clipGradNorm/i, muts: ['valid', 'edge', 'extreme', 'nonfinite'],
    build(r, m) {
      const n = dim(r, m, 1, 60), maxNorm = r.pick([0.1, 1, 100]), eps = r.pick([undefined, 0, 1e-3]);
      const g = vals(r, n, mag(r, m, [1e-30, 1e15]));
      if (m === 'nonfinite') sprinkle(r, g);
      return {
        desc: `clipGradNorm [${n}] maxNorm ${maxNorm} eps ${eps}`, arrays: { g: arr([n], g) }, writes: ['g'],
        call: (t) => ({ norm: K.clipGradNorm(t.g, maxNorm, eps === undefined ? undefined : { eps }) }),
        ref: (x) => {
          const norm = Math.sqrt(R.sumSquaresRef(x.g)), coef = maxNorm / (norm + (eps ?? 1e-6));
          // With a NaN norm there is no convention for the gradient (scaled by NaN, or left alone): only the norm is checked.
          return { norm: Float64Array.of(norm), g: { want: coef < 1 ? x.g.map((v) => v * coef) : x.g, skip: () => Number.isNaN(norm) } };
        },
      };
    },
  },
  {
    name: 'scale', op: /scale/i, muts: ['valid', 'edge', 'extreme', 'nonfinite'],
    build(r, m) {
      const shape = [dim(r, m, 1, 5), dim(r, m, 1, 9)], s = r.pick([0.5, -2, 1e-20, 3]);
      const x = vals(r, numel(shape), mag(r, m, [1e-20, 1e30]));
      if (m === 'nonfinite') sprinkle(r, x);
      return {
        desc: `scale [${shape}] by ${s}`, arrays: { x: arr(shape, x) }, writes: ['x'],
        call: (t) => (K.scale(t.x, s), {}),
        ref: (x) => ({ x: { want: x.x.map((v) => v * Math.fround(s)), elemScale: new Float64Array(x.x.length) } }),
      };
    },
  },
  {
    name: 'permute0213', op: /permute0213/i, muts: ['valid', 'edge', 'nonfinite', 'alias'],
    build(r, m) {
      const s = [dim(r, m, 1, 3), dim(r, m, 1, 4), dim(r, m, 1, 4), dim(r, m, 1, 5)], os = [s[0], s[2], s[1], s[3]];
      const x = vals(r, numel(s));
      if (m === 'nonfinite') sprinkle(r, x);
      const outMode = m === 'alias' ? 'acc' : r.pick(['new', 'out', 'acc'] as const);
      const arrays: Record<string, Arr> = { src: arr(s, x) };
      if (outMode !== 'new') arrays.out = arr(os, vals(r, numel(os)));
      return {
        desc: `permute0213 [${s}] ${outMode}`, arrays, writes: outMode === 'new' ? [] : ['out'],
        alias: m === 'alias' ? { out: 'out', on: 'src', shift: r.pick([0, 1]) } : undefined,
        call: (t) => {
          const y = K.permute0213(t.src, outMode === 'new' ? undefined : { out: t.out, accumulate: outMode === 'acc' });
          return outMode === 'new' ? { y } : {};
        },
        ref: (x) => {
          const p = R.permute0213Ref(x.src, s);
          return { [outMode === 'new' ? 'y' : 'out']: outMode === 'acc' ? p.map((v, i) => v + x.out[i]) : p };
        },
      };
    },
  },
  {
    name: 'splitHeads', op: /splitHeads/i, muts: ['valid', 'edge', 'nonfinite'],
    build(r, m) {
      const B = dim(r, m, 1, 3), T = dim(r, m, 1, 5), H = dim(r, m, 1, 4, false), Dh = dim(r, m, 1, 4);
      const x = vals(r, B * T * H * Dh);
      if (m === 'nonfinite') sprinkle(r, x);
      return {
        desc: `splitHeads [${B},${T},${H}*${Dh}]`, arrays: { x: arr([B, T, H * Dh], x) }, writes: [],
        call: (t) => ({ y: K.splitHeads(t.x, H) }),
        ref: (x) => ({ y: R.permute0213Ref(x.x, [B, T, H, Dh]) }),
      };
    },
  },
  {
    name: 'mergeHeads', op: /mergeHeads/i, muts: ['valid', 'edge', 'nonfinite', 'alias'],
    build(r, m) {
      const B = dim(r, m, 1, 3), H = dim(r, m, 1, 4), T = dim(r, m, 1, 5), Dh = dim(r, m, 1, 4);
      const x = vals(r, B * H * T * Dh);
      if (m === 'nonfinite') sprinkle(r, x);
      const outMode = m === 'alias' ? 'out' : r.pick(['new', 'out', 'acc'] as const);
      const arrays: Record<string, Arr> = { x: arr([B, H, T, Dh], x) };
      if (outMode !== 'new') arrays.out = arr([B, T, H * Dh], vals(r, B * T * H * Dh));
      return {
        desc: `mergeHeads [${B},${H},${T},${Dh}] ${outMode}`, arrays, writes: outMode === 'new' ? [] : ['out'],
        alias: m === 'alias' ? { out: 'out', on: 'x', shift: r.pick([0, 1]) } : undefined,
        call: (t) => {
          const y = K.mergeHeads(t.x, outMode === 'new' ? undefined : { out: t.out, accumulate: outMode === 'acc' });
          return outMode === 'new' ? { y } : {};
        },
        ref: (x) => {
          const p = R.permute0213Ref(x.x, [B, H, T, Dh]);
          return { [outMode === 'new' ? 'y' : 'out']: outMode === 'acc' ? p.map((v, i) => v + x.out[i]) : p };
        },
      };
    },
  },
  {
    name: 'kvAppend', op: /kvAppend/i, muts: ['valid', 'edge', 'nonfinite', 'badIndex', 'alias'],
    build(r, m) {
      const B = dim(r, m, 1, 2), H = dim(r, m, 1, 3), Tmax = dim(r, m, 1, 8), D = dim(r, m, 1, 4);
      const n = r.int(0, Tmax);
      let pos = r.int(0, Tmax - n);
      if (m === 'badIndex') pos = r.pick([Tmax - n + 1, -1, Tmax + 5]);
      const cache = vals(r, B * H * Tmax * D), src = vals(r, B * H * n * D);
      if (m === 'nonfinite') sprinkle(r, src);
      return {
        desc: `kvAppend cache[${B},${H},${Tmax},${D}] src n ${n} pos ${pos}`,
        arrays: { cache: arr([B, H, Tmax, D], cache), src: arr([B, H, n, D], src) }, writes: ['cache'],
        alias: m === 'alias' ? { out: 'cache', on: 'src', shift: r.pick([0, 1]) } : undefined,
        call: (t) => (K.kvAppend(t.cache, t.src, pos), {}),
        ref: (x) => (pos < 0 || pos + n > Tmax ? 'error' : { cache: R.kvAppendRef(x.cache, x.src, [B, H, Tmax, D], n, pos) }),
      };
    },
  },
];

// ---- comparison -------------------------------------------------------------------------------------------------------

const fmt = (v: number) => (Number.isInteger(v) || !Number.isFinite(v) ? String(v) : v.toPrecision(7));

/** The first mismatch of an output against its expectation, or null. */
export function compare(name: string, got: Float32Array, e: Expect, rtol: number): string | null {
  const want = e.want.map((v) => Math.fround(v));
  if (got.length !== want.length) return `${name}: ${got.length} elements, expected ${want.length}`;
  let scale = e.scale ?? 0;
  if (e.scale === undefined) for (const v of want) if (Number.isFinite(v)) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < want.length; i++) {
    if (e.skip?.(i)) continue;
    let atol = rtol * (e.elemScale ? e.elemScale[i] : scale);
    if (!Number.isFinite(atol)) atol = 0; // a term that is NaN or infinite but does not reach the result (sgd's first step ignores buf)
    if (closeTo(got[i], want[i], rtol, atol)) continue; // NaN with NaN, infinities sign-equal, finite within tolerance
    const alt = e.alt?.get(i);
    if (alt !== undefined && closeTo(got[i], Math.fround(alt), rtol, atol)) continue;
    return `${name}[${i}] = ${fmt(got[i])}, expected ${fmt(want[i])}${alt !== undefined ? ` (or ${fmt(alt)})` : ''}`;
  }
  return null;
}

// ---- running a case ---------------------------------------------------------------------------------------------------

export type Kind = 'loud' | 'match' | 'silent' | 'unclear' | 'skip';
export interface Outcome {
  kind: Kind;
  /** The reference said the op must fail (bad id, target, keyLengths, position). */
  mustFail: boolean;
  detail?: string;
}

const SENTINEL = 7777.25;
/** Where the kernel cases run: 'cpu' (default) or a CUDA device, from SHAREDFORMER_SILENT_DEVICE (e.g. 'cuda'). */
export const DEVICE = (process.env.SHAREDFORMER_SILENT_DEVICE ?? 'cpu') as sf.Device;
const GAP = 3;

function errMessage(e: unknown): string {
  return e instanceof Error ? `${e.constructor.name}: ${e.message}` : `non-Error ${String(e)}`;
}

/** Runs one case of `spec` with mutation `m` from `seed`: builds the tensors (windows of one buffer, or separate), calls, reads, compares. */
export async function runCase(spec: Spec, m: Mut, seed: number): Promise<Outcome & { desc: string }> {
  const r = new Random(seed);
  const b = spec.build(r, m);
  const desc = `${spec.name}/${m}#${seed}: ${b.desc}${b.alias ? ` [${b.alias.out} over ${b.alias.on}${b.alias.shift ? ` shifted ${b.alias.shift}` : ''}]` : ''}`;
  const arena = b.alias !== undefined || r.chance(0.5);
  const made: Tensor[] = [];
  const t: Record<string, Tensor> = {};
  const x: Vals = {};
  const ranges: Record<string, [number, number]> = {}; // [offset, length] in the arena
  let host: Float32Array | undefined, buf: Tensor | undefined;
  const finish = async (o: Outcome): Promise<Outcome & { desc: string }> => {
    for (const tt of made) if (!tt.disposed) tt.dispose();
    await sf.synchronize().catch(() => undefined); // this case's failures are not the next one's
    return { ...o, desc };
  };
  // 1. tensors
  try {
    const names = Object.keys(b.arrays);
    const floats = names.filter((n) => !b.arrays[n].int && n !== b.alias?.out);
    if (arena) {
      let off = GAP;
      for (const n of floats) {
        ranges[n] = [off, b.arrays[n].data.length];
        off += b.arrays[n].data.length + GAP;
      }
      if (b.alias) {
        const [o0] = ranges[b.alias.on];
        const start = Math.max(0, o0 + b.alias.shift);
        ranges[b.alias.out] = [start, b.arrays[b.alias.out].data.length];
        off = Math.max(off, start + b.arrays[b.alias.out].data.length + GAP);
      }
      host = new Float32Array(off).fill(SENTINEL);
      for (const n of [...floats, ...(b.alias ? [b.alias.out] : [])]) host.set(Float32Array.from(b.arrays[n].data), ranges[n][0]);
      buf = tensor(host, [off], { device: DEVICE });
      made.push(buf);
    }
    for (const n of names) {
      const a = b.arrays[n];
      if (a.int) {
        t[n] = tensor(Int32Array.from(a.data), a.shape, { dtype: 'int32', device: DEVICE });
        x[n] = Float64Array.from(a.data);
      } else if (arena) {
        t[n] = buf!.window(ranges[n][0], a.shape);
        x[n] = Float64Array.from(host!.subarray(ranges[n][0], ranges[n][0] + a.data.length));
      } else {
        const f = Float32Array.from(a.data);
        t[n] = tensor(f, a.shape, { device: DEVICE });
        x[n] = Float64Array.from(f);
      }
      made.push(t[n]);
    }
  } catch (e) {
    return finish({ kind: 'skip', mustFail: false, detail: `setup: ${errMessage(e)}` });
  }
  const expect = b.ref(x);
  const mustFail = expect === 'error';
  const named = (msg: string) => spec.op.test(msg);
  // 2. the call
  let outs: Record<string, Tensor>;
  try {
    outs = Object.fromEntries(Object.entries(b.call(t)).filter((e): e is [string, Tensor] => e[1] !== undefined));
  } catch (e) {
    const msg = errMessage(e);
    return finish({ kind: named(msg) ? 'loud' : 'unclear', mustFail, detail: `threw ${msg}` });
  }
  for (const o of Object.values(outs)) made.push(o);
  // 3. reads of every output
  const toRead: [string, Tensor][] = [...Object.entries(outs), ...b.writes.map((n) => [n, t[n]] as [string, Tensor])];
  const got: Record<string, Float32Array> = {};
  const rejected: string[] = [];
  for (const [n, tt] of toRead) {
    try {
      got[n] = Float32Array.from(await tt.data() as Float32Array);
    } catch (e) {
      rejected.push(`${n}: ${errMessage(e)}`);
    }
  }
  if (rejected.length) {
    const resolved = Object.keys(got);
    if (resolved.length) return finish({ kind: 'silent', mustFail, detail: `${resolved.join(', ')} resolved while ${rejected.join('; ')}` });
    return finish({ kind: rejected.every(named) ? 'loud' : 'unclear', mustFail, detail: rejected.join('; ') });
  }
  if (mustFail) return finish({ kind: 'silent', mustFail, detail: `the op had to fail but every output read resolved (${Object.keys(got).join(', ')})` });
  // 4. values
  const rtol = b.rtol ?? 2e-4;
  let bad: string | null = null;
  if (b.check) bad = b.check(x, got);
  else {
    for (const [n, e] of Object.entries(expect)) {
      if (!e) continue;
      const ex: Expect = e instanceof Float64Array ? { want: e } : e;
      if (!got[n]) {
        bad = `no output ${n}`;
        break;
      }
      bad = compare(n, got[n], ex, rtol);
      if (bad) break;
    }
  }
  // 5. nothing else changed: the inputs that are not outputs, and the sentinel gaps of the arena
  if (!bad) {
    const written = new Set([...b.writes, ...Object.keys(outs)]);
    const hit = (n: string) => arena && ranges[n] && [...written].some((w) => ranges[w] && ranges[w][0] < ranges[n][0] + ranges[n][1] && ranges[n][0] < ranges[w][0] + ranges[w][1]);
    for (const n of Object.keys(b.arrays)) {
      if (written.has(n) || hit(n)) continue;
      const now = await t[n].data();
      const i = x[n].findIndex((v, j) => !Object.is(v, now[j]) && !(Number.isNaN(v) && Number.isNaN(now[j])));
      if (i >= 0) {
        bad = `input ${n}[${i}] changed from ${x[n][i]} to ${now[i]}`;
        break;
      }
    }
  }
  if (!bad && arena) {
    const covered = new Uint8Array(host!.length);
    for (const [o, len] of Object.values(ranges)) covered.fill(1, o, o + len);
    for (let i = 0; i < host!.length && !bad; ) {
      if (covered[i]) {
        i++;
        continue;
      }
      let j = i;
      while (j < host!.length && !covered[j]) j++;
      const w = buf!.window(i, [j - i]);
      const now = await w.data();
      w.dispose();
      const k = now.findIndex((v) => v !== SENTINEL);
      if (k >= 0) bad = `stray write: element ${i + k} of the buffer, outside every output, became ${now[k]}`;
      i = j;
    }
  }
  return finish(bad ? { kind: 'silent', mustFail, detail: bad } : { kind: 'match', mustFail });
}

/** The case list: (spec, mutation, seed) for `perSpec` cases of each kernel, spread over its mutations. */
export function buildKernelCases(perSpec: number, seed0: number): { spec: Spec; mut: Mut; seed: number; nanClass: boolean }[] {
  const out: { spec: Spec; mut: Mut; seed: number; nanClass: boolean }[] = [];
  SPECS.forEach((spec, si) => {
    for (let i = 0; i < perSpec; i++) {
      const mut = spec.muts[i % spec.muts.length];
      out.push({ spec, mut, seed: (seed0 + si * 100_003 + i * 7919) >>> 0, nanClass: !!spec.nanClass && mut === 'nonfinite' });
    }
  });
  return out;
}

/** Class 3: `perSpec` NaN/Inf placement cases of each kernel that has them (attention forward and backward, crossEntropy, softmax, layerNorm, sumSquares). */
export function buildNanCases(perSpec: number, seed0: number): { spec: Spec; mut: Mut; seed: number; nanClass: boolean }[] {
  const out: { spec: Spec; mut: Mut; seed: number; nanClass: boolean }[] = [];
  SPECS.forEach((spec, si) => {
    if (!spec.nanClass) return;
    for (let i = 0; i < perSpec; i++) out.push({ spec, mut: 'nonfinite', seed: (seed0 + 0x9e37 + si * 100_019 + i * 6007) >>> 0, nanClass: true });
  });
  return out;
}
