#!/usr/bin/python3
"""PyTorch reference for `npm run bench -- train`: the same pre-LN decoder LM (fp32, AdamW) trained for a few steps,
timed the same way, on the CPU. scripts/bench.ts runs it with spawnSync in the same run as our own training step;
nothing else (tests, CI, the package) needs PyTorch.

Run with Debian's python3 and python3-torch (the python3 on PATH may be another one):

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 scripts/torch_train_ref.py --probe
  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 scripts/torch_train_ref.py --config '{"dModel":256,...}' --share none

--probe   prints JSON: the torch version, BLAS_INFO from torch.__config__.show(), the BLAS library actually mapped
          into the process after an sgemm (read from /proc/self/maps), whether that is OpenBLAS, and a 1024^3 sgemm
          rate. Exits 3 when the loaded BLAS is not OpenBLAS (Debian's torch is built with BLAS_INFO=generic and
          links libblas.so.3, which update-alternatives points at a provider; bench.ts then points LD_LIBRARY_PATH
          at the OpenBLAS one and probes again).
--check   compares this file's forward pass with scripts/gen_model_fixture.py's (the exact re-implementation of
          lib/models/decoder.ts that the committed fixtures come from) in float64 on small models, and exits.
otherwise times training steps of one model and prints one JSON object: ms_per_step (median of --steps timed steps
          after --warmup), tokens_per_s, and a forward / backward / optimizer breakdown (median ms, timed separately).

The model is gen_model_fixture.py's (its `declare` gives the parameter list in the library's layout; its `plan`
gives the block of each layer), with the forward pass written with F.linear / F.layer_norm (fused bias, as a
PyTorch user would write it) instead of `x @ W.t() + b`; --check shows the two agree. Shared blocks are one set of
Parameters used by several layers, as in the library. torch.optim.AdamW with its default (single-tensor) CPU
implementation, decoupled weight decay on matrices only, zero_grad(set_to_none=True) each step. No dropout, no
gradient clipping (the library's side of the benchmark does not clip either).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_model_fixture as fx  # noqa: E402  (declare, plan, forward, EPS: the reference model)


def fixture_cfg(c):
    """Our bench config -> gen_model_fixture's config dict ('all' is cycle with one unique block)."""
    sharing = {'strategy': 'cycle', 'unique': 1} if c['share'] == 'all' else {'strategy': 'none'}
    return {'vocab': c['vocab'], 'dModel': c['dModel'], 'heads': c['heads'], 'kvHeads': c.get('kvHeads', c['heads']),
            'dFF': c['dFF'], 'layers': c['layers'], 'maxSeq': c['seq'], 'sharing': sharing,
            'tiedEmbeddings': c.get('tiedEmbeddings', True)}


def make_params(cfg, dtype=torch.float32, std=0.02):
    P = {}
    for name, shape, init in fx.declare(cfg):
        if init == 'ln':
            t = torch.ones(*shape, dtype=dtype)
        elif init == 'bias':
            t = torch.zeros(*shape, dtype=dtype)
        else:
            t = torch.randn(*shape, dtype=dtype) * std
        P[name] = torch.nn.Parameter(t)
    return P


def forward(cfg, P, ids):
    """gen_model_fixture.forward with F.linear (bias fused) and F.layer_norm; the same function of the same parameters."""
    C, H, Hkv = cfg['dModel'], cfg['heads'], cfg['kvHeads']
    Dh = C // H
    Bn, Tn = ids.shape
    lin = lambda x, name: F.linear(x, P[f'{name}.weight'], P[f'{name}.bias'])
    ln = lambda x, name: F.layer_norm(x, (C,), P[f'{name}.weight'], P[f'{name}.bias'], fx.EPS)
    heads = lambda x, n: x.view(Bn, Tn, n, Dh).transpose(1, 2)
    causal = torch.ones(Tn, Tn, dtype=torch.bool).tril()
    h = P['tok.weight'][ids] + P['pos.weight'][:Tn].unsqueeze(0)
    for blk in fx.plan(cfg):
        x = ln(h, f'attn.{blk}.ln')
        q = heads(lin(x, f'attn.{blk}.wq'), H)
        k = heads(lin(x, f'attn.{blk}.wk'), Hkv)
        v = heads(lin(x, f'attn.{blk}.wv'), Hkv)
        if Hkv != H:
            k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
        s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(Dh))
        s = s.masked_fill(~causal, float('-inf'))
        o = torch.softmax(s, dim=-1) @ v
        h = h + lin(o.transpose(1, 2).reshape(Bn, Tn, C), f'attn.{blk}.wo')
        x = ln(h, f'ffn.{blk}.ln')
        h = h + lin(F.gelu(lin(x, f'ffn.{blk}.fc1'), approximate='tanh'), f'ffn.{blk}.fc2')
    h = ln(h, 'ln_f')
    return F.linear(h, P['tok.weight'] if cfg['tiedEmbeddings'] else P['head.weight'])


