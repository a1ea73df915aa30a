// The npm packaging: the platform packages' metadata, and the loader's handling of an installed CUDA package that
// cannot be used (it falls back to the CPU package and says why in backends().cuda.reason). The install itself —
// packing, installing offline without a compiler, training and generating — is `npm run test:install`.
import test from 'ava';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { packageRoot } from '../lib/index.ts';

const pkg = JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8'));
const binary = process.env.SHAREDFORMER_BINARY ?? join(packageRoot, 'build', 'Release', 'sharedformer.node');

test('the platform packages have the main version, are restricted to linux x64 glibc, and ship only the binary', (t) => {
  for (const name of ['linux-x64', 'linux-x64-cuda']) {
    const p = JSON.parse(readFileSync(join(packageRoot, 'npm', name, 'package.json'), 'utf8'));
    t.is(p.name, `@sharedformer/${name}`);
    t.is(p.version, pkg.version, `${name}: same version as sharedformer (prebuild.sh refuses otherwise)`);
    t.deepEqual([p.os, p.cpu, p.libc], [['linux'], ['x64'], ['glibc']]);
    t.deepEqual(p.files, ['sharedformer.node', 'build-info.json']);
    t.is(p.scripts, undefined, `${name}: no scripts at all, so nothing runs at install`);
  }
});

test('the main package: exports map, published files, no install script, no node-gyp at install', (t) => {
  t.deepEqual(pkg.exports['.'], { types: './dist/index.d.ts', import: './dist/index.js', default: './dist/index.js' });
  t.is(pkg.exports['./package.json'], './package.json');
  for (const s of ['preinstall', 'install', 'postinstall', 'prepare', 'prebuild', 'prepack']) t.is(pkg.scripts[s], undefined, s);
  t.is(pkg.gypfile, false);
  for (const f of ['dist/', 'bin/', 'native/', 'cuda/', 'CMakeLists.txt', 'binding.gyp']) t.true(pkg.files.includes(f), f);
  t.false(pkg.files.some((f: string) => /^(test|docs|lib|npm|build)/.test(f)));
  // The published package.json gets optionalDependencies from prebuild.sh (see docs/packaging.md); the committed one
  // must not have it, or `npm ci` fails until the platform package is on the registry.
  t.is(pkg.optionalDependencies, undefined);
});

/** A folder with a copy of lib/native.ts and fake installed packages; returns its root. */
function fakeInstall(cuda: 'broken' | 'empty', cpu: boolean): string {
  const dir = mkdtempSync(join(tmpdir(), 'sf-pkg-'));
  mkdirSync(join(dir, 'lib'));
  copyFileSync(join(packageRoot, 'lib', 'native.ts'), join(dir, 'lib', 'native.ts'));
  const put = (name: string, file?: string | Buffer) => {
    const d = join(dir, 'node_modules', '@sharedformer', name);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'package.json'), JSON.stringify({ name: `@sharedformer/${name}`, version: pkg.version }));
    if (typeof file === 'string') copyFileSync(file, join(d, 'sharedformer.node'));
    else if (file) writeFileSync(join(d, 'sharedformer.node'), file);
  };
  put('linux-x64-cuda', cuda === 'broken' ? Buffer.from('not an ELF file') : undefined);
  if (cpu) put('linux-x64', binary);
  return dir;
}

test('an installed CUDA package that cannot be loaded: the CPU package is used, and the note says why', async (t) => {
  if (process.platform !== 'linux' || process.arch !== 'x64') return t.pass('the prebuilt packages are linux-x64 only');
  const dir = fakeInstall('broken', true);
  try {
    const mod = await import(join(dir, 'lib', 'native.ts'));
    const r = mod.loadAddon({});
    t.is(r.path, join(dir, 'node_modules', '@sharedformer', 'linux-x64', 'sharedformer.node'));
    t.is(r.attempts[0].source, 'package @sharedformer/linux-x64-cuda');
    t.regex(r.attempts[0].error, /invalid ELF header|file too short|not an ELF/i);
    t.regex(r.attempts[0].fix, /installed but its binary did not load: .*glibc 2\.32.*reinstall it/);
    t.regex(r.cudaNote, /^@sharedformer\/linux-x64-cuda is installed but could not be loaded \(.*\); using the CPU-only binary of @sharedformer\/linux-x64 instead$/);
    t.is(typeof r.addon.full, 'function');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a CUDA package without its binary and no other binary: the error names both packages and the local build', async (t) => {
  if (process.platform !== 'linux' || process.arch !== 'x64') return t.pass('the prebuilt packages are linux-x64 only');
  const dir = fakeInstall('empty', false);
  try {
    const mod = await import(join(dir, 'lib', 'native.ts'));
    const err = t.throws(() => mod.loadAddon({}))!;
    t.regex(err.message, /1\. package @sharedformer\/linux-x64-cuda: .*linux-x64-cuda\/sharedformer\.node\n\s+installed without its sharedformer\.node\n\s+fix: .*reinstall it \(npm install @sharedformer\/linux-x64-cuda\)/);
    t.regex(err.message, /2\. package @sharedformer\/linux-x64: @sharedformer\/linux-x64\/sharedformer\.node\n\s+not installed\n\s+fix: npm install @sharedformer\/linux-x64 /);
    t.regex(err.message, /3\. local build: .*build\/Release\/sharedformer\.node\n\s+not built\n\s+fix: build from source: .*npm run build/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('backends().cuda.reason carries the loader note when the CUDA package was passed over', (t) => {
  if (process.platform !== 'linux' || process.arch !== 'x64') return t.pass('the prebuilt packages are linux-x64 only');
  // A whole copy of lib/ beside the fake packages, in a fresh process, so that the package's own loader is used.
  const dir = fakeInstall('broken', true);
  try {
    cpSync(join(packageRoot, 'lib'), join(dir, 'lib'), { recursive: true });
    // The package's own dependencies, as an install has them beside it.
    for (const dep of Object.keys(JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')).dependencies as Record<string, string>)) {
      mkdirSync(dirname(join(dir, 'node_modules', dep)), { recursive: true });
      if (!existsSync(join(dir, 'node_modules', dep))) symlinkSync(join(packageRoot, 'node_modules', dep), join(dir, 'node_modules', dep));
    }
    const script = `import(${JSON.stringify(join(dir, 'lib', 'index.ts'))}).then((m) => {
      console.log(JSON.stringify({ cuda: m.backends().cuda, path: m.buildInfo().path }));
    });`;
    const env = { ...process.env };
    delete env.SHAREDFORMER_BINARY;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '-e', script], { cwd: packageRoot, env, encoding: 'utf8' });
    const r = JSON.parse(out.trim().split('\n').at(-1)!);
    t.is(r.path, join(dir, 'node_modules', '@sharedformer', 'linux-x64', 'sharedformer.node'));
    // The stand-in CPU package is a copy of the binary under test; if that one is a CUDA build on a GPU machine,
    // CUDA is usable after all and there is nothing to explain.
    if (r.cuda.available) t.is(r.cuda.reason, undefined);
    else t.regex(r.cuda.reason, /^@sharedformer\/linux-x64-cuda is installed but could not be loaded \(.*\); using the CPU-only binary of @sharedformer\/linux-x64 instead\./);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
