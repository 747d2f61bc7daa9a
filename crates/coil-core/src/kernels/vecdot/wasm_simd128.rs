#![allow(clippy::needless_range_loop)] // register-array loops index by constant positions on purpose
//! wasm32 simd128 kernels (compile-time: built with `-C target-feature=+simd128`).
//!
//! simd128 has no 8-bit dot product: weights are decoded to i16 (offsets already subtracted, so
//! signed), activation records hold the quantized activations widened to i16, and
//! `i32x4.dot_i16x8_s` does pairs. Integer sums per block (legacy) or per sub-block times its scale
//! (k-quants), then the float steps in the canonical order of `super` (the same bits as every
//! native path; no FMA in simd128 anyway: `mul` then `add`).
//! Types with SIMD decoders: Q8_0, Q4_0, Q4_1, Q4_K, Q6_K; Q5_0, Q5_1, Q5_K decode their
//! weights with scalar code into the same i16 form and share the SIMD dot.
//! Float types: F32, F16 (bit-exact conversion in SIMD; prompts convert each panel of rows to f32
//! once and reuse it for every token tile), BF16. Matrix-vector products (generation) walk one row
//! at a time, so each thread reads the weights as one sequential stream (see [`tile_qrow`]).

use super::actq::NatAct;
use super::generic::{k4_head, k6_head, KHead};
use super::{tile_dispatch, ActKind, FKernel, Kernel, PreDecode, QKernel, TileArgs};
use crate::gguf::GgmlType;
use std::arch::wasm32::*;

pub(crate) fn kernel(ty: GgmlType) -> Option<Kernel> {
    macro_rules! q {
        ($d:ty, $act:expr, $tile:ident) => {
            Kernel::Quant(QKernel {
                act: $act,
                group: <$d>::GE,
                rec_bytes: <$d>::RB,
                pack: <$d>::pack,
                tile: $tile,
                rm: 2,
                rn: 2,
                pre: None,
            })
        };
    }
    macro_rules! k {
        ($tile:ident) => {
            Kernel::Quant(QKernel {
                act: ActKind::Q8K,
                group: 256,
                rec_bytes: K_RB,
                pack: pack_k,
                tile: $tile,
                rm: 2,
                rn: 4,
                pre: None,
            })
        };
    }
    Some(match ty {
        GgmlType::F32 => Kernel::Float(FKernel { tile: tile_f32, rm: 4, rn: 2, pre: None }),
        // Prompts: each panel of F16 rows is converted to f32 once and reused by every token tile.
        GgmlType::F16 => Kernel::Float(FKernel {
            tile: tile_f16,
            rm: 2,
            rn: 2,
            pre: Some(PreDecode {
                group: 1,
                bytes_per_group: 4,
                row_block: 1,
                decode: decode_f16_rows,
                tile: tile_f32,
            }),
        }),
        GgmlType::BF16 => Kernel::Float(FKernel { tile: tile_bf16, rm: 4, rn: 2, pre: None }),
        GgmlType::Q8_0 => q!(Q8_0, ActKind::Q8_0, tile_q8_0),
        GgmlType::Q4_0 => q!(Q4_0, ActKind::Q8_0, tile_q4_0),
        GgmlType::Q4_1 => q!(Q4_1, ActKind::Q8_1, tile_q4_1),
        GgmlType::Q5_0 => q!(Q5_0, ActKind::Q8_0, tile_q5_0),
        GgmlType::Q5_1 => q!(Q5_1, ActKind::Q8_1, tile_q5_1),
        GgmlType::Q4_K => k!(tile_q4_k),
        GgmlType::Q5_K => k!(tile_q5_k),
        GgmlType::Q6_K => k!(tile_q6_k),
        _ => return None,
    })
}

