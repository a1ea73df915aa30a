// autograd.ts — the tape. Small enough to read in one sitting.
//
// Ops (lib/ops) run their forward kernel and, when grad mode is on and an input needs a gradient, record a node: a
// closure that, given the gradient of the op's outputs, calls the backward kernels. backward(loss) runs the nodes in
// reverse. Backward kernels ACCUMULATE: a parameter's gradient is a view into the ParameterStore's one flat gradient
// buffer, so a weight used by several layers receives the sum of their contributions where it lies, and gradients
// accumulate across backward() calls until zeroGrad(). Activation gradients are allocated on first use.
//
// Ownership — one mechanism, the Scope. Every tensor an op makes, recording or not, belongs to the innermost open
// scope (scope(fn), tidy(fn)) and is freed when that scope exits, unless fn returns it or keep()s it (it then moves
// to the enclosing scope). The tape holds closures, not tensors: a tensor a recorded closure needs (an op's inputs,
// outputs and saved tensors) is PINNED, and an exiting scope hands a pinned tensor it does not return to the graph's
// scope instead of freeing it. The graph's scope lies below every scope: the tape opens it when its first op records;
// pinned tensors that leave their scope unreturned (or leave the outermost scope), tensors a recording op makes while
// no scope is open, and everything backward allocates (activation gradients) belong to it, and it closes — freeing
// them, and what recording ops made that open scopes still hold — when the tape is released (backward() without
// retain, releaseTape(), a failed pass). A tensor an op makes that nothing records, with no scope open, belongs to
// the caller (dispose(), or the finalizer).
//
// Stacked weight gradients: a weight that several recorded linear ops use (a block shared by several layers) gets
// its gradient from ONE product dW += dY^T X over the row-stacked inputs X and output gradients dY of all its uses
// (K = uses × tokens), computed when backward() visits the last of them, instead of one beta = 1 product per use.
// Each use's backward hands its input and output gradient to the tape (deferWeightGrad) instead of running its own
// product; both stay alive until then because the graph holds them until release(), and an activation's gradient is
// never written after its producer's backward has run (its consumers all ran before). The stacking buffer exists only
// while that one product runs, and is used only when it fits in the byte budget (else the uses accumulate one by one
// as before). See BackwardOptions.stackedGrads.
import { Tensor, full } from './tensor.ts';
import * as K from './kernels.ts';
import { native } from './native.ts';

/** A recorded op: `backward` reads its outputs' gradients (tape.gradOf) and adds into its inputs' (tape.gradFor). */
interface Node {
  op: string;
  backward: (tape: Tape) => void;
}

// Parameter value view -> gradient view, for every live parameter of this realm (set by the ParameterStore).
const paramGrads = new WeakMap<Tensor, Tensor>();

/** How one backward() computes the gradients of weights used by several linear ops (see BackwardOptions). */
export interface StackedGradsOptions {
  /** Stack the uses of a shared weight into one dW product. Default: per device (STACKED_GRADS_DEFAULT). */
  enabled?: boolean;
  /**
   * The most bytes one stacking buffer (uses × tokens × (in + out) floats, alive while its product runs) may take;
   * a shared weight whose uses need more accumulates use by use instead. Default 256 MiB.
   */
  budgetBytes?: number;
}

/**
 * Whether backward() stacks shared weights' gradients when BackwardOptions.stackedGrads does not say, per device
 * kind. Off on both:
 * - CPU: measured slower (docs/benchmarks.md, "Stacked weight gradients"): the CPU matmul already streams K in blocks
 *   of 256 into the same C tile, so one long product saves little, and filling and copying the stacking buffers costs
 *   more than that (small: +10-15% per step; a 12-layer batch-1 model: within the noise).
 * - CUDA: not measured (no GPU where this was written). The CUDA GEMM (cuda/gemm.cu) launches one block per 128 x 128
 *   output tile and has no split-K, so a product with K = uses × tokens runs on as many blocks as each per-use one
 *   (no occupancy gained), while stacking adds a fill and two copies per use (more launches, not fewer). Turn it on
 *   (stackedGrads: true) to measure; the kernels are the same verified matmul and bias-gradient kernels.
 */
export const STACKED_GRADS_DEFAULT: Readonly<{ cpu: boolean; cuda: boolean }> = Object.freeze({ cpu: false, cuda: false });

/** The default stacking budget: 256 MiB. */
export const STACKED_GRADS_BUDGET = 256 * 1024 * 1024;

