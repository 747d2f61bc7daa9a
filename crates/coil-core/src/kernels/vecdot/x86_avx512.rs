#![allow(clippy::needless_range_loop)] // register-array loops index by constant positions on purpose
#![cfg_attr(not(test), allow(dead_code))] // the k-quant decoders wait for a canonical-order tile (see `kernel`)
//! AVX-512 kernels (F + BW + VL + VNNI + VBMI + BITALG: Ice Lake, Zen 4 and later).
//!
//! Quantized types: the weights of a group (4 legacy blocks = 128 values, or one 256-value k-quant
//! super-block) are decoded into 2 or 4 vectors of 64 unsigned bytes arranged so that every 32-bit
//! lane holds values of a single scale block in all of the group's vectors. The activation record
//! of the group holds the matching quantized activations in the same arrangement, so
//! `vpdpbusd` accumulates each lane's integer dot over the whole group before a single
//! int → float conversion and one multiply by the lane's weight scale. Signed weights are offset
//! to unsigned (Q4_0 +8, Q5_0 +16, Q8_0 +128, Q6_K +32) and the offset's contribution is removed by
//! starting the integer accumulator at `-offset · Σ activations` of the lane (precomputed in the
//! record). Mins (Q4_1/Q5_1 `m·s`, k-quant `dmin·m·bsum`) are one more FMA with record values.
//!
//! Float types: tinyBLAS-style register tile, one accumulator vector per output, weights converted
//! to f32 in registers (F16 with `vcvtph2ps`, BF16 by a shift).

use super::actq::NatAct;
use super::{tile_dispatch, ActKind, FKernel, Kernel, PreDecode, QKernel, TileArgs};
use crate::gguf::GgmlType;
use std::arch::x86_64::*;

pub(crate) fn available() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vl")
            && std::is_x86_feature_detected!("avx512vnni")
            && std::is_x86_feature_detected!("avx512vbmi")
            && std::is_x86_feature_detected!("avx512bitalg")
            && super::x86_avx2::available()
    })
}

pub(crate) fn kernel(ty: GgmlType) -> Option<Kernel> {
    if !available() {
        return None;
    }
    macro_rules! q {
        ($d:ty, $act:expr, $tile:ident, $pre:ident) => {
            Kernel::Quant(QKernel {
                act: $act,
                group: <$d>::GE,
                rec_bytes: <$d>::RB,
                pack: pack_fast::<$d>,
                tile: $tile,
                rm: QRM,
                rn: QRN,
                pre: Some(PreDecode {
                    group: <$d>::GE,
                    bytes_per_group: <$d>::DB,
                    row_block: 1,
                    decode: decode_rows::<$d>,
                    tile: $pre,
                }),
            })
        };
    }
    Some(match ty {
        GgmlType::F32 => Kernel::Float(FKernel { tile: tile_f32, rm: FRM, rn: FRN, pre: None }),
        GgmlType::F16 => Kernel::Float(FKernel { tile: tile_f16, rm: FRM, rn: FRN, pre: None }),
        GgmlType::BF16 => Kernel::Float(FKernel { tile: tile_bf16, rm: FRM, rn: FRN, pre: None }),
        GgmlType::Q8_0 => q!(Q8_0, ActKind::Q8_0, tile_q8_0, pre_q8_0),
        GgmlType::Q4_0 => q!(Q4_0, ActKind::Q8_0, tile_q4_0, pre_q4_0),
        GgmlType::Q4_1 => q!(Q4_1, ActKind::Q8_1, tile_q4_1, pre_q4_1),
        GgmlType::Q5_0 => q!(Q5_0, ActKind::Q8_0, tile_q5_0, pre_q5_0),
        GgmlType::Q5_1 => q!(Q5_1, ActKind::Q8_1, tile_q5_1, pre_q5_1),
        // k-quants: the AVX2 tile in the canonical order with 512-bit integer products (`kquant`).
        // (The decoders below scale each 16-value part by its sub-block scale in floats, not in
        // the canonical order: unused until a tile of that shape computes the canonical sums.)
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => return kquant::kernel(ty),
        _ => return None,
    })
}

const FRM: usize = 4;
const FRN: usize = 6;
const QRM: usize = 2;
const QRN: usize = 8;

// ---------------------------------------------------------------------------------------------
// Helpers

/// Sum of the 16 lanes in a fixed order (halves, then quarters, ...).
#[inline(always)]
unsafe fn hsum(v: __m512) -> f32 {
    let lo = _mm512_castps512_ps256(v);
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    let s8 = _mm256_add_ps(lo, hi);
    let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
    _mm_cvtss_f32(s1)
}

/// The 16 horizontal sums of 16 vectors at once, with the same addition tree as [`hsum`] (so
/// bit-identical to it): lane k of the result is the sum of `v[k]`.
#[inline(always)]
unsafe fn reduce16(v: &[__m512; 16]) -> __m512 {
    // lanes i + 8
    let mut x = [_mm512_setzero_ps(); 8];
    for k in 0..8 {
        let (a, b) = (v[2 * k], v[2 * k + 1]);
        x[k] = _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(a, b), _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b));
    }
    // lanes i + 4
    let mut y = [_mm512_setzero_ps(); 4];
    for k in 0..4 {
        let (a, b) = (x[2 * k], x[2 * k + 1]);
        y[k] = _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(a, b), _mm512_shuffle_f32x4::<0b11_01_11_01>(a, b));
    }
    // lanes i + 2
    let mut z = [_mm512_setzero_ps(); 2];
    for k in 0..2 {
        let (a, b) = (y[2 * k], y[2 * k + 1]);
        z[k] = _mm512_add_ps(_mm512_shuffle_ps::<0b01_00_01_00>(a, b), _mm512_shuffle_ps::<0b11_10_11_10>(a, b));
    }
    // lanes i + 1
    let r =
        _mm512_add_ps(_mm512_shuffle_ps::<0b10_00_10_00>(z[0], z[1]), _mm512_shuffle_ps::<0b11_01_11_01>(z[0], z[1]));
    // r lane 4q + m holds v[4m + q]
    _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), r)
}

#[inline(always)]
unsafe fn store_tile<const RM: usize, const RN: usize>(a: &TileArgs, acc: &[[__m512; RN]; RM]) {
    if RM * RN <= 4 {
        for t in 0..RN {
            for r in 0..RM {
                *a.out.add(t * a.out_stride + r) = hsum(acc[r][t]);
            }
        }
        return;
    }
    // Copy out with constant indices (keeps `acc` in registers in the caller's loops).
    let mut flat = [_mm512_setzero_ps(); 32];
    for t in 0..RN {
        for r in 0..RM {
            flat[t * RM + r] = acc[r][t];
        }
    }
    let total = RM * RN;
    let mut k0 = 0;
    while k0 < total {
        let mut v = [_mm512_setzero_ps(); 16];
        v.copy_from_slice(&flat[k0..k0 + 16]);
        let sums: [f32; 16] = std::mem::transmute(reduce16(&v));
        for (i, &s) in sums.iter().enumerate().take((total - k0).min(16)) {
            let k = k0 + i;
            *a.out.add((k / RM) * a.out_stride + k % RM) = s;
        }
        k0 += 16;
    }
}

/// 64 bytes at `p + off`; with `P` (a partial group) only the bytes below `valid` are read.
#[inline(always)]
unsafe fn ld<const P: bool>(p: *const u8, off: usize, valid: usize) -> __m512i {
    if !P || off + 64 <= valid {
        _mm512_loadu_si512(p.add(off) as *const _)
    } else if off >= valid {
        _mm512_setzero_si512()
    } else {
        _mm512_maskz_loadu_epi8((1u64 << (valid - off)) - 1, p.add(off) as *const i8)
    }
}

