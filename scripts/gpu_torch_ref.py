#!/usr/bin/env python3
"""PyTorch reference for the GPU check (scripts/gpu-check.sh; docs/gpu.md "The GPU check").

Measured in the same run as gpu_bench, on the same GPU, with CUDA events (median of many runs after warm-up; inputs
rotated among several sets when one set is smaller than 4x the L2), and written as JSON rows whose `key` matches
gpu_bench's rows:

  torch.matmul            bf16 (bf16 tensors, cuBLAS) and tf32 (fp32 tensors,
                          torch.set_float32_matmul_precision('high')) at gpu_bench's GEMM shapes
                          (NT / NN / TN through transposed views), fp32 at 4096^3, and F.linear + GELU(tanh) in bf16
  F.scaled_dot_product_attention, flash backend, bf16: forward, and backward alone (autograd.grad of a retained graph)
  F.layer_norm fp32 forward and backward; torch.optim.AdamW(fused=True) over one 64M-element tensor
  an eager PyTorch model of the same pre-LN decoder LM (small and medium, sharing none and all): fp32 parameters,
  F.linear / F.layer_norm / SDPA (causal) / F.gelu(tanh), tied head, F.cross_entropy, torch.optim.AdamW (default
  foreach implementation, decay on 2-D weights except tok/pos, lr 1e-4, betas (0.9, 0.99)); step time in bf16
  (torch.autocast) and in tf32 (fp32 with matmul precision 'high')

--train-check-only FILE [--device cpu] does only that replay (for train_step_cpu's data: no GPU needed).

--train-check FILE (FILE = gpu_bench's train_check.json, with train_check.bin beside it) replays our fp32 training
step in PyTorch in float64 from the same initial parameters and batch: per-tensor gradient norms of the first step
(relative 2e-3) and the losses of three AdamW steps (first loss relative 1e-4; later losses' change from the first
within 0.2% + 5e-5). It checks the composition of the step (every kernel call, the tied head, the shared-buffer AdamW)
against an independent implementation.

Exit status: 0; 5 when the training-step replay disagrees; 3 when python3 has no PyTorch with CUDA (the JSON then says
why, and gpu-check.sh notes it).

--merge BENCH_JSON --torch TORCH_JSON --md FILE --json FILE [--failed TEXT] needs only the standard library: it joins
the two by key and adds `torch ms`, `x torch` (torch time / our time: > 1 means we are faster) and the issue's
targets (bf16 GEMM >= 0.70 of torch.matmul; attention >= 0.60 of flash SDPA; training step >= 1.0 of eager PyTorch;
shared-weight path >= 1.05 x the per-layer path at <= 8 rows; persistent decode kernel >= 1.5 x the per-layer path at
M <= 8).
"""
import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time


# ---- merge (standard library only) -----------------------------------------------------------------------------
def target_of(row):
    """(needed ratio, which ratio, label) for rows the issue sets a target for, else None."""
    g, key, prec = row.get('group'), row.get('key', ''), row.get('prec')
    if g == 'gemm' and prec == 'bf16' and '+bias' not in key:
        return 0.70, 'torch', '>= 0.70 x torch.matmul'
    if g == 'attention' and prec == 'bf16' and 'fwd+bwd' not in key:
        return 0.60, 'torch', '>= 0.60 x flash SDPA'
    if g == 'train' and not key.endswith(' graph'):
        return 1.0, 'torch', '>= 1.0 x eager PyTorch'
    if g == 'shared':
        return 1.05, 'ratio', '>= 1.05 x per-layer'
    if g == 'decode' and key.startswith('decode persistent ') and ' M' in key:
        m = key.rsplit(' M', 1)[1]
        if m.isdigit() and int(m) <= 8:
            return 1.5, 'ratio', '>= 1.5 x per-layer at M <= 8'
    return None


def fmt(x, digits):
    return '' if x is None else f'{x:.{digits}f}'


