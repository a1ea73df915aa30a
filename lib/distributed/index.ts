// distributed — several processes training one model: MPI starts the ranks (`mpirun -np N node app.js`) and moves
// CPU tensors; NCCL moves CUDA tensors. Both libraries are loaded at run time (native/core/comm.h), so the default
// install needs neither: init() throws one error that says what to install when MPI is missing. Collectives are ops
// on the tensor's stream, like kernels: they return at once, run after the ops that wrote their inputs, and a failure
// (on any rank) poisons their outputs on every rank, so reading them rejects instead of hanging. Before each
// collective the ranks compare what they are about to do; a rank that passes a tensor of a different size, or calls
// a different collective, makes every rank throw an error naming the ranks and sizes. See docs/distributed.md.
import { native } from '../native.ts';
import { Tensor, handleOf } from '../tensor.ts';
import { checkOptions, describe } from '../validate.ts';

/** This process's place in the job (init() / info()). */
export interface DistributedInfo {
  /** 0 .. worldSize - 1. */
  rank: number;
  worldSize: number;
  /** Rank among the ranks on this machine (MPI_COMM_TYPE_SHARED): pick a GPU with it. */
  localRank: number;
  localSize: number;
  /** What moves tensors: 'mpi' (CPU tensors); 'nccl' when init() was asked for a CUDA device. */
  backend: 'mpi' | 'nccl';
  /** The MPI library's version line (MPI_Get_library_version). */
  library: string;
}

/** How a reduction combines the ranks' tensors: their sum, or their mean (the sum divided by the world size). */
export type ReduceOp = 'sum' | 'mean';

/** Time spent inside collectives and the payload bytes they moved, on this rank, since init(). */
export interface CommStats {
  seconds: number;
  bytes: number;
  calls: number;
}

type Native = Record<string, (...args: unknown[]) => any>;
const n = () => native() as unknown as Native;
const h = (t: unknown, op: string, name: string) => handleOf(t, op, name);

let state: { backend: 'mpi' | 'nccl'; exitHook: boolean } | null = null;

/**
 * Joins the job: loads MPI, initialises it (once per process) and returns this rank's place. Without mpirun the
 * process is a job of one rank (an MPI singleton). `device: 'cuda'` (or 'cuda:N') also requires NCCL for CUDA
 * tensors (backend 'nccl'). Calling it again returns the same information. At process exit (code 0) the job is
 * finalised; a rank that exits with another code leaves it to mpirun, which ends the other ranks.
 */
export function init(options: { device?: string } = {}): DistributedInfo {
  checkOptions('distributed.init', options as Record<string, unknown>);
  const device = options.device ?? 'cpu';
  if (typeof device !== 'string' || !/^(cpu|cuda(:\d+)?)$/.test(device))
    throw new TypeError(`distributed.init: device must be 'cpu', 'cuda' or 'cuda:N', got ${describe(device)}`);
  const backend = device === 'cpu' ? 'mpi' : 'nccl';
  if (backend === 'nccl') {
    const nccl = native().backends().distributed.nccl;
    if (!nccl.found)
      throw new Error(`distributed.init: CUDA tensors need NCCL, which is not available (${nccl.reason}); install NCCL (libnccl.so.2) or train on the CPU`);
  }
  const i = n().distInit() as Omit<DistributedInfo, 'backend'>;
  if (!state) {
    state = { backend, exitHook: true };
    // Exit code 0: finalise (collective; every rank gets there). Any other code: leave MPI as it is and exit —
    // mpirun sees a rank end with a non-zero status and ends the job (a finalize could wait forever for ranks stuck
    // in a collective, and an MPI_Abort here would kill this rank before its error message is forwarded).
    process.on('exit', (code) => {
      if (code === 0) n().distFinalize();
    });
  } else if (backend === 'nccl') state.backend = 'nccl';
  return { ...i, backend: state.backend };
}

