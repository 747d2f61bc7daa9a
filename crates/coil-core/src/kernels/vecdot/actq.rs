#![allow(clippy::needless_range_loop)] // register-array loops index by constant positions on purpose
//! Activation quantizers: an f32 row to Q8_0 / Q8_1 / Q8_K values, bit-identical to ggml's
//! `quantize_row_q8_0_ref`, `quantize_row_q8_1_ref` and `quantize_row_q8_K_ref` (and so to
//! [`crate::quant::quantize_row`]) for every finite input, but kept unpacked ("natural" layout:
//! quants, scales and sums in separate arrays) for the kernels to repack. A scalar version (that
//! mirrors the reference line by line) and SIMD versions (AVX2 on x86-64, simd128 on wasm32) that
//! tests compare byte for byte against [`crate::quant::quantize_row`]. Inputs with NaN or
//! infinities give some quantization, not necessarily ggml's.

use super::ActKind;
use crate::quant::half::{f16_to_f32, f32_to_f16};

/// One quantized activation row in natural order.
#[derive(Default, Clone, Debug, PartialEq)]
pub struct NatAct {
    /// Row length (a multiple of 32, or of 256 for Q8_K).
    pub n: usize,
    /// Quantized values, `n` of them.
    pub q: Vec<i8>,
    /// Scale per block (32 values; 256 for Q8_K). For Q8_0/Q8_1 the f16-rounded scale as f32 (what
    /// the block stores), for Q8_K the f32 scale.
    pub d: Vec<f32>,
    /// Q8_1 only: the block's `s` field (f16-rounded `d * Σq`) as f32.
    pub s: Vec<f32>,
    /// Q8_0 / Q8_1: Σq per block. Q8_K: Σq per 16 values (ggml's `bsums`).
    pub sums: Vec<i32>,
}

impl NatAct {
    pub fn resize(&mut self, kind: ActKind, n: usize) {
        self.n = n;
        self.q.resize(n, 0);
        let (bs, per) = match kind {
            ActKind::Q8_0 | ActKind::Q8_1 => (32, 1),
            ActKind::Q8K => (256, 16),
        };
        self.d.resize(n / bs, 0.0);
        self.s.resize(if kind == ActKind::Q8_1 { n / bs } else { 0 }, 0.0);
        self.sums.resize(n / bs * per, 0);
    }

    /// The row as ggml block bytes (for tests and the exact reference).
    pub fn to_blocks(&self, kind: ActKind) -> Vec<u8> {
        let mut out = Vec::new();
        match kind {
            ActKind::Q8_0 | ActKind::Q8_1 => {
                for b in 0..self.n / 32 {
                    out.extend_from_slice(&f32_to_f16(self.d[b]).to_le_bytes());
                    if kind == ActKind::Q8_1 {
                        out.extend_from_slice(&f32_to_f16(self.s[b]).to_le_bytes());
                    }
                    out.extend(self.q[32 * b..32 * b + 32].iter().map(|&v| v as u8));
                }
            }
            ActKind::Q8K => {
                for b in 0..self.n / 256 {
                    out.extend_from_slice(&self.d[b].to_le_bytes());
                    out.extend(self.q[256 * b..256 * b + 256].iter().map(|&v| v as u8));
                    for j in 0..16 {
                        out.extend_from_slice(&(self.sums[16 * b + j] as i16).to_le_bytes());
                    }
                }
            }
        }
        out
    }
}

/// `(x).round()` then the C cast chain `(int8_t)(int)x` as x86-64 does it.
#[inline(always)]
fn c_round_i8(v: f32) -> i8 {
    let r = v.round();
    (if r.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&r) { i32::MIN } else { r as i32 }) as i8
}

