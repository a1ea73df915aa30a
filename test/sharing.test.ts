// Sharing plans and their accounting: pure TypeScript, no addon needed.
import test from 'ava';
import { makePlan, appliedLayers, kvProjectionBlocks, maxBasisRank, type SharingConfig } from '../lib/sharing/plan.ts';
import { accountDecoder, accountEncoder, type ModelDims } from '../lib/sharing/accounting.ts';

const assign = (config: Partial<SharingConfig> | undefined, L: number) => {
  const p = makePlan(config, L);
  return { attention: p.layers.map((x) => x.attention), ffn: p.layers.map((x) => x.ffn) };
};
const both = (config: Partial<SharingConfig>, L: number) => {
  const a = assign(config, L);
  if (a.attention.join() !== a.ffn.join()) throw new Error(`attention and ffn differ for ${JSON.stringify(config)}`);
  return a.attention;
};
const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const sharingError = (Cls: typeof TypeError | typeof RangeError, pattern?: RegExp) => ({
  instanceOf: Cls,
  message: (m: string) => m.startsWith('sharing: ') && (pattern === undefined || pattern.test(m)),
});

// ---------------------------------------------------------------- assignments

test('none, all, attention, ffn', (t) => {
  for (const L of [1, 2, 6, 12]) {
    t.deepEqual(both({ strategy: 'none' }, L), range(L));
    t.deepEqual(both({}, L), range(L)); // default
    t.deepEqual(assign(undefined, L).attention, range(L));
    t.deepEqual(both({ strategy: 'all' }, L), new Array(L).fill(0));
    t.deepEqual(assign({ strategy: 'attention' }, L), { attention: new Array(L).fill(0), ffn: range(L) });
    t.deepEqual(assign({ strategy: 'ffn' }, L), { attention: range(L), ffn: new Array(L).fill(0) });
  }
  const p = makePlan({ strategy: 'attention' }, 6);
  t.is(p.uniqueAttention, 1);
  t.is(p.uniqueFfn, 6);
  t.is(makePlan({ strategy: 'all' }, 6).uniqueAttention, 1);
  t.is(makePlan({ strategy: 'none' }, 6).uniqueFfn, 6);
});

test('sequence: floor(l*U/L), every block used in consecutive runs', (t) => {
  t.deepEqual(both({ strategy: 'sequence', unique: 3 }, 6), [0, 0, 1, 1, 2, 2]);
  t.deepEqual(both({ strategy: 'sequence', unique: 2 }, 6), [0, 0, 0, 1, 1, 1]);
  t.deepEqual(both({ strategy: 'sequence', unique: 2 }, 5), [0, 0, 0, 1, 1]);
  t.deepEqual(both({ strategy: 'sequence', unique: 3 }, 7), [0, 0, 0, 1, 1, 2, 2]);
  t.deepEqual(both({ strategy: 'sequence', unique: 1 }, 4), [0, 0, 0, 0]);
  t.deepEqual(both({ strategy: 'sequence', unique: 5 }, 5), range(5));
  for (let L = 1; L <= 16; L++) {
    for (let U = 1; U <= L; U++) {
      const a = both({ strategy: 'sequence', unique: U }, L);
      t.deepEqual([...new Set(a)], range(U)); // each block once, in order, as one run
      t.is(makePlan({ strategy: 'sequence', unique: U }, L).uniqueAttention, U);
    }
  }
});

test('cycle: l mod U', (t) => {
  t.deepEqual(both({ strategy: 'cycle', unique: 2 }, 6), [0, 1, 0, 1, 0, 1]);
  t.deepEqual(both({ strategy: 'cycle', unique: 3 }, 7), [0, 1, 2, 0, 1, 2, 0]);
  t.deepEqual(both({ strategy: 'cycle', unique: 1 }, 3), [0, 0, 0]);
  t.deepEqual(both({ strategy: 'cycle', unique: 4 }, 4), [0, 1, 2, 3]);
});

// The released code (takase/share_layer_params, share_type 'cycle_reverse') builds the layer list in three loops;
// simulated here step by step, independently of the closed form in plan.ts.
function releasedCycleRev(L: number, U: number): number[] {
  const layers: number[] = [];
  for (let i = 0; i < U; i++) layers.push(i);
  for (let i = 0; i < L - 2 * U; i++) layers.push(layers[i % U]);
  const base = layers.slice(0, U);
  const rest = L - layers.length;
  for (let i = 0; i < rest; i++) layers.push(base[base.length - ((i % U) + 1)]);
  return layers;
}

