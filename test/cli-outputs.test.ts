// The training outputs of `sharedformer train` (issue 15, point 11), through main() on a tiny model and a small file:
// the per-step losses in --json, the JSON-lines log next to the checkpoint (written as training goes, appended on
// resuming), the loss-curve SVG, rotation of periodic checkpoints (--keep), the best checkpoint (--keep-best), early
// stopping (--patience), and the checks of the new flags.
import anyTest from 'ava';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { run, jsonLines } from './helpers/cli.ts';
import { loadSafetensors } from '../lib/io/safetensors.ts';

const test = anyTest.serial;
const dir = mkdtempSync(join(tmpdir(), 'sf-cli-out-'));
anyTest.after.always(() => rmSync(dir, { recursive: true, force: true }));

const sentences = ['the cat sat on the mat. ', 'a dog ran to the log.\n', 'the old fisherman carried three red boxes. ', 'two birds sang. '];
const textFile = join(dir, 'small.txt');
writeFileSync(textFile, Array.from({ length: 200 }, (_, i) => sentences[(i * 7 + (i >> 3)) % 4]).join(''));
const TINY = ['--data', textFile, '--d-model', '16', '--heads', '2', '--d-ff', '32', '--layers', '2', '--max-seq', '16', '--batch', '4', '--quiet'];

const trainerStep = (path: string) => (JSON.parse(loadSafetensors(path).metadata.trainer) as { step: number }).step;
const logOf = (path: string) => readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);

test('--json reports the loss, learning rate and time of every step', async (t) => {
  const out = join(dir, 'json.safetensors');
  const r = await run(['train', ...TINY, '--steps', '6', '--out', out, '--json']);
  t.is(r.code, 0, r.err);
  const done = jsonLines(r.out).at(-1)!;
  t.is(done.type, 'train');
  const losses = done.losses as { step: number; loss: number; lr: number; ms: number }[];
  t.deepEqual(losses.map((l) => l.step), [1, 2, 3, 4, 5, 6]);
  for (const l of losses) {
    t.deepEqual(Object.keys(l).sort(), ['loss', 'lr', 'ms', 'step']);
    t.true(Number.isFinite(l.loss) && l.loss > 0, `loss ${l.loss}`);
    t.true(l.lr > 0 && l.ms >= 0);
  }
  t.is(losses.at(-1)!.loss, done.loss as number, 'the last step\'s loss is the summary\'s');
  t.is(done.log, join(dir, 'json.log.jsonl'));
  t.is(done.plot, join(dir, 'json.loss.svg'));
  t.is(done.earlyStop, null);
});

