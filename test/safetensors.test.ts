// safetensors.test.ts — lib/io/safetensors.ts: bit-exact round trips (F32 NaN payloads, -0, infinities; I32; BF16
// bits), deterministic bytes, empty and scalar tensors, metadata, known-answer files written by hand from the spec
// (including the reference implementation's own serialisation vectors, so our bytes are the ones Python's
// `safetensors` writes and reads), atomic saves that leave an existing file alone on failure, every rejection case of
// the reader on a hand-built corrupt buffer, and a fuzz loop of random mutations that must decode or throw
// SafetensorsError and nothing else.
import test, { type ExecutionContext } from 'ava';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import {
  SafetensorsError,
  decodeSafetensors,
  encodeSafetensors,
  loadSafetensors,
  saveSafetensors,
  type SafeFile,
  type SafeTensor,
} from '../lib/io/safetensors.ts';
import { Random } from './helpers/random.ts';

// ---------------------------------------------------------------------------------------------------------------
// helpers

const f32bits = (bits: number[]) => new Float32Array(new Uint32Array(bits).buffer);
const bytesOf = (a: ArrayBufferView) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** A file from a header string (length prefix = its UTF-8 byte count, no padding added) and raw data bytes. */
function file(header: string | Uint8Array, data: Uint8Array | number = 0): Buffer {
  const h = typeof header === 'string' ? Buffer.from(header, 'utf8') : Buffer.from(header);
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([prefix, h, typeof data === 'number' ? Buffer.alloc(data) : data]);
}

/** Tensors equal dtype, shape and every byte of data (so NaN payloads and -0 count). */
function sameFile(t: ExecutionContext, got: SafeFile, want: SafeFile, label: string): void {
  t.deepEqual([...got.tensors.keys()].sort(), [...want.tensors.keys()].sort(), `${label}: names`);
  for (const [name, w] of want.tensors) {
    const g = got.tensors.get(name)!;
    t.is(g.dtype, w.dtype, `${label}: ${name} dtype`);
    t.deepEqual(g.shape, w.shape, `${label}: ${name} shape`);
    t.is(g.data.constructor, w.data.constructor, `${label}: ${name} array class`);
    t.true(bytesOf(g.data).equals(bytesOf(w.data)), `${label}: ${name} bytes`);
  }
  t.deepEqual(got.metadata, want.metadata, `${label}: metadata`);
}

function rejects(t: ExecutionContext, buf: Uint8Array, message: RegExp, label: string, opts?: { maxHeaderBytes?: number }): void {
  const err = t.throws(() => decodeSafetensors(buf, { source: 'bad.safetensors', ...opts }), { instanceOf: SafetensorsError, message }, label);
  if (err) {
    t.is(err.constructor, SafetensorsError, `${label}: class`);
    t.regex(err.message, /bad\.safetensors/, `${label}: names the source`);
  }
}

function tmp(t: ExecutionContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'sf-safetensors-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const specials = f32bits([
  0x7fc00000, // quiet NaN
  0x7fc00001, // quiet NaN with a payload
  0x7f800001, // signalling NaN
  0xffbfffff, // negative signalling NaN, full payload
  0x80000000, // -0
  0x00000000,
  0x7f800000, // +Infinity
  0xff800000, // -Infinity
  0x00000001, // smallest subnormal
  0x7f7fffff, // largest finite
  0x3f800000, // 1
  0xbfc00000, // -1.5
]);

function sample(): Map<string, SafeTensor> {
  return new Map<string, SafeTensor>([
    ['embed.weight', { dtype: 'F32', shape: [3, 4], data: specials }],
    ['positions', { dtype: 'I32', shape: [5], data: new Int32Array([0, -1, 2147483647, -2147483648, 42]) }],
    ['norm.bf16', { dtype: 'BF16', shape: [3], data: new Uint16Array([0x3f80, 0xffff, 0x8000]) }],
    ['empty', { dtype: 'F32', shape: [0], data: new Float32Array(0) }],
    ['scalar', { dtype: 'I32', shape: [], data: new Int32Array([7]) }],
    ['b.odd', { dtype: 'BF16', shape: [1, 1], data: new Uint16Array([0x7fc1]) }],
  ]);
}

// ---------------------------------------------------------------------------------------------------------------
// round trips and determinism

