// Property test of the GGUF reader through both engines: mutated, truncated and length-corrupted
// files must give a result or a typed GGUF error — the same from native and wasm — never a crash,
// a hang or an INTERNAL error. Bounded in iterations and time; the seed makes failures reproducible.
import { describe, expect, it } from "vitest";
import { coil, fixtureBytes, rng } from "./helpers.js";

const SEED = Number(process.env.COIL_FUZZ_SEED ?? 20261121);
const ITERATIONS = Number(process.env.COIL_FUZZ_ITERATIONS ?? 6000);
const TIME_BUDGET_MS = Number(process.env.COIL_FUZZ_MS ?? 25_000);

type Outcome = { ok: unknown } | { code: string; offset?: number; message: string };

async function outcome(bytes: Uint8Array, backend: "native" | "wasm"): Promise<Outcome> {
  try {
    return { ok: await coil.inspectGguf(bytes, { backend }) };
  } catch (e) {
    if (!(e instanceof coil.CoilError)) throw e;
    return { code: e.code, offset: e.offset, message: e.message };
  }
}

function mutate(src: Uint8Array, r: () => number): Uint8Array {
  const b = src.slice();
  const pick = (n: number) => Math.floor(r() * n);
  // Mutations concentrate on the header, where the parser lives.
  const headerEnd = Math.min(b.length, 4096);
  switch (pick(6)) {
    case 0: // flip random bytes
      for (let k = 1 + pick(8); k > 0; k--) b[pick(headerEnd)] ^= 1 << pick(8);
      return b;
    case 1: // truncate
      return b.subarray(0, pick(b.length));
    case 2: {
      // a huge or random little-endian u64 somewhere (counts, lengths, offsets, dims)
      const at = pick(Math.max(1, headerEnd - 8));
      const dv = new DataView(b.buffer, b.byteOffset);
      const v = [0xffff_ffff_ffff_ffffn, 1n << 62n, BigInt(pick(1 << 30)), 0n][pick(4)]!;
      dv.setBigUint64(at, v, true);
      return b;
    }
    case 3: {
      // a random u32 (types, versions, dims count)
      const at = pick(Math.max(1, headerEnd - 4));
      new DataView(b.buffer, b.byteOffset).setUint32(at, [0, 1, 9, 12, 13, 200, 0xffffffff][pick(7)]!, true);
      return b;
    }
    case 4: // zero a run
      b.fill(0, pick(headerEnd), pick(headerEnd));
      return b;
    default: {
      // splice a chunk from elsewhere
      const from = pick(b.length);
      const to = pick(headerEnd);
      b.copyWithin(to, from, from + pick(64));
      return b;
    }
  }
}

describe("fuzz: GGUF reader on both backends", () => {
  for (const rel of ["models/tiny-jamba.gguf", "models/tiny-mamba2.gguf"]) {
    it(`${rel}: ${ITERATIONS} mutations (seed ${SEED})`, async () => {
      const src = fixtureBytes(rel);
      const r = rng(SEED);
      const t0 = Date.now();
      let n = 0;
      const codes = new Map<string, number>();
      for (; n < ITERATIONS && Date.now() - t0 < TIME_BUDGET_MS; n++) {
        const m = mutate(src, r);
        const a = await outcome(m, "native");
        const b = await outcome(m, "wasm");
        expect(b, `case ${n} (seed ${SEED})`).toEqual(a);
        if ("code" in a) {
          expect(a.code).toMatch(/^GGUF_/);
          codes.set(a.code, (codes.get(a.code) ?? 0) + 1);
        }
      }
      expect(n).toBeGreaterThan(100);
      // The mutations must actually reach the error paths.
      expect(codes.size).toBeGreaterThanOrEqual(3);
    });
  }
});
