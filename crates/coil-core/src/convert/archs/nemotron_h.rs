//! `nemotron_h` and `nemotron_h_moe`: `NemotronHForCausalLM` (Nemotron-H, Nemotron-Nano-v2,
//! Nemotron-3), as llama.cpp's `conversion/nemotron.py` `NemotronHModel` (a `GraniteHybridModel`)
//! writes them. llama.cpp reads the config through transformers' `AutoConfig`, so
//! `NemotronHConfig`'s defaults stand in here for absent keys.
//!
//! Each layer is exactly one of Mamba-2, attention (no RoPE), a dense ReLU² MLP, or a MoE of ReLU²
//! experts. The layer kinds: `hybrid_override_pattern` (`M` Mamba, `*` attention, `-` MLP, `E`
//! MoE), else `layers_block_type` as a list (`mamba` / `linear_attention`, `attention` /
//! `full_attention`, `mlp`, `moe`; transformers 5 writes it so) or a pattern string.
//!
//! Config: `hidden_size`; `mamba_num_heads` (128) · `mamba_head_dim` (64) = E; `n_groups` (8);
//! `ssm_state_size` (128); `conv_kernel` (4); `num_attention_heads`, `num_key_value_heads`,
//! `head_dim` (128); `intermediate_size` (MLP layers); MoE: `n_routed_experts`,
//! `num_experts_per_tok`, `moe_intermediate_size`, `moe_shared_expert_intermediate_size`,
//! `n_shared_experts`, `norm_topk_prob`, `routed_scaling_factor`, `n_group`, `topk_group`;
//! `layer_norm_epsilon` (1e-5; written as `attention.layer_norm_epsilon`, which the runtime reads
//! when there is no RMS eps key, as llama.cpp's loader does).
//!
//! Tensors (`backbone.layers.N.`): `norm` -> `attn_norm`; `mixer.*` as the Mamba-2 mixer,
//! attention `mixer.{q,k,v,o}_proj`, MLP `mixer.{up,down}_proj` -> `ffn_{up,down}`, MoE
//! `mixer.gate` -> `ffn_gate_inp`, `mixer.gate.e_score_correction_bias` -> `exp_probs_b.bias`,
//! `mixer.experts.X.{up,down}_proj` -> `ffn_{up,down}_exps`, `mixer.shared_experts.{up,down}_proj`
//! -> `ffn_{up,down}_shexp`; `backbone.embeddings` -> `token_embd`, `backbone.norm_f` ->
//! `output_norm`, `lm_head` -> `output`. Multi-token-prediction tensors (`mtp.*`) are left out
//! (llama.cpp's `--no-mtp`; coil's runtime does not run them).
//!
//! Where coil writes another file than llama.cpp, and why:
//! * nemotron_h_moe is chosen when a layer is a MoE layer. llama.cpp chooses it whenever the config
//!   has `num_experts_per_tok`, which transformers 5 writes into every `NemotronHConfig` (default
//!   2), dense models included.
//! * The list form's `mlp` layers are MLP layers; llama.cpp only recognises `moe` there and writes
//!   no FFN width for them.
//! * A dense model gets no `expert_*` keys (llama.cpp copies transformers' MoE defaults into
//!   them, which would make coil's runtime look for experts).
//! * An odd attention `head_dim`: llama.cpp's q/k permutation fails on it (the layers have no
//!   RoPE, so coil simply does not permute).
//! * `add_bos_token` comes from the tokenizer files; llama.cpp forces it on for dense models.
//! * transformers clamps Δ = softplus(dt + dt_bias) at `time_step_min` (0.001 by default), which
//!   matters for heads with small Δ; coil writes it as `ssm.dt_min` for its runtime (llama.cpp does
//!   not clamp and has no key for it).

use serde_json::{Map, Value};

use super::{
    attention, dense_ffn, experts, mamba2_mixer, text_model_keys, AttnShape, AttnSrc, Built, Cx, ExpertSrc, FfnSrc,
    Mamba2Opts, Md, Ssm2,
};
use crate::convert::config::{with_prefix, Arch};
use crate::convert::tensors::{Planner, Take};
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mamba,
    Attention,
    Mlp,
    Moe,
}

/// The layer kinds from the pattern string or list, or why they cannot be read.
fn kinds(raw: &Map<String, Value>) -> std::result::Result<Vec<Kind>, String> {
    let truthy = |k: &str| raw.get(k).filter(|v| !crate::convert::config::falsy(v));
    let Some(pattern) = truthy("hybrid_override_pattern").or_else(|| truthy("layers_block_type")) else {
        return Err("no hybrid_override_pattern or layers_block_type: cannot tell the layer kinds".into());
    };
    match pattern {
        Value::String(s) => s
            .chars()
            .map(|ch| match ch {
                'M' => Ok(Kind::Mamba),
                '*' => Ok(Kind::Attention),
                '-' => Ok(Kind::Mlp),
                'E' => Ok(Kind::Moe),
                other => Err(format!("unknown layer kind {other:?} in the layer pattern {s:?}")),
            })
            .collect(),
        Value::Array(a) => a
            .iter()
            .map(|v| match v.as_str() {
                Some("mamba" | "linear_attention") => Ok(Kind::Mamba),
                Some("attention" | "full_attention") => Ok(Kind::Attention),
                Some("mlp") => Ok(Kind::Mlp),
                Some("moe") => Ok(Kind::Moe),
                _ => Err(format!("unknown layer kind {v} in layers_block_type")),
            })
            .collect(),
        other => Err(format!("the layer pattern {other} is neither a string nor a list")),
    }
}

