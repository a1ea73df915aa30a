// reference.ts — straightforward float64 JavaScript references of the kernels in lib/kernels.ts, for the silent-wrong-
// result suite (silent.test.ts). Each takes flat row-major arrays and returns flat arrays; they evaluate the canonical
// formula in IEEE double arithmetic, so a NaN or an infinity in a visible input propagates exactly as that arithmetic
// says (and a masked key, an ignored row, beta = 0's old output never enter it). No attempt at speed: the shapes are
// small.

export type F = Float64Array;
export const f64 = (a: ArrayLike<number>) => Float64Array.from(a);

const SQRT_2_PI = Math.sqrt(2 / Math.PI);

/** op(a) with a stored as [rows, cols]; returns element (i, j) of op(a) = a or a^T. */
function at(a: F, rows: number, cols: number, trans: boolean, i: number, j: number): number {
  return trans ? a[j * cols + i] : a[i * cols + j];
}

export function geluScalar(x: number): number {
  const u = SQRT_2_PI * (x + 0.044715 * x * x * x);
  return 0.5 * x * (1 + Math.tanh(u));
}
export function geluGradScalar(x: number): number {
  const u = SQRT_2_PI * (x + 0.044715 * x * x * x);
  const t = Math.tanh(u);
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_PI * (1 + 3 * 0.044715 * x * x);
}

// The exact (erf) GELU: x Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2 (not 1 + erf, which cancels in the negative tail),
// erfc(z >= 0) from the positive series of erf below z = 3 and the continued fraction above (2e-11 relative).
function erfcPos(z: number): number {
  if (z < 3) {
    let term = z, sum = z;
    for (let k = 1; term > 1e-17 * sum; k++) {
      term *= (2 * z * z) / (2 * k + 1);
      sum += term;
    }
    return 1 - (2 / Math.sqrt(Math.PI)) * Math.exp(-z * z) * sum;
  }
  let f = z;
  for (let k = 80; k >= 1; k--) f = z + k / 2 / f;
  return Math.exp(-z * z) / Math.sqrt(Math.PI) / f;
}
export function normCdf(x: number): number {
  return x < 0 ? 0.5 * erfcPos(-x / Math.SQRT2) : 1 - 0.5 * erfcPos(x / Math.SQRT2);
}
export function geluErfScalar(x: number): number {
  return x * normCdf(x);
}
export function geluErfGradScalar(x: number): number {
  return normCdf(x) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);
}

export interface MatmulRef {
  batch: number; M: number; N: number; K: number;
  aBatched: boolean; bBatched: boolean; transA: boolean; transB: boolean;
  alpha: number; beta: number; bias?: F; gelu: boolean;
}
/** act(alpha op(a) op(b) + beta out + bias) and the pre-activation; beta = 0 ignores out (NaN included). */
export function matmulRef(a: F, b: F, out: F | undefined, o: MatmulRef): { y: F; pre: F } {
  const { batch, M, N, K } = o;
  const y = new Float64Array(batch * M * N), pre = new Float64Array(batch * M * N);
  const aRows = o.transA ? K : M, aCols = o.transA ? M : K, bRows = o.transB ? N : K, bCols = o.transB ? K : N;
  for (let p = 0; p < batch; p++) {
    const A = a.subarray(o.aBatched ? p * M * K : 0), B = b.subarray(o.bBatched ? p * K * N : 0);
    for (let i = 0; i < M; i++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += at(A, aRows, aCols, o.transA, i, k) * at(B, bRows, bCols, o.transB, k, j);
        let v = o.alpha * s;
        const idx = p * M * N + i * N + j;
        if (o.beta !== 0) v += o.beta * out![idx];
        if (o.bias) v += o.bias[j];
        pre[idx] = v;
        y[idx] = o.gelu ? geluScalar(v) : v;
      }
  }
  return { y, pre };
}