/// `$body` for `$i` = 0, 1, .., `$n - 1` (`$n` a constant ≤ 8), unrolled in the source: LLVM
/// leaves short loops over register arrays rolled on wasm32 and then keeps the arrays in linear
/// memory (stores and reloads on every step); unrolled, every index is a constant and the arrays
/// become plain values.
macro_rules! unroll {
    ($n:expr, |$i:ident| $body:block) => {{
        debug_assert!($n <= 8);
        if 0 < $n {
            let $i: usize = 0;
            $body
        }
        if 1 < $n {
            let $i: usize = 1;
            $body
        }
        if 2 < $n {
            let $i: usize = 2;
            $body
        }
        if 3 < $n {
            let $i: usize = 3;
            $body
        }
        if 4 < $n {
            let $i: usize = 4;
            $body
        }
        if 5 < $n {
            let $i: usize = 5;
            $body
        }
        if 6 < $n {
            let $i: usize = 6;
            $body
        }
        if 7 < $n {
            let $i: usize = 7;
            $body
        }
    }};
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
/// Legacy (80 bytes per block): `[q: i16 x32][d: f32][s: f32 (Q8_1)][pad]`.
/// K (592 bytes per super-block): `[q: i16 x256][bsums: i32 x16][d: f32][pad]`.
const LEG_RB: usize = 80;
const K_RB: usize = 592;

fn pack_legacy(a: &NatAct, dst: &mut [u8], extra: bool) {
    for b in 0..a.n / 32 {
        let rec = &mut dst[b * LEG_RB..(b + 1) * LEG_RB];
        // SAFETY: 32 quants at 32b (a.q has a.n) and 64 bytes at the record's start.
        unsafe {
            let q = a.q.as_ptr().add(32 * b) as *const u8;
            let o = rec.as_mut_ptr();
            let (lo, hi) = (ld(q), ld(q.add(16)));
            v128_store(o as *mut v128, i16x8_extend_low_i8x16(lo));
            v128_store(o.add(16) as *mut v128, i16x8_extend_high_i8x16(lo));
            v128_store(o.add(32) as *mut v128, i16x8_extend_low_i8x16(hi));
            v128_store(o.add(48) as *mut v128, i16x8_extend_high_i8x16(hi));
        }
        rec[64..68].copy_from_slice(&a.d[b].to_le_bytes());
        let xe = if extra { a.s[b] } else { 0.0 };
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
    /// Legacy types: byte offsets of the f16 scale and (with `EXTRA`) the f16 min in a block.
    const D_OFF: usize = 0;
    const M_OFF: usize = 2;
    const EXTRA: bool = false;
    /// The block's 32 values as i16 (offsets removed).
    unsafe fn decode(p: *const u8) -> [v128; 4];
    fn pack(a: &NatAct, dst: &mut [u8]);
}

#[inline(always)]
unsafe fn dot32(q: &[v128; 4], rec: *const u8) -> v128 {
    let a = i32x4_add(i32x4_dot_i16x8(q[0], ld(rec)), i32x4_dot_i16x8(q[1], ld(rec.add(16))));
    let b = i32x4_add(i32x4_dot_i16x8(q[2], ld(rec.add(32))), i32x4_dot_i16x8(q[3], ld(rec.add(48))));
    i32x4_add(a, b)
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

/// 5-bit legacy quants: nibbles plus the 5th bits from `qh` (bit j of the u32 for value j).
#[inline(always)]
unsafe fn q5_i16(qh_p: *const u8, qs: *const u8, off: i16) -> [v128; 4] {
    let qh = v128_load32_splat(qh_p as *const u32);
    let bits = u8x16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
    let h0 = v128_and(
        i8x16_eq(v128_and(i8x16_swizzle(qh, u8x16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)), bits), bits),
        u8x16_splat(0x10),
    );
    let h1 = v128_and(
        i8x16_eq(v128_and(i8x16_swizzle(qh, u8x16(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3)), bits), bits),
        u8x16_splat(0x10),
    );
    let q = v128_load(qs as *const v128);
    let lo = v128_or(v128_and(q, u8x16_splat(0x0F)), h0);
    let hi = v128_or(u8x16_shr(q, 4), h1);
    let o = i16x8_splat(off);
    [
        i16x8_sub(u16x8_extend_low_u8x16(lo), o),
        i16x8_sub(u16x8_extend_high_u8x16(lo), o),
        i16x8_sub(u16x8_extend_low_u8x16(hi), o),
        i16x8_sub(u16x8_extend_high_u8x16(hi), o),
    ]
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
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [v128; 4] {
        nib_i16(p.add(2), 8)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_legacy(a, dst, false)
    }
}

impl DecW for Q4_1 {
    const EXTRA: bool = true;
    const GE: usize = 32;
    const GB: usize = 20;
    const RB: usize = LEG_RB;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [v128; 4] {
        nib_i16(p.add(4), 0)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_legacy(a, dst, true)
    }
}

impl DecW for Q5_0 {
    const GE: usize = 32;
    const GB: usize = 22;
    const RB: usize = LEG_RB;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [v128; 4] {
        q5_i16(p.add(2), p.add(6), 16)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_legacy(a, dst, false)
    }
}

impl DecW for Q5_1 {
    const EXTRA: bool = true;
    const GE: usize = 32;
    const GB: usize = 24;
    const RB: usize = LEG_RB;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [v128; 4] {
        q5_i16(p.add(4), p.add(8), 0)
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_legacy(a, dst, true)
    }
}

impl DecW for Q8_0 {
    const GE: usize = 32;
    const GB: usize = 34;
    const RB: usize = LEG_RB;
    #[inline(always)]
    unsafe fn decode(p: *const u8) -> [v128; 4] {
        let a = v128_load(p.add(2) as *const v128);
        let b = v128_load(p.add(18) as *const v128);
        [i16x8_extend_low_i8x16(a), i16x8_extend_high_i8x16(a), i16x8_extend_low_i8x16(b), i16x8_extend_high_i8x16(b)]
    }
    fn pack(a: &NatAct, dst: &mut [u8]) {
        pack_legacy(a, dst, false)
    }
}

/// K-quant decoders, one sub-block at a time (decoded straight into registers and used at once:
/// no super-block sized intermediate).
trait KDec {
    const GB: usize;
    /// Sub-blocks per super-block (8 of 32 values or 16 of 16) and i16x8 vectors per sub-block.
    const NSUB: usize;
    const UNITS: usize;
    const MINS: bool;
    unsafe fn head(p: *const u8) -> KHead;
    /// Sub-block `s` of the super-block at `p` as signed i16 (offsets removed).
    unsafe fn sub(p: *const u8, s: usize, out: &mut [v128; 4]);
}

/// 32 bytes of nibbles (low or high half) -> 4 i16x8.
#[inline(always)]
unsafe fn nib32(raw0: v128, raw1: v128, high: bool, out: &mut [v128; 4]) {
    let (a, b) = if high {
        (u8x16_shr(raw0, 4), u8x16_shr(raw1, 4))
    } else {
        (v128_and(raw0, u8x16_splat(0x0F)), v128_and(raw1, u8x16_splat(0x0F)))
    };
    out[0] = u16x8_extend_low_u8x16(a);
    out[1] = u16x8_extend_high_u8x16(a);
    out[2] = u16x8_extend_low_u8x16(b);
    out[3] = u16x8_extend_high_u8x16(b);
}

impl KDec for Q4K {
    const GB: usize = 144;
    const NSUB: usize = 8;
    const UNITS: usize = 4;
    const MINS: bool = true;
    #[inline(always)]
    unsafe fn head(p: *const u8) -> KHead {
        k4_head(p)
    }
    #[inline(always)]
    unsafe fn sub(p: *const u8, s: usize, out: &mut [v128; 4]) {
        let q = p.add(16 + 32 * (s / 2));
        nib32(ld(q), ld(q.add(16)), s % 2 == 1, out);
    }
}

impl KDec for Q5K {
    const GB: usize = 176;
    const NSUB: usize = 8;
    const UNITS: usize = 4;
    const MINS: bool = true;
    #[inline(always)]
    unsafe fn head(p: *const u8) -> KHead {
        k4_head(p)
    }
    #[inline(always)]
    unsafe fn sub(p: *const u8, s: usize, out: &mut [v128; 4]) {
        let q = p.add(48 + 32 * (s / 2));
        let (mut a, mut b) = if s % 2 == 1 {
            (u8x16_shr(ld(q), 4), u8x16_shr(ld(q.add(16)), 4))
        } else {
            (v128_and(ld(q), u8x16_splat(0x0F)), v128_and(ld(q.add(16)), u8x16_splat(0x0F)))
        };
        let one = u8x16_splat(1);
        a = v128_or(a, i8x16_shl(v128_and(u8x16_shr(ld(p.add(16)), s as u32), one), 4));
        b = v128_or(b, i8x16_shl(v128_and(u8x16_shr(ld(p.add(32)), s as u32), one), 4));
        out[0] = u16x8_extend_low_u8x16(a);
        out[1] = u16x8_extend_high_u8x16(a);
        out[2] = u16x8_extend_low_u8x16(b);
        out[3] = u16x8_extend_high_u8x16(b);
    }
}

impl KDec for Q6K {
    const GB: usize = 210;
    const NSUB: usize = 16;
    const UNITS: usize = 2;
    const MINS: bool = false;
    #[inline(always)]
    unsafe fn head(p: *const u8) -> KHead {
        k6_head(p)
    }
    #[inline(always)]
    unsafe fn sub(p: *const u8, s: usize, out: &mut [v128; 4]) {
        // values 16s..16s+15 = 128h + 32g + 16b + (0..16)
        let (h, g, b) = (s / 8, (s % 8) / 2, s % 2);
        let ql = ld(p.add(64 * h + 32 * (g & 1) + 16 * b));
        let qh = ld(p.add(128 + 32 * h + 16 * b));
        let lo = if g < 2 { v128_and(ql, u8x16_splat(0x0F)) } else { u8x16_shr(ql, 4) };
        let hi = i8x16_shl(v128_and(u8x16_shr(qh, 2 * g as u32), u8x16_splat(3)), 4);
        let q = i8x16_sub(v128_or(lo, hi), i8x16_splat(32));
        out[0] = i16x8_extend_low_i8x16(q);
        out[1] = i16x8_extend_high_i8x16(q);
    }
}

#[inline(always)]
unsafe fn rd_i32(p: *const u8) -> i32 {
    i32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)])
}

