// Hugging Face checkpoints (lib/io/hf.ts): GPT-2 folders read into a Decoder give the logits of a re-implementation of
// transformers' GPT-2 forward pass (test/fixtures/hf, scripts/hf_fixtures.py) within 1e-5 of the logits' scale; a
// shared Decoder written by savePretrained (layers expanded) is read by that re-implementation's loader and gives the
// model's logits; round trips are bit-exact; and everything the layout cannot hold is refused by name.
import anyTest from 'ava';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { fromPretrained, savePretrained } from '../lib/io/hf.ts';
import { Decoder } from '../lib/models/decoder.ts';
import { Encoder } from '../lib/models/encoder.ts';
import { loadSafetensors, saveSafetensors } from '../lib/io/safetensors.ts';
import { tensor } from '../lib/tensor.ts';
import { EXPORT_ALBERT_CONFIG, EXPORT_BERT_CONFIG, EXPORT_CONFIG, perturbedEncoder } from '../scripts/hf_export_fixture.ts';

const test = anyTest.serial;
const fixtures = fileURLToPath(new URL('./fixtures/hf/', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'sf-hf-'));
anyTest.after.always(() => rmSync(tmp, { recursive: true, force: true }));

interface Expected { ids: number[][]; logits: number[]; shape: number[] }
const expected = (name: string) => JSON.parse(readFileSync(join(fixtures, name, 'expected.json'), 'utf8')) as Expected;

/** fromPretrained for a GPT-2 folder: a Decoder. */
function gpt2(dir: string): Decoder {
  const m = fromPretrained(dir);
  if (!(m instanceof Decoder)) throw new Error(`${dir}: expected a Decoder`);
  return m;
}

function logitsOf(m: Decoder, ids: number[][]): Float32Array {
  const x = tensor(Int32Array.from(ids.flat()), [ids.length, ids[0].length]);
  const y = m.forward(x);
  const out = y.dataSync() as Float32Array;
  x.dispose();
  y.dispose();
  return out;
}

function closeTo(t: import('ava').ExecutionContext, got: Float32Array, want: number[], what: string) {
  t.is(got.length, want.length, `${what}: length`);
  let scale = 0, worst = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
  t.true(worst <= 1e-5 * Math.max(1, scale), `${what}: max |ours - reference| = ${worst} against a scale of ${scale}`);
}

for (const name of ['gpt2-tiny', 'gpt2-sharded-bf16']) {
  test(`${name}: fromPretrained gives the reference GPT-2's logits within 1e-5`, (t) => {
    const m = gpt2(join(fixtures, name));
    try {
      const e = expected(name);
      t.is(m.plan.strategy, 'none');
      closeTo(t, logitsOf(m, e.ids), e.logits, name);
    } finally {
      m.store.dispose();
    }
  });
}

test('a shared decoder written by savePretrained (layers expanded) gives the same logits in the reference loader', (t) => {
  const m = new Decoder(EXPORT_CONFIG);
  try {
    const e = expected('export-shared');
    closeTo(t, logitsOf(m, e.ids), e.logits, 'export-shared');
    // The export is deterministic: the committed files are what savePretrained writes today.
    const d = join(tmp, 'export');
    const r = savePretrained(m, d);
    t.true(r.expanded);
    t.deepEqual(readFileSync(join(d, 'model.safetensors')), readFileSync(join(fixtures, 'export-shared', 'model.safetensors')));
    t.deepEqual(JSON.parse(readFileSync(join(d, 'config.json'), 'utf8')), JSON.parse(readFileSync(join(fixtures, 'export-shared', 'config.json'), 'utf8')));
    const cfg = JSON.parse(readFileSync(join(d, 'config.json'), 'utf8'));
    t.is(cfg.n_layer, 4);
    t.is(cfg.sharedformer_sharing.strategy, 'cycle');
    // Read back: an unshared model with bit-identical logits.
    const back = gpt2(d);
    try {
      t.is(back.plan.strategy, 'none');
      t.deepEqual(logitsOf(back, e.ids), logitsOf(m, e.ids));
    } finally {
      back.store.dispose();
    }
  } finally {
    m.store.dispose();
  }
});

