//! Model weights: which tensors each architecture needs, their shapes and types checked against the
//! hyperparameters, and where their bytes live — a memory-mapped file (native; tensors are slices
//! of the map, nothing copied) or buffers filled chunk by chunk by the JS facade (wasm).
//!
//! Both ways end in the same validated [`Weights`]. Matrices stay in their file type and are read
//! through [`WeightRef`](super::compat::WeightRef); the small F32 tensors (norms, conv, A, D,
//! biases) are copied out once, in the layouts the kernels use (conv weights `[K][C]`, Mamba-1's A
//! `[N][E]`).

use std::collections::HashMap;
#[cfg(not(target_arch = "wasm32"))]
use std::sync::Arc;

use super::compat::WeightRef;
use super::hparams::HParams;
use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::{GgmlType, GgufFile};

/// Types the matrix kernels take (the kernels' own list).
pub const MATRIX_TYPES: [GgmlType; 11] = crate::kernels::matmul::MATMUL_TYPES;

/// One tensor of the file that the model uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    /// Index in the file's tensor list.
    pub index: usize,
    pub name: String,
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    pub len: usize,
    /// ggml `ne0` (columns) and the product of the other dims (rows).
    pub n_cols: usize,
    pub n_rows: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A matrix in any of [`MATRIX_TYPES`].
    Matrix,
    /// F32 only (norms, conv, A, D, biases).
    F32,
}

fn trim(d: &[u64]) -> &[u64] {
    let mut n = d.len();
    while n > 0 && d[n - 1] == 1 {
        n -= 1;
    }
    &d[..n]
}

fn fmt_dims(d: &[u64]) -> String {
    format!("[{}]", d.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "))
}

/// What a model needs from its file: hyperparameters and the tensors, all checked.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub hp: HParams,
    pub tensors: Vec<TensorRef>,
    pub by_name: HashMap<String, usize>,
}

impl Plan {
    /// Reads the hyperparameters and checks every tensor the architecture needs: present (unless
    /// optional), of the right shape and of a usable type, data inside the file.
    pub fn new(file: &GgufFile) -> Result<Plan> {
        let mut hp = HParams::from_gguf(file)?;
        let te = file
            .tensor("token_embd.weight")
            .ok_or_else(|| CoilError::new(ErrorCode::MissingTensor, "missing tensor token_embd.weight"))?;
        let dims = trim(&te.dims);
        if dims.len() != 2 || dims[0] != hp.n_embd as u64 || dims[1] == 0 || dims[1] > u32::MAX as u64 {
            return Err(CoilError::new(
                ErrorCode::BadTensorShape,
                format!(
                    "tensor token_embd.weight has shape {}, expected [{}, n_vocab] ({}.embedding_length = {})",
                    fmt_dims(&te.dims),
                    hp.n_embd,
                    hp.arch.name(),
                    hp.n_embd
                ),
            ));
        }
        hp.n_vocab = dims[1] as usize;
        let mut l = Loader {
            hp: &hp,
            src: Source::Plan {
                file,
                index_of: file.tensors.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect(),
                tensors: Vec::new(),
                by_name: HashMap::new(),
            },
        };
        load_all(&mut l)?;
        let Source::Plan { tensors, by_name, .. } = l.src else { unreachable!() };
        Ok(Plan { hp, tensors, by_name })
    }

    fn get(&self, name: &str) -> Option<&TensorRef> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }
}

/// Declares and fetches the tensors of a model. Each architecture's `load` runs twice through
/// it: once over the file's header ([`Plan::new`]: every tensor found, its shape and type
/// checked, the list of what to read made — placeholder values come back), once over the bytes
/// ([`Weights::build`]: the values). So which tensors an architecture needs is written once.
pub(crate) struct Loader<'a> {
    pub hp: &'a HParams,
    src: Source<'a>,
}

enum Source<'a> {
    Plan {
        file: &'a GgufFile,
        index_of: HashMap<&'a str, usize>,
        tensors: Vec<TensorRef>,
        by_name: HashMap<String, usize>,
    },
    Build {
        plan: &'a Plan,
        storage: &'a Storage,
    },
}

