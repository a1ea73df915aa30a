// The CLI problems a new user hit (issue 15, point 9), one test each: path flags resolved against the invoking folder
// (INIT_CWD), two SIGINTs keep the checkpoint, binary --data refused, a non-checkpoint named as such, a resume
// mismatch as the differing keys, control characters escaped, --checkpoint-every announced, a resumed run's summary
// counting its own steps, info --json's type, the --device cuda message, and generate's sliding window from the API.
import anyTest from 'ava';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { notText, printable, loadModel } from '../lib/cli/index.ts';
import { run, jsonLines } from './helpers/cli.ts';
import { loadSafetensors } from '../lib/io/safetensors.ts';
import { differingKeys } from '../lib/io/checkpoint.ts';
import { backends } from '../lib/runtime.ts';

const test = anyTest.serial;
const root = fileURLToPath(new URL('..', import.meta.url));
const bin = join(root, 'bin', 'sharedformer.mjs');
const dir = mkdtempSync(join(tmpdir(), 'sf-cli-issues-'));
anyTest.after.always(() => rmSync(dir, { recursive: true, force: true }));

const sentences = ['the cat sat on the mat. ', 'a dog ran to the log.\n', 'the old fisherman carried three red boxes. ', 'two birds sang. '];
const text = Array.from({ length: 200 }, (_, i) => sentences[(i * 7 + (i >> 3)) % 4]).join('');
const textFile = join(dir, 'small.txt');
writeFileSync(textFile, text);
const TINY = ['--d-model', '16', '--heads', '2', '--d-ff', '32', '--layers', '2', '--max-seq', '16', '--batch', '4', '--quiet'];
const trainerStep = (path: string) => (JSON.parse(loadSafetensors(path).metadata.trainer) as { step: number }).step;
const ckpt = join(dir, 'tiny.safetensors');

test.before(async () => {
  const r = await run(['train', '--data', textFile, ...TINY, '--steps', '4', '--out', ckpt]);
  if (r.code !== 0) throw new Error(r.err);
});

/** bin/sharedformer.mjs as a child process, its output collected. */
function cli(args: string[], o: { cwd: string; env?: Record<string, string | undefined> }) {
  const env = { ...process.env, ...o.env };
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  return spawnSync(process.execPath, [bin, ...args], { cwd: o.cwd, env, encoding: 'utf8', timeout: 120_000 });
}

test('1. path flags are resolved against INIT_CWD (where npm was run), else the working directory', (t) => {
  const caller = mkdtempSync(join(dir, 'caller-'));
  writeFileSync(join(caller, 'data.txt'), text);
  // as `npm run cli` runs it: the working directory is the package root, INIT_CWD the caller's folder
  const r = cli(['train', '--data', 'data.txt', ...TINY, '--steps', '2', '--out', 'x.safetensors'], { cwd: root, env: { INIT_CWD: caller } });
  t.is(r.status, 0, r.stderr);
  t.true(existsSync(join(caller, 'x.safetensors')), 'written in the caller\'s folder');
  t.false(existsSync(join(root, 'x.safetensors')), 'not in the package root');
  t.is(JSON.parse(loadSafetensors(join(caller, 'x.safetensors')).metadata.trainConfig).data.file, join(caller, 'data.txt'));
  // --model and --resume too; without INIT_CWD, the working directory
  const e = cli(['eval', '--model', 'x.safetensors', '--batches', '1', '--json'], { cwd: caller, env: { INIT_CWD: undefined } });
  t.is(e.status, 0, e.stderr);
  t.is(jsonLines(e.stdout)[0].model, join(caller, 'x.safetensors'));
  const g = cli(['train', '--resume', 'x.safetensors', '--steps', '3', '--out', 'y.safetensors', '--quiet'], { cwd: root, env: { INIT_CWD: caller } });
  t.is(g.status, 0, g.stderr);
  t.is(trainerStep(join(caller, 'y.safetensors')), 3);
});