test('round trip: fromPretrained then savePretrained writes the same tensors, bit for bit', (t) => {
  const m = gpt2(join(fixtures, 'gpt2-tiny'));
  try {
    const d = join(tmp, 'rt');
    t.false(savePretrained(m, d).expanded);
    const a = loadSafetensors(join(fixtures, 'gpt2-tiny', 'model.safetensors')).tensors;
    const b = loadSafetensors(join(d, 'model.safetensors'));
    t.is(b.metadata.format, 'pt');
    t.deepEqual([...b.tensors.keys()].sort(), [...a.keys()].sort());
    for (const [k, v] of a) t.deepEqual(new Uint32Array((b.tensors.get(k)!.data as Float32Array).slice().buffer), new Uint32Array((v.data as Float32Array).slice().buffer), k);
  } finally {
    m.store.dispose();
  }
});

function variant(name: string, edit: (dir: string) => void): string {
  const d = mkdtempSync(join(tmp, 'v-'));
  cpSync(join(fixtures, name), d, { recursive: true });
  edit(d);
  return d;
}
const editConfig = (dir: string, f: (c: Record<string, unknown>) => void) => {
  const c = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  f(c);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(c));
};
const editWeights = (dir: string, f: (m: Map<string, import('../lib/io/safetensors.ts').SafeTensor>) => void) => {
  const file = loadSafetensors(join(dir, 'model.safetensors'));
  f(file.tensors);
  saveSafetensors(join(dir, 'model.safetensors'), file.tensors, file.metadata);
};

