//! HF tensor names to GGUF tensors: name mapping, shape checks against the configuration, the
//! per-tensor transforms and the output type, as llama.cpp's converter does them
//! (`gguf-py/gguf/tensor_mapping.py`, `conversion/mamba.py`, `conversion/jamba.py`,
//! `conversion/base.py` `prepare_tensors`).
//!
//! Transforms (all but `A` only change the shape, never the element order):
//! * `A_log` -> `ssm_a = -exp(A_log)`; Mamba-2's `[H]` becomes `{1, H}` (torch `(H, 1)`).
//! * `conv1d.weight` `[C, 1, K]` -> `{K, C}` (llama.cpp's `squeeze()`).
//! * Mamba-2 `D` `[H]` -> `{1, H}`; `norm.weight` `[E]` -> `{E/G, G}`; `dt_bias` -> `ssm_dt.bias`.
//! * Jamba: per-expert `{gate,up,down}_proj` stacked on a new outer dimension into
//!   `ffn_{gate,up,down}_exps.weight` (`{D, F, X}` / `{F, D, X}`); the single expert of a non-MoE
//!   layer (`experts.0.`) becomes the dense `ffn_{gate,up,down}`; transformers 5's fused
//!   `experts.gate_up_proj` `[X, 2F, D]` is split back into gate (first half) and up.
//! * Mamba-1: `output.weight` is omitted when it equals `token_embd.weight` byte for byte.

use std::collections::{BTreeMap, HashMap};

use super::config::{Arch, Hparams};
use super::safetensors::{Checkpoint, StDtype, StTensor};
use crate::error::{CoilError, ErrorCode, Result};

/// A contiguous run of elements of one source tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Index into `Checkpoint::tensors`.
    pub tensor: usize,
    /// First element (in the source tensor's flat order).
    pub first: u64,
    pub count: u64,
}

/// An elementwise transform applied after reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    None,
    /// `A = -exp(A_log)`.
    NegExp,
}

/// One tensor of the output file.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    pub name: String,
    /// ggml order (`dims[0]` contiguous).
    pub dims: Vec<u64>,
    /// Where the elements come from, in output order.
    pub pieces: Vec<Piece>,
    pub transform: Transform,
    /// The type the output type rules force (`Some(F32)`), or `None` for "the chosen outtype".
    pub forced_f32: bool,
}

impl PlannedTensor {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// The conversion plan: every output tensor, in file order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tensors: Vec<PlannedTensor>,
    /// Rows of the token embedding (the vocabulary size the file must have).
    pub n_vocab: u64,
    /// Whether an `output.weight` equal to the embedding was left out.
    pub tied_output_omitted: bool,
    pub warnings: Vec<String>,
}

/// Largest vocabulary accepted (the tokenizer's limit).
const MAX_VOCAB: u64 = 1 << 24;

fn shape_err(ck: &Checkpoint, t: &StTensor, msg: impl std::fmt::Display) -> CoilError {
    CoilError::new(
        ErrorCode::BadTensorShape,
        format!("{}: tensor \"{}\" has shape {:?}: {msg}", ck.path_of(t).display(), t.name, t.shape),
    )
}

fn unmapped(ck: &Checkpoint, t: &StTensor, why: &str) -> CoilError {
    CoilError::new(
        ErrorCode::InvalidArgument,
        format!("{}: cannot map tensor \"{}\" to GGUF: {why}", ck.path_of(t).display(), t.name),
    )
}