export function biasGradRef(dy: F, dbias: F, N: number): F {
  const out = Float64Array.from(dbias);
  for (let i = 0; i < dy.length; i++) out[i % N] += dy[i];
  return out;
}

export function layerNormRef(x: F, w: F, b: F, C: number, eps: number, rows: number): { y: F; mean: F; rstd: F } {
  const R = rows;
  const y = new Float64Array(x.length), mean = new Float64Array(R), rstd = new Float64Array(R);
  for (let r = 0; r < R; r++) {
    let s = 0;
    for (let j = 0; j < C; j++) s += x[r * C + j];
    const m = s / C;
    let v = 0;
    for (let j = 0; j < C; j++) v += (x[r * C + j] - m) ** 2;
    const rs = 1 / Math.sqrt(v / C + eps);
    mean[r] = m;
    rstd[r] = rs;
    for (let j = 0; j < C; j++) y[r * C + j] = (x[r * C + j] - m) * rs * w[j] + b[j];
  }
  return { y, mean, rstd };
}

/** dx += rstd (g - mean(g) - xhat mean(g xhat)), dw += sum dy xhat, db += sum dy, with g = dy w. */
export function layerNormBackwardRef(dy: F, x: F, w: F, mean: F, rstd: F, C: number, dx?: F, dw?: F, db?: F): { dx?: F; dw?: F; db?: F } {
  const R = mean.length;
  const DX = dx && Float64Array.from(dx), DW = dw && Float64Array.from(dw), DB = db && Float64Array.from(db);
  for (let r = 0; r < R; r++) {
    let mg = 0, mgx = 0;
    for (let j = 0; j < C; j++) {
      const xh = (x[r * C + j] - mean[r]) * rstd[r], g = dy[r * C + j] * w[j];
      mg += g;
      mgx += g * xh;
    }
    mg /= C;
    mgx /= C;
    for (let j = 0; j < C; j++) {
      const i = r * C + j, xh = (x[i] - mean[r]) * rstd[r], g = dy[i] * w[j];
      if (DX) DX[i] += rstd[r] * (g - mg - xh * mgx);
      if (DW) DW[j] += dy[i] * xh;
      if (DB) DB[j] += dy[i];
    }
  }
  return { dx: DX, dw: DW, db: DB };
}

/** The stable formula exp(x - max) / sum in IEEE arithmetic: a NaN anywhere in a row (or +Inf, or a row of -Inf) makes it NaN. */
export function softmaxRef(x: F, C: number): F {
  const y = new Float64Array(x.length);
  for (let r = 0; r * C < x.length; r++) {
    let m = -Infinity;
    for (let j = 0; j < C; j++) {
      const v = x[r * C + j];
      if (Number.isNaN(v) || Number.isNaN(m)) m = NaN;
      else m = Math.max(m, v);
    }
    let s = 0;
    for (let j = 0; j < C; j++) s += (y[r * C + j] = Math.exp(x[r * C + j] - m));
    for (let j = 0; j < C; j++) y[r * C + j] /= s;
  }
  return y;
}
export function softmaxBackwardRef(y: F, dy: F, dx: F, C: number): F {
  const out = Float64Array.from(dx);
  for (let r = 0; r * C < y.length; r++) {
    let d = 0;
    for (let j = 0; j < C; j++) d += y[r * C + j] * dy[r * C + j];
    for (let j = 0; j < C; j++) out[r * C + j] += y[r * C + j] * (dy[r * C + j] - d);
  }
  return out;
}

export interface AttnRef {
  B: number; Hq: number; Hkv: number; Tq: number; Tk: number; D: number;
  causal: boolean; scale: number; keyLengths?: Int32Array;
}
const visible = (o: AttnRef, b: number, i: number, j: number) =>
  j < (o.keyLengths ? o.keyLengths[b] : o.Tk) && (!o.causal || j <= i + (o.Tk - o.Tq));

