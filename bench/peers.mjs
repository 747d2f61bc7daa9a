// Installs the peers coil is measured against (node-llama-cpp, @huggingface/tokenizers) into
// bench/.peers on first use. They are large (node-llama-cpp ships prebuilt llama.cpp builds,
// ~700 MB with its GPU variants), so they stay out of coil's own dependencies.
import { existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import { fileURLToPath, pathToFileURL } from "node:url";

const DIR = fileURLToPath(new URL("./.peers/", import.meta.url));
export const PEERS = { "node-llama-cpp": "3.22.1", "@huggingface/tokenizers": "0.2.0" };

/** Installs peer `name` at its pinned version into bench/.peers (once); returns its package folder. */
export function ensurePeer(name) {
  const pkgDir = `${DIR}node_modules/${name}`;
  if (!existsSync(pkgDir)) {
    process.stderr.write(`[bench] installing ${name}@${PEERS[name]} into bench/.peers (once)\n`);
    execFileSync("npm", ["install", "--prefix", DIR, "--no-audit", "--no-fund", "--loglevel=error", `${name}@${PEERS[name]}`], {
      stdio: ["ignore", "ignore", "inherit"],
    });
  }
  return pkgDir;
}

export async function importPeer(name) {
  const pkgDir = ensurePeer(name);
  const req = createRequire(`${DIR}package.json`);
  let entry;
  try {
    entry = req.resolve(name);
  } catch {
    // ESM-only packages: resolve through their package.json "exports"/"module".
    const pj = JSON.parse((await import("node:fs")).readFileSync(`${pkgDir}/package.json`, "utf8"));
    const e = pj.exports?.["."] ?? pj.exports ?? pj.module ?? pj.main;
    const rel = typeof e === "string" ? e : e.import?.default ?? e.import ?? e.default;
    entry = `${pkgDir}/${rel}`;
  }
  const mod = await import(pathToFileURL(entry).href);
  // A CommonJS entry arrives as `default`; expose its names directly.
  return mod.default && typeof mod.default === "object" ? { ...mod.default, ...mod } : mod;
}
