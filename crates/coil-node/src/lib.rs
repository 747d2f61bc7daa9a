//! Node-API binding of coil-core, built with napi-rs. Thin by design: every function converts its
//! arguments, calls one coil-core function and converts the result back. Errors cross as JS errors
//! whose message is `CoilError::to_wire()`; the TypeScript facade turns them into typed errors.
//! Work that can take time runs as an `AsyncTask` off the JS thread and accepts an `AbortSignal`.

use coil_core::error::guard;
use coil_core::gguf::inspect::{inspect_json, InspectOptions};
use coil_core::gguf::{GgufFile, MappedGguf};
use coil_core::CoilError;
use napi::bindgen_prelude::*;
use napi_derive::napi;

mod job;
mod model;

pub(crate) fn to_napi(e: CoilError) -> Error {
    Error::new(Status::GenericFailure, e.to_wire())
}

fn opts(array_head: Option<i32>) -> InspectOptions {
    InspectOptions { array_head: array_head.filter(|n| *n >= 0).map(|n| n as usize) }
}

/// Version of the native engine.
#[napi]
pub fn engine_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// Which SIMD instruction sets this CPU offers to the native kernels (runtime detection).
#[napi]
pub fn cpu_features() -> Vec<String> {
    coil_core::cpu::features().into_iter().map(String::from).collect()
}

/// Threads a context uses by default: the physical cores this process may use.
#[napi]
pub fn thread_count() -> u32 {
    coil_core::threads::physical_cores() as u32
}

/// Runs every kernel path this CPU supports against its scalar reference: JSON
/// `[{"path","max_rel_diff"}]`.
#[napi]
pub fn kernel_selfcheck() -> String {
    coil_core::kernels::selfcheck_json()
}

pub struct InspectFileTask {
    path: String,
    opts: InspectOptions,
}

impl Task for InspectFileTask {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> Result<String> {
        let path = std::path::PathBuf::from(&self.path);
        let opts = self.opts.clone();
        guard(|| {
            let mapped = MappedGguf::open(&path)?;
            Ok(inspect_json(&mapped.file, &opts))
        })
        .map_err(to_napi)
    }

    fn resolve(&mut self, _env: Env, output: String) -> Result<String> {
        Ok(output)
    }
}

/// Parses the GGUF header of the file at `path` (memory-mapped) and returns the inspection JSON.
#[napi(ts_return_type = "Promise<string>")]
pub fn inspect_file(path: String, array_head: Option<i32>, signal: Option<AbortSignal>) -> AsyncTask<InspectFileTask> {
    AsyncTask::with_optional_signal(InspectFileTask { path, opts: opts(array_head) }, signal)
}

/// Parses a GGUF header from `prefix`, the first bytes of a file of `file_size` bytes. Throws
/// GGUF_NEED_MORE (with the prefix length needed as offset) when the header extends past `prefix`.
#[napi]
pub fn inspect_bytes(prefix: &[u8], file_size: f64, array_head: Option<i32>) -> Result<String> {
    let o = opts(array_head);
    guard(|| {
        let file = GgufFile::parse(prefix, file_size as u64)?;
        Ok(inspect_json(&file, &o))
    })
    .map_err(to_napi)
}
