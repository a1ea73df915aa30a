// Stacked weight gradients (autograd.ts, BackwardOptions.stackedGrads): a weight several linear ops use gets one
// dW += dY^T X over the stacked uses instead of one beta = 1 product per use. The gradients must equal the per-use
// ones up to fp32 summation order for every sharing strategy, the encoder and the encoder–decoder (shared stacks of
// different lengths), with dropout between the uses, with gradient accumulation, and when the byte budget sends some
// or all weights back to the per-use path; a model without sharing must not change at all (bit for bit).
import anyTest, { type ExecutionContext } from 'ava';
import { tensor, type Tensor } from '../lib/index.ts';
import { Decoder, type DecoderConfig } from '../lib/models/decoder.ts';
import { Encoder } from '../lib/models/encoder.ts';
import { EncoderDecoder } from '../lib/models/seq2seq.ts';
import { backward, recording, resetTape, tape, track, STACKED_GRADS_DEFAULT, type StackedGradsOptions, type Tape } from '../lib/autograd.ts';
import { ParameterBuilder, ParameterStore } from '../lib/params.ts';
import * as ops from '../lib/ops/index.ts';
import * as K from '../lib/kernels.ts';
import { CharTokenizer, TokenDataset } from '../lib/data/index.ts';
import { Trainer } from '../lib/train/trainer.ts';
import { assertClose } from './helpers/close.ts';
import { Random } from './helpers/random.ts';

const test = anyTest.serial;

const ints = (seed: number, n: number, hi: number) => {
  const r = new Random(seed);
  return Int32Array.from({ length: n }, () => r.below(hi));
};

type Stats = Tape['stats'];

/** The store's gradient after `step` (zeroGrad first; step runs backward with `stacked`), and what the tape did. */
function gradsOf(store: ParameterStore, step: (stacked: boolean | StackedGradsOptions) => void, stacked: boolean | StackedGradsOptions): { g: Float32Array; stats: Stats } {
  store.zeroGrad();
  step(stacked);
  return { g: Float32Array.from(store.grads.dataSync() as Float32Array), stats: { ...tape().stats } };
}

/** Stacked and per-use gradients agree to fp32 summation order (relative to the largest gradient). */
function close(t: ExecutionContext, got: Float32Array, want: Float32Array, what: string): void {
  let max = 0;
  for (const v of want) max = Math.max(max, Math.abs(v));
  t.true(max > 0, `${what}: some gradient is non-zero`);
  assertClose(t, got, want, { abs: 1e-6 * max, rel: 1e-4, what });
}

const dec: DecoderConfig = { vocab: 13, dModel: 16, heads: 2, dFF: 32, layers: 4, maxSeq: 8, seed: 5 };

function decoderStep(m: Decoder, B = 2, T = 8, seed = 1) {
  const ids = tensor(ints(seed, B * T, dec.vocab), [B, T]), tg = tensor(ints(seed + 100, B * T, dec.vocab), [B, T]);
  return (stacked: boolean | StackedGradsOptions) => {
    const l = m.loss(ids, tg);
    backward(l, { stackedGrads: stacked });
    l.dispose();
  };
}

