// hf.ts — Hugging Face checkpoints in and out: a folder with config.json and model.safetensors (or shards listed by
// model.safetensors.index.json) in the layout of `transformers`' GPT2LMHeadModel, read into a Decoder and written from
// one; BERT and ALBERT folders are handed to lib/io/hf-encoder.ts (an Encoder). The mapping, what is refused and how it is verified are in docs/models.md; test/hf.test.ts checks it against
// fixtures made by scripts/hf_fixtures.py, a PyTorch re-implementation of the model's forward pass.
//
// GPT-2 stores its projections as Conv1D weights, [in, out] (x @ W + b), with Q, K and V side by side in one
// c_attn [E, 3E]; sharedformer's Linear stores [out, in] (PyTorch's nn.Linear) and Q, K, V apart. Reading splits and
// transposes; writing joins and transposes back, so a round trip is bit-exact.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Decoder } from '../models/decoder.ts';
import { Encoder } from '../models/encoder.ts';
import { checkInt } from '../validate.ts';
import { readEncoderCheckpoint, writeEncoderCheckpoint, type EncoderArchitecture } from './hf-encoder.ts';
import { tensor, type Device, type Tensor } from '../tensor.ts';
import { describe } from '../validate.ts';
import { saveSafetensors, writeFileAtomic, type SafeTensor } from './safetensors.ts';
import { asFloat32, int, readJson, readWeights, transposeCols } from './hf-common.ts';

/** Options of fromPretrained. */
export interface FromPretrainedOptions {
  /** Where the model lives (default 'cpu'). */
  device?: Device;
  /**
   * BERT / ALBERT: give the Encoder a classification head of this many classes (pooler and classifier), freshly
   * initialised when the checkpoint has none (a masked-LM checkpoint to fine-tune), as transformers'
   * from_pretrained(num_labels=...). A checkpoint's own classifier must have this many classes.
   */
  numClasses?: number;
}

/** What savePretrained wrote. */
export interface SavePretrainedResult {
  architecture: 'GPT2LMHeadModel' | EncoderArchitecture;
  /** The files written, in the folder. */
  files: string[];
  /** True when the model shares blocks across layers and each layer was written with its own copy of its block. */
  expanded: boolean;
}

/**
 * Reads a Hugging Face checkpoint folder (config.json + model.safetensors, or sharded through
 * model.safetensors.index.json) into a model. Supported: GPT-2 (`GPT2LMHeadModel`, `GPT2Model`: pre-LN, learned
 * positions, tanh GELU, tied output head) as an unshared Decoder; BERT (`BertForMaskedLM`,
 * `BertForSequenceClassification`) as an unshared post-LN Encoder; ALBERT (`AlbertForMaskedLM`,
 * `AlbertForSequenceClassification`, one layer group) as an Encoder with sharing 'all' and a factorized embedding
 * (lib/io/hf-encoder.ts). Narrow the result with `instanceof Decoder` / `instanceof Encoder`. Anything the model
 * cannot represent — another model type or architecture, another activation, an untied head, cross-attention, a
 * tensor it does not know — is an error that names the key; nothing is allocated before the whole checkpoint has
 * been checked.
 */
