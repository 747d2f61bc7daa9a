//! GGUF reading and writing.
//!
//! Layout (little-endian, versions 2 and 3): magic `GGUF`, u32 version, u64 tensor count, u64
//! metadata count, the metadata key/value pairs, the tensor infos, zero padding up to the alignment
//! (`general.alignment`, default 32), then the data section. Tensor offsets are relative to the
//! start of the data section.
//!
//! * [`GgufFile::parse`] reads the header from a prefix of the file (a chunked reader loops on
//!   [`ErrorCode::GgufNeedMore`](crate::ErrorCode::GgufNeedMore)); every malformed input is a
//!   typed [`CoilError`](crate::CoilError) with the byte offset of the problem, never a panic.
//! * [`MappedGguf`] memory-maps a file (native targets only).
//! * [`GgufWriter`] builds files; [`write_header`] and [`layout_tensors`] serve streaming writers.
//! * [`inspect::inspect_json`] describes a file as JSON for the JS bindings.

mod file;
pub mod inspect;
#[cfg(not(target_arch = "wasm32"))]
mod mapped;
mod reader;
mod types;
mod value;
mod writer;

pub use file::{GgufFile, TensorInfo};
#[cfg(not(target_arch = "wasm32"))]
pub use mapped::MappedGguf;
pub use types::GgmlType;
pub use value::{GgufArray, GgufValue, GgufValueType};
pub use writer::{layout_tensors, write_header, GgufWriter};

/// The GGUF magic, the first four bytes of every file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section and of tensor offsets when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides the alignment (a u32 power of two).
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Most dimensions a tensor may have (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of arrays inside arrays that the reader accepts (llama.cpp accepts none).
pub const MAX_ARRAY_DEPTH: u32 = 8;

/// `x` rounded up to a multiple of `align` (a power of two), or `None` on overflow.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    let mask = align.wrapping_sub(1);
    x.checked_add(mask).map(|v| v & !mask)
}
