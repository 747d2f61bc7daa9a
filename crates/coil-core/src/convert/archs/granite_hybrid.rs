//! `granitehybrid`: Granite-4.0-H (`GraniteMoeHybridForCausalLM`) and Bamba (`BambaForCausalLM`),
//! as llama.cpp's `conversion/granite.py` `GraniteHybridModel` writes them. It reads `config.json`
//! raw and looks every key up also with a `mamba_` prefix (`mamba_d_state`, `mamba_n_heads`, ...).
//!
//! Config: `hidden_size`; `mamba_expand` (2) · D = E; `mamba_n_heads` = H (`ssm.time_step_rank`);
//! `mamba_n_groups` (1); `mamba_d_state` (256); `mamba_d_conv` (4); `mamba_d_head` (E/H, checked);
//! the attention layers from `layer_types` (`attention` / `full_attention` vs `mamba` /
//! `linear_attention`), else `attn_layer_indices`, else `attn_layer_period` / `attn_layer_offset`;
//! `num_local_experts` (0: dense), `num_experts_per_tok`, `intermediate_size` (per-expert width),
//! `shared_intermediate_size`; Granite's `embedding_multiplier`, `residual_multiplier`,
//! `attention_multiplier`, `logits_scaling`; `position_embedding_type` (`"rope"` or none) and
//! Bamba's partial RoPE.
//!
//! Tensors (`model.layers.N.`): `input_layernorm` -> `attn_norm`; Mamba layers `mamba.*` (the
//! Mamba-2 mixer); attention layers `self_attn.{q,k,v,o}_proj`; `post_attention_layernorm`
//! (Granite) / `pre_ff_layernorm` (Bamba) -> `ffn_norm`; Granite MoE: `block_sparse_moe.router.layer`
//! -> `ffn_gate_inp`, `block_sparse_moe.input_linear` `[X, 2F, D]` -> `ffn_gate_exps` (first half)
//! and `ffn_up_exps`, `output_linear` -> `ffn_down_exps`, `shared_mlp.input_linear` `[2S, D]` ->
//! `ffn_{gate,up}_shexp`, `shared_mlp.output_linear` -> `ffn_down_shexp`; dense Granite: the
//! `shared_mlp` is the FFN (`ffn_gate`, `ffn_up`, `ffn_down`); Bamba: `feed_forward.{gate,up,down}_proj`.
//! `model.norm` (Granite) / `model.final_layernorm` (Bamba) -> `output_norm`; `lm_head` -> `output`
//! (absent when tied).
//!
//! q and k are permuted over the whole head as llama.cpp's `LlamaModel.permute` does (rotate-half
//! pairs `(i, i + head_dim/2)` become adjacent), on every attention layer, so the data are
//! llama.cpp's. For Bamba's partial RoPE (transformers rotates pairs `(i, i + rot/2)` of the first
//! `rot` dims only) this is not the layout ggml's NORM RoPE needs: llama.cpp's runtime rotates
//! other pairs (wrong logits), while coil's runtime (`Rope::NormPermuted`) finds transformers'
//! pairs in these permuted rows, so llama.cpp's files and coil's compute alike in coil. The
//! rotated size `rope.dimension_count` is transformers' `head_dim · partial_rotary_factor`
//! (forced to 0.5 for Bamba); llama.cpp writes `attn_rotary_emb`, which transformers ignores (a
//! config where they differ gets a warning). An odd head (no RoPE) is left unpermuted: llama.cpp's
//! permutation fails on it.
//!
//! Where coil writes another file than llama.cpp, and why:
//! * A positive `time_step_limit[0]` (transformers clamps Δ to it) is written as `ssm.dt_min` for
//!   coil's runtime; llama.cpp does not clamp.
//! * transformers 5 saves `layer_types` as `linear_attention` / `full_attention`; llama.cpp only
//!   knows `attention` and would make every layer a Mamba layer. coil reads both spellings.
//! * A `GraniteMoeHybridForCausalLM` with `position_embedding_type: "rope"` uses RoPE in
//!   transformers; llama.cpp writes `rope.scaling.finetuned = false` (no RoPE) for every Granite.
//! * A dense Granite's FFN is the shared MLP; coil writes its width (`shared_intermediate_size`)
//!   as `feed_forward_length`, llama.cpp `intermediate_size` (the same in released checkpoints).
//! * An explicit `head_dim` other than `hidden_size / heads` is written as `attention.key_length`
//!   (llama.cpp drops `head_dim` for Granite).

