//! The sampler configuration as the bindings pass it: one JSON string.
//!
//! Two forms (never both in one object):
//!
//! * **Options** — llama.cpp's `common_params_sampling` knobs; anything left out takes llama.cpp's
//!   default. Keys may be written camelCase or snake_case.
//!   ```json
//!   { "temperature": 0.8, "topK": 40, "topP": 0.95, "minP": 0.05, "typicalP": 1.0, "minKeep": 0,
//!     "repeatPenalty": 1.0, "frequencyPenalty": 0.0, "presencePenalty": 0.0, "penaltyLastN": 64,
//!     "logitBias": { "15043": -1.5, "2": false }, "seed": 42 }
//!   ```
//!   builds the chain `logit_bias → penalties → top_k → typical_p → top_p → min_p → temperature →
//!   dist`, llama.cpp's default order (`common_params_sampling::samplers`: penalties, DRY,
//!   top-n-sigma, top-k, typical, top-p, min-p, XTC, temperature; `common_sampler_init` puts the
//!   logit bias first and `dist` last; DRY, top-n-sigma and XTC are not implemented here and are
//!   off by default in llama.cpp). Stages that are disabled by their value are left out
//!   (top_k ≤ 0, typical_p ≥ 1, top_p ≥ 1, min_p ≤ 0, temperature = 1, neutral penalties).
//!   `temperature ≤ 0` means greedy: the chain is `logit_bias → penalties → greedy` (llama.cpp
//!   keeps the truncation stages and lets temperature 0 keep only the top token; the result is the
//!   same token except with typical_p < 1, which can drop the top token — ignored when greedy).
//!
//! * **Chain** — an explicit, ordered list of stages ending in exactly one `greedy` or `dist`:
//!   ```json
//!   { "chain": [
//!       { "type": "logit_bias", "bias": { "0": "-inf", "42": 2.5 } },
//!       { "type": "penalties", "lastN": 64, "repeat": 1.1, "frequency": 0.0, "presence": 0.0 },
//!       { "type": "top_k", "k": 40 },
//!       { "type": "typical_p", "p": 0.9, "minKeep": 1 },
//!       { "type": "top_p", "p": 0.95, "minKeep": 1 },
//!       { "type": "min_p", "p": 0.05, "minKeep": 1 },
//!       { "type": "temperature", "t": 0.8 },
//!       { "type": "dist", "seed": 42 } ] }
//!   ```
//!   Stage names also accept camelCase (`topK`, `logitBias`, ...), `typical` and `temp`.
//!
//! Values: `seed` is a non-negative integer below 2^64, as a JSON number or a decimal string (JS
//! numbers are exact only below 2^53). Without a seed one is picked at random (see
//! [`super::SamplerChain::seed`]). A logit bias maps token ids (object keys, or `[id, bias]` pairs
//! in an array) to a number, to `false` (ban: −∞, as llama-server), or to one of the strings
//! `"-inf"`, `"-infinity"`, `"inf"`, `"+inf"`, `"infinity"` (JSON has no infinities, and
//! `JSON.stringify(-Infinity)` is `null`, which is rejected rather than guessed).
//! `penalties.lastN`: the window of most recent history tokens; 0 disables, −1 means the whole
//! history. `repeat` must be > 0 (1 = off), as must a `temperature` stage's `t` be finite.

use serde::Deserialize;

use crate::error::{CoilError, ErrorCode, Result};

fn bad(msg: impl Into<String>) -> CoilError {
    CoilError::new(ErrorCode::InvalidArgument, msg)
}

/// A PRNG seed (a JSON number or a decimal string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed(pub u64);

impl<'de> Deserialize<'de> for Seed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Seed, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        match &v {
            serde_json::Value::Number(n) => n
                .as_u64()
                .map(Seed)
                .ok_or_else(|| D::Error::custom(format!("seed must be an integer in 0..2^64, got {n}"))),
            serde_json::Value::String(s) => s
                .trim()
                .parse::<u64>()
                .map(Seed)
                .map_err(|_| D::Error::custom(format!("seed must be an integer in 0..2^64, got {s:?}"))),
            other => Err(D::Error::custom(format!("seed must be an integer or a decimal string, got {other}"))),
        }
    }
}

/// Token id → additive bias, in the order given (a token listed twice gets both, in order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogitBias(pub Vec<(u32, f32)>);

fn bias_value(v: &serde_json::Value, id: u32) -> std::result::Result<f32, String> {
    match v {
        serde_json::Value::Number(n) => {
            let f = n.as_f64().ok_or_else(|| format!("logit bias of token {id}: {n} is not a number"))?;
            Ok(f as f32)
        }
        serde_json::Value::Bool(false) => Ok(f32::NEG_INFINITY),
        serde_json::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "-inf" | "-infinity" => Ok(f32::NEG_INFINITY),
            "inf" | "+inf" | "infinity" | "+infinity" => Ok(f32::INFINITY),
            _ => Err(format!("logit bias of token {id}: {s:?} is not a number, false, \"-inf\" or \"inf\"")),
        },
        other => Err(format!(
            "logit bias of token {id}: {other} is not a number, false (ban) or \"-inf\"/\"inf\" (note that \
             JSON.stringify turns ±Infinity into null)"
        )),
    }
}

