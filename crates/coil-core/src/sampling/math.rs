//! `exp` and `ln` in f64 built from IEEE-754 basic operations only, so that they return the same
//! bits on every target.
//!
//! Why not `f64::exp` / `f64::ln`: std forwards them to the platform's libm. Native x86-64 uses the
//! system C library's (glibc, macOS libm, the MSVC CRT), wasm32 uses Rust's port of musl's libm;
//! these are all accurate to about an ulp, but they do not agree bit for bit on every input. A
//! sampler compares running sums of probabilities with a random threshold, so a one-ulp difference
//! in one probability can (rarely) flip the chosen token, and the same seed would then give
//! different text on Node and in the browser.
//!
//! Here every value is computed with `+ - * /`, exact power-of-two scaling and integer conversions,
//! in a fixed order. Those are correctly rounded by IEEE 754 on every target Rust supports (x86-64
//! uses SSE2, never x87; wasm32 has native f64), and Rust never contracts `a * b + c` into a fused
//! multiply-add on its own, so the results are identical everywhere. Accuracy: within 2 ulp of the
//! true value over the whole range (checked against std in the tests), far more than sampling needs.

/// ln 2 split in a high part with 21 trailing zero mantissa bits (so `k * LN2_HI` is exact for
/// |k| < 2^21) and the rest (fdlibm's constants).
const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000); // 6.93147180369123816490e-01
const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76); // 1.90821492927058770002e-10
const INV_LN2: f64 = std::f64::consts::LOG2_E;

/// 2^e for e in -1022..=1023, built from its bits.
#[inline]
fn pow2(e: i32) -> f64 {
    debug_assert!((-1022..=1023).contains(&e));
    f64::from_bits(((e + 1023) as u64) << 52)
}

/// 2^(j/32) for j in 0..32, each the f64 nearest to the true value (generated with 60-digit
/// decimal arithmetic).
const EXP2_32: [f64; 32] = [
    f64::from_bits(0x3FF0000000000000),
    f64::from_bits(0x3FF059B0D3158574),
    f64::from_bits(0x3FF0B5586CF9890F),
    f64::from_bits(0x3FF11301D0125B51),
    f64::from_bits(0x3FF172B83C7D517B),
    f64::from_bits(0x3FF1D4873168B9AA),
    f64::from_bits(0x3FF2387A6E756238),
    f64::from_bits(0x3FF29E9DF51FDEE1),
    f64::from_bits(0x3FF306FE0A31B715),
    f64::from_bits(0x3FF371A7373AA9CB),
    f64::from_bits(0x3FF3DEA64C123422),
    f64::from_bits(0x3FF44E086061892D),
    f64::from_bits(0x3FF4BFDAD5362A27),
    f64::from_bits(0x3FF5342B569D4F82),
    f64::from_bits(0x3FF5AB07DD485429),
    f64::from_bits(0x3FF6247EB03A5585),
    f64::from_bits(0x3FF6A09E667F3BCD),
    f64::from_bits(0x3FF71F75E8EC5F74),
    f64::from_bits(0x3FF7A11473EB0187),
    f64::from_bits(0x3FF82589994CCE13),
    f64::from_bits(0x3FF8ACE5422AA0DB),
    f64::from_bits(0x3FF93737B0CDC5E5),
    f64::from_bits(0x3FF9C49182A3F090),
    f64::from_bits(0x3FFA5503B23E255D),
    f64::from_bits(0x3FFAE89F995AD3AD),
    f64::from_bits(0x3FFB7F76F2FB5E47),
    f64::from_bits(0x3FFC199BDD85529C),
    f64::from_bits(0x3FFCB720DCEF9069),
    f64::from_bits(0x3FFD5818DCFBA487),
    f64::from_bits(0x3FFDFC97337B9B5F),
    f64::from_bits(0x3FFEA4AFA2A490DA),
    f64::from_bits(0x3FFF50765B6E4540),
];

