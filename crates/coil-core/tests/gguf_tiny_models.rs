//! The tiny model fixtures (tests/fixtures/models, written by examples/make_tiny_models.rs): they
//! are up to date, follow llama.cpp's tensor names, shapes and types, and inspect as expected.

use std::collections::BTreeMap;
use std::path::PathBuf;

use coil_core::gguf::inspect::{inspect_json, layer_layout, InspectOptions};
use coil_core::gguf::{GgmlType, GgufFile, GgufWriter, MappedGguf};
use serde_json::{json, Value};

#[allow(dead_code)]
#[path = "../examples/make_tiny_models.rs"]
mod make_tiny_models;

fn path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

fn load(name: &str) -> (Vec<u8>, GgufFile) {
    let b = std::fs::read(path(name)).unwrap();
    let f = GgufFile::parse(&b, b.len() as u64).unwrap();
    (b, f)
}

fn summary(f: &GgufFile) -> Value {
    let v: Value = serde_json::from_str(&inspect_json(f, &InspectOptions { array_head: Some(16) })).unwrap();
    v["summary"].clone()
}

#[test]
fn fixtures_are_what_the_generator_writes() {
    for (name, bytes) in make_tiny_models::all_models() {
        let on_disk = std::fs::read(path(name)).unwrap();
        assert!(
            on_disk == bytes,
            "{name} is stale: run `cargo run -p coil-core --example make_tiny_models -- tests/fixtures/models`"
        );
        assert!(bytes.len() < 300 * 1024, "{name}: {} bytes", bytes.len());
        // canonical: the writer reproduces it from the parsed file
        let f = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
        assert_eq!(GgufWriter::from_file(&f, &bytes).unwrap().to_bytes().unwrap(), bytes);
    }
}

#[test]
fn f16_conversion() {
    use make_tiny_models::f16_bits;
    assert_eq!(f16_bits(0.0), 0x0000);
    assert_eq!(f16_bits(-0.0), 0x8000);
    assert_eq!(f16_bits(1.0), 0x3c00);
    assert_eq!(f16_bits(-2.0), 0xc000);
    assert_eq!(f16_bits(0.1), 0x2e66);
    assert_eq!(f16_bits(65504.0), 0x7bff);
    assert_eq!(f16_bits(65520.0), 0x7c00); // rounds up to infinity
    assert_eq!(f16_bits(1e10), 0x7c00);
    assert_eq!(f16_bits(f32::INFINITY), 0x7c00);
    assert_eq!(f16_bits(f32::NAN) & 0x7e00, 0x7e00);
    assert_eq!(f16_bits(6.103_515_6e-5), 0x0400); // smallest normal
    assert_eq!(f16_bits(5.960_464_5e-8), 0x0001); // smallest subnormal
    assert_eq!(f16_bits(2.0e-8), 0x0000);
    assert_eq!(f16_bits(1.0 + 1.0 / 2048.0), 0x3c00); // tie to even (down)
    assert_eq!(f16_bits(1.0 + 3.0 / 2048.0), 0x3c02); // tie to even (up)
}

#[test]
fn byte_level_vocab() {
    let t = make_tiny_models::byte_to_unicode();
    assert_eq!(t[b'!' as usize], '!');
    assert_eq!(t[b' ' as usize], 'Ġ');
    assert_eq!(t[b'\n' as usize], 'Ċ');
    assert_eq!(t[0], 'Ā');
    assert_eq!(t[0xad], 'Ń');
    let distinct: std::collections::HashSet<char> = t.iter().copied().collect();
    assert_eq!(distinct.len(), 256);
}

/// (name, ggml shape, type) for every tensor, as llama.cpp's `load_arch_tensors` expects them.
fn shapes(f: &GgufFile) -> BTreeMap<String, (Vec<u64>, GgmlType)> {
    f.tensors.iter().map(|t| (t.name.clone(), (t.dims.clone(), t.ggml_type.unwrap()))).collect()
}

