// sharing/plan.ts — SharingPlan: which weight block each (layer, sub-layer) uses. Pure TypeScript: no tensors.
//
// A plan is decided once, when a model is built, and never changes. The model layer allocates `uniqueAttention`
// attention blocks and `uniqueFfn` FFN blocks in the ParameterStore and gives layer l the views of block
// `layers[l].attention` / `layers[l].ffn`; layers that share a block hold the *same* views, so their gradients
// accumulate into one slot (design.md, invariant 1). Parameter counts, bytes and FLOPs for a plan are in
// accounting.ts.
//
// Notation: L layers (numLayers), U unique blocks (config.unique), layer l in [0, L) uses block assign(l).
//
//   none       assign(l) = l for both sub-layers                               U = L
//   all        assign(l) = 0                                                   U = 1 (ALBERT, Universal Transformer)
//   attention  attention assign(l) = 0, FFN assign(l) = l                      (ALBERT's ablation)
//   ffn        FFN assign(l) = 0, attention assign(l) = l
//   sequence   assign(l) = floor(l·U / L)                                      (ALBERT groups, MobileLLM)
//              every block 0..U-1 is used, in runs of floor(L/U) or ceil(L/U) consecutive layers
//   cycle      assign(l) = l mod U                                             (Takase & Kiyono 2021)
//   cycle-rev  as the authors' released code (takase/share_layer_params, fairseq/models/transformer.py,
//              share_type 'cycle_reverse'): the first n = max(U, L - U) layers cycle, the remaining L - n layers
//              take the first blocks in reverse order:
//                  n = max(U, L - U)
//                  assign(l) = l mod U               for l < n
//                  assign(l) = U - 1 - (l - n)       for l >= n     (l - n < min(U, L - U) <= U, so no wrap)
//              L=6,U=3 → 0 1 2 2 1 0 (n = 3);  L=5,U=3 → 0 1 2 2 1 (n = 3);  L=7,U=3 → 0 1 2 0 2 1 0 (n = 4);
//              L=8,U=2 → 0 1 0 1 0 1 1 0 (n = 6);  U = L → 0 1 … L-1 (no layer left to reverse).
//              (The shorter rule "cycle while l < L - U" gives 0 1 2 1 0 for L=5,U=3, which is not what the code
//              builds when L < 2U: there the code first places all U blocks, then reverses the rest.)
//   sandwich   first and last layer unique, the middle L-2 layers share one block (Subformer):
//              0 1 1 … 1 2 for L >= 3; [0] for L = 1; [0, 1] for L = 2
//   custom     explicit indices, one list for both sub-layers or {attention, ffn}; each list has length L, integer
//              entries in [0, L), and uses every index from 0 to its maximum (no unused block is allocated)
//   basis      every weight matrix (in × out) of layer l is W_S·C_l: W_S (in × r) shared by all layers, C_l
//              (r × out) per layer. "Block" l is layer l's own part (its C_l, biases and LayerNorms), so
//              assign(l) = l and uniqueAttention = uniqueFfn = L. Requires rank r >= 1; with dims given, r must
//              save parameters for every matrix: in·r + n·r·out < n·in·out, n = layers owning it (else RangeError).
//   delta      W_l = W_S + B_l·A_l: W_S (in × out) shared, B_l (in × r), A_l (r × out) per layer (Relaxed
//              Recursive Transformers). assign(l) = l as for basis. Requires 1 <= r, and r < min(in, out) of every
//              matrix when dims are given.
//   The basis/delta rank checks use the matrices d × d (Wq, Wo), d × dFF (W1), dFF × d (W2), and d × kvDim (Wk, Wv,
//   owned by the ceil(L/s) K,V-computing layers only) when dims.kvDim is given; accounting.ts always checks all.
//
// Cross-layer KV sharing (CLA), compatible with every strategy: kvShareGroup = s >= 1 splits the layers into
// consecutive groups of s; layer l attends with the K and V computed by its group's first layer,
// kvSource(l) = l - (l mod s). s = 1 (default) is off. Only group leaders (kvSource(l) == l) compute and cache K,V,
// so an attention block owns K/V projections only when some leader layer uses it (kvProjectionBlocks()).
//
// Validation (all at makePlan, before anything is allocated); every message starts 'sharing: ':
//   TypeError  — config not an object, unknown key, unknown strategy (the message lists the valid ones), an option
//                of the wrong type, or a required option missing (unique for sequence/cycle/cycle-rev; rank for
//                basis/delta; custom for custom).
//   RangeError — a value out of range: numLayers not a positive integer, unique not an integer in [1, L], rank not
//                a positive integer or too large, custom list of the wrong length / out of range / with gaps,
//                kvShareGroup not an integer in [1, L].
//   Options a strategy does not use are errors, not silently ignored: unique is accepted only by sequence, cycle and
//   cycle-rev; rank only by basis and delta; custom only by custom.