test('round trip is bit-exact for F32 (NaN payloads, -0, infinities, subnormals), I32 and BF16', (t) => {
  const tensors = sample();
  const meta = { format: 'pt', note: 'ünïcode ✓ "quoted"\n' };
  const buf = encodeSafetensors(tensors, meta);
  const back = decodeSafetensors(buf);
  sameFile(t, back, { tensors, metadata: meta }, 'decode');
  t.deepEqual([...new Uint32Array(back.tensors.get('embed.weight')!.data.buffer)].map((x) => x.toString(16)), [
    '7fc00000', '7fc00001', '7f800001', 'ffbfffff', '80000000', '0', '7f800000', 'ff800000', '1', '7f7fffff', '3f800000', 'bfc00000',
  ]);
  // and the same through a file
  const dir = tmp(t);
  const path = join(dir, 'model.safetensors');
  saveSafetensors(path, tensors, meta);
  t.true(readFileSync(path).equals(buf), 'saved bytes equal encoded bytes');
  sameFile(t, loadSafetensors(path), { tensors, metadata: meta }, 'load');
});

test('bytes are deterministic: insertion order, Map vs object and metadata key order do not matter', (t) => {
  const m = sample();
  const reversed = new Map([...m].reverse());
  const obj = Object.fromEntries([...m].sort(() => 0).reverse()) as Record<string, SafeTensor>;
  const a = encodeSafetensors(m, { a: '1', b: '2', z: '3' });
  t.true(encodeSafetensors(reversed, { z: '3', b: '2', a: '1' }).equals(a));
  t.true(encodeSafetensors(obj, { b: '2', z: '3', a: '1' }).equals(a));
  t.true(encodeSafetensors(m, { a: '1', b: '2', z: '3' }).equals(a), 'twice');
});

test('layout: header padded with spaces to 8 bytes; data in F32, I32, BF16 blocks by name, contiguous and aligned', (t) => {
  const buf = encodeSafetensors(sample(), { k: 'v' });
  const n = Number(buf.readBigUInt64LE(0));
  t.is(n % 8, 0);
  const text = buf.subarray(8, 8 + n).toString('utf8');
  t.regex(text, /^\{"__metadata__":\{"k":"v"\},/);
  t.regex(text, /\} *$/);
  t.true(/^ *$/.test(text.slice(text.lastIndexOf('}') + 1)), 'padding is spaces');
  const header = JSON.parse(text) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  t.deepEqual(names, ['embed.weight', 'empty', 'positions', 'scalar', 'b.odd', 'norm.bf16']);
  let at = 0;
  for (const name of names) {
    const [b, e] = header[name].data_offsets;
    t.is(b, at, `${name} starts where the previous one ended`);
    t.is((8 + n + b) % (header[name].dtype === 'BF16' ? 2 : 4), 0, `${name} is aligned in the file`);
    at = e;
  }
  t.is(8 + n + at, buf.length);
});

test('empty tensors (shape [0], [2, 0]), scalars (shape []) and a file with no tensors', (t) => {
  const tensors = new Map<string, SafeTensor>([
    ['z0', { dtype: 'F32', shape: [0], data: new Float32Array(0) }],
    ['z1', { dtype: 'BF16', shape: [2, 0], data: new Uint16Array(0) }],
    ['s', { dtype: 'F32', shape: [], data: new Float32Array([-0]) }],
  ]);
  const back = decodeSafetensors(encodeSafetensors(tensors));
  sameFile(t, back, { tensors, metadata: {} }, 'empty');
  t.true(Object.is(back.tensors.get('s')!.data[0], -0));

  const none = encodeSafetensors(new Map());
  t.is(none.toString('latin1'), '\x08\0\0\0\0\0\0\0{}      ');
  const d = decodeSafetensors(none);
  t.is(d.tensors.size, 0);
  t.deepEqual(d.metadata, {});
});

test('metadata round trips, including odd keys; empty metadata is omitted from the header', (t) => {
  const meta = Object.fromEntries([
    ['__proto__', 'not a prototype'],
    ['', 'empty key'],
    ['multi\nline', 'tab\there'],
    ['emoji 🧠', '😀'],
  ]) as Record<string, string>;
  const back = decodeSafetensors(encodeSafetensors(sample(), meta));
  t.deepEqual(Object.entries(back.metadata).sort(), Object.entries(meta).sort());
  t.is(Object.getPrototypeOf(back.metadata), Object.prototype);
  t.false(encodeSafetensors(sample(), {}).includes('__metadata__'));
  t.false(encodeSafetensors(sample()).includes('__metadata__'));
});

test('decoding copies data into fresh aligned arrays, whatever the input offset', (t) => {
  const buf = encodeSafetensors(sample());
  for (const shift of [1, 2, 3, 5]) {
    const big = new Uint8Array(buf.length + shift);
    big.set(buf, shift);
    const back = decodeSafetensors(big.subarray(shift));
    sameFile(t, back, { tensors: sample(), metadata: {} }, `shift ${shift}`);
    for (const [name, st] of back.tensors) {
      t.not(st.data.buffer, big.buffer as ArrayBufferLike, `${name} does not alias the input`);
      t.is(st.data.byteOffset % st.data.BYTES_PER_ELEMENT, 0);
    }
    big.fill(0); // the decoded tensors are unaffected
    sameFile(t, back, { tensors: sample(), metadata: {} }, `shift ${shift} after clobbering the input`);
  }
});

