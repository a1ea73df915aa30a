#!/usr/bin/python3
"""Generates the PyTorch reference fixtures under test/fixtures/torch/ (committed; tests never need PyTorch).

Run with Debian's python3 and python3-torch:  /usr/bin/python3 scripts/gen_fixtures.py
Inputs are drawn in float32 from a fixed seed; references are computed by PyTorch in float64 from those exact float32
values, so a test's tolerance measures only the kernel's own float32 error.
"""
import json
import math
import os

import torch
import torch.nn.functional as F

torch.manual_seed(20261129)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'test', 'fixtures', 'torch')
os.makedirs(OUT, exist_ok=True)


def f32(*shape, scale=1.0):
    return (torch.randn(*shape) * scale).float()


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def dump(name, **tensors):
    data = {'generator': f'PyTorch {torch.__version__} (float64 reference from float32 inputs)'}
    for k, v in tensors.items():
        if isinstance(v, torch.Tensor):
            data[k] = {'shape': list(v.shape), 'dtype': 'int32' if not v.is_floating_point() else 'float32',
                       'data': [int(x) for x in v.reshape(-1).tolist()] if not v.is_floating_point() else flat(v)}
        else:
            data[k] = v
    with open(os.path.join(OUT, name + '.json'), 'w') as f:
        json.dump(data, f, separators=(',', ':'))
    print('wrote', name)


def layernorm():
    x, w, b, dy = f32(3, 5, 33), f32(33), f32(33), f32(3, 5, 33)
    eps = 1e-5
    X, W, B = (t.double().requires_grad_() for t in (x, w, b))
    y = F.layer_norm(X, (33,), W, B, eps)
    mean = X.mean(-1)
    rstd = 1.0 / torch.sqrt(X.var(-1, unbiased=False) + eps)
    y.backward(dy.double())
    dump('layernorm', eps=eps, x=x, w=w, b=b, dy=dy, y=y, mean=mean, rstd=rstd, dx=X.grad, dw=W.grad, db=B.grad)


def gelu():
    x, dy = f32(129, scale=3.0), f32(129)
    X = x.double().requires_grad_()
    y = F.gelu(X, approximate='tanh')
    y.backward(dy.double())
    dump('gelu', x=x, dy=dy, y=y, dx=X.grad)


def attention():
    B, Hq, Hkv, Tq, Tk, D = 2, 4, 2, 9, 11, 8
    q, k, v, do = f32(B, Hq, Tq, D), f32(B, Hkv, Tk, D), f32(B, Hkv, Tk, D), f32(B, Hq, Tq, D)
    key_lengths = torch.tensor([11, 7], dtype=torch.int32)
    scale = 1.0 / math.sqrt(D)
    Q, K, V = (t.double().requires_grad_() for t in (q, k, v))
    rep = Hq // Hkv
    Kr, Vr = K.repeat_interleave(rep, dim=1), V.repeat_interleave(rep, dim=1)
    s = torch.einsum('bhid,bhjd->bhij', Q, Kr) * scale
    i = torch.arange(Tq).view(Tq, 1)
    j = torch.arange(Tk).view(1, Tk)
    causal = j <= i + (Tk - Tq)
    pad = torch.arange(Tk).view(1, Tk) < key_lengths.view(B, 1).long()
    mask = causal.view(1, 1, Tq, Tk) & pad.view(B, 1, 1, Tk)
    s = s.masked_fill(~mask, float('-inf'))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.softmax(s, dim=-1)
    o = torch.einsum('bhij,bhjd->bhid', p, Vr)
    o.backward(do.double())
    dump('attention', B=B, Hq=Hq, Hkv=Hkv, Tq=Tq, Tk=Tk, D=D, scale=scale, causal=True, q=q, k=k, v=v, dout=do,
         keyLengths=key_lengths, o=o, lse=lse, dq=Q.grad, dk=K.grad, dv=V.grad)


def cross_entropy():
    N, V = 13, 29
    logits = f32(N, V, scale=2.0)
    targets = torch.randint(0, V, (N,), dtype=torch.int32)
    targets[3] = -100
    targets[8] = -100
    L = logits.double().requires_grad_()
    loss = F.cross_entropy(L, targets.long(), ignore_index=-100, reduction='mean')
    loss.backward()
    dump('cross_entropy', ignoreIndex=-100, logits=logits, targets=targets, loss=float(loss), dlogits=L.grad)


def adamw():
    n = 37
    p0 = f32(n)
    grads = [f32(n) for _ in range(3)]
    decay = torch.ones(n)
    decay[30:] = 0.0  # the last elements behave like norms / biases: no weight decay
    lr, betas, eps, wd = 1e-2, (0.9, 0.95), 1e-8, 0.1
    pa = p0[:30].double().clone().requires_grad_()
    pb = p0[30:].double().clone().requires_grad_()
    opt = torch.optim.AdamW([{'params': [pa], 'weight_decay': wd}, {'params': [pb], 'weight_decay': 0.0}], lr=lr,
                            betas=betas, eps=eps)
    steps = []
    for g in grads:
        pa.grad = g[:30].double().clone()
        pb.grad = g[30:].double().clone()
        opt.step()
        steps.append(flat(torch.cat([pa.detach(), pb.detach()])))
    dump('adamw', lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weightDecay=wd, param=p0, decayMask=decay,
         grads=[flat(g) for g in grads], params_after=steps)


if __name__ == '__main__':
    torch.set_default_dtype(torch.float64)
    layernorm()
    gelu()
    attention()
    cross_entropy()
    adamw()