def merge(a):
    with open(a.merge) as f:
        bench = json.load(f)
    torch_res = {}
    if a.torch and os.path.exists(a.torch):
        with open(a.torch) as f:
            torch_res = json.load(f)
    by_key = {r['key']: r for r in torch_res.get('rows', [])}
    rows = []
    met = missed = 0
    src = []
    by_bench = {r.get('key'): r for r in bench.get('rows', [])}
    for r in bench.get('rows', []):
        src.append(r)
        # attention forward + backward together, where PyTorch timed fwd+bwd in one (flash SDPA, one graph per call)
        key = r.get('key', '')
        fwd = by_bench.get('attn fwd ' + key[len('attn bwd '):]) if key.startswith('attn bwd ') else None
        tb = by_key.get(key)
        if fwd and tb and tb.get('fwd_bwd_ms') and fwd.get('tflops') and r.get('ms'):
            ms = fwd['ms'] + r['ms']
            src.append({'group': 'attention', 'key': 'attn fwd+bwd ' + key[len('attn bwd '):], 'prec': r.get('prec'),
                        'name': 'attention fwd+bwd', 'shape': r.get('shape'), 'ms': ms,
                        'tflops': 3.5 * fwd['tflops'] * fwd['ms'] / ms, 'note': 'our fwd + bwd rows',
                        'failed': False, '_torch': {'what': 'SDPA flash bf16 fwd+bwd', 'ms': tb['fwd_bwd_ms']}})
    for r in src:
        r = dict(r)
        t = r.pop('_torch', None) or by_key.get(r.get('key'))
        if t and t.get('ms'):
            r['torch'] = t.get('what', '')
            r['torch_ms'] = t['ms']
            r['x_torch'] = t['ms'] / r['ms'] if r.get('ms', 0) > 0 else None
        tg = target_of(r)
        if tg:
            need, which, label = tg
            have = r.get('x_torch') if which == 'torch' else r.get('ratio')
            r['target'] = label
            if have is None:
                r['target_met'] = None
            else:
                r['target_met'] = have >= need
                met += r['target_met']
                missed += not r['target_met']
        rows.append(r)
    failed = [x for x in (a.failed or '').split('\n') if x.strip()]
    tc = torch_res.get('train_check')
    out = {'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
           'device': bench.get('device'), 'sm': bench.get('sm'), 'driver': bench.get('driver'),
           'runtime': bench.get('runtime'), 'torch': torch_res.get('torch'), 'torch_skipped': torch_res.get('skipped'),
           'failed': failed, 'bench_failures': bench.get('failures'), 'train_check': tc,
           'targets_met': met, 'targets_missed': missed, 'rows': rows}
    with open(a.json, 'w') as f:
        json.dump(out, f, indent=1)
    L = [f"# GPU check — {out['date']}", '',
         f"Device: {out['device']} (sm_{str(out['sm']).replace('.', '')}), driver {out['driver']}, CUDA runtime "
         f"{out['runtime']}; PyTorch: {out['torch'] or 'not measured (' + str(out['torch_skipped']) + ')'}.",
         f"Checks: {'all passed' if not failed and not bench.get('failures') else 'FAILED: ' + '; '.join(failed)}."
         f" Targets: {met} met, {missed} missed.", '']
    if tc:
        L += [f"Training step replayed in PyTorch (float64): {'agrees' if tc.get('ok') else 'DISAGREES'} — "
              f"losses ours {tc.get('losses_ours')} vs torch {tc.get('losses_torch')}; worst per-tensor gradient-norm "
              f"relative difference {tc.get('grad_norm_worst_rel')} ({tc.get('grad_norm_worst_name')}).", '']
    L += ['| row | shape | prec | ms | TFLOP/s | GB/s | ratio | vs | torch ms | x torch | target | note |',
          '|---|---|---|---:|---:|---:|---:|---|---:|---:|---|---|']
    for r in rows:
        tm = r.get('target_met')
        target = '' if 'target' not in r else f"{r['target']}: {'met' if tm else 'n/a' if tm is None else 'MISSED'}"
        note = ('FAILED ' if r.get('failed') else '') + r.get('note', '')
        L.append(f"| {r.get('name', '')} | {r.get('shape', '')} | {r.get('prec', '')} | {fmt(r.get('ms'), 4)} | "
                 f"{fmt(r.get('tflops'), 1)} | {fmt(r.get('gbps'), 0)} | {fmt(r.get('ratio'), 2)} | {r.get('ref', '')} | "
                 f"{fmt(r.get('torch_ms'), 4)} | {fmt(r.get('x_torch'), 2)} | {target} | {note} |")
    L += ['', 'x torch = PyTorch time / our time (> 1: ours is faster). ratio: see `vs` (copy bandwidth share for '
          'memory-bound rows; per-layer time / shared time for the shared-weight rows; eager / graph for graph rows).']
    with open(a.md, 'w') as f:
        f.write('\n'.join(L) + '\n')
    return 0