test('fromPretrained refuses what the Decoder cannot represent, naming the key', (t) => {
  const cases: [(d: string) => void, RegExp][] = [
    [(d) => editConfig(d, (c) => { c.model_type = 't5'; }), /"model_type" "t5" is not supported; supported: "gpt2", "bert", "albert"/],
    [(d) => editConfig(d, (c) => { c.model_type = 'bert'; }), /"architectures" is \["GPT2LMHeadModel"\], which sharedformer's Encoder does not implement \(supported for BERT: "BertForMaskedLM", "BertForSequenceClassification"\)/],
    [(d) => editConfig(d, (c) => { c.activation_function = 'gelu'; }), /"activation_function" is "gelu", which .* does not implement/],
    [(d) => editConfig(d, (c) => { c.layer_norm_epsilon = 1e-12; }), /"layer_norm_epsilon" is 1e-12/],
    [(d) => editConfig(d, (c) => { c.tie_word_embeddings = false; }), /"tie_word_embeddings" is false/],
    [(d) => editConfig(d, (c) => { c.add_cross_attention = true; }), /"add_cross_attention"/],
    [(d) => editConfig(d, (c) => { c.n_layer = 4; }), /has no "transformer\.h\.3\.ln_1\.weight"/],
    [(d) => editConfig(d, (c) => { c.n_embd = 'sixteen'; }), /"n_embd" must be a positive integer, got "sixteen"/],
    [(d) => editConfig(d, (c) => { c.vocab_size = 38; }), /"transformer\.wte\.weight" has shape \[37, 16\], config\.json implies \[38, 16\]/],
    [(d) => editWeights(d, (m) => { m.set('transformer.h.0.attn.extra', { dtype: 'F32', shape: [1], data: new Float32Array(1) }); }), /holds "transformer\.h\.0\.attn\.extra", which GPT2LMHeadModel with 3 layers does not have/],
    [(d) => editWeights(d, (m) => { m.delete('transformer.ln_f.bias'); }), /has no "transformer\.ln_f\.bias"/],
    [(d) => editWeights(d, (m) => { const w = m.get('transformer.wte.weight')!; const c = (w.data as Float32Array).slice(); c[5] += 1; m.set('lm_head.weight', { dtype: 'F32', shape: w.shape, data: c }); }), /"lm_head\.weight" differs from "transformer\.wte\.weight" at element 5/],
    [(d) => editWeights(d, (m) => { m.set('transformer.ln_f.bias', { dtype: 'I32', shape: [16], data: new Int32Array(16) }); }), /transformer\.ln_f\.bias is I32; floating-point weights/],
    [(d) => rmSync(join(d, 'model.safetensors')), /has neither model\.safetensors nor model\.safetensors\.index\.json/],
    [(d) => rmSync(join(d, 'config.json')), /config\.json does not exist/],
  ];
  for (const [edit, re] of cases) t.throws(() => fromPretrained(variant('gpt2-tiny', edit)), { message: re });
  const idx = (f: (m: Record<string, unknown>) => void) => (d: string) => {
    const p = join(d, 'model.safetensors.index.json');
    const j = JSON.parse(readFileSync(p, 'utf8'));
    f(j.weight_map);
    writeFileSync(p, JSON.stringify(j));
  };
  t.throws(() => fromPretrained(variant('gpt2-sharded-bf16', idx((m) => { m['wte.weight'] = '../../etc/passwd.safetensors'; }))), { message: /maps "wte\.weight" to "\.\.\/\.\.\/etc\/passwd\.safetensors", not a \.safetensors file name in the folder/ });
  t.throws(() => fromPretrained(variant('gpt2-sharded-bf16', idx((m) => { delete m['wte.weight']; }))), { message: /holds "wte\.weight", which .* does not list/ });
  t.throws(() => fromPretrained(variant('gpt2-sharded-bf16', idx((m) => { m['wpe.weight'] = 'model-00002-of-00002.safetensors'; }))), { message: /holds "wpe\.weight", which .* puts in "model-00002-of-00002\.safetensors"/ });
  t.throws(() => fromPretrained(join(fixtures, 'gpt2-tiny'), { dtype: 'f16' } as never), { message: /unknown option "dtype"/ });
  t.throws(() => fromPretrained(join(fixtures, 'gpt2-tiny'), { numClasses: 2 }), { message: /numClasses is for BERT and ALBERT checkpoints/ });
});

test('savePretrained refuses models GPT-2 cannot hold, with the reason', (t) => {
  const base = { vocab: 11, dModel: 8, heads: 2, dFF: 16, layers: 2, maxSeq: 8 };
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ norm: 'post' }, /GPT-2 has no post-LN blocks/],
    [{ kvHeads: 1 }, /grouped K\/V heads/],
    [{ tiedEmbeddings: false }, /untied output head/],
    [{ factorizedEmbedding: 4 }, /factorized embedding/],
    [{ sharing: { strategy: 'delta', rank: 2 } }, /'delta' layers/],
    [{ sharing: { strategy: 'none', kvShareGroup: 2 } }, /cross-layer K\/V sharing/],
  ];
  for (const [extra, re] of cases) {
    const m = new Decoder({ ...base, ...extra } as never);
    try {
      t.throws(() => savePretrained(m, join(tmp, 'never')), { message: re });
    } finally {
      m.store.dispose();
    }
  }
  t.throws(() => savePretrained({} as never, tmp), { message: /model must be a Decoder/ });
});

// ---- BERT and ALBERT (lib/io/hf-encoder.ts) ------------------------------------------------------------------------

interface EncoderExpected extends Expected { token_type_ids: number[][]; attention_mask: number[][] }
const encExpected = (name: string) => expected(name) as EncoderExpected;

/** fromPretrained for a BERT / ALBERT folder: an Encoder. */
function encoder(dir: string, options: { numClasses?: number } = {}): Encoder {
  const m = fromPretrained(dir, options);
  if (!(m instanceof Encoder)) throw new Error(`${dir}: expected an Encoder`);
  return m;
}

