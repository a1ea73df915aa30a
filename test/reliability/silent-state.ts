// silent-state.ts — issue 13, classes 2 and 4 of the silent-wrong-result suite (silent.test.ts).
//
// Class 2, failed-op poisoning (design invariant 7): a seeded failing op (an id, target or key length out of range)
// is followed by a random sequence of reads of its outputs (every read way), reads of unrelated tensors, ops that
// consume a failed tensor (their outputs fail too, with the original cause), ops on unrelated tensors, in-place ops
// on a failed tensor (it stays failed), overwrites (it is valid again), disposals and synchronize() calls. Checked:
// every read of a failed tensor rejects naming the original op and its cause; every unrelated read resolves with the
// right values; synchronize() rejects once naming every op that failed since the last call, then resolves.
//
// Class 4, atomicity of multi-step mutations: Decoder / Encoder loadStateDict with one bad entry (wrong dtype, wrong
// shape, disposed, unknown key), Decoder.load of a bad checkpoint into an existing model, Trainer.resume from a bad
// file (parameters, optimizer moments and step counters). The call must throw, and afterwards every parameter (the
// flat buffer), moment and step counter must be bit-identical to before.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as sf from '../../lib/index.ts';
import { CharTokenizer, Decoder, Encoder, Tensor, TokenDataset, Trainer, kernels as K, tensor } from '../../lib/index.ts';
import { native } from '../../lib/native.ts';
import { CHECKSUM_KEY, tensorsDigest } from '../../lib/io/checkpoint.ts';
import { encodeSafetensors, decodeSafetensors, type SafeTensor } from '../../lib/io/safetensors.ts';
import { resetTape } from '../../lib/autograd.ts';
import { measure } from '../helpers/close.ts';
import { Random } from '../helpers/random.ts';

export interface StateOutcome {
  desc: string;
  ok: boolean;
  detail?: string;
  steps?: number;
  /** Reads and synchronize() calls checked. */
  checks?: number;
}

// ---- class 2: poisoning ---------------------------------------------------------------------------------------------

interface Ok {
  t: Tensor;
  failed: false;
  want: Float32Array;
  /** Usable as an operand of the [2, 4] ops. */
  op: boolean;
  name: string;
}
interface Bad {
  t: Tensor;
  failed: true;
  /** The original op and the value that made it fail: every read's message must name both. */
  origin: RegExp;
  cause: string;
  /** RangeError for the op that failed on a bad id; a consumer's failure carries the cause too. */
  direct: boolean;
  op: boolean;
  name: string;
}
type Tracked = Ok | Bad;

const S = [2, 4];
const f32 = (a: ArrayLike<number>) => Float32Array.from(a);

function readWays(t: Tensor): [string, () => Promise<ArrayLike<number>>][] {
  return [
    ['data', () => t.data()],
    ['dataSync', async () => t.dataSync()],
    ['toArray', async () => (t.toArray() as number[][]).flat(8) as number[]],
    ['sharedData', async () => Float32Array.from(t.sharedData() as Float32Array)],
  ];
}

