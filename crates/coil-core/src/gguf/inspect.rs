//! A complete, deterministic JSON description of a GGUF header: what both JS bindings return.
//!
//! Shape: `{"version","file_size","alignment","data_offset","metadata":{..},"metadata_types":{..},
//! "tensors":[..],"summary":{..}}`. Metadata and tensors keep file order. Floats print as the
//! shortest decimal that round-trips their own precision; NaN and infinities print as the strings
//! "NaN", "Infinity" and "-Infinity". Integers print exactly (JS may round those above 2^53).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use super::file::GgufFile;
use super::value::{GgufArray, GgufValue};
use crate::error::json_string;

/// Options for [`inspect_json`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InspectOptions {
    /// `None`: arrays in full. `Some(n)`: an array longer than `n` becomes
    /// `{"type":"array<string>","length":N,"head":[its first n elements]}` (at every nesting level).
    pub array_head: Option<usize>,
}

/// A `block_count` above this is not expanded into a layer list.
const MAX_LAYERS_LISTED: u64 = 1 << 16;

fn f32_json(v: f32) -> String {
    if v.is_nan() {
        "\"NaN\"".into()
    } else if v.is_infinite() {
        if v > 0.0 { "\"Infinity\"" } else { "\"-Infinity\"" }.into()
    } else {
        // Debug prints the shortest digits that round-trip the f32, with an exponent for very
        // large or small magnitudes ("1e-5", "3.4028235e38"): valid JSON either way.
        format!("{v:?}")
    }
}

fn f64_json(v: f64) -> String {
    if v.is_nan() {
        "\"NaN\"".into()
    } else if v.is_infinite() {
        if v > 0.0 { "\"Infinity\"" } else { "\"-Infinity\"" }.into()
    } else {
        format!("{v:?}")
    }
}

fn opt_u64(v: Option<u64>) -> String {
    v.map_or_else(|| "null".to_string(), |x| x.to_string())
}

fn opt_str(v: Option<&str>) -> String {
    v.map_or_else(|| "null".to_string(), json_string)
}

fn write_value(out: &mut String, v: &GgufValue, opts: &InspectOptions) {
    match v {
        GgufValue::U8(x) => write!(out, "{x}"),
        GgufValue::I8(x) => write!(out, "{x}"),
        GgufValue::U16(x) => write!(out, "{x}"),
        GgufValue::I16(x) => write!(out, "{x}"),
        GgufValue::U32(x) => write!(out, "{x}"),
        GgufValue::I32(x) => write!(out, "{x}"),
        GgufValue::U64(x) => write!(out, "{x}"),
        GgufValue::I64(x) => write!(out, "{x}"),
        GgufValue::F32(x) => write!(out, "{}", f32_json(*x)),
        GgufValue::F64(x) => write!(out, "{}", f64_json(*x)),
        GgufValue::Bool(x) => write!(out, "{x}"),
        GgufValue::String(s) => write!(out, "{}", json_string(s)),
        GgufValue::Array(a) => {
            write_array(out, a, opts);
            Ok(())
        }
    }
    .ok();
}

fn write_array(out: &mut String, a: &GgufArray, opts: &InspectOptions) {
    let n = a.len();
    let shown = match opts.array_head {
        Some(h) if n > h => {
            write!(out, "{{\"type\":{},\"length\":{n},\"head\":", json_string(&a.type_name())).ok();
            h
        }
        _ => n,
    };
    out.push('[');
    macro_rules! items {
        ($v:expr, $f:expr) => {{
            for (i, x) in $v.iter().take(shown).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                #[allow(clippy::redundant_closure_call)]
                ($f)(&mut *out, x);
            }
        }};
    }
    let num = |out: &mut String, x: &dyn std::fmt::Display| {
        write!(out, "{x}").ok();
    };
    match a {
        GgufArray::U8(v) => items!(v, |o: &mut String, x: &u8| num(o, x)),
        GgufArray::I8(v) => items!(v, |o: &mut String, x: &i8| num(o, x)),
        GgufArray::U16(v) => items!(v, |o: &mut String, x: &u16| num(o, x)),
        GgufArray::I16(v) => items!(v, |o: &mut String, x: &i16| num(o, x)),
        GgufArray::U32(v) => items!(v, |o: &mut String, x: &u32| num(o, x)),
        GgufArray::I32(v) => items!(v, |o: &mut String, x: &i32| num(o, x)),
        GgufArray::U64(v) => items!(v, |o: &mut String, x: &u64| num(o, x)),
        GgufArray::I64(v) => items!(v, |o: &mut String, x: &i64| num(o, x)),
        GgufArray::Bool(v) => items!(v, |o: &mut String, x: &bool| num(o, x)),
        GgufArray::F32(v) => items!(v, |o: &mut String, x: &f32| o.push_str(&f32_json(*x))),
        GgufArray::F64(v) => items!(v, |o: &mut String, x: &f64| o.push_str(&f64_json(*x))),
        GgufArray::String(v) => items!(v, |o: &mut String, x: &String| o.push_str(&json_string(x))),
        GgufArray::Array(v) => items!(v, |o: &mut String, x: &GgufArray| write_array(o, x, opts)),
    }
    out.push(']');
    if shown < n {
        out.push('}');
    }
}

