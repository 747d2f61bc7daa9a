//! The 256-element "k-quant" super-block formats Q4_K, Q5_K, Q6_K and Q8_K (ggml-common.h
//! layouts, little-endian, no padding).
//!
//! | type | bytes | layout |
//! |---|---|---|
//! | Q4_K | 144 | `d: f16`, `dmin: f16`, `scales: [u8; 12]` (8 x 6-bit scale + 6-bit min), `qs: [u8; 128]` |
//! | Q5_K | 176 | `d: f16`, `dmin: f16`, `scales: [u8; 12]`, `qh: [u8; 32]`, `qs: [u8; 128]` |
//! | Q6_K | 210 | `ql: [u8; 128]`, `qh: [u8; 64]`, `scales: [i8; 16]`, `d: f16` |
//! | Q8_K | 292 | `d: f32`, `qs: [i8; 256]`, `bsums: [i16; 16]` |
//!
//! The quantizers are ggml's `quantize_row_*_ref`. For Q4_K, Q5_K and Q6_K that is exactly what
//! `ggml_quantize_chunk` (so `llama-quantize`) runs without an importance matrix: `quantize_q4_K`
//! and friends call the `_ref` function when `quant_weights == NULL`.

use super::common::{
    get_scale_min_k4, make_qkx2_quants, make_qx_quants_rmse1, nearest_int, pack_scale_min_k4, rd_f16, wr_f16,
    GROUP_MAX_EPS,
};

/// Elements per super-block (`QK_K`).
pub const QK_K: usize = 256;
pub const BLOCK_Q4_K: usize = 2 + 2 + 12 + QK_K / 2;
pub const BLOCK_Q5_K: usize = 2 + 2 + 12 + QK_K / 8 + QK_K / 2;
pub const BLOCK_Q6_K: usize = QK_K / 2 + QK_K / 4 + QK_K / 16 + 2;
pub const BLOCK_Q8_K: usize = 4 + QK_K + QK_K / 16 * 2;

/// The part of Q4_K and Q5_K that differs only in the number of levels: per 32-element sub-block
/// an asymmetric fit (`make_qkx2_quants`), then 6-bit scales and mins relative to the block's
/// largest, then requantization of every element against the rounded scales. Fills `yb[0..16]`
/// (d, dmin, scales) and returns the levels in `l`.
fn quantize_k_scale_min(xb: &[f32], yb: &mut [u8], l: &mut [u8; QK_K], nmax: i32, rmin: f32, rdelta: f32, nstep: i32) {
    let mut weights = [0f32; 32];
    let mut laux = [0u8; 32];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..QK_K / 32 {
        let xs = &xb[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (scale, min) =
            make_qkx2_quants(nmax, xs, &weights, &mut l[32 * j..32 * j + 32], &mut laux, rmin, rdelta, nstep, false);
        scales[j] = scale;
        mins[j] = min;
        if scale > max_scale {
            max_scale = scale;
        }
        if min > max_min {
            max_min = min;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..QK_K / 32 {
        // `uint8_t ls = nearest_int(...)`: the int is truncated to a byte before the MIN.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    yb[4..16].fill(0);
    pack_scale_min_k4(&ls, &lm, &mut yb[4..16]);
    let d_all = rd_f16_of(wr_f16(&mut yb[0..2], max_scale / 63.0));
    let dmin_all = rd_f16_of(wr_f16(&mut yb[2..4], max_min / 63.0));
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, &yb[4..16]);
        let d = d_all * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin_all * m as f32;
        for ii in 0..32 {
            let q = nearest_int((xb[32 * j + ii] + dm) / d).clamp(0, nmax);
            l[32 * j + ii] = q as u8;
        }
    }
}

#[inline(always)]
fn rd_f16_of(h: u16) -> f32 {
    super::half::f16_to_f32(h)
}

pub(crate) fn quantize_q4_k(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(BLOCK_Q4_K)) {
        quantize_k_scale_min(xb, yb, &mut l, 15, -1.0, 0.1, 20);
        let qs = &mut yb[16..];
        for (jb, j) in (0..QK_K).step_by(64).enumerate() {
            for i in 0..32 {
                qs[32 * jb + i] = l[j + i] | (l[j + i + 32] << 4);
            }
        }
    }
}

pub(crate) fn quantize_q5_k(x: &[f32], y: &mut [u8]) {
    let mut l = [0u8; QK_K];
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(BLOCK_Q5_K)) {
        quantize_k_scale_min(xb, yb, &mut l, 31, -0.5, 0.1, 15);
        let (qh, ql) = yb[16..].split_at_mut(QK_K / 8);
        qh.fill(0);
        let mut m1 = 1u8;
        let mut m2 = 2u8;
        for (nb, n) in (0..QK_K).step_by(64).enumerate() {
            for j in 0..32 {
                let mut l1 = l[n + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = l[n + j + 32];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                ql[32 * nb + j] = l1 | (l2 << 4);
            }
            m1 <<= 2;
            m2 <<= 2;
        }
    }
}

pub(crate) fn quantize_q6_k(x: &[f32], y: &mut [u8]) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(BLOCK_Q6_K)) {
        let mut max_scale = 0.0f32;
        let mut max_abs_scale = 0.0f32;
        for ib in 0..QK_K / 16 {
            let scale = make_qx_quants_rmse1(32, &xb[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            scales[ib] = scale;
            let abs_scale = scale.abs();
            if abs_scale > max_abs_scale {
                max_abs_scale = abs_scale;
                max_scale = scale;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            yb.fill(0);
            continue;
        }
        let iscale = -128.0f32 / max_scale;
        let d_all = rd_f16_of(wr_f16(&mut yb[208..210], 1.0 / iscale));
        let (qlh, sc) = yb[..208].split_at_mut(192);
        for ib in 0..QK_K / 16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8 as u8;
        }
        for j in 0..QK_K / 16 {
            let d = d_all * (sc[j] as i8) as f32;
            if d == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(xb[16 * j + ii] / d).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as i8;
            }
        }
        let (ql, qh) = qlh.split_at_mut(QK_K / 2);
        for (half, j) in (0..QK_K).step_by(128).enumerate() {
            let ql = &mut ql[64 * half..64 * half + 64];
            let qh = &mut qh[32 * half..32 * half + 32];
            for i in 0..32 {
                let (a, b, c, e) = (l[j + i] as u8, l[j + i + 32] as u8, l[j + i + 64] as u8, l[j + i + 96] as u8);
                ql[i] = (a & 0xF) | ((c & 0xF) << 4);
                ql[i + 32] = (b & 0xF) | ((e & 0xF) << 4);
                qh[i] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6);
            }
        }
    }
}