test('cycle-rev: the two documented examples and the released code for every (L, U)', (t) => {
  t.deepEqual(both({ strategy: 'cycle-rev', unique: 3 }, 6), [0, 1, 2, 2, 1, 0]);
  t.deepEqual(both({ strategy: 'cycle-rev', unique: 3 }, 5), [0, 1, 2, 2, 1]);
  t.deepEqual(both({ strategy: 'cycle-rev', unique: 3 }, 7), [0, 1, 2, 0, 2, 1, 0]);
  t.deepEqual(both({ strategy: 'cycle-rev', unique: 2 }, 8), [0, 1, 0, 1, 0, 1, 1, 0]);
  t.deepEqual(both({ strategy: 'cycle-rev', unique: 6 }, 12), [0, 1, 2, 3, 4, 5, 5, 4, 3, 2, 1, 0]);
  t.deepEqual(both({ strategy: 'cycle-rev', unique: 4 }, 4), [0, 1, 2, 3]);
  t.deepEqual(both({ strategy: 'cycle-rev', unique: 1 }, 3), [0, 0, 0]);
  for (let L = 1; L <= 24; L++) {
    for (let U = 1; U <= L; U++) {
      t.deepEqual(both({ strategy: 'cycle-rev', unique: U }, L), releasedCycleRev(L, U), `L=${L} U=${U}`);
      t.is(makePlan({ strategy: 'cycle-rev', unique: U }, L).uniqueAttention, U);
    }
  }
});

test('sandwich: first and last unique, the middle shared', (t) => {
  t.deepEqual(both({ strategy: 'sandwich' }, 1), [0]);
  t.deepEqual(both({ strategy: 'sandwich' }, 2), [0, 1]);
  t.deepEqual(both({ strategy: 'sandwich' }, 3), [0, 1, 2]);
  t.deepEqual(both({ strategy: 'sandwich' }, 6), [0, 1, 1, 1, 1, 2]);
  t.is(makePlan({ strategy: 'sandwich' }, 12).uniqueAttention, 3);
  t.is(makePlan({ strategy: 'sandwich' }, 2).uniqueFfn, 2);
});

test('custom: one list or per sub-layer', (t) => {
  t.deepEqual(both({ strategy: 'custom', custom: [0, 1, 0, 2, 2, 1] }, 6), [0, 1, 0, 2, 2, 1]);
  const p = makePlan({ strategy: 'custom', custom: { attention: [0, 0, 1, 1, 2, 2], ffn: [0, 1, 0, 1, 0, 1] } }, 6);
  t.deepEqual(p.layers.map((x) => x.attention), [0, 0, 1, 1, 2, 2]);
  t.deepEqual(p.layers.map((x) => x.ffn), [0, 1, 0, 1, 0, 1]);
  t.is(p.uniqueAttention, 3);
  t.is(p.uniqueFfn, 2);
  // The plan keeps its own copy.
  const list = [0, 1, 1];
  const q = makePlan({ strategy: 'custom', custom: list }, 3);
  list[2] = 0;
  t.is(q.layers[2].attention, 1);
});

test('basis and delta: every layer its own factor slot, rank recorded', (t) => {
  for (const strategy of ['basis', 'delta'] as const) {
    const p = makePlan({ strategy, rank: 8 }, 6);
    t.deepEqual(p.layers.map((x) => x.attention), range(6));
    t.deepEqual(p.layers.map((x) => x.ffn), range(6));
    t.is(p.uniqueAttention, 6);
    t.is(p.uniqueFfn, 6);
    t.is(p.rank, 8);
  }
  t.is(makePlan({ strategy: 'cycle', unique: 2 }, 4).rank, undefined);
});

test('kvShareGroup: kvSource = l - (l mod s), with every strategy', (t) => {
  const kv = (config: Partial<SharingConfig>, L: number) => makePlan(config, L).layers.map((x) => x.kvSource);
  t.deepEqual(kv({}, 6), range(6));
  t.deepEqual(kv({ kvShareGroup: 1 }, 6), range(6));
  t.deepEqual(kv({ kvShareGroup: 2 }, 6), [0, 0, 2, 2, 4, 4]);
  t.deepEqual(kv({ kvShareGroup: 3 }, 7), [0, 0, 0, 3, 3, 3, 6]);
  t.deepEqual(kv({ kvShareGroup: 6 }, 6), [0, 0, 0, 0, 0, 0]);
  for (const config of [
    { strategy: 'all' },
    { strategy: 'cycle-rev', unique: 3 },
    { strategy: 'sandwich' },
    { strategy: 'custom', custom: [0, 1, 0, 1, 0, 1] },
    { strategy: 'basis', rank: 4 },
    { strategy: 'delta', rank: 4 },
  ] as Partial<SharingConfig>[]) {
    t.deepEqual(kv({ ...config, kvShareGroup: 4 }, 6), [0, 0, 0, 0, 4, 4]);
  }
  t.is(makePlan({ kvShareGroup: 2 }, 6).kvShareGroup, 2);
  t.is(makePlan({}, 6).kvShareGroup, 1);
  // K/V projections live only in blocks used by a K,V-computing layer.
  t.deepEqual(kvProjectionBlocks(makePlan({ kvShareGroup: 2 }, 6)), [0, 2, 4]);
  t.deepEqual(kvProjectionBlocks(makePlan({ strategy: 'cycle', unique: 2, kvShareGroup: 2 }, 6)), [0]);
  t.deepEqual(kvProjectionBlocks(makePlan({ strategy: 'cycle', unique: 3 }, 6)), [0, 1, 2]);
});

