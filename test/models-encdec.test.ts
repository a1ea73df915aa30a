// Encoder (bidirectional, MLM and classification heads, padding) and EncoderDecoder (cross-attention, encoder–decoder
// sharing): finite-difference gradients, the shared-equals-sum property for encoder–decoder sharing, closed-form
// counts, overfitting, and errors.
import anyTest from 'ava';
import { tensor, type Tensor } from '../lib/index.ts';
import { Encoder, type EncoderConfig } from '../lib/models/encoder.ts';
import { EncoderDecoder, type EncoderDecoderConfig } from '../lib/models/seq2seq.ts';
import { backward, noGrad, resetTape } from '../lib/autograd.ts';
import { AdamW } from '../lib/optim/index.ts';
import { assertClose } from './helpers/close.ts';
import { Random } from './helpers/random.ts';
import { checkGradients } from './helpers/fd.ts';

const test = anyTest.serial;

const ints = (seed: number, n: number, hi: number) => {
  const r = new Random(seed);
  return Int32Array.from({ length: n }, () => r.below(hi));
};
const scalar = (f: () => Tensor) =>
  noGrad(() => {
    const l = f();
    const v = l.dataSync()[0];
    l.dispose();
    return v;
  });

const enc: EncoderConfig = { vocab: 11, dModel: 8, heads: 2, dFF: 12, layers: 3, maxSeq: 8, seed: 4, numClasses: 3 };
const BERT_LIKE: Partial<EncoderConfig> = { norm: 'post', typeVocab: 2, embeddingNorm: true, finalNorm: false, layerNormEps: 1e-12, activation: 'gelu_erf', mlmTransform: true };

for (const [name, extra] of [
  ['none', {}],
  ['all', { sharing: { strategy: 'all' } }],
  ['cycle-rev U=2 + GQA', { sharing: { strategy: 'cycle-rev', unique: 2 }, kvHeads: 1 }],
  ['delta r=2', { sharing: { strategy: 'delta', rank: 2 } }],
  ['all + factorized embedding E=4 (tied)', { sharing: { strategy: 'all' }, factorizedEmbedding: 4 }],
  ['factorized embedding E=4, untied head', { factorizedEmbedding: 4, tiedEmbeddings: false }],
  ['post-LN, all', { norm: 'post', sharing: { strategy: 'all' } }],
  ['BERT-like: post-LN, token types, embedding LayerNorm, no final norm, eps 1e-12, exact GELU, MLM head', BERT_LIKE],
  ['ALBERT-like: the same, factorized E=4 (embeddings and their norm in E), all, tanh GELU', { ...BERT_LIKE, factorizedEmbedding: 4, sharing: { strategy: 'all' }, activation: 'gelu_tanh' }],
  ['BERT-like with an untied MLM output matrix', { ...BERT_LIKE, tiedEmbeddings: false }],
] as [string, Partial<EncoderConfig>][]) {
  test(`Encoder MLM + padding: gradients match finite differences (${name})`, (t) => {
    resetTape();
    const m = new Encoder({ ...enc, ...extra });
    const ids = tensor(ints(1, 12, 11), [2, 6]);
    const tg = ints(2, 12, 11);
    for (const i of [0, 3, 7, 10]) tg[i] = -100; // only some positions are masked-LM targets
    const targets = tensor(tg, [2, 6]);
    const opts = { keyLengths: [6, 4] };
    m.zeroGrad();
    const l = m.mlmLoss(ids, targets, opts);
    backward(l);
    l.dispose();
    t.true(checkGradients(t, m.store, () => scalar(() => m.mlmLoss(ids, targets, opts)), 1) > 0);
    m.store.dispose();
  });
}

test('Encoder classification: gradients match finite differences; padding keys do not matter', (t) => {
  resetTape();
  const m = new Encoder({ ...enc, sharing: { strategy: 'all' } });
  const ids = tensor(ints(3, 12, 11), [2, 6]);
  const labels = tensor(Int32Array.from([2, 0]), [2]);
  const opts = { keyLengths: [6, 3] };
  m.zeroGrad();
  const l = m.classificationLoss(ids, labels, opts);
  backward(l);
  l.dispose();
  checkGradients(t, m.store, () => scalar(() => m.classificationLoss(ids, labels, opts)), 1);
  // changing a padded token of sequence 1 (position >= 3) does not change its class logits
  const a = noGrad(() => m.classify(ids, opts)).dataSync();
  const other = ints(3, 12, 11);
  other[6 + 4] = (other[6 + 4] + 1) % 11;
  const b = noGrad(() => m.classify(tensor(other, [2, 6]), opts)).dataSync();
  t.deepEqual(Array.from(b.slice(3, 6)), Array.from(a.slice(3, 6)));
  m.store.dispose();
});

