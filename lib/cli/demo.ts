// demo.ts — `sharedformer demo`: a shared and an unshared model of the same depth trained by runTraining on the
// embedded corpus, samples from the shared one, and a comparison table.
import { CharTokenizer, TokenDataset } from '../data/index.ts';
import { describeCorpus } from '../data/corpus.ts';
import { getNumThreads, setNumThreads } from '../runtime.ts';
import { releaseTape } from '../autograd.ts';
import type { SharingConfig } from '../sharing/plan.ts';
import type { TrainerOptions } from '../train/trainer.ts';
import { EXIT_INTERRUPTED, EXIT_OK, UsageError, fixed, fmt, jsonLine, say, tableLines, type CliIO } from './common.ts';
import { buildModel } from './config.ts';
import { COMMON, MODEL_FLAGS, QUIET, TRAIN_FLAGS, num, str, type Command, type Flags } from './flags.ts';
import { generateText } from './generate.ts';
import { runTraining } from './run-training.ts';

/** The demo's models: small enough that a few hundred steps fit in half a minute on two CPU cores. */
const DEMO_MODEL = { dModel: 64, heads: 4, dFF: 256, layers: 6, maxSeq: 32 };
const DEMO_BATCH = 16;
const DEMO_LR = 5e-3;

interface DemoRow {
  strategy: string;
  plan: string;
  uniqueParameters: number;
  parameterBytes: number;
  steps: number;
  valLoss: number;
  bpc: number;
  tokensPerSec: number;
  trainSeconds: number;
}