/** o = softmax(scale q k^T over the visible keys) v; a query that sees no key gets o = 0, lse = -Inf. */
export function attentionRef(q: F, k: F, v: F, o: AttnRef): { o: F; lse: F } {
  const { B, Hq, Hkv, Tq, Tk, D } = o, G = Hq / Hkv;
  const out = new Float64Array(B * Hq * Tq * D), lse = new Float64Array(B * Hq * Tq);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / G);
      const K = (j: number, d: number) => k[((b * Hkv + hk) * Tk + j) * D + d];
      const V = (j: number, d: number) => v[((b * Hkv + hk) * Tk + j) * D + d];
      for (let i = 0; i < Tq; i++) {
        const qi = ((b * Hq + h) * Tq + i) * D;
        const s: number[] = [], js: number[] = [];
        for (let j = 0; j < Tk; j++) {
          if (!visible(o, b, i, j)) continue;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qi + d] * K(j, d);
          s.push(o.scale * dot);
          js.push(j);
        }
        const row = (b * Hq + h) * Tq + i;
        if (!s.length) {
          lse[row] = -Infinity;
          continue; // o stays 0
        }
        let m = -Infinity;
        for (const x of s) m = Number.isNaN(x) || Number.isNaN(m) ? NaN : Math.max(m, x);
        const p = s.map((x) => Math.exp(x - m));
        const l = p.reduce((a, c) => a + c, 0);
        // Every visible score -Inf: the stable formula's exp(-Inf - -Inf) is NaN, but log-sum-exp itself is exactly
        // log(0) = -Inf (as torch.logsumexp gives); o is 0 / 0 = NaN either way.
        lse[row] = m === -Infinity ? -Infinity : m + Math.log(l);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let t = 0; t < js.length; t++) acc += p[t] * V(js[t], d);
          out[qi + d] = acc / l;
        }
      }
    }
  return { o: out, lse };
}

/** dq, dk, dv += the gradients of sum(o * dout), with P = exp(S - lse) recomputed and delta = rowsum(dout * o). */
export function attentionBackwardRef(q: F, k: F, v: F, oo: F, lse: F, dout: F, dq: F, dk: F, dv: F, o: AttnRef): { dq: F; dk: F; dv: F } {
  const { B, Hq, Hkv, Tq, Tk, D } = o, G = Hq / Hkv;
  const DQ = Float64Array.from(dq), DK = Float64Array.from(dk), DV = Float64Array.from(dv);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / G);
      for (let i = 0; i < Tq; i++) {
        const row = (b * Hq + h) * Tq + i, qi = row * D;
        let delta = 0;
        for (let d = 0; d < D; d++) delta += dout[qi + d] * oo[qi + d];
        for (let j = 0; j < Tk; j++) {
          if (!visible(o, b, i, j)) continue;
          const kj = ((b * Hkv + hk) * Tk + j) * D;
          let dot = 0, dp = 0;
          for (let d = 0; d < D; d++) {
            dot += q[qi + d] * k[kj + d];
            dp += dout[qi + d] * v[kj + d];
          }
          const p = Math.exp(o.scale * dot - lse[row]);
          const ds = p * (dp - delta);
          for (let d = 0; d < D; d++) {
            DV[kj + d] += p * dout[qi + d];
            DQ[qi + d] += o.scale * ds * k[kj + d];
            DK[kj + d] += o.scale * ds * q[qi + d];
          }
        }
      }
    }
  return { dq: DQ, dk: DK, dv: DV };
}

export function embeddingRef(ids: Int32Array, table: F, C: number): F {
  const out = new Float64Array(ids.length * C);
  for (let i = 0; i < ids.length; i++) for (let c = 0; c < C; c++) out[i * C + c] = table[ids[i] * C + c];
  return out;
}
export function embeddingBackwardRef(ids: Int32Array, dout: F, dtable: F, C: number): F {
  const out = Float64Array.from(dtable);
  for (let i = 0; i < ids.length; i++) for (let c = 0; c < C; c++) out[ids[i] * C + c] += dout[i * C + c];
  return out;
}

