// Bad input gets a clear, typed error — the same one from both engines — never a crash or a hang.
import { describe, expect, it } from "vitest";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BACKENDS, coil, fixture } from "./helpers.js";
import { GgufBuilder, u32, u64, concat, str } from "./gguf-builder.js";

const F32 = 0;
const Q4_0 = 2; // blocks of 32 values, 18 bytes

async function failure(src: Uint8Array | string, backend: "native" | "wasm") {
  try {
    await coil.inspectGguf(src, { backend });
  } catch (e) {
    return e as InstanceType<typeof coil.CoilError>;
  }
  throw new Error("expected inspectGguf to fail");
}

/** Both backends fail with the same typed error; returns it. */
async function bothFail(src: Uint8Array, code: string, offset?: number) {
  const [n, w] = await Promise.all(BACKENDS.map((b) => failure(src, b)));
  for (const e of [n!, w!]) {
    expect(e).toBeInstanceOf(coil.CoilError);
    expect(e).toBeInstanceOf(coil.GgufError);
    expect(e.code).toBe(code);
    if (offset !== undefined) expect(e.offset).toBe(offset);
    expect(e.message.length).toBeGreaterThan(5);
  }
  expect({ code: w!.code, offset: w!.offset, message: w!.message }).toEqual({
    code: n!.code,
    offset: n!.offset,
    message: n!.message,
  });
  return n!;
}

const valid = () =>
  new GgufBuilder()
    .kvString("general.architecture", "mamba")
    .kvU32("mamba.block_count", 1)
    .tensor("a", [8], F32, new Uint8Array(32))
    .tensor("b", [32, 2], Q4_0, new Uint8Array(36));

describe("malformed GGUF → typed errors, identical on both backends", () => {
  it("the valid base file parses", async () => {
    for (const backend of BACKENDS) {
      const r = await coil.inspectGguf(valid().build(), { backend });
      expect(r.tensors.map((t) => [t.name, t.bytes])).toEqual([
        ["a", 32],
        ["b", 36],
      ]);
    }
  });
  it("empty file", () => bothFail(new Uint8Array(0), "GGUF_TRUNCATED", 0));
  it("bad magic", async () => {
    const b = valid();
    b.magic = "GGUX";
    await bothFail(b.build(), "GGUF_BAD_MAGIC", 0);
  });
  it("unsupported versions", async () => {
    for (const v of [1, 4, 0x03000000]) {
      const b = valid();
      b.version = v;
      await bothFail(b.build(), "GGUF_UNSUPPORTED_VERSION", 4);
    }
  });
  it("truncated at every length", async () => {
    const f = valid().build();
    // Header and data both: the header's tensors point into the missing data.
    for (let n = 1; n < f.length; n++) {
      const e = await bothFail(f.subarray(0, n), (await failure(f.subarray(0, n), "native")).code);
      expect(["GGUF_TRUNCATED", "GGUF_TENSOR_OUT_OF_BOUNDS", "GGUF_BAD_MAGIC"]).toContain(e.code);
    }
  });
  it("absurd counts and lengths do not allocate or hang", async () => {
    const huge = 0xffff_ffff_ffff_fff0n;
    const head = (nt: bigint, nkv: bigint) => concat([new TextEncoder().encode("GGUF"), u32(3), u64(nt), u64(nkv)]);
    for (const f of [
      head(0n, huge),
      head(huge, 0n),
      concat([head(0n, 1n), u64(huge), new Uint8Array(64)]), // key length
      concat([head(0n, 1n), str("k"), u32(8), u64(huge), new Uint8Array(64)]), // string value length
      concat([head(0n, 1n), str("k"), u32(9), u32(4), u64(huge), new Uint8Array(64)]), // array count
      concat([head(0n, 1n), str("k"), u32(9), u32(9), u64(1n), u32(9), u64(huge)]), // nested array count
    ]) {
      const e = await bothFail(f, (await failure(f, "native")).code);
      expect(["GGUF_TRUNCATED", "GGUF_INVALID"]).toContain(e.code);
      expect(e.offset).toBeGreaterThanOrEqual(8);
    }
  });
  it("bad value type", async () => {
    const f = new GgufBuilder().kvRaw("k", 13, new Uint8Array(8)).build();
    await bothFail(f, "GGUF_INVALID");
  });
  it("invalid UTF-8 in a key and in a string value", async () => {
    const bad = new Uint8Array([0x61, 0xff, 0x62]);
    const f1 = concat([new TextEncoder().encode("GGUF"), u32(3), u64(0n), u64(1n), str(bad), u32(4), u32(1)]);
    await bothFail(f1, "GGUF_BAD_UTF8", 33); // the offending byte
    const f2 = new GgufBuilder().kvRaw("k", 8, str(bad)).build();
    await bothFail(f2, "GGUF_BAD_UTF8");
  });
  it("tensor outside the file", async () => {
    const b = new GgufBuilder().tensor("a", [8], F32, new Uint8Array(32));
    const f = b.build();
    await bothFail(f.subarray(0, f.length - 1), "GGUF_TENSOR_OUT_OF_BOUNDS");
    const far = new GgufBuilder().tensor("a", [8], F32, new Uint8Array(0), 1 << 20).build();
    await bothFail(far, "GGUF_TENSOR_OUT_OF_BOUNDS");
  });
  it("overlapping tensors", async () => {
    const f = new GgufBuilder()
      .tensor("a", [16], F32, new Uint8Array(64), 0)
      .tensor("b", [8], F32, new Uint8Array(32), 32)
      .build();
    await bothFail(f, "GGUF_TENSOR_OVERLAP");
  });
  it("misaligned tensor offset", async () => {
    const f = new GgufBuilder().tensor("a", [8], F32, new Uint8Array(32), 4).build();
    await bothFail(f, "GGUF_MISALIGNED");
  });
  it("a row that is not a whole number of blocks", async () => {
    const f = new GgufBuilder().tensor("q", [33], Q4_0, new Uint8Array(64)).build();
    await bothFail(f, "GGUF_INVALID");
  });
  it("an unknown tensor type is reported, not fatal", async () => {
    const f = new GgufBuilder().tensor("x", [8], 200, new Uint8Array(32)).build();
    for (const backend of BACKENDS) {
      const r = await coil.inspectGguf(f, { backend });
      expect(r.tensors[0]).toMatchObject({ name: "x", type: "UNKNOWN(200)", type_id: 200, bytes: null });
      expect(r.summary.unknown_type_ids).toEqual([200]);
    }
  });
});

