//! Quantizing a whole GGUF file, as `llama-quantize` does without an importance matrix.
//!
//! The output is what `llama-quantize IN OUT <FTYPE>` writes, byte for byte, for the file types
//! of [`QuantTarget`] (checked against llama-quantize itself by the tests, see
//! `tests/fixtures/quant/README.md`):
//! * metadata: every key of the input in its order, except that `general.quantization_version`
//!   (u32 2) and `general.file_type` (u32, the LLAMA_FTYPE number) are removed and appended at
//!   the end in that order (ggml's `gguf_set_val_*` remove-then-append), and `split.*` keys are
//!   dropped; GGUF version 3;
//! * tensors in llama.cpp's loader order (outside-layer tensors first, then by `blk.N` number,
//!   then by name), dims written without trailing 1s (`ggml_n_dims`), data aligned to the
//!   file's alignment with zero padding, also after the last tensor;
//! * types chosen by [`super::rules`]; source tensors that keep their type are copied unchanged,
//!   others are converted to f32 (from F32, F16, BF16 or any type [`super::dequantize_row`]
//!   reads, so quantized files can be requantized) and quantized with ggml's reference
//!   quantizers.
//!
//! Deliberate differences: a non-default `general.alignment` is honoured for the padding
//! (llama-quantize keeps the key but pads to 32, producing an inconsistent file), quantized
//! sources are requantized without asking (llama-quantize wants `--allow-requantize`), and split
//! (multi-file) inputs are refused.
//!
//! The file is written to a temporary file next to the output and renamed over it at the end;
//! an error or an abort from the progress callback removes the temporary file and leaves any
//! existing output untouched. Memory use is bounded by a slab of rows (about 4 MiB of f32 per
//! thread), not by tensor size; rows are quantized on all cores.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::rules::{self, ggml_n_dims, quantization_blocker, MixState, ModelFacts, QuantTarget};
use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::{layout_tensors, write_header, GgmlType, GgufValue, MappedGguf, TensorInfo};

/// `GGML_QNT_VERSION`, written to `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;
const KEY_QNT_VERSION: &str = "general.quantization_version";
const KEY_FILE_TYPE: &str = "general.file_type";
const SPLIT_KEYS: [&str; 3] = ["split.no", "split.count", "split.tensors.count"];
/// f32 values converted per thread per step.
const SLAB_ELEMENTS: usize = 1 << 20;

/// Options of [`quantize_gguf_with`].
#[derive(Debug, Clone)]
pub struct QuantOptions {
    /// The file type to produce.
    pub target: QuantTarget,
    /// `llama-quantize --pure`: no mixture rules, every quantizable tensor gets the target's
    /// type (still subject to the row-length fallback).
    pub pure: bool,
    /// Worker threads; 0 = all available cores. The output does not depend on it.
    pub threads: usize,
}

impl QuantOptions {
    pub fn new(target: QuantTarget) -> QuantOptions {
        QuantOptions { target, pure: false, threads: 0 }
    }
}

/// Reported to the progress callback after every tensor (and every slab of a large one).
#[derive(Debug, Clone)]
pub struct QuantProgress {
    /// 0-based index of the tensor being processed, in output order.
    pub tensor_index: usize,
    pub tensor_count: usize,
    pub tensor_name: String,
    /// Bytes of source tensor data processed so far, over all tensors.
    pub bytes_done: u64,
    /// Bytes of source tensor data in the file.
    pub bytes_total: u64,
}

