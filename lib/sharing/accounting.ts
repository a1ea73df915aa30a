// sharing/accounting.ts — closed-form parameter, memory and FLOP accounting for a sharing plan, so the trade-off of a
// plan (unique parameters vs applied depth) is visible before anything is allocated. Pure arithmetic, no tensors.
//
// THE PARAMETER LAYOUT (the contract the model layer implements), pre-LN decoder-only Transformer:
//   d = dModel, V = vocab, F = dFF, S = maxSeq, h = heads, g = kvHeads, Dh = d / h, dkv = g·Dh, E = factorizedEmbedding.
//   "+x bias" terms exist only when dims.bias is true. LayerNorms always have gain and bias (2d).
//
//   token embedding        V × d                        (factorized: V × E, then projection E × d + d bias)
//   positional embedding   S × d                        (learned)
//   attention block        LayerNorm 2d
//                          Wq  d × d    + d bias
//                          Wk  d × dkv  + dkv bias      } only in blocks used by a layer that computes its own K,V
//                          Wv  d × dkv  + dkv bias      } (every block unless CLA; see kvProjectionBlocks in plan.ts)
//                          Wo  d × d    + d bias
//   FFN block              LayerNorm 2d
//                          W1  d × F    + F bias
//                          W2  F × d    + d bias
//   final LayerNorm        2d
//   LM head                untied: V × d (no bias, also when the embedding is factorized)
//                          tied, not factorized: none (logits = h · embeddingᵀ)
//                          tied and factorized: out-projection d × E (+ E bias), own weights, then E × V tied to
//                          the V × E embedding table (ALBERT's MLM head without its extra LayerNorm)
//   The LM head never has a bias of its own — except BERT's MLM head (mlmTransform): dense d × w + w, LayerNorm 2w,
//   output bias V, the output matrix tied (or an own V × w), w = E when factorized, else d.
//   Encoders' optional parts (named in the breakdown only when present): token types typeVocab × d', an embedding
//   LayerNorm 2d' (d' = E when factorized with embeddingNorm, else d; positions then have width d' too), the pooler
//   d × d + d, the classifier d × C + C; finalNorm false drops the final LayerNorm.
//
//   Attention blocks: plan.uniqueAttention of them, FFN blocks: plan.uniqueFfn (plan.ts says which layer uses which).
//   basis: every weight matrix role (Wq, Wk, Wv, Wo, W1, W2), in × out, has ONE shared W_S (in × r) for all layers
//          plus a per-layer C_l (r × out); the layer applies x·W_S·C_l as two products. Biases and LayerNorms
//          stay per layer (block l = layer l). Wk/Wv: C_l only for K,V-computing layers.
//   delta: every weight matrix role has ONE shared W_S (in × out) plus per-layer B_l (in × r) and A_l (r × out); the
//          layer applies x·W_S + (x·B_l)·A_l. Biases and LayerNorms stay per layer. Wk/Wv: B_l, A_l only for
//          K,V-computing layers.
//
// FLOPS PER TOKEN (forward, one token): 2 × the multiply-adds of every matrix product applied to the token —
//   every applied layer counts, shared or not, plus the head and the factorized-embedding projection — plus the
//   attention scores and weighted values, 2·2·T·d per applied layer (QKᵀ: T·d multiply-adds over all heads, A·V: T·d).
//   T is the context a token attends to: by default maxSeq/2 for a causal decoder (the mean over positions of a
//   full maxSeq window, rounded to the common maxSeq/2) and maxSeq for a bidirectional encoder; opts.context
//   overrides it. Not counted: embedding gathers, bias adds, LayerNorm, activation, softmax, residual adds.
//   K,V projections count only in layers that compute their own K,V (CLA). Backward is about 2 × forward.
//
// KV CACHE BYTES PER TOKEN (generation): for each applied layer that computes its own K,V (kvSource == layer):
//   2 (K and V) · kvHeads · Dh · bytes. With kvShareGroup s only group leaders store K,V: ceil(depth / s) layers.
//   Encoders (accountEncoder) cache nothing: 0.
//
// DEPTH OVERRIDE (Universal Transformer): opts.depth applies the shared stack for `depth` layers at run time. The
//   parameters stay those of the plan's L layers; applied depth, FLOPs and KV cache follow `depth`. Allowed for
//   'all' (any depth) and 'cycle' (layer l uses block l mod U); any other plan throws RangeError (a depth equal to
//   L is no override and is accepted for every plan). Also a RangeError: a depth at which a K,V-computing layer
//   would use an attention block that has no K/V projections (possible with CLA and cycle).

