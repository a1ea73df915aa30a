// hf-encoder.ts — BERT and ALBERT checkpoints in and out (`transformers`' BertForMaskedLM,
// BertForSequenceClassification, AlbertForMaskedLM, AlbertForSequenceClassification), as an Encoder with the options
// those models need: post-LN blocks, token-type embeddings, an embedding LayerNorm, no final LayerNorm, LayerNorm
// epsilon, the exact or tanh GELU, the MLM prediction head, the pooler. ALBERT's one shared layer group is sharing
// 'all' with a factorized embedding. The mapping and what is refused are in docs/models.md; test/hf.test.ts checks
// it against fixtures made by scripts/hf_fixtures.py, a PyTorch re-implementation of both models' forward passes.
//
// Both store nn.Linear weights as [out, in], as sharedformer does: no transposes, Q/K/V already apart.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Encoder, type EncoderConfig } from '../models/encoder.ts';
import type { Activation } from '../nn/layers.ts';
import { native } from '../native.ts';
import { tensor, type Device, type Tensor } from '../tensor.ts';
import { asFloat32, int, readWeights } from './hf-common.ts';
import { saveSafetensors, writeFileAtomic, type SafeTensor } from './safetensors.ts';

/** The `transformers` architectures read and written as an Encoder. */
export type EncoderArchitecture = 'BertForMaskedLM' | 'BertForSequenceClassification' | 'AlbertForMaskedLM' | 'AlbertForSequenceClassification';
const ARCHITECTURES: readonly string[] = ['BertForMaskedLM', 'BertForSequenceClassification', 'AlbertForMaskedLM', 'AlbertForSequenceClassification'];

const ACTIVATIONS: Record<string, Activation> = { gelu: 'gelu_erf', gelu_new: 'gelu_tanh', gelu_pytorch_tanh: 'gelu_tanh' };

/**
 * Reads a BERT or ALBERT folder (config.json already read as `c`) into an Encoder. With `numClasses`, the model gets a
 * classification head of that many classes (pooler and classifier) that the checkpoint need not hold — freshly
 * initialised where it does not, as transformers' from_pretrained(num_labels=...) does; a checkpoint's own classifier
 * must then have that many classes.
 */
