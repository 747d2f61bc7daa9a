//! Tokenizer files to `tokenizer.*` GGUF metadata, as llama.cpp's converter writes it
//! (`conversion/base.py` `_set_vocab_gpt2`, `_set_vocab_sentencepiece`, `_set_vocab_llama_hf`;
//! `gguf-py/gguf/vocab.py` `SpecialVocab`, `LlamaHfVocab`).
//!
//! Which file, per architecture (the reference converter's order):
//! * `mamba`: `tokenizer.json` (BPE), else `tokenizer.model` (SentencePiece).
//! * `mamba2`: `tokenizer.model`, else `tokenizer.model.v3` (Mamba-Codestral; llama.cpp stops
//!   and asks for a rename), else `tokenizer.json`.
//! * `jamba`: `tokenizer.model`, else `tokenizer.json`.
//! * `granitehybrid` (Mamba-2's order): `tokenizer.model`, else `tokenizer.model.v3`, else
//!   `tokenizer.json`.
//! * `nemotron_h`, `nemotron_h_moe`, `falcon-h1`, `lfm2`, `lfm2moe`: `tokenizer.json` (llama.cpp
//!   reads nothing else for them; coil falls back to `tokenizer.model`).
//! * none of them: no tokenizer keys and a warning (llama.cpp falls back to a GPT-NeoX vocabulary
//!   bundled with it, which coil does not ship).
//!
//! A `tokenizer.json` is read as byte-level BPE (`gpt2`) unless its BPE model has `byte_fallback`
//! (a SentencePiece vocabulary in HF form), which becomes a `llama` vocabulary as
//! `LlamaHfVocab` does.
//!
//! Decisions where coil departs from the reference (each where llama.cpp would write a file that
//! tokenizes wrongly, or would refuse):
//! * `tokenizer.ggml.pre` for a BPE vocabulary: llama.cpp hashes the tokenization of a fixed text
//!   by the HF library and refuses unknown hashes. coil reads the `pre_tokenizer` of
//!   `tokenizer.json` instead and writes the name whose splitting rules match it: a plain
//!   `ByteLevel` pre-tokenizer (GPT-2's regex; GPT-NeoX, the Mamba vocabulary) gives `gpt-2`, which
//!   llama.cpp splits exactly as `mpt` / `olmo` (what it writes for GPT-NeoX); the Llama-3 split
//!   gives `llama-bpe`; `Digits` + `ByteLevel` gives `starcoder`. Anything else is refused. A
//!   Llama-3 split is written under the name llama.cpp's table gives that model family (all of them
//!   tokenize alike there): `falcon-h1` for Falcon-H1, `lfm2` for LFM2, `pixtral` for Nemotron-H,
//!   and `dbrx` for Granite-hybrid models whose BPE does not ignore merges (Granite-4's
//!   GPT-4-style vocabulary; a Llama-3 vocabulary, as Bamba's, stays `llama-bpe`).
//! * SentencePiece pieces of type USER_DEFINED keep that type (llama.cpp writes NORMAL), so that
//!   they are matched whole as SentencePiece does.
//! * `byte_fallback` BPE from `tokenizer.json`: scores come from the merge ranks (the token made by
//!   merge r scores -r) instead of llama.cpp's constant -1000, which would merge left to right.
//! * BOS / EOS / UNK ids that no JSON file gives are taken from the SentencePiece trainer spec.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use super::config::Arch;
use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::{GgufArray, GgufValue};
use crate::tokenizer::sources::SentencePieceModel;
use crate::tokenizer::{TokenType, TokenizerConfig};

/// The tokenizer metadata to write, and what it came from.
#[derive(Debug, Clone)]
pub struct VocabOut {
    pub metadata: Vec<(String, GgufValue)>,
    /// The file the vocabulary came from (`tokenizer.json`, `tokenizer.model`, ...).
    pub source: String,
    /// `gpt2` or `llama`.
    pub model: &'static str,
    pub pre: Option<String>,
    pub n_tokens: usize,
    pub warnings: Vec<String>,
}

fn tok_err(path: &Path, msg: impl std::fmt::Display) -> CoilError {
    CoilError::new(ErrorCode::TokenizerInvalid, format!("{}: {msg}", path.display()))
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| CoilError::new(ErrorCode::Io, format!("cannot read {}: {e}", path.display())))?;
    let v = super::config::parse_json_lenient(&text).map_err(|e| tok_err(path, format!("not valid JSON: {e}")))?;
    Ok(Some(v))
}

