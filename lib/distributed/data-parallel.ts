// data-parallel.ts — what a Trainer does with `distributed`: the flat gradient buffer reduced over the ranks (plain
// data parallel: one all-reduce per step, the mean taken by scaling the loss), or ZeRO-1 (a reduce-scatter; each rank
// updates its contiguous shard of the flat buffers and holds only that shard's AdamW moments; an all-gather of the
// parameters). Collectives carry the parameters packed (no alignment padding), so a step moves 4 bytes per unique
// parameter: a model that shares one block across L layers sends 1/L of its unshared twin's bytes.
import { full, type Tensor } from '../tensor.ts';
import { copySegments } from '../kernels.ts';
import { clipGradNorm as localClip, sumSquares } from '../kernels.ts';
import type { ParameterStore } from '../params.ts';
import * as dist from './index.ts';

/** The Trainer's `distributed` option: true (plain data parallel) or { zero: 1 } (ZeRO-1). */
export type DistributedOption = boolean | { zero?: 0 | 1 };

/** The flat-buffer traffic of one step on this rank. */
export interface CommPlan {
  /** Bytes of the flat-buffer collectives of one optimizer step (all-reduce; or reduce-scatter + all-gather). */
  bytesPerStep: number;
  /** The collectives, in order, with their element counts. */
  collectives: { kind: 'allReduce' | 'reduceScatter' | 'allGather'; elements: number }[];
}

export class DataParallel {
  readonly rank: number;
  readonly world: number;
  readonly zero: 0 | 1;
  /** This rank's shard of the packed parameters [begin, end), and the flat-buffer window that holds it [lo, hi). */
  readonly shard: [number, number];
  readonly window: [number, number];
  private packed: Tensor;           // numel: packed gradients / parameters
  private shardBuf: Tensor | null;  // ZeRO-1: this rank's packed shard
  private readonly pack: Float64Array;
  private readonly unpack: Float64Array;

  constructor(readonly store: ParameterStore, zero: 0 | 1) {
    const i = dist.info();
    if (!i) throw new Error('Trainer: distributed training needs distributed.init() first');
    this.rank = i.rank;
    this.world = i.worldSize;
    this.zero = zero;
    this.shard = zero ? dist.shardRange(store.numel) : [0, store.numel];
    this.window = zero ? store.flatRange(...this.shard) : [0, store.length];
    this.pack = store.packSegments(0, store.numel, true);
    this.unpack = store.packSegments(0, store.numel, false);
    this.packed = full([store.numel], 0, { device: store.device });
    const [b, e] = this.shard;
    this.shardBuf = zero ? full([e - b], 0, { device: store.device }) : null;
  }

  get plan(): CommPlan {
    const n = this.store.numel;
    return this.zero
      ? { bytesPerStep: 8 * n, collectives: [{ kind: 'reduceScatter', elements: n }, { kind: 'allGather', elements: n }] }
      : { bytesPerStep: 4 * n, collectives: [{ kind: 'allReduce', elements: n }] };
  }

  /** Every rank starts from rank 0's parameters (as PyTorch's DDP does at construction). */
  broadcastParameters(): void {
    dist.broadcast(this.store.values, 0);
  }

  /**
   * The sum over the ranks of the gradients (each rank's backward scaled by 1 / (accumulate x world), so the sum is
   * the mean over the global batch): in store.grads (plain), or in this rank's window of store.grads (ZeRO-1; the
   * rest of store.grads then holds this rank's own gradients, which nothing reads).
   */
  reduceGradients(): void {
    const s = this.store;
    copySegments(this.packed, s.grads, this.pack);
    if (!this.zero) {
      dist.allReduce(this.packed, 'sum');
      copySegments(s.grads, this.packed, this.unpack);
      return;
    }
    const [b, e] = this.shard;
    dist.reduceScatter(this.shardBuf!, this.packed, 'sum');
    copySegments(s.grads, this.shardBuf!, s.packSegments(b, e, false));
  }

  /**
   * The global gradient norm before clipping (clip > 0; the gradients scaled as clipGradNorm does) or the global sum
   * of squares (clip 0), as a scalar tensor. Plain: every rank holds the whole reduced gradient. ZeRO-1: over the
   * ranks' windows (distributed.clipGradNorm).
   */
  clip(clip: number): Tensor {
    const s = this.store;
    if (!this.zero) return clip > 0 ? localClip(s.grads, clip) : sumSquares(s.grads);
    const [lo, hi] = this.window;
    const g = s.grads.window(lo, [hi - lo]);
    try {
      return dist.clipGradNorm(g, clip);
    } finally {
      g.dispose();
    }
  }

  /** ZeRO-1, after this rank's update of its window: every rank's updated parameters gathered into store.values. */
  gatherParameters(): void {
    if (!this.zero) return;
    const s = this.store;
    const [b, e] = this.shard;
    copySegments(this.shardBuf!, s.values, s.packSegments(b, e, true));
    dist.allGather(this.packed, this.shardBuf!);
    copySegments(s.values, this.packed, this.unpack);
  }

  /**
   * ZeRO-1: the whole moment `m` (this rank holds the flat-buffer window [lo, hi) of it), gathered packed (numel
   * values, as checkpoints store it) on every rank. A collective: every rank calls it.
   */
  async gatherMoment(m: Tensor): Promise<Float32Array> {
    const s = this.store;
    const [b, e] = this.shard;
    copySegments(this.shardBuf!, m, s.packSegments(b, e, true, this.window[0]));
    const out = full([s.numel], 0, { device: s.device });
    try {
      dist.allGather(out, this.shardBuf!);
      return (await out.data()) as Float32Array;
    } finally {
      out.dispose();
    }
  }

  dispose(): void {
    this.packed.dispose();
    this.shardBuf?.dispose();
  }
}