fn expect_tensors(f: &GgufFile, want: &[(String, Vec<u64>, GgmlType)]) {
    let got = shapes(f);
    let want: BTreeMap<String, (Vec<u64>, GgmlType)> =
        want.iter().map(|(n, d, t)| (n.clone(), (d.clone(), *t))).collect();
    assert_eq!(got, want);
}

const F32: GgmlType = GgmlType::F32;
const F16: GgmlType = GgmlType::F16;

fn mamba1_layer(i: u32, d: u64, e: u64, n: u64, r: u64, k: u64) -> Vec<(String, Vec<u64>, GgmlType)> {
    let p = |s: &str| format!("blk.{i}.{s}");
    vec![
        (p("ssm_in.weight"), vec![d, 2 * e], F16),
        (p("ssm_conv1d.weight"), vec![k, e], F32),
        (p("ssm_conv1d.bias"), vec![e], F32),
        (p("ssm_x.weight"), vec![e, r + 2 * n], F16),
        (p("ssm_dt.weight"), vec![r, e], F16),
        (p("ssm_dt.bias"), vec![e], F32),
        (p("ssm_a"), vec![n, e], F32),
        (p("ssm_d"), vec![e], F32),
        (p("ssm_out.weight"), vec![e, d], F16),
    ]
}

#[test]
fn tiny_mamba() {
    let (b, f) = load("tiny-mamba.gguf");
    assert_eq!(f.architecture(), Some("mamba"));
    assert_eq!(f.get_str("general.name"), Some("coil tiny mamba (random weights)"));
    assert_eq!(f.get_u64("general.file_type"), Some(1));
    assert_eq!(f.get_u64("mamba.embedding_length"), Some(64));
    assert_eq!(f.get_u64("mamba.ssm.inner_size"), Some(128));
    assert_eq!(f.get_bool("mamba.ssm.dt_b_c_rms"), Some(false));
    let mut want =
        vec![("token_embd.weight".to_string(), vec![64, 256], F16), ("output_norm.weight".to_string(), vec![64], F32)];
    for i in 0..2 {
        want.push((format!("blk.{i}.attn_norm.weight"), vec![64], F32));
        want.extend(mamba1_layer(i, 64, 128, 16, 4, 4));
    }
    expect_tensors(&f, &want);
    assert!(f.tensor("output.weight").is_none(), "tied output");
    // A = -exp(A_log) is stored negated
    let m = MappedGguf::open(&path("tiny-mamba.gguf")).unwrap();
    let a = m.tensor_data(f.tensor("blk.0.ssm_a").unwrap()).unwrap();
    let a0: Vec<f32> = a[..64].chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(a0, (1..=16).map(|j| -(j as f32)).collect::<Vec<_>>());
    assert_eq!(m.bytes(), &b[..]);

    let s = summary(&f);
    assert_eq!(s["architecture"], "mamba");
    assert_eq!(s["name"], "coil tiny mamba (random weights)");
    assert_eq!(s["context_length"], 1 << 20);
    assert_eq!(s["embedding_length"], 64);
    assert_eq!(s["block_count"], 2);
    assert_eq!(s["layers"], json!([{"index":0,"kind":"ssm","ffn":"none"},{"index":1,"kind":"ssm","ffn":"none"}]));
    assert_eq!(s["ssm"], json!({"d_conv":4,"d_inner":128,"d_state":16,"dt_rank":4,"n_group":null}));
    // per layer: (4-1)*128 conv floats + 16*128 ssm floats, 4 bytes each
    assert_eq!(s["recurrent_state_bytes_per_sequence"], 2 * (3 * 128 + 16 * 128) * 4);
    assert_eq!(s["tokenizer"], json!({"model":"gpt2","vocab_size":256,"pre":"default"}));
    assert_eq!(s["tensor_types"], json!({"F32": 13, "F16": 9}));
    assert_eq!(s["unknown_type_ids"], json!([]));
    let params: u64 = f.tensors.iter().map(|t| t.n_elements()).sum();
    assert_eq!(s["parameters"], params);
}

