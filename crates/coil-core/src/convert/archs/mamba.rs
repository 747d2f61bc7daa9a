//! `mamba`: `MambaForCausalLM`, `MambaLMHeadModel` (state-spaces) and `FalconMambaForCausalLM`
//! (llama.cpp `conversion/mamba.py` `MambaModel`, which reads `config.json` raw).
//!
//! Config: `hidden_size`/`d_model`; `conv_kernel`/`d_conv` (4); `intermediate_size`/`d_inner`
//! (`expand`·D, `expand` 2); `state_size`/`d_state` (16); `time_step_rank`/`dt_rank` (⌈D/16⌉,
//! also for `"auto"`); `layer_norm_epsilon`/`rms_norm_eps` (1e-5). state-spaces configs keep
//! `d_state`, `d_conv`, `expand` in `ssm_cfg`, read when the top level lacks them. Falcon-Mamba
//! (`model_type` `falcon_mamba`) has weightless RMS norms on dt, B and C.
//!
//! Tensors (HF -> GGUF): `backbone.embeddings` (or `embedding`) -> `token_embd`; per layer
//! `norm` -> `attn_norm`, `mixer.in_proj` -> `ssm_in`, `mixer.conv1d` `[E, 1, K]` -> `ssm_conv1d`
//! `{K, E}`, `mixer.x_proj` -> `ssm_x`, `mixer.dt_proj` -> `ssm_dt`, `mixer.A_log` -> `ssm_a =
//! -exp(A_log)`, `mixer.D` -> `ssm_d`, `mixer.out_proj` -> `ssm_out`; `backbone.norm_f` ->
//! `output_norm`; `lm_head` -> `output`, left out when equal to the embedding byte for byte.

use super::{n_layer, split_layer, Built, Cx, Md};
use crate::convert::tensors::{Planner, Take};
use crate::error::Result;
use crate::gguf::GgufValue;

/// The hyperparameters of a Mamba-1 model.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Hp {
    pub d_model: u64,
    pub n_layer: u64,
    pub d_inner: u64,
    pub d_state: u64,
    pub d_conv: u64,
    pub dt_rank: u64,
    pub eps: f32,
    /// Falcon-Mamba: weightless RMS norms on dt, B and C.
    pub dt_b_c_rms: bool,
    /// Their eps (transformers' `mixer_rms_eps`, which differs from the layer norms' eps).
    /// llama.cpp has no key for it and uses the layer eps; coil writes
    /// `{arch}.ssm.dt_b_c_rms_epsilon` so its runtime matches transformers, and llama.cpp ignores it.
    pub dt_b_c_eps: Option<f32>,
    pub vocab_size: Option<u64>,
    pub pad: u64,
}

/// `hparams.get("pad_vocab_size_multiple", default)`: a present value is used as is.
pub(super) fn pad_multiple(cx: &Cx, default: u64) -> u64 {
    match cx.cfg.raw.get("pad_vocab_size_multiple") {
        Some(v) => crate::convert::config::as_int(v).filter(|&m| m > 0).unwrap_or(default),
        None => default,
    }
}

