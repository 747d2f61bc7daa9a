//! Matrix products with a GGUF weight matrix: `out[t][r] = Σ_c W[r, c] · x[t][c]`.
//!
//! * [`matmul`]: the fast path for this machine, parallel over weight rows on a [`ThreadPool`].
//! * [`matmul_ref`]: the plain reference — each weight row dequantized to f32
//!   ([`crate::quant::dequantize_row`]) and multiplied with the unquantized f32 activations,
//!   accumulated in **f64**, rounded to f32 once.
//! * [`matmul_exact`]: what ggml's portable C code computes, bit for bit: for quantized weights
//!   the activations are quantized to Q8_0 / Q8_1 / Q8_K first (as ggml does, see
//!   [`super::vecdot`]) and the generic `ggml_vec_dot_*` arithmetic is reproduced; for float
//!   weights a sequential-in-4-lanes f32 dot.
//! * [`matmul_canon`]: the canonical float order of docs/numerics.md in plain scalar code: the
//!   "scalar" path, and what every fast path gives bit for bit.
//!
//! Paths ([`matmul_paths`]; native picks at run time, wasm32 at compile time):
//!
//! | path | needs | types with their own kernel | others |
//! |---|---|---|---|
//! | `avx512` | AVX-512 F/BW/VL/VNNI/VBMI/BITALG + AVX2/FMA/F16C (Ice Lake, Zen 4+) | all 11 | — |
//! | `avx2` | AVX2 + FMA + F16C (Haswell, Zen 1+) | all 11 | — |
//! | `neon-dotprod` | aarch64 with the `dotprod` extension (`sdot`: Armv8.2+, Apple M1+) | the 8 quantized types | F32/F16/BF16: `neon` |
//! | `neon` | aarch64 (NEON is baseline) | all 11 | — |
//! | `simd128` | wasm32 built with `+simd128` | all 11 (Q5_0/Q5_1/Q5_K decode partly scalar) | — |
//! | `scalar` | — | all 11 | — |
//!
//! Every path, the two NEON ones included, computes the canonical order, so matrix products on ARM
//! equal x86's and the browser's exactly. `scripts/test-aarch64.sh` runs these tests for aarch64
//! under qemu.
//!
//! Float weights multiply f32 activations (F16/BF16 converted to f32 in registers; ggml instead
//! rounds the activations to f16/bf16 first, so for F16/BF16 coil is the more accurate of the two).
//! All paths sum the same integers as `matmul_exact` and differ from it only by the order of
//! the f32 additions (tests bound the difference by 2e-6 of `Σ|terms|`; typically 1e-8). Against
//! `matmul_ref` the quantized types also carry the activation quantization error, bounded per block
//! by about `Σ_i |w_i| · amax_block / 254` (Q8_0, Q8_1, Q8_K all round to the nearest of 255 levels).
//!
//! Results never depend on the thread count or on `n_tokens`: every output element is computed by
//! one thread with the same instruction sequence whatever tile or batch it belongs to (so a token
//! of a prompt batch gets exactly the logits it would get alone).
//!
//! Work split: rows are cut into tasks (about 8 per thread; one contiguous range per thread for
//! matrix-vector products) handed out dynamically. Matrix-vector products prefetch the weights
//! 8 KiB ahead into L2 (they stream from memory once; wasm, which has no prefetch instruction,
//! loads a byte of each line 4 KiB ahead instead); with more tokens than
//! a tile holds (8 on AVX-512), quantized rows (and F16 rows on wasm) are decoded once per panel
//! and token block into a per-thread buffer and reused by every token tile (prompt processing is
//! compute-bound). The activation quantization runs once per call (in parallel over tokens for batches).

use super::vecdot::{self, actq, ActKind, AlignedBuf, Kernel, QKernel, TileArgs, TileFn};
use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::GgmlType;
use crate::quant;
use crate::threads::ThreadPool;
use std::cell::RefCell;

/// The weight types [`matmul`] and [`get_rows`] accept.
pub const MATMUL_TYPES: [GgmlType; 11] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// A borrowed 2-D weight matrix in its GGUF encoding: `n_rows` rows (output features, ggml `ne1`)
/// of `n_cols` values (input features, ggml `ne0`), each row `row_bytes()` long, rows contiguous.
/// A 3-D tensor (experts) is a `WeightRef` of `n_experts * n_rows` rows; [`WeightRef::rows`] cuts
/// one expert (or any row range) out of it without copying.
#[derive(Clone, Copy, Debug)]
pub struct WeightRef<'a> {
    pub ty: GgmlType,
    pub data: &'a [u8],
    pub n_rows: usize,
    pub n_cols: usize,
    /// Known to hold no infinity or NaN (F16 weights; see [`f16_all_finite`]): lets the wasm F16
    /// kernel skip its per-value check. False (unknown) from [`WeightRef::new`]; the same results
    /// either way.
    pub finite: bool,
}

