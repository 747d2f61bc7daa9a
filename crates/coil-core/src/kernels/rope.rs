//! Rotary position embedding, and the f64 `exp`/`ln`/`sin`/`cos` it needs written out in plain
//! arithmetic, so that native and wasm builds (whose `libm`s differ in the last bit) compute the
//! same angles and therefore the same attention, bit for bit.
//!
//! For each head of `hd` values, the first `n_rot` are rotated in pairs by `θ_i = pos ·
//! base^(−2i/n_rot)`, `i < n_rot/2`:
//! * NORM (llama.cpp `LLAMA_ROPE_TYPE_NORM`): pairs `(2i, 2i+1)`;
//! * NEOX (transformers' `rotate_half`): pairs `(i, i + n_rot/2)`;
//! * NORM over Llama-permuted rows (Bamba): transformers' pairs `(i, i + n_rot/2)` where llama.cpp's
//!   converter put them (see [`Rope::NormPermuted`]).
//!
//! `x' = x·cos θ − y·sin θ`, `y' = x·sin θ + y·cos θ`, in f32 with f32 cos/sin; the remaining
//! `hd − n_rot` values pass through.

#![allow(clippy::excessive_precision)]

use crate::model::hparams::Rope;

const LN2_HI: f64 = 6.931_471_803_691_238_2e-1;
const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
const LN2: f64 = std::f64::consts::LN_2;

/// `2^n` for `n` in the normal range.
fn pow2i(n: i64) -> f64 {
    f64::from_bits(((n + 1023) as u64) << 52)
}

/// `e^x` (relative error ~1e-16 for |x| < 700).
pub fn exp_f64(x: f64) -> f64 {
    if x > 709.0 {
        return f64::INFINITY;
    }
    if x < -708.0 {
        return 0.0;
    }
    let n = (x / LN2).round();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor series to r^16/16! (|r| ≤ 0.35: the next term is below 1e-19).
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..=16 {
        term = term * r / k as f64;
        sum += term;
    }
    sum * pow2i(n as i64)
}

/// `ln x` for finite `x > 0` (relative error ~1e-16).
pub fn ln_f64(x: f64) -> f64 {
    debug_assert!(x > 0.0 && x.is_finite());
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52)); // [1, 2)
    if e == -1023 {
        // Subnormal: renormalise.
        return ln_f64(x * pow2i(60)) - 60.0 * LN2;
    }
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln m = 2 atanh(s), s = (m−1)/(m+1), |s| ≤ 0.172.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut k = 1.0;
    while k < 40.0 {
        sum += term / k;
        term *= s2;
        k += 2.0;
    }
    e as f64 * LN2_HI + (e as f64 * LN2_LO + 2.0 * sum)
}