impl Loader<'_> {
    /// Whether the file has a tensor of that name (planning) / the plan took it (building).
    pub fn has(&self, name: &str) -> bool {
        match &self.src {
            Source::Plan { index_of, .. } => index_of.contains_key(name),
            Source::Build { plan, .. } => plan.by_name.contains_key(name),
        }
    }

    /// Finds, checks and records tensor `name`; `None` if it is absent and optional.
    fn take(&mut self, name: &str, shapes: &[&[u64]], kind: Kind, required: bool) -> Result<Option<TensorRef>> {
        let hp = self.hp;
        match &mut self.src {
            Source::Build { plan, .. } => match plan.get(name) {
                Some(t) => Ok(Some(t.clone())),
                None if required => Err(CoilError::new(ErrorCode::MissingTensor, format!("missing tensor {name}"))),
                None => Ok(None),
            },
            Source::Plan { file, index_of, tensors, by_name } => {
                if let Some(&slot) = by_name.get(name) {
                    return Ok(Some(tensors[slot].clone()));
                }
                let Some(&idx) = index_of.get(name) else {
                    if required {
                        return Err(CoilError::new(ErrorCode::MissingTensor, format!("missing tensor {name}")));
                    }
                    return Ok(None);
                };
                let t = &file.tensors[idx];
                let got = trim(&t.dims);
                if !shapes.iter().any(|s| trim(s) == got) {
                    let want: Vec<String> = shapes.iter().map(|s| fmt_dims(s)).collect();
                    return Err(CoilError::new(
                        ErrorCode::BadTensorShape,
                        format!(
                            "tensor {name} has shape {}, expected {} for this {} model ({})",
                            fmt_dims(&t.dims),
                            want.join(" or "),
                            hp.arch.name(),
                            hp.summary()
                        ),
                    ));
                }
                let ty = t.ggml_type.ok_or_else(|| {
                    CoilError::new(
                        ErrorCode::UnsupportedType,
                        format!("tensor {name} has unknown type id {}", t.type_id),
                    )
                })?;
                match kind {
                    Kind::F32 if ty != GgmlType::F32 => {
                        return Err(CoilError::new(
                            ErrorCode::UnsupportedType,
                            format!("tensor {name} is {ty}: coil needs norms, conv weights, A, D and biases in F32"),
                        ))
                    }
                    Kind::Matrix if !MATRIX_TYPES.contains(&ty) => {
                        return Err(CoilError::new(
                            ErrorCode::UnsupportedType,
                            format!(
                                "tensor {name} is {ty}: coil computes with F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K matrices"
                            ),
                        ))
                    }
                    _ => {}
                }
                let range = file.tensor_range(t).ok_or_else(|| {
                    CoilError::new(
                        ErrorCode::BadTensorShape,
                        format!("tensor {name}: its size is not a whole number of {ty} blocks"),
                    )
                })?;
                if range.end > file.file_size {
                    return Err(CoilError::new(
                        ErrorCode::GgufTensorOutOfBounds,
                        format!("tensor {name}: its data ends at byte {} of a {}-byte file", range.end, file.file_size),
                    ));
                }
                let n_cols = got.first().copied().unwrap_or(1) as usize;
                let n_rows = (t.n_elements() / n_cols.max(1) as u64) as usize;
                let r = TensorRef {
                    index: idx,
                    name: name.to_string(),
                    ty,
                    offset: range.start,
                    len: (range.end - range.start) as usize,
                    n_cols,
                    n_rows,
                };
                by_name.insert(name.to_string(), tensors.len());
                tensors.push(r.clone());
                Ok(Some(r))
            }
        }
    }

    fn matrix(&mut self, name: &str, shape: &[u64], required: bool) -> Result<Option<Matrix>> {
        let Some(t) = self.take(name, &[shape], Kind::Matrix, required)? else { return Ok(None) };
        let loc = match &self.src {
            Source::Plan { by_name, .. } => Loc { slot: by_name[name], offset: t.offset, len: t.len },
            Source::Build { plan, .. } => Loc { slot: plan.by_name[name], offset: t.offset, len: t.len },
        };
        let mut m = Matrix { ty: t.ty, n_rows: t.n_rows, n_cols: t.n_cols, loc, finite: false };
        if let Source::Build { storage, .. } = &self.src {
            // Validate once here, so evaluation never meets a bad matrix.
            WeightRef::new(m.ty, storage.bytes(m.loc), m.n_rows, m.n_cols)
                .map_err(|e| CoilError::new(e.code, format!("tensor {name}: {}", e.message)))?;
            if cfg!(target_arch = "wasm32") && m.ty == GgmlType::F16 {
                m.finite = crate::kernels::matmul::f16_all_finite(storage.bytes(m.loc));
            }
        }
        Ok(Some(m))
    }

    fn floats(&mut self, name: &str, shapes: &[&[u64]], required: bool) -> Result<Option<Vec<f32>>> {
        let Some(t) = self.take(name, shapes, Kind::F32, required)? else { return Ok(None) };
        Ok(Some(match &self.src {
            Source::Plan { .. } => vec![0.0; t.len / 4],
            Source::Build { plan, storage } => {
                let b = storage.bytes(Loc { slot: plan.by_name[name], offset: t.offset, len: t.len });
                b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
        }))
    }

    /// A required matrix of ggml shape `shape`.
    pub fn mat(&mut self, name: &str, shape: &[u64]) -> Result<Matrix> {
        Ok(self.matrix(name, shape, true)?.expect("required"))
    }

    /// An optional matrix.
    pub fn mat_opt(&mut self, name: &str, shape: &[u64]) -> Result<Option<Matrix>> {
        self.matrix(name, shape, false)
    }

    /// A required F32 tensor of one of `shapes`, copied out.
    pub fn f32(&mut self, name: &str, shapes: &[&[u64]]) -> Result<Vec<f32>> {
        Ok(self.floats(name, shapes, true)?.expect("required"))
    }

    /// An optional F32 tensor.
    pub fn f32_opt(&mut self, name: &str, shapes: &[&[u64]]) -> Result<Option<Vec<f32>>> {
        self.floats(name, shapes, false)
    }
}

