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
import { loadSafetensors, saveSafetensors } from '../lib/io/safetensors.ts';
import { tensor } from '../lib/tensor.ts';
import { EXPORT_CONFIG } from '../scripts/hf_export_fixture.ts';

const test = anyTest.serial;
const fixtures = fileURLToPath(new URL('./fixtures/hf/', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'sf-hf-'));
anyTest.after.always(() => rmSync(tmp, { recursive: true, force: true }));

interface Expected { ids: number[][]; logits: number[]; shape: number[] }
const expected = (name: string) => JSON.parse(readFileSync(join(fixtures, name, 'expected.json'), 'utf8')) as Expected;

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
    const m = fromPretrained(join(fixtures, name));
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
    const back = fromPretrained(d);
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
  const m = fromPretrained(join(fixtures, 'gpt2-tiny'));
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
    [(d) => editConfig(d, (c) => { c.model_type = 'bert'; }), /"model_type" "bert" is not supported; supported: "gpt2"/],
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