/// Whether the model is `nemotron_h_moe`: a layer is a MoE layer (with no readable layer kinds,
/// llama.cpp's rule: `num_experts_per_tok` is present).
pub(crate) fn is_moe(raw: &Map<String, Value>) -> bool {
    match kinds(raw) {
        Ok(k) => k.contains(&Kind::Moe),
        Err(_) => raw.contains_key("num_experts_per_tok"),
    }
}

/// Leaves out the MTP head; PEFT's `model.layers.*.mixer.*` are `backbone.layers.*`; the router
/// bias may be spelt `e_score_correction.bias`.
fn canon(name: &str) -> Option<String> {
    if name.starts_with("mtp.") {
        return None;
    }
    let mut n = name.to_string();
    if n.starts_with("model.layers.") && n.contains(".mixer.") {
        n = n.replacen("model.layers.", "backbone.layers.", 1);
    }
    if let Some(b) = n.strip_suffix("e_score_correction.bias") {
        n = format!("{b}e_score_correction_bias");
    }
    Some(n)
}

pub(super) fn build(cx: &Cx) -> Result<Built> {
    let (c, dir) = (cx.cfg, cx.dir);
    let mut warnings = Vec::new();
    let keys = |k: &[&str]| with_prefix(k, "mamba");
    let kinds = kinds(&c.raw).map_err(|m| c.err(dir, m))?;
    let n_layer = kinds.len() as u64;
    if c.has("hybrid_override_pattern") {
        if let Some(n) = c.int_get(&["num_hidden_layers"]).filter(|&n| n != n_layer) {
            return Err(c.err(dir, format!("the layer pattern has {n_layer} layers but num_hidden_layers is {n}")));
        }
    }
    let moe = c.arch == Arch::NemotronHMoe;
    if moe && kinds.contains(&Kind::Mlp) {
        return Err(
            c.err(dir, "dense MLP layers beside MoE layers are not supported (llama.cpp writes no width for them)")
        );
    }
    if cx.ck.tensors.iter().any(|t| t.name.starts_with("mtp.")) {
        warnings.push("the multi-token-prediction head (mtp.*) is left out: coil does not run it".to_string());
    }

    let d = c.int_req(&["hidden_size"], dir)?;
    let ssm = Ssm2 {
        d_model: d,
        d_inner: c.int_or(&["mamba_num_heads"], 128).saturating_mul(c.int_or(&["mamba_head_dim"], 64)),
        d_state: c.int_or(&keys(&["state_size", "d_state", "state_dim", "ssm_state_size"]), 128),
        n_group: c.int_or(&keys(&["n_groups", "num_groups"]), 8),
        n_head: c.int_or(&keys(&["n_heads", "num_heads"]), 128),
    };
    ssm.check(cx)?;
    let d_conv = c.int_or(&keys(&["conv_kernel", "d_conv"]), 4);
    let n_head = c.int_or(&["num_attention_heads"], 32);
    let n_kv = c.int_get(&["num_key_value_heads"]).unwrap_or(8);
    let head_dim = c.int_get(&["head_dim", "attention_head_dim"]).unwrap_or(128);
    if n_head == 0 || n_kv == 0 || !n_head.is_multiple_of(n_kv) || head_dim == 0 {
        return Err(c.err(dir, format!("{n_head} attention heads of {head_dim} cannot share {n_kv} KV heads")));
    }
    let n_ff = c.int_or(&["intermediate_size"], 21504);
    let n_expert = c.int_or(&["n_routed_experts"], 8);
    let n_used = c.int_or(&["num_experts_per_tok"], 2);
    let f_exp = c.int_or(&["moe_intermediate_size"], 7688);
    let f_sh = c.int_or(&["moe_shared_expert_intermediate_size"], 7688);
    if moe && c.get(&["moe_latent_size"]).is_some() {
        return Err(c.err(dir, "latent MoE projections (moe_latent_size) are not supported yet"));
    }

    // ---- metadata ----
    let mut md = Md::new(c.arch);
    text_model_keys(&mut md, cx, n_layer, &keys, false)?;
    if !md.has("attention.layer_norm_epsilon") && !md.has("attention.layer_norm_rms_epsilon") {
        md.f32("attention.layer_norm_epsilon", 1e-5);
    }
    if !moe {
        for k in
            ["expert_count", "expert_used_count", "expert_group_count", "expert_group_used_count", "expert_gating_func"]
        {
            md.remove(k);
        }
    }
    if let Some(v) = c.int_get(&["vocab_size"]) {
        md.u32("vocab_size", v)?;
    }
    md.u32("rope.dimension_count", d / n_head)?;
    md.u32("ssm.conv_kernel", d_conv)?;
    md.u32("ssm.state_size", ssm.d_state)?;
    md.u32("ssm.group_count", ssm.n_group)?;
    md.u32("ssm.inner_size", ssm.d_inner)?;
    md.u32("ssm.time_step_rank", ssm.n_head)?;
    // transformers clamps Nemotron-H's Δ at time_step_min (its time_step_limit is not used).
    let dt_min = c.float_get(&["time_step_min"]).unwrap_or(0.001);
    if dt_min > 0.0 {
        md.f32("ssm.dt_min", dt_min);
    }
    let kv: Vec<u64> = kinds.iter().map(|&k| if k == Kind::Attention { n_kv } else { 0 }).collect();
    md.i32s("attention.head_count_kv", &kv)?;
    md.bool("rope.scaling.finetuned", false);
    md.u32("context_length", 1 << 20)?;
    md.u32("attention.key_length", head_dim)?;
    md.u32("attention.value_length", head_dim)?;
    let (ff_kind, width) = if moe { (Kind::Moe, f_exp) } else { (Kind::Mlp, n_ff) };
    let ff: Vec<u64> = kinds.iter().map(|&k| if k == ff_kind { width } else { 0 }).collect();
    md.i32s("feed_forward_length", &ff)?;
    if moe {
        md.u32("expert_used_count", n_used)?;
        md.u32("expert_feed_forward_length", f_exp)?;
        md.u32("expert_shared_feed_forward_length", f_sh)?;
        md.u32("expert_count", n_expert)?;
        md.u32("expert_shared_count", c.int_or(&["n_shared_experts"], 1))?;
        md.bool("expert_weights_norm", c.bool_get("norm_topk_prob").unwrap_or(true));
        md.f32("expert_weights_scale", c.float_get(&["routed_scaling_factor"]).unwrap_or(1.0));
        md.u32("expert_group_count", c.int_get(&["n_group"]).unwrap_or(1))?;
    }

    // ---- tensors ----
    let mut p = Planner::new(cx.ck, c.arch.name(), canon)?;
    let n_vocab =
        p.embedding("token_embd.weight", "backbone.embeddings.weight", d, c.int_opt(&["vocab_size"]), Some(8), 1.0)?;
    let shape = AttnShape { d_model: d, n_head, n_kv, head_dim };
    let conv_bias = c.bool_get("use_conv_bias").unwrap_or(true);
    for (bid, &kind) in kinds.iter().enumerate() {
        let bid = bid as u64;
        let pre = format!("backbone.layers.{bid}.mixer.");
        let m = |x: &str| format!("{pre}{x}");
        p.take(Take::new(format!("blk.{bid}.attn_norm.weight"), format!("backbone.layers.{bid}.norm.weight"), &[d]))?;
        match kind {
            Kind::Mamba => {
                let o = Mamba2Opts { conv_bias_required: conv_bias, ..Mamba2Opts::default() };
                mamba2_mixer(&mut p, bid, &pre, &ssm, d_conv, &o)?;
            }
            Kind::Attention => {
                let mut a = AttnSrc::new(pre.clone(), "o_proj");
                // llama.cpp's `LlamaModel.permute` (no RoPE here: it changes nothing but the order).
                a.permute = head_dim.is_multiple_of(2);
                attention(&mut p, bid, &shape, &a)?;
            }
            Kind::Mlp => {
                let src = FfnSrc {
                    gate: None,
                    up: m("up_proj.weight"),
                    down: m("down_proj.weight"),
                    gate_scale: 1.0,
                    down_scale: 1.0,
                };
                dense_ffn(&mut p, bid, "", d, n_ff, &src)?;
            }
            Kind::Moe => {
                p.take(Take::new(format!("blk.{bid}.ffn_gate_inp.weight"), m("gate.weight"), &[n_expert, d]))?;
                p.take(Take::new(
                    format!("blk.{bid}.exp_probs_b.bias"),
                    m("gate.e_score_correction_bias"),
                    &[n_expert],
                ))?;
                let each = |k: &str| (0..n_expert).map(|x| m(&format!("experts.{x}.{k}_proj.weight"))).collect();
                experts(&mut p, bid, "up", n_expert, f_exp, d, ExpertSrc::Each(each("up")))?;
                experts(&mut p, bid, "down", n_expert, d, f_exp, ExpertSrc::Each(each("down")))?;
                let src = FfnSrc {
                    gate: None,
                    up: m("shared_experts.up_proj.weight"),
                    down: m("shared_experts.down_proj.weight"),
                    gate_scale: 1.0,
                    down_scale: 1.0,
                };
                dense_ffn(&mut p, bid, "_shexp", d, f_sh, &src)?;
            }
        }
    }
    p.take(Take::new("output_norm.weight", "backbone.norm_f.weight", &[d]))?;
    super::output(&mut p, "lm_head.weight", n_vocab, d, 1.0)?;
    let plan = p.finish(n_vocab, false)?;
    Ok(Built { metadata: md.kv, plan, warnings })
}
