// cuda.test.ts — the CUDA backend through the public API: every op on CUDA tensors against the same op on CPU tensors
// (fresh random inputs, outputs compared after the device has finished; fp32 rel err <= 1e-5, tf32 <= 1e-3, bf16 <=
// 1e-2; NaN never passes), a whole training step of a small shared decoder on CUDA against the same step on the CPU
// (loss and parameters within 1e-4 relative), the bf16 parameter copy read by the bf16 GEMM (same bits),
// model.to('cuda') keeping one parameter buffer, the shared-weight L2 window, ids checks with the CPU's error text,
// and the device-mismatch errors. Those tests are skipped, with the reason printed, when backends().cuda.available is
// false (no GPU, no driver, or a build without CUDA); the last two (precision on the CPU, option checks) run
// everywhere.
import anyTest, { type ExecutionContext } from 'ava';

import { AdamW, DecodeSession, Decoder, Tensor, backends, backward, clipGradNorm, kernels as K, noGrad, ops, synchronize, tensor, zeros } from '../lib/index.ts';
import { native } from '../lib/native.ts';
import type { DecoderConfig, Precision } from '../lib/index.ts';
import { assertClose } from './helpers/close.ts';
import { throwsExactly } from './helpers/check.ts';
import { Random } from './helpers/random.ts';

const info = backends().cuda;
const test = info.available ? anyTest.serial : anyTest.skip;
if (!info.available) console.log(`# test/cuda.test.ts: the CUDA tests are skipped: CUDA is not available: ${info.reason ?? 'unknown reason'}`);

const DEV = 'cuda:0' as const;

// ---- helpers ------------------------------------------------------------------------------------------------------

/** Fresh random inputs each run (the seed is printed with any failure). */
const SEED = (Date.now() ^ (process.pid << 8)) >>> 0;
const r = new Random(SEED);

/** A CPU tensor and a CUDA copy of it. */
function pair(data: Float32Array | Int32Array, shape: number[]): [Tensor, Tensor] {
  const c = tensor(data, shape);
  return [c, c.to(DEV)];
}

/**
 * The floor of the relative error of a comparison against `want`: its mean finite |value| (close.ts: |got - want| <=
 * tol (|want| + floor)), so elements much smaller than the typical one, whose error is that of the larger terms they
 * were computed from, are held to tol times the typical size.
 */
function meanAbs(want: ArrayLike<number>): number {
  let mean = 0;
  for (let i = 0; i < want.length; i++) if (Number.isFinite(want[i])) mean += Math.abs(want[i]);
  return want.length ? Math.max(mean / want.length, 1e-30) : 1;
}

/** The CUDA tensor's values (it must be on CUDA) close to the CPU tensor's. */
function same(t: ExecutionContext, cpu: Tensor, gpu: Tensor, tol: number, what: string): void {
  t.is(gpu.device, DEV, `${what}: result on ${DEV}`);
  t.is(cpu.device, 'cpu', `${what}: reference on the CPU`);
  t.deepEqual(gpu.shape, cpu.shape, `${what}: shape`);
  const want = cpu.dataSync();
  assertClose(t, gpu.dataSync(), want, { rel: tol, abs: tol * meanAbs(want), what: `${what} (seed ${SEED})` });
}

const TOL: Record<Precision, number> = { fp32: 1e-5, tf32: 1e-3, bf16: 1e-2 };

// ---- every op -------------------------------------------------------------------------------------------------------

test('matmul on CUDA matches the CPU: transposes, batch broadcast, bias, GELU epilogue, beta, every precision', (t) => {
  for (const precision of ['fp32', 'tf32', 'bf16'] as Precision[]) {
    for (const [M, N, Kd] of [[1, 1, 1], [33, 65, 17], [130, 67, 259]]) {
      for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]]) {
        const tag = `${precision} ${M}x${N}x${Kd} transA=${ta} transB=${tb}`;
        const [ac, ag] = pair(r.normals(3 * M * Kd), ta ? [3, Kd, M] : [3, M, Kd]);
        const [bc, bg] = pair(r.normals(Kd * N), tb ? [N, Kd] : [Kd, N]);
        const [biasc, biasg] = pair(r.normals(N), [N]);
        same(t, K.matmul(ac, bc, { transA: ta, transB: tb, precision }), K.matmul(ag, bg, { transA: ta, transB: tb, precision }), TOL[precision], `matmul ${tag}`);
        const prec = zeros([3, M, N]), preg = zeros([3, M, N], { device: DEV });
        same(t,
          K.matmul(ac, bc, { transA: ta, transB: tb, bias: biasc, activation: 'gelu', preact: prec, precision }),
          K.matmul(ag, bg, { transA: ta, transB: tb, bias: biasg, activation: 'gelu', preact: preg, precision }),
          TOL[precision], `matmul + bias + gelu ${tag}`);
        same(t, prec, preg, TOL[precision], `matmul preact ${tag}`);
        const [oc, og] = pair(r.normals(3 * M * N), [3, M, N]);
        K.matmul(ac, bc, { transA: ta, transB: tb, beta: 1, alpha: 0.5, out: oc, precision });
        K.matmul(ag, bg, { transA: ta, transB: tb, beta: 1, alpha: 0.5, out: og, precision });
        same(t, oc, og, TOL[precision], `matmul beta = 1 ${tag}`);
      }
    }
  }
  const [dyc, dyg] = pair(r.normals(7 * 5 * 33), [7, 5, 33]);
  const [dbc, dbg] = pair(r.normals(33), [33]);
  K.biasGrad(dyc, dbc);
  K.biasGrad(dyg, dbg);
  same(t, dbc, dbg, 1e-5, 'biasGrad');
});

