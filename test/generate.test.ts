// generate.test.ts — incremental decoding over a KV cache (lib/models/generate.ts, Decoder.generate): for several
// sharing strategies (none, all, cycle, cross-layer KV sharing, MQA, basis, delta, run-time depth) the logits of every
// position computed incrementally (prefill + one step per token) equal those of a full forward over the whole
// sequence, and greedy generation equals greedy decoding by repeated full forwards on the growing sequence; sampling
// is deterministic per seed and differs across seeds; topK = 1, a tiny topP and temperature 0 are greedy; the sampler
// draws from the right (top-k / nucleus-restricted) distribution; eos stops early; bad prompts and options reject with
// exact error classes naming Decoder.generate; memory() counts return to where they were after every call.
import anyTest, { type ExecutionContext } from 'ava';

import { memory, synchronizeSync, tensor } from '../lib/index.ts';
import { native } from '../lib/native.ts';
import { Decoder, type DecoderConfig } from '../lib/models/decoder.ts';
import { DecodeSession, decodeLogits, sampleToken, seededRandom } from '../lib/models/generate.ts';
import { noGrad, scope } from '../lib/autograd.ts';
import { assertClose } from './helpers/close.ts';
import { type ErrorClass } from './helpers/check.ts';
import { Random } from './helpers/random.ts';

const test = anyTest.serial;

const base: DecoderConfig = { vocab: 13, dModel: 16, heads: 4, dFF: 24, layers: 4, maxSeq: 24, seed: 5 };
const strategies: [string, Partial<DecoderConfig>, { depth?: number }][] = [
  ['none', { sharing: { strategy: 'none' } }, {}],
  ['all', { sharing: { strategy: 'all' } }, {}],
  ['cycle U=2', { sharing: { strategy: 'cycle', unique: 2 } }, {}],
  ['all + cross-layer KV (s=2)', { sharing: { strategy: 'all', kvShareGroup: 2 } }, {}],
  ['none + MQA (kvHeads=1) + untied head', { kvHeads: 1, tiedEmbeddings: false }, {}],
  ['cycle U=2 + GQA (kvHeads=2) + cross-layer KV (s=3)', { kvHeads: 2, sharing: { strategy: 'cycle', unique: 2, kvShareGroup: 3 } }, {}],
  ['basis r=4', { sharing: { strategy: 'basis', rank: 4 } }, {}],
  ['delta r=3', { sharing: { strategy: 'delta', rank: 3 } }, {}],
  ['post-LN, cycle U=2 + cross-layer KV (s=2)', { norm: 'post', sharing: { strategy: 'cycle', unique: 2, kvShareGroup: 2 } }, {}],
  ['all + factorized embedding E=8 (tied)', { sharing: { strategy: 'all' }, factorizedEmbedding: 8 }, {}],
  ['factorized embedding E=8, untied head', { factorizedEmbedding: 8, tiedEmbeddings: false }, {}],
  ['all, run-time depth 6', { sharing: { strategy: 'all' } }, { depth: 6 }],
  ['cycle U=2 + cross-layer KV (s=2), run-time depth 5', { sharing: { strategy: 'cycle', unique: 2, kvShareGroup: 2 } }, { depth: 5 }],
];

/** A model whose parameters are all uniform in [-0.4, 0.4): attention far from uniform, logits of order 1. */
function model(extra: Partial<DecoderConfig> = {}, seed = 1): Decoder {
  const m = new Decoder({ ...base, ...extra });
  const v = m.store.values.sharedData() as Float32Array;
  const r = new Random(seed);
  for (let i = 0; i < v.length; i++) v[i] = r.uniform(-0.4, 0.4);
  return m;
}

function tokens(seed: number, n: number, V = base.vocab): number[] {
  const r = new Random(seed);
  return Array.from({ length: n }, () => r.below(V));
}

/** The logits (1, T, V) of a full forward over ids, as a flat array. */
function fullLogits(m: Decoder, ids: number[], depth?: number): Float32Array {
  return noGrad(() => {
    const x = tensor(Int32Array.from(ids), [1, ids.length]);
    const y = m.forward(x, { depth });
    const a = y.dataSync() as Float32Array;
    x.dispose();
    y.dispose();
    return a;
  });
}

/** Greedy decoding by full forwards on the growing sequence (no cache). */
function greedyByFullForward(m: Decoder, prompt: number[], n: number, depth?: number): number[] {
  const seq = prompt.slice();
  const V = m.config.vocab;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const a = fullLogits(m, seq, depth);
    const row = a.subarray((seq.length - 1) * V, seq.length * V);
    let best = 0;
    for (let j = 1; j < V; j++) if (row[j] > row[best]) best = j;
    out.push(best);
    seq.push(best);
  }
  return out;
}

const cpuCounts = () => {
  synchronizeSync(); // queued kernels hold their tensors' storages until they have run
  const c = memory().cpu;
  return { tensors: c.tensors, storages: c.storages, bytes: c.bytes };
};

