//! Pre-tokenizers of the byte-level BPE model: split text into words before BPE, exactly as
//! llama.cpp's `unicode_regex_split` does for the supported `tokenizer.ggml.pre` values.
//!
//! llama.cpp applies a list of regexes in turn, each one splitting every piece the previous one
//! produced (unmatched stretches between matches become pieces too). Two of its regexes have
//! hand-written matchers there (the GPT-2 and the LLaMA-3 ones); the others run through
//! `std::regex` on a "collapsed" text where every non-ASCII code point is replaced by a byte naming
//! its category (and non-ASCII whitespace by `\v`). The regexes used by the supported
//! pre-tokenizers other than the two custom ones are plain character classes, so they are written
//! here as class tests with the same collapsed semantics:
//!
//! * ASCII code points are matched as themselves;
//! * a non-ASCII code point matches `\p{X}` when its category is X and it is not whitespace.

use super::config::invalid;
use super::unicode::{self, Flags, LETTER, NUMBER, OUTSIDE, PUNCTUATION, WHITESPACE};
use crate::error::Result;

/// A stage of the splitting pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` (llama.cpp's
    /// custom matcher, which also takes a lone or trailing whitespace run as `\s+`).
    Gpt2,
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    Llama3,
    /// `[class]+`
    Runs(Class),
    /// `[class]` (each matching code point alone)
    Each(Class),
    /// `[0-9][0-9][0-9]`
    DigitTriples,
}

/// A character class under the collapsed-text semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Class {
    /// ASCII members, bit i for code point i.
    ascii: u128,
    /// Non-ASCII members, bit k for class flag k (only N, L, P, M, S can be members).
    classes: u16,
}

impl Class {
    const fn ascii_set(chars: &[u8]) -> u128 {
        let mut m = 0u128;
        let mut i = 0;
        while i < chars.len() {
            m |= 1u128 << chars[i];
            i += 1;
        }
        m
    }

    /// The ASCII code points llama.cpp's collapsed `\p{P}` stands for: ``!-#%-*,-/:-;?-@[-]_{}``.
    const P_ASCII: &'static [u8] = b"!\"#%&'()*,-./:;?@[\\]_{}";

    /// `[\p{P}\$\+<=>\^~\|]` (llama.cpp's default pre-tokenizer, first regex).
    pub(crate) const DEFAULT_PUNCT: Class =
        Class { ascii: Class::ascii_set(Class::P_ASCII) | Class::ascii_set(b"$+<=>^~|"), classes: 1 << PUNCTUATION };
    /// `[\p{P}\$\+<=>\^~\|`]` (falcon).
    pub(crate) const FALCON_PUNCT: Class =
        Class { ascii: Class::ascii_set(Class::P_ASCII) | Class::ascii_set(b"$+<=>^~|`"), classes: 1 << PUNCTUATION };
    /// `\p{N}`
    pub(crate) const NUMBER: Class = Class { ascii: Class::ascii_set(b"0123456789"), classes: 1 << NUMBER };

    #[inline]
    fn contains(&self, cp: u32, f: Flags) -> bool {
        if cp < 128 {
            (self.ascii >> cp) & 1 == 1
        } else {
            f & WHITESPACE == 0 && (self.classes >> unicode::class(f)) & 1 == 1
        }
    }
}

/// What a `tokenizer.ggml.pre` value means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreInfo {
    pub stages: &'static [Stage],
    /// Look the whole word up before merging (llama.cpp's `ignore_merges`).
    pub ignore_merges: bool,
    /// Detokenizer clean-up of spaces before punctuation (llama.cpp's `clean_spaces`).
    pub clean_spaces: bool,
    /// The default for `add_bos` when the file does not say.
    pub add_bos: bool,
    /// llama.cpp drops the BOS default for this pre-tokenizer.
    pub no_bos: bool,
}

const DEFAULT: &[Stage] =
    &[Stage::Runs(Class::DEFAULT_PUNCT), Stage::Gpt2, Stage::Runs(Class::NUMBER), Stage::DigitTriples];
const GPT2: &[Stage] = &[Stage::Gpt2];
const LLAMA3: &[Stage] = &[Stage::Llama3];
const FALCON: &[Stage] = &[Stage::Runs(Class::FALCON_PUNCT), Stage::Gpt2, Stage::DigitTriples];
const STARCODER: &[Stage] = &[Stage::Each(Class::NUMBER), Stage::Gpt2];