test('files from other writers: any entry order, unpadded headers, unaligned tensors', (t) => {
  // BF16 first (3 elements = 6 bytes), so the F32 tensor sits at offset 6: legal, if not what we write.
  const header = '{"w":{"dtype":"F32","shape":[1],"data_offsets":[6,10]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}}';
  const data = Buffer.from([0x80, 0x3f, 0x00, 0xc0, 0xc0, 0x7f, 0x00, 0x00, 0xc0, 0x3f]);
  const got = decodeSafetensors(file(header, data)); // header is 109 bytes: not padded
  t.deepEqual([...got.tensors.get('b')!.data], [0x3f80, 0xc000, 0x7fc0]);
  t.deepEqual([...got.tensors.get('w')!.data], [1.5]);
  // header whitespace of every JSON kind is fine
  t.is(decodeSafetensors(file('{ "a" :\t{"dtype":"I32","shape":[],"data_offsets":[0,4]}}\n\r ', 4)).tensors.size, 1);
});

// ---------------------------------------------------------------------------------------------------------------
// known answers: exact bytes written by hand from the spec

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

test('known answer: the reference implementation\'s serialisation vectors', (t) => {
  const f0to5 = hex('00000000 0000803f 00000040 00004040 00008040 0000a040'); // 0, 1, 2, 3, 4, 5 as f32 LE
  const data = new Float32Array([0, 1, 2, 3, 4, 5]);
  // 64-byte header: a multiple of 8 already, no padding
  const h1 = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
  const want1 = Buffer.concat([hex('4000000000000000'), Buffer.from(h1, 'ascii'), f0to5]);
  t.is(h1.length, 64);
  t.true(encodeSafetensors({ 'attn.0': { dtype: 'F32', shape: [1, 2, 3], data } }).equals(want1));
  sameFile(t, decodeSafetensors(want1), { tensors: new Map([['attn.0', { dtype: 'F32', shape: [1, 2, 3], data }]]), metadata: {} }, 'v1');
  // 65-byte header padded with 7 spaces to 72 (0x48)
  const h2 = '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}';
  const want2 = Buffer.concat([hex('4800000000000000'), Buffer.from(`${h2}       `, 'ascii'), f0to5]);
  t.true(encodeSafetensors({ attn0: { dtype: 'F32', shape: [1, 1, 2, 3], data } }).equals(want2));
  t.deepEqual(decodeSafetensors(want2).tensors.get('attn0')!.shape, [1, 1, 2, 3]);
  // no tensors, with and without metadata
  const want3 = Buffer.concat([hex('0800000000000000'), Buffer.from('{}      ', 'ascii')]);
  t.true(encodeSafetensors({}).equals(want3));
  const want4 = Buffer.concat([hex('2800000000000000'), Buffer.from('{"__metadata__":{"framework":"pt"}}     ', 'ascii')]);
  t.true(encodeSafetensors({}, { framework: 'pt' }).equals(want4));
  t.deepEqual(decodeSafetensors(want4).metadata, { framework: 'pt' });
});

test('known answer: three dtypes and metadata, written out byte by byte', (t) => {
  // 197 bytes of JSON + 3 spaces = 200 = 0xc8. Order: F32 block, I32 block, BF16 block.
  const header =
    '{"__metadata__":{"format":"pt"},' +
    '"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
    '"idx":{"dtype":"I32","shape":[3],"data_offsets":[8,20]},' +
    '"b":{"dtype":"BF16","shape":[3],"data_offsets":[20,26]}}   ';
  const bytes = Buffer.concat([
    hex('c800000000000000'),
    Buffer.from(header, 'ascii'),
    hex('0000c03f 000000c0'), // w = [1.5, -2]
    hex('01000000 ffffffff 00010000'), // idx = [1, -1, 256]
    hex('803f 00c0 c07f'), // b = bf16 [1, -2, NaN]
  ]);
  const tensors = new Map<string, SafeTensor>([
    ['b', { dtype: 'BF16', shape: [3], data: new Uint16Array([0x3f80, 0xc000, 0x7fc0]) }],
    ['idx', { dtype: 'I32', shape: [3], data: new Int32Array([1, -1, 256]) }],
    ['w', { dtype: 'F32', shape: [2], data: new Float32Array([1.5, -2]) }],
  ]);
  sameFile(t, decodeSafetensors(bytes), { tensors, metadata: { format: 'pt' } }, 'decode');
  const enc = encodeSafetensors(tensors, { format: 'pt' });
  t.is(enc.toString('hex'), bytes.toString('hex'));
});

