// checkpoint.ts — saving and loading a model's parameters as a standard safetensors file. Each unique parameter is
// stored once under its stable name (e.g. 'attn.0.wq.weight'); the model config and the sharing plan go into
// __metadata__, so that a checkpoint whose plan differs from the model's is refused. Writes are atomic
// (safetensors.ts: temp file, fsync, rename), and a round trip is bit-exact. The safetensors format has no checksum, so
// a checkpoint also records the SHA-256 of its tensors (names, dtypes, shapes and bytes) in __metadata__.data_sha256,
// and loading refuses a file whose tensors no longer match it (a flipped bit, a file patched by hand).
import { createHash } from 'node:crypto';
import { loadSafetensors, saveSafetensors, saveSafetensorsAsync, type SafeTensor } from './safetensors.ts';
import { tensor } from '../tensor.ts';
import { native } from '../native.ts';
import type { ParameterStore } from '../params.ts';

/** What a checkpoint's metadata says about the model that wrote it (Model.meta()); load checks it against the model. */
export interface CheckpointMeta {
  /** What kind of model ('decoder', ...). */
  model: string;
  /** The model's config, as JSON. */
  config: string;
  /** The sharing plan's per-layer assignment, as JSON. */
  plan: string;
}

/** The metadata key of the tensors' checksum. */
export const CHECKSUM_KEY = 'data_sha256';

/**
 * SHA-256 over every tensor, in name order (by UTF-8 bytes): name, dtype, shape, then the little-endian element bytes.
 * The same for a map built to be written and for one read back from the file.
 */
export function tensorsDigest(tensors: Map<string, SafeTensor>): string {
  const h = createHash('sha256');
  const names = [...tensors.keys()].sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
  for (const name of names) {
    const t = tensors.get(name)!;
    h.update(`${name}\0${t.dtype}\0${t.shape.join(',')}\0`);
    h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)); // host order; little-endian hosts
  }
  return h.digest('hex');
}

/**
 * Writes every parameter of `store` (waiting for queued work first) with `meta` in __metadata__, plus optional extra
 * metadata and extra flat tensors (a trainer's optimizer moments, say; their names must not collide with parameters).
 * With `requireFinite`, a NaN or infinity in the parameters or the extra tensors throws before anything is written
 * (the message starts with requireFinite.who and ends with requireFinite.when), so an existing file is kept.
 */
export function saveCheckpoint(
  path: string, store: ParameterStore, meta: CheckpointMeta, extra: Record<string, string> = {}, extraTensors: Map<string, Float32Array> = new Map(),
  requireFinite?: { who: string; when: string },
): void {
  const { tensors, metadata } = checkpointContents(path, store, store.values.dataSync() as Float32Array, meta, extra, extraTensors, requireFinite);
  saveSafetensors(path, tensors, metadata);
}

/**
 * saveCheckpoint without blocking the event loop: `values` is the store's flat parameter buffer as read by the caller
 * (`await store.values.data()`, enqueued together with any other reads it must be consistent with); the checks are
 * the same and run before anything is written; the file is written atomically by saveSafetensorsAsync.
 */
export async function saveCheckpointAsync(
  path: string, store: ParameterStore, values: Float32Array, meta: CheckpointMeta, extra: Record<string, string> = {},
  extraTensors: Map<string, Float32Array> = new Map(), requireFinite?: { who: string; when: string },
): Promise<void> {
  const { tensors, metadata } = checkpointContents(path, store, values, meta, extra, extraTensors, requireFinite);
  await saveSafetensorsAsync(path, tensors, metadata);
}

/** What saveCheckpoint writes: the parameters cut out of the flat `all`, the extra tensors, and the metadata. */
function checkpointContents(
  path: string, store: ParameterStore, all: Float32Array, meta: CheckpointMeta, extra: Record<string, string>,
  extraTensors: Map<string, Float32Array>, requireFinite?: { who: string; when: string },
): { tensors: Map<string, SafeTensor>; metadata: Record<string, string> } {
  const tensors = new Map<string, SafeTensor>();
  if (requireFinite) {
    for (const [what, a] of [['parameters', all], ...extraTensors] as [string, Float32Array][]) {
      const i = a.findIndex((x) => !Number.isFinite(x));
      if (i < 0) continue;
      const q = what === 'parameters' ? store.parameters.find((r) => i >= r.offset && i < r.offset + r.size) : undefined;
      // the element's position among the parameters (the packed layout, as before the alignment padding existed)
      const at = q ? i - q.offset + q.packedOffset : i;
      throw new Error(`${requireFinite.who}: ${what}${q ? ` (${q.name})` : ''} element ${at} is ${a[i]} ${requireFinite.when}; not writing ${path} (the previous checkpoint is kept)`);
    }
  }
  for (const p of store.parameters)
    tensors.set(p.name, { dtype: 'F32', shape: p.shape, data: all.slice(p.offset, p.offset + p.size) });
  for (const [k, v] of extraTensors) {
    if (tensors.has(k)) throw new Error(`saveCheckpoint: extra tensor '${k}' collides with a parameter`);
    tensors.set(k, { dtype: 'F32', shape: [v.length], data: v });
  }
  return { tensors, metadata: { format: 'sharedformer', ...extra, ...meta, [CHECKSUM_KEY]: tensorsDigest(tensors) } };
}

