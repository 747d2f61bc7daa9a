// A file on disk read by ranges (Node, Bun, Deno), for the wasm engine in server runtimes.

import { open, type FileHandle } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { CoilIoError, throwIfAborted } from "../core/errors.js";
import type { ByteSource } from "../core/source.js";

export class FileSource implements ByteSource {
  private constructor(
    private readonly fh: FileHandle,
    readonly size: number,
    readonly label: string,
  ) {}

  static async open(p: string | URL, signal?: AbortSignal): Promise<FileSource> {
    throwIfAborted(signal);
    const path = p instanceof URL ? fileURLToPath(p) : p;
    let fh: FileHandle;
    try {
      fh = await open(path, "r");
    } catch (e) {
      throw new CoilIoError(`cannot open ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
    }
    const st = await fh.stat();
    if (!st.isFile()) {
      await fh.close();
      throw new CoilIoError(`${path} is not a file`);
    }
    return new FileSource(fh, st.size, path);
  }

  async read(start: number, end: number, signal?: AbortSignal): Promise<Uint8Array> {
    throwIfAborted(signal);
    end = Math.min(end, this.size);
    const out = new Uint8Array(Math.max(0, end - start));
    let pos = 0;
    while (pos < out.length) {
      const { bytesRead } = await this.fh.read(out, pos, out.length - pos, start + pos);
      if (bytesRead === 0) throw new CoilIoError(`${this.label} shrank while being read`);
      pos += bytesRead;
    }
    return out;
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
