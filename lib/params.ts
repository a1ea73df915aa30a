// params.ts — the ParameterStore: ONE flat buffer for every unique parameter of a model, a gradient buffer that
// mirrors it offset for offset, and (for the optimizer) the moment buffers and the weight-decay mask in the same
// layout. A parameter is a window (offset, shape) into the flat buffers; modules that share a weight hold the same
// Parameter, hence the same window. Memory for parameters, gradients and optimizer state is therefore proportional to
// unique parameters, and the optimizer, the gradient norm and clipping each run as one kernel over the whole buffer.
import { Tensor, full } from './tensor.ts';
import { native } from './native.ts';
import { registerBf16Twin, registerParameter } from './autograd.ts';
import type { Device } from './tensor.ts';

/** How a parameter is initialised. */
export type Init = { kind: 'normal'; std: number } | { kind: 'zeros' } | { kind: 'ones' };

/** One unique parameter: a window into the store's flat buffers. */
export class Parameter {
  /** @internal */ _value: Tensor | null = null;
  /** @internal */ _grad: Tensor | null = null;
  /** @internal */ _bf16: Tensor | null = null;
  /** @internal The store the parameter lives in (set when the store is built). */ _store: ParameterStore | null = null;
  /**
   * Position (in elements) of this parameter in the flat buffers: a multiple of PARAM_ALIGN (32 floats = 128 bytes), so
   * that every parameter starts on a 128-byte boundary (and its bf16 copy on a 64-byte one) for vector loads.
   */
  offset = -1;
  /**
   * Position (in elements) of this parameter in the packed layout, where parameters follow one another with no padding:
   * the Philox counter its initial values start at (so they do not depend on the padding), and its position in a
   * checkpoint's flat optimizer moments.
   */
  packedOffset = -1;
  constructor(
    /** Stable name, e.g. 'blocks.0.attn.wq.weight' (the checkpoint key). */
    readonly name: string,
    readonly shape: number[],
    readonly init: Init,
    /** Whether AdamW's weight decay applies (not to norms, biases, embeddings by default). */
    readonly decay: boolean,
  ) {}
  /** The number of elements. */
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  /** The parameter's values: a view into the flat parameter buffer. */
  get value(): Tensor {
    if (!this._value) throw new Error(`Parameter ${this.name}: the model's parameter store has not been built yet`);
    return this._value;
  }
  /** The parameter's window of its store's bf16 copy (ParameterStore.enableBf16Copy), or null when there is none. */
  get bf16(): Tensor | null {
    return this._bf16;
  }
  /** The parameter's gradient: the view at the same offset of the flat gradient buffer. */
  get grad(): Tensor {
    if (!this._grad) throw new Error(`Parameter ${this.name}: the model's parameter store has not been built yet`);
    return this._grad;
  }
}

/** Collects parameter declarations, then builds the store. Declaring a name twice returns the same Parameter. */
export class ParameterBuilder {
  private byName = new Map<string, Parameter>();
  /**
   * Declares a parameter, or returns the one already declared under this name (the same shape is required): how layers
   * share weights.
   */
  declare(name: string, shape: number[], init: Init, decay: boolean): Parameter {
    if (this.byName.has(name)) {
      const p = this.byName.get(name)!;
      if (p.shape.join() !== shape.join())
        throw new Error(`ParameterBuilder: '${name}' declared twice with shapes [${p.shape}] and [${shape}]`);
      return p;
    }
    const p = new Parameter(name, shape, init, decay);
    this.byName.set(name, p);
    return p;
  }
  /** Every parameter declared so far, in declaration order. */
  get parameters(): Parameter[] {
    return [...this.byName.values()];
  }
}

/**
 * Alignment of every parameter's offset in the flat buffers, in elements: 32 floats = 128 bytes (a 128-byte line; the
 * bf16 copy's windows then start on 64-byte boundaries, so 16-byte vector loads of any parameter are aligned). The
 * padding between parameters is 0 in the values, the gradients, the decay mask and the optimizer moments, and nothing
 * writes a non-zero there (gradient kernels write parameter windows only; AdamW of a zero gradient, zero moments and a
 * zero decay mask keeps 0), so norms, clipping and the optimizer see the same numbers as without it.
 */
