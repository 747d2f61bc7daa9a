//! llama.cpp's tokenizer test vectors (tests/fixtures/vocab, from llama.cpp's models/ directory):
//! every input must tokenize to exactly the expected ids, with llama.cpp's test settings
//! (`add_special = false`, `parse_special = false`).

use std::path::PathBuf;

use coil_core::gguf::GgufFile;
use coil_core::tokenizer::{DetokenizeOptions, Tokenizer};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/vocab").join(name)
}

fn load(name: &str) -> Tokenizer {
    let bytes = std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap_or_else(|e| panic!("{name}: {e}"));
    Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Reads `<name>.inp` / `<name>.out` as llama.cpp's test-tokenizer-0 does: inputs separated by
/// "\n__ggml_vocab_test__\n" (so an input keeps its own leading and trailing newlines), one line
/// of space-separated ids per input.
fn vectors(name: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(fixture(&format!("{name}.inp"))).unwrap();
    let out = std::fs::read_to_string(fixture(&format!("{name}.out"))).unwrap();
    let sep = "\n__ggml_vocab_test__\n";
    let mut inputs = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(sep) {
            Some(i) => {
                inputs.push(inp[pos..pos + i].to_string());
                pos += i + sep.len();
            }
            None => {
                inputs.push(inp[pos..].to_string());
                break;
            }
        }
    }
    let outputs: Vec<Vec<u32>> =
        out.lines().map(|l| l.split_whitespace().map(|t| t.parse().expect("token id")).collect()).collect();
    assert_eq!(inputs.len(), outputs.len(), "{name}: inputs and outputs differ in number");
    inputs.into_iter().zip(outputs).collect()
}

/// Whether llama.cpp's detokenizer space clean-up would change `s`.
fn clean_up_applies(s: &str) -> bool {
    [" ?", " !", " .", " ,", " ' ", " 's", " 'm", " 're", " 've"].iter().any(|p| s.contains(p))
}

fn check(vocab: &str, vecs: &str) -> usize {
    let tok = load(vocab);
    let tests = vectors(vecs);
    let mut failures = Vec::new();
    for (text, want) in &tests {
        let got = tok.tokenize(text, false, false);
        if &got != want {
            failures.push(format!("{text:?}\n   want {want:?}\n    got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{vocab}: {} of {} vectors differ:\n{}",
        failures.len(),
        tests.len(),
        failures.join("\n")
    );
    tests.len()
}

#[test]
fn gpt_neox_mpt_vectors() {
    let n = check("ggml-vocab-gpt-neox.gguf", "ggml-vocab-mpt.gguf");
    assert_eq!(n, 46);
}

#[test]
fn gpt2_vectors() {
    let n = check("ggml-vocab-gpt-2.gguf", "ggml-vocab-gpt-2.gguf");
    assert_eq!(n, 46);
}

/// `refact`: llama.cpp's name for the pre-tokenizer of Refact and of IBM's Granite 3 / Granite-4.0
/// tokenizers (digits split one by one, then the GPT-2 split).
#[test]
fn refact_vectors() {
    let n = check("ggml-vocab-refact.gguf", "ggml-vocab-refact.gguf");
    assert_eq!(n, 46);
    assert_eq!(load("ggml-vocab-refact.gguf").pre(), Some("refact"));
}

/// llama.cpp's `llama-bpe` vectors (the Llama-3 tokenizer) through every pre-tokenizer name that
/// llama.cpp maps to its llama3 split with `ignore_merges`: Falcon-H1 (`falcon-h1`), LFM2
/// (`lfm2`) and Nemotron-3-Nano (`pixtral`) write those names into their GGUFs.
#[test]
fn llama3_family_vectors() {
    let json = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tokenizer/llama3-tokenizer.json"),
    )
    .unwrap();
    let tests = vectors("ggml-vocab-llama-bpe.gguf");
    assert_eq!(tests.len(), 46);
    for pre in ["llama-bpe", "llama3", "falcon-h1", "lfm2", "pixtral"] {
        let cfg = coil_core::tokenizer::TokenizerConfig::from_hf_tokenizer_json(&json, Some(pre)).unwrap();
        let tok = Tokenizer::new(cfg).unwrap();
        assert_eq!(tok.pre(), Some(pre));
        let mut failures = Vec::new();
        for (text, want) in &tests {
            let got = tok.tokenize(text, false, false);
            if &got != want {
                failures.push(format!("{text:?}\n   want {want:?}\n    got {got:?}"));
            }
        }
        assert!(failures.is_empty(), "{pre}: {} of 46 differ:\n{}", failures.len(), failures.join("\n"));
    }
}

#[test]
fn llama_spm_vectors() {
    let n = check("ggml-vocab-llama-spm.gguf", "ggml-vocab-llama-spm.gguf");
    assert_eq!(n, 46);
}

#[test]
fn byte_level_round_trip() {
    for (vocab, vecs) in
        [("ggml-vocab-gpt-neox.gguf", "ggml-vocab-mpt.gguf"), ("ggml-vocab-gpt-2.gguf", "ggml-vocab-gpt-2.gguf")]
    {
        let tok = load(vocab);
        assert!(tok.clean_spaces());
        let raw = DetokenizeOptions { clean_spaces: Some(false), ..Default::default() };
        let mut n_clean = 0;
        for (text, ids) in vectors(vecs) {
            // The pieces of byte-level BPE always give back the input.
            assert_eq!(tok.detokenize(&ids, raw).unwrap(), text, "{vocab}");
            // llama.cpp's default detokenization also does, unless its clean-up applies.
            if !clean_up_applies(&text) {
                assert_eq!(tok.detokenize(&ids, DetokenizeOptions::default()).unwrap(), text, "{vocab}");
                n_clean += 1;
            }
        }
        assert!(n_clean > 30);
    }
}

#[test]
fn spm_round_trip() {
    let tok = load("ggml-vocab-llama-spm.gguf");
    for (text, ids) in vectors("ggml-vocab-llama-spm.gguf") {
        assert_eq!(tok.detokenize(&ids, DetokenizeOptions::default()).unwrap(), text);
        let mut with_bos = vec![tok.bos().unwrap()];
        with_bos.extend(&ids);
        assert_eq!(tok.tokenize(&text, true, false), with_bos);
    }
}

#[test]
fn gguf_metadata() {
    let neox = load("ggml-vocab-gpt-neox.gguf");
    assert_eq!(neox.n_vocab(), 50432);
    assert_eq!(neox.pre(), Some("mpt"));
    assert_eq!((neox.bos(), neox.eos(), neox.eot()), (Some(0), Some(0), Some(0)));
    assert!(neox.is_eog(0) && neox.is_control(0) && !neox.add_bos());
    assert_eq!(neox.tokenize("<|endoftext|>", false, true), [0]);
    assert_ne!(neox.tokenize("<|endoftext|>", false, false), [0]);

    let spm = load("ggml-vocab-llama-spm.gguf");
    assert_eq!((spm.bos(), spm.eos(), spm.unk()), (Some(1), Some(2), Some(0)));
    assert!(spm.add_bos() && spm.add_space_prefix() && !spm.clean_spaces());
    assert_eq!(spm.tokenize("<s>Hi", false, true)[0], 1);
    assert_eq!(spm.token_to_piece(spm.token_id("<0x0A>").unwrap(), false).unwrap(), b"\n");

    let gpt2 = load("ggml-vocab-gpt-2.gguf");
    assert_eq!((gpt2.bos(), gpt2.eos(), gpt2.unk()), (Some(50256), Some(50256), None));
}
