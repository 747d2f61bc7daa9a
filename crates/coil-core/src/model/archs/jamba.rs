//! `jamba`: Jamba (transformers' `JambaForCausalLM`). Each layer is a Mamba-1 mixer (with
//! weighted dt/B/C norms) or grouped-query attention without RoPE (`head_count_kv[i] > 0`), then
//! a SwiGLU FFN, dense or a softmax MoE whose top-k weights are not renormalised.
//! ```text
//! for each layer:  h += Mamba1 or Attention (rms_norm(h) · attn_norm)
//!                  h += Dense or MoE FFN (rms_norm(h) · ffn_norm)
//! ```

use super::Layers;
use crate::error::Result;
use crate::model::blocks::attention::{Attention, AttnOpts, Out};
use crate::model::blocks::ffn::{Act, Dense, Ffn, Moe};
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

enum Mixer {
    Mamba(Mamba1),
    Attention(Attention),
}

struct Layer {
    attn_norm: Vec<f32>,
    mixer: Mixer,
    ffn_norm: Vec<f32>,
    ffn: Ffn,
}

pub(super) struct Model {
    layers: Vec<Layer>,
}

impl Model {
    pub fn load(l: &mut Loader) -> Result<Model> {
        let hp = l.hp;
        let d = hp.n_embd as u64;
        let mut layers = Vec::new();
        for i in 0..hp.n_layer {
            let b = |x: &str| format!("blk.{i}.{x}");
            let attn_norm = l.f32(&b("attn_norm.weight"), &[&[d]])?;
            let mixer = if hp.is_attention(i) {
                Mixer::Attention(Attention::load(l, i, AttnOpts::default())?)
            } else {
                Mixer::Mamba(Mamba1::load(l, i, true)?)
            };
            let ffn_norm = l.f32(&b("ffn_norm.weight"), &[&[d]])?;
            let ffn = if hp.moe[i] {
                Ffn::Moe(Moe::load(l, i, Act::SwiGlu, false)?)
            } else {
                Ffn::Dense(Dense::load(l, i, "", Act::SwiGlu, hp.n_ff[i])?)
            };
            layers.push(Layer { attn_norm, mixer, ffn_norm, ffn });
        }
        Ok(Model { layers })
    }
}

impl Layers for Model {
    fn forward(&self, p: &mut Pass) -> Result<()> {
        for l in &self.layers {
            p.norm(&l.attn_norm);
            match &l.mixer {
                Mixer::Mamba(m) => m.forward(p)?,
                Mixer::Attention(a) => a.forward(p, Out::Out)?,
            }
            p.residual(0.0);
            p.norm(&l.ffn_norm);
            l.ffn.forward(p)?;
            p.residual(0.0);
        }
        Ok(())
    }
}
