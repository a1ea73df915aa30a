// errors.test.ts — every class of bad input to every exported function and Tensor method throws the right JavaScript
// error class (TypeError / RangeError / Error), with a message that names the function and, where it can, the
// offending value; nothing crashes, and nothing leaks.
import anyTest, { type ExecutionContext } from 'ava';

import {
  Tensor,
  backends,
  full,
  getNumThreads,
  manualSeed,
  memory,
  ones,
  rand,
  randn,
  setNumThreads,
  synchronize,
  synchronizeSync,
  tensor,
  zeros,
} from '../lib/index.ts';
import { native } from '../lib/native.ts';
import { throwsExactly, release, type ErrorClass } from './helpers/check.ts';

// Serial: memory() counters, the default generator and the thread pool are shared by every test in this process.
const test = anyTest.serial;

type Counts = { tensors: number; storages: number; bytes: number };

function cpuCounts(): Counts {
  const c = memory().cpu;
  return { tensors: c.tensors, storages: c.storages, bytes: c.bytes };
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const cudaAvailable = () => backends().cuda.available;

let baseline: Counts;
let threadsBefore: number;

test.before(() => {
  synchronizeSync();
  baseline = cpuCounts();
  threadsBefore = getNumThreads();
});

// ---- shapes -------------------------------------------------------------------------------------------------------

// Values that are not arrays, and how the message describes them.
const nonArrays: [string, unknown, string][] = [
  ['a string', 'abc', "'abc'"],
  ['null', null, 'null'],
  ['undefined', undefined, 'undefined'],
  ['a plain object', {}, 'an object'],
  ['an array-like object', { length: 1, 0: 2 }, 'an object'],
  ['a number', 3, '3'],
  ['a bigint', 3n, 'a bigint'],
  ['a symbol', Symbol('s'), 'a symbol'],
  ['a typed array', new Float32Array([2]), 'a typed array'],
  ['a function', () => [2], 'a function'],
];

// Factories whose own name is the prefix of their shape errors, called with a given shape.
const shapeOps: [string, (shape: any) => unknown][] = [
  ['full', (s) => full(s, 1)],
  ['rand', (s) => rand(s)],
  ['randn', (s) => randn(s)],
  ['tensor', (s) => tensor(new Float32Array(4), s)],
  ['tensor', (s) => tensor([1, 2, 3, 4], s)],
];

test('non-array shapes throw a TypeError naming the function and what was passed', (t) => {
  const x = zeros([2, 3]);
  try {
    const ops: [string, (shape: any) => unknown][] = [
      ...shapeOps,
      ['Tensor.view', (s) => x.view(s)],
      ['Tensor.view', (s) => x.window(0, s)],
    ];
    for (const [op, call] of ops)
      for (const [what, value, shown] of nonArrays) {
        // tensor() infers the shape when none is given (undefined or null).
        if (op === 'tensor' && value == null) continue;
        throwsExactly(
          t,
          () => call(value),
          TypeError,
          new RegExp(`^${escape(op)}: shape must be an array of dimensions, got ${escape(shown)}$`),
          `${op} with ${what} as its shape`,
        );
      }
  } finally {
    x.dispose();
  }
});

// Bad single dimensions: [dims, error class, message after "<op>: "].
const badDims: [string, unknown[], ErrorClass, RegExp][] = [
  ['a negative dim', [2, -1], RangeError, /shape\[1\] must be non-negative, got -1$/],
  ['a fractional dim', [1.5], RangeError, /shape\[0\] must be a non-negative integer, got 1\.5$/],
  ['a NaN dim', [NaN], RangeError, /shape\[0\] must be a non-negative integer, got NaN$/],
  ['an Infinity dim', [3, Infinity], RangeError, /shape\[1\] must be a non-negative integer, got Infinity$/],
  ['a -Infinity dim', [-Infinity], RangeError, /shape\[0\] must be a non-negative integer, got -Infinity$/],
  ['a 2**60 dim', [2 ** 60], RangeError, /shape\[0\] = 1\.152921504606847e\+18 exceeds 2\^48$/],
  ['a 2**48 + 1 dim', [2 ** 48 + 1], RangeError, /shape\[0\] = 281474976710657 exceeds 2\^48$/],
  ['a string dim', ['2'], TypeError, /shape\[0\] must be a number, got '2'$/],
  ['a null dim', [1, null], TypeError, /shape\[1\] must be a number, got null$/],
  ['an undefined dim', [undefined], TypeError, /shape\[0\] must be a number, got undefined$/],
  ['a hole', [, 2], TypeError, /shape\[0\] must be a number, got undefined$/],
  ['a bigint dim', [2n], TypeError, /shape\[0\] must be a number, got a bigint$/],
  ['a symbol dim', [Symbol('d')], TypeError, /shape\[0\] must be a number, got a symbol$/],
  ['an object dim', [{}], TypeError, /shape\[0\] must be a number, got an object$/],
  ['a nested array dim', [[2]], TypeError, /shape\[0\] must be a number, got an array of length 1$/],
  ['a boolean dim', [true], TypeError, /shape\[0\] must be a number, got true$/],
  ['rank 9', [1, 1, 1, 1, 1, 1, 1, 1, 1], RangeError, /shape has rank 9; the maximum is 8$/],
  ['rank 2**31', new Array(2 ** 31), RangeError, /shape has rank 2147483648; the maximum is 8$/],
  [
    'an element count past 2^48 ([2**30, 2**30, 2**30])',
    [2 ** 30, 2 ** 30, 2 ** 30],
    RangeError,
    /shape \[1073741824, 1073741824, 1073741824\] has more than 2\^48 elements$/,
  ],
  [
    'an element count past 2^64 ([2**40, 2**40, 2**40, 2**40])',
    [2 ** 40, 2 ** 40, 2 ** 40, 2 ** 40],
    RangeError,
    /shape \[1099511627776, 1099511627776, 1099511627776, 1099511627776\] has more than 2\^48 elements$/,
  ],
  ['an element count of 2^48 + 2^24', [2 ** 24, 2 ** 24 + 1], RangeError, /shape \[16777216, 16777217\] has more than 2\^48 elements$/],
];

test('bad dimensions: negative, fractional, NaN, Infinity, huge, non-numbers, rank > 8, overflowing counts', (t) => {
  const x = zeros([2, 3]);
  try {
    const ops: [string, (shape: any) => unknown][] = [...shapeOps, ['Tensor.view', (s) => x.window(0, s)]];
    for (const [op, call] of ops)
      for (const [what, dims, cls, tail] of badDims)
        throwsExactly(t, () => call(dims), cls, new RegExp(`^${escape(op)}: ${tail.source}`), `${op} with ${what}`);
  } finally {
    x.dispose();
  }
});

test('allocations larger than physical memory throw a RangeError instead of crashing', (t) => {
  const before = cpuCounts();
  const cases: [string, () => unknown, RegExp][] = [
    ['full [1e7, 1e7] float32', () => full([1e7, 1e7], 1), /^full: .*cannot allocate 400000000000000 bytes/],
    ['full [1e7, 1e7] int32', () => full([1e7, 1e7], 1, { dtype: 'int32' }), /^full: .*cannot allocate 400000000000000 bytes/],
    ['full [1e7, 1e7] bfloat16', () => full([1e7, 1e7], 1, { dtype: 'bfloat16' }), /^full: .*cannot allocate 200000000000000 bytes/],
    ['full [2**48] float32', () => full([2 ** 48], 0), /^full: .*cannot allocate 1125899906842624 bytes/],
    ['rand [1e7, 1e7]', () => rand([1e7, 1e7]), /^rand: .*cannot allocate 400000000000000 bytes/],
    ['randn [1e7, 1e7]', () => randn([1e7, 1e7]), /^randn: .*cannot allocate 400000000000000 bytes/],
    ['zeros [1e7, 1e7]', () => zeros([1e7, 1e7]), /: .*cannot allocate 400000000000000 bytes/],
    ['ones [1e7, 1e7]', () => ones([1e7, 1e7]), /: .*cannot allocate 400000000000000 bytes/],
  ];
  for (const [what, call, message] of cases) {
    throwsExactly(t, call, RangeError, message, what);
    throwsExactly(t, call, RangeError, /physical memory/, `${what} (again)`);
  }
  synchronizeSync();
  t.deepEqual(cpuCounts(), before, 'a refused allocation holds no memory and no handle');
  // The process still works.
  const z = zeros([4]);
  t.deepEqual(Array.from(z.dataSync()), [0, 0, 0, 0]);
  z.dispose();
});

// ---- dtypes and typed arrays -------------------------------------------------------------------------------------

const badDtypes: [unknown, string][] = [
  ['float64', "'float64'"],
  ['Float32', "'Float32'"],
  ['int64', "'int64'"],
  ['bf16', "'bf16'"],
  ['', "''"],
  [' float32', "' float32'"],
  [5, '5'],
  [true, 'true'],
  [{}, 'an object'],
  [['float32'], 'an array of length 1'],
  [Symbol('dt'), 'a symbol'],
];

test('bad dtypes throw a TypeError naming the function and the dtype', (t) => {
  const ops: [string, (dtype: any) => unknown][] = [
    ['full', (dtype) => full([2], 1, { dtype })],
    ['rand', (dtype) => rand([2], { dtype })],
    ['randn', (dtype) => randn([2], { dtype })],
    ['tensor', (dtype) => tensor([1, 2], undefined, { dtype })],
    ['tensor', (dtype) => tensor(new Float32Array(2), undefined, { dtype })],
  ];
  for (const [op, call] of ops)
    for (const [dtype, shown] of badDtypes)
      throwsExactly(
        t,
        () => call(dtype),
        TypeError,
        new RegExp(`^${escape(op)}: dtype must be 'float32', 'int32' or 'bfloat16', got ${escape(shown)}$`),
        `${op} with dtype ${shown}`,
      );
  // zeros and ones: the class and the value (their prefix is checked in its own test below).
  for (const [name, call] of [['zeros', zeros], ['ones', ones]] as const)
    for (const [dtype, shown] of badDtypes)
      throwsExactly(
        t,
        () => call([2], { dtype: dtype as any }),
        TypeError,
        new RegExp(`: dtype must be 'float32', 'int32' or 'bfloat16', got ${escape(shown)}$`),
        `${name} with dtype ${shown}`,
      );
});

test('typed arrays that do not match the dtype throw a TypeError naming tensor and the dtype', (t) => {
  const cases: [string, () => unknown, RegExp][] = [
    ['Int32Array with dtype float32', () => tensor(new Int32Array(2), undefined, { dtype: 'float32' }), /^tensor: dtype 'float32' needs a Float32Array of data$/],
    ['Float64Array (default float32)', () => tensor(new Float64Array(2) as any), /^tensor: data must be a Float32Array, Int32Array or Uint16Array \(or nested arrays of numbers\), got a Float64Array$/],
    ['Float64Array with dtype int32', () => tensor(new Float64Array(2) as any, undefined, { dtype: 'int32' }), /^tensor: data must be a Float32Array, Int32Array or Uint16Array \(or nested arrays of numbers\), got a Float64Array$/],
    ['Float32Array with dtype int32', () => tensor(new Float32Array(2), undefined, { dtype: 'int32' }), /^tensor: dtype 'int32' needs an Int32Array of data$/],
    ['Uint16Array with dtype float32', () => tensor(new Uint16Array(2)), /^tensor: dtype 'float32' needs a Float32Array of data$/],
    ['Uint8Array', () => tensor(new Uint8Array(2) as any), /^tensor: data must be a Float32Array, Int32Array or Uint16Array \(or nested arrays of numbers\), got a Uint8Array$/],
    ['Int16Array with dtype int32', () => tensor(new Int16Array(2) as any, undefined, { dtype: 'int32' }), /^tensor: data must be a Float32Array, Int32Array or Uint16Array \(or nested arrays of numbers\), got an Int16Array$/],
    ['BigInt64Array', () => tensor(new BigInt64Array(2) as any), /^tensor: data must be a Float32Array, Int32Array or Uint16Array \(or nested arrays of numbers\), got a BigInt64Array$/],
    ['Int32Array with dtype bfloat16', () => tensor(new Int32Array(2), undefined, { dtype: 'bfloat16' }), /^tensor: dtype 'bfloat16' needs a Float32Array or Uint16Array of data$/],
    ['Float64Array with dtype bfloat16', () => tensor(new Float64Array(2) as any, undefined, { dtype: 'bfloat16' }), /^tensor: data must be a Float32Array, Int32Array or Uint16Array \(or nested arrays of numbers\), got a Float64Array$/],
  ];
  for (const [what, call, message] of cases) throwsExactly(t, call, TypeError, message, what);
});

test('data whose length does not match the shape throws a RangeError naming both', (t) => {
  const cases: [string, () => unknown, RegExp][] = [
    ['Float32Array(5) as [2, 3]', () => tensor(new Float32Array(5), [2, 3]), /^tensor: data has 5 elements but shape \[2, 3\] needs 6$/],
    ['Float32Array(7) as [2, 3]', () => tensor(new Float32Array(7), [2, 3]), /^tensor: data has 7 elements but shape \[2, 3\] needs 6$/],
    ['Int32Array(4) as [5]', () => tensor(new Int32Array(4), [5]), /^tensor: data has 4 elements but shape \[5\] needs 5$/],
    ['Uint16Array(3) bfloat16 as [2, 2]', () => tensor(new Uint16Array(3), [2, 2], { dtype: 'bfloat16' }), /^tensor: data has 3 elements but shape \[2, 2\] needs 4$/],
    ['[1, 2, 3] as [2, 2]', () => tensor([1, 2, 3], [2, 2]), /^tensor: data has 3 elements but shape \[2, 2\] needs 4$/],
    ['[[1, 2], [3, 4]] as []', () => tensor([[1, 2], [3, 4]], []), /^tensor: data has 4 elements but shape \[\] needs 1$/],
    ['the scalar 5 as [2]', () => tensor(5, [2]), /^tensor: data has 1 elements but shape \[2\] needs 2$/],
    ['an int32 list as [3]', () => tensor([1, 2], [3], { dtype: 'int32' }), /^tensor: data has 2 elements but shape \[3\] needs 3$/],
    ['Float32Array(0) as [1e7, 1e7]', () => tensor(new Float32Array(0), [1e7, 1e7]), /^tensor: data has 0 elements but shape \[10000000, 10000000\] needs 100000000000000$/],
    ['a subarray of 3 as [4]', () => tensor(new Float32Array(8).subarray(5), [4]), /^tensor: data has 3 elements but shape \[4\] needs 4$/],
  ];
  for (const [what, call, message] of cases) throwsExactly(t, call, RangeError, message, what);
});

// ---- nested arrays -------------------------------------------------------------------------------------------------

test('data that is not numbers, nested arrays or a typed array throws a TypeError naming tensor and the value', (t) => {
  const cases: [string, unknown, string][] = [
    ['a string', 'abc', '"abc"'],
    ['a long string', 'x'.repeat(100), `"${'x'.repeat(40)}"...`],
    ['null', null, 'null'],
    ['undefined', undefined, 'undefined'],
    ['an object', { 0: 1, length: 1 }, 'an object'],
    ['a boolean', true, 'true'],
    ['a function', () => 1, 'a function'],
  ];
  for (const [what, data, shown] of cases)
    throwsExactly(
      t,
      () => tensor(data as any),
      TypeError,
      new RegExp(`^tensor: data must be a number, nested arrays of numbers or a typed array, got ${escape(shown)}$`),
      `tensor(${what})`,
    );
  throwsExactly(t, () => (tensor as any)(), TypeError, /^tensor: data must be .* got undefined$/, 'tensor() with no arguments');
  // A symbol or a bigint is rejected as data too (what the message calls them is checked in its own test below).
  throwsExactly(t, () => tensor(Symbol('d') as any), TypeError, /^tensor: data must be a number, nested arrays of numbers or a typed array/, 'tensor(symbol)');
  throwsExactly(t, () => tensor(5n as any), TypeError, /^tensor: data must be a number, nested arrays of numbers or a typed array/, 'tensor(bigint)');
});

test('non-numeric elements throw a TypeError naming the element and its value', (t) => {
  const cases: [string, unknown, RegExp][] = [
    ['an array of strings', ['a', 'b'], /^tensor: element \[0\] must be a number, got "a"$/],
    ['a numeric string deep inside', [[1, 2], [3, '4']], /^tensor: element \[1\]\[1\] must be a number, got "4"$/],
    ['null', [1, null], /^tensor: element \[1\] must be a number, got null$/],
    ['undefined', [[1, 2], [3, undefined]], /^tensor: element \[1\]\[1\] must be a number, got undefined$/],
    ['a hole', [1, , 3], /^tensor: element \[1\] must be a number, got undefined$/],
    ['a boolean', [true], /^tensor: element \[0\] must be a number, got true$/],
    ['an object', [{}], /^tensor: element \[0\] must be a number, got an object$/],
    ['a bigint', [1, 2n], /^tensor: element \[1\] must be a number, got /],
    ['a symbol', [Symbol('e')], /^tensor: element \[0\] must be a number, got /],
    ['a typed array inside an array', [new Float32Array(2)], /^tensor: element \[0\] must be a number, got a Float32Array$/],
  ];
  for (const [what, data, message] of cases) throwsExactly(t, () => tensor(data as any), TypeError, message, `tensor with ${what}`);
  // The same data is refused whatever the dtype.
  throwsExactly(t, () => tensor(['1'] as any, undefined, { dtype: 'int32' }), TypeError, /^tensor: element \[0\] must be a number, got "1"$/, 'int32 with a string');
});

test('ragged nested arrays throw, naming where the nesting breaks', (t) => {
  const cases: [string, unknown, ErrorClass, RegExp][] = [
    ['a short row', [[1, 2], [3]], RangeError, /^tensor: ragged nested array: \[1\] should be an array of length 2, got an array of length 1$/],
    ['a long row', [[1], [2, 3]], RangeError, /^tensor: ragged nested array: \[1\] should be an array of length 1, got an array of length 2$/],
    ['a number where a row belongs', [[1, 2], 3], RangeError, /^tensor: ragged nested array: \[1\] should be an array of length 2, got 3$/],
    ['a row where a number belongs', [1, [2]], TypeError, /^tensor: element \[1\] must be a number, got an array of length 1$/],
    ['ragged at depth 3', [[[1]], [2]], RangeError, /^tensor: ragged nested array: \[1\]\[0\] should be an array of length 1, got 2$/],
    ['an empty row', [[1, 2], []], RangeError, /^tensor: ragged nested array: \[1\] should be an array of length 2, got an array of length 0$/],
    ['a string row', [[1, 2], 'ab'], RangeError, /^tensor: ragged nested array: \[1\] should be an array of length 2, got "ab"$/],
    ['nesting deeper than rank 8', [[[[[[[[[1]]]]]]]]], RangeError, /^tensor: shape has rank 9; the maximum is 8$/],
  ];
  for (const [what, data, cls, message] of cases) throwsExactly(t, () => tensor(data as any), cls, message, `tensor with ${what}`);
});

test('int32 data out of range or fractional throws a RangeError naming the element and value', (t) => {
  const cases: [string, unknown, RegExp][] = [
    ['1.5', [1, 1.5], /^tensor: element 1 \(1\.5\) is not an int32$/],
    ['2**31', [1, 2, 2 ** 31], /^tensor: element 2 \(2147483648\) is not an int32$/],
    ['-(2**31) - 1', [-(2 ** 31) - 1], /^tensor: element 0 \(-2147483649\) is not an int32$/],
    ['NaN', [[0, 0], [NaN, 0]], /^tensor: element 2 \(NaN\) is not an int32$/],
    ['Infinity', [Infinity], /^tensor: element 0 \(Infinity\) is not an int32$/],
    ['-Infinity', [-Infinity], /^tensor: element 0 \(-Infinity\) is not an int32$/],
    ['a fractional scalar', 1.5, /^tensor: element 0 \(1\.5\) is not an int32$/],
    ['1e300', [1e300], /^tensor: element 0 \(1e\+300\) is not an int32$/],
  ];
  for (const [what, data, message] of cases)
    throwsExactly(t, () => tensor(data as any, undefined, { dtype: 'int32' }), RangeError, message, `int32 tensor with ${what}`);
});

// ---- full -------------------------------------------------------------------------------------------------------

test('full(): a fill value that is not a number, or not an int32 for an int32 tensor', (t) => {
  const notNumbers: [unknown, string][] = [
    ['x', "'x'"],
    ['1', "'1'"],
    [undefined, 'undefined'],
    [null, 'null'],
    [{}, 'an object'],
    [[1], 'an array of length 1'],
    [1n, 'a bigint'],
    [Symbol('v'), 'a symbol'],
    [true, 'true'],
  ];
  for (const dtype of ['float32', 'int32', 'bfloat16'] as const)
    for (const [value, shown] of notNumbers)
      throwsExactly(
        t,
        () => full([2], value as any, { dtype }),
        TypeError,
        new RegExp(`^full: value must be a number, got ${escape(shown)}$`),
        `full ${dtype} with value ${shown}`,
      );
  throwsExactly(t, () => (full as any)([2]), TypeError, /^full: value must be a number, got undefined$/, 'full without a value');

  const notInt32: [number, string][] = [
    [1.5, '1\\.5'],
    [-0.25, '-0\\.25'],
    [2 ** 31, '2147483648'],
    [-(2 ** 31) - 1, '-2147483649'],
    [2 ** 60, '1\\.152921504606847e\\+18'],
  ];
  for (const [value, shown] of notInt32)
    throwsExactly(
      t,
      () => full([2], value, { dtype: 'int32' }),
      RangeError,
      new RegExp(`^full: value for an int32 tensor must be an integer in \\[-2\\^31, 2\\^31\\), got ${shown}$`),
      `full int32 with ${value}`,
    );
  for (const [value, shown] of [[NaN, 'NaN'], [Infinity, 'Infinity'], [-Infinity, '-Infinity']] as const)
    throwsExactly(t, () => full([2], value, { dtype: 'int32' }), RangeError, new RegExp(`^full: value must be finite, got ${shown}$`), `full int32 with ${shown}`);
});

// ---- rand / randn ----------------------------------------------------------------------------------------------

test('rand() and randn() refuse int32 and bad parameters', (t) => {
  throwsExactly(t, () => rand([2], { dtype: 'int32' }), TypeError, /^rand: dtype must be 'float32' or 'bfloat16', got 'int32'$/, 'rand int32');
  throwsExactly(t, () => randn([2], { dtype: 'int32' }), TypeError, /^randn: dtype must be 'float32' or 'bfloat16', got 'int32'$/, 'randn int32');

  throwsExactly(t, () => rand([2], { low: 2, high: 1 }), RangeError, /^rand: low \(2\) must not exceed high \(1\)$/, 'low > high');
  throwsExactly(t, () => rand([2], { low: 1.5 }), RangeError, /^rand: low \(1\.5\) must not exceed high \(1\)$/, 'low > default high');
  throwsExactly(t, () => rand([2], { high: -3 }), RangeError, /^rand: low \(0\) must not exceed high \(-3\)$/, 'default low > high');
  throwsExactly(t, () => randn([2], { std: -1 }), RangeError, /^randn: std must be non-negative, got -1$/, 'negative std');
  throwsExactly(t, () => randn([2], { std: -1e-30 }), RangeError, /^randn: std must be non-negative, got -1e-30$/, 'tiny negative std');

  const nonFinite: [number, string][] = [[NaN, 'NaN'], [Infinity, 'Infinity'], [-Infinity, '-Infinity']];
  for (const [v, shown] of nonFinite) {
    throwsExactly(t, () => rand([2], { low: v, high: 1 }), RangeError, new RegExp(`^rand: low must be finite, got ${shown}$`), `low ${shown}`);
    throwsExactly(t, () => rand([2], { low: 0, high: v }), RangeError, new RegExp(`^rand: high must be finite, got ${shown}$`), `high ${shown}`);
    throwsExactly(t, () => randn([2], { mean: v }), RangeError, new RegExp(`^randn: mean must be finite, got ${shown}$`), `mean ${shown}`);
    throwsExactly(t, () => randn([2], { std: v }), RangeError, new RegExp(`^randn: std must be finite, got ${shown}$`), `std ${shown}`);
  }
  const notNumbers: [unknown, string][] = [['0', "'0'"], [0n, 'a bigint'], [{}, 'an object'], [Symbol('p'), 'a symbol'], [true, 'true']];
  for (const [v, shown] of notNumbers) {
    throwsExactly(t, () => rand([2], { low: v as any }), TypeError, new RegExp(`^rand: low must be a number, got ${escape(shown)}$`), `low ${shown}`);
    throwsExactly(t, () => rand([2], { high: v as any }), TypeError, new RegExp(`^rand: high must be a number, got ${escape(shown)}$`), `high ${shown}`);
    throwsExactly(t, () => randn([2], { mean: v as any }), TypeError, new RegExp(`^randn: mean must be a number, got ${escape(shown)}$`), `mean ${shown}`);
    throwsExactly(t, () => randn([2], { std: v as any }), TypeError, new RegExp(`^randn: std must be a number, got ${escape(shown)}$`), `std ${shown}`);
  }
});

test('rand() and randn() refuse bad seeds and offsets', (t) => {
  const rangeNumbers: [number, string][] = [
    [-1, '-1'],
    [1.5, '1\\.5'],
    [2 ** 60, '1\\.152921504606847e\\+18'],
    [2 ** 53, '9007199254740992'],
    [NaN, 'NaN'],
    [Infinity, 'Infinity'],
  ];
  const typeValues: [unknown, string][] = [['1', "'1'"], [{}, 'an object'], [Symbol('s'), 'a symbol'], [true, 'true'], [[1], 'an array of length 1']];
  for (const [op, call] of [['rand', rand], ['randn', randn]] as const)
    for (const key of ['seed', 'offset'] as const) {
      // offset alone is accepted with the default seed, so pass a valid seed alongside a bad offset.
      const opts = (v: unknown) => (key === 'seed' ? { seed: v } : { seed: 1, offset: v }) as any;
      for (const [v, shown] of rangeNumbers)
        throwsExactly(
          t,
          () => call([2], opts(v)),
          RangeError,
          new RegExp(`^${op}: ${key} must be a non-negative safe integer \\(or a bigint\\), got ${shown}$`),
          `${op} ${key} ${v}`,
        );
      for (const v of [-1n, -(2n ** 70n), 2n ** 64n, 2n ** 100n])
        throwsExactly(t, () => call([2], opts(v)), RangeError, new RegExp(`^${op}: ${key} must be a bigint in \\[0, 2\\^64\\)$`), `${op} ${key} ${v}n`);
      for (const [v, shown] of typeValues)
        throwsExactly(
          t,
          () => call([2], opts(v)),
          TypeError,
          new RegExp(`^${op}: ${key} must be a non-negative integer or bigint, got ${escape(shown)}$`),
          `${op} ${key} ${shown}`,
        );
    }
});

test('manualSeed() refuses bad seeds and leaves the default generator as it was', (t) => {
  const cases: [unknown, string][] = [
    [-1, '-1'],
    [1.5, '1\\.5'],
    [2 ** 60, '1152921504606847000'],
    [2 ** 53, '9007199254740992'],
    [NaN, 'NaN'],
    [Infinity, 'Infinity'],
    [-Infinity, '-Infinity'],
    [-1n, '-1n'],
    [2n ** 64n, '18446744073709551616n'],
  ];
  for (const [v, shown] of cases)
    throwsExactly(
      t,
      () => manualSeed(v as any),
      RangeError,
      new RegExp(`^manualSeed: seed must be a non-negative safe integer or a bigint below 2\\^64, got ${shown}$`),
      `manualSeed(${String(v)})`,
    );

  // A refused seed changes nothing: the stream continues as if the call had not been made.
  manualSeed(7);
  const a = rand([4]);
  const b = rand([4]);
  manualSeed(7);
  const a2 = rand([4]);
  t.throws(() => manualSeed(-1));
  t.throws(() => manualSeed(2n ** 64n));
  const b2 = rand([4]);
  try {
    t.deepEqual(Array.from(a2.dataSync()), Array.from(a.dataSync()));
    t.deepEqual(Array.from(b2.dataSync()), Array.from(b.dataSync()), 'a refused manualSeed() does not reset the generator');
  } finally {
    for (const x of [a, b, a2, b2]) x.dispose();
  }
});

// ---- devices ------------------------------------------------------------------------------------------------------

const badDeviceNames = ['gpu', 'GPU', 'CPU', 'cuda:x', 'cuda:99', 'cuda:64', 'cuda:-1', 'cuda:', 'cuda:0 ', ' cpu', '', 'cuda:1x', 'cuda:0:0', 'cpu:0'];
const badDeviceTypes: [unknown, string][] = [[0, '0'], [{}, 'an object'], [Symbol('d'), 'a symbol'], [true, 'true'], [['cpu'], 'an array of length 1']];

test('malformed devices throw a TypeError naming the function and the device', (t) => {
  const x = zeros([2]);
  try {
    const ops: [string, (device: any) => unknown][] = [
      ['full', (device) => full([2], 1, { device })],
      ['rand', (device) => rand([2], { device })],
      ['randn', (device) => randn([2], { device })],
      ['tensor', (device) => tensor([1, 2], undefined, { device })],
      ['tensor', (device) => tensor(new Int32Array(2), undefined, { device })],
      ['Tensor.to', (device) => x.to(device)],
    ];
    for (const [op, call] of ops) {
      for (const name of badDeviceNames)
        throwsExactly(
          t,
          () => call(name),
          TypeError,
          new RegExp(`^${escape(op)}: device must be 'cpu', 'cuda' or 'cuda:N', got '${escape(name)}'$`),
          `${op} on '${name}'`,
        );
      for (const [v, shown] of badDeviceTypes) {
        // How Tensor.to describes a symbol is checked in its own test below.
        if (op === 'Tensor.to' && typeof v === 'symbol') continue;
        throwsExactly(
          t,
          () => call(v),
          TypeError,
          new RegExp(`^${escape(op)}: device must be 'cpu', 'cuda' or 'cuda:N', got ${escape(shown)}$`),
          `${op} on ${shown}`,
        );
      }
    }
    throwsExactly(t, () => (x as any).to(), TypeError, /^Tensor\.to: device must be 'cpu', 'cuda' or 'cuda:N', got undefined$/, 'to()');
    throwsExactly(t, () => x.to(null as any), TypeError, /^Tensor\.to: device must be 'cpu', 'cuda' or 'cuda:N', got null$/, 'to(null)');
    for (const [name, call] of [['zeros', zeros], ['ones', ones]] as const)
      for (const dev of badDeviceNames)
        throwsExactly(
          t,
          () => call([2], { device: dev as any }),
          TypeError,
          new RegExp(`: device must be 'cpu', 'cuda' or 'cuda:N', got '${escape(dev)}'$`),
          `${name} on '${dev}'`,
        );
  } finally {
    x.dispose();
  }
});

test('CUDA devices that are not there throw (Error when CUDA is unavailable, RangeError past the last GPU)', (t) => {
  const x = zeros([2]);
  const info = backends();
  try {
    const calls: [string, (device: any) => unknown][] = [
      ['full', (device) => full([2], 1, { device })],
      ['zeros', (device) => zeros([2], { device })],
      ['ones', (device) => ones([2], { device })],
      ['rand', (device) => rand([2], { device })],
      ['randn', (device) => randn([2], { device })],
      ['tensor', (device) => tensor([1, 2], undefined, { device })],
      ['Tensor.to', (device) => x.to(device)],
    ];
    if (!info.cuda.available) {
      t.is(typeof info.cuda.reason, 'string', 'backends() says why CUDA is unavailable');
      for (const [op, call] of calls)
        for (const dev of ['cuda', 'cuda:0', 'cuda:5', 'cuda:63'])
          throwsExactly(
            t,
            () => call(dev),
            Error,
            new RegExp(`device '${escape(dev === 'cuda' ? 'cuda:0' : dev)}' is not available`),
            `${op} on '${dev}' without CUDA`,
          );
    } else {
      const n = info.cuda.devices.length;
      t.true(n >= 1);
      for (const [op, call] of calls)
        throwsExactly(t, () => call(`cuda:${n}`), RangeError, new RegExp(`device 'cuda:${n}' does not exist`), `${op} on cuda:${n}`);
      // sharedData needs host memory.
      const g = x.to('cuda');
      try {
        throwsExactly(t, () => g.sharedData(), TypeError, /^Tensor\.sharedData: only CPU tensors can be viewed without a copy; this tensor is on cuda:0/, 'sharedData on cuda');
      } finally {
        g.dispose();
      }
    }
  } finally {
    x.dispose();
  }
});

test('device errors name the function that was called', (t) => {
  // Whether or not CUDA is here, asking for a device past the last one fails; the message should say who asked.
  const n = backends().cuda.available ? backends().cuda.devices.length : 0;
  const dev = `cuda:${Math.min(n, 63)}` as const;
  const x = zeros([2]);
  try {
    const calls: [string, () => unknown][] = [
      ['full', () => full([2], 1, { device: dev })],
      ['rand', () => rand([2], { device: dev })],
      ['randn', () => randn([2], { device: dev })],
      ['tensor', () => tensor([1, 2], undefined, { device: dev })],
      ['Tensor.to', () => x.to(dev)],
    ];
    for (const [op, call] of calls) {
      const err = t.throws(() => release(call()), undefined, `${op} on ${dev}`);
      if (err) t.regex(err.message, new RegExp(`^${escape(op)}: `), `${op} on ${dev}: message should start with '${op}: '`);
    }
  } finally {
    x.dispose();
  }
});

// ---- options -----------------------------------------------------------------------------------------------------

test('options that are not objects throw a TypeError naming the function', (t) => {
  const values: [unknown, string][] = [
    ['float32', '"float32"'],
    ['cpu', '"cpu"'],
    [5, '5'],
    [null, 'null'],
    [true, 'true'],
    [[], 'an array of length 0'],
    [['float32'], 'an array of length 1'],
    [() => ({}), 'a function'],
  ];
  const ops: [string, (o: any) => unknown][] = [
    ['tensor', (o) => tensor([1, 2], undefined, o)],
    ['tensor', (o) => tensor(new Float32Array(2), [2], o)],
    ['full', (o) => full([2], 1, o)],
    ['zeros', (o) => zeros([2], o)],
    ['ones', (o) => ones([2], o)],
    ['rand', (o) => rand([2], o)],
    ['randn', (o) => randn([2], o)],
  ];
  for (const [op, call] of ops)
    for (const [v, shown] of values)
      throwsExactly(t, () => call(v), TypeError, new RegExp(`^${op}: options must be an object \\(or left out\\), got ${escape(shown)}$`), `${op} with options ${shown}`);
});

// ---- Tensor methods ------------------------------------------------------------------------------------------------

test('every getter and method of a disposed tensor throws an Error saying so', (t) => {
  const live = zeros([2, 3]);
  const d = zeros([2, 3]);
  d.dispose();
  try {
    t.true(d.disposed);
    t.notThrows(() => d.dispose(), 'dispose() is idempotent');
    t.is(String(d), 'Tensor(disposed)');
    const disposed = /the tensor has been disposed$/;
    const cases: [string, () => unknown, RegExp][] = [
      ['shape', () => d.shape, /^Tensor\.shape: the tensor has been disposed$/],
      ['dtype', () => d.dtype, /^Tensor\.dtype: the tensor has been disposed$/],
      ['device', () => d.device, /^Tensor\.device: the tensor has been disposed$/],
      ['size', () => d.size, /^Tensor\.size: the tensor has been disposed$/],
      ['rank', () => d.rank, /^Tensor\.(rank|shape): the tensor has been disposed$/],
      ['dataSync()', () => d.dataSync(), /^Tensor\.dataSync: the tensor has been disposed$/],
      ['toArray()', () => d.toArray(), /^Tensor\.(toArray|dataSync): the tensor has been disposed$/],
      ['sharedData()', () => d.sharedData(), /^Tensor\.sharedData: the tensor has been disposed$/],
      ['to("cpu")', () => d.to('cpu'), /^Tensor\.to: the tensor has been disposed$/],
      ['clone()', () => d.clone(), /^Tensor\.clone: the tensor has been disposed$/],
      ['window(0, [2])', () => d.window(0, [2]), /^Tensor\.view: the tensor has been disposed$/],
      ['view([6])', () => d.view([6]), disposed],
      ['view([5])', () => d.view([5]), disposed],
      ['sharesStorageWith(live)', () => d.sharesStorageWith(live), /^Tensor\.(sharesStorageWith|sameStorage): the tensor has been disposed$/],
      ['live.sharesStorageWith(disposed)', () => live.sharesStorageWith(d), /^Tensor\.sharesStorageWith: other has been disposed$/],
      ['sharesStorageWith(itself)', () => d.sharesStorageWith(d), /^Tensor\.(sharesStorageWith|sameStorage): (the tensor|other) has been disposed$/],
      ['handle.offset', () => d.handle.offset, /^Tensor\.offset: the tensor has been disposed$/],
    ];
    for (const [what, call, message] of cases) throwsExactly(t, call, Error, message, `disposed ${what}`);
    // The live tensor is untouched by all this.
    t.deepEqual(Array.from(live.dataSync()), [0, 0, 0, 0, 0, 0]);
  } finally {
    live.dispose();
  }
});

test('view() of a disposed tensor names Tensor.view', (t) => {
  const d = zeros([2, 3]);
  d.dispose();
  throwsExactly(t, () => d.view([6]), Error, /^Tensor\.view: the tensor has been disposed$/, 'disposed view([6])');
  throwsExactly(t, () => d.view([3, 2]), Error, /^Tensor\.view: the tensor has been disposed$/, 'disposed view([3, 2])');
});

test('data() of a disposed tensor returns a promise that rejects', async (t) => {
  const d = zeros([2]);
  d.dispose();
  let p: Promise<unknown> | undefined;
  t.notThrows(() => {
    p = d.data();
  }, 'data() returns a promise rather than throwing synchronously');
  if (p) await t.throwsAsync(p, { instanceOf: Error, message: /^Tensor\.data: the tensor has been disposed$/ });
  // A tensor disposed after data() was called still resolves (the copy holds the storage).
  const x = full([3], 2);
  const pending = x.data();
  x.dispose();
  t.deepEqual(Array.from(await pending), [2, 2, 2]);
});

test('view() with the wrong element count or bad dims throws a RangeError naming both counts', (t) => {
  const x = zeros([2, 3]);
  try {
    const counts: [number[], RegExp][] = [
      [[5], /^Tensor\.view: shape \[5\] has 5 elements, the tensor has 6$/],
      [[7], /^Tensor\.view: shape \[7\] has 7 elements, the tensor has 6$/],
      [[2, 2], /^Tensor\.view: shape \[2, 2\] has 4 elements, the tensor has 6$/],
      [[], /^Tensor\.view: shape \[\] has 1 elements, the tensor has 6$/],
      [[0], /^Tensor\.view: shape \[0\] has 0 elements, the tensor has 6$/],
      [[12, 1], /^Tensor\.view: shape \[12, 1\] has 12 elements, the tensor has 6$/],
    ];
    for (const [shape, message] of counts) throwsExactly(t, () => x.view(shape), RangeError, message, `view([${shape}])`);
    // Bad dims: the message names the view and the offending dimension.
    const bad: [unknown[], ErrorClass, RegExp][] = [
      [[-6], RangeError, /^Tensor\.view: .*-6/],
      [[2, -3], RangeError, /^Tensor\.view: .*-3/],
      [[-1, -6], RangeError, /^Tensor\.view: .*-1/],
      [[4, 1.5], RangeError, /^Tensor\.view: .*1\.5/],
      [[12, 0.5], RangeError, /^Tensor\.view: shape\[1\] must be a non-negative integer, got 0\.5$/],
      [[NaN], RangeError, /^Tensor\.view: shape\[0\] must be a non-negative integer, got NaN$/],
      [[6, Infinity], RangeError, /^Tensor\.view: shape\[1\] must be a non-negative integer, got Infinity$/],
      [[2 ** 60], RangeError, /^Tensor\.view: .*(1152921504606847000|1\.152921504606847e\+18)/],
      [[2 ** 30, 2 ** 30, 2 ** 30], RangeError, /^Tensor\.view: .*1073741824/],
      [[6, 1, 1, 1, 1, 1, 1, 1, 1], RangeError, /^Tensor\.view: shape has rank 9; the maximum is 8$/],
      [['6'], TypeError, /^Tensor\.view: shape\[0\] must be a number, got '6'$/],
      [[2, null], TypeError, /^Tensor\.view: shape\[1\] must be a number, got null$/],
      [[6n], TypeError, /^Tensor\.view: shape\[0\] must be a number, got a bigint$/],
    ];
    for (const [shape, cls, message] of bad) throwsExactly(t, () => x.view(shape as any), cls, message, `view([${shape.map(String)}])`);
    throwsExactly(t, () => (x as any).view(), TypeError, /^Tensor\.view: shape must be an array of dimensions, got undefined$/, 'view()');
    // The tensor is unchanged and a good view still works.
    const v = x.view([3, 2]);
    t.deepEqual(v.shape, [3, 2]);
    t.true(v.sharesStorageWith(x));
    v.dispose();
  } finally {
    x.dispose();
  }
});

test('window() out of bounds, or with a negative, fractional or non-number offset, throws', (t) => {
  const x = zeros([2, 3]);
  try {
    const fit = (shape: string, n: number, off: number) =>
      new RegExp(`^Tensor\\.view: a view of shape \\[${shape}\\] \\(${n} elements\\) at offset ${off} does not fit in a tensor of 6 elements$`);
    const bounds: [number, number[], RegExp][] = [
      [5, [2], fit('2', 2, 5)],
      [6, [1], fit('1', 1, 6)],
      [7, [0], fit('0', 0, 7)],
      [0, [7], fit('7', 7, 0)],
      [0, [2, 4], fit('2, 4', 8, 0)],
      [4, [3], fit('3', 3, 4)],
      [2 ** 40, [1], fit('1', 1, 2 ** 40)],
    ];
    for (const [off, shape, message] of bounds) throwsExactly(t, () => x.window(off, shape), RangeError, message, `window(${off}, [${shape}])`);
    const offsets: [unknown, ErrorClass, RegExp][] = [
      [-1, RangeError, /^Tensor\.view: offset must be between 0 and 281474976710656, got -1$/],
      [-(2 ** 60), RangeError, /^Tensor\.view: offset must be between 0 and 281474976710656, got -1\.152921504606847e\+18$/],
      [2 ** 60, RangeError, /^Tensor\.view: offset must be between 0 and 281474976710656, got 1\.152921504606847e\+18$/],
      [1.5, RangeError, /^Tensor\.view: offset must be an integer, got 1\.5$/],
      [NaN, RangeError, /^Tensor\.view: offset must be an integer, got NaN$/],
      [Infinity, RangeError, /^Tensor\.view: offset must be an integer, got Infinity$/],
      ['1', TypeError, /^Tensor\.view: offset must be an integer, got '1'$/],
      [1n, TypeError, /^Tensor\.view: offset must be an integer, got a bigint$/],
      [null, TypeError, /^Tensor\.view: offset must be an integer, got null$/],
      [undefined, TypeError, /^Tensor\.view: offset must be an integer, got undefined$/],
      [{}, TypeError, /^Tensor\.view: offset must be an integer, got an object$/],
    ];
    for (const [off, cls, message] of offsets) throwsExactly(t, () => x.window(off as any, [1]), cls, message, `window(${String(off)}, [1])`);
    // A view of a view is bounded by the inner view, not by the storage.
    const w = x.window(2, [3]);
    try {
      throwsExactly(t, () => w.window(1, [3]), RangeError, /^Tensor\.view: a view of shape \[3\] \(3 elements\) at offset 1 does not fit in a tensor of 3 elements$/, 'window of a window');
      throwsExactly(t, () => w.view([6]), RangeError, /^Tensor\.view: shape \[6\] has 6 elements, the tensor has 3$/, 'view of a window');
    } finally {
      w.dispose();
    }
  } finally {
    x.dispose();
  }
});

test('sharedData() of a bfloat16 tensor throws a TypeError pointing at data()', (t) => {
  const b = zeros([4], { dtype: 'bfloat16' });
  const r = randn([2, 2], { dtype: 'bfloat16', seed: 1 });
  try {
    for (const x of [b, r, b.window(1, [2])]) {
      throwsExactly(t, () => x.sharedData(), TypeError, /^Tensor\.sharedData: a bfloat16 tensor has no typed-array view \(use data\(\), which widens to float32\)$/, `sharedData of ${x}`);
      if (x !== b && x !== r) x.dispose();
    }
    t.true(b.dataSync() instanceof Float32Array, 'data is still readable');
  } finally {
    b.dispose();
    r.dispose();
  }
});

test('sharesStorageWith() of something that is not a Tensor throws a TypeError naming it', (t) => {
  const x = zeros([2]);
  const y = zeros([2]);
  try {
    const cases: [unknown, string][] = [
      [1, '1'],
      [null, 'null'],
      [undefined, 'undefined'],
      [{}, 'an object'],
      ['x', '"x"'],
      [[x], 'an array of length 1'],
      [y.handle, 'a TensorHandle'],
      [new Float32Array(2), 'a Float32Array'],
      [() => x, 'a function'],
    ];
    for (const [v, shown] of cases)
      throwsExactly(
        t,
        () => x.sharesStorageWith(v as any),
        TypeError,
        new RegExp(`^Tensor\\.sharesStorageWith: other must be a Tensor, got ${escape(shown)}$`),
        `sharesStorageWith(${shown})`,
      );
    throwsExactly(t, () => (x as any).sharesStorageWith(), TypeError, /^Tensor\.sharesStorageWith: other must be a Tensor, got undefined$/, 'sharesStorageWith()');
    t.false(x.sharesStorageWith(y));
  } finally {
    x.dispose();
    y.dispose();
  }
});

// ---- runtime --------------------------------------------------------------------------------------------------------

test('setNumThreads() refuses counts outside 1..1024, fractions and non-numbers, and keeps the pool as it was', (t) => {
  const before = getNumThreads();
  const range: [number, string][] = [
    [0, '^setNumThreads: threads must be between 1 and 1024, got 0$'],
    [1025, '^setNumThreads: threads must be between 1 and 1024, got 1025$'],
    [-1, '^setNumThreads: threads must be between 1 and 1024, got -1$'],
    [2 ** 60, '^setNumThreads: threads must be between 1 and 1024, got 1\\.152921504606847e\\+18$'],
    [1.5, '^setNumThreads: threads must be an integer, got 1\\.5$'],
    [NaN, '^setNumThreads: threads must be an integer, got NaN$'],
    [Infinity, '^setNumThreads: threads must be an integer, got Infinity$'],
  ];
  for (const [n, message] of range) throwsExactly(t, () => setNumThreads(n), RangeError, new RegExp(message), `setNumThreads(${n})`);
  const types: [unknown, string][] = [['x', "'x'"], ['4', "'4'"], [undefined, 'undefined'], [null, 'null'], [4n, 'a bigint'], [{}, 'an object'], [[4], 'an array of length 1'], [true, 'true']];
  for (const [v, shown] of types)
    throwsExactly(t, () => setNumThreads(v as any), TypeError, new RegExp(`^setNumThreads: threads must be an integer, got ${escape(shown)}$`), `setNumThreads(${shown})`);
  throwsExactly(t, () => (setNumThreads as any)(), TypeError, /^setNumThreads: threads must be an integer, got undefined$/, 'setNumThreads()');
  t.is(getNumThreads(), before, 'refused calls leave the thread count alone');
});

// ---- constructing tensors by hand and calling the addon directly ------------------------------------------------------

test('new Tensor() with anything but a native handle throws a TypeError', (t) => {
  const N = native();
  const bogus: [string, unknown][] = [
    ['nothing', undefined],
    ['null', null],
    ['{}', {}],
    ['1', 1],
    ["'handle'", 'handle'],
    ['a look-alike object', { shape: [1], dtype: 'float32', device: 'cpu', size: 1, disposed: false }],
    ['the TensorHandle class', N.TensorHandle],
    ['a Tensor', undefined /* filled below */],
  ];
  const x = zeros([1]);
  bogus[bogus.length - 1][1] = x;
  try {
    for (const [what, h] of bogus)
      throwsExactly(t, () => new Tensor(h as any), TypeError, /^Tensor: tensors are made by tensor\(\), zeros\(\), ones\(\), full\(\), rand\(\) or randn\(\), not with `new`$/, `new Tensor(${what})`);
    // The native class cannot be instantiated from JavaScript either.
    const TH = N.TensorHandle as any;
    for (const args of [[], [{}], [1], [N], [x.handle]])
      throwsExactly(t, () => new TH(...args), TypeError, /^TensorHandle: handles are made by sharedformer's tensor functions, not with `new`$/, `new TensorHandle(${args.length} args)`);
    t.throws(() => TH(), { instanceOf: TypeError }, 'TensorHandle() without new');
    t.throws(() => (Tensor as any)(x.handle), { instanceOf: TypeError }, 'Tensor() without new');
  } finally {
    x.dispose();
  }
});

test('forged handles and forged Tensors are refused with a TypeError that names the function', (t) => {
  const N = native();
  // An object that passes `instanceof TensorHandle` without being a native handle.
  const fake = Object.create(N.TensorHandle.prototype);
  let made: Tensor | undefined;
  t.throws(
    () => {
      made = new Tensor(fake);
    },
    { instanceOf: TypeError, message: /^Tensor: / },
    'new Tensor(Object.create(TensorHandle.prototype)) should be refused by the constructor',
  );
  if (made) {
    // Accepted: then at least its first use should fail with an error that says what is wrong.
    const m = made;
    t.throws(() => m.shape, { instanceOf: TypeError, message: /^Tensor\.shape: / }, 'shape of a Tensor built on a forged handle');
  }
  const x = zeros([1]);
  try {
    // An object that passes `instanceof Tensor` without a handle.
    const forged = Object.create(Tensor.prototype);
    throwsExactly(t, () => x.sharesStorageWith(forged), TypeError, /^Tensor\.sharesStorageWith: other/, 'sharesStorageWith(Object.create(Tensor.prototype))');
    throwsExactly(t, () => x.handle.sameStorage(fake), TypeError, /^Tensor\.sameStorage: other must be a Tensor/, 'handle.sameStorage(fake handle)');
  } finally {
    x.dispose();
  }
});

test('the native functions called directly with too few or wrong arguments throw a TypeError', (t) => {
  const N = native() as any;
  const x = zeros([2, 3]);
  try {
    const arity: [string, (...a: unknown[]) => unknown, unknown[], RegExp][] = [
      ['fromArray', N.fromArray, [new Float32Array(1), [1], 'float32', 'cpu'], /^tensor: expected 4 argument\(s\), got (\d)$/],
      ['full', N.full, [[1], 1, 'float32', 'cpu'], /^full: expected 4 argument\(s\), got (\d)$/],
      ['random', N.random, [[1], 'uniform', 0, 0, 0, 1, 'float32', 'cpu'], /^random: expected 8 argument\(s\), got (\d)$/],
      ['setNumThreads', N.setNumThreads, [getNumThreads()], /^setNumThreads: expected 1 argument\(s\), got (\d)$/],
    ];
    for (const [name, fn, good, message] of arity)
      for (let k = 0; k < good.length; k++) {
        const err = t.throws(() => release(fn.apply(N, good.slice(0, k))), { instanceOf: TypeError, message }, `${name} with ${k} argument(s)`);
        if (err) t.is(message.exec(err.message)?.[1], String(k), `${name} reports the count it got`);
      }
    // Handle methods.
    throwsExactly(t, () => (x.handle as any).view(), TypeError, /^Tensor\.view: expected 2 argument\(s\), got 0$/, 'handle.view()');
    throwsExactly(t, () => (x.handle as any).view(0), TypeError, /^Tensor\.view: expected 2 argument\(s\), got 1$/, 'handle.view(0)');
    throwsExactly(t, () => (x.handle as any).to(), TypeError, /^Tensor\.to: expected 1 argument\(s\), got 0$/, 'handle.to()');
    throwsExactly(t, () => (x.handle as any).sameStorage(), TypeError, /^Tensor\.sameStorage: expected 1 argument\(s\), got 0$/, 'handle.sameStorage()');
    throwsExactly(t, () => x.handle.sameStorage({} as any), TypeError, /^Tensor\.sameStorage: other must be a Tensor, got an object$/, 'handle.sameStorage({})');
    // Wrong values, all arguments present.
    throwsExactly(t, () => N.fromArray(5, [1], 'float32', 'cpu'), TypeError, /^tensor: data must be a typed array, got 5$/, 'fromArray(5, ...)');
    throwsExactly(t, () => N.fromArray([1], [1], 'float32', 'cpu'), TypeError, /^tensor: data must be a typed array, got an array of length 1$/, 'fromArray([1], ...)');
    throwsExactly(t, () => N.fromArray(new Float32Array(1), [1], 'float32', undefined), TypeError, /^tensor: device must be 'cpu', 'cuda' or 'cuda:N', got undefined$/, 'fromArray without device');
    throwsExactly(t, () => N.full([1], 1, undefined, 'cpu'), TypeError, /^full: dtype must be 'float32', 'int32' or 'bfloat16', got undefined$/, 'full without dtype');
    throwsExactly(t, () => N.random([1], 'poisson', 0, 0, 0, 1, 'float32', 'cpu'), TypeError, /^random: kind must be 'uniform' or 'normal', got 'poisson'$/, "random kind 'poisson'");
    throwsExactly(t, () => N.random([1], 3, 0, 0, 0, 1, 'float32', 'cpu'), TypeError, /^random: kind must be a string, got 3$/, 'random kind 3');
    throwsExactly(t, () => N.random([1], 'normal', 0, 0, 0, -2, 'float32', 'cpu'), RangeError, /^randn: std must be non-negative, got -2$/, 'random normal std -2');
    // Native methods called on something that is not a handle fail as JavaScript errors, not crashes.
    const proto = N.TensorHandle.prototype;
    for (const m of ['readSync', 'read', 'shared', 'clone', 'dispose', 'to', 'view', 'sameStorage'])
      t.throws(() => proto[m].call({}, 'cpu', [1]), { instanceOf: Error }, `TensorHandle.prototype.${m}.call({})`);
    for (const g of ['shape', 'dtype', 'device', 'size', 'offset', 'disposed'])
      t.throws(() => Object.getOwnPropertyDescriptor(proto, g)!.get!.call({}), { instanceOf: Error }, `TensorHandle getter ${g} on {}`);
  } finally {
    x.dispose();
  }
});

// ---- error messages that misdescribe the value ----------------------------------------------------------------------

test('zeros() and ones() errors name zeros and ones, not full', (t) => {
  const cases: [string, () => unknown][] = [
    ['zeros', () => zeros([-1])],
    ['zeros', () => zeros('x' as any)],
    ['zeros', () => zeros([2], { dtype: 'float64' as any })],
    ['zeros', () => zeros([2], { device: 'gpu' as any })],
    ['zeros', () => zeros([1e7, 1e7])],
    ['ones', () => ones([-1])],
    ['ones', () => ones([2], { dtype: 'float64' as any })],
    ['ones', () => ones([1e7, 1e7])],
  ];
  for (const [op, call] of cases) {
    const err = t.throws(() => release(call()), undefined, op);
    if (err) t.regex(err.message, new RegExp(`^${op}: `), `${op}: message should start with '${op}: ', got '${err.message}'`);
  }
});

test('messages from the JavaScript layer call a symbol a symbol and a bigint a bigint', (t) => {
  const x = zeros([2]);
  try {
    const cases: [string, () => unknown, RegExp][] = [
      ['tensor(Symbol())', () => tensor(Symbol('d') as any), /^tensor: data must be .*, got a symbol$/],
      ['tensor(5n)', () => tensor(5n as any), /^tensor: data must be .*, got (a bigint|5n)$/],
      ['tensor([1, 2n])', () => tensor([1, 2n] as any), /^tensor: element \[1\] must be a number, got (a bigint|2n)$/],
      ['tensor([Symbol()])', () => tensor([Symbol('e')] as any), /^tensor: element \[0\] must be a number, got a symbol$/],
      ['x.to(Symbol())', () => x.to(Symbol('d') as any), /^Tensor\.to: device must be .*, got a symbol$/],
      ['x.to(5n)', () => x.to(5n as any), /^Tensor\.to: device must be .*, got (a bigint|5n)$/],
      ['x.sharesStorageWith(2n)', () => x.sharesStorageWith(2n as any), /^Tensor\.sharesStorageWith: other must be a Tensor, got (a bigint|2n)$/],
      ['x.sharesStorageWith(Symbol())', () => x.sharesStorageWith(Symbol('o') as any), /^Tensor\.sharesStorageWith: other must be a Tensor, got a symbol$/],
      ['zeros([2], 3n)', () => zeros([2], 3n as any), /^zeros: options must be an object \(or left out\), got (a bigint|3n)$/],
      ['rand([2], Symbol())', () => rand([2], Symbol('o') as any), /^rand: options must be an object \(or left out\), got a symbol$/],
    ];
    for (const [what, call, message] of cases) throwsExactly(t, call, TypeError, message, what);
  } finally {
    x.dispose();
  }
});

test('tensor() of a DataView says the data is the problem', (t) => {
  throwsExactly(t, () => tensor(new DataView(new ArrayBuffer(8)) as any), TypeError, /^tensor: data must be /, 'tensor(DataView)');
  throwsExactly(t, () => tensor(new DataView(new ArrayBuffer(8)) as any, [2]), TypeError, /^tensor: data must be /, 'tensor(DataView, [2])');
});

test('manualSeed() with a value that is not a number or bigint throws a TypeError', (t) => {
  const cases: [unknown, string][] = [['1', '"1"'], [undefined, 'undefined'], [null, 'null'], [{}, 'an object'], [true, 'true']];
  for (const [v, shown] of cases)
    throwsExactly(t, () => manualSeed(v as any), TypeError, new RegExp(`^manualSeed: seed must be .*, got ${escape(shown)}$`), `manualSeed(${shown})`);
  throwsExactly(t, () => manualSeed(Symbol('s') as any), TypeError, /^manualSeed: seed must be/, 'manualSeed(Symbol())');
});

// ---- afterwards --------------------------------------------------------------------------------------------------------

test('after all of the above the process is alive and nothing leaked', async (t) => {
  await synchronize();
  synchronizeSync();
  (globalThis as { gc?: () => void }).gc?.();
  await new Promise((r) => setImmediate(r));
  synchronizeSync();
  t.deepEqual(cpuCounts(), baseline, 'memory().cpu tensors/storages/bytes are back to where they started');
  t.is(getNumThreads(), threadsBefore);

  // Everything still works.
  const a = tensor([[1, 2], [3, 4]]);
  const b = a.clone();
  const c = full([3], 7, { dtype: 'int32' });
  const r = rand([100], { seed: 3 });
  try {
    t.deepEqual(Array.from(await b.data()), [1, 2, 3, 4]);
    t.deepEqual(Array.from(c.dataSync()), [7, 7, 7]);
    t.true(Array.from(r.dataSync()).every((v) => v >= 0 && v < 1));
    t.false(a.sharesStorageWith(b));
  } finally {
    for (const x of [a, b, c, r]) x.dispose();
  }
  synchronizeSync();
  t.deepEqual(cpuCounts(), baseline);
  t.is(typeof process.pid, 'number');
  t.is(process.exitCode, undefined);
});
