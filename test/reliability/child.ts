// child.ts — spawns the reliability suite's helper scripts as child processes (node --import tsx), so that a native
// crash, a hang or a SIGKILL lands in that process and is seen here as a signal or an exit code.
import { spawn } from 'node:child_process';
import { writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The full counts (npm run reliability) instead of the reduced CI counts. */
export const FULL = process.env.SHAREDFORMER_RELIABILITY === 'full';

export const script = (name: string) => fileURLToPath(new URL(`./${name}`, import.meta.url));

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  timedOut: boolean;
}

/** Runs `node --import tsx --expose-gc <script> ...args`; resolves when it exits (killed after timeoutMs). */
export function runChild(name: string, args: (string | number)[], o: { timeoutMs?: number; env?: NodeJS.ProcessEnv; onLine?: (line: string) => void } = {}): Promise<ChildResult> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', '--expose-gc', script(name), ...args.map(String)], {
      env: { ...process.env, ...o.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '', stderr = '', pending = '', timedOut = false;
    p.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      if (o.onLine) {
        pending += d;
        const lines = pending.split('\n');
        pending = lines.pop()!;
        for (const l of lines) if (l) o.onLine(l);
      }
    });
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = o.timeoutMs ? setTimeout(() => ((timedOut = true), p.kill('SIGKILL')), o.timeoutMs) : undefined;
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      if (o.onLine && pending) o.onLine(pending);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0, timedOut });
    });
  });
}

/** Writes a figure for scripts/reliability.ts to collect (when it asked for them). */
export async function record(name: string, figures: Record<string, unknown>): Promise<void> {
  const dir = process.env.SHAREDFORMER_RELIABILITY_OUT;
  if (!dir) return;
  const { mkdirSync, writeFileSync } = await import('node:fs');
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${dir}/${name}.json`, JSON.stringify({ name, full: FULL, ...figures }, null, 2));
}

/**
 * Writes one line to stdout synchronously, retrying while the pipe is full (a child's stdout is a non-blocking pipe:
 * writeSync throws EAGAIN when the parent has not read it yet). Lines survive a SIGKILL right after the call.
 */
export function writeLine(s: string): void {
  const buf = Buffer.from(`${s}\n`);
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let off = 0; off < buf.length; ) {
    try {
      off += writeSync(1, buf, off);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      Atomics.wait(pause, 0, 0, 2);
    }
  }
}