impl<'a> WeightRef<'a> {
    /// Checks the type (one of [`MATMUL_TYPES`], else `UnsupportedType`), that `n_cols` is a whole
    /// number of blocks and that `data` is exactly `n_rows` rows long (else `BadTensorShape`).
    pub fn new(ty: GgmlType, data: &'a [u8], n_rows: usize, n_cols: usize) -> Result<Self> {
        if !MATMUL_TYPES.contains(&ty) {
            return Err(CoilError::new(
                ErrorCode::UnsupportedType,
                format!("matrix products with {ty} weights are not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)"),
            ));
        }
        let bs = ty.block_size() as usize;
        if !n_cols.is_multiple_of(bs) {
            return Err(CoilError::new(
                ErrorCode::BadTensorShape,
                format!("a {ty} row of {n_cols} values is not a whole number of {bs}-value blocks"),
            ));
        }
        let want = (n_cols / bs).checked_mul(ty.type_size() as usize).and_then(|rb| rb.checked_mul(n_rows));
        if want != Some(data.len()) {
            return Err(CoilError::new(
                ErrorCode::BadTensorShape,
                format!(
                    "{n_rows} rows of {n_cols} {ty} values take {} bytes, but the data has {}",
                    want.map(|w| w.to_string()).unwrap_or_else(|| "too many".into()),
                    data.len()
                ),
            ));
        }
        Ok(WeightRef { ty, data, n_rows, n_cols, finite: false })
    }

    /// The same matrix with [`WeightRef::finite`] set: the caller has checked (with
    /// [`f16_all_finite`]) that its F16 values hold no infinity or NaN.
    pub fn with_finite(self, finite: bool) -> Self {
        WeightRef { finite, ..self }
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.n_cols / self.ty.block_size() as usize * self.ty.type_size() as usize
    }

    /// The bytes of row `r` (`r < n_rows`).
    pub fn row(&self, r: usize) -> &'a [u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Rows `start .. start + n` as a matrix of their own (e.g. expert `e` of a stacked tensor:
    /// `w.rows(e * rows_per_expert, rows_per_expert)`).
    pub fn rows(&self, start: usize, n: usize) -> Result<WeightRef<'a>> {
        if start.checked_add(n).is_none_or(|e| e > self.n_rows) {
            return Err(CoilError::new(
                ErrorCode::InvalidArgument,
                format!("rows {start}..{} of a {}-row matrix", start.saturating_add(n), self.n_rows),
            ));
        }
        let rb = self.row_bytes();
        Ok(WeightRef { data: &self.data[start * rb..(start + n) * rb], n_rows: n, ..*self })
    }
}

/// Whether `data` (little-endian F16 values) holds no infinity or NaN.
pub fn f16_all_finite(data: &[u8]) -> bool {
    data.chunks_exact(2).all(|c| c[1] & 0x7c != 0x7c)
}

fn check_shapes(w: &WeightRef, x: &[f32], n_tokens: usize, out: &[f32]) {
    assert!(
        x.len() >= n_tokens * w.n_cols,
        "matmul: x has {} values, {n_tokens} tokens of {} need {}",
        x.len(),
        w.n_cols,
        n_tokens * w.n_cols
    );
    assert!(
        out.len() >= n_tokens * w.n_rows,
        "matmul: out has {} values, {n_tokens} tokens of {} need {}",
        out.len(),
        w.n_rows,
        n_tokens * w.n_rows
    );
    debug_assert_eq!(w.data.len(), w.n_rows * w.row_bytes());
}

/// `out[t * n_rows + r] = Σ_c W[r, c] · x[t * n_cols + c]` for `t < n_tokens`, with the fastest
/// path of this machine (see the module docs for the numerics). Panics if `x` or `out` is too short.
pub fn matmul(w: &WeightRef, x: &[f32], n_tokens: usize, out: &mut [f32], pool: &ThreadPool) {
    best_path().run(w, x, n_tokens, out, pool)
}

/// The reference: dequantized weights times f32 activations, accumulated in f64 (see module docs).
pub fn matmul_ref(w: &WeightRef, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    check_shapes(w, x, n_tokens, out);
    let mut row = vec![0f32; w.n_cols];
    for r in 0..w.n_rows {
        quant::dequantize_row(w.ty, w.row(r), &mut row).expect("WeightRef checked the type and length");
        for t in 0..n_tokens {
            let xt = &x[t * w.n_cols..(t + 1) * w.n_cols];
            let s: f64 = row.iter().zip(xt).map(|(&a, &b)| a as f64 * b as f64).sum();
            out[t * w.n_rows + r] = s as f32;
        }
    }
}

/// Which activation quantization ggml pairs with a weight type (`None` for float types).
pub(crate) fn act_kind(ty: GgmlType) -> Option<ActKind> {
    match ty {
        GgmlType::Q8_0 | GgmlType::Q4_0 | GgmlType::Q5_0 => Some(ActKind::Q8_0),
        GgmlType::Q4_1 | GgmlType::Q5_1 => Some(ActKind::Q8_1),
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => Some(ActKind::Q8K),
        _ => None,
    }
}

