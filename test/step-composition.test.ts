// The kernels one training step launches (issue 15, point 2): no hidden passes. Every native entry point is wrapped
// for the duration of one step (loss, backward) and the calls are counted, so a pass that creeps back in — a recorded
// reshape of the logits whose backward zeroes a (B, T, V) buffer and adds into it, a GELU run as its own kernel beside
// the matmul's GELU epilogue — fails here, whatever it costs in time.
import test from 'ava';
import { tensor } from '../lib/index.ts';
import { native } from '../lib/native.ts';
import { Decoder } from '../lib/models/decoder.ts';
import { backward, releaseTape } from '../lib/autograd.ts';

interface Call {
  fn: string;
  sizes: number[]; // the element counts of the tensor arguments, in order
}

/** Runs fn with every function of the addon wrapped to log its calls; restores them afterwards. */
function traced(fn: () => void): Call[] {
  const addon = native() as unknown as Record<string, unknown>;
  const calls: Call[] = [];
  const saved = new Map<string, unknown>();
  for (const [k, v] of Object.entries(addon)) {
    if (typeof v !== 'function' || /^[A-Z]/.test(k)) continue; // constructors (classes) stay as they are
    saved.set(k, v);
    addon[k] = function (this: unknown, ...args: unknown[]) {
      const sizes = args.filter((a) => a !== null && typeof a === 'object' && typeof (a as { size?: unknown }).size === 'number' && Array.isArray((a as { shape?: unknown }).shape)).map((a) => (a as { size: number }).size);
      calls.push({ fn: k, sizes });
      return (v as (...a: unknown[]) => unknown).apply(this, args);
    };
  }
  try {
    fn();
  } finally {
    for (const [k, v] of saved) addon[k] = v;
  }
  return calls;
}

const B = 2, T = 8, V = 48, D = 32, F = 96, L = 2;

function step(strategy: 'none' | 'all'): Call[] {
  const model = new Decoder({ vocab: V, dModel: D, heads: 4, dFF: F, layers: L, maxSeq: T, sharing: { strategy }, seed: 3 });
  const ids = tensor(Int32Array.from({ length: B * T }, (_, i) => (i * 7 + 1) % V), [B, T]);
  const targets = tensor(Int32Array.from({ length: B * T }, (_, i) => (i * 5 + 2) % V), [B, T]);
  try {
    model.zeroGrad();
    return traced(() => {
      const loss = model.loss(ids, targets);
      backward(loss);
      loss.dispose();
    });
  } finally {
    releaseTape();
    ids.dispose();
    targets.dispose();
    model.store.dispose();
  }
}

for (const strategy of ['none', 'all'] as const) {
  test(`one training step (${strategy}): the FFN's GELU runs in the matmul epilogue, not as its own kernel`, (t) => {
    const calls = step(strategy);
    t.true(calls.some((c) => c.fn === 'matmul'), 'the trace saw the step (matmul calls)');
    t.deepEqual(calls.filter((c) => c.fn === 'geluForward'), [], 'no separate GELU forward kernel');
    // the backward needs one GELU derivative per FFN use: L layers
    t.is(calls.filter((c) => c.fn === 'geluBackward').length, L);
  });

  test(`one training step (${strategy}): the logits' gradient is the loss's own dlogits — no (B, T, V) buffer zeroed and added into`, (t) => {
    const calls = step(strategy);
    t.is(calls.filter((c) => c.fn === 'crossEntropy').length, 1);
    const logitSized = calls.filter((c) => c.fn !== 'crossEntropy' && c.fn !== 'matmul' && c.sizes.includes(B * T * V));
    t.deepEqual(logitSized.map((c) => c.fn), [], 'only the loss and the head matmuls touch a (B, T, V) tensor');
  });
}