/// Builds the tokenizer metadata for a model of `arch` whose embedding has `n_vocab` rows, or
/// `None` (with the reason in `warnings`) when the directory has no tokenizer files.
pub fn build(dir: &Path, arch: Arch, n_vocab: u64, warnings: &mut Vec<String>) -> Result<Option<VocabOut>> {
    let json = dir.join("tokenizer.json");
    let spm = dir.join("tokenizer.model");
    let spm3 = dir.join("tokenizer.model.v3");
    let order: &[&Path] = match arch {
        Arch::Mamba => &[&json, &spm],
        Arch::Mamba2 => &[&spm, &spm3, &json],
        Arch::Jamba => &[&spm, &json],
        Arch::GraniteHybrid => &[&spm, &spm3, &json],
        Arch::NemotronH | Arch::NemotronHMoe | Arch::FalconH1 | Arch::Lfm2 | Arch::Lfm2Moe => &[&json, &spm],
    };
    let Some(path) = order.iter().find(|p| p.is_file()) else {
        warnings.push(format!(
            "{}: no tokenizer.json or tokenizer.model: the GGUF has no tokenizer (llama.cpp's converter would add its bundled GPT-NeoX vocabulary); use token ids",
            dir.display()
        ));
        return Ok(None);
    };
    let mut out = if path.extension().and_then(|e| e.to_str()) == Some("json") {
        let v = read_json(path)?.unwrap_or(Value::Null);
        let byte_fallback = v.pointer("/model/byte_fallback").and_then(Value::as_bool).unwrap_or(false);
        if byte_fallback {
            llama_hf(dir, path, &v, arch, n_vocab)?
        } else {
            gpt2(dir, path, &v, arch, n_vocab)?
        }
    } else {
        sentencepiece(dir, path, n_vocab)?
    };
    warnings.append(&mut out.warnings);
    Ok(Some(out))
}

/// The `tokenizer.ggml.pre` name for a byte-level BPE `tokenizer.json` (see the module docs).
pub fn gpt2_pre_name(tokenizer_json: &Value) -> std::result::Result<&'static str, String> {
    const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    const LLAMA3_RE: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    let pt = tokenizer_json.get("pre_tokenizer").unwrap_or(&Value::Null);
    let ty = |v: &Value| v.get("type").and_then(Value::as_str).unwrap_or("").to_string();
    let byte_level = |v: &Value, want_regex: bool| -> bool {
        ty(v) == "ByteLevel"
            && !v.get("add_prefix_space").and_then(Value::as_bool).unwrap_or(false)
            && v.get("use_regex").and_then(Value::as_bool).unwrap_or(true) == want_regex
    };
    let split_regex = |v: &Value| -> Option<String> {
        (ty(v) == "Split").then(|| v.pointer("/pattern/Regex").and_then(Value::as_str).map(str::to_string)).flatten()
    };
    if byte_level(pt, true) {
        return Ok("gpt-2");
    }
    if ty(pt) == "Sequence" {
        let items: Vec<&Value> =
            pt.get("pretokenizers").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
        match items.as_slice() {
            [s, b] if byte_level(b, false) => match split_regex(s).as_deref() {
                Some(GPT2_RE) => return Ok("gpt-2"),
                Some(LLAMA3_RE) => return Ok("llama-bpe"),
                _ => {}
            },
            [d, b]
                if ty(d) == "Digits"
                    && d.get("individual_digits").and_then(Value::as_bool) == Some(true)
                    && byte_level(b, true) =>
            {
                return Ok("starcoder")
            }
            [b] if byte_level(b, true) => return Ok("gpt-2"),
            _ => {}
        }
    }
    Err(format!(
        "its pre_tokenizer {} matches none of the splitting rules coil knows (ByteLevel with GPT-2's regex, Llama-3's Split + ByteLevel, Digits + ByteLevel); llama.cpp's converter would also stop here",
        serde_json::to_string(pt).unwrap_or_default()
    ))
}

