//! Hyperparameters of the architectures coil runs, read from GGUF metadata as llama.cpp writes it
//! (`{arch}.embedding_length`, `{arch}.ssm.*`, ...).
//!
//! [`HParams`] is one flat description every part of the engine reads (state sizes, KV widths,
//! scratch sizes). The keys common to every architecture are read here; each architecture's file
//! in `model/archs/` reads its own (`hparams()` there), with the helpers of [`Keys`] and the
//! shared readers below (`read_mamba2_ssm`, `read_attention`, `read_experts`).

use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::{GgufFile, GgufValue};

/// The architectures with weights support (llama.cpp's `general.architecture` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Mamba-1 (and Falcon-Mamba: `mamba.ssm.dt_b_c_rms = true`).
    Mamba,
    /// Mamba-2 (and Mamba-Codestral).
    Mamba2,
    /// Jamba: Mamba-1 layers (with weighted dt/B/C norms) and attention layers (no RoPE, GQA),
    /// each followed by a dense or MoE SwiGLU FFN.
    Jamba,
    /// Granite-4.0-H and Bamba: Mamba-2 or attention layers, each followed by a SwiGLU FFN or a
    /// softmax MoE with a shared expert; Granite's four scales.
    GraniteHybrid,
    /// Nemotron-H: each layer one of Mamba-2, attention (no RoPE) or a ReLU² FFN.
    NemotronH,
    /// Nemotron-H MoE: as Nemotron-H with sigmoid-routed ReLU² experts on the FFN layers.
    NemotronHMoe,
    /// Falcon-H1: attention and Mamba-2 in parallel on every layer, then a SwiGLU FFN.
    FalconH1,
    /// LFM2: gated short convolutions or QK-normed attention, each followed by a SwiGLU FFN.
    Lfm2,
    /// LFM2-MoE: as LFM2 with sigmoid-routed experts after the leading dense layers.
    Lfm2Moe,
}

/// Every architecture, in the order `coil` lists them.
pub const ARCHS: [Arch; 9] = [
    Arch::Mamba,
    Arch::Mamba2,
    Arch::Jamba,
    Arch::GraniteHybrid,
    Arch::NemotronH,
    Arch::NemotronHMoe,
    Arch::FalconH1,
    Arch::Lfm2,
    Arch::Lfm2Moe,
];

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Mamba => "mamba",
            Arch::Mamba2 => "mamba2",
            Arch::Jamba => "jamba",
            Arch::GraniteHybrid => "granitehybrid",
            Arch::NemotronH => "nemotron_h",
            Arch::NemotronHMoe => "nemotron_h_moe",
            Arch::FalconH1 => "falcon-h1",
            Arch::Lfm2 => "lfm2",
            Arch::Lfm2Moe => "lfm2moe",
        }
    }

    /// What the recurrent layers of this architecture carry.
    pub fn recurrence(self) -> Recurrence {
        match self {
            Arch::Mamba | Arch::Jamba => Recurrence::Mamba1,
            Arch::Mamba2 | Arch::GraniteHybrid | Arch::NemotronH | Arch::NemotronHMoe | Arch::FalconH1 => {
                Recurrence::Mamba2
            }
            Arch::Lfm2 | Arch::Lfm2Moe => Recurrence::ShortConv,
        }
    }

    /// The architecture of `file`: `UnknownArchitecture` for one coil does not run, `MissingKey`
    /// without `general.architecture`.
    pub fn of(file: &GgufFile) -> Result<Arch> {
        match file.get("general.architecture") {
            None => Err(CoilError::new(ErrorCode::MissingKey, "missing metadata key general.architecture")),
            Some(v) => match v.as_str() {
                Some(a) => ARCHS.iter().copied().find(|x| x.name() == a).ok_or_else(|| {
                    let names: Vec<&str> = ARCHS.iter().map(|x| x.name()).collect();
                    CoilError::new(
                        ErrorCode::UnknownArchitecture,
                        format!("unknown model architecture {a:?}: coil runs {}", names.join(", ")),
                    )
                }),
                None => Err(CoilError::new(ErrorCode::GgufInvalid, "general.architecture is not a string")),
            },
        }
    }
}

