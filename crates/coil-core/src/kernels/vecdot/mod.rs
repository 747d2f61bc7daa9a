//! The inner kernels of [`super::matmul`]: per weight type and ISA, a register-tiled kernel that
//! computes an `RM × RN` tile of outputs (RM weight rows × RN tokens) over the whole row length.
//!
//! * Float weights (F32, F16, BF16) multiply f32 activations directly (weights converted to f32 in
//!   registers), f32 accumulation.
//! * Quantized weights follow ggml: the activation row is first quantized to Q8_0 (for Q4_0, Q5_0,
//!   Q8_0 weights), Q8_1 (Q4_1, Q5_1) or Q8_K (Q4_K, Q5_K, Q6_K) — bit-identical to
//!   `quantize_row_q8_*_ref`, so to [`crate::quant::quantize_row`] — and the products of a weight
//!   block with an activation block are summed as integers, exactly; the float scaling and the
//!   sum over blocks follow one canonical order on every ISA (docs/numerics.md; `generic::canon_*`
//!   is the spec). [`generic`] also holds scalar versions that give bit for bit what ggml's
//!   portable C code gives.
//!
//! Every kernel computes each output element with the same sequence of operations whatever the
//! tile shape it sits in, so results do not depend on the number of threads, on how rows are split
//! between them, or on how many tokens are processed together (token t of a 128-token batch equals
//! the same token computed alone).

pub mod generic;

#[cfg(target_arch = "aarch64")]
pub(crate) mod aarch64_neon;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) mod wasm_simd128;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_avx512;

pub mod actq;

/// Pointers and strides of one tile job. All strides in bytes except `out_stride` (in f32s).
#[derive(Clone, Copy)]
pub(crate) struct TileArgs {
    /// First weight row of the tile.
    pub w: *const u8,
    pub row_bytes: usize,
    pub n_cols: usize,
    /// First token's activation record (f32 row for float kernels, packed records otherwise).
    pub act: *const u8,
    pub act_stride: usize,
    /// `out[t * out_stride + r]` for tile-local row r and token t.
    pub out: *mut f32,
    pub out_stride: usize,
    /// Whether to prefetch the weights ahead (they stream from memory: matrix-vector products; on
    /// wasm, which has no prefetch instruction, by loading ahead: `wasm_simd128::touch_ahead`).
    #[cfg_attr(target_arch = "aarch64", allow(dead_code))]
    pub prefetch: bool,
    /// The weights hold no infinity or NaN ([`super::matmul::WeightRef::finite`]).
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub finite: bool,
}

/// A tile function: computes `rows × rn` outputs (any number of rows: the function walks them in
/// tiles of its kernel's RM; 1 ≤ rn ≤ RN).
pub(crate) type TileFn = unsafe fn(rows: usize, rn: usize, a: &TileArgs);

/// Decodes `rows` weight rows (all groups) into `dst`, `bytes_per_group` per group, rows back to
/// back: the form a [`PreDecode::tile`] reads (then `TileArgs::w` = `dst` and
/// `TileArgs::row_bytes` = groups × `bytes_per_group`).
pub(crate) type DecodeFn = unsafe fn(rows: usize, a: &TileArgs, dst: *mut u8);

/// Weights decoded once and reused across token tiles (prompt processing). Gives bit-identical
/// results to the kernel's direct tile.
#[derive(Clone, Copy)]
pub(crate) struct PreDecode {
    /// Weight values per group and decoded bytes per group (per row).
    pub group: usize,
    pub bytes_per_group: usize,
    /// Rows the decoded layout interleaves (1: row by row); panels are made of whole blocks of
    /// them, and a partial last block is padded with zero rows.
    pub row_block: usize,
    pub decode: DecodeFn,
    pub tile: TileFn,
}

/// Which activation quantization a quantized weight type pairs with (ggml's `vec_dot_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActKind {
    Q8_0,
    Q8_1,
    Q8K,
}

