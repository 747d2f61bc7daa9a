// Shared test helpers. Tests import the built package (dist/), as users do.
import { fileURLToPath } from "node:url";
import { readFileSync } from "node:fs";

export * as coil from "../dist/node/index.js";
export const BACKENDS = ["native", "wasm"] as const;
export type Backend = (typeof BACKENDS)[number];

export function fixture(rel: string): string {
  return fileURLToPath(new URL(`./fixtures/${rel}`, import.meta.url));
}
export function fixtureBytes(rel: string): Uint8Array {
  return new Uint8Array(readFileSync(fixture(rel)));
}
export const DEFAULT_MODEL = fileURLToPath(new URL("../models/shakespeare.gguf", import.meta.url));

export const VOCABS = [
  "vocab/ggml-vocab-gpt-neox.gguf",
  "vocab/ggml-vocab-gpt-2.gguf",
  "vocab/ggml-vocab-llama-spm.gguf",
];
export const MODELS = [
  "models/tiny-mamba.gguf",
  "models/tiny-mamba2.gguf",
  "models/tiny-jamba.gguf",
  "models/tiny-granite-hybrid.gguf",
  "models/tiny-nemotron-h.gguf",
  "models/tiny-falcon-h1.gguf",
  "models/tiny-lfm2.gguf",
];
/** The 2025–26 hybrids' tiny models (random weights, llama.cpp's layouts). */
export const HYBRID_MODELS = MODELS.slice(3);

/** A GGUF of an architecture coil does not run ("llama"), with one tensor so it wants weights. */
export async function unknownArchGguf(): Promise<Uint8Array> {
  const { GgufBuilder } = await import("./gguf-builder.js");
  return new GgufBuilder()
    .kvString("general.architecture", "llama")
    .tensor("token_embd.weight", [4, 4], 0, new Uint8Array(64))
    .build();
}

/** Deterministic PRNG (SplitMix32-ish) so fuzz cases are reproducible from their seed. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return ((z ^ (z >>> 16)) >>> 0) / 2 ** 32;
  };
}
