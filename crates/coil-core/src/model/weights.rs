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
use super::hparams::{Arch, HParams};
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

struct Spec {
    name: String,
    /// Accepted shapes (ggml order), compared with trailing 1s ignored.
    shapes: Vec<Vec<u64>>,
    kind: Kind,
    required: bool,
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

/// The tensors an architecture needs, with their shapes (`n_vocab` known).
fn specs(hp: &HParams) -> Vec<Spec> {
    let (d, e, n, k) = (hp.n_embd as u64, hp.d_inner as u64, hp.d_state as u64, hp.d_conv as u64);
    let v = hp.n_vocab as u64;
    let mut s = Vec::new();
    let mut add =
        |name: String, shapes: Vec<Vec<u64>>, kind: Kind, required: bool| s.push(Spec { name, shapes, kind, required });
    add("token_embd.weight".into(), vec![vec![d, v]], Kind::Matrix, true);
    add("output_norm.weight".into(), vec![vec![d]], Kind::F32, true);
    add("output.weight".into(), vec![vec![d, v]], Kind::Matrix, false);
    for i in 0..hp.n_layer {
        let b = |x: &str| format!("blk.{i}.{x}");
        add(b("attn_norm.weight"), vec![vec![d]], Kind::F32, true);
        match hp.arch {
            Arch::Jamba if hp.is_attention(i) => {
                let q = (hp.n_head_attn * hp.attn_head_dim()) as u64;
                let kvd = (hp.n_head_kv[i] * hp.attn_head_dim()) as u64;
                add(b("attn_q.weight"), vec![vec![d, q]], Kind::Matrix, true);
                add(b("attn_k.weight"), vec![vec![d, kvd]], Kind::Matrix, true);
                add(b("attn_v.weight"), vec![vec![d, kvd]], Kind::Matrix, true);
                add(b("attn_q.bias"), vec![vec![q]], Kind::F32, false);
                add(b("attn_k.bias"), vec![vec![kvd]], Kind::F32, false);
                add(b("attn_v.bias"), vec![vec![kvd]], Kind::F32, false);
                add(b("attn_output.weight"), vec![vec![q, d]], Kind::Matrix, true);
                add(b("attn_output.bias"), vec![vec![d]], Kind::F32, false);
            }
            Arch::Mamba | Arch::Jamba => {
                let r = hp.dt_rank as u64;
                add(b("ssm_in.weight"), vec![vec![d, 2 * e]], Kind::Matrix, true);
                add(b("ssm_conv1d.weight"), vec![vec![k, e]], Kind::F32, true);
                add(b("ssm_conv1d.bias"), vec![vec![e]], Kind::F32, false);
                add(b("ssm_x.weight"), vec![vec![e, r + 2 * n]], Kind::Matrix, true);
                add(b("ssm_dt.weight"), vec![vec![r, e]], Kind::Matrix, true);
                add(b("ssm_dt.bias"), vec![vec![e]], Kind::F32, false);
                add(b("ssm_a"), vec![vec![n, e]], Kind::F32, true);
                add(b("ssm_d"), vec![vec![e]], Kind::F32, true);
                add(b("ssm_out.weight"), vec![vec![e, d]], Kind::Matrix, true);
                if hp.arch == Arch::Jamba {
                    add(b("ssm_dt_norm.weight"), vec![vec![r]], Kind::F32, false);
                    add(b("ssm_b_norm.weight"), vec![vec![n]], Kind::F32, false);
                    add(b("ssm_c_norm.weight"), vec![vec![n]], Kind::F32, false);
                }
            }
            Arch::Mamba2 => {
                let (h, g) = (hp.n_head as u64, hp.n_group as u64);
                let cd = hp.conv_dim() as u64;
                add(b("ssm_in.weight"), vec![vec![d, hp.d_in_proj() as u64]], Kind::Matrix, true);
                add(b("ssm_conv1d.weight"), vec![vec![k, cd]], Kind::F32, true);
                add(b("ssm_conv1d.bias"), vec![vec![cd]], Kind::F32, false);
                add(b("ssm_dt.bias"), vec![vec![h]], Kind::F32, false);
                add(b("ssm_a"), vec![vec![1, h], vec![h]], Kind::F32, true);
                add(b("ssm_d"), vec![vec![1, h], vec![h]], Kind::F32, true);
                add(b("ssm_norm.weight"), vec![vec![e / g, g], vec![e]], Kind::F32, true);
                add(b("ssm_out.weight"), vec![vec![e, d]], Kind::Matrix, true);
            }
        }
        if hp.arch == Arch::Jamba {
            let (f, x) = (hp.n_ff as u64, hp.n_expert as u64);
            add(b("ffn_norm.weight"), vec![vec![d]], Kind::F32, true);
            if hp.moe[i] {
                add(b("ffn_gate_inp.weight"), vec![vec![d, x]], Kind::Matrix, true);
                add(b("ffn_gate_exps.weight"), vec![vec![d, f, x]], Kind::Matrix, true);
                add(b("ffn_up_exps.weight"), vec![vec![d, f, x]], Kind::Matrix, true);
                add(b("ffn_down_exps.weight"), vec![vec![f, d, x]], Kind::Matrix, true);
            } else {
                add(b("ffn_gate.weight"), vec![vec![d, f]], Kind::Matrix, true);
                add(b("ffn_up.weight"), vec![vec![d, f]], Kind::Matrix, true);
                add(b("ffn_down.weight"), vec![vec![f, d]], Kind::Matrix, true);
            }
        }
    }
    s
}

/// The layer index in a `blk.{i}.` tensor name (0 for others).
fn layer_of(name: &str) -> usize {
    name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|i| i.parse().ok()).unwrap_or(0)
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
        let index_of: HashMap<&str, usize> =
            file.tensors.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
        let mut tensors = Vec::new();
        let mut by_name = HashMap::new();
        for spec in specs(&hp) {
            let Some(&idx) = index_of.get(spec.name.as_str()) else {
                if spec.required {
                    return Err(CoilError::new(ErrorCode::MissingTensor, format!("missing tensor {}", spec.name)));
                }
                continue;
            };
            let t = &file.tensors[idx];
            let got = trim(&t.dims);
            if !spec.shapes.iter().any(|s| trim(s) == got) {
                let want: Vec<String> = spec.shapes.iter().map(|s| fmt_dims(s)).collect();
                return Err(CoilError::new(
                    ErrorCode::BadTensorShape,
                    format!(
                        "tensor {} has shape {}, expected {} for this {} model (d_model {}, d_inner {}, d_state {}, d_conv {}{})",
                        spec.name,
                        fmt_dims(&t.dims),
                        want.join(" or "),
                        hp.arch.name(),
                        hp.n_embd,
                        hp.d_inner,
                        hp.d_state,
                        hp.d_conv,
                        match hp.arch {
                            Arch::Mamba => format!(", dt_rank {}", hp.dt_rank),
                            Arch::Mamba2 => format!(", {} heads, {} groups", hp.n_head, hp.n_group),
                            Arch::Jamba => format!(
                                ", dt_rank {}, {} attention heads, head_count_kv {}, n_ff {}, {} experts",
                                hp.dt_rank,
                                hp.n_head_attn,
                                hp.n_head_kv.get(layer_of(&spec.name)).copied().unwrap_or(0),
                                hp.n_ff,
                                hp.n_expert
                            ),
                        }
                    ),
                ));
            }
            let ty = t.ggml_type.ok_or_else(|| {
                CoilError::new(
                    ErrorCode::UnsupportedType,
                    format!("tensor {} has unknown type id {}", spec.name, t.type_id),
                )
            })?;
            match spec.kind {
                Kind::F32 if ty != GgmlType::F32 => {
                    return Err(CoilError::new(
                        ErrorCode::UnsupportedType,
                        format!("tensor {} is {ty}: coil needs norms, conv weights, A, D and biases in F32", spec.name),
                    ))
                }
                Kind::Matrix if !MATRIX_TYPES.contains(&ty) => {
                    return Err(CoilError::new(
                        ErrorCode::UnsupportedType,
                        format!(
                            "tensor {} is {ty}: coil computes with F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K matrices",
                            spec.name
                        ),
                    ))
                }
                _ => {}
            }
            let range = file.tensor_range(t).ok_or_else(|| {
                CoilError::new(
                    ErrorCode::BadTensorShape,
                    format!("tensor {}: its size is not a whole number of {ty} blocks", spec.name),
                )
            })?;
            if range.end > file.file_size {
                return Err(CoilError::new(
                    ErrorCode::GgufTensorOutOfBounds,
                    format!(
                        "tensor {}: its data ends at byte {} of a {}-byte file",
                        spec.name, range.end, file.file_size
                    ),
                ));
            }
            let n_cols = got.first().copied().unwrap_or(1) as usize;
            let n_rows = (t.n_elements() / n_cols.max(1) as u64) as usize;
            by_name.insert(spec.name.clone(), tensors.len());
            tensors.push(TensorRef {
                index: idx,
                name: spec.name,
                ty,
                offset: range.start,
                len: (range.end - range.start) as usize,
                n_cols,
                n_rows,
            });
        }
        Ok(Plan { hp, tensors, by_name })
    }

    fn get(&self, name: &str) -> Option<&TensorRef> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }
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

