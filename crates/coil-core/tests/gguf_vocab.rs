//! The vocab-only GGUFs from llama.cpp: known facts, byte-identical round trips, mapping, chunked
//! parsing and inspection.

use std::path::PathBuf;

use coil_core::gguf::inspect::{inspect_json, InspectOptions};
use coil_core::gguf::{GgufFile, GgufValueType, GgufWriter, MappedGguf};
use coil_core::ErrorCode;

fn vocab(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vocab").join(name)
}

fn read(name: &str) -> (Vec<u8>, GgufFile) {
    let bytes = std::fs::read(vocab(name)).unwrap();
    let file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
    (bytes, file)
}

const FILES: [&str; 3] = ["ggml-vocab-gpt-2.gguf", "ggml-vocab-gpt-neox.gguf", "ggml-vocab-llama-spm.gguf"];

#[test]
fn gpt2_facts() {
    let (bytes, f) = read("ggml-vocab-gpt-2.gguf");
    assert_eq!(f.version, 3);
    assert_eq!(f.file_size, bytes.len() as u64);
    assert_eq!(f.metadata.len(), 16);
    assert!(f.tensors.is_empty());
    assert_eq!(f.alignment, 32);
    assert_eq!(f.architecture(), Some("gpt2"));
    assert_eq!(f.get_str("general.name"), Some("gpt-2"));
    assert_eq!(f.get_str("tokenizer.ggml.model"), Some("gpt2"));
    assert_eq!(f.get_str("tokenizer.ggml.pre"), Some("gpt-2"));
    let tokens = f.get_array("tokenizer.ggml.tokens").unwrap().as_strings().unwrap();
    assert_eq!(tokens.len(), 50257);
    assert_eq!(tokens[0], "!");
    assert_eq!(tokens[50256], "<|endoftext|>");
    let merges = f.get_array("tokenizer.ggml.merges").unwrap().as_strings().unwrap();
    assert_eq!(merges.len(), 50000);
    assert_eq!(merges[0], "Ġ t");
    assert_eq!(f.get_array("tokenizer.ggml.token_type").unwrap().elem_type(), GgufValueType::I32);
    assert_eq!(f.get_u64("tokenizer.ggml.bos_token_id"), Some(50256));
    assert_eq!(f.get_u64("tokenizer.ggml.eos_token_id"), Some(50256));
    assert_eq!(f.get_u64("gpt2.block_count"), Some(12));
    assert_eq!(f.get_u64("gpt2.context_length"), Some(1024));
    let eps = f.get_f64("gpt2.attention.layer_norm_epsilon").unwrap();
    assert!((eps - 1e-5).abs() < 1e-10, "{eps}");
    // written without padding after the header: the data section starts past the end
    assert!(f.data_offset > f.file_size);
}

#[test]
fn gpt_neox_facts() {
    let (bytes, f) = read("ggml-vocab-gpt-neox.gguf");
    assert_eq!(f.version, 3);
    assert_eq!(f.metadata.len(), 18);
    assert_eq!(f.architecture(), Some("gptneox"));
    assert_eq!(f.get_str("tokenizer.ggml.model"), Some("gpt2"));
    assert_eq!(f.get_str("tokenizer.ggml.pre"), Some("mpt"));
    let tokens = f.get_array("tokenizer.ggml.tokens").unwrap().as_strings().unwrap();
    assert_eq!(tokens.len(), 50432);
    assert_eq!(tokens[0], "<|endoftext|>");
    assert_eq!(tokens[1], "<|padding|>");
    assert_eq!(f.get_array("tokenizer.ggml.merges").unwrap().len(), 50009);
    let types = f.get_array("tokenizer.ggml.token_type").unwrap().to_i64_vec().unwrap();
    assert_eq!(types.len(), 50432);
    assert_eq!(&types[..3], &[3, 3, 1]);
    assert_eq!(f.get_bool("gptneox.use_parallel_residual"), Some(true));
    assert_eq!(f.get_u64("tokenizer.ggml.unknown_token_id"), Some(0));
    // padded to the alignment at the end
    assert_eq!(f.data_offset, f.file_size);
    assert_eq!(bytes.len() % 32, 0);
}

#[test]
fn llama_spm_facts() {
    let (_, f) = read("ggml-vocab-llama-spm.gguf");
    assert_eq!(f.metadata.len(), 22);
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.get_str("tokenizer.ggml.model"), Some("llama"));
    assert_eq!(f.get_str("tokenizer.ggml.pre"), Some("default"));
    let tokens = f.get_array("tokenizer.ggml.tokens").unwrap().as_strings().unwrap();
    assert_eq!(tokens.len(), 32000);
    assert_eq!(&tokens[..3], &["<unk>", "<s>", "</s>"]);
    assert_eq!(tokens[3], "<0x00>");
    let scores = f.get_array("tokenizer.ggml.scores").unwrap().as_f32s().unwrap();
    assert_eq!(scores.len(), 32000);
    assert_eq!(f.get_u64("tokenizer.ggml.bos_token_id"), Some(1));
    assert_eq!(f.get_u64("tokenizer.ggml.eos_token_id"), Some(2));
    assert_eq!(f.get_bool("tokenizer.ggml.add_bos_token"), Some(true));
    assert_eq!(f.get_bool("tokenizer.ggml.add_eos_token"), Some(false));
    assert_eq!(f.get_u64("llama.vocab_size"), Some(32000));
    assert!(f.get_array("tokenizer.ggml.merges").is_none());
    assert!(f.get("no.such.key").is_none());
}

