//! Bounded-time fuzzing of the header parser with a seeded PRNG: mutated bytes, huge lengths and
//! counts, truncations at many lengths, insertions and deletions, short prefixes. The parser must
//! never panic, must return a `CoilError` with an offset (NeedMore: a longer prefix that fits the
//! file), and whatever it accepts must be self-consistent, inspectable as valid JSON and writable.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use coil_core::gguf::inspect::{inspect_json, InspectOptions};
use coil_core::gguf::{GgmlType, GgufArray, GgufFile, GgufValue, GgufWriter};
use coil_core::ErrorCode;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn seed_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", GgufValue::from("jamba"));
    w.add_metadata("general.name", GgufValue::from("fuzz \u{1F600}"));
    w.add_metadata("jamba.block_count", GgufValue::U32(3));
    w.add_metadata("jamba.attention.head_count_kv", GgufValue::from(vec![0i32, 2, 0]));
    w.add_metadata("jamba.ssm.conv_kernel", GgufValue::U32(4));
    w.add_metadata("jamba.ssm.inner_size", GgufValue::U32(64));
    w.add_metadata("jamba.ssm.state_size", GgufValue::U32(16));
    w.add_metadata("u8", GgufValue::U8(1));
    w.add_metadata("i8", GgufValue::I8(-1));
    w.add_metadata("u16", GgufValue::U16(2));
    w.add_metadata("i16", GgufValue::I16(-2));
    w.add_metadata("i64", GgufValue::I64(-3));
    w.add_metadata("u64", GgufValue::U64(3));
    w.add_metadata("f32", GgufValue::F32(f32::NAN));
    w.add_metadata("f64", GgufValue::F64(f64::NEG_INFINITY));
    w.add_metadata("bool", GgufValue::Bool(true));
    w.add_metadata("tokenizer.ggml.model", GgufValue::from("gpt2"));
    w.add_metadata(
        "tokenizer.ggml.tokens",
        GgufValue::Array(GgufArray::String((0..20).map(|i| format!("t{i}")).collect())),
    );
    w.add_metadata("scores", GgufValue::from(vec![0.5f32, -1.0, 2.0]));
    w.add_metadata("bools", GgufValue::from(vec![true, false]));
    w.add_metadata(
        "nested",
        GgufValue::Array(GgufArray::Array(vec![GgufArray::U32(vec![1, 2]), GgufArray::Array(vec![])])),
    );
    w.add_tensor("blk.1.ffn_gate_inp.weight", vec![4, 2], GgmlType::F32.id(), vec![0; 32]).unwrap();
    w.add_tensor("q", vec![32, 2], GgmlType::Q8_0.id(), vec![1; 68]).unwrap();
    w.add_tensor("k", vec![256], GgmlType::Q4_K.id(), vec![2; 144]).unwrap();
    w.add_tensor("u", vec![3], 77, vec![3; 7]).unwrap();
    w.add_tensor("h", vec![2, 2, 2, 2], GgmlType::F16.id(), vec![4; 32]).unwrap();
    w.to_bytes().unwrap()
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(rel)).unwrap()
}

/// Parses and checks everything the parser promises; panics (with the input described) if not.
/// Returns the error code, or `None` for success.
fn check(bytes: &[u8], file_size: u64, whole: bool) -> Option<ErrorCode> {
    let r = catch_unwind(AssertUnwindSafe(|| GgufFile::parse(bytes, file_size)));
    let r = match r {
        Ok(r) => r,
        Err(_) => panic!("parse panicked on {} bytes (file size {file_size}): {:02x?}", bytes.len(), bytes),
    };
    let have = (bytes.len() as u64).min(file_size);
    match r {
        Err(e) => {
            let off = e.offset.unwrap_or_else(|| panic!("error without offset: {e}"));
            assert!(!e.message.is_empty());
            if e.code == ErrorCode::GgufNeedMore {
                assert!(off > have && off <= file_size, "NeedMore {off} with {have} of {file_size}");
            } else {
                assert!(off <= file_size, "{e} beyond the file ({file_size})");
            }
            Some(e.code)
        }
        Ok(f) => {
            assert_eq!(f.file_size, file_size);
            assert!(f.alignment.is_power_of_two());
            assert_eq!(f.data_offset % f.alignment, 0);
            for t in &f.tensors {
                assert!(t.dims.len() <= 4);
                assert_eq!(t.offset % f.alignment, 0);
                if let Some(r) = f.tensor_range(t) {
                    assert!(r.end <= file_size, "{} {r:?}", t.name);
                }
            }
            for head in [None, Some(3)] {
                let json = inspect_json(&f, &InspectOptions { array_head: head });
                if let Err(err) = serde_json::from_str::<serde_json::Value>(&json) {
                    panic!("invalid JSON ({err}): {json}");
                }
            }
            if whole {
                // what was accepted can be written and read back
                if let Ok(w) = GgufWriter::from_file(&f, bytes) {
                    let out = w.to_bytes().unwrap();
                    let g = GgufFile::parse(&out, out.len() as u64).unwrap();
                    assert_eq!(format!("{:?}", g.metadata), format!("{:?}", f.metadata));
                    assert_eq!(g.tensors.len(), f.tensors.len());
                }
            }
            None
        }
    }
}

