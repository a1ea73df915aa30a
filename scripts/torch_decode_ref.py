#!/usr/bin/python3
"""PyTorch reference for `npm run bench -- generate` (scripts/bench-generate.ts): the same pre-LN decoder LM with the
same weights, timed at prefill and at greedy KV-cache decoding, in fp32 and under torch.autocast('cpu', bfloat16); and
the fp32 model exported to ONNX for the suite's onnxruntime-node reference. The suite runs it with spawnSync in the
same run as our own rows; nothing else (tests, CI, the package) needs PyTorch.

Run with Debian's python3 and python3-torch, as the train suite's reference (findTorch selects OpenBLAS):

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 scripts/torch_decode_ref.py --weights model.safetensors \\
      --config '{"vocab":256,"dModel":256,...,"share":"none","threads":2}' --inputs inputs.json \\
      [--runs 5] [--bf16-runs 1] [--dtypes fp32,bf16] [--onnx model.onnx] [--logits logits.f32]

--weights  the model's parameters as written by Decoder.save (safetensors, F32, the library's names: those of
           gen_model_fixture.declare, checked here name by name and shape by shape).
--inputs   JSON {prefill: [[ids] x B], prompt: [ids], new_tokens: N, capacity: C}: the B8 prefill batch (its first
           row is the B1 prefill), the decode prompt, the new tokens, the B1 prefill's cache capacity.
--runs     timed runs per measurement in fp32 (after one warm-up run); --bf16-runs the same under bf16 autocast
           (default: --runs), which is slow on CPUs without native bf16 arithmetic (AVX-512 BF16 / AMX).
--onnx     exports the fp32 full forward (ids int64 (batch, T) -> logits (batch, T, vocab), dynamic batch, T fixed
           to the prefill's) with torch.onnx.export (TorchScript tracing; needs no `onnx` package).
--logits   writes the fp32 B8 prefill's logits (raw little-endian float32, B*T*vocab) for the suite to compare.

Prints one JSON object: torch, threads, blas_libs, parameters, and per dtype: prefill_b1_ms and prefill_b8_ms (each
timed run, ms), decode_ms (each timed greedy run: the prompt's prefill and every step, as ours), tokens (the greedy
tokens) and margins (per token, the top-1 minus top-2 logit: a tiny margin makes a near-tie that summation order may
flip). The timed runs follow one warm-up run; every decode run must give the same tokens.

The model: prefill B8 is torch_train_ref.forward (F.linear / F.layer_norm; every position's logits, no cache), what
Decoder.forward computes. Prefill B1 and decode use `run` below: the layer loop over preallocated K/V caches (one per
applied layer: a shared block still has a cache per layer), prefill writing positions [0, T) in one causal pass and
returning the last position's logits, each step writing position t and attending to [0, t] (DecodeSession's two
passes). Greedy is argmax (the first index on ties, as ours) of the last logits, read with int() each token.
"""
import argparse
import json
import math
import os
import statistics
import struct
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_model_fixture as fx  # noqa: E402  (declare, plan, EPS: the parameter layout)
import torch_train_ref as tr  # noqa: E402  (fixture_cfg, forward, loaded_blas, time_steps)


def load_weights(path, cfg):
    """The F32 tensors of a safetensors file, checked against gen_model_fixture.declare(cfg)."""
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop('__metadata__', None)
    want = {name: shape for name, shape, _ in fx.declare(cfg)}
    if set(header) != set(want):
        raise SystemExit(f'weights: names differ from the reference layout: extra {sorted(set(header) - set(want))}, '
                         f'missing {sorted(set(want) - set(header))}')
    P = {}
    for name, info in header.items():
        if info['dtype'] != 'F32' or info['shape'] != want[name]:
            raise SystemExit(f"weights: {name} is {info['dtype']} {info['shape']}, expected F32 {want[name]}")
        s, e = info['data_offsets']
        P[name] = torch.frombuffer(bytearray(data[s:e]), dtype=torch.float32).view(*info['shape'])
    return P


class Caches:
    """K and V (1, Hkv, capacity, Dh) per applied layer, allocated at the first write in the dtype written."""

    def __init__(self, layers, capacity):
        self.capacity = capacity
        self.kv = [None] * layers


def run(cfg, P, ids, pos, caches):
    """ids (1, T) at positions [pos, pos + T) through every applied layer over the caches; the last position's logits."""
    C, H, Hkv = cfg['dModel'], cfg['heads'], cfg['kvHeads']
    Dh = C // H
    B, T = ids.shape
    S = pos + T
    lin = lambda x, name: F.linear(x, P[f'{name}.weight'], P[f'{name}.bias'])
    ln = lambda x, name: F.layer_norm(x, (C,), P[f'{name}.weight'], P[f'{name}.bias'], fx.EPS)
    heads = lambda x, n: x.view(B, T, n, Dh).transpose(1, 2)
    mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=pos) if T > 1 else None  # key j <= pos + i
    h = P['tok.weight'][ids] + P['pos.weight'][pos:S].unsqueeze(0)
    for l, blk in enumerate(fx.plan(cfg)):
        x = ln(h, f'attn.{blk}.ln')
        q = heads(lin(x, f'attn.{blk}.wq'), H)
        k = heads(lin(x, f'attn.{blk}.wk'), Hkv)
        v = heads(lin(x, f'attn.{blk}.wv'), Hkv)
        if caches.kv[l] is None:
            shape = (B, Hkv, caches.capacity, Dh)
            caches.kv[l] = (torch.zeros(shape, dtype=k.dtype), torch.zeros(shape, dtype=v.dtype))
        K, V = caches.kv[l]
        K[:, :, pos:S] = k
        V[:, :, pos:S] = v
        k, v = K[:, :, :S], V[:, :, :S]
        if Hkv != H:
            k, v = k.repeat_interleave(H // Hkv, dim=1), v.repeat_interleave(H // Hkv, dim=1)
        s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(Dh))
        if mask is not None:
            s = s.masked_fill(~mask, float('-inf'))
        o = torch.softmax(s, dim=-1) @ v
        h = h + lin(o.transpose(1, 2).reshape(B, T, C), f'attn.{blk}.wo')
        x = ln(h, f'ffn.{blk}.ln')
        h = h + lin(F.gelu(lin(x, f'ffn.{blk}.fc1'), approximate='tanh'), f'ffn.{blk}.fc2')
    h = ln(h[:, -1:], 'ln_f')
    return F.linear(h, P['tok.weight'] if cfg['tiedEmbeddings'] else P['head.weight'])