pub(super) fn hparams(cx: &Cx, warnings: &mut Vec<String>) -> Result<Hp> {
    let c = cx.cfg;
    let n_layer = n_layer(cx)?;
    let d_model = c.int_req(&["hidden_size", "d_model"], cx.dir)?;
    let d_conv = c.int_opt(&["conv_kernel", "d_conv"]).or(c.ssm_cfg_int("d_conv")).unwrap_or(4);
    let expand = c.int_opt(&["expand"]).or(c.ssm_cfg_int("expand")).unwrap_or(2);
    let d_inner = c.int_opt(&["intermediate_size", "d_inner"]).unwrap_or(expand.saturating_mul(d_model));
    let d_state = c.int_opt(&["state_size", "d_state"]).or(c.ssm_cfg_int("d_state")).unwrap_or(16);
    let dt_rank = c.int_or(&["time_step_rank", "dt_rank"], d_model.div_ceil(16));
    let eps = c.float_or(&["layer_norm_epsilon", "rms_norm_eps"], 1e-5) as f32;
    let falcon = c.str_of("model_type") == Some("falcon_mamba") || c.hf_arch == "FalconMambaForCausalLM";
    if d_model == 0 || d_inner == 0 {
        return Err(c.err(cx.dir, "the hidden size and the inner size must be positive"));
    }
    if d_model > u32::MAX as u64 || d_inner > u32::MAX as u64 {
        return Err(c.err(cx.dir, "a dimension does not fit in 32 bits"));
    }
    if d_inner != d_model.saturating_mul(2) {
        warnings.push(format!(
            "d_inner {d_inner} is not 2 x d_model {d_model}: llama.cpp loads only Mamba models with an expansion factor of 2"
        ));
    }
    Ok(Hp {
        d_model,
        n_layer,
        d_inner,
        d_state,
        d_conv,
        dt_rank,
        eps,
        dt_b_c_rms: falcon,
        dt_b_c_eps: falcon.then(|| c.float_or(&["mixer_rms_eps"], 1e-6) as f32),
        vocab_size: c.int_opt(&["vocab_size"]),
        pad: pad_multiple(cx, 8),
    })
}

/// The names state-spaces and HF checkpoints use, made one: `model.layers.` / `backbone.layers.`,
/// mixer tensors with or without `mixer.`, `embedding` / `embeddings`.
pub(super) fn canon(name: &str) -> Option<String> {
    let g = match name {
        "backbone.embedding.weight" | "model.embedding.weight" => Some("backbone.embeddings.weight"),
        "model.norm_f.weight" => Some("backbone.norm_f.weight"),
        _ => None,
    };
    if let Some(g) = g {
        return Some(g.to_string());
    }
    let (bid, rest) = match split_layer(name, "backbone.layers.").or_else(|| split_layer(name, "model.layers.")) {
        Some(x) => x,
        None => return Some(name.to_string()),
    };
    const MIXER: [&str; 7] = ["in_proj.", "conv1d.", "x_proj.", "dt_proj.", "out_proj.", "dt_bias", "A_log"];
    let rest = if !rest.starts_with("mixer.") && (MIXER.iter().any(|m| rest.starts_with(m)) || rest == "D") {
        format!("mixer.{rest}")
    } else {
        rest.to_string()
    };
    Some(format!("backbone.layers.{bid}.{rest}"))
}

