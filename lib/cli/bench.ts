// bench.ts — `sharedformer bench`: checks its arguments, then runs scripts/bench.ts (from a checkout only).
import { existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { packageRoot } from '../native.ts';
import { CliError, EXIT_INTERRUPTED, EXIT_RUNTIME, EXIT_USAGE, UsageError, type CliIO } from './common.ts';
import { COMMON, parseFlags, str, type Command, type Specs } from './flags.ts';

/** How `sharedformer bench ARGS` runs scripts/bench.ts, or why it cannot (the script ships only in a checkout). */
export function benchInvocation(args: string[], root: string = packageRoot): { command: string; args: string[]; cwd: string } {
  const script = join(root, 'scripts', 'bench.ts');
  if (!existsSync(script))
    throw new CliError(`bench runs scripts/bench.ts, which only a checkout of the repository has (not found in ${root}); clone it, run npm ci, then npm run bench`);
  if (!existsSync(join(root, 'node_modules', 'tsx')))
    throw new CliError(`bench needs tsx, a development dependency: run npm ci in ${root}`);
  return { command: process.execPath, args: ['--import', 'tsx', script, ...args], cwd: root };
}

/** The suites of scripts/bench.ts (kernels and tensors by default; train only when named). */
const BENCH_SUITES = ['kernels', 'tensors', 'train'] as const;
const BENCH_SPECS: Specs = {
  json: { kind: 'string', arg: 'FILE', path: true, help: 'also write the rows to FILE as JSON' },
  help: COMMON.help,
};

/**
 * Checks `bench` arguments as every other command checks its own: suites by name, then --json FILE (or
 * --json=FILE); anything else is a UsageError (exit 2), so a typo never starts the whole default benchmark. Returns
 * the arguments for scripts/bench.ts: the suites, then --json FILE.
 */
export function benchArgs(args: string[]): string[] {
  const suites: string[] = [];
  const flags: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith('--')) {
      if (!(BENCH_SUITES as readonly string[]).includes(a)) throw new UsageError(`unknown suite '${a}'; suites: ${BENCH_SUITES.join(', ')}`);
      suites.push(a);
      continue;
    }
    flags.push(a);
    if (a === '--json' && i + 1 < args.length && !args[i + 1].startsWith('--')) flags.push(args[++i]);
  }
  const f = parseFlags(flags, BENCH_SPECS);
  const json = str(f, 'json');
  if (json === '') throw new UsageError('--json needs a value (FILE)');
  return [...suites, ...(json !== undefined ? ['--json', json] : [])];
}

export async function benchCommand(args: string[], io: CliIO): Promise<number> {
  const inv = benchInvocation(benchArgs(args));
  const inherit = io.stdout === process.stdout && io.stderr === process.stderr;
  return new Promise((done, fail) => {
    const child = spawn(inv.command, inv.args, { cwd: inv.cwd, stdio: inherit ? 'inherit' : ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (d: Buffer) => io.stdout.write(d.toString()));
    child.stderr?.on('data', (d: Buffer) => io.stderr.write(d.toString()));
    child.on('error', (e) => fail(new CliError(`could not start the benchmark: ${e.message}`)));
    child.on('close', (code, sig) => done(code ?? (sig === 'SIGINT' ? EXIT_INTERRUPTED : EXIT_RUNTIME)));
  });
}

export const benchCmd: Command = {
  summary: 'the benchmarks (npm run bench); from a checkout of the repository only',
  usage: 'sharedformer bench [kernels] [tensors] [train] [--json FILE]',
  specs: BENCH_SPECS,
  examples: ['sharedformer bench kernels', 'sharedformer bench tensors --json rows.json'],
  run: async () => EXIT_USAGE, // argv goes to scripts/bench.ts unparsed (see main)
};
