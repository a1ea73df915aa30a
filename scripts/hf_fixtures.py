#!/usr/bin/python3
"""Writes test/fixtures/hf/: tiny random GPT-2, BERT and ALBERT checkpoints in the exact Hugging Face layout, with the
logits a re-implementation of `transformers`' forward passes gives for fixed inputs, and the logits that same
re-implementation gives for checkpoints sharedformer exported (test/fixtures/hf/export-*, written by
scripts/hf_export_fixture.ts).

The `transformers` package cannot be installed here (its PyTorch models need PyTorch 2; Debian has 1.13), so the
forward pass below is written from its source: src/transformers/models/gpt2/modeling_gpt2.py (GPT2Attention,
GPT2MLP, GPT2Block, GPT2Model, GPT2LMHeadModel) and src/transformers/pytorch_utils.py (Conv1D) of transformers
v4.57, with src/transformers/activations.py (NewGELUActivation, "gelu_new"; GELUActivation, "gelu", the exact erf
form); BERT from src/transformers/models/bert/modeling_bert.py (BertEmbeddings, BertSelfAttention, BertSelfOutput,
BertIntermediate, BertOutput, BertPooler, BertPredictionHeadTransform, BertLMPredictionHead, BertForMaskedLM,
BertForSequenceClassification) and ALBERT from src/transformers/models/albert/modeling_albert.py (AlbertEmbeddings,
AlbertAttention, AlbertLayer, AlbertLayerGroup, AlbertTransformer, AlbertModel's pooler, AlbertMLMHead,
AlbertForMaskedLM, AlbertForSequenceClassification) of the same version; the attention mask as
modeling_attn_mask_utils.py expands a [B, T] padding mask (masked keys get the dtype's minimum). Eval mode: dropout is
the identity.
It computes in float64 from the stored weights. The safetensors reader and writer follow the format's specification
(an 8-byte little-endian header length, a JSON header, the raw little-endian data).

Run: /usr/bin/python3 scripts/hf_fixtures.py   (Debian's python3-torch; tests and CI read the files, never run this)
"""
import json
import math
import os
import struct
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
OUT = os.path.join(ROOT, 'test', 'fixtures', 'hf')
DT = {'F32': (torch.float32, 4), 'BF16': (torch.bfloat16, 2)}