test('the JSON-lines log next to the checkpoint is written as training goes and appended to on resuming', async (t) => {
  const out = join(dir, 'logged.safetensors'), log = join(dir, 'logged.log.jsonl');
  const seen: number[] = [];
  const r = await run(['train', ...TINY, '--steps', '6', '--eval-every', '3', '--out', out, '--json'], undefined, (s) => {
    for (const l of s.trim().split('\n')) {
      const o = JSON.parse(l) as { type: string; step: number };
      if (o.type !== 'eval') continue;
      // when train reports an evaluation, the log already holds every step up to it, and that evaluation
      const recs = logOf(log);
      t.deepEqual(recs.filter((x) => x.type === 'step').map((x) => x.step), Array.from({ length: o.step }, (_, i) => i + 1));
      t.like(recs.at(-1), { type: 'eval', step: o.step });
      seen.push(o.step);
    }
  });
  t.is(r.code, 0, r.err);
  t.deepEqual(seen, [3, 6]);
  const first = logOf(log);
  t.like(first[0], { type: 'start', step: 0, steps: 6, resumed: false });
  const steps = first.filter((x) => x.type === 'step');
  t.deepEqual(steps.map((x) => x.step), [1, 2, 3, 4, 5, 6]);
  for (const s of steps) for (const k of ['loss', 'lr', 'ms', 'elapsedMs']) t.is(typeof s[k], 'number', `${k} of step ${s.step}`);
  const evals = first.filter((x) => x.type === 'eval');
  t.deepEqual(evals.map((x) => x.step), [3, 6]);
  for (const e of evals) t.true(typeof e.valLoss === 'number' && typeof e.bpc === 'number' && typeof e.elapsedMs === 'number');
  const json = jsonLines(r.out);
  t.deepEqual(evals.map((e) => e.valLoss), json.filter((l) => l.type === 'eval').map((l) => l.loss));
  t.deepEqual(steps.map((s) => s.loss), (json.at(-1)!.losses as { loss: number }[]).map((l) => l.loss));
  t.like(first.at(-1), { type: 'end', step: 6, reason: 'done' });

  const again = await run(['train', '--resume', out, '--steps', '9', '--out', out, '--quiet']);
  t.is(again.code, 0, again.err);
  const both = logOf(log);
  t.deepEqual(both.slice(0, first.length), first, 'the first session\'s records stay');
  const more = both.slice(first.length);
  t.like(more[0], { type: 'start', step: 6, steps: 9, resumed: true });
  t.deepEqual(more.filter((x) => x.type === 'step').map((x) => x.step), [7, 8, 9]);
  // resumed into another checkpoint: its log starts as a copy of the one it resumed from
  const other = join(dir, 'other.safetensors');
  t.is((await run(['train', '--resume', out, '--steps', '10', '--out', other, '--quiet'])).code, 0);
  const copied = logOf(join(dir, 'other.log.jsonl'));
  t.deepEqual(copied.slice(0, both.length), both);
  t.deepEqual(copied.slice(both.length).filter((x) => x.type === 'step').map((x) => x.step), [10]);
  // a new run (no --resume) starts a new log
  t.is((await run(['train', ...TINY, '--steps', '2', '--out', out, '--quiet'])).code, 0);
  t.deepEqual(logOf(log).filter((x) => x.type === 'step').map((x) => x.step), [1, 2]);
});

