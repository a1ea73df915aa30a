// generate.ts — text generation from a Decoder over a KV cache (incremental decoding), and the token sampler.
//
//   Both passes are the model's one layer loop, BlockStack.run, given the session's KV cache (KVCache, stack.ts).
//   prefill: the prompt (positions [0, T0)) goes through every applied layer in one causal pass, exactly as
//     Decoder.forward computes it; each layer that computes its own K and V (plan.layers[l].kvSource == l) also writes
//     them into its cache (1, Hkv, capacity, Dh) with kvAppend.
//   step t: the new token alone, x (1, 1, C) with the positional embedding of position t; in each layer q (1, H, 1, Dh)
//     attends to the cache with attention(q, cacheK, cacheV, {causal: false, keyLengths: [t + 1]}), after the layer
//     appended its own K/V at t; a layer reusing another layer's K/V (cross-layer KV sharing) reads that layer's cache
//     and appends nothing. The logits of a step equal those of a full forward over the sequence at that position.
//   sampling, in JavaScript on the last position's logits: greedy (temperature 0), else softmax(logits / temperature)
//     restricted to the topK most likely tokens, then to the smallest most-likely set whose probability reaches topP
//     (nucleus), drawn with a seeded PRNG (sfc32): the same seed gives the same tokens.
//
// Everything runs under noGrad, each pass in a scope (autograd.ts) that frees its temporaries (run() frees each
// layer's as it goes; the caches when the call ends): memory() returns to where it was. The caches live on the model's device (kvAppend has a CPU and a CUDA kernel).
import type { Decoder } from './decoder.ts';
import { Tensor, tensor, zeros } from '../tensor.ts';
import { freeRecording, record, replay, writeInto, type Recording } from '../record.ts';
import * as ops from '../ops/index.ts';
import { noGrad, scope, track } from '../autograd.ts';
import { appliedLayers } from '../sharing/plan.ts';
import { checkInt, checkKeys, checkNumber, checkObject, describe } from '../validate.ts';

/** How generate() picks tokens: length, temperature, top-k / top-p, seed. */
export interface GenerateOptions {
  /**
   * How many tokens to generate at most (0 returns []). The prompt plus these must fit in the model's maxSeq, unless
   * `slide` is true.
   */
  maxNewTokens: number;
  /** Softmax temperature, >= 0. Default 1; 0 is greedy decoding (argmax, no randomness). */
  temperature?: number;
  /** Sample among the topK most likely tokens only (an integer >= 1; default: all). */
  topK?: number;
  /** Nucleus sampling: among the smallest set of most likely tokens whose probability reaches topP, in (0, 1]. Default 1. */
  topP?: number;
  /** PRNG seed, a non-negative safe integer: the same seed gives the same tokens. Default: a fresh random seed per call. */
  seed?: number;
  /** Stop after generating this token id (it is included in the result). */
  eos?: number;
  /** Apply a shared stack for another number of layers (strategies all and cycle), as Decoder.forward's depth. */
  depth?: number;
  /**
   * Slide the context window instead of refusing a prompt plus maxNewTokens longer than maxSeq (default false). The
   * tokens are made in windows of up to floor(maxSeq / 2) new tokens; each window is a fresh KV-cache pass over the
   * last maxSeq - n tokens of the prompt and the tokens made so far (n: that window's new tokens; a longer prompt
   * keeps its last tokens), sampled with seed (seed + w * 0x9e3779b1) mod 2^32 for window w = 0, 1, ... Needs maxSeq
   * >= 2. This is what `sharedformer generate` does.
   */
  slide?: boolean;
  /** Called with the new ids as they are made: each token, or with `slide` each window's tokens. */
  onTokens?: (ids: number[]) => void;
}

type KV = { k: Tensor; v: Tensor };
/** A recorded decode step: its inputs [id, position, position + 1, position], its logits, the recording, and the
 * parameter buffer it reads. */
type RecordedStep = { inputs: Tensor; logits: Tensor; recording: Recording; values: Tensor };

const OP = 'Decoder.generate';
const OPTION_KEYS = ['maxNewTokens', 'temperature', 'topK', 'topP', 'seed', 'eos', 'depth', 'slide', 'onTokens'];