#[test]
fn tiny_mamba2() {
    let (_, f) = load("tiny-mamba2.gguf");
    assert_eq!(f.architecture(), Some("mamba2"));
    let (d, e, n, k, g, h) = (64u64, 128u64, 16u64, 4u64, 2u64, 8u64);
    assert_eq!(f.get_u64("mamba2.ssm.time_step_rank"), Some(h));
    assert_eq!(f.get_u64("mamba2.ssm.group_count"), Some(g));
    let mut want = vec![
        ("token_embd.weight".to_string(), vec![d, 256], F16),
        ("output_norm.weight".to_string(), vec![d], F32),
        ("output.weight".to_string(), vec![d, 256], F16),
    ];
    for i in 0..2 {
        let p = |s: &str| format!("blk.{i}.{s}");
        want.extend([
            (p("attn_norm.weight"), vec![d], F32),
            (p("ssm_in.weight"), vec![d, 2 * e + 2 * g * n + h], F16),
            (p("ssm_conv1d.weight"), vec![k, e + 2 * g * n], F32),
            (p("ssm_conv1d.bias"), vec![e + 2 * g * n], F32),
            (p("ssm_dt.bias"), vec![h], F32),
            (p("ssm_a"), vec![1, h], F32),
            (p("ssm_d"), vec![1, h], F32),
            (p("ssm_norm.weight"), vec![e / g, g], F32),
            (p("ssm_out.weight"), vec![e, d], F16),
        ]);
    }
    expect_tensors(&f, &want);
    let s = summary(&f);
    assert_eq!(s["layers"], json!([{"index":0,"kind":"ssm","ffn":"none"},{"index":1,"kind":"ssm","ffn":"none"}]));
    assert_eq!(s["ssm"], json!({"d_conv":4,"d_inner":128,"d_state":16,"dt_rank":8,"n_group":2}));
    assert_eq!(s["recurrent_state_bytes_per_sequence"], 2 * (3 * (128 + 2 * 2 * 16) + 16 * 128) * 4);
}

