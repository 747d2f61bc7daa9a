#![allow(clippy::needless_range_loop)] // register-array loops index by constant positions on purpose
//! AVX2 + FMA + F16C kernels (Haswell, Zen 1 and later).
//!
//! Quantized types keep ggml's natural value order: a legacy block is one vector of 32 bytes, a
//! k-quant super-block 8 vectors (one per 32 values). Products go through `vpmaddubsw` (unsigned
//! weight bytes × signed activation bytes → pairs of i16) and `vpmaddwd` (× 1, or × the
//! sub-block's scale for k-quants, → i32), summed as integers over the block or super-block. Q8_0
//! weights use the sign trick (`|w|` × `sign(x, w)`); Q4_0/Q5_0 start the integer sum at
//! `-offset · Σx` per lane from the activation record, Q6_K subtracts `32 · Σ scale·bsum`.
//!
//! Float types: register tile of `RM × RN` outputs, two accumulators of 8 each (the canonical 16
//! lanes), scalar tail.
//!
//! Everything in the canonical order of `super` (bit-identical to the scalar path and wasm): no
//! FMA, whatever the `fma` feature this module is compiled with.

use super::actq::NatAct;
use super::{tile_dispatch, ActKind, FKernel, Kernel, QKernel, TileArgs};
use crate::gguf::GgmlType;
use std::arch::x86_64::*;

pub(crate) fn available() -> bool {
    super::actq::avx2_ok()
}

pub(crate) fn kernel(ty: GgmlType) -> Option<Kernel> {
    if !available() {
        return None;
    }
    macro_rules! q {
        ($d:ty, $act:expr, $tile:ident) => {
            Kernel::Quant(QKernel {
                act: $act,
                group: <$d>::GE,
                rec_bytes: <$d>::RB,
                pack: <$d>::pack,
                tile: $tile,
                rm: QRM,
                rn: QRN,
                pre: None,
            })
        };
    }
    Some(match ty {
        GgmlType::F32 => Kernel::Float(FKernel { tile: tile_f32, rm: FRM, rn: FRN, pre: None }),
        GgmlType::F16 => Kernel::Float(FKernel { tile: tile_f16, rm: FRM, rn: FRN, pre: None }),
        GgmlType::BF16 => Kernel::Float(FKernel { tile: tile_bf16, rm: FRM, rn: FRN, pre: None }),
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

const FRM: usize = 2;
const FRN: usize = 3;
const QRM: usize = 2;
const QRN: usize = 4;

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
    _mm_cvtss_f32(s1)
}

/// An f16 at `p` to f32 with F16C (exact, like `f16_to_f32`).
#[inline(always)]
unsafe fn rd_f16(p: *const u8) -> f32 {
    let h = u16::from_le(std::ptr::read_unaligned(p as *const u16));
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
}

/// Software prefetch distance (bytes ahead in the weight rows); into L2 (`prefetcht1`), as on
/// AVX-512 (see `x86_avx512::PREFETCH`).
const PREFETCH: usize = 8192;

/// Prefetches the lines `PREFETCH` bytes after the `n` bytes at `p`; for blocks shorter than a
/// line only the block that starts a line issues one (one prefetch per line).
#[inline(always)]
unsafe fn prefetch_span(p: *const u8, n: usize) {
    if n < 64 {
        if (p as usize) % 64 < n {
            _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(PREFETCH) as *const i8);
        }
        return;
    }
    let mut o = 0;
    while o < n {
        _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(o + PREFETCH) as *const i8);
        o += 64;
    }
}

#[inline(always)]
unsafe fn rd_f32(p: *const u8) -> f32 {
    f32::from_le_bytes(std::ptr::read_unaligned(p as *const [u8; 4]))
}

/// 16 nibble bytes -> 32 bytes: low nibbles then high nibbles (ggml's value order of a block).
#[inline(always)]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    let q = _mm_loadu_si128(p as *const _);
    let both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// The 32 bits of `qh` as 32 bytes, 0x10 where the bit is set.
#[inline(always)]
unsafe fn bits32(qh: u32) -> __m256i {
    let shuf = _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303);
    let v = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), shuf);
    let bitmask = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(v, bitmask), bitmask);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Activation record layouts.
