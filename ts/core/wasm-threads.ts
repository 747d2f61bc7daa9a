// Threads for the wasm engine. The threaded module (wasm-pkg/mt, built with atomics) runs on a
// shared WebAssembly.Memory; each worker thread is a Worker (Web Worker in browsers,
// worker_threads in Node) that instantiates the same module on that memory and calls
// `threadPoolWorker`, which parks there between jobs and never returns while the pool lives. The
// core's job protocol never waits for a worker that has not joined a job, so a worker that is slow
// to start (or never starts) costs only its share of the work, not a hang. How a Worker is started
// differs per runtime: that is the `SpawnThread` each target passes in.

import type { WasmBinding } from "./wasm-engine.js";

/** The threaded module's extra exports. */
export interface ThreadedWasmBinding extends WasmBinding {
  isThreaded(): boolean;
  threadCount(): number;
  threadPoolCreate(nWorkers: number): number;
  threadPoolWorker(addr: number): void;
  threadPoolBrokenFlag(addr: number): number;
}

/** What a worker thread needs: sent to it once, at start. */
export interface ThreadStart {
  module: WebAssembly.Module;
  memory: WebAssembly.Memory;
  /** The pool's address in the module's memory. */
  addr: number;
  /** Address of the pool's broken flag (set when this thread's instance fails). */
  flag: number;
}

/** Starts one worker thread running `runWasmThread` with `start`; resolves when it reports that it
 *  entered the pool, rejects if it fails before. */
export type SpawnThread = (start: ThreadStart) => Promise<void>;

/** Stack of each worker thread (a multiple of 64 KiB, allocated from the shared heap). */
export const THREAD_STACK_SIZE = 2 << 20;

/** How long to wait for workers to report in before going on without the missing ones. */
const START_TIMEOUT_MS = 10_000;

/**
 * Creates the module's pool for `nWorkers` workers and starts them. Returns how many reported in
 * (the others, if any, may still join later or never; either way results are the same, as every
 * kernel's output is independent of how its tasks are split between threads).
 */
export async function startWasmThreads(b: ThreadedWasmBinding, module: WebAssembly.Module, memory: WebAssembly.Memory, nWorkers: number, spawn: SpawnThread): Promise<number> {
  if (nWorkers < 1) return 0;
  const addr = b.threadPoolCreate(nWorkers);
  const flag = b.threadPoolBrokenFlag(addr);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), START_TIMEOUT_MS);
  });
  const started = await Promise.all(
    Array.from({ length: nWorkers }, () =>
      Promise.race([spawn({ module, memory, addr, flag }).then(() => true, () => false), timeout.then(() => false)]),
    ),
  );
  clearTimeout(timer);
  return started.filter(Boolean).length;
}

/**
 * The body of a worker thread: instantiates the module on the shared memory, reports `ready`, and
 * serves the pool. Should the instance fail (a trap), the pool's broken flag is set with an atomic
 * store (a failed instance cannot be called again), so jobs stop waiting for workers.
 */
export function runWasmThread(b: ThreadedWasmBinding, start: ThreadStart, ready: () => void): void {
  b.initSync({ module: start.module, memory: start.memory, thread_stack_size: THREAD_STACK_SIZE });
  ready();
  try {
    b.threadPoolWorker(start.addr);
  } catch (e) {
    if (start.flag) {
      const flags = new Int32Array(start.memory.buffer);
      Atomics.store(flags, start.flag >> 2, 1);
    }
    throw e;
  }
}

/** Whether this JavaScript environment can run the threaded module at all: shared memory, and
 *  a thread that may block (browsers forbid Atomics.wait on their main thread). */
export function sharedMemoryUsable(): { ok: true } | { ok: false; why: string } {
  if (typeof SharedArrayBuffer !== "function") {
    return { ok: false, why: "SharedArrayBuffer is unavailable (in browsers: the page is not cross-origin isolated; serve it with COOP: same-origin and COEP: require-corp)" };
  }
  const g = globalThis as { crossOriginIsolated?: boolean };
  if (g.crossOriginIsolated === false) {
    return { ok: false, why: "the page is not cross-origin isolated (serve it with COOP: same-origin and COEP: require-corp)" };
  }
  try {
    // Shared wasm memories are what the threaded module needs; some runtimes have SAB but not these.
    new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
  } catch (e) {
    return { ok: false, why: `shared WebAssembly memory is unavailable: ${(e as Error).message}` };
  }
  return { ok: true };
}