#[test]
fn tiny_jamba() {
    let (_, f) = load("tiny-jamba.gguf");
    assert_eq!(f.architecture(), Some("jamba"));
    let (d, e, n, k, r, n_ff, n_exp) = (32u64, 64u64, 16u64, 4u64, 2u64, 64u64, 4u64);
    assert_eq!(f.get_array("jamba.attention.head_count_kv").unwrap().to_i64_vec(), Some(vec![0, 2, 0, 0]));
    assert_eq!(f.get_u64("jamba.attention.head_count"), Some(4));
    assert_eq!(f.get_u64("jamba.expert_count"), Some(4));
    assert_eq!(f.get_u64("jamba.expert_used_count"), Some(2));
    assert_eq!(f.get_u64("jamba.feed_forward_length"), Some(n_ff));
    let eps = f.get_f64("jamba.attention.layer_norm_rms_epsilon").unwrap();
    assert!((eps - 1e-6).abs() < 1e-12);
    let mut want = vec![
        ("token_embd.weight".to_string(), vec![d, 256], F16),
        ("output_norm.weight".to_string(), vec![d], F32),
        ("output.weight".to_string(), vec![d, 256], F16),
    ];
    for i in 0..4u32 {
        let p = |s: &str| format!("blk.{i}.{s}");
        want.push((p("attn_norm.weight"), vec![d], F32));
        want.push((p("ffn_norm.weight"), vec![d], F32));
        if i == 1 {
            let gqa = d / 4 * 2;
            want.extend([
                (p("attn_q.weight"), vec![d, d], F16),
                (p("attn_k.weight"), vec![d, gqa], F16),
                (p("attn_v.weight"), vec![d, gqa], F16),
                (p("attn_output.weight"), vec![d, d], F16),
            ]);
        } else {
            want.extend(mamba1_layer(i, d, e, n, r, k));
            want.extend([
                (p("ssm_dt_norm.weight"), vec![r], F32),
                (p("ssm_b_norm.weight"), vec![n], F32),
                (p("ssm_c_norm.weight"), vec![n], F32),
            ]);
        }
        if i == 1 || i == 3 {
            want.extend([
                (p("ffn_gate_inp.weight"), vec![d, n_exp], F32),
                (p("ffn_gate_exps.weight"), vec![d, n_ff, n_exp], F16),
                (p("ffn_up_exps.weight"), vec![d, n_ff, n_exp], F16),
                (p("ffn_down_exps.weight"), vec![n_ff, d, n_exp], F16),
            ]);
        } else {
            want.extend([
                (p("ffn_gate.weight"), vec![d, n_ff], F16),
                (p("ffn_up.weight"), vec![d, n_ff], F16),
                (p("ffn_down.weight"), vec![n_ff, d], F16),
            ]);
        }
    }
    expect_tensors(&f, &want);

    let s = summary(&f);
    assert_eq!(
        s["layers"],
        json!([
            {"index":0,"kind":"ssm","ffn":"dense"},
            {"index":1,"kind":"attention","ffn":"moe"},
            {"index":2,"kind":"ssm","ffn":"dense"},
            {"index":3,"kind":"ssm","ffn":"moe"}
        ])
    );
    assert_eq!(s["ssm"], json!({"d_conv":4,"d_inner":64,"d_state":16,"dt_rank":2,"n_group":null}));
    assert_eq!(s["recurrent_state_bytes_per_sequence"], 3 * (3 * 64 + 16 * 64) * 4);
    assert_eq!(s["block_count"], 4);
    assert_eq!(s["context_length"], 4096);
    let layers = layer_layout(&f);
    assert_eq!(layers.iter().filter(|l| l.kind == "ssm").count(), 3);
}

#[test]
fn inspect_json_shape() {
    let (_, f) = load("tiny-jamba.gguf");
    let full: Value = serde_json::from_str(&inspect_json(&f, &InspectOptions::default())).unwrap();
    assert_eq!(full["version"], 3);
    assert_eq!(full["alignment"], 32);
    assert_eq!(full["data_offset"], f.data_offset);
    assert_eq!(full["file_size"], f.file_size);
    assert_eq!(full["metadata"]["jamba.attention.head_count_kv"], json!([0, 2, 0, 0]));
    assert_eq!(full["metadata_types"]["jamba.attention.head_count_kv"], "array<i32>");
    assert_eq!(full["metadata"]["jamba.attention.layer_norm_rms_epsilon"], json!(1e-6));
    assert_eq!(full["metadata"]["tokenizer.ggml.tokens"].as_array().unwrap().len(), 256);
    assert_eq!(full["metadata"]["tokenizer.ggml.merges"], json!([]));
    let tensors = full["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), f.tensors.len());
    assert_eq!(
        tensors[0],
        json!({"name":"token_embd.weight","type":"F16","type_id":1,"shape":[32,256],"offset":0,"bytes":16384})
    );
    let expert = tensors.iter().find(|t| t["name"] == "blk.1.ffn_down_exps.weight").unwrap();
    assert_eq!(expert["shape"], json!([64, 32, 4]));
    // deterministic
    assert_eq!(inspect_json(&f, &InspectOptions::default()), inspect_json(&f, &InspectOptions::default()));
    let s = &full["summary"];
    let bpw = s["bits_per_weight"].as_f64().unwrap();
    assert!(bpw > 16.0 && bpw < 32.0, "{bpw}");
    let bytes: u64 = f.tensors.iter().map(|t| t.size.unwrap()).sum();
    assert_eq!(s["tensor_bytes"], bytes);
}
