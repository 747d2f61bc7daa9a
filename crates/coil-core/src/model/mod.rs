//! A loaded model as the bindings see it: its GGUF header, its tokenizer (when the file carries
//! one), and its weights. Vocab-only GGUFs load too, for tokenization.
//! Everything both bindings need beyond plain argument conversion lives here, once.
//!
//! # Weights, two ways
//! * Native: [`Model::load_mapped`] (or [`Model::open`]) maps the file; tensors are slices of the
//!   map, which the model keeps alive.
//! * wasm (chunked): [`Model::from_header`], then [`Model::weights_plan`] lists the byte ranges of
//!   the tensors the architecture needs, the facade hands them over with
//!   [`Model::push_tensor_bytes`] in any order and chunking, and [`Model::finish_weights`] checks
//!   that everything arrived and builds the weights.
//!
//! Both end in the same validated [`Weights`]: every tensor's shape checked against the
//! hyperparameters (`BAD_TENSOR_SHAPE`, `MISSING_TENSOR`, `MISSING_KEY` naming the tensor or key),
//! `UNKNOWN_ARCHITECTURE` for an architecture coil does not run (`hparams::ARCHS` lists those it does).

mod archs;
mod blocks;
pub(crate) mod compat;
pub mod graph;
pub mod hparams;
mod load;
pub mod synth;
pub mod weights;

use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::inspect::{inspect_json, InspectOptions};
use crate::gguf::GgufFile;
use crate::tokenizer::{DetokenizeOptions, StreamDecoder, Tokenizer};

pub use hparams::{Arch, HParams};
pub use weights::{Matrix, Weights};

pub struct Model {
    file: GgufFile,
    tokenizer: Option<Tokenizer>,
    /// Why the tokenizer could not be built, when the file has tokenizer metadata that is broken
    /// (reported on first use rather than failing the load: the weights may still be useful).
    tokenizer_error: Option<CoilError>,
    weights: Option<Weights>,
    /// Chunked loading in progress (between `weights_plan` and `finish_weights`).
    pending: Option<weights::Pending>,
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
        Ok(Model { file, tokenizer, tokenizer_error, weights: None, pending: None })
    }

    /// Loads a memory-mapped file: header, tokenizer and weights (tensors stay in the map).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_mapped(mut mapped: crate::gguf::MappedGguf) -> Result<Model> {
        let plan = weights::Plan::new(&mapped.file)?;
        // Move the header out of the map's struct (the map only serves bytes from now on).
        let empty = GgufFile {
            version: mapped.file.version,
            metadata: Vec::new(),
            tensors: Vec::new(),
            alignment: mapped.file.alignment,
            data_offset: mapped.file.data_offset,
            file_size: mapped.file.file_size,
        };
        let file = std::mem::replace(&mut mapped.file, empty);
        let mut model = Model::from_header(file)?;
        model.weights = Some(Weights::build(plan, weights::mapped_storage(mapped))?);
        Ok(model)
    }

    /// Maps and loads the GGUF file at `path`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(path: &std::path::Path) -> Result<Model> {
        Model::load_mapped(crate::gguf::MappedGguf::open(path)?)
    }

    /// Loads a whole GGUF file held in memory (header, tokenizer, weights copied out of `bytes`
    /// through the chunked path).
    pub fn from_gguf_bytes(bytes: &[u8]) -> Result<Model> {
        let mut m = Model::from_header(GgufFile::parse(bytes, bytes.len() as u64)?)?;
        for (idx, off, len) in m.weights_plan()? {
            let r = off as usize..(off + len) as usize;
            m.push_tensor_bytes(idx, 0, &bytes[r])?;
        }
        m.finish_weights()?;
        Ok(m)
    }

    /// The tensors the architecture needs, as `(tensor_index, absolute_file_offset, byte_length)`
    /// in file order, for chunked loading. Checks the hyperparameters and every tensor's name,
    /// shape and type first, so an unusable file fails here, before any data is fetched.
    /// Calling it again restarts the chunked load.
    pub fn weights_plan(&mut self) -> Result<Vec<(usize, u64, u64)>> {
        if self.weights.is_some() {
            return Err(CoilError::new(ErrorCode::InvalidArgument, "the model already has its weights"));
        }
        let p = weights::Pending::new(weights::Plan::new(&self.file)?);
        let list = p.list();
        self.pending = Some(p);
        Ok(list)
    }

    /// Copies `data` into tensor `tensor_index` at `offset` bytes from the tensor's start. The
    /// tensor's buffer is allocated at its exact size on first touch. Chunks may come in any order
    /// and may overlap.
    pub fn push_tensor_bytes(&mut self, tensor_index: usize, offset: u64, data: &[u8]) -> Result<()> {
        if self.pending.is_none() {
            if self.weights.is_some() {
                return Err(CoilError::new(ErrorCode::InvalidArgument, "the model already has its weights"));
            }
            self.pending = Some(weights::Pending::new(weights::Plan::new(&self.file)?));
        }
        match self.pending.as_mut() {
            Some(p) => p.push(tensor_index, offset, data),
            None => Err(CoilError::new(ErrorCode::Internal, "no pending weights")),
        }
    }

    /// Ends chunked loading: checks that every needed tensor arrived whole and builds the weights.
    /// On failure the pushed data is kept, so the missing pieces can still be pushed.
    pub fn finish_weights(&mut self) -> Result<()> {
        if self.weights.is_some() {
            return Err(CoilError::new(ErrorCode::InvalidArgument, "the model already has its weights"));
        }
        let p = self.pending.take().ok_or_else(|| {
            CoilError::new(
                ErrorCode::InvalidArgument,
                "no tensor data was pushed: call weights_plan and push_tensor_bytes first",
            )
        })?;
        if let Some(msg) = p.incomplete() {
            self.pending = Some(p);
            return Err(CoilError::new(ErrorCode::InvalidArgument, msg));
        }
        self.weights = Some(p.finish()?);
        Ok(())
    }

    /// The weights, when loaded.
    pub fn weights(&self) -> Option<&Weights> {
        self.weights.as_ref()
    }

    pub fn has_weights(&self) -> bool {
        self.weights.is_some()
    }

    /// The weights, or `InvalidArgument` for a model loaded without them.
    pub fn require_weights(&self) -> Result<&Weights> {
        self.weights.as_ref().ok_or_else(|| {
            CoilError::new(
                ErrorCode::InvalidArgument,
                "this model was loaded without weights (header only): it can tokenize but not evaluate",
            )
        })
    }

    /// The hyperparameters (weights loaded).
    pub fn hparams(&self) -> Option<&HParams> {
        self.weights.as_ref().map(|w| &w.hp)
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
        ids.iter().map(|&id| t.token_to_piece(id, special).map(|b| String::from_utf8_lossy(&b).into_owned())).collect()
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
        let ty = t.token_type(id)?.name();
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
