// convertSharing (lib/sharing/convert.ts): blocks are the means of the layers that map to them, 'delta' layers are
// the shared mean plus the truncated SVD of each layer's difference (full rank: the original layer again), the
// conversion report measures it; truncatedSvd against the eigen-decomposition of the whole Gram matrix (Eckart–Young)
// and against matrices of known rank; errors for what is not converted.
import anyTest from 'ava';
import { Decoder } from '../lib/models/decoder.ts';
import { convertSharing, symmetricEigen, truncatedSvd } from '../lib/sharing/convert.ts';
import { tensor } from '../lib/tensor.ts';

const test = anyTest.serial;
const dims = { vocab: 23, dModel: 12, heads: 3, dFF: 20, layers: 4, maxSeq: 10 };

function rng(seed: number) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32) * 2 - 1;
}
const values = (m: Decoder) => new Map(m.parameters().map((p) => [p.name, p.value.dataSync() as Float32Array]));
function logits(m: Decoder): Float32Array {
  const ids = tensor(Int32Array.from({ length: 20 }, (_, i) => (i * 7) % 23), [2, 10]);
  const y = m.forward(ids);
  const out = y.dataSync() as Float32Array;
  ids.dispose();
  y.dispose();
  return out;
}
/** A source model whose layers really differ (the default initialisation gives every layer the same scale only). */
function source(seed = 5): Decoder {
  const m = new Decoder({ ...dims, sharing: { strategy: 'none' }, seed });
  const r = rng(seed);
  const sd: Record<string, ReturnType<typeof tensor>> = {};
  for (const p of m.parameters()) sd[p.name] = tensor(Float32Array.from({ length: p.value.size }, () => 0.3 * r()), p.shape);
  m.loadStateDict(sd);
  for (const t of Object.values(sd)) t.dispose();
  return m;
}

test('truncatedSvd: exact on a matrix of rank r; the residual of a full-rank one is the sum of the dropped eigenvalues of AᵀA', (t) => {
  const r = rng(1);
  const [m, n] = [9, 7];
  const x = Float64Array.from({ length: m * 3 }, r), y = Float64Array.from({ length: 3 * n }, r);
  const a = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) for (let k = 0; k < 3; k++) a[i * n + j] += x[i * 3 + k] * y[k * n + j];
  const { u, s, v } = truncatedSvd(a, m, n, 3);
  let worst = 0;
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let k = 0; k < 3; k++) acc += u[i * 3 + k] * s[k] * v[j * 3 + k];
      worst = Math.max(worst, Math.abs(acc - a[i * n + j]));
    }
  t.true(worst < 1e-9, `rank-3 reconstruction error ${worst}`);
  t.true(s[0] >= s[1] && s[1] >= s[2]);

  const [M, N, R] = [14, 10, 4];
  const b = Float64Array.from({ length: M * N }, r);
  const svd = truncatedSvd(b, M, N, R);
  const g = new Float64Array(N * N);
  for (let i = 0; i < M; i++) for (let p = 0; p < N; p++) for (let q = 0; q < N; q++) g[p * N + q] += b[i * N + p] * b[i * N + q];
  const eig = [...symmetricEigen(g, N).values].sort((p, q) => q - p);
  for (let k = 0; k < R; k++) t.true(Math.abs(svd.s[k] ** 2 - eig[k]) < 1e-8 * eig[0], `sigma_${k}^2 ${svd.s[k] ** 2} vs eigenvalue ${eig[k]}`);
  let resid = 0;
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      let acc = 0;
      for (let k = 0; k < R; k++) acc += svd.u[i * R + k] * svd.s[k] * svd.v[j * R + k];
      resid += (acc - b[i * N + j]) ** 2;
    }
  const dropped = eig.slice(R).reduce((p, q) => p + q, 0);
  t.true(Math.abs(resid - dropped) < 1e-8 * dropped, `residual ${resid} vs dropped eigenvalues ${dropped}`);
  // U and V have orthonormal columns.
  for (let p = 0; p < R; p++)
    for (let q = 0; q < R; q++) {
      let du = 0, dv = 0;
      for (let i = 0; i < M; i++) du += svd.u[i * R + p] * svd.u[i * R + q];
      for (let j = 0; j < N; j++) dv += svd.v[j * R + p] * svd.v[j * R + q];
      t.true(Math.abs(du - (p === q ? 1 : 0)) < 1e-9 && Math.abs(dv - (p === q ? 1 : 0)) < 1e-9);
    }
  t.throws(() => truncatedSvd(b, M, N, 11), { message: /rank 11 must be an integer in \[1, min\(14, 10\)\]/ });
});

