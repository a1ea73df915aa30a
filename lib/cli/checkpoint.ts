// checkpoint.ts — reading checkpoints written by `sharedformer train`: the metadata (tokenizer, model and training
// configuration) checked before any model is built, and loading a model for eval and generate.
import { Decoder, TRAINER_MOMENTS, checkDecoderCheckpoint, type DecoderConfig } from '../models/decoder.ts';
import { tokenizerFromJSON } from '../data/tokenizer.ts';
import { SafetensorsError, readSafetensorsHeader, type SafeTensorInfo } from '../io/safetensors.ts';
import { loadCheckpoint } from '../io/checkpoint.ts';
import type { Device } from '../tensor.ts';
import { CliError, firstLine, message, parseJSON } from './common.ts';
import { TRAIN_KEYS, type ModelConfig, type TrainConfig } from './config.ts';
import type { AnyTokenizer, DataSource } from './data.ts';

export interface Loaded {
  model: Decoder;
  tokenizer: AnyTokenizer;
  modelConfig: ModelConfig;
  trainConfig?: Partial<TrainConfig> & { data?: DataSource };
  metadata: Record<string, string>;
}

/** The optimizer moments a Trainer checkpoint holds besides the parameters. */
const MOMENTS = TRAINER_MOMENTS;

/**
 * The metadata of a checkpoint written by `sharedformer train`: tokenizer, model and training configuration. Only the
 * header is read. The model configuration is checked as the Decoder checks it and its parameters (names, shapes, F32)
 * against the file's tensors, before any model is built: the file is at fault for whatever is wrong (CliError, exit
 * 1), and a small file cannot make the CLI allocate a large model (the parameters must be the file's tensors).
 */
export function readCheckpointMeta(path: string, what: string): Omit<Loaded, 'model'> & { hasMoments: boolean } {
  let file: ReturnType<typeof readSafetensorsHeader>;
  try {
    file = readSafetensorsHeader(path);
  } catch (e) {
    if (e instanceof SafetensorsError) {
      const m = firstLine(message(e)), prefix = `safetensors ${path}: `;
      const why = m.startsWith(prefix) ? m.slice(prefix.length) : m;
      if (why === 'not a regular file') throw new CliError(`cannot read ${what} ${path}: it is not a regular file`);
      throw new CliError(`${what} ${path} is not a safetensors checkpoint (${why})`);
    }
    const code = (e as NodeJS.ErrnoException).code;
    throw new CliError(`cannot read ${what} ${path}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : firstLine(message(e))}`);
  }
  const md = file.metadata;
  if (md.format !== 'sharedformer' || md.model !== 'decoder') throw new CliError(`${what} ${path} is not a sharedformer decoder checkpoint`);
  if (!md.tokenizer) throw new CliError(`${what} ${path} has no tokenizer in its metadata (it was not written by 'sharedformer train')`);
  const bad = (m: string) => new CliError(m);
  let tokenizer: AnyTokenizer;
  try {
    tokenizer = tokenizerFromJSON(parseJSON(md.tokenizer, `the tokenizer in ${path}`, bad));
  } catch (e) {
    throw new CliError(`${what} ${path}: ${firstLine(message(e))}`);
  }
  const isObject = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);
  let modelConfig: ModelConfig;
  if (md.modelConfig !== undefined) {
    const mc = parseJSON(md.modelConfig, `the model configuration in ${path}`, bad);
    if (!isObject(mc)) throw new CliError(`${what} ${path}: the model configuration in its metadata is not a JSON object`);
    modelConfig = mc as ModelConfig;
  } else {
    const config = parseJSON(md.config, `the config in ${path}`, bad);
    const plan = parseJSON(md.plan, `the plan in ${path}`, bad) as { sharing?: unknown } | null;
    if (!isObject(config) || !isObject(plan)) throw new CliError(`${what} ${path}: the config and plan in its metadata must be JSON objects`);
    modelConfig = { ...(config as object), sharing: plan!.sharing } as ModelConfig;
  }
  delete (modelConfig as { vocab?: number }).vocab;
  delete (modelConfig as { device?: unknown }).device;
  const trainConfig = md.trainConfig ? (parseJSON(md.trainConfig, `the training configuration in ${path}`, bad) as Loaded['trainConfig']) : undefined;
  if (trainConfig !== undefined) checkRecordedTraining(`${what} ${path}`, trainConfig);
  checkCheckpointTensors(path, what, modelConfig, tokenizer.vocabSize, file.tensors);
  return { tokenizer, modelConfig, trainConfig, metadata: md, hasMoments: file.tensors.has('optimizer.m') };
}

