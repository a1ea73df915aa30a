// Runs before `npm test`, `npm run demo` and `npm run reliability`, so that a fresh clone needs nothing typed before
// them: installs the dependencies (`npm ci`, from package-lock.json) when node_modules lacks them, then builds the addon
// with cmake-js (`npm run build`) when no binary can be found. Does nothing when both are in place; with
// SHAREDFORMER_BINARY set it only checks that the file exists.
import { existsSync } from 'node:fs';
import { execSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
process.chdir(root);

// The packages the scripts run (ava, tsx, cmake-js, typescript) and the addon's headers (node-addon-api).
const needed = ['ava', 'tsx', 'cmake-js', 'typescript', 'node-addon-api', 'bindings'];
const missing = needed.filter((p) => !existsSync(join('node_modules', p, 'package.json')));
if (missing.length) {
  console.log(`sharedformer: installing the dependencies (npm ci; missing: ${missing.join(', ')})...`);
  execSync('npm ci --no-audit --no-fund', { stdio: 'inherit' });
}

if (process.env.SHAREDFORMER_BINARY) {
  if (!existsSync(process.env.SHAREDFORMER_BINARY)) {
    console.error(`SHAREDFORMER_BINARY=${process.env.SHAREDFORMER_BINARY} does not exist`);
    process.exit(1);
  }
} else if (!existsSync('build/Release/sharedformer.node')) {
  console.log('sharedformer: no local build found; building the addon with cmake-js (npm run build, a few minutes)...');
  execSync('npm run build', { stdio: 'inherit' });
}