test('Encoder classification through the pooler, with token types: gradients match finite differences; types matter', (t) => {
  resetTape();
  const m = new Encoder({ ...enc, ...BERT_LIKE, pooler: true, sharing: { strategy: 'cycle', unique: 2 } });
  const ids = tensor(ints(3, 12, 11), [2, 6]);
  const types = tensor(Int32Array.from([0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0]), [2, 6]);
  const labels = tensor(Int32Array.from([2, 0]), [2]);
  const opts = { keyLengths: [6, 5], tokenTypes: types };
  m.zeroGrad();
  const l = m.classificationLoss(ids, labels, opts);
  backward(l);
  l.dispose();
  checkGradients(t, m.store, () => scalar(() => m.classificationLoss(ids, labels, opts)), 1);
  // the token types change the result (type 1's row is used), and no types means all 0
  const zero = tensor(new Int32Array(12), [2, 6]);
  const a = noGrad(() => m.classify(ids, opts)).dataSync();
  const b = noGrad(() => m.classify(ids, { keyLengths: [6, 5] })).dataSync();
  const c = noGrad(() => m.classify(ids, { keyLengths: [6, 5], tokenTypes: zero })).dataSync();
  t.notDeepEqual(Array.from(a), Array.from(b));
  t.deepEqual(Array.from(b), Array.from(c));
  m.store.dispose();
});

test('Encoder options are checked: token types, activation, epsilon, booleans, the pooler', (t) => {
  const bad: [Partial<EncoderConfig>, RegExp][] = [
    [{ activation: 'relu' as never }, /Encoder: activation must be 'gelu_tanh' or 'gelu_erf', got "relu"/],
    [{ layerNormEps: 0 }, /Encoder: layerNormEps must be a number >= 5e-324, got 0/],
    [{ layerNormEps: NaN }, /Encoder: layerNormEps must be finite/],
    [{ embeddingNorm: 1 as never }, /Encoder: embeddingNorm must be a boolean, got 1/],
    [{ finalNorm: 'no' as never }, /Encoder: finalNorm must be a boolean/],
    [{ typeVocab: 0 }, /Encoder: typeVocab must be an integer >= 1/],
    [{ pooler: true, numClasses: undefined }, /Encoder: pooler needs a classification head \(numClasses\)/],
    [{ typeVoab: 2 } as never, /unknown config key "typeVoab"/],
  ];
  for (const [extra, re] of bad) t.throws(() => new Encoder({ ...enc, ...extra }), { message: re });
  const m = new Encoder({ ...enc, typeVocab: 2 });
  const plain = new Encoder(enc);
  const ids = tensor(ints(3, 12, 11), [2, 6]);
  try {
    t.throws(() => plain.encode(ids, { tokenTypes: tensor(new Int32Array(12), [2, 6]) }), { message: /tokenTypes given, but this encoder has no token-type embeddings/ });
    t.throws(() => m.encode(ids, { tokenTypes: tensor(new Int32Array(6), [1, 6]) }), { message: /tokenTypes must be an int32 Tensor of shape \[2, 6\]/ });
    t.throws(() => m.encode(ids, { tokenTypes: tensor(new Float32Array(12), [2, 6]) as never }), { message: /tokenTypes must be an int32 Tensor/ });
    t.throws(() => m.encode(ids, { tokenType: 1 } as never), { message: /unknown option "tokenType"/ });
  } finally {
    m.store.dispose();
    plain.store.dispose();
  }
});

test('Encoder unique-parameter count equals the closed form', (t) => {
  for (const sharing of [{ strategy: 'none' }, { strategy: 'all' }, { strategy: 'cycle', unique: 2 }] as const) {
    for (const extra of [{}, { factorizedEmbedding: 4 }, { factorizedEmbedding: 4, tiedEmbeddings: false }, BERT_LIKE, { ...BERT_LIKE, factorizedEmbedding: 4 },
      { ...BERT_LIKE, factorizedEmbedding: 4, tiedEmbeddings: false }, { ...BERT_LIKE, mlmTransform: false, numClasses: 3, pooler: true }, { typeVocab: 3, finalNorm: false }]) {
      const m = new Encoder({ ...enc, numClasses: undefined, sharing, ...extra });
      t.is(m.numParameters, m.accounting().uniqueParameters, `${sharing.strategy} ${JSON.stringify(extra)}`);
      m.store.dispose();
    }
  }
});

const s2s: EncoderDecoderConfig = { vocab: 11, dModel: 8, heads: 2, dFF: 12, encoderLayers: 2, decoderLayers: 2, maxSeq: 8, seed: 5 };
const batch = () => ({
  src: tensor(ints(4, 12, 11), [2, 6]),
  tin: tensor(ints(5, 10, 11), [2, 5]),
  tout: tensor(ints(6, 10, 11), [2, 5]),
});

for (const [name, extra] of [
  ['separate stacks', {}],
  ['encoder–decoder sharing', { shareEncoderDecoder: true }],
  ['encoder–decoder sharing over an all-shared encoder', { shareEncoderDecoder: true, sharing: { strategy: 'all' } }],
] as [string, Partial<EncoderDecoderConfig>][]) {
  test(`EncoderDecoder: gradients match finite differences (${name})`, (t) => {
    resetTape();
    const m = new EncoderDecoder({ ...s2s, ...extra });
    const { src, tin, tout } = batch();
    const opts = { srcLengths: [6, 4] };
    m.zeroGrad();
    const l = m.loss(src, tin, tout, opts);
    backward(l);
    l.dispose();
    checkGradients(t, m.store, () => scalar(() => m.loss(src, tin, tout, opts)), 1);
    m.store.dispose();
  });
}

