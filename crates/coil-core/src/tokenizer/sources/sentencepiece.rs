//! SentencePiece `tokenizer.model` files (a `ModelProto` protobuf) to a [`TokenizerConfig`].
//!
//! Only the fields a llama-style vocabulary needs are read; everything else is skipped by wire
//! type. The mapping follows llama.cpp's converter for SentencePiece vocabularies: tokens, scores
//! and types from the pieces, BOS / EOS / UNK / PAD ids from the trainer spec, `add_space_prefix`
//! from the normalizer's `add_dummy_prefix`.

use crate::error::Result;
use crate::tokenizer::config::{invalid, ModelKind, TokenType, TokenizerConfig};

/// What `tokenizer.model` says, in plain form.
#[derive(Debug, Clone, PartialEq)]
pub struct SentencePieceModel {
    pub pieces: Vec<SpPiece>,
    /// TrainerSpec.model_type: 1 unigram, 2 BPE, 3 word, 4 char.
    pub model_type: i32,
    pub vocab_size: i32,
    pub byte_fallback: bool,
    pub unk_id: i32,
    pub bos_id: i32,
    pub eos_id: i32,
    pub pad_id: i32,
    /// NormalizerSpec.name (`identity`, `nmt_nfkc`, ...).
    pub normalizer_name: String,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
    /// Size of NormalizerSpec.precompiled_charsmap (0 = no normalization table).
    pub precompiled_charsmap_len: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpPiece {
    pub piece: String,
    pub score: f32,
    /// 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub kind: i32,
}

/// A protobuf wire-format reader over a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn trunc(at: usize) -> crate::CoilError {
    let mut e = invalid("the SentencePiece model is truncated or malformed");
    e.offset = Some(at as u64);
    e
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or_else(|| trunc(self.pos))?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(trunc(self.pos))
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| trunc(self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn len_delimited(&mut self) -> Result<&'a [u8]> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| trunc(self.pos))?;
        self.bytes(n)
    }
    fn fixed32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// Next (field number, wire type).
    fn key(&mut self) -> Result<(u64, u8)> {
        let k = self.varint()?;
        Ok((k >> 3, (k & 7) as u8))
    }
    fn skip(&mut self, wire: u8) -> Result<()> {
        match wire {
            0 => {
                self.varint()?;
            }
            1 => {
                self.bytes(8)?;
            }
            2 => {
                self.len_delimited()?;
            }
            5 => {
                self.bytes(4)?;
            }
            _ => return Err(trunc(self.pos)),
        }
        Ok(())
    }
    /// A varint field value as i32 (protobuf int32: negative values are 10-byte varints).
    fn int32(&mut self) -> Result<i32> {
        Ok(self.varint()? as i64 as i32)
    }
}

fn utf8(b: &[u8], at: usize) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| {
        let mut e = invalid("a SentencePiece string is not valid UTF-8");
        e.offset = Some(at as u64);
        e
    })
}

impl SentencePieceModel {
    pub fn parse(bytes: &[u8]) -> Result<SentencePieceModel> {
        let mut m = SentencePieceModel {
            pieces: Vec::new(),
            model_type: 1,
            vocab_size: 8000,
            byte_fallback: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
            normalizer_name: String::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
            precompiled_charsmap_len: 0,
        };
        let mut r = Reader::new(bytes);
        while !r.done() {
            let (field, wire) = r.key()?;
            match (field, wire) {
                (1, 2) => {
                    let base = r.pos;
                    let msg = r.len_delimited()?;
                    m.pieces.push(parse_piece(msg, base)?);
                }
                (2, 2) => {
                    let msg = r.len_delimited()?;
                    parse_trainer(msg, &mut m)?;
                }
                (3, 2) => {
                    let base = r.pos;
                    let msg = r.len_delimited()?;
                    parse_normalizer(msg, base, &mut m)?;
                }
                (_, w) => r.skip(w)?,
            }
        }
        if m.pieces.is_empty() {
            return Err(invalid("the SentencePiece model has no pieces"));
        }
        Ok(m)
    }
}

