// optim — optimizers that update the ParameterStore's flat buffer in one kernel per step, learning-rate schedules,
// and gradient clipping over the flat gradient buffer.
import { full, type Tensor } from '../tensor.ts';
import * as K from '../kernels.ts';
import { ParameterStore } from '../params.ts';
import { checkObject, describe } from '../validate.ts';

/** Hyperparameters of AdamW. */
export interface AdamWConfig {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Decoupled weight decay; applied only where the store's decay mask is 1 (not norms, biases, embeddings). */
  weightDecay?: number;
}

/** AdamW over the flat parameter buffer: its two moment buffers mirror the store (or its window), offset for offset. */
export class AdamW {
  readonly m: Tensor;
  readonly v: Tensor;
  /** The flat buffers' elements [lo, hi) this optimizer updates (the whole store unless options.window). */
  readonly window: [number, number];
  /** Updates taken so far (the next step() is update stepCount + 1, for bias correction). */
  stepCount = 0;
  /**
   * @param options.window Update only the flat buffers' elements [lo, hi) and hold the moments of those only (ZeRO-1:
   * each rank updates its shard; the distributed Trainer). Default: the whole buffer.
   */
  constructor(readonly store: ParameterStore, readonly config: AdamWConfig, options: { window?: [number, number] } = {}) {
    if (!(store instanceof ParameterStore)) throw new TypeError('AdamW: store must be a ParameterStore (a model\'s .store)');
    if (typeof config?.lr !== 'number' || !Number.isFinite(config.lr) || config.lr < 0)
      throw new RangeError(`AdamW: lr must be a finite number >= 0, got ${String(config?.lr)}`);
    const w = options.window ?? [0, store.length];
    if (!Array.isArray(w) || w.length !== 2 || !w.every((x) => Number.isSafeInteger(x)) || w[0] < 0 || w[0] > w[1] || w[1] > store.length)
      throw new RangeError(`AdamW: window must be [lo, hi] with 0 <= lo <= hi <= ${store.length} (the store's length), got ${describe(w)}`);
    this.window = [w[0], w[1]];
    this.m = full([w[1] - w[0]], 0, { device: store.device });
    this.v = full([w[1] - w[0]], 0, { device: store.device });
  }
  /**
   * One update with the current gradients (PyTorch's `optimizer.step()`); `lr` overrides the configured rate
   * (schedules). The same as update().
   */
  step(lr?: number): void {
    this.update(checkStepArg('AdamW.step', lr));
  }
  /** Zeroes the gradients of the store this optimizer updates (PyTorch's `optimizer.zero_grad()`): store.zeroGrad(). */
  zeroGrad(): void {
    this.store.zeroGrad();
  }
  /** One update with the current gradients; `lr` overrides the configured rate (schedules). */
  update(lr = this.config.lr): void {
    const step = this.stepCount + 1; // counted once the update has been accepted (a refused one changes nothing)
    const s = this.store;
    const [lo, hi] = this.window;
    const whole = lo === 0 && hi === s.length;
    const win = (t: Tensor) => (whole ? t : t.window(lo, [hi - lo]));
    const [p, g, mask] = [win(s.values), win(s.grads), win(s.decayMask)];
    try {
      if (hi > lo || whole)
        K.adamw(p, g, this.m, this.v, {
          lr,
          beta1: this.config.beta1 ?? 0.9,
          beta2: this.config.beta2 ?? 0.999,
          eps: this.config.eps ?? 1e-8,
          weightDecay: this.config.weightDecay ?? 0.01,
          step,
          decayMask: mask,
          // the store's bf16 copy, written in the same pass: current (for bf16 matmuls) until the next write of the
          // params (a window of the buffer leaves the copy stale: it is then not passed, and not used)
          bf16Copy: whole ? s.bf16Copy ?? undefined : undefined,
        });
    } finally {
      if (!whole) for (const t of [p, g, mask]) t.dispose();
    }
    this.stepCount = step;
  }
  /** Optimizer-state bytes (two moments, each the flat buffer's size, or its window's, with the alignment padding). */
  get bytes(): number {
    return 2 * 4 * (this.window[1] - this.window[0]);
  }
  /** Frees the optimizer's moment buffers. */
  dispose(): void {
    this.m.dispose();
    this.v.dispose();
  }
}

/** Hyperparameters of SGD. */
export interface SGDConfig {
  lr: number;
  momentum?: number;
  dampening?: number;
  /** L2 penalty added to the gradient (PyTorch's SGD weight_decay), on every parameter. */
  weightDecay?: number;
  nesterov?: boolean;
}