/**
 * One sequence (B = 1) being decoded incrementally: per-layer K/V caches of `capacity` positions and the number of
 * positions fed so far. Call prefill() once, then step() per token; dispose() frees the caches. Every method runs
 * under noGrad, in a scope that frees its temporaries; both feed the model's layer loop, BlockStack.run.
 */
export class DecodeSession {
  readonly capacity: number;
  /** Whether step() replays one recorded step (the default) or runs the layer loop from JavaScript every time. */
  readonly replays: boolean;
  private readonly caches: (KV | null)[]; // per applied layer; null for layers that reuse another layer's K/V
  private fed = 0;
  private recorded: RecordedStep | null = null;

  /**
   * options.replay (default true): record the first step() once and replay it natively for every later token, one
   * native call for the whole layer loop (see step()). false runs the layer loop from JavaScript at every step; the
   * two give bit-identical logits.
   */
  constructor(readonly model: Decoder, capacity: number, private readonly depth?: number, options: { replay?: boolean } = {}) {
    if (typeof model !== 'object' || model === null || typeof model.config !== 'object' || !model.store)
      throw new TypeError('DecodeSession: model must be a Decoder');
    const { dModel, heads, kvHeads, maxSeq } = model.config;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > maxSeq)
      throw new RangeError(`DecodeSession: capacity must be an integer in [1, ${maxSeq}] (the model's maxSeq), got ${String(capacity)}`);
    if (typeof options !== 'object' || options === null) throw new TypeError(`DecodeSession: options must be an object, got ${describe(options)}`);
    checkKeys('DecodeSession', options as Record<string, unknown>, ['replay'], 'option');
    if (options.replay !== undefined && typeof options.replay !== 'boolean')
      throw new TypeError(`DecodeSession: option replay must be a boolean, got ${describe(options.replay)}`);
    this.replays = options.replay ?? true;
    this.capacity = capacity;
    const device = model.store.device;
    const shape = [1, kvHeads, capacity, dModel / heads];
    this.caches = appliedLayers(model.plan, depth).map((lp, l) => (lp.kvSource === l ? { k: zeros(shape, { device }), v: zeros(shape, { device }) } : null));
  }

  /** Positions fed so far (the position of the next token). */
  get position(): number {
    return this.fed;
  }

  /**
   * Feeds the prompt at positions [0, T) in one causal pass, filling the caches. Returns the logits (1, 1, vocab) of
   * the last position, or (1, T, vocab) of every position with `all`.
   */
  prefill(ids: ArrayLike<number>, all = false): Tensor {
    const op = 'DecodeSession.prefill';
    if (typeof ids !== 'object' || ids === null || typeof ids.length !== 'number')
      throw new TypeError(`${op}: ids must be an array of token ids, got ${describe(ids)}`);
    const T = ids.length;
    if (this.fed !== 0) throw new Error('DecodeSession.prefill: the session has already been fed');
    if (T < 1 || T > this.capacity) throw new RangeError(`DecodeSession.prefill: ${T} positions do not fit the capacity ${this.capacity}`);
    const V = this.model.config.vocab;
    for (let i = 0; i < T; i++) checkTokenId(ids[i], `${op}: ids[${i}]`, V);
    return noGrad(() =>
      scope(() => {
        const m = this.model;
        const x = this.embed(Int32Array.from(ids), Int32Array.from({ length: T }, (_, i) => i));
        const h = m.stack.run(x, { depth: this.depth, kv: { layers: this.caches, pos: 0 } });
        this.fed = T;
        // layer norm and head are per position: the last one suffices
        const C = m.config.dModel;
        return this.logits(!all && T > 1 ? track(h.window((T - 1) * C, [1, 1, C])) : h);
      }),
    );
  }

  /**
   * Feeds one token at the next position; returns its logits (1, 1, vocab), a tensor of the caller's.
   *
   * With replay (the default), the first step records the op sequence of a step (the model's one layer loop,
   * BlockStack.run, as below) with its inputs read from one int32 tensor [id, position, position + 1, position]
   * that the kernels read when they run (the embedding's id and position, attention's key length, kvAppend's
   * position), and every step then writes that tensor, replays the recording and copies the logits out: three
   * native calls instead of several per op, whatever the depth. The kernels and their order are the same as the
   * step-by-step path's, so the logits are bit-identical.
   */
  step(id: number): Tensor {
    const t = this.fed;
    if (t === 0) throw new Error('DecodeSession.step: call prefill() first');
    if (t >= this.capacity) throw new RangeError(`DecodeSession.step: the cache is full (capacity ${this.capacity} positions)`);
    checkTokenId(id, 'DecodeSession.step: id', this.model.config.vocab);
    if (this.replays) {
      // The recording holds the parameter buffer it was made with: if the model's buffer has since been replaced
      // (moveTo, a load that swaps it) or freed, record again, so that the step reads what the step-by-step path
      // would (or fails as it would), never the old weights.
      const values = this.model.store.values;
      if (this.recorded && (this.recorded.values !== values || values.disposed)) this.dropRecording();
      const r = (this.recorded ??= this.recordStep());
      writeInto(r.inputs, Int32Array.of(id, t, t + 1, t));
      replay(r.recording);
      this.fed = t + 1;
      return r.logits.clone();
    }
    const device = this.model.store.device;
    const logits = this.stepOps(() => ({
      ids: track(tensor(Int32Array.of(id), [1, 1], { device })),
      positions: track(tensor(Int32Array.of(t), [1, 1], { device })),
      keyLengths: track(tensor(Int32Array.of(t + 1), [1], { device })),
    }), t);
    this.fed = t + 1;
    return logits;
  }

  /**
   * One step's ops, the same on both paths, under noGrad in a scope: the embedding of the inputs' id at their
   * position (1, 1), the layer loop over the caches attending to keyLengths keys, the logits. `inputs` runs inside
   * the scope (so what it tracks goes with it); kvAppend writes at its `at` (a tensor read when the op runs) if given,
   * else at the number t (any t > 0 takes a step's branch).
   */
  private stepOps(inputs: () => { ids: Tensor; positions: Tensor; keyLengths: Tensor; at?: Tensor }, t: number): Tensor {
    return noGrad(() =>
      scope(() => {
        const m = this.model;
        const { ids, positions, keyLengths, at } = inputs();
        const h = m.stack.run(m.io.embed(ids, positions), { depth: this.depth, kv: { layers: this.caches, pos: t, at }, causal: false, keyLengths });
        return this.logits(h);
      }),
    );
  }

  /** Records one step (see step()); nothing of it runs until replayed. */
  private recordStep(): RecordedStep {
    const m = this.model;
    const device = m.store.device;
    const inputs = zeros([4], { device, dtype: 'int32' });
    try {
      const { result: logits, recording } = record(device, () =>
        this.stepOps(() => ({
          ids: track(inputs.window(0, [1, 1])),
          positions: track(inputs.window(1, [1, 1])),
          keyLengths: track(inputs.window(2, [1])),
          at: track(inputs.window(3, [1])),
        }), this.fed),
      );
      return { inputs, logits, recording, values: m.store.values };
    } catch (e) {
      inputs.dispose();
      throw e;
    }
  }

  /** Frees the caches and the recorded step. Idempotent. */
  dispose(): void {
    for (const c of this.caches) {
      c?.k.dispose();
      c?.v.dispose();
    }
    this.dropRecording();
  }

  private dropRecording(): void {
    if (!this.recorded) return;
    freeRecording(this.recorded.recording);
    this.recorded.logits.dispose();
    this.recorded.inputs.dispose();
    this.recorded = null;
  }

  /** Token + positional embeddings (1, n, C) of ids at positions (in the caller's scope, as the id tensors). */
  private embed(ids: Int32Array, positions: Int32Array): Tensor {
    const m = this.model;
    const device = m.store.device;
    return m.io.embed(track(tensor(ids, [1, ids.length], { device })), track(tensor(positions, [1, positions.length], { device })));
  }

  /** Final layer norm and head over h (1, n, C): logits (1, n, vocab). */
  private logits(h: Tensor): Tensor {
    return this.model.io.logits(this.model.lnF.forward(h));
  }
}