test('train writes the loss-curve SVG that compare writes, next to the checkpoint', async (t) => {
  const out = join(dir, 'curve.safetensors');
  const r = await run(['train', ...TINY, '--steps', '8', '--eval-every', '4', '--out', out]);
  t.is(r.code, 0, r.err);
  t.regex(r.out, /curve\.log\.jsonl \(log\), .*curve\.loss\.svg \(loss curve\)/);
  const svg = readFileSync(join(dir, 'curve.loss.svg'), 'utf8');
  t.true(svg.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"'));
  t.is(svg.match(/<polyline class="train" data-series="curve"/g)?.length, 1, 'the training curve');
  t.is(svg.match(/<polyline class="val" data-series="curve"/g)?.length, 1, 'the validation curve');
  t.is(svg.match(/<circle class="val" data-series="curve"/g)?.length, 2, 'a marker per evaluation');
  t.true(svg.includes('sharedformer train'));
  // resumed: the curve holds the earlier steps too (from the log)
  t.is((await run(['train', '--resume', out, '--steps', '12', '--out', out, '--quiet'])).code, 0);
  const resumed = readFileSync(join(dir, 'curve.loss.svg'), 'utf8');
  t.is(resumed.match(/<circle class="val" data-series="curve"/g)?.length, 3, 'evaluations at 4, 8 and 12');
});

test('--keep N keeps the newest N periodic checkpoints; --keep-best keeps the best by validation loss', async (t) => {
  const out = join(dir, 'rot.safetensors');
  const r = await run(['train', ...TINY, '--steps', '10', '--checkpoint-every', '2', '--keep', '2', '--eval-every', '2', '--keep-best', '--out', out, '--json']);
  t.is(r.code, 0, r.err);
  const kept = readdirSync(dir).filter((n) => n.startsWith('rot.step-')).sort();
  t.deepEqual(kept, ['rot.step-000006.safetensors', 'rot.step-000008.safetensors'], 'the two newest of steps 2, 4, 6, 8');
  t.is(trainerStep(join(dir, kept[0])), 6);
  t.is(trainerStep(join(dir, kept[1])), 8);
  t.is(trainerStep(out), 10, 'the checkpoint itself is the final one');
  const lines = jsonLines(r.out);
  const evals = lines.filter((l) => l.type === 'eval') as { step: number; loss: number }[];
  t.deepEqual(evals.map((e) => e.step), [2, 4, 6, 8, 10]);
  const best = evals.reduce((a, b) => (b.loss < a.loss ? b : a));
  const bestFile = join(dir, 'rot.best.safetensors');
  t.is(trainerStep(bestFile), best.step);
  const md = loadSafetensors(bestFile).metadata;
  t.is(Number(md.bestValLoss), best.loss);
  t.is(Number(md.bestStep), best.step);
  t.truthy(md.tokenizer, 'a checkpoint like any other: eval and generate read it');
  t.is((await run(['eval', '--model', bestFile, '--batches', '2'])).code, 0);
  t.like(lines.at(-1), { type: 'train', best: bestFile });
  t.false(readdirSync(dir).some((n) => n.includes('.tmp')), 'no temporary files left');
  // without --keep the periodic checkpoints overwrite OUT only
  const plain = join(dir, 'plain.safetensors');
  t.is((await run(['train', ...TINY, '--steps', '4', '--checkpoint-every', '2', '--out', plain])).code, 0);
  t.false(readdirSync(dir).some((n) => n.startsWith('plain.step-') || n.startsWith('plain.best')));
});

test('--patience stops when the validation loss stops improving, says why, and still writes the checkpoint', async (t) => {
  // a learning rate too small to change a float32 parameter: every evaluation gives the same loss
  const out = join(dir, 'patient.safetensors');
  const args = ['train', ...TINY, '--steps', '20', '--eval-every', '2', '--patience', '2', '--lr', '1e-30', '--out', out];
  const r = await run(args);
  t.is(r.code, 0, r.err);
  t.regex(r.out, /stopped +early at step 6 of 20: the validation loss has not improved for 2 evaluations \(best \d+\.\d{4} at step 2\) \(--patience 2\)/);
  t.regex(r.out, /^done +6 steps/m);
  t.is(trainerStep(out), 6, 'the final checkpoint is written at the step it stopped');
  const j = await run([...args, '--json']);
  t.is(j.code, 0, j.err);
  const done = jsonLines(j.out).at(-1)!;
  t.like(done, { type: 'train', step: 6, steps: 6, earlyStop: { patience: 2, bestStep: 2 } });
  t.is((done.losses as unknown[]).length, 6);
  t.like(logOf(join(dir, 'patient.log.jsonl')).at(-1), { type: 'end', step: 6, reason: 'early stop' });
  // improving runs are not stopped
  const fine = await run(['train', ...TINY, '--steps', '8', '--eval-every', '2', '--patience', '3', '--out', out, '--json']);
  t.is(fine.code, 0, fine.err);
  t.like(jsonLines(fine.out).at(-1), { step: 8, earlyStop: null });
});

test('the new flags are checked: non-negative integers, and what they need', async (t) => {
  const out = join(dir, 'bad.safetensors');
  const cases: [string[], RegExp][] = [
    [['--keep', '0', '--checkpoint-every', '2'], /--keep must be >= 1, got 0/],
    [['--keep', 'two', '--checkpoint-every', '2'], /--keep expects a number, got 'two'/],
    [['--keep', '1.5', '--checkpoint-every', '2'], /--keep expects an integer, got '1\.5'/],
    [['--keep', '3'], /--keep 3 rotates the checkpoints that --checkpoint-every N writes; give --checkpoint-every too/],
    [['--patience', '0', '--eval-every', '2'], /--patience must be >= 1, got 0/],
    [['--patience', '-1', '--eval-every', '2'], /--patience must be >= 1, got -1/],
    [['--patience', '2', '--eval-every', '0'], /--patience 2 counts periodic evaluations, but --eval-every is 0/],
    [['--keep-best=maybe'], /--keep-best takes no value \(or =true \/ =false\), got 'maybe'/],
  ];
  for (const [flags, re] of cases) {
    const r = await run(['train', ...TINY, '--steps', '4', ...flags, '--out', out]);
    t.is(r.code, 2, `${flags.join(' ')}: ${r.err}`);
    t.regex(r.err, re);
    t.regex(r.err, /^sharedformer train: .*\(see: sharedformer help train\)\n$/);
  }
  t.false(existsSync(out), 'nothing written');
});
