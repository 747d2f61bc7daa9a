//! `jamba`: Jamba (transformers' `JambaForCausalLM`). Each layer is a Mamba-1 mixer (with
//! weighted dt/B/C norms) or grouped-query attention without RoPE (`head_count_kv[i] > 0`), then
//! a SwiGLU FFN, dense or a softmax MoE whose top-k weights are not renormalised.
//! ```text
//! for each layer:  h += Mamba1 or Attention (rms_norm(h) · attn_norm)
//!                  h += Dense or MoE FFN (rms_norm(h) · ffn_norm)
//! ```

use super::Layers;
use crate::error::Result;
use crate::model::blocks::attention::{Attention, AttnOpts};
use crate::model::blocks::ffn::{Act, Ffn};
use crate::model::blocks::layer::{Mixer, PreNormLayer};
use crate::model::blocks::mamba1::Mamba1;
use crate::model::blocks::Pass;
use crate::model::hparams::{moe_layers, read_attention, read_experts, HParams, Keys, Rope, MAX_DIM};
use crate::model::weights::Loader;

pub(super) fn hparams(k: &Keys, hp: &mut HParams) -> Result<()> {
    super::mamba::hparams(k, hp)?;
    read_attention(k, hp, Rope::None)?;
    hp.recurrent = hp.n_head_kv.iter().map(|&h| h == 0).collect();
    let n_ff = k.positive("feed_forward_length", MAX_DIM)?;
    hp.moe = moe_layers(k, hp.n_layer);
    hp.n_ff = hp.moe.iter().map(|&m| if m { 0 } else { n_ff }).collect();
    read_experts(k, hp, "feed_forward_length")?;
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
                    Mixer::Attention(Attention::load(l, i, AttnOpts::default())?)
                } else {
                    Mixer::Mamba1(Mamba1::load(l, i, true)?)
                })
            };
            layers.push(PreNormLayer::load(l, i, mixer, |l| Ffn::load(l, i, Act::SwiGlu, false))?);
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