/** A token id: an integer in [0, vocab) (not rounded, wrapped or NaN, which an Int32Array would make 0). */
function checkTokenId(x: unknown, what: string, vocab: number): void {
  if (typeof x !== 'number') throw new TypeError(`${what} must be an integer token id, got ${describe(x)}`);
  if (!Number.isInteger(x) || x < 0 || x >= vocab) throw new RangeError(`${what} = ${x} is not a token id in [0, ${vocab})`);
}

// ---- options ---------------------------------------------------------------------------------------------------------

interface Resolved {
  maxNewTokens: number;
  temperature: number;
  topK?: number;
  topP?: number;
  seed: number;
  eos?: number;
  depth?: number;
  slide?: boolean;
  onTokens?: (ids: number[]) => void;
}

function resolveOptions(options: unknown, vocab: number): Resolved {
  checkObject(OP, options, 'options', ' with at least maxNewTokens');
  const o = options as Record<string, unknown>;
  checkKeys(OP, o, OPTION_KEYS, 'option');
  const r: Resolved = { maxNewTokens: checkInt(OP, o.maxNewTokens, 'maxNewTokens', 0, Number.MAX_SAFE_INTEGER), temperature: 1, seed: 0 };
  if (o.temperature !== undefined) {
    r.temperature = checkNumber(OP, o.temperature, 'temperature');
    if (r.temperature < 0) throw new RangeError(`${OP}: temperature must be >= 0 (0 is greedy), got ${r.temperature}`);
  }
  if (o.topK !== undefined) r.topK = checkInt(OP, o.topK, 'topK', 1, Number.MAX_SAFE_INTEGER);
  if (o.topP !== undefined) {
    r.topP = checkNumber(OP, o.topP, 'topP');
    if (!(r.topP > 0 && r.topP <= 1)) throw new RangeError(`${OP}: topP must be in (0, 1], got ${r.topP}`);
  }
  r.seed = o.seed === undefined ? Math.floor(Math.random() * 2 ** 32) : checkInt(OP, o.seed, 'seed', 0, Number.MAX_SAFE_INTEGER);
  if (o.eos !== undefined) r.eos = checkInt(OP, o.eos, 'eos', 0, vocab - 1);
  if (o.depth !== undefined) r.depth = checkInt(OP, o.depth, 'depth', 1, Number.MAX_SAFE_INTEGER);
  if (o.slide !== undefined && typeof o.slide !== 'boolean') throw new TypeError(`${OP}: slide must be a boolean, got ${describe(o.slide)}`);
  if (o.slide) r.slide = true;
  if (o.onTokens !== undefined && typeof o.onTokens !== 'function') throw new TypeError(`${OP}: onTokens must be a function, got ${describe(o.onTokens)}`);
  if (o.onTokens) r.onTokens = o.onTokens as (ids: number[]) => void;
  return r;
}

