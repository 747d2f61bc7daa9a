//! Writes tiny deterministic GGUF models with seeded pseudo-random weights, laid out exactly as
//! llama.cpp's converter lays out real ones (metadata keys, tensor names, ggml shapes, F32/F16
//! choices):
//!
//! * `tiny-mamba.gguf`: arch `mamba`, d_model 64, 2 layers, d_inner 128, d_state 16, d_conv 4,
//!   dt_rank 4, tied output (no `output.weight`).
//! * `tiny-mamba2.gguf`: arch `mamba2`, d_model 64, 2 layers, d_inner 128, head_dim 16 (8 heads),
//!   2 groups, d_state 16, d_conv 4, untied `output.weight`.
//! * `tiny-jamba.gguf`: arch `jamba`, d_model 32, 4 layers (d_inner 64, d_state 16, d_conv 4,
//!   dt_rank 2), attention on layer 1 (4 heads, head_count_kv [0,2,0,0]), MoE (4 experts, top 2) on
//!   layers 1 and 3, dense FFN (n_ff 64) on layers 0 and 2, with ssm_dt_norm/b_norm/c_norm.
//!
//! All three carry a 256-token byte-level vocabulary (`tokenizer.ggml.model = gpt2`, token i is
//! byte i in GPT-2's byte-to-unicode spelling, no merges). Matrices are F16; 1-D tensors, norms,
//! `ssm_a`, `ssm_d`, conv weights and `ffn_gate_inp` are F32, as the converter forces.
//!
//! Only `+ - * /` and `sqrt` go into the weights, so the bytes are the same on every platform.
//!
//! Run: `cargo run -p coil-core --example make_tiny_models -- OUTDIR`

use coil_core::gguf::{GgmlType, GgufArray, GgufValue, GgufWriter};

/// The weights' PRNG: coil-core's SplitMix64 (the same numbers on every platform).
pub struct Rng(coil_core::util::SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(coil_core::util::SplitMix64::new(seed))
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.0.next_f32()
    }

    /// Zero-mean uniform values with standard deviation `std`.
    pub fn vec(&mut self, n: usize, std: f32) -> Vec<f32> {
        let half_width = std * 3f32.sqrt();
        (0..n).map(|_| self.range(-half_width, half_width)).collect()
    }
}

/// f32 to IEEE half bits, as ggml rounds (coil-core's `quant::half`).
pub fn f16_bits(x: f32) -> u16 {
    coil_core::quant::half::f32_to_f16(x)
}

/// GPT-2's byte-to-unicode table: the printable character that spells each byte.
pub fn byte_to_unicode() -> Vec<char> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let mut table = vec!['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        let c = if printable(b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        table[b as usize] = char::from_u32(c).unwrap_or('?');
    }
    table
}

struct Model {
    w: GgufWriter,
    rng: Rng,
}

impl Model {
    fn new(arch: &str, name: &str, seed: u64) -> Model {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", GgufValue::from(arch));
        w.add_metadata("general.name", GgufValue::from(name));
        Model { w, rng: Rng::new(seed) }
    }

    fn kv(&mut self, key: &str, v: impl Into<GgufValue>) {
        self.w.add_metadata(key, v.into());
    }

    fn f32(&mut self, name: &str, dims: &[u64], values: Vec<f32>) {
        let n: u64 = dims.iter().product();
        assert_eq!(n as usize, values.len(), "{name}");
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.w.add_tensor(name, dims.to_vec(), GgmlType::F32.id(), data).expect(name);
    }

    fn f16(&mut self, name: &str, dims: &[u64], values: Vec<f32>) {
        let n: u64 = dims.iter().product();
        assert_eq!(n as usize, values.len(), "{name}");
        let data = values.iter().flat_map(|&v| f16_bits(v).to_le_bytes()).collect();
        self.w.add_tensor(name, dims.to_vec(), GgmlType::F16.id(), data).expect(name);
    }

    /// An F16 matrix {fan_in, rows, ...} with std 1/sqrt(fan_in).
    fn matrix(&mut self, name: &str, dims: &[u64]) {
        let n: u64 = dims.iter().product();
        let std = 1.0 / (dims[0] as f32).sqrt();
        let v = self.rng.vec(n as usize, std);
        self.f16(name, dims, v);
    }

