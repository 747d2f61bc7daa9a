//! The converter's link to the quantizer (`crate::quant`): which type a quantizable matrix really
//! gets, and the row quantization itself. The types are written "pure": every quantizable matrix
//! gets the chosen type (no llama-quantize mixture such as Q6_K for `output.weight`), demoted by
//! llama-quantize's `tensor_type_fallback` when its rows are not whole blocks.

use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::GgmlType;
use crate::quant;

/// The type of a tensor named `name` with ggml dims `dims` when the matrices are to be `want`.
pub fn choose_type(want: GgmlType, name: &str, dims: &[u64]) -> GgmlType {
    if !quant::tensor_allows_quantization(name, quant::rules::ggml_n_dims(dims)) {
        return GgmlType::F16;
    }
    quant::fallback_type(want, dims.first().copied().unwrap_or(1))
}

/// Whether the converter can write `ty`.
pub fn can_write(ty: GgmlType) -> bool {
    quant::is_supported(ty)
}

/// Appends `x` (whole rows) converted to `ty`.
pub fn quantize(ty: GgmlType, x: &[f32], out: &mut Vec<u8>) -> Result<()> {
    let n = quant::row_bytes(ty, x.len())
        .ok_or_else(|| CoilError::new(ErrorCode::Internal, format!("{} values are not whole {ty} blocks", x.len())))?;
    let start = out.len();
    out.resize(start + n, 0);
    quant::quantize_row(ty, x, &mut out[start..])
}
