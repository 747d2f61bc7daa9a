//! Hyperparameters of the architectures coil runs, read from GGUF metadata as llama.cpp writes it
//! (`{arch}.embedding_length`, `{arch}.ssm.*`, ...).

use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::GgufFile;

/// The architectures with weights support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Mamba-1 (and Falcon-Mamba: `mamba.ssm.dt_b_c_rms = true`).
    Mamba,
    /// Mamba-2 (and Mamba-Codestral).
    Mamba2,
    /// Jamba: Mamba-1 layers (with weighted dt/B/C norms) and attention layers (no RoPE, GQA),
    /// each followed by a dense or MoE SwiGLU FFN.
    Jamba,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Mamba => "mamba",
            Arch::Mamba2 => "mamba2",
            Arch::Jamba => "jamba",
        }
    }

    /// The architecture of `file`: `UnknownArchitecture` for anything but mamba/mamba2/jamba,
    /// `MissingKey` without `general.architecture`.
    pub fn of(file: &GgufFile) -> Result<Arch> {
        match file.get("general.architecture") {
            None => Err(CoilError::new(ErrorCode::MissingKey, "missing metadata key general.architecture")),
            Some(v) => match v.as_str() {
                Some("mamba") => Ok(Arch::Mamba),
                Some("mamba2") => Ok(Arch::Mamba2),
                Some("jamba") => Ok(Arch::Jamba),
                Some(a) => Err(CoilError::new(
                    ErrorCode::UnknownArchitecture,
                    format!("unknown model architecture {a:?}: coil runs mamba, mamba2 and jamba"),
                )),
                None => Err(CoilError::new(ErrorCode::GgufInvalid, "general.architecture is not a string")),
            },
        }
    }
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
    /// d_inner (E).
    pub d_inner: usize,
    /// d_state (N).
    pub d_state: usize,
    /// d_conv (K).
    pub d_conv: usize,
    /// Mamba-1: the rank of dt (R). Mamba-2: 0.
    pub dt_rank: usize,
    /// Mamba-2: heads (H; GGUF `ssm.time_step_rank`). Mamba-1: E (one channel per "head").
    pub n_head: usize,
    /// Mamba-2: head_dim (P = E/H). Mamba-1: 1.
    pub head_dim: usize,
    /// Mamba-2: groups sharing B and C (G). Mamba-1: 1.
    pub n_group: usize,
    /// `attention.layer_norm_rms_epsilon`: every RMS norm of the model.
    pub eps: f32,
    /// Falcon-Mamba: weightless RMS norms on dt, B and C (`ssm.dt_b_c_rms`).
    pub dt_b_c_rms: bool,
    /// The eps of those norms: `ssm.dt_b_c_rms_epsilon` when the file has it (coil's converter
    /// records transformers' `mixer_rms_eps` there), else `eps` as llama.cpp does.
    pub dt_b_c_eps: f32,
    /// `{arch}.context_length` (0 when absent): the context the model was trained for.
    pub n_ctx_train: usize,
    /// Jamba: attention query heads (`attention.head_count`). 0 for mamba/mamba2.
    pub n_head_attn: usize,
    /// Jamba: KV heads per layer (`attention.head_count_kv`, array or scalar); 0 marks a Mamba
    /// layer. Empty for mamba/mamba2.
    pub n_head_kv: Vec<usize>,
    /// Jamba: whether each layer's FFN is MoE (`blk.i.ffn_gate_inp.weight` exists). Empty for
    /// mamba/mamba2.
    pub moe: Vec<bool>,
    /// Jamba: the FFN width, shared by the dense and the expert FFNs.
    pub n_ff: usize,
    pub n_expert: usize,
    pub n_expert_used: usize,
}

fn key(file: &GgufFile, arch: Arch, suffix: &str) -> String {
    let _ = file;
    format!("{}.{suffix}", arch.name())
}

fn req_u64(file: &GgufFile, k: &str) -> Result<u64> {
    match file.get(k) {
        None => Err(CoilError::new(ErrorCode::MissingKey, format!("missing metadata key {k}"))),
        Some(v) => v.as_u64().ok_or_else(|| {
            CoilError::new(ErrorCode::GgufInvalid, format!("metadata key {k} is not a non-negative integer"))
        }),
    }
}

fn positive(k: &str, v: u64, max: u64) -> Result<usize> {
    if v == 0 || v > max {
        return Err(CoilError::new(
            ErrorCode::GgufInvalid,
            format!("metadata key {k} = {v} is out of range (1..={max})"),
        ));
    }
    Ok(v as usize)
}

/// A generous bound on any dimension (so products stay far from overflow).
const MAX_DIM: u64 = 1 << 24;