unsafe fn tile_k<K: KDec, const RM: usize, const RN: usize>(a: &TileArgs) {
    let n_groups = a.n_cols / 256;
    let mut acc = [[0f32; RN]; RM];
    for g in 0..n_groups {
        let mut rows = [a.w; RM];
        let mut head = [KHead::default(); RM];
        unroll!(RM, |r| {
            rows[r] = a.w.add(r * a.row_bytes + g * K::GB);
            head[r] = K::head(rows[r]);
        });
        let mut recs = [a.act; RN];
        unroll!(RN, |t| {
            recs[t] = a.act.add(t * a.act_stride + g * K_RB);
        });
        let mut isum = [[i32x4_splat(0); RN]; RM];
        for s in 0..K::NSUB {
            unroll!(RM, |r| {
                let mut w = [i32x4_splat(0); 4];
                K::sub(rows[r], s, &mut w);
                let scv = i32x4_splat(head[r].sc[s]);
                unroll!(RN, |t| {
                    let x = recs[t].add(s * K::UNITS * 16);
                    let mut dot = i32x4_dot_i16x8(w[0], ld(x));
                    for u in 1..K::UNITS {
                        dot = i32x4_add(dot, i32x4_dot_i16x8(w[u], ld(x.add(16 * u))));
                    }
                    isum[r][t] = i32x4_add(isum[r][t], i32x4_mul(dot, scv));
                });
            });
        }
        // The canonical order (module docs of `super`): exact integers I (and M), then one running
        // sum per output, never fused.
        unroll!(RN, |t| {
            let dx = rd_f32(recs[t].add(576));
            unroll!(RM, |r| {
                let v = isum[r][t];
                let i = i32x4_extract_lane::<0>(v)
                    .wrapping_add(i32x4_extract_lane::<1>(v))
                    .wrapping_add(i32x4_extract_lane::<2>(v))
                    .wrapping_add(i32x4_extract_lane::<3>(v));
                let mut s = acc[r][t] + (i as f32 * head[r].d) * dx;
                if K::MINS {
                    let mut mi = 0i32;
                    for j in 0..8 {
                        mi += head[r].m[j] * (rd_i32(recs[t].add(512 + 8 * j)) + rd_i32(recs[t].add(516 + 8 * j)));
                    }
                    s -= (mi as f32 * head[r].dmin) * dx;
                }
                acc[r][t] = s;
            });
        });
    }
    unroll!(RN, |t| {
        unroll!(RM, |r| {
            *a.out.add(t * a.out_stride + r) = acc[r][t];
        });
    });
}

