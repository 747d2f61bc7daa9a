// Perplexity of a text, by llama.cpp's method (tools/perplexity): the text is tokenized once (with
// BOS if the vocabulary adds one), cut into consecutive windows of `ctx` tokens — a tail shorter than
// a window is dropped — and each window is evaluated from a fresh state; when the vocabulary adds BOS
// the window's first token is replaced by BOS. Only the second half of each window is scored: the
// logits at positions ctx/2 … ctx−2 predict tokens ctx/2+1 … ctx−1, so every scored token has at
// least ctx/2 tokens of context. Figures are therefore comparable with llama-perplexity's.

import { InvalidArgumentError, throwIfAborted } from "./errors.js";
import type { Model } from "./model.js";

export interface PerplexityOptions {
  /** Tokens per window (default 512, at least 4). */
  ctx?: number;
  /** Threads for the evaluation context (default: all physical cores on native). */
  threads?: number;
  /** Stop early; the promise rejects with AbortError. */
  signal?: AbortSignal;
  /** Called after each window with the windows done so far and the running perplexity. */
  onProgress?: (p: { window: number; windows: number; perplexity: number }) => void;
}

export interface PerplexityResult {
  /** exp(mean negative log-likelihood) over the scored tokens. */
  perplexity: number;
  /** Tokens scored (windows × (ctx/2 − 1) for even ctx). */
  tokens: number;
  windows: number;
  ctx: number;
  /** Tokens the text had (the tail beyond the last full window is not evaluated). */
  textTokens: number;
}

/** Negative log-likelihood of `target` under one row of logits, in f64. */
function nll(row: Float32Array, target: number): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - max);
  return Math.log(sum) + max - row[target]!;
}

export async function perplexity(model: Model, text: string | ArrayLike<number>, options: PerplexityOptions = {}): Promise<PerplexityResult> {
  const ctx = options.ctx ?? 512;
  if (!Number.isInteger(ctx) || ctx < 4 || ctx > 1 << 20) {
    throw new InvalidArgumentError(`ctx must be an integer from 4 to ${1 << 20}, got ${String(ctx)}`);
  }
  const { signal } = options;
  throwIfAborted(signal);
  const vocab = model.vocab;
  const tokens = typeof text === "string" ? model.tokenize(text) : Array.from(text);
  const windows = Math.floor(tokens.length / ctx);
  if (windows < 1) {
    throw new InvalidArgumentError(
      `the text has ${tokens.length} tokens: at least one window of ctx = ${ctx} is needed (use a smaller --ctx or a longer text)`,
    );
  }
  const bos = vocab.add_bos && vocab.bos !== null ? vocab.bos : null;
  const first = Math.floor(ctx / 2);
  await using context = model.createContext({ threads: options.threads });
  const V = context.nVocab;
  const seq = context.sequence(0);
  let total = 0;
  let count = 0;
  for (let w = 0; w < windows; w++) {
    throwIfAborted(signal);
    const win = tokens.slice(w * ctx, (w + 1) * ctx);
    if (bos !== null) win[0] = bos;
    seq.clear();
    await seq.evaluate(win.slice(0, first), { logits: "none", signal });
    const logits = await seq.evaluate(win.slice(first), { logits: "all", signal });
    for (let j = first; j < ctx - 1; j++) {
      const r = j - first;
      total += nll(logits.subarray(r * V, (r + 1) * V), win[j + 1]!);
      count++;
    }
    options.onProgress?.({ window: w + 1, windows, perplexity: Math.exp(total / count) });
  }
  return { perplexity: Math.exp(total / count), tokens: count, windows, ctx, textTokens: tokens.length };
}
