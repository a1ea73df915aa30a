// examples/finetune-classifier.ts (issue 18, point 6): a BERT checkpoint (the repository's tiny random one,
// test/fixtures/hf/bert-mlm, with its tokenizer.json) loaded with a fresh classification head, fine-tuned on the
// example's made-up reviews, classifies the held-out ones far better than chance; and the data set is what it says.
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { SubwordTokenizer } from '../lib/index.ts';
import { WORDS, finetune, makeReviews } from '../examples/finetune-classifier.ts';

const model = fileURLToPath(new URL('./fixtures/hf/bert-mlm/', import.meta.url));

test('the made-up reviews: distinct, deterministic, labelled by polarity flipped by "not", and fully in the tokenizer\'s vocabulary', (t) => {
  const a = makeReviews(400, 1), b = makeReviews(400, 1);
  t.deepEqual(a, b);
  t.is(new Set(a.map((x) => x.text)).size, 400);
  for (const { text, label } of a) {
    const words = text.split(' ');
    const positive = words.some((w) => WORDS.positive.includes(w)), negated = words.includes('not');
    t.is(label, positive !== negated ? 1 : 0, text);
  }
  const share = a.filter((x) => x.label === 1).length / a.length;
  t.true(share > 0.35 && share < 0.65, `positive share ${share}`);
  const tok = SubwordTokenizer.fromFile(`${model}/tokenizer.json`);
  const unk = tok.tokenToId('[UNK]');
  for (const { text } of a) t.false(Array.from(tok.encode(text)).includes(unk!), text);
  t.throws(() => makeReviews(10_000, 1), { message: /only \d+ distinct reviews, asked for 10000/ });
});

test('fine-tuning the tiny BERT checkpoint classifies the held-out reviews well above chance', async (t) => {
  const r = await finetune({ model, seed: 1 });
  t.log(`${r.architecture}: eval accuracy ${r.accuracyBefore.toFixed(3)} -> ${r.accuracyAfter.toFixed(3)} (train ${r.trainAccuracyAfter.toFixed(3)}), ${r.seconds.toFixed(1)} s; losses ${r.losses.map((x) => x.loss.toFixed(3)).join(' ')}`);
  t.is(r.architecture, 'BERT');
  t.is(r.train + r.eval, 400);
  t.true(r.losses.at(-1)!.loss < r.losses[0].loss, 'the loss went down');
  t.true(r.accuracyAfter >= 0.85, `held-out accuracy ${r.accuracyAfter}`);
});