// ---------------------------------------------------------------------------------------------------------------
// writer argument checks

test('the writer rejects bad arguments before writing anything', (t) => {
  const ok: SafeTensor = { dtype: 'F32', shape: [2], data: new Float32Array(2) };
  const cases: [string, () => unknown, ErrorConstructor, RegExp][] = [
    ['empty name', () => encodeSafetensors({ '': ok }), RangeError, /non-empty/],
    ['reserved name', () => encodeSafetensors({ __metadata__: ok }), RangeError, /reserved/],
    ['lone surrogate', () => encodeSafetensors({ ['a\uD800']: ok }), RangeError, /surrogate/],
    ['dtype', () => encodeSafetensors({ a: { ...ok, dtype: 'F16' as never } }), TypeError, /dtype must be one of F32, I32, BF16, got "F16"/],
    ['array class', () => encodeSafetensors({ a: { ...ok, dtype: 'I32' } }), TypeError, /"a".*I32.*Int32Array, got Float32Array/],
    ['plain array', () => encodeSafetensors({ a: { ...ok, data: [1, 2] as never } }), TypeError, /Float32Array, got array/],
    ['shape not array', () => encodeSafetensors({ a: { ...ok, shape: 2 as never } }), TypeError, /shape must be an array/],
    ['negative dim', () => encodeSafetensors({ a: { ...ok, shape: [-2] } }), RangeError, /shape\[0\].*got -2/],
    ['fractional dim', () => encodeSafetensors({ a: { ...ok, shape: [1.5] } }), RangeError, /shape\[0\].*got 1\.5/],
    ['length', () => encodeSafetensors({ a: { ...ok, shape: [3] } }), RangeError, /"a": shape \[3\] holds 3 elements but data has 2/],
    ['huge shape', () => encodeSafetensors({ a: { ...ok, shape: [2 ** 40, 2 ** 40] } }), RangeError, /too many elements/],
    ['not a tensor', () => encodeSafetensors({ a: null as never }), TypeError, /"a": expected \{dtype, shape, data\}, got null/],
    ['tensors', () => encodeSafetensors([ok] as never), TypeError, /Map<string, SafeTensor> or a plain object, got array/],
    ['metadata value', () => encodeSafetensors({ a: ok }, { step: 3 as never }), TypeError, /metadata value "step" must be a string, got number 3/],
    ['metadata', () => encodeSafetensors({ a: ok }, 'x' as never), TypeError, /metadata must be a plain object/],
    ['map key', () => encodeSafetensors(new Map([[1, ok]]) as never), TypeError, /names must be strings/],
  ];
  for (const [label, fn, cls, message] of cases) {
    const err = t.throws(fn, { instanceOf: cls, message }, label);
    if (err) t.is(err.constructor, cls, label);
  }
});

// ---------------------------------------------------------------------------------------------------------------
// atomic save

const original = () => new Map<string, SafeTensor>([['w', { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) }]]);

test('atomic save: failures before writing leave the existing file and no temporary file', (t) => {
  const dir = tmp(t);
  const path = join(dir, 'ckpt.safetensors');
  saveSafetensors(path, original(), { step: '1' });
  const before = readFileSync(path);

  // a metadata value that is not a string
  t.throws(() => saveSafetensors(path, sample(), { step: 2 as never }), { instanceOf: TypeError, message: /metadata value "step"/ });
  // a tensor in the middle of the list that fails validation
  const bad = new Map<string, SafeTensor>([
    ['a', { dtype: 'F32', shape: [1], data: new Float32Array(1) }],
    ['b', { dtype: 'F32', shape: [4], data: new Float32Array(3) }],
    ['c', { dtype: 'F32', shape: [1], data: new Float32Array(1) }],
  ]);
  t.throws(() => saveSafetensors(path, bad), { instanceOf: RangeError, message: /"b"/ });

  t.true(readFileSync(path).equals(before), 'existing bytes unchanged');
  t.deepEqual(readdirSync(dir), ['ckpt.safetensors'], 'no temporary file left');
  sameFile(t, loadSafetensors(path), { tensors: original(), metadata: { step: '1' } }, 'still loads');
});

test('atomic save: an I/O failure after the temporary file is written removes it', (t) => {
  const dir = tmp(t);
  // the target is a non-empty directory: the temp file is written and fsynced, then rename() fails
  const target = join(dir, 'ckpt.safetensors');
  mkdirSync(target);
  writeFileSync(join(target, 'keep'), 'x');
  const err = t.throws(() => saveSafetensors(target, sample()));
  t.truthy((err as NodeJS.ErrnoException | undefined)?.code, `an fs error: ${err?.message}`);
  t.deepEqual(readdirSync(dir), ['ckpt.safetensors'], 'no temporary file left');
  t.deepEqual(readdirSync(target), ['keep'], 'the existing target is untouched');

  // the folder does not exist: nothing is created anywhere
  const missing = join(dir, 'nope', 'ckpt.safetensors');
  t.throws(() => saveSafetensors(missing, sample()), { code: 'ENOENT' } as never);
  t.deepEqual(readdirSync(dir), ['ckpt.safetensors']);
});

