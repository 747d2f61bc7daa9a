#![allow(clippy::needless_range_loop)] // register-array loops index by constant positions on purpose
//! aarch64 NEON kernels, in two variants chosen at run time: `neon` (every aarch64 CPU: NEON is
//! part of the base architecture) and `neon-dotprod` (CPUs with the `dotprod` extension: `sdot`,
//! Armv8.2+ cores such as Cortex-A55/A76 and later, Apple M1 and later, Neoverse, Graviton 2+).
//!
//! Both compute the canonical order of `super` (docs/numerics.md), so their results equal the
//! scalar `matmul_canon`, the x86 paths and wasm's simd128 bit for bit. The structure mirrors the
//! simd128 kernels (`vecdot/wasm_simd128.rs`, also 128 bits wide). In detail:
//!
//! * Quantized types: weights are decoded to signed bytes (offsets removed) and multiplied with
//!   the Q8 activations as bytes into 4 i32 lanes per 32-value block (or k-quant sub-block). The
//!   plain variant uses `smull`/`smull2` (i16 products, exact: |w·x| ≤ 128·128) and `sadalp`
//!   (pairwise add into i32 lanes) on values in their natural order; lane `k` holds values
//!   `{2k, 2k+1, 8+2k, 9+2k}` of each 16-value half. `sdot` adds 4 neighbouring byte products per
//!   lane instead; the dotprod variant stores weights and activations with each 16-value group
//!   permuted by [`PERM`] (one `tbl` per weight vector; the activation records are written
//!   permuted) so that its lanes hold the same values as the plain variant's. Integer sums are
//!   exact, and only their totals reach the float steps, so that layout is a convenience (the
//!   two variants' lanes can be compared in tests), not a requirement.
//! * Legacy types: per block, every output's 4 integer lanes are added (exact) into `I`, 4 outputs
//!   at a time (`addp`), then the float steps run on those 4 outputs at once: block lane
//!   `b mod 8` `+ (f32(I)·d_w)·d_x`, then `+ m_w·s_x` (Q4_1/Q5_1); the 8 block lanes are added as a
//!   halving tree at the end. K-quants: per super-block the exact `I = Σ scale·q·x` (`addv`) and
//!   `M = Σ min·bsum`, then one scalar running sum per output `acc + (f32(I)·d)·d_x −
//!   (f32(M)·dmin)·d_x`. F32, F16 (exact `fcvtl` conversion) and BF16: element `16k + l` into lane
//!   l (four f32x4 accumulators per output), the 16 lanes added as a halving tree, then the
//!   leftover elements one by one (`ops::canon_sum`'s order).
//! * No FMA anywhere: every vector multiply-add goes through [`madd`], a multiplication then an
//!   addition (a fused one rounds once and would no longer match the other targets).
//!
//! Every output is computed with the same operation sequence whatever tile it sits in (row tiles of
//! 2, 4 tokens (quantized) or 2 tokens (float), taller tiles for single tokens), so results do not
//! depend on thread count, row split or batch size. No software prefetch: aarch64 cores' hardware
//! prefetchers follow the sequential weight streams.

use super::actq::NatAct;
use super::generic::{k4_head, k6_head, KHead};
use super::{ActKind, FKernel, Kernel, QKernel, TileArgs};
use crate::gguf::GgmlType;
use std::arch::aarch64::*;

/// Whether this CPU has the `dotprod` extension (`sdot`).
pub(crate) fn dotprod_available() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// The kernel for `ty`: the plain NEON one, or with `dotprod` the one using `sdot` (`None` if the
/// CPU lacks it). Float types have one kernel for both (no integer products).
pub(crate) fn kernel(ty: GgmlType, dotprod: bool) -> Option<Kernel> {
    if dotprod && !dotprod_available() {
        return None;
    }
    macro_rules! q {
        ($act:expr, $group:expr, $rb:expr, $plain_pack:expr, $sdot_pack:expr, $plain:ident, $sdot:ident) => {
            Kernel::Quant(QKernel {
                act: $act,
                group: $group,
                rec_bytes: $rb,
                pack: if dotprod { $sdot_pack } else { $plain_pack },
                tile: if dotprod { $sdot } else { $plain },
                rm: QRM,
                rn: QRN,
                pre: None,
            })
        };
    }
    macro_rules! leg {
        ($act:expr, $extra:expr, $plain:ident, $sdot:ident) => {
            q!($act, 32, LEG_RB, pack_legacy::<Plain, $extra>, pack_legacy::<Sdot, $extra>, $plain, $sdot)
        };
    }
    macro_rules! k {
        ($plain:ident, $sdot:ident) => {
            q!(ActKind::Q8K, 256, K_RB, pack_k::<Plain>, pack_k::<Sdot>, $plain, $sdot)
        };
    }
    Some(match ty {
        GgmlType::F32 => Kernel::Float(FKernel { tile: tile_f32, rm: FRM, rn: FRN, pre: None }),
        GgmlType::F16 => Kernel::Float(FKernel { tile: tile_f16, rm: FRM, rn: FRN, pre: None }),
        GgmlType::BF16 => Kernel::Float(FKernel { tile: tile_bf16, rm: FRM, rn: FRN, pre: None }),
        GgmlType::Q8_0 => leg!(ActKind::Q8_0, false, tile_q8_0, tile_q8_0_dp),
        GgmlType::Q4_0 => leg!(ActKind::Q8_0, false, tile_q4_0, tile_q4_0_dp),
        GgmlType::Q4_1 => leg!(ActKind::Q8_1, true, tile_q4_1, tile_q4_1_dp),
        GgmlType::Q5_0 => leg!(ActKind::Q8_0, false, tile_q5_0, tile_q5_0_dp),
        GgmlType::Q5_1 => leg!(ActKind::Q8_1, true, tile_q5_1, tile_q5_1_dp),
        GgmlType::Q4_K => k!(tile_q4_k, tile_q4_k_dp),
        GgmlType::Q5_K => k!(tile_q5_k, tile_q5_k_dp),
        GgmlType::Q6_K => k!(tile_q6_k, tile_q6_k_dp),
        _ => return None,
    })
}

