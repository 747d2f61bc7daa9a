//! Reading safetensors checkpoints: single files, `model-0000N-of-0000M.safetensors` shards with
//! their `model.safetensors.index.json`, and Mistral's `consolidated.safetensors`.
//!
//! Format (safetensors 0.x): a little-endian u64 `N`, then `N` bytes of UTF-8 JSON (possibly padded
//! with spaces), then the data. The JSON maps each tensor name to
//! `{"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}`, offsets relative to the first
//! byte after the header; the optional `__metadata__` entry maps strings to strings.
//!
//! Everything is checked when a file is opened, so that later reads cannot fail: the header length
//! against the file size, the JSON, every entry's dtype, shape and offsets, the byte count against
//! dtype size × element count, and that no two tensors overlap. Every problem is a
//! [`CoilError`](crate::CoilError) naming the file (and the tensor), never a panic. On native
//! targets files are memory-mapped, so a conversion touches one tensor's pages at a time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{CoilError, ErrorCode, Result};

/// Largest header accepted (the reference implementation's limit).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// The name of the index file of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// A malformed or inconsistent checkpoint. All format errors go through here, so their code can be
/// changed in one place.
fn bad(path: &Path, msg: impl std::fmt::Display) -> CoilError {
    CoilError::new(ErrorCode::InvalidArgument, format!("{}: {msg}", path.display()))
}

fn bad_at(path: &Path, offset: u64, msg: impl std::fmt::Display) -> CoilError {
    CoilError::at(ErrorCode::InvalidArgument, offset, format!("{}: {msg}", path.display()))
}

fn io(path: &Path, what: &str, e: std::io::Error) -> CoilError {
    CoilError::new(ErrorCode::Io, format!("cannot {what} {}: {e}", path.display()))
}

/// Element types of the safetensors format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StDtype {
    Bool,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
}

