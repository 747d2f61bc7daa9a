//! IEEE half (`f16`) and bfloat16 (`bf16`) conversions, bit-identical to ggml's reference ones.
//!
//! * f32 -> f16 follows ggml's portable `ggml_compute_fp32_to_fp16` (ggml-impl.h, after
//!   Maratyszcza's FP16 library): round to nearest even, also into the subnormal range; overflow
//!   gives infinity; every NaN becomes the quiet NaN `0x7E00` with the input's sign (the payload is
//!   dropped). This is what ggml-base uses for every block scale and for F16 tensors written by
//!   `llama-quantize`. A build of ggml-cpu with F16C uses the hardware instruction at run time; the
//!   two agree on every non-NaN input.
//! * f16 -> f32 is exact (NaN payloads kept).
//! * f32 -> bf16 follows `ggml_compute_fp32_to_bf16`: round to nearest even on the upper 16 bits,
//!   NaNs are truncated and forced quiet (`| 0x40`), subnormals are kept (not flushed).
//! * bf16 -> f32 is exact.

/// f32 -> IEEE half bits, as ggml's `GGML_FP32_TO_FP16`.
#[inline]
pub fn f32_to_f16(f: f32) -> u16 {
    // The same float arithmetic as the reference: scaling by 2^112 then 2^-110 rounds the
    // magnitude once, in the hardware's round-to-nearest-even, to the half precision grid.
    let scale_to_inf = f32::from_bits(0x7780_0000); // 2^112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 2^-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;

    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let mut bias = shl1_w & 0xFF00_0000;
    if bias < 0x7100_0000 {
        bias = 0x7100_0000;
    }
    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    ((sign >> 16) | if shl1_w > 0xFF00_0000 { 0x7E00 } else { nonsign }) as u16
}

/// IEEE half bits -> f32 (exact).
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let w = (h as u32) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);

    let exp_offset: u32 = 0xE0 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 2^-112
    let normalized_value = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;

    let magic_mask: u32 = 126 << 23;
    let magic_bias = 0.5f32;
    let denormalized_value = f32::from_bits((two_w >> 17) | magic_mask) - magic_bias;

    let denormalized_cutoff: u32 = 1 << 27;
    let result =
        sign | if two_w < denormalized_cutoff { denormalized_value.to_bits() } else { normalized_value.to_bits() };
    f32::from_bits(result)
}

/// f32 -> bfloat16 bits, as ggml's `GGML_FP32_TO_BF16`.
#[inline]
pub fn f32_to_bf16(f: f32) -> u16 {
    let i = f.to_bits();
    if (i & 0x7fff_ffff) > 0x7f80_0000 {
        // NaN: keep the upper half, force it quiet.
        return ((i >> 16) | 64) as u16;
    }
    (i.wrapping_add(0x7fff + ((i >> 16) & 1)) >> 16) as u16
}

