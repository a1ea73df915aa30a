#!/usr/bin/python3
"""Generates whole-model PyTorch reference fixtures: test/fixtures/torch/model_<name>.json (committed; tests never
need PyTorch; test/model-fixtures.test.ts reads them).

Run with Debian's python3 and python3-torch:  /usr/bin/python3 scripts/gen_model_fixture.py

The model is lib/models/decoder.ts written again in plain torch ops (not torch.nn.Transformer), from its description:
  h = tok.weight[ids] + pos.weight[arange(T)]
  for each layer l, with a = plan(l).attention, f = plan(l).ffn:
    x = layer_norm(h; attn.a.ln)                                    (eps 1e-5)
    q, k, v = x Wq^T + bq, x Wk^T + bk, x Wv^T + bv                 (Linear weights stored (out, in), as PyTorch)
    split into heads (B, H, T, Dh); query head j uses K/V head j // (heads / kvHeads)   (GQA)
    o = softmax(q k^T / sqrt(Dh), causal) v, heads merged back to (B, T, C)
    h = h + o Wo^T + bo
    h = h + fc2(gelu_tanh(fc1(layer_norm(h; ffn.f.ln))))
  logits = layer_norm(h; ln_f) tok.weight^T   (tied)   or   ... head.weight^T   (untied, no bias)
  loss = mean cross-entropy over the B*T positions whose target is not -100
A block used by several layers is one torch Parameter, so its gradient is the sum over its uses, as in the library.

Parameters are drawn in float32 from a fixed seed, large enough to exercise everything (matrices and embeddings
N(0, 0.2^2), LayerNorm weights 1 + 0.1 N, biases 0.1 N); the references (logits, loss, every gradient) are computed
in float64 from those exact float32 values, so a test's tolerance measures only the library's own float32 error.
"""
import json
import math
import os

import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'torch')

# The two fixed models. 'config' is passed unchanged to `new Decoder(config)`.
CONFIGS = {
    # shared blocks (layer l uses block l % 2 for both sub-layers: block 0 twice), GQA, tied head
    'cycle_gqa_tied': {'vocab': 13, 'dModel': 16, 'heads': 4, 'kvHeads': 2, 'dFF': 24, 'layers': 3, 'maxSeq': 8,
                       'sharing': {'strategy': 'cycle', 'unique': 2}, 'tiedEmbeddings': True},
    # no sharing, full multi-head attention, untied head
    'none_mha_untied': {'vocab': 13, 'dModel': 16, 'heads': 4, 'kvHeads': 4, 'dFF': 24, 'layers': 2, 'maxSeq': 8,
                        'sharing': {'strategy': 'none'}, 'tiedEmbeddings': False},
}
B, T = 2, 7
EPS = 1e-5


def plan(cfg):
    """Block index (attention = ffn) of each layer, as lib/sharing/plan.ts for the strategies used here."""
    s = cfg['sharing']
    L = cfg['layers']
    if s['strategy'] == 'none':
        return list(range(L))
    if s['strategy'] == 'cycle':
        return [l % s['unique'] for l in range(L)]
    raise ValueError(s['strategy'])


