//! One file per architecture, each reading top to bottom: the configuration keys it reads (with
//! their spellings and defaults), the GGUF metadata it writes (in llama.cpp's key order), and its
//! tensors (HF name, PyTorch shape, GGUF name, transform), in file order, through the
//! [`Planner`]. What several architectures share is here: the metadata writer [`Md`], llama.cpp's
//! generic `TextModel` keys ([`text_model_keys`]), and the tensor groups — the Mamba-2 mixer,
//! attention, dense FFNs and stacked experts.
//!
//! Where coil deliberately writes something other than llama.cpp's converter, the architecture
//! file says so where it happens ("llama.cpp writes ..., which ..."), and
//! `tests/convert_hybrids.rs` lists the differences.
//!
//! Adding an architecture: a file here, its `Arch` variant and HF names in `config.rs`, its line in
//! [`build`], its tokenizer files in `vocab.rs`, and the runtime side in `model/archs/`.

mod falcon_h1;
mod granite_hybrid;
mod jamba;
mod lfm2;
mod mamba;
mod mamba2;
pub(crate) mod nemotron_h;

use std::path::Path;

use serde_json::Value;

use super::config::{as_int, Arch, ModelConfig};
use super::safetensors::Checkpoint;
use super::tensors::{Plan, Planner, Rows, Take};
use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::{GgufArray, GgufValue};

/// What an architecture's converter decides: the model's metadata (everything between
/// `general.name` and `general.quantization_version`, `general.file_type` included, in the
/// reference converter's order) and the tensors.
pub(super) struct Built {
    pub metadata: Vec<(String, GgufValue)>,
    pub plan: Plan,
    pub warnings: Vec<String>,
}

/// What every architecture's converter gets.
pub(super) struct Cx<'a> {
    pub cfg: &'a ModelConfig,
    pub dir: &'a Path,
    pub ck: &'a Checkpoint,
    /// `general.file_type`, which llama.cpp writes among the model's keys.
    pub file_type: u32,
}

pub(super) fn build(cx: &Cx) -> Result<Built> {
    match cx.cfg.arch {
        Arch::Mamba => mamba::build(cx),
        Arch::Mamba2 => mamba2::build(cx),
        Arch::Jamba => jamba::build(cx),
        Arch::GraniteHybrid => granite_hybrid::build(cx),
        Arch::NemotronH | Arch::NemotronHMoe => nemotron_h::build(cx),
        Arch::FalconH1 => falcon_h1::build(cx),
        Arch::Lfm2 | Arch::Lfm2Moe => lfm2::build(cx),
    }
}

// ---------------------------------------------------------------------------------------------
// Metadata
// ---------------------------------------------------------------------------------------------

/// The model's GGUF keys in writing order. Setting a key again replaces its value in place, as
/// gguf-py does when a converter class overrides what its parent wrote ("Duplicated key name").
pub(super) struct Md {
    arch: &'static str,
    pub kv: Vec<(String, GgufValue)>,
}

fn too_big(what: &str, v: u64) -> CoilError {
    CoilError::new(ErrorCode::InvalidArgument, format!("{what} {v} does not fit in a u32"))
}

impl Md {
    pub fn new(arch: Arch) -> Md {
        Md { arch: arch.name(), kv: Vec::new() }
    }

