// A worker_threads entry: one thread of the wasm engine's pool (see ../core/wasm-threads.ts).

import { parentPort, workerData } from "node:worker_threads";
import { runWasmThread, type ThreadStart, type ThreadedWasmBinding } from "../core/wasm-threads.js";

const { start, glue } = workerData as { start: ThreadStart; glue: string };
const b = (await import(glue)) as ThreadedWasmBinding;
runWasmThread(b, start, () => parentPort?.postMessage("ready"));
