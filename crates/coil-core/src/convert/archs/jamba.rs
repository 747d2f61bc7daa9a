//! `jamba`: `JambaForCausalLM` (llama.cpp `conversion/jamba.py`, which reads the config through
//! transformers' `AutoConfig`, so `JambaConfig`'s defaults stand in for absent keys).
//!
//! Config: `hidden_size`/`mamba_d_model` (4096), `mamba_d_conv` (4), `mamba_expand` (2),
//! `mamba_d_state` (16), `mamba_dt_rank` (⌈D/16⌉), `layer_norm_epsilon`/`rms_norm_eps` (1e-6),
//! `num_attention_heads` (32), `num_key_value_heads` (8; `null`: the head count),
//! `intermediate_size` (14336), attention on layers `attn_layer_offset` (4) + k·`attn_layer_period`
//! (8), experts on `expert_layer_offset` (1) + k·`expert_layer_period` (2), `num_experts` (16),
//! `num_experts_per_tok` (2), `max_position_embeddings` (262144).
//!
//! Tensors (`model.layers.N.`): `input_layernorm` -> `attn_norm`; Mamba layers `mamba.in_proj`,
//! `conv1d`, `x_proj`, `dt_layernorm`/`b_layernorm`/`c_layernorm` (optional), `dt_proj`, `A_log`,
//! `D`, `out_proj`; attention layers `self_attn.{q,k,v,o}_proj`; `pre_ff_layernorm` -> `ffn_norm`;
//! MoE layers `feed_forward.router` -> `ffn_gate_inp` and the experts stacked into
//! `ffn_{gate,up,down}_exps` (transformers 5's fused `experts.gate_up_proj` `[X, 2F, D]` is split
//! back into gate, the first half, and up); the lone `experts.0` of a dense layer (or plain
//! `gate_proj`/`up_proj`/`down_proj`) -> `ffn_{gate,up,down}`. Mini-Jamba's `.moe.` is
//! `.feed_forward.`.

use super::{attention, experts, n_layer, split_layer, AttnShape, AttnSrc, Built, Cx, ExpertSrc, Md};
use crate::convert::tensors::{Planner, Take};
use crate::error::Result;
use serde_json::Value;

struct Hp {
    d_model: u64,
    n_layer: u64,
    d_inner: u64,
    d_state: u64,
    d_conv: u64,
    dt_rank: u64,
    eps: f32,
    n_ff: u64,
    n_head: u64,
    n_kv_head: u64,
    attn_offset: u64,
    attn_period: u64,
    expert_offset: u64,
    expert_period: u64,
    n_expert: u64,
    n_expert_used: u64,
    context_length: u64,
}

impl Hp {
    fn is_attention(&self, layer: u64) -> bool {
        layer >= self.attn_offset && (layer - self.attn_offset).is_multiple_of(self.attn_period)
    }

    /// llama.cpp's test for MoE layers: `bid >= offset and (bid - offset) % period == 0`.
    fn is_moe(&self, layer: u64) -> bool {
        layer >= self.expert_offset && (layer - self.expert_offset).is_multiple_of(self.expert_period)
    }
}