    /// Sets a full key.
    pub fn set_key(&mut self, key: &str, v: GgufValue) {
        match self.kv.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = v,
            None => self.kv.push((key.to_string(), v)),
        }
    }

    /// Sets `{arch}.{suffix}`.
    pub fn set(&mut self, suffix: &str, v: GgufValue) {
        let key = format!("{}.{suffix}", self.arch);
        self.set_key(&key, v);
    }

    pub fn u32(&mut self, suffix: &str, v: u64) -> Result<()> {
        let x = u32::try_from(v).map_err(|_| too_big(suffix, v))?;
        self.set(suffix, GgufValue::U32(x));
        Ok(())
    }

    pub fn f32(&mut self, suffix: &str, v: f64) {
        self.set(suffix, GgufValue::F32(v as f32));
    }

    pub fn bool(&mut self, suffix: &str, v: bool) {
        self.set(suffix, GgufValue::Bool(v));
    }

    /// A per-layer array (`head_count_kv`, `feed_forward_length`), int32 as gguf-py writes lists.
    pub fn i32s(&mut self, suffix: &str, v: &[u64]) -> Result<()> {
        let mut out = Vec::with_capacity(v.len());
        for &x in v {
            out.push(i32::try_from(x).map_err(|_| too_big(suffix, x))?);
        }
        self.set(suffix, GgufValue::Array(GgufArray::I32(out)));
        Ok(())
    }

    pub fn file_type(&mut self, ft: u32) {
        self.set_key("general.file_type", GgufValue::U32(ft));
    }

    /// Removes `{arch}.{suffix}`.
    pub fn remove(&mut self, suffix: &str) {
        let key = format!("{}.{suffix}", self.arch);
        self.kv.retain(|(k, _)| *k != key);
    }

    /// Whether `{arch}.{suffix}` is set.
    pub fn has(&self, suffix: &str) -> bool {
        let key = format!("{}.{suffix}", self.arch);
        self.kv.iter().any(|(k, _)| *k == key)
    }
}

fn int_value(cfg: &ModelConfig, dir: &Path, key: &str, v: &Value) -> Result<u64> {
    as_int(v).ok_or_else(|| cfg.err(dir, format!("{key}: {v} is not a non-negative integer")))
}

/// The config's RoPE parameters as llama.cpp's `TextModel.__init__` gathers them:
/// `rope_parameters` (transformers 5) or `rope_scaling`, with a top-level `rope_theta` mirrored in.
pub(super) fn rope_params(cfg: &ModelConfig) -> serde_json::Map<String, Value> {
    let mut rp = cfg
        .find(&["rope_parameters"])
        .filter(|v| !v.is_null())
        .or_else(|| cfg.find(&["rope_scaling"]))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(full) = rp.get("full_attention").and_then(Value::as_object).cloned() {
        return full;
    }
    let theta =
        cfg.get(&["global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta", "rotary_emb_base"]);
    if !rp.contains_key("rope_theta") {
        if let Some(t) = theta {
            rp.insert("rope_theta".into(), t.clone());
        }
    }
    if !rp.contains_key("rope_type") {
        if let Some(t) = rp.get("type").cloned() {
            rp.insert("rope_type".into(), t);
        }
    }
    if !rp.contains_key("partial_rotary_factor") {
        if let Some(f) = cfg.get(&["partial_rotary_factor", "rope_pct", "rope_percent"]) {
            rp.insert("partial_rotary_factor".into(), f.clone());
        }
    }
    rp
}

