//! Element-wise math for the SSM kernels — `exp`, `log`, SiLU, softplus — and the small SIMD layer
//! the SSM/conv/norm kernels are written against.
//!
//! # One algorithm, every target
//! Every path (the scalar references `*_ref`, the portable path and the AVX2, AVX-512, NEON and
//! wasm simd128 paths) computes `exp` and `log` with the same Cephes-style polynomials (range
//! reduction by `ln 2` with a two-part constant, degree-6 polynomial for `exp`, degree-8 for `log`),
//! with the same operations in the same order and no fused multiply-add anywhere, so every path
//! gives **bit-identical** results (native and wasm alike; tests compare with `==`). Reductions
//! (sums over a row) go through [`canon_sum`]: 16 virtual lanes and a fixed addition tree that
//! every ISA implements the same way, whatever its vector width.
//!
//! Accuracy (measured by `tests::exp_and_log_accuracy` against f64 `exp`/`ln_1p` over dense grids):
//! * `exp(x)`: ≤ 2 ulp relative for x in [-87.3, 88]; below -87.34 (where e^x is subnormal) it
//!   returns 0, above 88 it returns e^88, NaN stays NaN. Neither end occurs in the models except as
//!   "decays to nothing" (an absolute error below 1.2e-38).
//! * `softplus(x) = log(1 + e^x)` (identity above 20, as ggml and PyTorch): ≤ 4 ulp relative.
//! * `silu(x) = x / (1 + e^-x)`: ≤ 3 ulp relative.
//!
//! # The SIMD layer
//! [`Vf32`] is a vector of f32 lanes with the handful of operations the kernels need. Each kernel is
//! written once as an `#[inline(always)]` generic function over `V: Vf32` and instantiated inside a
//! `#[target_feature]` wrapper per ISA, so LLVM inlines the intrinsics into one specialised body
//! per ISA. [`Isa`] names the instantiations; [`Isa::best`] picks the fastest at run time on x86-64
//! (AVX-512 > AVX2+FMA > portable), NEON is baseline on aarch64, simd128 is chosen at compile time on
//! wasm32. The portable instantiation (`Isa::Portable`, one lane, no FMA) runs everywhere.

#![allow(clippy::missing_safety_doc)]

// ---------------------------------------------------------------------------------------------
// Constants (Cephes expf / logf)
// ---------------------------------------------------------------------------------------------

const EXP_HI: f32 = 88.0;
/// ln(FLT_MIN): below it 2^n would leave the normal range.
const EXP_LO: f32 = -87.336_54;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const EP0: f32 = 1.987_569_1e-4;
const EP1: f32 = 1.398_2e-3;
const EP2: f32 = 8.333_452e-3;
const EP3: f32 = 4.166_579_6e-2;
const EP4: f32 = 1.666_666_5e-1;
#[allow(clippy::excessive_precision)]
const EP5: f32 = 5.000_000_1e-1;

const SQRTHF: f32 = std::f32::consts::FRAC_1_SQRT_2;
const LP0: f32 = 7.037_683_6e-2;
const LP1: f32 = -1.151_461e-1;
const LP2: f32 = 1.167_699_9e-1;
const LP3: f32 = -1.242_014_1e-1;
const LP4: f32 = 1.424_932_3e-1;
const LP5: f32 = -1.666_805_8e-1;
const LP6: f32 = 2.000_071_5e-1;
const LP7: f32 = -2.499_999_4e-1;
#[allow(clippy::excessive_precision)]
const LP8: f32 = 3.333_333_1e-1;

/// Softplus passes its input through above this (ggml `ggml_compute_softplus_f32`, PyTorch's
/// default `threshold=20`).
pub const SOFTPLUS_THRESHOLD: f32 = 20.0;

/// Round to nearest, ties to even, for |x| < 2^22 (the magic-number trick: the same result as the
/// SIMD rounding instructions, and no libm call on baseline x86-64).
#[inline(always)]
fn round_even_small(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    if x.abs() < 4_194_304.0 {
        (x + MAGIC) - MAGIC
    } else {
        x
    }
}

// ---------------------------------------------------------------------------------------------
// Scalar references
// ---------------------------------------------------------------------------------------------

/// e^x, the reference of the vectorised `exp` (same algorithm, plain f32 arithmetic, no FMA).
/// 0 below −87.34 (where e^x is subnormal), e^88 above 88, NaN for NaN.
pub fn exp_ref(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < EXP_LO {
        return 0.0;
    }
    let x = x.min(EXP_HI);
    let n = round_even_small(x * LOG2E);
    let r = x - n * LN2_HI;
    let r = r - n * LN2_LO;
    let z = r * r;
    let mut p = EP0;
    p = p * r + EP1;
    p = p * r + EP2;
    p = p * r + EP3;
    p = p * r + EP4;
    p = p * r + EP5;
    let y = p * z + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// ln(x) for positive normal x, the reference of the vectorised `log` (Cephes logf).
pub fn log_ref(x: f32) -> f32 {
    let bits = x.to_bits();
    let mut e = (((bits >> 23) & 0xff) as i32 - 126) as f32;
    let m = f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000); // [0.5, 1)
    let xr = if m < SQRTHF {
        e -= 1.0;
        m + m - 1.0
    } else {
        m - 1.0
    };
    let z = xr * xr;
    let mut y = LP0;
    y = y * xr + LP1;
    y = y * xr + LP2;
    y = y * xr + LP3;
    y = y * xr + LP4;
    y = y * xr + LP5;
    y = y * xr + LP6;
    y = y * xr + LP7;
    y = y * xr + LP8;
    y = y * xr * z;
    y += e * LN2_LO;
    y += -0.5 * z;
    let r = xr + y;
    r + e * LN2_HI
}

