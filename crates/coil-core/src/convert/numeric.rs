//! Element conversions of the converter: source dtypes to f32, f32 to the output types, and the
//! `A = -exp(A_log)` transform with the reference converter's precision.
//!
//! `A = -exp(A_log)`: the reference converter (`conversion/base.py` `prepare_tensors`) turns every
//! tensor that is neither F16 nor F32 into F32 first (so BF16 becomes F32) and then applies the
//! model's transforms in that dtype: in f32 for F32 and BF16 checkpoints, but in half precision for
//! F16 checkpoints (PyTorch's CPU half `exp`: an f32 exp rounded to f16), stored as F32 either way.
//! coil computes it in f32 for every source dtype, as the HF models themselves do
//! (`-torch.exp(self.A_log.float())`): for F16 checkpoints its `ssm_a` can differ from llama.cpp's
//! by one f16 rounding (relative 2^-11), and is closer to the HF model. The exp is evaluated in
//! f64 and rounded once to f32: the correctly rounded value, which PyTorch's vectorised `expf`
//! (1-ULP accuracy) matches or misses by one unit in the last place.
//!
//! F16 output rounds to nearest even like numpy's `astype(float16)`; BF16 output rounds to nearest
//! even on the upper 16 bits like gguf-py's `__compute_fp32_to_bf16` (NaNs kept quiet).

use super::safetensors::StDtype;

/// IEEE half bits -> f32 (exact).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if man == 0 {
            sign
        } else {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

/// f32 -> IEEE half bits, round to nearest even (overflow to infinity), exactly as ggml converts
/// (one implementation for the converter and the quantizer: `quant::half`).
pub fn f32_to_f16(x: f32) -> u16 {
    crate::quant::half::f32_to_f16(x)
}

pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// f32 -> bfloat16 bits as gguf-py writes them.
pub fn f32_to_bf16(x: f32) -> u16 {
    let mut n = x.to_bits();
    if n & 0x7fff_ffff > 0x7f80_0000 {
        n = (n & 0xffff_0000) | (64 << 16);
    }
    ((n as u64 + (0x7fff + ((n >> 16) & 1)) as u64) >> 16) as u16
}

/// Decodes `out.len()` elements of `dtype` from little-endian `bytes` (F32, F16, BF16 only;
/// callers check the dtype first).
pub fn decode(dtype: StDtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        StDtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        StDtype::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        StDtype::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        _ => out.fill(f32::NAN),
    }
}

/// `A = -exp(A_log)` in f32 (see the module docs), for `a` read from any source dtype.
pub fn neg_exp(a: f32) -> f32 {
    -((a as f64).exp() as f32)
}

/// Appends `x` encoded as F32, F16 or BF16.
pub fn encode_float(ty: crate::gguf::GgmlType, x: &[f32], out: &mut Vec<u8>) {
    use crate::gguf::GgmlType;
    match ty {
        GgmlType::F16 => {
            out.reserve(x.len() * 2);
            for &v in x {
                out.extend_from_slice(&f32_to_f16(v).to_le_bytes());
            }
        }
        GgmlType::BF16 => {
            out.reserve(x.len() * 2);
            for &v in x {
                out.extend_from_slice(&f32_to_bf16(v).to_le_bytes());
            }
        }
        _ => {
            out.reserve(x.len() * 4);
            for &v in x {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trips_every_value() {
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            if f.is_nan() {
                assert!(f16_to_f32(f32_to_f16(f)).is_nan());
            } else {
                assert_eq!(f32_to_f16(f), h, "{h:#06x}");
            }
        }
    }

    #[test]
    fn f16_rounds_to_nearest_even() {
        assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0), 0x3c00); // tie -> even
        assert_eq!(f32_to_f16(1.0 + 3.0 / 2048.0), 0x3c02); // tie -> even (up)
        assert_eq!(f32_to_f16(65520.0), 0x7c00); // rounds to infinity
        assert_eq!(f32_to_f16(5.96e-8), 0x0001);
    }

    #[test]
    fn bf16_rounding() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80); // tie -> even
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }
}
