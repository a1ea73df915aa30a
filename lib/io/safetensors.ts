// safetensors.ts — a strict reader and an atomic writer of the standard safetensors format
// (https://github.com/huggingface/safetensors), for the three dtypes sharedformer keeps on the host: F32, I32, BF16.
//
// Layout: an 8-byte little-endian unsigned header length N; N bytes of UTF-8 JSON (an object mapping each tensor name
// to {"dtype", "shape", "data_offsets": [begin, end]}, plus an optional "__metadata__" object of string -> string),
// padded with spaces to a multiple of 8 bytes; then the data buffer, where each tensor's raw little-endian, row-major
// bytes lie at [begin, end) relative to the first byte after the header, and the ranges tile the buffer exactly.
//
// Errors: anything wrong with the *contents* of a buffer or file throws SafetensorsError (and nothing else: no
// SyntaxError, no RangeError from an allocation, no crash), with a message naming the source, the tensor and the
// values. Wrong *arguments* from the programmer (a metadata value that is not a string, a data array that does not
// match the dtype, a bad shape) throw TypeError / RangeError, as the rest of the library does. I/O errors from the
// file system (ENOENT, EACCES, ENOSPC, ...) are passed through unchanged, with their `code`.
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { open as openAsync, rename as renameAsync, unlink as unlinkAsync } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { endianness } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { checkInt, checkOptions, describe, isPlainObject, showJson, typeOf } from '../validate.ts';

/** The safetensors dtypes sharedformer reads and writes. */
export type SafeDType = 'F32' | 'I32' | 'BF16';

/** One tensor of a safetensors file, on the host. */
export interface SafeTensor {
  dtype: SafeDType;
  shape: number[];
  /** F32 -> Float32Array, I32 -> Int32Array, BF16 -> Uint16Array holding the raw bfloat16 bits. */
  data: Float32Array | Int32Array | Uint16Array;
}

/** A whole safetensors file: named tensors and the string metadata of `__metadata__`. */
export interface SafeFile {
  tensors: Map<string, SafeTensor>;
  metadata: Record<string, string>;
}

/** Options of decodeSafetensors(). */
export interface DecodeOptions {
  /** Largest header accepted, in bytes (default 100_000_000, the reference implementation's limit). */
  maxHeaderBytes?: number;
  /** What to call the input in error messages (default '<buffer>'; loadSafetensors uses the path). */
  source?: string;
}

/** Every problem with the contents of a safetensors buffer or file. */
export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

/** The reference implementation's header limit (MAX_HEADER_SIZE). */
export const DEFAULT_MAX_HEADER_BYTES = 100_000_000;

const SUPPORTED = ['F32', 'I32', 'BF16'] as const;
/** Standard safetensors dtypes that this reader recognises but does not support. */
const KNOWN_UNSUPPORTED = new Set([
  'BOOL', 'U8', 'I8', 'F8_E5M2', 'F8_E4M3', 'F8_E8M0', 'F4', 'F6_E2M3', 'F6_E3M2', 'I16', 'U16', 'F16', 'U32', 'F64',
  'I64', 'U64', 'C64',
]);
const ELEMENT_BYTES: Record<SafeDType, number> = { F32: 4, I32: 4, BF16: 2 };
/**
 * Writer order of the dtype blocks, as in the reference writer (descending dtype order, then name): it keeps every
 * tensor aligned to its element size within the data buffer, and makes our bytes identical to Python's save_file.
 */
const DTYPE_RANK: Record<SafeDType, number> = { F32: 0, I32: 1, BF16: 2 };
const ARRAY_OF: Record<SafeDType, { new (n: number): Float32Array | Int32Array | Uint16Array; name: string }> = {
  F32: Float32Array,
  I32: Int32Array,
  BF16: Uint16Array,
};
const TENSOR_FIELDS = ['dtype', 'shape', 'data_offsets'];
const LITTLE_ENDIAN = endianness() === 'LE';
/** readSync/writeSync take at most 2^31 - 1 bytes a call. */
const IO_CHUNK = 1 << 30;

// ---------------------------------------------------------------------------------------------------------------
// helpers

/** True when s has an unpaired UTF-16 surrogate (it could not be written as UTF-8 without loss). */
function hasLoneSurrogate(s: string): boolean {
  return /[\uD800-\uDFFF]/u.test(s);
}

