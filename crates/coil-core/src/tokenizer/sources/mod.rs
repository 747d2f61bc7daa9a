//! Readers of the tokenizer files that models ship with, into [`TokenizerConfig`]s (used by tests
//! against reference tokenizers, and by the GGUF converter).
//!
//! * [`TokenizerConfig::from_sentencepiece_model`]: SentencePiece `tokenizer.model` (protobuf).
//! * [`TokenizerConfig::from_hf_tokenizer_json`]: HF `tokenizers` `tokenizer.json` (BPE).
//!
//! [`TokenizerConfig`]: crate::tokenizer::TokenizerConfig
//! [`TokenizerConfig::from_sentencepiece_model`]: crate::tokenizer::TokenizerConfig::from_sentencepiece_model
//! [`TokenizerConfig::from_hf_tokenizer_json`]: crate::tokenizer::TokenizerConfig::from_hf_tokenizer_json

mod hf_json;
mod sentencepiece;

pub use sentencepiece::{SentencePieceModel, SpPiece};