test('atomic save: a crash mid-write (a stale temporary file) does not affect the real path', (t) => {
  const dir = tmp(t);
  const path = join(dir, 'ckpt.safetensors');
  saveSafetensors(path, original());
  // simulate a writer that died half-way: a partial temp file next to the real one
  const full = encodeSafetensors(sample());
  const stale = `${path}.tmp-99999-0123456789ab`;
  writeFileSync(stale, full.subarray(0, full.length >> 1));
  sameFile(t, loadSafetensors(path), { tensors: original(), metadata: {} }, 'real path unaffected');
  t.throws(() => loadSafetensors(stale), { instanceOf: SafetensorsError, message: /tmp-99999/ });
  // a later successful save replaces the file and leaves only its own name (plus the stale one it did not make)
  saveSafetensors(path, sample(), { step: '2' });
  sameFile(t, loadSafetensors(path), { tensors: sample(), metadata: { step: '2' } }, 'overwritten');
  t.deepEqual(readdirSync(dir).sort(), ['ckpt.safetensors', 'ckpt.safetensors.tmp-99999-0123456789ab']);
});

// ---------------------------------------------------------------------------------------------------------------
// reader rejections

const T = (name: string, body: string) => `"${name}":${body}`;
const f32 = (shape: string, b: number, e: number) => `{"dtype":"F32","shape":${shape},"data_offsets":[${b},${e}]}`;

test('rejects: too short, bad header lengths', (t) => {
  rejects(t, new Uint8Array(0), /0 bytes, shorter than the 8-byte header length/, 'empty');
  rejects(t, new Uint8Array(7), /7 bytes, shorter than the 8-byte/, '7 bytes');
  rejects(t, file(''), /header length is 0/, 'zero length');
  const len = (n: bigint, rest = 16) => {
    const b = Buffer.alloc(8 + rest, 0x20);
    b.writeBigUInt64LE(n);
    return b;
  };
  rejects(t, len(2n ** 64n - 1n), /header length 18446744073709551615 exceeds the limit of 100000000 bytes/, 'u64 max');
  rejects(t, len(100_000_001n), /exceeds the limit of 100000000/, 'over 100 MB');
  rejects(t, len(17n), /header length 17 exceeds the 16 bytes after the length field/, 'past the end');
  rejects(t, file('{}      '), /header length 8 exceeds the limit of 4 bytes/, 'custom limit', { maxHeaderBytes: 4 });
  t.is(decodeSafetensors(file('{}      '), { maxHeaderBytes: 8 }).tensors.size, 0, 'limit is inclusive');
});

test('rejects: header not UTF-8, not JSON, not an object, too deep', (t) => {
  rejects(t, file(Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d])), /not valid UTF-8/, 'bad utf-8');
  rejects(t, file(Buffer.from([0x7b, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x7d])), /not valid UTF-8/, 'encoded surrogate');
  rejects(t, file('\uFEFF{}'), /must start with "\{", found byte 0xef/, 'BOM');
  rejects(t, file(' {}'), /must start with "\{"/, 'leading space');
  rejects(t, file('[]'), /must start with "\{"/, 'array');
  rejects(t, file('null'), /must start with "\{"/, 'null');
  rejects(t, file('{"a":1'), /not valid JSON/, 'truncated JSON');
  rejects(t, file('{}\0\0'), /not valid JSON/, 'NUL padding');
  rejects(t, file('{} {}'), /not valid JSON/, 'two values');
  rejects(t, file(`{"a":${'['.repeat(100000)}${']'.repeat(100000)}}`), /nests deeper than the 3 levels/, 'deep');
});

