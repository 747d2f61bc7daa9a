//! Random-weight models of a given shape, as GGUF files in llama.cpp's layout: for benchmarks
//! (mamba-130m / mamba2-130m shapes) and tests (odd shapes, quantized matrices). Seeded, so the
//! same spec gives the same bytes on every target. The weights are scaled so activations stay in
//! a realistic range (no NaN, no overflow), but the models produce noise.

use super::hparams::Arch;
use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::{GgmlType, GgufValue, GgufWriter};
use crate::util::SplitMix64;

/// The shape and storage of a synthetic model.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    pub arch: Arch,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub d_inner: usize,
    pub d_state: usize,
    pub d_conv: usize,
    /// Mamba-1 only.
    pub dt_rank: usize,
    /// Mamba-2 only.
    pub head_dim: usize,
    /// Mamba-2 only.
    pub n_group: usize,
    /// Type of the matrices (embedding and projections); matrices whose rows are not whole blocks
    /// of it are written as F16.
    pub matrix_type: GgmlType,
    /// No `output.weight` (the embedding is reused).
    pub tied: bool,
    /// Falcon-Mamba's dt/B/C norms.
    pub dt_b_c_rms: bool,
    pub eps: f32,
    pub seed: u64,
    /// Jamba only: the attention/FFN part of the shape.
    pub jamba: Option<JambaShape>,
}

/// The Jamba-specific part of a [`SynthSpec`]. The Mamba layers use the spec's SSM fields
/// (Mamba-1, with dt/B/C norm weights).
#[derive(Debug, Clone, PartialEq)]
pub struct JambaShape {
    /// Attention query heads.
    pub n_head: usize,
    /// KV heads per layer (0: a Mamba layer).
    pub n_head_kv: Vec<usize>,
    /// Whether each layer's FFN is MoE.
    pub moe: Vec<bool>,
    pub n_ff: usize,
    pub n_expert: usize,
    pub n_expert_used: usize,
}

impl SynthSpec {
    /// state-spaces/mamba-130m: d_model 768, 24 layers, d_state 16, dt_rank 48, vocab 50280.
    pub fn mamba_130m() -> SynthSpec {
        SynthSpec {
            arch: Arch::Mamba,
            n_vocab: 50280,
            n_embd: 768,
            n_layer: 24,
            d_inner: 1536,
            d_state: 16,
            d_conv: 4,
            dt_rank: 48,
            head_dim: 0,
            n_group: 1,
            matrix_type: GgmlType::F16,
            tied: true,
            dt_b_c_rms: false,
            eps: 1e-5,
            seed: 130,
            jamba: None,
        }
    }

    /// state-spaces/mamba2-130m: d_model 768, 24 layers, d_state 128, head_dim 64 (24 heads),
    /// 1 group, vocab 50288.
    pub fn mamba2_130m() -> SynthSpec {
        SynthSpec {
            arch: Arch::Mamba2,
            n_vocab: 50288,
            n_embd: 768,
            n_layer: 24,
            d_inner: 1536,
            d_state: 128,
            d_conv: 4,
            dt_rank: 0,
            head_dim: 64,
            n_group: 1,
            matrix_type: GgmlType::F16,
            tied: true,
            dt_b_c_rms: false,
            eps: 1e-5,
            seed: 230,
            jamba: None,
        }
    }

    /// A Jamba of a realistic small shape for benchmarks: d_model 1024, 8 layers, attention
    /// (8 heads of 128, 2 KV heads) at layers 2 and 6, 8 experts top-2 on the odd layers, n_ff
    /// 2048, d_inner 2048, d_state 16, dt_rank 64, vocabulary 32000, untied output.
    pub fn jamba_bench() -> SynthSpec {
        let n_layer = 8;
        SynthSpec {
            arch: Arch::Jamba,
            n_vocab: 32000,
            n_embd: 1024,
            n_layer,
            d_inner: 2048,
            d_state: 16,
            d_conv: 4,
            dt_rank: 64,
            head_dim: 0,
            n_group: 1,
            matrix_type: GgmlType::F16,
            tied: false,
            dt_b_c_rms: false,
            eps: 1e-6,
            seed: 330,
            jamba: Some(JambaShape {
                n_head: 8,
                n_head_kv: (0..n_layer).map(|i| if i == 2 || i == 6 { 2 } else { 0 }).collect(),
                moe: (0..n_layer).map(|i| i % 2 == 1).collect(),
                n_ff: 2048,
                n_expert: 8,
                n_expert_used: 2,
            }),
        }
    }