test('layer norm, GELU (both forms), softmax, axpby, dropout on CUDA match the CPU', (t) => {
  for (const [rows, C] of [[1, 1], [37, 129], [300, 1000]]) {
    const tag = `${rows}x${C}`;
    const [xc, xg] = pair(r.normals(rows * C, 2), [rows, C]);
    const [wc, wg] = pair(r.normals(C), [C]);
    const [bc, bg] = pair(r.normals(C), [C]);
    const lc = K.layerNorm(xc, wc, bc), lg = K.layerNorm(xg, wg, bg);
    same(t, lc.y, lg.y, 1e-5, `layerNorm y ${tag}`);
    same(t, lc.mean, lg.mean, 1e-5, `layerNorm mean ${tag}`);
    same(t, lc.rstd, lg.rstd, 1e-5, `layerNorm rstd ${tag}`);
    const [dyc, dyg] = pair(r.normals(rows * C), [rows, C]);
    const [dxc, dxg] = pair(r.normals(rows * C), [rows, C]);
    const [dwc, dwg] = pair(r.normals(C), [C]);
    const [dbc, dbg] = pair(r.normals(C), [C]);
    K.layerNormBackward(dyc, xc, wc, lc.mean, lc.rstd, { dx: dxc, dw: dwc, db: dbc });
    K.layerNormBackward(dyg, xg, wg, lg.mean, lg.rstd, { dx: dxg, dw: dwg, db: dbg });
    same(t, dxc, dxg, 1e-5, `layerNormBackward dx ${tag}`);
    same(t, dwc, dwg, 1e-5, `layerNormBackward dw ${tag}`);
    same(t, dbc, dbg, 1e-5, `layerNormBackward db ${tag}`);

    same(t, K.gelu(xc), K.gelu(xg), 1e-5, `gelu ${tag}`);
    K.geluBackward(xc, dyc, dxc);
    K.geluBackward(xg, dyg, dxg);
    same(t, dxc, dxg, 1e-5, `geluBackward ${tag}`);
    same(t, K.geluErf(xc), K.geluErf(xg), 1e-5, `geluErf ${tag}`);
    K.geluErfBackward(xc, dyc, dxc);
    K.geluErfBackward(xg, dyg, dxg);
    same(t, dxc, dxg, 1e-5, `geluErfBackward ${tag}`);

    const yc = K.softmax(xc), yg = K.softmax(xg);
    same(t, yc, yg, 1e-5, `softmax ${tag}`);
    K.softmaxBackward(yc, dyc, dxc);
    K.softmaxBackward(yg, dyg, dxg);
    same(t, dxc, dxg, 1e-5, `softmaxBackward ${tag}`);

    same(t, K.axpby(xc, 0.25, dyc, -2), K.axpby(xg, 0.25, dyg, -2), 1e-5, `axpby ${tag}`);
    K.axpby(xc, 0.25, dyc, -2, { out: xc });
    K.axpby(xg, 0.25, dyg, -2, { out: xg });
    same(t, xc, xg, 1e-5, `axpby in place ${tag}`);

    for (const p of [0, 0.1, 0.5]) {
      const o = { p, seed: 1234n + BigInt(rows), offset: 7 };
      const dc = K.dropout(xc, o), dg = K.dropout(xg, o);
      same(t, dc, dg, 1e-5, `dropout p=${p} ${tag}`);
      const zc = Array.from(dc.dataSync(), (v) => v === 0), zg = Array.from(dg.dataSync(), (v) => v === 0);
      t.deepEqual(zg, zc, `dropout p=${p}: the same mask on both devices ${tag}`);
      K.dropoutBackward(dyc, dxc, o);
      K.dropoutBackward(dyg, dxg, o);
      same(t, dxc, dxg, 1e-5, `dropoutBackward p=${p} ${tag}`);
    }
  }
});