/// The token embedding, the output head and the architecture's layers.
struct Loaded {
    token_embd: Matrix,
    output_norm: Vec<f32>,
    output: Matrix,
    tied_output: bool,
    layers: Box<dyn super::archs::Layers>,
}

fn load_all(l: &mut Loader) -> Result<Loaded> {
    let hp = l.hp;
    let (d, v) = (hp.n_embd as u64, hp.n_vocab as u64);
    let token_embd = l.mat("token_embd.weight", &[d, v])?;
    let layers = super::archs::load(l)?;
    let output_norm = l.f32(super::archs::output_norm_name(hp.arch), &[&[d]])?;
    let (output, tied_output) = match l.mat_opt("output.weight", &[d, v])? {
        Some(m) => (m, false),
        None => (token_embd, true),
    };
    Ok(Loaded { token_embd, output_norm, output, tied_output, layers })
}

// ---------------------------------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------------------------------

/// A tensor's bytes in a 4-byte-aligned buffer (so F32 data can be read in place).
pub(crate) struct OwnedBuf {
    words: Vec<u32>,
    len: usize,
}

impl OwnedBuf {
    fn new(len: usize) -> Result<OwnedBuf> {
        let mut words = Vec::new();
        words
            .try_reserve_exact(len.div_ceil(4))
            .map_err(|_| CoilError::new(ErrorCode::Io, format!("out of memory allocating {len} bytes for a tensor")))?;
        words.resize(len.div_ceil(4), 0);
        Ok(OwnedBuf { words, len })
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: u32 -> u8 reinterpretation of an initialised buffer; len <= 4 * words.len().
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, self.len) }
    }
}

pub(crate) enum Storage {
    #[cfg(not(target_arch = "wasm32"))]
    Mapped(Arc<crate::gguf::MappedGguf>),
    /// One buffer per planned tensor, in plan order.
    Owned(Vec<OwnedBuf>),
}

/// Where a tensor's bytes are in its storage.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Loc {
    /// Plan position (owned storage).
    slot: usize,
    /// Absolute file offset (mapped storage).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    offset: u64,
    len: usize,
}

