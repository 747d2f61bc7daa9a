//! `NativeModel` and `NativeContext`: coil-core's `Model` and `Context` held by JS. Thin: each
//! method converts arguments and forwards to the core. Evaluation runs off the JS thread.

use std::sync::{Arc, Mutex};

use coil_core::context::{Batch, Context, ContextParams, KvType};
use coil_core::generate::{GenerateParams, Generator};
use coil_core::error::guard;
use coil_core::gguf::GgufFile;
use coil_core::model::Model;
use coil_core::{CoilError, ErrorCode};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::to_napi;

fn disposed(what: &str) -> Error {
    to_napi(CoilError::new(ErrorCode::Disposed, format!("this {what} has been disposed")))
}

#[napi]
pub struct NativeModel {
    inner: Option<Arc<Model>>,
}

impl NativeModel {
    fn model(&self) -> Result<&Arc<Model>> {
        self.inner.as_ref().ok_or_else(|| disposed("model"))
    }
    /// Mutable access for chunked weight loading, before any context shares the model.
    fn model_mut(&mut self) -> Result<&mut Model> {
        let arc = self.inner.as_mut().ok_or_else(|| disposed("model"))?;
        Arc::get_mut(arc).ok_or_else(|| {
            to_napi(CoilError::new(ErrorCode::InvalidArgument, "weights cannot change once a context uses the model"))
        })
    }
}

#[napi]
impl NativeModel {
    /// Inspection JSON of the model's GGUF header (`array_head` < 0 or absent: arrays in full).
    #[napi]
    pub fn info(&self, array_head: Option<i32>) -> Result<String> {
        Ok(self.model()?.info_json(array_head.filter(|n| *n >= 0).map(|n| n as usize)))
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

    #[napi]
    pub fn has_weights(&self) -> Result<bool> {
        Ok(self.model()?.has_weights())
    }

    #[napi]
    pub fn wants_weights(&self, vocab_only: bool) -> Result<bool> {
        Ok(self.model()?.wants_weights(vocab_only))
    }

    /// Chunked loading: `[tensor_index, file_offset, length, ...]`.
    #[napi]
    pub fn weights_plan(&mut self) -> Result<Float64Array> {
        let m = self.model_mut()?;
        guard(|| m.weights_plan_flat()).map(Float64Array::new).map_err(to_napi)
    }

    #[napi]
    pub fn push_tensor_bytes(&mut self, tensor_index: u32, offset: f64, bytes: &[u8]) -> Result<()> {
        let m = self.model_mut()?;
        guard(|| m.push_tensor_bytes(tensor_index as usize, offset as u64, bytes)).map_err(to_napi)
    }

    #[napi]
    pub fn finish_weights(&mut self) -> Result<()> {
        let m = self.model_mut()?;
        guard(|| m.finish_weights()).map_err(to_napi)
    }

    /// `n_ctx` 0: the model's default context length; `kv_type` "f16" or "f32".
    #[napi]
    pub fn create_context(&self, n_seq_max: u32, n_threads: u32, n_ctx: u32, kv_type: String) -> Result<NativeContext> {
        let m = self.model()?.clone();
        let kv_type = KvType::parse(&kv_type).map_err(to_napi)?;
        let params = ContextParams { n_seq_max, n_threads: n_threads as usize, n_ctx, kv_type, ..ContextParams::default() };
        let ctx = guard(|| Context::new(m, params)).map_err(to_napi)?;
        let n_vocab = ctx.model().hparams().map(|h| h.n_vocab as u32).unwrap_or(0);
        Ok(NativeContext { inner: Some(Arc::new(Mutex::new(ctx))), n_vocab })
    }

    /// Releases the model now (contexts keep what they use); later calls fail with DISPOSED.
    #[napi]
    pub fn dispose(&mut self) {
        self.inner = None;
    }
}

#[napi]
pub struct NativeContext {
    inner: Option<Arc<Mutex<Context>>>,
    n_vocab: u32,
}

impl NativeContext {
    fn ctx(&self) -> Result<&Arc<Mutex<Context>>> {
        self.inner.as_ref().ok_or_else(|| disposed("context"))
    }
    fn with<T>(&self, f: impl FnOnce(&mut Context) -> coil_core::Result<T>) -> Result<T> {
        let c = self.ctx()?;
        let mut g = c.lock().map_err(|_| to_napi(CoilError::new(ErrorCode::Internal, "context lock poisoned")))?;
        guard(|| f(&mut g)).map_err(to_napi)
    }
}

pub struct EvaluateTask {
    ctx: Arc<Mutex<Context>>,
    batch: Batch,
}

impl Task for EvaluateTask {
    type Output = Vec<f32>;
    type JsValue = Float32Array;

    fn compute(&mut self) -> Result<Vec<f32>> {
        let mut g =
            self.ctx.lock().map_err(|_| to_napi(CoilError::new(ErrorCode::Internal, "context lock poisoned")))?;
        let batch = &self.batch;
        guard(|| g.evaluate(batch).map(|l| l.into_vec())).map_err(to_napi)
    }

