// device.ts — the device a command runs on (--device cpu|cuda): CUDA only when the addon has it and a GPU is usable.
import { backends } from '../runtime.ts';
import type { Device } from '../tensor.ts';
import { CliError } from './common.ts';

export function checkDevice(device: string | undefined): Device {
  if (device === undefined || device === 'cpu') return 'cpu';
  const cuda = backends().cuda;
  if (!cuda.available) {
    const why = (cuda.reason ?? (cuda.compiled ? 'no usable GPU was found' : 'the addon was built without CUDA')).replace(/[\s.;,]+$/, '');
    throw new CliError(`--device cuda: CUDA was requested but is not available here, because ${why}. Give --device cpu (the default) to run on the CPU`);
  }
  return 'cuda';
}