pub struct MambaLayer {
    pub attn_norm: Vec<f32>,
    pub ssm_in: Matrix,
    /// `[K][E]`.
    pub conv_w: Vec<f32>,
    pub conv_b: Option<Vec<f32>>,
    pub ssm_x: Matrix,
    pub ssm_dt: Matrix,
    pub dt_bias: Option<Vec<f32>>,
    /// `[N][E]`.
    pub a: Vec<f32>,
    pub d: Vec<f32>,
    pub ssm_out: Matrix,
    /// Jamba: RMS norm weights on dt_r (`[R]`), B and C (`[N]`), when the file has them.
    pub dt_norm: Option<Vec<f32>>,
    pub b_norm: Option<Vec<f32>>,
    pub c_norm: Option<Vec<f32>>,
}

/// A Jamba attention mixer (no RoPE, grouped-query).
pub struct AttnLayer {
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub wo: Matrix,
    pub bq: Option<Vec<f32>>,
    pub bk: Option<Vec<f32>>,
    pub bv: Option<Vec<f32>>,
    pub bo: Option<Vec<f32>>,
    pub n_head_kv: usize,
}

pub enum JambaMixer {
    Mamba(MambaLayer),
    Attention(AttnLayer),
}

/// A SwiGLU FFN: `down(silu(gate·x) ⊙ up·x)`, dense or as `n_expert` stacked experts behind a
/// softmax router (`router`: `n_expert` rows of D; the experts' matrices hold `n_expert` blocks
/// of rows, expert `x` at rows `x·n_rows_per_expert..`).
pub enum Ffn {
    Dense { gate: Matrix, up: Matrix, down: Matrix },
    Moe { router: Matrix, gate: Matrix, up: Matrix, down: Matrix },
}

