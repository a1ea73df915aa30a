// ids.test.ts — token ids, class targets and attention key lengths that are out of range fail their op with the CPU
// kernel's error text, whatever wrote them: an upload from host memory (tensor(), .to(), copyInto from the host, a
// fill), or the device itself (a copy between device tensors, clone, a window overwritten after the upload). Nothing
// is written (the windows beside a failed output keep their values), and valid ids give the right result. On CUDA,
// ids uploaded from the host are checked on the host from the bounds their upload noted (no stream synchronisation),
// and everything else on the device (cuda::check_ids); these tests are the same on every device, so they pin the
// messages to the CPU's. The CUDA variants are skipped (the reason printed) when CUDA is not available.
import anyTest, { type ExecutionContext } from 'ava';

import { Tensor, backends, full, kernels as K, synchronize, tensor } from '../lib/index.ts';
import type { Device } from '../lib/index.ts';
import { native } from '../lib/native.ts';
import { assertClose } from './helpers/close.ts';
import { Random } from './helpers/random.ts';

const cuda = backends().cuda;
if (!cuda.available) console.log(`# test/ids.test.ts: the cuda:0 variants are skipped: CUDA is not available: ${cuda.reason ?? 'unknown reason'}`);
const devices: Device[] = ['cpu', 'cuda:0'];
const testOn = (dev: Device) => (dev === 'cpu' || cuda.available ? anyTest.serial : anyTest.serial.skip);

const i32 = (a: number[], dev: Device) => tensor(Int32Array.from(a), [a.length], { dtype: 'int32', device: dev });
const f32 = (a: ArrayLike<number>, shape: number[], dev: Device) => tensor(Float32Array.from(a), shape, { device: dev });
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** x's reads reject with exactly `op (dev stream): message` as the cause. */
async function failsWith(t: ExecutionContext, x: Tensor, op: string, dev: Device, message: string, what: string): Promise<void> {
  const e = await t.throwsAsync(() => x.data(), undefined, what);
  t.regex(e?.message ?? '', new RegExp(`^Tensor\\.data: this tensor holds the output of a failed op: ${esc(op)} \\(${esc(dev)} stream\\): ${esc(message)}$`), what);
  t.true(e instanceof RangeError, `${what}: a RangeError`);
}

/** Every value of x equals v. */
async function allEqual(t: ExecutionContext, x: Tensor, v: number, what: string): Promise<void> {
  const d = await x.data();
  t.true(Array.from(d).every((y) => y === v), `${what}: ${Array.from(d).join(', ')}`);
}

/** Starts each test with no failure left over from an earlier one. */
async function clean(): Promise<void> {
  await synchronize().catch(() => undefined);
}

