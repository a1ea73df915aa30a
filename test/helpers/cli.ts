// Runs the CLI in-process through main() with captured stdout/stderr (shared by the CLI test files).
import { main, type CliIO } from '../../lib/cli/index.ts';

export interface Captured {
  io: CliIO;
  out: () => string;
  err: () => string;
}

/** An io whose writes are collected; onOut sees every stdout chunk (to react to progress, e.g. abort). */
export function capture(tty = false, onOut?: (s: string) => void): Captured {
  let out = '', err = '';
  return {
    io: {
      stdout: { write: (s: string) => { out += s; onOut?.(s); } },
      stderr: { write: (s: string) => (err += s), isTTY: tty, columns: 200 },
    },
    out: () => out,
    err: () => err,
  };
}

/** main(argv) with captured output: the exit code, stdout and stderr. */
export async function run(argv: string[], signal?: AbortSignal, onOut?: (s: string) => void) {
  const c = capture(false, onOut);
  const code = await main(argv, signal ? { ...c.io, signal } : c.io);
  return { code, out: c.out(), err: c.err() };
}

/** Parses --json output: one object per line. */
export const jsonLines = (s: string) => s.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
