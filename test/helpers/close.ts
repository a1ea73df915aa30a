// The one closeness check of the test suites: how far computed values may be from the expected ones.
//
// Definition (element-wise, the default). With a tolerance { rel, abs }, element i is close when
//
//     |got_i - want_i| <= abs + rel * |want_i|
//
// i.e. its relative error |got_i - want_i| / (|want_i| + floor), with the floor abs / rel, is at most rel: values
// well above the floor are held to `rel` of their own size, values near zero (small only because larger terms
// cancelled) to `abs` absolute. rel = 0 is a pure absolute bound, abs = rel = 0 exact equality. Non-finite values
// match only themselves: NaN only NaN (at the same position), +-Infinity only the same infinity; a finite value never
// matches a non-finite one. Arrays of different lengths are never close.
//
// Norm-wise (mode 'norm', for whole tensors whose elements may cancel): ||got - want||_2 <= abs + rel * ||want||_2.
//
// `measure` returns the worst element (or the norm) so a suite can report or collect it; `assertClose` is the ava
// assertion, naming the worst index, got, want and the bound when it fails.
import type { ExecutionContext } from 'ava';

export interface Tolerance {
  /** Relative part of the bound (default 0). */
  rel?: number;
  /** Absolute part of the bound (default 0). */
  abs?: number;
  /** 'element' (default): every element within abs + rel |want_i|; 'norm': ||got - want||_2 within abs + rel ||want||_2. */
  mode?: 'element' | 'norm';
}

export interface Closeness {
  /** Whether the check passes. */
  ok: boolean;
  /** The largest |got_i - want_i| / (abs + rel |want_i|) (norm mode: ||got - want|| / (abs + rel ||want||)): <= 1 passes; Infinity for a non-finite mismatch or a length mismatch. */
  ratio: number;
  /** The relative error: ratio * rel where rel > 0 (element mode: max |got_i - want_i| / (|want_i| + abs / rel) over the worst element; norm mode with abs = 0: ||got - want|| / ||want||), else the absolute error. */
  err: number;
  /** Index of the worst element (-1: none differs, a length mismatch, or norm mode). */
  at: number;
}

/** Whether one value is close to the expected one (the element-wise definition above). */
export function closeTo(got: number, want: number, rel = 0, abs = 0): boolean {
  return ratioOf(got, want, rel, abs) <= 1;
}

/** |got - want| / (abs + rel |want|): 0 for equal values, Infinity for a non-finite mismatch (NaN included). */
function ratioOf(got: number, want: number, rel: number, abs: number): number {
  if (got === want || (Number.isNaN(got) && Number.isNaN(want))) return 0;
  if (!Number.isFinite(got) || !Number.isFinite(want)) return Infinity;
  return Math.abs(got - want) / (abs + rel * Math.abs(want));
}

/** How close `got` is to `want` under `tol` (see the file header for the definition). */
export function measure(got: ArrayLike<number>, want: ArrayLike<number>, tol: Tolerance = {}): Closeness {
  const rel = tol.rel ?? 0, abs = tol.abs ?? 0;
  if (!(rel >= 0 && abs >= 0)) throw new RangeError(`measure: rel and abs must be non-negative, got rel ${rel}, abs ${abs}`);
  const scale = (r: number) => (rel > 0 ? r * rel : r * abs);
  if (got.length !== want.length) return { ok: false, ratio: Infinity, err: Infinity, at: -1 };
  if (tol.mode === 'norm') {
    let dd = 0, ww = 0;
    for (let i = 0; i < want.length; i++) {
      const g = got[i], w = want[i];
      if (Number.isFinite(w)) ww += w * w;
      dd += ratioOf(g, w, 0, 1) === 0 ? 0 : (g - w) ** 2; // NaN or Infinity for a non-finite mismatch
    }
    const d = Math.sqrt(dd), bound = abs + rel * Math.sqrt(ww);
    const ratio = d === 0 ? 0 : Number.isNaN(d) ? Infinity : d / bound;
    return { ok: ratio <= 1, ratio, err: scale(ratio), at: -1 };
  }
  let ratio = 0, at = -1;
  for (let i = 0; i < want.length; i++) {
    const r = ratioOf(got[i], want[i], rel, abs);
    if (!(r <= ratio)) [ratio, at] = [Number.isNaN(r) ? Infinity : r, i];
  }
  return { ok: ratio <= 1, ratio, err: scale(ratio), at };
}

const fmt = (v: number) => (Number.isInteger(v) || !Number.isFinite(v) ? String(v) : v.toPrecision(8));

/**
 * Asserts that `got` is close to `want` (see the file header for the definition); on failure the message names
 * `what`, the worst element's index, got and want, the relative error and the tolerance. Returns the measurement.
 */
export function assertClose(t: ExecutionContext, got: ArrayLike<number>, want: ArrayLike<number>, tol: Tolerance & { what: string }): Closeness {
  const c = measure(got, want, tol);
  const bound = `rel ${tol.rel ?? 0}, abs ${tol.abs ?? 0}${tol.mode === 'norm' ? ', norm-wise' : ''}`;
  if (got.length !== want.length) t.fail(`${tol.what}: ${got.length} values, expected ${want.length}`);
  else if (tol.mode === 'norm') t.true(c.ok, `${tol.what}: error ${c.err.toExponential(3)}, ${c.ratio.toExponential(3)} times the bound (${bound})`);
  else if (!c.ok) t.fail(`${tol.what}: element ${c.at} of ${want.length}: got ${fmt(got[c.at])}, want ${fmt(want[c.at])}: error ${c.err.toExponential(3)} (${bound})`);
  else t.pass();
  return c;
}