async function demoCommand(f: Flags, io: CliIO, signal: AbortSignal): Promise<number> {
  const began = performance.now();
  const json = f.json === true;
  const tiny = f.tiny === true;
  const seconds = num(f, 'seconds') ?? 60;
  const seed = num(f, 'seed') ?? 1;
  if (f.threads !== undefined) setNumThreads(f.threads as number);
  const base = tiny ? { dModel: 16, heads: 2, dFF: 32, layers: 2, maxSeq: 16 } : DEMO_MODEL;
  const dims = {
    dModel: num(f, 'd-model') ?? base.dModel, heads: num(f, 'heads') ?? base.heads, dFF: num(f, 'd-ff') ?? base.dFF,
    layers: num(f, 'layers') ?? base.layers, maxSeq: num(f, 'max-seq') ?? base.maxSeq,
  };
  const shared: Partial<SharingConfig> = { strategy: (str(f, 'strategy') ?? 'all') as SharingConfig['strategy'] };
  if (f.unique !== undefined) shared.unique = f.unique as number;
  if (f.rank !== undefined) shared.rank = f.rank as number;
  if (shared.strategy === 'none') throw new UsageError('--strategy none is what the shared model is compared with; pick a sharing strategy');
  const B = num(f, 'batch') ?? (tiny ? 4 : DEMO_BATCH), T = dims.maxSeq, lr = num(f, 'lr') ?? DEMO_LR;
  buildModel({ ...dims, sharing: shared }, 64, 'cpu').store.dispose(); // a bad combination of flags fails before any output
  const evalBatches = tiny ? 2 : 20;
  const sampleChars = tiny ? 24 : 160;

  const corpus = describeCorpus(tiny ? 30_000 : 400_000, 1);
  const tok = CharTokenizer.fromText(corpus.text);
  const data = new TokenDataset(tok.encode(corpus.text), tok.vocabSize);
  const progressQuiet = f.quiet === true;
  const line = (s = '') => { if (!json) say(io, s); };
  if (json)
    jsonLine(io, {
      type: 'corpus', characters: corpus.text.length, stories: corpus.stories, alphabet: corpus.alphabet,
      unigramBitsPerChar: corpus.unigramBitsPerChar, sourceBitsPerChar: corpus.sourceBitsPerChar,
    });
  line(`sharedformer demo: a shared model (${shared.strategy}) vs. an unshared one of the same depth, on the embedded corpus`);
  line(`corpus   ${fmt(corpus.text.length)} characters of generated stories (${fmt(corpus.stories)} stories, ${corpus.alphabet} distinct characters)`);
  line(`         unigram entropy ${corpus.unigramBitsPerChar.toFixed(2)} bits/char; the generator's own entropy ${corpus.sourceBitsPerChar.toFixed(2)} bits/char`);
  line(`model    ${dims.layers} layers, dModel ${dims.dModel}, ${dims.heads} heads, dFF ${dims.dFF}, context ${dims.maxSeq}; batch ${B} x ${T}, AdamW lr ${lr}, cosine; ${getNumThreads()} CPU threads`);

  const build = (which: 'shared' | 'none') => buildModel({ ...dims, sharing: which === 'shared' ? shared : { strategy: 'none' }, seed }, tok.vocabSize, 'cpu');
  const options = (steps: number): TrainerOptions => ({
    steps, batchSize: B, seqLen: T, lr, warmup: Math.max(1, Math.round(steps * 0.05)), evalBatches, seed, signal,
  });

  // Steps: time a few steps of a throwaway copy of the shared model, then give each model half of --seconds (the
  // calibration, evaluations and samples add a few seconds).
  let steps = num(f, 'steps');
  if (steps === undefined) {
    const probe = build('shared');
    const times: number[] = [];
    let prev = 0;
    try {
      // A few steps of the one training loop, timed from the steps' own clock.
      await runTraining({
        model: probe, data, options: options(8), progress: null, finalEval: false,
        onStep: (s) => {
          times.push(s.elapsedMs - prev);
          prev = s.elapsedMs;
        },
      });
    } finally {
      probe.store.dispose();
    }
    const timed = times.slice(3).sort((a, b) => a - b); // the first steps warm the allocator up
    const ms = timed.length ? timed[Math.floor(timed.length / 2)] : 1000;
    steps = Math.max(10, Math.floor((seconds * 1000 * 0.5) / ms));
    line(`steps    ${steps} per model (${ms.toFixed(0)} ms per step measured; --seconds ${seconds})`);
  }

  const rows: DemoRow[] = [];
  for (const [i, which] of (['shared', 'none'] as const).entries()) {
    if (signal.aborted) break;
    const model = build(which);
    const strategy = model.plan.strategy;
    const acc = model.accounting();
    line();
    line(`[${i + 1}/2] ${which === 'shared' ? 'shared' : 'unshared'}: ${model.plan.describe()}; ${fmt(acc.uniqueParameters)} unique parameters, ${fmt(acc.parameterBytes)} bytes`);
    let r;
    try {
      r = await runTraining({
        model, data, options: options(steps),
        progress: { out: io.stderr, label: which === 'shared' ? 'shared  ' : 'unshared', quiet: progressQuiet },
      });
    } catch (e) {
      model.store.dispose();
      throw e;
    }
    const { last, val } = r;
    const trainSeconds = r.seconds;
    if (signal.aborted || !val) {
      model.store.dispose();
      break;
    }
    const row: DemoRow = {
      strategy, plan: model.plan.describe(), uniqueParameters: acc.uniqueParameters, parameterBytes: acc.parameterBytes,
      steps, valLoss: val.loss, bpc: val.bpc, tokensPerSec: last?.tokensPerSec ?? 0, trainSeconds,
    };
    rows.push(row);
    if (json) jsonLine(io, { type: 'model', ...row });
    line(`        trained ${steps} steps in ${trainSeconds.toFixed(1)} s; train loss ${fixed(last?.loss, 3)}; validation loss ${val.loss.toFixed(3)} nats/char = ${val.bpc.toFixed(2)} bits/char`);
    if (which === 'shared') {
      model.eval();
      line('        samples (temperature 0.8, top-k 40):');
      const prompts = ['Once upon a time', '"Where is', 'The old fisherman'];
      for (const [k, prompt] of prompts.entries()) {
        const text = await generateText(model, tok, prompt, sampleChars, { temperature: 0.8, topK: 40, seed: seed + k });
        if (json) jsonLine(io, { type: 'sample', strategy, prompt, text, temperature: 0.8, topK: 40, seed: seed + k });
        line(`        ${k + 1}> ${(prompt + text).replace(/\n/g, '\n           ')}`);
      }
    }
    model.store.dispose();
    releaseTape();
  }
  if (signal.aborted) {
    io.stderr.write('demo interrupted\n');
    return EXIT_INTERRUPTED;
  }
  if (!json) {
    line();
    line(`comparison (${steps} steps each; the same data, batches, schedule and seed)`);
    const head = ['strategy', 'unique parameters', 'parameter bytes', 'val loss', 'bits/char', 'tokens/s'];
    const cells = rows.map((r) => [r.strategy, fmt(r.uniqueParameters), fmt(r.parameterBytes), r.valLoss.toFixed(3), r.bpc.toFixed(2), fmt(r.tokensPerSec)]);
    for (const l of tableLines(head, cells)) line(l);
    if (rows.length === 2) {
      const [a, n] = rows;
      line(`  the shared model keeps ${(a.uniqueParameters / n.uniqueParameters * 100).toFixed(0)}% of the parameters (${(n.uniqueParameters / a.uniqueParameters).toFixed(1)}x fewer) at ${(a.bpc - n.bpc >= 0 ? '+' : '')}${(a.bpc - n.bpc).toFixed(2)} bits/char`);
    }
    line(`  reference: uniform ${Math.log2(tok.vocabSize).toFixed(2)} bits/char; unigram ${corpus.unigramBitsPerChar.toFixed(2)}; the generator's entropy ${corpus.sourceBitsPerChar.toFixed(2)}`);
    line(`total ${((performance.now() - began) / 1000).toFixed(1)} s`);
  }
  return EXIT_OK;
}