/// An f16 at `p` to f32 with F16C (exact, like `f16_to_f32`).
#[inline(always)]
unsafe fn rd_f16(p: *const u8) -> f32 {
    let h = u16::from_le(std::ptr::read_unaligned(p as *const u16));
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

// Index tables built in const blocks.
macro_rules! table8 {
    (|$i:ident| $e:expr) => {{
        let mut a = [0u8; 64];
        let mut $i = 0usize;
        while $i < 64 {
            a[$i] = ($e) as u8;
            $i += 1;
        }
        a
    }};
}
macro_rules! table32 {
    (|$i:ident| $e:expr) => {{
        let mut a = [0u32; 16];
        let mut $i = 0usize;
        while $i < 16 {
            a[$i] = ($e) as u32;
            $i += 1;
        }
        a
    }};
}

#[inline(always)]
unsafe fn v8(t: &[u8; 64]) -> __m512i {
    _mm512_loadu_si512(t.as_ptr() as *const _)
}
#[inline(always)]
unsafe fn v16(t: &[u16; 32]) -> __m512i {
    _mm512_loadu_si512(t.as_ptr() as *const _)
}
#[inline(always)]
unsafe fn v32(t: &[u32; 16]) -> __m512i {
    _mm512_loadu_si512(t.as_ptr() as *const _)
}

// ---------------------------------------------------------------------------------------------
// Quantized decoders

/// One weight type's group decoder.
pub(crate) trait Dec {
    /// Vectors (of 64 bytes) per group.
    const NV: usize;
    /// Values per group.
    const GE: usize;
    /// Weight bytes per group.
    const GB: usize;
    /// Values and bytes per ggml block.
    const BLOCK: usize;
    const BB: usize;
    /// Whether the record carries an integer accumulator start (offset correction).
    const CORR: bool;
    /// Whether the record carries a second (min) term.
    const EXTRA: bool;
    /// Activation record bytes.
    const RB: usize = Self::NV * 64 + 64 + if Self::CORR { 64 } else { 0 } + if Self::EXTRA { 64 } else { 0 };
    /// Pre-decoded weight bytes per group: the vectors, then the scale and min vectors.
    const DB: usize = Self::NV * 64 + 128;
    /// Decodes one group at `p` (`valid` bytes of it exist when `P`).
    unsafe fn decode<const P: bool>(p: *const u8, valid: usize, w: &mut [__m512i; 4], ws: &mut __m512, we: &mut __m512);
    /// The natural-order index of the value at byte `b` of the group's vectors.
    #[cfg_attr(not(test), allow(dead_code))]
    fn elem(b: usize) -> usize;
    /// Weight offset subtracted through the correction (0 = none).
    const OFFSET: i32;
}

/// Legacy types, 8 blocks per group: lane L = 2k + h belongs to block k; byte `8k + m` (m < 8) of
/// vector v holds value `8v + m` of block k. Every lane sees one block in all four vectors.
const fn legacy_elem(b: usize) -> usize {
    let v = b / 64;
    let pos = b % 64;
    32 * (pos / 8) + 8 * v + pos % 8
}

/// Index (into two 128-byte windows: blocks 0..3 at `a_base`, blocks 4..7 at `b_base`) of the byte
/// `bb * k + off + m` for byte position `8k + m`.
const fn leg_idx(bb: usize, off: usize, a_base: usize, b_base: usize) -> [u8; 64] {
    let mut t = [0u8; 64];
    let mut pos = 0;
    while pos < 64 {
        let (k, m) = (pos / 8, pos % 8);
        let src = bb * k + off + m;
        t[pos] = if k < 4 { (src - a_base) as u8 } else { (src - b_base) as u8 };
        pos += 1;
    }
    t
}

/// Word index of the f16 at `bb * (j / 2) + off` for lane j (0..16), same windows.
const fn leg_widx(bb: usize, off: usize, a_base: usize, b_base: usize) -> [u16; 32] {
    let mut t = [0u16; 32];
    let mut j = 0;
    while j < 16 {
        let k = j / 2;
        let src = bb * k + off;
        t[j] = if k < 4 { ((src - a_base) / 2) as u16 } else { ((src - b_base) / 2) as u16 };
        j += 1;
    }
    t
}

/// `vpshufbitqmb` selectors: mask bit `8k + m` of vector v is bit `8v + m` of block k's `qh`
/// (held in qword k).
static QH_SEL: [[u8; 64]; 4] = {
    let mut t = [[0u8; 64]; 4];
    let mut v = 0;
    while v < 4 {
        let mut pos = 0;
        while pos < 64 {
            t[v][pos] = (8 * v + pos % 8) as u8;
            pos += 1;
        }
        v += 1;
    }
    t
};

/// Two-window byte gather: positions 0..31 from `(a0, a1)`, 32..63 from `(b0, b1)`.
#[inline(always)]
unsafe fn gather2(a0: __m512i, a1: __m512i, b0: __m512i, b1: __m512i, idx: &[u8; 64]) -> __m512i {
    let i = v8(idx);
    let lo = _mm512_permutex2var_epi8(a0, i, a1);
    let hi = _mm512_permutex2var_epi8(b0, i, b1);
    _mm512_mask_blend_epi64(0xF0, lo, hi)
}

#[inline(always)]
unsafe fn f16x16(words: __m512i) -> __m512 {
    _mm512_cvtph_ps(_mm512_castsi512_si256(words))
}

/// Two-window gather of 16 f16 values (lanes 0..7 from `a`, 8..15 from `b`) converted to f32.
#[inline(always)]
unsafe fn gather2_f16(a0: __m512i, a1: __m512i, b0: __m512i, b1: __m512i, idx: &[u16; 32]) -> __m512 {
    let i = v16(idx);
    let lo = _mm512_permutex2var_epi16(a0, i, a1);
    let hi = _mm512_permutex2var_epi16(b0, i, b1);
    f16x16(_mm512_mask_blend_epi16(0xFF00, lo, hi))
}

/// The windows of a group of 8 blocks of `16 <= bb <= 32` bytes: blocks 0..3 in the 128 bytes at
/// 0, blocks 4..7 in the last 128 bytes of the group (never reading past the group).
#[inline(always)]
unsafe fn leg_windows<const P: bool>(p: *const u8, valid: usize, bb: usize) -> [__m512i; 4] {
    let b = 8 * bb - 128;
    [ld::<P>(p, 0, valid), ld::<P>(p, 64, valid), ld::<P>(p, b, valid), ld::<P>(p, b + 64, valid)]
}

/// Nibble types: the low/high nibbles of bytes 0..7 and 8..15 of each block.
#[inline(always)]
unsafe fn leg_nibbles(w: &[__m512i; 4], idx0: &[u8; 64], idx1: &[u8; 64], out: &mut [__m512i; 4]) {
    let r0 = gather2(w[0], w[1], w[2], w[3], idx0);
    let r1 = gather2(w[0], w[1], w[2], w[3], idx1);
    let m = _mm512_set1_epi8(0x0F);
    out[0] = _mm512_and_si512(r0, m);
    out[1] = _mm512_and_si512(r1, m);
    out[2] = _mm512_and_si512(_mm512_srli_epi16::<4>(r0), m);
    out[3] = _mm512_and_si512(_mm512_srli_epi16::<4>(r1), m);
}

/// Adds 16 where the 5th bits (from each block's `qh`, gathered into qword k by `hidx`) are set.
#[inline(always)]
unsafe fn leg_fifth_bits(w: &[__m512i; 4], hidx: &[u8; 64], out: &mut [__m512i; 4]) {
    let q = gather2(w[0], w[1], w[2], w[3], hidx);
    let c = _mm512_set1_epi8(0x10);
    for v in 0..4 {
        let m = _mm512_bitshuffle_epi64_mask(q, v8(&QH_SEL[v]));
        out[v] = _mm512_mask_add_epi8(out[v], m, out[v], c);
    }
}

/// `qh` index: qword k (positions 8k..8k+7) gets the 4 bytes at `bb * k + off` (twice).
const fn leg_hidx(bb: usize, off: usize) -> [u8; 64] {
    let mut t = [0u8; 64];
    let mut pos = 0;
    while pos < 64 {
        let k = pos / 8;
        let src = bb * k + off + pos % 4;
        t[pos] = if k < 4 { src as u8 } else { (src - (8 * bb - 128)) as u8 };
        pos += 1;
    }
    t
}

struct Q4_0;
struct Q4_1;
struct Q5_0;
struct Q5_1;
struct Q8_0;
struct Q4K;
struct Q5K;
struct Q6K;

static Q4_0_I0: [u8; 64] = leg_idx(18, 2, 0, 16);
static Q4_0_I1: [u8; 64] = leg_idx(18, 10, 0, 16);
static Q4_0_D: [u16; 32] = leg_widx(18, 0, 0, 16);
static Q4_1_I0: [u8; 64] = leg_idx(20, 4, 0, 32);
static Q4_1_I1: [u8; 64] = leg_idx(20, 12, 0, 32);
static Q4_1_D: [u16; 32] = leg_widx(20, 0, 0, 32);
static Q4_1_M: [u16; 32] = leg_widx(20, 2, 0, 32);
static Q5_0_I0: [u8; 64] = leg_idx(22, 6, 0, 48);
static Q5_0_I1: [u8; 64] = leg_idx(22, 14, 0, 48);
static Q5_0_D: [u16; 32] = leg_widx(22, 0, 0, 48);
static Q5_0_H: [u8; 64] = leg_hidx(22, 2);
static Q5_1_I0: [u8; 64] = leg_idx(24, 8, 0, 64);
static Q5_1_I1: [u8; 64] = leg_idx(24, 16, 0, 64);
static Q5_1_D: [u16; 32] = leg_widx(24, 0, 0, 64);
static Q5_1_M: [u16; 32] = leg_widx(24, 2, 0, 64);
static Q5_1_H: [u8; 64] = leg_hidx(24, 4);
/// Q8_0: vectors 0..2 from windows at 0 and 136, vector 3 from windows at 8 and 144.
static Q8_0_I: [[u8; 64]; 4] =
    [leg_idx(34, 2, 0, 136), leg_idx(34, 10, 0, 136), leg_idx(34, 18, 0, 136), leg_idx(34, 26, 8, 144)];
static Q8_0_D: [u16; 32] = leg_widx(34, 0, 0, 136);

macro_rules! legacy_consts {
    ($bb:expr, $corr:expr, $extra:expr, $off:expr) => {
        const NV: usize = 4;
        const GE: usize = 256;
        const GB: usize = 8 * $bb;
        const BLOCK: usize = 32;
        const BB: usize = $bb;
        const CORR: bool = $corr;
        const EXTRA: bool = $extra;
        const OFFSET: i32 = $off;
        fn elem(b: usize) -> usize {
            legacy_elem(b)
        }
    };
}

impl Dec for Q4_0 {
    legacy_consts!(18, true, false, 8);
    #[inline(always)]
    unsafe fn decode<const P: bool>(
        p: *const u8,
        valid: usize,
        w: &mut [__m512i; 4],
        ws: &mut __m512,
        _we: &mut __m512,
    ) {
        let win = leg_windows::<P>(p, valid, 18);
        leg_nibbles(&win, &Q4_0_I0, &Q4_0_I1, w);
        *ws = gather2_f16(win[0], win[1], win[2], win[3], &Q4_0_D);
    }
}

impl Dec for Q4_1 {
    legacy_consts!(20, false, true, 0);
    #[inline(always)]
    unsafe fn decode<const P: bool>(
        p: *const u8,
        valid: usize,
        w: &mut [__m512i; 4],
        ws: &mut __m512,
        we: &mut __m512,
    ) {
        let win = leg_windows::<P>(p, valid, 20);
        leg_nibbles(&win, &Q4_1_I0, &Q4_1_I1, w);
        *ws = gather2_f16(win[0], win[1], win[2], win[3], &Q4_1_D);
        *we = gather2_f16(win[0], win[1], win[2], win[3], &Q4_1_M);
    }
}

impl Dec for Q5_0 {
    legacy_consts!(22, true, false, 16);
    #[inline(always)]
    unsafe fn decode<const P: bool>(
        p: *const u8,
        valid: usize,
        w: &mut [__m512i; 4],
        ws: &mut __m512,
        _we: &mut __m512,
    ) {
        let win = leg_windows::<P>(p, valid, 22);
        leg_nibbles(&win, &Q5_0_I0, &Q5_0_I1, w);
        leg_fifth_bits(&win, &Q5_0_H, w);
        *ws = gather2_f16(win[0], win[1], win[2], win[3], &Q5_0_D);
    }
}

impl Dec for Q5_1 {
    legacy_consts!(24, false, true, 0);
    #[inline(always)]
    unsafe fn decode<const P: bool>(
        p: *const u8,
        valid: usize,
        w: &mut [__m512i; 4],
        ws: &mut __m512,
        we: &mut __m512,
    ) {
        let win = leg_windows::<P>(p, valid, 24);
        leg_nibbles(&win, &Q5_1_I0, &Q5_1_I1, w);
        leg_fifth_bits(&win, &Q5_1_H, w);
        *ws = gather2_f16(win[0], win[1], win[2], win[3], &Q5_1_D);
        *we = gather2_f16(win[0], win[1], win[2], win[3], &Q5_1_M);
    }
}

impl Dec for Q8_0 {
    legacy_consts!(34, true, false, 128);
    #[inline(always)]
    unsafe fn decode<const P: bool>(
        p: *const u8,
        valid: usize,
        w: &mut [__m512i; 4],
        ws: &mut __m512,
        _we: &mut __m512,
    ) {
        let a = [ld::<P>(p, 0, valid), ld::<P>(p, 64, valid), ld::<P>(p, 136, valid), ld::<P>(p, 200, valid)];
        let b = [ld::<P>(p, 8, valid), ld::<P>(p, 72, valid), ld::<P>(p, 144, valid), ld::<P>(p, 208, valid)];
        let x80 = _mm512_set1_epi8(-128);
        for v in 0..3 {
            w[v] = _mm512_xor_si512(gather2(a[0], a[1], a[2], a[3], &Q8_0_I[v]), x80);
        }
        w[3] = _mm512_xor_si512(gather2(b[0], b[1], b[2], b[3], &Q8_0_I[3]), x80);
        *ws = gather2_f16(a[0], a[1], a[2], a[3], &Q8_0_D);
    }
}

/// Q4_K / Q5_K: lane L = 2s + h holds values 16h + 4v .. 16h + 4v + 3 of sub-block s in vector v.
const fn k4_elem(b: usize) -> usize {
    let v = b / 64;
    let l = (b % 64) / 4;
    let i = b % 4;
    32 * (l / 2) + 16 * (l % 2) + 4 * v + i
}

/// `vpermt2d` index of vector v: lane L = 4c + 2n + h reads qs dword 8c + 4h + v.
const fn k4_qidx(v: usize) -> [u32; 16] {
    let mut a = [0u32; 16];
    let mut l = 0;
    while l < 16 {
        a[l] = (8 * (l / 4) + 4 * (l % 2) + v) as u32;
        l += 1;
    }
    a
}
static K4_QIDX: [[u32; 16]; 4] = [k4_qidx(0), k4_qidx(1), k4_qidx(2), k4_qidx(3)];
static K4_SHIFT: [u32; 16] = table32!(|l| 4 * ((l / 2) % 2));
/// Q5_K high bits: lane L = 2s + h reads qh dword 4h + v and needs bit s of each byte at bit 4.
static K5_HIDX: [[u32; 16]; 4] = {
    let mut a = [[0u32; 16]; 4];
    let mut v = 0;
    while v < 4 {
        let mut l = 0;
        while l < 16 {
            a[v][l] = (4 * (l % 2) + v) as u32;
            l += 1;
        }
        v += 1;
    }
    a
};
static K5_ROT: [u32; 16] = table32!(|l| (32 + 4 - l / 2) % 32);

/// Q4_K/Q5_K scales and mins from the first 16 bytes of the block (d, dmin, 12 packed bytes):
/// lanes L of `ws` = d·sc[L/2], of `we` = −dmin·m[L/2] (ggml's 6-bit unpacking, in vectors).
#[inline(always)]
unsafe fn k4_scales(p: *const u8, ws: &mut __m512, we: &mut __m512) {
    let raw = _mm_loadu_si128(p as *const _);
    let perm = _mm512_permutexvar_epi8(v8(&K4_SM_IDX), _mm512_castsi128_si512(raw));
    let lo = _mm512_srlv_epi32(perm, v32(&K4_SM_SHIFT));
    let hi = _mm512_and_si512(_mm512_srli_epi32::<10>(perm), v32(&K4_SM_M2));
    // lanes 0..7: sc[s], lanes 8..15: m[s]
    let v = _mm512_ternarylogic_epi32::<0xEA>(lo, v32(&K4_SM_M1), hi);
    let sc = _mm512_cvtepi32_ps(_mm512_permutexvar_epi32(v32(&DUP_LO), v));
    let mn = _mm512_cvtepi32_ps(_mm512_permutexvar_epi32(v32(&DUP_HI), v));
    let dd = _mm_cvtph_ps(raw);
    *ws = _mm512_mul_ps(sc, _mm512_broadcastss_ps(dd));
    *we = _mm512_mul_ps(mn, _mm512_broadcastss_ps(_mm_xor_ps(_mm_movehdup_ps(dd), _mm_set1_ps(-0.0))));
}
/// Byte 0 and 1 of lane s (scale s) and 8 + s (min s), as indexes into the 16 loaded bytes (the
/// 12 packed bytes start at 4): sc: s<4 q[s] | s>=4 q[s+4], q[s-4]; m: q[s+4] | q[s+4], q[s].
static K4_SM_IDX: [u8; 64] = table8!(|i| {
    let (l, byte) = (i / 4, i % 4);
    let s = l % 8;
    match (l < 8, byte) {
        (true, 0) => {
            if s < 4 {
                4 + s
            } else {
                8 + s
            }
        }
        (true, 1) => {
            if s < 4 {
                0
            } else {
                s
            }
        }
        (false, 0) => 8 + s,
        (false, 1) => {
            if s < 4 {
                0
            } else {
                4 + s
            }
        }
        _ => 0,
    }
});
static K4_SM_SHIFT: [u32; 16] = table32!(|l| if l >= 8 && l % 8 >= 4 { 4 } else { 0 });
static K4_SM_M1: [u32; 16] = table32!(|l| if l % 8 < 4 { 63 } else { 15 });
static K4_SM_M2: [u32; 16] = table32!(|l| if l % 8 < 4 { 0 } else { 0x30 });
static DUP_LO: [u32; 16] = table32!(|l| l / 2);
static DUP_HI: [u32; 16] = table32!(|l| 8 + l / 2);

#[inline(always)]
unsafe fn k4_lo(q0: __m512i, q1: __m512i, v: usize) -> __m512i {
    let raw = _mm512_permutex2var_epi32(q0, v32(&K4_QIDX[v]), q1);
    _mm512_srlv_epi32(raw, v32(&K4_SHIFT))
}

impl Dec for Q4K {
    const NV: usize = 4;
    const GE: usize = 256;
    const GB: usize = 144;
    const BLOCK: usize = 256;
    const BB: usize = 144;
    const CORR: bool = false;
    const EXTRA: bool = true;
    const OFFSET: i32 = 0;
    #[inline(always)]
    unsafe fn decode<const P: bool>(
        p: *const u8,
        _valid: usize,
        w: &mut [__m512i; 4],
        ws: &mut __m512,
        we: &mut __m512,
    ) {
        let q0 = _mm512_loadu_si512(p.add(16) as *const _);
        let q1 = _mm512_loadu_si512(p.add(80) as *const _);
        let m = _mm512_set1_epi8(0x0F);
        for v in 0..4 {
            w[v] = _mm512_and_si512(k4_lo(q0, q1, v), m);
        }
        k4_scales(p, ws, we);
    }
    fn elem(b: usize) -> usize {
        k4_elem(b)
    }
}

impl Dec for Q5K {
    const NV: usize = 4;
    const GE: usize = 256;
    const GB: usize = 176;
    const BLOCK: usize = 256;
    const BB: usize = 176;
    const CORR: bool = false;
    const EXTRA: bool = true;
    const OFFSET: i32 = 0;
    #[inline(always)]
    unsafe fn decode<const P: bool>(
        p: *const u8,
        _valid: usize,
        w: &mut [__m512i; 4],
        ws: &mut __m512,
        we: &mut __m512,
    ) {
        let q0 = _mm512_loadu_si512(p.add(48) as *const _);
        let q1 = _mm512_loadu_si512(p.add(112) as *const _);
        let qh = _mm512_zextsi256_si512(_mm256_loadu_si256(p.add(16) as *const _));
        let m = _mm512_set1_epi8(0x0F);
        let b4 = _mm512_set1_epi8(0x10);
        for v in 0..4 {
            let lo = k4_lo(q0, q1, v);
            let hb =
                _mm512_and_si512(_mm512_rolv_epi32(_mm512_permutexvar_epi32(v32(&K5_HIDX[v]), qh), v32(&K5_ROT)), b4);
            // m ? lo : hb
            w[v] = _mm512_ternarylogic_epi32::<0xCA>(m, lo, hb);
        }
        k4_scales(p, ws, we);
    }
    fn elem(b: usize) -> usize {
        k4_elem(b)
    }
}

/// Q6_K: lane L = 8h + 2g + b is 16-value sub-block L; vector v holds its values 4v..4v+3.
const fn k6_elem(b: usize) -> usize {
    let v = b / 64;
    let l = (b % 64) / 4;
    let i = b % 4;
    let (h, g, bb) = (l / 8, (l % 8) / 2, l % 2);
    128 * h + 32 * g + 16 * bb + 4 * v + i
}
static K6_QIDX: [[u32; 16]; 4] = {
    let mut a = [[0u32; 16]; 4];
    let mut v = 0;
    while v < 4 {
        let mut l = 0;
        while l < 16 {
            let (h, g, b) = (l / 8, (l % 8) / 2, l % 2);
            a[v][l] = (16 * h + 8 * (g & 1) + 4 * b + v) as u32;
            l += 1;
        }
        v += 1;
    }
    a
};
static K6_SHIFT: [u32; 16] = table32!(|l| 4 * (((l % 8) / 2) >> 1));
static K6_HIDX: [[u32; 16]; 4] = {
    let mut a = [[0u32; 16]; 4];
    let mut v = 0;
    while v < 4 {
        let mut l = 0;
        while l < 16 {
            let (h, b) = (l / 8, l % 2);
            a[v][l] = (8 * h + 4 * b + v) as u32;
            l += 1;
        }
        v += 1;
    }
    a
};
static K6_ROT: [u32; 16] = table32!(|l| (32 + 4 - 2 * ((l % 8) / 2)) % 32);

impl Dec for Q6K {
    const NV: usize = 4;
    const GE: usize = 256;
    const GB: usize = 210;
    const BLOCK: usize = 256;
    const BB: usize = 210;
    const CORR: bool = true;
    const EXTRA: bool = false;
    const OFFSET: i32 = 32;
    #[inline(always)]
    unsafe fn decode<const P: bool>(
        p: *const u8,
        _valid: usize,
        w: &mut [__m512i; 4],
        ws: &mut __m512,
        _we: &mut __m512,
    ) {
        let q0 = _mm512_loadu_si512(p as *const _);
        let q1 = _mm512_loadu_si512(p.add(64) as *const _);
        let qh = _mm512_loadu_si512(p.add(128) as *const _);
        let m = _mm512_set1_epi8(0x0F);
        let b45 = _mm512_set1_epi8(0x30);
        for v in 0..4 {
            let lo = _mm512_srlv_epi32(_mm512_permutex2var_epi32(q0, v32(&K6_QIDX[v]), q1), v32(&K6_SHIFT));
            let hb =
                _mm512_and_si512(_mm512_rolv_epi32(_mm512_permutexvar_epi32(v32(&K6_HIDX[v]), qh), v32(&K6_ROT)), b45);
            w[v] = _mm512_ternarylogic_epi32::<0xCA>(m, lo, hb);
        }
        let sc = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.add(192) as *const _)));
        *ws = _mm512_mul_ps(sc, _mm512_set1_ps(rd_f16(p.add(208))));
    }
    fn elem(b: usize) -> usize {
        k6_elem(b)
    }
}

