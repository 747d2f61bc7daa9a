//! ggml's block-quantized tensor formats and a file-level quantizer.
//!
//! * [`half`]: f16 / bf16 <-> f32, bit-identical to ggml's reference conversions.
//! * Row quantizers for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q4_K, Q5_K, Q6_K and Q8_K, bit-identical
//!   to ggml's `quantize_row_*_ref` (and so to what `llama-quantize` writes without an importance
//!   matrix), and the matching dequantizers. [`quantize_row`] / [`dequantize_row`] dispatch on a
//!   [`GgmlType`]; the per-type functions (`quantize_row_q4_k`, ...) are the same code.
//! * [`rules`]: which tensors `llama-quantize` quantizes and to what ([`tensor_allows_quantization`],
//!   [`fallback_type`], [`llama_ftype_for`], the output / token-embedding rule).
//! * [`quantize_gguf`]: quantizes a whole GGUF file, streaming tensor by tensor.
//!
//! Reproducing ggml bit for bit means reproducing its float arithmetic: every sum and product is
//! done in f32 in the C code's order, never fused (ggml-base is built without FMA contraction on
//! x86-64; ARM builds of ggml compiled with contraction can differ from x86 in rare last-bit
//! cases, and this code matches the x86 builds). The C conversions whose result is undefined for
//! out-of-range values (float -> int8 of an infinity, which happens for blocks whose largest
//! magnitude is subnormal) are given the value x86-64 produces. See `tests/fixtures/quant/README.md`
//! for the reference vectors that check all of this against ggml's own C code.

mod common;
#[cfg(not(target_arch = "wasm32"))]
mod file;
pub mod half;
mod kquants;
mod legacy;
// Part of the rules serve only the file-level quantizer, which is native-only.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub mod rules;

#[cfg(not(target_arch = "wasm32"))]
pub use file::{
    quantize_gguf, quantize_gguf_with, QuantOptions, QuantProgress, QuantReport, TensorDecision, TensorReport,
};
pub use kquants::{BLOCK_Q4_K, BLOCK_Q5_K, BLOCK_Q6_K, BLOCK_Q8_K, QK_K};
pub use legacy::{BLOCK_Q4_0, BLOCK_Q4_1, BLOCK_Q5_0, BLOCK_Q5_1, BLOCK_Q8_0, BLOCK_Q8_1, QK as QK32};
pub use rules::{fallback_type, llama_ftype_for, tensor_allows_quantization, QuantTarget};

use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::GgmlType;

/// Types [`quantize_row`] can produce: the block formats implemented here plus F32, F16, BF16.
pub const QUANTIZE_TYPES: [GgmlType; 13] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::Q8_K,
];

/// Whether [`quantize_row`] and [`dequantize_row`] handle `ty`.
pub fn is_supported(ty: GgmlType) -> bool {
    QUANTIZE_TYPES.contains(&ty)
}

fn unsupported(ty: GgmlType, what: &str) -> CoilError {
    CoilError::new(ErrorCode::UnsupportedType, format!("cannot {what} {ty}: this build only handles F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q4_K, Q5_K, Q6_K and Q8_K"))
}

/// Checks that `n_elements` values of `ty` fill whole blocks and take exactly `n_bytes` bytes.
fn check_lengths(ty: GgmlType, n_elements: usize, n_bytes: usize) -> Result<()> {
    let bs = ty.block_size() as usize;
    if !n_elements.is_multiple_of(bs) {
        return Err(CoilError::new(
            ErrorCode::InvalidArgument,
            format!("{n_elements} values are not a whole number of {ty} blocks ({bs} values each)"),
        ));
    }
    let want = (n_elements / bs).checked_mul(ty.type_size() as usize);
    if want != Some(n_bytes) {
        return Err(CoilError::new(
            ErrorCode::InvalidArgument,
            format!(
                "{n_elements} values of {ty} take {} bytes, but the buffer has {n_bytes}",
                want.map(|w| w.to_string()).unwrap_or_else(|| "too many".into())
            ),
        ));
    }
    Ok(())
}

/// Bytes that `n_elements` values of `ty` take (`None` when not a whole number of blocks).
pub fn row_bytes(ty: GgmlType, n_elements: usize) -> Option<usize> {
    let bs = ty.block_size() as usize;
    if !n_elements.is_multiple_of(bs) {
        return None;
    }
    (n_elements / bs).checked_mul(ty.type_size() as usize)
}

