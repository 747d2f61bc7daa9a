//! Reading `tokenizer.ggml.*` metadata from a GGUF file, with llama.cpp's defaults.

use super::config::{invalid, TokenType, TokenizerConfig};
use super::{pretok, ModelKind};
use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::{GgufFile, GgufValue};

pub const KEY_MODEL: &str = "tokenizer.ggml.model";
pub const KEY_PRE: &str = "tokenizer.ggml.pre";
pub const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
pub const KEY_SCORES: &str = "tokenizer.ggml.scores";
pub const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
pub const KEY_MERGES: &str = "tokenizer.ggml.merges";
pub const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
pub const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
pub const KEY_EOT: &str = "tokenizer.ggml.eot_token_id";
pub const KEY_EOM: &str = "tokenizer.ggml.eom_token_id";
pub const KEY_UNK: &str = "tokenizer.ggml.unknown_token_id";
pub const KEY_PAD: &str = "tokenizer.ggml.padding_token_id";
pub const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
pub const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
pub const KEY_ADD_PREFIX: &str = "tokenizer.ggml.add_space_prefix";

fn missing(key: &str) -> CoilError {
    CoilError::new(ErrorCode::MissingKey, format!("the file has no {key}"))
}

fn wrong_type(key: &str, want: &str, v: &GgufValue) -> CoilError {
    invalid(format!("{key} is {} where {want} was expected", v.type_name()))
}

impl TokenizerConfig {
    /// The tokenizer described by a GGUF file's metadata.
    ///
    /// Required: `tokenizer.ggml.model` (`gpt2` or `llama`), `.tokens`, and for `gpt2` `.merges`
    /// (a missing one is `MissingKey`). Optional, with llama.cpp's defaults when absent: `.scores`
    /// (0), `.token_type` (normal), `.bos_token_id` / `.eos_token_id` / `.unknown_token_id`
    /// (`llama`: 1 / 2 / 0; `gpt2`: 11 / 11 / none, kept only when inside the vocabulary),
    /// `.eot_token_id`, `.eom_token_id`, `.padding_token_id` (none), `.add_bos_token` (`llama`:
    /// true; `gpt2`: true only for the llama3 pre-tokenizers), `.add_eos_token` (false),
    /// `.add_space_prefix` (`llama`: true; `gpt2`: false), `.pre` (llama.cpp's default splitter).
    ///
    /// A value of the wrong type, an array whose length differs from the token count, or a token
    /// id given explicitly outside the vocabulary is `TokenizerInvalid` (llama.cpp warns and falls
    /// back to the default id instead). A negative id means "none".
    pub fn from_gguf(f: &GgufFile) -> Result<TokenizerConfig> {
        let model_name = match f.get(KEY_MODEL) {
            None => return Err(missing(KEY_MODEL)),
            Some(v) => v.as_str().ok_or_else(|| wrong_type(KEY_MODEL, "a string", v))?,
        };
        let model = ModelKind::from_name(model_name)
            .ok_or_else(|| invalid(format!("tokenizer model '{model_name}' is not supported (gpt2 and llama are)")))?;
        let mut cfg = TokenizerConfig::new(model);

        let pre = match f.get(KEY_PRE) {
            None => None,
            Some(v) => Some(v.as_str().ok_or_else(|| wrong_type(KEY_PRE, "a string", v))?.to_string()),
        };
        if model == ModelKind::Gpt2 {
            let info = pretok::pre_info(pre.as_deref())?;
            cfg.add_bos = info.add_bos;
            if info.no_bos {
                cfg.bos = None;
            }
        }
        cfg.pre = pre;
        cfg.model_name = f.get_str("general.name").map(str::to_string);

        let tokens = match f.get(KEY_TOKENS) {
            None => return Err(missing(KEY_TOKENS)),
            Some(v) => v
                .as_array()
                .and_then(|a| a.as_strings())
                .ok_or_else(|| wrong_type(KEY_TOKENS, "an array of strings", v))?,
        };
        let n = tokens.len();
        cfg.tokens = tokens.to_vec();

        if let Some(v) = f.get(KEY_SCORES) {
            let s =
                v.as_array().and_then(|a| a.as_f32s()).ok_or_else(|| wrong_type(KEY_SCORES, "an array of f32", v))?;
            if s.len() != n {
                return Err(invalid(format!("{KEY_SCORES} has {} entries for {n} tokens", s.len())));
            }
            cfg.scores = s.to_vec();
        }
        if let Some(v) = f.get(KEY_TOKEN_TYPE) {
            let t = v
                .as_array()
                .and_then(|a| a.to_i64_vec())
                .ok_or_else(|| wrong_type(KEY_TOKEN_TYPE, "an array of integers", v))?;
            if t.len() != n {
                return Err(invalid(format!("{KEY_TOKEN_TYPE} has {} entries for {n} tokens", t.len())));
            }
            cfg.token_types = t.into_iter().map(TokenType::from_i64).collect();
        }
        if model == ModelKind::Gpt2 {
            let v = f.get(KEY_MERGES).ok_or_else(|| missing(KEY_MERGES))?;
            let m = v
                .as_array()
                .and_then(|a| a.as_strings())
                .ok_or_else(|| wrong_type(KEY_MERGES, "an array of strings", v))?;
            cfg.merges = m.to_vec();
        }

        // Defaults that do not fit the vocabulary are dropped rather than refused.
        for id in [&mut cfg.bos, &mut cfg.eos, &mut cfg.unk] {
            if matches!(*id, Some(i) if i as usize >= n) {
                *id = None;
            }
        }
        for (key, slot) in [
            (KEY_BOS, &mut cfg.bos),
            (KEY_EOS, &mut cfg.eos),
            (KEY_EOT, &mut cfg.eot),
            (KEY_EOM, &mut cfg.eom),
            (KEY_UNK, &mut cfg.unk),
            (KEY_PAD, &mut cfg.pad),
        ] {
            let v = match f.get(key) {
                None => continue,
                Some(v) => v,
            };
            let id = v.as_i64().ok_or_else(|| wrong_type(key, "an integer", v))?;
            if id < 0 {
                *slot = None;
                continue;
            }
            if id as u64 >= n as u64 {
                return Err(invalid(format!("{key} = {id} is outside the vocabulary of {n} tokens")));
            }
            *slot = Some(id as u32);
        }
        for (key, slot) in [
            (KEY_ADD_BOS, &mut cfg.add_bos),
            (KEY_ADD_EOS, &mut cfg.add_eos),
            (KEY_ADD_PREFIX, &mut cfg.add_space_prefix),
        ] {
            if let Some(v) = f.get(key) {
                *slot = v.as_bool().ok_or_else(|| wrong_type(key, "a bool", v))?;
            }
        }
        Ok(cfg)
    }
}
