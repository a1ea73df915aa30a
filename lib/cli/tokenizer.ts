// tokenizer.ts — `sharedformer tokenizer train`: a byte-level BPE tokenizer (GPT-2's scheme) trained on a text file
// by trainBpe (lib/data/bpe-train.ts), written atomically as a Hugging Face tokenizer.json.
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { trainBpe } from '../data/bpe-train.ts';
import { writeFileAtomicAsync } from '../io/safetensors.ts';
import { setNumThreads } from '../runtime.ts';
import { CliError, EXIT_OK, UsageError, firstLine, fmt, jsonLine, message, say, type CliIO } from './common.ts';
import { readText } from './data.ts';
import { COMMON, num, str, type Command, type Flags } from './flags.ts';

async function tokenizerCommand(f: Flags, io: CliIO): Promise<number> {
  if (f.verb !== 'train') throw new UsageError(`tokenizer needs the verb 'train' (sharedformer tokenizer train --data FILE --vocab N --out FILE)`);
  const data = str(f, 'data'), out = str(f, 'out'), vocab = num(f, 'vocab');
  if (data === undefined) throw new UsageError('--data FILE is required');
  if (out === undefined) throw new UsageError('--out FILE (the tokenizer.json to write) is required');
  if (vocab === undefined) throw new UsageError('--vocab N is required');
  if (f.threads !== undefined) setNumThreads(f.threads as number);
  if (!existsSync(dirname(resolve(out)))) throw new CliError(`cannot write --out ${out}: the folder ${dirname(resolve(out))} does not exist`);
  const specials = (str(f, 'special-tokens') ?? '<|endoftext|>').split(',').filter((s) => s.length > 0);
  const text = readText(data, '--data');
  let r: Awaited<ReturnType<typeof trainBpe>>;
  try {
    r = await trainBpe(text, { vocabSize: vocab, specialTokens: specials, minFrequency: num(f, 'min-frequency') ?? 0 });
  } catch (e) {
    if (e instanceof RangeError || e instanceof TypeError) throw new UsageError(firstLine(message(e)).replace(/^trainBpe: /, ''));
    throw e;
  }
  try {
    await writeFileAtomicAsync(out, r.json);
  } catch (e) {
    throw new CliError(`cannot write --out ${out}: ${firstLine(message(e))}`);
  }
  const mbps = r.bytes / 1e6 / r.seconds.total;
  if (f.json) {
    jsonLine(io, {
      type: 'tokenizer', out, data, vocab: r.tokenizer.vocabSize, requested: vocab, merges: r.merges, specialTokens: specials,
      bytes: r.bytes, words: r.words, occurrences: r.occurrences, seconds: r.seconds, mbPerSecond: mbps, sha256: r.tokenizer.sha256,
    });
  } else {
    say(io, `trained a byte-level BPE tokenizer on ${data}: ${fmt(r.bytes)} bytes, ${fmt(r.occurrences)} words (${fmt(r.words)} distinct)`);
    say(io, `vocabulary ${fmt(r.tokenizer.vocabSize)} = ${specials.length} special + 256 bytes + ${fmt(r.merges)} merges${r.tokenizer.vocabSize < vocab ? ` (the text has no more pairs to merge; ${fmt(vocab)} asked)` : ''}`);
    say(io, `${r.seconds.total.toFixed(2)} s (pre-tokenizing ${r.seconds.pretokenize.toFixed(2)} s, merging ${r.seconds.merges.toFixed(2)} s): ${mbps.toFixed(2)} MB/s`);
    say(io, `wrote ${out} (SHA-256 ${r.tokenizer.sha256.slice(0, 12)}...); use it with --tokenizer ${out}`);
  }
  return EXIT_OK;
}

export const tokenizerCmd: Command = {
  summary: 'train a byte-level BPE tokenizer (a Hugging Face tokenizer.json) on a text file',
  usage: 'sharedformer tokenizer train --data FILE --vocab N --out tokenizer.json [--special-tokens LIST] [--min-frequency N]',
  verbs: ['train'],
  specs: {
    data: { kind: 'string', arg: 'FILE', path: true, help: 'a UTF-8 text file to learn the merges from (required)' },
    vocab: { kind: 'int', arg: 'N', min: 1, max: 2 ** 31 - 1, help: 'vocabulary size: special tokens + 256 bytes + merges (required)' },
    out: { kind: 'string', arg: 'FILE', path: true, help: 'the tokenizer.json to write (required; written atomically)' },
    'special-tokens': { kind: 'string', arg: 'LIST', help: 'comma-separated special tokens, ids 0, 1, ... (default <|endoftext|>)' },
    'min-frequency': { kind: 'int', arg: 'N', min: 0, help: 'merge only pairs seen at least N times (default 0)' },
    ...COMMON,
  },
  examples: ['sharedformer tokenizer train --data notes.txt --vocab 4096 --out tokenizer.json', 'sharedformer train --data notes.txt --tokenizer tokenizer.json --out notes.safetensors'],
  run: (f, io) => tokenizerCommand(f, io),
};
