//! `NativeModel` and `NativeContext`: coil-core's `Model` and a `Runner` (a `Context` and its
//! generations) held by JS. Thin: each method converts arguments and forwards to the core.
//! Evaluation, rollback and generation run off the JS thread.

use std::sync::{Arc, Mutex};

use coil_core::context::{CheckpointPolicy, Context, ContextParams, KvType, SaveOptions};
use coil_core::error::guard;
use coil_core::generate::runner::{Item, Runner};
use coil_core::generate::GenerateParams;
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
        let params =
            ContextParams { n_seq_max, n_threads: n_threads as usize, n_ctx, kv_type, ..ContextParams::default() };
        let ctx = guard(|| Context::new(m, params)).map_err(to_napi)?;
        let n_vocab = ctx.model().hparams().map(|h| h.n_vocab as u32).unwrap_or(0);
        Ok(NativeContext { inner: Some(Arc::new(Mutex::new(Runner::new(ctx)))), n_vocab })
    }

    /// Releases the model now (contexts keep what they use); later calls fail with DISPOSED.
    #[napi]
    pub fn dispose(&mut self) {
        self.inner = None;
    }
}

#[napi]
pub struct NativeContext {
    inner: Option<Arc<Mutex<Runner>>>,
    n_vocab: u32,
}

fn poisoned() -> Error {
    to_napi(CoilError::new(ErrorCode::Internal, "context lock poisoned"))
}

impl NativeContext {
    fn ctx(&self) -> Result<&Arc<Mutex<Runner>>> {
        self.inner.as_ref().ok_or_else(|| disposed("context"))
    }
    fn with<T>(&self, f: impl FnOnce(&mut Runner) -> coil_core::Result<T>) -> Result<T> {
        let c = self.ctx()?;
        let mut g = c.lock().map_err(|_| poisoned())?;
        guard(|| f(&mut g)).map_err(to_napi)
    }
    /// Work that may take time, off the JS thread.
    fn task<O: Send + 'static, J: ToNapiValue + TypeName>(
        &self,
        f: impl FnOnce(&mut Runner) -> coil_core::Result<O> + Send + 'static,
        conv: fn(O) -> J,
    ) -> Result<AsyncTask<CtxTask<O, J>>> {
        Ok(AsyncTask::new(CtxTask { runner: self.ctx()?.clone(), f: Some(Box::new(f)), conv }))
    }
}

type Work<O> = Box<dyn FnOnce(&mut Runner) -> coil_core::Result<O> + Send>;

pub struct CtxTask<O, J> {
    runner: Arc<Mutex<Runner>>,
    f: Option<Work<O>>,
    conv: fn(O) -> J,
}

impl<O: Send + 'static, J: ToNapiValue + TypeName> Task for CtxTask<O, J> {
    type Output = O;
    type JsValue = J;

    fn compute(&mut self) -> Result<O> {
        let mut g = self.runner.lock().map_err(|_| poisoned())?;
        let f = self.f.take().ok_or_else(|| to_napi(CoilError::new(ErrorCode::Internal, "task ran twice")))?;
        guard(|| f(&mut g)).map_err(to_napi)
    }

    fn resolve(&mut self, _env: Env, output: O) -> Result<J> {
        Ok((self.conv)(output))
    }
}

/// What `run` resolves to: the evaluation items' logits and per-item results (JSON).
#[napi(object)]
pub struct RunResult {
    pub logits: Float32Array,
    pub results: String,
}

#[napi]
impl NativeContext {
    /// Runs evaluations and generation steps of several sequences as one batch, off the JS thread.
    #[napi(ts_return_type = "Promise<RunResult>")]
    pub fn run(
        &self,
        seqs: Uint32Array,
        kinds: Uint8Array,
        gens: Uint32Array,
        lens: Uint32Array,
        tokens: Uint32Array,
    ) -> Result<AsyncTask<CtxTask<(Vec<f32>, String), RunResult>>> {
        let items = Item::decode_flat(&seqs, &kinds, &gens, &lens, &tokens).map_err(to_napi)?;
        self.task(
            move |r| {
                let o = r.run(&items)?;
                let j = o.results_json();
                Ok((o.logits, j))
            },
            |(l, j)| RunResult { logits: Float32Array::new(l), results: j },
        )
    }

