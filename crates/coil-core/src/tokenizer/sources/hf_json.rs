//! HF `tokenizers` JSON (`tokenizer.json`) with a byte-level BPE model to a [`TokenizerConfig`].
//!
//! Follows llama.cpp's converter: ids from `model.vocab` plus `added_tokens`; an added token that
//! is `special` (or looks special, like `<|...|>`) becomes a control token, any other added token a
//! user-defined one; ids missing from both become unused `[PAD{id}]` tokens. Merges may be
//! `"a b"` strings or `["a", "b"]` pairs. The pre-tokenizer is not derived from the JSON (it is
//! an explicit argument): llama.cpp identifies it by name.

use serde_json::Value;

use crate::error::Result;
use crate::tokenizer::config::{invalid, ModelKind, TokenType, TokenizerConfig};

/// Largest vocabulary accepted from JSON (guards the id -> token table against absurd ids).
const MAX_VOCAB: u64 = 1 << 24;

fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

impl TokenizerConfig {
    /// A `gpt2` tokenizer from the text of a `tokenizer.json` whose model is BPE.
    /// `pre` is the `tokenizer.ggml.pre` name to use (`Some("mpt")` for GPT-NeoX).
    pub fn from_hf_tokenizer_json(json: &str, pre: Option<&str>) -> Result<TokenizerConfig> {
        let root: Value = serde_json::from_str(json).map_err(|e| invalid(format!("tokenizer.json: {e}")))?;
        let model = root.get("model").ok_or_else(|| invalid("tokenizer.json has no model"))?;
        match model.get("type").and_then(Value::as_str) {
            Some("BPE") | None => {}
            Some(t) => return Err(invalid(format!("tokenizer.json model type {t} is not supported (only BPE)"))),
        }
        let vocab = model
            .get("vocab")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid("tokenizer.json model.vocab is not an object"))?;

        let mut by_id: Vec<Option<(String, TokenType)>> = Vec::new();
        let put = |id: u64, text: String, ty: TokenType, by_id: &mut Vec<Option<(String, TokenType)>>| -> Result<()> {
            if id >= MAX_VOCAB {
                return Err(invalid(format!("token id {id} is too large")));
            }
            let id = id as usize;
            if by_id.len() <= id {
                by_id.resize(id + 1, None);
            }
            by_id[id] = Some((text, ty));
            Ok(())
        };
        for (text, id) in vocab {
            let id = id.as_u64().ok_or_else(|| invalid(format!("vocab entry {text:?} has no integer id")))?;
            if by_id.get(id as usize).is_some_and(|x| x.is_some()) {
                return Err(invalid(format!("token id {id} appears twice in model.vocab")));
            }
            put(id, text.clone(), TokenType::Normal, &mut by_id)?;
        }
        if let Some(added) = root.get("added_tokens") {
            let added = added.as_array().ok_or_else(|| invalid("tokenizer.json added_tokens is not an array"))?;
            for a in added {
                let id = a.get("id").and_then(Value::as_u64).ok_or_else(|| invalid("an added token has no id"))?;
                let content = a
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("added token {id} has no content")))?;
                let special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
                let (text, ty) = if special || looks_special(content) {
                    (content.to_string(), TokenType::Control)
                } else {
                    (content.replace('▁', " "), TokenType::UserDefined)
                };
                put(id, text, ty, &mut by_id)?;
            }
        }

        let mut cfg = TokenizerConfig::new(ModelKind::Gpt2);
        cfg.tokens.reserve(by_id.len());
        cfg.token_types.reserve(by_id.len());
        for (i, e) in by_id.into_iter().enumerate() {
            let (t, ty) = e.unwrap_or_else(|| (format!("[PAD{i}]"), TokenType::Unused));
            cfg.tokens.push(t);
            cfg.token_types.push(ty);
        }

        let merges =
            model.get("merges").and_then(Value::as_array).ok_or_else(|| invalid("tokenizer.json has no merges"))?;
        cfg.merges.reserve(merges.len());
        for (i, m) in merges.iter().enumerate() {
            let s = match m {
                Value::String(s) => s.clone(),
                Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                    (Some(a), Some(b)) => format!("{a} {b}"),
                    _ => return Err(invalid(format!("merge {i} is not a pair of strings"))),
                },
                _ => return Err(invalid(format!("merge {i} is neither \"a b\" nor [a, b]"))),
            };
            cfg.merges.push(s);
        }

        // HF JSON names no BOS / EOS; leave them unset (llama.cpp's numeric defaults would be
        // arbitrary tokens here).
        cfg.bos = None;
        cfg.eos = None;
        cfg.add_bos = false;
        cfg.pre = pre.map(str::to_string);
        Ok(cfg)
    }
}
