//! The HF -> GGUF converter on tiny synthetic checkpoints written by the tests themselves: every
//! architecture, every source dtype, the metadata keys and values, vocabulary padding, tied
//! outputs, sharding, Mamba-Codestral's layout, and the error cases (each one clear error naming
//! the file and tensor, and no output or temporary file left behind).

use std::path::{Path, PathBuf};

use coil_core::convert::safetensors::write_safetensors;
use coil_core::convert::{
    bf16_to_f32, convert, f16_to_f32, f32_to_bf16, f32_to_f16, ConvertOptions, ConvertProgress, ConvertReport, OutType,
    StDtype,
};
use coil_core::gguf::{GgmlType, GgufValue, MappedGguf};
use coil_core::util::SplitMix64;
use coil_core::{ErrorCode, Result};

// ---------------------------------------------------------------------------------------------
// Helpers

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let p = std::env::temp_dir().join(format!("coil-convert-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A source tensor: name, dtype, PyTorch shape, the f32 values it holds (exactly representable in
/// its dtype) and its bytes.
#[derive(Clone)]
struct Src {
    name: String,
    dtype: StDtype,
    shape: Vec<u64>,
    bytes: Vec<u8>,
}

fn encode(dtype: StDtype, vals: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for &v in vals {
        match dtype {
            StDtype::F32 => out.extend_from_slice(&v.to_le_bytes()),
            StDtype::F16 => out.extend_from_slice(&f32_to_f16(v).to_le_bytes()),
            StDtype::BF16 => out.extend_from_slice(&f32_to_bf16(v).to_le_bytes()),
            _ => unreachable!(),
        }
    }
    out
}

fn decode(dtype: StDtype, b: &[u8]) -> Vec<f32> {
    match dtype {
        StDtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        StDtype::F16 => b.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        StDtype::BF16 => b.chunks_exact(2).map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        _ => unreachable!(),
    }
}

struct Builder {
    rng: SplitMix64,
    dtype: StDtype,
    tensors: Vec<Src>,
}

impl Builder {
    fn new(seed: u64, dtype: StDtype) -> Builder {
        Builder { rng: SplitMix64::new(seed), dtype, tensors: Vec::new() }
    }
    fn add(&mut self, name: &str, shape: &[u64]) -> &mut Self {
        let n: u64 = shape.iter().product();
        let vals: Vec<f32> = (0..n).map(|_| self.rng.next_f32() * 2.0 - 1.0).collect();
        let dtype = self.dtype;
        self.add_vals(name, dtype, shape, &vals)
    }
    fn add_vals(&mut self, name: &str, dtype: StDtype, shape: &[u64], vals: &[f32]) -> &mut Self {
        self.tensors.push(Src { name: name.into(), dtype, shape: shape.to_vec(), bytes: encode(dtype, vals) });
        self
    }
    fn get(&self, name: &str) -> &Src {
        self.tensors.iter().find(|t| t.name == name).unwrap_or_else(|| panic!("no source {name}"))
    }
    fn remove(&mut self, name: &str) {
        self.tensors.retain(|t| t.name != name);
    }
    fn write(&self, dir: &Path, file: &str) {
        let entries: Vec<(&str, StDtype, &[u64], &[u8])> =
            self.tensors.iter().map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice(), t.bytes.as_slice())).collect();
        std::fs::write(dir.join(file), write_safetensors(&entries, &[("format", "pt")])).unwrap();
    }
    /// Writes `n` shards and their index.
    fn write_sharded(&self, dir: &Path, n: usize) {
        let per = self.tensors.len().div_ceil(n);
        let mut map = serde_json::Map::new();
        for (i, chunk) in self.tensors.chunks(per).enumerate() {
            let file = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
            let entries: Vec<(&str, StDtype, &[u64], &[u8])> =
                chunk.iter().map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice(), t.bytes.as_slice())).collect();
            std::fs::write(dir.join(&file), write_safetensors(&entries, &[])).unwrap();
            for t in chunk {
                map.insert(t.name.clone(), serde_json::Value::String(file.clone()));
            }
        }
        let idx = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
        std::fs::write(dir.join("model.safetensors.index.json"), idx.to_string()).unwrap();
    }
}

fn write_json(dir: &Path, name: &str, v: serde_json::Value) {
    std::fs::write(dir.join(name), serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn run(dir: &Path, out: &Path, outtype: OutType) -> Result<ConvertReport> {
    convert(dir, out, ConvertOptions { outtype, name: Some("test-model".into()) }, &mut |_| true)
}

/// The output dir holds no temporary file and no `out`.
fn assert_clean(out: &Path) {
    assert!(!out.exists(), "{} was left behind", out.display());
    let dir = out.parent().unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let n = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(!n.contains("coil-tmp"), "temporary file {n} was left behind");
    }
}

/// Expected output bytes of a tensor: the source elements (pieces concatenated), transformed,
/// encoded to `ty`.
fn expected(srcs: &[&Src], ty: GgmlType, neg_exp: bool) -> Vec<u8> {
    let same_dtype = srcs.iter().all(|s| {
        matches!(
            (s.dtype, ty),
            (StDtype::F32, GgmlType::F32) | (StDtype::F16, GgmlType::F16) | (StDtype::BF16, GgmlType::BF16)
        )
    });
    if !neg_exp && same_dtype {
        return srcs.iter().flat_map(|s| s.bytes.clone()).collect();
    }
    let mut vals = Vec::new();
    for s in srcs {
        for v in decode(s.dtype, &s.bytes) {
            if neg_exp {
                // -exp in f64, rounded once to f32, whatever the source dtype.
                vals.push(-((v as f64).exp() as f32));
            } else {
                vals.push(v);
            }
        }
    }
    let mut out = Vec::new();
    for v in vals {
        match ty {
            GgmlType::F32 => out.extend_from_slice(&v.to_le_bytes()),
            GgmlType::F16 => out.extend_from_slice(&f32_to_f16(v).to_le_bytes()),
            GgmlType::BF16 => out.extend_from_slice(&f32_to_bf16(v).to_le_bytes()),
            _ => unreachable!(),
        }
    }
    out
}

struct Out {
    m: MappedGguf,
}

impl Out {
    fn open(p: &Path) -> Out {
        Out { m: MappedGguf::open(p).unwrap() }
    }
    fn get(&self, k: &str) -> &GgufValue {
        self.m.file.get(k).unwrap_or_else(|| panic!("no key {k}"))
    }
    fn u32(&self, k: &str) -> u32 {
        match self.get(k) {
            GgufValue::U32(v) => *v,
            v => panic!("{k} is {v:?}, not u32"),
        }
    }
    fn tensor(&self, name: &str) -> (Vec<u64>, GgmlType, &[u8]) {
        let t = self.m.file.tensor(name).unwrap_or_else(|| panic!("no tensor {name}"));
        (t.dims.clone(), t.ggml_type.unwrap(), self.m.tensor_data(t).unwrap())
    }
    fn names(&self) -> Vec<String> {
        self.m.file.tensors.iter().map(|t| t.name.clone()).collect()
    }
    /// Checks one tensor's dims, type and bytes.
    fn check(&self, name: &str, dims: &[u64], ty: GgmlType, srcs: &[&Src], neg_exp: bool) {
        let (d, t, data) = self.tensor(name);
        assert_eq!(d, dims, "{name} dims");
        assert_eq!(t, ty, "{name} type");
        assert!(data == expected(srcs, ty, neg_exp).as_slice(), "{name}: bytes differ from the transformed source");
    }
}

// ---------------------------------------------------------------------------------------------
// Mamba-1

const D: u64 = 8;
const E: u64 = 16;
const N: u64 = 4;
const K: u64 = 4;
const R: u64 = 2;

fn mamba1_tensors(b: &mut Builder, layers: u64, vocab_rows: u64, lm_head: bool) {
    b.add("backbone.embeddings.weight", &[vocab_rows, D]);
    for i in 0..layers {
        let p = format!("backbone.layers.{i}");
        b.add(&format!("{p}.norm.weight"), &[D])
            .add(&format!("{p}.mixer.in_proj.weight"), &[2 * E, D])
            .add(&format!("{p}.mixer.conv1d.weight"), &[E, 1, K])
            .add(&format!("{p}.mixer.conv1d.bias"), &[E])
            .add(&format!("{p}.mixer.x_proj.weight"), &[R + 2 * N, E])
            .add(&format!("{p}.mixer.dt_proj.weight"), &[E, R])
            .add(&format!("{p}.mixer.dt_proj.bias"), &[E])
            .add(&format!("{p}.mixer.A_log"), &[E, N])
            .add(&format!("{p}.mixer.D"), &[E])
            .add(&format!("{p}.mixer.out_proj.weight"), &[D, E]);
    }
    b.add("backbone.norm_f.weight", &[D]);
    if lm_head {
        b.add("lm_head.weight", &[vocab_rows, D]);
    }
}

fn mamba1_config(vocab: u64, model_type: &str, arch: &str) -> serde_json::Value {
    serde_json::json!({
        "architectures": [arch],
        "model_type": model_type,
        "hidden_size": D,
        "intermediate_size": E,
        "state_size": N,
        "conv_kernel": K,
        "time_step_rank": R,
        "num_hidden_layers": 2,
        "layer_norm_epsilon": 1e-5,
        "vocab_size": vocab,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 0,
        "tie_word_embeddings": false,
    })
}

/// A small byte-level BPE tokenizer.json: 6 tokens (the last an added special token).
fn tiny_bpe_json() -> serde_json::Value {
    serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 5, "content": "<|endoftext|>", "special": true, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "vocab": {"a": 0, "b": 1, "ab": 2, "\u{0120}": 3, "\u{0120}ab": 4},
            "merges": ["a b", "\u{0120} ab"]
        }
    })
}

