// native.ts — finds and loads the addon, and types the surface it exports.
//
// Search order (the first that loads wins; every attempt is recorded):
//   1. SHAREDFORMER_BINARY — an explicit path to a sharedformer.node (if it fails, nothing else is tried)
//   2. @sharedformer/linux-x64-cuda — the opt-in CUDA build. Without a driver or GPU it still loads and runs on the
//      CPU (backends().cuda.reason says why); if it cannot be loaded at all, the CPU package below is used and
//      backends().cuda.reason says that, and why.
//   3. @sharedformer/<platform>-<arch> — the prebuilt CPU build from optionalDependencies
//   4. build/Release/sharedformer.node — a local build (`npm run build` with cmake-js, or `npm run build:gyp`)
// If nothing loads, one error lists every place tried, why it failed, and how to fix it.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

/** The package root: the folder holding package.json (lib/ or dist/ sit one level below it). */
export const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The element types the addon stores. */
export type DTypeName = 'float32' | 'int32' | 'bfloat16';
/** What reading a tensor returns: float32 and bfloat16 as Float32Array, int32 as Int32Array. */
export type HostArray = Float32Array | Int32Array;

/** The native object behind a Tensor. Made only by the addon's functions. */
export interface NativeTensor {
  readonly shape: number[];
  readonly dtype: DTypeName;
  readonly device: string;
  readonly size: number;
  readonly offset: number;
  readonly disposed: boolean;
  dispose(): void;
  readSync(): HostArray;
  read(): Promise<HostArray>;
  shared(): HostArray;
  to(device: string): NativeTensor;
  clone(): NativeTensor;
  view(offset: number, shape: number[]): NativeTensor;
  sameStorage(other: NativeTensor): boolean;
}

/** Per-device counters from memory(). */
export interface DeviceMemory {
  /** Live tensor handles on the device (views included). */
  tensors: number;
  /** Live storages (allocations) on the device. */
  storages: number;
  /** Bytes held by live storages. */
  bytes: number;
  /** Highest `bytes` seen since the addon was loaded. */
  peakBytes: number;
  /** Freed blocks kept by the caching allocator for reuse (not in `bytes`); emptyCache() releases them. */
  cachedBytes: number;
  /**
   * Of `storages` and `bytes`: the copies of weights the CPU matmul keeps packed (a weight read twice at the same
   * values, e.g. a block shared by several layers, or every weight after two inference passes); each is freed with its
   * weight's storage or when a later read finds the weight written (docs/architecture.md, Memory). 0 on CUDA.
   */
  packedStorages: number;
  packedBytes: number;
}

/**
 * The shared-weight L2 window of one CUDA device (kernels.persistL2; the layer stacks use it while consecutive layers
 * apply the same blocks). Best effort: where it cannot be used, nothing fails and `reason` says why.
 */
export interface PersistingL2Info {
  /** Persisting windows are in use on this device: at least one was set, and no CUDA call failed. */
  active: boolean;
  /**
   * When not active, why: e.g. 'never requested: ...', 'device has no persisting L2 (...)', 'not supported here:
   * setting the persisting-L2 set-aside failed (...)' (MPS, MIG), or the CUDA call that failed.
   */
  reason?: string;
  /**
   * The stream's window now: 'persisting'; 'demoting' (ended: a normal window over the same bytes makes the kernels
   * queued after it demote the lines); 'none'.
   */
  window: 'persisting' | 'demoting' | 'none';
  /** cudaDevAttrMaxPersistingL2CacheSize (0 until the first window is asked for, or when the device has none). */
  maxSetAsideBytes: number;
  /** The persisting set-aside in effect (set once, to the device's maximum). */
  setAsideBytes: number;
  /** Persisting windows set so far on this device. */
  windows: number;
  /** The last persisting window: its bytes (capped at the device's maximum window) and the fraction that may persist. */
  lastWindowBytes: number;
  lastHitRatio: number;
  /** How the set-aside was obtained when it could not be set (under MPS it is fixed when the server starts). */
  note?: string;
}