/** The prompt's token ids: int32 Tensor [T0] or [1, T0], or an array of integers, each in [0, vocab). */
async function promptIds(prompt: unknown, vocab: number, op: string): Promise<number[]> {
  let ids: number[];
  if (prompt instanceof Tensor) {
    if (prompt.disposed) throw new Error(`${op}: prompt has been disposed`);
    if (prompt.dtype !== 'int32') throw new TypeError(`${op}: prompt must be an int32 tensor, got ${prompt.toString()}`);
    if (!(prompt.rank === 1 || (prompt.rank === 2 && prompt.shape[0] === 1)))
      throw new RangeError(`${op}: prompt must have shape [T] or [1, T] (one sequence), got [${prompt.shape.join(', ')}]`);
    ids = Array.from(await prompt.data());
  } else if (Array.isArray(prompt)) {
    prompt.forEach((x, i) => {
      if (typeof x !== 'number') throw new TypeError(`${op}: prompt[${i}] must be an integer token id, got ${describe(x)}`);
    });
    ids = prompt as number[];
  } else {
    throw new TypeError(`${op}: prompt must be an int32 Tensor or an array of token ids, got ${describe(prompt)}`);
  }
  if (ids.length === 0) throw new RangeError(`${op}: prompt is empty (it needs at least one token)`);
  ids.forEach((x, i) => {
    if (!Number.isInteger(x) || x < 0 || x >= vocab) throw new RangeError(`${op}: prompt[${i}] = ${x} is not a token id in [0, ${vocab})`);
  });
  return ids.slice();
}

