// convert.ts — a shared model initialised from an unshared (or differently shared) one: the layers that map to one
// block of the new plan are averaged into it; with the 'delta' strategy (one shared block for every layer plus a
// rank-r delta per layer, Relaxed Recursive Transformers, Bae et al. 2024) each layer's delta is the truncated SVD of
// its difference to the shared block, so the converted layer is the best rank-r approximation of the original one
// (Eckart–Young). Per-layer parameters of the new plan (LayerNorms and biases under 'delta') are copied exactly.
import { Decoder, type DecoderConfig } from '../models/decoder.ts';
import { tensor, type Tensor } from '../tensor.ts';
import { describe } from '../validate.ts';
import type { SharingConfig } from './plan.ts';

/** What convertSharing measured: how far each converted layer is from the original one. */
export interface ConversionReport {
  /** For every converted weight matrix of every layer: ‖W_new − W_old‖_F / ‖W_old‖_F. */
  relativeError: { layer: number; name: string; error: number }[];
  /** The mean of relativeError. */
  meanRelativeError: number;
}

/**
 * The top-`r` singular triplets of the (m x n) row-major matrix `a` by subspace iteration on AᵀA with a Rayleigh–Ritz
 * step (float64): U (m x r, row-major), s (r, descending), V (n x r, row-major), so that A ≈ U diag(s) Vᵀ. Stops when
 * the singular values change by less than `tol` relative, or after `maxIter` iterations. Seeded: the same input gives
 * the same result.
 */
export function truncatedSvd(a: Float64Array, m: number, n: number, r: number, options: { maxIter?: number; tol?: number; seed?: number } = {}): { u: Float64Array; s: Float64Array; v: Float64Array } {
  if (!Number.isInteger(m) || !Number.isInteger(n) || m < 1 || n < 1 || a.length !== m * n) throw new RangeError(`truncatedSvd: a has ${a.length} elements, not ${m} x ${n}`);
  if (!Number.isInteger(r) || r < 1 || r > Math.min(m, n)) throw new RangeError(`truncatedSvd: rank ${r} must be an integer in [1, min(${m}, ${n})]`);
  const maxIter = options.maxIter ?? 300, tol = options.tol ?? 1e-12;
  // V: n x r, random (a small LCG: deterministic), orthonormalised.
  let state = (options.seed ?? 1) >>> 0 || 1;
  const rand = () => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) / 2 ** 32) - 0.5;
  let v: Float64Array = new Float64Array(n * r);
  for (let i = 0; i < v.length; i++) v[i] = rand();
  orthonormalize(v, n, r);
  const av = new Float64Array(m * r);
  let s: Float64Array = new Float64Array(r), prev: Float64Array = new Float64Array(r).fill(-1);
  for (let it = 0; it < maxIter; it++) {
    matmul(a, v, av, m, n, r); // A V
    const z = new Float64Array(n * r);
    matmulT(a, av, z, m, n, r); // Aᵀ (A V)
    orthonormalize(z, n, r);
    v = z;
    // Rayleigh–Ritz: B = A V (m x r); BᵀB = W Λ Wᵀ; singular values sqrt(Λ).
    matmul(a, v, av, m, n, r);
    s = ritzValues(av, m, r);
    let change = 0;
    for (let k = 0; k < r; k++) change = Math.max(change, Math.abs(s[k] - prev[k]) / Math.max(s[0], 1e-300));
    prev = s;
    if (change < tol) break;
  }
  matmul(a, v, av, m, n, r);
  const { values, vectors } = symmetricEigen(gram(av, m, r), r);
  // Descending order.
  const order = [...values.keys()].sort((x, y) => values[y] - values[x]);
  const u = new Float64Array(m * r), vOut = new Float64Array(n * r), sOut = new Float64Array(r);
  order.forEach((k, j) => {
    const sigma = Math.sqrt(Math.max(values[k], 0));
    sOut[j] = sigma;
    for (let i = 0; i < n; i++) {
      let acc = 0;
      for (let q = 0; q < r; q++) acc += v[i * r + q] * vectors[q * r + k];
      vOut[i * r + j] = acc;
    }
    for (let i = 0; i < m; i++) {
      let acc = 0;
      for (let q = 0; q < r; q++) acc += av[i * r + q] * vectors[q * r + k];
      u[i * r + j] = sigma > 0 ? acc / sigma : 0;
    }
  });
  return { u, s: sOut, v: vOut };
}

