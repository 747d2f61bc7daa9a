#![allow(clippy::needless_range_loop)] // register-array loops index by constant positions on purpose
//! Scalar dot products of a weight row with a quantized activation row, written to give exactly
//! what ggml's portable C code computes (`ggml_vec_dot_<t>_q8_<u>_generic` in
//! `ggml-cpu/quants.c`): integer sums per block, then the float arithmetic in the C expression
//! order, in f32, never fused. With activations quantized by [`crate::quant::quantize_row`]
//! (bit-identical to ggml's `quantize_row_q8_*_ref`) the result is bit-identical to ggml's generic
//! path for every finite input (ggml's x86 builds use SIMD paths that sum the same integers in a
//! different float order, so they differ from this in the last bits).
//!
//! Weight and activation rows are raw ggml block bytes: `w` holds `n / block` weight blocks and `y`
//! the matching Q8_0 / Q8_1 / Q8_K blocks.

use crate::quant::half::f16_to_f32;
use crate::quant::{
    BLOCK_Q4_0, BLOCK_Q4_1, BLOCK_Q4_K, BLOCK_Q5_0, BLOCK_Q5_1, BLOCK_Q5_K, BLOCK_Q6_K, BLOCK_Q8_0, BLOCK_Q8_1,
    BLOCK_Q8_K, QK_K,
};

#[inline(always)]
fn h(b: &[u8], o: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[o], b[o + 1]]))
}

