//! Every kind of malformed header gives its own error code and the byte offset of the problem.

use coil_core::gguf::{GgmlType, GgufFile, GgufValue};
use coil_core::{CoilError, ErrorCode};

/// A hand-assembled GGUF file; every push returns the offset it was written at.
struct Raw {
    b: Vec<u8>,
}

impl Raw {
    fn new(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw { b: b"GGUF".to_vec() };
        r.u32(version);
        r.u64(n_tensors);
        r.u64(n_kv);
        r
    }
    fn pos(&self) -> u64 {
        self.b.len() as u64
    }
    fn u8(&mut self, v: u8) -> u64 {
        let p = self.pos();
        self.b.push(v);
        p
    }
    fn u32(&mut self, v: u32) -> u64 {
        let p = self.pos();
        self.b.extend_from_slice(&v.to_le_bytes());
        p
    }
    fn u64(&mut self, v: u64) -> u64 {
        let p = self.pos();
        self.b.extend_from_slice(&v.to_le_bytes());
        p
    }
    fn str(&mut self, s: &[u8]) -> u64 {
        let p = self.u64(s.len() as u64);
        self.b.extend_from_slice(s);
        p
    }
    /// A u32 pair; returns the key's offset.
    fn kv_u32(&mut self, key: &str, v: u32) -> u64 {
        let p = self.str(key.as_bytes());
        self.u32(4);
        self.u32(v);
        p
    }
    /// A tensor info; returns (name offset, n_dims offset, offset-field offset).
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> (u64, u64, u64) {
        let n = self.str(name.as_bytes());
        let d = self.u32(dims.len() as u32);
        for &x in dims {
            self.u64(x);
        }
        self.u32(ty);
        let o = self.u64(offset);
        (n, d, o)
    }
    fn pad(&mut self, align: usize) {
        while !self.b.len().is_multiple_of(align) {
            self.b.push(0);
        }
    }
    fn zeros(&mut self, n: usize) {
        self.b.resize(self.b.len() + n, 0);
    }
}

fn parse(b: &[u8]) -> Result<GgufFile, CoilError> {
    GgufFile::parse(b, b.len() as u64)
}

#[track_caller]
fn expect(b: &[u8], code: ErrorCode, offset: u64) -> CoilError {
    let e = parse(b).expect_err("expected an error");
    assert_eq!((e.code, e.offset), (code, Some(offset)), "{e}");
    assert!(!e.message.is_empty());
    e
}

#[test]
fn bad_magic() {
    let mut b = Raw::new(3, 0, 0).b;
    b[3] = b'X';
    let e = expect(&b, ErrorCode::GgufBadMagic, 0);
    assert!(e.message.contains("GGUF"), "{e}");
    b[..4].copy_from_slice(b"gguf");
    expect(&b, ErrorCode::GgufBadMagic, 0);
    expect(b"XY", ErrorCode::GgufBadMagic, 0);
    expect(b"\x00", ErrorCode::GgufBadMagic, 0);
    // an empty file or a prefix of the magic is a truncated file
    expect(b"", ErrorCode::GgufTruncated, 0);
    expect(b"GG", ErrorCode::GgufTruncated, 0);
    expect(b"GGUF\x03\x00", ErrorCode::GgufTruncated, 4);
}

#[test]
fn unsupported_versions() {
    for v in [0u32, 1, 4, 100, u32::MAX] {
        let b = Raw::new(v, 0, 0).b;
        let e = expect(&b, ErrorCode::GgufUnsupportedVersion, 4);
        assert!(e.message.contains("version"), "{e}");
        assert!(!e.message.contains("big-endian"), "{e}");
    }
    let e = expect(&Raw::new(1, 0, 0).b, ErrorCode::GgufUnsupportedVersion, 4);
    assert!(e.message.contains('1'), "{e}");
    // a big-endian v3 file: the version reads byte-swapped
    let mut b = Raw::new(3, 0, 0).b;
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    let e = expect(&b, ErrorCode::GgufUnsupportedVersion, 4);
    assert!(e.message.contains("big-endian"), "{e}");
    assert!(e.message.contains("version 3"), "{e}");
    // v2 and v3 are fine
    assert!(parse(&Raw::new(2, 0, 0).b).is_ok());
    assert!(parse(&Raw::new(3, 0, 0).b).is_ok());
}

