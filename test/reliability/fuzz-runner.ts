// fuzz-runner.ts — feeds `count` seeded mutations of valid safetensors files to the loader, starting at mutation
// `from` of the stream for `seed`, and prints one JSON summary line (plus a line per unexpected outcome). Every 10th
// mutation goes through loadSafetensors (a file on disk), the rest through decodeSafetensors (memory).
//   node --import tsx fuzz-runner.ts SEED FROM COUNT
// An outcome is expected when the loader throws SafetensorsError with a non-empty message, or returns a file that is
// self-consistent (each tensor's data holds the product of its shape, and the file re-encodes and decodes to itself).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeLine } from './child.ts';
import { SafetensorsError, decodeSafetensors, encodeSafetensors, loadSafetensors, type SafeFile, type SafeTensor } from '../../lib/index.ts';
import { Random } from '../helpers/random.ts';

const [seed, from, count] = process.argv.slice(2).map(Number);
const say = (o: object) => writeLine(JSON.stringify(o));


// Seeds: a few valid files (several dtypes, an empty tensor, a scalar, metadata with odd characters).
const bases: Buffer[] = [
  encodeSafetensors({ w: { dtype: 'F32', shape: [3, 4], data: Float32Array.from({ length: 12 }, (_, i) => i / 3) },
    ids: { dtype: 'I32', shape: [5], data: Int32Array.from([1, -2, 3, 2 ** 31 - 1, 0]) },
    h: { dtype: 'BF16', shape: [2, 2], data: Uint16Array.from([0x3f80, 0x4000, 0xbf80, 0x7fc0]) } }, { format: 'sharedformer', note: 'é "q" \\ \u2603' }),
  encodeSafetensors({ scalar: { dtype: 'F32', shape: [], data: Float32Array.from([1.5]) }, empty: { dtype: 'F32', shape: [0, 3], data: new Float32Array(0) } }),
  encodeSafetensors({ 'layer.0.weight': { dtype: 'F32', shape: [8, 8], data: Float32Array.from({ length: 64 }, (_, i) => Math.sin(i)) } }, { config: JSON.stringify({ a: [1, 2, { b: 'c' }] }) }),
];

const SPECIAL = [0x00, 0xff, 0x7b, 0x7d, 0x5b, 0x5d, 0x22, 0x5c, 0x2c, 0x3a, 0x2d, 0x2e, 0x65, 0x30, 0x39, 0x20, 0x0a, 0x80, 0xc0, 0xed];
const NUMBERS = ['-1', '1e3', '1.5', '9007199254740993', '18446744073709551616', '99999999999999999999999', '0', '-0', '4294967296', '[]', 'null', '"7"', 'true'];

