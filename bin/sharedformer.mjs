#!/usr/bin/env node
// The `sharedformer` command. Runs the compiled CLI (dist/cli/index.js, from `npm run build:ts`) when it exists;
// otherwise, in a checkout, the TypeScript source (lib/cli/index.ts) through tsx. SHAREDFORMER_CLI_SOURCE=1 forces the
// source. In a checkout (lib/ is there; an installed package has none) the source is also used when a file of lib/ is
// newer than dist/cli/index.js, so that an edit is never run stale (`npm test` / `npm run demo` recompile dist/ then).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// `sharedformer help | head`: a closed pipe ends the output quietly.
process.stdout.on('error', (e) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw e;
});

const dist = new URL('../dist/cli/index.js', import.meta.url);
const source = new URL('../lib/cli/index.ts', import.meta.url);
/** Whether a checkout's lib/ has a file newer than dist/cli/index.js (false in an installed package: no lib/). */
function distIsStale() {
  const lib = fileURLToPath(new URL('../lib', import.meta.url));
  if (!existsSync(lib)) return false;
  const built = statSync(fileURLToPath(dist)).mtimeMs;
  const newer = (d) => readdirSync(d, { withFileTypes: true }).some((e) =>
    e.isDirectory() ? newer(`${d}/${e.name}`) : statSync(`${d}/${e.name}`).mtimeMs > built);
  return newer(lib);
}
const useSource = process.env.SHAREDFORMER_CLI_SOURCE === '1' || !existsSync(fileURLToPath(dist)) || distIsStale();

let cli;
if (useSource) {
  let register;
  try {
    ({ register } = await import('tsx/esm/api'));
  } catch {
    process.stderr.write('sharedformer: dist/cli/index.js is missing and tsx is not installed to run lib/cli/index.ts; run `npm run build:ts` (or `npm ci` in a checkout)\n');
    process.exit(1);
  }
  register();
  cli = await import(source.href);
} else {
  cli = await import(dist.href);
}
process.exitCode = await cli.main(process.argv.slice(2));