/// One layer of a recurrent or hybrid model, as the summary lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSummary {
    pub index: u64,
    /// "ssm" or "attention".
    pub kind: &'static str,
    /// "moe", "dense" or "none".
    pub ffn: &'static str,
}

/// The layer layout of a file of an architecture coil runs (empty for others, or when the
/// hyperparameters do not read), from the same [`HParams`](crate::model::HParams) the engine uses.
///
/// `kind`: "ssm" (a Mamba layer), "attention", "ssm+attention" (Falcon-H1: both side by side),
/// "conv" (LFM2's short conv) or "none" (Nemotron-H's FFN-only layers). `ffn`: "moe" when
/// `blk.{i}.ffn_gate_inp.weight` exists, "dense" when the layer has a dense FFN, else "none".
pub fn layer_layout(file: &GgufFile) -> Vec<LayerSummary> {
    let Ok(hp) = crate::model::HParams::from_gguf(file) else { return Vec::new() };
    if hp.n_layer as u64 > MAX_LAYERS_LISTED {
        return Vec::new();
    }
    let names: HashSet<&str> = file.tensors.iter().map(|t| t.name.as_str()).collect();
    (0..hp.n_layer)
        .map(|i| {
            let has = |s: &str| names.contains(format!("blk.{i}.{s}").as_str());
            let (rec, attn) = (hp.is_recurrent(i), hp.is_attention(i));
            let kind = match (rec, attn) {
                (true, true) => "ssm+attention",
                (true, false) if hp.recurrence() == crate::model::hparams::Recurrence::ShortConv => "conv",
                (true, false) => "ssm",
                (false, true) => "attention",
                (false, false) => "none",
            };
            let ffn = if has("ffn_gate_inp.weight") {
                "moe"
            } else if has("ffn_gate.weight") || has("ffn_up.weight") || has("ffn_down.weight") {
                "dense"
            } else {
                "none"
            };
            LayerSummary { index: i as u64, kind, ffn }
        })
        .collect()
}

/// Bytes of F32 recurrent state per sequence (every recurrent layer's conv and SSM state), as the
/// engine allocates it. `None` for architectures coil does not run or unreadable hyperparameters.
pub fn recurrent_state_bytes_per_sequence(file: &GgufFile) -> Option<u64> {
    let hp = crate::model::HParams::from_gguf(file).ok()?;
    Some(hp.state_bytes_per_sequence())
}

/// KV cache accounting: `(attention layers, K+V values per token)`. `None` without attention
/// layers or for architectures coil does not run.
pub fn kv_values_per_token(file: &GgufFile) -> Option<(u64, u64)> {
    let hp = crate::model::HParams::from_gguf(file).ok()?;
    let dims = hp.kv_dims();
    if dims.is_empty() {
        return None;
    }
    Some((dims.len() as u64, dims.iter().map(|&d| 2 * d as u64).sum()))
}

/// The JSON description of `file` (see the module docs for the shape).
pub fn inspect_json(file: &GgufFile, opts: &InspectOptions) -> String {
    let mut o = String::with_capacity(4096);
    write!(
        o,
        "{{\"version\":{},\"file_size\":{},\"alignment\":{},\"data_offset\":{},\"metadata\":{{",
        file.version, file.file_size, file.alignment, file.data_offset
    )
    .ok();
    for (i, (k, v)) in file.metadata.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        o.push_str(&json_string(k));
        o.push(':');
        write_value(&mut o, v, opts);
    }
    o.push_str("},\"metadata_types\":{");
    for (i, (k, v)) in file.metadata.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        write!(o, "{}:{}", json_string(k), json_string(&v.type_name())).ok();
    }
    o.push_str("},\"tensors\":[");
    for (i, t) in file.tensors.iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        let shape: Vec<String> = t.dims.iter().map(|d| d.to_string()).collect();
        write!(
            o,
            "{{\"name\":{},\"type\":{},\"type_id\":{},\"shape\":[{}],\"offset\":{},\"bytes\":{}}}",
            json_string(&t.name),
            json_string(&t.type_name()),
            t.type_id,
            shape.join(","),
            t.offset,
            opt_u64(t.size)
        )
        .ok();
    }
    o.push_str("],\"summary\":");
    write_summary(&mut o, file);
    o.push('}');
    o
}

