// finetune-classifier.ts — fine-tunes a pretrained encoder (a Hugging Face BERT or ALBERT folder) to classify short
// reviews as positive or negative, and reports accuracy on a held-out split before and after.
//
// Run it (no npm needed; `tsx` is a dev dependency in node_modules, and the addon must be built):
//
//   node --import tsx examples/finetune-classifier.ts --model DIR [--steps 300] [--batch 16] [--lr 2e-3] [--seed 1]
//
// DIR holds config.json, model.safetensors (or shards) and tokenizer.json — what transformers' save_pretrained and
// tokenizers write, e.g. a BertForMaskedLM or AlbertForMaskedLM checkpoint whose tokenizer covers the example's words.
// The repository's own tiny one is test/fixtures/hf/bert-mlm (random weights, written by scripts/hf_fixtures.py), which
// test/finetune-example.test.ts runs this example with.
//
// What it does, in the order a PyTorch user would:
//   1. fromPretrained(DIR, { numClasses: 2 }): the encoder with the checkpoint's weights and a fresh classification
//      head (pooler + classifier), as transformers' from_pretrained(num_labels=2).
//   2. makeReviews(): a labelled data set made here, deterministic in the seed — reviews such as "the film was really
//      great ." (positive) or "this meal was not fun !" (negative: "not" flips the adjective), so that a bag of words is
//      not enough; split 80 / 20 into train and eval (the eval reviews are sentences the model never trains on).
//   3. Training: AdamW with a linear warm-up and decay, mini-batches padded to the longest review with keyLengths
//      masking the padding (as an attention mask does), cross-entropy on the [CLS] position's class logits.
//   4. Accuracy on the eval split before and after, and the loss curve, printed (or returned by finetune()).
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { AdamW, Encoder, SubwordTokenizer, fromPretrained, noGrad, releaseTape, tensor, warmupLinear, type Tensor } from '../lib/index.ts';

/** The example's words, in the order scripts/hf_fixtures.py builds the fixture tokenizer's vocabulary from them. */
export const WORDS = {
  det: ['the', 'a', 'this'],
  noun: ['film', 'movie', 'show', 'book', 'meal'],
  verb: ['was', 'is', 'felt'],
  adverb: ['really', 'very', 'quite'],
  positive: ['great', 'good', 'lovely', 'wonderful', 'superb', 'fun'],
  negative: ['bad', 'awful', 'boring', 'dull', 'terrible', 'poor'],
  end: ['.', '!'],
};

/** A labelled review: its text and 1 (positive) or 0 (negative). */
export interface Review {
  text: string;
  label: number;
}

/** A small deterministic PRNG (mulberry32) so that the data set is the same on every machine. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * `n` distinct made-up reviews: determiner, noun, verb, an optional adverb, an optional "not", an adjective, an end
 * mark. The label is the adjective's polarity, flipped by "not".
 */
export function makeReviews(n: number, seed: number): Review[] {
  const r = rng(seed);
  const pick = <T>(a: readonly T[]) => a[Math.floor(r() * a.length)];
  const seen = new Set<string>();
  const out: Review[] = [];
  for (let tries = 0; out.length < n && tries < 100 * n; tries++) {
    const positive = r() < 0.5, negated = r() < 0.3;
    const words = [pick(WORDS.det), pick(WORDS.noun), pick(WORDS.verb)];
    if (r() < 0.5) words.push(pick(WORDS.adverb));
    if (negated) words.push('not');
    words.push(pick(positive ? WORDS.positive : WORDS.negative), pick(WORDS.end));
    const text = words.join(' ');
    if (seen.has(text)) continue;
    seen.add(text);
    out.push({ text, label: positive !== negated ? 1 : 0 });
  }
  if (out.length < n) throw new RangeError(`makeReviews: only ${out.length} distinct reviews, asked for ${n}`);
  return out;
}

/** Options of finetune(). */
export interface FinetuneOptions {
  /** The checkpoint folder: config.json, model.safetensors (or shards), tokenizer.json. */
  model: string;
  steps?: number;
  batch?: number;
  lr?: number;
  seed?: number;
  /** Reviews made (80% train, 20% eval). */
  reviews?: number;
  /** Called every 10 steps and at the last with the step and the mean loss since the previous call. */
  onProgress?: (step: number, loss: number) => void;
}

/** What finetune() measured. */
export interface FinetuneResult {
  architecture: string;
  train: number;
  eval: number;
  accuracyBefore: number;
  accuracyAfter: number;
  trainAccuracyAfter: number;
  losses: { step: number; loss: number }[];
  seconds: number;
}

/** Token ids of a batch padded with padId to the longest, and each row's length (the key lengths). */
function batchOf(tok: SubwordTokenizer, reviews: readonly Review[], padId: number, maxSeq: number): { ids: Tensor; lengths: number[]; labels: Tensor } {
  const rows = reviews.map((x) => tok.encode(x.text)); // [CLS] ... [SEP]
  const T = Math.max(...rows.map((r) => r.length));
  if (T > maxSeq) throw new RangeError(`a review is ${T} tokens long, over the model's ${maxSeq} positions`);
  const ids = new Int32Array(rows.length * T).fill(padId);
  rows.forEach((r, i) => ids.set(r, i * T));
  return { ids: tensor(ids, [rows.length, T]), lengths: rows.map((r) => r.length), labels: tensor(Int32Array.from(reviews.map((x) => x.label)), [rows.length]) };
}

