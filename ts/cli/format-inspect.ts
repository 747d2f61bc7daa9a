// The readable `coil inspect` summary.

import type { GgufInfo } from "../core/types.js";

function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(2)} ${units[i]}`;
}

function count(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} K`;
  return String(n);
}

/** Runs of equal layers collapsed: "0-3 ssm", "4 attention+moe". */
function layerRuns(info: GgufInfo): string[] {
  const out: string[] = [];
  const label = (l: GgufInfo["summary"]["layers"][number]) => (l.ffn === "none" ? l.kind : l.kind === "none" ? l.ffn : `${l.kind}+${l.ffn}`);
  const ls = info.summary.layers;
  for (let i = 0; i < ls.length; ) {
    let j = i;
    while (j + 1 < ls.length && label(ls[j + 1]!) === label(ls[i]!)) j++;
    out.push(`${i === j ? `${i}` : `${i}-${j}`}: ${label(ls[i]!)}`);
    i = j + 1;
  }
  return out;
}

/** Options of the readable summary: the KV accounting at another context length / type. */
export interface InspectKvOptions {
  contextLength?: number;
  kvType?: "f16" | "f32";
}

export function formatInspect(file: string, info: GgufInfo, backend: string, kv: InspectKvOptions = {}): string {
  const s = info.summary;
  const rows: [string, string][] = [
    ["file", file],
    ["gguf version", `${info.version} (alignment ${info.alignment})`],
    ["architecture", s.architecture ?? "(none)"],
    ["name", s.name ?? "(none)"],
    ["parameters", `${count(s.parameters)} (${s.parameters})`],
    ["file size", `${bytes(info.file_size)} (${info.file_size} bytes)`],
    ["bits per weight", s.bits_per_weight === null ? "-" : s.bits_per_weight.toFixed(2)],
    [
      "tensor types",
      Object.entries(s.tensor_types)
        .map(([t, n]) => `${t}×${n}`)
        .join(", ") || "(no tensors)",
    ],
    [
      "tokenizer",
      s.tokenizer ? `${s.tokenizer.model}, ${s.tokenizer.vocab_size} tokens${s.tokenizer.pre ? `, pre ${s.tokenizer.pre}` : ""}` : "(none)",
    ],
  ];
  if (s.context_length !== null) rows.push(["context length", String(s.context_length)]);
  if (s.embedding_length !== null) rows.push(["embedding length", String(s.embedding_length)]);
  if (s.block_count !== null) rows.push(["layers", String(s.block_count)]);
  if (s.ssm) {
    rows.push([
      "ssm",
      `d_inner ${s.ssm.d_inner}, d_state ${s.ssm.d_state}, d_conv ${s.ssm.d_conv}, dt_rank ${s.ssm.dt_rank}` +
        (s.ssm.n_group ? `, groups ${s.ssm.n_group}` : ""),
    ]);
  }
  if (s.recurrent_state_bytes_per_sequence !== null) {
    rows.push(["recurrent state per sequence", bytes(s.recurrent_state_bytes_per_sequence)]);
  }
  if (s.kv_cache) {
    const k = s.kv_cache;
    const type = kv.kvType ?? "f16";
    const ctx = kv.contextLength ?? k.default_context_length;
    const perTok = k.bytes_per_token[type];
    rows.push(["kv cache per token", `${bytes(perTok)} (${type}; ${k.attention_layers} attention layers; f16 ${bytes(k.bytes_per_token.f16)}, f32 ${bytes(k.bytes_per_token.f32)})`]);
    rows.push(["kv cache per sequence", `${bytes(Math.ceil(ctx / 32) * 32 * perTok)} at ${ctx} tokens (${type})`]);
  }
  if (s.unknown_type_ids.length) rows.push(["unknown types", s.unknown_type_ids.join(", ")]);
  rows.push(["inspected by", backend]);
  const w = Math.max(...rows.map(([k]) => k.length));
  let out = rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`).join("\n") + "\n";
  if (s.layers.length) {
    out += `\nlayout:\n${layerRuns(info)
      .map((r) => `  ${r}`)
      .join("\n")}\n`;
  }
  return out;
}