impl HParams {
    /// Reads the hyperparameters. `n_vocab` is filled in later from the token embedding.
    pub fn from_gguf(file: &GgufFile) -> Result<HParams> {
        let arch = Arch::of(file)?;
        let k = |s: &str| key(file, arch, s);
        let n_embd = positive(&k("embedding_length"), req_u64(file, &k("embedding_length"))?, MAX_DIM)?;
        let n_layer = positive(&k("block_count"), req_u64(file, &k("block_count"))?, 4096)?;
        let d_inner = positive(&k("ssm.inner_size"), req_u64(file, &k("ssm.inner_size"))?, MAX_DIM)?;
        let d_state = positive(&k("ssm.state_size"), req_u64(file, &k("ssm.state_size"))?, 4096)?;
        let d_conv = positive(
            &k("ssm.conv_kernel"),
            req_u64(file, &k("ssm.conv_kernel"))?,
            crate::kernels::conv::MAX_D_CONV as u64,
        )?;
        let tsr = positive(&k("ssm.time_step_rank"), req_u64(file, &k("ssm.time_step_rank"))?, MAX_DIM)?;
        let eps_key = k("attention.layer_norm_rms_epsilon");
        let eps = match file.get(&eps_key) {
            None => return Err(CoilError::new(ErrorCode::MissingKey, format!("missing metadata key {eps_key}"))),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| CoilError::new(ErrorCode::GgufInvalid, format!("{eps_key} is not a number")))?
                as f32,
        };
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(CoilError::new(
                ErrorCode::GgufInvalid,
                format!("{eps_key} = {eps} is not a non-negative number"),
            ));
        }
        let mut hp = HParams {
            arch,
            n_vocab: 0,
            n_embd,
            n_layer,
            d_inner,
            d_state,
            d_conv,
            dt_rank: 0,
            n_head: d_inner,
            head_dim: 1,
            n_group: 1,
            eps,
            dt_b_c_rms: false,
            dt_b_c_eps: eps,
            n_ctx_train: file.get(&k("context_length")).and_then(|v| v.as_u64()).unwrap_or(0).min(u32::MAX as u64)
                as usize,
            n_head_attn: 0,
            n_head_kv: Vec::new(),
            moe: Vec::new(),
            n_ff: 0,
            n_expert: 0,
            n_expert_used: 0,
        };
        match arch {
            Arch::Jamba => {
                hp.dt_rank = tsr;
                jamba_hparams(file, &mut hp)?;
            }
            Arch::Mamba => {
                hp.dt_rank = tsr;
                let dk = k("ssm.dt_b_c_rms");
                hp.dt_b_c_rms = match file.get(&dk) {
                    None => false,
                    Some(v) => v
                        .as_bool()
                        .ok_or_else(|| CoilError::new(ErrorCode::GgufInvalid, format!("{dk} is not a bool")))?,
                };
                let ek = k("ssm.dt_b_c_rms_epsilon");
                if let Some(v) = file.get(&ek) {
                    let e = v
                        .as_f64()
                        .ok_or_else(|| CoilError::new(ErrorCode::GgufInvalid, format!("{ek} is not a number")))?
                        as f32;
                    if !(e.is_finite() && e >= 0.0) {
                        return Err(CoilError::new(
                            ErrorCode::GgufInvalid,
                            format!("{ek} = {e} is not a non-negative number"),
                        ));
                    }
                    hp.dt_b_c_eps = e;
                }
            }
            Arch::Mamba2 => {
                let h = tsr;
                let gk = k("ssm.group_count");
                let g = positive(&gk, req_u64(file, &gk)?, MAX_DIM)?;
                if d_inner % h != 0 {
                    return Err(CoilError::new(
                        ErrorCode::GgufInvalid,
                        format!("mamba2: ssm.inner_size {d_inner} is not a multiple of the head count (ssm.time_step_rank) {h}"),
                    ));
                }
                if h % g != 0 {
                    return Err(CoilError::new(
                        ErrorCode::GgufInvalid,
                        format!("mamba2: the head count {h} is not a multiple of ssm.group_count {g}"),
                    ));
                }
                hp.n_head = h;
                hp.head_dim = d_inner / h;
                hp.n_group = g;
            }
        }
        Ok(hp)
    }

    /// Whether layer `il` is an attention layer (Jamba, `head_count_kv[il] > 0`).
    pub fn is_attention(&self, il: usize) -> bool {
        self.n_head_kv.get(il).is_some_and(|&h| h > 0)
    }

    /// Layers with recurrent state (all but the attention layers).
    pub fn n_recurrent_layers(&self) -> usize {
        (0..self.n_layer).filter(|&l| !self.is_attention(l)).count()
    }

    /// Attention layers.
    pub fn n_attention_layers(&self) -> usize {
        self.n_layer - self.n_recurrent_layers()
    }

    /// Attention head size (`embedding_length / head_count`); 0 without attention.
    pub fn attn_head_dim(&self) -> usize {
        if self.n_head_attn == 0 {
            0
        } else {
            self.n_embd / self.n_head_attn
        }
    }

    /// K (or V) floats per token of each attention layer, in layer order.
    pub fn kv_dims(&self) -> Vec<usize> {
        (0..self.n_layer).filter(|&l| self.is_attention(l)).map(|l| self.n_head_kv[l] * self.attn_head_dim()).collect()
    }

    /// Channels through the conv: E (Mamba-1) or E + 2GN (Mamba-2).
    pub fn conv_dim(&self) -> usize {
        match self.arch {
            Arch::Mamba | Arch::Jamba => self.d_inner,
            Arch::Mamba2 => self.d_inner + 2 * self.n_group * self.d_state,
        }
    }

    /// Rows of ssm_in: 2E (Mamba-1) or 2E + 2GN + H (Mamba-2).
    pub fn d_in_proj(&self) -> usize {
        match self.arch {
            Arch::Mamba | Arch::Jamba => 2 * self.d_inner,
            Arch::Mamba2 => 2 * self.d_inner + 2 * self.n_group * self.d_state + self.n_head,
        }
    }

    /// Conv-state floats per layer and sequence: (K−1)·conv_dim (llama.cpp's `n_embd_r`).
    pub fn conv_state_len(&self) -> usize {
        (self.d_conv - 1) * self.conv_dim()
    }

    /// SSM-state floats per layer and sequence: N·E (llama.cpp's `n_embd_s`).
    pub fn ssm_state_len(&self) -> usize {
        self.d_state * self.d_inner
    }

    /// Bytes of recurrent state per sequence (f32, every recurrent layer).
    pub fn state_bytes_per_sequence(&self) -> u64 {
        4 * self.n_recurrent_layers() as u64 * (self.conv_state_len() + self.ssm_state_len()) as u64
    }
}

