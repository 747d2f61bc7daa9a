// The public types shared by every target. The node entry, the web entry and the worker client all
// implement `CoilApi`, so user code is the same whichever target runs it.

/** Which engine runs the work. "auto": native where it loads (Node, Bun, Deno), else wasm. */
export type BackendName = "native" | "wasm";
export type BackendChoice = BackendName | "auto";

/** Where a GGUF comes from: a file path or file: URL (Node, Bun, Deno), an http(s) URL, a Blob or File,
 *  or bytes already in memory. Large inputs are read in ranges, never as one buffer. */
export type GgufSource = string | URL | Blob | ArrayBuffer | ArrayBufferView;

export interface CommonOptions {
  /** Engine to use. Default: `COIL_BACKEND` in the environment, else "auto". */
  backend?: BackendChoice;
  /** Aborts the operation; it then rejects with an error whose name is "AbortError". */
  signal?: AbortSignal;
}

export interface InspectOptions extends CommonOptions {
  /** Summarise metadata arrays longer than this many items as `{type, length, head}`.
   *  Default: full arrays. The CLI uses 16 unless `--full`. */
  arrayHead?: number;
}

/** A metadata value as JSON: numbers, strings, booleans, arrays (possibly nested), or the summary of
 *  a long array. 64-bit integers beyond 2^53 lose precision. */
export type GgufMetadataValue =
  | number
  | string
  | boolean
  | GgufMetadataValue[]
  | { type: string; length: number; head: GgufMetadataValue[] };

export interface GgufTensorInfo {
  name: string;
  /** ggml type name ("F32", "Q4_K", ...) or "UNKNOWN(id)". */
  type: string;
  type_id: number;
  /** Shape in ggml order (ne0, the contiguous dimension, first). */
  shape: number[];
  /** Offset of the data from the start of the data section. */
  offset: number;
  /** Bytes of data; null when the type is unknown. */
  bytes: number | null;
}

export interface GgufLayerInfo {
  index: number;
  kind: "ssm" | "attention" | "ssm+attention" | "conv" | "none";
  ffn: "moe" | "dense" | "none";
}

export interface GgufSummary {
  architecture: string | null;
  name: string | null;
  parameters: number;
  tensor_bytes: number;
  bits_per_weight: number | null;
  tensor_types: Record<string, number>;
  unknown_type_ids: number[];
  tokenizer: { model: string; vocab_size: number; pre: string | null } | null;
  context_length: number | null;
  embedding_length: number | null;
  block_count: number | null;
  layers: GgufLayerInfo[];
  ssm: { d_conv: number; d_inner: number; d_state: number; dt_rank: number; n_group: number } | null;
  recurrent_state_bytes_per_sequence: number | null;
  /** KV cache of the attention layers (Jamba); null for recurrent-only models. Per sequence: at
   *  `default_context_length` (the model's context capped at 4096, in whole 32-token blocks). */
  kv_cache: {
    attention_layers: number;
    bytes_per_token: { f16: number; f32: number };
    default_context_length: number;
    bytes_per_sequence: { f16: number; f32: number };
  } | null;
}

/** Everything in a GGUF header, plus a summary. Identical from both backends. */
export interface GgufInfo {
  version: number;
  file_size: number;
  alignment: number;
  data_offset: number;
  metadata: Record<string, GgufMetadataValue>;
  /** The GGUF type of each metadata value: "u32", "string", "array<string>", "array<array<u8>>", ... */
  metadata_types: Record<string, string>;
  tensors: GgufTensorInfo[];
  summary: GgufSummary;
}

export interface BackendInfo {
  backend: BackendName;
  /** Engine version. */
  version: string;
  /** SIMD the kernels can use: runtime-detected on native, compiled-in on wasm ("simd128"). */
  cpuFeatures: string[];
  /** Each kernel path (scalar, avx2, avx512, neon, simd128) checked against the scalar reference
   *  on fixed inputs: the largest relative difference seen. */
  kernels: { path: string; max_rel_diff: number }[];
  /** Threads a context uses by default: native, the physical cores; wasm, 1 plus the workers of
   *  its thread pool (threaded module, where shared memory is available), else 1. */
  threads: number;
  /** wasm on one thread: why (no SharedArrayBuffer, not cross-origin isolated, a browser main
   *  thread, or `COIL_WASM_THREADS=1`). */
  singleThreadedReason?: string;
  /** wasm: how many tasks its worker threads have run so far (0 on one thread): shows that they
   *  take part. */
  workerTasks?: number;
  /** Why native was not used, when "auto" fell back to wasm. */
  fallbackReason?: string;
}

export interface LoadProgress {
  /** What is being loaded: "header" (metadata and vocabulary); "weights" once models compute. */
  phase: "header" | "weights";
  loaded: number;
  total: number;
}

export interface LoadModelOptions extends CommonOptions {
  /** Called as the file is read. */
  onProgress?: (p: LoadProgress) => void;
  /** Load the header and vocabulary only (tokenize without the weights). Files without tensors
   *  load this way anyway. Default false. */
  vocabOnly?: boolean;
}