/// The 4 horizontal sums of 4 i32x4 vectors at once (exact): lane o is Σ `v[o]`.
#[inline(always)]
fn tsum4(v0: v128, v1: v128, v2: v128, v3: v128) -> v128 {
    // A 4x4 transpose by unpacks (shuffle patterns V8 emits as single punpck instructions; the
    // general two-input shuffles of a plain lane gather cost several), then adds.
    let s01 = i32x4_add(i32x4_shuffle::<0, 4, 1, 5>(v0, v1), i32x4_shuffle::<2, 6, 3, 7>(v0, v1));
    let s23 = i32x4_add(i32x4_shuffle::<0, 4, 1, 5>(v2, v3), i32x4_shuffle::<2, 6, 3, 7>(v2, v3));
    i32x4_add(i64x2_shuffle::<0, 2>(s01, s23), i64x2_shuffle::<1, 3>(s01, s23))
}

/// Lane `o` of `h` = the 16 bits at `p` (`o` a constant after unrolling).
#[inline(always)]
unsafe fn put16(h: v128, o: usize, p: *const u8) -> v128 {
    let p = p as *const u16;
    match o {
        0 => v128_load16_lane::<0>(h, p),
        1 => v128_load16_lane::<1>(h, p),
        2 => v128_load16_lane::<2>(h, p),
        _ => v128_load16_lane::<3>(h, p),
    }
}

/// Lane `o` of `v` = the f32 at `p` (`o` a constant after unrolling).
#[inline(always)]
unsafe fn put32(v: v128, o: usize, p: *const u8) -> v128 {
    let p = p as *const u32;
    match o {
        0 => v128_load32_lane::<0>(v, p),
        1 => v128_load32_lane::<1>(v, p),
        2 => v128_load32_lane::<2>(v, p),
        _ => v128_load32_lane::<3>(v, p),
    }
}

/// One block `g` of a legacy-quant tile (at most 4 outputs, lane o = output `t·RM + r`): the exact
/// integer dots of every output, summed horizontally 4 outputs at a time, then
/// `lane + (f32(I)·d_w)·d_x` (`+ m_w·s_x`) — the canonical float steps, all 4 outputs at once. The
/// f16 scales of the tile's rows are gathered into one vector and converted exactly in SIMD.
#[inline(always)]
unsafe fn leg_step<D: DecW, const RM: usize, const RN: usize>(a: &TileArgs, g: usize, lane: v128) -> v128 {
    let mut iv = [i32x4_splat(0); 4];
    let mut dh = u16x8_splat(0);
    let mut mh = u16x8_splat(0);
    let mut dx = f32x4_splat(0.0);
    let mut sx = f32x4_splat(0.0);
    unroll!(RM, |r| {
        let p = a.w.add(r * a.row_bytes + g * D::GB);
        let q = D::decode(p);
        unroll!(RN, |t| {
            let o = t * RM + r;
            let rec = a.act.add(t * a.act_stride + g * D::RB);
            iv[o] = dot32(&q, rec);
            dh = put16(dh, o, p.add(D::D_OFF));
            if D::EXTRA {
                mh = put16(mh, o, p.add(D::M_OFF));
            }
            dx = put32(dx, o, rec.add(64));
            if D::EXTRA {
                sx = put32(sx, o, rec.add(68));
            }
        });
    });
    let i = tsum4(iv[0], iv[1], iv[2], iv[3]);
    let dw = f16x8_exact(dh).0;
    let mut s = f32x4_add(lane, f32x4_mul(f32x4_mul(f32x4_convert_i32x4(i), dw), dx));
    if D::EXTRA {
        s = f32x4_add(s, f32x4_mul(f16x8_exact(mh).0, sx));
    }
    s
}

/// Legacy quants in the canonical order (module docs of `super`): block b of each output into
/// block lane b mod 8 (`leg_step`), the 8 block lanes added as a halving tree at the end. A tile
/// holds at most 4 outputs (one f32x4, lane o = output `t·RM + r`). The block lanes live in
/// memory (one load and store per block; unrolling by 8 to keep them in registers measured no
/// faster). The same bits as the native paths. Prompts only: a single token takes
/// [`tile_qrow`], which streams the weights far better.
unsafe fn tile_q<D: DecW, const RM: usize, const RN: usize>(a: &TileArgs) {
    debug_assert!(RM * RN <= 4);
    let n_groups = a.n_cols / D::GE;
    let mut lanes = [f32x4_splat(0.0); 8];
    for g in 0..n_groups {
        let k = g & 7;
        lanes[k] = leg_step::<D, RM, RN>(a, g, lanes[k]);
    }
    leg_finish::<RM, RN>(a, &lanes);
}

