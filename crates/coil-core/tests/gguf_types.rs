//! The ggml type table and the metadata value helpers.

use coil_core::gguf::{GgmlType, GgufArray, GgufValue, GgufValueType, TensorInfo};

/// (name, id, block size, bytes per block) as ggml defines them (ggml.h `enum ggml_type`,
/// ggml.c `type_traits`, the `block_*` structs of ggml-common.h).
const GGML: [(&str, u32, u64, u64); 32] = [
    ("F32", 0, 1, 4),
    ("F16", 1, 1, 2),
    ("Q4_0", 2, 32, 18),
    ("Q4_1", 3, 32, 20),
    ("Q5_0", 6, 32, 22),
    ("Q5_1", 7, 32, 24),
    ("Q8_0", 8, 32, 34),
    ("Q8_1", 9, 32, 36),
    ("Q2_K", 10, 256, 84),
    ("Q3_K", 11, 256, 110),
    ("Q4_K", 12, 256, 144),
    ("Q5_K", 13, 256, 176),
    ("Q6_K", 14, 256, 210),
    ("Q8_K", 15, 256, 292),
    ("IQ2_XXS", 16, 256, 66),
    ("IQ2_XS", 17, 256, 74),
    ("IQ3_XXS", 18, 256, 98),
    ("IQ1_S", 19, 256, 50),
    ("IQ4_NL", 20, 32, 18),
    ("IQ3_S", 21, 256, 110),
    ("IQ2_S", 22, 256, 82),
    ("IQ4_XS", 23, 256, 136),
    ("I8", 24, 1, 1),
    ("I16", 25, 1, 2),
    ("I32", 26, 1, 4),
    ("I64", 27, 1, 8),
    ("F64", 28, 1, 8),
    ("IQ1_M", 29, 256, 56),
    ("BF16", 30, 1, 2),
    ("TQ1_0", 34, 256, 54),
    ("TQ2_0", 35, 256, 66),
    ("MXFP4", 39, 32, 17),
];

#[test]
fn ggml_type_table_matches_ggml() {
    assert_eq!(GgmlType::ALL.len(), GGML.len());
    for (t, &(name, id, bs, ts)) in GgmlType::ALL.iter().zip(GGML.iter()) {
        assert_eq!(t.name(), name);
        assert_eq!(t.id(), id, "{name}");
        assert_eq!(t.block_size(), bs, "{name}");
        assert_eq!(t.type_size(), ts, "{name}");
        assert_eq!(GgmlType::from_id(id), Some(*t));
        assert_eq!(GgmlType::from_name(name), Some(*t));
        assert_eq!(GgmlType::from_name(&name.to_lowercase()), Some(*t));
        assert_eq!(t.to_string(), name);
    }
}

#[test]
fn retired_and_future_type_ids_are_unknown() {
    for id in [4, 5, 31, 32, 33, 36, 37, 38, 40, 41, 100, u32::MAX] {
        assert_eq!(GgmlType::from_id(id), None, "{id}");
    }
    assert_eq!(GgmlType::from_name("Q4_2"), None);
    assert_eq!(GgmlType::from_name(""), None);
}

#[test]
fn bytes_for_counts_whole_blocks() {
    assert_eq!(GgmlType::Q4_K.bytes_for(512), Some(288));
    assert_eq!(GgmlType::Q4_K.bytes_for(100), None);
    assert_eq!(GgmlType::F16.bytes_for(3), Some(6));
    assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
}

#[test]
fn tensor_info_helpers() {
    let t = TensorInfo::new("w", vec![256, 3], GgmlType::Q4_K.id());
    assert_eq!(t.n_elements(), 768);
    assert_eq!(t.size, Some(3 * 144));
    assert_eq!(t.type_name(), "Q4_K");
    let u = TensorInfo::new("u", vec![7], 42);
    assert_eq!(u.ggml_type, None);
    assert_eq!(u.size, None);
    assert_eq!(u.type_name(), "UNKNOWN(42)");
    let scalar = TensorInfo::new("s", vec![], GgmlType::F32.id());
    assert_eq!(scalar.n_elements(), 1);
    assert_eq!(scalar.size, Some(4));
    // a row that is not a whole number of blocks has no size
    assert_eq!(TensorInfo::new("q", vec![33], GgmlType::Q8_0.id()).size, None);
}