/** Collects garbage left by earlier tests (Decoder.forward leaves its intermediates to the finalizers) before a baseline. */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    synchronizeSync();
    (globalThis as { gc?: () => void }).gc?.();
    await new Promise((r) => setImmediate(r));
  }
}

async function rejectsExactly(t: ExecutionContext, p: () => Promise<unknown>, cls: ErrorClass, message: RegExp, label: string): Promise<void> {
  const err = await t.throwsAsync(p, { instanceOf: cls, message }, label);
  if (err) t.is(err.constructor, cls, `${label}: expected exactly ${cls.name}, got ${err.constructor.name}: ${err.message}`);
}

// ---- the cache against the full forward ----------------------------------------------------------------------------

for (const [name, extra, { depth }] of strategies) {
  test(`incremental logits equal the full forward at every position, and greedy tokens match: ${name}`, async (t) => {
    const m = model(extra, 3);
    const V = m.config.vocab;
    const seq = tokens(11, 17);
    const want = fullLogits(m, seq, depth);
    for (const prefill of [1, 5, 17]) {
      const rows = await decodeLogits(m, seq, { prefill, depth });
      t.is(rows.length, seq.length);
      rows.forEach((row, pos) => assertClose(t, row, want.subarray(pos * V, (pos + 1) * V), { abs: 1e-5, rel: 1e-4, what: `prefill ${prefill}, position ${pos}` }));
    }
    const prompt = tokens(12, 4);
    const greedy = greedyByFullForward(m, prompt, 12, depth);
    t.deepEqual(await m.generate(prompt, { maxNewTokens: 12, temperature: 0, depth }), greedy, 'greedy generate = greedy full forwards');
    t.deepEqual(await m.generate(prompt, { maxNewTokens: 12, topK: 1, seed: 9, depth }), greedy, 'topK = 1 is greedy');
    m.store.dispose();
  });
}

// The recorded step replayed (the default) against the layer loop run from JavaScript at every step: the same kernels
// in the same order, so every step's logits are bit-identical, and so are the greedy tokens.
for (const [name, extra, { depth }] of strategies) {
  test(`a replayed step gives bit-identical logits to the step-by-step path: ${name}`, async (t) => {
    const m = model(extra, 8);
    const prompt = tokens(21, 3);
    const V = m.config.vocab;
    const run = async (replay: boolean) => {
      const s = new DecodeSession(m, 16, depth, { replay });
      t.is(s.replays, replay);
      const rows: Float32Array[] = [];
      const greedy: number[] = [];
      try {
        let l = s.prefill(prompt);
        for (let i = 0; i < 13; i++) {
          const row = (await l.data()) as Float32Array;
          l.dispose();
          rows.push(row);
          let best = 0;
          for (let j = 1; j < V; j++) if (row[j] > row[best]) best = j;
          greedy.push(best);
          // feed a fixed token sequence half the time, the greedy token otherwise (both paths alike)
          l = s.step(i % 2 ? best : (i * 5 + 1) % V);
        }
        l.dispose();
      } finally {
        s.dispose();
      }
      return { rows, greedy };
    };
    const byStep = await run(false);
    const replayed = await run(true);
    t.deepEqual(replayed.greedy, byStep.greedy, 'greedy tokens');
    replayed.rows.forEach((row, i) => t.deepEqual(Array.from(row), Array.from(byStep.rows[i]), `step ${i}: the logits, bit for bit`));
    m.store.dispose();
  });
}

// A replayed step is a constant number of native calls, whatever the depth; the step-by-step path makes several per op.
// Counted: the addon's functions (every op, allocation, isHandle ...); the TensorHandle's own methods (shape, dispose,
// clone) are non-writable properties that JavaScript cannot wrap, and add a constant few per step to either path.
test('a replayed step makes a few native calls, at least 10x fewer than the step-by-step path, independent of depth', (t) => {
  const addon = native() as unknown as Record<string, unknown>;
  const proto = (addon.TensorHandle as { prototype: Record<string, unknown> }).prototype;
  let calls = 0;
  const restore: (() => void)[] = [];
  const count = (o: Record<string, unknown>) => {
    for (const k of Object.getOwnPropertyNames(o)) {
      const d = Object.getOwnPropertyDescriptor(o, k);
      if (!d || typeof d.value !== 'function' || k === 'constructor' || k === 'TensorHandle' || !d.writable) continue;
      const f = d.value as (...a: unknown[]) => unknown;
      o[k] = function (this: unknown, ...a: unknown[]) {
        calls++;
        return f.apply(this, a);
      };
      restore.push(() => (o[k] = f));
    }
  };
  count(addon);
  count(proto);
  try {
    const perStep = (layers: number, replay: boolean) => {
      const m = model({ layers, sharing: { strategy: 'all' } }, 2);
      const s = new DecodeSession(m, 12, undefined, { replay });
      s.prefill([1, 2]).dispose();
      s.step(3).dispose(); // the replayed path records here
      const c0 = calls;
      for (const id of [4, 5, 6, 7]) s.step(id).dispose();
      const n = (calls - c0) / 4;
      s.dispose();
      m.store.dispose();
      return n;
    };
    const r4 = perStep(4, true), r12 = perStep(12, true), s4 = perStep(4, false), s12 = perStep(12, false);
    t.log(`native calls per step: replayed ${r4} (4 layers), ${r12} (12 layers); step by step ${s4}, ${s12}`);
    t.is(r4, r12, 'replayed: the same count at any depth');
    t.true(r4 <= 8, `replayed: a handful of calls (${r4})`);
    t.true(s4 >= 10 * r4, `step by step makes at least 10x more (${s4} vs ${r4})`);
    t.true(s12 > s4, 'step by step grows with depth');
  } finally {
    for (const r of restore) r();
  }
});