/// The names llama.cpp accepts that this implementation supports. Others are an error (llama.cpp
/// itself refuses names it does not know).
pub(crate) fn pre_info(name: Option<&str>) -> Result<PreInfo> {
    let mut info = PreInfo { stages: DEFAULT, ignore_merges: false, clean_spaces: true, add_bos: false, no_bos: false };
    let name = match name {
        None => return Ok(info),
        Some(n) => n,
    };
    match name {
        "default" => {}
        // falcon-h1 (Falcon-H1), pixtral (Nemotron-3-Nano), lfm2 (LFM2/LFM2.5): llama.cpp maps them
        // to its llama3 pre-tokenizer.
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "lfm2" => {
            info.stages = LLAMA3;
            info.ignore_merges = true;
            info.add_bos = true;
        }
        "dbrx" | "smaug-bpe" => info.stages = LLAMA3,
        "chatglm-bpe" => {
            info.stages = LLAMA3;
            info.no_bos = true;
        }
        "falcon" => info.stages = FALCON,
        "mpt" | "olmo" | "jais" | "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v1-en"
        | "jina-v2-es" | "jina-v2-de" | "jina-v2-code" | "roberta-bpe" => info.stages = GPT2,
        "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" => info.stages = STARCODER,
        // Granite-Docling: the plain GPT-2 regex, without the detokenizer's space clean-up.
        "granite-docling" => {
            info.stages = GPT2;
            info.clean_spaces = false;
        }
        "command-r" | "smollm" => {
            info.stages = STARCODER;
            info.clean_spaces = false;
        }
        other => return Err(invalid(format!("pre-tokenizer '{other}' is not supported"))),
    }
    Ok(info)
}

/// A fragment of text decoded to code points, with the byte offset of each (plus the end).
pub(crate) struct Decoded {
    pub cps: Vec<u32>,
    pub flags: Vec<Flags>,
    pub offs: Vec<u32>,
}

impl Decoded {
    pub fn new() -> Decoded {
        Decoded { cps: Vec::new(), flags: Vec::new(), offs: Vec::new() }
    }

    pub fn fill(&mut self, text: &str) {
        self.cps.clear();
        self.flags.clear();
        self.offs.clear();
        for (i, c) in text.char_indices() {
            let cp = c as u32;
            self.cps.push(cp);
            self.flags.push(unicode::flags(cp));
            self.offs.push(i as u32);
        }
        self.offs.push(text.len() as u32);
    }
}

/// Split `d` (one fragment) into words; each word is a code point range `(start, end)`.
pub(crate) fn split(stages: &[Stage], d: &Decoded, out: &mut Vec<(u32, u32)>, tmp: &mut Vec<(u32, u32)>) {
    out.clear();
    let n = d.cps.len() as u32;
    if n == 0 {
        return;
    }
    out.push((0, n));
    for stage in stages {
        std::mem::swap(out, tmp);
        out.clear();
        for &(s, e) in tmp.iter() {
            let (s, e) = (s as usize, e as usize);
            match *stage {
                Stage::Gpt2 => split_gpt2(d, s, e, out),
                Stage::Llama3 => split_llama3(d, s, e, out),
                Stage::Runs(c) => split_class(d, s, e, out, c, true),
                Stage::Each(c) => split_class(d, s, e, out, c, false),
                Stage::DigitTriples => split_triples(d, s, e, out),
            }
        }
    }
}

/// `re`, `ve` or `ll` (the three-character contractions after the apostrophe).
#[inline]
fn is_re_ve_ll(c1: u32, c2: u32) -> bool {
    const R: u32 = 'r' as u32;
    const V: u32 = 'v' as u32;
    const L: u32 = 'l' as u32;
    const E: u32 = 'e' as u32;
    matches!((c1, c2), (R, E) | (V, E) | (L, L))
}

/// Pieces: matches and the stretches between them.
struct Emit<'a> {
    out: &'a mut Vec<(u32, u32)>,
    prev: usize,
}

impl Emit<'_> {
    #[inline]
    fn to(&mut self, end: usize) {
        if end > self.prev {
            self.out.push((self.prev as u32, end as u32));
        }
        self.prev = end;
    }
}