# ---- measurements (PyTorch) ------------------------------------------------------------------------------------
def run_measure(a):
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # noqa: BLE001 - any import failure means: no torch here
        return skip(a, f'no PyTorch in {sys.executable}: {e}')
    if not torch.cuda.is_available():
        return skip(a, f'PyTorch {torch.__version__} sees no CUDA device')
    dev = torch.device('cuda')
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, 'L2_cache_size', 50 * 2 ** 20) or 50 * 2 ** 20
    res = {'torch': torch.__version__, 'device': props.name, 'rows': [], 'notes': []}
    t_start = time.time()

    def sets_for(nbytes):
        return int(min(16, max(1, math.ceil(4 * l2 / max(nbytes, 1)))))

    def time_ms(fn, budget_ms=150.0):
        """Median ms of one fn(i) (CUDA events), as gpu_bench's time_ms."""
        k = 0
        for _ in range(3):
            fn(k)
            k += 1
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(3):
            fn(k)
            k += 1
        e1.record()
        e1.synchronize()
        one = max(e0.elapsed_time(e1) / 3, 1e-4)
        inner = int(min(64, max(1, math.ceil(0.05 / one))))
        reps = int(min(30 if a.quick else 200, max(5, budget_ms / (one * inner))))
        ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for s, e in ev:
            s.record()
            for _ in range(inner):
                fn(k)
                k += 1
            e.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) / inner for s, e in ev)

    def add(key, what, ms, **kw):
        row = dict(key=key, what=what, ms=ms, **kw)
        res['rows'].append(row)
        extra = ''.join(f' {k}={v:.2f}' for k, v in kw.items() if isinstance(v, float))
        print(f'  {key:<44} {what:<34} {ms:10.4f} ms{extra}', flush=True)

    gen = torch.Generator(device=dev).manual_seed(0)

    def randn(*shape, dtype=torch.float32, scale=1.0):
        return (torch.randn(*shape, device=dev, generator=gen) * scale).to(dtype)

    # -- GEMM
    def gemm(M, N, K, ta, tb, prec):
        dt = torch.bfloat16 if prec == 'bf16' else torch.float32
        set_tf32(torch, prec == 'tf32')
        es = 2 if dt == torch.bfloat16 else 4
        n = sets_for(es * (M * K + K * N + M * N))
        A = [randn(*((K, M) if ta else (M, K)), dtype=dt) for _ in range(n)]
        B = [randn(*((N, K) if tb else (K, N)), dtype=dt) for _ in range(n)]
        C = [torch.empty(M, N, device=dev, dtype=dt) for _ in range(n)]

        def fn(i):
            j = i % n
            torch.matmul(A[j].t() if ta else A[j], B[j].t() if tb else B[j], out=C[j])
        ms = time_ms(fn)
        tr = ('T' if ta else 'N') + ('T' if tb else 'N')
        add(f'gemm {prec} {tr} {M}x{N}x{K}', f'torch.matmul {prec}', ms, tflops=2 * M * N * K / ms / 1e9)
        set_tf32(torch, False)

    def group_gemm():
        for prec in ('bf16', 'tf32', 'fp32'):
            gemm(4096, 4096, 4096, False, False, prec)
        R = 8192
        lins = [(768, 768), (768, 3072), (3072, 768)]
        if a.quick:
            lins = lins[:1]
        for prec in ('bf16', 'tf32'):
            for i, o in lins:
                gemm(R, o, i, False, True, prec)
                gemm(R, i, o, False, False, prec)
                gemm(o, i, R, True, False, prec)
        x, W, b = randn(R, 768, dtype=torch.bfloat16), randn(3072, 768, dtype=torch.bfloat16), randn(3072, dtype=torch.bfloat16)
        ms = time_ms(lambda i: F.gelu(F.linear(x, W, b), approximate='tanh'))
        add('gemm bf16 NT+bias+gelu 8192x3072x768', 'F.linear + F.gelu bf16', ms, tflops=2 * R * 3072 * 768 / ms / 1e9)

    # -- attention (flash SDPA, bf16)
    def group_attention():
        from torch.nn.attention import SDPBackend, sdpa_kernel
        Ts = [1024] if a.quick else [1024, 2048, 4096]
        for D in (64, 128):
            for T in Ts:
                for causal in (False, True):
                    Bn, H = 8, 16
                    n = sets_for(2 * 8 * Bn * H * T * D)
                    qs = [randn(Bn, H, T, D, dtype=torch.bfloat16).requires_grad_() for _ in range(n)]
                    ks = [randn(Bn, H, T, D, dtype=torch.bfloat16).requires_grad_() for _ in range(n)]
                    vs = [randn(Bn, H, T, D, dtype=torch.bfloat16).requires_grad_() for _ in range(n)]
                    do = [randn(Bn, H, T, D, dtype=torch.bfloat16) for _ in range(n)]
                    shape = f'B{Bn} H{H} T{T} D{D}' + (' causal' if causal else '')
                    flops = 4 * Bn * H * T * T * D * (0.5 if causal else 1.0)
                    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.no_grad():
                        ms = time_ms(lambda i: F.scaled_dot_product_attention(qs[i % n], ks[i % n], vs[i % n], is_causal=causal))
                    add(f'attn fwd bf16 {shape}', 'SDPA flash bf16 fwd', ms, tflops=flops / ms / 1e9)
                    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                        outs = [F.scaled_dot_product_attention(qs[j], ks[j], vs[j], is_causal=causal) for j in range(n)]
                        ms_b = time_ms(lambda i: torch.autograd.grad(outs[i % n], (qs[i % n], ks[i % n], vs[i % n]), do[i % n],
                                                                      retain_graph=True))

                        def fwd_bwd(i):
                            j = i % n
                            o = F.scaled_dot_product_attention(qs[j], ks[j], vs[j], is_causal=causal)
                            torch.autograd.grad(o, (qs[j], ks[j], vs[j]), do[j])
                        ms_fb = time_ms(fwd_bwd)
                    add(f'attn bwd bf16 {shape}', 'SDPA flash bf16 bwd', ms_b, tflops=2.5 * flops / ms_b / 1e9,
                        fwd_bwd_ms=ms_fb)
                    del qs, ks, vs, do, outs

    # -- layer norm, AdamW
    def group_layernorm():
        for R, C in ([(16384, 768)] if a.quick else [(16384, 768), (16384, 1024)]):
            n = sets_for(16 * R * C)
            xs = [randn(R, C).requires_grad_() for _ in range(n)]
            dys = [randn(R, C) for _ in range(n)]
            w, b = randn(C, scale=0.1).add_(1).requires_grad_(), randn(C, scale=0.1).requires_grad_()
            with torch.no_grad():
                ms = time_ms(lambda i: F.layer_norm(xs[i % n], (C,), w, b, 1e-5))
            add(f'layernorm fwd {R}x{C}', 'F.layer_norm fp32 fwd', ms, gbps=(8 * R * C + 8 * R) / ms / 1e6)
            ys = [F.layer_norm(xs[j], (C,), w, b, 1e-5) for j in range(n)]
            ms = time_ms(lambda i: torch.autograd.grad(ys[i % n], (xs[i % n], w, b), dys[i % n], retain_graph=True))
            add(f'layernorm bwd {R}x{C}', 'F.layer_norm fp32 bwd', ms, gbps=(16 * R * C + 8 * R) / ms / 1e6)
            del xs, dys, ys
    def group_adamw():
        P = 16_000_000 if a.quick else 64_000_000
        p = torch.nn.Parameter(randn(P, scale=0.02))
        p.grad = randn(P, scale=1e-3)
        opt = torch.optim.AdamW([p], lr=1e-3, fused=True)
        ms = time_ms(lambda i: opt.step())
        add(f'adamw {P // 1_000_000}M params', 'torch.optim.AdamW(fused=True)', ms, gbps=28 * P / ms / 1e6)
        del p, opt

    # -- the training step of an eager PyTorch model
    def group_train():
        cfgs = [('small', 256, 256, 4, 6, 128, 8), ('medium', 256, 512, 8, 12, 256, 4)]
        if a.quick:
            cfgs = cfgs[:1]
        for name, V, C, H, L, T, B in cfgs:
            for share in ('none', 'all'):
                for prec in ('bf16', 'tf32'):
                    ms, loss0, loss1 = torch_train(torch, F, dev, V, C, H, L, T, B, share, prec, time_ms)
                    add(f'train {name} {share} {prec}', 'eager PyTorch ' + ('autocast bf16' if prec == 'bf16' else 'fp32+tf32'),
                        ms, loss_first=loss0, loss_last=loss1)
    def save():
        res['seconds'] = round(time.time() - t_start, 1)
        with open(a.out, 'w') as f:
            json.dump(res, f, indent=1)

    rc = 0
    if a.train_check:
        try:
            tc = train_check(torch, F, dev, a.train_check)
        except Exception as e:  # noqa: BLE001 - reported in the JSON, counted as a failure
            tc = {'ok': False, 'error': f'{type(e).__name__}: {e}'}
        res['train_check'] = tc
        print(f"  train check: {'agrees' if tc.get('ok') else 'DISAGREES'}: {json.dumps(tc)}", flush=True)
        rc = 0 if tc.get('ok') else 5
    save()

    # each group on its own: an error in one (an unsupported backend, say) costs its rows, not the run
    res['errors'] = {}
    for name, fn in [('gemm', group_gemm), ('attention', group_attention), ('layernorm', group_layernorm),
                     ('adamw', group_adamw), ('train', group_train)]:
        if not want(a, name):
            continue
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - recorded in the JSON and printed
            res['errors'][name] = f'{type(e).__name__}: {e}'
            print(f'  {name}: FAILED: {type(e).__name__}: {e}', flush=True)
        set_tf32(torch, False)
        torch.cuda.empty_cache()
        save()  # after every group: a run stopped by its time limit keeps what it measured

    return rc