#[test]
fn absurd_counts() {
    expect(&Raw::new(3, u64::MAX, 0).b, ErrorCode::GgufInvalid, 8);
    expect(&Raw::new(3, 1 << 60, 0).b, ErrorCode::GgufInvalid, 8);
    expect(&Raw::new(3, 0, u64::MAX).b, ErrorCode::GgufInvalid, 16);
    expect(&Raw::new(3, 0, 1 << 59).b, ErrorCode::GgufInvalid, 16);
    // plausible counts that the rest of the file cannot hold
    let e = expect(&Raw::new(3, 0, 1000).b, ErrorCode::GgufTruncated, 16);
    assert!(e.message.contains("1000"), "{e}");
    expect(&Raw::new(3, 1000, 0).b, ErrorCode::GgufTruncated, 8);
    let mut r = Raw::new(3, 0, 2);
    r.kv_u32("a", 1);
    r.zeros(10); // 10 bytes cannot hold a second pair... but 13 could
    let e = parse(&r.b).unwrap_err();
    assert_eq!(e.code, ErrorCode::GgufTruncated, "{e}");
}

#[test]
fn string_lengths() {
    let mut r = Raw::new(3, 0, 1);
    r.u64(u64::MAX / 2);
    r.zeros(20);
    expect(&r.b, ErrorCode::GgufInvalid, 24);
    let mut r = Raw::new(3, 0, 1);
    r.u64(1000);
    r.zeros(20);
    let e = expect(&r.b, ErrorCode::GgufTruncated, 24);
    assert!(e.message.contains("truncated"), "{e}");
    // a string value, and a tensor name
    let mut r = Raw::new(3, 0, 1);
    r.str(b"k");
    r.u32(8);
    let at = r.u64(1 << 62);
    expect(&r.b, ErrorCode::GgufInvalid, at);
    let mut r = Raw::new(3, 1, 0);
    let at = r.u64(1 << 50);
    r.zeros(30);
    let e = expect(&r.b, ErrorCode::GgufInvalid, at);
    assert!(e.message.contains("tensor"), "{e}");
}

#[test]
fn truncation_points() {
    // inside a metadata value
    let mut r = Raw::new(3, 0, 1);
    r.str(b"abc");
    r.u32(4);
    let at = r.pos();
    r.b.extend_from_slice(&[1, 2]);
    expect(&r.b, ErrorCode::GgufTruncated, at);
    // inside a key
    let mut r = Raw::new(3, 0, 1);
    r.u64(10);
    r.b.extend_from_slice(b"ab");
    r.zeros(3); // 13 bytes: enough for the smallest pair, not for this key
    expect(&r.b, ErrorCode::GgufTruncated, 24);
    // inside a tensor info's dims
    let mut r = Raw::new(3, 1, 0);
    r.str(b"t");
    r.u32(2);
    r.u64(4);
    let at = r.pos();
    r.b.extend_from_slice(&[0; 7]);
    expect(&r.b, ErrorCode::GgufTruncated, at);
    // right after the counts
    let mut r = Raw::new(3, 1, 0);
    r.b.truncate(20);
    expect(&r.b, ErrorCode::GgufTruncated, 16);
}

#[test]
fn invalid_value_types() {
    let mut r = Raw::new(3, 0, 1);
    r.str(b"k");
    let at = r.u32(13);
    r.zeros(8);
    let e = expect(&r.b, ErrorCode::GgufInvalid, at);
    assert!(e.message.contains("13") && e.message.contains("\"k\""), "{e}");
    let mut r = Raw::new(3, 0, 1);
    r.str(b"k");
    r.u32(9);
    let at = r.u32(0xFFFF_FFFF);
    r.u64(0);
    expect(&r.b, ErrorCode::GgufInvalid, at);
}

