//! `NativeModel`: a coil-core `Model` held by JS. Thin: each method forwards to the core.

use std::sync::Arc;

use coil_core::error::guard;
use coil_core::gguf::{GgufFile, MappedGguf};
use coil_core::model::Model;
use coil_core::{CoilError, ErrorCode};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::to_napi;

#[napi]
pub struct NativeModel {
    inner: Option<Arc<Model>>,
}

impl NativeModel {
    fn model(&self) -> Result<&Model> {
        self.inner
            .as_deref()
            .ok_or_else(|| to_napi(CoilError::new(ErrorCode::Disposed, "this model has been disposed")))
    }
}

#[napi]
impl NativeModel {
    /// Inspection JSON of the model's GGUF header (`array_head` < 0 or absent: arrays in full).
    #[napi]
    pub fn info(&self, array_head: Option<i32>) -> Result<String> {
        let m = self.model()?;
        Ok(m.info_json(array_head.filter(|n| *n >= 0).map(|n| n as usize)))
    }

    #[napi]
    pub fn tokenize(&self, text: String, add_special: Option<bool>, parse_special: bool) -> Result<Uint32Array> {
        let m = self.model()?;
        guard(|| m.tokenize(&text, add_special, parse_special)).map(Uint32Array::new).map_err(to_napi)
    }

    #[napi]
    pub fn detokenize(&self, ids: Uint32Array, special: bool) -> Result<String> {
        let m = self.model()?;
        guard(|| m.detokenize(&ids, special)).map_err(to_napi)
    }

    #[napi]
    pub fn pieces(&self, ids: Uint32Array, special: bool) -> Result<Vec<String>> {
        let m = self.model()?;
        guard(|| m.pieces(&ids, special)).map_err(to_napi)
    }

    /// Special token ids and tokenizer flags (JSON).
    #[napi]
    pub fn vocab(&self) -> Result<String> {
        self.model()?.vocab_json().map_err(to_napi)
    }

    /// One token's attributes (JSON).
    #[napi]
    pub fn token(&self, id: u32) -> Result<String> {
        self.model()?.token_json(id).map_err(to_napi)
    }

    /// Releases the model's memory now; later calls fail with DISPOSED.
    #[napi]
    pub fn dispose(&mut self) {
        self.inner = None;
    }
}

pub struct LoadModelTask {
    path: String,
}

impl Task for LoadModelTask {
    type Output = Model;
    type JsValue = NativeModel;

    fn compute(&mut self) -> Result<Model> {
        let path = std::path::PathBuf::from(&self.path);
        guard(|| {
            let mapped = MappedGguf::open(&path)?;
            Model::from_header(mapped.file)
        })
        .map_err(to_napi)
    }

    fn resolve(&mut self, _env: Env, output: Model) -> Result<NativeModel> {
        Ok(NativeModel { inner: Some(Arc::new(output)) })
    }
}

/// Loads a model from a GGUF file (memory-mapped), off the JS thread.
#[napi(ts_return_type = "Promise<NativeModel>")]
pub fn load_model_file(path: String, signal: Option<AbortSignal>) -> AsyncTask<LoadModelTask> {
    AsyncTask::with_optional_signal(LoadModelTask { path }, signal)
}

/// Loads a model from the header bytes of a GGUF (`prefix` of a file of `file_size` bytes);
/// GGUF_NEED_MORE asks for a longer prefix.
#[napi]
pub fn load_model_bytes(prefix: &[u8], file_size: f64) -> Result<NativeModel> {
    guard(|| Model::from_header(GgufFile::parse(prefix, file_size as u64)?))
        .map(|m| NativeModel { inner: Some(Arc::new(m)) })
        .map_err(to_napi)
}
