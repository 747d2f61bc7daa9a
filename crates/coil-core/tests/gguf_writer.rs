//! The writer: every value type, several tensor types, canonical layout, byte-identical round
//! trips, the streaming pieces and the writer's own checks.

use coil_core::gguf::{
    layout_tensors, write_header, GgmlType, GgufArray, GgufFile, GgufValue, GgufValueType, GgufWriter, TensorInfo,
};
use coil_core::ErrorCode;

fn every_value_type() -> Vec<(String, GgufValue)> {
    let s = |x: &str| x.to_string();
    vec![
        (s("general.architecture"), GgufValue::from("test")),
        (s("t.u8"), GgufValue::U8(200)),
        (s("t.i8"), GgufValue::I8(-100)),
        (s("t.u16"), GgufValue::U16(65000)),
        (s("t.i16"), GgufValue::I16(-32000)),
        (s("t.u32"), GgufValue::U32(4_000_000_000)),
        (s("t.i32"), GgufValue::I32(-2_000_000_000)),
        (s("t.f32"), GgufValue::F32(0.1)),
        (s("t.bool.true"), GgufValue::Bool(true)),
        (s("t.bool.false"), GgufValue::Bool(false)),
        (s("t.string"), GgufValue::from("héllo \"wörld\"\n\u{0}\u{1F600}")),
        (s("t.string.empty"), GgufValue::from("")),
        (s("t.u64"), GgufValue::U64(u64::MAX)),
        (s("t.i64"), GgufValue::I64(i64::MIN)),
        (s("t.f64"), GgufValue::F64(-1.0e300)),
        (s(""), GgufValue::from("empty key")),
        (s("a.u8"), GgufValue::from(vec![0u8, 1, 255])),
        (s("a.i8"), GgufValue::from(vec![-128i8, 0, 127])),
        (s("a.u16"), GgufValue::from(vec![1u16, 65535])),
        (s("a.i16"), GgufValue::from(vec![-1i16, 1])),
        (s("a.u32"), GgufValue::from(vec![7u32])),
        (s("a.i32"), GgufValue::from(vec![0i32, -1, 2, 0])),
        (s("a.f32"), GgufValue::from(vec![1.5f32, -0.0, f32::MAX, f32::MIN_POSITIVE, 1e-45])),
        (s("a.bool"), GgufValue::from(vec![true, false, true])),
        (s("a.string"), GgufValue::from(vec![s("a"), s(""), s("ß∑"), s("<|endoftext|>")])),
        (s("a.u64"), GgufValue::from(vec![u64::MAX, 0])),
        (s("a.i64"), GgufValue::from(vec![i64::MIN, i64::MAX])),
        (s("a.f64"), GgufValue::from(vec![std::f64::consts::PI, -0.5])),
        (s("a.empty.u32"), GgufValue::Array(GgufArray::U32(vec![]))),
        (s("a.empty.string"), GgufValue::Array(GgufArray::String(vec![]))),
        (s("a.empty.array"), GgufValue::Array(GgufArray::Array(vec![]))),
        (
            s("a.nested"),
            GgufValue::Array(GgufArray::Array(vec![
                GgufArray::U8(vec![1, 2]),
                GgufArray::String(vec![s("x"), s("y")]),
                GgufArray::Array(vec![GgufArray::F64(vec![0.25]), GgufArray::Bool(vec![])]),
                GgufArray::I64(vec![]),
            ])),
        ),
    ]
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn sample_writer(version: u32) -> GgufWriter {
    let mut w = GgufWriter::with_version(version);
    for (k, v) in every_value_type() {
        w.add_metadata(k, v);
    }
    w.add_tensor("f32.vec", vec![5], GgmlType::F32.id(), f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0])).unwrap();
    w.add_tensor("f16.mat", vec![3, 2], GgmlType::F16.id(), pattern(12, 1)).unwrap();
    w.add_tensor("q4_0", vec![64, 2], GgmlType::Q4_0.id(), pattern(4 * 18, 2)).unwrap();
    w.add_tensor("q8_0.3d", vec![32, 2, 3], GgmlType::Q8_0.id(), pattern(6 * 34, 3)).unwrap();
    w.add_tensor("q4_k", vec![256, 1, 1, 2], GgmlType::Q4_K.id(), pattern(2 * 144, 4)).unwrap();
    w.add_tensor("q6_k", vec![512], GgmlType::Q6_K.id(), pattern(2 * 210, 5)).unwrap();
    w.add_tensor("bf16", vec![7], GgmlType::BF16.id(), pattern(14, 6)).unwrap();
    w.add_tensor("i32", vec![3], GgmlType::I32.id(), pattern(12, 7)).unwrap();
    w.add_tensor("mxfp4", vec![32], GgmlType::MXFP4.id(), pattern(17, 8)).unwrap();
    w.add_tensor("empty", vec![0, 4], GgmlType::F32.id(), vec![]).unwrap();
    w.add_tensor("scalar", vec![], GgmlType::F32.id(), f32_bytes(&[42.0])).unwrap();
    w
}

