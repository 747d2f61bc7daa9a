//! `lfm2` and `lfm2moe`: LFM2 (transformers' `Lfm2ForCausalLM`, `Lfm2MoeForCausalLM`). Each layer
//! is a gated short convolution (`head_count_kv[i] == 0`) or grouped-query attention with per-head
//! RMS norms on q and k and RoPE NEOX, then a SwiGLU FFN: dense, or — after the leading dense
//! layers of lfm2moe — a sigmoid-routed MoE whose experts are chosen with a selection bias and
//! whose top-k weights are renormalised. The final norm is stored as `token_embd_norm` (see
//! `archs::output_norm_name`).
//! ```text
//! for each layer:  h += (ShortConv or Attention)(rms_norm(h) · attn_norm)
//!                  h += (Dense or MoE)(rms_norm(h) · ffn_norm)
//! ```

use super::Layers;
use crate::error::{CoilError, ErrorCode, Result};
use crate::model::blocks::attention::{Attention, AttnOpts};
use crate::model::blocks::ffn::{Act, Ffn};
use crate::model::blocks::layer::{Mixer, PreNormLayer};
use crate::model::blocks::shortconv::ShortConv;
use crate::model::blocks::Pass;
use crate::model::hparams::{moe_layers, read_attention, read_experts, Gating, HParams, Keys, Rope, MAX_DIM};
use crate::model::weights::Loader;

pub(super) fn hparams(k: &Keys, hp: &mut HParams) -> Result<()> {
    hp.d_conv = k.positive("shortconv.l_cache", crate::kernels::conv::MAX_D_CONV as u64)?;
    hp.d_inner = hp.n_embd;
    read_attention(k, hp, Rope::Neox)?;
    hp.attn_scale = 0.0; // llama.cpp's lfm2 graph always uses 1/√head_size
    hp.recurrent = hp.n_head_kv.iter().map(|&h| h == 0).collect();
    let n_ff = k.positive("feed_forward_length", MAX_DIM)?;
    hp.moe = moe_layers(k, hp.n_layer);
    hp.n_ff = hp.moe.iter().map(|&m| if m { 0 } else { n_ff }).collect();
    read_experts(k, hp, "expert_feed_forward_length")?;
    if hp.n_expert > 0 {
        hp.gating = match k.opt_u64("expert_gating_func")? {
            Some(1) => Gating::Softmax,
            Some(2) | None => Gating::Sigmoid,
            Some(g) => {
                return Err(CoilError::new(
                    ErrorCode::GgufInvalid,
                    format!("{} = {g}: coil knows 1 (softmax) and 2 (sigmoid)", k.name("expert_gating_func")),
                ))
            }
        };
        hp.expert_weights_norm = true;
        hp.expert_weights_scale = k.opt_f32("expert_weights_scale")?.unwrap_or(0.0);
    }
    Ok(())
}

pub(super) struct Model {
    layers: Vec<PreNormLayer>,
}

impl Model {
    pub fn load(l: &mut Loader) -> Result<Model> {
        let hp = l.hp;
        let mut layers = Vec::with_capacity(hp.n_layer);
        for i in 0..hp.n_layer {
            let mixer = |l: &mut Loader| -> Result<Mixer> {
                Ok(if hp.is_attention(i) {
                    Mixer::Attention(Attention::load(l, i, AttnOpts { qk_norm: true, no_out_bias: true })?)
                } else {
                    Mixer::ShortConv(ShortConv::load(l, i)?)
                })
            };
            layers.push(PreNormLayer::load(l, i, mixer, |l| Ffn::load(l, i, Act::SwiGlu, true))?);
        }
        Ok(Model { layers })
    }
}

impl Layers for Model {
    fn forward(&self, p: &mut Pass) -> Result<()> {
        for l in &self.layers {
            l.forward(p, 0.0)?;
        }
        Ok(())
    }
}