/// ggml's generic arithmetic, bit for bit (see module docs).
pub fn matmul_exact(w: &WeightRef, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    use vecdot::generic as g;
    scalar_matmul(w, x, n_tokens, out, super::dot::dot_f32_ref, |ty| match ty {
        GgmlType::Q4_0 => g::vec_dot_q4_0_q8_0_ref,
        GgmlType::Q4_1 => g::vec_dot_q4_1_q8_1_ref,
        GgmlType::Q5_0 => g::vec_dot_q5_0_q8_0_ref,
        GgmlType::Q5_1 => g::vec_dot_q5_1_q8_1_ref,
        GgmlType::Q8_0 => g::vec_dot_q8_0_q8_0_ref,
        GgmlType::Q4_K => g::vec_dot_q4_k_q8_k_ref,
        GgmlType::Q5_K => g::vec_dot_q5_k_q8_k_ref,
        GgmlType::Q6_K => g::vec_dot_q6_k_q8_k_ref,
        _ => unreachable!(),
    });
}

/// The canonical order (module docs of [`super::vecdot`]) in plain scalar code: what every fast
/// path gives bit for bit (the "scalar" path). Quantized weights: the activations quantized as
/// ggml does, integer sums per block, then the canonical float order; float weights: the
/// canonical 16-lane sum of [`super::ops::canon_sum`].
pub fn matmul_canon(w: &WeightRef, x: &[f32], n_tokens: usize, out: &mut [f32]) {
    use vecdot::generic as g;
    scalar_matmul(w, x, n_tokens, out, canon_dot_f32, |ty| match ty {
        GgmlType::Q4_0 => g::canon_q4_0_q8_0,
        GgmlType::Q4_1 => g::canon_q4_1_q8_1,
        GgmlType::Q5_0 => g::canon_q5_0_q8_0,
        GgmlType::Q5_1 => g::canon_q5_1_q8_1,
        GgmlType::Q8_0 => g::canon_q8_0_q8_0,
        GgmlType::Q4_K => g::canon_q4_k_q8_k,
        GgmlType::Q5_K => g::canon_q5_k_q8_k,
        GgmlType::Q6_K => g::canon_q6_k_q8_k,
        _ => unreachable!(),
    });
}

/// A scalar matrix product: float weights dequantized row by row and multiplied with `fdot`;
/// quantized ones with the activations quantized as ggml does and `qdot(type)` per row and token.
fn scalar_matmul(
    w: &WeightRef,
    x: &[f32],
    n_tokens: usize,
    out: &mut [f32],
    fdot: fn(&[f32], &[f32]) -> f32,
    qdot: fn(GgmlType) -> fn(&[u8], &[u8]) -> f32,
) {
    check_shapes(w, x, n_tokens, out);
    let n = w.n_cols;
    match act_kind(w.ty) {
        None => {
            let mut row = vec![0f32; n];
            for r in 0..w.n_rows {
                quant::dequantize_row(w.ty, w.row(r), &mut row).expect("checked");
                for t in 0..n_tokens {
                    out[t * w.n_rows + r] = fdot(&row, &x[t * n..(t + 1) * n]);
                }
            }
        }
        Some(kind) => {
            let aty = match kind {
                ActKind::Q8_0 => GgmlType::Q8_0,
                ActKind::Q8_1 => GgmlType::Q8_1,
                ActKind::Q8K => GgmlType::Q8_K,
            };
            let dot = qdot(w.ty);
            let ab = quant::row_bytes(aty, n).expect("block multiple");
            let mut acts = vec![0u8; ab * n_tokens];
            for t in 0..n_tokens {
                quant::quantize_row(aty, &x[t * n..(t + 1) * n], &mut acts[t * ab..(t + 1) * ab]).expect("checked");
            }
            for r in 0..w.n_rows {
                let wr = w.row(r);
                for t in 0..n_tokens {
                    out[t * w.n_rows + r] = dot(wr, &acts[t * ab..(t + 1) * ab]);
                }
            }
        }
    }
}

/// `Σ a[i]·b[i]` in the canonical order of [`super::ops::canon_sum`], plain scalar code.
pub fn canon_dot_f32(a: &[f32], b: &[f32]) -> f32 {
    use super::ops::{canon_sum, Portable, Vf32};
    let n = a.len().min(b.len());
    // SAFETY: indexes below `n`; the portable "vector" is one plain f32.
    unsafe {
        canon_sum::<Portable>(
            n,
            |i| Portable::splat(*a.get_unchecked(i) * *b.get_unchecked(i)),
            |i| *a.get_unchecked(i) * *b.get_unchecked(i),
        )
    }
}

