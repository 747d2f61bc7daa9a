//! `lfm2` and `lfm2moe`: `Lfm2ForCausalLM` and `Lfm2MoeForCausalLM` (LiquidAI LFM2 / LFM2.5), as
//! llama.cpp's `conversion/lfm2.py` `LFM2Model` / `LFM2MoeModel` write them. llama.cpp reads the
//! config through transformers' `AutoConfig`, so `Lfm2Config`'s / `Lfm2MoeConfig`'s defaults fill
//! absent keys, and the transformers 4 spellings `block_ff_dim` and `tie_embedding` count as
//! `intermediate_size` and `tie_word_embeddings`.
//!
//! Each layer is a gated short convolution (`conv`) or attention with per-head QK RMS norms
//! (`full_attention`), from `layer_types` (else the legacy `full_attn_idxs`), then a SwiGLU FFN or,
//! in lfm2moe after `num_dense_layers`, a sigmoid-routed MoE chosen with `expert_bias`.
//!
//! Config: `hidden_size`, `num_attention_heads`, `num_key_value_heads` (written per layer: 0 on
//! conv layers), `norm_eps`, `conv_L_cache` (the conv width), `rope_theta`; lfm2's FFN width
//! follows `block_auto_adjust_ff_dim`: `ff = int(2·ff/3)`, `ff = int(block_ffn_dim_multiplier ·
//! ff)`, rounded up to a multiple of `block_multiple_of`; lfm2moe: `intermediate_size` (dense
//! layers) and `moe_intermediate_size`, `num_experts`, `num_experts_per_tok`, gating func 2
//! (sigmoid).
//!
//! Tensors (`model.layers.N.`): `operator_norm` -> `attn_norm`; `conv.in_proj` ->
//! `shortconv.in_proj`, `conv.conv` `[D, 1, L]` -> `shortconv.conv` `{L, D}`, `conv.out_proj` ->
//! `shortconv.out_proj`; `self_attn.{q,k,v}_proj`, `self_attn.out_proj` -> `attn_output`,
//! `self_attn.{q,k}_layernorm` -> `attn_{q,k}_norm`; `ffn_norm`; `feed_forward.w1` / `w3` / `w2` ->
//! `ffn_gate` / `ffn_up` / `ffn_down`; MoE `feed_forward.gate` -> `ffn_gate_inp`,
//! `feed_forward.expert_bias` -> `exp_probs_b.bias`, `feed_forward.experts.X.w{1,3,2}` stacked;
//! `model.embed_tokens` -> `token_embd`; `model.embedding_norm` -> `token_embd_norm`, which is the
//! final norm (llama.cpp's `LLM_TENSOR_OUTPUT_NORM_LFM2`); `lm_head` -> `output` (absent: tied).
//!
//! Where coil writes another file than llama.cpp: lfm2moe's `routed_scaling_factor` (transformers
//! multiplies the renormalised expert weights by it) is written as `expert_weights_scale` when it
//! is not 1; llama.cpp's converter drops it.

use serde_json::json;

use super::{
    attention, dense_ffn, experts, split_layer, text_model_keys, AttnShape, AttnSrc, Built, Cx, ExpertSrc, FfnSrc, Md,
};
use crate::convert::config::Arch;
use crate::convert::tensors::{Planner, Take};
use crate::error::Result;

/// llama.cpp's `_add_feed_forward_length`.
fn adjusted_ff(ff: u64, auto: bool, multiplier: Option<f64>, multiple_of: u64) -> u64 {
    if !auto {
        return ff;
    }
    let mut f = (2.0 * ff as f64 / 3.0) as u64;
    if let Some(m) = multiplier {
        f = (m * f as f64) as u64;
    }
    let m = multiple_of.max(1);
    m * f.div_ceil(m)
}

fn canon(name: &str) -> Option<String> {
    let n = match name.strip_prefix("lfm.") {
        Some(r) => format!("model.{r}"),
        None => name.to_string(),
    };
    if let Some((bid, rest)) = split_layer(&n, "model.layers.") {
        if rest == "feed_forward.experts.gate_up_proj" || rest == "feed_forward.experts.down_proj" {
            return Some(format!("model.layers.{bid}.{rest}.weight"));
        }
    }
    Some(n)
}

