// Runs a script under `mpirun -np N` (the distributed tests): with a wall-clock limit (the whole job is killed and the
// test fails when it passes), the addon under test passed on, and the reasons to skip when MPI cannot run here.
//
// Open MPI refuses to run as root unless OMPI_ALLOW_RUN_AS_ROOT=1 and OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 are set: the
// tests never set them (CI does, in .ci/run); as root without them, or without mpirun, the tests skip and say why —
// unless SF_REQUIRE_MPI=1 (CI), which turns the skip into a failure.
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Why MPI jobs cannot run here, or null when they can. */
export function mpiUnavailable(): string | null {
  const v = spawnSync('mpirun', ['--version'], { encoding: 'utf8' });
  if (v.error || v.status !== 0) return 'mpirun not found (install openmpi-bin libopenmpi-dev; CI does)';
  if (process.getuid?.() === 0 && !(process.env.OMPI_ALLOW_RUN_AS_ROOT && process.env.OMPI_ALLOW_RUN_AS_ROOT_CONFIRM))
    return 'running as root: Open MPI needs OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 (CI sets them)';
  return null;
}

/** Whether a missing MPI must fail the tests instead of skipping them (CI sets SF_REQUIRE_MPI=1). */
export const mpiRequired = process.env.SF_REQUIRE_MPI === '1';

export interface JobResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  err: string;
  ms: number;
  timedOut: boolean;
}

/**
 * `mpirun -np <np> --oversubscribe node --import tsx <script> ...args`, resolved with its exit status and output
 * once it exits, or after `timeoutMs` (then the job is killed: timedOut true). `env` adds to the environment.
 */
export function mpirun(np: number, script: string, args: string[], o: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<JobResult> {
  const argv = ['-np', String(np), '--oversubscribe', process.execPath, '--import', 'tsx', join(repoRoot, script), ...args];
  return spawnJob('mpirun', argv, o);
}

/** A script in one plain process (no mpirun): `node --import tsx <script> ...args`. */
export function node(script: string, args: string[], o: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<JobResult> {
  return spawnJob(process.execPath, ['--import', 'tsx', join(repoRoot, script), ...args], o);
}

function spawnJob(cmd: string, argv: string[], o: { timeoutMs?: number; env?: Record<string, string> }): Promise<JobResult> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const child = spawn(cmd, argv, { cwd: repoRoot, env: { ...process.env, ...o.env }, detached: true });
    let out = '', err = '', timedOut = false;
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL'); // the whole process group: mpirun and its ranks
      } catch {}
    }, o.timeoutMs ?? 120_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out, err, ms: performance.now() - t0, timedOut });
    });
  });
}
