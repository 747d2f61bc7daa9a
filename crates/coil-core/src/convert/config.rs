//! The model configuration: HF `config.json`, state-spaces `config.json` (`ssm_cfg`) or Mistral's
//! `params.json`, to an architecture and the hyperparameters the GGUF needs.
//!
//! Key lookups follow llama.cpp's converter (`conversion/mamba.py`, `conversion/jamba.py`): the
//! first key of a list that is present wins, and a value that Python would find falsy (absent,
//! `null`, `0`, `false`) takes the default. Where llama.cpp reads `config.json` raw (Mamba,
//! Mamba-2) its defaults apply; for Jamba it goes through transformers' `AutoConfig`, so the
//! defaults of `JambaConfig` apply to absent keys. Two additions that only matter where llama.cpp
//! would write a wrong file: state-spaces `ssm_cfg` keys (`d_state`, `d_conv`, `expand`,
//! `headdim`, `ngroups`) are read when the top level lacks them, and an HF `expand` sets the inner
//! size when no explicit one is given.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{CoilError, ErrorCode, Result};

/// The GGUF architectures the converter writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Mamba,
    Mamba2,
    Jamba,
}

impl Arch {
    /// `general.architecture`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Mamba => "mamba",
            Arch::Mamba2 => "mamba2",
            Arch::Jamba => "jamba",
        }
    }
}

/// HF architecture names and the GGUF architecture each becomes.
pub const SUPPORTED_ARCHITECTURES: &[(&str, Arch)] = &[
    ("MambaForCausalLM", Arch::Mamba),
    ("MambaLMHeadModel", Arch::Mamba),
    ("FalconMambaForCausalLM", Arch::Mamba),
    ("Mamba2ForCausalLM", Arch::Mamba2),
    ("JambaForCausalLM", Arch::Jamba),
];

/// Where the configuration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// `config.json` (HF or state-spaces).
    ConfigJson,
    /// Mistral's `params.json` (Mamba-Codestral's original layout).
    MistralParams,
}

impl ConfigSource {
    pub fn file_name(self) -> &'static str {
        match self {
            ConfigSource::ConfigJson => "config.json",
            ConfigSource::MistralParams => "params.json",
        }
    }
}

/// The raw configuration, with the architecture it names.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub source: ConfigSource,
    /// The HF architecture (from `architectures[0]`, `ssm_cfg.layer`, or inferred for params.json).
    pub hf_arch: String,
    pub arch: Arch,
    /// The JSON object (with `text_config` merged into the top level, as llama.cpp does).
    pub raw: Map<String, Value>,
}

/// Hyperparameters, resolved with the converter's key lists and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Hparams {
    pub d_model: u64,
    pub n_layer: u64,
    pub d_inner: u64,
    pub d_state: u64,
    pub d_conv: u64,
    /// Mamba-1 / Jamba: the dt rank. Mamba-2: unused (see `n_head`).
    pub dt_rank: u64,
    /// Mamba-2 only.
    pub n_group: u64,
    pub head_dim: u64,
    pub n_head: u64,
    pub eps: f32,
    /// `{arch}.context_length`.
    pub context_length: u64,
    /// FalconMamba: weightless RMS norms on dt, B and C.
    pub dt_b_c_rms: bool,
    /// FalconMamba: the eps of those norms (transformers' `mixer_rms_eps`, which differs from the
    /// layer norms' eps). llama.cpp has no key for it and uses the layer eps; coil writes
    /// `{arch}.ssm.dt_b_c_rms_epsilon` so its runtime matches transformers, and llama.cpp ignores it.
    pub dt_b_c_eps: Option<f32>,
    /// `vocab_size` from the config (before padding), if given.
    pub vocab_size: Option<u64>,
    /// The multiple llama.cpp pads the vocabulary to (Mamba 8, Mamba-2 16, Jamba none).
    pub pad_vocab_multiple: Option<u64>,
    pub jamba: Option<JambaParams>,
    /// Non-fatal observations (for the conversion report).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JambaParams {
    pub n_ff: u64,
    pub n_head: u64,
    pub n_kv_head: u64,
    pub attn_offset: u64,
    pub attn_period: u64,
    pub expert_offset: u64,
    pub expert_period: u64,
    pub n_expert: u64,
    pub n_expert_used: u64,
}

