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