/// Tile shapes: rows × tokens (and rows for a single token).
const FRM: usize = 2;
const FRN: usize = 2;
const QRM: usize = 2;
const QRN: usize = 4;

// ---------------------------------------------------------------------------------------------
// Float arithmetic shared by every kernel (the one place to change it)

/// `acc + a · b`, not fused (the canonical order has no FMA; see the module docs).
#[inline(always)]
unsafe fn madd(acc: float32x4_t, a: float32x4_t, b: float32x4_t) -> float32x4_t {
    vaddq_f32(acc, vmulq_f32(a, b))
}

/// The lanes' sum in a fixed order: `(l0 + l2) + (l1 + l3)`.
#[inline(always)]
unsafe fn hsum(v: float32x4_t) -> f32 {
    let a = vaddq_f32(v, vextq_f32::<2>(v, v));
    vgetq_lane_f32::<0>(a) + vgetq_lane_f32::<1>(a)
}

#[inline(always)]
unsafe fn ld(p: *const u8) -> uint8x16_t {
    vld1q_u8(p)
}

#[inline(always)]
unsafe fn rd_f32(p: *const u8) -> f32 {
    f32::from_le_bytes(std::ptr::read_unaligned(p as *const [u8; 4]))
}

#[inline(always)]
unsafe fn rd_i32(p: *const u8) -> i32 {
    i32::from_le_bytes(std::ptr::read_unaligned(p as *const [u8; 4]))
}

/// An f16 at `p` as f32 (`fcvtl`: exact).
#[inline(always)]
unsafe fn rd_f16(p: *const u8) -> f32 {
    let h = u16::from_le_bytes(std::ptr::read_unaligned(p as *const [u8; 2]));
    vgetq_lane_f32::<0>(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))))
}

// ---------------------------------------------------------------------------------------------
// Integer dot products

/// The arrangement of each 16-value group for `sdot`: position `4k + m` holds value
/// `PERM[4k + m]`, so lane `k` sums values `2k, 2k+1, 8+2k, 9+2k` (what `smull` + `sadalp` give
/// on the natural order).
const PERM: [u8; 16] = [0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15];
const NATURAL: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// An integer dot-product flavour: `acc` lane `k` plus the products of a 16-byte group's values
/// `2k, 2k+1, 8+2k, 9+2k`, with the values stored in the order `ORDER`.
trait IDot {
    /// Whether `ORDER` is [`PERM`] (else [`NATURAL`]).
    const PERMUTED: bool;
    const ORDER: [u8; 16] = if Self::PERMUTED { PERM } else { NATURAL };
    unsafe fn dot(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t;
}

/// Plain NEON: `smull`/`smull2` then `sadalp`, natural order.
struct Plain;
/// Armv8.2 dotprod: `sdot`, values permuted by [`PERM`].
struct Sdot;

impl IDot for Plain {
    const PERMUTED: bool = false;
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
        let lo = vmull_s8(vget_low_s8(w), vget_low_s8(x));
        let hi = vmull_high_s8(w, x);
        vpadalq_s16(vpadalq_s16(acc, lo), hi)
    }
}

impl IDot for Sdot {
    const PERMUTED: bool = true;
    /// `sdot` through `asm!` (the `vdotq_s32` intrinsic is not stable Rust yet). Only called from
    /// functions compiled with `target_feature(enable = "dotprod")`.
    #[inline(always)]
    unsafe fn dot(mut acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
        std::arch::asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            x = in(vreg) x,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }
}

/// 16 bytes rearranged into `I`'s order.
#[inline(always)]
unsafe fn arrange<I: IDot>(v: uint8x16_t) -> uint8x16_t {
    if I::PERMUTED {
        vqtbl1q_u8(v, vld1q_u8(PERM.as_ptr()))
    } else {
        v
    }
}

// ---------------------------------------------------------------------------------------------
// Activation records

/// Legacy (64 bytes per 32-value block): `[q: i8 x32 (two 16-value groups, arranged)][d: f32]
/// [s: f32 (Q8_1's s)][pad]`.
/// K (352 bytes per 256-value super-block): `[q: i8 x256 (16 groups, arranged)][bsums: i32 x16]
/// [d: f32][pad]`.
const LEG_RB: usize = 64;
const K_RB: usize = 352;