/// Embedding lookup: `out[i * n_cols ..][..n_cols]` = row `ids[i]` dequantized. An id `>= n_rows`
/// or an `out` of the wrong length is an `InvalidArgument` error (never a panic).
pub fn get_rows(w: &WeightRef, ids: &[u32], out: &mut [f32]) -> Result<()> {
    let n = w.n_cols;
    if ids.len().checked_mul(n) != Some(out.len()) {
        return Err(CoilError::new(
            ErrorCode::InvalidArgument,
            format!(
                "get_rows: {} ids of {n} values need an output of {} values, got {}",
                ids.len(),
                ids.len() * n,
                out.len()
            ),
        ));
    }
    for (i, &id) in ids.iter().enumerate() {
        if id as usize >= w.n_rows {
            return Err(CoilError::new(ErrorCode::TokenOutOfRange, format!("row {id} of a {}-row matrix", w.n_rows)));
        }
        quant::dequantize_row(w.ty, w.row(id as usize), &mut out[i * n..(i + 1) * n])?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Paths

/// An implementation of [`matmul`]: "scalar", "avx2", "avx512" (x86-64), "neon", "neon-dotprod"
/// (aarch64), "simd128" (wasm32).
#[derive(Clone, Copy)]
pub struct MatmulPath {
    name: &'static str,
    isa: Isa,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "aarch64")]
    Neon,
    #[cfg(target_arch = "aarch64")]
    NeonDotprod,
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    Simd128,
}

impl std::fmt::Debug for MatmulPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl MatmulPath {
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn kernel(&self, ty: GgmlType) -> Option<Kernel> {
        match self.isa {
            Isa::Scalar => None,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => vecdot::x86_avx2::kernel(ty),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => vecdot::x86_avx512::kernel(ty).or_else(|| vecdot::x86_avx2::kernel(ty)),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => vecdot::aarch64_neon::kernel(ty, false),
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDotprod => vecdot::aarch64_neon::kernel(ty, true),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Simd128 => vecdot::wasm_simd128::kernel(ty),
        }
    }

    /// The name of the implementation this path actually uses for `ty` (paths fall back to a more
    /// basic one for types they have no kernel of their own for).
    pub fn used_for(&self, ty: GgmlType) -> &'static str {
        match self.isa {
            Isa::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if vecdot::x86_avx512::kernel(ty).is_none() => "avx2",
            // Float types have no integer products: one kernel for both NEON paths.
            #[cfg(target_arch = "aarch64")]
            Isa::NeonDotprod if matches!(self.kernel(ty), Some(Kernel::Float(_))) => "neon",
            _ if self.kernel(ty).is_none() => "scalar",
            _ => self.name,
        }
    }

    /// [`matmul`] with this path.
    pub fn run(&self, w: &WeightRef, x: &[f32], n_tokens: usize, out: &mut [f32], pool: &ThreadPool) {
        check_shapes(w, x, n_tokens, out);
        if n_tokens == 0 || w.n_rows == 0 {
            return;
        }
        if w.n_cols == 0 {
            out[..n_tokens * w.n_rows].fill(0.0);
            return;
        }
        match self.kernel(w.ty) {
            None => scalar_parallel(w, x, n_tokens, out, pool),
            Some(Kernel::Float(k)) => {
                let act = x.as_ptr() as *const u8;
                drive(k.tile, k.rm, k.rn, k.pre, w, act, w.n_cols * 4, n_tokens, out, pool);
            }
            Some(Kernel::Quant(k)) => run_quant(&k, w, x, n_tokens, out, pool),
        }
    }
}

