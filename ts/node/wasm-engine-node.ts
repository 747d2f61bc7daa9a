// Loads the wasm engine in Node, Bun or Deno: the module's bytes come from the package on disk
// (Node's fetch cannot read file: URLs).

import { readFile } from "node:fs/promises";
import type { Engine } from "../core/engine.js";
import { BackendUnavailableError } from "../core/errors.js";
import { wasmEngine, type WasmBinding } from "../core/wasm-engine.js";

export async function loadWasmEngineNode(): Promise<Engine> {
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
  return wasmEngine(b);
}
