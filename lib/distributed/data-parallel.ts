// data-parallel.ts — what a Trainer does with `distributed`: the flat gradient buffer reduced over the ranks (plain
// data parallel: one all-reduce per step, the mean taken by scaling the loss), or ZeRO-1 (a reduce-scatter; each rank
// updates its contiguous shard of the flat buffers and holds only that shard's AdamW moments; an all-gather of the
// parameters). Collectives carry the parameters packed (no alignment padding), so a step moves 4 bytes per unique
// parameter: a model that shares one block across L layers sends 1/L of its unshared twin's bytes.
import { full, type Tensor } from '../tensor.ts';
import { copySegments } from '../kernels.ts';
import { clipGradNorm as localClip, sumSquares } from '../kernels.ts';
import type { Parameter, ParameterStore } from '../params.ts';
import { recordHook } from '../autograd.ts';
import { appliedLayers } from '../sharing/plan.ts';
import type { BlockStack, LayerHook } from '../models/stack.ts';
import { native } from '../native.ts';

const raw = () => native() as unknown as Record<string, (...args: unknown[]) => unknown>;
import * as dist from './index.ts';

/**
 * The Trainer's `distributed` option: true (plain data parallel) or { zero: 1 } (ZeRO-1); `overlap` (plain data
 * parallel on the CPU, accumulate 1): reduce each layer's gradients while backward goes on (see DataParallel).
 */
export type DistributedOption = boolean | { zero?: 0 | 1; overlap?: boolean };

/** One bucket of the overlapped reduction: parameters whose gradients become final together, packed contiguously. */
interface Bucket {
  params: Parameter[];
  /** Its range [offset, offset + size) of the packed buffer. */
  offset: number;
  size: number;
  pack: Float64Array;
  unpack: Float64Array;
}

/** The flat-buffer traffic of one step on this rank. */
export interface CommPlan {
  /** Bytes of the flat-buffer collectives of one optimizer step (all-reduce; or reduce-scatter + all-gather). */
  bytesPerStep: number;
  /** The collectives, in order, with their element counts. */
  collectives: { kind: 'allReduce' | 'reduceScatter' | 'allGather'; elements: number }[];
}

/**
 * What a Trainer with `distributed` does each step on this rank (trainer.dp): the packed flat-buffer reductions (plain
 * data parallel), the ZeRO-1 shard of the update, or the overlapped per-layer buckets.
 */
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

  /**
   * Overlap (plain data parallel, CPU): the gradients of the blocks a layer is the first to use (in forward order) are
   * final once that layer's backward has run — a per-layer block at the end of its layer's backward, a block shared by
   * several layers only after its last use in backward (its first layer in forward order). BlockStack.run tells
   * (withLayerHook) where each layer starts on the tape; a hook recorded there starts the all-reduce of that layer's
   * bucket on the communication thread while backward goes on with the earlier layers; everything else (embeddings,
   * final norm, head) is one last bucket; the optimizer waits for all of them.
   */
  readonly overlap: boolean;
  private buckets: Bucket[] | null = null; // by first-use layer, then the rest (built at the first forward)
  private bucketOfLayer = new Map<number, Bucket>();
  private started = new Set<Bucket>();
  private startedDuringBackward = 0;
  /** Overlap: how many buckets of the last step a layer's hook started during backward (the rest start after it). */
  hookStarts = 0;
  private stack: BlockStack | null = null;

  constructor(readonly store: ParameterStore, zero: 0 | 1, overlap = false) {
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
    if (overlap && (zero || store.device !== 'cpu'))
      throw new RangeError(`Trainer: distributed.overlap is for plain data parallel on the CPU (got ${zero ? 'ZeRO-1' : `a model on ${store.device}`})`);
    this.overlap = overlap;
  }

  /** The hook BlockStack.run calls before each layer during a training forward (overlap). */
  readonly layerHook: LayerHook = (stack, layer) => {
    if (this.stack && this.stack !== stack) throw new Error('Trainer: distributed.overlap supports models with one layer stack (a Decoder)');
    if (!this.buckets) this.makeBuckets(stack);
    const bucket = this.bucketOfLayer.get(layer);
    if (bucket) recordHook(() => this.start(bucket));
  };

  private makeBuckets(stack: BlockStack): void {
    this.stack = stack;
    const seen = new Set<Parameter>();
    const buckets: Bucket[] = [];
    let offset = 0;
    const add = (params: Parameter[]) => {
      if (!params.length) return null;
      const size = params.reduce((n, p) => n + p.size, 0);
      const pack: number[] = [], unpack: number[] = [];
      let at = offset;
      for (const p of params) {
        pack.push(at - offset, p.offset, p.size); // into the bucket's window of the packed buffer
        unpack.push(p.offset, at, p.size);
        at += p.size;
      }
      const b = { params, offset, size, pack: new Float64Array(pack), unpack: new Float64Array(unpack) };
      offset += size;
      buckets.push(b);
      return b;
    };
    appliedLayers(stack.plan).forEach((lp, l) => {
      const fresh = [...stack.attn[lp.attention].parameters(), ...stack.ffn[lp.ffn].parameters()].filter((p) => !seen.has(p) && p._store === this.store);
      for (const p of fresh) seen.add(p);
      const b = add(fresh);
      if (b) this.bucketOfLayer.set(l, b);
    });
    add(this.store.parameters.filter((p) => !seen.has(p)));
    this.buckets = buckets;
  }

  /** Packs a bucket's final gradients and hands its all-reduce to the communication thread. */
  private start(b: Bucket, byHook = true): void {
    if (this.started.has(b)) return;
    if (byHook) this.startedDuringBackward++;
    this.started.add(b);
    const view = this.packed.window(b.offset, [b.size]);
    try {
      copySegments(view, this.store.grads, b.pack);
      raw().distAllReduceStart(view.handle);
    } finally {
      view.dispose();
    }
  }

  /** The flat-buffer collectives of one step and their bytes. */
  get plan(): CommPlan {
    const n = this.store.numel;
    if (this.overlap && this.buckets)
      return { bytesPerStep: 4 * n, collectives: this.buckets.map((b) => ({ kind: 'allReduce' as const, elements: b.size })) };
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
    if (this.overlap && this.buckets) {
      for (const b of this.buckets) this.start(b, false); // the buckets no hook started (the last one, or all after a failure)
      raw().distAllReduceWait(this.packed.handle);
      for (const b of this.buckets) copySegments(s.grads, this.packed, b.unpack);
      this.started.clear();
      this.hookStarts = this.startedDuringBackward;
      this.startedDuringBackward = 0;
      return;
    }
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

  /** Frees the packed buffers. */
  dispose(): void {
    this.packed.dispose();
    this.shardBuf?.dispose();
  }
}
