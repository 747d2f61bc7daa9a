// `Context` and `Sequence`: recurrent state for several sequences of one model, the same classes on
// every target. Evaluations of one context run one at a time, in call order (the queue is where
// concurrent calls will be batched together later); each sequence's state lives in the engine.

import type { EngineContext } from "./engine.js";
import { CoilError, fromEngineError, InvalidArgumentError, throwIfAborted } from "./errors.js";
import type { ContextMemory, EvaluateOptions, GenerateOptions, KvType } from "./types.js";
import { Generation, generateParams } from "./generate.js";
import type { Model } from "./model.js";

/** Tokens per engine call: long prompts are cut here so an AbortSignal is honoured between pieces. */
const EVAL_CHUNK = 512;

function toTokenArray(tokens: ArrayLike<number>): Uint32Array {
  if (tokens instanceof Uint32Array) return tokens;
  if (tokens == null || typeof tokens.length !== "number") throw new InvalidArgumentError("tokens must be an array of token ids");
  const out = new Uint32Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const v = tokens[i]!;
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
      throw new CoilError("TOKEN_OUT_OF_RANGE", `token ${String(v)} at index ${i} is not a token id`);
    }
    out[i] = v;
  }
  return out;
}

/** One sequence's part of `Context.evaluateBatch`. */
export interface BatchItem {
  sequence: number;
  tokens: ArrayLike<number>;
  logits?: "last" | "all" | "none";
}

export class Context {
  #ec: EngineContext | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #sequences: Sequence[] = [];
  /** Floats per logits row. */
  readonly nVocab: number;

  /** The model this context runs. */
  readonly model: Model;

  /** @internal Use `model.createContext()`. */
  constructor(model: Model, ec: EngineContext, nSeq: number) {
    this.model = model;
    this.#ec = ec;
    this.nVocab = ec.nVocab();
    for (let i = 0; i < nSeq; i++) this.#sequences.push(new Sequence(this, i));
  }

