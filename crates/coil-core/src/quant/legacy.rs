//! The 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 (ggml-common.h layouts,
//! all little-endian, no padding).
//!
//! | type | bytes | layout |
//! |---|---|---|
//! | Q4_0 | 18 | `d: f16`, `qs: [u8; 16]` (element j in the low nibble of qs[j], j+16 in the high) |
//! | Q4_1 | 20 | `d: f16`, `m: f16`, `qs: [u8; 16]` |
//! | Q5_0 | 22 | `d: f16`, `qh: [u8; 4]` (bit j = 5th bit of element j), `qs: [u8; 16]` |
//! | Q5_1 | 24 | `d: f16`, `m: f16`, `qh: [u8; 4]`, `qs: [u8; 16]` |
//! | Q8_0 | 34 | `d: f16`, `qs: [i8; 32]` |
//! | Q8_1 | 36 | `d: f16`, `s: f16` (= d * sum(qs)), `qs: [i8; 32]` |
//!
//! The quantizers are ggml's `quantize_row_*_ref`, which is also what `ggml_quantize_chunk` (and so
//! `llama-quantize`) runs for these types when no importance matrix is given.

use super::common::{c_f32_to_i32, rd_f16, wr_f16};

/// Elements per block of every type in this file.
pub const QK: usize = 32;
pub const BLOCK_Q4_0: usize = 2 + QK / 2;
pub const BLOCK_Q4_1: usize = 2 + 2 + QK / 2;
pub const BLOCK_Q5_0: usize = 2 + 4 + QK / 2;
pub const BLOCK_Q5_1: usize = 2 + 2 + 4 + QK / 2;
pub const BLOCK_Q8_0: usize = 2 + QK;
pub const BLOCK_Q8_1: usize = 2 + 2 + QK;

/// The largest-magnitude element of a block (the first one on ties), as the Q4_0 / Q5_0 loops find it.
#[inline(always)]
fn signed_absmax(x: &[f32]) -> f32 {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let mut min = f32::MAX;
    let mut max = -f32::MAX;
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `MIN(hi, (int8_t)v)` as an unsigned byte, the way the C code stores it.
#[inline(always)]
fn q_i8_min(v: f32, hi: i32) -> u8 {
    (c_f32_to_i32(v) as i8 as i32).min(hi) as u8
}

pub(crate) fn quantize_q4_0(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_Q4_0)) {
        let max = signed_absmax(xb);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        wr_f16(yb, d);
        for j in 0..QK / 2 {
            let xi0 = q_i8_min(xb[j] * id + 8.5, 15);
            let xi1 = q_i8_min(xb[QK / 2 + j] * id + 8.5, 15);
            yb[2 + j] = xi0 | (((xi1 as u32) << 4) as u8);
        }
    }
}

pub(crate) fn quantize_q4_1(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_Q4_1)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        wr_f16(&mut yb[0..2], d);
        wr_f16(&mut yb[2..4], min);
        for j in 0..QK / 2 {
            let xi0 = q_i8_min((xb[j] - min) * id + 0.5, 15);
            let xi1 = q_i8_min((xb[QK / 2 + j] - min) * id + 0.5, 15);
            yb[4 + j] = xi0 | (((xi1 as u32) << 4) as u8);
        }
    }
}