#[test]
fn array_counts() {
    let mut r = Raw::new(3, 0, 1);
    r.str(b"k");
    r.u32(9);
    let at = r.u32(4);
    r.u64(1 << 62);
    expect(&r.b, ErrorCode::GgufInvalid, at);
    let mut r = Raw::new(3, 0, 1);
    r.str(b"k");
    r.u32(9);
    let at = r.u32(4);
    r.u64(1000);
    r.zeros(100);
    let e = expect(&r.b, ErrorCode::GgufTruncated, at);
    assert!(e.message.contains("1000"), "{e}");
    // strings: the count is checked against 8 bytes per string before anything is read
    let mut r = Raw::new(3, 0, 1);
    r.str(b"k");
    r.u32(9);
    let at = r.u32(8);
    r.u64(u64::MAX / 8 + 1);
    expect(&r.b, ErrorCode::GgufInvalid, at);
    // arrays of arrays: 12 bytes each at least
    let mut r = Raw::new(3, 0, 1);
    r.str(b"k");
    r.u32(9);
    let at = r.u32(9);
    r.u64(10);
    r.zeros(100);
    expect(&r.b, ErrorCode::GgufTruncated, at);
}

fn nested(depth: u32) -> Vec<u8> {
    let mut r = Raw::new(3, 0, 1);
    r.str(b"deep");
    r.u32(9);
    for _ in 0..depth - 1 {
        r.u32(9);
        r.u64(1);
    }
    r.u32(0);
    r.u64(1);
    r.u8(7);
    r.b
}

#[test]
fn nesting_depth_is_bounded() {
    let f = parse(&nested(8)).unwrap();
    assert_eq!(f.get("deep").unwrap().type_name(), format!("{}u8{}", "array<".repeat(8), ">".repeat(8)));
    let e = parse(&nested(9)).unwrap_err();
    assert_eq!(e.code, ErrorCode::GgufInvalid, "{e}");
    assert!(e.message.contains("nested"), "{e}");
    let e = parse(&nested(10_000)).unwrap_err();
    assert_eq!(e.code, ErrorCode::GgufInvalid, "{e}");
}

#[test]
fn bad_utf8() {
    let mut r = Raw::new(3, 0, 1);
    let at = r.str(b"a\xffb");
    r.u32(4);
    r.u32(0);
    let e = expect(&r.b, ErrorCode::GgufBadUtf8, at + 8 + 1);
    assert!(e.message.contains("key"), "{e}");
    let mut r = Raw::new(3, 0, 1);
    r.str(b"k");
    r.u32(8);
    let at = r.str(b"ok\xc3");
    expect(&r.b, ErrorCode::GgufBadUtf8, at + 8 + 2);
    let mut r = Raw::new(3, 0, 1);
    r.str(b"k");
    r.u32(9);
    r.u32(8);
    r.u64(2);
    r.str(b"fine");
    let at = r.str(b"\xed\xa0\x80"); // a UTF-16 surrogate
    expect(&r.b, ErrorCode::GgufBadUtf8, at + 8);
    let mut r = Raw::new(3, 1, 0);
    let at = r.str(b"\x80");
    r.u32(1);
    r.u64(1);
    r.u32(0);
    r.u64(0);
    let e = expect(&r.b, ErrorCode::GgufBadUtf8, at + 8);
    assert!(e.message.contains("tensor"), "{e}");
}

#[test]
fn duplicates() {
    let mut r = Raw::new(3, 0, 2);
    r.kv_u32("a.b", 1);
    let at = r.kv_u32("a.b", 2);
    let e = expect(&r.b, ErrorCode::GgufInvalid, at);
    assert!(e.message.contains("duplicate") && e.message.contains("a.b"), "{e}");
    let mut r = Raw::new(3, 2, 0);
    r.tensor("w", &[1], 0, 0);
    let (at, _, _) = r.tensor("w", &[1], 0, 32);
    r.pad(32);
    r.zeros(64);
    let e = expect(&r.b, ErrorCode::GgufInvalid, at);
    assert!(e.message.contains("duplicate") && e.message.contains("\"w\""), "{e}");
}

#[test]
fn dims() {
    let mut r = Raw::new(3, 1, 0);
    let (_, at, _) = r.tensor("t", &[1, 1, 1, 1, 1], 0, 0);
    r.pad(32);
    r.zeros(32);
    let e = expect(&r.b, ErrorCode::GgufInvalid, at);
    assert!(e.message.contains('5'), "{e}");
    // element count overflow
    let mut r = Raw::new(3, 1, 0);
    r.str(b"t");
    r.u32(2);
    r.u64(1 << 32);
    let at = r.u64(1 << 32);
    r.u32(0);
    r.u64(0);
    let e = expect(&r.b, ErrorCode::GgufInvalid, at);
    assert!(e.message.contains("overflow"), "{e}");
    // a single dimension beyond i64
    let mut r = Raw::new(3, 1, 0);
    r.str(b"t");
    r.u32(1);
    let at = r.u64(1 << 63);
    r.u32(0);
    r.u64(0);
    expect(&r.b, ErrorCode::GgufInvalid, at);
    // ne0 * ne1 fits i64 but the byte size does not: rejected too
    let mut r = Raw::new(3, 1, 0);
    let (_, at, _) = r.tensor("t", &[1 << 31, 1 << 31], GgmlType::F64.id(), 0);
    expect(&r.b, ErrorCode::GgufInvalid, at);
}

