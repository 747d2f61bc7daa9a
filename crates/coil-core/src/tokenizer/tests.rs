//! Unit tests on small hand-made vocabularies.

use super::*;
use crate::ErrorCode;

fn bpe_cfg() -> TokenizerConfig {
    let mut c = TokenizerConfig::new(ModelKind::Gpt2);
    // byte-level alphabet for a few ASCII letters and space, plus merges
    c.tokens = ["<|endoftext|>", "a", "b", "c", "Ġ", "ab", "Ġa", "abc", "  "].iter().map(|s| s.to_string()).collect();
    c.token_types = vec![
        TokenType::Control,
        TokenType::Normal,
        TokenType::Normal,
        TokenType::Normal,
        TokenType::Normal,
        TokenType::Normal,
        TokenType::Normal,
        TokenType::Normal,
        TokenType::UserDefined,
    ];
    c.merges = vec!["a b".into(), "Ġ a".into(), "ab c".into()];
    c.bos = Some(0);
    c.eos = Some(0);
    c.pre = Some("gpt-2".into());
    c
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
    check::<StreamDecoder>();
}

fn code(r: Result<Tokenizer>) -> ErrorCode {
    r.expect_err("should be refused").code
}

#[test]
fn small_bpe() {
    let t = Tokenizer::new(bpe_cfg()).map_err(|e| e.message).unwrap();
    assert_eq!(t.tokenize("abc", false, false), [7]);
    assert_eq!(t.tokenize("ab a", false, false), [5, 6]);
    // user-defined "  " always matched; control only with parse_special
    assert_eq!(t.tokenize("a  b", false, false), [1, 8, 2]);
    assert_eq!(t.tokenize("a<|endoftext|>", false, true), [1, 0]);
    assert_eq!(t.tokenize("a<|endoftext|>", false, false), [1]); // '<', '|', ... have no token
                                                                 // unknown bytes are dropped, like llama.cpp
    assert_eq!(t.tokenize("az", false, false), [1]);
    assert_eq!(t.eot(), Some(0));
    assert!(t.is_eog(0));
    assert!(t.is_control(0));
    assert_eq!(t.detokenize(&[7, 6], DetokenizeOptions::default()).unwrap(), "abc a");
    assert_eq!(t.token_to_piece(0, false).unwrap(), b"");
    assert_eq!(t.token_to_piece(0, true).unwrap(), b"<|endoftext|>");
    assert_eq!(t.token_to_piece(99, true).unwrap_err().code, ErrorCode::TokenOutOfRange);
    assert_eq!(t.piece(6).unwrap(), "Ġa");
    assert_eq!(t.token_type(8).unwrap(), TokenType::UserDefined);
}

#[test]
fn malformed_metadata_is_tokenizer_invalid() {
    let mut c = bpe_cfg();
    c.scores = vec![0.0; 3];
    assert_eq!(code(Tokenizer::new(c)), ErrorCode::TokenizerInvalid);

    let mut c = bpe_cfg();
    c.token_types.pop();
    assert_eq!(code(Tokenizer::new(c)), ErrorCode::TokenizerInvalid);

    let mut c = bpe_cfg();
    c.eos = Some(9);
    assert_eq!(code(Tokenizer::new(c)), ErrorCode::TokenizerInvalid);

    let mut c = bpe_cfg();
    c.pad = Some(u32::MAX);
    assert_eq!(code(Tokenizer::new(c)), ErrorCode::TokenizerInvalid);

    let mut c = bpe_cfg();
    c.merges.push("a x".into());
    assert_eq!(code(Tokenizer::new(c)), ErrorCode::TokenizerInvalid);

    let mut c = bpe_cfg();
    c.merges.push("b c".into()); // "bc" is not a token
    assert_eq!(code(Tokenizer::new(c)), ErrorCode::TokenizerInvalid);

    let mut c = bpe_cfg();
    c.merges.push("abc".into()); // no separator
    assert_eq!(code(Tokenizer::new(c)), ErrorCode::TokenizerInvalid);

    let mut c = bpe_cfg();
    c.tokens[2] = "a".into(); // duplicate text
    assert_eq!(code(Tokenizer::new(c)), ErrorCode::TokenizerInvalid);

    // No merges at all is valid (llama.cpp accepts it): every piece stays a byte-level symbol.
    let mut c = bpe_cfg();
    c.merges.clear();
    let t = Tokenizer::new(c).expect("a byte-level vocabulary without merges loads");
    assert!(!t.tokenize("ab", false, false).is_empty());

    let mut c = bpe_cfg();
    c.pre = Some("nonsense".into());
    assert_eq!(code(Tokenizer::new(c)), ErrorCode::TokenizerInvalid);

    let mut c = bpe_cfg();
    c.add_bos = true;
    c.bos = None;
    assert_eq!(code(Tokenizer::new(c)), ErrorCode::TokenizerInvalid);

    let mut c = bpe_cfg();
    c.tokens.clear();
    c.token_types.clear();
    assert_eq!(code(Tokenizer::new(c)), ErrorCode::TokenizerInvalid);
}

