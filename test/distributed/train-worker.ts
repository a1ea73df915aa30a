// train-worker.ts — one rank of the distributed tests (test/distributed.test.ts): trains a tiny decoder with the
// Trainer and writes, from rank 0, the per-step losses and the final parameters (and the moments) to --out.
// Run by `mpirun -np N node --import tsx test/distributed/train-worker.ts --out FILE [options]`, or without mpirun
// (one process; --single) as the reference.
//   --share all|none   --zero 0|1   --accumulate K   --steps S   --single (no distributed option)
//   --ckpt FILE --ckpt-every N (checkpoint)   --resume FILE   --clip X   --die-rank R --die-step S (SIGKILL itself)
//   --overlap (distributed: { overlap: true })   --lr X (default 1e-2)   --stop-at S (leave the loop after step S, the schedule still that of --steps; then the
//   checkpoint --ckpt is written at step S: the first half of an interrupted run)
import { writeFileSync } from 'node:fs';
import { Decoder } from '../../lib/models/decoder.ts';
import { CharTokenizer, TokenDataset } from '../../lib/data/index.ts';
import { Trainer } from '../../lib/train/trainer.ts';
import * as dist from '../../lib/distributed/index.ts';

const args = process.argv.slice(2);
const opt = (name: string, def?: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const flag = (name: string) => args.includes(`--${name}`);

const text = 'the cat sat on the mat. the dog sat on the log. a cat and a dog sat on a mat and a log. '.repeat(40);
const tok = CharTokenizer.fromText(text);
const data = new TokenDataset(tok.encode(text), tok.vocabSize);
const share = opt('share', 'all') as 'all' | 'none';
const model = new Decoder({ vocab: tok.vocabSize, dModel: 32, heads: 4, dFF: 64, layers: 4, maxSeq: 16, sharing: { strategy: share }, seed: 3 });
const single = flag('single');
const zero = Number(opt('zero', '0')) as 0 | 1;
const ckpt = opt('ckpt');
const trainer = new Trainer(model, data, {
  steps: Number(opt('steps', '4')),
  batchSize: 2,
  seqLen: 16,
  lr: Number(opt('lr', '1e-2')),
  warmup: 1,
  accumulate: Number(opt('accumulate', '1')),
  clip: Number(opt('clip', '1')),
  seed: 11,
  ...(single ? {} : { distributed: flag('overlap') ? { zero, overlap: true } : { zero } }),
  ...(ckpt ? { checkpoint: { path: ckpt, every: Number(opt('ckpt-every', '1000')) } } : {}),
});
const resume = opt('resume');
if (resume) trainer.resume(resume);
const rank = single ? 0 : dist.info()!.rank;
const dieRank = Number(opt('die-rank', '-1')), dieStep = Number(opt('die-step', '-1'));
const stopAt = Number(opt('stop-at', '-1'));
const losses: number[] = [];
const comm: unknown[] = [];
for await (const s of trainer.steps()) {
  losses.push(s.loss);
  if (s.comm) comm.push(s.comm);
  if (rank === dieRank && s.step === dieStep) process.kill(process.pid, 'SIGKILL');
  if (s.step === stopAt) break;
}
if (ckpt) await trainer.save(ckpt);
const values = Array.from(await model.store.values.data());
if (rank === 0) {
  const out = opt('out');
  if (out) writeFileSync(out, JSON.stringify({ losses, values, step: trainer.step, numel: model.store.numel, world: single ? 1 : dist.info()!.worldSize, comm, plan: trainer.commPlan }));
}
trainer.dispose();
