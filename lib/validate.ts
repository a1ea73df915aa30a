// validate.ts — argument checking written once: how a value is shown in an error, integer and number checks, and the
// options-object check. Every message starts with the caller's name (`who`) and shows the offending value.
// No import from tensor.ts (sharing/plan.ts uses this module and stays free of tensors): a class chooses how it is
// shown by a method under the symbol `shownAs` (Tensor: its toString).

/** A method `[shownAs](): string` on an object gives describe() its text (Tensor shows dtype, shape and device). */
export const shownAs: unique symbol = Symbol('shownAs');

/**
 * A value as an error message shows it: null and undefined by name, numbers as JavaScript prints them (NaN, Infinity,
 * and -0 kept), bigints with their `n`, strings quoted by JSON.stringify (cut after 40 characters), arrays by length,
 * an object with a `shownAs` method by what it returns (a Tensor: dtype, shape, device), other objects by their constructor (`an object` for plain ones).
 */
export function describe(v: unknown): string {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'undefined': return 'undefined';
    case 'string': return v.length > 40 ? `${JSON.stringify(v.slice(0, 40))}...` : JSON.stringify(v);
    case 'number': return Object.is(v, -0) ? '-0' : String(v);
    case 'boolean': return String(v);
    case 'bigint': return `${v}n`;
    case 'symbol': return 'a symbol';
    case 'function': return 'a function';
  }
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  const own = (v as { [shownAs]?: unknown })[shownAs];
  if (typeof own === 'function') {
    try {
      return String(own.call(v));
    } catch {
      // e.g. an object made from Tensor.prototype without a native handle: shown by its constructor below
    }
  }
  let name: unknown;
  try {
    name = Object.getPrototypeOf(v)?.constructor?.name;
  } catch {
    name = undefined; // a Proxy whose getPrototypeOf trap throws
  }
  if (typeof name !== 'string' || name === '' || name === 'Object') return 'an object';
  return `${/^[AEIO]/.test(name) ? 'an' : 'a'} ${name}`; // a Uint8Array, an Int32Array
}

/**
 * A value read from or written to JSON (a safetensors header), shown as JSON so that its content is visible
 * (`[2,-1]`, `{"dtype":"F32"}`), cut after 80 characters; undefined and what JSON cannot print are shown by type.
 */
export function showJson(v: unknown): string {
  let s: string;
  try {
    s = v === undefined ? 'undefined' : (JSON.stringify(v) ?? typeof v);
  } catch {
    s = `<${typeOf(v)}>`; // e.g. nesting too deep to print, or a bigint
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** The JSON type of a value: 'null', 'array', or what typeof says. */
export function typeOf(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

/** True for an object that is neither null nor an array (what an options or config argument must be). */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The largest safe integer, as range messages write it. */
const MAX_SAFE = '2^53 - 1';

/**
 * An integer in [lo, hi] (hi left out or Infinity: no upper bound): a TypeError when v is not a number, a RangeError
 * when it is not an integer or out of range. `hint` is added after the value (what the bound comes from).
 */
export function checkInt(who: string, v: unknown, name: string, lo: number, hi = Infinity, hint = ''): number {
  if (typeof v !== 'number') throw new TypeError(`${who}: ${name} must be an integer, got ${describe(v)}${hint}`);
  if (!Number.isInteger(v) || v < lo || v > hi) {
    const range = hi === Infinity ? `>= ${lo}` : `in [${lo}, ${hi === Number.MAX_SAFE_INTEGER ? MAX_SAFE : hi}]`;
    throw new RangeError(`${who}: ${name} must be an integer ${range}, got ${describe(v)}${hint}`);
  }
  return v;
}

/** The bounds checkNumber applies. */
export interface NumberBounds {
  /** Smallest allowed value (inclusive). */
  min?: number;
  /** Largest allowed value (inclusive). */
  max?: number;
  /** Refuse NaN and ±Infinity. Default true. */
  finite?: boolean;
}

/**
 * A number: a TypeError when v is not one, a RangeError when it is not finite (unless `finite: false`) or outside
 * [min, max].
 */
export function checkNumber(who: string, v: unknown, name: string, bounds: NumberBounds = {}): number {
  const { min = -Infinity, max = Infinity, finite = true } = bounds;
  if (typeof v !== 'number') throw new TypeError(`${who}: ${name} must be a number, got ${describe(v)}`);
  if (finite && !Number.isFinite(v)) throw new RangeError(`${who}: ${name} must be finite, got ${describe(v)}`);
  if (Number.isNaN(v) || v < min || v > max) {
    const range =
      min === -Infinity && max === Infinity ? 'other than NaN' : max === Infinity ? `>= ${min}` : min === -Infinity ? `<= ${max}` : `in [${min}, ${max}]`;
    throw new RangeError(`${who}: ${name} must be a number ${range}, got ${describe(v)}`);
  }
  return v;
}

/**
 * An object argument (not null, not an array), else a TypeError `<who>: <what> must be an object<shape>, got <value>`;
 * `shape` says what the object holds (' { lr, warmup, total, minLr? }').
 */
export function checkObject(who: string, v: unknown, what: string, shape = ''): void {
  if (!isPlainObject(v)) throw new TypeError(`${who}: ${what} must be an object${shape}, got ${describe(v)}`);
}

/**
 * An options argument: undefined (no options) gives {}, an object is returned as it is, anything else is a TypeError
 * naming the method. With `allowed`, a key not in it (a misspelt option) is a TypeError listing the options.
 */
export function checkOptions<T extends object>(who: string, o: T | undefined, allowed?: readonly string[]): T {
  if (o === undefined) return {} as T;
  checkObject(who, o, 'options', ' (or left out)');
  if (allowed) checkKeys(who, o, allowed, 'option');
  return o;
}

/** Refuses keys that are not in `allowed`: a misspelt key would otherwise be ignored silently. */
export function checkKeys(who: string, o: object, allowed: readonly string[], what = 'key'): void {
  for (const k of Object.keys(o))
    if (!allowed.includes(k)) throw new TypeError(`${who}: unknown ${what} ${JSON.stringify(k)}; the ${what}s are ${allowed.join(', ')}`);
}