/** Mean loss over counted rows (0 when none) and dlogits = (softmax - onehot) gradScale / count (0 on ignored rows). */
export function crossEntropyRef(x: F, t: Int32Array, V: number, ignore: number, gradScale: number): { loss: number; d: F } {
  const N = t.length, d = new Float64Array(N * V);
  let count = 0, total = 0;
  for (let r = 0; r < N; r++) if (t[r] !== ignore) count++;
  for (let r = 0; r < N; r++) {
    if (t[r] === ignore) continue;
    const row = x.subarray(r * V, (r + 1) * V);
    let m = -Infinity;
    for (const v of row) m = Number.isNaN(v) || Number.isNaN(m) ? NaN : Math.max(m, v);
    let s = 0;
    for (const v of row) s += Math.exp(v - m);
    total += m + Math.log(s) - row[t[r]];
    for (let j = 0; j < V; j++) d[r * V + j] = (Math.exp(row[j] - m) / s) * (gradScale / count);
    d[r * V + t[r]] -= gradScale / count;
  }
  return { loss: count ? total / count : 0, d };
}

export function adamwRef(p: F, g: F, m: F, v: F, o: { lr: number; beta1: number; beta2: number; eps: number; wd: number; step: number; mask?: F }): { p: F; m: F; v: F } {
  const P = Float64Array.from(p), M = Float64Array.from(m), Vv = Float64Array.from(v);
  const bc1 = 1 - o.beta1 ** o.step, bc2 = 1 - o.beta2 ** o.step;
  for (let i = 0; i < p.length; i++) {
    P[i] *= 1 - o.lr * o.wd * (o.mask ? o.mask[i] : 1);
    M[i] = o.beta1 * M[i] + (1 - o.beta1) * g[i];
    Vv[i] = o.beta2 * Vv[i] + (1 - o.beta2) * g[i] * g[i];
    P[i] -= (o.lr / bc1) * (M[i] / (Math.sqrt(Vv[i]) / Math.sqrt(bc2) + o.eps));
  }
  return { p: P, m: M, v: Vv };
}

export function sgdRef(p: F, g: F, buf: F | undefined, o: { lr: number; momentum: number; dampening: number; wd: number; nesterov: boolean; first: boolean }): { p: F; buf?: F } {
  const P = Float64Array.from(p), Bf = buf && Float64Array.from(buf);
  for (let i = 0; i < p.length; i++) {
    let d = o.wd !== 0 ? g[i] + o.wd * p[i] : g[i];
    if (o.momentum !== 0 && Bf) {
      Bf[i] = o.first ? d : o.momentum * Bf[i] + (1 - o.dampening) * d;
      d = o.nesterov ? d + o.momentum * Bf[i] : Bf[i];
    }
    P[i] -= o.lr * d;
  }
  return { p: P, buf: Bf };
}

export const sumSquaresRef = (x: F) => x.reduce((a, v) => a + v * v, 0);

/** [A, B, C, D] -> [A, C, B, D] */
export function permute0213Ref(x: F, [A, B, C, D]: number[]): F {
  const y = new Float64Array(x.length);
  for (let a = 0; a < A; a++)
    for (let b = 0; b < B; b++)
      for (let c = 0; c < C; c++)
        for (let d = 0; d < D; d++) y[((a * C + c) * B + b) * D + d] = x[((a * B + b) * C + c) * D + d];
  return y;
}

export function kvAppendRef(cache: F, src: F, [B, H, Tmax, D]: number[], n: number, pos: number): F {
  const out = Float64Array.from(cache);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let t = 0; t < n; t++)
        for (let d = 0; d < D; d++) out[((b * H + h) * Tmax + pos + t) * D + d] = src[((b * H + h) * n + t) * D + d];
  return out;
}