function byteSwap(bytes: Uint8Array, width: number): void {
  for (let i = 0; i + width <= bytes.length; i += width) {
    for (let a = i, b = i + width - 1; a < b; a++, b--) {
      const x = bytes[a];
      bytes[a] = bytes[b];
      bytes[b] = x;
    }
  }
}

function bytesOf(a: Float32Array | Int32Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

// ---------------------------------------------------------------------------------------------------------------
// writer

interface Prepared {
  /** The 8-byte length prefix and the padded JSON header. */
  head: Buffer;
  /** Each tensor's little-endian bytes, in file order. */
  parts: Uint8Array[];
  total: number;
}

function prepare(fn: string, tensors: unknown, metadata: unknown): Prepared {
  let entries: [string, unknown][];
  if (tensors instanceof Map) {
    entries = [];
    for (const [k, v] of tensors) {
      if (typeof k !== 'string') throw new TypeError(`${fn}: tensor names must be strings, got ${typeOf(k)} ${showJson(k)}`);
      entries.push([k, v]);
    }
  } else if (isPlainObject(tensors)) {
    entries = Object.entries(tensors);
  } else {
    throw new TypeError(`${fn}: tensors must be a Map<string, SafeTensor> or a plain object, got ${typeOf(tensors)}`);
  }

  // Validate every tensor before anything is built or written.
  const items = entries.map(([name, t]) => {
    const what = `${fn}: tensor ${showJson(name)}`;
    if (name.length === 0) throw new RangeError(`${fn}: tensor names must be non-empty`);
    if (name === '__metadata__') throw new RangeError(`${fn}: "__metadata__" is reserved and cannot name a tensor`);
    if (hasLoneSurrogate(name)) throw new RangeError(`${what}: the name has an unpaired surrogate (not valid UTF-8)`);
    if (!isPlainObject(t)) throw new TypeError(`${what}: expected {dtype, shape, data}, got ${typeOf(t)}`);
    const { dtype, shape, data } = t as Partial<SafeTensor>;
    if (typeof dtype !== 'string' || !(SUPPORTED as readonly string[]).includes(dtype)) {
      throw new TypeError(`${what}: dtype must be one of ${SUPPORTED.join(', ')}, got ${showJson(dtype)}`);
    }
    const dt = dtype as SafeDType;
    const Ctor = ARRAY_OF[dt];
    if (!(data instanceof Ctor)) {
      const got = ArrayBuffer.isView(data) ? data.constructor.name : typeOf(data);
      throw new TypeError(`${what}: dtype ${dt} needs its data in a ${Ctor.name}, got ${got}`);
    }
    if (!Array.isArray(shape)) throw new TypeError(`${what}: shape must be an array, got ${typeOf(shape)}`);
    let count = 1;
    for (let i = 0; i < shape.length; i++) {
      const d = shape[i];
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
        throw new RangeError(`${what}: shape[${i}] must be a non-negative safe integer, got ${showJson(d)} in shape ${showJson(shape)}`);
      }
      count *= d;
    }
    if (!Number.isSafeInteger(count)) throw new RangeError(`${what}: shape ${showJson(shape)} has too many elements`);
    if (data.length !== count) {
      throw new RangeError(`${what}: shape ${showJson(shape)} holds ${count} elements but data has ${data.length}`);
    }
    return { name, key: Buffer.from(name, 'utf8'), dtype: dt, shape: shape.slice() as number[], data };
  });

  let meta: [string, string][] = [];
  if (metadata !== undefined) {
    if (!isPlainObject(metadata)) throw new TypeError(`${fn}: metadata must be a plain object of strings, got ${typeOf(metadata)}`);
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') {
        throw new TypeError(`${fn}: metadata value ${showJson(k)} must be a string, got ${typeOf(v)} ${showJson(v)}`);
      }
      if (hasLoneSurrogate(k) || hasLoneSurrogate(v)) {
        throw new RangeError(`${fn}: metadata entry ${showJson(k)} has an unpaired surrogate (not valid UTF-8)`);
      }
      meta.push([k, v]);
    }
    meta = meta.sort((a, b) => Buffer.compare(Buffer.from(a[0], 'utf8'), Buffer.from(b[0], 'utf8')));
  }

  // Order: dtype block (F32, I32, BF16), then name by UTF-8 bytes — the reference writer's order.
  items.sort((a, b) => DTYPE_RANK[a.dtype] - DTYPE_RANK[b.dtype] || Buffer.compare(a.key, b.key));

  const fields: string[] = [];
  if (meta.length > 0) {
    fields.push(`"__metadata__":{${meta.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`);
  }
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const it of items) {
    const n = it.data.byteLength;
    fields.push(
      `${JSON.stringify(it.name)}:{"dtype":"${it.dtype}","shape":[${it.shape.join(',')}],"data_offsets":[${offset},${offset + n}]}`,
    );
    offset += n;
    let bytes = bytesOf(it.data);
    if (!LITTLE_ENDIAN && ELEMENT_BYTES[it.dtype] > 1) {
      bytes = bytes.slice();
      byteSwap(bytes, ELEMENT_BYTES[it.dtype]);
    }
    parts.push(bytes);
  }
  const json = Buffer.from(`{${fields.join(',')}}`, 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  if (padded > DEFAULT_MAX_HEADER_BYTES) {
    throw new RangeError(`${fn}: the header would be ${padded} bytes, over the ${DEFAULT_MAX_HEADER_BYTES}-byte limit readers enforce`);
  }
  const head = Buffer.alloc(8 + padded, 0x20);
  head.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(head, 8);
  return { head, parts, total: head.length + offset };
}

