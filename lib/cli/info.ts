// info.ts — `sharedformer info`: version, how the addon was built, CUDA, CPU threads and SIMD level.
import { backends, buildInfo, getNumThreads } from '../runtime.ts';
import { EXIT_OK, jsonLine, say, version, type CliIO } from './common.ts';
import { COMMON, type Command, type Flags } from './flags.ts';

async function infoCommand(f: Flags, io: CliIO): Promise<number> {
  const b = buildInfo();
  const be = backends();
  const info = {
    version: version(),
    node: process.version,
    platform: `${process.platform}-${process.arch}`,
    addon: b.path,
    build: { builder: b.builder, version: b.version, napiVersion: b.napiVersion, compiler: b.compiler ?? null, cuda: b.cuda },
    cuda: { compiled: be.cuda.compiled, available: be.cuda.available, reason: be.cuda.reason ?? null, devices: be.cuda.devices, architectures: be.cuda.architectures },
    cpu: { threads: getNumThreads(), simd: be.cpu.simd, features: be.cpu.features },
  };
  if (f.json) {
    jsonLine(io, { type: 'info', ...info });
    return EXIT_OK;
  }
  say(io, `sharedformer ${info.version} (Node ${info.node}, ${info.platform})`);
  say(io, `addon   ${info.addon}`);
  say(io, `build   ${b.builder}, N-API ${b.napiVersion}${b.compiler ? `, ${b.compiler}` : ''}; CUDA kernels ${be.cuda.compiled ? 'compiled' : 'not compiled'}`);
  if (be.cuda.available)
    for (const d of be.cuda.devices) say(io, `CUDA    device ${d.index}: ${d.name} (sm_${d.computeCapability.replace('.', '')}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB)`);
  else say(io, `CUDA    unavailable${be.cuda.reason ? `: ${be.cuda.reason}` : ''}`);
  say(io, `CPU     ${info.cpu.threads} threads, ${info.cpu.simd}${be.cpu.features.length ? ` (${be.cpu.features.join(' ')})` : ''}`);
  return EXIT_OK;
}

export const infoCmd: Command = {
  summary: 'version, how the addon was built, CUDA, CPU threads and SIMD level',
  usage: 'sharedformer info [--json]',
  specs: { json: COMMON.json, help: COMMON.help },
  examples: ['sharedformer info', 'sharedformer info --json'],
  run: (f, io) => infoCommand(f, io),
};
