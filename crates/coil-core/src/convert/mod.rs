//! Hugging Face checkpoints to GGUF, following llama.cpp's converter (`convert_hf_to_gguf.py`,
//! `conversion/*.py`, gguf-py) so that the files load in llama.cpp and in coil alike, with the same
//! keys, tensor names, shapes and types — except where llama.cpp's file would compute something
//! else than transformers, which each architecture's file documents.
//!
//! Input: a directory with `config.json` (HF or state-spaces) or Mistral's `params.json`,
//! safetensors weights (`model.safetensors`, shards with `model.safetensors.index.json`, or
//! `consolidated.safetensors`), and optionally `tokenizer.json` / `tokenizer.model` /
//! `tokenizer.model.v3` with `tokenizer_config.json`.
//!
//! Architectures (HF -> `general.architecture`), one file each in `archs/`:
//! * `MambaForCausalLM`, `MambaLMHeadModel`, `FalconMambaForCausalLM` -> `mamba`;
//! * `Mamba2ForCausalLM` (Mamba-Codestral included) -> `mamba2`;
//! * `JambaForCausalLM` -> `jamba`;
//! * `GraniteMoeHybridForCausalLM` (Granite-4.0-H), `BambaForCausalLM` -> `granitehybrid`;
//! * `NemotronHForCausalLM` -> `nemotron_h`, or `nemotron_h_moe` when a layer is a MoE layer;
//! * `FalconH1ForCausalLM` -> `falcon-h1` (µP multipliers folded into the weights);
//! * `Lfm2ForCausalLM` -> `lfm2`, `Lfm2MoeForCausalLM` -> `lfm2moe`.
//!
//! [`convert`] streams: it checks everything it can first (configuration, every tensor's name,
//! dtype and shape, the tokenizer), writes the GGUF header with every tensor's final size, then
//! reads, transforms and writes one tensor at a time, in chunks, so memory stays small whatever
//! the model size. It writes to a temporary file beside the output and renames it at the end; an
//! error or an abort from the progress callback removes the temporary file and leaves no output.
//!
//! See `archs/` for each architecture's keys and tensors, `tensors.rs` for the plan and its
//! transforms, `vocab.rs` for the tokenizer metadata, `numeric.rs` for the arithmetic, and
//! `config.rs` for the configuration lookups.

mod archs;
pub mod config;
mod numeric;
mod quant_seam;
pub mod safetensors;
pub mod tensors;
pub mod vocab;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use config::{Arch, ConfigSource, ModelConfig, SUPPORTED_ARCHITECTURES};
pub use numeric::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, neg_exp};
pub use safetensors::{Checkpoint, SafetensorsFile, StDtype, StTensor};

use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::{layout_tensors, write_header, GgmlType, GgufValue, TensorInfo};
use tensors::{Plan, PlannedTensor, Transform};

/// The GGUF data alignment written (gguf-py's default).
pub const ALIGNMENT: u64 = 32;

/// `general.quantization_version` (ggml's `GGML_QNT_VERSION`); the reference converter writes it
/// into every file.
pub const QUANTIZATION_VERSION: u32 = 2;

/// The type of the quantizable matrices (`--outtype`). 1-D tensors, norms, `ssm_a`, `ssm_d`,
/// conv weights, biases and `ffn_gate_inp` are F32 whatever is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutType {
    /// The type of the first matrix in the checkpoint: BF16 stays BF16, anything else becomes F16
    /// (llama.cpp's `auto`).
    Auto,
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
}

impl OutType {
    pub const ALL: [OutType; 12] = [
        OutType::Auto,
        OutType::F32,
        OutType::F16,
        OutType::Bf16,
        OutType::Q8_0,
        OutType::Q4_0,
        OutType::Q4_1,
        OutType::Q5_0,
        OutType::Q5_1,
        OutType::Q4K,
        OutType::Q5K,
        OutType::Q6K,
    ];

