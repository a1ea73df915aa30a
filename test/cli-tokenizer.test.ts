// --tokenizer FILE on the command line: train with a Hugging Face tokenizer.json, the checkpoint embeds it (and its
// SHA-256), eval and generate read it back and refuse a different one, resume refuses a different one, compare takes
// it; generateText streams subword text whole.
import anyTest from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { run, jsonLines } from './helpers/cli.ts';
import { loadSafetensors } from '../lib/io/safetensors.ts';
import { SubwordTokenizer, tokenizerHash } from '../lib/data/tokenizer.ts';
import { generateText } from '../lib/cli/generate.ts';
import { loadModel } from '../lib/cli/checkpoint.ts';

const test = anyTest.serial;
const dir = mkdtempSync(join(tmpdir(), 'sf-cli-tok-'));
anyTest.after.always(() => rmSync(dir, { recursive: true, force: true }));

const fixtures = new URL('./fixtures/tokenizers/', import.meta.url);
const bpe = join(dir, 'bpe.json'), wordpiece = join(dir, 'wordpiece.json');
copyFileSync(new URL('byte-bpe.json', fixtures), bpe);
copyFileSync(new URL('wordpiece.json', fixtures), wordpiece);
const textFile = join(dir, 'small.txt');
const sentences = ['hello world. ', 'the world said hello.\n', 'hello the world! ', 'é and 😀 too. '];
const text = Array.from({ length: 150 }, (_, i) => sentences[(i * 7 + (i >> 3)) % 4]).join('');
writeFileSync(textFile, text);
const TINY = ['--d-model', '16', '--heads', '2', '--d-ff', '32', '--layers', '2', '--max-seq', '16', '--batch', '4', '--quiet'];
const ckpt = join(dir, 'bpe.safetensors');

test('train --tokenizer: the model has the tokenizer\'s vocabulary, counts tokens, and the checkpoint embeds the file', async (t) => {
  const r = await run(['train', '--data', textFile, '--tokenizer', bpe, '--out', ckpt, '--steps', '6', '--eval-every', '3', '--json', ...TINY]);
  t.is(r.code, 0, r.err);
  const start = jsonLines(r.out).find((l) => l.type === 'start')!;
  const tok = SubwordTokenizer.fromFile(bpe);
  const n = tok.encode(text, { addSpecialTokens: false }).length;
  t.is(start.tokens, n);
  t.true(n < [...text].length, `${n} tokens for ${[...text].length} characters: the merges apply`);
  t.is(start.tokenizer, tokenizerHash(readFileSync(bpe, 'utf8')));
  t.is((start.model as { vocab: number }).vocab, 269);
  const md = loadSafetensors(ckpt).metadata;
  const recorded = JSON.parse(md.tokenizer) as { type: string; sha256: string; json: string };
  t.is(recorded.type, 'huggingface');
  t.is(recorded.json, readFileSync(bpe, 'utf8'));
  t.is(recorded.sha256, tokenizerHash(recorded.json));
});

test('eval and generate use the embedded tokenizer, accept the same file and refuse another one by name', async (t) => {
  const e = await run(['eval', '--model', ckpt, '--batches', '2']);
  t.is(e.code, 0, e.err);
  t.regex(e.out, /validation loss \d+\.\d+ nats\/token {2}\d+\.\d+ bits\/token/);
  t.regex(e.out, /batches of 4 x 16 tokens/);
  t.is((await run(['eval', '--model', ckpt, '--batches', '1', '--tokenizer', bpe])).code, 0);
  const bad = await run(['eval', '--model', ckpt, '--tokenizer', wordpiece]);
  t.is(bad.code, 1);
  t.regex(bad.err, /--tokenizer .*wordpiece\.json is the WordPiece tokenizer with SHA-256 [0-9a-f]{12}\.\.\., but --model .*bpe\.safetensors was trained with the BPE tokenizer/);
  const g = await run(['generate', '--model', ckpt, '--prompt', 'hello', '--tokens', '8', '--temperature', '0', '--json', '--tokenizer', bpe]);
  t.is(g.code, 0, g.err);
  const out = jsonLines(g.out)[0];
  t.is(out.type, 'generate');
  t.is(typeof out.text, 'string');
  const gbad = await run(['generate', '--model', ckpt, '--prompt', 'hello', '--tokenizer', wordpiece]);
  t.is(gbad.code, 1);
  t.regex(gbad.err, /was trained with the BPE tokenizer/);
});