/** Serialises tensors (and optional string metadata) to the bytes of a safetensors file; deterministic. */
export function encodeSafetensors(
  tensors: Map<string, SafeTensor> | Record<string, SafeTensor>,
  metadata?: Record<string, string>,
): Buffer {
  const { head, parts, total } = prepare('encodeSafetensors', tensors, metadata);
  const out = Buffer.allocUnsafe(total);
  head.copy(out, 0);
  let at = head.length;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let at = 0; at < bytes.length; ) {
    at += writeSync(fd, bytes, at, Math.min(IO_CHUNK, bytes.length - at));
  }
}

/**
 * Writes a safetensors file atomically: everything is validated first, then written to `${path}.tmp-<pid>-<random>`
 * in the same folder, fsynced, renamed over `path`, and the folder is fsynced. On any error the temporary file is
 * removed and an existing `path` is left as it was.
 */
export function saveSafetensors(
  path: string,
  tensors: Map<string, SafeTensor> | Record<string, SafeTensor>,
  metadata?: Record<string, string>,
): void {
  if (typeof path !== 'string' || path.length === 0) {
    throw new TypeError(`saveSafetensors: path must be a non-empty string, got ${typeOf(path)} ${showJson(path)}`);
  }
  const { head, parts } = prepare('saveSafetensors', tensors, metadata);
  writeFileAtomic(path, [head, ...parts]);
}

/**
 * Writes a file atomically: to `${path}.tmp-<pid>-<random>` in the same folder, fsynced, renamed over `path`, then
 * the folder is fsynced. On any error the temporary file is removed and an existing `path` is left as it was.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array | readonly Uint8Array[]): void {
  const parts = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : data instanceof Uint8Array ? [data] : data;
  const dir = dirname(path);
  const tmp = join(dir, `${basename(path)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'wx', 0o666);
    for (const p of parts) writeAll(fd, p);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
  } catch (err) {
    if (fd !== undefined) {
      try {
        closeSync(fd);
      } catch {
        /* already failing */
      }
    }
    try {
      unlinkSync(tmp);
    } catch {
      /* it may never have been created */
    }
    throw err;
  }
  syncDirectory(dir);
}

/**
 * saveSafetensors without blocking the event loop: validated and laid out first (synchronously, as saveSafetensors
 * does: the same errors), then written, fsynced and renamed by writeFileAtomicAsync. The caller must not change the
 * tensors' arrays until the promise settles.
 */
export async function saveSafetensorsAsync(
  path: string,
  tensors: Map<string, SafeTensor> | Record<string, SafeTensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  if (typeof path !== 'string' || path.length === 0) {
    throw new TypeError(`saveSafetensors: path must be a non-empty string, got ${typeOf(path)} ${showJson(path)}`);
  }
  const { head, parts } = prepare('saveSafetensors', tensors, metadata);
  await writeFileAtomicAsync(path, [head, ...parts]);
}

/**
 * writeFileAtomic without blocking the event loop (the writes, fsyncs and rename run on libuv's threads): the same
 * temporary file, the same order (write, fsync, close, rename, fsync the folder), the same cleanup on any error.
 */
