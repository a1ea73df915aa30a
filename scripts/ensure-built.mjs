// Runs before `npm test`, `npm run demo` and `npm run reliability`, so that a fresh clone needs nothing typed before
// them. It does, each only when needed and saying so in one line:
//   1. `npm ci` (from package-lock.json) when node_modules lacks the packages the scripts use;
//   2. the QUICK build of the addon when build/Release/sharedformer.node does not exist: cmake-js with the CUDA kernels,
//      the native test programs, the benchmarks and the CPU lane (emu) all off, building the one target `sharedformer`
//      in its own CMake tree, build/quick/, with the product written to build/Release/sharedformer.node where the
//      loader looks. The CUDA build is `npm run build` (cmake-js, SHAREDFORMER_CUDA=AUTO, in build/): a quick build
//      never touches build/CMakeCache.txt, so a later `npm run build` configures build/ afresh with its own options
//      (cmake-js `compile` never reconfigures an existing tree: a quick build in build/ itself would have left its
//      CUDA=OFF in the cache and made `npm run build` silently CPU-only). When a full build exists, nothing is done;
//   3. `npm run build:ts` (tsc: lib/ -> dist/) when dist/index.js is missing or older than lib/ or the tsconfig files,
//      so that `import 'sharedformer'` (package.json "exports" -> dist/) works from a clone.
// When the binary exists but is older than the C++/CUDA sources it is NOT rebuilt (that could replace a CUDA build by
// a CPU one, or take many minutes); a one-line warning says how to rebuild. With SHAREDFORMER_BINARY set, step 2 only
// checks that the file exists.
//
// Why cmake-js and not node-gyp for the quick build: measured once on this project's 2-core machine (loaded by another
// build at the time), the CPU addon took 128 s of CPU with cmake-js (configure included) and 115 s with node-gyp
// (`npm run build:gyp`) — equal within the noise of that machine — and cmake-js compiles it from the same
// CMakeLists.txt, flags and warnings as `npm run build`, needs no Node headers (node-gyp downloads them into the home
// folder when they are not installed beside node) and no Python.
//
// `node scripts/ensure-built.mjs --print-plan` prints, as JSON, what it would do here and the exact commands, and
// runs nothing; test/quick-build.test.ts checks that plan (imported as quickBuildPlan()).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const defaultRoot = resolve(here, '..');

/** The CMake options of the quick build: only the addon, CPU kernels only. */
export const QUICK_OPTIONS = Object.freeze({
  SHAREDFORMER_CUDA: 'OFF', // no CUDA kernels even when nvcc is found (`npm run build` builds them)
  SHAREDFORMER_TESTS: 'OFF', // no native test programs (test/native; `npm run test:native`)
  SHAREDFORMER_BENCH: 'OFF', // no native benchmarks (not built under cmake-js anyway)
  SHAREDFORMER_CUDA_EMU: 'OFF', // no CPU lane of the CUDA kernels (not built under cmake-js anyway)
});
/** The one CMake target the quick build builds. */
export const QUICK_TARGET = 'sharedformer';

// The packages the scripts run (ava, tsx, cmake-js, typescript) and the addon's headers (node-addon-api).
const needed = ['ava', 'tsx', 'cmake-js', 'typescript', 'node-addon-api', 'bindings'];

/** Newest modification time (ms) of the files under each path (files or folders, recursively); 0 when none. */
function newest(paths) {
  let t = 0;
  const visit = (p) => {
    let st;
    try {
      st = statSync(p);
    } catch {
      return;
    }
    if (st.isDirectory()) for (const e of readdirSync(p)) visit(join(p, e));
    else t = Math.max(t, st.mtimeMs);
  };
  for (const p of paths) visit(p);
  return t;
}

/**
 * What ensure-built would do in `root`, and how: `deps` (npm ci), `addon` (the quick build), `ts` (dist/). Each has
 * `needed` and the command(s) as [file, ...args]; `addon` also has the CMake options and the target. Reads only.
 */
