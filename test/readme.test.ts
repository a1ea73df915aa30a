// The README's TypeScript examples run as written (with `from 'sharedformer'` pointed at this checkout's lib/).
import test from 'ava';
import { existsSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const blocks = [...readme.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);

test('the README has TypeScript examples', (t) => {
  t.true(blocks.length >= 2);
});

blocks.forEach((code, i) => {
  test(`README example ${i + 1} runs`, (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'sf-readme-'));
    try {
      const file = join(dir, `example${i + 1}.mts`);
      writeFileSync(file, code.replaceAll(`from 'sharedformer'`, `from '${join(root, 'lib', 'index.ts')}'`));
      const r = spawnSync(process.execPath, ['--import', 'tsx', file], { cwd: root, encoding: 'utf8', timeout: 60_000 });
      t.is(r.status, 0, `example ${i + 1} failed:\n${r.stderr}`);
      t.true(r.stdout.length > 0, 'it prints something');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// The walkthrough "From install to a trained, saved, evaluated and compared model": every `npx sharedformer` line runs,
// in order, in an empty folder, through the CLI's main() — with a tiny model and steps divided by 100 appended.
const walk = /## From install to a trained[\s\S]*?```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
const shellWords = (line: string) => [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]);

test('the README walkthrough runs as written: train, Ctrl-C-safe resume, eval, generate, compare', async (t) => {
  const { main } = await import('../lib/cli/index.ts');
  const lines = walk.split('\n').filter((l) => l.startsWith('npx sharedformer '));
  t.deepEqual(lines.map((l) => l.split(' ')[2]), ['train', 'train', 'eval', 'generate', 'compare']);
  const dir = mkdtempSync(join(tmpdir(), 'sf-walk-'));
  const cwd = process.cwd();
  process.chdir(dir);
  try {
    for (const line of lines) {
      const argv = shellWords(line).slice(2);
      for (let i = 0; i < argv.length - 1; i++)
        if (argv[i] === '--steps' || argv[i] === '--checkpoint-every') argv[i + 1] = String(Number(argv[i + 1]) / 100);
      if (argv[0] === 'train' && !argv.includes('--resume')) argv.push('--d-model', '16', '--heads', '2', '--d-ff', '32', '--max-seq', '16', '--batch', '4', '--corpus-chars', '20000');
      if (argv[0] === 'compare') argv.push('--d-model', '16', '--heads', '2', '--d-ff', '32', '--max-seq', '16', '--batch', '4', '--corpus-chars', '20000', '--eval-batches', '2');
      if (argv[0] === 'train' || argv[0] === 'compare') argv.push('--quiet');
      let out = '', err = '';
      const code = await main(argv, { stdout: { write: (s: string) => (out += s) }, stderr: { write: (s: string) => (err += s) } });
      t.is(code, 0, `${line}\n${err}`);
      t.true(out.length > 0, line);
    }
    for (const f of ['story.safetensors', 'sharedformer-compare/compare.json', 'sharedformer-compare/loss.svg'])
      t.true(existsSync(join(dir, f)), f);
  } finally {
    process.chdir(cwd);
    rmSync(dir, { recursive: true, force: true });
  }
});
