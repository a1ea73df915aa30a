// train-job.ts — the small training job of the concurrency and determinism tests: a decoder whose initialisation and
// batches both follow `seed`, trained for `steps` steps with `threads` CPU threads; returns every loss and a digest of
// the final parameters, and what memory() says once everything is disposed.
import { createHash } from 'node:crypto';
import { CharTokenizer, Decoder, TokenDataset, Trainer, getNumThreads, memory, setNumThreads, synchronizeSync } from '../../lib/index.ts';
import { releaseTape } from '../../lib/autograd.ts';

const TEXT = 'one worker trains this model while the others train theirs and the server answers. '.repeat(30);

export interface JobResult {
  seed: number;
  threads: number;
  losses: number[];
  /** sha256 of the final parameter buffer's bytes. */
  params: string;
  /** Live tensors of this thread's addon instance after everything was disposed. */
  tensorsLeft: number;
}

export async function trainLosses(seed: number, steps: number, threads: number): Promise<JobResult> {
  setNumThreads(threads);
  const tok = CharTokenizer.fromText(TEXT);
  const data = new TokenDataset(tok.encode(TEXT), tok.vocabSize);
  const model = new Decoder({ vocab: tok.vocabSize, dModel: 32, heads: 4, dFF: 64, layers: 4, maxSeq: 32, sharing: { strategy: 'cycle', unique: 2 }, seed });
  const trainer = new Trainer(model, data, { steps, batchSize: 4, seqLen: 32, lr: 3e-3, warmup: 2, seed });
  const losses: number[] = [];
  trainer.on('step', (s: { loss: number }) => losses.push(s.loss));
  for await (const _ of trainer.steps());
  const values = model.store.values.dataSync() as Float32Array;
  const params = createHash('sha256').update(Buffer.from(values.buffer, values.byteOffset, values.byteLength)).digest('hex');
  const t = getNumThreads();
  trainer.dispose();
  model.io.clearCache();
  model.store.dispose();
  releaseTape();
  synchronizeSync();
  return { seed, threads: t, losses, params, tensorsLeft: memory().cpu.tensors };
}