/** The model's logits for the fixture's inputs: MLM logits, or class logits when it classifies; the padding mask as key lengths. */
function encoderLogits(m: Encoder, e: EncoderExpected): Float32Array {
  const [B, T] = [e.ids.length, e.ids[0].length];
  const ids = tensor(Int32Array.from(e.ids.flat()), [B, T]);
  const types = tensor(Int32Array.from(e.token_type_ids.flat()), [B, T]);
  const keyLengths = e.attention_mask.map((row) => {
    const n = row.reduce((a, b) => a + b, 0);
    if (row.some((x, i) => x !== (i < n ? 1 : 0))) throw new Error('the fixture\'s mask is not a padding mask');
    return n;
  });
  const y = m.dims.numClasses ? m.classify(ids, { keyLengths, tokenTypes: types }) : m.mlmLogits(ids, { keyLengths, tokenTypes: types });
  const out = y.dataSync() as Float32Array;
  for (const x of [ids, types, y]) x.dispose();
  return out;
}

const ENCODER_FIXTURES: [string, 'none' | 'all', number][] = [['bert-mlm', 'none', 0], ['bert-cls-bf16', 'none', 3], ['albert-mlm', 'all', 0], ['albert-cls', 'all', 2]];
for (const [name, strategy, classes] of ENCODER_FIXTURES) {
  test(`${name}: fromPretrained gives the reference ${name.startsWith('bert') ? 'BERT' : 'ALBERT'}'s logits within 1e-5`, (t) => {
    const m = encoder(join(fixtures, name));
    try {
      const e = encExpected(name);
      t.is(m.plan.strategy, strategy);
      t.is(m.dims.numClasses, classes);
      t.is(m.dims.norm, 'post');
      t.false(m.dims.finalNorm);
      t.is(m.numParameters, m.accounting().uniqueParameters, 'the closed-form count covers every BERT / ALBERT part');
      closeTo(t, encoderLogits(m, e), e.logits, name);
    } finally {
      m.store.dispose();
    }
  });
}

test('ALBERT: one stored layer serves every layer (sharing all), and its parameter count is that of one block', (t) => {
  const m = encoder(join(fixtures, 'albert-mlm'));
  try {
    t.is(m.stack.attn.length, 1);
    t.is(m.stack.ffn.length, 1);
    t.is(m.dims.layers, 3);
    t.is(m.dims.factorizedEmbedding, 16);
  } finally {
    m.store.dispose();
  }
});

for (const [name, config, arch] of [['export-bert', EXPORT_BERT_CONFIG, 'BertForMaskedLM'], ['export-albert', EXPORT_ALBERT_CONFIG, 'AlbertForSequenceClassification']] as const) {
  test(`${name}: an Encoder written by savePretrained as ${arch} gives the same logits in the reference loader, and reads back bit-identical`, (t) => {
    const m = perturbedEncoder(config);
    try {
      const e = encExpected(name);
      closeTo(t, encoderLogits(m, e), e.logits, name);
      const d = join(tmp, name);
      const r = savePretrained(m, d);
      t.is(r.architecture, arch);
      t.is(r.expanded, name === 'export-bert', 'cycle sharing is written expanded as BERT; sharing all is one ALBERT layer group');
      t.deepEqual(readFileSync(join(d, 'model.safetensors')), readFileSync(join(fixtures, name, 'model.safetensors')));
      t.deepEqual(JSON.parse(readFileSync(join(d, 'config.json'), 'utf8')), JSON.parse(readFileSync(join(fixtures, name, 'config.json'), 'utf8')));
      const back = encoder(d);
      try {
        t.is(back.plan.strategy, name === 'export-bert' ? 'none' : 'all');
        t.deepEqual(encoderLogits(back, e), encoderLogits(m, e));
      } finally {
        back.store.dispose();
      }
    } finally {
      m.store.dispose();
    }
  });
}

for (const name of ['bert-mlm', 'albert-cls']) {
  test(`round trip: ${name} read and written again holds the same tensors, bit for bit`, (t) => {
    const m = encoder(join(fixtures, name));
    try {
      const d = join(tmp, `rt-${name}`);
      t.false(savePretrained(m, d).expanded);
      const a = loadSafetensors(join(fixtures, name, 'model.safetensors')).tensors;
      const b = loadSafetensors(join(d, 'model.safetensors')).tensors;
      t.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
      for (const [k, v] of a) t.deepEqual(new Uint32Array((b.get(k)!.data as Float32Array).slice().buffer), new Uint32Array((v.data as Float32Array).slice().buffer), k);
      const c = JSON.parse(readFileSync(join(fixtures, name, 'config.json'), 'utf8')), c2 = JSON.parse(readFileSync(join(d, 'config.json'), 'utf8'));
      for (const k of ['architectures', 'model_type', 'vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads', 'intermediate_size', 'hidden_act', 'max_position_embeddings', 'type_vocab_size', 'layer_norm_eps', 'embedding_size', 'num_hidden_groups'])
        t.deepEqual(c2[k], c[k], k);
    } finally {
      m.store.dispose();
    }
  });
}

