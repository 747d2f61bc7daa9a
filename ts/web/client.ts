// The page side of the worker: wraps a Worker running `coil/worker` in the same API as the main
// entry. AbortSignals are forwarded as abort calls; errors come back typed.

import * as Comlink from "comlink";
import type { CoilApi, CommonOptions, GgufSource, InspectOptions } from "../core/types.js";
import { fromEngineError, throwIfAborted } from "../core/errors.js";
import type { WorkerApi } from "./worker.js";

let nextAbortId = 1;

export interface WorkerClient extends CoilApi {
  /** Terminates the worker; pending calls reject. */
  dispose(): void;
  [Symbol.dispose](): void;
}

/** Starts (or wraps) a worker running coil's wasm engine. */
export function createWorkerClient(worker?: Worker): WorkerClient {
  const w = worker ?? new Worker(new URL("./worker.js", import.meta.url), { type: "module" });
  const remote = Comlink.wrap<WorkerApi>(w);

  async function call<T>(signal: AbortSignal | undefined, run: (abortId?: number) => Promise<T>): Promise<T> {
    throwIfAborted(signal);
    const id = signal ? nextAbortId++ : undefined;
    const onAbort = () => void remote.abort(id!, String(signal?.reason ?? ""));
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return await run(id);
    } catch (e) {
      throw fromEngineError(e);
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  const dispose = () => {
    remote[Comlink.releaseProxy]();
    w.terminate();
  };
  return {
    inspectGguf: (source: GgufSource, options: InspectOptions = {}) => {
      const { signal, ...rest } = options;
      return call(signal, (id) => remote.inspectGguf(source, rest, id));
    },
    backendInfo: (options: CommonOptions = {}) => {
      const { signal, ...rest } = options;
      return call(signal, () => remote.backendInfo(rest));
    },
    dispose,
    [Symbol.dispose]: dispose,
  };
}