/** Accuracy of the model's class predictions over `reviews`, in batches of 64, without recording gradients. */
async function accuracy(model: Encoder, tok: SubwordTokenizer, reviews: readonly Review[], padId: number): Promise<number> {
  let right = 0;
  for (let i = 0; i < reviews.length; i += 64) {
    const part = reviews.slice(i, i + 64);
    const b = batchOf(tok, part, padId, model.dims.maxSeq);
    const logits = noGrad(() => model.classify(b.ids, { keyLengths: b.lengths }));
    const v = await logits.data();
    for (let j = 0; j < part.length; j++) if ((v[2 * j + 1] > v[2 * j] ? 1 : 0) === part[j].label) right++;
    for (const x of [b.ids, b.labels, logits]) x.dispose();
  }
  return right / reviews.length;
}

/** Loads the checkpoint with a fresh 2-class head, fine-tunes it on the made-up reviews, and measures accuracy. */
export async function finetune(o: FinetuneOptions): Promise<FinetuneResult> {
  const steps = o.steps ?? 300, batch = o.batch ?? 16, lr = o.lr ?? 2e-3, seed = o.seed ?? 1;
  const tok = SubwordTokenizer.fromFile(join(o.model, 'tokenizer.json'));
  const padId = tok.tokenToId('[PAD]') ?? tok.tokenToId('<pad>') ?? 0;
  const loaded = fromPretrained(o.model, { numClasses: 2 });
  if (!(loaded instanceof Encoder)) {
    loaded.store.dispose();
    throw new TypeError(`${o.model} is not a BERT or ALBERT checkpoint (fromPretrained gave a ${loaded.constructor.name})`);
  }
  const model = loaded;
  if (tok.vocabSize > model.dims.vocab) {
    model.store.dispose();
    throw new RangeError(`${o.model}: the tokenizer has ${tok.vocabSize} tokens, the model's vocabulary ${model.dims.vocab}`);
  }
  const t0 = performance.now();
  let opt: AdamW | undefined;
  try {
    const all = makeReviews(o.reviews ?? 400, seed);
    const nTrain = Math.floor(all.length * 0.8);
    const train = all.slice(0, nTrain), evalSet = all.slice(nTrain);
    const accuracyBefore = await accuracy(model, tok, evalSet, padId);
    opt = new AdamW(model.store, { lr, weightDecay: 0.01 });
    const r = rng(seed + 1);
    const losses: { step: number; loss: number }[] = [];
    let sum = 0, count = 0;
    for (let step = 1; step <= steps; step++) {
      const picked = Array.from({ length: batch }, () => train[Math.floor(r() * train.length)]);
      const b = batchOf(tok, picked, padId, model.dims.maxSeq);
      opt.zeroGrad();
      const loss = model.classificationLoss(b.ids, b.labels, { keyLengths: b.lengths });
      loss.backward();
      opt.step(warmupLinear(step, { lr, warmup: Math.max(1, Math.floor(steps / 10)), total: steps }));
      sum += await loss.item();
      count++;
      for (const x of [loss, b.ids, b.labels]) x.dispose();
      releaseTape();
      if (step % 10 === 0 || step === steps) {
        losses.push({ step, loss: sum / count });
        o.onProgress?.(step, sum / count);
        sum = count = 0;
      }
    }
    return {
      architecture: model.dims.factorizedEmbedding !== undefined ? 'ALBERT' : 'BERT',
      train: train.length, eval: evalSet.length, accuracyBefore,
      accuracyAfter: await accuracy(model, tok, evalSet, padId),
      trainAccuracyAfter: await accuracy(model, tok, train, padId),
      losses, seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    opt?.dispose();
    model.store.dispose();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: { model: { type: 'string' }, steps: { type: 'string' }, batch: { type: 'string' }, lr: { type: 'string' }, seed: { type: 'string' }, json: { type: 'boolean' } },
  });
  if (!values.model) {
    console.error('usage: node --import tsx examples/finetune-classifier.ts --model DIR [--steps 300] [--batch 16] [--lr 2e-3] [--seed 1] [--json]\n' +
      '  DIR: a BERT / ALBERT folder with tokenizer.json (the repository has a tiny one: test/fixtures/hf/bert-mlm)');
    process.exit(2);
  }
  const num = (v: string | undefined, name: string) => {
    if (v === undefined) return undefined;
    const x = Number(v);
    if (!Number.isFinite(x)) throw new TypeError(`--${name} must be a number, got ${JSON.stringify(v)}`);
    return x;
  };
  const res = await finetune({
    model: values.model, steps: num(values.steps, 'steps'), batch: num(values.batch, 'batch'), lr: num(values.lr, 'lr'), seed: num(values.seed, 'seed'),
    onProgress: values.json ? undefined : (step, loss) => console.log(`step ${String(step).padStart(4)}  loss ${loss.toFixed(4)}`),
  });
  if (values.json) console.log(JSON.stringify(res));
  else
    console.log(`${res.architecture}: ${res.train} training reviews, ${res.eval} held out; eval accuracy ${(100 * res.accuracyBefore).toFixed(1)}% before, ` +
      `${(100 * res.accuracyAfter).toFixed(1)}% after (train ${(100 * res.trainAccuracyAfter).toFixed(1)}%), ${res.seconds.toFixed(1)} s`);
}
