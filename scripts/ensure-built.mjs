// Runs before `npm test`: builds the addon with cmake-js when no binary can be found, so that a fresh clone needs
// only `npm ci` and `npm test`. Does nothing when SHAREDFORMER_BINARY or a local build already exists.
import { existsSync } from 'node:fs';
import { execSync } from 'node:child_process';

if (process.env.SHAREDFORMER_BINARY) {
  if (!existsSync(process.env.SHAREDFORMER_BINARY)) {
    console.error(`SHAREDFORMER_BINARY=${process.env.SHAREDFORMER_BINARY} does not exist`);
    process.exit(1);
  }
} else if (!existsSync('build/Release/sharedformer.node')) {
  console.log('sharedformer: no local build found; building with cmake-js (npm run build)...');
  execSync('npm run build', { stdio: 'inherit' });
}