    fn resolve(&mut self, _env: Env, output: Vec<f32>) -> Result<Float32Array> {
        Ok(Float32Array::new(output))
    }
}

#[napi]
impl NativeContext {
    /// Evaluates a batch off the JS thread: logits (f32) for tokens whose flag is set, in order.
    #[napi(ts_return_type = "Promise<Float32Array>")]
    pub fn evaluate(&self, tokens: Uint32Array, seqs: Uint32Array, logits: Uint8Array) -> Result<AsyncTask<EvaluateTask>> {
        if tokens.len() != seqs.len() || tokens.len() != logits.len() {
            return Err(to_napi(CoilError::new(ErrorCode::InvalidArgument, "tokens, sequences and logit flags differ in length")));
        }
        let batch =
            Batch { tokens: tokens.to_vec(), seq: seqs.to_vec(), pos: None, logits: logits.iter().map(|&b| b != 0).collect() };
        Ok(AsyncTask::new(EvaluateTask { ctx: self.ctx()?.clone(), batch }))
    }

    #[napi]
    pub fn position(&self, seq: u32) -> Result<u32> {
        self.with(|c| c.position(seq))
    }

    #[napi]
    pub fn clear(&self, seq: u32) -> Result<()> {
        self.with(|c| c.clear(seq))
    }

    #[napi]
    pub fn state_bytes_per_sequence(&self) -> Result<f64> {
        self.with(|c| Ok(c.state_bytes_per_sequence() as f64))
    }

    /// Memory accounting JSON (see `Context::memory_json`).
    #[napi]
    pub fn memory(&self) -> Result<String> {
        self.with(|c| Ok(c.memory_json()))
    }

    #[napi]
    pub fn n_vocab(&self) -> u32 {
        self.n_vocab
    }

    /// A generator for sequence `seq`; `params` is the core's GenerateParams JSON.
    #[napi]
    pub fn create_generator(&self, seq: u32, params: String) -> Result<NativeGenerator> {
        let ctx = self.ctx()?.clone();
        let model = ctx.lock().map_err(|_| to_napi(CoilError::new(ErrorCode::Internal, "context lock poisoned")))?.model().clone();
        let gen = guard(|| Generator::new(model, GenerateParams::from_json(&params)?)).map_err(to_napi)?;
        Ok(NativeGenerator { ctx, gen: Arc::new(Mutex::new(gen)), seq })
    }

    #[napi]
    pub fn dispose(&mut self) {
        self.inner = None;
    }
}

pub struct LoadModelTask {
    path: String,
    vocab_only: bool,
}

impl Task for LoadModelTask {
    type Output = Model;
    type JsValue = NativeModel;

    fn compute(&mut self) -> Result<Model> {
        let path = std::path::PathBuf::from(&self.path);
        let vocab_only = self.vocab_only;
        guard(|| Model::open_with(&path, vocab_only)).map_err(to_napi)
    }

    fn resolve(&mut self, _env: Env, output: Model) -> Result<NativeModel> {
        Ok(NativeModel { inner: Some(Arc::new(output)) })
    }
}

/// Loads a model from a GGUF file (memory-mapped: weights are not copied), off the JS thread.
#[napi(ts_return_type = "Promise<NativeModel>")]
pub fn load_model_file(path: String, vocab_only: bool, signal: Option<AbortSignal>) -> AsyncTask<LoadModelTask> {
    AsyncTask::with_optional_signal(LoadModelTask { path, vocab_only }, signal)
}

/// Loads a model's header from the first bytes of a GGUF (`prefix` of a file of `file_size`
/// bytes); GGUF_NEED_MORE asks for a longer prefix. Weights follow by `weights_plan` /
/// `push_tensor_bytes` / `finish_weights`.
#[napi]
pub fn load_model_bytes(prefix: &[u8], file_size: f64) -> Result<NativeModel> {
    guard(|| Model::from_header(GgufFile::parse(prefix, file_size as u64)?))
        .map(|m| NativeModel { inner: Some(Arc::new(m)) })
        .map_err(to_napi)
}

#[napi]
pub struct NativeGenerator {
    ctx: Arc<Mutex<Context>>,
    gen: Arc<Mutex<Generator>>,
    seq: u32,
}

pub enum GenAction {
    Step(Vec<u32>),
    End,
}

pub struct GenerateTask {
    ctx: Arc<Mutex<Context>>,
    gen: Arc<Mutex<Generator>>,
    seq: u32,
    action: GenAction,
}

impl Task for GenerateTask {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> Result<String> {
        let poisoned = || to_napi(CoilError::new(ErrorCode::Internal, "lock poisoned"));
        let mut ctx = self.ctx.lock().map_err(|_| poisoned())?;
        let mut gen = self.gen.lock().map_err(|_| poisoned())?;
        let seq = self.seq;
        match &self.action {
            GenAction::Step(feed) => guard(|| gen.step(&mut ctx, seq, feed).map(|s| s.to_json())),
            GenAction::End => guard(|| gen.end(&mut ctx, seq)),
        }
        .map_err(to_napi)
    }

    fn resolve(&mut self, _env: Env, output: String) -> Result<String> {
        Ok(output)
    }
}

#[napi]
impl NativeGenerator {
    /// Feeds `feed` and samples the next token off the JS thread: JSON `{"token","text","stop"}`.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn step(&self, feed: Uint32Array) -> AsyncTask<GenerateTask> {
        AsyncTask::new(GenerateTask { ctx: self.ctx.clone(), gen: self.gen.clone(), seq: self.seq, action: GenAction::Step(feed.to_vec()) })
    }

    /// Feeds the last sampled token and returns the text still held back.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn end(&self) -> AsyncTask<GenerateTask> {
        AsyncTask::new(GenerateTask { ctx: self.ctx.clone(), gen: self.gen.clone(), seq: self.seq, action: GenAction::End })
    }
}