test('attention forward and backward on CUDA match the CPU: causal, padding, GQA, every precision', (t) => {
  for (const precision of ['fp32', 'tf32', 'bf16'] as Precision[]) {
    for (const [B, Hq, Hkv, Tq, Tk, D, causal] of [[1, 1, 1, 1, 1, 8, false], [2, 4, 2, 19, 19, 64, true], [2, 4, 1, 7, 37, 32, false], [1, 2, 2, 70, 70, 128, true]] as const) {
      const tag = `${precision} B=${B} Hq=${Hq} Hkv=${Hkv} Tq=${Tq} Tk=${Tk} D=${D} causal=${causal}`;
      const [qc, qg] = pair(r.normals(B * Hq * Tq * D), [B, Hq, Tq, D]);
      const [kc, kg] = pair(r.normals(B * Hkv * Tk * D), [B, Hkv, Tk, D]);
      const [vc, vg] = pair(r.normals(B * Hkv * Tk * D), [B, Hkv, Tk, D]);
      const [klc, klg] = pair(Int32Array.from({ length: B }, (_, b) => Math.max(0, Tk - 3 * b)), [B]);
      const oc = { causal, keyLengths: klc, precision }, og = { causal, keyLengths: klg, precision };
      const fc = K.attention(qc, kc, vc, oc), fg = K.attention(qg, kg, vg, og);
      same(t, fc.o, fg.o, TOL[precision], `attention o ${tag}`);
      same(t, fc.lse, fg.lse, TOL[precision], `attention lse ${tag}`);
      const [doc_, dog] = pair(r.normals(B * Hq * Tq * D), [B, Hq, Tq, D]);
      const gc = { dq: zeros(qc.shape), dk: zeros(kc.shape), dv: zeros(kc.shape) };
      const gg = { dq: zeros(qc.shape, { device: DEV }), dk: zeros(kc.shape, { device: DEV }), dv: zeros(kc.shape, { device: DEV }) };
      K.attentionBackward(qc, kc, vc, fc.o, fc.lse, doc_, gc, oc);
      K.attentionBackward(qg, kg, vg, fg.o, fg.lse, dog, gg, og);
      same(t, gc.dq, gg.dq, TOL[precision], `attentionBackward dq ${tag}`);
      same(t, gc.dk, gg.dk, TOL[precision], `attentionBackward dk ${tag}`);
      same(t, gc.dv, gg.dv, TOL[precision], `attentionBackward dv ${tag}`);
    }
  }
});

test('embedding, cross-entropy, optimizers, norms, permutations and the KV cache on CUDA match the CPU', (t) => {
  const V = 53;
  for (const [n, C] of [[1, 1], [1000, 33], [4097, 260]]) {
    const tag = `n=${n} C=${C}`;
    const [ic, ig] = pair(r.ints(n, n > 100 ? V : 5), [n]);
    const [tc, tg] = pair(r.normals(V * C), [V, C]);
    same(t, K.embedding(ic, tc), K.embedding(ig, tg), 0, `embedding ${tag}`);
    const [dc, dg] = pair(r.normals(n * C), [n, C]);
    const [gc, gg] = pair(r.normals(V * C), [V, C]);
    K.embeddingBackward(ic, dc, gc);
    K.embeddingBackward(ig, dg, gg);
    same(t, gc, gg, 0, `embeddingBackward (bit-identical: token order per row) ${tag}`);
  }
  for (const [N, Vc] of [[1, 1], [67, 7], [300, 5003]]) {
    const tag = `${N}x${Vc}`;
    const tg = Int32Array.from(r.ints(N, Vc), (v, i) => (i % 4 === 1 ? -100 : v));
    const [lc, lg] = pair(r.normals(N * Vc, 3), [N, Vc]);
    const [tcpu, tgpu] = pair(tg, [N]);
    const dlc = zeros([N, Vc]), dlg = zeros([N, Vc], { device: DEV });
    same(t, K.crossEntropy(lc, tcpu, { dlogits: dlc, gradScale: 0.5 }), K.crossEntropy(lg, tgpu, { dlogits: dlg, gradScale: 0.5 }), 1e-5, `crossEntropy loss ${tag}`);
    same(t, dlc, dlg, 1e-5, `crossEntropy dlogits ${tag}`);
    same(t, K.crossEntropy(lc, tcpu, { dlogits: lc }), K.crossEntropy(lg, tgpu, { dlogits: lg }), 1e-5, `crossEntropy in place loss ${tag}`);
    same(t, lc, lg, 1e-5, `crossEntropy in place dlogits ${tag}`);
  }
  for (const n of [1, 1000, 300007]) {
    const tag = `n=${n}`;
    const [pc, pg] = pair(r.normals(n), [n]);
    const [gc, gg] = pair(r.normals(n, 0.1), [n]);
    const [mc, mg] = pair(new Float32Array(n), [n]);
    const [vc, vg] = pair(new Float32Array(n), [n]);
    const [maskc, maskg] = pair(Float32Array.from({ length: n }, (_, i) => (i % 3 ? 1 : 0)), [n]);
    for (let step = 1; step <= 3; step++) {
      K.adamw(pc, gc, mc, vc, { lr: 1e-3, step, weightDecay: 0.1, decayMask: maskc });
      K.adamw(pg, gg, mg, vg, { lr: 1e-3, step, weightDecay: 0.1, decayMask: maskg });
    }
    same(t, pc, pg, 1e-5, `adamw param ${tag}`);
    same(t, mc, mg, 1e-5, `adamw m ${tag}`);
    same(t, vc, vg, 1e-5, `adamw v ${tag}`);
    const [bc, bg] = pair(new Float32Array(n), [n]);
    for (let step = 0; step < 3; step++) {
      K.sgd(pc, gc, bc, { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 1e-3, firstStep: step === 0 });
      K.sgd(pg, gg, bg, { lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 1e-3, firstStep: step === 0 });
    }
    same(t, pc, pg, 1e-5, `sgd param ${tag}`);
    same(t, bc, bg, 1e-5, `sgd buffer ${tag}`);
    same(t, K.sumSquares(pc), K.sumSquares(pg), 1e-6, `sumSquares ${tag}`);
    for (const maxNorm of [0.01, 1e9]) {
      same(t, K.clipGradNorm(pc, maxNorm), K.clipGradNorm(pg, maxNorm), 1e-5, `clipGradNorm norm max=${maxNorm} ${tag}`);
      same(t, pc, pg, 1e-5, `clipGradNorm values max=${maxNorm} ${tag}`);
    }
    K.scale(pc, -3);
    K.scale(pg, -3);
    same(t, pc, pg, 1e-5, `scale ${tag}`);
  }
  const [sc, sg] = pair(r.normals(2 * 7 * 3 * 16), [2, 7, 3, 16]);
  same(t, K.permute0213(sc), K.permute0213(sg), 0, 'permute0213');
  const [ac, ag] = pair(r.normals(2 * 3 * 7 * 16), [2, 3, 7, 16]);
  K.permute0213(sc, { out: ac, accumulate: true });
  K.permute0213(sg, { out: ag, accumulate: true });
  same(t, ac, ag, 1e-5, 'permute0213 accumulate');
  const [xc, xg] = pair(r.normals(2 * 5 * 48), [2, 5, 48]);
  const hc = K.splitHeads(xc, 3), hg = K.splitHeads(xg, 3);
  same(t, hc, hg, 0, 'splitHeads');
  same(t, K.mergeHeads(hc), K.mergeHeads(hg), 0, 'mergeHeads');
  const [cc, cg] = pair(r.normals(2 * 3 * 11 * 8), [2, 3, 11, 8]);
  const [kc, kg] = pair(r.normals(2 * 3 * 4 * 8), [2, 3, 4, 8]);
  K.kvAppend(cc, kc, 6);
  K.kvAppend(cg, kg, 6);
  same(t, cc, cg, 0, 'kvAppend (nothing outside the window changes)');
});

