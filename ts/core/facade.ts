// The facade's logic, written once. Each target entry (node, web) supplies how to get an engine
// for a backend choice and how to open sources only it understands (paths in Node).

import type { Engine, EngineModel } from "./engine.js";
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

/** Chunk size for handing weights to the wasm engine: bounded, so no buffer is ever file-sized. */
const WEIGHT_CHUNK = 16 << 20;

/** Streams the tensors the engine asks for from `src` into the engine, chunk by chunk (the caller
 *  skips this for vocabulary-only loads: `EngineModel.wantsWeights`). */
async function pushWeights(
  m: EngineModel,
  src: ByteSource,
  signal: AbortSignal | undefined,
  onProgress: LoadModelOptions["onProgress"],
): Promise<void> {
  const plan = m.weightsPlan();
  let total = 0;
  for (let i = 2; i < plan.length; i += 3) total += plan[i]!;
  let loaded = 0;
  for (let i = 0; i < plan.length; i += 3) {
    const [index, offset, length] = [plan[i]!, plan[i + 1]!, plan[i + 2]!];
    for (let at = 0; at < length; at += WEIGHT_CHUNK) {
      throwIfAborted(signal);
      const n = Math.min(WEIGHT_CHUNK, length - at);
      const bytes = await src.read(offset + at, offset + at + n, signal);
      m.pushTensorBytes(index, at, bytes);
      loaded += n;
      onProgress?.({ phase: "weights", loaded, total });
    }
  }
  m.finishWeights();
}

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

  /** Runs `byPath` (native's memory map) for file paths when the engine has it, else `bySource`
   *  on the source opened for reading (header prefix, then whatever else it reads). Errors come
   *  out typed; the source is closed afterwards. */
  async function open<T>(
    source: GgufSource,
    signal: AbortSignal | undefined,
    byPath: ((path: string) => Promise<T>) | undefined,
    bySource: (src: ByteSource) => Promise<T>,
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
      try {
        return await bySource(src);
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
    const json = await open(source, signal, byPath, (src) =>
      withHeader(src, signal, (prefix, size) => engine.inspectBytes(prefix, size, arrayHead)),
    );
    throwIfAborted(signal);
    return JSON.parse(json) as GgufInfo;
  }

  async function loadModel(source: GgufSource, options: LoadModelOptions = {}): Promise<Model> {
    const { signal, onProgress, vocabOnly = false } = options;
    throwIfAborted(signal);
    const { engine } = await hooks.engine(pick(options));
    const byPath = engine.loadModelPath && ((p: string) => engine.loadModelPath!(p, vocabOnly, signal));
    const em = await open(source, signal, byPath, async (src) => {
      const total = src.size;
      const m = await withHeader(
        src,
        signal,
        (prefix, size) => engine.loadModelBytes(prefix, size),
        onProgress && ((n) => onProgress({ phase: "header", loaded: n, total })),
      );
      try {
        if (m.wantsWeights(vocabOnly)) await pushWeights(m, src, signal, onProgress);
      } catch (e) {
        m.release();
        throw e;
      }
      return m;
    });
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
      threads: engine.threads(),
    };
    if (engine.singleThreadedReason) info.singleThreadedReason = engine.singleThreadedReason;
    if (engine.workerTasks) info.workerTasks = engine.workerTasks();
    if (fallbackReason) info.fallbackReason = fallbackReason;
    return info;
  }

  return { inspectGguf, loadModel, backendInfo };
}
