// Chat on one sequence: messages are rendered with the GGUF's `tokenizer.chat_template` (Jinja,
// through @huggingface/jinja) or, without one, a known fallback format (Mistral's [INST] when the
// vocabulary has those control tokens, else a plain "User:/Assistant:" layout). Each turn feeds
// the sequence only what extends the tokens it has already seen (token-level prompt reuse, with
// rollback through checkpoints when the conversation was edited), so history is never re-processed.

import { Template } from "@huggingface/jinja";
import type { Sequence } from "./context.js";
import { InvalidArgumentError } from "./errors.js";
import type { Generation } from "./generate.js";
import type { Model } from "./model.js";
import type { GenerateOptions } from "./types.js";

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
}

/** Renders messages as the model expects them; `addGenerationPrompt` opens the assistant's turn. */
export function renderChat(model: Model, messages: ChatMessage[], addGenerationPrompt = true): string {
  const tpl = model.metadata["tokenizer.chat_template"];
  let bos = "";
  let eos = "";
  try {
    const v = model.vocab;
    bos = v.bos !== null ? model.tokenAttributes(v.bos).piece : "";
    eos = v.eos !== null ? model.tokenAttributes(v.eos).piece : "";
  } catch {
    /* no vocabulary: ids only */
  }
  if (typeof tpl === "string" && tpl.trim()) {
    return new Template(tpl).render({ messages, bos_token: bos, eos_token: eos, add_generation_prompt: addGenerationPrompt });
  }
  const hasInst = (() => {
    try {
      const ids = model.tokenize("[INST]", { special: true, addBos: false });
      return ids.length === 1 && model.tokenAttributes(ids[0]!).control;
    } catch {
      return false;
    }
  })();
  if (hasInst) {
    // Mistral's format (Mamba-Codestral): [INST] user [/INST] answer</s>; a system message is
    // prepended to the first user message.
    let out = bos;
    let system = "";
    for (const m of messages) {
      if (m.role === "system") system = m.content + "\n\n";
      else if (m.role === "user") {
        out += `[INST] ${system}${m.content} [/INST]`;
        system = "";
      } else out += ` ${m.content}${eos}`;
    }
    return out;
  }
  let out = "";
  for (const m of messages) {
    const who = m.role === "system" ? "System" : m.role === "user" ? "User" : "Assistant";
    out += `${who}: ${m.content.replace(/^ /, "")}\n`;
  }
  // No space after "Assistant:": the reply's first token carries its own leading space, so the
  // reply, rendered back into the conversation, reads exactly as the tokens the model produced.
  return addGenerationPrompt ? `${out}Assistant:` : out;
}

export interface ChatOptions {
  system?: string;
}

export class ChatSession {
  readonly messages: ChatMessage[] = [];
  /** The rendered conversation the sequence has absorbed, and its tokens. */
  #seenTokens: number[] = [];
  /** Prompt tokens of the last turn, and how many of them were not evaluated again. */
  lastPromptTokens = 0;
  lastReusedTokens = 0;

  constructor(
    readonly sequence: Sequence,
    options: ChatOptions = {},
  ) {
    if (options.system) this.messages.push({ role: "system", content: options.system });
  }

  /** The rendered conversation as tokens: the tokens the sequence absorbed for as long as their
   *  text agrees with `rendered` (so the prefix is the sequence's own — generated tokens are not
   *  always what re-tokenizing their text gives), then the rest of `rendered` tokenized. */
  #promptTokens(rendered: string): number[] {
    const model = this.sequence.context.model;
    let bos: number | null = null;
    let bosPiece = "";
    try {
      bos = model.vocab.bos;
      bosPiece = bos !== null ? model.tokenAttributes(bos).piece : "";
    } catch {
      /* ids only */
    }
    const seen = this.#seenTokens;
    if (!seen.length) {
      // A template that writes the BOS text itself gets no second one.
      return model.tokenize(rendered, { special: true, addBos: bosPiece && rendered.startsWith(bosPiece) ? false : undefined });
    }
    const pieces = model.tokenPieces(seen, { special: true });
    let k = 0;
    let at = 0;
    // A BOS the tokenizer added is not in the rendered text.
    if (seen[0] === bos && !rendered.startsWith(pieces[0]!)) k = 1;
    for (; k < seen.length; k++) {
      const p = pieces[k]!;
      if (!rendered.startsWith(p, at)) break;
      at += p.length;
    }
    return [...seen.slice(0, k), ...model.tokenize(rendered.slice(at), { special: true, addBos: false })];
  }

  /** Adds the user's message and generates the assistant's reply (stream it, or await `.result`).
   *
   *  The whole rendered conversation is handed to the sequence as one prompt with token-level
   *  reuse (`generate(…, { reuse: true })`): the sequence keeps the longest prefix it holds — or
   *  can restore from a checkpoint — and evaluates only the rest. The prompt starts with the
   *  tokens the sequence absorbed as far as their text agrees with the new rendering, so a
   *  multi-turn chat never re-processes its history; when earlier messages were edited or
   *  removed, the sequence rolls back to where the conversation diverges. */
  send(content: string, options: GenerateOptions = {}): Generation {
    if (typeof content !== "string") throw new InvalidArgumentError("send takes a string");
    const model = this.sequence.context.model;
    this.messages.push({ role: "user", content });
    const rendered = renderChat(model, this.messages, true);
    const prompt = this.#promptTokens(rendered);
    this.lastPromptTokens = prompt.length;
    const gen = this.sequence.generate(prompt, { ...options, reuse: true });
    void gen.result.then(
      (r) => {
        this.lastReusedTokens = r.reusedTokens;
        this.#seenTokens = Array.from(this.sequence.tokens);
        this.messages.push({ role: "assistant", content: r.text });
      },
      () => {
        this.#seenTokens = [];
      },
    );
    return gen;
  }
}