/** One seeded poisoning case: a failing op, then `steps` random actions. */
export async function runPoisonCase(seed: number, steps: number): Promise<StateOutcome> {
  const r = new Random(seed);
  await sf.synchronize().catch(() => undefined);
  const all: Tensor[] = [];
  const live: Tracked[] = [];
  let pending: RegExp[] = []; // ops that failed since the last synchronize()
  const problems: string[] = [];
  let n = 0;
  const mk = (vals: ArrayLike<number>, shape = S) => {
    const t = tensor(f32(vals), shape);
    all.push(t);
    return t;
  };
  const addOk = (t: Tensor, want: Float32Array, op: boolean) => live.push({ t, failed: false, want, op, name: `t${n++}` });
  const rnd = (k: number) => Array.from({ length: k }, () => Math.round((r.next() * 2 - 1) * 1000) / 64);
  const ids = (a: number[]) => {
    const t = tensor(Int32Array.from(a), [a.length], { dtype: 'int32' });
    all.push(t);
    return t;
  };
  const markFailed = (tr: Tracked, origin: RegExp, cause: string, direct: boolean) => {
    const i = live.indexOf(tr);
    const b: Bad = { t: tr.t, failed: true, origin, cause, direct, op: tr.op, name: tr.name };
    if (i >= 0) live[i] = b;
    else live.push(b);
    return b;
  };
  const bad = (t: Tensor, origin: RegExp, cause: string, op: boolean) => markFailed({ t, failed: false, want: new Float32Array(), op, name: `t${n++}` }, origin, cause, true);

  // unrelated tensors first
  for (let i = 0; i < 3; i++) {
    const v = rnd(8);
    addOk(mk(v), f32(v), true);
  }
  // the failing op
  const kind = r.pick(['embedding', 'embeddingOut', 'embeddingWindow', 'crossEntropy', 'attention', 'embeddingBackward'] as const);
  const V = 5;
  const table = rnd(V * 4);
  const tableT = mk(table, [V, 4]);
  addOk(tableT, f32(table), false);
  const badId = r.pick([V, V + 3, -1, 99]);
  const goodIds = [r.int(0, V - 1), r.int(0, V - 1)];
  const withBad = r.chance(0.5) ? [badId, goodIds[1]] : [goodIds[0], badId];
  let desc = `poison#${seed} ${kind}`;
  if (kind === 'embedding') {
    const e = K.embedding(ids(withBad), tableT);
    all.push(e);
    bad(e, /embedding/i, `${badId}`, true);
    pending.push(/embedding/i);
  } else if (kind === 'embeddingOut') {
    const u = live[r.int(0, 2)] as Ok;
    K.embedding(ids(withBad), tableT, { out: u.t });
    markFailed(u, /embedding/i, `${badId}`, true);
    pending.push(/embedding/i);
  } else if (kind === 'embeddingWindow') {
    const v = rnd(16);
    const buf = mk(v, [16]);
    const lo = buf.window(0, S), hi = buf.window(8, S);
    all.push(lo, hi);
    const [fw, okw, okv] = r.chance(0.5) ? [lo, hi, v.slice(8)] : [hi, lo, v.slice(0, 8)];
    K.embedding(ids(withBad), tableT, { out: fw });
    bad(fw, /embedding/i, `${badId}`, true);
    addOk(okw, f32(okv), true); // the other window of the same buffer is unaffected
    pending.push(/embedding/i);
  } else if (kind === 'crossEntropy') {
    const lv = rnd(8), logits = mk(lv);
    addOk(logits, f32(lv), true);
    const bt = r.pick([4, 7, -3]);
    const dl = mk(rnd(8));
    const loss = K.crossEntropy(logits, ids(r.chance(0.5) ? [bt, 1] : [0, bt]), { dlogits: dl });
    all.push(loss);
    bad(loss, /cross_?entropy/i, `${bt}`, false);
    bad(dl, /cross_?entropy/i, `${bt}`, true);
    pending.push(/cross_?entropy/i);
  } else if (kind === 'attention') {
    const qv = rnd(8), kv = rnd(8), vv = rnd(8);
    const q = mk(qv, [1, 1, 2, 4]), k = mk(kv, [1, 1, 2, 4]), v = mk(vv, [1, 1, 2, 4]);
    addOk(q, f32(qv), false);
    addOk(k, f32(kv), false);
    const L = r.pick([3, -1, 50]);
    const { o, lse } = K.attention(q, k, v, { keyLengths: ids([L]), causal: r.chance(0.5) });
    const ov = o.view(S);
    all.push(o, lse, ov);
    bad(ov, /attention/i, `${L}`, true);
    bad(lse, /attention/i, `${L}`, false);
    pending.push(/attention/i);
  } else {
    const dtv = rnd(V * 4), dt = mk(dtv, [V, 4]);
    const dout = mk(rnd(8));
    K.embeddingBackward(ids(withBad), dout, dt);
    bad(dt, /embedding/i, `${badId}`, false);
    pending.push(/embedding/i);
  }

  const fail = (what: string) => problems.push(what);
  const pickOf = <T extends Tracked>(pred: (x: Tracked) => x is T): T | undefined => {
    const c = live.filter(pred);
    return c.length ? r.pick(c) : undefined;
  };
  const isBad = (x: Tracked): x is Bad => x.failed;
  const isOk = (x: Tracked): x is Ok => !x.failed;
  const isBadOp = (x: Tracked): x is Bad => x.failed && x.op;
  const isOkOp = (x: Tracked): x is Ok => !x.failed && x.op;

  let reads = 0, syncs = 0;
  const checkRead = async (x: Tracked, way: number) => {
    reads++;
    const [wn, read] = readWays(x.t)[way];
    try {
      const got = await read();
      if (x.failed) fail(`${x.name} (failed: ${x.origin}, cause ${x.cause}) read by ${wn} resolved: [${Array.from(got).slice(0, 4)}...]`);
      else {
        const c = measure(got, x.want, { rel: 1e-6, abs: 1e-30 });
        if (!c.ok) {
          fail(c.at < 0 ? `${x.name} (unrelated) read by ${wn}: ${got.length} elements, expected ${x.want.length}`
            : `${x.name} (unrelated) read by ${wn}: element ${c.at} = ${got[c.at]}, expected ${x.want[c.at]}`);
        }
      }
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      if (!x.failed) fail(`${x.name} (unrelated) read by ${wn} rejected: ${msg}`);
      else {
        if (!x.origin.test(msg) || !msg.includes(x.cause)) fail(`${x.name} read by ${wn}: the message does not name ${x.origin} and ${x.cause}: ${msg}`);
        if (x.direct && !(e instanceof RangeError)) fail(`${x.name} read by ${wn}: ${(e as Error)?.constructor?.name}, expected the original RangeError: ${msg}`);
      }
    }
  };
  const sync = async () => {
    syncs++;
    try {
      await sf.synchronize();
      if (pending.length) fail(`synchronize() resolved, but ${pending.join(', ')} failed since the last call`);
    } catch (e) {
      const msg = e instanceof Error ? e.message : String(e);
      if (!pending.length) fail(`synchronize() rejected with nothing failed since the last call: ${msg}`);
      for (const p of pending) if (!p.test(msg)) fail(`synchronize() did not name ${p}: ${msg}`);
      try {
        sf.synchronizeSync();
      } catch (e2) {
        fail(`a second synchronize reported again: ${(e2 as Error).message}`);
      }
    }
    pending = [];
  };

  const log: string[] = [];
  for (let s = 0; s < steps; s++) {
    const a = r.pick(['readBad', 'readBad', 'readOk', 'readOk', 'consume', 'consumeInto', 'inplace', 'okOp', 'overwrite', 'dispose', 'sync'] as const);
    log.push(a);
    if (a === 'readBad' || a === 'readOk') {
      const x = a === 'readBad' ? pickOf(isBad) : pickOf(isOk);
      if (x) await checkRead(x, r.int(0, 3));
    } else if (a === 'consume') {
      const x = pickOf(isBadOp);
      if (!x) continue;
      const u = pickOf(isOkOp);
      let which = r.pick(['gelu', 'softmax', 'axpby', 'matmul', 'matmulBias', 'crossEntropy'] as const);
      if ((which === 'axpby' || which === 'matmulBias') && !u) which = 'matmul';
      let y: Tensor;
      if (which === 'gelu') y = K.gelu(x.t);
      else if (which === 'softmax') y = K.softmax(x.t);
      else if (which === 'axpby') y = r.chance(0.5) ? K.axpby(x.t, 1, u!.t, 2) : K.axpby(u!.t, 1, x.t, 2);
      else if (which === 'matmul') y = K.matmul(x.t, x.t, { transB: true }); // [2, 2]: read only
      else if (which === 'matmulBias') {
        // the failed tensor as an option (a window of it as the bias)
        const bias = x.t.window(r.pick([0, 2, 6]), [2]);
        all.push(bias);
        y = K.matmul(u!.t, u!.t, { transB: true, bias });
      } else y = K.crossEntropy(x.t, ids([r.int(0, 3), r.int(0, 3)])); // the loss of failed logits
      all.push(y);
      live.push({ t: y, failed: true, origin: x.origin, cause: x.cause, direct: false, op: which === 'gelu' || which === 'softmax' || which === 'axpby', name: `t${n++}` });
      pending.push(which === 'matmulBias' ? /matmul/i : which === 'crossEntropy' ? /cross_?entropy/i : new RegExp(which, 'i'));
    } else if (a === 'consumeInto') {
      // a failing op writing into an unrelated tensor poisons it
      const x = pickOf(isBadOp), u = pickOf(isOkOp);
      if (!x || !u) continue;
      const w = live.filter(isOkOp).find((o) => o !== u);
      if (!w) continue;
      K.axpby(x.t, 1, u.t, 1, { out: w.t });
      markFailed(w, x.origin, x.cause, false);
      pending.push(/axpby/i);
    } else if (a === 'inplace') {
      // an op that reads and writes a failed tensor (scale, an accumulating backward): it stays failed
      const x = pickOf(isBadOp);
      if (!x) continue;
      if (r.chance(0.5)) {
        K.scale(x.t, 2);
        pending.push(/scale/i);
      } else {
        const u = pickOf(isOkOp);
        if (!u) continue;
        K.geluBackward(u.t, u.t, x.t);
        pending.push(/gelu/i);
      }
      x.direct = false;
    } else if (a === 'okOp') {
      const u = pickOf(isOkOp), w = pickOf(isOkOp);
      if (!u || !w) continue;
      if (r.chance(0.5)) {
        const y = K.axpby(u.t, 2, w.t, -1);
        all.push(y);
        addOk(y, u.want.map((v, i) => 2 * v - w.want[i]), true);
      } else if (u !== w) {
        K.scale(u.t, 0.5);
        u.want = u.want.map((v) => v * 0.5);
      }
    } else if (a === 'overwrite') {
      // a whole overwrite (fill, or a successful op writing every element) makes a failed tensor valid again
      const x = pickOf(isBadOp);
      if (!x) continue;
      const u = pickOf(isOkOp);
      let want: Float32Array;
      if (u && r.chance(0.5)) {
        K.axpby(u.t, 1, u.t, 0, { out: x.t });
        want = Float32Array.from(u.want);
      } else {
        const v = r.pick([0, 1.5, -3]);
        native().fillInto(x.t.handle, v);
        want = new Float32Array(8).fill(v);
      }
      const i = live.indexOf(x);
      live[i] = { t: x.t, failed: false, want, op: true, name: x.name };
    } else if (a === 'dispose') {
      if (!live.length) continue;
      const i = r.int(0, live.length - 1);
      live[i].t.dispose();
      live.splice(i, 1);
    } else {
      await sync();
    }
  }
  // every live tensor read once more, then the final synchronize
  for (const x of live) await checkRead(x, r.int(0, 3));
  await sync();
  for (const t of all) if (!t.disposed) t.dispose();
  desc += `: ${log.join(' ')}`;
  return { desc, ok: problems.length === 0, detail: problems.slice(0, 3).join(' | '), steps, checks: reads + syncs };
}

