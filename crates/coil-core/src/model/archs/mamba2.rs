//! `mamba2`: Mamba-2 (state-spaces/mamba2, transformers' `Mamba2ForCausalLM`, Mamba-Codestral).
//! ```text
//! for each layer:  h += Mamba2(rms_norm(h) · attn_norm)
//! ```

use super::Layers;
use crate::error::Result;
use crate::model::blocks::mamba2::Mamba2;
use crate::model::blocks::Pass;
use crate::model::hparams::{read_mamba2_ssm, HParams, Keys};
use crate::model::weights::Loader;

pub(super) fn hparams(k: &Keys, hp: &mut HParams) -> Result<()> {
    read_mamba2_ssm(k, hp)
}

pub(super) struct Model {
    layers: Vec<(Vec<f32>, Mamba2)>,
}

impl Model {
    pub fn load(l: &mut Loader) -> Result<Model> {
        let d = l.hp.n_embd as u64;
        let mut layers = Vec::new();
        for i in 0..l.hp.n_layer {
            let norm = l.f32(&format!("blk.{i}.attn_norm.weight"), &[&[d]])?;
            layers.push((norm, Mamba2::load(l, i, true)?));
        }
        Ok(Model { layers })
    }
}

impl Layers for Model {
    fn forward(&self, p: &mut Pass) -> Result<()> {
        for (norm, mixer) in &self.layers {
            p.norm(norm);
            mixer.forward(p)?;
            p.residual(0.0);
        }
        Ok(())
    }
}
