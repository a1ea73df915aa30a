// autograd.ts — the tape. Small enough to read in one sitting.
//
// Ops (lib/ops) run their forward kernel and, when grad mode is on and an input needs a gradient, record a node: a
// closure that, given the gradient of the op's outputs, calls the backward kernels. backward(loss) runs the nodes in
// reverse. Backward kernels ACCUMULATE: a parameter's gradient is a view into the ParameterStore's one flat gradient
// buffer, so a weight used by several layers receives the sum of their contributions where it lies, and gradients
// accumulate across backward() calls until zeroGrad(). Activation gradients are allocated on first use and, with
// every tensor the ops made while recording, freed when the tape is released (backward() releases it by default) —
// one step's scratch.
import { Tensor, full } from './tensor.ts';
import * as K from './kernels.ts';

/** A recorded op: `backward` reads its outputs' gradients (tape.gradOf) and adds into its inputs' (tape.gradFor). */
interface Node {
  op: string;
  backward: (tape: Tape) => void;
}

// Parameter value view -> gradient view, for every live parameter of this realm (set by the ParameterStore).
const paramGrads = new WeakMap<Tensor, Tensor>();

/** @internal Registers a parameter: its gradient is `grad`, and ops that use it are recorded. */
export function registerParameter(value: Tensor, grad: Tensor): void {
  paramGrads.set(value, grad);
}

export class Tape {
  private nodes: Node[] = [];
  private grads = new Map<Tensor, Tensor>(); // activation -> its gradient (owned by the tape)
  private needs = new Set<Tensor>(); // activations whose gradient is needed (made by a recorded op)
  private made: Tensor[] = []; // every tensor ops made while recording, freed on release
  /** The scale of the loss's gradient for the current backward() (1, or 1/k for gradient accumulation). */
  seedScale = 1;
  /** The loss tensor backward() started from. */
  seed: Tensor | null = null;

  get size(): number {
    return this.nodes.length;
  }

  requiresGrad(t: Tensor): boolean {
    return paramGrads.has(t) || this.needs.has(t);
  }

  /** @internal Keeps `t` for release() (forward outputs and saved tensors). */
  own<T extends Tensor>(t: T): T {
    this.made.push(t);
    return t;
  }

  /** @internal Records an op whose outputs need gradients. */
  record(op: string, outputs: Tensor[], backward: (tape: Tape) => void): void {
    for (const o of outputs) this.needs.add(o);
    this.nodes.push({ op, backward });
  }

  /** The gradient accumulated so far for t, or undefined when none has flowed to it. */
  gradOf(t: Tensor): Tensor | undefined {
    return paramGrads.get(t) ?? this.grads.get(t);
  }

  /** The gradient buffer to accumulate into for t (a parameter's view, or a zeroed activation gradient). */
  gradFor(t: Tensor): Tensor {
    const p = paramGrads.get(t);
    if (p) return p;
    let g = this.grads.get(t);
    if (!g) {
      g = full(t.shape, 0, { device: t.device });
      this.grads.set(t, g);
    }
    return g;
  }

  /**
   * @internal Adds scale * g into t's gradient. With `fresh` (g is a buffer nobody else holds, made for this), a t
   * that has no gradient yet adopts g itself instead of a zeroed copy.
   */
  accumulate(t: Tensor, g: Tensor, scale = 1, fresh = false): void {
    const p = paramGrads.get(t);
    const cur = p ?? this.grads.get(t);
    if (!cur && scale === 1 && fresh) {
      this.grads.set(t, g);
      return;
    }
    const into = cur ?? this.gradFor(t);
    K.axpby(into, 1, g, scale, { out: into });
  }

  /** Runs the recorded nodes in reverse. */
  run(): void {
    for (let i = this.nodes.length - 1; i >= 0; i--) this.nodes[i].backward(this);
  }

  /** Frees every activation gradient and every tensor the ops made, except those in `keep`. */
  release(keep: Tensor[] = []): void {
    const kept = new Set(keep);
    for (const g of this.grads.values()) if (!kept.has(g)) g.dispose();
    for (const t of this.made) if (!kept.has(t)) t.dispose();
    this.grads.clear();
    this.needs.clear();
    this.made = [];
    this.nodes = [];
    this.seed = null;
    this.seedScale = 1;
  }
}