fn check_mamba1(out: &Out, b: &Builder, ty: GgmlType, layers: u64, vocab_rows: u64) {
    let f32 = GgmlType::F32;
    out.check("token_embd.weight", &[D, vocab_rows], ty, &[b.get("backbone.embeddings.weight")], false);
    for i in 0..layers {
        let p = format!("backbone.layers.{i}");
        let s = |n: &str| b.get(&format!("{p}.{n}"));
        out.check(&format!("blk.{i}.attn_norm.weight"), &[D], f32, &[s("norm.weight")], false);
        out.check(&format!("blk.{i}.ssm_in.weight"), &[D, 2 * E], ty, &[s("mixer.in_proj.weight")], false);
        out.check(&format!("blk.{i}.ssm_conv1d.weight"), &[K, E], f32, &[s("mixer.conv1d.weight")], false);
        out.check(&format!("blk.{i}.ssm_conv1d.bias"), &[E], f32, &[s("mixer.conv1d.bias")], false);
        out.check(&format!("blk.{i}.ssm_x.weight"), &[E, R + 2 * N], ty, &[s("mixer.x_proj.weight")], false);
        out.check(&format!("blk.{i}.ssm_dt.weight"), &[R, E], ty, &[s("mixer.dt_proj.weight")], false);
        out.check(&format!("blk.{i}.ssm_dt.bias"), &[E], f32, &[s("mixer.dt_proj.bias")], false);
        out.check(&format!("blk.{i}.ssm_a"), &[N, E], f32, &[s("mixer.A_log")], true);
        out.check(&format!("blk.{i}.ssm_d"), &[E], f32, &[s("mixer.D")], false);
        out.check(&format!("blk.{i}.ssm_out.weight"), &[E, D], ty, &[s("mixer.out_proj.weight")], false);
    }
    out.check("output_norm.weight", &[D], f32, &[b.get("backbone.norm_f.weight")], false);
}

#[test]
fn mamba1_every_dtype_and_outtype() {
    for (si, src) in [StDtype::F32, StDtype::F16, StDtype::BF16].into_iter().enumerate() {
        for (oi, outtype) in [OutType::F32, OutType::F16, OutType::Bf16].into_iter().enumerate() {
            let d = TempDir::new("m1");
            let mut b = Builder::new(100 + si as u64 * 10 + oi as u64, src);
            mamba1_tensors(&mut b, 2, 8, true);
            b.write(d.path(), "model.safetensors");
            write_json(d.path(), "config.json", mamba1_config(8, "mamba", "MambaForCausalLM"));
            write_json(d.path(), "tokenizer.json", tiny_bpe_json());
            let outp = d.path().join("out.gguf");
            let mut calls: Vec<(u64, u64, String)> = Vec::new();
            let rep = convert(d.path(), &outp, ConvertOptions { outtype, name: None }, &mut |p: ConvertProgress| {
                calls.push((p.bytes_done, p.bytes_total, p.tensor.to_string()));
                true
            })
            .unwrap();
            let out = Out::open(&outp);
            let ty = outtype.ggml_type().unwrap();
            check_mamba1(&out, &b, ty, 2, 8);
            out.check("output.weight", &[D, 8], ty, &[b.get("lm_head.weight")], false);
            assert!(!rep.tied_output_omitted);
            assert_eq!(rep.file_size, std::fs::metadata(&outp).unwrap().len());
            // Progress: monotonic, ends at the total with an empty name, names every tensor.
            assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));
            let last = calls.last().unwrap();
            assert_eq!((last.0, last.2.as_str()), (last.1, ""));
            for n in out.names() {
                assert!(calls.iter().any(|c| c.2 == n), "no progress for {n}");
            }
            // general.name defaults to the directory name.
            assert_eq!(out.get("general.name").as_str(), d.path().file_name().unwrap().to_str());
            assert_eq!(out.u32("general.file_type"), outtype.file_type().unwrap());
        }
    }
}

