// hostile-cases.ts — the generated table of bad calls for test/reliability/hostile.test.ts (issue 8, point 1).
//
// Every exported function, constructor and method of note is described once: how to call it, a valid value for each
// argument, and for each argument a list of bad values (wrong types, ranks and shapes; negative, zero and huge
// dimensions; sizes whose byte count overflows; mismatched dtypes and devices; NaN and Infinity where finite values are
// required; disposed tensors; token ids out of range; non-arrays; absurd configs). The cases are the product: each
// argument's bad values with every other argument valid (the CI set), plus, in the full run, seeded random pairs of
// bad values at once. The list is a pure function of `full`, so the parent and the child processes agree on case i.
//
// A case passes when its call throws (or rejects with) an Error whose message is non-empty and names the function or
// the op it ran (`expect`); a Tensor it returns is read, so that an error raised on the device stream counts as well.
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as sf from '../../lib/index.ts';
import { Tensor } from '../../lib/index.ts';
import { ParameterBuilder } from '../../lib/params.ts';
import { main as cliMain, usage as cliUsage } from '../../lib/cli/index.ts';
import { Random } from '../helpers/random.ts';

const K = sf.kernels;
const ops = sf.ops;

/** What a case may create: tracked, and freed after the case. */
export class Ctx {
  readonly tensors: Tensor[] = [];
  readonly disposers: (() => void)[] = [];
  private static dirCache: string | undefined;
  t(shape: number[], dtype: 'float32' | 'int32' | 'bfloat16' = 'float32', fill?: number): Tensor {
    let x: Tensor;
    if (dtype === 'int32') {
      const n = shape.reduce((a, b) => a * b, 1);
      const a = new Int32Array(n);
      for (let i = 0; i < n; i++) a[i] = fill ?? i % 3;
      x = sf.tensor(a, shape, { dtype: 'int32' });
    } else if (fill !== undefined) x = sf.full(shape, fill, { dtype });
    else x = sf.randn(shape, { seed: 7, dtype });
    this.tensors.push(x);
    return x;
  }
  ids(shape: number[], values: number[]): Tensor {
    const x = sf.tensor(Int32Array.from(values), shape, { dtype: 'int32' });
    this.tensors.push(x);
    return x;
  }
  disposed(shape: number[], dtype: 'float32' | 'int32' = 'float32'): Tensor {
    const x = this.t(shape, dtype);
    x.dispose();
    return x;
  }
  track<T extends { dispose(): void }>(x: T): T {
    this.disposers.push(() => x.dispose());
    return x;
  }
  decoder(extra: Partial<sf.DecoderConfig> = {}): sf.Decoder {
    const m = new sf.Decoder({ vocab: 11, dModel: 8, heads: 2, dFF: 16, layers: 2, maxSeq: 8, seed: 1, ...extra });
    this.disposers.push(() => m.store.dispose());
    return m;
  }
  encoder(extra: Partial<sf.EncoderConfig> = {}): sf.Encoder {
    const m = new sf.Encoder({ vocab: 11, dModel: 8, heads: 2, dFF: 16, layers: 2, maxSeq: 8, seed: 1, numClasses: 3, ...extra });
    this.disposers.push(() => m.store.dispose());
    return m;
  }
  seq2seq(): sf.EncoderDecoder {
    const m = new sf.EncoderDecoder({ vocab: 11, dModel: 8, heads: 2, dFF: 16, encoderLayers: 2, decoderLayers: 2, maxSeq: 8, seed: 1 });
    this.disposers.push(() => m.store.dispose());
    return m;
  }
  dataset(): sf.TokenDataset {
    const a = new Int32Array(200);
    for (let i = 0; i < a.length; i++) a[i] = (i * 7) % 11;
    return new sf.TokenDataset(a, 11);
  }
  /** A scratch folder (one per process) with a few hostile files. */
  dir(): string {
    if (!Ctx.dirCache) {
      const d = mkdtempSync(join(tmpdir(), 'sf-hostile-'));
      writeFileSync(join(d, 'garbage.safetensors'), Buffer.from('not a safetensors file at all, just text'));
      writeFileSync(join(d, 'empty.safetensors'), Buffer.alloc(0));
      writeFileSync(join(d, 'huge-header.safetensors'), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x7b, 0x7d]));
      writeFileSync(join(d, 'bad.json'), '{"dModel": ');
      writeFileSync(join(d, 'array.json'), '[1, 2, 3]');
      writeFileSync(join(d, 'absurd.json'), JSON.stringify({ dModel: -5, heads: 1e12 }));
      writeFileSync(join(d, 'empty.txt'), '');
      writeFileSync(join(d, 'tiny.txt'), 'ab');
      sf.saveSafetensors(join(d, 'other.safetensors'), { w: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) } });
      sf.saveSafetensors(join(d, 'i32.safetensors'), { w: { dtype: 'I32', shape: [2], data: new Int32Array([1, 2]) } }, { format: 'sharedformer' });
      mkdirSync(join(d, 'a-folder.safetensors'));
      Ctx.dirCache = d;
    }
    return Ctx.dirCache;
  }
  /** Removes the scratch folder (at the end of a batch). */
  static cleanup(): void {
    if (Ctx.dirCache) rmSync(Ctx.dirCache, { recursive: true, force: true });
    Ctx.dirCache = undefined;
  }
  release(): void {
    for (const d of this.disposers.splice(0).reverse()) {
      try {
        d();
      } catch {
        /* already disposed */
      }
    }
    for (const x of this.tensors.splice(0)) if (!x.disposed) x.dispose();
  }
}

export interface Case {
  /** The function under test and what was bad, e.g. "kernels.matmul a=disposed". */
  id: string;
  /** The message must match this (the function's or the op's name). */
  expect: RegExp;
  run(c: Ctx): unknown;
}

type Make = (c: Ctx) => unknown;
interface Bad {
  label: string;
  make: Make;
  /** Also accepted in the message (a disposed tensor may be reported by the accessor that met it). */
  expect?: RegExp;
}
interface Arg {
  valid: Make;
  bad: Bad[];
}
interface Fn {
  name: string;
  expect: RegExp;
  args: Arg[];
  call(c: Ctx, a: unknown[]): unknown;
}

const names = (...n: string[]) => new RegExp(n.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'i');
const bad = (label: string, make: Make): Bad => ({ label, make });
const val = (label: string, v: unknown): Bad => ({ label, make: () => v });

// ---- pools of bad values ---------------------------------------------------------------------------------------------

const NOT_TENSORS: Bad[] = [
  val('null', null), val('undefined', undefined), val('number', 3), val('string', 'x'), val('object', {}), val('array', [1, 2]),
  val('Float32Array', new Float32Array(6)), val('function', () => 1), val('bigint', 5n), val('symbol', Symbol('t')),
  val('fake tensor', { shape: [2, 3], dtype: 'float32', handle: {} }),
];

/** A tensor argument: valid shape/dtype, shapes that must be refused, and whether other dtypes must be refused. */
function T(shape: number[], o: { dtype?: 'float32' | 'int32'; shapes?: number[][]; dtypeMatters?: boolean; nullable?: boolean; receiver?: boolean } = {}): Arg {
  const dtype = o.dtype ?? 'float32';
  const other = dtype === 'float32' ? 'int32' : 'float32';
  const b: Bad[] = [...NOT_TENSORS.filter((x) => !(o.nullable && (x.label === 'null' || x.label === 'undefined')))];
  b.push({ ...bad('disposed', (c) => c.disposed(shape, dtype)), expect: /has been disposed/ });
  if (!o.receiver) b.push(bad('raw native handle', (c) => c.t(shape, dtype).handle));
  if (o.dtypeMatters !== false) b.push(bad(`dtype ${other}`, (c) => c.t(shape, other)));
  if (o.dtypeMatters !== false && dtype === 'float32') b.push(bad('dtype bfloat16', (c) => c.t(shape, 'bfloat16')));
  for (const s of o.shapes ?? []) b.push(bad(`shape [${s}]`, (c) => c.t(s, dtype)));
  return { valid: (c) => c.t(shape, dtype), bad: b };
}
const TI = (shape: number[], values: number[], o: { shapes?: number[][]; outOfRange?: number[] } = {}): Arg => {
  const a = T(shape, { dtype: 'int32', shapes: o.shapes });
  a.valid = (c) => c.ids(shape, values);
  for (const v of o.outOfRange ?? []) {
    const vs = values.slice();
    vs[vs.length - 1] = v;
    a.bad.push(bad(`id ${v}`, (c) => c.ids(shape, vs)));
  }
  return a;
};

