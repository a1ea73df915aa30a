// Writes test/fixtures/hf/export-*/: seeded models saved by savePretrained — export-shared, a Decoder with sharing
// 'cycle' (2 unique blocks over 4 layers, written as GPT-2 with its layers expanded); export-bert, a post-LN Encoder
// with 'cycle' sharing, the exact GELU and the MLM head (written as BertForMaskedLM, expanded); export-albert, a
// factorized Encoder with sharing 'all' and a classifier (written as AlbertForSequenceClassification, one layer group).
// scripts/hf_fixtures.py then computes, with its own loader and forward passes, the logits that test/hf.test.ts
// compares with the models'. Run: npx tsx scripts/hf_export_fixture.ts
import { fileURLToPath } from 'node:url';
import { Decoder } from '../lib/models/decoder.ts';
import { Encoder, type EncoderConfig } from '../lib/models/encoder.ts';
import { savePretrained } from '../lib/io/hf.ts';
import { tensor } from '../lib/tensor.ts';

export const EXPORT_CONFIG = { vocab: 31, dModel: 16, heads: 2, dFF: 40, layers: 4, maxSeq: 20, sharing: { strategy: 'cycle' as const, unique: 2 }, seed: 11 };

const BERT_LIKE = { norm: 'post', typeVocab: 2, embeddingNorm: true, finalNorm: false, layerNormEps: 1e-12 } as const;
export const EXPORT_BERT_CONFIG: EncoderConfig = {
  ...BERT_LIKE, vocab: 27, dModel: 16, heads: 2, dFF: 24, layers: 4, maxSeq: 14, sharing: { strategy: 'cycle', unique: 2 },
  activation: 'gelu_erf', mlmTransform: true, seed: 12,
};
export const EXPORT_ALBERT_CONFIG: EncoderConfig = {
  ...BERT_LIKE, vocab: 33, dModel: 16, heads: 4, dFF: 20, layers: 3, maxSeq: 12, factorizedEmbedding: 8, sharing: { strategy: 'all' },
  activation: 'gelu_tanh', numClasses: 3, pooler: true, seed: 13,
};

/**
 * An Encoder of `config` whose every parameter is replaced by seeded values of order 0.3 (LayerNorm gains around 1),
 * so that a wrong mapping changes the logits by far more than the tolerance (the default initialisation, std 0.02 and
 * zero biases, would leave the logits near 0).
 */
export function perturbedEncoder(config: EncoderConfig): Encoder {
  const m = new Encoder(config);
  let s = (config.seed ?? 0) * 2654435761 >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const sd: Record<string, ReturnType<typeof tensor>> = {};
  for (const p of m.parameters()) {
    const a = new Float32Array(p.size);
    const gain = /(^|\.)ln\.weight$|^emb_ln\.weight$/.test(p.name);
    for (let i = 0; i < a.length; i++) a[i] = (gain ? 1 : 0) + (uniform() - 0.5) * 0.6;
    sd[p.name] = tensor(a, p.shape);
  }
  m.loadStateDict(sd);
  for (const t of Object.values(sd)) t.dispose();
  return m;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = (name: string) => fileURLToPath(new URL(`../test/fixtures/hf/${name}/`, import.meta.url));
  const m = new Decoder(EXPORT_CONFIG);
  console.log(savePretrained(m, dir('export-shared')));
  m.store.dispose();
  for (const [name, config] of [['export-bert', EXPORT_BERT_CONFIG], ['export-albert', EXPORT_ALBERT_CONFIG]] as const) {
    const e = perturbedEncoder(config);
    console.log(savePretrained(e, dir(name)));
    e.store.dispose();
  }
}
