// module.ts — Module, the shape PyTorch users know: children and parameters by name, parameters() (unique: a weight
// shared by several layers is listed once), namedParameters(), train()/eval(), stateDict()/loadStateDict().
import type { Parameter } from '../params.ts';
import { Tensor } from '../tensor.ts';
import { native } from '../native.ts';
import { describe } from '../validate.ts';

/**
 * The base of every layer and model, as PyTorch's nn.Module: owns parameters and child modules, train/eval mode, state
 * dicts.
 */
export abstract class Module {
  private _children = new Map<string, Module>();
  private _params = new Map<string, Parameter>();
  /**
   * Training mode, as PyTorch's `module.training`; eval() turns it off. No layer of this library behaves differently
   * in the two modes today (there is no dropout layer: the dropout kernel exists, no model uses it); the flag is kept
   * for user modules and for layers that will read it.
   */
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

  /** Sets training mode on this module and every descendant (see `training`); returns this. */
  train(mode = true): this {
    this.training = mode;
    for (const [, c] of this._children) c.train(mode);
    return this;
  }
  /** Sets inference mode on this module and every descendant (see `training`); returns this. */
  eval(): this {
    return this.train(false);
  }

  /** Parameter name (the store's stable name) -> a copy of its values. */
  stateDict(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const p of this.parameters()) out[p.name] = p.value.clone();
    return out;
  }

  /**
   * Copies values into the parameters; every parameter must be present with its exact shape, as a float32 tensor on
   * the parameter's device that has not been disposed (strict). Every entry is checked before the first value is
   * written: a bad entry throws and leaves every parameter as it was.
   */
  loadStateDict(sd: Record<string, Tensor>): void {
    if (typeof sd !== 'object' || sd === null || Array.isArray(sd) || sd instanceof Tensor)
      throw new TypeError(`loadStateDict: the state dict must be an object of name -> Tensor, got ${describe(sd)}`);
    const params = this.parameters();
    const names = new Set(params.map((p) => p.name));
    for (const k of Object.keys(sd)) if (!names.has(k)) throw new Error(`loadStateDict: unexpected key '${k}'`);
    for (const p of params) {
      const t = Object.hasOwn(sd, p.name) ? sd[p.name] : undefined;
      if (t === undefined) throw new Error(`loadStateDict: missing key '${p.name}'`);
      if (!(t instanceof Tensor)) throw new TypeError(`loadStateDict: '${p.name}' must be a Tensor, got ${describe(t)}`);
      if (t.disposed) throw new Error(`loadStateDict: '${p.name}' has been disposed`);
      if (t.shape.join() !== p.shape.join())
        throw new RangeError(`loadStateDict: '${p.name}' has shape [${t.shape.join(', ')}], the model expects [${p.shape.join(', ')}]`);
      const want = p.value;
      if (t.dtype !== want.dtype) throw new TypeError(`loadStateDict: '${p.name}' is ${t.dtype}, the model expects ${want.dtype}`);
      if (t.device !== want.device) throw new Error(`loadStateDict: '${p.name}' is on ${t.device}, the model's parameters are on ${want.device} (move it with .to('${want.device}') first)`);
    }
    for (const p of params) native().copyInto(p.value.handle, sd[p.name].handle);
  }
}