/** One use of a shared weight whose dW product waits for the others: its input and output gradient, 2-D views. */
interface PendingUse {
  x: Tensor;
  g: Tensor;
}

/**
 * The recorded uses of one weight (at one precision, through one kind of op) on this tape: how many and how many
 * rows, for deciding at the first visit whether stacking fits; the uses visited so far in this backward pass.
 */
export interface WeightGroup {
  readonly w: Tensor;
  /** The bias every use adds, when all uses add the same one (its gradient is stacked too); else null. */
  bias: Tensor | null;
  sameBias: boolean;
  readonly precision: K.Precision;
  readonly inF: number;
  readonly outF: number;
  uses: number;
  rows: number;
  visited: number;
  /** 'stack': this pass defers every use to one product; 'direct': each use runs its own. Decided at the first visit. */
  mode: 'stack' | 'direct' | null;
  pending: PendingUse[];
}

/** @internal Registers a parameter: its gradient is `grad`, and ops that use it are recorded. */
export function registerParameter(value: Tensor, grad: Tensor): void {
  paramGrads.set(value, grad);
}

// A parameter's window of its store's bf16 copy (ParameterStore.enableBf16Copy), by the parameter's value tensor.
const bf16Twins = new WeakMap<Tensor, Tensor>();

/** @internal Registers (or, with null, removes) the bf16 twin of a parameter's value: its window of the bf16 copy. */
export function registerBf16Twin(value: Tensor, twin: Tensor | null): void {
  if (twin) bf16Twins.set(value, twin);
  else bf16Twins.delete(value);
}

/**
 * @internal The bf16 twin of `t` when t is a parameter whose store keeps a bf16 copy: what bf16 matmuls pass as
 * aBf16 / bBf16 (used only while current, decided on the device's stream; kernels.matmul).
 */
export function bf16TwinOf(t: Tensor): Tensor | undefined {
  return bf16Twins.get(t);
}

export class Tape {
  private nodes: Node[] = [];
  private grads = new Map<Tensor, Tensor>(); // activation -> its gradient (owned by the tape)
  private needs = new Set<Tensor>(); // activations whose gradient is needed (made by a recorded op)
  private pins = new Set<Tensor>(); // tensors recorded closures need: no scope frees them before release
  private made = new WeakSet<Tensor>(); // the pinned tensors recording ops made (not their inputs): the graph's own
  private graph: Scope | null = null; // the graph's scope: opened by the first record, closed by release()
  /** The scale of the loss's gradient for the current backward() (1, or 1/k for gradient accumulation). */
  seedScale = 1;
  /** The loss tensor backward() started from. */
  seed: Tensor | null = null;
  /** How the current backward() treats shared weights (null: per use, as when not stacking). */
  stacking: { budgetBytes: number } | null = null;
  /** True while a backward() that keeps the tape (retain) runs: no gradient may alias a tensor the tape keeps. */
  retaining = false;
  private roots = new Set<Tensor>(); // the losses recorded on this tape (crossEntropy outputs)
  private groups = new Map<Tensor, WeightGroup[]>(); // weight -> its recorded uses (per precision)
  /**
   * @internal For tests and benchmarks, what the last backward() did: stacked products and the uses they covered,
   * groups left with one pending use (a product of its own), shared weights over the budget (use by use).
   */
  stats = { stacked: 0, stackedUses: 0, direct: 0, overBudget: 0 };

  get size(): number {
    return this.nodes.length;
  }

  requiresGrad(t: Tensor): boolean {
    return paramGrads.has(t) || this.needs.has(t);
  }

  /** Whether a recorded closure needs `t` (an exiting scope then hands it to its parent instead of freeing it). */
  isPinned(t: Tensor): boolean {
    return this.pins.has(t);
  }

  /** @internal The graph's scope, opened on first use: the owner of pinned tensors no other scope holds. */
  graphScope(): Scope {
    return (this.graph ??= new Scope());
  }

  /** @internal Pins t, made by a recording op (an output or a saved statistic): it belongs to the graph. */
  pinMade(t: Tensor): void {
    this.pins.add(t);
    this.made.add(t);
  }

  /** @internal Notes a loss recorded on this tape: a possible root of backward(), kept alive when the tape is released. */
  addRoot(loss: Tensor): void {
    this.roots.add(loss);
  }

  /** Whether `t` is a loss recorded on this tape (a root backward() can start from). */
  isRoot(t: Tensor): boolean {
    return this.roots.has(t);
  }

