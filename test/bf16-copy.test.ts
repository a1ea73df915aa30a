// The bf16 copy of the flat parameter buffer (issue 14) and what it needs: parameter offsets aligned to 128 bytes
// (PARAM_ALIGN) with initial values independent of the padding, the padding invisible to norms, clipping, AdamW,
// checkpoints and parameter counts; the copy's validity, decided in stream order (kernels.bf16CopyCurrent: stale after
// every kind of write, current after the AdamW step that wrote it); matmul's bf16 twins (checked, and ignored by the
// CPU); the store's opt-in copy and the Trainer option; the L2 window's span over the padding.
import anyTest from 'ava';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Decoder, type DecoderConfig } from '../lib/models/decoder.ts';
import { PARAM_ALIGN, type Parameter, type ParameterStore } from '../lib/params.ts';
import { CharTokenizer, TokenDataset } from '../lib/data/index.ts';
import { Trainer } from '../lib/train/trainer.ts';
import { AdamW, SGD, clipGradNorm } from '../lib/optim/index.ts';
import { loadSafetensors } from '../lib/io/safetensors.ts';
import { saveCheckpoint } from '../lib/io/checkpoint.ts';
import { l2Span } from '../lib/models/stack.ts';
import { backward, resetTape } from '../lib/autograd.ts';
import * as K from '../lib/kernels.ts';
import * as ops from '../lib/ops/index.ts';
import { full, tensor, zeros, Tensor } from '../lib/tensor.ts';
import { native } from '../lib/native.ts';
import { assertClose } from './helpers/close.ts';
import { throwsExactly } from './helpers/check.ts';
import { Random } from './helpers/random.ts';

const test = anyTest.serial;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const n = native() as any;
const dir = mkdtempSync(join(tmpdir(), 'sf-bf16-'));
anyTest.after.always(() => rmSync(dir, { recursive: true, force: true }));

// dModel 8, dFF 12, vocab 11: every parameter size is a non-multiple of 32, so every parameter is followed by padding
const base: DecoderConfig = { vocab: 11, dModel: 8, heads: 2, dFF: 12, layers: 4, maxSeq: 8, seed: 3 };
const text = 'the cat sat on the mat. the dog sat on the log. '.repeat(20);
const tok = CharTokenizer.fromText(text);
const data = new TokenDataset(tok.encode(text), tok.vocabSize);
const tcfg: DecoderConfig = { vocab: tok.vocabSize, dModel: 8, heads: 2, dFF: 12, layers: 3, maxSeq: 8, sharing: { strategy: 'all' }, seed: 5 };

const bf16Round = (x: number) => {
  const u = new Uint32Array(Float32Array.of(x).buffer)[0];
  const r = (u + 0x7fff + ((u >>> 16) & 1)) >>> 0;
  return new Float32Array(Uint32Array.of((r >>> 16) << 16).buffer)[0];
};
const inParam = (store: ParameterStore, i: number) => store.parameters.some((p) => i >= p.offset && i < p.offset + p.size);
const padding = (store: ParameterStore, a: ArrayLike<number>) => Array.from(a).filter((_, i) => !inParam(store, i));
const current = (x: Tensor, c: Tensor) => K.bf16CopyCurrent(x, c).dataSync()[0];
const ids = (B: number, T: number, V: number, seed = 1) => tensor(Int32Array.from({ length: B * T }, (_, i) => (i * 7 + seed * 3) % V), [B, T]);