fn put_group<I: IDot>(q: &[i8], dst: &mut [u8]) {
    for i in 0..16 {
        dst[i] = q[I::ORDER[i] as usize] as u8;
    }
}

fn pack_legacy<I: IDot, const EXTRA: bool>(a: &NatAct, dst: &mut [u8]) {
    for b in 0..a.n / 32 {
        let rec = &mut dst[b * LEG_RB..(b + 1) * LEG_RB];
        put_group::<I>(&a.q[32 * b..32 * b + 16], &mut rec[..16]);
        put_group::<I>(&a.q[32 * b + 16..32 * b + 32], &mut rec[16..32]);
        rec[32..36].copy_from_slice(&a.d[b].to_le_bytes());
        let xe = if EXTRA { a.s[b] } else { 0.0 };
        rec[36..40].copy_from_slice(&xe.to_le_bytes());
    }
}

fn pack_k<I: IDot>(a: &NatAct, dst: &mut [u8]) {
    for b in 0..a.n / 256 {
        let rec = &mut dst[b * K_RB..(b + 1) * K_RB];
        for c in 0..16 {
            put_group::<I>(&a.q[256 * b + 16 * c..256 * b + 16 * c + 16], &mut rec[16 * c..16 * c + 16]);
        }
        for j in 0..16 {
            rec[256 + 4 * j..260 + 4 * j].copy_from_slice(&a.sums[16 * b + j].to_le_bytes());
        }
        rec[320..324].copy_from_slice(&a.d[b].to_le_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Legacy quants (32-value blocks)

trait Leg {
    const GB: usize;
    /// Byte offsets of the f16 scale and (with `EXTRA`) the f16 min in a block.
    const D_OFF: usize = 0;
    const M_OFF: usize = 2;
    const EXTRA: bool = false;
    /// The block's 32 values as signed bytes (offsets removed): values 0..15, then 16..31, each
    /// group in `I`'s order.
    unsafe fn decode<I: IDot>(p: *const u8) -> [int8x16_t; 2];
}

struct Q4_0;
struct Q4_1;
struct Q5_0;
struct Q5_1;
struct Q8_0;

/// 16 nibble bytes (value j in the low nibble of byte j, value 16+j in the high one) minus `off`.
#[inline(always)]
unsafe fn nib<I: IDot>(qs: *const u8, off: i8) -> [int8x16_t; 2] {
    let q = arrange::<I>(ld(qs));
    let lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0F)));
    let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(q));
    let o = vdupq_n_s8(off);
    [vsubq_s8(lo, o), vsubq_s8(hi, o)]
}

/// For each position of a 16-value group in `order`: the byte of a little-endian u32 holding the
/// value's bit (`half` = 0 for values 0..15, 1 for 16..31), and the bit's mask.
const fn qh_index(order: [u8; 16], half: u8) -> [u8; 16] {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = 2 * half + order[i] / 8;
        i += 1;
    }
    t
}

const fn qh_mask(order: [u8; 16]) -> [u8; 16] {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = 1 << (order[i] % 8);
        i += 1;
    }
    t
}

/// 5-bit legacy quants: nibbles plus the 5th bits from `qh` (bit j of the u32 for value j).
#[inline(always)]
unsafe fn q5<I: IDot>(qh_p: *const u8, qs: *const u8, off: i8) -> [int8x16_t; 2] {
    let qh = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes(std::ptr::read_unaligned(qh_p as *const [u8; 4]))));
    let i0 = const { qh_index(I::ORDER, 0) };
    let i1 = const { qh_index(I::ORDER, 1) };
    let m = vld1q_u8(const { qh_mask(I::ORDER) }.as_ptr());
    let b16 = vdupq_n_u8(0x10);
    let h0 = vandq_u8(vtstq_u8(vqtbl1q_u8(qh, vld1q_u8(i0.as_ptr())), m), b16);
    let h1 = vandq_u8(vtstq_u8(vqtbl1q_u8(qh, vld1q_u8(i1.as_ptr())), m), b16);
    let q = arrange::<I>(ld(qs));
    let lo = vreinterpretq_s8_u8(vorrq_u8(vandq_u8(q, vdupq_n_u8(0x0F)), h0));
    let hi = vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8::<4>(q), h1));
    let o = vdupq_n_s8(off);
    [vsubq_s8(lo, o), vsubq_s8(hi, o)]
}

impl Leg for Q4_0 {
    const GB: usize = 18;
    #[inline(always)]
    unsafe fn decode<I: IDot>(p: *const u8) -> [int8x16_t; 2] {
        nib::<I>(p.add(2), 8)
    }
}

impl Leg for Q4_1 {
    const GB: usize = 20;
    const EXTRA: bool = true;
    #[inline(always)]
    unsafe fn decode<I: IDot>(p: *const u8) -> [int8x16_t; 2] {
        nib::<I>(p.add(4), 0)
    }
}