#[test]
fn mamba1_metadata_and_vocab_padding() {
    let d = TempDir::new("m1meta");
    let mut b = Builder::new(7, StDtype::F32);
    // 6 tokens in the tokenizer, 16 embedding rows (vocab_size 13 padded to 16).
    mamba1_tensors(&mut b, 2, 16, false);
    b.write(d.path(), "model.safetensors");
    let mut cfg = mamba1_config(13, "mamba", "MambaForCausalLM");
    cfg["pad_vocab_size_multiple"] = 16.into();
    cfg["bos_token_id"] = 5.into();
    cfg["eos_token_id"] = 5.into();
    cfg["pad_token_id"] = serde_json::Value::Null;
    write_json(d.path(), "config.json", cfg);
    write_json(d.path(), "tokenizer.json", tiny_bpe_json());
    write_json(
        d.path(),
        "tokenizer_config.json",
        serde_json::json!({"add_bos_token": false, "eos_token": "<|endoftext|>", "chat_template": "{{ messages }}"}),
    );
    let outp = d.path().join("m.gguf");
    let rep = run(d.path(), &outp, OutType::F16).unwrap();
    assert_eq!(rep.arch, "mamba");
    assert_eq!(rep.n_vocab, 16);
    let out = Out::open(&outp);
    let md = &out.m.file.metadata;
    let keys: Vec<&str> = md.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "general.architecture",
            "general.type",
            "general.name",
            "mamba.context_length",
            "mamba.embedding_length",
            "mamba.feed_forward_length",
            "mamba.attention.head_count",
            "mamba.block_count",
            "mamba.ssm.conv_kernel",
            "mamba.ssm.inner_size",
            "mamba.ssm.state_size",
            "mamba.ssm.time_step_rank",
            "mamba.attention.layer_norm_rms_epsilon",
            "mamba.ssm.dt_b_c_rms",
            "general.file_type",
            "general.quantization_version",
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.merges",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.add_bos_token",
            "tokenizer.chat_template",
        ]
    );
    assert_eq!(out.get("general.architecture").as_str(), Some("mamba"));
    assert_eq!(out.get("general.name").as_str(), Some("test-model"));
    assert_eq!(out.u32("mamba.context_length"), 1 << 20);
    assert_eq!(out.u32("mamba.embedding_length"), D as u32);
    assert_eq!(out.u32("mamba.feed_forward_length"), 0);
    assert_eq!(out.u32("mamba.attention.head_count"), 0);
    assert_eq!(out.u32("mamba.block_count"), 2);
    assert_eq!(out.u32("mamba.ssm.conv_kernel"), K as u32);
    assert_eq!(out.u32("mamba.ssm.inner_size"), E as u32);
    assert_eq!(out.u32("mamba.ssm.state_size"), N as u32);
    assert_eq!(out.u32("mamba.ssm.time_step_rank"), R as u32);
    assert_eq!(out.get("mamba.attention.layer_norm_rms_epsilon"), &GgufValue::F32(1e-5));
    assert_eq!(out.get("mamba.ssm.dt_b_c_rms"), &GgufValue::Bool(false));
    assert_eq!(out.u32("general.file_type"), 1);
    assert_eq!(out.u32("general.quantization_version"), 2);
    assert_eq!(out.get("tokenizer.ggml.model").as_str(), Some("gpt2"));
    assert_eq!(out.get("tokenizer.ggml.pre").as_str(), Some("gpt-2"));
    let toks = out.get("tokenizer.ggml.tokens").as_array().unwrap().as_strings().unwrap().to_vec();
    assert_eq!(toks.len(), 16);
    assert_eq!(&toks[..6], ["a", "b", "ab", "\u{120}", "\u{120}ab", "<|endoftext|>"]);
    for (i, t) in toks.iter().enumerate().skip(6) {
        assert_eq!(t, &format!("[PAD{i}]"));
    }
    let types = out.get("tokenizer.ggml.token_type").as_array().unwrap().as_i32s().unwrap().to_vec();
    assert_eq!(&types[..6], [1, 1, 1, 1, 1, 3]);
    assert!(types[6..].iter().all(|&t| t == 5));
    assert!(out.m.file.get("tokenizer.ggml.scores").is_none());
    let merges = out.get("tokenizer.ggml.merges").as_array().unwrap().as_strings().unwrap().to_vec();
    assert_eq!(merges, ["a b", "\u{120} ab"]);
    assert_eq!(out.u32("tokenizer.ggml.bos_token_id"), 5);
    assert_eq!(out.u32("tokenizer.ggml.eos_token_id"), 5);
    assert_eq!(out.get("tokenizer.ggml.add_bos_token"), &GgufValue::Bool(false));
    assert_eq!(out.get("tokenizer.chat_template").as_str(), Some("{{ messages }}"));
    // No lm_head: no output tensor.
    assert!(out.m.file.tensor("output.weight").is_none());
    check_mamba1(&out, &b, GgmlType::F16, 2, 16);

    // coil's own tokenizer reads it back.
    let tok = coil_core::tokenizer::Tokenizer::from_gguf(&out.m.file).unwrap();
    assert_eq!(tok.tokenize("ab ab", false, false), vec![2, 4]);
    assert_eq!(tok.n_vocab(), 16);
}

#[test]
fn falcon_mamba_sets_dt_b_c_rms() {
    let d = TempDir::new("falcon");
    let mut b = Builder::new(8, StDtype::BF16);
    mamba1_tensors(&mut b, 2, 8, false);
    b.write(d.path(), "model.safetensors");
    write_json(d.path(), "config.json", mamba1_config(8, "falcon_mamba", "FalconMambaForCausalLM"));
    let outp = d.path().join("f.gguf");
    let rep = run(d.path(), &outp, OutType::Auto).unwrap();
    assert_eq!(rep.outtype, OutType::Bf16);
    assert!(rep.tokenizer.is_none());
    assert!(rep.warnings.iter().any(|w| w.contains("no tokenizer")), "{:?}", rep.warnings);
    let out = Out::open(&outp);
    assert_eq!(out.get("mamba.ssm.dt_b_c_rms"), &GgufValue::Bool(true));
    assert!(out.m.file.get("tokenizer.ggml.model").is_none());
    check_mamba1(&out, &b, GgmlType::BF16, 2, 8);
}

#[test]
fn mamba1_tied_output_is_omitted_and_untied_kept() {
    let d = TempDir::new("tied");
    let mut b = Builder::new(9, StDtype::F16);
    mamba1_tensors(&mut b, 2, 8, false);
    let e = b.get("backbone.embeddings.weight").clone();
    b.tensors.push(Src { name: "lm_head.weight".into(), ..e });
    b.write(d.path(), "model.safetensors");
    write_json(d.path(), "config.json", mamba1_config(8, "mamba", "MambaForCausalLM"));
    let outp = d.path().join("t.gguf");
    let rep = run(d.path(), &outp, OutType::F16).unwrap();
    assert!(rep.tied_output_omitted);
    let out = Out::open(&outp);
    assert!(out.m.file.tensor("output.weight").is_none());
}

#[test]
fn state_spaces_config_and_sharded_checkpoint() {
    // state-spaces style: no architectures, ssm_cfg, d_model / n_layer, vocab 37 padded to 40.
    let d = TempDir::new("ss");
    let mut b = Builder::new(11, StDtype::F32);
    b.add("backbone.embedding.weight", &[40, D]);
    for i in 0..2 {
        let p = format!("backbone.layers.{i}");
        b.add(&format!("{p}.norm.weight"), &[D])
            .add(&format!("{p}.mixer.in_proj.weight"), &[2 * E, D])
            .add(&format!("{p}.mixer.conv1d.weight"), &[E, 1, K])
            .add(&format!("{p}.mixer.conv1d.bias"), &[E])
            .add(&format!("{p}.mixer.x_proj.weight"), &[1 + 2 * 16, E])
            .add(&format!("{p}.mixer.dt_proj.weight"), &[E, 1])
            .add(&format!("{p}.mixer.dt_proj.bias"), &[E])
            .add(&format!("{p}.mixer.A_log"), &[E, 16])
            .add(&format!("{p}.mixer.D"), &[E])
            .add(&format!("{p}.mixer.out_proj.weight"), &[D, E]);
    }
    b.add("backbone.norm_f.weight", &[D]);
    b.write_sharded(d.path(), 3);
    write_json(
        d.path(),
        "config.json",
        serde_json::json!({"d_model": D, "n_layer": 2, "vocab_size": 37, "ssm_cfg": {}, "rms_norm": true,
            "residual_in_fp32": true, "fused_add_norm": true, "pad_vocab_size_multiple": 8}),
    );
    let outp = d.path().join("ss.gguf");
    let rep = run(d.path(), &outp, OutType::F32).unwrap();
    assert_eq!(rep.hf_architecture, "MambaForCausalLM");
    assert_eq!(rep.n_vocab, 40);
    let out = Out::open(&outp);
    assert_eq!(out.u32("mamba.ssm.state_size"), 16);
    assert_eq!(out.u32("mamba.ssm.time_step_rank"), 1);
    assert_eq!(out.u32("mamba.ssm.inner_size"), 2 * D as u32);
    out.check("token_embd.weight", &[D, 40], GgmlType::F32, &[b.get("backbone.embedding.weight")], false);
    out.check("blk.1.ssm_a", &[16, E], GgmlType::F32, &[b.get("backbone.layers.1.mixer.A_log")], true);
}

// ---------------------------------------------------------------------------------------------
// Mamba-2

const HD: u64 = 4; // head dim
const H: u64 = E / HD;
const G: u64 = 2;
const N2: u64 = 4;