const INTERESTING_U64: [u64; 14] = [
    0,
    1,
    7,
    0xFF,
    0xFFFF_FFFF,
    1 << 32,
    1 << 40,
    1 << 48,
    (1 << 48) + 1,
    1 << 62,
    1 << 63,
    u64::MAX,
    u64::MAX - 31,
    i64::MAX as u64,
];
const INTERESTING_U32: [u32; 12] = [0, 1, 2, 4, 5, 8, 9, 12, 13, 39, 0x8000_0000, u32::MAX];

/// One random mutation of `seed`: returns (bytes, declared file size, whole file?).
fn mutate(rng: &mut Rng, seed: &[u8], header_len: usize) -> (Vec<u8>, u64, bool) {
    let mut b = seed.to_vec();
    let hot = header_len.clamp(1, b.len()); // mutations mostly hit the header
    match rng.below(8) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(hot);
                b[i] = rng.next() as u8;
            }
        }
        1 => {
            let i = rng.below(hot.saturating_sub(8));
            let v = match rng.below(3) {
                0 => INTERESTING_U64[rng.below(INTERESTING_U64.len())],
                1 => seed.len() as u64 + rng.below(64) as u64 - 32,
                _ => rng.next(),
            };
            b[i..i + 8].copy_from_slice(&v.to_le_bytes());
        }
        2 => {
            let i = rng.below(hot.saturating_sub(4));
            let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
            b[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        3 => {
            let len = rng.below(b.len() + 1);
            b.truncate(len);
        }
        4 => {
            let i = rng.below(hot);
            let n = 1 + rng.below(16);
            let ins: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            b.splice(i..i, ins);
        }
        5 => {
            let i = rng.below(hot);
            let n = (1 + rng.below(16)).min(b.len() - i);
            b.drain(i..i + n);
        }
        6 => {
            // a short prefix of an intact (or lightly damaged) file
            if rng.below(2) == 0 {
                let i = rng.below(hot);
                b[i] ^= 1 << rng.below(8);
            }
            let size = b.len() as u64;
            let cut = rng.below(hot + 1);
            b.truncate(cut);
            return (b, size, false);
        }
        _ => {
            // a bigger declared size than the bytes
            let size = b.len() as u64 + 1 + rng.below(1 << 20) as u64;
            return (b, size, false);
        }
    }
    let size = b.len() as u64;
    (b, size, true)
}

#[test]
fn fuzz_headers() {
    let mut seeds = vec![seed_file()];
    for m in ["models/tiny-mamba.gguf", "models/tiny-mamba2.gguf", "models/tiny-jamba.gguf"] {
        seeds.push(fixture(m));
    }
    let mut rng = Rng(0x5eed_9e45_ed24_6f21);
    let iterations = if cfg!(debug_assertions) { 6_000 } else { 40_000 };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (s, seed) in seeds.iter().enumerate() {
        let f = GgufFile::parse(seed, seed.len() as u64).unwrap();
        let header_len = f.data_offset as usize;
        check(seed, seed.len() as u64, true);
        let n = if s == 0 { iterations * 2 } else { iterations / 2 };
        for _ in 0..n {
            let (b, size, whole) = mutate(&mut rng, seed, header_len);
            let outcome = check(&b, size, whole).map_or("ok".to_string(), |c| c.as_str().to_string());
            *seen.entry(outcome).or_default() += 1;
        }
    }
    eprintln!("fuzz outcomes: {seen:?}");
    // the mutations reach every kind of outcome
    for code in [
        "ok",
        "GGUF_BAD_MAGIC",
        "GGUF_UNSUPPORTED_VERSION",
        "GGUF_TRUNCATED",
        "GGUF_NEED_MORE",
        "GGUF_INVALID",
        "GGUF_BAD_UTF8",
        "GGUF_TENSOR_OUT_OF_BOUNDS",
        "GGUF_TENSOR_OVERLAP",
        "GGUF_MISALIGNED",
    ] {
        assert!(seen.get(code).copied().unwrap_or(0) > 0, "no {code} in {seen:?}");
    }
}