    /// Parses `auto`, `f32`, `f16`, `bf16`, `q8_0`, `q4_0`, `q4_1`, `q5_0`, `q5_1`, `q4_k`,
    /// `q5_k`, `q6_k` (case-insensitive).
    pub fn from_name(s: &str) -> Option<OutType> {
        let s = s.to_ascii_lowercase();
        OutType::ALL.iter().copied().find(|t| t.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            OutType::Auto => "auto",
            OutType::F32 => "f32",
            OutType::F16 => "f16",
            OutType::Bf16 => "bf16",
            OutType::Q8_0 => "q8_0",
            OutType::Q4_0 => "q4_0",
            OutType::Q4_1 => "q4_1",
            OutType::Q5_0 => "q5_0",
            OutType::Q5_1 => "q5_1",
            OutType::Q4K => "q4_k",
            OutType::Q5K => "q5_k",
            OutType::Q6K => "q6_k",
        }
    }

    /// The ggml type of the matrices (`None` for `Auto`).
    pub fn ggml_type(self) -> Option<GgmlType> {
        Some(match self {
            OutType::Auto => return None,
            OutType::F32 => GgmlType::F32,
            OutType::F16 => GgmlType::F16,
            OutType::Bf16 => GgmlType::BF16,
            OutType::Q8_0 => GgmlType::Q8_0,
            OutType::Q4_0 => GgmlType::Q4_0,
            OutType::Q4_1 => GgmlType::Q4_1,
            OutType::Q5_0 => GgmlType::Q5_0,
            OutType::Q5_1 => GgmlType::Q5_1,
            OutType::Q4K => GgmlType::Q4_K,
            OutType::Q5K => GgmlType::Q5_K,
            OutType::Q6K => GgmlType::Q6_K,
        })
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`): the K-quants as their `_S` variants, whose
    /// base type they are.
    pub fn file_type(self) -> Option<u32> {
        Some(match self.ggml_type()? {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 7,
            GgmlType::Q5_0 => 8,
            GgmlType::Q5_1 => 9,
            GgmlType::Q4_K => 14,
            GgmlType::Q5_K => 16,
            GgmlType::Q6_K => 18,
            GgmlType::BF16 => 32,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertOptions {
    pub outtype: OutType,
    /// `general.name`; the directory's name when `None`.
    pub name: Option<String>,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions { outtype: OutType::F16, name: None }
    }
}

/// Handed to the progress callback before each tensor and after each chunk it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvertProgress<'a> {
    /// Bytes of the data section written so far.
    pub bytes_done: u64,
    /// Size of the data section.
    pub bytes_total: u64,
    /// The GGUF tensor being written (empty in the final call).
    pub tensor: &'a str,
    /// Index of that tensor (== `tensor_count` in the final call).
    pub tensor_index: usize,
    pub tensor_count: usize,
}

/// One tensor of the written file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertedTensor {
    pub name: String,
    /// ggml order.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub bytes: u64,
    /// The source tensors (first one for merged experts).
    pub source: String,
}

/// What the tokenizer metadata came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizerSummary {
    pub source: String,
    pub model: String,
    pub pre: Option<String>,
    pub n_tokens: usize,
}

/// The result of a conversion.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertReport {
    pub out: PathBuf,
    /// `general.architecture`.
    pub arch: &'static str,
    /// The HF architecture the configuration named (or that was inferred).
    pub hf_architecture: String,
    pub config_source: ConfigSource,
    /// The type chosen for quantizable matrices (`Auto` resolved).
    pub outtype: OutType,
    pub file_type: u32,
    pub file_size: u64,
    pub n_vocab: u64,
    pub tensors: Vec<ConvertedTensor>,
    pub tokenizer: Option<TokenizerSummary>,
    pub tied_output_omitted: bool,
    /// Non-fatal observations: no tokenizer files, type fallbacks, settings llama.cpp would
    /// refuse, ...
    pub warnings: Vec<String>,
}

/// Everything decided before a byte is written.
struct Prepared {
    config: ModelConfig,
    ck: Checkpoint,
    plan: Plan,
    metadata: Vec<(String, GgufValue)>,
    infos: Vec<TensorInfo>,
    types: Vec<GgmlType>,
    outtype: OutType,
    file_type: u32,
    tokenizer: Option<TokenizerSummary>,
    warnings: Vec<String>,
}

/// The GGUF type of `t` for the chosen matrix type.
fn tensor_type(t: &PlannedTensor, matrix: GgmlType) -> GgmlType {
    if t.forced_f32 {
        return GgmlType::F32;
    }
    let ne0 = t.dims.first().copied().unwrap_or(1);
    match matrix {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => matrix,
        // The reference converter quantizes Q8_0 itself and falls back to F16 on rows that are
        // not whole blocks; the other types follow llama-quantize's fallback.
        GgmlType::Q8_0 if ne0 % 32 != 0 => GgmlType::F16,
        q => quant_seam::choose_type(q, &t.name, &t.dims),
    }
}

fn dir_name(dir: &Path) -> String {
    let canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    canon.file_name().and_then(|n| n.to_str()).unwrap_or("model").to_string()
}

fn prepare(dir: &Path, opts: &ConvertOptions) -> Result<Prepared> {
    let config = ModelConfig::load(dir)?;
    let ck = Checkpoint::open_dir(dir)?;

    // Output type (`auto`: the first matrix's dtype, as llama.cpp guesses it).
    let outtype = match opts.outtype {
        OutType::Auto => match ck.tensors.iter().find(|t| t.shape.len() >= 2).map(|t| t.dtype) {
            Some(StDtype::BF16) => OutType::Bf16,
            _ => OutType::F16,
        },
        o => o,
    };
    let matrix = outtype.ggml_type().unwrap_or(GgmlType::F16);
    let file_type = outtype.file_type().unwrap_or(1);

    let built = archs::build(&archs::Cx { cfg: &config, dir, ck: &ck, file_type })?;
    let plan = built.plan;
    let mut warnings = built.warnings;
    warnings.extend(plan.warnings.iter().cloned());

    let mut infos = Vec::with_capacity(plan.tensors.len());
    let mut types = Vec::with_capacity(plan.tensors.len());
    let mut fallbacks: Vec<String> = Vec::new();
    for t in &plan.tensors {
        let ty = tensor_type(t, matrix);
        if !t.forced_f32 && ty != matrix {
            fallbacks.push(format!("{} ({ty})", t.name));
        }
        if !quant_seam::can_write(ty) {
            return Err(CoilError::new(ErrorCode::UnsupportedType, format!("cannot write {} as {ty}", t.name)));
        }
        let info = TensorInfo::new(t.name.clone(), t.dims.clone(), ty.id());
        if info.size.is_none() {
            return Err(CoilError::new(
                ErrorCode::Internal,
                format!("tensor {} ({ty}, dims {:?}) has no size", t.name, t.dims),
            ));
        }
        infos.push(info);
        types.push(ty);
    }
    if !fallbacks.is_empty() {
        warnings.push(format!(
            "{} tensors have rows that are not whole {} blocks and were written in another type: {}",
            fallbacks.len(),
            matrix,
            fallbacks.join(", ")
        ));
    }

    // Metadata in the reference converter's order: general.*, the model's parameters (with
    // general.file_type), general.quantization_version, then the tokenizer.
    let arch = config.arch;
    let name = opts.name.clone().unwrap_or_else(|| dir_name(dir));
    let mut md: Vec<(String, GgufValue)> =
        vec![("general.architecture".into(), arch.name().into()), ("general.type".into(), "model".into())];
    if !name.is_empty() {
        md.push(("general.name".into(), name.as_str().into()));
    }
    md.extend(built.metadata);
    md.push(("general.quantization_version".into(), GgufValue::U32(QUANTIZATION_VERSION)));

    let vocab = vocab::build(dir, arch, plan.n_vocab, &mut warnings)?;
    let tokenizer = vocab.as_ref().map(|v| TokenizerSummary {
        source: v.source.clone(),
        model: v.model.to_string(),
        pre: v.pre.clone(),
        n_tokens: v.n_tokens,
    });
    if let Some(v) = vocab {
        // coil must be able to read back what it writes: build its tokenizer once.
        let probe = crate::gguf::GgufFile {
            version: 3,
            metadata: v.metadata.clone(),
            tensors: Vec::new(),
            alignment: ALIGNMENT,
            data_offset: 0,
            file_size: 0,
        };
        if let Err(e) = crate::tokenizer::Tokenizer::from_gguf(&probe) {
            warnings.push(format!("coil's tokenizer cannot use the converted vocabulary: {}", e.message));
        }
        md.extend(v.metadata);
    }

    Ok(Prepared { config, ck, plan, metadata: md, infos, types, outtype, file_type, tokenizer, warnings })
}

/// Removes the temporary file unless disarmed.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn temp_path(out: &Path) -> PathBuf {
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("model.gguf");
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    out.with_file_name(format!(".{name}.{}-{nanos}.coil-tmp", std::process::id()))
}

const ZEROS: [u8; 4096] = [0; 4096];

fn write_zeros<W: Write>(w: &mut W, mut n: u64) -> std::io::Result<()> {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

/// Elements converted per chunk (rounded to whole rows).
const CHUNK_ELEMENTS: u64 = 1 << 20;

/// Converts the checkpoint in `dir` to the GGUF file `out`.
///
/// `progress` is called before each tensor and after each chunk of at most about a million
/// elements; returning `false` aborts the conversion (`ErrorCode::Aborted`). On any error or
/// abort, neither `out` nor the temporary file beside it is left behind (an `out` that existed
/// before is left untouched).
pub fn convert(
    dir: &Path,
    out: &Path,
    opts: ConvertOptions,
    progress: &mut dyn FnMut(ConvertProgress) -> bool,
) -> Result<ConvertReport> {
    let p = prepare(dir, &opts)?;
    let mut infos = p.infos.clone();
    let data_size = layout_tensors(&mut infos, ALIGNMENT);

    let tmp_path = temp_path(out);
    let io = |what: &str, e: std::io::Error| {
        CoilError::new(ErrorCode::Io, format!("cannot {what} {}: {e}", tmp_path.display()))
    };
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp_path).map_err(|e| {
        CoilError::new(
            ErrorCode::Io,
            format!("cannot create the temporary file {} for {}: {e}", tmp_path.display(), out.display()),
        )
    })?;
    let mut guard = TempFile { path: tmp_path.clone(), armed: true };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let header_len = write_header(&mut w, 3, &p.metadata, &infos, ALIGNMENT)?;

    let count = p.plan.tensors.len();
    let mut report_tensors = Vec::with_capacity(count);
    let mut pos = 0u64;
    let mut buf_f32: Vec<f32> = Vec::new();
    let mut buf_out: Vec<u8> = Vec::new();
    for (i, ((t, info), &ty)) in p.plan.tensors.iter().zip(&infos).zip(&p.types).enumerate() {
        let prog = |done: u64| ConvertProgress {
            bytes_done: done,
            bytes_total: data_size,
            tensor: &t.name,
            tensor_index: i,
            tensor_count: count,
        };
        if !progress(prog(pos)) {
            return Err(aborted());
        }
        write_zeros(&mut w, info.offset - pos).map_err(|e| io("write", e))?;
        pos = info.offset;
        let size = info.size.unwrap_or(0);
        let written = write_tensor(&p.ck, t, ty, &mut w, &mut buf_f32, &mut buf_out, &mut |n| {
            pos += n;
            progress(prog(pos))
        })?;
        if written != size {
            return Err(CoilError::new(
                ErrorCode::Internal,
                format!("tensor {} came out as {written} bytes instead of {size}", t.name),
            ));
        }
        let src = &p.ck.tensors[t.pieces[0].tensor];
        report_tensors.push(ConvertedTensor {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty,
            bytes: size,
            source: src.name.clone(),
        });
    }
    write_zeros(&mut w, data_size - pos).map_err(|e| io("write", e))?;
    if !progress(ConvertProgress {
        bytes_done: data_size,
        bytes_total: data_size,
        tensor: "",
        tensor_index: count,
        tensor_count: count,
    }) {
        return Err(aborted());
    }
    let file = w.into_inner().map_err(|e| io("write", e.into_error()))?;
    file.sync_all().map_err(|e| io("flush", e))?;
    drop(file);
    std::fs::rename(&tmp_path, out).map_err(|e| {
        CoilError::new(ErrorCode::Io, format!("cannot rename {} to {}: {e}", tmp_path.display(), out.display()))
    })?;
    guard.armed = false;

    Ok(ConvertReport {
        out: out.to_path_buf(),
        arch: p.config.arch.name(),
        hf_architecture: p.config.hf_arch.clone(),
        config_source: p.config.source,
        outtype: p.outtype,
        file_type: p.file_type,
        file_size: header_len + data_size,
        n_vocab: p.plan.n_vocab,
        tensors: report_tensors,
        tokenizer: p.tokenizer,
        tied_output_omitted: p.plan.tied_output_omitted,
        warnings: p.warnings,
    })
}

fn aborted() -> CoilError {
    CoilError::new(ErrorCode::Aborted, "the conversion was aborted")
}

/// Writes one tensor's data; returns the bytes written. `chunk_done(n)` is called after each
/// chunk of `n` output bytes and returns `false` to abort.
fn write_tensor<W: Write>(
    ck: &Checkpoint,
    t: &PlannedTensor,
    ty: GgmlType,
    w: &mut W,
    buf: &mut Vec<f32>,
    out: &mut Vec<u8>,
    chunk_done: &mut dyn FnMut(u64) -> bool,
) -> Result<u64> {
    let ioe = |e: std::io::Error| CoilError::new(ErrorCode::Io, format!("cannot write tensor {}: {e}", t.name));
    let ne0 = t.dims.first().copied().unwrap_or(1).max(1);
    let chunk = (CHUNK_ELEMENTS / ne0).max(1) * ne0;
    let mut written = 0u64;
    for piece in &t.pieces {
        let src = &ck.tensors[piece.tensor];
        let es = src.dtype.size();
        let data = ck.data(src);
        let same = t.transform == Transform::None
            && piece.scale == 1.0
            && matches!(
                (src.dtype, ty),
                (StDtype::F32, GgmlType::F32) | (StDtype::F16, GgmlType::F16) | (StDtype::BF16, GgmlType::BF16)
            );
        let mut at = piece.first;
        let end = piece.first + piece.count;
        while at < end {
            let n = chunk.min(end - at);
            let bytes = data.get((at * es) as usize..((at + n) * es) as usize).ok_or_else(|| {
                CoilError::new(ErrorCode::Internal, format!("tensor {} reads past its source", t.name))
            })?;
            let k = if same {
                w.write_all(bytes).map_err(ioe)?;
                bytes.len() as u64
            } else {
                buf.resize(n as usize, 0.0);
                numeric::decode(src.dtype, bytes, buf);
                if t.transform == Transform::NegExp {
                    for v in buf.iter_mut() {
                        *v = numeric::neg_exp(*v);
                    }
                }
                if piece.scale != 1.0 {
                    for v in buf.iter_mut() {
                        *v = (*v as f64 * piece.scale) as f32;
                    }
                }
                out.clear();
                if matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
                    numeric::encode_float(ty, buf, out);
                } else {
                    quant_seam::quantize(ty, buf, out)?;
                }
                w.write_all(out).map_err(ioe)?;
                out.len() as u64
            };
            ck.release(src, at * es, n * es);
            written += k;
            at += n;
            if !chunk_done(k) {
                return Err(aborted());
            }
        }
    }
    Ok(written)
}
