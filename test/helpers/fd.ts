// Whole-model gradient checks: the analytic gradient in a ParameterStore against finite differences of the loss.
import type { ExecutionContext } from 'ava';
import type { ParameterStore } from '../../lib/params.ts';
import { Random } from './random.ts';

/**
 * For `perParam` random elements of every parameter: perturbs the value in place (CPU store), evaluates `loss()` (a
 * float32 scalar, computed without recording), and compares the store's gradient with Richardson-extrapolated central
 * differences — layer norms over small weights curve sharply and a float32 loss does not allow a tiny step, so two
 * steps (h, 2h) cancel the h^2 term. Returns the number of elements checked.
 */
export function checkGradients(t: ExecutionContext, store: ParameterStore, loss: () => number, perParam = 2, seed = 11): number {
  const grads = Float64Array.from(store.grads.dataSync());
  const values = store.values.sharedData() as Float32Array;
  const r = new Random(seed);
  let checked = 0;
  for (const p of store.parameters) {
    for (let s = 0; s < perParam; s++) {
      const i = p.offset + r.below(p.size);
      const orig = values[i];
      const central = (h: number) => {
        values[i] = orig + h;
        const up = loss();
        values[i] = orig - h;
        const down = loss();
        values[i] = orig;
        return (up - down) / (2 * h);
      };
      const fd = (4 * central(5e-4) - central(1e-3)) / 3;
      const err = Math.abs(grads[i] - fd);
      t.true(err <= 5e-4 + 1e-2 * Math.abs(fd), `${p.name}[${i - p.offset}]: analytic ${grads[i]} vs finite difference ${fd}`);
      checked++;
    }
  }
  return checked;
}