def declare(cfg):
    """(name, shape, init) of every unique parameter, in the library's declaration order (tok, pos, attn.*, ffn.*,
    ln_f, head). init: 'normal' (std 0.2), 'ln' (1 + 0.1 N) or 'bias' (0.1 N)."""
    V, C, H, Hkv, FF = cfg['vocab'], cfg['dModel'], cfg['heads'], cfg['kvHeads'], cfg['dFF']
    kv = Hkv * (C // H)
    U = max(plan(cfg)) + 1
    out = [('tok.weight', [V, C], 'normal'), ('pos.weight', [cfg['maxSeq'], C], 'normal')]

    def ln(name):
        return [(f'{name}.weight', [C], 'ln'), (f'{name}.bias', [C], 'bias')]

    def linear(name, i, o):
        return [(f'{name}.weight', [o, i], 'normal'), (f'{name}.bias', [o], 'bias')]

    for a in range(U):
        out += ln(f'attn.{a}.ln') + linear(f'attn.{a}.wq', C, C) + linear(f'attn.{a}.wk', C, kv)
        out += linear(f'attn.{a}.wv', C, kv) + linear(f'attn.{a}.wo', C, C)
    for f in range(U):
        out += ln(f'ffn.{f}.ln') + linear(f'ffn.{f}.fc1', C, FF) + linear(f'ffn.{f}.fc2', FF, C)
    out += ln('ln_f')
    if not cfg['tiedEmbeddings']:
        out.append(('head.weight', [V, C], 'normal'))
    return out


def draw(shape, init):
    z = torch.randn(*shape, dtype=torch.float32)
    if init == 'normal':
        return (0.2 * z).float()
    if init == 'ln':
        return (1.0 + 0.1 * z).float()
    return (0.1 * z).float()


def forward(cfg, P, ids):
    """logits (B, T, V) in float64 from the float64 parameters P (name -> tensor)."""
    C, H, Hkv = cfg['dModel'], cfg['heads'], cfg['kvHeads']
    Dh = C // H
    Bn, Tn = ids.shape
    lin = lambda x, name: x @ P[f'{name}.weight'].t() + P[f'{name}.bias']
    ln = lambda x, name: F.layer_norm(x, (C,), P[f'{name}.weight'], P[f'{name}.bias'], EPS)
    heads = lambda x, n: x.view(Bn, Tn, n, Dh).transpose(1, 2)  # (B, n, T, Dh)
    causal = torch.ones(Tn, Tn, dtype=torch.bool).tril()  # key j <= query i

    h = P['tok.weight'][ids] + P['pos.weight'][torch.arange(Tn)].unsqueeze(0)
    for blk in plan(cfg):
        x = ln(h, f'attn.{blk}.ln')
        q = heads(lin(x, f'attn.{blk}.wq'), H)
        k = heads(lin(x, f'attn.{blk}.wk'), Hkv).repeat_interleave(H // Hkv, dim=1)  # head j -> kv head j // (H/Hkv)
        v = heads(lin(x, f'attn.{blk}.wv'), Hkv).repeat_interleave(H // Hkv, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(Dh)
        s = s.masked_fill(~causal, float('-inf'))
        o = torch.softmax(s, dim=-1) @ v  # (B, H, T, Dh)
        h = h + lin(o.transpose(1, 2).reshape(Bn, Tn, C), f'attn.{blk}.wo')
        x = ln(h, f'ffn.{blk}.ln')
        h = h + lin(F.gelu(lin(x, f'ffn.{blk}.fc1'), approximate='tanh'), f'ffn.{blk}.fc2')
    h = ln(h, 'ln_f')
    return h @ (P['tok.weight'] if cfg['tiedEmbeddings'] else P['head.weight']).t()


def arr(t, dtype):
    t = t.detach()
    data = [int(x) for x in t.reshape(-1).tolist()] if dtype == 'int32' else [float(x) for x in t.reshape(-1).tolist()]
    return {'shape': list(t.shape), 'dtype': dtype, 'data': data}


def make(name, cfg):
    decl = declare(cfg)
    params32 = {n: draw(shape, init) for n, shape, init in decl}
    V = cfg['vocab']
    ids = torch.randint(0, V, (B, T), dtype=torch.int32)
    targets = torch.randint(0, V, (B, T), dtype=torch.int32)
    targets[1, 3] = -100  # one ignored position

    P = {n: p.double().requires_grad_() for n, p in params32.items()}
    logits = forward(cfg, P, ids.long())
    loss = F.cross_entropy(logits.reshape(B * T, V), targets.reshape(-1).long(), ignore_index=-100, reduction='mean')
    loss.backward()

    data = {
        'generator': f'PyTorch {torch.__version__}: scripts/gen_model_fixture.py (float64 reference from float32 parameters)',
        'config': cfg,
        'plan': plan(cfg),
        # name -> {shape, dtype, data}, in declaration order (JSON objects keep insertion order)
        'params': {n: arr(params32[n], 'float32') for n, _, _ in decl},
        'ids': arr(ids, 'int32'),
        'targets': arr(targets, 'int32'),
        'ignoreIndex': -100,
        'logits': arr(logits, 'float64'),
        'loss': float(loss),
        'grads': {n: arr(P[n].grad, 'float64') for n, _, _ in decl},
    }
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f'model_{name}.json')
    with open(path, 'w') as f:
        json.dump(data, f, separators=(',', ':'))
    print(f'wrote {os.path.relpath(path)}: {sum(p.numel() for p in params32.values())} parameters, loss {float(loss):.6f}')


if __name__ == '__main__':
    torch.manual_seed(20261130)
    for name, cfg in CONFIGS.items():
        make(name, cfg)
