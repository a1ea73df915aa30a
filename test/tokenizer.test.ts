// Subword tokenizers (lib/data/tokenizer.ts): encode and decode against the Python `tokenizers` library
// (test/fixtures/tokenizers/expected.json, written by scripts/tokenizer_fixtures.py from three tokenizer.json files
// built from the format's documentation), known answers worked out by hand from the algorithms' definitions, the
// checkpoint description and its hash, and the errors for bad files and bad ids.
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { SubwordTokenizer, tokenizerFromJSON, tokenizerHash } from '../lib/data/tokenizer.ts';
import { CharTokenizer, TokenDataset } from '../lib/data/index.ts';

const dir = new URL('./fixtures/tokenizers/', import.meta.url);
const fixture = (name: string) => readFileSync(new URL(`${name}.json`, dir), 'utf8');
interface Row { text: string; ids: number[]; tokens: string[]; ids_special: number[]; decode: string; decode_skip: string }
const expected = JSON.parse(fixture('expected')) as { generator: string; cases: Record<string, { vocab_size: number; rows: Row[] }> };
const load = (name: string) => SubwordTokenizer.fromString(fixture(name));

for (const [name, c] of Object.entries(expected.cases)) {
  test(`${name}: encode, tokens and decode equal the Python library's (${expected.generator}) on ${c.rows.length} strings`, (t) => {
    const tok = load(name);
    t.is(tok.vocabSize, c.vocab_size);
    for (const r of c.rows) {
      const what = `${name} ${JSON.stringify(r.text)}`;
      t.deepEqual([...tok.encode(r.text, { addSpecialTokens: false })], r.ids, `${what}: ids`);
      t.deepEqual(tok.tokenize(r.text, { addSpecialTokens: false }), r.tokens, `${what}: tokens`);
      t.deepEqual([...tok.encode(r.text)], r.ids_special, `${what}: ids with special tokens (the default)`);
      t.is(tok.decode(r.ids_special), r.decode, `${what}: decode`);
      t.is(tok.decode(r.ids_special, { skipSpecialTokens: true }), r.decode_skip, `${what}: decode skipping special tokens`);
    }
  });
}

// Known answers from the definitions, independent of any implementation.
test('byte-level BPE (GPT-2): bytes map to printable characters, merges apply in rank order, a space joins the next word', (t) => {
  const tok = load('byte-bpe');
  // Ids 0..255 are the bytes; the merges follow in order: h e=256, l l=257, he ll=258, hell o=259, Ġ w=260, o r=261,
  // Ġw or=262, Ġwor l=263, Ġworl d=264, Ã ©=265, Ġ t=266, Ġt he=267.
  t.deepEqual([...tok.encode('hello world')], [259, 264]);
  t.deepEqual(tok.tokenize('hello world'), ['hello', 'Ġworld']);
  // GPT-2's pattern keeps the last space of a run with the next word: 'hello', ' ', ' world', '!'.
  t.deepEqual([...tok.encode('hello  world!')], [259, 32, 264, 33]);
  // é is C3 A9: 'Ã' '©' and their merge; 😀 is F0 9F 98 80: 'ð', and three bytes outside the printable ranges, which
  // map to U+0100 + their rank among those bytes (0x9F -> U+0141 'Ł', 0x98 -> U+013A 'ĺ', 0x80 -> U+0122 'Ģ').
  t.deepEqual(tok.tokenize('é😀'), ['Ã©', 'ð', 'Ł', 'ĺ', 'Ģ']);
  t.deepEqual([...tok.encode('é😀')], [265, 0xf0, 0x9f, 0x98, 0x80]);
  t.is(tok.decode([265, 0xf0, 0x9f, 0x98, 0x80]), 'é😀');
  // 'the the': 'the' has no merge t+he, ' the' has Ġt+he.
  t.deepEqual(tok.tokenize('the the'), ['t', 'he', 'Ġthe']);
  // The added special token is matched in the text before the model runs, and skipped on request.
  t.deepEqual([...tok.encode('hello<|endoftext|>world')].slice(0, 2), [259, 268]);
  t.is(tok.decode([259, 268, 264], { skipSpecialTokens: true }), 'hello world');
  t.deepEqual(tok.specialTokenIds, [268]);
});

test('WordPiece (BERT): lower case, accents stripped, CJK split, greedy longest match, an unmatched word is one [UNK]', (t) => {
  const tok = load('wordpiece');
  t.deepEqual(tok.tokenize('Unaffable running! Café 東京', { addSpecialTokens: false }), ['un', '##aff', '##able', 'run', '##ning', '!', 'cafe', '[UNK]', '京']);
  // [CLS] = 2, [SEP] = 3 around the sequence.
  t.deepEqual([...tok.encode('the the')], [2, 13, 13, 3]);
  // 'unx': 'un' matches, '##x' does not: the whole word is [UNK], not 'un' [UNK].
  t.deepEqual(tok.tokenize('unx the runs', { addSpecialTokens: false }), ['[UNK]', 'the', 'run', '##s']);
  t.is(tok.decode([2, 5, 6, 7, 10, 3], { skipSpecialTokens: true }), 'unaffable!');
});