#[inline(always)]
fn f(b: &[u8], o: usize) -> f32 {
    f32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// `ggml_vec_dot_q4_0_q8_0_generic`.
pub fn vec_dot_q4_0_q8_0_ref(w: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.chunks_exact(BLOCK_Q4_0).zip(y.chunks_exact(BLOCK_Q8_0)) {
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..16 {
            let v0 = (x[2 + j] & 0x0F) as i32 - 8;
            let v1 = (x[2 + j] >> 4) as i32 - 8;
            s0 += v0 * (y[2 + j] as i8 as i32);
            s1 += v1 * (y[2 + 16 + j] as i8 as i32);
        }
        sumf += (s0 + s1) as f32 * h(x, 0) * h(y, 0);
    }
    sumf
}

/// `ggml_vec_dot_q4_1_q8_1_generic`.
pub fn vec_dot_q4_1_q8_1_ref(w: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.chunks_exact(BLOCK_Q4_1).zip(y.chunks_exact(BLOCK_Q8_1)) {
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..16 {
            let v0 = (x[4 + j] & 0x0F) as i32;
            let v1 = (x[4 + j] >> 4) as i32;
            s0 += v0 * (y[4 + j] as i8 as i32);
            s1 += v1 * (y[4 + 16 + j] as i8 as i32);
        }
        sumf += (h(x, 0) * h(y, 0)) * (s0 + s1) as f32 + h(x, 2) * h(y, 2);
    }
    sumf
}

/// `ggml_vec_dot_q5_0_q8_0_generic`.
pub fn vec_dot_q5_0_q8_0_ref(w: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.chunks_exact(BLOCK_Q5_0).zip(y.chunks_exact(BLOCK_Q8_0)) {
        let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..16 {
            let xh0 = (((qh >> j) & 1) << 4) as u8;
            let xh1 = (((qh >> (j + 16)) & 1) << 4) as u8;
            let x0 = ((x[6 + j] & 0x0F) | xh0) as i32 - 16;
            let x1 = ((x[6 + j] >> 4) | xh1) as i32 - 16;
            s0 += x0 * (y[2 + j] as i8 as i32);
            s1 += x1 * (y[2 + 16 + j] as i8 as i32);
        }
        sumf += (h(x, 0) * h(y, 0)) * (s0 + s1) as f32;
    }
    sumf
}

/// `ggml_vec_dot_q5_1_q8_1_generic`.
pub fn vec_dot_q5_1_q8_1_ref(w: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.chunks_exact(BLOCK_Q5_1).zip(y.chunks_exact(BLOCK_Q8_1)) {
        let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
        let (mut s0, mut s1) = (0i32, 0i32);
        for j in 0..16 {
            let xh0 = (((qh >> j) & 1) << 4) as u8;
            let xh1 = (((qh >> (j + 16)) & 1) << 4) as u8;
            let x0 = ((x[8 + j] & 0x0F) | xh0) as i32;
            let x1 = ((x[8 + j] >> 4) | xh1) as i32;
            s0 += x0 * (y[4 + j] as i8 as i32);
            s1 += x1 * (y[4 + 16 + j] as i8 as i32);
        }
        sumf += (h(x, 0) * h(y, 0)) * (s0 + s1) as f32 + h(x, 2) * h(y, 2);
    }
    sumf
}

/// `ggml_vec_dot_q8_0_q8_0_generic`.
pub fn vec_dot_q8_0_q8_0_ref(w: &[u8], y: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in w.chunks_exact(BLOCK_Q8_0).zip(y.chunks_exact(BLOCK_Q8_0)) {
        let mut s = 0i32;
        for j in 0..32 {
            s += (x[2 + j] as i8 as i32) * (y[2 + j] as i8 as i32);
        }
        sumf += s as f32 * (h(x, 0) * h(y, 0));
    }
    sumf
}

/// A k-quant super-block's scalars, unpacked for the SIMD tiles (NEON, simd128): sub-block
/// scales (8 for Q4_K/Q5_K, 16 for Q6_K), mins (Q4_K/Q5_K), and the f16 super-scales.
#[derive(Clone, Copy, Default)]
#[cfg_attr(not(any(target_arch = "wasm32", target_arch = "aarch64")), allow(dead_code))]
pub(crate) struct KHead {
    pub sc: [i32; 16],
    pub m: [i32; 8],
    pub d: f32,
    pub dmin: f32,
}

/// The header of the Q4_K / Q5_K super-block at `p`: `d`, `dmin`, then 12 bytes of packed scales.
///
/// # Safety
/// `p` must point to at least 16 readable bytes.
#[cfg_attr(not(any(target_arch = "wasm32", target_arch = "aarch64")), allow(dead_code))]
#[inline(always)]
pub(crate) unsafe fn k4_head(p: *const u8) -> KHead {
    let b = std::slice::from_raw_parts(p, 16);
    let (s, m) = k4_scales_mins(&b[4..16]);
    let mut kh = KHead { d: h(b, 0), dmin: h(b, 2), ..KHead::default() };
    for j in 0..8 {
        kh.sc[j] = s[j] as i32;
        kh.m[j] = m[j] as i32;
    }
    kh
}

/// The header of the Q6_K super-block at `p`: 16 signed scales at byte 192, `d` at 208.
///
/// # Safety
/// `p` must point to a whole 210-byte Q6_K block.
#[cfg_attr(not(any(target_arch = "wasm32", target_arch = "aarch64")), allow(dead_code))]
#[inline(always)]
pub(crate) unsafe fn k6_head(p: *const u8) -> KHead {
    let b = std::slice::from_raw_parts(p, 210);
    let mut kh = KHead { d: h(b, 208), ..KHead::default() };
    for j in 0..16 {
        kh.sc[j] = b[192 + j] as i8 as i32;
    }
    kh
}

/// The eight 6-bit scales and eight 6-bit mins of a Q4_K / Q5_K block, as the `utmp` shuffle of
/// the C code unpacks them.
#[inline(always)]
pub(crate) fn k4_scales_mins(sc: &[u8]) -> ([u8; 8], [u8; 8]) {
    let mut s = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..8 {
        if j < 4 {
            s[j] = sc[j] & 63;
            m[j] = sc[j + 4] & 63;
        } else {
            s[j] = (sc[j + 4] & 0xF) | ((sc[j - 4] >> 6) << 4);
            m[j] = (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
        }
    }
    (s, m)
}

/// The common tail of the k-quant generic dots: 8 lanes of `scale * q8 * a` over 8-element chunks.
#[inline(always)]
fn k_lanes(a: &[i8; QK_K], q8: &[u8], scale_of_chunk: impl Fn(usize) -> i32) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    for c in 0..QK_K / 8 {
        let scale = scale_of_chunk(c);
        for l in 0..8 {
            let aux16 = (q8[8 * c + l] as i8 as i16) * (a[8 * c + l] as i16);
            aux32[l] += scale * aux16 as i32;
        }
    }
    aux32
}

#[inline(always)]
fn q8k_parts(y: &[u8]) -> (f32, &[u8], [i16; 16]) {
    let d = f(y, 0);
    let qs = &y[4..4 + QK_K];
    let mut bs = [0i16; 16];
    for (j, b) in bs.iter_mut().enumerate() {
        *b = i16::from_le_bytes([y[4 + QK_K + 2 * j], y[4 + QK_K + 2 * j + 1]]);
    }
    (d, qs, bs)
}

/// `ggml_vec_dot_q4_K_q8_K_generic`.
pub fn vec_dot_q4_k_q8_k_ref(w: &[u8], y: &[u8]) -> f32 {
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    let mut a = [0i8; QK_K];
    for (x, y) in w.chunks_exact(BLOCK_Q4_K).zip(y.chunks_exact(BLOCK_Q8_K)) {
        let (yd, q8, bsums) = q8k_parts(y);
        let q4 = &x[16..];
        for j in 0..QK_K / 64 {
            for l in 0..32 {
                a[64 * j + l] = (q4[32 * j + l] & 0xF) as i8;
                a[64 * j + 32 + l] = (q4[32 * j + l] >> 4) as i8;
            }
        }
        let (scales, mins) = k4_scales_mins(&x[4..16]);
        let mut sumi = 0i32;
        for j in 0..QK_K / 16 {
            sumi += bsums[j] as i32 * mins[j / 2] as i32;
        }
        let aux32 = k_lanes(&a, q8, |c| scales[c / 4] as i32);
        let d = h(x, 0) * yd;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
        let dmin = h(x, 2) * yd;
        sumf -= dmin * sumi as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// `ggml_vec_dot_q5_K_q8_K_generic`.
pub fn vec_dot_q5_k_q8_k_ref(w: &[u8], y: &[u8]) -> f32 {
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    let mut a = [0i8; QK_K];
    for (x, y) in w.chunks_exact(BLOCK_Q5_K).zip(y.chunks_exact(BLOCK_Q8_K)) {
        let (yd, q8, bsums) = q8k_parts(y);
        let hm = &x[16..48];
        let q4 = &x[48..];
        let mut m = 1u8;
        for j in 0..QK_K / 64 {
            for l in 0..32 {
                a[64 * j + l] = (q4[32 * j + l] & 0xF) as i8 + if hm[l] & m != 0 { 16 } else { 0 };
            }
            m <<= 1;
            for l in 0..32 {
                a[64 * j + 32 + l] = (q4[32 * j + l] >> 4) as i8 + if hm[l] & m != 0 { 16 } else { 0 };
            }
            m <<= 1;
        }
        let (scales, mins) = k4_scales_mins(&x[4..16]);
        let mut sumi = 0i32;
        for j in 0..QK_K / 16 {
            sumi += bsums[j] as i32 * mins[j / 2] as i32;
        }
        let aux32 = k_lanes(&a, q8, |c| scales[c / 4] as i32);
        let d = h(x, 0) * yd;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
        let dmin = h(x, 2) * yd;
        sumf -= dmin * sumi as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// `ggml_vec_dot_q6_K_q8_K_generic`.
pub fn vec_dot_q6_k_q8_k_ref(w: &[u8], y: &[u8]) -> f32 {
    let mut sums = [0f32; 8];
    let mut a = [0i8; QK_K];
    for (x, y) in w.chunks_exact(BLOCK_Q6_K).zip(y.chunks_exact(BLOCK_Q8_K)) {
        let (yd, q8, _) = q8k_parts(y);
        let (ql, qh, sc) = (&x[0..128], &x[128..192], &x[192..208]);
        for half in 0..2 {
            let (q4, qh) = (&ql[64 * half..], &qh[32 * half..]);
            let a = &mut a[128 * half..];
            for l in 0..32 {
                a[l] = ((q4[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                a[l + 32] = ((q4[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                a[l + 64] = ((q4[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                a[l + 96] = ((q4[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        let aux32 = k_lanes(&a, q8, |c| sc[c / 2] as i8 as i32);
        let d = h(x, 208) * yd;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
    }
    let mut sumf = 0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

// ---------------------------------------------------------------------------------------------
// The canonical order (what every ISA path computes, bit for bit; see the module docs of
// `super`): the integer sums as above, then
// * legacy types: block b goes to lane b % 8: `lane = lane + (f32(I) · d_w) · d_x`, then for
//   Q4_1/Q5_1 `lane = lane + m_w · s_x`; the 8 lanes added as a halving tree (l+4, l+2, l+1);
// * k-quants: one running sum over the super-blocks: `acc = acc + (f32(I) · d) · d_x`, then for
//   Q4_K/Q5_K `acc = acc − (f32(M) · dmin) · d_x`, with `I` = Σ scale·q·x and `M` = Σ min·bsum as
//   exact integers.

/// The halving tree of the 8 block lanes: ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)).
#[inline(always)]
pub fn tree8(l: [f32; 8]) -> f32 {
    let s4 = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    let s2 = [s4[0] + s4[2], s4[1] + s4[3]];
    s2[0] + s2[1]
}

/// Canonical legacy dot from per-block `(I, d_w, d_x, m_w · s_x term or None)`.
#[inline(always)]
fn canon_legacy(nb: usize, mut blk: impl FnMut(usize) -> (i32, f32, f32, Option<(f32, f32)>)) -> f32 {
    let mut l = [0f32; 8];
    for b in 0..nb {
        let (i, dw, dx, extra) = blk(b);
        let mut v = l[b % 8] + (i as f32 * dw) * dx;
        if let Some((m, s)) = extra {
            v += m * s;
        }
        l[b % 8] = v;
    }
    tree8(l)
}

pub fn canon_q4_0_q8_0(w: &[u8], y: &[u8]) -> f32 {
    let nb = w.len() / BLOCK_Q4_0;
    canon_legacy(nb, |b| {
        let (x, y) = (&w[b * BLOCK_Q4_0..], &y[b * BLOCK_Q8_0..]);
        let mut s = 0i32;
        for j in 0..16 {
            s += ((x[2 + j] & 0x0F) as i32 - 8) * (y[2 + j] as i8 as i32);
            s += ((x[2 + j] >> 4) as i32 - 8) * (y[2 + 16 + j] as i8 as i32);
        }
        (s, h(x, 0), h(y, 0), None)
    })
}

pub fn canon_q4_1_q8_1(w: &[u8], y: &[u8]) -> f32 {
    let nb = w.len() / BLOCK_Q4_1;
    canon_legacy(nb, |b| {
        let (x, y) = (&w[b * BLOCK_Q4_1..], &y[b * BLOCK_Q8_1..]);
        let mut s = 0i32;
        for j in 0..16 {
            s += (x[4 + j] & 0x0F) as i32 * (y[4 + j] as i8 as i32);
            s += (x[4 + j] >> 4) as i32 * (y[4 + 16 + j] as i8 as i32);
        }
        (s, h(x, 0), h(y, 0), Some((h(x, 2), h(y, 2))))
    })
}

pub fn canon_q5_0_q8_0(w: &[u8], y: &[u8]) -> f32 {
    let nb = w.len() / BLOCK_Q5_0;
    canon_legacy(nb, |b| {
        let (x, y) = (&w[b * BLOCK_Q5_0..], &y[b * BLOCK_Q8_0..]);
        let qh = u32::from_le_bytes([x[2], x[3], x[4], x[5]]);
        let mut s = 0i32;
        for j in 0..16 {
            let x0 = ((x[6 + j] & 0x0F) | ((((qh >> j) & 1) << 4) as u8)) as i32 - 16;
            let x1 = ((x[6 + j] >> 4) | ((((qh >> (j + 16)) & 1) << 4) as u8)) as i32 - 16;
            s += x0 * (y[2 + j] as i8 as i32) + x1 * (y[2 + 16 + j] as i8 as i32);
        }
        (s, h(x, 0), h(y, 0), None)
    })
}

pub fn canon_q5_1_q8_1(w: &[u8], y: &[u8]) -> f32 {
    let nb = w.len() / BLOCK_Q5_1;
    canon_legacy(nb, |b| {
        let (x, y) = (&w[b * BLOCK_Q5_1..], &y[b * BLOCK_Q8_1..]);
        let qh = u32::from_le_bytes([x[4], x[5], x[6], x[7]]);
        let mut s = 0i32;
        for j in 0..16 {
            let x0 = ((x[8 + j] & 0x0F) | ((((qh >> j) & 1) << 4) as u8)) as i32;
            let x1 = ((x[8 + j] >> 4) | ((((qh >> (j + 16)) & 1) << 4) as u8)) as i32;
            s += x0 * (y[4 + j] as i8 as i32) + x1 * (y[4 + 16 + j] as i8 as i32);
        }
        (s, h(x, 0), h(y, 0), Some((h(x, 2), h(y, 2))))
    })
}

pub fn canon_q8_0_q8_0(w: &[u8], y: &[u8]) -> f32 {
    let nb = w.len() / BLOCK_Q8_0;
    canon_legacy(nb, |b| {
        let (x, y) = (&w[b * BLOCK_Q8_0..], &y[b * BLOCK_Q8_0..]);
        let mut s = 0i32;
        for j in 0..32 {
            s += (x[2 + j] as i8 as i32) * (y[2 + j] as i8 as i32);
        }
        (s, h(x, 0), h(y, 0), None)
    })
}

/// One k-quant super-block's step of the canonical order.
#[inline(always)]
fn canon_k_step(acc: f32, i: i32, d: f32, dx: f32, min: Option<(i32, f32)>) -> f32 {
    let mut acc = acc + (i as f32 * d) * dx;
    if let Some((m, dmin)) = min {
        acc -= (m as f32 * dmin) * dx;
    }
    acc
}

fn canon_k4(w: &[u8], y: &[u8], bytes: usize, five: bool) -> f32 {
    let mut acc = 0f32;
    let mut a = [0i8; QK_K];
    for (x, y) in w.chunks_exact(bytes).zip(y.chunks_exact(BLOCK_Q8_K)) {
        let (yd, q8, bsums) = q8k_parts(y);
        let (hm, q4) = if five { (&x[16..48], &x[48..]) } else { (&x[0..0], &x[16..]) };
        let mut m = 1u8;
        for j in 0..QK_K / 64 {
            for l in 0..32 {
                let hi0 = if five && hm[l] & m != 0 { 16 } else { 0 };
                let hi1 = if five && hm[l] & (m << 1) != 0 { 16 } else { 0 };
                a[64 * j + l] = (q4[32 * j + l] & 0xF) as i8 + hi0;
                a[64 * j + 32 + l] = (q4[32 * j + l] >> 4) as i8 + hi1;
            }
            m <<= 2;
        }
        let (scales, mins) = k4_scales_mins(&x[4..16]);
        let mut mi = 0i32;
        for j in 0..QK_K / 16 {
            mi += bsums[j] as i32 * mins[j / 2] as i32;
        }
        let mut is = 0i32;
        for j in 0..QK_K {
            is += scales[j / 32] as i32 * (a[j] as i32 * q8[j] as i8 as i32);
        }
        acc = canon_k_step(acc, is, h(x, 0), yd, Some((mi, h(x, 2))));
    }
    acc
}

pub fn canon_q4_k_q8_k(w: &[u8], y: &[u8]) -> f32 {
    canon_k4(w, y, BLOCK_Q4_K, false)
}

pub fn canon_q5_k_q8_k(w: &[u8], y: &[u8]) -> f32 {
    canon_k4(w, y, BLOCK_Q5_K, true)
}

pub fn canon_q6_k_q8_k(w: &[u8], y: &[u8]) -> f32 {
    let mut acc = 0f32;
    let mut a = [0i8; QK_K];
    for (x, y) in w.chunks_exact(BLOCK_Q6_K).zip(y.chunks_exact(BLOCK_Q8_K)) {
        let (yd, q8, _) = q8k_parts(y);
        let (ql, qh, sc) = (&x[0..128], &x[128..192], &x[192..208]);
        for half in 0..2 {
            let (q4, qh) = (&ql[64 * half..], &qh[32 * half..]);
            let a = &mut a[128 * half..];
            for l in 0..32 {
                a[l] = ((q4[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                a[l + 32] = ((q4[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                a[l + 64] = ((q4[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                a[l + 96] = ((q4[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        let mut is = 0i32;
        for j in 0..QK_K {
            is += (sc[j / 16] as i8 as i32) * (a[j] as i32 * q8[j] as i8 as i32);
        }
        acc = canon_k_step(acc, is, h(x, 208), yd, None);
    }
    acc
}