fn mamba2_tensors(b: &mut Builder, prefix: &str, dt_bias_name: &str, vocab_rows: u64, lm_head: &str) {
    b.add(&format!("{prefix}backbone.embeddings.weight"), &[vocab_rows, D]);
    for i in 0..2 {
        let p = format!("{prefix}backbone.layers.{i}");
        b.add(&format!("{p}.norm.weight"), &[D])
            .add(&format!("{p}.mixer.in_proj.weight"), &[2 * E + 2 * G * N2 + H, D])
            .add(&format!("{p}.mixer.conv1d.weight"), &[E + 2 * G * N2, 1, K])
            .add(&format!("{p}.mixer.conv1d.bias"), &[E + 2 * G * N2])
            .add(&format!("{p}.mixer.{dt_bias_name}"), &[H])
            .add(&format!("{p}.mixer.A_log"), &[H])
            .add(&format!("{p}.mixer.D"), &[H])
            .add(&format!("{p}.mixer.norm.weight"), &[E])
            .add(&format!("{p}.mixer.out_proj.weight"), &[D, E]);
    }
    b.add(&format!("{prefix}backbone.norm_f.weight"), &[D]);
    if !lm_head.is_empty() {
        b.add(lm_head, &[vocab_rows, D]);
    }
}

fn check_mamba2(out: &Out, b: &Builder, prefix: &str, dt_bias_name: &str, ty: GgmlType, vocab_rows: u64) {
    let f32 = GgmlType::F32;
    out.check(
        "token_embd.weight",
        &[D, vocab_rows],
        ty,
        &[b.get(&format!("{prefix}backbone.embeddings.weight"))],
        false,
    );
    for i in 0..2 {
        let p = format!("{prefix}backbone.layers.{i}");
        let s = |n: &str| b.get(&format!("{p}.{n}"));
        out.check(&format!("blk.{i}.attn_norm.weight"), &[D], f32, &[s("norm.weight")], false);
        out.check(
            &format!("blk.{i}.ssm_in.weight"),
            &[D, 2 * E + 2 * G * N2 + H],
            ty,
            &[s("mixer.in_proj.weight")],
            false,
        );
        out.check(&format!("blk.{i}.ssm_conv1d.weight"), &[K, E + 2 * G * N2], f32, &[s("mixer.conv1d.weight")], false);
        out.check(&format!("blk.{i}.ssm_conv1d.bias"), &[E + 2 * G * N2], f32, &[s("mixer.conv1d.bias")], false);
        out.check(&format!("blk.{i}.ssm_dt.bias"), &[H], f32, &[s(&format!("mixer.{dt_bias_name}"))], false);
        out.check(&format!("blk.{i}.ssm_a"), &[1, H], f32, &[s("mixer.A_log")], true);
        out.check(&format!("blk.{i}.ssm_d"), &[1, H], f32, &[s("mixer.D")], false);
        out.check(&format!("blk.{i}.ssm_norm.weight"), &[E / G, G], f32, &[s("mixer.norm.weight")], false);
        out.check(&format!("blk.{i}.ssm_out.weight"), &[E, D], ty, &[s("mixer.out_proj.weight")], false);
    }
    out.check("output_norm.weight", &[D], f32, &[b.get(&format!("{prefix}backbone.norm_f.weight"))], false);
}

fn mamba2_config(vocab: u64) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Mamba2ForCausalLM"],
        "model_type": "mamba2",
        "hidden_size": D, "expand": 2, "head_dim": HD, "num_heads": H, "n_groups": G, "state_size": N2,
        "conv_kernel": K, "num_hidden_layers": 2, "layer_norm_epsilon": 1e-5, "vocab_size": vocab,
        "tie_word_embeddings": false, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1
    })
}

#[test]
fn mamba2_hf_layout() {
    for (src, outtype) in [(StDtype::F32, OutType::F16), (StDtype::F16, OutType::F32), (StDtype::BF16, OutType::Bf16)] {
        let d = TempDir::new("m2");
        let mut b = Builder::new(21, src);
        mamba2_tensors(&mut b, "", "dt_bias", 16, "lm_head.weight");
        // An lm_head equal to the embedding is kept for Mamba-2 (llama.cpp omits it only for Mamba-1).
        let e = b.get("backbone.embeddings.weight").clone();
        b.remove("lm_head.weight");
        b.tensors.push(Src { name: "lm_head.weight".into(), ..e });
        b.write(d.path(), "model.safetensors");
        write_json(d.path(), "config.json", mamba2_config(16));
        let outp = d.path().join("m2.gguf");
        let rep = run(d.path(), &outp, outtype).unwrap();
        assert_eq!(rep.arch, "mamba2");
        assert!(!rep.tied_output_omitted);
        let out = Out::open(&outp);
        let ty = outtype.ggml_type().unwrap();
        check_mamba2(&out, &b, "", "dt_bias", ty, 16);
        out.check("output.weight", &[D, 16], ty, &[b.get("lm_head.weight")], false);
        let keys: Vec<&str> = out.m.file.metadata.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "general.architecture",
                "general.type",
                "general.name",
                "mamba2.context_length",
                "mamba2.embedding_length",
                "mamba2.feed_forward_length",
                "mamba2.attention.head_count",
                "mamba2.block_count",
                "mamba2.ssm.conv_kernel",
                "mamba2.ssm.inner_size",
                "mamba2.ssm.state_size",
                "mamba2.ssm.time_step_rank",
                "mamba2.ssm.group_count",
                "mamba2.attention.layer_norm_rms_epsilon",
                "general.file_type",
                "general.quantization_version",
            ]
        );
        assert_eq!(out.u32("mamba2.context_length"), 1 << 20);
        assert_eq!(out.u32("mamba2.ssm.inner_size"), E as u32);
        assert_eq!(out.u32("mamba2.ssm.state_size"), N2 as u32);
        assert_eq!(out.u32("mamba2.ssm.time_step_rank"), H as u32);
        assert_eq!(out.u32("mamba2.ssm.group_count"), G as u32);
    }
}

#[test]
fn mamba_codestral_layout() {
    // params.json + consolidated.safetensors with `model.backbone.*` / `model.lm_head` names and
    // `dt_bias`, and Mistral's tokenizer.model.v3.
    let spm = fixtures().join("tokenizer/mistral-v3-tokenizer.model.v3");
    let d = TempDir::new("codestral");
    let mut b = Builder::new(31, StDtype::BF16);
    mamba2_tensors(&mut b, "model.", "dt_bias", 32768, "model.lm_head.weight");
    b.write(d.path(), "consolidated.safetensors");
    write_json(
        d.path(),
        "params.json",
        serde_json::json!({"dim": D, "n_layers": 2, "vocab_size": 32768, "n_groups": G, "head_dim": HD,
            "state_size": N2, "rms_norm": true, "residual_in_fp32": true, "fused_add_norm": true,
            "pad_vocab_size_multiple": 1, "tie_embeddings": false}),
    );
    std::fs::copy(&spm, d.path().join("tokenizer.model.v3")).unwrap();
    let outp = d.path().join("c.gguf");
    let rep = run(d.path(), &outp, OutType::Bf16).unwrap();
    assert_eq!(rep.hf_architecture, "Mamba2ForCausalLM");
    assert_eq!(rep.config_source, coil_core::convert::ConfigSource::MistralParams);
    let t = rep.tokenizer.as_ref().unwrap();
    assert_eq!((t.source.as_str(), t.model.as_str(), t.n_tokens), ("tokenizer.model.v3", "llama", 32768));
    let out = Out::open(&outp);
    check_mamba2(&out, &b, "model.", "dt_bias", GgmlType::BF16, 32768);
    out.check("output.weight", &[D, 32768], GgmlType::BF16, &[b.get("model.lm_head.weight")], false);
    assert_eq!(out.get("tokenizer.ggml.model").as_str(), Some("llama"));
    assert_eq!(out.get("tokenizer.ggml.pre").as_str(), Some("default"));
    let toks = out.get("tokenizer.ggml.tokens").as_array().unwrap().as_strings().unwrap().to_vec();
    let types = out.get("tokenizer.ggml.token_type").as_array().unwrap().as_i32s().unwrap().to_vec();
    let scores = out.get("tokenizer.ggml.scores").as_array().unwrap().as_f32s().unwrap().to_vec();
    assert_eq!(toks.len(), 32768);
    assert_eq!(&toks[..4], ["<unk>", "<s>", "</s>", "[INST]"]);
    assert_eq!(&types[..4], [2, 3, 3, 3]);
    assert_eq!(scores.len(), 32768);
    // The SentencePiece trainer spec's ids.
    assert_eq!(out.u32("tokenizer.ggml.bos_token_id"), 1);
    assert_eq!(out.u32("tokenizer.ggml.eos_token_id"), 2);
    assert_eq!(out.u32("tokenizer.ggml.unknown_token_id"), 0);
    // Tokenization through the converted file agrees with SentencePiece's on the recorded vectors.
    let tok = coil_core::tokenizer::Tokenizer::from_gguf(&out.m.file).unwrap();
    let vectors: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokenizer/mistral-v3-spm.json")).unwrap())
            .unwrap();
    let mut checked = 0;
    for c in vectors["cases"].as_array().unwrap() {
        if c.get("known_difference").is_some() {
            continue;
        }
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.tokenize(text, false, false), want, "{text:?}");
        checked += 1;
    }
    assert!(checked > 100, "only {checked} vectors checked");
}

