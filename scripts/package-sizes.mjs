#!/usr/bin/env node
// package-sizes.mjs — copies the size table that scripts/prebuild.sh wrote (OUTDIR/sizes.json) into README.md and
// docs/packaging.md, between the markers `<!-- package-sizes:begin -->` and `<!-- package-sizes:end -->`.
//
//   node scripts/package-sizes.mjs build-prebuild/packages/sizes.json          rewrite both files
//   node scripts/package-sizes.mjs build-prebuild/packages/sizes.json --check  only compare: exit 1 when a documented
//                                                                              size is more than 10% off or missing
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const [file, flag] = process.argv.slice(2);
if (!file) {
  console.error('usage: node scripts/package-sizes.mjs OUTDIR/sizes.json [--check]');
  process.exit(2);
}
const rows = JSON.parse(readFileSync(file, 'utf8'));
const mb = (n) => `${(n / 1e6).toFixed(2)} MB`;
const host = `${process.platform}-${process.arch}`;
const table = [
  '| package | packed (tarball) | unpacked | files |',
  '| --- | --- | --- | --- |',
  ...rows.map((r) => `| \`${r.name}\` | ${mb(r.size)} | ${mb(r.unpackedSize)} | ${r.entryCount} |`),
  '',
  `Measured by \`scripts/prebuild.sh\` (version ${rows[0]?.version}, ${host}); ` +
    '`node scripts/package-sizes.mjs\nbuild-prebuild/packages/sizes.json` copies the table here.',
].join('\n');

const begin = '<!-- package-sizes:begin -->';
const end = '<!-- package-sizes:end -->';
let bad = 0;
for (const doc of ['README.md', 'docs/packaging.md']) {
  const path = join(root, doc);
  const text = readFileSync(path, 'utf8');
  const i = text.indexOf(begin), j = text.indexOf(end);
  if (i < 0 || j < i) {
    console.error(`${doc}: no ${begin} ... ${end} block`);
    bad++;
    continue;
  }
  if (flag === '--check') {
    const block = text.slice(i, j);
    for (const r of rows) {
      const m = block.match(new RegExp(`\\| \`${r.name.replace(/[/]/g, '\\/')}\` \\| ([0-9.]+) MB \\| ([0-9.]+) MB`));
      const off = (doc, got) => Math.abs(Number(doc) * 1e6 - got) / got > 0.1;
      if (!m || off(m[1], r.size) || off(m[2], r.unpackedSize)) {
        console.error(`${doc}: ${r.name} is documented as ${m ? `${m[1]} / ${m[2]} MB` : 'missing'}, measured ${mb(r.size)} / ${mb(r.unpackedSize)}`);
        bad++;
      }
    }
    continue;
  }
  writeFileSync(path, text.slice(0, i + begin.length) + '\n' + table + '\n' + text.slice(j));
  console.log(`${doc}: sizes updated`);
}
process.exit(bad ? 1 : 0);
