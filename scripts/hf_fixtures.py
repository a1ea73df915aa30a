#!/usr/bin/python3
"""Writes test/fixtures/hf/: tiny random GPT-2 checkpoints in the exact Hugging Face layout, with the logits a
re-implementation of `transformers`' GPT-2 forward pass gives for fixed ids, and the logits that same re-implementation
gives for a checkpoint sharedformer exported (test/fixtures/hf/export-shared, written by scripts/hf_export_fixture.ts).

The `transformers` package cannot be installed here (its PyTorch models need PyTorch 2; Debian has 1.13), so the
forward pass below is written from its source: src/transformers/models/gpt2/modeling_gpt2.py (GPT2Attention,
GPT2MLP, GPT2Block, GPT2Model, GPT2LMHeadModel) and src/transformers/pytorch_utils.py (Conv1D) of transformers
v4.57, with src/transformers/activations.py (NewGELUActivation, "gelu_new"). Eval mode: dropout is the identity.
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
