// progress.ts — the progress bar of the training commands: redrawn in place on a terminal, periodic lines otherwise;
// in a distributed run, each line also shows the step's time inside collectives.
import type { StepInfo } from '../train/trainer.ts';
import { clock, fmt, type CliStream } from './common.ts';

/** A progress bar: redrawn in place with \r when the stream is a terminal, otherwise a line every `every` steps. */
export class Progress {
  private drawn = false;
  private lastDraw = 0;
  private readonly every: number;
  constructor(
    private readonly out: CliStream,
    private readonly label: string,
    private readonly total: number,
    private readonly quiet = false,
  ) {
    this.every = Math.max(1, Math.round(total / 10));
  }

  line(s: StepInfo): string {
    const width = 24;
    const filled = Math.min(width, Math.round((width * s.step) / this.total));
    const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
    const w = String(this.total).length;
    // distributed: this rank's milliseconds inside collectives during the step
    const comm = s.comm ? `  comm ${s.comm.ms.toFixed(1)} ms` : '';
    return `${this.label} [${bar}] ${String(s.step).padStart(w)}/${this.total}  loss ${s.loss.toFixed(3)}  ${fmt(s.tokensPerSec)} tok/s${comm}  ETA ${clock(s.etaMs)}`;
  }

  update(s: StepInfo): void {
    if (this.quiet) return;
    if (this.out.isTTY) {
      const now = performance.now();
      if (s.step < this.total && now - this.lastDraw < 80) return;
      this.lastDraw = now;
      let l = this.line(s);
      if (this.out.columns && l.length >= this.out.columns) l = l.slice(0, this.out.columns - 1);
      this.out.write(`\r${l}\x1b[K`);
      this.drawn = true;
    } else if (s.step === 1 || s.step % this.every === 0 || s.step === this.total) {
      this.out.write(`${this.line(s)}\n`);
    }
  }

  /** Erases the bar before other output (it comes back on the next update). */
  clear(): void {
    if (this.drawn) this.out.write('\r\x1b[K');
    this.drawn = false;
  }

  /** Ends the bar's line. */
  done(): void {
    if (this.drawn) this.out.write('\n');
    this.drawn = false;
  }
}