/// The kind of recurrent state a model's recurrent layers keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recurrence {
    /// Conv state over E channels, SSM state `[N][E]`.
    Mamba1,
    /// Conv state over E + 2GN channels, SSM state `[H][P][N]`.
    Mamba2,
    /// LFM2's gated short convolution: a conv state over D channels, no SSM state.
    ShortConv,
}

/// Rotary position embedding of the attention layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rope {
    None,
    /// Adjacent pairs (2i, 2i+1) — llama.cpp's `LLAMA_ROPE_TYPE_NORM`.
    Norm,
    /// Half-split pairs (i, i + n_rot/2) — `LLAMA_ROPE_TYPE_NEOX`, transformers' rotate_half.
    Neox,
    /// transformers' rotate_half over the first `n_rot` dims of each head, with q/k rows stored in
    /// the order llama.cpp's converter gives them (the Llama permute over the whole head: dim j of
    /// the first half at 2j, of the second half at 2(j − hd/2) + 1). Bamba's partial RoPE: the
    /// pairs are at (2i, pos(i + n_rot/2)). llama.cpp applies NORM there, which pairs (2i, 2i+1)
    /// — other dims than transformers rotates when n_rot < head size (its Bamba is wrong; see
    /// docs/numerics.md). With n_rot = head size this is exactly NORM.
    NormPermuted,
}

/// How MoE routers turn logits into expert probabilities (llama.cpp `expert_gating_func`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gating {
    Softmax,
    Sigmoid,
}

/// Model hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct HParams {
    pub arch: Arch,
    /// Rows of the token embedding (the vocabulary the model computes logits for; may exceed the
    /// tokenizer's when the converter padded it).
    pub n_vocab: usize,
    /// d_model.
    pub n_embd: usize,
    pub n_layer: usize,
    /// `attention.layer_norm_rms_epsilon`: every RMS norm of the model.
    pub eps: f32,
    /// `{arch}.context_length` (0 when absent): the context the model was trained for.
    pub n_ctx_train: usize,

    // ---- recurrent layers ----
    /// d_inner (E); D for the short conv.
    pub d_inner: usize,
    /// d_state (N); 0 for the short conv.
    pub d_state: usize,
    /// d_conv (K); the short conv's `shortconv.l_cache`.
    pub d_conv: usize,
    /// Mamba-1: the rank of dt (R). Otherwise 0.
    pub dt_rank: usize,
    /// Mamba-2: heads (H; GGUF `ssm.time_step_rank`). Mamba-1: E (one channel per "head").
    pub n_head: usize,
    /// Mamba-2: head_dim (P = E/H). Mamba-1: 1.
    pub head_dim: usize,
    /// Mamba-2: groups sharing B and C (G). Mamba-1: 1.
    pub n_group: usize,
    /// Falcon-Mamba: weightless RMS norms on dt, B and C (`ssm.dt_b_c_rms`).
    pub dt_b_c_rms: bool,
    /// The eps of those norms: `ssm.dt_b_c_rms_epsilon` when the file has it (coil's converter
    /// records transformers' `mixer_rms_eps` there), else `eps` as llama.cpp does.
    pub dt_b_c_eps: f32,
    /// Mamba-2: the smallest Δ (`{arch}.ssm.dt_min`, which coil's converter writes from
    /// transformers' `time_step_limit[0]` / Nemotron-H's `time_step_min`; llama.cpp has no such
    /// key and does not clamp). 0: no clamp.
    pub dt_min: f32,
    /// Mamba-2: normalise before the SiLU gate (`{arch}.ssm.norm_before_gate`, which coil's
    /// converter writes for Falcon-H1's `mamba_norm_before_gate`; llama.cpp always gates first).
    pub norm_before_gate: bool,
    /// Per layer: whether it keeps recurrent state. Empty means every layer (mamba, mamba2).
    pub recurrent: Vec<bool>,

    // ---- attention layers ----
    /// Attention query heads (`attention.head_count`). 0 without attention.
    pub n_head_attn: usize,
    /// KV heads per layer (`attention.head_count_kv`); 0 marks a layer without attention. Empty
    /// without attention.
    pub n_head_kv: Vec<usize>,
    /// Attention head size (`attention.key_length`, else `embedding_length / head_count`).
    pub n_embd_head: usize,
    pub rope: Rope,
    /// Rotated dimensions per head (`rope.dimension_count`, else the head size).
    pub n_rot: usize,
    pub rope_freq_base: f32,
    /// `attention.scale` (0: 1/√head_size).
    pub attn_scale: f32,

    // ---- FFN ----
    /// Per layer: the dense FFN width (0: no dense FFN on that layer). Empty without FFNs.
    pub n_ff: Vec<usize>,
    /// Per layer: whether the FFN is MoE (`blk.i.ffn_gate_inp.weight` exists).
    pub moe: Vec<bool>,
    pub n_expert: usize,
    pub n_expert_used: usize,
    /// Width of each expert.
    pub n_ff_exp: usize,
    /// Width of the shared expert (0: none).
    pub n_ff_shexp: usize,
    pub gating: Gating,
    /// Renormalise the selected experts' weights to sum to 1.
    pub expert_weights_norm: bool,
    /// Scale of the selected experts' weights (0 or 1: none).
    pub expert_weights_scale: f32,

    // ---- Granite's scales (0: not applied) ----
    pub embedding_scale: f32,
    pub residual_scale: f32,
    /// Logits are divided by it.
    pub logit_scale: f32,
}

