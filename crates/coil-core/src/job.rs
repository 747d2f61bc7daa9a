//! Long native jobs (convert, quantize) as the bindings run them: a cancel flag and the latest
//! progress, shared between the worker thread that runs the job and the JS thread that polls it,
//! and the job's report as JSON. Kept here so any binding drives them the same way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde_json::json;

use crate::convert::{convert, ConvertOptions, OutType};
use crate::error::{CoilError, ErrorCode, Result};
use crate::quant::rules::QuantTarget;
use crate::quant::{quantize_gguf_with, QuantOptions};

/// Shared between a running job and whoever watches it.
#[derive(Default)]
pub struct Job {
    cancelled: AtomicBool,
    progress: Mutex<String>,
}

impl Job {
    pub fn new() -> Job {
        Job::default()
    }
    /// Asks the job to stop at its next progress point; it then fails with `Aborted` and leaves no
    /// output file.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
    /// The latest progress as JSON (`{}` before the first report).
    pub fn progress_json(&self) -> String {
        let p = self.progress.lock().map(|g| g.clone()).unwrap_or_default();
        if p.is_empty() {
            "{}".into()
        } else {
            p
        }
    }
    fn report(&self, v: serde_json::Value) -> bool {
        if let Ok(mut g) = self.progress.lock() {
            *g = v.to_string();
        }
        !self.is_cancelled()
    }
}

fn aborted_if(job: &Job, r: Result<String>) -> Result<String> {
    match r {
        Err(e) if job.is_cancelled() && e.code != ErrorCode::Aborted => {
            Err(CoilError::new(ErrorCode::Aborted, format!("cancelled ({})", e.message)))
        }
        other => other,
    }
}

/// Converts the Hugging Face checkpoint in `dir` to `out` (see `convert::convert`); the report as JSON.
pub fn convert_job(
    dir: &std::path::Path,
    out: &std::path::Path,
    outtype: &str,
    name: Option<String>,
    job: &Job,
) -> Result<String> {
    let outtype = OutType::from_name(outtype).ok_or_else(|| {
        let names: Vec<&str> = OutType::ALL.iter().map(|t| t.name()).collect();
        CoilError::new(
            ErrorCode::InvalidArgument,
            format!("unknown outtype \"{outtype}\": use one of {}", names.join(", ")),
        )
    })?;
    let r = convert(dir, out, ConvertOptions { outtype, name }, &mut |p| {
        job.report(json!({
            "phase": "convert",
            "bytesDone": p.bytes_done,
            "bytesTotal": p.bytes_total,
            "tensor": p.tensor,
            "tensorIndex": p.tensor_index,
            "tensorCount": p.tensor_count,
        }))
    })
    .map(|r| {
        json!({
            "out": r.out.to_string_lossy(),
            "architecture": r.arch,
            "hfArchitecture": r.hf_architecture,
            "configSource": r.config_source.file_name(),
            "outtype": r.outtype.name(),
            "fileType": r.file_type,
            "fileSize": r.file_size,
            "nVocab": r.n_vocab,
            "tiedOutputOmitted": r.tied_output_omitted,
            "tokenizer": r.tokenizer.as_ref().map(|t| json!({"source": t.source, "model": t.model, "pre": t.pre, "nTokens": t.n_tokens})),
            "tensors": r.tensors.iter().map(|t| json!({"name": t.name, "shape": t.dims, "type": t.ty.name(), "bytes": t.bytes, "source": t.source})).collect::<Vec<_>>(),
            "warnings": r.warnings,
        })
        .to_string()
    });
    aborted_if(job, r)
}

/// Quantizes `input` into `output` as llama-quantize does (see `quant::file`); the report as JSON.
pub fn quantize_job(
    input: &std::path::Path,
    output: &std::path::Path,
    target: &str,
    threads: usize,
    job: &Job,
) -> Result<String> {
    let target = QuantTarget::from_name(target).ok_or_else(|| {
        let names: Vec<&str> = QuantTarget::ALL.iter().map(|t| t.name()).collect();
        CoilError::new(
            ErrorCode::InvalidArgument,
            format!("unknown quantization type \"{target}\": use one of {}", names.join(", ")),
        )
    })?;
    let opts = QuantOptions { target, pure: false, threads };
    let r = quantize_gguf_with(input, output, &opts, &mut |p| {
        job.report(json!({
            "phase": "quantize",
            "bytesDone": p.bytes_done,
            "bytesTotal": p.bytes_total,
            "tensor": p.tensor_name,
            "tensorIndex": p.tensor_index,
            "tensorCount": p.tensor_count,
        }))
    })
    .map(|r| r.to_json().to_string());
    aborted_if(job, r)
}