test('offsets are multiples of 32 floats (128 bytes); numel counts parameters only; the padding is 0 everywhere', (t) => {
  for (const sharing of [{ strategy: 'none' }, { strategy: 'all' }, { strategy: 'sequence', unique: 2 }] as const) {
    const m = new Decoder({ ...base, sharing });
    const s = m.store;
    const sizes = s.parameters.reduce((a, p) => a + p.size, 0);
    t.is(s.numel, sizes, 'numel: the parameters, not the padding');
    t.is(s.bytes, 4 * sizes);
    t.is(s.length % PARAM_ALIGN, 0);
    t.true(s.length > s.numel, 'sizes that are not multiples of 32 leave padding');
    t.is(s.values.size, s.length);
    t.is(s.bufferBytes, 4 * s.length);
    let packed = 0, end = 0;
    for (const p of s.parameters) {
      t.is(p.offset % PARAM_ALIGN, 0, `${p.name} offset ${p.offset}`);
      t.is(p.offset, Math.ceil(end / PARAM_ALIGN) * PARAM_ALIGN, `${p.name}: right after the previous parameter, aligned`);
      t.is(p.packedOffset, packed, `${p.name}: packed offset`);
      packed += p.size;
      end = p.offset + p.size;
    }
    t.deepEqual(s.table().map((r) => r.offset), s.parameters.map((p) => p.offset));
    t.true(padding(s, s.values.dataSync()).every((x) => x === 0), 'values');
    t.true(padding(s, s.decayMask.dataSync()).every((x) => x === 0), 'decay mask');
    t.true(padding(s, s.grads.dataSync()).every((x) => x === 0), 'gradients');
    t.is(m.accounting().uniqueParameters, s.numel);
    s.dispose();
  }
});

test('initial values do not depend on the padding: parameter p is Philox counters packedOffset.. of the unpadded layout', (t) => {
  const m = new Decoder({ ...base, sharing: { strategy: 'cycle', unique: 2 } });
  const s = m.store;
  // one draw over the whole unpadded layout (what the store drew before the padding: counters 0..numel-1)
  const flat = n.random([s.numel], 'normal', 3, 0, 0, 1, 'float32', 'cpu');
  const all = new Tensor(flat).dataSync() as Float32Array;
  let normal = 0;
  for (const p of s.parameters) {
    const got = p.value.dataSync() as Float32Array;
    if (p.init.kind !== 'normal') {
      t.true(got.every((x) => x === (p.init.kind === 'ones' ? 1 : 0)), p.name);
      continue;
    }
    normal++;
    const std = p.init.std;
    const want = all.subarray(p.packedOffset, p.packedOffset + p.size);
    assertClose(t, got, Array.from(want, (w) => std * w), { rel: 1e-6, abs: 1e-6 * 1e-30, what: p.name });
  }
  t.true(normal > 3);
  s.dispose();
});

test('the padding stays 0 through training: gradient norm, clipping and AdamW see the parameters only', (t) => {
  resetTape();
  const m = new Decoder({ ...base, sharing: { strategy: 'all' } });
  const s = m.store;
  const opt = new AdamW(s, { lr: 1e-2, weightDecay: 0.1 });
  for (let step = 0; step < 2; step++) {
    s.zeroGrad();
    const loss = m.loss(ids(2, 8, 11, step), ids(2, 8, 11, step + 5));
    backward(loss);
    const g = s.grads.dataSync() as Float32Array;
    let sum = 0;
    for (const p of s.parameters) for (let i = 0; i < p.size; i++) sum += g[p.offset + i] ** 2;
    const norm = clipGradNorm(s, 1e-3).dataSync()[0];
    assertClose(t, [norm], [Math.sqrt(sum)], { rel: 1e-5, what: `step ${step}: gradient norm` });
    opt.update();
    t.true(padding(s, s.grads.dataSync()).every((x) => x === 0), 'gradients');
    t.true(padding(s, s.values.dataSync()).every((x) => x === 0), 'values');
    t.true(padding(s, opt.m.dataSync()).every((x) => x === 0) && padding(s, opt.v.dataSync()).every((x) => x === 0), 'moments');
    resetTape();
  }
  t.is(opt.m.size, s.length);
  t.is(opt.bytes, 2 * s.bufferBytes);
  opt.dispose();
  s.dispose();
});

