// `Model`: what `loadModel` returns, the same class on every target. It holds an engine's model and
// adds argument checks, typed errors and disposal; the work happens in the engine.

import type { EngineModel } from "./engine.js";
import { CoilError, fromEngineError, InvalidArgumentError } from "./errors.js";
import type {
  BackendName,
  ContextOptions,
  GenerateOptions,
  GenerationResult,
  GgufInfo,
  GgufMetadataValue,
  TokenAttributes,
  TokenizeOptions,
  VocabInfo,
} from "./types.js";
import { Context } from "./context.js";

function toIds(ids: ArrayLike<number>, what = "token ids"): Uint32Array {
  if (ids instanceof Uint32Array) return ids;
  if (ids == null || typeof ids.length !== "number") throw new InvalidArgumentError(`${what} must be an array of integers`);
  const out = new Uint32Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const v = ids[i]!;
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new CoilError("TOKEN_OUT_OF_RANGE", `${what}: ${String(v)} at index ${i} is not a token id`);
    }
    out[i] = v;
  }
  return out;
}

export class Model {
  #em: EngineModel | undefined;
  #info: GgufInfo | undefined;
  #vocab: VocabInfo | undefined;
  /** The engine this model runs on. */
  readonly backend: BackendName;

  /** @internal Use `loadModel()`. */
  constructor(backend: BackendName, em: EngineModel) {
    this.backend = backend;
    this.#em = em;
  }

  #engine(): EngineModel {
    if (!this.#em) throw new CoilError("DISPOSED", "this model has been disposed");
    return this.#em;
  }

  #call<T>(f: (em: EngineModel) => T): T {
    const em = this.#engine();
    try {
      return f(em);
    } catch (e) {
      throw fromEngineError(e);
    }
  }

  /** Everything in the GGUF header (metadata in full, tensors, summary). */
  get info(): GgufInfo {
    return (this.#info ??= JSON.parse(this.#call((em) => em.info(-1))) as GgufInfo);
  }

  /** The GGUF metadata, key → value. */
  get metadata(): Record<string, GgufMetadataValue> {
    return this.info.metadata;
  }

  /** Special tokens and tokenizer settings. Throws TOKENIZER_INVALID for a file without a vocabulary. */
  get vocab(): VocabInfo {
    return (this.#vocab ??= JSON.parse(this.#call((em) => em.vocab())) as VocabInfo);
  }

  /** Text → token ids, exactly as llama.cpp tokenizes. `special`: recognise control tokens written
   *  in the text (default false); `addBos`: add BOS/EOS as the vocabulary asks (default: its setting). */
  tokenize(text: string, options: TokenizeOptions = {}): number[] {
    if (typeof text !== "string") throw new InvalidArgumentError("tokenize takes a string");
    const { special = false, addBos } = options;
    return Array.from(this.#call((em) => em.tokenize(text, addBos, special)));
  }

  /** Token ids → text. `special`: render control tokens as text (default false: they are dropped). */
  detokenize(ids: ArrayLike<number>, options: { special?: boolean } = {}): string {
    const u = toIds(ids);
    return this.#call((em) => em.detokenize(u, options.special ?? false));
  }

  /** The text of each token on its own (lossy for tokens holding part of a UTF-8 character). */
  tokenPieces(ids: ArrayLike<number>, options: { special?: boolean } = {}): string[] {
    const u = toIds(ids);
    return this.#call((em) => em.pieces(u, options.special ?? true));
  }

  /** Attributes of one token: its piece, type, whether it is a control or end-of-generation token. */
  tokenAttributes(id: number): TokenAttributes {
    const u = toIds([id], "token id");
    return JSON.parse(this.#call((em) => em.token(u[0]!))) as TokenAttributes;
  }

  /** Whether the weights are loaded (false for vocabulary-only loads). */
  get hasWeights(): boolean {
    return this.#call((em) => em.hasWeights());
  }

  /** A context holding recurrent state for `sequences` sequences (default 1). */
  createContext(options: ContextOptions = {}): Context {
    const n = options.sequences ?? 1;
    if (!Number.isInteger(n) || n < 1 || n > 4096) {
      throw new InvalidArgumentError(`sequences must be an integer from 1 to 4096, got ${String(n)}`);
    }
    const threads = options.threads ?? 0;
    if (!Number.isInteger(threads) || threads < 0 || threads > 1024) {
      throw new InvalidArgumentError(`threads must be a non-negative integer, got ${String(threads)}`);
    }
    const nCtx = options.contextLength ?? 0;
    if (!Number.isInteger(nCtx) || nCtx < 0 || nCtx > 0xffffffff || (options.contextLength !== undefined && nCtx === 0)) {
      throw new InvalidArgumentError(`contextLength must be a positive integer, got ${String(options.contextLength)}`);
    }
    const kvType = options.kvType ?? "f16";
    if (kvType !== "f16" && kvType !== "f32") throw new InvalidArgumentError(`kvType must be "f16" or "f32", got ${String(kvType)}`);
    return new Context(this, this.#call((em) => em.createContext(n, threads, nCtx, kvType)), n, options.checkpoints);
  }

  /**
   * Generates text after `prompt` in a fresh single-sequence context, and returns the result.
   * Convenience for one-off completions; use contexts and `sequence.generate()` to stream or to
   * keep state between calls.
   */
  async complete(prompt: string | ArrayLike<number>, options: GenerateOptions & ContextOptions = {}): Promise<GenerationResult> {
    const ctx = this.createContext({ threads: options.threads, contextLength: options.contextLength, kvType: options.kvType });
    try {
      return await ctx.sequence(0).generate(prompt, options).complete();
    } finally {
      await ctx.dispose();
    }
  }

  /** True once `dispose()` has run. */
  get disposed(): boolean {
    return this.#em === undefined;
  }

  /** Frees the model's memory now. Safe to call twice. */
  dispose(): void {
    const em = this.#em;
    this.#em = undefined;
    em?.release();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }
}