/// ggml's `nearest_int` (round half to even for |x| < 2^22, via the 1.5·2^23 trick).
#[inline(always)]
fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0f32;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Scalar quantizer, the reference code's arithmetic.
pub fn quantize_scalar(kind: ActKind, x: &[f32], a: &mut NatAct) {
    a.resize(kind, x.len());
    match kind {
        ActKind::Q8_0 | ActKind::Q8_1 => {
            for (b, xb) in x.chunks_exact(32).enumerate() {
                let mut amax = 0f32;
                for &v in xb {
                    let av = v.abs();
                    amax = if amax > av { amax } else { av };
                }
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let mut sum = 0i32;
                for j in 0..32 {
                    let q = c_round_i8(xb[j] * id);
                    a.q[32 * b + j] = q;
                    sum += q as i32;
                }
                a.d[b] = f16_to_f32(f32_to_f16(d));
                a.sums[b] = sum;
                if kind == ActKind::Q8_1 {
                    a.s[b] = f16_to_f32(f32_to_f16(sum as f32 * d));
                }
            }
        }
        ActKind::Q8K => {
            for (b, xb) in x.chunks_exact(256).enumerate() {
                let (mut max, mut amax) = (0f32, 0f32);
                for &v in xb {
                    if v.abs() > amax {
                        amax = v.abs();
                        max = v;
                    }
                }
                let q = &mut a.q[256 * b..256 * b + 256];
                if amax == 0.0 {
                    q.fill(0);
                    a.d[b] = 0.0;
                    a.sums[16 * b..16 * b + 16].fill(0);
                    continue;
                }
                let iscale = -127.0f32 / max;
                for j in 0..256 {
                    q[j] = nearest_int(iscale * xb[j]).min(127) as i8;
                }
                for j in 0..16 {
                    a.sums[16 * b + j] = q[16 * j..16 * j + 16].iter().map(|&v| v as i32).sum::<i32>() as i16 as i32;
                }
                a.d[b] = 1.0 / iscale;
            }
        }
    }
}

/// The fastest quantizer for this machine (same results as [`quantize_scalar`]).
pub fn quantize(kind: ActKind, x: &[f32], a: &mut NatAct) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx2_ok() {
            // SAFETY: AVX2 and FMA were detected.
            unsafe { x86::quantize_avx2(kind, x, a) };
            return;
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        wasm::quantize_simd128(kind, x, a);
        return;
    }
    #[allow(unreachable_code)]
    quantize_scalar(kind, x, a)
}

/// An activation quantizer.
pub type QuantizeFn = fn(ActKind, &[f32], &mut NatAct);

