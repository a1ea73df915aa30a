// trainBpe (lib/data/bpe-train.ts, merges by native/core/bpe.cpp) against the Python `tokenizers` library's
// BpeTrainer on the same text (test/fixtures/tokenizers/bpe-train.json, from scripts/tokenizer_fixtures.py): the same
// vocabulary and the same merges in the same order; the trained tokenizer round-trips text; and the errors of
// trainBpe and of the native bpeTrain for bad arguments.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { trainBpe, byteToChar } from '../lib/data/bpe-train.ts';
import { generateCorpus } from '../lib/data/corpus.ts';
import { native } from '../lib/native.ts';

const fixture = JSON.parse(readFileSync(new URL('./fixtures/tokenizers/bpe-train.json', import.meta.url), 'utf8')) as {
  generator: string; tail: string; vocab_size: number; vocab: Record<string, number>; merges: [string, string][];
};

test(`trainBpe makes the vocabulary and merges of the Python library's trainer (${fixture.generator}), in order`, async (t) => {
  const text = generateCorpus(60000, 1) + fixture.tail;
  const r = await trainBpe(text, { vocabSize: fixture.vocab_size });
  const model = JSON.parse(r.json).model as { vocab: Record<string, number>; merges: [string, string][] };
  t.is(r.merges, fixture.merges.length);
  t.deepEqual(model.merges, fixture.merges);
  t.deepEqual(model.vocab, fixture.vocab);
  t.is(r.tokenizer.vocabSize, fixture.vocab_size);
  t.is(r.bytes, Buffer.byteLength(text, 'utf8'));
  // The tokenizer decodes what it encodes, in fewer tokens than bytes.
  const ids = r.tokenizer.encode(text, { addSpecialTokens: false });
  t.is(r.tokenizer.decode(ids), text);
  t.true(ids.length < r.bytes / 2, `${ids.length} tokens for ${r.bytes} bytes`);
});

test('the special tokens come first, then the 256 byte characters in code-point order; the GPT-2 byte table', async (t) => {
  const table = byteToChar();
  t.is(table[0x20], 'Ġ');
  t.is(table[0x0a], 'Ċ');
  t.is(table[0x41], 'A');
  t.is(table[0xad], '\u0143'); // the soft hyphen is not printable: U+0100 + its rank among the moved bytes (67)
  t.is(new Set(table).size, 256);
  const r = await trainBpe('aaa bbb aaa', { vocabSize: 260, specialTokens: ['<s>', '</s>'] });
  const vocab = JSON.parse(r.json).model.vocab as Record<string, number>;
  t.is(vocab['<s>'], 0);
  t.is(vocab['</s>'], 1);
  t.is(vocab['!'], 2);
  t.is(Object.keys(vocab).length, 260);
  t.deepEqual(r.tokenizer.specialTokenIds, [0, 1]);
  // 'aaa' (2x) and ' aaa', ' bbb': pairs a a (6), then ...: the first merge is the most frequent pair.
  t.deepEqual(JSON.parse(r.json).model.merges[0], ['a', 'a']);
});

test('minFrequency stops the merges; a corpus that runs out of pairs gives a smaller vocabulary', async (t) => {
  const r = await trainBpe('ab ab ab cd', { vocabSize: 1000, minFrequency: 3 });
  // Words 'ab' x 1, ' ab' x 2, ' cd' x 1: (a, b) occurs 3 times and is merged; (Ġ, ab) 2 times, below 3.
  t.deepEqual(JSON.parse(r.json).model.merges, [['a', 'b']]);
  t.deepEqual(JSON.parse((await trainBpe('ab ab ab cd', { vocabSize: 1000, minFrequency: 2 })).json).model.merges.slice(0, 2), [['a', 'b'], ['Ġ', 'ab']]);
  const all = await trainBpe('ab', { vocabSize: 1000 });
  t.is(all.merges, 1);
  t.is(all.tokenizer.vocabSize, 258);
  const none = await trainBpe('', { vocabSize: 300 });
  t.is(none.merges, 0);
});

test('trainBpe and bpeTrain reject bad arguments with errors that name them', async (t) => {
  await t.throwsAsync(trainBpe('x', { vocabSize: 100 }), { instanceOf: RangeError, message: /vocabSize must be an integer in \[257, 2\^31 - 1\].*got 100/ });
  await t.throwsAsync(trainBpe('x', { vocabSize: 300, specialTokens: ['a'] }), { message: /special token "a" is one of the 256 byte tokens/ });
  await t.throwsAsync(trainBpe('x', { vocabSize: 300, specialTokens: ['<s>', '<s>'] }), { message: /duplicate/ });
  await t.throwsAsync(trainBpe('x', { vocabSize: 300, minFrequency: -1 }), { message: /minFrequency must be a non-negative integer/ });
  await t.throwsAsync(trainBpe('x', { vocabSize: 300, vocab: 3 } as never), { message: /unknown option "vocab"/ });
  await t.throwsAsync(trainBpe(42 as never, { vocabSize: 300 }), { message: /text must be a string or an array of strings/ });
  const n = native();
  const ok = () => [new Int32Array([0, 1]), new Float64Array([0, 2]), new Float64Array([1]), ['a', 'b'], 10, 0] as const;
  const call = (i: number, v: unknown) => { const a: unknown[] = [...ok()]; a[i] = v; return () => (n.bpeTrain as (...x: unknown[]) => unknown)(...a); };
  t.throws(call(0, [0, 1]), { instanceOf: TypeError, message: /symbols must be an Int32Array/ });
  t.throws(call(1, new Float64Array([0, 3])), { instanceOf: RangeError, message: /offsets must run from 0 to symbols\.length = 2/ });
  t.throws(call(2, new Float64Array([0])), { instanceOf: RangeError, message: /counts\[0\] = 0 is not a positive safe integer/ });
  t.throws(call(0, new Int32Array([0, 2])), { instanceOf: RangeError, message: /symbols\[1\] = 2 is outside the 2 tokens/ });
  t.throws(call(3, ['a', 'a']), { instanceOf: RangeError, message: /tokens\[1\] = "a" appears twice/ });
  t.throws(call(4, 1.5), { instanceOf: RangeError, message: /vocabSize must be an integer/ });
  t.throws(call(1, new Float64Array([0, 1, 2])), { instanceOf: RangeError, message: /offsets has 3 entries for 1 words/ });
  const merges = await (n.bpeTrain as (...x: unknown[]) => Promise<Int32Array>)(...ok());
  t.deepEqual([...merges], [0, 1, 2]);
});