def set_tf32(torch, on):
    """fp32 matmuls on tensor cores (tf32) or exact. Only this API: PyTorch >= 2.9 refuses a mix of the legacy
    allow_tf32 flags and the new fp32_precision settings."""
    torch.set_float32_matmul_precision('high' if on else 'highest')


def want(a, group):
    return not a.only or a.only in group


def skip(a, why):
    print(f'gpu_torch_ref: skipped: {why}', flush=True)
    if a.out:
        with open(a.out, 'w') as f:
            json.dump({'skipped': why, 'rows': []}, f)
    return 3


def declare(V, C, T, U):
    """(name, shape, decay) in the library's declaration order, as gpu_bench's TrainStep.declare."""
    out = [('tok.weight', (V, C), False), ('pos.weight', (T, C), False)]

    def ln(n):
        return [(f'{n}.weight', (C,), False), (f'{n}.bias', (C,), False)]

    def lin(n, i, o):
        return [(f'{n}.weight', (o, i), True), (f'{n}.bias', (o,), False)]
    for u in range(U):
        out += ln(f'attn.{u}.ln') + lin(f'attn.{u}.wq', C, C) + lin(f'attn.{u}.wk', C, C)
        out += lin(f'attn.{u}.wv', C, C) + lin(f'attn.{u}.wo', C, C)
    for u in range(U):
        out += ln(f'ffn.{u}.ln') + lin(f'ffn.{u}.fc1', C, 4 * C) + lin(f'ffn.{u}.fc2', 4 * C, C)
    return out + ln('ln_f')