impl StDtype {
    pub fn from_name(s: &str) -> Option<StDtype> {
        use StDtype::*;
        Some(match s {
            "BOOL" => Bool,
            "U8" => U8,
            "I8" => I8,
            "F8_E5M2" => F8E5M2,
            "F8_E4M3" => F8E4M3,
            "I16" => I16,
            "U16" => U16,
            "F16" => F16,
            "BF16" => BF16,
            "I32" => I32,
            "U32" => U32,
            "F32" => F32,
            "F64" => F64,
            "I64" => I64,
            "U64" => U64,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use StDtype::*;
        match self {
            Bool => "BOOL",
            U8 => "U8",
            I8 => "I8",
            F8E5M2 => "F8_E5M2",
            F8E4M3 => "F8_E4M3",
            I16 => "I16",
            U16 => "U16",
            F16 => "F16",
            BF16 => "BF16",
            I32 => "I32",
            U32 => "U32",
            F32 => "F32",
            F64 => "F64",
            I64 => "I64",
            U64 => "U64",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> u64 {
        use StDtype::*;
        match self {
            Bool | U8 | I8 | F8E5M2 | F8E4M3 => 1,
            I16 | U16 | F16 | BF16 => 2,
            I32 | U32 | F32 => 4,
            F64 | I64 | U64 => 8,
        }
    }
}

impl std::fmt::Display for StDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of a safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StTensor {
    pub name: String,
    pub dtype: StDtype,
    /// PyTorch order: `shape[0]` is the outermost (slowest) dimension.
    pub shape: Vec<u64>,
    /// Index of the file in its [`Checkpoint`] (0 for a lone [`SafetensorsFile`]).
    pub file: usize,
    /// Absolute byte offset of the data in the file.
    pub start: u64,
    /// Byte length of the data.
    pub len: u64,
}

impl StTensor {
    /// Number of elements (1 for a scalar).
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// The parsed header of one safetensors file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StHeader {
    /// `__metadata__`, in the order of the JSON object's keys as the parser returns them.
    pub metadata: Vec<(String, String)>,
    /// The tensors, sorted by data offset.
    pub tensors: Vec<StTensor>,
    /// Absolute offset of the data section (8 + header length).
    pub data_start: u64,
}

/// Parses and checks a header. `prefix` must hold at least the first `8 + N` bytes of the file
/// (the whole file is fine); `file_len` is the file's size; `path` only names the file in errors.
pub fn parse_header(prefix: &[u8], file_len: u64, path: &Path) -> Result<StHeader> {
    if file_len < 8 || prefix.len() < 8 {
        return Err(bad_at(
            path,
            0,
            format!("{file_len} bytes is too short for a safetensors file (no header length)"),
        ));
    }
    let n = u64::from_le_bytes(prefix[..8].try_into().unwrap_or([0; 8]));
    if n > MAX_HEADER_LEN {
        return Err(bad_at(path, 0, format!("header length {n} exceeds the limit of {MAX_HEADER_LEN} bytes")));
    }
    let data_start = 8 + n;
    if data_start > file_len {
        return Err(bad_at(
            path,
            0,
            format!("header length {n} runs past the end of the file ({file_len} bytes): the file is truncated or not safetensors"),
        ));
    }
    let json = usize::try_from(data_start)
        .ok()
        .and_then(|end| prefix.get(8..end))
        .ok_or_else(|| bad_at(path, 8, format!("only {} bytes of the {n}-byte header are available", prefix.len())))?;
    let text =
        std::str::from_utf8(json).map_err(|e| bad_at(path, 8 + e.valid_up_to() as u64, "the header is not UTF-8"))?;
    let root: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad_at(path, 8, format!("the header is not valid JSON: {e}")))?;
    let obj = root.as_object().ok_or_else(|| bad_at(path, 8, "the header is not a JSON object"))?;
    let data_len = file_len - data_start;

    let mut metadata = Vec::new();
    let mut tensors = Vec::with_capacity(obj.len());
    for (name, v) in obj {
        if name == "__metadata__" {
            let m = v.as_object().ok_or_else(|| bad(path, "__metadata__ is not an object"))?;
            for (k, v) in m {
                let s = v.as_str().ok_or_else(|| bad(path, format!("__metadata__ entry \"{k}\" is not a string")))?;
                metadata.push((k.clone(), s.to_string()));
            }
            continue;
        }
        let t = |msg: String| bad(path, format!("tensor \"{name}\": {msg}"));
        let e = v.as_object().ok_or_else(|| t("the entry is not an object".into()))?;
        let dtype_s = e.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| t("no dtype".into()))?;
        let dtype = StDtype::from_name(dtype_s).ok_or_else(|| t(format!("unknown dtype \"{dtype_s}\"")))?;
        let shape_v = e.get("shape").and_then(|s| s.as_array()).ok_or_else(|| t("no shape".into()))?;
        let mut shape = Vec::with_capacity(shape_v.len());
        for d in shape_v {
            shape.push(d.as_u64().ok_or_else(|| t(format!("shape entry {d} is not a non-negative integer")))?);
        }
        let offs = e.get("data_offsets").and_then(|o| o.as_array()).ok_or_else(|| t("no data_offsets".into()))?;
        let (begin, end) = match offs.as_slice() {
            [a, b] => match (a.as_u64(), b.as_u64()) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(t("data_offsets are not non-negative integers".into())),
            },
            _ => return Err(t("data_offsets is not a pair [begin, end]".into())),
        };
        if end < begin {
            return Err(t(format!("data_offsets [{begin}, {end}] end before they begin")));
        }
        if end > data_len {
            return Err(bad_at(
                path,
                data_start.saturating_add(begin),
                format!(
                    "tensor \"{name}\": data_offsets [{begin}, {end}] lie outside the {data_len} data bytes of the file (truncated?)"
                ),
            ));
        }
        let n_el = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let want = n_el.and_then(|n| n.checked_mul(dtype.size()));
        if want != Some(end - begin) {
            return Err(t(format!(
                "{dtype} with shape {shape:?} needs {} bytes but data_offsets [{begin}, {end}] hold {}",
                want.map(|w| w.to_string()).unwrap_or_else(|| "too many".into()),
                end - begin
            )));
        }
        tensors.push(StTensor {
            name: name.clone(),
            dtype,
            shape,
            file: 0,
            start: data_start + begin,
            len: end - begin,
        });
    }
    tensors.sort_by_key(|t| (t.start, t.len));
    let mut prev: Option<&StTensor> = None;
    for t in &tensors {
        if t.len == 0 {
            continue;
        }
        if let Some(p) = prev {
            if t.start < p.start + p.len {
                return Err(bad_at(
                    path,
                    t.start,
                    format!("the data of tensors \"{}\" and \"{}\" overlap", p.name, t.name),
                ));
            }
        }
        prev = Some(t);
    }
    Ok(StHeader { metadata, tensors, data_start })
}

enum Backing {
    #[cfg(not(target_arch = "wasm32"))]
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Backing::Map(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// One opened, checked safetensors file.
pub struct SafetensorsFile {
    pub path: PathBuf,
    pub header: StHeader,
    backing: Backing,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

impl SafetensorsFile {
    /// Opens (memory-maps, on native targets) and checks `path`.
    pub fn open(path: &Path) -> Result<SafetensorsFile> {
        let f = std::fs::File::open(path).map_err(|e| io(path, "open", e))?;
        let len = f.metadata().map_err(|e| io(path, "stat", e))?.len();
        if len < 8 {
            return Err(bad_at(path, 0, format!("{len} bytes is too short for a safetensors file (no header length)")));
        }
        #[cfg(not(target_arch = "wasm32"))]
        let backing = {
            // SAFETY: read-only map. Another process truncating or rewriting the file while it is
            // mapped is outside what this program can guard against (as for every mapped file).
            Backing::Map(unsafe { memmap2::Mmap::map(&f) }.map_err(|e| io(path, "memory-map", e))?)
        };
        #[cfg(target_arch = "wasm32")]
        let backing = {
            drop(f);
            Backing::Owned(std::fs::read(path).map_err(|e| io(path, "read", e))?)
        };
        let bytes = backing.bytes();
        let header = parse_header(bytes, bytes.len() as u64, path)?;
        Ok(SafetensorsFile { path: path.to_path_buf(), header, backing })
    }

    /// A checked file over bytes already in memory (tests, wasm).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<SafetensorsFile> {
        let header = parse_header(&bytes, bytes.len() as u64, path)?;
        Ok(SafetensorsFile { path: path.to_path_buf(), header, backing: Backing::Owned(bytes) })
    }

    /// Tells the OS that bytes `[start, start + len)` of the file (absolute offsets) will not be
    /// read again soon, so that a conversion keeps only about one chunk of the checkpoint
    /// resident. Only a hint: the bytes stay readable (the map is a read-only file mapping, so the
    /// pages are simply read from the file again if touched). No-op off Unix.
    pub fn release(&self, start: u64, len: u64) {
        #[cfg(all(unix, not(target_arch = "wasm32")))]
        if let Backing::Map(m) = &self.backing {
            let (Ok(start), Ok(len)) = (usize::try_from(start), usize::try_from(len)) else { return };
            if len == 0 || start.saturating_add(len) > m.len() {
                return;
            }
            // SAFETY: MADV_DONTNEED on a read-only shared file mapping only drops cached pages;
            // later reads fault them back in from the file with the same contents.
            let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
        }
        #[cfg(not(all(unix, not(target_arch = "wasm32"))))]
        let _ = (start, len);
    }

    /// The data of a tensor of this file (its bounds were checked at open).
    pub fn data(&self, t: &StTensor) -> &[u8] {
        let b = self.backing.bytes();
        let s = t.start as usize;
        let e = s.saturating_add(t.len as usize);
        b.get(s..e).unwrap_or(&[])
    }
}

/// All the safetensors files of a checkpoint, with one index over their tensors.
#[derive(Debug)]
pub struct Checkpoint {
    pub files: Vec<SafetensorsFile>,
    /// Every tensor, in file order then data order.
    pub tensors: Vec<StTensor>,
    by_name: HashMap<String, usize>,
}

/// A file name from an index that stays inside the model directory.
fn plain_file_name(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty()
        && p.components().count() == 1
        && matches!(p.components().next(), Some(std::path::Component::Normal(_)))
}

impl Checkpoint {
    /// Opens the checkpoint in `dir`: `model.safetensors.index.json` and the shards it names, else
    /// every `model*.safetensors`, else every `consolidated*.safetensors` (sorted by name).
    pub fn open_dir(dir: &Path) -> Result<Checkpoint> {
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            return Self::open_index(dir, &index);
        }
        let mut names = list_with(dir, "model", ".safetensors")?;
        if names.is_empty() {
            names = list_with(dir, "consolidated", ".safetensors")?;
        }
        if names.is_empty() {
            let bins = list_with(dir, "pytorch_model", ".bin")?;
            let msg = if bins.is_empty() {
                format!(
                    "{}: no model weights found (model.safetensors, {INDEX_FILE} with its shards, or consolidated.safetensors)",
                    dir.display()
                )
            } else {
                format!(
                    "{}: only PyTorch .bin weights ({}) were found; coil converts safetensors checkpoints only (re-save the model with safetensors)",
                    dir.display(),
                    bins.join(", ")
                )
            };
            return Err(CoilError::new(ErrorCode::InvalidArgument, msg));
        }
        let mut files = Vec::with_capacity(names.len());
        for n in &names {
            files.push(SafetensorsFile::open(&dir.join(n))?);
        }
        Self::from_files(files)
    }

    fn open_index(dir: &Path, index: &Path) -> Result<Checkpoint> {
        let text = std::fs::read_to_string(index).map_err(|e| io(index, "read", e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(index, format!("not valid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| bad(index, "has no \"weight_map\" object"))?;
        let mut shard_names: Vec<String> = Vec::new();
        let mut wanted: Vec<(String, String)> = Vec::with_capacity(map.len());
        for (tensor, file) in map {
            let file =
                file.as_str().ok_or_else(|| bad(index, format!("weight_map entry \"{tensor}\" is not a file name")))?;
            if !plain_file_name(file) {
                return Err(bad(
                    index,
                    format!(
                        "weight_map entry \"{tensor}\" names \"{file}\", which is not a file in the model directory"
                    ),
                ));
            }
            if !shard_names.iter().any(|s| s == file) {
                shard_names.push(file.to_string());
            }
            wanted.push((tensor.clone(), file.to_string()));
        }
        shard_names.sort();
        let mut files = Vec::with_capacity(shard_names.len());
        for s in &shard_names {
            let p = dir.join(s);
            if !p.is_file() {
                return Err(CoilError::new(
                    ErrorCode::Io,
                    format!("{}: the shard {} named by {INDEX_FILE} is missing", p.display(), s),
                ));
            }
            files.push(SafetensorsFile::open(&p)?);
        }
        let ck = Self::from_files(files)?;
        for (tensor, file) in &wanted {
            match ck.get(tensor) {
                Some(t) if ck.files[t.file].path.file_name().and_then(|n| n.to_str()) == Some(file.as_str()) => {}
                Some(t) => {
                    return Err(bad(
                        index,
                        format!(
                            "says tensor \"{tensor}\" is in {file}, but it is in {}",
                            ck.files[t.file].path.display()
                        ),
                    ))
                }
                None => {
                    return Err(bad(
                        &dir.join(file),
                        format!("has no tensor \"{tensor}\", which {INDEX_FILE} says it holds (incomplete shard?)"),
                    ))
                }
            }
        }
        if let Some(extra) = ck.tensors.iter().find(|t| !map.contains_key(&t.name)) {
            return Err(bad(
                &ck.files[extra.file].path,
                format!("holds tensor \"{}\", which {INDEX_FILE} does not list", extra.name),
            ));
        }
        Ok(ck)
    }

    /// A checkpoint over already opened files (their order is the file numbering).
    pub fn from_files(mut files: Vec<SafetensorsFile>) -> Result<Checkpoint> {
        let mut tensors = Vec::new();
        let mut by_name = HashMap::new();
        for (i, f) in files.iter_mut().enumerate() {
            for t in &mut f.header.tensors {
                t.file = i;
            }
        }
        for f in &files {
            for t in &f.header.tensors {
                if let Some(&j) = by_name.get(&t.name) {
                    let other: &StTensor = &tensors[j];
                    return Err(bad(
                        &f.path,
                        format!("tensor \"{}\" appears twice (also in {})", t.name, files[other.file].path.display()),
                    ));
                }
                by_name.insert(t.name.clone(), tensors.len());
                tensors.push(t.clone());
            }
        }
        Ok(Checkpoint { files, tensors, by_name })
    }

    pub fn get(&self, name: &str) -> Option<&StTensor> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of `t` (a tensor of this checkpoint).
    pub fn data(&self, t: &StTensor) -> &[u8] {
        self.files.get(t.file).map(|f| f.data(t)).unwrap_or(&[])
    }

    /// [`SafetensorsFile::release`] for bytes `[from, from + len)` of the data of `t`.
    pub fn release(&self, t: &StTensor, from: u64, len: u64) {
        if let Some(f) = self.files.get(t.file) {
            f.release(t.start.saturating_add(from), len.min(t.len.saturating_sub(from)));
        }
    }

    /// The path of the file holding `t`.
    pub fn path_of(&self, t: &StTensor) -> &Path {
        self.files.get(t.file).map(|f| f.path.as_path()).unwrap_or(Path::new("?"))
    }
}

/// File names in `dir` starting with `prefix` and ending with `suffix`, sorted.
fn list_with(dir: &Path, prefix: &str, suffix: &str) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| io(dir, "list", e))?;
    let mut v = Vec::new();
    for e in rd {
        let e = e.map_err(|e| io(dir, "list", e))?;
        if let Some(n) = e.file_name().to_str() {
            if n.starts_with(prefix) && n.ends_with(suffix) && e.path().is_file() {
                v.push(n.to_string());
            }
        }
    }
    v.sort();
    Ok(v)
}

/// Writes a safetensors file from `(name, dtype, shape, bytes)` entries, in order (tests and
/// tools; the JSON is padded with spaces to a multiple of 8 as the reference writer does).
pub fn write_safetensors(tensors: &[(&str, StDtype, &[u64], &[u8])], metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut header = String::from("{");
    let mut first = true;
    if !metadata.is_empty() {
        header.push_str("\"__metadata__\":{");
        for (i, (k, v)) in metadata.iter().enumerate() {
            if i > 0 {
                header.push(',');
            }
            header.push_str(&format!("{}:{}", crate::error::json_string(k), crate::error::json_string(v)));
        }
        header.push('}');
        first = false;
    }
    let mut off = 0u64;
    for (name, dtype, shape, data) in tensors {
        if !first {
            header.push(',');
        }
        first = false;
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        header.push_str(&format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            crate::error::json_string(name),
            dtype.name(),
            dims.join(","),
            off,
            off + data.len() as u64
        ));
        off += data.len() as u64;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + off as usize);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for (_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("x.safetensors")
    }

