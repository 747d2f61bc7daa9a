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
//! * `tiny-granite-hybrid.gguf`, `tiny-nemotron-h.gguf` (nemotron_h_moe), `tiny-falcon-h1.gguf`,
//!   `tiny-lfm2.gguf` (lfm2moe): the 2025–26 hybrids, each function below says its shape.
//!
//! All of them carry a 256-token byte-level vocabulary (`tokenizer.ggml.model = gpt2`, token i is
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

    /// The Mamba-2 mixer tensors of layer `i`, shared by the Mamba-2 hybrids.
    fn mamba2_mixer(&mut self, i: u64, d: u64, e: u64, n: u64, k: u64, h: u64, groups: u64, norm: bool) {
        let p = |s: &str| format!("blk.{i}.{s}");
        let conv_dim = e + 2 * groups * n;
        self.matrix(&p("ssm_in.weight"), &[d, 2 * e + 2 * groups * n + h]);
        let conv = self.rng.vec((k * conv_dim) as usize, 1.0 / (k as f32).sqrt());
        self.f32(&p("ssm_conv1d.weight"), &[k, conv_dim], conv);
        let conv_b = self.rng.vec(conv_dim as usize, 0.1);
        self.f32(&p("ssm_conv1d.bias"), &[conv_dim], conv_b);
        let dt_b = (0..h).map(|_| self.rng.range(-4.6, -2.25)).collect();
        self.f32(&p("ssm_dt.bias"), &[h], dt_b);
        let a = (0..h).map(|j| -((1 + j % 16) as f32)).collect();
        self.f32(&p("ssm_a"), &[1, h], a);
        let dd = (0..h).map(|_| self.rng.range(0.5, 1.5)).collect();
        self.f32(&p("ssm_d"), &[1, h], dd);
        if norm {
            self.norm(&p("ssm_norm.weight"), &[e / groups, groups]);
        }
        self.matrix(&p("ssm_out.weight"), &[e, d]);
    }

    /// Attention tensors of layer `i`: q `[d, n_head·hd]`, k/v `[d, n_kv·hd]`, output.
    fn attention(&mut self, i: u64, d: u64, n_head: u64, n_kv: u64, hd: u64) {
        let p = |s: &str| format!("blk.{i}.{s}");
        self.matrix(&p("attn_q.weight"), &[d, n_head * hd]);
        self.matrix(&p("attn_k.weight"), &[d, n_kv * hd]);
        self.matrix(&p("attn_v.weight"), &[d, n_kv * hd]);
        self.matrix(&p("attn_output.weight"), &[n_head * hd, d]);
    }

    /// Experts of layer `i` behind an F32 router (`gate`: SwiGLU experts have a gate).
    fn experts(&mut self, i: u64, d: u64, f: u64, x: u64, gate: bool) {
        let p = |s: &str| format!("blk.{i}.{s}");
        let router = self.rng.vec((d * x) as usize, 2.0 / (d as f32).sqrt());
        self.f32(&p("ffn_gate_inp.weight"), &[d, x], router);
        if gate {
            self.matrix(&p("ffn_gate_exps.weight"), &[d, f, x]);
        }
        self.matrix(&p("ffn_down_exps.weight"), &[f, d, x]);
        self.matrix(&p("ffn_up_exps.weight"), &[d, f, x]);
    }

    /// A dense FFN `ffn_{gate,up,down}{suffix}` (no gate for ReLU²).
    fn ffn(&mut self, i: u64, suffix: &str, d: u64, f: u64, gate: bool) {
        let p = |s: &str| format!("blk.{i}.ffn_{s}{suffix}.weight");
        if gate {
            self.matrix(&p("gate"), &[d, f]);
        }
        self.matrix(&p("down"), &[f, d]);
        self.matrix(&p("up"), &[d, f]);
    }

    fn head(&mut self, d: u64, vocab: u64, output_norm: &str, tied: bool) {
        let embd = self.rng.vec((d * vocab) as usize, 0.5);
        self.f16("token_embd.weight", &[d, vocab], embd);
        self.norm(output_norm, &[d]);
        if !tied {
            self.matrix("output.weight", &[d, vocab]);
        }
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

pub const TINY_GRANITE_NAME: &str = "coil tiny granitehybrid (random weights)";
pub const TINY_NEMOTRON_NAME: &str = "coil tiny nemotron_h_moe (random weights)";
pub const TINY_FALCON_H1_NAME: &str = "coil tiny falcon-h1 (random weights)";
pub const TINY_LFM2_NAME: &str = "coil tiny lfm2moe (random weights)";

/// Granite-4.0-H's layout: Mamba-2 (2 groups) or attention without RoPE on layer 1, every layer
/// with a softmax MoE (4 experts, top 2) plus a shared expert, Granite's four scales.
pub fn tiny_granite_hybrid() -> Vec<u8> {
    let (d, layers, e, n, k, h, g, vocab) = (32u64, 4u64, 64u64, 16u64, 4u64, 8u64, 2u64, 256u64);
    let (n_head, n_ff, n_shexp, n_expert) = (4u64, 32u64, 48u64, 4u64);
    let kv: [i32; 4] = [0, 2, 0, 0];
    let a = "granitehybrid";
    let mut m = Model::new(a, TINY_GRANITE_NAME, 0x6772_616e_6974);
    m.kv("general.file_type", FTYPE_MOSTLY_F16);
    m.kv(&format!("{a}.block_count"), layers as u32);
    m.kv(&format!("{a}.context_length"), 1u32 << 20);
    m.kv(&format!("{a}.embedding_length"), d as u32);
    m.kv(&format!("{a}.feed_forward_length"), n_ff as u32);
    m.kv(&format!("{a}.attention.head_count"), n_head as u32);
    m.kv(&format!("{a}.attention.head_count_kv"), GgufValue::Array(GgufArray::I32(kv.to_vec())));
    m.kv(&format!("{a}.attention.layer_norm_rms_epsilon"), 1e-5f32);
    m.kv(&format!("{a}.attention.scale"), 0.3f32);
    m.kv(&format!("{a}.embedding_scale"), 6.0f32);
    m.kv(&format!("{a}.residual_scale"), 0.5f32);
    m.kv(&format!("{a}.logit_scale"), 2.0f32);
    m.kv(&format!("{a}.rope.scaling.finetuned"), false);
    m.kv(&format!("{a}.expert_count"), n_expert as u32);
    m.kv(&format!("{a}.expert_used_count"), 2u32);
    m.kv(&format!("{a}.expert_shared_feed_forward_length"), n_shexp as u32);
    m.kv(&format!("{a}.ssm.conv_kernel"), k as u32);
    m.kv(&format!("{a}.ssm.inner_size"), e as u32);
    m.kv(&format!("{a}.ssm.state_size"), n as u32);
    m.kv(&format!("{a}.ssm.time_step_rank"), h as u32);
    m.kv(&format!("{a}.ssm.group_count"), g as u32);
    m.vocab(vocab);
    m.head(d, vocab, "output_norm.weight", false);
    for i in 0..layers {
        m.norm(&format!("blk.{i}.attn_norm.weight"), &[d]);
        if kv[i as usize] == 0 {
            m.mamba2_mixer(i, d, e, n, k, h, g, true);
        } else {
            m.attention(i, d, n_head, kv[i as usize] as u64, d / n_head);
        }
        m.norm(&format!("blk.{i}.ffn_norm.weight"), &[d]);
        m.experts(i, d, n_ff, n_expert, true);
        m.ffn(i, "_shexp", d, n_shexp, true);
    }
    m.w.to_bytes().expect("tiny granitehybrid")
}

/// Nemotron-H MoE's layout, pattern `M E * M E`: Mamba-2 (2 groups), sigmoid MoEs of ReLU²
/// experts (selection bias, renormalised, ×2.5) with a ReLU² shared expert, attention without
/// RoPE with head size 12 (not d/heads).
pub fn tiny_nemotron_h() -> Vec<u8> {
    let (d, layers, e, n, k, h, g, vocab) = (32u64, 5u64, 64u64, 16u64, 4u64, 8u64, 2u64, 256u64);
    let (n_head, hd, n_ff_exp, n_shexp, n_expert) = (4u64, 12u64, 32u64, 40u64, 4u64);
    let kv: [i32; 5] = [0, 0, 2, 0, 0];
    let ff: [i32; 5] = [0, 64, 0, 0, 64];
    let a = "nemotron_h_moe";
    let mut m = Model::new(a, TINY_NEMOTRON_NAME, 0x6e65_6d6f_7472);
    m.kv("general.file_type", FTYPE_MOSTLY_F16);
    m.kv(&format!("{a}.block_count"), layers as u32);
    m.kv(&format!("{a}.context_length"), 1u32 << 20);
    m.kv(&format!("{a}.embedding_length"), d as u32);
    m.kv(&format!("{a}.feed_forward_length"), GgufValue::Array(GgufArray::I32(ff.to_vec())));
    m.kv(&format!("{a}.attention.head_count"), n_head as u32);
    m.kv(&format!("{a}.attention.head_count_kv"), GgufValue::Array(GgufArray::I32(kv.to_vec())));
    m.kv(&format!("{a}.attention.key_length"), hd as u32);
    m.kv(&format!("{a}.attention.value_length"), hd as u32);
    m.kv(&format!("{a}.attention.layer_norm_rms_epsilon"), 1e-5f32);
    m.kv(&format!("{a}.expert_count"), n_expert as u32);
    m.kv(&format!("{a}.expert_used_count"), 2u32);
    m.kv(&format!("{a}.expert_feed_forward_length"), n_ff_exp as u32);
    m.kv(&format!("{a}.expert_shared_feed_forward_length"), n_shexp as u32);
    m.kv(&format!("{a}.expert_weights_norm"), true);
    m.kv(&format!("{a}.expert_weights_scale"), 2.5f32);
    m.kv(&format!("{a}.ssm.conv_kernel"), k as u32);
    m.kv(&format!("{a}.ssm.inner_size"), e as u32);
    m.kv(&format!("{a}.ssm.state_size"), n as u32);
    m.kv(&format!("{a}.ssm.time_step_rank"), h as u32);
    m.kv(&format!("{a}.ssm.group_count"), g as u32);
    m.vocab(vocab);
    m.head(d, vocab, "output_norm.weight", false);
    for i in 0..layers {
        m.norm(&format!("blk.{i}.attn_norm.weight"), &[d]);
        if ff[i as usize] > 0 {
            m.experts(i, d, n_ff_exp, n_expert, false);
            let bias = m.rng.vec(n_expert as usize, 0.3);
            m.f32(&format!("blk.{i}.exp_probs_b.bias"), &[n_expert], bias);
            m.ffn(i, "_shexp", d, n_shexp, false);
        } else if kv[i as usize] > 0 {
            m.attention(i, d, n_head, kv[i as usize] as u64, hd);
        } else {
            m.mamba2_mixer(i, d, e, n, k, h, g, true);
        }
    }
    m.w.to_bytes().expect("tiny nemotron_h_moe")
}

/// Falcon-H1's layout: attention (RoPE NEOX, 4 heads / 2 KV) and Mamba-2 (d_inner 48, not 2·d)
/// in parallel on both layers, the FFN norm without `.weight`, tied output.
pub fn tiny_falcon_h1() -> Vec<u8> {
    let (d, layers, e, n, k, h, g, vocab) = (32u64, 2u64, 48u64, 16u64, 4u64, 6u64, 1u64, 256u64);
    let (n_head, n_kv, n_ff) = (4u64, 2u64, 64u64);
    let a = "falcon-h1";
    let mut m = Model::new(a, TINY_FALCON_H1_NAME, 0x6661_6c63_6f6e);
    m.kv("general.file_type", FTYPE_MOSTLY_F16);
    m.kv(&format!("{a}.block_count"), layers as u32);
    m.kv(&format!("{a}.context_length"), 16384u32);
    m.kv(&format!("{a}.embedding_length"), d as u32);
    m.kv(&format!("{a}.feed_forward_length"), n_ff as u32);
    m.kv(&format!("{a}.attention.head_count"), n_head as u32);
    m.kv(&format!("{a}.attention.head_count_kv"), n_kv as u32);
    m.kv(&format!("{a}.attention.key_length"), (d / n_head) as u32);
    m.kv(&format!("{a}.attention.value_length"), (d / n_head) as u32);
    m.kv(&format!("{a}.attention.layer_norm_rms_epsilon"), 1e-5f32);
    m.kv(&format!("{a}.rope.freq_base"), 100000f32);
    m.kv(&format!("{a}.ssm.conv_kernel"), k as u32);
    m.kv(&format!("{a}.ssm.inner_size"), e as u32);
    m.kv(&format!("{a}.ssm.state_size"), n as u32);
    m.kv(&format!("{a}.ssm.time_step_rank"), h as u32);
    m.kv(&format!("{a}.ssm.group_count"), g as u32);
    m.vocab(vocab);
    m.head(d, vocab, "output_norm.weight", true);
    for i in 0..layers {
        m.norm(&format!("blk.{i}.attn_norm.weight"), &[d]);
        m.attention(i, d, n_head, n_kv, d / n_head);
        m.mamba2_mixer(i, d, e, n, k, h, g, i == 0);
        m.norm(&format!("blk.{i}.ffn_norm"), &[d]);
        m.ffn(i, "", d, n_ff, true);
    }
    m.w.to_bytes().expect("tiny falcon-h1")
}

/// LFM2-MoE's layout: short convs (width 3) and attention with QK-norm and RoPE NEOX on layer 1,
/// a dense SwiGLU on layer 0, then sigmoid MoE (4 experts, top 2, selection bias), the final norm
/// as `token_embd_norm`, tied output.
pub fn tiny_lfm2() -> Vec<u8> {
    let (d, layers, l_cache, vocab) = (32u64, 4u64, 3u64, 256u64);
    let (n_head, n_ff, n_ff_exp, n_expert) = (4u64, 64u64, 32u64, 4u64);
    let kv: [i32; 4] = [0, 2, 0, 0];
    let a = "lfm2moe";
    let mut m = Model::new(a, TINY_LFM2_NAME, 0x6c66_6d32_6d6f);
    m.kv("general.file_type", FTYPE_MOSTLY_F16);
    m.kv(&format!("{a}.block_count"), layers as u32);
    m.kv(&format!("{a}.context_length"), 128000u32);
    m.kv(&format!("{a}.embedding_length"), d as u32);
    m.kv(&format!("{a}.feed_forward_length"), n_ff as u32);
    m.kv(&format!("{a}.expert_feed_forward_length"), n_ff_exp as u32);
    m.kv(&format!("{a}.attention.head_count"), n_head as u32);
    m.kv(&format!("{a}.attention.head_count_kv"), GgufValue::Array(GgufArray::I32(kv.to_vec())));
    m.kv(&format!("{a}.attention.layer_norm_rms_epsilon"), 1e-5f32);
    m.kv(&format!("{a}.rope.freq_base"), 1000000f32);
    m.kv(&format!("{a}.shortconv.l_cache"), l_cache as u32);
    m.kv(&format!("{a}.expert_count"), n_expert as u32);
    m.kv(&format!("{a}.expert_used_count"), 2u32);
    m.kv(&format!("{a}.expert_gating_func"), 2u32);
    m.kv(&format!("{a}.leading_dense_block_count"), 1u32);
    m.vocab(vocab);
    m.head(d, vocab, "token_embd_norm.weight", true);
    for i in 0..layers {
        let p = |s: &str| format!("blk.{i}.{s}");
        m.norm(&p("attn_norm.weight"), &[d]);
        if kv[i as usize] > 0 {
            let hd = d / n_head;
            m.attention(i, d, n_head, kv[i as usize] as u64, hd);
            m.norm(&p("attn_q_norm.weight"), &[hd]);
            m.norm(&p("attn_k_norm.weight"), &[hd]);
        } else {
            m.matrix(&p("shortconv.in_proj.weight"), &[d, 3 * d]);
            let conv = m.rng.vec((l_cache * d) as usize, 1.0 / (l_cache as f32).sqrt());
            m.f32(&p("shortconv.conv.weight"), &[l_cache, d], conv);
            m.matrix(&p("shortconv.out_proj.weight"), &[d, d]);
        }
        m.norm(&p("ffn_norm.weight"), &[d]);
        if i == 0 {
            m.ffn(i, "", d, n_ff, true);
        } else {
            m.experts(i, d, n_ff_exp, n_expert, true);
            let bias = m.rng.vec(n_expert as usize, 0.3);
            m.f32(&p("exp_probs_b.bias"), &[n_expert], bias);
        }
    }
    m.w.to_bytes().expect("tiny lfm2moe")
}

/// Every model: (file name, bytes).
pub fn all_models() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("tiny-mamba.gguf", tiny_mamba()),
        ("tiny-mamba2.gguf", tiny_mamba2()),
        ("tiny-jamba.gguf", tiny_jamba()),
        ("tiny-granite-hybrid.gguf", tiny_granite_hybrid()),
        ("tiny-nemotron-h.gguf", tiny_nemotron_h()),
        ("tiny-falcon-h1.gguf", tiny_falcon_h1()),
        ("tiny-lfm2.gguf", tiny_lfm2()),
    ]
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
