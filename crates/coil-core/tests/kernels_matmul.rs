//! Matrix kernels: every path of this machine × every weight type × awkward shapes against the
//! references; thread-count and batch independence; get_rows; WeightRef validation; activation
//! quantizers bit-identical to ggml (also on ggml's own reference vectors).

use coil_core::gguf::GgmlType;
use coil_core::kernels::matmul::{
    get_rows, matmul, matmul_canon, matmul_exact, matmul_paths, matmul_ref, WeightRef, MATMUL_TYPES,
};
use coil_core::kernels::vecdot::actq::{self, NatAct};
use coil_core::kernels::vecdot::ActKind;
use coil_core::quant;
use coil_core::threads::ThreadPool;
use coil_core::util::SplitMix64;
use coil_core::ErrorCode;

fn weights(ty: GgmlType, n_rows: usize, n_cols: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed);
    let rb = quant::row_bytes(ty, n_cols).unwrap();
    let mut data = vec![0u8; rb * n_rows];
    for r in 0..n_rows {
        // Rows of different magnitudes, some with an offset (exercises mins), one all zero.
        let scale = [1.0f32, 0.02, 3.0, 0.5][r % 4];
        let off = if r % 3 == 1 { 0.3 } else { 0.0 };
        let vals: Vec<f32> =
            (0..n_cols).map(|_| if r == 5 { 0.0 } else { ((rng.next_f32() * 2.0 - 1.0) + off) * scale }).collect();
        quant::quantize_row(ty, &vals, &mut data[r * rb..(r + 1) * rb]).unwrap();
    }
    data
}

fn activations(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            let v = rng.next_f32() * 2.0 - 1.0;
            // An outlier now and then, and a zero block.
            if i % 97 == 3 {
                v * 20.0
            } else if (i / 32) % 11 == 7 {
                0.0
            } else {
                v
            }
        })
        .collect()
}

/// Σ_c |W[r,c] x[t,c]| per output, where for types with a min (Q4_1, Q5_1, Q4_K, Q5_K) |W| is
/// |scale part| + |min part|: the kernels sum the two separately, so that is the scale of their
/// rounding errors.
fn abs_scale(w: &WeightRef, x: &[f32], n_tokens: usize) -> Vec<f64> {
    let mut row = vec![0f32; w.n_cols];
    let mut s = vec![0f64; n_tokens * w.n_rows];
    let (bb, set_min_sign) = match w.ty {
        GgmlType::Q4_1 => (20, false),
        GgmlType::Q5_1 => (24, false),
        GgmlType::Q4_K => (144, true),
        GgmlType::Q5_K => (176, true),
        _ => (0, false),
    };
    for r in 0..w.n_rows {
        let mut bytes = w.row(r).to_vec();
        if bb > 0 {
            for blk in bytes.chunks_exact_mut(bb) {
                blk[1] &= 0x7F;
                if set_min_sign {
                    blk[3] |= 0x80;
                } else {
                    blk[3] &= 0x7F;
                }
            }
        }
        quant::dequantize_row(w.ty, &bytes, &mut row).unwrap();
        for t in 0..n_tokens {
            s[t * w.n_rows + r] =
                row.iter().zip(&x[t * w.n_cols..(t + 1) * w.n_cols]).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
        }
    }
    s
}

fn col_sizes(ty: GgmlType) -> Vec<usize> {
    match ty.block_size() {
        1 => vec![1, 7, 16, 33, 72, 257],
        // one block, several, a partial 4-block group, 9 blocks, 1024
        32 => vec![32, 96, 160, 288, 1024],
        _ => vec![256, 512, 768],
    }
}