/** What backends() reports. */
export interface BackendsInfo {
  cpu: { threads: number; simd: 'avx512' | 'avx2' | 'portable'; features: string[] };
  cuda: {
    compiled: boolean;
    available: boolean;
    devices: {
      index: number; name: string; computeCapability: string; totalMemory: number; multiprocessors: number;
      /** The shared-weight L2 window on this device: whether it is in use and, if not, why. */
      persistingL2: PersistingL2Info;
    }[];
    reason?: string;
    runtimeVersion: number;
    driverVersion: number;
    architectures: string[];
  };
  /**
   * The distributed libraries, loaded at run time (docs/distributed.md): MPI (Open MPI's libmpi.so.40, or
   * $SHAREDFORMER_MPI_LIB) and NCCL (libnccl.so.2, or $SHAREDFORMER_NCCL_LIB) — found or not, and why not.
   */
  distributed: {
    mpi: { found: boolean; library: string; version?: string; reason?: string; initialized: boolean };
    nccl: { found: boolean; library: string; version?: number; reason?: string };
  };
}

/** How the loaded binary was built. */
export interface BuildInfo {
  version: string;
  builder: 'cmake-js' | 'node-gyp' | string;
  cuda: boolean;
  napiVersion: number;
  compiler?: string;
}

/** The functions the native addon exports (the surface lib/ is built on). */
export interface NativeAddon {
  fromArray(data: Float32Array | Int32Array | Uint16Array, shape: number[], dtype: DTypeName, device: string): NativeTensor;
  full(shape: number[], value: number, dtype: DTypeName, device: string, op?: 'full' | 'zeros' | 'ones'): NativeTensor;
  random(
    shape: number[], kind: 'uniform' | 'normal', seed: number | bigint, offset: number | bigint,
    a: number, b: number, dtype: DTypeName, device: string,
  ): NativeTensor;
  memory(): Record<string, DeviceMemory>;
  backends(): BackendsInfo;
  buildInfo(): BuildInfo;
  /** BPE merges (native/core/bpe.h): (left, right, id) triples in rank order, computed off the JavaScript thread. */
  bpeTrain(symbols: Int32Array, offsets: Float64Array, counts: Float64Array, tokens: string[], vocabSize: number, minFrequency: number): Promise<Int32Array>;
  setNumThreads(n: number): void;
  numThreads(): number;
  synchronize(): Promise<void>;
  synchronizeSync(): void;
  emptyCache(): void;
  isHandle(v: unknown): boolean;
  randomInto(t: NativeTensor, kind: 'uniform' | 'normal', seed: number | bigint, offset: number | bigint, a: number, b: number): NativeTensor;
  fillInto(t: NativeTensor, value: number): NativeTensor;
  copyInto(dst: NativeTensor, src: NativeTensor): NativeTensor;
  TensorHandle: Function;
}

/** One place the loader looked, and what happened there. */
export interface LoadAttempt {
  source: string;
  path: string;
  error?: string;
  fix: string;
}

/** The prebuilt packages for this platform, in the order they are tried; `fix` is the advice when one is missing. */
function platformPackages(): { name: string; cuda: boolean; fix: string }[] {
  const plat = `${process.platform}-${process.arch}`;
  const out: { name: string; cuda: boolean; fix: string }[] = [];
  if (plat === 'linux-x64') {
    out.push({
      name: '@sharedformer/linux-x64-cuda',
      cuda: true,
      fix: 'for NVIDIA GPUs: npm install @sharedformer/linux-x64-cuda (needs only the NVIDIA driver)',
    });
  }
  out.push({
    name: `@sharedformer/${plat}`,
    cuda: false,
    fix: plat === 'linux-x64'
      ? `npm install @sharedformer/${plat} (installed automatically as an optional dependency unless --omit=optional or --no-optional was used)`
      : `no prebuilt package exists for ${plat} (only linux-x64 with glibc): build from source (below)`,
  });
  return out;
}

/** Advice for a package that is installed but whose binary did not load. */
function brokenPackageFix(name: string): string {
  return `${name} is installed but its binary did not load: it needs Linux x64 with glibc 2.32+ (2.34+ with CUDA), ` +
    `the C++ runtime of GCC 12+ (GLIBCXX_3.4.30) and Node-API 8 (Node.js 20+); reinstall it (npm install ${name}), ` +
    'or remove it to use the next option';
}

/** Why the installed CUDA package was passed over for another binary (shown in backends().cuda.reason), if it was. */
export function cudaFallbackReason(): string | undefined {
  native();
  return loaded!.cudaNote;
}

function tryLoad(path: string): NativeAddon {
  return require(path) as NativeAddon;
}

