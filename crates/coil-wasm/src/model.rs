//! `WasmModel` and `WasmContext`: coil-core's `Model` and `Context` held by JS. Thin: each method
//! converts arguments and forwards to the core. Weights arrive in chunks pushed by the facade.

use std::sync::Arc;

use coil_core::context::{Batch, Context, ContextParams, KvType};
use coil_core::generate::{GenerateParams, Generator};
use coil_core::gguf::GgufFile;
use coil_core::model::Model;
use coil_core::{CoilError, ErrorCode};
use wasm_bindgen::prelude::*;

use crate::to_js;

#[wasm_bindgen]
pub struct WasmModel {
    inner: Arc<Model>,
}

/// Loads a model's header from the first bytes of a GGUF (`prefix` of a file of `file_size`
/// bytes); GGUF_NEED_MORE asks for a longer prefix.
#[wasm_bindgen(js_name = loadModelBytes)]
pub fn load_model_bytes(prefix: &[u8], file_size: f64) -> Result<WasmModel, JsValue> {
    let file = GgufFile::parse(prefix, file_size as u64).map_err(to_js)?;
    Ok(WasmModel { inner: Arc::new(Model::from_header(file).map_err(to_js)?) })
}

impl WasmModel {
    fn model_mut(&mut self) -> Result<&mut Model, JsValue> {
        Arc::get_mut(&mut self.inner).ok_or_else(|| {
            to_js(CoilError::new(ErrorCode::InvalidArgument, "weights cannot change once a context uses the model"))
        })
    }
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

    #[wasm_bindgen(js_name = hasWeights)]
    pub fn has_weights(&self) -> bool {
        self.inner.has_weights()
    }

    #[wasm_bindgen(js_name = wantsWeights)]
    pub fn wants_weights(&self, vocab_only: bool) -> bool {
        self.inner.wants_weights(vocab_only)
    }

    #[wasm_bindgen(js_name = weightsPlan)]
    pub fn weights_plan(&mut self) -> Result<Vec<f64>, JsValue> {
        self.model_mut()?.weights_plan_flat().map_err(to_js)
    }

    #[wasm_bindgen(js_name = pushTensorBytes)]
    pub fn push_tensor_bytes(&mut self, tensor_index: u32, offset: f64, bytes: &[u8]) -> Result<(), JsValue> {
        self.model_mut()?.push_tensor_bytes(tensor_index as usize, offset as u64, bytes).map_err(to_js)
    }

    #[wasm_bindgen(js_name = finishWeights)]
    pub fn finish_weights(&mut self) -> Result<(), JsValue> {
        self.model_mut()?.finish_weights().map_err(to_js)
    }

    /// `n_ctx` 0: the model's default context length; `kv_type` "f16" or "f32".
    #[wasm_bindgen(js_name = createContext)]
    pub fn create_context(&self, n_seq_max: u32, n_threads: u32, n_ctx: u32, kv_type: &str) -> Result<WasmContext, JsValue> {
        let kv_type = KvType::parse(kv_type).map_err(to_js)?;
        let params = ContextParams { n_seq_max, n_threads: n_threads as usize, n_ctx, kv_type, ..ContextParams::default() };
        let ctx = Context::new(self.inner.clone(), params).map_err(to_js)?;
        Ok(WasmContext { inner: ctx })
    }
}

#[wasm_bindgen]
pub struct WasmContext {
    inner: Context,
}

#[wasm_bindgen]
impl WasmContext {
    /// Evaluates a batch: logits (f32) for tokens whose flag is set, in order.
    pub fn evaluate(&mut self, tokens: &[u32], seqs: &[u32], logits: &[u8]) -> Result<Vec<f32>, JsValue> {
        if tokens.len() != seqs.len() || tokens.len() != logits.len() {
            return Err(to_js(CoilError::new(ErrorCode::InvalidArgument, "tokens, sequences and logit flags differ in length")));
        }
        let batch = Batch { tokens: tokens.to_vec(), seq: seqs.to_vec(), pos: None, logits: logits.iter().map(|&b| b != 0).collect() };
        self.inner.evaluate(&batch).map(|l| l.into_vec()).map_err(to_js)
    }

    pub fn position(&self, seq: u32) -> Result<u32, JsValue> {
        self.inner.position(seq).map_err(to_js)
    }

    pub fn clear(&mut self, seq: u32) -> Result<(), JsValue> {
        self.inner.clear(seq).map_err(to_js)
    }

    #[wasm_bindgen(js_name = stateBytesPerSequence)]
    pub fn state_bytes_per_sequence(&self) -> f64 {
        self.inner.state_bytes_per_sequence() as f64
    }

    /// Memory accounting JSON (see `Context::memory_json`).
    pub fn memory(&self) -> String {
        self.inner.memory_json()
    }

    #[wasm_bindgen(js_name = nVocab)]
    pub fn n_vocab(&self) -> u32 {
        self.inner.model().hparams().map(|h| h.n_vocab as u32).unwrap_or(0)
    }

    /// A generator for sequence `seq`; `params` is the core's GenerateParams JSON.
    #[wasm_bindgen(js_name = createGenerator)]
    pub fn create_generator(&self, seq: u32, params: &str) -> Result<WasmGenerator, JsValue> {
        let params = GenerateParams::from_json(params).map_err(to_js)?;
        Ok(WasmGenerator { gen: Generator::new(self.inner.model().clone(), params).map_err(to_js)?, seq })
    }

    /// One generation step on `gen`'s sequence: JSON `{"token","text","stop"}`.
    #[wasm_bindgen(js_name = generatorStep)]
    pub fn generator_step(&mut self, gen: &mut WasmGenerator, feed: &[u32]) -> Result<String, JsValue> {
        gen.gen.step(&mut self.inner, gen.seq, feed).map(|s| s.to_json()).map_err(to_js)
    }

    /// Ends `gen`: feeds the last sampled token, returns the text still held back.
    #[wasm_bindgen(js_name = generatorEnd)]
    pub fn generator_end(&mut self, gen: &mut WasmGenerator) -> Result<String, JsValue> {
        gen.gen.end(&mut self.inner, gen.seq).map_err(to_js)
    }
}

#[wasm_bindgen]
pub struct WasmGenerator {
    gen: Generator,
    seq: u32,
}