// ---------------------------------------------------------------------------------------------
// Activation records

/// [`pack`] with permutes (the same bytes; a test compares the two).
fn pack_fast<D: Dec>(a: &NatAct, dst: &mut [u8]) {
    debug_assert!(dst.len() >= a.n.div_ceil(D::GE) * D::RB && (dst.as_ptr() as usize).is_multiple_of(64));
    // SAFETY: `available()` was checked before any kernel of this module was handed out; the
    // loads are masked to the row, the stores stay inside `dst` (checked above in debug builds,
    // sized by the caller).
    unsafe { pack_simd::<D>(a, dst.as_mut_ptr()) }
}

/// Natural-order index tables of the records (see `Dec::elem`), as `vpermt2b` / `vpermt2d` indexes.
/// Legacy: position `8k + m` of vector v <- natural value `32k + 8v + m` (blocks 0..3 from the
/// first 128 bytes, 4..7 from the second: indexes mod 128).
static LEG_PACK: [[u8; 64]; 4] = {
    let mut t = [[0u8; 64]; 4];
    let mut v = 0;
    while v < 4 {
        let mut b = 0;
        while b < 64 {
            t[v][b] = (legacy_elem(64 * v + b) % 128) as u8;
            b += 1;
        }
        v += 1;
    }
    t
};
/// K types: lane L of vector v is natural dword `K?_PACK[v][L]` (mod 32: lanes 0..7 come from the
/// first 128 bytes, lanes 8..15 from the second).
static K4_PACK: [[u32; 16]; 4] = {
    let mut t = [[0u32; 16]; 4];
    let mut v = 0;
    while v < 4 {
        let mut l = 0;
        while l < 16 {
            t[v][l] = ((k4_elem(64 * v + 4 * l) / 4) % 32) as u32;
            l += 1;
        }
        v += 1;
    }
    t
};
static K6_PACK: [[u32; 16]; 4] = {
    let mut t = [[0u32; 16]; 4];
    let mut v = 0;
    while v < 4 {
        let mut l = 0;
        while l < 16 {
            t[v][l] = ((k6_elem(64 * v + 4 * l) / 4) % 32) as u32;
            l += 1;
        }
        v += 1;
    }
    t
};
static LANE_DIV2: [u32; 16] = table32!(|l| l / 2);

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx512bitalg,avx2,fma,f16c")]
unsafe fn pack_simd<D: Dec>(a: &NatAct, dst: *mut u8) {
    let n = a.n;
    let q = a.q.as_ptr() as *const u8;
    let ones = _mm512_set1_epi8(1);
    let load_q = |off: usize| -> __m512i {
        if off + 64 <= n {
            _mm512_loadu_si512(q.add(off) as *const _)
        } else if off >= n {
            _mm512_setzero_si512()
        } else {
            _mm512_maskz_loadu_epi8((1u64 << (n - off)) - 1, q.add(off) as *const i8)
        }
    };
    for g in 0..n.div_ceil(D::GE) {
        let rec = dst.add(g * D::RB);
        let base = g * D::GE;
        let mut off = 64 * D::NV;
        if D::BLOCK == 32 {
            let nat = [load_q(base), load_q(base + 64), load_q(base + 128), load_q(base + 192)];
            let mut sums = _mm512_setzero_si512();
            for v in 0..4 {
                let x = gather2(nat[0], nat[1], nat[2], nat[3], &LEG_PACK[v]);
                _mm512_store_si512(rec.add(64 * v) as *mut _, x);
                sums = _mm512_dpbusd_epi32(sums, ones, x);
            }
            if D::CORR {
                _mm512_store_si512(rec.add(off) as *mut _, _mm512_mullo_epi32(sums, _mm512_set1_epi32(-D::OFFSET)));
                off += 64;
            }
            // per-block values of this group's 8 blocks, lane L <- block L/2
            let nb = (a.d.len() - 8 * g).min(8);
            let m = ((1u32 << nb) - 1) as __mmask16;
            let d8 = _mm512_maskz_loadu_ps(m, a.d.as_ptr().add(8 * g));
            _mm512_store_ps(rec.add(off) as *mut f32, _mm512_permutexvar_ps(v32(&LANE_DIV2), d8));
            if D::EXTRA {
                let s8 = _mm512_maskz_loadu_ps(m, a.s.as_ptr().add(8 * g));
                // s_x in the block's even lane only (the odd lanes must add nothing).
                let xe = _mm512_maskz_permutexvar_ps(0x5555, v32(&LANE_DIV2), s8);
                _mm512_store_ps(rec.add(off + 64) as *mut f32, xe);
            }
        } else {
            let nat = [load_q(base), load_q(base + 64), load_q(base + 128), load_q(base + 192)];
            let table = if D::CORR { &K6_PACK } else { &K4_PACK };
            for v in 0..4 {
                let lo = _mm512_permutex2var_epi32(nat[0], v32(&table[v]), nat[1]);
                let hi = _mm512_permutex2var_epi32(nat[2], v32(&table[v]), nat[3]);
                _mm512_store_si512(rec.add(64 * v) as *mut _, _mm512_mask_blend_epi32(0xFF00, lo, hi));
            }
            let bs = _mm512_loadu_si512(a.sums.as_ptr().add(16 * g) as *const _);
            if D::CORR {
                _mm512_store_si512(rec.add(off) as *mut _, _mm512_mullo_epi32(bs, _mm512_set1_epi32(-D::OFFSET)));
                off += 64;
            }
            let d = _mm512_set1_ps(a.d[g]);
            _mm512_store_ps(rec.add(off) as *mut f32, d);
            if D::EXTRA {
                _mm512_store_ps(rec.add(off + 64) as *mut f32, _mm512_mul_ps(d, _mm512_cvtepi32_ps(bs)));
            }
        }
    }
}