// ---------------------------------------------------------------------------------------------
// Jamba

const JL: u64 = 4;
const JH: u64 = 2; // attention heads
const JKV: u64 = 1;
const JX: u64 = 3; // experts
const JF: u64 = 12; // n_ff

fn jamba_config() -> serde_json::Value {
    serde_json::json!({
        "architectures": ["JambaForCausalLM"], "model_type": "jamba",
        "hidden_size": D, "intermediate_size": JF, "num_hidden_layers": JL, "num_attention_heads": JH,
        "num_key_value_heads": JKV, "rms_norm_eps": 1e-6, "vocab_size": 24, "max_position_embeddings": 4096,
        "num_experts_per_tok": 2, "num_experts": JX, "expert_layer_period": 2, "expert_layer_offset": 1,
        "attn_layer_period": 4, "attn_layer_offset": 1, "mamba_d_state": N, "mamba_d_conv": K,
        "mamba_expand": 2, "mamba_dt_rank": R, "tie_word_embeddings": false
    })
}

/// Layer 1 is attention + MoE, layer 3 Mamba + MoE, layers 0 and 2 Mamba + dense (given as the
/// single expert `experts.0` on layer 0, as a plain MLP on layer 2). `fused`: transformers 5's
/// fused expert layout on layer 3.
fn jamba_tensors(b: &mut Builder, fused: bool) {
    b.add("model.embed_tokens.weight", &[24, D]);
    for i in 0..JL {
        let p = format!("model.layers.{i}");
        b.add(&format!("{p}.input_layernorm.weight"), &[D]).add(&format!("{p}.pre_ff_layernorm.weight"), &[D]);
        if i == 1 {
            b.add(&format!("{p}.self_attn.q_proj.weight"), &[D, D])
                .add(&format!("{p}.self_attn.k_proj.weight"), &[JKV * D / JH, D])
                .add(&format!("{p}.self_attn.v_proj.weight"), &[JKV * D / JH, D])
                .add(&format!("{p}.self_attn.o_proj.weight"), &[D, D]);
        } else {
            b.add(&format!("{p}.mamba.in_proj.weight"), &[2 * E, D])
                .add(&format!("{p}.mamba.conv1d.weight"), &[E, 1, K])
                .add(&format!("{p}.mamba.conv1d.bias"), &[E])
                .add(&format!("{p}.mamba.x_proj.weight"), &[R + 2 * N, E])
                .add(&format!("{p}.mamba.dt_proj.weight"), &[E, R])
                .add(&format!("{p}.mamba.dt_proj.bias"), &[E])
                .add(&format!("{p}.mamba.A_log"), &[E, N])
                .add(&format!("{p}.mamba.D"), &[E])
                .add(&format!("{p}.mamba.out_proj.weight"), &[D, E])
                .add(&format!("{p}.mamba.dt_layernorm.weight"), &[R])
                .add(&format!("{p}.mamba.b_layernorm.weight"), &[N])
                .add(&format!("{p}.mamba.c_layernorm.weight"), &[N]);
        }
        match i {
            0 => {
                b.add(&format!("{p}.feed_forward.experts.0.gate_proj.weight"), &[JF, D])
                    .add(&format!("{p}.feed_forward.experts.0.up_proj.weight"), &[JF, D])
                    .add(&format!("{p}.feed_forward.experts.0.down_proj.weight"), &[D, JF]);
            }
            2 => {
                b.add(&format!("{p}.feed_forward.gate_proj.weight"), &[JF, D])
                    .add(&format!("{p}.feed_forward.up_proj.weight"), &[JF, D])
                    .add(&format!("{p}.feed_forward.down_proj.weight"), &[D, JF]);
            }
            _ => {
                b.add(&format!("{p}.feed_forward.router.weight"), &[JX, D]);
                if fused && i == 3 {
                    b.add(&format!("{p}.feed_forward.experts.gate_up_proj"), &[JX, 2 * JF, D])
                        .add(&format!("{p}.feed_forward.experts.down_proj"), &[JX, D, JF]);
                } else {
                    for x in 0..JX {
                        b.add(&format!("{p}.feed_forward.experts.{x}.gate_proj.weight"), &[JF, D])
                            .add(&format!("{p}.feed_forward.experts.{x}.up_proj.weight"), &[JF, D])
                            .add(&format!("{p}.feed_forward.experts.{x}.down_proj.weight"), &[D, JF]);
                    }
                }
            }
        }
    }
    b.add("model.final_layernorm.weight", &[D]).add("lm_head.weight", &[24, D]);
}