fn bias_id(s: &str) -> std::result::Result<u32, String> {
    s.trim().parse::<u32>().map_err(|_| format!("logit bias key {s:?} is not a token id"))
}

impl<'de> Deserialize<'de> for LogitBias {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<LogitBias, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        let mut out = Vec::new();
        match v {
            serde_json::Value::Object(map) => {
                for (k, val) in map.iter() {
                    let id = bias_id(k).map_err(D::Error::custom)?;
                    out.push((id, bias_value(val, id).map_err(D::Error::custom)?));
                }
            }
            serde_json::Value::Array(items) => {
                for it in items {
                    let pair = it.as_array().filter(|a| a.len() == 2).ok_or_else(|| {
                        D::Error::custom(format!("logit bias entries must be [tokenId, bias] pairs, got {it}"))
                    })?;
                    let id = match &pair[0] {
                        serde_json::Value::Number(n) => n.as_u64().filter(|&x| x <= u32::MAX as u64).map(|x| x as u32),
                        serde_json::Value::String(s) => bias_id(s).ok(),
                        _ => None,
                    }
                    .ok_or_else(|| D::Error::custom(format!("logit bias: {} is not a token id", pair[0])))?;
                    out.push((id, bias_value(&pair[1], id).map_err(D::Error::custom)?));
                }
            }
            other => {
                return Err(D::Error::custom(format!(
                    "logitBias must be an object {{\"tokenId\": bias}} or an array of [tokenId, bias], got {other}"
                )))
            }
        }
        Ok(LogitBias(out))
    }
}

fn d_last_n() -> i64 {
    64
}
fn d_one() -> f64 {
    1.0
}
fn d_min_keep() -> u64 {
    1
}

/// One stage of an explicit chain. See the module documentation for the JSON.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StageConfig {
    /// Adds a bias to some tokens' logits (−∞ bans a token).
    #[serde(alias = "logitBias")]
    LogitBias { bias: LogitBias },
    /// Repetition penalties over the last `last_n` tokens of the history (llama.cpp semantics:
    /// a token seen `c` times gets its logit divided by `repeat` if positive, multiplied if not,
    /// then `c·frequency + presence` subtracted).
    Penalties {
        #[serde(default = "d_last_n", alias = "lastN")]
        last_n: i64,
        #[serde(default = "d_one")]
        repeat: f64,
        #[serde(default)]
        frequency: f64,
        #[serde(default)]
        presence: f64,
    },
    /// Keeps the `k` highest logits (k ≤ 0: no-op).
    #[serde(alias = "topK")]
    TopK { k: i64 },
    /// Nucleus: the smallest set of most likely tokens whose probability reaches `p` (≥ 1: no-op).
    #[serde(alias = "topP")]
    TopP {
        p: f64,
        #[serde(default = "d_min_keep", alias = "minKeep")]
        min_keep: u64,
    },
    /// Keeps tokens whose probability is at least `p` times the top token's (≤ 0: no-op).
    #[serde(alias = "minP")]
    MinP {
        p: f64,
        #[serde(default = "d_min_keep", alias = "minKeep")]
        min_keep: u64,
    },
    /// Locally typical sampling (≥ 1: no-op).
    #[serde(alias = "typicalP", alias = "typical")]
    TypicalP {
        p: f64,
        #[serde(default = "d_min_keep", alias = "minKeep")]
        min_keep: u64,
    },
    /// Divides the logits by `t`; `t ≤ 0` keeps only the most likely token.
    #[serde(alias = "temp")]
    Temperature {
        #[serde(alias = "temperature", alias = "temp")]
        t: f64,
    },
    /// Final choice: the most likely token (first in candidate order among equals).
    Greedy,
    /// Final choice: a draw from the softmax of the remaining candidates.
    Dist {
        #[serde(default)]
        seed: Option<Seed>,
    },
}

/// The sampler configuration: options (llama.cpp's knobs, defaults filled in) or an explicit
/// chain. See the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerConfig {
    #[serde(default)]
    pub chain: Option<Vec<StageConfig>>,
    #[serde(default, alias = "temp")]
    pub temperature: Option<f64>,
    #[serde(default, alias = "topK")]
    pub top_k: Option<i64>,
    #[serde(default, alias = "topP")]
    pub top_p: Option<f64>,
    #[serde(default, alias = "minP")]
    pub min_p: Option<f64>,
    #[serde(default, alias = "typicalP", alias = "typical")]
    pub typical_p: Option<f64>,
    #[serde(default, alias = "minKeep")]
    pub min_keep: Option<u64>,
    #[serde(default, alias = "repeatPenalty")]
    pub repeat_penalty: Option<f64>,
    #[serde(default, alias = "frequencyPenalty")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, alias = "presencePenalty")]
    pub presence_penalty: Option<f64>,
    #[serde(default, alias = "penaltyLastN", alias = "repeatLastN", alias = "repeat_last_n")]
    pub penalty_last_n: Option<i64>,
    #[serde(default, alias = "logitBias")]
    pub logit_bias: Option<LogitBias>,
    #[serde(default)]
    pub seed: Option<Seed>,
}

