// sharedformer — Transformers with cross-layer parameter sharing, on C++ and CUDA kernels.
export { Tensor, tensor, full, zeros, ones, rand, randn, manualSeed } from './tensor.ts';
export type { DType, Device, TensorOptions, RandomOptions, NestedNumbers } from './tensor.ts';
export { backends, buildInfo, memory, setNumThreads, getNumThreads, synchronize, synchronizeSync, emptyCache } from './runtime.ts';
export { loadAddon, packageRoot } from './native.ts';
export type { BackendsInfo, PersistingL2Info, BuildInfo, DeviceMemory, LoadAttempt, LoadResult, DTypeName, HostArray } from './native.ts';
/**
 * The kernel library as plain functions on tensors, forward and backward side by side (backward functions add into
 * the gradients they are given).
 */
export * as kernels from './kernels.ts';
export type { Precision, MatmulOptions, AttentionOptions, CrossEntropyOptions, AdamWOptions, SgdOptions, DropoutOptions, PermuteOptions } from './kernels.ts';
export { backward, noGrad, scope, tidy, keep, isGradEnabled, releaseTape, STACKED_GRADS_DEFAULT, STACKED_GRADS_BUDGET, type BackwardOptions, type StackedGradsOptions } from './autograd.ts';
/** Differentiable operations: each records its backward on the autograd tape while gradients are enabled. */
export * as ops from './ops/index.ts';
export { ParameterStore, ParameterBuilder, Parameter, PARAM_ALIGN, type Init, type SlotRow } from './params.ts';
export { Module } from './nn/module.ts';
export { Linear, LayerNorm, Embedding, MultiHeadAttention, FeedForward, TransformerBlock, BasisLinear, DeltaLinear, MlmHead, type Activation, type AttentionConfig, type TransformerBlockConfig } from './nn/layers.ts';
export { Decoder, type DecoderConfig, type DecoderLoadOptions } from './models/decoder.ts';
export { AdamW, SGD, warmupCosine, warmupLinear, clipGradNorm, type AdamWConfig, type SGDConfig } from './optim/index.ts';
export { makePlan, appliedLayers, STRATEGIES, type SharingConfig, type SharingPlan, type Strategy, type LayerPlan } from './sharing/plan.ts';
export { accountDecoder, accountEncoder, type ModelDims, type Accounting } from './sharing/accounting.ts';
export {
  saveSafetensors, loadSafetensors, encodeSafetensors, decodeSafetensors, SafetensorsError,
  type SafeTensor, type SafeFile, type SafeDType,
} from './io/safetensors.ts';
export { Encoder, type EncoderConfig, type EncodeOptions } from './models/encoder.ts';
export { EncoderDecoder, type EncoderDecoderConfig } from './models/seq2seq.ts';
export { decodeLogits, DecodeSession, generateStream, type GenerateOptions } from './models/generate.ts';
export { record, replay, freeRecording, writeInto, type Recording } from './record.ts';
export { CharTokenizer, TokenDataset, type Batch } from './data/index.ts';
export { SubwordTokenizer, tokenizerFromJSON, tokenizerHash, SUBWORD_MODELS, type TextTokenizer, type SubwordModel, type SubwordTokenizerJSON, type CharTokenizerJSON, type TokenizerEncodeOptions, type TokenizerDecodeOptions } from './data/tokenizer.ts';
export { convertSharing, truncatedSvd, symmetricEigen, type ConversionReport } from './sharing/convert.ts';
export { fromPretrained, savePretrained, type FromPretrainedOptions, type SavePretrainedResult } from './io/hf.ts';
export type { EncoderArchitecture } from './io/hf-encoder.ts';
export { trainBpe, byteToChar, GPT2_PATTERN, type TrainBpeOptions, type TrainBpeResult } from './data/bpe-train.ts';
export { Trainer, evaluate, type TrainerOptions, type TrainableModel, type EvaluateOptions, type StepInfo, type EvalInfo, type TrainResult } from './train/trainer.ts';
export { generateCorpus, describeCorpus } from './data/corpus.ts';
/**
 * Data-parallel training over MPI (CPU tensors) and NCCL (CUDA tensors), both loaded at run time: init, collectives on
 * tensors, barrier (docs/distributed.md). The Trainer's `distributed` option uses it.
 */
export * as distributed from './distributed/index.ts';
export type { DistributedInfo, ReduceOp, CommStats } from './distributed/index.ts';
export type { DistributedOption, CommPlan, DataParallel } from './distributed/data-parallel.ts';
export { lossCurveSvg, type LossSeries, type LossPlotOptions } from './plot.ts';
// Types that appear in the signatures above (documented with them).
export type { StackConfig, Dims, TokenIO, BlockStack, Model, KVCache, LayerHook } from './models/stack.ts';
export type { CheckpointMeta } from './io/checkpoint.ts';
export type { LinearLike, LinearFactory } from './nn/layers.ts';
export type { CorpusInfo } from './data/corpus.ts';
export type { AccountingOptions } from './sharing/accounting.ts';
export type { DecodeOptions } from './io/safetensors.ts';
export type { PlanDims } from './sharing/plan.ts';
export type { StoreOptions } from './params.ts';