test('rejects: entries that are not objects, unknown fields, empty names', (t) => {
  rejects(t, file('{"a":5}'), /tensor "a": entry must be an object \{dtype, shape, data_offsets\}, got number 5/, 'number');
  rejects(t, file('{"a":[1]}'), /tensor "a": entry must be an object.*got array/, 'array');
  rejects(t, file('{"a":null}'), /tensor "a": entry must be an object.*got null/, 'null');
  rejects(t, file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}}`, 4), /tensor "a": unexpected field "extra"/, 'extra field');
  rejects(t, file(`{${T('', f32('[1]', 0, 4))}}`, 4), /empty name/, 'empty name');
});

test('rejects: dtypes, listing the supported ones', (t) => {
  const one = (dtype: unknown) => file(`{"a":{"dtype":${JSON.stringify(dtype)},"shape":[1],"data_offsets":[0,4]}}`, 4);
  rejects(t, one('F99'), /tensor "a": dtype "F99" is not supported; supported dtypes: F32, I32, BF16/, 'F99');
  for (const d of ['F16', 'F64', 'I64', 'U8', 'BOOL']) {
    rejects(t, one(d), new RegExp(`"${d}" \\(a standard safetensors dtype, but not supported by sharedformer\\).*F32, I32, BF16`), d);
  }
  rejects(t, one('f32'), /dtype "f32" is not supported/, 'lower case');
  rejects(t, one(32), /dtype 32 is not supported/, 'number');
  rejects(t, file('{"a":{"shape":[1],"data_offsets":[0,4]}}', 4), /dtype undefined is not supported/, 'missing');
});

test('rejects: shapes that are not arrays of non-negative safe integers, and size mismatches', (t) => {
  rejects(t, file(`{${T('a', f32('3', 0, 12))}}`, 12), /tensor "a": shape must be an array, got number 3/, 'number');
  rejects(t, file(`{${T('a', f32('null', 0, 0))}}`), /tensor "a": shape must be an array, got null/, 'null');
  rejects(t, file(`{${T('a', f32('[-1]', 0, 4))}}`, 4), /number -1 \(at "a" > "shape"\)/, 'negative');
  rejects(t, file(`{${T('a', f32('[1.5]', 0, 4))}}`, 4), /number 1\.5 \(at "a" > "shape"\)/, 'fraction');
  rejects(t, file(`{${T('a', f32('[1.0]', 0, 4))}}`, 4), /number 1\.0 \(at "a" > "shape"\)/, '1.0 (JSON.parse would say 1)');
  rejects(t, file(`{${T('a', f32('[1e0]', 0, 4))}}`, 4), /number 1e0/, 'exponent');
  rejects(t, file(`{${T('a', f32('["1"]', 0, 4))}}`, 4), /tensor "a": shape\[0\] must be a non-negative safe integer, got "1"/, 'string');
  rejects(t, file(`{${T('a', f32('[9007199254740993]', 0, 4))}}`, 4), /shape\[0\] must be a non-negative safe integer, got 9007199254740992/, 'unsafe');
  rejects(t, file(`{${T('a', f32('[4294967296,4294967296]', 0, 4))}}`, 4), /needs more than 2\^53 bytes but data_offsets \[0, 4\] span 4/, 'overflowing product');
  rejects(t, file(`{${T('a', f32('[2,2]', 0, 12))}}`, 12), /tensor "a": dtype F32 shape \[2,2\] needs 16 bytes but data_offsets \[0, 12\] span 12/, 'size');
  rejects(t, file(`{"a":{"dtype":"BF16","shape":[3],"data_offsets":[0,4]}}`, 4), /dtype BF16 shape \[3\] needs 6 bytes/, 'bf16 size');
});

test('rejects: data offsets out of range, reversed, overlapping, with holes, trailing bytes', (t) => {
  rejects(t, file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}`, 4), /tensor "a": data_offsets must be an array \[begin, end\], got \[0\]/, 'one offset');
  rejects(t, file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":{"0":0}}}`, 4), /data_offsets must be an array/, 'object');
  rejects(t, file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":["0",4]}}`, 4), /data_offsets must be non-negative safe integers, got \["0",4\]/, 'string');
  rejects(t, file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4.5]}}`, 4), /number 4\.5 \(at "a" > "data_offsets"\)/, 'fraction');
  rejects(t, file(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, 4), /tensor "a": data_offsets \[4, 0\] begin after they end/, 'reversed');
  rejects(t, file(`{${T('a', f32('[1]', 4, 8))}}`, 4), /tensor "a": data_offsets \[4, 8\] end beyond the 4-byte data buffer/, 'past the end');
  rejects(t, file(`{${T('a', f32('[1]', 2 ** 40, 2 ** 40 + 4))}}`, 4), /\[1099511627776, 1099511627780\] end beyond the 4-byte data buffer/, 'far past the end');
  rejects(t, file(`{${T('a', f32('[1]', 0, 2 ** 60))}}`, 4), /data_offsets must be non-negative safe integers, got \[0,1152921504606847000\]/, 'unsafe offset');
  rejects(t, file(`{${T('a', f32('[2]', 0, 8))},${T('b', f32('[2]', 4, 12))}}`, 12), /tensor "b": data_offsets \[4, 12\] overlap tensor "a" at \[0, 8\]/, 'overlap');
  rejects(t, file(`{${T('a', f32('[1]', 0, 4))},${T('b', f32('[1]', 0, 4))}}`, 4), /overlap/, 'same range twice');
  rejects(t, file(`{${T('a', f32('[1]', 0, 4))},${T('b', f32('[1]', 8, 12))}}`, 12), /tensor "b": data_offsets \[8, 12\] leave a hole of 4 bytes at \[4, 8\)/, 'hole');
  rejects(t, file(`{${T('a', f32('[1]', 4, 8))}}`, 8), /tensor "a".*hole of 4 bytes at \[0, 4\)/, 'not from 0');
  rejects(t, file(`{${T('a', f32('[1]', 0, 4))}}`, 8), /4 trailing bytes after the last tensor/, 'trailing');
  rejects(t, file('{}', 1), /1 trailing bytes/, 'no tensors but data');
  // several empty tensors at one offset are fine, as in the reference reader
  t.is(decodeSafetensors(file(`{${T('a', f32('[0]', 4, 4))},${T('b', f32('[1]', 0, 4))},${T('c', f32('[0]', 4, 4))}}`, 4)).tensors.size, 3);
});

test('rejects: __metadata__ that is not an object of strings', (t) => {
  rejects(t, file('{"__metadata__":"x"}'), /__metadata__ must be an object of strings, got string/, 'string');
  rejects(t, file('{"__metadata__":["x"]}'), /__metadata__ must be an object of strings, got array/, 'array');
  rejects(t, file('{"__metadata__":{"step":1}}'), /__metadata__ value "step" must be a string, got number 1/, 'number');
  rejects(t, file('{"__metadata__":{"k":null}}'), /__metadata__ value "k" must be a string, got null/, 'null');
  rejects(t, file('{"__metadata__":{"k":{"x":"y"}}}'), /__metadata__ value "k" must be a string, got object/, 'object');
});

test('rejects: duplicate keys anywhere in the header', (t) => {
  rejects(t, file(`{${T('a', f32('[1]', 0, 4))},${T('a', f32('[1]', 0, 4))}}`, 4), /the key "a" twice/, 'tensor');
  rejects(t, file(`{${T('ab', f32('[1]', 0, 4))},${T('a\\u0062', f32('[1]', 0, 4))}}`, 4), /the key "ab" twice/, 'escaped');
  rejects(t, file(`{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 4), /the key "dtype" twice \(at "a"\)/, 'field');
  rejects(t, file('{"__metadata__":{"k":"1","k":"2"}}'), /the key "k" twice \(at "__metadata__"\)/, 'metadata');
  rejects(t, file('{"__metadata__":{},"__metadata__":{}}'), /the key "__metadata__" twice/, 'metadata twice');
  // keys that differ only in escaping of other characters are distinct
  t.is(decodeSafetensors(file(`{${T('a\\"b', f32('[0]', 0, 0))},${T('a\\\\b', f32('[0]', 0, 0))}}`)).tensors.size, 2);
});