/** What loadAddon() found. */
export interface LoadResult {
  /** The loaded addon. */
  addon: NativeAddon;
  /** The file it was loaded from. */
  path: string;
  /** Every place tried, in order; the last one is the one that loaded. */
  attempts: LoadAttempt[];
  /** Set when the CUDA package is installed but another binary was loaded instead, and why. */
  cudaNote?: string;
}

/** Loads the addon, trying each place in order; throws one error that lists all of them. */
export function loadAddon(env: NodeJS.ProcessEnv = process.env): LoadResult {
  const attempts: LoadAttempt[] = [];
  const attempt = (source: string, path: string, fix: string): NativeAddon | undefined => {
    try {
      const addon = tryLoad(path);
      attempts.push({ source, path, fix });
      return addon;
    } catch (e) {
      attempts.push({ source, path, error: (e as Error).message.split('\n')[0], fix });
      return undefined;
    }
  };

  const override = env.SHAREDFORMER_BINARY;
  if (override) {
    const p = resolve(override);
    const a = attempt('SHAREDFORMER_BINARY', p, 'point SHAREDFORMER_BINARY at an existing sharedformer.node, or unset it');
    if (a) return { addon: a, path: p, attempts };
    // An explicit override that fails is an error of its own: do not silently load something else.
    throw loadError(attempts);
  }

  let cudaFailure: string | undefined;
  for (const pkg of platformPackages()) {
    let dir: string;
    try {
      dir = dirname(require.resolve(`${pkg.name}/package.json`, { paths: [packageRoot] }));
    } catch {
      attempts.push({ source: `package ${pkg.name}`, path: `${pkg.name}/sharedformer.node`, error: 'not installed', fix: pkg.fix });
      continue;
    }
    const p = join(dir, 'sharedformer.node');
    if (!existsSync(p)) {
      attempts.push({ source: `package ${pkg.name}`, path: p, error: 'installed without its sharedformer.node', fix: brokenPackageFix(pkg.name) });
      if (pkg.cuda) cudaFailure = `${pkg.name} is installed without its sharedformer.node`;
      continue;
    }
    const a = attempt(`package ${pkg.name}`, p, brokenPackageFix(pkg.name));
    if (a) {
      const cudaNote = cudaFailure && `${cudaFailure}; using the CPU-only binary of ${pkg.name} instead`;
      return { addon: a, path: p, attempts, cudaNote };
    }
    if (pkg.cuda) cudaFailure = `${pkg.name} is installed but could not be loaded (${attempts.at(-1)!.error})`;
  }

  const local = join(packageRoot, 'build', 'Release', 'sharedformer.node');
  const buildFix = `build from source: in ${packageRoot} run \`npm run build\` (cmake-js: install it with \`npm install --save-dev cmake-js\` ` +
    'in your project; needs CMake 3.18+ and a C++17 compiler, and builds the CUDA kernels too when nvcc is on the PATH)';
  if (existsSync(local)) {
    try {
      // `bindings` resolves the module root's build/Release (and its other conventional places).
      const bindings = require('bindings') as (opts: { bindings: string; module_root: string }) => NativeAddon;
      const a = bindings({ bindings: 'sharedformer.node', module_root: packageRoot });
      attempts.push({ source: 'local build', path: local, fix: buildFix });
      return { addon: a, path: local, attempts, cudaNote: cudaFailure && `${cudaFailure}; using the local build instead` };
    } catch (e) {
      attempts.push({ source: 'local build', path: local, error: (e as Error).message.split('\n')[0], fix: buildFix });
    }
  } else {
    attempts.push({ source: 'local build', path: local, error: 'not built', fix: buildFix });
  }
  throw loadError(attempts);
}

function loadError(attempts: LoadAttempt[]): Error {
  const lines = attempts.map((a, i) => `  ${i + 1}. ${a.source}: ${a.path}\n     ${a.error ?? 'loaded'}\n     fix: ${a.fix}`);
  return new Error(
    `sharedformer: could not load the native addon for ${process.platform}-${process.arch} (Node ${process.version}).\n` +
      `Tried, in order:\n${lines.join('\n')}`,
  );
}

let loaded: LoadResult | undefined;

/** The addon for this thread (loaded on first use). */
export function native(): NativeAddon {
  loaded ??= loadAddon();
  return loaded.addon;
}

/** Where the addon was loaded from, and what was tried first. */
export function nativeLocation(): { path: string; attempts: LoadAttempt[] } {
  native();
  return { path: loaded!.path, attempts: loaded!.attempts };
}
