import test from 'ava';
import { checkInt, checkKeys, checkNumber, checkObject, checkOptions, describe, isPlainObject, showJson, typeOf } from '../lib/validate.ts';
import { tensor } from '../lib/tensor.ts';

test('describe shows each kind of value as error messages print it', (t) => {
  const cases: [unknown, string][] = [
    [null, 'null'],
    [undefined, 'undefined'],
    [3, '3'],
    [-0, '-0'],
    [NaN, 'NaN'],
    [-Infinity, '-Infinity'],
    [true, 'true'],
    [3n, '3n'],
    [Symbol('s'), 'a symbol'],
    [() => 1, 'a function'],
    ['a', '"a"'],
    ["it's \"x\"\n", '"it\'s \\"x\\"\\n"'],
    ['x'.repeat(41), `"${'x'.repeat(40)}"...`],
    [[], 'an array of length 0'],
    [[1, 2], 'an array of length 2'],
    [{}, 'an object'],
    [Object.create(null), 'an object'],
    [new Float32Array(2), 'a Float32Array'],
    [new Uint8Array(2), 'a Uint8Array'],
    [new Int32Array(2), 'an Int32Array'],
    [new DataView(new ArrayBuffer(4)), 'a DataView'],
    [new Map(), 'a Map'],
  ];
  for (const [v, shown] of cases) t.is(describe(v), shown, shown);
});

test('describe shows a Tensor by its toString, a disposed one as disposed', (t) => {
  const x = tensor([[1, 2, 3]]);
  t.is(describe(x), 'Tensor(float32[1, 3] on cpu)');
  x.dispose();
  t.is(describe(x), 'Tensor(disposed)');
});

test('showJson, typeOf and isPlainObject', (t) => {
  t.is(showJson([2, -1]), '[2,-1]');
  t.is(showJson('a"b'), '"a\\"b"');
  t.is(showJson(undefined), 'undefined');
  t.is(showJson(() => 1), 'function');
  t.is(showJson(1n), '<bigint>');
  t.is(showJson('x'.repeat(100)), `"${'x'.repeat(76)}...`);
  t.deepEqual([null, [], {}, 1].map(typeOf), ['null', 'array', 'object', 'number']);
  t.deepEqual([null, [], {}, 1, new Map()].map(isPlainObject), [false, false, true, false, true]);
});

test('checkInt: TypeError for a non-number, RangeError for a fraction or a value out of range', (t) => {
  t.is(checkInt('f', 3, 'n', 1), 3);
  t.is(checkInt('f', 0, 'n', 0, 0), 0);
  t.throws(() => checkInt('f', '3', 'n', 1), { instanceOf: TypeError, message: /^f: n must be an integer, got "3"$/ });
  t.throws(() => checkInt('f', null, 'n', 1), { instanceOf: TypeError, message: /^f: n must be an integer, got null$/ });
  t.throws(() => checkInt('f', 1.5, 'n', 1), { instanceOf: RangeError, message: /^f: n must be an integer >= 1, got 1\.5$/ });
  t.throws(() => checkInt('f', NaN, 'n', 0, 4), { instanceOf: RangeError, message: /^f: n must be an integer in \[0, 4\], got NaN$/ });
  t.throws(() => checkInt('f', -1, 'n', 0, Number.MAX_SAFE_INTEGER), { instanceOf: RangeError, message: /^f: n must be an integer in \[0, 2\^53 - 1\], got -1$/ });
  t.throws(() => checkInt('f', 9, 'n', 1, 4, ' (4 layers)'), { instanceOf: RangeError, message: /^f: n must be an integer in \[1, 4\], got 9 \(4 layers\)$/ });
});

test('checkNumber: TypeError for a non-number, RangeError when not finite or out of bounds', (t) => {
  t.is(checkNumber('f', 0.5, 'x'), 0.5);
  t.is(checkNumber('f', Infinity, 'x', { finite: false }), Infinity);
  t.throws(() => checkNumber('f', 'hot', 'x'), { instanceOf: TypeError, message: /^f: x must be a number, got "hot"$/ });
  t.throws(() => checkNumber('f', NaN, 'x'), { instanceOf: RangeError, message: /^f: x must be finite, got NaN$/ });
  t.throws(() => checkNumber('f', NaN, 'x', { finite: false }), { instanceOf: RangeError, message: /^f: x must be a number other than NaN, got NaN$/ });
  t.throws(() => checkNumber('f', -0.5, 'x', { min: 0 }), { instanceOf: RangeError, message: /^f: x must be a number >= 0, got -0\.5$/ });
  t.throws(() => checkNumber('f', 2, 'x', { max: 1 }), { instanceOf: RangeError, message: /^f: x must be a number <= 1, got 2$/ });
  t.throws(() => checkNumber('f', 2, 'x', { min: 0, max: 1 }), { instanceOf: RangeError, message: /^f: x must be a number in \[0, 1\], got 2$/ });
});

test('checkOptions: undefined is {}, a non-object is a TypeError, unknown keys are refused with the list', (t) => {
  t.deepEqual(checkOptions('f', undefined), {});
  const o = { a: 1 };
  t.is(checkOptions('f', o), o);
  t.is(checkOptions('f', o, ['a', 'b']), o);
  for (const [v, shown] of [[null, 'null'], [5, '5'], ['x', '"x"'], [[], 'an array of length 0']] as const)
    t.throws(() => checkOptions('f', v as never), { instanceOf: TypeError, message: `f: options must be an object (or left out), got ${shown}` });
  t.throws(() => checkOptions('f', { a: 1, c: 2 }, ['a', 'b']), { instanceOf: TypeError, message: 'f: unknown option "c"; the options are a, b' });
  t.throws(() => checkKeys('M', { layer: 2 }, ['layers'], 'config key'), { instanceOf: TypeError, message: 'M: unknown config key "layer"; the config keys are layers' });
});

test('checkObject: a TypeError naming what must be an object, what it holds, and the value', (t) => {
  t.notThrows(() => checkObject('f', {}, 'options'));
  t.throws(() => checkObject('f', null, 'options', ' { lr }'), { instanceOf: TypeError, message: 'f: options must be an object { lr }, got null' });
  t.throws(() => checkObject('M', [1], 'config'), { instanceOf: TypeError, message: 'M: config must be an object, got an array of length 1' });
});
