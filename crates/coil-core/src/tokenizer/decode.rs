//! Ids back to text: llama.cpp's `token_to_piece` and `detokenize`, and a streaming decoder.

use super::unicode::char_to_byte;
use super::{ModelKind, TokenType, Tokenizer};
use crate::error::Result;

/// Options of [`Tokenizer::detokenize`] (llama.cpp's `llama_detokenize` arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DetokenizeOptions {
    /// Drop a leading BOS / trailing EOS when the model adds them. Default `false`.
    pub remove_special: bool,
    /// Render control and unknown tokens as their text (`<|endoftext|>`); when `false` they
    /// render as nothing. Default `false`.
    pub unparse_special: bool,
    /// Override the model's space clean-up (`None`, the default: as the model says, see
    /// [`Tokenizer::clean_spaces`]). `Some(false)` gives the plain concatenation of the pieces.
    pub clean_spaces: Option<bool>,
}

impl Tokenizer {
    pub(super) fn build_pieces(&mut self) {
        let mut pieces = Vec::with_capacity(self.tokens.len() * 6);
        let mut offs = Vec::with_capacity(self.tokens.len() + 1);
        offs.push(0u32);
        for id in 0..self.tokens.len() {
            self.render(id, &mut pieces);
            offs.push(pieces.len() as u32);
        }
        self.pieces = pieces;
        self.piece_offs = offs;
    }

    /// llama.cpp's piece of a token with `special = true`.
    fn render(&self, id: usize, out: &mut Vec<u8>) {
        let text = &self.tokens[id];
        match self.types[id] {
            TokenType::Control | TokenType::Unknown | TokenType::UserDefined => out.extend_from_slice(text.as_bytes()),
            TokenType::Normal => match self.kind {
                ModelKind::Gpt2 => {
                    for c in text.chars() {
                        match char_to_byte(c) {
                            Some(b) => out.push(b),
                            None => {
                                // llama.cpp's marker for a character outside the byte alphabet.
                                out.extend_from_slice(b"[UNK_BYTE_0x");
                                let mut buf = [0u8; 4];
                                for b in c.encode_utf8(&mut buf).bytes() {
                                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                                }
                                out.extend_from_slice(text.as_bytes());
                                out.push(b']');
                            }
                        }
                    }
                }
                ModelKind::Llama => {
                    let mut rest = text.as_str();
                    while let Some(i) = rest.find('▁') {
                        out.extend_from_slice(&rest.as_bytes()[..i]);
                        out.push(b' ');
                        rest = &rest[i + '▁'.len_utf8()..];
                    }
                    out.extend_from_slice(rest.as_bytes());
                }
            },
            TokenType::Byte => {
                if self.kind == ModelKind::Llama {
                    out.push(hex_byte(text));
                }
            }
            TokenType::Unused | TokenType::Undefined => {}
        }
    }

    /// The bytes a token stands for. `special`: whether control and unknown tokens render as their
    /// text (otherwise as nothing). Byte-level BPE pieces map back to raw bytes, SentencePiece `▁`
    /// to a space and `<0xXX>` to the byte. A piece need not be valid UTF-8 on its own.
    pub fn token_to_piece(&self, id: u32, special: bool) -> Result<Vec<u8>> {
        Ok(self.piece_bytes(id, special)?.to_vec())
    }

    pub(crate) fn piece_bytes(&self, id: u32, special: bool) -> Result<&[u8]> {
        let i = self.check(id)?;
        if !special && matches!(self.types[i], TokenType::Control | TokenType::Unknown) {
            return Ok(&[]);
        }
        Ok(&self.pieces[self.piece_offs[i] as usize..self.piece_offs[i + 1] as usize])
    }

    /// Ids to bytes, exactly as llama.cpp's `llama_detokenize` (before UTF-8 decoding).
    pub fn detokenize_bytes(&self, ids: &[u32], opts: DetokenizeOptions) -> Result<Vec<u8>> {
        let mut ids = ids;
        // The space prefix of the first piece is removed for models that add one.
        let mut remove_space = self.add_space_prefix;
        if opts.remove_special && self.add_bos {
            if let (Some(&first), Some(bos)) = (ids.first(), self.bos) {
                if first == bos {
                    remove_space = false;
                    ids = &ids[1..];
                }
            }
        }
        if opts.remove_special && self.add_eos {
            if let (Some(&last), Some(eos)) = (ids.last(), self.eos) {
                if last == eos {
                    ids = &ids[..ids.len() - 1];
                }
            }
        }
        let mut text = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let mut p = self.piece_bytes(id, opts.unparse_special)?;
            if remove_space && p.first() == Some(&b' ') {
                p = &p[1..];
            }
            remove_space = false;
            text.extend_from_slice(p);
        }
        if opts.clean_spaces.unwrap_or(self.clean_spaces) {
            clean_spaces(&mut text);
        }
        Ok(text)
    }

    /// Ids to text: [`Tokenizer::detokenize_bytes`], with invalid UTF-8 replaced by U+FFFD.
    /// With `DetokenizeOptions::default()` this is llama.cpp's
    /// `llama_detokenize(remove_special = false, unparse_special = false)`.
    pub fn detokenize(&self, ids: &[u32], opts: DetokenizeOptions) -> Result<String> {
        let bytes = self.detokenize_bytes(ids, opts)?;
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }
}