export function fromPretrained(dir: string, options: FromPretrainedOptions = {}): Decoder | Encoder {
  const who = 'fromPretrained';
  if (typeof dir !== 'string' || dir.length === 0) throw new TypeError(`${who}: dir must be a non-empty string, got ${describe(dir)}`);
  if (options === null || typeof options !== 'object') throw new TypeError(`${who}: options must be an object, got ${describe(options)}`);
  for (const k of Object.keys(options)) if (k !== 'device' && k !== 'numClasses') throw new TypeError(`${who}: unknown option ${JSON.stringify(k)} (options: device, numClasses)`);
  const numClasses = options.numClasses === undefined ? undefined : checkInt(who, options.numClasses, 'options.numClasses', 2);
  const cfgPath = join(dir, 'config.json');
  const c = readJson(cfgPath, who);
  const type = c.model_type;
  if (type === 'bert' || type === 'albert') return readEncoderCheckpoint(dir, c, cfgPath, { device: options.device, numClasses });
  if (type !== 'gpt2') throw new TypeError(`${who}: ${cfgPath}: "model_type" ${describe(type)} is not supported; supported: "gpt2", "bert", "albert"`);
  if (numClasses !== undefined) throw new TypeError(`${who}: options.numClasses is for BERT and ALBERT checkpoints; ${cfgPath} is GPT-2 (a language model)`);
  const E = int(c, 'n_embd', who, cfgPath), H = int(c, 'n_head', who, cfgPath), L = int(c, 'n_layer', who, cfgPath);
  const P = int(c, 'n_positions', who, cfgPath), V = int(c, 'vocab_size', who, cfgPath);
  const F = c.n_inner === null || c.n_inner === undefined ? 4 * E : int(c, 'n_inner', who, cfgPath);
  const refuse = (key: string, why: string) => {
    throw new TypeError(`${who}: ${cfgPath}: "${key}" is ${JSON.stringify(c[key])}, which sharedformer's Decoder does not implement (${why})`);
  };
  const act = c.activation_function ?? 'gelu_new';
  if (act !== 'gelu_new' && act !== 'gelu_pytorch_tanh') refuse('activation_function', 'its GELU is the tanh form: "gelu_new" or "gelu_pytorch_tanh"');
  if ((c.layer_norm_epsilon ?? 1e-5) !== 1e-5) refuse('layer_norm_epsilon', 'its LayerNorm epsilon is 1e-5');
  if (c.scale_attn_weights === false) refuse('scale_attn_weights', 'attention scores are always scaled by 1/sqrt(head size)');
  if (c.scale_attn_by_inverse_layer_idx === true) refuse('scale_attn_by_inverse_layer_idx', 'no per-layer score scaling');
  if (c.add_cross_attention === true) refuse('add_cross_attention', 'a decoder-only model has no cross-attention');
  if (c.tie_word_embeddings === false) refuse('tie_word_embeddings', 'the output head is the token embedding');
  if (E % H !== 0) throw new RangeError(`${who}: ${cfgPath}: "n_embd" ${E} is not a multiple of "n_head" ${H}`);

  const raw = readWeights(dir, who);
  const w = new Map<string, { t: SafeTensor; key: string }>();
  for (const [key, t] of raw) {
    const name = key.startsWith('transformer.') ? key.slice('transformer.'.length) : key;
    if (/^h\.\d+\.attn\.(bias|masked_bias)$/.test(name)) continue; // the causal-mask buffers older versions saved
    if (w.has(name)) throw new Error(`${who}: the checkpoint holds ${JSON.stringify(key)} and ${JSON.stringify(w.get(name)!.key)}, the same weight twice`);
    w.set(name, { t, key });
  }
  const used = new Set<string>();
  const get = (name: string, shape: number[]): Float32Array => {
    const e = w.get(name);
    if (!e) throw new Error(`${who}: the checkpoint has no ${JSON.stringify(`transformer.${name}`)} (GPT-2 with ${L} layers needs it)`);
    if (e.t.shape.join() !== shape.join()) throw new RangeError(`${who}: ${JSON.stringify(e.key)} has shape [${e.t.shape.join(', ')}], config.json implies [${shape.join(', ')}]`);
    used.add(name);
    return asFloat32(e.t, e.key, who);
  };
  const sd = new Map<string, { data: Float32Array; shape: number[] }>();
  const put = (name: string, data: Float32Array, shape: number[]) => sd.set(name, { data, shape });
  const wte = get('wte.weight', [V, E]);
  put('tok.weight', wte, [V, E]);
  put('pos.weight', get('wpe.weight', [P, E]), [P, E]);
  for (let i = 0; i < L; i++) {
    const h = `h.${i}.`;
    put(`attn.${i}.ln.weight`, get(`${h}ln_1.weight`, [E]), [E]);
    put(`attn.${i}.ln.bias`, get(`${h}ln_1.bias`, [E]), [E]);
    const qkv = get(`${h}attn.c_attn.weight`, [E, 3 * E]), qkvB = get(`${h}attn.c_attn.bias`, [3 * E]);
    ['wq', 'wk', 'wv'].forEach((p, k) => {
      put(`attn.${i}.${p}.weight`, transposeCols(qkv, E, 3 * E, k * E, E), [E, E]);
      put(`attn.${i}.${p}.bias`, qkvB.slice(k * E, (k + 1) * E), [E]);
    });
    put(`attn.${i}.wo.weight`, transposeCols(get(`${h}attn.c_proj.weight`, [E, E]), E, E, 0, E), [E, E]);
    put(`attn.${i}.wo.bias`, get(`${h}attn.c_proj.bias`, [E]), [E]);
    put(`ffn.${i}.ln.weight`, get(`${h}ln_2.weight`, [E]), [E]);
    put(`ffn.${i}.ln.bias`, get(`${h}ln_2.bias`, [E]), [E]);
    put(`ffn.${i}.fc1.weight`, transposeCols(get(`${h}mlp.c_fc.weight`, [E, F]), E, F, 0, F), [F, E]);
    put(`ffn.${i}.fc1.bias`, get(`${h}mlp.c_fc.bias`, [F]), [F]);
    put(`ffn.${i}.fc2.weight`, transposeCols(get(`${h}mlp.c_proj.weight`, [F, E]), F, E, 0, E), [E, F]);
    put(`ffn.${i}.fc2.bias`, get(`${h}mlp.c_proj.bias`, [E]), [E]);
  }
  put('ln_f.weight', get('ln_f.weight', [E]), [E]);
  put('ln_f.bias', get('ln_f.bias', [E]), [E]);
  // The LM head is the token embedding: a saved copy must be exactly it.
  const head = w.get('lm_head.weight');
  if (head) {
    const hd = get('lm_head.weight', [V, E]);
    for (let i = 0; i < hd.length; i++)
      if (!Object.is(hd[i], wte[i])) throw new Error(`${who}: "lm_head.weight" differs from "transformer.wte.weight" at element ${i}, but config.json ties them (tie_word_embeddings)`);
  }
  for (const [name, e] of w) if (!used.has(name)) throw new Error(`${who}: the checkpoint holds ${JSON.stringify(e.key)}, which GPT2LMHeadModel with ${L} layers does not have`);

  const model = new Decoder({ vocab: V, dModel: E, heads: H, dFF: F, layers: L, maxSeq: P, sharing: { strategy: 'none' }, tiedEmbeddings: true, norm: 'pre', bias: true, device: options.device ?? 'cpu' });
  const tensors: Record<string, Tensor> = {};
  try {
    for (const [name, { data, shape }] of sd) tensors[name] = tensor(data, shape, { device: model.store.device });
    model.loadStateDict(tensors);
  } catch (e) {
    model.store.dispose();
    throw e;
  } finally {
    for (const t of Object.values(tensors)) t.dispose();
  }
  return model;
}

