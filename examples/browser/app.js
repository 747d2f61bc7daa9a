// The example page's logic: load the GGUF the user picks into a worker, stream a generation, stop it.
// Served from the repository root (`node tests/browser/server.mjs`), it imports coil's web entry
// from dist/; in an app you would `import { createWorkerClient } from "coil"` through your bundler.
import { createWorkerClient } from "../../dist/web/index.js";

const $ = (id) => document.getElementById(id);
const client = createWorkerClient();
let model;
let context;
let running;

function status(text) {
  $("status").textContent = text;
}

$("file").addEventListener("change", async () => {
  const file = $("file").files[0];
  if (!file) return;
  $("generate").disabled = true;
  status(`loading ${file.name}…`);
  try {
    await context?.dispose();
    await model?.dispose();
    model = await client.loadModel(file, {
      onProgress: (p) => status(`loading ${file.name}: ${Math.round((100 * p.loaded) / p.total)}% (${p.phase})`),
    });
    context = await model.createContext();
    const info = await model.info();
    status(`loaded ${file.name}: ${info.summary.architecture}, ${info.summary.parameters.toLocaleString()} parameters`);
    $("generate").disabled = false;
  } catch (e) {
    status(`could not load ${file.name}: ${e.message} [${e.code}]`);
  }
});

$("generate").addEventListener("click", async () => {
  if (!context) return;
  running = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  $("out").textContent = "";
  status("generating…");
  const seq = context.sequence(0);
  try {
    await seq.clear();
    const gen = seq.generate($("prompt").value, {
      maxTokens: Number($("max").value),
      temperature: Number($("temp").value),
      seed: Number($("seed").value),
      signal: running.signal,
    });
    for await (const chunk of gen) $("out").textContent += chunk.text;
    const r = await gen.result;
    document.body.dataset.tokens = JSON.stringify(r.tokens);
    document.body.dataset.stopReason = r.stopReason;
    status(`done: ${r.generatedTokens} tokens (${r.stopReason})`);
  } catch (e) {
    status(`error: ${e.message} [${e.code}]`);
  } finally {
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
});

$("stop").addEventListener("click", () => running?.abort());
