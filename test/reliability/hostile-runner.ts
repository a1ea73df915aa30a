// hostile-runner.ts — runs cases [from, to) of hostile-cases.ts in this (child) process and writes one JSON line per
// event to stdout: {"i", "start": true} before a case, {"i", "kind", "name", "message"} after it. The parent reads
// them; if this process dies (a native crash), the last case started without an end is the one that killed it.
//   node --import tsx --expose-gc test/reliability/hostile-runner.ts FROM TO PAIRS
import { setTimeout as sleep } from 'node:timers/promises';
import * as sf from '../../lib/index.ts';
import { Tensor } from '../../lib/index.ts';
import { releaseTape } from '../../lib/autograd.ts';
import { buildCases, Ctx } from './hostile-cases.ts';
import { writeLine } from './child.ts';

const [from, to, pairs] = process.argv.slice(2).map(Number);
const cases = buildCases(pairs);
const emit = (o: object) => writeLine(JSON.stringify(o));
const unhandled: string[] = [];
process.on('unhandledRejection', (e) => unhandled.push(String((e as Error)?.message ?? e)));
process.on('uncaughtException', (e) => unhandled.push(String((e as Error)?.message ?? e)));

/** Tensors anywhere in what a call returned (one level into arrays and objects). */
function tensorsIn(r: unknown): Tensor[] {
  if (r instanceof Tensor) return [r];
  if (Array.isArray(r)) return r.flatMap((x) => (x instanceof Tensor ? [x] : []));
  if (r && typeof r === 'object') return Object.values(r).flatMap((x) => (x instanceof Tensor ? [x] : []));
  return [];
}

function timeout<T>(p: Promise<T>, ms: number, id: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, rej) => (timer = setTimeout(() => rej(new Error(`HANG: ${id} took over ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

const threads = sf.getNumThreads();
sf.synchronizeSync();
const before = sf.memory().cpu.tensors;
for (let i = from; i < Math.min(to, cases.length); i++) {
  const k = cases[i];
  emit({ i, start: true });
  const t0 = performance.now();
  const c = new Ctx();
  let out: { kind: string; name?: string; message?: string } = { kind: 'returned' };
  let returned: Tensor[] = [];
  try {
    const r = await timeout(Promise.resolve().then(() => k.run(c)), 30_000, k.id);
    returned = tensorsIn(r);
    for (const t of returned) if (!t.disposed) await t.data(); // an error raised on the stream rejects here
    await sf.synchronize();
    out = { kind: 'returned', message: typeof r === 'string' ? r : Object.prototype.toString.call(r) };
  } catch (e) {
    out = e instanceof Error ? { kind: 'error', name: e.constructor.name, message: e.message } : { kind: 'non-error', message: String(e) };
  }
  for (const t of returned) if (!t.disposed) t.dispose();
  c.release();
  releaseTape(); // what a recorded forward pass (a model called outside noGrad) left on the tape
  try {
    sf.synchronizeSync();
  } catch (e) {
    out.message = `${out.message} [a later synchronize failed: ${(e as Error).message}]`;
  }
  if (sf.getNumThreads() !== threads) sf.setNumThreads(threads);
  emit({ i, ...out, ms: Math.round(performance.now() - t0), ...(unhandled.length ? { unhandled: unhandled.splice(0) } : {}) });
}
Ctx.cleanup();
// Leftovers after collection: tensors of the batch that nothing disposed and no finalizer reclaimed.
for (let r = 0; r < 3; r++) {
  (globalThis as { gc?: () => void }).gc?.();
  await sleep(20);
}
sf.synchronizeSync();
emit({ done: true, leakedTensors: sf.memory().cpu.tensors - before, rssMB: Math.round(process.memoryUsage().rss / 2 ** 20) });