#[test]
fn row_length_must_be_whole_blocks() {
    let mut r = Raw::new(3, 1, 0);
    let (_, at, _) = r.tensor("q", &[33, 2], GgmlType::Q4_0.id(), 0);
    r.pad(32);
    r.zeros(1000);
    let e = expect(&r.b, ErrorCode::GgufInvalid, at);
    assert!(e.message.contains("33") && e.message.contains("Q4_0"), "{e}");
    // the same rows in an unknown type are fine (their size is unknown)
    let mut r = Raw::new(3, 1, 0);
    r.tensor("q", &[33, 2], 31, 0);
    r.pad(32);
    let f = parse(&r.b).unwrap();
    assert_eq!(f.tensors[0].size, None);
}

#[test]
fn tensors_out_of_bounds() {
    let mut r = Raw::new(3, 1, 0);
    let (_, _, at) = r.tensor("big", &[1000], 0, 0);
    r.pad(32);
    r.zeros(100);
    let e = expect(&r.b, ErrorCode::GgufTensorOutOfBounds, at);
    assert!(e.message.contains("big") && e.message.contains("4000"), "{e}");
    let mut r = Raw::new(3, 1, 0);
    let (_, _, at) = r.tensor("far", &[1], 0, !31);
    r.pad(32);
    expect(&r.b, ErrorCode::GgufTensorOutOfBounds, at);
    // the last byte just past the end
    let mut r = Raw::new(3, 1, 0);
    let (_, _, at) = r.tensor("edge", &[8], 0, 0);
    r.pad(32);
    r.zeros(31);
    expect(&r.b, ErrorCode::GgufTensorOutOfBounds, at);
    r.zeros(1);
    assert!(parse(&r.b).is_ok());
    // the file is declared shorter than the data (e.g. a truncated download)
    let b = r.b.clone();
    let e = GgufFile::parse(&b, b.len() as u64 - 1).unwrap_err();
    assert_eq!((e.code, e.offset), (ErrorCode::GgufTensorOutOfBounds, Some(at)));
    // an unknown type whose offset is past the end
    let mut r = Raw::new(3, 1, 0);
    let (_, _, at) = r.tensor("u", &[1], 1000, 4096);
    r.pad(32);
    expect(&r.b, ErrorCode::GgufTensorOutOfBounds, at);
}

#[test]
fn overlapping_tensors() {
    let mut r = Raw::new(3, 2, 0);
    r.tensor("a", &[16], 0, 0);
    let (_, _, at) = r.tensor("b", &[16], 0, 32);
    r.pad(32);
    r.zeros(96);
    let e = expect(&r.b, ErrorCode::GgufTensorOverlap, at);
    assert!(e.message.contains("\"a\"") && e.message.contains("\"b\""), "{e}");
    // one inside another, listed first
    let mut r = Raw::new(3, 3, 0);
    let (_, _, at) = r.tensor("inner", &[4], 0, 64);
    r.tensor("outer", &[64], 0, 0);
    r.tensor("after", &[4], 0, 256);
    r.pad(32);
    r.zeros(288);
    expect(&r.b, ErrorCode::GgufTensorOverlap, at);
    // touching is fine; empty tensors overlap nothing
    let mut r = Raw::new(3, 3, 0);
    r.tensor("a", &[8], 0, 0);
    r.tensor("b", &[8], 0, 32);
    r.tensor("empty", &[0], 0, 32);
    r.pad(32);
    r.zeros(64);
    assert!(parse(&r.b).is_ok());
}