/** One mutation of a base file: byte- and JSON-level edits, one to four of them. */
function mutate(r: Random): Buffer {
  let b = Buffer.from(bases[r.below(bases.length)]);
  const n = 1 + r.below(4);
  for (let k = 0; k < n; k++) {
    const op = r.below(11);
    const at = r.below(Math.max(1, b.length));
    const hl = b.length >= 8 ? Number(b.readBigUInt64LE(0) & 0xffffffffn) : 0;
    if (op === 0) b[at] ^= 1 << r.below(8); // bit flip
    else if (op === 1) b[at] = SPECIAL[r.below(SPECIAL.length)]; // special byte
    else if (op === 2) b = b.subarray(0, at); // truncate
    else if (op === 3) b = Buffer.concat([b, Buffer.from(Array.from({ length: 1 + r.below(64) }, () => r.below(256)))]); // extend
    else if (op === 4) b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + r.below(16)))]); // delete a run
    else if (op === 5) b = Buffer.concat([b.subarray(0, at), b.subarray(r.below(b.length)).subarray(0, 1 + r.below(32)), b.subarray(at)]); // splice a copy in
    else if (op === 6 && b.length >= 8) b.writeBigUInt64LE([0n, 1n, BigInt(hl + 8), BigInt(hl - 8 > 0 ? hl - 8 : 0), 2n ** 63n, 2n ** 64n - 1n, BigInt(r.below(2 ** 32))][r.below(7)], 0); // length field
    else if (op >= 7 && b.length > 8 && hl > 0 && hl <= b.length - 8) {
      // JSON-aware: replace a number, a string or a structural token in the header, then fix or keep the length.
      let h = b.subarray(8, 8 + hl).toString('latin1');
      const matches = [...h.matchAll(op === 7 ? /-?\d+/g : op === 8 ? /"[^"]*"/g : op === 9 ? /[{}[\],:]/g : /"(dtype|shape|data_offsets|__metadata__)"/g)];
      if (matches.length) {
        const m = matches[r.below(matches.length)];
        const rep = op === 7 ? NUMBERS[r.below(NUMBERS.length)] : op === 8 ? ['""', '"F64"', '"I32"', '"BF16"', '"__metadata__"', '"\\ud800"', '"shape"', '"a"', '"' + 'x'.repeat(200) + '"'][r.below(9)]
          : op === 9 ? ['', '{', ']', '[[[[', ',,', '}}'][r.below(6)] : ['"dtype"', '"shape"', '"data_offsets"', '"extra"', '"__metadata__"'][r.below(5)];
        h = h.slice(0, m.index) + rep + h.slice(m.index! + m[0].length);
      }
      const hb = Buffer.from(h, 'latin1');
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(r.next() < 0.8 ? hb.length : hl), 0);
      b = Buffer.concat([len, hb, b.subarray(8 + hl)]);
    }
  }
  return b;
}

/** A successful load must be self-consistent. */
function consistent(f: SafeFile): string | undefined {
  for (const [name, t] of f.tensors) {
    const n = t.shape.reduce((a, d) => a * d, 1);
    if (t.data.length !== n) return `tensor ${name}: ${t.data.length} elements for shape [${t.shape}]`;
  }
  const again = decodeSafetensors(encodeSafetensors(f.tensors as Map<string, SafeTensor>, f.metadata));
  if (again.tensors.size !== f.tensors.size) return 're-encoding lost tensors';
  for (const [name, t] of f.tensors) {
    const u = again.tensors.get(name);
    if (!u || u.dtype !== t.dtype || u.shape.join() !== t.shape.join() || Buffer.compare(Buffer.from(u.data.buffer, u.data.byteOffset, u.data.byteLength), Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)) !== 0)
      return `tensor ${name} does not survive a re-encode`;
  }
  return undefined;
}

const dir = mkdtempSync(join(tmpdir(), 'sf-fuzz-'));
const r = new Random(seed);
for (let i = 0; i < from; i++) mutate(r); // the same stream, whoever runs which slice
let loads = 0, errors = 0, fromFiles = 0, maxMs = 0;
const t0 = performance.now();
for (let i = from; i < from + count; i++) {
  const b = mutate(r);
  const viaFile = i % 10 === 0;
  const s = performance.now();
  try {
    let f: SafeFile;
    if (viaFile) {
      const p = join(dir, 'm.safetensors');
      writeFileSync(p, b);
      fromFiles++;
      f = loadSafetensors(p);
    } else f = decodeSafetensors(b);
    const bad = consistent(f);
    if (bad) say({ i, unexpected: `loaded an inconsistent file: ${bad}`, hex: b.toString('hex').slice(0, 400) });
    else loads++;
  } catch (e) {
    if (e instanceof SafetensorsError && e.message.length > 0) errors++;
    else say({ i, unexpected: `${(e as Error)?.constructor?.name}: ${(e as Error)?.message ?? e}`, hex: b.toString('hex').slice(0, 400) });
  }
  const took = performance.now() - s;
  // A watchdog, not a speed check: a load that takes this long on a file of a few kilobytes is a hang.
  if (took > 10_000) say({ i, unexpected: `one load took ${took.toFixed(0)} ms`, hex: b.toString('hex').slice(0, 400) });
  maxMs = Math.max(maxMs, took);
}
rmSync(dir, { recursive: true, force: true });
say({ done: true, count, loads, errors, fromFiles, maxMs, ms: performance.now() - t0 });