/// Matrix-vector products (one token) of legacy quants, one row at a time, vectorised along the
/// row instead of across outputs: 4 consecutive blocks of the row fill one f32x4, and since block
/// b goes to block lane b mod 8, blocks 8k..8k+3 land in `lo` and 8k+4..8k+7 in `hi` with the
/// canonical steps `lane + (f32(I)·d_w)·d_x` (`+ m_w·s_x`) done 4 blocks at once. At the end
/// `lo + hi` holds `l0+l4, l1+l5, l2+l6, l3+l7`, and [`hsum`] adds those as
/// `((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7))`: the halving tree. The same bits as [`tile_q`].
/// Why one row: generation streams the weights from memory, and walking the rows one after
/// another makes each thread's reads a single sequential stream, which the hardware prefetcher
/// follows. Streaming the 24576×1536 Q8_0 product from memory (bench/wasm-kernels.mjs, one
/// thread): 8 rows side by side (the earlier kernel: 8 short streams) 6 GMAC/s, 2 rows 10, one
/// row 14.7 — its speed with the weights in cache.
unsafe fn tile_qrow<D: DecW>(a: &TileArgs) {
    let n_groups = a.n_cols / D::GE;
    let mut lo = f32x4_splat(0.0);
    let mut hi = f32x4_splat(0.0);
    let mut g = 0;
    while g < n_groups {
        // Blocks g..g+c (c = 4 but at the end of the row); lanes past c keep zero integers and
        // scales, so they add +0.0, which leaves a block lane as it was (a lane starts at +0.0,
        // and no sum with +0.0 in it is -0.0).
        let c = (n_groups - g).min(4);
        let mut iv = [i32x4_splat(0); 4];
        let mut dh = u16x8_splat(0);
        let mut mh = u16x8_splat(0);
        let mut dx = f32x4_splat(0.0);
        let mut sx = f32x4_splat(0.0);
        let row = a.w.add(g * D::GB);
        let act = a.act.add(g * D::RB);
        if c == 4 {
            unroll!(4, |j| {
                let p = row.add(j * D::GB);
                let rec = act.add(j * D::RB);
                iv[j] = dot32(&D::decode(p), rec);
                dh = put16(dh, j, p.add(D::D_OFF));
                dx = put32(dx, j, rec.add(64));
                if D::EXTRA {
                    mh = put16(mh, j, p.add(D::M_OFF));
                    sx = put32(sx, j, rec.add(68));
                }
            });
        } else {
            for j in 0..c {
                let p = row.add(j * D::GB);
                let rec = act.add(j * D::RB);
                iv[j] = dot32(&D::decode(p), rec);
                dh = put16v(dh, j, p.add(D::D_OFF));
                dx = put32v(dx, j, rec.add(64));
                if D::EXTRA {
                    mh = put16v(mh, j, p.add(D::M_OFF));
                    sx = put32v(sx, j, rec.add(68));
                }
            }
        }
        let i = tsum4(iv[0], iv[1], iv[2], iv[3]);
        let acc = if g & 4 == 0 { lo } else { hi };
        let mut s = f32x4_add(acc, f32x4_mul(f32x4_mul(f32x4_convert_i32x4(i), f16x8_exact(dh).0), dx));
        if D::EXTRA {
            s = f32x4_add(s, f32x4_mul(f16x8_exact(mh).0, sx));
        }
        if g & 4 == 0 {
            lo = s;
        } else {
            hi = s;
        }
        g += c;
    }
    *a.out = hsum(f32x4_add(lo, hi));
}

/// [`put16`] with a lane index known only at run time (row tails).
#[inline(always)]
unsafe fn put16v(h: v128, o: usize, p: *const u8) -> v128 {
    match o {
        0 => put16(h, 0, p),
        1 => put16(h, 1, p),
        2 => put16(h, 2, p),
        _ => put16(h, 3, p),
    }
}

/// [`put32`] with a lane index known only at run time.
#[inline(always)]
unsafe fn put32v(v: v128, o: usize, p: *const u8) -> v128 {
    match o {
        0 => put32(v, 0, p),
        1 => put32(v, 1, p),
        2 => put32(v, 2, p),
        _ => put32(v, 3, p),
    }
}

/// The 8 block lanes of a legacy tile added as the canonical halving tree, stored.
#[inline(always)]
unsafe fn leg_finish<const RM: usize, const RN: usize>(a: &TileArgs, lanes: &[v128; 8]) {
    let s = f32x4_add(
        f32x4_add(f32x4_add(lanes[0], lanes[4]), f32x4_add(lanes[2], lanes[6])),
        f32x4_add(f32x4_add(lanes[1], lanes[5]), f32x4_add(lanes[3], lanes[7])),
    );
    let mut res = [0f32; 4];
    v128_store(res.as_mut_ptr() as *mut v128, s);
    unroll!(RN, |t| {
        unroll!(RM, |r| {
            *a.out.add(t * a.out_stride + r) = res[t * RM + r];
        });
    });
}

/// How far ahead of the row being computed [`touch_ahead`] reads the weights (bytes).
const TOUCH_AHEAD: usize = 4096;

/// wasm has no prefetch instruction, and a matrix-vector product computes about as fast as memory
/// delivers, so a kernel that only waits for the hardware prefetcher alternates between the two
/// instead of overlapping them (measured: the Q8_0 kernel at 13 GMAC/s in cache, half that
/// streaming a model's weights from memory). Before row `r` of a single-token product, one byte of
/// every cache line of the row `TOUCH_AHEAD` bytes further on is loaded (volatile: kept, unused), so
/// that those lines are on their way while this row is computed. Only bytes of this call's `rows`
/// rows are touched. The results do not change (the loads feed nothing).
#[inline(always)]
unsafe fn touch_ahead(a: &TileArgs, rows: usize, r: usize) {
    let end = rows * a.row_bytes;
    let mut o = r * a.row_bytes + TOUCH_AHEAD;
    let stop = ((r + 1) * a.row_bytes + TOUCH_AHEAD).min(end);
    while o < stop {
        std::ptr::read_volatile(a.w.add(o));
        o += 64;
    }
}