export const PARAM_ALIGN = 32;

/** Options of a ParameterStore. */
export interface StoreOptions {
  device?: Device;
  /**
   * Seed of the Philox stream that initialises every parameter (parameter p uses counters p.packedOffset ...: its
   * position without the alignment padding, so the initial values do not depend on it).
   */
  seed?: number | bigint;
}

/** One row of ParameterStore.table(). */
export interface SlotRow {
  name: string;
  shape: number[];
  offset: number;
  size: number;
  decay: boolean;
}

/**
 * Every unique parameter of a model in one flat device buffer, with a gradient buffer that mirrors it; parameters are
 * views into both.
 */
export class ParameterStore {
  /** Every unique parameter, in declaration order (offsets increase). */
  readonly parameters: Parameter[];
  /** The flat parameter buffer: float32 [numel]. */
  values: Tensor;
  /** The flat gradient buffer, offset for offset. */
  grads: Tensor;
  /** Per-element weight-decay multiplier (1 where p.decay, else 0; 0 in the alignment padding). */
  decayMask: Tensor;
  /** The number of parameter elements (the padding between parameters not counted). */
  readonly numel: number;
  /** The length of the flat buffers in elements: numel plus the alignment padding (see PARAM_ALIGN). */
  readonly length: number;
  device: Device;
  /**
   * The bf16 copy of the flat parameter buffer (bfloat16 [length]) when enabled (enableBf16Copy), else null. Written
   * by the AdamW step (one conversion per step for a block that many layers share) and read by bf16 matmuls in place
   * of converting the weights, but only while it mirrors the current fp32 values: that is decided on the device's
   * stream, inside each matmul, so a copy made stale by any other write (a checkpoint load, copyInto, SGD, an AdamW
   * without the copy) is simply not used. Until the first AdamW step it mirrors nothing.
   */
  bf16Copy: Tensor | null = null;

  constructor(builder: ParameterBuilder, options: StoreOptions = {}) {
    this.parameters = builder.parameters;
    this.device = options.device ?? 'cpu';
    let offset = 0, packed = 0;
    for (const p of this.parameters) {
      p._store = this;
      p.offset = offset;
      p.packedOffset = packed;
      offset = alignUp(offset + p.size);
      packed += p.size;
    }
    this.numel = packed;
    this.length = offset;
    this.values = full([offset], 0, { device: this.device });
    this.grads = full([offset], 0, { device: this.device });
    this.decayMask = full([offset], 0, { device: this.device });
    const seed = options.seed ?? 0;
    const n = native();
    for (const p of this.parameters) {
      p._value = this.values.window(p.offset, p.shape);
      p._grad = this.grads.window(p.offset, p.shape);
      registerParameter(p._value, p._grad);
      if (p.init.kind === 'normal') n.randomInto(p._value.handle, 'normal', seed, p.packedOffset, 0, p.init.std);
      else if (p.init.kind === 'ones') n.fillInto(p._value.handle, 1);
      if (p.decay) {
        const m = this.decayMask.window(p.offset, [p.size]);
        n.fillInto(m.handle, 1);
        m.dispose();
      }
    }
  }