impl Leg for Q5_0 {
    const GB: usize = 22;
    #[inline(always)]
    unsafe fn decode<I: IDot>(p: *const u8) -> [int8x16_t; 2] {
        q5::<I>(p.add(2), p.add(6), 16)
    }
}

impl Leg for Q5_1 {
    const GB: usize = 24;
    const EXTRA: bool = true;
    #[inline(always)]
    unsafe fn decode<I: IDot>(p: *const u8) -> [int8x16_t; 2] {
        q5::<I>(p.add(4), p.add(8), 0)
    }
}

impl Leg for Q8_0 {
    const GB: usize = 34;
    #[inline(always)]
    unsafe fn decode<I: IDot>(p: *const u8) -> [int8x16_t; 2] {
        [vreinterpretq_s8_u8(arrange::<I>(ld(p.add(2)))), vreinterpretq_s8_u8(arrange::<I>(ld(p.add(18))))]
    }
}

/// The 4 horizontal sums of 4 i32x4 vectors at once (exact): lane o is Σ `v[o]`.
#[inline(always)]
unsafe fn tsum4(v0: int32x4_t, v1: int32x4_t, v2: int32x4_t, v3: int32x4_t) -> int32x4_t {
    vpaddq_s32(vpaddq_s32(v0, v1), vpaddq_s32(v2, v3))
}