use super::{
    attention, dense_ffn, experts, mamba2_mixer, n_layer, text_model_keys, AttnShape, AttnSrc, Built, Cx, ExpertSrc,
    FfnSrc, Mamba2Opts, Md, Ssm2,
};
use crate::convert::config::with_prefix;
use crate::convert::tensors::{Planner, Rows, Take};
use crate::error::Result;

/// Which layers are attention layers.
fn attention_layers(cx: &Cx, n_layer: u64) -> Result<Vec<bool>> {
    let c = cx.cfg;
    if let Some(types) = c.strings("layer_types") {
        if types.len() as u64 != n_layer {
            return Err(c.err(cx.dir, format!("layer_types lists {} layers for {n_layer}", types.len())));
        }
        return types
            .iter()
            .map(|t| match t.as_str() {
                "attention" | "full_attention" => Ok(true),
                "mamba" | "linear_attention" => Ok(false),
                other => Err(c.err(cx.dir, format!("unknown layer type {other:?} in layer_types"))),
            })
            .collect();
    }
    if let Some(idx) = c.ints("attn_layer_indices").filter(|v| !v.is_empty()) {
        if let Some(&i) = idx.iter().find(|&&i| i >= n_layer) {
            return Err(c.err(cx.dir, format!("attn_layer_indices names layer {i} of {n_layer}")));
        }
        return Ok((0..n_layer).map(|i| idx.contains(&i)).collect());
    }
    match (c.int_opt(&["attn_layer_period"]), c.int_get(&["attn_layer_offset"])) {
        (Some(period), Some(offset)) => Ok((0..n_layer).map(|i| i % period == offset).collect()),
        _ => Err(c.err(
            cx.dir,
            "no layer_types, attn_layer_indices or attn_layer_period/attn_layer_offset: cannot tell the attention layers",
        )),
    }
}

