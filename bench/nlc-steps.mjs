// Diagnostic: per-step generation time of node-llama-cpp on one GGUF, to tell llama.cpp's compute
// from re-evaluation by the wrapper (a step whose time grows with the position re-processes the
// history).   node bench/nlc-steps.mjs FILE.gguf [steps] [threads]
import { importPeer } from "./peers.mjs";
const [file, steps = "64", threads = "2"] = process.argv.slice(2);
const nlc = await importPeer("node-llama-cpp");
const llama = await nlc.getLlama({ gpu: false, build: "never", logLevel: nlc.LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
const context = await model.createContext({ contextSize: Number(steps) + 64, batchSize: 512, threads: Number(threads), sequences: 1 });
const seq = context.getSequence();
const times = [];
for (let i = 0; i < Number(steps); i++) {
  const t0 = performance.now();
  await seq.evaluateWithoutGeneratingNewTokens([100 + i]);
  times.push(performance.now() - t0);
}
const q = (a, b) => (times.slice(a, b).reduce((x, y) => x + y, 0) / (b - a)).toFixed(1);
const n = times.length;
console.log(`node-llama-cpp ms/step: first quarter ${q(0, n >> 2)}, last quarter ${q(n - (n >> 2), n)} (steps ${n})`);
await context.dispose();
await model.dispose();