pub(super) fn build(cx: &Cx) -> Result<Built> {
    let moe = cx.cfg.arch == Arch::Lfm2Moe;
    let mut warnings = Vec::new();
    // transformers' defaults and renames, as AutoConfig hands the config to llama.cpp.
    let mut defaults = vec![
        ("max_position_embeddings", json!(128000)),
        ("norm_eps", json!(1e-5)),
        ("num_attention_heads", json!(32)),
        ("num_key_value_heads", json!(8)),
        ("conv_L_cache", json!(3)),
    ];
    if let Some(ff) = cx.cfg.raw.get("block_ff_dim").filter(|v| !v.is_null()) {
        defaults.push(("intermediate_size", ff.clone()));
    }
    if moe {
        defaults.extend([
            ("num_experts", json!(32)),
            ("num_experts_per_tok", json!(4)),
            ("moe_intermediate_size", json!(1792)),
            ("num_dense_layers", json!(2)),
        ]);
    }
    let c = &cx.cfg.with_defaults(&defaults);
    let dir = cx.dir;
    let cx = &Cx { cfg: c, dir, ck: cx.ck, file_type: cx.file_type };
    let n_layer = super::n_layer(cx)?;

    let attn: Vec<bool> = match c.strings("layer_types") {
        Some(t) => {
            if t.len() as u64 != n_layer {
                return Err(c.err(dir, format!("layer_types lists {} layers for {n_layer}", t.len())));
            }
            t.iter()
                .map(|t| match t.as_str() {
                    "conv" => Ok(false),
                    "full_attention" | "attention" => Ok(true),
                    other => Err(c.err(dir, format!("unknown layer type {other:?} in layer_types"))),
                })
                .collect::<Result<_>>()?
        }
        None => match c.ints("full_attn_idxs") {
            Some(idx) => (0..n_layer).map(|i| idx.contains(&i)).collect(),
            None => vec![true; n_layer as usize],
        },
    };

    let d = c.int_req(&["hidden_size"], dir)?;
    let n_head = c.int_req(&["num_attention_heads"], dir)?;
    let n_kv = c.int_req(&["num_key_value_heads"], dir)?;
    if n_head == 0 || n_kv == 0 || !n_head.is_multiple_of(n_kv) || !d.is_multiple_of(n_head) {
        return Err(c.err(dir, format!("{n_head} attention heads of {d} dims cannot share {n_kv} KV heads")));
    }
    let l_cache = c.int_req(&["conv_L_cache"], dir)?;
    let ff_raw = c.int_or(&["intermediate_size"], 12288);
    let n_ff = if moe {
        ff_raw
    } else {
        adjusted_ff(
            ff_raw,
            c.bool_get("block_auto_adjust_ff_dim").unwrap_or(true),
            if c.raw.contains_key("block_ffn_dim_multiplier") {
                c.float_get(&["block_ffn_dim_multiplier"])
            } else {
                Some(1.0)
            },
            c.int_or(&["block_multiple_of"], 256),
        )
    };
    let (n_expert, f_exp, n_dense) = (
        c.int_or(&["num_experts"], 0),
        c.int_or(&["moe_intermediate_size"], 0),
        c.int_get(&["num_dense_layers"]).unwrap_or(0),
    );
    if moe {
        if !c.bool_get("use_expert_bias").unwrap_or(true) {
            return Err(c.err(dir, "use_expert_bias false is not supported (the runtime needs exp_probs_b)"));
        }
        if !c.bool_get("norm_topk_prob").unwrap_or(true) {
            warnings.push(
                "norm_topk_prob is false, but llama.cpp and coil renormalise the chosen experts' weights".to_string(),
            );
        }
    }

    // ---- metadata ----
    let mut md = Md::new(c.arch);
    text_model_keys(&mut md, cx, n_layer, &|k| k.iter().map(|s| s.to_string()).collect(), true)?;
    let kv: Vec<u64> = attn.iter().map(|&a| if a { n_kv } else { 0 }).collect();
    md.i32s("attention.head_count_kv", &kv)?;
    if moe {
        md.u32("expert_feed_forward_length", f_exp)?;
        md.u32("leading_dense_block_count", n_dense)?;
        md.u32("expert_gating_func", 2)?;
        let scale = c.float_get(&["routed_scaling_factor"]).unwrap_or(1.0);
        if scale != 1.0 {
            md.f32("expert_weights_scale", scale);
        }
    }
    if let Some(v) = c.int_get(&["vocab_size"]) {
        md.u32("vocab_size", v)?;
    }
    md.u32("shortconv.l_cache", l_cache)?;
    if !moe {
        md.f32("attention.layer_norm_rms_epsilon", c.float_or(&["norm_eps"], 1e-5));
        md.u32("feed_forward_length", n_ff)?;
    }

    // ---- tensors ----
    let mut p = Planner::new(cx.ck, c.arch.name(), canon)?;
    let n_vocab =
        p.embedding("token_embd.weight", "model.embed_tokens.weight", d, c.int_opt(&["vocab_size"]), None, 1.0)?;
    let shape = AttnShape { d_model: d, n_head, n_kv, head_dim: d / n_head };
    for bid in 0..n_layer {
        let g = |x: &str| format!("blk.{bid}.{x}");
        let s = |x: &str| format!("model.layers.{bid}.{x}");
        p.take(Take::new(g("attn_norm.weight"), s("operator_norm.weight"), &[d]))?;
        if attn[bid as usize] {
            let mut a = AttnSrc::new(s("self_attn."), "out_proj");
            a.qk_norm = Some(("q_layernorm", "k_layernorm"));
            attention(&mut p, bid, &shape, &a)?;
        } else {
            p.take(Take::new(g("shortconv.in_proj.weight"), s("conv.in_proj.weight"), &[3 * d, d]))?;
            p.take(
                Take::new(g("shortconv.conv.weight"), s("conv.conv.weight"), &[d, 1, l_cache])
                    .alt(&[d, l_cache])
                    .out(&[d, l_cache]),
            )?;
            p.take(Take::new(g("shortconv.out_proj.weight"), s("conv.out_proj.weight"), &[d, d]))?;
        }
        p.take(Take::new(g("ffn_norm.weight"), s("ffn_norm.weight"), &[d]))?;
        let ff = |x: &str| s(&format!("feed_forward.{x}"));
        if moe && bid >= n_dense {
            p.take(Take::new(g("ffn_gate_inp.weight"), ff("gate.weight"), &[n_expert, d]))?;
            p.take(Take::new(g("exp_probs_b.bias"), ff("expert_bias"), &[n_expert]))?;
            let each = |w: &str| (0..n_expert).map(|x| ff(&format!("experts.{x}.{w}.weight"))).collect();
            let gate_up = ff("experts.gate_up_proj.weight");
            if p.has(&gate_up) {
                let fused = |first| ExpertSrc::Fused { name: gate_up.clone(), rows: 2 * f_exp, first };
                experts(&mut p, bid, "gate", n_expert, f_exp, d, fused(0))?;
                experts(&mut p, bid, "up", n_expert, f_exp, d, fused(f_exp))?;
            } else {
                experts(&mut p, bid, "gate", n_expert, f_exp, d, ExpertSrc::Each(each("w1")))?;
                experts(&mut p, bid, "up", n_expert, f_exp, d, ExpertSrc::Each(each("w3")))?;
            }
            let down = ff("experts.down_proj.weight");
            if p.has(&down) {
                p.take(Take::new(g("ffn_down_exps.weight"), down, &[n_expert, d, f_exp]))?;
            } else {
                experts(&mut p, bid, "down", n_expert, d, f_exp, ExpertSrc::Each(each("w2")))?;
            }
        } else {
            let src = FfnSrc {
                gate: Some(ff("w1.weight")),
                up: ff("w3.weight"),
                down: ff("w2.weight"),
                gate_scale: 1.0,
                down_scale: 1.0,
            };
            dense_ffn(&mut p, bid, "", d, n_ff, &src)?;
        }
    }
    p.take(Take::new("token_embd_norm.weight", "model.embedding_norm.weight", &[d]))?;
    super::output(&mut p, "lm_head.weight", n_vocab, d, 1.0)?;
    let plan = p.finish(n_vocab, false)?;
    Ok(Built { metadata: md.kv, plan, warnings })
}

#[cfg(test)]
mod tests {
    use super::adjusted_ff;

    #[test]
    fn ff_dim() {
        // LFM2-1.2B: 12288 -> 8192; LFM2-350M: 6912 -> 4608 (multiplier 1, multiple 256).
        assert_eq!(adjusted_ff(12288, true, Some(1.0), 256), 8192);
        assert_eq!(adjusted_ff(6912, true, Some(1.0), 256), 4608);
        assert_eq!(adjusted_ff(64, true, Some(1.3), 12), 60);
        assert_eq!(adjusted_ff(64, false, Some(1.3), 12), 64);
        assert_eq!(adjusted_ff(64, true, None, 12), 48);
    }
}
