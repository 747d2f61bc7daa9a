//! Whole-file parity with llama-quantize: `quantize_gguf_with` must write exactly the bytes that
//! `llama-quantize IN OUT FTYPE` (no imatrix) writes. tests/fixtures/quant/llama_quantize.json
//! holds the size and FNV-1a-64 hash of llama-quantize's output for every file type coil writes,
//! for the tiny model fixtures and for three larger models generated here (rows of 256 and 512, so
//! that the K-quants are used rather than their fallbacks, F32 / BF16 / F16 sources, tied and
//! untied embeddings, attention + dense and MoE FFNs with 2 and 8 experts). The hashes come from
//! scripts/fixtures/make_quant_vectors.py, which writes the generated models with
//! `dump_parity_inputs` below.

use std::path::{Path, PathBuf};

use coil_core::gguf::{GgmlType, GgufArray, GgufValue, GgufWriter};
use coil_core::quant::{half, quantize_gguf_with, QuantOptions, QuantTarget};
use coil_core::util::SplitMix64;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fnv64(data: &[u8]) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01B3);
    }
    h
}

/// Builds small GGUF models with deterministic weights (only + - * on f32, so the bytes are
/// the same everywhere).
struct Gen {
    w: GgufWriter,
    rng: SplitMix64,
}

#[derive(Clone, Copy)]
enum Src {
    F32,
    F16,
    Bf16,
}

impl Gen {
    fn new(arch: &str, seed: u64) -> Gen {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", GgufValue::from(arch));
        w.add_metadata("general.name", GgufValue::from(format!("coil quant parity {arch}").as_str()));
        w.add_metadata("general.file_type", GgufValue::U32(1));
        Gen { w, rng: SplitMix64::new(seed) }
    }

    fn kv(&mut self, k: &str, v: impl Into<GgufValue>) {
        self.w.add_metadata(k, v.into());
    }

    /// Roughly normal values (a sum of four uniforms), with a few outliers.
    fn values(&mut self, n: usize, std: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let s = self.rng.next_f32() + self.rng.next_f32() + self.rng.next_f32() + self.rng.next_f32();
                let v = (s - 2.0) * std * 1.732_050_8;
                if i % 997 == 13 {
                    v * 12.0
                } else {
                    v
                }
            })
            .collect()
    }

    fn tensor(&mut self, name: &str, dims: &[u64], src: Src, values: &[f32]) {
        let (ty, data): (GgmlType, Vec<u8>) = match src {
            Src::F32 => (GgmlType::F32, values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            Src::F16 => (GgmlType::F16, values.iter().flat_map(|&v| half::f32_to_f16(v).to_le_bytes()).collect()),
            Src::Bf16 => (GgmlType::BF16, values.iter().flat_map(|&v| half::f32_to_bf16(v).to_le_bytes()).collect()),
        };
        self.w.add_tensor(name, dims.to_vec(), ty.id(), data).unwrap();
    }

    fn matrix(&mut self, name: &str, dims: &[u64], src: Src) {
        let n = dims.iter().product::<u64>() as usize;
        let v = self.values(n, 1.0 / (dims[0] as f32).sqrt());
        self.tensor(name, dims, src, &v);
    }

    fn norm(&mut self, name: &str, dims: &[u64]) {
        let n = dims.iter().product::<u64>() as usize;
        let v: Vec<f32> = (0..n).map(|_| 1.0 + 0.1 * (self.rng.next_f32() - 0.5)).collect();
        self.tensor(name, dims, Src::F32, &v);
    }

    fn vocab(&mut self) {
        let tokens: Vec<String> = (0..256).map(|i| format!("<{i:02x}>")).collect();
        self.kv("tokenizer.ggml.model", "gpt2");
        self.kv("tokenizer.ggml.pre", "default");
        self.kv("tokenizer.ggml.tokens", GgufValue::Array(GgufArray::String(tokens)));
        self.kv("tokenizer.ggml.token_type", GgufValue::Array(GgufArray::I32(vec![1; 256])));
        self.kv("tokenizer.ggml.merges", GgufValue::Array(GgufArray::String(Vec::new())));
        self.kv("tokenizer.ggml.bos_token_id", 0u32);
        self.kv("tokenizer.ggml.eos_token_id", 0u32);
    }

    #[allow(clippy::too_many_arguments)]
    fn mamba_mixer(&mut self, i: u64, d: u64, e: u64, n: u64, r: u64, k: u64, src_in: Src) {
        let p = |s: &str| format!("blk.{i}.{s}");
        self.matrix(&p("ssm_in.weight"), &[d, 2 * e], src_in);
        let conv = self.values((k * e) as usize, 0.5);
        self.tensor(&p("ssm_conv1d.weight"), &[k, e], Src::F32, &conv);
        let cb = self.values(e as usize, 0.1);
        self.tensor(&p("ssm_conv1d.bias"), &[e], Src::F32, &cb);
        self.matrix(&p("ssm_x.weight"), &[e, r + 2 * n], Src::F16);
        self.matrix(&p("ssm_dt.weight"), &[r, e], Src::F16);
        let db = self.values(e as usize, 0.5);
        self.tensor(&p("ssm_dt.bias"), &[e], Src::F32, &db);
        let a: Vec<f32> = (0..e).flat_map(|_| (0..n).map(|j| -((j + 1) as f32))).collect();
        self.tensor(&p("ssm_a"), &[n, e], Src::F32, &a);
        self.tensor(&p("ssm_d"), &[e], Src::F32, &vec![1.0; e as usize]);
        self.matrix(&p("ssm_out.weight"), &[e, d], Src::F16);
    }
}

