#!/usr/bin/python3
"""PyTorch reference for `npm run bench -- distributed`: the model of scripts/torch_train_ref.py (the same pre-LN
decoder LM, fp32, AdamW) trained data-parallel with DistributedDataParallel over the gloo backend, timed the way the
distributed suite times our Trainer. scripts/bench-distributed.ts starts it in the same run as our rows; nothing else
(tests, CI, the package) needs PyTorch.

One rank per process; torchrun is not needed: the bench starts WORLD_SIZE processes of this script itself with
RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT in their environment (what init_process_group's env:// reads).
With WORLD_SIZE=1 (or unset) it trains in one plain process: no process group, no DDP (the world-1 row).

  RANK=0 WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29517 OPENBLAS_NUM_THREADS=1 \\
    /usr/bin/python3 scripts/torch_ddp_ref.py --config '{"dModel":256,...,"threads":1}' --share all [--zero 1] &
  RANK=1 ... (the same command)

--probe   prints JSON {distributed, gloo, torch} and exits 0 when torch.distributed with gloo is usable, 3 otherwise.
otherwise rank 0 prints one JSON object: ms_per_step (median of --steps timed steps after --warmup), steps_ms,
          parameters (unique: shared blocks are one set of Parameters), world, zero, threads, torch, blas_libs.

Each step, as the Trainer's: zero_grad(set_to_none=True), forward + cross-entropy on this rank's batch (its own
generator, seeded by the rank), backward (DDP averages the gradients over the ranks in buckets, overlapped with the
backward pass), clip_grad_norm_(1.0) (after DDP's all-reduce every rank holds the global gradient, so this is the
global norm, as ours), AdamW step (weight decay 0.1 on matrices only). loss.item() ends the step. --zero 1 uses
torch.distributed.optim.ZeroRedundancyOptimizer over AdamW (each rank updates its shard of the parameters and
broadcasts it: PyTorch's ZeRO-1), in place of the plain AdamW.
"""
import argparse
import json
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_train_ref as ref  # noqa: E402  (fixture_cfg, make_params, forward, loaded_blas: the reference model)


def probe():
    import torch.distributed as d
    ok = d.is_available() and d.is_gloo_available()
    print(json.dumps({'distributed': d.is_available(), 'gloo': d.is_available() and d.is_gloo_available(),
                      'torch': torch.__version__}))
    return 0 if ok else 3


class Model(torch.nn.Module):
    """The reference model's parameters as one module, so that DDP sees (and all-reduces) every unique one once."""

    def __init__(self, cfg, P):
        super().__init__()
        self.cfg = cfg
        self.names = list(P.keys())
        self.params = torch.nn.ParameterList([P[n] for n in self.names])

    def forward(self, ids):
        return ref.forward(self.cfg, dict(zip(self.names, self.params)), ids)


def train(c, steps, warmup, zero):
    import torch.distributed as d
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    torch.set_num_threads(c.get('threads', 1))
    if world > 1:
        d.init_process_group('gloo', rank=rank, world_size=world)
    torch.manual_seed(0)
    cfg = ref.fixture_cfg(c)
    P = ref.make_params(cfg)
    model = Model(cfg, P)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model  # DDP broadcasts rank 0's values
    decay = [p for n, p in P.items() if p.dim() == 2 and not n.startswith(('tok.', 'pos.'))]
    rest = [p for n, p in P.items() if not (p.dim() == 2 and not n.startswith(('tok.', 'pos.')))]
    groups = [{'params': decay, 'weight_decay': 0.1}, {'params': rest, 'weight_decay': 0.0}]
    if zero:
        if world < 2:
            raise SystemExit('torch_ddp_ref: --zero 1 needs WORLD_SIZE >= 2')
        from torch.distributed.optim import ZeroRedundancyOptimizer
        opt = ZeroRedundancyOptimizer(groups, optimizer_class=torch.optim.AdamW, lr=1e-4, betas=(0.9, 0.99), eps=1e-8)
    else:
        opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.99), eps=1e-8)
    B, T, V = c['batch'], c['seq'], c['vocab']
    g = torch.Generator().manual_seed(1 + rank)  # each rank its own batch, as our rank-strided batches
    ids = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(ids).view(B * T, V), targets.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    ms = ref.time_steps(step, warmup, steps)
    out = {'ms_per_step': statistics.median(ms), 'steps_ms': ms, 'world': world, 'zero': zero,
           'parameters': sum(p.numel() for p in P.values()), 'torch': torch.__version__,
           'threads': torch.get_num_threads(), 'blas_libs': ref.loaded_blas()}
    if world > 1:
        d.barrier()
        d.destroy_process_group()
    return out if rank == 0 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--probe', action='store_true')
    ap.add_argument('--config', help='JSON: vocab, dModel, heads, dFF, layers, seq, batch[, kvHeads, threads]')
    ap.add_argument('--share', choices=['none', 'all'], default='none')
    ap.add_argument('--zero', type=int, choices=[0, 1], default=0)
    ap.add_argument('--steps', type=int, default=5)
    ap.add_argument('--warmup', type=int, default=2)
    a = ap.parse_args()
    if a.probe:
        return probe()
    if not a.config:
        ap.error('--config is required (or --probe)')
    c = dict(json.loads(a.config), share=a.share)
    r = train(c, a.steps, a.warmup, a.zero)
    if r is not None:
        print(json.dumps(r))
    return 0


if __name__ == '__main__':
    sys.exit(main())
