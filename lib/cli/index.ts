// index.ts — the `sharedformer` command line: demo, train, eval, generate, compare, info, bench, help (docs/cli.md).
//
// main(argv, io) runs one command and resolves to its exit code; it never calls process.exit. Results go to
// io.stdout (human text, or one JSON object per line with --json); progress bars, notices and errors go to io.stderr.
// Exit codes: 0 success; 2 usage errors (unknown command or flag, a missing or malformed value, a missing required
// flag, an invalid model or training configuration); 1 runtime errors (a file that cannot be read or is not a
// checkpoint, text the tokenizer cannot encode, data too small, a failure while training); 130 interrupted (SIGINT,
// or io.signal aborted), after writing the checkpoint. Errors are one line on stderr: `sharedformer CMD: message`
// (SHAREDFORMER_DEBUG=1 adds the stack); a rank of `train --distributed` puts `rank R: ` before it (RankError).
//
// The pieces: common.ts (I/O, errors, formatting), flags.ts (the parser and the flag tables), progress.ts (the
// progress bar), data.ts, config.ts, device.ts, checkpoint.ts and signals.ts (shared by the commands),
// run-training.ts (the one training loop of train, demo and compare), and one file per command.
import { EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, RankError, UsageError, firstLine, message, printable, version, type CliIO } from './common.ts';
import { parseFlags, type Command, type Specs } from './flags.ts';
import { interrupts } from './signals.ts';
import { benchCmd, benchCommand } from './bench.ts';
import { compareCmd } from './compare.ts';
import { demoCmd } from './demo.ts';
import { evalCmd } from './eval.ts';
import { generateCmd } from './generate.ts';
import { infoCmd } from './info.ts';
import { trainCmd } from './train.ts';
import { tokenizerCmd } from './tokenizer.ts';

export { CliError, UsageError, printable, version, type CliIO, type CliStream } from './common.ts';
export { parseFlags, invocationDir, type Flags, type FlagSpec, type Specs } from './flags.ts';
export { Progress } from './progress.ts';
export { notText } from './data.ts';
export { loadModel, MAX_RECORDED_BATCH, MAX_RECORDED_CORPUS_CHARS } from './checkpoint.ts';
export { generateText } from './generate.ts';
export { benchArgs, benchInvocation } from './bench.ts';
export { parseStrategyList, type CompareRow } from './compare.ts';
export { runTraining, outputPaths, type RunTrainingOptions, type TrainingResult, type StepRecord } from './run-training.ts';

const COMMANDS: Record<string, Command> = {
  demo: demoCmd,
  train: trainCmd,
  eval: evalCmd,
  generate: generateCmd,
  compare: compareCmd,
  info: infoCmd,
  bench: benchCmd,
  tokenizer: tokenizerCmd,
};

function flagLines(specs: Specs): string[] {
  const rows = Object.entries(specs)
    .filter(([, s]) => !s.hidden)
    .map(([k, s]) => [`--${k}${s.kind === 'bool' ? '' : ` ${s.arg ?? 'V'}`}`, s.help]);
  const w = Math.max(0, ...rows.map((r) => r[0].length));
  return rows.map(([a, b]) => `    ${a.padEnd(w)}  ${b}`);
}

/** Usage of one command, or of all of them. */
export function usage(cmd?: string): string {
  if (cmd !== undefined && COMMANDS[cmd]) {
    const c = COMMANDS[cmd];
    const lines = [`${c.usage}`, '', `${c.summary}.`, ''];
    if (cmd === 'bench') lines.push('  Runs `node --import tsx scripts/bench.ts SUITES [--json FILE]` in the package folder, once the arguments check out.', '  Suites: kernels, tensors (default both), train; --json FILE (or --json=FILE) writes the rows. Anything else is a usage error (exit 2).');
    else lines.push('  flags:', ...flagLines(c.specs));
    lines.push('', '  examples:', ...c.examples.map((e) => `    ${e}`));
    return lines.join('\n');
  }
  const lines = [
    `sharedformer ${version()}: Transformers with cross-layer parameter sharing`,
    '',
    'usage: sharedformer <command> [flags]     (sharedformer help <command> for one command)',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([k, c]) => `  ${k.padEnd(9)} ${c.summary}`),
    `  ${'help'.padEnd(9)} this text; help <command> for one command`,
    '',
  ];
  for (const [k, c] of Object.entries(COMMANDS)) {
    lines.push(`${c.usage}`);
    if (k === 'bench') lines.push('    suites kernels, tensors (default both), train; --json FILE writes the rows; anything else is a usage error');
    else lines.push(...flagLines(c.specs));
    lines.push('');
  }
  lines.push('exit codes: 0 success, 1 runtime error, 2 usage error, 130 interrupted (train writes its checkpoint first)');
  lines.push('docs: docs/cli.md');
  return lines.join('\n');
}