export function quickBuildPlan(root = defaultRoot, env = process.env) {
  const missing = needed.filter((p) => !existsSync(join(root, 'node_modules', p, 'package.json')));
  const binary = join(root, 'build', 'Release', 'sharedformer.node');
  const quickDir = join(root, 'build', 'quick');
  const cmakeJs = join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
  const defs = Object.entries(QUICK_OPTIONS).map(([k, v]) => `--CD${k}=${v}`);
  // cmake-js puts its own CMAKE_LIBRARY_OUTPUT_DIRECTORY (the tree's Release/) first; a later -D wins.
  defs.push(`--CDCMAKE_LIBRARY_OUTPUT_DIRECTORY=${dirname(binary)}`);
  const common = ['--out', quickDir, ...defs];
  const given = env.SHAREDFORMER_BINARY;
  const binaryTime = existsSync(binary) ? statSync(binary).mtimeMs : 0;
  const distIndex = join(root, 'dist', 'index.js');
  const distTime = existsSync(distIndex) ? statSync(distIndex).mtimeMs : 0;
  const tsInputs = ['lib', 'tsconfig.json', 'tsconfig.build.json'].map((p) => join(root, p));
  const tsNeeded = distTime === 0 || newest(tsInputs) > distTime;
  return {
    root,
    deps: { needed: missing.length > 0, missing, command: ['npm', 'ci', '--no-audit', '--no-fund'] },
    addon: {
      needed: !given && binaryTime === 0,
      binary: given ?? binary,
      given: !!given,
      // the binary exists but a C++/CUDA source or CMakeLists.txt is newer (only warned about, never rebuilt here)
      stale: !given && binaryTime > 0 && newest(['native', 'cuda', 'CMakeLists.txt'].map((p) => join(root, p))) > binaryTime,
      dir: quickDir,
      options: { ...QUICK_OPTIONS },
      target: QUICK_TARGET,
      commands: [
        [process.execPath, cmakeJs, 'configure', ...common],
        [process.execPath, cmakeJs, 'build', ...common, '--target', QUICK_TARGET, '--parallel', String(availableParallelism())],
      ],
    },
    ts: {
      needed: tsNeeded,
      reason: distTime === 0 ? 'dist/ is missing' : 'dist/ is older than lib/',
      command: [process.execPath, join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.build.json')],
    },
  };
}

function run([file, ...args], root) {
  const r = spawnSync(file, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`sharedformer: failed (exit ${r.status ?? r.signal}): ${[file, ...args].join(' ')}`);
    process.exit(r.status || 1);
  }
}

function main(argv) {
  const root = defaultRoot;
  process.chdir(root);
  if (argv.includes('--print-plan')) {
    console.log(JSON.stringify(quickBuildPlan(root), null, 2));
    return;
  }
  let plan = quickBuildPlan(root);
  if (plan.deps.needed) {
    console.log(`sharedformer: installing the dependencies (npm ci; missing: ${plan.deps.missing.join(', ')}; about 20 s)...`);
    run(plan.deps.command, root);
    plan = quickBuildPlan(root);
  }

  if (plan.addon.given) {
    if (!existsSync(plan.addon.binary)) {
      console.error(`SHAREDFORMER_BINARY=${plan.addon.binary} does not exist`);
      process.exit(1);
    }
  } else if (plan.addon.needed) {
    const cores = availableParallelism();
    // about 2 CPU-minutes of C++ (measured: 128 s of CPU on a 2-core machine, configure included)
    const minutes = Math.max(0.5, Math.round((2 / Math.min(cores, 16)) * 2) / 2);
    console.log(
      `sharedformer: no local build found; building the CPU addon (cmake-js, no CUDA, no native tests; ` +
        `about ${minutes === 1 ? '1 minute' : `${minutes} minutes`} on ${cores} core${cores === 1 ? '' : 's'}) ` +
        `in ${relative(root, plan.addon.dir)}/ -> ${relative(root, plan.addon.binary)}. ` +
        '`npm run build` builds the CUDA kernels too (when nvcc is found; many minutes).',
    );
    const t0 = Date.now();
    for (const c of plan.addon.commands) run(c, root);
    if (!existsSync(plan.addon.binary)) {
      console.error(`sharedformer: the build ran but ${plan.addon.binary} is missing`);
      process.exit(1);
    }
    console.log(`sharedformer: built the CPU addon in ${Math.round((Date.now() - t0) / 1000)} s`);
  } else if (plan.addon.stale) {
    console.log(
      `sharedformer: note: ${relative(root, plan.addon.binary)} is older than the C++/CUDA sources and is used as it is; ` +
        '`npm run build` rebuilds it (with CUDA when nvcc is found), or delete it and the next `npm test` / `npm run demo` ' +
        'makes the quick CPU build',
    );
  }

  if (plan.ts.needed) {
    console.log(`sharedformer: compiling the TypeScript (npm run build:ts: lib/ -> dist/, ${plan.ts.reason}; about 10 s)...`);
    run(plan.ts.command, root);
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main(process.argv.slice(2));
