//! Tokenizer throughput (ignored by default; run with
//! `COIL_BENCH_TEXT=path/to/text cargo test -p coil-core --release --test tokenizer_speed -- --ignored --nocapture`).
//! Without COIL_BENCH_TEXT it uses ~1 MB built from the test vectors.

use std::path::PathBuf;
use std::time::Instant;

use coil_core::gguf::GgufFile;
use coil_core::tokenizer::{DetokenizeOptions, Tokenizer};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(rel)
}

fn load(name: &str) -> Tokenizer {
    let bytes = std::fs::read(fixture(name)).unwrap();
    Tokenizer::from_gguf(&GgufFile::parse(&bytes, bytes.len() as u64).unwrap()).unwrap()
}

fn text() -> String {
    if let Ok(p) = std::env::var("COIL_BENCH_TEXT") {
        return std::fs::read_to_string(p).unwrap();
    }
    let base =
        std::fs::read_to_string(fixture("vocab/ggml-vocab-mpt.gguf.inp")).unwrap().replace("__ggml_vocab_test__", "");
    base.repeat(1_000_000 / base.len() + 1)
}

fn bench(name: &str, tok: &Tokenizer, text: &str) {
    let _ = tok.tokenize(&text[..text.len().min(10_000)], false, false);
    let mut best = f64::MAX;
    let mut n = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let ids = tok.tokenize(text, false, false);
        best = best.min(t.elapsed().as_secs_f64());
        n = ids.len();
    }
    let ids = tok.tokenize(text, false, false);
    let t = Instant::now();
    let back = tok.detokenize(&ids, DetokenizeOptions { clean_spaces: Some(false), ..Default::default() }).unwrap();
    let dt = t.elapsed().as_secs_f64();
    let mb = text.len() as f64 / 1e6;
    eprintln!(
        "{name}: {:.2} MB -> {n} tokens in {:.1} ms = {:.1} MB/s (detokenize {:.1} ms)",
        mb,
        best * 1e3,
        mb / best,
        dt * 1e3
    );
    if tok.model() == coil_core::tokenizer::ModelKind::Gpt2 {
        assert_eq!(back, text);
    }
}

#[test]
#[ignore]
fn tokenize_throughput() {
    let text = text();
    bench("gpt-neox", &load("vocab/ggml-vocab-gpt-neox.gguf"), &text);
    bench("gpt-2", &load("vocab/ggml-vocab-gpt-2.gguf"), &text);
    bench("llama-spm", &load("vocab/ggml-vocab-llama-spm.gguf"), &text);
}

/// Degenerate inputs (long runs, one huge word) still tokenize in near-linear time and round-trip.
#[test]
fn degenerate_inputs() {
    let neox = load("vocab/ggml-vocab-gpt-neox.gguf");
    let spm = load("vocab/ggml-vocab-llama-spm.gguf");
    let n = 200_000;
    let inputs = [
        " ".repeat(n),
        "\n".repeat(n),
        "a".repeat(n),
        "ab1 ".repeat(n / 4),
        "漢".repeat(n / 3),
        "🦙".repeat(n / 4),
        "<|endoftext|>".repeat(n / 13),
        format!("{}x{}", " ".repeat(n / 2), "\t ".repeat(n / 4)),
    ];
    let raw = DetokenizeOptions { clean_spaces: Some(false), ..Default::default() };
    for text in &inputs {
        let t = Instant::now();
        let ids = neox.tokenize(text, false, true);
        assert_eq!(&neox.detokenize(&ids, DetokenizeOptions { unparse_special: true, ..raw }).unwrap(), text);
        let ids = spm.tokenize(text, false, false);
        assert_eq!(&spm.detokenize(&ids, raw).unwrap(), text);
        eprintln!("{:?}...: {:.1} ms", &text.chars().take(4).collect::<String>(), t.elapsed().as_secs_f64() * 1e3);
    }
}
