// llama.cpp's own benchmark tool, `llama-bench`: the speed peer every claim in docs/benchmarks.md is
// measured against. It is built on first use (never in CI: a few minutes on 2 cores) from a pinned
// llama.cpp source release: the git bundle that the pinned node-llama-cpp package ships
// (`llama/gitRelease.bundle`; its `llama/llama.cpp.info.json` names the release), so the build needs
// nothing but the npm registry (and git, cmake, a C++ compiler). CPU only, `GGML_NATIVE` (tuned for
// this machine, as a user building llama.cpp here would) minus AMX on x86-64, into
// bench/.peers/llama.cpp.
//
//   node bench/llama-bench.mjs                 builds if needed, prints the binary's path and release
//   node bench/llama-bench.mjs -m FILE [-t 1,2] [-p 512] [-n 128] [-r 2]
//                                              runs it, prints one JSON line per thread count
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { ensurePeer } from "./peers.mjs";

const DIR = fileURLToPath(new URL("./.peers/llama.cpp/", import.meta.url));
const BIN = `${DIR}build/bin/llama-bench`;

/** Path of a built `llama-bench` and the llama.cpp commit it was built from (builds it once). */
export function ensureLlamaBench() {
  const nlc = ensurePeer("node-llama-cpp");
  const bundle = `${nlc}/llama/gitRelease.bundle`;
  const info = JSON.parse(readFileSync(`${nlc}/llama/llama.cpp.info.json`, "utf8"));
  const sh = (cmd, args, opts = {}) => execFileSync(cmd, args, { stdio: ["ignore", "ignore", "inherit"], ...opts });
  if (!existsSync(`${DIR}CMakeLists.txt`)) {
    process.stderr.write(`[bench] llama.cpp ${info.tag} source from node-llama-cpp's git bundle into bench/.peers/llama.cpp\n`);
    rmSync(DIR, { recursive: true, force: true });
    sh("git", ["clone", "-q", bundle, DIR]);
  }
  if (!existsSync(BIN)) {
    process.stderr.write("[bench] building llama-bench (CPU, GGML_NATIVE; a few minutes, once)\n");
    // x86-64: no AMX. These VMs report AMX but fault on its tile instructions (llama-bench died with
    // SIGILL in `tilezero`), and coil has no AMX kernels to compare with.
    const noAmx = process.arch === "x64" ? "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" : "";
    sh("cmake", ["-S", DIR, "-B", `${DIR}build`, "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DLLAMA_CURL=OFF",
      "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
      `-DCMAKE_C_FLAGS=${noAmx}`, `-DCMAKE_CXX_FLAGS=${noAmx}`]);
    sh("cmake", ["--build", `${DIR}build`, "--target", "llama-bench", "-j", "2"]);
  }
  const commit = execFileSync("git", ["-C", DIR, "rev-parse", "--short=10", "HEAD"]).toString().trim();
  return { bin: BIN, release: info.tag, commit };
}

/**
 * Runs llama-bench on `model` (pp `pp` tokens from an empty state, tg `tg` single-token steps, best
 * `reps` repetitions, their median as coil's bench reports) with `threads` threads, CPU only, f16 KV cache.
 * Returns tokens/s as { pp_tokens_per_s, tg_tokens_per_s }.
 */
export function runLlamaBench(model, { threads, pp = 512, tg = 128, reps = 2 }) {
  const { bin } = ensureLlamaBench();
  const out = execFileSync(bin, ["-m", model, "-t", String(threads), "-p", String(pp), "-n", String(tg), "-r", String(reps),
    "-ngl", "0", "-o", "json"], { stdio: ["ignore", "pipe", "ignore"], maxBuffer: 16 << 20 }).toString();
  const res = { pp_tokens_per_s: NaN, tg_tokens_per_s: NaN };
  for (const t of JSON.parse(out)) {
    // samples_ts holds each repetition's tokens/s: their median, as coil's bench reports.
    const ts = [...(t.samples_ts ?? [t.avg_ts])].sort((a, b) => a - b);
    const mid = ts.length % 2 ? ts[(ts.length - 1) / 2] : (ts[ts.length / 2 - 1] + ts[ts.length / 2]) / 2;
    if (t.n_prompt > 0 && t.n_gen === 0) res.pp_tokens_per_s = mid;
    if (t.n_gen > 0 && t.n_prompt === 0) res.tg_tokens_per_s = mid;
  }
  return res;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      model: { type: "string", short: "m" },
      threads: { type: "string", short: "t", default: "2" },
      pp: { type: "string", short: "p", default: "512" },
      tg: { type: "string", short: "n", default: "128" },
      reps: { type: "string", short: "r", default: "2" },
    },
  });
  const peer = ensureLlamaBench();
  if (!values.model) {
    console.log(JSON.stringify(peer));
  } else {
    for (const t of values.threads.split(",").map(Number)) {
      const r = runLlamaBench(values.model, { threads: t, pp: Number(values.pp), tg: Number(values.tg), reps: Number(values.reps) });
      console.log(JSON.stringify({ llama_cpp: peer.commit, threads: t, ...r }));
    }
  }
}