/** SGD (PyTorch's semantics) over the flat parameter buffer; the momentum buffer mirrors the store. */
export class SGD {
  readonly buf: Tensor | null;
  /** Updates taken so far (the first one initialises the momentum buffer). */
  stepCount = 0;
  constructor(readonly store: ParameterStore, readonly config: SGDConfig) {
    if (!(store instanceof ParameterStore)) throw new TypeError('SGD: store must be a ParameterStore (a model\'s .store)');
    if (typeof config?.lr !== 'number' || !Number.isFinite(config.lr) || config.lr < 0)
      throw new RangeError(`SGD: lr must be a finite number >= 0, got ${String(config?.lr)}`);
    this.buf = (config.momentum ?? 0) > 0 ? full([store.length], 0, { device: store.device }) : null;
  }
  /** One update with the current gradients (PyTorch's `optimizer.step()`); the same as update(). */
  step(lr?: number): void {
    this.update(checkStepArg('SGD.step', lr));
  }
  /** Zeroes the gradients of the store this optimizer updates (PyTorch's `optimizer.zero_grad()`): store.zeroGrad(). */
  zeroGrad(): void {
    this.store.zeroGrad();
  }
  /** One update with the current gradients; `lr` overrides the configured rate (schedules). */
  update(lr = this.config.lr): void {
    const step = this.stepCount + 1; // counted once the update has been accepted (a refused one changes nothing)
    K.sgd(this.store.values, this.store.grads, this.buf, {
      lr,
      momentum: this.config.momentum ?? 0,
      dampening: this.config.dampening ?? 0,
      weightDecay: this.config.weightDecay ?? 0,
      nesterov: this.config.nesterov ?? false,
      firstStep: step === 1,
    });
    this.stepCount = step;
  }
  /** Frees the momentum buffer. */
  dispose(): void {
    this.buf?.dispose();
  }
}

// step() is a method: assigning to it (`opt.step = 7`, the counter's old name) throws instead of replacing the method.
for (const C of [AdamW, SGD]) Object.defineProperty(C.prototype, 'step', { writable: false });

/** step()'s argument: nothing (the configured rate) or a learning rate; PyTorch's closure form is refused by name. */
function checkStepArg(who: string, lr: unknown): number | undefined {
  if (typeof lr === 'function')
    throw new TypeError(`${who}: takes an optional learning rate, not a closure (compute the loss and call backward() before step())`);
  if (lr !== undefined && typeof lr !== 'number') throw new TypeError(`${who}: lr must be a number, got ${lr === null ? 'null' : typeof lr}`);
  return lr;
}

/** The arguments of a schedule: step and warmup non-negative integers, total a positive integer, rates finite >= 0. */
function checkSchedule(fn: string, step: unknown, o: unknown): { lr: number; warmup: number; total: number; minLr?: number } {
  const int = (v: unknown, name: string, lo: number) => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < lo) throw new RangeError(`${fn}: ${name} must be an integer >= ${lo}, got ${describe(v)}`);
  };
  const rate = (v: unknown, name: string) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new RangeError(`${fn}: ${name} must be a finite number >= 0, got ${describe(v)}`);
  };
  int(step, 'step', 0);
  checkObject(fn, o, 'options', ' { lr, warmup, total, minLr? }');
  const s = o as { lr: number; warmup: number; total: number; minLr?: number };
  rate(s.lr, 'lr');
  int(s.warmup, 'warmup', 0);
  int(s.total, 'total', 1);
  if (s.minLr !== undefined) rate(s.minLr, 'minLr');
  return s;
}

/** Linear warmup to `lr`, then cosine decay to `minLr` at `total` steps (nanoGPT's schedule). `step` is 0-based. */
export function warmupCosine(step: number, o: { lr: number; warmup: number; total: number; minLr?: number }): number {
  checkSchedule('warmupCosine', step, o);
  const min = o.minLr ?? o.lr / 10;
  if (step < o.warmup) return (o.lr * (step + 1)) / o.warmup;
  if (step >= o.total) return min;
  const p = (step - o.warmup) / Math.max(1, o.total - o.warmup);
  return min + 0.5 * (1 + Math.cos(Math.PI * p)) * (o.lr - min);
}

/** Linear warmup, then linear decay to `minLr` (default 0) at `total` steps. */
export function warmupLinear(step: number, o: { lr: number; warmup: number; total: number; minLr?: number }): number {
  checkSchedule('warmupLinear', step, o);
  const min = o.minLr ?? 0;
  if (step < o.warmup) return (o.lr * (step + 1)) / o.warmup;
  if (step >= o.total) return min;
  return o.lr - ((o.lr - min) * (step - o.warmup)) / Math.max(1, o.total - o.warmup);
}

/** Scales the store's gradients so that their global L2 norm is at most maxNorm; returns the norm before (scalar tensor). */
export function clipGradNorm(store: ParameterStore, maxNorm: number): Tensor {
  if (!(store instanceof ParameterStore)) throw new TypeError('clipGradNorm: store must be a ParameterStore (a model\'s .store)');
  return K.clipGradNorm(store.grads, maxNorm);
}