#[test]
fn misaligned_offsets() {
    let mut r = Raw::new(3, 1, 0);
    let (_, _, at) = r.tensor("m", &[4], 0, 16);
    r.pad(32);
    r.zeros(64);
    let e = expect(&r.b, ErrorCode::GgufMisaligned, at);
    assert!(e.message.contains("16") && e.message.contains("32"), "{e}");
    // also for an unknown type
    let mut r = Raw::new(3, 1, 0);
    let (_, _, at) = r.tensor("u", &[4], 200, 8);
    r.pad(32);
    r.zeros(64);
    expect(&r.b, ErrorCode::GgufMisaligned, at);
}

#[test]
fn unknown_types_are_reported_not_fatal() {
    let mut r = Raw::new(3, 2, 0);
    r.tensor("u", &[10, 3], 1234, 0);
    r.tensor("f", &[4], 0, 64);
    r.pad(32);
    r.zeros(96);
    let f = parse(&r.b).unwrap();
    let u = f.tensor("u").unwrap();
    assert_eq!((u.ggml_type, u.size, u.type_id), (None, None, 1234));
    assert_eq!(u.type_name(), "UNKNOWN(1234)");
    assert_eq!(f.tensor("f").unwrap().size, Some(16));
}

#[test]
fn alignment_key() {
    let build = |v: GgufValue| {
        let mut w = coil_core::gguf::GgufWriter::new();
        w.add_metadata("x", GgufValue::U8(1));
        w.add_metadata("general.alignment", v);
        w
    };
    // write a valid one, then patch the value
    let ok = build(GgufValue::U32(64)).to_bytes().unwrap();
    let f = parse(&ok).unwrap();
    assert_eq!(f.alignment, 64);
    assert_eq!(f.data_offset, 128); // a 71-byte header, padded to 64
    let value_at = 24 + 8 + 1 + 4 + 1 + 8 + 17 + 4;
    assert_eq!(&ok[value_at..value_at + 4], &64u32.to_le_bytes());
    for bad in [0u32, 48, 3, u32::MAX] {
        let mut b = ok.clone();
        b[value_at..value_at + 4].copy_from_slice(&bad.to_le_bytes());
        let e = expect(&b, ErrorCode::GgufInvalid, value_at as u64);
        assert!(e.message.contains("general.alignment"), "{e}");
    }
    // the wrong type
    let mut r = Raw::new(3, 0, 1);
    r.str(b"general.alignment");
    r.u32(10);
    let at = r.u64(64);
    expect(&r.b, ErrorCode::GgufInvalid, at);
    // with alignment 64, an offset of 32 is misaligned
    let mut r = Raw::new(3, 1, 1);
    r.kv_u32("general.alignment", 64);
    let (_, _, at) = r.tensor("t", &[4], 0, 32);
    r.pad(64);
    r.zeros(64);
    expect(&r.b, ErrorCode::GgufMisaligned, at);
}

#[test]
fn bool_bytes() {
    let mut r = Raw::new(3, 0, 1);
    r.str(b"b");
    r.u32(7);
    let at = r.u8(2);
    expect(&r.b, ErrorCode::GgufInvalid, at);
    let mut r = Raw::new(3, 0, 1);
    r.str(b"b");
    r.u32(9);
    r.u32(7);
    r.u64(3);
    r.u8(1);
    r.u8(0);
    let at = r.u8(0x80);
    expect(&r.b, ErrorCode::GgufInvalid, at);
}

#[test]
fn need_more_versus_truncated() {
    let mut r = Raw::new(3, 0, 1);
    r.str(b"key");
    r.u32(8);
    r.str(&[b'x'; 5000]);
    let b = r.b;
    // a short prefix of a long enough file: ask for more, at least the whole string
    let e = GgufFile::parse(&b[..100], b.len() as u64).unwrap_err();
    assert_eq!(e.code, ErrorCode::GgufNeedMore);
    let want = e.offset.unwrap();
    assert!(want >= 24 + 11 + 4 + 8 + 5000 && want <= b.len() as u64, "{want}");
    assert!(GgufFile::parse(&b[..want as usize], b.len() as u64).is_ok());
    // the same prefix, but the file itself ends there: truncated
    let e = GgufFile::parse(&b[..100], 100).unwrap_err();
    assert_eq!((e.code, e.offset), (ErrorCode::GgufTruncated, Some(39)));
    // a prefix longer than the declared file size: the rest is ignored
    let e = GgufFile::parse(&b, 100).unwrap_err();
    assert_eq!(e.code, ErrorCode::GgufTruncated);
}
