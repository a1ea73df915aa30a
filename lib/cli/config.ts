// config.ts — model and training configurations of the CLI: defaults, a --config JSON file, flags over both, and
// building the model with the library's validation errors turned into usage errors.
import { Decoder, type DecoderConfig } from '../models/decoder.ts';
import type { TrainerOptions } from '../train/trainer.ts';
import type { SharingConfig } from '../sharing/plan.ts';
import type { Device } from '../tensor.ts';
import { UsageError, firstLine, message, parseJSON } from './common.ts';
import { readText, type DataSource } from './data.ts';
import type { Flags } from './flags.ts';

export type ModelConfig = Omit<DecoderConfig, 'vocab' | 'device'>;
export type TrainConfig = Omit<TrainerOptions, 'checkpoint' | 'signal' | 'beta1' | 'beta2'>;

export const DEFAULT_MODEL: ModelConfig = { dModel: 128, heads: 4, dFF: 512, layers: 6, maxSeq: 64, sharing: { strategy: 'all' } };
export const MODEL_KEYS = ['dModel', 'heads', 'kvHeads', 'dFF', 'layers', 'maxSeq', 'sharing', 'tiedEmbeddings', 'factorizedEmbedding', 'bias', 'norm'] as const;
export const TRAIN_KEYS = ['steps', 'batchSize', 'seqLen', 'lr', 'minLr', 'warmup', 'schedule', 'weightDecay', 'clip', 'accumulate', 'evalEvery', 'evalBatches', 'seed'] as const;
export const FLAG_TO_MODEL: Record<string, (typeof MODEL_KEYS)[number]> = {
  'd-model': 'dModel', heads: 'heads', 'kv-heads': 'kvHeads', 'd-ff': 'dFF', layers: 'layers', 'max-seq': 'maxSeq', norm: 'norm',
};
export const FLAG_TO_TRAIN: Record<string, (typeof TRAIN_KEYS)[number]> = {
  steps: 'steps', batch: 'batchSize', seq: 'seqLen', lr: 'lr', 'min-lr': 'minLr', warmup: 'warmup', schedule: 'schedule',
  'weight-decay': 'weightDecay', clip: 'clip', accumulate: 'accumulate', 'eval-every': 'evalEvery', 'eval-batches': 'evalBatches', seed: 'seed',
};

/** Reads a --config file: a flat JSON object of model keys (DecoderConfig) and training keys (TrainerOptions). */
export function readConfigFile(path: string): { model: Partial<ModelConfig>; train: Partial<TrainConfig> } {
  const o = parseJSON(readText(path, '--config'), `--config ${path}`, (m) => new UsageError(m));
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new UsageError(`--config ${path} must hold a JSON object`);
  const model: Record<string, unknown> = {}, train: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) {
    if ((MODEL_KEYS as readonly string[]).includes(k)) model[k] = v;
    else if ((TRAIN_KEYS as readonly string[]).includes(k)) train[k] = v;
    else
      throw new UsageError(
        `--config ${path}: unknown key '${k}'${k === 'vocab' ? ' (the vocabulary comes from the data)' : ''}; model keys: ${MODEL_KEYS.join(', ')}; training keys: ${TRAIN_KEYS.join(', ')}`,
      );
  }
  return { model: model as Partial<ModelConfig>, train: train as Partial<TrainConfig> };
}

/** base, then the --config file's keys, then flags. */
export function modelConfigFrom(base: ModelConfig, file: Partial<ModelConfig>, f: Flags): ModelConfig {
  const c: ModelConfig = { ...base, ...file, sharing: { ...(file.sharing ?? base.sharing ?? {}) } };
  for (const [flag, key] of Object.entries(FLAG_TO_MODEL)) if (f[flag] !== undefined) (c as Record<string, unknown>)[key] = f[flag];
  const s: Partial<SharingConfig> = c.sharing ?? {};
  if (f.strategy !== undefined && f.strategy !== s.strategy) {
    // A new strategy drops the old one's options (unique, rank, custom); K/V sharing works with every strategy.
    c.sharing = { strategy: f.strategy as SharingConfig['strategy'], ...(s.kvShareGroup !== undefined ? { kvShareGroup: s.kvShareGroup } : {}) };
  }
  if (f.unique !== undefined) c.sharing = { ...c.sharing, unique: f.unique as number };
  if (f.rank !== undefined) c.sharing = { ...c.sharing, rank: f.rank as number };
  if (f['kv-share'] !== undefined) c.sharing = { ...c.sharing, kvShareGroup: f['kv-share'] as number };
  return c;
}

export function trainConfigFrom(base: Partial<TrainConfig> & { data?: DataSource }, file: Partial<TrainConfig>, f: Flags, maxSeq: number): TrainConfig {
  const { data: _recorded, ...stored } = base;
  const c: Partial<TrainConfig> = { ...stored, ...file };
  for (const [flag, key] of Object.entries(FLAG_TO_TRAIN)) if (f[flag] !== undefined) (c as Record<string, unknown>)[key] = f[flag];
  const steps = c.steps ?? 1000;
  return {
    ...c,
    steps,
    batchSize: c.batchSize ?? 16,
    seqLen: c.seqLen ?? maxSeq,
    lr: c.lr ?? 3e-3,
    warmup: c.warmup ?? Math.min(100, Math.round(steps * 0.05)),
    schedule: c.schedule ?? 'cosine',
    evalEvery: c.evalEvery ?? (steps >= 20 ? Math.floor(steps / 4) : 0),
    evalBatches: c.evalBatches ?? 20,
    seed: c.seed ?? 1,
  };
}

/** Builds a Decoder; the library's validation errors become usage errors (the configuration came from the user). */
export function buildModel(cfg: ModelConfig, vocab: number, device: Device): Decoder {
  try {
    return new Decoder({ ...cfg, vocab, device });
  } catch (e) {
    if (e instanceof TypeError || e instanceof RangeError) throw new UsageError(`invalid model configuration: ${firstLine(message(e))}`);
    throw e;
  }
}