/// Every path this machine can run, the scalar reference first, the fastest last.
pub fn matmul_paths() -> Vec<MatmulPath> {
    #[allow(unused_mut)]
    let mut v = vec![MatmulPath { name: "scalar", isa: Isa::Scalar }];
    #[cfg(target_arch = "x86_64")]
    {
        if vecdot::x86_avx2::available() {
            v.push(MatmulPath { name: "avx2", isa: Isa::Avx2 });
        }
        if vecdot::x86_avx512::available() {
            v.push(MatmulPath { name: "avx512", isa: Isa::Avx512 });
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        v.push(MatmulPath { name: "neon", isa: Isa::Neon });
        if vecdot::aarch64_neon::dotprod_available() {
            v.push(MatmulPath { name: "neon-dotprod", isa: Isa::NeonDotprod });
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    v.push(MatmulPath { name: "simd128", isa: Isa::Simd128 });
    v
}

/// The path [`matmul`] uses (detected once).
pub fn best_path() -> MatmulPath {
    use std::sync::OnceLock;
    static BEST: OnceLock<MatmulPath> = OnceLock::new();
    *BEST.get_or_init(|| *matmul_paths().last().expect("scalar is always there"))
}

// ---------------------------------------------------------------------------------------------
// Driver

#[derive(Clone, Copy)]
struct SyncPtr<T>(*mut T);
unsafe impl<T> Send for SyncPtr<T> {}
unsafe impl<T> Sync for SyncPtr<T> {}

thread_local! {
    static ACT_BUF: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
    static NAT: RefCell<actq::NatAct> = RefCell::new(actq::NatAct::default());
}

/// Scalar path: the canonical order in plain code ([`matmul_canon`]), rows split over the pool.
fn scalar_parallel(w: &WeightRef, x: &[f32], n_tokens: usize, out: &mut [f32], pool: &ThreadPool) {
    let n_tasks = pool.n_threads().min(w.n_rows);
    if n_tasks <= 1 || w.n_rows * w.n_cols * n_tokens < 1 << 16 {
        return matmul_canon(w, x, n_tokens, out);
    }
    let chunk = w.n_rows.div_ceil(n_tasks);
    let outp = SyncPtr(out.as_mut_ptr());
    let n_rows = w.n_rows;
    pool.run(n_tasks, |i| {
        let r0 = i * chunk;
        let r1 = (r0 + chunk).min(n_rows);
        if r0 >= r1 {
            return;
        }
        let sub = w.rows(r0, r1 - r0).expect("in range");
        let mut tmp = vec![0f32; (r1 - r0) * n_tokens];
        matmul_canon(&sub, x, n_tokens, &mut tmp);
        let o = outp;
        for t in 0..n_tokens {
            for r in r0..r1 {
                // SAFETY: each task writes only its own rows r0..r1 of every token.
                unsafe { *o.0.add(t * n_rows + r) = tmp[t * (r1 - r0) + (r - r0)] };
            }
        }
    });
}

fn run_quant(k: &QKernel, w: &WeightRef, x: &[f32], n_tokens: usize, out: &mut [f32], pool: &ThreadPool) {
    let n = w.n_cols;
    let stride = n.div_ceil(k.group) * k.rec_bytes;
    let prep = |t0: usize, t1: usize, buf: SyncPtr<u8>| {
        NAT.with(|nat| {
            let mut fresh = actq::NatAct::default();
            let mut guard = nat.try_borrow_mut();
            let nat: &mut actq::NatAct = match guard.as_mut() {
                Ok(g) => g,
                Err(_) => &mut fresh,
            };
            for t in t0..t1 {
                actq::quantize(k.act, &x[t * n..(t + 1) * n], nat);
                // SAFETY: tokens t0..t1 own bytes t*stride..(t+1)*stride of the buffer.
                let dst = unsafe { std::slice::from_raw_parts_mut(buf.0.add(t * stride), stride) };
                (k.pack)(nat, dst);
            }
        })
    };
    let mut body = |buf: &mut [u8]| {
        let bp = SyncPtr(buf.as_mut_ptr());
        let per = 8usize;
        let n_chunks = n_tokens.div_ceil(per);
        if n_chunks > 1 && pool.n_threads() > 1 {
            pool.run(n_chunks, |c| prep(c * per, ((c + 1) * per).min(n_tokens), bp));
        } else {
            prep(0, n_tokens, bp);
        }
        drive(k.tile, k.rm, k.rn, k.pre, w, buf.as_ptr(), stride, n_tokens, out, pool);
    };
    ACT_BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut g) => body(g.get(stride * n_tokens)),
        Err(_) => body(AlignedBuf::default().get(stride * n_tokens)),
    });
}

thread_local! {
    static DEC_BUF: RefCell<AlignedBuf> = RefCell::new(AlignedBuf::default());
}