test('describe(): one line', (t) => {
  t.is(makePlan({ strategy: 'cycle-rev', unique: 3 }, 6).describe(), 'cycle-rev, 3 unique blocks over 6 layers: 0 1 2 2 1 0');
  t.is(makePlan({ strategy: 'all' }, 3).describe(), 'all, 1 unique block over 3 layers: 0 0 0');
  t.is(
    makePlan({ strategy: 'attention' }, 3).describe(),
    'attention, 1 attention block and 3 FFN blocks over 3 layers: attention 0 0 0 | ffn 0 1 2',
  );
  t.is(
    makePlan({ strategy: 'none', kvShareGroup: 2 }, 4).describe(),
    'none, 4 unique blocks over 4 layers: 0 1 2 3; K,V shared in groups of 2: 0 0 2 2',
  );
  t.regex(makePlan({ strategy: 'basis', rank: 8 }, 6).describe(), /^basis, rank 8: .*6 layers/);
  t.regex(makePlan({ strategy: 'delta', rank: 2 }, 6).describe(), /^delta, rank 2: .*6 layers/);
  for (const s of ['none', 'all', 'ffn', 'sandwich'] as const) t.false(makePlan({ strategy: s }, 5).describe().includes('\n'));
});

test('plans are immutable', (t) => {
  const p = makePlan({ strategy: 'cycle', unique: 2 }, 4);
  t.true(Object.isFrozen(p));
  t.true(Object.isFrozen(p.layers));
  t.true(Object.isFrozen(p.layers[0]));
});

// ---------------------------------------------------------------- validation

test('bad configs: unknown strategy / key / wrong types are TypeErrors naming the valid choices', (t) => {
  const e = t.throws(() => makePlan({ strategy: 'cyclic' as never }, 6), sharingError(TypeError));
  for (const s of ['none', 'all', 'attention', 'ffn', 'sequence', 'cycle', 'cycle-rev', 'sandwich', 'custom', 'basis', 'delta']) {
    t.true(e!.message.includes(s), s);
  }
  t.throws(() => makePlan({ strategy: 3 as never }, 6), sharingError(TypeError, /valid strategies/));
  t.throws(() => makePlan({ strategy: 'cycle', uniq: 3 } as never, 6), sharingError(TypeError, /unknown config key "uniq"/));
  t.throws(() => makePlan(null as never, 6), sharingError(TypeError));
  t.throws(() => makePlan('cycle' as never, 6), sharingError(TypeError));
  t.throws(() => makePlan({ strategy: 'cycle', unique: '3' as never }, 6), sharingError(TypeError, /unique/));
  t.throws(() => makePlan({ strategy: 'basis', rank: '8' as never }, 6), sharingError(TypeError, /rank/));
  t.throws(() => makePlan({ kvShareGroup: '2' as never }, 6), sharingError(TypeError, /kvShareGroup/));
  t.throws(() => makePlan({}, '6' as never), sharingError(TypeError, /numLayers/));
});

test('bad configs: missing required options', (t) => {
  for (const strategy of ['sequence', 'cycle', 'cycle-rev'] as const) {
    t.throws(() => makePlan({ strategy }, 6), sharingError(TypeError, /needs 'unique'/));
  }
  t.throws(() => makePlan({ strategy: 'basis' }, 6), sharingError(TypeError, /needs 'rank'/));
  t.throws(() => makePlan({ strategy: 'delta' }, 6), sharingError(TypeError, /needs 'rank'/));
  t.throws(() => makePlan({ strategy: 'custom' }, 6), sharingError(TypeError, /needs 'custom'/));
  t.throws(() => makePlan({ strategy: 'custom', custom: { attention: [0, 0, 0] } as never }, 3), sharingError(TypeError));
  t.throws(() => makePlan({ strategy: 'custom', custom: 3 as never }, 3), sharingError(TypeError));
});

test('bad configs: options a strategy does not use are rejected', (t) => {
  for (const strategy of ['none', 'all', 'attention', 'ffn', 'sandwich', 'basis', 'delta'] as const) {
    t.throws(() => makePlan({ strategy, unique: 2, rank: 2 }, 6), sharingError(TypeError, /'unique' applies only/));
  }
  t.throws(() => makePlan({ strategy: 'custom', custom: [0, 0], unique: 1 }, 2), sharingError(TypeError, /'unique'/));
  for (const strategy of ['none', 'all', 'sequence', 'cycle', 'cycle-rev', 'sandwich'] as const) {
    const extra = strategy.startsWith('cycle') || strategy === 'sequence' ? { unique: 2 } : {};
    t.throws(() => makePlan({ strategy, ...extra, rank: 4 }, 6), sharingError(TypeError, /'rank' applies only/));
  }
  t.throws(() => makePlan({ strategy: 'cycle', unique: 2, custom: [0, 1] }, 2), sharingError(TypeError, /'custom'/));
});