function report(e: unknown, io: CliIO, cmd: string | undefined): number {
  let where = cmd && COMMANDS[cmd] ? `sharedformer ${cmd}` : 'sharedformer';
  if (e instanceof RankError) {
    where = `rank ${e.rank}: ${where}`;
    e = e.error;
  }
  const debug = process.env.SHAREDFORMER_DEBUG && process.env.SHAREDFORMER_DEBUG !== '0';
  if (e instanceof UsageError) {
    io.stderr.write(`${where}: ${printable(e.message).replace(/[\t\n]/g, (c) => (c === '\t' ? '\\t' : '\\n'))} (see: sharedformer help${cmd && COMMANDS[cmd] ? ` ${cmd}` : ''})\n`);
    return EXIT_USAGE;
  }
  const m = message(e);
  const more = m.includes('\n') && !debug ? ' (SHAREDFORMER_DEBUG=1 shows the details)' : '';
  io.stderr.write(`${where}: ${printable(firstLine(m)).replace(/\t/g, '\\t')}${more}\n`);
  if (debug && e instanceof Error && e.stack) io.stderr.write(`${e.stack}\n`);
  return EXIT_RUNTIME;
}

/** Runs the command line `argv` (without node and the script); resolves to the exit code. */
export async function main(argv: string[], io: CliIO = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    if (cmd === undefined || cmd === 'help' || cmd === '--help' || cmd === '-h') {
      const topic = cmd === 'help' ? rest[0] : undefined;
      if (topic !== undefined && !COMMANDS[topic]) throw new UsageError(`no such command '${topic}'; commands: ${Object.keys(COMMANDS).join(', ')}`);
      io.stdout.write(`${usage(topic)}\n`);
      return EXIT_OK;
    }
    if (cmd === '--version' || cmd === 'version') {
      io.stdout.write(`${version()}\n`);
      return EXIT_OK;
    }
    const c = COMMANDS[cmd];
    if (!c) throw new UsageError(`unknown command '${cmd}'; commands: ${Object.keys(COMMANDS).join(', ')}, help`);
    if (cmd === 'bench') {
      if (rest.includes('--help') || rest.includes('-h')) {
        io.stdout.write(`${usage('bench')}\n`);
        return EXIT_OK;
      }
      return await benchCommand(rest, io);
    }
    let args = rest, verb: string | undefined;
    if (c.verbs) {
      verb = rest[0];
      if (verb !== undefined && !verb.startsWith('-')) {
        if (!c.verbs.includes(verb)) throw new UsageError(`unknown verb '${verb}' of ${cmd}; verbs: ${c.verbs.join(', ')}`);
        args = rest.slice(1);
      } else verb = undefined;
    }
    const flags = parseFlags(args, c.specs);
    if (verb !== undefined) flags.verb = verb;
    if (flags.help) {
      io.stdout.write(`${usage(cmd)}\n`);
      return EXIT_OK;
    }
    if (!c.interruptible) return await c.run(flags, io, new AbortController().signal);
    const int = interrupts(io);
    try {
      return await c.run(flags, io, int.signal);
    } finally {
      int.dispose();
    }
  } catch (e) {
    return report(e, io, cmd);
  }
}

/** train as a function: the exit code, with `signal` standing in for Ctrl-C (an aborted signal stops at once). */
export function train(argv: string[], io: CliIO, signal?: AbortSignal): Promise<number> {
  return main(['train', ...argv], signal ? { ...io, signal } : io);
}