/** The largest batch a checkpoint's recorded training configuration may ask eval or a resumed train for (--batch may ask more). */
export const MAX_RECORDED_BATCH = 4096;
/** The largest embedded corpus a checkpoint may record (--corpus-chars may ask more). */
export const MAX_RECORDED_CORPUS_CHARS = 100_000_000;

/**
 * Checks the training configuration recorded in a checkpoint, which eval and train --resume use as defaults: an object
 * of training keys with values of the right kinds, a batch of at most MAX_RECORDED_BATCH sequences and a data source
 * that is a file name or the embedded corpus of at most MAX_RECORDED_CORPUS_CHARS characters, so that a file cannot
 * make eval allocate what nobody asked for. The file is at fault for what is wrong (CliError, exit 1).
 */
function checkRecordedTraining(where: string, tc: unknown): void {
  const fault = (m: string) => new CliError(`${where}: the training configuration in its metadata ${m}`);
  if (typeof tc !== 'object' || tc === null || Array.isArray(tc)) throw fault('is not a JSON object');
  for (const [k, v] of Object.entries(tc)) {
    if (k === 'data') {
      const d = v as { file?: unknown; corpus?: unknown; chars?: unknown } | null;
      const fileOk = typeof d === 'object' && d !== null && typeof d.file === 'string' && d.file !== '' && Object.keys(d).length === 1;
      const corpusOk = typeof d === 'object' && d !== null && d.corpus === 'default' && Number.isSafeInteger(d.chars) && (d.chars as number) >= 1000 &&
        (d.chars as number) <= MAX_RECORDED_CORPUS_CHARS && Object.keys(d).length === 2;
      if (!fileOk && !corpusOk)
        throw fault(`has data ${JSON.stringify(v)?.slice(0, 80)}; expected { "file": NAME } or { "corpus": "default", "chars": 1000..${MAX_RECORDED_CORPUS_CHARS} }`);
    } else if (!(TRAIN_KEYS as readonly string[]).includes(k)) {
      throw fault(`has the unknown key '${k}'`);
    } else if (k === 'schedule') {
      if (!['cosine', 'linear', 'constant'].includes(v as string)) throw fault(`has schedule ${JSON.stringify(v)}`);
    } else if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
      throw fault(`has ${k} = ${JSON.stringify(v)}, not a finite number >= 0`);
    }
  }
}

/** A batch size recorded in a checkpoint, used only when no flag or --config gives one: at most MAX_RECORDED_BATCH. */
export function checkRecordedBatch(where: string, b: number | undefined): void {
  if (b !== undefined && !(Number.isSafeInteger(b) && b >= 1 && b <= MAX_RECORDED_BATCH))
    throw new CliError(`${where}: the training configuration in its metadata asks for batch size ${b}; at most ${MAX_RECORDED_BATCH} is taken from a file (give --batch to choose)`);
}

/** checkDecoderCheckpoint (models/decoder.ts) with its findings as the CLI's errors: the file is at fault (exit 1). */
function checkCheckpointTensors(path: string, what: string, config: ModelConfig, vocab: number, tensors: Map<string, SafeTensorInfo>): void {
  try {
    checkDecoderCheckpoint(`${what} ${path}`, { ...config, vocab } as DecoderConfig, tensors);
  } catch (e) {
    throw new CliError(firstLine(message(e)));
  }
}

/** Loads a model for inference from a checkpoint written by `sharedformer train` (optimizer moments are skipped). */
export function loadModel(path: string, device: Device = 'cpu', meta = readCheckpointMeta(path, '--model')): Loaded {
  let model: Decoder;
  try {
    model = new Decoder({ ...meta.modelConfig, vocab: meta.tokenizer.vocabSize, device });
  } catch (e) {
    // readCheckpointMeta checked this configuration; a failure here is still the file's.
    if (e instanceof TypeError || e instanceof RangeError) throw new CliError(`--model ${path}: invalid model configuration in its metadata: ${firstLine(message(e))}`);
    throw e;
  }
  const extra = new Map<string, Float32Array>();
  if (meta.hasMoments) for (const k of MOMENTS) extra.set(k, new Float32Array(model.store.numel));
  try {
    loadCheckpoint(path, model.store, model.meta(), extra);
  } catch (e) {
    model.store.dispose();
    throw new CliError(firstLine(message(e)));
  }
  model.eval();
  return { model, ...meta };
}
