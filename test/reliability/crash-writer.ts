// crash-writer.ts — saves checkpoints in a loop until it is killed (test/reliability/crash-safe.test.ts SIGKILLs it).
//   node --import tsx crash-writer.ts raw PATH     saveSafetensors of ~4 MB whose content is a function of a generation
//   node --import tsx crash-writer.ts trainer PATH a Trainer that checkpoints after every step
// Before each save it prints `{"saving": g, "digest": d}` and after it `{"saved": g}`; it starts from the generation in
// the file already there (so a file left by a killed writer is loaded first).
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { CharTokenizer, Decoder, TokenDataset, Trainer, loadSafetensors, saveSafetensors, type SafeTensor } from '../../lib/index.ts';
import { tensorsDigest } from '../../lib/io/checkpoint.ts';
import { writeLine } from './child.ts';

const [mode, path] = process.argv.slice(2);
const say = (o: object) => writeLine(JSON.stringify(o));

/** The tensors of generation g: every value a function of (g, index), so a reader can recompute them. */
export function rawTensors(g: number): Map<string, SafeTensor> {
  const a = new Float32Array(900_000), b = new Int32Array(100_000), c = new Uint16Array(50_001);
  for (let i = 0; i < a.length; i++) a[i] = g + i * 1e-3;
  for (let i = 0; i < b.length; i++) b[i] = (g * 7919 + i) | 0;
  for (let i = 0; i < c.length; i++) c[i] = (g + i) & 0xffff;
  return new Map<string, SafeTensor>([
    ['weights', { dtype: 'F32', shape: [900, 1000], data: a }],
    ['ids', { dtype: 'I32', shape: [100_000], data: b }],
    ['half', { dtype: 'BF16', shape: [50_001], data: c }],
  ]);
}

if (mode === 'raw') {
  let g = existsSync(path) ? Number(loadSafetensors(path).metadata.generation) + 1 : 1;
  for (;; g++) {
    const t = rawTensors(g);
    say({ saving: g, digest: tensorsDigest(t) });
    saveSafetensors(path, t, { generation: String(g) });
    say({ saved: g });
  }
} else if (mode === 'trainer') {
  const text = 'checkpoints must survive a kill at any moment, the previous one intact. '.repeat(40);
  const tok = CharTokenizer.fromText(text);
  const data = new TokenDataset(tok.encode(text), tok.vocabSize);
  const model = new Decoder({ vocab: tok.vocabSize, dModel: 64, heads: 4, dFF: 256, layers: 4, maxSeq: 32, seed: 3 });
  const trainer = new Trainer(model, data, { steps: 1_000_000, batchSize: 2, seqLen: 16, lr: 1e-3 });
  if (existsSync(path)) trainer.resume(path);
  const digest = () => {
    const v = model.store.values.dataSync() as Float32Array;
    return createHash('sha256').update(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)).digest('hex');
  };
  for await (const s of trainer.steps()) {
    say({ saving: s.step, digest: digest() });
    await trainer.save(path); // written without blocking: a kill at any moment must leave a whole file
    say({ saved: s.step });
  }
} else {
  throw new Error(`crash-writer: unknown mode ${mode}`);
}
