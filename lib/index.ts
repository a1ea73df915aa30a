// sharedformer — Transformers with cross-layer parameter sharing, on C++ and CUDA kernels.
export { Tensor, tensor, full, zeros, ones, rand, randn, manualSeed } from './tensor.ts';
export type { DType, Device, TensorOptions, RandomOptions, NestedNumbers } from './tensor.ts';
export { backends, buildInfo, memory, setNumThreads, getNumThreads, synchronize, synchronizeSync, emptyCache } from './runtime.ts';
export { loadAddon, packageRoot } from './native.ts';
export type { BackendsInfo, BuildInfo, DeviceMemory, LoadAttempt } from './native.ts';
export * as kernels from './kernels.ts';
export type { MatmulOptions, AttentionOptions, CrossEntropyOptions, AdamWOptions, SgdOptions, DropoutOptions } from './kernels.ts';