// ---- class 4: atomicity ---------------------------------------------------------------------------------------------

const text = 'the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. '.repeat(8);
const tok = CharTokenizer.fromText(text);
const data = new TokenDataset(tok.encode(text), tok.vocabSize);
const dcfg = { vocab: tok.vocabSize, dModel: 8, heads: 2, dFF: 16, layers: 2, maxSeq: 8 };

const bits = (t: Tensor) => Buffer.from(Float32Array.from(t.dataSync() as Float32Array).buffer);

function safeWrite(path: string, tensors: Map<string, SafeTensor>, md: Record<string, string>) {
  const m = { ...md };
  m[CHECKSUM_KEY] = tensorsDigest(tensors); // a consistent checksum: the file is refused for what it holds, not for a flipped bit
  writeFileSync(path, encodeSafetensors(tensors, m));
}

/** The last parameter name in file order (what a loader that copies as it checks would write first, and reject last). */
const lastOf = (names: string[]) => names[names.length - 1];

export type AtomicKind =
  | 'decoder.loadStateDict' | 'encoder.loadStateDict' | 'decoder.load' | 'trainer.resume';
export const ATOMIC_KINDS: AtomicKind[] = ['decoder.loadStateDict', 'encoder.loadStateDict', 'decoder.load', 'trainer.resume'];