/// llama.cpp's `TextModel.set_gguf_parameters`: the keys every transformers-style model starts
/// with. `keys` turns a list of config keys into the lookup list (adding the architecture's
/// prefixes, see `config::with_prefix`); `head_dim`: whether a `head_dim` key is read (Granite's
/// converter drops it first).
pub(super) fn text_model_keys(
    md: &mut Md,
    cx: &Cx,
    n_layer: u64,
    keys: &dyn Fn(&[&str]) -> Vec<String>,
    head_dim: bool,
) -> Result<()> {
    let (cfg, dir) = (cx.cfg, cx.dir);
    let int = |md: &mut Md, suffix: &str, names: &[&str]| -> Result<()> {
        let k = keys(names);
        if let Some(v) = cfg.get(&k) {
            md.u32(suffix, int_value(cfg, dir, names[0], v)?)?;
        }
        Ok(())
    };
    md.u32("block_count", n_layer)?;
    int(
        md,
        "context_length",
        &["max_position_embeddings", "n_ctx", "n_positions", "max_length", "max_sequence_length", "model_max_length"],
    )?;
    int(md, "embedding_length", &["hidden_size", "n_embd", "dim"])?;
    int(
        md,
        "feed_forward_length",
        &["prefix_dense_intermediate_size", "dense_intermediate_size", "intermediate_size", "n_inner", "hidden_dim"],
    )?;
    int(md, "attention.head_count", &["num_attention_heads", "n_head", "n_heads"])?;
    // A list (LFM2 rewrites it per layer first) is written by the architecture right after.
    let kv = keys(&["num_key_value_heads", "n_kv_heads"]);
    match cfg.get(&kv) {
        Some(Value::Array(_)) => md.u32("attention.head_count_kv", 0)?,
        Some(v) => md.u32("attention.head_count_kv", int_value(cfg, dir, "num_key_value_heads", v)?)?,
        None => {}
    }
    let rp = rope_params(cfg);
    if let Some(ty) = rp.get("rope_type").and_then(Value::as_str) {
        let factor = rp.get("factor").and_then(Value::as_f64);
        match (ty, factor) {
            ("linear", Some(f)) => {
                md.set("rope.scaling.type", "linear".into());
                md.f32("rope.scaling.factor", f);
            }
            ("yarn", Some(f)) => {
                md.set("rope.scaling.type", "yarn".into());
                md.f32("rope.scaling.factor", f);
                if let Some(o) = rp.get("original_max_position_embeddings").and_then(as_int) {
                    md.u32("rope.scaling.original_context_length", o)?;
                }
            }
            _ => {}
        }
    }
    if let Some(t) = rp.get("rope_theta").and_then(Value::as_f64) {
        md.f32("rope.freq_base", t);
    }
    if let Some(e) = cfg.get(&keys(&["rms_norm_eps", "norm_eps"])).and_then(Value::as_f64) {
        md.f32("attention.layer_norm_rms_epsilon", e);
    }
    if let Some(e) = cfg.get(&keys(&["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"])).and_then(Value::as_f64) {
        md.f32("attention.layer_norm_epsilon", e);
    }
    int(md, "expert_count", &["num_local_experts", "num_experts", "n_routed_experts"])?;
    int(md, "expert_used_count", &["num_experts_per_tok", "num_experts_per_token", "top_k_experts"])?;
    if let Some(v) = cfg.get(&["n_group"]) {
        md.u32("expert_group_count", int_value(cfg, dir, "n_group", v)?)?;
    }
    if let Some(v) = cfg.get(&["topk_group"]) {
        md.u32("expert_group_used_count", int_value(cfg, dir, "topk_group", v)?)?;
    }
    let score = keys(&[
        "score_function",
        "scoring_func",
        "score_func",
        "moe_router_activation",
        "moe_router_activation_func",
        "expert_selection_fn",
    ]);
    match cfg.get(&score).and_then(Value::as_str) {
        Some("sigmoid") => md.u32("expert_gating_func", 2)?,
        Some("softmax") => md.u32("expert_gating_func", 1)?,
        Some(other) => return Err(cfg.err(dir, format!("unsupported expert score function {other:?}"))),
        None => {}
    }
    if head_dim {
        if let Some(v) = cfg.get(&["head_dim"]) {
            let hd = int_value(cfg, dir, "head_dim", v)?;
            md.u32("attention.key_length", hd)?;
            md.u32("attention.value_length", hd)?;
        }
    }
    md.file_type(cx.file_type);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tensor groups
// ---------------------------------------------------------------------------------------------

/// The Mamba-2 mixer's sizes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ssm2 {
    pub d_model: u64,
    pub d_inner: u64,
    pub d_state: u64,
    pub n_group: u64,
    /// SSM heads (H).
    pub n_head: u64,
}

impl Ssm2 {
    /// Channels through the conv: E + 2GN.
    pub fn conv_dim(&self) -> u64 {
        self.d_inner.saturating_add(2u64.saturating_mul(self.n_group).saturating_mul(self.d_state))
    }

    /// Rows of `in_proj`: z, xBC, dt = E + (E + 2GN) + H.
    pub fn d_in_proj(&self) -> u64 {
        self.d_inner.saturating_add(self.conv_dim()).saturating_add(self.n_head)
    }

