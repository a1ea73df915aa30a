// The CPU matmul keeps a packed copy of a B operand read twice at the same values (native/cpu/packed_weights.cpp):
// the results are the bits of packing at every call, a write to B in any way (a kernel's out, writeInto, a view's
// write, memory shared with JavaScript) is never answered from an old copy, and the copy is counted in memory() and
// freed with B or when B changes.
import anyTest from 'ava';
import { kernels, memory, synchronizeSync, tensor, type Tensor } from '../lib/index.ts';
import { writeInto } from '../lib/record.ts';
import { Random } from './helpers/random.ts';

const test = anyTest.serial;
const bits = (t: Tensor) => Array.from(new Uint32Array((t.dataSync() as Float32Array).slice().buffer));
const product = (x: Tensor, w: Tensor, transB: boolean) => {
  const y = kernels.matmul(x, w, { transB });
  const b = bits(y);
  y.dispose();
  return b;
};

test('a weight read again at the same values is packed once: the same bits, one storage more until it is written', (t) => {
  const rng = new Random(1);
  for (const transB of [false, true]) {
    const M = 40, N = 70, K = 300; // the packed path (M > 16), two K blocks, a partial panel
    const x = tensor(rng.normals(M * K), [M, K]);
    const wv = rng.normals(K * N);
    const w = tensor(wv, transB ? [N, K] : [K, N]);
    synchronizeSync();
    const base = memory().cpu.storages;
    const { packedStorages: packed0, packedBytes: packedBytes0 } = memory().cpu;
    const first = product(x, w, transB);
    t.is(memory().cpu.storages, base, 'the first read keeps nothing');
    const second = product(x, w, transB);
    t.is(memory().cpu.storages, base + 1, 'the second read at the same values keeps one packed copy');
    t.is(memory().cpu.packedStorages, packed0 + 1, 'reported as packed');
    const pb = memory().cpu.packedBytes - packedBytes0;
    t.true(pb >= N * K * 4 && pb <= (N + 32) * K * 4, `the copy holds B, its panels padded: ${pb} bytes`);
    const third = product(x, w, transB);
    t.is(memory().cpu.storages, base + 1);
    t.deepEqual(second, first);
    t.deepEqual(third, first);
    // a naive product, for scale: the first result is a product of these values
    const y0 = new Float32Array(new Uint32Array(first).buffer);
    const xv = x.dataSync() as Float32Array;
    let worst = 0;
    for (const [i, j] of [[0, 0], [M - 1, N - 1], [17, 33]]) {
      let s = 0;
      for (let k = 0; k < K; k++) s += xv[i * K + k] * wv[transB ? j * K + k : k * N + j];
      worst = Math.max(worst, Math.abs(s - y0[i * N + j]));
    }
    t.true(worst < 1e-3, `naive difference ${worst}`);

    // written by a kernel (out): the next read sees the new values and drops the old copy
    kernels.axpby(w, 2, w, 0, { out: w });
    const fresh = (data: Float32Array) => tensor(data, transB ? [N, K] : [K, N]);
    const doubled = fresh(Float32Array.from(wv, (v) => 2 * v));
    const want = product(x, doubled, transB); // another storage, read once: packed in the call
    t.deepEqual(product(x, w, transB), want, 'after a kernel wrote B');
    t.is(memory().cpu.storages, base + 1, 'the stale copy is dropped (the new storage "doubled" is the one more)');
    t.deepEqual(product(x, w, transB), want, 'packed again at the new values');
    // written from the host, queued (writeInto)
    const neg = Float32Array.from(wv, (v) => -v);
    writeInto(w, neg);
    const negT = fresh(neg);
    t.deepEqual(product(x, w, transB), product(x, negT, transB), 'after writeInto');
    t.deepEqual(product(x, w, transB), product(x, negT, transB), 'after writeInto, the second read');
    // the copy dies with B
    for (const d of [doubled, negT]) d.dispose();
    w.dispose();
    synchronizeSync();
    t.is(memory().cpu.storages, base - 1, 'freeing B frees its packed copy (and B)');
    t.is(memory().cpu.packedStorages, packed0);
    t.is(memory().cpu.packedBytes, packedBytes0);
    x.dispose();
  }
});

test('views of one buffer are packed apart, and a write through another view of the buffer is seen', (t) => {
  const rng = new Random(2);
  const M = 24, N = 48, K = 40;
  const flat = tensor(rng.normals(2 * K * N + 8), [2 * K * N + 8]);
  const w1 = flat.window(8, [K, N]), w2 = flat.window(8 + K * N, [K, N]);
  const x = tensor(rng.normals(M * K), [M, K]);
  const copy = (w: Tensor) => tensor((w.dataSync() as Float32Array).slice(), [K, N]);
  for (let r = 0; r < 3; r++) {
    t.deepEqual(product(x, w1, false), product(x, copy(w1), false), `w1, read ${r}`);
    t.deepEqual(product(x, w2, false), product(x, copy(w2), false), `w2, read ${r}`);
  }
  // a write into w2's part of the buffer (through a third view) changes what w2 reads, and w1's copy is checked too
  const part = flat.window(8 + K * N, [K * N]);
  writeInto(part, rng.normals(K * N));
  t.deepEqual(product(x, w2, false), product(x, copy(w2), false), 'w2 after a write through another view');
  t.deepEqual(product(x, w1, false), product(x, copy(w1), false), 'w1 after the buffer was written');
  for (const v of [w1, w2, part, x, flat]) v.dispose();
});

test('memory shared with JavaScript (sharedData) is never packed: writes through it are seen at once', (t) => {
  const rng = new Random(3);
  const M = 20, N = 33, K = 21;
  const x = tensor(rng.normals(M * K), [M, K]);
  const w = tensor(rng.normals(K * N), [K, N]);
  const view = w.sharedData() as Float32Array;
  synchronizeSync();
  const base = memory().cpu.storages;
  const a = product(x, w, false);
  t.deepEqual(product(x, w, false), a);
  t.is(memory().cpu.storages, base, 'no packed copy of host-writable memory');
  view[5] += 1; // no op runs: only the host wrote
  const b = product(x, w, false);
  t.notDeepEqual(b, a);
  t.deepEqual(b, product(x, tensor(view.slice(), [K, N]), false));
  x.dispose();
  w.dispose();
});
