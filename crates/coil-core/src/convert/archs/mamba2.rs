//! `mamba2`: `Mamba2ForCausalLM` (HF, state-spaces) and Mamba-Codestral (HF `config.json` or
//! Mistral's `params.json`; llama.cpp `conversion/mamba.py` `Mamba2Model`, which reads
//! `config.json` raw).
//!
//! Config: `hidden_size`/`d_model`/`dim`; `mamba_d_ssm`/`intermediate_size`/`d_inner` (else
//! `expand`·D, `expand` 2); `n_groups` (1); `conv_kernel`/`d_conv` (4); `state_size`/`d_state`
//! (128); `mamba_d_head`/`head_dim` (64), heads = E / head_dim; `layer_norm_epsilon`/`rms_norm_eps`
//! (1e-5). state-spaces configs keep `d_state`, `d_conv`, `expand`, `headdim`, `ngroups` in
//! `ssm_cfg`, read when the top level lacks them (llama.cpp ignores `ssm_cfg`, and an HF `expand`
//! when an explicit inner size is missing: it would write a wrong file there).
//!
//! Tensors: as Mamba-1 for the embedding, norms and head; per layer `norm` -> `attn_norm` and the
//! Mamba-2 mixer (`archs::mamba2_mixer`). Codestral's `model.backbone.*` / `model.lm_head` names
//! are the same tensors.

use super::mamba::{canon as mamba_canon, pad_multiple};
use super::{mamba2_mixer, n_layer, Built, Cx, Mamba2Opts, Md, Ssm2};
use crate::convert::tensors::{Planner, Take};
use crate::error::Result;

fn canon(name: &str) -> Option<String> {
    let n = if name.starts_with("model.backbone") || name.starts_with("model.lm_head") {
        &name["model.".len()..]
    } else {
        name
    };
    mamba_canon(n)
}

pub(super) fn build(cx: &Cx) -> Result<Built> {
    let (c, dir) = (cx.cfg, cx.dir);
    let mut warnings = Vec::new();
    let n_layer = n_layer(cx)?;
    let d_model = c.int_req(&["hidden_size", "d_model", "dim"], dir)?;
    let expand = c.int_opt(&["expand"]).or(c.ssm_cfg_int("expand")).unwrap_or(2);
    let d_inner = c.int_opt(&["mamba_d_ssm", "intermediate_size", "d_inner"]).unwrap_or(expand.saturating_mul(d_model));
    let n_group = c.int_opt(&["n_groups"]).or(c.ssm_cfg_int("ngroups")).unwrap_or(1);
    let d_conv = c.int_opt(&["conv_kernel", "d_conv"]).or(c.ssm_cfg_int("d_conv")).unwrap_or(4);
    let d_state = c.int_opt(&["state_size", "d_state"]).or(c.ssm_cfg_int("d_state")).unwrap_or(128);
    let head_dim = c.int_opt(&["mamba_d_head", "head_dim"]).or(c.ssm_cfg_int("headdim")).unwrap_or(64);
    let eps = c.float_or(&["layer_norm_epsilon", "rms_norm_eps"], 1e-5) as f32;
    if d_model == 0 || d_inner == 0 {
        return Err(c.err(dir, "the hidden size and the inner size must be positive"));
    }
    if d_model > u32::MAX as u64 || d_inner > u32::MAX as u64 {
        return Err(c.err(dir, "a dimension does not fit in 32 bits"));
    }
    if head_dim == 0 || !d_inner.is_multiple_of(head_dim) {
        return Err(c.err(dir, format!("the inner size {d_inner} is not a multiple of the head dim {head_dim}")));
    }
    if n_group == 0 || !d_inner.is_multiple_of(n_group) {
        return Err(c.err(dir, format!("the inner size {d_inner} is not a multiple of the group count {n_group}")));
    }
    let n_head = d_inner / head_dim;
    if let Some(h) = c.int_opt(&["num_heads"]) {
        if h != n_head {
            return Err(
                c.err(dir, format!("num_heads {h} contradicts inner size {d_inner} / head dim {head_dim} = {n_head}"))
            );
        }
    }
    if !n_head.is_multiple_of(n_group) {
        return Err(c.err(dir, format!("{n_head} heads cannot be split into {n_group} groups")));
    }
    if d_inner != d_model.saturating_mul(2) {
        warnings.push(format!(
            "d_inner {d_inner} is not 2 x d_model {d_model}: llama.cpp's converter refuses such Mamba-2 models"
        ));
    }

    let mut md = Md::new(c.arch);
    md.u32("context_length", 1 << 20)?;
    md.u32("embedding_length", d_model)?;
    md.u32("feed_forward_length", 0)?;
    md.u32("attention.head_count", 0)?;
    md.u32("block_count", n_layer)?;
    md.u32("ssm.conv_kernel", d_conv)?;
    md.u32("ssm.inner_size", d_inner)?;
    md.u32("ssm.state_size", d_state)?;
    md.u32("ssm.time_step_rank", n_head)?;
    md.u32("ssm.group_count", n_group)?;
    md.f32("attention.layer_norm_rms_epsilon", eps as f64);
    md.file_type(cx.file_type);

    let ssm = Ssm2 { d_model, d_inner, d_state, n_group, n_head };
    let mut p = Planner::new(cx.ck, c.arch.name(), canon)?;
    let vocab_size = c.int_opt(&["vocab_size"]);
    let n_vocab = p.embedding(
        "token_embd.weight",
        "backbone.embeddings.weight",
        d_model,
        vocab_size,
        Some(pad_multiple(cx, 16)),
        1.0,
    )?;
    for bid in 0..n_layer {
        let pre = format!("backbone.layers.{bid}.");
        p.take(Take::new(format!("blk.{bid}.attn_norm.weight"), format!("{pre}norm.weight"), &[d_model]))?;
        mamba2_mixer(&mut p, bid, &format!("{pre}mixer."), &ssm, d_conv, &Mamba2Opts::default())?;
    }
    p.take(Take::new("output_norm.weight", "backbone.norm_f.weight", &[d_model]))?;
    super::output(&mut p, "lm_head.weight", n_vocab, d_model, 1.0)?;
    let plan = p.finish(n_vocab, false)?;
    Ok(Built { metadata: md.kv, plan, warnings })
}
