// memory-child.ts — one memory scenario in a fresh process (so that nothing else in a test runner moves its RSS);
// prints one JSON line: memory() counts at the start and the end (after a full collection, the caching allocator
// emptied), and RSS after the warm-up (the first tenth) and at the end.
//   node --import tsx --expose-gc test/reliability/memory-child.ts cycles|training N
import { setTimeout as sleep } from 'node:timers/promises';
import v8 from 'node:v8';
import { CharTokenizer, Decoder, TokenDataset, Trainer, emptyCache, full, memory, randn, synchronize, synchronizeSync, tensor, type StepInfo } from '../../lib/index.ts';
import { releaseTape } from '../../lib/autograd.ts';

const [scenario, nArg] = process.argv.slice(2);
const N = Number(nArg);
const gc = (globalThis as { gc?: () => void }).gc!;
const rssMB = () => process.memoryUsage().rss / 2 ** 20;
/** The V8 heap's size (heapTotal: what it has reserved, garbage included), which is part of RSS. */
const heapMB = () => process.memoryUsage().heapTotal / 2 ** 20;
/** The V8 heap's resident pages (total_physical_size: the part of heapTotal that has been touched), part of RSS. */
const heapPhysicalMB = () => v8.getHeapStatistics().total_physical_size / 2 ** 20;
/** Live JavaScript objects (used_heap_size; after a full collection, only what is reachable). */
const heapUsedMB = () => v8.getHeapStatistics().used_heap_size / 2 ** 20;
/** Memory V8 accounts outside its heap (ArrayBuffer backing stores, garbage ones included until a collection), also part of RSS. */
const externalMB = () => process.memoryUsage().external / 2 ** 20;

/** Collects garbage (finalizers run from the event loop), waits for queued work, and empties the caching allocator. */
async function collect(): Promise<void> {
  for (let i = 0; i < 4; i++) {
    gc();
    await sleep(10);
  }
  synchronizeSync();
  // Freed blocks stay in the caching allocator (memory().cpu.cachedBytes) for reuse: by design, not a leak.
  emptyCache();
  synchronizeSync();
}
const counts = () => {
  const c = memory().cpu;
  return { tensors: c.tensors, storages: c.storages, bytes: c.bytes };
};

// A forced collection before training was seen to make V8 grow RSS by ~30 MiB over the next ~800 steps (to a plateau,
// heap and live counts unchanged), so the training scenario starts as a fresh process would.
if (scenario !== 'training') await collect();
synchronizeSync();
const start = counts();
let rssWarm = 0;
const extra: Record<string, unknown> = {};
const t0 = performance.now();
if (scenario === 'cycles') {
  const host = new Float32Array(1024).fill(1.5);
  for (let i = 0; i < N; i++) {
    // Five tensors a cycle: from data, filled, random, a view (sharing its storage) and a clone of the view.
    const a = tensor(host, [32, 32]);
    const b = full([256], i);
    const c = randn([64, 16], { seed: i });
    const v = a.view([1024]);
    const d = v.clone();
    for (const x of [a, b, c, v, d]) x.dispose();
    // The JavaScript thread queues work faster than the stream runs it, and a storage is freed once its queued work
    // is done: waiting every 100 cycles, as code that reads its results does, bounds the memory in flight.
    if (i % 100 === 99) await synchronize();
    if (i + 1 === Math.floor(N / 10)) {
      await collect();
      rssWarm = rssMB();
      extra.heapPhysicalWarmMB = heapPhysicalMB();
      extra.heapUsedWarmMB = heapUsedMB();
    }
  }
  extra.tensors = 5 * N;
} else if (scenario === 'training') {
  const text = 'a small model trains on this small text, again and again, until the loss goes down. '.repeat(40);
  const tok = CharTokenizer.fromText(text);
  const data = new TokenDataset(tok.encode(text), tok.vocabSize);
  const model = new Decoder({ vocab: tok.vocabSize, dModel: 32, heads: 4, dFF: 64, layers: 4, maxSeq: 32, sharing: { strategy: 'cycle', unique: 2 }, seed: 1 });
  const trainer = new Trainer(model, data, { steps: N, batchSize: 4, seqLen: 32, lr: 1e-3, evalEvery: Math.floor(N / 3), evalBatches: 2 });
  const live: number[] = [];
  trainer.on('step', (s: StepInfo) => {
    live.push(memory().cpu.tensors);
    // Sampled as a server would see it, without forcing collections mid-run (forced full collections were seen to
    // raise RSS by ~30 MiB to a plateau, with the heap and the live counts unchanged).
    if (s.step === Math.floor(N / 2)) { // the end of the warm-up: the first half (see memory.test.ts)
      rssWarm = rssMB();
      extra.heapWarmMB = heapMB();
      extra.externalWarmMB = externalMB();
    }
    if (s.step === N) {
      extra.rssLastStepMB = rssMB();
      extra.heapLastStepMB = heapMB();
      extra.externalLastStepMB = externalMB();
    }
  });
  const r = await trainer.run();
  trainer.dispose();
  model.io.clearCache();
  model.store.dispose();
  releaseTape();
  const steady = live.slice(5);
  Object.assign(extra, { steps: r.steps, loss: r.loss, liveMin: Math.min(...steady), liveMax: Math.max(...steady) });
} else {
  throw new Error(`memory-child: unknown scenario ${scenario}`);
}
const seconds = (performance.now() - t0) / 1000;
await collect();
process.stdout.write(`${JSON.stringify({ scenario, n: N, seconds, start, end: counts(), peakBytes: memory().cpu.peakBytes, rssWarmMB: rssWarm, rssEndMB: rssMB(), heapUsedEndMB: process.memoryUsage().heapUsed / 2 ** 20, heapPhysicalEndMB: heapPhysicalMB(), heapLiveEndMB: heapUsedMB(), externalEndMB: externalMB(), ...extra })}\n`);