/// A quantized-weight kernel: activation record layout plus the tile function.
#[derive(Clone, Copy)]
pub(crate) struct QKernel {
    pub act: ActKind,
    /// Weight elements per group (one activation record per group).
    pub group: usize,
    /// Activation record bytes per group (a multiple of 32; of 64 on AVX-512).
    pub rec_bytes: usize,
    /// Writes the records of one token from its natural quantization.
    pub pack: fn(&actq::NatAct, &mut [u8]),
    pub tile: TileFn,
    pub rm: usize,
    pub rn: usize,
    pub pre: Option<PreDecode>,
}

/// A float-weight kernel (activations are the f32 rows themselves).
#[derive(Clone, Copy)]
pub(crate) struct FKernel {
    pub tile: TileFn,
    pub rm: usize,
    pub rn: usize,
    /// Weights converted once per panel for prompt processing (e.g. F16 to f32 where converting
    /// in registers for every token tile costs more than the products); bit-identical to `tile`.
    pub pre: Option<PreDecode>,
}

/// A kernel for one weight type on one ISA.
#[derive(Clone, Copy)]
pub(crate) enum Kernel {
    Float(FKernel),
    Quant(QKernel),
}

/// Defines `$name: TileFn` from a const-generic tile `$f::<.., RM, RN>`: walks the rows in tiles of
/// up to `$rm` (the last one smaller) and dispatches on the tile shape. (aarch64 has its own,
/// which also takes the `target_feature` of the dotprod kernels.)
#[cfg_attr(target_arch = "aarch64", allow(unused_macros))]
macro_rules! tile_dispatch {
    ($name:ident, $f:ident :: <$($g:ty),*>, $rm:literal, $rn:literal) => {
        unsafe fn $name(rows: usize, rn: usize, a: &$crate::kernels::vecdot::TileArgs) {
            macro_rules! go {
                ($m:literal, $a:expr) => {
                    match rn {
                        1 => $f::<$($g,)* $m, 1>($a),
                        2 if $rn >= 2 => $f::<$($g,)* $m, 2>($a),
                        3 if $rn >= 3 => $f::<$($g,)* $m, 3>($a),
                        4 if $rn >= 4 => $f::<$($g,)* $m, 4>($a),
                        5 if $rn >= 5 => $f::<$($g,)* $m, 5>($a),
                        6 if $rn >= 6 => $f::<$($g,)* $m, 6>($a),
                        7 if $rn >= 7 => $f::<$($g,)* $m, 7>($a),
                        8 if $rn >= 8 => $f::<$($g,)* $m, 8>($a),
                        _ => unreachable!("tile width {rn}"),
                    }
                };
            }
            let mut r = 0;
            while r < rows {
                let m = (rows - r).min($rm);
                let sub = $crate::kernels::vecdot::TileArgs { w: a.w.add(r * a.row_bytes), out: a.out.add(r), ..*a };
                match m {
                    1 => go!(1, &sub),
                    2 if $rm >= 2 => go!(2, &sub),
                    3 if $rm >= 3 => go!(3, &sub),
                    4 if $rm >= 4 => go!(4, &sub),
                    _ => unreachable!("tile height {m}"),
                }
                r += m;
            }
        }
    };
}
#[cfg_attr(target_arch = "aarch64", allow(unused_imports))]
pub(crate) use tile_dispatch;

/// 64-byte aligned scratch storage.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Line(pub [u8; 64]);

/// A growable 64-byte aligned byte buffer (grow-only, reused between calls).
#[derive(Default)]
pub(crate) struct AlignedBuf(Vec<Line>);

impl AlignedBuf {
    pub fn get(&mut self, n_bytes: usize) -> &mut [u8] {
        let lines = n_bytes.div_ceil(64);
        if self.0.len() < lines {
            self.0.resize(lines, Line([0; 64]));
        }
        // SAFETY: `Line` is plain bytes; the vector holds at least `lines * 64 >= n_bytes` of them.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut u8, n_bytes) }
    }
}