  /**
   * @internal Records an op whose outputs need gradients; `saved` are the other tensors its closure reads (inputs,
   * saved statistics). Outputs and saved tensors are pinned until the tape is released (what the op made was pinned
   * as the graph's by track()).
   */
  record(op: string, outputs: Tensor[], backward: (tape: Tape) => void, saved: readonly (Tensor | null | undefined)[] = []): void {
    this.graphScope();
    for (const o of outputs) {
      this.needs.add(o);
      this.pins.add(o);
    }
    for (const t of saved) if (t) this.pins.add(t);
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
      this.graphScope().tensors.add(g);
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
    if (!cur && scale === 1 && fresh && !this.retaining) {
      this.grads.set(t, g);
      return;
    }
    const into = cur ?? this.gradFor(t);
    K.axpby(into, 1, g, scale, { out: into });
  }

  /**
   * @internal Notes a recorded use of weight w (2-D, (out, in)) by a linear op over `rows` rows, with `bias` (or none);
   * returns the group the op's backward hands its dW to (deferWeightGrad).
   */
  noteWeightUse(w: Tensor, bias: Tensor | null, precision: K.Precision, rows: number): WeightGroup {
    let list = this.groups.get(w);
    if (!list) this.groups.set(w, (list = []));
    let g = list.find((x) => x.precision === precision);
    if (!g) {
      g = { w, bias, sameBias: true, precision, inF: w.shape[1], outF: w.shape[0], uses: 0, rows: 0, visited: 0, mode: null, pending: [] };
      list.push(g);
    }
    if (g.uses > 0 && g.bias !== bias) g.sameBias = false;
    g.uses += 1;
    g.rows += rows;
    return g;
  }

  /**
   * @internal Called by every recorded use's backward (also one that received no gradient, with x2 = g2 = null).
   * Returns true when the tape took the use's dW (and, when shared by all uses, db): x2 and g2 (2-D views the caller
   * made) then belong to the tape, which disposes them after the stacked product. False: the caller computes them.
   */
  deferWeightGrad(group: WeightGroup, x2: Tensor | null, g2: Tensor | null): boolean {
    group.visited += 1;
    if (group.mode === null) {
      const bytes = group.rows * (group.inF + group.outF) * 4;
      group.mode = this.stacking && group.uses > 1 && bytes <= this.stacking.budgetBytes ? 'stack' : 'direct';
      if (this.stacking && group.uses > 1 && group.mode === 'direct') this.stats.overBudget += 1;
    }
    let took = false;
    if (group.mode === 'stack' && x2 && g2) {
      group.pending.push({ x: x2, g: g2 });
      took = true;
    }
    if (group.visited === group.uses) this.flush(group);
    return took;
  }

  /** The owed stacked product of one group (nothing when no use is pending): dW += dY^T X, db += colsum(dY). */
  private flush(group: WeightGroup): void {
    const pending = group.pending;
    group.pending = [];
    if (pending.length === 0) return;
    const gw = this.gradFor(group.w);
    const gb = group.bias && group.sameBias ? this.gradFor(group.bias) : null;
    try {
      if (pending.length === 1) {
        const u = pending[0];
        K.matmul(u.g, u.x, { transA: true, beta: 1, out: gw, precision: group.precision });
        if (gb) K.biasGrad(u.g, gb);
        this.stats.direct += 1;
        return;
      }
      const rows = pending.reduce((a, u) => a + u.x.shape[0], 0);
      const device = group.w.device;
      const xs = full([rows, group.inF], 0, { device });
      const gs = full([rows, group.outF], 0, { device });
      try {
        const n = native();
        let r = 0;
        for (const u of pending) {
          const k = u.x.shape[0];
          const wx = xs.window(r * group.inF, [k, group.inF]);
          const wg = gs.window(r * group.outF, [k, group.outF]);
          n.copyInto(wx.handle, u.x.handle);
          n.copyInto(wg.handle, u.g.handle);
          wx.dispose();
          wg.dispose();
          r += k;
        }
        K.matmul(gs, xs, { transA: true, beta: 1, out: gw, precision: group.precision });
        if (gb) K.biasGrad(gs, gb);
      } finally {
        xs.dispose();
        gs.dispose();
      }
      this.stats.stacked += 1;
      this.stats.stackedUses += pending.length;
    } finally {
      for (const u of pending) {
        u.x.dispose();
        u.g.dispose();
      }
    }
  }

