// The whole Decoder against PyTorch: logits, loss and the gradient of every parameter of two fixed small models
// (blocks shared by cycle sharing, with GQA and a tied head; no sharing, with full multi-head attention and an untied
// head) match fixtures that PyTorch computed in float64 from the same float32 parameters
// (scripts/gen_model_fixture.py, committed under test/fixtures/torch/model_*.json), within 1e-4 relative error.
import anyTest, { type ExecutionContext } from 'ava';
import { readFileSync } from 'node:fs';
import { tensor } from '../lib/index.ts';
import { Decoder, type DecoderConfig } from '../lib/models/decoder.ts';
import { backward, noGrad, resetTape } from '../lib/autograd.ts';
import { assertClose } from './helpers/close.ts';

const test = anyTest.serial;

interface Arr {
  shape: number[];
  dtype: 'float32' | 'float64' | 'int32';
  data: number[];
}
interface ModelFixture {
  generator: string;
  config: DecoderConfig;
  /** The block (attention = FFN) each layer uses. */
  plan: number[];
  params: Record<string, Arr>;
  ids: Arr;
  targets: Arr;
  ignoreIndex: number;
  logits: Arr;
  loss: number;
  grads: Record<string, Arr>;
}

function load(name: string): ModelFixture {
  return JSON.parse(readFileSync(new URL(`./fixtures/torch/model_${name}.json`, import.meta.url), 'utf8'));
}

// The criteria. The reference is float64 from the very float32 parameters the model holds, so a difference is the
// library's own float32 rounding; any real mistake (a wrong scale, mask, head mapping, missing or doubled term) is off
// by far more than 1e-4. Two checks, both at RTOL = 1e-4:
//
//  1. Every tensor as a whole: ||got - want||_2 <= RTOL ||want||_2 (the usual relative error of a tensor; observed
//     ~1e-6 on every tensor, with every ISA path of the kernels).
//
//  2. Every element: |got - want| <= RTOL (|want| + FLOOR S), S the largest |want| of the element's group: the
//     sub-layer block for gradients (attn.i.* or ffn.i.*; tok, pos, ln_f, head on their own), the tensor for logits.
//     Elements of at least FLOOR S are held to 1e-4 of their own value; smaller ones, small only because terms of the
//     group's size cancel, to RTOL FLOOR S = 1e-6 S absolute. Float32 rounding of a sum is proportional to its terms,
//     not to its result, and after several layers and sums over B*T = 14 rows it is a few ulps (6e-8 each) of S:
//     measured against this reference, PyTorch's own float32 computation of these models reaches 2.7e-4 with the
//     floor 1e-3 |max| of each tensor, 6.7e-5 with 1e-3 S of the block, and 1.9e-5 with FLOOR = 1e-2 (the library:
//     up to 9.5e-5 and 1.8e-5 with the last two; its AVX2 path rounds differently from AVX-512 and portable). So
//     FLOOR = 1e-2, which leaves a 5x margin above float32 itself; a floor at 1e-3 would sit at that edge. The group
//     is the block, not the tensor: in attention, Q and K gradients are small differences of terms of the V path's
//     size (softmax backward), and the K bias's gradient is exactly zero (adding q.bk to every score of a query leaves
//     its softmax unchanged), so its reference is float64 round-off (~1e-18) and its own maximum is no scale at all.
//     For the same reason check 1 skips tensors whose reference is zero in exact arithmetic, and asserts that those
//     are exactly the K biases.
const RTOL = 1e-4;
const FLOOR = 1e-2;

const maxAbs = (xs: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < xs.length; i++) m = Math.max(m, Math.abs(xs[i]));
  return m;
};
/** The group whose largest gradient scales an element's floor: 'attn.0.wk.bias' -> 'attn.0'; 'ln_f.weight' -> 'ln_f'. */
const groupOf = (name: string): string => (/^(attn|ffn)\.\d+\./.exec(name)?.[0].slice(0, -1) ?? name.slice(0, name.lastIndexOf('.')));

interface Report {
  element: Map<string, number>;
  norm: Map<string, number>;
}