    /// A small model for tests.
    pub fn tiny(arch: Arch) -> SynthSpec {
        let mut s = match arch {
            Arch::Mamba => SynthSpec::mamba_130m(),
            Arch::Mamba2 => SynthSpec::mamba2_130m(),
            Arch::Jamba => SynthSpec::jamba_bench(),
            other => SynthSpec { arch: other, ..SynthSpec::mamba2_130m() },
        };
        s.n_vocab = 96;
        s.n_embd = 32;
        s.n_layer = 2;
        s.d_inner = 64;
        s.d_state = if arch == Arch::Mamba { 8 } else { 16 };
        s.dt_rank = 4;
        s.head_dim = 16;
        s.n_group = if arch == Arch::Mamba2 { 2 } else { 1 };
        s.matrix_type = GgmlType::F32;
        s.tied = false;
        s.seed = 7;
        if arch == Arch::Jamba {
            s.n_layer = 4;
            s.jamba = Some(JambaShape {
                n_head: 4,
                n_head_kv: vec![0, 2, 0, 4],
                moe: vec![false, true, false, true],
                n_ff: 48,
                n_expert: 4,
                n_expert_used: 2,
            });
        }
        s
    }
}

struct Gen(SplitMix64);

impl Gen {
    /// Uniform in [-a, a).
    fn sym(&mut self, n: usize, a: f32) -> Vec<f32> {
        (0..n).map(|_| (self.0.next_f32() * 2.0 - 1.0) * a).collect()
    }
    fn range(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| lo + (hi - lo) * self.0.next_f32()).collect()
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `rows` × `cols` values as `ty` bytes.
fn encode(ty: GgmlType, v: &[f32], cols: usize) -> Result<Vec<u8>> {
    let rb = crate::quant::row_bytes(ty, cols).ok_or_else(|| {
        CoilError::new(ErrorCode::InvalidArgument, format!("{cols} columns are not whole {ty} blocks"))
    })?;
    let rows = v.len() / cols;
    let mut out = vec![0u8; rb * rows];
    for r in 0..rows {
        crate::quant::quantize_row(ty, &v[r * cols..(r + 1) * cols], &mut out[r * rb..(r + 1) * rb])?;
    }
    Ok(out)
}

/// Builds the GGUF bytes of a random model of shape `s`.
pub fn synth_gguf(s: &SynthSpec) -> Result<Vec<u8>> {
    let mut g = Gen(SplitMix64::new(s.seed));
    let a = s.arch.name();
    if !matches!(s.arch, Arch::Mamba | Arch::Mamba2 | Arch::Jamba) {
        return Err(CoilError::new(ErrorCode::InvalidArgument, format!("synth: {a} models are not supported yet")));
    }
    let (d, e, n, k) = (s.n_embd, s.d_inner, s.d_state, s.d_conv);
    let mut w = GgufWriter::new();
    let u32v = |x: usize| GgufValue::U32(x as u32);
    w.add_metadata("general.architecture", GgufValue::String(a.into()));
    w.add_metadata("general.name", GgufValue::String(format!("synthetic {a}")));
    let jp = match (s.arch, &s.jamba) {
        (Arch::Jamba, Some(j)) if j.n_head_kv.len() == s.n_layer && j.moe.len() == s.n_layer => Some(j),
        (Arch::Jamba, _) => {
            return Err(CoilError::new(ErrorCode::InvalidArgument, "synth: a jamba spec needs its per-layer shape"))
        }
        _ => None,
    };
    w.add_metadata(format!("{a}.context_length"), u32v(if jp.is_some() { 4096 } else { 1 << 20 }));
    w.add_metadata(format!("{a}.embedding_length"), u32v(d));
    w.add_metadata(format!("{a}.feed_forward_length"), u32v(jp.map_or(0, |j| j.n_ff)));
    w.add_metadata(format!("{a}.attention.head_count"), u32v(jp.map_or(0, |j| j.n_head)));
    if let Some(j) = jp {
        let kv: Vec<i32> = j.n_head_kv.iter().map(|&x| x as i32).collect();
        w.add_metadata(format!("{a}.attention.head_count_kv"), GgufValue::Array(crate::gguf::GgufArray::I32(kv)));
        w.add_metadata(format!("{a}.expert_count"), u32v(j.n_expert));
        w.add_metadata(format!("{a}.expert_used_count"), u32v(j.n_expert_used));
    }
    w.add_metadata(format!("{a}.block_count"), u32v(s.n_layer));
    w.add_metadata(format!("{a}.ssm.conv_kernel"), u32v(k));
    w.add_metadata(format!("{a}.ssm.inner_size"), u32v(e));
    w.add_metadata(format!("{a}.ssm.state_size"), u32v(n));
    let (h, gr) = match s.arch {
        Arch::Jamba => {
            w.add_metadata(format!("{a}.ssm.time_step_rank"), u32v(s.dt_rank));
            (e, 1)
        }
        Arch::Mamba => {
            w.add_metadata(format!("{a}.ssm.time_step_rank"), u32v(s.dt_rank));
            w.add_metadata(format!("{a}.ssm.dt_b_c_rms"), GgufValue::Bool(s.dt_b_c_rms));
            (e, 1)
        }
        Arch::Mamba2 => {
            if s.head_dim == 0 || !e.is_multiple_of(s.head_dim) || !(e / s.head_dim).is_multiple_of(s.n_group.max(1)) {
                return Err(CoilError::new(
                    ErrorCode::InvalidArgument,
                    "synth: d_inner / head_dim / n_group do not divide",
                ));
            }
            w.add_metadata(format!("{a}.ssm.time_step_rank"), u32v(e / s.head_dim));
            w.add_metadata(format!("{a}.ssm.group_count"), u32v(s.n_group));
            (e / s.head_dim, s.n_group)
        }
        _ => {
            return Err(CoilError::new(ErrorCode::InvalidArgument, format!("synth: {a} models are not supported yet")))
        }
    };
    w.add_metadata(format!("{a}.attention.layer_norm_rms_epsilon"), GgufValue::F32(s.eps));
    // No vocabulary, in the form llama.cpp accepts (so `llama-bench` runs the same file).
    w.add_metadata(format!("{a}.vocab_size"), u32v(s.n_vocab));
    w.add_metadata("tokenizer.ggml.model", GgufValue::String("none".into()));
    let mt = s.matrix_type;
    let mut mat = |w: &mut GgufWriter, name: String, rows: usize, cols: usize, scale: f32| -> Result<()> {
        let v = g.sym(rows * cols, scale);
        // Rows that are not whole blocks of the type fall back to F16 (as llama-quantize falls
        // back for e.g. ssm_dt, whose rows are dt_rank long).
        let ty = if (cols as u64).is_multiple_of(mt.block_size()) { mt } else { GgmlType::F16 };
        w.add_tensor(name, vec![cols as u64, rows as u64], ty.id(), encode(ty, &v, cols)?)?;
        Ok(())
    };
    mat(&mut w, "token_embd.weight".into(), s.n_vocab, d, 1.0)?;
    let mut g2 = Gen(SplitMix64::new(s.seed ^ 0x5eed));
    let f32t = |w: &mut GgufWriter, name: String, dims: Vec<u64>, v: Vec<f32>| -> Result<()> {
        w.add_tensor(name, dims, GgmlType::F32.id(), f32_bytes(&v))?;
        Ok(())
    };
    f32t(&mut w, "output_norm.weight".into(), vec![d as u64], g2.range(d, 0.8, 1.2))?;
    if !s.tied {
        mat(&mut w, "output.weight".into(), s.n_vocab, d, 0.5)?;
    }
    let inv = |x: usize| 1.0 / (x as f32).sqrt();
    let mut g3 = Gen(SplitMix64::new(s.seed ^ 0xe4e));
    for i in 0..s.n_layer {
        let b = |x: &str| format!("blk.{i}.{x}");
        f32t(&mut w, b("attn_norm.weight"), vec![d as u64], g2.range(d, 0.8, 1.2))?;
        // dt_bias = softplus⁻¹(dt) for dt log-uniform in [1e-3, 1e-1], as mamba_ssm initialises it.
        let dt_bias = |g: &mut Gen, m: usize| -> Vec<f32> {
            g.range(m, (1e-3f32).ln(), (1e-1f32).ln())
                .iter()
                .map(|l| {
                    let dt = l.exp();
                    dt + (-(-dt).exp_m1()).ln()
                })
                .collect()
        };
        let attn = jp.is_some_and(|j| j.n_head_kv[i] > 0);
        match s.arch {
            Arch::Jamba if attn => {
                let j = jp.expect("jamba shape");
                let hd = d / j.n_head;
                let kvd = j.n_head_kv[i] * hd;
                mat(&mut w, b("attn_q.weight"), d, d, inv(d))?;
                mat(&mut w, b("attn_k.weight"), kvd, d, inv(d))?;
                mat(&mut w, b("attn_v.weight"), kvd, d, inv(d))?;
                mat(&mut w, b("attn_output.weight"), d, d, inv(d))?;
            }
            Arch::Mamba | Arch::Jamba => {
                let r = s.dt_rank;
                mat(&mut w, b("ssm_in.weight"), 2 * e, d, inv(d))?;
                f32t(&mut w, b("ssm_conv1d.weight"), vec![k as u64, e as u64], g2.sym(k * e, 0.5))?;
                f32t(&mut w, b("ssm_conv1d.bias"), vec![e as u64], g2.sym(e, 0.1))?;
                mat(&mut w, b("ssm_x.weight"), r + 2 * n, e, inv(e))?;
                mat(&mut w, b("ssm_dt.weight"), e, r, inv(r))?;
                let v = dt_bias(&mut g2, e);
                f32t(&mut w, b("ssm_dt.bias"), vec![e as u64], v)?;
                // A = −(n+1) per channel (S4D-real), as GGUF stores it: {N, E}.
                let av: Vec<f32> = (0..e * n).map(|j| -((j % n) as f32 + 1.0)).collect();
                f32t(&mut w, b("ssm_a"), vec![n as u64, e as u64], av)?;
                f32t(&mut w, b("ssm_d"), vec![e as u64], g2.range(e, 0.5, 1.5))?;
                mat(&mut w, b("ssm_out.weight"), d, e, inv(e))?;
                if s.arch == Arch::Jamba {
                    f32t(&mut w, b("ssm_dt_norm.weight"), vec![r as u64], g2.range(r, 0.8, 1.2))?;
                    f32t(&mut w, b("ssm_b_norm.weight"), vec![n as u64], g2.range(n, 0.8, 1.2))?;
                    f32t(&mut w, b("ssm_c_norm.weight"), vec![n as u64], g2.range(n, 0.8, 1.2))?;
                }
            }
            Arch::Mamba2 => {
                let cd = e + 2 * gr * n;
                mat(&mut w, b("ssm_in.weight"), 2 * e + 2 * gr * n + h, d, inv(d))?;
                f32t(&mut w, b("ssm_conv1d.weight"), vec![k as u64, cd as u64], g2.sym(k * cd, 0.5))?;
                f32t(&mut w, b("ssm_conv1d.bias"), vec![cd as u64], g2.sym(cd, 0.1))?;
                let v = dt_bias(&mut g2, h);
                f32t(&mut w, b("ssm_dt.bias"), vec![h as u64], v)?;
                let av: Vec<f32> = g2.range(h, 0.0, 16f32.ln()).iter().map(|x| -x.exp()).collect();
                f32t(&mut w, b("ssm_a"), vec![1, h as u64], av)?;
                f32t(&mut w, b("ssm_d"), vec![1, h as u64], g2.range(h, 0.5, 1.5))?;
                f32t(&mut w, b("ssm_norm.weight"), vec![(e / gr) as u64, gr as u64], g2.range(e, 0.8, 1.2))?;
                mat(&mut w, b("ssm_out.weight"), d, e, inv(e))?;
            }
            _ => {
                return Err(CoilError::new(
                    ErrorCode::InvalidArgument,
                    format!("synth: {a} models are not supported yet"),
                ))
            }
        }
        if let Some(j) = jp {
            let f = j.n_ff;
            f32t(&mut w, b("ffn_norm.weight"), vec![d as u64], g2.range(d, 0.8, 1.2))?;
            if j.moe[i] {
                let x = j.n_expert;
                // The router stays F32, as llama.cpp's converter and quantizer keep it.
                f32t(&mut w, b("ffn_gate_inp.weight"), vec![d as u64, x as u64], g2.sym(d * x, inv(d)))?;
                let mut stacked =
                    |w: &mut GgufWriter, name: String, rows: usize, cols: usize, scale: f32| -> Result<()> {
                        let v = g3.sym(rows * cols * x, scale);
                        let ty = if (cols as u64).is_multiple_of(mt.block_size()) { mt } else { GgmlType::F16 };
                        w.add_tensor(name, vec![cols as u64, rows as u64, x as u64], ty.id(), encode(ty, &v, cols)?)?;
                        Ok(())
                    };
                stacked(&mut w, b("ffn_gate_exps.weight"), f, d, inv(d))?;
                stacked(&mut w, b("ffn_up_exps.weight"), f, d, inv(d))?;
                stacked(&mut w, b("ffn_down_exps.weight"), d, f, inv(f))?;
            } else {
                mat(&mut w, b("ffn_gate.weight"), f, d, inv(d))?;
                mat(&mut w, b("ffn_up.weight"), f, d, inv(d))?;
                mat(&mut w, b("ffn_down.weight"), d, f, inv(f))?;
            }
        }
    }
    w.to_bytes()
}

// ---------------------------------------------------------------------------------------------
// The 2025–26 hybrids: random-weight models of real shapes, for benchmarks
// ---------------------------------------------------------------------------------------------

/// What one layer of a [`HybridSpec`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HybridLayer {
    /// A Mamba-2 mixer (then the FFN, except for Nemotron-H).
    Mamba,
    /// Attention (then the FFN, except for Nemotron-H).
    Attention,
    /// Falcon-H1: attention and Mamba-2 side by side, then the FFN.
    Parallel,
    /// LFM2's short conv, then the FFN.
    ShortConv,
    /// Nemotron-H: an FFN-only layer.
    Ffn,
}

