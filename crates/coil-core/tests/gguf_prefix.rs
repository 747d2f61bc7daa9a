//! Parsing from prefixes (what the wasm binding does with chunks of a Blob): every prefix either
//! asks for more, with a length that gets further, or gives exactly the full parse.

use std::path::PathBuf;

use coil_core::gguf::{GgmlType, GgufArray, GgufFile, GgufValue, GgufWriter};
use coil_core::ErrorCode;

fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", GgufValue::from("mamba"));
    w.add_metadata("general.name", GgufValue::from("prefix test"));
    w.add_metadata("mamba.block_count", GgufValue::U32(2));
    w.add_metadata("f", GgufValue::F32(0.5));
    w.add_metadata("d", GgufValue::F64(0.25));
    w.add_metadata("b", GgufValue::Bool(true));
    let words: Vec<String> = (0..40).map(|i| format!("tok{i}")).collect();
    w.add_metadata("tokenizer.ggml.tokens", GgufValue::Array(GgufArray::String(words)));
    w.add_metadata("s", GgufValue::from(vec![0.5f32; 33]));
    w.add_metadata(
        "n",
        GgufValue::Array(GgufArray::Array(vec![GgufArray::U16(vec![1, 2, 3]), GgufArray::String(vec!["z".into()])])),
    );
    w.add_tensor("a", vec![4, 2], GgmlType::F32.id(), vec![1; 32]).unwrap();
    w.add_tensor("b", vec![32], GgmlType::Q8_0.id(), vec![2; 34]).unwrap();
    w.add_tensor("c", vec![3], 99, vec![3; 5]).unwrap();
    w.to_bytes().unwrap()
}

/// Checks every prefix length from 0 to `upto`.
fn check_every_prefix(bytes: &[u8], upto: usize) {
    let size = bytes.len() as u64;
    let full = GgufFile::parse(bytes, size).unwrap();
    let mut first_ok = None;
    for len in 0..=upto.min(bytes.len()) {
        match GgufFile::parse(&bytes[..len], size) {
            Ok(f) => {
                assert_eq!(f, full, "prefix {len}");
                first_ok.get_or_insert(len);
            }
            Err(e) => {
                assert_eq!(e.code, ErrorCode::GgufNeedMore, "prefix {len}: {e}");
                assert!(first_ok.is_none(), "prefix {len} needs more after a shorter one sufficed");
                let want = e.offset.unwrap();
                assert!(want > len as u64 && want <= size, "prefix {len}: asks for {want} of {size}");
            }
        }
    }
    // the header ends before the data section: from there on every prefix parses
    let first_ok = first_ok.expect("some prefix must parse");
    assert!(first_ok as u64 <= full.data_offset, "needed {first_ok} > data offset {}", full.data_offset);
}

#[test]
fn every_prefix_of_a_small_file() {
    let b = small_file();
    check_every_prefix(&b, b.len());
}

#[test]
fn every_prefix_of_the_tiny_models() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models");
    for name in ["tiny-mamba.gguf", "tiny-mamba2.gguf", "tiny-jamba.gguf"] {
        let b = std::fs::read(dir.join(name)).unwrap();
        let f = GgufFile::parse(&b, b.len() as u64).unwrap();
        check_every_prefix(&b, f.data_offset as usize + 64);
    }
}

#[test]
fn truncated_files_never_ask_for_more() {
    let b = small_file();
    for len in 0..b.len() {
        match GgufFile::parse(&b[..len], len as u64) {
            Ok(_) => {
                // only the trailing padding after the last tensor may go
                let f = GgufFile::parse(&b, b.len() as u64).unwrap();
                let end = f.tensors.iter().filter_map(|t| f.tensor_range(t)).map(|r| r.end).max().unwrap();
                assert!(len as u64 >= end, "{len}");
            }
            Err(e) => assert_ne!(e.code, ErrorCode::GgufNeedMore, "{len}: {e}"),
        }
    }
}

#[test]
fn chunk_loop_converges_quickly() {
    let b = small_file();
    let size = b.len() as u64;
    let mut have = 0;
    let mut rounds = 0;
    let f = loop {
        rounds += 1;
        match GgufFile::parse(&b[..have], size) {
            Ok(f) => break f,
            Err(e) => have = e.offset.unwrap() as usize,
        }
    };
    assert_eq!(f, GgufFile::parse(&b, size).unwrap());
    assert_eq!(rounds, 2, "a file this small needs one request");
}

#[test]
fn need_more_asks_for_at_least_double() {
    // a file of 1 MiB whose header holds one long string array
    let words: Vec<String> = (0..20_000).map(|i| format!("w{i:05}")).collect();
    let mut w = GgufWriter::new();
    w.add_metadata("words", GgufValue::Array(GgufArray::String(words)));
    w.add_tensor("pad", vec![200_000], GgmlType::F32.id(), vec![0; 800_000]).unwrap();
    let b = w.to_bytes().unwrap();
    let size = b.len() as u64;
    for have in [0usize, 10, 1000, 70_000, 100_000] {
        let e = GgufFile::parse(&b[..have], size).unwrap_err();
        assert_eq!(e.code, ErrorCode::GgufNeedMore);
        let want = e.offset.unwrap();
        assert!(want >= (2 * have as u64).max(64 * 1024) && want <= size, "{have} -> {want}");
    }
    // the array's smallest possible size is requested in one go
    let e = GgufFile::parse(&b[..100], size).unwrap_err();
    assert!(e.offset.unwrap() >= 24 + 8 + 5 + 4 + 4 + 8 + 20_000 * 8);
}