    /// Checks that the sizes split evenly (E into H heads, H into G groups).
    pub fn check(&self, cx: &Cx) -> Result<()> {
        let (e, h, g) = (self.d_inner, self.n_head, self.n_group);
        if e == 0 || self.d_model == 0 || self.d_state == 0 {
            return Err(cx.cfg.err(cx.dir, "the hidden size, the SSM inner size and the state size must be positive"));
        }
        if h == 0 || !e.is_multiple_of(h) {
            return Err(cx.cfg.err(cx.dir, format!("the SSM inner size {e} is not a multiple of the head count {h}")));
        }
        if g == 0 || !h.is_multiple_of(g) {
            return Err(cx.cfg.err(cx.dir, format!("{h} SSM heads cannot be split into {g} groups")));
        }
        Ok(())
    }
}

/// The lower bound transformers' Mamba-2 mixers clamp Δ to (`time_step_limit[0]`), when
/// positive. coil writes it as `{arch}.ssm.dt_min`, which its runtime applies; llama.cpp has no such
/// key and never clamps.
pub(super) fn dt_min_from_limit(cfg: &ModelConfig, warnings: &mut Vec<String>) -> Option<f64> {
    let lim = cfg.raw.get("time_step_limit")?.as_array()?;
    if lim.get(1).and_then(Value::as_f64).is_some_and(|m| m.is_finite()) {
        warnings.push("time_step_limit has a finite upper bound, which neither llama.cpp nor coil applies".into());
    }
    lim.first().and_then(Value::as_f64).filter(|&m| m > 0.0)
}

/// Options of [`mamba2_mixer`].
pub(super) struct Mamba2Opts {
    pub conv_bias_required: bool,
    /// `Some(required)`: take the group norm; `None`: the model has none (Falcon-H1 without
    /// `mamba_rms_norm`), and a `norm.weight` in the checkpoint is refused.
    pub norm: Option<bool>,
    /// Falcon-H1: a scale for each of the z, x, B, C and dt row blocks of `in_proj` (µP), and the
    /// factors of `in_proj` and `out_proj` as a whole.
    pub in_blocks: Option<[f64; 5]>,
    pub in_scale: f64,
    pub out_scale: f64,
}

impl Default for Mamba2Opts {
    fn default() -> Self {
        Mamba2Opts { conv_bias_required: true, norm: Some(true), in_blocks: None, in_scale: 1.0, out_scale: 1.0 }
    }
}

/// The Mamba-2 mixer of layer `bid` from the tensors `{pre}in_proj.weight`, `conv1d.{weight,bias}`,
/// `dt_bias` (or `dt_proj.bias`), `A_log`, `D`, `norm.weight`, `out_proj.weight`, as
/// `conversion/mamba.py` `Mamba2Model` writes them: `ssm_a = -exp(A_log)` and `ssm_d` as `{1, H}`,
/// the conv weight squeezed to `{K, E+2GN}`, the group norm as `{E/G, G}`.
pub(super) fn mamba2_mixer(p: &mut Planner, bid: u64, pre: &str, s: &Ssm2, d_conv: u64, o: &Mamba2Opts) -> Result<()> {
    let g = |x: &str| format!("blk.{bid}.{x}");
    let n = |x: &str| format!("{pre}{x}");
    let (d, e, h, cd) = (s.d_model, s.d_inner, s.n_head, s.conv_dim());
    let mut t = Take::new(g("ssm_in.weight"), n("in_proj.weight"), &[s.d_in_proj(), d]).scale(o.in_scale);
    if let Some(m) = o.in_blocks {
        let gn = s.n_group.saturating_mul(s.d_state);
        t = t.rows(Rows::Blocks(vec![(e, m[0]), (e, m[1]), (gn, m[2]), (gn, m[3]), (h, m[4])]));
    }
    p.take(t)?;
    p.take(
        Take::new(g("ssm_conv1d.weight"), n("conv1d.weight"), &[cd, 1, d_conv]).alt(&[cd, d_conv]).out(&[cd, d_conv]),
    )?;
    p.take(Take::new(g("ssm_conv1d.bias"), n("conv1d.bias"), &[cd]).required(o.conv_bias_required))?;
    let dt = p.pick(&[n("dt_bias"), n("dt_proj.bias")]).unwrap_or_else(|| n("dt_bias"));
    p.take(Take::new(g("ssm_dt.bias"), dt, &[h]))?;
    p.take(Take::new(g("ssm_a"), n("A_log"), &[h]).out(&[h, 1]).neg_exp())?;
    p.take(Take::new(g("ssm_d"), n("D"), &[h]).out(&[h, 1]))?;
    if let Some(required) = o.norm {
        let gr = s.n_group.max(1);
        p.take(Take::new(g("ssm_norm.weight"), n("norm.weight"), &[e]).out(&[gr, e / gr]).required(required))?;
    }
    p.take(Take::new(g("ssm_out.weight"), n("out_proj.weight"), &[d, e]).scale(o.out_scale))?;
    Ok(())
}

