//! `Tokenizer::from_gguf` on small hand-written GGUF files: llama.cpp's defaults, and inconsistent
//! metadata refused with `TokenizerInvalid` (or `MissingKey` for a required key), never a panic.

use coil_core::gguf::{GgufArray, GgufFile, GgufValue, GgufWriter};
use coil_core::tokenizer::{TokenType, Tokenizer};
use coil_core::ErrorCode;

fn strings(v: &[&str]) -> GgufValue {
    GgufValue::Array(GgufArray::String(v.iter().map(|s| s.to_string()).collect()))
}

/// A small byte-level BPE vocabulary; `edit` changes or removes keys before writing.
fn gpt2_file(edit: impl FnOnce(&mut Vec<(String, GgufValue)>)) -> Result<Tokenizer, coil_core::CoilError> {
    let mut kv: Vec<(String, GgufValue)> = vec![
        ("general.architecture".into(), GgufValue::String("mamba".into())),
        ("tokenizer.ggml.model".into(), GgufValue::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), GgufValue::String("mpt".into())),
        ("tokenizer.ggml.tokens".into(), strings(&["<|endoftext|>", "h", "i", "Ġ", "hi", "Ġh", "Ġhi", "  "])),
        ("tokenizer.ggml.token_type".into(), GgufValue::Array(GgufArray::I32(vec![3, 1, 1, 1, 1, 1, 1, 4]))),
        ("tokenizer.ggml.merges".into(), strings(&["Ġ h", "Ġh i", "h i"])),
        ("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(0)),
        ("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(0)),
    ];
    edit(&mut kv);
    let mut w = GgufWriter::new();
    for (k, v) in kv {
        w.add_metadata(k, v);
    }
    let bytes = w.to_bytes().expect("writable");
    let file = GgufFile::parse(&bytes, bytes.len() as u64).expect("parsable");
    Tokenizer::from_gguf(&file)
}

fn set(kv: &mut Vec<(String, GgufValue)>, key: &str, v: GgufValue) {
    match kv.iter_mut().find(|(k, _)| k == key) {
        Some(e) => e.1 = v,
        None => kv.push((key.to_string(), v)),
    }
}

fn remove(kv: &mut Vec<(String, GgufValue)>, key: &str) {
    kv.retain(|(k, _)| k != key);
}

fn err(r: Result<Tokenizer, coil_core::CoilError>) -> ErrorCode {
    match r {
        Ok(t) => panic!("accepted: {t:?}"),
        Err(e) => e.code,
    }
}

#[test]
fn valid_file() {
    let t = gpt2_file(|_| {}).unwrap();
    assert_eq!(t.tokenize("hi hi", false, false), [4, 6]);
    assert_eq!(t.tokenize("hi  hi", false, false), [4, 7, 4]);
    assert_eq!(t.tokenize("hi", true, false), [4]); // gpt2 models add no BOS by default
    assert_eq!(t.eot(), Some(0));
    assert!(t.is_eog(0));
    assert_eq!(t.token_type(7).unwrap(), TokenType::UserDefined);
    assert!(!t.add_space_prefix());
}

#[test]
fn defaults_and_overrides() {
    let t = gpt2_file(|kv| set(kv, "tokenizer.ggml.add_bos_token", GgufValue::Bool(true))).unwrap();
    assert_eq!(t.tokenize("hi", true, false), [0, 4]);
    let t = gpt2_file(|kv| set(kv, "tokenizer.ggml.add_eos_token", GgufValue::Bool(true))).unwrap();
    assert_eq!(t.tokenize("hi", true, false), [4, 0]);
    // without bos/eos keys, llama.cpp's gpt2 default id 11 is outside this vocabulary: none
    let t = gpt2_file(|kv| {
        remove(kv, "tokenizer.ggml.bos_token_id");
        remove(kv, "tokenizer.ggml.eos_token_id");
    })
    .unwrap();
    assert_eq!((t.bos(), t.eos()), (None, None));
    // negative ids mean "none"
    let t = gpt2_file(|kv| set(kv, "tokenizer.ggml.padding_token_id", GgufValue::I32(-1))).unwrap();
    assert_eq!(t.pad(), None);
    // missing pre: llama.cpp's default splitter
    let t = gpt2_file(|kv| remove(kv, "tokenizer.ggml.pre")).unwrap();
    assert_eq!(t.pre(), None);
    assert_eq!(t.tokenize("hi hi", false, false), [4, 6]);
}

#[test]
fn inconsistent_metadata_is_tokenizer_invalid() {
    use ErrorCode::{MissingKey, TokenizerInvalid};
    type Edit = Box<dyn FnOnce(&mut Vec<(String, GgufValue)>)>;
    let cases: Vec<(&str, Edit, ErrorCode)> = vec![
        ("no model", Box::new(|kv| remove(kv, "tokenizer.ggml.model")), MissingKey),
        (
            "unknown model",
            Box::new(|kv| set(kv, "tokenizer.ggml.model", GgufValue::String("bert".into()))),
            TokenizerInvalid,
        ),
        ("model not a string", Box::new(|kv| set(kv, "tokenizer.ggml.model", GgufValue::U32(2))), TokenizerInvalid),
        ("no tokens", Box::new(|kv| remove(kv, "tokenizer.ggml.tokens")), MissingKey),
        (
            "tokens not strings",
            Box::new(|kv| set(kv, "tokenizer.ggml.tokens", GgufValue::Array(GgufArray::U32(vec![1, 2])))),
            TokenizerInvalid,
        ),
        ("empty vocabulary", Box::new(|kv| set(kv, "tokenizer.ggml.tokens", strings(&[]))), TokenizerInvalid),
        ("no merges", Box::new(|kv| remove(kv, "tokenizer.ggml.merges")), MissingKey),
        (
            "merge of unknown token",
            Box::new(|kv| set(kv, "tokenizer.ggml.merges", strings(&["h x"]))),
            TokenizerInvalid,
        ),
        (
            "merge result not a token",
            Box::new(|kv| set(kv, "tokenizer.ggml.merges", strings(&["i h"]))),
            TokenizerInvalid,
        ),
        (
            "merge without separator",
            Box::new(|kv| set(kv, "tokenizer.ggml.merges", strings(&["hi"]))),
            TokenizerInvalid,
        ),
        (
            "token types too short",
            Box::new(|kv| set(kv, "tokenizer.ggml.token_type", GgufValue::Array(GgufArray::I32(vec![1; 3])))),
            TokenizerInvalid,
        ),
        (
            "token types not integers",
            Box::new(|kv| set(kv, "tokenizer.ggml.token_type", GgufValue::Array(GgufArray::F32(vec![1.0; 8])))),
            TokenizerInvalid,
        ),
        (
            "scores too long",
            Box::new(|kv| set(kv, "tokenizer.ggml.scores", GgufValue::Array(GgufArray::F32(vec![0.0; 9])))),
            TokenizerInvalid,
        ),
        (
            "scores not f32",
            Box::new(|kv| set(kv, "tokenizer.ggml.scores", GgufValue::Array(GgufArray::I32(vec![0; 8])))),
            TokenizerInvalid,
        ),
        (
            "bos out of range",
            Box::new(|kv| set(kv, "tokenizer.ggml.bos_token_id", GgufValue::U32(8))),
            TokenizerInvalid,
        ),
        (
            "eos out of range",
            Box::new(|kv| set(kv, "tokenizer.ggml.eos_token_id", GgufValue::U64(u64::MAX))),
            TokenizerInvalid,
        ),
        (
            "eot out of range",
            Box::new(|kv| set(kv, "tokenizer.ggml.eot_token_id", GgufValue::U32(100))),
            TokenizerInvalid,
        ),
        (
            "unk out of range",
            Box::new(|kv| set(kv, "tokenizer.ggml.unknown_token_id", GgufValue::I64(1 << 40))),
            TokenizerInvalid,
        ),
        (
            "pad not an integer",
            Box::new(|kv| set(kv, "tokenizer.ggml.padding_token_id", GgufValue::String("0".into()))),
            TokenizerInvalid,
        ),
        (
            "add_bos not a bool",
            Box::new(|kv| set(kv, "tokenizer.ggml.add_bos_token", GgufValue::U8(1))),
            TokenizerInvalid,
        ),
        (
            "unknown pre-tokenizer",
            Box::new(|kv| set(kv, "tokenizer.ggml.pre", GgufValue::String("no-such".into()))),
            TokenizerInvalid,
        ),
        (
            "duplicate token",
            Box::new(|kv| {
                set(kv, "tokenizer.ggml.tokens", strings(&["<|endoftext|>", "h", "i", "Ġ", "hi", "Ġh", "Ġhi", "h"]))
            }),
            TokenizerInvalid,
        ),
        (
            "add_bos without bos",
            Box::new(|kv| {
                remove(kv, "tokenizer.ggml.bos_token_id");
                set(kv, "tokenizer.ggml.add_bos_token", GgufValue::Bool(true));
            }),
            TokenizerInvalid,
        ),
    ];
    for (what, edit, code) in cases {
        assert_eq!(err(gpt2_file(edit)), code, "{what}");
    }
}

#[test]
fn llama_defaults() {
    let mut w = GgufWriter::new();
    let mut toks = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    toks.extend((0..=255).map(|b| format!("<0x{b:02X}>")));
    toks.extend(["▁", "a", "▁a"].map(String::from));
    let n = toks.len();
    let mut types = vec![2, 3, 3];
    types.extend(vec![6; 256]);
    types.extend([1, 1, 1]);
    let mut scores = vec![0.0f32; n];
    scores[n - 1] = -1.0;
    scores[n - 2] = -2.0;
    scores[n - 3] = -3.0;
    w.add_metadata("tokenizer.ggml.model", GgufValue::String("llama".into()));
    w.add_metadata("tokenizer.ggml.tokens", GgufValue::Array(GgufArray::String(toks)));
    w.add_metadata("tokenizer.ggml.token_type", GgufValue::Array(GgufArray::I32(types)));
    w.add_metadata("tokenizer.ggml.scores", GgufValue::Array(GgufArray::F32(scores)));
    let bytes = w.to_bytes().unwrap();
    let t = Tokenizer::from_gguf(&GgufFile::parse(&bytes, bytes.len() as u64).unwrap()).unwrap();
    // llama.cpp's SPM defaults: BOS 1, EOS 2, UNK 0, add BOS, space prefix
    assert_eq!((t.bos(), t.eos(), t.unk()), (Some(1), Some(2), Some(0)));
    assert!(t.add_bos() && t.add_space_prefix() && !t.clean_spaces());
    assert_eq!(t.tokenize("a", true, false), [1, n as u32 - 1]);
    assert_eq!(t.tokenize("b", false, false), [n as u32 - 3, 3 + b'b' as u32]);
}