/// Mamba, d_model 256, d_inner 512, 2 layers, untied output; ssm_in is F32 in layer 0 and BF16
/// in layer 1.
fn k_mamba() -> Vec<u8> {
    let (d, layers, e, n, k, r) = (256u64, 2u64, 512u64, 16u64, 4u64, 16u64);
    let mut g = Gen::new("mamba", 0x6b6d_616d_6261);
    g.kv("mamba.context_length", 1u32 << 20);
    g.kv("mamba.embedding_length", d as u32);
    g.kv("mamba.feed_forward_length", 0u32);
    g.kv("mamba.attention.head_count", 0u32);
    g.kv("mamba.block_count", layers as u32);
    g.kv("mamba.ssm.conv_kernel", k as u32);
    g.kv("mamba.ssm.inner_size", e as u32);
    g.kv("mamba.ssm.state_size", n as u32);
    g.kv("mamba.ssm.time_step_rank", r as u32);
    g.kv("mamba.attention.layer_norm_rms_epsilon", 1e-5f32);
    g.kv("general.quantization_version", 2u32);
    g.vocab();
    g.matrix("token_embd.weight", &[d, 256], Src::F16);
    g.norm("output_norm.weight", &[d]);
    g.matrix("output.weight", &[d, 256], Src::F16);
    for i in 0..layers {
        g.norm(&format!("blk.{i}.attn_norm.weight"), &[d]);
        g.mamba_mixer(i, d, e, n, r, k, if i == 0 { Src::F32 } else { Src::Bf16 });
    }
    g.w.to_bytes().unwrap()
}

/// Jamba, d_model 256, 2 layers: layer 0 Mamba + dense FFN, layer 1 attention + MoE, tied
/// embeddings.
fn k_jamba(n_expert: u64, n_ff: u64, seed: u64) -> Vec<u8> {
    let (d, layers, e, n, k, r, n_head) = (256u64, 2u64, 512u64, 16u64, 4u64, 16u64, 4u64);
    let head_count_kv = [0i32, 2];
    let mut g = Gen::new("jamba", seed);
    g.kv("jamba.block_count", layers as u32);
    g.kv("jamba.context_length", 4096u32);
    g.kv("jamba.embedding_length", d as u32);
    g.kv("jamba.feed_forward_length", n_ff as u32);
    g.kv("jamba.attention.head_count", n_head as u32);
    g.kv("jamba.attention.head_count_kv", GgufValue::Array(GgufArray::I32(head_count_kv.to_vec())));
    g.kv("jamba.ssm.conv_kernel", k as u32);
    g.kv("jamba.ssm.inner_size", e as u32);
    g.kv("jamba.ssm.state_size", n as u32);
    g.kv("jamba.ssm.time_step_rank", r as u32);
    g.kv("jamba.attention.layer_norm_rms_epsilon", 1e-6f32);
    g.kv("jamba.expert_count", n_expert as u32);
    g.kv("jamba.expert_used_count", 1u32);
    g.vocab();
    g.matrix("token_embd.weight", &[d, 256], Src::Bf16);
    g.norm("output_norm.weight", &[d]);
    for i in 0..layers {
        let p = |s: &str| format!("blk.{i}.{s}");
        g.norm(&p("attn_norm.weight"), &[d]);
        if i == 0 {
            g.mamba_mixer(i, d, e, n, r, k, Src::F16);
            g.norm(&p("ssm_dt_norm.weight"), &[r]);
            g.norm(&p("ssm_b_norm.weight"), &[n]);
            g.norm(&p("ssm_c_norm.weight"), &[n]);
        } else {
            let gqa = d / n_head * head_count_kv[i as usize] as u64;
            g.matrix(&p("attn_q.weight"), &[d, d], Src::F16);
            g.matrix(&p("attn_k.weight"), &[d, gqa], Src::F16);
            g.matrix(&p("attn_v.weight"), &[d, gqa], Src::F32);
            g.matrix(&p("attn_output.weight"), &[d, d], Src::F16);
        }
        g.norm(&p("ffn_norm.weight"), &[d]);
        if i == 1 {
            let gate = g.values((d * n_expert) as usize, 0.06);
            g.tensor(&p("ffn_gate_inp.weight"), &[d, n_expert], Src::F32, &gate);
            g.matrix(&p("ffn_gate_exps.weight"), &[d, n_ff, n_expert], Src::F16);
            g.matrix(&p("ffn_down_exps.weight"), &[n_ff, d, n_expert], Src::F16);
            g.matrix(&p("ffn_up_exps.weight"), &[d, n_ff, n_expert], Src::F16);
        } else {
            g.matrix(&p("ffn_gate.weight"), &[d, n_ff], Src::F16);
            g.matrix(&p("ffn_down.weight"), &[n_ff, d], Src::F16);
            g.matrix(&p("ffn_up.weight"), &[d, n_ff], Src::F16);
        }
    }
    g.w.to_bytes().unwrap()
}