#[test]
fn truncate_at_every_length() {
    let seed = seed_file();
    for len in 0..=seed.len() {
        check(&seed[..len], len as u64, true);
        check(&seed[..len], seed.len() as u64, false);
    }
    for m in ["models/tiny-mamba2.gguf", "models/tiny-jamba.gguf"] {
        let b = fixture(m);
        let header = GgufFile::parse(&b, b.len() as u64).unwrap().data_offset as usize;
        for len in (0..header + 64).chain((header..b.len()).step_by(997)) {
            check(&b[..len], len as u64, false);
        }
    }
}

#[test]
fn huge_lengths_at_every_field_position() {
    // write each interesting u64 at every offset of the header (8-byte windows)
    let seed = seed_file();
    let header = GgufFile::parse(&seed, seed.len() as u64).unwrap().data_offset as usize;
    for i in 0..header.saturating_sub(8) {
        for v in INTERESTING_U64 {
            let mut b = seed.clone();
            b[i..i + 8].copy_from_slice(&v.to_le_bytes());
            check(&b, b.len() as u64, true);
        }
        for v in INTERESTING_U32 {
            let mut b = seed.clone();
            b[i..i + 4].copy_from_slice(&v.to_le_bytes());
            check(&b, b.len() as u64, true);
        }
    }
}

#[test]
fn mutated_vocab_prefixes() {
    // a real vocab file, mutated near the start and parsed from a 64 KiB prefix
    let seed = fixture("vocab/ggml-vocab-llama-spm.gguf");
    let mut rng = Rng(42);
    let prefix = 64 * 1024;
    for _ in 0..300 {
        let mut b = seed[..prefix].to_vec();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(4096);
            if rng.below(2) == 0 {
                b[i] = rng.next() as u8;
            } else if i + 8 <= b.len() {
                let v = INTERESTING_U64[rng.below(INTERESTING_U64.len())];
                b[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
        }
        check(&b, seed.len() as u64, false);
    }
}

#[test]
fn random_garbage() {
    let mut rng = Rng(7);
    for i in 0..5_000 {
        let n = rng.below(300);
        let mut b: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        if i % 2 == 0 && b.len() >= 8 {
            b[..4].copy_from_slice(b"GGUF");
            b[4..8].copy_from_slice(&(2 + (i as u32 / 2) % 2).to_le_bytes());
        }
        let size = b.len() as u64;
        check(&b, size, true);
    }
}

/// The hybrid architectures' loaders on mutated files: the header's hyperparameters (per-layer
/// arrays, key lengths, expert counts, RoPE keys), the tensor plan and the weights' build must end
/// in a model or a typed error, never a panic; a model that loads evaluates a few tokens without
/// one (its logits may be anything).
#[test]
fn hybrid_models_load_or_fail_cleanly() {
    use coil_core::context::{Batch, Context, ContextParams};
    use coil_core::model::Model;
    let mut rng = Rng(0x4879_6272_6964);
    let iterations = if cfg!(debug_assertions) { 300 } else { 1_500 };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for m in [
        "models/tiny-granite-hybrid.gguf",
        "models/tiny-nemotron-h.gguf",
        "models/tiny-falcon-h1.gguf",
        "models/tiny-lfm2.gguf",
    ] {
        let seed = fixture(m);
        let header_len = GgufFile::parse(&seed, seed.len() as u64).unwrap().data_offset as usize;
        for i in 0..iterations {
            let (b, _, whole) = mutate(&mut rng, &seed, header_len);
            if !whole {
                continue;
            }
            let r = catch_unwind(AssertUnwindSafe(|| match Model::from_gguf_bytes(&b) {
                Err(e) => e.code.as_str().to_string(),
                Ok(model) => {
                    let model = std::sync::Arc::new(model);
                    let Ok(mut c) =
                        Context::new(model.clone(), ContextParams { n_ctx: 64, ..ContextParams::default() })
                    else {
                        return "context error".to_string();
                    };
                    let n_vocab = model.hparams().map(|h| h.n_vocab).unwrap_or(1) as u32;
                    match c.evaluate(&Batch::for_sequence(0, &[1 % n_vocab, 2 % n_vocab, 3 % n_vocab], true)) {
                        Ok(_) => "ok".to_string(),
                        Err(e) => e.code.as_str().to_string(),
                    }
                }
            }));
            match r {
                Ok(outcome) => *seen.entry(outcome).or_default() += 1,
                Err(_) => panic!("{m}: mutation {i} panicked"),
            }
        }
    }
    eprintln!("load outcomes: {seen:?}");
    assert!(seen.get("ok").copied().unwrap_or(0) > 0, "no mutation loaded: {seen:?}");
    assert!(seen.len() >= 4, "the mutations reach too few outcomes: {seen:?}");
}