import { checkInt, checkKeys, checkObject, describe as describeValue } from '../validate.ts';

/** The cross-layer sharing strategies. */
export type Strategy =
  | 'none'
  | 'all'
  | 'attention'
  | 'ffn'
  | 'sequence'
  | 'cycle'
  | 'cycle-rev'
  | 'sandwich'
  | 'custom'
  | 'basis'
  | 'delta';

/** Every Strategy, in documentation order. */
export const STRATEGIES: readonly Strategy[] = Object.freeze([
  'none',
  'all',
  'attention',
  'ffn',
  'sequence',
  'cycle',
  'cycle-rev',
  'sandwich',
  'custom',
  'basis',
  'delta',
] as Strategy[]);

/** How a stack shares its blocks: the strategy and its parameters. */
export interface SharingConfig {
  /** Default 'none'. */
  strategy: Strategy;
  /** U, the number of unique blocks: required by sequence, cycle and cycle-rev, rejected elsewhere. */
  unique?: number;
  /** Per-layer block indices: one list for both sub-layers, or one per sub-layer. Only for strategy 'custom'. */
  custom?: { attention: number[]; ffn: number[] } | number[];
  /** r: the shared basis width (basis) or the per-layer delta rank (delta). Required by those two, rejected elsewhere. */
  rank?: number;
  /** Cross-layer KV sharing (CLA): consecutive groups of s layers reuse their first layer's K and V. 1 = off. */
  kvShareGroup?: number;
}

/** Which unique blocks one layer applies. */
export interface LayerPlan {
  /** Attention block index (for basis/delta: the layer's own factor slot, = the layer index). */
  attention: number;
  /** FFN block index (for basis/delta: = the layer index). */
  ffn: number;
  /** The layer whose K,V this layer attends with: itself unless CLA (kvShareGroup > 1). */
  kvSource: number;
}

/** The result of makePlan(): the block each layer applies and the counts of unique blocks. */
export interface SharingPlan {
  strategy: Strategy;
  layers: LayerPlan[];
  uniqueAttention: number;
  uniqueFfn: number;
  /** Present for basis and delta only. */
  rank?: number;
  kvShareGroup: number;
  /** One-line human summary, e.g. "cycle-rev, 3 unique blocks over 6 layers: 0 1 2 2 1 0". */
  describe(): string;
}

/** The widths makePlan needs to check a basis / delta rank. */
export interface PlanDims {
  dModel: number;
  dFF: number;
  /** kvHeads · (dModel / heads), the width of Wk and Wv; when given, their matrices are checked too. */
  kvDim?: number;
}

const CONFIG_KEYS = ['strategy', 'unique', 'custom', 'rank', 'kvShareGroup'] as const;
const USES_UNIQUE: ReadonlySet<Strategy> = new Set<Strategy>(['sequence', 'cycle', 'cycle-rev']);
const USES_RANK: ReadonlySet<Strategy> = new Set<Strategy>(['basis', 'delta']);

/** The most layers a plan may have (its arrays are this long): an absurd count is an error, not an out-of-memory crash. */
export const MAX_LAYERS = 1 << 16;

