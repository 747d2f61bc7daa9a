//! llama-quantize's type selection: which tensors are quantized, row-length fallbacks, the
//! output / tied-embedding rule and the file types.

use coil_core::gguf::{GgmlType, GgufValue, GgufWriter, MappedGguf};
use coil_core::quant::rules::{ggml_n_dims, quantization_blocker};
use coil_core::quant::{
    fallback_type, llama_ftype_for, quantize_gguf, quantize_gguf_with, tensor_allows_quantization, QuantOptions,
    QuantTarget, TensorDecision,
};

#[test]
fn quantizable_tensors() {
    for name in [
        "token_embd.weight",
        "output.weight",
        "blk.0.ssm_in.weight",
        "blk.0.ssm_x.weight",
        "blk.0.ssm_dt.weight",
        "blk.0.ssm_out.weight",
        "blk.1.attn_q.weight",
        "blk.1.ffn_down_exps.weight",
    ] {
        assert!(tensor_allows_quantization(name, 2), "{name}");
        assert!(!tensor_allows_quantization(name, 1), "{name} as 1-D");
    }
    for name in [
        "output_norm.weight",
        "blk.0.attn_norm.weight",
        "blk.0.ssm_norm.weight",
        "blk.0.ssm_dt_norm.weight",
        "blk.1.ffn_norm.weight",
        "blk.0.ssm_conv1d.weight",
        "blk.1.ffn_gate_inp.weight",
        "blk.0.ssm_a",
        "blk.0.ssm_d",
        "blk.0.ssm_dt.bias",
        "blk.0.ssm_conv1d.bias",
        "position_embd.weight",
        "token_types.weight",
        "blk.0.time_mix_w1.weight",
        "blk.0.attn_rel_b.weight",
    ] {
        assert!(!tensor_allows_quantization(name, 2), "{name}");
        assert!(quantization_blocker(name, 2).is_some());
    }
    // Trailing 1s do not count as dimensions (ggml_n_dims).
    assert_eq!(ggml_n_dims(&[4096, 1, 1]), 1);
    assert_eq!(ggml_n_dims(&[1, 4096]), 2);
    assert_eq!(ggml_n_dims(&[64, 8, 4]), 3);
}

#[test]
fn row_length_fallbacks() {
    use GgmlType::*;
    // Row length 48: no 256- or 32-block type fits -> F16.
    for t in [Q4_K, Q5_K, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0] {
        assert_eq!(fallback_type(t, 48), F16, "{t}");
    }
    // Multiples of 32 but not 256: the 32-block partner.
    assert_eq!(fallback_type(Q4_K, 96), Q5_0);
    assert_eq!(fallback_type(Q5_K, 96), Q5_1);
    assert_eq!(fallback_type(Q6_K, 96), Q8_0);
    assert_eq!(fallback_type(Q4_K, 64), Q5_0);
    // Fits: unchanged.
    for t in [Q4_K, Q5_K, Q6_K, Q4_0, Q8_0] {
        assert_eq!(fallback_type(t, 4096), t);
    }
    assert_eq!(fallback_type(Q4_0, 96), Q4_0);
    assert_eq!(fallback_type(F16, 7), F16);
    assert_eq!(fallback_type(BF16, 7), BF16);
}

#[test]
fn file_types() {
    let want = [
        (GgmlType::F32, 0),
        (GgmlType::F16, 1),
        (GgmlType::Q4_0, 2),
        (GgmlType::Q4_1, 3),
        (GgmlType::Q8_0, 7),
        (GgmlType::Q5_0, 8),
        (GgmlType::Q5_1, 9),
        (GgmlType::Q4_K, 14),
        (GgmlType::Q5_K, 16),
        (GgmlType::Q6_K, 18),
        (GgmlType::BF16, 32),
    ];
    for (t, ft) in want {
        assert_eq!(llama_ftype_for(t), Some(ft), "{t}");
        assert_eq!(QuantTarget::from_type(t).unwrap().default_type(), t);
    }
    assert_eq!(llama_ftype_for(GgmlType::Q8_K), None);
    assert_eq!(llama_ftype_for(GgmlType::Q8_1), None);
    assert_eq!(QuantTarget::Q4_K_M.ftype(), 15);
    assert_eq!(QuantTarget::Q5_K_M.ftype(), 17);
}

fn f32_bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n)
        .flat_map(|i| ((((i as u32).wrapping_mul(2654435761u32) ^ seed) % 1000) as f32 / 500.0 - 1.0).to_le_bytes())
        .collect()
}

