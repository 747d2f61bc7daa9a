//! The model configuration: HF `config.json`, state-spaces `config.json` (`ssm_cfg`) or Mistral's
//! `params.json`, to an architecture, with the key lookups every architecture's converter
//! (`archs/<arch>.rs`) uses to read its hyperparameters.
//!
//! Key lookups follow llama.cpp's converter: the first key of a list that is present wins
//! (`find_hparam`), and where it writes `find_hparam(...) or default`, a value Python would find
//! falsy (absent, `null`, `0`, `false`) takes the default ([`ModelConfig::int_or`]); where it
//! tests `is not None`, a present non-null value counts ([`ModelConfig::get`]). llama.cpp reads
//! `config.json` raw for Mamba, Mamba-2, Granite-hybrid/Bamba and Falcon-H1, and through
//! transformers' `AutoConfig` for Jamba, Nemotron-H and LFM2; for the latter each architecture file
//! supplies the transformers defaults of the keys it reads (so coil needs no Python) and accepts
//! both the transformers 4 and 5 spellings.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{CoilError, ErrorCode, Result};

/// The GGUF architectures the converter writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Mamba,
    Mamba2,
    Jamba,
    GraniteHybrid,
    NemotronH,
    NemotronHMoe,
    FalconH1,
    Lfm2,
    Lfm2Moe,
}

impl Arch {
    /// `general.architecture`.
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
}