for (const [name, sharing, extra] of [
  ['all', { strategy: 'all' }, {}],
  ['attention', { strategy: 'attention' }, {}],
  ['ffn', { strategy: 'ffn' }, {}],
  ['sequence U=2', { strategy: 'sequence', unique: 2 }, {}],
  ['cycle U=2', { strategy: 'cycle', unique: 2 }, {}],
  ['cycle-rev U=3', { strategy: 'cycle-rev', unique: 3 }, {}],
  ['sandwich', { strategy: 'sandwich' }, {}],
  ['custom', { strategy: 'custom', custom: { attention: [0, 0, 1, 0], ffn: [0, 1, 1, 2] } }, {}],
  ['basis r=3', { strategy: 'basis', rank: 3 }, {}],
  ['delta r=2 (per-layer biases)', { strategy: 'delta', rank: 2 }, {}],
  ['all + CLA kvShareGroup=2 + GQA', { strategy: 'all', kvShareGroup: 2 }, { kvHeads: 1 }],
  ['all, post-LN, untied head, factorized embedding', { strategy: 'all' }, { norm: 'post', tiedEmbeddings: false, factorizedEmbedding: 6 }],
  ['all, no biases', { strategy: 'all' }, { bias: false }],
] as [string, DecoderConfig['sharing'], Partial<DecoderConfig>][]) {
  test(`Decoder ${name}: stacked gradients equal the per-use ones`, (t) => {
    resetTape();
    const m = new Decoder({ ...dec, ...extra, sharing });
    const step = decoderStep(m);
    const off = gradsOf(m.store, step, false);
    const on = gradsOf(m.store, step, true);
    t.is(off.stats.stacked, 0, 'stackedGrads: false stacks nothing');
    t.true(on.stats.stacked > 0, `some weight was stacked: ${JSON.stringify(on.stats)}`);
    t.is(on.stats.overBudget, 0);
    close(t, on.g, off.g, name);
    m.store.dispose();
  });
}

test('a model without sharing is unaffected: nothing stacks, gradients bit-identical', (t) => {
  resetTape();
  const m = new Decoder({ ...dec, sharing: { strategy: 'none' } });
  const step = decoderStep(m);
  const off = gradsOf(m.store, step, false);
  const on = gradsOf(m.store, step, true);
  t.deepEqual(on.stats, { stacked: 0, stackedUses: 0, direct: 0, overBudget: 0 });
  t.deepEqual(Array.from(on.g), Array.from(off.g));
  m.store.dispose();
});

test('plan all, 4 layers: each of the 6 shared linear weights is one product over its 4 uses', (t) => {
  resetTape();
  const m = new Decoder({ ...dec, sharing: { strategy: 'all' } });
  const on = gradsOf(m.store, decoderStep(m), true);
  t.deepEqual(on.stats, { stacked: 6, stackedUses: 24, direct: 0, overBudget: 0 });
  m.store.dispose();
});

test('the byte budget: over it a weight accumulates use by use (bit-identical to off); between, some stack', (t) => {
  resetTape();
  const m = new Decoder({ ...dec, sharing: { strategy: 'all' } });
  const step = decoderStep(m);
  const off = gradsOf(m.store, step, false);
  const none = gradsOf(m.store, step, { enabled: true, budgetBytes: 0 });
  t.deepEqual(none.stats, { stacked: 0, stackedUses: 0, direct: 0, overBudget: 6 });
  t.deepEqual(Array.from(none.g), Array.from(off.g), 'all over budget: exactly the per-use path');
  // 4 uses x 16 rows: Wq/Wk/Wv/Wo need 64 x (16 + 16) x 4 = 8192 bytes, fc1 and fc2 64 x (16 + 32) x 4 = 12288
  const some = gradsOf(m.store, step, { budgetBytes: 10_000, enabled: true });
  t.deepEqual(some.stats, { stacked: 4, stackedUses: 16, direct: 0, overBudget: 2 });
  close(t, some.g, off.g, 'attention stacked, FFN per use');
  const exact = gradsOf(m.store, step, { budgetBytes: 12_288 });
  if (STACKED_GRADS_DEFAULT.cpu) t.is(exact.stats.stacked, 6, 'a buffer of exactly the budget fits');
  else t.is(exact.stats.stacked, 0, 'budgetBytes alone does not turn stacking on where the default is off');
  const fits = gradsOf(m.store, step, { enabled: true, budgetBytes: 12_288 });
  t.deepEqual(fits.stats, { stacked: 6, stackedUses: 24, direct: 0, overBudget: 0 }, 'a buffer of exactly the budget fits');
  m.store.dispose();
});

