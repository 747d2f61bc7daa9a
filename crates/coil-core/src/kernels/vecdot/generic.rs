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