/// `(sin x, cos x)` (absolute error ~1e-16 for |x| < 2^20·π/2).
pub fn sin_cos_f64(x: f64) -> (f64, f64) {
    // Cody–Waite reduction by π/2 in three parts (fdlibm's split: the first two hold 33 bits
    // each, so k·P1 and k·P2 are exact for k < 2^20).
    const P1: f64 = 1.570_796_326_734_125_614_17;
    const P2: f64 = 6.077_100_506_303_965_976_60e-11;
    const P3: f64 = 2.022_266_248_795_950_631_54e-21;
    let k = (x * std::f64::consts::FRAC_2_PI).round();
    let r = ((x - k * P1) - k * P2) - k * P3;
    let r2 = r * r;
    // Taylor series to r^17 / r^16 (|r| ≤ π/4).
    let (mut s, mut c) = (r, 1.0);
    let (mut ts, mut tc) = (r, 1.0);
    let mut n = 1.0;
    for _ in 0..8 {
        ts = -ts * r2 / ((n + 1.0) * (n + 2.0));
        tc = -tc * r2 / (n * (n + 1.0));
        s += ts;
        c += tc;
        n += 2.0;
    }
    match (k as i64).rem_euclid(4) {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

/// The inverse frequencies `base^(−2i/n_rot)`, `i < n_rot/2`.
pub fn inv_freqs(n_rot: usize, base: f32) -> Vec<f64> {
    let lb = ln_f64(base as f64);
    (0..n_rot / 2).map(|i| exp_f64(-((2 * i) as f64) / n_rot as f64 * lb)).collect()
}

/// `cos θ_i, sin θ_i` at `pos`, as f32, into `cs` (`[n_rot/2][2]`).
pub fn angles(inv_freq: &[f64], pos: usize, cs: &mut [f32]) {
    for (i, &f) in inv_freq.iter().enumerate() {
        let (s, c) = sin_cos_f64(pos as f64 * f);
        cs[2 * i] = c as f32;
        cs[2 * i + 1] = s as f32;
    }
}

/// Rotates every head (`hd` floats each) of one token's `x` with the angles `cs` from [`angles`].
pub fn rope_row(kind: Rope, x: &mut [f32], hd: usize, n_rot: usize, cs: &[f32]) {
    let half = n_rot / 2;
    // Where the Llama permute puts dim j of a head.
    let permuted = |j: usize| if j < hd / 2 { 2 * j } else { 2 * (j - hd / 2) + 1 };
    for head in x.chunks_exact_mut(hd) {
        for i in 0..half {
            let (c, s) = (cs[2 * i], cs[2 * i + 1]);
            let (a, b) = match kind {
                Rope::None => return,
                Rope::Norm => (2 * i, 2 * i + 1),
                Rope::Neox => (i, i + half),
                Rope::NormPermuted => (permuted(i), permuted(i + half)),
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * c - x1 * s;
            head[b] = x0 * s + x1 * c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f64_math_matches_libm() {
        let mut worst: f64 = 0.0;
        for i in 0..20000 {
            let x = (i as f64 - 10000.0) * 0.0731;
            let e = exp_f64(x / 30.0);
            worst = worst.max(((e - (x / 30.0).exp()) / (x / 30.0).exp()).abs());
            let (s, c) = sin_cos_f64(x * 13.7);
            worst = worst.max((s - (x * 13.7).sin()).abs()).max((c - (x * 13.7).cos()).abs());
            let y = (i as f64 + 1.0) * 0.37;
            worst = worst.max(((ln_f64(y) - y.ln()) / y.ln().abs().max(1.0)).abs());
        }
        assert!(worst < 1e-13, "worst {worst}");
        for &x in &[1e-310, 1e-300, 0.5, 1.0, 2.0, 1e300] {
            assert!(((ln_f64(x) - f64::ln(x)) / f64::ln(x).abs().max(1.0)).abs() < 1e-14, "ln {x}");
        }
        // Large angles (a million positions at frequency 1).
        for &x in &[1e5, 7.77e5, 1e6 + 0.3] {
            let (s, c) = sin_cos_f64(x);
            assert!((s - x.sin()).abs() < 1e-9 && (c - x.cos()).abs() < 1e-9, "sincos {x}");
        }
    }

    #[test]
    fn rope_rotates_pairs_and_keeps_norms() {
        let inv = inv_freqs(4, 10000.0);
        let mut cs = vec![0f32; 4];
        angles(&inv, 3, &mut cs);
        // NEOX pairs (0,2), (1,3); dims 4..6 pass through.
        let mut x = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        rope_row(Rope::Neox, &mut x, 6, 4, &cs);
        let t0 = 3.0f64;
        let t1 = 3.0 * 10000f64.powf(-0.5);
        let want0 = (1.0 * t0.cos() - 3.0 * t0.sin(), 1.0 * t0.sin() + 3.0 * t0.cos());
        let want1 = (2.0 * t1.cos() - 4.0 * t1.sin(), 2.0 * t1.sin() + 4.0 * t1.cos());
        assert!((x[0] as f64 - want0.0).abs() < 1e-6 && (x[2] as f64 - want0.1).abs() < 1e-6);
        assert!((x[1] as f64 - want1.0).abs() < 1e-6 && (x[3] as f64 - want1.1).abs() < 1e-6);
        assert_eq!(&x[4..], &[5.0, 6.0]);
        // NORM pairs (0,1), (2,3).
        let mut y = vec![1.0f32, 3.0, 2.0, 4.0];
        rope_row(Rope::Norm, &mut y, 4, 4, &cs);
        assert!((y[0] as f64 - want0.0).abs() < 1e-6 && (y[1] as f64 - want0.1).abs() < 1e-6);
        assert!((y[2] as f64 - want1.0).abs() < 1e-6 && (y[3] as f64 - want1.1).abs() < 1e-6);
        // Permuted rows: with n_rot = hd it is NORM; with n_rot = hd/2 (head of 8, 4 rotated), the
        // transformers pairs (0,2), (1,3) sit at (0,4), (2,6) after the permute.
        let mut p = vec![1.0f32, 3.0, 2.0, 4.0];
        rope_row(Rope::NormPermuted, &mut p, 4, 4, &cs);
        assert_eq!(p, y);
        let mut q = vec![1.0f32, 0.5, 2.0, 0.25, 3.0, 0.125, 4.0, 0.0625];
        rope_row(Rope::NormPermuted, &mut q, 8, 4, &cs);
        assert!((q[0] as f64 - want0.0).abs() < 1e-6 && (q[4] as f64 - want0.1).abs() < 1e-6);
        assert!((q[2] as f64 - want1.0).abs() < 1e-6 && (q[6] as f64 - want1.1).abs() < 1e-6);
        assert_eq!([q[1], q[3], q[5], q[7]], [0.5, 0.25, 0.125, 0.0625]);
        // Position 0 is the identity.
        angles(&inv, 0, &mut cs);
        let mut z = vec![1.5f32, -2.0, 0.25, 7.0];
        rope_row(Rope::Neox, &mut z, 4, 4, &cs);
        assert_eq!(z, vec![1.5, -2.0, 0.25, 7.0]);
    }
}
