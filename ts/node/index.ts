// Entry for Node, Bun and Deno. Uses the native addon (napi-rs) by default and the wasm engine when
// asked (`backend: "wasm"` or COIL_BACKEND=wasm) or when the addon cannot load — then it says why,
// once, as a process warning on stderr. Never silently.

import { fileURLToPath } from "node:url";
import { createApi, type CoilFacade } from "../core/facade.js";
import type { BackendChoice } from "../core/types.js";
import { BackendUnavailableError, InvalidArgumentError } from "../core/errors.js";
import type { Engine } from "../core/engine.js";
import { FileSource } from "./file-source.js";
import { loadNativeEngine } from "./native-engine.js";
import { loadWasmEngineNode } from "./wasm-engine-node.js";

export * from "../core/types.js";
export * from "../core/errors.js";
export { Model } from "../core/model.js";
export { Context, Sequence, type BatchItem } from "../core/context.js";
export { Generation } from "../core/generate.js";
export { perplexity, type PerplexityOptions, type PerplexityResult } from "../core/perplexity.js";
export { ChatSession, renderChat, type ChatMessage, type ChatOptions } from "../core/chat.js";
export { convert, quantize } from "./jobs.js";
export type { ConvertOptions, ConvertReport, QuantizeOptions, QuantizeReport, JobProgress } from "./jobs.js";

let native: Promise<Engine> | undefined;
let wasm: Promise<Engine> | undefined;
let warned = false;

function envBackend(): BackendChoice {
  const v = (typeof process !== "undefined" ? process.env.COIL_BACKEND : undefined)?.trim();
  if (!v) return "auto";
  if (v === "native" || v === "wasm" || v === "auto") return v;
  throw new InvalidArgumentError(`COIL_BACKEND=${v} is not a backend: use native, wasm or auto`);
}

/** The napi loader chains the real load failures through `cause` (innermost = first attempt);
 *  surface them, skipping its fallbacks to WASI packages coil does not ship. */
function explain(e: unknown): string {
  const msgs: string[] = [];
  const seen = new Set<unknown>();
  const walk = (x: unknown): void => {
    if (!x || seen.has(x)) return;
    seen.add(x);
    if (Array.isArray(x)) return x.forEach(walk);
    const err = x as Error & { cause?: unknown };
    walk(err.cause);
    const m = (err instanceof Error ? err.message : String(err)).split("\n")[0] ?? "";
    if (m && !/wasi/i.test(m)) msgs.push(m);
  };
  walk((e as Error & { cause?: unknown })?.cause);
  return msgs.length ? msgs.join("; ") : (e as Error).message;
}

async function engineFor(choice: BackendChoice): Promise<{ engine: Engine; fallbackReason?: string }> {
  if (choice === "wasm") {
    try {
      return { engine: await (wasm ??= loadWasmEngineNode()) };
    } catch (e) {
      wasm = undefined; // not cached: a later call tries again
      throw e;
    }
  }
  try {
    return { engine: await (native ??= loadNativeEngine()) };
  } catch (e) {
    native = undefined;
    const why = explain(e);
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

const api: CoilFacade = createApi({
  engine: engineFor,
  defaultBackend: envBackend,
  openPath: (p, signal) => FileSource.open(p, signal),
  toPath: (p) => (p instanceof URL ? fileURLToPath(p) : p),
});

export const inspectGguf = api.inspectGguf;
export const backendInfo = api.backendInfo;
export const loadModel = api.loadModel;