/// llama.cpp's defaults (`common_params_sampling`).
pub mod defaults {
    pub const TEMPERATURE: f64 = 0.8;
    pub const TOP_K: i64 = 40;
    pub const TOP_P: f64 = 0.95;
    pub const MIN_P: f64 = 0.05;
    pub const TYPICAL_P: f64 = 1.0;
    pub const MIN_KEEP: u64 = 0;
    pub const PENALTY_LAST_N: i64 = 64;
    pub const REPEAT_PENALTY: f64 = 1.0;
    pub const FREQUENCY_PENALTY: f64 = 0.0;
    pub const PRESENCE_PENALTY: f64 = 0.0;
}

impl SamplerConfig {
    /// Parses the JSON form (`InvalidArgument` with serde's message on a bad field).
    pub fn from_json(json: &str) -> Result<SamplerConfig> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        serde_json::from_str(json).map_err(|e| bad(format!("invalid sampler config: {e}")))
    }

    /// Greedy decoding, nothing else.
    pub fn greedy() -> SamplerConfig {
        SamplerConfig { chain: Some(vec![StageConfig::Greedy]), ..Default::default() }
    }

    fn has_options(&self) -> bool {
        self.temperature.is_some()
            || self.top_k.is_some()
            || self.top_p.is_some()
            || self.min_p.is_some()
            || self.typical_p.is_some()
            || self.min_keep.is_some()
            || self.repeat_penalty.is_some()
            || self.frequency_penalty.is_some()
            || self.presence_penalty.is_some()
            || self.penalty_last_n.is_some()
            || self.logit_bias.is_some()
            || self.seed.is_some()
    }

    /// The explicit stage list this configuration stands for (options expanded with llama.cpp's
    /// defaults and order).
    pub fn stages(&self) -> Result<Vec<StageConfig>> {
        if let Some(chain) = &self.chain {
            if self.has_options() {
                return Err(bad(
                    "invalid sampler config: give either \"chain\" or options (temperature, topK, ...), not both",
                ));
            }
            return Ok(chain.clone());
        }
        use defaults::*;
        let mut out = Vec::new();
        if let Some(b) = &self.logit_bias {
            if !b.0.is_empty() {
                out.push(StageConfig::LogitBias { bias: b.clone() });
            }
        }
        let (last_n, repeat, frequency, presence) = (
            self.penalty_last_n.unwrap_or(PENALTY_LAST_N),
            self.repeat_penalty.unwrap_or(REPEAT_PENALTY),
            self.frequency_penalty.unwrap_or(FREQUENCY_PENALTY),
            self.presence_penalty.unwrap_or(PRESENCE_PENALTY),
        );
        if last_n != 0 && (repeat != 1.0 || frequency != 0.0 || presence != 0.0) {
            out.push(StageConfig::Penalties { last_n, repeat, frequency, presence });
        } else if last_n < -1 || !repeat.is_finite() || repeat <= 0.0 {
            // Still validate neutral-looking values.
            out.push(StageConfig::Penalties { last_n, repeat, frequency, presence });
        }
        let t = self.temperature.unwrap_or(TEMPERATURE);
        if !t.is_finite() {
            return Err(bad("invalid sampler config: temperature must be a finite number"));
        }
        if t <= 0.0 {
            out.push(StageConfig::Greedy);
            return Ok(out);
        }
        let min_keep = self.min_keep.unwrap_or(MIN_KEEP);
        let k = self.top_k.unwrap_or(TOP_K);
        if k > 0 {
            out.push(StageConfig::TopK { k });
        }
        let typ = self.typical_p.unwrap_or(TYPICAL_P);
        if typ < 1.0 || typ.is_nan() {
            out.push(StageConfig::TypicalP { p: typ, min_keep });
        }
        let top_p = self.top_p.unwrap_or(TOP_P);
        if top_p < 1.0 || top_p.is_nan() {
            out.push(StageConfig::TopP { p: top_p, min_keep });
        }
        let min_p = self.min_p.unwrap_or(MIN_P);
        if min_p > 0.0 || min_p.is_nan() {
            out.push(StageConfig::MinP { p: min_p, min_keep });
        }
        if t != 1.0 {
            out.push(StageConfig::Temperature { t });
        }
        out.push(StageConfig::Dist { seed: self.seed });
        Ok(out)
    }
}
