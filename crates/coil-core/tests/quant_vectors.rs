//! Bit-identity with ggml's C quantizers: the rows in tests/fixtures/quant/*.bin were quantized
//! (and dequantized) by ggml's `quantize_row_*_ref` / `dequantize_row_*` through ctypes (see
//! scripts/fixtures/make_quant_vectors.py and tests/fixtures/quant/README.md).

use std::path::PathBuf;

use coil_core::gguf::GgmlType;
use coil_core::quant::{dequantize_row, half, quantize_row};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quant").join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn fnv64(data: &[u8]) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01B3);
    }
    h
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        self.take(4 * n).chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }
}

struct Case {
    name: String,
    x: Vec<f32>,
    q: Vec<u8>,
    dq_fnv: Option<u64>,
}

fn load(ty: GgmlType) -> Vec<Case> {
    let data = fixture(&format!("{}.bin", ty.name().to_lowercase()));
    let mut r = Reader(&data);
    assert_eq!(r.take(4), b"CQV1");
    assert_eq!(r.u32(), ty.id());
    let n = r.u32() as usize;
    let mut cases = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.u8() as usize;
        let name = String::from_utf8(r.take(len).to_vec()).unwrap();
        let nx = r.u32() as usize;
        let x = r.f32s(nx);
        let nq = r.u32() as usize;
        let q = r.take(nq).to_vec();
        let has = r.u8();
        let h = r.u64();
        cases.push(Case { name, x, q, dq_fnv: (has == 1).then_some(h) });
    }
    assert!(r.0.is_empty(), "trailing bytes in {ty} vectors");
    cases
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn check_type(ty: GgmlType) {
    let cases = load(ty);
    assert!(cases.len() >= 40, "{ty}: only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let mut q = vec![0u8; c.q.len()];
        quantize_row(ty, &c.x, &mut q).unwrap();
        if q != c.q {
            let i = first_diff(&q, &c.q).unwrap();
            let block = i / ty.type_size() as usize;
            failures.push(format!(
                "{ty} {}: quantized bytes differ from ggml at byte {i} (block {block}, byte {} of it): ours {:#04x}, ggml {:#04x}",
                c.name,
                i % ty.type_size() as usize,
                q[i],
                c.q[i]
            ));
            continue;
        }
        if let Some(want) = c.dq_fnv {
            let mut y = vec![0f32; c.x.len()];
            dequantize_row(ty, &c.q, &mut y).unwrap();
            let bytes: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
            if fnv64(&bytes) != want {
                failures.push(format!("{ty} {}: dequantized values differ from ggml's", c.name));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} rows differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn q4_0_matches_ggml() {
    check_type(GgmlType::Q4_0);
}
#[test]
fn q4_1_matches_ggml() {
    check_type(GgmlType::Q4_1);
}
#[test]
fn q5_0_matches_ggml() {
    check_type(GgmlType::Q5_0);
}
#[test]
fn q5_1_matches_ggml() {
    check_type(GgmlType::Q5_1);
}
#[test]
fn q8_0_matches_ggml() {
    check_type(GgmlType::Q8_0);
}
#[test]
fn q8_1_matches_ggml() {
    check_type(GgmlType::Q8_1);
}
#[test]
fn q4_k_matches_ggml() {
    check_type(GgmlType::Q4_K);
}
#[test]
fn q5_k_matches_ggml() {
    check_type(GgmlType::Q5_K);
}
#[test]
fn q6_k_matches_ggml() {
    check_type(GgmlType::Q6_K);
}
#[test]
fn q8_k_matches_ggml() {
    check_type(GgmlType::Q8_K);
}

#[test]
fn half_conversions_match_ggml() {
    let data = fixture("half.bin");
    let mut r = Reader(&data);
    assert_eq!(r.take(4), b"CHV1");
    let n = r.u32() as usize;
    let xs: Vec<u32> = r.take(4 * n).chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    let h: Vec<u16> = r.take(2 * n).chunks_exact(2).map(|c| u16::from_le_bytes(c.try_into().unwrap())).collect();
    let b: Vec<u16> = r.take(2 * n).chunks_exact(2).map(|c| u16::from_le_bytes(c.try_into().unwrap())).collect();
    let fh = r.u64();
    let fb = r.u64();
    assert!(r.0.is_empty());
    let mut bad = Vec::new();
    for i in 0..n {
        let x = f32::from_bits(xs[i]);
        if half::f32_to_f16(x) != h[i] {
            bad.push(format!("f16({:#010x}) = {:#06x}, ggml {:#06x}", xs[i], half::f32_to_f16(x), h[i]));
        }
        if half::f32_to_bf16(x) != b[i] {
            bad.push(format!("bf16({:#010x}) = {:#06x}, ggml {:#06x}", xs[i], half::f32_to_bf16(x), b[i]));
        }
    }
    assert!(bad.is_empty(), "{} of {n} conversions differ:\n{}", bad.len(), bad[..bad.len().min(20)].join("\n"));
    let all_h: Vec<u8> = (0..=u16::MAX).flat_map(|v| half::f16_to_f32(v).to_bits().to_le_bytes()).collect();
    assert_eq!(fnv64(&all_h), fh, "f16 -> f32 over all halves");
    let all_b: Vec<u8> = (0..=u16::MAX).flat_map(|v| half::bf16_to_f32(v).to_bits().to_le_bytes()).collect();
    assert_eq!(fnv64(&all_b), fb, "bf16 -> f32 over all halves");
}
