// The wasm engine's threads in Node: the threaded module (wasm-pkg/mt) runs the kernels on a pool
// of worker_threads sharing its memory. Its results must not depend on the thread count (each
// output element is computed by one task, in one order), its workers must really take part, and
// it must fall back to the single-threaded module when asked (or when shared memory is missing),
// without keeping the process alive. The browser side (nested Web Workers, COOP/COEP, the
// not-isolated fallback) is in tests/browser/run.mjs.
import { describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import { DEFAULT_MODEL, coil, fixture } from "./helpers.js";

const CPUS = Math.min(availableParallelism(), 64);
const DIST = fileURLToPath(new URL("../dist/node/index.js", import.meta.url));
const PROMPT = "ROMEO:\nBut soft, what light through yonder window breaks? It is the east, and Juliet is the sun.";

/** Runs an ES module snippet in a fresh Node process (`coil` imported), with extra environment. */
function node(code: string, env: Record<string, string> = {}) {
  const src = `import * as coil from ${JSON.stringify(DIST)};\n${code}`;
  return spawnSync(process.execPath, ["--input-type=module", "-e", src], {
    encoding: "utf8",
    timeout: 60_000,
    env: { ...process.env, ...env },
  });
}

/** Logits of every prompt position, then of 8 greedy steps, with `threads` threads. */
async function run(m: coil.Model, threads: number): Promise<Float32Array[]> {
  await using ctx = m.createContext({ threads });
  const s = ctx.sequence(0);
  const V = ctx.nVocab;
  const out = [await s.evaluate(m.tokenize(PROMPT), { logits: "all" })];
  for (let i = 0; i < 8; i++) {
    const last = out.at(-1)!.subarray(-V);
    let best = 0;
    for (let j = 1; j < V; j++) if (last[j]! > last[best]!) best = j;
    out.push(await s.evaluate([best]));
  }
  return out;
}

describe("wasm threads (Node)", () => {
  it("start one thread per CPU, or say why not", async () => {
    const info = await coil.backendInfo({ backend: "wasm" });
    if (CPUS > 1) {
      expect(info.threads).toBe(CPUS);
      expect(info.singleThreadedReason).toBeUndefined();
    } else {
      expect(info.threads).toBe(1);
      expect(info.singleThreadedReason).toMatch(/one CPU/);
    }
  });

  for (const [name, file] of [
    ["default model (mamba2, f16)", DEFAULT_MODEL],
    ["tiny-jamba", fixture("models/tiny-jamba.gguf")],
    ["tiny-mamba", fixture("models/tiny-mamba.gguf")],
  ] as const) {
    it(`${name}: every logit is the same for 1 and ${CPUS} threads, and as native`, async () => {
      await using w = await coil.loadModel(file, { backend: "wasm" });
      const one = await run(w, 1);
      const all = await run(w, CPUS);
      await using n = await coil.loadModel(file, { backend: "native" });
      const nat = await run(n, 2);
      for (let i = 0; i < one.length; i++) {
        expect(Array.from(all[i]!), `step ${i}: ${CPUS} threads vs 1`).toEqual(Array.from(one[i]!));
        expect(Array.from(all[i]!), `step ${i}: wasm vs native`).toEqual(Array.from(nat[i]!));
      }
    });
  }

  it("the workers take part in an evaluation (and not with threads: 1)", async () => {
    // A long prompt, so that jobs are long enough for a worker to join even on a busy machine (the
    // tiny models' jobs can all finish on the caller before a parked worker wakes up).
    await using m = await coil.loadModel(DEFAULT_MODEL, { backend: "wasm" });
    const text = readFileSync(fixture("text/tinyshakespeare-heldout.txt"), "utf8").slice(0, 6000);
    const toks = m.tokenize(text).slice(0, 1024);
    const tasks = async () => (await coil.backendInfo({ backend: "wasm" })).workerTasks ?? 0;
    const evalWith = async (threads: number) => {
      await using ctx = m.createContext({ threads });
      await ctx.sequence(0).evaluate(toks);
    };
    const t0 = await tasks();
    await evalWith(1);
    const t1 = await tasks();
    await evalWith(CPUS);
    const t2 = await tasks();
    expect(t1 - t0, "threads: 1 must not use the workers").toBe(0);
    if (CPUS > 1) expect(t2 - t1, "the workers ran no task").toBeGreaterThan(0);
  });

  it("COIL_WASM_THREADS=1 runs the single-threaded module, with the same logits", async () => {
    await using m = await coil.loadModel(DEFAULT_MODEL, { backend: "wasm" });
    const want = Array.from((await run(m, CPUS))[0]!.subarray(0, 64));
    const r = node(
      `const info = await coil.backendInfo({ backend: "wasm" });
       const m = await coil.loadModel(${JSON.stringify(DEFAULT_MODEL)}, { backend: "wasm" });
       const c = m.createContext();
       const l = await c.sequence(0).evaluate(m.tokenize(${JSON.stringify(PROMPT)}), { logits: "all" });
       console.log(JSON.stringify({ threads: info.threads, why: info.singleThreadedReason, tasks: (await coil.backendInfo({ backend: "wasm" })).workerTasks, l: Array.from(l.subarray(0, 64)) }));`,
      { COIL_WASM_THREADS: "1" },
    );
    expect(r.status, r.stderr).toBe(0);
    const got = JSON.parse(r.stdout);
    expect(got.threads).toBe(1);
    expect(got.why).toBe("COIL_WASM_THREADS=1");
    expect(got.tasks).toBe(0);
    expect(got.l).toEqual(want);
  });

  it("a bad COIL_WASM_THREADS is a typed error, not a silent default", () => {
    const r = node(
      `try { await coil.backendInfo({ backend: "wasm" }); console.log("no error"); }
       catch (e) { console.log(JSON.stringify({ code: e.code, msg: e.message })); }`,
      { COIL_WASM_THREADS: "lots" },
    );
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.code).toBe("INVALID_ARGUMENT");
    expect(out.msg).toMatch(/COIL_WASM_THREADS/);
  });

  it("a process that ran the threaded engine exits on its own (its threads do not keep it alive)", () => {
    const t = performance.now();
    const r = node(
      `const m = await coil.loadModel(${JSON.stringify(DEFAULT_MODEL)}, { backend: "wasm" });
       const c = m.createContext();
       await c.sequence(0).evaluate(m.tokenize("ROMEO:"));
       console.log((await coil.backendInfo({ backend: "wasm" })).threads);`,
    );
    expect(r.error, "the process did not exit (killed at the 60 s timeout)").toBeUndefined();
    expect(r.status, r.stderr).toBe(0);
    expect(Number(r.stdout.trim())).toBe(CPUS);
    expect(performance.now() - t).toBeLessThan(60_000);
  });
});