test('pack / unpack: the packed layout (checkpoints\' flat optimizer state) and back', (t) => {
  const m = new Decoder({ ...base });
  const s = m.store;
  const flat = Float32Array.from({ length: s.length }, (_, i) => (inParam(s, i) ? i + 1 : 0));
  const packed = s.pack(flat);
  t.is(packed.length, s.numel);
  for (const p of s.parameters) t.is(packed[p.packedOffset], p.offset + 1, p.name);
  t.deepEqual(Array.from(s.unpack(packed)), Array.from(flat));
  throwsExactly(t, () => s.pack(new Float32Array(s.numel)), RangeError, /^ParameterStore\.pack: expected \d+ values/, 'pack');
  throwsExactly(t, () => s.unpack(new Float32Array(s.length)), RangeError, /^ParameterStore\.unpack: expected \d+ values/, 'unpack');
  s.dispose();
});

test('checkpoints hold no padding: moments are written packed, files in the packed layout resume into the padded one', (t) => {
  resetTape();
  const model = new Decoder(tcfg);
  const tr = new Trainer(model, data, { steps: 2, batchSize: 2, seqLen: 8, lr: 1e-2 });
  return tr.run().then(() => {
    const path = join(dir, 'a.safetensors');
    tr.saveSync(path);
    const file = loadSafetensors(path);
    t.deepEqual(file.tensors.get('optimizer.m')!.shape, [model.store.numel], 'moments: one value per parameter element');
    const m = tr.opt.m.dataSync() as Float32Array;
    t.deepEqual(Array.from(file.tensors.get('optimizer.m')!.data as Float32Array), Array.from(model.store.pack(m)));
    // a file written in the packed layout by hand (as every checkpoint before the padding): values by name, moments packed
    const other = new Decoder(tcfg);
    const s = other.store;
    n.fillInto(s.parameters[0].value.handle, 0.25);
    n.fillInto(s.parameters[s.parameters.length - 1].value.handle, -0.5);
    const mm = Float32Array.from({ length: s.numel }, (_, i) => 1 + i / 1000), vv = Float32Array.from({ length: s.numel }, (_, i) => 2 + i / 1000);
    const old = join(dir, 'old.safetensors');
    saveCheckpoint(old, s, other.meta(), { trainer: JSON.stringify({ step: 7, adamStep: 7 }) }, new Map([['optimizer.m', mm], ['optimizer.v', vv]]));
    const tr2 = new Trainer(model, data, { steps: 9, batchSize: 2, seqLen: 8, lr: 1e-2 });
    tr2.resume(old);
    t.is(tr2.step, 7);
    const gm = tr2.opt.m.dataSync() as Float32Array, gv = tr2.opt.v.dataSync() as Float32Array;
    for (const p of model.store.parameters) {
      t.is(gm[p.offset], mm[p.packedOffset], p.name);
      t.is(gv[p.offset + p.size - 1], vv[p.packedOffset + p.size - 1], p.name);
    }
    t.true(padding(model.store, gm).every((x) => x === 0) && padding(model.store, gv).every((x) => x === 0), 'padding 0');
    t.deepEqual(Array.from(model.store.values.dataSync()), Array.from(s.values.dataSync()), 'the parameters, padding included');
    tr.dispose();
    tr2.dispose();
    s.dispose();
    model.store.dispose();
  });
});

test('l2Span and ParameterStore.span: alignment padding between adjacent parameters is not a gap', (t) => {
  const all = new Decoder({ ...base, sharing: { strategy: 'all' } });
  const ps = [...all.stack.attn[0].parameters(), ...all.stack.ffn[0].parameters()];
  const span = l2Span(ps);
  t.is(span.length, ps.length, "plan 'all': both blocks, padding and all");
  const w = all.store.span(span);
  const lo = Math.min(...span.map((p) => p.offset)), hi = Math.max(...span.map((p) => p.offset + p.size));
  t.is(w.size, hi - lo);
  t.true(w.sharesStorageWith(all.store.values));
  t.false(K.persistL2(w), 'a CPU window: accepted (one range), nothing to do');
  w.dispose();
  throwsExactly(t, () => all.store.span(span, 'bf16'), Error, /^ParameterStore\.span: the store keeps no bf16 copy/, 'no copy');
  all.store.enableBf16Copy();
  const w16 = all.store.span(span, 'bf16');
  t.is(w16.dtype, 'bfloat16');
  t.is(w16.size, hi - lo);
  t.true(w16.sharesStorageWith(all.store.bf16Copy!));
  t.false(K.persistL2(w16), 'a bf16 window is accepted (a window is bytes of any dtype); on the CPU nothing to do');
  // passed one by one, the parameters' windows leave the padding between them uncovered: refused (a window covers
  // exactly the bytes passed), which is why the stack passes one span
  throwsExactly(t, () => K.persistL2(all.stack.attn[0].parameters().map((p) => p.bf16!)), RangeError,
    /^persistL2: the tensors do not cover one contiguous range of their buffer: bytes \[\d+, \d+\) between tensors\[0\] and tensors\[1\]/, 'one by one');
  w16.dispose();
  // a real gap (another block's parameters between) is still a gap
  const seq = new Decoder({ ...base, dFF: 32, sharing: { strategy: 'sequence', unique: 2 } });
  const sp = l2Span([...seq.stack.attn[0].parameters(), ...seq.stack.ffn[0].parameters()]);
  t.deepEqual(sp.map((p: Parameter) => p.name), seq.stack.ffn[0].parameters().map((p) => p.name));
  all.store.dispose();
  seq.store.dispose();
});