/// Quantizes `x` to `ty`, writing exactly `row_bytes(ty, x.len())` bytes to `out`.
///
/// `x.len()` must be a multiple of the block size (32 or 256) and `out.len()` must match, else
/// `InvalidArgument`; a type not in [`QUANTIZE_TYPES`] is `UnsupportedType`. Blocks are
/// independent, so `x` may hold several rows back to back.
pub fn quantize_row(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<()> {
    if !is_supported(ty) {
        return Err(unsupported(ty, "quantize to"));
    }
    check_lengths(ty, x.len(), out.len())?;
    match ty {
        GgmlType::F32 => {
            for (&v, o) in x.iter().zip(out.chunks_exact_mut(4)) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => half::f32_to_f16_bytes(x, out),
        GgmlType::BF16 => half::f32_to_bf16_bytes(x, out),
        GgmlType::Q4_0 => legacy::quantize_q4_0(x, out),
        GgmlType::Q4_1 => legacy::quantize_q4_1(x, out),
        GgmlType::Q5_0 => legacy::quantize_q5_0(x, out),
        GgmlType::Q5_1 => legacy::quantize_q5_1(x, out),
        GgmlType::Q8_0 => legacy::quantize_q8_0(x, out),
        GgmlType::Q8_1 => legacy::quantize_q8_1(x, out),
        GgmlType::Q4_K => kquants::quantize_q4_k(x, out),
        GgmlType::Q5_K => kquants::quantize_q5_k(x, out),
        GgmlType::Q6_K => kquants::quantize_q6_k(x, out),
        GgmlType::Q8_K => kquants::quantize_q8_k(x, out),
        _ => return Err(unsupported(ty, "quantize to")),
    }
    Ok(())
}

/// Converts `bytes` of type `ty` to `out.len()` f32 values (`bytes.len()` must be exactly what
/// that many values take). Same errors as [`quantize_row`].
pub fn dequantize_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    if !is_supported(ty) {
        return Err(unsupported(ty, "dequantize"));
    }
    check_lengths(ty, out.len(), bytes.len())?;
    match ty {
        GgmlType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => half::f16_bytes_to_f32(bytes, out),
        GgmlType::BF16 => half::bf16_bytes_to_f32(bytes, out),
        GgmlType::Q4_0 => legacy::dequantize_q4_0(bytes, out),
        GgmlType::Q4_1 => legacy::dequantize_q4_1(bytes, out),
        GgmlType::Q5_0 => legacy::dequantize_q5_0(bytes, out),
        GgmlType::Q5_1 => legacy::dequantize_q5_1(bytes, out),
        GgmlType::Q8_0 => legacy::dequantize_q8_0(bytes, out),
        GgmlType::Q8_1 => legacy::dequantize_q8_1(bytes, out),
        GgmlType::Q4_K => kquants::dequantize_q4_k(bytes, out),
        GgmlType::Q5_K => kquants::dequantize_q5_k(bytes, out),
        GgmlType::Q6_K => kquants::dequantize_q6_k(bytes, out),
        GgmlType::Q8_K => kquants::dequantize_q8_k(bytes, out),
        _ => return Err(unsupported(ty, "dequantize")),
    }
    Ok(())
}

macro_rules! per_type {
    ($($q:ident, $dq:ident, $t:ident;)*) => {$(
        #[doc = concat!("[`quantize_row`] for ", stringify!($t), ".")]
        pub fn $q(x: &[f32], out: &mut [u8]) -> Result<()> {
            quantize_row(GgmlType::$t, x, out)
        }
        #[doc = concat!("[`dequantize_row`] for ", stringify!($t), ".")]
        pub fn $dq(blocks: &[u8], out: &mut [f32]) -> Result<()> {
            dequantize_row(GgmlType::$t, blocks, out)
        }
    )*};
}

per_type! {
    quantize_row_q4_0, dequantize_row_q4_0, Q4_0;
    quantize_row_q4_1, dequantize_row_q4_1, Q4_1;
    quantize_row_q5_0, dequantize_row_q5_0, Q5_0;
    quantize_row_q5_1, dequantize_row_q5_1, Q5_1;
    quantize_row_q8_0, dequantize_row_q8_0, Q8_0;
    quantize_row_q8_1, dequantize_row_q8_1, Q8_1;
    quantize_row_q4_k, dequantize_row_q4_k, Q4_K;
    quantize_row_q5_k, dequantize_row_q5_k, Q5_K;
    quantize_row_q6_k, dequantize_row_q6_k, Q6_K;
    quantize_row_q8_k, dequantize_row_q8_k, Q8_K;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_match_the_type_table() {
        let sizes = [
            (GgmlType::Q4_0, BLOCK_Q4_0, QK32),
            (GgmlType::Q4_1, BLOCK_Q4_1, QK32),
            (GgmlType::Q5_0, BLOCK_Q5_0, QK32),
            (GgmlType::Q5_1, BLOCK_Q5_1, QK32),
            (GgmlType::Q8_0, BLOCK_Q8_0, QK32),
            (GgmlType::Q8_1, BLOCK_Q8_1, QK32),
            (GgmlType::Q4_K, BLOCK_Q4_K, QK_K),
            (GgmlType::Q5_K, BLOCK_Q5_K, QK_K),
            (GgmlType::Q6_K, BLOCK_Q6_K, QK_K),
            (GgmlType::Q8_K, BLOCK_Q8_K, QK_K),
        ];
        for (t, bytes, n) in sizes {
            assert_eq!(t.type_size() as usize, bytes, "{t}");
            assert_eq!(t.block_size() as usize, n, "{t}");
        }
    }

    #[test]
    fn bad_lengths_are_errors_not_panics() {
        for &t in &QUANTIZE_TYPES {
            let bs = t.block_size() as usize;
            let x = vec![0.5f32; bs * 2];
            let mut out = vec![0u8; row_bytes(t, bs * 2).unwrap()];
            quantize_row(t, &x, &mut out).unwrap();
            let mut back = vec![0f32; bs * 2];
            dequantize_row(t, &out, &mut back).unwrap();
            if bs > 1 {
                let e = quantize_row(t, &x[..bs + 1], &mut out).unwrap_err();
                assert_eq!(e.code, ErrorCode::InvalidArgument);
                let e = dequantize_row(t, &out, &mut back[..bs + 1]).unwrap_err();
                assert_eq!(e.code, ErrorCode::InvalidArgument);
            }
            let e = quantize_row(t, &x, &mut out[1..]).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument);
            let e = dequantize_row(t, &out[1..], &mut back).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument);
            quantize_row(t, &[], &mut []).unwrap();
        }
        let e = quantize_row(GgmlType::IQ2_XXS, &[0.0; 256], &mut [0u8; 66]).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedType);
        let e = dequantize_row(GgmlType::Q2_K, &[0u8; 84], &mut [0.0; 256]).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedType);
    }
}