test('bad configs: out-of-range values are RangeErrors', (t) => {
  for (const strategy of ['sequence', 'cycle', 'cycle-rev'] as const) {
    for (const unique of [0, -1, 7, 2.5, NaN, Infinity]) {
      t.throws(() => makePlan({ strategy, unique }, 6), sharingError(RangeError, /unique/), `${strategy} ${unique}`);
    }
  }
  for (const rank of [0, -3, 1.5]) t.throws(() => makePlan({ strategy: 'basis', rank }, 6), sharingError(RangeError, /rank/));
  for (const s of [0, 7, 1.5]) t.throws(() => makePlan({ kvShareGroup: s }, 6), sharingError(RangeError, /kvShareGroup/));
  for (const L of [0, -1, 2.5]) t.throws(() => makePlan({}, L), sharingError(RangeError, /numLayers/));
});

test('bad configs: custom lists', (t) => {
  const custom = (c: SharingConfig['custom'], L = 4) => () => makePlan({ strategy: 'custom', custom: c }, L);
  t.throws(custom([0, 1, 2]), sharingError(RangeError, /3 entries.*4 layers/));
  t.throws(custom([0, 1, 2, 3, 0]), sharingError(RangeError, /entries/));
  t.throws(custom([0, 2, 2, 0]), sharingError(RangeError, /never block 1/));
  t.throws(custom([1, 1, 1, 1]), sharingError(RangeError, /never block 0/));
  t.throws(custom([0, 1, 4, 1]), sharingError(RangeError, /custom\[2\] = 4/));
  t.throws(custom([0, -1, 0, 0]), sharingError(RangeError));
  t.throws(custom([0, 0.5, 0, 0]), sharingError(RangeError));
  t.throws(custom([0, '1', 0, 0] as never), sharingError(TypeError));
  t.throws(custom({ attention: [0, 0, 0, 0], ffn: [0, 2, 1, 3, 0] }), sharingError(RangeError, /custom\.ffn/));
  t.throws(custom({ attention: [0, 0, 3, 0], ffn: [0, 0, 0, 0] }), sharingError(RangeError, /custom\.attention.*never/));
  t.throws(custom({ attention: [0, 0, 0, 0], ffn: [0, 0, 0, 0], extra: [] } as never), sharingError(TypeError, /extra/));
});

test('basis rank must save parameters (checked when dims are given)', (t) => {
  // L=6, d=64, F=256: the d x d matrices bind: 64r + 6·r·64 < 6·64·64  <=>  r < 54.86.
  const dims = { dModel: 64, dFF: 256 };
  t.is(maxBasisRank(64, 64, 6), 54);
  t.notThrows(() => makePlan({ strategy: 'basis', rank: 54 }, 6, dims));
  t.throws(() => makePlan({ strategy: 'basis', rank: 55 }, 6, dims), sharingError(RangeError, /saves no parameters.*rank <= 54/));
  t.notThrows(() => makePlan({ strategy: 'basis', rank: 55 }, 6)); // no dims: no check
  // The rule itself, by hand, for the three shapes over a sweep of ranks: reject iff d*r + L*r*d' >= L*d*d'.
  for (let r = 1; r <= 80; r++) {
    const saves = [[64, 64], [64, 256], [256, 64]].every(([a, b]) => a * r + 6 * r * b < 6 * a * b);
    if (saves) t.notThrows(() => makePlan({ strategy: 'basis', rank: r }, 6, dims), `r=${r}`);
    else t.throws(() => makePlan({ strategy: 'basis', rank: r }, 6, dims), sharingError(RangeError), `r=${r}`);
  }
  // Wk, Wv (64 x 32) over 6 layers: 64r + 6·r·32 < 6·64·32 <=> r < 48 (r = 48 is exactly equal: rejected).
  const withKv = { ...dims, kvDim: 32 };
  t.notThrows(() => makePlan({ strategy: 'basis', rank: 47 }, 6, withKv));
  t.throws(() => makePlan({ strategy: 'basis', rank: 48 }, 6, withKv), sharingError(RangeError, /Wk, Wv/));
  // With kvShareGroup 2 only 3 layers own Wk/Wv: 64r + 3·r·32 < 3·64·32 <=> r < 38.4.
  t.notThrows(() => makePlan({ strategy: 'basis', rank: 38, kvShareGroup: 2 }, 6, withKv));
  t.throws(() => makePlan({ strategy: 'basis', rank: 39, kvShareGroup: 2 }, 6, withKv), sharingError(RangeError));
});

