//! AVX-512 kernels (F + BW + VL + VNNI + VBMI: Ice Lake, Zen 4 and later).
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
use super::{tile_dispatch, ActKind, FKernel, Kernel, QKernel, TileArgs};
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
            && super::x86_avx2::available()
    })
}

pub(crate) fn kernel(ty: GgmlType) -> Option<Kernel> {
    if !available() {
        return None;
    }
    macro_rules! q {
        ($d:ty, $act:expr, $tile:ident) => {
            Kernel::Quant(QKernel { act: $act, group: <$d>::GE, rec_bytes: <$d>::RB, pack: pack::<$d>, tile: $tile, rm: QRM, rn: QRN })
        };
    }
    Some(match ty {
        GgmlType::F32 => Kernel::Float(FKernel { tile: tile_f32, rm: FRM, rn: FRN }),
        GgmlType::F16 => Kernel::Float(FKernel { tile: tile_f16, rm: FRM, rn: FRN }),
        GgmlType::BF16 => Kernel::Float(FKernel { tile: tile_bf16, rm: FRM, rn: FRN }),
        GgmlType::Q8_0 => q!(Q8_0, ActKind::Q8_0, tile_q8_0),
        GgmlType::Q4_0 => q!(Q4_0, ActKind::Q8_0, tile_q4_0),
        GgmlType::Q4_1 => q!(Q4_1, ActKind::Q8_1, tile_q4_1),
        GgmlType::Q5_0 => q!(Q5_0, ActKind::Q8_0, tile_q5_0),
        GgmlType::Q5_1 => q!(Q5_1, ActKind::Q8_1, tile_q5_1),
        GgmlType::Q4_K => q!(Q4K, ActKind::Q8K, tile_q4_k),
        GgmlType::Q5_K => q!(Q5K, ActKind::Q8K, tile_q5_k),
        GgmlType::Q6_K => q!(Q6K, ActKind::Q8K, tile_q6_k),
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

#[inline(always)]
unsafe fn store_tile<const RM: usize, const RN: usize>(a: &TileArgs, acc: &[[__m512; RN]; RM]) {
    for t in 0..RN {
        for r in 0..RM {
            *a.out.add(t * a.out_stride + r) = hsum(acc[r][t]);
        }
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

#[inline(always)]
unsafe fn rd_u32(p: *const u8) -> u32 {
    u32::from_le(std::ptr::read_unaligned(p as *const u32))
}

#[inline(always)]
unsafe fn rd_f16(p: *const u8) -> f32 {
    crate::quant::half::f16_to_f32(u16::from_le(std::ptr::read_unaligned(p as *const u16)))
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
macro_rules! table16 {
    (|$i:ident| $e:expr) => {{
        let mut a = [0u16; 32];
        let mut $i = 0usize;
        while $i < 32 {
            a[$i] = ($e) as u16;
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
    /// Decodes one group at `p` (`valid` bytes of it exist when `P`).
    unsafe fn decode<const P: bool>(p: *const u8, valid: usize, w: &mut [__m512i; 4], ws: &mut __m512, we: &mut __m512);
    /// The natural-order index of the value at byte `b` of the group's vectors.
    fn elem(b: usize) -> usize;
    /// Weight offset subtracted through the correction (0 = none).
    const OFFSET: i32;
}

/// Legacy types: byte 16k + j of vector v holds value 32k + 16v + j (block k of the group), so
/// lane L belongs to block L / 4 in both vectors.
const fn legacy_elem(b: usize) -> usize {
    let v = b / 64;
    let k = (b % 64) / 16;
    let j = b % 16;
    32 * k + 16 * v + j
}

/// The 64 nibble bytes of 4 blocks of `bb` bytes with quants at offset `qo`, read from two
/// overlapping loads at 0 and `second`: the `vpermt2b` index.
const fn legacy_qidx(bb: usize, qo: usize, second: usize) -> [u8; 64] {
    let mut a = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        let s = bb * (i / 16) + qo + i % 16;
        a[i] = if s < 64 { s as u8 } else { (s - second + 64) as u8 };
        i += 1;
    }
    a
}

/// Word index (over two loads at 0 and `second`) of the f16 at byte `bb * k + off` for lanes
/// 4k..4k+3 (the rest 0).
const fn legacy_widx(bb: usize, off: usize, second: usize) -> [u16; 32] {
    let mut a = [0u16; 32];
    let mut i = 0;
    while i < 16 {
        let s = bb * (i / 4) + off;
        a[i] = if s + 2 <= 64 { (s / 2) as u16 } else { ((s - second) / 2 + 32) as u16 };
        i += 1;
    }
    a
}

struct Q4_0;
struct Q4_1;
struct Q5_0;
struct Q5_1;
struct Q8_0;
struct Q4K;
struct Q5K;
struct Q6K;

static Q4_0_QIDX: [u8; 64] = legacy_qidx(18, 2, 8);
static Q4_0_WIDX: [u16; 32] = legacy_widx(18, 0, 8);
static Q4_1_QIDX: [u8; 64] = legacy_qidx(20, 4, 16);
static Q4_1_DIDX: [u16; 32] = legacy_widx(20, 0, 16);
static Q4_1_MIDX: [u16; 32] = legacy_widx(20, 2, 16);
static Q5_0_QIDX: [u8; 64] = legacy_qidx(22, 6, 24);
static Q5_0_WIDX: [u16; 32] = legacy_widx(22, 0, 24);
static Q5_1_QIDX: [u8; 64] = legacy_qidx(24, 8, 32);
static Q5_1_DIDX: [u16; 32] = legacy_widx(24, 0, 32);
static Q5_1_MIDX: [u16; 32] = legacy_widx(24, 2, 32);
static Q8_0_IDX0: [u8; 64] = table8!(|i| 34 * (i / 16) + 2 + i % 16);
static Q8_0_IDX1: [u8; 64] = table8!(|i| 34 * (i / 16) + 18 + i % 16 - 8);
static Q8_0_WIDX: [u16; 32] = table16!(|i| if i < 16 { 17 * (i / 4) } else { 0 });

#[inline(always)]
unsafe fn nibbles(raw: __m512i) -> (__m512i, __m512i) {
    let m = _mm512_set1_epi8(0x0F);
    (_mm512_and_si512(raw, m), _mm512_and_si512(_mm512_srli_epi16(raw, 4), m))
}

#[inline(always)]
unsafe fn f16x16(words: __m512i) -> __m512 {
    _mm512_cvtph_ps(_mm512_castsi512_si256(words))
}

/// 5th bits of 4 legacy blocks at `p + bb*k + qh_off`: masks for vector 0 (bits 0..15 of each
/// block's qh) and vector 1 (bits 16..31).
#[inline(always)]
unsafe fn qh_masks(p: *const u8, bb: usize, qh_off: usize, n_blocks: usize) -> (u64, u64) {
    let (mut m0, mut m1) = (0u64, 0u64);
    for k in 0..n_blocks {
        let qh = rd_u32(p.add(bb * k + qh_off)) as u64;
        m0 |= (qh & 0xFFFF) << (16 * k);
        m1 |= (qh >> 16) << (16 * k);
    }
    (m0, m1)
}

impl Dec for Q4_0 {
    const NV: usize = 2;
    const GE: usize = 128;
    const GB: usize = 72;
    const BLOCK: usize = 32;
    const BB: usize = 18;
    const CORR: bool = true;
    const EXTRA: bool = false;
    const OFFSET: i32 = 8;
    #[inline(always)]
    unsafe fn decode<const P: bool>(p: *const u8, valid: usize, w: &mut [__m512i; 4], ws: &mut __m512, _we: &mut __m512) {
        let a = ld::<P>(p, 0, valid);
        let b = ld::<P>(p, 8, valid);
        let raw = _mm512_permutex2var_epi8(a, v8(&Q4_0_QIDX), b);
        (w[0], w[1]) = nibbles(raw);
        *ws = f16x16(_mm512_permutexvar_epi16(v16(&Q4_0_WIDX), a));
    }
    fn elem(b: usize) -> usize {
        legacy_elem(b)
    }
}

impl Dec for Q4_1 {
    const NV: usize = 2;
    const GE: usize = 128;
    const GB: usize = 80;
    const BLOCK: usize = 32;
    const BB: usize = 20;
    const CORR: bool = false;
    const EXTRA: bool = true;
    const OFFSET: i32 = 0;
    #[inline(always)]
    unsafe fn decode<const P: bool>(p: *const u8, valid: usize, w: &mut [__m512i; 4], ws: &mut __m512, we: &mut __m512) {
        let a = ld::<P>(p, 0, valid);
        let b = ld::<P>(p, 16, valid);
        let raw = _mm512_permutex2var_epi8(a, v8(&Q4_1_QIDX), b);
        (w[0], w[1]) = nibbles(raw);
        *ws = f16x16(_mm512_permutex2var_epi16(a, v16(&Q4_1_DIDX), b));
        *we = f16x16(_mm512_permutex2var_epi16(a, v16(&Q4_1_MIDX), b));
    }
    fn elem(b: usize) -> usize {
        legacy_elem(b)
    }
}

impl Dec for Q5_0 {
    const NV: usize = 2;
    const GE: usize = 128;
    const GB: usize = 88;
    const BLOCK: usize = 32;
    const BB: usize = 22;
    const CORR: bool = true;
    const EXTRA: bool = false;
    const OFFSET: i32 = 16;
    #[inline(always)]
    unsafe fn decode<const P: bool>(p: *const u8, valid: usize, w: &mut [__m512i; 4], ws: &mut __m512, _we: &mut __m512) {
        let a = ld::<P>(p, 0, valid);
        let b = ld::<P>(p, 24, valid);
        let raw = _mm512_permutex2var_epi8(a, v8(&Q5_0_QIDX), b);
        let (lo, hi) = nibbles(raw);
        let (m0, m1) = qh_masks(p, 22, 2, if P { valid / 22 } else { 4 });
        let c = _mm512_set1_epi8(0x10);
        w[0] = _mm512_mask_add_epi8(lo, m0, lo, c);
        w[1] = _mm512_mask_add_epi8(hi, m1, hi, c);
        *ws = f16x16(_mm512_permutex2var_epi16(a, v16(&Q5_0_WIDX), b));
    }
    fn elem(b: usize) -> usize {
        legacy_elem(b)
    }
}

impl Dec for Q5_1 {
    const NV: usize = 2;
    const GE: usize = 128;
    const GB: usize = 96;
    const BLOCK: usize = 32;
    const BB: usize = 24;
    const CORR: bool = false;
    const EXTRA: bool = true;
    const OFFSET: i32 = 0;
    #[inline(always)]
    unsafe fn decode<const P: bool>(p: *const u8, valid: usize, w: &mut [__m512i; 4], ws: &mut __m512, we: &mut __m512) {
        let a = ld::<P>(p, 0, valid);
        let b = ld::<P>(p, 32, valid);
        let raw = _mm512_permutex2var_epi8(a, v8(&Q5_1_QIDX), b);
        let (lo, hi) = nibbles(raw);
        let (m0, m1) = qh_masks(p, 24, 4, if P { valid / 24 } else { 4 });
        let c = _mm512_set1_epi8(0x10);
        w[0] = _mm512_mask_add_epi8(lo, m0, lo, c);
        w[1] = _mm512_mask_add_epi8(hi, m1, hi, c);
        *ws = f16x16(_mm512_permutex2var_epi16(a, v16(&Q5_1_DIDX), b));
        *we = f16x16(_mm512_permutex2var_epi16(a, v16(&Q5_1_MIDX), b));
    }
    fn elem(b: usize) -> usize {
        legacy_elem(b)
    }
}

impl Dec for Q8_0 {
    const NV: usize = 2;
    const GE: usize = 128;
    const GB: usize = 136;
    const BLOCK: usize = 32;
    const BB: usize = 34;
    const CORR: bool = true;
    const EXTRA: bool = false;
    const OFFSET: i32 = 128;
    #[inline(always)]
    unsafe fn decode<const P: bool>(p: *const u8, valid: usize, w: &mut [__m512i; 4], ws: &mut __m512, _we: &mut __m512) {
        let a = ld::<P>(p, 0, valid);
        let b = ld::<P>(p, 64, valid);
        let a2 = ld::<P>(p, 8, valid);
        let b2 = ld::<P>(p, 72, valid);
        let x80 = _mm512_set1_epi8(-128);
        w[0] = _mm512_xor_si512(_mm512_permutex2var_epi8(a, v8(&Q8_0_IDX0), b), x80);
        w[1] = _mm512_xor_si512(_mm512_permutex2var_epi8(a2, v8(&Q8_0_IDX1), b2), x80);
        *ws = f16x16(_mm512_permutex2var_epi16(a, v16(&Q8_0_WIDX), b));
    }
    fn elem(b: usize) -> usize {
        legacy_elem(b)
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

#[inline(always)]
unsafe fn k4_scales(p: *const u8, ws: &mut __m512, we: &mut __m512) {
    let d = rd_f16(p);
    let dmin = rd_f16(p.add(2));
    let sc = std::slice::from_raw_parts(p.add(4), 12);
    let (s, m) = super::generic::k4_scales_mins(sc);
    let v = _mm_set_epi64x(i64::from_le_bytes(m), i64::from_le_bytes(s));
    let sd = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(v, v)));
    let md = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi8(v, v)));
    *ws = _mm512_mul_ps(sd, _mm512_set1_ps(d));
    *we = _mm512_mul_ps(md, _mm512_set1_ps(-dmin));
}

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
    unsafe fn decode<const P: bool>(p: *const u8, _valid: usize, w: &mut [__m512i; 4], ws: &mut __m512, we: &mut __m512) {
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
    unsafe fn decode<const P: bool>(p: *const u8, _valid: usize, w: &mut [__m512i; 4], ws: &mut __m512, we: &mut __m512) {
        let q0 = _mm512_loadu_si512(p.add(48) as *const _);
        let q1 = _mm512_loadu_si512(p.add(112) as *const _);
        let qh = _mm512_zextsi256_si512(_mm256_loadu_si256(p.add(16) as *const _));
        let m = _mm512_set1_epi8(0x0F);
        let b4 = _mm512_set1_epi8(0x10);
        for v in 0..4 {
            let lo = k4_lo(q0, q1, v);
            let hb = _mm512_and_si512(_mm512_rolv_epi32(_mm512_permutexvar_epi32(v32(&K5_HIDX[v]), qh), v32(&K5_ROT)), b4);
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
    unsafe fn decode<const P: bool>(p: *const u8, _valid: usize, w: &mut [__m512i; 4], ws: &mut __m512, _we: &mut __m512) {
        let q0 = _mm512_loadu_si512(p as *const _);
        let q1 = _mm512_loadu_si512(p.add(64) as *const _);
        let qh = _mm512_loadu_si512(p.add(128) as *const _);
        let m = _mm512_set1_epi8(0x0F);
        let b45 = _mm512_set1_epi8(0x30);
        for v in 0..4 {
            let lo = _mm512_srlv_epi32(_mm512_permutex2var_epi32(q0, v32(&K6_QIDX[v]), q1), v32(&K6_SHIFT));
            let hb = _mm512_and_si512(_mm512_rolv_epi32(_mm512_permutexvar_epi32(v32(&K6_HIDX[v]), qh), v32(&K6_ROT)), b45);
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

/// Record of group g: `[q: NV*64][corr: i32 x16 if CORR][xs: f32 x16][xe: f32 x16 if EXTRA]`.
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
                let c = if D::GE == 256 {
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
            let xs = if D::GE == 256 {
                a.d[g]
            } else {
                let blk = 4 * g + l / 4;
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
                let xe = if D::GE == 256 {
                    a.d[g] * a.sums[16 * g + l] as f32
                } else {
                    let blk = 4 * g + l / 4;
                    if blk < a.s.len() {
                        a.s[blk] * 0.25
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

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
unsafe fn tile_q<D: Dec, const RM: usize, const RN: usize>(a: &TileArgs) {
    let n_groups = a.n_cols.div_ceil(D::GE);
    let full = a.n_cols / D::GE;
    let mut acc = [[_mm512_setzero_ps(); RN]; RM];
    for g in 0..n_groups {
        let mut wv = [[_mm512_setzero_si512(); 4]; RM];
        let mut ws = [_mm512_setzero_ps(); RM];
        let mut we = [_mm512_setzero_ps(); RM];
        if g < full {
            for r in 0..RM {
                D::decode::<false>(a.w.add(r * a.row_bytes + g * D::GB), D::GB, &mut wv[r], &mut ws[r], &mut we[r]);
            }
        } else {
            let valid = (a.n_cols - g * D::GE) / D::BLOCK * D::BB;
            for r in 0..RM {
                D::decode::<true>(a.w.add(r * a.row_bytes + g * D::GB), valid, &mut wv[r], &mut ws[r], &mut we[r]);
            }
        }
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
                let f = _mm512_mul_ps(_mm512_cvtepi32_ps(is), ws[r]);
                let mut s = _mm512_fmadd_ps(f, xs, acc[r][t]);
                if D::EXTRA {
                    s = _mm512_fmadd_ps(we[r], xe, s);
                }
                acc[r][t] = s;
            }
        }
    }
    store_tile(a, &acc);
}

tile_dispatch!(tile_q4_0, tile_q::<Q4_0>, 2, 8);
tile_dispatch!(tile_q4_1, tile_q::<Q4_1>, 2, 8);
tile_dispatch!(tile_q5_0, tile_q::<Q5_0>, 2, 8);
tile_dispatch!(tile_q5_1, tile_q::<Q5_1>, 2, 8);
tile_dispatch!(tile_q8_0, tile_q::<Q8_0>, 2, 8);
tile_dispatch!(tile_q4_k, tile_q::<Q4K>, 2, 8);
tile_dispatch!(tile_q5_k, tile_q::<Q5K>, 2, 8);
tile_dispatch!(tile_q6_k, tile_q::<Q6K>, 2, 8);

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
        _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p.add(2 * i) as *const i16)), 16))
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn tile_fl<W: FW, const RM: usize, const RN: usize>(a: &TileArgs) {
    let n = a.n_cols;
    let mut acc = [[_mm512_setzero_ps(); RN]; RM];
    let rows: [*const u8; RM] = std::array::from_fn(|r| a.w.add(r * a.row_bytes));
    let xs: [*const f32; RN] = std::array::from_fn(|t| a.act.add(t * a.act_stride) as *const f32);
    let mut i = 0;
    while i + 16 <= n {
        let wv: [__m512; RM] = std::array::from_fn(|r| W::load(rows[r], i));
        for t in 0..RN {
            let xv = _mm512_loadu_ps(xs[t].add(i));
            for r in 0..RM {
                acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
            }
        }
        i += 16;
    }
    if i < n {
        let m: __mmask16 = ((1u32 << (n - i)) - 1) as __mmask16;
        let wv: [__m512; RM] = std::array::from_fn(|r| W::load_n(rows[r], i, m));
        for t in 0..RN {
            let xv = _mm512_maskz_loadu_ps(m, xs[t].add(i));
            for r in 0..RM {
                acc[r][t] = _mm512_fmadd_ps(wv[r], xv, acc[r][t]);
            }
        }
    }
    let _ = W::SIZE;
    store_tile(a, &acc);
}

tile_dispatch!(tile_f32, tile_fl::<WF32>, 4, 6);
tile_dispatch!(tile_f16, tile_fl::<WF16>, 4, 6);
tile_dispatch!(tile_bf16, tile_fl::<WBF16>, 4, 6);

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

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")]
    unsafe fn decode_tf<D: Dec>(p: *const u8, w: &mut [__m512i; 4], ws: &mut __m512, we: &mut __m512) {
        D::decode::<false>(p, D::GB, w, ws, we)
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