/// Legacy (96 bytes per block): `[q: 32][corr: i32 x8][d: f32][s: f32 (Q8_1)][pad]`.
/// K (320 bytes per super-block): `[q: 256][bsums: i16 x16][d: f32][pad]`.
const LEG_RB: usize = 96;
pub(super) const K_RB: usize = 320;

fn pack_legacy(a: &NatAct, dst: &mut [u8], offset: i32, extra: bool) {
    for b in 0..a.n / 32 {
        let rec = &mut dst[b * LEG_RB..(b + 1) * LEG_RB];
        for j in 0..32 {
            rec[j] = a.q[32 * b + j] as u8;
        }
        for l in 0..8 {
            let s: i32 = a.q[32 * b + 4 * l..32 * b + 4 * l + 4].iter().map(|&v| v as i32).sum();
            rec[32 + 4 * l..36 + 4 * l].copy_from_slice(&(-offset * s).to_le_bytes());
        }
        rec[64..68].copy_from_slice(&a.d[b].to_le_bytes());
        let xe = if extra { a.s[b] } else { 0.0 };
        rec[68..72].copy_from_slice(&xe.to_le_bytes());
    }
}

pub(super) fn pack_k(a: &NatAct, dst: &mut [u8]) {
    for b in 0..a.n / 256 {
        let rec = &mut dst[b * K_RB..(b + 1) * K_RB];
        for j in 0..256 {
            rec[j] = a.q[256 * b + j] as u8;
        }
        for j in 0..16 {
            rec[256 + 2 * j..258 + 2 * j].copy_from_slice(&(a.sums[16 * b + j] as i16).to_le_bytes());
        }
        rec[288..292].copy_from_slice(&a.d[b].to_le_bytes());
    }
}

pub(super) trait Dec2 {
    const GE: usize;
    const GB: usize;
    const RB: usize;
    type W: Copy;
    /// k-quant (one running sum) rather than legacy (8 block lanes); with mins (Q4_K, Q5_K) or
    /// Q4_1/Q5_1's `m·s` term.
    const K: bool;
    const EXTRA: bool;
    unsafe fn decode(p: *const u8) -> Self::W;
    /// The (weight group, activation record) pair's exact integers, as 8 i32 lanes to be summed:
    /// `I` (Σ scale·q·x, offsets included) and, with `EXTRA` on k-quants, `M` (Σ min·bsum).
    unsafe fn ipair(w: &Self::W, rec: *const u8) -> (__m256i, __m256i);
    /// The weight group's scale and min (`d`, `dmin` or `m`).
    fn scales(w: &Self::W) -> (f32, f32);
    fn pack(a: &NatAct, dst: &mut [u8]);
}

#[derive(Clone, Copy)]
struct LegW {
    q: __m256i,
    d: f32,
    m: f32,
}

#[inline(always)]
unsafe fn leg_int(q: __m256i, x: __m256i, start: __m256i) -> (__m256i, __m256i) {
    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(1));
    (_mm256_add_epi32(p, start), _mm256_setzero_si256())
}

struct Q4_0;
struct Q4_1;
struct Q5_0;
struct Q5_1;
struct Q8_0;
pub(super) struct Q4K;
pub(super) struct Q5K;
pub(super) struct Q6K;

impl Dec2 for Q4_0 {
    const GE: usize = 32;
    const GB: usize = 18;
    const RB: usize = LEG_RB;
    type W = LegW;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> LegW {
        LegW { q: nibbles32(p.add(2)), d: rd_f16(p), m: 0.0 }
    }
    const K: bool = false;
    const EXTRA: bool = false;
    #[inline(always)]
    unsafe fn ipair(w: &LegW, rec: *const u8) -> (__m256i, __m256i) {
        let x = _mm256_load_si256(rec as *const _);
        leg_int(w.q, x, _mm256_load_si256(rec.add(32) as *const _))
    }
    fn scales(w: &LegW) -> (f32, f32) {
        (w.d, w.m)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_legacy(a, dst, 8, false)
    }
}

