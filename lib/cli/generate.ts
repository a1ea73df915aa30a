// generate.ts — `sharedformer generate`, and generateText (the demo's samples too).
import type { Decoder } from '../models/decoder.ts';
import { SubwordTokenizer } from '../data/tokenizer.ts';
import { setNumThreads } from '../runtime.ts';
import { CliError, EXIT_OK, UsageError, jsonLine, printable, type CliIO } from './common.ts';
import { loadModel } from './checkpoint.ts';
import { checkpointTokenizer, encode, type AnyTokenizer } from './data.ts';
import { checkDevice } from './device.ts';
import { COMMON, MODEL_FLAGS, TOKENIZER_FLAG, num, str, type Command, type Flags } from './flags.ts';

/**
 * Generates `n` tokens (characters, or subword tokens) after `prompt` with Decoder.generate's sliding window
 * (`slide: true`: windows of up to maxSeq / 2 new tokens, each a fresh KV-cache pass over the last tokens). onText
 * receives the text as it is made; with a subword tokenizer it receives the decoded text of all tokens so far less
 * what it already received, held back while the text ends in a partial UTF-8 character (U+FFFD) of a byte-level
 * tokenizer. An empty prompt starts as at the beginning of a line (the token of "\n" where there is one).
 */
export async function generateText(
  model: Decoder, tok: AnyTokenizer, prompt: string, n: number,
  o: { temperature?: number; topK?: number; topP?: number; seed: number; onText?: (s: string) => void },
): Promise<string> {
  const W = model.config.maxSeq;
  if (W < 2) throw new CliError(`the model's context (maxSeq ${W}) is too short to generate from`);
  let ctx = Array.from(encode(tok, prompt, 'the prompt'));
  if (ctx.length === 0) {
    const nl = tok instanceof SubwordTokenizer ? tok.encode('\n', { addSpecialTokens: false }) : undefined;
    const start = tok instanceof SubwordTokenizer ? (nl!.length === 1 ? nl![0] : -1) : tok.chars.indexOf('\n');
    ctx = [start >= 0 ? start : 0];
  }
  const onText = o.onText;
  let onTokens: ((ids: number[]) => void) | undefined;
  let flush = () => {};
  if (onText && tok instanceof SubwordTokenizer) {
    // Subword pieces do not decode one by one (byte-level BPE splits characters into bytes, WordPiece joins "##"
    // pieces to the word before): decode the whole continuation and pass on what is new.
    const all: number[] = [];
    let sent = '';
    const emit = (final: boolean) => {
      const text = tok.decode(all);
      if (!final && text.endsWith('\uFFFD')) return;
      const common = text.startsWith(sent) ? sent.length : 0;
      if (text.length > common) onText(text.slice(common));
      sent = text;
    };
    onTokens = (ids) => {
      all.push(...ids);
      emit(false);
    };
    flush = () => emit(true);
  } else if (onText) onTokens = (ids) => onText(tok.decode(ids));
  const ids = await model.generate(ctx, {
    maxNewTokens: n, temperature: o.temperature, topK: o.topK, topP: o.topP, seed: o.seed, slide: true,
    ...(onTokens ? { onTokens } : {}),
  });
  flush();
  return tok.decode(ids);
}

async function generateCommand(f: Flags, io: CliIO): Promise<number> {
  const path = str(f, 'model');
  if (path === undefined) throw new UsageError('--model FILE.safetensors is required');
  if (f.threads !== undefined) setNumThreads(f.threads as number);
  const prompt = str(f, 'prompt') ?? '';
  const n = num(f, 'tokens') ?? 200;
  const seed = num(f, 'seed') ?? Math.floor(Math.random() * 0x7fffffff);
  const temperature = num(f, 'temperature') ?? 0.8;
  const topK = num(f, 'top-k'), topP = num(f, 'top-p');
  const { model, tokenizer: recorded } = loadModel(path, checkDevice(str(f, 'device')));
  try {
    const tokenizer = checkpointTokenizer(f, recorded, `--model ${path}`);
    encode(tokenizer, prompt, 'the prompt'); // before anything is printed
    if (f.json) {
      const text = await generateText(model, tokenizer, prompt, n, { temperature, topK, topP, seed });
      jsonLine(io, { type: 'generate', prompt, text, tokens: n, temperature, topK: topK ?? null, topP: topP ?? null, seed });
    } else {
      io.stdout.write(printable(prompt));
      await generateText(model, tokenizer, prompt, n, { temperature, topK, topP, seed, onText: (s) => io.stdout.write(printable(s)) });
      io.stdout.write('\n');
    }
    return EXIT_OK;
  } finally {
    model.store.dispose();
  }
}

export const generateCmd: Command = {
  summary: 'continue a prompt with a trained model',
  usage: 'sharedformer generate --model FILE.safetensors --prompt TEXT [--tokens N] [sampling options]',
  specs: {
    model: { kind: 'string', arg: 'FILE', path: true, help: 'a checkpoint written by train (required)' },
    prompt: { kind: 'string', arg: 'TEXT', help: 'the text to continue (default: empty, as at the start of a line)' },
    tokens: { kind: 'int', arg: 'N', min: 0, help: 'tokens (characters, or subword tokens) to generate (default 200)' },
    temperature: { kind: 'number', arg: 'T', min: 0, help: 'softmax temperature; 0 is greedy (default 0.8)' },
    'top-k': { kind: 'int', arg: 'K', min: 1, help: 'sample among the K most likely tokens' },
    tokenizer: { ...TOKENIZER_FLAG, help: 'check that the checkpoint was trained with this tokenizer.json (it holds its own)' },
    'top-p': { kind: 'number', arg: 'P', min: 0, above: true, max: 1, help: 'nucleus sampling, in (0, 1]' },
    seed: { kind: 'int', arg: 'N', min: 0, max: 0x7fffffff, help: 'sampling seed (default: random)' },
    device: MODEL_FLAGS.device,
    ...COMMON,
  },
  examples: ['sharedformer generate --model story.safetensors --prompt "Once upon a time" --tokens 300 --top-k 40 --seed 7'],
  run: (f, io) => generateCommand(f, io),
};