/// Attention sizes.
#[derive(Debug, Clone, Copy)]
pub(super) struct AttnShape {
    pub d_model: u64,
    pub n_head: u64,
    pub n_kv: u64,
    pub head_dim: u64,
}

/// Source names and options of [`attention`].
pub(super) struct AttnSrc {
    /// `{pre}q_proj`, `k_proj`, `v_proj` and `{pre}{o}` (`o_proj` or `out_proj`).
    pub pre: String,
    pub o: &'static str,
    /// Permute the rows of each q and k head as llama.cpp's `LlamaModel.permute` does (for ggml's
    /// NORM RoPE); needs an even head size.
    pub permute: bool,
    /// Per-head RMS norms of q and k (`{pre}{q_norm}.weight`, `{pre}{k_norm}.weight`).
    pub qk_norm: Option<(&'static str, &'static str)>,
    /// Factors of q, k, v, o (Falcon-H1's µP multipliers).
    pub scales: [f64; 4],
}

impl AttnSrc {
    pub fn new(pre: String, o: &'static str) -> AttnSrc {
        AttnSrc { pre, o, permute: false, qk_norm: None, scales: [1.0; 4] }
    }
}

/// Attention of layer `bid`: `attn_q`, `attn_k`, `attn_v`, `attn_output` with their optional
/// biases, and the optional QK norms.
pub(super) fn attention(p: &mut Planner, bid: u64, a: &AttnShape, s: &AttnSrc) -> Result<()> {
    let g = |x: &str| format!("blk.{bid}.{x}");
    let n = |x: &str| format!("{}{x}", s.pre);
    let (d, hd) = (a.d_model, a.head_dim);
    let (q, kv) = (a.n_head.saturating_mul(hd), a.n_kv.saturating_mul(hd));
    let perm = |heads: u64| -> Rows {
        if s.permute {
            Rows::Permute(super::tensors::llama_permutation(heads, hd))
        } else {
            Rows::All
        }
    };
    let o = s.o;
    for (i, (gname, src, rows, heads)) in
        [("attn_q", "q_proj", q, a.n_head), ("attn_k", "k_proj", kv, a.n_kv), ("attn_v", "v_proj", kv, 0)]
            .into_iter()
            .enumerate()
    {
        let r = if heads > 0 { perm(heads) } else { Rows::All };
        p.take(
            Take::new(g(&format!("{gname}.weight")), n(&format!("{src}.weight")), &[rows, d])
                .rows(r.clone())
                .scale(s.scales[i]),
        )?;
        p.take(Take::new(g(&format!("{gname}.bias")), n(&format!("{src}.bias")), &[rows]).rows(r).optional())?;
    }
    p.take(Take::new(g("attn_output.weight"), n(&format!("{o}.weight")), &[d, q]).scale(s.scales[3]))?;
    p.take(Take::new(g("attn_output.bias"), n(&format!("{o}.bias")), &[d]).optional())?;
    if let Some((qn, kn)) = s.qk_norm {
        p.take(Take::new(g("attn_q_norm.weight"), n(&format!("{qn}.weight")), &[hd]))?;
        p.take(Take::new(g("attn_k_norm.weight"), n(&format!("{kn}.weight")), &[hd]))?;
    }
    Ok(())
}