// ---- sampling ----------------------------------------------------------------------------------------------------------

/** A deterministic PRNG in [0, 1): sfc32 seeded from both 32-bit halves of a safe integer. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  let b = Math.floor(seed / 2 ** 32) >>> 0;
  let c = 0x9e3779b9;
  let d = 0x6a09e667;
  const next = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 15; i++) next(); // mix the seed into every word
  return () => next() / 2 ** 32;
}

export interface SamplingOptions {
  /** >= 0; 0 is greedy. */
  temperature: number;
  topK?: number;
  topP?: number;
}

/** The index of the largest logit (the first one on ties). */
function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/**
 * The next token from one position's logits: argmax when temperature is 0, else a draw (using `random`, in [0, 1))
 * from softmax(logits / temperature) restricted to the topK most likely tokens, then to the smallest most-likely set
 * of those whose renormalised probability reaches topP. Ties in probability keep the lower token id first.
 */
export function sampleToken(logits: ArrayLike<number>, o: SamplingOptions, random: () => number): number {
  const V = logits.length;
  for (let i = 0; i < V; i++)
    if (!Number.isFinite(logits[i])) throw new Error(`${OP}: the model produced a non-finite logit (${logits[i]} for token ${i})`);
  if (o.temperature === 0) return argmax(logits);
  const m = logits[argmax(logits)];
  const p = new Float64Array(V);
  for (let i = 0; i < V; i++) p[i] = Math.exp((logits[i] - m) / o.temperature); // unnormalised: the max is 1
  const k = Math.min(o.topK ?? V, V);
  const nucleus = o.topP !== undefined && o.topP < 1;
  if (k === V && !nucleus) {
    let total = 0;
    for (let i = 0; i < V; i++) total += p[i];
    let u = random() * total;
    for (let i = 0; i < V; i++) if ((u -= p[i]) < 0) return i;
    return argmax(logits); // rounding left u >= 0 at the end: the mass there is negligible
  }
  const order = Int32Array.from({ length: V }, (_, i) => i).sort((i, j) => p[j] - p[i] || i - j);
  let kept = k;
  if (nucleus) {
    let total = 0;
    for (let j = 0; j < k; j++) total += p[order[j]];
    let cum = 0;
    for (let j = 0; j < k; j++) {
      cum += p[order[j]];
      if (cum >= o.topP! * total) {
        kept = j + 1;
        break;
      }
    }
  }
  let total = 0;
  for (let j = 0; j < kept; j++) total += p[order[j]];
  let u = random() * total;
  for (let j = 0; j < kept; j++) if ((u -= p[order[j]]) < 0) return order[j];
  return order[kept - 1];
}

// ---- entry points ------------------------------------------------------------------------------------------------------

/** Decoder.generate: see GenerateOptions. Returns the generated ids (without the prompt). */
export async function generate(model: Decoder, prompt: Tensor | number[], options: GenerateOptions): Promise<number[]> {
  const out: number[] = [];
  for await (const id of tokens(model, prompt, resolveFor(model, options))) out.push(id);
  return out;
}

/**
 * Decoder.generateStream: the tokens of generate(prompt, options), one at a time, as an async iterator: each is
 * yielded as soon as it is sampled, and the event loop runs between tokens (every token waits for its logits with
 * `await`). Breaking out of the loop (or return()) stops decoding and frees the session. Options are checked at the
 * call; the prompt when iteration starts. options.onTokens, if given, is called as by generate().
 */
export function generateStream(model: Decoder, prompt: Tensor | number[], options: GenerateOptions): AsyncGenerator<number, void, undefined> {
  const o = resolveFor(model, options);
  return (async function* () {
    yield* tokens(model, prompt, o);
  })();
}

/** The options resolved, and the depth checked against the plan, before any work. */
function resolveFor(model: Decoder, options: GenerateOptions): Resolved {
  const o = resolveOptions(options, model.config.vocab);
  appliedLayers(model.plan, o.depth); // a depth the plan cannot apply fails here, before any work
  return o;
}