impl Storage {
    fn bytes(&self, l: Loc) -> &[u8] {
        match self {
            #[cfg(not(target_arch = "wasm32"))]
            Storage::Mapped(m) => &m.bytes()[l.offset as usize..l.offset as usize + l.len],
            Storage::Owned(v) => v[l.slot].bytes(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Weights
// ---------------------------------------------------------------------------------------------

/// A matrix in its file type: `n_rows` rows of `n_cols` (ggml `{n_cols, n_rows}`).
#[derive(Debug, Clone, Copy)]
pub struct Matrix {
    pub ty: GgmlType,
    pub n_rows: usize,
    pub n_cols: usize,
    loc: Loc,
    /// Checked at load to hold no infinity or NaN (F16 on wasm only, where it lets generation skip
    /// a per-value check; native converts halves in hardware and never needs it).
    finite: bool,
}

/// Validated weights of a model.
pub struct Weights {
    pub hp: HParams,
    pub token_embd: Matrix,
    pub output_norm: Vec<f32>,
    /// `output.weight`, or the token embedding when the file has none (tied).
    pub output: Matrix,
    pub tied_output: bool,
    /// The architecture's layers (`model/archs/`).
    pub(crate) layers: Box<dyn super::archs::Layers>,
    bytes: u64,
    storage: Storage,
}

impl Weights {
    /// A matrix as the kernels take it.
    pub(crate) fn mat(&self, m: &Matrix) -> Result<WeightRef<'_>> {
        Ok(WeightRef::new(m.ty, self.storage.bytes(m.loc), m.n_rows, m.n_cols)?.with_finite(m.finite))
    }

    /// Builds the weights from a plan whose tensors are all in `storage`.
    pub(crate) fn build(plan: Plan, storage: Storage) -> Result<Weights> {
        let bytes = plan.tensors.iter().map(|t| t.len as u64).sum();
        let hp = plan.hp.clone();
        let loaded = {
            let mut l = Loader { hp: &hp, src: Source::Build { plan: &plan, storage: &storage } };
            load_all(&mut l)?
        };
        Ok(Weights {
            hp,
            token_embd: loaded.token_embd,
            output_norm: loaded.output_norm,
            output: loaded.output,
            tied_output: loaded.tied_output,
            layers: loaded.layers,
            bytes,
            storage,
        })
    }

    /// Bytes of the tensors the model uses (matrices in their file types, the F32 copies).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

// ---------------------------------------------------------------------------------------------
// Chunked loading (the wasm path; works natively too)
// ---------------------------------------------------------------------------------------------

/// Weights being pushed chunk by chunk.
pub(crate) struct Pending {
    plan: Plan,
    /// Plan position by file tensor index.
    slot_of: HashMap<usize, usize>,
    bufs: Vec<Option<OwnedBuf>>,
    /// Sorted, disjoint byte ranges received per tensor.
    got: Vec<Vec<(usize, usize)>>,
}

impl Pending {
    pub fn new(plan: Plan) -> Pending {
        let slot_of = plan.tensors.iter().enumerate().map(|(i, t)| (t.index, i)).collect();
        let n = plan.tensors.len();
        Pending { plan, slot_of, bufs: (0..n).map(|_| None).collect(), got: vec![Vec::new(); n] }
    }

    /// `(tensor_index, absolute_file_offset, len)` per needed tensor, in file order.
    pub fn list(&self) -> Vec<(usize, u64, u64)> {
        let mut v: Vec<(usize, u64, u64)> =
            self.plan.tensors.iter().map(|t| (t.index, t.offset, t.len as u64)).collect();
        v.sort_by_key(|x| x.1);
        v
    }

    pub fn push(&mut self, tensor_index: usize, offset: u64, data: &[u8]) -> Result<()> {
        let &slot = self.slot_of.get(&tensor_index).ok_or_else(|| {
            CoilError::new(
                ErrorCode::InvalidArgument,
                format!("tensor {tensor_index} is not one the model needs (see weights_plan)"),
            )
        })?;
        let t = &self.plan.tensors[slot];
        let start = usize::try_from(offset).ok().filter(|&s| s <= t.len);
        let end = start.and_then(|s| s.checked_add(data.len())).filter(|&e| e <= t.len);
        let (Some(start), Some(end)) = (start, end) else {
            return Err(CoilError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "{} bytes at offset {offset} run past the end of tensor {} ({} bytes)",
                    data.len(),
                    t.name,
                    t.len
                ),
            ));
        };
        if data.is_empty() {
            return Ok(());
        }
        if self.bufs[slot].is_none() {
            self.bufs[slot] = Some(OwnedBuf::new(t.len)?);
        }
        if let Some(b) = self.bufs[slot].as_mut() {
            b.bytes_mut()[start..end].copy_from_slice(data);
        }
        // Merge [start, end) into the received ranges.
        let got = &mut self.got[slot];
        let mut s = start;
        let mut e = end;
        let mut out = Vec::with_capacity(got.len() + 1);
        let mut placed = false;
        for &(a, b) in got.iter() {
            if b < s {
                out.push((a, b));
            } else if a > e {
                if !placed {
                    out.push((s, e));
                    placed = true;
                }
                out.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        if !placed {
            out.push((s, e));
        }
        *got = out;
        Ok(())
    }

    /// Why the data is not complete yet (`None`: complete).
    pub fn incomplete(&self) -> Option<String> {
        let mut missing = Vec::new();
        for (i, t) in self.plan.tensors.iter().enumerate() {
            let have: usize = self.got[i].iter().map(|(a, b)| b - a).sum();
            if have != t.len {
                missing.push(format!("{} ({have} of {} bytes)", t.name, t.len));
            }
        }
        if missing.is_empty() {
            return None;
        }
        let n = missing.len();
        missing.truncate(5);
        Some(format!(
            "tensor data incomplete: {n} tensor(s) missing bytes: {}{}",
            missing.join(", "),
            if n > 5 { ", ..." } else { "" }
        ))
    }

    /// Builds the weights (call when [`Pending::incomplete`] is `None`).
    pub fn finish(self) -> Result<Weights> {
        if let Some(msg) = self.incomplete() {
            return Err(CoilError::new(ErrorCode::InvalidArgument, msg));
        }
        let mut bufs = Vec::with_capacity(self.bufs.len());
        for (i, b) in self.bufs.into_iter().enumerate() {
            bufs.push(match b {
                Some(b) => b,
                None => OwnedBuf::new(self.plan.tensors[i].len)?, // an empty tensor
            });
        }
        Weights::build(self.plan, Storage::Owned(bufs))
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn mapped_storage(m: crate::gguf::MappedGguf) -> Storage {
    Storage::Mapped(Arc::new(m))
}