export const demoCmd: Command = {
  summary: 'train a shared and an unshared model on the embedded corpus and compare them',
  usage: 'sharedformer demo [--seconds 60] [--json]',
  specs: {
    seconds: { kind: 'number', arg: 'S', min: 0, above: true, help: 'about how long the whole demo takes (default 60)' },
    seed: { kind: 'int', arg: 'N', min: 0, max: 0xffffffff, help: 'seed of the initialisation, batches and samples (default 1)' },
    tiny: { kind: 'bool', help: 'tiny model and corpus (tests)', hidden: true },
    steps: { kind: 'int', arg: 'N', min: 1, help: 'fixed steps per model instead of timing the first steps' },
    strategy: { ...MODEL_FLAGS.strategy, help: 'the shared model\'s strategy (default all); compared with none' },
    unique: MODEL_FLAGS.unique,
    rank: MODEL_FLAGS.rank,
    'd-model': { ...MODEL_FLAGS['d-model'], help: `model width (default ${DEMO_MODEL.dModel})` },
    heads: { ...MODEL_FLAGS.heads, help: `attention heads (default ${DEMO_MODEL.heads})` },
    'd-ff': { ...MODEL_FLAGS['d-ff'], help: `feed-forward width (default ${DEMO_MODEL.dFF})` },
    layers: { ...MODEL_FLAGS.layers, help: `layers of both models (default ${DEMO_MODEL.layers})` },
    'max-seq': { ...MODEL_FLAGS['max-seq'], help: `context, and characters per training sequence (default ${DEMO_MODEL.maxSeq})` },
    batch: { ...TRAIN_FLAGS.batch, help: `sequences per batch (default ${DEMO_BATCH})` },
    lr: { ...TRAIN_FLAGS.lr, help: `peak learning rate (default ${DEMO_LR})` },
    ...QUIET,
    ...COMMON,
  },
  examples: ['sharedformer demo', 'sharedformer demo --seconds 180 --json > demo.jsonl'],
  interruptible: true,
  run: demoCommand,
};
