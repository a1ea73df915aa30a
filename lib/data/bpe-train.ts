// bpe-train.ts — training a byte-level BPE tokenizer (GPT-2's scheme) on a corpus, written as a Hugging Face
// tokenizer.json that SubwordTokenizer, the Python `tokenizers` library and `transformers` read. The pre-tokenization
// (GPT-2's pattern over each line, bytes mapped to GPT-2's printable characters, distinct words counted) runs here;
// the merges are made by native code (native/core/bpe.cpp, the algorithm of the Python library's BpeTrainer) off the
// JavaScript thread. test/bpe-train.test.ts checks the result against the Python library's trainer on the same text.
import { native } from '../native.ts';
import { describe } from '../validate.ts';
import { SubwordTokenizer } from './tokenizer.ts';

/** Options of trainBpe. */
export interface TrainBpeOptions {
  /** Tokens in the vocabulary: special tokens + the 256 byte tokens + merges (at least specials + 256). */
  vocabSize: number;
  /** Added tokens marked special, ids 0, 1, ... in this order (default ['<|endoftext|>']). */
  specialTokens?: string[];
  /** A pair is merged only if it occurs at least this often (default 0: any pair that occurs). */
  minFrequency?: number;
}

/** What trainBpe returns: the tokenizer, its tokenizer.json text, and what the training saw and took. */
export interface TrainBpeResult {
  tokenizer: SubwordTokenizer;
  /** The tokenizer.json text. */
  json: string;
  /** Merges learned (the vocabulary is smaller than asked when the corpus runs out of pairs). */
  merges: number;
  /** Distinct pre-tokenized words, and their occurrences. */
  words: number;
  occurrences: number;
  /** UTF-8 bytes of the corpus. */
  bytes: number;
  /** Wall-clock seconds: pre-tokenization (JavaScript), merges (native), all. */
  seconds: { pretokenize: number; merges: number; total: number };
}

/** GPT-2's pre-tokenization pattern (openai/gpt-2 encoder.py; the ByteLevel pre-tokenizer's `use_regex`). */
export const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** GPT-2's byte -> printable character table: the bytes of printable Latin-1 keep their code point, others move to U+0100 up. */
export function byteToChar(): string[] {
  const keep = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const out: string[] = new Array(256);
  let n = 0;
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(keep(b) ? b : 256 + n++);
  return out;
}

const now = () => performance.now() / 1000;

/**
 * Trains a byte-level BPE tokenizer on `text` (a string, or several documents) as the Python library does with
 * `BpeTrainer(vocab_size, min_frequency, special_tokens, initial_alphabet=ByteLevel.alphabet())` and a ByteLevel
 * pre-tokenizer without a prefix space, training on a file: the text is pre-tokenized line by line (a line keeps its
 * "\n"). Ids: the special tokens, then the 256 byte characters in code-point order, then the merges.
 */