test('ids out of range on CUDA fail at the next synchronisation with the CPU error text, writing nothing', async (t) => {
  const table = tensor(r.normals(5 * 3), [5, 3]).to(DEV);
  const ids = tensor(Int32Array.from([0, 4, 5, 1]), [4]).to(DEV);
  // out is a window of a buffer: the failed op's output rejects every read, the windows beside it keep their zeros
  const buf = zeros([3, 4, 3], { device: DEV });
  const out = buf.window(12, [4, 3]);
  K.embedding(ids, table, { out });
  await t.throwsAsync(() => out.data(), { message: /embedding: token id 5 at position 2 is out of range \[0, 5\)/ });
  t.deepEqual(Array.from(await buf.window(0, [12]).data()), new Array(12).fill(0), 'nothing written before out');
  t.deepEqual(Array.from(await buf.window(24, [12]).data()), new Array(12).fill(0), 'nothing written after out');
  const logits = tensor(r.normals(3 * 4), [3, 4]).to(DEV);
  const targets = tensor(Int32Array.from([1, -100, 7]), [3]).to(DEV);
  const loss = K.crossEntropy(logits, targets);
  await t.throwsAsync(() => loss.data(), { message: /cross_entropy: target 7 at row 2 is out of range \[0, 4\) and is not ignore_index \(-100\)/ });
  const okTargets = tensor(Int32Array.from([1, -100, 3]), [3]).to(DEV);
  t.true(Number.isFinite((await K.crossEntropy(logits, okTargets).data())[0]), 'the device works after the error');
  await synchronize().catch(() => undefined);
});