/// Compares metadata treating floats bit for bit (so that NaN compares equal to itself).
fn same_metadata(a: &[(String, GgufValue)], b: &[(String, GgufValue)]) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

#[test]
fn every_value_type_and_several_tensor_types_round_trip() {
    for version in [2, 3] {
        let w = sample_writer(version);
        let bytes = w.to_bytes().unwrap();
        let f = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
        assert_eq!(f.version, version);
        assert!(same_metadata(&f.metadata, &every_value_type()));
        assert_eq!(f.tensors.len(), 11);
        assert_eq!(f.alignment, 32);
        assert_eq!(f.data_offset % 32, 0);
        assert_eq!(bytes.len() % 32, 0, "file padded to the alignment at the end");
        // canonical layout: file order, each at the previous end rounded up to 32
        let mut expect = 0u64;
        for t in &f.tensors {
            assert_eq!(t.offset, expect, "{}", t.name);
            expect = (t.offset + t.size.unwrap()).div_ceil(32) * 32;
        }
        // data comes back where the header says, padding is zero
        let q4 = f.tensor("q4_0").unwrap();
        let r = f.tensor_range(q4).unwrap();
        assert_eq!(&bytes[r.start as usize..r.end as usize], &pattern(72, 2)[..]);
        let next = f.tensor("q8_0.3d").unwrap();
        assert!(bytes[r.end as usize..(f.data_offset + next.offset) as usize].iter().all(|&b| b == 0));
        assert_eq!(f.tensor("q8_0.3d").unwrap().dims, vec![32, 2, 3]);
        assert_eq!(f.tensor("scalar").unwrap().dims, Vec::<u64>::new());
        assert_eq!(f.tensor("empty").unwrap().size, Some(0));
        // and the writer rebuilt from the file writes the same bytes
        let again = GgufWriter::from_file(&f, &bytes).unwrap().to_bytes().unwrap();
        assert!(again == bytes, "v{version} round trip differs");
    }
}

#[test]
fn header_bytes_are_exactly_the_format() {
    let mut w = GgufWriter::new();
    w.add_metadata("k", GgufValue::U16(0x0102));
    w.add_tensor("t", vec![2], GgmlType::F32.id(), f32_bytes(&[1.0, 2.0])).unwrap();
    let b = w.to_bytes().unwrap();
    let mut expect = Vec::new();
    expect.extend_from_slice(b"GGUF");
    expect.extend_from_slice(&3u32.to_le_bytes());
    expect.extend_from_slice(&1u64.to_le_bytes()); // tensors
    expect.extend_from_slice(&1u64.to_le_bytes()); // kv
    expect.extend_from_slice(&1u64.to_le_bytes());
    expect.push(b'k');
    expect.extend_from_slice(&2u32.to_le_bytes()); // u16
    expect.extend_from_slice(&0x0102u16.to_le_bytes());
    expect.extend_from_slice(&1u64.to_le_bytes());
    expect.push(b't');
    expect.extend_from_slice(&1u32.to_le_bytes()); // n_dims
    expect.extend_from_slice(&2u64.to_le_bytes());
    expect.extend_from_slice(&0u32.to_le_bytes()); // F32
    expect.extend_from_slice(&0u64.to_le_bytes()); // offset
    assert_eq!(expect.len(), 72);
    expect.resize(96, 0); // padding to the 32-byte alignment
    expect.extend_from_slice(&f32_bytes(&[1.0, 2.0]));
    expect.resize(128, 0); // the file ends aligned
    assert_eq!(b, expect);
}