/// Splits the rows into tasks and runs the tile function over each task's rows and all tokens.
/// With `pre` (quantized weights, several token tiles) each panel of rows is decoded once per
/// token block into a per-thread buffer and the pre-decoded tile reads that instead.
#[allow(clippy::too_many_arguments)]
fn drive(
    tile: TileFn,
    rm: usize,
    rn: usize,
    pre: Option<vecdot::PreDecode>,
    w: &WeightRef,
    act: *const u8,
    act_stride: usize,
    n_tokens: usize,
    out: &mut [f32],
    pool: &ThreadPool,
) {
    let n_rows = w.n_rows;
    let row_bytes = w.row_bytes();
    // Task size: enough rows that a task is worth a hand-off, few enough to balance threads.
    // Matrix-vector products (one token tile: generation, or a few sequences decoding together)
    // stream the weights from memory: one contiguous range of rows per thread, so that each thread
    // reads one sequential stream and prefetches ahead of it without restarting (2 threads,
    // tokens/s against 8 tasks per thread: mamba2-130m Q8_0 +2%, mamba-130m Q8_0 +5%, Jamba Q4_K
    // +15%; the wasm engine the same within noise). A worker that has not joined yet costs
    // nothing: the caller then takes the other range too.
    let threads = pool.n_threads();
    let work = (n_rows * row_bytes) as u64 * n_tokens.max(1) as u64;
    let gemm = n_tokens > rn;
    let n_tasks_target = if threads <= 1 || work < 48 * 1024 {
        1
    } else if gemm {
        threads * 8
    } else {
        threads
    };
    let rows_per_task = n_rows.div_ceil(n_tasks_target).next_multiple_of(rm).max(rm);
    let n_tasks = n_rows.div_ceil(rows_per_task);
    let pre = if gemm { pre } else { None };
    // Token blocks keep a block's activations in L2 while a task's weight rows pass by them.
    // (At least 4 token tiles per block, so that decoded weight panels are reused.)
    let tb = if n_tokens <= 64 { n_tokens } else { (512 * 1024 / act_stride.max(1)).clamp(4 * rn, 64) / rn * rn };
    // Row panels: the rows whose weights stay in L1 while the token tiles of a block go by.
    let panel_row_bytes = match pre {
        Some(p) => w.n_cols.div_ceil(p.group) * p.bytes_per_group,
        None => row_bytes,
    };
    let block = pre.map_or(1, |p| p.row_block);
    let panel = if gemm {
        ((24 * 1024) / panel_row_bytes.max(1)).max(1).next_multiple_of(rm).next_multiple_of(block)
    } else {
        rows_per_task
    };
    let outp = SyncPtr(out.as_mut_ptr());
    let actp = SyncPtr(act as *mut u8);
    let task = |i: usize| {
        let (o, a) = (outp, actp);
        let r0 = i * rows_per_task;
        let r1 = (r0 + rows_per_task).min(n_rows);
        let run = |dec: Option<&mut [u8]>| {
            let mut t0 = 0;
            while t0 < n_tokens {
                let t1 = (t0 + tb).min(n_tokens);
                let mut p0 = r0;
                while p0 < r1 {
                    let pr = panel.min(r1 - p0);
                    let mut args = TileArgs {
                        w: unsafe { w.data.as_ptr().add(p0 * row_bytes) },
                        row_bytes,
                        n_cols: w.n_cols,
                        act: a.0,
                        act_stride,
                        out: o.0,
                        out_stride: n_rows,
                        prefetch: !gemm,
                        finite: w.finite,
                    };
                    let mut f = tile;
                    if let (Some(p), Some(buf)) = (pre, dec.as_deref()) {
                        // SAFETY: the buffer holds `pr` decoded rows (sized by the caller).
                        unsafe { (p.decode)(pr, &args, buf.as_ptr() as *mut u8) };
                        args.w = buf.as_ptr();
                        args.row_bytes = panel_row_bytes;
                        f = p.tile;
                    }
                    let mut t = t0;
                    while t < t1 {
                        let nn = rn.min(t1 - t);
                        let targs = TileArgs {
                            act: unsafe { a.0.add(t * act_stride) },
                            out: unsafe { o.0.add(t * n_rows + p0) },
                            ..args
                        };
                        // SAFETY: the tile reads rows p0..p0+pr (inside `w.data` or the decoded
                        // panel), tokens t..t+nn of the activations, and writes only its own outputs
                        // (rows of this task: disjoint between tasks).
                        unsafe { f(pr, nn, &targs) };
                        t += nn;
                    }
                    p0 += pr;
                }
                t0 = t1;
            }
        };
        if pre.is_some() {
            let need = panel * panel_row_bytes;
            DEC_BUF.with(|b| match b.try_borrow_mut() {
                Ok(mut g) => run(Some(g.get(need))),
                Err(_) => run(Some(AlignedBuf::default().get(need))),
            });
        } else {
            run(None);
        }
    };
    if n_tasks == 1 {
        task(0);
    } else {
        pool.run(n_tasks, task);
    }
}

// ---------------------------------------------------------------------------------------------
// Self-check (also run from JS through the bindings on every target)

/// Path names for the self-check, `matmul/<path>/<type>`.
fn check_name(path: &str, ty: GgmlType) -> &'static str {
    macro_rules! names {
        ($($p:literal),*) => {
            match (path, ty) {
                $(
                    ($p, GgmlType::F32) => concat!("matmul/", $p, "/F32"),
                    ($p, GgmlType::F16) => concat!("matmul/", $p, "/F16"),
                    ($p, GgmlType::BF16) => concat!("matmul/", $p, "/BF16"),
                    ($p, GgmlType::Q8_0) => concat!("matmul/", $p, "/Q8_0"),
                    ($p, GgmlType::Q4_0) => concat!("matmul/", $p, "/Q4_0"),
                    ($p, GgmlType::Q4_1) => concat!("matmul/", $p, "/Q4_1"),
                    ($p, GgmlType::Q5_0) => concat!("matmul/", $p, "/Q5_0"),
                    ($p, GgmlType::Q5_1) => concat!("matmul/", $p, "/Q5_1"),
                    ($p, GgmlType::Q4_K) => concat!("matmul/", $p, "/Q4_K"),
                    ($p, GgmlType::Q5_K) => concat!("matmul/", $p, "/Q5_K"),
                    ($p, GgmlType::Q6_K) => concat!("matmul/", $p, "/Q6_K"),
                )*
                _ => "matmul/other",
            }
        };
    }
    names!("scalar", "avx2", "avx512", "neon", "neon-dotprod", "simd128")
}