test('gradient accumulation over micro-batches: stacked and per-use sums agree', (t) => {
  resetTape();
  const m = new Decoder({ ...dec, sharing: { strategy: 'cycle', unique: 2 } });
  // two micro-batches of different shapes
  const ids = [tensor(ints(1, 16, 13), [2, 8]), tensor(ints(2, 15, 13), [3, 5])];
  const tgs = [tensor(ints(101, 16, 13), [2, 8]), tensor(ints(102, 15, 13), [3, 5])];
  const step = (stacked: boolean | StackedGradsOptions) => {
    for (let k = 0; k < 2; k++) {
      const l = m.loss(ids[k], tgs[k]);
      backward(l, { scale: 0.5, stackedGrads: stacked });
      l.dispose();
    }
  };
  const off = gradsOf(m.store, step, false);
  const on = gradsOf(m.store, step, true);
  t.true(on.stats.stacked > 0);
  close(t, on.g, off.g, 'two micro-batches');
  // and the accumulated gradient is the sum of the two (the stacked path adds into what the first one left)
  const one = gradsOf(m.store, (s) => {
    const l = m.loss(ids[0], tgs[0]);
    backward(l, { scale: 0.5, stackedGrads: s });
    l.dispose();
  }, true);
  const two = gradsOf(m.store, (s) => {
    const l = m.loss(ids[1], tgs[1]);
    backward(l, { scale: 0.5, stackedGrads: s });
    l.dispose();
  }, true);
  close(t, on.g, one.g.map((v, i) => v + two.g[i]), 'sum of the micro-batches');
  for (const x of [...ids, ...tgs]) x.dispose();
  m.store.dispose();
});

test('a retained tape run twice stacks in both passes, and agrees with the per-use path', (t) => {
  resetTape();
  const m = new Decoder({ ...dec, sharing: { strategy: 'all' } });
  const ids = tensor(ints(1, 16, 13), [2, 8]), tg = tensor(ints(2, 16, 13), [2, 8]);
  const passes: number[] = [];
  const step = (s: boolean | StackedGradsOptions) => {
    const l = m.loss(ids, tg);
    backward(l, { stackedGrads: s, retain: true });
    passes.push(tape().stats.stacked);
    backward(l, { stackedGrads: s }); // the second pass re-adds into the activation gradients too: both paths alike
    passes.push(tape().stats.stacked);
    l.dispose();
  };
  const off = gradsOf(m.store, step, false), on = gradsOf(m.store, step, true);
  t.deepEqual(passes, [0, 0, 6, 6]);
  close(t, on.g, off.g, 'two passes over one tape');
  ids.dispose();
  tg.dispose();
  m.store.dispose();
});

test('without stackedGrads, backward() follows the device default (STACKED_GRADS_DEFAULT.cpu here)', (t) => {
  resetTape();
  const m = new Decoder({ ...dec, sharing: { strategy: 'all' } });
  const step = decoderStep(m);
  const d = gradsOf(m.store, () => step(undefined as never), false);
  t.is(d.stats.stacked, STACKED_GRADS_DEFAULT.cpu ? 6 : 0);
  const explicit = gradsOf(m.store, step, STACKED_GRADS_DEFAULT.cpu);
  t.deepEqual(Array.from(d.g), Array.from(explicit.g));
  m.store.dispose();
});

test('Encoder (MLM with padding, and classification), plan all: stacked equals per use', (t) => {
  resetTape();
  const m = new Encoder({ vocab: 11, dModel: 8, heads: 2, dFF: 12, layers: 3, maxSeq: 8, seed: 4, numClasses: 3, sharing: { strategy: 'all' } });
  const ids = tensor(ints(3, 16, 11), [2, 8]), tg = tensor(ints(4, 16, 11), [2, 8]), labels = tensor(Int32Array.from([0, 2]), [2]);
  const mlm = (s: boolean | StackedGradsOptions) => {
    const l = m.mlmLoss(ids, tg, { keyLengths: [8, 5] });
    backward(l, { stackedGrads: s });
    l.dispose();
  };
  const cls = (s: boolean | StackedGradsOptions) => {
    const l = m.classificationLoss(ids, labels, { keyLengths: [6, 8] });
    backward(l, { stackedGrads: s });
    l.dispose();
  };
  for (const [what, step] of [['MLM', mlm], ['classification', cls]] as const) {
    const off = gradsOf(m.store, step, false), on = gradsOf(m.store, step, true);
    t.true(on.stats.stacked > 0, what);
    close(t, on.g, off.g, what);
  }
  for (const x of [ids, tg, labels]) x.dispose();
  m.store.dispose();
});