/// Legacy-quant tile function: prompts in 2 × 2 tiles ([`tile_q`]), a single token one row at a
/// time ([`tile_qrow`]).

macro_rules! tile_dispatch_q {
    ($name:ident, $d:ty) => {
        unsafe fn $name(rows: usize, rn: usize, a: &TileArgs) {
            tile_dispatch!(inner, tile_q::<$d>, 2, 2);
            if rn != 1 {
                return inner(rows, rn, a);
            }
            for r in 0..rows {
                if a.prefetch {
                    touch_ahead(a, rows, r);
                }
                tile_qrow::<$d>(&TileArgs { w: a.w.add(r * a.row_bytes), out: a.out.add(r), ..*a });
            }
        }
    };
}

/// Like `tile_dispatch!` (tiles of up to `$rm` rows × `$rn` tokens), except that a single token
/// (matrix-vector products: generation) walks the rows one at a time: each thread then reads the
/// weights as one sequential stream, which the hardware prefetcher follows (several rows side by
/// side are several short streams, and streamed at under half the bandwidth; see [`tile_qrow`]).
/// Each output's arithmetic is the same in every tile shape.
macro_rules! tile_dispatch_mv {
    ($name:ident, $f:ident :: <$($g:ty),*>, $rm:literal, $rn:literal) => {
        unsafe fn $name(rows: usize, rn: usize, a: &TileArgs) {
            tile_dispatch!(inner, $f::<$($g),*>, $rm, $rn);
            if rn != 1 {
                return inner(rows, rn, a);
            }
            for r in 0..rows {
                if a.prefetch {
                    touch_ahead(a, rows, r);
                }
                $f::<$($g,)* 1, 1>(&TileArgs { w: a.w.add(r * a.row_bytes), out: a.out.add(r), ..*a });
            }
        }
    };
}

tile_dispatch_q!(tile_q4_0, Q4_0);
tile_dispatch_q!(tile_q4_1, Q4_1);
tile_dispatch_q!(tile_q5_0, Q5_0);
tile_dispatch_q!(tile_q5_1, Q5_1);
tile_dispatch_q!(tile_q8_0, Q8_0);
tile_dispatch_mv!(tile_q4_k, tile_k::<Q4K>, 2, 4);
tile_dispatch_mv!(tile_q5_k, tile_k::<Q5K>, 2, 4);
tile_dispatch_mv!(tile_q6_k, tile_k::<Q6K>, 2, 4);

trait FW {
    /// Whether the main loop takes 8 values per step (F16: one 16-byte load of halves) or 4.
    const WIDE: bool;
    /// 8 weights at element `i` as two f32x4 (`WIDE` only). `m` collects whatever the type needs
    /// to check after the row (F16: whether a half was an infinity or NaN).
    unsafe fn load8(p: *const u8, i: usize, m: &mut v128) -> (v128, v128);
    /// 4 weights at element `i`.
    unsafe fn load4(p: *const u8, i: usize, m: &mut v128) -> v128;
    unsafe fn scalar(p: *const u8, i: usize) -> f32;
    /// Whether the tile must be recomputed with the exact path after all (`m` from the loads).
    #[inline(always)]
    fn redo(_m: v128) -> bool {
        false
    }
}
struct WF32;
struct WF16;
struct WF16Fin;
struct WF16Exact;
struct WBF16;
impl FW for WF32 {
    const WIDE: bool = false;
    #[inline(always)]
    unsafe fn load8(p: *const u8, i: usize, _m: &mut v128) -> (v128, v128) {
        (ld(p.add(4 * i)), ld(p.add(4 * i + 16)))
    }
    #[inline(always)]
    unsafe fn load4(p: *const u8, i: usize, _m: &mut v128) -> v128 {
        ld(p.add(4 * i))
    }
    #[inline(always)]
    unsafe fn scalar(p: *const u8, i: usize) -> f32 {
        rd_f32(p.add(4 * i))
    }
}

/// 8 halves -> two f32x4, exact for finite halves: shifted left by 13 the exponent and mantissa
/// sit where an f32's do, and a multiplication by 2^112 rebiases the exponent (subnormal halves
/// included). Built with 16-bit operations on all 8 at once: the high half of each f32 is
/// `sign | (h & 0x7fff) >> 3`, the low half `h << 13`, interleaved.
#[inline(always)]
fn f16x8_finite(h: v128) -> (v128, v128) {
    let hi = v128_and(i16x8_shr(h, 3), i16x8_splat(0x8FFFu16 as i16));
    let lo = i16x8_shl(h, 13);
    let scale = f32x4_splat(f32::from_bits(0x7780_0000));
    (
        f32x4_mul(i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(lo, hi), scale),
        f32x4_mul(i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(lo, hi), scale),
    )
}

/// 8 halves -> two f32x4, exact for every half (infinities and NaNs through a rarely taken branch).
#[inline(always)]
fn f16x8_exact(h: v128) -> (v128, v128) {
    let (lo, hi) = f16x8_finite(h);
    let e = u16x8_splat(0x7c00);
    let special = i16x8_eq(v128_and(h, e), e);
    if v128_any_true(special) {
        let ones = u32x4_splat(0x7f80_0000);
        let sl = i32x4_extend_low_i16x8(special);
        let sh = i32x4_extend_high_i16x8(special);
        (v128_bitselect(v128_or(lo, ones), lo, sl), v128_bitselect(v128_or(hi, ones), hi, sh))
    } else {
        (lo, hi)
    }
}

