// What the JavaScript path adds to a generated token, on both engines: `Sequence.evaluate` of one
// token at a time (what `coil bench` and every generation loop do) against the engine's own loop on
// the same context — the raw engine call (`EngineContext.run`, no queue, no batching, no copies) —
// and, for native, against the Rust loop of `examples/bench_model` (no JS at all). The three take
// turns for `--rounds` rounds of `--tg` tokens; the best round of each is kept.
//
//   npm run build && node bench/js-overhead.mjs [--model FILE] [--threads 2] [--tg 128] [--rounds 5]
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { loadModel } from "../dist/node/index.js";

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "bench/.models/mamba2-130m-q8_0.gguf" },
    threads: { type: "string", default: "2" },
    tg: { type: "string", default: "128" },
    rounds: { type: "string", default: "5" },
    backends: { type: "string", default: "native,wasm" },
  },
});
const root = fileURLToPath(new URL("..", import.meta.url));
const [threads, tg, rounds] = [Number(values.threads), Number(values.tg), Number(values.rounds)];
const KIND_EVAL_LAST = 1;
const tokens = Array.from({ length: tg + 1 }, (_, i) => (i * 7919 + 13) % 1000);
const msPerToken = (f) => async () => {
  const t0 = performance.now();
  await f();
  return (performance.now() - t0) / tg;
};

for (const backend of values.backends.split(",")) {
  const model = await loadModel(values.model, { backend });
  const ctx = model.createContext({ threads, contextLength: tg + 16 });
  const seq = ctx.sequence(0);
  const ec = ctx.engine();
  const one = (t) => ec.run(new Uint32Array([0]), new Uint8Array([KIND_EVAL_LAST]), new Uint32Array([0]), new Uint32Array([1]), new Uint32Array([t]));
  const ways = {
    engine: msPerToken(async () => {
      for (let i = 1; i <= tg; i++) await one(tokens[i]);
    }),
    facade: msPerToken(async () => {
      for (let i = 1; i <= tg; i++) await seq.evaluate([tokens[i]]);
    }),
  };
  if (backend === "native") {
    const bin = `${root}target/release/examples/bench_model`;
    execFileSync("cargo", ["build", "-q", "--release", "-p", "coil-core", "--example", "bench_model"], { cwd: root, stdio: "inherit" });
    ways.rust = async () => {
      const out = execFileSync(bin, ["--gguf", values.model, "--pp", "0", "--tg", String(tg), "--threads", String(threads), "--reps", "1"]).toString();
      return Number(/tg\d+:.*\(([\d.]+) ms\/token\)/.exec(out)[1]);
    };
  }
  const best = Object.fromEntries(Object.keys(ways).map((k) => [k, Infinity]));
  for (let r = 0; r < rounds; r++) {
    for (const [k, f] of Object.entries(ways)) {
      seq.clear();
      await seq.evaluate([tokens[0]]); // the state exists and the first call's setup is done
      best[k] = Math.min(best[k], await f());
    }
  }
  const pct = (a, b) => `${(100 * (a / b - 1)).toFixed(1)}%`;
  console.log(
    `${backend}, ${threads} thread(s), ${values.model}: ms/token ` +
      Object.entries(best).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", ") +
      ` | facade over engine call ${pct(best.facade, best.engine)}` +
      (best.rust ? `, over the Rust loop ${pct(best.facade, best.rust)}` : ""),
  );
  await ctx.dispose();
  await model.dispose();
}