for (const [name, extra] of [
  ['shareEncoderDecoder (one block over source and target of different lengths)', { shareEncoderDecoder: true, sharing: { strategy: 'all' } }],
  ['shareEncoderDecoder + basis', { shareEncoderDecoder: true, sharing: { strategy: 'basis', rank: 2 } }],
  ['encoder cycle, decoder delta', { sharing: { strategy: 'cycle', unique: 2 }, decoderSharing: { strategy: 'delta', rank: 2 } }],
] as [string, object][]) {
  test(`EncoderDecoder ${name}: stacked equals per use`, (t) => {
    resetTape();
    const m = new EncoderDecoder({ vocab: 11, dModel: 8, heads: 2, dFF: 12, encoderLayers: 2, decoderLayers: 2, maxSeq: 8, seed: 6, ...extra });
    const src = tensor(ints(5, 14, 11), [2, 7]), tin = tensor(ints(6, 8, 11), [2, 4]), tout = tensor(ints(7, 8, 11), [2, 4]);
    const step = (s: boolean | StackedGradsOptions) => {
      const l = m.loss(src, tin, tout, { srcLengths: [7, 5] });
      backward(l, { stackedGrads: s });
      l.dispose();
    };
    const off = gradsOf(m.store, step, false), on = gradsOf(m.store, step, true);
    t.true(on.stats.stacked > 0, JSON.stringify(on.stats));
    close(t, on.g, off.g, name);
    for (const x of [src, tin, tout]) x.dispose();
    m.store.dispose();
  });
}

// The models have no dropout; a network built from the ops with a dropout op (Philox mask, regenerated in backward)
// between the uses of one shared weight checks that what the stacked path keeps (each use's input and output
// gradient) is what the per-use path would have used.
function dropoutOp(x: Tensor, p: number, seed: number): Tensor {
  const rec = recording(x);
  const y = track(K.dropout(x, { p, seed }), rec);
  if (rec) {
    tape().record('dropout', [y], (tp) => {
      const g = tp.gradOf(y);
      if (g) K.dropoutBackward(g, tp.gradFor(x), { p, seed });
    }, [x]);
  }
  return y;
}

for (const p of [0, 0.3]) {
  test(`a shared linear with dropout p=${p} between its uses: stacked equals per use`, (t) => {
    resetTape();
    const d = 12, V = 7, L = 5, N = 20;
    const b = new ParameterBuilder();
    const w = b.declare('w', [d, d], { kind: 'normal', std: 0.3 }, true);
    const bias = b.declare('b', [d], { kind: 'normal', std: 0.1 }, false);
    const lnw = b.declare('ln.w', [d], { kind: 'ones' }, false), lnb = b.declare('ln.b', [d], { kind: 'zeros' }, false);
    const wout = b.declare('out', [V, d], { kind: 'normal', std: 0.3 }, true);
    const store = new ParameterStore(b, { seed: 9 });
    const r = new Random(8);
    const x = tensor(Float32Array.from({ length: N * d }, () => r.uniform()), [N, d]);
    const tg = tensor(ints(9, N, V), [N]);
    const step = (s: boolean | StackedGradsOptions) => {
      let h = x;
      for (let l = 0; l < L; l++) {
        const u = ops.linear(ops.layerNorm(h, lnw.value, lnb.value), w.value, bias.value, l % 2 ? 'gelu' : 'none');
        h = ops.add(h, p > 0 ? dropoutOp(u, p, 100 + l) : u);
      }
      const loss = ops.crossEntropy(ops.linear(h, wout.value, null), tg);
      backward(loss, { stackedGrads: s });
      loss.dispose();
    };
    const off = gradsOf(store, step, false), on = gradsOf(store, step, true);
    t.deepEqual(on.stats, { stacked: 1, stackedUses: L, direct: 0, overBudget: 0 });
    close(t, on.g, off.g, `dropout ${p}`);
    x.dispose();
    tg.dispose();
    store.dispose();
  });
}