/// Record of group g: `[q: NV*64][corr: i32 x16 if CORR][xs: f32 x16][xe: f32 x16 if EXTRA]`.
/// The plain reference of [`pack_fast`].
#[cfg_attr(not(test), allow(dead_code))]
fn pack<D: Dec>(a: &NatAct, dst: &mut [u8]) {
    let n_groups = a.n.div_ceil(D::GE);
    debug_assert!(dst.len() >= n_groups * D::RB);
    for g in 0..n_groups {
        let rec = &mut dst[g * D::RB..(g + 1) * D::RB];
        let base = g * D::GE;
        let mut lane_sum = [0i32; 16];
        for b in 0..D::NV * 64 {
            let e = base + D::elem(b);
            let q = if e < a.n { a.q[e] } else { 0 };
            rec[b] = q as u8;
            lane_sum[(b % 64) / 4] += q as i32;
        }
        let mut off = D::NV * 64;
        if D::CORR {
            for l in 0..16 {
                let c = if D::BLOCK == 256 {
                    // Q6_K: lane L is bsum L.
                    -D::OFFSET * a.sums[16 * g + l]
                } else {
                    -D::OFFSET * lane_sum[l]
                };
                rec[off + 4 * l..off + 4 * l + 4].copy_from_slice(&c.to_le_bytes());
            }
            off += 64;
        }
        for l in 0..16 {
            let xs = if D::BLOCK == 256 {
                a.d[g]
            } else {
                let blk = 8 * g + l / 2;
                if blk < a.d.len() {
                    a.d[blk]
                } else {
                    0.0
                }
            };
            rec[off + 4 * l..off + 4 * l + 4].copy_from_slice(&xs.to_le_bytes());
        }
        off += 64;
        if D::EXTRA {
            for l in 0..16 {
                let xe = if D::BLOCK == 256 {
                    a.d[g] * a.sums[16 * g + l] as f32
                } else {
                    let blk = 8 * g + l / 2;
                    if blk < a.s.len() && l % 2 == 0 {
                        a.s[blk]
                    } else {
                        0.0
                    }
                };
                rec[off + 4 * l..off + 4 * l + 4].copy_from_slice(&xe.to_le_bytes());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tiles

/// Software prefetch distance for weights streamed from memory (bytes ahead in the row data,
/// which is read in one pass, rows back to back). The prefetches go to L2 (`prefetcht1`), leaving
/// L1's few miss buffers to the demand loads: matrix-vector products streamed 3-8% faster than
/// with `prefetcht0` on an AMX-capable Xeon (Sapphire Rapids or later; bench_matmul, every type,
/// 1 and 2 threads). Not measured on AMD Zen.
pub(crate) const PREFETCH: usize = 8192;

#[inline(always)]
unsafe fn prefetch_span(p: *const u8, n: usize) {
    let mut o = 0;
    while o < n {
        _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(o + PREFETCH) as *const i8);
        o += 64;
    }
}

/// Decodes group g of `RM` rows (direct from the weight bytes).
#[inline(always)]
unsafe fn decode_group<D: Dec, const RM: usize>(
    a: &TileArgs,
    g: usize,
    wv: &mut [[__m512i; 4]; RM],
    ws: &mut [__m512; RM],
    we: &mut [__m512; RM],
) {
    if (g + 1) * D::GE <= a.n_cols {
        for r in 0..RM {
            if a.prefetch {
                prefetch_span(a.w.add(r * a.row_bytes + g * D::GB), D::GB);
            }
            D::decode::<false>(a.w.add(r * a.row_bytes + g * D::GB), D::GB, &mut wv[r], &mut ws[r], &mut we[r]);
        }
    } else {
        let valid = (a.n_cols - g * D::GE) / D::BLOCK * D::BB;
        for r in 0..RM {
            D::decode::<true>(a.w.add(r * a.row_bytes + g * D::GB), valid, &mut wv[r], &mut ws[r], &mut we[r]);
        }
    }
}

/// The products of one group of `RM` decoded rows with `RN` tokens, added to `acc`.
#[inline(always)]
unsafe fn group_pairs<D: Dec, const RM: usize, const RN: usize>(
    a: &TileArgs,
    g: usize,
    wv: &[[__m512i; 4]; RM],
    ws: &[__m512; RM],
    we: &[__m512; RM],
    acc: &mut [[__m512; RN]; RM],
) {
    for t in 0..RN {
        let rec = a.act.add(t * a.act_stride + g * D::RB);
        let mut xv = [_mm512_setzero_si512(); 4];
        for (v, x) in xv.iter_mut().enumerate().take(D::NV) {
            *x = _mm512_load_si512(rec.add(64 * v) as *const _);
        }
        let mut off = 64 * D::NV;
        let corr = if D::CORR {
            off += 64;
            _mm512_load_si512(rec.add(off - 64) as *const _)
        } else {
            _mm512_setzero_si512()
        };
        let xs = _mm512_load_ps(rec.add(off) as *const f32);
        let xe = if D::EXTRA { _mm512_load_ps(rec.add(off + 64) as *const f32) } else { _mm512_setzero_ps() };
        for r in 0..RM {
            let mut is = corr;
            for v in 0..D::NV {
                is = _mm512_dpbusd_epi32(is, wv[r][v], xv[v]);
            }
            // The canonical order (module docs of `super`): block k of the group is lane 2k (the
            // sum of its two lanes, exact), odd lanes stay 0; `lane + (f32(I)·d_w)·d_x`, then
            // `+ m_w·s_x`, never fused. The final reduction's halving tree over 16 lanes is then the
            // canonical tree over the 8 block lanes.
            let blk = _mm512_add_epi32(is, _mm512_srli_epi64::<32>(is));
            let f = _mm512_mul_ps(_mm512_maskz_cvtepi32_ps(0x5555, blk), ws[r]);
            let mut s = _mm512_add_ps(acc[r][t], _mm512_mul_ps(f, xs));
            if D::EXTRA {
                s = _mm512_add_ps(s, _mm512_mul_ps(we[r], xe));
            }
            acc[r][t] = s;
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx512bitalg,avx2,fma,f16c")]
unsafe fn tile_q<D: Dec, const RM: usize, const RN: usize>(a: &TileArgs) {
    let n_groups = a.n_cols.div_ceil(D::GE);
    let mut acc = [[_mm512_setzero_ps(); RN]; RM];
    for g in 0..n_groups {
        let mut wv = [[_mm512_setzero_si512(); 4]; RM];
        let mut ws = [_mm512_setzero_ps(); RM];
        let mut we = [_mm512_setzero_ps(); RM];
        decode_group::<D, RM>(a, g, &mut wv, &mut ws, &mut we);
        group_pairs::<D, RM, RN>(a, g, &wv, &ws, &we, &mut acc);
    }
    store_tile(a, &acc);
}

/// The same as [`tile_q`] with the weights already decoded by [`decode_rows`] (`a.w`, `a.row_bytes`
/// point into the decoded buffer).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx512bitalg,avx2,fma,f16c")]
unsafe fn tile_pre<D: Dec, const RM: usize, const RN: usize>(a: &TileArgs) {
    let n_groups = a.n_cols.div_ceil(D::GE);
    let mut acc = [[_mm512_setzero_ps(); RN]; RM];
    for g in 0..n_groups {
        let mut wv = [[_mm512_setzero_si512(); 4]; RM];
        let mut ws = [_mm512_setzero_ps(); RM];
        let mut we = [_mm512_setzero_ps(); RM];
        for r in 0..RM {
            let p = a.w.add(r * a.row_bytes + g * D::DB);
            for v in 0..D::NV {
                wv[r][v] = _mm512_load_si512(p.add(64 * v) as *const _);
            }
            ws[r] = _mm512_load_ps(p.add(64 * D::NV) as *const f32);
            if D::EXTRA {
                we[r] = _mm512_load_ps(p.add(64 * D::NV + 64) as *const f32);
            }
        }
        group_pairs::<D, RM, RN>(a, g, &wv, &ws, &we, &mut acc);
    }
    store_tile(a, &acc);
}

/// Decodes `rows` rows into `dst` (64-byte aligned), `D::DB` bytes per group.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx512bitalg,avx2,fma,f16c")]
unsafe fn decode_rows<D: Dec>(rows: usize, a: &TileArgs, dst: *mut u8) {
    let n_groups = a.n_cols.div_ceil(D::GE);
    for r in 0..rows {
        let sub = TileArgs { w: a.w.add(r * a.row_bytes), ..*a };
        for g in 0..n_groups {
            let mut wv = [[_mm512_setzero_si512(); 4]; 1];
            let mut ws = [_mm512_setzero_ps(); 1];
            let mut we = [_mm512_setzero_ps(); 1];
            decode_group::<D, 1>(&sub, g, &mut wv, &mut ws, &mut we);
            let p = dst.add((r * n_groups + g) * D::DB);
            for v in 0..D::NV {
                _mm512_store_si512(p.add(64 * v) as *mut _, wv[0][v]);
            }
            _mm512_store_ps(p.add(64 * D::NV) as *mut f32, ws[0]);
            _mm512_store_ps(p.add(64 * D::NV + 64) as *mut f32, we[0]);
        }
    }
}

tile_dispatch!(tile_q4_0, tile_q::<Q4_0>, 2, 8);
tile_dispatch!(tile_q4_1, tile_q::<Q4_1>, 2, 8);
tile_dispatch!(tile_q5_0, tile_q::<Q5_0>, 2, 8);
tile_dispatch!(tile_q5_1, tile_q::<Q5_1>, 2, 8);
tile_dispatch!(tile_q8_0_r4, tile_q::<Q8_0>, 4, 2);
tile_dispatch!(tile_q8_0_r2, tile_q::<Q8_0>, 2, 8);

/// Q8_0 direct tiles: 4 rows per tile for matrix-vector products (more weight streams in flight:
/// measured +15-25 % from memory; the other types do not gain), 2 rows × up to 8 tokens otherwise.
/// The same per-output arithmetic either way.
unsafe fn tile_q8_0(rows: usize, rn: usize, a: &TileArgs) {
    if rn <= 2 {
        tile_q8_0_r4(rows, rn, a)
    } else {
        tile_q8_0_r2(rows, rn, a)
    }
}

tile_dispatch!(pre_q4_0, tile_pre::<Q4_0>, 2, 8);
tile_dispatch!(pre_q4_1, tile_pre::<Q4_1>, 2, 8);
tile_dispatch!(pre_q5_0, tile_pre::<Q5_0>, 2, 8);
tile_dispatch!(pre_q5_1, tile_pre::<Q5_1>, 2, 8);
tile_dispatch!(pre_q8_0, tile_pre::<Q8_0>, 2, 8);

/// Float weights: 16 values at element `i` of a row (or the first `n` of them).
trait FW {
    const SIZE: usize;
    unsafe fn load(p: *const u8, i: usize) -> __m512;
    unsafe fn load_n(p: *const u8, i: usize, m: __mmask16) -> __m512;
}
struct WF32;
struct WF16;
struct WBF16;
impl FW for WF32 {
    const SIZE: usize = 4;
    #[inline(always)]
    unsafe fn load(p: *const u8, i: usize) -> __m512 {
        _mm512_loadu_ps((p as *const f32).add(i))
    }
    #[inline(always)]
    unsafe fn load_n(p: *const u8, i: usize, m: __mmask16) -> __m512 {
        _mm512_maskz_loadu_ps(m, (p as *const f32).add(i))
    }
}
impl FW for WF16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load(p: *const u8, i: usize) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.add(2 * i) as *const _))
    }
    #[inline(always)]
    unsafe fn load_n(p: *const u8, i: usize, m: __mmask16) -> __m512 {
        _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p.add(2 * i) as *const i16))
    }
}
impl FW for WBF16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load(p: *const u8, i: usize) -> __m512 {
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.add(2 * i) as *const _)), 16))
    }
    #[inline(always)]
    unsafe fn load_n(p: *const u8, i: usize, m: __mmask16) -> __m512 {
        _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p.add(2 * i) as *const i16)),
            16,
        ))
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn tile_fl<W: FW, const RM: usize, const RN: usize>(a: &TileArgs) {
    let n = a.n_cols;
    let mut acc = [[_mm512_setzero_ps(); RN]; RM];
    let mut rows = [a.w; RM];
    for (r, p) in rows.iter_mut().enumerate() {
        *p = a.w.add(r * a.row_bytes);
    }
    let mut xs = [a.act as *const f32; RN];
    for (t, p) in xs.iter_mut().enumerate() {
        *p = a.act.add(t * a.act_stride) as *const f32;
    }
    let mut i = 0;
    while i + 16 <= n {
        let mut wv = [_mm512_setzero_ps(); RM];
        for r in 0..RM {
            wv[r] = W::load(rows[r], i);
        }
        if a.prefetch && (i * W::SIZE) % 64 == 0 {
            for r in 0..RM {
                _mm_prefetch::<_MM_HINT_T1>(rows[r].wrapping_add(i * W::SIZE + PREFETCH) as *const i8);
            }
        }
        for t in 0..RN {
            let xv = _mm512_loadu_ps(xs[t].add(i));
            for r in 0..RM {
                acc[r][t] = _mm512_add_ps(acc[r][t], _mm512_mul_ps(wv[r], xv));
            }
        }
        i += 16;
    }
    store_tile(a, &acc);
    // The canonical order (`ops::canon_sum`): the 16 lanes (element i mod 16) added as a halving
    // tree (store_tile), then the leftover elements one by one; nothing fused.
    if i < n {
        for t in 0..RN {
            for r in 0..RM {
                let o = a.out.add(t * a.out_stride + r);
                let mut s = *o;
                for j in i..n {
                    s += _mm512_cvtss_f32(W::load_n(rows[r], j, 1)) * *xs[t].add(j);
                }
                *o = s;
            }
        }
    }
}

