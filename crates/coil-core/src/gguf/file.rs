//! The parsed header of a GGUF file.

use super::reader;
use super::types::GgmlType;
use super::value::{GgufArray, GgufValue};
use crate::error::Result;

/// One tensor's entry in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` (ne0) is the contiguous one.
    pub dims: Vec<u64>,
    /// The raw ggml type id as stored in the file.
    pub type_id: u32,
    /// `None` when this build does not know `type_id` (reported, not fatal).
    pub ggml_type: Option<GgmlType>,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes; `None` when the type is unknown.
    pub size: Option<u64>,
}

impl TensorInfo {
    /// A tensor info at offset 0 with `ggml_type` and `size` derived from `type_id` and `dims`
    /// (`size` is `None` for an unknown type, or dims that are not whole blocks or overflow).
    pub fn new(name: impl Into<String>, dims: Vec<u64>, type_id: u32) -> TensorInfo {
        let ggml_type = GgmlType::from_id(type_id);
        let mut t = TensorInfo { name: name.into(), dims, type_id, ggml_type, offset: 0, size: None };
        t.size = t.computed_size();
        t
    }

    /// Number of elements (the product of the dims; 1 for zero dims). Saturates at u64::MAX for
    /// hand-built infos; parsed ones never overflow.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// "Q4_K", or "UNKNOWN(42)" for a type id this build does not know.
    pub fn type_name(&self) -> String {
        match self.ggml_type {
            Some(t) => t.name().to_string(),
            None => format!("UNKNOWN({})", self.type_id),
        }
    }

    /// The byte size implied by the type and dims, when the type is known and the row length is a
    /// whole number of blocks.
    pub fn computed_size(&self) -> Option<u64> {
        let t = self.ggml_type?;
        let ne0 = self.dims.first().copied().unwrap_or(1);
        if !ne0.is_multiple_of(t.block_size()) {
            return None;
        }
        let mut n = 1u64;
        for &d in &self.dims {
            n = n.checked_mul(d)?;
        }
        t.bytes_for(n)
    }
}

/// The header of a GGUF file: metadata, tensor infos and where the data lies.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFile {
    pub version: u32,
    /// Key/value pairs in file order (keys are unique).
    pub metadata: Vec<(String, GgufValue)>,
    /// Tensor infos in file order (names are unique).
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section and of tensor offsets.
    pub alignment: u64,
    /// Absolute offset of the data section (the end of the header rounded up to `alignment`).
    pub data_offset: u64,
    /// Size of the whole file in bytes.
    pub file_size: u64,
}

impl GgufFile {
    /// Parses the header from `prefix`, the first bytes of a file of `file_size` bytes (the prefix
    /// may be the whole file, or shorter).
    ///
    /// If the header runs past the end of `prefix` but not past `file_size`, the error has code
    /// `GgufNeedMore` and `offset = Some(n)` with `prefix.len() < n <= file_size`: a prefix of `n`
    /// bytes gets further (at least twice as long as this one, and at least as long as the
    /// structure that did not fit). A header that runs past `file_size` is `GgufTruncated`.
    /// Bytes of `prefix` beyond `file_size` are ignored.
    pub fn parse(prefix: &[u8], file_size: u64) -> Result<GgufFile> {
        reader::parse(prefix, file_size)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }

    /// Any non-negative integer value.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }

    /// Any integer or float value.
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }

    pub fn get_array(&self, key: &str) -> Option<&GgufArray> {
        self.get(key)?.as_array()
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// The value of `{architecture}.{suffix}`, e.g. `arch_get("block_count")`.
    pub fn arch_get(&self, suffix: &str) -> Option<&GgufValue> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.{suffix}"))
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Absolute byte range of a tensor's data in the file (`None` when its size is unknown).
    pub fn tensor_range(&self, t: &TensorInfo) -> Option<std::ops::Range<u64>> {
        let start = self.data_offset.checked_add(t.offset)?;
        let end = start.checked_add(t.size?)?;
        Some(start..end)
    }
}