impl Dec2 for Q5_0 {
    const GE: usize = 32;
    const GB: usize = 22;
    const RB: usize = LEG_RB;
    type W = LegW;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> LegW {
        let qh = u32::from_le_bytes(std::ptr::read_unaligned(p.add(2) as *const [u8; 4]));
        LegW { q: _mm256_or_si256(nibbles32(p.add(6)), bits32(qh)), d: rd_f16(p), m: 0.0 }
    }
    const K: bool = false;
    const EXTRA: bool = false;
    #[inline(always)]
    unsafe fn ipair(w: &LegW, rec: *const u8) -> (__m256i, __m256i) {
        let x = _mm256_load_si256(rec as *const _);
        leg_int(w.q, x, _mm256_load_si256(rec.add(32) as *const _))
    }
    fn scales(w: &LegW) -> (f32, f32) {
        (w.d, w.m)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_legacy(a, dst, 16, false)
    }
}

impl Dec2 for Q4_1 {
    const GE: usize = 32;
    const GB: usize = 20;
    const RB: usize = LEG_RB;
    type W = LegW;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> LegW {
        LegW { q: nibbles32(p.add(4)), d: rd_f16(p), m: rd_f16(p.add(2)) }
    }
    const K: bool = false;
    const EXTRA: bool = true;
    #[inline(always)]
    unsafe fn ipair(w: &LegW, rec: *const u8) -> (__m256i, __m256i) {
        let x = _mm256_load_si256(rec as *const _);
        leg_int(w.q, x, _mm256_setzero_si256())
    }
    fn scales(w: &LegW) -> (f32, f32) {
        (w.d, w.m)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_legacy(a, dst, 0, true)
    }
}

impl Dec2 for Q5_1 {
    const GE: usize = 32;
    const GB: usize = 24;
    const RB: usize = LEG_RB;
    type W = LegW;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> LegW {
        let qh = u32::from_le_bytes(std::ptr::read_unaligned(p.add(4) as *const [u8; 4]));
        LegW { q: _mm256_or_si256(nibbles32(p.add(8)), bits32(qh)), d: rd_f16(p), m: rd_f16(p.add(2)) }
    }
    const K: bool = false;
    const EXTRA: bool = true;
    #[inline(always)]
    unsafe fn ipair(w: &LegW, rec: *const u8) -> (__m256i, __m256i) {
        let x = _mm256_load_si256(rec as *const _);
        leg_int(w.q, x, _mm256_setzero_si256())
    }
    fn scales(w: &LegW) -> (f32, f32) {
        (w.d, w.m)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_legacy(a, dst, 0, true)
    }
}

#[derive(Clone, Copy)]
struct Q8W {
    q: __m256i,
    aq: __m256i,
    d: f32,
}

impl Dec2 for Q8_0 {
    const GE: usize = 32;
    const GB: usize = 34;
    const RB: usize = LEG_RB;
    type W = Q8W;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> Q8W {
        let q = _mm256_loadu_si256(p.add(2) as *const _);
        Q8W { q, aq: _mm256_sign_epi8(q, q), d: rd_f16(p) }
    }
    const K: bool = false;
    const EXTRA: bool = false;
    #[inline(always)]
    unsafe fn ipair(w: &Q8W, rec: *const u8) -> (__m256i, __m256i) {
        let x = _mm256_sign_epi8(_mm256_load_si256(rec as *const _), w.q);
        leg_int(w.aq, x, _mm256_setzero_si256())
    }
    fn scales(w: &Q8W) -> (f32, f32) {
        (w.d, 0.0)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_legacy(a, dst, 0, false)
    }
}

#[derive(Clone, Copy)]
pub(super) struct KW {
    /// Weight bytes, values 32v..32v+31 in vector v.
    pub q: [__m256i; 8],
    /// i16 scales against `q[v]`'s `vpmaddubsw` pairs.
    pub sc: [__m256i; 8],
    /// Q4_K/Q5_K: mins as 16 i16 (m[j/2]); Q6_K: the 16 scales as i16.
    pub m16: __m256i,
    pub d: f32,
    pub dmin: f32,
}

