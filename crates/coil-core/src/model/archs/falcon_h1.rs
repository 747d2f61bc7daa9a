//! `falcon-h1`: Falcon-H1 (transformers' `FalconH1ForCausalLM`). Every layer runs grouped-query
//! attention (RoPE NEOX) and a Mamba-2 mixer side by side on the same normed input and adds both
//! to the residual, then a SwiGLU FFN — so every layer has both KV and recurrent state. The µP
//! multipliers of the checkpoint are folded into the weights by the converter (llama.cpp's
//! `conversion/falcon_h1.py`, coil's `convert/`), so none appear here.
//! ```text
//! for each layer:  u = rms_norm(h) · attn_norm
//!                  h += Attention(u) + Mamba2(u)
//!                  h += SwiGLU(rms_norm(h) · ffn_norm)
//! ```
//! The Mamba-2 group norm is optional (`mamba_rms_norm`); like llama.cpp it gates before the norm.
//! The FFN norm is `blk.i.ffn_norm` with no `.weight` suffix in llama.cpp's files.

use super::Layers;
use crate::error::Result;
use crate::kernels::ops::add_inplace;
use crate::model::blocks::attention::{Attention, AttnOpts, Out};
use crate::model::blocks::ffn::{Act, Dense};
use crate::model::blocks::mamba2::Mamba2;
use crate::model::blocks::Pass;
use crate::model::hparams::{read_attention, read_mamba2_ssm, HParams, Keys, Rope, MAX_DIM};
use crate::model::weights::Loader;

pub(super) fn hparams(k: &Keys, hp: &mut HParams) -> Result<()> {
    read_mamba2_ssm(k, hp)?;
    read_attention(k, hp, Rope::Neox)?;
    if let Some(i) = hp.n_head_kv.iter().position(|&h| h == 0) {
        return Err(crate::error::CoilError::new(
            crate::error::ErrorCode::GgufInvalid,
            format!("falcon-h1: attention.head_count_kv[{i}] is 0; every Falcon-H1 layer has attention"),
        ));
    }
    hp.recurrent = vec![true; hp.n_layer];
    let n_ff = k.positive("feed_forward_length", MAX_DIM)?;
    hp.n_ff = vec![n_ff; hp.n_layer];
    hp.moe = vec![false; hp.n_layer];
    Ok(())
}

struct Layer {
    attn_norm: Vec<f32>,
    attn: Attention,
    mamba: Mamba2,
    ffn_norm: Vec<f32>,
    ffn: Dense,
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
            let attn = Attention::load(l, i, AttnOpts { no_out_bias: true, ..AttnOpts::default() })?;
            let mamba = Mamba2::load(l, i, false)?;
            let ffn_norm_name = if l.has(&b("ffn_norm")) { b("ffn_norm") } else { b("ffn_norm.weight") };
            let ffn_norm = l.f32(&ffn_norm_name, &[&[d]])?;
            let ffn = Dense::load(l, i, "", Act::SwiGlu, hp.n_ff[i])?;
            layers.push(Layer { attn_norm, attn, mamba, ffn_norm, ffn });
        }
        Ok(Model { layers })
    }
}

impl Layers for Model {
    fn forward(&self, p: &mut Pass) -> Result<()> {
        let nd = p.n_t * p.hp.n_embd;
        for l in &self.layers {
            p.norm(&l.attn_norm);
            l.attn.forward(p, Out::Out2)?;
            l.mamba.forward(p)?;
            add_inplace(&mut p.sc.out[..nd], &p.sc.out2[..nd]);
            p.residual(0.0);
            p.norm(&l.ffn_norm);
            l.ffn.forward(p, false)?;
            p.residual(0.0);
        }
        Ok(())
    }
}
