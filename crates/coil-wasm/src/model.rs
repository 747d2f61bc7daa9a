//! `WasmModel` and `WasmContext`: coil-core's `Model` and a `Runner` (a `Context` and its
//! generations) held by JS. Thin: each method
//! converts arguments and forwards to the core. Weights arrive in chunks pushed by the facade.

use std::sync::Arc;

use coil_core::context::{CheckpointPolicy, Context, ContextParams, KvType, SaveOptions};
use coil_core::generate::runner::{Item, Runner};
use coil_core::generate::GenerateParams;
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
    pub fn create_context(
        &self,
        n_seq_max: u32,
        n_threads: u32,
        n_ctx: u32,
        kv_type: &str,
    ) -> Result<WasmContext, JsValue> {
        let kv_type = KvType::parse(kv_type).map_err(to_js)?;
        let params =
            ContextParams { n_seq_max, n_threads: n_threads as usize, n_ctx, kv_type, ..ContextParams::default() };
        let ctx = Context::new(self.inner.clone(), params).map_err(to_js)?;
        Ok(WasmContext { inner: Runner::new(ctx), logits: Vec::new() })
    }
}

#[wasm_bindgen]
pub struct WasmContext {
    inner: Runner,
    /// The logits of the last `run`, taken by `takeLogits`.
    logits: Vec<f32>,
}

#[wasm_bindgen]
impl WasmContext {
    /// Runs evaluations and generation steps of several sequences as one batch; returns the
    /// per-item results (JSON); the logits follow with `takeLogits`.
    pub fn run(
        &mut self,
        seqs: &[u32],
        kinds: &[u8],
        gens: &[u32],
        lens: &[u32],
        tokens: &[u32],
    ) -> Result<String, JsValue> {
        let items = Item::decode_flat(seqs, kinds, gens, lens, tokens).map_err(to_js)?;
        let o = self.inner.run(&items).map_err(to_js)?;
        self.logits = o.logits.clone();
        Ok(o.results_json())
    }

    #[wasm_bindgen(js_name = takeLogits)]
    pub fn take_logits(&mut self) -> Vec<f32> {
        std::mem::take(&mut self.logits)
    }

    pub fn position(&self, seq: u32) -> Result<u32, JsValue> {
        self.inner.context().position(seq).map_err(to_js)
    }

    pub fn clear(&mut self, seq: u32) -> Result<(), JsValue> {
        self.inner.context_mut().clear(seq).map_err(to_js)
    }

    pub fn fork(&mut self, src: u32, dst: u32) -> Result<(), JsValue> {
        self.inner.context_mut().fork(src, dst).map_err(to_js)
    }

    /// Prompt reuse: rolls `seq` back to the longest prefix of `tokens` it holds or can restore
    /// without evaluating; returns that length.
    pub fn rewind(&mut self, seq: u32, tokens: &[u32]) -> Result<u32, JsValue> {
        self.inner.context_mut().rewind_for(seq, tokens).map_err(to_js)
    }

    pub fn checkpoint(&mut self, seq: u32) -> Result<u32, JsValue> {
        self.inner.context_mut().checkpoint(seq).map_err(to_js)
    }

    pub fn history(&self, seq: u32) -> Result<Vec<u32>, JsValue> {
        self.inner.context().history(seq).map(|h| h.to_vec()).map_err(to_js)
    }

    pub fn checkpoints(&self, seq: u32) -> Result<Vec<u32>, JsValue> {
        self.inner.context().checkpoints(seq).map_err(to_js)
    }

    #[wasm_bindgen(js_name = checkpointBytes)]
    pub fn checkpoint_bytes(&self) -> f64 {
        self.inner.context().checkpoint_bytes() as f64
    }

    #[wasm_bindgen(js_name = setCheckpointPolicy)]
    pub fn set_checkpoint_policy(&mut self, interval: u32, at_end: bool, budget_bytes: f64) {
        let budget_bytes = if budget_bytes.is_finite() && budget_bytes >= 0.0 { budget_bytes as u64 } else { u64::MAX };
        self.inner.context_mut().set_checkpoint_policy(CheckpointPolicy { interval, at_end, budget_bytes });
    }

    pub fn truncate(&mut self, seq: u32, n: u32) -> Result<(), JsValue> {
        self.inner.context_mut().truncate(seq, n).map_err(to_js)
    }

    #[wasm_bindgen(js_name = saveState)]
    pub fn save_state(&self, seq: u32, history: bool, checkpoints: bool) -> Result<Vec<u8>, JsValue> {
        self.inner.context().save_sequence(seq, SaveOptions { history, checkpoints }).map_err(to_js)
    }

    #[wasm_bindgen(js_name = loadState)]
    pub fn load_state(&mut self, seq: u32, bytes: &[u8]) -> Result<(), JsValue> {
        self.inner.context_mut().load_sequence(seq, bytes).map_err(to_js)
    }

    #[wasm_bindgen(js_name = saveContext)]
    pub fn save_context(&self, history: bool, checkpoints: bool) -> Result<Vec<u8>, JsValue> {
        self.inner.context().save_all(SaveOptions { history, checkpoints }).map_err(to_js)
    }

    #[wasm_bindgen(js_name = loadContext)]
    pub fn load_context(&mut self, bytes: &[u8]) -> Result<(), JsValue> {
        self.inner.context_mut().load_all(bytes).map_err(to_js)
    }

    #[wasm_bindgen(js_name = stateBytesPerSequence)]
    pub fn state_bytes_per_sequence(&self) -> f64 {
        self.inner.context().state_bytes_per_sequence() as f64
    }

    /// Memory accounting JSON (see `Context::memory_json`).
    pub fn memory(&self) -> String {
        self.inner.context().memory_json()
    }

    #[wasm_bindgen(js_name = nVocab)]
    pub fn n_vocab(&self) -> u32 {
        self.inner.context().model().hparams().map(|h| h.n_vocab as u32).unwrap_or(0)
    }

    /// A generation on sequence `seq` (`params`: the core's GenerateParams JSON); returns its id.
    #[wasm_bindgen(js_name = createGenerator)]
    pub fn create_generator(&mut self, seq: u32, params: &str) -> Result<u32, JsValue> {
        let params = GenerateParams::from_json(params).map_err(to_js)?;
        self.inner.create_generator(seq, params).map_err(to_js)
    }

    #[wasm_bindgen(js_name = releaseGenerator)]
    pub fn release_generator(&mut self, id: u32) {
        self.inner.release_generator(id);
    }

    /// Ends generation `id`: feeds its last token, returns the text still held back.
    #[wasm_bindgen(js_name = endGenerator)]
    pub fn end_generator(&mut self, id: u32) -> Result<String, JsValue> {
        self.inner.end_generator(id).map_err(to_js)
    }
}
