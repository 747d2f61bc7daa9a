// `Context` and `Sequence`: recurrent state for several sequences of one model, the same classes on
// every target.
//
// Batching: concurrent `evaluate`/`generate` calls on different sequences of one context are run
// together. Every call becomes an item in the context's queue; the queue drains one macrotask after
// the last engine call returned (so every generation whose step just finished has queued its next
// one) and sends all queued items of distinct sequences to the engine as one batch, which steps
// them in one pass. Calls on one sequence run in call order (each sequence has its own chain).
//
// Sequence slots: `createContext({ sequences: n })` gives n slots. `context.sequence(i)` returns
// the sequence in slot i (claiming it); `sequence.fork()` takes the lowest unclaimed slot and fails
// with CONTEXT_FULL when there is none; `sequence.dispose()` clears its slot and gives it back.

import type { EngineContext, RunItemResult } from "./engine.js";
import { KIND_EVAL_ALL, KIND_EVAL_LAST, KIND_EVAL_NONE, KIND_REUSE, KIND_STEP } from "./engine.js";
import { CoilError, fromEngineError, InvalidArgumentError, throwIfAborted } from "./errors.js";
import type { CheckpointOptions, ContextMemory, EvaluateOptions, GenerateOptions, KvType, SaveStateOptions } from "./types.js";
import { Generation, generateParams } from "./generate.js";
import type { Model } from "./model.js";

/** Tokens per engine call: long prompts are cut here so an AbortSignal is honoured between pieces. */
const EVAL_CHUNK = 512;
/** Most tokens one batched engine call gathers from queued calls. */
const BATCH_TOKENS = 2048;

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

/** Resolves after the current macrotask (so queued continuations run first). */
const nextTurn: () => Promise<void> = (() => {
  if (typeof setImmediate === "function") return () => new Promise<void>((r) => setImmediate(r));
  const browserLike = typeof document !== "undefined" || typeof (globalThis as { WorkerGlobalScope?: unknown }).WorkerGlobalScope !== "undefined";
  if (browserLike && typeof MessageChannel === "function") {
    // setTimeout(0) is clamped to 4 ms when nested; a message is not.
    let ch: MessageChannel | undefined;
    const waiting: (() => void)[] = [];
    return () =>
      new Promise<void>((r) => {
        if (!ch) {
          ch = new MessageChannel();
          ch.port1.onmessage = () => waiting.shift()?.();
        }
        waiting.push(r);
        ch.port2.postMessage(0);
      });
  }
  return () => new Promise<void>((r) => setTimeout(r, 0));
})();

/** One sequence's part of `Context.evaluateBatch`. */
export interface BatchItem {
  sequence: number;
  tokens: ArrayLike<number>;
  logits?: "last" | "all" | "none";
}

/** @internal A queued engine item. */
interface Item {
  seq: number;
  tokens: Uint32Array;
  kind: number;
  gen: number;
  signal?: AbortSignal;
  resolve: (r: { logits: Float32Array; result: RunItemResult }) => void;
  reject: (e: unknown) => void;
}

type Job = { item: Item } | { run: () => Promise<unknown>; resolve: (v: unknown) => void; reject: (e: unknown) => void };

function rowsOf(kind: number, fed: number): number {
  const k = kind & 3;
  return k === KIND_EVAL_ALL ? fed : k === KIND_EVAL_LAST ? 1 : 0;
}

export class Context {
  #ec: EngineContext | undefined;
  #jobs: Job[] = [];
  #draining: Promise<void> | undefined;
  #slots: (Sequence | undefined)[];
  /** Floats per logits row. */
  readonly nVocab: number;
  /** How many engine calls batched more than one sequence, and the largest batch (for tests). */
  readonly batchStats = { calls: 0, batched: 0, maxSequences: 0 };

  /** The model this context runs. */
  readonly model: Model;

  /** @internal Use `model.createContext()`. */
  constructor(model: Model, ec: EngineContext, nSeq: number, checkpoints?: CheckpointOptions) {
    this.model = model;
    this.#ec = ec;
    this.nVocab = ec.nVocab();
    this.#slots = new Array<Sequence | undefined>(nSeq).fill(undefined);
    if (checkpoints) this.setCheckpointPolicy(checkpoints);
  }