/// Q4_K/Q5_K scales and mins (ggml's `utmp` unpacking): the scale of sub-block v as an i16
/// broadcast (for `vpmaddwd`), the mins as 16 i16 (`m[j/2]`, against the 16 bsums).
#[inline(always)]
unsafe fn k4_common(p: *const u8, q: [__m256i; 8]) -> KW {
    let u = std::ptr::read_unaligned(p.add(4) as *const [u32; 3]);
    let (u0, u1, u2) = (u32::from_le(u[0]), u32::from_le(u[1]), u32::from_le(u[2]));
    const KM1: u32 = 0x3f3f_3f3f;
    const KM2: u32 = 0x0f0f_0f0f;
    const KM3: u32 = 0x0303_0303;
    let m_hi = ((u2 >> 4) & KM2) | (((u1 >> 6) & KM3) << 4);
    let m_lo = u1 & KM1;
    let s_hi = (u2 & KM2) | (((u0 >> 6) & KM3) << 4);
    let s_lo = u0 & KM1;
    // bytes: scales 0..7 then mins 0..7, widened to i16
    let sm = _mm256_cvtepu8_epi16(_mm_set_epi32(m_hi as i32, m_lo as i32, s_hi as i32, s_lo as i32));
    let sc128 = _mm256_castsi256_si128(sm);
    let scales = _mm256_set_m128i(sc128, sc128);
    let mut scv = [_mm256_setzero_si256(); 8];
    for v in 0..8 {
        // i16 lane v (bytes 2v, 2v+1) everywhere
        let b = (2 * v) as i8;
        scv[v] = _mm256_shuffle_epi8(scales, _mm256_set1_epi16(((b as i16 + 1) << 8) | b as i16));
    }
    let mins = _mm256_extracti128_si256(sm, 1);
    let m16 = _mm256_set_m128i(_mm_unpackhi_epi16(mins, mins), _mm_unpacklo_epi16(mins, mins));
    let dd = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(p as *const i32)));
    KW { q, sc: scv, m16, d: _mm_cvtss_f32(dd), dmin: _mm_cvtss_f32(_mm_movehdup_ps(dd)) }
}

#[inline(always)]
unsafe fn k4_int(w: &KW, rec: *const u8) -> (__m256i, __m256i) {
    let mut is = _mm256_setzero_si256();
    for v in 0..8 {
        let x = _mm256_load_si256(rec.add(32 * v) as *const _);
        is = _mm256_add_epi32(is, _mm256_madd_epi16(_mm256_maddubs_epi16(w.q[v], x), w.sc[v]));
    }
    let bs = _mm256_load_si256(rec.add(256) as *const _);
    (is, _mm256_madd_epi16(w.m16, bs))
}

impl Dec2 for Q4K {
    const GE: usize = 256;
    const GB: usize = 144;
    const RB: usize = K_RB;
    type W = KW;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> KW {
        let m = _mm256_set1_epi8(0x0F);
        let mut q = [_mm256_setzero_si256(); 8];
        for c in 0..4 {
            let raw = _mm256_loadu_si256(p.add(16 + 32 * c) as *const _);
            q[2 * c] = _mm256_and_si256(raw, m);
            q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), m);
        }
        k4_common(p, q)
    }
    const K: bool = true;
    const EXTRA: bool = true;
    #[inline(always)]
    unsafe fn ipair(w: &KW, rec: *const u8) -> (__m256i, __m256i) {
        k4_int(w, rec)
    }
    fn scales(w: &KW) -> (f32, f32) {
        (w.d, w.dmin)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_k(a, dst)
    }
}

impl Dec2 for Q5K {
    const GE: usize = 256;
    const GB: usize = 176;
    const RB: usize = K_RB;
    type W = KW;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> KW {
        let m = _mm256_set1_epi8(0x0F);
        let one = _mm256_set1_epi8(1);
        let qh = _mm256_loadu_si256(p.add(16) as *const _);
        let mut q = [_mm256_setzero_si256(); 8];
        for c in 0..4 {
            let raw = _mm256_loadu_si256(p.add(48 + 32 * c) as *const _);
            let h0 =
                _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128((2 * c) as i32)), one), 4);
            let h1 = _mm256_slli_epi16(
                _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128((2 * c + 1) as i32)), one),
                4,
            );
            q[2 * c] = _mm256_or_si256(_mm256_and_si256(raw, m), h0);
            q[2 * c + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(raw, 4), m), h1);
        }
        k4_common(p, q)
    }
    const K: bool = true;
    const EXTRA: bool = true;
    #[inline(always)]
    unsafe fn ipair(w: &KW, rec: *const u8) -> (__m256i, __m256i) {
        k4_int(w, rec)
    }
    fn scales(w: &KW) -> (f32, f32) {
        (w.d, w.dmin)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_k(a, dst)
    }
}

