import test from 'ava';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadAddon, packageRoot, backends, buildInfo } from '../lib/index.ts';

test('the loader tries the override, the platform packages, then the local build, in that order', (t) => {
  const { path, attempts } = loadAddon({});
  t.true(existsSync(path));
  const sources = attempts.map((a) => a.source);
  const local = sources.indexOf('local build');
  t.true(local >= 0 || sources.some((s) => s.startsWith('package ')));
  const pkgIdx = sources.findIndex((s) => s.startsWith('package @sharedformer/'));
  t.true(pkgIdx >= 0, 'platform packages are tried');
  if (local >= 0) t.true(pkgIdx < local, 'platform packages come before the local build');
  t.is(attempts.at(-1)!.error, undefined, 'the last attempt is the one that loaded');
});

test('SHAREDFORMER_BINARY overrides the search, and a bad one is a clear error listing the fix', (t) => {
  const built = join(packageRoot, 'build', 'Release', 'sharedformer.node');
  const real = process.env.SHAREDFORMER_BINARY ?? built;
  const ok = loadAddon({ SHAREDFORMER_BINARY: real });
  t.is(ok.attempts[0].source, 'SHAREDFORMER_BINARY');
  t.is(typeof ok.addon.full, 'function');
  const err = t.throws(() => loadAddon({ SHAREDFORMER_BINARY: '/nonexistent/sharedformer.node' }))!;
  t.regex(err.message, /could not load the native addon/);
  t.regex(err.message, /SHAREDFORMER_BINARY: \/nonexistent\/sharedformer\.node/);
  t.regex(err.message, /fix: point SHAREDFORMER_BINARY/);
});

test('when nothing loads, one error names every place tried and the fix for each', async (t) => {
  // Load the loader from a copy of lib/ placed where no build and no platform package exist.
  const { mkdtempSync, cpSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'sf-loader-'));
  try {
    cpSync(join(packageRoot, 'lib', 'native.ts'), join(dir, 'lib', 'native.ts'), { recursive: true });
    const mod = await import(join(dir, 'lib', 'native.ts'));
    const err = t.throws(() => mod.loadAddon({}))!;
    t.regex(err.message, /package @sharedformer\/linux-x64-cuda|package @sharedformer\//);
    t.regex(err.message, /local build: .*build\/Release\/sharedformer\.node/);
    t.regex(err.message, /npm run build/);
    t.regex(err.message, /npm install @sharedformer\//);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('backends() reports the CPU and whether CUDA is usable, with the reason when not', (t) => {
  const b = backends();
  t.true(b.cpu.threads >= 1);
  t.true(['avx512', 'avx2', 'portable'].includes(b.cpu.simd));
  t.is(typeof b.cuda.compiled, 'boolean');
  t.is(typeof b.cuda.available, 'boolean');
  if (!b.cuda.available) {
    t.is(typeof b.cuda.reason, 'string');
    t.true(b.cuda.reason!.length > 10);
    t.deepEqual(b.cuda.devices, []);
  } else {
    t.true(b.cuda.devices.length > 0);
  }
  const info = buildInfo();
  t.true(['cmake-js', 'node-gyp'].includes(info.builder));
  t.is(info.cuda, b.cuda.compiled);
  if (info.builder === 'node-gyp') t.false(info.cuda, 'node-gyp builds are CPU only');
  if (b.cuda.compiled) t.deepEqual(b.cuda.architectures, ['80-real', '90-real', '90-virtual']);
});