#[test]
fn jamba_experts_attention_and_metadata() {
    for fused in [false, true] {
        let d = TempDir::new("jamba");
        let mut b = Builder::new(41, StDtype::BF16);
        jamba_tensors(&mut b, fused);
        b.write_sharded(d.path(), 2);
        write_json(d.path(), "config.json", jamba_config());
        let outp = d.path().join("j.gguf");
        let rep = run(d.path(), &outp, OutType::F16).unwrap();
        assert_eq!(rep.arch, "jamba");
        let out = Out::open(&outp);
        let (f16, f32) = (GgmlType::F16, GgmlType::F32);
        assert_eq!(
            out.get("jamba.attention.head_count_kv").as_array().unwrap().as_i32s().unwrap(),
            &[0, JKV as i32, 0, 0]
        );
        assert_eq!(out.u32("jamba.context_length"), 4096);
        assert_eq!(out.u32("jamba.feed_forward_length"), JF as u32);
        assert_eq!(out.u32("jamba.attention.head_count"), JH as u32);
        assert_eq!(out.u32("jamba.expert_count"), JX as u32);
        assert_eq!(out.u32("jamba.expert_used_count"), 2);
        assert_eq!(out.u32("jamba.ssm.inner_size"), E as u32);
        assert_eq!(out.u32("jamba.ssm.time_step_rank"), R as u32);
        assert_eq!(out.get("jamba.attention.layer_norm_rms_epsilon"), &GgufValue::F32(1e-6));
        assert!(out.m.file.get("jamba.ssm.dt_b_c_rms").is_none());
        let s = |n: &str| b.get(n);
        out.check("token_embd.weight", &[D, 24], f16, &[s("model.embed_tokens.weight")], false);
        out.check("output.weight", &[D, 24], f16, &[s("lm_head.weight")], false);
        out.check("output_norm.weight", &[D], f32, &[s("model.final_layernorm.weight")], false);
        // Dense layers.
        out.check(
            "blk.0.ffn_gate.weight",
            &[D, JF],
            f16,
            &[s("model.layers.0.feed_forward.experts.0.gate_proj.weight")],
            false,
        );
        out.check(
            "blk.0.ffn_down.weight",
            &[JF, D],
            f16,
            &[s("model.layers.0.feed_forward.experts.0.down_proj.weight")],
            false,
        );
        out.check("blk.2.ffn_up.weight", &[D, JF], f16, &[s("model.layers.2.feed_forward.up_proj.weight")], false);
        // Attention layer.
        out.check("blk.1.attn_q.weight", &[D, D], f16, &[s("model.layers.1.self_attn.q_proj.weight")], false);
        out.check(
            "blk.1.attn_k.weight",
            &[D, JKV * D / JH],
            f16,
            &[s("model.layers.1.self_attn.k_proj.weight")],
            false,
        );
        out.check("blk.1.attn_output.weight", &[D, D], f16, &[s("model.layers.1.self_attn.o_proj.weight")], false);
        assert!(out.m.file.tensor("blk.1.ssm_in.weight").is_none());
        // Mamba layer with dt/B/C norms.
        out.check("blk.3.ssm_a", &[N, E], f32, &[s("model.layers.3.mamba.A_log")], true);
        out.check("blk.3.ssm_dt_norm.weight", &[R], f32, &[s("model.layers.3.mamba.dt_layernorm.weight")], false);
        out.check("blk.3.ssm_b_norm.weight", &[N], f32, &[s("model.layers.3.mamba.b_layernorm.weight")], false);
        out.check("blk.3.ssm_conv1d.weight", &[K, E], f32, &[s("model.layers.3.mamba.conv1d.weight")], false);
        // MoE: router F32, experts stacked.
        for l in [1, 3] {
            out.check(
                &format!("blk.{l}.ffn_gate_inp.weight"),
                &[D, JX],
                f32,
                &[s(&format!("model.layers.{l}.feed_forward.router.weight"))],
                false,
            );
            if fused && l == 3 {
                // Split the fused gate_up back into gate and up.
                let gu = s("model.layers.3.feed_forward.experts.gate_up_proj");
                let half = (JF * D * 2) as usize; // bytes per expert half (BF16)
                let mut gate = Vec::new();
                let mut up = Vec::new();
                for x in 0..JX as usize {
                    gate.extend_from_slice(&gu.bytes[x * 2 * half..x * 2 * half + half]);
                    up.extend_from_slice(&gu.bytes[x * 2 * half + half..(x + 1) * 2 * half]);
                }
                let g = Src { name: "g".into(), dtype: StDtype::BF16, shape: vec![], bytes: gate };
                let u = Src { name: "u".into(), dtype: StDtype::BF16, shape: vec![], bytes: up };
                out.check("blk.3.ffn_gate_exps.weight", &[D, JF, JX], f16, &[&g], false);
                out.check("blk.3.ffn_up_exps.weight", &[D, JF, JX], f16, &[&u], false);
                out.check(
                    "blk.3.ffn_down_exps.weight",
                    &[JF, D, JX],
                    f16,
                    &[s("model.layers.3.feed_forward.experts.down_proj")],
                    false,
                );
            } else {
                for (kind, dims) in [("gate", [D, JF, JX]), ("up", [D, JF, JX]), ("down", [JF, D, JX])] {
                    let srcs: Vec<&Src> = (0..JX)
                        .map(|x| s(&format!("model.layers.{l}.feed_forward.experts.{x}.{kind}_proj.weight")))
                        .collect();
                    out.check(&format!("blk.{l}.ffn_{kind}_exps.weight"), &dims, f16, &srcs, false);
                }
            }
        }
        // Every tensor name is one llama.cpp's Jamba loader knows.
        let names = out.names();
        assert_eq!(names.len(), rep.tensors.len());
        assert!(names.iter().all(|n| !n.contains("experts")));
    }
}

// ---------------------------------------------------------------------------------------------
// Errors: one clear error naming the file and tensor, nothing left behind.

fn good_mamba1(d: &Path) -> Builder {
    let mut b = Builder::new(51, StDtype::F32);
    mamba1_tensors(&mut b, 2, 8, false);
    write_json(d, "config.json", mamba1_config(8, "mamba", "MambaForCausalLM"));
    b
}

#[test]
fn error_bad_safetensors_header() {
    let d = TempDir::new("e1");
    good_mamba1(d.path());
    let hdr = b"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]";
    let mut bytes = (hdr.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(hdr);
    bytes.extend_from_slice(&[0; 8]);
    std::fs::write(d.path().join("model.safetensors"), bytes).unwrap();
    let outp = d.path().join("o.gguf");
    let e = run(d.path(), &outp, OutType::F16).unwrap_err();
    assert!(e.message.contains("model.safetensors") && e.message.contains("JSON"), "{e}");
    assert_clean(&outp);

    // Header length past the end of the file.
    std::fs::write(d.path().join("model.safetensors"), [0xff, 0xff, 0, 0, 0, 0, 0, 0, b'{', b'}']).unwrap();
    let e = run(d.path(), &outp, OutType::F16).unwrap_err();
    assert!(e.message.contains("model.safetensors") && e.message.contains("past the end"), "{e}");
    assert_clean(&outp);
}

#[test]
fn error_shape_contradicts_config() {
    let d = TempDir::new("e2");
    let mut b = good_mamba1(d.path());
    b.remove("backbone.layers.1.mixer.in_proj.weight");
    b.add("backbone.layers.1.mixer.in_proj.weight", &[2 * E + 2, D]);
    b.write(d.path(), "model.safetensors");
    let outp = d.path().join("o.gguf");
    let e = run(d.path(), &outp, OutType::F16).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadTensorShape);
    assert!(
        e.message.contains("backbone.layers.1.mixer.in_proj.weight") && e.message.contains("model.safetensors"),
        "{e}"
    );
    assert_clean(&outp);

    // Mamba-2: d_in_proj must be 2E + 2GN + H.
    let d = TempDir::new("e2b");
    let mut b = Builder::new(52, StDtype::F32);
    mamba2_tensors(&mut b, "", "dt_bias", 16, "");
    b.write(d.path(), "model.safetensors");
    let mut cfg = mamba2_config(16);
    cfg["n_groups"] = 1.into();
    write_json(d.path(), "config.json", cfg);
    let e = run(d.path(), &d.path().join("o.gguf"), OutType::F16).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadTensorShape);
    assert!(e.message.contains("backbone.layers.0.mixer.in_proj.weight"), "{e}");
}

#[test]
fn error_missing_tensor() {
    let d = TempDir::new("e3");
    let mut b = good_mamba1(d.path());
    b.remove("backbone.layers.1.mixer.x_proj.weight");
    b.write(d.path(), "model.safetensors");
    let outp = d.path().join("o.gguf");
    let e = run(d.path(), &outp, OutType::F16).unwrap_err();
    assert_eq!(e.code, ErrorCode::MissingTensor);
    assert!(e.message.contains("blk.1.ssm_x.weight"), "{e}");
    assert_clean(&outp);
}

#[test]
fn error_unknown_architecture_and_unmapped_tensor() {
    let d = TempDir::new("e4");
    let b = good_mamba1(d.path());
    b.write(d.path(), "model.safetensors");
    write_json(d.path(), "config.json", serde_json::json!({"architectures": ["LlamaForCausalLM"], "hidden_size": 8}));
    let outp = d.path().join("o.gguf");
    let e = run(d.path(), &outp, OutType::F16).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnknownArchitecture);
    assert!(e.message.contains("LlamaForCausalLM") && e.message.contains("MambaForCausalLM"), "{e}");
    assert_clean(&outp);

    let d = TempDir::new("e4b");
    let mut b = good_mamba1(d.path());
    b.add("backbone.layers.0.mixer.in_proj.bias", &[2 * E]);
    b.write(d.path(), "model.safetensors");
    let e = run(d.path(), &outp, OutType::F16).unwrap_err();
    assert!(e.message.contains("backbone.layers.0.mixer.in_proj.bias"), "{e}");
}

