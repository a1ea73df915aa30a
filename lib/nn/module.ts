// module.ts — Module, the shape PyTorch users know: children and parameters by name, parameters() (unique: a weight
// shared by several layers is listed once), namedParameters(), train()/eval(), stateDict()/loadStateDict().
import type { Parameter } from '../params.ts';
import { Tensor } from '../tensor.ts';
import { native } from '../native.ts';

/**
 * The base of every layer and model, as PyTorch's nn.Module: owns parameters and child modules, train/eval mode, state
 * dicts.
 */
export abstract class Module {
  private _children = new Map<string, Module>();
  private _params = new Map<string, Parameter>();
  /** Training mode (dropout active); eval() turns it off. */
  training = true;

  /** @internal Registers a child module under `name`. */
  protected addModule<M extends Module>(name: string, m: M): M {
    this._children.set(name, m);
    return m;
  }
  /** @internal Registers a parameter under `name` (the same Parameter may be registered by several modules). */
  protected addParameter(name: string, p: Parameter): Parameter {
    this._params.set(name, p);
    return p;
  }

  /** [path, parameter] for every parameter reachable from this module; a shared parameter appears once, under the first path. */
  namedParameters(prefix = ''): [string, Parameter][] {
    const seen = new Set<Parameter>();
    const out: [string, Parameter][] = [];
    const walk = (m: Module, pre: string) => {
      for (const [n, p] of m._params) {
        if (seen.has(p)) continue;
        seen.add(p);
        out.push([pre + n, p]);
      }
      for (const [n, c] of m._children) walk(c, `${pre}${n}.`);
    };
    walk(this, prefix);
    return out;
  }

  /** Every unique parameter. */
  parameters(): Parameter[] {
    return this.namedParameters().map(([, p]) => p);
  }

  /** The direct child modules with their names, in registration order. */
  children(): [string, Module][] {
    return [...this._children];
  }

  /** Sets training mode (dropout active) on this module and every descendant; returns this. */
  train(mode = true): this {
    this.training = mode;
    for (const [, c] of this._children) c.train(mode);
    return this;
  }
  /** Sets inference mode (no dropout) on this module and every descendant; returns this. */
  eval(): this {
    return this.train(false);
  }

  /** Parameter name (the store's stable name) -> a copy of its values. */
  stateDict(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const p of this.parameters()) out[p.name] = p.value.clone();
    return out;
  }

  /** Copies values into the parameters; every parameter must be present with its exact shape (strict). */
  loadStateDict(sd: Record<string, Tensor>): void {
    const params = this.parameters();
    const names = new Set(params.map((p) => p.name));
    for (const k of Object.keys(sd)) if (!names.has(k)) throw new Error(`loadStateDict: unexpected key '${k}'`);
    for (const p of params) {
      const t = sd[p.name];
      if (!(t instanceof Tensor)) throw new Error(`loadStateDict: missing key '${p.name}'`);
      if (t.shape.join() !== p.shape.join())
        throw new RangeError(`loadStateDict: '${p.name}' has shape [${t.shape.join(', ')}], the model expects [${p.shape.join(', ')}]`);
    }
    for (const p of params) native().copyInto(p.value.handle, sd[p.name].handle);
  }
}