test('delta rank must be below min(d, d\') (checked when dims are given)', (t) => {
  const dims = { dModel: 64, dFF: 256 };
  t.notThrows(() => makePlan({ strategy: 'delta', rank: 63 }, 6, dims));
  t.throws(() => makePlan({ strategy: 'delta', rank: 64 }, 6, dims), sharingError(RangeError, /delta rank 64/));
  t.throws(() => makePlan({ strategy: 'delta', rank: 32 }, 6, { ...dims, kvDim: 32 }), sharingError(RangeError));
  t.notThrows(() => makePlan({ strategy: 'delta', rank: 31 }, 6, { ...dims, kvDim: 32 }));
  t.throws(() => makePlan({ strategy: 'delta', rank: 4 }, 6, { dModel: 0, dFF: 256 }), sharingError(RangeError, /dModel/));
});

// ---------------------------------------------------------------- accounting

// V=1000, d=64, 4 heads (Dh=16), 2 KV heads (K,V width 32), F=256, L=6, S=128, biases, untied head.
const dims: ModelDims = { vocab: 1000, dModel: 64, heads: 4, kvHeads: 2, dFF: 256, layers: 6, maxSeq: 128, tiedEmbeddings: false, bias: true };

// Closed forms, written out by hand from the layout contract.
const d = 64, V = 1000, F = 256, S = 128, L = 6, dkv = 32;
const LN = 2 * d;
const Q = d * d + d, O = d * d + d, K = d * dkv + dkv, VV = d * dkv + dkv;
const ATTN = LN + Q + K + VV + O; // one attention block
const FFN = LN + (d * F + F) + (F * d + d); // one FFN block
const EDGES = V * d /* embedding */ + S * d /* positions */ + LN /* final norm */ + V * d /* untied head */;

test('closed forms: the block sizes by hand', (t) => {
  t.is(ATTN, 12608);
  t.is(FFN, 33216);
  t.is(EDGES, 136320);
  t.is(accountDecoder(dims, makePlan({}, 6)).uniqueParameters, 411264);
});

test('unique parameters for every strategy equal the closed forms', (t) => {
  const count = (config: Partial<SharingConfig>) => accountDecoder(dims, makePlan(config, L)).uniqueParameters;
  t.is(count({ strategy: 'none' }), EDGES + L * (ATTN + FFN));
  t.is(count({ strategy: 'all' }), EDGES + 1 * (ATTN + FFN));
  t.is(count({ strategy: 'attention' }), EDGES + 1 * ATTN + L * FFN);
  t.is(count({ strategy: 'ffn' }), EDGES + L * ATTN + 1 * FFN);
  for (const U of [1, 2, 3, 6]) {
    t.is(count({ strategy: 'sequence', unique: U }), EDGES + U * (ATTN + FFN));
    t.is(count({ strategy: 'cycle', unique: U }), EDGES + U * (ATTN + FFN));
    t.is(count({ strategy: 'cycle-rev', unique: U }), EDGES + U * (ATTN + FFN));
  }
  t.is(count({ strategy: 'sandwich' }), EDGES + 3 * (ATTN + FFN));
  t.is(count({ strategy: 'custom', custom: [0, 1, 0, 1, 2, 2] }), EDGES + 3 * (ATTN + FFN));
  t.is(count({ strategy: 'custom', custom: { attention: [0, 0, 1, 1, 2, 2], ffn: [0, 1, 0, 1, 0, 1] } }), EDGES + 3 * ATTN + 2 * FFN);
});

test('ratios: all/none ≈ 1/L for the layer part; parameter bytes = 4 x count', (t) => {
  const none = accountDecoder(dims, makePlan({ strategy: 'none' }, L));
  const all = accountDecoder(dims, makePlan({ strategy: 'all' }, L));
  const layerPart = (a: typeof none) => a.breakdown.attention + a.breakdown.ffn;
  t.is(layerPart(all) / layerPart(none), 1 / L);
  const cycle3 = accountDecoder(dims, makePlan({ strategy: 'cycle', unique: 3 }, L));
  t.is(layerPart(cycle3) / layerPart(none), 3 / L);
  t.is(none.parameterBytes, 4 * none.uniqueParameters);
  t.is(accountDecoder(dims, makePlan({}, L), { bytesPerParam: 2 }).parameterBytes, 2 * none.uniqueParameters);
  // The breakdown sums to the total and names the parts.
  for (const a of [none, all, cycle3]) t.is(Object.values(a.breakdown).reduce((x, y) => x + y, 0), a.uniqueParameters);
  t.deepEqual(none.breakdown, {
    tokenEmbedding: V * d,
    embeddingProjection: 0,
    positionalEmbedding: S * d,
    attention: L * ATTN,
    ffn: L * FFN,
    finalNorm: LN,
    head: V * d,
  });
});