#[test]
fn error_truncated_shard_and_missing_shard() {
    let d = TempDir::new("e5");
    let b = good_mamba1(d.path());
    b.write_sharded(d.path(), 2);
    let shard = d.path().join("model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 10]).unwrap();
    let outp = d.path().join("o.gguf");
    let e = run(d.path(), &outp, OutType::F16).unwrap_err();
    assert!(e.message.contains("model-00002-of-00002.safetensors") && e.message.contains("tensor \""), "{e}");
    assert_clean(&outp);

    std::fs::remove_file(&shard).unwrap();
    let e = run(d.path(), &outp, OutType::F16).unwrap_err();
    assert_eq!(e.code, ErrorCode::Io);
    assert!(e.message.contains("model-00002-of-00002.safetensors") && e.message.contains("missing"), "{e}");
    assert_clean(&outp);
}

#[test]
fn error_unsupported_dtype_names_tensor() {
    let d = TempDir::new("e6");
    let mut b = good_mamba1(d.path());
    b.remove("backbone.layers.0.mixer.D");
    b.tensors.push(Src {
        name: "backbone.layers.0.mixer.D".into(),
        dtype: StDtype::I32,
        shape: vec![E],
        bytes: vec![0; 4 * E as usize],
    });
    b.write(d.path(), "model.safetensors");
    let e = run(d.path(), &d.path().join("o.gguf"), OutType::F16).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnsupportedType);
    assert!(e.message.contains("backbone.layers.0.mixer.D") && e.message.contains("I32"), "{e}");
}

#[test]
fn abort_leaves_nothing() {
    let d = TempDir::new("abort");
    let b = good_mamba1(d.path());
    b.write(d.path(), "model.safetensors");
    let outp = d.path().join("o.gguf");
    std::fs::write(&outp, b"previous").unwrap();
    let mut n = 0;
    let e = convert(d.path(), &outp, ConvertOptions::default(), &mut |_| {
        n += 1;
        n < 5
    })
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::Aborted);
    // The previous file is untouched and no temporary file remains.
    assert_eq!(std::fs::read(&outp).unwrap(), b"previous");
    std::fs::remove_file(&outp).unwrap();
    assert_clean(&outp);
}

// ---------------------------------------------------------------------------------------------
// The GPT-NeoX vocabulary, against llama.cpp's own conversion of it.

#[test]
fn gpt_neox_vocab_matches_llama_cpp() {
    let d = TempDir::new("neox");
    let mut b = Builder::new(61, StDtype::F16);
    mamba1_tensors(&mut b, 2, 50432, false);
    b.write(d.path(), "model.safetensors");
    write_json(d.path(), "config.json", mamba1_config(50432, "mamba", "MambaForCausalLM"));
    std::fs::copy(fixtures().join("tokenizer/gpt-neox-20b-tokenizer.json"), d.path().join("tokenizer.json")).unwrap();
    let outp = d.path().join("n.gguf");
    let rep = run(d.path(), &outp, OutType::F16).unwrap();
    let out = Out::open(&outp);
    let reference = MappedGguf::open(&fixtures().join("vocab/ggml-vocab-gpt-neox.gguf")).unwrap();
    for key in ["tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"] {
        let mut a = out.get(key).clone();
        let r = reference.file.get(key).unwrap();
        if key == "tokenizer.ggml.token_type" {
            // The reference file comes from an older converter that typed the `[PAD{i}]` fillers
            // USER_DEFINED (4); today's `get_vocab_base` types them UNUSED (5), as coil does.
            let toks = out.get("tokenizer.ggml.tokens").as_array().unwrap().as_strings().unwrap().to_vec();
            let mut types = a.as_array().unwrap().as_i32s().unwrap().to_vec();
            for (t, ty) in toks.iter().zip(types.iter_mut()) {
                if t.starts_with("[PAD") {
                    assert_eq!(*ty, 5, "{t}");
                    *ty = 4;
                }
            }
            a = GgufValue::Array(coil_core::gguf::GgufArray::I32(types));
        }
        let a = &a;
        if a != r {
            if let (Some(aa), Some(rr)) = (a.as_array(), r.as_array()) {
                let diffs: Vec<usize> =
                    (0..aa.len().min(rr.len())).filter(|&i| aa.get(i) != rr.get(i)).take(5).collect();
                panic!(
                    "{key} differs: lengths {} / {}, first differences at {diffs:?}: {:?} vs {:?}",
                    aa.len(),
                    rr.len(),
                    diffs.first().map(|&i| aa.get(i)),
                    diffs.first().map(|&i| rr.get(i))
                );
            }
            panic!("{key} differs: {a:?} vs {r:?}");
        }
    }
    // llama.cpp writes `mpt`/`olmo` for this vocabulary; coil writes `gpt-2`, which splits the same.
    assert_eq!(out.get("tokenizer.ggml.pre").as_str(), Some("gpt-2"));
    assert_eq!(rep.tokenizer.as_ref().unwrap().n_tokens, 50432);
    // Tokenization through the converted file agrees with HF's on the recorded vectors.
    let tok = coil_core::tokenizer::Tokenizer::from_gguf(&out.m.file).unwrap();
    let vectors: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokenizer/gpt-neox-hf.json")).unwrap()).unwrap();
    let cases = vectors.get("cases").and_then(|c| c.as_array()).cloned().unwrap_or_default();
    let mut checked = 0;
    for c in cases {
        if c.get("known_difference").is_some() {
            continue;
        }
        let (Some(text), Some(ids)) = (c.get("text").and_then(|t| t.as_str()), c.get("ids").and_then(|i| i.as_array()))
        else {
            continue;
        };
        let want: Vec<u32> = ids.iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.tokenize(text, false, true), want, "{text:?}");
        checked += 1;
    }
    assert!(checked > 100, "only {checked} vectors checked");
}

// ---------------------------------------------------------------------------------------------
// Quantized output types (through crate::quant), with chunked tensors.

