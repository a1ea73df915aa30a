// load-checkpoint.ts — in a plain process (no MPI): loads a checkpoint written by train-worker.ts (the one left by a
// distributed run whose rank was killed) with Decoder.load, and resumes a Trainer from it; prints
// `RESULT {step, numel, finite}`. Run by `node --import tsx test/distributed/load-checkpoint.ts FILE`.
import { Decoder } from '../../lib/models/decoder.ts';
import { CharTokenizer, TokenDataset } from '../../lib/data/index.ts';
import { Trainer } from '../../lib/train/trainer.ts';

const path = process.argv[2];
const model = Decoder.load(path);
const values = model.store.values.dataSync() as Float32Array;
const finite = values.every(Number.isFinite);
const text = 'the cat sat on the mat. the dog sat on the log. a cat and a dog sat on a mat and a log. '.repeat(40);
const tok = CharTokenizer.fromText(text);
const data = new TokenDataset(tok.encode(text), tok.vocabSize);
const trainer = new Trainer(model, data, { steps: 200, lr: 1e-2, batchSize: 2, seqLen: 16 });
trainer.resume(path);
console.log(`RESULT ${JSON.stringify({ step: trainer.step, numel: model.store.numel, finite })}`);
trainer.dispose();