    #[test]
    fn round_trip_and_checks() {
        let a = [0u8; 8];
        let b = [1u8; 6];
        let bytes =
            write_safetensors(&[("a", StDtype::F32, &[2], &a), ("b", StDtype::F16, &[3, 1], &b)], &[("format", "pt")]);
        let h = parse_header(&bytes, bytes.len() as u64, p()).unwrap();
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.metadata, vec![("format".to_string(), "pt".to_string())]);
        let f = SafetensorsFile::from_bytes(p(), bytes.clone()).unwrap();
        let tb = f.header.tensors.iter().find(|t| t.name == "b").unwrap();
        assert_eq!(f.data(tb), &b);

        // Truncated data.
        let e = parse_header(&bytes[..bytes.len() - 1], bytes.len() as u64 - 1, p()).unwrap_err();
        assert!(e.message.contains("\"b\""), "{}", e.message);
        // Header length past EOF.
        let mut bad_len = bytes.clone();
        bad_len[..8].copy_from_slice(&(1u64 << 20).to_le_bytes());
        assert!(parse_header(&bad_len, bad_len.len() as u64, p()).unwrap_err().message.contains("runs past"));
        // Too short.
        assert!(parse_header(&bytes[..4], 4, p()).is_err());
    }

    #[test]
    fn overlap_and_size_mismatch() {
        let hdr = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
        let mut bytes = (hdr.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(hdr.as_bytes());
        bytes.extend_from_slice(&[0u8; 12]);
        let e = parse_header(&bytes, bytes.len() as u64, p()).unwrap_err();
        assert!(e.message.contains("overlap"), "{}", e.message);

        let hdr = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        let mut bytes = (hdr.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(hdr.as_bytes());
        bytes.extend_from_slice(&[0u8; 8]);
        let e = parse_header(&bytes, bytes.len() as u64, p()).unwrap_err();
        assert!(e.message.contains("\"a\"") && e.message.contains("needs 12 bytes"), "{}", e.message);

        let hdr = r#"{"a":{"dtype":"Q4","shape":[3],"data_offsets":[0,8]}}"#;
        let mut bytes = (hdr.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(hdr.as_bytes());
        assert!(parse_header(&bytes, bytes.len() as u64, p()).unwrap_err().message.contains("unknown dtype"));

        let hdr = "{not json";
        let mut bytes = (hdr.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(hdr.as_bytes());
        assert!(parse_header(&bytes, bytes.len() as u64, p()).unwrap_err().message.contains("not valid JSON"));
    }

    #[test]
    fn mutated_headers_never_panic() {
        let a = [0u8; 16];
        let b = [1u8; 6];
        let good =
            write_safetensors(&[("a", StDtype::F32, &[2, 2], &a), ("b", StDtype::BF16, &[3], &b)], &[("k", "v")]);
        let mut rng = crate::util::SplitMix64::new(5);
        for _ in 0..20000 {
            let mut m = good.clone();
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(m.len() as u64) as usize;
                m[i] = rng.next_u64() as u8;
            }
            if rng.below(4) == 0 {
                m.truncate(rng.below(m.len() as u64 + 1) as usize);
            }
            if let Ok(h) = parse_header(&m, m.len() as u64, p()) {
                for t in &h.tensors {
                    assert!(t.start + t.len <= m.len() as u64);
                }
            }
        }
    }

    #[test]
    fn huge_shapes_do_not_overflow() {
        let hdr = r#"{"a":{"dtype":"F64","shape":[18446744073709551615,4],"data_offsets":[0,8]}}"#;
        let mut bytes = (hdr.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(hdr.as_bytes());
        bytes.extend_from_slice(&[0u8; 8]);
        assert!(parse_header(&bytes, bytes.len() as u64, p()).is_err());
    }
}