/// F16 in the hot loops: the finite conversion, and the largest `h & 0x7fff` seen kept in `m`;
/// a tile that met an infinity or NaN (`>= 0x7c00`) is recomputed with [`WF16Exact`].
impl FW for WF16 {
    const WIDE: bool = true;
    #[inline(always)]
    unsafe fn load8(p: *const u8, i: usize, m: &mut v128) -> (v128, v128) {
        let h = ld(p.add(2 * i));
        *m = u16x8_max(*m, v128_and(h, u16x8_splat(0x7fff)));
        f16x8_finite(h)
    }
    #[inline(always)]
    unsafe fn load4(p: *const u8, i: usize, m: &mut v128) -> v128 {
        let h = v128_load64_zero(p.add(2 * i) as *const u64);
        *m = u16x8_max(*m, v128_and(h, u16x8_splat(0x7fff)));
        f16x8_finite(h).0
    }
    #[inline(always)]
    unsafe fn scalar(p: *const u8, i: usize) -> f32 {
        rd_f16(p.add(2 * i))
    }
    #[inline(always)]
    fn redo(m: v128) -> bool {
        v128_any_true(u16x8_ge(m, u16x8_splat(0x7c00)))
    }
}

/// F16 whose matrix was checked at load to hold no infinity or NaN (`TileArgs::finite`): the
/// finite conversion alone, without [`WF16`]'s per-value check (which costs 12–23% of a
/// generation product).
impl FW for WF16Fin {
    const WIDE: bool = true;
    #[inline(always)]
    unsafe fn load8(p: *const u8, i: usize, _m: &mut v128) -> (v128, v128) {
        f16x8_finite(ld(p.add(2 * i)))
    }
    #[inline(always)]
    unsafe fn load4(p: *const u8, i: usize, _m: &mut v128) -> v128 {
        f16x8_finite(v128_load64_zero(p.add(2 * i) as *const u64)).0
    }
    #[inline(always)]
    unsafe fn scalar(p: *const u8, i: usize) -> f32 {
        rd_f16(p.add(2 * i))
    }
}

/// F16 with every conversion exact on its own (the fallback of [`WF16`]).
impl FW for WF16Exact {
    const WIDE: bool = true;
    #[inline(always)]
    unsafe fn load8(p: *const u8, i: usize, _m: &mut v128) -> (v128, v128) {
        f16x8_exact(ld(p.add(2 * i)))
    }
    #[inline(always)]
    unsafe fn load4(p: *const u8, i: usize, _m: &mut v128) -> v128 {
        f16x8_exact(v128_load64_zero(p.add(2 * i) as *const u64)).0
    }
    #[inline(always)]
    unsafe fn scalar(p: *const u8, i: usize) -> f32 {
        rd_f16(p.add(2 * i))
    }
}

impl FW for WBF16 {
    const WIDE: bool = false;
    #[inline(always)]
    unsafe fn load8(p: *const u8, i: usize, m: &mut v128) -> (v128, v128) {
        (Self::load4(p, i, m), Self::load4(p, i + 4, m))
    }
    #[inline(always)]
    unsafe fn load4(p: *const u8, i: usize, _m: &mut v128) -> v128 {
        let h = v128_load64_zero(p.add(2 * i) as *const u64);
        i32x4_shl(u32x4_extend_low_u16x8(h), 16)
    }
    #[inline(always)]
    unsafe fn scalar(p: *const u8, i: usize) -> f32 {
        f32::from_bits((u16::from_le_bytes([*p.add(2 * i), *p.add(2 * i + 1)]) as u32) << 16)
    }
}

/// Fraction of the 65536 halves whose SIMD conversions (the exact one, and the finite one for
/// finite halves) differ from `f16_to_f32` (NaN = NaN).
pub(crate) fn f16_conversion_errors() -> f32 {
    let halves: Vec<u16> = (0..=u16::MAX).collect();
    let mut bad = 0usize;
    for (c, chunk) in halves.chunks_exact(8).enumerate() {
        let bytes: Vec<u8> = chunk.iter().flat_map(|h| h.to_le_bytes()).collect();
        let mut m = u16x8_splat(0);
        // SAFETY: 16 readable bytes.
        let (lo, hi) = unsafe { WF16Exact::load8(bytes.as_ptr(), 0, &mut m) };
        let (flo, fhi) = unsafe { WF16::load8(bytes.as_ptr(), 0, &mut m) };
        let f4 = unsafe { WF16::load4(bytes.as_ptr(), 0, &mut m) };
        let got: [f32; 8] = unsafe { std::mem::transmute([lo, hi]) };
        let fin: [f32; 8] = unsafe { std::mem::transmute([flo, fhi]) };
        let fin4: [f32; 4] = unsafe { std::mem::transmute(f4) };
        let any_special = chunk.iter().any(|h| h & 0x7c00 == 0x7c00);
        if WF16::redo(m) != any_special {
            bad += 8;
        }
        for (j, &g) in got.iter().enumerate() {
            let want = crate::quant::half::f16_to_f32(halves[8 * c + j]);
            if !(g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan())) {
                bad += 1;
            }
            if want.is_finite()
                && (fin[j].to_bits() != want.to_bits() || (j < 4 && fin4[j].to_bits() != want.to_bits()))
            {
                bad += 1;
            }
        }
    }
    bad as f32 / 65536.0
}