// Ids uploaded from the host are checked on the host from the bounds the upload noted; ids a kernel wrote (a device
// copy, into the whole tensor or into a window of an uploaded one) must still be checked on the device.
test('ids written on the device (a copy from another CUDA tensor) are still checked, with the CPU error text', async (t) => {
  const table = tensor(r.normals(5 * 3), [5, 3]).to(DEV);
  const ids = tensor(Int32Array.from([0, 1, 2, 3]), [4], { device: DEV });
  t.is((await K.embedding(ids, table).data()).length, 12, 'valid uploaded ids');
  native().copyInto(ids.window(1, [2]).handle, tensor(Int32Array.from([0, 9]), [2], { device: DEV }).handle);
  await t.throwsAsync(() => K.embedding(ids, table).data(), { message: /embeddingForward \(cuda:0 stream\): embedding: token id 9 at position 2 is out of range \[0, 5\)$/ });
  const dst = zeros([3], { dtype: 'int32', device: DEV });
  native().copyInto(dst.handle, tensor(Int32Array.from([-100, 1, 6]), [3], { device: DEV }).handle);
  await t.throwsAsync(() => K.crossEntropy(tensor(r.normals(3 * 4), [3, 4]).to(DEV), dst).data(), {
    message: /crossEntropy \(cuda:0 stream\): cross_entropy: target 6 at row 2 is out of range \[0, 4\) and is not ignore_index \(-100\)$/,
  });
  await synchronize().catch(() => undefined);
});

test('ops refuse tensors on different devices, naming the op, both arguments and both devices', (t) => {
  const c = tensor(r.normals(4 * 4), [4, 4]);
  const g = c.to(DEV);
  const msg = (op: string, a: string, da: string, b: string, db: string) =>
    new RegExp(`^${op}: all tensors of one call must be on the same device, but ${a.replace(/[[\]]/g, '\\$&')} is on ${da} and ${b.replace(/[[\]]/g, '\\$&')} is on ${db}`);
  throwsExactly(t, () => K.matmul(c, g), TypeError, msg('matmul', 'a', 'cpu', 'b', DEV), 'matmul');
  throwsExactly(t, () => K.matmul(g, g, { out: zeros([4, 4]) }), TypeError, msg('matmul', 'a', DEV, 'out', 'cpu'), 'matmul out');
  throwsExactly(t, () => K.axpby(g, 1, c, 1), TypeError, msg('axpby', 'a', DEV, 'b', 'cpu'), 'axpby');
  throwsExactly(t, () => K.layerNorm(g, c.window(0, [4]), g.window(0, [4])), TypeError, msg('layernormForward', 'x', DEV, 'w', 'cpu'), 'layerNorm');
  throwsExactly(t, () => K.embedding(tensor(Int32Array.from([0]), [1]), g), TypeError, msg('embeddingForward', 'ids', 'cpu', 'table', DEV), 'embedding');
  throwsExactly(t, () => K.adamw(g.window(0, [16]), c.window(0, [16]), g.clone().window(0, [16]), g.clone().window(0, [16]), { lr: 1, step: 1 }), TypeError, msg('adamw', 'param', DEV, 'grad', 'cpu'), 'adamw');
  const q = tensor(r.normals(16), [1, 1, 2, 8]);
  throwsExactly(t, () => K.attention(q.to(DEV), q.to(DEV), q.to(DEV), { keyLengths: tensor(Int32Array.from([2]), [1]) }), TypeError,
    msg('attentionForward', 'q', DEV, 'option keyLengths', 'cpu'), 'attention keyLengths');
  throwsExactly(t, () => K.persistL2([g, c]), TypeError, msg('persistL2', 'tensors[0]', DEV, 'tensors[1]', 'cpu'), 'persistL2');
});

// ---- the model on CUDA -----------------------------------------------------------------------------------------------

const cfg: DecoderConfig = { vocab: 37, dModel: 32, heads: 4, kvHeads: 2, dFF: 48, layers: 4, maxSeq: 16, seed: 11, sharing: { strategy: 'all' } };

function batch(B: number, T: number): { ids: Int32Array; targets: Int32Array } {
  return { ids: r.ints(B * T, cfg.vocab), targets: Int32Array.from(r.ints(B * T, cfg.vocab), (v, i) => (i % 7 === 3 ? -100 : v)) };
}

function trainStep(m: Decoder, opt: AdamW, ids: Int32Array, targets: Int32Array, B: number, T: number, precision: Precision): { loss: number; norm: number } {
  const dev = m.store.device;
  const idt = tensor(ids, [B, T], { device: dev }), tgt = tensor(targets, [B, T], { device: dev });
  m.zeroGrad();
  const loss = ops.withPrecision(precision, () => m.loss(idt, tgt));
  backward(loss);
  const norm = clipGradNorm(m.store, 0.5);
  opt.update();
  const out = { loss: loss.dataSync()[0], norm: norm.dataSync()[0] };
  loss.dispose();
  norm.dispose();
  return out;
}