  /** Runs the recorded nodes in reverse. */
  run(): void {
    this.stats = { stacked: 0, stackedUses: 0, direct: 0, overBudget: 0 };
    // Each pass starts from no activation gradients (a retained tape run again gives the same gradients again, as
    // PyTorch's retain_graph does, instead of re-adding into the previous pass's); buffers the ops made (pinned) stay.
    if (this.grads.size) {
      for (const g of this.grads.values())
        if (!this.pins.has(g)) {
          this.graph?.tensors.delete(g);
          g.dispose();
        }
      this.grads.clear();
    }
    for (const list of this.groups.values())
      for (const g of list) {
        g.visited = 0;
        g.mode = null;
      }
    // What backward allocates (activation gradients, saved pre-activation gradients) belongs to the graph's scope: it
    // is the innermost scope while the nodes run.
    scopes.push(this.graphScope());
    try {
      for (let i = this.nodes.length - 1; i >= 0; i--) this.nodes[i].backward(this);
      // Every use has been visited, so every group has flushed; a group whose count was not reached (a node that
      // threw is the only way) owes its product now.
      for (const list of this.groups.values()) for (const g of list) this.flush(g);
    } finally {
      scopes.pop();
      this.dropPending();
    }
  }

  /** Disposes the views of uses still pending (after a failure): their products are not computed. */
  private dropPending(): void {
    for (const list of this.groups.values())
      for (const g of list) {
        for (const u of g.pending) {
          u.x.dispose();
          u.g.dispose();
        }
        g.pending = [];
      }
  }

  /**
   * Closes the graph's scope: frees every activation gradient and every tensor it owns, and the tensors recording
   * ops made that open scopes still hold (the graph was released inside them, or they were returned into them), except
   * those in `keep` and the losses recorded on the tape (still readable, and then the caller's or their scope's; a
   * later backward() of one of them says why its graph is gone: `why(loss)`). Pinned inputs an open scope holds are
   * only unpinned: that scope frees them. The closures go with it.
   */
  release(keep: Tensor[] = [], why: (loss: Tensor) => string = () => 'by releaseTape()'): void {
    for (const r of this.roots) freedGraphs.set(r, why(r));
    const kept = new Set([...keep, ...this.roots]);
    this.roots.clear();
    for (const g of this.grads.values()) if (!kept.has(g)) g.dispose();
    const graph = this.graph;
    this.graph = null;
    if (graph) for (const t of graph.tensors) if (!kept.has(t)) t.dispose();
    // what recording ops made that an open scope still holds is the graph's: freed now
    for (const s of scopes)
      for (const t of s.tensors)
        if (this.made.has(t) && !kept.has(t)) {
          s.tensors.delete(t);
          t.dispose();
        }
    this.dropPending();
    this.groups.clear();
    this.grads.clear();
    this.needs.clear();
    this.pins.clear();
    this.made = new WeakSet();
    this.nodes = [];
    this.seed = null;
    this.seedScale = 1;
  }
}

// Losses whose tape was released, and how (what backward() of such a loss reports).
const freedGraphs = new WeakMap<Tensor, string>();

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

/**
 * @internal Records, while grad mode is on, a node whose backward calls `fn`: backward runs nodes in reverse, so `fn`
 * runs once every op recorded after this point has run its backward (their gradients are final unless an op
 * recorded before also writes them). Distributed training starts a layer's gradient reduction there (BlockStack
 * layer hooks, lib/distributed/data-parallel.ts).
 */
