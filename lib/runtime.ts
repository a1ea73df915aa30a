// runtime.ts — what the loaded addon reports about itself and the machine, and process-wide knobs.
import { native, nativeLocation, cudaFallbackReason, type BackendsInfo, type BuildInfo, type DeviceMemory } from './native.ts';

/**
 * CPU threads and SIMD level; whether CUDA is compiled in and usable here, and if not, why (including, when the
 * CUDA package is installed but could not be loaded, that the loader used another binary and why).
 */
export function backends(): BackendsInfo {
  const info = native().backends();
  const note = cudaFallbackReason();
  if (note && !info.cuda.available) info.cuda.reason = info.cuda.reason ? `${note}. ${info.cuda.reason}` : note;
  return info;
}

/** How the loaded binary was built, and where it was loaded from. */
export function buildInfo(): BuildInfo & { path: string } {
  return { ...native().buildInfo(), path: nativeLocation().path };
}

/** Live tensors, storages and bytes per device ('cpu', 'cuda:0', ...) in this thread's addon instance. */
export function memory(): Record<string, DeviceMemory> {
  return native().memory();
}

/** Sets the CPU thread pool's size (1..1024); the SHAREDFORMER_NUM_THREADS environment variable sets the default. */
export function setNumThreads(n: number): void {
  native().setNumThreads(n);
}

/** The CPU thread pool's size. */
export function getNumThreads(): number {
  return native().numThreads();
}

/** Resolves when all work queued so far on every device has finished; rejects with the first error it raised. */
export function synchronize(): Promise<void> {
  return native().synchronize();
}

/** As synchronize(), blocking the calling thread. */
export function synchronizeSync(): void {
  native().synchronizeSync();
}

/**
 * Returns the caching allocators' free blocks to the system (after queued work finishes), like
 * torch.cuda.empty_cache(); on the CPU (glibc) it also releases the wholly free pages malloc keeps (malloc_trim), so the
 * process's RSS drops to what is in use.
 */
export function emptyCache(): void {
  native().emptyCache();
}
