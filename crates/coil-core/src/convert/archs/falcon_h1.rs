//! `falcon-h1`: `FalconH1ForCausalLM`, as llama.cpp's `conversion/falcon_h1.py` `FalconH1Model` (a
//! `Mamba2Model` reading `config.json` raw, keys also looked up with a `mamba_` prefix) writes it.
//! Every layer runs attention (RoPE NEOX, no q/k permutation) and a Mamba-2 mixer side by side on
//! the same normed input, then a SwiGLU FFN.
//!
//! Config: `hidden_size`; `mamba_d_ssm` = E (else `mamba_expand`·D); `mamba_d_head` (64), heads =
//! E / head; `mamba_n_groups` (1); `mamba_d_state` (256); `mamba_d_conv` (4); `mamba_rms_norm`
//! (whether the mixer has its group norm); `num_attention_heads`, `num_key_value_heads` (8),
//! `head_dim` (D / heads); `intermediate_size`; `rms_norm_eps` (1e-5); `rope_theta` (in
//! `rope_parameters`, 1e4); `max_position_embeddings`.
//!
//! The µP multipliers are folded into the weights, as llama.cpp does (its runtime has no keys for
//! them): `token_embd` × `embedding_multiplier`, `output` × `lm_head_multiplier`, q and v ×
//! `attention_in_multiplier`, k × `attention_in_multiplier` · `key_multiplier`, `attn_output` ×
//! `attention_out_multiplier`, `ssm_in` × `ssm_in_multiplier` and its z, x, B, C, dt row blocks ×
//! `ssm_multipliers[0..5]` (dt before `dt_bias` is added, as transformers' `mup_vector` does),
//! `ssm_out` × `ssm_out_multiplier`, `ffn_gate` × `mlp_multipliers[0]`, `ffn_down` ×
//! `mlp_multipliers[1]`. Each product is computed in f64 from the source value and rounded once
//! (llama.cpp multiplies in the checkpoint's dtype, so F16 checkpoints get one more f16 rounding).
//!
//! Tensors (`model.layers.N.`): `input_layernorm` -> `attn_norm`; `self_attn.{q,k,v,o}_proj`;
//! `mamba.*` as the Mamba-2 mixer; `pre_ff_layernorm` -> `blk.N.ffn_norm` (llama.cpp's name has no
//! `.weight`); `feed_forward.{gate,up,down}_proj`; `model.embed_tokens` -> `token_embd`,
//! `model.final_layernorm` -> `output_norm`, `lm_head` -> `output`.
//!
//! Where coil writes another file than llama.cpp, and why:
//! * A positive `time_step_limit[0]` (transformers clamps Δ to it) is written as `ssm.dt_min` for
//!   coil's runtime; llama.cpp does not clamp.
//! * Tied embeddings (no `lm_head.weight`, as Falcon-H1-Tiny): transformers computes the logits
//!   with the unscaled embedding × `lm_head_multiplier`. llama.cpp writes no `output`, so its
//!   runtime reuses `token_embd`, which it scaled by `embedding_multiplier`: logits off by
//!   `embedding_multiplier / lm_head_multiplier`. coil writes an untied `output.weight` =
//!   embedding × `lm_head_multiplier` (left out only when both multipliers are equal).
//! * The defaults of absent keys are transformers' (`mamba_d_state` 256, `head_dim` D / heads),
//!   where llama.cpp would use Mamba-2's or fail.

use super::{attention, dense_ffn, mamba2_mixer, AttnShape, AttnSrc, Built, Cx, FfnSrc, Mamba2Opts, Md, Ssm2};
use crate::convert::config::with_prefix;
use crate::convert::tensors::{Planner, Take};
use crate::error::Result;

