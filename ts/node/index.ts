// Entry for Node, Bun and Deno. Uses the native addon (napi-rs) by default and the wasm engine when
// asked (`backend: "wasm"` or COIL_BACKEND=wasm) or when the addon cannot load — then it says why,
// once, as a process warning on stderr. Never silently.

import { fileURLToPath } from "node:url";
import { createApi } from "../core/facade.js";
import type { BackendChoice, CoilApi } from "../core/types.js";
import { BackendUnavailableError, InvalidArgumentError } from "../core/errors.js";
import type { Engine } from "../core/engine.js";
import { FileSource } from "./file-source.js";
import { loadNativeEngine } from "./native-engine.js";
import { loadWasmEngineNode } from "./wasm-engine-node.js";

export * from "../core/types.js";
export * from "../core/errors.js";

let native: Promise<Engine> | undefined;
let wasm: Promise<Engine> | undefined;
let warned = false;

function envBackend(): BackendChoice {
  const v = (typeof process !== "undefined" ? process.env.COIL_BACKEND : undefined)?.trim();
  if (!v) return "auto";
  if (v === "native" || v === "wasm" || v === "auto") return v;
  throw new InvalidArgumentError(`COIL_BACKEND=${v} is not a backend: use native, wasm or auto`);
}

async function engineFor(choice: BackendChoice): Promise<{ engine: Engine; fallbackReason?: string }> {
  if (choice === "wasm") return { engine: await (wasm ??= loadWasmEngineNode()) };
  try {
    return { engine: await (native ??= loadNativeEngine()) };
  } catch (e) {
    native = undefined;
    const why = (e as Error).message;
    if (choice === "native") {
      throw new BackendUnavailableError(`the native addon could not be loaded: ${why}`, { cause: e });
    }
    if (!warned) {
      warned = true;
      process.emitWarning(`coil: native addon unavailable, using the wasm engine instead (${why})`, {
        code: "COIL_NATIVE_UNAVAILABLE",
      });
    }
    return { engine: await (wasm ??= loadWasmEngineNode()), fallbackReason: why };
  }
}

const api: CoilApi = createApi({
  engine: engineFor,
  defaultBackend: envBackend,
  openPath: (p, signal) => FileSource.open(p, signal),
  toPath: (p) => (p instanceof URL ? fileURLToPath(p) : p),
});

export const inspectGguf = api.inspectGguf;
export const backendInfo = api.backendInfo;
