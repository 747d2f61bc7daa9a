// Smoke test for Bun and Deno: load coil through the package's own export conditions ("bun",
// "deno"), check the native addon is what runs, inspect a file with both engines and compare.
import * as coil from "coil";

const runtime = typeof globalThis.Deno !== "undefined" ? "deno" : typeof globalThis.Bun !== "undefined" ? "bun" : "node";
const file = new URL("../fixtures/models/tiny-jamba.gguf", import.meta.url);
const path = decodeURIComponent(file.pathname);
let passed = 0;
let failed = 0;
function check(name, ok, detail = "") {
  ok ? passed++ : failed++;
  console.log(`  ${ok ? "✓" : "✗"} ${runtime}: ${name}${ok ? "" : ` ${detail}`}`);
}
try {
  const info = await coil.backendInfo();
  check("native addon loads", info.backend === "native" && !info.fallbackReason, JSON.stringify(info));
  const n = await coil.inspectGguf(path, { backend: "native" });
  const w = await coil.inspectGguf(path, { backend: "wasm" });
  check("inspect (native)", n.summary.architecture === "jamba" && n.summary.layers.length === 4, JSON.stringify(n.summary));
  check("native and wasm agree", JSON.stringify(n) === JSON.stringify(w));
  try {
    await coil.inspectGguf(new Uint8Array([1, 2, 3, 4, 5]), { backend: "native" });
    check("typed error", false, "no error");
  } catch (e) {
    check("typed error", e instanceof coil.GgufError && e.code === "GGUF_BAD_MAGIC", `${e?.name} ${e?.code}`);
  }
} catch (e) {
  check("run", false, e?.stack ?? String(e));
}
console.log(`${runtime}: ${passed} passed, ${failed} failed`);
if (failed) (globalThis.Deno ? Deno.exit(1) : process.exit(1));
