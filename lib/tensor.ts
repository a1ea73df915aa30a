// tensor.ts — the Tensor class and the functions that make tensors.
//
// A Tensor is a dense, row-major view (offset, shape, dtype) into refcounted device storage; several tensors can view
// one buffer (every parameter of a model lives in one, see the design's ParameterStore). Work on a tensor is queued on
// its device's stream and runs off the JavaScript thread: `await t.data()` waits for it without blocking the event
// loop; `t.dataSync()` blocks. Free memory early with `t.dispose()` or `using t = ...`; a finalizer frees what is
// dropped without either.
import { native, type DTypeName, type HostArray, type NativeTensor } from './native.ts';
// A cycle (autograd.ts imports Tensor), safe because neither module uses the other's bindings while it loads.
import { backward as runBackward, type BackwardOptions } from './autograd.ts';
import { checkOptions, describe, shownAs } from './validate.ts';

/** Element types: float32, int32, and bfloat16 (stored as bf16, read back as float32). */
export type DType = DTypeName;
/** 'cpu', 'cuda' (the first GPU) or 'cuda:N'. */
export type Device = 'cpu' | 'cuda' | `cuda:${number}`;

/** Options accepted by the tensor factories. */
export interface TensorOptions {
  /** Element type. Default 'float32' ('int32' when the data is an Int32Array). */
  dtype?: DType;
  /** Where the tensor lives. Default 'cpu'. */
  device?: Device;
}

/** Options for rand() and randn(): the counter-based generator is a pure function of (seed, offset + index). */
export interface RandomOptions extends TensorOptions {
  /** Generator seed. Default: the default generator's seed (see manualSeed). */
  seed?: number | bigint;
  /** First counter value. Default: the default generator's running offset, which then advances by the tensor's size. */
  offset?: number | bigint;
}

/** Nested arrays of numbers, as accepted by tensor(). */
export type NestedNumbers = number | readonly NestedNumbers[];

/** The native handle of a Tensor argument, or a TypeError naming the op and the argument. */
export function handleOf(t: unknown, op: string, name: string): NativeTensor {
  if (!Tensor.isTensor(t)) throw new TypeError(`${op}: ${name} must be a Tensor, got ${describe(t)}`);
  if (t.disposed) throw new Error(`${op}: ${name} has been disposed`);
  return t.handle;
}

/**
 * An n-dimensional array on a device (CPU or CUDA): a handle to native memory, read with data() or dataSync(), freed by
 * dispose() (or `using`, or a finalizer).
 */
export class Tensor {
  // Private fields: only the constructor sets them (after checking the handle), so `#handle in x` is a brand check no
  // object can fake, and the ops check their arguments without a call into the addon.
  readonly #handle: NativeTensor;
  /** A handle's shape never changes: read from the addon once (each read makes a new array there). */
  #shape: number[] | undefined;

  /** @internal Tensors are made by tensor(), zeros(), rand() and the ops, not with `new`. */
  constructor(handle: NativeTensor) {
    if (!native().isHandle(handle))
      throw new TypeError('Tensor: tensors are made by tensor(), zeros(), ones(), full(), rand() or randn(), not with `new`');
    this.#handle = handle;
  }

  /** @internal Whether x was made by Tensor's constructor, and so holds a native handle. */
  static isTensor(x: unknown): x is Tensor {
    return typeof x === 'object' && x !== null && #handle in x;
  }

  /** @internal The native object; use the methods of Tensor instead. */
  get handle(): NativeTensor {
    return this.#handle;
  }

