//! ggml tensor types: ids, names, block sizes and block byte sizes.
//!
//! The table follows ggml (`ggml/include/ggml.h` `enum ggml_type`, `ggml/src/ggml.c` `type_traits`,
//! block structs in `ggml/src/ggml-common.h`). Ids that ggml has retired (4, 5, 31-33, 36-38) and ids
//! newer than this table are "unknown": a file that uses them can still be inspected.

/// A ggml tensor element type, with ggml's numeric ids.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// Super-block size of the k-quants and i-quants (ggml's `QK_K`).
const QK_K: u64 = 256;

/// (type, id, name, elements per block, bytes per block). Sizes as `sizeof(block_*)` in ggml-common.h.
const TABLE: [(GgmlType, u32, &str, u64, u64); 32] = [
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    // d (f16) + 16 bytes of nibbles
    (GgmlType::Q4_0, 2, "Q4_0", 32, 2 + 16),
    // d, m (f16) + 16 bytes of nibbles
    (GgmlType::Q4_1, 3, "Q4_1", 32, 2 + 2 + 16),
    // d (f16) + qh (4) + 16 bytes
    (GgmlType::Q5_0, 6, "Q5_0", 32, 2 + 4 + 16),
    // d, m (f16) + qh (4) + 16 bytes
    (GgmlType::Q5_1, 7, "Q5_1", 32, 2 + 2 + 4 + 16),
    // d (f16) + 32 int8
    (GgmlType::Q8_0, 8, "Q8_0", 32, 2 + 32),
    // d, s (f16) + 32 int8 (ggml's current block_q8_1; gguf-py's table still says 4+4+32)
    (GgmlType::Q8_1, 9, "Q8_1", 32, 2 + 2 + 32),
    // scales (16) + qs (64) + d, dmin (f16)
    (GgmlType::Q2_K, 10, "Q2_K", QK_K, QK_K / 16 + QK_K / 4 + 2 + 2),
    // hmask (32) + qs (64) + scales (12) + d
    (GgmlType::Q3_K, 11, "Q3_K", QK_K, QK_K / 8 + QK_K / 4 + 12 + 2),
    // d, dmin + scales (12) + qs (128)
    (GgmlType::Q4_K, 12, "Q4_K", QK_K, 2 + 2 + 12 + QK_K / 2),
    // d, dmin + scales (12) + qh (32) + qs (128)
    (GgmlType::Q5_K, 13, "Q5_K", QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2),
    // ql (128) + qh (64) + scales (16) + d
    (GgmlType::Q6_K, 14, "Q6_K", QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2),
    // d (f32) + qs (256) + bsums (16 x i16)
    (GgmlType::Q8_K, 15, "Q8_K", QK_K, 4 + QK_K + QK_K / 16 * 2),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", QK_K, 2 + QK_K / 8 * 2),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", QK_K, 2 + QK_K / 8 * 2 + QK_K / 32),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", QK_K, 2 + 3 * QK_K / 8),
    (GgmlType::IQ1_S, 19, "IQ1_S", QK_K, 2 + QK_K / 8 + QK_K / 16),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 2 + 16),
    (GgmlType::IQ3_S, 21, "IQ3_S", QK_K, 2 + QK_K / 4 + QK_K / 32 + QK_K / 8 + 4),
    (GgmlType::IQ2_S, 22, "IQ2_S", QK_K, 2 + QK_K / 4 + QK_K / 32 + QK_K / 32),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", QK_K, 2 + 2 + QK_K / 64 + QK_K / 2),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    // qs (32) + qh (16) + scales (8); no separate d
    (GgmlType::IQ1_M, 29, "IQ1_M", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    // qs (48) + qh (4) + d
    (GgmlType::TQ1_0, 34, "TQ1_0", QK_K, (QK_K - 4 * QK_K / 64) / 5 + QK_K / 64 + 2),
    // qs (64) + d
    (GgmlType::TQ2_0, 35, "TQ2_0", QK_K, QK_K / 4 + 2),
    // e (E8M0 scale, 1 byte) + 16 bytes of FP4 nibbles
    (GgmlType::MXFP4, 39, "MXFP4", 32, 1 + 16),
];

impl GgmlType {
    /// Every known type, in id order.
    pub const ALL: [GgmlType; 32] = {
        let mut all = [GgmlType::F32; 32];
        let mut i = 0;
        while i < TABLE.len() {
            all[i] = TABLE[i].0;
            i += 1;
        }
        all
    };

    fn entry(self) -> &'static (GgmlType, u32, &'static str, u64, u64) {
        // The table is in declaration order, so the discriminant indexes it.
        &TABLE[self as usize]
    }

    /// The type with ggml id `id`, or `None` for ids this build does not know (or ggml retired).
    pub fn from_id(id: u32) -> Option<Self> {
        TABLE.iter().find(|e| e.1 == id).map(|e| e.0)
    }

    /// ggml's numeric id.
    pub fn id(self) -> u32 {
        self.entry().1
    }

    /// The name as ggml / gguf-py spell it in upper case: "F32", "Q4_K", "IQ2_XXS", "MXFP4".
    pub fn name(self) -> &'static str {
        self.entry().2
    }

    /// Parses a type name, case-insensitively ("q4_k", "Q4_K", "bf16").
    pub fn from_name(name: &str) -> Option<Self> {
        TABLE.iter().find(|e| e.2.eq_ignore_ascii_case(name)).map(|e| e.0)
    }

    /// Elements per block (1 for plain types, 32 or 256 for quantized ones).
    pub fn block_size(self) -> u64 {
        self.entry().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.entry().4
    }

    /// Whether the type is a block-quantized format (block size > 1).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes that `n_elements` elements take, or `None` if `n_elements` is not a whole number of
    /// blocks or the size overflows.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        if !n_elements.is_multiple_of(self.block_size()) {
            return None;
        }
        (n_elements / self.block_size()).checked_mul(self.type_size())
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_declaration_order() {
        for (i, e) in TABLE.iter().enumerate() {
            assert_eq!(e.0 as usize, i, "{}", e.2);
            assert_eq!(format!("{:?}", e.0), e.2);
        }
    }
}
