// Shared helpers of the ava suites: a seeded pseudo-random stream, element-wise closeness, and exact error checks.
import type { ExecutionContext } from 'ava';
import { Tensor } from '../../lib/index.ts';
import { native } from '../../lib/native.ts';

export type ErrorClass = ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor;

/** A deterministic pseudo-random stream in [lo, hi) (default [-1, 1)). */
export function lcg(seed: number): (lo?: number, hi?: number) => number {
  let s = seed >>> 0;
  return (lo = -1, hi = 1) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return lo + ((hi - lo) * s) / 2 ** 32;
  };
}

/** Asserts |got - want| <= atol + rtol |want| element-wise (equal values, infinities included, always pass). */
export function near(t: ExecutionContext, got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol: number, what: string): void {
  t.is(got.length, want.length, `${what}: length`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    if (got[i] === want[i]) continue;
    const err = Math.abs(got[i] - want[i]) / (atol + rtol * Math.abs(want[i]));
    if (!(err <= worst)) [worst, at] = [Number.isNaN(err) ? Infinity : err, i];
  }
  t.true(worst <= 1, `${what}: element ${at}: ${got[at]} vs ${want[at]}`);
}

/** Disposes whatever a call returned that holds native memory (a Tensor, a native handle, or an array of them). */
export function release(r: unknown): void {
  if (Array.isArray(r)) for (const x of r) release(x);
  else if (r instanceof Tensor) {
    if (!r.disposed) r.dispose();
  } else if (r && typeof r === 'object' && native().isHandle(r)) (r as { dispose(): void }).dispose();
}

/**
 * Asserts that fn throws exactly `cls` (a TypeError is not accepted where an Error is expected, nor the reverse) with
 * a message matching `message`; anything a wrongly successful call returns is released, so it cannot leak.
 */
export function throwsExactly(t: ExecutionContext, fn: () => unknown, cls: ErrorClass, message: RegExp, label: string): void {
  const err = t.throws(() => release(fn()), { instanceOf: cls, message }, label);
  if (err) t.is(err.constructor, cls, `${label}: expected exactly ${cls.name}, got ${err.constructor.name}: ${err.message}`);
}