/** This rank's place in the job, or null before init() (and after finalize()). */
export function info(): DistributedInfo | null {
  const i = n().distInfo() as Omit<DistributedInfo, 'backend'> | null;
  return i && state ? { ...i, backend: state.backend } : null;
}

/** Whether init() has run (and finalize() has not). */
export function isInitialized(): boolean {
  return info() !== null;
}

function reduceOp(op: unknown, who: string): ReduceOp {
  if (op !== 'sum' && op !== 'mean') throw new TypeError(`${who}: op must be 'sum' or 'mean', got ${describe(op)}`);
  return op;
}

/** In place: t becomes the sum (or mean) of every rank's t (PyTorch's all_reduce). Returns t. */
export function allReduce(t: Tensor, op: ReduceOp = 'sum'): Tensor {
  n().distAllReduce(h(t, 'allReduce', 't'), reduceOp(op, 'allReduce'));
  return t;
}

/**
 * out becomes this rank's shard of the sum (or mean) of every rank's `input` (PyTorch's reduce_scatter_tensor):
 * shards are contiguous, in rank order, the first `input.size % worldSize` ranks one element longer (shardRange).
 * Returns out.
 */
export function reduceScatter(out: Tensor, input: Tensor, op: ReduceOp = 'sum'): Tensor {
  n().distReduceScatter(h(out, 'reduceScatter', 'out'), h(input, 'reduceScatter', 'in'), reduceOp(op, 'reduceScatter'));
  return out;
}

/**
 * out becomes every rank's `input` in rank order (PyTorch's all_gather_into_tensor): `input` is this rank's shard of
 * out (shardRange(out.size)); it may be that very window of out (in place). Returns out.
 */
export function allGather(out: Tensor, input: Tensor): Tensor {
  n().distAllGather(h(out, 'allGather', 'out'), h(input, 'allGather', 'in'));
  return out;
}

/** In place: t becomes rank `src`'s t (float32 or int32). Returns t. */
export function broadcast(t: Tensor, src = 0): Tensor {
  n().distBroadcast(h(t, 'broadcast', 't'), src);
  return t;
}

/** Resolves once every rank has reached its barrier (after the work queued before it on the CPU stream). */
export async function barrier(): Promise<void> {
  const t = new Tensor(n().distBarrier());
  try {
    await t.data();
  } finally {
    t.dispose();
  }
}

/** This rank's shard [begin, end) of n elements (contiguous, in rank order; the first n % worldSize one longer). */
export function shardRange(count: number): [number, number] {
  return n().distShard(count) as [number, number];
}

/**
 * Over every rank's x (each rank holding a part of one vector, as ZeRO-1 holds a shard of the gradient): the global
 * L2 norm, and each rank's x scaled by min(1, maxNorm / (norm + eps)) as clipGradNorm does; with maxNorm 0 the sum of
 * squares and no scaling. Each rank sums its part in double; the ranks' sums are added in rank order. A scalar tensor.
 */
export function clipGradNorm(x: Tensor, maxNorm: number, options: { eps?: number } = {}): Tensor {
  checkOptions('distributedClipGradNorm', options as Record<string, unknown>);
  return new Tensor(n().distSumSquares(h(x, 'distributedClipGradNorm', 'x'), maxNorm, options.eps ?? 1e-6));
}

/** Seconds inside collectives, payload bytes and calls on this rank since init() (zero before). */
export function stats(): CommStats {
  return n().distStats() as CommStats;
}

/** Ends every rank of the job now (MPI_Abort with `code`): for a rank that cannot go on and must not leave the others waiting. */
export function abort(code = 1): void {
  n().distAbort(code);
}

/**
 * Ends the job's communication after the queued work (collective: every rank calls it). Also done at exit. No
 * collective and no second init() can follow it (MPI allows one initialisation per process).
 */
export function finalize(): void {
  n().distFinalize();
}