/// The name llama.cpp gives a byte-level BPE with `pre` splitting in the family of `arch` (see the
/// module docs).
pub fn family_pre_name(arch: Arch, pre: &'static str, tokenizer_json: &Value) -> &'static str {
    if pre != "llama-bpe" {
        return pre;
    }
    let ignore_merges = tokenizer_json.pointer("/model/ignore_merges").and_then(Value::as_bool).unwrap_or(false);
    match arch {
        Arch::FalconH1 => "falcon-h1",
        Arch::Lfm2 | Arch::Lfm2Moe => "lfm2",
        Arch::NemotronH | Arch::NemotronHMoe => "pixtral",
        Arch::GraniteHybrid if !ignore_merges => "dbrx",
        _ => pre,
    }
}

/// `_set_vocab_gpt2`: a byte-level BPE vocabulary.
fn gpt2(dir: &Path, path: &Path, v: &Value, arch: Arch, n_vocab: u64) -> Result<VocabOut> {
    let mut warnings = Vec::new();
    match v.pointer("/model/type").and_then(Value::as_str) {
        Some("BPE") | None => {}
        Some(t) => return Err(tok_err(path, format!("the tokenizer model is {t}; only BPE vocabularies convert"))),
    }
    let pre = family_pre_name(arch, gpt2_pre_name(v).map_err(|m| tok_err(path, m))?, v);
    let text = serde_json::to_string(v).unwrap_or_default();
    let cfg = TokenizerConfig::from_hf_tokenizer_json(&text, Some(pre)).map_err(|mut e| {
        e.message = format!("{}: {}", path.display(), e.message);
        e
    })?;
    if cfg.tokens.len() as u64 > n_vocab {
        return Err(tok_err(
            path,
            format!("the vocabulary has {} tokens but the model's embedding only {n_vocab} rows", cfg.tokens.len()),
        ));
    }
    let mut tokens = cfg.tokens;
    let mut types: Vec<i32> = cfg.token_types.iter().map(|t| *t as i32).collect();
    for i in tokens.len()..n_vocab as usize {
        tokens.push(format!("[PAD{i}]"));
        types.push(TokenType::Unused as i32);
    }
    if v.get("normalizer").map(|n| !n.is_null()).unwrap_or(false) {
        let kind = v.pointer("/normalizer/type").and_then(Value::as_str).unwrap_or("?");
        warnings.push(format!(
            "{}: the tokenizer's {kind} normalizer is not applied by llama.cpp or coil (text is tokenized as given)",
            path.display()
        ));
    }
    if v.pointer("/pre_tokenizer/add_prefix_space").and_then(Value::as_bool) == Some(true) {
        warnings.push(format!("{}: add_prefix_space is not supported by llama.cpp's BPE tokenizers", path.display()));
    }
    let n = tokens.len();
    let mut md: Vec<(String, GgufValue)> = vec![
        ("tokenizer.ggml.model".into(), "gpt2".into()),
        ("tokenizer.ggml.pre".into(), pre.into()),
        ("tokenizer.ggml.tokens".into(), GgufValue::Array(GgufArray::String(tokens))),
        ("tokenizer.ggml.token_type".into(), GgufValue::Array(GgufArray::I32(types))),
    ];
    let sv = SpecialVocab::load(dir, Some(v), true, n, &mut warnings)?;
    sv.add_to(&mut md);
    Ok(VocabOut {
        metadata: md,
        source: file_name(path),
        model: "gpt2",
        pre: Some(pre.to_string()),
        n_tokens: n,
        warnings,
    })
}

/// `_set_vocab_sentencepiece` (also for Mistral's `tokenizer.model.v3`).
fn sentencepiece(dir: &Path, path: &Path, n_vocab: u64) -> Result<VocabOut> {
    let mut warnings = Vec::new();
    let bytes = std::fs::read(path)
        .map_err(|e| CoilError::new(ErrorCode::Io, format!("cannot read {}: {e}", path.display())))?;
    let m = SentencePieceModel::parse(&bytes).map_err(|mut e| {
        e.message = format!("{}: {}", path.display(), e.message);
        e
    })?;
    if m.model_type != 2 {
        warnings.push(format!(
            "{}: SentencePiece model type {} is not BPE; llama.cpp's SentencePiece tokenizer only approximates it",
            path.display(),
            m.model_type
        ));
    }
    let n = n_vocab as usize;
    let mut tokens: Vec<String> = (0..n).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000.0f32; n];
    let mut types = vec![TokenType::Unused as i32; n];
    if m.pieces.len() > n {
        warnings.push(format!(
            "{}: the {} pieces beyond the {n} embedding rows are left out",
            path.display(),
            m.pieces.len() - n
        ));
    }
    for (i, p) in m.pieces.iter().enumerate().take(n) {
        tokens[i] = p.piece.clone();
        scores[i] = p.score;
        types[i] = match p.kind {
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Normal,
        } as i32;
    }
    // added_tokens.json and tokenizer_config.json's added_tokens_decoder.
    if let Some(added) = read_json(&dir.join("added_tokens.json"))? {
        if let Some(obj) = added.as_object() {
            for (text, id) in obj {
                match id.as_u64() {
                    Some(id) if (id as usize) < n => {
                        tokens[id as usize] = text.clone();
                        scores[id as usize] = -1000.0;
                        types[id as usize] = TokenType::UserDefined as i32;
                    }
                    _ => warnings.push(format!(
                        "added_tokens.json: token {text:?} (id {id}) is outside the vocabulary; ignored"
                    )),
                }
            }
        }
    }
    if let Some(tc) = read_json(&dir.join("tokenizer_config.json"))? {
        if let Some(dec) = tc.get("added_tokens_decoder").and_then(Value::as_object) {
            for (id, data) in dec {
                let Some(id) = id.parse::<usize>().ok().filter(|&i| i < n) else {
                    warnings
                        .push(format!("tokenizer_config.json: added token id {id} is outside the vocabulary; ignored"));
                    continue;
                };
                let Some(content) = data.get("content").and_then(Value::as_str) else { continue };
                let special = data.get("special").and_then(Value::as_bool).unwrap_or(false);
                if special || looks_special(content) {
                    tokens[id] = content.to_string();
                    types[id] = TokenType::Control as i32;
                } else {
                    tokens[id] = content.replace('\u{2581}', " ");
                    types[id] = TokenType::UserDefined as i32;
                }
                scores[id] = -1000.0;
            }
        }
    }
    let mut md: Vec<(String, GgufValue)> = vec![
        ("tokenizer.ggml.model".into(), "llama".into()),
        ("tokenizer.ggml.pre".into(), "default".into()),
        ("tokenizer.ggml.tokens".into(), GgufValue::Array(GgufArray::String(tokens))),
        ("tokenizer.ggml.scores".into(), GgufValue::Array(GgufArray::F32(scores))),
        ("tokenizer.ggml.token_type".into(), GgufValue::Array(GgufArray::I32(types))),
    ];
    let tj = read_json(&dir.join("tokenizer.json"))?;
    let mut sv = SpecialVocab::load(dir, tj.as_ref(), false, n, &mut warnings)?;
    // The trainer spec's ids where no JSON file names them.
    for (typ, id) in [("bos", m.bos_id), ("eos", m.eos_id), ("unk", m.unk_id)] {
        if id >= 0 && (id as usize) < n && !sv.ids.iter().any(|(t, _)| *t == typ) {
            sv.ids.push((typ, id as u32));
        }
    }
    sv.add_to(&mut md);
    if !m.add_dummy_prefix {
        md.push(("tokenizer.ggml.add_space_prefix".into(), GgufValue::Bool(false)));
    }
    Ok(VocabOut {
        metadata: md,
        source: file_name(path),
        model: "llama",
        pre: Some("default".into()),
        n_tokens: n,
        warnings,
    })
}