/// bfloat16 bits -> f32 (exact).
#[inline]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Little-endian f16 bytes -> f32s. `src.len()` must be `2 * dst.len()` (checked by callers).
pub(crate) fn f16_bytes_to_f32(src: &[u8], dst: &mut [f32]) {
    for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

/// Little-endian bf16 bytes -> f32s.
pub(crate) fn bf16_bytes_to_f32(src: &[u8], dst: &mut [f32]) {
    for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

/// f32s -> little-endian f16 bytes.
pub(crate) fn f32_to_f16_bytes(src: &[f32], dst: &mut [u8]) {
    for (&x, c) in src.iter().zip(dst.chunks_exact_mut(2)) {
        c.copy_from_slice(&f32_to_f16(x).to_le_bytes());
    }
}

/// f32s -> little-endian bf16 bytes.
pub(crate) fn f32_to_bf16_bytes(src: &[f32], dst: &mut [u8]) {
    for (&x, c) in src.iter().zip(dst.chunks_exact_mut(2)) {
        c.copy_from_slice(&f32_to_bf16(x).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Round to nearest even via f64, the textbook way, for finite values.
    fn f16_textbook(f: f32) -> u16 {
        let sign = if f.is_sign_negative() { 0x8000u16 } else { 0 };
        let a = f.abs() as f64;
        if a.is_nan() {
            return sign | 0x7E00;
        }
        if a >= 65520.0 {
            return sign | 0x7C00;
        }
        // Quantum: subnormal spacing 2^-24, else 2^(e-10).
        let e = if a < 2f64.powi(-14) { -14 } else { a.log2().floor() as i32 };
        let q = 2f64.powi(e - 10);
        let m = a / q;
        let r = m.round_ties_even();
        let v = r * q;
        // Re-encode v.
        if v == 0.0 {
            return sign;
        }
        let e2 = if v < 2f64.powi(-14) { -15 } else { v.log2().floor() as i32 };
        if e2 < -14 {
            return sign | (v / 2f64.powi(-24)) as u16;
        }
        let mant = ((v / 2f64.powi(e2) - 1.0) * 1024.0) as u16;
        sign | (((e2 + 15) as u16) << 10) | mant
    }

    #[test]
    fn f16_round_trips_every_half() {
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            if f.is_nan() {
                // The payload is kept; a signalling NaN comes out quiet (as from the C code).
                assert_eq!((f.to_bits() >> 13) & 0x3FF, (h as u32 & 0x3FF) | 0x200, "payload of {h:#x}");
                continue;
            }
            assert_eq!(f32_to_f16(f), h, "{h:#06x} -> {f}");
        }
    }

    #[test]
    fn f16_rounds_like_the_textbook() {
        let mut s = crate::util::SplitMix64::new(7);
        for _ in 0..200_000 {
            let bits = s.next_u64() as u32;
            let f = f32::from_bits(bits);
            if f.is_nan() {
                assert_eq!(f32_to_f16(f), if f.is_sign_negative() { 0xFE00 } else { 0x7E00 });
                continue;
            }
            assert_eq!(f32_to_f16(f), f16_textbook(f), "{f:e} ({bits:#x})");
        }
        // Ties: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 -> even (1.0).
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3C00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3C02);
        assert_eq!(f32_to_f16(65504.0), 0x7BFF);
        assert_eq!(f32_to_f16(65519.0), 0x7BFF);
        assert_eq!(f32_to_f16(65520.0), 0x7C00);
        assert_eq!(f32_to_f16(f32::INFINITY), 0x7C00);
        assert_eq!(f32_to_f16(f32::NEG_INFINITY), 0xFC00);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        assert_eq!(f32_to_f16(2f32.powi(-24)), 0x0001);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0x0000); // tie -> even (0)
        assert_eq!(f32_to_f16(1.5 * 2f32.powi(-24)), 0x0002); // tie -> even (2)
    }

    #[test]
    fn bf16_matches_ggml() {
        assert_eq!(f32_to_bf16(1.0), 0x3F80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8000)), 0x3F80); // tie -> even
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F81_8000)), 0x3F82); // tie -> even
        assert_eq!(f32_to_bf16(f32::from_bits(0x3F80_8001)), 0x3F81);
        assert_eq!(f32_to_bf16(f32::from_bits(0x7F80_0001)), 0x7FC0); // sNaN -> quiet
        assert_eq!(f32_to_bf16(f32::from_bits(0xFFC1_2345)), 0xFFC1);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7F80);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7F80); // rounds up to infinity
        assert_eq!(f32_to_bf16(f32::from_bits(1)), 0x0000);
        assert_eq!(f32_to_bf16(f32::from_bits(0x0000_8000)), 0x0000); // tie -> even
        assert_eq!(f32_to_bf16(f32::from_bits(0x0001_8000)), 0x0002);
        for h in 0..=u16::MAX {
            let f = bf16_to_f32(h);
            let back = f32_to_bf16(f);
            if f.is_nan() {
                assert_eq!(back, h | 64);
            } else {
                assert_eq!(back, h);
            }
        }
    }
}
