// Byte sources: how the facade reads ranges of a GGUF without holding the whole file. The wasm
// engine is handed exactly the ranges it needs; the native engine maps files by path itself.

import { CoilIoError, InvalidArgumentError, throwIfAborted } from "./errors.js";

export interface ByteSource {
  /** Total size in bytes. */
  readonly size: number;
  /** A human name for messages (path, URL, "Blob", "bytes"). */
  readonly label: string;
  /** Bytes [start, end) — `end` clamped to `size`. */
  read(start: number, end: number, signal?: AbortSignal): Promise<Uint8Array>;
  close?(): Promise<void>;
}

export class BytesSource implements ByteSource {
  readonly size: number;
  readonly label = "bytes";
  private readonly bytes: Uint8Array;
  constructor(data: ArrayBuffer | ArrayBufferView) {
    this.bytes =
      data instanceof ArrayBuffer
        ? new Uint8Array(data)
        : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    this.size = this.bytes.byteLength;
  }
  async read(start: number, end: number): Promise<Uint8Array> {
    return this.bytes.subarray(start, Math.min(end, this.size));
  }
}

export class BlobSource implements ByteSource {
  readonly size: number;
  readonly label: string;
  constructor(private readonly blob: Blob) {
    this.size = blob.size;
    this.label = (blob as { name?: string }).name ?? "Blob";
  }
  async read(start: number, end: number, signal?: AbortSignal): Promise<Uint8Array> {
    throwIfAborted(signal);
    return new Uint8Array(await this.blob.slice(start, Math.min(end, this.size)).arrayBuffer());
  }
}

/** An http(s) URL read with Range requests (falls back to streaming when the server ignores them). */
export class UrlSource implements ByteSource {
  private constructor(
    private readonly url: string,
    readonly size: number,
  ) {}
  get label(): string {
    return this.url;
  }
  static async open(url: string, signal?: AbortSignal): Promise<UrlSource> {
    let res: Response;
    try {
      res = await fetch(url, { method: "HEAD", signal });
    } catch (e) {
      throw new CoilIoError(`cannot fetch ${url}: ${(e as Error).message}`, { cause: e });
    }
    if (!res.ok) throw new CoilIoError(`cannot fetch ${url}: HTTP ${res.status}`);
    const len = Number(res.headers.get("content-length"));
    if (!Number.isFinite(len) || len <= 0) {
      throw new CoilIoError(`cannot tell the size of ${url} (no Content-Length)`);
    }
    return new UrlSource(url, len);
  }
  async read(start: number, end: number, signal?: AbortSignal): Promise<Uint8Array> {
    end = Math.min(end, this.size);
    let res: Response;
    try {
      res = await fetch(this.url, { headers: { Range: `bytes=${start}-${end - 1}` }, signal });
    } catch (e) {
      throw new CoilIoError(`cannot fetch ${this.url}: ${(e as Error).message}`, { cause: e });
    }
    if (res.status === 206) return new Uint8Array(await res.arrayBuffer());
    if (!res.ok || !res.body) throw new CoilIoError(`cannot fetch ${this.url}: HTTP ${res.status}`);
    // The server sent the whole file: keep only the range, stop reading once past it.
    const out = new Uint8Array(end - start);
    const reader = res.body.getReader();
    let pos = 0;
    try {
      while (pos < end) {
        const { done, value } = await reader.read();
        if (done) break;
        const s = Math.max(start, pos);
        const e = Math.min(end, pos + value.byteLength);
        if (e > s) out.set(value.subarray(s - pos, e - pos), s - start);
        pos += value.byteLength;
      }
    } finally {
      await reader.cancel().catch(() => {});
    }
    if (pos < end) throw new CoilIoError(`${this.url} ended after ${pos} bytes, expected ${this.size}`);
    return out;
  }
}

export function isHttpUrl(s: string | URL): boolean {
  const t = typeof s === "string" ? s : s.href;
  return /^https?:\/\//i.test(t);
}

/** The source kinds every target understands (paths are target-specific). */
export async function openCommonSource(
  source: unknown,
  signal?: AbortSignal,
): Promise<ByteSource | undefined> {
  if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) return new BytesSource(source);
  if (typeof Blob !== "undefined" && source instanceof Blob) return new BlobSource(source);
  if ((typeof source === "string" || source instanceof URL) && isHttpUrl(source)) {
    return UrlSource.open(String(source), signal);
  }
  if (typeof source === "string" || source instanceof URL) return undefined;
  throw new InvalidArgumentError(
    `unsupported GGUF source (${Object.prototype.toString.call(source)}): pass a path, URL, Blob, File, ArrayBuffer or typed array`,
  );
}
