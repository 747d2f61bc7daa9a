//! f32 dot product: the building block of matrix-vector products. f32 accumulation everywhere.

/// Scalar reference: sequential f32 accumulation in four lanes (the same summation shape as the
/// SIMD paths' lane-wise accumulation reduces to, so differences stay at rounding level).
pub fn dot_f32_ref(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [0f32; 4];
    let mut i = 0;
    while i + 4 <= n {
        for l in 0..4 {
            acc[l] += a[i + l] * b[i + l];
        }
        i += 4;
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

type DotFn = fn(&[f32], &[f32]) -> f32;

/// Every implementation this machine can run, by name (the scalar reference first).
pub fn dot_f32_paths() -> Vec<(&'static str, DotFn)> {
    #[allow(unused_mut)]
    let mut v: Vec<(&'static str, DotFn)> = vec![("dot/scalar", dot_f32_ref)];
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            v.push(("dot/avx2", |a, b| unsafe { x86::dot_avx2(a, b) }));
        }
        if std::is_x86_feature_detected!("avx512f") {
            v.push(("dot/avx512", |a, b| unsafe { x86::dot_avx512(a, b) }));
        }
    }
    #[cfg(target_arch = "aarch64")]
    v.push(("dot/neon", |a, b| unsafe { arm::dot_neon(a, b) }));
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    v.push(("dot/simd128", wasm::dot_simd128));
    v
}

/// The fastest path for this CPU (detected once).
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static BEST: OnceLock<DotFn> = OnceLock::new();
        let f = BEST.get_or_init(|| *dot_f32_paths().last().map(|(_, f)| f).unwrap_or(&(dot_f32_ref as DotFn)));
        f(a, b)
    }
    #[cfg(target_arch = "aarch64")]
    {
        unsafe { arm::dot_neon(a, b) }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        wasm::dot_simd128(a, b)
    }
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        all(target_arch = "wasm32", target_feature = "simd128")
    )))]
    {
        dot_f32_ref(a, b)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)), acc1);
            i += 16;
        }
        let acc = _mm256_add_ps(acc0, acc1);
        let lo = _mm256_castps256_ps128(acc);
        let hi = _mm256_extractf128_ps(acc, 1);
        let s4 = _mm_add_ps(lo, hi);
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
        let mut s = _mm_cvtss_f32(s1);
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut i = 0;
        while i + 32 <= n {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i + 16)), _mm512_loadu_ps(pb.add(i + 16)), acc1);
            i += 32;
        }
        if i < n {
            // Masked tail: loads past the end are suppressed, not performed.
            let rem = n - i;
            let m0: __mmask16 = if rem >= 16 { 0xffff } else { ((1u32 << rem) - 1) as __mmask16 };
            acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m0, pa.add(i)), _mm512_maskz_loadu_ps(m0, pb.add(i)), acc0);
            if rem > 16 {
                let m1 = ((1u32 << (rem - 16)) - 1) as __mmask16;
                acc1 = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(m1, pa.add(i + 16)),
                    _mm512_maskz_loadu_ps(m1, pb.add(i + 16)),
                    acc1,
                );
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }
}

#[cfg(target_arch = "aarch64")]
mod arm {
    use std::arch::aarch64::*;

    pub unsafe fn dot_neon(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc0 = vdupq_n_f32(0.0);
        let mut acc1 = vdupq_n_f32(0.0);
        let mut i = 0;
        while i + 8 <= n {
            acc0 = vfmaq_f32(acc0, vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
            acc1 = vfmaq_f32(acc1, vld1q_f32(pa.add(i + 4)), vld1q_f32(pb.add(i + 4)));
            i += 8;
        }
        let mut s = vaddvq_f32(vaddq_f32(acc0, acc1));
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use std::arch::wasm32::*;

    pub fn dot_simd128(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let mut acc0 = f32x4_splat(0.0);
        let mut acc1 = f32x4_splat(0.0);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: i + 8 <= n bounds both slices; v128_load allows unaligned addresses.
            unsafe {
                let pa = a.as_ptr().add(i) as *const v128;
                let pb = b.as_ptr().add(i) as *const v128;
                acc0 = f32x4_add(acc0, f32x4_mul(v128_load(pa), v128_load(pb)));
                acc1 = f32x4_add(acc1, f32x4_mul(v128_load(pa.add(1)), v128_load(pb.add(1))));
            }
            i += 8;
        }
        let acc = f32x4_add(acc0, acc1);
        let mut s = (f32x4_extract_lane::<0>(acc) + f32x4_extract_lane::<1>(acc))
            + (f32x4_extract_lane::<2>(acc) + f32x4_extract_lane::<3>(acc));
        while i < n {
            s += a[i] * b[i];
            i += 1;
        }
        s
    }
}