const NON_NUMBERS: Bad[] = [val('string', '1'), val('null', null), val('object', {}), val('array', [1]), val('bigint', 1n), val('boolean', true), val('symbol', Symbol('n'))];
const NON_FINITE: Bad[] = [val('NaN', NaN), val('Infinity', Infinity), val('-Infinity', -Infinity)];
/** A number that must be finite. */
const F = (v: number, extra: Bad[] = []): Arg => ({ valid: () => v, bad: [...NON_FINITE, ...NON_NUMBERS, ...extra] });
/** An integer >= lo. */
const I = (v: number, lo: number, extra: Bad[] = []): Arg => ({
  valid: () => v,
  bad: [val('NaN', NaN), val('Infinity', Infinity), val('fraction', lo + 0.5), val(`${lo - 1}`, lo - 1), val('-1e9', -1e9), val('2^53', 2 ** 53),
    ...NON_NUMBERS.filter((b) => b.label !== 'bigint'), ...extra],
});
const NON_ARRAYS: Bad[] = [val('string', 'abc'), val('null', null), val('number', 3), val('object', {}), val('array-like', { length: 1, 0: 2 }),
  val('Float32Array', new Float32Array([2])), val('function', () => [2]), val('bigint', 3n)];
/** A shape argument. `size` is what the call needs (for wrong-size shapes), or undefined when any size will do. */
const SHAPE_BAD: Bad[] = [
  ...NON_ARRAYS,
  val('[-1]', [-1]), val('[2, -3]', [2, -3]), val('[1.5]', [1.5]), val('[NaN]', [NaN]), val('[Infinity]', [Infinity]),
  val("['2']", ['2']), val('[null]', [null]), val('[2n]', [2n]), val('sparse', [, 2]), val('[2^53]', [2 ** 53]),
  val('[2^40, 2^40]', [2 ** 40, 2 ** 40]), val('[1e9,1e9,1e9]', [1e9, 1e9, 1e9]), val('[2^31, 2^31]', [2 ** 31, 2 ** 31]),
  val('[2^46] (256 TB)', [2 ** 46]), val('rank 40', new Array(40).fill(2)), val('[-0.0001]', [-0.0001]),
];
const S = (v: number[], extra: Bad[] = []): Arg => ({ valid: () => v, bad: [...SHAPE_BAD, ...extra] });
const NON_OBJECTS: Bad[] = [val('string', 'x'), val('number', 5), val('array', []), val('function', () => ({})), val('true', true)];
/** An options object: valid fields, and per field bad values. */
function O(valid: Record<string, Make | unknown>, fields: Record<string, Bad[]>, o: { nullOk?: boolean; lenient?: boolean } = {}): Arg {
  const mk = (c: Ctx) => Object.fromEntries(Object.entries(valid).map(([k, v]) => [k, typeof v === 'function' ? (v as Make)(c) : v]));
  // lenient: the method reads its options with destructuring defaults, so a non-object means "no options".
  const b: Bad[] = o.lenient ? [] : NON_OBJECTS.slice();
  if (!o.nullOk && !o.lenient) b.push(val('null', null));
  for (const [k, list] of Object.entries(fields)) for (const x of list) b.push(bad(`${k}=${x.label}`, (c) => ({ ...mk(c), [k]: x.make(c) })));
  return { valid: mk, bad: b };
}
const DEVICES: Bad[] = [val("'gpu'", 'gpu'), val("'cuda:99'", 'cuda:99'), val("'CPU'", 'CPU'), val("''", ''), val('5', 5), val("'cuda:-1'", 'cuda:-1'),
  val("'cuda:1.5'", 'cuda:1.5'), val("'cpu:0x'", 'cpu:0x'), val('object', {})];
const DTYPES: Bad[] = [val("'float64'", 'float64'), val("'int64'", 'int64'), val("'FLOAT32'", 'FLOAT32'), val("''", ''), val('5', 5), val('object', {})];
const cudaHere = () => {
  try {
    return sf.backends().cuda.available;
  } catch {
    return false;
  }
};
/** 'cuda' is a bad device only where CUDA is not available. */
const devices = (): Bad[] => (cudaHere() ? DEVICES : [...DEVICES, val("'cuda' (no GPU)", 'cuda')]);
const PATHS: (c: Ctx) => Bad[] = () => [val("''", ''), val('number', 5), val('null', null), val('object', {}),
  val('missing', '/nonexistent-sf/dir/x.safetensors'),
  bad('a folder', (c) => join(c.dir(), 'a-folder.safetensors')), bad('garbage file', (c) => join(c.dir(), 'garbage.safetensors')),
  bad('empty file', (c) => join(c.dir(), 'empty.safetensors')), bad('huge header', (c) => join(c.dir(), 'huge-header.safetensors')),
  bad('other tensors', (c) => join(c.dir(), 'other.safetensors')), bad('int32 tensors', (c) => join(c.dir(), 'i32.safetensors'))];
const NON_FUNCTIONS: Bad[] = [val('null', null), val('number', 1), val('string', 'f'), val('object', {}), val('array', [])];

// ---- the functions -----------------------------------------------------------------------------------------------------