/// Which GGUF tensor a source tensor becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A whole tensor: the GGUF name.
    Whole(String),
    /// Jamba: expert `x` of `ffn_{kind}_exps` on layer `bid`.
    Expert { bid: u64, kind: &'static str, x: u64 },
    /// transformers 5 fused experts: `gate_up` (kind "gate_up") or `down`.
    Fused { bid: u64, kind: &'static str },
}

/// Names that llama.cpp's converter drops.
fn ignored(name: &str) -> bool {
    name.ends_with(".attention.masked_bias")
        || name.ends_with(".attention.bias")
        || name.ends_with(".rotary_emb.inv_freq")
}

/// Splits `backbone.layers.12.rest` / `model.layers.12.rest` into (12, "rest").
fn split_layer(name: &str) -> Option<(u64, &str)> {
    let rest = name.strip_prefix("backbone.layers.").or_else(|| name.strip_prefix("model.layers."))?;
    let dot = rest.find('.')?;
    let bid: u64 = rest[..dot].parse().ok()?;
    if rest[..dot].starts_with('+') {
        return None;
    }
    Some((bid, &rest[dot + 1..]))
}

/// Strips `.weight` / `.bias`, returning (base, suffix).
fn split_suffix(rest: &str) -> (&str, &str) {
    if let Some(b) = rest.strip_suffix(".weight") {
        (b, ".weight")
    } else if let Some(b) = rest.strip_suffix(".bias") {
        (b, ".bias")
    } else {
        (rest, "")
    }
}

/// The GGUF target of `name` (after llama.cpp's per-arch renames), or `None` if it maps to nothing.
fn map_name(arch: Arch, name: &str, hp: &Hparams) -> Option<Target> {
    // Globals.
    let (base, suffix) = split_suffix(name);
    let global = match base {
        "backbone.embeddings" | "backbone.embedding" | "model.embedding" if arch != Arch::Jamba => Some("token_embd"),
        "model.embed_tokens" if arch == Arch::Jamba => Some("token_embd"),
        "backbone.norm_f" | "model.norm_f" if arch != Arch::Jamba => Some("output_norm"),
        "model.final_layernorm" if arch == Arch::Jamba => Some("output_norm"),
        "lm_head" => Some("output"),
        _ => None,
    };
    if let Some(g) = global {
        return (suffix == ".weight").then(|| Target::Whole(format!("{g}.weight")));
    }
    let (bid, rest) = split_layer(name)?;
    match arch {
        Arch::Mamba | Arch::Mamba2 => {
            let (base, suffix) = split_suffix(rest);
            let base = base.strip_prefix("mixer.").map(|b| (b, true)).unwrap_or((base, false));
            let t = match base {
                ("norm", false) => "attn_norm",
                ("in_proj", _) => "ssm_in",
                ("conv1d", _) => "ssm_conv1d",
                ("x_proj", _) if arch == Arch::Mamba => "ssm_x",
                ("dt_proj", _) => "ssm_dt",
                ("out_proj", _) => "ssm_out",
                ("norm", true) if arch == Arch::Mamba2 => "ssm_norm",
                ("A_log", _) if suffix.is_empty() => return Some(Target::Whole(format!("blk.{bid}.ssm_a"))),
                ("D", _) if suffix.is_empty() => return Some(Target::Whole(format!("blk.{bid}.ssm_d"))),
                _ => return None,
            };
            if suffix.is_empty() {
                return None;
            }
            Some(Target::Whole(format!("blk.{bid}.{t}{suffix}")))
        }
        Arch::Jamba => {
            let jp = hp.jamba.as_ref()?;
            // The lone expert of a dense layer becomes the dense FFN.
            let mut rest = rest.to_string();
            if !jp.is_moe(bid) {
                rest = rest.replace("feed_forward.experts.0.", "feed_forward.");
            }
            if let Some(e) = rest.strip_prefix("feed_forward.experts.") {
                if e == "gate_up_proj" || e == "gate_up_proj.weight" {
                    return Some(Target::Fused { bid, kind: "gate_up" });
                }
                if e == "down_proj" || e == "down_proj.weight" {
                    return Some(Target::Fused { bid, kind: "down" });
                }
                let dot = e.find('.')?;
                let x: u64 = e[..dot].parse().ok()?;
                let kind = match &e[dot + 1..] {
                    "gate_proj.weight" => "gate",
                    "up_proj.weight" => "up",
                    "down_proj.weight" => "down",
                    _ => return None,
                };
                return Some(Target::Expert { bid, kind, x });
            }
            let (base, suffix) = split_suffix(&rest);
            let t = match base {
                "input_layernorm" => "attn_norm",
                "pre_ff_layernorm" | "pre_moe_layernorm" => "ffn_norm",
                "mamba.in_proj" => "ssm_in",
                "mamba.conv1d" => "ssm_conv1d",
                "mamba.x_proj" => "ssm_x",
                "mamba.dt_proj" => "ssm_dt",
                "mamba.out_proj" => "ssm_out",
                "mamba.dt_layernorm" => "ssm_dt_norm",
                "mamba.b_layernorm" | "mamba.B_layernorm" => "ssm_b_norm",
                "mamba.c_layernorm" | "mamba.C_layernorm" => "ssm_c_norm",
                "mamba.A_log" if suffix.is_empty() => return Some(Target::Whole(format!("blk.{bid}.ssm_a"))),
                "mamba.D" if suffix.is_empty() => return Some(Target::Whole(format!("blk.{bid}.ssm_d"))),
                "self_attn.q_proj" => "attn_q",
                "self_attn.k_proj" => "attn_k",
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "feed_forward.router" | "feed_forward.gate" => "ffn_gate_inp",
                "feed_forward.gate_proj" => "ffn_gate",
                "feed_forward.up_proj" => "ffn_up",
                "feed_forward.down_proj" => "ffn_down",
                _ => return None,
            };
            if suffix.is_empty() {
                return None;
            }
            Some(Target::Whole(format!("blk.{bid}.{t}{suffix}")))
        }
    }
}

/// The per-layer GGUF tensors each architecture has, in the order the file lists them:
/// (name suffix, required).
fn layer_layout(arch: Arch, attention: bool, moe: bool) -> Vec<(&'static str, bool)> {
    match arch {
        Arch::Mamba => vec![
            ("attn_norm.weight", true),
            ("ssm_in.weight", true),
            ("ssm_conv1d.weight", true),
            ("ssm_conv1d.bias", true),
            ("ssm_x.weight", true),
            ("ssm_dt.weight", true),
            ("ssm_dt.bias", true),
            ("ssm_a", true),
            ("ssm_d", true),
            ("ssm_out.weight", true),
        ],
        Arch::Mamba2 => vec![
            ("attn_norm.weight", true),
            ("ssm_in.weight", true),
            ("ssm_conv1d.weight", true),
            ("ssm_conv1d.bias", true),
            ("ssm_dt.bias", true),
            ("ssm_a", true),
            ("ssm_d", true),
            ("ssm_norm.weight", true),
            ("ssm_out.weight", true),
        ],
        Arch::Jamba => {
            let mut v = vec![("attn_norm.weight", true)];
            if attention {
                v.extend([
                    ("attn_q.weight", true),
                    ("attn_q.bias", false),
                    ("attn_k.weight", true),
                    ("attn_k.bias", false),
                    ("attn_v.weight", true),
                    ("attn_v.bias", false),
                    ("attn_output.weight", true),
                ]);
            } else {
                v.extend([
                    ("ssm_in.weight", true),
                    ("ssm_conv1d.weight", true),
                    ("ssm_conv1d.bias", true),
                    ("ssm_x.weight", true),
                    ("ssm_dt_norm.weight", false),
                    ("ssm_b_norm.weight", false),
                    ("ssm_c_norm.weight", false),
                    ("ssm_dt.weight", true),
                    ("ssm_dt.bias", true),
                    ("ssm_a", true),
                    ("ssm_d", true),
                    ("ssm_out.weight", true),
                ]);
            }
            v.push(("ffn_norm.weight", true));
            if moe {
                v.extend([
                    ("ffn_gate_inp.weight", true),
                    ("ffn_gate_exps.weight", true),
                    ("ffn_up_exps.weight", true),
                    ("ffn_down_exps.weight", true),
                ]);
            } else {
                v.extend([("ffn_gate.weight", true), ("ffn_up.weight", true), ("ffn_down.weight", true)]);
            }
            v
        }
    }
}

/// The PyTorch shape each tensor must have (a conv weight may also come without its middle 1).
fn expected_shape(arch: Arch, hp: &Hparams, local: &str, n_vocab: u64) -> Option<Vec<u64>> {
    let (d, e, n, k, r) = (hp.d_model, hp.d_inner, hp.d_state, hp.d_conv, hp.dt_rank);
    let (g, h) = (hp.n_group, hp.n_head);
    // Saturating: absurd configurations give shapes no tensor has, never an overflow.
    let m = |a: u64, b: u64| a.saturating_mul(b);
    let conv_dim = e.saturating_add(m(2, m(g, n)));
    Some(match (arch, local) {
        (_, "token_embd.weight") | (_, "output.weight") => vec![n_vocab, d],
        (_, "output_norm.weight") | (_, "attn_norm.weight") | (_, "ffn_norm.weight") => vec![d],
        (Arch::Mamba2, "ssm_in.weight") => vec![conv_dim.saturating_add(e).saturating_add(h), d],
        (Arch::Mamba2, "ssm_conv1d.weight") => vec![conv_dim, 1, k],
        (Arch::Mamba2, "ssm_conv1d.bias") => vec![conv_dim],
        (Arch::Mamba2, "ssm_dt.bias") | (Arch::Mamba2, "ssm_a") | (Arch::Mamba2, "ssm_d") => vec![h],
        (Arch::Mamba2, "ssm_norm.weight") => vec![e],
        (_, "ssm_in.weight") => vec![m(2, e), d],
        (_, "ssm_conv1d.weight") => vec![e, 1, k],
        (_, "ssm_conv1d.bias") | (_, "ssm_dt.bias") | (_, "ssm_d") => vec![e],
        (_, "ssm_x.weight") => vec![r.saturating_add(m(2, n)), e],
        (_, "ssm_dt.weight") => vec![e, r],
        (_, "ssm_a") => vec![e, n],
        (_, "ssm_out.weight") => vec![d, e],
        (_, "ssm_dt_norm.weight") => vec![r],
        (_, "ssm_b_norm.weight") | (_, "ssm_c_norm.weight") => vec![n],
        (Arch::Jamba, _) => {
            let jp = hp.jamba.as_ref()?;
            let hd = d / jp.n_head.max(1);
            let (f, x) = (jp.n_ff, jp.n_expert);
            match local {
                "attn_q.weight" => vec![m(jp.n_head, hd), d],
                "attn_k.weight" | "attn_v.weight" => vec![m(jp.n_kv_head, hd), d],
                "attn_q.bias" => vec![m(jp.n_head, hd)],
                "attn_k.bias" | "attn_v.bias" => vec![m(jp.n_kv_head, hd)],
                "attn_output.weight" => vec![d, m(jp.n_head, hd)],
                "ffn_gate_inp.weight" => vec![x, d],
                "ffn_gate.weight" | "ffn_up.weight" => vec![f, d],
                "ffn_down.weight" => vec![d, f],
                "ffn_gate_exps.weight" | "ffn_up_exps.weight" => vec![x, f, d],
                "ffn_down_exps.weight" => vec![x, d, f],
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// Where the elements of one GGUF tensor come from, before shape checks.
#[derive(Debug, Default)]
struct Gathered {
    whole: HashMap<String, usize>,
    /// (bid, kind) -> expert index -> tensor index.
    experts: BTreeMap<(u64, &'static str), BTreeMap<u64, usize>>,
    fused: BTreeMap<(u64, &'static str), usize>,
}

fn is_float(d: StDtype) -> bool {
    matches!(d, StDtype::F32 | StDtype::F16 | StDtype::BF16)
}

/// Builds the plan: maps every source tensor, checks shapes against `hp`, and orders the output.
pub fn plan(ck: &Checkpoint, arch: Arch, hp: &Hparams) -> Result<Plan> {
    let mut warnings = Vec::new();
    let mut g = Gathered::default();
    for (i, t) in ck.tensors.iter().enumerate() {
        if ignored(&t.name) {
            continue;
        }
        // Mamba-Codestral's names (`model.backbone.*`, `model.lm_head`) and Mamba-2's `dt_bias`.
        let mut name = t.name.clone();
        if arch == Arch::Mamba2 {
            if name.starts_with("model.backbone") || name.starts_with("model.lm_head") {
                name = name["model.".len()..].to_string();
            }
            if let Some(b) = name.strip_suffix(".dt_bias") {
                name = format!("{b}.dt_proj.bias");
            }
        }
        if arch == Arch::Jamba {
            // Mini-Jamba.
            name = name.replace(".moe.", ".feed_forward.");
        }
        let target = map_name(arch, &name, hp).ok_or_else(|| {
            unmapped(ck, t, &format!("no {} tensor has this name (llama.cpp's converter refuses it too)", arch.name()))
        })?;
        if !is_float(t.dtype) {
            return Err(CoilError::new(
                ErrorCode::UnsupportedType,
                format!(
                    "{}: tensor \"{}\" is {}; only F32, F16 and BF16 tensors can be converted",
                    ck.path_of(t).display(),
                    t.name,
                    t.dtype
                ),
            ));
        }
        if let Some(bid) = target_bid(&target) {
            if bid >= hp.n_layer {
                return Err(unmapped(ck, t, &format!("layer {bid} is beyond the {} layers of the config", hp.n_layer)));
            }
        }
        match target {
            Target::Whole(n) => {
                if let Some(&j) = g.whole.get(&n) {
                    return Err(unmapped(ck, t, &format!("\"{}\" already becomes {n}", ck.tensors[j].name)));
                }
                g.whole.insert(n, i);
            }
            Target::Expert { bid, kind, x } => {
                if x >= hp.jamba.as_ref().map(|j| j.n_expert).unwrap_or(0) {
                    return Err(unmapped(ck, t, "expert index beyond num_experts"));
                }
                g.experts.entry((bid, kind)).or_default().insert(x, i);
            }
            Target::Fused { bid, kind } => {
                g.fused.insert((bid, kind), i);
            }
        }
    }

    // The vocabulary size comes from the embedding.
    let embd_i = *g.whole.get("token_embd.weight").ok_or_else(|| {
        CoilError::new(
            ErrorCode::MissingTensor,
            "the checkpoint has no token embedding (token_embd.weight)".to_string(),
        )
    })?;
    let embd = &ck.tensors[embd_i];
    if embd.shape.len() != 2 || embd.shape[1] != hp.d_model || embd.shape[0] == 0 {
        return Err(shape_err(ck, embd, format!("expected [n_vocab, {}]", hp.d_model)));
    }
    let n_vocab = embd.shape[0];
    if n_vocab > MAX_VOCAB {
        return Err(shape_err(ck, embd, format!("more than {MAX_VOCAB} vocabulary rows")));
    }
    if let Some(v) = hp.vocab_size {
        let padded = hp.pad_vocab_multiple.map(|m| super::config::pad_vocab(v, m)).unwrap_or(v);
        if n_vocab != v && n_vocab != padded {
            return Err(shape_err(
                ck,
                embd,
                format!("the config's vocab_size {v} (padded: {padded}) contradicts the {n_vocab} embedding rows"),
            ));
        }
        if n_vocab != padded {
            warnings.push(format!(
                "llama.cpp's converter pads the vocabulary to {padded} tokens but the embedding has {n_vocab} rows; the file has {n_vocab} tokens"
            ));
        }
    }

    let mut out = Vec::new();
    let mut used = vec![false; ck.tensors.len()];
    let cx = Cx { ck, arch, hp, g: &g, n_vocab };
    cx.take("token_embd.weight", "token_embd.weight", true, &mut used, &mut out)?;
    for bid in 0..hp.n_layer {
        let (attention, moe) = match &hp.jamba {
            Some(jp) => (jp.is_attention(bid), jp.is_moe(bid)),
            None => (false, false),
        };
        for (local, required) in layer_layout(arch, attention, moe) {
            let gname = format!("blk.{bid}.{local}");
            if local.ends_with("_exps.weight") {
                continue;
            }
            cx.take(&gname, local, required, &mut used, &mut out)?;
        }
        if moe {
            for kind in ["gate", "up", "down"] {
                let gname = format!("blk.{bid}.ffn_{kind}_exps.weight");
                let local = format!("ffn_{kind}_exps.weight");
                let t = cx.experts(bid, kind, &gname, &local, &mut used)?;
                out.push(t);
            }
        }
    }
    cx.take("output_norm.weight", "output_norm.weight", true, &mut used, &mut out)?;

    // Output: omitted for Mamba-1 when it equals the embedding (llama.cpp's `torch.equal`).
    let mut tied_output_omitted = false;
    if let Some(&oi) = g.whole.get("output.weight") {
        let o = &ck.tensors[oi];
        let equal =
            arch == Arch::Mamba && o.dtype == embd.dtype && o.shape == embd.shape && ck.data(o) == ck.data(embd);
        if arch == Arch::Mamba {
            ck.release(o, 0, o.len);
            ck.release(embd, 0, embd.len);
        }
        if equal {
            used[oi] = true;
            tied_output_omitted = true;
        } else {
            cx.take("output.weight", "output.weight", false, &mut used, &mut out)?;
        }
    }

    // Anything left over mapped to a name this layout has no place for (a tensor on the wrong kind
    // of layer, an unsupported bias, a stray expert).
    for (gname, &i) in &g.whole {
        if !used[i] {
            return Err(unmapped(
                ck,
                &ck.tensors[i],
                &format!("it would become {gname}, which a {} model with this config does not have", arch.name()),
            ));
        }
    }
    for (&(bid, kind), m) in &g.experts {
        if let Some((_, &i)) = m.iter().find(|(_, &i)| !used[i]) {
            return Err(unmapped(
                ck,
                &ck.tensors[i],
                &format!("layer {bid} is not a MoE layer in the config, but has {kind} experts"),
            ));
        }
    }
    for (&(bid, _), &i) in &g.fused {
        if !used[i] {
            return Err(unmapped(ck, &ck.tensors[i], &format!("layer {bid} is not a MoE layer in the config")));
        }
    }

    Ok(Plan { tensors: out, n_vocab, tied_output_omitted, warnings })
}

fn target_bid(t: &Target) -> Option<u64> {
    match t {
        Target::Whole(n) => n.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|b| b.parse().ok()),
        Target::Expert { bid, .. } | Target::Fused { bid, .. } => Some(*bid),
    }
}

struct Cx<'a> {
    ck: &'a Checkpoint,
    arch: Arch,
    hp: &'a Hparams,
    g: &'a Gathered,
    n_vocab: u64,
}

impl Cx<'_> {
    /// Plans the whole-tensor GGUF tensor `gname` (`local`: its name without `blk.N.`).
    fn take(
        &self,
        gname: &str,
        local: &str,
        required: bool,
        used: &mut [bool],
        out: &mut Vec<PlannedTensor>,
    ) -> Result<()> {
        let (ck, arch, hp) = (self.ck, self.arch, self.hp);
        let Some(&i) = self.g.whole.get(gname) else {
            if required {
                return Err(CoilError::new(
                    ErrorCode::MissingTensor,
                    format!("the checkpoint has no tensor for {gname} (required for {})", arch.name()),
                ));
            }
            return Ok(());
        };
        used[i] = true;
        let t = &ck.tensors[i];
        let want = expected_shape(arch, hp, local, self.n_vocab)
            .ok_or_else(|| unmapped(ck, t, &format!("{gname} has no place in a {} model", arch.name())))?;
        let mut shape = t.shape.clone();
        // conv1d: [C, 1, K] -> [C, K] (also accepted without the 1).
        if local == "ssm_conv1d.weight" {
            if shape.len() == 2 {
                shape.insert(1, 1);
            }
            if shape != want {
                return Err(shape_err(ck, t, format!("expected {want:?} for {gname}")));
            }
            shape.remove(1);
        } else if shape != want {
            return Err(shape_err(ck, t, format!("expected {want:?} for {gname}")));
        }
        let mut transform = Transform::None;
        if arch == Arch::Mamba2 {
            match local {
                "ssm_a" | "ssm_d" => shape = vec![hp.n_head, 1],
                "ssm_norm.weight" => shape = vec![hp.n_group, hp.d_inner / hp.n_group],
                _ => {}
            }
        }
        if local == "ssm_a" {
            transform = Transform::NegExp;
        }
        let dims: Vec<u64> = shape.iter().rev().copied().collect();
        out.push(PlannedTensor {
            name: gname.to_string(),
            forced_f32: forced_f32(gname, dims.len()),
            dims,
            pieces: vec![Piece { tensor: i, first: 0, count: t.n_elements() }],
            transform,
        });
        Ok(())
    }

    /// The merged expert tensor `ffn_{kind}_exps` of layer `bid`.
    fn experts(
        &self,
        bid: u64,
        kind: &'static str,
        gname: &str,
        local: &str,
        used: &mut [bool],
    ) -> Result<PlannedTensor> {
        let (ck, arch, hp, g, n_vocab) = (self.ck, self.arch, self.hp, self.g, self.n_vocab);
        let want = expected_shape(arch, hp, local, n_vocab).filter(|w| w.len() == 3).ok_or_else(|| {
            CoilError::new(ErrorCode::Internal, format!("{gname}: no expert layout for {}", arch.name()))
        })?; // [X, a, b]
        let (x, per) = (want[0], want[1].saturating_mul(want[2]));
        let dims: Vec<u64> = want.iter().rev().copied().collect();
        let mut pieces = Vec::with_capacity(x as usize);
        let fused_kind = if kind == "down" { "down" } else { "gate_up" };
        if let Some(&i) = g.fused.get(&(bid, fused_kind)) {
            if g.experts.contains_key(&(bid, kind)) {
                return Err(unmapped(ck, &ck.tensors[i], "the layer has both fused and per-expert weights"));
            }
            used[i] = true;
            let t = &ck.tensors[i];
            if kind == "down" {
                if t.shape != want {
                    return Err(shape_err(ck, t, format!("expected {want:?} for {gname}")));
                }
                pieces.push(Piece { tensor: i, first: 0, count: x * per });
            } else {
                let fused = vec![x, want[1].saturating_mul(2), want[2]];
                if t.shape != fused {
                    return Err(shape_err(ck, t, format!("expected {fused:?} (gate and up of every expert)")));
                }
                let half = if kind == "gate" { 0 } else { per };
                for e in 0..x {
                    pieces.push(Piece { tensor: i, first: e * 2 * per + half, count: per });
                }
            }
        } else {
            let m = g.experts.get(&(bid, kind));
            for e in 0..x {
                let i = *m.and_then(|m| m.get(&e)).ok_or_else(|| {
                CoilError::new(
                    ErrorCode::MissingTensor,
                    format!(
                        "the checkpoint has no tensor for expert {e} of {gname} (model.layers.{bid}.feed_forward.experts.{e}.{kind}_proj.weight)"
                    ),
                )
            })?;
                used[i] = true;
                let t = &ck.tensors[i];
                if t.shape != want[1..] {
                    return Err(shape_err(ck, t, format!("expected {:?} for expert {e} of {gname}", &want[1..])));
                }
                pieces.push(Piece { tensor: i, first: 0, count: per });
            }
        }
        Ok(PlannedTensor {
            name: gname.to_string(),
            forced_f32: forced_f32(gname, dims.len()),
            dims,
            pieces,
            transform: Transform::None,
        })
    }
}

/// llama.cpp's converter rules for tensors that are always F32: 1-D tensors, `*_norm.weight`,
/// `ffn_gate_inp`, `ssm_conv1d`, and every name not ending in `.weight` (`ssm_a`, `ssm_d`, biases).
pub fn forced_f32(name: &str, n_dims: usize) -> bool {
    n_dims <= 1
        || name.ends_with("_norm.weight")
        || name.ends_with(".ffn_gate_inp.weight")
        || name.ends_with(".ssm_conv1d.weight")
        || !name.ends_with(".weight")
}