/// `strtol(text.substr(3, 2), 16)` for `<0xXX>`.
fn hex_byte(text: &str) -> u8 {
    let b = text.as_bytes();
    let mut v: u32 = 0;
    for &c in b.iter().skip(3).take(2) {
        match (c as char).to_digit(16) {
            Some(d) => v = v * 16 + d,
            None => break,
        }
    }
    v as u8
}

/// llama.cpp's `clean_spaces` passes: drop the space before `?!.,`, the spaces around a lone
/// apostrophe, and the space before `'s`, `'m`, `'re`, `'ve`.
fn clean_spaces(text: &mut Vec<u8>) {
    // first pass: " ?", " !", " .", " ,"
    let n = text.len();
    let mut total = if n > 0 { 1 } else { 0 };
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
    // second pass: " ' " -> "'"
    let n = text.len();
    let mut total = if n > 0 { 1 } else { 0 };
    let mut i = 1;
    while i < n {
        let x = text[i];
        if x == b'\'' && i + 1 < n && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    text.truncate(total);
    // third pass: " 's", " 'm", " 're", " 've"
    let n = text.len();
    let mut total = if n > 0 { 1 } else { 0 };
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = text[i + 1];
            if x1 == b's' || x1 == b'm' {
                total -= 1;
            } else if i + 2 < n {
                let x2 = text[i + 2];
                if matches!((x1, x2), (b'r', b'e') | (b'v', b'e')) {
                    total -= 1;
                }
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

/// Turns ids into text one at a time for streaming output, emitting only whole UTF-8 characters:
/// the bytes of a character split across tokens are held back until it is complete. Bytes that
/// can never form a character are emitted as U+FFFD, as `String::from_utf8_lossy` would.
/// Each token renders as [`Tokenizer::token_to_piece`] (no space clean-up, no prefix removal).
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    unparse_special: bool,
}

impl StreamDecoder {
    /// `unparse_special`: render control tokens as their text.
    pub fn new(unparse_special: bool) -> StreamDecoder {
        StreamDecoder { pending: Vec::new(), unparse_special }
    }

    /// Add one token; returns the text that is now complete (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        let piece = tok.piece_bytes(id, self.unparse_special)?;
        Ok(self.push_bytes(piece))
    }

    /// Add raw bytes; returns the text that is now complete.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: the prefix was just checked.
                    out.push_str(std::str::from_utf8(&self.pending[start..start + valid]).unwrap_or(""));
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            start += valid + bad;
                        }
                        None => {
                            // An incomplete character at the end: keep it for later.
                            start += valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Bytes held back waiting for the rest of a character.
    pub fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// End of stream: whatever is held back, with an incomplete character as U+FFFD.
    pub fn flush(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean() {
        let f = |s: &str| {
            let mut v = s.as_bytes().to_vec();
            clean_spaces(&mut v);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(f("Hello , world !"), "Hello, world!");
        assert_eq!(f("a ' b"), "a'b");
        assert_eq!(f("he 's I 'm we 're you 've it 'll I 'd don 't"), "he's I'm we're you've it 'll I 'd don 't");
        assert_eq!(f(""), "");
        assert_eq!(f(" ."), ".");
    }

    #[test]
    fn stream_bytes() {
        let mut d = StreamDecoder::new(false);
        let s = "a€😀b".as_bytes();
        let mut out = String::new();
        for b in s {
            let part = d.push_bytes(&[*b]);
            assert!(!part.contains('\u{FFFD}'));
            out.push_str(&part);
        }
        out.push_str(&d.flush());
        assert_eq!(out, "a€😀b");
        assert_eq!(d.push_bytes(&[0xff, b'x']), "\u{FFFD}x");
        assert_eq!(d.push_bytes(&[0xe2, 0x82]), "");
        assert_eq!(d.pending(), &[0xe2, 0x82]);
        assert_eq!(d.push_bytes(b"y"), "\u{FFFD}y");
        assert_eq!(d.push_bytes(&[0xf0, 0x9f]), "");
        assert_eq!(d.flush(), "\u{FFFD}");
    }
}
