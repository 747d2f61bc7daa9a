//! A loaded model as the bindings see it: its GGUF header, its tokenizer (when the file carries
//! one), and — with the inference issues — its weights. Vocab-only GGUFs load too, for tokenization.
//! Everything both bindings need beyond plain argument conversion lives here, once.

use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::inspect::{inspect_json, InspectOptions};
use crate::gguf::GgufFile;
use crate::tokenizer::{DetokenizeOptions, StreamDecoder, TokenType, Tokenizer};

pub struct Model {
    file: GgufFile,
    tokenizer: Option<Tokenizer>,
    /// Why the tokenizer could not be built, when the file has tokenizer metadata that is broken
    /// (reported on first use rather than failing the load: the weights may still be useful).
    tokenizer_error: Option<CoilError>,
}

impl Model {
    /// Builds the model from a parsed header. A file without `tokenizer.ggml.model` loads without a
    /// tokenizer (token ids only).
    pub fn from_header(file: GgufFile) -> Result<Model> {
        let (tokenizer, tokenizer_error) = if file.get("tokenizer.ggml.model").is_some() {
            match Tokenizer::from_gguf(&file) {
                Ok(t) => (Some(t), None),
                Err(e) => (None, Some(e)),
            }
        } else {
            (None, None)
        };
        Ok(Model { file, tokenizer, tokenizer_error })
    }

    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The inspection JSON (see `gguf::inspect`), with arrays in full unless `array_head` is given.
    pub fn info_json(&self, array_head: Option<usize>) -> String {
        inspect_json(&self.file, &InspectOptions { array_head })
    }

    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        if let Some(t) = &self.tokenizer {
            return Ok(t);
        }
        Err(match &self.tokenizer_error {
            Some(e) => e.clone(),
            None => CoilError::new(
                ErrorCode::TokenizerInvalid,
                "this model has no tokenizer (no tokenizer.ggml.* metadata): pass token ids instead of text",
            ),
        })
    }

    /// Tokenizes `text`. `add_special`: add BOS/EOS as the vocabulary asks (None = the vocabulary's
    /// default); `parse_special`: recognise control and special tokens written in the text.
    pub fn tokenize(&self, text: &str, add_special: Option<bool>, parse_special: bool) -> Result<Vec<u32>> {
        let t = self.tokenizer()?;
        let add = add_special.unwrap_or(t.add_bos() || t.add_eos());
        Ok(t.tokenize(text, add, parse_special))
    }

    fn check_ids(&self, ids: &[u32]) -> Result<&Tokenizer> {
        let t = self.tokenizer()?;
        let n = t.n_vocab();
        if let Some((i, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= n) {
            return Err(CoilError::new(
                ErrorCode::TokenOutOfRange,
                format!("token {id} at index {i} is outside the vocabulary (0..{n})"),
            ));
        }
        Ok(t)
    }

    /// Text of `ids`. `special`: render control tokens as their text instead of dropping them.
    pub fn detokenize(&self, ids: &[u32], special: bool) -> Result<String> {
        let t = self.check_ids(ids)?;
        t.detokenize(ids, DetokenizeOptions { remove_special: false, unparse_special: special, clean_spaces: None })
    }

    /// The text of each token on its own (lossy where a token is part of a UTF-8 character).
    pub fn pieces(&self, ids: &[u32], special: bool) -> Result<Vec<String>> {
        let t = self.check_ids(ids)?;
        ids.iter()
            .map(|&id| t.token_to_piece(id, special).map(|b| String::from_utf8_lossy(&b).into_owned()))
            .collect()
    }

    /// Special token ids and tokenizer flags as JSON, for the facade's `model.tokens`.
    pub fn vocab_json(&self) -> Result<String> {
        let t = self.tokenizer()?;
        let id = |x: Option<u32>| x.map(|v| v.to_string()).unwrap_or_else(|| "null".into());
        let eog: Vec<String> = t.eog_tokens().iter().map(|x| x.to_string()).collect();
        Ok(format!(
            "{{\"model\":{},\"pre\":{},\"n_vocab\":{},\"bos\":{},\"eos\":{},\"eot\":{},\"unk\":{},\"pad\":{},\"eog\":[{}],\"add_bos\":{},\"add_eos\":{},\"add_space_prefix\":{}}}",
            crate::error::json_string(match t.model() {
                crate::tokenizer::ModelKind::Gpt2 => "gpt2",
                crate::tokenizer::ModelKind::Llama => "llama",
            }),
            t.pre().map(crate::error::json_string).unwrap_or_else(|| "null".into()),
            t.n_vocab(),
            id(t.bos()),
            id(t.eos()),
            id(t.eot()),
            id(t.unk()),
            id(t.pad()),
            eog.join(","),
            t.add_bos(),
            t.add_eos(),
            t.add_space_prefix(),
        ))
    }

    /// Attributes of one token as JSON: `{"id","piece","type","control","eog"}`.
    pub fn token_json(&self, id: u32) -> Result<String> {
        let t = self.check_ids(&[id])?;
        let ty = match t.token_type(id)? {
            TokenType::Normal => "normal",
            TokenType::Unknown => "unknown",
            TokenType::Control => "control",
            TokenType::UserDefined => "user_defined",
            TokenType::Unused => "unused",
            TokenType::Byte => "byte",
            TokenType::Undefined => "undefined",
        };
        Ok(format!(
            "{{\"id\":{id},\"piece\":{},\"type\":\"{ty}\",\"control\":{},\"eog\":{}}}",
            crate::error::json_string(t.piece(id)?),
            t.is_control(id),
            t.is_eog(id)
        ))
    }

    /// A decoder for streamed tokens that never splits a UTF-8 character.
    pub fn stream_decoder(&self, special: bool) -> Result<StreamDecoder> {
        self.tokenizer()?;
        Ok(StreamDecoder::new(special))
    }

    pub fn decode_push(&self, dec: &mut StreamDecoder, id: u32) -> Result<String> {
        let t = self.check_ids(&[id])?;
        dec.push(t, id)
    }
}
