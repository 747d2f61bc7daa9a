// The facade's logic, written once. Each target entry (node, web, worker) supplies how to get an
// engine for a backend choice and how to open sources it alone understands (paths in Node).

import type { Engine } from "./engine.js";
import { inspectSource } from "./engine.js";
import { fromEngineError, InvalidArgumentError, throwIfAborted } from "./errors.js";
import type { ByteSource } from "./source.js";
import { openCommonSource } from "./source.js";
import type {
  BackendChoice,
  BackendInfo,
  CoilApi,
  CommonOptions,
  GgufInfo,
  GgufSource,
  InspectOptions,
} from "./types.js";

export interface TargetHooks {
  /** The engine for a backend choice, plus why "auto" fell back to wasm, if it did. */
  engine(choice: BackendChoice): Promise<{ engine: Engine; fallbackReason?: string }>;
  /** Backend to use when the caller gives none. */
  defaultBackend(): BackendChoice;
  /** Opens sources only this target understands (a file path in Node). */
  openPath?(path: string | URL, signal?: AbortSignal): Promise<ByteSource>;
  /** A file path or file: URL as a plain path (targets with a file system). */
  toPath?(path: string | URL): string;
}

const CHOICES = new Set(["auto", "native", "wasm"]);

export function checkBackend(b: unknown): BackendChoice {
  if (typeof b === "string" && CHOICES.has(b)) return b as BackendChoice;
  throw new InvalidArgumentError(`unknown backend ${JSON.stringify(b)}: use "native", "wasm" or "auto"`);
}

function checkArrayHead(n: unknown): number {
  if (n === undefined) return -1;
  if (typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= 0x7fffffff) return n;
  throw new InvalidArgumentError(`arrayHead must be a non-negative integer, got ${String(n)}`);
}

export function createApi(hooks: TargetHooks): CoilApi {
  const pick = (o?: CommonOptions) => checkBackend(o?.backend ?? hooks.defaultBackend());

  async function inspectGguf(source: GgufSource, options: InspectOptions = {}): Promise<GgufInfo> {
    const { signal } = options;
    throwIfAborted(signal);
    const arrayHead = checkArrayHead(options.arrayHead);
    const { engine } = await hooks.engine(pick(options));
    let json: string;
    try {
      let src = await openCommonSource(source, signal);
      if (!src) {
        if (engine.inspectPath && hooks.toPath) {
          // Native maps the file itself: no bytes cross into JS.
          json = await engine.inspectPath(hooks.toPath(source as string | URL), arrayHead, signal);
          throwIfAborted(signal);
          return JSON.parse(json) as GgufInfo;
        }
        if (!hooks.openPath) {
          throw new InvalidArgumentError(
            `a file path cannot be read in this environment: pass a URL, Blob, File or ArrayBuffer`,
          );
        }
        src = await hooks.openPath(source as string | URL, signal);
      }
      try {
        json = await inspectSource(engine, src, arrayHead, signal);
      } finally {
        await src.close?.();
      }
    } catch (e) {
      throw fromEngineError(e);
    }
    throwIfAborted(signal);
    return JSON.parse(json) as GgufInfo;
  }

  async function backendInfo(options: CommonOptions = {}): Promise<BackendInfo> {
    throwIfAborted(options.signal);
    const { engine, fallbackReason } = await hooks.engine(pick(options));
    const info: BackendInfo = {
      backend: engine.name,
      version: engine.version(),
      cpuFeatures: engine.cpuFeatures(),
      kernels: JSON.parse(engine.kernelSelfcheck()) as BackendInfo["kernels"],
    };
    if (fallbackReason) info.fallbackReason = fallbackReason;
    return info;
  }

  return { inspectGguf, backendInfo };
}
