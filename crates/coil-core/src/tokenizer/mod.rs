//! Tokenizers, token for token as llama.cpp tokenizes (its `llama-vocab.cpp` at c392e509).
//!
//! * `gpt2` models: byte-level BPE over merge ranks, after llama.cpp's pre-tokenizer for the
//!   file's `tokenizer.ggml.pre` (`gpt-2`, `mpt` (GPT-NeoX), `default`, `llama3`, ...; see
//!   `pretok.rs` for the list).
//! * `llama` models: SentencePiece-style BPE over scores with byte fallback (`<0xXX>`), a space
//!   prefix and `▁` for spaces.
//!
//! Special tokens: control and unknown tokens are recognised in text only with
//! `parse_special = true`; user-defined tokens always are (llama.cpp's `tokenizer_st_partition`).
//!
//! Build a [`Tokenizer`] from a GGUF file ([`Tokenizer::from_gguf`]) or from a
//! [`TokenizerConfig`] ([`Tokenizer::new`]). Converters' readers for HF `tokenizer.json` and
//! SentencePiece `tokenizer.model` live in [`sources`].
//!
//! Where this deliberately differs from llama.cpp (all on inputs llama.cpp mishandles or leaves
//! unspecified):
//! * a special-token id given explicitly outside the vocabulary is an error (llama.cpp warns and
//!   keeps its default id); merges must name existing tokens and make one (llama.cpp ignores
//!   malformed merges); duplicate token texts are an error (llama.cpp aborts);
//! * when several end-of-turn texts exist and the file names none, the first in llama.cpp's list
//!   wins (llama.cpp's pick depends on hash-map order); ties between special tokens of equal
//!   length are broken by lower id (llama.cpp: unstable sort);
//! * `llama` byte fallback for a byte with no `<0xXX>` token gives UNK (llama.cpp throws);
//! * the `tokenizer.ggml.fim_*_token_id` keys are not read: fill-in-the-middle tokens are found by
//!   text only (which is what decides their control type and end-of-generation status);
//! * only the `gpt2` and `llama` models, and the pre-tokenizers listed in `pretok.rs`, are
//!   supported; others are a `TokenizerInvalid` error at load time.

mod bpe;
mod config;
mod decode;
mod gguf;
mod hash;
pub(crate) mod pretok;
pub mod sources;
mod special;
mod spm;
mod unicode;

pub use config::{ModelKind, TokenType, TokenizerConfig};
pub use decode::{DetokenizeOptions, StreamDecoder};

use crate::error::{CoilError, ErrorCode, Result};
use config::{check_id, invalid};
use hash::FastMap;
use special::{Frag, Special, Specials};