test("encoder–decoder sharing: a shared block's gradient is the encoder's plus the decoder's use of it", (t) => {
  resetTape();
  const shared = new EncoderDecoder({ ...s2s, shareEncoderDecoder: true });
  const apart = new EncoderDecoder({ ...s2s });
  const sv = shared.store.values.sharedData() as Float32Array;
  const av = apart.store.values.sharedData() as Float32Array;
  // the separate model's decoder blocks get the encoder blocks' values
  for (const p of apart.store.parameters) {
    const src = shared.store.byName(p.name.replace(/^dec\./, 'enc.'))!;
    av.set(sv.subarray(src.offset, src.offset + src.size), p.offset);
  }
  const { src, tin, tout } = batch();
  for (const m of [shared, apart]) {
    m.zeroGrad();
    const l = m.loss(src, tin, tout);
    backward(l);
    l.dispose();
  }
  t.is(scalar(() => shared.loss(src, tin, tout)), scalar(() => apart.loss(src, tin, tout)));
  const sg = shared.store.grads.dataSync(), ag = apart.store.grads.dataSync();
  for (const p of shared.store.parameters) {
    const want = new Float64Array(p.size);
    for (const q of apart.store.parameters) {
      if (q.name.replace(/^dec\./, 'enc.') !== p.name) continue;
      for (let i = 0; i < p.size; i++) want[i] += ag[q.offset + i];
    }
    assertClose(t, sg.subarray(p.offset, p.offset + p.size), want, { rel: 1e-3, abs: 1e-3 * 1e-6, what: p.name });
  }
  t.true(shared.numParameters < apart.numParameters);
  shared.store.dispose();
  apart.store.dispose();
});

test('EncoderDecoder and Encoder overfit a batch', (t) => {
  resetTape();
  const m = new EncoderDecoder({ ...s2s, shareEncoderDecoder: true });
  const opt = new AdamW(m.store, { lr: 3e-2, weightDecay: 0 });
  const { src, tin, tout } = batch();
  let last = Infinity;
  for (let step = 0; step < 150; step++) {
    m.zeroGrad();
    const l = m.loss(src, tin, tout);
    backward(l);
    opt.update();
    if (step === 149) last = l.dataSync()[0];
    l.dispose();
  }
  t.true(last < 0.05, `seq2seq final loss ${last}`);
  const e = new Encoder({ ...enc, sharing: { strategy: 'all' } });
  const eo = new AdamW(e.store, { lr: 3e-2, weightDecay: 0 });
  const ids = tensor(ints(7, 12, 11), [2, 6]);
  const labels = tensor(Int32Array.from([1, 2]), [2]);
  for (let step = 0; step < 100; step++) {
    e.zeroGrad();
    const l = e.classificationLoss(ids, labels);
    backward(l);
    eo.update();
    if (step === 99) last = l.dataSync()[0];
    l.dispose();
  }
  t.true(last < 0.05, `classification final loss ${last}`);
  for (const x of [opt, eo]) x.dispose();
  m.store.dispose();
  e.store.dispose();
});

test('bad configurations and inputs are clear errors', (t) => {
  t.throws(() => new EncoderDecoder({ ...s2s, decoderLayers: 3, shareEncoderDecoder: true }), { instanceOf: RangeError, message: /as many decoder as encoder layers/ });
  t.throws(() => new Encoder({ ...enc, numClasses: 1 }), { instanceOf: RangeError, message: /numClasses must be an integer >= 2, got 1$/ });
  const e = new Encoder(enc);
  t.throws(() => e.encode(tensor(Int32Array.from([1, 2]), [1, 2]), { keyLengths: [5] }), { instanceOf: RangeError, message: /keyLengths must be 1 integers in \[0, 2\]/ });
  const m = new EncoderDecoder(s2s);
  const { src, tin } = batch();
  t.throws(() => m.forward(src, tensor(Int32Array.from([1]), [1, 1])), { instanceOf: RangeError, message: /source batch 2 differs from target batch 1/ });
  t.throws(() => m.forward(src, tin, { srcLengths: [0, 3] }), { instanceOf: RangeError, message: /srcLengths must be 2 integers/ });
  e.store.dispose();
  m.store.dispose();
});

test('summaries of the encoder and the encoder–decoder', (t) => {
  const e = new Encoder({ ...enc, sharing: { strategy: 'cycle', unique: 2 } });
  t.regex(e.summary(), /Encoder: cycle, 2 unique blocks over 3 layers/);
  t.regex(e.summary(), /KV cache per token +0 bytes/);
  t.is(e.parameterStore, e.store);
  const m = new EncoderDecoder({ ...s2s, shareEncoderDecoder: true });
  t.regex(m.summary(), /decoder: self-attention and FFN blocks are the encoder's/);
  t.regex(m.summary(), new RegExp(`unique parameters +${m.numParameters.toLocaleString('en-US')}`));
  e.store.dispose();
  m.store.dispose();
});
