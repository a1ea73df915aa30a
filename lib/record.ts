// record.ts — recording an op sequence once and replaying it natively (native/core/stream.h "Recording",
// native/addon/ops_record.cpp): what lets a decode step cost one native call whatever the model's depth
// (DecodeSession.step, lib/models/generate.ts). Also writeInto, which writes host values into an existing tensor as a
// stream task (the inputs of a replay).
import { native } from './native.ts';
import { type Tensor, handleOf } from './tensor.ts';

const n = () => native() as unknown as Record<string, (...args: unknown[]) => any>;

/** An op sequence recorded on one device (`record`), replayed with `replay`. Freed when garbage-collected. */
export interface Recording {
  /** The device the ops were recorded on. */
  readonly device: string;
  /** How many stream tasks one replay queues. */
  readonly tasks: number;
}

const RECORDED = new WeakMap<Recording, unknown>();

/**
 * Runs `fn` with the kernels it queues on `device` recorded instead of run, and returns fn's result with the
 * recording. Nothing recorded has run yet: `replay(rec)` queues all of it, in order, in one native call. Each task
 * reads its tensors when it runs, so writing new values into the recorded inputs (`writeInto`) before a replay gives
 * that replay's results; numbers passed to the ops are the recording's. The recording holds every tensor its ops use
 * (outputs and temporaries included), so disposing them in fn does not free their memory while it lives. Reading a
 * tensor of `device` inside fn throws (the recorded work has not run). If fn throws, nothing is kept.
 */
export function record<T>(device: string, fn: () => T): { result: T; recording: Recording } {
  n().recordBegin(device);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    n().recordAbort(device);
    throw e;
  }
  const handle = n().recordEnd(device);
  const recording: Recording = Object.freeze({ device, tasks: n().recordTasks(handle) as number });
  RECORDED.set(recording, handle);
  return { result, recording };
}

function recordingHandle(rec: Recording, op: string): unknown {
  const handle = RECORDED.get(rec);
  if (handle === undefined) throw new TypeError(`${op}: expected a Recording made by record()`);
  return handle;
}

/** Queues every op of a recording again, in order (one native call). Throws once the recording is freed. */
export function replay(rec: Recording): void {
  n().replay(recordingHandle(rec, 'replay'));
}

/** Frees what a recording holds now (its tensors' memory; replays already queued still run). Idempotent. */
export function freeRecording(rec: Recording): void {
  n().recordFree(recordingHandle(rec, 'freeRecording'));
}

/**
 * dst[:] = data, queued after earlier work on dst's device (a Float32Array for float32, an Int32Array for int32, the
 * bit patterns in a Uint16Array for bfloat16; as many elements as dst). The data is copied at the call. Returns dst.
 */
export function writeInto(dst: Tensor, data: Float32Array | Int32Array | Uint16Array): Tensor {
  n().writeInto(handleOf(dst, 'writeInto', 'dst'), data);
  return dst;
}
