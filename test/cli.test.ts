// The `sharedformer` command line, through main() with captured output: every subcommand, train -> eval -> generate
// on a small file, resuming (bit-exact after an interruption), the demo, interruption by an AbortSignal, usage and
// runtime errors with their exit codes; plus one smoke test of bin/sharedformer.mjs as a child process.
import anyTest from 'ava';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { main, train, parseFlags, benchInvocation, usage, Progress, CliError, UsageError } from '../lib/cli/index.ts';
import { capture, run, jsonLines } from './helpers/cli.ts';
import { describeCorpus, generateCorpus } from '../lib/data/corpus.ts';
import { loadSafetensors } from '../lib/io/safetensors.ts';
import { backends } from '../lib/runtime.ts';
import { STRATEGIES } from '../lib/sharing/plan.ts';

const test = anyTest.serial;
const root = fileURLToPath(new URL('..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'sf-cli-'));
anyTest.after.always(() => rmSync(dir, { recursive: true, force: true }));

const sentences = ['the cat sat on the mat. ', 'a dog ran to the log.\n', 'the old fisherman carried three red boxes. ', 'two birds sang. '];
const textFile = join(dir, 'small.txt');
writeFileSync(textFile, Array.from({ length: 200 }, (_, i) => sentences[(i * 7 + (i >> 3)) % 4]).join(''));
const TINY = ['--d-model', '16', '--heads', '2', '--d-ff', '32', '--layers', '2', '--max-seq', '16', '--batch', '4', '--quiet'];

const trainerStep = (path: string) => (JSON.parse(loadSafetensors(path).metadata.trainer) as { step: number }).step;

// ----------------------------------------------------------------------------------------------------------------- corpus

test('the embedded corpus is deterministic, English-like and of the requested length', (t) => {
  const a = generateCorpus(20_000, 3);
  t.is(a.length, 20_000);
  t.is(generateCorpus(20_000, 3), a);
  t.not(generateCorpus(20_000, 4), a);
  t.true(generateCorpus(50_000, 3).startsWith(a.slice(0, 10_000)), 'a longer corpus extends a shorter one');
  const d = describeCorpus(100_000, 1);
  t.true(d.unigramBitsPerChar > 3.8 && d.unigramBitsPerChar < 4.8, `unigram ${d.unigramBitsPerChar}`);
  t.true(d.sourceBitsPerChar > 0.2 && d.sourceBitsPerChar < 1.5, `source ${d.sourceBitsPerChar}`);
  t.true(d.alphabet > 30 && d.alphabet < 70);
  const words = new Set(d.text.toLowerCase().match(/[a-z]+/g));
  t.true(words.size > 300, `${words.size} distinct words`);
  // agreement: numbers take plurals, "an" before vowels, was/were
  t.regex(d.text, /\b(two|three|four|five) [a-z ]*(es|s|ves|ren|ese|ice)\b/);
  t.regex(d.text, /\ban (old|empty|iron|orange|apple|umbrella|ugly|ancient)/);
  t.notRegex(d.text, /\ba (old|empty|iron|apple|umbrella|ugly|ancient)\b/);
  t.notRegex(d.text, /there was (two|three|four|five|six|many|some)\b/i);
  t.regex(d.text, /\n\n/);
  t.throws(() => generateCorpus(0), { instanceOf: RangeError });
  t.throws(() => generateCorpus(10, -1), { instanceOf: RangeError });
});

// ----------------------------------------------------------------------------------------------------------------- help, info

test('help, --help and no arguments print the usage of every command and flag', async (t) => {
  for (const argv of [[], ['help'], ['--help'], ['-h']]) {
    const r = await run(argv);
    t.is(r.code, 0);
    for (const cmd of ['demo', 'train', 'eval', 'generate', 'compare', 'info', 'bench', 'help']) t.true(r.out.includes(`  ${cmd} `), `${cmd} listed`);
    for (const flag of ['--seconds', '--data', '--corpus', '--config', '--vocab-from-data', '--d-model', '--kv-heads', '--kv-share', '--rank',
      '--device', '--min-lr', '--schedule', '--weight-decay', '--accumulate', '--eval-every', '--resume', '--checkpoint-every', '--batches',
      '--prompt', '--tokens', '--temperature', '--top-k', '--top-p', '--json'])
      t.true(r.out.includes(flag), `${flag} listed`);
    t.false(r.out.includes('--tiny'), 'test switches stay hidden');
  }
  const h = await run(['help', 'train']);
  t.is(h.code, 0);
  t.true(h.out.startsWith('sharedformer train'));
  t.true(h.out.includes('examples:'));
  t.is((await run(['train', '--help'])).out, h.out);
  t.is((await run(['bench', '--help'])).code, 0);
  t.regex((await run(['--version'])).out, /^\d+\.\d+\.\d+/);
  t.is(usage('generate').split('\n')[0], 'sharedformer generate --model FILE.safetensors --prompt TEXT [--tokens N] [sampling options]');
});

test('info --json reports version, build, CUDA, CPU threads and SIMD, and the addon path', async (t) => {
  const r = await run(['info', '--json']);
  t.is(r.code, 0, r.err);
  const [info] = jsonLines(r.out) as [{ version: string; addon: string; build: { builder: string }; cuda: { compiled: boolean; available: boolean; reason: string | null }; cpu: { threads: number; simd: string } }];
  t.regex(info.version, /^\d+\.\d+\.\d+/);
  t.true(existsSync(info.addon));
  t.is(typeof info.build.builder, 'string');
  t.is(typeof info.cuda.compiled, 'boolean');
  if (!info.cuda.available) t.is(typeof info.cuda.reason, 'string');
  t.true(info.cpu.threads >= 1);
  t.true(['avx512', 'avx2', 'portable'].includes(info.cpu.simd));
  const h = await run(['info']);
  t.is(h.code, 0);
  t.regex(h.out, /^sharedformer \d/);
  t.regex(h.out, /CPU +\d+ threads/);
  t.regex(h.out, /CUDA /);
});

// ----------------------------------------------------------------------------------------------------------------- train, eval, generate

const ckpt = join(dir, 'tiny.safetensors');

test('train writes a checkpoint with the tokenizer and configuration; eval reproduces its validation loss', async (t) => {
  const r = await run(['train', '--data', textFile, ...TINY, '--steps', '12', '--eval-every', '6', '--out', ckpt, '--json']);
  t.is(r.code, 0, r.err);
  const lines = jsonLines(r.out);
  t.is(lines[0].type, 'start');
  t.deepEqual(lines.filter((l) => l.type === 'eval').map((l) => l.step), [6, 12], 'the final evaluation is the one at step 12');
  const done = lines.at(-1)!;
  t.is(done.type, 'train');
  t.is(done.steps, 12);
  t.true((done.valLoss as number) < Math.log(97), 'below the uniform loss over the default vocabulary');
  const md = loadSafetensors(ckpt).metadata;
  t.deepEqual(JSON.parse(md.tokenizer).type, 'char');
  t.is(JSON.parse(md.tokenizer).chars.length, 97, 'printable ASCII, tab and newline by default');
  t.like(JSON.parse(md.modelConfig), { dModel: 16, heads: 2, dFF: 32, layers: 2, maxSeq: 16, sharing: { strategy: 'all' } });
  t.like(JSON.parse(md.trainConfig), { steps: 12, batchSize: 4, seqLen: 16, data: { file: textFile } });
  t.is(trainerStep(ckpt), 12);

  const e = await run(['eval', '--model', ckpt, '--data', textFile, '--json']);
  t.is(e.code, 0, e.err);
  const ev = jsonLines(e.out)[0];
  t.is(ev.loss, done.valLoss, 'the same batches as the final evaluation in train');
  t.is(ev.bpc, (ev.loss as number) / Math.LN2);
  const h = await run(['eval', '--model', ckpt, '--batches', '3']); // the data defaults to the recorded file
  t.is(h.code, 0, h.err);
  t.regex(h.out, /validation loss \d+\.\d{4} nats\/char +\d+\.\d{3} bits\/char/);
  t.regex(h.out, /3 batches of 4 x 16/);
});

test('train prints a readable log and a progress bar (lines when not a terminal, \\r redraws on a terminal)', async (t) => {
  const plain = capture(false);
  t.is(await main(['train', '--data', textFile, ...TINY.filter((a) => a !== '--quiet'), '--steps', '10', '--out', join(dir, 'log.safetensors')], plain.io), 0, plain.err());
  t.regex(plain.out(), /^model +all, 1 unique block over 2 layers/m);
  t.regex(plain.out(), /^data +.*small\.txt: [\d,]+ characters/m);
  t.regex(plain.out(), /^done +10 steps/m);
  t.regex(plain.out(), /^saved +.*log\.safetensors/m);
  t.regex(plain.err(), /^train \[#+-*\]  1\/10  loss \d\.\d{3}  [\d,]+ tok\/s  ETA \d+:\d\d$/m);
  t.false(plain.err().includes('\r'));
  const tty = capture(true);
  t.is(await main(['train', '--data', textFile, ...TINY.filter((a) => a !== '--quiet'), '--steps', '5', '--out', join(dir, 'log.safetensors')], tty.io), 0);
  t.true(tty.err().includes('\r'));
  t.true(tty.err().includes('5/5'));
  // the bar itself
  const lines: string[] = [];
  const p = new Progress({ write: (s: string) => lines.push(s) }, 'x', 100);
  for (let step = 1; step <= 100; step++) p.update({ step, loss: 1, lr: 1, tokensPerSec: 1000, elapsedMs: step * 10, etaMs: (100 - step) * 10 });
  t.is(lines.length, 11, 'step 1 and every tenth step');
  t.regex(lines[10], /\[#{24}\] 100\/100/);
});

test('generate continues the prompt, reproducibly for a seed, beyond the context window', async (t) => {
  const a = await run(['generate', '--model', ckpt, '--prompt', 'the cat', '--tokens', '40', '--seed', '5', '--top-k', '10']);
  t.is(a.code, 0, a.err);
  t.true(a.out.startsWith('the cat'));
  t.is(a.out.length, 'the cat'.length + 40 + 1);
  const b = await run(['generate', '--model', ckpt, '--prompt', 'the cat', '--tokens', '40', '--seed', '5', '--top-k', '10']);
  t.is(b.out, a.out);
  const g = await run(['generate', '--model', ckpt, '--prompt', 'the', '--tokens', '20', '--temperature', '0', '--json']);
  t.is(g.code, 0, g.err);
  const j = jsonLines(g.out)[0];
  t.is(j.type, 'generate');
  t.is((j.text as string).length, 20);
  const p = await run(['generate', '--model', ckpt, '--tokens', '8', '--top-p', '0.9', '--seed', '1']); // empty prompt
  t.is(p.code, 0, p.err);
  t.is(p.out.length, 9);
});

test('--resume continues from the checkpoint\'s step with its settings', async (t) => {
  const more = join(dir, 'more.safetensors');
  const r = await run(['train', '--resume', ckpt, '--steps', '16', '--out', more]);
  t.is(r.code, 0, r.err);
  t.regex(r.out, /resumed +from .* at step 12/);
  t.regex(r.out, /steps 12 -> 16/);
  t.is(trainerStep(more), 16);
  t.like(JSON.parse(loadSafetensors(more).metadata.trainConfig), { steps: 16, batchSize: 4, data: { file: textFile } });
  // nothing left to do: evaluates and saves
  const again = await run(['train', '--resume', more, '--out', more]);
  t.is(again.code, 0, again.err);
  t.is(trainerStep(more), 16);
});

test('an aborted signal (Ctrl-C) writes the checkpoint and exits 130; resuming from it is bit-exact', async (t) => {
  const args = ['--data', textFile, ...TINY, '--steps', '6', '--seed', '9'];
  const straight = join(dir, 'straight.safetensors'), cut = join(dir, 'cut.safetensors'), resumed = join(dir, 'resumed.safetensors');
  t.is((await run(['train', ...args, '--out', straight])).code, 0);
  const c = capture();
  const code = await train([...args, '--out', cut], c.io, AbortSignal.abort());
  t.is(code, 130);
  t.regex(c.out(), /interrupted at step 0 of 6; checkpoint written to .*cut\.safetensors/);
  t.is(trainerStep(cut), 0);
  const r = await run(['train', '--resume', cut, '--out', resumed]);
  t.is(r.code, 0, r.err);
  const a = loadSafetensors(straight), b = loadSafetensors(resumed);
  t.deepEqual([...a.tensors.keys()].sort(), [...b.tensors.keys()].sort());
  for (const [k, v] of a.tensors) t.deepEqual(b.tensors.get(k)!.data, v.data, k);
  // through main(): io.signal stands in for SIGINT
  const j = await run(['train', ...args, '--out', cut, '--json'], AbortSignal.abort());
  t.is(j.code, 130);
  t.like(jsonLines(j.out).at(-1), { type: 'interrupted', step: 0, steps: 6 });
});

test('train takes --config, --corpus default, --vocab-from-data and other sharing strategies', async (t) => {
  const cfg = join(dir, 'cfg.json');
  writeFileSync(cfg, JSON.stringify({ dModel: 16, heads: 2, dFF: 32, layers: 3, maxSeq: 16, sharing: { strategy: 'cycle', unique: 2 }, steps: 3, batchSize: 2, lr: 0.002 }));
  const out = join(dir, 'cfg.safetensors');
  const r = await run(['train', '--config', cfg, '--corpus', 'default', '--corpus-chars', '5000', '--vocab-from-data', '--out', out, '--quiet']);
  t.is(r.code, 0, r.err);
  t.regex(r.out, /cycle, 2 unique blocks over 3 layers/);
  const md = loadSafetensors(out).metadata;
  t.like(JSON.parse(md.trainConfig), { steps: 3, batchSize: 2, lr: 0.002, data: { corpus: 'default', chars: 5000 } });
  t.true(JSON.parse(md.tokenizer).chars.length < 70);
  // flags override the file; a new strategy drops the old one's options
  const s = await run(['train', '--config', cfg, '--data', textFile, '--strategy', 'sandwich', '--kv-share', '3', '--steps', '2', '--out', out, '--quiet']);
  t.is(s.code, 0, s.err);
  t.regex(s.out, /sandwich/);
  t.like(JSON.parse(loadSafetensors(out).metadata.modelConfig), { layers: 3, sharing: { strategy: 'sandwich', kvShareGroup: 3 } });
});

// ----------------------------------------------------------------------------------------------------------------- demo

test('demo --tiny --seconds 3 trains both models and prints the comparison table', async (t) => {
  const t0 = performance.now();
  const r = await run(['demo', '--tiny', '--seconds', '3', '--quiet']);
  t.is(r.code, 0, r.err);
  t.true(performance.now() - t0 < 30_000);
  t.regex(r.out, /corpus +[\d,]+ characters/);
  t.regex(r.out, /samples \(temperature 0\.8, top-k 40\)/);
  t.regex(r.out, /1> Once upon a time/);
  t.regex(r.out, /strategy +unique parameters +parameter bytes +val loss +bits\/char +tokens\/s/);
  t.regex(r.out, /^ {2}all +[\d,]+ +[\d,]+ +\d\.\d{3} +\d\.\d\d +[\d,]+$/m);
  t.regex(r.out, /^ {2}none +[\d,]+ +[\d,]+ +\d\.\d{3} +\d\.\d\d +[\d,]+$/m);
  const j = await run(['demo', '--tiny', '--steps', '4', '--json', '--quiet']);
  t.is(j.code, 0, j.err);
  const lines = jsonLines(j.out);
  t.deepEqual(lines.map((l) => l.type), ['corpus', 'model', 'sample', 'sample', 'sample', 'model']);
  const [shared, none] = lines.filter((l) => l.type === 'model');
  t.like(shared, { strategy: 'all', steps: 4 });
  t.like(none, { strategy: 'none', steps: 4 });
  t.true((shared.uniqueParameters as number) < (none.uniqueParameters as number));
  const i = await run(['demo', '--tiny', '--steps', '4', '--quiet'], AbortSignal.abort());
  t.is(i.code, 130);
});

// ----------------------------------------------------------------------------------------------------------------- errors

const usageErrors: [string, string[], RegExp][] = [
  ['an unknown command', ['frobnicate'], /unknown command 'frobnicate'/],
  ['an unknown flag', ['train', '--data', textFile, '--out', 'x', '--stepz', '3'], /unknown flag --stepz/],
  ['a missing value', ['train', '--data', textFile, '--out', 'x', '--steps'], /--steps needs a value/],
  ['a value that is a flag', ['train', '--data', '--out', 'x'], /--data needs a value/],
  ['a bad number', ['train', '--data', textFile, '--out', 'x', '--steps', 'many'], /--steps expects a number, got 'many'/],
  ['a fraction for an integer', ['train', '--data', textFile, '--out', 'x', '--batch', '2.5'], /--batch expects an integer/],
  ['a value out of range', ['train', '--data', textFile, '--out', 'x', '--lr', '0'], /--lr must be > 0/],
  ['a negative value', ['generate', '--model', 'x', '--temperature', '-1'], /--temperature must be >= 0/],
  ['top-p above 1', ['generate', '--model', 'x', '--top-p', '1.5'], /--top-p must be <= 1/],
  ['an unknown strategy', ['train', '--data', textFile, '--out', 'x', '--strategy', 'most'], /--strategy must be one of none, all, attention/],
  ['a positional argument', ['train', 'data.txt'], /unexpected argument 'data.txt'/],
  ['no --out', ['train', '--data', textFile], /--out FILE\.safetensors is required/],
  ['no data', ['train', '--out', 'x'], /needs --data FILE or --corpus default/],
  ['two data sources', ['train', '--data', textFile, '--corpus', 'default', '--out', 'x'], /either --data FILE or --corpus default/],
  ['eval without --model', ['eval', '--data', textFile], /--model FILE\.safetensors is required/],
  ['an invalid model', ['train', '--data', textFile, '--out', 'x', '--d-model', '30', '--heads', '4'], /invalid model configuration: .*multiple of heads/],
  ['options a strategy does not take', ['train', '--data', textFile, '--out', 'x', '--strategy', 'all', '--unique', '2'], /invalid model configuration: sharing: /],
  ['a sequence longer than the context', ['train', '--data', textFile, '--out', 'x', ...TINY, '--seq', '32'], /invalid training configuration: seqLen 32 exceeds/],
  ['a bad boolean', ['info', '--json=yes'], /--json takes no value/],
  ['help on an unknown command', ['help', 'trian'], /no such command 'trian'/],
  ['demo comparing none with none', ['demo', '--strategy', 'none'], /--strategy none is what the shared model is compared with/],
  ['demo with a strategy lacking its option', ['demo', '--strategy', 'basis'], /invalid model configuration: sharing: strategy 'basis' needs 'rank'/],
];
for (const [what, argv, msg] of usageErrors)
  test(`usage error, exit 2: ${what}`, async (t) => {
    const r = await run(argv);
    t.is(r.code, 2, r.err);
    t.regex(r.err, msg);
    t.is(r.err.trimEnd().split('\n').length, 1, 'one line');
    t.regex(r.err, /^sharedformer( \w+)?: .*\(see: sharedformer help/);
    t.is(r.out, '');
  });

test('runtime errors exit 1 with one clear line', async (t) => {
  const notCkpt = join(dir, 'not-a-checkpoint.safetensors');
  writeFileSync(notCkpt, 'hello');
  const badJson = join(dir, 'bad.json');
  writeFileSync(badJson, '{ "dModel": 16,');
  const unknownKey = join(dir, 'unknown.json');
  writeFileSync(unknownKey, JSON.stringify({ dModel: 16, vocab: 12 }));
  const tinyText = join(dir, 'tiny.txt');
  writeFileSync(tinyText, 'abc abc abc');
  const narrow = join(dir, 'narrow.safetensors');
  t.is((await run(['train', '--data', textFile, ...TINY, '--steps', '2', '--vocab-from-data', '--out', narrow])).code, 0);
  const cases: [string[], number, RegExp][] = [
    [['train', '--data', join(dir, 'missing.txt'), '--out', 'x'], 1, /cannot read --data .*missing\.txt: no such file/],
    [['train', '--data', dir, '--out', 'x'], 1, /cannot read --data .*: it is a directory/],
    [['train', '--data', tinyText, '--out', 'x', ...TINY], 1, /is too small: 11 characters/],
    [['train', '--config', join(dir, 'nope.json'), '--data', textFile, '--out', 'x'], 1, /cannot read --config/],
    [['train', '--config', badJson, '--data', textFile, '--out', 'x'], 2, /--config .*bad\.json is not valid JSON/],
    [['train', '--config', unknownKey, '--data', textFile, '--out', 'x'], 2, /unknown key 'vocab' \(the vocabulary comes from the data\)/],
    [['eval', '--model', join(dir, 'missing.safetensors')], 1, /cannot read --model .*: no such file/],
    [['eval', '--model', notCkpt, '--data', textFile], 1, /--model .*not-a-checkpoint\.safetensors is not a safetensors checkpoint \(file is 5 bytes/],
    [['generate', '--model', narrow, '--prompt', 'the Zebra'], 1, /the prompt: character "Z" at position 4 is not in the vocabulary of the model/],
    [['eval', '--model', narrow, '--corpus', 'default', '--corpus-chars', '2000'], 1, /is not in the vocabulary of the model/],
    [['train', '--resume', ckpt, '--d-model', '32', '--heads', '2', '--out', join(dir, 'r.safetensors')], 1, /cannot resume from .*: it holds a different model than requested: dModel: 16 -> 32 \(checkpoint -> requested/],
    [['train', '--resume', notCkpt, '--out', 'x'], 1, /--resume .*not-a-checkpoint\.safetensors is not a safetensors checkpoint/],
    [['train', '--data', textFile, '--out', join(dir, 'no', 'such', 'x.safetensors')], 1, /cannot write --out .*: the folder .* does not exist/],
  ];
  if (!backends().cuda.available) cases.push([['train', '--data', textFile, '--out', 'x', '--device', 'cuda'], 1, /--device cuda: CUDA was requested but is not available here, because .*\. Give --device cpu/]);
  for (const [argv, code, msg] of cases) {
    const r = await run(argv);
    t.is(r.code, code, `${argv.join(' ')}: ${r.err}`);
    t.regex(r.err, msg, argv.join(' '));
    t.is(r.err.trimEnd().split('\n').length, 1, `one line: ${r.err}`);
    t.is(r.out, '', 'nothing on stdout before the error');
  }
});

test('parseFlags takes --name value, --name=value and booleans; bench needs a checkout', (t) => {
  const specs = { n: { kind: 'int' as const, help: '' }, s: { kind: 'string' as const, help: '' }, b: { kind: 'bool' as const, help: '' }, x: { kind: 'number' as const, help: '', min: -5 } };
  t.deepEqual(parseFlags(['--n', '3', '--s=a=b', '--b', '--x', '-2.5'], specs), { n: 3, s: 'a=b', b: true, x: -2.5 });
  t.deepEqual(parseFlags(['--s', '', '--b=false'], specs), { s: '', b: false });
  t.throws(() => parseFlags(['--n', '1e400'], specs), { instanceOf: UsageError, message: /expects a number/ });
  t.throws(() => parseFlags(['--x', '-6'], specs), { instanceOf: UsageError, message: /must be >= -5/ });
  t.throws(() => parseFlags(['--toString', '1'], specs), { instanceOf: UsageError, message: /unknown flag --toString/ });
  const inv = benchInvocation(['kernels'], root);
  t.deepEqual(inv.args.slice(0, 2), ['--import', 'tsx']);
  t.true(inv.args[2].endsWith(join('scripts', 'bench.ts')));
  t.is(inv.args[3], 'kernels');
  t.is(inv.cwd, root);
  t.throws(() => benchInvocation([], dir), { instanceOf: CliError, message: /only a checkout of the repository has/ });
});

test('bin/sharedformer.mjs runs the CLI (smoke test)', (t) => {
  const r = spawnSync(process.execPath, [join(root, 'bin', 'sharedformer.mjs'), '--help'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /usage: sharedformer <command>/);
  for (const s of STRATEGIES) t.true(r.stdout.includes(s));
});