test('the tied copies ALBERT once saved are read when equal to what they copy', (t) => {
  // albert-mlm holds predictions.decoder.weight and .bias (equal to the word embedding and predictions.bias)
  const keys = [...loadSafetensors(join(fixtures, 'albert-mlm', 'model.safetensors')).tensors.keys()];
  t.true(keys.includes('predictions.decoder.weight') && keys.includes('predictions.decoder.bias'));
  const d = variant('albert-mlm', (dir) => editWeights(dir, (m) => {
    const w = m.get('predictions.decoder.bias')!;
    const c = (w.data as Float32Array).slice();
    c[3] = -c[3] || 1;
    m.set('predictions.decoder.bias', { dtype: 'F32', shape: w.shape, data: c });
  }));
  t.throws(() => fromPretrained(d), { message: /"predictions\.decoder\.bias" differs from "predictions\.bias" at element 3, but AlbertForMaskedLM ties them/ });
});

test('numClasses puts a fresh classification head on a masked-LM checkpoint; a classifier checkpoint must match it', (t) => {
  const m = encoder(join(fixtures, 'bert-mlm'), { numClasses: 2 });
  try {
    t.is(m.dims.numClasses, 2);
    t.true(m.dims.pooler && m.dims.mlmTransform);
    const e = encExpected('bert-mlm');
    // the encoder below the heads is the checkpoint's: the MLM logits are still the reference's
    const ids = tensor(Int32Array.from(e.ids.flat()), [e.ids.length, e.ids[0].length]);
    const types = tensor(Int32Array.from(e.token_type_ids.flat()), ids.shape);
    const keyLengths = e.attention_mask.map((r) => r.reduce((a, b) => a + b, 0));
    const mlm = m.mlmLogits(ids, { keyLengths, tokenTypes: types });
    closeTo(t, mlm.dataSync() as Float32Array, e.logits, 'MLM logits beside a fresh classifier');
    const cls = m.classify(ids, { keyLengths, tokenTypes: types });
    t.deepEqual(cls.shape, [3, 2]);
    t.true([...(cls.dataSync() as Float32Array)].every(Number.isFinite));
    for (const x of [ids, types, mlm, cls]) x.dispose();
  } finally {
    m.store.dispose();
  }
  t.throws(() => fromPretrained(join(fixtures, 'albert-cls'), { numClasses: 3 }), { message: /options\.numClasses is 3, but .* describes a classifier of 2 classes/ });
  t.throws(() => fromPretrained(join(fixtures, 'albert-cls'), { numClasses: 1 }), { message: /options\.numClasses must be an integer >= 2/ });
});