pub struct JambaLayer {
    pub attn_norm: Vec<f32>,
    pub mixer: JambaMixer,
    pub ffn_norm: Vec<f32>,
    pub ffn: Ffn,
}

pub struct JambaWeights {
    pub layers: Vec<JambaLayer>,
}

pub struct Mamba2Layer {
    pub attn_norm: Vec<f32>,
    pub ssm_in: Matrix,
    /// `[K][E+2GN]`.
    pub conv_w: Vec<f32>,
    pub conv_b: Option<Vec<f32>>,
    pub dt_bias: Option<Vec<f32>>,
    /// `[H]`.
    pub a: Vec<f32>,
    /// `[H]`.
    pub d: Vec<f32>,
    /// `[E]`, group-major.
    pub norm: Vec<f32>,
    pub ssm_out: Matrix,
}

pub struct MambaWeights {
    pub layers: Vec<MambaLayer>,
}

pub struct Mamba2Weights {
    pub layers: Vec<Mamba2Layer>,
}

pub enum ArchWeights {
    Mamba(MambaWeights),
    Mamba2(Mamba2Weights),
    Jamba(JambaWeights),
}

/// Validated weights of a model.
pub struct Weights {
    pub hp: HParams,
    pub token_embd: Matrix,
    pub output_norm: Vec<f32>,
    /// `output.weight`, or the token embedding when the file has none (tied).
    pub output: Matrix,
    pub tied_output: bool,
    pub arch: ArchWeights,
    storage: Storage,
}

