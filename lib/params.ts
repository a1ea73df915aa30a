// params.ts — the ParameterStore: ONE flat buffer for every unique parameter of a model, a gradient buffer that
// mirrors it offset for offset, and (for the optimizer) the moment buffers and the weight-decay mask in the same
// layout. A parameter is a window (offset, shape) into the flat buffers; modules that share a weight hold the same
// Parameter, hence the same window. Memory for parameters, gradients and optimizer state is therefore proportional to
// unique parameters, and the optimizer, the gradient norm and clipping each run as one kernel over the whole buffer.
import { Tensor, full } from './tensor.ts';
import { native } from './native.ts';
import { registerParameter } from './autograd.ts';
import type { Device } from './tensor.ts';

/** How a parameter is initialised. */
export type Init = { kind: 'normal'; std: number } | { kind: 'zeros' } | { kind: 'ones' };

/** One unique parameter: a window into the store's flat buffers. */
export class Parameter {
  /** @internal */ _value: Tensor | null = null;
  /** @internal */ _grad: Tensor | null = null;
  /** Position (in elements) of this parameter in the flat buffers. */
  offset = -1;
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

/** Options of a ParameterStore. */
export interface StoreOptions {
  device?: Device;
  /** Seed of the Philox stream that initialises every parameter (parameter p uses counters p.offset ...). */
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
  /** Per-element weight-decay multiplier (1 where p.decay, else 0). */
  decayMask: Tensor;
  readonly numel: number;
  device: Device;

  constructor(builder: ParameterBuilder, options: StoreOptions = {}) {
    this.parameters = builder.parameters;
    this.device = options.device ?? 'cpu';
    let offset = 0;
    for (const p of this.parameters) {
      p.offset = offset;
      offset += p.size;
    }
    this.numel = offset;
    this.values = full([offset], 0, { device: this.device });
    this.grads = full([offset], 0, { device: this.device });
    this.decayMask = full([offset], 0, { device: this.device });
    const seed = options.seed ?? 0;
    const n = native();
    for (const p of this.parameters) {
      p._value = this.values.window(p.offset, p.shape);
      p._grad = this.grads.window(p.offset, p.shape);
      registerParameter(p._value, p._grad);
      if (p.init.kind === 'normal') n.randomInto(p._value.handle, 'normal', seed, p.offset, 0, p.init.std);
      else if (p.init.kind === 'ones') n.fillInto(p._value.handle, 1);
      if (p.decay) {
        const m = this.decayMask.window(p.offset, [p.size]);
        n.fillInto(m.handle, 1);
        m.dispose();
      }
    }
  }

  /**
   * Moves the flat buffers (values, gradients, decay mask) to `device`: three copies, then every parameter's views
   * are re-made over the new buffers. Optimizer state made for the old buffers must be made anew.
   */
  moveTo(device: Device, who = 'ParameterStore.moveTo'): void {
    if (typeof device !== 'string') throw new TypeError(`${who}: device must be 'cpu', 'cuda' or 'cuda:N', got ${device === null ? 'null' : typeof device}`);
    if (device === this.device) return;
    // All three copies are made before anything is switched over: a failed copy (no such device, out of memory)
    // frees the ones made and leaves the store where it was.
    const made: Tensor[] = [];
    try {
      for (const t of [this.values, this.grads, this.decayMask]) made.push(t.to(device));
    } catch (e) {
      for (const t of made) t.dispose();
      const m = e instanceof Error ? e.message : String(e);
      throw new (e instanceof TypeError ? TypeError : e instanceof RangeError ? RangeError : Error)(`${who}: cannot move the parameters to ${device}: ${m}`, { cause: e });
    }
    const [values, grads, mask] = made;
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
  }

  /** Zeroes every gradient: one fill over the flat gradient buffer. */
  zeroGrad(): void {
    native().fillInto(this.grads.handle, 0);
  }

  /** Bytes of parameters (= of gradients, and of each AdamW moment). */
  get bytes(): number {
    return this.numel * 4;
  }

  /** The slot table: name, shape, offset, size, decay. */
  table(): SlotRow[] {
    return this.parameters.map((p) => ({ name: p.name, shape: p.shape, offset: p.offset, size: p.size, decay: p.decay }));
  }

  /** The parameter with this name, if any. */
  byName(name: string): Parameter | undefined {
    return this.parameters.find((p) => p.name === name);
  }

  /** Frees the buffers (the parameters' views with them). */
  dispose(): void {
    for (const p of this.parameters) {
      p._value?.dispose();
      p._grad?.dispose();
    }
    this.values.dispose();
    this.grads.dispose();
    this.decayMask.dispose();
  }
}