#[test]
fn nested_array_encoding() {
    let mut w = GgufWriter::new();
    w.add_metadata("n", GgufValue::Array(GgufArray::Array(vec![GgufArray::U8(vec![9])])));
    w.set_trailing_padding(false);
    let b = w.to_bytes().unwrap();
    let body = &b[24 + 8 + 1..];
    let mut expect = Vec::new();
    expect.extend_from_slice(&9u32.to_le_bytes()); // array
    expect.extend_from_slice(&9u32.to_le_bytes()); // of arrays
    expect.extend_from_slice(&1u64.to_le_bytes());
    expect.extend_from_slice(&0u32.to_le_bytes()); // inner: u8
    expect.extend_from_slice(&1u64.to_le_bytes());
    expect.push(9);
    assert_eq!(body, &expect[..]);
}

#[test]
fn custom_alignment() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.alignment", GgufValue::U32(64));
    w.add_tensor("a", vec![3], GgmlType::F32.id(), vec![0; 12]).unwrap();
    w.add_tensor("b", vec![3], GgmlType::F32.id(), vec![1; 12]).unwrap();
    let b = w.to_bytes().unwrap();
    let f = GgufFile::parse(&b, b.len() as u64).unwrap();
    assert_eq!(f.alignment, 64);
    assert_eq!(f.data_offset % 64, 0);
    assert_eq!(f.tensors[1].offset, 64);
    assert_eq!(b.len() % 64, 0);
    assert_eq!(GgufWriter::from_file(&f, &b).unwrap().to_bytes().unwrap(), b);

    let mut bad = GgufWriter::new();
    bad.add_metadata("general.alignment", GgufValue::U32(48));
    assert_eq!(bad.to_bytes().unwrap_err().code, ErrorCode::InvalidArgument);
    let mut bad = GgufWriter::new();
    bad.add_metadata("general.alignment", GgufValue::U64(64));
    assert_eq!(bad.to_bytes().unwrap_err().code, ErrorCode::InvalidArgument);
}

#[test]
fn streaming_header_matches_the_builder() {
    let w = sample_writer(3);
    let whole = w.to_bytes().unwrap();
    // what a converter does: infos with sizes, layout, header, then each tensor's data in turn
    let f = GgufFile::parse(&whole, whole.len() as u64).unwrap();
    let mut infos: Vec<TensorInfo> =
        f.tensors.iter().map(|t| TensorInfo::new(t.name.clone(), t.dims.clone(), t.type_id)).collect();
    let data_size = layout_tensors(&mut infos, 32);
    assert_eq!(infos, f.tensors);
    let mut out = Vec::new();
    let data_offset = write_header(&mut out, 3, &f.metadata, &infos, 32).unwrap();
    assert_eq!(data_offset, f.data_offset);
    assert_eq!(out.len() as u64, data_offset);
    for t in &infos {
        out.resize((data_offset + t.offset) as usize, 0);
        let r = f.tensor_range(t).unwrap();
        out.extend_from_slice(&whole[r.start as usize..r.end as usize]);
    }
    out.resize((data_offset + data_size) as usize, 0);
    assert!(out == whole);
}

