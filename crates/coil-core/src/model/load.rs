//! How the bindings load a model: one decision, in the core, for both targets.

use super::Model;
use crate::error::Result;

impl Model {
    /// Whether a chunked load should go on to fetch weights after the header: the file has
    /// tensors and the caller did not ask for the vocabulary only. A file without tensors (a
    /// vocabulary GGUF) is complete after its header.
    pub fn wants_weights(&self, vocab_only: bool) -> bool {
        !vocab_only && !self.file().tensors.is_empty()
    }

    /// Opens a GGUF by path on native: memory-mapped header and tokenizer, plus the weights unless
    /// `vocab_only` or the file has no tensors.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_with(path: &std::path::Path, vocab_only: bool) -> Result<Model> {
        let mapped = crate::gguf::MappedGguf::open(path)?;
        if vocab_only || mapped.file.tensors.is_empty() {
            Model::from_header(mapped.file)
        } else {
            Model::load_mapped(mapped)
        }
    }

    /// `weights_plan` flattened for JS: `[tensor_index, file_offset, length, ...]` as f64 (exact
    /// below 2^53 bytes).
    pub fn weights_plan_flat(&mut self) -> Result<Vec<f64>> {
        Ok(self.weights_plan()?.into_iter().flat_map(|(i, o, l)| [i as f64, o as f64, l as f64]).collect())
    }
}
