// signals.ts — Ctrl-C for the training commands: the first SIGINT asks for a stop after the current step (runTraining
// then writes the checkpoint), the second says it is still coming, the third quits at once.
import { EXIT_INTERRUPTED, type CliIO } from './common.ts';

/**
 * SIGINTs within this many milliseconds of the previous one count as one: `npm run cli` forwards the SIGINT that a
 * terminal's Ctrl-C also sends to the whole process group, so one keypress can arrive twice.
 */
const SIGINT_BURST_MS = 300;

/**
 * SIGINT -> abort; or io.signal when the caller gives one. The first Ctrl-C requests a stop after the current step
 * (train then writes its checkpoint); a second one does not lose it: the command goes on finishing the step and the
 * checkpoint, and says so; a third quits at once (exit 130, no checkpoint).
 */
export function interrupts(io: CliIO): { signal: AbortSignal; dispose(): void } {
  if (io.signal) return { signal: io.signal, dispose() {} };
  const ac = new AbortController();
  let presses = 0, lastAt = -Infinity;
  const onInt = () => {
    const now = performance.now();
    const burst = now - lastAt < SIGINT_BURST_MS;
    lastAt = now;
    if (burst && presses > 0) return;
    presses++;
    if (presses === 1) {
      io.stderr.write('\ninterrupted: stopping after the current step (Ctrl-C twice more to quit at once, without a checkpoint)\n');
      ac.abort();
    } else if (presses === 2) {
      io.stderr.write('\nfinishing the current step and the checkpoint... (Ctrl-C once more to quit at once, without it)\n');
    } else {
      io.stderr.write('\nquitting without finishing\n');
      process.exit(EXIT_INTERRUPTED);
    }
  };
  process.on('SIGINT', onInt);
  return { signal: ac.signal, dispose: () => void process.off('SIGINT', onInt) };
}