/// Selfcheck entry for "this path gives the same bits as [`matmul_canon`]" (0 = always did).
fn canon_name(path: &str) -> &'static str {
    match path {
        "scalar" => "matmul/scalar/canon",
        "avx2" => "matmul/avx2/canon",
        "avx512" => "matmul/avx512/canon",
        "neon" => "matmul/neon/canon",
        "neon-dotprod" => "matmul/neon-dotprod/canon",
        "simd128" => "matmul/simd128/canon",
        _ => "matmul/other/canon",
    }
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Records a pass/fail check as 0 (pass) or 1 under `name`, failing it if any call failed.
fn flag(out: &mut Vec<(&'static str, f32)>, name: &'static str, failed: bool) {
    let v = if failed { 1.0 } else { 0.0 };
    match out.iter_mut().find(|(n, _)| *n == name) {
        Some((_, m)) => *m = m.max(v),
        None => out.push((name, v)),
    }
}

/// Self-check names for "a token in a batch gives what it gives alone".
fn batch_name(path: &str) -> &'static str {
    match path {
        "scalar" => "matmul/scalar/batch=alone",
        "avx2" => "matmul/avx2/batch=alone",
        "avx512" => "matmul/avx512/batch=alone",
        "neon" => "matmul/neon/batch=alone",
        "neon-dotprod" => "matmul/neon-dotprod/batch=alone",
        "simd128" => "matmul/simd128/batch=alone",
        _ => "matmul/other/batch=alone",
    }
}

/// Deterministic test data: a weight matrix of `ty` quantized from smooth pseudo-random values.
pub(crate) fn synth_weights(ty: GgmlType, n_rows: usize, n_cols: usize, seed: u64) -> Vec<u8> {
    let mut rng = crate::util::SplitMix64::new(seed);
    let vals: Vec<f32> = (0..n_rows * n_cols).map(|_| (rng.next_f32() * 2.0 - 1.0) * (0.5 + rng.next_f32())).collect();
    let mut data = vec![0u8; quant::row_bytes(ty, n_cols).unwrap() * n_rows];
    let rb = quant::row_bytes(ty, n_cols).unwrap();
    for r in 0..n_rows {
        quant::quantize_row(ty, &vals[r * n_cols..(r + 1) * n_cols], &mut data[r * rb..(r + 1) * rb]).unwrap();
    }
    data
}

/// Relative difference of `a` from `b`, normalised by `scale` per element: max |a−b| / scale.
pub(crate) fn max_rel(a: &[f32], b: &[f32], scale: &[f64]) -> f32 {
    a.iter()
        .zip(b)
        .zip(scale)
        .map(|((&x, &y), &s)| if x == y { 0.0 } else { ((x as f64 - y as f64).abs() / s.max(1e-30)) as f32 })
        .fold(0f32, |m, d| if d.is_nan() || m.is_nan() { f32::NAN } else { m.max(d) })
}

/// `Σ_c |W[r,c] · x[t,c]|` with W dequantized: the natural scale of each output's rounding error.
pub(crate) fn abs_scale(w: &WeightRef, x: &[f32], n_tokens: usize) -> Vec<f64> {
    let mut row = vec![0f32; w.n_cols];
    let mut s = vec![0f64; n_tokens * w.n_rows];
    // Types with a min: |scale part| + |min part| (the kernels round the two separately).
    let (bb, neg_min) = match w.ty {
        GgmlType::Q4_1 => (20, false),
        GgmlType::Q5_1 => (24, false),
        GgmlType::Q4_K => (144, true),
        GgmlType::Q5_K => (176, true),
        _ => (0, false),
    };
    for r in 0..w.n_rows {
        let mut bytes = w.row(r).to_vec();
        for blk in bytes.chunks_exact_mut(bb.max(1)).filter(|_| bb > 0) {
            blk[1] &= 0x7F;
            blk[3] = if neg_min { blk[3] | 0x80 } else { blk[3] & 0x7F };
        }
        quant::dequantize_row(w.ty, &bytes, &mut row).unwrap();
        for t in 0..n_tokens {
            s[t * w.n_rows + r] =
                row.iter().zip(&x[t * w.n_cols..(t + 1) * w.n_cols]).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
        }
    }
    s
}

