//! The GGUF header parser. Every read is bounds-checked against both the bytes at hand (the
//! prefix) and the declared file size; counts and lengths are checked against the bytes that are
//! left before anything is allocated for them, and all arithmetic on input values is checked.

use std::collections::HashSet;

use super::file::{GgufFile, TensorInfo};
use super::types::GgmlType;
use super::value::{GgufArray, GgufValue, GgufValueType};
use super::{align_up, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, MAX_ARRAY_DEPTH, MAX_DIMS};
use crate::error::{CoilError, ErrorCode, Result};

/// A count or length whose minimum encoded size exceeds this many bytes (256 TiB) is called
/// absurd (`GgufInvalid`) rather than a sign of truncation.
const MAX_PLAUSIBLE_BYTES: u64 = 1 << 48;
/// Smallest first request a `GgufNeedMore` makes.
const MIN_NEED_MORE: u64 = 64 * 1024;
/// Upper bound on any capacity reserved up front; vectors grow past it as elements are read.
const MAX_RESERVE: usize = 1 << 16;
/// Fewest bytes a metadata pair takes: key length (8), value type (4), a one-byte value.
const MIN_KV_SIZE: u64 = 8 + 4 + 1;
/// Fewest bytes a tensor info takes: name length (8), n_dims (4), type (4), offset (8).
const MIN_TENSOR_INFO_SIZE: u64 = 8 + 4 + 4 + 8;

fn invalid(at: u64, msg: impl Into<String>) -> CoilError {
    CoilError::at(ErrorCode::GgufInvalid, at, msg)
}

struct Cursor<'a> {
    buf: &'a [u8],
    file_size: u64,
    pos: u64,
}

impl<'a> Cursor<'a> {
    fn remaining_in_file(&self) -> u64 {
        self.file_size.saturating_sub(self.pos)
    }

    fn remaining_in_buf(&self) -> u64 {
        (self.buf.len() as u64).saturating_sub(self.pos)
    }

    fn need_more(&self, end: u64, what: &str) -> CoilError {
        let have = self.buf.len() as u64;
        let suggest = have.saturating_mul(2).max(MIN_NEED_MORE).min(self.file_size);
        CoilError::at(
            ErrorCode::GgufNeedMore,
            end.max(suggest),
            format!("the GGUF header continues past the first {have} bytes (reading {what})"),
        )
    }

    fn truncated(&self, at: u64, what: &str, need: u64) -> CoilError {
        CoilError::at(
            ErrorCode::GgufTruncated,
            at,
            format!(
                "file truncated: {what} at byte {at} needs {need} bytes but the file ({} bytes) ends first",
                self.file_size
            ),
        )
    }