/// The shape of a hybrid model: one of `granitehybrid`, `nemotron_h`, `falcon-h1`, `lfm2`.
#[derive(Debug, Clone, PartialEq)]
pub struct HybridSpec {
    pub arch: Arch,
    pub n_vocab: usize,
    pub n_embd: usize,
    pub layers: Vec<HybridLayer>,
    /// Mamba-2: d_inner, d_state, heads, groups; LFM2: conv width in `d_conv`.
    pub d_inner: usize,
    pub d_state: usize,
    pub d_conv: usize,
    pub n_ssm_head: usize,
    pub n_group: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub tied: bool,
    pub matrix_type: GgmlType,
    pub seed: u64,
}

impl HybridSpec {
    /// Granite-4.0-H-1B's shape: d_model 1536, 40 layers with attention (12 heads of 128, 4 KV,
    /// no RoPE) at 5, 15, 25 and 35, Mamba-2 elsewhere (d_inner 3072, 48 heads of 64, d_state
    /// 128, 1 group), dense SwiGLU FFN 4096 on every layer, vocabulary 100352, tied.
    pub fn granite_4_0_h_1b() -> HybridSpec {
        HybridSpec {
            arch: Arch::GraniteHybrid,
            n_vocab: 100352,
            n_embd: 1536,
            layers: (0..40).map(|i| if i % 10 == 5 { HybridLayer::Attention } else { HybridLayer::Mamba }).collect(),
            d_inner: 3072,
            d_state: 128,
            d_conv: 4,
            n_ssm_head: 48,
            n_group: 1,
            n_head: 12,
            n_head_kv: 4,
            head_dim: 128,
            n_ff: 4096,
            tied: true,
            matrix_type: GgmlType::F16,
            seed: 410,
        }
    }

