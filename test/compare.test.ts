// `sharedformer compare` and the loss-curve plot: the table, compare.json and loss.svg of a few strategies at equal
// steps; parameter counts checked against the closed form of the plans; the unshared run identical to what `train`
// gives for the same settings; --json lines; Ctrl-C (an aborted signal) leaving partial results; bad input.
import anyTest from 'ava';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { parseStrategyList, UsageError, type CompareRow } from '../lib/cli/index.ts';
import { lossCurveSvg, niceTicks, bucketMeans, movingAverage, xmlEscape } from '../lib/plot.ts';
import { run, jsonLines } from './helpers/cli.ts';

const test = anyTest.serial;
const dir = mkdtempSync(join(tmpdir(), 'sf-compare-'));
anyTest.after.always(() => rmSync(dir, { recursive: true, force: true }));

const TINY = ['--corpus-chars', '20000', '--d-model', '16', '--heads', '2', '--d-ff', '32', '--layers', '4', '--max-seq', '16', '--batch', '4', '--eval-batches', '2', '--quiet'];
interface Report {
  partial: boolean;
  rows: CompareRow[];
  train: { steps: number };
  model: { layers: number };
}
const readReport = (out: string) => JSON.parse(readFileSync(join(out, 'compare.json'), 'utf8')) as Report;

/** Every element opened is closed, in order (a well-formedness check of the generated SVG; no attributes contain '<'). */
function checkBalanced(svg: string): string | undefined {
  const stack: string[] = [];
  for (const m of svg.matchAll(/<(\/?)([a-zA-Z]+)[^>]*?(\/?)>/g)) {
    const [, close, name, self] = m;
    if (self) continue;
    if (!close) stack.push(name);
    else if (stack.pop() !== name) return `</${name}> does not close the open element`;
  }
  return stack.length ? `unclosed: ${stack.join(', ')}` : undefined;
}
const points = (attr: string) => attr.trim().split(/\s+/).map((p) => p.split(',').map(Number) as [number, number]);