/// The Jamba part of the hyperparameters: attention heads per layer, FFN width, experts.
fn jamba_hparams(file: &GgufFile, hp: &mut HParams) -> Result<()> {
    let n_layer = hp.n_layer;
    let hk = "jamba.attention.head_count";
    let n_head = positive(hk, req_u64(file, hk)?, MAX_DIM)?;
    if hp.n_embd % n_head != 0 {
        return Err(CoilError::new(
            ErrorCode::GgufInvalid,
            format!("jamba: embedding_length {} is not a multiple of attention.head_count {n_head}", hp.n_embd),
        ));
    }
    let kvk = "jamba.attention.head_count_kv";
    let kv: Vec<i64> = match file.get(kvk) {
        None => vec![n_head as i64; n_layer],
        Some(crate::gguf::GgufValue::Array(a)) => a
            .to_i64_vec()
            .ok_or_else(|| CoilError::new(ErrorCode::GgufInvalid, format!("{kvk} is not an array of integers")))?,
        Some(v) => vec![
            v.as_i64()
                .ok_or_else(|| CoilError::new(ErrorCode::GgufInvalid, format!("{kvk} is not an integer")))?;
            n_layer
        ],
    };
    if kv.len() != n_layer {
        return Err(CoilError::new(
            ErrorCode::GgufInvalid,
            format!("{kvk} has {} entries for {n_layer} layers", kv.len()),
        ));
    }
    let mut n_head_kv = Vec::with_capacity(n_layer);
    for (i, &h) in kv.iter().enumerate() {
        if h < 0 || h as u64 > n_head as u64 || (h > 0 && n_head % h as usize != 0) {
            return Err(CoilError::new(
                ErrorCode::GgufInvalid,
                format!("{kvk}[{i}] = {h}: must be 0 (a Mamba layer) or divide attention.head_count {n_head}"),
            ));
        }
        n_head_kv.push(h as usize);
    }
    let fk = "jamba.feed_forward_length";
    let n_ff = positive(fk, req_u64(file, fk)?, MAX_DIM)?;
    let moe: Vec<bool> = (0..n_layer).map(|i| file.tensor(&format!("blk.{i}.ffn_gate_inp.weight")).is_some()).collect();
    let (mut n_expert, mut n_expert_used) = (0, 0);
    if moe.iter().any(|&m| m) {
        let ek = "jamba.expert_count";
        n_expert = positive(ek, req_u64(file, ek)?, 4096)?;
        let uk = "jamba.expert_used_count";
        n_expert_used = positive(uk, req_u64(file, uk)?, n_expert as u64)?;
    }
    hp.n_head_attn = n_head;
    hp.n_head_kv = n_head_kv;
    hp.moe = moe;
    hp.n_ff = n_ff;
    hp.n_expert = n_expert;
    hp.n_expert_used = n_expert_used;
    Ok(())
}