#[test]
fn value_type_ids() {
    for id in 0..=12u32 {
        let t = GgufValueType::from_id(id).unwrap();
        assert_eq!(t.id(), id);
    }
    assert_eq!(GgufValueType::from_id(13), None);
    assert_eq!(GgufValueType::from_id(u32::MAX), None);
}

#[test]
fn value_accessors() {
    assert_eq!(GgufValue::U8(7).as_u64(), Some(7));
    assert_eq!(GgufValue::I8(-1).as_u64(), None);
    assert_eq!(GgufValue::I32(5).as_u64(), Some(5));
    assert_eq!(GgufValue::I64(-5).as_i64(), Some(-5));
    assert_eq!(GgufValue::U64(u64::MAX).as_i64(), None);
    assert_eq!(GgufValue::U64(u64::MAX).as_u64(), Some(u64::MAX));
    assert_eq!(GgufValue::U16(3).as_f64(), Some(3.0));
    assert_eq!(GgufValue::F32(0.5).as_f64(), Some(0.5));
    assert_eq!(GgufValue::F64(-2.5).as_f64(), Some(-2.5));
    assert_eq!(GgufValue::Bool(true).as_u64(), None);
    assert_eq!(GgufValue::Bool(true).as_bool(), Some(true));
    assert_eq!(GgufValue::F32(1.0).as_u64(), None);
    assert_eq!(GgufValue::from("x").as_str(), Some("x"));
    assert_eq!(GgufValue::U32(1).as_str(), None);
    let a = GgufValue::from(vec![1i32, -2]);
    assert_eq!(a.as_array().and_then(GgufArray::as_i32s), Some(&[1, -2][..]));
}

#[test]
fn type_names() {
    assert_eq!(GgufValue::U32(1).type_name(), "u32");
    assert_eq!(GgufValue::from("s").type_name(), "string");
    assert_eq!(GgufValue::from(vec!["a".to_string()]).type_name(), "array<string>");
    let nested = GgufValue::Array(GgufArray::Array(vec![GgufArray::U8(vec![1]), GgufArray::U8(vec![])]));
    assert_eq!(nested.type_name(), "array<array<u8>>");
    let deeper = GgufArray::Array(vec![GgufArray::Array(vec![GgufArray::F64(vec![])])]);
    assert_eq!(deeper.type_name(), "array<array<array<f64>>>");
    assert_eq!(GgufArray::Array(vec![]).type_name(), "array<array>");
    assert_eq!(GgufArray::Bool(vec![]).elem_type(), GgufValueType::Bool);
}

#[test]
fn array_accessors() {
    let s = GgufArray::String(vec!["a".into(), "b".into()]);
    assert_eq!(s.len(), 2);
    assert!(!s.is_empty());
    assert_eq!(s.as_strings().map(|v| v.len()), Some(2));
    assert_eq!(s.to_i64_vec(), None);
    assert_eq!(GgufArray::U64(vec![1, 2]).to_i64_vec(), Some(vec![1, 2]));
    assert_eq!(GgufArray::U64(vec![u64::MAX]).to_i64_vec(), None);
    assert_eq!(GgufArray::I8(vec![-1]).to_i64_vec(), Some(vec![-1]));
    assert_eq!(GgufArray::F32(vec![1.0]).to_i64_vec(), None);
    assert_eq!(GgufArray::F32(vec![1.0]).as_f32s(), Some(&[1.0f32][..]));
    assert!(GgufArray::U16(vec![]).is_empty());
    assert_eq!(GgufArray::I16(vec![4, 5]).get(1), Some(GgufValue::I16(5)));
    assert_eq!(GgufArray::I16(vec![4, 5]).get(2), None);
}