  /**
   * Moves the flat buffers (values, gradients, decay mask) to `device`: three copies (and a new bf16 copy when the
   * store keeps one, stale until the next AdamW step), then every parameter's views are re-made over the new buffers.
   * All or nothing. Optimizer state made for the old buffers must be made anew.
   */
  moveTo(device: Device, who = 'ParameterStore.moveTo'): void {
    if (typeof device !== 'string') throw new TypeError(`${who}: device must be 'cpu', 'cuda' or 'cuda:N', got ${device === null ? 'null' : typeof device}`);
    if (device === this.device) return;
    // All three copies are made before anything is switched over: a failed copy (no such device, out of memory)
    // frees the ones made and leaves the store where it was.
    const made: Tensor[] = [];
    try {
      for (const t of [this.values, this.grads, this.decayMask]) made.push(t.to(device));
      // the bf16 copy is made anew on the device, stale until the next AdamW step (a moved copy would be stale too:
      // its new buffer mirrors nothing)
      if (this.bf16Copy) made.push(full([this.length], 0, { dtype: 'bfloat16', device }));
    } catch (e) {
      for (const t of made) t.dispose();
      const m = e instanceof Error ? e.message : String(e);
      throw new (e instanceof TypeError ? TypeError : e instanceof RangeError ? RangeError : Error)(`${who}: cannot move the parameters to ${device}: ${m}`, { cause: e });
    }
    const [values, grads, mask, copy] = made;
    if (this.bf16Copy) this.detachBf16Copy();
    for (const p of this.parameters) {
      p._value?.dispose();
      p._grad?.dispose();
      p._value = values.window(p.offset, p.shape);
      p._grad = grads.window(p.offset, p.shape);
      registerParameter(p._value, p._grad);
    }
    this.values.dispose();
    this.grads.dispose();
    this.decayMask.dispose();
    [this.values, this.grads, this.decayMask, this.device] = [values, grads, mask, device];
    if (copy) this.attachBf16Copy(copy);
  }

  /**
   * Keeps a bf16 copy of the flat parameter buffer (bf16Copy): AdamW writes it with every step, and bf16 matmuls
   * (ops.withPrecision('bf16')) on CUDA read a weight's window of it instead of converting the fp32 weight, while it
   * is current. Costs 2 bytes per element of the flat buffer. The copy starts stale (consumers convert from fp32 until
   * the first AdamW step writes it). Idempotent. On the CPU it is kept too (and checked), but no kernel reads it: the CPU
   * computes every precision in fp32.
   */
  enableBf16Copy(): void {
    if (this.bf16Copy) return;
    this.attachBf16Copy(full([this.length], 0, { dtype: 'bfloat16', device: this.device }));
  }

  /** Frees the bf16 copy (bf16 matmuls convert the weights again). Idempotent. */
  disableBf16Copy(): void {
    if (!this.bf16Copy) return;
    this.detachBf16Copy();
  }

  /** Whether the store keeps a bf16 copy (enableBf16Copy). */
  get hasBf16Copy(): boolean {
    return this.bf16Copy !== null;
  }

  /**
   * One tensor over the flat buffer's range from the first to the last of `params` (each parameter's own bytes and the
   * alignment padding between them): of the values, or of the bf16 copy with `which` 'bf16'. For a window that must
   * cover one contiguous range (kernels.persistL2); the parameters are expected to be adjacent (l2Span).
   */
  span(params: readonly Parameter[], which: 'values' | 'bf16' = 'values'): Tensor {
    const buf = which === 'bf16' ? this.bf16Copy : this.values;
    if (!buf) throw new Error('ParameterStore.span: the store keeps no bf16 copy (enableBf16Copy)');
    if (params.length === 0) return buf.window(0, [0]);
    const lo = Math.min(...params.map((p) => p.offset)), hi = Math.max(...params.map((p) => p.offset + p.size));
    return buf.window(lo, [hi - lo]);
  }

  private attachBf16Copy(copy: Tensor): void {
    this.bf16Copy = copy;
    for (const p of this.parameters) {
      p._bf16 = copy.window(p.offset, p.shape);
      if (p._value) registerBf16Twin(p._value, p._bf16);
    }
  }

  private detachBf16Copy(): void {
    for (const p of this.parameters) {
      if (p._value) registerBf16Twin(p._value, null);
      p._bf16?.dispose();
      p._bf16 = null;
    }
    this.bf16Copy?.dispose();
    this.bf16Copy = null;
  }

