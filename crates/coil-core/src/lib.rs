//! coil-core: the engine. GGUF files, tensor types, (later) kernels, models, recurrent state memory,
//! tokenizers and sampling. No JavaScript here: `coil-node` and `coil-wasm` are thin bindings over
//! this crate, so both targets run exactly the same code.

pub mod context;
pub mod convert;
pub mod cpu;
pub mod error;
pub mod generate;
pub mod gguf;
#[cfg(not(target_arch = "wasm32"))]
pub mod job;
pub mod kernels;
pub mod model;
pub mod quant;
pub mod sampling;
pub mod threads;
pub mod tokenizer;
pub mod util;

pub use error::{CoilError, ErrorCode, Result};