def greedy(cfg, P, prompt, n, margins=None):
    """n greedy tokens after prompt: one prefill pass, then a step per token but the last (as generate())."""
    T0 = len(prompt)
    caches = Caches(len(fx.plan(cfg)), T0 + n - 1)
    logits = run(cfg, P, torch.tensor([prompt]), 0, caches)
    out = []
    while True:
        row = logits[0, -1]
        if margins is not None:
            top = row.float().topk(2).values
            margins.append(float(top[0] - top[1]))
        out.append(int(row.argmax()))
        if len(out) == n:
            return out
        logits = run(cfg, P, torch.tensor([[out[-1]]]), T0 + len(out) - 1, caches)


def bench_dtype(cfg, P, inputs, runs, dtype):
    """Times prefill B1, prefill B8 and greedy decode (fp32, or under CPU autocast to bfloat16)."""
    ids8 = torch.tensor(inputs['prefill'])
    ids1 = ids8[:1]
    prompt, n = inputs['prompt'], inputs['new_tokens']
    res = {}

    def ctx():
        return torch.autocast('cpu', dtype=torch.bfloat16) if dtype == 'bf16' else torch.autocast('cpu', enabled=False)

    def prefill1():
        with ctx():
            run(cfg, P, ids1, 0, Caches(len(fx.plan(cfg)), inputs['capacity']))

    def prefill8():
        with ctx():
            tr.forward(cfg, P, ids8)

    res['prefill_b1_ms'] = tr.time_steps(prefill1, 1, runs)
    res['prefill_b8_ms'] = tr.time_steps(prefill8, 1, runs)
    margins = []
    with ctx():
        tokens = greedy(cfg, P, prompt, n, margins)  # the warm-up run, with the margins
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        with ctx():
            again = greedy(cfg, P, prompt, n)
        ms.append((time.perf_counter() - t0) * 1e3)
        if again != tokens:
            raise SystemExit(f'{dtype}: a timed greedy run gave other tokens than the first')
    res.update(decode_ms=ms, tokens=tokens, margins=margins)
    return res


class Forward(torch.nn.Module):
    """torch_train_ref.forward as a module, for torch.onnx.export (the parameters become the graph's initializers)."""

    def __init__(self, cfg, P):
        super().__init__()
        self.cfg, self.P = cfg, P

    def forward(self, ids):
        return tr.forward(self.cfg, self.P, ids)


def export_onnx(cfg, P, ids, path):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # TracerWarnings about Python ints: T is fixed, the batch stays dynamic
        torch.onnx.export(Forward(cfg, P), (ids,), path, input_names=['ids'], output_names=['logits'],
                          dynamic_axes={'ids': {0: 'batch'}, 'logits': {0: 'batch'}}, opset_version=14)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--weights', required=True)
    ap.add_argument('--config', required=True, help='JSON: vocab, dModel, heads, dFF, layers, seq (maxSeq), share[, kvHeads, threads]')
    ap.add_argument('--inputs', required=True)
    ap.add_argument('--runs', type=int, default=5)
    ap.add_argument('--bf16-runs', type=int)
    ap.add_argument('--dtypes', default='fp32,bf16')
    ap.add_argument('--onnx')
    ap.add_argument('--logits')
    a = ap.parse_args()
    c = json.loads(a.config)
    torch.set_num_threads(c.get('threads', 2))
    cfg = tr.fixture_cfg(c)
    P = load_weights(a.weights, cfg)
    with open(a.inputs) as f:
        inputs = json.load(f)
    out = {'torch': torch.__version__, 'threads': torch.get_num_threads(), 'parameters': sum(p.numel() for p in P.values())}
    with torch.inference_mode():
        for dtype in [d for d in a.dtypes.split(',') if d]:
            if dtype not in ('fp32', 'bf16'):
                ap.error(f'--dtypes takes fp32 and bf16, got {dtype}')
            try:
                runs = a.bf16_runs if dtype == 'bf16' and a.bf16_runs is not None else a.runs
                out[dtype] = bench_dtype(cfg, P, inputs, runs, dtype)
            except Exception as e:  # bf16 autocast may be missing on an old CPU build: the other rows still run
                out[dtype] = {'error': f'{type(e).__name__}: {e}'}
        if a.logits:
            with open(a.logits, 'wb') as f:
                f.write(tr.forward(cfg, P, torch.tensor(inputs['prefill'])).contiguous().numpy().tobytes())
    if a.onnx:
        try:
            with torch.no_grad():
                export_onnx(cfg, P, torch.tensor(inputs['prefill']), a.onnx)
            out['onnx'] = a.onnx
        except Exception as e:
            out['onnx_error'] = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
    out['blas_libs'] = tr.loaded_blas()
    print(json.dumps(out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