    /// Checks that `n` more bytes exist from the current position, in the file and in the prefix.
    /// `at` is where the structure being read starts (for the error).
    fn ensure(&self, n: u64, at: u64, what: &str) -> Result<()> {
        let end = match self.pos.checked_add(n) {
            Some(e) if e <= self.file_size => e,
            _ => return Err(self.truncated(at, what, n.saturating_add(self.pos.saturating_sub(at)))),
        };
        if end > self.buf.len() as u64 {
            return Err(self.need_more(end, what));
        }
        Ok(())
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        self.ensure(n, self.pos, what)?;
        let start = self.pos;
        let end = start + n; // cannot overflow: checked in ensure
        let s = self.buf.get(start as usize..end as usize).ok_or_else(|| self.truncated(start, what, n))?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Checks that `count` items of at least `min_size` bytes each can follow the current
    /// position; `at` is where the structure that declares the count starts.
    fn check_count(&self, count: u64, min_size: u64, at: u64, what: &str) -> Result<()> {
        let need = match count.checked_mul(min_size) {
            Some(n) if n <= MAX_PLAUSIBLE_BYTES => n,
            _ => {
                return Err(invalid(
                    at,
                    format!("absurd {what}: {count} (it would take at least {count} x {min_size} bytes)"),
                ))
            }
        };
        if need > self.remaining_in_file() {
            return Err(CoilError::at(
                ErrorCode::GgufTruncated,
                at,
                format!(
                    "file truncated or corrupt: {what} {count} needs at least {need} bytes, but only {} remain in the file",
                    self.remaining_in_file()
                ),
            ));
        }
        // Fits in the file: if it does not fit in the prefix, ask for at least that much at once.
        if need > self.remaining_in_buf() {
            return Err(self.need_more(self.pos + need, what));
        }
        Ok(())
    }

    /// Capacity to reserve for `count` items of at least `min_size` bytes: never more than the
    /// prefix could hold.
    fn reserve(&self, count: u64, min_size: u64) -> usize {
        let fits = self.remaining_in_buf() / min_size.max(1);
        count.min(fits).min(MAX_RESERVE as u64) as usize
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos;
        let len = self.u64(what)?;
        if len > MAX_PLAUSIBLE_BYTES {
            return Err(invalid(at, format!("absurd length {len} of {what}")));
        }
        self.ensure(len, at, what)?;
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(CoilError::at(
                ErrorCode::GgufBadUtf8,
                at + 8 + e.valid_up_to() as u64,
                format!("{what} is not valid UTF-8"),
            )),
        }
    }

    fn value_type(&mut self, what: &str) -> Result<GgufValueType> {
        let at = self.pos;
        let id = self.u32(what)?;
        GgufValueType::from_id(id).ok_or_else(|| invalid(at, format!("invalid value type {id} for {what}")))
    }

    fn value(&mut self, t: GgufValueType, what: &str) -> Result<GgufValue> {
        Ok(match t {
            GgufValueType::U8 => GgufValue::U8(self.array::<1>(what)?[0]),
            GgufValueType::I8 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            GgufValueType::U16 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            GgufValueType::I16 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            GgufValueType::U32 => GgufValue::U32(self.u32(what)?),
            GgufValueType::I32 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            GgufValueType::F32 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            GgufValueType::Bool => GgufValue::Bool(self.bool(what)?),
            GgufValueType::String => GgufValue::String(self.string(what)?),
            GgufValueType::Array => GgufValue::Array(self.array_value(what, 1)?),
            GgufValueType::U64 => GgufValue::U64(self.u64(what)?),
            GgufValueType::I64 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            GgufValueType::F64 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
        })
    }

    fn bool(&mut self, what: &str) -> Result<bool> {
        let at = self.pos;
        match self.array::<1>(what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(invalid(at, format!("bool {what} has byte value {b} (must be 0 or 1)"))),
        }
    }

    /// An array body (element type, count, elements); `depth` is 1 for a top-level array.
    fn array_value(&mut self, what: &str, depth: u32) -> Result<GgufArray> {
        let at = self.pos;
        if depth > MAX_ARRAY_DEPTH {
            return Err(invalid(at, format!("arrays nested more than {MAX_ARRAY_DEPTH} deep in {what}")));
        }
        let et = self.value_type(what)?;
        let count = self.u64(what)?;
        self.check_count(count, et.min_size(), at, &format!("element count of {what}"))?;
        if let Some(size) = et.fixed_size() {
            // The whole body is present (check_count made sure): take it in one piece.
            let body = self.take(count * size, what)?;
            return decode_fixed(et, body, at + 12, what);
        }
        let mut cap = self.reserve(count, et.min_size());
        match et {
            GgufValueType::String => {
                let mut v = Vec::with_capacity(cap);
                for _ in 0..count {
                    v.push(self.string(what)?);
                }
                Ok(GgufArray::String(v))
            }
            _ => {
                cap = cap.min(MAX_RESERVE / 4);
                let mut v = Vec::with_capacity(cap);
                for _ in 0..count {
                    v.push(self.array_value(what, depth + 1)?);
                }
                Ok(GgufArray::Array(v))
            }
        }
    }
}

