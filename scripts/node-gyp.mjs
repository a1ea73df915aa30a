// `npm run build:gyp`: runs node-gyp with the arguments given, building against this Node's own headers when they are
// installed beside it (Debian's nodejs, the official tarballs and nvm all put them in <prefix>/include/node), so that
// node-gyp needs no download and no header cache in the home folder. An explicit `--nodedir` or npm's `nodedir`
// setting wins; without local headers node-gyp falls back to its default (it downloads them once into its cache).
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

const args = process.argv.slice(2);
const prefix = resolve(dirname(process.execPath), '..');
const given = args.some((a) => a.startsWith('--nodedir')) || process.env.npm_config_nodedir;
if (!given) {
  if (existsSync(join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
  else console.log(`node-gyp: no Node headers in ${join(prefix, 'include', 'node')}; node-gyp will fetch them`);
}
const gyp = createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
const r = spawnSync(process.execPath, [gyp, ...args], { stdio: 'inherit' });
process.exit(r.status ?? 1);
