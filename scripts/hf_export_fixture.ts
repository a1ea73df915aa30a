// Writes test/fixtures/hf/export-shared/: a seeded Decoder with sharing 'cycle' (2 unique blocks over 4 layers)
// saved by savePretrained (layers expanded). scripts/hf_fixtures.py then computes, with its own loader and GPT-2
// forward pass, the logits that test/hf.test.ts compares with the model's. Run: npx tsx scripts/hf_export_fixture.ts
import { fileURLToPath } from 'node:url';
import { Decoder } from '../lib/models/decoder.ts';
import { savePretrained } from '../lib/io/hf.ts';

export const EXPORT_CONFIG = { vocab: 31, dModel: 16, heads: 2, dFF: 40, layers: 4, maxSeq: 20, sharing: { strategy: 'cycle' as const, unique: 2 }, seed: 11 };

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const m = new Decoder(EXPORT_CONFIG);
  console.log(savePretrained(m, fileURLToPath(new URL('../test/fixtures/hf/export-shared/', import.meta.url))));
  m.store.dispose();
}
