// data — a character tokenizer, token datasets with a train/validation split, and batches drawn by a counter-based
// hash of (seed, batch index), so batch i is the same on every run and after a resume, with no sampler state to save.
import { tensor, type Tensor, type Device } from '../tensor.ts';
import { describe } from '../validate.ts';

/** Characters to ids and back; the vocabulary is the sorted set of characters of the text it was built from. */
export class CharTokenizer {
  private index = new Map<string, number>();
  constructor(readonly chars: string[]) {
    if (!Array.isArray(chars) || chars.length === 0) throw new TypeError('CharTokenizer: chars must be a non-empty array of characters');
    chars.forEach((c, i) => {
      if (typeof c !== 'string' || [...c].length !== 1) throw new TypeError(`CharTokenizer: entry ${i} is not a single character`);
      if (this.index.has(c)) throw new RangeError(`CharTokenizer: duplicate character ${JSON.stringify(c)}`);
      this.index.set(c, i);
    });
  }
  /** A tokenizer whose vocabulary is the sorted set of characters in `text`. */
  static fromText(text: string): CharTokenizer {
    if (typeof text !== 'string' || text.length === 0) throw new TypeError('CharTokenizer.fromText: text must be a non-empty string');
    return new CharTokenizer([...new Set([...text])].sort());
  }
  /** The number of distinct characters (ids are 0 .. vocabSize - 1). */
  get vocabSize(): number {
    return this.chars.length;
  }
  /** Ids of every character; a character outside the vocabulary is an error naming it and its position. */
  encode(text: string): Int32Array {
    const cs = [...text];
    const out = new Int32Array(cs.length);
    cs.forEach((c, i) => {
      const id = this.index.get(c);
      if (id === undefined) throw new RangeError(`CharTokenizer.encode: character ${JSON.stringify(c)} at position ${i} is not in the vocabulary`);
      out[i] = id;
    });
    return out;
  }
  /** The text of the ids; an id outside the vocabulary is an error naming it and its position. */
  decode(ids: ArrayLike<number>): string {
    let s = '';
    for (let i = 0; i < ids.length; i++) {
      const c = this.chars[ids[i]];
      if (c === undefined) throw new RangeError(`CharTokenizer.decode: id ${ids[i]} at position ${i} is outside [0, ${this.chars.length})`);
      s += c;
    }
    return s;
  }
  /** A JSON description (stored in checkpoints); CharTokenizer.fromJSON() reads it back. */
  toJSON(): { type: 'char'; chars: string[] } {
    return { type: 'char', chars: this.chars };
  }
  /** Rebuilds a tokenizer from toJSON() output; anything else is a TypeError. */
  static fromJSON(j: unknown): CharTokenizer {
    const o = j as { type?: string; chars?: string[] };
    if (!o || o.type !== 'char' || !Array.isArray(o.chars)) throw new TypeError('CharTokenizer.fromJSON: not a character tokenizer description');
    return new CharTokenizer(o.chars);
  }
}

// splitmix64 over BigInt would be slow; a 32-bit integer hash of (seed, index, k) is plenty to pick window offsets.
function hash32(a: number, b: number, c: number): number {
  let h = (Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 0x7f4a7c15, 0xc2b2ae35) ^ Math.imul(c + 0x165667b1, 0x27d4eb2f)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d) >>> 0;
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/** One training batch: input ids and the next-token targets. */
export interface Batch {
  /** int32 (B, T) */
  ids: Tensor;
  /** int32 (B, T): ids shifted by one */
  targets: Tensor;
}

/** A token stream split into train and validation parts (the first `trainFraction`, customarily 0.9, for training). */
export class TokenDataset {
  readonly train: Int32Array;
  readonly val: Int32Array;
  constructor(tokens: Int32Array, readonly vocabSize: number, trainFraction = 0.9) {
    if (!(tokens instanceof Int32Array)) throw new TypeError('TokenDataset: tokens must be an Int32Array');
    if (typeof vocabSize !== 'number' || !Number.isInteger(vocabSize) || vocabSize < 1 || vocabSize > 2 ** 31)
      throw new RangeError(`TokenDataset: vocabSize must be an integer in [1, 2^31], got ${describe(vocabSize)}`);
    if (typeof trainFraction !== 'number' || !(trainFraction > 0 && trainFraction < 1)) throw new RangeError(`TokenDataset: trainFraction must be a number in (0, 1), got ${describe(trainFraction)}`);
    for (let i = 0; i < tokens.length; i++)
      if (tokens[i] < 0 || tokens[i] >= vocabSize) throw new RangeError(`TokenDataset: token ${tokens[i]} at position ${i} is outside [0, ${vocabSize})`);
    const n = Math.floor(tokens.length * trainFraction);
    this.train = tokens.subarray(0, n);
    this.val = tokens.subarray(n);
  }

  /**
   * The tokens of `text` as one stream (no special tokens: a corpus is not one sequence), split as the constructor
   * splits them; `tokenizer` is a CharTokenizer or a SubwordTokenizer.
   */
  static fromText(text: string, tokenizer: { readonly vocabSize: number; encode(text: string, options?: { addSpecialTokens?: boolean }): Int32Array }, trainFraction = 0.9): TokenDataset {
    if (typeof text !== 'string') throw new TypeError(`TokenDataset.fromText: text must be a string, got ${describe(text)}`);
    if (!tokenizer || typeof tokenizer.encode !== 'function') throw new TypeError('TokenDataset.fromText: tokenizer must be a CharTokenizer or a SubwordTokenizer');
    return new TokenDataset(tokenizer.encode(text, { addSpecialTokens: false }), tokenizer.vocabSize, trainFraction);
  }

  /**
   * Batch number `index` of `split`: B windows of T + 1 tokens at offsets hashed from (seed, index, row) — the same
   * batch for the same arguments, always.
   */
  batch(split: 'train' | 'val', B: number, T: number, seed: number, index: number, device: Device = 'cpu'): Batch {
    if (split !== 'train' && split !== 'val') throw new TypeError(`TokenDataset.batch: split must be 'train' or 'val', got ${describe(split)}`);
    const src = split === 'train' ? this.train : this.val;
    if (!Number.isInteger(B) || B < 1 || !Number.isInteger(T) || T < 1) throw new RangeError(`TokenDataset.batch: batch ${describe(B)} and sequence ${describe(T)} must be positive integers`);
    if (B * T > 2 ** 30) throw new RangeError(`TokenDataset.batch: a batch of ${B} x ${T} tokens is over the 2^30 limit`);
    for (const [name, v] of [['seed', seed], ['index', index]] as const)
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new RangeError(`TokenDataset.batch: ${name} must be a non-negative integer, got ${describe(v)}`);
    if (src.length < T + 1) throw new RangeError(`TokenDataset.batch: the ${split} split has ${src.length} tokens, fewer than a window of ${T + 1}`);
    const ids = new Int32Array(B * T), tg = new Int32Array(B * T);
    const span = src.length - T;
    for (let b = 0; b < B; b++) {
      const off = hash32(seed, index, b + (split === 'val' ? 1 << 20 : 0)) % span;
      ids.set(src.subarray(off, off + T), b * T);
      tg.set(src.subarray(off + 1, off + T + 1), b * T);
    }
    return { ids: tensor(ids, [B, T], { device }), targets: tensor(tg, [B, T], { device }) };
  }
}
