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
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Mamba => "mamba",
            Arch::Mamba2 => "mamba2",
        }
    }

    /// The architecture of `file`: `UnknownArchitecture` for anything but mamba/mamba2,
    /// `MissingKey` without `general.architecture`.
    pub fn of(file: &GgufFile) -> Result<Arch> {
        match file.get("general.architecture") {
            None => Err(CoilError::new(ErrorCode::MissingKey, "missing metadata key general.architecture")),
            Some(v) => match v.as_str() {
                Some("mamba") => Ok(Arch::Mamba),
                Some("mamba2") => Ok(Arch::Mamba2),
                Some("jamba") => Err(CoilError::new(ErrorCode::UnknownArchitecture, "jamba is not supported yet")),
                Some(a) => Err(CoilError::new(
                    ErrorCode::UnknownArchitecture,
                    format!("unknown model architecture {a:?}: coil runs mamba and mamba2"),
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
        };
        match arch {
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

    /// Channels through the conv: E (Mamba-1) or E + 2GN (Mamba-2).
    pub fn conv_dim(&self) -> usize {
        match self.arch {
            Arch::Mamba => self.d_inner,
            Arch::Mamba2 => self.d_inner + 2 * self.n_group * self.d_state,
        }
    }

    /// Rows of ssm_in: 2E (Mamba-1) or 2E + 2GN + H (Mamba-2).
    pub fn d_in_proj(&self) -> usize {
        match self.arch {
            Arch::Mamba => 2 * self.d_inner,
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

    /// Bytes of recurrent state per sequence (f32, all layers).
    pub fn state_bytes_per_sequence(&self) -> u64 {
        4 * self.n_layer as u64 * (self.conv_state_len() + self.ssm_state_len()) as u64
    }
}