// The realm's state: one tape (as PyTorch's implicit graph) and the grad mode.
let current = new Tape();
let gradEnabled = true;

/** The tape ops record onto. */
export function tape(): Tape {
  return current;
}

/** Whether ops record: grad mode is on and some input needs a gradient. */
export function recording(...inputs: (Tensor | null | undefined)[]): boolean {
  return gradEnabled && inputs.some((t) => t != null && current.requiresGrad(t));
}

/** Runs fn with recording off (inference, optimizer updates), like torch.no_grad(). */
export function noGrad<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError(`noGrad: expected a function, got ${fn === null ? 'null' : typeof fn}`);
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

// Tensors made by ops while nothing records, inside tidy(): freed when tidy() returns.
let scratch: Tensor[] | null = null;

/** @internal Hands a tensor made by an op that recorded nothing to the enclosing tidy() (if any). */
export function collect<T extends Tensor>(t: T): T {
  scratch?.push(t);
  return t;
}

/**
 * Runs fn and then frees every tensor that ops made during it without recording (an inference pass's
 * intermediates), except the ones fn returns (a Tensor, or an array or object of them) — like tf.tidy. Recorded
 * tensors belong to the tape, not to tidy().
 */
export function tidy<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError(`tidy: expected a function, got ${fn === null ? 'null' : typeof fn}`);
  const outer = scratch;
  const mine: Tensor[] = [];
  scratch = mine;
  let result: T;
  try {
    result = fn();
  } finally {
    scratch = outer;
  }
  const keep = new Set<Tensor>();
  const visit = (v: unknown) => {
    if (v instanceof Tensor) keep.add(v);
    else if (Array.isArray(v)) v.forEach(visit);
    else if (v && typeof v === 'object') Object.values(v).forEach(visit);
  };
  visit(result);
  for (const t of mine) {
    if (keep.has(t)) outer?.push(t);
    else t.dispose();
  }
  return result;
}

/** Whether grad mode is on. */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Options of backward(). */
export interface BackwardOptions {
  /** Multiplies every gradient (e.g. 1 / micro-batches for gradient accumulation). Default 1. */
  scale?: number;
  /** Keep the tape (and its activations) after backward instead of releasing it. Default false. */
  retain?: boolean;
  /** Tensors to keep alive when the tape is released (the loss itself is always kept). */
  keep?: Tensor[];
}

/**
 * Back-propagates from a scalar loss made by a recorded loss op (crossEntropy): accumulates into every parameter's
 * gradient view, then releases the tape's activations (unless `retain`).
 */
export function backward(loss: Tensor, options: BackwardOptions = {}): void {
  if (!(loss instanceof Tensor)) throw new TypeError('backward: loss must be a Tensor');
  if (loss.disposed)
    throw new Error('backward: the loss has been disposed (releaseTape() frees what the tape recorded, the loss included, and the graph to back-propagate through with it); compute the loss again');
  if (loss.size !== 1) throw new RangeError(`backward: loss must be a scalar, got shape [${loss.shape.join(', ')}]`);
  const t = current;
  if (!t.requiresGrad(loss))
    throw new Error('backward: the loss is not on the current tape: it was made under noGrad(), from inputs that need no gradient, or the tape it was recorded on has been released (releaseTape() or an earlier backward()); compute the loss again');
  const scale = options.scale ?? 1;
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new RangeError(`backward: scale must be a finite number, got ${String(scale)}`);
  t.seed = loss;
  t.seedScale = scale;
  t.run();
  if (!options.retain) t.release([loss, ...(options.keep ?? [])]);
}

/** Discards the current tape without running it (e.g. after an evaluation that recorded by accident). */
export function releaseTape(keep: Tensor[] = []): void {
  if (!Array.isArray(keep) || !keep.every((t) => t instanceof Tensor)) throw new TypeError('releaseTape: keep must be an array of Tensors');
  current.release(keep);
}

/** @internal For tests: a fresh tape. */
export function resetTape(): void {
  current.release();
  current = new Tape();
}