/// `_set_vocab_llama_hf`: a SentencePiece-style (`byte_fallback`) BPE from `tokenizer.json`.
fn llama_hf(dir: &Path, path: &Path, v: &Value, arch: Arch, n_vocab: u64) -> Result<VocabOut> {
    let mut warnings = Vec::new();
    let model = v.get("model").ok_or_else(|| tok_err(path, "no model"))?;
    let vocab =
        model.get("vocab").and_then(Value::as_object).ok_or_else(|| tok_err(path, "model.vocab is not an object"))?;
    let n = n_vocab as usize;
    let mut by_id: Vec<Option<String>> = vec![None; n];
    for (text, id) in vocab {
        let id = id.as_u64().ok_or_else(|| tok_err(path, format!("vocab entry {text:?} has no integer id")))? as usize;
        if id >= n {
            return Err(tok_err(path, format!("token id {id} is outside the {n} embedding rows")));
        }
        by_id[id] = Some(text.clone());
    }
    let base = vocab.len();
    // Merge ranks -> scores.
    let mut score_of: HashMap<String, f32> = HashMap::new();
    if let Some(merges) = model.get("merges").and_then(Value::as_array) {
        for (r, m) in merges.iter().enumerate() {
            let joined = match m {
                Value::String(s) => s.replacen(' ', "", 1),
                Value::Array(p) if p.len() == 2 => {
                    format!("{}{}", p[0].as_str().unwrap_or(""), p[1].as_str().unwrap_or(""))
                }
                _ => continue,
            };
            score_of.entry(joined).or_insert(-(r as f32));
        }
    }
    let tc = read_json(&dir.join("tokenizer_config.json"))?;
    let mut specials: Vec<String> = Vec::new();
    for k in ["bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"] {
        if let Some(c) = tc.as_ref().and_then(|t| t.get(k)).and_then(token_content) {
            specials.push(c.to_string());
        }
    }
    let mut added_types: HashMap<usize, (String, bool)> = HashMap::new();
    if let Some(added) = v.get("added_tokens").and_then(Value::as_array) {
        for a in added {
            let (Some(id), Some(c)) = (a.get("id").and_then(Value::as_u64), a.get("content").and_then(Value::as_str))
            else {
                continue;
            };
            let special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
            if special {
                specials.push(c.to_string());
            }
            if (id as usize) < n {
                added_types.insert(id as usize, (c.to_string(), special));
            }
        }
    }
    let mut tokens = Vec::with_capacity(n);
    let mut scores = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    for (i, entry) in by_id.iter().enumerate() {
        let (text, ty, score) = if let Some(t) = entry.clone() {
            let ty = if is_byte_token(&t) {
                TokenType::Byte
            } else if specials.contains(&t) {
                TokenType::Control
            } else {
                TokenType::Normal
            };
            let score = score_of.get(&t).copied().unwrap_or(0.0);
            (t, ty, score)
        } else if let Some((c, special)) = added_types.get(&i) {
            let ty = if *special || specials.contains(c) { TokenType::Control } else { TokenType::UserDefined };
            (c.clone(), ty, -1000.0)
        } else {
            (format!("[PAD{i}]"), TokenType::Unused, -1000.0)
        };
        tokens.push(text);
        scores.push(score);
        types.push(ty as i32);
    }
    if base > n {
        warnings.push(format!("{}: the vocabulary is larger than the embedding", path.display()));
    }
    // add_space_prefix: llama.cpp writes false for Jamba; elsewhere from the JSON's Prepend /
    // Metaspace rules.
    let prepends = json_has_prepend(v);
    let add_space_prefix = if arch == Arch::Jamba { false } else { prepends };
    if arch == Arch::Jamba && prepends {
        warnings.push(format!(
            "{}: the tokenizer prepends a space, but llama.cpp's converter writes add_space_prefix = false for Jamba; coil follows it",
            path.display()
        ));
    }
    let mut md: Vec<(String, GgufValue)> = vec![
        ("tokenizer.ggml.model".into(), "llama".into()),
        ("tokenizer.ggml.pre".into(), "default".into()),
        ("tokenizer.ggml.tokens".into(), GgufValue::Array(GgufArray::String(tokens))),
        ("tokenizer.ggml.scores".into(), GgufValue::Array(GgufArray::F32(scores))),
        ("tokenizer.ggml.token_type".into(), GgufValue::Array(GgufArray::I32(types))),
    ];
    let sv = SpecialVocab::load(dir, Some(v), false, n, &mut warnings)?;
    sv.add_to(&mut md);
    md.push(("tokenizer.ggml.add_space_prefix".into(), GgufValue::Bool(add_space_prefix)));
    Ok(VocabOut {
        metadata: md,
        source: file_name(path),
        model: "llama",
        pre: Some("default".into()),
        n_tokens: n,
        warnings,
    })
}