    /// LFM2-1.2B's shape: d_model 2048, 16 layers with attention (32 heads of 64, 8 KV, QK-norm,
    /// RoPE) at 2, 5, 8, 10, 12 and 14 and short convs (width 3) elsewhere, SwiGLU FFN 8192,
    /// vocabulary 65536, tied.
    pub fn lfm2_1_2b() -> HybridSpec {
        let attn = [2, 5, 8, 10, 12, 14];
        HybridSpec {
            arch: Arch::Lfm2,
            n_vocab: 65536,
            n_embd: 2048,
            layers: (0..16)
                .map(|i| if attn.contains(&i) { HybridLayer::Attention } else { HybridLayer::ShortConv })
                .collect(),
            d_inner: 2048,
            d_state: 0,
            d_conv: 3,
            n_ssm_head: 0,
            n_group: 1,
            n_head: 32,
            n_head_kv: 8,
            head_dim: 64,
            n_ff: 8192,
            tied: true,
            matrix_type: GgmlType::F16,
            seed: 420,
        }
    }

    /// Eight layers of NVIDIA-Nemotron-Nano-9B-v2's shape (`M-M*M-M-`): d_model 4480, Mamba-2
    /// with d_inner 10240 (128 heads of 80), d_state 128, 8 groups; ReLU² MLP 15680; attention
    /// with 40 heads of 128, 8 KV, no RoPE; vocabulary 131072, untied.
    pub fn nemotron_h_9b_slice() -> HybridSpec {
        use HybridLayer::*;
        HybridSpec {
            arch: Arch::NemotronH,
            n_vocab: 131072,
            n_embd: 4480,
            layers: vec![Mamba, Ffn, Mamba, Attention, Mamba, Ffn, Mamba, Ffn],
            d_inner: 10240,
            d_state: 128,
            d_conv: 4,
            n_ssm_head: 128,
            n_group: 8,
            n_head: 40,
            n_head_kv: 8,
            head_dim: 128,
            n_ff: 15680,
            tied: false,
            matrix_type: GgmlType::F16,
            seed: 430,
        }
    }