/// softplus(x) = ln(1 + e^x), x itself above 20. ln(1+u) is evaluated as ln(1+u)·u/((1+u)−1)
/// (exact to rounding even where 1+u rounds to 1).
pub fn softplus_ref(x: f32) -> f32 {
    if x > SOFTPLUS_THRESHOLD {
        return x;
    }
    let u = exp_ref(x);
    let w = 1.0 + u;
    let d = w - 1.0;
    if d == 0.0 {
        u
    } else {
        log_ref(w) * (u / d)
    }
}

/// silu(x) = x·sigmoid(x) = x / (1 + e^−x).
pub fn silu_ref(x: f32) -> f32 {
    x / (1.0 + exp_ref(-x))
}

// ---------------------------------------------------------------------------------------------
// The SIMD layer
// ---------------------------------------------------------------------------------------------

/// A vector of `LANES` f32. All methods are `unsafe`: they may only run on a CPU with the
/// instruction set of the implementing type, and pointers must be valid for `LANES` floats.
pub trait Vf32: Copy {
    const LANES: usize;
    type M: Copy;
    unsafe fn splat(v: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// `LANES` IEEE half floats widened to f32 (exact; subnormals, infinities and NaN included).
    unsafe fn load_f16(p: *const u16) -> Self;
    unsafe fn add(self, b: Self) -> Self;
    unsafe fn sub(self, b: Self) -> Self;
    unsafe fn mul(self, b: Self) -> Self;
    unsafe fn div(self, b: Self) -> Self;
    /// `self * b + c`: the product rounded, then the sum — never fused, on any ISA (wasm simd128 has
    /// no FMA, and a fused multiply-add rounds once where this rounds twice).
    unsafe fn fmadd(self, b: Self, c: Self) -> Self;
    /// `self < b ? self : b` (x86 semantics: `b` when either is NaN).
    unsafe fn min(self, b: Self) -> Self;
    /// `self > b ? self : b` (`b` when either is NaN).
    unsafe fn max(self, b: Self) -> Self;
    /// Round to nearest, ties to even.
    unsafe fn round(self) -> Self;
    unsafe fn gt(self, b: Self) -> Self::M;
    unsafe fn lt(self, b: Self) -> Self::M;
    unsafe fn eq(self, b: Self) -> Self::M;
    /// Per lane: `m ? t : f`.
    unsafe fn select(m: Self::M, t: Self, f: Self) -> Self;
    /// 2^n for lanes holding integers in [-126, 127].
    unsafe fn pow2i(self) -> Self;
    /// (m, e) with self = m·2^e, m in [0.5, 1), for positive normal lanes.
    unsafe fn frexp(self) -> (Self, Self);
    /// Sum of the lanes (ISA-specific order: use [`canon_sum`] where the result must be the same
    /// on every ISA).
    unsafe fn hsum(self) -> f32;
}

/// Vectorised e^x (see the module docs for accuracy).
#[inline(always)]
pub unsafe fn exp_v<V: Vf32>(x: V) -> V {
    // `max`/`min` return their second operand when one is NaN, so NaN flows through to the result.
    let xc = V::splat(EXP_HI).min(V::splat(EXP_LO).max(x));
    let n = xc.mul(V::splat(LOG2E)).round();
    let r = n.fmadd(V::splat(-LN2_HI), xc);
    let r = n.fmadd(V::splat(-LN2_LO), r);
    let z = r.mul(r);
    let mut p = V::splat(EP0);
    p = p.fmadd(r, V::splat(EP1));
    p = p.fmadd(r, V::splat(EP2));
    p = p.fmadd(r, V::splat(EP3));
    p = p.fmadd(r, V::splat(EP4));
    p = p.fmadd(r, V::splat(EP5));
    let y = p.fmadd(z, r).add(V::splat(1.0));
    // Below the normal range: 0 (the lt is false for NaN, which stays NaN).
    V::select(x.lt(V::splat(EXP_LO)), V::splat(0.0), y.mul(n.pow2i()))
}

/// Vectorised ln(x) for positive normal lanes.
#[inline(always)]
pub unsafe fn log_v<V: Vf32>(x: V) -> V {
    let (m, e) = x.frexp();
    let small = m.lt(V::splat(SQRTHF));
    let one = V::splat(1.0);
    let e = V::select(small, e.sub(one), e);
    let xr = V::select(small, m.add(m).sub(one), m.sub(one));
    let z = xr.mul(xr);
    let mut y = V::splat(LP0);
    y = y.fmadd(xr, V::splat(LP1));
    y = y.fmadd(xr, V::splat(LP2));
    y = y.fmadd(xr, V::splat(LP3));
    y = y.fmadd(xr, V::splat(LP4));
    y = y.fmadd(xr, V::splat(LP5));
    y = y.fmadd(xr, V::splat(LP6));
    y = y.fmadd(xr, V::splat(LP7));
    y = y.fmadd(xr, V::splat(LP8));
    y = y.mul(xr).mul(z);
    y = e.fmadd(V::splat(LN2_LO), y);
    y = z.fmadd(V::splat(-0.5), y);
    let r = xr.add(y);
    e.fmadd(V::splat(LN2_HI), r)
}

/// Vectorised softplus (identity above 20).
#[inline(always)]
pub unsafe fn softplus_v<V: Vf32>(x: V) -> V {
    let u = exp_v(x);
    let one = V::splat(1.0);
    let w = one.add(u);
    let d = w.sub(one);
    let safe_d = V::select(d.eq(V::splat(0.0)), one, d);
    let l = log_v(w).mul(u.div(safe_d));
    let l = V::select(d.eq(V::splat(0.0)), u, l);
    V::select(x.gt(V::splat(SOFTPLUS_THRESHOLD)), x, l)
}

/// Vectorised silu.
#[inline(always)]
pub unsafe fn silu_v<V: Vf32>(x: V) -> V {
    x.div(V::splat(1.0).add(exp_v(V::splat(0.0).sub(x))))
}

/// The canonical sum `Σ_i term(i)` over `n` elements, the same bits on every ISA: the elements
/// `16k + l` (for the whole 16-element chunks) go to virtual lane `l` in order of `k`; the 16
/// lanes are added as a halving tree (`l + 8`, then `l + 4`, `l + 2`, `l + 1`); the `n mod 16` left
/// over are then added one by one. `term(i)` gives `V::LANES` values (elements `i ..`) and is called
/// for `i` = multiples of `V::LANES` inside the whole chunks; `tail(i)` gives the leftover ones.
/// (`V::LANES` divides 16 for every ISA: 1, 4, 8, 16.)
#[inline(always)]
pub unsafe fn canon_sum<V: Vf32>(
    n: usize,
    mut term: impl FnMut(usize) -> V,
    mut tail: impl FnMut(usize) -> f32,
) -> f32 {
    let k = 16 / V::LANES;
    let mut acc = [V::splat(0.0); 16];
    let mut i = 0;
    while i + 16 <= n {
        for (j, a) in acc.iter_mut().enumerate().take(k) {
            *a = a.add(term(i + j * V::LANES));
        }
        i += 16;
    }
    let mut l = [0f32; 16];
    for j in 0..k {
        acc[j].store(l.as_mut_ptr().add(j * V::LANES));
    }
    let mut w = 8;
    while w >= 1 {
        for j in 0..w {
            l[j] += l[j + w];
        }
        w /= 2;
    }
    let mut s = l[0];
    while i < n {
        s += tail(i);
        i += 1;
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Portable: one lane, plain f32 (runs everywhere; the same arithmetic as the references)
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
pub struct Portable(f32);

impl Vf32 for Portable {
    const LANES: usize = 1;
    type M = bool;
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        Portable(v)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Portable(*p)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> Self {
        Portable(crate::quant::half::f16_to_f32(*p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        *p = self.0
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Portable(self.0 + b.0)
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Portable(self.0 - b.0)
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Portable(self.0 * b.0)
    }
    #[inline(always)]
    unsafe fn div(self, b: Self) -> Self {
        Portable(self.0 / b.0)
    }
    #[inline(always)]
    unsafe fn fmadd(self, b: Self, c: Self) -> Self {
        Portable(self.0 * b.0 + c.0)
    }
    #[inline(always)]
    unsafe fn min(self, b: Self) -> Self {
        Portable(if self.0 < b.0 { self.0 } else { b.0 })
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        Portable(if self.0 > b.0 { self.0 } else { b.0 })
    }
    #[inline(always)]
    unsafe fn round(self) -> Self {
        Portable(round_even_small(self.0))
    }
    #[inline(always)]
    unsafe fn gt(self, b: Self) -> bool {
        self.0 > b.0
    }
    #[inline(always)]
    unsafe fn lt(self, b: Self) -> bool {
        self.0 < b.0
    }
    #[inline(always)]
    unsafe fn eq(self, b: Self) -> bool {
        self.0 == b.0
    }
    #[inline(always)]
    unsafe fn select(m: bool, t: Self, f: Self) -> Self {
        if m {
            t
        } else {
            f
        }
    }
    #[inline(always)]
    unsafe fn pow2i(self) -> Self {
        Portable(f32::from_bits(((self.0 as i32 + 127) as u32) << 23))
    }
    #[inline(always)]
    unsafe fn frexp(self) -> (Self, Self) {
        let bits = self.0.to_bits();
        let e = (((bits >> 23) & 0xff) as i32 - 126) as f32;
        (Portable(f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000)), Portable(e))
    }
    #[inline(always)]
    unsafe fn hsum(self) -> f32 {
        self.0
    }
}

// ---------------------------------------------------------------------------------------------
// x86-64: AVX2+FMA and AVX-512F
// ---------------------------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Vf32;
    use std::arch::x86_64::*;

    #[derive(Clone, Copy)]
    pub struct Avx2(__m256);

    impl Vf32 for Avx2 {
        const LANES: usize = 8;
        type M = __m256;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Avx2(_mm256_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx2(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const u16) -> Self {
            Avx2(_mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm256_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            Avx2(_mm256_add_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn sub(self, b: Self) -> Self {
            Avx2(_mm256_sub_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            Avx2(_mm256_mul_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn div(self, b: Self) -> Self {
            Avx2(_mm256_div_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn fmadd(self, b: Self, c: Self) -> Self {
            // Not fused: wasm has no FMA, and every ISA must round exactly as the others do.
            Avx2(_mm256_add_ps(_mm256_mul_ps(self.0, b.0), c.0))
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            Avx2(_mm256_min_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            Avx2(_mm256_max_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            Avx2(_mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(self.0))
        }
        #[inline(always)]
        unsafe fn gt(self, b: Self) -> __m256 {
            _mm256_cmp_ps::<_CMP_GT_OQ>(self.0, b.0)
        }
        #[inline(always)]
        unsafe fn lt(self, b: Self) -> __m256 {
            _mm256_cmp_ps::<_CMP_LT_OQ>(self.0, b.0)
        }
        #[inline(always)]
        unsafe fn eq(self, b: Self) -> __m256 {
            _mm256_cmp_ps::<_CMP_EQ_OQ>(self.0, b.0)
        }
        #[inline(always)]
        unsafe fn select(m: __m256, t: Self, f: Self) -> Self {
            Avx2(_mm256_blendv_ps(f.0, t.0, m))
        }
        #[inline(always)]
        unsafe fn pow2i(self) -> Self {
            let n = _mm256_cvtps_epi32(self.0);
            Avx2(_mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n, _mm256_set1_epi32(127)))))
        }
        #[inline(always)]
        unsafe fn frexp(self) -> (Self, Self) {
            let bits = _mm256_castps_si256(self.0);
            let e = _mm256_sub_epi32(
                _mm256_and_si256(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(0xff)),
                _mm256_set1_epi32(126),
            );
            let m = _mm256_or_si256(
                _mm256_and_si256(bits, _mm256_set1_epi32(0x807f_ffffu32 as i32)),
                _mm256_set1_epi32(0x3f00_0000),
            );
            (Avx2(_mm256_castsi256_ps(m)), Avx2(_mm256_cvtepi32_ps(e)))
        }
        #[inline(always)]
        unsafe fn hsum(self) -> f32 {
            let lo = _mm256_castps256_ps128(self.0);
            let hi = _mm256_extractf128_ps::<1>(self.0);
            let s4 = _mm_add_ps(lo, hi);
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            let s1 = _mm_add_ss(s2, _mm_shuffle_ps::<1>(s2, s2));
            _mm_cvtss_f32(s1)
        }
    }

    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    impl Vf32 for Avx512 {
        const LANES: usize = 16;
        type M = __mmask16;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Avx512(_mm512_set1_ps(v))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Avx512(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const u16) -> Self {
            Avx512(_mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            _mm512_storeu_ps(p, self.0)
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            Avx512(_mm512_add_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn sub(self, b: Self) -> Self {
            Avx512(_mm512_sub_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            Avx512(_mm512_mul_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn div(self, b: Self) -> Self {
            Avx512(_mm512_div_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn fmadd(self, b: Self, c: Self) -> Self {
            // Not fused (see `Vf32::fmadd`).
            Avx512(_mm512_add_ps(_mm512_mul_ps(self.0, b.0), c.0))
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            Avx512(_mm512_min_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            Avx512(_mm512_max_ps(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            Avx512(_mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(self.0))
        }
        #[inline(always)]
        unsafe fn gt(self, b: Self) -> __mmask16 {
            _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, b.0)
        }
        #[inline(always)]
        unsafe fn lt(self, b: Self) -> __mmask16 {
            _mm512_cmp_ps_mask::<_CMP_LT_OQ>(self.0, b.0)
        }
        #[inline(always)]
        unsafe fn eq(self, b: Self) -> __mmask16 {
            _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(self.0, b.0)
        }
        #[inline(always)]
        unsafe fn select(m: __mmask16, t: Self, f: Self) -> Self {
            Avx512(_mm512_mask_blend_ps(m, f.0, t.0))
        }
        #[inline(always)]
        unsafe fn pow2i(self) -> Self {
            let n = _mm512_cvtps_epi32(self.0);
            Avx512(_mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(n, _mm512_set1_epi32(127)))))
        }
        #[inline(always)]
        unsafe fn frexp(self) -> (Self, Self) {
            let bits = _mm512_castps_si512(self.0);
            let e = _mm512_sub_epi32(
                _mm512_and_si512(_mm512_srli_epi32::<23>(bits), _mm512_set1_epi32(0xff)),
                _mm512_set1_epi32(126),
            );
            let m = _mm512_or_si512(
                _mm512_and_si512(bits, _mm512_set1_epi32(0x807f_ffffu32 as i32)),
                _mm512_set1_epi32(0x3f00_0000),
            );
            (Avx512(_mm512_castsi512_ps(m)), Avx512(_mm512_cvtepi32_ps(e)))
        }
        #[inline(always)]
        unsafe fn hsum(self) -> f32 {
            _mm512_reduce_add_ps(self.0)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// aarch64: NEON
// ---------------------------------------------------------------------------------------------

#[cfg(target_arch = "aarch64")]
pub use arm::Neon;

#[cfg(target_arch = "aarch64")]
mod arm {
    use super::Vf32;
    use std::arch::aarch64::*;

    #[derive(Clone, Copy)]
    pub struct Neon(float32x4_t);

    impl Vf32 for Neon {
        const LANES: usize = 4;
        type M = uint32x4_t;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Neon(vdupq_n_f32(v))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Neon(vld1q_f32(p))
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const u16) -> Self {
            // Stable Rust has no f16 NEON conversion yet: widen lane by lane.
            let h = crate::quant::half::f16_to_f32;
            let v = [h(*p), h(*p.add(1)), h(*p.add(2)), h(*p.add(3))];
            Neon(vld1q_f32(v.as_ptr()))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            vst1q_f32(p, self.0)
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            Neon(vaddq_f32(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn sub(self, b: Self) -> Self {
            Neon(vsubq_f32(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            Neon(vmulq_f32(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn div(self, b: Self) -> Self {
            Neon(vdivq_f32(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn fmadd(self, b: Self, c: Self) -> Self {
            // Not fused (see `Vf32::fmadd`).
            Neon(vaddq_f32(vmulq_f32(self.0, b.0), c.0))
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            // NaN from either operand (stricter than the trait asks; what exp_v needs either way).
            Neon(vminq_f32(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            Neon(vmaxq_f32(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            Neon(vrndnq_f32(self.0))
        }
        #[inline(always)]
        unsafe fn gt(self, b: Self) -> uint32x4_t {
            vcgtq_f32(self.0, b.0)
        }
        #[inline(always)]
        unsafe fn lt(self, b: Self) -> uint32x4_t {
            vcltq_f32(self.0, b.0)
        }
        #[inline(always)]
        unsafe fn eq(self, b: Self) -> uint32x4_t {
            vceqq_f32(self.0, b.0)
        }
        #[inline(always)]
        unsafe fn select(m: uint32x4_t, t: Self, f: Self) -> Self {
            Neon(vbslq_f32(m, t.0, f.0))
        }
        #[inline(always)]
        unsafe fn pow2i(self) -> Self {
            let n = vcvtnq_s32_f32(self.0);
            Neon(vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(n, vdupq_n_s32(127)))))
        }
        #[inline(always)]
        unsafe fn frexp(self) -> (Self, Self) {
            let bits = vreinterpretq_u32_f32(self.0);
            let e = vsubq_s32(
                vreinterpretq_s32_u32(vandq_u32(vshrq_n_u32::<23>(bits), vdupq_n_u32(0xff))),
                vdupq_n_s32(126),
            );
            let m = vorrq_u32(vandq_u32(bits, vdupq_n_u32(0x807f_ffff)), vdupq_n_u32(0x3f00_0000));
            (Neon(vreinterpretq_f32_u32(m)), Neon(vcvtq_f32_s32(e)))
        }
        #[inline(always)]
        unsafe fn hsum(self) -> f32 {
            vaddvq_f32(self.0)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// wasm32: simd128
// ---------------------------------------------------------------------------------------------

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub use wasm::Simd128;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use super::Vf32;
    use std::arch::wasm32::*;

    #[derive(Clone, Copy)]
    pub struct Simd128(v128);

    impl Vf32 for Simd128 {
        const LANES: usize = 4;
        type M = v128;
        #[inline(always)]
        unsafe fn splat(v: f32) -> Self {
            Simd128(f32x4_splat(v))
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> Self {
            Simd128(v128_load(p as *const v128))
        }
        #[inline(always)]
        unsafe fn load_f16(p: *const u16) -> Self {
            // Exponent/mantissa shifted into f32 position and rescaled by 2^112 (exact for
            // normals and subnormals); infinities and NaN get the all-ones exponent; sign last.
            let h = u32x4_extend_low_u16x8(v128_load64_zero(p as *const u64));
            let sign = i32x4_shl(v128_and(h, i32x4_splat(0x8000)), 16);
            let em = v128_and(h, i32x4_splat(0x7fff));
            let shifted = i32x4_shl(em, 13);
            let mag = f32x4_mul(shifted, f32x4_splat(f32::from_bits(0x7780_0000)));
            let special = v128_or(shifted, i32x4_splat(0x7f80_0000));
            let r = v128_bitselect(special, mag, i32x4_gt(em, i32x4_splat(0x7bff)));
            Simd128(v128_or(r, sign))
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32) {
            v128_store(p as *mut v128, self.0)
        }
        #[inline(always)]
        unsafe fn add(self, b: Self) -> Self {
            Simd128(f32x4_add(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn sub(self, b: Self) -> Self {
            Simd128(f32x4_sub(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn mul(self, b: Self) -> Self {
            Simd128(f32x4_mul(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn div(self, b: Self) -> Self {
            Simd128(f32x4_div(self.0, b.0))
        }
        #[inline(always)]
        unsafe fn fmadd(self, b: Self, c: Self) -> Self {
            // No FMA in simd128 (relaxed-simd's madd is engine-defined): multiply, then add.
            Simd128(f32x4_add(f32x4_mul(self.0, b.0), c.0))
        }
        #[inline(always)]
        unsafe fn min(self, b: Self) -> Self {
            // pmin(b, a) = a < b ? a : b, the x86 semantics the trait documents.
            Simd128(f32x4_pmin(b.0, self.0))
        }
        #[inline(always)]
        unsafe fn max(self, b: Self) -> Self {
            Simd128(f32x4_pmax(b.0, self.0))
        }
        #[inline(always)]
        unsafe fn round(self) -> Self {
            Simd128(f32x4_nearest(self.0))
        }
        #[inline(always)]
        unsafe fn gt(self, b: Self) -> v128 {
            f32x4_gt(self.0, b.0)
        }
        #[inline(always)]
        unsafe fn lt(self, b: Self) -> v128 {
            f32x4_lt(self.0, b.0)
        }
        #[inline(always)]
        unsafe fn eq(self, b: Self) -> v128 {
            f32x4_eq(self.0, b.0)
        }
        #[inline(always)]
        unsafe fn select(m: v128, t: Self, f: Self) -> Self {
            Simd128(v128_bitselect(t.0, f.0, m))
        }
        #[inline(always)]
        unsafe fn pow2i(self) -> Self {
            let n = i32x4_trunc_sat_f32x4(self.0);
            Simd128(i32x4_shl(i32x4_add(n, i32x4_splat(127)), 23))
        }
        #[inline(always)]
        unsafe fn frexp(self) -> (Self, Self) {
            let bits = self.0;
            let e = i32x4_sub(v128_and(u32x4_shr(bits, 23), i32x4_splat(0xff)), i32x4_splat(126));
            let m = v128_or(v128_and(bits, i32x4_splat(0x807f_ffffu32 as i32)), i32x4_splat(0x3f00_0000));
            (Simd128(m), Simd128(f32x4_convert_i32x4(e)))
        }
        #[inline(always)]
        unsafe fn hsum(self) -> f32 {
            (f32x4_extract_lane::<0>(self.0) + f32x4_extract_lane::<1>(self.0))
                + (f32x4_extract_lane::<2>(self.0) + f32x4_extract_lane::<3>(self.0))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Instruction-set selection
// ---------------------------------------------------------------------------------------------

/// A kernel instantiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// One lane of plain f32 arithmetic; runs on every target.
    Portable,
    Avx2,
    Avx512,
    Neon,
    Simd128,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
            Isa::Simd128 => "simd128",
        }
    }

    /// Every instantiation this machine can run, the portable one first, the fastest last.
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut v = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
                && std::is_x86_feature_detected!("f16c")
            {
                v.push(Isa::Avx2);
            }
            if std::is_x86_feature_detected!("avx512f") {
                v.push(Isa::Avx512);
            }
        }
        #[cfg(target_arch = "aarch64")]
        v.push(Isa::Neon);
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        v.push(Isa::Simd128);
        v
    }

    /// The fastest instantiation for this CPU (detected once). `COIL_ISA=portable|avx2|...` in the
    /// environment overrides it on native targets (for benchmarks and debugging); an ISA the CPU
    /// lacks is ignored.
    pub fn best() -> Isa {
        use std::sync::OnceLock;
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let avail = Isa::available();
            #[cfg(not(target_arch = "wasm32"))]
            if let Ok(want) = std::env::var("COIL_ISA") {
                if let Some(&i) = avail.iter().find(|i| i.name().eq_ignore_ascii_case(want.trim())) {
                    return i;
                }
            }
            *avail.last().unwrap_or(&Isa::Portable)
        })
    }
}

/// Instantiates an `#[inline(always)] unsafe fn $generic::<V>(args)` once per ISA and defines
/// `$name(isa, args)` dispatching to them. An ISA not compiled in falls back to the portable body
/// (callers only pass ISAs from [`Isa::available`]).
macro_rules! dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident / $generic:ident ( $($arg:ident : $ty:ty),* $(,)? )) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::kernels::ops::Isa, $($arg: $ty),*) {
            // SAFETY: see `dispatch_body`; the safe signature means the generic body's pointer
            // contracts are met by construction (slices) or checked before the unsafe code.
            unsafe { $crate::kernels::ops::dispatch_body!(isa, $generic, $($arg : $ty),*) }
        }
    };
    ($(#[$m:meta])* $vis:vis unsafe fn $name:ident / $generic:ident ( $($arg:ident : $ty:ty),* $(,)? )) => {
        $(#[$m])*
        /// # Safety
        /// The pointer arguments must satisfy the generic kernel's contract.
        #[allow(clippy::too_many_arguments)]
        $vis unsafe fn $name(isa: $crate::kernels::ops::Isa, $($arg: $ty),*) {
            $crate::kernels::ops::dispatch_body!(isa, $generic, $($arg : $ty),*)
        }
    };
}
pub(crate) use dispatch;

/// The body of a dispatched kernel: one `#[target_feature]` instantiation per ISA. An ISA path runs
/// only when the running CPU has its features (checked here again: `is_x86_feature_detected!` is
/// a cached load); an ISA not compiled for this target falls through to the portable body.
macro_rules! dispatch_body {
    ($isa:expr, $generic:ident, $($arg:ident : $ty:ty),*) => {{
        #[allow(unused_imports)]
        use $crate::kernels::ops::*;
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma,f16c")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn avx2($($arg: $ty),*) { $generic::<Avx2>($($arg),*) }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn avx512($($arg: $ty),*) { $generic::<Avx512>($($arg),*) }
        #[cfg(target_arch = "aarch64")]
        #[target_feature(enable = "neon")]
        #[allow(clippy::too_many_arguments)]
        unsafe fn neon($($arg: $ty),*) { $generic::<Neon>($($arg),*) }
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        #[allow(clippy::too_many_arguments)]
        unsafe fn simd128($($arg: $ty),*) { $generic::<Simd128>($($arg),*) }
        match $isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2
                if std::is_x86_feature_detected!("avx2")
                    && std::is_x86_feature_detected!("fma")
                    && std::is_x86_feature_detected!("f16c") =>
            {
                avx2($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if std::is_x86_feature_detected!("avx512f") => avx512($($arg),*),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => neon($($arg),*),
            #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
            Isa::Simd128 => simd128($($arg),*),
            _ => $generic::<Portable>($($arg),*),
        }
    }};
}
pub(crate) use dispatch_body;

// ---------------------------------------------------------------------------------------------
// Element-wise kernels over slices
// ---------------------------------------------------------------------------------------------

/// Applies a vector function to `x` in place: full vectors, then the tail one lane at a time
/// (through the portable instantiation of the same function, so the tail computes the same math).
macro_rules! map_inplace {
    ($x:expr, $f:ident) => {{
        let x: &mut [f32] = $x;
        let n = x.len();
        let p = x.as_mut_ptr();
        let mut i = 0;
        while i + V::LANES <= n {
            $f(V::load(p.add(i))).store(p.add(i));
            i += V::LANES;
        }
        while i < n {
            $f(Portable::load(p.add(i))).store(p.add(i));
            i += 1;
        }
    }};
}

#[inline(always)]
unsafe fn silu_inplace_g<V: Vf32>(x: &mut [f32]) {
    map_inplace!(x, silu_v)
}

#[inline(always)]
unsafe fn softplus_inplace_g<V: Vf32>(x: &mut [f32]) {
    map_inplace!(x, softplus_v)
}

#[inline(always)]
unsafe fn exp_inplace_g<V: Vf32>(x: &mut [f32]) {
    map_inplace!(x, exp_v)
}

/// `y[i] *= silu(z[i])` over `min(len)` elements.
#[inline(always)]
unsafe fn mul_silu_g<V: Vf32>(y: &mut [f32], z: &[f32]) {
    let n = y.len().min(z.len());
    let (py, pz) = (y.as_mut_ptr(), z.as_ptr());
    let mut i = 0;
    while i + V::LANES <= n {
        V::load(py.add(i)).mul(silu_v(V::load(pz.add(i)))).store(py.add(i));
        i += V::LANES;
    }
    while i < n {
        Portable::load(py.add(i)).mul(silu_v(Portable::load(pz.add(i)))).store(py.add(i));
        i += 1;
    }
}

dispatch!(
    /// `x[i] = silu(x[i])`.
    pub fn silu_inplace_with / silu_inplace_g(x: &mut [f32])
);
dispatch!(
    /// `x[i] = softplus(x[i])`.
    pub fn softplus_inplace_with / softplus_inplace_g(x: &mut [f32])
);
dispatch!(
    /// `x[i] = exp(x[i])`.
    pub fn exp_inplace_with / exp_inplace_g(x: &mut [f32])
);
dispatch!(
    /// `y[i] *= silu(z[i])` (the SwiGLU-style gate of the Mamba mixers).
    pub fn mul_silu_with / mul_silu_g(y: &mut [f32], z: &[f32])
);

pub fn silu_inplace(x: &mut [f32]) {
    silu_inplace_with(Isa::best(), x)
}
pub fn softplus_inplace(x: &mut [f32]) {
    softplus_inplace_with(Isa::best(), x)
}
pub fn mul_silu(y: &mut [f32], z: &[f32]) {
    mul_silu_with(Isa::best(), y, z)
}

/// `a[i] += b[i]` (memory-bound: plain code, auto-vectorised).
pub fn add_inplace(a: &mut [f32], b: &[f32]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += *y;
    }
}

/// Max relative difference between `got` and `want`, relative to the largest |want| (floor 1e-30).
pub(crate) fn max_rel_diff(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let mut d = 0f32;
    if got.len() != want.len() {
        return f32::INFINITY;
    }
    for (a, b) in got.iter().zip(want) {
        let e = (a - b).abs();
        if !e.is_finite() || a.is_nan() != b.is_nan() {
            return f32::INFINITY;
        }
        d = d.max(e / scale);
    }
    d
}

/// Selfcheck of the element-wise paths: (kernel/isa, max relative difference per element).
pub(crate) fn selfcheck(out: &mut Vec<(&'static str, f32)>) {
    let mut rng = crate::util::SplitMix64::new(0xe1e);
    let mut xs: Vec<f32> = (0..1031).map(|_| (rng.next_f32() * 2.0 - 1.0) * 40.0).collect();
    // The ends of the ranges, and NaN, must agree too.
    xs.extend_from_slice(&[-1000.0, -87.5, -87.3, -20.5, 20.0, 20.5, 88.0, 88.5, 1000.0, f32::NAN, 0.0, -0.0]);
    for isa in Isa::available() {
        // Per-element relative difference (these are element-wise, so compare each to itself).
        let rel = |got: &[f32], want: &[f32]| -> f32 {
            got.iter()
                .zip(want)
                .map(|(a, b)| match (a.is_nan(), b.is_nan()) {
                    (true, true) => 0.0,
                    (false, false) if a == b => 0.0,
                    (false, false) => (a - b).abs() / b.abs().max(1e-30),
                    _ => f32::INFINITY,
                })
                .fold(0f32, f32::max)
        };
        let mut v = xs.clone();
        exp_inplace_with(isa, &mut v);
        let want: Vec<f32> = xs.iter().map(|&x| exp_ref(x)).collect();
        out.push((names::EXP[isa as usize], rel(&v, &want)));
        let mut v = xs.clone();
        softplus_inplace_with(isa, &mut v);
        let want: Vec<f32> = xs.iter().map(|&x| softplus_ref(x)).collect();
        out.push((names::SOFTPLUS[isa as usize], rel(&v, &want)));
        let mut v = xs.clone();
        silu_inplace_with(isa, &mut v);
        let want: Vec<f32> = xs.iter().map(|&x| silu_ref(x)).collect();
        out.push((names::SILU[isa as usize], rel(&v, &want)));
    }
}

/// `"kernel/isa"` names with static lifetime, indexed by `Isa as usize`.
pub(crate) mod names {
    macro_rules! names {
        ($($id:ident = $k:literal),* $(,)?) => {
            $(pub const $id: [&str; 5] = [
                concat!($k, "/portable"),
                concat!($k, "/avx2"),
                concat!($k, "/avx512"),
                concat!($k, "/neon"),
                concat!($k, "/simd128"),
            ];)*
        };
    }
    names!(
        EXP = "exp",
        SOFTPLUS = "softplus",
        SILU = "silu",
        RMS_NORM = "rms_norm",
        GROUP_NORM = "group_rms_norm_gated",
        CONV = "ssm_conv",
        SCAN1 = "ssm_scan_mamba1",
        SCAN2 = "ssm_scan_mamba2",
        ATTN_F32 = "attention_f32",
        ATTN_F16 = "attention_f16",
        F16_WIDEN = "f16_widen",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f64) -> f64 {
        let b32 = b as f32;
        let ulp = (f32::from_bits(b32.abs().to_bits() + 1) - b32.abs()) as f64;
        (a as f64 - b).abs() / ulp
    }

    #[test]
    fn exp_and_log_accuracy() {
        let mut worst_exp = 0f64;
        let mut x = -87.3f32;
        while x < 88.0 {
            worst_exp = worst_exp.max(ulps(exp_ref(x), (x as f64).exp()));
            x += 0.00731;
        }
        assert!(worst_exp <= 2.0, "exp: {worst_exp} ulp");
        let mut worst_sp = 0f64;
        let mut x = -60.0f32;
        while x < 30.0 {
            let want = if x > 20.0 { x as f64 } else { (x as f64).exp().ln_1p() };
            worst_sp = worst_sp.max(ulps(softplus_ref(x), want));
            x += 0.00417;
        }
        assert!(worst_sp <= 4.0, "softplus: {worst_sp} ulp");
        let mut worst_silu = 0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let xd = x as f64;
            let want = xd / (1.0 + (-xd).exp());
            if want.abs() > 1e-30 {
                worst_silu = worst_silu.max(ulps(silu_ref(x), want));
            }
            x += 0.00533;
        }
        assert!(worst_silu <= 3.0, "silu: {worst_silu} ulp");
        let mut worst_log = 0f64;
        let mut x = 1e-30f32;
        while x < 1e30 {
            worst_log = worst_log.max((log_ref(x) as f64 - (x as f64).ln()).abs() / (x as f64).ln().abs().max(1.0));
            x *= 1.0137;
        }
        assert!(worst_log < 2e-7, "log: {worst_log}");
        // The ends.
        assert_eq!(exp_ref(-1000.0), 0.0);
        assert_eq!(exp_ref(-87.4), 0.0);
        assert!(exp_ref(-87.3) > 0.0);
        assert!(exp_ref(1000.0).is_finite());
        assert!(exp_ref(f32::NAN).is_nan());
        assert_eq!(softplus_ref(25.0), 25.0);
        assert!(softplus_ref(-200.0) >= 0.0);
    }

    #[test]
    fn every_isa_matches_the_scalar_references() {
        let mut out = Vec::new();
        selfcheck(&mut out);
        assert!(out.len() >= 3);
        for (name, d) in out {
            // The same algorithm, unfused, element by element: bit-identical on every ISA.
            assert!(d == 0.0, "{name}: {d}");
        }
        // Edge values through every path.
        for isa in Isa::available() {
            let mut v = vec![-1000.0, -87.5, -87.3, 0.0, 1e-8, 20.0, 20.5, 88.5, 1000.0, f32::NAN];
            let xs = v.clone();
            exp_inplace_with(isa, &mut v);
            for (a, x) in v.iter().zip(&xs) {
                let r = exp_ref(*x);
                assert!(
                    a == &r || (a.is_nan() && r.is_nan()) || ((a - r) / r).abs() < 3e-7,
                    "{isa:?} exp({x}) = {a}, ref {r}"
                );
            }
        }
    }
}