fn json_has_prepend(v: &Value) -> bool {
    fn walk(v: &Value) -> bool {
        match v {
            Value::Object(o) => {
                let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
                if ty == "Prepend" {
                    return true;
                }
                if ty == "Metaspace" {
                    let scheme = o.get("prepend_scheme").and_then(Value::as_str);
                    let flag = o.get("add_prefix_space").and_then(Value::as_bool);
                    return matches!(scheme, Some("first") | Some("always"))
                        || (scheme.is_none() && flag.unwrap_or(true));
                }
                o.values().any(walk)
            }
            Value::Array(a) => a.iter().any(walk),
            _ => false,
        }
    }
    walk(v.get("normalizer").unwrap_or(&Value::Null)) || walk(v.get("pre_tokenizer").unwrap_or(&Value::Null))
}

fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6 && t.starts_with("<0x") && t.ends_with('>') && b[3].is_ascii_hexdigit() && b[4].is_ascii_hexdigit()
}

/// llama.cpp's `does_token_look_special`.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{ff5c}") && t.ends_with("\u{ff5c}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

fn file_name(p: &Path) -> String {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_string()
}

/// `bos_token: "<s>"` or `bos_token: {"content": "<s>", ...}`.
fn token_content(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

/// A chat template: one string, or named ones.
#[derive(Debug, Clone, PartialEq)]
enum ChatTemplate {
    One(String),
    Named(Vec<(String, String)>),
}

/// gguf-py's `SpecialVocab`: merges, special token ids, add-BOS/EOS flags and the chat template.
#[derive(Debug, Default)]
struct SpecialVocab {
    merges: Vec<String>,
    /// In the order they were found (the order they are written).
    ids: Vec<(&'static str, u32)>,
    add: Vec<(&'static str, bool)>,
    chat_template: Option<ChatTemplate>,
}

const SPECIAL_TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

impl SpecialVocab {
    fn load(
        dir: &Path,
        tokenizer_json: Option<&Value>,
        load_merges: bool,
        n_vocab: usize,
        warnings: &mut Vec<String>,
    ) -> Result<SpecialVocab> {
        let mut sv = SpecialVocab::default();
        let mut types: Vec<&'static str> = SPECIAL_TYPES.to_vec();
        let set = |sv: &mut SpecialVocab, typ: &'static str, id: Option<&Value>, warnings: &mut Vec<String>| {
            let Some(id) = id.and_then(Value::as_i64) else { return };
            if id < 0 || id as u64 >= n_vocab as u64 {
                warnings.push(format!("special token {typ} id {id} is outside the vocabulary of {n_vocab}; skipped"));
                return;
            }
            if sv.ids.iter().any(|(t, _)| *t == typ) {
                return;
            }
            sv.ids.push((typ, id as u32));
        };
        let mut added: Vec<(String, Value)> = Vec::new();
        if let Some(tj) = tokenizer_json {
            if load_merges {
                sv.merges = merges_of(tj)?;
            }
            if let Some(a) = tj.get("added_tokens").and_then(Value::as_array) {
                for t in a {
                    if let Some(c) = t.get("content").and_then(Value::as_str) {
                        added.push((c.to_string(), t.get("id").cloned().unwrap_or(Value::Null)));
                    }
                }
            }
        }
        let mut tc = read_json(&dir.join("tokenizer_config.json"))?
            .filter(|v| v.as_object().map(|o| !o.is_empty()).unwrap_or(false));
        if let Some(tj) = tokenizer_json {
            let get = |tc: &Option<Value>, k: &str| {
                tc.as_ref().and_then(|t| t.get(k)).and_then(token_content).map(str::to_string)
            };
            let mut special_bos = get(&tc, "bos_token");
            let special_cls = get(&tc, "cls_token");
            let mut special_eos = get(&tc, "eos_token");
            let special_sep = get(&tc, "sep_token");
            if special_bos.is_none() && special_cls.is_some() {
                if let Some(t) = tc.as_mut().and_then(Value::as_object_mut) {
                    t.insert("bos_token".into(), Value::String(special_cls.clone().unwrap_or_default()));
                    special_bos = special_cls.clone();
                }
            }
            if special_eos.is_none() && special_sep.is_some() {
                if let Some(t) = tc.as_mut().and_then(Value::as_object_mut) {
                    t.insert("eos_token".into(), Value::String(special_sep.clone().unwrap_or_default()));
                    special_eos = special_sep.clone();
                }
            }
            if let Some(pp) = tj.get("post_processor").filter(|p| !p.is_null()) {
                let procs: Vec<&Value> = match pp.get("processors").and_then(Value::as_array) {
                    Some(a) => a.iter().collect(),
                    None => vec![pp],
                };
                for p in procs {
                    match p.get("type").and_then(Value::as_str) {
                        Some("RobertaProcessing") => {
                            push_add(&mut sv.add, "bos", true);
                            push_add(&mut sv.add, "eos", true);
                            push_add(&mut sv.add, "sep", true);
                        }
                        Some("TemplateProcessing") => {
                            let single = p.get("single").and_then(Value::as_array).cloned().unwrap_or_default();
                            if single.len() > 1 {
                                let sid = |v: &Value| {
                                    v.pointer("/SpecialToken/id").and_then(Value::as_str).map(str::to_string)
                                };
                                if let Some(first) = sid(&single[0]) {
                                    if tc.is_none() {
                                        special_bos = Some(first.clone());
                                    }
                                    let is =
                                        Some(&first) == special_bos.as_ref() || Some(&first) == special_cls.as_ref();
                                    push_add(&mut sv.add, "bos", is);
                                }
                                if let Some(last) = sid(&single[single.len() - 1]) {
                                    if tc.is_none() {
                                        special_eos = Some(last.clone());
                                    } else if Some(&last) != special_eos.as_ref() {
                                        // The template ends with another token than EOS: it becomes
                                        // EOS, the old one EOT (or EOM).
                                        let slot = if !types.contains(&"eot") {
                                            Some(("eot", "eot_token"))
                                        } else if !types.contains(&"eom") {
                                            Some(("eom", "eom_token"))
                                        } else {
                                            None
                                        };
                                        if let (Some((typ, key)), Some(t)) =
                                            (slot, tc.as_mut().and_then(Value::as_object_mut))
                                        {
                                            types.push(typ);
                                            t.insert(
                                                key.into(),
                                                Value::String(special_eos.clone().unwrap_or_default()),
                                            );
                                        }
                                        if let Some(t) = tc.as_mut().and_then(Value::as_object_mut) {
                                            t.insert("eos_token".into(), Value::String(last.clone()));
                                        }
                                        special_eos = Some(last.clone());
                                    }
                                    push_add(&mut sv.add, "eos", Some(&last) == special_eos.as_ref());
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        if let Some(tc) = &tc {
            // Chat template: tokenizer_config.json, else chat_template.jinja, else chat_template.json.
            let mut alt: Option<ChatTemplate> = None;
            let jinja = dir.join("chat_template.jinja");
            let cjson = dir.join("chat_template.json");
            if jinja.is_file() {
                let t = std::fs::read_to_string(&jinja)
                    .map_err(|e| CoilError::new(ErrorCode::Io, format!("cannot read {}: {e}", jinja.display())))?;
                let extra = additional_templates(dir)?;
                alt = Some(if extra.is_empty() {
                    ChatTemplate::One(t)
                } else {
                    let mut v = vec![("default".to_string(), t)];
                    v.extend(extra);
                    ChatTemplate::Named(v)
                });
            } else if let Some(j) = read_json(&cjson)? {
                alt = template_of(j.get("chat_template"));
            }
            sv.chat_template = match tc.get("chat_template") {
                Some(v) => template_of(Some(v)),
                None => alt,
            };
            for &typ in &types {
                if let Some(b) = tc.get(format!("add_{typ}_token")).and_then(Value::as_bool) {
                    push_add(&mut sv.add, typ, b);
                }
                let Some(content) = tc.get(format!("{typ}_token")).and_then(token_content) else { continue };
                let id = added.iter().find(|(c, _)| c == content).map(|(_, id)| id.clone());
                set(&mut sv, typ, id.as_ref(), warnings);
            }
        }
        // config.json `{typ}_token_id` (also under text_config).
        if let Some(cfg) = read_json(&dir.join("config.json"))? {
            for &typ in &types {
                let key = format!("{typ}_token_id");
                let id =
                    cfg.get(&key).filter(|v| !v.is_null()).or_else(|| cfg.get("text_config").and_then(|t| t.get(&key)));
                set(&mut sv, typ, id, warnings);
            }
        }
        Ok(sv)
    }

    /// Appends the keys in gguf-py's order: merges, ids, add flags, chat template.
    fn add_to(&self, md: &mut Vec<(String, GgufValue)>) {
        if !self.merges.is_empty() {
            md.push(("tokenizer.ggml.merges".into(), GgufValue::Array(GgufArray::String(self.merges.clone()))));
        }
        for (typ, id) in &self.ids {
            let key = match *typ {
                "bos" => "tokenizer.ggml.bos_token_id",
                "eos" => "tokenizer.ggml.eos_token_id",
                "unk" => "tokenizer.ggml.unknown_token_id",
                "sep" => "tokenizer.ggml.seperator_token_id",
                "pad" => "tokenizer.ggml.padding_token_id",
                "cls" => "tokenizer.ggml.cls_token_id",
                "mask" => "tokenizer.ggml.mask_token_id",
                "eot" => "tokenizer.ggml.eot_token_id",
                "eom" => "tokenizer.ggml.eom_token_id",
                _ => continue,
            };
            set_key(md, key, GgufValue::U32(*id));
        }
        for (typ, b) in &self.add {
            let key = match *typ {
                "bos" => "tokenizer.ggml.add_bos_token",
                "eos" => "tokenizer.ggml.add_eos_token",
                "sep" => "tokenizer.ggml.add_sep_token",
                _ => continue,
            };
            set_key(md, key, GgufValue::Bool(*b));
        }
        match &self.chat_template {
            Some(ChatTemplate::One(t)) if !t.is_empty() => set_key(md, "tokenizer.chat_template", t.as_str().into()),
            Some(ChatTemplate::Named(list)) => {
                let mut names = Vec::new();
                let mut default = None;
                for (name, t) in list {
                    let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
                    if name.is_empty() {
                        continue;
                    }
                    if name == "default" {
                        default = Some(t.clone());
                    } else {
                        set_key(md, &format!("tokenizer.chat_template.{name}"), t.as_str().into());
                        if !names.contains(&name) {
                            names.push(name);
                        }
                    }
                }
                if !names.is_empty() {
                    set_key(md, "tokenizer.chat_templates", GgufValue::Array(GgufArray::String(names)));
                }
                if let Some(t) = default.filter(|t| !t.is_empty()) {
                    set_key(md, "tokenizer.chat_template", t.as_str().into());
                }
            }
            _ => {}
        }
    }
}

/// Sets `key`, replacing an earlier value in place (gguf-py's dict semantics).
fn set_key(md: &mut Vec<(String, GgufValue)>, key: &str, v: GgufValue) {
    match md.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = v,
        None => md.push((key.to_string(), v)),
    }
}

fn push_add(add: &mut Vec<(&'static str, bool)>, typ: &'static str, v: bool) {
    match add.iter_mut().find(|(t, _)| *t == typ) {
        Some(slot) => slot.1 = v,
        None => add.push((typ, v)),
    }
}

fn template_of(v: Option<&Value>) -> Option<ChatTemplate> {
    match v? {
        Value::String(s) => Some(ChatTemplate::One(s.clone())),
        Value::Array(a) => Some(ChatTemplate::Named(
            a.iter()
                .filter_map(|e| {
                    let name = e.get("name").and_then(Value::as_str).unwrap_or("").to_string();
                    let t = e.get("template").and_then(Value::as_str)?.to_string();
                    Some((name, t))
                })
                .collect(),
        )),
        _ => None,
    }
}

fn additional_templates(dir: &Path) -> Result<Vec<(String, String)>> {
    let d = dir.join("additional_chat_templates");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&d) else { return Ok(out) };
    let mut paths: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.extension().and_then(|e| e.to_str()) == Some("jinja") {
            let t = std::fs::read_to_string(&p)
                .map_err(|e| CoilError::new(ErrorCode::Io, format!("cannot read {}: {e}", p.display())))?;
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
            out.push((stem, t));
        }
    }
    Ok(out)
}

/// `model.merges` as gguf-py stores them: `"a b"` strings as they are; `["a", "b"]` pairs joined
/// by a space after spelling spaces inside the parts as U+0120.
fn merges_of(tj: &Value) -> Result<Vec<String>> {
    let Some(merges) = tj.pointer("/model/merges").and_then(Value::as_array) else { return Ok(Vec::new()) };
    let mut out = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        match m {
            Value::String(s) => out.push(s.clone()),
            Value::Array(p) if p.len() == 2 => {
                let enc = |v: &Value| -> Option<String> { Some(v.as_str()?.replace(' ', "\u{0120}")) };
                match (enc(&p[0]), enc(&p[1])) {
                    (Some(a), Some(b)) => out.push(format!("{a} {b}")),
                    _ => {
                        return Err(CoilError::new(
                            ErrorCode::TokenizerInvalid,
                            format!("tokenizer.json: merge {i} is not a pair of strings"),
                        ))
                    }
                }
            }
            _ => {
                return Err(CoilError::new(
                    ErrorCode::TokenizerInvalid,
                    format!("tokenizer.json: merge {i} has an unknown format"),
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_names() {
        let j = |s: &str| -> Value { serde_json::from_str(s).unwrap() };
        assert_eq!(
            gpt2_pre_name(&j(r#"{"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true}}"#)),
            Ok("gpt-2")
        );
        let llama3 = r#"{"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]}}"#;
        assert_eq!(gpt2_pre_name(&j(llama3)), Ok("llama-bpe"));
        assert!(gpt2_pre_name(&j(r#"{"pre_tokenizer":{"type":"Whitespace"}}"#)).is_err());
    }

    #[test]
    fn family_names() {
        let j = |s: &str| -> Value { serde_json::from_str(s).unwrap() };
        let (plain, ignoring) = (j(r#"{"model":{}}"#), j(r#"{"model":{"ignore_merges":true}}"#));
        assert_eq!(family_pre_name(Arch::FalconH1, "llama-bpe", &ignoring), "falcon-h1");
        assert_eq!(family_pre_name(Arch::Lfm2Moe, "llama-bpe", &ignoring), "lfm2");
        assert_eq!(family_pre_name(Arch::NemotronHMoe, "llama-bpe", &ignoring), "pixtral");
        assert_eq!(family_pre_name(Arch::GraniteHybrid, "llama-bpe", &plain), "dbrx");
        assert_eq!(family_pre_name(Arch::GraniteHybrid, "llama-bpe", &ignoring), "llama-bpe");
        assert_eq!(family_pre_name(Arch::FalconH1, "gpt-2", &ignoring), "gpt-2");
        assert_eq!(family_pre_name(Arch::Mamba, "llama-bpe", &plain), "llama-bpe");
        for name in ["falcon-h1", "lfm2", "pixtral", "dbrx"] {
            assert!(crate::tokenizer::pretok::pre_info(Some(name)).is_ok(), "{name}");
        }
    }

    #[test]
    fn merges_with_spaces() {
        let v: Value = serde_json::from_str(r#"{"model":{"merges":[["a b","c"],["d","e"]]}}"#).unwrap();
        assert_eq!(merges_of(&v).unwrap(), vec!["a\u{120}b c".to_string(), "d e".to_string()]);
    }
}