test('fromPretrained refuses BERT / ALBERT checkpoints the Encoder cannot represent, naming the key', (t) => {
  const cases: [string, (d: string) => void, RegExp][] = [
    ['bert-mlm', (d) => editConfig(d, (c) => { c.architectures = ['BertForPreTraining']; }), /"architectures" is \["BertForPreTraining"\], .*supported for BERT: "BertForMaskedLM", "BertForSequenceClassification"/],
    ['bert-mlm', (d) => editConfig(d, (c) => { c.hidden_act = 'relu'; }), /"hidden_act" is "relu", which sharedformer's Encoder does not implement/],
    ['bert-mlm', (d) => editConfig(d, (c) => { c.position_embedding_type = 'relative_key'; }), /"position_embedding_type" is "relative_key"/],
    ['bert-mlm', (d) => editConfig(d, (c) => { c.is_decoder = true; }), /"is_decoder" is true/],
    ['bert-mlm', (d) => editConfig(d, (c) => { c.layer_norm_eps = -1; }), /"layer_norm_eps" is -1/],
    ['bert-mlm', (d) => editConfig(d, (c) => { c.num_hidden_layers = 3; }), /has no "bert\.encoder\.layer\.2\.attention\.self\.query\.weight"/],
    ['bert-mlm', (d) => editConfig(d, (c) => { c.type_vocab_size = 3; }), /"bert\.embeddings\.token_type_embeddings\.weight" has shape \[2, 32\], config\.json implies \[3, 32\]/],
    ['bert-mlm', (d) => editWeights(d, (m) => { m.set('bert.encoder.layer.0.extra', { dtype: 'F32', shape: [1], data: new Float32Array(1) }); }), /holds "bert\.encoder\.layer\.0\.extra", which BertForMaskedLM with 2 layers does not have/],
    ['bert-mlm', (d) => editWeights(d, (m) => { m.delete('cls.predictions.bias'); }), /has no "cls\.predictions\.bias"/],
    ['albert-mlm', (d) => editConfig(d, (c) => { c.num_hidden_groups = 3; }), /"num_hidden_groups" is 3/],
    ['albert-mlm', (d) => editConfig(d, (c) => { c.inner_group_num = 2; }), /"inner_group_num" is 2/],
    ['albert-mlm', (d) => editConfig(d, (c) => { c.architectures = ['BertForMaskedLM']; }), /supported for ALBERT: "AlbertForMaskedLM", "AlbertForSequenceClassification"/],
    ['albert-cls', (d) => editConfig(d, (c) => { c.problem_type = 'multi_label_classification'; }), /"problem_type" is "multi_label_classification"/],
    ['albert-cls', (d) => editConfig(d, (c) => { c.embedding_size = 8; }), /"albert\.embeddings\.word_embeddings\.weight" has shape \[19, 16\], config\.json implies \[19, 8\]/],
  ];
  for (const [name, edit, re] of cases) t.throws(() => fromPretrained(variant(name, edit)), { message: re }, name);
});

test('savePretrained refuses Encoders BERT and ALBERT cannot hold, with the reason', (t) => {
  const ok = { vocab: 11, dModel: 8, heads: 2, dFF: 16, layers: 2, maxSeq: 8, norm: 'post', typeVocab: 2, embeddingNorm: true, finalNorm: false, mlmTransform: true };
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ norm: 'pre' }, /BERT and ALBERT have no pre-LN blocks/],
    [{ embeddingNorm: false }, /embeddings without their LayerNorm/],
    [{ finalNorm: true }, /final LayerNorm after the last layer/],
    [{ typeVocab: undefined }, /without token-type embeddings/],
    [{ mlmTransform: false }, /neither a classifier .* nor the MLM head/],
    [{ kvHeads: 1 }, /grouped K\/V heads/],
    [{ sharing: { strategy: 'basis', rank: 2 } }, /'basis' layers/],
  ];
  for (const [extra, re] of cases) {
    const m = new Encoder({ ...ok, ...extra } as never);
    try {
      t.throws(() => savePretrained(m, join(tmp, 'never')), { message: re });
    } finally {
      m.store.dispose();
    }
  }
  // an unfactorized 'all' encoder is written as ALBERT (an identity embedding_hidden_mapping_in) with the same logits
  const m = perturbedEncoder({ ...ok, sharing: { strategy: 'all' }, seed: 3 } as never);
  try {
    const d = join(tmp, 'albert-identity');
    t.is(savePretrained(m, d).architecture, 'AlbertForMaskedLM');
    const back = encoder(d);
    try {
      const e = { ids: [[1, 2, 3, 4], [5, 6, 7, 8]], token_type_ids: [[0, 0, 1, 1], [0, 1, 0, 1]], attention_mask: [[1, 1, 1, 1], [1, 1, 1, 0]] } as EncoderExpected;
      t.deepEqual(encoderLogits(back, e), encoderLogits(m, e));
    } finally {
      back.store.dispose();
    }
  } finally {
    m.store.dispose();
  }
});