#[test]
fn vocab_files_round_trip_byte_identically() {
    for name in FILES {
        let (bytes, f) = read(name);
        let out = GgufWriter::from_file(&f, &bytes).unwrap().to_bytes().unwrap();
        assert_eq!(out.len(), bytes.len(), "{name}");
        assert!(out == bytes, "{name} differs after a round trip");
    }
}

#[test]
fn mapped_matches_read() {
    for name in FILES {
        let (bytes, f) = read(name);
        let m = MappedGguf::open(&vocab(name)).unwrap();
        assert_eq!(m.file, f, "{name}");
        assert_eq!(m.bytes(), &bytes[..]);
    }
}

#[test]
fn mapped_io_errors_name_the_path() {
    let missing = vocab("no-such-file.gguf");
    let e = MappedGguf::open(&missing).unwrap_err();
    assert_eq!(e.code, ErrorCode::Io);
    assert!(e.message.contains("no-such-file.gguf"), "{}", e.message);
}

/// Parses the way the wasm binding does: hand over growing prefixes until the header fits.
fn parse_chunked(bytes: &[u8]) -> (GgufFile, usize, usize) {
    let size = bytes.len() as u64;
    let mut have = 0usize;
    for round in 1..=64 {
        match GgufFile::parse(&bytes[..have], size) {
            Ok(f) => return (f, have, round),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::GgufNeedMore, "{e}");
                let next = e.offset.unwrap() as usize;
                assert!(next > have && next <= bytes.len(), "{next} after {have}");
                have = next;
            }
        }
    }
    panic!("no result after 64 rounds");
}

#[test]
fn chunked_parse_of_vocab_files() {
    for name in FILES {
        let (bytes, f) = read(name);
        let (g, used, rounds) = parse_chunked(&bytes);
        assert_eq!(g, f, "{name}");
        assert!(rounds <= 12, "{name}: {rounds} rounds");
        assert!(used <= bytes.len());
    }
}

#[test]
fn inspect_vocab_files() {
    for name in FILES {
        let (_, f) = read(name);
        for head in [None, Some(0), Some(16)] {
            let json = inspect_json(&f, &InspectOptions { array_head: head });
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(v["version"], 3);
            assert_eq!(v["file_size"], f.file_size);
            let md = v["metadata"].as_object().unwrap();
            assert_eq!(md.len(), f.metadata.len());
            let tokens = &v["metadata"]["tokenizer.ggml.tokens"];
            let n = f.get_array("tokenizer.ggml.tokens").unwrap().len();
            match head {
                None => assert_eq!(tokens.as_array().unwrap().len(), n),
                Some(h) => {
                    assert_eq!(tokens["type"], "array<string>");
                    assert_eq!(tokens["length"], n);
                    assert_eq!(tokens["head"].as_array().unwrap().len(), h);
                }
            }
            assert_eq!(v["metadata_types"]["tokenizer.ggml.tokens"], "array<string>");
            assert_eq!(v["summary"]["tokenizer"]["vocab_size"], n);
            assert_eq!(v["summary"]["tokenizer"]["model"], f.get_str("tokenizer.ggml.model").unwrap());
            assert_eq!(v["summary"]["parameters"], 0);
            assert!(v["summary"]["bits_per_weight"].is_null());
            assert_eq!(v["summary"]["layers"].as_array().unwrap().len(), 0);
            assert!(v["summary"]["recurrent_state_bytes_per_sequence"].is_null());
            assert!(v["tensors"].as_array().unwrap().is_empty());
        }
    }
    // file order is kept, and float metadata prints as the shortest f32 decimal
    let (_, f) = read("ggml-vocab-gpt-2.gguf");
    let json = inspect_json(&f, &InspectOptions { array_head: Some(2) });
    let keys: Vec<&str> = f.metadata.iter().map(|(k, _)| k.as_str()).collect();
    let mut last = 0;
    for k in keys {
        let at = json.find(&format!("\"{k}\":")).unwrap();
        assert!(at >= last, "{k} out of order");
        last = at;
    }
    assert!(json.contains("\"gpt2.attention.layer_norm_epsilon\":1e-5"), "{}", &json[..600]);
    assert!(json.contains("\"summary\":{\"architecture\":\"gpt2\",\"name\":\"gpt-2\""));
    assert!(json.contains("\"context_length\":1024,\"embedding_length\":768,\"block_count\":12"));
}
