// convert() and quantize(): long native jobs (Node, Bun, Deno). The engine runs them off the JS
// thread; this side polls their progress for `onProgress` and cancels them from an AbortSignal.
// An aborted or failed job leaves no output file.

import { CoilAbortError, fromEngineError, throwIfAborted } from "../core/errors.js";
import { loadNativeBinding } from "./native-engine.js";

export interface JobProgress {
  phase: "convert" | "quantize";
  bytesDone: number;
  bytesTotal: number;
  /** The tensor being written. */
  tensor: string;
  tensorIndex: number;
  tensorCount: number;
}

export interface JobOptions {
  onProgress?: (p: JobProgress) => void;
  signal?: AbortSignal;
}

export interface ConvertOptions extends JobOptions {
  /** Type of the matrices: f32, f16 (default), bf16, auto, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k. */
  outtype?: string;
  /** general.name (default: the directory's name). */
  name?: string;
}

export interface ConvertReport {
  out: string;
  architecture: string;
  hfArchitecture: string;
  configSource: string;
  outtype: string;
  fileType: number;
  fileSize: number;
  nVocab: number;
  tiedOutputOmitted: boolean;
  tokenizer: { source: string; model: string; pre: string | null; nTokens: number } | null;
  tensors: { name: string; shape: number[]; type: string; bytes: number; source: string }[];
  /** Non-fatal observations, e.g. "no tokenizer files: the GGUF has no vocabulary". */
  warnings: string[];
}

export interface QuantizeOptions extends JobOptions {
  /** Worker threads (default: all cores). The output does not depend on it. */
  threads?: number;
}

export interface QuantizeReport {
  target: string;
  ftype: number;
  bytesBefore: number;
  bytesAfter: number;
  fileSize: number;
  nFallback: number;
  tensors: { name: string; dims: number[]; from: string; to: string; reason?: string }[];
}

interface JobHandle {
  cancel(): void;
  progress(): string;
}

async function runJob<T>(start: (h: JobHandle) => Promise<string>, o: JobOptions): Promise<T> {
  throwIfAborted(o.signal);
  const b = await loadNativeBinding();
  const handle = new b.JobHandle() as JobHandle;
  const onAbort = () => handle.cancel();
  o.signal?.addEventListener("abort", onAbort, { once: true });
  let last = "";
  const poll = () => {
    const p = handle.progress();
    if (p !== last && p !== "{}") {
      last = p;
      o.onProgress?.(JSON.parse(p) as JobProgress);
    }
  };
  const timer = o.onProgress ? setInterval(poll, 100) : undefined;
  try {
    const json = await start(handle);
    poll();
    return JSON.parse(json) as T;
  } catch (e) {
    const err = fromEngineError(e);
    if (o.signal?.aborted && err.code === "ABORTED") throw new CoilAbortError(err.message, { cause: o.signal.reason });
    throw err;
  } finally {
    if (timer) clearInterval(timer);
    o.signal?.removeEventListener("abort", onAbort);
  }
}

/** Converts a Hugging Face checkpoint directory (config.json or params.json, safetensors, tokenizer)
 *  into a GGUF file that llama.cpp-based tools load too. Native engine only. */
export async function convert(dir: string, out: string, options: ConvertOptions = {}): Promise<ConvertReport> {
  const b = await loadNativeBinding();
  return runJob<ConvertReport>(
    (h) => b.convertCheckpoint(dir, out, options.outtype ?? "f16", options.name ?? null, h),
    options,
  );
}

/** Quantizes a GGUF file as llama-quantize does (bit-identical blocks). Native engine only. */
export async function quantize(input: string, output: string, type: string, options: QuantizeOptions = {}): Promise<QuantizeReport> {
  const b = await loadNativeBinding();
  return runJob<QuantizeReport>((h) => b.quantizeFile(input, output, type, options.threads ?? 0, h), options);
}