test('loadSafetensors: names the file, rejects truncation and non-files, passes fs errors through', (t) => {
  const dir = tmp(t);
  const path = join(dir, 'm.safetensors');
  const full = encodeSafetensors(sample());
  writeFileSync(path, full.subarray(0, full.length - 1));
  t.throws(() => loadSafetensors(path), { instanceOf: SafetensorsError, message: new RegExp(`${path.replace(/[.\\]/g, '\\$&')}: .*beyond the \\d+-byte data buffer`) });
  writeFileSync(path, full.subarray(0, 5));
  t.throws(() => loadSafetensors(path), { instanceOf: SafetensorsError, message: /5 bytes, shorter than/ });
  t.throws(() => loadSafetensors(dir), { instanceOf: SafetensorsError, message: /not a regular file/ });
  t.throws(() => loadSafetensors(join(dir, 'missing')), { code: 'ENOENT' } as never);
  t.throws(() => loadSafetensors(path, { source: 'custom' }), { instanceOf: SafetensorsError, message: /^safetensors custom: / });
  t.throws(() => decodeSafetensors('x' as never), { instanceOf: TypeError });
  t.throws(() => decodeSafetensors(full, { maxHeaderBytes: -1 }), { instanceOf: RangeError });
});

// ---------------------------------------------------------------------------------------------------------------
// fuzz