import { appliedLayers, checkRank, kvProjectionBlocks, type SharingPlan } from './plan.ts';
import { checkInt, checkNumber, checkObject, describe, isPlainObject } from '../validate.ts';

/** The sizes accounting needs: vocabulary, widths, heads, depth, sequence length. */
export interface ModelDims {
  vocab: number;
  dModel: number;
  heads: number;
  kvHeads: number;
  dFF: number;
  layers: number;
  maxSeq: number;
  tiedEmbeddings: boolean;
  /** E, ALBERT's factorization: V × E + E × H. */
  factorizedEmbedding?: number;
  bias: boolean;
  /** Token-type embeddings (encoders): typeVocab × the width positions have. */
  typeVocab?: number;
  /** A LayerNorm over the summed embeddings (encoders): positions and types then have the embedding width (E or d). */
  embeddingNorm?: boolean;
  /** The final LayerNorm (default true). */
  finalNorm?: boolean;
  /** BERT's MLM prediction head: dense d × w + w, LayerNorm 2w, output bias V (w = E when factorized, else d). */
  mlmTransform?: boolean;
  /** BERT's pooler: d × d + d (encoders with a classifier). */
  pooler?: boolean;
  /** A classification head: d × numClasses + numClasses (encoders). */
  numClasses?: number;
}

/** What a model costs: unique parameters and bytes, applied depth, FLOPs and KV-cache bytes per token. */
export interface Accounting {
  uniqueParameters: number;
  parameterBytes: number;
  appliedDepth: number;
  flopsPerToken: number;
  kvCacheBytesPerToken: number;
  perLayer: { layer: number; attention: number; ffn: number; kvSource: number }[];
  /** Unique parameters by part; the values sum to uniqueParameters. */
  breakdown: Record<string, number>;
}

/** Options of the accounting functions. */
export interface AccountingOptions {
  /** Run-time depth override (all / cycle plans only). Default: the plan's L. */
  depth?: number;
  /** Bytes per parameter (4 = fp32); also the default bytes per cached K/V element. */
  bytesPerParam?: number;
  /** Bytes per cached K/V element; default bytesPerParam. */
  kvBytesPerElement?: number;
  /** T, the number of keys a token attends to, for the attention FLOPs. Default maxSeq/2 (causal), maxSeq (encoder). */
  context?: number;
}

function fail(Cls: typeof TypeError | typeof RangeError, msg: string): never {
  throw new Cls(`sharing: ${msg}`);
}

function posInt(v: unknown, what: string): number {
  return checkInt('sharing', v, what, 1);
}

function posNumber(v: unknown, what: string): number {
  if (checkNumber('sharing', v, what) <= 0) fail(RangeError, `${what} must be a positive finite number, got ${describe(v)}`);
  return v as number;
}