export function recordHook(fn: () => void): void {
  if (gradEnabled) current.record('hook', [], () => fn());
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

// ---- ownership: one Scope -------------------------------------------------------------------------------------------

/** The tensors one scope owns (scope(), tidy(), or the graph's scope of a tape). */
export class Scope {
  /** @internal The tensors this scope frees when it exits, unless returned, kept or pinned. */
  readonly tensors = new Set<Tensor>();
  /** @internal Tensors keep() moved out of this scope's freeing: they go to the parent on exit. */
  readonly kept = new Set<Tensor>();
}

// The open scopes, innermost last. While backward() runs, the graph's scope is pushed on top.
const scopes: Scope[] = [];

/**
 * @internal Makes t, just made by an op, belong to the innermost scope; with `pin` (a recording op made it), the tape
 * pins it and, when no scope is open, the graph's scope owns it. Returns t. Every tensor an op makes goes through here.
 */
export function track<T extends Tensor>(t: T, pin = false): T {
  if (pin) current.pinMade(t);
  const s = scopes.length ? scopes[scopes.length - 1] : pin ? current.graphScope() : null;
  s?.tensors.add(t);
  return t;
}

/**
 * Moves t out of the innermost scope's freeing: when that scope exits, t goes to the enclosing scope (or, at the
 * outermost, to the caller) as a returned tensor does. Returns t. A tensor the innermost scope does not own is left
 * as it is.
 */
export function keep<T extends Tensor>(t: T): T {
  if (!(t instanceof Tensor)) throw new TypeError(`keep: expected a Tensor, got ${t === null ? 'null' : typeof t}`);
  const s = scopes[scopes.length - 1];
  if (s?.tensors.has(t)) s.kept.add(t);
  return t;
}

/**
 * @internal Moves t from the scope enclosing the innermost one into the innermost, so that it is freed when the
 * innermost exits unless returned (a layer loop hands each layer's input to that layer's scope). A tensor the
 * enclosing scope does not own is left where it is (the caller's input stays the caller's).
 */
export function handOver(t: Tensor): void {
  const n = scopes.length;
  if (n < 2) return;
  const outer = scopes[n - 2], inner = scopes[n - 1];
  if (outer.tensors.delete(t)) inner.tensors.add(t);
}

/**
 * Closes the innermost scope `s`: its returned and kept tensors go to the parent (at the outermost: to the caller, or
 * to the graph's scope when pinned); pinned ones not returned go to the graph's scope, their owner until the tape is
 * released (straight there, so that a long-lived enclosing scope, a training loop's, does not collect every step's
 * activations); the rest are freed.
 */
function exitScope(s: Scope, result: unknown): void {
  const out = new Set<Tensor>(s.kept);
  const visit = (v: unknown) => {
    if (v instanceof Tensor) out.add(v);
    else if (Array.isArray(v)) v.forEach(visit);
    else if (v && typeof v === 'object') Object.values(v).forEach(visit);
  };
  visit(result);
  const parent = scopes.length ? scopes[scopes.length - 1] : null;
  for (const t of s.tensors) {
    const pinned = current.isPinned(t);
    if (out.has(t)) (parent ?? (pinned ? current.graphScope() : null))?.tensors.add(t);
    else if (pinned) current.graphScope().tensors.add(t);
    else t.dispose();
  }
}

/**
 * Runs fn in a new scope: every tensor that ops make during it (recording or not) belongs to the scope and is freed
 * when fn returns or throws, except the ones fn returns (a Tensor, or an array or object of them) or keep()s,
 * which move to the enclosing scope (at the outermost, to the caller), and the ones a recorded op needs (pinned by
 * the tape: they go to the graph's scope, freed when the tape is released). fn must be synchronous: a Promise result
 * is a TypeError (the scope cannot span an await). Like tf.tidy.
 */
export function scope<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError(`scope: expected a function, got ${fn === null ? 'null' : typeof fn}`);
  const s = new Scope();
  scopes.push(s);
  let result: T | undefined;
  try {
    result = fn();
    if (result !== null && (typeof result === 'object' || typeof result === 'function') && typeof (result as { then?: unknown }).then === 'function') {
      // an async fn: the scope would exit at its first await and free what it made so far while it still runs
      (result as unknown as Promise<unknown>).then(undefined, () => {}); // its failure is reported by the throw below
      result = undefined;
      throw new TypeError('scope: fn returned a Promise — a scope cannot span an await (what fn made before the await would be freed while it runs); run the synchronous parts in scope() and await outside it');
    }
    return result as T;
  } finally {
    scopes.pop();
    exitScope(s, result);
  }
}

/**
 * Runs fn in a new scope and frees what ops made during it except what it returns (a Tensor, or an array or object of
 * them) — like tf.tidy. The same function as scope(); the name stays for code written against it.
 */
export function tidy<T>(fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError(`tidy: expected a function, got ${fn === null ? 'null' : typeof fn}`);
  return scope(fn);
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
  /**
   * Stacked weight gradients for weights several linear ops use (blocks shared across layers): true, false, or
   * { enabled, budgetBytes }. The gradients equal the per-use ones up to fp32 summation order. Default: off on every
   * device (STACKED_GRADS_DEFAULT says why), and a 256 MiB budget per stacking buffer when on.
   */
  stackedGrads?: boolean | StackedGradsOptions;
}