/// Legacy quants in the canonical order (module docs of `super`): per block, the exact integer dot
/// of every output of the tile (one row's block is decoded and used by every token), summed
/// horizontally 4 outputs at a time (lane o = output `t·RM + r`); then `lane_k + (f32(I)·d_w)·d_x`
/// (+ `m_w·s_x`) into block lane k = block mod 8, and the 8 block lanes added as a halving tree at
/// the end. At most 8 outputs per tile.
#[inline(always)]
unsafe fn tile_q<D: Leg, I: IDot, const RM: usize, const RN: usize>(a: &TileArgs) {
    let n_blocks = a.n_cols / 32;
    // Two f32x4 (outputs 0..3, 4..7) per block lane.
    let mut lanes = [[vdupq_n_f32(0.0); 2]; 8];
    for g in 0..n_blocks {
        let mut x = [[vdupq_n_s8(0); 2]; RN];
        let mut recs = [a.act; RN];
        for t in 0..RN {
            recs[t] = a.act.add(t * a.act_stride + g * LEG_RB);
            x[t] = [vld1q_s8(recs[t] as *const i8), vld1q_s8(recs[t].add(16) as *const i8)];
        }
        let mut iv = [vdupq_n_s32(0); 8];
        let mut dw = [0f32; 8];
        let mut mw = [0f32; 8];
        let mut dx = [0f32; 8];
        let mut sx = [0f32; 8];
        for r in 0..RM {
            let p = a.w.add(r * a.row_bytes + g * D::GB);
            let q = D::decode::<I>(p);
            let d = rd_f16(p.add(D::D_OFF));
            let m = if D::EXTRA { rd_f16(p.add(D::M_OFF)) } else { 0.0 };
            for t in 0..RN {
                let o = t * RM + r;
                iv[o] = I::dot(I::dot(vdupq_n_s32(0), q[0], x[t][0]), q[1], x[t][1]);
                dw[o] = d;
                mw[o] = m;
                dx[o] = rd_f32(recs[t].add(32));
                if D::EXTRA {
                    sx[o] = rd_f32(recs[t].add(36));
                }
            }
        }
        let k = g % 8;
        for h in 0..2 {
            if 4 * h >= RM * RN {
                break;
            }
            let i = tsum4(iv[4 * h], iv[4 * h + 1], iv[4 * h + 2], iv[4 * h + 3]);
            let ldv = |v: &[f32; 8]| vld1q_f32(v.as_ptr().add(4 * h));
            let f = vmulq_f32(vmulq_f32(vcvtq_f32_s32(i), ldv(&dw)), ldv(&dx));
            let mut s = vaddq_f32(lanes[k][h], f);
            if D::EXTRA {
                s = vaddq_f32(s, vmulq_f32(ldv(&mw), ldv(&sx)));
            }
            lanes[k][h] = s;
        }
    }
    let mut res = [0f32; 8];
    for h in 0..2 {
        let l = |k: usize| lanes[k][h];
        let s4 = [vaddq_f32(l(0), l(4)), vaddq_f32(l(1), l(5)), vaddq_f32(l(2), l(6)), vaddq_f32(l(3), l(7))];
        let s = vaddq_f32(vaddq_f32(s4[0], s4[2]), vaddq_f32(s4[1], s4[3]));
        vst1q_f32(res.as_mut_ptr().add(4 * h), s);
    }
    for t in 0..RN {
        for r in 0..RM {
            *a.out.add(t * a.out_stride + r) = res[t * RM + r];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// K-quants (256-value super-blocks)

/// K-quant decoders, one sub-block at a time.
trait KDec {
    const GB: usize;
    /// Sub-blocks per super-block (8 of 32 values or 16 of 16) and 16-value groups per sub-block.
    const NSUB: usize;
    const UNITS: usize;
    const MINS: bool;
    unsafe fn head(p: *const u8) -> KHead;
    /// Sub-block `s` of the super-block at `p` as signed bytes (offsets removed), `UNITS` groups in
    /// `I`'s order.
    unsafe fn sub<I: IDot>(p: *const u8, s: usize) -> [int8x16_t; 2];
}

struct Q4K;
struct Q5K;
struct Q6K;

/// The low (`s` even) or high nibbles of the 32 bytes at `q`, as two arranged groups.
#[inline(always)]
unsafe fn nib32<I: IDot>(q: *const u8, high: bool) -> [uint8x16_t; 2] {
    let (a, b) = (arrange::<I>(ld(q)), arrange::<I>(ld(q.add(16))));
    if high {
        [vshrq_n_u8::<4>(a), vshrq_n_u8::<4>(b)]
    } else {
        [vandq_u8(a, vdupq_n_u8(0x0F)), vandq_u8(b, vdupq_n_u8(0x0F))]
    }
}

impl KDec for Q4K {
    const GB: usize = 144;
    const NSUB: usize = 8;
    const UNITS: usize = 2;
    const MINS: bool = true;
    #[inline(always)]
    unsafe fn head(p: *const u8) -> KHead {
        k4_head(p)
    }
    #[inline(always)]
    unsafe fn sub<I: IDot>(p: *const u8, s: usize) -> [int8x16_t; 2] {
        let [a, b] = nib32::<I>(p.add(16 + 32 * (s / 2)), s % 2 == 1);
        [vreinterpretq_s8_u8(a), vreinterpretq_s8_u8(b)]
    }
}

impl KDec for Q5K {
    const GB: usize = 176;
    const NSUB: usize = 8;
    const UNITS: usize = 2;
    const MINS: bool = true;
    #[inline(always)]
    unsafe fn head(p: *const u8) -> KHead {
        k4_head(p)
    }
    #[inline(always)]
    unsafe fn sub<I: IDot>(p: *const u8, s: usize) -> [int8x16_t; 2] {
        let [a, b] = nib32::<I>(p.add(48 + 32 * (s / 2)), s % 2 == 1);
        // Bit s of qh byte j is the 5th bit of value j of sub-block s.
        let shift = vdupq_n_s8(-(s as i8));
        let one = vdupq_n_u8(1);
        let h0 = vshlq_n_u8::<4>(vandq_u8(vshlq_u8(arrange::<I>(ld(p.add(16))), shift), one));
        let h1 = vshlq_n_u8::<4>(vandq_u8(vshlq_u8(arrange::<I>(ld(p.add(32))), shift), one));
        [vreinterpretq_s8_u8(vorrq_u8(a, h0)), vreinterpretq_s8_u8(vorrq_u8(b, h1))]
    }
}

impl KDec for Q6K {
    const GB: usize = 210;
    const NSUB: usize = 16;
    const UNITS: usize = 1;
    const MINS: bool = false;
    #[inline(always)]
    unsafe fn head(p: *const u8) -> KHead {
        k6_head(p)
    }
    #[inline(always)]
    unsafe fn sub<I: IDot>(p: *const u8, s: usize) -> [int8x16_t; 2] {
        // values 16s..16s+15 = 128h + 32g + 16b + (0..16)
        let (h, g, b) = (s / 8, (s % 8) / 2, s % 2);
        let ql = arrange::<I>(ld(p.add(64 * h + 32 * (g & 1) + 16 * b)));
        let qh = arrange::<I>(ld(p.add(128 + 32 * h + 16 * b)));
        let lo = if g < 2 { vandq_u8(ql, vdupq_n_u8(0x0F)) } else { vshrq_n_u8::<4>(ql) };
        let hi = vshlq_n_u8::<4>(vandq_u8(vshlq_u8(qh, vdupq_n_s8(-2 * g as i8)), vdupq_n_u8(3)));
        let q = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lo, hi)), vdupq_n_s8(32));
        [q, q]
    }
}

