//! `granitehybrid`: Granite-4.0-H (transformers' `GraniteMoeHybridForCausalLM`) and Bamba
//! (`BambaForCausalLM`). Each layer is a Mamba-2 mixer or grouped-query attention
//! (`head_count_kv[i] > 0`; RoPE only when `rope.scaling.finetuned`, which llama.cpp defaults to
//! true and Granite-4.0-H writes false; transformers' pairs on llama.cpp's permuted rows), then a
//! SwiGLU FFN: dense, or a softmax MoE whose top-k
//! weights are renormalised, plus a shared expert. Granite's scales: the embedding is multiplied
//! by `embedding_scale`, each block's output by `residual_scale`, the logits divided by
//! `logit_scale` (`model/graph.rs`), and attention scores use `attention.scale`.
//! ```text
//! for each layer:  h += residual_scale · (Mamba2 or Attention)(rms_norm(h) · attn_norm)
//!                  h += residual_scale · (Dense or MoE + shared)(rms_norm(h) · ffn_norm)
//! ```

use super::Layers;
use crate::error::Result;
use crate::model::blocks::attention::{Attention, AttnOpts};
use crate::model::blocks::ffn::{Act, Ffn};
use crate::model::blocks::layer::{Mixer, PreNormLayer};
use crate::model::blocks::mamba2::Mamba2;
use crate::model::blocks::Pass;
use crate::model::hparams::{
    moe_layers, read_attention, read_experts, read_mamba2_ssm, Gating, HParams, Keys, Rope, MAX_DIM,
};
use crate::model::weights::Loader;

pub(super) fn hparams(k: &Keys, hp: &mut HParams) -> Result<()> {
    read_mamba2_ssm(k, hp)?;
    // Bamba's partial RoPE as transformers computes it, on llama.cpp's permuted q/k rows (where
    // llama.cpp itself rotates other dims; see `Rope::NormPermuted`).
    let rope = if k.opt_bool("rope.scaling.finetuned")?.unwrap_or(true) { Rope::NormPermuted } else { Rope::None };
    read_attention(k, hp, rope)?;
    hp.recurrent = hp.n_head_kv.iter().map(|&h| h == 0).collect();
    let n_ff = k.positive("feed_forward_length", MAX_DIM)?;
    hp.moe = moe_layers(k, hp.n_layer);
    hp.n_ff = hp.moe.iter().map(|&m| if m { 0 } else { n_ff }).collect();
    read_experts(k, hp, "feed_forward_length")?;
    if hp.n_expert > 0 {
        hp.n_ff_shexp = k.opt_usize("expert_shared_feed_forward_length", MAX_DIM)?.unwrap_or(0);
    }
    hp.gating = Gating::Softmax;
    hp.expert_weights_norm = true;
    hp.expert_weights_scale = k.opt_f32("expert_weights_scale")?.unwrap_or(0.0);
    hp.embedding_scale = k.opt_f32("embedding_scale")?.unwrap_or(0.0);
    hp.residual_scale = k.opt_f32("residual_scale")?.unwrap_or(0.0);
    hp.logit_scale = k.opt_f32("logit_scale")?.unwrap_or(0.0);
    Ok(())
}

pub(super) struct Model {
    layers: Vec<PreNormLayer>,
    residual_scale: f32,
}

impl Model {
    pub fn load(l: &mut Loader) -> Result<Model> {
        let hp = l.hp;
        let mut layers = Vec::with_capacity(hp.n_layer);
        for i in 0..hp.n_layer {
            let mixer = |l: &mut Loader| -> Result<Mixer> {
                Ok(if hp.is_attention(i) {
                    Mixer::Attention(Attention::load(l, i, AttnOpts::default())?)
                } else {
                    Mixer::Mamba2(Mamba2::load(l, i, true)?)
                })
            };
            layers.push(PreNormLayer::load(l, i, mixer, |l| Ffn::load(l, i, Act::SwiGlu, false))?);
        }
        Ok(Model { layers, residual_scale: hp.residual_scale })
    }
}

impl Layers for Model {
    fn forward(&self, p: &mut Pass) -> Result<()> {
        for l in &self.layers {
            l.forward(p, self.residual_scale)?;
        }
        Ok(())
    }
}