impl Weights {
    /// A matrix as the kernels take it.
    pub(crate) fn mat(&self, m: &Matrix) -> Result<WeightRef<'_>> {
        Ok(WeightRef::new(m.ty, self.storage.bytes(m.loc), m.n_rows, m.n_cols)?.with_finite(m.finite))
    }

    /// Builds the weights from a plan whose tensors are all in `storage`.
    pub(crate) fn build(plan: Plan, storage: Storage) -> Result<Weights> {
        let loc = |t: &TensorRef| Loc { slot: plan.by_name[&t.name], offset: t.offset, len: t.len };
        let f32s = |name: &str| -> Option<Vec<f32>> {
            let t = plan.get(name)?;
            let b = storage.bytes(loc(t));
            Some(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        };
        let req = |name: &str| -> Result<Vec<f32>> {
            f32s(name).ok_or_else(|| CoilError::new(ErrorCode::MissingTensor, format!("missing tensor {name}")))
        };
        let mat = |name: &str| -> Result<Matrix> {
            let t = plan
                .get(name)
                .ok_or_else(|| CoilError::new(ErrorCode::MissingTensor, format!("missing tensor {name}")))?;
            let mut m = Matrix { ty: t.ty, n_rows: t.n_rows, n_cols: t.n_cols, loc: loc(t), finite: false };
            // Validate once here, so evaluation never meets a bad matrix.
            WeightRef::new(m.ty, storage.bytes(m.loc), m.n_rows, m.n_cols)
                .map_err(|e| CoilError::new(e.code, format!("tensor {name}: {}", e.message)))?;
            if cfg!(target_arch = "wasm32") && m.ty == GgmlType::F16 {
                m.finite = crate::kernels::matmul::f16_all_finite(storage.bytes(m.loc));
            }
            Ok(m)
        };
        let hp = plan.hp.clone();
        let token_embd = mat("token_embd.weight")?;
        let output_norm = req("output_norm.weight")?;
        let (output, tied_output) = match plan.get("output.weight") {
            Some(_) => (mat("output.weight")?, false),
            None => (token_embd, true),
        };
        let (e, n, k) = (hp.d_inner, hp.d_state, hp.d_conv);
        let mamba_layer = |i: usize| -> Result<MambaLayer> {
            let b = |x: &str| format!("blk.{i}.{x}");
            let a_g = req(&b("ssm_a"))?;
            let mut a = vec![0f32; n * e];
            for ei in 0..e {
                for ni in 0..n {
                    a[ni * e + ei] = a_g[ei * n + ni];
                }
            }
            Ok(MambaLayer {
                attn_norm: req(&b("attn_norm.weight"))?,
                ssm_in: mat(&b("ssm_in.weight"))?,
                conv_w: crate::kernels::conv::transpose_conv_weights(&req(&b("ssm_conv1d.weight"))?, e, k),
                conv_b: f32s(&b("ssm_conv1d.bias")),
                ssm_x: mat(&b("ssm_x.weight"))?,
                ssm_dt: mat(&b("ssm_dt.weight"))?,
                dt_bias: f32s(&b("ssm_dt.bias")),
                a,
                d: req(&b("ssm_d"))?,
                ssm_out: mat(&b("ssm_out.weight"))?,
                dt_norm: f32s(&b("ssm_dt_norm.weight")),
                b_norm: f32s(&b("ssm_b_norm.weight")),
                c_norm: f32s(&b("ssm_c_norm.weight")),
            })
        };
        let arch = match hp.arch {
            Arch::Mamba => {
                let layers = (0..hp.n_layer).map(mamba_layer).collect::<Result<Vec<_>>>()?;
                ArchWeights::Mamba(MambaWeights { layers })
            }
            Arch::Jamba => {
                let mut layers = Vec::with_capacity(hp.n_layer);
                for i in 0..hp.n_layer {
                    let b = |x: &str| format!("blk.{i}.{x}");
                    let mixer = if hp.is_attention(i) {
                        JambaMixer::Attention(AttnLayer {
                            wq: mat(&b("attn_q.weight"))?,
                            wk: mat(&b("attn_k.weight"))?,
                            wv: mat(&b("attn_v.weight"))?,
                            wo: mat(&b("attn_output.weight"))?,
                            bq: f32s(&b("attn_q.bias")),
                            bk: f32s(&b("attn_k.bias")),
                            bv: f32s(&b("attn_v.bias")),
                            bo: f32s(&b("attn_output.bias")),
                            n_head_kv: hp.n_head_kv[i],
                        })
                    } else {
                        JambaMixer::Mamba(mamba_layer(i)?)
                    };
                    let ffn = if hp.moe[i] {
                        Ffn::Moe {
                            router: mat(&b("ffn_gate_inp.weight"))?,
                            gate: mat(&b("ffn_gate_exps.weight"))?,
                            up: mat(&b("ffn_up_exps.weight"))?,
                            down: mat(&b("ffn_down_exps.weight"))?,
                        }
                    } else {
                        Ffn::Dense {
                            gate: mat(&b("ffn_gate.weight"))?,
                            up: mat(&b("ffn_up.weight"))?,
                            down: mat(&b("ffn_down.weight"))?,
                        }
                    };
                    layers.push(JambaLayer {
                        attn_norm: req(&b("attn_norm.weight"))?,
                        mixer,
                        ffn_norm: req(&b("ffn_norm.weight"))?,
                        ffn,
                    });
                }
                ArchWeights::Jamba(JambaWeights { layers })
            }
            Arch::Mamba2 => {
                let cd = hp.conv_dim();
                let mut layers = Vec::with_capacity(hp.n_layer);
                for i in 0..hp.n_layer {
                    let b = |x: &str| format!("blk.{i}.{x}");
                    layers.push(Mamba2Layer {
                        attn_norm: req(&b("attn_norm.weight"))?,
                        ssm_in: mat(&b("ssm_in.weight"))?,
                        conv_w: crate::kernels::conv::transpose_conv_weights(&req(&b("ssm_conv1d.weight"))?, cd, k),
                        conv_b: f32s(&b("ssm_conv1d.bias")),
                        dt_bias: f32s(&b("ssm_dt.bias")),
                        a: req(&b("ssm_a"))?,
                        d: req(&b("ssm_d"))?,
                        norm: req(&b("ssm_norm.weight"))?,
                        ssm_out: mat(&b("ssm_out.weight"))?,
                    });
                }
                ArchWeights::Mamba2(Mamba2Weights { layers })
            }
        };
        Ok(Weights { hp, token_embd, output_norm, output, tied_output, arch, storage })
    }

    /// Bytes of the matrices (in their file types) plus the F32 copies.
    pub fn bytes(&self) -> u64 {
        let m = |x: &Matrix| x.loc.len as u64;
        let v = |x: &Vec<f32>| 4 * x.len() as u64;
        let o = |x: &Option<Vec<f32>>| x.as_ref().map_or(0, v);
        let mut total = m(&self.token_embd) + v(&self.output_norm) + if self.tied_output { 0 } else { m(&self.output) };
        match &self.arch {
            ArchWeights::Mamba(w) => {
                for l in &w.layers {
                    total += v(&l.attn_norm) + m(&l.ssm_in) + v(&l.conv_w) + o(&l.conv_b) + m(&l.ssm_x) + m(&l.ssm_dt);
                    total += o(&l.dt_bias) + v(&l.a) + v(&l.d) + m(&l.ssm_out);
                }
            }
            ArchWeights::Jamba(w) => {
                for l in &w.layers {
                    total += v(&l.attn_norm) + v(&l.ffn_norm);
                    match &l.mixer {
                        JambaMixer::Mamba(l) => {
                            total += m(&l.ssm_in) + v(&l.conv_w) + o(&l.conv_b) + m(&l.ssm_x) + m(&l.ssm_dt);
                            total += o(&l.dt_bias) + v(&l.a) + v(&l.d) + m(&l.ssm_out);
                            total += o(&l.dt_norm) + o(&l.b_norm) + o(&l.c_norm);
                        }
                        JambaMixer::Attention(a) => {
                            total += m(&a.wq) + m(&a.wk) + m(&a.wv) + m(&a.wo);
                            total += o(&a.bq) + o(&a.bk) + o(&a.bv) + o(&a.bo);
                        }
                    }
                    match &l.ffn {
                        Ffn::Dense { gate, up, down } => total += m(gate) + m(up) + m(down),
                        Ffn::Moe { router, gate, up, down } => total += m(router) + m(gate) + m(up) + m(down),
                    }
                }
            }
            ArchWeights::Mamba2(w) => {
                for l in &w.layers {
                    total += v(&l.attn_norm) + m(&l.ssm_in) + v(&l.conv_w) + o(&l.conv_b) + o(&l.dt_bias);
                    total += v(&l.a) + v(&l.d) + v(&l.norm) + m(&l.ssm_out);
                }
            }
        }
        total
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