/// A GGUF with tensors whose rows need fallbacks, written to a temp dir.
fn fallback_model(dir: &std::path::Path) -> std::path::PathBuf {
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", GgufValue::from("mamba"));
    w.add_metadata("mamba.block_count", GgufValue::U32(1));
    let t = GgmlType::F32.id();
    w.add_tensor("blk.0.ssm_x.weight", vec![48, 8], t, f32_bytes(48 * 8, 1)).unwrap();
    w.add_tensor("blk.0.ssm_out.weight", vec![96, 4], t, f32_bytes(96 * 4, 2)).unwrap();
    w.add_tensor("blk.0.ssm_in.weight", vec![512, 4], t, f32_bytes(512 * 4, 3)).unwrap();
    w.add_tensor("blk.0.attn_norm.weight", vec![512], t, f32_bytes(512, 4)).unwrap();
    w.add_tensor("blk.0.ssm_dt.weight", vec![256, 1], t, f32_bytes(256, 5)).unwrap();
    w.add_tensor("token_embd.weight", vec![512, 2], t, f32_bytes(1024, 6)).unwrap();
    w.add_tensor("output.weight", vec![512, 2], t, f32_bytes(1024, 7)).unwrap();
    let p = dir.join("fallback.gguf");
    std::fs::write(&p, w.to_bytes().unwrap()).unwrap();
    p
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("coil-quant-rules-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn fallbacks_in_a_file() {
    let dir = tmpdir("fallback");
    let input = fallback_model(&dir);
    let out = dir.join("q4k.gguf");
    let report = quantize_gguf(&input, &out, GgmlType::Q4_K, &mut |_| true).unwrap();
    let m = MappedGguf::open(&out).unwrap();
    let ty = |n: &str| m.file.tensor(n).unwrap().ggml_type.unwrap();
    assert_eq!(ty("blk.0.ssm_x.weight"), GgmlType::F16); // 48: nothing fits
    assert_eq!(ty("blk.0.ssm_out.weight"), GgmlType::Q5_0); // 96: Q4_K -> Q5_0
    assert_eq!(ty("blk.0.ssm_in.weight"), GgmlType::Q4_K); // 512 fits
    assert_eq!(ty("blk.0.attn_norm.weight"), GgmlType::F32); // norm
    assert_eq!(ty("blk.0.ssm_dt.weight"), GgmlType::F32); // [256, 1] is 1-D for ggml
    assert_eq!(m.file.tensor("blk.0.ssm_dt.weight").unwrap().dims, vec![256]); // written as ggml does
    assert_eq!(ty("output.weight"), GgmlType::Q6_K); // output rule
    assert_eq!(ty("token_embd.weight"), GgmlType::Q4_K); // not tied: the default type
    assert_eq!(m.file.get_u64("general.file_type"), Some(14));
    assert_eq!(report.n_fallback, 2);
    let r = |n: &str| report.tensors.iter().find(|t| t.name == n).unwrap();
    assert_eq!(r("blk.0.ssm_x.weight").decision, TensorDecision::Fallback { wanted: GgmlType::Q4_K, rule: None });
    assert!(r("blk.0.ssm_x.weight").reason().unwrap().contains("row length 48"));
    assert!(matches!(r("output.weight").decision, TensorDecision::Rule(_)));
    assert!(matches!(r("blk.0.attn_norm.weight").decision, TensorDecision::NotQuantizable(_)));
    assert_eq!(r("blk.0.ssm_in.weight").reason(), None);

    // Q8_0: the output rule keeps Q8_0; --pure gives output the default type.
    let out8 = dir.join("q8.gguf");
    quantize_gguf(&input, &out8, GgmlType::Q8_0, &mut |_| true).unwrap();
    let m8 = MappedGguf::open(&out8).unwrap();
    assert_eq!(m8.file.tensor("output.weight").unwrap().ggml_type, Some(GgmlType::Q8_0));
    assert_eq!(m8.file.tensor("blk.0.ssm_x.weight").unwrap().ggml_type, Some(GgmlType::F16));
    let outp = dir.join("q4_0-pure.gguf");
    let opts = QuantOptions { target: QuantTarget::Q4_0, pure: true, threads: 1 };
    quantize_gguf_with(&input, &outp, &opts, &mut |_| true).unwrap();
    let mp = MappedGguf::open(&outp).unwrap();
    assert_eq!(mp.file.tensor("output.weight").unwrap().ggml_type, Some(GgmlType::Q4_0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tied_embeddings_follow_the_output_rule() {
    let dir = tmpdir("tied");
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", GgufValue::from("mamba"));
    w.add_tensor("token_embd.weight", vec![256, 4], GgmlType::F32.id(), f32_bytes(1024, 9)).unwrap();
    w.add_tensor("blk.0.ssm_in.weight", vec![256, 4], GgmlType::F32.id(), f32_bytes(1024, 8)).unwrap();
    let input = dir.join("tied.gguf");
    std::fs::write(&input, w.to_bytes().unwrap()).unwrap();
    for (t, embd, other) in [
        (GgmlType::Q4_0, GgmlType::Q6_K, GgmlType::Q4_0),
        (GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q4_K),
        (GgmlType::Q8_0, GgmlType::Q8_0, GgmlType::Q8_0),
        (GgmlType::Q6_K, GgmlType::Q6_K, GgmlType::Q6_K),
        (GgmlType::F16, GgmlType::F16, GgmlType::F16),
    ] {
        let out = dir.join(format!("{t}.gguf"));
        quantize_gguf(&input, &out, t, &mut |_| true).unwrap();
        let m = MappedGguf::open(&out).unwrap();
        assert_eq!(m.file.tensor("token_embd.weight").unwrap().ggml_type, Some(embd), "{t}");
        assert_eq!(m.file.tensor("blk.0.ssm_in.weight").unwrap().ggml_type, Some(other), "{t}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
