// Runs tests/browser/index.html in headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core, which gives it a fresh temporary profile) and compares what the wasm engine computed there — in the page and in the worker —
// with what the native engine computes in Node for the same files.
import { chromium } from "playwright-core";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import { startServer } from "./server.mjs";
import * as coil from "../../dist/node/index.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

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
  const page = await browser.newPage();
  const consoleErrors = consoleErrorsSeen;
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(m.text()));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  await page.goto(`http://127.0.0.1:${port}/tests/browser/index.html`);
  await page.waitForFunction(() => window.__results !== undefined, null, { timeout: 60_000 });
  const results = await page.evaluate(() => window.__results);
  console.log("browser (headless Chromium):");
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
      v.backend === "wasm" && v.cpuFeatures.includes("simd128") && v.kernels.every((k) => k.max_rel_diff < 1e-5)
        ? pass(`${r.name}: wasm, simd128, kernels match the reference`)
        : fail(r.name, JSON.stringify(v));
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
  if (consoleErrors.length) fail("no console errors", consoleErrors.join(" | "));
  else pass("no console errors");
} catch (e) {
  fail("browser run", (e?.stack ?? String(e)) + (consoleErrorsSeen.length ? `\n    console: ${consoleErrorsSeen.join(" | ")}` : ""));
} finally {
  await browser?.close();
  server.close();
}
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
