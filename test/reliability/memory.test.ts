// Issue 8, point 2: tensor create/dispose cycles and training steps leave memory() at its starting counts and the
// process RSS flat within a stated bound; tensors dropped without dispose() are reclaimed by finalizers.
// CI runs reduced counts; `npm run reliability` (SHAREDFORMER_RELIABILITY=full) the 100,000 cycles and 1,000
// steps. Each scenario runs in a fresh child process, so that other tests cannot move its RSS.
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { memory, randn, synchronizeSync, zeros } from '../../lib/index.ts';
import { FULL, record, runChild } from './child.ts';

const CYCLES = FULL ? 100_000 : 20_000;
const STEPS = FULL ? 2_000 : 800;
/** RSS may grow this much from the end of the warm-up (the first tenth of the cycles, the first half of the training steps) to the end: allocator slack and JIT code. */
const RSS_BOUND_MB = 16;

async function scenario(name: string, n: number) {
  const r = await runChild('memory-child.ts', [name, n], { timeoutMs: 600_000 });
  if (r.code !== 0) throw new Error(`memory-child ${name} exited with ${r.code} ${r.signal}: ${r.stderr.slice(-2000)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!);
}

// RSS is split as the training check splits it: the V8 heap's resident pages grow while the loop makes garbage, as
// V8 touches more of the heap it has reserved (measured under load: 17.6-18.6 -> 24.5-24.8 MiB over 18,000 cycles,
// with the live heap after a full collection constant at 8.8-8.9 MiB), which once took the whole RSS 19 MiB up (a CI
// failure); outside the heap the same runs grew 2.5-3.6 MiB. So the RSS bound applies to what is outside V8's resident
// heap (where a native leak shows), and a JavaScript leak is caught by the live heap after the final collection.
const LIVE_GROWTH_BOUND_MB = 4;
test(`${CYCLES} tensor create/dispose cycles leave memory() at its start and RSS flat`, async (t) => {
  const r = await scenario('cycles', CYCLES);
  t.deepEqual(r.end, r.start, 'tensors, storages and bytes back at their start values');
  const outsideWarm = r.rssWarmMB - r.heapPhysicalWarmMB, outsideEnd = r.rssEndMB - r.heapPhysicalEndMB;
  t.true(outsideEnd - outsideWarm <= RSS_BOUND_MB, `RSS outside the V8 heap ${outsideWarm.toFixed(1)} MiB after ${CYCLES / 10} cycles -> ${outsideEnd.toFixed(1)} MiB after ${CYCLES} (bound ${RSS_BOUND_MB} MiB)`);
  t.true(r.heapLiveEndMB - r.heapUsedWarmMB <= LIVE_GROWTH_BOUND_MB, `live V8 heap ${r.heapUsedWarmMB.toFixed(1)} -> ${r.heapLiveEndMB.toFixed(1)} MiB (bound: ${LIVE_GROWTH_BOUND_MB} MiB of growth)`);
  t.log(`${CYCLES} cycles (${r.tensors} tensors) in ${r.seconds.toFixed(1)} s; memory() ${JSON.stringify(r.start)} -> ${JSON.stringify(r.end)}; RSS ${r.rssWarmMB.toFixed(1)} -> ${r.rssEndMB.toFixed(1)} MiB, of which the V8 heap's resident pages ${r.heapPhysicalWarmMB.toFixed(1)} -> ${r.heapPhysicalEndMB.toFixed(1)} MiB; live heap ${r.heapUsedWarmMB.toFixed(1)} -> ${r.heapLiveEndMB.toFixed(1)} MiB`);
  await record('memory-cycles', { ...r, boundMB: RSS_BOUND_MB });
});

/** What the V8 heap may still hold after the final full collection: the program's live JavaScript (about 9 MiB). */
const LIVE_HEAP_BOUND_MB = 32;

