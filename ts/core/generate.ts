// Text generation: `sequence.generate()` as an async iterator of chunks. Each step runs in the
// engine (evaluate, sample, decode, stop strings), so both targets produce the same tokens; this
// side only drives the steps, honours the AbortSignal between them, and keeps the sequence's
// position consistent: when generation ends, for any reason, every generated token (including a
// final end-of-generation token) has been fed to the sequence, so it can simply continue.

import type { RunItemResult } from "./engine.js";
import { CoilError, fromEngineError, InvalidArgumentError } from "./errors.js";
import type { GenerateOptions, GenerationChunk, GenerationResult, StopReason } from "./types.js";

/** The engine's generation parameters (GenerateParams JSON) from the user's options. */
export function generateParams(o: GenerateOptions): string {
  const num = (name: string, v: unknown, min: number, max = Infinity): number | undefined => {
    if (v === undefined) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v) || v < min || v > max) {
      throw new InvalidArgumentError(`${name} must be a number in [${min}, ${max}], got ${String(v)}`);
    }
    return v;
  };
  // Always pass a seed: the wasm engine has no entropy source of its own.
  const seed = num("seed", o.seed, 0, Number.MAX_SAFE_INTEGER) ?? Math.floor(Math.random() * 2 ** 52);
  const opts = {
    temperature: num("temperature", o.temperature, 0, 100),
    topK: num("topK", o.topK, 0),
    topP: num("topP", o.topP, 0, 1),
    minP: num("minP", o.minP, 0, 1),
    typicalP: num("typicalP", o.typicalP, 0, 1),
    penaltyLastN: num("penalties.lastN", o.penalties?.lastN, -1),
    repeatPenalty: num("penalties.repeat", o.penalties?.repeat, 0),
    frequencyPenalty: num("penalties.frequency", o.penalties?.frequency, -10, 10),
    presencePenalty: num("penalties.presence", o.penalties?.presence, -10, 10),
  };
  const bias = o.logitBias
    ? Object.entries(o.logitBias).map(([id, v]) => [Number(id), v === -Infinity ? "-inf" : v === Infinity ? "inf" : v])
    : undefined;
  let sampler: Record<string, unknown>;
  if (o.samplers) {
    // An explicit order: each named stage takes its value from the options.
    const stage = (name: string): Record<string, unknown> => {
      switch (name) {
        case "logit_bias":
          return { type: name, bias: bias ?? [] };
        case "penalties":
          return { type: name, lastN: opts.penaltyLastN ?? 64, repeat: opts.repeatPenalty ?? 1, frequency: opts.frequencyPenalty ?? 0, presence: opts.presencePenalty ?? 0 };
        case "top_k":
          return { type: name, k: opts.topK ?? 40 };
        case "top_p":
          return { type: name, p: opts.topP ?? 0.95 };
        case "min_p":
          return { type: name, p: opts.minP ?? 0.05 };
        case "typical_p":
          return { type: name, p: opts.typicalP ?? 1 };
        case "temperature":
          return { type: name, t: opts.temperature ?? 0.8 };
        default:
          throw new InvalidArgumentError(`unknown sampler "${name}": use logit_bias, penalties, top_k, top_p, min_p, typical_p, temperature`);
      }
    };
    const greedy = opts.temperature === 0;
    sampler = { chain: [...o.samplers.map(stage), greedy ? { type: "greedy" } : { type: "dist", seed }] };
  } else {
    sampler = { ...opts, seed, ...(bias ? { logitBias: bias } : {}) };
  }
  for (const k of Object.keys(sampler)) if (sampler[k] === undefined) delete sampler[k];
  const maxTokens = num("maxTokens", o.maxTokens, 1) ?? 256;
  if (!Number.isInteger(maxTokens)) throw new InvalidArgumentError("maxTokens must be an integer");
  if (o.stop !== undefined && (!Array.isArray(o.stop) || o.stop.some((s) => typeof s !== "string" || s === ""))) {
    throw new InvalidArgumentError("stop must be an array of non-empty strings");
  }
  return JSON.stringify({ sampler, maxTokens, stop: o.stop ?? [], ignoreEos: o.ignoreEos ?? false });
}