fn spm_cfg() -> TokenizerConfig {
    let mut c = TokenizerConfig::new(ModelKind::Llama);
    let mut toks: Vec<(String, f32, TokenType)> = vec![
        ("<unk>".into(), 0.0, TokenType::Unknown),
        ("<s>".into(), 0.0, TokenType::Control),
        ("</s>".into(), 0.0, TokenType::Control),
    ];
    for b in 0..=255u32 {
        toks.push((format!("<0x{b:02X}>"), 0.0, TokenType::Byte));
    }
    for (t, s) in [("▁", -1.0), ("a", -2.0), ("b", -3.0), ("▁a", -1.5), ("ab", -0.5), ("▁ab", -0.2), ("é", -5.0)]
    {
        toks.push((t.into(), s, TokenType::Normal));
    }
    c.tokens = toks.iter().map(|t| t.0.clone()).collect();
    c.scores = toks.iter().map(|t| t.1).collect();
    c.token_types = toks.iter().map(|t| t.2).collect();
    c
}

#[test]
fn small_spm() {
    let t = Tokenizer::new(spm_cfg()).unwrap();
    let id = |s: &str| t.token_id(s).unwrap();
    assert_eq!(t.tokenize("ab", false, false), [id("▁ab")]);
    assert_eq!(t.tokenize("ab", true, false), [1, id("▁ab")]);
    assert_eq!(t.tokenize("a b", false, false), [id("▁a"), id("▁"), id("b")]);
    // byte fallback for characters outside the vocabulary
    assert_eq!(t.tokenize("ä", false, false), [id("▁"), id("<0xC3>"), id("<0xA4>")]);
    // control tokens in text only with parse_special; text after one gets a space prefix
    assert_eq!(t.tokenize("</s>ab", false, true), [2, id("▁ab")]);
    // BOS renders as nothing but still counts as the first piece, so the prefix space stays
    assert_eq!(t.detokenize(&t.tokenize("ab a", true, false), DetokenizeOptions::default()).unwrap(), " ab a");
    assert_eq!(t.detokenize(&t.tokenize("ab a", false, false), DetokenizeOptions::default()).unwrap(), "ab a");
    let o = DetokenizeOptions { remove_special: true, ..Default::default() };
    // llama.cpp keeps the prefix space when it removes the BOS
    assert_eq!(t.detokenize(&t.tokenize("ab a", true, false), o).unwrap(), " ab a");
    assert_eq!(t.detokenize(&t.tokenize("äé", false, false), DetokenizeOptions::default()).unwrap(), "äé");
    assert_eq!(t.tokenize("", true, false), [1]);
    assert_eq!(t.tokenize("", false, false), Vec::<u32>::new());
}

#[test]
fn stream_decoder_holds_split_characters() {
    let t = Tokenizer::new(spm_cfg()).unwrap();
    let ids = t.tokenize("aä€b", false, false);
    let mut d = StreamDecoder::new(false);
    let mut text = String::new();
    for id in ids {
        let part = d.push(&t, id).unwrap();
        assert!(!part.contains('\u{FFFD}'), "broken character emitted: {part:?}");
        text.push_str(&part);
    }
    text.push_str(&d.flush());
    assert_eq!(text, " aä€b");
}