/// e^x. NaN for NaN, 0 below about -745.13, +inf above about 709.78.
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.782_712_893_384 {
        return f64::INFINITY;
    }
    if x < -745.2 {
        return 0.0;
    }
    // x = (32 m + j) ln2/32 + r with |r| <= ln2/64 (plus a hair): n = 32 m + j is x·32/ln2 rounded
    // half away from zero; n·ln2/32 is subtracted in two parts, the first exact.
    let t = x * (32.0 * INV_LN2);
    let n = if t >= 0.0 { (t + 0.5) as i32 } else { (t - 0.5) as i32 };
    let nf = n as f64;
    let r = (x - nf * (LN2_HI / 32.0)) - nf * (LN2_LO / 32.0);
    let j = (n & 31) as usize;
    let m = (n - j as i32) >> 5;
    // e^r by its Taylor series to degree 6 (remainder below 4e-18 for |r| < 0.011).
    const C2: f64 = 1.0 / 2.0;
    const C3: f64 = 1.0 / 6.0;
    const C4: f64 = 1.0 / 24.0;
    const C5: f64 = 1.0 / 120.0;
    const C6: f64 = 1.0 / 720.0;
    let p = 1.0 + r * (1.0 + r * (C2 + r * (C3 + r * (C4 + r * (C5 + r * C6)))));
    let y = EXP2_32[j] * p;
    // y * 2^m, in two exact steps when 2^m alone is out of the normal range.
    if (-1022..=1023).contains(&m) {
        y * pow2(m)
    } else {
        let m1 = m / 2;
        y * pow2(m1) * pow2(m - m1)
    }
}

/// The natural logarithm. NaN for NaN and negative numbers, -inf for ±0, +inf for +inf.
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x == f64::INFINITY {
        return x;
    }
    let mut bits = x.to_bits();
    let mut e: i32 = 0;
    if bits >> 52 == 0 {
        // Subnormal: scale into the normal range first (exact).
        bits = (x * pow2(54)).to_bits();
        e = -54;
    }
    e += ((bits >> 52) & 0x7ff) as i32 - 1023;
    // m in [1, 2), then in (sqrt(1/2), sqrt(2)].
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m *= 0.5;
        e += 1;
    }
    // ln m = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.1716: 2 (s + s^3/3 + ... + s^23/23).
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    const D: [f64; 11] = [
        1.0 / 3.0,
        1.0 / 5.0,
        1.0 / 7.0,
        1.0 / 9.0,
        1.0 / 11.0,
        1.0 / 13.0,
        1.0 / 15.0,
        1.0 / 17.0,
        1.0 / 19.0,
        1.0 / 21.0,
        1.0 / 23.0,
    ];
    let mut q = D[10];
    let mut i = 10;
    while i > 0 {
        i -= 1;
        q = q * s2 + D[i];
    }
    let lnm = 2.0 * s + 2.0 * s * (s2 * q);
    let ef = e as f64;
    ef * LN2_HI + (lnm + ef * LN2_LO)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f64, b: f64) -> u64 {
        if a == b {
            return 0;
        }
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    #[test]
    fn exp_matches_std() {
        let mut rng = crate::util::SplitMix64::new(1);
        let mut worst = 0;
        for i in 0..200_000 {
            let x = match i % 4 {
                0 => (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * -40.0,
                1 => (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0,
                2 => (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 1400.0 - 700.0,
                _ => (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * -1e-6,
            };
            let (a, b) = (exp(x), x.exp());
            let u = ulps(a, b);
            assert!(u <= 2, "exp({x:e}) = {a:e}, std {b:e} ({u} ulp)");
            worst = worst.max(u);
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp(f64::INFINITY), f64::INFINITY);
        assert!(exp(f64::NAN).is_nan());
        assert_eq!(exp(-800.0), 0.0);
        assert_eq!(exp(710.0), f64::INFINITY);
        // Subnormal results keep their value.
        let sub = exp(-740.0);
        assert!(sub > 0.0 && (sub / (-740.0f64).exp() - 1.0).abs() < 1e-6);
        assert_eq!(exp(709.0), 709.0f64.exp());
        eprintln!("exp: worst {worst} ulp");
    }

    #[test]
    fn ln_matches_std() {
        let mut rng = crate::util::SplitMix64::new(2);
        for i in 0..200_000 {
            let bits = rng.next_u64() >> 1; // any positive finite or inf/nan pattern
            let x = if i % 2 == 0 {
                f64::from_bits(bits)
            } else {
                (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 4.0
            };
            if !x.is_finite() || x <= 0.0 {
                continue;
            }
            let (a, b) = (ln(x), x.ln());
            let u = ulps(a, b);
            assert!(u <= 2 || (a - b).abs() < 1e-300, "ln({x:e}) = {a:e}, std {b:e} ({u} ulp)");
        }
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.0), f64::NEG_INFINITY);
        assert!(ln(-1.0).is_nan());
        assert_eq!(ln(f64::INFINITY), f64::INFINITY);
        assert!((ln(f64::MIN_POSITIVE / 4.0) - (f64::MIN_POSITIVE / 4.0).ln()).abs() < 1e-12);
    }
}