/// K-quants in the canonical order (module docs of `super`): per super-block, the integer lanes of
/// every sub-block times its scale summed as integers, the lanes added (exact) into `I`; then one
/// running sum per output `acc + (f32(I)·d)·d_x − (f32(M)·dmin)·d_x`, with `M = Σ min·bsum`.
#[inline(always)]
unsafe fn tile_k<K: KDec, I: IDot, const RM: usize, const RN: usize>(a: &TileArgs) {
    let n_groups = a.n_cols / 256;
    let mut acc = [[0f32; RN]; RM];
    for g in 0..n_groups {
        let mut rows = [a.w; RM];
        let mut head = [KHead::default(); RM];
        for r in 0..RM {
            rows[r] = a.w.add(r * a.row_bytes + g * K::GB);
            head[r] = K::head(rows[r]);
        }
        let mut recs = [a.act; RN];
        for t in 0..RN {
            recs[t] = a.act.add(t * a.act_stride + g * K_RB);
        }
        let mut isum = [[vdupq_n_s32(0); RN]; RM];
        for s in 0..K::NSUB {
            for r in 0..RM {
                let w = K::sub::<I>(rows[r], s);
                let sc = vdupq_n_s32(head[r].sc[s]);
                for t in 0..RN {
                    let x = recs[t].add(s * K::UNITS * 16) as *const i8;
                    let mut dot = I::dot(vdupq_n_s32(0), w[0], vld1q_s8(x));
                    if K::UNITS == 2 {
                        dot = I::dot(dot, w[1], vld1q_s8(x.add(16)));
                    }
                    isum[r][t] = vmlaq_s32(isum[r][t], dot, sc);
                }
            }
        }
        // The canonical order: exact integers I (and M), then one running sum per output.
        for t in 0..RN {
            let dx = rd_f32(recs[t].add(320));
            for r in 0..RM {
                let i = vaddvq_s32(isum[r][t]);
                let mut s = acc[r][t] + (i as f32 * head[r].d) * dx;
                if K::MINS {
                    let mut mi = 0i32;
                    for j in 0..8 {
                        mi += head[r].m[j] * (rd_i32(recs[t].add(256 + 8 * j)) + rd_i32(recs[t].add(260 + 8 * j)));
                    }
                    s -= (mi as f32 * head[r].dmin) * dx;
                }
                acc[r][t] = s;
            }
        }
    }
    for t in 0..RN {
        for r in 0..RM {
            *a.out.add(t * a.out_stride + r) = acc[r][t];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Float weights

trait FW {
    /// Whether the main loop takes 8 values per step (F16: one 16-byte load of halves) or 4.
    const WIDE: bool;
    /// 8 weights at element `i` as two f32x4 (`WIDE` only).
    unsafe fn load8(p: *const u8, i: usize) -> (float32x4_t, float32x4_t);
    /// 4 weights at element `i`.
    unsafe fn load4(p: *const u8, i: usize) -> float32x4_t;
    unsafe fn scalar(p: *const u8, i: usize) -> f32;
}
struct WF32;
struct WF16;
struct WBF16;

impl FW for WF32 {
    const WIDE: bool = false;
    #[inline(always)]
    unsafe fn load8(p: *const u8, i: usize) -> (float32x4_t, float32x4_t) {
        (Self::load4(p, i), Self::load4(p, i + 4))
    }
    #[inline(always)]
    unsafe fn load4(p: *const u8, i: usize) -> float32x4_t {
        vreinterpretq_f32_u8(ld(p.add(4 * i)))
    }
    #[inline(always)]
    unsafe fn scalar(p: *const u8, i: usize) -> f32 {
        rd_f32(p.add(4 * i))
    }
}

/// F16: `fcvtl` converts every half exactly (subnormals, infinities and NaNs included).
impl FW for WF16 {
    const WIDE: bool = true;
    #[inline(always)]
    unsafe fn load8(p: *const u8, i: usize) -> (float32x4_t, float32x4_t) {
        let h = vreinterpretq_u16_u8(ld(p.add(2 * i)));
        (vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h))), vcvt_f32_f16(vreinterpret_f16_u16(vget_high_u16(h))))
    }
    #[inline(always)]
    unsafe fn load4(p: *const u8, i: usize) -> float32x4_t {
        vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(p.add(2 * i))))
    }
    #[inline(always)]
    unsafe fn scalar(p: *const u8, i: usize) -> f32 {
        rd_f16(p.add(2 * i))
    }
}

impl FW for WBF16 {
    const WIDE: bool = false;
    #[inline(always)]
    unsafe fn load8(p: *const u8, i: usize) -> (float32x4_t, float32x4_t) {
        (Self::load4(p, i), Self::load4(p, i + 4))
    }
    #[inline(always)]
    unsafe fn load4(p: *const u8, i: usize) -> float32x4_t {
        vreinterpretq_f32_u32(vshll_n_u16::<16>(vreinterpret_u16_u8(vld1_u8(p.add(2 * i)))))
    }
    #[inline(always)]
    unsafe fn scalar(p: *const u8, i: usize) -> f32 {
        f32::from_bits((u16::from_le_bytes([*p.add(2 * i), *p.add(2 * i + 1)]) as u32) << 16)
    }
}