#[test]
fn write_header_checks() {
    let md = vec![("general.alignment".to_string(), GgufValue::U32(64))];
    let e = write_header(&mut Vec::new(), 3, &md, &[], 32).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(write_header(&mut Vec::new(), 3, &md, &[], 64).is_ok());
    let e = write_header(&mut Vec::new(), 3, &[], &[], 24).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    let e = write_header(&mut Vec::new(), 1, &[], &[], 32).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    let dup = vec![("a".to_string(), GgufValue::U8(1)), ("a".to_string(), GgufValue::U8(2))];
    assert_eq!(write_header(&mut Vec::new(), 3, &dup, &[], 32).unwrap_err().code, ErrorCode::InvalidArgument);
    let mut t = TensorInfo::new("t", vec![4], 0);
    t.offset = 16;
    assert_eq!(write_header(&mut Vec::new(), 3, &[], &[t], 32).unwrap_err().code, ErrorCode::InvalidArgument);
    let t5 = TensorInfo::new("t", vec![1, 1, 1, 1, 1], 0);
    assert_eq!(write_header(&mut Vec::new(), 3, &[], &[t5], 32).unwrap_err().code, ErrorCode::InvalidArgument);
    let deep = (0..9).fold(GgufArray::U8(vec![]), |a, _| GgufArray::Array(vec![a]));
    let md = vec![("deep".to_string(), GgufValue::Array(deep))];
    assert_eq!(write_header(&mut Vec::new(), 3, &md, &[], 32).unwrap_err().code, ErrorCode::InvalidArgument);
}

#[test]
fn layout_rules() {
    let mut ts = vec![
        TensorInfo::new("a", vec![3], GgmlType::F32.id()),
        TensorInfo::new("b", vec![32], GgmlType::Q8_0.id()),
        TensorInfo::new("c", vec![0], GgmlType::F32.id()),
        TensorInfo::new("d", vec![1], GgmlType::F16.id()),
    ];
    let size = layout_tensors(&mut ts, 32);
    let offsets: Vec<u64> = ts.iter().map(|t| t.offset).collect();
    assert_eq!(offsets, vec![0, 32, 96, 96]);
    assert_eq!(size, 128);
    assert_eq!(layout_tensors(&mut [], 32), 0);
}