/**
 * The new tokens of one generation, each yielded as it is sampled; onTokens sees each token, or with `slide` each
 * window's tokens when the window ends. Windows of up to floor(maxSeq / 2) new tokens, each a fresh pass over the last
 * maxSeq - n tokens so far, window w sampled with seed (seed + w * 0x9e3779b1) >>> 0; stops after eos.
 */
async function* tokens(model: Decoder, prompt: Tensor | number[], o: Resolved): AsyncGenerator<number, void, undefined> {
  const { vocab, maxSeq } = model.config;
  const ids = await promptIds(prompt, vocab, OP);
  if (!o.slide) {
    if (ids.length + o.maxNewTokens > maxSeq)
      throw new RangeError(
        `${OP}: the prompt (${ids.length} tokens) plus maxNewTokens (${o.maxNewTokens}) exceeds the model's maxSeq (${maxSeq}); pass slide: true to slide the context window over the last tokens`,
      );
    for await (const id of windowTokens(model, ids, o, o.seed)) {
      o.onTokens?.([id]);
      yield id;
    }
    return;
  }
  const W = maxSeq;
  if (W < 2) throw new RangeError(`${OP}: slide needs a context of at least 2 tokens (the model's maxSeq is ${W})`);
  let ctx = ids;
  let made = 0;
  for (let w = 0; made < o.maxNewTokens; w++) {
    const n = Math.min(o.maxNewTokens - made, Math.max(1, Math.floor(W / 2)));
    const win: number[] = [];
    for await (const id of windowTokens(model, ctx.slice(-(W - n)), { ...o, maxNewTokens: n }, (o.seed + w * 0x9e3779b1) >>> 0)) {
      win.push(id);
      yield id;
    }
    made += win.length;
    o.onTokens?.(win);
    if (o.eos !== undefined && win.at(-1) === o.eos) break;
    ctx = ctx.concat(win);
  }
}

/** maxNewTokens after `ids` (which, with them, fit in maxSeq) over one KV cache, yielded as they are sampled. */
async function* windowTokens(model: Decoder, ids: number[], o: Resolved, seed: number): AsyncGenerator<number, void, undefined> {
  const T0 = ids.length;
  if (o.maxNewTokens === 0) return;
  const random = seededRandom(seed);
  // The last generated token is never fed back: T0 + maxNewTokens - 1 positions go through the model.
  const session = new DecodeSession(model, T0 + o.maxNewTokens - 1, o.depth);
  let logits: Tensor | null = null;
  try {
    logits = session.prefill(ids);
    for (let made = 0; ; ) {
      const row = await logits.data();
      logits.dispose();
      logits = null;
      const next = sampleToken(row, o, random);
      made++;
      yield next;
      if (made === o.maxNewTokens || next === o.eos) break;
      logits = session.step(next);
    }
  } finally {
    logits?.dispose();
    session.dispose();
  }
}

/**
 * The logits (vocab each) of every position of `ids` computed incrementally: positions [0, prefill) in one prefill
 * pass, then one step per remaining token, each over the KV cache. For checking the cache against a full forward.
 */
export async function decodeLogits(model: Decoder, ids: Tensor | number[], options: { prefill: number; depth?: number }): Promise<Float32Array[]> {
  const op = 'decodeLogits';
  const seq = await promptIds(ids, model.config.vocab, op);
  const T = seq.length;
  checkObject(op, options, 'options', ' { prefill, depth? }');
  const P = checkInt(op, options.prefill, 'prefill', 1, T);
  if (T > model.config.maxSeq) throw new RangeError(`${op}: ${T} positions exceed the model's maxSeq (${model.config.maxSeq})`);
  const V = model.config.vocab;
  const session = new DecodeSession(model, T, options.depth);
  const rows: Float32Array[] = [];
  try {
    const first = session.prefill(seq.slice(0, P), true);
    let a: Float32Array;
    try {
      a = (await first.data()) as Float32Array;
    } finally {
      first.dispose();
    }
    for (let t = 0; t < P; t++) rows.push(a.slice(t * V, (t + 1) * V));
    for (let t = P; t < T; t++) {
      const l = session.step(seq[t]);
      try {
        rows.push((await l.data()) as Float32Array);
      } finally {
        l.dispose();
      }
    }
  } finally {
    session.dispose();
  }
  return rows;
}
