// The build that `npm test`, `npm run demo` and `npm run reliability` make by themselves (scripts/ensure-built.mjs) is
// the quick one: the CPU addon only — no CUDA kernels, no native test programs, no benchmarks, no CPU lane (emu) — in
// its own CMake tree, plus dist/ so that `import 'sharedformer'` works from a clone. Checked from its plan
// (`ensure-built.mjs --print-plan`) and by configuring (never compiling) a CMake tree with exactly its command.
import test from 'ava';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const script = join(root, 'scripts', 'ensure-built.mjs');

interface Plan {
  addon: { needed: boolean; binary: string; dir: string; options: Record<string, string>; target: string; commands: string[][] };
  ts: { needed: boolean; command: string[] };
}

function plan(): Plan {
  const r = spawnSync(process.execPath, [script, '--print-plan'], { cwd: root, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`ensure-built.mjs --print-plan failed:\n${r.stderr}`);
  return JSON.parse(r.stdout) as Plan;
}

test('the quick build is cmake-js with CUDA, the native tests, the benchmarks and the CPU lane off, one target', (t) => {
  const { addon } = plan();
  t.deepEqual(addon.options, {
    SHAREDFORMER_CUDA: 'OFF',
    SHAREDFORMER_TESTS: 'OFF',
    SHAREDFORMER_BENCH: 'OFF',
    SHAREDFORMER_CUDA_EMU: 'OFF',
  });
  t.is(addon.target, 'sharedformer');
  t.is(addon.commands.length, 2);
  const [configure, build] = addon.commands;
  t.regex(configure[1], /cmake-js[\\/]bin[\\/]cmake-js$/);
  t.is(configure[2], 'configure', 'configures every time (cmake-js compile/build would keep an old cache)');
  t.is(build[2], 'build');
  for (const cmd of [configure, build]) {
    for (const [k, v] of Object.entries(addon.options)) t.true(cmd.includes(`--CD${k}=${v}`), `${cmd[2]}: --CD${k}=${v}`);
    t.false(cmd.some((a) => /SHAREDFORMER_(CUDA|TESTS|BENCH|CUDA_EMU)=(AUTO|ON)/i.test(a)), `${cmd[2]}: nothing turned back on`);
    // its own tree, not build/ (whose cache belongs to `npm run build`), writing the binary where the loader looks
    t.is(cmd[cmd.indexOf('--out') + 1], join(root, 'build', 'quick'));
    t.true(cmd.includes(`--CDCMAKE_LIBRARY_OUTPUT_DIRECTORY=${join(root, 'build', 'Release')}`));
  }
  t.is(build[build.indexOf('--target') + 1], 'sharedformer');
  t.is(addon.binary, process.env.SHAREDFORMER_BINARY ?? join(root, 'build', 'Release', 'sharedformer.node'));
});

test('the quick build compiles dist/ with tsc -p tsconfig.build.json', (t) => {
  const { ts } = plan();
  t.regex(ts.command[1], /typescript[\\/]bin[\\/]tsc$/);
  t.deepEqual(ts.command.slice(2), ['-p', join(root, 'tsconfig.build.json')]);
});

const cmake = spawnSync('cmake', ['--version']).status === 0;
(cmake ? test : test.skip)('configured with the quick build command, the CMake tree has the addon and no CUDA, test, bench or emu target', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'sf-quick-'));
  try {
    const [configure] = plan().addon.commands;
    const tree = join(dir, 'tree');
    const cmd = configure.map((a) => {
      if (a === join(root, 'build', 'quick')) return tree;
      if (a.startsWith('--CDCMAKE_LIBRARY_OUTPUT_DIRECTORY=')) return `--CDCMAKE_LIBRARY_OUTPUT_DIRECTORY=${join(dir, 'Release')}`;
      return a;
    });
    t.true(cmd.includes(tree), 'the tree is redirected to the temporary folder');
    // CMake's file API (generator-neutral): ask for the code model, read back every target and its sources.
    const query = join(tree, '.cmake', 'api', 'v1', 'query');
    mkdirSync(query, { recursive: true });
    writeFileSync(join(query, 'codemodel-v2'), '');
    const r = spawnSync(cmd[0], cmd.slice(1), { cwd: root, encoding: 'utf8' });
    t.is(r.status, 0, r.stdout + r.stderr);
    t.regex(r.stdout, /sharedformer: CUDA kernels OFF/);
    const cache = readFileSync(join(tree, 'CMakeCache.txt'), 'utf8');
    t.notRegex(cache, /^CMAKE_CUDA_COMPILER:/m, 'CUDA was not even looked for');
    const reply = join(tree, '.cmake', 'api', 'v1', 'reply');
    const index = readdirSync(reply).find((f) => f.startsWith('codemodel-v2-'))!;
    const model = JSON.parse(readFileSync(join(reply, index), 'utf8')) as { configurations: { targets: { name: string; jsonFile: string }[] }[] };
    const targets = model.configurations[0].targets;
    const names = targets.map((x) => x.name).sort();
    t.true(names.includes('sharedformer'), `the addon target is there: ${names.join(' ')}`);
    const unwanted = names.filter((n) => /_test$|^emu_|^sf_emu$|^sf_cuda|^sf_bench$|^train_step_cpu$|^gpu_bench$/.test(n));
    t.deepEqual(unwanted, [], 'no native test, CPU lane, CUDA or benchmark target');
    t.deepEqual(names, ['sf_base', 'sf_core', 'sharedformer'], 'the addon and the two libraries it links, nothing else');
    const cu = targets.flatMap((x) => {
      const target = JSON.parse(readFileSync(join(reply, x.jsonFile), 'utf8')) as { sources?: { path: string }[] };
      return (target.sources ?? []).map((s) => s.path).filter((p) => /\.cu$|[\\/]cuda[\\/]/.test(p));
    });
    t.deepEqual(cu, [], 'no CUDA source in any target');
    t.false(existsSync(join(tree, 'sfemu')), 'no CPU-lane sources generated');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// Self-reference by package name: from the repository root, `sharedformer` resolves through package.json "exports"
// to dist/ (built by the quick build). Skipped where dist/ was not built (`npx ava` without `npm test`'s pretest).
const dist = existsSync(join(root, 'dist', 'index.js'));
(dist ? test : test.skip)("from the clone, import 'sharedformer' loads dist/index.js and the addon", (t) => {
  const code = `const m = await import('sharedformer');
    console.log(JSON.stringify({ url: import.meta.resolve('sharedformer'), builder: m.buildInfo().builder, n: Object.keys(m).length }));`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { cwd: root, encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { url: string; builder: string; n: number };
  t.is(out.url, new URL('dist/index.js', new URL(`file://${root.endsWith('/') ? root : root + '/'}`)).href);
  t.true(['cmake-js', 'node-gyp'].includes(out.builder));
  t.true(out.n > 10);
});