test('a use that receives no gradient is skipped: the others still stack', (t) => {
  resetTape();
  const d = 6, N = 5;
  const b = new ParameterBuilder();
  const w = b.declare('w', [d, d], { kind: 'normal', std: 0.3 }, true);
  const wout = b.declare('out', [3, d], { kind: 'normal', std: 0.3 }, true);
  const store = new ParameterStore(b, { seed: 2 });
  const r = new Random(3);
  const x = tensor(Float32Array.from({ length: N * d }, () => r.uniform()), [N, d]);
  const tg = tensor(Int32Array.from([0, 1, 2, 0, 1]), [N]);
  const step = (s: boolean | StackedGradsOptions) => {
    const a = ops.linear(x, w.value, null);
    ops.linear(a, w.value, null); // recorded, but its output does not reach the loss
    const c = ops.linear(a, w.value, null, 'gelu');
    const loss = ops.crossEntropy(ops.linear(c, wout.value, null), tg);
    backward(loss, { stackedGrads: s });
    loss.dispose();
  };
  const off = gradsOf(store, step, false), on = gradsOf(store, step, true);
  t.deepEqual(on.stats, { stacked: 1, stackedUses: 2, direct: 0, overBudget: 0 });
  close(t, on.g, off.g, 'two of three uses');
  x.dispose();
  tg.dispose();
  store.dispose();
});

test('the Trainer passes stackedGrads through: on and off train to the same parameters (fp32 order)', async (t) => {
  resetTape();
  const text = 'the cat sat on the mat. the dog sat on the log. '.repeat(20);
  const tok = CharTokenizer.fromText(text);
  const data = new TokenDataset(tok.encode(text), tok.vocabSize);
  const params: Float32Array[] = [];
  for (const stackedGrads of [false, true]) {
    const m = new Decoder({ vocab: tok.vocabSize, dModel: 16, heads: 2, dFF: 32, layers: 3, maxSeq: 16, sharing: { strategy: 'all' }, seed: 3 });
    const tr = new Trainer(m, data, { steps: 3, batchSize: 2, seqLen: 16, lr: 1e-3, accumulate: 2, stackedGrads });
    await tr.run();
    t.is(tape().stats.stacked, stackedGrads ? 6 : 0);
    params.push(Float32Array.from(m.store.values.dataSync() as Float32Array));
    tr.dispose();
    m.store.dispose();
  }
  assertClose(t, params[1], params[0], { abs: 1e-5, rel: 1e-4, what: 'parameters after 3 steps' });
});

test('stackedGrads is checked: type, keys, budget', (t) => {
  resetTape();
  const m = new Decoder({ ...dec, sharing: { strategy: 'all' } });
  const ids = tensor(ints(1, 16, 13), [2, 8]), tg = tensor(ints(2, 16, 13), [2, 8]);
  for (const [bad, cls, msg] of [
    ['yes', TypeError, /stackedGrads must be a boolean or an object/],
    [{ enable: true }, TypeError, /unknown stackedGrads option 'enable'/],
    [{ enabled: 1 }, TypeError, /stackedGrads.enabled must be a boolean/],
    [{ budgetBytes: -1 }, RangeError, /budgetBytes must be a number >= 0/],
    [{ budgetBytes: NaN }, RangeError, /budgetBytes must be a number >= 0/],
  ] as [unknown, typeof TypeError, RegExp][]) {
    const l = m.loss(ids, tg);
    t.throws(() => backward(l, { stackedGrads: bad as boolean }), { instanceOf: cls, message: msg });
    resetTape();
    l.dispose();
  }
  const data = new TokenDataset(Int32Array.from({ length: 200 }, (_, i) => i % 13), 13);
  t.throws(() => new Trainer(m, data, { steps: 1, batchSize: 1, seqLen: 8, lr: 1e-3, stackedGrads: { budget: 1 } as never }), { instanceOf: TypeError, message: /^Trainer: unknown stackedGrads option 'budget'/ });
  ids.dispose();
  tg.dispose();
  m.store.dispose();
});