test('basis and delta parameter counts equal their closed forms', (t) => {
  const r = 8;
  // basis: per matrix (in x out) one shared W_S (in x r) + L per-layer C_l (r x out); biases and LayerNorms per layer.
  const basisAttn =
    (d * r + L * r * d) /* Wq */ + 2 * (d * r + L * r * dkv) /* Wk, Wv */ + (d * r + L * r * d) /* Wo */ +
    L * (LN + d + dkv + dkv + d);
  const basisFfn = (d * r + L * r * F) /* W1 */ + (F * r + L * r * d) /* W2 */ + L * (LN + F + d);
  const basis = accountDecoder(dims, makePlan({ strategy: 'basis', rank: r }, L, dims));
  t.is(basis.breakdown.attention, basisAttn);
  t.is(basis.breakdown.ffn, basisFfn);
  t.is(basis.uniqueParameters, EDGES + basisAttn + basisFfn);
  t.true(basis.uniqueParameters < accountDecoder(dims, makePlan({}, L)).uniqueParameters);
  // delta: per matrix one shared W_S (in x out) + L per-layer B_l (in x r), A_l (r x out); biases, norms per layer.
  const deltaAttn =
    (d * d + L * (d * r + r * d)) + 2 * (d * dkv + L * (d * r + r * dkv)) + (d * d + L * (d * r + r * d)) +
    L * (LN + d + dkv + dkv + d);
  const deltaFfn = (d * F + L * (d * r + r * F)) + (F * d + L * (F * r + r * d)) + L * (LN + F + d);
  const delta = accountDecoder(dims, makePlan({ strategy: 'delta', rank: r }, L));
  t.is(delta.uniqueParameters, EDGES + deltaAttn + deltaFfn);
  // delta sits between all (shared only) and none.
  t.true(delta.uniqueParameters > accountDecoder(dims, makePlan({ strategy: 'all' }, L)).uniqueParameters);
  t.true(delta.uniqueParameters < accountDecoder(dims, makePlan({ strategy: 'none' }, L)).uniqueParameters);
});

test('accounting re-checks basis / delta ranks against every matrix, K/V included', (t) => {
  // makePlan without kvDim cannot see the 64 x 32 K/V matrices; accounting can.
  t.notThrows(() => accountDecoder(dims, makePlan({ strategy: 'basis', rank: 47 }, L)));
  t.throws(() => accountDecoder(dims, makePlan({ strategy: 'basis', rank: 48 }, L)), sharingError(RangeError, /Wk, Wv/));
  t.throws(() => accountDecoder(dims, makePlan({ strategy: 'basis', rank: 60 }, L)), sharingError(RangeError, /Wq, Wo/));
  t.notThrows(() => accountDecoder(dims, makePlan({ strategy: 'delta', rank: 31 }, L)));
  t.throws(() => accountDecoder(dims, makePlan({ strategy: 'delta', rank: 32 }, L)), sharingError(RangeError, /delta rank 32/));
});

test('embeddings: tied, factorized, no bias', (t) => {
  const tied = accountDecoder({ ...dims, tiedEmbeddings: true }, makePlan({}, L));
  t.is(tied.uniqueParameters, EDGES - V * d + L * (ATTN + FFN));
  t.is(tied.breakdown.head, 0);
  const E = 16;
  const fact = accountDecoder({ ...dims, factorizedEmbedding: E }, makePlan({}, L));
  t.is(fact.breakdown.tokenEmbedding, V * E);
  t.is(fact.breakdown.embeddingProjection, E * d + d);
  t.is(fact.breakdown.head, V * d); // untied head stays V x d
  const factTied = accountDecoder({ ...dims, factorizedEmbedding: E, tiedEmbeddings: true }, makePlan({}, L));
  t.is(factTied.breakdown.head, d * E + E); // d x E out-projection (+ bias), E x V tied to the table
  t.is(factTied.uniqueParameters, V * E + (E * d + d) + S * d + LN + (d * E + E) + L * (ATTN + FFN));
  const noBias = accountDecoder({ ...dims, bias: false }, makePlan({}, L));
  const attnNoBias = LN + d * d + 2 * d * dkv + d * d;
  const ffnNoBias = LN + d * F + F * d;
  t.is(noBias.uniqueParameters, EDGES + L * (attnNoBias + ffnNoBias));
});