// Training is sampled without forced collections (as a server runs), and then the V8 heap grows for hundreds of steps
// on garbage alone: heapTotal 18 -> 32 MiB by step 200 and 62 MiB by step 800, while the heap's live size after a
// full collection stays at 8.3-8.9 MiB (measured; the same on the code before issue 16, where the whole-RSS bound of
// 16 MiB was exceeded by 17-18 MiB in 3 of 3 runs on a loaded machine). So the RSS bound applies to what is outside
// V8's heap (native memory: the allocators, the pool, the streams — where a native leak would show), and the heap is
// checked by its live size after the final collection.
// The warm-up is the first half of the steps: glibc's per-thread malloc arenas (the pool's and the stream's threads)
// keep filling for hundreds of steps on a loaded machine. Measured at load 6 (RSS outside the heap, MiB, by step):
// 20: 69, 100: 83, 200: 87, 400: 90, 550: 97, 600-800: 97 — flat from there; with MALLOC_ARENA_MAX=2 the plateau is
// 80 MiB by step 350. From step 20 to 200 (the window this test had) that is 16-18 MiB under load and about 7 on a
// quiet machine; from step 400 to 800 it is 7. The window is now 400 steps instead of 180 under the same 16 MiB bound,
// so a leak per step is caught at a smaller size than before (40 KiB a step rather than 90).
test(`${STEPS} training steps of a small model leave memory() at its start and RSS flat`, async (t) => {
  const r = await scenario('training', STEPS);
  t.is(r.steps, STEPS);
  t.is(r.liveMax, r.liveMin, `live tensors after each step (past the first 5): ${r.liveMin}..${r.liveMax}`);
  t.deepEqual(r.end, r.start, 'tensors, storages and bytes back at their start values');
  const outside = (rss: number, heap: number) => rss - heap;
  const growth = outside(r.rssLastStepMB, r.heapLastStepMB) - outside(r.rssWarmMB, r.heapWarmMB);
  t.true(growth <= RSS_BOUND_MB, `RSS outside the V8 heap ${outside(r.rssWarmMB, r.heapWarmMB).toFixed(1)} MiB at step ${STEPS / 2} -> ${outside(r.rssLastStepMB, r.heapLastStepMB).toFixed(1)} MiB at step ${STEPS} (bound ${RSS_BOUND_MB} MiB)`);
  t.true(r.heapUsedEndMB <= LIVE_HEAP_BOUND_MB, `the V8 heap holds ${r.heapUsedEndMB.toFixed(1)} MiB of live objects after the final collection (bound ${LIVE_HEAP_BOUND_MB} MiB)`);
  t.log(`${STEPS} steps in ${r.seconds.toFixed(1)} s (loss ${r.loss.toFixed(3)}); ${r.liveMin} live tensors after every step; memory() ${JSON.stringify(r.start)} -> ${JSON.stringify(r.end)}; RSS ${r.rssWarmMB.toFixed(1)} -> ${r.rssLastStepMB.toFixed(1)} MiB, of which the V8 heap ${r.heapWarmMB.toFixed(1)} -> ${r.heapLastStepMB.toFixed(1)} MiB; live heap after the final collection ${r.heapUsedEndMB.toFixed(1)} MiB`);
  await record('memory-training', { ...r, boundMB: RSS_BOUND_MB });
});

test('tensors dropped without dispose() are reclaimed by finalizers', async (t) => {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== 'function') throw new Error('needs --expose-gc (set in the ava config)');
  const collect = async () => {
    for (let i = 0; i < 4; i++) {
      gc();
      await sleep(10); // finalizers run from the event loop
    }
    synchronizeSync();
  };
  await collect();
  const before = memory().cpu;
  const N = 2000;
  (() => {
    for (let i = 0; i < N; i++) {
      zeros([128]);
      randn([8, 8], { seed: i }).view([64]); // the view keeps the storage alive until it, too, is collected
    }
  })();
  synchronizeSync();
  const alive = memory().cpu.tensors - before.tensors;
  t.true(alive > 0, 'the dropped tensors are alive until a collection');
  await collect();
  const after = memory().cpu;
  t.is(after.tensors, before.tensors, `finalizers reclaimed the ${3 * N} dropped tensors (${alive} alive before the collection)`);
  t.is(after.storages, before.storages);
  t.is(after.bytes, before.bytes);
});
