//! GGUF writing: a builder for whole files ([`GgufWriter`]) and the pieces a streaming writer needs
//! ([`write_header`], [`layout_tensors`]).
//!
//! Files come out canonical, as llama.cpp's and gguf-py's writers lay them out: metadata and
//! tensor infos in insertion order, tensor data in the same order at offsets rounded up to the
//! alignment, all padding zero, and the file padded to the alignment at the end.

use std::collections::HashSet;
use std::io::Write;

use super::file::{GgufFile, TensorInfo};
use super::types::GgmlType;
use super::value::{GgufArray, GgufValue};
use super::{align_up, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS};
use crate::error::{CoilError, ErrorCode, Result};

fn bad_arg(msg: impl Into<String>) -> CoilError {
    CoilError::new(ErrorCode::InvalidArgument, msg)
}

const ZEROS: [u8; 256] = [0u8; 256];

fn write_zeros<W: Write>(w: &mut W, mut n: u64) -> Result<()> {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64);
        w.write_all(&ZEROS[..k as usize])?;
        n -= k;
    }
    Ok(())
}

/// Counts the bytes written through it.
struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_string<W: Write>(w: &mut W, s: &str) -> Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())?;
    Ok(())
}

/// A value's payload (without its type id).
fn write_value_payload<W: Write>(w: &mut W, v: &GgufValue) -> Result<()> {
    match v {
        GgufValue::U8(x) => w.write_all(&x.to_le_bytes())?,
        GgufValue::I8(x) => w.write_all(&x.to_le_bytes())?,
        GgufValue::U16(x) => w.write_all(&x.to_le_bytes())?,
        GgufValue::I16(x) => w.write_all(&x.to_le_bytes())?,
        GgufValue::U32(x) => w.write_all(&x.to_le_bytes())?,
        GgufValue::I32(x) => w.write_all(&x.to_le_bytes())?,
        GgufValue::F32(x) => w.write_all(&x.to_le_bytes())?,
        GgufValue::Bool(x) => w.write_all(&[*x as u8])?,
        GgufValue::String(s) => write_string(w, s)?,
        GgufValue::Array(a) => write_array(w, a)?,
        GgufValue::U64(x) => w.write_all(&x.to_le_bytes())?,
        GgufValue::I64(x) => w.write_all(&x.to_le_bytes())?,
        GgufValue::F64(x) => w.write_all(&x.to_le_bytes())?,
    }
    Ok(())
}

/// An array body: element type id, count, elements (inner arrays as bodies of their own).
fn write_array<W: Write>(w: &mut W, a: &GgufArray) -> Result<()> {
    w.write_all(&a.elem_type().id().to_le_bytes())?;
    w.write_all(&(a.len() as u64).to_le_bytes())?;
    macro_rules! each {
        ($v:expr) => {{
            for x in $v {
                w.write_all(&x.to_le_bytes())?;
            }
        }};
    }
    match a {
        GgufArray::U8(v) => w.write_all(v)?,
        GgufArray::I8(v) => each!(v),
        GgufArray::U16(v) => each!(v),
        GgufArray::I16(v) => each!(v),
        GgufArray::U32(v) => each!(v),
        GgufArray::I32(v) => each!(v),
        GgufArray::F32(v) => each!(v),
        GgufArray::Bool(v) => {
            for &b in v {
                w.write_all(&[b as u8])?;
            }
        }
        GgufArray::String(v) => {
            for s in v {
                write_string(w, s)?;
            }
        }
        GgufArray::U64(v) => each!(v),
        GgufArray::I64(v) => each!(v),
        GgufArray::F64(v) => each!(v),
        GgufArray::Array(v) => {
            for inner in v {
                write_array(w, inner)?;
            }
        }
    }
    Ok(())
}

fn array_depth(a: &GgufArray) -> u32 {
    match a {
        GgufArray::Array(v) => 1 + v.iter().map(array_depth).max().unwrap_or(0),
        _ => 1,
    }
}

