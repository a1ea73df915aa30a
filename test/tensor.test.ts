import anyTest from 'ava';

// Serial: memory() counters and the stream are shared by every test in this process.
const test = anyTest.serial;
import * as sf from '../lib/index.ts';

const close = (a: ArrayLike<number>, b: ArrayLike<number>) => a.length === b.length && Array.from(a).every((x, i) => x === b[i]);

test('tensor() from nested arrays infers the shape and copies the data', (t) => {
  const x = sf.tensor([[1, 2, 3], [4, 5, 6]]);
  t.deepEqual(x.shape, [2, 3]);
  t.is(x.dtype, 'float32');
  t.is(x.device, 'cpu');
  t.is(x.size, 6);
  t.is(x.rank, 2);
  t.deepEqual(Array.from(x.dataSync()), [1, 2, 3, 4, 5, 6]);
  t.deepEqual(x.toArray(), [[1, 2, 3], [4, 5, 6]]);
  t.is(String(x), 'Tensor(float32[2, 3] on cpu)');
  x.dispose();
});

test('tensor() from typed arrays: the source may change afterwards', (t) => {
  const src = new Float32Array([0.5, -1.25, 3, 7]);
  const x = sf.tensor(src, [2, 2]);
  src[0] = 99;
  t.deepEqual(Array.from(x.dataSync()), [0.5, -1.25, 3, 7]);
  const i = sf.tensor(new Int32Array([-3, 2147483647]));
  t.is(i.dtype, 'int32');
  t.true(i.dataSync() instanceof Int32Array);
  t.deepEqual(Array.from(i.dataSync()), [-3, 2147483647]);
  const scalar = sf.tensor(4.5);
  t.deepEqual(scalar.shape, []);
  t.deepEqual(scalar.toArray(), 4.5);
  const empty = sf.tensor(new Float32Array(0), [0, 3]);
  t.is(empty.size, 0);
  t.is(empty.dataSync().length, 0);
  for (const z of [x, i, scalar, empty]) z.dispose();
});

test('bfloat16 storage rounds to nearest even and reads back as float32', (t) => {
  const x = sf.tensor([1, 1 + 1 / 256, 1 + 3 / 256, -2.5, 1e-3], undefined, { dtype: 'bfloat16' });
  const back = x.dataSync();
  t.true(back instanceof Float32Array);
  t.deepEqual(Array.from(back).slice(0, 4), [1, 1, 1 + 4 / 256, -2.5]);
  t.true(Math.abs(back[4] - 1e-3) / 1e-3 < 2 ** -8);
  x.dispose();
});

test('full, zeros and ones fill every element, in every dtype', async (t) => {
  for (const n of [1, 7, 33, 129, 100003]) {
    const a = sf.full([n], -2.5);
    const b = sf.zeros([n], { dtype: 'int32' });
    const c = sf.ones([n], { dtype: 'bfloat16' });
    t.true((await a.data()).every((v) => v === -2.5));
    t.true((await b.data()).every((v) => v === 0));
    t.true((await c.data()).every((v) => v === 1));
    for (const z of [a, b, c]) z.dispose();
  }
  const nan = sf.full([3], NaN);
  t.true(nan.dataSync().every(Number.isNaN));
  nan.dispose();
});

test('rand and randn are pure functions of (seed, offset + index)', (t) => {
  const a = sf.rand([1000], { seed: 123 });
  const b = sf.rand([1000], { seed: 123 });
  const tail = sf.rand([990], { seed: 123, offset: 10 });
  const other = sf.rand([1000], { seed: 124 });
  const big = sf.rand([10], { seed: 123n });
  const da = a.dataSync();
  t.true(close(da, b.dataSync()));
  t.true(close(da.subarray(10), tail.dataSync()));
  t.false(close(da, other.dataSync()));
  t.true(close(da.subarray(0, 10), big.dataSync()));
  t.true(da.every((v) => v >= 0 && v < 1));
  const n1 = sf.randn([64], { seed: 5 });
  const n2 = sf.randn([60], { seed: 5, offset: 4 });
  t.true(close(n1.dataSync().subarray(4), n2.dataSync()));
  for (const z of [a, b, tail, other, big, n1, n2]) z.dispose();
});

test('rand and randn have the right moments and respect low/high and mean/std', (t) => {
  const n = 1 << 20;
  const u = sf.rand([n], { seed: 9, low: -2, high: 6 }).dataSync();
  const g = sf.randn([n], { seed: 9, mean: 3, std: 0.5 }).dataSync();
  let su = 0, su2 = 0, sg = 0, sg2 = 0, lo = Infinity, hi = -Infinity;
  for (let i = 0; i < n; i++) {
    su += u[i]; su2 += u[i] * u[i]; sg += g[i]; sg2 += g[i] * g[i];
    lo = Math.min(lo, u[i]); hi = Math.max(hi, u[i]);
  }
  const mu = su / n, mg = sg / n;
  t.true(Math.abs(mu - 2) < 0.02, `uniform mean ${mu}`);
  t.true(Math.abs(su2 / n - mu * mu - 64 / 12) < 0.03, 'uniform variance');
  t.true(lo >= -2 && hi < 6);
  t.true(Math.abs(mg - 3) < 0.005, `normal mean ${mg}`);
  t.true(Math.abs(Math.sqrt(sg2 / n - mg * mg) - 0.5) < 0.005, 'normal std');
});