impl JambaParams {
    /// llama.cpp's `n_kv_vec`: `n_kv_head` on attention layers, 0 on Mamba layers.
    pub fn head_count_kv(&self, n_layer: u64) -> Vec<i32> {
        (0..n_layer)
            .map(|i| {
                let attn = i >= self.attn_offset && (i - self.attn_offset).is_multiple_of(self.attn_period.max(1));
                if attn {
                    self.n_kv_head as i32
                } else {
                    0
                }
            })
            .collect()
    }

    pub fn is_attention(&self, layer: u64) -> bool {
        layer >= self.attn_offset && (layer - self.attn_offset).is_multiple_of(self.attn_period.max(1))
    }

    /// llama.cpp's test for MoE layers: `bid >= offset and (bid - offset) % period == 0`.
    pub fn is_moe(&self, layer: u64) -> bool {
        layer >= self.expert_offset && (layer - self.expert_offset).is_multiple_of(self.expert_period.max(1))
    }
}

fn cfg_err(source: ConfigSource, dir: &Path, msg: impl std::fmt::Display) -> CoilError {
    CoilError::new(ErrorCode::InvalidArgument, format!("{}: {msg}", dir.join(source.file_name()).display()))
}

fn missing_key(source: ConfigSource, dir: &Path, keys: &[&str]) -> CoilError {
    CoilError::new(
        ErrorCode::MissingKey,
        format!("{}: none of the keys {keys:?} is set", dir.join(source.file_name()).display()),
    )
}

fn unknown_arch(what: &str) -> CoilError {
    let names: Vec<&str> = SUPPORTED_ARCHITECTURES.iter().map(|(n, _)| *n).collect();
    CoilError::new(
        ErrorCode::UnknownArchitecture,
        format!("{what} is not supported by the converter (supported: {})", names.join(", ")),
    )
}

fn arch_of(hf: &str) -> Option<Arch> {
    SUPPORTED_ARCHITECTURES.iter().find(|(n, _)| *n == hf).map(|(_, a)| *a)
}