/// Every quantizer implementation this machine can run, by name (scalar first).
pub fn quantize_paths() -> Vec<(&'static str, QuantizeFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, QuantizeFn)> = vec![("scalar", quantize_scalar)];
    #[cfg(target_arch = "x86_64")]
    if avx2_ok() {
        v.push(("avx2", |k, x, a| unsafe { x86::quantize_avx2(k, x, a) }));
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    v.push(("simd128", wasm::quantize_simd128));
    v
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_ok() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
    })
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        _mm_cvtss_f32(m)
    }

    #[inline(always)]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 1));
        _mm_cvtsi128_si32(s)
    }

    /// Round half away from zero (C `roundf`), exactly: trunc, then step away where |frac| >= 0.5.
    #[inline(always)]
    unsafe fn round_away(v: __m256) -> __m256 {
        let t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        let fr = _mm256_sub_ps(v, t);
        let sign = _mm256_and_ps(v, _mm256_set1_ps(-0.0));
        let absfr = _mm256_andnot_ps(_mm256_set1_ps(-0.0), fr);
        let step = _mm256_and_ps(
            _mm256_cmp_ps(absfr, _mm256_set1_ps(0.5), _CMP_GE_OQ),
            _mm256_or_ps(sign, _mm256_set1_ps(1.0)),
        );
        _mm256_add_ps(t, step)
    }

    /// Four vectors of i32 -> their low bytes (C's `(int8_t)` truncation), 32 bytes in order.
    #[inline(always)]
    unsafe fn pack4(i0: __m256i, i1: __m256i, i2: __m256i, i3: __m256i) -> __m256i {
        let m = _mm256_set1_epi32(0xFF);
        let a = _mm256_packus_epi32(_mm256_and_si256(i0, m), _mm256_and_si256(i1, m));
        let b = _mm256_packus_epi32(_mm256_and_si256(i2, m), _mm256_and_si256(i3, m));
        let c = _mm256_packus_epi16(a, b);
        _mm256_permutevar8x32_epi32(c, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    /// The low byte of each i32 as a signed value.
    #[inline(always)]
    unsafe fn sext8(v: __m256i) -> __m256i {
        _mm256_srai_epi32(_mm256_slli_epi32(v, 24), 24)
    }

    /// ggml's `nearest_int` exactly (including its results for huge values, infinities, NaN).
    #[inline(always)]
    unsafe fn nearest_int(v: __m256) -> __m256i {
        let val = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12_582_912.0)));
        _mm256_sub_epi32(_mm256_and_si256(val, _mm256_set1_epi32(0x007f_ffff)), _mm256_set1_epi32(0x0040_0000))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn quantize_avx2(kind: ActKind, x: &[f32], a: &mut NatAct) {
        a.resize(kind, x.len());
        let absmask = _mm256_set1_ps(-0.0);
        match kind {
            ActKind::Q8_0 | ActKind::Q8_1 => {
                for b in 0..x.len() / 32 {
                    let p = x.as_ptr().add(32 * b);
                    let v = [
                        _mm256_loadu_ps(p),
                        _mm256_loadu_ps(p.add(8)),
                        _mm256_loadu_ps(p.add(16)),
                        _mm256_loadu_ps(p.add(24)),
                    ];
                    let m01 = _mm256_max_ps(_mm256_andnot_ps(absmask, v[0]), _mm256_andnot_ps(absmask, v[1]));
                    let m23 = _mm256_max_ps(_mm256_andnot_ps(absmask, v[2]), _mm256_andnot_ps(absmask, v[3]));
                    let amax = hmax(_mm256_max_ps(m01, m23));
                    let d = amax / 127.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    let idv = _mm256_set1_ps(id);
                    let mut q = [_mm256_setzero_si256(); 4];
                    for k in 0..4 {
                        q[k] = _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v[k], idv)));
                    }
                    let packed = pack4(q[0], q[1], q[2], q[3]);
                    _mm256_storeu_si256(a.q.as_mut_ptr().add(32 * b) as *mut __m256i, packed);
                    let sum = hsum_i32(_mm256_add_epi32(
                        _mm256_add_epi32(sext8(q[0]), sext8(q[1])),
                        _mm256_add_epi32(sext8(q[2]), sext8(q[3])),
                    ));
                    a.d[b] = f16_to_f32(f32_to_f16(d));
                    a.sums[b] = sum;
                    if kind == ActKind::Q8_1 {
                        a.s[b] = f16_to_f32(f32_to_f16(sum as f32 * d));
                    }
                }
            }
            ActKind::Q8K => {
                for b in 0..x.len() / 256 {
                    let p = x.as_ptr().add(256 * b);
                    let mut m = _mm256_setzero_ps();
                    for k in 0..32 {
                        m = _mm256_max_ps(m, _mm256_andnot_ps(absmask, _mm256_loadu_ps(p.add(8 * k))));
                    }
                    let amax = hmax(m);
                    let q = a.q.as_mut_ptr().add(256 * b);
                    if amax == 0.0 {
                        std::ptr::write_bytes(q, 0, 256);
                        a.d[b] = 0.0;
                        a.sums[16 * b..16 * b + 16].fill(0);
                        continue;
                    }
                    // The first element of largest magnitude (its sign matters).
                    let am = _mm256_set1_ps(amax);
                    let mut max = 0f32;
                    for k in 0..32 {
                        let eq = _mm256_movemask_ps(_mm256_cmp_ps(
                            _mm256_andnot_ps(absmask, _mm256_loadu_ps(p.add(8 * k))),
                            am,
                            _CMP_EQ_OQ,
                        ));
                        if eq != 0 {
                            max = *p.add(8 * k + eq.trailing_zeros() as usize);
                            break;
                        }
                    }
                    let iscale = -127.0f32 / max;
                    let isv = _mm256_set1_ps(iscale);
                    for j in 0..8 {
                        let c127 = _mm256_set1_epi32(127);
                        let mut qi = [_mm256_setzero_si256(); 4];
                        for k in 0..4 {
                            qi[k] = _mm256_min_epi32(
                                nearest_int(_mm256_mul_ps(isv, _mm256_loadu_ps(p.add(32 * j + 8 * k)))),
                                c127,
                            );
                        }
                        _mm256_storeu_si256(q.add(32 * j) as *mut __m256i, pack4(qi[0], qi[1], qi[2], qi[3]));
                        let s01 = hsum_i32(_mm256_add_epi32(sext8(qi[0]), sext8(qi[1])));
                        let s23 = hsum_i32(_mm256_add_epi32(sext8(qi[2]), sext8(qi[3])));
                        // The reference stores the sums as int16.
                        a.sums[16 * b + 2 * j] = s01 as i16 as i32;
                        a.sums[16 * b + 2 * j + 1] = s23 as i16 as i32;
                    }
                    a.d[b] = 1.0 / iscale;
                }
            }
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use super::*;
    use std::arch::wasm32::*;

    #[inline(always)]
    fn hmax(v: v128) -> f32 {
        let a = f32x4_max(v, i32x4_shuffle::<2, 3, 0, 1>(v, v));
        let b = f32x4_max(a, i32x4_shuffle::<1, 0, 3, 2>(a, a));
        f32x4_extract_lane::<0>(b)
    }

    #[inline(always)]
    fn hsum_i32(v: v128) -> i32 {
        let a = i32x4_add(v, i32x4_shuffle::<2, 3, 0, 1>(v, v));
        let b = i32x4_add(a, i32x4_shuffle::<1, 0, 3, 2>(a, a));
        i32x4_extract_lane::<0>(b)
    }

    /// C `roundf`: trunc, then one step away from zero where |frac| >= 0.5.
    #[inline(always)]
    fn round_away(v: v128) -> v128 {
        let t = f32x4_trunc(v);
        let fr = f32x4_abs(f32x4_sub(v, t));
        let one = v128_or(v128_and(v, f32x4_splat(-0.0)), f32x4_splat(1.0));
        f32x4_add(t, v128_and(f32x4_ge(fr, f32x4_splat(0.5)), one))
    }

    #[inline(always)]
    fn load(p: &[f32], i: usize) -> v128 {
        // SAFETY: callers pass i + 4 <= p.len(); v128_load allows unaligned addresses.
        unsafe { v128_load(p.as_ptr().add(i) as *const v128) }
    }

    /// Low bytes (C's `(int8_t)` truncation) of four i32x4, 16 bytes in order.
    #[inline(always)]
    fn narrow16(q: &[v128; 4]) -> v128 {
        let m = u32x4_splat(0xFF);
        let a = u16x8_narrow_i32x4(v128_and(q[0], m), v128_and(q[1], m));
        let b = u16x8_narrow_i32x4(v128_and(q[2], m), v128_and(q[3], m));
        u8x16_narrow_i16x8(a, b)
    }

    #[inline(always)]
    fn sext8(v: v128) -> v128 {
        i32x4_shr(i32x4_shl(v, 24), 24)
    }

    /// `(int)x` as x86-64 does it: truncation, INT_MIN for NaN and out-of-range values.
    #[inline(always)]
    fn c_cvtt(r: v128) -> v128 {
        let ok = f32x4_lt(f32x4_abs(r), f32x4_splat(2_147_483_648.0));
        v128_bitselect(i32x4_trunc_sat_f32x4(r), i32x4_splat(i32::MIN), ok)
    }

    /// ggml's `nearest_int` exactly.
    #[inline(always)]
    fn nearest_int(v: v128) -> v128 {
        let val = f32x4_add(v, f32x4_splat(12_582_912.0));
        i32x4_sub(v128_and(val, i32x4_splat(0x007f_ffff)), i32x4_splat(0x0040_0000))
    }

    pub(super) fn quantize_simd128(kind: ActKind, x: &[f32], a: &mut NatAct) {
        a.resize(kind, x.len());
        match kind {
            ActKind::Q8_0 | ActKind::Q8_1 => {
                for b in 0..x.len() / 32 {
                    let xb = &x[32 * b..32 * b + 32];
                    let v: [v128; 8] = std::array::from_fn(|k| load(xb, 4 * k));
                    let mut m = f32x4_abs(v[0]);
                    for k in 1..8 {
                        m = f32x4_max(m, f32x4_abs(v[k]));
                    }
                    let amax = hmax(m);
                    let d = amax / 127.0;
                    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                    let idv = f32x4_splat(id);
                    let q: [v128; 8] = std::array::from_fn(|k| c_cvtt(round_away(f32x4_mul(v[k], idv))));
                    let lo = narrow16(&[q[0], q[1], q[2], q[3]]);
                    let hi = narrow16(&[q[4], q[5], q[6], q[7]]);
                    // SAFETY: 32 bytes at 32 * b are inside a.q (len x.len()).
                    unsafe {
                        v128_store(a.q.as_mut_ptr().add(32 * b) as *mut v128, lo);
                        v128_store(a.q.as_mut_ptr().add(32 * b + 16) as *mut v128, hi);
                    }
                    let mut s = sext8(q[0]);
                    for k in 1..8 {
                        s = i32x4_add(s, sext8(q[k]));
                    }
                    let sum = hsum_i32(s);
                    a.d[b] = f16_to_f32(f32_to_f16(d));
                    a.sums[b] = sum;
                    if kind == ActKind::Q8_1 {
                        a.s[b] = f16_to_f32(f32_to_f16(sum as f32 * d));
                    }
                }
            }
            ActKind::Q8K => {
                for b in 0..x.len() / 256 {
                    let xb = &x[256 * b..256 * b + 256];
                    let mut m = f32x4_splat(0.0);
                    for k in 0..64 {
                        m = f32x4_max(m, f32x4_abs(load(xb, 4 * k)));
                    }
                    let amax = hmax(m);
                    if amax == 0.0 {
                        a.q[256 * b..256 * b + 256].fill(0);
                        a.d[b] = 0.0;
                        a.sums[16 * b..16 * b + 16].fill(0);
                        continue;
                    }
                    let max = *xb.iter().find(|v| v.abs() == amax).unwrap_or(&amax);
                    let iscale = -127.0f32 / max;
                    let isv = f32x4_splat(iscale);
                    let c127 = i32x4_splat(127);
                    for j in 0..16 {
                        let q: [v128; 4] = std::array::from_fn(|k| {
                            i32x4_min(nearest_int(f32x4_mul(isv, load(xb, 16 * j + 4 * k))), c127)
                        });
                        // SAFETY: 16 bytes at 256 * b + 16 * j are inside a.q.
                        unsafe { v128_store(a.q.as_mut_ptr().add(256 * b + 16 * j) as *mut v128, narrow16(&q)) };
                        let s = hsum_i32(i32x4_add(
                            i32x4_add(sext8(q[0]), sext8(q[1])),
                            i32x4_add(sext8(q[2]), sext8(q[3])),
                        ));
                        a.sums[16 * b + j] = s as i16 as i32;
                    }
                    a.d[b] = 1.0 / iscale;
                }
            }
        }
    }
}