/**
 * The keys in which two JSON values differ, each as `key: a -> b` (nested objects as dotted keys, a missing key as
 * "absent").
 */
export function differingKeys(a: unknown, b: unknown): string[] {
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  const show = (v: unknown) => (v === undefined ? 'absent' : JSON.stringify(v));
  const diffs: string[] = [];
  const walk = (p: unknown, q: unknown, key: string) => {
    if (isObject(p) && isObject(q)) {
      for (const k of new Set([...Object.keys(p), ...Object.keys(q)])) walk(p[k], q[k], key ? `${key}.${k}` : k);
    } else if (JSON.stringify(p) !== JSON.stringify(q)) diffs.push(`${key || '(value)'}: ${show(p)} -> ${show(q)}`);
  };
  walk(a, b, '');
  return diffs;
}

/** How two JSON texts differ: differingKeys when both are objects, else both texts. */
function jsonDifference(a: string | undefined, b: string): string {
  const parse = (t: string | undefined): unknown => {
    try {
      return t === undefined ? undefined : JSON.parse(t);
    } catch {
      return undefined;
    }
  };
  const x = parse(a), y = parse(b);
  const d = typeof x === 'object' && x !== null && typeof y === 'object' && y !== null ? differingKeys(x, y) : [];
  return d.length ? `${d.join(', ')} (the checkpoint's value -> the model's)` : `${a} (the model has ${b})`;
}

/**
 * Reads a checkpoint into `store`: the model kind, config and plan must equal `expect`, and every parameter must be
 * present with its exact shape and dtype (no more, no less). The extra tensors are read into the caller's arrays, then
 * `check` (a trainer's, say) sees the metadata and may throw too; only then are the parameters written, in one copy.
 * A failed load leaves the store as it was.
 */
export function loadCheckpoint(
  path: string, store: ParameterStore, expect: CheckpointMeta, extraTensors: Map<string, Float32Array> = new Map(),
  check?: (metadata: Record<string, string>) => void,
): Record<string, string> {
  const file = loadSafetensors(path);
  const md = file.metadata;
  if (md.format !== 'sharedformer') throw new Error(`loadCheckpoint: ${path} is not a sharedformer checkpoint (metadata format = ${JSON.stringify(md.format)})`);
  // Files written before the checksum existed have none; a file that has one must match it.
  if (md[CHECKSUM_KEY] !== undefined && md[CHECKSUM_KEY] !== tensorsDigest(file.tensors))
    throw new Error(`loadCheckpoint: ${path} is corrupt: its tensors do not match the SHA-256 recorded when it was written (${CHECKSUM_KEY} ${md[CHECKSUM_KEY].slice(0, 16)}...)`);
  for (const k of ['model', 'config', 'plan'] as const)
    if (md[k] !== expect[k]) throw new Error(`loadCheckpoint: ${path} holds a different ${k}: ${jsonDifference(md[k], expect[k])}`);
  const names = new Set(store.parameters.map((p) => p.name));
  for (const k of file.tensors.keys())
    if (!names.has(k) && !extraTensors.has(k)) throw new Error(`loadCheckpoint: ${path} has an unexpected tensor '${k}'`);
  for (const [k, dst] of extraTensors) {
    const t = file.tensors.get(k);
    if (!t || t.dtype !== 'F32' || t.shape.length !== 1 || t.shape[0] !== dst.length)
      throw new Error(`loadCheckpoint: ${path} lacks '${k}' as F32 [${dst.length}]`);
  }
  for (const p of store.parameters) {
    const t = file.tensors.get(p.name);
    if (!t) throw new Error(`loadCheckpoint: ${path} lacks the parameter '${p.name}'`);
    if (t.dtype !== 'F32') throw new Error(`loadCheckpoint: '${p.name}' in ${path} is ${t.dtype}, expected F32`);
    if (t.shape.join() !== p.shape.join())
      throw new RangeError(`loadCheckpoint: '${p.name}' in ${path} has shape [${t.shape.join(', ')}], the model expects [${p.shape.join(', ')}]`);
  }
  for (const [k, dst] of extraTensors) dst.set(file.tensors.get(k)!.data as Float32Array); // the caller's own arrays
  check?.(md);
  // One host copy of the whole flat buffer, then one copy into the store: a failed allocation changes nothing. The
  // alignment padding between parameters (never in the file: each parameter is its own tensor) is written as 0.
  const all = new Float32Array(store.length);
  for (const p of store.parameters) all.set(file.tensors.get(p.name)!.data as Float32Array, p.offset);
  const src = tensor(all, [store.length], { device: store.device });
  try {
    native().copyInto(store.values.handle, src.handle);
  } finally {
    src.dispose();
  }
  return md;
}
