// Basis and delta sharing at the layer level: a stack whose layers share W_S (one 'basis.<role>' / 'delta.<role>'
// parameter) gets, for W_S, the sum of the gradients that the same stack with one W_S copy per layer gives its
// copies; the per-layer factors get identical gradients. Also: model.to(device).
import anyTest from 'ava';
import { backward, resetTape } from '../lib/autograd.ts';
import { BasisLinear, DeltaLinear, type LinearLike } from '../lib/nn/layers.ts';
import { ParameterBuilder, ParameterStore } from '../lib/params.ts';
import * as ops from '../lib/ops/index.ts';
import { backends, tensor } from '../lib/index.ts';
import { Decoder } from '../lib/models/decoder.ts';
import { assertClose } from './helpers/close.ts';
import { Random } from './helpers/random.ts';

const test = anyTest.serial;
const L = 3, d = 6, r = 2, V = 5;

function stack(kind: 'basis' | 'delta', shared: boolean): { store: ParameterStore; layers: LinearLike[] } {
  const b = new ParameterBuilder();
  const layers: LinearLike[] = [];
  for (let l = 0; l < L; l++) {
    const role = shared ? 'mix' : `mix${l}`; // the role names the shared matrix: one per stack, or one per layer
    layers.push(kind === 'basis' ? new BasisLinear(b, `layer.${l}`, role, d, d, r, { bias: true }) : new DeltaLinear(b, `layer.${l}`, role, d, d, r, { bias: true }));
  }
  const head = new BasisLinear(b, 'head', 'head', d, V, r, { bias: false });
  layers.push(head);
  return { store: new ParameterStore(b, { seed: 9 }), layers };
}

for (const kind of ['basis', 'delta'] as const) {
  test(`${kind}: the shared matrix's gradient is the sum of the per-layer copies' gradients`, (t) => {
    resetTape();
    const a = stack(kind, true), u = stack(kind, false);
    const av = a.store.values.sharedData() as Float32Array, uv = u.store.values.sharedData() as Float32Array;
    const rnd = new Random(3);
    for (let i = 0; i < av.length; i++) av[i] = rnd.uniform(-0.5, 0.5); // (delta's up-projections would start at 0)
    const sharedName = `${kind}.mix.weight`;
    for (const p of u.store.parameters) {
      const src = a.store.byName(/^(basis|delta)\.mix\d\.weight$/.test(p.name) ? sharedName : p.name)!;
      uv.set(av.subarray(src.offset, src.offset + src.size), p.offset);
    }
    const x = tensor(Float32Array.from({ length: 4 * d }, () => rnd.uniform()), [4, d]);
    const targets = tensor(Int32Array.from([0, 3, 1, 4]), [4]);
    for (const m of [a, u]) {
      m.store.zeroGrad();
      let h = x;
      m.layers.slice(0, L).forEach((layer) => (h = layer.forward(h, 'gelu')));
      backward(ops.crossEntropy(m.layers[L].forward(h), targets));
    }
    const ag = a.store.grads.dataSync(), ug = u.store.grads.dataSync();
    for (const p of a.store.parameters) {
      const want = new Float64Array(p.size);
      for (const q of u.store.parameters) {
        const maps = q.name === p.name || (p.name === sharedName && /^(basis|delta)\.mix\d\.weight$/.test(q.name));
        if (maps) for (let i = 0; i < p.size; i++) want[i] += ug[q.offset + i];
      }
      assertClose(t, ag.subarray(p.offset, p.offset + p.size), want, { rel: 1e-4, abs: 1e-4 * 1e-6, what: p.name });
    }
    t.is(u.store.numel - a.store.numel, (L - 1) * (kind === 'basis' ? r * d : d * d), 'one shared matrix instead of L');
    a.store.dispose();
    u.store.dispose();
  });
}

test('model.to(device): the same device is a no-op; an unavailable device is refused and changes nothing', (t) => {
  const m = new Decoder({ vocab: 7, dModel: 8, heads: 2, dFF: 8, layers: 2, maxSeq: 4, sharing: { strategy: 'all' } });
  const before = Array.from(m.store.values.dataSync());
  t.is(m.to('cpu'), m);
  if (!backends().cuda.available) {
    t.throws(() => m.to('cuda'), { message: /cuda:0' is not available/ });
    t.is(m.store.device, 'cpu');
  }
  t.deepEqual(Array.from(m.store.values.dataSync()), before);
  t.deepEqual(m.forward(tensor(Int32Array.from([1, 2, 3]), [1, 3])).shape, [1, 3, 7]);
  m.store.dispose();
});