fn hparams(cx: &Cx, warnings: &mut Vec<String>) -> Result<Hp> {
    let (c, dir) = (cx.cfg, cx.dir);
    let n_layer = n_layer(cx)?;
    let d_model = c.int_opt(&["hidden_size", "mamba_d_model"]).unwrap_or(4096);
    let expand = c.int_opt(&["mamba_expand"]).unwrap_or(2);
    let n_head = c.int_opt(&["num_attention_heads"]).unwrap_or(32);
    let n_kv_head = match c.raw.get("num_key_value_heads") {
        Some(Value::Null) => n_head,
        Some(v) => crate::convert::config::as_int(v).unwrap_or(8),
        None => 8,
    };
    // Offsets may be 0 (AutoConfig keeps a 0); periods must be positive.
    let hp = Hp {
        d_model,
        n_layer,
        d_inner: expand.saturating_mul(d_model),
        d_state: c.int_or(&["mamba_d_state"], 16),
        d_conv: c.int_or(&["mamba_d_conv"], 4),
        dt_rank: c.int_or(&["mamba_dt_rank"], d_model.div_ceil(16)),
        eps: c.float_or(&["layer_norm_epsilon", "rms_norm_eps"], 1e-6) as f32,
        n_ff: c.int_opt(&["intermediate_size"]).unwrap_or(14336),
        n_head,
        n_kv_head,
        attn_offset: c.int_get(&["attn_layer_offset"]).unwrap_or(4),
        attn_period: c.int_opt(&["attn_layer_period"]).unwrap_or(8),
        expert_offset: c.int_get(&["expert_layer_offset"]).unwrap_or(1),
        expert_period: c.int_opt(&["expert_layer_period"]).unwrap_or(2),
        n_expert: c.int_opt(&["num_experts", "num_local_experts"]).unwrap_or(16),
        n_expert_used: c.int_opt(&["num_experts_per_tok"]).unwrap_or(2),
        context_length: c.int_opt(&["max_position_embeddings", "n_ctx"]).unwrap_or(262144),
    };
    if c.raw.get("attn_layer_period").is_some_and(|v| v.as_u64() == Some(0))
        || c.raw.get("expert_layer_period").is_some_and(|v| v.as_u64() == Some(0))
    {
        return Err(c.err(dir, "attn_layer_period and expert_layer_period must be positive"));
    }
    if n_head == 0 || !d_model.is_multiple_of(n_head) {
        return Err(c.err(dir, format!("hidden size {d_model} is not a multiple of num_attention_heads {n_head}")));
    }
    if d_model > u32::MAX as u64 || hp.d_inner > u32::MAX as u64 {
        return Err(c.err(dir, "a dimension does not fit in 32 bits"));
    }
    if hp.d_inner != d_model.saturating_mul(2) {
        warnings
            .push(format!("mamba_expand is {expand}: llama.cpp loads only Jamba models with an expansion factor of 2"));
    }
    Ok(hp)
}

/// Mini-Jamba's `.moe.` is `.feed_forward.`; transformers 5's fused experts may lack `.weight`.
fn canon(name: &str) -> Option<String> {
    let n = name.replace(".moe.", ".feed_forward.");
    if let Some((bid, rest)) = split_layer(&n, "model.layers.") {
        if rest == "feed_forward.experts.gate_up_proj" || rest == "feed_forward.experts.down_proj" {
            return Some(format!("model.layers.{bid}.{rest}.weight"));
        }
    }
    Some(n)
}