  /** Dimensions, outermost first (a new array: changing it changes nothing). */
  get shape(): number[] {
    // A disposed tensor's shape is refused (by the addon) as before, cached or not.
    if (this.#shape === undefined || this.#handle.disposed) this.#shape = this.#handle.shape;
    return this.#shape.slice();
  }
  /** The element type. */
  get dtype(): DType {
    return this.handle.dtype;
  }
  /** The device holding the data: 'cpu' or 'cuda:N'. */
  get device(): Device {
    return this.handle.device as Device;
  }
  /** Number of elements. */
  get size(): number {
    return this.handle.size;
  }
  /** The number of dimensions (shape.length). */
  get rank(): number {
    return this.shape.length;
  }
  /** Whether dispose() has been called; a disposed tensor refuses every operation. */
  get disposed(): boolean {
    return this.handle.disposed;
  }

  /** A host copy of the elements, once all queued work on them has run (the event loop keeps running meanwhile). bfloat16 is widened to Float32Array. */
  data(): Promise<HostArray> {
    try {
      return this.handle.read();
    } catch (e) {
      return Promise.reject(e); // a disposed tensor rejects, as every other failure of data() does
    }
  }
  /** As data(), but blocks the calling thread until the copy is made. */
  dataSync(): HostArray {
    return this.handle.readSync();
  }
  /**
   * The one element of a single-element tensor as a number, once queued work on it has run: PyTorch's `loss.item()`,
   * awaited (`await loss.item()`). Rejects when the tensor holds more or fewer than one element, or its op failed.
   */
  async item(): Promise<number> {
    if (this.handle.disposed) throw new Error('Tensor.item: the tensor has been disposed');
    if (this.size !== 1)
      throw new RangeError(`Tensor.item: only a tensor of exactly one element has an item, got shape [${this.shape.join(', ')}] (${this.size} elements)`);
    return Number((await this.data())[0]);
  }
  /**
   * Back-propagates from this scalar loss into the parameters' gradients: `backward(loss, options)` (PyTorch's
   * `loss.backward()`; see backward() for the rules and options).
   */
  backward(options?: BackwardOptions): void {
    runBackward(this, options);
  }
  /**
   * A typed array that shares this CPU tensor's memory (no copy): writes through it change the tensor. Taken after
   * queued work has finished; it keeps the memory alive even after dispose(). float32 and int32 only.
   */
  sharedData(): HostArray {
    return this.handle.shared();
  }
  /** Nested arrays of numbers (a copy), like PyTorch's tolist(). */
  toArray(): NestedNumbers {
    const flat = Array.from(this.dataSync());
    const build = (dim: number, start: number): [NestedNumbers, number] => {
      if (dim === this.rank) return [flat[start], start + 1];
      const out: NestedNumbers[] = [];
      let pos = start;
      for (let i = 0; i < this.shape[dim]; i++) {
        const [v, next] = build(dim + 1, pos);
        out.push(v);
        pos = next;
      }
      return [out, pos];
    };
    return build(0, 0)[0];
  }

  /** A copy on `device` (this tensor when it is already there). */
  to(device: Device): Tensor {
    if (typeof device !== 'string') throw new TypeError(`Tensor.to: device must be 'cpu', 'cuda' or 'cuda:N', got ${describe(device)}`);
    return new Tensor(this.handle.to(device));
  }
  /** A copy in new storage on the same device. */
  clone(): Tensor {
    return new Tensor(this.handle.clone());
  }
  /** The same elements under another shape of equal size, sharing storage (PyTorch's view/reshape of a dense tensor). */
  view(shape: readonly number[]): Tensor {
    if (this.disposed) throw new Error('Tensor.view: the tensor has been disposed');
    const n = Array.isArray(shape) && shape.every((d) => typeof d === 'number') ? shape.reduce((a, b) => a * b, 1) : NaN;
    if (Array.isArray(shape) && n !== this.size && Number.isFinite(n))
      throw new RangeError(`Tensor.view: shape [${shape.join(', ')}] has ${n} elements, the tensor has ${this.size}`);
    return new Tensor(this.handle.view(0, shape as number[]));
  }
  /** A window of `shape` starting `offset` elements in, sharing storage: how parameters view one flat buffer. */
  window(offset: number, shape: readonly number[]): Tensor {
    return new Tensor(this.handle.view(offset, shape as number[]));
  }
  /** Whether the two tensors view the same storage. */
  sharesStorageWith(other: Tensor): boolean {
    return this.handle.sameStorage(handleOf(other, 'Tensor.sharesStorageWith', 'other'));
  }

  /** Releases this tensor's reference to its storage now. Idempotent. */
  dispose(): void {
    this.handle.dispose();
  }
  /** dispose(), for `using` declarations. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** A short description: dtype, shape and device (no data). */
  toString(): string {
    if (this.disposed) return 'Tensor(disposed)';
    return `Tensor(${this.dtype}[${this.shape.join(', ')}] on ${this.device})`;
  }

  /** @internal How error messages show a Tensor (see validate.ts). */
  [shownAs](): string {
    return this.toString();
  }
}

// ---- factories ---------------------------------------------------------------------------------------------------

function inferShape(data: NestedNumbers, op: string): { shape: number[]; flat: number[] } {
  const shape: number[] = [];
  let probe: NestedNumbers = data;
  while (Array.isArray(probe)) {
    shape.push(probe.length);
    if (probe.length === 0) break;
    probe = probe[0];
  }
  const flat: number[] = [];
  const walk = (x: NestedNumbers, dim: number, path: string): void => {
    if (dim === shape.length) {
      if (typeof x !== 'number') throw new TypeError(`${op}: element ${path || '[]'} must be a number, got ${describe(x)}`);
      flat.push(x);
      return;
    }
    if (!Array.isArray(x) || x.length !== shape[dim])
      throw new RangeError(`${op}: ragged nested array: ${path || 'the data'} should be an array of length ${shape[dim]}, got ${describe(x)}`);
    for (let i = 0; i < x.length; i++) walk(x[i], dim + 1, `${path}[${i}]`);
  };
  walk(data, 0, '');
  return { shape, flat };
}

/**
 * A tensor from data: nested arrays of numbers (shape inferred), or a flat array / Float32Array / Int32Array with
 * an explicit shape. The data is copied.
 */
export function tensor(
  data: NestedNumbers | Float32Array | Int32Array | Uint16Array,
  shape?: readonly number[],
  opts?: TensorOptions,
): Tensor {
  const op = 'tensor';
  checkOptions(op, opts);
  const device = opts?.device ?? 'cpu';
  if (data instanceof DataView || (ArrayBuffer.isView(data) && !(data instanceof Float32Array || data instanceof Int32Array || data instanceof Uint16Array)))
    throw new TypeError(`${op}: data must be a Float32Array, Int32Array or Uint16Array (or nested arrays of numbers), got ${describe(data)}`);
  if (ArrayBuffer.isView(data)) {
    const dtype = opts?.dtype ?? (data instanceof Int32Array ? 'int32' : 'float32');
    const s = shape ?? [(data as Float32Array).length];
    return new Tensor(native().fromArray(data as Float32Array, s as number[], dtype, device));
  }
  if (typeof data !== 'number' && !Array.isArray(data))
    throw new TypeError(`${op}: data must be a number, nested arrays of numbers or a typed array, got ${describe(data)}`);
  const dtype = opts?.dtype ?? 'float32';
  const { shape: inferred, flat } = inferShape(data, op);
  const s = shape ?? inferred;
  if (dtype === 'int32') {
    for (let i = 0; i < flat.length; i++) {
      const v = flat[i];
      if (!Number.isInteger(v) || v < -2147483648 || v > 2147483647)
        throw new RangeError(`${op}: element ${i} (${v}) is not an int32`);
    }
    return new Tensor(native().fromArray(Int32Array.from(flat), s as number[], dtype, device));
  }
  return new Tensor(native().fromArray(Float32Array.from(flat), s as number[], dtype, device));
}

/** A tensor filled with `value`. */
export function full(shape: readonly number[], value: number, opts?: TensorOptions): Tensor {
  checkOptions('full', opts);
  return new Tensor(native().full(shape as number[], value, opts?.dtype ?? 'float32', opts?.device ?? 'cpu'));
}
/** A new tensor of the given shape filled with 0. */
export function zeros(shape: readonly number[], opts?: TensorOptions): Tensor {
  checkOptions('zeros', opts);
  return new Tensor(native().full(shape as number[], 0, opts?.dtype ?? 'float32', opts?.device ?? 'cpu', 'zeros'));
}
/** A new tensor of the given shape filled with 1. */
export function ones(shape: readonly number[], opts?: TensorOptions): Tensor {
  checkOptions('ones', opts);
  return new Tensor(native().full(shape as number[], 1, opts?.dtype ?? 'float32', opts?.device ?? 'cpu', 'ones'));
}

// The default generator of this JavaScript realm (each worker thread has its own), as torch.manual_seed's.
const defaultGenerator = { seed: 0x5eed5eedn as bigint, offset: 0n };

/** Resets the default generator: later rand()/randn() calls without a seed start from counter 0 of `seed`. */
export function manualSeed(seed: number | bigint): void {
  if (typeof seed !== 'number' && typeof seed !== 'bigint')
    throw new TypeError(`manualSeed: seed must be a non-negative integer or bigint, got ${describe(seed)}`);
  if (typeof seed === 'number' ? !(Number.isSafeInteger(seed) && seed >= 0) : seed < 0n || seed >= 1n << 64n)
    throw new RangeError(`manualSeed: seed must be a non-negative safe integer or a bigint below 2^64, got ${describe(seed)}`);
  defaultGenerator.seed = BigInt(seed);
  defaultGenerator.offset = 0n;
}

function randomTensor(op: 'rand' | 'randn', shape: readonly number[], a: number, b: number, opts?: RandomOptions): Tensor {
  checkOptions(op, opts);
  const explicit = opts?.seed !== undefined;
  const seed = opts?.seed ?? defaultGenerator.seed;
  const offset = opts?.offset ?? (explicit ? 0 : defaultGenerator.offset);
  const t = new Tensor(
    native().random(shape as number[], op === 'rand' ? 'uniform' : 'normal', seed, offset, a, b, opts?.dtype ?? 'float32', opts?.device ?? 'cpu'),
  );
  // Each rand()/randn() draws fresh counters; rand and randn use separate Philox streams.
  if (!explicit && opts?.offset === undefined) defaultGenerator.offset += BigInt(t.size);
  return t;
}

/** Uniform samples in [low, high) (default [0, 1)) from the counter-based generator; the same on every device. */
export function rand(shape: readonly number[], opts?: RandomOptions & { low?: number; high?: number }): Tensor {
  return randomTensor('rand', shape, opts?.low ?? 0, opts?.high ?? 1, opts);
}

/** Normal samples with `mean` (default 0) and `std` (default 1) from the counter-based generator. */
export function randn(shape: readonly number[], opts?: RandomOptions & { mean?: number; std?: number }): Tensor {
  return randomTensor('randn', shape, opts?.mean ?? 0, opts?.std ?? 1, opts);
}