export async function writeFileAtomicAsync(path: string, data: string | Uint8Array | readonly Uint8Array[]): Promise<void> {
  const parts = typeof data === 'string' ? [Buffer.from(data, 'utf8')] : data instanceof Uint8Array ? [data] : data;
  const dir = dirname(path);
  const tmp = join(dir, `${basename(path)}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  let fh: Awaited<ReturnType<typeof openAsync>> | undefined;
  try {
    fh = await openAsync(tmp, 'wx', 0o666);
    for (const p of parts)
      for (let at = 0; at < p.length; ) at += (await fh.write(p, at, Math.min(IO_CHUNK, p.length - at))).bytesWritten;
    await fh.sync();
    const h = fh;
    fh = undefined;
    await h.close();
    await renameAsync(tmp, path);
  } catch (err) {
    if (fh !== undefined) await fh.close().catch(() => undefined); // already failing
    await unlinkAsync(tmp).catch(() => undefined); // it may never have been created
    throw err;
  }
  await syncDirectoryAsync(dir);
}

/** syncDirectory, asynchronously. */
async function syncDirectoryAsync(dir: string): Promise<void> {
  if (process.platform === 'win32') return;
  let fh: Awaited<ReturnType<typeof openAsync>> | undefined;
  try {
    fh = await openAsync(dir, 'r');
    await fh.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!DIR_SYNC_SKIPPED.includes(code ?? '')) throw err;
  } finally {
    if (fh !== undefined) await fh.close();
  }
}

// fsync of a folder is not possible on some file systems and platforms: these errors skip it.
const DIR_SYNC_SKIPPED = ['EINVAL', 'ENOTSUP', 'EOPNOTSUPP', 'EISDIR', 'EPERM', 'EACCES', 'EBADF'];

/** Makes the rename durable. Not possible on Windows, nor on some file systems; those cases are skipped. */
function syncDirectory(dir: string): void {
  if (process.platform === 'win32') return;
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (!DIR_SYNC_SKIPPED.includes(code ?? '')) throw err;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// reader

interface Entry {
  name: string;
  dtype: SafeDType;
  shape: number[];
  begin: number;
  end: number;
}

interface Header {
  entries: Entry[];
  metadata: Record<string, string>;
}

function fail(source: string, msg: string): never {
  throw new SafetensorsError(`safetensors ${source}: ${msg}`);
}

/** Reads and checks the 8-byte prefix; returns N. */
function headerLength(prefix: Uint8Array, fileBytes: number, maxHeaderBytes: number, source: string): number {
  if (fileBytes < 8) fail(source, `file is ${fileBytes} bytes, shorter than the 8-byte header length`);
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const n = view.getBigUint64(0, true);
  if (n === 0n) fail(source, 'header length is 0 (the header must hold at least "{}")');
  if (n > BigInt(maxHeaderBytes)) fail(source, `header length ${n} exceeds the limit of ${maxHeaderBytes} bytes`);
  if (n > BigInt(fileBytes - 8)) fail(source, `header length ${n} exceeds the ${fileBytes - 8} bytes after the length field`);
  return Number(n);
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * A light token scan of a header that JSON.parse has already accepted: rejects duplicate keys in any object (JSON.parse
 * silently keeps the last) and numbers that are not plain non-negative integers (1.0, 1e3, -0; the reference parser
 * reads offsets and shapes as unsigned integers and rejects these too).
 */
function scanHeader(s: string, source: string): void {
  // One frame per open container; for objects, the keys seen so far and the key whose value is being read.
  const stack: { keys: Set<string> | null; expectKey: boolean; key: string }[] = [];
  const where = () => {
    const path = stack.filter((f) => f.keys && !f.expectKey).map((f) => showJson(f.key));
    return path.length > 0 ? ` (at ${path.join(' > ')})` : '';
  };
  for (let i = 0; i < s.length; ) {
    const c = s.charCodeAt(i);
    if (c === 0x7b /* { */) {
      stack.push({ keys: new Set(), expectKey: true, key: '' });
      i++;
    } else if (c === 0x5b /* [ */) {
      stack.push({ keys: null, expectKey: false, key: '' });
      i++;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
      i++;
    } else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top && top.keys) top.expectKey = true;
      i++;
    } else if (c === 0x22 /* " */) {
      let j = i + 1;
      for (;;) {
        const k = s.indexOf('"', j);
        if (k < 0) fail(source, 'header JSON has an unterminated string'); // unreachable after JSON.parse
        let slashes = 0;
        while (s.charCodeAt(k - 1 - slashes) === 0x5c) slashes++;
        j = k + 1;
        if (slashes % 2 === 0) break;
      }
      const top = stack[stack.length - 1];
      if (top && top.keys && top.expectKey) {
        const raw = s.slice(i, j);
        const key = raw.includes('\\') ? (JSON.parse(raw) as string) : raw.slice(1, -1);
        if (top.keys.has(key)) fail(source, `header JSON has the key ${showJson(key)} twice${where()}`);
        top.keys.add(key);
        top.key = key;
        top.expectKey = false;
      }
      i = j;
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      let j = i + 1;
      while (j < s.length && /[-+.eE0-9]/.test(s[j])) j++;
      const tok = s.slice(i, j);
      if (!/^(?:0|[1-9][0-9]*)$/.test(tok)) {
        fail(source, `header JSON has the number ${tok.length > 40 ? `${tok.slice(0, 37)}...` : tok}${where()}; only non-negative integers are valid in a header`);
      }
      i = j;
    } else {
      i++; // whitespace, ':', and the letters of true/false/null
    }
  }
}

/**
 * A valid header nests at most 3 deep (the root object, a tensor's object, its shape array). Checked before JSON.parse,
 * which is slow on hostile input nested millions deep. Strings are skipped; on malformed JSON this is only a heuristic,
 * and JSON.parse then reports the syntax error.
 */
const MAX_DEPTH = 3;
function checkDepth(s: string, source: string): void {
  let depth = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22 /* " */) {
      for (;;) {
        const k = s.indexOf('"', i + 1);
        if (k < 0) return; // unterminated: JSON.parse will say so
        let slashes = 0;
        while (s.charCodeAt(k - 1 - slashes) === 0x5c) slashes++;
        i = k;
        if (slashes % 2 === 0) break;
      }
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > MAX_DEPTH) fail(source, `header JSON nests deeper than the ${MAX_DEPTH} levels a safetensors header has (at character ${i})`);
    } else if (c === 0x7d || c === 0x5d) {
      depth--;
    }
  }
}

function parseHeader(bytes: Uint8Array, dataBytes: number, source: string): Header {
  try {
    return checkHeader(bytes, dataBytes, source);
  } catch (err) {
    if (err instanceof SafetensorsError) throw err;
    // A safety net: whatever a hostile header provokes (say, a stack overflow) still reads as a bad file.
    throw new SafetensorsError(`safetensors ${source}: header could not be validated (${(err as Error)?.message ?? String(err)})`, { cause: err });
  }
}

function checkHeader(bytes: Uint8Array, dataBytes: number, source: string): Header {
  if (bytes[0] !== 0x7b) fail(source, `header must start with "{", found byte 0x${bytes[0].toString(16).padStart(2, '0')}`);
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    fail(source, 'header is not valid UTF-8');
  }
  checkDepth(text, source);
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (err) {
    fail(source, `header is not valid JSON (${(err as Error).message})`);
  }
  if (!isPlainObject(root)) fail(source, `header must be a JSON object, got ${typeOf(root)}`);
  scanHeader(text, source);

  let metadata: Record<string, string> = {};
  const entries: Entry[] = [];
  for (const name of Object.keys(root)) {
    const info = root[name];
    if (name === '__metadata__') {
      if (!isPlainObject(info)) fail(source, `__metadata__ must be an object of strings, got ${typeOf(info)}`);
      const pairs: [string, string][] = [];
      for (const k of Object.keys(info)) {
        const v = info[k];
        if (typeof v !== 'string') fail(source, `__metadata__ value ${showJson(k)} must be a string, got ${typeOf(v)} ${showJson(v)}`);
        if (hasLoneSurrogate(k) || hasLoneSurrogate(v)) fail(source, `__metadata__ entry ${showJson(k)} has an unpaired surrogate escape (not valid UTF-8)`);
        pairs.push([k, v]);
      }
      metadata = Object.fromEntries(pairs); // defines own properties, "__proto__" included
      continue;
    }
    const what = `tensor ${showJson(name)}`;
    if (name.length === 0) fail(source, 'a tensor has an empty name');
    // JSON can escape a lone surrogate ("\ud800"); such a name is not Unicode text, and the writer refuses it too.
    if (hasLoneSurrogate(name)) fail(source, `${what}: the name has an unpaired surrogate escape (not valid UTF-8)`);
    if (!isPlainObject(info)) fail(source, `${what}: entry must be an object {dtype, shape, data_offsets}, got ${typeOf(info)} ${showJson(info)}`);
    for (const k of Object.keys(info)) {
      if (!TENSOR_FIELDS.includes(k)) fail(source, `${what}: unexpected field ${showJson(k)} (expected dtype, shape, data_offsets)`);
    }
    const { dtype, shape, data_offsets: offsets } = info;
    if (typeof dtype !== 'string' || !(SUPPORTED as readonly string[]).includes(dtype)) {
      const known = typeof dtype === 'string' && KNOWN_UNSUPPORTED.has(dtype) ? ' (a standard safetensors dtype, but not supported by sharedformer)' : '';
      fail(source, `${what}: dtype ${showJson(dtype)}${known} is not supported; supported dtypes: ${SUPPORTED.join(', ')}`);
    }
    const dt = dtype as SafeDType;
    if (!Array.isArray(shape)) fail(source, `${what}: shape must be an array, got ${typeOf(shape)} ${showJson(shape)}`);
    let count = 1;
    for (let i = 0; i < shape.length; i++) {
      const d = shape[i];
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
        fail(source, `${what}: shape[${i}] must be a non-negative safe integer, got ${showJson(d)} in shape ${showJson(shape)}`);
      }
      count *= d; // may round once past 2^53, but then it exceeds any buffer and fails the size check below
    }
    if (!Array.isArray(offsets) || offsets.length !== 2) {
      fail(source, `${what}: data_offsets must be an array [begin, end], got ${showJson(offsets)}`);
    }
    const [begin, end] = offsets as unknown[];
    for (const v of [begin, end]) {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
        fail(source, `${what}: data_offsets must be non-negative safe integers, got ${showJson(offsets)}`);
      }
    }
    const b = begin as number;
    const e = end as number;
    if (b > e) fail(source, `${what}: data_offsets [${b}, ${e}] begin after they end`);
    if (e > dataBytes) fail(source, `${what}: data_offsets [${b}, ${e}] end beyond the ${dataBytes}-byte data buffer`);
    const want = count * ELEMENT_BYTES[dt];
    if (want !== e - b) {
      fail(source, `${what}: dtype ${dt} shape ${showJson(shape)} needs ${Number.isSafeInteger(want) ? want : 'more than 2^53'} bytes but data_offsets [${b}, ${e}] span ${e - b}`);
    }
    entries.push({ name, dtype: dt, shape: (shape as number[]).slice(), begin: b, end: e });
  }

  // The ranges must tile [0, dataBytes) exactly: no overlap, no hole, nothing after the last tensor.
  const sorted = entries.slice().sort((x, y) => x.begin - y.begin || x.end - y.end);
  let at = 0;
  let prev: Entry | undefined;
  for (const t of sorted) {
    if (t.begin < at) {
      fail(source, `tensor ${showJson(t.name)}: data_offsets [${t.begin}, ${t.end}] overlap tensor ${showJson(prev!.name)} at [${prev!.begin}, ${prev!.end}]`);
    }
    if (t.begin > at) {
      fail(source, `tensor ${showJson(t.name)}: data_offsets [${t.begin}, ${t.end}] leave a hole of ${t.begin - at} bytes at [${at}, ${t.begin}) (ranges must be contiguous)`);
    }
    at = t.end;
    prev = t;
  }
  if (at !== dataBytes) {
    fail(source, `${dataBytes - at} trailing bytes after the last tensor (the tensors cover [0, ${at}) of a ${dataBytes}-byte data buffer)`);
  }
  return { entries, metadata };
}

function allocate(e: Entry, source: string): Float32Array | Int32Array | Uint16Array {
  try {
    return new ARRAY_OF[e.dtype]((e.end - e.begin) / ELEMENT_BYTES[e.dtype]);
  } catch (err) {
    fail(source, `tensor ${showJson(e.name)}: cannot allocate ${e.end - e.begin} bytes (${(err as Error).message})`);
  }
}

function finish(e: Entry, data: Float32Array | Int32Array | Uint16Array): SafeTensor {
  if (!LITTLE_ENDIAN) byteSwap(bytesOf(data), ELEMENT_BYTES[e.dtype]);
  return { dtype: e.dtype, shape: e.shape, data };
}

function decodeOptions(fn: string, opts: DecodeOptions | undefined): { max: number; source?: string } {
  const o = checkOptions(fn, opts);
  const max = o.maxHeaderBytes === undefined ? DEFAULT_MAX_HEADER_BYTES : checkInt(fn, o.maxHeaderBytes, 'maxHeaderBytes', 2, Number.MAX_SAFE_INTEGER);
  if (o.source !== undefined && typeof o.source !== 'string') throw new TypeError(`${fn}: source must be a string, got ${describe(o.source)}`);
  return { max, source: o.source };
}

/** Parses and validates the bytes of a safetensors file; every tensor's data is copied into a fresh, aligned array. */
export function decodeSafetensors(buf: Uint8Array, opts?: DecodeOptions): SafeFile {
  if (!(buf instanceof Uint8Array)) throw new TypeError(`decodeSafetensors: expected a Uint8Array or Buffer, got ${typeOf(buf)}`);
  const { max, source = '<buffer>' } = decodeOptions('decodeSafetensors', opts);
  const n = headerLength(buf.subarray(0, 8), buf.length, max, source);
  const dataStart = 8 + n;
  const { entries, metadata } = parseHeader(buf.subarray(8, dataStart), buf.length - dataStart, source);
  const tensors = new Map<string, SafeTensor>();
  for (const e of entries) {
    const data = allocate(e, source);
    bytesOf(data).set(buf.subarray(dataStart + e.begin, dataStart + e.end));
    tensors.set(e.name, finish(e, data));
  }
  return { tensors, metadata };
}

function readExactly(fd: number, into: Uint8Array, position: number, source: string, what: string): void {
  for (let at = 0; at < into.length; ) {
    const got = readSync(fd, into, at, Math.min(IO_CHUNK, into.length - at), position + at);
    if (got === 0) fail(source, `file ended while reading ${what} (it was truncated while being read?)`);
    at += got;
  }
}

/**
 * Opens `path`, then reads and validates its header against the file's size (before any large allocation). `fn`
 * names the caller in errors. The caller reads any tensor data from `fd` and closes it.
 */
function openWithHeader(fn: string, path: string, opts: DecodeOptions | undefined) {
  if (typeof path !== 'string' || path.length === 0) {
    throw new TypeError(`${fn}: path must be a non-empty string, got ${typeOf(path)} ${showJson(path)}`);
  }
  const { max, source = path } = decodeOptions(fn, opts);
  const fd = openSync(path, 'r');
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) fail(source, 'not a regular file');
    const size = st.size;
    const prefix = new Uint8Array(8);
    if (size >= 8) readExactly(fd, prefix, 0, source, 'the header length');
    const n = headerLength(prefix, size, max, source);
    const head = new Uint8Array(n);
    readExactly(fd, head, 8, source, 'the header');
    const dataStart = 8 + n;
    const { entries, metadata } = parseHeader(head, size - dataStart, source);
    return { fd, source, entries, metadata, dataStart, dataBytes: size - dataStart };
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/**
 * Reads a safetensors file: the header is read and validated first (against the file's size, before any large
 * allocation), then each tensor is read straight into its own array — the file is never held in memory whole.
 */
export function loadSafetensors(path: string, opts?: DecodeOptions): SafeFile {
  const { fd, source, entries, metadata, dataStart } = openWithHeader('loadSafetensors', path, opts);
  try {
    const tensors = new Map<string, SafeTensor>();
    for (const e of entries) {
      const data = allocate(e, source);
      readExactly(fd, bytesOf(data), dataStart + e.begin, source, `tensor ${showJson(e.name)}`);
      tensors.set(e.name, finish(e, data));
    }
    return { tensors, metadata };
  } finally {
    closeSync(fd);
  }
}

/** What a safetensors header says about one tensor: its dtype and shape (no data). */
export interface SafeTensorInfo {
  dtype: SafeDType;
  shape: number[];
}

/**
 * Reads and validates only the header of a safetensors file (as loadSafetensors does, against the file's size): the
 * metadata, each tensor's dtype and shape, and the size of the data buffer. No tensor data is read or allocated, so a
 * caller can check what a file holds before building anything for it.
 */
export function readSafetensorsHeader(path: string, opts?: DecodeOptions): { metadata: Record<string, string>; tensors: Map<string, SafeTensorInfo>; dataBytes: number } {
  const { fd, entries, metadata, dataBytes } = openWithHeader('readSafetensorsHeader', path, opts);
  closeSync(fd);
  return { metadata, tensors: new Map(entries.map((e) => [e.name, { dtype: e.dtype, shape: e.shape }])), dataBytes };
}