test('none -> all and none -> cycle: each block is the mean of the layers that map to it; the rest is copied', (t) => {
  const src = source();
  const sv = values(src);
  try {
    for (const sharing of [{ strategy: 'all' as const }, { strategy: 'cycle' as const, unique: 2 }]) {
      const { model, report } = convertSharing(src, sharing);
      try {
        const v = values(model);
        const groups = sharing.strategy === 'all' ? [[0, 1, 2, 3]] : [[0, 2], [1, 3]];
        groups.forEach((layers, b) => {
          for (const name of ['attn.B.wq.weight', 'attn.B.ln.bias', 'ffn.B.fc2.weight', 'ffn.B.fc1.bias']) {
            const got = v.get(name.replace('B', String(b)))!;
            const want = got.map((_, i) => layers.reduce((acc, l) => acc + sv.get(name.replace('B', String(l)))![i], 0) / layers.length);
            for (let i = 0; i < got.length; i++) t.true(Math.abs(got[i] - want[i]) < 1e-6, `${sharing.strategy} ${name} block ${b}`);
          }
        });
        t.deepEqual(v.get('tok.weight'), sv.get('tok.weight'));
        t.deepEqual(v.get('ln_f.weight'), sv.get('ln_f.weight'));
        t.is(report.relativeError.length, 4 * 6);
        t.true(report.meanRelativeError > 0.3, `the layers differ: mean error ${report.meanRelativeError}`);
      } finally {
        model.store.dispose();
      }
    }
    // none -> none: the same model, bit for bit.
    const same = convertSharing(src, { strategy: 'none' });
    t.deepEqual(logits(same.model), logits(src));
    t.is(same.report.meanRelativeError, 0);
    same.model.store.dispose();
  } finally {
    src.store.dispose();
  }
});

/** A source whose layers differ from a common matrix by rank 1 each: the differences to their mean have rank <= 4. */
function lowRankSource(seed: number): Decoder {
  const m = source(seed);
  const r = rng(seed + 100);
  const sd: Record<string, ReturnType<typeof tensor>> = {};
  const common = new Map<string, Float32Array>();
  for (const p of m.parameters()) {
    const role = p.name.match(/^(attn|ffn)\.\d+\.(wq|wk|wv|wo|fc1|fc2)\.weight$/);
    let data = p.value.dataSync() as Float32Array;
    if (role) {
      const key = `${role[1]}.${role[2]}`;
      if (!common.has(key)) common.set(key, data.slice());
      const [rows, cols] = p.shape;
      const x = Float32Array.from({ length: rows }, r), y = Float32Array.from({ length: cols }, r);
      data = common.get(key)!.map((c, i) => c + 0.5 * x[Math.floor(i / cols)] * y[i % cols]);
    }
    sd[p.name] = tensor(data, p.shape);
  }
  m.loadStateDict(sd);
  for (const t of Object.values(sd)) t.dispose();
  return m;
}

test("none -> delta: the shared mean plus each layer's truncated SVD; exact at the differences' rank, error falls with rank", (t) => {
  const src = lowRankSource(7);
  try {
    const errors: number[] = [];
    for (const rank of [1, 2, 4]) {
      const { model, report } = convertSharing(src, { strategy: 'delta', rank });
      errors.push(report.meanRelativeError);
      if (rank === 4) {
        const a = logits(model), b = logits(src);
        let worst = 0;
        for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
        t.true(worst < 1e-4, `rank-4 delta logits differ by ${worst}`);
        const v = values(model), sv = values(src);
        t.deepEqual(v.get('attn.2.ln.weight'), sv.get('attn.2.ln.weight'));
        t.deepEqual(v.get('ffn.1.fc1.bias'), sv.get('ffn.1.fc1.bias'));
      }
      model.store.dispose();
    }
    t.true(errors[0] > errors[1] && errors[1] > errors[2], `errors ${errors}`);
    t.true(errors[2] < 1e-5, `rank 4 covers the differences: error ${errors[2]}`);
  } finally {
    src.store.dispose();
  }
});

test('convertSharing refuses what it does not convert', (t) => {
  const src = source();
  const delta = new Decoder({ ...dims, sharing: { strategy: 'delta', rank: 2 } });
  try {
    t.throws(() => convertSharing(src, { strategy: 'basis', rank: 2 }), { message: /'basis' is not a conversion target/ });
    t.throws(() => convertSharing(src, { strategy: 'none', kvShareGroup: 2 }), { message: /kvShareGroup/ });
    t.throws(() => convertSharing(delta, { strategy: 'all' }), { message: /source model's layers are 'delta' layers/ });
    t.throws(() => convertSharing({} as never, { strategy: 'all' }), { message: /model must be a Decoder/ });
    t.throws(() => convertSharing(src, { strategy: 'cycle', unique: 9 }), { instanceOf: RangeError });
  } finally {
    src.store.dispose();
    delta.store.dispose();
  }
});
