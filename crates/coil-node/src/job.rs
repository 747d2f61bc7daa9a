//! Long native jobs (convert, quantize) for JS: a `JobHandle` the facade polls for progress and
//! cancels from an AbortSignal, and AsyncTasks that run the core's jobs off the JS thread.

use std::path::PathBuf;
use std::sync::Arc;

use coil_core::error::guard;
use coil_core::job::{convert_job, quantize_job, Job};
use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::to_napi;

#[napi]
pub struct JobHandle {
    job: Arc<Job>,
}

#[napi]
impl JobHandle {
    #[napi(constructor)]
    pub fn new() -> Self {
        JobHandle { job: Arc::new(Job::new()) }
    }
    /// Stops the job at its next progress point (it then fails with ABORTED, leaving no output).
    #[napi]
    pub fn cancel(&self) {
        self.job.cancel();
    }
    /// The latest progress, JSON.
    #[napi]
    pub fn progress(&self) -> String {
        self.job.progress_json()
    }
}

impl Default for JobHandle {
    fn default() -> Self {
        Self::new()
    }
}

pub enum JobKind {
    Convert { dir: PathBuf, out: PathBuf, outtype: String, name: Option<String> },
    Quantize { input: PathBuf, output: PathBuf, target: String, threads: usize },
}

pub struct JobTask {
    kind: JobKind,
    job: Arc<Job>,
}

impl Task for JobTask {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> Result<String> {
        let job = self.job.clone();
        let r = match &self.kind {
            JobKind::Convert { dir, out, outtype, name } => {
                guard(|| convert_job(dir, out, outtype, name.clone(), &job))
            }
            JobKind::Quantize { input, output, target, threads } => {
                guard(|| quantize_job(input, output, target, *threads, &job))
            }
        };
        r.map_err(to_napi)
    }

    fn resolve(&mut self, _env: Env, output: String) -> Result<String> {
        Ok(output)
    }
}

/// Converts a Hugging Face checkpoint directory to GGUF; resolves to the report (JSON).
#[napi(ts_return_type = "Promise<string>")]
pub fn convert_checkpoint(
    dir: String,
    out: String,
    outtype: String,
    name: Option<String>,
    handle: &JobHandle,
) -> AsyncTask<JobTask> {
    AsyncTask::new(JobTask {
        kind: JobKind::Convert { dir: dir.into(), out: out.into(), outtype, name },
        job: handle.job.clone(),
    })
}

/// Quantizes a GGUF file; resolves to the report (JSON).
#[napi(ts_return_type = "Promise<string>")]
pub fn quantize_file(
    input: String,
    output: String,
    target: String,
    threads: u32,
    handle: &JobHandle,
) -> AsyncTask<JobTask> {
    AsyncTask::new(JobTask {
        kind: JobKind::Quantize { input: input.into(), output: output.into(), target, threads: threads as usize },
        job: handle.job.clone(),
    })
}
