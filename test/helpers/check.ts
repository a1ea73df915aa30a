// Shared helpers of the ava suites: releasing what a call returned, and exact error checks (the seeded stream is
// random.ts, closeness close.ts).
import type { ExecutionContext } from 'ava';
import { Tensor } from '../../lib/index.ts';
import { native } from '../../lib/native.ts';

export type ErrorClass = ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor;

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