test('the default generator advances, and manualSeed resets it', (t) => {
  sf.manualSeed(77);
  const a = sf.rand([5]).dataSync();
  const b = sf.rand([5]).dataSync();
  t.false(close(a, b));
  t.true(close(b, sf.rand([5], { seed: 77, offset: 5 }).dataSync()));
  sf.manualSeed(77);
  t.true(close(a, sf.rand([5]).dataSync()));
});

test('data() resolves with a copy; sharedData() shares memory without a copy', async (t) => {
  const x = sf.tensor([1, 2, 3, 4]);
  const copy = await x.data();
  const view = x.sharedData();
  const view2 = x.sharedData();
  view[0] = 42;
  t.is(view2[0], 42, 'two views of one tensor see each other');
  t.is(x.dataSync()[0], 42, 'the tensor sees writes through the view');
  t.is(copy[0], 1, 'data() is a copy');
  x.dispose();
  t.is(view[1], 2, 'a view keeps the memory alive after dispose');
});

test('view, window and clone: views share storage, clones do not', (t) => {
  const x = sf.tensor([0, 1, 2, 3, 4, 5, 6, 7]);
  const v = x.view([2, 4]);
  const w = x.window(2, [2, 2]);
  const ww = w.window(1, [3]);
  const c = x.clone();
  t.deepEqual(v.shape, [2, 4]);
  t.deepEqual(Array.from(w.dataSync()), [2, 3, 4, 5]);
  t.deepEqual(Array.from(ww.dataSync()), [3, 4, 5]);
  t.true(v.sharesStorageWith(x) && w.sharesStorageWith(x) && ww.sharesStorageWith(v));
  t.false(c.sharesStorageWith(x));
  x.sharedData()[3] = -1;
  t.is(w.dataSync()[1], -1);
  t.is(c.dataSync()[3], 3);
  const cpu = x.to('cpu');
  t.false(cpu.sharesStorageWith(x));
  t.deepEqual(Array.from(cpu.dataSync()), Array.from(x.dataSync()));
  for (const z of [x, v, w, ww, c, cpu]) z.dispose();
});

test('memory() counts live tensors and bytes; dispose and `using` release them', (t) => {
  sf.synchronizeSync(); // queued work from earlier tests holds its tensors' storage until it has run
  const before = sf.memory().cpu;
  const a = sf.zeros([256, 4]);
  const v = a.window(4, [4]);
  let now = sf.memory().cpu;
  t.is(now.tensors - before.tensors, 2);
  t.is(now.storages - before.storages, 1);
  t.is(now.bytes - before.bytes, 4096);
  t.true(now.peakBytes >= now.bytes);
  a.dispose();
  a.dispose(); // idempotent
  now = sf.memory().cpu;
  t.is(now.tensors - before.tensors, 1);
  t.is(now.bytes - before.bytes, 4096, 'the view keeps the storage');
  v.dispose();
  sf.synchronizeSync(); // ... and once the queued fill that used it has run, the storage goes too
  {
    using u = sf.ones([1000]);
    t.is(sf.memory().cpu.bytes - before.bytes, 4000);
    t.is(u.size, 1000);
  }
  sf.synchronizeSync(); // a disposed tensor's storage lives until the queued work that uses it (the fill) has run
  now = sf.memory().cpu;
  t.is(now.tensors, before.tensors);
  t.is(now.storages, before.storages);
  t.is(now.bytes, before.bytes);
});

test('tensors dropped without dispose() are reclaimed by finalizers', async (t) => {
  const gc = (globalThis as { gc?: () => void }).gc;
  t.truthy(gc, 'run with --expose-gc (ava.nodeArguments)');
  const settle = async () => {
    for (let i = 0; i < 5; i++) {
      gc!();
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  await settle(); // earlier tests may have dropped tensors too
  const before = sf.memory().cpu;
  (() => {
    for (let i = 0; i < 2000; i++) sf.zeros([1024]);
  })();
  // (V8 may already have collected some: the addon reports native bytes as external memory)
  t.true(sf.memory().cpu.tensors > before.tensors, 'the dropped tensors are still counted before collection');
  await settle();
  const after = sf.memory().cpu;
  t.is(after.tensors, before.tensors);
  t.is(after.bytes, before.bytes);
});

test('kernel work runs off the JavaScript thread: timers fire while it runs', async (t) => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 2);
  const started = performance.now();
  const x = sf.randn([1 << 25], { seed: 1 }); // ~0.3 s of Philox + Box-Muller on 2 cores
  const submitted = performance.now() - started;
  const data = await x.data();
  const total = performance.now() - started;
  clearInterval(timer);
  t.is(data.length, 1 << 25);
  t.true(submitted < total / 4, `submitting took ${submitted.toFixed(1)} ms of ${total.toFixed(1)} ms`);
  t.true(ticks >= 5, `the timer fired ${ticks} times in ${total.toFixed(0)} ms`);
  x.dispose();
});

test('synchronize() waits for all queued work', async (t) => {
  const x = sf.randn([1 << 20], { seed: 2 });
  await sf.synchronize();
  sf.synchronizeSync();
  t.is(x.dataSync().length, 1 << 20);
  x.dispose();
});

test('the thread pool size can be read and set', (t) => {
  const n = sf.getNumThreads();
  t.true(n >= 1);
  t.is(sf.backends().cpu.threads, n);
  sf.setNumThreads(1);
  t.is(sf.getNumThreads(), 1);
  const one = sf.rand([4096], { seed: 3 }).dataSync();
  sf.setNumThreads(3);
  t.is(sf.getNumThreads(), 3);
  const three = sf.rand([4096], { seed: 3 }).dataSync();
  t.true(close(one, three), 'the random stream does not depend on the thread count');
  sf.setNumThreads(n);
});