/**
 * Writes `model` as a Hugging Face GPT-2 checkpoint (config.json and model.safetensors, F32, `format: pt`) that
 * `transformers`' GPT2LMHeadModel.from_pretrained reads. A model that shares blocks across layers is written with its
 * layers expanded (each layer gets a copy of the block it applies; the result says so, and config.json records the
 * plan under "sharedformer_sharing"); fromPretrained then reads it back as an unshared model with the same outputs.
 * Refused, with the reason: pre-LN only, biases, a tied head, no factorized embedding, kvHeads = heads, no cross-layer
 * K/V sharing, and no basis/delta strategies (their per-layer weights are not stored as blocks). Each file is written
 * atomically.
 */
export function savePretrained(model: Decoder | Encoder, dir: string): SavePretrainedResult {
  const who = 'savePretrained';
  if (!(model instanceof Decoder) && !(model instanceof Encoder)) throw new TypeError(`${who}: model must be a Decoder (GPT-2 layout) or an Encoder (BERT / ALBERT layout), got ${describe(model)}`);
  if (typeof dir !== 'string' || dir.length === 0) throw new TypeError(`${who}: dir must be a non-empty string, got ${describe(dir)}`);
  if (model instanceof Encoder) return writeEncoderCheckpoint(model, dir);
  const c = model.config, plan = model.plan;
  const no = (what: string) => {
    throw new TypeError(`${who}: GPT-2 has no ${what}; this model cannot be written in its layout`);
  };
  if (c.norm !== 'pre') no(`post-LN blocks (the model has norm: '${c.norm}')`);
  if (!c.bias) no('bias-free projections (the model has bias: false)');
  if (!c.tiedEmbeddings) no('untied output head (the model has tiedEmbeddings: false)');
  if (c.factorizedEmbedding !== undefined) no(`factorized embedding (the model has factorizedEmbedding: ${c.factorizedEmbedding})`);
  if (c.kvHeads !== c.heads) no(`grouped K/V heads (the model has kvHeads ${c.kvHeads} < heads ${c.heads})`);
  if (plan.kvShareGroup !== 1) no(`cross-layer K/V sharing (the model has kvShareGroup ${plan.kvShareGroup})`);
  if (plan.strategy === 'basis' || plan.strategy === 'delta') no(`'${plan.strategy}' layers (their weights are computed per layer, not stored as blocks)`);
  const E = c.dModel, F = c.dFF, L = c.layers;
  const values = new Map<string, Float32Array>();
  for (const p of model.parameters()) values.set(p.name, p.value.dataSync() as Float32Array);
  const v = (name: string) => {
    const x = values.get(name);
    if (!x) throw new Error(`${who}: the model has no parameter ${name}`);
    return x;
  };
  const out = new Map<string, SafeTensor>();
  const put = (name: string, data: Float32Array, shape: number[]) => out.set(`transformer.${name}`, { dtype: 'F32', shape, data });
  put('wte.weight', v('tok.weight'), [c.vocab, E]);
  put('wpe.weight', v('pos.weight'), [c.maxSeq, E]);
  for (let i = 0; i < L; i++) {
    const a = `attn.${plan.layers[i].attention}.`, f = `ffn.${plan.layers[i].ffn}.`, h = `h.${i}.`;
    put(`${h}ln_1.weight`, v(`${a}ln.weight`), [E]);
    put(`${h}ln_1.bias`, v(`${a}ln.bias`), [E]);
    const qkv = new Float32Array(E * 3 * E), qkvB = new Float32Array(3 * E);
    ['wq', 'wk', 'wv'].forEach((p, k) => {
      const W = v(`${a}${p}.weight`); // [out E, in E]
      for (let o = 0; o < E; o++) for (let i2 = 0; i2 < E; i2++) qkv[i2 * 3 * E + k * E + o] = W[o * E + i2];
      qkvB.set(v(`${a}${p}.bias`), k * E);
    });
    put(`${h}attn.c_attn.weight`, qkv, [E, 3 * E]);
    put(`${h}attn.c_attn.bias`, qkvB, [3 * E]);
    put(`${h}attn.c_proj.weight`, transposeCols(v(`${a}wo.weight`), E, E, 0, E), [E, E]);
    put(`${h}attn.c_proj.bias`, v(`${a}wo.bias`), [E]);
    put(`${h}ln_2.weight`, v(`${f}ln.weight`), [E]);
    put(`${h}ln_2.bias`, v(`${f}ln.bias`), [E]);
    put(`${h}mlp.c_fc.weight`, transposeCols(v(`${f}fc1.weight`), F, E, 0, E), [E, F]);
    put(`${h}mlp.c_fc.bias`, v(`${f}fc1.bias`), [F]);
    put(`${h}mlp.c_proj.weight`, transposeCols(v(`${f}fc2.weight`), E, F, 0, F), [F, E]);
    put(`${h}mlp.c_proj.bias`, v(`${f}fc2.bias`), [E]);
  }
  put('ln_f.weight', v('ln_f.weight'), [E]);
  put('ln_f.bias', v('ln_f.bias'), [E]);
  const expanded = plan.strategy !== 'none';
  const config = {
    architectures: ['GPT2LMHeadModel'], model_type: 'gpt2', vocab_size: c.vocab, n_positions: c.maxSeq, n_embd: E, n_layer: L,
    n_head: c.heads, n_inner: F, activation_function: 'gelu_new', layer_norm_epsilon: 1e-5, resid_pdrop: 0, embd_pdrop: 0,
    attn_pdrop: 0, initializer_range: 0.02, scale_attn_weights: true, scale_attn_by_inverse_layer_idx: false, reorder_and_upcast_attn: false,
    tie_word_embeddings: true, use_cache: true, torch_dtype: 'float32',
    ...(expanded ? { sharedformer_sharing: { strategy: plan.strategy, plan: plan.describe(), expanded: true } } : {}),
  };
  mkdirSync(dir, { recursive: true });
  saveSafetensors(join(dir, 'model.safetensors'), out, { format: 'pt' });
  writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  return { architecture: 'GPT2LMHeadModel', files: ['model.safetensors', 'config.json'], expanded };
}