pub(crate) fn quantize_q5_0(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_Q5_0)) {
        let max = signed_absmax(xb);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        wr_f16(yb, d);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            let xi0 = q_i8_min(xb[j] * id + 16.5, 31);
            let xi1 = q_i8_min(xb[QK / 2 + j] * id + 16.5, 31);
            yb[6 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            qh |= (((xi0 & 0x10) >> 4) as u32) << j;
            qh |= (((xi1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        yb[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

pub(crate) fn quantize_q5_1(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_Q5_1)) {
        let (min, max) = min_max(xb);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        wr_f16(&mut yb[0..2], d);
        wr_f16(&mut yb[2..4], min);
        let mut qh = 0u32;
        for j in 0..QK / 2 {
            // `(uint8_t)(x0 + 0.5f)`, no clamp in the C code.
            let xi0 = c_f32_to_i32((xb[j] - min) * id + 0.5) as u8;
            let xi1 = c_f32_to_i32((xb[QK / 2 + j] - min) * id + 0.5) as u8;
            yb[8 + j] = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
            qh |= (((xi0 & 0x10) >> 4) as u32) << j;
            qh |= (((xi1 & 0x10) >> 4) as u32) << (j + QK / 2);
        }
        yb[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}

#[inline(always)]
fn absmax(x: &[f32]) -> f32 {
    // `amax = MAX(amax, fabsf(v))` with MAX(a, b) = a > b ? a : b.
    let mut amax = 0.0f32;
    for &v in x {
        let a = v.abs();
        amax = if amax > a { amax } else { a };
    }
    amax
}

pub(crate) fn quantize_q8_0(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_Q8_0)) {
        let amax = absmax(xb);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        wr_f16(yb, d);
        for j in 0..QK {
            yb[2 + j] = c_f32_to_i32((xb[j] * id).round()) as i8 as u8;
        }
    }
}

pub(crate) fn quantize_q8_1(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK).zip(y.chunks_exact_mut(BLOCK_Q8_1)) {
        let amax = absmax(xb);
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        wr_f16(&mut yb[0..2], d);
        let mut sum = 0i32;
        for j in 0..QK / 2 {
            let q0 = c_f32_to_i32((xb[j] * id).round()) as i8;
            let q1 = c_f32_to_i32((xb[QK / 2 + j] * id).round()) as i8;
            yb[4 + j] = q0 as u8;
            yb[4 + QK / 2 + j] = q1 as u8;
            sum += q0 as i32 + q1 as i32;
        }
        wr_f16(&mut yb[2..4], sum as f32 * d);
    }
}

pub(crate) fn dequantize_q4_0(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(BLOCK_Q4_0).zip(y.chunks_exact_mut(QK)) {
        let d = rd_f16(xb);
        for j in 0..QK / 2 {
            let q = xb[2 + j];
            yb[j] = ((q & 0x0F) as i32 - 8) as f32 * d;
            yb[j + QK / 2] = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub(crate) fn dequantize_q4_1(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(BLOCK_Q4_1).zip(y.chunks_exact_mut(QK)) {
        let d = rd_f16(&xb[0..2]);
        let m = rd_f16(&xb[2..4]);
        for j in 0..QK / 2 {
            let q = xb[4 + j];
            yb[j] = (q & 0x0F) as f32 * d + m;
            yb[j + QK / 2] = (q >> 4) as f32 * d + m;
        }
    }
}

pub(crate) fn dequantize_q5_0(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(BLOCK_Q5_0).zip(y.chunks_exact_mut(QK)) {
        let d = rd_f16(xb);
        let qh = u32::from_le_bytes([xb[2], xb[3], xb[4], xb[5]]);
        for j in 0..QK / 2 {
            let xh0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
            let q = xb[6 + j];
            yb[j] = (((q & 0x0F) | xh0) as i32 - 16) as f32 * d;
            yb[j + QK / 2] = (((q >> 4) | xh1) as i32 - 16) as f32 * d;
        }
    }
}

pub(crate) fn dequantize_q5_1(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(BLOCK_Q5_1).zip(y.chunks_exact_mut(QK)) {
        let d = rd_f16(&xb[0..2]);
        let m = rd_f16(&xb[2..4]);
        let qh = u32::from_le_bytes([xb[4], xb[5], xb[6], xb[7]]);
        for j in 0..QK / 2 {
            let xh0 = (((qh >> j) << 4) & 0x10) as u8;
            let xh1 = ((qh >> (j + 12)) & 0x10) as u8;
            let q = xb[8 + j];
            yb[j] = ((q & 0x0F) | xh0) as f32 * d + m;
            yb[j + QK / 2] = ((q >> 4) | xh1) as f32 * d + m;
        }
    }
}

pub(crate) fn dequantize_q8_0(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(BLOCK_Q8_0).zip(y.chunks_exact_mut(QK)) {
        let d = rd_f16(xb);
        for j in 0..QK {
            yb[j] = (xb[2 + j] as i8) as f32 * d;
        }
    }
}

/// ggml has no Q8_1 -> f32 conversion (Q8_1 only carries activations into dot products); this is
/// the obvious one, `qs * d` (the stored sum `s` is not needed).
pub(crate) fn dequantize_q8_1(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(BLOCK_Q8_1).zip(y.chunks_exact_mut(QK)) {
        let d = rd_f16(xb);
        for j in 0..QK {
            yb[j] = (xb[4 + j] as i8) as f32 * d;
        }
    }
}