test('bf16CopyCurrent: a copy is current after the AdamW step that wrote it, stale after any other write', (t) => {
  const N = 70;
  const r = new Random(3);
  const rand = () => Float32Array.from({ length: N }, () => r.uniform(-3, 1));
  const p = tensor(rand(), [N]), g = tensor(rand(), [N]), m = zeros([N]), v = zeros([N]);
  const copy = full([N], 0, { dtype: 'bfloat16' });
  const step = (s: number, withCopy = true) => K.adamw(p, g, m, v, { lr: 1e-2, step: s, ...(withCopy ? { bf16Copy: copy } : {}) });
  t.is(current(p, copy), 0, 'never written: stale');
  step(1);
  t.is(current(p, copy), 1, 'written by the AdamW step');
  t.deepEqual(Array.from(copy.dataSync()), Array.from(p.dataSync()).map(bf16Round));
  t.is(current(p.window(32, [8]), copy.window(32, [8])), 1, 'a window and its counterpart');
  t.is(current(p.window(32, [8]), copy.window(33, [8])), 0, 'a shifted window');
  t.is(current(p.window(32, [8]), copy.window(0, [8])), 0, 'another window');
  const other = tensor(p.dataSync() as Float32Array, [N]);
  t.is(current(other, copy), 0, 'equal values in another buffer: not the source');
  t.is(current(p, copy), 1, 'reads change nothing');
  const writes: [string, () => void][] = [
    ['copyInto (a checkpoint load, a user write)', () => n.copyInto(p.handle, other.handle)],
    ['a window write (fillInto of one parameter)', () => n.fillInto(p.window(3, [2]).handle, 0.5)],
    ['init (randomInto)', () => n.randomInto(p.window(0, [4]).handle, 'normal', 1, 0, 0, 1)],
    ['SGD', () => K.sgd(p, g, null, { lr: 1e-2 })],
    ['AdamW without the copy', () => step(3, false)],
    ['a write into the copy itself', () => n.fillInto(copy.window(5, [1]).handle, 0)],
  ];
  for (const [what, write] of writes) {
    step(2);
    t.is(current(p, copy), 1, `before: ${what}`);
    write();
    t.is(current(p, copy), 0, `stale after ${what}`);
    t.is(current(p.window(40, [8]), copy.window(40, [8])), 0, `a part it did not touch is stale too (${what})`);
  }
  step(4);
  t.is(current(p, copy), 1, 'the next AdamW step writes it current again');
  // a failed write: adamw with a NaN step is refused before anything is queued (all or nothing), so nothing changes
  t.throws(() => K.adamw(p, g, m, v, { lr: -1, step: 5, bf16Copy: copy }), { instanceOf: RangeError });
  t.is(current(p, copy), 1, 'a refused call writes nothing');
  // argument checks
  throwsExactly(t, () => K.bf16CopyCurrent(p, other), TypeError, /^bf16CopyCurrent: copy must be bfloat16, got float32\[70\]/, 'fp32 copy');
  throwsExactly(t, () => K.bf16CopyCurrent(p, copy.window(0, [3])), RangeError, /^bf16CopyCurrent: copy must have shape \[70\], got \[3\]/, 'shape');
  for (const x of [p, g, m, v, copy, other]) x.dispose();
});

