// Typed errors. Both engines (native addon and wasm) throw JS errors whose message is the core's
// wire form `coil-error:{"code":..,"offset":..,"message":..}`; `fromEngineError` turns those into the
// classes below, so users see the same error, with the same `code`, whichever backend ran.

/** Every error coil throws is a CoilError with a stable `code`. */
export class CoilError extends Error {
  /** Stable machine-readable code, e.g. "GGUF_TRUNCATED". */
  readonly code: string;
  /** Byte offset in the input where the problem was found, when that applies. */
  readonly offset?: number;
  constructor(code: string, message: string, options?: { offset?: number; cause?: unknown }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = "CoilError";
    this.code = code;
    if (options?.offset !== undefined) this.offset = options.offset;
  }
}

/** A malformed, truncated or hostile GGUF file (codes starting with GGUF_). */
export class GgufError extends CoilError {
  constructor(code: string, message: string, options?: { offset?: number; cause?: unknown }) {
    super(code, message, options);
    this.name = "GgufError";
  }
}

/** A bad argument from the caller (unknown option value, out-of-range token, ...). */
export class InvalidArgumentError extends CoilError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("INVALID_ARGUMENT", message, options);
    this.name = "InvalidArgumentError";
  }
}

/** The operation was aborted through its AbortSignal. `name` is "AbortError", as in the DOM. */
export class CoilAbortError extends CoilError {
  constructor(message = "the operation was aborted", options?: { cause?: unknown }) {
    super("ABORTED", message, options);
    this.name = "AbortError";
  }
}

/** The requested backend could not be loaded (e.g. `backend: "native"` without a native addon). */
export class BackendUnavailableError extends CoilError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("BACKEND_UNAVAILABLE", message, options);
    this.name = "BackendUnavailableError";
  }
}

/** An operating-system I/O failure: missing file, permission, ... */
export class CoilIoError extends CoilError {
  constructor(message: string, options?: { offset?: number; cause?: unknown }) {
    super("IO_ERROR", message, options);
    this.name = "CoilIoError";
  }
}

const WIRE_PREFIX = "coil-error:";

function make(code: string, message: string, offset: number | undefined, cause: unknown): CoilError {
  const o = { offset, cause };
  if (code.startsWith("GGUF_")) return new GgufError(code, message, o);
  if (code === "ABORTED") return new CoilAbortError(message, { cause });
  if (code === "INVALID_ARGUMENT") return new InvalidArgumentError(message, { cause });
  if (code === "IO_ERROR") return new CoilIoError(message, o);
  return new CoilError(code, message, o);
}

/** Human text of an error with its offset, as the CLI prints it. */
export function describeError(e: unknown): string {
  if (e instanceof CoilError) {
    return e.offset !== undefined ? `${e.message} (at byte ${e.offset})` : e.message;
  }
  return e instanceof Error ? e.message : String(e);
}

/** Converts whatever an engine threw into a CoilError (or passes CoilErrors through). */
export function fromEngineError(e: unknown): CoilError {
  if (e instanceof CoilError) return e;
  const msg = e instanceof Error ? e.message : typeof e === "string" ? e : "";
  const at = msg.indexOf(WIRE_PREFIX);
  if (at >= 0) {
    try {
      const w = JSON.parse(msg.slice(at + WIRE_PREFIX.length)) as {
        code: string;
        offset: number | null;
        message: string;
      };
      return make(w.code, w.message, w.offset ?? undefined, undefined);
    } catch {
      /* fall through */
    }
  }
  if (e instanceof Error && (e.name === "AbortError" || (e as { code?: string }).code === "AbortError")) {
    return new CoilAbortError(e.message || undefined, { cause: e });
  }
  if (e instanceof Error && typeof (e as NodeJS.ErrnoException).code === "string" && (e as NodeJS.ErrnoException).syscall) {
    return new CoilIoError(e.message, { cause: e });
  }
  if (e instanceof WebAssembly.RuntimeError) {
    return new CoilError("INTERNAL", `the wasm engine crashed (a bug in coil): ${e.message}`, { cause: e });
  }
  return new CoilError("INTERNAL", msg || String(e), { cause: e });
}

/** Throws a CoilAbortError if `signal` is aborted. */
export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new CoilAbortError(reasonText(signal.reason), { cause: signal.reason });
}

function reasonText(r: unknown): string {
  if (r instanceof Error && r.message) return `aborted: ${r.message}`;
  return "the operation was aborted";
}
