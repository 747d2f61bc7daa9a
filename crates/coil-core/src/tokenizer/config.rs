//! Plain tokenizer description: what a GGUF file (or a converter's source file) says about the
//! vocabulary, before any lookup structure is built. [`crate::tokenizer::Tokenizer::new`] checks it.

use crate::error::{CoilError, ErrorCode, Result};

/// The tokenization algorithm (`tokenizer.ggml.model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// `"gpt2"`: byte-level BPE over merge ranks, with a regex-style pre-tokenizer.
    Gpt2,
    /// `"llama"`: SentencePiece-style BPE over scores, with byte fallback and `▁` for spaces.
    Llama,
}

impl ModelKind {
    pub fn from_name(name: &str) -> Option<ModelKind> {
        match name {
            "gpt2" => Some(ModelKind::Gpt2),
            "llama" => Some(ModelKind::Llama),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Gpt2 => "gpt2",
            ModelKind::Llama => "llama",
        }
    }
}

/// Token types as stored in `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TokenType {
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl TokenType {
    /// The type for a stored integer. Values outside 0..=6 are `Undefined`, as in llama.cpp.
    pub fn from_i64(v: i64) -> TokenType {
        match v {
            1 => TokenType::Normal,
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Undefined,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TokenType::Undefined => "undefined",
            TokenType::Normal => "normal",
            TokenType::Unknown => "unknown",
            TokenType::Control => "control",
            TokenType::UserDefined => "user_defined",
            TokenType::Unused => "unused",
            TokenType::Byte => "byte",
        }
    }
}

/// Everything the tokenizer needs, as plain data. Build one by hand, with
/// [`crate::tokenizer::Tokenizer::from_gguf`]'s reader ([`TokenizerConfig::from_gguf`]), or from a
/// source file (`TokenizerConfig::from_hf_tokenizer_json`, `from_sentencepiece_model`).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizerConfig {
    pub model: ModelKind,
    /// Token texts by id. For `Gpt2` these are byte-level encoded (`Ġ` for a space, ...), except
    /// control and user-defined tokens, which are raw text.
    pub tokens: Vec<String>,
    /// One score per token, or empty (all 0). Only the `Llama` model uses them.
    pub scores: Vec<f32>,
    /// One type per token, or empty (all `Normal`).
    pub token_types: Vec<TokenType>,
    /// BPE merges by rank, each `"left right"` (both token texts). `Gpt2` only.
    pub merges: Vec<String>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// End of turn. When `None`, found by text as llama.cpp does (`<|endoftext|>`, `<|im_end|>`, ...).
    pub eot: Option<u32>,
    /// End of message (`<|eom_id|>`). When `None`, found by text as llama.cpp does.
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    /// Prepend BOS when `tokenize(.., add_special = true, ..)`.
    pub add_bos: bool,
    /// Append EOS when `tokenize(.., add_special = true, ..)`.
    pub add_eos: bool,
    /// `Llama` model: prefix a space to text at the start and after a special token.
    pub add_space_prefix: bool,
    /// `tokenizer.ggml.pre`: the pre-tokenizer of a `Gpt2` model (`None` = llama.cpp's default).
    pub pre: Option<String>,
    /// `general.name`, for llama.cpp's per-model token attribute rules (phi-3's rstrip).
    pub model_name: Option<String>,
}

impl TokenizerConfig {
    /// An empty vocabulary with llama.cpp's defaults for `model`: for `llama`, BOS 1, EOS 2, UNK 0,
    /// add BOS, add a space prefix; for `gpt2`, BOS = EOS = 11 (llama.cpp's historic default; the
    /// ids are dropped if the vocabulary is smaller), no BOS, no space prefix.
    pub fn new(model: ModelKind) -> TokenizerConfig {
        match model {
            ModelKind::Llama => TokenizerConfig {
                model,
                tokens: Vec::new(),
                scores: Vec::new(),
                token_types: Vec::new(),
                merges: Vec::new(),
                bos: Some(1),
                eos: Some(2),
                eot: None,
                eom: None,
                unk: Some(0),
                pad: None,
                add_bos: true,
                add_eos: false,
                add_space_prefix: true,
                pre: None,
                model_name: None,
            },
            ModelKind::Gpt2 => TokenizerConfig {
                model,
                tokens: Vec::new(),
                scores: Vec::new(),
                token_types: Vec::new(),
                merges: Vec::new(),
                bos: Some(11),
                eos: Some(11),
                eot: None,
                eom: None,
                unk: None,
                pad: None,
                add_bos: false,
                add_eos: false,
                add_space_prefix: false,
                pre: None,
                model_name: None,
            },
        }
    }

    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }
}

pub(crate) fn invalid(msg: impl Into<String>) -> CoilError {
    CoilError::new(ErrorCode::TokenizerInvalid, msg)
}

pub(crate) fn check_id(what: &str, id: Option<u32>, n: usize) -> Result<()> {
    match id {
        Some(i) if i as usize >= n => {
            Err(invalid(format!("{what} token id {i} is outside the vocabulary of {n} tokens")))
        }
        _ => Ok(()),
    }
}