pub(super) fn build(cx: &Cx) -> Result<Built> {
    let (c, dir) = (cx.cfg, cx.dir);
    let mut warnings = Vec::new();
    let keys = |k: &[&str]| with_prefix(k, "mamba");
    let bamba = c.hf_arch == "BambaForCausalLM";
    let n_layer = n_layer(cx)?;
    let attn = attention_layers(cx, n_layer)?;
    if attn.iter().all(|&a| a) {
        return Err(c.err(
            dir,
            "no Mamba layer: this is a plain Granite Transformer (llama.cpp writes it as granite / granitemoe, which coil does not run)",
        ));
    }

    let d = c.int_req(&keys(&["hidden_size", "d_model"]), dir)?;
    let expand = c.int_or(&keys(&["expand"]), 2);
    let ssm = Ssm2 {
        d_model: d,
        d_inner: expand.saturating_mul(d),
        d_state: c.int_or(&keys(&["state_size", "d_state", "state_dim", "ssm_state_size"]), 256),
        n_group: c.int_or(&keys(&["n_groups", "num_groups"]), 1),
        n_head: c.int_req(&keys(&["n_heads", "num_heads"]), dir)?,
    };
    ssm.check(cx)?;
    if let Some(hd) = c.int_opt(&keys(&["d_head"])) {
        if hd.saturating_mul(ssm.n_head) != ssm.d_inner {
            return Err(c.err(
                dir,
                format!("mamba_n_heads {} x mamba_d_head {hd} is not the inner size {}", ssm.n_head, ssm.d_inner),
            ));
        }
    }
    if ssm.d_inner != 2 * d {
        warnings.push(format!("the SSM inner size {} is not 2 x {d}: llama.cpp refuses to load it", ssm.d_inner));
    }
    let d_conv = c.int_or(&keys(&["conv_kernel", "d_conv"]), 4);

    // Attention.
    let n_head = c.int_req(&keys(&["num_attention_heads", "n_head", "n_heads"]), dir)?;
    let n_kv = c.int_get(&keys(&["num_key_value_heads", "n_kv_heads"])).unwrap_or(n_head);
    if n_head == 0 || n_kv == 0 || !n_head.is_multiple_of(n_kv) {
        return Err(c.err(dir, format!("{n_head} attention heads cannot share {n_kv} KV heads")));
    }
    let hd_default = d / n_head;
    let head_dim = c.int_get(&["head_dim"]).unwrap_or(hd_default);
    if head_dim == 0 {
        return Err(c.err(dir, "the attention head size is 0"));
    }
    let rope = bamba || c.str_of("position_embedding_type") == Some("rope");
    let rp = super::rope_params(c);
    let factor = rp.get("partial_rotary_factor").and_then(|v| v.as_f64()).unwrap_or(if bamba { 0.5 } else { 1.0 });
    let rot = ((head_dim as f64) * factor) as u64;
    if rope {
        if rot == 0 || !rot.is_multiple_of(2) || rot > head_dim || !head_dim.is_multiple_of(2) {
            return Err(c.err(dir, format!("RoPE over {rot} of {head_dim} head dims is not supported")));
        }
        if let Some(r) = c.int_opt(&["attn_rotary_emb"]).filter(|&r| r != rot) {
            warnings.push(format!(
                "attn_rotary_emb is {r} but transformers rotates {rot} dims (head_dim x partial_rotary_factor); coil follows transformers"
            ));
        }
    }

    // FFN.
    let n_expert = c.int_get(&["num_local_experts"]).unwrap_or(0);
    let n_ff = c.int_opt(&keys(&["intermediate_size"])).unwrap_or(0);
    let n_shared = c.int_opt(&["shared_intermediate_size"]).unwrap_or(0);

    // ---- metadata ----
    let mut md = Md::new(c.arch);
    text_model_keys(&mut md, cx, n_layer, &keys, false)?;
    if let Some(v) = c.int_get(&["vocab_size"]) {
        md.u32("vocab_size", v)?;
    }
    md.u32("rope.dimension_count", if rope { rot } else { hd_default })?;
    if let Some(s) = c.float_opt(&["attention_multiplier"]) {
        md.f32("attention.scale", s);
    }
    if let Some(s) = c.float_opt(&["embedding_multiplier"]) {
        md.f32("embedding_scale", s);
    }
    if let Some(s) = c.float_opt(&["residual_multiplier"]) {
        md.f32("residual_scale", s);
    }
    if let Some(s) = c.float_opt(&["logits_scaling"]) {
        md.f32("logit_scale", s);
    }
    if n_shared > 0 {
        md.u32("expert_shared_feed_forward_length", n_shared)?;
    }
    md.u32("ssm.conv_kernel", d_conv)?;
    md.u32("ssm.state_size", ssm.d_state)?;
    md.u32("ssm.group_count", ssm.n_group)?;
    md.u32("ssm.inner_size", ssm.d_inner)?;
    md.u32("ssm.time_step_rank", ssm.n_head)?;
    if let Some(m) = super::dt_min_from_limit(c, &mut warnings) {
        md.f32("ssm.dt_min", m);
    }
    if !rope {
        if let Some(r) = c.int_opt(&["attn_rotary_emb"]) {
            md.u32("rope.dimension_count", r)?;
        }
    }
    let kv: Vec<u64> = attn.iter().map(|&a| if a { n_kv } else { 0 }).collect();
    md.i32s("attention.head_count_kv", &kv)?;
    md.bool("rope.scaling.finetuned", rope);
    if !rope {
        md.u32("context_length", 1 << 20)?;
    }
    if n_expert == 0 && n_shared > 0 && n_shared != n_ff && !bamba {
        md.u32("feed_forward_length", n_shared)?;
    }
    if head_dim != hd_default {
        md.u32("attention.key_length", head_dim)?;
        md.u32("attention.value_length", head_dim)?;
    }

    // ---- tensors ----
    let mut p = Planner::new(cx.ck, c.arch.name(), |n| Some(n.to_string()))?;
    let n_vocab =
        p.embedding("token_embd.weight", "model.embed_tokens.weight", d, c.int_opt(&["vocab_size"]), Some(8), 1.0)?;
    let shape = AttnShape { d_model: d, n_head, n_kv, head_dim };
    // llama.cpp's whole-head permutation (see the module docs).
    let permute = head_dim.is_multiple_of(2);
    let conv_bias = c.bool_get("mamba_conv_bias").unwrap_or(true);
    for bid in 0..n_layer {
        let g = |x: &str| format!("blk.{bid}.{x}");
        let s = |x: &str| format!("model.layers.{bid}.{x}");
        p.take(Take::new(g("attn_norm.weight"), s("input_layernorm.weight"), &[d]))?;
        if attn[bid as usize] {
            let mut a = AttnSrc::new(s("self_attn."), "o_proj");
            a.permute = permute;
            attention(&mut p, bid, &shape, &a)?;
        } else {
            let o = Mamba2Opts { conv_bias_required: conv_bias, ..Mamba2Opts::default() };
            mamba2_mixer(&mut p, bid, &s("mamba."), &ssm, d_conv, &o)?;
        }
        let norm = p
            .pick(&[s("post_attention_layernorm.weight"), s("pre_ff_layernorm.weight")])
            .unwrap_or_else(|| s("post_attention_layernorm.weight"));
        p.take(Take::new(g("ffn_norm.weight"), norm, &[d]))?;
        let shared_in = s("shared_mlp.input_linear.weight");
        let shared_out = s("shared_mlp.output_linear.weight");
        if n_expert > 0 {
            let moe = |x: &str| s(&format!("block_sparse_moe.{x}"));
            p.take(Take::new(g("ffn_gate_inp.weight"), moe("router.layer.weight"), &[n_expert, d]))?;
            let fused = |first| ExpertSrc::Fused { name: moe("input_linear.weight"), rows: 2 * n_ff, first };
            experts(&mut p, bid, "gate", n_expert, n_ff, d, fused(0))?;
            experts(&mut p, bid, "up", n_expert, n_ff, d, fused(n_ff))?;
            p.take(Take::new(g("ffn_down_exps.weight"), moe("output_linear.weight"), &[n_expert, d, n_ff]))?;
            if n_shared > 0 {
                shared_mlp(&mut p, bid, "_shexp", &shared_in, &shared_out, d, n_shared)?;
            }
        } else if p.has(&shared_in) {
            shared_mlp(&mut p, bid, "", &shared_in, &shared_out, d, n_shared)?;
        } else {
            let ff = |x: &str| s(&format!("feed_forward.{x}_proj.weight"));
            let src =
                FfnSrc { gate: Some(ff("gate")), up: ff("up"), down: ff("down"), gate_scale: 1.0, down_scale: 1.0 };
            dense_ffn(&mut p, bid, "", d, n_ff, &src)?;
        }
    }
    let norm = p
        .pick(&["model.norm.weight".into(), "model.final_layernorm.weight".into()])
        .unwrap_or_else(|| "model.norm.weight".into());
    p.take(Take::new("output_norm.weight", norm, &[d]))?;
    super::output(&mut p, "lm_head.weight", n_vocab, d, 1.0)?;
    let plan = p.finish(n_vocab, false)?;
    Ok(Built { metadata: md.kv, plan, warnings })
}

/// Granite's shared MLP: `input_linear` `[2S, D]` holds gate (first half) and up.
fn shared_mlp(p: &mut Planner, bid: u64, sfx: &str, input: &str, output: &str, d: u64, s: u64) -> Result<()> {
    let g = |x: &str| format!("blk.{bid}.ffn_{x}{sfx}.weight");
    p.take(Take::new(g("gate"), input, &[2 * s, d]).rows(Rows::Range(0, s)))?;
    p.take(Take::new(g("up"), input, &[2 * s, d]).rows(Rows::Range(s, s)))?;
    p.take(Take::new(g("down"), output, &[d, s]))?;
    Ok(())
}