impl Dec2 for Q6K {
    const GE: usize = 256;
    const GB: usize = 210;
    const RB: usize = K_RB;
    type W = KW;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> KW {
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(0x03);
        let mut q = [_mm256_setzero_si256(); 8];
        for h in 0..2 {
            let ql0 = _mm256_loadu_si256(p.add(64 * h) as *const _);
            let ql1 = _mm256_loadu_si256(p.add(64 * h + 32) as *const _);
            let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const _);
            let hb = |s: i32| _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(s)), m2), 4);
            q[4 * h] = _mm256_or_si256(_mm256_and_si256(ql0, m4), hb(0));
            q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(ql1, m4), hb(2));
            q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), hb(4));
            q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), hb(6));
        }
        let scales = _mm_loadu_si128(p.add(192) as *const _);
        let mut sc = [_mm256_setzero_si256(); 8];
        for k in 0..8 {
            let lo = (2 * k) as i8;
            let hi = (2 * k + 1) as i8;
            let shuf = _mm_setr_epi8(lo, lo, lo, lo, lo, lo, lo, lo, hi, hi, hi, hi, hi, hi, hi, hi);
            sc[k] = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, shuf));
        }
        KW { q, sc, m16: _mm256_cvtepi8_epi16(scales), d: rd_f16(p.add(208)), dmin: 0.0 }
    }
    const K: bool = true;
    const EXTRA: bool = false;
    #[inline(always)]
    unsafe fn ipair(w: &KW, rec: *const u8) -> (__m256i, __m256i) {
        let mut is = _mm256_setzero_si256();
        for v in 0..8 {
            let x = _mm256_load_si256(rec.add(32 * v) as *const _);
            is = _mm256_add_epi32(is, _mm256_madd_epi16(_mm256_maddubs_epi16(w.q[v], x), w.sc[v]));
        }
        let bs = _mm256_load_si256(rec.add(256) as *const _);
        let corr = _mm256_slli_epi32(_mm256_madd_epi16(w.m16, bs), 5);
        (_mm256_sub_epi32(is, corr), _mm256_setzero_si256())
    }
    fn scales(w: &KW) -> (f32, f32) {
        (w.d, 0.0)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_k(a, dst)
    }
}

/// The 8 horizontal sums of 8 i32x8 vectors at once (exact): lane o of the result is Σ `v[o]`.
#[inline(always)]
unsafe fn tsum8(v: &[__m256i; 8]) -> __m256i {
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    let a = _mm256_hadd_epi32(h01, h23);
    let b = _mm256_hadd_epi32(h45, h67);
    _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(a, b), _mm256_permute2x128_si256::<0x31>(a, b))
}