/// Decodes `body`, a run of fixed-size little-endian elements of type `et` starting at file
/// offset `at`.
fn decode_fixed(et: GgufValueType, body: &[u8], at: u64, what: &str) -> Result<GgufArray> {
    fn le<const N: usize, T>(body: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        body.chunks_exact(N)
            .map(|c| {
                let mut a = [0u8; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect()
    }
    Ok(match et {
        GgufValueType::U8 => GgufArray::U8(body.to_vec()),
        GgufValueType::I8 => GgufArray::I8(le(body, i8::from_le_bytes)),
        GgufValueType::U16 => GgufArray::U16(le(body, u16::from_le_bytes)),
        GgufValueType::I16 => GgufArray::I16(le(body, i16::from_le_bytes)),
        GgufValueType::U32 => GgufArray::U32(le(body, u32::from_le_bytes)),
        GgufValueType::I32 => GgufArray::I32(le(body, i32::from_le_bytes)),
        GgufValueType::F32 => GgufArray::F32(le(body, f32::from_le_bytes)),
        GgufValueType::U64 => GgufArray::U64(le(body, u64::from_le_bytes)),
        GgufValueType::I64 => GgufArray::I64(le(body, i64::from_le_bytes)),
        GgufValueType::F64 => GgufArray::F64(le(body, f64::from_le_bytes)),
        GgufValueType::Bool => {
            let mut v = Vec::with_capacity(body.len());
            for (i, &b) in body.iter().enumerate() {
                match b {
                    0 => v.push(false),
                    1 => v.push(true),
                    _ => {
                        return Err(invalid(
                            at + i as u64,
                            format!("bool element {i} of {what} has byte value {b} (must be 0 or 1)"),
                        ))
                    }
                }
            }
            GgufArray::Bool(v)
        }
        GgufValueType::String | GgufValueType::Array => {
            return Err(invalid(at, format!("internal: {} is not a fixed-size type", et.name())))
        }
    })
}

/// Header positions of one tensor info, for error offsets.
struct InfoPos {
    offset_field: u64,
}

pub(super) fn parse(prefix: &[u8], file_size: u64) -> Result<GgufFile> {
    // Bytes past the declared end of the file do not belong to it.
    let buf = match usize::try_from(file_size) {
        Ok(fs) if fs < prefix.len() => prefix.get(..fs).unwrap_or(prefix),
        _ => prefix,
    };
    let mut c = Cursor { buf, file_size, pos: 0 };

    // Magic: judge whatever part of it is at hand before asking for more.
    let head = buf.get(..buf.len().min(4)).unwrap_or(&[]);
    if head != &GGUF_MAGIC[..head.len()] {
        return Err(CoilError::at(
            ErrorCode::GgufBadMagic,
            0,
            format!("not a GGUF file: it starts with {:02x?}, expected \"GGUF\"", head),
        ));
    }
    c.take(4, "the magic")?;

    let version = c.u32("the version")?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(CoilError::at(
                ErrorCode::GgufUnsupportedVersion,
                4,
                "GGUF version 1 is not supported (only versions 2 and 3)",
            ))
        }
        v if v != 0 && v & 0xFFFF == 0 => {
            return Err(CoilError::at(
                ErrorCode::GgufUnsupportedVersion,
                4,
                format!(
                    "big-endian GGUF (version {} byte-swapped) is not supported: only little-endian files are",
                    v.swap_bytes()
                ),
            ))
        }
        v => {
            return Err(CoilError::at(
                ErrorCode::GgufUnsupportedVersion,
                4,
                format!("GGUF version {v} is not supported (only versions 2 and 3)"),
            ))
        }
    }

    let n_tensors = c.u64("the tensor count")?;
    let n_kv = c.u64("the metadata count")?;
    // Both counts together must fit in the rest of the file at their smallest encodings.
    let t_min = n_tensors.checked_mul(MIN_TENSOR_INFO_SIZE);
    let kv_min = n_kv.checked_mul(MIN_KV_SIZE);
    match (t_min, kv_min) {
        (None, _) | (Some(MAX_PLAUSIBLE_BYTES..), _) => {
            return Err(invalid(8, format!("absurd tensor count {n_tensors}")));
        }
        (_, None) | (_, Some(MAX_PLAUSIBLE_BYTES..)) => {
            return Err(invalid(16, format!("absurd metadata count {n_kv}")));
        }
        (Some(t), Some(kv)) => {
            let need = t + kv; // both < 2^48: no overflow
            if need > c.remaining_in_file() {
                let at = if t > c.remaining_in_file() { 8 } else { 16 };
                return Err(CoilError::at(
                    ErrorCode::GgufTruncated,
                    at,
                    format!(
                        "file truncated or corrupt: {n_kv} metadata pairs and {n_tensors} tensor infos need at least {need} bytes, but only {} remain",
                        c.remaining_in_file()
                    ),
                ));
            }
        }
    }

    // Metadata.
    let mut metadata: Vec<(String, GgufValue)> = Vec::with_capacity(c.reserve(n_kv, MIN_KV_SIZE));
    let mut keys: HashSet<String> = HashSet::with_capacity(c.reserve(n_kv, MIN_KV_SIZE));
    let mut alignment_at = None;
    for i in 0..n_kv {
        let key_at = c.pos;
        let key = c.string(&format!("metadata key #{i}"))?;
        if !keys.insert(key.clone()) {
            return Err(invalid(key_at, format!("duplicate metadata key \"{key}\"")));
        }
        let what = format!("metadata value \"{key}\"");
        let t = c.value_type(&what)?;
        let value_at = c.pos;
        let value = c.value(t, &what)?;
        if key == ALIGNMENT_KEY {
            alignment_at = Some(value_at);
        }
        metadata.push((key, value));
    }

    // Tensor infos.
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(c.reserve(n_tensors, MIN_TENSOR_INFO_SIZE));
    let mut positions: Vec<InfoPos> = Vec::with_capacity(tensors.capacity());
    let mut names: HashSet<String> = HashSet::with_capacity(tensors.capacity());
    for i in 0..n_tensors {
        let name_at = c.pos;
        let name = c.string(&format!("the name of tensor #{i}"))?;
        if !names.insert(name.clone()) {
            return Err(invalid(name_at, format!("duplicate tensor name \"{name}\"")));
        }
        let dims_at = c.pos;
        let n_dims = c.u32(&format!("the dimension count of tensor \"{name}\""))?;
        if n_dims as usize > MAX_DIMS {
            return Err(invalid(
                dims_at,
                format!("tensor \"{name}\" has {n_dims} dimensions (at most {MAX_DIMS} are allowed)"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut n_elements: u64 = 1;
        for d in 0..n_dims {
            let at = c.pos;
            let ne = c.u64(&format!("dimension {d} of tensor \"{name}\""))?;
            if ne > i64::MAX as u64 {
                return Err(invalid(at, format!("dimension {d} of tensor \"{name}\" is absurd ({ne})")));
            }
            n_elements = match n_elements.checked_mul(ne) {
                Some(n) if n <= i64::MAX as u64 => n,
                _ => {
                    return Err(invalid(
                        at,
                        format!("the element count of tensor \"{name}\" overflows (dims so far {dims:?} x {ne})"),
                    ))
                }
            };
            dims.push(ne);
        }
        let type_id = c.u32(&format!("the type of tensor \"{name}\""))?;
        let offset_field = c.pos;
        let offset = c.u64(&format!("the data offset of tensor \"{name}\""))?;
        let ggml_type = GgmlType::from_id(type_id);
        let size = match ggml_type {
            None => None,
            Some(t) => {
                let ne0 = dims.first().copied().unwrap_or(1);
                if !ne0.is_multiple_of(t.block_size()) {
                    return Err(invalid(
                        dims_at,
                        format!(
                            "tensor \"{name}\": row length {ne0} is not a multiple of the {} block size {}",
                            t.name(),
                            t.block_size()
                        ),
                    ));
                }
                match t.bytes_for(n_elements) {
                    Some(s) => Some(s),
                    None => return Err(invalid(dims_at, format!("the byte size of tensor \"{name}\" overflows"))),
                }
            }
        };
        tensors.push(TensorInfo { name, dims, type_id, ggml_type, offset, size });
        positions.push(InfoPos { offset_field });
    }
    let header_end = c.pos;

    // Alignment.
    let alignment = match (metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY), alignment_at) {
        (Some((_, GgufValue::U32(a))), _) if a.is_power_of_two() => *a as u64,
        (Some((_, GgufValue::U32(a))), at) => {
            return Err(invalid(at.unwrap_or(0), format!("{ALIGNMENT_KEY} is {a}: it must be a nonzero power of two")))
        }
        (Some((_, v)), at) => {
            return Err(invalid(
                at.unwrap_or(0),
                format!("{ALIGNMENT_KEY} has type {} (it must be u32)", v.type_name()),
            ))
        }
        (None, _) => DEFAULT_ALIGNMENT,
    };
    let data_offset =
        align_up(header_end, alignment).ok_or_else(|| invalid(header_end, "the data section offset overflows"))?;

    // Tensor placement: aligned, inside the file, not overlapping.
    let mut spans: Vec<(u64, u64, usize)> = Vec::with_capacity(tensors.len());
    for (i, (t, p)) in tensors.iter().zip(&positions).enumerate() {
        if !t.offset.is_multiple_of(alignment) {
            return Err(CoilError::at(
                ErrorCode::GgufMisaligned,
                p.offset_field,
                format!(
                    "tensor \"{}\" has data offset {}, which is not a multiple of the alignment {alignment}",
                    t.name, t.offset
                ),
            ));
        }
        let out_of_bounds = |start: u64, end: Option<u64>| {
            let range = match end {
                Some(e) => format!("[{start}, {e})"),
                None => format!("starting at {start} (beyond u64)"),
            };
            CoilError::at(
                ErrorCode::GgufTensorOutOfBounds,
                p.offset_field,
                format!(
                    "the data of tensor \"{}\" ({} bytes at absolute offset {range}) lies outside the file ({file_size} bytes)",
                    t.name,
                    t.size.map_or("unknown".to_string(), |s| s.to_string())
                ),
            )
        };
        let start = match data_offset.checked_add(t.offset) {
            Some(s) if s <= file_size => s,
            Some(s) => return Err(out_of_bounds(s, t.size.and_then(|z| s.checked_add(z)))),
            None => return Err(out_of_bounds(t.offset, None)),
        };
        if let Some(size) = t.size {
            match start.checked_add(size) {
                Some(end) if end <= file_size => {
                    if size > 0 {
                        spans.push((start, end, i));
                    }
                }
                end => return Err(out_of_bounds(start, end)),
            }
        }
    }
    spans.sort_unstable();
    let mut prev: Option<(u64, usize)> = None; // (furthest end so far, its tensor)
    for &(start, end, i) in &spans {
        if let Some((prev_end, j)) = prev {
            if start < prev_end {
                let (a, b) = (&tensors[j], &tensors[i]);
                return Err(CoilError::at(
                    ErrorCode::GgufTensorOverlap,
                    positions[i].offset_field,
                    format!(
                        "the data of tensors \"{}\" (offset {}, {} bytes) and \"{}\" (offset {}, {} bytes) overlap",
                        a.name,
                        a.offset,
                        a.size.unwrap_or(0),
                        b.name,
                        b.offset,
                        b.size.unwrap_or(0)
                    ),
                ));
            }
            if end > prev_end {
                prev = Some((end, i));
            }
        } else {
            prev = Some((end, i));
        }
    }

    Ok(GgufFile { version, metadata, tensors, alignment, data_offset, file_size })
}