test("model.to('cuda') moves the one parameter buffer and its gradients; a shared-decoder training step on CUDA matches the CPU", (t) => {
  const B = 3, T = 13;
  const cpu = new Decoder(cfg);
  const gpu = new Decoder(cfg).to(DEV);
  t.is(gpu.store.values.device, DEV);
  t.is(gpu.store.grads.device, DEV);
  t.is(gpu.store.decayMask.device, DEV);
  for (const p of gpu.store.parameters) {
    t.true(p.value.sharesStorageWith(gpu.store.values), `${p.name} is a window of the flat buffer on ${DEV}`);
    t.true(p.grad.sharesStorageWith(gpu.store.grads), `${p.name}'s gradient is a window of the flat gradient buffer`);
  }
  same(t, cpu.store.values, gpu.store.values, 0, 'the same initial parameters');
  // eps 1e-4 keeps Adam's update smooth in the gradient: with eps 1e-8, a gradient within ~1e-8 of 0 (where fp32
  // summation order decides the last bits) would turn a 1e-5 relative difference into a visible parameter difference.
  const ac = { lr: 3e-3, weightDecay: 0.1, eps: 1e-4 };
  const oc = new AdamW(cpu.store, ac), og = new AdamW(gpu.store, ac);
  t.is(og.m.device, DEV, 'AdamW state on the device');
  for (let s = 0; s < 3; s++) {
    const { ids, targets } = batch(B, T);
    const lc = trainStep(cpu, oc, ids, targets, B, T, 'fp32'), lg = trainStep(gpu, og, ids, targets, B, T, 'fp32');
    assertClose(t, [lg.loss], [lc.loss], { rel: 1e-4, what: `step ${s}: loss on CUDA (got) vs the CPU (want)` });
    assertClose(t, [lg.norm], [lc.norm], { rel: 1e-4, what: `step ${s}: gradient norm on CUDA (got) vs the CPU (want)` });
  }
  same(t, cpu.store.values, gpu.store.values, 1e-4, 'parameters after 3 steps');
  const back = gpu.to('cpu');
  t.is(back.store.values.device, 'cpu', "model.to('cpu') brings the buffer back");
  cpu.store.dispose();
  gpu.store.dispose();
  oc.dispose();
  og.dispose();
});

test('decoding on CUDA: the replayed step (a tensor position for kvAppend) gives the step-by-step logits bit for bit, close to the CPU', async (t) => {
  const cpu = new Decoder(cfg);
  const gpu = new Decoder(cfg).to(DEV);
  const V = cfg.vocab;
  const rows = async (m: Decoder, replay: boolean) => {
    const s = new DecodeSession(m, 12, undefined, { replay });
    const out: Float32Array[] = [];
    try {
      let l = s.prefill([1, 2, 3]);
      for (let i = 0; i < 8; i++) {
        out.push((await l.data()) as Float32Array);
        l.dispose();
        l = s.step((i * 7 + 2) % V);
      }
      out.push((await l.data()) as Float32Array);
      l.dispose();
    } finally {
      s.dispose();
    }
    return out;
  };
  const replayed = await rows(gpu, true), stepped = await rows(gpu, false), onCpu = await rows(cpu, true);
  replayed.forEach((row, i) => {
    t.deepEqual(Array.from(row), Array.from(stepped[i]), `step ${i}: replayed = step by step on ${DEV}, bit for bit`);
    assertClose(t, row, onCpu[i], { rel: 1e-4, abs: 1e-4, what: `step ${i}: ${DEV} against the CPU` });
  });
  cpu.store.dispose();
  gpu.store.dispose();
});

test('bf16 and tf32 training steps on CUDA stay close to the fp32 CPU step (fp32 master weights)', (t) => {
  const B = 2, T = 16;
  for (const precision of ['tf32', 'bf16'] as Precision[]) {
    const cpu = new Decoder(cfg);
    const gpu = new Decoder(cfg).to(DEV);
    const oc = new AdamW(cpu.store, { lr: 1e-3, eps: 1e-4 }), og = new AdamW(gpu.store, { lr: 1e-3, eps: 1e-4 });
    const { ids, targets } = batch(B, T);
    const lc = trainStep(cpu, oc, ids, targets, B, T, 'fp32'), lg = trainStep(gpu, og, ids, targets, B, T, precision);
    assertClose(t, [lg.loss], [lc.loss], { rel: TOL[precision], what: `${precision}: loss on CUDA (got) vs the CPU (want)` });
    t.is(gpu.store.values.dtype, 'float32', 'master weights stay fp32');
    cpu.store.dispose();
    gpu.store.dispose();
    oc.dispose();
    og.dispose();
  }
});