#[test]
fn every_path_and_type_is_bit_identical_to_the_canonical_order() {
    let pool = ThreadPool::new(1);
    for &ty in &MATMUL_TYPES {
        for n_cols in col_sizes(ty) {
            for &n_rows in &[1usize, 3, 7, 17] {
                let data = weights(ty, n_rows, n_cols, 1000 + n_cols as u64 + n_rows as u64);
                let w = WeightRef::new(ty, &data, n_rows, n_cols).unwrap();
                for &n_tokens in &[1usize, 3, 17, 64] {
                    if n_tokens == 64 && n_rows < 7 {
                        continue;
                    }
                    let x = activations(n_tokens * n_cols, 7 + n_tokens as u64);
                    let mut want = vec![0f32; n_rows * n_tokens];
                    matmul_exact(&w, &x, n_tokens, &mut want);
                    let mut canon = vec![0f32; n_rows * n_tokens];
                    matmul_canon(&w, &x, n_tokens, &mut canon);
                    let scale = abs_scale(&w, &x, n_tokens);
                    for p in matmul_paths() {
                        let mut got = vec![f32::NAN; n_rows * n_tokens];
                        p.run(&w, &x, n_tokens, &mut got, &pool);
                        for i in 0..got.len() {
                            // Every path computes the canonical order, bit for bit (that is what
                            // makes native and wasm agree exactly)...
                            assert_eq!(
                                got[i].to_bits(),
                                canon[i].to_bits(),
                                "{ty} {} ({}) {n_rows}x{n_cols} t={n_tokens} [{i}]: {} is not the canonical {}",
                                p.name(),
                                p.used_for(ty),
                                got[i],
                                canon[i]
                            );
                            // ...which differs from ggml's generic order only by the order of the
                            // f32 additions.
                            let tol = 2e-6 * scale[i] + 1e-30;
                            assert!(
                                ((got[i] - want[i]) as f64).abs() <= tol,
                                "{ty} {} ({}) {n_rows}x{n_cols} t={n_tokens} [{i}]: {} vs {} (tol {tol:e})",
                                p.name(),
                                p.used_for(ty),
                                got[i],
                                want[i]
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The exact (ggml) result differs from the f64 reference by the activation quantization error:
/// each activation moves by at most half a quantization step (plus the f16 rounding of the Q8_0 /
/// Q8_1 scale), so |exact − ref| ≤ Σ_blocks (Σ|w|)·step·0.51 + (Q8_1) |m|·|s|·2^-10.
#[test]
fn exact_is_within_the_activation_quantization_bound_of_the_reference() {
    for &ty in &MATMUL_TYPES {
        for n_cols in col_sizes(ty) {
            let n_rows = 9;
            let n_tokens = 3;
            let data = weights(ty, n_rows, n_cols, 77);
            let w = WeightRef::new(ty, &data, n_rows, n_cols).unwrap();
            let x = activations(n_tokens * n_cols, 5);
            let mut exact = vec![0f32; n_rows * n_tokens];
            let mut refr = vec![0f32; n_rows * n_tokens];
            matmul_exact(&w, &x, n_tokens, &mut exact);
            matmul_ref(&w, &x, n_tokens, &mut refr);
            let scale = abs_scale(&w, &x, n_tokens);
            let bs = match ty {
                GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => 256,
                GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 0,
                _ => 32,
            };
            let mut row = vec![0f32; n_cols];
            for r in 0..n_rows {
                quant::dequantize_row(ty, w.row(r), &mut row).unwrap();
                for t in 0..n_tokens {
                    let xt = &x[t * n_cols..(t + 1) * n_cols];
                    let mut bound = 1e-6 * scale[t * n_rows + r];
                    if let Some(nb) = n_cols.checked_div(bs) {
                        for b in 0..nb {
                            let xb = &xt[b * bs..(b + 1) * bs];
                            let wb = &row[b * bs..(b + 1) * bs];
                            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                            let step = amax / 127.0;
                            let wsum: f64 = wb.iter().map(|v| v.abs() as f64).sum();
                            bound += wsum * step * 0.51 + wsum * step * 127.0 * 2f64.powi(-11);
                            if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                                bound += (wsum / bs as f64 + 1.0) * step * 127.0 * bs as f64 * 2f64.powi(-10);
                            }
                        }
                    }
                    let i = t * n_rows + r;
                    let d = (exact[i] as f64 - refr[i] as f64).abs();
                    assert!(
                        d <= bound,
                        "{ty} {n_cols} [{r},{t}]: exact {} ref {} diff {d:e} > {bound:e}",
                        exact[i],
                        refr[i]
                    );
                }
            }
        }
    }
}

#[test]
fn thread_counts_give_identical_results() {
    let pools: Vec<ThreadPool> = [1usize, 2, 3].iter().map(|&n| ThreadPool::new(n)).collect();
    for &ty in &MATMUL_TYPES {
        let n_cols = if ty.block_size() == 256 { 512 } else { 288 };
        let n_rows = 301;
        let data = weights(ty, n_rows, n_cols, 3);
        let w = WeightRef::new(ty, &data, n_rows, n_cols).unwrap();
        for &n_tokens in &[1usize, 20] {
            let x = activations(n_tokens * n_cols, 11);
            for p in matmul_paths() {
                let mut first: Option<Vec<f32>> = None;
                for pool in &pools {
                    let mut out = vec![0f32; n_rows * n_tokens];
                    p.run(&w, &x, n_tokens, &mut out, pool);
                    match &first {
                        None => first = Some(out),
                        Some(f) => assert!(
                            f.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{ty} {} {} threads differs",
                            p.name(),
                            pool.n_threads()
                        ),
                    }
                }
            }
        }
    }
}

#[test]
fn a_token_gives_the_same_result_alone_or_in_a_batch() {
    let pool = ThreadPool::new(2);
    for &ty in &MATMUL_TYPES {
        let n_cols = if ty.block_size() == 256 { 256 } else { 96 };
        let n_rows = 37;
        let n_tokens = 19;
        let data = weights(ty, n_rows, n_cols, 9);
        let w = WeightRef::new(ty, &data, n_rows, n_cols).unwrap();
        let x = activations(n_tokens * n_cols, 13);
        for p in matmul_paths() {
            let mut batch = vec![0f32; n_rows * n_tokens];
            p.run(&w, &x, n_tokens, &mut batch, &pool);
            for t in 0..n_tokens {
                let mut one = vec![0f32; n_rows];
                p.run(&w, &x[t * n_cols..(t + 1) * n_cols], 1, &mut one, &pool);
                assert!(
                    one.iter().zip(&batch[t * n_rows..(t + 1) * n_rows]).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{ty} {} token {t}",
                    p.name()
                );
            }
        }
    }
}

/// `COIL_EXPECT_MATMUL_PATHS` (e.g. `scalar,neon,neon-dotprod`; scripts/test-aarch64.sh sets it for
/// each emulated CPU) must be exactly the paths this machine offers: the tests above then surely
/// covered them, rather than passing because a path silently went missing.
#[test]
fn the_expected_paths_are_present() {
    if let Ok(want) = std::env::var("COIL_EXPECT_MATMUL_PATHS") {
        let got: Vec<&str> = matmul_paths().iter().map(|p| p.name()).collect();
        assert_eq!(got.join(","), want);
    }
}

/// The NEON paths (with and without `sdot`) put the same integers in the same lanes and do the
/// same float operations: identical results, bit for bit, for every type and tile shape.
#[cfg(target_arch = "aarch64")]
#[test]
fn neon_paths_are_bit_identical() {
    let pool = ThreadPool::new(2);
    let paths: Vec<_> = matmul_paths().into_iter().filter(|p| p.name().starts_with("neon")).collect();
    assert!(!paths.is_empty());
    for &ty in &MATMUL_TYPES {
        for n_cols in col_sizes(ty) {
            let n_rows = 13;
            let data = weights(ty, n_rows, n_cols, 31 + n_cols as u64);
            let w = WeightRef::new(ty, &data, n_rows, n_cols).unwrap();
            for &n_tokens in &[1usize, 6] {
                let x = activations(n_tokens * n_cols, 17 + n_tokens as u64);
                let mut first: Option<Vec<f32>> = None;
                for p in &paths {
                    let mut out = vec![f32::NAN; n_rows * n_tokens];
                    p.run(&w, &x, n_tokens, &mut out, &pool);
                    match &first {
                        None => first = Some(out),
                        Some(f) => assert!(
                            f.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()),
                            "{ty} {n_cols} t={n_tokens}: {} differs from {}",
                            p.name(),
                            paths[0].name()
                        ),
                    }
                }
            }
        }
    }
}

#[test]
fn matmul_uses_the_best_path_and_handles_empty_inputs() {
    let pool = ThreadPool::new(2);
    let data = weights(GgmlType::Q4_K, 4, 256, 1);
    let w = WeightRef::new(GgmlType::Q4_K, &data, 4, 256).unwrap();
    let x = activations(256 * 2, 1);
    let mut a = vec![0f32; 8];
    let mut b = vec![0f32; 8];
    matmul(&w, &x, 2, &mut a, &pool);
    matmul_paths().last().unwrap().run(&w, &x, 2, &mut b, &pool);
    assert_eq!(a, b);
    matmul(&w, &x, 0, &mut [], &pool);
    let empty = WeightRef::new(GgmlType::F32, &[], 0, 16).unwrap();
    matmul(&empty, &x[..32], 2, &mut [], &pool);
    let zero_cols = WeightRef::new(GgmlType::F32, &[], 3, 0).unwrap();
    let mut o = vec![1f32; 6];
    matmul(&zero_cols, &[], 2, &mut o, &pool);
    assert_eq!(o, vec![0f32; 6]);
}

#[test]
fn get_rows_matches_dequantize_row() {
    for &ty in &MATMUL_TYPES {
        let n_cols = if ty.block_size() == 256 { 512 } else { 64 };
        let n_rows = 11;
        let data = weights(ty, n_rows, n_cols, 21);
        let w = WeightRef::new(ty, &data, n_rows, n_cols).unwrap();
        let ids = [3u32, 0, 10, 3, 7];
        let mut out = vec![0f32; ids.len() * n_cols];
        get_rows(&w, &ids, &mut out).unwrap();
        for (i, &id) in ids.iter().enumerate() {
            let mut want = vec![0f32; n_cols];
            quant::dequantize_row(ty, w.row(id as usize), &mut want).unwrap();
            assert_eq!(&out[i * n_cols..(i + 1) * n_cols], &want[..], "{ty} id {id}");
        }
        let e = get_rows(&w, &[11], &mut out[..n_cols]).unwrap_err();
        assert_eq!(e.code, ErrorCode::TokenOutOfRange);
        let e = get_rows(&w, &[u32::MAX], &mut out[..n_cols]).unwrap_err();
        assert_eq!(e.code, ErrorCode::TokenOutOfRange);
        let e = get_rows(&w, &[1, 2], &mut out[..n_cols]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        get_rows(&w, &[], &mut []).unwrap();
    }
}

#[test]
fn weight_ref_rejects_bad_shapes() {
    let d = vec![0u8; 18 * 4];
    assert!(WeightRef::new(GgmlType::Q4_0, &d, 2, 64).is_ok());
    assert_eq!(WeightRef::new(GgmlType::Q4_0, &d, 2, 48).unwrap_err().code, ErrorCode::BadTensorShape);
    assert_eq!(WeightRef::new(GgmlType::Q4_0, &d, 3, 64).unwrap_err().code, ErrorCode::BadTensorShape);
    assert_eq!(WeightRef::new(GgmlType::Q4_0, &d[1..], 2, 64).unwrap_err().code, ErrorCode::BadTensorShape);
    assert_eq!(WeightRef::new(GgmlType::Q4_0, &d, usize::MAX, 64).unwrap_err().code, ErrorCode::BadTensorShape);
    assert_eq!(WeightRef::new(GgmlType::Q4_K, &d, 1, 128).unwrap_err().code, ErrorCode::BadTensorShape);
    for ty in
        [GgmlType::Q8_1, GgmlType::Q8_K, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::IQ4_NL, GgmlType::I8, GgmlType::F64]
    {
        assert_eq!(WeightRef::new(ty, &d, 1, 32).unwrap_err().code, ErrorCode::UnsupportedType, "{ty}");
    }
    let f = vec![0u8; 4 * 6];
    let w = WeightRef::new(GgmlType::F32, &f, 3, 2).unwrap();
    assert_eq!(w.row_bytes(), 8);
    let sub = w.rows(1, 2).unwrap();
    assert_eq!((sub.n_rows, sub.data.len()), (2, 16));
    assert!(w.rows(2, 2).is_err());
    assert!(w.rows(usize::MAX, 2).is_err());
    assert!(w.rows(3, 0).is_ok());
}

#[test]
fn expert_slices_are_weight_refs() {
    // A stacked [experts][rows][cols] tensor: expert e is rows e*R..(e+1)*R.
    let (e, r, c) = (3usize, 5usize, 64usize);
    let data = weights(GgmlType::Q8_0, e * r, c, 4);
    let all = WeightRef::new(GgmlType::Q8_0, &data, e * r, c).unwrap();
    let x = activations(c, 2);
    let pool = ThreadPool::new(1);
    let mut full = vec![0f32; e * r];
    matmul(&all, &x, 1, &mut full, &pool);
    for k in 0..e {
        let ex = all.rows(k * r, r).unwrap();
        let mut o = vec![0f32; r];
        matmul(&ex, &x, 1, &mut o, &pool);
        assert_eq!(&o[..], &full[k * r..(k + 1) * r]);
    }
}

fn kinds() -> [(ActKind, GgmlType, usize); 3] {
    [(ActKind::Q8_0, GgmlType::Q8_0, 32), (ActKind::Q8_1, GgmlType::Q8_1, 32), (ActKind::Q8K, GgmlType::Q8_K, 256)]
}

fn check_quantizers(kind: ActKind, aty: GgmlType, x: &[f32], label: &str) {
    let mut want = vec![0u8; quant::row_bytes(aty, x.len()).unwrap()];
    quant::quantize_row(aty, x, &mut want).unwrap();
    for (name, f) in actq::quantize_paths() {
        let mut a = NatAct::default();
        f(kind, x, &mut a);
        let got = a.to_blocks(kind);
        if got != want {
            let i = got.iter().zip(&want).position(|(a, b)| a != b).unwrap();
            panic!("{aty} {name} {label}: first difference at byte {i}: {} vs {}", got[i], want[i]);
        }
    }
}

#[test]
fn activation_quantizers_are_bit_identical_to_the_reference() {
    let mut rng = SplitMix64::new(99);
    for (kind, aty, bs) in kinds() {
        for n_blocks in [1usize, 2, 5] {
            let n = bs * n_blocks;
            for scale in [1.0f32, 1e-3, 300.0, 1e-20, 3e4] {
                let x: Vec<f32> = (0..n).map(|_| (rng.next_f32() * 2.0 - 1.0) * scale).collect();
                check_quantizers(kind, aty, &x, &format!("random x{scale}"));
            }
            // Exact rounding ties (x·id = k + 0.5) for both rounding rules.
            let ties: Vec<f32> =
                (0..n).map(|i| if i % bs == 0 { 127.0 } else { ((i % 255) as f32 - 127.0) * 0.5 }).collect();
            check_quantizers(kind, aty, &ties, "ties");
            let neg: Vec<f32> =
                (0..n).map(|i| if i % bs == 3 { -127.0 } else { ((i % 101) as f32 - 50.0) * 0.5 }).collect();
            check_quantizers(kind, aty, &neg, "ties, negative max");
            check_quantizers(kind, aty, &vec![0f32; n], "zeros");
            check_quantizers(kind, aty, &vec![-0.0f32; n], "negative zeros");
            // Equal magnitudes of both signs: the first one decides the sign of the Q8_K scale.
            let pm: Vec<f32> = (0..n)
                .map(|i| {
                    if i % 7 == 0 {
                        -2.0
                    } else if i % 7 == 3 {
                        2.0
                    } else {
                        0.5
                    }
                })
                .collect();
            check_quantizers(kind, aty, &pm, "+-max");
            // Subnormal blocks (the reciprocal scale overflows) next to normal ones.
            let sub: Vec<f32> = (0..n).map(|i| if (i / bs) % 2 == 0 { 1e-39 * (i % 3) as f32 } else { 1.0 }).collect();
            check_quantizers(kind, aty, &sub, "subnormals");
            let huge: Vec<f32> = (0..n).map(|i| (i as f32 - 20.0) * 1e30).collect();
            check_quantizers(kind, aty, &huge, "huge");
        }
    }
}

/// ggml's own vectors (tests/fixtures/quant/q8_0.bin, q8_1.bin, q8_k.bin, made by the C code).
#[test]
fn activation_quantizers_match_ggml_reference_vectors() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quant");
    for (kind, aty, _) in kinds() {
        let data = std::fs::read(dir.join(format!("{}.bin", aty.name().to_lowercase()))).unwrap();
        let mut p = &data[..];
        let mut take = |n: usize| {
            let (a, b) = p.split_at(n);
            p = b;
            a
        };
        assert_eq!(take(4), b"CQV1");
        assert_eq!(u32::from_le_bytes(take(4).try_into().unwrap()), aty.id());
        let n_cases = u32::from_le_bytes(take(4).try_into().unwrap());
        for _ in 0..n_cases {
            let len = take(1)[0] as usize;
            let name = String::from_utf8(take(len).to_vec()).unwrap();
            let nx = u32::from_le_bytes(take(4).try_into().unwrap()) as usize;
            let x: Vec<f32> = take(4 * nx).chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            let nq = u32::from_le_bytes(take(4).try_into().unwrap()) as usize;
            let q = take(nq).to_vec();
            take(1 + 8);
            for (pname, f) in actq::quantize_paths() {
                let mut a = NatAct::default();
                f(kind, &x, &mut a);
                assert_eq!(a.to_blocks(kind), q, "{aty} {pname} case {name}");
            }
        }
    }
}