pub(super) fn build(cx: &Cx) -> Result<Built> {
    let mut warnings = Vec::new();
    let hp = hparams(cx, &mut warnings)?;
    let (d, e, n, k, r) = (hp.d_model, hp.d_inner, hp.d_state, hp.d_conv, hp.dt_rank);
    let (f, x) = (hp.n_ff, hp.n_expert);

    let mut md = Md::new(cx.cfg.arch);
    md.u32("block_count", hp.n_layer)?;
    md.u32("context_length", hp.context_length)?;
    md.u32("embedding_length", d)?;
    md.u32("feed_forward_length", f)?;
    md.u32("attention.head_count", hp.n_head)?;
    let kv: Vec<u64> = (0..hp.n_layer).map(|i| if hp.is_attention(i) { hp.n_kv_head } else { 0 }).collect();
    md.i32s("attention.head_count_kv", &kv)?;
    md.u32("ssm.conv_kernel", k)?;
    md.u32("ssm.inner_size", e)?;
    md.u32("ssm.state_size", n)?;
    md.u32("ssm.time_step_rank", r)?;
    md.f32("attention.layer_norm_rms_epsilon", hp.eps as f64);
    md.u32("expert_count", x)?;
    md.u32("expert_used_count", hp.n_expert_used)?;
    md.file_type(cx.file_type);

    let mut p = Planner::new(cx.ck, cx.cfg.arch.name(), canon)?;
    let vocab_size = cx.cfg.int_opt(&["vocab_size"]).or(Some(65536));
    let n_vocab = p.embedding("token_embd.weight", "model.embed_tokens.weight", d, vocab_size, None, 1.0)?;
    let attn = AttnShape { d_model: d, n_head: hp.n_head, n_kv: hp.n_kv_head, head_dim: d / hp.n_head };
    for bid in 0..hp.n_layer {
        let g = |x: &str| format!("blk.{bid}.{x}");
        let s = |x: &str| format!("model.layers.{bid}.{x}");
        p.take(Take::new(g("attn_norm.weight"), s("input_layernorm.weight"), &[d]))?;
        if hp.is_attention(bid) {
            attention(&mut p, bid, &attn, &AttnSrc::new(s("self_attn."), "o_proj"))?;
        } else {
            p.take(Take::new(g("ssm_in.weight"), s("mamba.in_proj.weight"), &[2 * e, d]))?;
            p.take(Take::new(g("ssm_conv1d.weight"), s("mamba.conv1d.weight"), &[e, 1, k]).alt(&[e, k]).out(&[e, k]))?;
            p.take(Take::new(g("ssm_conv1d.bias"), s("mamba.conv1d.bias"), &[e]))?;
            p.take(Take::new(g("ssm_x.weight"), s("mamba.x_proj.weight"), &[r.saturating_add(2 * n), e]))?;
            p.take(Take::new(g("ssm_dt_norm.weight"), s("mamba.dt_layernorm.weight"), &[r]).optional())?;
            for (gn, lower, upper) in
                [("ssm_b_norm", "b_layernorm", "B_layernorm"), ("ssm_c_norm", "c_layernorm", "C_layernorm")]
            {
                if let Some(src) = p.pick(&[s(&format!("mamba.{lower}.weight")), s(&format!("mamba.{upper}.weight"))]) {
                    p.take(Take::new(g(&format!("{gn}.weight")), src, &[n]))?;
                }
            }
            p.take(Take::new(g("ssm_dt.weight"), s("mamba.dt_proj.weight"), &[e, r]))?;
            p.take(Take::new(g("ssm_dt.bias"), s("mamba.dt_proj.bias"), &[e]))?;
            p.take(Take::new(g("ssm_a"), s("mamba.A_log"), &[e, n]).neg_exp())?;
            p.take(Take::new(g("ssm_d"), s("mamba.D"), &[e]))?;
            p.take(Take::new(g("ssm_out.weight"), s("mamba.out_proj.weight"), &[d, e]))?;
        }
        let ffn_norm = p
            .pick(&[s("pre_ff_layernorm.weight"), s("pre_moe_layernorm.weight")])
            .unwrap_or_else(|| s("pre_ff_layernorm.weight"));
        p.take(Take::new(g("ffn_norm.weight"), ffn_norm, &[d]))?;
        let ff = |x: &str| s(&format!("feed_forward.{x}"));
        if hp.is_moe(bid) {
            let router = p.pick(&[ff("router.weight"), ff("gate.weight")]).unwrap_or_else(|| ff("router.weight"));
            p.take(Take::new(g("ffn_gate_inp.weight"), router, &[x, d]))?;
            let each = |kind: &str| (0..x).map(|i| ff(&format!("experts.{i}.{kind}_proj.weight"))).collect();
            let gate_up = ff("experts.gate_up_proj.weight");
            if p.has(&gate_up) {
                let fused = |first| ExpertSrc::Fused { name: gate_up.clone(), rows: 2 * f, first };
                experts(&mut p, bid, "gate", x, f, d, fused(0))?;
                experts(&mut p, bid, "up", x, f, d, fused(f))?;
            } else {
                experts(&mut p, bid, "gate", x, f, d, ExpertSrc::Each(each("gate")))?;
                experts(&mut p, bid, "up", x, f, d, ExpertSrc::Each(each("up")))?;
            }
            let down = ff("experts.down_proj.weight");
            if p.has(&down) {
                p.take(Take::new(g("ffn_down_exps.weight"), down, &[x, d, f]))?;
            } else {
                experts(&mut p, bid, "down", x, d, f, ExpertSrc::Each(each("down")))?;
            }
        } else {
            for (kind, shape) in [("gate", [f, d]), ("up", [f, d]), ("down", [d, f])] {
                let plain = ff(&format!("{kind}_proj.weight"));
                let src = p.pick(&[plain.clone(), ff(&format!("experts.0.{kind}_proj.weight"))]).unwrap_or(plain);
                p.take(Take::new(g(&format!("ffn_{kind}.weight")), src, &shape))?;
            }
        }
    }
    p.take(Take::new("output_norm.weight", "model.final_layernorm.weight", &[d]))?;
    super::output(&mut p, "lm_head.weight", n_vocab, d, 1.0)?;
    let plan = p.finish(n_vocab, false)?;
    Ok(Built { metadata: md.kv, plan, warnings })
}