/// A dense FFN's source names (full names, `.weight` included): gate (`None` for ReLU²), up,
/// down; and factors for gate and down (Falcon-H1).
pub(super) struct FfnSrc {
    pub gate: Option<String>,
    pub up: String,
    pub down: String,
    pub gate_scale: f64,
    pub down_scale: f64,
}

/// `ffn_gate{sfx}`, `ffn_up{sfx}`, `ffn_down{sfx}` (`sfx` = `""` or `"_shexp"`) of width `f`, with
/// optional biases (`.bias` beside each `.weight`).
pub(super) fn dense_ffn(p: &mut Planner, bid: u64, sfx: &str, d: u64, f: u64, s: &FfnSrc) -> Result<()> {
    let g = |x: &str, w: &str| format!("blk.{bid}.ffn_{x}{sfx}.{w}");
    let bias = |w: &str| format!("{}.bias", w.strip_suffix(".weight").unwrap_or(w));
    if let Some(gate) = &s.gate {
        p.take(Take::new(g("gate", "weight"), gate.clone(), &[f, d]).scale(s.gate_scale))?;
        p.take(Take::new(g("gate", "bias"), bias(gate), &[f]).optional())?;
    }
    p.take(Take::new(g("up", "weight"), s.up.clone(), &[f, d]))?;
    p.take(Take::new(g("up", "bias"), bias(&s.up), &[f]).optional())?;
    p.take(Take::new(g("down", "weight"), s.down.clone(), &[d, f]).scale(s.down_scale))?;
    p.take(Take::new(g("down", "bias"), bias(&s.down), &[d]).optional())?;
    Ok(())
}

/// Where one kind of expert matrix comes from.
pub(super) enum ExpertSrc {
    /// One tensor per expert (`[a, b]` each), stacked.
    Each(Vec<String>),
    /// One tensor `[X, rows, b]` of which each expert's rows `first..first + a` are taken
    /// (transformers 5's and Granite's fused gate/up).
    Fused { name: String, rows: u64, first: u64 },
}

/// `ffn_{kind}_exps.weight` of layer `bid`: `x` experts of PyTorch shape `[a, b]` each, GGUF dims
/// `{b, a, X}`.
pub(super) fn experts(p: &mut Planner, bid: u64, kind: &str, x: u64, a: u64, b: u64, src: ExpertSrc) -> Result<()> {
    let gname = format!("blk.{bid}.ffn_{kind}_exps.weight");
    match src {
        ExpertSrc::Each(names) => p.stack(&gname, &names, &[a, b]),
        ExpertSrc::Fused { name, rows, first } => {
            p.take(Take::new(gname, name, &[x, rows, b]).rows(Rows::Range(first, a)).out(&[x, a, b]))?;
            Ok(())
        }
    }
}

/// The output head `output.weight` (`[n_vocab, d]`) when the checkpoint has `lm_head`; `false`
/// when it has none (tied: the runtime then uses `token_embd`).
pub(super) fn output(p: &mut Planner, lm_head: &str, n_vocab: u64, d: u64, scale: f64) -> Result<bool> {
    p.take(Take::new("output.weight", lm_head, &[n_vocab, d]).scale(scale).optional())
}

/// The model's layer count from the usual keys.
pub(super) fn n_layer(cx: &Cx) -> Result<u64> {
    let n = cx.cfg.int_req(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"], cx.dir)?;
    if n > u32::MAX as u64 {
        return Err(cx.cfg.err(cx.dir, "a dimension does not fit in 32 bits"));
    }
    Ok(n)
}

/// Splits `{prefix}12.rest` into (12, "rest").
pub(super) fn split_layer<'n>(name: &'n str, prefix: &str) -> Option<(u64, &'n str)> {
    let rest = name.strip_prefix(prefix)?;
    let dot = rest.find('.')?;
    if !rest[..dot].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((rest[..dot].parse().ok()?, &rest[dot + 1..]))
}