function fns(): Fn[] {
  const out: Fn[] = [];
  const fn = (name: string, expect: RegExp, args: Arg[], call: (c: Ctx, a: any[]) => unknown) => out.push({ name, expect, args, call });

  // tensor factories and runtime
  const TOPTS = (extra: Record<string, Bad[]> = {}) => O({}, { device: devices(), dtype: DTYPES, ...extra }, { nullOk: false });
  fn('tensor', names('tensor'), [
    { valid: () => [[1, 2, 3], [4, 5, 6]], bad: [val('string', 'abc'), val('null', null), val('object', {}), val('ragged', [[1, 2], [3]]), val('[[1], 2]', [[1], 2]),
      val("['a']", ['a']), val('[1n]', [1n]), val('[null]', [null]), val('DataView', new DataView(new ArrayBuffer(8))), val('Float64Array', new Float64Array(6)),
      val('Uint8Array', new Uint8Array(6)), val('BigInt64Array', new BigInt64Array(6)), val('Float32Array(5)', new Float32Array(5)), val('function', () => 1), val('symbol', Symbol('d'))] },
    { valid: () => [2, 3], bad: [...SHAPE_BAD.filter((b) => b.label !== 'null'), val('[6, 2] (size 12)', [6, 2]), val('[7]', [7])] },
    TOPTS(),
  ], (_c, [d, s, o]) => sf.tensor(d, s, o));
  fn('tensor(int32 data)', names('tensor'), [
    { valid: () => [1, 2], bad: [val('[1.5, 2]', [1.5, 2]), val('[2^31, 0]', [2 ** 31, 0]), val('[NaN, 1]', [NaN, 1]), val('[Infinity, 1]', [Infinity, 1])] },
  ], (_c, [d]) => sf.tensor(d, undefined, { dtype: 'int32' }));
  fn('full', names('full'), [S([2, 3]), { valid: () => 1, bad: NON_NUMBERS }, TOPTS()], (_c, [s, v, o]) => sf.full(s, v, o));
  fn('zeros', names('zeros'), [S([2, 3]), TOPTS()], (_c, [s, o]) => sf.zeros(s, o));
  fn('ones', names('ones'), [S([2, 3]), TOPTS()], (_c, [s, o]) => sf.ones(s, o));
  const RNG = { seed: [val('-1', -1), val('1.5', 1.5), val('NaN', NaN), val('2^64n', 2n ** 64n), val('string', '1'), val('object', {})],
    offset: [val('-1', -1), val('1.5', 1.5), val('NaN', NaN), val('Infinity', Infinity), val('-1n', -1n), val('string', '1')] };
  fn('rand', names('rand'), [S([2, 3]), TOPTS({ ...RNG, low: [...NON_FINITE, val('string', '0')], high: [...NON_FINITE, val('high < low', -5)] })], (_c, [s, o]) => sf.rand(s, o));
  fn('randn', names('randn'), [S([2, 3]), TOPTS({ ...RNG, mean: [...NON_FINITE, val('string', '0')], std: [...NON_FINITE, val('-1', -1)] })], (_c, [s, o]) => sf.randn(s, o));
  fn('manualSeed', names('manualSeed'), [{ valid: () => 1, bad: [...RNG.seed, val('null', null), val('Infinity', Infinity)] }], (_c, [s]) => sf.manualSeed(s));
  fn('setNumThreads', names('setNumThreads', 'threads'), [I(2, 1, [val('1025', 1025), val('2^31', 2 ** 31)])], (_c, [n]) => sf.setNumThreads(n));
  fn('new Tensor', names('Tensor'), [{ valid: () => null, bad: NOT_TENSORS }], (_c, [h]) => new (Tensor as any)(h));

  // Tensor methods
  const method = (m: string, args: Arg[], call: (x: Tensor, a: any[]) => unknown) =>
    fn(`Tensor.${m}`, names(`Tensor.${m}`, m, ...(m === 'window' ? ['Tensor.view'] : m === 'sharesStorageWith' ? ['Tensor.sameStorage'] : [])),
      [T([2, 3], { dtypeMatters: false, shapes: [], receiver: true }), ...args], (_c, [x, ...a]) => call(x, a));
  const onlyDisposed = (m: string, call: (x: Tensor) => unknown) =>
    fn(`Tensor.${m}`, names(`Tensor.${m}`, m, 'disposed'), [{ valid: (c) => c.t([2, 3]), bad: [bad('disposed', (c) => c.disposed([2, 3]))] }], (_c, [x]) => call(x));
  method('to', [{ valid: () => 'cpu', bad: [...devices(), val('null', null)] }], (x, [d]) => x.to(d));
  method('view', [{ valid: () => [3, 2], bad: [...SHAPE_BAD, val('[4] (size 4)', [4]), val('[6, 0]', [6, 0])] }], (x, [s]) => x.view(s));
  method('window', [I(1, 0, [val('6 (past the end)', 6), val('5 + [2]', 5)]), { valid: () => [2], bad: [...SHAPE_BAD, val('[7]', [7])] }], (x, [o, s]) => x.window(o, s));
  method('sharesStorageWith', [T([2, 3], { dtypeMatters: false })], (x, [o]) => x.sharesStorageWith(o));
  onlyDisposed('dataSync', (x) => x.dataSync());
  onlyDisposed('data', (x) => x.data());
  onlyDisposed('sharedData', (x) => x.sharedData());
  onlyDisposed('clone', (x) => x.clone());
  onlyDisposed('toArray', (x) => x.toArray());
  fn('Tensor.sharedData(bfloat16)', names('shared', 'bfloat16'), [{ valid: () => 0, bad: [bad('bfloat16', (c) => c.t([2], 'bfloat16'))] }], (_c, [x]) => x.sharedData());

  // kernels
  const A = [2, 3], B_ = [3, 4];
  fn('kernels.matmul', names('matmul'), [
    T(A, { shapes: [[2, 5], [3], [2, 0, 3, 1], [4, 2, 4]] }), T(B_, { shapes: [[5, 4], [4], [2, 5, 4]] }),
    O({}, { out: [...NOT_TENSORS.filter((b) => b.label !== 'null' && b.label !== 'undefined'), bad('out [2,5]', (c) => c.t([2, 5])), bad('out int32', (c) => c.t([2, 4], 'int32')), bad('out disposed', (c) => c.disposed([2, 4]))],
      transA: [val('string', 'yes'), val('number', 2)], alpha: [...NON_FINITE, val('string', '1')], beta: [val('1 without out', 1), ...NON_FINITE],
      bias: [bad('bias [5]', (c) => c.t([5])), bad('bias int32', (c) => c.t([4], 'int32')), val('number', 4)], activation: [val("'relu'", 'relu'), val('5', 5)],
      preact: [bad('preact without gelu', (c) => c.t([2, 4])), bad('preact [3]', (c) => c.t([3]))], precision: [val("'fp16'", 'fp16'), val('5', 5)] }),
  ], (_c, [a, b, o]) => K.matmul(a, b, o));
  fn('kernels.biasGrad', names('biasGrad', 'bias'), [T([2, 4], { shapes: [[5]] }), T([4], { shapes: [[5], [2, 4]] })], (_c, [a, b]) => K.biasGrad(a, b));
  fn('kernels.layerNorm', names('layernorm', 'layerNorm'), [T([2, 4], { shapes: [[2, 5]] }), T([4], { shapes: [[5], [2, 4]] }), T([4], { shapes: [[3]] }),
    O({}, { eps: [...NON_FINITE, val('-1', -1), val('string', '1e-5')] }, { nullOk: true })], (_c, [x, w, b, o]) => K.layerNorm(x, w, b, o));
  fn('kernels.layerNormBackward', names('layernorm', 'layerNorm'), [T([2, 4], { shapes: [[2, 5]] }), T([2, 4], { shapes: [[3, 4]] }), T([4], { shapes: [[5]] }), T([2], { shapes: [[3]] }), T([2], { shapes: [[3]] }),
    O({ dx: (c: Ctx) => c.t([2, 4], 'float32', 0) }, { dx: [bad('dx [3,4]', (c) => c.t([3, 4])), val('number', 1)], dw: [bad('dw [5]', (c) => c.t([5]))], db: [bad('db int32', (c) => c.t([4], 'int32'))] })],
  (_c, [dy, x, w, m, r, g]) => K.layerNormBackward(dy, x, w, m, r, g));
  fn('kernels.gelu', names('gelu'), [T([2, 3]), O({}, { out: [bad('out [3]', (c) => c.t([3])), bad('out int32', (c) => c.t([2, 3], 'int32')), val('number', 1)] }, { nullOk: true })], (_c, [x, o]) => K.gelu(x, o));
  fn('kernels.geluBackward', names('gelu'), [T([2, 3]), T([2, 3], { shapes: [[3, 2], [6]] }), T([2, 3], { shapes: [[2, 4]] })], (_c, [x, dy, dx]) => K.geluBackward(x, dy, dx));
  fn('kernels.geluErf', names('gelu'), [T([2, 3]), O({}, { out: [bad('out [3]', (c) => c.t([3])), bad('out int32', (c) => c.t([2, 3], 'int32')), val('number', 1)] }, { nullOk: true })], (_c, [x, o]) => K.geluErf(x, o));
  fn('kernels.geluErfBackward', names('gelu'), [T([2, 3]), T([2, 3], { shapes: [[3, 2], [6]] }), T([2, 3], { shapes: [[2, 4]] })], (_c, [x, dy, dx]) => K.geluErfBackward(x, dy, dx));
  fn('kernels.softmax', names('softmax'), [T([2, 3], { shapes: [[]] }), O({}, { out: [bad('out [2,4]', (c) => c.t([2, 4]))] }, { nullOk: true })], (_c, [x, o]) => K.softmax(x, o));
  fn('kernels.softmaxBackward', names('softmax'), [T([2, 3]), T([2, 3], { shapes: [[2, 4]] }), T([2, 3], { shapes: [[3, 3]] })], (_c, [y, dy, dx]) => K.softmaxBackward(y, dy, dx));
  fn('kernels.axpby', names('axpby'), [T([2, 3]), F(1), T([2, 3], { shapes: [[3, 2], [6], [2, 4]] }), F(1), O({}, { out: [bad('out [6]', (c) => c.t([6])), bad('out int32', (c) => c.t([2, 3], 'int32'))] }, { nullOk: true })],
    (_c, [a, al, b, be, o]) => K.axpby(a, al, b, be, o));
  const DROP = { p: [val('1', 1), val('-0.1', -0.1), val('1.5', 1.5), ...NON_FINITE, val('string', '0.1'), val('missing', undefined)], seed: [val('-1', -1), val('NaN', NaN), val('string', 's'), val('missing', undefined)], offset: [val('-1', -1), val('1.5', 1.5)] };
  fn('kernels.dropout', names('dropout'), [T([2, 3]), O({ p: 0.1, seed: 1 }, { ...DROP, out: [bad('out [3]', (c) => c.t([3]))] })], (_c, [x, o]) => K.dropout(x, o));
  fn('kernels.dropoutBackward', names('dropout'), [T([2, 3]), T([2, 3], { shapes: [[3]] }), O({ p: 0.1, seed: 1 }, DROP)], (_c, [dy, dx, o]) => K.dropoutBackward(dy, dx, o));
  const Q = [1, 2, 4, 8];
  const ATT_OPTS = () => O({}, { causal: [val('string', 'yes')], scale: [...NON_FINITE, val('string', '1')], precision: [val("'fp64'", 'fp64')],
    keyLengths: [bad('float32', (c) => c.t([1])), bad('[2]', (c) => c.ids([2], [1, 1])), bad('length 9', (c) => c.ids([1], [9])), bad('length -1', (c) => c.ids([1], [-1])), val('array', [4])] }, { nullOk: true });
  fn('kernels.attention', names('attention'), [T(Q, { shapes: [[2, 4, 8], [1, 3, 4, 8], [1, 2, 4, 7], [1, 2, 4, 0]] }), T(Q, { shapes: [[1, 2, 4, 7], [2, 2, 4, 8], [1, 3, 4, 8]] }), T(Q, { shapes: [[1, 2, 5, 8], [1, 2, 4, 6]] }), ATT_OPTS()],
    (_c, [q, k, v, o]) => K.attention(q, k, v, o));
  fn('kernels.attentionBackward', names('attention'), [T(Q), T(Q, { shapes: [[1, 2, 4, 7]] }), T(Q), T(Q, { shapes: [[1, 2, 3, 8]] }), T([1, 2, 4], { shapes: [[1, 2, 5]] }), T(Q, { shapes: [[2, 2, 4, 8]] }),
    O({ dq: (c: Ctx) => c.t(Q, 'float32', 0), dk: (c: Ctx) => c.t(Q, 'float32', 0), dv: (c: Ctx) => c.t(Q, 'float32', 0) }, { dq: [bad('dq [1,2,4,7]', (c) => c.t([1, 2, 4, 7])), val('missing', undefined)], dv: [bad('dv int32', (c) => c.t(Q, 'int32'))] }),
    ATT_OPTS()], (_c, [q, k, v, o, l, d, g, opt]) => K.attentionBackward(q, k, v, o, l, d, g, opt));
  fn('kernels.embedding', names('embedding'), [TI([2, 2], [0, 1, 2, 3], { outOfRange: [6, -1, 2 ** 31 - 1] }), T([6, 4], { shapes: [[6], [6, 4, 1]] }),
    O({}, { out: [bad('out [2,2,5]', (c) => c.t([2, 2, 5]))] }, { nullOk: true })], (_c, [i, t, o]) => K.embedding(i, t, o));
  fn('kernels.embeddingBackward', names('embedding'), [TI([2, 2], [0, 1, 2, 3], { outOfRange: [6, -7] }), T([2, 2, 4], { shapes: [[2, 2, 5], [4, 4]] }), T([6, 4], { shapes: [[6, 5]] })], (_c, [i, d, t]) => K.embeddingBackward(i, d, t));
  fn('kernels.crossEntropy', names('crossEntropy', 'cross'), [T([3, 5], { shapes: [[5], [3, 0]] }), TI([3], [0, 4, 2], { shapes: [[4], [3, 1]], outOfRange: [5, -2, 99] }),
    O({}, { ignoreIndex: [val('1.5', 1.5), val('NaN', NaN), val('string', '-100')], gradScale: [...NON_FINITE, val('string', '1')], dlogits: [bad('dlogits [3,4]', (c) => c.t([3, 4])), bad('dlogits int32', (c) => c.t([3, 5], 'int32'))] }, { nullOk: true })],
  (_c, [l, tg, o]) => K.crossEntropy(l, tg, o));
  const FLAT = [8];
  const ADAM = { lr: [...NON_FINITE, val('-1', -1), val('missing', undefined), val('string', '0.1')], beta1: [val('1', 1), val('-0.1', -0.1), val('NaN', NaN)], beta2: [val('1.5', 1.5), val('NaN', NaN)],
    eps: [val('-1', -1), val('NaN', NaN)], weightDecay: [val('NaN', NaN), val('Infinity', Infinity), val('-1', -1)], step: [val('0', 0), val('-1', -1), val('1.5', 1.5), val('missing', undefined), val('NaN', NaN)],
    decayMask: [bad('[7]', (c) => c.t([7])), bad('int32', (c) => c.t(FLAT, 'int32')), val('number', 1)] };
  fn('kernels.adamw', names('adamw'), [T(FLAT, { shapes: [[7], [2, 4]] }), T(FLAT, { shapes: [[9]] }), T(FLAT, { shapes: [[4]] }), T(FLAT, { shapes: [[16]] }), O({ lr: 0.1, step: 1 }, ADAM)],
    (_c, [p, g, m, v, o]) => K.adamw(p, g, m, v, o));
  fn('kernels.sgd', names('sgd'), [T(FLAT, { shapes: [[7]] }), T(FLAT, { shapes: [[9]] }), T(FLAT, { shapes: [[4]], nullable: true }),
    O({ lr: 0.1 }, { lr: [...NON_FINITE, val('-1', -1), val('missing', undefined)], momentum: [val('-0.5', -0.5), val('NaN', NaN)], dampening: [val('NaN', NaN)], weightDecay: [val('Infinity', Infinity), val('-1', -1)], nesterov: [val('string', 'yes')] })],
  (_c, [p, g, b, o]) => K.sgd(p, g, b, o));
  fn('kernels.sgd(momentum, no buffer)', names('sgd'), [{ valid: () => 0, bad: [val('null buffer', null)] }], (c, [b]) => K.sgd(c.t(FLAT), c.t(FLAT), b, { lr: 0.1, momentum: 0.9, firstStep: true }));
  fn('kernels.sumSquares', names('sumSquares'), [T(FLAT)], (_c, [x]) => K.sumSquares(x));
  fn('kernels.clipGradNorm', names('clipGradNorm', 'clip'), [T(FLAT), F(1, [val('-1', -1)]), O({}, { eps: [val('NaN', NaN), val('-1', -1)] }, { nullOk: true })], (_c, [g, m, o]) => K.clipGradNorm(g, m, o));
  fn('kernels.scale', names('scale'), [T(FLAT), F(2)], (_c, [x, s]) => K.scale(x, s));
  fn('kernels.permute0213', names('permute'), [T([2, 3, 4, 5], { shapes: [[2, 3, 4], [6, 4, 5]] }), O({}, { out: [bad('out [2,3,4,5]', (c) => c.t([2, 3, 4, 5])), bad('out int32', (c) => c.t([2, 4, 3, 5], 'int32'))], accumulate: [val('without out', true), val('string', 'yes')] }, { nullOk: true })],
    (_c, [x, o]) => K.permute0213(x, o));
  fn('kernels.splitHeads', names('splitHeads', 'heads'), [T([2, 3, 8], { shapes: [[2, 8], [2, 3, 7]] }), I(2, 1, [val('3 (does not divide 8)', 3), val('16', 16)])], (_c, [x, h]) => K.splitHeads(x, h));
  fn('kernels.mergeHeads', names('mergeHeads', 'heads'), [T([2, 2, 3, 4], { shapes: [[2, 3, 4]] }), O({}, { out: [bad('out [2,3,9]', (c) => c.t([2, 3, 9]))], accumulate: [val('without out', true)] }, { nullOk: true })],
    (_c, [x, o]) => K.mergeHeads(x, o));
  fn('kernels.persistL2', names('persistL2'), [{ valid: (c) => c.t([4]), bad: [...NOT_TENSORS.filter((b) => b.label !== 'null' && b.label !== 'undefined' && b.label !== 'array'),
    { ...bad('disposed', (c) => c.disposed([4])), expect: /has been disposed/ }, val('[1, 2]', [1, 2]), bad('[tensor, 5]', (c) => [c.t([2]), 5]), bad('[tensor, disposed]', (c) => [c.t([2]), c.disposed([2])])] }],
  (_c, [t]) => K.persistL2(t));
  fn('kernels.kvAppend', names('kvAppend', 'kv'), [T([1, 2, 8, 4], { shapes: [[1, 2, 8], [1, 3, 8, 4]] }), T([1, 2, 3, 4], { shapes: [[1, 2, 9, 4], [1, 2, 3, 5], [2, 2, 3, 4]] }),
    I(2, 0, [val('6 (past the end)', 6), val('8', 8)])], (_c, [c, s, p]) => K.kvAppend(c, s, p));

  // differentiable ops (under noGrad and recording)
  fn('ops.reshape', names('reshape', 'view'), [T([2, 3], { dtypeMatters: false }), { valid: () => [6], bad: [...SHAPE_BAD, val('[5]', [5])] }], (_c, [x, s]) => ops.reshape(x, s));
  fn('ops.embedding', names('embedding'), [TI([2], [0, 1], { outOfRange: [6, -1] }), T([6, 4])], (_c, [i, t]) => ops.embedding(i, t));
  fn('ops.add', names('add', 'axpby'), [T([2, 3]), T([2, 3], { shapes: [[3, 2], [2, 4], [6]] })], (_c, [a, b]) => ops.add(a, b));
  fn('ops.linear', names('linear', 'matmul'), [T([2, 3], { shapes: [[2, 4], [3]] }), T([4, 3], { shapes: [[4, 5], [3]] }), T([4], { shapes: [[5]], nullable: true }), { valid: () => 'none', bad: [val("'relu'", 'relu'), val('5', 5)] }],
    (_c, [x, w, b, a]) => ops.linear(x, w, b, a));
  fn('ops.gelu', names('gelu'), [T([3]), { valid: () => 'none', bad: [val("'erf'", 'erf'), val('5', 5), val('null', null)] }], (_c, [x, a]) => ops.gelu(x, a));
  fn('ops.matmul', names('matmul'), [T([2, 3], { shapes: [[2, 5]] }), T([3, 4], { shapes: [[4, 4]] })], (_c, [a, b]) => ops.matmul(a, b));
  fn('ops.layerNorm', names('layernorm', 'layerNorm'), [T([2, 4]), T([4], { shapes: [[3]] }), T([4], { shapes: [[5]] }), F(1e-5, [val('-1', -1)])], (_c, [x, w, b, e]) => ops.layerNorm(x, w, b, e));
  fn('ops.splitHeads', names('splitHeads', 'heads'), [T([2, 3, 8], { shapes: [[2, 8]] }), I(2, 1, [val('3', 3)])], (_c, [x, h]) => ops.splitHeads(x, h));
  fn('ops.mergeHeads', names('mergeHeads', 'heads'), [T([2, 2, 3, 4], { shapes: [[2, 3, 4]] })], (_c, [x]) => ops.mergeHeads(x));
  fn('ops.attention', names('attention'), [T(Q), T(Q, { shapes: [[1, 2, 4, 6]] }), T(Q, { shapes: [[1, 2, 6, 8]] }), ATT_OPTS()], (_c, [q, k, v, o]) => ops.attention(q, k, v, o));
  fn('ops.crossEntropy', names('crossEntropy', 'cross'), [T([3, 5]), TI([3], [0, 1, 2], { outOfRange: [5, -3] }), O({}, { ignoreIndex: [val('NaN', NaN), val('1.5', 1.5)] }, { lenient: true })], (_c, [l, t, o]) => ops.crossEntropy(l, t, o));

  // autograd
  fn('backward', names('backward'), [T([1], { shapes: [[2, 3]] }), O({}, { scale: [...NON_FINITE, val('string', '1')] }, { nullOk: true })], (_c, [l, o]) => sf.backward(l, o));
  fn('noGrad', names('noGrad'), [{ valid: () => () => 1, bad: NON_FUNCTIONS }], (_c, [f]) => sf.noGrad(f));
  fn('tidy', names('tidy'), [{ valid: () => () => 1, bad: NON_FUNCTIONS }], (_c, [f]) => sf.tidy(f));
  fn('releaseTape', names('releaseTape', 'keep'), [{ valid: () => [], bad: [val('string', 'x'), val('number', 1), val('[1]', [1]), val('object', {})] }], (_c, [k]) => sf.releaseTape(k));

  // models and their configs
  const CONFIG_BAD: Record<string, Bad[]> = {
    vocab: [val('0', 0), val('-1', -1), val('1.5', 1.5), val('NaN', NaN), val('Infinity', Infinity), val('string', '11'), val('2^53', 2 ** 53), val('missing', undefined)],
    dModel: [val('0', 0), val('-8', -8), val('NaN', NaN), val('7 (not a multiple of heads)', 7), val('2^40', 2 ** 40), val('missing', undefined)],
    heads: [val('0', 0), val('3', 3), val('1e12', 1e12), val('string', '2'), val('null', null)],
    kvHeads: [val('0', 0), val('3', 3), val('-1', -1), val('1.5', 1.5)],
    dFF: [val('0', 0), val('-16', -16), val('Infinity', Infinity), val('2^40', 2 ** 40)],
    layers: [val('0', 0), val('-2', -2), val('1.5', 1.5), val('1e9', 1e9), val('NaN', NaN)],
    maxSeq: [val('0', 0), val('-8', -8), val('2^40', 2 ** 40), val('object', {})],
    norm: [val("'mid'", 'mid'), val('5', 5)],
    sharing: [val("strategy 'magic'", { strategy: 'magic' }), val('cycle without unique', { strategy: 'cycle' }), val('cycle unique 0', { strategy: 'cycle', unique: 0 }),
      val('cycle unique 5 > layers', { strategy: 'cycle', unique: 5 }), val('basis rank 0', { strategy: 'basis', rank: 0 }), val('basis rank 1e9', { strategy: 'basis', rank: 1e9 }),
      val('basis without rank', { strategy: 'basis' }), val('kvShareGroup 0', { kvShareGroup: 0 }), val('kvShareGroup NaN', { kvShareGroup: NaN }),
      val('custom out of range', { strategy: 'custom', custom: [0, 7] }), val('custom wrong length', { strategy: 'custom', custom: [0] }), val('string', 'all'),
      val('unknown key', { strategy: 'all', frobnicate: 1 }), val('rank with all', { strategy: 'all', rank: 2 })],
    factorizedEmbedding: [val('0', 0), val('-1', -1), val('1.5', 1.5)],
    device: devices(),
    seed: [val('-1', -1), val('NaN', NaN), val('string', 's')],
  };
  // A config whose parameters cannot be allocated fails in the store's allocation (full / randn), which says so.
  fn('new Decoder', names('Decoder', 'plan', 'sharing', 'full', 'randn'), [O({ vocab: 11, dModel: 8, heads: 2, dFF: 16, layers: 2, maxSeq: 8 }, CONFIG_BAD)], (_c, [cfg]) => new sf.Decoder(cfg).store.dispose());
  fn('new Encoder', names('Encoder', 'plan', 'sharing', 'full', 'randn'), [O({ vocab: 11, dModel: 8, heads: 2, dFF: 16, layers: 2, maxSeq: 8 }, { ...CONFIG_BAD, numClasses: [val('0', 0), val('-1', -1), val('1.5', 1.5)] })],
    (_c, [cfg]) => new sf.Encoder(cfg).store.dispose());
  const { layers: _l, norm: _n, factorizedEmbedding: _f, ...noLayers } = CONFIG_BAD;
  fn('new EncoderDecoder', names('EncoderDecoder', 'plan', 'sharing', 'full', 'randn'), [O({ vocab: 11, dModel: 8, heads: 2, dFF: 16, encoderLayers: 2, decoderLayers: 2, maxSeq: 8 }, {
    ...noLayers, encoderLayers: [val('0', 0), val('-1', -1)], decoderLayers: [val('0', 0), val('NaN', NaN)],
  })], (_c, [cfg]) => new sf.EncoderDecoder(cfg).store.dispose());
  fn('new EncoderDecoder(share, unequal)', names('EncoderDecoder'), [{ valid: () => 0, bad: [val('3 vs 2 layers', 3)] }],
    (_c, [n]) => new sf.EncoderDecoder({ vocab: 11, dModel: 8, heads: 2, dFF: 16, encoderLayers: n, decoderLayers: 2, maxSeq: 8, shareEncoderDecoder: true }).store.dispose());
  const IDS = () => TI([2, 4], [0, 1, 2, 3, 4, 5, 6, 7], { shapes: [[8], [2, 9], [0, 4], [2, 0], [1, 2, 4]], outOfRange: [11, -1, 2 ** 31 - 1] });
  fn('Decoder.forward', names('Decoder', 'embedding', 'sharing'), [IDS(), O({}, { depth: [val('0', 0), val('-1', -1), val('1.5', 1.5), val('1e6', 1e6)] }, { lenient: true })], (c, [ids, o]) => c.decoder().forward(ids, o));
  fn('Decoder.loss', names('loss', 'Decoder', 'crossEntropy', 'embedding'), [IDS(), TI([2, 4], [1, 2, 3, 4, 5, 6, 7, 8], { shapes: [[2, 3], [9]], outOfRange: [11, -5] })], (c, [ids, tg]) => sf.noGrad(() => c.decoder().loss(ids, tg)));
  const GEN = { maxNewTokens: [val('-1', -1), val('1.5', 1.5), val('NaN', NaN), val('100 > maxSeq', 100), val('missing', undefined), val('string', '3')],
    temperature: [val('-1', -1), ...NON_FINITE], topK: [val('0', 0), val('-1', -1), val('1.5', 1.5)], topP: [val('0', 0), val('1.5', 1.5), val('NaN', NaN)],
    seed: [val('-1', -1), val('NaN', NaN)], eos: [val('11', 11), val('-2', -2), val('1.5', 1.5)], depth: [val('0', 0), val('-1', -1)], unknownKey: [val('1', 1)] };
  fn('Decoder.generate', names('generate', 'Decoder'), [
    { valid: () => [1, 2], bad: [val('[]', []), val('[11]', [11]), val('[-1]', [-1]), val('[1.5]', [1.5]), val('[NaN]', [NaN]), val('string', 'ab'), val('null', null), val('9 ids', [1, 2, 3, 4, 5, 6, 7, 8, 9]),
      bad('float tensor', (c) => c.t([2])), bad('disposed ids', (c) => c.disposed([2], 'int32')), bad('ids out of range', (c) => c.ids([2], [1, 99]))] },
    O({ maxNewTokens: 2 }, GEN),
  ], (c, [p, o]) => c.decoder().generate(p, o));
  fn('decodeLogits', names('decodeLogits', 'DecodeSession', 'sharing'), [{ valid: () => [1, 2, 3], bad: [val('[]', []), val('[12]', [12]), val('string', 'x')] },
    O({ prefill: 1 }, { prefill: [val('0', 0), val('4', 4), val('1.5', 1.5), val('missing', undefined)], depth: [val('0', 0)] })], (c, [ids, o]) => sf.decodeLogits(c.decoder(), ids, o));
  fn('new DecodeSession', names('DecodeSession', 'decoder', 'model'), [{ valid: () => 0, bad: [val('not a model', {}), val('null', null)] }, I(4, 1, [val('9 > maxSeq', 9)])],
    (c, [m, cap]) => c.track(new sf.DecodeSession(m === 0 ? c.decoder() : m, cap)));
  // Issue 13: DecodeSession refuses ids that are not integers in [0, vocab) (it used to round, wrap or zero them)
  const SESSION_IDS = [val('[]', []), val('[1.5]', [1.5]), val('[2^32 + 3]', [2 ** 32 + 3]), val('[NaN]', [NaN]), val('[11]', [11]), val('[-1]', [-1]), val('string', 'ab'), val('null', null)];
  fn('DecodeSession.prefill', names('DecodeSession', 'prefill'), [{ valid: () => [1, 2], bad: SESSION_IDS }],
    (c, [ids]) => c.track(new sf.DecodeSession(c.decoder(), 4)).prefill(ids));
  fn('DecodeSession.step', names('DecodeSession', 'step'), [{ valid: () => 1, bad: [val('1.5', 1.5), val('2^32 + 3', 2 ** 32 + 3), val('NaN', NaN), val('11', 11), val('-1', -1), val('string', 'a'), val('null', null)] }],
    (c, [ids]) => {
      const s = c.track(new sf.DecodeSession(c.decoder(), 4));
      s.prefill([1, 2]);
      return s.step(ids);
    });
  fn('Encoder.encode', names('Encoder', 'embedding', 'sharing', 'attention'), [IDS(), O({}, { keyLengths: [val('[5, 4]', [5, 4]), val('[1]', [1]), val('[-1, 2]', [-1, 2]), val('string', 'ab'), bad('float tensor', (c) => c.t([2])), bad('int [3]', (c) => c.ids([3], [1, 1, 1]))],
    depth: [val('0', 0)] }, { lenient: true })], (c, [ids, o]) => sf.noGrad(() => c.encoder().encode(ids, o)));
  fn('Encoder.classificationLoss', names('Encoder', 'loss', 'crossEntropy', 'label', 'embedding'), [IDS(), TI([2], [0, 1], { shapes: [[3]], outOfRange: [3, -2] })], (c, [ids, l]) => sf.noGrad(() => c.encoder().classificationLoss(ids, l)));
  fn('EncoderDecoder.forward', names('EncoderDecoder', 'Encoder', 'Decoder', 'embedding'), [IDS(), TI([2, 3], [1, 2, 3, 4, 5, 6], { shapes: [[3, 3], [2, 9]], outOfRange: [11] }),
    O({}, { srcLengths: [val('[9, 1]', [9, 1]), val('[1]', [1]), val('string', 'x')] }, { lenient: true })], (c, [s, t, o]) => sf.noGrad(() => c.seq2seq().forward(s, t, o)));
  fn('Model.to', names('to', 'device', 'Tensor'), [{ valid: () => 'cpu', bad: devices() }], (c, [d]) => c.decoder().to(d));
  fn('Decoder.load', names('safetensors', 'loadCheckpoint', 'ENOENT', 'EISDIR', 'path'), [{ valid: () => '', bad: PATHS(undefined as never) }], (c, [p]) => c.decoder().load(p));
  fn('Decoder.save', names('saveSafetensors', 'ENOENT', 'path', 'EISDIR'), [{ valid: () => '', bad: [val("''", ''), val('number', 5), val('null', null), val('missing folder', '/nonexistent-sf/x.safetensors'), bad('a folder', (c) => c.dir())] }],
    (c, [p]) => c.decoder().save(p));

  // optimizers, schedules, sharing plans, accounting
  const store = (c: Ctx) => c.decoder().store;
  fn('new AdamW', names('AdamW'), [{ valid: store, bad: [val('null', null), val('object', {})] }, O({ lr: 0.1 }, { lr: [...NON_FINITE, val('-1', -1), val('missing', undefined), val('string', '0.1')] })],
    (c, [s, o]) => c.track(new sf.AdamW(s, o)));
  fn('AdamW.update', names('adamw', 'AdamW'), [{ valid: () => 0.1, bad: [...NON_FINITE, val('-1', -1), val('string', 'x')] }], (c, [lr]) => c.track(new sf.AdamW(store(c), { lr: 0.1 })).update(lr));
  fn('AdamW.update(bad config)', names('adamw', 'AdamW'), [O({ lr: 0.1 }, { beta1: [val('1', 1), val('NaN', NaN)], beta2: [val('-1', -1)], eps: [val('NaN', NaN)], weightDecay: [val('Infinity', Infinity)] })],
    (c, [o]) => c.track(new sf.AdamW(store(c), o)).update());
  fn('new SGD', names('SGD', 'sgd'), [{ valid: store, bad: [val('null', null)] }, O({ lr: 0.1 }, { lr: [...NON_FINITE, val('-1', -1)] })], (c, [s, o]) => c.track(new sf.SGD(s, o)).update());
  fn('SGD.update(bad config)', names('sgd', 'SGD'), [O({ lr: 0.1 }, { momentum: [val('-1', -1), val('NaN', NaN)], weightDecay: [val('-1', -1), val('NaN', NaN)], dampening: [val('NaN', NaN)] })],
    (c, [o]) => c.track(new sf.SGD(store(c), o)).update());
  const SCHED = { lr: [...NON_FINITE, val('-1', -1)], warmup: [val('-1', -1), val('1.5', 1.5), val('NaN', NaN)], total: [val('0', 0), val('-5', -5), val('NaN', NaN)], minLr: [val('NaN', NaN), val('-1', -1)] };
  fn('warmupCosine', names('warmupCosine'), [I(3, 0), O({ lr: 0.1, warmup: 2, total: 10 }, SCHED)], (_c, [s, o]) => sf.warmupCosine(s, o));
  fn('warmupLinear', names('warmupLinear'), [I(3, 0), O({ lr: 0.1, warmup: 2, total: 10 }, SCHED)], (_c, [s, o]) => sf.warmupLinear(s, o));
  fn('clipGradNorm(store)', names('clipGradNorm', 'clip'), [{ valid: store, bad: [val('null', null), val('object', {}), bad('a tensor', (c) => c.t([3]))] }, F(1, [val('-1', -1)])], (_c, [s, m]) => sf.clipGradNorm(s, m));
  fn('makePlan', names('makePlan', 'plan', 'sharing'), [O({ strategy: 'cycle', unique: 2 }, { ...Object.fromEntries([['strategy', [val("'magic'", 'magic'), val('5', 5), val('null', null)]]]), unique: [val('0', 0), val('9', 9), val('1.5', 1.5), val('NaN', NaN)],
    rank: [val('2 with cycle', 2)], kvShareGroup: [val('0', 0), val('-1', -1), val('1.5', 1.5)], custom: [val('with cycle', [0, 1, 0, 1])] }, { nullOk: true }),
  I(4, 1, [val('1e9', 1e9)]), { valid: () => undefined, bad: [val('string', 'x'), val('dModel 0', { dModel: 0, dFF: 4, kvDim: 4 })] }], (_c, [cfg, n, d]) => sf.makePlan(cfg, n, d));
  fn('appliedLayers', names('appliedLayers', 'depth', 'plan'), [{ valid: () => sf.makePlan({ strategy: 'all' }, 4), bad: [val('null', null), val('object', {}), val('string', 'x')] }, { valid: () => 4, bad: [val('0', 0), val('-1', -1), val('1.5', 1.5), val('NaN', NaN), val('1e12', 1e12), val('string', '4')] }],
    (_c, [p, d]) => sf.appliedLayers(p, d));
  const DIMS = { vocab: [val('0', 0), val('NaN', NaN)], dModel: [val('-1', -1), val('7', 7)], heads: [val('0', 0)], dFF: [val('1.5', 1.5)], layers: [val('0', 0)], maxSeq: [val('-1', -1)] };
  const DIMS_OK = { vocab: 11, dModel: 8, heads: 2, kvHeads: 2, dFF: 16, layers: 4, maxSeq: 8, tiedEmbeddings: true, bias: true };
  fn('accountDecoder', names('accountDecoder', 'account', 'sharing'), [O(DIMS_OK, DIMS), { valid: () => sf.makePlan({ strategy: 'all' }, 4), bad: [val('null', null), val('plan for 2 layers', sf.makePlan({ strategy: 'all' }, 2))] }],
    (_c, [d, p]) => sf.accountDecoder(d, p));
  fn('accountEncoder', names('accountEncoder', 'account', 'sharing'), [O(DIMS_OK, DIMS), { valid: () => sf.makePlan({ strategy: 'all' }, 4), bad: [val('null', null)] }],
    (_c, [d, p]) => sf.accountEncoder(d, p));

  // io
  const SAFE_T = { dtype: [val("'F64'", 'F64'), val("'f32'", 'f32'), val('5', 5)], shape: [val('[3] for 2', [3]), val('[-2]', [-2]), val('[1.5]', [1.5]), val('string', '2'), val('[2^53]', [2 ** 53])],
    data: [val('Int32Array for F32', new Int32Array(2)), val('array', [1, 2]), val('null', null), val('Float64Array', new Float64Array(2))] };
  const tensorsArg = (): Arg => {
    const good = () => ({ w: { dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) } });
    const b: Bad[] = [val('null', null), val('string', 'x'), val('array', [1]), val('number', 1),
      val("name ''", { '': good().w }), val('name __metadata__', { __metadata__: good().w }), val('lone surrogate', { '\ud800': good().w }), val('Map with number key', new Map([[1 as any, good().w]]))];
    for (const [k, list] of Object.entries(SAFE_T)) for (const x of list) b.push(bad(`w.${k}=${x.label}`, () => ({ w: { ...good().w, [k]: x.make(undefined as never) } })));
    return { valid: good, bad: b };
  };
  const META = { valid: () => undefined, bad: [val('string', 'x'), val('number value', { a: 1 }), val('array', ['a']), val('lone surrogate', { a: '\udc00' })] };
  fn('encodeSafetensors', names('encodeSafetensors'), [tensorsArg(), META], (_c, [t, m]) => sf.encodeSafetensors(t, m));
  fn('saveSafetensors', names('saveSafetensors', 'ENOENT', 'EISDIR'), [{ valid: (c) => join(c.dir(), 'out.safetensors'), bad: [val("''", ''), val('number', 1), val('null', null), val('missing folder', '/nonexistent-sf/x.safetensors')] }, tensorsArg(), META],
    (_c, [p, t, m]) => sf.saveSafetensors(p, t, m));
  fn('loadSafetensors', names('loadSafetensors', 'safetensors', 'ENOENT', 'EISDIR'), [{ valid: () => '', bad: PATHS(undefined as never).filter((b) => !['other tensors', 'int32 tensors'].includes(b.label)) },
    O({}, { maxHeaderBytes: [val('1', 1), val('NaN', NaN), val('string', '8')], source: [val('number', 5)] }, { nullOk: false })], (_c, [p, o]) => sf.loadSafetensors(p, o));
  fn('decodeSafetensors', names('decodeSafetensors', 'safetensors'), [{ valid: () => new Uint8Array(0), bad: [val('string', 'x'), val('null', null), val('array', [1, 2]), val('ArrayBuffer', new ArrayBuffer(16)),
    val('8 zero bytes', new Uint8Array(8)), val('short', new Uint8Array(3)), val('length 2^63', Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0x80, 0x7b, 0x7d])),
    val('header "[]"', Uint8Array.from([2, 0, 0, 0, 0, 0, 0, 0, 0x5b, 0x5d])), val('offsets past end', new Uint8Array(Buffer.concat([Buffer.from([56, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}  ')])))] },
  O({}, { maxHeaderBytes: [val('0', 0), val('Infinity', Infinity)] }, { nullOk: false })], (_c, [b, o]) => sf.decodeSafetensors(b, o));

  // data, trainer
  fn('new CharTokenizer', names('CharTokenizer'), [{ valid: () => ['a'], bad: [val('[]', []), val('string', 'abc'), val('null', null), val("['ab']", ['ab']), val("['a', 'a']", ['a', 'a']), val('[1]', [1])] }],
    (_c, [ch]) => new sf.CharTokenizer(ch));
  fn('CharTokenizer.fromText', names('CharTokenizer'), [{ valid: () => 'a', bad: [val("''", ''), val('number', 1), val('null', null)] }], (_c, [t]) => sf.CharTokenizer.fromText(t));
  fn('CharTokenizer.encode', names('CharTokenizer'), [{ valid: () => 'ab', bad: [val("'abz'", 'abz'), val('emoji', 'a\u{1F600}')] }], (_c, [t]) => sf.CharTokenizer.fromText('abc').encode(t));
  fn('CharTokenizer.decode', names('CharTokenizer'), [{ valid: () => [0], bad: [val('[3]', [3]), val('[-1]', [-1]), val('[1.5]', [1.5]), val('[NaN]', [NaN])] }], (_c, [ids]) => sf.CharTokenizer.fromText('abc').decode(ids));
  fn('CharTokenizer.fromJSON', names('CharTokenizer'), [{ valid: () => ({ type: 'char', chars: ['a'] }), bad: [val('null', null), val('string', 'x'), val("type 'bpe'", { type: 'bpe', chars: ['a'] }), val('chars string', { type: 'char', chars: 'ab' })] }],
    (_c, [j]) => sf.CharTokenizer.fromJSON(j));
  fn('new TokenDataset', names('TokenDataset'), [{ valid: () => new Int32Array([0, 1, 2, 1, 0]), bad: [val('array', [0, 1]), val('Float32Array', new Float32Array(3)), val('null', null), val('token 5', new Int32Array([0, 5])), val('token -1', new Int32Array([-1]))] },
    I(3, 1, [val('0', 0)]), { valid: () => 0.5, bad: [val('0', 0), val('1', 1), val('NaN', NaN), val('-0.5', -0.5), val('string', '0.5')] }], (_c, [t, v, f]) => new sf.TokenDataset(t, v, f));
  fn('TokenDataset.batch', names('TokenDataset', 'tensor: device'), [{ valid: () => 'train', bad: [val("'test'", 'test'), val('5', 5)] }, I(2, 1), I(4, 1, [val('1e6 (longer than the data)', 1e6)]), I(1, 0), I(0, 0),
    { valid: () => 'cpu', bad: devices() }], (c, [s, b, t, seed, i, d]) => {
    const r = c.dataset().batch(s, b, t, seed, i, d);
    c.tensors.push(r.ids, r.targets);
    return r;
  });
  const TRAIN_BAD: Record<string, Bad[]> = {
    steps: [val('0', 0), val('-1', -1), val('1.5', 1.5), val('NaN', NaN), val('missing', undefined)], batchSize: [val('0', 0), val('Infinity', Infinity)], seqLen: [val('0', 0), val('9 > maxSeq', 9)],
    lr: [...NON_FINITE, val('-1', -1), val('string', '0.1')], minLr: [val('NaN', NaN), val('-1', -1)], warmup: [val('-1', -1), val('1.5', 1.5)], schedule: [val("'step'", 'step'), val('5', 5)],
    weightDecay: [val('NaN', NaN), val('-1', -1)], beta1: [val('NaN', NaN)], beta2: [val('Infinity', Infinity)], clip: [val('-1', -1), val('NaN', NaN)], accumulate: [val('0', 0), val('1.5', 1.5)],
    evalEvery: [val('-1', -1)], evalBatches: [val('0', 0)], seed: [val('-1', -1), val('1.5', 1.5)], checkpoint: [val('no path', {}), val("path ''", { path: '' }), val('string', 'x')],
    signal: [val('object', {}), val('string', 'x')], nonFinite: [val("'ignore'", 'ignore'), val('5', 5)],
  };
  fn('new Trainer', names('Trainer'), [{ valid: (c) => c.decoder(), bad: [bad('vocab 12 model', (c) => c.decoder({ vocab: 12 }))] }, { valid: (c) => c.dataset(), bad: [] },
    O({ steps: 2, batchSize: 2, seqLen: 4, lr: 0.01 }, TRAIN_BAD)], (c, [m, d, o]) => c.track(new sf.Trainer(m, d, o)));
  fn('Trainer.resume', names('Trainer', 'loadCheckpoint', 'safetensors', 'ENOENT', 'EISDIR', 'path'), [{ valid: () => '', bad: PATHS(undefined as never) }],
    (c, [p]) => c.track(new sf.Trainer(c.decoder(), c.dataset(), { steps: 2, batchSize: 2, seqLen: 4, lr: 0.01 })).resume(p));
  fn('Trainer.save', names('Trainer', 'saveSafetensors', 'ENOENT', 'EISDIR', 'path'), [{ valid: () => '', bad: [val("''", ''), val('missing folder', '/nonexistent-sf/x.safetensors'), bad('a folder', (c) => c.dir())] }],
    (c, [p]) => c.track(new sf.Trainer(c.decoder(), c.dataset(), { steps: 2, batchSize: 2, seqLen: 4, lr: 0.01 })).save(p));
  fn('generateCorpus', names('generateCorpus', 'corpus'), [{ valid: () => 100, bad: [val('-1', -1), val('1.5', 1.5), val('NaN', NaN), val('string', '5'), val('1e15', 1e15)] }, { valid: () => 1, bad: [val('-1', -1), val('NaN', NaN), val('string', 's')] }],
    (_c, [n, s]) => sf.generateCorpus(n, s));
  return out;
}

// ---- the CLI -------------------------------------------------------------------------------------------------------------

/** Flags of each command, read from its usage text: name -> the value placeholder (undefined for a boolean flag). */
function cliFlags(): Record<string, Record<string, string | undefined>> {
  const cmds = ['demo', 'train', 'eval', 'generate', 'compare', 'info'];
  const out: Record<string, Record<string, string | undefined>> = {};
  for (const cmd of cmds) {
    // usage() is the CLI's own help: each flag line is "  --name ARG   help".
    const text = cliUsage(cmd);
    const flags: Record<string, string | undefined> = {};
    for (const m of text.matchAll(/^\s+--([a-z][a-z-]*)(?: ([A-Z][A-Z.]*))?\s{2,}/gm)) flags[m[1]] = m[2];
    out[cmd] = flags;
  }
  return out;
}
function cliCases(): Case[] {
  const cases: Case[] = [];
  const run = (argv: (c: Ctx) => string[]) => async (c: Ctx) => {
    let out = '', err = '';
    const io = { stdout: { write: (s: string) => (out += s) }, stderr: { write: (s: string) => (err += s) }, signal: new AbortController().signal };
    const args = argv(c);
    const code = await cliMain(args, io);
    if (code === 0) return `exit 0 (stdout ${out.length} bytes)`; // returned normally: the case fails
    if (code !== 1 && code !== 2) throw new Error(`sharedformer: unexpected exit code ${code}: ${err}`);
    throw new Error(err.trim() || `sharedformer: exit ${code} with nothing on stderr`);
  };
  // compare has a default for every flag, so a value that parses (a huge but legal --clip, say) would start a real
  // comparison: its cases end with an impossible model, which is refused (exit 2) before any training.
  const add = (id: string, cmd: string | undefined, argv: (c: Ctx) => string[]) =>
    cases.push({
      id: `cli ${id}`, expect: cmd ? new RegExp(`^sharedformer ${cmd}: \\S`) : /^sharedformer: \S/,
      run: run(cmd === 'compare' ? (c) => [...argv(c), '--d-model', '8', '--heads', '3'] : argv),
    });
  for (const [cmd, flags] of Object.entries(cliFlags())) {
    for (const [flag, arg] of Object.entries(flags)) {
      if (flag === 'help') continue;
      if (arg === undefined) {
        add(`${cmd} --${flag}=maybe`, cmd, () => [cmd, `--${flag}=maybe`]);
        continue;
      }
      add(`${cmd} --${flag} (no value)`, cmd, () => [cmd, `--${flag}`]);
      if (['N', 'X', 'S', 'B', 'T', 'U', 'R'].includes(arg) && !['strategy', 'schedule', 'norm', 'device', 'corpus'].includes(flag)) {
        for (const v of ['abc', 'NaN', 'Infinity', '-1', '1e400', '0x', '', '9007199254740993', '-Infinity']) add(`${cmd} --${flag}=${v}`, cmd, () => [cmd, `--${flag}=${v}`]);
        if (arg !== 'X' && arg !== 'S') add(`${cmd} --${flag}=1.5`, cmd, () => [cmd, `--${flag}=1.5`]);
      } else if (arg === 'FILE') {
        // Hostile files for the flags that read one (eval --model, generate --model, train --data/--config/--resume).
        const files = flag === 'out' ? [] : ['garbage.safetensors', 'empty.safetensors', 'huge-header.safetensors', 'other.safetensors', 'a-folder.safetensors', 'bad.json', 'array.json', 'absurd.json', 'empty.txt', 'missing.file'];
        const need = cmd === 'train' ? (flag === 'data' ? ['--out', 'OUT'] : ['--corpus', 'default', '--out', 'OUT']) : cmd === 'eval' || cmd === 'generate' ? (flag === 'model' ? ['--corpus', 'default', '--prompt', 'ab'] : []) : cmd === 'compare' ? ['--out', 'OUTDIR'] : [];
        for (const f of files) {
          add(`${cmd} --${flag} ${f}`, cmd, (c) => [cmd, `--${flag}`, join(c.dir(), f), ...need.map((x) => (x === 'OUT' ? join(c.dir(), 'never-written.safetensors') : x === 'OUTDIR' ? join(c.dir(), 'never-written') : x))]);
        }
      } else {
        add(`${cmd} --${flag}=bogus-choice`, cmd, () => [cmd, `--${flag}=bogus-choice-\u0000`]);
      }
    }
    add(`${cmd} --no-such-flag`, cmd, () => [cmd, '--no-such-flag']);
    add(`${cmd} positional`, cmd, () => [cmd, 'positional']);
    add(`${cmd} --`, cmd, () => [cmd, '--']);
  }
  add('unknown command', undefined, () => ['frobnicate']);
  add('help unknown', undefined, () => ['help', 'frobnicate']);
  // Configurations that parse but cannot be built: they must fail before any training (exit 2), never train.
  const tiny = (c: Ctx) => ['train', '--corpus', 'default', '--corpus-chars', '1000', '--steps', '1', '--batch', '1', '--quiet', '--out', join(c.dir(), 'never-written.safetensors')];
  for (const extra of [['--d-model', '8', '--heads', '3'], ['--heads', '4', '--kv-heads', '3'], ['--strategy', 'cycle'], ['--strategy', 'basis'], ['--strategy', 'cycle', '--unique', '99'],
    ['--seq', '999', '--max-seq', '16'], ['--strategy', 'all', '--rank', '2'], ['--kv-share', '99', '--layers', '2', '--strategy', 'none', '--unique', '2'], ['--data', '/etc/hostname', '--corpus', 'default'], ['--resume', '/nonexistent-sf/r.safetensors'],
    ['--device', 'cuda'].filter(() => !cudaHere())].filter((e) => e.length > 0))
    add(`train ${extra.join(' ')}`, 'train', (c) => [...tiny(c), ...extra]);
  add('train --data tiny.txt', 'train', (c) => ['train', '--data', join(c.dir(), 'tiny.txt'), '--out', join(c.dir(), 'never-written.safetensors'), '--steps', '1', '--quiet']);
  add('generate --prompt with unknown characters', 'generate', (c) => ['generate', '--model', join(c.dir(), 'garbage.safetensors'), '--prompt', '\u{1F600}']);
  return cases;
}

// ---- the case list -------------------------------------------------------------------------------------------------------


/** Every case: each bad value of each argument with the others valid; with `pairs`, that many seeded random double faults per function. */
export function buildCases(pairs = 0): Case[] {
  const cases: Case[] = [];
  const all = fns();
  for (const f of all) {
    f.args.forEach((a, i) => {
      for (const b of a.bad) {
        cases.push({
          id: `${f.name} arg${i}=${b.label}`,
          expect: b.expect ? new RegExp(`${f.expect.source}|${b.expect.source}`, 'i') : f.expect,
          run: (c) => f.call(c, f.args.map((x, j) => (j === i ? b.make(c) : x.valid(c)))),
        });
      }
    });
  }
  cases.push(...cliCases());
  if (pairs > 0) {
    const rnd = new Random(0x5eed);
    for (const f of all) {
      const slots = f.args.map((a, i) => [i, a.bad.length] as const).filter(([, n]) => n > 0);
      if (slots.length < 2) continue;
      for (let k = 0; k < pairs; k++) {
        const i = slots[rnd.below(slots.length)];
        let j = slots[rnd.below(slots.length)];
        if (j[0] === i[0]) j = slots[(slots.indexOf(i) + 1) % slots.length];
        const bi = f.args[i[0]].bad[rnd.below(i[1])], bj = f.args[j[0]].bad[rnd.below(j[1])];
        cases.push({
          id: `${f.name} arg${i[0]}=${bi.label} arg${j[0]}=${bj.label}`,
          expect: [bi, bj].reduce((e, b) => (b.expect ? new RegExp(`${e.source}|${b.expect.source}`, 'i') : e), f.expect),
          run: (c) => f.call(c, f.args.map((x, n) => (n === i[0] ? bi.make(c) : n === j[0] ? bj.make(c) : x.valid(c)))),
        });
      }
    }
  }
  return cases;
}

/** The number of functions and CLI commands covered (for the report). */
export function coverage(): { functions: number; cliCommands: number } {
  return { functions: fns().length, cliCommands: Object.keys(cliFlags()).length };
}