/// A value Python's `or` would replace by the default.
fn falsy(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

impl ModelConfig {
    /// Reads `config.json`, or `params.json` when there is none, from `dir`.
    pub fn load(dir: &Path) -> Result<ModelConfig> {
        let (source, path) = if dir.join("config.json").is_file() {
            (ConfigSource::ConfigJson, dir.join("config.json"))
        } else if dir.join("params.json").is_file() {
            (ConfigSource::MistralParams, dir.join("params.json"))
        } else {
            return Err(CoilError::new(
                ErrorCode::InvalidArgument,
                format!("{}: no config.json (or Mistral params.json) found", dir.display()),
            ));
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| CoilError::new(ErrorCode::Io, format!("cannot read {}: {e}", path.display())))?;
        Self::from_json(&text, source, dir)
    }

    /// Parses configuration text (`dir` only names files in errors).
    pub fn from_json(text: &str, source: ConfigSource, dir: &Path) -> Result<ModelConfig> {
        let v: Value = parse_json_lenient(text).map_err(|e| cfg_err(source, dir, format!("not valid JSON: {e}")))?;
        let mut raw = v.as_object().cloned().ok_or_else(|| cfg_err(source, dir, "not a JSON object"))?;
        if let Some(llm) = raw.get("llm_config").cloned() {
            raw.insert("text_config".into(), llm);
        }
        let first_arch = |m: &Map<String, Value>| -> Option<String> {
            m.get("architectures")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let mut hf_arch = first_arch(&raw);
        if hf_arch.is_none() {
            if let Some(ssm) = raw.get("ssm_cfg") {
                let layer = ssm.get("layer").and_then(Value::as_str).unwrap_or("Mamba");
                hf_arch = Some(format!("{layer}ForCausalLM"));
            }
        }
        if let Some(tc) = raw.get("text_config").and_then(Value::as_object).cloned() {
            if let Some(a) = first_arch(&tc) {
                hf_arch = Some(a);
            }
            for (k, v) in tc {
                raw.insert(k, v);
            }
        }
        if hf_arch.is_none() && source == ConfigSource::MistralParams {
            // Mamba-Codestral's params.json names no architecture. Take it as Mamba-2 when it
            // describes a state-space model (llama.cpp has no route for this layout at all).
            let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("");
            let ssm_keys = ["n_groups", "ngroups", "d_state", "state_size", "headdim", "head_dim", "ssm_cfg"];
            if model_type.contains("mamba") || ssm_keys.iter().any(|k| raw.contains_key(*k)) {
                hf_arch = Some("Mamba2ForCausalLM".into());
            } else {
                return Err(unknown_arch("a Mistral params.json without state-space keys (a Transformer)"));
            }
        }
        let hf_arch = hf_arch.ok_or_else(|| {
            CoilError::new(
                ErrorCode::UnknownArchitecture,
                format!(
                    "{}: no \"architectures\" entry (or state-spaces \"ssm_cfg\"): cannot tell the model architecture",
                    dir.join(source.file_name()).display()
                ),
            )
        })?;
        let arch = arch_of(&hf_arch).ok_or_else(|| unknown_arch(&format!("architecture \"{hf_arch}\"")))?;
        Ok(ModelConfig { source, hf_arch, arch, raw })
    }

    /// The first present key's value (llama.cpp's `find_hparam`).
    fn find(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter().find_map(|k| self.raw.get(*k))
    }

    /// `find_hparam(keys, optional=True) or default` for integers; non-integer values (like
    /// `"auto"`) count as absent.
    fn int_or(&self, keys: &[&str], default: u64) -> u64 {
        match self.find(keys) {
            Some(v) if !falsy(v) => as_int(v).unwrap_or(default),
            _ => default,
        }
    }

    fn int_opt(&self, keys: &[&str]) -> Option<u64> {
        match self.find(keys) {
            Some(v) if !falsy(v) => as_int(v),
            _ => None,
        }
    }

    fn int_req(&self, keys: &[&str], dir: &Path) -> Result<u64> {
        match self.find(keys) {
            Some(v) => as_int(v)
                .ok_or_else(|| cfg_err(self.source, dir, format!("{keys:?}: {v} is not a non-negative integer"))),
            None => Err(missing_key(self.source, dir, keys)),
        }
    }

    fn float_or(&self, keys: &[&str], default: f64) -> f64 {
        match self.find(keys) {
            Some(v) if !falsy(v) => v.as_f64().unwrap_or(default),
            _ => default,
        }
    }

    /// A key of the state-spaces `ssm_cfg` object.
    fn ssm_cfg_int(&self, key: &str) -> Option<u64> {
        self.raw.get("ssm_cfg").and_then(|s| s.get(key)).filter(|v| !falsy(v)).and_then(as_int)
    }

    fn str_of(&self, key: &str) -> Option<&str> {
        self.raw.get(key).and_then(Value::as_str)
    }

    /// Resolves the hyperparameters for `self.arch`.
    pub fn hparams(&self, dir: &Path) -> Result<Hparams> {
        let hp = self.hparams_inner(dir)?;
        if hp.d_model == 0 || hp.d_inner == 0 {
            return Err(cfg_err(self.source, dir, "the hidden size and the inner size must be positive"));
        }
        if hp.d_model > u32::MAX as u64 || hp.d_inner > u32::MAX as u64 || hp.n_layer > u32::MAX as u64 {
            return Err(cfg_err(self.source, dir, "a dimension does not fit in 32 bits"));
        }
        Ok(hp)
    }

    fn hparams_inner(&self, dir: &Path) -> Result<Hparams> {
        let mut warnings = Vec::new();
        let n_layer = self.int_req(&["n_layers", "num_hidden_layers", "n_layer", "num_layers"], dir)?;
        let vocab_size = self.int_opt(&["vocab_size"]);
        let pad_multiple = |default: u64| match self.raw.get("pad_vocab_size_multiple") {
            // `hparams.get("pad_vocab_size_multiple", default)`: a present value is used as is.
            Some(v) => as_int(v).filter(|&m| m > 0).unwrap_or(default),
            None => default,
        };
        let eps_keys = ["layer_norm_epsilon", "rms_norm_eps"];
        match self.arch {
            Arch::Mamba => {
                let d_model = self.int_req(&["hidden_size", "d_model"], dir)?;
                let d_conv = self.int_opt(&["conv_kernel", "d_conv"]).or(self.ssm_cfg_int("d_conv")).unwrap_or(4);
                let expand = self.int_opt(&["expand"]).or(self.ssm_cfg_int("expand")).unwrap_or(2);
                let d_inner = self.int_opt(&["intermediate_size", "d_inner"]).unwrap_or(expand.saturating_mul(d_model));
                let d_state = self.int_opt(&["state_size", "d_state"]).or(self.ssm_cfg_int("d_state")).unwrap_or(16);
                let dt_rank = self.int_or(&["time_step_rank", "dt_rank"], d_model.div_ceil(16));
                let eps = self.float_or(&eps_keys, 1e-5) as f32;
                let falcon =
                    self.str_of("model_type") == Some("falcon_mamba") || self.hf_arch == "FalconMambaForCausalLM";
                if d_inner != d_model.saturating_mul(2) {
                    warnings.push(format!(
                        "d_inner {d_inner} is not 2 x d_model {d_model}: llama.cpp loads only Mamba models with an expansion factor of 2"
                    ));
                }
                Ok(Hparams {
                    d_model,
                    n_layer,
                    d_inner,
                    d_state,
                    d_conv,
                    dt_rank,
                    n_group: 0,
                    head_dim: 1,
                    n_head: d_inner,
                    eps,
                    context_length: 1 << 20,
                    dt_b_c_rms: falcon,
                    dt_b_c_eps: falcon.then(|| self.float_or(&["mixer_rms_eps"], 1e-6) as f32),
                    vocab_size,
                    pad_vocab_multiple: Some(pad_multiple(8)),
                    jamba: None,
                    warnings,
                })
            }
            Arch::Mamba2 => {
                let d_model = self.int_req(&["hidden_size", "d_model", "dim"], dir)?;
                let expand = self.int_opt(&["expand"]).or(self.ssm_cfg_int("expand")).unwrap_or(2);
                let d_inner = self
                    .int_opt(&["mamba_d_ssm", "intermediate_size", "d_inner"])
                    .unwrap_or(expand.saturating_mul(d_model));
                let n_group = self.int_opt(&["n_groups"]).or(self.ssm_cfg_int("ngroups")).unwrap_or(1);
                let d_conv = self.int_opt(&["conv_kernel", "d_conv"]).or(self.ssm_cfg_int("d_conv")).unwrap_or(4);
                let d_state = self.int_opt(&["state_size", "d_state"]).or(self.ssm_cfg_int("d_state")).unwrap_or(128);
                let head_dim =
                    self.int_opt(&["mamba_d_head", "head_dim"]).or(self.ssm_cfg_int("headdim")).unwrap_or(64);
                let eps = self.float_or(&eps_keys, 1e-5) as f32;
                if head_dim == 0 || !d_inner.is_multiple_of(head_dim) {
                    return Err(cfg_err(
                        self.source,
                        dir,
                        format!("the inner size {d_inner} is not a multiple of the head dim {head_dim}"),
                    ));
                }
                if n_group == 0 || !d_inner.is_multiple_of(n_group) {
                    return Err(cfg_err(
                        self.source,
                        dir,
                        format!("the inner size {d_inner} is not a multiple of the group count {n_group}"),
                    ));
                }
                let n_head = d_inner / head_dim;
                if let Some(h) = self.int_opt(&["num_heads"]) {
                    if h != n_head {
                        return Err(cfg_err(
                            self.source,
                            dir,
                            format!("num_heads {h} contradicts inner size {d_inner} / head dim {head_dim} = {n_head}"),
                        ));
                    }
                }
                if !n_head.is_multiple_of(n_group) {
                    return Err(cfg_err(
                        self.source,
                        dir,
                        format!("{n_head} heads cannot be split into {n_group} groups"),
                    ));
                }
                if d_inner != d_model.saturating_mul(2) {
                    warnings.push(format!(
                        "d_inner {d_inner} is not 2 x d_model {d_model}: llama.cpp's converter refuses such Mamba-2 models"
                    ));
                }
                Ok(Hparams {
                    d_model,
                    n_layer,
                    d_inner,
                    d_state,
                    d_conv,
                    dt_rank: n_head,
                    n_group,
                    head_dim,
                    n_head,
                    eps,
                    context_length: 1 << 20,
                    dt_b_c_rms: false,
                    dt_b_c_eps: None,
                    vocab_size,
                    pad_vocab_multiple: Some(pad_multiple(16)),
                    jamba: None,
                    warnings,
                })
            }
            Arch::Jamba => {
                // transformers' JambaConfig defaults stand in for absent keys (llama.cpp reads the
                // config through AutoConfig).
                let d_model = self.int_opt(&["hidden_size", "mamba_d_model"]).unwrap_or(4096);
                let d_conv = self.int_or(&["mamba_d_conv"], 4);
                let expand = self.int_opt(&["mamba_expand"]).unwrap_or(2);
                let d_inner = expand.saturating_mul(d_model);
                let d_state = self.int_or(&["mamba_d_state"], 16);
                let dt_rank = self.int_or(&["mamba_dt_rank"], d_model.div_ceil(16));
                let eps = self.float_or(&eps_keys, 1e-6) as f32;
                let n_head = self.int_opt(&["num_attention_heads"]).unwrap_or(32);
                let n_kv_head = match self.raw.get("num_key_value_heads") {
                    Some(Value::Null) => n_head,
                    Some(v) => as_int(v).unwrap_or(8),
                    None => 8,
                };
                let jp = JambaParams {
                    n_ff: self.int_opt(&["intermediate_size"]).unwrap_or(14336),
                    n_head,
                    n_kv_head,
                    attn_offset: self.int_opt(&["attn_layer_offset"]).unwrap_or(4),
                    attn_period: self.int_opt(&["attn_layer_period"]).unwrap_or(8),
                    expert_offset: self.int_opt(&["expert_layer_offset"]).unwrap_or(1),
                    expert_period: self.int_opt(&["expert_layer_period"]).unwrap_or(2),
                    n_expert: self.int_opt(&["num_experts", "num_local_experts"]).unwrap_or(16),
                    n_expert_used: self.int_opt(&["num_experts_per_tok"]).unwrap_or(2),
                };
                if jp.attn_period == 0 || jp.expert_period == 0 {
                    return Err(cfg_err(
                        self.source,
                        dir,
                        "attn_layer_period and expert_layer_period must be positive",
                    ));
                }
                if n_head == 0 || !d_model.is_multiple_of(n_head) {
                    return Err(cfg_err(
                        self.source,
                        dir,
                        format!("hidden size {d_model} is not a multiple of num_attention_heads {n_head}"),
                    ));
                }
                if d_inner != d_model.saturating_mul(2) {
                    warnings.push(format!(
                        "mamba_expand is {expand}: llama.cpp loads only Jamba models with an expansion factor of 2"
                    ));
                }
                let context_length = self.int_opt(&["max_position_embeddings", "n_ctx"]).unwrap_or(262144);
                Ok(Hparams {
                    d_model,
                    n_layer,
                    d_inner,
                    d_state,
                    d_conv,
                    dt_rank,
                    n_group: 0,
                    head_dim: 1,
                    n_head: d_inner,
                    eps,
                    context_length,
                    dt_b_c_rms: false,
                    dt_b_c_eps: None,
                    vocab_size: vocab_size.or(Some(65536)),
                    pad_vocab_multiple: None,
                    jamba: Some(jp),
                    warnings,
                })
            }
        }
    }

    /// `tie_word_embeddings` / `tie_embeddings`, if stated.
    pub fn tied_embeddings(&self) -> Option<bool> {
        self.find(&["tie_word_embeddings", "tie_embeddings"]).and_then(Value::as_bool)
    }
}

/// Parses JSON that may hold Python's non-standard `NaN`, `Infinity` and `-Infinity` literals
/// (`json.dump` writes them; transformers' Mamba-2 `config.json` has
/// `"time_step_limit": [0.0, Infinity]`). Those become `null`; nothing the converter reads is one.
pub fn parse_json_lenient(text: &str) -> serde_json::Result<Value> {
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(e) => {
            let fixed = replace_nonfinite(text);
            if fixed == text {
                Err(e)
            } else {
                serde_json::from_str(&fixed)
            }
        }
    }
}

fn replace_nonfinite(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let (mut i, mut start) = (0usize, 0usize);
    let mut in_str = false;
    while i < b.len() {
        let c = b[i];
        if in_str {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == b'"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        if c == b'"' {
            in_str = true;
            i += 1;
            continue;
        }
        let prev_ok = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        let lit = ["-Infinity", "Infinity", "NaN"].into_iter().find(|l| b[i..].starts_with(l.as_bytes()));
        if let (true, Some(l)) = (prev_ok, lit) {
            let after = b.get(i + l.len()).copied();
            if !after.map(|a| a.is_ascii_alphanumeric() || a == b'_').unwrap_or(false) {
                out.push_str(&text[start..i]);
                out.push_str("null");
                i += l.len();
                start = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&text[start..]);
    out
}

fn as_int(v: &Value) -> Option<u64> {
    if let Some(u) = v.as_u64() {
        return Some(u);
    }
    match v.as_f64() {
        Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 => Some(f as u64),
        _ => None,
    }
}

/// `vocab_size` rounded up to a multiple of `m` (llama.cpp's `-(v // -m) * m`).
pub fn pad_vocab(v: u64, m: u64) -> u64 {
    if m <= 1 {
        v
    } else {
        v.div_ceil(m) * m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(s: &str) -> Result<ModelConfig> {
        ModelConfig::from_json(s, ConfigSource::ConfigJson, Path::new("/m"))
    }

    #[test]
    fn architectures() {
        assert_eq!(cfg(r#"{"architectures":["MambaForCausalLM"]}"#).unwrap().arch, Arch::Mamba);
        assert_eq!(cfg(r#"{"architectures":["FalconMambaForCausalLM"]}"#).unwrap().arch, Arch::Mamba);
        assert_eq!(cfg(r#"{"ssm_cfg":{}}"#).unwrap().arch, Arch::Mamba);
        assert_eq!(cfg(r#"{"ssm_cfg":{"layer":"Mamba2"}}"#).unwrap().arch, Arch::Mamba2);
        let e = cfg(r#"{"architectures":["LlamaForCausalLM"]}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownArchitecture);
        assert!(e.message.contains("LlamaForCausalLM") && e.message.contains("JambaForCausalLM"));
        assert_eq!(cfg("{}").unwrap_err().code, ErrorCode::UnknownArchitecture);
        let p = ModelConfig::from_json(
            r#"{"dim":64,"n_layers":2,"n_groups":2}"#,
            ConfigSource::MistralParams,
            Path::new("/m"),
        )
        .unwrap();
        assert_eq!(p.arch, Arch::Mamba2);
    }

    #[test]
    fn mamba_defaults() {
        let c = cfg(
            r#"{"architectures":["MambaForCausalLM"],"hidden_size":40,"num_hidden_layers":3,"time_step_rank":"auto"}"#,
        )
        .unwrap();
        let h = c.hparams(Path::new("/m")).unwrap();
        assert_eq!((h.d_inner, h.d_state, h.d_conv, h.dt_rank), (80, 16, 4, 3));
        assert_eq!(h.pad_vocab_multiple, Some(8));
        assert_eq!(pad_vocab(50277, 8), 50280);
    }

    #[test]
    fn python_json_literals() {
        let v = parse_json_lenient(r#"{"a": [0.0, Infinity, -Infinity, NaN], "s": "Infinity NaN", "b": 1}"#).unwrap();
        assert_eq!(v["a"], serde_json::json!([0.0, null, null, null]));
        assert_eq!(v["s"], "Infinity NaN");
        assert!(parse_json_lenient("{\"a\": Infinityx}").is_err());
    }
}