export async function trainBpe(text: string | string[], options: TrainBpeOptions): Promise<TrainBpeResult> {
  const fn = 'trainBpe';
  const docs = typeof text === 'string' ? [text] : text;
  if (!Array.isArray(docs) || docs.some((d) => typeof d !== 'string')) throw new TypeError(`${fn}: text must be a string or an array of strings, got ${describe(text)}`);
  if (options === null || typeof options !== 'object') throw new TypeError(`${fn}: options must be an object, got ${describe(options)}`);
  const known = new Set(['vocabSize', 'specialTokens', 'minFrequency']);
  for (const k of Object.keys(options)) if (!known.has(k)) throw new TypeError(`${fn}: unknown option ${JSON.stringify(k)} (options: ${[...known].join(', ')})`);
  const specials = options.specialTokens ?? ['<|endoftext|>'];
  if (!Array.isArray(specials) || specials.some((s) => typeof s !== 'string' || s.length === 0))
    throw new TypeError(`${fn}: specialTokens must be an array of non-empty strings, got ${describe(specials)}`);
  if (new Set(specials).size !== specials.length) throw new RangeError(`${fn}: specialTokens has a duplicate: ${JSON.stringify(specials)}`);
  const table = byteToChar();
  const alphabet = [...table].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
  const clash = specials.find((s) => alphabet.includes(s));
  if (clash !== undefined) throw new RangeError(`${fn}: the special token ${JSON.stringify(clash)} is one of the 256 byte tokens`);
  const min = specials.length + 256;
  const { vocabSize } = options;
  if (typeof vocabSize !== 'number' || !Number.isInteger(vocabSize) || vocabSize < min || vocabSize > 2 ** 31 - 1)
    throw new RangeError(`${fn}: vocabSize must be an integer in [${min}, 2^31 - 1] (${specials.length} special + 256 byte tokens at least), got ${describe(vocabSize)}`);
  const minFrequency = options.minFrequency ?? 0;
  if (typeof minFrequency !== 'number' || !Number.isSafeInteger(minFrequency) || minFrequency < 0)
    throw new RangeError(`${fn}: minFrequency must be a non-negative integer, got ${describe(minFrequency)}`);

  const t0 = now();
  // Distinct words and their counts, line by line.
  const counts = new Map<string, number>();
  let bytes = 0, occurrences = 0;
  for (const doc of docs) {
    bytes += Buffer.byteLength(doc, 'utf8');
    for (const line of doc.match(/[^\n]*\n|[^\n]+$/g) ?? []) {
      for (const m of line.matchAll(GPT2_PATTERN)) {
        counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
        occurrences++;
      }
    }
  }
  const idOfByte = new Int32Array(256);
  for (let b = 0; b < 256; b++) idOfByte[b] = specials.length + alphabet.indexOf(table[b]);
  const words = [...counts.entries()];
  let total = 0;
  const encoded = words.map(([w]) => {
    const u = Buffer.from(w, 'utf8');
    total += u.length;
    return u;
  });
  const symbols = new Int32Array(total), offsets = new Float64Array(words.length + 1), wordCounts = new Float64Array(words.length);
  let at = 0;
  encoded.forEach((u, i) => {
    for (let k = 0; k < u.length; k++) symbols[at + k] = idOfByte[u[k]];
    at += u.length;
    offsets[i + 1] = at;
    wordCounts[i] = words[i][1];
  });
  const t1 = now();
  const tokens = [...specials, ...alphabet];
  const merges = await native().bpeTrain(symbols, offsets, wordCounts, tokens, vocabSize, minFrequency);
  const t2 = now();

  // Token strings: a merge's token is its two parts joined.
  const parts = new Map<number, [number, number]>();
  for (let i = 0; i < merges.length; i += 3) if (!parts.has(merges[i + 2])) parts.set(merges[i + 2], [merges[i], merges[i + 1]]);
  const strings = [...tokens];
  const stringOf = (id: number): string => {
    if (strings[id] !== undefined) return strings[id];
    const [a, b] = parts.get(id)!;
    return (strings[id] = stringOf(a) + stringOf(b));
  };
  const n = tokens.length + parts.size;
  const vocab: Record<string, number> = {};
  for (let id = 0; id < n; id++) vocab[stringOf(id)] = id;
  const mergeList: [string, string][] = [];
  for (let i = 0; i < merges.length; i += 3) mergeList.push([stringOf(merges[i]), stringOf(merges[i + 1])]);
  const spec = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false,
      byte_fallback: false, ignore_merges: false, vocab, merges: mergeList,
    },
  };
  const json = JSON.stringify(spec, null, 1) + '\n';
  const tokenizer = SubwordTokenizer.fromString(json);
  const t3 = now();
  return {
    tokenizer, json, merges: mergeList.length, words: words.length, occurrences, bytes,
    seconds: { pretokenize: t1 - t0, merges: t2 - t1, total: t3 - t0 },
  };
}