test('a layer that reuses K/V reads the source layer\'s cache: the session allocates caches for K/V-computing layers only', async (t) => {
  const m = model({ sharing: { strategy: 'all', kvShareGroup: 2 } });
  await settle();
  const before = cpuCounts();
  const s = new DecodeSession(m, 10);
  const after = cpuCounts();
  t.is(after.tensors - before.tensors, 4, 'two K/V-computing layers of four: two K and two V caches');
  t.is(after.bytes - before.bytes, 4 * (1 * 4 * 10 * 4) * 4, '(1, Hkv, capacity, Dh) floats each');
  t.is(s.position, 0);
  s.dispose();
  t.deepEqual(cpuCounts(), before);
  m.store.dispose();
});

test('the prompt may be an int32 tensor [T] or [1, T], and the result has the prompt excluded', async (t) => {
  const m = model();
  const prompt = tokens(21, 6);
  const want = await m.generate(prompt, { maxNewTokens: 7, temperature: 0 });
  t.is(want.length, 7);
  const p1 = tensor(Int32Array.from(prompt), [6]), p2 = tensor(Int32Array.from(prompt), [1, 6]);
  t.deepEqual(await m.generate(p1, { maxNewTokens: 7, temperature: 0 }), want);
  t.deepEqual(await m.generate(p2, { maxNewTokens: 7, temperature: 0 }), want);
  t.deepEqual(Array.from(p1.dataSync()), prompt, 'the prompt tensor is not changed');
  p1.dispose();
  p2.dispose();
  t.deepEqual(await m.generate(prompt, { maxNewTokens: 0 }), [], 'maxNewTokens 0');
  m.store.dispose();
});