    /// An F32 norm weight near 1.
    fn norm(&mut self, name: &str, dims: &[u64]) {
        let n: u64 = dims.iter().product();
        let v = (0..n).map(|_| 1.0 + self.rng.range(-0.1, 0.1)).collect();
        self.f32(name, dims, v);
    }

    fn vocab(&mut self, n_vocab: u64) {
        assert_eq!(n_vocab, 256);
        let table = byte_to_unicode();
        let tokens: Vec<String> = table.iter().map(|c| c.to_string()).collect();
        self.kv("tokenizer.ggml.model", "gpt2");
        self.kv("tokenizer.ggml.pre", "default");
        self.kv("tokenizer.ggml.tokens", GgufValue::Array(GgufArray::String(tokens)));
        self.kv("tokenizer.ggml.token_type", GgufValue::Array(GgufArray::I32(vec![1; 256])));
        self.kv("tokenizer.ggml.merges", GgufValue::Array(GgufArray::String(Vec::new())));
        self.kv("tokenizer.ggml.bos_token_id", 0u32);
        self.kv("tokenizer.ggml.eos_token_id", 0u32);
    }

    /// The Mamba-1 mixer tensors of layer `i` (`blk.i.ssm_*`), shared by mamba and jamba.
    fn mamba1_mixer(&mut self, i: u64, d: u64, e: u64, n: u64, r: u64, k: u64) {
        let p = |s: &str| format!("blk.{i}.{s}");
        self.matrix(&p("ssm_in.weight"), &[d, 2 * e]);
        let conv = self.rng.vec((k * e) as usize, 1.0 / (k as f32).sqrt());
        self.f32(&p("ssm_conv1d.weight"), &[k, e], conv);
        let conv_b = self.rng.vec(e as usize, 0.1);
        self.f32(&p("ssm_conv1d.bias"), &[e], conv_b);
        self.matrix(&p("ssm_x.weight"), &[e, r + 2 * n]);
        self.matrix(&p("ssm_dt.weight"), &[r, e]);
        // softplus(dt_bias) spans roughly 0.01 .. 0.1
        let dt_b = (0..e).map(|_| self.rng.range(-4.6, -2.25)).collect();
        self.f32(&p("ssm_dt.bias"), &[e], dt_b);
        // A = -exp(A_log) with the usual A_log = log(1..=n): A[e][j] = -(j+1)
        let a = (0..e).flat_map(|_| (0..n).map(|j| -((j + 1) as f32))).collect();
        self.f32(&p("ssm_a"), &[n, e], a);
        self.f32(&p("ssm_d"), &[e], vec![1.0; e as usize]);
        self.matrix(&p("ssm_out.weight"), &[e, d]);
    }
}

pub const TINY_MAMBA_NAME: &str = "coil tiny mamba (random weights)";
pub const TINY_MAMBA2_NAME: &str = "coil tiny mamba2 (random weights)";
pub const TINY_JAMBA_NAME: &str = "coil tiny jamba (random weights)";
/// `general.file_type` for "mostly F16" (llama.cpp's LLAMA_FTYPE_MOSTLY_F16).
const FTYPE_MOSTLY_F16: u32 = 1;