export interface ContextOptions {
  /** How many sequence slots the context holds, each with its own recurrent state: the sequences
   *  `context.sequence(i)` returns and `sequence.fork()` can take. Default 1. */
  sequences?: number;
  /** When recurrent states are snapshotted for rollback (`truncate`, prompt reuse). */
  checkpoints?: CheckpointOptions;
  /** Threads for evaluation. Default: native, the physical cores; wasm, every thread of its pool
   *  (see `BackendInfo.threads`; more than the pool has are not started). Results do not depend
   *  on it. */
  threads?: number;
  /** Tokens each sequence may hold in the KV cache of attention layers (Jamba). Default: the
   *  model's training context (`{arch}.context_length`), capped at 4096. A sequence that would
   *  outgrow it fails with `CONTEXT_FULL` and is left as it was. Recurrent-only models (Mamba,
   *  Mamba-2) have no KV cache and no bound. */
  contextLength?: number;
  /** Element type of the KV cache: "f16" (default; half the memory, moves logits by ~1e-2 on
   *  small models) or "f32" (exact comparisons). */
  kvType?: KvType;
}

export type KvType = "f16" | "f32";

/** What a context's memory costs, per sequence. */
export interface ContextMemory {
  /** Tokens per sequence in the KV cache (the `contextLength` in effect). */
  contextLength: number;
  kvType: KvType;
  /** Attention layers (each with a KV cache); 0 for recurrent-only models. */
  attentionLayers: number;
  /** Bytes of f32 recurrent state per sequence (whatever its length). */
  recurrentStateBytesPerSequence: number;
  /** Bytes of K and V per token, all attention layers. */
  kvBytesPerToken: number;
  /** Bytes of KV one sequence takes at the full context length (whole 32-token blocks; allocated as it grows). */
  kvBytesPerSequence: number;
}

/** The automatic checkpoint policy of a context. */
export interface CheckpointOptions {
  /** Snapshot every `interval` positions inside long evaluations (0: never). Default 256. */
  interval?: number;
  /** Snapshot at the end of every evaluation of more than one token and of every generation.
   *  Default true. */
  atEnd?: boolean;
  /** Most bytes all checkpoints of the context may hold; the least recently used are evicted.
   *  Default 128 MiB. */
  budgetBytes?: number;
}

/** What `saveState` includes besides the state and position. */
export interface SaveStateOptions {
  /** The token history (4 bytes a token): needed to roll back before the saved position and for
   *  prompt reuse after loading. Default true; false gives a size independent of the position. */
  history?: boolean;
  /** The checkpoints. Default false. */
  checkpoints?: boolean;
}

export interface EvaluateOptions {
  /** `tokens` are the whole sequence from position 0: keep the longest prefix the sequence holds
   *  or can restore from a checkpoint, evaluate the rest (see `Sequence.lastReusedTokens`). */
  reuse?: boolean;
  /** Which logits to return: the last token's (default), every token's, or none. */
  logits?: "last" | "all" | "none";
  /** Aborts between chunks of a long prompt; the sequence keeps what was evaluated. */
  signal?: AbortSignal;
}

export interface TokenizeOptions {
  /** Recognise control/special tokens written in the text, like "<|endoftext|>" or "[INST]". Default false. */
  special?: boolean;
  /** Add BOS (and EOS) as the vocabulary asks. Default: the vocabulary's own setting. */
  addBos?: boolean;
}

/** The vocabulary's special tokens and settings. */
export interface VocabInfo {
  model: "gpt2" | "llama";
  pre: string | null;
  n_vocab: number;
  bos: number | null;
  eos: number | null;
  eot: number | null;
  unk: number | null;
  pad: number | null;
  /** Every end-of-generation token. */
  eog: number[];
  add_bos: boolean;
  add_eos: boolean;
  add_space_prefix: boolean;
}

export interface TokenAttributes {
  id: number;
  piece: string;
  type: "normal" | "unknown" | "control" | "user_defined" | "unused" | "byte" | "undefined";
  control: boolean;
  eog: boolean;
}

export type StopReason = "eos" | "maxTokens" | "stop" | "abort";

export interface GenerateOptions {
  /** The prompt is the whole sequence from position 0: reuse the longest prefix the sequence
   *  holds or can restore from a checkpoint (`result.reusedTokens`). Default false: continue. */
  reuse?: boolean;
  /** Most tokens to generate. Default 256. */
  maxTokens?: number;
  /** 0 = greedy. Default 0.8. */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  typicalP?: number;
  /** Seed of the sampler: the same seed gives the same tokens, on every target. Default: random. */
  seed?: number;
  /** Repetition penalties over the last `lastN` tokens (prompt included). */
  penalties?: { lastN?: number; repeat?: number; frequency?: number; presence?: number };
  /** Added to a token's logit before sampling; -Infinity bans it. */
  logitBias?: Record<number, number>;
  /** The order of the sampler chain, e.g. ["penalties", "top_k", "top_p", "min_p", "temperature"]. */
  samplers?: string[];
  /** Stop strings: generation ends when one appears; it is never emitted. */
  stop?: string[];
  /** Keep going past end-of-generation tokens. */
  ignoreEos?: boolean;
  /** Prompt text only: recognise control tokens written in it. Default true. */
  special?: boolean;
  /** Aborts between tokens; the result then has stopReason "abort". */
  signal?: AbortSignal;
  /** Called with every chunk, as the iterator yields it. */
  onToken?: (chunk: GenerationChunk) => void;
}

export interface GenerationChunk {
  /** Text safe to show: never a broken UTF-8 character, never part of a stop string. */
  text: string;
  /** The token(s) this chunk came from. */
  tokens: number[];
}

export interface GenerationResult {
  text: string;
  tokens: number[];
  stopReason: StopReason;
  promptTokens: number;
  generatedTokens: number;
  /** Prompt tokens that were not evaluated again (with `reuse`). */
  reusedTokens: number;
}