tile_dispatch!(tile_f32, tile_fl::<WF32>, 4, 6);
tile_dispatch!(tile_f16, tile_fl::<WF16>, 4, 6);
tile_dispatch!(tile_bf16, tile_fl::<WBF16>, 4, 6);

/// k-quants (Q4_K, Q5_K, Q6_K) in the canonical order: the AVX2 tile (`x86_avx2::tile_q`, one
/// running sum per output, exact integers per super-block) compiled for AVX-512, with the integer
/// products 64 values at a time: the AVX2 decoders' vectors joined in pairs (vector c = values
/// 64c..64c+63, matching the activation record's bytes), then `vpmaddubsw` + `vpmaddwd` with the
/// joined scales, summed as i32 lanes and folded to the AVX2 tile's 8 lanes at the end. The
/// integers are exact either way, so the results are the AVX2 kernels' bits. Prompts
/// (`bench_matmul --tokens 128`, 1 thread, 3352x768): Q4_K 91 -> 118 GFLOP/s, Q5_K 82 -> 105,
/// Q6_K 88 -> 128.
mod kquant {
    use super::super::actq::NatAct;
    use super::super::x86_avx2::{self as avx2, pack_k, tile_q_avx512, tile_q_dispatch, Dec2, K_RB};
    use super::super::{tile_dispatch, ActKind, Kernel, PreDecode, QKernel, TileArgs, TileFn};
    use std::arch::x86_64::*;