/** @internal How a Generation reaches its engine generator (see `Sequence.generate`). */
export interface GenerationDriver {
  /** One step: feeds `feed` (the prompt on the first step, then the previous token). */
  step(feed: Uint32Array, first: boolean): Promise<RunItemResult>;
  /** Feeds the last sampled token; returns the text still held back. */
  finish(): Promise<string>;
  release(): void;
}

export class Generation implements AsyncIterableIterator<GenerationChunk> {
  /** Resolves when generation ends, with everything generated and why it stopped. */
  readonly result: Promise<GenerationResult>;
  #resolve!: (r: GenerationResult) => void;
  #reject!: (e: unknown) => void;
  #started = false;
  #done = false;
  #tokens: number[] = [];
  #text = "";
  #feed: Uint32Array;
  #reused = 0;
  #busy: Promise<unknown> = Promise.resolve();

  /** @internal */
  constructor(
    private readonly driver: GenerationDriver,
    private readonly promptTokens: number[],
    private readonly opts: GenerateOptions,
  ) {
    this.#feed = Uint32Array.from(promptTokens);
    this.result = new Promise((res, rej) => {
      this.#resolve = res;
      this.#reject = rej;
    });
    this.result.catch(() => {}); // observed through next() too
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Calls made without awaiting the previous one still run one after the other. */
  #serial<T>(f: () => Promise<T>): Promise<T> {
    const r = this.#busy.then(f, f);
    this.#busy = r.catch(() => {});
    return r;
  }

  next(): Promise<IteratorResult<GenerationChunk, GenerationResult>> {
    return this.#serial(async () => {
      if (this.#done) return { done: true as const, value: await this.result };
      try {
        return await this.#step();
      } catch (e) {
        const err = fromEngineError(e);
        this.#finishWithError(err);
        throw err;
      }
    });
  }

  async #step(): Promise<IteratorResult<GenerationChunk, GenerationResult>> {
    if (this.opts.signal?.aborted) return this.#finish("abort");
    const first = !this.#started;
    this.#started = true;
    const r = await this.driver.step(this.#feed, first);
    if (first) this.#reused = r.reused;
    const step = r.step!;
    this.#feed = Uint32Array.of(step.token);
    this.#tokens.push(step.token);
    this.#text += step.text;
    const chunk: GenerationChunk = { text: step.text, tokens: [step.token] };
    this.opts.onToken?.(chunk);
    if (step.stop) {
      const f = await this.#finish(step.stop);
      return chunk.text ? { done: false, value: chunk } : f;
    }
    return { done: false, value: chunk };
  }

  async #finish(reason: StopReason): Promise<IteratorResult<GenerationChunk, GenerationResult>> {
    if (!this.#done) {
      this.#done = true;
      // Feed the last sampled token so the sequence holds the whole generation, and flush any
      // text held back for stop strings that can no longer complete.
      let tail = "";
      try {
        tail = this.#started ? await this.driver.finish() : "";
      } finally {
        this.driver.release();
      }
      this.#text += tail;
      this.#resolve({
        text: this.#text,
        tokens: this.#tokens,
        stopReason: reason,
        promptTokens: this.#started ? this.promptTokens.length : 0,
        generatedTokens: this.#tokens.length,
        reusedTokens: this.#reused,
      });
      if (tail) {
        const chunk = { text: tail, tokens: [] as number[] };
        this.opts.onToken?.(chunk);
        return { done: false, value: chunk };
      }
    }
    return { done: true, value: await this.result };
  }

  #finishWithError(e: CoilError): void {
    if (this.#done) return;
    this.#done = true;
    try {
      this.driver.release();
    } catch {
      /* the context may be gone */
    }
    this.#reject(e);
  }

  /** Stops early, as an abort would; the sequence keeps what was generated. */
  return(): Promise<IteratorResult<GenerationChunk, GenerationResult>> {
    return this.#serial(async () => {
      if (!this.#done) await this.#finish("abort");
      return { done: true as const, value: await this.result };
    });
  }

  /** Runs the generation to its end and returns the result (chunks still reach `onToken`). */
  async complete(): Promise<GenerationResult> {
    for (;;) {
      const r = await this.next();
      if (r.done) return r.value;
    }
  }
}