test('the bf16 copy on CUDA: a current copy read by the bf16 GEMM gives the bits of converting the weight; a stale one is not read', (t) => {
  const cur = (x: Tensor, c: Tensor) => K.bf16CopyCurrent(x, c).dataSync()[0];
  const nat = native() as unknown as { fillInto: (h: unknown, v: number) => void };
  const [w0, w] = pair(r.normals(72 * 40), [72, 40]);
  const [x0, x] = pair(r.normals(3 * 24 * 40), [3, 24, 40]);
  const g = zeros([72, 40], { device: DEV }), m = zeros([72, 40], { device: DEV }), v = zeros([72, 40], { device: DEV });
  const c = zeros([72, 40], { device: DEV, dtype: 'bfloat16' });
  t.is(cur(w, c), 0, 'a new copy mirrors nothing');
  // lr 0 and no decay: the values keep their bits, and the copy is written with them
  K.adamw(w, g, m, v, { lr: 0, weightDecay: 0, step: 1, bf16Copy: c });
  t.is(cur(w, c), 1, 'current after the AdamW step that wrote it');
  const want = Array.from(K.matmul(x, w, { transB: true, precision: 'bf16' }).dataSync());
  t.deepEqual(Array.from(K.matmul(x, w, { transB: true, precision: 'bf16', bBf16: c }).dataSync()), want, 'forward (x W^T): the same bits');
  const [gy0, gy] = pair(r.normals(3 * 24 * 72), [3, 24, 72]);
  const wantDx = Array.from(K.matmul(gy, w, { precision: 'bf16' }).dataSync());
  t.deepEqual(Array.from(K.matmul(gy, w, { precision: 'bf16', bBf16: c }).dataSync()), wantDx, 'backward dX (dY W): the same bits');
  nat.fillInto(c.handle, 0); // a write to the copy: stale, so the GEMM converts W again (a zero copy read would show)
  t.is(cur(w, c), 0);
  t.deepEqual(Array.from(K.matmul(x, w, { transB: true, precision: 'bf16', bBf16: c }).dataSync()), want, 'a stale copy is not read');
  K.adamw(w, g, m, v, { lr: 0, weightDecay: 0, step: 2, bf16Copy: c });
  nat.fillInto(w.window(0, [1]).handle, 5); // a write to the weight: the copy no longer mirrors it
  t.is(cur(w, c), 0);
  t.deepEqual(Array.from(K.matmul(x, w, { transB: true, precision: 'bf16', bBf16: c }).dataSync()),
    Array.from(K.matmul(x, w, { transB: true, precision: 'bf16' }).dataSync()), 'the weight changed: converted from fp32');
  // a model with the store's copy (enabled by hand here; the Trainer does it for bf16 on CUDA): training steps match
  // those without it (the GEMMs give the same bits; the tolerance is the other kernels' run-to-run freedom)
  const B = 2, T = 16;
  const a = new Decoder(cfg).to(DEV), b = new Decoder(cfg).to(DEV);
  a.store.enableBf16Copy();
  t.is(a.store.bf16Copy!.device, DEV);
  const oa = new AdamW(a.store, { lr: 1e-3, eps: 1e-4 }), ob = new AdamW(b.store, { lr: 1e-3, eps: 1e-4 });
  for (let s = 0; s < 3; s++) {
    const { ids, targets } = batch(B, T);
    const la = trainStep(a, oa, ids, targets, B, T, 'bf16'), lb = trainStep(b, ob, ids, targets, B, T, 'bf16');
    assertClose(t, [la.loss], [lb.loss], { rel: 1e-5, what: `step ${s}: loss with the copy (got), without (want)` });
    t.is(cur(a.store.values, a.store.bf16Copy!), 1, `step ${s}: the copy is current after the step`);
  }
  const wantValues = b.store.values.dataSync();
  assertClose(t, a.store.values.dataSync(), wantValues, { rel: 1e-4, abs: 1e-4 * meanAbs(wantValues), what: `parameters after 3 steps (seed ${SEED})` });
  for (const z of [w0, w, x0, x, g, m, v, c, gy0, gy]) z.dispose();
  a.store.dispose();
  b.store.dispose();
  oa.dispose();
  ob.dispose();
});