/// The alignment that `metadata` asks for, checked.
fn metadata_alignment(metadata: &[(String, GgufValue)]) -> Result<Option<u64>> {
    match metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
        None => Ok(None),
        Some((_, GgufValue::U32(a))) if a.is_power_of_two() => Ok(Some(*a as u64)),
        Some((_, v)) => {
            Err(bad_arg(format!("{ALIGNMENT_KEY} must be a u32 nonzero power of two, not {} {v:?}", v.type_name())))
        }
    }
}

fn check_header(version: u32, metadata: &[(String, GgufValue)], tensors: &[TensorInfo], alignment: u64) -> Result<()> {
    if version != 2 && version != 3 {
        return Err(bad_arg(format!("cannot write GGUF version {version} (only 2 and 3)")));
    }
    if alignment == 0 || !alignment.is_power_of_two() || alignment > u32::MAX as u64 {
        return Err(bad_arg(format!("alignment {alignment} is not a u32 power of two")));
    }
    if let Some(a) = metadata_alignment(metadata)? {
        if a != alignment {
            return Err(bad_arg(format!("alignment {alignment} contradicts {ALIGNMENT_KEY} = {a}")));
        }
    }
    let mut keys = HashSet::with_capacity(metadata.len());
    for (k, v) in metadata {
        if !keys.insert(k.as_str()) {
            return Err(bad_arg(format!("duplicate metadata key \"{k}\"")));
        }
        if let GgufValue::Array(a) = v {
            if array_depth(a) > MAX_ARRAY_DEPTH {
                return Err(bad_arg(format!("\"{k}\" nests arrays more than {MAX_ARRAY_DEPTH} deep")));
            }
        }
    }
    let mut names = HashSet::with_capacity(tensors.len());
    for t in tensors {
        if !names.insert(t.name.as_str()) {
            return Err(bad_arg(format!("duplicate tensor name \"{}\"", t.name)));
        }
        if t.dims.len() > MAX_DIMS {
            return Err(bad_arg(format!("tensor \"{}\" has {} dims (at most {MAX_DIMS})", t.name, t.dims.len())));
        }
        if !t.offset.is_multiple_of(alignment) {
            return Err(bad_arg(format!(
                "tensor \"{}\" offset {} is not a multiple of the alignment {alignment}",
                t.name, t.offset
            )));
        }
    }
    Ok(())
}

fn write_header_impl<W: Write>(
    w: &mut W,
    version: u32,
    metadata: &[(String, GgufValue)],
    tensors: &[TensorInfo],
    alignment: u64,
    pad: bool,
) -> Result<u64> {
    check_header(version, metadata, tensors, alignment)?;
    let mut c = Counting { inner: w, n: 0 };
    c.write_all(&GGUF_MAGIC)?;
    c.write_all(&version.to_le_bytes())?;
    c.write_all(&(tensors.len() as u64).to_le_bytes())?;
    c.write_all(&(metadata.len() as u64).to_le_bytes())?;
    for (k, v) in metadata {
        write_string(&mut c, k)?;
        c.write_all(&v.value_type().id().to_le_bytes())?;
        write_value_payload(&mut c, v)?;
    }
    for t in tensors {
        write_string(&mut c, &t.name)?;
        c.write_all(&(t.dims.len() as u32).to_le_bytes())?;
        for d in &t.dims {
            c.write_all(&d.to_le_bytes())?;
        }
        c.write_all(&t.type_id.to_le_bytes())?;
        c.write_all(&t.offset.to_le_bytes())?;
    }
    if pad {
        let end = align_up(c.n, alignment).ok_or_else(|| bad_arg("header size overflows"))?;
        let gap = end - c.n;
        write_zeros(&mut c, gap)?;
    }
    Ok(c.n)
}

/// Writes a GGUF header: magic, version, counts, metadata, the tensor infos exactly as given
/// (offsets included) and zero padding to `alignment`. Returns the data section offset (the number
/// of bytes written). Use [`layout_tensors`] first for canonical offsets, then write each tensor's
/// data at `data_offset + offset`, zero-padding the gaps.
///
/// `alignment` must be a power of two and agree with `general.alignment` if the metadata has it.
/// Duplicate keys or tensor names, tensors with more than 4 dims and misaligned offsets are
/// refused (`InvalidArgument`), so that what is written can be read back.
pub fn write_header<W: Write>(
    w: &mut W,
    version: u32,
    metadata: &[(String, GgufValue)],
    tensors: &[TensorInfo],
    alignment: u64,
) -> Result<u64> {
    write_header_impl(w, version, metadata, tensors, alignment, true)
}