pub(super) fn build(cx: &Cx) -> Result<Built> {
    let mut warnings = Vec::new();
    let hp = hparams(cx, &mut warnings)?;
    let (d, e, n, k, r) = (hp.d_model, hp.d_inner, hp.d_state, hp.d_conv, hp.dt_rank);

    let mut md = Md::new(cx.cfg.arch);
    md.u32("context_length", 1 << 20)?;
    md.u32("embedding_length", d)?;
    md.u32("feed_forward_length", 0)?;
    md.u32("attention.head_count", 0)?;
    md.u32("block_count", hp.n_layer)?;
    md.u32("ssm.conv_kernel", k)?;
    md.u32("ssm.inner_size", e)?;
    md.u32("ssm.state_size", n)?;
    md.u32("ssm.time_step_rank", r)?;
    md.f32("attention.layer_norm_rms_epsilon", hp.eps as f64);
    md.set("ssm.dt_b_c_rms", GgufValue::Bool(hp.dt_b_c_rms));
    if let Some(eps) = hp.dt_b_c_eps {
        md.set("ssm.dt_b_c_rms_epsilon", GgufValue::F32(eps));
    }
    md.file_type(cx.file_type);

    let mut p = Planner::new(cx.ck, cx.cfg.arch.name(), canon)?;
    let n_vocab =
        p.embedding("token_embd.weight", "backbone.embeddings.weight", d, hp.vocab_size, Some(hp.pad), 1.0)?;
    for bid in 0..hp.n_layer {
        let g = |x: &str| format!("blk.{bid}.{x}");
        let s = |x: &str| format!("backbone.layers.{bid}.{x}");
        p.take(Take::new(g("attn_norm.weight"), s("norm.weight"), &[d]))?;
        p.take(Take::new(g("ssm_in.weight"), s("mixer.in_proj.weight"), &[2 * e, d]))?;
        p.take(Take::new(g("ssm_conv1d.weight"), s("mixer.conv1d.weight"), &[e, 1, k]).alt(&[e, k]).out(&[e, k]))?;
        p.take(Take::new(g("ssm_conv1d.bias"), s("mixer.conv1d.bias"), &[e]))?;
        p.take(Take::new(g("ssm_x.weight"), s("mixer.x_proj.weight"), &[r.saturating_add(2 * n), e]))?;
        p.take(Take::new(g("ssm_dt.weight"), s("mixer.dt_proj.weight"), &[e, r]))?;
        p.take(Take::new(g("ssm_dt.bias"), s("mixer.dt_proj.bias"), &[e]))?;
        p.take(Take::new(g("ssm_a"), s("mixer.A_log"), &[e, n]).neg_exp())?;
        p.take(Take::new(g("ssm_d"), s("mixer.D"), &[e]))?;
        p.take(Take::new(g("ssm_out.weight"), s("mixer.out_proj.weight"), &[d, e]))?;
    }
    p.take(Take::new("output_norm.weight", "backbone.norm_f.weight", &[d]))?;

    // llama.cpp's `torch.equal(token_embd, output)`: an output equal to the embedding is left out.
    let mut tied = false;
    if let (Some(o), Some(t)) = (p.source("lm_head.weight"), p.source("backbone.embeddings.weight")) {
        let (ck, o, t) = (cx.ck, o, t);
        let equal = o.dtype == t.dtype && o.shape == t.shape && ck.data(o) == ck.data(t);
        ck.release(o, 0, o.len);
        ck.release(t, 0, t.len);
        if equal {
            p.consume("lm_head.weight");
            tied = true;
        }
    }
    if !tied {
        super::output(&mut p, "lm_head.weight", n_vocab, d, 1.0)?;
    }
    let plan = p.finish(n_vocab, tied)?;
    Ok(Built { metadata: md.kv, plan, warnings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::config::{ConfigSource, ModelConfig};
    use crate::convert::safetensors::Checkpoint;
    use std::path::Path;

    #[test]
    fn defaults() {
        let cfg = ModelConfig::from_json(
            r#"{"architectures":["MambaForCausalLM"],"hidden_size":40,"num_hidden_layers":3,"time_step_rank":"auto"}"#,
            ConfigSource::ConfigJson,
            Path::new("/m"),
        )
        .unwrap();
        let ck = Checkpoint::from_files(Vec::new()).unwrap();
        let cx = Cx { cfg: &cfg, dir: Path::new("/m"), ck: &ck, file_type: 1 };
        let h = hparams(&cx, &mut Vec::new()).unwrap();
        assert_eq!((h.d_inner, h.d_state, h.d_conv, h.dt_rank), (80, 16, 4, 3));
        assert_eq!(h.pad, 8);
    }

    #[test]
    fn names() {
        assert_eq!(canon("model.layers.3.in_proj.weight").unwrap(), "backbone.layers.3.mixer.in_proj.weight");
        assert_eq!(canon("backbone.layers.3.D").unwrap(), "backbone.layers.3.mixer.D");
        assert_eq!(canon("backbone.layers.3.norm.weight").unwrap(), "backbone.layers.3.norm.weight");
        assert_eq!(canon("backbone.embedding.weight").unwrap(), "backbone.embeddings.weight");
    }
}