fn split_gpt2(d: &Decoded, s: usize, e: usize, out: &mut Vec<(u32, u32)>) {
    let cps = &d.cps[..e];
    let fl = &d.flags[..e];
    let f = |p: usize| -> Flags {
        if p < e {
            fl[p]
        } else {
            OUTSIDE
        }
    };
    let is_l = |x: Flags| unicode::class(x) == LETTER;
    let is_n = |x: Flags| unicode::class(x) == NUMBER;
    let is_ws = |x: Flags| x & WHITESPACE != 0;
    let mut em = Emit { out, prev: s };
    let mut pos = s;
    while pos < e {
        let c = cps[pos];
        // 's|'t|'re|'ve|'m|'ll|'d
        if c == '\'' as u32 && pos + 1 < e {
            let c1 = cps[pos + 1];
            if c1 == 's' as u32 || c1 == 't' as u32 || c1 == 'm' as u32 || c1 == 'd' as u32 {
                pos += 2;
                em.to(pos);
                continue;
            }
            if pos + 2 < e {
                let c2 = cps[pos + 2];
                if is_re_ve_ll(c1, c2) {
                    pos += 3;
                    em.to(pos);
                    continue;
                }
            }
        }
        let space = c == ' ' as u32;
        let mut f2 = if space { f(pos + 1) } else { fl[pos] };
        // ' ?\p{L}+'
        if is_l(f2) {
            pos += space as usize;
            while is_l(f2) {
                pos += 1;
                f2 = f(pos);
            }
            em.to(pos);
            continue;
        }
        // ' ?\p{N}+'
        if is_n(f2) {
            pos += space as usize;
            while is_n(f2) {
                pos += 1;
                f2 = f(pos);
            }
            em.to(pos);
            continue;
        }
        // ' ?[^\s\p{L}\p{N}]+'
        if !(is_ws(f2) || is_l(f2) || is_n(f2)) && f2 != OUTSIDE {
            pos += space as usize;
            while !(is_ws(f2) || is_l(f2) || is_n(f2)) && f2 != OUTSIDE {
                pos += 1;
                f2 = f(pos);
            }
            em.to(pos);
            continue;
        }
        let mut nws = 0;
        while is_ws(f(pos + nws)) {
            nws += 1;
        }
        // '\s+(?!\S)'
        if nws > 1 && pos + nws < e {
            pos += nws - 1;
            em.to(pos);
            continue;
        }
        // '\s+'
        if nws > 0 {
            pos += nws;
            em.to(pos);
            continue;
        }
        pos += 1;
        em.to(pos);
    }
}