/// Sets canonical offsets: tensors in slice order, each at the previous one's end rounded up to
/// `alignment`. A tensor's size is `size` if set, else computed from its type and dims (0 if
/// unknown). Returns the size of the data section including the padding after the last tensor.
/// `alignment` should be a power of two; anything else is rounded up to one.
pub fn layout_tensors(tensors: &mut [TensorInfo], alignment: u64) -> u64 {
    let align = alignment.max(1).checked_next_power_of_two().unwrap_or(1 << 63);
    let up = |x: u64| align_up(x, align).unwrap_or(!(align - 1));
    let mut end = 0u64;
    for t in tensors.iter_mut() {
        t.offset = up(end);
        let size = t.size.or_else(|| t.computed_size()).unwrap_or(0);
        end = t.offset.saturating_add(size);
    }
    up(end)
}

#[derive(Clone)]
struct PendingTensor {
    info: TensorInfo,
    data: Vec<u8>,
}

/// Builds a GGUF file in memory from metadata and tensors.
///
/// The alignment is 32 unless the metadata sets `general.alignment` (a u32 power of two).
#[derive(Clone)]
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, GgufValue)>,
    tensors: Vec<PendingTensor>,
    trailing_padding: bool,
}

impl std::fmt::Debug for GgufWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufWriter")
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.iter().map(|t| &t.info).collect::<Vec<_>>())
            .field("trailing_padding", &self.trailing_padding)
            .finish()
    }
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// A writer for GGUF version 3.
    pub fn new() -> Self {
        Self::with_version(3)
    }

    /// A writer for GGUF version `v` (2 or 3; others are refused when writing).
    pub fn with_version(v: u32) -> Self {
        GgufWriter { version: v, metadata: Vec::new(), tensors: Vec::new(), trailing_padding: true }
    }

    /// Adds a metadata pair; a key that is already present gets the new value in its old place.
    pub fn add_metadata(&mut self, key: impl Into<String>, value: GgufValue) -> &mut Self {
        let key = key.into();
        match self.metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key, value)),
        }
        self
    }

    /// Adds a tensor. For a known type, `data` must be exactly the bytes the dims take (and the
    /// row length a whole number of blocks); for an unknown type id any length is taken as is.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: Vec<u64>,
        type_id: u32,
        data: Vec<u8>,
    ) -> Result<&mut Self> {
        let name = name.into();
        if self.tensors.iter().any(|t| t.info.name == name) {
            return Err(bad_arg(format!("duplicate tensor name \"{name}\"")));
        }
        if dims.len() > MAX_DIMS {
            return Err(bad_arg(format!("tensor \"{name}\" has {} dims (at most {MAX_DIMS})", dims.len())));
        }
        let mut n: u64 = 1;
        for &d in &dims {
            n = match n.checked_mul(d) {
                Some(n) if n <= i64::MAX as u64 && d <= i64::MAX as u64 => n,
                _ => return Err(bad_arg(format!("the element count of tensor \"{name}\" overflows"))),
            };
        }
        let mut info = TensorInfo::new(name, dims, type_id);
        match GgmlType::from_id(type_id) {
            Some(t) => {
                let ne0 = info.dims.first().copied().unwrap_or(1);
                if !ne0.is_multiple_of(t.block_size()) {
                    return Err(bad_arg(format!(
                        "tensor \"{}\": row length {ne0} is not a multiple of the {t} block size {}",
                        info.name,
                        t.block_size()
                    )));
                }
                let want = info.size.ok_or_else(|| bad_arg(format!("tensor \"{}\" is too large", info.name)))?;
                if want != data.len() as u64 {
                    return Err(bad_arg(format!(
                        "tensor \"{}\" ({t}, dims {:?}) takes {want} bytes, but {} were given",
                        info.name,
                        info.dims,
                        data.len()
                    )));
                }
            }
            None => info.size = Some(data.len() as u64),
        }
        self.tensors.push(PendingTensor { info, data });
        Ok(self)
    }

    /// Whether the file ends padded to the alignment (default true, as llama.cpp and gguf-py
    /// write). Old vocab-only files end right after the header; `from_file` keeps that.
    pub fn set_trailing_padding(&mut self, pad: bool) -> &mut Self {
        self.trailing_padding = pad;
        self
    }

    /// The metadata pairs so far, in order.
    pub fn metadata(&self) -> &[(String, GgufValue)] {
        &self.metadata
    }

    /// The alignment the file will have.
    pub fn alignment(&self) -> Result<u64> {
        Ok(metadata_alignment(&self.metadata)?.unwrap_or(DEFAULT_ALIGNMENT))
    }

    /// The tensor infos with the offsets they will be written at.
    pub fn tensor_infos(&self) -> Result<Vec<TensorInfo>> {
        let alignment = self.alignment()?;
        let mut infos: Vec<TensorInfo> = self.tensors.iter().map(|t| t.info.clone()).collect();
        layout_tensors(&mut infos, alignment);
        Ok(infos)
    }

    /// Writes the whole file.
    pub fn write_to<W: Write>(&self, w: &mut W) -> Result<()> {
        let alignment = self.alignment()?;
        let infos = self.tensor_infos()?;
        let mut bw = std::io::BufWriter::with_capacity(1 << 16, w);
        let pad_header = !infos.is_empty() || self.trailing_padding;
        write_header_impl(&mut bw, self.version, &self.metadata, &infos, alignment, pad_header)?;
        let mut pos = 0u64; // within the data section
        for (t, info) in self.tensors.iter().zip(&infos) {
            write_zeros(&mut bw, info.offset - pos)?;
            bw.write_all(&t.data)?;
            pos = info.offset + t.data.len() as u64;
        }
        if !infos.is_empty() && self.trailing_padding {
            let end = align_up(pos, alignment).ok_or_else(|| bad_arg("data section size overflows"))?;
            write_zeros(&mut bw, end - pos)?;
        }
        bw.flush()?;
        Ok(())
    }

    /// The whole file as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.write_to(&mut v)?;
        Ok(v)
    }

    /// A writer holding everything in `file`, whose bytes (the whole file) are `data`: writing it
    /// reproduces a canonical file byte for byte. The data of a tensor of unknown type is taken
    /// to run up to the next tensor's data (or the end of the file).
    pub fn from_file(file: &GgufFile, data: &[u8]) -> Result<GgufWriter> {
        let mut w = GgufWriter::with_version(file.version);
        w.metadata = file.metadata.clone();
        w.trailing_padding = file.alignment != 0 && file.file_size.is_multiple_of(file.alignment);
        let oob = |t: &TensorInfo| {
            CoilError::new(
                ErrorCode::GgufTensorOutOfBounds,
                format!("the data of tensor \"{}\" is not inside the {} bytes given", t.name, data.len()),
            )
        };
        for t in &file.tensors {
            let range = match file.tensor_range(t) {
                Some(r) => r,
                None => {
                    // Unknown size: up to the next tensor's start, or the end of the data.
                    let start = file.data_offset.checked_add(t.offset).ok_or_else(|| oob(t))?;
                    let end = file
                        .tensors
                        .iter()
                        .filter_map(|u| file.data_offset.checked_add(u.offset))
                        .filter(|&s| s > start)
                        .min()
                        .unwrap_or(data.len() as u64);
                    start..end
                }
            };
            let bytes = usize::try_from(range.start)
                .ok()
                .zip(usize::try_from(range.end).ok())
                .and_then(|(s, e)| data.get(s..e))
                .ok_or_else(|| oob(t))?;
            w.tensors.push(PendingTensor {
                info: TensorInfo { offset: 0, size: Some(bytes.len() as u64), ..t.clone() },
                data: bytes.to_vec(),
            });
        }
        Ok(w)
    }
}