test('matmul bBf16 / aBf16: checked (dtype, shape, disjoint from outputs); on the CPU not read, results unchanged', (t) => {
  const r = new Random(8);
  const x = tensor(Float32Array.from({ length: 5 * 6 }, () => r.uniform(-1.5, 0.5)), [5, 6]);
  const w = tensor(Float32Array.from({ length: 4 * 6 }, () => r.uniform(-1.5, 0.5)), [4, 6]);
  const bias = tensor(Float32Array.from({ length: 4 }, () => r.uniform(-1.5, 0.5)), [4]);
  const garbage = full([4, 6], 123, { dtype: 'bfloat16' }); // not a copy of w at all: the CPU must not read it
  const x16 = full([5, 6], -7, { dtype: 'bfloat16' });
  for (const precision of ['fp32', 'tf32', 'bf16'] as const) {
    const want = K.matmul(x, w, { transB: true, bias, activation: 'gelu', precision }).dataSync();
    const got = K.matmul(x, w, { transB: true, bias, activation: 'gelu', precision, bBf16: garbage, aBf16: x16 }).dataSync();
    t.deepEqual(Array.from(got), Array.from(want), precision);
  }
  throwsExactly(t, () => K.matmul(x, w, { transB: true, bBf16: w }), TypeError, /^matmul: option bBf16 must be a bfloat16 tensor \(a bf16 copy of b\), got float32$/, 'dtype');
  throwsExactly(t, () => K.matmul(x, w, { transB: true, aBf16: garbage }), RangeError, /^matmul: option aBf16 must have shape \[5, 6\], got \[4, 6\]/, 'shape');
  throwsExactly(t, () => K.matmul(x, w, { transB: true, bBf16: full([6, 4], 0, { dtype: 'bfloat16' }) }), RangeError, /^matmul: option bBf16 must have shape \[4, 6\]/, 'the transposed shape');
  const out = zeros([5, 4]);
  throwsExactly(t, () => K.matmul(x, w, { transB: true, out, bBf16: 3 as never }), TypeError, /^matmul: option bBf16 must be a Tensor/, 'not a tensor');
  t.deepEqual(Array.from(out.dataSync()), new Array(20).fill(0), 'nothing written by refused calls');
  // (a twin cannot overlap out or preact: they are float32, it is bfloat16, and no view changes a dtype; the binding
  // checks it all the same)
  for (const a of [x, w, bias, garbage, x16, out]) a.dispose();
});