test('KV-cache bytes per token: 2 x kvHeads x Dh x bytes per K,V-computing layer', (t) => {
  const perLayer = 2 * 2 * 16 * 4; // K and V, 2 KV heads of 16, fp32
  const kv = (s: number, config: Partial<SharingConfig> = {}) =>
    accountDecoder(dims, makePlan({ ...config, kvShareGroup: s }, L)).kvCacheBytesPerToken;
  t.is(kv(1), 6 * perLayer);
  t.is(kv(2), 3 * perLayer);
  t.is(kv(3), 2 * perLayer);
  t.is(kv(4), 2 * perLayer); // leaders 0 and 4
  t.is(kv(6), 1 * perLayer);
  t.is(kv(2, { strategy: 'all' }), 3 * perLayer); // sharing weights does not share the cache
  t.is(kv(1, { strategy: 'cycle', unique: 2 }), 6 * perLayer);
  t.is(accountDecoder({ ...dims, kvHeads: 4 }, makePlan({}, L)).kvCacheBytesPerToken, 6 * 2 * 4 * 16 * 4);
  t.is(accountDecoder(dims, makePlan({}, L), { bytesPerParam: 2 }).kvCacheBytesPerToken, 6 * 2 * 2 * 16 * 2);
  t.is(accountDecoder(dims, makePlan({}, L), { kvBytesPerElement: 1 }).kvCacheBytesPerToken, 6 * 2 * 2 * 16);
  t.is(accountEncoder(dims, makePlan({}, L)).kvCacheBytesPerToken, 0);
});

test('CLA: K/V projections exist only in blocks a K,V-computing layer uses', (t) => {
  const kvWeights = d * dkv + dkv; // one of Wk, Wv with bias
  // none, s = 2: layers 1, 3, 5 reuse their leader's K,V, so their blocks have no Wk/Wv.
  t.is(accountDecoder(dims, makePlan({ kvShareGroup: 2 }, L)).breakdown.attention, L * ATTN - 3 * 2 * kvWeights);
  // all, s = 2: the one block is used by leaders.
  t.is(accountDecoder(dims, makePlan({ strategy: 'all', kvShareGroup: 2 }, L)).breakdown.attention, ATTN);
  // cycle U=2, s=2: leaders 0, 2, 4 all use block 0; block 1 has no Wk/Wv.
  t.is(accountDecoder(dims, makePlan({ strategy: 'cycle', unique: 2, kvShareGroup: 2 }, L)).breakdown.attention, 2 * ATTN - 2 * kvWeights);
  // basis, s = 3: C_l for Wk, Wv only in layers 0 and 3.
  const r = 4;
  const a = accountDecoder(dims, makePlan({ strategy: 'basis', rank: r, kvShareGroup: 3 }, L));
  t.is(a.breakdown.attention, 2 * (d * r + L * r * d) + 2 * (d * r + 2 * r * dkv) + L * (LN + 2 * d) + 2 * 2 * dkv);
});

// FLOPs per token by hand: 2 x multiply-adds + 2·2·T·d attention per applied layer, T = S/2 (causal).
const T = S / 2;
const layerFlops = 2 * (d * d + 2 * d * dkv + d * d + d * F + F * d) + 2 * 2 * T * d;
const headFlops = 2 * d * V;

test('FLOPs per token: the closed form, scaling with applied depth, not with unique blocks', (t) => {
  const none = accountDecoder(dims, makePlan({}, L));
  t.is(none.flopsPerToken, L * layerFlops + headFlops);
  t.is(none.appliedDepth, L);
  for (const config of [
    { strategy: 'all' },
    { strategy: 'attention' },
    { strategy: 'cycle', unique: 2 },
    { strategy: 'cycle-rev', unique: 3 },
    { strategy: 'sequence', unique: 3 },
    { strategy: 'sandwich' },
  ] as Partial<SharingConfig>[]) {
    t.is(accountDecoder(dims, makePlan(config, L)).flopsPerToken, none.flopsPerToken, JSON.stringify(config));
  }
  // Depth 12 on 'all' doubles the layer part, parameters unchanged.
  const all = accountDecoder(dims, makePlan({ strategy: 'all' }, L));
  const deep = accountDecoder(dims, makePlan({ strategy: 'all' }, L), { depth: 12 });
  t.is(deep.flopsPerToken, 12 * layerFlops + headFlops);
  t.is(deep.flopsPerToken - headFlops, 2 * (all.flopsPerToken - headFlops));
  t.is(deep.uniqueParameters, all.uniqueParameters);
  // Encoder: T = S (bidirectional); explicit context.
  t.is(accountEncoder(dims, makePlan({}, L)).flopsPerToken, L * (layerFlops + 2 * 2 * (S - T) * d) + headFlops);
  t.is(accountDecoder(dims, makePlan({}, L), { context: 10 }).flopsPerToken, L * (layerFlops + 2 * 2 * (10 - T) * d) + headFlops);
  // CLA: non-leaders skip the K,V projections.
  t.is(accountDecoder(dims, makePlan({ kvShareGroup: 2 }, L)).flopsPerToken, L * layerFlops - 3 * 2 * 2 * d * dkv + headFlops);
  // Factorized tied head: E x d in, d x E then E x V out.
  const E = 16;
  t.is(
    accountDecoder({ ...dims, factorizedEmbedding: E, tiedEmbeddings: true }, makePlan({}, L)).flopsPerToken,
    L * layerFlops + 2 * (E * d) + 2 * (d * E + E * V),
  );
  // basis / delta apply the factors: basis (in·r + r·out), delta (in·out + in·r + r·out) per matrix.
  const r = 8;
  const mm = [[d, d], [d, dkv], [d, dkv], [d, d], [d, F], [F, d]];
  const basisLayer = 2 * mm.reduce((s, [a, b]) => s + a * r + r * b, 0) + 2 * 2 * T * d;
  const deltaLayer = 2 * mm.reduce((s, [a, b]) => s + a * b + a * r + r * b, 0) + 2 * 2 * T * d;
  t.is(accountDecoder(dims, makePlan({ strategy: 'basis', rank: r }, L)).flopsPerToken, L * basisLayer + headFlops);
  t.is(accountDecoder(dims, makePlan({ strategy: 'delta', rank: r }, L)).flopsPerToken, L * deltaLayer + headFlops);
});

