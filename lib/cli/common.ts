// common.ts — what every command of the CLI shares: the I/O it writes to, its two error classes and exit codes,
// number formatting, and output that is safe to print (human text and JSON lines).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../native.ts';

/** Where the CLI writes: anything with write(); isTTY decides between a redrawn progress bar and periodic lines. */
export interface CliStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export interface CliIO {
  stdout: CliStream;
  stderr: CliStream;
  /**
   * Interrupts `train`, `demo` and `compare` when aborted, as Ctrl-C does (train writes its checkpoint and exits
   * 130). When given, main() installs no SIGINT handler of its own.
   */
  signal?: AbortSignal;
}

/** A mistake in how the command was called: exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** A failure while doing the work (I/O, bad file contents): exit code 1, the message printed without a stack. */
export class CliError extends Error {
  override name = 'CliError';
}

/**
 * An error of one rank of a distributed run (train --distributed): reported as `rank R: ` before the usual line, so
 * that the interleaved output of mpirun says which process failed; `error` keeps its exit code (usage or runtime).
 */
export class RankError extends Error {
  override name = 'RankError';
  constructor(readonly rank: number, readonly error: unknown) {
    super(message(error));
  }
}

export const EXIT_OK = 0;
export const EXIT_RUNTIME = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;

export function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return i < 0 ? s : s.slice(0, i);
}

/** The package version, from package.json next to lib/ (or dist/). */
export function version(): string {
  try {
    return (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

export const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
export const fixed = (n: number | undefined, d: number): string => (n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(d));

export function clock(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '--:--';
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), ss = s % 60;
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${String(ss).padStart(2, '0')}` : `${m}:${String(ss).padStart(2, '0')}`;
}

export function parseJSON(text: string, what: string, err: (m: string) => Error): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw err(`${what} is not valid JSON: ${firstLine(message(e))}`);
  }
}

const hex4 = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`;
/**
 * Text made safe to print: every C0 control but tab and newline, DEL, every C1 control (ESC, CSI, ... which a terminal
 * would act on) written as \u001b and the like. Generated text and file names may hold any character.
 */
export function printable(s: string): string {
  return s.replace(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/g, hex4);
}
/** JSON.stringify with DEL, C1 controls, U+2028 and U+2029 escaped too (JSON.stringify escapes C0 controls). */
export const jsonText = (o: object): string => JSON.stringify(o).replace(/[\x7f-\x9f\u2028\u2029]/g, hex4);
/** One JSON object per line on stdout. */
export const jsonLine = (io: CliIO, o: object) => io.stdout.write(`${jsonText(o)}\n`);
/** One line of human text on stdout, made printable. */
export const say = (io: CliIO, s = '') => io.stdout.write(`${printable(s)}\n`);

/** Right-aligned columns (the first left-aligned), two spaces apart, indented by two. */
export function tableLines(head: string[], cells: string[][]): string[] {
  const w = head.map((h, j) => Math.max(h.length, ...cells.map((c) => c[j].length)));
  const row = (c: string[]) => `  ${c.map((x, j) => (j === 0 ? x.padEnd(w[j]) : x.padStart(w[j]))).join('  ')}`.trimEnd();
  return [row(head), ...cells.map(row)];
}
