// tokenizer.ts — subword tokenizers from a Hugging Face `tokenizer.json` (byte-level BPE as GPT-2, WordPiece as BERT,
// Unigram/SentencePiece as ALBERT), through @huggingface/tokenizers (Hugging Face's own pure-JavaScript port of the
// `tokenizers` library: no native code, no dependencies, Apache-2.0; docs/tokenizers.md says why it was chosen). What
// this file adds is the library's contract: the file is checked before use (a model type, truncation or padding it
// does not honour is refused by name), ids are checked against the vocabulary before decoding, the results are
// Int32Array, and a tokenizer is identified by the SHA-256 of its file so that checkpoints can embed it and refuse a
// different one. test/tokenizer.test.ts checks encode and decode against the Python `tokenizers` library
// (test/fixtures/tokenizers, written by scripts/tokenizer_fixtures.py).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Tokenizer as HFTokenizer } from '@huggingface/tokenizers';
import { describe } from '../validate.ts';
import { CharTokenizer } from './index.ts';

/** What every tokenizer of the library does: text to ids and back, and a JSON description for checkpoints. */
export interface TextTokenizer {
  /** Ids are 0 .. vocabSize - 1. */
  readonly vocabSize: number;
  /** The ids of `text`. */
  encode(text: string): Int32Array;
  /** The text of `ids`. */
  decode(ids: ArrayLike<number>): string;
  /** The description checkpoints store; tokenizerFromJSON() reads it back. */
  toJSON(): CharTokenizerJSON | SubwordTokenizerJSON;
}

/** A character tokenizer as checkpoints store it (CharTokenizer.toJSON()). */
export interface CharTokenizerJSON {
  type: 'char';
  chars: string[];
}

/** A subword tokenizer as checkpoints store it: the tokenizer.json text itself and its SHA-256. */
export interface SubwordTokenizerJSON {
  type: 'huggingface';
  sha256: string;
  json: string;
}

/** Options of SubwordTokenizer.encode and tokenize. */
export interface TokenizerEncodeOptions {
  /** Add the special tokens of the tokenizer's post-processor ([CLS] ... [SEP] for BERT); default true, as in Hugging Face. */
  addSpecialTokens?: boolean;
}

/** Options of SubwordTokenizer.decode. */
export interface TokenizerDecodeOptions {
  /** Leave out the special tokens (added tokens marked special); default false, as in Hugging Face. */
  skipSpecialTokens?: boolean;
}

/** The model types of tokenizer.json this library reads. */
export const SUBWORD_MODELS = ['BPE', 'WordPiece', 'Unigram'] as const;
/** One of SUBWORD_MODELS. */
export type SubwordModel = (typeof SUBWORD_MODELS)[number];

const MAX_FILE_BYTES = 256 * 1024 * 1024;

/** The SHA-256 (hex) of a tokenizer.json text, as checkpoints record it. */
export function tokenizerHash(json: string): string {
  return createHash('sha256').update(json, 'utf8').digest('hex');
}

/**
 * A Hugging Face tokenizer (tokenizer.json): `SubwordTokenizer.fromFile('tokenizer.json')`. Encodes and decodes exactly
 * as the Python `tokenizers` library does (`Tokenizer.encode(text).ids`, `Tokenizer.decode(ids)`), with two
 * differences of form: ids are an Int32Array, and decoding an id outside the vocabulary is an error, not a skip.
 */
export class SubwordTokenizer implements TextTokenizer {
  /** The tokenizer.json model type. */
  readonly model: SubwordModel;
  /** The SHA-256 (hex) of the tokenizer.json text: what checkpoints compare. */
  readonly sha256: string;
  /** One more than the largest id of the vocabulary and the added tokens (the embedding rows a model needs). */
  readonly vocabSize: number;
  private readonly tok: HFTokenizer;
  private readonly specialIds: Set<number>;