/// HF architecture names and the GGUF architecture each becomes.
pub const SUPPORTED_ARCHITECTURES: &[(&str, Arch)] = &[
    ("MambaForCausalLM", Arch::Mamba),
    ("MambaLMHeadModel", Arch::Mamba),
    ("FalconMambaForCausalLM", Arch::Mamba),
    ("Mamba2ForCausalLM", Arch::Mamba2),
    ("JambaForCausalLM", Arch::Jamba),
    ("GraniteMoeHybridForCausalLM", Arch::GraniteHybrid),
    ("BambaForCausalLM", Arch::GraniteHybrid),
    // nemotron_h_moe when a layer is a MoE layer (see `archs::nemotron_h`).
    ("NemotronHForCausalLM", Arch::NemotronH),
    ("FalconH1ForCausalLM", Arch::FalconH1),
    ("Lfm2ForCausalLM", Arch::Lfm2),
    ("LFM2ForCausalLM", Arch::Lfm2),
    ("Lfm2MoeForCausalLM", Arch::Lfm2Moe),
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

fn cfg_err(source: ConfigSource, dir: &Path, msg: impl std::fmt::Display) -> CoilError {
    CoilError::new(ErrorCode::InvalidArgument, format!("{}: {msg}", dir.join(source.file_name()).display()))
}

fn names<S: AsRef<str>>(keys: &[S]) -> Vec<&str> {
    keys.iter().map(|k| k.as_ref()).collect()
}

/// `keys` followed by each with `prefix_` in front (llama.cpp's `hparam_prefixes`, as Granite-hybrid
/// and Falcon-H1 look their Mamba keys up).
pub fn with_prefix(keys: &[&str], prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    v.extend(keys.iter().map(|k| format!("{prefix}_{k}")));
    v
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
pub fn falsy(v: &Value) -> bool {
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
        let mut arch = arch_of(&hf_arch).ok_or_else(|| unknown_arch(&format!("architecture \"{hf_arch}\"")))?;
        if arch == Arch::NemotronH && super::archs::nemotron_h::is_moe(&raw) {
            arch = Arch::NemotronHMoe;
        }
        Ok(ModelConfig { source, hf_arch, arch, raw })
    }

    /// The first present key's value (llama.cpp's `find_hparam`), `null` included.
    pub fn find<S: AsRef<str>>(&self, keys: &[S]) -> Option<&Value> {
        keys.iter().find_map(|k| self.raw.get(k.as_ref()))
    }

    /// The first present key's value unless it is `null` (`find_hparam(...) is not None`).
    pub fn get<S: AsRef<str>>(&self, keys: &[S]) -> Option<&Value> {
        self.find(keys).filter(|v| !v.is_null())
    }

    /// Whether `key` is present with a value other than `null`.
    pub fn has(&self, key: &str) -> bool {
        self.raw.get(key).is_some_and(|v| !v.is_null())
    }

    /// `find_hparam(keys, optional=True) or default` for integers; non-integer values (like
    /// `"auto"`) count as absent.
    pub fn int_or<S: AsRef<str>>(&self, keys: &[S], default: u64) -> u64 {
        self.int_opt(keys).unwrap_or(default)
    }

    /// `find_hparam(keys, optional=True)` for an integer, `None` when falsy.
    pub fn int_opt<S: AsRef<str>>(&self, keys: &[S]) -> Option<u64> {
        match self.find(keys) {
            Some(v) if !falsy(v) => as_int(v),
            _ => None,
        }
    }

    /// `find_hparam(keys)`: a present integer (0 included).
    pub fn int_req<S: AsRef<str>>(&self, keys: &[S], dir: &Path) -> Result<u64> {
        match self.find(keys) {
            Some(v) => as_int(v).ok_or_else(|| {
                cfg_err(self.source, dir, format!("{:?}: {v} is not a non-negative integer", names(keys)))
            }),
            None => Err(missing_key(self.source, dir, &names(keys))),
        }
    }

    /// A present, non-null integer (0 included), like `hparams.get(key)` tested `is not None`.
    pub fn int_get<S: AsRef<str>>(&self, keys: &[S]) -> Option<u64> {
        self.get(keys).and_then(as_int)
    }

    pub fn float_or<S: AsRef<str>>(&self, keys: &[S], default: f64) -> f64 {
        self.float_opt(keys).unwrap_or(default)
    }

    /// A truthy number.
    pub fn float_opt<S: AsRef<str>>(&self, keys: &[S]) -> Option<f64> {
        match self.find(keys) {
            Some(v) if !falsy(v) => v.as_f64(),
            _ => None,
        }
    }

    /// A present non-null number (0 included).
    pub fn float_get<S: AsRef<str>>(&self, keys: &[S]) -> Option<f64> {
        self.get(keys).and_then(Value::as_f64)
    }

    pub fn bool_get(&self, key: &str) -> Option<bool> {
        self.raw.get(key).and_then(Value::as_bool)
    }

    /// A list of numbers (`ssm_multipliers`, ...).
    pub fn floats(&self, key: &str) -> Option<Vec<f64>> {
        self.raw.get(key)?.as_array()?.iter().map(Value::as_f64).collect()
    }

    /// A list of non-negative integers (`attn_layer_indices`, ...).
    pub fn ints(&self, key: &str) -> Option<Vec<u64>> {
        self.raw.get(key)?.as_array()?.iter().map(as_int).collect()
    }

    /// A list of strings (`layer_types`, ...).
    pub fn strings(&self, key: &str) -> Option<Vec<String>> {
        self.raw.get(key)?.as_array()?.iter().map(|v| v.as_str().map(str::to_string)).collect()
    }

    /// A key of the state-spaces `ssm_cfg` object.
    pub fn ssm_cfg_int(&self, key: &str) -> Option<u64> {
        self.raw.get("ssm_cfg").and_then(|s| s.get(key)).filter(|v| !falsy(v)).and_then(as_int)
    }

    pub fn str_of(&self, key: &str) -> Option<&str> {
        self.raw.get(key).and_then(Value::as_str)
    }

    /// A copy with `defaults` filled in for absent (or `null`) keys: what llama.cpp sees of a
    /// config it reads through transformers' `AutoConfig` (whose `to_dict()` has every key).
    pub fn with_defaults(&self, defaults: &[(&str, Value)]) -> ModelConfig {
        let mut c = self.clone();
        for (k, v) in defaults {
            if !c.has(k) {
                c.raw.insert(k.to_string(), v.clone());
            }
        }
        c
    }

    /// An error about this configuration file.
    pub fn err(&self, dir: &Path, msg: impl std::fmt::Display) -> CoilError {
        cfg_err(self.source, dir, msg)
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

pub fn as_int(v: &Value) -> Option<u64> {
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
    fn pad() {
        assert_eq!(pad_vocab(50277, 8), 50280);
        assert_eq!(pad_vocab(50277, 1), 50277);
    }

    #[test]
    fn python_json_literals() {
        let v = parse_json_lenient(r#"{"a": [0.0, Infinity, -Infinity, NaN], "s": "Infinity NaN", "b": 1}"#).unwrap();
        assert_eq!(v["a"], serde_json::json!([0.0, null, null, null]));
        assert_eq!(v["s"], "Infinity NaN");
        assert!(parse_json_lenient("{\"a\": Infinityx}").is_err());
    }
}