  /** @internal */
  engine(): EngineContext {
    if (!this.#ec) throw new CoilError("DISPOSED", "this context has been disposed");
    return this.#ec;
  }

  /** @internal Runs `f` after every earlier evaluation of this context. */
  enqueue<T>(f: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(f, f);
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * Evaluates tokens of several sequences in one engine call (sequences may differ in length);
   * returns each item's logits as `Sequence.evaluate` would. The whole call succeeds or changes
   * nothing.
   */
  evaluateBatch(items: BatchItem[], options: { signal?: AbortSignal } = {}): Promise<Float32Array[]> {
    if (!Array.isArray(items) || items.length === 0) {
      return Promise.reject(new InvalidArgumentError("evaluateBatch needs a non-empty array of items"));
    }
    let parts: { ids: Uint32Array; seq: number; want: "last" | "all" | "none" }[];
    try {
      parts = this.#checkItems(items);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#runBatch(parts, options.signal);
  }

  #checkItems(items: BatchItem[]): { ids: Uint32Array; seq: number; want: "last" | "all" | "none" }[] {
    return items.map((it) => {
      const ids = toTokenArray(it.tokens);
      const want = it.logits ?? "last";
      if (!Number.isInteger(it.sequence) || it.sequence < 0 || it.sequence >= this.#sequences.length) {
        throw new InvalidArgumentError(`no sequence ${String(it.sequence)}: this context has ${this.#sequences.length}`);
      }
      if (want !== "last" && want !== "all" && want !== "none") throw new InvalidArgumentError(`bad logits option ${String(want)}`);
      if (ids.length === 0) throw new InvalidArgumentError("every item needs at least one token");
      return { ids, seq: it.sequence, want };
    });
  }

  #runBatch(parts: { ids: Uint32Array; seq: number; want: "last" | "all" | "none" }[], signal?: AbortSignal): Promise<Float32Array[]> {
    const n = parts.reduce((a, p) => a + p.ids.length, 0);
    const tokens = new Uint32Array(n);
    const seqs = new Uint32Array(n);
    const mask = new Uint8Array(n);
    let at = 0;
    for (const p of parts) {
      tokens.set(p.ids, at);
      seqs.fill(p.seq, at, at + p.ids.length);
      if (p.want === "all") mask.fill(1, at, at + p.ids.length);
      else if (p.want === "last") mask[at + p.ids.length - 1] = 1;
      at += p.ids.length;
    }
    return this.enqueue(async () => {
      throwIfAborted(signal);
      let logits: Float32Array;
      try {
        logits = await this.engine().evaluate(tokens, seqs, mask);
      } catch (e) {
        throw fromEngineError(e);
      }
      const V = this.nVocab;
      let row = 0;
      return parts.map((p) => {
        const rows = p.want === "all" ? p.ids.length : p.want === "last" ? 1 : 0;
        const out = logits.slice(row * V, (row + rows) * V);
        row += rows;
        return out;
      });
    });
  }

  /** How many sequences this context holds. */
  get sequenceCount(): number {
    return this.#sequences.length;
  }

  /** Sequence `i` (0-based). */
  sequence(i = 0): Sequence {
    const s = this.#sequences[i];
    if (!Number.isInteger(i) || !s) {
      throw new InvalidArgumentError(`no sequence ${String(i)}: this context has ${this.#sequences.length}`);
    }
    return s;
  }

  /** Bytes of recurrent state each sequence holds (constant, whatever its length). */
  get stateBytesPerSequence(): number {
    return this.engine().stateBytesPerSequence();
  }

  /** What the context's memory costs: recurrent state per sequence, KV per token and per
   *  sequence at the context length. */
  get memory(): ContextMemory {
    const j = JSON.parse(this.engine().memory()) as Record<string, number | string>;
    return {
      contextLength: j.context_length as number,
      kvType: j.kv_type as KvType,
      attentionLayers: j.attention_layers as number,
      recurrentStateBytesPerSequence: j.recurrent_state_bytes_per_sequence as number,
      kvBytesPerToken: j.kv_bytes_per_token as number,
      kvBytesPerSequence: j.kv_bytes_per_sequence as number,
    };
  }

  /** Tokens each sequence may hold in the KV cache (see `ContextOptions.contextLength`). */
  get contextLength(): number {
    return this.memory.contextLength;
  }

  /** The KV cache's element type. */
  get kvType(): KvType {
    return this.memory.kvType;
  }

  get disposed(): boolean {
    return this.#ec === undefined;
  }

  /** Frees the context's state now; its sequences become unusable. Waits for running evaluations. */
  async dispose(): Promise<void> {
    const ec = this.#ec;
    if (!ec) return;
    this.#ec = undefined;
    await this.#queue;
    ec.release();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

export class Sequence {
  /** @internal */
  constructor(
    /** The context this sequence belongs to. */
    readonly context: Context,
    /** The sequence's index in its context. */
    readonly id: number,
  ) {}

  /** How many tokens the sequence's state has absorbed. */
  get position(): number {
    return this.context.engine().position(this.id);
  }

  /**
   * Feeds `tokens` to the sequence, continuing from its position, and returns logits: `nVocab`
   * floats for "last" (default), `tokens.length × nVocab` for "all", an empty array for "none".
   * If `signal` aborts mid-way through a long prompt, the promise rejects with AbortError and the
   * sequence keeps the tokens evaluated so far (see `position`).
   */
  evaluate(tokens: ArrayLike<number>, options: EvaluateOptions = {}): Promise<Float32Array> {
    const ids = toTokenArray(tokens);
    const want = options.logits ?? "last";
    if (want !== "last" && want !== "all" && want !== "none") {
      return Promise.reject(new InvalidArgumentError(`logits must be "last", "all" or "none", not ${JSON.stringify(want)}`));
    }
    if (ids.length === 0) return Promise.reject(new InvalidArgumentError("evaluate needs at least one token"));
    const { signal } = options;
    return this.context.enqueue(async () => {
      throwIfAborted(signal);
      const ec = this.context.engine();
      const n = ids.length;
      const out = new Float32Array(want === "all" ? n * this.context.nVocab : want === "last" ? this.context.nVocab : 0);
      for (let start = 0; start < n; start += EVAL_CHUNK) {
        if (start > 0) throwIfAborted(signal);
        const end = Math.min(n, start + EVAL_CHUNK);
        const chunk = ids.subarray(start, end);
        const mask = new Uint8Array(chunk.length);
        if (want === "all") mask.fill(1);
        else if (want === "last" && end === n) mask[chunk.length - 1] = 1;
        let logits: Float32Array;
        try {
          logits = await ec.evaluate(chunk, new Uint32Array(chunk.length).fill(this.id), mask);
        } catch (e) {
          throw fromEngineError(e);
        }
        if (want === "all") out.set(logits, start * this.context.nVocab);
        else if (want === "last" && end === n) out.set(logits);
      }
      return out;
    });
  }

  /**
   * Generates text after `prompt` (text, tokenized with BOS as the vocabulary asks and control
   * tokens recognised, or token ids), continuing the sequence from its position. Iterate it for
   * chunks `{text, tokens}`; `.result` (or the iterator's final value) gives the whole text, the
   * tokens and the stop reason. Text never splits a UTF-8 character and never shows a stop string.
   * When generation ends — by EOS, maxTokens, a stop string or an abort — every generated token
   * has been fed to the sequence, so `position` = before + prompt + generated tokens.
   */
  generate(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): Generation {
    const tokens =
      typeof prompt === "string"
        ? this.context.model.tokenize(prompt, { special: options.special ?? true, addBos: this.position === 0 ? undefined : false })
        : Array.from(toTokenArray(prompt));
    if (tokens.length === 0) throw new InvalidArgumentError("generate needs a non-empty prompt");
    const params = generateParams(options);
    const gen = this.context.engine().createGenerator(this.id, params);
    return new Generation(gen, tokens, options, (f) => this.context.enqueue(f));
  }

  /** Forgets everything: position 0, fresh state. */
  clear(): void {
    try {
      this.context.engine().clear(this.id);
    } catch (e) {
      throw fromEngineError(e);
    }
  }
}
