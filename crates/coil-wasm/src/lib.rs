//! WebAssembly binding of coil-core, built by wasm-pack with simd128. Thin by design: it converts
//! arguments, calls coil-core and converts back; errors are thrown as JS `Error`s whose message is
//! `CoilError::to_wire()`, exactly as the native binding does, so the facade treats both alike.
//! The wasm side never needs a whole file: the facade hands over byte ranges (a header prefix now,
//! tensor chunks later) from a Blob, File, ArrayBuffer or, in Node, a file path.

use coil_core::gguf::inspect::{inspect_json, InspectOptions};
use coil_core::gguf::GgufFile;
use coil_core::CoilError;
use wasm_bindgen::prelude::*;

mod model;

pub(crate) fn to_js(e: CoilError) -> JsValue {
    js_sys::Error::new(&e.to_wire()).into()
}

/// Version of the wasm engine.
#[wasm_bindgen(js_name = engineVersion)]
pub fn engine_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// SIMD instruction sets compiled into this module.
#[wasm_bindgen(js_name = cpuFeatures)]
pub fn cpu_features() -> Vec<String> {
    coil_core::cpu::features().into_iter().map(String::from).collect()
}

/// Runs every kernel path in this module (scalar and simd128) against the scalar reference: JSON
/// `[{"path","max_rel_diff"}]`.
#[wasm_bindgen(js_name = kernelSelfcheck)]
pub fn kernel_selfcheck() -> String {
    coil_core::kernels::selfcheck_json()
}

/// Parses a GGUF header from `prefix`, the first bytes of a file of `file_size` bytes. Throws
/// GGUF_NEED_MORE (with the prefix length needed as offset) when the header extends past `prefix`.
/// `array_head` < 0 returns arrays in full.
#[wasm_bindgen(js_name = inspectBytes)]
pub fn inspect_bytes(prefix: &[u8], file_size: f64, array_head: i32) -> Result<String, JsValue> {
    let opts = InspectOptions { array_head: (array_head >= 0).then_some(array_head as usize) };
    let file = GgufFile::parse(prefix, file_size as u64).map_err(to_js)?;
    Ok(inspect_json(&file, &opts))
}

/// Threads a job of this module can use: 1 for the single-threaded module, the pool's workers + 1
/// for the threaded one once the host has started them.
#[wasm_bindgen(js_name = threadCount)]
pub fn thread_count() -> u32 {
    coil_core::threads::physical_cores() as u32
}

/// Whether this is the threaded module (built with atomics; needs shared memory).
#[wasm_bindgen(js_name = isThreaded)]
pub fn is_threaded() -> bool {
    cfg!(target_feature = "atomics")
}

#[cfg(target_feature = "atomics")]
mod threads {
    use coil_core::threads::wasm_pool;
    use wasm_bindgen::prelude::*;

    /// Creates the module's thread pool for `n_workers` workers and returns its address, which
    /// each worker passes to `threadPoolWorker` (host side: ts/core/wasm-threads.ts).
    #[wasm_bindgen(js_name = threadPoolCreate)]
    pub fn thread_pool_create(n_workers: u32) -> u32 {
        wasm_pool::create(n_workers as usize) as u32
    }

    /// Runs one pool worker on the calling Worker; does not return while the pool lives.
    #[wasm_bindgen(js_name = threadPoolWorker)]
    pub fn thread_pool_worker(addr: u32) {
        wasm_pool::worker(addr as usize)
    }

    /// Address of the pool's broken flag (see `wasm_pool::broken_flag`).
    #[wasm_bindgen(js_name = threadPoolBrokenFlag)]
    pub fn thread_pool_broken_flag(addr: u32) -> u32 {
        wasm_pool::broken_flag(addr as usize) as u32
    }
}

/// Tasks the pool's workers have run so far (always 0 for the single-threaded module): lets tests
/// and diagnostics see that the workers take part.
#[wasm_bindgen(js_name = threadPoolWorkerTasks)]
pub fn thread_pool_worker_tasks() -> f64 {
    #[cfg(target_feature = "atomics")]
    {
        coil_core::threads::wasm_pool::worker_tasks() as f64
    }
    #[cfg(not(target_feature = "atomics"))]
    {
        0.0
    }
}

/// Kernel benchmark support for `bench/wasm-kernels.mjs`: `reps` products of a `rows × cols`
/// matrix of type `ty` with `tokens` tokens, one thread (the caller times it). Returns a checksum.
#[wasm_bindgen(js_name = benchMatmul)]
pub fn bench_matmul(ty: &str, rows: u32, cols: u32, tokens: u32, reps: u32) -> Result<f64, JsValue> {
    coil_core::kernels::bench_matmul(ty, rows as usize, cols as usize, tokens as usize, reps as usize)
        .ok_or_else(|| js_sys::Error::new("benchMatmul: unknown type or bad shape").into())
}