  private constructor(readonly json: string, source: string) {
    const fn = 'SubwordTokenizer';
    let spec: Record<string, unknown>;
    try {
      spec = JSON.parse(json) as Record<string, unknown>;
    } catch (e) {
      throw new TypeError(`${fn}: ${source} is not JSON (${(e as Error).message})`);
    }
    if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) throw new TypeError(`${fn}: ${source} is not a JSON object`);
    const model = spec.model as { type?: unknown; vocab?: unknown } | null | undefined;
    if (model === null || typeof model !== 'object') throw new TypeError(`${fn}: ${source} has no "model" object (it is not a Hugging Face tokenizer.json)`);
    if (!SUBWORD_MODELS.includes(model.type as SubwordModel))
      throw new TypeError(`${fn}: ${source} has model.type ${describe(model.type)}; supported: ${SUBWORD_MODELS.join(', ')}`);
    if (model.vocab === null || typeof model.vocab !== 'object') throw new TypeError(`${fn}: ${source} has no model.vocab`);
    // The Python library applies these to every encode; the JavaScript one does not. A corpus is encoded whole (the
    // dataset cuts the windows), so a tokenizer that truncates or pads is refused rather than followed differently.
    for (const key of ['truncation', 'padding'] as const)
      if (spec[key] !== undefined && spec[key] !== null)
        throw new TypeError(`${fn}: ${source} sets "${key}" (${JSON.stringify(spec[key]).slice(0, 80)}), which sharedformer does not apply; set it to null in the file`);
    const added = spec.added_tokens;
    if (added !== undefined && !Array.isArray(added)) throw new TypeError(`${fn}: ${source} has "added_tokens" that is not an array`);
    try {
      this.tok = new HFTokenizer(spec, { clean_up_tokenization_spaces: false });
    } catch (e) {
      throw new TypeError(`${fn}: ${source} could not be loaded: ${(e as Error)?.message ?? String(e)}`);
    }
    this.model = model.type as SubwordModel;
    this.sha256 = tokenizerHash(json);
    let max = -1;
    for (const id of this.tok.get_vocab(true).values()) {
      if (!Number.isSafeInteger(id) || id < 0 || id >= 2 ** 31) throw new TypeError(`${fn}: ${source} has the id ${describe(id)}, outside [0, 2^31)`);
      if (id > max) max = id;
    }
    if (max < 0) throw new TypeError(`${fn}: ${source} has an empty vocabulary`);
    this.vocabSize = max + 1;
    this.specialIds = new Set();
    for (const t of (added ?? []) as { id?: unknown; special?: unknown }[])
      if (t && t.special === true && typeof t.id === 'number') this.specialIds.add(t.id);
  }

  /** Reads a tokenizer.json file. */
  static fromFile(path: string): SubwordTokenizer {
    if (typeof path !== 'string' || path.length === 0) throw new TypeError(`SubwordTokenizer.fromFile: path must be a non-empty string, got ${describe(path)}`);
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : (e as Error).message;
      throw new Error(`SubwordTokenizer.fromFile: cannot read ${path}: ${why}`);
    }
    if (bytes.length > MAX_FILE_BYTES) throw new RangeError(`SubwordTokenizer.fromFile: ${path} is ${bytes.length} bytes, over the ${MAX_FILE_BYTES}-byte limit`);
    return new SubwordTokenizer(bytes.toString('utf8'), path);
  }

  /** A tokenizer from the text of a tokenizer.json. */
  static fromString(json: string): SubwordTokenizer {
    if (typeof json !== 'string') throw new TypeError(`SubwordTokenizer.fromString: json must be a string, got ${describe(json)}`);
    return new SubwordTokenizer(json, 'the tokenizer.json text');
  }

  /** Rebuilds a tokenizer from toJSON() output, checking the recorded SHA-256. */
  static fromJSON(j: unknown): SubwordTokenizer {
    const o = j as Partial<SubwordTokenizerJSON> | null;
    if (!o || o.type !== 'huggingface' || typeof o.json !== 'string' || typeof o.sha256 !== 'string')
      throw new TypeError('SubwordTokenizer.fromJSON: not a subword tokenizer description ({type: "huggingface", sha256, json})');
    const got = tokenizerHash(o.json);
    if (got !== o.sha256) throw new TypeError(`SubwordTokenizer.fromJSON: the tokenizer's SHA-256 is ${got}, not the recorded ${o.sha256} (the description was altered)`);
    return new SubwordTokenizer(o.json, 'the recorded tokenizer');
  }

  /** The ids of `text`. */
  encode(text: string, options: TokenizerEncodeOptions = {}): Int32Array {
    if (typeof text !== 'string') throw new TypeError(`SubwordTokenizer.encode: text must be a string, got ${describe(text)}`);
    const add = flag(options, 'addSpecialTokens', true, 'SubwordTokenizer.encode');
    return Int32Array.from(this.tok.encode(text, { add_special_tokens: add }).ids);
  }

  /** The token strings of `text` (as `Encoding.tokens` in Python). */
  tokenize(text: string, options: TokenizerEncodeOptions = {}): string[] {
    if (typeof text !== 'string') throw new TypeError(`SubwordTokenizer.tokenize: text must be a string, got ${describe(text)}`);
    const add = flag(options, 'addSpecialTokens', true, 'SubwordTokenizer.tokenize');
    return this.tok.encode(text, { add_special_tokens: add }).tokens;
  }

  /** The text of `ids`; an id that is not an integer of the vocabulary is an error naming it and its position. */
  decode(ids: ArrayLike<number>, options: TokenizerDecodeOptions = {}): string {
    const skip = flag(options, 'skipSpecialTokens', false, 'SubwordTokenizer.decode');
    if (ids === null || typeof ids !== 'object' || typeof ids.length !== 'number') throw new TypeError(`SubwordTokenizer.decode: ids must be an array of integers, got ${describe(ids)}`);
    const list: number[] = new Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize || this.tok.id_to_token(id) === undefined)
        throw new RangeError(`SubwordTokenizer.decode: id ${describe(id)} at position ${i} is not in the vocabulary (ids in [0, ${this.vocabSize}))`);
      list[i] = id;
    }
    const kept = skip ? list.filter((id) => !this.specialIds.has(id)) : list;
    if (kept.length === 0) return '';
    return this.tok.decode(kept, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  /** The id of a token string, or undefined. */
  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  /** The token string of an id, or undefined. */
  idToToken(id: number): string | undefined {
    return this.tok.id_to_token(id);
  }

  /** The ids of the added tokens marked special ([CLS], <|endoftext|>, ...). */
  get specialTokenIds(): number[] {
    return [...this.specialIds].sort((a, b) => a - b);
  }

  /** The description checkpoints store: the tokenizer.json text and its SHA-256. */
  toJSON(): SubwordTokenizerJSON {
    return { type: 'huggingface', sha256: this.sha256, json: this.json };
  }
}

function flag(options: unknown, key: string, dflt: boolean, fn: string): boolean {
  if (options === null || typeof options !== 'object') throw new TypeError(`${fn}: options must be an object, got ${describe(options)}`);
  const v = (options as Record<string, unknown>)[key];
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw new TypeError(`${fn}: options.${key} must be a boolean, got ${describe(v)}`);
  return v;
}

/** A tokenizer from its toJSON() description: a CharTokenizer or a SubwordTokenizer. */
export function tokenizerFromJSON(j: unknown): CharTokenizer | SubwordTokenizer {
  const type = (j as { type?: unknown } | null)?.type;
  if (type === 'char') return CharTokenizer.fromJSON(j);
  if (type === 'huggingface') return SubwordTokenizer.fromJSON(j);
  throw new TypeError(`tokenizerFromJSON: unknown tokenizer type ${describe(type)} (expected "char" or "huggingface")`);
}