// c (m x r) = a (m x n) b (n x r)
function matmul(a: Float64Array, b: Float64Array, c: Float64Array, m: number, n: number, r: number): void {
  c.fill(0);
  for (let i = 0; i < m; i++)
    for (let k = 0; k < n; k++) {
      const x = a[i * n + k];
      if (x === 0) continue;
      for (let j = 0; j < r; j++) c[i * r + j] += x * b[k * r + j];
    }
}

// c (n x r) = aᵀ (n x m) b (m x r)
function matmulT(a: Float64Array, b: Float64Array, c: Float64Array, m: number, n: number, r: number): void {
  c.fill(0);
  for (let i = 0; i < m; i++)
    for (let k = 0; k < n; k++) {
      const x = a[i * n + k];
      if (x === 0) continue;
      for (let j = 0; j < r; j++) c[k * r + j] += x * b[i * r + j];
    }
}

// Modified Gram–Schmidt on the r columns of x (n x r, row-major); a column that vanishes becomes zero.
function orthonormalize(x: Float64Array, n: number, r: number): void {
  for (let j = 0; j < r; j++) {
    for (let q = 0; q < j; q++) {
      let d = 0;
      for (let i = 0; i < n; i++) d += x[i * r + j] * x[i * r + q];
      for (let i = 0; i < n; i++) x[i * r + j] -= d * x[i * r + q];
    }
    let norm = 0;
    for (let i = 0; i < n; i++) norm += x[i * r + j] ** 2;
    norm = Math.sqrt(norm);
    for (let i = 0; i < n; i++) x[i * r + j] = norm > 1e-300 ? x[i * r + j] / norm : 0;
  }
}

function gram(b: Float64Array, m: number, r: number): Float64Array {
  const g = new Float64Array(r * r);
  for (let i = 0; i < m; i++)
    for (let p = 0; p < r; p++) for (let q = 0; q < r; q++) g[p * r + q] += b[i * r + p] * b[i * r + q];
  return g;
}

function ritzValues(b: Float64Array, m: number, r: number): Float64Array {
  const { values } = symmetricEigen(gram(b, m, r), r);
  return Float64Array.from([...values].sort((x, y) => y - x).map((x) => Math.sqrt(Math.max(x, 0))));
}

/** Eigenvalues and eigenvectors (columns of `vectors`, row-major n x n) of a symmetric matrix, by cyclic Jacobi rotations. */
export function symmetricEigen(s: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(s), v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0, diag = 0;
    for (let p = 0; p < n; p++) {
      diag += a[p * n + p] ** 2;
      for (let q = p + 1; q < n; q++) off += a[p * n + q] ** 2;
    }
    if (off <= 1e-30 * Math.max(diag, 1e-300)) break;
    for (let p = 0; p < n; p++)
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1), sn = t * c;
        for (let k = 0; k < n; k++) {
          const akp = a[k * n + p], akq = a[k * n + q];
          a[k * n + p] = c * akp - sn * akq;
          a[k * n + q] = sn * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k], aqk = a[q * n + k];
          a[p * n + k] = c * apk - sn * aqk;
          a[q * n + k] = sn * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p], vkq = v[k * n + q];
          v[k * n + p] = c * vkp - sn * vkq;
          v[k * n + q] = sn * vkp + c * vkq;
        }
      }
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = a[i * n + i];
  return { values, vectors: v };
}