function checkIndexList(v: unknown, what: string, L: number): number[] {
  if (!Array.isArray(v)) throw new TypeError(`sharing: ${what} must be an array of block indices, got ${describeValue(v)}`);
  if (v.length !== L) {
    throw new RangeError(`sharing: ${what} has ${v.length} entries, but the model has ${L} layers (one index per layer)`);
  }
  const used = new Set<number>();
  let max = -1;
  v.forEach((x, i) => {
    if (typeof x !== 'number') throw new TypeError(`sharing: ${what}[${i}] must be a number, got ${describeValue(x)}`);
    if (!Number.isInteger(x) || x < 0 || x >= L) {
      throw new RangeError(`sharing: ${what}[${i}] = ${x} is not an integer block index in [0, ${L})`);
    }
    used.add(x);
    if (x > max) max = x;
  });
  const missing: number[] = [];
  for (let b = 0; b <= max; b++) if (!used.has(b)) missing.push(b);
  if (missing.length > 0) {
    throw new RangeError(
      `sharing: ${what} uses blocks up to ${max} but never block${missing.length > 1 ? 's' : ''} ${missing.join(', ')}; ` +
        `indices must cover 0..max with no gaps`,
    );
  }
  return v.slice() as number[];
}

/** The largest rank r with in·r + n·r·out < n·in·out (basis saves parameters for an in × out matrix used by n layers). */
export function maxBasisRank(inDim: number, outDim: number, n: number): number {
  return Math.ceil((n * inDim * outDim) / (inDim + n * outDim)) - 1;
}