for (const dev of devices) {
  const test = testOn(dev);
  const V = 5, C = 3;
  const r = new Random(11);
  const tableData = Float32Array.from({ length: V * C }, () => r.uniform());
  const rows = (ids: number[]) => ids.flatMap((id) => Array.from(tableData.subarray(id * C, id * C + C)));

  test(`${dev}: embedding ids uploaded from the host: valid ids give the rows, a bad id fails with the CPU text and writes nothing`, async (t) => {
    await clean();
    const table = f32(tableData, [V, C], dev);
    t.deepEqual(Array.from(await K.embedding(i32([0, 4, 2, 4], dev), table).data()), rows([0, 4, 2, 4]));
    const buf = full([3, 4, C], 7, { device: dev });
    const out = buf.window(4 * C, [4, C]), before = buf.window(0, [4 * C]), after = buf.window(8 * C, [4 * C]);
    K.embedding(i32([0, 4, 5, 1], dev), table, { out });
    await failsWith(t, out, 'embeddingForward', dev, 'embedding: token id 5 at position 2 is out of range [0, 5)', 'id 5');
    await allEqual(t, before, 7, 'before the output');
    await allEqual(t, after, 7, 'after the output');
    await failsWith(t, K.embedding(i32([0, -1, 9], dev), table), 'embeddingForward', dev, 'embedding: token id -1 at position 1 is out of range [0, 5)', 'id -1');
    // through .to(dev) from a CPU tensor, and a fill
    await failsWith(t, K.embedding(i32([3, 3, 3, 8], 'cpu').to(dev), table), 'embeddingForward', dev, 'embedding: token id 8 at position 3 is out of range [0, 5)', '.to');
    await failsWith(t, K.embedding(full([2], 9, { dtype: 'int32', device: dev }), table), 'embeddingForward', dev, 'embedding: token id 9 at position 0 is out of range [0, 5)', 'full');
    t.deepEqual(Array.from(await K.embedding(full([2], 4, { dtype: 'int32', device: dev }), table).data()), rows([4, 4]), 'full, valid');
    // a window of an upload whose other values are out of range: still valid
    t.deepEqual(Array.from(await K.embedding(i32([1, 2, 3, 99], dev).window(0, [3]), table).data()), rows([1, 2, 3]), 'window');
    // the backward pass: dtable is a window of a buffer whose other windows keep their values
    const gbuf = full([3, V, C], 2, { device: dev });
    const dtable = gbuf.window(V * C, [V, C]);
    K.embeddingBackward(i32([1, 7], dev), full([2, C], 1, { device: dev }), dtable);
    await failsWith(t, dtable, 'embeddingBackward', dev, 'embedding: token id 7 at position 1 is out of range [0, 5)', 'backward');
    await allEqual(t, gbuf.window(0, [V * C]), 2, 'before dtable');
    await allEqual(t, gbuf.window(2 * V * C, [V * C]), 2, 'after dtable');
    await t.throwsAsync(() => synchronize(), { message: /embeddingForward.*token id 5/ });
  });

  test(`${dev}: cross-entropy targets: ignored rows are not errors, a bad target fails with the CPU text and writes nothing`, async (t) => {
    await clean();
    const logitsData = Float32Array.from({ length: 3 * 4 }, () => 3 * r.uniform());
    const logits = f32(logitsData, [3, 4], dev), logitsCpu = f32(logitsData, [3, 4], 'cpu');
    const want = (await K.crossEntropy(logitsCpu, i32([1, -100, 3], 'cpu')).data())[0];
    const got = (await K.crossEntropy(logits, i32([1, -100, 3], dev)).data())[0];
    assertClose(t, [got], [want], { rel: 1e-5, what: 'loss' });
    t.deepEqual(Array.from(await K.crossEntropy(logits, i32([-100, -100, -100], dev)).data()), [0], 'every row ignored');
    t.true(Number.isFinite((await K.crossEntropy(logits, i32([9, 0, 3], dev), { ignoreIndex: 9 }).data())[0]), 'a custom ignoreIndex above the range');
    const dbuf = full([3, 3, 4], 5, { device: dev });
    const dlogits = dbuf.window(12, [3, 4]);
    const loss = K.crossEntropy(logits, i32([1, -100, 7], dev), { dlogits });
    const msg = 'cross_entropy: target 7 at row 2 is out of range [0, 4) and is not ignore_index (-100)';
    await failsWith(t, loss, 'crossEntropy', dev, msg, 'target 7');
    await failsWith(t, dlogits, 'crossEntropy', dev, msg, 'dlogits');
    await allEqual(t, dbuf.window(0, [12]), 5, 'before dlogits');
    await allEqual(t, dbuf.window(24, [12]), 5, 'after dlogits');
    await failsWith(t, K.crossEntropy(logits, i32([9, 0, 3], dev)), 'crossEntropy', dev,
      'cross_entropy: target 9 at row 0 is out of range [0, 4) and is not ignore_index (-100)', 'target 9, not ignored');
    await failsWith(t, K.crossEntropy(logits, i32([0, -100, -5], dev)), 'crossEntropy', dev,
      'cross_entropy: target -5 at row 2 is out of range [0, 4) and is not ignore_index (-100)', 'a second negative value');
    await t.throwsAsync(() => synchronize(), { message: /crossEntropy/ });
  });

  test(`${dev}: ids written on the device after (or instead of) an upload are checked too`, async (t) => {
    await clean();
    const table = f32(tableData, [V, C], dev);
    const n = native();
    // an uploaded, valid tensor; then one window is overwritten by a copy from another tensor on the device
    const ids = i32([0, 1, 2, 3], dev);
    t.deepEqual(Array.from(await K.embedding(ids, table).data()), rows([0, 1, 2, 3]));
    n.copyInto(ids.window(1, [2]).handle, i32([0, 9], dev).handle);
    await failsWith(t, K.embedding(ids, table), 'embeddingForward', dev, 'embedding: token id 9 at position 2 is out of range [0, 5)', 'device copy into a window');
    await failsWith(t, K.embedding(ids.window(2, [2]), table), 'embeddingForward', dev, 'embedding: token id 9 at position 0 is out of range [0, 5)', 'a view of it');
    t.deepEqual(Array.from(await K.embedding(ids.window(3, [1]), table).data()), rows([3]), 'the untouched window');
    // a whole tensor copied on the device, and a clone
    const dst = full([3], 0, { dtype: 'int32', device: dev });
    n.copyInto(dst.handle, i32([1, 2, 8], dev).handle);
    await failsWith(t, K.embedding(dst, table), 'embeddingForward', dev, 'embedding: token id 8 at position 2 is out of range [0, 5)', 'device copy');
    await failsWith(t, K.embedding(i32([6, 1], dev).clone(), table), 'embeddingForward', dev, 'embedding: token id 6 at position 0 is out of range [0, 5)', 'clone');
    // a window overwritten from host memory, and by a fill
    n.copyInto(ids.window(1, [2]).handle, i32([4, 4], 'cpu').handle);
    t.deepEqual(Array.from(await K.embedding(ids, table).data()), rows([0, 4, 4, 3]), 'repaired from the host');
    n.copyInto(ids.window(0, [1]).handle, i32([7], 'cpu').handle);
    await failsWith(t, K.embedding(ids, table), 'embeddingForward', dev, 'embedding: token id 7 at position 0 is out of range [0, 5)', 'host copy into a window');
    n.fillInto(ids.window(0, [2]).handle, 2);
    t.deepEqual(Array.from(await K.embedding(ids, table).data()), rows([2, 2, 4, 3]), 'filled window');
    n.fillInto(ids.window(3, [1]).handle, 5);
    await failsWith(t, K.embedding(ids, table), 'embeddingForward', dev, 'embedding: token id 5 at position 3 is out of range [0, 5)', 'fill into a window');
    // targets copied on the device
    const tg = full([3], 0, { dtype: 'int32', device: dev });
    n.copyInto(tg.handle, i32([-100, 2, 4], dev).handle);
    await failsWith(t, K.crossEntropy(f32(new Float32Array(12), [3, 4], dev), tg), 'crossEntropy', dev,
      'cross_entropy: target 4 at row 2 is out of range [0, 4) and is not ignore_index (-100)', 'targets copied on the device');
    await t.throwsAsync(() => synchronize());
  });

  test(`${dev}: attention keyLengths out of [0, Tk] fail with the CPU text, uploaded or written on the device`, async (t) => {
    await clean();
    const B = 2, T = 5, D = 4;
    const x = () => f32(Float32Array.from({ length: B * T * D }, () => r.uniform()), [B, 1, T, D], dev);
    const q = x(), k = x(), v = x();
    t.true((await K.attention(q, k, v, { keyLengths: i32([5, 0], dev) }).o.data()).every((y) => Number.isFinite(y)), 'valid');
    await failsWith(t, K.attention(q, k, v, { keyLengths: i32([5, 6], dev) }).o, 'attentionForward', dev,
      'attention_forward: key_lengths[1] = 6 is outside [0, Tk = 5]', 'uploaded');
    const kl = full([2], 0, { dtype: 'int32', device: dev });
    native().copyInto(kl.handle, i32([-1, 2], dev).handle);
    await failsWith(t, K.attention(q, k, v, { keyLengths: kl }).o, 'attentionForward', dev,
      'attention_forward: key_lengths[0] = -1 is outside [0, Tk = 5]', 'copied on the device');
    await t.throwsAsync(() => synchronize());
  });
}