def model_forward(torch, F, P, ids, H, L, share, explicit_attention=False):
    """Pre-LN decoder LM (lib/models/decoder.ts; scripts/gen_model_fixture.py), tied head; logits (B, T, V)."""
    Bn, Tn = ids.shape
    C = P['tok.weight'].shape[1]
    Dh = C // H

    def lin(x, n):
        return F.linear(x, P[f'{n}.weight'], P[f'{n}.bias'])

    def ln(x, n):
        return F.layer_norm(x, (C,), P[f'{n}.weight'], P[f'{n}.bias'], 1e-5)

    def heads(x):
        return x.view(Bn, Tn, H, Dh).transpose(1, 2)
    h = P['tok.weight'][ids] + P['pos.weight'][:Tn].unsqueeze(0)
    for layer in range(L):
        u = 0 if share == 'all' else layer
        x = ln(h, f'attn.{u}.ln')
        q, k, v = heads(lin(x, f'attn.{u}.wq')), heads(lin(x, f'attn.{u}.wk')), heads(lin(x, f'attn.{u}.wv'))
        if explicit_attention:
            s = (q @ k.transpose(-1, -2)) / math.sqrt(Dh)
            mask = torch.ones(Tn, Tn, dtype=torch.bool, device=ids.device).tril()
            o = torch.softmax(s.masked_fill(~mask, float('-inf')), dim=-1) @ v
        else:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + lin(o.transpose(1, 2).reshape(Bn, Tn, C), f'attn.{u}.wo')
        x = ln(h, f'ffn.{u}.ln')
        h = h + lin(F.gelu(lin(x, f'ffn.{u}.fc1'), approximate='tanh'), f'ffn.{u}.fc2')
    return F.linear(ln(h, 'ln_f'), P['tok.weight'])