pub(super) fn build(cx: &Cx) -> Result<Built> {
    let (c, dir) = (cx.cfg, cx.dir);
    let mut warnings = Vec::new();
    let keys = |k: &[&str]| with_prefix(k, "mamba");
    let n_layer = super::n_layer(cx)?;
    let d = c.int_req(&keys(&["hidden_size", "d_model", "dim"]), dir)?;
    let expand = c.int_or(&keys(&["expand"]), 2);
    let d_inner = c.int_opt(&["mamba_d_ssm"]).unwrap_or(expand.saturating_mul(d));
    let d_head = c.int_or(&keys(&["mamba_d_head", "head_dim"]), 64);
    if d_head == 0 || !d_inner.is_multiple_of(d_head) {
        return Err(c.err(dir, format!("mamba_d_ssm {d_inner} is not a multiple of mamba_d_head {d_head}")));
    }
    let ssm = Ssm2 {
        d_model: d,
        d_inner,
        d_state: c.int_or(&keys(&["state_size", "d_state"]), 256),
        n_group: c.int_or(&keys(&["n_groups"]), 1),
        n_head: d_inner / d_head,
    };
    ssm.check(cx)?;
    if let Some(h) = c.int_opt(&["mamba_n_heads"]).filter(|&h| h != ssm.n_head) {
        return Err(c.err(dir, format!("mamba_n_heads {h} contradicts mamba_d_ssm {d_inner} / mamba_d_head {d_head}")));
    }
    let d_conv = c.int_or(&keys(&["conv_kernel", "d_conv"]), 4);
    let eps = c.float_or(&keys(&["layer_norm_epsilon", "rms_norm_eps"]), 1e-5);
    let n_head = c.int_req(&["num_attention_heads"], dir)?;
    let n_kv = c.int_get(&["num_key_value_heads"]).unwrap_or(8);
    if n_head == 0 || n_kv == 0 || !n_head.is_multiple_of(n_kv) {
        return Err(c.err(dir, format!("{n_head} attention heads cannot share {n_kv} KV heads")));
    }
    let head_dim = c.int_get(&["head_dim"]).unwrap_or(d / n_head);
    let n_ff = c.int_req(&["intermediate_size"], dir)?;
    let rms_norm = c.bool_get("mamba_rms_norm").unwrap_or(false);
    // transformers' default is to normalise before the gate; llama.cpp has no key for it and always
    // gates first. coil records it (`ssm.norm_before_gate`, which llama.cpp ignores) and computes it.
    let norm_before_gate = rms_norm && c.bool_get("mamba_norm_before_gate").unwrap_or(true);
    if norm_before_gate {
        warnings.push(
            "mamba_norm_before_gate: the GGUF records it as falcon-h1.ssm.norm_before_gate; coil normalises before the gate as transformers does, llama.cpp (which ignores the key) gates first"
                .to_string(),
        );
    }

    // µP multipliers (transformers' defaults: 1).
    let m = |k: &str| c.float_get(&[k]).unwrap_or(1.0);
    let ssm_m = c.floats("ssm_multipliers").unwrap_or(vec![1.0; 5]);
    let mlp_m = c.floats("mlp_multipliers").unwrap_or(vec![1.0; 2]);
    if ssm_m.len() != 5 || mlp_m.len() != 2 {
        return Err(c.err(dir, "ssm_multipliers must have 5 numbers and mlp_multipliers 2"));
    }
    let (emb_m, lm_m) = (m("embedding_multiplier"), m("lm_head_multiplier"));
    let (attn_in, attn_out, key_m) = (m("attention_in_multiplier"), m("attention_out_multiplier"), m("key_multiplier"));

    // ---- metadata (Mamba2Model's keys, then FalconH1Model's) ----
    let mut md = Md::new(c.arch);
    md.u32("context_length", 1 << 20)?;
    md.u32("embedding_length", d)?;
    md.u32("feed_forward_length", 0)?;
    md.u32("attention.head_count", 0)?;
    md.u32("block_count", n_layer)?;
    md.u32("ssm.conv_kernel", d_conv)?;
    md.u32("ssm.inner_size", d_inner)?;
    md.u32("ssm.state_size", ssm.d_state)?;
    md.u32("ssm.time_step_rank", ssm.n_head)?;
    if let Some(m) = super::dt_min_from_limit(c, &mut warnings) {
        md.f32("ssm.dt_min", m);
    }
    md.u32("ssm.group_count", ssm.n_group)?;
    if norm_before_gate {
        md.bool("ssm.norm_before_gate", true);
    }
    md.f32("attention.layer_norm_rms_epsilon", eps);
    md.file_type(cx.file_type);
    if let Some(v) = c.int_get(&["vocab_size"]) {
        md.u32("vocab_size", v)?;
    }
    md.u32("context_length", c.int_get(&["max_position_embeddings"]).unwrap_or(0))?;
    md.u32("feed_forward_length", n_ff)?;
    md.u32("attention.head_count", n_head)?;
    md.u32("attention.head_count_kv", n_kv)?;
    md.u32("attention.key_length", head_dim)?;
    md.u32("attention.value_length", head_dim)?;
    let theta = super::rope_params(c).get("rope_theta").and_then(|v| v.as_f64()).unwrap_or(10000.0);
    md.f32("rope.freq_base", theta);

    // ---- tensors ----
    let mut p = Planner::new(cx.ck, c.arch.name(), |n| Some(n.to_string()))?;
    let n_vocab =
        p.embedding("token_embd.weight", "model.embed_tokens.weight", d, c.int_opt(&["vocab_size"]), None, emb_m)?;
    let shape = AttnShape { d_model: d, n_head, n_kv, head_dim };
    let conv_bias = c.bool_get("mamba_conv_bias").unwrap_or(true);
    for bid in 0..n_layer {
        let s = |x: &str| format!("model.layers.{bid}.{x}");
        for b in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "feed_forward.gate_proj",
            "feed_forward.down_proj",
            "mamba.in_proj",
            "mamba.out_proj",
        ] {
            if p.has(&s(&format!("{b}.bias"))) {
                return Err(c.err(dir, format!("{}: biases on Falcon-H1's scaled projections are not supported", s(b))));
            }
        }
        p.take(Take::new(format!("blk.{bid}.attn_norm.weight"), s("input_layernorm.weight"), &[d]))?;
        let mut a = AttnSrc::new(s("self_attn."), "o_proj");
        a.scales = [attn_in, attn_in * key_m, attn_in, attn_out];
        attention(&mut p, bid, &shape, &a)?;
        let o = Mamba2Opts {
            conv_bias_required: conv_bias,
            norm: rms_norm.then_some(true),
            in_blocks: Some([ssm_m[0], ssm_m[1], ssm_m[2], ssm_m[3], ssm_m[4]]),
            in_scale: m("ssm_in_multiplier"),
            out_scale: m("ssm_out_multiplier"),
        };
        mamba2_mixer(&mut p, bid, &s("mamba."), &ssm, d_conv, &o)?;
        p.take(Take::new(format!("blk.{bid}.ffn_norm"), s("pre_ff_layernorm.weight"), &[d]))?;
        let ff = |x: &str| s(&format!("feed_forward.{x}_proj.weight"));
        let src = FfnSrc {
            gate: Some(ff("gate")),
            up: ff("up"),
            down: ff("down"),
            gate_scale: mlp_m[0],
            down_scale: mlp_m[1],
        };
        dense_ffn(&mut p, bid, "", d, n_ff, &src)?;
    }
    p.take(Take::new("output_norm.weight", "model.final_layernorm.weight", &[d]))?;
    if !super::output(&mut p, "lm_head.weight", n_vocab, d, lm_m)? && lm_m != emb_m {
        // Tied: see the module docs.
        p.take(Take::new("output.weight", "model.embed_tokens.weight", &[n_vocab, d]).scale(lm_m))?;
    }
    let plan = p.finish(n_vocab, false)?;
    Ok(Built { metadata: md.kv, plan, warnings })
}