/** One atomicity case: the call must throw and leave parameters, moments and counters bit-identical. */
export async function runAtomicCase(kind: AtomicKind, seed: number): Promise<StateOutcome> {
  const r = new Random(Math.imul(seed, 2654435761) >>> 0);
  resetTape();
  const dir = mkdtempSync(join(tmpdir(), 'sf-silent-'));
  const disposers: (() => void)[] = [];
  let desc = `${kind}#${seed}`;
  try {
    if (kind === 'decoder.loadStateDict' || kind === 'encoder.loadStateDict') {
      const make = (s: number) => (kind === 'decoder.loadStateDict' ? new Decoder({ ...dcfg, seed: s }) : new Encoder({ ...dcfg, seed: s }));
      const model = make(seed % 1000), other = make(seed % 1000 + 1);
      disposers.push(() => model.store.dispose(), () => other.store.dispose());
      const sd = other.stateDict();
      const keys = Object.keys(sd);
      const where = r.pick(['last', 'last', 'middle']);
      const key = where === 'last' ? lastOf(keys) : keys[r.int(0, keys.length - 1)];
      const fault = r.pick(['dtype', 'shape', 'disposed', 'unknown'] as const);
      desc += ` ${fault} at ${where === 'last' ? 'the last' : 'a'} entry '${key}' of ${keys.length}`;
      const orig = sd[key];
      if (fault === 'dtype') sd[key] = tensor(new Int32Array(orig.size), orig.shape, { dtype: 'int32' });
      else if (fault === 'shape') sd[key] = tensor(new Float32Array(orig.size + 1), [orig.size + 1]);
      else if (fault === 'disposed') {
        sd[key] = orig.clone();
        sd[key].dispose();
      } else sd['not.a.parameter'] = orig.clone();
      const before = bits(model.store.values);
      let threw = false;
      try {
        model.loadStateDict(sd);
      } catch {
        threw = true;
      }
      for (const t of Object.values(sd)) if (!t.disposed) t.dispose();
      if (!orig.disposed) orig.dispose();
      const after = bits(model.store.values);
      if (!threw) return { desc, ok: false, detail: 'loadStateDict accepted the bad entry' };
      if (Buffer.compare(before, after) !== 0) return { desc, ok: false, detail: `threw, but ${changed(before, after)} parameter values changed` };
      return { desc, ok: true };
    }
    if (kind === 'decoder.load') {
      const src = new Decoder({ ...dcfg, seed: 1 }), model = new Decoder({ ...dcfg, seed: 2 });
      disposers.push(() => src.store.dispose(), () => model.store.dispose());
      const path = join(dir, 'c.safetensors');
      src.save(path);
      const f = decodeSafetensors(readFileSync(path));
      const names = src.store.parameters.map((p) => p.name);
      const key = r.chance(0.6) ? lastOf(names) : names[r.int(0, names.length - 1)];
      const fault = r.pick(['dtype', 'shape', 'missing', 'unknown', 'truncated', 'flipped'] as const);
      desc += ` ${fault} ('${key}')`;
      const t = new Map(f.tensors);
      const cur = t.get(key)!;
      if (fault === 'dtype') t.set(key, { dtype: 'I32', shape: cur.shape, data: new Int32Array(cur.data.length) });
      else if (fault === 'shape') t.set(key, { dtype: 'F32', shape: [1, ...cur.shape], data: cur.data }); // same elements, another shape
      else if (fault === 'missing') t.delete(key);
      else if (fault === 'unknown') t.set('zz.unknown', { dtype: 'F32', shape: [1], data: new Float32Array(1) });
      if (fault === 'truncated' || fault === 'flipped') {
        const raw = Buffer.from(readFileSync(path));
        if (fault === 'truncated') writeFileSync(path, raw.subarray(0, raw.length - r.int(1, 64)));
        else {
          raw[raw.length - r.int(1, 256)] ^= 1 << r.int(0, 7);
          writeFileSync(path, raw);
        }
      } else safeWrite(path, t, f.metadata);
      const before = bits(model.store.values);
      let threw = false;
      try {
        model.load(path);
      } catch {
        threw = true;
      }
      const after = bits(model.store.values);
      if (!threw) return { desc, ok: false, detail: 'load accepted the bad file' };
      if (Buffer.compare(before, after) !== 0) return { desc, ok: false, detail: `threw, but ${changed(before, after)} parameter values changed` };
      return { desc, ok: true };
    }
    // trainer.resume: a trainer with non-zero moments and step counters, a good file from another trainer, then a fault
    const model = new Decoder({ ...dcfg, seed: 3 });
    const tr = new Trainer(model, data, { steps: 4, batchSize: 2, seqLen: 8, lr: 1e-3, warmup: 0 });
    disposers.push(() => tr.dispose(), () => model.store.dispose());
    const n = model.store.numel;
    (tr.opt.m.sharedData() as Float32Array).set(Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 1e-3));
    (tr.opt.v.sharedData() as Float32Array).set(Float32Array.from({ length: n }, (_, i) => (1 + Math.cos(i)) * 1e-6));
    tr.step = 7;
    tr.opt.stepCount = 7;
    const srcModel = new Decoder({ ...dcfg, seed: 4 });
    const src = new Trainer(srcModel, data, { steps: 4, batchSize: 2, seqLen: 8, lr: 1e-3, warmup: 0 });
    disposers.push(() => src.dispose(), () => srcModel.store.dispose());
    (src.opt.m.sharedData() as Float32Array).fill(0.5);
    (src.opt.v.sharedData() as Float32Array).fill(0.25);
    src.step = 3;
    src.opt.stepCount = 3;
    const path = join(dir, 'r.safetensors');
    src.saveSync(path);
    const f = decodeSafetensors(readFileSync(path));
    const fault = r.pick(['metadata', 'noStep', 'momentShape', 'momentDtype', 'paramShape', 'flipped'] as const);
    desc += ` ${fault}`;
    const t = new Map(f.tensors), md = { ...f.metadata };
    if (fault === 'metadata') md.trainer = '{not json';
    else if (fault === 'noStep') md.trainer = JSON.stringify({ adamStep: 3 });
    else if (fault === 'momentShape') t.set('optimizer.v', { dtype: 'F32', shape: [n - 1], data: new Float32Array(n - 1) });
    else if (fault === 'momentDtype') t.set('optimizer.v', { dtype: 'I32', shape: [n], data: new Int32Array(n) });
    else if (fault === 'paramShape') {
      const key = lastOf(model.store.parameters.map((p) => p.name));
      const cur = t.get(key)!;
      t.set(key, { dtype: 'F32', shape: [1, ...cur.shape], data: cur.data });
    }
    if (fault === 'flipped') {
      const raw = Buffer.from(readFileSync(path));
      raw[raw.length - r.int(1, 256)] ^= 1 << r.int(0, 7);
      writeFileSync(path, raw);
    } else safeWrite(path, t, md);
    const before = { p: bits(model.store.values), m: bits(tr.opt.m), v: bits(tr.opt.v), step: tr.step, adam: tr.opt.stepCount };
    let threw = false;
    try {
      tr.resume(path);
    } catch {
      threw = true;
    }
    const after = { p: bits(model.store.values), m: bits(tr.opt.m), v: bits(tr.opt.v), step: tr.step, adam: tr.opt.stepCount };
    if (!threw) return { desc, ok: false, detail: 'resume accepted the bad file' };
    const diffs: string[] = [];
    if (Buffer.compare(before.p, after.p)) diffs.push(`${changed(before.p, after.p)} parameter values`);
    if (Buffer.compare(before.m, after.m)) diffs.push(`${changed(before.m, after.m)} values of m`);
    if (Buffer.compare(before.v, after.v)) diffs.push(`${changed(before.v, after.v)} values of v`);
    if (before.step !== after.step || before.adam !== after.adam) diffs.push(`step ${before.step}/${before.adam} -> ${after.step}/${after.adam}`);
    return diffs.length ? { desc, ok: false, detail: `threw, but changed: ${diffs.join(', ')}` } : { desc, ok: true };
  } finally {
    for (const d of disposers) d();
    rmSync(dir, { recursive: true, force: true });
  }
}

function changed(a: Buffer, b: Buffer): number {
  const x = new Float32Array(a.buffer, a.byteOffset, a.length / 4), y = new Float32Array(b.buffer, b.byteOffset, b.length / 4);
  let c = 0;
  for (let i = 0; i < x.length; i++) if (!Object.is(x[i], y[i])) c++;
  return c;
}