describe("other failures are typed too", () => {
  it("missing file, a directory", async () => {
    for (const backend of BACKENDS) {
      const e = await failure("/no/such/file.gguf", backend);
      expect(e).toBeInstanceOf(coil.CoilIoError);
      expect(e.code).toBe("IO_ERROR");
      expect(e.message).toContain("/no/such/file.gguf");
      const d = await failure(tmpdir(), backend);
      expect(d.code).toBe("IO_ERROR");
    }
  });
  it("an aborted signal rejects with AbortError and touches nothing", async () => {
    for (const backend of BACKENDS) {
      const c = new AbortController();
      c.abort();
      await expect(coil.inspectGguf(fixture("vocab/ggml-vocab-gpt-2.gguf"), { backend, signal: c.signal })).rejects.toMatchObject({
        name: "AbortError",
        code: "ABORTED",
      });
    }
  });
  it("abort while reading", async () => {
    // Start, then abort right away: it either finished first or rejects with AbortError.
    for (const backend of BACKENDS) {
      const c = new AbortController();
      const p = coil.inspectGguf(fixture("vocab/ggml-vocab-gpt-neox.gguf"), { backend, signal: c.signal });
      c.abort();
      await expect(p).rejects.toMatchObject({ name: "AbortError" });
    }
  });
  it("bad options", async () => {
    await expect(coil.inspectGguf(fixture("vocab/ggml-vocab-gpt-2.gguf"), { backend: "gpu" as never })).rejects.toBeInstanceOf(
      coil.InvalidArgumentError,
    );
    await expect(coil.inspectGguf(fixture("vocab/ggml-vocab-gpt-2.gguf"), { arrayHead: -1 })).rejects.toMatchObject({
      code: "INVALID_ARGUMENT",
    });
    await expect(coil.inspectGguf(42 as never)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  });
  it("a file written to disk reads the same as the bytes", async () => {
    const dir = mkdtempSync(join(tmpdir(), "coil-"));
    const f = valid().build();
    writeFileSync(join(dir, "x.gguf"), f);
    for (const backend of BACKENDS) {
      expect(await coil.inspectGguf(join(dir, "x.gguf"), { backend })).toEqual(await coil.inspectGguf(f, { backend }));
    }
  });
});