fn generated() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("parity-k-mamba.gguf", k_mamba()),
        ("parity-k-jamba.gguf", k_jamba(2, 256, 0x6b6a_616d_6261)),
        ("parity-k-jamba8.gguf", k_jamba(8, 32, 0x6b6a_616d_6238)),
    ]
}

/// Writes the generated models to `$COIL_QUANT_DUMP_DIR` (for make_quant_vectors.py).
#[test]
#[ignore]
fn dump_parity_inputs() {
    let dir = std::env::var_os("COIL_QUANT_DUMP_DIR").expect("set COIL_QUANT_DUMP_DIR");
    for (name, bytes) in generated() {
        std::fs::write(Path::new(&dir).join(name), bytes).unwrap();
    }
}

#[test]
fn output_is_byte_identical_to_llama_quantize() {
    let json = std::fs::read_to_string(root().join("tests/fixtures/quant/llama_quantize.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let results = v["results"].as_array().unwrap();
    assert!(results.len() >= 6 * 13, "{} results", results.len());
    let gen = generated();
    let dir = std::env::temp_dir().join(format!("coil-quant-parity-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut inputs: Vec<(String, PathBuf)> = Vec::new();
    for (name, bytes) in &gen {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        inputs.push((name.to_string(), p));
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for r in results {
        let model = r["model"].as_str().unwrap();
        let input = match inputs.iter().find(|(n, _)| n == model) {
            Some((_, p)) => p.clone(),
            None => root().join("tests/fixtures/models").join(model),
        };
        let src = std::fs::read(&input).unwrap();
        let want_in = r["input_fnv64"].as_str().unwrap();
        assert_eq!(
            format!("{:016x}", fnv64(&src)),
            want_in,
            "{model} is not the file llama-quantize was run on: rerun scripts/fixtures/make_quant_vectors.py"
        );
        let ftype = r["ftype"].as_str().unwrap();
        let target = QuantTarget::from_name(ftype).unwrap();
        let pure = r["pure"].as_bool().unwrap();
        let out = dir.join(format!("out-{model}-{ftype}-{pure}.gguf"));
        let opts = QuantOptions { target, pure, threads: 0 };
        let report = quantize_gguf_with(&input, &out, &opts, &mut |_| true).unwrap();
        let got = std::fs::read(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        assert_eq!(report.file_size, got.len() as u64);
        let want_size = r["size"].as_u64().unwrap();
        let want_hash = r["fnv64"].as_str().unwrap();
        if got.len() as u64 != want_size || format!("{:016x}", fnv64(&got)) != want_hash {
            failures.push(format!(
                "{model} {ftype}{}: {} bytes (llama-quantize {want_size}), hash {:016x} (llama-quantize {want_hash})",
                if pure { " --pure" } else { "" },
                got.len(),
                fnv64(&got)
            ));
        }
        checked += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{} of {checked} files differ:\n{}", failures.len(), failures.join("\n"));
}