    /// The kernel of a k-quant type (`None` for the others).
    pub(super) fn kernel(ty: crate::gguf::GgmlType) -> Option<Kernel> {
        use crate::gguf::GgmlType as T;
        let pre = match ty {
            // Q4_K/Q5_K prompts: rows interleaved 16 to a vector, VNNI products (`x16`).
            T::Q4_K => PreDecode {
                group: 256,
                bytes_per_group: x16::ROW_BYTES,
                row_block: 16,
                decode: x16::decode_rows::<false>,
                tile: x16::tile,
            },
            T::Q5_K => PreDecode {
                group: 256,
                bytes_per_group: x16::ROW_BYTES,
                row_block: 16,
                decode: x16::decode_rows::<true>,
                tile: x16::tile,
            },
            T::Q6_K => PreDecode {
                group: 256,
                bytes_per_group: PRE_BYTES,
                row_block: 1,
                decode: decode_rows::<Q6K>,
                tile: tile_q6_k_pre,
            },
            _ => return None,
        };
        let tile: TileFn = match ty {
            T::Q4_K => tile_q4_k,
            T::Q5_K => tile_q5_k,
            _ => tile_q6_k,
        };
        // The AVX2 tile's shapes: 2 rows × 4 tokens, or 8 rows of one token. Prompts (several
        // token tiles) decode each panel of rows once per token block (`matmul::drive`), which
        // the pre-decoded tile then reads for every token tile; it computes the same integers and
        // the same float steps, so the same bits.
        Some(Kernel::Quant(QKernel {
            act: ActKind::Q8K,
            group: 256,
            rec_bytes: K_RB,
            pack: pack_k,
            tile,
            rm: 2,
            rn: 4,
            pre: Some(pre),
        }))
    }

    /// Bytes of one pre-decoded super-block: a [`KW`] as it is in registers.
    const PRE_BYTES: usize = std::mem::size_of::<KW>().next_multiple_of(64);