fn split_llama3(d: &Decoded, s: usize, e: usize, out: &mut Vec<(u32, u32)>) {
    let cps = &d.cps[..e];
    let fl = &d.flags[..e];
    let f = |p: usize| -> Flags {
        if p < e {
            fl[p]
        } else {
            OUTSIDE
        }
    };
    let cp = |p: usize| -> u32 {
        if p < e {
            cps[p]
        } else {
            u32::MAX
        }
    };
    let is_l = |x: Flags| unicode::class(x) == LETTER;
    let is_n = |x: Flags| unicode::class(x) == NUMBER;
    let is_ws = |x: Flags| x & WHITESPACE != 0;
    let lower = |c: u32| if (b'A' as u32..=b'Z' as u32).contains(&c) { c + 32 } else { c };
    let is_rn = |c: u32| c == '\r' as u32 || c == '\n' as u32;
    let mut em = Emit { out, prev: s };
    let mut pos = s;
    while pos < e {
        let c = cps[pos];
        let f0 = fl[pos];
        // (?i:'s|'t|'re|'ve|'m|'ll|'d)
        if c == '\'' as u32 && pos + 1 < e {
            let c1 = lower(cps[pos + 1]);
            if c1 == 's' as u32 || c1 == 't' as u32 || c1 == 'm' as u32 || c1 == 'd' as u32 {
                pos += 2;
                em.to(pos);
                continue;
            }
            if pos + 2 < e {
                let c2 = lower(cps[pos + 2]);
                if is_re_ve_ll(c1, c2) {
                    pos += 3;
                    em.to(pos);
                    continue;
                }
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !(is_rn(c) || is_n(f0)) && (is_l(f0) || is_l(f(pos + 1))) {
            pos += 1;
            while is_l(f(pos)) {
                pos += 1;
            }
            em.to(pos);
            continue;
        }
        // \p{N}{1,3}
        if is_n(f0) {
            let mut ini = pos;
            while is_n(f(pos)) {
                pos += 1;
                if pos - ini >= 3 {
                    em.to(pos);
                    ini = pos;
                }
            }
            em.to(pos);
            continue;
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        let mut f2 = if c == ' ' as u32 { f(pos + 1) } else { f0 };
        if !(is_ws(f2) || is_l(f2) || is_n(f2)) && f0 != OUTSIDE {
            pos += (c == ' ' as u32) as usize;
            while !(is_ws(f2) || is_l(f2) || is_n(f2)) && f2 != OUTSIDE {
                pos += 1;
                f2 = f(pos);
            }
            while is_rn(cp(pos)) {
                pos += 1;
            }
            em.to(pos);
            continue;
        }
        let mut nws = 0;
        let mut last_rn = 0;
        while is_ws(f(pos + nws)) {
            if is_rn(cp(pos + nws)) {
                last_rn = pos + nws + 1;
            }
            nws += 1;
        }
        // \s*[\r\n]+
        if last_rn > 0 {
            pos = last_rn;
            em.to(pos);
            continue;
        }
        // \s+(?!\S)
        if nws > 1 && pos + nws < e {
            pos += nws - 1;
            em.to(pos);
            continue;
        }
        // \s+
        if nws > 0 {
            pos += nws;
            em.to(pos);
            continue;
        }
        pos += 1;
        em.to(pos);
    }
}

fn split_class(d: &Decoded, s: usize, e: usize, out: &mut Vec<(u32, u32)>, class: Class, runs: bool) {
    let mut em = Emit { out, prev: s };
    let mut pos = s;
    while pos < e {
        if class.contains(d.cps[pos], d.flags[pos]) {
            em.to(pos);
            pos += 1;
            if runs {
                while pos < e && class.contains(d.cps[pos], d.flags[pos]) {
                    pos += 1;
                }
            }
            em.to(pos);
        } else {
            pos += 1;
        }
    }
    em.to(e);
}

fn split_triples(d: &Decoded, s: usize, e: usize, out: &mut Vec<(u32, u32)>) {
    let dig = |p: usize| p < e && (b'0' as u32..=b'9' as u32).contains(&d.cps[p]);
    let mut em = Emit { out, prev: s };
    let mut pos = s;
    while pos < e {
        if dig(pos) && dig(pos + 1) && dig(pos + 2) {
            em.to(pos);
            pos += 3;
            em.to(pos);
        } else {
            pos += 1;
        }
    }
    em.to(e);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(stages: &[Stage], text: &str) -> Vec<String> {
        let mut d = Decoded::new();
        d.fill(text);
        let (mut out, mut tmp) = (Vec::new(), Vec::new());
        split(stages, &d, &mut out, &mut tmp);
        out.iter().map(|&(s, e)| text[d.offs[s as usize] as usize..d.offs[e as usize] as usize].to_string()).collect()
    }

    #[test]
    fn gpt2_split() {
        assert_eq!(words(GPT2, "Hello world"), ["Hello", " world"]);
        assert_eq!(words(GPT2, "  Hello"), [" ", " Hello"]);
        assert_eq!(words(GPT2, "I've 'told he's"), ["I", "'ve", " '", "told", " he", "'s"]);
        assert_eq!(words(GPT2, "a  \n\n b"), ["a", "  \n\n", " b"]);
        assert_eq!(words(GPT2, "x   "), ["x", "   "]);
        assert_eq!(words(GPT2, "3.3 333"), ["3", ".", "3", " 333"]);
        assert_eq!(words(GPT2, "\t\n"), ["\t\n"]);
        assert_eq!(words(GPT2, "!!!?? ok"), ["!!!??", " ok"]);
        assert_eq!(words(GPT2, ""), Vec::<String>::new());
    }

    #[test]
    fn default_split() {
        assert_eq!(words(DEFAULT, "Hello, world!"), ["Hello", ",", " world", "!"]);
        assert_eq!(words(DEFAULT, "x 1234567"), ["x", " ", "123", "456", "7"]);
        assert_eq!(words(DEFAULT, "a`b"), ["a", "`", "b"]);
    }

    #[test]
    fn llama3_split() {
        assert_eq!(
            words(LLAMA3, "Hello 1234567 I'M ok\n\n x"),
            ["Hello", " ", "123", "456", "7", " I", "'M", " ok", "\n\n", " x"]
        );
    }

    #[test]
    fn starcoder_split() {
        assert_eq!(words(STARCODER, "a 123"), ["a", " ", "1", "2", "3"]);
    }

    #[test]
    fn names() {
        assert_eq!(pre_info(Some("mpt")).unwrap().stages, GPT2);
        assert_eq!(pre_info(None).unwrap().stages, DEFAULT);
        assert!(pre_info(Some("llama3")).unwrap().ignore_merges);
        assert_eq!(pre_info(Some("no-such")).unwrap_err().code, crate::ErrorCode::TokenizerInvalid);
    }
}