test('the store\'s bf16 copy: opt-in, stale until the first AdamW step, then current for every parameter; the CPU loss is unchanged', (t) => {
  resetTape();
  const a = new Decoder({ ...base, sharing: { strategy: 'all' } });
  const b = new Decoder({ ...base, sharing: { strategy: 'all' } });
  t.false(a.store.hasBf16Copy);
  t.is(a.store.bf16Copy, null);
  t.is(a.store.parameters[0].bf16, null);
  a.store.enableBf16Copy();
  a.store.enableBf16Copy(); // idempotent
  const s = a.store;
  t.true(s.hasBf16Copy);
  t.is(s.bf16Copy!.dtype, 'bfloat16');
  t.is(s.bf16Copy!.size, s.length);
  for (const p of s.parameters) {
    t.deepEqual(p.bf16!.shape, p.shape);
    t.is(current(p.value, p.bf16!), 0, `${p.name}: stale before the first step`);
  }
  const oa = new AdamW(a.store, { lr: 1e-2 }), ob = new AdamW(b.store, { lr: 1e-2 });
  for (let step = 0; step < 2; step++) {
    const losses: number[] = [];
    for (const mm of [a, b]) {
      mm.store.zeroGrad();
      const l = ops.withPrecision('bf16', () => mm.loss(ids(2, 8, 11, step), ids(2, 8, 11, step + 1)));
      losses.push(l.dataSync()[0]);
      backward(l);
      resetTape();
    }
    t.is(losses[0], losses[1], `step ${step}: the same loss with and without the copy (the CPU computes fp32)`);
    t.deepEqual(Array.from(a.store.grads.dataSync()), Array.from(b.store.grads.dataSync()), `step ${step}: gradients`);
    oa.update();
    ob.update();
    for (const p of s.parameters) t.is(current(p.value, p.bf16!), 1, `${p.name}: current after the step`);
    t.deepEqual(Array.from(s.bf16Copy!.dataSync()), Array.from(s.values.dataSync()).map(bf16Round), 'the copy holds RNE(values)');
  }
  t.deepEqual(Array.from(a.store.values.dataSync()), Array.from(b.store.values.dataSync()), 'AdamW with the copy updates the same');
  // a load makes it stale; the next step current again
  const sd = Object.fromEntries(a.parameters().map((p) => [p.name, p.value]));
  b.loadStateDict(sd);
  a.loadStateDict(Object.fromEntries(b.parameters().map((p) => [p.name, p.value])));
  t.is(current(s.values, s.bf16Copy!), 0, 'stale after loadStateDict');
  a.to('cpu'); // same device: nothing moves
  t.true(s.hasBf16Copy);
  // a move that fails (no such device here, or in a build without CUDA) changes nothing, the copy included
  const copyBefore = s.bf16Copy;
  t.throws(() => a.to('cuda:7'));
  t.is(s.bf16Copy, copyBefore);
  t.is(s.device, 'cpu');
  t.deepEqual(s.parameters[1].bf16!.shape, s.parameters[1].shape);
  t.is(current(s.parameters[1].value, s.parameters[1].bf16!), 0);
  a.store.disableBf16Copy();
  t.false(s.hasBf16Copy);
  t.is(s.parameters[0].bf16, null);
  oa.dispose();
  ob.dispose();
  a.store.dispose();
  b.store.dispose();
});

test('Trainer bf16Copy: off by default on the CPU, on when asked; refused when not a boolean', async (t) => {
  resetTape();
  const m1 = new Decoder(tcfg);
  const t1 = new Trainer(m1, data, { steps: 1, batchSize: 2, seqLen: 8, lr: 1e-2, precision: 'bf16' });
  t.false(m1.store.hasBf16Copy, 'the CPU does not read it: not made by default');
  const m2 = new Decoder(tcfg);
  const t2 = new Trainer(m2, data, { steps: 1, batchSize: 2, seqLen: 8, lr: 1e-2, precision: 'bf16', bf16Copy: true });
  t.true(m2.store.hasBf16Copy);
  await t1.run();
  await t2.run();
  t.deepEqual(Array.from(m2.store.values.dataSync()), Array.from(m1.store.values.dataSync()), 'the same training step');
  t.is(current(m2.store.values, m2.store.bf16Copy!), 1, 'written by the step');
  throwsExactly(t, () => new Trainer(m1, data, { steps: 1, batchSize: 2, seqLen: 8, lr: 1e-2, bf16Copy: 1 as never }), TypeError, /^Trainer: bf16Copy must be a boolean, got 1$/, 'bf16Copy: 1');
  for (const x of [t1, t2]) x.dispose();
  m1.store.dispose();
  m2.store.dispose();
});

test('a non-finite parameter refused by saveCheckpoint is named by its position among the parameters (no padding)', (t) => {
  const m = new Decoder({ ...base });
  const p = m.store.parameters[3];
  n.fillInto(p.value.window(2, [1]).handle, -Infinity);
  t.true(p.offset !== p.packedOffset, 'the padded and the packed positions differ here');
  throwsExactly(t, () => saveCheckpoint(join(dir, 'bad.safetensors'), m.store, m.meta(), {}, new Map(), { who: 'save', when: 'now' }), Error,
    new RegExp(`^save: parameters \\(${p.name.replace(/\./g, '\\.')}\\) element ${p.packedOffset + 2} is -Infinity now; not writing`), 'the message');
  m.store.dispose();
});