/// A generous bound on any dimension (so products stay far from overflow).
pub(crate) const MAX_DIM: u64 = 1 << 24;

fn invalid(msg: impl Into<String>) -> CoilError {
    CoilError::new(ErrorCode::GgufInvalid, msg)
}

/// Typed access to one architecture's metadata keys (`{arch}.{suffix}`).
pub(crate) struct Keys<'a> {
    pub file: &'a GgufFile,
    pub arch: Arch,
}

impl Keys<'_> {
    pub fn name(&self, suffix: &str) -> String {
        format!("{}.{suffix}", self.arch.name())
    }

    fn get(&self, suffix: &str) -> Option<&GgufValue> {
        self.file.get(&self.name(suffix))
    }

    /// A required integer in `1..=max`.
    pub fn positive(&self, suffix: &str, max: u64) -> Result<usize> {
        let k = self.name(suffix);
        match self.opt_u64(suffix)? {
            None => Err(CoilError::new(ErrorCode::MissingKey, format!("missing metadata key {k}"))),
            Some(v) if v == 0 || v > max => Err(invalid(format!("metadata key {k} = {v} is out of range (1..={max})"))),
            Some(v) => Ok(v as usize),
        }
    }

    /// An optional non-negative integer.
    pub fn opt_u64(&self, suffix: &str) -> Result<Option<u64>> {
        match self.get(suffix) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| invalid(format!("metadata key {} is not a non-negative integer", self.name(suffix)))),
        }
    }

    /// An optional integer in `0..=max`.
    pub fn opt_usize(&self, suffix: &str, max: u64) -> Result<Option<usize>> {
        match self.opt_u64(suffix)? {
            Some(v) if v > max => {
                Err(invalid(format!("metadata key {} = {v} is out of range (0..={max})", self.name(suffix))))
            }
            v => Ok(v.map(|v| v as usize)),
        }
    }

    /// An optional finite float.
    pub fn opt_f32(&self, suffix: &str) -> Result<Option<f32>> {
        match self.get(suffix) {
            None => Ok(None),
            Some(v) => {
                let x = v.as_f64().ok_or_else(|| invalid(format!("{} is not a number", self.name(suffix))))? as f32;
                if !x.is_finite() {
                    return Err(invalid(format!("{} = {x} is not finite", self.name(suffix))));
                }
                Ok(Some(x))
            }
        }
    }

    /// A required non-negative float.
    pub fn eps(&self, suffix: &str) -> Result<f32> {
        match self.opt_f32(suffix)? {
            None => Err(CoilError::new(ErrorCode::MissingKey, format!("missing metadata key {}", self.name(suffix)))),
            Some(e) if e < 0.0 => Err(invalid(format!("{} = {e} is not a non-negative number", self.name(suffix)))),
            Some(e) => Ok(e),
        }
    }

    pub fn opt_bool(&self, suffix: &str) -> Result<Option<bool>> {
        match self.get(suffix) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| invalid(format!("{} is not a bool", self.name(suffix)))),
        }
    }

    /// A per-layer integer written as a scalar or as an array of `n_layer` (llama.cpp's
    /// `get_key_or_arr`), each in `0..=max`. `None` when absent.
    pub fn per_layer(&self, suffix: &str, n_layer: usize, max: u64) -> Result<Option<Vec<usize>>> {
        let k = self.name(suffix);
        let v: Vec<i64> = match self.get(suffix) {
            None => return Ok(None),
            Some(GgufValue::Array(a)) => {
                a.to_i64_vec().ok_or_else(|| invalid(format!("{k} is not an array of integers")))?
            }
            Some(v) => vec![v.as_i64().ok_or_else(|| invalid(format!("{k} is not an integer")))?; n_layer],
        };
        if v.len() != n_layer {
            return Err(invalid(format!("{k} has {} entries for {n_layer} layers", v.len())));
        }
        v.iter()
            .enumerate()
            .map(|(i, &x)| {
                if x < 0 || x as u64 > max {
                    Err(invalid(format!("{k}[{i}] = {x} is out of range (0..={max})")))
                } else {
                    Ok(x as usize)
                }
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }
}

impl HParams {
    /// Reads the hyperparameters. `n_vocab` is filled in later from the token embedding.
    pub fn from_gguf(file: &GgufFile) -> Result<HParams> {
        let arch = Arch::of(file)?;
        let keys = Keys { file, arch };
        let mut hp = HParams {
            arch,
            n_vocab: 0,
            n_embd: keys.positive("embedding_length", MAX_DIM)?,
            n_layer: keys.positive("block_count", 4096)?,
            // Nemotron-H's files name it `attention.layer_norm_epsilon` only when the RMS key is
            // absent; llama.cpp falls back the same way.
            eps: match keys.opt_f32("attention.layer_norm_rms_epsilon")? {
                None if keys.opt_f32("attention.layer_norm_epsilon")?.is_some() => {
                    keys.eps("attention.layer_norm_epsilon")?
                }
                _ => keys.eps("attention.layer_norm_rms_epsilon")?,
            },
            n_ctx_train: keys.opt_u64("context_length")?.unwrap_or(0).min(u32::MAX as u64) as usize,
            d_inner: 0,
            d_state: 0,
            d_conv: 0,
            dt_rank: 0,
            n_head: 0,
            head_dim: 1,
            n_group: 1,
            dt_b_c_rms: false,
            dt_b_c_eps: 0.0,
            dt_min: 0.0,
            norm_before_gate: false,
            recurrent: Vec::new(),
            n_head_attn: 0,
            n_head_kv: Vec::new(),
            n_embd_head: 0,
            rope: Rope::None,
            n_rot: 0,
            rope_freq_base: 10000.0,
            attn_scale: 0.0,
            n_ff: Vec::new(),
            moe: Vec::new(),
            n_expert: 0,
            n_expert_used: 0,
            n_ff_exp: 0,
            n_ff_shexp: 0,
            gating: Gating::Softmax,
            expert_weights_norm: false,
            expert_weights_scale: 0.0,
            embedding_scale: 0.0,
            residual_scale: 0.0,
            logit_scale: 0.0,
        };
        hp.dt_b_c_eps = hp.eps;
        super::archs::read_hparams(&keys, &mut hp)?;
        hp.check_layers()?;
        Ok(hp)
    }

    /// The per-layer lists agree with `n_layer`.
    fn check_layers(&self) -> Result<()> {
        for (name, len) in [
            ("recurrent", self.recurrent.len()),
            ("head_count_kv", self.n_head_kv.len()),
            ("feed_forward_length", self.n_ff.len()),
            ("moe", self.moe.len()),
        ] {
            if len != 0 && len != self.n_layer {
                return Err(CoilError::new(
                    ErrorCode::Internal,
                    format!("{name} lists {len} layers for {} layers", self.n_layer),
                ));
            }
        }
        Ok(())
    }

    /// What the recurrent layers keep.
    pub fn recurrence(&self) -> Recurrence {
        self.arch.recurrence()
    }

    /// Whether layer `il` has attention (`head_count_kv[il] > 0`).
    pub fn is_attention(&self, il: usize) -> bool {
        self.n_head_kv.get(il).is_some_and(|&h| h > 0)
    }

    /// Whether layer `il` keeps recurrent state.
    pub fn is_recurrent(&self, il: usize) -> bool {
        if self.recurrent.is_empty() {
            il < self.n_layer
        } else {
            self.recurrent.get(il).copied().unwrap_or(false)
        }
    }

    /// Layers with recurrent state.
    pub fn n_recurrent_layers(&self) -> usize {
        (0..self.n_layer).filter(|&l| self.is_recurrent(l)).count()
    }

    /// Attention layers.
    pub fn n_attention_layers(&self) -> usize {
        (0..self.n_layer).filter(|&l| self.is_attention(l)).count()
    }

    /// The index of layer `il` among the recurrent layers (its state slot row).
    pub fn recurrent_index(&self, il: usize) -> usize {
        (0..il).filter(|&l| self.is_recurrent(l)).count()
    }

    /// The index of layer `il` among the attention layers (its KV cache layer).
    pub fn attention_index(&self, il: usize) -> usize {
        (0..il).filter(|&l| self.is_attention(l)).count()
    }

    /// Attention head size; 0 without attention.
    pub fn attn_head_dim(&self) -> usize {
        self.n_embd_head
    }

    /// K (or V) floats per token of each attention layer, in layer order.
    pub fn kv_dims(&self) -> Vec<usize> {
        (0..self.n_layer).filter(|&l| self.is_attention(l)).map(|l| self.n_head_kv[l] * self.n_embd_head).collect()
    }

    /// The widest dense FFN.
    pub fn max_ff(&self) -> usize {
        self.n_ff.iter().copied().max().unwrap_or(0)
    }

    /// Channels through the conv: E (Mamba-1), E + 2GN (Mamba-2), D (short conv).
    pub fn conv_dim(&self) -> usize {
        match self.recurrence() {
            Recurrence::Mamba1 | Recurrence::ShortConv => self.d_inner,
            Recurrence::Mamba2 => self.d_inner + 2 * self.n_group * self.d_state,
        }
    }

    /// Columns of ssm_in: 2E (Mamba-1), 2E + 2GN + H (Mamba-2), 3D (the short conv's B|C|x).
    pub fn d_in_proj(&self) -> usize {
        match self.recurrence() {
            Recurrence::Mamba1 => 2 * self.d_inner,
            Recurrence::Mamba2 => 2 * self.d_inner + 2 * self.n_group * self.d_state + self.n_head,
            Recurrence::ShortConv => 3 * self.d_inner,
        }
    }

    /// Conv-state floats per layer and sequence: (K−1)·conv_dim (llama.cpp's `n_embd_r`).
    pub fn conv_state_len(&self) -> usize {
        (self.d_conv.max(1) - 1) * self.conv_dim()
    }

    /// SSM-state floats per layer and sequence: N·E (llama.cpp's `n_embd_s`); 0 for short convs.
    pub fn ssm_state_len(&self) -> usize {
        self.d_state * self.d_inner
    }

    /// Bytes of recurrent state per sequence (f32, every recurrent layer).
    pub fn state_bytes_per_sequence(&self) -> u64 {
        4 * self.n_recurrent_layers() as u64 * (self.conv_state_len() + self.ssm_state_len()) as u64
    }

    /// A one-line description of the shape, for error messages.
    pub fn summary(&self) -> String {
        let mut s = format!("d_model {}, {} layers", self.n_embd, self.n_layer);
        match self.recurrence() {
            Recurrence::Mamba1 => {
                s += &format!(
                    ", d_inner {}, d_state {}, d_conv {}, dt_rank {}",
                    self.d_inner, self.d_state, self.d_conv, self.dt_rank
                )
            }
            Recurrence::Mamba2 => {
                s += &format!(
                    ", d_inner {}, d_state {}, d_conv {}, {} heads, {} groups",
                    self.d_inner, self.d_state, self.d_conv, self.n_head, self.n_group
                )
            }
            Recurrence::ShortConv => s += &format!(", conv width {}", self.d_conv),
        }
        if self.n_head_attn > 0 {
            s += &format!(", {} attention heads of {}", self.n_head_attn, self.n_embd_head);
        }
        if self.max_ff() > 0 {
            s += &format!(", n_ff {}", self.max_ff());
        }
        if self.n_expert > 0 {
            s += &format!(", {} experts of {} (top {})", self.n_expert, self.n_ff_exp, self.n_expert_used);
        }
        s
    }
}

// ---- Readers shared by several architectures ----

/// The Mamba-2 SSM keys (`ssm.conv_kernel`, `inner_size`, `state_size`, `time_step_rank` = heads,
/// `group_count`, and coil's optional `dt_min` and `norm_before_gate`).
pub(crate) fn read_mamba2_ssm(k: &Keys, hp: &mut HParams) -> Result<()> {
    hp.d_inner = k.positive("ssm.inner_size", MAX_DIM)?;
    hp.d_state = k.positive("ssm.state_size", 4096)?;
    hp.d_conv = k.positive("ssm.conv_kernel", crate::kernels::conv::MAX_D_CONV as u64)?;
    let h = k.positive("ssm.time_step_rank", MAX_DIM)?;
    let g = k.positive("ssm.group_count", MAX_DIM)?;
    let a = k.arch.name();
    if hp.d_inner % h != 0 {
        return Err(invalid(format!(
            "{a}: ssm.inner_size {} is not a multiple of the head count (ssm.time_step_rank) {h}",
            hp.d_inner
        )));
    }
    if h % g != 0 {
        return Err(invalid(format!("{a}: the head count {h} is not a multiple of ssm.group_count {g}")));
    }
    hp.n_head = h;
    hp.head_dim = hp.d_inner / h;
    hp.n_group = g;
    if let Some(m) = k.opt_f32("ssm.dt_min")? {
        if m < 0.0 {
            return Err(invalid(format!("{a}.ssm.dt_min = {m} is negative")));
        }
        hp.dt_min = m;
    }
    hp.norm_before_gate = k.opt_bool("ssm.norm_before_gate")?.unwrap_or(false);
    Ok(())
}

/// The attention keys: `attention.head_count`, `head_count_kv` (per layer; absent means every
/// layer has `head_count`), `key_length` (else `embedding_length / head_count`), `value_length`
/// (must equal the key length), `attention.scale`, and the RoPE keys when `rope` is not `None`.
pub(crate) fn read_attention(k: &Keys, hp: &mut HParams, rope: Rope) -> Result<()> {
    let a = k.arch.name();
    let n_head = k.positive("attention.head_count", MAX_DIM)?;
    let kv = match k.per_layer("attention.head_count_kv", hp.n_layer, n_head as u64)? {
        Some(v) => v,
        None => vec![n_head; hp.n_layer],
    };
    for (i, &h) in kv.iter().enumerate() {
        if h > 0 && n_head % h != 0 {
            return Err(invalid(format!(
                "{a}.attention.head_count_kv[{i}] = {h}: must be 0 (no attention) or divide attention.head_count {n_head}"
            )));
        }
    }
    let hd = match k.opt_usize("attention.key_length", MAX_DIM)? {
        Some(0) => return Err(invalid(format!("{a}.attention.key_length is 0"))),
        Some(v) => v,
        None => {
            if hp.n_embd % n_head != 0 {
                return Err(invalid(format!(
                    "{a}: embedding_length {} is not a multiple of attention.head_count {n_head}",
                    hp.n_embd
                )));
            }
            hp.n_embd / n_head
        }
    };
    if let Some(v) = k.opt_usize("attention.value_length", MAX_DIM)? {
        if v != hd {
            return Err(CoilError::new(
                ErrorCode::UnsupportedType,
                format!("{a}: attention.value_length {v} differs from key_length {hd}; coil needs them equal"),
            ));
        }
    }
    if k.opt_u64("attention.sliding_window")?.is_some_and(|w| w > 0) {
        return Err(CoilError::new(
            ErrorCode::UnsupportedType,
            format!("{a}: sliding-window attention (attention.sliding_window) is not supported yet"),
        ));
    }
    hp.n_head_attn = n_head;
    hp.n_head_kv = kv;
    hp.n_embd_head = hd;
    hp.attn_scale = k.opt_f32("attention.scale")?.unwrap_or(0.0);
    hp.rope = rope;
    if rope != Rope::None {
        let n_rot = k.opt_usize("rope.dimension_count", MAX_DIM)?.unwrap_or(hd);
        if n_rot == 0 || n_rot > hd || n_rot % 2 != 0 {
            return Err(invalid(format!(
                "{a}.rope.dimension_count = {n_rot}: must be even and at most the head size {hd}"
            )));
        }
        hp.n_rot = n_rot;
        hp.rope_freq_base = k.opt_f32("rope.freq_base")?.unwrap_or(10000.0);
        if hp.rope_freq_base <= 0.0 {
            return Err(invalid(format!("{a}.rope.freq_base = {} is not positive", hp.rope_freq_base)));
        }
        if let Some(t) = k.opt_f32("rope.scaling.factor")? {
            if t != 0.0 && t != 1.0 {
                return Err(CoilError::new(
                    ErrorCode::UnsupportedType,
                    format!("{a}: RoPE scaling (rope.scaling.factor = {t}) is not supported yet"),
                ));
            }
        }
    }
    Ok(())
}

/// `expert_count` and `expert_used_count` when a layer has experts (`moe` set), with the expert
/// width from `width_key` (`feed_forward_length` or `expert_feed_forward_length`).
pub(crate) fn read_experts(k: &Keys, hp: &mut HParams, width_key: &str) -> Result<()> {
    if !hp.moe.iter().any(|&m| m) {
        return Ok(());
    }
    hp.n_expert = k.positive("expert_count", 4096)?;
    hp.n_expert_used = k.positive("expert_used_count", hp.n_expert as u64)?;
    hp.n_ff_exp = k.positive(width_key, MAX_DIM)?;
    Ok(())
}

/// Whether each layer's FFN is MoE (`blk.i.ffn_gate_inp.weight` is in the file).
pub(crate) fn moe_layers(k: &Keys, n_layer: usize) -> Vec<bool> {
    (0..n_layer).map(|i| k.has_tensor(&format!("blk.{i}.ffn_gate_inp.weight"))).collect()
}