test('compare trains every strategy at equal steps and writes the table, compare.json and loss.svg', async (t) => {
  const out = join(dir, 'three');
  const r = await run(['compare', ...TINY, '--steps', '8', '--eval-every', '4', '--strategies', 'none,all,cycle-rev:2', '--out', out]);
  t.is(r.code, 0, r.err);
  const table = r.out.slice(r.out.indexOf('comparison (8 steps each'));
  t.regex(table, /strategy +unique params +bytes +vs none +val loss +bits\/char +tokens\/s/);
  for (const name of ['none', 'all', 'cycle-rev:2']) t.regex(table, new RegExp(`\\n  ${name} +[\\d,]+ +[\\d,]+ +\\d+% +\\d\\.\\d{4} +\\d\\.\\d{3} +[\\d,]+`));
  t.regex(r.out, /wrote .*compare\.json/);

  const rep = readReport(out);
  t.false(rep.partial);
  t.deepEqual(rep.rows.map((x) => x.name), ['none', 'all', 'cycle-rev:2']);
  for (const row of rep.rows) {
    t.is(row.steps, 8);
    t.deepEqual(row.curve.train.map(([s]) => s), [1, 2, 3, 4, 5, 6, 7, 8]);
    t.deepEqual(row.curve.val.map(([s]) => s), [4, 8]);
    t.is(row.valLoss, row.curve.val[1][1], 'the final validation point is the reported loss');
    t.true(Math.abs(row.bpc - row.valLoss / Math.LN2) < 1e-12);
    t.is(row.parameterBytes, 4 * row.uniqueParameters);
    t.true(Number.isFinite(row.trainLoss!) && row.tokensPerSec > 0);
  }
  // Closed form: with b parameters per block and e outside the blocks, none = e + 4b, all = e + b, cycle-rev over 4
  // layers with 2 unique blocks = e + 2b.
  const [none, all, cr] = rep.rows.map((x) => x.uniqueParameters);
  const b = (none - all) / 3;
  t.true(Number.isInteger(b) && b > 0);
  t.is(none - cr, 2 * b);

  const svg = readFileSync(join(out, 'loss.svg'), 'utf8');
  t.true(svg.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"'));
  t.is(checkBalanced(svg), undefined);
  const [, W, H] = /viewBox="0 0 (\d+) (\d+)"/.exec(svg)!.map(Number);
  for (const name of ['none', 'all', 'cycle-rev:2']) {
    t.is(svg.match(new RegExp(`<polyline class="train" data-series="${name}"`, 'g'))?.length, 1, `${name} train curve`);
    t.is(svg.match(new RegExp(`<polyline class="val" data-series="${name}"`, 'g'))?.length, 1, `${name} validation curve`);
    t.is(svg.match(new RegExp(`<circle class="val" data-series="${name}"`, 'g'))?.length, 2, `${name} validation markers`);
    t.true(svg.includes(`>${name}</text>`), `${name} in the legend`);
  }
  for (const m of svg.matchAll(/<polyline class="val"[^>]*points="([^"]+)"/g))
    for (const [x, y] of points(m[1])) t.true(x >= 0 && x <= W && y >= 0 && y <= H, `validation point ${x},${y} inside ${W}x${H}`);
});

test('the unshared run of compare is exactly what train gives for the same settings', async (t) => {
  const out = join(dir, 'same');
  const c = await run(['compare', ...TINY, '--steps', '6', '--eval-every', '3', '--strategies', 'none', '--out', out, '--json']);
  t.is(c.code, 0, c.err);
  const tr = await run(['train', '--corpus', 'default', ...TINY, '--steps', '6', '--eval-every', '3', '--strategy', 'none', '--out', join(dir, 'same.safetensors'), '--json']);
  t.is(tr.code, 0, tr.err);
  const done = jsonLines(tr.out).find((l) => l.type === 'train')!;
  const row = readReport(out).rows[0];
  t.is(row.valLoss, done.valLoss as number);
  t.is(row.trainLoss, done.loss as number);
});

test('compare --json prints start, one result per strategy and the file names', async (t) => {
  const out = join(dir, 'json');
  const r = await run(['compare', ...TINY, '--steps', '3', '--strategies', 'all,delta:2', '--out', out, '--json']);
  t.is(r.code, 0, r.err);
  const lines = jsonLines(r.out);
  t.deepEqual(lines.map((l) => l.type), ['start', 'result', 'result', 'compare']);
  t.deepEqual(lines[0].strategies, ['all', 'delta:2']);
  t.deepEqual(lines.slice(1, 3).map((l) => l.name), ['all', 'delta:2']);
  t.is(lines[3].json, join(out, 'compare.json'));
  t.is(lines[3].plot, join(out, 'loss.svg'));
  t.true(existsSync(join(out, 'loss.svg')));
});

test('an aborted signal (Ctrl-C) stops compare with exit 130 and leaves the finished runs in compare.json', async (t) => {
  const out = join(dir, 'abort');
  const ac = new AbortController();
  const r = await run(['compare', ...TINY, '--steps', '4', '--strategies', 'none,all,sandwich', '--out', out, '--json'], ac.signal, (s) => {
    if (s.includes('"type":"result"')) ac.abort();
  });
  t.is(r.code, 130, r.err);
  const rep = readReport(out);
  t.true(rep.partial);
  t.deepEqual(rep.rows.map((x) => x.name), ['none']);
  t.is(jsonLines(r.out).at(-1)!.type, 'interrupted');
});

test('parseStrategyList reads names with their unique-block count or rank', (t) => {
  t.deepEqual(parseStrategyList('none,all,cycle:2,cycle-rev:3,sequence:1,basis:8,delta:4,attention,ffn,sandwich', 6), [
    { name: 'none', sharing: { strategy: 'none' } },
    { name: 'all', sharing: { strategy: 'all' } },
    { name: 'cycle:2', sharing: { strategy: 'cycle', unique: 2 } },
    { name: 'cycle-rev:3', sharing: { strategy: 'cycle-rev', unique: 3 } },
    { name: 'sequence:1', sharing: { strategy: 'sequence', unique: 1 } },
    { name: 'basis:8', sharing: { strategy: 'basis', rank: 8 } },
    { name: 'delta:4', sharing: { strategy: 'delta', rank: 4 } },
    { name: 'attention', sharing: { strategy: 'attention' } },
    { name: 'ffn', sharing: { strategy: 'ffn' } },
    { name: 'sandwich', sharing: { strategy: 'sandwich' } },
  ]);
  t.throws(() => parseStrategyList('cycle', 6), { instanceOf: UsageError, message: /'cycle' needs the number of unique blocks, e\.g\. cycle:3/ });
});

const usageErrors: [string, string[], RegExp][] = [
  ['an unknown strategy', ['--strategies', 'none,most'], /--strategies: unknown entry 'most'; use none, all, attention/],
  ['custom (needs a table)', ['--strategies', 'custom'], /unknown entry 'custom'/],
  ['a missing unique count', ['--strategies', 'none,cycle-rev'], /'cycle-rev' needs the number of unique blocks, e\.g\. cycle-rev:2/],
  ['a missing rank', ['--strategies', 'basis'], /'basis' needs a rank, e\.g\. basis:8/],
  ['a number where none is taken', ['--strategies', 'all:2'], /'all:2': all takes no number/],
  ['unique above the layer count', ['--strategies', 'cycle:5'], /'cycle:5': unique blocks must be in \[1, 4\] \(--layers 4\)/],
  ['unique 0', ['--strategies', 'cycle:0'], /unique blocks must be in \[1, 4\]/],
  ['rank 0', ['--strategies', 'delta:0'], /the rank must be >= 1/],
  ['a duplicate', ['--strategies', 'none,all,none'], /'none' is listed twice/],
  ['an empty entry', ['--strategies', 'none,,all'], /has an empty entry in 'none,,all'/],
  ['a malformed entry', ['--strategies', 'cycle:two'], /unknown entry 'cycle:two'/],
  ['--strategy (train\'s flag)', ['--strategy', 'all'], /unknown flag --strategy \(did you mean --strategies\?\)/],
  ['--unique', ['--unique', '2'], /unknown flag --unique/],
  ['an invalid model', ['--d-model', '30', '--heads', '4'], /invalid model configuration: .*multiple of heads/],
  ['a rank the model cannot take', ['--strategies', 'delta:64'], /invalid model configuration: sharing: /],
  ['a sequence longer than the context', ['--seq', '64'], /invalid training configuration: seqLen 64 exceeds/],
  ['zero steps', ['--steps', '0'], /--steps must be >= 1/],
  ['two data sources', ['--data', 'x.txt', '--corpus', 'default'], /either --data FILE or --corpus default/],
];
for (const [what, argv, msg] of usageErrors)
  test(`compare usage error, exit 2: ${what}`, async (t) => {
    const out = join(dir, 'never');
    const r = await run(['compare', ...TINY, ...argv, '--out', out]);
    t.is(r.code, 2, r.err);
    t.regex(r.err, msg);
    t.regex(r.err, /^sharedformer compare: .*\(see: sharedformer help compare\)\n$/);
    t.is(r.out, '');
    t.false(existsSync(out), 'nothing is written before the settings are checked');
  });

test('compare runtime errors exit 1 with one line: unreadable data, --out that is a file, a config with sharing', async (t) => {
  const file = join(dir, 'a-file');
  writeFileSync(file, 'x');
  const sharingCfg = join(dir, 'sharing.json');
  writeFileSync(sharingCfg, JSON.stringify({ sharing: { strategy: 'all' } }));
  const cases: [string[], number, RegExp][] = [
    [['--data', join(dir, 'missing.txt')], 1, /cannot read --data .*missing\.txt: no such file/],
    [['--out', file], 1, /cannot write --out .*a-file: it exists and is not a folder/],
    [['--config', sharingCfg], 2, /--config: 'sharing' does not apply to compare/],
    [['--config', join(dir, 'nope.json')], 1, /cannot read --config/],
  ];
  for (const [argv, code, msg] of cases) {
    const r = await run(['compare', ...TINY, '--steps', '2', ...argv]);
    t.is(r.code, code, `${argv.join(' ')}: ${r.err}`);
    t.regex(r.err, msg);
    t.is(r.err.trimEnd().split('\n').length, 1);
    t.is(r.out, '');
  }
});

test('lossCurveSvg: ticks, averaging, escaping, and refusing an empty plot', (t) => {
  t.deepEqual(niceTicks(0, 1000, 5), [0, 200, 400, 600, 800, 1000]);
  t.deepEqual(niceTicks(1.83, 2.41, 6), [1.9, 2, 2.1, 2.2, 2.3, 2.4]);
  t.deepEqual(niceTicks(2, 2), [2]);
  t.deepEqual(movingAverage([[1, 1], [2, 3], [3, 5], [4, 7]], 2), [[1, 1], [2, 2], [3, 4], [4, 6]]);
  t.deepEqual(bucketMeans([[1, 1], [2, 3], [3, 5], [4, 7]], 2), [[2, 2], [4, 6]]);
  t.deepEqual(bucketMeans([[1, 1], [2, NaN], [3, 5]], 5), [[1, 1], [3, 5]], 'non-finite points are left out');
  t.is(xmlEscape(`a<b & "c" 'd'>`), 'a&lt;b &amp; &quot;c&quot; &#39;d&#39;&gt;');
  const svg = lossCurveSvg([{ name: 'x<y&z', train: [[1, 3], [2, 2.5], [3, NaN], [4, 2]], val: [[2, 2.6], [4, 2.1]] }], { title: 'T & U' });
  t.is(checkBalanced(svg), undefined);
  t.true(svg.includes('>x&lt;y&amp;z</text>') && svg.includes('T &amp; U'));
  t.false(svg.includes('NaN'));
  t.throws(() => lossCurveSvg([{ name: 'a', train: [[1, NaN]] }]), { instanceOf: TypeError, message: /no finite \(step, loss\) point/ });
  t.throws(() => lossCurveSvg([], { width: 10 }), { instanceOf: RangeError, message: /width and height/ });
});