/** The stacking of one backward() on `device`: null (per use) or its budget. */
export function resolveStackedGrads(option: boolean | StackedGradsOptions | undefined, device: string, who = 'backward'): { budgetBytes: number } | null {
  const o: StackedGradsOptions = typeof option === 'boolean' ? { enabled: option } : option ?? {};
  if (typeof o !== 'object' || o === null || Array.isArray(o))
    throw new TypeError(`${who}: stackedGrads must be a boolean or an object { enabled?, budgetBytes? }, got ${o === null ? 'null' : Array.isArray(o) ? 'an array' : typeof o}`);
  for (const k of Object.keys(o))
    if (k !== 'enabled' && k !== 'budgetBytes') throw new TypeError(`${who}: unknown stackedGrads option '${k}'; valid: enabled, budgetBytes`);
  if (o.enabled !== undefined && typeof o.enabled !== 'boolean') throw new TypeError(`${who}: stackedGrads.enabled must be a boolean, got ${typeof o.enabled}`);
  const budget = o.budgetBytes ?? STACKED_GRADS_BUDGET;
  if (typeof budget !== 'number' || !(budget >= 0))
    throw new RangeError(`${who}: stackedGrads.budgetBytes must be a number >= 0, got ${String(budget)}`);
  const enabled = o.enabled ?? (device === 'cpu' ? STACKED_GRADS_DEFAULT.cpu : STACKED_GRADS_DEFAULT.cuda);
  return enabled ? { budgetBytes: budget } : null;
}

/**
 * Back-propagates from a scalar loss made by a recorded loss op (crossEntropy): accumulates into every parameter's
 * gradient view, then releases the tape's activations (unless `retain`).
 */
export function backward(loss: Tensor, options: BackwardOptions = {}): void {
  if (!(loss instanceof Tensor)) throw new TypeError('backward: loss must be a Tensor');
  if (loss.disposed)
    throw new Error('backward: the loss has been disposed (loss.dispose() frees its value; its graph, if still recorded, is freed with the tape); compute the loss again');
  if (loss.size !== 1) throw new RangeError(`backward: loss must be a scalar, got shape [${loss.shape.join(', ')}]`);
  const t = current;
  const freed = freedGraphs.get(loss);
  if (freed !== undefined && !t.requiresGrad(loss)) throw new Error(`backward: this loss's graph has already been freed: ${freed}; compute the loss again`);
  if (!t.requiresGrad(loss))
    throw new Error('backward: the loss is not on the current tape: it was made under noGrad(), from inputs that need no gradient, or the tape it was recorded on has been released (releaseTape() or an earlier backward()); compute the loss again');
  if (!t.isRoot(loss))
    throw new Error('backward: the loss must be the output of a recorded loss op (model.loss(), ops.crossEntropy), not of another op on it; for several losses call backward() on each in turn (the gradients add up; { scale } weighs them)');
  const scale = options.scale ?? 1;
  if (typeof scale !== 'number' || !Number.isFinite(scale)) throw new RangeError(`backward: scale must be a finite number, got ${String(scale)}`);
  const stacking = resolveStackedGrads(options.stackedGrads, loss.device);
  t.seed = loss;
  t.seedScale = scale;
  t.stacking = stacking;
  t.retaining = options.retain === true;
  try {
    t.run();
  } catch (e) {
    // A failed pass leaves the tape in no state to run again: release it, so that the next loss starts clean.
    t.release([loss, ...(options.keep ?? [])], () => 'an earlier backward() through it failed');
    throw e;
  } finally {
    t.stacking = null;
    t.retaining = false;
  }
  if (!options.retain)
    t.release([loss, ...(options.keep ?? [])], (r) =>
      r === loss
        ? 'by an earlier backward() of this loss (backward(loss, { retain: true }) keeps it for another pass)'
        : 'by the backward() of another loss recorded on the same tape (the tape holds every graph recorded since the last backward(): record a loss and call backward() before recording the next)');
}

/**
 * Discards the current tape without running it (e.g. after an evaluation that recorded by accident): frees what it
 * recorded except `keep` and the losses (still readable; backward() of one says its graph was freed by releaseTape()).
 */
export function releaseTape(keep: Tensor[] = []): void {
  if (!Array.isArray(keep) || !keep.every((t) => t instanceof Tensor)) throw new TypeError('releaseTape: keep must be an array of Tensors');
  current.release(keep);
}

/** @internal For tests: a fresh tape. */
export function resetTape(): void {
  current.release();
  current = new Tape();
}
