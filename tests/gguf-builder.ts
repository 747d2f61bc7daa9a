// A tiny GGUF writer written independently of the Rust one, for building valid and deliberately
// broken files in tests.

type Kv = { key: string; type: number; value: Uint8Array };

export class GgufBuilder {
  version = 3;
  magic = "GGUF";
  alignment = 32;
  private kvs: Kv[] = [];
  private tensors: { name: string; dims: bigint[]; type: number; offset?: bigint; data: Uint8Array }[] = [];

  kvU32(key: string, v: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    this.kvs.push({ key, type: 4, value: b });
    return this;
  }
  kvString(key: string, v: string): this {
    this.kvs.push({ key, type: 8, value: str(v) });
    return this;
  }
  /** An array of strings (GGUF type 9 of element type 8). */
  kvStrings(key: string, values: string[]): this {
    this.kvs.push({ key, type: 9, value: concat([u32(8), u64(BigInt(values.length)), ...values.map(str)]) });
    return this;
  }
  /** An array of i32 (GGUF type 9 of element type 5). */
  kvI32s(key: string, values: number[]): this {
    const b = new Uint8Array(4 * values.length);
    values.forEach((v, i) => new DataView(b.buffer).setInt32(4 * i, v, true));
    this.kvs.push({ key, type: 9, value: concat([u32(5), u64(BigInt(values.length)), b]) });
    return this;
  }
  kvRaw(key: string, type: number, value: Uint8Array): this {
    this.kvs.push({ key, type, value });
    return this;
  }
  tensor(name: string, dims: number[], type: number, data: Uint8Array, offset?: number): this {
    this.tensors.push({
      name,
      dims: dims.map(BigInt),
      type,
      data,
      offset: offset === undefined ? undefined : BigInt(offset),
    });
    return this;
  }

  build(): Uint8Array {
    const parts: Uint8Array[] = [];
    parts.push(new TextEncoder().encode(this.magic));
    parts.push(u32(this.version));
    parts.push(u64(BigInt(this.tensors.length)));
    parts.push(u64(BigInt(this.kvs.length)));
    for (const kv of this.kvs) parts.push(str(kv.key), u32(kv.type), kv.value);
    let off = 0n;
    const offsets: bigint[] = [];
    for (const t of this.tensors) {
      const o = t.offset ?? off;
      offsets.push(o);
      off = align(o + BigInt(t.data.length), BigInt(this.alignment));
      parts.push(str(t.name), u32(t.dims.length), ...t.dims.map(u64), u32(t.type), u64(o));
    }
    let header = concat(parts);
    header = concat([header, new Uint8Array(Number(align(BigInt(header.length), BigInt(this.alignment))) - header.length)]);
    const dataEnd = this.tensors.reduce((m, t, i) => Math.max(m, Number(offsets[i]!) + t.data.length), 0);
    const data = new Uint8Array(dataEnd);
    this.tensors.forEach((t, i) => data.set(t.data, Number(offsets[i]!)));
    return concat([header, data]);
  }
}

export function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  return b;
}
export function u64(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}
export function str(s: string | Uint8Array): Uint8Array {
  const bytes = typeof s === "string" ? new TextEncoder().encode(s) : s;
  return concat([u64(BigInt(bytes.length)), bytes]);
}
export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
function align(x: bigint, a: bigint): bigint {
  return ((x + a - 1n) / a) * a;
}