function checkDims(dims: ModelDims): void {
  if (!isPlainObject(dims)) fail(TypeError, `dims must be a ModelDims object, got ${describe(dims)}`);
  for (const k of ['vocab', 'dModel', 'heads', 'kvHeads', 'dFF', 'layers', 'maxSeq'] as const) posInt(dims[k], `dims.${k}`);
  if (dims.factorizedEmbedding !== undefined) posInt(dims.factorizedEmbedding, 'dims.factorizedEmbedding');
  if (dims.typeVocab !== undefined) posInt(dims.typeVocab, 'dims.typeVocab');
  if (dims.numClasses !== undefined && dims.numClasses !== 0) posInt(dims.numClasses, 'dims.numClasses');
  for (const k of ['embeddingNorm', 'finalNorm', 'mlmTransform', 'pooler'] as const) {
    if (dims[k] !== undefined && typeof dims[k] !== 'boolean') fail(TypeError, `dims.${k} must be a boolean, got ${describe(dims[k])}`);
  }
  for (const k of ['tiedEmbeddings', 'bias'] as const) {
    if (typeof dims[k] !== 'boolean') fail(TypeError, `dims.${k} must be a boolean, got ${describe(dims[k])}`);
  }
  if (dims.dModel % dims.heads !== 0) fail(RangeError, `dims.dModel ${dims.dModel} is not divisible by dims.heads ${dims.heads}`);
  if (dims.kvHeads > dims.heads || dims.heads % dims.kvHeads !== 0) {
    fail(RangeError, `dims.kvHeads ${dims.kvHeads} must divide dims.heads ${dims.heads}`);
  }
}