/// Float weights in the canonical order of `ops::canon_sum`: element `16k + l` into lane l — four
/// f32x4 accumulators per output (an 8-wide F16 load feeds two of them) — the 16 lanes added as a
/// halving tree (l+8, l+4, then [`hsum`]: l+2, l+1), then the leftover elements one by one.
#[inline(always)]
unsafe fn tile_fl<W: FW, const RM: usize, const RN: usize>(a: &TileArgs) {
    let n = a.n_cols;
    let mut acc = [[[vdupq_n_f32(0.0); 4]; RN]; RM];
    let mut rows = [a.w; RM];
    for r in 0..RM {
        rows[r] = a.w.add(r * a.row_bytes);
    }
    let mut xs = [a.act; RN];
    for t in 0..RN {
        xs[t] = a.act.add(t * a.act_stride);
    }
    let mut i = 0;
    while i + 16 <= n {
        for half in 0..2 {
            let j = i + 8 * half;
            let mut x0 = [vdupq_n_f32(0.0); RN];
            let mut x1 = [vdupq_n_f32(0.0); RN];
            for t in 0..RN {
                x0[t] = vreinterpretq_f32_u8(ld(xs[t].add(4 * j)));
                x1[t] = vreinterpretq_f32_u8(ld(xs[t].add(4 * j + 16)));
            }
            for r in 0..RM {
                let (w0, w1) =
                    if W::WIDE { W::load8(rows[r], j) } else { (W::load4(rows[r], j), W::load4(rows[r], j + 4)) };
                for t in 0..RN {
                    acc[r][t][2 * half] = madd(acc[r][t][2 * half], w0, x0[t]);
                    acc[r][t][2 * half + 1] = madd(acc[r][t][2 * half + 1], w1, x1[t]);
                }
            }
        }
        i += 16;
    }
    for t in 0..RN {
        for r in 0..RM {
            let v = &acc[r][t];
            let mut s = hsum(vaddq_f32(vaddq_f32(v[0], v[2]), vaddq_f32(v[1], v[3])));
            for j in i..n {
                s += W::scalar(rows[r], j) * rd_f32(xs[t].add(4 * j));
            }
            *a.out.add(t * a.out_stride + r) = s;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tile functions

/// Defines `$name: TileFn` from a generic tile `$f::<.., RM, RN>`: rows in tiles of up to `$rm`
/// × up to `$rn` tokens, except that a single token (matrix-vector products: generation) walks
/// the rows in taller tiles of up to `$mv` (more independent accumulators and weight streams per
/// pass). Each output's arithmetic is the same in every tile shape. The tile bodies are
/// `inline(always)`, so with `$attr` (`target_feature`) they are all compiled with that feature.
macro_rules! dispatch {
    ($name:ident, $f:ident :: <$($g:ty),*>, $rm:literal, $rn:literal, $mv:literal $(, #[$attr:meta])?) => {
        $(#[$attr])?
        unsafe fn $name(rows: usize, rn: usize, a: &TileArgs) {
            let h = if rn == 1 { $mv } else { $rm };
            let mut r = 0;
            while r < rows {
                let m = (rows - r).min(h);
                let sub = TileArgs { w: a.w.add(r * a.row_bytes), out: a.out.add(r), ..*a };
                if rn == 1 {
                    match m {
                        1 => $f::<$($g,)* 1, 1>(&sub),
                        2 => $f::<$($g,)* 2, 1>(&sub),
                        3 if $mv >= 3 => $f::<$($g,)* 3, 1>(&sub),
                        4 if $mv >= 4 => $f::<$($g,)* 4, 1>(&sub),
                        5 if $mv >= 5 => $f::<$($g,)* 5, 1>(&sub),
                        6 if $mv >= 6 => $f::<$($g,)* 6, 1>(&sub),
                        7 if $mv >= 7 => $f::<$($g,)* 7, 1>(&sub),
                        8 if $mv >= 8 => $f::<$($g,)* 8, 1>(&sub),
                        _ => unreachable!("tile height {m}"),
                    }
                } else {
                    macro_rules! go {
                        ($m:literal) => {
                            match rn {
                                2 => $f::<$($g,)* $m, 2>(&sub),
                                3 if $rn >= 3 => $f::<$($g,)* $m, 3>(&sub),
                                4 if $rn >= 4 => $f::<$($g,)* $m, 4>(&sub),
                                _ => unreachable!("tile width {rn}"),
                            }
                        };
                    }
                    match m {
                        1 => go!(1),
                        2 if $rm >= 2 => go!(2),
                        3 if $rm >= 3 => go!(3),
                        4 if $rm >= 4 => go!(4),
                        _ => unreachable!("tile height {m}"),
                    }
                }
                r += m;
            }
        }
    };
}

dispatch!(tile_q4_0, tile_q::<Q4_0, Plain>, 2, 4, 8);
dispatch!(tile_q4_1, tile_q::<Q4_1, Plain>, 2, 4, 8);
dispatch!(tile_q5_0, tile_q::<Q5_0, Plain>, 2, 4, 8);
dispatch!(tile_q5_1, tile_q::<Q5_1, Plain>, 2, 4, 8);
dispatch!(tile_q8_0, tile_q::<Q8_0, Plain>, 2, 4, 8);
dispatch!(tile_q4_k, tile_k::<Q4K, Plain>, 2, 4, 4);
dispatch!(tile_q5_k, tile_k::<Q5K, Plain>, 2, 4, 4);
dispatch!(tile_q6_k, tile_k::<Q6K, Plain>, 2, 4, 4);
dispatch!(tile_q4_0_dp, tile_q::<Q4_0, Sdot>, 2, 4, 8, #[target_feature(enable = "neon,dotprod")]);
dispatch!(tile_q4_1_dp, tile_q::<Q4_1, Sdot>, 2, 4, 8, #[target_feature(enable = "neon,dotprod")]);
dispatch!(tile_q5_0_dp, tile_q::<Q5_0, Sdot>, 2, 4, 8, #[target_feature(enable = "neon,dotprod")]);
dispatch!(tile_q5_1_dp, tile_q::<Q5_1, Sdot>, 2, 4, 8, #[target_feature(enable = "neon,dotprod")]);
dispatch!(tile_q8_0_dp, tile_q::<Q8_0, Sdot>, 2, 4, 8, #[target_feature(enable = "neon,dotprod")]);
dispatch!(tile_q4_k_dp, tile_k::<Q4K, Sdot>, 2, 4, 4, #[target_feature(enable = "neon,dotprod")]);
dispatch!(tile_q5_k_dp, tile_k::<Q5K, Sdot>, 2, 4, 4, #[target_feature(enable = "neon,dotprod")]);
dispatch!(tile_q6_k_dp, tile_k::<Q6K, Sdot>, 2, 4, 4, #[target_feature(enable = "neon,dotprod")]);
dispatch!(tile_f32, tile_fl::<WF32>, 2, 2, 4);
dispatch!(tile_f16, tile_fl::<WF16>, 2, 2, 4);
dispatch!(tile_bf16, tile_fl::<WBF16>, 2, 2, 4);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::SplitMix64;

    fn bytes(rng: &mut SplitMix64) -> [u8; 16] {
        // Extremes included: -128 · -128 is the largest byte product.
        std::array::from_fn(|_| match rng.next_u64() % 8 {
            0 => 0x80,
            1 => 0x7f,
            _ => rng.next_u64() as u8,
        })
    }

    fn lanes(v: int32x4_t) -> [i32; 4] {
        // SAFETY: plain vector to array.
        unsafe { std::mem::transmute(v) }
    }

    fn i8s(v: int8x16_t) -> [i8; 16] {
        // SAFETY: plain vector to array.
        unsafe { std::mem::transmute(v) }
    }

    #[target_feature(enable = "neon,dotprod")]
    unsafe fn sdot_arranged(acc: int32x4_t, w: uint8x16_t, x: uint8x16_t) -> int32x4_t {
        Sdot::dot(acc, vreinterpretq_s8_u8(arrange::<Sdot>(w)), vreinterpretq_s8_u8(arrange::<Sdot>(x)))
    }

    /// Lane k of both flavours = acc + the products of values 2k, 2k+1, 8+2k, 9+2k (simd128's
    /// `i32x4.dot_i16x8_s` lanes over two i16x8 halves), exactly.
    #[test]
    fn both_dot_flavours_give_the_simd128_lanes() {
        let mut rng = SplitMix64::new(5);
        let dotprod = dotprod_available();
        for _ in 0..2000 {
            let (w, x) = (bytes(&mut rng), bytes(&mut rng));
            let acc0 = [1_000_000i32, -7, 0, i32::MAX / 2];
            let want: [i32; 4] = std::array::from_fn(|k| {
                acc0[k]
                    + [2 * k, 2 * k + 1, 8 + 2 * k, 9 + 2 * k]
                        .iter()
                        .map(|&v| w[v] as i8 as i32 * x[v] as i8 as i32)
                        .sum::<i32>()
            });
            // SAFETY: NEON is baseline on aarch64; sdot only where detected.
            unsafe {
                let acc = vld1q_s32(acc0.as_ptr());
                let (wv, xv) = (vld1q_u8(w.as_ptr()), vld1q_u8(x.as_ptr()));
                let plain = Plain::dot(acc, vreinterpretq_s8_u8(wv), vreinterpretq_s8_u8(xv));
                assert_eq!(lanes(plain), want, "plain {w:?} {x:?}");
                if dotprod {
                    assert_eq!(lanes(sdot_arranged(acc, wv, xv)), want, "sdot {w:?} {x:?}");
                }
            }
        }
    }

    /// The dotprod decoders give the plain decoders' values, each 16-value group permuted by PERM.
    #[test]
    fn dotprod_decoders_are_the_plain_ones_permuted() {
        let mut rng = SplitMix64::new(6);
        let block: Vec<u8> = (0..256).map(|_| rng.next_u64() as u8).collect();
        let p = block.as_ptr();
        let perm = |v: int8x16_t| -> [i8; 16] {
            let a = i8s(v);
            std::array::from_fn(|i| a[PERM[i] as usize])
        };
        // SAFETY: every decoder reads inside the 256 bytes.
        unsafe {
            macro_rules! leg {
                ($($d:ty),*) => {$(
                    let (a, b) = (<$d>::decode::<Plain>(p), <$d>::decode::<Sdot>(p));
                    assert_eq!(perm(a[0]), i8s(b[0]), stringify!($d));
                    assert_eq!(perm(a[1]), i8s(b[1]), stringify!($d));
                )*};
            }
            leg!(Q4_0, Q4_1, Q5_0, Q5_1, Q8_0);
            macro_rules! k {
                ($($d:ty),*) => {$(
                    for s in 0..<$d>::NSUB {
                        let (a, b) = (<$d>::sub::<Plain>(p, s), <$d>::sub::<Sdot>(p, s));
                        for u in 0..<$d>::UNITS {
                            assert_eq!(perm(a[u]), i8s(b[u]), "{} sub-block {s}", stringify!($d));
                        }
                    }
                )*};
            }
            k!(Q4K, Q5K, Q6K);
        }
    }
}