/// Quantized tile in the canonical order (module docs of `super`): per group, the exact integers
/// of the tile's (up to 8) outputs are summed horizontally into one vector (lane o = output
/// `t·RM + r`), and the float steps run on that vector: `lane_k + (f32(I)·d_w)·d_x` (+ `m_w·s_x`)
/// into block lane k = group mod 8 for legacy types, `acc + (f32(I)·d)·d_x − (f32(M)·dmin)·d_x`
/// for k-quants. No FMA: the same bits as the scalar path and wasm.
///
/// Defined by `def_tile_q!` for a set of target features: `tile_q` here, and `tile_q_avx512` for
/// the AVX-512 k-quant kernels of `super::x86_avx512`, whose 512-bit integer products (`D::ipair`)
/// must be inlined into a function compiled for AVX-512.
macro_rules! def_tile_q {
    ($name:ident, $feat:literal) => {
        #[target_feature(enable = $feat)]
        pub(super) unsafe fn $name<D: Dec2, const RM: usize, const RN: usize>(a: &TileArgs) {
            let n_groups = a.n_cols / D::GE;
            let mut lanes = [_mm256_setzero_ps(); 8];
            for g in 0..n_groups {
                let mut iv = [_mm256_setzero_si256(); 8];
                let mut mv = [_mm256_setzero_si256(); 8];
                let mut dw = [0f32; 8];
                let mut mw = [0f32; 8];
                let mut dx = [0f32; 8];
                let mut sx = [0f32; 8];
                // Row by row: a row's decoded group is used for every token and dropped, so no more
                // than one decoded group is live (8 rows of k-quant groups would not fit in the
                // vector registers).
                for r in 0..RM {
                    let p = a.w.add(r * a.row_bytes + g * D::GB);
                    if a.prefetch {
                        prefetch_span(p, D::GB);
                    }
                    let w = D::decode(p);
                    let (d, m2) = D::scales(&w);
                    for t in 0..RN {
                        let rec = a.act.add(t * a.act_stride + g * D::RB);
                        let o = t * RM + r;
                        let (i, m) = D::ipair(&w, rec);
                        iv[o] = i;
                        mv[o] = m;
                        dw[o] = d;
                        mw[o] = m2;
                        if D::K {
                            dx[o] = rd_f32(rec.add(288));
                        } else {
                            dx[o] = rd_f32(rec.add(64));
                            sx[o] = rd_f32(rec.add(68));
                        }
                    }
                }
                let dxv = _mm256_loadu_ps(dx.as_ptr());
                let f = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(tsum8(&iv)), _mm256_loadu_ps(dw.as_ptr())), dxv);
                if D::K {
                    let mut acc = _mm256_add_ps(lanes[0], f);
                    if D::EXTRA {
                        let m = _mm256_mul_ps(
                            _mm256_mul_ps(_mm256_cvtepi32_ps(tsum8(&mv)), _mm256_loadu_ps(mw.as_ptr())),
                            dxv,
                        );
                        acc = _mm256_sub_ps(acc, m);
                    }
                    lanes[0] = acc;
                } else {
                    let k = g % 8;
                    let mut acc = _mm256_add_ps(lanes[k], f);
                    if D::EXTRA {
                        acc = _mm256_add_ps(
                            acc,
                            _mm256_mul_ps(_mm256_loadu_ps(mw.as_ptr()), _mm256_loadu_ps(sx.as_ptr())),
                        );
                    }
                    lanes[k] = acc;
                }
            }
            let res = if D::K {
                lanes[0]
            } else {
                let s4 = [
                    _mm256_add_ps(lanes[0], lanes[4]),
                    _mm256_add_ps(lanes[1], lanes[5]),
                    _mm256_add_ps(lanes[2], lanes[6]),
                    _mm256_add_ps(lanes[3], lanes[7]),
                ];
                _mm256_add_ps(_mm256_add_ps(s4[0], s4[2]), _mm256_add_ps(s4[1], s4[3]))
            };
            let mut outv = [0f32; 8];
            _mm256_storeu_ps(outv.as_mut_ptr(), res);
            for t in 0..RN {
                for r in 0..RM {
                    *a.out.add(t * a.out_stride + r) = outv[t * RM + r];
                }
            }
        }
    };
}
def_tile_q!(tile_q, "avx2,fma,f16c");
def_tile_q!(tile_q_avx512, "avx512f,avx512bw,avx2,fma,f16c");

/// Tiles of up to 2 rows × 4 tokens, or up to 8 rows of a single token (matrix-vector products:
/// the 8 lanes of the float steps filled with 8 outputs). The same per-output arithmetic either way.
macro_rules! tile_q_dispatch {
    ($name:ident, $d:ty) => {
        tile_q_dispatch!($name, $d, tile_q);
    };
    ($name:ident, $d:ty, $tile:ident) => {
        pub(super) unsafe fn $name(rows: usize, rn: usize, a: &TileArgs) {
            tile_dispatch!(inner, $tile::<$d>, 2, 4);
            if rn != 1 {
                return inner(rows, rn, a);
            }
            let mut r = 0;
            while r < rows {
                let m = (rows - r).min(8);
                let sub = TileArgs { w: a.w.add(r * a.row_bytes), out: a.out.add(r), ..*a };
                match m {
                    1 => $tile::<$d, 1, 1>(&sub),
                    2 => $tile::<$d, 2, 1>(&sub),
                    3 => $tile::<$d, 3, 1>(&sub),
                    4 => $tile::<$d, 4, 1>(&sub),
                    5 => $tile::<$d, 5, 1>(&sub),
                    6 => $tile::<$d, 6, 1>(&sub),
                    7 => $tile::<$d, 7, 1>(&sub),
                    _ => $tile::<$d, 8, 1>(&sub),
                }
                r += m;
            }
        }
    };
}