    /// Falcon-H1-0.5B's shape: d_model 1024, 36 layers of attention (8 heads of 64, 2 KV, RoPE)
    /// beside Mamba-2 (d_inner 1536, 24 heads of 64, d_state 128, 1 group), SwiGLU FFN 2048,
    /// vocabulary 32768, untied.
    pub fn falcon_h1_0_5b() -> HybridSpec {
        HybridSpec {
            arch: Arch::FalconH1,
            n_vocab: 32768,
            n_embd: 1024,
            layers: vec![HybridLayer::Parallel; 36],
            d_inner: 1536,
            d_state: 128,
            d_conv: 4,
            n_ssm_head: 24,
            n_group: 1,
            n_head: 8,
            n_head_kv: 2,
            head_dim: 64,
            n_ff: 2048,
            tied: false,
            matrix_type: GgmlType::F16,
            seed: 440,
        }
    }

    /// The same layer pattern at test size: d_model 48, Mamba-2 d_inner 96 in 4 heads of 24 (2
    /// groups when the preset has several), d_state 16, attention 4 heads of 12 with 2 KV heads
    /// (Nemotron-H: heads of 3, an odd size its key_length allows), FFN 80, vocabulary 300, F32
    /// matrices, at most 8 layers.
    pub fn shrunk(&self) -> HybridSpec {
        let mut s = self.clone();
        s.n_vocab = 300;
        s.n_embd = 48;
        s.layers.truncate(8);
        if s.arch != Arch::Lfm2 {
            s.d_inner = 96;
            s.d_state = 16;
            s.n_ssm_head = 4;
            s.n_group = if self.n_group > 1 { 2 } else { 1 };
        } else {
            s.d_inner = 48;
        }
        s.n_head = 4;
        s.n_head_kv = 2;
        s.head_dim = if s.arch == Arch::NemotronH { 3 } else { 12 };
        s.n_ff = 80;
        s.matrix_type = GgmlType::F32;
        s
    }