export function readEncoderCheckpoint(dir: string, c: Record<string, unknown>, cfgPath: string, o: { device?: Device; numClasses?: number }): Encoder {
  const who = 'fromPretrained';
  const albert = c.model_type === 'albert';
  const family = albert ? 'ALBERT' : 'BERT';
  const refuse = (key: string, why: string): never => {
    throw new TypeError(`${who}: ${cfgPath}: "${key}" is ${JSON.stringify(c[key])}, which sharedformer's Encoder does not implement (${why})`);
  };
  const archs = c.architectures;
  const arch = Array.isArray(archs) && archs.length === 1 ? archs[0] : undefined;
  const prefix = albert ? 'Albert' : 'Bert';
  if (typeof arch !== 'string' || !ARCHITECTURES.includes(arch) || !arch.startsWith(prefix))
    refuse('architectures', `supported for ${family}: ${ARCHITECTURES.filter((a) => a.startsWith(prefix)).map((a) => JSON.stringify(a)).join(', ')}`);
  const classifying = (arch as string).endsWith('ForSequenceClassification');
  const C = int(c, 'hidden_size', who, cfgPath), H = int(c, 'num_attention_heads', who, cfgPath), L = int(c, 'num_hidden_layers', who, cfgPath);
  const F = int(c, 'intermediate_size', who, cfgPath), P = int(c, 'max_position_embeddings', who, cfgPath), V = int(c, 'vocab_size', who, cfgPath);
  const TV = int(c, 'type_vocab_size', who, cfgPath, 2);
  const E = albert ? int(c, 'embedding_size', who, cfgPath, 128) : undefined;
  if (C % H !== 0) throw new RangeError(`${who}: ${cfgPath}: "hidden_size" ${C} is not a multiple of "num_attention_heads" ${H}`);
  const act = ACTIVATIONS[String(c.hidden_act ?? (albert ? 'gelu_new' : 'gelu'))];
  if (!act) refuse('hidden_act', 'its activations are "gelu" (exact) and "gelu_new" / "gelu_pytorch_tanh" (tanh form)');
  const eps = c.layer_norm_eps ?? 1e-12;
  if (typeof eps !== 'number' || !(eps > 0) || !Number.isFinite(eps)) refuse('layer_norm_eps', 'a positive finite number is expected');
  if ((c.position_embedding_type ?? 'absolute') !== 'absolute') refuse('position_embedding_type', 'its positions are learned absolute embeddings');
  if (c.is_decoder === true) refuse('is_decoder', 'the Encoder attends bidirectionally');
  if (c.add_cross_attention === true) refuse('add_cross_attention', 'the Encoder has no cross-attention');
  if (c.tie_word_embeddings === false && !classifying) refuse('tie_word_embeddings', 'the MLM decoder is the word embedding');
  if (albert) {
    if ((c.num_hidden_groups ?? 1) !== 1) refuse('num_hidden_groups', 'one shared layer group (sharing "all") is read');
    if ((c.inner_group_num ?? 1) !== 1) refuse('inner_group_num', 'one layer per group is read');
  }
  let classes = 0;
  if (classifying) {
    const id2label = c.id2label;
    classes = id2label && typeof id2label === 'object' && !Array.isArray(id2label) ? Object.keys(id2label).length : int(c, 'num_labels', who, cfgPath, 2);
    if (classes < 2) refuse('id2label', 'a classifier has at least 2 classes (regression, num_labels 1, is not implemented)');
    if (c.problem_type !== undefined && c.problem_type !== null && c.problem_type !== 'single_label_classification')
      refuse('problem_type', 'the classification loss is the single-label cross-entropy');
  }
  if (o.numClasses !== undefined) {
    if (classifying && o.numClasses !== classes)
      throw new RangeError(`${who}: options.numClasses is ${o.numClasses}, but ${cfgPath} describes a classifier of ${classes} classes`);
    classes = o.numClasses;
  }

  // every tensor, named without the base model's prefix ('bert.' / 'albert.'); buffers transformers may have saved skipped
  const base = albert ? 'albert.' : 'bert.';
  const raw = readWeights(dir, who);
  const w = new Map<string, { t: SafeTensor; key: string }>();
  for (const [key, t] of raw) {
    const name = key.startsWith(base) ? key.slice(base.length) : key;
    if (name === 'embeddings.position_ids' || name === 'embeddings.token_type_ids') continue;
    if (w.has(name)) throw new Error(`${who}: the checkpoint holds ${JSON.stringify(key)} and ${JSON.stringify(w.get(name)!.key)}, the same weight twice`);
    w.set(name, { t, key });
  }
  const headKey = (name: string) => name.startsWith('cls.') || name.startsWith('predictions.') || name.startsWith('classifier.');
  const used = new Set<string>();
  const get = (name: string, shape: number[]): Float32Array => {
    const e = w.get(name);
    if (!e) throw new Error(`${who}: the checkpoint has no ${JSON.stringify(headKey(name) ? name : base + name)} (${arch} with ${L} layers needs it)`);
    if (e.t.shape.join() !== shape.join()) throw new RangeError(`${who}: ${JSON.stringify(e.key)} has shape [${e.t.shape.join(', ')}], config.json implies [${shape.join(', ')}]`);
    used.add(name);
    return asFloat32(e.t, e.key, who);
  };
  const sd = new Map<string, { data: Float32Array; shape: number[] }>();
  const put = (name: string, data: Float32Array, shape: number[]) => sd.set(name, { data, shape });
  const linear = (ours: string, theirs: string, inF: number, outF: number) => {
    put(`${ours}.weight`, get(`${theirs}.weight`, [outF, inF]), [outF, inF]);
    put(`${ours}.bias`, get(`${theirs}.bias`, [outF]), [outF]);
  };
  const norm = (ours: string, theirs: string, n: number) => {
    put(`${ours}.weight`, get(`${theirs}.weight`, [n]), [n]);
    put(`${ours}.bias`, get(`${theirs}.bias`, [n]), [n]);
  };
  // a tied copy saved beside the weight it copies must be exactly it
  const sameAs = (copy: string, of: Float32Array, ofName: string, shape: number[]) => {
    if (!w.has(copy)) return;
    const x = get(copy, shape);
    for (let i = 0; i < x.length; i++)
      if (!Object.is(x[i], of[i])) throw new Error(`${who}: ${JSON.stringify(w.get(copy)!.key)} differs from ${JSON.stringify(ofName)} at element ${i}, but ${arch} ties them`);
  };

  const Ew = E ?? C; // the embedding width
  const word = get('embeddings.word_embeddings.weight', [V, Ew]);
  put('tok.weight', word, [V, Ew]);
  put('pos.weight', get('embeddings.position_embeddings.weight', [P, Ew]), [P, Ew]);
  put('type.weight', get('embeddings.token_type_embeddings.weight', [TV, Ew]), [TV, Ew]);
  norm('emb_ln', 'embeddings.LayerNorm', Ew);
  if (albert) {
    linear('tok_proj', 'encoder.embedding_hidden_mapping_in', Ew, C);
    const g = 'encoder.albert_layer_groups.0.albert_layers.0.';
    for (const [ours, theirs] of [['wq', 'query'], ['wk', 'key'], ['wv', 'value'], ['wo', 'dense']]) linear(`attn.0.${ours}`, `${g}attention.${theirs}`, C, C);
    norm('attn.0.ln', `${g}attention.LayerNorm`, C);
    linear('ffn.0.fc1', `${g}ffn`, C, F);
    linear('ffn.0.fc2', `${g}ffn_output`, F, C);
    norm('ffn.0.ln', `${g}full_layer_layer_norm`, C);
  } else {
    for (let i = 0; i < L; i++) {
      const l = `encoder.layer.${i}.`;
      for (const [ours, theirs] of [['wq', 'query'], ['wk', 'key'], ['wv', 'value']]) linear(`attn.${i}.${ours}`, `${l}attention.self.${theirs}`, C, C);
      linear(`attn.${i}.wo`, `${l}attention.output.dense`, C, C);
      norm(`attn.${i}.ln`, `${l}attention.output.LayerNorm`, C);
      linear(`ffn.${i}.fc1`, `${l}intermediate.dense`, C, F);
      linear(`ffn.${i}.fc2`, `${l}output.dense`, F, C);
      norm(`ffn.${i}.ln`, `${l}output.LayerNorm`, C);
    }
  }
  const mlm = !classifying;
  if (mlm) {
    const h = albert ? 'predictions.' : 'cls.predictions.';
    linear('mlm.dense', albert ? `${h}dense` : `${h}transform.dense`, C, Ew);
    norm('mlm.ln', albert ? `${h}LayerNorm` : `${h}transform.LayerNorm`, Ew);
    const bias = get(`${h}bias`, [V]);
    put('mlm.bias', bias, [V]);
    sameAs(`${h}decoder.weight`, word, `${base}embeddings.word_embeddings.weight`, [V, Ew]);
    sameAs(`${h}decoder.bias`, bias, `${h}bias`, [V]);
  } else {
    linear('pooler', albert ? 'pooler' : 'pooler.dense', C, C);
    linear('cls', 'classifier', C, classes);
  }
  for (const [name, e] of w) if (!used.has(name)) throw new Error(`${who}: the checkpoint holds ${JSON.stringify(e.key)}, which ${arch} with ${L} layers does not have`);

  const config: EncoderConfig = {
    vocab: V, dModel: C, heads: H, dFF: F, layers: L, maxSeq: P, sharing: { strategy: albert ? 'all' : 'none' }, tiedEmbeddings: true,
    ...(E !== undefined ? { factorizedEmbedding: E } : {}), norm: 'post', bias: true, typeVocab: TV, embeddingNorm: true, finalNorm: false,
    layerNormEps: eps as number, activation: act, mlmTransform: mlm, ...(classes ? { numClasses: classes, pooler: true } : {}),
    device: o.device ?? 'cpu',
  };
  const model = new Encoder(config);
  // what the checkpoint does not hold (a classification head asked for with numClasses) keeps its initial values
  const tensors: { p: Tensor; t: Tensor }[] = [];
  try {
    const params = new Map(model.parameters().map((p) => [p.name, p]));
    for (const [name, { data, shape }] of sd) {
      const p = params.get(name);
      if (!p) throw new Error(`${who}: internal: the Encoder has no parameter ${name}`);
      if (p.shape.join() !== shape.join()) throw new Error(`${who}: internal: ${name} is [${p.shape.join(', ')}], the mapping made [${shape.join(', ')}]`);
      tensors.push({ p: p.value, t: tensor(data, shape, { device: model.store.device }) });
    }
    for (const { p, t } of tensors) native().copyInto(p.handle, t.handle);
  } catch (e) {
    model.store.dispose();
    throw e;
  } finally {
    for (const { t } of tensors) t.dispose();
  }
  return model;
}