  /** Zeroes every gradient: one fill over the flat gradient buffer. */
  zeroGrad(): void {
    native().fillInto(this.grads.handle, 0);
  }

  /** Bytes of parameters (= of gradients, and of each AdamW moment), the alignment padding not counted. */
  get bytes(): number {
    return this.numel * 4;
  }

  /** Bytes of each flat buffer (values, gradients, each AdamW moment), the alignment padding included. */
  get bufferBytes(): number {
    return this.length * 4;
  }

  /**
   * A flat array in the store's layout (length `length`: values, gradients, a moment) in the packed layout (length
   * `numel`, parameters back to back, as checkpoints store flat optimizer state): the padding dropped.
   */
  pack(flat: Float32Array): Float32Array {
    if (flat.length !== this.length) throw new RangeError(`ParameterStore.pack: expected ${this.length} values (the flat buffer's length), got ${flat.length}`);
    const out = new Float32Array(this.numel);
    for (const p of this.parameters) out.set(flat.subarray(p.offset, p.offset + p.size), p.packedOffset);
    return out;
  }

  /** The inverse of pack(): a packed array (length `numel`) in the store's layout, zeros in the padding. */
  unpack(packed: Float32Array): Float32Array {
    if (packed.length !== this.numel) throw new RangeError(`ParameterStore.unpack: expected ${this.numel} values (the parameters' count), got ${packed.length}`);
    const out = new Float32Array(this.length);
    for (const p of this.parameters) out.set(packed.subarray(p.packedOffset, p.packedOffset + p.size), p.offset);
    return out;
  }

  /**
   * The packed range [begin, end) (positions without the alignment padding) as copy segments for
   * kernels.copySegments: (dstOffset, srcOffset, length) triples, one per parameter it meets. `toPacked` true: from a
   * flat buffer in the store's layout, whose element `base` is element 0 of the source, into a packed buffer holding
   * [begin, end) from its element 0; false: the reverse. Data-parallel training sends packed gradients and parameters,
   * so that a collective moves 4 bytes per unique parameter and no padding.
   */
  packSegments(begin: number, end: number, toPacked: boolean, base = 0): Float64Array {
    const out: number[] = [];
    for (const p of this.parameters) {
      const s = Math.max(begin, p.packedOffset), e = Math.min(end, p.packedOffset + p.size);
      if (s >= e) continue;
      const flat = p.offset + (s - p.packedOffset) - base, packed = s - begin;
      out.push(toPacked ? packed : flat, toPacked ? flat : packed, e - s);
    }
    return new Float64Array(out);
  }

  /** The window [lo, hi) of the flat buffers that holds the packed range [begin, end) (its padding included). */
  flatRange(begin: number, end: number): [number, number] {
    if (begin >= end) return [0, 0];
    let lo = -1, hi = -1;
    for (const p of this.parameters) {
      if (lo < 0 && begin < p.packedOffset + p.size) lo = p.offset + Math.max(0, begin - p.packedOffset);
      if (end > p.packedOffset && end <= p.packedOffset + p.size) hi = p.offset + (end - p.packedOffset);
    }
    return [lo, hi];
  }

  /** The slot table: name, shape, offset (aligned, in the flat buffers), size, decay. */
  table(): SlotRow[] {
    return this.parameters.map((p) => ({ name: p.name, shape: p.shape, offset: p.offset, size: p.size, decay: p.decay }));
  }

  /** The parameter with this name, if any. */
  byName(name: string): Parameter | undefined {
    return this.parameters.find((p) => p.name === name);
  }

  /** Frees the buffers (the parameters' views with them). */
  dispose(): void {
    this.detachBf16Copy();
    for (const p of this.parameters) {
      p._value?.dispose();
      p._grad?.dispose();
    }
    this.values.dispose();
    this.grads.dispose();
    this.decayMask.dispose();
  }
}

/** n rounded up to a multiple of PARAM_ALIGN. */
function alignUp(n: number): number {
  return Math.ceil(n / PARAM_ALIGN) * PARAM_ALIGN;
}