    #[napi]
    pub fn position(&self, seq: u32) -> Result<u32> {
        self.with(|r| r.context().position(seq))
    }

    #[napi]
    pub fn clear(&self, seq: u32) -> Result<()> {
        self.with(|r| r.context_mut().clear(seq))
    }

    #[napi]
    pub fn fork(&self, src: u32, dst: u32) -> Result<()> {
        self.with(|r| r.context_mut().fork(src, dst))
    }

    /// Prompt reuse: rolls `seq` back to the longest prefix of `tokens` (the whole sequence from
    /// position 0) it holds or can restore without evaluating; returns that length.
    #[napi]
    pub fn rewind(&self, seq: u32, tokens: Uint32Array) -> Result<u32> {
        self.with(|r| r.context_mut().rewind_for(seq, &tokens))
    }

    #[napi]
    pub fn checkpoint(&self, seq: u32) -> Result<u32> {
        self.with(|r| r.context_mut().checkpoint(seq))
    }

    #[napi]
    pub fn history(&self, seq: u32) -> Result<Uint32Array> {
        self.with(|r| r.context().history(seq).map(|h| h.to_vec())).map(Uint32Array::new)
    }

    #[napi]
    pub fn checkpoints(&self, seq: u32) -> Result<Uint32Array> {
        self.with(|r| r.context().checkpoints(seq)).map(Uint32Array::new)
    }

    #[napi]
    pub fn checkpoint_bytes(&self) -> Result<f64> {
        self.with(|r| Ok(r.context().checkpoint_bytes() as f64))
    }

    #[napi]
    pub fn set_checkpoint_policy(&self, interval: u32, at_end: bool, budget_bytes: f64) -> Result<()> {
        self.with(|r| {
            let budget_bytes =
                if budget_bytes.is_finite() && budget_bytes >= 0.0 { budget_bytes as u64 } else { u64::MAX };
            r.context_mut().set_checkpoint_policy(CheckpointPolicy { interval, at_end, budget_bytes });
            Ok(())
        })
    }

    /// Rolls `seq` back to `n` tokens (may re-evaluate a few), off the JS thread.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn truncate(&self, seq: u32, n: u32) -> Result<AsyncTask<CtxTask<(), ()>>> {
        self.task(move |r| r.context_mut().truncate(seq, n), |_| ())
    }

    #[napi]
    pub fn save_state(&self, seq: u32, history: bool, checkpoints: bool) -> Result<Uint8Array> {
        self.with(|r| r.context().save_sequence(seq, SaveOptions { history, checkpoints })).map(Uint8Array::new)
    }

    #[napi]
    pub fn load_state(&self, seq: u32, bytes: &[u8]) -> Result<()> {
        self.with(|r| r.context_mut().load_sequence(seq, bytes))
    }

    #[napi]
    pub fn save_context(&self, history: bool, checkpoints: bool) -> Result<Uint8Array> {
        self.with(|r| r.context().save_all(SaveOptions { history, checkpoints })).map(Uint8Array::new)
    }

    #[napi]
    pub fn load_context(&self, bytes: &[u8]) -> Result<()> {
        self.with(|r| r.context_mut().load_all(bytes))
    }

    #[napi]
    pub fn state_bytes_per_sequence(&self) -> Result<f64> {
        self.with(|r| Ok(r.context().state_bytes_per_sequence() as f64))
    }

    /// Memory accounting JSON (see `Context::memory_json`).
    #[napi]
    pub fn memory(&self) -> Result<String> {
        self.with(|r| Ok(r.context().memory_json()))
    }

    #[napi]
    pub fn n_vocab(&self) -> u32 {
        self.n_vocab
    }

    /// A generation on sequence `seq` (`params`: the core's GenerateParams JSON); returns its id.
    #[napi]
    pub fn create_generator(&self, seq: u32, params: String) -> Result<u32> {
        self.with(|r| r.create_generator(seq, GenerateParams::from_json(&params)?))
    }

    #[napi]
    pub fn release_generator(&self, id: u32) -> Result<()> {
        self.with(|r| {
            r.release_generator(id);
            Ok(())
        })
    }

    /// Ends generation `id`: feeds its last token, returns the text still held back.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn end_generator(&self, id: u32) -> Result<AsyncTask<CtxTask<String, String>>> {
        self.task(move |r| r.end_generator(id), |s| s)
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