/** What savePretrained wrote for an Encoder. */
export interface EncoderExport {
  architecture: EncoderArchitecture;
  files: string[];
  /** True when the model shares blocks across layers and each layer was written with its own copy of its block. */
  expanded: boolean;
}

/**
 * Writes an Encoder as BERT or ALBERT: ALBERT when its embedding is factorized or its plan is 'all' (one block for
 * every layer: one layer group; a factorized model with another plan is written with one group per layer, expanded; an
 * unfactorized 'all' model gets an identity embedding_hidden_mapping_in, exact in float32), else BERT (shared blocks
 * expanded). ForSequenceClassification when it has a classifier (which needs the pooler), else ForMaskedLM (which
 * needs the MLM head). Refused with the reason: whatever those layouts cannot hold.
 */
export function writeEncoderCheckpoint(model: Encoder, dir: string): EncoderExport {
  const who = 'savePretrained';
  const d = model.dims, plan = model.plan;
  const no = (what: string): never => {
    throw new TypeError(`${who}: BERT and ALBERT have no ${what}; this Encoder cannot be written in their layout`);
  };
  if (d.norm !== 'post') no(`pre-LN blocks (the model has norm: '${d.norm}'; BERT and ALBERT normalise after each residual sum)`);
  if (!d.embeddingNorm) no('embeddings without their LayerNorm (the model has embeddingNorm: false)');
  if (d.finalNorm) no('final LayerNorm after the last layer (the model has finalNorm: true)');
  if (d.typeVocab === undefined) no('model without token-type embeddings (the model has no typeVocab)');
  if (!d.bias) no('bias-free projections (the model has bias: false)');
  if (!d.tiedEmbeddings) no('untied output matrix (the model has tiedEmbeddings: false)');
  if (d.kvHeads !== d.heads) no(`grouped K/V heads (the model has kvHeads ${d.kvHeads} < heads ${d.heads})`);
  if (plan.kvShareGroup !== 1) no(`cross-layer K/V sharing (the model has kvShareGroup ${plan.kvShareGroup})`);
  if (plan.strategy === 'basis' || plan.strategy === 'delta') no(`'${plan.strategy}' layers (their weights are computed per layer, not stored as blocks)`);
  const classifying = d.numClasses > 0;
  if (classifying && !d.pooler) no('classifier without a pooler (the model has pooler: false)');
  if (!classifying && !d.mlmTransform) no('head here: the model has neither a classifier (numClasses, pooler) nor the MLM head (mlmTransform)');
  const all = plan.strategy === 'all' || (plan.uniqueAttention === 1 && plan.uniqueFfn === 1);
  const albert = d.factorizedEmbedding !== undefined || all;
  const groups = albert && all ? 1 : d.layers;
  const expanded = !all ? plan.strategy !== 'none' : !albert;
  const C = d.dModel, F = d.dFF, L = d.layers, V = d.vocab, Ew = d.factorizedEmbedding ?? C;
  const values = new Map<string, Float32Array>();
  for (const p of model.parameters()) values.set(p.name, p.value.dataSync() as Float32Array);
  const v = (name: string) => {
    const x = values.get(name);
    if (!x) throw new Error(`${who}: the model has no parameter ${name}`);
    return x;
  };
  const base = albert ? 'albert.' : 'bert.';
  const out = new Map<string, SafeTensor>();
  const put = (name: string, data: Float32Array, shape: number[]) => out.set(name, { dtype: 'F32', shape, data });
  const linear = (theirs: string, ours: string, inF: number, outF: number) => {
    put(`${theirs}.weight`, v(`${ours}.weight`), [outF, inF]);
    put(`${theirs}.bias`, v(`${ours}.bias`), [outF]);
  };
  const norm = (theirs: string, ours: string, n: number) => {
    put(`${theirs}.weight`, v(`${ours}.weight`), [n]);
    put(`${theirs}.bias`, v(`${ours}.bias`), [n]);
  };
  put(`${base}embeddings.word_embeddings.weight`, v('tok.weight'), [V, Ew]);
  put(`${base}embeddings.position_embeddings.weight`, v('pos.weight'), [d.maxSeq, Ew]);
  put(`${base}embeddings.token_type_embeddings.weight`, v('type.weight'), [d.typeVocab!, Ew]);
  norm(`${base}embeddings.LayerNorm`, 'emb_ln', Ew);
  if (albert) {
    if (d.factorizedEmbedding !== undefined) linear(`${base}encoder.embedding_hidden_mapping_in`, 'tok_proj', Ew, C);
    else {
      const eye = new Float32Array(C * C);
      for (let i = 0; i < C; i++) eye[i * C + i] = 1;
      put(`${base}encoder.embedding_hidden_mapping_in.weight`, eye, [C, C]);
      put(`${base}encoder.embedding_hidden_mapping_in.bias`, new Float32Array(C), [C]);
    }
  }
  for (let i = 0; i < (albert ? groups : L); i++) {
    const a = `attn.${plan.layers[i].attention}`, f = `ffn.${plan.layers[i].ffn}`;
    if (albert) {
      const g = `${base}encoder.albert_layer_groups.${i}.albert_layers.0.`;
      for (const [theirs, ours] of [['query', 'wq'], ['key', 'wk'], ['value', 'wv'], ['dense', 'wo']]) linear(`${g}attention.${theirs}`, `${a}.${ours}`, C, C);
      norm(`${g}attention.LayerNorm`, `${a}.ln`, C);
      linear(`${g}ffn`, `${f}.fc1`, C, F);
      linear(`${g}ffn_output`, `${f}.fc2`, F, C);
      norm(`${g}full_layer_layer_norm`, `${f}.ln`, C);
    } else {
      const l = `${base}encoder.layer.${i}.`;
      for (const [theirs, ours] of [['query', 'wq'], ['key', 'wk'], ['value', 'wv']]) linear(`${l}attention.self.${theirs}`, `${a}.${ours}`, C, C);
      linear(`${l}attention.output.dense`, `${a}.wo`, C, C);
      norm(`${l}attention.output.LayerNorm`, `${a}.ln`, C);
      linear(`${l}intermediate.dense`, `${f}.fc1`, C, F);
      linear(`${l}output.dense`, `${f}.fc2`, F, C);
      norm(`${l}output.LayerNorm`, `${f}.ln`, C);
    }
  }
  const arch = `${albert ? 'Albert' : 'Bert'}For${classifying ? 'SequenceClassification' : 'MaskedLM'}` as EncoderArchitecture;
  if (classifying) {
    linear(albert ? `${base}pooler` : `${base}pooler.dense`, 'pooler', C, C);
    linear('classifier', 'cls', C, d.numClasses);
  } else {
    const h = albert ? 'predictions.' : 'cls.predictions.';
    linear(albert ? `${h}dense` : `${h}transform.dense`, 'mlm.dense', C, Ew);
    norm(albert ? `${h}LayerNorm` : `${h}transform.LayerNorm`, 'mlm.ln', Ew);
    put(`${h}bias`, v('mlm.bias'), [V]);
  }
  const labels = Array.from({ length: d.numClasses }, (_, i) => `LABEL_${i}`);
  const config = {
    architectures: [arch], model_type: albert ? 'albert' : 'bert', vocab_size: V, hidden_size: C, num_hidden_layers: L,
    num_attention_heads: d.heads, intermediate_size: F, hidden_act: d.activation === 'gelu_erf' ? 'gelu' : 'gelu_new',
    max_position_embeddings: d.maxSeq, type_vocab_size: d.typeVocab, layer_norm_eps: d.layerNormEps, initializer_range: 0.02,
    hidden_dropout_prob: 0, attention_probs_dropout_prob: 0, position_embedding_type: 'absolute', tie_word_embeddings: true,
    ...(albert ? { embedding_size: Ew, num_hidden_groups: groups, inner_group_num: 1, classifier_dropout_prob: 0 } : {}),
    ...(classifying ? { id2label: Object.fromEntries(labels.map((l, i) => [String(i), l])), label2id: Object.fromEntries(labels.map((l, i) => [l, i])) } : {}),
    torch_dtype: 'float32',
    ...(expanded ? { sharedformer_sharing: { strategy: plan.strategy, plan: plan.describe(), expanded: true } } : {}),
  };
  mkdirSync(dir, { recursive: true });
  saveSafetensors(join(dir, 'model.safetensors'), out, { format: 'pt' });
  writeFileAtomic(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  return { architecture: arch, files: ['model.safetensors', 'config.json'], expanded };
}