/// How a tensor's output type was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TensorDecision {
    /// The target's default type.
    Target,
    /// A llama-quantize mixture rule chose another type.
    Rule(&'static str),
    /// The row length is not a multiple of the wanted type's block size.
    Fallback { wanted: GgmlType, rule: Option<&'static str> },
    /// llama-quantize never quantizes this tensor: it keeps its type.
    NotQuantizable(&'static str),
}

/// One tensor of a [`QuantReport`].
#[derive(Debug, Clone)]
pub struct TensorReport {
    pub name: String,
    /// Dims as written (ggml order, trailing 1s dropped).
    pub dims: Vec<u64>,
    pub from: GgmlType,
    pub to: GgmlType,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub decision: TensorDecision,
}

impl TensorReport {
    /// Why the tensor did not get the target's type, or kept its own: `None` when it was
    /// converted to the target type.
    pub fn reason(&self) -> Option<String> {
        match &self.decision {
            TensorDecision::Target if self.from == self.to => Some(format!("already {}", self.to)),
            TensorDecision::Target => None,
            TensorDecision::Rule(r) => Some(r.to_string()),
            TensorDecision::Fallback { wanted, rule } => Some(format!(
                "{}row length {} is not a multiple of the {wanted} block size {} -> {}",
                rule.map(|r| format!("{r}; ")).unwrap_or_default(),
                self.dims.first().copied().unwrap_or(1),
                wanted.block_size(),
                self.to
            )),
            TensorDecision::NotQuantizable(why) => Some(format!("not quantized: {why}")),
        }
    }
}

/// What [`quantize_gguf`] did.
#[derive(Debug, Clone)]
pub struct QuantReport {
    pub target: QuantTarget,
    /// The `general.file_type` written.
    pub ftype: u32,
    /// Every tensor, in output order.
    pub tensors: Vec<TensorReport>,
    /// Sum of tensor data sizes in the input and the output.
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Size of the output file.
    pub file_size: u64,
    /// Tensors that needed a row-length fallback.
    pub n_fallback: usize,
}

impl QuantReport {
    /// The report as JSON (for the bindings): `{target, ftype, bytesBefore, bytesAfter, fileSize,
    /// nFallback, tensors: [{name, dims, from, to, bytesBefore, bytesAfter, reason}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "target": self.target.name(),
            "ftype": self.ftype,
            "bytesBefore": self.bytes_before,
            "bytesAfter": self.bytes_after,
            "fileSize": self.file_size,
            "nFallback": self.n_fallback,
            "tensors": self.tensors.iter().map(|t| serde_json::json!({
                "name": t.name,
                "dims": t.dims,
                "from": t.from.name(),
                "to": t.to.name(),
                "bytesBefore": t.bytes_before,
                "bytesAfter": t.bytes_after,
                "reason": t.reason(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Quantizes `input` to plain type `target` (file type [`QuantTarget::from_type`]: Q4_K means
/// Q4_K_S, Q5_K means Q5_K_S), with llama-quantize's default rules. `progress` is called after
/// every tensor and slab; returning `false` aborts (error code `Aborted`, no output written).
pub fn quantize_gguf(
    input: &Path,
    output: &Path,
    target: GgmlType,
    progress: &mut dyn FnMut(QuantProgress) -> bool,
) -> Result<QuantReport> {
    let t = QuantTarget::from_type(target).ok_or_else(|| {
        CoilError::new(
            ErrorCode::UnsupportedType,
            format!("cannot quantize a file to {target}: supported are F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K"),
        )
    })?;
    quantize_gguf_with(input, output, &QuantOptions::new(t), progress)
}

struct Plan {
    src: TensorInfo,
    dims: Vec<u64>,
    from: GgmlType,
    to: GgmlType,
    decision: TensorDecision,
}

/// Removes the temporary file unless committed.
struct TempFile {
    path: PathBuf,
    committed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CoilError {
    CoilError::new(ErrorCode::Io, format!("cannot {what} {}: {e}", path.display()))
}

fn create_temp(output: &Path) -> Result<(File, TempFile)> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = output
        .file_name()
        .ok_or_else(|| CoilError::new(ErrorCode::InvalidArgument, format!("{} is not a file path", output.display())))?
        .to_string_lossy()
        .into_owned();
    let pid = std::process::id();
    for n in 0u32..1000 {
        let path = dir.join(format!(".{base}.coil-quant-{pid}-{n}.tmp"));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((f, TempFile { path, committed: false })),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err("create", &path, e)),
        }
    }
    Err(CoilError::new(ErrorCode::Io, format!("cannot create a temporary file in {}", dir.display())))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn model_facts(m: &MappedGguf) -> ModelFacts {
    let f = &m.file;
    let arch = f.architecture().unwrap_or("").to_string();
    let get = |k: &str| f.get(&format!("{arch}.{k}")).and_then(|v| v.as_i64());
    ModelFacts {
        n_layer: get("block_count").unwrap_or(0),
        n_expert: get("expert_count").unwrap_or(0),
        tied_embeddings: f.tensor("output.weight").is_none(),
        n_attention_wv: f
            .tensors
            .iter()
            .filter(|t| {
                matches!(
                    rules::category(&t.name),
                    rules::Category::AttnV | rules::Category::AttnQkv | rules::Category::AttnKvB
                )
            })
            .count() as i64,
        arch,
    }
}

fn plan(m: &MappedGguf, opts: &QuantOptions) -> Result<Vec<Plan>> {
    let facts = model_facts(m);
    let mut order: Vec<&TensorInfo> = m.file.tensors.iter().collect();
    order.sort_by(|a, b| rules::llama_tensor_order(&a.name, &b.name));
    let default = opts.target.default_type();
    let mut st = MixState::default();
    let mut plans = Vec::with_capacity(order.len());
    for t in order {
        let from = t.ggml_type.ok_or_else(|| {
            CoilError::new(
                ErrorCode::UnsupportedType,
                format!("tensor \"{}\" has type id {}, which this build does not know", t.name, t.type_id),
            )
        })?;
        let n_dims = ggml_n_dims(&t.dims);
        let dims: Vec<u64> = (0..n_dims).map(|i| t.dims.get(i).copied().unwrap_or(1)).collect();
        let row_len = dims[0];
        let (to, decision) = if let Some(why) = quantization_blocker(&t.name, n_dims) {
            (from, TensorDecision::NotQuantizable(why))
        } else if default.is_quantized() {
            let (wanted, rule) = if opts.pure {
                (default, None)
            } else {
                rules::mixture_type(opts.target, &facts, &mut st, &t.name, row_len)?
            };
            let to = rules::fallback_type(wanted, row_len);
            let decision = if to != wanted {
                TensorDecision::Fallback { wanted, rule }
            } else if let Some(r) = rule {
                TensorDecision::Rule(r)
            } else {
                TensorDecision::Target
            };
            (to, decision)
        } else {
            (default, TensorDecision::Target)
        };
        if to != from {
            if !super::is_supported(from) {
                return Err(CoilError::new(
                    ErrorCode::UnsupportedType,
                    format!("tensor \"{}\" is {from}, which this build cannot convert to {to}", t.name),
                ));
            }
            if !super::is_supported(to) {
                return Err(CoilError::new(
                    ErrorCode::UnsupportedType,
                    format!("tensor \"{}\" would need type {to}, which this build cannot write", t.name),
                ));
            }
        }
        plans.push(Plan { src: t.clone(), dims, from, to, decision });
    }
    Ok(plans)
}

fn out_metadata(m: &MappedGguf, ftype: u32) -> Vec<(String, GgufValue)> {
    let mut md: Vec<(String, GgufValue)> = m
        .file
        .metadata
        .iter()
        .filter(|(k, _)| k != KEY_QNT_VERSION && k != KEY_FILE_TYPE && !SPLIT_KEYS.contains(&k.as_str()))
        .cloned()
        .collect();
    md.push((KEY_QNT_VERSION.to_string(), GgufValue::U32(QUANTIZATION_VERSION)));
    md.push((KEY_FILE_TYPE.to_string(), GgufValue::U32(ftype)));
    md
}

/// Quantizes `input` to `opts.target` and writes `output`. See the module docs.
pub fn quantize_gguf_with(
    input: &Path,
    output: &Path,
    opts: &QuantOptions,
    progress: &mut dyn FnMut(QuantProgress) -> bool,
) -> Result<QuantReport> {
    if same_file(input, output) {
        return Err(CoilError::new(
            ErrorCode::InvalidArgument,
            format!("the output {} is the input file; write to another path", output.display()),
        ));
    }
    let m = MappedGguf::open(input)?;
    if m.file.get_u64("split.count").is_some_and(|n| n > 1) {
        return Err(CoilError::new(
            ErrorCode::InvalidArgument,
            format!(
                "{} is one part of a split GGUF; merge the parts first (llama-gguf-split --merge)",
                input.display()
            ),
        ));
    }
    let plans = plan(&m, opts)?;
    let ftype = opts.target.ftype();
    let metadata = out_metadata(&m, ftype);
    let alignment = m.file.alignment;

    let mut infos: Vec<TensorInfo> =
        plans.iter().map(|p| TensorInfo::new(p.src.name.clone(), p.dims.clone(), p.to.id())).collect();
    for (info, p) in infos.iter().zip(&plans) {
        if info.size.is_none() {
            return Err(CoilError::new(
                ErrorCode::InvalidArgument,
                format!("tensor \"{}\" ({}, dims {:?}) has no valid size", p.src.name, p.to, p.dims),
            ));
        }
    }
    let data_size = layout_tensors(&mut infos, alignment);

    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    }
    .clamp(1, 256);

    let (file, mut temp) = create_temp(output)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let data_offset = write_header(&mut w, 3, &metadata, &infos, alignment)?;

    let bytes_total: u64 = plans.iter().map(|p| p.src.size.unwrap_or(0)).sum();
    let mut bytes_done = 0u64;
    let tensor_count = plans.len();
    let mut pos = 0u64; // within the data section
    let mut reports = Vec::with_capacity(plans.len());
    let mut scratch = Scratch::default();
    for (i, (p, info)) in plans.iter().zip(&infos).enumerate() {
        write_zeros(&mut w, info.offset - pos).map_err(|e| io_err("write", &temp.path, e))?;
        let src = m.tensor_data(&p.src).ok_or_else(|| {
            CoilError::new(
                ErrorCode::GgufTensorOutOfBounds,
                format!("the data of tensor \"{}\" is not in the file", p.src.name),
            )
        })?;
        let out_size = info.size.unwrap_or(0);
        let mut report_progress = |done: u64| {
            progress(QuantProgress {
                tensor_index: i,
                tensor_count,
                tensor_name: p.src.name.clone(),
                bytes_done: done,
                bytes_total,
            })
        };
        if p.from == p.to {
            w.write_all(src).map_err(|e| io_err("write", &temp.path, e))?;
            bytes_done += src.len() as u64;
        } else {
            let row_len = p.dims[0] as usize;
            let n_rows = (p.src.n_elements() as usize).checked_div(row_len).unwrap_or(0);
            let src_row = super::row_bytes(p.from, row_len).unwrap_or(0);
            let dst_row = super::row_bytes(p.to, row_len).unwrap_or(0);
            let rows_per_step = (SLAB_ELEMENTS / row_len.max(1)).max(1) * threads;
            let mut r = 0usize;
            while r < n_rows {
                let n = rows_per_step.min(n_rows - r);
                let sbytes = &src[r * src_row..(r + n) * src_row];
                scratch.out.resize(n * dst_row, 0);
                convert_rows(p.from, p.to, row_len, sbytes, &mut scratch, threads)?;
                w.write_all(&scratch.out).map_err(|e| io_err("write", &temp.path, e))?;
                bytes_done += sbytes.len() as u64;
                r += n;
                if r < n_rows && !report_progress(bytes_done) {
                    return Err(aborted());
                }
            }
        }
        pos = info.offset + out_size;
        reports.push(TensorReport {
            name: p.src.name.clone(),
            dims: p.dims.clone(),
            from: p.from,
            to: p.to,
            bytes_before: src.len() as u64,
            bytes_after: out_size,
            decision: p.decision.clone(),
        });
        if !report_progress(bytes_done) {
            return Err(aborted());
        }
    }
    write_zeros(&mut w, data_size - pos).map_err(|e| io_err("write", &temp.path, e))?;
    let file = w.into_inner().map_err(|e| io_err("write", &temp.path, e.into_error()))?;
    file.sync_all().map_err(|e| io_err("sync", &temp.path, e))?;
    drop(file);
    std::fs::rename(&temp.path, output).map_err(|e| io_err("rename the temporary file to", output, e))?;
    temp.committed = true;

    let n_fallback = reports.iter().filter(|r| matches!(r.decision, TensorDecision::Fallback { .. })).count();
    Ok(QuantReport {
        target: opts.target,
        ftype,
        bytes_before: reports.iter().map(|r| r.bytes_before).sum(),
        bytes_after: reports.iter().map(|r| r.bytes_after).sum(),
        file_size: data_offset + data_size,
        n_fallback,
        tensors: reports,
    })
}

fn aborted() -> CoilError {
    CoilError::new(ErrorCode::Aborted, "quantization aborted")
}

fn write_zeros<W: Write>(w: &mut W, mut n: u64) -> std::io::Result<()> {
    const Z: [u8; 256] = [0; 256];
    while n > 0 {
        let k = n.min(Z.len() as u64) as usize;
        w.write_all(&Z[..k])?;
        n -= k as u64;
    }
    Ok(())
}

#[derive(Default)]
struct Scratch {
    out: Vec<u8>,
    f32s: Vec<Vec<f32>>,
}

/// Converts whole rows `src` (type `from`) to `scratch.out` (type `to`), splitting the rows
/// over `threads` threads.
fn convert_rows(
    from: GgmlType,
    to: GgmlType,
    row_len: usize,
    src: &[u8],
    scratch: &mut Scratch,
    threads: usize,
) -> Result<()> {
    let src_row = super::row_bytes(from, row_len).unwrap_or(0);
    let dst_row = super::row_bytes(to, row_len).unwrap_or(0);
    let n_rows = src.len().checked_div(src_row).unwrap_or(0);
    let per = n_rows.div_ceil(threads.max(1)).max(1);
    let n_jobs = n_rows.div_ceil(per);
    scratch.f32s.resize_with(n_jobs.max(1), Vec::new);
    let job = |s: &[u8], o: &mut [u8], buf: &mut Vec<f32>| -> Result<()> {
        let rows = s.len() / src_row;
        buf.resize(rows * row_len, 0.0);
        if from == GgmlType::F32 {
            for (v, b) in buf.iter_mut().zip(s.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        } else {
            super::dequantize_row(from, s, buf)?;
        }
        super::quantize_row(to, buf, o)
    };
    if n_jobs <= 1 {
        return job(src, &mut scratch.out, &mut scratch.f32s[0]);
    }
    let results: Vec<Result<()>> = std::thread::scope(|sc| {
        let handles: Vec<_> = src
            .chunks(per * src_row)
            .zip(scratch.out.chunks_mut(per * dst_row))
            .zip(scratch.f32s.iter_mut())
            .map(|((s, o), buf)| sc.spawn(move || job(s, o, buf)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Err(CoilError::new(ErrorCode::Internal, "a quantization thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}