function account(dims: ModelDims, plan: SharingPlan, opts: AccountingOptions, causal: boolean): Accounting {
  checkDims(dims);
  if (typeof plan !== 'object' || plan === null || !Array.isArray(plan.layers)) fail(TypeError, 'plan must be a SharingPlan from makePlan()');
  const L = plan.layers.length;
  if (L !== dims.layers) fail(RangeError, `the plan covers ${L} layers but dims.layers is ${dims.layers}`);
  checkObject('sharing', opts, 'opts');
  const bytes = opts.bytesPerParam === undefined ? 4 : posNumber(opts.bytesPerParam, 'opts.bytesPerParam');
  const kvBytes = opts.kvBytesPerElement === undefined ? bytes : posNumber(opts.kvBytesPerElement, 'opts.kvBytesPerElement');

  const { vocab: V, dModel: d, heads, kvHeads, dFF: F, maxSeq: S, bias } = dims;
  const E = dims.factorizedEmbedding;
  const Dh = d / heads;
  const dkv = kvHeads * Dh;
  const b = (n: number) => (bias ? n : 0);
  const T = opts.context === undefined ? (causal ? S / 2 : S) : posNumber(opts.context, 'opts.context');

  // Which layers (at the trained depth L) compute their own K,V, and which attention blocks own Wk/Wv.
  const kvLeaders = plan.layers.filter((p, l) => p.kvSource === l).length;
  const kvBlocks = new Set(kvProjectionBlocks(plan));

  // ---- unique parameters ----
  // positions and token types are summed in the embedding width under the embedding LayerNorm, else in d; BERT's MLM
  // head works in width w (its dense layer and LayerNorm; its Linear always has a bias), then the output matrix
  const added = dims.embeddingNorm ? E ?? d : d;
  const w = E ?? d;
  const mlm = dims.mlmTransform === true;
  const breakdown: Record<string, number> = {
    tokenEmbedding: V * (E ?? d),
    embeddingProjection: E !== undefined ? E * d + b(d) : 0,
    positionalEmbedding: S * added,
    attention: 0,
    ffn: 0,
    finalNorm: dims.finalNorm === false ? 0 : 2 * d,
    head: mlm ? d * w + w + 2 * w + V + (dims.tiedEmbeddings ? 0 : V * w) : !dims.tiedEmbeddings ? V * d : E !== undefined ? d * E + b(E) : 0,
  };
  // the encoders' optional parts, named only when present
  if (dims.typeVocab !== undefined) breakdown.typeEmbedding = dims.typeVocab * added;
  if (dims.embeddingNorm) breakdown.embeddingNorm = 2 * added;
  if (dims.pooler) breakdown.pooler = d * d + d;
  if (dims.numClasses) breakdown.classifier = d * dims.numClasses + dims.numClasses;

  // Matrix roles: [name, in, out, number of layers / blocks owning it].
  const strategy = plan.strategy;
  if (strategy === 'basis' || strategy === 'delta') {
    const r = plan.rank;
    if (r === undefined) fail(TypeError, `a '${strategy}' plan must carry its rank`);
    checkRank(strategy, r, L, [
      ['d x d (Wq, Wo)', d, d],
      ['d x dFF (W1)', d, F],
      ['dFF x d (W2)', F, d],
    ]);
    checkRank(strategy, r, kvLeaders, [['d x kvHeads·Dh (Wk, Wv)', d, dkv]]);
    const matrix = (inDim: number, outDim: number, n: number) =>
      strategy === 'basis' ? inDim * r + n * r * outDim : inDim * outDim + n * r * (inDim + outDim);
    // Per layer: LayerNorm + biases (Wq, Wo always; Wk, Wv only for K,V-computing layers).
    breakdown.attention =
      2 * matrix(d, d, L) + 2 * matrix(d, dkv, kvLeaders) + L * (2 * d + b(2 * d)) + kvLeaders * b(2 * dkv);
    breakdown.ffn = matrix(d, F, L) + matrix(F, d, L) + L * (2 * d + b(F + d));
  } else {
    const attnBlock = (hasKV: boolean) => 2 * d + 2 * (d * d + b(d)) + (hasKV ? 2 * (d * dkv + b(dkv)) : 0);
    for (let blk = 0; blk < plan.uniqueAttention; blk++) breakdown.attention += attnBlock(kvBlocks.has(blk));
    breakdown.ffn = plan.uniqueFfn * (2 * d + d * F + b(F) + F * d + b(d));
  }
  const uniqueParameters = Object.values(breakdown).reduce((a, x) => a + x, 0);

  // ---- applied layers: FLOPs and KV cache ----
  const applied = appliedLayers(plan, opts.depth);
  const depth = applied.length;
  // Multiply-adds of one in × out matrix applied to one token.
  const macs = (inDim: number, outDim: number) => {
    if (strategy === 'basis') return inDim * plan.rank! + plan.rank! * outDim;
    if (strategy === 'delta') return inDim * outDim + plan.rank! * (inDim + outDim);
    return inDim * outDim;
  };
  let layerMacs = 0;
  let kvLayers = 0;
  applied.forEach((p, l) => {
    const computesKV = p.kvSource === l;
    if (computesKV && !kvBlocks.has(p.attention)) {
      fail(
        RangeError,
        `at depth ${depth} layer ${l} computes K,V with attention block ${p.attention}, which has no K/V projections ` +
          `(at the trained depth ${L} with kvShareGroup ${plan.kvShareGroup} no K,V-computing layer uses it)`,
      );
    }
    layerMacs += 2 * macs(d, d) + (computesKV ? 2 * macs(d, dkv) : 0) + macs(d, F) + macs(F, d);
    if (computesKV) kvLayers++;
  });
  const edgeMacs = (E !== undefined ? E * d : 0) + (mlm ? d * w + w * V : dims.tiedEmbeddings && E !== undefined ? d * E + E * V : d * V);
  const flopsPerToken = 2 * (layerMacs + edgeMacs) + depth * 2 * 2 * T * d;

  return {
    uniqueParameters,
    parameterBytes: uniqueParameters * bytes,
    appliedDepth: depth,
    flopsPerToken,
    kvCacheBytesPerToken: causal ? kvLayers * 2 * kvHeads * Dh * kvBytes : 0,
    perLayer: applied.map((p, l) => ({ layer: l, attention: p.attention, ffn: p.ffn, kvSource: p.kvSource })),
    breakdown,
  };
}

/** Accounting for a decoder-only (causal) pre-LN Transformer under a sharing plan. See the header for conventions. */
export function accountDecoder(dims: ModelDims, plan: SharingPlan, opts: AccountingOptions = {}): Accounting {
  return account(dims, plan, opts, true);
}

/**
 * Accounting for an encoder (bidirectional): the same parameter layout and FLOPs as accountDecoder with T = maxSeq
 * by default, and no KV cache (kvCacheBytesPerToken = 0).
 */
export function accountEncoder(dims: ModelDims, plan: SharingPlan, opts: AccountingOptions = {}): Accounting {
  return account(dims, plan, opts, false);
}
