// Loads the wasm engine in Node, Bun or Deno: the module's bytes come from the package on disk
// (Node's fetch cannot read file: URLs). Where shared memory works, the threaded module
// (wasm-pkg/mt) is used with one worker_threads Worker per extra thread; otherwise, or if it cannot
// be started, the single-threaded module. `COIL_WASM_THREADS=N` sets the threads (1: single).

import { readFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { Engine } from "../core/engine.js";
import { BackendUnavailableError, InvalidArgumentError } from "../core/errors.js";
import { wasmEngine, type WasmBinding } from "../core/wasm-engine.js";
import { sharedMemoryUsable, startWasmThreads, type SpawnThread, type ThreadedWasmBinding } from "../core/wasm-threads.js";

const MAX_THREADS = 64;

/** The threads the wasm engine starts: `COIL_WASM_THREADS`, else the CPUs this process may use. */
function wantedThreads(): { n: number; fromEnv: boolean } {
  const env = process.env.COIL_WASM_THREADS;
  if (env !== undefined && env !== "") {
    const n = Number(env);
    if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) {
      throw new InvalidArgumentError(`COIL_WASM_THREADS must be an integer from 1 to ${MAX_THREADS}, got ${JSON.stringify(env)}`);
    }
    return { n, fromEnv: true };
  }
  return { n: Math.min(availableParallelism(), MAX_THREADS), fromEnv: false };
}

const spawnNodeThread = (glue: string): SpawnThread => (start) =>
  new Promise<void>((resolve, reject) => {
    // execArgv: [] — a Worker inherits the process's flags by default, and those of `node -e CODE`
    // or `--input-type` make it run that code instead of its own file (it then never starts).
    const w = new Worker(new URL("./wasm-thread.js", import.meta.url), { workerData: { start, glue }, execArgv: [] });
    let settled = false;
    const onMessage = (m: unknown) => {
      if (m === "ready" && !settled) {
        settled = true;
        // A 'message' listener keeps the worker's port (and so the process) alive: drop it.
        w.off("message", onMessage);
        resolve();
      }
    };
    w.on("message", onMessage);
    // After it started, a failing thread has already flagged the pool (runWasmThread): jobs then
    // run on the caller. The listener keeps the error from becoming an uncaught one here.
    w.on("error", (e) => {
      if (!settled) {
        settled = true;
        reject(e);
      }
    });
    w.on("exit", (code) => {
      if (!settled) {
        settled = true;
        reject(new Error(`wasm thread exited with code ${code} before starting`));
      }
    });
    // The thread serves the pool for the life of the process and must not keep it alive (unref
    // after the listeners: adding a 'message' listener refs the worker's port again).
    w.unref();
  });

async function loadThreaded(nThreads: number): Promise<Engine> {
  const glue = new URL("../../wasm-pkg/mt/coil_wasm_mt.js", import.meta.url);
  const b = (await import(glue.href)) as ThreadedWasmBinding;
  const bytes = await readFile(new URL("../../wasm-pkg/mt/coil_wasm_mt_bg.wasm", import.meta.url));
  const module = await WebAssembly.compile(bytes);
  const { memory } = b.initSync({ module });
  const started = await startWasmThreads(b, module, memory, nThreads - 1, spawnNodeThread(glue.href));
  // None started: the pool would only ever run on the caller; say so and use the plain module.
  if (started === 0) throw new Error("no worker thread started");
  return wasmEngine(b);
}

export async function loadWasmEngineNode(): Promise<Engine> {
  const want = wantedThreads();
  let reason: string;
  if (want.n > 1) {
    const usable = sharedMemoryUsable();
    if (usable.ok) {
      try {
        return await loadThreaded(want.n);
      } catch (e) {
        reason = `the threaded wasm module could not be started: ${(e as Error).message}`;
      }
    } else {
      reason = usable.why;
    }
  } else {
    reason = want.fromEnv ? "COIL_WASM_THREADS=1" : "this machine offers one CPU";
  }
  const jsPath = "../../wasm-pkg/coil_wasm.js";
  const wasmUrl = new URL("../../wasm-pkg/coil_wasm_bg.wasm", import.meta.url);
  let b: WasmBinding;
  let bytes: Uint8Array;
  try {
    b = (await import(jsPath)) as WasmBinding;
    bytes = await readFile(wasmUrl);
  } catch (e) {
    throw new BackendUnavailableError(`the wasm engine is missing from this install: ${(e as Error).message}`, {
      cause: e,
    });
  }
  b.initSync({ module: bytes as BufferSource });
  return wasmEngine(b, { singleThreadedReason: reason });
}