def save_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for name, (t, dtype) in tensors.items():
        t = t.to(DT[dtype][0]).contiguous()
        raw = t.view(torch.int16).numpy().tobytes() if dtype == 'BF16' else t.numpy().tobytes()
        header[name] = {'dtype': dtype, 'shape': list(t.shape), 'data_offsets': [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header['__metadata__'] = metadata
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * ((8 - len(h) % 8) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def load_safetensors(path):
    with open(path, 'rb') as f:
        buf = f.read()
    n = struct.unpack('<Q', buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        a, b = info['data_offsets']
        raw = bytearray(buf[8 + n + a:8 + n + b])
        if info['dtype'] == 'F32':
            t = torch.frombuffer(raw, dtype=torch.float32)
        elif info['dtype'] == 'BF16':
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16)
        else:
            raise ValueError(f'{path}: {name} is {info["dtype"]}')
        out[name] = t.reshape(info['shape']).to(torch.float64)
    return out


def load_checkpoint(d):
    if os.path.exists(os.path.join(d, 'model.safetensors')):
        return load_safetensors(os.path.join(d, 'model.safetensors'))
    with open(os.path.join(d, 'model.safetensors.index.json')) as f:
        index = json.load(f)
    out = {}
    for shard in sorted(set(index['weight_map'].values())):
        out.update(load_safetensors(os.path.join(d, shard)))
    return out


# ---- GPT-2, from modeling_gpt2.py ------------------------------------------------------------------------------------

def gelu_new(x):  # activations.py NewGELUActivation
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def conv1d(x, w, b):  # pytorch_utils.py Conv1D: x @ W + b, W [nx, nf]
    return torch.addmm(b, x.reshape(-1, x.size(-1)), w).reshape(*x.shape[:-1], w.size(1))


def layer_norm(x, w, b, eps):
    return torch.nn.functional.layer_norm(x, (x.size(-1),), w, b, eps)


def gpt2_logits(cfg, sd, ids):
    """GPT2LMHeadModel.forward(input_ids).logits in eval mode; sd holds GPT2Model's weights (with or without the
    'transformer.' prefix)."""
    g = lambda k: sd[k] if k in sd else sd['transformer.' + k]
    E, H, L = cfg['n_embd'], cfg['n_head'], cfg['n_layer']
    eps = cfg.get('layer_norm_epsilon', 1e-5)
    Dh = E // H
    B, T = ids.shape
    pos = torch.arange(T).unsqueeze(0)
    h = g('wte.weight')[ids] + g('wpe.weight')[pos]  # GPT2Model: inputs_embeds + position_embeds
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(L):
        p = f'h.{i}.'
        a = layer_norm(h, g(p + 'ln_1.weight'), g(p + 'ln_1.bias'), eps)
        q, k, v = conv1d(a, g(p + 'attn.c_attn.weight'), g(p + 'attn.c_attn.bias')).split(E, dim=2)
        split = lambda x: x.view(B, T, H, Dh).permute(0, 2, 1, 3)  # _split_heads
        q, k, v = split(q), split(k), split(v)
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(Dh)  # scale_attn_weights
        w = torch.where(causal, w, torch.tensor(torch.finfo(w.dtype).min, dtype=w.dtype))
        w = torch.softmax(w, dim=-1)
        o = torch.matmul(w, v).permute(0, 2, 1, 3).reshape(B, T, E)  # _merge_heads
        h = h + conv1d(o, g(p + 'attn.c_proj.weight'), g(p + 'attn.c_proj.bias'))
        m = layer_norm(h, g(p + 'ln_2.weight'), g(p + 'ln_2.bias'), eps)
        m = conv1d(gelu_new(conv1d(m, g(p + 'mlp.c_fc.weight'), g(p + 'mlp.c_fc.bias'))), g(p + 'mlp.c_proj.weight'), g(p + 'mlp.c_proj.bias'))
        h = h + m
    h = layer_norm(h, g('ln_f.weight'), g('ln_f.bias'), eps)
    return h @ g('wte.weight').T  # lm_head tied to wte


# ---- BERT and ALBERT, from modeling_bert.py and modeling_albert.py ----------------------------------------------------

ACT = {'gelu': lambda x: torch.nn.functional.gelu(x), 'gelu_new': gelu_new, 'gelu_pytorch_tanh': gelu_new}


def linear(x, sd, k):  # nn.Linear: x W^T + b, W [out, in]
    return x @ sd[k + '.weight'].T + sd[k + '.bias']


def ln(x, sd, k, eps):
    return layer_norm(x, sd[k + '.weight'], sd[k + '.bias'], eps)


def embeddings(sd, k, ids, types, eps):
    """BertEmbeddings / AlbertEmbeddings: (word + token_type) + absolute position, then LayerNorm."""
    T = ids.shape[1]
    e = sd[k + 'word_embeddings.weight'][ids] + sd[k + 'token_type_embeddings.weight'][types]
    e = e + sd[k + 'position_embeddings.weight'][torch.arange(T).unsqueeze(0)]
    return ln(e, sd, k + 'LayerNorm', eps)


def self_attention(h, sd, q, k, v, H, mask):
    """BertSelfAttention / AlbertAttention's scores: softmax(Q K^T / sqrt(Dh) + mask) V, heads merged."""
    B, T, C = h.shape
    Dh = C // H
    split = lambda x: x.view(B, T, H, Dh).permute(0, 2, 1, 3)
    Q, K, V = split(linear(h, sd, q)), split(linear(h, sd, k)), split(linear(h, sd, v))
    w = torch.matmul(Q, K.transpose(-1, -2)) / math.sqrt(Dh)
    w = w + mask  # the extended mask: 0 for keys kept, the dtype's minimum for padding
    w = torch.softmax(w, dim=-1)
    return torch.matmul(w, V).permute(0, 2, 1, 3).reshape(B, T, C)


def extended_mask(attention_mask, dtype):
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def bert_hidden(cfg, sd, ids, types, attention_mask, prefix):
    g = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    eps, H, act = cfg['layer_norm_eps'], cfg['num_attention_heads'], ACT[cfg['hidden_act']]
    mask = extended_mask(attention_mask, torch.float64)
    h = embeddings(g, 'embeddings.', ids, types, eps)
    for i in range(cfg['num_hidden_layers']):
        p = f'encoder.layer.{i}.'
        a = self_attention(h, g, p + 'attention.self.query', p + 'attention.self.key', p + 'attention.self.value', H, mask)
        h = ln(linear(a, g, p + 'attention.output.dense') + h, g, p + 'attention.output.LayerNorm', eps)  # BertSelfOutput
        m = act(linear(h, g, p + 'intermediate.dense'))  # BertIntermediate
        h = ln(linear(m, g, p + 'output.dense') + h, g, p + 'output.LayerNorm', eps)  # BertOutput
    return h, g


def bert_logits(cfg, sd, ids, types, attention_mask):
    """BertForMaskedLM (.logits) or BertForSequenceClassification (.logits), by config['architectures']."""
    h, g = bert_hidden(cfg, sd, ids, types, attention_mask, 'bert.')
    eps, act = cfg['layer_norm_eps'], ACT[cfg['hidden_act']]
    if cfg['architectures'][0] == 'BertForSequenceClassification':
        pooled = torch.tanh(linear(h[:, 0], g, 'pooler.dense'))  # BertPooler
        return linear(pooled, sd, 'classifier')
    t = ln(act(linear(h, sd, 'cls.predictions.transform.dense')), sd, 'cls.predictions.transform.LayerNorm', eps)
    return t @ g['embeddings.word_embeddings.weight'].T + sd['cls.predictions.bias']  # decoder tied, its bias = .bias


def albert_logits(cfg, sd, ids, types, attention_mask):
    """AlbertForMaskedLM (.logits) or AlbertForSequenceClassification (.logits), by config['architectures']."""
    g = {k[len('albert.'):]: v for k, v in sd.items() if k.startswith('albert.')}
    eps, H, act = cfg['layer_norm_eps'], cfg['num_attention_heads'], ACT[cfg['hidden_act']]
    L, G, inner = cfg['num_hidden_layers'], cfg['num_hidden_groups'], cfg['inner_group_num']
    mask = extended_mask(attention_mask, torch.float64)
    h = linear(embeddings(g, 'embeddings.', ids, types, eps), g, 'encoder.embedding_hidden_mapping_in')
    for i in range(L):
        group = int(i / (L / G))  # AlbertTransformer: the layer group of layer i
        for j in range(inner):  # AlbertLayerGroup: its layers in turn
            p = f'encoder.albert_layer_groups.{group}.albert_layers.{j}.'
            a = self_attention(h, g, p + 'attention.query', p + 'attention.key', p + 'attention.value', H, mask)
            a = ln(h + linear(a, g, p + 'attention.dense'), g, p + 'attention.LayerNorm', eps)  # AlbertAttention
            f = linear(act(linear(a, g, p + 'ffn')), g, p + 'ffn_output')  # AlbertLayer.ff_chunk
            h = ln(f + a, g, p + 'full_layer_layer_norm', eps)
    if cfg['architectures'][0] == 'AlbertForSequenceClassification':
        pooled = torch.tanh(linear(h[:, 0], g, 'pooler'))  # AlbertModel: pooler_activation(pooler(h[:, 0]))
        return linear(pooled, sd, 'classifier')
    t = ln(act(linear(h, sd, 'predictions.dense')), sd, 'predictions.LayerNorm', eps)  # AlbertMLMHead
    return t @ g['embeddings.word_embeddings.weight'].T + sd['predictions.bias']


def logits_for(cfg, sd, ids, types, mask):
    return (bert_logits if cfg['model_type'] == 'bert' else albert_logits)(cfg, sd, ids, types, mask)


def random_bert(cfg, seed, classes=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s, std=0.2: torch.randn(*s, generator=gen, dtype=torch.float32) * std
    C, V, P, I = cfg['hidden_size'], cfg['vocab_size'], cfg['max_position_embeddings'], cfg['intermediate_size']
    sd = {}
    lin = lambda k, i, o, std=0.25: sd.update({k + '.weight': r(o, i, std=std), k + '.bias': r(o, std=0.1)})
    norm = lambda k, n: sd.update({k + '.weight': 1 + r(n, std=0.1), k + '.bias': r(n, std=0.1)})
    e = 'bert.embeddings.'
    sd[e + 'word_embeddings.weight'] = r(V, C, std=0.5)
    sd[e + 'position_embeddings.weight'] = r(P, C, std=0.3)
    sd[e + 'token_type_embeddings.weight'] = r(cfg['type_vocab_size'], C, std=0.3)
    norm(e + 'LayerNorm', C)
    for i in range(cfg['num_hidden_layers']):
        p = f'bert.encoder.layer.{i}.'
        for q in ('query', 'key', 'value'):
            lin(p + 'attention.self.' + q, C, C)
        lin(p + 'attention.output.dense', C, C)
        norm(p + 'attention.output.LayerNorm', C)
        lin(p + 'intermediate.dense', C, I)
        lin(p + 'output.dense', I, C, std=0.15)
        norm(p + 'output.LayerNorm', C)
    if classes:
        lin('bert.pooler.dense', C, C)
        lin('classifier', C, classes)
    else:
        lin('cls.predictions.transform.dense', C, C)
        norm('cls.predictions.transform.LayerNorm', C)
        sd['cls.predictions.bias'] = r(V, std=0.1)
    return sd


def random_albert(cfg, seed, classes=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s, std=0.2: torch.randn(*s, generator=gen, dtype=torch.float32) * std
    C, E, V, P, I = cfg['hidden_size'], cfg['embedding_size'], cfg['vocab_size'], cfg['max_position_embeddings'], cfg['intermediate_size']
    sd = {}
    lin = lambda k, i, o, std=0.25: sd.update({k + '.weight': r(o, i, std=std), k + '.bias': r(o, std=0.1)})
    norm = lambda k, n: sd.update({k + '.weight': 1 + r(n, std=0.1), k + '.bias': r(n, std=0.1)})
    e = 'albert.embeddings.'
    sd[e + 'word_embeddings.weight'] = r(V, E, std=0.5)
    sd[e + 'position_embeddings.weight'] = r(P, E, std=0.3)
    sd[e + 'token_type_embeddings.weight'] = r(cfg['type_vocab_size'], E, std=0.3)
    norm(e + 'LayerNorm', E)
    lin('albert.encoder.embedding_hidden_mapping_in', E, C, std=0.3)
    p = 'albert.encoder.albert_layer_groups.0.albert_layers.0.'
    for q in ('query', 'key', 'value', 'dense'):
        lin(p + 'attention.' + q, C, C)
    norm(p + 'attention.LayerNorm', C)
    lin(p + 'ffn', C, I)
    lin(p + 'ffn_output', I, C, std=0.15)
    norm(p + 'full_layer_layer_norm', C)
    if classes:
        lin('albert.pooler', C, C)
        lin('classifier', C, classes)
    else:
        norm('predictions.LayerNorm', E)
        lin('predictions.dense', C, E)
        sd['predictions.bias'] = r(V, std=0.1)
    return sd


def bert_config(arch, **kw):
    c = {'architectures': [arch], 'model_type': 'bert', 'attention_probs_dropout_prob': 0.1, 'hidden_act': 'gelu',
         'hidden_dropout_prob': 0.1, 'initializer_range': 0.02, 'layer_norm_eps': 1e-12, 'pad_token_id': 0,
         'position_embedding_type': 'absolute', 'type_vocab_size': 2, 'use_cache': True, 'torch_dtype': 'float32',
         'transformers_version': '4.57.6'}
    c.update(kw)
    return c


def albert_config(arch, **kw):
    c = {'architectures': [arch], 'model_type': 'albert', 'attention_probs_dropout_prob': 0, 'hidden_act': 'gelu_new',
         'hidden_dropout_prob': 0, 'initializer_range': 0.02, 'layer_norm_eps': 1e-12, 'pad_token_id': 0,
         'bos_token_id': 2, 'eos_token_id': 3, 'position_embedding_type': 'absolute', 'type_vocab_size': 2,
         'num_hidden_groups': 1, 'inner_group_num': 1, 'classifier_dropout_prob': 0.1, 'torch_dtype': 'float32',
         'transformers_version': '4.57.6'}
    c.update(kw)
    return c


def encoder_inputs(cfg, seed, B=3, T=9, pad=(0, 0, 3)):
    """ids, token types (random 0/1) and a padding mask (row b has its last pad[b] positions masked)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg['vocab_size'], (B, T), generator=gen)
    types = torch.randint(0, cfg['type_vocab_size'], (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.long)
    for b, n in enumerate(pad[:B]):
        if n:
            mask[b, T - n:] = 0
    return ids, types, mask


def write_encoder_fixture(d, cfg, note):
    ids, types, mask = encoder_inputs(cfg, 7)
    logits = logits_for(cfg, load_checkpoint(d), ids, types, mask)
    write_json(os.path.join(d, 'expected.json'), {'generator': f'scripts/hf_fixtures.py ({note}), float64', 'ids': ids.tolist(),
               'token_type_ids': types.tolist(), 'attention_mask': mask.tolist(), 'logits': logits.flatten().tolist(), 'shape': list(logits.shape)})


def wordpiece_tokenizer(words):
    """A BERT-style WordPiece tokenizer.json (the tokenizers library's format) whose vocabulary is the special tokens,
    then `words`, then their '##' continuations of one letter."""
    vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + list(words)
    vocab += ['##' + c for c in sorted(set(''.join(words)))]
    special = [{'id': i, 'content': t, 'single_word': False, 'lstrip': False, 'rstrip': False, 'normalized': False, 'special': True} for i, t in enumerate(vocab[:5])]
    return {
        'version': '1.0', 'truncation': None, 'padding': None, 'added_tokens': special,
        'normalizer': {'type': 'BertNormalizer', 'clean_text': True, 'handle_chinese_chars': True, 'strip_accents': None, 'lowercase': True},
        'pre_tokenizer': {'type': 'BertPreTokenizer'},
        'post_processor': {'type': 'TemplateProcessing',
                           'single': [{'SpecialToken': {'id': '[CLS]', 'type_id': 0}}, {'Sequence': {'id': 'A', 'type_id': 0}}, {'SpecialToken': {'id': '[SEP]', 'type_id': 0}}],
                           'pair': [{'SpecialToken': {'id': '[CLS]', 'type_id': 0}}, {'Sequence': {'id': 'A', 'type_id': 0}}, {'SpecialToken': {'id': '[SEP]', 'type_id': 0}},
                                    {'Sequence': {'id': 'B', 'type_id': 1}}, {'SpecialToken': {'id': '[SEP]', 'type_id': 1}}],
                           'special_tokens': {'[CLS]': {'id': '[CLS]', 'ids': [2], 'tokens': ['[CLS]']}, '[SEP]': {'id': '[SEP]', 'ids': [3], 'tokens': ['[SEP]']}}},
        'decoder': {'type': 'WordPiece', 'prefix': '##', 'cleanup': True},
        'model': {'type': 'WordPiece', 'unk_token': '[UNK]', 'continuing_subword_prefix': '##', 'max_input_chars_per_word': 100,
                  'vocab': {t: i for i, t in enumerate(vocab)}},
    }


# The words of examples/finetune-classifier.ts's made-up reviews (its WORDS list, in this order).
EXAMPLE_WORDS = ['the', 'a', 'this', 'film', 'movie', 'show', 'book', 'meal', 'was', 'is', 'felt', 'really', 'very',
                 'quite', 'not', 'and', 'but', 'great', 'good', 'lovely', 'wonderful', 'superb', 'fun', 'bad', 'awful',
                 'boring', 'dull', 'terrible', 'poor', '.', ',', '!']


def random_gpt2(cfg, seed):
    gen = torch.Generator().manual_seed(seed)
    E, L, V, P = cfg['n_embd'], cfg['n_layer'], cfg['vocab_size'], cfg['n_positions']
    F = cfg.get('n_inner') or 4 * E
    r = lambda *s, std=0.2: torch.randn(*s, generator=gen, dtype=torch.float32) * std
    sd = {'wte.weight': r(V, E, std=0.5), 'wpe.weight': r(P, E, std=0.3)}
    for i in range(L):
        p = f'h.{i}.'
        sd[p + 'ln_1.weight'] = 1 + r(E, std=0.1)
        sd[p + 'ln_1.bias'] = r(E, std=0.1)
        sd[p + 'attn.c_attn.weight'] = r(E, 3 * E, std=0.3)
        sd[p + 'attn.c_attn.bias'] = r(3 * E, std=0.1)
        sd[p + 'attn.c_proj.weight'] = r(E, E)
        sd[p + 'attn.c_proj.bias'] = r(E, std=0.1)
        sd[p + 'ln_2.weight'] = 1 + r(E, std=0.1)
        sd[p + 'ln_2.bias'] = r(E, std=0.1)
        sd[p + 'mlp.c_fc.weight'] = r(E, F)
        sd[p + 'mlp.c_fc.bias'] = r(F, std=0.1)
        sd[p + 'mlp.c_proj.weight'] = r(F, E, std=0.1)
        sd[p + 'mlp.c_proj.bias'] = r(E, std=0.1)
    sd['ln_f.weight'] = 1 + r(E, std=0.1)
    sd['ln_f.bias'] = r(E, std=0.1)
    return sd


def gpt2_config(**kw):
    c = {'architectures': ['GPT2LMHeadModel'], 'model_type': 'gpt2', 'activation_function': 'gelu_new', 'attn_pdrop': 0.1,
         'embd_pdrop': 0.1, 'resid_pdrop': 0.1, 'initializer_range': 0.02, 'layer_norm_epsilon': 1e-05, 'n_inner': None,
         'bos_token_id': 0, 'eos_token_id': 0, 'scale_attn_weights': True, 'use_cache': True, 'torch_dtype': 'float32',
         'transformers_version': '4.57.6'}
    c.update(kw)
    return c


def write_json(path, obj):
    with open(path, 'w') as f:
        json.dump(obj, f, indent=1)
        f.write('\n')


def ids_for(cfg, seed, B=2, T=11):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg['vocab_size'], (B, T), generator=gen)


def main():
    # 1. F32, one file, 'transformer.' names, no lm_head (transformers drops the tied copy when saving safetensors).
    d = os.path.join(OUT, 'gpt2-tiny')
    os.makedirs(d, exist_ok=True)
    cfg = gpt2_config(vocab_size=37, n_positions=24, n_embd=16, n_layer=3, n_head=4)
    sd = random_gpt2(cfg, 1)
    write_json(os.path.join(d, 'config.json'), cfg)
    save_safetensors(os.path.join(d, 'model.safetensors'), {'transformer.' + k: (v, 'F32') for k, v in sd.items()}, {'format': 'pt'})
    ids = ids_for(cfg, 2)
    logits = gpt2_logits(cfg, load_checkpoint(d), ids)
    write_json(os.path.join(d, 'expected.json'), {'generator': 'scripts/hf_fixtures.py (GPT-2 forward from transformers v4.57 modeling_gpt2.py), float64', 'ids': ids.tolist(), 'logits': logits.flatten().tolist(), 'shape': list(logits.shape)})

    # 2. BF16, two shards and an index, GPT2Model names (no prefix) with the causal-mask buffers older versions
    # saved, lm_head.weight present (a copy of wte); n_inner given; odd sizes.
    d = os.path.join(OUT, 'gpt2-sharded-bf16')
    os.makedirs(d, exist_ok=True)
    cfg = gpt2_config(vocab_size=29, n_positions=13, n_embd=12, n_layer=2, n_head=3, n_inner=20, activation_function='gelu_pytorch_tanh')
    sd = random_gpt2(cfg, 3)
    names = list(sd)
    shards = {'model-00001-of-00002.safetensors': names[:len(names) // 2], 'model-00002-of-00002.safetensors': names[len(names) // 2:]}
    weight_map = {}
    for shard, keys in shards.items():
        tensors = {k: (sd[k], 'BF16') for k in keys}
        if shard.startswith('model-00002'):
            tensors['lm_head.weight'] = (sd['wte.weight'], 'BF16')
            for i in range(cfg['n_layer']):
                tensors[f'h.{i}.attn.bias'] = (torch.tril(torch.ones(1, 1, 13, 13)), 'F32')
        save_safetensors(os.path.join(d, shard), tensors, {'format': 'pt'})
        weight_map.update({k: shard for k in tensors})
    write_json(os.path.join(d, 'model.safetensors.index.json'), {'metadata': {'total_size': 0}, 'weight_map': weight_map})
    write_json(os.path.join(d, 'config.json'), cfg)
    ids = ids_for(cfg, 4, B=3, T=13)
    logits = gpt2_logits(cfg, load_checkpoint(d), ids)
    write_json(os.path.join(d, 'expected.json'), {'generator': 'scripts/hf_fixtures.py (GPT-2 forward from transformers v4.57 modeling_gpt2.py), float64 from the bf16 weights', 'ids': ids.tolist(), 'logits': logits.flatten().tolist(), 'shape': list(logits.shape)})

    # 4. BERT for masked LM: F32, one file, 'bert.' names, the tied decoder weight and bias left out as transformers
    # leaves them out of safetensors; exact GELU; a WordPiece tokenizer.json over the fine-tuning example's words.
    tok = wordpiece_tokenizer(EXAMPLE_WORDS)
    d = os.path.join(OUT, 'bert-mlm')
    os.makedirs(d, exist_ok=True)
    cfg = bert_config('BertForMaskedLM', vocab_size=len(tok['model']['vocab']), hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=48, max_position_embeddings=40)
    write_json(os.path.join(d, 'config.json'), cfg)
    write_json(os.path.join(d, 'tokenizer.json'), tok)
    save_safetensors(os.path.join(d, 'model.safetensors'), {k: (v, 'F32') for k, v in random_bert(cfg, 21).items()}, {'format': 'pt'})
    write_encoder_fixture(d, cfg, 'BertForMaskedLM from transformers v4.57 modeling_bert.py')

    # 5. BERT for sequence classification: 3 labels, BF16 in two shards, odd sizes, the position_ids buffer older
    # versions saved.
    d = os.path.join(OUT, 'bert-cls-bf16')
    os.makedirs(d, exist_ok=True)
    cfg = bert_config('BertForSequenceClassification', vocab_size=23, hidden_size=12, num_hidden_layers=3, num_attention_heads=3,
                      intermediate_size=20, max_position_embeddings=17, id2label={'0': 'neg', '1': 'neu', '2': 'pos'},
                      label2id={'neg': 0, 'neu': 1, 'pos': 2}, torch_dtype='bfloat16')
    sd = random_bert(cfg, 22, classes=3)
    names = list(sd)
    weight_map = {}
    for n, keys in enumerate([names[:len(names) // 2], names[len(names) // 2:]]):
        shard = f'model-0000{n + 1}-of-00002.safetensors'
        tensors = {k: (sd[k], 'BF16') for k in keys}
        if n == 1:
            tensors['bert.embeddings.position_ids'] = (torch.arange(17).unsqueeze(0).to(torch.float32), 'F32')
        save_safetensors(os.path.join(d, shard), tensors, {'format': 'pt'})
        weight_map.update({k: shard for k in tensors})
    write_json(os.path.join(d, 'model.safetensors.index.json'), {'metadata': {'total_size': 0}, 'weight_map': weight_map})
    write_json(os.path.join(d, 'config.json'), cfg)
    write_encoder_fixture(d, cfg, 'BertForSequenceClassification from transformers v4.57 modeling_bert.py, from the bf16 weights')

    # 6. ALBERT for masked LM: factorized embedding (E 16, hidden 32), one shared layer applied 3 times, tanh GELU
    # ("gelu_new", ALBERT's default), the tied decoder weight and bias saved too (as older versions did).
    d = os.path.join(OUT, 'albert-mlm')
    os.makedirs(d, exist_ok=True)
    cfg = albert_config('AlbertForMaskedLM', vocab_size=41, embedding_size=16, hidden_size=32, num_hidden_layers=3,
                        num_attention_heads=4, intermediate_size=56, max_position_embeddings=24)
    sd = random_albert(cfg, 23)
    sd['predictions.decoder.weight'] = sd['albert.embeddings.word_embeddings.weight']
    sd['predictions.decoder.bias'] = sd['predictions.bias']
    write_json(os.path.join(d, 'config.json'), cfg)
    save_safetensors(os.path.join(d, 'model.safetensors'), {k: (v, 'F32') for k, v in sd.items()}, {'format': 'pt'})
    write_encoder_fixture(d, cfg, 'AlbertForMaskedLM from transformers v4.57 modeling_albert.py')

    # 7. ALBERT for sequence classification: 2 labels, the exact GELU, E = hidden.
    d = os.path.join(OUT, 'albert-cls')
    os.makedirs(d, exist_ok=True)
    cfg = albert_config('AlbertForSequenceClassification', vocab_size=19, embedding_size=16, hidden_size=16, num_hidden_layers=4,
                        num_attention_heads=2, intermediate_size=24, max_position_embeddings=12, hidden_act='gelu')
    write_json(os.path.join(d, 'config.json'), cfg)
    save_safetensors(os.path.join(d, 'model.safetensors'), {k: (v, 'F32') for k, v in random_albert(cfg, 24, classes=2).items()}, {'format': 'pt'})
    write_encoder_fixture(d, cfg, 'AlbertForSequenceClassification from transformers v4.57 modeling_albert.py')

    # 8. What sharedformer exported as BERT and ALBERT (scripts/hf_export_fixture.ts): this loader's logits for them.
    for name in ('export-bert', 'export-albert'):
        d = os.path.join(OUT, name)
        if os.path.exists(os.path.join(d, 'config.json')):
            with open(os.path.join(d, 'config.json')) as f:
                cfg = json.load(f)
            write_encoder_fixture(d, cfg, 'reading sharedformer\'s export')
        else:
            print(f'run scripts/hf_export_fixture.ts first for {name}', file=sys.stderr)

    # 3. What sharedformer exported (a shared decoder, layers expanded): this loader's logits for it.
    d = os.path.join(OUT, 'export-shared')
    if os.path.exists(os.path.join(d, 'config.json')):
        with open(os.path.join(d, 'config.json')) as f:
            cfg = json.load(f)
        ids = ids_for(cfg, 5)
        logits = gpt2_logits(cfg, load_checkpoint(d), ids)
        write_json(os.path.join(d, 'expected.json'), {'generator': 'scripts/hf_fixtures.py reading sharedformer\'s export', 'ids': ids.tolist(), 'logits': logits.flatten().tolist(), 'shape': list(logits.shape)})
    else:
        print('run scripts/hf_export_fixture.ts first for export-shared', file=sys.stderr)


if __name__ == '__main__':
    main()
