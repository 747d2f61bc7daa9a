// The facade's logic, written once. Each target entry (node, web) supplies how to get an engine
// for a backend choice and how to open sources only it understands (paths in Node).

import type { Engine } from "./engine.js";
import { withHeader } from "./engine.js";
import { fromEngineError, InvalidArgumentError, throwIfAborted } from "./errors.js";
import { Model } from "./model.js";
import type { ByteSource } from "./source.js";
import { openCommonSource } from "./source.js";
import type {
  BackendChoice,
  BackendInfo,
  CommonOptions,
  GgufInfo,
  GgufSource,
  InspectOptions,
  LoadModelOptions,
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

export interface CoilFacade {
  inspectGguf(source: GgufSource, options?: InspectOptions): Promise<GgufInfo>;
  loadModel(source: GgufSource, options?: LoadModelOptions): Promise<Model>;
  backendInfo(options?: CommonOptions): Promise<BackendInfo>;
}

export function createApi(hooks: TargetHooks): CoilFacade {
  const pick = (o?: CommonOptions) => checkBackend(o?.backend ?? hooks.defaultBackend());

  /** Runs `byPath` (native's memory map) for file paths when the engine has it, else `byHeader` on
   *  the header bytes read from whatever the source is. Errors come out typed. */
  async function open<T>(
    source: GgufSource,
    engine: Engine,
    signal: AbortSignal | undefined,
    byPath: ((path: string) => Promise<T>) | undefined,
    byHeader: (prefix: Uint8Array, fileSize: number) => T,
    onRead?: (bytes: number, total: number) => void,
  ): Promise<T> {
    try {
      let src = await openCommonSource(source, signal);
      if (!src) {
        if (byPath && hooks.toPath) return await byPath(hooks.toPath(source as string | URL));
        if (!hooks.openPath) {
          throw new InvalidArgumentError(
            "a file path cannot be read in this environment: pass a URL, Blob, File or ArrayBuffer",
          );
        }
        src = await hooks.openPath(source as string | URL, signal);
      }
      const total = src.size;
      try {
        return await withHeader(src, signal, byHeader, onRead && ((n) => onRead(n, total)));
      } finally {
        await src.close?.();
      }
    } catch (e) {
      throw fromEngineError(e);
    }
  }

  async function inspectGguf(source: GgufSource, options: InspectOptions = {}): Promise<GgufInfo> {
    const { signal } = options;
    throwIfAborted(signal);
    const arrayHead = checkArrayHead(options.arrayHead);
    const { engine } = await hooks.engine(pick(options));
    const byPath = engine.inspectPath && ((p: string) => engine.inspectPath!(p, arrayHead, signal));
    const json = await open(source, engine, signal, byPath, (prefix, size) =>
      engine.inspectBytes(prefix, size, arrayHead),
    );
    throwIfAborted(signal);
    return JSON.parse(json) as GgufInfo;
  }

  async function loadModel(source: GgufSource, options: LoadModelOptions = {}): Promise<Model> {
    const { signal, onProgress } = options;
    throwIfAborted(signal);
    const { engine } = await hooks.engine(pick(options));
    const byPath = engine.loadModelPath && ((p: string) => engine.loadModelPath!(p, signal));
    const em = await open(
      source,
      engine,
      signal,
      byPath,
      (prefix, size) => engine.loadModelBytes(prefix, size),
      onProgress && ((loaded, total) => onProgress({ phase: "header", loaded, total })),
    );
    if (signal?.aborted) {
      em.release();
      throwIfAborted(signal);
    }
    return new Model(engine.name, em);
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

  return { inspectGguf, loadModel, backendInfo };
}