    /// Decodes `rows` rows of a k-quant type into `dst` (64-byte aligned), [`PRE_BYTES`] per
    /// super-block: what the `*Pre` types below read back.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    unsafe fn decode_rows<D: Dec2<W = KW>>(rows: usize, a: &TileArgs, dst: *mut u8) {
        let n_groups = a.n_cols / D::GE;
        for r in 0..rows {
            for g in 0..n_groups {
                let w = D::decode(a.w.add(r * a.row_bytes + g * D::GB));
                std::ptr::write_unaligned(dst.add((r * n_groups + g) * PRE_BYTES) as *mut KW, w);
            }
        }
    }

    /// `$t`: the widened k-quant type `$w`, read back from [`decode_rows`]' buffer.
    macro_rules! predecoded {
        ($t:ident, $w:ty) => {
            pub(super) struct $t;
            impl Dec2 for $t {
                const GE: usize = 256;
                const GB: usize = PRE_BYTES;
                const RB: usize = <$w as Dec2>::RB;
                type W = KW;
                const K: bool = true;
                const EXTRA: bool = <$w as Dec2>::EXTRA;
                #[inline(always)]
                unsafe fn decode(p: *const u8) -> KW {
                    std::ptr::read_unaligned(p as *const KW)
                }
                #[inline(always)]
                unsafe fn ipair(w: &KW, rec: *const u8) -> (__m256i, __m256i) {
                    <$w as Dec2>::ipair(w, rec)
                }
                fn scales(w: &KW) -> (f32, f32) {
                    (w.d, w.dmin)
                }
                fn pack(a: &NatAct, dst: &mut [u8]) {
                    <$w as Dec2>::pack(a, dst)
                }
            }
        };
    }
    predecoded!(Q6KPre, Q6K);
    tile_q_dispatch!(tile_q6_k_pre, Q6KPre, tile_q_avx512);

    /// Q4_K / Q5_K prompts with VNNI: 16 rows interleaved so that each 32-bit lane of a vector is
    /// one row. Per 256-value super-block of a 16-row block the decoded layout holds
    /// * `q`: 64 vectors, vector `8s + k` = values `32s + 4k .. +4` of each row (lane r = row r),
    ///   unsigned (0..15, or 0..31 for Q5_K), for `vpdpbusd` with the signed activations;
    /// * the 8 sub-block scales as i32 lanes (8 vectors), the 8 mins as i16 pairs (4 vectors:
    ///   mins 2p, 2p+1 of each row), then `d` and `dmin` as f32 lanes.
    ///
    /// For a token, `S_s` = Σ q·x over sub-block s (exact, in i32 lanes), `I = Σ_s sc_s·S_s`,
    /// `M = Σ_s min_s·bsum_s` (`vpdpwssd` on the pairs): the integers of the canonical order, one
    /// row per lane; then per lane `acc + (f32(I)·d)·d_x − (f32(M)·dmin)·d_x`, the canonical float
    /// steps. So the same bits as every other path.
    mod x16 {
        use super::super::super::TileArgs;
        use super::{avx2, Dec2, K_RB};
        use crate::quant::half::f16_to_f32;
        use std::arch::x86_64::*;

        const Q_OFF: usize = 0;
        const SC_OFF: usize = 64 * 64;
        const MIN_OFF: usize = SC_OFF + 8 * 64;
        const D_OFF: usize = MIN_OFF + 4 * 64;
        const DMIN_OFF: usize = D_OFF + 64;
        /// Bytes of one super-block of a 16-row block.
        const BLOCK_BYTES: usize = DMIN_OFF + 64;
        /// Bytes per row and super-block (`PreDecode::bytes_per_group`).
        pub(in super::super) const ROW_BYTES: usize = BLOCK_BYTES / 16;

        /// ggml's `get_scale_min_k4`.
        fn scale_min(j: usize, s: &[u8]) -> (u8, u8) {
            if j < 4 {
                (s[j] & 63, s[j + 4] & 63)
            } else {
                ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
            }
        }

        /// Decodes `rows` rows (Q4_K, or Q5_K when `Q5`) into blocks of 16 interleaved rows at
        /// `dst` (64-byte aligned), the rows past `rows` of the last block zero: each row's values
        /// with the AVX2 decoder, then a 16 × 64 transpose of 4-byte groups (gathers).
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        pub(in super::super) unsafe fn decode_rows<const Q5: bool>(rows: usize, a: &TileArgs, dst: *mut u8) {
            #[repr(C, align(64))]
            struct Tmp([u8; 16 * 256]);
            let mut tmp = Tmp([0; 16 * 256]);
            let n_groups = a.n_cols / 256;
            let gb = if Q5 { 176 } else { 144 };
            let idx = _mm512_mullo_epi32(
                _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                _mm512_set1_epi32(256),
            );
            for b in 0..rows.div_ceil(16) {
                let valid = 16.min(rows - 16 * b);
                for g in 0..n_groups {
                    let blk = dst.add((b * n_groups + g) * BLOCK_BYTES);
                    std::ptr::write_bytes(blk.add(SC_OFF), 0, BLOCK_BYTES - SC_OFF);
                    for r in 0..16 {
                        let row = tmp.0.as_mut_ptr().add(256 * r);
                        if r >= valid {
                            std::ptr::write_bytes(row, 0, 256);
                            continue;
                        }
                        let p = a.w.add((16 * b + r) * a.row_bytes + g * gb);
                        let q = if Q5 { <avx2::Q5K as Dec2>::decode(p).q } else { <avx2::Q4K as Dec2>::decode(p).q };
                        for (v, x) in q.iter().enumerate() {
                            _mm256_store_si256(row.add(32 * v) as *mut _, *x);
                        }
                        let p = std::slice::from_raw_parts(p, 16);
                        *(blk.add(D_OFF + 4 * r) as *mut f32) = f16_to_f32(u16::from_le_bytes([p[0], p[1]]));
                        *(blk.add(DMIN_OFF + 4 * r) as *mut f32) = f16_to_f32(u16::from_le_bytes([p[2], p[3]]));
                        let mut mins = [0u32; 8];
                        for (s, m) in mins.iter_mut().enumerate() {
                            let (scale, min) = scale_min(s, &p[4..16]);
                            *(blk.add(SC_OFF + 64 * s + 4 * r) as *mut i32) = scale as i32;
                            *m = min as u32;
                        }
                        for pair in 0..4 {
                            *(blk.add(MIN_OFF + 64 * pair + 4 * r) as *mut u32) =
                                mins[2 * pair] | (mins[2 * pair + 1] << 16);
                        }
                    }
                    for j in 0..64 {
                        let v = _mm512_i32gather_epi32::<1>(
                            _mm512_add_epi32(idx, _mm512_set1_epi32(4 * j as i32)),
                            tmp.0.as_ptr() as *const i32,
                        );
                        _mm512_store_si512(blk.add(Q_OFF + 64 * j) as *mut _, v);
                    }
                }
            }
        }

        /// The pre-decoded tile (`TileFn`): `rows` rows of the panel at `a.w` (blocks of 16),
        /// `rn` tokens.
        pub(in super::super) unsafe fn tile(rows: usize, rn: usize, a: &TileArgs) {
            for b in 0..rows.div_ceil(16) {
                let mut t = 0;
                while t < rn {
                    let nt = (rn - t).min(4);
                    match nt {
                        1 => block::<1>(a, b, t, rows),
                        2 => block::<2>(a, b, t, rows),
                        3 => block::<3>(a, b, t, rows),
                        _ => block::<4>(a, b, t, rows),
                    }
                    t += nt;
                }
            }
        }

        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2")]
        unsafe fn block<const NT: usize>(a: &TileArgs, b: usize, t0: usize, rows: usize) {
            let n_groups = a.n_cols / 256;
            // The block's super-blocks follow each other (`a.row_bytes` = n_groups·ROW_BYTES).
            let base = a.w.add(b * 16 * a.row_bytes);
            let mut acc = [_mm512_setzero_ps(); NT];
            for g in 0..n_groups {
                let blk = base.add(g * BLOCK_BYTES);
                let recs: [*const u8; NT] = std::array::from_fn(|t| a.act.add((t0 + t) * a.act_stride + g * K_RB));
                let mut iv = [_mm512_setzero_si512(); NT];
                for s in 0..8 {
                    let mut sv = [_mm512_setzero_si512(); NT];
                    for k in 0..8 {
                        let q = _mm512_load_si512(blk.add(Q_OFF + 64 * (8 * s + k)) as *const _);
                        for t in 0..NT {
                            let x =
                                _mm512_set1_epi32(std::ptr::read_unaligned(recs[t].add(32 * s + 4 * k) as *const i32));
                            sv[t] = _mm512_dpbusd_epi32(sv[t], q, x);
                        }
                    }
                    let sc = _mm512_load_si512(blk.add(SC_OFF + 64 * s) as *const _);
                    for t in 0..NT {
                        iv[t] = _mm512_add_epi32(iv[t], _mm512_mullo_epi32(sv[t], sc));
                    }
                }
                let d = _mm512_load_ps(blk.add(D_OFF) as *const f32);
                let dmin = _mm512_load_ps(blk.add(DMIN_OFF) as *const f32);
                for t in 0..NT {
                    let rec = recs[t];
                    // bsum of sub-block s = the two 16-value sums of the activation record.
                    let bs = |s: usize| -> i32 {
                        let lo = std::ptr::read_unaligned(rec.add(256 + 4 * s) as *const i16) as i32;
                        let hi = std::ptr::read_unaligned(rec.add(258 + 4 * s) as *const i16) as i32;
                        lo + hi
                    };
                    let mut mv = _mm512_setzero_si512();
                    for pair in 0..4 {
                        let x = ((bs(2 * pair) as i16 as u16 as u32) | ((bs(2 * pair + 1) as i16 as u16 as u32) << 16))
                            as i32;
                        let m = _mm512_load_si512(blk.add(MIN_OFF + 64 * pair) as *const _);
                        mv = _mm512_dpwssd_epi32(mv, m, _mm512_set1_epi32(x));
                    }
                    let dx = _mm512_set1_ps(std::ptr::read_unaligned(rec.add(288) as *const f32));
                    let f = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(iv[t]), d), dx);
                    let m = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(mv), dmin), dx);
                    acc[t] = _mm512_sub_ps(_mm512_add_ps(acc[t], f), m);
                }
            }
            let valid = 16.min(rows - 16 * b);
            for (t, v) in acc.iter().enumerate() {
                let mut lanes = [0f32; 16];
                _mm512_storeu_ps(lanes.as_mut_ptr(), *v);
                let out = a.out.add((t0 + t) * a.out_stride + 16 * b);
                for (r, l) in lanes.iter().enumerate().take(valid) {
                    *out.add(r) = *l;
                }
            }
        }
    }

    tile_q_dispatch!(tile_q4_k_512, Q4K, tile_q_avx512);
    tile_q_dispatch!(tile_q5_k_512, Q5K, tile_q_avx512);
    tile_q_dispatch!(tile_q6_k, Q6K, tile_q_avx512);

    // Q4_K/Q5_K matrix-vector products stay on the AVX2 tile: one token cannot amortise joining
    // the halves, and 512-bit integer multiplies issue no faster than two 256-bit ones here (in
    // cache, 1 thread, 3352x768, with a decoder of its own: Q4_K 22.6 GB/s AVX2 vs 19.0 AVX-512,
    // Q5_K 21.2 vs 19.7; Q6_K 26.0 vs 30.3, so Q6_K takes AVX-512). Both give the same bits.
    unsafe fn tile_q4_k(rows: usize, rn: usize, a: &TileArgs) {
        if rn == 1 {
            avx2::tile_q4_k(rows, rn, a)
        } else {
            tile_q4_k_512(rows, rn, a)
        }
    }

    unsafe fn tile_q5_k(rows: usize, rn: usize, a: &TileArgs) {
        if rn == 1 {
            avx2::tile_q5_k(rows, rn, a)
        } else {
            tile_q5_k_512(rows, rn, a)
        }
    }

    /// A super-block of the AVX2 decoders (`x86_avx2::KW`) with each pair of 256-bit vectors
    /// joined into one: vector c = values 64c..64c+63 and their scales.
    #[derive(Clone, Copy)]
    pub(super) struct KW {
        q: [__m512i; 4],
        sc: [__m512i; 4],
        m16: __m256i,
        d: f32,
        dmin: f32,
    }

    /// `lo` in the low 256 bits, `hi` in the high ones.
    #[inline(always)]
    unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
    }

    #[inline(always)]
    unsafe fn widen(w: avx2::KW) -> KW {
        let mut q = [_mm512_setzero_si512(); 4];
        let mut sc = [_mm512_setzero_si512(); 4];
        for c in 0..4 {
            q[c] = join(w.q[2 * c], w.q[2 * c + 1]);
            sc[c] = join(w.sc[2 * c], w.sc[2 * c + 1]);
        }
        KW { q, sc, m16: w.m16, d: w.d, dmin: w.dmin }
    }

    /// `Σ_c maddwd(maddubs(q[c], x[c]), sc[c])` folded to the AVX2 tile's 8 i32 lanes.
    #[inline(always)]
    unsafe fn products(w: &KW, rec: *const u8) -> __m256i {
        let mut is = _mm512_setzero_si512();
        for c in 0..4 {
            let x = _mm512_load_si512(rec.add(64 * c) as *const _);
            is = _mm512_add_epi32(is, _mm512_madd_epi16(_mm512_maddubs_epi16(w.q[c], x), w.sc[c]));
        }
        _mm256_add_epi32(_mm512_castsi512_si256(is), _mm512_extracti64x4_epi64::<1>(is))
    }

    /// `$t`: the AVX2 k-quant type `$a` decoded and widened, with 512-bit products.
    macro_rules! widened {
        ($t:ident, $a:ty) => {
            pub(super) struct $t;
            impl Dec2 for $t {
                const GE: usize = <$a as Dec2>::GE;
                const GB: usize = <$a as Dec2>::GB;
                const RB: usize = <$a as Dec2>::RB;
                type W = KW;
                const K: bool = true;
                const EXTRA: bool = <$a as Dec2>::EXTRA;
                #[inline(always)]
                unsafe fn decode(p: *const u8) -> KW {
                    widen(<$a as Dec2>::decode(p))
                }
                #[inline(always)]
                unsafe fn ipair(w: &KW, rec: *const u8) -> (__m256i, __m256i) {
                    let bs = _mm256_load_si256(rec.add(256) as *const _);
                    let m = _mm256_madd_epi16(w.m16, bs);
                    if <$a as Dec2>::EXTRA {
                        // Q4_K/Q5_K: M = Σ min·bsum
                        (products(w, rec), m)
                    } else {
                        // Q6_K: the stored values are q + 32, so subtract 32 · Σ scale·bsum
                        (_mm256_sub_epi32(products(w, rec), _mm256_slli_epi32(m, 5)), _mm256_setzero_si256())
                    }
                }
                fn scales(w: &KW) -> (f32, f32) {
                    (w.d, w.dmin)
                }
                fn pack(a: &NatAct, dst: &mut [u8]) {
                    <$a as Dec2>::pack(a, dst)
                }
            }
        };
    }
    widened!(Q4K, avx2::Q4K);
    widened!(Q5K, avx2::Q5K);
    widened!(Q6K, avx2::Q6K);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weight decoders put value `D::elem(b)` at byte b: check against dequantization.
    fn check_decoder<D: Dec>(ty: GgmlType, offset: i32) {
        if !available() {
            return;
        }
        let n = D::GE;
        let data = crate::kernels::matmul::synth_weights(ty, 1, n, 99);
        let mut deq = vec![0f32; n];
        crate::quant::dequantize_row(ty, &data, &mut deq).unwrap();
        let mut w = [unsafe { _mm512_setzero_si512() }; 4];
        let mut ws = unsafe { _mm512_setzero_ps() };
        let mut we = unsafe { _mm512_setzero_ps() };
        unsafe { decode_tf::<D>(data.as_ptr(), &mut w, &mut ws, &mut we) };
        let bytes: Vec<u8> = w.iter().flat_map(|v| unsafe { std::mem::transmute::<__m512i, [u8; 64]>(*v) }).collect();
        let wsf: [f32; 16] = unsafe { std::mem::transmute(ws) };
        let wef: [f32; 16] = unsafe { std::mem::transmute(we) };
        for b in 0..D::NV * 64 {
            let e = D::elem(b);
            let lane = (b % 64) / 4;
            let v = (bytes[b] as i32 - offset) as f32 * wsf[lane] + if D::EXTRA { wef[lane] } else { 0.0 };
            assert!((v - deq[e]).abs() <= 1e-5 * deq[e].abs().max(1e-3), "{ty} byte {b} elem {e}: {v} vs {}", deq[e]);
        }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx512bitalg,avx2,fma,f16c")]
    unsafe fn decode_tf<D: Dec>(p: *const u8, w: &mut [__m512i; 4], ws: &mut __m512, we: &mut __m512) {
        D::decode::<false>(p, D::GB, w, ws, we)
    }

    fn check_pack<D: Dec>(kind: crate::kernels::vecdot::ActKind, n: usize) {
        let mut rng = crate::util::SplitMix64::new(n as u64);
        let x: Vec<f32> = (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        let mut a = NatAct::default();
        crate::kernels::vecdot::actq::quantize_scalar(kind, &x, &mut a);
        let bytes = n.div_ceil(D::GE) * D::RB;
        let mut b1 = crate::kernels::vecdot::AlignedBuf::default();
        let mut b2 = crate::kernels::vecdot::AlignedBuf::default();
        let r1 = b1.get(bytes);
        r1.fill(0xAA);
        pack::<D>(&a, r1);
        let r2 = b2.get(bytes);
        r2.fill(0x55);
        pack_fast::<D>(&a, r2);
        assert_eq!(b1.get(bytes), b2.get(bytes), "n = {n}");
    }

    #[test]
    fn fast_packing_equals_the_reference_packing() {
        if !available() {
            return;
        }
        use crate::kernels::vecdot::ActKind;
        for n in [32, 64, 96, 128, 160, 256, 288, 1024] {
            check_pack::<Q4_0>(ActKind::Q8_0, n);
            check_pack::<Q5_0>(ActKind::Q8_0, n);
            check_pack::<Q8_0>(ActKind::Q8_0, n);
            check_pack::<Q4_1>(ActKind::Q8_1, n);
            check_pack::<Q5_1>(ActKind::Q8_1, n);
        }
        for n in [256, 512, 768] {
            check_pack::<Q4K>(ActKind::Q8K, n);
            check_pack::<Q5K>(ActKind::Q8K, n);
            check_pack::<Q6K>(ActKind::Q8K, n);
        }
    }

    #[test]
    fn decoders_place_values_where_the_records_expect_them() {
        check_decoder::<Q4_0>(GgmlType::Q4_0, 8);
        check_decoder::<Q4_1>(GgmlType::Q4_1, 0);
        check_decoder::<Q5_0>(GgmlType::Q5_0, 16);
        check_decoder::<Q5_1>(GgmlType::Q5_1, 0);
        check_decoder::<Q8_0>(GgmlType::Q8_0, 128);
        check_decoder::<Q4K>(GgmlType::Q4_K, 0);
        check_decoder::<Q5K>(GgmlType::Q5_K, 0);
        check_decoder::<Q6K>(GgmlType::Q6_K, 32);
    }
}