/// Q8_K as `quantize_row_q8_K_ref`. An all-zero block gets `d = 0`, `qs = 0` and (unlike the C
/// code, which leaves them as they were) `bsums = 0`.
pub(crate) fn quantize_q8_k(x: &[f32], y: &mut [u8]) {
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.chunks_exact_mut(BLOCK_Q8_K)) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax == 0.0 {
            yb.fill(0);
            continue;
        }
        let iscale = -127.0f32 / max;
        let (d, rest) = yb.split_at_mut(4);
        let (qs, bsums) = rest.split_at_mut(QK_K);
        for j in 0..QK_K {
            qs[j] = nearest_int(iscale * xb[j]).min(127) as i8 as u8;
        }
        for j in 0..QK_K / 16 {
            let sum: i32 = qs[16 * j..16 * j + 16].iter().map(|&q| q as i8 as i32).sum();
            bsums[2 * j..2 * j + 2].copy_from_slice(&(sum as i16).to_le_bytes());
        }
        d.copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

pub(crate) fn dequantize_q4_k(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(BLOCK_Q4_K).zip(y.chunks_exact_mut(QK_K)) {
        let d = rd_f16(&xb[0..2]);
        let min = rd_f16(&xb[2..4]);
        let sc = &xb[4..16];
        let q = &xb[16..];
        for k in 0..4 {
            let (s1, m1) = get_scale_min_k4(2 * k, sc);
            let (s2, m2) = get_scale_min_k4(2 * k + 1, sc);
            let (d1, m1) = (d * s1 as f32, min * m1 as f32);
            let (d2, m2) = (d * s2 as f32, min * m2 as f32);
            let qq = &q[32 * k..32 * k + 32];
            let out = &mut yb[64 * k..64 * k + 64];
            for l in 0..32 {
                out[l] = d1 * (qq[l] & 0xF) as f32 - m1;
                out[l + 32] = d2 * (qq[l] >> 4) as f32 - m2;
            }
        }
    }
}

pub(crate) fn dequantize_q5_k(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(BLOCK_Q5_K).zip(y.chunks_exact_mut(QK_K)) {
        let d = rd_f16(&xb[0..2]);
        let min = rd_f16(&xb[2..4]);
        let sc = &xb[4..16];
        let qh = &xb[16..48];
        let ql = &xb[48..];
        let mut u1 = 1u8;
        let mut u2 = 2u8;
        for k in 0..4 {
            let (s1, m1) = get_scale_min_k4(2 * k, sc);
            let (s2, m2) = get_scale_min_k4(2 * k + 1, sc);
            let (d1, m1) = (d * s1 as f32, min * m1 as f32);
            let (d2, m2) = (d * s2 as f32, min * m2 as f32);
            let qq = &ql[32 * k..32 * k + 32];
            let out = &mut yb[64 * k..64 * k + 64];
            for l in 0..32 {
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                out[l] = d1 * ((qq[l] & 0xF) + h1) as f32 - m1;
                out[l + 32] = d2 * ((qq[l] >> 4) + h2) as f32 - m2;
            }
            u1 <<= 2;
            u2 <<= 2;
        }
    }
}

pub(crate) fn dequantize_q6_k(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(BLOCK_Q6_K).zip(y.chunks_exact_mut(QK_K)) {
        let d = rd_f16(&xb[208..210]);
        for half in 0..2 {
            let ql = &xb[64 * half..64 * half + 64];
            let qh = &xb[128 + 32 * half..128 + 32 * half + 32];
            let sc = &xb[192 + 8 * half..192 + 8 * half + 8];
            let out = &mut yb[128 * half..128 * half + 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
            }
        }
    }
}

pub(crate) fn dequantize_q8_k(x: &[u8], y: &mut [f32]) {
    for (xb, yb) in x.chunks_exact(BLOCK_Q8_K).zip(y.chunks_exact_mut(QK_K)) {
        let d = f32::from_le_bytes([xb[0], xb[1], xb[2], xb[3]]);
        for j in 0..QK_K {
            yb[j] = d * (xb[4 + j] as i8) as f32;
        }
    }
}