pub fn tiny_mamba() -> Vec<u8> {
    let (d, layers, e, n, k, r, vocab) = (64u64, 2u64, 128u64, 16u64, 4u64, 4u64, 256u64);
    let mut m = Model::new("mamba", TINY_MAMBA_NAME, 0x6d61_6d62_6131);
    m.kv("general.file_type", FTYPE_MOSTLY_F16);
    m.kv("mamba.context_length", 1u32 << 20);
    m.kv("mamba.embedding_length", d as u32);
    m.kv("mamba.feed_forward_length", 0u32);
    m.kv("mamba.attention.head_count", 0u32);
    m.kv("mamba.block_count", layers as u32);
    m.kv("mamba.ssm.conv_kernel", k as u32);
    m.kv("mamba.ssm.inner_size", e as u32);
    m.kv("mamba.ssm.state_size", n as u32);
    m.kv("mamba.ssm.time_step_rank", r as u32);
    m.kv("mamba.attention.layer_norm_rms_epsilon", 1e-5f32);
    m.kv("mamba.ssm.dt_b_c_rms", false);
    m.vocab(vocab);

    let embd = m.rng.vec((d * vocab) as usize, 0.5);
    m.f16("token_embd.weight", &[d, vocab], embd);
    m.norm("output_norm.weight", &[d]);
    for i in 0..layers {
        m.norm(&format!("blk.{i}.attn_norm.weight"), &[d]);
        m.mamba1_mixer(i, d, e, n, r, k);
    }
    m.w.to_bytes().expect("tiny mamba")
}

pub fn tiny_mamba2() -> Vec<u8> {
    let (d, layers, e, n, k, vocab) = (64u64, 2u64, 128u64, 16u64, 4u64, 256u64);
    let (head_dim, groups) = (16u64, 2u64);
    let h = e / head_dim;
    let conv_dim = e + 2 * groups * n;
    let d_in_proj = 2 * e + 2 * groups * n + h;
    let mut m = Model::new("mamba2", TINY_MAMBA2_NAME, 0x6d61_6d62_6132);
    m.kv("general.file_type", FTYPE_MOSTLY_F16);
    m.kv("mamba2.context_length", 1u32 << 20);
    m.kv("mamba2.embedding_length", d as u32);
    m.kv("mamba2.feed_forward_length", 0u32);
    m.kv("mamba2.attention.head_count", 0u32);
    m.kv("mamba2.block_count", layers as u32);
    m.kv("mamba2.ssm.conv_kernel", k as u32);
    m.kv("mamba2.ssm.inner_size", e as u32);
    m.kv("mamba2.ssm.state_size", n as u32);
    m.kv("mamba2.ssm.time_step_rank", h as u32);
    m.kv("mamba2.ssm.group_count", groups as u32);
    m.kv("mamba2.attention.layer_norm_rms_epsilon", 1e-5f32);
    m.vocab(vocab);

    let embd = m.rng.vec((d * vocab) as usize, 0.5);
    m.f16("token_embd.weight", &[d, vocab], embd);
    m.norm("output_norm.weight", &[d]);
    m.matrix("output.weight", &[d, vocab]);
    for i in 0..layers {
        let p = |s: &str| format!("blk.{i}.{s}");
        m.norm(&p("attn_norm.weight"), &[d]);
        m.matrix(&p("ssm_in.weight"), &[d, d_in_proj]);
        let conv = m.rng.vec((k * conv_dim) as usize, 1.0 / (k as f32).sqrt());
        m.f32(&p("ssm_conv1d.weight"), &[k, conv_dim], conv);
        let conv_b = m.rng.vec(conv_dim as usize, 0.1);
        m.f32(&p("ssm_conv1d.bias"), &[conv_dim], conv_b);
        let dt_b = (0..h).map(|_| m.rng.range(-4.6, -2.25)).collect();
        m.f32(&p("ssm_dt.bias"), &[h], dt_b);
        // A = -exp(A_log), A_log uniform in log(1..16): here A = -(1 + h % 16), exact
        let a = (0..h).map(|j| -((1 + j % 16) as f32)).collect();
        m.f32(&p("ssm_a"), &[1, h], a);
        m.f32(&p("ssm_d"), &[1, h], vec![1.0; h as usize]);
        m.norm(&p("ssm_norm.weight"), &[e / groups, groups]);
        m.matrix(&p("ssm_out.weight"), &[e, d]);
    }
    m.w.to_bytes().expect("tiny mamba2")
}

