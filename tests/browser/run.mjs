// Runs tests/browser/index.html in headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core, which gives it a fresh temporary profile) and compares what the wasm engine computed there — in the page and in the worker —
// with what the native engine computes in Node for the same files.
import { chromium } from "playwright-core";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import { mkdtempSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { startServer } from "./server.mjs";
import * as coil from "../../dist/node/index.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const CPUS = availableParallelism();

const { server, port } = await startServer(0);
let browser;
const consoleErrorsSeen = [];
let passed = 0;
let failed = 0;
const pass = (name) => (passed++, console.log(`  ✓ ${name}`));
const fail = (name, why) => (failed++, console.log(`  ✗ ${name}: ${why}`));
try {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  // The native side of "worker sequence operations" (see index.html).
  const seqNative = await (async () => {
    const m = await coil.loadModel(join(ROOT, "tests/fixtures/models/tiny-mamba2.gguf"), { backend: "native" });
    const ctx = m.createContext({ sequences: 3 });
    const greedy = { temperature: 0, maxTokens: 8 };
    const a = ctx.sequence(0);
    await a.evaluate([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    const b = a.fork();
    await b.truncate(4);
    const saved = a.saveState();
    const c = ctx.sequence(2);
    c.loadState(saved);
    const ta = (await c.generate([11], greedy).complete()).tokens;
    const tb = (await b.generate([9], greedy).complete()).tokens;
    const other = m.createContext();
    await other.sequence(0).evaluate([5, 6, 7, 8, 9, 10, 11, 12]);
    const state = Array.from(other.sequence(0).saveState());
    const tn = (await other.sequence(0).generate([13], greedy).complete()).tokens;
    const positions = [a.position, b.position, c.position];
    await other.dispose();
    await ctx.dispose();
    m.dispose();
    return { ta, tb, tn, state, positions: [positions[0], 8 + 1 + 8, positions[2]], savedBytes: saved.length };
  })();
  const consoleErrors = consoleErrorsSeen;
  // The page twice: cross-origin isolated (the worker runs the threaded wasm module) and not (one
  // thread); every result must match native either way.
  for (const mode of [
    { query: "", isolated: true, label: "cross-origin isolated" },
    { query: "?coi=0", isolated: false, label: "not isolated" },
  ]) {
    const page = await browser.newPage();
    await page.addInitScript((s) => (window.__nativeState = s), seqNative.state);
    page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
    page.on("pageerror", (e) => consoleErrors.push(String(e)));
    await page.goto(`http://127.0.0.1:${port}/tests/browser/index.html${mode.query}`);
    await page.waitForFunction(() => window.__results !== undefined, null, { timeout: 60_000 });
    const results = await page.evaluate(() => window.__results);
    console.log(`browser (headless Chromium), ${mode.label}:`);
    for (const r of results) {
      if (!r.ok) {
        fail(r.name, r.error);
        continue;
      }
      const m = /inspect (?:Blob|URL|ArrayBuffer) (\S+)$/.exec(r.name);
      if (m) {
        // Same answer as the native engine in Node, except the file name-independent fields.
        const native = await coil.inspectGguf(join(ROOT, m[1]), { backend: "native" });
        isDeepStrictEqual(r.value, native) ? pass(`${r.name} equals native`) : fail(r.name, "differs from native");
      } else if (r.name.endsWith("backendInfo")) {
        const v = r.value;
        // Threads: only a Worker of an isolated page may run the threaded module; elsewhere one
        // thread, with the reason said.
        const threadsOk = r.name.startsWith("worker") && mode.isolated
          ? v.threads === Math.min(CPUS, 64) && v.singleThreadedReason === undefined
          : v.threads === 1 && (r.name.startsWith("page") ? /main thread/ : /cross-origin isolated/).test(v.singleThreadedReason ?? "");
        v.backend === "wasm" && v.cpuFeatures.includes("simd128") && v.kernels.every((k) => k.max_rel_diff < 1e-5) && threadsOk
          ? pass(`${r.name}: wasm, simd128, kernels match the reference, ${v.threads} thread(s)${v.singleThreadedReason ? ` (${v.singleThreadedReason})` : ""}`)
          : fail(r.name, JSON.stringify(v));
      } else if (r.name === "worker threads") {
        const { info, isolated } = r.value;
        (mode.isolated ? isolated === true && info.workerTasks > 0 : isolated === false && info.workerTasks === 0)
          ? pass(`${r.name}: ${info.workerTasks} tasks ran on the worker's other threads`)
          : fail(r.name, JSON.stringify(r.value));
      } else if (r.name === "worker sequence operations") {
        const v = r.value;
        const want = { ta: seqNative.ta, tb: seqNative.tb, tn: seqNative.tn, full: "CONTEXT_FULL", positions: seqNative.positions, savedBytes: seqNative.savedBytes };
        isDeepStrictEqual(v, want)
          ? pass(`${r.name}: fork, truncate, save/load (native state too) as in native`)
          : fail(r.name, `${JSON.stringify(v)} vs native ${JSON.stringify(want)}`);
      } else if (r.name === "worker jamba") {
        const m = await coil.loadModel(join(ROOT, "tests/fixtures/models/tiny-jamba.gguf"), { backend: "native" });
        const c = m.createContext({ contextLength: 20, kvType: "f32" });
        const want = await c.sequence(0).evaluate([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], { logits: "all" });
        const memory = c.memory;
        await c.dispose();
        m.dispose();
        const v = r.value;
        const close = v.logits.length === want.length && v.logits.every((x, i) => Math.abs(x - want[i]) <= 1e-5 * (1 + Math.abs(want[i])));
        close && v.full.code === "CONTEXT_FULL" && v.full.isCoilError && v.position === 10 && isDeepStrictEqual(v.memory, memory)
          ? pass(`${r.name}: logits as native, CONTEXT_FULL typed, memory accounting as native`)
          : fail(r.name, JSON.stringify({ ...v, logits: v.logits.length }));
      } else if (r.name.startsWith("worker hybrid ")) {
        const f = r.name.slice("worker hybrid ".length);
        const m = await coil.loadModel(join(ROOT, `tests/fixtures/models/${f}.gguf`), { backend: "native" });
        const c = m.createContext({ kvType: "f32" });
        const want = Array.from(await c.sequence(0).evaluate([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], { logits: "all" }));
        await c.dispose();
        m.dispose();
        // One engine: the browser's wasm gives native's logits bit for bit.
        isDeepStrictEqual(r.value, want) ? pass(`${r.name}: logits bit-identical to native`) : fail(r.name, "logits differ from native");
      } else if (r.name === "worker abort") {
        r.value.name === "AbortError" && r.value.code === "ABORTED" ? pass(r.name) : fail(r.name, JSON.stringify(r.value));
      } else if (r.name === "native is refused in a browser") {
        r.value.code === "BACKEND_UNAVAILABLE" && r.value.isCoilError ? pass(r.name) : fail(r.name, JSON.stringify(r.value));
      } else if (r.name.endsWith("error is typed")) {
        const v = r.value;
        v.code === "GGUF_TRUNCATED" && v.isGgufError && v.name === "GgufError" && v.offset === 8
          ? pass(r.name)
          : fail(r.name, JSON.stringify(v));
      } else {
        fail(r.name, "no check for this result");
      }
    }
  }
  if (consoleErrors.length) fail("no console errors", consoleErrors.join(" | "));
  else pass("no console errors");

  // The example page, end to end: pick a GGUF, generate (greedy: the same tokens as native), stop.
  console.log("example page (examples/browser):");
  const gguf = join(mkdtempSync(join(tmpdir(), "coil-e2e-")), "mamba.gguf");
  await coil.convert(join(ROOT, "tests/fixtures/hf/mamba"), gguf, { outtype: "f32" });
  const native = await (async () => {
    const m = await coil.loadModel(gguf, { backend: "native" });
    const r = await m.complete("ROMEO:", { temperature: 0, maxTokens: 20, seed: 1 });
    m.dispose();
    return r;
  })();
  const ex = await browser.newPage();
  ex.on("pageerror", (e) => consoleErrors.push(String(e)));
  await ex.goto(`http://127.0.0.1:${port}/examples/browser/index.html`);
  await ex.setInputFiles("#file", gguf);
  await ex.waitForFunction(() => document.getElementById("status").textContent.startsWith("loaded"), null, { timeout: 30_000 });
  pass("loads the picked GGUF in the worker");
  await ex.fill("#prompt", "ROMEO:");
  await ex.fill("#temp", "0");
  await ex.fill("#max", "20");
  await ex.click("#generate");
  await ex.waitForFunction(() => document.body.dataset.stopReason !== undefined, null, { timeout: 30_000 });
  const tokens = JSON.parse(await ex.evaluate(() => document.body.dataset.tokens));
  const shown = await ex.evaluate(() => document.getElementById("out").textContent);
  isDeepStrictEqual(tokens, native.tokens) && shown === native.text
    ? pass(`greedy generation streams the same ${tokens.length} tokens and text as native`)
    : fail("greedy generation", `browser ${JSON.stringify(tokens)} ${JSON.stringify(shown)} vs native ${JSON.stringify(native.tokens)} ${JSON.stringify(native.text)}`);
  await ex.evaluate(() => delete document.body.dataset.stopReason);
  await ex.fill("#max", "1000000");
  await ex.fill("#temp", "1");
  await ex.click("#generate");
  await ex.waitForFunction(() => document.getElementById("out").textContent.length > 0, null, { timeout: 30_000 });
  await ex.click("#stop");
  await ex.waitForFunction(() => document.body.dataset.stopReason !== undefined, null, { timeout: 30_000 });
  const reason = await ex.evaluate(() => document.body.dataset.stopReason);
  const status = await ex.evaluate(() => document.getElementById("status").textContent);
  reason === "abort" && /done: \d+ tokens \(abort\)/.test(status)
    ? pass(`the stop button aborts (${status})`)
    : fail("stop", `${reason} / ${status}`);
} catch (e) {
  fail("browser run", (e?.stack ?? String(e)) + (consoleErrorsSeen.length ? `\n    console: ${consoleErrorsSeen.join(" | ")}` : ""));
} finally {
  await browser?.close();
  server.close();
}
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