def make_optimizer(torch, P, decl, lr, **kw):
    decay = [P[n] for n, _, d in decl if d]
    rest = [P[n] for n, _, d in decl if not d]
    return torch.optim.AdamW([{'params': decay, 'weight_decay': 0.1}, {'params': rest, 'weight_decay': 0.0}],
                             lr=lr, betas=(0.9, 0.99), eps=1e-8, **kw)


def torch_train(torch, F, dev, V, C, H, L, T, B, share, prec, time_ms):
    torch.manual_seed(0)
    decl = declare(V, C, T, 1 if share == 'all' else L)
    P = {}
    for n, shape, _ in decl:
        if n.endswith('ln.weight') or n == 'ln_f.weight':
            t = torch.ones(*shape, device=dev)
        elif len(shape) == 1:
            t = torch.zeros(*shape, device=dev)
        else:
            t = torch.randn(*shape, device=dev) * 0.02
        P[n] = torch.nn.Parameter(t)
    opt = make_optimizer(torch, P, decl, 1e-4)
    ids = torch.randint(0, V, (B, T), device=dev)
    tg = torch.randint(0, V, (B * T,), device=dev)
    set_tf32(torch, prec == 'tf32')
    last = {}

    def step(_):
        opt.zero_grad(set_to_none=True)
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=prec == 'bf16'):
            logits = model_forward(torch, F, P, ids, H, L, share)
            loss = F.cross_entropy(logits.view(B * T, V).float(), tg)
        loss.backward()
        opt.step()
        last['loss'] = loss
    step(0)
    loss0 = last['loss'].item()
    ms = time_ms(step, 300.0)
    loss1 = last['loss'].item()
    set_tf32(torch, False)
    return ms, loss0, loss1