pub fn tiny_jamba() -> Vec<u8> {
    let (d, layers, e, n, k, r, vocab) = (32u64, 4u64, 64u64, 16u64, 4u64, 2u64, 256u64);
    let (n_head, n_ff, n_expert, n_expert_used) = (4u64, 64u64, 4u64, 2u64);
    let head_count_kv: [i32; 4] = [0, 2, 0, 0];
    let moe_layers = [1u64, 3];
    let mut m = Model::new("jamba", TINY_JAMBA_NAME, 0x6a61_6d62_6131);
    m.kv("general.file_type", FTYPE_MOSTLY_F16);
    m.kv("jamba.block_count", layers as u32);
    m.kv("jamba.context_length", 4096u32);
    m.kv("jamba.embedding_length", d as u32);
    m.kv("jamba.feed_forward_length", n_ff as u32);
    m.kv("jamba.attention.head_count", n_head as u32);
    // gguf-py writes a per-layer list of Python ints as array<i32>
    m.kv("jamba.attention.head_count_kv", GgufValue::Array(GgufArray::I32(head_count_kv.to_vec())));
    m.kv("jamba.ssm.conv_kernel", k as u32);
    m.kv("jamba.ssm.inner_size", e as u32);
    m.kv("jamba.ssm.state_size", n as u32);
    m.kv("jamba.ssm.time_step_rank", r as u32);
    m.kv("jamba.attention.layer_norm_rms_epsilon", 1e-6f32);
    m.kv("jamba.expert_count", n_expert as u32);
    m.kv("jamba.expert_used_count", n_expert_used as u32);
    m.vocab(vocab);

    let embd = m.rng.vec((d * vocab) as usize, 0.5);
    m.f16("token_embd.weight", &[d, vocab], embd);
    m.norm("output_norm.weight", &[d]);
    m.matrix("output.weight", &[d, vocab]);
    for i in 0..layers {
        let p = |s: &str| format!("blk.{i}.{s}");
        m.norm(&p("attn_norm.weight"), &[d]);
        let kv_heads = head_count_kv[i as usize] as u64;
        if kv_heads == 0 {
            m.mamba1_mixer(i, d, e, n, r, k);
            m.norm(&p("ssm_dt_norm.weight"), &[r]);
            m.norm(&p("ssm_b_norm.weight"), &[n]);
            m.norm(&p("ssm_c_norm.weight"), &[n]);
        } else {
            let n_embd_gqa = d / n_head * kv_heads;
            m.matrix(&p("attn_q.weight"), &[d, d]);
            m.matrix(&p("attn_k.weight"), &[d, n_embd_gqa]);
            m.matrix(&p("attn_v.weight"), &[d, n_embd_gqa]);
            m.matrix(&p("attn_output.weight"), &[d, d]);
        }
        m.norm(&p("ffn_norm.weight"), &[d]);
        if moe_layers.contains(&i) {
            let gate = m.rng.vec((d * n_expert) as usize, 1.0 / (d as f32).sqrt());
            m.f32(&p("ffn_gate_inp.weight"), &[d, n_expert], gate);
            m.matrix(&p("ffn_gate_exps.weight"), &[d, n_ff, n_expert]);
            m.matrix(&p("ffn_down_exps.weight"), &[n_ff, d, n_expert]);
            m.matrix(&p("ffn_up_exps.weight"), &[d, n_ff, n_expert]);
        } else {
            m.matrix(&p("ffn_gate.weight"), &[d, n_ff]);
            m.matrix(&p("ffn_down.weight"), &[n_ff, d]);
            m.matrix(&p("ffn_up.weight"), &[d, n_ff]);
        }
    }
    m.w.to_bytes().expect("tiny jamba")
}

/// Every model: (file name, bytes).
pub fn all_models() -> Vec<(&'static str, Vec<u8>)> {
    vec![("tiny-mamba.gguf", tiny_mamba()), ("tiny-mamba2.gguf", tiny_mamba2()), ("tiny-jamba.gguf", tiny_jamba())]
}

fn main() {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: make_tiny_models OUTDIR");
        std::process::exit(2);
    };
    let out = std::path::PathBuf::from(out);
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("cannot create {}: {e}", out.display());
        std::process::exit(1);
    }
    for (name, bytes) in all_models() {
        let path = out.join(name);
        if let Err(e) = std::fs::write(&path, &bytes) {
            eprintln!("cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
        println!("{} ({} bytes)", path.display(), bytes.len());
    }
}
