// The README's TypeScript examples run as written (with `from 'sharedformer'` pointed at this checkout's lib/).
import test from 'ava';
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
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