fn parse_piece(msg: &[u8], base: usize) -> Result<SpPiece> {
    let mut p = SpPiece { piece: String::new(), score: 0.0, kind: 1 };
    let mut r = Reader::new(msg);
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, 2) => {
                let at = base + r.pos;
                p.piece = utf8(r.len_delimited()?, at)?;
            }
            (2, 5) => p.score = f32::from_bits(r.fixed32()?),
            (3, 0) => p.kind = r.int32()?,
            (_, w) => r.skip(w)?,
        }
    }
    Ok(p)
}

fn parse_trainer(msg: &[u8], m: &mut SentencePieceModel) -> Result<()> {
    let mut r = Reader::new(msg);
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (3, 0) => m.model_type = r.int32()?,
            (4, 0) => m.vocab_size = r.int32()?,
            (35, 0) => m.byte_fallback = r.varint()? != 0,
            (40, 0) => m.unk_id = r.int32()?,
            (41, 0) => m.bos_id = r.int32()?,
            (42, 0) => m.eos_id = r.int32()?,
            (43, 0) => m.pad_id = r.int32()?,
            (_, w) => r.skip(w)?,
        }
    }
    Ok(())
}

fn parse_normalizer(msg: &[u8], base: usize, m: &mut SentencePieceModel) -> Result<()> {
    let mut r = Reader::new(msg);
    while !r.done() {
        let (field, wire) = r.key()?;
        match (field, wire) {
            (1, 2) => {
                let at = base + r.pos;
                m.normalizer_name = utf8(r.len_delimited()?, at)?;
            }
            (2, 2) => m.precompiled_charsmap_len = r.len_delimited()?.len(),
            (3, 0) => m.add_dummy_prefix = r.varint()? != 0,
            (4, 0) => m.remove_extra_whitespaces = r.varint()? != 0,
            (5, 0) => m.escape_whitespaces = r.varint()? != 0,
            (_, w) => r.skip(w)?,
        }
    }
    Ok(())
}

impl TokenizerConfig {
    /// A `llama` (SentencePiece BPE) tokenizer from the bytes of a `tokenizer.model` file.
    /// Unigram and other model types are refused (`TokenizerInvalid`): llama.cpp's SPM algorithm
    /// reproduces SentencePiece's BPE only.
    pub fn from_sentencepiece_model(bytes: &[u8]) -> Result<TokenizerConfig> {
        let m = SentencePieceModel::parse(bytes)?;
        if m.model_type != 2 {
            return Err(invalid(format!(
                "SentencePiece model type {} is not supported (only BPE, type 2)",
                m.model_type
            )));
        }
        let n = m.pieces.len();
        let id = |v: i32| -> Option<u32> {
            if v >= 0 && (v as usize) < n {
                Some(v as u32)
            } else {
                None
            }
        };
        let mut cfg = TokenizerConfig::new(ModelKind::Llama);
        cfg.tokens = m.pieces.iter().map(|p| p.piece.clone()).collect();
        cfg.scores = m.pieces.iter().map(|p| p.score).collect();
        cfg.token_types = m
            .pieces
            .iter()
            .map(|p| match p.kind {
                1 => TokenType::Normal,
                2 => TokenType::Unknown,
                3 => TokenType::Control,
                4 => TokenType::UserDefined,
                5 => TokenType::Unused,
                6 => TokenType::Byte,
                _ => TokenType::Undefined,
            })
            .collect();
        cfg.bos = id(m.bos_id);
        cfg.eos = id(m.eos_id);
        cfg.unk = id(m.unk_id);
        cfg.pad = id(m.pad_id);
        cfg.add_bos = cfg.bos.is_some();
        cfg.add_eos = false;
        cfg.add_space_prefix = m.add_dummy_prefix;
        Ok(cfg)
    }
}