  /** @internal */
  engine(): EngineContext {
    if (!this.#ec) throw new CoilError("DISPOSED", "this context has been disposed");
    return this.#ec;
  }

  /** @internal Calls the engine, turning its errors into CoilErrors. */
  call<T>(f: (ec: EngineContext) => T): T {
    const ec = this.engine();
    try {
      return f(ec);
    } catch (e) {
      throw fromEngineError(e);
    }
  }

  /** @internal Runs `f` alone, in queue order with the batched items. */
  enqueue<T>(f: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#jobs.push({ run: f, resolve: resolve as (v: unknown) => void, reject });
      this.#kick();
    });
  }

  /** @internal Queues one engine item; items of different sequences are batched together. */
  submit(seq: number, tokens: Uint32Array, kind: number, gen = 0, signal?: AbortSignal): Promise<{ logits: Float32Array; result: RunItemResult }> {
    return new Promise((resolve, reject) => {
      this.#jobs.push({ item: { seq, tokens, kind, gen, signal, resolve, reject } });
      this.#kick();
    });
  }

  #kick(): void {
    if (this.#draining) return;
    this.#draining = (async () => {
      try {
        while (this.#jobs.length) {
          // Let the continuations of the last call (the next steps of other generations) queue.
          await nextTurn();
          const first = this.#jobs.shift()!;
          if ("run" in first) {
            try {
              first.resolve(await first.run());
            } catch (e) {
              first.reject(e);
            }
            continue;
          }
          const batch = [first.item];
          let tokens = first.item.tokens.length;
          const seen = new Set([first.item.seq]);
          for (let i = 0; i < this.#jobs.length; ) {
            const j = this.#jobs[i]!;
            if (!("item" in j)) break; // keep order around exclusive jobs
            if (seen.has(j.item.seq)) {
              i++;
              continue; // a later call on the same sequence waits for the next batch
            }
            if (tokens + j.item.tokens.length > BATCH_TOKENS) break;
            seen.add(j.item.seq);
            tokens += j.item.tokens.length;
            batch.push(j.item);
            this.#jobs.splice(i, 1);
          }
          await this.#runItems(batch);
        }
      } finally {
        this.#draining = undefined;
      }
    })();
  }

  async #runItems(items: Item[]): Promise<void> {
    const live: Item[] = [];
    for (const it of items) {
      if (it.signal?.aborted) {
        try {
          throwIfAborted(it.signal);
        } catch (e) {
          it.reject(e);
        }
      } else live.push(it);
    }
    if (!live.length) return;
    const n = live.reduce((a, it) => a + it.tokens.length, 0);
    const tokens = new Uint32Array(n);
    const seqs = new Uint32Array(live.length);
    const kinds = new Uint8Array(live.length);
    const gens = new Uint32Array(live.length);
    const lens = new Uint32Array(live.length);
    let at = 0;
    live.forEach((it, i) => {
      tokens.set(it.tokens, at);
      at += it.tokens.length;
      seqs[i] = it.seq;
      kinds[i] = it.kind;
      gens[i] = it.gen;
      lens[i] = it.tokens.length;
    });
    let out: { logits: Float32Array; results: RunItemResult[] };
    try {
      this.batchStats.calls++;
      if (live.length > 1) this.batchStats.batched++;
      this.batchStats.maxSequences = Math.max(this.batchStats.maxSequences, live.length);
      out = await this.engine().run(seqs, kinds, gens, lens, tokens);
    } catch (e) {
      const err = fromEngineError(e);
      // A batch fails as a whole before changing anything (except INTERNAL): one caller's bad
      // request must not fail the others, so run each alone.
      if (live.length > 1 && err.code !== "INTERNAL" && err.code !== "DISPOSED") {
        for (const it of live) await this.#runItems([it]);
      } else for (const it of live) it.reject(err);
      return;
    }
    const V = this.nVocab;
    let row = 0;
    live.forEach((it, i) => {
      const result = out.results[i]!;
      const fed = it.tokens.length - ((it.kind & KIND_REUSE) !== 0 ? result.reused : 0);
      const rows = (it.kind & 3) === KIND_STEP ? 0 : rowsOf(it.kind, fed);
      const logits = out.logits.subarray(row * V, (row + rows) * V);
      row += rows;
      if (result.error) it.reject(fromEngineError(new Error(result.error)));
      // Each caller gets logits of its own: the engine's fresh array itself when it holds only this
      // item's rows (one generated token: no copy on the per-token path), else a copy of its rows.
      else it.resolve({ logits: live.length === 1 && logits.length === out.logits.length ? logits : logits.slice(), result });
    });
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
      parts = items.map((it) => {
        const ids = toTokenArray(it.tokens);
        const want = it.logits ?? "last";
        if (!Number.isInteger(it.sequence) || it.sequence < 0 || it.sequence >= this.#slots.length) {
          throw new InvalidArgumentError(`no sequence ${String(it.sequence)}: this context has ${this.#slots.length}`);
        }
        if (want !== "last" && want !== "all" && want !== "none") throw new InvalidArgumentError(`bad logits option ${String(want)}`);
        if (ids.length === 0) throw new InvalidArgumentError("every item needs at least one token");
        return { ids, seq: it.sequence, want };
      });
    } catch (e) {
      return Promise.reject(e);
    }
    const kinds = { none: KIND_EVAL_NONE, last: KIND_EVAL_LAST, all: KIND_EVAL_ALL };
    return this.enqueue(async () => {
      throwIfAborted(options.signal);
      const n = parts.reduce((a, p) => a + p.ids.length, 0);
      const tokens = new Uint32Array(n);
      let at = 0;
      for (const p of parts) {
        tokens.set(p.ids, at);
        at += p.ids.length;
      }
      let out;
      try {
        out = await this.engine().run(
          Uint32Array.from(parts, (p) => p.seq),
          Uint8Array.from(parts, (p) => kinds[p.want]),
          new Uint32Array(parts.length),
          Uint32Array.from(parts, (p) => p.ids.length),
          tokens,
        );
      } catch (e) {
        throw fromEngineError(e);
      }
      const V = this.nVocab;
      let row = 0;
      return parts.map((p) => {
        const rows = rowsOf(kinds[p.want], p.ids.length);
        const o = out.logits.slice(row * V, (row + rows) * V);
        row += rows;
        return o;
      });
    });
  }

  /** How many sequence slots this context holds. */
  get sequenceCount(): number {
    return this.#slots.length;
  }

  /** The sequence in slot `i` (0-based). */
  sequence(i = 0): Sequence {
    if (!Number.isInteger(i) || i < 0 || i >= this.#slots.length) {
      throw new InvalidArgumentError(`no sequence ${String(i)}: this context has ${this.#slots.length}`);
    }
    return (this.#slots[i] ??= new Sequence(this, i));
  }

  /** @internal The lowest free slot, claimed for a new sequence. */
  claimFreeSlot(): Sequence {
    const i = this.#slots.findIndex((s) => s === undefined);
    if (i < 0) {
      throw new CoilError(
        "CONTEXT_FULL",
        `no free sequence slot: all ${this.#slots.length} are in use (create the context with more \`sequences\`, or dispose() one)`,
      );
    }
    return this.sequence(i);
  }

  /** @internal */
  releaseSlot(seq: Sequence): void {
    if (this.#slots[seq.id] === seq) this.#slots[seq.id] = undefined;
  }

  /** Bytes of recurrent state each sequence holds (constant, whatever its length). */
  get stateBytesPerSequence(): number {
    return this.call((ec) => ec.stateBytesPerSequence());
  }

  /** Bytes all checkpoints hold now (checkpoints shared between forks counted once). */
  get checkpointBytes(): number {
    return this.call((ec) => ec.checkpointBytes());
  }

  /** When checkpoints are taken automatically and how much memory they may use. */
  setCheckpointPolicy(p: CheckpointOptions): void {
    const interval = p.interval ?? 256;
    const budget = p.budgetBytes ?? 128 * 2 ** 20;
    if (!Number.isInteger(interval) || interval < 0 || interval > 0xffffffff) throw new InvalidArgumentError("checkpoints.interval must be a non-negative integer");
    if (typeof budget !== "number" || !(budget >= 0)) throw new InvalidArgumentError("checkpoints.budgetBytes must be a non-negative number");
    this.call((ec) => ec.setCheckpointPolicy(interval, p.atEnd ?? true, budget));
  }

  /** Saves every sequence (see docs/state-format.md). */
  saveState(options: SaveStateOptions = {}): Uint8Array {
    return this.call((ec) => ec.saveContext(options.history ?? true, options.checkpoints ?? false));
  }

  /** Restores every sequence from `saveState()` bytes; on any error nothing changes. */
  loadState(bytes: Uint8Array): void {
    if (!(bytes instanceof Uint8Array)) throw new InvalidArgumentError("loadState takes a Uint8Array");
    this.call((ec) => ec.loadContext(bytes));
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
    await this.enqueue(async () => {}).catch(() => {});
    this.#ec = undefined;
    await this.#draining;
    ec.release();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

export class Sequence {
  #chain: Promise<unknown> = Promise.resolve();
  #disposed = false;
  /** Prompt tokens the last `evaluate`/`generate` with `reuse` did not evaluate again. */
  lastReusedTokens = 0;

  /** @internal */
  constructor(
    /** The context this sequence belongs to. */
    readonly context: Context,
    /** The sequence's slot in its context. */
    readonly id: number,
  ) {}

  /** Calls queued or running on this sequence (evaluate, generation steps, truncate). */
  #pending = 0;

  #check(): void {
    if (this.#disposed) throw new CoilError("DISPOSED", "this sequence has been disposed");
  }

  /** The synchronous operations act at once, so they refuse to run while an evaluation of this
   *  sequence is queued or running (it would see, or leave, a state in between). */
  #checkIdle(op: string): void {
    this.#check();
    if (this.#pending > 0) {
      throw new CoilError(
        "SEQUENCE_BUSY",
        `sequence ${this.id} has ${this.#pending} evaluation(s) in flight: await them (or abort them) before ${op}()`,
      );
    }
  }

  /** @internal Runs `f` after every earlier call on this sequence. */
  serial<T>(f: () => Promise<T>): Promise<T> {
    this.#pending++;
    const run = this.#chain.then(f, f);
    const settled = () => {
      this.#pending--;
    };
    run.then(settled, settled);
    this.#chain = run.catch(() => {});
    return run;
  }

  /** How many tokens the sequence's state has absorbed. */
  get position(): number {
    this.#check();
    return this.context.call((ec) => ec.position(this.id));
  }

  /** The tokens the sequence has absorbed (its history; `length === position`). Tokens of a
   *  state loaded without history read as 0xFFFFFFFF. */
  get tokens(): Uint32Array {
    this.#check();
    return this.context.call((ec) => ec.history(this.id));
  }

  /** Positions of the sequence's checkpoints. */
  get checkpoints(): number[] {
    this.#check();
    return Array.from(this.context.call((ec) => ec.checkpoints(this.id)));
  }

  /**
   * Feeds `tokens` to the sequence, continuing from its position, and returns logits: `nVocab`
   * floats for "last" (default), `tokens.length × nVocab` for "all", an empty array for "none".
   * With `reuse`, `tokens` are the whole sequence from position 0: the longest prefix the sequence
   * holds or can restore from a checkpoint is kept (`lastReusedTokens` says how long) and only the
   * rest is evaluated ("all" then returns the rows of the evaluated tokens).
   * If `signal` aborts mid-way through a long prompt, the promise rejects with AbortError and the
   * sequence keeps the tokens evaluated so far (see `position`).
   */
  evaluate(tokens: ArrayLike<number>, options: EvaluateOptions = {}): Promise<Float32Array> {
    let ids: Uint32Array;
    try {
      this.#check();
      ids = toTokenArray(tokens);
    } catch (e) {
      return Promise.reject(e);
    }
    const want = options.logits ?? "last";
    if (want !== "last" && want !== "all" && want !== "none") {
      return Promise.reject(new InvalidArgumentError(`logits must be "last", "all" or "none", not ${JSON.stringify(want)}`));
    }
    if (ids.length === 0) return Promise.reject(new InvalidArgumentError("evaluate needs at least one token"));
    const { signal } = options;
    return this.serial(async () => {
      throwIfAborted(signal);
      if (options.reuse) {
        const reused = this.context.call((ec) => ec.rewind(this.id, ids));
        this.lastReusedTokens = reused;
        ids = ids.subarray(reused);
      }
      const V = this.context.nVocab;
      const n = ids.length;
      if (n <= EVAL_CHUNK) {
        // One engine call (every generated token): its logits are ours already, no copy.
        const kind = want === "all" ? KIND_EVAL_ALL : want === "last" ? KIND_EVAL_LAST : KIND_EVAL_NONE;
        return (await this.context.submit(this.id, ids, kind, 0, signal)).logits;
      }
      const out = new Float32Array(want === "all" ? n * V : want === "last" ? V : 0);
      for (let start = 0; start < n; start += EVAL_CHUNK) {
        if (start > 0) throwIfAborted(signal);
        const end = Math.min(n, start + EVAL_CHUNK);
        const kind = want === "all" ? KIND_EVAL_ALL : want === "last" && end === n ? KIND_EVAL_LAST : KIND_EVAL_NONE;
        const { logits } = await this.context.submit(this.id, ids.subarray(start, end), kind, 0, signal);
        if (want === "all") out.set(logits, start * V);
        else if (kind === KIND_EVAL_LAST) out.set(logits);
      }
      return out;
    });
  }

  /**
   * Generates text after `prompt` (text, tokenized with BOS as the vocabulary asks and control
   * tokens recognised, or token ids), continuing the sequence from its position — or, with
   * `reuse`, treating the prompt as the whole sequence from position 0 and reusing the longest
   * prefix it holds (`result.reusedTokens`). Iterate it for chunks `{text, tokens}`; `.result`
   * (or the iterator's final value) gives the whole text, the tokens and the stop reason. Text
   * never splits a UTF-8 character and never shows a stop string. When generation ends — by EOS,
   * maxTokens, a stop string or an abort — every generated token has been fed to the sequence,
   * so `position` = before + prompt + generated tokens. Generations on different sequences of one
   * context run batched together.
   */
  generate(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): Generation {
    this.#check();
    const reuse = options.reuse ?? false;
    const tokens =
      typeof prompt === "string"
        ? this.context.model.tokenize(prompt, { special: options.special ?? true, addBos: reuse || this.position === 0 ? undefined : false })
        : Array.from(toTokenArray(prompt));
    if (tokens.length === 0) throw new InvalidArgumentError("generate needs a non-empty prompt");
    const params = generateParams(options);
    const id = this.context.call((ec) => ec.createGenerator(this.id, params));
    const ctx = this.context;
    return new Generation(
      {
        step: (feed, first) =>
          this.serial(async () => {
            const r = await ctx.submit(this.id, feed, KIND_STEP | (first && reuse ? KIND_REUSE : 0), id);
            if (first && reuse) this.lastReusedTokens = r.result.reused;
            return r.result;
          }),
        finish: () => this.serial(() => ctx.enqueue(() => ctx.engine().endGenerator(id))),
        release: () => {
          if (!ctx.disposed) ctx.engine().releaseGenerator(id);
        },
      },
      tokens,
      options,
    );
  }

  /** Forgets everything: position 0, fresh state, no checkpoints. The slot stays this sequence's. */
  clear(): void {
    this.#checkIdle("clear");
    this.context.call((ec) => ec.clear(this.id));
  }

  /**
   * A new sequence in a free slot of the context, holding what this one holds — state, position,
   * token history and checkpoints — shared copy-on-write: nothing is copied until one of the two
   * advances. Throws CONTEXT_FULL when every slot is in use.
   */
  fork(): Sequence {
    this.#checkIdle("fork");
    const dst = this.context.claimFreeSlot();
    try {
      this.context.call((ec) => ec.fork(this.id, dst.id));
    } catch (e) {
      this.context.releaseSlot(dst);
      throw e;
    }
    return dst;
  }

  /**
   * Rolls the sequence back to its first `n` tokens (any `n` ≤ position): restores the nearest
   * checkpoint at or before `n` and re-evaluates the few tokens after it.
   */
  truncate(n: number): Promise<void> {
    try {
      this.#check();
      if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new InvalidArgumentError(`truncate takes a token count, got ${String(n)}`);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.serial(() =>
      this.context.enqueue(async () => {
        try {
          await this.context.engine().truncate(this.id, n);
        } catch (e) {
          throw fromEngineError(e);
        }
      }),
    );
  }

  /** Snapshots the state at the current position (kept under the context's checkpoint budget);
   *  returns the position. */
  checkpoint(): number {
    this.#checkIdle("checkpoint");
    return this.context.call((ec) => ec.checkpoint(this.id));
  }

  /** The sequence's state as bytes (docs/state-format.md): position, token history (unless
   *  `history: false`), recurrent state, and with `checkpoints: true` its checkpoints. */
  saveState(options: SaveStateOptions = {}): Uint8Array {
    this.#checkIdle("saveState");
    return this.context.call((ec) => ec.saveState(this.id, options.history ?? true, options.checkpoints ?? false));
  }

  /** Replaces this sequence with a saved one (from any sequence, context or target of the same
   *  model). STATE_MODEL_MISMATCH for another model, STATE_INVALID for truncated or corrupt bytes;
   *  on any error the sequence is left exactly as it was. */
  loadState(bytes: Uint8Array): void {
    this.#checkIdle("loadState");
    if (!(bytes instanceof Uint8Array)) throw new InvalidArgumentError("loadState takes a Uint8Array");
    this.context.call((ec) => ec.loadState(this.id, bytes));
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** Clears the sequence and gives its slot back to the context (for `fork()`); later calls on
   *  this object fail with DISPOSED. */
  dispose(): void {
    if (this.#disposed) return;
    if (!this.context.disposed) this.context.call((ec) => ec.clear(this.id));
    this.#disposed = true;
    this.context.releaseSlot(this);
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