def loaded_blas():
    """Shared libraries with BLAS in their name mapped into this process (after an sgemm has run)."""
    libs = set()
    with open('/proc/self/maps') as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ''
            base = os.path.basename(path).lower()
            if 'blas' in base or 'mkl' in base or 'blis' in base:
                libs.add(os.path.realpath(path))
    return sorted(libs)


def blas_info():
    cfg = torch.__config__.show()
    info = next((p.split('=', 1)[1] for p in cfg.replace(',', ' ').split() if p.startswith('BLAS_INFO=')), 'unknown')
    return info


def probe():
    torch.set_num_threads(int(os.environ.get('OPENBLAS_NUM_THREADS', '2')))
    a = torch.randn(1024, 1024)
    for _ in range(3):
        a @ a
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    gflops = 2 * 1024 ** 3 / ((time.perf_counter() - t0) / 10) / 1e9
    libs = loaded_blas()
    openblas = any('openblas' in os.path.basename(p).lower() for p in libs)
    print(json.dumps({'torch': torch.__version__, 'blas_info': blas_info(), 'blas_libs': libs, 'openblas': openblas,
                      'threads': torch.get_num_threads(), 'openblas_num_threads': os.environ.get('OPENBLAS_NUM_THREADS'),
                      'sgemm_1024_gflops': round(gflops, 1)}))
    return 0 if openblas else 3


def check():
    torch.manual_seed(0)
    worst = 0.0
    for share in ('none', 'all'):
        for kv in (4, 2):
            c = {'vocab': 11, 'dModel': 16, 'heads': 4, 'kvHeads': kv, 'dFF': 24, 'layers': 3, 'seq': 7, 'share': share}
            cfg = fixture_cfg(c)
            P = {n: p.detach().double() for n, p in make_params(cfg, std=0.3).items()}
            for n, p in P.items():
                if not n.endswith('.weight') or p.dim() == 1:
                    P[n] = p + 0.1 * torch.randn_like(p)
            ids = torch.randint(0, 11, (2, 7))
            d = (forward(cfg, P, ids) - fx.forward(cfg, P, ids)).abs().max().item()
            worst = max(worst, d)
    print(json.dumps({'max_abs_diff_vs_gen_model_fixture': worst}))
    return 0 if worst < 1e-10 else 1


def time_steps(step, warmup, steps):
    """Runs step() warmup times, then steps times; returns each timed step's milliseconds."""
    for _ in range(warmup):
        step()
    ms = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        ms.append((time.perf_counter() - t0) * 1e3)
    return ms


def train(c, steps, warmup, phase_steps):
    torch.set_num_threads(c.get('threads', 2))
    torch.manual_seed(0)
    cfg = fixture_cfg(c)
    P = make_params(cfg)
    decay = [p for n, p in P.items() if p.dim() == 2 and not n.startswith(('tok.', 'pos.'))]
    rest = [p for n, p in P.items() if not (p.dim() == 2 and not n.startswith(('tok.', 'pos.')))]
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1}, {'params': rest, 'weight_decay': 0.0}],
                            lr=1e-4, betas=(0.9, 0.99), eps=1e-8)
    B, T, V = c['batch'], c['seq'], c['vocab']
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(cfg, P, ids).view(B * T, V), targets.view(-1))
        loss.backward()
        opt.step()
        return loss.item()

    ms = time_steps(step, warmup, steps)
    fwd, bwd, upd = [], [], []
    for _ in range(phase_steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(cfg, P, ids).view(B * T, V), targets.view(-1))
        loss.item()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        fwd.append((t1 - t0) * 1e3)
        bwd.append((t2 - t1) * 1e3)
        upd.append((t3 - t2) * 1e3)
    med = statistics.median(ms)
    return {'ms_per_step': med, 'tokens_per_s': B * T / (med / 1e3), 'steps_ms': ms,
            'fwd_ms': statistics.median(fwd) if fwd else None, 'bwd_ms': statistics.median(bwd) if bwd else None,
            'opt_ms': statistics.median(upd) if upd else None,
            'parameters': sum(p.numel() for p in P.values()), 'torch': torch.__version__,
            'threads': torch.get_num_threads(), 'blas_libs': loaded_blas()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--probe', action='store_true')
    ap.add_argument('--check', action='store_true')
    ap.add_argument('--config', help='JSON: vocab, dModel, heads, dFF, layers, seq, batch[, kvHeads, threads]')
    ap.add_argument('--share', choices=['none', 'all'], default='none')
    ap.add_argument('--steps', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--phase-steps', type=int, default=3)
    a = ap.parse_args()
    if a.probe:
        return probe()
    if a.check:
        return check()
    if not a.config:
        ap.error('--config is required (or --probe / --check)')
    c = dict(json.loads(a.config), share=a.share)
    print(json.dumps(train(c, a.steps, a.warmup, a.phase_steps)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