const ROLES = { attn: ['wq', 'wk', 'wv', 'wo'], ffn: ['fc1', 'fc2'] } as const;

/**
 * A new Decoder with the same dimensions as `model` and the sharing plan `sharing`, initialised from `model`'s
 * weights: every block of the new plan is the mean of the source layers that map to it (their LayerNorms and biases
 * too); with `{strategy: 'delta', rank}` the shared matrices are the means over all layers and each layer's low-rank
 * delta (up · down) is the rank-`rank` truncated SVD of its difference to them (up = U√Σ, down = √Σ Vᵀ), its LayerNorms
 * and biases copied. Embeddings and the final LayerNorm are copied. The source model is not changed; the new model
 * lives on the same device. The source may be shared itself (its layers are read through its plan), but not
 * 'basis'/'delta' and without cross-layer K/V sharing; the target may be any block strategy or 'delta'.
 */
export function convertSharing(model: Decoder, sharing: Partial<SharingConfig>, options: { seed?: number } = {}): { model: Decoder; report: ConversionReport } {
  const who = 'convertSharing';
  if (!(model instanceof Decoder)) throw new TypeError(`${who}: model must be a Decoder, got ${describe(model)}`);
  if (sharing === null || typeof sharing !== 'object') throw new TypeError(`${who}: sharing must be an object such as {strategy: 'cycle', unique: 4}, got ${describe(sharing)}`);
  const src = model.plan;
  if (src.strategy === 'basis' || src.strategy === 'delta') throw new TypeError(`${who}: the source model's layers are '${src.strategy}' layers; convert from a model whose layers apply stored blocks`);
  if (src.kvShareGroup !== 1 || (sharing.kvShareGroup ?? 1) !== 1) throw new TypeError(`${who}: cross-layer K/V sharing (kvShareGroup) is not converted`);
  if (sharing.strategy === 'basis') throw new TypeError(`${who}: 'basis' is not a conversion target (its factors are not a block of the source layers)`);
  const c = model.config;
  const config: DecoderConfig = {
    vocab: c.vocab, dModel: c.dModel, heads: c.heads, kvHeads: c.kvHeads, dFF: c.dFF, layers: c.layers, maxSeq: c.maxSeq, sharing,
    tiedEmbeddings: c.tiedEmbeddings, norm: c.norm, bias: c.bias, device: model.store.device,
    ...(c.factorizedEmbedding !== undefined ? { factorizedEmbedding: c.factorizedEmbedding } : {}),
    ...(options.seed !== undefined ? { seed: options.seed } : {}),
  };
  const out = new Decoder(config);
  try {
    const tgt = out.plan, L = c.layers;
    const values = new Map<string, Float32Array>();
    for (const p of model.parameters()) values.set(p.name, p.value.dataSync() as Float32Array);
    const srcOf = (kind: 'attn' | 'ffn', layer: number, rest: string) => {
      const b = kind === 'attn' ? src.layers[layer].attention : src.layers[layer].ffn;
      const v = values.get(`${kind}.${b}.${rest}`);
      if (!v) throw new Error(`${who}: the source model has no ${kind}.${b}.${rest}`);
      return v;
    };
    const mean = (kind: 'attn' | 'ffn', layers: number[], rest: string): Float32Array => {
      const acc = new Float64Array(srcOf(kind, layers[0], rest).length);
      for (const l of layers) {
        const v = srcOf(kind, l, rest);
        for (let i = 0; i < v.length; i++) acc[i] += v[i];
      }
      return Float32Array.from(acc, (x) => x / layers.length);
    };
    const result = new Map<string, Float32Array>();
    const shapes = new Map(out.parameters().map((p) => [p.name, p.shape] as const));
    const report: ConversionReport['relativeError'] = [];
    for (const [name, shape] of shapes) {
      let m: RegExpMatchArray | null;
      if ((m = name.match(/^delta\.(attn|ffn)\.(\w+)\.weight$/))) {
        result.set(name, mean(m[1] as 'attn' | 'ffn', [...Array(L).keys()], `${m[2]}.weight`));
      } else if ((m = name.match(/^(attn|ffn)\.(\d+)\.(\w+)\.(up|down)$/))) {
        continue; // below, once the shared matrices are known
      } else if ((m = name.match(/^(attn|ffn)\.(\d+)\.(.+)$/))) {
        const kind = m[1] as 'attn' | 'ffn', b = Number(m[2]);
        const layers = [...Array(L).keys()].filter((l) => (kind === 'attn' ? tgt.layers[l].attention : tgt.layers[l].ffn) === b);
        result.set(name, mean(kind, layers, m[3]));
      } else {
        const v = values.get(name);
        if (!v) throw new Error(`${who}: the source model has no ${name}`);
        result.set(name, v);
      }
      if (result.get(name)!.length !== shape.reduce((x, y) => x * y, 1)) throw new Error(`${who}: ${name} has the wrong size`);
    }
    const rank = tgt.rank ?? 0;
    for (let l = 0; l < L; l++)
      for (const kind of ['attn', 'ffn'] as const)
        for (const role of ROLES[kind]) {
          const orig = srcOf(kind, l, `${role}.weight`);
          let approx: Float64Array;
          const [rows, cols] = shapes.get(tgt.strategy === 'delta' ? `delta.${kind}.${role}.weight` : `${kind}.${kind === 'attn' ? tgt.layers[l].attention : tgt.layers[l].ffn}.${role}.weight`)!;
          if (tgt.strategy === 'delta') {
            const shared = result.get(`delta.${kind}.${role}.weight`)!;
            const diff = Float64Array.from(orig, (x, i) => x - shared[i]);
            const { u, s, v } = truncatedSvd(diff, rows, cols, Math.min(rank, rows, cols), { seed: 1 + l });
            const r = s.length;
            const up = new Float32Array(rows * rank), down = new Float32Array(rank * cols);
            for (let i = 0; i < rows; i++) for (let k = 0; k < r; k++) up[i * rank + k] = u[i * r + k] * Math.sqrt(s[k]);
            for (let k = 0; k < r; k++) for (let j = 0; j < cols; j++) down[k * cols + j] = Math.sqrt(s[k]) * v[j * r + k];
            result.set(`${kind}.${l}.${role}.up`, up);
            result.set(`${kind}.${l}.${role}.down`, down);
            approx = new Float64Array(rows * cols);
            for (let i = 0; i < rows; i++)
              for (let j = 0; j < cols; j++) {
                let acc = shared[i * cols + j];
                for (let k = 0; k < rank; k++) acc += up[i * rank + k] * down[k * cols + j];
                approx[i * cols + j] = acc;
              }
          } else {
            const b = kind === 'attn' ? tgt.layers[l].attention : tgt.layers[l].ffn;
            approx = Float64Array.from(result.get(`${kind}.${b}.${role}.weight`)!);
          }
          let num = 0, den = 0;
          for (let i = 0; i < orig.length; i++) {
            num += (approx[i] - orig[i]) ** 2;
            den += orig[i] ** 2;
          }
          report.push({ layer: l, name: `${kind}.${role}`, error: den > 0 ? Math.sqrt(num / den) : Math.sqrt(num) });
        }
    const tensors: Record<string, Tensor> = {};
    try {
      for (const [name, shape] of shapes) tensors[name] = tensor(result.get(name)!, shape, { device: out.store.device });
      out.loadStateDict(tensors);
    } finally {
      for (const t of Object.values(tensors)) t.dispose();
    }
    return { model: out, report: { relativeError: report, meanRelativeError: report.reduce((s, e) => s + e.error, 0) / Math.max(1, report.length) } };
  } catch (e) {
    out.store.dispose();
    throw e;
  }
}