/** Block assignment for strategies with one index list for both sub-layers. */
function assignments(strategy: Strategy, L: number, U: number): number[] {
  const out: number[] = [];
  for (let l = 0; l < L; l++) {
    switch (strategy) {
      case 'sequence':
        out.push(Math.floor((l * U) / L));
        break;
      case 'cycle':
        out.push(l % U);
        break;
      case 'cycle-rev': {
        const n = Math.max(U, L - U);
        out.push(l < n ? l % U : U - 1 - (l - n));
        break;
      }
      case 'sandwich':
        out.push(l === 0 ? 0 : L >= 3 && l === L - 1 ? 2 : 1);
        break;
      case 'all':
        out.push(0);
        break;
      default: // none, basis, delta
        out.push(l);
    }
  }
  return out;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/**
 * Validates a sharing configuration for a stack of numLayers layers and returns its (frozen) plan.
 * `dims` is needed only to check that a basis rank saves parameters and that a delta rank is below the widths;
 * without it those checks are skipped (accounting.ts repeats them with the full model dims).
 */
export function makePlan(config: Partial<SharingConfig> | undefined, numLayers: number, dims?: PlanDims): SharingPlan {
  const L = checkInt('sharing', numLayers, 'numLayers', 1, MAX_LAYERS);
  if (config === undefined) config = {};
  checkObject('sharing', config, 'the config', " like { strategy: 'cycle', unique: 3 }");
  checkKeys('sharing', config, CONFIG_KEYS, 'config key');
  const c = config as Record<string, unknown>;

  const strategy = (c.strategy === undefined ? 'none' : c.strategy) as Strategy;
  if (typeof strategy !== 'string' || !STRATEGIES.includes(strategy)) {
    throw new TypeError(`sharing: unknown strategy ${describeValue(strategy)}; valid strategies: ${STRATEGIES.join(', ')}`);
  }

  // Options a strategy does not use are rejected, so a config means exactly one thing.
  if (c.unique !== undefined && !USES_UNIQUE.has(strategy)) {
    throw new TypeError(`sharing: 'unique' applies only to strategies sequence, cycle and cycle-rev, not '${strategy}'`);
  }
  if (c.rank !== undefined && !USES_RANK.has(strategy)) {
    throw new TypeError(`sharing: 'rank' applies only to strategies basis and delta, not '${strategy}'`);
  }
  if (c.custom !== undefined && strategy !== 'custom') {
    throw new TypeError(`sharing: 'custom' index lists apply only to strategy custom, not '${strategy}'`);
  }

  const s = c.kvShareGroup === undefined ? 1 : checkInt('sharing', c.kvShareGroup, 'kvShareGroup', 1, L, ` (${L} layers)`);

  if (dims !== undefined) {
    if (typeof dims !== 'object' || dims === null) throw new TypeError(`sharing: dims must be { dModel, dFF }, got ${describeValue(dims)}`);
    checkInt('sharing', dims.dModel, 'dims.dModel', 1, Infinity);
    checkInt('sharing', dims.dFF, 'dims.dFF', 1, Infinity);
    if (dims.kvDim !== undefined) checkInt('sharing', dims.kvDim, 'dims.kvDim', 1, Infinity);
  }

  let attention: number[];
  let ffn: number[];
  let U = 0;
  let rank: number | undefined;

  switch (strategy) {
    case 'sequence':
    case 'cycle':
    case 'cycle-rev': {
      if (c.unique === undefined) {
        throw new TypeError(`sharing: strategy '${strategy}' needs 'unique', the number of unique blocks in [1, ${L}]`);
      }
      U = checkInt('sharing', c.unique, 'unique', 1, L, ` (strategy '${strategy}' over ${L} layers)`);
      attention = assignments(strategy, L, U);
      ffn = attention.slice();
      break;
    }
    case 'attention':
      attention = new Array<number>(L).fill(0);
      ffn = assignments('none', L, L);
      break;
    case 'ffn':
      attention = assignments('none', L, L);
      ffn = new Array<number>(L).fill(0);
      break;
    case 'custom': {
      const spec = c.custom;
      if (spec === undefined) {
        throw new TypeError(`sharing: strategy 'custom' needs 'custom': a list of ${L} block indices, or { attention, ffn } lists`);
      }
      if (Array.isArray(spec)) {
        attention = checkIndexList(spec, 'custom', L);
        ffn = attention.slice();
      } else if (typeof spec === 'object' && spec !== null) {
        const keys = Object.keys(spec);
        for (const k of keys) {
          if (k !== 'attention' && k !== 'ffn') throw new TypeError(`sharing: unknown key ${JSON.stringify(k)} in custom; the keys are attention, ffn`);
        }
        const o = spec as { attention?: unknown; ffn?: unknown };
        if (o.attention === undefined || o.ffn === undefined) {
          throw new TypeError(`sharing: custom as an object needs both 'attention' and 'ffn' index lists`);
        }
        attention = checkIndexList(o.attention, 'custom.attention', L);
        ffn = checkIndexList(o.ffn, 'custom.ffn', L);
      } else {
        throw new TypeError(`sharing: custom must be an array of block indices or { attention, ffn }, got ${describeValue(spec)}`);
      }
      break;
    }
    case 'basis':
    case 'delta': {
      if (c.rank === undefined) {
        throw new TypeError(`sharing: strategy '${strategy}' needs 'rank', the ${strategy === 'basis' ? 'shared basis width' : 'per-layer delta rank'} r >= 1`);
      }
      rank = checkInt('sharing', c.rank, 'rank', 1, Infinity, ` (strategy '${strategy}')`);
      if (dims !== undefined) {
        checkRank(strategy, rank, L, [
          ['d x d (Wq, Wo)', dims.dModel, dims.dModel],
          ['d x dFF (W1)', dims.dModel, dims.dFF],
          ['dFF x d (W2)', dims.dFF, dims.dModel],
        ]);
        // Wk, Wv exist only in the layers that compute their own K,V: ceil(L / s) of them.
        if (dims.kvDim !== undefined) checkRank(strategy, rank, Math.ceil(L / s), [['d x kvDim (Wk, Wv)', dims.dModel, dims.kvDim]]);
      }
      attention = assignments('none', L, L);
      ffn = attention.slice();
      break;
    }
    default: // none, all, sandwich
      attention = assignments(strategy, L, L);
      ffn = attention.slice();
  }

  const layers: LayerPlan[] = attention.map((a, l) => Object.freeze({ attention: a, ffn: ffn[l], kvSource: l - (l % s) }));
  const uniqueAttention = Math.max(...attention) + 1;
  const uniqueFfn = Math.max(...ffn) + 1;

  const describe = (): string => {
    const list = (xs: number[]) => xs.join(' ');
    let text: string;
    if (strategy === 'basis') {
      text = `basis, rank ${rank}: W_l = W_S·C_l over ${plural(L, 'layer')} (W_S shared, C_l per layer)`;
    } else if (strategy === 'delta') {
      text = `delta, rank ${rank}: W_l = W_S + B_l·A_l over ${plural(L, 'layer')} (W_S shared, B_l, A_l per layer)`;
    } else if (attention.every((a, l) => a === ffn[l])) {
      text = `${strategy}, ${plural(uniqueAttention, 'unique block')} over ${plural(L, 'layer')}: ${list(attention)}`;
    } else {
      text =
        `${strategy}, ${plural(uniqueAttention, 'attention block')} and ${plural(uniqueFfn, 'FFN block')} over ` +
        `${plural(L, 'layer')}: attention ${list(attention)} | ffn ${list(ffn)}`;
    }
    if (s > 1) text += `; K,V shared in groups of ${s}: ${list(layers.map((p) => p.kvSource))}`;
    return text;
  };

  const plan: SharingPlan = {
    strategy,
    layers: Object.freeze(layers) as LayerPlan[],
    uniqueAttention,
    uniqueFfn,
    ...(rank !== undefined ? { rank } : {}),
    kvShareGroup: s,
    describe,
  };
  return Object.freeze(plan);
}

/**
 * Checks a basis / delta rank against matrices [name, in, out] used by n layers each:
 * basis must save parameters (in·r + n·r·out < n·in·out), delta needs r < min(in, out). Throws RangeError.
 */
export function checkRank(strategy: 'basis' | 'delta', r: number, n: number, matrices: [string, number, number][]): void {
  for (const [name, inDim, outDim] of matrices) {
    if (strategy === 'basis') {
      if (inDim * r + n * r * outDim >= n * inDim * outDim) {
        throw new RangeError(
          `sharing: basis rank ${r} saves no parameters for the ${name} matrices (${inDim} x ${outDim}) over ${plural(n, 'layer')}: ` +
            `${inDim}·${r} + ${n}·${r}·${outDim} >= ${n}·${inDim}·${outDim}; use rank <= ${maxBasisRank(inDim, outDim, n)}`,
        );
      }
    } else if (r >= Math.min(inDim, outDim)) {
      throw new RangeError(
        `sharing: delta rank ${r} must be below min(in, out) = ${Math.min(inDim, outDim)} of the ${name} matrices (${inDim} x ${outDim})`,
      );
    }
  }
}

/**
 * The layers a plan applies at a given depth (default: the plan's own L). A depth other than L (Universal
 * Transformer's run-time depth) is allowed only for 'all' (every layer block 0) and 'cycle' (layer l uses block
 * l mod U); kvSource keeps its rule l - (l mod s) over the applied layers.
 */
export function appliedLayers(plan: SharingPlan, depth?: number): LayerPlan[] {
  if (typeof plan !== 'object' || plan === null || !Array.isArray(plan.layers)) throw new TypeError('sharing: appliedLayers needs a plan made by makePlan()');
  const L = plan.layers.length;
  if (depth === undefined || depth === L) {
    if (depth !== undefined) checkInt('sharing', depth, 'depth', 1, MAX_LAYERS);
    return plan.layers.slice();
  }
  checkInt('sharing', depth, 'depth', 1, MAX_LAYERS);
  if (plan.strategy !== 'all' && plan.strategy !== 'cycle') {
    throw new RangeError(
      `sharing: a run-time depth override needs strategy all or cycle (the plan is '${plan.strategy}' over ${L} layers, depth ${depth} asked)`,
    );
  }
  const U = plan.uniqueAttention;
  const s = plan.kvShareGroup;
  const out: LayerPlan[] = [];
  for (let l = 0; l < depth; l++) {
    const b = plan.strategy === 'all' ? 0 : l % U;
    out.push(Object.freeze({ attention: b, ffn: b, kvSource: l - (l % s) }));
  }
  return out;
}

/**
 * The attention blocks that own K and V projections: those used by at least one layer that computes its own K,V
 * (a CLA group leader, kvSource == layer). Without CLA that is every block. Ascending block indices.
 */
export function kvProjectionBlocks(plan: SharingPlan): number[] {
  const owns = new Set<number>();
  plan.layers.forEach((p, l) => {
    if (p.kvSource === l) owns.add(p.attention);
  });
  return [...owns].sort((a, b) => a - b);
}
