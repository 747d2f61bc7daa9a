//! Memory-mapped GGUF files (native targets only).

use std::path::Path;

use super::file::{GgufFile, TensorInfo};
use crate::error::{CoilError, ErrorCode, Result};

/// A GGUF file mapped into memory, with its parsed header.
pub struct MappedGguf {
    pub file: GgufFile,
    /// `None` for an empty file, which cannot be mapped.
    map: Option<memmap2::Mmap>,
}

impl std::fmt::Debug for MappedGguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedGguf").field("file", &self.file).finish_non_exhaustive()
    }
}

impl MappedGguf {
    /// Opens and maps `path` and parses its header. I/O errors name the path.
    pub fn open(path: &Path) -> Result<MappedGguf> {
        let io = |what: &str, e: std::io::Error| {
            CoilError::new(ErrorCode::Io, format!("cannot {what} {}: {e}", path.display()))
        };
        let f = std::fs::File::open(path).map_err(|e| io("open", e))?;
        let len = f.metadata().map_err(|e| io("stat", e))?.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only. As with any mapped file, another process truncating
            // or rewriting it while mapped is outside what this program can guard against.
            Some(unsafe { memmap2::Mmap::map(&f) }.map_err(|e| io("memory-map", e))?)
        };
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
        let file = GgufFile::parse(bytes, bytes.len() as u64).map_err(|mut e| {
            e.message = format!("{}: {}", path.display(), e.message);
            e
        })?;
        Ok(MappedGguf { file, map })
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// The data of tensor `t` (`None` when its size is unknown).
    pub fn tensor_data(&self, t: &TensorInfo) -> Option<&[u8]> {
        let r = self.file.tensor_range(t)?;
        let start = usize::try_from(r.start).ok()?;
        let end = usize::try_from(r.end).ok()?;
        self.bytes().get(start..end)
    }
}