test('2. two SIGINTs keep the checkpoint: the second one waits for it, then the command exits 130', async (t) => {
  const out = join(dir, 'sigint.safetensors');
  // a model whose steps take long enough (about 2-3 s on one thread here: 8192 tokens a step) that both signals arrive
  // during the step that was running, even on a fast machine (the second comes 0.4 s after the first is answered)
  const args = ['train', '--data', textFile, '--d-model', '128', '--heads', '4', '--d-ff', '512', '--layers', '6', '--max-seq', '64', '--batch', '128',
    '--steps', '1000', '--threads', '1', '--out', out];
  const child = spawn(process.execPath, [bin, ...args], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '', stdout = '';
  let stage = 0;
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  const code = await new Promise<number | null>((done) => {
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
      if (stage === 0 && /train \[[#-]+\] +1\/1000/.test(err)) {
        stage = 1;
        child.kill('SIGINT');
      } else if (stage === 1 && err.includes('interrupted:')) {
        stage = 2;
        // a second Ctrl-C, later than the burst of one keypress forwarded twice (by npm run)
        setTimeout(() => child.kill('SIGINT'), 400);
      }
    });
    child.on('close', (c) => done(c));
  });
  t.is(code, 130, err);
  t.true(existsSync(out), `a checkpoint; stderr: ${err}`);
  t.true(trainerStep(out) >= 1);
  const { model } = loadModel(out);
  model.store.dispose();
  t.regex(stdout, /interrupted at step \d+ of 1000; checkpoint written to/);
  t.regex(err, /finishing the current step and the checkpoint\.\.\./, 'the second signal is answered');
});

test('3. a --data file that is not UTF-8 text is refused, naming the file and why', async (t) => {
  const nul = join(dir, 'with-nul.dat');
  writeFileSync(nul, Buffer.concat([Buffer.from('some text'), Buffer.from([0, 1, 2]), Buffer.from(text)]));
  const latin1 = join(dir, 'latin1.txt');
  writeFileSync(latin1, Buffer.from(`caf\xe9 ${text}`, 'latin1'));
  for (const [file, why] of [[nul, /it holds a NUL byte at offset 9, so it is binary, not text/], [latin1, /byte 0xe9 at offset 3 does not start a valid UTF-8 character/]] as const) {
    const r = await run(['train', '--data', file, ...TINY, '--steps', '2', '--out', join(dir, 'b.safetensors')]);
    t.is(r.code, 1, r.err);
    t.true(r.err.includes(`--data ${file} is not UTF-8 text: `), r.err);
    t.regex(r.err, why);
    t.regex(r.err, /the data must be a UTF-8 text file/);
    t.is(r.err.trimEnd().split('\n').length, 1);
  }
  t.is(notText(Buffer.from('héllo — 日本 🎉\n\t')), undefined);
  t.regex(notText(Buffer.from([0xc0, 0x80]))!, /0xc0 at offset 0/, 'overlong');
  t.regex(notText(Buffer.from([0x61, 0xed, 0xa0, 0x80]))!, /0xed at offset 1/, 'a surrogate');
  t.regex(notText(Buffer.from([0x61, 0x62, 0xe2, 0x82]))!, /0xe2 at offset 2/, 'cut short');
});

test('4. a file that is not a safetensors checkpoint is said to be one, for eval, generate and --resume', async (t) => {
  const txt = join(dir, 'notes.safetensors');
  writeFileSync(txt, 'these are some notes, not a checkpoint\n');
  const rnd = join(dir, 'random.bin');
  writeFileSync(rnd, randomBytes(4096));
  for (const file of [txt, rnd])
    for (const [argv, what] of [
      [['eval', '--model', file, '--data', textFile], '--model'],
      [['generate', '--model', file, '--prompt', 'the'], '--model'],
      [['train', '--resume', file, '--out', join(dir, 'r.safetensors')], '--resume'],
    ] as const) {
      const r = await run([...argv]);
      t.is(r.code, 1, r.err);
      t.true(r.err.includes(`${what} ${file} is not a safetensors checkpoint (`), r.err);
      t.is(r.err.trimEnd().split('\n').length, 1);
    }
});

test('5. a --resume that asks for another model names the keys that differ, not two whole configurations', async (t) => {
  const r = await run(['train', '--resume', ckpt, '--d-model', '32', '--layers', '3', '--out', join(dir, 'r.safetensors')]);
  t.is(r.code, 1, r.err);
  t.regex(r.err, /cannot resume from .*tiny\.safetensors: it holds a different model than requested: dModel: 16 -> 32, layers: 2 -> 3 \(checkpoint -> requested/);
  t.false(r.err.includes('{'), r.err);
  const s = await run(['train', '--resume', ckpt, '--strategy', 'cycle', '--unique', '2', '--out', join(dir, 'r.safetensors')]);
  t.regex(s.err, /sharing\.strategy: "all" -> "cycle", sharing\.unique: absent -> 2/);
  t.deepEqual(differingKeys({ a: 1, b: { c: 2, d: [1] } }, { a: 1, b: { c: 3, d: [1] }, e: true }), ['b.c: 2 -> 3', 'e: absent -> true']);
});

test('6. control characters are escaped in human output and messages; --json escapes them too', async (t) => {
  t.is(printable('a\x1b[31mb\n\tc\r\x07\x7f\x9b'), 'a\\u001b[31mb\n\tc\\u000d\\u0007\\u007f\\u009b');
  const odd = join(dir, 'odd\x1b[31mname.txt');
  writeFileSync(odd, `${text}\x1b\x9b`.repeat(2));
  const model = join(dir, 'odd.safetensors');
  const r = await run(['train', '--data', odd, ...TINY, '--steps', '2', '--out', model]);
  t.is(r.code, 0, r.err);
  t.false(/[\x1b\x9b]/.test(r.out), r.out);
  t.true(r.out.includes('odd\\u001b[31mname.txt'));
  const missing = await run(['eval', '--model', join(dir, 'gone\x1b]0;x\x07.safetensors')]);
  t.is(missing.code, 1);
  t.false(/[\x1b\x07]/.test(missing.err), missing.err);
  t.true(missing.err.includes('gone\\u001b]0;x\\u0007.safetensors'));
  const g = await run(['generate', '--model', model, '--prompt', 'the\x1b cat\x9b\nsat', '--tokens', '5', '--seed', '1']);
  t.is(g.code, 0, g.err);
  t.true(g.out.startsWith('the\\u001b cat\\u009b\nsat'), 'newlines stay newlines');
  t.false(/[\x1b\x9b]/.test(g.out));
  const j = await run(['generate', '--model', model, '--prompt', 'the\x1b cat\x9b', '--tokens', '5', '--seed', '1', '--json']);
  t.is(j.code, 0, j.err);
  t.false(/[\x00-\x1f\x7f-\x9f]/.test(j.out.trimEnd()), j.out);
  t.is(jsonLines(j.out)[0].prompt, 'the\x1b cat\x9b', 'the JSON holds the text itself');
});

test('7. --checkpoint-every announces every save: a line, or {type: "checkpoint"} with --json', async (t) => {
  const out = join(dir, 'every.safetensors');
  const h = await run(['train', '--data', textFile, ...TINY, '--steps', '5', '--checkpoint-every', '2', '--out', out]);
  t.is(h.code, 0, h.err);
  t.deepEqual(h.out.match(/^checkpoint step \d+ written to .*every\.safetensors$/gm)?.map((l) => l.split(' ')[2]), ['2', '4']);
  const j = await run(['train', '--data', textFile, ...TINY, '--steps', '5', '--checkpoint-every', '2', '--out', out, '--json']);
  t.is(j.code, 0, j.err);
  t.deepEqual(jsonLines(j.out).filter((l) => l.type === 'checkpoint'), [{ type: 'checkpoint', step: 2, path: out }, { type: 'checkpoint', step: 4, path: out }]);
});

test('8. a resumed run reports its own steps and throughput, and the step reached apart', async (t) => {
  const out = join(dir, 'resumed.safetensors');
  const h = await run(['train', '--resume', ckpt, '--steps', '7', '--out', out]);
  t.is(h.code, 0, h.err);
  t.regex(h.out, /^done +3 steps \(step 4 -> 7\) in \d+\.\d s/m);
  const j = await run(['train', '--resume', ckpt, '--steps', '6', '--out', out, '--json']);
  t.is(j.code, 0, j.err);
  t.like(jsonLines(j.out).at(-1), { type: 'train', steps: 2, step: 6, startStep: 4 });
  const fresh = await run(['train', '--data', textFile, ...TINY, '--steps', '3', '--out', out]);
  t.regex(fresh.out, /^done +3 steps in /m);
});

test('9. info --json has type "info"', async (t) => {
  const r = await run(['info', '--json']);
  t.is(r.code, 0, r.err);
  t.is(jsonLines(r.out)[0].type, 'info');
});

test('10. --device cuda without CUDA says it was requested, why it is unavailable, and to use --device cpu', async (t) => {
  const cuda = backends().cuda;
  if (cuda.available) {
    t.pass('CUDA is available here');
    return;
  }
  const r = await run(['train', '--data', textFile, '--out', join(dir, 'c.safetensors'), '--device', 'cuda']);
  t.is(r.code, 1);
  t.regex(r.err, /--device cuda: CUDA was requested but is not available here, because .+\. Give --device cpu \(the default\) to run on the CPU\n$/);
  t.true(r.err.includes(cuda.reason!.replace(/[\s.;,]+$/, '')), 'the reason from backends()');
});

test('11. generate uses Decoder.generate({ slide: true }): the same text for the same seed', async (t) => {
  const { model, tokenizer } = loadModel(ckpt);
  try {
    const prompt = 'the old fisherman carried'; // longer than maxSeq 16
    const ids = await model.generate(Array.from(tokenizer.encode(prompt)), { maxNewTokens: 40, temperature: 0.8, topK: 10, seed: 5, slide: true });
    const r = await run(['generate', '--model', ckpt, '--prompt', prompt, '--tokens', '40', '--top-k', '10', '--seed', '5']);
    t.is(r.code, 0, r.err);
    t.is(r.out, `${prompt}${tokenizer.decode(ids)}\n`);
    await t.throwsAsync(() => model.generate(Array.from(tokenizer.encode(prompt)), { maxNewTokens: 1 }), { instanceOf: RangeError, message: /pass slide: true/ });
  } finally {
    model.store.dispose();
  }
});