/** Check 2: the worst |got - want| / (|want| + FLOOR scale) must be <= RTOL (close.ts, element-wise, floor FLOOR scale). */
function checkElements(t: ExecutionContext, what: string, got: ArrayLike<number>, want: number[], scale: number, report: Report): void {
  const c = assertClose(t, got, want, { rel: RTOL, abs: RTOL * FLOOR * scale, what: `${what} (floor scale ${scale})` });
  report.element.set(what, c.err);
}

/** Check 1: ||got - want|| / ||want|| must be <= RTOL (close.ts, norm-wise). */
function checkNorm(t: ExecutionContext, what: string, got: ArrayLike<number>, want: number[], report: Report): void {
  const c = assertClose(t, got, want, { rel: RTOL, mode: 'norm', what: `${what}: ||got - want|| / ||want||` });
  report.norm.set(what, c.err);
}

const top = (m: Map<string, number>, n = 4): string =>
  [...m].sort((a, b) => b[1] - a[1]).slice(0, n).map(([k, e]) => `${k} ${e.toExponential(2)}`).join(', ');

for (const name of ['cycle_gqa_tied', 'none_mha_untied']) {
  test(`Decoder logits, loss and every gradient match PyTorch (float64 reference): ${name}`, (t) => {
    resetTape();
    const f = load(name);
    const model = new Decoder({ ...f.config });
    const ids = tensor(Int32Array.from(f.ids.data), f.ids.shape);
    const targets = tensor(Int32Array.from(f.targets.data), f.targets.shape);
    try {
      // The layers use the fixture's blocks, and the parameters are exactly the fixture's (names, shapes, order).
      t.deepEqual(model.plan.layers.map((lp) => [lp.attention, lp.ffn]), f.plan.map((b) => [b, b]), 'sharing plan');
      t.deepEqual(
        model.store.parameters.map((p) => [p.name, p.shape]),
        Object.entries(f.params).map(([n, a]) => [n, a.shape]),
        'parameter names and shapes',
      );
      t.deepEqual(Object.keys(f.grads), Object.keys(f.params), 'the fixture has a gradient for every parameter');
      t.true(f.targets.data.includes(f.ignoreIndex) && f.ignoreIndex === -100, 'the batch has an ignored target');

      // The fixture's float32 parameters into the flat buffer (exact: they are float32 values).
      const values = model.store.values.sharedData() as Float32Array;
      for (const p of model.store.parameters) values.set(Float32Array.from(f.params[p.name].data), p.offset);

      const report: Report = { element: new Map(), norm: new Map() };
      const logits = noGrad(() => model.forward(ids));
      t.deepEqual(logits.shape, f.logits.shape, 'logits shape');
      const lg = logits.dataSync();
      checkElements(t, 'logits', lg, f.logits.data, maxAbs(f.logits.data), report);
      checkNorm(t, 'logits', lg, f.logits.data, report);
      logits.dispose();

      model.zeroGrad();
      const loss = model.loss(ids, targets);
      backward(loss);
      checkElements(t, 'loss', loss.dataSync(), [f.loss], Math.abs(f.loss), report);
      loss.dispose();

      const grads = model.store.grads.dataSync() as Float32Array;
      const scales = new Map<string, number>();
      for (const [n, a] of Object.entries(f.grads)) scales.set(groupOf(n), Math.max(scales.get(groupOf(n)) ?? 0, maxAbs(a.data)));
      const zero: string[] = [];
      for (const p of model.store.parameters) {
        const got = grads.subarray(p.offset, p.offset + p.size);
        const want = f.grads[p.name].data;
        const scale = scales.get(groupOf(p.name))!;
        checkElements(t, `grad ${p.name}`, got, want, scale, report);
        if (maxAbs(want) > 1e-12 * scale) checkNorm(t, `grad ${p.name}`, got, want, report);
        else zero.push(p.name); // zero in exact arithmetic: float64 round-off, checked element-wise only
      }
      t.deepEqual(zero, model.store.parameters.map((p) => p.name).filter((n) => n.endsWith('.wk.bias')), 'zero gradients: the K biases');

      t.log(`largest element errors: ${top(report.element)}`);
      t.log(`largest tensor errors: ${top(report.norm)}`);
    } finally {
      ids.dispose();
      targets.dispose();
      model.store.dispose();
    }
  });
}