test('Unigram (SentencePiece): the segmentation of highest total score, not the longest first match', (t) => {
  const tok = load('unigram');
  // '▁ab' + 'c' scores -1 - 5 = -6; '▁a' + 'bc' scores -1 - 1 = -2: Viterbi takes the second.
  t.deepEqual(tok.tokenize('abc', { addSpecialTokens: false }), ['▁a', 'bc']);
  // '▁hello' (-5.5) beats '▁he' + 'llo' (-6).
  t.deepEqual([...tok.encode('Hello abc', { addSpecialTokens: false })], [11, 5, 6]);
  // Unknown characters become <unk> (id 1), consecutive ones fused into one.
  t.deepEqual([...tok.encode('xxy abc', { addSpecialTokens: false })], [4, 1, 5, 6]);
  // NFKD folds the full-width letters to ASCII.
  t.deepEqual([...tok.encode('ＡＢＣ', { addSpecialTokens: false })], [5, 6]);
  t.is(tok.decode([5, 6, 4, 10]), 'abc b');
});

test('toJSON embeds the file and its SHA-256; fromJSON rebuilds the same tokenizer and refuses an altered one', (t) => {
  const text = fixture('wordpiece');
  const tok = SubwordTokenizer.fromString(text);
  const j = tok.toJSON();
  t.is(j.type, 'huggingface');
  t.is(j.sha256, tokenizerHash(text));
  t.regex(j.sha256, /^[0-9a-f]{64}$/);
  const back = tokenizerFromJSON(JSON.parse(JSON.stringify(j)));
  t.true(back instanceof SubwordTokenizer);
  t.deepEqual([...back.encode('unaffable running')], [...tok.encode('unaffable running')]);
  const altered = { ...j, json: j.json.replace('"##aff"', '"##aft"') };
  t.throws(() => tokenizerFromJSON(altered), { message: /SHA-256 is [0-9a-f]{64}, not the recorded/ });
  t.true(tokenizerFromJSON(CharTokenizer.fromText('ab').toJSON()) instanceof CharTokenizer);
  t.throws(() => tokenizerFromJSON({ type: 'sentencepiece' }), { message: /unknown tokenizer type "sentencepiece"/ });
});

test('fromFile reads a file; bad files and unsupported settings are refused with errors that name them', (t) => {
  const d = mkdtempSync(join(tmpdir(), 'sf-tok-'));
  try {
    const p = join(d, 'tokenizer.json');
    writeFileSync(p, fixture('byte-bpe'));
    t.is(SubwordTokenizer.fromFile(p).model, 'BPE');
    t.throws(() => SubwordTokenizer.fromFile(join(d, 'missing.json')), { message: /cannot read .*missing\.json: no such file/ });
    t.throws(() => SubwordTokenizer.fromFile(d), { message: /it is a directory/ });
    writeFileSync(p, '{"model": ');
    t.throws(() => SubwordTokenizer.fromFile(p), { message: /tokenizer\.json is not JSON/ });
    const spec = JSON.parse(fixture('wordpiece'));
    t.throws(() => SubwordTokenizer.fromString(JSON.stringify({ ...spec, model: { ...spec.model, type: 'WordLevel' } })), { message: /model\.type "WordLevel"; supported: BPE, WordPiece, Unigram/ });
    t.throws(() => SubwordTokenizer.fromString(JSON.stringify({ ...spec, truncation: { max_length: 512 } })), { message: /sets "truncation"/ });
    t.throws(() => SubwordTokenizer.fromString(JSON.stringify({ ...spec, padding: { strategy: 'BatchLongest' } })), { message: /sets "padding"/ });
    t.throws(() => SubwordTokenizer.fromString(JSON.stringify({ version: '1.0' })), { message: /no "model" object/ });
    t.throws(() => SubwordTokenizer.fromString('[]'), { message: /not a JSON object/ });
    t.throws(() => SubwordTokenizer.fromString(42 as unknown as string), { message: /json must be a string, got 42/ });
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test('encode and decode check their arguments: ids outside the vocabulary are errors naming the id and position', (t) => {
  const tok = load('wordpiece');
  t.throws(() => tok.decode([2, 19, 3]), { message: /id 19 at position 1 is not in the vocabulary \(ids in \[0, 19\)\)/ });
  t.throws(() => tok.decode([2, -1]), { message: /id -1 at position 1/ });
  t.throws(() => tok.decode([1.5]), { message: /id 1\.5 at position 0/ });
  t.throws(() => tok.decode('abc' as unknown as number[]), { message: /ids must be an array of integers/ });
  t.throws(() => tok.encode(5 as unknown as string), { message: /SubwordTokenizer\.encode: text must be a string, got 5/ });
  t.throws(() => tok.encode('a', { addSpecialTokens: 'yes' as unknown as boolean }), { message: /options\.addSpecialTokens must be a boolean/ });
  t.is(tok.decode([]), '');
  t.is(tok.decode(new Int32Array([13, 13])), 'the the');
});

test('TokenDataset.fromText encodes a corpus without special tokens, with the tokenizer\'s vocabulary size', (t) => {
  const tok = load('byte-bpe');
  const text = 'hello world the world '.repeat(20);
  const data = TokenDataset.fromText(text, tok);
  t.is(data.vocabSize, tok.vocabSize);
  t.deepEqual([...data.train, ...data.val], [...tok.encode(text, { addSpecialTokens: false })]);
  const wp = load('wordpiece');
  const d2 = TokenDataset.fromText('the the the the the the the the the the', wp);
  t.false([...d2.train, ...d2.val].includes(2), 'no [CLS] in a corpus');
});