test('a character checkpoint refuses --tokenizer; resume refuses a different tokenizer; --vocab-from-data conflicts', async (t) => {
  const chars = join(dir, 'chars.safetensors');
  t.is((await run(['train', '--data', textFile, '--out', chars, '--steps', '2', ...TINY])).code, 0);
  const r = await run(['eval', '--model', chars, '--tokenizer', bpe]);
  t.is(r.code, 1);
  t.regex(r.err, /was trained with a character tokenizer/);
  const resume = await run(['train', '--resume', ckpt, '--out', join(dir, 'r.safetensors'), '--steps', '8', '--tokenizer', wordpiece, '--quiet']);
  t.is(resume.code, 1);
  t.regex(resume.err, /--tokenizer .*wordpiece\.json is the WordPiece tokenizer .* but --resume .*bpe\.safetensors was trained with the BPE tokenizer/);
  const ok = await run(['train', '--resume', ckpt, '--out', join(dir, 'r.safetensors'), '--steps', '8', '--tokenizer', bpe, '--quiet']);
  t.is(ok.code, 0, ok.err);
  const both = await run(['train', '--data', textFile, '--out', join(dir, 'x.safetensors'), '--tokenizer', bpe, '--vocab-from-data', ...TINY]);
  t.is(both.code, 2);
  t.regex(both.err, /either --tokenizer FILE or --vocab-from-data/);
  const missing = await run(['train', '--data', textFile, '--out', join(dir, 'x.safetensors'), '--tokenizer', join(dir, 'nope.json'), ...TINY]);
  t.is(missing.code, 1);
  t.regex(missing.err, /--tokenizer .*nope\.json: cannot read .*no such file/);
  writeFileSync(join(dir, 'bad.json'), '{"model": {"type": "WordLevel", "vocab": {}}}');
  const unsupported = await run(['train', '--data', textFile, '--out', join(dir, 'x.safetensors'), '--tokenizer', join(dir, 'bad.json'), ...TINY]);
  t.is(unsupported.code, 1);
  t.regex(unsupported.err, /model\.type "WordLevel"; supported: BPE, WordPiece, Unigram/);
});

test('compare --tokenizer trains every strategy on the subword tokens', async (t) => {
  const out = join(dir, 'cmp');
  const r = await run(['compare', '--data', textFile, '--tokenizer', bpe, '--strategies', 'none,all', '--steps', '3', '--out', out, '--json', ...TINY]);
  t.is(r.code, 0, r.err);
  const start = jsonLines(r.out).find((l) => l.type === 'start')!;
  t.is(start.unit, 'token');
  t.is((start.model as { vocab: number }).vocab, 269);
});

test('generateText with a subword tokenizer streams the decoded text: the chunks join to the returned text', async (t) => {
  const { model, tokenizer } = loadModel(ckpt, 'cpu');
  try {
    for (const seed of [1, 2, 3]) {
      const chunks: string[] = [];
      const textOut = await generateText(model, tokenizer, 'hello', 24, { temperature: 1, seed, onText: (s) => chunks.push(s) });
      t.is(chunks.join(''), textOut);
    }
  } finally {
    model.store.dispose();
  }
});

test('tokenizer train writes a byte-level BPE tokenizer.json that train --tokenizer then uses; its errors', async (t) => {
  const out = join(dir, 'trained.json');
  const r = await run(['tokenizer', 'train', '--data', textFile, '--vocab', '280', '--out', out, '--json']);
  t.is(r.code, 0, r.err);
  const line = jsonLines(r.out)[0];
  t.is(line.type, 'tokenizer');
  t.is(line.vocab, 280);
  t.is(line.merges, 280 - 257);
  t.is(line.bytes, Buffer.byteLength(text, 'utf8'));
  t.true((line.mbPerSecond as number) > 0);
  const tok = SubwordTokenizer.fromFile(out);
  t.is(tok.model, 'BPE');
  t.is(tok.decode(tok.encode(text, { addSpecialTokens: false })), text);
  t.is(line.sha256, tok.sha256);
  const human = await run(['tokenizer', 'train', '--data', textFile, '--vocab', '1000', '--out', join(dir, 't2.json'), '--special-tokens', '<s>,</s>']);
  t.is(human.code, 0, human.err);
  // Four sentences repeated: the pairs run out before 1000 tokens.
  t.regex(human.out, /vocabulary \d+ = 2 special \+ 256 bytes \+ \d+ merges \(the text has no more pairs to merge; 1,000 asked\)/);
  t.regex(human.out, /MB\/s/);
  const m = join(dir, 'm.safetensors');
  t.is((await run(['train', '--data', textFile, '--tokenizer', out, '--out', m, '--steps', '2', ...TINY])).code, 0);
  for (const [argv, code, re] of [
    [['tokenizer'], 2, /tokenizer needs the verb 'train'/],
    [['tokenizer', 'fit', '--data', textFile], 2, /unknown verb 'fit' of tokenizer; verbs: train/],
    [['tokenizer', 'train', '--data', textFile, '--vocab', '100', '--out', join(dir, 'x.json')], 2, /vocabSize must be an integer in \[257/],
    [['tokenizer', 'train', '--data', textFile, '--vocab', '300'], 2, /--out FILE .* is required/],
    [['tokenizer', 'train', '--data', textFile, '--vocab', '300', '--out', join(dir, 'no', 'x.json')], 1, /the folder .* does not exist/],
    [['tokenizer', 'train', '--data', join(dir, 'nope.txt'), '--vocab', '300', '--out', join(dir, 'x.json')], 1, /cannot read --data .*no such file/],
  ] as const) {
    const e = await run([...argv]);
    t.is(e.code, code, `${argv.join(' ')}: ${e.err}`);
    t.regex(e.err, re);
  }
  t.regex((await run(['help', 'tokenizer'])).out, /sharedformer tokenizer train --data FILE --vocab N --out tokenizer\.json/);
});
