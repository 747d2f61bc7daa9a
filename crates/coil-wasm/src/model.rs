//! `WasmModel`: a coil-core `Model` held by JS. Thin: each method forwards to the core.

use coil_core::gguf::GgufFile;
use coil_core::model::Model;
use wasm_bindgen::prelude::*;

use crate::to_js;

#[wasm_bindgen]
pub struct WasmModel {
    inner: Model,
}

/// Loads a model from the header bytes of a GGUF (`prefix` of a file of `file_size` bytes);
/// GGUF_NEED_MORE asks for a longer prefix.
#[wasm_bindgen(js_name = loadModelBytes)]
pub fn load_model_bytes(prefix: &[u8], file_size: f64) -> Result<WasmModel, JsValue> {
    let file = GgufFile::parse(prefix, file_size as u64).map_err(to_js)?;
    Ok(WasmModel { inner: Model::from_header(file).map_err(to_js)? })
}

#[wasm_bindgen]
impl WasmModel {
    pub fn info(&self, array_head: i32) -> String {
        self.inner.info_json((array_head >= 0).then_some(array_head as usize))
    }

    pub fn tokenize(&self, text: &str, add_special: Option<bool>, parse_special: bool) -> Result<Vec<u32>, JsValue> {
        self.inner.tokenize(text, add_special, parse_special).map_err(to_js)
    }

    pub fn detokenize(&self, ids: &[u32], special: bool) -> Result<String, JsValue> {
        self.inner.detokenize(ids, special).map_err(to_js)
    }

    pub fn pieces(&self, ids: &[u32], special: bool) -> Result<Vec<String>, JsValue> {
        self.inner.pieces(ids, special).map_err(to_js)
    }

    pub fn vocab(&self) -> Result<String, JsValue> {
        self.inner.vocab_json().map_err(to_js)
    }

    pub fn token(&self, id: u32) -> Result<String, JsValue> {
        self.inner.token_json(id).map_err(to_js)
    }
}
