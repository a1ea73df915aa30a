// eval.ts — `sharedformer eval`: the validation loss of a checkpoint, by the library's evaluate (lib/train/trainer.ts).
import { releaseTape } from '../autograd.ts';
import { setNumThreads } from '../runtime.ts';
import { evaluate } from '../train/trainer.ts';
import { EXIT_OK, UsageError, jsonLine, say, type CliIO } from './common.ts';
import { checkRecordedBatch, loadModel, readCheckpointMeta } from './checkpoint.ts';
import { checkpointTokenizer, encode, loadData, makeDataset, unitOf } from './data.ts';
import { checkDevice } from './device.ts';
import { COMMON, DATA_FLAGS, MODEL_FLAGS, num, str, type Command, type Flags } from './flags.ts';

async function evalCommand(f: Flags, io: CliIO): Promise<number> {
  const path = str(f, 'model');
  if (path === undefined) throw new UsageError('--model FILE.safetensors is required');
  if (f.threads !== undefined) setNumThreads(f.threads as number);
  const device = checkDevice(str(f, 'device'));
  const meta = readCheckpointMeta(path, '--model');
  const tok = checkpointTokenizer(f, meta.tokenizer, `--model ${path}`);
  const unit = unitOf(tok);
  const { text, label } = loadData(f, meta.trainConfig?.data, 'eval');
  const tc = meta.trainConfig ?? {};
  const maxSeq = meta.modelConfig.maxSeq ?? 64;
  if (f.batch === undefined) checkRecordedBatch(`--model ${path}`, tc.batchSize);
  const B = num(f, 'batch') ?? tc.batchSize ?? 16;
  const T = num(f, 'seq') ?? Math.min(tc.seqLen ?? maxSeq, maxSeq);
  if (T > maxSeq) throw new UsageError(`--seq ${T} exceeds the model's context (maxSeq ${maxSeq})`);
  const seed = num(f, 'seed') ?? tc.seed ?? 1;
  const batches = num(f, 'batches') ?? 20;
  const tokens = encode(tok, text, label);
  const data = makeDataset(tokens, tok.vocabSize, T, label, unit);
  const { model } = loadModel(path, device, meta);
  try {
    const loss = await evaluate(model, data, { batches, batchSize: B, seqLen: T, seed });
    const bpc = loss / Math.LN2;
    if (f.json) jsonLine(io, { type: 'eval', model: path, data: label, loss, bpc, batches, batchSize: B, seqLen: T, characters: batches * B * T, tokens: batches * B * T, unit });
    else {
      say(io, `validation loss ${loss.toFixed(4)} nats/${unit}  ${bpc.toFixed(3)} bits/${unit}`);
      say(io, `(${batches} batches of ${B} x ${T} ${unit === 'char' ? 'characters' : 'tokens'} from the validation split, the last 10%, of ${label})`);
    }
    return EXIT_OK;
  } finally {
    releaseTape();
    model.store.dispose();
  }
}

export const evalCmd: Command = {
  summary: 'validation loss and bits per character of a checkpoint',
  usage: 'sharedformer eval --model FILE.safetensors [--data FILE | --corpus default] [--batches N]',
  specs: {
    model: { kind: 'string', arg: 'FILE', path: true, help: 'a checkpoint written by train (required)' },
    ...DATA_FLAGS,
    batches: { kind: 'int', arg: 'N', min: 1, help: 'validation batches (default 20)' },
    batch: { kind: 'int', arg: 'B', min: 1, help: 'sequences per batch (default: as trained)' },
    seq: { kind: 'int', arg: 'T', min: 1, help: 'tokens (characters, or subword tokens) per sequence (default: as trained)' },
    seed: { kind: 'int', arg: 'N', min: 0, max: 0xffffffff, help: 'which batches (default: as trained)' },
    device: MODEL_FLAGS.device,
    ...COMMON,
  },
  examples: ['sharedformer eval --model story.safetensors', 'sharedformer eval --model notes.safetensors --data more-notes.txt --batches 50'],
  run: (f, io) => evalCommand(f, io),
};