/// Runs every matmul path of this machine on every type against [`matmul_exact`]; appends
/// `("matmul/<path>/<type>", max relative difference)` (normalised by `Σ|w·x|`) to `out`.
pub fn selfcheck(out: &mut Vec<(&'static str, f32)>) {
    let pool = ThreadPool::new(1);
    let mut rng = crate::util::SplitMix64::new(0xc011);
    for &ty in &MATMUL_TYPES {
        let bs = ty.block_size() as usize;
        let n_cols = if bs == 256 {
            512
        } else if bs == 32 {
            96
        } else {
            75
        };
        let n_rows = 7;
        let n_tokens = 3;
        let data = synth_weights(ty, n_rows, n_cols, 17 + ty.id() as u64);
        // Finite F16 data, marked so as a model load marks it (the wasm kernel's unchecked route).
        let finite = ty == GgmlType::F16 && f16_all_finite(&data);
        let w = WeightRef::new(ty, &data, n_rows, n_cols).expect("valid").with_finite(finite);
        let x: Vec<f32> = (0..n_cols * n_tokens).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        let mut want = vec![0f32; n_rows * n_tokens];
        matmul_exact(&w, &x, n_tokens, &mut want);
        let scale = abs_scale(&w, &x, n_tokens);
        let mut canon = vec![0f32; n_rows * n_tokens];
        matmul_canon(&w, &x, n_tokens, &mut canon);
        for p in matmul_paths() {
            let mut got = vec![f32::NAN; n_rows * n_tokens];
            p.run(&w, &x, n_tokens, &mut got, &pool);
            out.push((check_name(p.name(), ty), max_rel(&got, &want, &scale)));
            flag(out, canon_name(p.name()), !same_bits(&got, &canon));
            // One token at a time (generation's matrix-vector tiles).
            let mut alone = vec![f32::NAN; n_rows];
            for t in 0..n_tokens {
                p.run(&w, &x[t * n_cols..(t + 1) * n_cols], 1, &mut alone, &pool);
                flag(out, canon_name(p.name()), !same_bits(&alone, &canon[t * n_rows..(t + 1) * n_rows]));
            }
        }
    }
    // Shapes that reach every part of the tiles, for every type: row lengths with several groups
    // of blocks and a tail (legacy types go 4 blocks at a time on simd128), F16/F32 rows ending in
    // an 8-, 4- and 1-wide step, row counts that leave a partial row tile, and enough tokens for
    // the prompt-processing route (pre-decoded panels, several token tiles) — where each token
    // must come out bit for bit as when computed alone (one token takes the generation tiles).
    for &ty in &MATMUL_TYPES {
        let n_cols = match ty.block_size() {
            256 => 256 * 3,
            32 => 32 * 7,
            _ => 8 * 9 + 4 + 3,
        };
        let (n_rows, n_tokens) = (11, 13);
        let mut data = synth_weights(ty, n_rows, n_cols, 29 + ty.id() as u64);
        if ty == GgmlType::F16 {
            // An infinity in row 5: the fast F16 conversion must notice it and fall back.
            let at = 5 * n_cols * 2 + 2 * 17;
            data[at..at + 2].copy_from_slice(&0x7c00u16.to_le_bytes());
        }
        let w = WeightRef::new(ty, &data, n_rows, n_cols).expect("valid");
        let x: Vec<f32> = (0..n_cols * n_tokens).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        let mut want = vec![0f32; n_rows * n_tokens];
        matmul_exact(&w, &x, n_tokens, &mut want);
        let scale = abs_scale(&w, &x, n_tokens);
        let mut canon = vec![0f32; n_rows * n_tokens];
        matmul_canon(&w, &x, n_tokens, &mut canon);
        for p in matmul_paths() {
            let mut got = vec![f32::NAN; n_rows * n_tokens];
            p.run(&w, &x, n_tokens, &mut got, &pool);
            flag(out, canon_name(p.name()), !same_bits(&got, &canon));
            let d = max_rel(&got, &want, &scale);
            let mut alone = vec![f32::NAN; n_rows];
            let mut same = true;
            for t in 0..n_tokens {
                p.run(&w, &x[t * n_cols..(t + 1) * n_cols], 1, &mut alone, &pool);
                same &= same_bits(&alone, &got[t * n_rows..(t + 1) * n_rows]);
            }
            let name = check_name(p.name(), ty);
            match out.iter_mut().find(|(n, _)| *n == name) {
                Some((_, m)) => *m = if d.is_nan() || m.is_nan() { f32::NAN } else { m.max(d) },
                None => out.push((name, d)),
            }
            flag(out, batch_name(p.name()), !same);
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    out.push(("f16conv/simd128", vecdot::wasm_simd128::f16_conversion_errors()));
    // The activation quantizers must be bit-identical to the reference.
    for &(kind, n) in &[(ActKind::Q8_0, 96usize), (ActKind::Q8_1, 96), (ActKind::Q8K, 512)] {
        let x: Vec<f32> = (0..n).map(|i| (rng.next_f32() * 2.0 - 1.0) * (1 + i % 5) as f32).collect();
        let mut want = actq::NatAct::default();
        actq::quantize_scalar(kind, &x, &mut want);
        for (name, f) in actq::quantize_paths() {
            let mut got = actq::NatAct::default();
            f(kind, &x, &mut got);
            let label = match (name, kind) {
                ("scalar", _) => continue,
                ("avx2", ActKind::Q8_0) => "actq/avx2/Q8_0",
                ("avx2", ActKind::Q8_1) => "actq/avx2/Q8_1",
                ("avx2", ActKind::Q8K) => "actq/avx2/Q8_K",
                ("simd128", ActKind::Q8_0) => "actq/simd128/Q8_0",
                ("simd128", ActKind::Q8_1) => "actq/simd128/Q8_1",
                ("simd128", ActKind::Q8K) => "actq/simd128/Q8_K",
                _ => "actq/other",
            };
            out.push((label, if got == want { 0.0 } else { 1.0 }));
        }
    }
}