#[test]
fn quantized_outtypes_and_fallbacks() {
    let (d_model, d_inner, d_state, rank, vocab) = (64u64, 128u64, 16u64, 4u64, 32768u64);
    let dir = TempDir::new("quant");
    let mut b = Builder::new(71, StDtype::BF16);
    b.add("backbone.embeddings.weight", &[vocab, d_model]); // 2M elements: several chunks
    let p = "backbone.layers.0";
    b.add(&format!("{p}.norm.weight"), &[d_model])
        .add(&format!("{p}.mixer.in_proj.weight"), &[2 * d_inner, d_model])
        .add(&format!("{p}.mixer.conv1d.weight"), &[d_inner, 1, 4])
        .add(&format!("{p}.mixer.conv1d.bias"), &[d_inner])
        .add(&format!("{p}.mixer.x_proj.weight"), &[rank + 2 * d_state, d_inner])
        .add(&format!("{p}.mixer.dt_proj.weight"), &[d_inner, rank])
        .add(&format!("{p}.mixer.dt_proj.bias"), &[d_inner])
        .add(&format!("{p}.mixer.A_log"), &[d_inner, d_state])
        .add(&format!("{p}.mixer.D"), &[d_inner])
        .add(&format!("{p}.mixer.out_proj.weight"), &[d_model, d_inner]);
    b.add("backbone.norm_f.weight", &[d_model]);
    b.write(dir.path(), "model.safetensors");
    write_json(
        dir.path(),
        "config.json",
        serde_json::json!({"architectures": ["MambaForCausalLM"], "hidden_size": d_model, "intermediate_size": d_inner,
            "state_size": d_state, "time_step_rank": rank, "num_hidden_layers": 1, "vocab_size": vocab}),
    );
    let quantized = |src: &Src, ty: GgmlType| -> Vec<u8> {
        let vals = decode(src.dtype, &src.bytes);
        let mut out = vec![0u8; coil_core::quant::row_bytes(ty, vals.len()).unwrap()];
        coil_core::quant::quantize_row(ty, &vals, &mut out).unwrap();
        out
    };
    // (outtype, type of d_model-wide rows, type of the dt_rank-wide ssm_dt rows)
    for (outtype, wide, narrow) in [
        (OutType::Q8_0, GgmlType::Q8_0, GgmlType::F16),
        (OutType::Q4_0, GgmlType::Q4_0, GgmlType::F16),
        (OutType::Q4K, GgmlType::Q5_0, GgmlType::F16),
        (OutType::Q6K, GgmlType::Q8_0, GgmlType::F16),
    ] {
        let outp = dir.path().join(format!("{}.gguf", outtype.name()));
        let rep = run(dir.path(), &outp, outtype).unwrap();
        assert_eq!(rep.file_type, outtype.file_type().unwrap());
        let out = Out::open(&outp);
        assert_eq!(out.u32("general.file_type"), outtype.file_type().unwrap());
        assert_eq!(out.u32("general.quantization_version"), 2);
        for (name, src, ty) in [
            ("token_embd.weight", "backbone.embeddings.weight", wide),
            ("blk.0.ssm_in.weight", "backbone.layers.0.mixer.in_proj.weight", wide),
            ("blk.0.ssm_x.weight", "backbone.layers.0.mixer.x_proj.weight", wide),
            ("blk.0.ssm_out.weight", "backbone.layers.0.mixer.out_proj.weight", wide),
        ] {
            let (_, t, data) = out.tensor(name);
            assert_eq!(t, ty, "{name} with {}", outtype.name());
            assert!(data == quantized(b.get(src), ty).as_slice(), "{name} with {}", outtype.name());
        }
        out.check(
            "blk.0.ssm_dt.weight",
            &[rank, d_inner],
            narrow,
            &[b.get("backbone.layers.0.mixer.dt_proj.weight")],
            false,
        );
        out.check("blk.0.ssm_a", &[d_state, d_inner], GgmlType::F32, &[b.get("backbone.layers.0.mixer.A_log")], true);
        out.check(
            "blk.0.ssm_conv1d.weight",
            &[4, d_inner],
            GgmlType::F32,
            &[b.get("backbone.layers.0.mixer.conv1d.weight")],
            false,
        );
        if wide != outtype.ggml_type().unwrap() {
            assert!(rep.warnings.iter().any(|w| w.contains("token_embd.weight")), "{:?}", rep.warnings);
        }
    }
    // A big tensor passed through unchanged (BF16 -> BF16) in chunks.
    let outp = dir.path().join("bf16.gguf");
    run(dir.path(), &outp, OutType::Bf16).unwrap();
    Out::open(&outp).check(
        "token_embd.weight",
        &[d_model, vocab],
        GgmlType::BF16,
        &[b.get("backbone.embeddings.weight")],
        false,
    );
    let outp = dir.path().join("f32.gguf");
    run(dir.path(), &outp, OutType::F32).unwrap();
    Out::open(&outp).check(
        "token_embd.weight",
        &[d_model, vocab],
        GgmlType::F32,
        &[b.get("backbone.embeddings.weight")],
        false,
    );
}

// ---------------------------------------------------------------------------------------------
// Random damage: configurations and checkpoints with random values never panic.

#[test]
fn random_inputs_never_panic() {
    let mut rng = SplitMix64::new(99);
    let values = [0u64, 1, 2, 3, 4, 7, 8, 16, 64, 1 << 20, 1 << 40, u64::MAX];
    for round in 0..200 {
        let d = TempDir::new("fuzz");
        let arch = ["MambaForCausalLM", "Mamba2ForCausalLM", "JambaForCausalLM"][round % 3];
        let mut b = Builder::new(round as u64, StDtype::F32);
        let mut cfg = match round % 3 {
            0 => {
                mamba1_tensors(&mut b, 2, 8, true);
                mamba1_config(8, "mamba", arch)
            }
            1 => {
                mamba2_tensors(&mut b, "", "dt_bias", 16, "lm_head.weight");
                mamba2_config(16)
            }
            _ => {
                jamba_tensors(&mut b, round % 2 == 0);
                jamba_config()
            }
        };
        // Damage a few config values.
        let keys: Vec<String> = cfg.as_object().unwrap().keys().cloned().collect();
        for _ in 0..1 + rng.below(3) {
            let k = &keys[rng.below(keys.len() as u64) as usize];
            let v = values[rng.below(values.len() as u64) as usize];
            cfg[k] = if rng.below(5) == 0 { serde_json::Value::String("auto".into()) } else { v.into() };
        }
        // Damage a tensor's shape now and then.
        if rng.below(3) == 0 {
            let i = rng.below(b.tensors.len() as u64) as usize;
            let t = &mut b.tensors[i];
            let n: u64 = t.shape.iter().product();
            t.shape = if n % 2 == 0 { vec![2, n / 2] } else { vec![n] };
        }
        b.write(d.path(), "model.safetensors");
        write_json(d.path(), "config.json", cfg);
        let outp = d.path().join("o.gguf");
        if run(d.path(), &outp, OutType::F16).is_err() {
            assert_clean(&outp);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A SentencePiece-style BPE (`byte_fallback`) tokenizer.json: a `llama` vocabulary.

#[test]
fn jamba_with_llama_style_tokenizer_json() {
    let d = TempDir::new("llamahf");
    let mut b = Builder::new(81, StDtype::F32);
    jamba_tensors(&mut b, false);
    b.write(d.path(), "model.safetensors");
    write_json(d.path(), "config.json", jamba_config());
    write_json(
        d.path(),
        "tokenizer.json",
        serde_json::json!({
            "version": "1.0",
            "added_tokens": [
                {"id": 0, "content": "<unk>", "special": true},
                {"id": 1, "content": "<s>", "special": true},
                {"id": 2, "content": "</s>", "special": true}
            ],
            "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]},
            "pre_tokenizer": null,
            "decoder": {"type": "Sequence", "decoders": []},
            "model": {
                "type": "BPE", "byte_fallback": true, "fuse_unk": true, "unk_token": "<unk>",
                "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "<0x0A>": 3, "\u{2581}": 4, "a": 5, "b": 6, "ab": 7, "\u{2581}ab": 8},
                "merges": ["a b", "\u{2581} ab"]
            }
        }),
    );
    write_json(
        d.path(),
        "tokenizer_config.json",
        serde_json::json!({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true}),
    );
    let outp = d.path().join("j.gguf");
    let rep = run(d.path(), &outp, OutType::F32).unwrap();
    assert_eq!(rep.tokenizer.as_ref().unwrap().model, "llama");
    let out = Out::open(&outp);
    let toks = out.get("tokenizer.ggml.tokens").as_array().unwrap().as_strings().unwrap().to_vec();
    let types = out.get("tokenizer.ggml.token_type").as_array().unwrap().as_i32s().unwrap().to_vec();
    let scores = out.get("tokenizer.ggml.scores").as_array().unwrap().as_f32s().unwrap().to_vec();
    assert_eq!(toks.len(), 24);
    assert_eq!(&types[..9], [3, 3, 3, 6, 1, 1, 1, 1, 1]);
    assert!(types[9..].iter().all(|&t| t == 5));
    // Merge ranks become scores: the token made by merge r scores -r.
    assert_eq!((scores[7], scores[8]), (0.0, -1.0));
    assert_eq!(out.u32("tokenizer.ggml.bos_token_id"), 1);
    assert_eq!(out.u32("tokenizer.ggml.eos_token_id"), 2);
    assert_eq!(out.get("tokenizer.ggml.add_bos_token"), &GgufValue::Bool(true));
    // llama.cpp writes add_space_prefix = false for Jamba's tokenizer.json route.
    assert_eq!(out.get("tokenizer.ggml.add_space_prefix"), &GgufValue::Bool(false));
    let tok = coil_core::tokenizer::Tokenizer::from_gguf(&out.m.file).unwrap();
    assert_eq!(tok.tokenize("ab\n", false, false), vec![7, 3]);
}