/// Texts that llama.cpp takes as end-of-turn tokens when the file names none (in this order of
/// preference here; llama.cpp's own order among several is unspecified).
const EOT_TEXTS: &[&str] =
    &["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "<｜end▁of▁sentence｜>"];
/// Texts of tokens that end generation (llama.cpp's list).
const EOG_TEXTS: &[&str] =
    &["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>"];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<PAD>"];
const FIM_REP_TEXTS: &[&str] = &["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>"];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// Fill-in-the-middle tokens that llama.cpp recognises by text (and makes control tokens).
const FIM_OTHER_TEXTS: &[&[&str]] = &[
    &["<|fim_prefix|>", "<fim-prefix>", "<｜fim▁begin｜>", "<PRE>"],
    &["<|fim_suffix|>", "<fim-suffix>", "<｜fim▁hole｜>", "<SUF>"],
    &["<|fim_middle|>", "<fim-middle>", "<｜fim▁end｜>", "<MID>"],
];

const ATTR_LSTRIP: u8 = 1;
const ATTR_RSTRIP: u8 = 2;

/// A ready-to-use tokenizer. Immutable; `Send + Sync`.
pub struct Tokenizer {
    kind: ModelKind,
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<TokenType>,
    token_to_id: FastMap<Box<str>, u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    /// Sorted.
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    clean_spaces: bool,
    pre: Option<String>,
    stages: &'static [pretok::Stage],
    specials: Specials,
    bpe: Option<bpe::Bpe>,
    /// `llama` model: the token for each raw byte (`<0xXX>`, else the one-byte text, else UNK).
    byte_tokens: Vec<Option<u32>>,
    /// `llama` model: characters that some token has right before a `▁` (other than at its
    /// start). No token spans the boundary before a `▁` that follows any other character, so the
    /// text is tokenized in independent pieces split there (same result, much faster).
    space_joiners: Vec<char>,
    /// `token_to_piece(id, special = true)` for every id, concatenated.
    pieces: Vec<u8>,
    piece_offs: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("model", &self.kind)
            .field("pre", &self.pre)
            .field("n_vocab", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("eot", &self.eot)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Check `cfg` and build the lookup structures. Inconsistent data (array lengths that differ,
    /// ids outside the vocabulary, duplicate token texts, merges naming unknown tokens, an
    /// unsupported pre-tokenizer) is a `TokenizerInvalid` error.
    pub fn new(cfg: TokenizerConfig) -> Result<Tokenizer> {
        let TokenizerConfig {
            model: kind,
            mut tokens,
            scores,
            token_types,
            merges,
            bos,
            eos,
            eot,
            eom,
            unk,
            pad,
            add_bos,
            add_eos,
            add_space_prefix,
            pre,
            model_name,
        } = cfg;
        let n = tokens.len();
        if n == 0 {
            return Err(invalid("the vocabulary is empty"));
        }
        if n > i32::MAX as usize {
            return Err(invalid(format!("{n} tokens is more than token ids can hold")));
        }
        if !scores.is_empty() && scores.len() != n {
            return Err(invalid(format!("{} scores for {n} tokens", scores.len())));
        }
        if !token_types.is_empty() && token_types.len() != n {
            return Err(invalid(format!("{} token types for {n} tokens", token_types.len())));
        }
        for (what, id) in [("BOS", bos), ("EOS", eos), ("EOT", eot), ("EOM", eom), ("UNK", unk), ("PAD", pad)] {
            check_id(what, id, n)?;
        }
        if add_bos && bos.is_none() {
            return Err(invalid("add_bos_token is set but there is no BOS token"));
        }
        if add_eos && eos.is_none() {
            return Err(invalid("add_eos_token is set but there is no EOS token"));
        }
        let info = match kind {
            ModelKind::Gpt2 => pretok::pre_info(pre.as_deref())?,
            ModelKind::Llama => pretok::pre_info(None)?,
        };
        // An empty merge list is valid (llama.cpp accepts it): every piece is then a single
        // byte-level symbol, as in coil's tiny test models.

        // Token texts: empty ones are renamed as llama.cpp does.
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[EMPTY_{i}]");
            }
        }
        let mut token_to_id: FastMap<Box<str>, u32> = FastMap::default();
        token_to_id.reserve(n);
        for (i, t) in tokens.iter().enumerate() {
            if let Some(prev) = token_to_id.insert(t.as_str().into(), i as u32) {
                return Err(invalid(format!("tokens {prev} and {i} are both {t:?}")));
            }
        }
        let mut types = if token_types.is_empty() { vec![TokenType::Normal; n] } else { token_types };
        let scores = if scores.is_empty() { vec![0.0; n] } else { scores };

        // End-of-turn / end-of-generation detection by text, as llama.cpp does.
        let find = |texts: &[&str]| texts.iter().find_map(|t| token_to_id.get(*t).copied());
        let mut eot = eot;
        let mut eom = eom;
        let mut force_control = Vec::new();
        if eot.is_none() {
            eot = find(EOT_TEXTS);
            force_control.extend(eot);
        }
        if eom.is_none() {
            eom = find(&["<|eom_id|>"]);
            force_control.extend(eom);
        }
        for texts in FIM_OTHER_TEXTS {
            force_control.extend(find(texts));
        }
        let mut eog: Vec<u32> = Vec::new();
        for texts in [FIM_PAD_TEXTS, FIM_REP_TEXTS, FIM_SEP_TEXTS] {
            if let Some(id) = find(texts) {
                eog.push(id);
                force_control.push(id);
            }
        }
        for t in EOG_TEXTS {
            if let Some(&id) = token_to_id.get(*t) {
                eog.push(id);
                force_control.push(id);
            }
        }
        eog.extend(eos);
        eog.extend(eot);
        eog.extend(eom);
        eog.sort_unstable();
        eog.dedup();
        for id in force_control {
            types[id as usize] = TokenType::Control;
        }

        // Per-token strip attributes (llama.cpp sets them by model / pre-tokenizer name).
        let mut attrs = vec![0u8; n];
        let is_special = |t: TokenType| matches!(t, TokenType::Control | TokenType::UserDefined | TokenType::Unknown);
        let pre_name = pre.as_deref().unwrap_or("");
        let lname = model_name.as_deref().unwrap_or("").to_lowercase();
        if ["jina-v2-de", "jina-v2-es", "jina-v2-code"].iter().any(|p| pre_name.contains(p)) {
            if let Some(&id) = token_to_id.get("<mask>") {
                attrs[id as usize] |= ATTR_LSTRIP;
            }
        } else if lname.contains("phi-3") || lname.contains("phi3") {
            for (i, &t) in types.iter().enumerate() {
                if is_special(t) {
                    attrs[i] |= ATTR_RSTRIP;
                }
            }
            if let Some(&id) = token_to_id.get("</s>") {
                attrs[id as usize] |= ATTR_RSTRIP;
            }
            for t in ["<unk>", "<s>", "<|endoftext|>"] {
                if let Some(&id) = token_to_id.get(t) {
                    attrs[id as usize] &= !ATTR_RSTRIP;
                }
            }
        }

        // Special-token candidates: longest first, then lowest id.
        let mut cand: Vec<u32> = (0..n as u32).filter(|&i| is_special(types[i as usize])).collect();
        cand.sort_by(|&a, &b| tokens[b as usize].len().cmp(&tokens[a as usize].len()).then(a.cmp(&b)));
        let list = cand
            .iter()
            .map(|&id| Special {
                id,
                needs_parse_special: matches!(types[id as usize], TokenType::Control | TokenType::Unknown),
                lstrip: attrs[id as usize] & ATTR_LSTRIP != 0,
                rstrip: attrs[id as usize] & ATTR_RSTRIP != 0,
            })
            .collect();
        let specials = Specials::new(list, &|id| tokens[id as usize].as_str());

        let lookup = |s: &str| token_to_id.get(s).copied();
        let bpe = match kind {
            ModelKind::Gpt2 => Some(bpe::Bpe::new(&merges, &lookup, info.ignore_merges)?),
            ModelKind::Llama => None,
        };
        let mut byte_tokens = Vec::new();
        let mut space_joiners = Vec::new();
        if kind == ModelKind::Llama {
            for t in &tokens {
                let mut prev: Option<char> = None;
                for c in t.chars() {
                    if c == '▁' {
                        if let Some(p) = prev {
                            if !space_joiners.contains(&p) {
                                space_joiners.push(p);
                            }
                        }
                    }
                    prev = Some(c);
                }
            }
            byte_tokens = (0..=255u8)
                .map(|b| {
                    let hex = format!("<0x{b:02X}>");
                    lookup(&hex)
                        .or_else(|| if b < 0x80 { lookup(std::str::from_utf8(&[b]).ok()?) } else { None })
                        .or(unk)
                })
                .collect();
        }

        let mut tok = Tokenizer {
            kind,
            tokens,
            scores,
            types,
            token_to_id,
            bos,
            eos,
            eot,
            eom,
            unk,
            pad,
            eog,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces: kind == ModelKind::Gpt2 && info.clean_spaces,
            pre,
            stages: info.stages,
            specials,
            bpe,
            byte_tokens,
            space_joiners,
            pieces: Vec::new(),
            piece_offs: Vec::new(),
        };
        tok.build_pieces();
        Ok(tok)
    }

    /// Read `tokenizer.ggml.*` from a GGUF file (see [`TokenizerConfig::from_gguf`]) and build.
    pub fn from_gguf(file: &crate::gguf::GgufFile) -> Result<Tokenizer> {
        Tokenizer::new(TokenizerConfig::from_gguf(file)?)
    }

    /// Tokenize `text`. `add_special`: add BOS / EOS as the model says (`add_bos` / `add_eos`).
    /// `parse_special`: recognise control tokens (`<|endoftext|>`, `<s>`, ...) written in the text;
    /// user-defined tokens are always recognised.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        let frags = if text.is_empty() {
            Vec::new()
        } else if self.specials.is_empty() {
            vec![Frag::Text(0, text.len())]
        } else {
            self.specials.partition(text, parse_special, &|id| self.tokens[id as usize].as_str())
        };
        if add_special && self.add_bos {
            out.extend(self.bos);
        }
        match self.kind {
            ModelKind::Gpt2 => self.tokenize_bpe(text, &frags, &mut out),
            ModelKind::Llama => self.tokenize_spm(text, &frags, &mut out),
        }
        if add_special && self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    fn tokenize_bpe(&self, text: &str, frags: &[Frag], out: &mut Vec<u32>) {
        let bpe = self.bpe.as_ref().expect("gpt2 tokenizer has merges");
        let lookup = |s: &str| self.token_to_id.get(s).copied();
        let mut dec = pretok::Decoded::new();
        let (mut words, mut tmp) = (Vec::new(), Vec::new());
        let mut scratch = bpe::Scratch::default();
        // Words repeat a lot in real text: remember each short word's tokens for this call.
        let mut cache: FastMap<&[u8], (u32, u32)> = FastMap::default();
        let mut arena: Vec<u32> = Vec::new();
        for f in frags {
            let (s, e) = match *f {
                Frag::Token(id) => {
                    out.push(id);
                    continue;
                }
                Frag::Text(s, e) => (s, e),
            };
            let frag = &text[s..e];
            dec.fill(frag);
            pretok::split(self.stages, &dec, &mut words, &mut tmp);
            for &(ws, we) in &words {
                let w = &frag.as_bytes()[dec.offs[ws as usize] as usize..dec.offs[we as usize] as usize];
                if w.len() > 32 {
                    bpe.word(w, &lookup, out, &mut scratch);
                    continue;
                }
                if let Some(&(a, l)) = cache.get(w) {
                    out.extend_from_slice(&arena[a as usize..(a + l) as usize]);
                    continue;
                }
                let before = out.len();
                bpe.word(w, &lookup, out, &mut scratch);
                let a = arena.len() as u32;
                arena.extend_from_slice(&out[before..]);
                cache.insert(w, (a, (out.len() - before) as u32));
            }
        }
    }

    fn tokenize_spm(&self, text: &str, frags: &[Frag], out: &mut Vec<u32>) {
        let lookup = |s: &str| self.token_to_id.get(s).copied();
        let score = |id: u32| self.scores[id as usize];
        let byte_token = |b: u8| self.byte_tokens[b as usize];
        let mut scratch = spm::SpmScratch::default();
        let mut is_prev_special = true;
        let mut buf = String::new();
        for f in frags {
            match *f {
                Frag::Token(id) => {
                    out.push(id);
                    is_prev_special = true;
                }
                Frag::Text(s, e) => {
                    buf.clear();
                    if self.add_space_prefix && is_prev_special {
                        buf.push('▁');
                    }
                    for c in text[s..e].chars() {
                        if c == ' ' {
                            buf.push('▁');
                        } else {
                            buf.push(c);
                        }
                    }
                    self.spm_pieces(&buf, &lookup, &score, &byte_token, out, &mut scratch);
                    is_prev_special = false;
                }
            }
        }
    }

    /// SPM over `text` split before each `▁` that no token joins to the character before it,
    /// remembering repeated pieces.
    fn spm_pieces(
        &self,
        text: &str,
        lookup: &dyn Fn(&str) -> Option<u32>,
        score: &dyn Fn(u32) -> f32,
        byte_token: &dyn Fn(u8) -> Option<u32>,
        out: &mut Vec<u32>,
        scratch: &mut spm::SpmScratch,
    ) {
        let mut segs: Vec<&str> = Vec::new();
        let mut start = 0;
        let mut prev: Option<char> = None;
        for (i, c) in text.char_indices() {
            if c == '▁' && i > start {
                if let Some(p) = prev {
                    if !self.space_joiners.contains(&p) {
                        segs.push(&text[start..i]);
                        start = i;
                    }
                }
            }
            prev = Some(c);
        }
        if start < text.len() {
            segs.push(&text[start..]);
        }
        let mut cache: FastMap<&str, (u32, u32)> = FastMap::default();
        let mut arena: Vec<u32> = Vec::new();
        for seg in segs {
            if seg.len() > 64 {
                spm::tokenize(seg, lookup, score, byte_token, out, scratch);
                continue;
            }
            if let Some(&(a, l)) = cache.get(seg) {
                out.extend_from_slice(&arena[a as usize..(a + l) as usize]);
                continue;
            }
            let before = out.len();
            spm::tokenize(seg, lookup, score, byte_token, out, scratch);
            let a = arena.len() as u32;
            arena.extend_from_slice(&out[before..]);
            cache.insert(seg, (a, (out.len() - before) as u32));
        }
    }

    /// The token with this exact text, if any.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }
    pub fn model(&self) -> ModelKind {
        self.kind
    }
    /// `tokenizer.ggml.pre`, as given.
    pub fn pre(&self) -> Option<&str> {
        self.pre.as_deref()
    }
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }
    /// End of turn: from the file, else found by text (`<|endoftext|>`, `<|im_end|>`, ...).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }
    pub fn eom(&self) -> Option<u32> {
        self.eom
    }
    pub fn unk(&self) -> Option<u32> {
        self.unk
    }
    pub fn pad(&self) -> Option<u32> {
        self.pad
    }
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    pub fn add_space_prefix(&self) -> bool {
        self.add_space_prefix
    }
    /// Whether detokenizing removes spaces before `?!.,` and some apostrophes (llama.cpp's
    /// `clean_spaces`: on for byte-level BPE models except a few pre-tokenizers).
    pub fn clean_spaces(&self) -> bool {
        self.clean_spaces
    }
    /// Tokens that end generation: EOS, EOT, EOM and llama.cpp's list of such texts.
    pub fn eog_tokens(&self) -> &[u32] {
        &self.eog
    }
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }
    /// Control token (false for ids outside the vocabulary).
    pub fn is_control(&self, id: u32) -> bool {
        self.types.get(id as usize) == Some(&TokenType::Control)
    }

    fn check(&self, id: u32) -> Result<usize> {
        if (id as usize) < self.tokens.len() {
            Ok(id as usize)
        } else {
            Err(CoilError::new(
                ErrorCode::TokenOutOfRange,
                format!("token id {id} is outside the vocabulary of {} tokens", self.tokens.len()),
            ))
        }
    }

    /// The type of a token (after llama.cpp's overrides: detected end-of-turn tokens are control).
    pub fn token_type(&self, id: u32) -> Result<TokenType> {
        Ok(self.types[self.check(id)?])
    }
    /// The token's text as stored in the vocabulary (`Ġ`/`▁` encoded for normal tokens).
    pub fn piece(&self, id: u32) -> Result<&str> {
        Ok(&self.tokens[self.check(id)?])
    }
    pub fn score(&self, id: u32) -> Result<f32> {
        Ok(self.scores[self.check(id)?])
    }
}

#[cfg(test)]
mod tests;