def train_check(torch, F, dev, path):
    import numpy as np
    with open(path) as f:
        meta = json.load(f)
    c = meta['config']
    V, C, H, L, T, B = c['vocab'], c['dModel'], c['heads'], c['layers'], c['seq'], c['batch']
    raw = np.fromfile(os.path.join(os.path.dirname(path), 'train_check.bin'), dtype=np.uint8)
    nP, nT = meta['parameters'], meta['tokens']
    if raw.size != 4 * (nP + 2 * nT):
        raise ValueError(f'train_check.bin has {raw.size} bytes, expected {4 * (nP + 2 * nT)}')
    flat = raw[:4 * nP].view(np.float32)
    ints = raw[4 * nP:].view(np.int32)
    ids = torch.from_numpy(ints[:nT].astype(np.int64)).view(B, T).to(dev)
    tg = torch.from_numpy(ints[nT:].astype(np.int64)).to(dev)
    decl = declare(V, C, T, 1 if c['share'] == 'all' else L)
    if [p['name'] for p in meta['params']] != [n for n, _, _ in decl]:
        raise ValueError('parameter list differs from the declaration order this script expects')
    P = {}
    for p in meta['params']:
        n = math.prod(p['shape'])
        t = torch.from_numpy(flat[p['offset']:p['offset'] + n].astype(np.float64)).view(*p['shape']).to(dev)
        P[p['name']] = torch.nn.Parameter(t)
    opt = make_optimizer(torch, P, decl, meta['adamw']['lr'], foreach=False)
    # per-tensor gradient norms of the first step: |ours - torch| <= 2e-3 torch + 1e-6 (`worst`: the largest share
    # of that tolerance used, <= 1 passes; `worst_rel`: the largest relative difference)
    # (worst_rel skips tensors whose gradient is ~0 in exact arithmetic, such as the key bias: softmax ignores it)
    losses, worst, worst_rel, worst_name = [], 0.0, 0.0, ''
    for k in range(3):
        opt.zero_grad(set_to_none=True)
        logits = model_forward(torch, F, P, ids, H, L, c['share'], explicit_attention=True)
        loss = F.cross_entropy(logits.view(B * T, V), tg)
        loss.backward()
        if k == 0:
            big = max(P[p['name']].grad.norm().item() for p in meta['params'] if P[p['name']].grad is not None)
            for p in meta['params']:
                g = P[p['name']].grad
                ref = 0.0 if g is None else g.norm().item()
                diff = abs(p['grad_norm'] - ref)
                used = diff / (2e-3 * ref + 1e-6)
                if used > worst:
                    worst, worst_name = used, p['name']
                if ref > 1e-4 * big:
                    worst_rel = max(worst_rel, diff / ref)
        losses.append(loss.item())
        opt.step()
    ours = meta['losses']
    ok_first = abs(ours[0] - losses[0]) <= 1e-4 * abs(losses[0])
    ok_later = all(abs((ours[k] - ours[0]) - (losses[k] - losses[0])) <= 0.002 * abs(losses[k] - losses[0]) + 5e-5
                   for k in (1, 2))
    ok_grad = worst <= 1.0
    return {'ok': bool(ok_first and ok_later and ok_grad), 'losses_ours': [round(x, 6) for x in ours],
            'losses_torch': [round(x, 6) for x in losses], 'grad_norm_worst_rel': float(f'{worst_rel:.3g}'),
            'grad_norm_worst_name': worst_name, 'grad_norm_tolerance_used': float(f'{worst:.3g}'),
            'first_loss_ok': ok_first, 'later_losses_ok': ok_later, 'grad_norms_ok': ok_grad}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', help='write the measurements here (JSON)')
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--only', help='one group: gemm, attention, layernorm, adamw, train')
    ap.add_argument('--train-check', help="gpu_bench's train_check.json (train_check.bin beside it)")
    ap.add_argument('--train-check-only', metavar='FILE', help='only the replay of FILE (train_check.json), on --device')
    ap.add_argument('--device', default='cuda', help='device for --train-check-only (cuda or cpu)')
    ap.add_argument('--merge', help="gpu_bench's JSON: merge it with --torch into --md and --json")
    ap.add_argument('--torch', help='this script\'s JSON (for --merge)')
    ap.add_argument('--failed', default='', help='failed steps of gpu-check.sh, one per line (for --merge)')
    ap.add_argument('--md')
    ap.add_argument('--json')
    a = ap.parse_args()
    if a.merge:
        if not a.md or not a.json:
            ap.error('--merge needs --md and --json')
        return merge(a)
    if a.train_check_only:
        import torch
        import torch.nn.functional as F
        tc = train_check(torch, F, torch.device(a.device), a.train_check_only)
        print(json.dumps(tc))
        return 0 if tc['ok'] else 5
    if not a.out:
        ap.error('--out is required (or --merge, --train-check-only)')
    return run_measure(a)


if __name__ == '__main__':
    sys.exit(main())
