// data.ts — the training text of the CLI: --data FILE (UTF-8 text, checked) or the embedded corpus, the vocabulary of
// a new model, encoding with the CLI's errors, and the train/validation split with its size check.
import { readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { CharTokenizer, TokenDataset } from '../data/index.ts';
import { SubwordTokenizer } from '../data/tokenizer.ts';
import { generateCorpus } from '../data/corpus.ts';
import { CliError, UsageError, firstLine, fmt, message } from './common.ts';
import { num, str, type Flags } from './flags.ts';

/** Where the training text came from (recorded in checkpoints, so that resume and eval can default to it). */
export type DataSource = { corpus: 'default'; chars: number } | { file: string };

/**
 * Why `bytes` is not UTF-8 text, or undefined when it is: a NUL byte, or a byte sequence that is not UTF-8 (overlong
 * forms, surrogates and code points above U+10FFFF included), with its offset.
 */
export function notText(bytes: Uint8Array): string | undefined {
  const nul = bytes.indexOf(0);
  if (nul >= 0) return `it holds a NUL byte at offset ${nul}, so it is binary, not text`;
  const n = bytes.length;
  for (let i = 0; i < n; ) {
    const b = bytes[i];
    if (b < 0x80) {
      i++;
      continue;
    }
    let len = 0, min = 0, cp = 0;
    if (b >= 0xc2 && b <= 0xdf) [len, min, cp] = [2, 0x80, b & 0x1f];
    else if (b >= 0xe0 && b <= 0xef) [len, min, cp] = [3, 0x800, b & 0x0f];
    else if (b >= 0xf0 && b <= 0xf4) [len, min, cp] = [4, 0x10000, b & 0x07];
    const bad = () => `it is not valid UTF-8 (byte 0x${b.toString(16).padStart(2, '0')} at offset ${i} does not start a valid UTF-8 character)`;
    if (len === 0 || i + len > n) return bad();
    for (let k = 1; k < len; k++) {
      const c = bytes[i + k];
      if ((c & 0xc0) !== 0x80) return bad();
      cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return bad();
    i += len;
  }
  return undefined;
}

export function readText(path: string, what: string): string {
  let text: string;
  try {
    const bytes = readFileSync(path);
    const why = what === '--data' ? notText(bytes) : undefined;
    if (why !== undefined) throw new CliError(`${what} ${path} is not UTF-8 text: ${why}; the data must be a UTF-8 text file`);
    text = bytes.toString('utf8');
  } catch (e) {
    if (e instanceof CliError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : code === 'EACCES' ? 'permission denied' : firstLine(message(e));
    throw new CliError(`cannot read ${what} ${path}: ${why}`);
  }
  if (text.length === 0) throw new CliError(`${what} ${path} is empty`);
  return text;
}

/** Printable ASCII, tab and newline: the default vocabulary, so any ASCII prompt can be given to the trained model. */
function defaultChars(): string[] {
  const cs = ['\t', '\n'];
  for (let c = 32; c < 127; c++) cs.push(String.fromCharCode(c));
  return cs;
}

/** The tokenizer of a new model: the data's characters only, or (default) printable ASCII plus the data's characters. */
export function vocabulary(text: string, fromData: boolean): CharTokenizer {
  return fromData ? CharTokenizer.fromText(text) : new CharTokenizer([...new Set([...defaultChars(), ...text])].sort());
}

export function loadData(f: Flags, recorded: DataSource | undefined, needed: string): { text: string; source: DataSource; label: string } {
  const file = str(f, 'data'), corpus = str(f, 'corpus');
  if (file !== undefined && corpus !== undefined) throw new UsageError('give either --data FILE or --corpus default, not both');
  let source: DataSource;
  if (file !== undefined) source = { file: resolve(file) };
  else if (corpus !== undefined) source = { corpus: 'default', chars: num(f, 'corpus-chars') ?? 400_000 };
  else if (recorded) {
    source = recorded;
    // A path recorded in a checkpoint is read only if it is a regular file (not /dev/zero, a FIFO, a directory).
    if ('file' in source) {
      let regular = false;
      try {
        regular = statSync(source.file).isFile();
      } catch {
        regular = true; // readText says why it cannot be read
      }
      if (!regular) throw new CliError(`the data file recorded in the checkpoint, ${source.file}, is not a regular file; give --data FILE`);
    }
  } else throw new UsageError(`${needed} needs --data FILE or --corpus default`);
  if ('file' in source) return { text: readText(source.file, '--data'), source, label: source.file };
  return { text: generateCorpus(source.chars), source, label: `the embedded corpus (${fmt(source.chars)} characters)` };
}

/** The tokenizers of the CLI: characters (the default) or a Hugging Face tokenizer.json (--tokenizer FILE). */
export type AnyTokenizer = CharTokenizer | SubwordTokenizer;

/** What one token of `tok` is, for the units of losses and sizes ("nats/char", "nats/token"). */
export function unitOf(tok: AnyTokenizer): 'char' | 'token' {
  return tok instanceof SubwordTokenizer ? 'token' : 'char';
}

function describeTokenizer(tok: AnyTokenizer): string {
  return tok instanceof SubwordTokenizer ? `the ${tok.model} tokenizer with SHA-256 ${tok.sha256.slice(0, 12)}...` : `a character tokenizer (${tok.vocabSize} characters)`;
}

/** --tokenizer FILE, read and checked (CliError naming the file), or undefined when the flag is absent. */
export function tokenizerFlag(f: Flags): SubwordTokenizer | undefined {
  const path = str(f, 'tokenizer');
  if (path === undefined) return undefined;
  try {
    return SubwordTokenizer.fromFile(path);
  } catch (e) {
    throw new CliError(`--tokenizer ${path}: ${firstLine(message(e)).replace(/^SubwordTokenizer(\.fromFile)?: /, '')}`);
  }
}

/**
 * The tokenizer of a command that reads a checkpoint: the checkpoint's own. --tokenizer FILE, when given, must be the
 * same tokenizer (by SHA-256): a model cannot be read through another vocabulary.
 */
export function checkpointTokenizer(f: Flags, recorded: AnyTokenizer, checkpoint: string): AnyTokenizer {
  const given = tokenizerFlag(f);
  if (given !== undefined && !(recorded instanceof SubwordTokenizer && recorded.sha256 === given.sha256))
    throw new CliError(`--tokenizer ${str(f, 'tokenizer')} is ${describeTokenizer(given)}, but ${checkpoint} was trained with ${describeTokenizer(recorded)}; leave out --tokenizer (the checkpoint holds its tokenizer) or use a checkpoint trained with this one`);
  return recorded;
}

/** The tokenizer of a new model: --tokenizer FILE, or characters (see vocabulary()). */
export function newTokenizer(f: Flags, text: string): AnyTokenizer {
  const given = tokenizerFlag(f);
  if (given !== undefined && f['vocab-from-data'] === true) throw new UsageError('give either --tokenizer FILE or --vocab-from-data, not both');
  return given ?? vocabulary(text, f['vocab-from-data'] === true);
}

/** The ids of `text` (no special tokens: a corpus or a prompt is not a sentence pair), with the CLI's errors. */
export function encode(tok: AnyTokenizer, text: string, what: string): Int32Array {
  try {
    return tok instanceof SubwordTokenizer ? tok.encode(text, { addSpecialTokens: false }) : tok.encode(text);
  } catch (e) {
    throw new CliError(`${what}: ${firstLine(message(e)).replace(/^CharTokenizer\.encode: /, '')} of the model`);
  }
}

export function makeDataset(tokens: Int32Array, vocab: number, seqLen: number, label: string, unit: 'char' | 'token' = 'char'): TokenDataset {
  const data = new TokenDataset(tokens, vocab);
  const need = seqLen + 1;
  if (data.train.length < need || data.val.length < need)
    throw new CliError(
      `${label} is too small: ${fmt(tokens.length)} ${unit === 'char' ? 'characters' : 'tokens'} give ${fmt(data.train.length)} for training and ${fmt(data.val.length)} for validation (the last 10%); each needs at least seq + 1 = ${need}`,
    );
  return data;
}
