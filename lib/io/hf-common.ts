// hf-common.ts — what reading and writing Hugging Face checkpoint folders shares (lib/io/hf.ts for GPT-2,
// lib/io/hf-encoder.ts for BERT and ALBERT): config.json, the weights of model.safetensors or of the shards
// model.safetensors.index.json lists, F32/BF16 tensors as float32, and the config's integers.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe } from '../validate.ts';
import { loadSafetensors, type SafeTensor } from './safetensors.ts';

const MAX_CONFIG_BYTES = 1 << 20;

export function readJson(path: string, who: string): Record<string, unknown> {
  let st;
  try {
    st = statSync(path);
  } catch {
    throw new Error(`${who}: ${path} does not exist`);
  }
  if (!st.isFile()) throw new Error(`${who}: ${path} is not a regular file`);
  if (st.size > MAX_CONFIG_BYTES) throw new RangeError(`${who}: ${path} is ${st.size} bytes, over the ${MAX_CONFIG_BYTES}-byte limit for a JSON file here`);
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new TypeError(`${who}: ${path} is not JSON (${(e as Error).message})`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new TypeError(`${who}: ${path} is not a JSON object`);
  return v as Record<string, unknown>;
}

/** Every tensor of the checkpoint: model.safetensors, or the shards model.safetensors.index.json lists. */
export function readWeights(dir: string, who: string): Map<string, SafeTensor> {
  const single = join(dir, 'model.safetensors'), index = join(dir, 'model.safetensors.index.json');
  if (existsSync(single)) return loadSafetensors(single).tensors;
  if (!existsSync(index)) throw new Error(`${who}: ${dir} has neither model.safetensors nor model.safetensors.index.json (only safetensors checkpoints are read; a pytorch_model.bin is not)`);
  const idx = readJson(index, who);
  const map = idx.weight_map as Record<string, unknown> | undefined;
  if (map === null || typeof map !== 'object' || Array.isArray(map)) throw new TypeError(`${who}: ${index} has no "weight_map" object`);
  const shards = new Map<string, string[]>();
  for (const [name, file] of Object.entries(map)) {
    if (typeof file !== 'string' || file !== basename(file) || file === '..' || file === '.' || !file.endsWith('.safetensors'))
      throw new TypeError(`${who}: ${index} maps ${JSON.stringify(name)} to ${describe(file)}, not a .safetensors file name in the folder`);
    shards.set(file, [...(shards.get(file) ?? []), name]);
  }
  const out = new Map<string, SafeTensor>();
  for (const [file, names] of shards) {
    const tensors = loadSafetensors(join(dir, file)).tensors;
    for (const [name, t] of tensors) {
      if (map[name] !== file) throw new Error(`${who}: ${join(dir, file)} holds ${JSON.stringify(name)}, which ${index} ${map[name] === undefined ? 'does not list' : `puts in ${JSON.stringify(map[name])}`}`);
      out.set(name, t);
    }
    for (const name of names) if (!tensors.has(name)) throw new Error(`${who}: ${index} puts ${JSON.stringify(name)} in ${file}, which does not hold it`);
  }
  return out;
}

export function asFloat32(t: SafeTensor, name: string, who: string): Float32Array {
  if (t.dtype === 'F32') return t.data as Float32Array;
  if (t.dtype === 'BF16') {
    const src = t.data as Uint16Array, out = new Float32Array(src.length), bits = new Uint32Array(out.buffer);
    for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
    return out;
  }
  throw new TypeError(`${who}: ${name} is ${t.dtype}; floating-point weights (F32 or BF16) are expected`);
}

export function int(c: Record<string, unknown>, key: string, who: string, path: string, dflt?: number): number {
  const v = c[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw new TypeError(`${who}: ${path}: "${key}" must be a positive integer, got ${describe(v)}`);
  return v;
}

/** out[j][i] = src[i][j] for src (rows x cols), taking columns [c0, c0 + n) of src. */
export function transposeCols(src: Float32Array, rows: number, cols: number, c0: number, n: number): Float32Array {
  const out = new Float32Array(n * rows);
  for (let i = 0; i < rows; i++) for (let j = 0; j < n; j++) out[j * rows + i] = src[i * cols + c0 + j];
  return out;
}

