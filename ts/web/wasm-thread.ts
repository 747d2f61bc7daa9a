// A Web Worker entry: one thread of the wasm engine's pool (see ../core/wasm-threads.ts). Started
// by the engine with the module, the shared memory and the pool's address as its first message.

import * as mt from "../../wasm-pkg/mt/coil_wasm_mt.js";
import { runWasmThread, type ThreadStart, type ThreadedWasmBinding } from "../core/wasm-threads.js";

const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent<ThreadStart>) => void) | null;
  postMessage(m: unknown): void;
};
scope.onmessage = (e) => {
  scope.onmessage = null;
  runWasmThread(mt as unknown as ThreadedWasmBinding, e.data, () => scope.postMessage("ready"));
};