    /// The preset of a name (`granite-4.0-h-1b`, `lfm2-1.2b`, `nemotron-h-9b-slice`,
    /// `falcon-h1-0.5b`).
    pub fn by_name(name: &str) -> Option<HybridSpec> {
        Some(match name {
            "granite-4.0-h-1b" => HybridSpec::granite_4_0_h_1b(),
            "lfm2-1.2b" => HybridSpec::lfm2_1_2b(),
            "nemotron-h-9b-slice" => HybridSpec::nemotron_h_9b_slice(),
            "falcon-h1-0.5b" => HybridSpec::falcon_h1_0_5b(),
            _ => return None,
        })
    }
}

/// llama.cpp's `general.file_type` for "mostly `ty`" (so its tools label the file right): the
/// converter's table.
fn file_type(ty: GgmlType) -> u32 {
    crate::convert::OutType::from_name(&ty.to_string().to_lowercase()).and_then(|o| o.file_type()).unwrap_or(0)
}

/// Builds the GGUF bytes of a random hybrid model of shape `s`, in llama.cpp's layout.
pub fn synth_hybrid_gguf(s: &HybridSpec) -> Result<Vec<u8>> {
    use HybridLayer::*;
    let a = s.arch.name();
    let (d, e, n, k, h, g) = (s.n_embd, s.d_inner, s.d_state, s.d_conv, s.n_ssm_head, s.n_group);
    let hd = s.head_dim;
    let bad = |m: &str| CoilError::new(ErrorCode::InvalidArgument, format!("synth {a}: {m}"));
    let allowed: &[HybridLayer] = match s.arch {
        Arch::GraniteHybrid => &[Mamba, Attention],
        Arch::NemotronH => &[Mamba, Attention, Ffn],
        Arch::FalconH1 => &[Parallel],
        Arch::Lfm2 => &[ShortConv, Attention],
        _ => return Err(bad("not a hybrid architecture")),
    };
    if s.layers.iter().any(|l| !allowed.contains(l)) {
        return Err(bad("a layer kind the architecture does not have"));
    }
    let mut w = GgufWriter::new();
    let u32v = |x: usize| GgufValue::U32(x as u32);
    let key = |s: &str| format!("{a}.{s}");
    w.add_metadata("general.architecture", GgufValue::String(a.into()));
    w.add_metadata("general.name", GgufValue::String(format!("synthetic {a}")));
    let n_layer = s.layers.len();
    w.add_metadata(key("block_count"), u32v(n_layer));
    w.add_metadata(key("context_length"), u32v(1 << 20));
    w.add_metadata(key("embedding_length"), u32v(d));
    w.add_metadata(key("vocab_size"), u32v(s.n_vocab));
    w.add_metadata(key("attention.layer_norm_rms_epsilon"), GgufValue::F32(1e-5));
    if s.arch == Arch::NemotronH {
        // llama.cpp requires it (its MTP head's norm), as its converter writes it.
        w.add_metadata(key("attention.layer_norm_epsilon"), GgufValue::F32(1e-5));
    }
    w.add_metadata(key("attention.head_count"), u32v(s.n_head));
    let has_attn = |l: HybridLayer| matches!(l, Attention | Parallel);
    let kv: Vec<i32> = s.layers.iter().map(|&l| if has_attn(l) { s.n_head_kv as i32 } else { 0 }).collect();
    if s.arch == Arch::FalconH1 {
        w.add_metadata(key("attention.head_count_kv"), u32v(s.n_head_kv));
    } else {
        w.add_metadata(key("attention.head_count_kv"), GgufValue::Array(crate::gguf::GgufArray::I32(kv)));
    }
    w.add_metadata(key("attention.key_length"), u32v(hd));
    w.add_metadata(key("attention.value_length"), u32v(hd));
    if s.arch == Arch::NemotronH {
        let ff: Vec<i32> = s.layers.iter().map(|&l| if l == Ffn { s.n_ff as i32 } else { 0 }).collect();
        w.add_metadata(key("feed_forward_length"), GgufValue::Array(crate::gguf::GgufArray::I32(ff)));
    } else {
        w.add_metadata(key("feed_forward_length"), u32v(s.n_ff));
    }
    match s.arch {
        Arch::Lfm2 => {
            w.add_metadata(key("shortconv.l_cache"), u32v(k));
            w.add_metadata(key("rope.freq_base"), GgufValue::F32(1e6));
        }
        _ => {
            w.add_metadata(key("ssm.conv_kernel"), u32v(k));
            w.add_metadata(key("ssm.inner_size"), u32v(e));
            w.add_metadata(key("ssm.state_size"), u32v(n));
            w.add_metadata(key("ssm.time_step_rank"), u32v(h));
            w.add_metadata(key("ssm.group_count"), u32v(g));
        }
    }
    if s.arch == Arch::GraniteHybrid {
        w.add_metadata(key("rope.scaling.finetuned"), GgufValue::Bool(false));
        w.add_metadata(key("embedding_scale"), GgufValue::F32(12.0));
        w.add_metadata(key("residual_scale"), GgufValue::F32(0.22));
        w.add_metadata(key("logit_scale"), GgufValue::F32(6.0));
        w.add_metadata(key("attention.scale"), GgufValue::F32(1.0 / hd as f32));
    }
    if s.arch == Arch::FalconH1 {
        w.add_metadata(key("rope.freq_base"), GgufValue::F32(1e11));
    }
    w.add_metadata("tokenizer.ggml.model", GgufValue::String("none".into()));
    w.add_metadata("general.file_type", GgufValue::U32(file_type(s.matrix_type)));

    let mut g1 = Gen(SplitMix64::new(s.seed));
    let mut g2 = Gen(SplitMix64::new(s.seed ^ 0x5eed));
    let mt = s.matrix_type;
    let inv = |x: usize| 1.0 / (x as f32).sqrt();
    // A `rows` × `cols` matrix (ggml `{cols, rows}`); rows that are not whole blocks of the type
    // get llama-quantize's fallback (Q4_K -> Q5_0 for Nemotron-H's 4480 columns, say).
    let mut mat = |w: &mut GgufWriter, name: String, rows: usize, cols: usize, scale: f32| -> Result<()> {
        let v = g1.sym(rows * cols, scale);
        let ty = crate::quant::rules::fallback_type(mt, cols as u64);
        w.add_tensor(name, vec![cols as u64, rows as u64], ty.id(), encode(ty, &v, cols)?)?;
        Ok(())
    };
    let f32t = |w: &mut GgufWriter, name: String, dims: Vec<u64>, v: Vec<f32>| -> Result<()> {
        w.add_tensor(name, dims, GgmlType::F32.id(), f32_bytes(&v))?;
        Ok(())
    };
    mat(&mut w, "token_embd.weight".into(), s.n_vocab, d, 1.0)?;
    let out_norm = if s.arch == Arch::Lfm2 { "token_embd_norm.weight" } else { "output_norm.weight" };
    f32t(&mut w, out_norm.into(), vec![d as u64], g2.range(d, 0.8, 1.2))?;
    if !s.tied {
        mat(&mut w, "output.weight".into(), s.n_vocab, d, 0.5)?;
    }
    for (i, &kind) in s.layers.iter().enumerate() {
        let b = |x: &str| format!("blk.{i}.{x}");
        f32t(&mut w, b("attn_norm.weight"), vec![d as u64], g2.range(d, 0.8, 1.2))?;
        if has_attn(kind) {
            mat(&mut w, b("attn_q.weight"), s.n_head * hd, d, inv(d))?;
            mat(&mut w, b("attn_k.weight"), s.n_head_kv * hd, d, inv(d))?;
            mat(&mut w, b("attn_v.weight"), s.n_head_kv * hd, d, inv(d))?;
            mat(&mut w, b("attn_output.weight"), d, s.n_head * hd, inv(s.n_head * hd))?;
            if s.arch == Arch::Lfm2 {
                f32t(&mut w, b("attn_q_norm.weight"), vec![hd as u64], g2.range(hd, 0.8, 1.2))?;
                f32t(&mut w, b("attn_k_norm.weight"), vec![hd as u64], g2.range(hd, 0.8, 1.2))?;
            }
        }
        if matches!(kind, Mamba | Parallel) {
            let cd = e + 2 * g * n;
            mat(&mut w, b("ssm_in.weight"), 2 * e + 2 * g * n + h, d, inv(d))?;
            f32t(&mut w, b("ssm_conv1d.weight"), vec![k as u64, cd as u64], g2.sym(k * cd, 0.5))?;
            f32t(&mut w, b("ssm_conv1d.bias"), vec![cd as u64], g2.sym(cd, 0.1))?;
            let dt: Vec<f32> =
                g2.range(h, (1e-3f32).ln(), (1e-1f32).ln()).iter().map(|l| l.exp().exp_m1().ln()).collect();
            f32t(&mut w, b("ssm_dt.bias"), vec![h as u64], dt)?;
            let av: Vec<f32> = g2.range(h, 0.0, 16f32.ln()).iter().map(|x| -x.exp()).collect();
            f32t(&mut w, b("ssm_a"), vec![1, h as u64], av)?;
            f32t(&mut w, b("ssm_d"), vec![1, h as u64], g2.range(h, 0.5, 1.5))?;
            f32t(&mut w, b("ssm_norm.weight"), vec![(e / g) as u64, g as u64], g2.range(e, 0.8, 1.2))?;
            mat(&mut w, b("ssm_out.weight"), d, e, inv(e))?;
        }
        if kind == ShortConv {
            mat(&mut w, b("shortconv.in_proj.weight"), 3 * d, d, inv(d))?;
            f32t(&mut w, b("shortconv.conv.weight"), vec![k as u64, d as u64], g2.sym(k * d, 0.5))?;
            mat(&mut w, b("shortconv.out_proj.weight"), d, d, inv(d))?;
        }
        let f = s.n_ff;
        match (s.arch, kind) {
            (Arch::NemotronH, Ffn) => {
                mat(&mut w, b("ffn_up.weight"), f, d, inv(d))?;
                mat(&mut w, b("ffn_down.weight"), d, f, inv(f))?;
            }
            (Arch::NemotronH, _) => {}
            _ => {
                let norm = if s.arch == Arch::FalconH1 { b("ffn_norm") } else { b("ffn_norm.weight") };
                f32t(&mut w, norm, vec![d as u64], g2.range(d, 0.8, 1.2))?;
                mat(&mut w, b("ffn_gate.weight"), f, d, inv(d))?;
                mat(&mut w, b("ffn_up.weight"), f, d, inv(d))?;
                mat(&mut w, b("ffn_down.weight"), d, f, inv(f))?;
            }
        }
    }
    w.to_bytes()
}