pub(super) use tile_q_dispatch;

tile_q_dispatch!(tile_q4_0, Q4_0);
tile_q_dispatch!(tile_q4_1, Q4_1);
tile_q_dispatch!(tile_q5_0, Q5_0);
tile_q_dispatch!(tile_q5_1, Q5_1);
tile_q_dispatch!(tile_q8_0, Q8_0);
tile_q_dispatch!(tile_q4_k, Q4K);
tile_q_dispatch!(tile_q5_k, Q5K);
tile_q_dispatch!(tile_q6_k, Q6K);

trait FW {
    const SIZE: usize;
    unsafe fn load(p: *const u8, i: usize) -> __m256;
    fn scalar(p: *const u8, i: usize) -> f32;
}
struct WF32;
struct WF16;
struct WBF16;
impl FW for WF32 {
    const SIZE: usize = 4;
    #[inline(always)]
    unsafe fn load(p: *const u8, i: usize) -> __m256 {
        _mm256_loadu_ps((p as *const f32).add(i))
    }
    #[inline(always)]
    fn scalar(p: *const u8, i: usize) -> f32 {
        unsafe { std::ptr::read_unaligned((p as *const f32).add(i)) }
    }
}
impl FW for WF16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load(p: *const u8, i: usize) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p.add(2 * i) as *const _))
    }
    #[inline(always)]
    fn scalar(p: *const u8, i: usize) -> f32 {
        unsafe { rd_f16(p.add(2 * i)) }
    }
}
impl FW for WBF16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load(p: *const u8, i: usize) -> __m256 {
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p.add(2 * i) as *const _)), 16))
    }
    #[inline(always)]
    fn scalar(p: *const u8, i: usize) -> f32 {
        let h = unsafe { std::ptr::read_unaligned(p.add(2 * i) as *const u16) };
        f32::from_bits((u16::from_le(h) as u32) << 16)
    }
}

/// Float tile in the canonical order of `ops::canon_sum`: element `16k + l` into lane l (two
/// accumulators of 8 per output), the lanes added as a halving tree, then the leftover elements
/// one by one; nothing fused.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_fl<W: FW, const RM: usize, const RN: usize>(a: &TileArgs) {
    let n = a.n_cols;
    let mut acc0 = [[_mm256_setzero_ps(); RN]; RM];
    let mut acc1 = [[_mm256_setzero_ps(); RN]; RM];
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
        let mut w0 = [_mm256_setzero_ps(); RM];
        let mut w1 = [_mm256_setzero_ps(); RM];
        for r in 0..RM {
            w0[r] = W::load(rows[r], i);
            w1[r] = W::load(rows[r], i + 8);
        }
        if a.prefetch {
            for r in 0..RM {
                _mm_prefetch::<_MM_HINT_T1>(rows[r].wrapping_add(i * W::SIZE + PREFETCH) as *const i8);
                if W::SIZE == 4 {
                    _mm_prefetch::<_MM_HINT_T1>(rows[r].wrapping_add(i * W::SIZE + 32 + PREFETCH) as *const i8);
                }
            }
        }
        for t in 0..RN {
            let x0 = _mm256_loadu_ps(xs[t].add(i));
            let x1 = _mm256_loadu_ps(xs[t].add(i + 8));
            for r in 0..RM {
                acc0[r][t] = _mm256_add_ps(acc0[r][t], _mm256_mul_ps(w0[r], x0));
                acc1[r][t] = _mm256_add_ps(acc1[r][t], _mm256_mul_ps(w1[r], x1));
            }
        }
        i += 16;
    }
    for t in 0..RN {
        for r in 0..RM {
            let mut s = hsum(_mm256_add_ps(acc0[r][t], acc1[r][t]));
            for j in i..n {
                s += W::scalar(rows[r], j) * *xs[t].add(j);
            }
            *a.out.add(t * a.out_stride + r) = s;
        }
    }
}

tile_dispatch!(tile_f32, tile_fl::<WF32>, 2, 3);
tile_dispatch!(tile_f16, tile_fl::<WF16>, 2, 3);
tile_dispatch!(tile_bf16, tile_fl::<WBF16>, 2, 3);