test('fuzz: 2000 mutations of a valid file each decode or throw SafetensorsError, quickly', (t) => {
  const base = encodeSafetensors(sample(), { format: 'pt', step: '12' });
  const n = Number(base.readBigUInt64LE(0));
  const headerText = base.subarray(8, 8 + n).toString('utf8');
  const data = base.subarray(8 + n);
  const rnd = new Random(0x5eed);
  const r = (n: number) => rnd.below(n); // an integer in [0, n)
  const pool: unknown[] = [-1, 0, 1, 2, 3, 4, 8, 12, 1.5, 2 ** 53, 2 ** 64, 1e300, 'F16', 'F32', 'I32', 'BF16', 'F64', '', null, true, [], {}, [0], [1, 2], [[1]], [0, 4], [4, 0], 'x', { dtype: 'F32' }];
  const jsonChars = '{}[]":, 0123456789-.eEaFIB\\\u00e9';

  const withHeader = (text: string | Buffer, fixLength: boolean, tail: Uint8Array = data) => {
    const h = typeof text === 'string' ? Buffer.from(text, 'utf8') : text;
    const out = file(h, tail);
    if (!fixLength) out.writeBigUInt64LE(BigInt(n));
    return out;
  };

  const mutate = (): Buffer => {
    const kind = r(8);
    if (kind === 0) {
      // flip 1-4 random bits anywhere
      const b = Buffer.from(base);
      for (let k = 1 + r(4); k > 0; k--) b[r(b.length)] ^= 1 << r(8);
      return b;
    }
    if (kind === 1) return Buffer.from(base.subarray(0, r(base.length))); // truncate
    if (kind === 2) {
      // random header length: tiny, near the real one, or any 64-bit value
      const b = Buffer.from(base);
      const choice = r(3);
      const v = choice === 0 ? BigInt(r(16)) : choice === 1 ? BigInt(Math.max(0, n - 16 + r(33))) : (BigInt(r(2 ** 32)) << 32n) | BigInt(r(2 ** 32));
      b.writeBigUInt64LE(v);
      return b;
    }
    if (kind === 3) {
      // append or drop data bytes
      return r(2) ? Buffer.concat([base, Buffer.alloc(1 + r(8), r(256))]) : Buffer.from(base.subarray(0, base.length - 1 - r(4)));
    }
    if (kind === 4) {
      // random character edits of the header text
      let s = headerText;
      for (let k = 1 + r(3); k > 0; k--) {
        const at = r(s.length);
        const ch = jsonChars[r(jsonChars.length)];
        const op = r(3);
        s = op === 0 ? s.slice(0, at) + ch + s.slice(at + 1) : op === 1 ? s.slice(0, at) + ch + s.slice(at) : s.slice(0, at) + s.slice(at + 1);
      }
      return withHeader(s, r(4) !== 0);
    }
    // structured JSON edits: replace, delete or add a field; perturb offsets; re-serialise
    const h = JSON.parse(headerText) as Record<string, Record<string, unknown>>;
    const keys = Object.keys(h);
    const entry = h[keys[r(keys.length)]];
    const fields = Object.keys(entry);
    const op = r(5);
    if (op === 0) entry[fields[r(fields.length)]] = pool[r(pool.length)];
    else if (op === 1) delete entry[fields[r(fields.length)]];
    else if (op === 2) entry[['dtype', 'shape', 'data_offsets', 'extra'][r(4)]] = pool[r(pool.length)];
    else if (op === 3 && Array.isArray(entry.data_offsets)) (entry.data_offsets as number[])[r(2)] += r(9) - 4;
    else if (Array.isArray(entry.shape)) (entry.shape as unknown[]).push(r(3));
    else h[`new${r(3)}`] = pool[r(pool.length)] as never;
    let text = JSON.stringify(h);
    if (r(2)) text += ' '.repeat((8 - (text.length % 8)) % 8);
    return withHeader(text, r(8) !== 0, r(6) === 0 ? data.subarray(0, data.length - r(8)) : data);
  };

  const t0 = performance.now();
  let decoded = 0;
  let rejected = 0;
  const others: string[] = [];
  for (let i = 0; i < 2000; i++) {
    const buf = mutate();
    try {
      const f = decodeSafetensors(buf, { source: `mutation ${i}` });
      decoded++;
      // anything accepted is a consistent file: it survives a re-encode unchanged
      sameFile(t, decodeSafetensors(encodeSafetensors(f.tensors, f.metadata)), f, `mutation ${i} re-encoded`);
    } catch (err) {
      if (err instanceof SafetensorsError && err.constructor === SafetensorsError && err.message.includes(`mutation ${i}`)) rejected++;
      else others.push(`mutation ${i}: ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
    }
  }
  const ms = performance.now() - t0;
  t.log(`${decoded} decoded, ${rejected} rejected with SafetensorsError, in ${ms.toFixed(0)} ms`);
  t.deepEqual(others, [], 'no other exception types');
  t.is(decoded + rejected, 2000);
  t.true(rejected > 1000, 'most mutations are caught');
  t.true(decoded > 0, 'some mutations are harmless (bit flips in data)');
  t.true(ms < 5000, `the loop took ${ms.toFixed(0)} ms`);
});