fn write_summary(o: &mut String, file: &GgufFile) {
    let mut parameters: u64 = 0;
    let mut tensor_bytes: u64 = 0;
    let mut known_elements: u64 = 0;
    let mut types: BTreeMap<u32, (String, u64)> = BTreeMap::new();
    let mut unknown: Vec<u32> = Vec::new();
    for t in &file.tensors {
        let n = t.n_elements();
        parameters = parameters.saturating_add(n);
        if let Some(s) = t.size {
            tensor_bytes = tensor_bytes.saturating_add(s);
            known_elements = known_elements.saturating_add(n);
        } else if !unknown.contains(&t.type_id) {
            unknown.push(t.type_id);
        }
        types.entry(t.type_id).or_insert_with(|| (t.type_name(), 0)).1 += 1;
    }
    unknown.sort_unstable();
    let bpw = if known_elements > 0 {
        let x = tensor_bytes as f64 * 8.0 / known_elements as f64;
        f64_json((x * 10000.0).round() / 10000.0)
    } else {
        "null".into()
    };
    let arch = file.architecture();
    write!(
        o,
        "{{\"architecture\":{},\"name\":{},\"parameters\":{parameters},\"tensor_bytes\":{tensor_bytes},\"bits_per_weight\":{bpw},\"tensor_types\":{{",
        opt_str(arch),
        opt_str(file.get_str("general.name")),
    )
    .ok();
    for (i, (name, count)) in types.values().enumerate() {
        if i > 0 {
            o.push(',');
        }
        write!(o, "{}:{count}", json_string(name)).ok();
    }
    let unknown: Vec<String> = unknown.iter().map(|x| x.to_string()).collect();
    write!(o, "}},\"unknown_type_ids\":[{}],\"tokenizer\":", unknown.join(",")).ok();
    match file.get_str("tokenizer.ggml.model") {
        Some(model) => {
            let vocab = file.get_array("tokenizer.ggml.tokens").map(|a| a.len() as u64);
            write!(
                o,
                "{{\"model\":{},\"vocab_size\":{},\"pre\":{}}}",
                json_string(model),
                opt_u64(vocab),
                opt_str(file.get_str("tokenizer.ggml.pre"))
            )
            .ok();
        }
        None => o.push_str("null"),
    }
    let arch_u64 = |k: &str| file.arch_get(k).and_then(GgufValue::as_u64);
    write!(
        o,
        ",\"context_length\":{},\"embedding_length\":{},\"block_count\":{},\"layers\":[",
        opt_u64(arch_u64("context_length")),
        opt_u64(arch_u64("embedding_length")),
        opt_u64(arch_u64("block_count"))
    )
    .ok();
    for (i, l) in layer_layout(file).iter().enumerate() {
        if i > 0 {
            o.push(',');
        }
        write!(o, "{{\"index\":{},\"kind\":\"{}\",\"ffn\":\"{}\"}}", l.index, l.kind, l.ffn).ok();
    }
    o.push_str("],\"ssm\":");
    let ssm_keys = [
        ("d_conv", "ssm.conv_kernel"),
        ("d_inner", "ssm.inner_size"),
        ("d_state", "ssm.state_size"),
        ("dt_rank", "ssm.time_step_rank"),
        ("n_group", "ssm.group_count"),
    ];
    if ssm_keys.iter().any(|(_, k)| file.arch_get(k).is_some()) {
        o.push('{');
        for (i, (name, key)) in ssm_keys.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            write!(o, "\"{name}\":{}", opt_u64(arch_u64(key))).ok();
        }
        o.push('}');
    } else {
        o.push_str("null");
    }
    write!(o, ",\"recurrent_state_bytes_per_sequence\":{}", opt_u64(recurrent_state_bytes_per_sequence(file))).ok();
    // KV cache: bytes per token in f16 and f32, and per sequence at the default context length
    // (the model's, capped at 4096; whole 32-token blocks), as a context would allocate it.
    match kv_values_per_token(file) {
        Some((n_attn, values)) => {
            let ctx = match arch_u64("context_length") {
                Some(0) | None => 4096,
                Some(c) => c.min(4096),
            };
            let cells = ctx.div_ceil(32) * 32;
            write!(
                o,
                ",\"kv_cache\":{{\"attention_layers\":{n_attn},\"bytes_per_token\":{{\"f16\":{},\"f32\":{}}},\"default_context_length\":{ctx},\"bytes_per_sequence\":{{\"f16\":{},\"f32\":{}}}}}}}",
                values * 2,
                values * 4,
                values * 2 * cells,
                values * 4 * cells
            )
            .ok();
        }
        None => o.push_str(",\"kv_cache\":null}"),
    }
}