test('persistL2: a window on CUDA tensors (the stack sets one for runs of a shared block), a no-op on the CPU', (t) => {
  const g = zeros([1 << 16], { device: DEV });
  t.true(K.persistL2(g), 'a window was asked for on the device');
  t.true(K.persistL2([g.window(10, [10]), g.window(0, [10])]), 'adjacent windows of one buffer: one range');
  throwsExactly(t, () => K.persistL2([g.window(0, [10]), g.window(1000, [10])]), RangeError,
    /^persistL2: the tensors do not cover one contiguous range of their buffer: bytes \[40, 4000\) between tensors\[0\] and tensors\[1\] belong to none of them/, 'a gap');
  t.true(K.persistL2(null), 'the window was ended');
  t.false(K.persistL2(zeros([4])), 'CPU tensors: nothing to do');
  throwsExactly(t, () => K.persistL2([g, zeros([4], { device: DEV })]), RangeError, /^persistL2: tensors\[1\] is not in the storage of tensors\[0\]/, 'two buffers');
  // Best effort: whether the window is in effect depends on the GPU (none under MIG; MPS may refuse the set-aside),
  // and backends() says which, and why not.
  const l2 = backends().cuda.devices[0].persistingL2;
  if (l2.active) {
    t.true(l2.windows >= 2, 'two windows were set');
    t.true(l2.setAsideBytes > 0 && l2.setAsideBytes <= l2.maxSetAsideBytes || l2.note !== undefined, 'the set-aside, set once');
    t.is(l2.window, 'demoting', 'ended: a normal window over the same bytes demotes the lines');
    t.true(l2.lastHitRatio > 0 && l2.lastHitRatio <= 1);
  } else {
    t.log(`persisting L2 is not in effect on ${DEV}: ${l2.reason}`);
    t.regex(l2.reason ?? '', /\S/, 'inactive, with the reason');
  }
  t.true(K.persistL2(null), 'a second end clears the window');
  t.is(backends().cuda.devices[0].persistingL2.window, 'none');
  // a model whose layers all apply one block: the forward pass with the window matches the CPU's
  const cpu = new Decoder(cfg), gpu = new Decoder(cfg).to(DEV);
  const { ids } = batch(2, 9);
  const lc = noGrad(() => cpu.forward(tensor(ids, [2, 9]))), lg = noGrad(() => gpu.forward(tensor(ids, [2, 9], { device: DEV })));
  same(t, lc, lg, 1e-5, 'logits of the shared stack');
  t.regex(gpu.summary(), l2.active ? /persisting L2 +active on cuda:0 \(set-aside/ : /persisting L2 +inactive on cuda:0: \S/, "the model's summary says so");
  t.regex(cpu.summary(), /persisting L2 +not used \(the model is on the CPU/);
  cpu.store.dispose();
  gpu.store.dispose();
});

// ---- on every machine: precision on the CPU, and the option checks ------------------------------------------------

anyTest.serial('on the CPU every precision computes in fp32: matmul, attention and a whole withPrecision step are identical', (t) => {
  const a = tensor(r.normals(5 * 7), [5, 7]), b = tensor(r.normals(7 * 3), [7, 3]);
  const want = Array.from(K.matmul(a, b).dataSync());
  for (const precision of ['tf32', 'bf16'] as Precision[]) t.deepEqual(Array.from(K.matmul(a, b, { precision }).dataSync()), want, `matmul ${precision}`);
  const q = tensor(r.normals(2 * 2 * 5 * 8), [2, 2, 5, 8]);
  const o32 = Array.from(K.attention(q, q, q, { causal: true }).o.dataSync());
  t.deepEqual(Array.from(K.attention(q, q, q, { causal: true, precision: 'bf16' }).o.dataSync()), o32, 'attention bf16');
  const m = new Decoder(cfg);
  const { ids, targets } = batch(2, 6);
  const idt = tensor(ids, [2, 6]), tgt = tensor(targets, [2, 6]);
  const losses = (['fp32', 'bf16'] as Precision[]).map((p) => {
    m.zeroGrad();
    const l = ops.withPrecision(p, () => m.loss(idt, tgt));
    t.is(ops.currentPrecision(), 'fp32', 'the scope ends with the function');
    backward(l);
    const v = l.dataSync()[0];
    l.dispose();
    return { v, g: Array.from(m.store.grads.dataSync()) };
  });
  t.is(losses[1].v, losses[0].v, 'the same loss');
  t.deepEqual(losses[1].g, losses[0].g, 'the same gradients');
  m.store.dispose();
});

anyTest.serial('a bad precision is refused naming the op and the value; persistL2 of CPU tensors does nothing', (t) => {
  const a = tensor(r.normals(4), [2, 2]);
  throwsExactly(t, () => K.matmul(a, a, { precision: 'fp16' as Precision }), TypeError, /^matmul: option precision must be one of 'fp32', 'tf32', 'bf16', got 'fp16'$/, 'matmul');
  const q = tensor(r.normals(8), [1, 1, 1, 8]);
  throwsExactly(t, () => K.attention(q, q, q, { precision: 'half' as Precision }), TypeError, /^attentionForward: option precision must be one of 'fp32', 'tf32', 'bf16', got 'half'$/, 'attention');
  throwsExactly(t, () => ops.withPrecision('fp64' as Precision, () => 0), TypeError, /^withPrecision: precision must be one of 'fp32', 'tf32', 'bf16', got fp64$/, 'withPrecision');
  t.false(K.persistL2(a), 'a CPU tensor: no window');
  t.false(K.persistL2([a.window(1, [3]), a.window(0, [1])]), 'CPU tensors: no window');
  t.false(K.persistL2([a.window(0, [0])]), 'empty: no window');
  // a window covers exactly the bytes passed: a gap is refused on every device, so a CPU run finds it too
  throwsExactly(t, () => K.persistL2([a.window(0, [1]), a.window(2, [2])]), RangeError,
    /^persistL2: the tensors do not cover one contiguous range of their buffer: bytes \[4, 8\) between tensors\[0\] and tensors\[1\] belong to none of them; a window covers exactly the bytes passed/, 'a gap');
  throwsExactly(t, () => K.persistL2([a, tensor(r.normals(2), [2])]), RangeError, /^persistL2: tensors\[1\] is not in the storage of tensors\[0\]/, 'two buffers');
  throwsExactly(t, () => K.persistL2(3 as never), TypeError, /^persistL2: t must be a Tensor, got 3$/, 'not a tensor');
});
