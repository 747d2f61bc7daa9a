//! `nemotron_h` and `nemotron_h_moe`: Nemotron-H (transformers' `NemotronHForCausalLM`). Each
//! layer is exactly one of: a Mamba-2 mixer (`head_count_kv[i] == 0` and
//! `feed_forward_length[i] == 0`), grouped-query attention without RoPE (`feed_forward_length[i]
//! == 0`), or an FFN — a ReLU² MLP, or (when the file has experts) a sigmoid-routed MoE of ReLU²
//! experts chosen with a selection bias, weights renormalised and scaled, plus a ReLU² shared
//! expert. One pre-norm per layer.
//! ```text
//! for each layer:  h += (Mamba2 or Attention or FFN)(rms_norm(h) · attn_norm)
//! ```
//! Multi-token-prediction layers (`nextn_predict_layers`, after the trunk) are not run.

use super::Layers;
use crate::error::{CoilError, ErrorCode, Result};
use crate::model::blocks::attention::{Attention, AttnOpts, Out};
use crate::model::blocks::ffn::{Act, Ffn};
use crate::model::blocks::mamba2::Mamba2;
use crate::model::blocks::Pass;
use crate::model::hparams::{read_attention, read_mamba2_ssm, Gating, HParams, Keys, Rope, MAX_DIM};
use crate::model::weights::Loader;

pub(super) fn hparams(k: &Keys, hp: &mut HParams) -> Result<()> {
    let a = k.arch.name();
    let n_all = hp.n_layer;
    let nextn = k.opt_usize("nextn_predict_layers", n_all as u64)?.unwrap_or(0);
    read_mamba2_ssm(k, hp)?;
    // The per-layer arrays cover the MTP layers too; the trunk is the first n_all - nextn.
    let ff = k.per_layer("feed_forward_length", n_all, MAX_DIM)?.ok_or_else(|| {
        CoilError::new(ErrorCode::MissingKey, format!("missing metadata key {}", k.name("feed_forward_length")))
    })?;
    read_attention(k, hp, Rope::None)?;
    hp.n_layer = n_all - nextn;
    hp.n_head_kv.truncate(hp.n_layer);
    let ff = &ff[..hp.n_layer];
    hp.recurrent = (0..hp.n_layer).map(|i| hp.n_head_kv[i] == 0 && ff[i] == 0).collect();
    for (kv, &f) in hp.n_head_kv.iter_mut().zip(ff) {
        if f > 0 {
            *kv = 0; // an FFN layer
        }
    }
    let n_expert = k.opt_usize("expert_count", 4096)?.unwrap_or(0);
    hp.moe = ff.iter().map(|&f| f > 0 && n_expert > 0).collect();
    hp.n_ff = ff.iter().map(|&f| if n_expert > 0 { 0 } else { f }).collect();
    if n_expert > 0 && hp.moe.iter().any(|&m| m) {
        hp.n_expert = n_expert;
        hp.n_expert_used = k.positive("expert_used_count", n_expert as u64)?;
        let first = hp.moe.iter().position(|&m| m).unwrap_or(0);
        let widths = match k.per_layer("expert_feed_forward_length", n_all, MAX_DIM)? {
            Some(w) => w[..hp.n_layer].to_vec(),
            None => ff.iter().map(|&f| f / hp.n_expert_used).collect(),
        };
        hp.n_ff_exp = widths[first];
        if hp.n_ff_exp == 0 || (0..hp.n_layer).any(|i| hp.moe[i] && widths[i] != hp.n_ff_exp) {
            return Err(CoilError::new(
                ErrorCode::UnsupportedType,
                format!("{a}: experts of different widths per layer are not supported yet"),
            ));
        }
        hp.n_ff_shexp = k.opt_usize("expert_shared_feed_forward_length", MAX_DIM)?.unwrap_or(0);
        hp.gating = Gating::Sigmoid;
        hp.expert_weights_norm = k.opt_bool("expert_weights_norm")?.unwrap_or(false);
        hp.expert_weights_scale = k.opt_f32("expert_weights_scale")?.unwrap_or(0.0);
    }
    Ok(())
}

enum Mixer {
    Mamba(Mamba2),
    Attention(Attention),
    Ffn(Ffn),
}

pub(super) struct Model {
    layers: Vec<(Vec<f32>, Mixer)>,
}

impl Model {
    pub fn load(l: &mut Loader) -> Result<Model> {
        let hp = l.hp;
        let d = hp.n_embd as u64;
        let mut layers = Vec::new();
        for i in 0..hp.n_layer {
            let norm = l.f32(&format!("blk.{i}.attn_norm.weight"), &[&[d]])?;
            let mixer = if hp.is_recurrent(i) {
                Mixer::Mamba(Mamba2::load(l, i, true)?)
            } else if hp.is_attention(i) {
                Mixer::Attention(Attention::load(l, i, AttnOpts::default())?)
            } else {
                Mixer::Ffn(Ffn::load(l, i, Act::Relu2, true)?)
            };
            layers.push((norm, mixer));
        }
        Ok(Model { layers })
    }
}

impl Layers for Model {
    fn forward(&self, p: &mut Pass) -> Result<()> {
        for (norm, mixer) in &self.layers {
            p.norm(norm);
            match mixer {
                Mixer::Mamba(m) => m.forward(p)?,
                Mixer::Attention(a) => a.forward(p, Out::Out)?,
                Mixer::Ffn(f) => f.forward(p)?,
            }
            p.residual(0.0);
        }
        Ok(())
    }
}