test('a prompt plus maxNewTokens up to maxSeq is accepted; beyond it is a RangeError', async (t) => {
  const m = model();
  const prompt = tokens(31, 20);
  const out = await m.generate(prompt, { maxNewTokens: 4, temperature: 0 }); // exactly maxSeq = 24
  t.deepEqual(out, greedyByFullForward(m, prompt, 4));
  await rejectsExactly(t, () => m.generate(prompt, { maxNewTokens: 5 }), RangeError,
    /^Decoder\.generate: the prompt \(20 tokens\) plus maxNewTokens \(5\) exceeds the model's maxSeq \(24\); pass slide: true to slide the context window over the last tokens$/, 'past maxSeq');
  await rejectsExactly(t, () => m.generate(tokens(1, 25), { maxNewTokens: 0 }), RangeError, /exceeds the model's maxSeq \(24\)/, 'prompt past maxSeq');
  m.store.dispose();
});

// ---- sampling ----------------------------------------------------------------------------------------------------------

test('sampling is deterministic per seed and differs across seeds; temperature 0 and a tiny topP are greedy', async (t) => {
  const m = model({}, 7);
  const prompt = tokens(41, 3);
  const greedy = greedyByFullForward(m, prompt, 15);
  const a = await m.generate(prompt, { maxNewTokens: 15, seed: 1 });
  t.deepEqual(await m.generate(prompt, { maxNewTokens: 15, seed: 1 }), a, 'same seed, same tokens');
  const others = await Promise.all([2, 3, 4, 5].map((seed) => m.generate(prompt, { maxNewTokens: 15, seed })));
  t.true(others.some((o) => o.join() !== a.join()), 'other seeds give other tokens');
  t.true(new Set([a, ...others].map((o) => o.join())).size >= 3, 'the seeds give mostly different samples');
  t.deepEqual(await m.generate(prompt, { maxNewTokens: 15, temperature: 0, seed: 1 }), greedy, 'temperature 0');
  t.deepEqual(await m.generate(prompt, { maxNewTokens: 15, topP: 1e-9, seed: 2 }), greedy, 'topP tiny');
  t.deepEqual(await m.generate(prompt, { maxNewTokens: 15, temperature: 1e-6, seed: 3 }), greedy, 'temperature -> 0');
  const b = await m.generate(prompt, { maxNewTokens: 15, seed: 1, temperature: 0.7, topK: 5, topP: 0.9 });
  t.deepEqual(await m.generate(prompt, { maxNewTokens: 15, seed: 1, temperature: 0.7, topK: 5, topP: 0.9 }), b, 'same seed with every option');
  for (const o of [a, b, ...others]) t.true(o.every((x) => Number.isInteger(x) && x >= 0 && x < base.vocab));
  m.store.dispose();
});

test('eos stops generation after the eos token', async (t) => {
  const m = model({}, 8);
  const prompt = tokens(51, 4);
  const greedy = greedyByFullForward(m, prompt, 10);
  const eos = greedy[3];
  const stop = greedy.indexOf(eos);
  t.deepEqual(await m.generate(prompt, { maxNewTokens: 10, temperature: 0, eos }), greedy.slice(0, stop + 1));
  m.store.dispose();
});

test('sampleToken draws from softmax(logits / T) restricted by topK and topP', (t) => {
  const logits = Float32Array.from([1.0, 2.5, -0.5, 2.0, 0.3, 1.7, -2.0, 2.5]);
  const draws = 40000;
  const freq = (o: { temperature: number; topK?: number; topP?: number }, seed: number) => {
    const r = seededRandom(seed);
    const f = new Float64Array(logits.length);
    for (let i = 0; i < draws; i++) f[sampleToken(logits, o, r)]++;
    return Array.from(f, (x) => x / draws);
  };
  /** The exact distribution: softmax over the tokens in `keep`. */
  const exact = (T: number, keep: number[]) => {
    const p = Array.from(logits, (l, i) => (keep.includes(i) ? Math.exp(l / T) : 0));
    const s = p.reduce((a, b) => a + b, 0);
    return p.map((x) => x / s);
  };
  const all = [0, 1, 2, 3, 4, 5, 6, 7];
  // sorted by probability (ties by id): 1, 7, 3, 5, 0, 4, 2, 6
  const cases: [string, { temperature: number; topK?: number; topP?: number }, number[]][] = [
    ['T = 1', { temperature: 1 }, exact(1, all)],
    ['T = 0.5', { temperature: 0.5 }, exact(0.5, all)],
    ['T = 2, topK 3', { temperature: 2, topK: 3 }, exact(2, [1, 7, 3])],
    ['topK larger than the vocabulary', { temperature: 1, topK: 100 }, exact(1, all)],
    // T = 1: p(1) = p(7) = 0.272, p(3) = 0.165, p(5) = 0.122, ...: 0.5 needs {1, 7}; 0.6 needs {1, 7, 3}
    ['topP 0.5', { temperature: 1, topP: 0.5 }, exact(1, [1, 7])],
    ['topP 0.6', { temperature: 1, topP: 0.6 }, exact(1, [1, 7, 3])],
    // after topK 4 the nucleus renormalises over {1, 7, 3, 5}: 0.8 of that needs {1, 7, 3}
    ['topK 4 then topP 0.8', { temperature: 1, topK: 4, topP: 0.8 }, exact(1, [1, 7, 3])],
  ];
  cases.forEach(([label, o, want], i) => {
    const got = freq(o, 100 + i);
    got.forEach((g, j) => t.true(Math.abs(g - want[j]) < 0.012, `${label}: token ${j}: frequency ${g} vs probability ${want[j]}`));
    want.forEach((w, j) => {
      if (w === 0) t.is(got[j], 0, `${label}: token ${j} is never drawn`);
    });
  });
  t.is(sampleToken(logits, { temperature: 0 }, () => 0.5), 1, 'greedy takes the first maximum');
  t.is(sampleToken(logits, { temperature: 1, topK: 1 }, () => 0.999), 1, 'topK 1 ties: the lower id');
  t.throws(() => sampleToken(Float32Array.from([0, NaN]), { temperature: 1 }, () => 0), { instanceOf: Error, message: /non-finite logit \(NaN for token 1\)/ });
});

test('the seeded PRNG is deterministic, in [0, 1), and uses every bit of the seed', (t) => {
  const seq = (seed: number) => Array.from({ length: 8 }, seededRandom(seed));
  t.deepEqual(seq(42), seq(42));
  t.notDeepEqual(seq(42), seq(43));
  t.notDeepEqual(seq(1), seq(1 + 2 ** 32), 'the high bits count');
  const r = seededRandom(7);
  let sum = 0;
  for (let i = 0; i < 10000; i++) {
    const u = r();
    t.true(u >= 0 && u < 1);
    sum += u;
  }
  t.true(Math.abs(sum / 10000 - 0.5) < 0.02);
});

// ---- errors --------------------------------------------------------------------------------------------------------------

test('bad prompts and options reject with the right class, naming Decoder.generate', async (t) => {
  const m = model();
  const p = [1, 2, 3];
  const pf = tensor(Float32Array.from([1, 2]), [2]), p2 = tensor(Int32Array.from([1, 2, 3, 4]), [2, 2]);
  const p3 = tensor(Int32Array.from([1, 2]), [1, 1, 2]), pe = tensor(new Int32Array(0), [0]), pbig = tensor(Int32Array.from([1, 13]), [2]);
  const gone = tensor(Int32Array.from([1]), [1]);
  gone.dispose();
  const G = (prompt: unknown, options: unknown) => () => m.generate(prompt as any, options as any);
  const cases: [string, () => Promise<unknown>, ErrorClass, RegExp][] = [
    ['no options', G(p, undefined), TypeError, /^Decoder\.generate: options must be an object with at least maxNewTokens, got undefined$/],
    ['options a number', G(p, 5), TypeError, /^Decoder\.generate: options must be an object/],
    ['options an array', G(p, []), TypeError, /^Decoder\.generate: options must be an object/],
    ['unknown option', G(p, { maxNewTokens: 2, top_k: 3 }), TypeError, /^Decoder\.generate: unknown option "top_k"; the options are maxNewTokens, temperature, topK, topP, seed, eos, depth, slide, onTokens$/],
    ['maxNewTokens missing', G(p, {}), TypeError, /^Decoder\.generate: maxNewTokens must be an integer, got undefined$/],
    ['maxNewTokens a string', G(p, { maxNewTokens: '3' }), TypeError, /^Decoder\.generate: maxNewTokens must be an integer, got "3"$/],
    ['maxNewTokens NaN', G(p, { maxNewTokens: NaN }), RangeError, /^Decoder\.generate: maxNewTokens must be an integer in \[0, 2\^53 - 1\], got NaN$/],
    ['maxNewTokens -1', G(p, { maxNewTokens: -1 }), RangeError, /^Decoder\.generate: maxNewTokens must be an integer in \[0, 2\^53 - 1\], got -1$/],
    ['maxNewTokens 2.5', G(p, { maxNewTokens: 2.5 }), RangeError, /^Decoder\.generate: maxNewTokens must be an integer/],
    ['temperature a string', G(p, { maxNewTokens: 2, temperature: 'hot' }), TypeError, /^Decoder\.generate: temperature must be a number, got "hot"$/],
    ['temperature NaN', G(p, { maxNewTokens: 2, temperature: NaN }), RangeError, /^Decoder\.generate: temperature must be finite, got NaN$/],
    ['temperature Infinity', G(p, { maxNewTokens: 2, temperature: Infinity }), RangeError, /^Decoder\.generate: temperature must be finite, got Infinity$/],
    ['temperature -1', G(p, { maxNewTokens: 2, temperature: -1 }), RangeError, /^Decoder\.generate: temperature must be >= 0 \(0 is greedy\), got -1$/],
    ['topK 0', G(p, { maxNewTokens: 2, topK: 0 }), RangeError, /^Decoder\.generate: topK must be an integer in \[1, 2\^53 - 1\], got 0$/],
    ['topK 1.5', G(p, { maxNewTokens: 2, topK: 1.5 }), RangeError, /^Decoder\.generate: topK must be an integer/],
    ['topK null', G(p, { maxNewTokens: 2, topK: null }), TypeError, /^Decoder\.generate: topK must be an integer, got null$/],
    ['topP 0', G(p, { maxNewTokens: 2, topP: 0 }), RangeError, /^Decoder\.generate: topP must be in \(0, 1\], got 0$/],
    ['topP 1.5', G(p, { maxNewTokens: 2, topP: 1.5 }), RangeError, /^Decoder\.generate: topP must be in \(0, 1\], got 1\.5$/],
    ['topP NaN', G(p, { maxNewTokens: 2, topP: NaN }), RangeError, /^Decoder\.generate: topP must be finite, got NaN$/],
    ['topP a boolean', G(p, { maxNewTokens: 2, topP: true }), TypeError, /^Decoder\.generate: topP must be a number, got true$/],
    ['seed -1', G(p, { maxNewTokens: 2, seed: -1 }), RangeError, /^Decoder\.generate: seed must be an integer in \[0, 2\^53 - 1\], got -1$/],
    ['seed a bigint', G(p, { maxNewTokens: 2, seed: 3n }), TypeError, /^Decoder\.generate: seed must be an integer, got 3n$/],
    ['seed 0.5', G(p, { maxNewTokens: 2, seed: 0.5 }), RangeError, /^Decoder\.generate: seed must be an integer/],
    ['eos out of the vocabulary', G(p, { maxNewTokens: 2, eos: 13 }), RangeError, /^Decoder\.generate: eos must be an integer in \[0, 12\], got 13$/],
    ['eos a string', G(p, { maxNewTokens: 2, eos: 'x' }), TypeError, /^Decoder\.generate: eos must be an integer, got "x"$/],
    ['depth 0', G(p, { maxNewTokens: 2, depth: 0 }), RangeError, /^Decoder\.generate: depth must be an integer in \[1, 2\^53 - 1\], got 0$/],
    ['depth on a plan without run-time depth', G(p, { maxNewTokens: 2, depth: 3 }), RangeError, /^sharing: a run-time depth override needs strategy all or cycle/],
    ['a string prompt', G('hello', { maxNewTokens: 2 }), TypeError, /^Decoder\.generate: prompt must be an int32 Tensor or an array of token ids, got "hello"$/],
    ['a null prompt', G(null, { maxNewTokens: 2 }), TypeError, /^Decoder\.generate: prompt must be an int32 Tensor or an array of token ids, got null$/],
    ['an empty prompt', G([], { maxNewTokens: 2 }), RangeError, /^Decoder\.generate: prompt is empty \(it needs at least one token\)$/],
    ['a prompt with a string', G([1, '2'], { maxNewTokens: 2 }), TypeError, /^Decoder\.generate: prompt\[1\] must be an integer token id, got "2"$/],
    ['a prompt id past the vocabulary', G([1, 13], { maxNewTokens: 2 }), RangeError, /^Decoder\.generate: prompt\[1\] = 13 is not a token id in \[0, 13\)$/],
    ['a negative prompt id', G([-1], { maxNewTokens: 2 }), RangeError, /^Decoder\.generate: prompt\[0\] = -1 is not a token id in \[0, 13\)$/],
    ['a fractional prompt id', G([1.5], { maxNewTokens: 2 }), RangeError, /^Decoder\.generate: prompt\[0\] = 1\.5 is not a token id/],
    ['a float32 prompt tensor', G(pf, { maxNewTokens: 2 }), TypeError, /^Decoder\.generate: prompt must be an int32 tensor, got Tensor\(float32\[2\] on cpu\)$/],
    ['a prompt tensor of two sequences', G(p2, { maxNewTokens: 2 }), RangeError, /^Decoder\.generate: prompt must have shape \[T\] or \[1, T\] \(one sequence\), got \[2, 2\]$/],
    ['a rank-3 prompt tensor', G(p3, { maxNewTokens: 2 }), RangeError, /^Decoder\.generate: prompt must have shape \[T\] or \[1, T\]/],
    ['an empty prompt tensor', G(pe, { maxNewTokens: 2 }), RangeError, /^Decoder\.generate: prompt is empty/],
    ['a prompt tensor id past the vocabulary', G(pbig, { maxNewTokens: 2 }), RangeError, /^Decoder\.generate: prompt\[1\] = 13 is not a token id in \[0, 13\)$/],
    ['a disposed prompt tensor', G(gone, { maxNewTokens: 2 }), Error, /^Decoder\.generate: prompt has been disposed$/],
  ];
  await settle();
  const before = cpuCounts();
  for (const [label, fn, cls, msg] of cases) await rejectsExactly(t, fn, cls, msg, `generate with ${label}`);
  t.deepEqual(cpuCounts(), before, 'failed calls allocate nothing');
  for (const z of [pf, p2, p3, pe, pbig]) z.dispose();
  m.store.dispose();
});

// ---- memory --------------------------------------------------------------------------------------------------------------

test('memory() counts return to where they were after every call, and do not grow across calls', async (t) => {
  for (const [name, extra, { depth }] of strategies) {
    const m = model(extra, 4);
    const prompt = tokens(61, 5);
    const warm = await m.generate(prompt, { maxNewTokens: 6, temperature: 0, depth }); // nothing to warm up, but cheap
    t.is(warm.length, 6);
    await settle();
    const before = cpuCounts();
    for (let i = 0; i < 3; i++) {
      await m.generate(prompt, { maxNewTokens: 10, seed: i, topK: 4, topP: 0.9, depth });
      t.deepEqual(cpuCounts(), before, `${name}: after sampling call ${i}`);
      await m.generate(prompt, { maxNewTokens: 10, temperature: 0, eos: warm[2], depth });
      t.deepEqual(cpuCounts(), before, `${name}: after greedy call ${i} (stopped early)`);
    }
    await decodeLogits(m, tokens(62, 9), { prefill: 4, depth });
    t.deepEqual(cpuCounts(), before, `${name}: after decodeLogits`);
    const s = new DecodeSession(m, 6, depth);
    s.prefill([1, 2, 3]).dispose();
    s.step(4).dispose();
    s.dispose();
    s.dispose();
    t.deepEqual(cpuCounts(), before, `${name}: a session freed twice`);
    m.store.dispose();
  }
});

// One ownership scope (lib/autograd.ts): a forward pass under noGrad inside scope() frees everything but what it
// returns, and a DecodeSession step (the same layer loop, BlockStack.run, over the KV cache) leaves exactly its logits.
test('scope(): a forward pass under noGrad leaves memory() as it was; a DecodeSession step leaves only its logits', (t) => {
  const plans: [string, Partial<DecoderConfig>][] = [
    ['none', { sharing: { strategy: 'none' } }],
    ['all', { sharing: { strategy: 'all' } }],
    ['basis r=4', { sharing: { strategy: 'basis', rank: 4 } }],
    ['delta r=3', { sharing: { strategy: 'delta', rank: 3 } }],
    ['cycle U=2 + cross-layer KV (s=2), post-LN', { norm: 'post', sharing: { strategy: 'cycle', unique: 2, kvShareGroup: 2 } }],
  ];
  for (const [name, extra] of plans) {
    const m = model(extra, 7);
    const x = tensor(Int32Array.from(tokens(71, 7)), [1, 7]);
    noGrad(() => m.forward(x)).dispose(); // the position ids of this shape are cached by the model: make them first
    const before = cpuCounts();
    const sum = noGrad(() => scope(() => {
      const y = m.forward(x);
      return (y.dataSync() as Float32Array).reduce((a, b) => a + b, 0);
    }));
    t.true(Number.isFinite(sum), `${name}: the forward pass ran`);
    t.deepEqual(cpuCounts(), before, `${name}: a forward pass under noGrad inside scope() frees everything it made`);
    // the returned logits survive the scope, and nothing else does
    const kept = noGrad(() => scope(() => m.forward(x)));
    t.false(kept.disposed, `${name}: the returned tensor survives scope()`);
    kept.dispose();
    t.deepEqual(cpuCounts(), before, `${name}: after disposing the returned logits`);

    for (const replay of [false, true]) {
      const how = `${name}, replay ${replay}`;
      const s = new DecodeSession(m, 6, undefined, { replay });
      s.prefill([1, 2, 3]).dispose();
      const withCache = cpuCounts();
      if (replay) {
        s.step(4).dispose(); // records the step: the session now holds its inputs, its logits and the recording
        t.is(cpuCounts().tensors, withCache.tensors + 2, `${how}: the recorded step holds two tensors (inputs, logits)`);
      }
      const held = cpuCounts();
      for (const id of replay ? [5, 6] : [4, 5, 6]) {
        const l = s.step(id);
        const after = cpuCounts();
        t.is(after.tensors, held.tensors + 1, `${how}: a step leaves one tensor (its logits)`);
        t.is(after.storages, held.storages + 1, `${how}: a step leaves one storage (its logits')`);
        l.dispose();
        t.deepEqual(cpuCounts(), held, `${how}: a step leaves no extra tensors once its logits are freed`);
      }
      s.dispose();
      t.deepEqual(cpuCounts(), before, `${how}: the session freed (the recording too)`);
    }
    x.dispose();
    m.store.dispose();
  }
});

// A recorded step holds the parameter buffer it was made with; once the model's buffer is freed (or replaced), the
// replayed path must not go on computing with it: it fails as the step-by-step path does.
test('a replayed step after the model\'s parameters were freed fails as the step-by-step path does', (t) => {
  for (const replay of [false, true]) {
    const m = model({ sharing: { strategy: 'all' } }, 9);
    const s = new DecodeSession(m, 8, undefined, { replay });
    s.prefill([1, 2]).dispose();
    s.step(3).dispose(); // records (replay) or runs the loop
    m.store.dispose();
    const err = t.throws(() => s.step(4).dispose(), undefined, `replay ${replay}: a step after the parameters were freed throws`);
    t.regex(err?.message ?? '', /disposed/, `replay ${replay}: ${err?.message}`);
    s.dispose();
  }
});

test('DecodeSession misuse is a clear error', (t) => {
  const m = model();
  const s = new DecodeSession(m, 3);
  t.throws(() => s.step(1), { instanceOf: Error, message: /^DecodeSession\.step: call prefill\(\) first$/ });
  t.throws(() => s.prefill([1, 2, 3, 4]), { instanceOf: RangeError, message: /^DecodeSession\.prefill: 4 positions do not fit the capacity 3$/ });
  s.prefill([1, 2]).dispose();
  t.is(s.position, 2);
  t.throws(() => s.prefill([1]), { instanceOf: Error, message: /already been fed/ });
  s.step(3).dispose();
  t.throws(() => s.step(4), { instanceOf: RangeError, message: /^DecodeSession\.step: the cache is full \(capacity 3 positions\)$/ });
  s.dispose();
  t.throws(() => new DecodeSession(m, 25), { instanceOf: RangeError, message: /capacity must be an integer in \[1, 24\]/ });
  m.store.dispose();
});

test('the model\'s forward and loss are unchanged by generation (no tape, parameters untouched)', async (t) => {
  const m = model({ sharing: { strategy: 'cycle', unique: 2 } });
  const seq = tokens(71, 8);
  const before = fullLogits(m, seq);
  const values = Float32Array.from(m.store.values.dataSync());
  await m.generate(seq, { maxNewTokens: 8, seed: 1 });
  t.deepEqual(Array.from(fullLogits(m, seq)), Array.from(before));
  t.deepEqual(Array.from(m.store.values.dataSync()), Array.from(values));
  m.store.dispose();
});

// The CLI's sliding window, as `sharedformer generate` computed it before Decoder.generate offered `slide`: windows of
// up to maxSeq / 2 new tokens, each a strict generate() over the last maxSeq - n tokens, window w seeded seed + w * 0x9e3779b1.
async function slidingReference(m: Decoder, prompt: number[], n: number, o: { temperature?: number; topK?: number; seed: number }): Promise<number[]> {
  const W = m.config.maxSeq;
  let ctx = prompt.slice();
  const out: number[] = [];
  for (let round = 0; out.length < n; round++) {
    const step = Math.min(n - out.length, Math.max(1, Math.floor(W / 2)));
    const ids = await m.generate(ctx.slice(-(W - step)), { maxNewTokens: step, temperature: o.temperature, topK: o.topK, seed: (o.seed + round * 0x9e3779b1) >>> 0 });
    out.push(...ids);
    ctx = ctx.concat(ids);
  }
  return out;
}

test('slide: true generates past maxSeq exactly as the CLI\'s sliding window did; onTokens streams the windows', async (t) => {
  const m = model({ sharing: { strategy: 'all' } });
  try {
    for (const [prompt, n, o] of [
      [tokens(3, 3), 60, { temperature: 0.9, seed: 7 }],
      [tokens(4, 30), 25, { temperature: 1, topK: 5, seed: 123456 }], // a prompt longer than maxSeq keeps its last tokens
      [tokens(5, 10), 14, { temperature: 0, seed: 0 }], // fits: still windows of maxSeq / 2
      [tokens(6, 1), 1, { temperature: 0.5, seed: 0x7fffffff }],
    ] as [number[], number, { temperature: number; topK?: number; seed: number }][]) {
      const want = await slidingReference(m, prompt, n, o);
      const streamed: number[][] = [];
      const got = await m.generate(prompt, { maxNewTokens: n, ...o, slide: true, onTokens: (ids) => streamed.push(ids) });
      t.is(got.length, n);
      t.deepEqual(got, want, `prompt ${prompt.length}, ${n} tokens`);
      t.deepEqual(streamed.flat(), got);
      t.true(streamed.every((w) => w.length <= m.config.maxSeq / 2));
    }
    // without slide, each token is streamed as it is made
    const each: number[][] = [];
    const strict = await m.generate(tokens(3, 3), { maxNewTokens: 5, temperature: 0.7, seed: 3, onTokens: (ids) => each.push(ids) });
    t.deepEqual(each, strict.map((x) => [x]));
    // eos stops the sliding generation too
    const all = await m.generate(tokens(3, 3), { maxNewTokens: 40, temperature: 1, seed: 9, slide: true });
    const eos = all[20];
    const cut = await m.generate(tokens(3, 3), { maxNewTokens: 40, temperature: 1, seed: 9, slide: true, eos });
    t.deepEqual(cut, all.slice(0, all.indexOf(eos) + 1));
    await rejectsExactly(t, () => m.generate(tokens(3, 3), { maxNewTokens: 2, slide: 1 as never }), TypeError, /^Decoder\.generate: slide must be a boolean/, 'slide: 1');
    await rejectsExactly(t, () => m.generate(tokens(3, 3), { maxNewTokens: 2, onTokens: 'x' as never }), TypeError, /^Decoder\.generate: onTokens must be a function/, 'onTokens');
  } finally {
    m.store.dispose();
  }
});

// generateStream: the same tokens as generate(), each yielded as it is sampled, with the event loop running between
// them; breaking out frees everything; options are checked at the call, the prompt when iteration starts.
test('generateStream yields generate()\'s tokens one by one, keeps the event loop running, and stops cleanly', async (t) => {
  const m = model({ sharing: { strategy: 'cycle', unique: 2 } }, 6);
  try {
    const prompt = tokens(31, 4);
    for (const o of [{ temperature: 0 }, { temperature: 0.8, topK: 5, seed: 11 }, { temperature: 1, seed: 4, slide: true }]) {
      const n = o.slide ? 40 : 15;
      const want = await m.generate(prompt, { maxNewTokens: n, ...o });
      const got: number[] = [];
      let ticks = 0;
      let ticksAtTokens = 0;
      const timer = setInterval(() => ticks++, 0);
      try {
        for await (const id of m.generateStream(prompt, { maxNewTokens: n, ...o })) {
          if (got.length > 0 && ticks > 0) ticksAtTokens++;
          got.push(id);
          await new Promise((r) => setImmediate(r));
        }
      } finally {
        clearInterval(timer);
      }
      t.deepEqual(got, want, `${JSON.stringify(o)}: the stream yields generate()'s tokens`);
      t.true(ticks > 0 && ticksAtTokens > 0, `${JSON.stringify(o)}: timers ran while the tokens were made (${ticks})`);
    }
    // breaking out early stops decoding and frees the session
    await settle();
    const before = cpuCounts();
    const first: number[] = [];
    for await (const id of m.generateStream(prompt, { maxNewTokens: 15, temperature: 0 })) {
      first.push(id);
      if (first.length === 3) break;
    }
    t.deepEqual(first, (await m.generate(prompt, { maxNewTokens: 3, temperature: 0 })), 'the first three tokens');
    t.deepEqual(cpuCounts(), before, 'breaking out freed the session and its recorded step');
    // errors: options at the call, the prompt at the first next()
    t.throws(() => m.generateStream(prompt, { maxNewTokens: -1 }), { instanceOf: RangeError, message: /^Decoder\.generate: maxNewTokens/ });
    t.throws(() => m.generateStream(prompt, { maxNewTokens: 2, bogus: 1 } as never), { instanceOf: TypeError, message: /^Decoder\.generate: unknown option/ });
    const it = m.generateStream([99], { maxNewTokens: 2 });
    await t.throwsAsync(() => it.next(), { instanceOf: RangeError, message: /^Decoder\.generate: prompt\[0\] = 99 is not a token id/ });
    await t.throwsAsync(() => m.generateStream(tokens(1, 20), { maxNewTokens: 10 }).next(), { instanceOf: RangeError, message: /exceeds the model's maxSeq/ });
  } finally {
    m.store.dispose();
  }
});