test('depth override: all and cycle only', (t) => {
  const cycle = makePlan({ strategy: 'cycle', unique: 3 }, L);
  const a = accountDecoder(dims, cycle, { depth: 8 });
  t.is(a.appliedDepth, 8);
  t.deepEqual(a.perLayer.map((p) => p.attention), [0, 1, 2, 0, 1, 2, 0, 1]);
  t.deepEqual(a.perLayer.map((p) => p.ffn), [0, 1, 2, 0, 1, 2, 0, 1]);
  t.deepEqual(a.perLayer.map((p) => p.layer), range(8));
  t.is(a.flopsPerToken, 8 * layerFlops + headFlops);
  t.is(a.kvCacheBytesPerToken, 8 * 2 * 2 * 16 * 4);
  t.is(accountDecoder(dims, cycle, { depth: 2 }).appliedDepth, 2);
  t.deepEqual(appliedLayers(makePlan({ strategy: 'all' }, 2), 3).map((p) => p.attention), [0, 0, 0]);
  // kvShareGroup follows the applied layers.
  const allKv = accountDecoder(dims, makePlan({ strategy: 'all', kvShareGroup: 2 }, L), { depth: 12 });
  t.deepEqual(allKv.perLayer.map((p) => p.kvSource), [0, 0, 2, 2, 4, 4, 6, 6, 8, 8, 10, 10]);
  t.is(allKv.kvCacheBytesPerToken, 6 * 2 * 2 * 16 * 4);
  // Other strategies: RangeError; depth equal to L is no override.
  for (const config of [
    { strategy: 'none' },
    { strategy: 'attention' },
    { strategy: 'sequence', unique: 3 },
    { strategy: 'cycle-rev', unique: 3 },
    { strategy: 'sandwich' },
    { strategy: 'custom', custom: [0, 1, 2, 0, 1, 2] },
    { strategy: 'basis', rank: 4 },
    { strategy: 'delta', rank: 4 },
  ] as Partial<SharingConfig>[]) {
    const plan = makePlan(config, L);
    t.throws(() => accountDecoder(dims, plan, { depth: 12 }), {
      instanceOf: RangeError,
      message: /^sharing: a run-time depth override needs strategy all or cycle/,
    });
    t.is(accountDecoder(dims, plan, { depth: L }).appliedDepth, L);
  }
  for (const depth of [0, -1, 2.5]) t.throws(() => accountDecoder(dims, cycle, { depth }), sharingError(RangeError, /depth/));
  // CLA + cycle: a deeper run may need K/V from a block that has none (U=2, s=3, L=3: only block 0 has Wk/Wv;
  // at depth 6 layer 3 computes K,V with block 1).
  const cla = makePlan({ strategy: 'cycle', unique: 2, kvShareGroup: 3 }, 3);
  const d3 = { ...dims, layers: 3 };
  t.notThrows(() => accountDecoder(d3, cla, { depth: 3 }));
  t.throws(() => accountDecoder(d3, cla, { depth: 6 }), sharingError(RangeError, /no K\/V projections/));
});

test('accounting validates dims and the plan/dims match', (t) => {
  const plan = makePlan({}, L);
  t.throws(() => accountDecoder({ ...dims, layers: 5 }, plan), sharingError(RangeError, /6 layers.*5/));
  t.throws(() => accountDecoder({ ...dims, heads: 5 }, plan), sharingError(RangeError, /divisible/));
  t.throws(() => accountDecoder({ ...dims, kvHeads: 3 }, plan), sharingError(RangeError, /kvHeads/));
  t.throws(() => accountDecoder({ ...dims, vocab: 0 }, plan), sharingError(RangeError, /vocab/));
  t.throws(() => accountDecoder({ ...dims, dModel: '64' as never }, plan), sharingError(TypeError, /dModel/));
  t.throws(() => accountDecoder({ ...dims, bias: 1 as never }, plan), sharingError(TypeError, /bias/));
  t.throws(() => accountDecoder(dims, plan, { bytesPerParam: 0 }), sharingError(RangeError, /bytesPerParam/));
});
