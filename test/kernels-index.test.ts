// docs/kernels.md (the kernel index) stays true to the code: every backticked repository path exists; every backticked
// identifier that follows a path in the same table cell (or prose line) occurs in that file, so a renamed function,
// test or binding breaks this test; every quoted benchmark row name occurs, with its quotes, in the bench source named
// before it; and every `export function` of lib/kernels.ts has a row (a new kernel without one fails here).
import test from 'ava';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const doc = readFileSync(join(root, 'docs', 'kernels.md'), 'utf8');

/** A backticked token that names a file or folder of the repository: a `/`, no spaces, no glob, no URL. */
const isPath = (s: string) => s.includes('/') && /^[\w.\-/]+$/.test(s) && !s.includes('//');
const isGlob = (s: string) => s.includes('/') && s.includes('*');
const isIdent = (s: string) => /^[A-Za-z_][A-Za-z0-9_]*$/.test(s);
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const texts = new Map<string, string>();
function text(path: string): string {
  let s = texts.get(path);
  if (s === undefined) texts.set(path, (s = readFileSync(join(root, path), 'utf8')));
  return s;
}

interface Table {
  header: string[];
  rows: { line: number; cells: string[] }[];
}

/** The markdown tables of the document (a header line, a |---| line, then rows), and the lines outside them. */
function parse(md: string): { tables: Table[]; prose: { line: number; text: string }[] } {
  const lines = md.split('\n');
  const tables: Table[] = [];
  const prose: { line: number; text: string }[] = [];
  const split = (l: string) => l.trim().replace(/^\|/, '').replace(/\|$/, '').split('|').map((c) => c.trim());
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].startsWith('|') && i + 1 < lines.length && /^\|\s*-{3,}/.test(lines[i + 1])) {
      const t: Table = { header: split(lines[i]), rows: [] };
      i += 2;
      for (; i < lines.length && lines[i].startsWith('|'); i++) t.rows.push({ line: i + 1, cells: split(lines[i]) });
      tables.push(t);
      i--;
    } else {
      prose.push({ line: i + 1, text: lines[i] });
    }
  }
  return { tables, prose };
}

/** The tokens of a cell or line, in order: backticked code and double-quoted strings (outside backticks). */
function tokens(s: string): { kind: 'code' | 'quote'; value: string }[] {
  const out: { kind: 'code' | 'quote'; value: string }[] = [];
  for (const m of s.matchAll(/`([^`]+)`|"([^"]*)"/g)) out.push(m[1] !== undefined ? { kind: 'code', value: m[1] } : { kind: 'quote', value: m[2] });
  return out;
}

interface Problem {
  where: string;
  what: string;
}

/**
 * Checks one cell or line: paths exist, identifiers after a path occur in it (strict: in a table cell an identifier
 * with no path before it is an error too), and, in a benchmark cell, quoted row names occur with their quotes in the
 * bench source named before them.
 */
function check(where: string, s: string, opts: { strict: boolean; bench: boolean }): Problem[] {
  const problems: Problem[] = [];
  let path: string | null = null;
  for (const tok of tokens(s)) {
    if (tok.kind === 'code') {
      const v = tok.value;
      if (isGlob(v)) {
        path = null;
      } else if (isPath(v)) {
        if (!existsSync(join(root, v))) {
          problems.push({ where, what: `\`${v}\` does not exist` });
          path = null;
        } else {
          path = statSync(join(root, v)).isFile() ? v : null;
        }
      } else if (isIdent(v)) {
        if (path) {
          if (!new RegExp(`\\b${escape(v)}\\b`).test(text(path))) problems.push({ where, what: `\`${v}\` does not occur in \`${path}\`` });
        } else if (opts.strict) {
          problems.push({ where, what: `\`${v}\` names no file: put its path before it` });
        }
      }
    } else if (opts.bench) {
      if (!path || !path.startsWith('scripts/bench/')) problems.push({ where, what: `bench row "${tok.value}" follows no bench source` });
      else if (!text(path).includes(`"${tok.value}"`)) problems.push({ where, what: `bench row "${tok.value}" does not occur in \`${path}\`` });
    }
  }
  return problems;
}

const { tables, prose } = parse(doc);

test('the document has its tables, each with the nine columns', (t) => {
  t.true(tables.length >= 7, `${tables.length} tables`);
  for (const tb of tables) {
    t.deepEqual(tb.header, ['Kernel', 'CPU', 'CUDA', 'Binding', 'Naive-reference test', 'CUDA-vs-CPU test', 'JS test', 'CPU bench', 'CUDA bench']);
    for (const r of tb.rows) t.is(r.cells.length, tb.header.length, `line ${r.line}: ${r.cells.length} cells`);
  }
});

test('every path exists, every function named after a path occurs in it, every bench row occurs in its bench source', (t) => {
  const problems: Problem[] = [];
  let paths = 0, idents = 0, benches = 0;
  for (const tb of tables)
    for (const r of tb.rows)
      r.cells.forEach((cell, c) => {
        const bench = /bench/i.test(tb.header[c]);
        for (const tok of tokens(cell)) {
          if (tok.kind === 'code' && isPath(tok.value)) paths++;
          else if (tok.kind === 'code' && isIdent(tok.value)) idents++;
          else if (tok.kind === 'quote' && bench) benches++;
        }
        problems.push(...check(`line ${r.line}, column ${tb.header[c]}`, cell, { strict: true, bench }));
      });
  for (const l of prose) problems.push(...check(`line ${l.line}`, l.text, { strict: false, bench: false }));
  t.deepEqual(problems, []);
  // the check has something to check (a parser that found nothing would pass vacuously)
  t.true(paths > 100 && idents > 100 && benches > 30, `${paths} paths, ${idents} identifiers, ${benches} bench rows`);
});

test('every export function of lib/kernels.ts has a row', (t) => {
  const src = text('lib/kernels.ts');
  const exported = [...src.matchAll(/^export function (\w+)/gm)].map((m) => m[1]);
  t.true(exported.length >= 25, `${exported.length} exported functions`);
  const named = new Set(tables.flatMap((tb) => tb.rows.flatMap((r) => tokens(r.cells[0]).filter((x) => x.kind === 'code').map((x) => x.value))));
  t.deepEqual(exported.filter((f) => !named.has(f)), [], 'kernels without a row in docs/kernels.md');
});

test('the CUDA-only kernels have their rows', (t) => {
  for (const [file, fn] of [['cuda/persistent.cu', 'shared_block_decode'], ['cuda/gemm_sm90.cu', 'gemm_wgmma_kernel'], ['cuda/embedding.cu', 'check_ids']])
    t.true(tables.some((tb) => tb.rows.some((r) => r.cells[2].includes(`\`${file}\` \`${fn}\``))), `${file} ${fn}`);
});

test('the checker itself: a misspelt path, a renamed function and a missing bench row are caught', (t) => {
  t.deepEqual(check('x', '`native/cpu/gelu.cpp` `gelu_forward`', { strict: true, bench: false }), []);
  t.true(check('x', '`native/cpu/gelu_.cpp` `gelu_forward`', { strict: true, bench: false }).length >= 1);
  t.is(check('x', '`native/cpu/gelu.cpp` `gelu_forwards`', { strict: true, bench: false }).length, 1);
  t.is(check('x', '`gelu_forward`', { strict: true, bench: false }).length, 1);
  t.deepEqual(check('x', '`scripts/bench/sf_bench.cpp` "gelu fwd"', { strict: true, bench: true }), []);
  t.is(check('x', '`scripts/bench/sf_bench.cpp` "gelu forward"', { strict: true, bench: true }).length, 1);
});