/// Float tile in the canonical order of `ops::canon_sum` (the same bits as every native path):
/// element `16k + l` into lane l, the 16 lanes added as a halving tree, then the leftover elements
/// one by one. Lane l's sum only ever involves elements ≡ l (mod 16), so the lanes are computed in
/// passes over the rows, a group of lanes at a time — 4 lanes per pass (one f32x4 per output) or,
/// for types converted 8 at a time (F16), 8 lanes (two) — with exactly the operations of a single
/// pass: the tile keeps as many outputs in registers as a 4-lane order would (a tile holding all 16
/// lanes of each output at once ran out of registers and ran at half speed). The rows a tile passes
/// over several times stay in L1/L2 (prompt panels are sized for L1; a generation tile is one
/// row). Whether the weights are converted here or beforehand (pre-decoded F16 = F32 of the same
/// values) the results are the same.
unsafe fn tile_fl<W: FW, const RM: usize, const RN: usize>(a: &TileArgs) {
    let n = a.n_cols;
    let n16 = n / 16 * 16;
    let mut rows = [a.w; RM];
    unroll!(RM, |r| {
        rows[r] = a.w.add(r * a.row_bytes);
    });
    let mut xs = [a.act; RN];
    unroll!(RN, |t| {
        xs[t] = a.act.add(t * a.act_stride);
    });
    // Lanes 4q..4q+3 of output (r, t) once their pass is done.
    let mut quads = [[[f32x4_splat(0.0); 4]; RN]; RM];
    let mut m = u16x8_splat(0);
    if W::WIDE {
        for h in 0..2 {
            let mut acc = [[[f32x4_splat(0.0); 2]; RN]; RM];
            let mut j = 8 * h;
            while j < n16 {
                let mut x0 = [f32x4_splat(0.0); RN];
                let mut x1 = [f32x4_splat(0.0); RN];
                unroll!(RN, |t| {
                    x0[t] = ld(xs[t].add(4 * j));
                    x1[t] = ld(xs[t].add(4 * j + 16));
                });
                unroll!(RM, |r| {
                    let (w0, w1) = W::load8(rows[r], j, &mut m);
                    unroll!(RN, |t| {
                        acc[r][t][0] = f32x4_add(acc[r][t][0], f32x4_mul(w0, x0[t]));
                        acc[r][t][1] = f32x4_add(acc[r][t][1], f32x4_mul(w1, x1[t]));
                    });
                });
                j += 16;
            }
            unroll!(RN, |t| {
                unroll!(RM, |r| {
                    quads[r][t][2 * h] = acc[r][t][0];
                    quads[r][t][2 * h + 1] = acc[r][t][1];
                });
            });
        }
    } else {
        for q in 0..4 {
            let mut acc = [[f32x4_splat(0.0); RN]; RM];
            let mut j = 4 * q;
            while j < n16 {
                let mut wv = [f32x4_splat(0.0); RM];
                unroll!(RM, |r| {
                    wv[r] = W::load4(rows[r], j, &mut m);
                });
                unroll!(RN, |t| {
                    let xv = ld(xs[t].add(4 * j));
                    unroll!(RM, |r| {
                        acc[r][t] = f32x4_add(acc[r][t], f32x4_mul(wv[r], xv));
                    });
                });
                j += 16;
            }
            unroll!(RN, |t| {
                unroll!(RM, |r| {
                    quads[r][t][q] = acc[r][t];
                });
            });
        }
    }
    if W::redo(m) {
        return tile_fl::<WF16Exact, RM, RN>(a);
    }
    unroll!(RN, |t| {
        unroll!(RM, |r| {
            let v = &quads[r][t];
            let mut s = hsum(f32x4_add(f32x4_add(v[0], v[2]), f32x4_add(v[1], v[3])));
            for j in n16..n {
                s += W::scalar(rows[r], j) * rd_f32(xs[t].add(4 * j));
            }
            *a.out.add(t * a.out_stride + r) = s;
        });
    });
}

/// F16 rows to f32 rows (exact, infinities and NaNs included), for [`PreDecode`]: then
/// `tile_f32` on them gives bit for bit what `tile_f16` gives on the halves.
unsafe fn decode_f16_rows(rows: usize, a: &TileArgs, dst: *mut u8) {
    let n = a.n_cols;
    for r in 0..rows {
        let src = a.w.add(r * a.row_bytes);
        let out = dst.add(r * 4 * n) as *mut f32;
        let mut i = 0;
        while i + 8 <= n {
            let (lo, hi) = f16x8_exact(ld(src.add(2 * i)));
            v128_store(out.add(i) as *mut v128, lo);
            v128_store(out.add(i + 4) as *mut v128, hi);
            i += 8;
        }
        while i < n {
            *out.add(i) = rd_f16(src.add(2 * i));
            i += 1;
        }
    }
}

tile_dispatch_mv!(tile_f32, tile_fl::<WF32>, 4, 2);
tile_dispatch_mv!(tile_f16_checked, tile_fl::<WF16>, 2, 2);
tile_dispatch_mv!(tile_f16_finite, tile_fl::<WF16Fin>, 2, 2);

unsafe fn tile_f16(rows: usize, rn: usize, a: &TileArgs) {
    if a.finite {
        tile_f16_finite(rows, rn, a)
    } else {
        tile_f16_checked(rows, rn, a)
    }
}
tile_dispatch_mv!(tile_bf16, tile_fl::<WBF16>, 4, 2);