#[test]
fn add_tensor_checks() {
    let mut w = GgufWriter::new();
    let e = w.add_tensor("a", vec![4], GgmlType::F32.id(), vec![0; 15]).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(e.message.contains("16"), "{}", e.message);
    let e = w.add_tensor("q", vec![33], GgmlType::Q8_0.id(), vec![0; 34]).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    let e = w.add_tensor("d", vec![1, 1, 1, 1, 1], GgmlType::F32.id(), vec![0; 4]).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    let e = w.add_tensor("o", vec![1 << 40, 1 << 40], GgmlType::F32.id(), vec![]).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    w.add_tensor("a", vec![4], GgmlType::F32.id(), vec![0; 16]).unwrap();
    let e = w.add_tensor("a", vec![4], GgmlType::F32.id(), vec![0; 16]).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    // an unknown type takes any length
    w.add_tensor("u", vec![5], 99, vec![7; 10]).unwrap();
    assert_eq!(GgufWriter::with_version(1).to_bytes().unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(GgufWriter::with_version(4).to_bytes().unwrap_err().code, ErrorCode::InvalidArgument);
}

#[test]
fn add_metadata_replaces_in_place() {
    let mut w = GgufWriter::new();
    w.add_metadata("a", GgufValue::U8(1)).add_metadata("b", GgufValue::U8(2)).add_metadata("a", GgufValue::U8(3));
    assert_eq!(w.metadata(), &[("a".to_string(), GgufValue::U8(3)), ("b".to_string(), GgufValue::U8(2))]);
}

#[test]
fn unknown_type_tensors_round_trip() {
    let mut w = GgufWriter::new();
    w.add_tensor("first", vec![8], GgmlType::F32.id(), pattern(32, 1)).unwrap();
    w.add_tensor("mystery", vec![10, 3], 77, pattern(40, 2)).unwrap();
    w.add_tensor("last", vec![4], GgmlType::F16.id(), pattern(8, 3)).unwrap();
    w.add_tensor("mystery.tail", vec![2], 4, pattern(5, 4)).unwrap();
    let b = w.to_bytes().unwrap();
    let f = GgufFile::parse(&b, b.len() as u64).unwrap();
    let m = f.tensor("mystery").unwrap();
    assert_eq!((m.ggml_type, m.size, m.type_id), (None, None, 77));
    assert_eq!(m.type_name(), "UNKNOWN(77)");
    assert_eq!(f.tensor_range(m), None);
    assert_eq!(f.tensor("last").unwrap().offset, 96);
    assert_eq!(GgufWriter::from_file(&f, &b).unwrap().to_bytes().unwrap(), b);
}

#[test]
fn header_only_files_with_and_without_trailing_padding() {
    let mut w = GgufWriter::new();
    w.add_metadata("general.name", GgufValue::from("abc"));
    let padded = w.to_bytes().unwrap();
    assert_eq!(padded.len() % 32, 0);
    w.set_trailing_padding(false);
    let bare = w.to_bytes().unwrap();
    assert_eq!(bare.len(), 24 + 8 + 12 + 4 + 8 + 3);
    assert_eq!(&padded[..bare.len()], &bare[..]);
    for b in [padded, bare] {
        let f = GgufFile::parse(&b, b.len() as u64).unwrap();
        assert_eq!(f.data_offset, 64);
        assert_eq!(GgufWriter::from_file(&f, &b).unwrap().to_bytes().unwrap(), b);
    }
}

#[test]
fn non_canonical_layout_is_read_and_rewritten_canonically() {
    // two tensors whose data lie in the opposite order to their infos, with a gap
    let mut infos = vec![TensorInfo::new("x", vec![4], 0), TensorInfo::new("y", vec![4], 0)];
    infos[0].offset = 64;
    infos[1].offset = 0;
    let mut b = Vec::new();
    let d = write_header(&mut b, 3, &[], &infos, 32).unwrap() as usize;
    b.resize(d + 80, 0);
    b[d..d + 16].copy_from_slice(&f32_bytes(&[5.0, 6.0, 7.0, 8.0]));
    b[d + 64..d + 80].copy_from_slice(&f32_bytes(&[1.0, 2.0, 3.0, 4.0]));
    let f = GgufFile::parse(&b, b.len() as u64).unwrap();
    let out = GgufWriter::from_file(&f, &b).unwrap().to_bytes().unwrap();
    let g = GgufFile::parse(&out, out.len() as u64).unwrap();
    assert_eq!(g.tensor("x").unwrap().offset, 0);
    assert_eq!(g.tensor("y").unwrap().offset, 32);
    let r = g.tensor_range(g.tensor("x").unwrap()).unwrap();
    assert_eq!(&out[r.start as usize..r.end as usize], &f32_bytes(&[1.0, 2.0, 3.0, 4.0])[..]);
}

#[test]
fn from_file_refuses_short_data() {
    let b = sample_writer(3).to_bytes().unwrap();
    let f = GgufFile::parse(&b, b.len() as u64).unwrap();
    let e = GgufWriter::from_file(&f, &b[..b.len() - 100]).err().unwrap();
    assert_eq!(e.code, ErrorCode::GgufTensorOutOfBounds);
}

#[test]
fn value_type_ids_in_the_file() {
    // each scalar's type id is the GGUF id of its variant
    let b = {
        let mut w = GgufWriter::new();
        w.add_metadata("x", GgufValue::F64(1.0));
        w.to_bytes().unwrap()
    };
    assert_eq!(u32::from_le_bytes(b[33..37].try_into().unwrap()), GgufValueType::F64.id());
    assert_eq!(GgufValueType::F64.id(), 12);
}
