//! wasm32 simd128 kernels (compile-time: built with `-C target-feature=+simd128`).
//!
//! simd128 has no 8-bit dot product: weights are decoded to i16 (offsets already subtracted, so
//! signed), activation records hold the quantized activations widened to i16, and
//! `i32x4.dot_i16x8_s` does pairs. Integer sums per block (legacy) or per sub-block times its scale
//! (k-quants), one float multiply-add per block. No FMA in simd128: `mul` then `add`.
//! Types with SIMD decoders: Q8_0, Q4_0, Q4_1, Q4_K, Q6_K; Q5_0, Q5_1, Q5_K decode their
//! weights with scalar code into the same i16 form and share the SIMD dot.
//! Float types: F32, F16 (bit-exact conversion in SIMD), BF16.

use super::actq::NatAct;
use super::{tile_dispatch, ActKind, FKernel, Kernel, QKernel, TileArgs};
use crate::gguf::GgmlType;
use std::arch::wasm32::*;

pub(crate) fn kernel(ty: GgmlType) -> Option<Kernel> {
    macro_rules! q {
        ($d:ty, $act:expr, $tile:ident) => {
            Kernel::Quant(QKernel { act: $act, group: <$d>::GE, rec_bytes: <$d>::RB, pack: <$d>::pack, tile: $tile, rm: 2, rn: 4 })
        };
    }
    Some(match ty {
        GgmlType::F32 => Kernel::Float(FKernel { tile: tile_f32, rm: 4, rn: 2 }),
        GgmlType::F16 => Kernel::Float(FKernel { tile: tile_f16, rm: 4, rn: 2 }),
        GgmlType::BF16 => Kernel::Float(FKernel { tile: tile_bf16, rm: 4, rn: 2 }),
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

#[inline(always)]
fn hsum(v: v128) -> f32 {
    // Fixed order: (0+2, 1+3), then the two.
    let a = f32x4_add(v, i32x4_shuffle::<2, 3, 0, 1>(v, v));
    f32x4_extract_lane::<0>(a) + f32x4_extract_lane::<1>(a)
}

#[inline(always)]
unsafe fn ld(p: *const u8) -> v128 {
    v128_load(p as *const v128)
}

#[inline(always)]
unsafe fn rd_f16(p: *const u8) -> f32 {
    crate::quant::half::f16_to_f32(u16::from_le_bytes([*p, *p.add(1)]))
}

#[inline(always)]
unsafe fn rd_f32(p: *const u8) -> f32 {
    f32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

/// Activation records: the quantized values widened to i16, then scalars.
/// Legacy (80 bytes per block): `[q: i16 x32][d: f32][xe: f32 (s/4)][pad]`.
/// K (592 bytes per super-block): `[q: i16 x256][bsums: i32 x16][d: f32][pad]`.
const LEG_RB: usize = 80;
const K_RB: usize = 592;

fn pack_legacy(a: &NatAct, dst: &mut [u8], extra: bool) {
    for b in 0..a.n / 32 {
        let rec = &mut dst[b * LEG_RB..(b + 1) * LEG_RB];
        for j in 0..32 {
            rec[2 * j..2 * j + 2].copy_from_slice(&(a.q[32 * b + j] as i16).to_le_bytes());
        }
        rec[64..68].copy_from_slice(&a.d[b].to_le_bytes());
        let xe = if extra { a.s[b] * 0.25 } else { 0.0 };
        rec[68..72].copy_from_slice(&xe.to_le_bytes());
    }
}

fn pack_k(a: &NatAct, dst: &mut [u8]) {
    for b in 0..a.n / 256 {
        let rec = &mut dst[b * K_RB..(b + 1) * K_RB];
        for j in 0..256 {
            rec[2 * j..2 * j + 2].copy_from_slice(&(a.q[256 * b + j] as i16).to_le_bytes());
        }
        for j in 0..16 {
            rec[512 + 4 * j..516 + 4 * j].copy_from_slice(&a.sums[16 * b + j].to_le_bytes());
        }
        rec[576..580].copy_from_slice(&a.d[b].to_le_bytes());
    }
}

trait DecW {
    const GE: usize;
    const GB: usize;
    const RB: usize;
    type W: Copy;
    unsafe fn decode(p: *const u8) -> Self::W;
    unsafe fn pair(w: &Self::W, rec: *const u8, acc: v128) -> v128;
    fn pack(a: &NatAct, dst: &mut [u8]);
}

#[derive(Clone, Copy)]
struct LegW {
    q: [v128; 4],
    d: f32,
    m: f32,
}

#[inline(always)]
unsafe fn dot32(q: &[v128; 4], rec: *const u8) -> v128 {
    let a = i32x4_add(i32x4_dot_i16x8(q[0], ld(rec)), i32x4_dot_i16x8(q[1], ld(rec.add(16))));
    let b = i32x4_add(i32x4_dot_i16x8(q[2], ld(rec.add(32))), i32x4_dot_i16x8(q[3], ld(rec.add(48))));
    i32x4_add(a, b)
}

#[inline(always)]
unsafe fn leg_pair(w: &LegW, rec: *const u8, acc: v128, extra: bool) -> v128 {
    let is = dot32(&w.q, rec);
    let acc = f32x4_add(acc, f32x4_mul(f32x4_convert_i32x4(is), f32x4_splat(w.d * rd_f32(rec.add(64)))));
    if extra {
        f32x4_add(acc, f32x4_splat(w.m * rd_f32(rec.add(68))))
    } else {
        acc
    }
}

/// 16 nibble bytes -> the block's 32 values as i16 minus `off`.
#[inline(always)]
unsafe fn nib_i16(p: *const u8, off: i16) -> [v128; 4] {
    let q = v128_load(p as *const v128);
    let lo = v128_and(q, u8x16_splat(0x0F));
    let hi = u8x16_shr(q, 4);
    let o = i16x8_splat(off);
    [
        i16x8_sub(u16x8_extend_low_u8x16(lo), o),
        i16x8_sub(u16x8_extend_high_u8x16(lo), o),
        i16x8_sub(u16x8_extend_low_u8x16(hi), o),
        i16x8_sub(u16x8_extend_high_u8x16(hi), o),
    ]
}

/// 5-bit legacy quants (scalar decode into the i16 form).
#[inline(always)]
unsafe fn q5_i16(qh_p: *const u8, qs: *const u8, off: i16) -> [v128; 4] {
    let qh = u32::from_le_bytes([*qh_p, *qh_p.add(1), *qh_p.add(2), *qh_p.add(3)]);
    let mut v = [0i16; 32];
    for j in 0..16 {
        let b = *qs.add(j);
        v[j] = ((b & 0x0F) | ((((qh >> j) & 1) << 4) as u8)) as i16 - off;
        v[j + 16] = ((b >> 4) | ((((qh >> (j + 16)) & 1) << 4) as u8)) as i16 - off;
    }
    std::array::from_fn(|k| v128_load(v.as_ptr().add(8 * k) as *const v128))
}

struct Q4_0;
struct Q4_1;
struct Q5_0;
struct Q5_1;
struct Q8_0;
struct Q4K;
struct Q5K;
struct Q6K;

impl DecW for Q4_0 {
    const GE: usize = 32;
    const GB: usize = 18;
    const RB: usize = LEG_RB;
    type W = LegW;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> LegW {
        LegW { q: nib_i16(p.add(2), 8), d: rd_f16(p), m: 0.0 }
    }
    #[inline(always)]
    unsafe fn pair(w: &LegW, rec: *const u8, acc: v128) -> v128 {
        leg_pair(w, rec, acc, false)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_legacy(a, dst, false)
    }
}

impl DecW for Q4_1 {
    const GE: usize = 32;
    const GB: usize = 20;
    const RB: usize = LEG_RB;
    type W = LegW;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> LegW {
        LegW { q: nib_i16(p.add(4), 0), d: rd_f16(p), m: rd_f16(p.add(2)) }
    }
    #[inline(always)]
    unsafe fn pair(w: &LegW, rec: *const u8, acc: v128) -> v128 {
        leg_pair(w, rec, acc, true)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_legacy(a, dst, true)
    }
}

impl DecW for Q5_0 {
    const GE: usize = 32;
    const GB: usize = 22;
    const RB: usize = LEG_RB;
    type W = LegW;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> LegW {
        LegW { q: q5_i16(p.add(2), p.add(6), 16), d: rd_f16(p), m: 0.0 }
    }
    #[inline(always)]
    unsafe fn pair(w: &LegW, rec: *const u8, acc: v128) -> v128 {
        leg_pair(w, rec, acc, false)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_legacy(a, dst, false)
    }
}

impl DecW for Q5_1 {
    const GE: usize = 32;
    const GB: usize = 24;
    const RB: usize = LEG_RB;
    type W = LegW;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> LegW {
        LegW { q: q5_i16(p.add(4), p.add(8), 0), d: rd_f16(p), m: rd_f16(p.add(2)) }
    }
    #[inline(always)]
    unsafe fn pair(w: &LegW, rec: *const u8, acc: v128) -> v128 {
        leg_pair(w, rec, acc, true)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_legacy(a, dst, true)
    }
}

impl DecW for Q8_0 {
    const GE: usize = 32;
    const GB: usize = 34;
    const RB: usize = LEG_RB;
    type W = LegW;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> LegW {
        let a = v128_load(p.add(2) as *const v128);
        let b = v128_load(p.add(18) as *const v128);
        LegW {
            q: [i16x8_extend_low_i8x16(a), i16x8_extend_high_i8x16(a), i16x8_extend_low_i8x16(b), i16x8_extend_high_i8x16(b)],
            d: rd_f16(p),
            m: 0.0,
        }
    }
    #[inline(always)]
    unsafe fn pair(w: &LegW, rec: *const u8, acc: v128) -> v128 {
        leg_pair(w, rec, acc, false)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_legacy(a, dst, false)
    }
}

/// K-quant weights as i16: 32 vectors of 8 values; scales per 32 (Q4_K/Q5_K) or 16 (Q6_K) values.
#[derive(Clone, Copy)]
struct KW {
    q: [v128; 32],
    sc: [i32; 16],
    m: [i32; 8],
    d: f32,
    dmin: f32,
}

#[inline(always)]
unsafe fn k4_scales(p: *const u8) -> ([i32; 16], [i32; 8], f32, f32) {
    let (s, m) = super::generic::k4_scales_mins(std::slice::from_raw_parts(p.add(4), 12));
    let mut sc = [0i32; 16];
    for j in 0..8 {
        sc[j] = s[j] as i32;
    }
    (sc, std::array::from_fn(|j| m[j] as i32), rd_f16(p), rd_f16(p.add(2)))
}

#[inline(always)]
unsafe fn k4_pair(w: &KW, rec: *const u8, acc: v128) -> v128 {
    let mut is = i32x4_splat(0);
    for s in 0..8 {
        let r = rec.add(64 * s);
        let a = i32x4_add(i32x4_dot_i16x8(w.q[4 * s], ld(r)), i32x4_dot_i16x8(w.q[4 * s + 1], ld(r.add(16))));
        let b = i32x4_add(i32x4_dot_i16x8(w.q[4 * s + 2], ld(r.add(32))), i32x4_dot_i16x8(w.q[4 * s + 3], ld(r.add(48))));
        is = i32x4_add(is, i32x4_mul(i32x4_add(a, b), i32x4_splat(w.sc[s])));
    }
    let mut mi = 0i32;
    for s in 0..8 {
        mi += w.m[s] * (rd_i32(rec.add(512 + 8 * s)) + rd_i32(rec.add(516 + 8 * s)));
    }
    let dx = rd_f32(rec.add(576));
    let acc = f32x4_add(acc, f32x4_mul(f32x4_convert_i32x4(is), f32x4_splat(w.d * dx)));
    f32x4_add(acc, f32x4_splat(mi as f32 * (-w.dmin * dx) * 0.25))
}

#[inline(always)]
unsafe fn rd_i32(p: *const u8) -> i32 {
    i32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

impl DecW for Q4K {
    const GE: usize = 256;
    const GB: usize = 144;
    const RB: usize = K_RB;
    type W = KW;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> KW {
        let mut q = [i32x4_splat(0); 32];
        for c in 0..4 {
            for half in 0..2 {
                let raw = ld(p.add(16 + 32 * c + 16 * half));
                let lo = v128_and(raw, u8x16_splat(0x0F));
                let hi = u8x16_shr(raw, 4);
                // sub-block 2c: values 16*half.. (lo), sub-block 2c+1 (hi)
                q[8 * c + 2 * half] = u16x8_extend_low_u8x16(lo);
                q[8 * c + 2 * half + 1] = u16x8_extend_high_u8x16(lo);
                q[8 * c + 4 + 2 * half] = u16x8_extend_low_u8x16(hi);
                q[8 * c + 4 + 2 * half + 1] = u16x8_extend_high_u8x16(hi);
            }
        }
        let (sc, m, d, dmin) = k4_scales(p);
        KW { q, sc, m, d, dmin }
    }
    #[inline(always)]
    unsafe fn pair(w: &KW, rec: *const u8, acc: v128) -> v128 {
        k4_pair(w, rec, acc)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_k(a, dst)
    }
}

impl DecW for Q5K {
    const GE: usize = 256;
    const GB: usize = 176;
    const RB: usize = K_RB;
    type W = KW;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> KW {
        let mut v = [0i16; 256];
        let qh = std::slice::from_raw_parts(p.add(16), 32);
        let ql = std::slice::from_raw_parts(p.add(48), 128);
        for c in 0..4 {
            for l in 0..32 {
                let b = ql[32 * c + l];
                v[64 * c + l] = ((b & 0x0F) + if qh[l] & (1 << (2 * c)) != 0 { 16 } else { 0 }) as i16;
                v[64 * c + 32 + l] = ((b >> 4) + if qh[l] & (2 << (2 * c)) != 0 { 16 } else { 0 }) as i16;
            }
        }
        let q = std::array::from_fn(|k| v128_load(v.as_ptr().add(8 * k) as *const v128));
        let (sc, m, d, dmin) = k4_scales(p);
        KW { q, sc, m, d, dmin }
    }
    #[inline(always)]
    unsafe fn pair(w: &KW, rec: *const u8, acc: v128) -> v128 {
        k4_pair(w, rec, acc)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_k(a, dst)
    }
}

impl DecW for Q6K {
    const GE: usize = 256;
    const GB: usize = 210;
    const RB: usize = K_RB;
    type W = KW;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> KW {
        let mut q = [i32x4_splat(0); 32];
        let m4 = u8x16_splat(0x0F);
        let m2 = u8x16_splat(0x03);
        let c32 = i8x16_splat(32);
        for h in 0..2 {
            for half in 0..2 {
                // values l = 16*half .. 16*half+15 of each of the four 32-value groups g
                let ql0 = ld(p.add(64 * h + 16 * half));
                let ql1 = ld(p.add(64 * h + 32 + 16 * half));
                let qh = ld(p.add(128 + 32 * h + 16 * half));
                let g: [v128; 4] = [
                    v128_or(v128_and(ql0, m4), i8x16_shl(v128_and(qh, m2), 4)),
                    v128_or(v128_and(ql1, m4), i8x16_shl(v128_and(u8x16_shr(qh, 2), m2), 4)),
                    v128_or(u8x16_shr(ql0, 4), i8x16_shl(v128_and(u8x16_shr(qh, 4), m2), 4)),
                    v128_or(u8x16_shr(ql1, 4), i8x16_shl(u8x16_shr(qh, 6), 4)),
                ];
                for (gi, gv) in g.iter().enumerate() {
                    let s = i8x16_sub(*gv, c32);
                    let base = 16 * h + 4 * gi + 2 * half; // in units of 8 values
                    q[base] = i16x8_extend_low_i8x16(s);
                    q[base + 1] = i16x8_extend_high_i8x16(s);
                }
            }
        }
        let mut sc = [0i32; 16];
        for (j, s) in sc.iter_mut().enumerate() {
            *s = *p.add(192 + j) as i8 as i32;
        }
        KW { q, sc, m: [0; 8], d: rd_f16(p.add(208)), dmin: 0.0 }
    }
    #[inline(always)]
    unsafe fn pair(w: &KW, rec: *const u8, acc: v128) -> v128 {
        let mut is = i32x4_splat(0);
        for s in 0..16 {
            let r = rec.add(32 * s);
            let a = i32x4_add(i32x4_dot_i16x8(w.q[2 * s], ld(r)), i32x4_dot_i16x8(w.q[2 * s + 1], ld(r.add(16))));
            is = i32x4_add(is, i32x4_mul(a, i32x4_splat(w.sc[s])));
        }
        let dx = rd_f32(rec.add(576));
        f32x4_add(acc, f32x4_mul(f32x4_convert_i32x4(is), f32x4_splat(w.d * dx)))
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_k(a, dst)
    }
}

unsafe fn tile_q<D: DecW, const RM: usize, const RN: usize>(a: &TileArgs) {
    let n_groups = a.n_cols / D::GE;
    let mut acc = [[f32x4_splat(0.0); RN]; RM];
    for g in 0..n_groups {
        let w: [D::W; RM] = std::array::from_fn(|r| D::decode(a.w.add(r * a.row_bytes + g * D::GB)));
        for t in 0..RN {
            let rec = a.act.add(t * a.act_stride + g * D::RB);
            for r in 0..RM {
                acc[r][t] = D::pair(&w[r], rec, acc[r][t]);
            }
        }
    }
    for t in 0..RN {
        for r in 0..RM {
            *a.out.add(t * a.out_stride + r) = hsum(acc[r][t]);
        }
    }
}

tile_dispatch!(tile_q4_0, tile_q::<Q4_0>, 2, 4);
tile_dispatch!(tile_q4_1, tile_q::<Q4_1>, 2, 4);
tile_dispatch!(tile_q5_0, tile_q::<Q5_0>, 2, 4);
tile_dispatch!(tile_q5_1, tile_q::<Q5_1>, 2, 4);
tile_dispatch!(tile_q8_0, tile_q::<Q8_0>, 2, 4);
tile_dispatch!(tile_q4_k, tile_q::<Q4K>, 2, 4);
tile_dispatch!(tile_q5_k, tile_q::<Q5K>, 2, 4);
tile_dispatch!(tile_q6_k, tile_q::<Q6K>, 2, 4);

trait FW {
    unsafe fn load(p: *const u8, i: usize) -> v128;
    unsafe fn scalar(p: *const u8, i: usize) -> f32;
}
struct WF32;
struct WF16;
struct WBF16;
impl FW for WF32 {
    #[inline(always)]
    unsafe fn load(p: *const u8, i: usize) -> v128 {
        v128_load(p.add(4 * i) as *const v128)
    }
    #[inline(always)]
    unsafe fn scalar(p: *const u8, i: usize) -> f32 {
        rd_f32(p.add(4 * i))
    }
}
impl FW for WF16 {
    /// 4 halves -> f32, exactly (normals, subnormals, infinities; NaNs stay NaN).
    #[inline(always)]
    unsafe fn load(p: *const u8, i: usize) -> v128 {
        let w = u32x4_extend_low_u16x8(v128_load64_zero(p.add(2 * i) as *const u64));
        let sign = i32x4_shl(v128_and(w, u32x4_splat(0x8000)), 16);
        let em = i32x4_shl(v128_and(w, u32x4_splat(0x7fff)), 13);
        let fin = f32x4_mul(em, f32x4_splat(f32::from_bits(0x7780_0000))); // 2^112
        let is_inf_nan = i32x4_eq(v128_and(w, u32x4_splat(0x7c00)), u32x4_splat(0x7c00));
        let inf_nan = v128_or(em, u32x4_splat(0x7f80_0000));
        v128_or(v128_bitselect(inf_nan, fin, is_inf_nan), sign)
    }
    #[inline(always)]
    unsafe fn scalar(p: *const u8, i: usize) -> f32 {
        rd_f16(p.add(2 * i))
    }
}
impl FW for WBF16 {
    #[inline(always)]
    unsafe fn load(p: *const u8, i: usize) -> v128 {
        i32x4_shl(u32x4_extend_low_u16x8(v128_load64_zero(p.add(2 * i) as *const u64)), 16)
    }
    #[inline(always)]
    unsafe fn scalar(p: *const u8, i: usize) -> f32 {
        f32::from_bits((u16::from_le_bytes([*p.add(2 * i), *p.add(2 * i + 1)]) as u32) << 16)
    }
}

unsafe fn tile_fl<W: FW, const RM: usize, const RN: usize>(a: &TileArgs) {
    let n = a.n_cols;
    let mut acc = [[f32x4_splat(0.0); RN]; RM];
    let rows: [*const u8; RM] = std::array::from_fn(|r| a.w.add(r * a.row_bytes));
    let xs: [*const u8; RN] = std::array::from_fn(|t| a.act.add(t * a.act_stride));
    let mut i = 0;
    while i + 4 <= n {
        let wv: [v128; RM] = std::array::from_fn(|r| W::load(rows[r], i));
        for t in 0..RN {
            let xv = v128_load(xs[t].add(4 * i) as *const v128);
            for r in 0..RM {
                acc[r][t] = f32x4_add(acc[r][t], f32x4_mul(wv[r], xv));
            }
        }
        i += 4;
    }
    for t in 0..RN {
        for r in 0..RM {
            let mut s = hsum(acc[r][t]);
            for j in i..n {
                s += W::scalar(rows[r], j) * rd_f32(xs[t].add(4 * j));
            }
            *a.out.add(t * a.out_stride + r) = s;
        }
    }
}

tile_dispatch!(tile_f32, tile_fl::<WF32>, 4, 2);
tile_dispatch!(tile_f16, tile_fl::<WF16>, 4, 2);
tile_dispatch!(tile_bf16, tile_fl::<WBF16>, 4, 2);
