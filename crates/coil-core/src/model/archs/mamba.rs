//! `mamba`: Mamba-1 (state-spaces/mamba, transformers' `MambaForCausalLM`) and Falcon-Mamba
//! (`ssm.dt_b_c_rms`: weightless RMS norms on dt, B and C).
//! ```text
//! for each layer:  h += Mamba1(rms_norm(h) · attn_norm)
//! ```

use super::Layers;
use crate::error::Result;
use crate::model::blocks::mamba1::Mamba1;
use crate::model::blocks::Pass;
use crate::model::hparams::{HParams, Keys, MAX_DIM};
use crate::model::weights::Loader;

pub(super) fn hparams(k: &Keys, hp: &mut HParams) -> Result<()> {
    hp.d_inner = k.positive("ssm.inner_size", MAX_DIM)?;
    hp.d_state = k.positive("ssm.state_size", 4096)?;
    hp.d_conv = k.positive("ssm.conv_kernel", crate::kernels::conv::MAX_D_CONV as u64)?;
    hp.dt_rank = k.positive("ssm.time_step_rank", MAX_DIM)?;
    hp.n_head = hp.d_inner;
    hp.dt_b_c_rms = k.opt_bool("ssm.dt_b_c_rms")?.unwrap_or(false);
    if let Some(e) = k.opt_f32("ssm.dt_b_c_rms_epsilon")? {
        if e < 0.0 {
            return Err(crate::error::CoilError::new(
                crate::error::ErrorCode::GgufInvalid,
                format!("{} = {e} is not a non-negative number", k.name("ssm.dt_b_c_rms_epsilon")),
            ));
        }
        hp.dt_b_c_eps = e;
    }
    Ok(())
}

pub(super) struct Model {
    layers: Vec<(Vec<f32>, Mamba1)>,
}

impl Model {
    pub fn load(l: &mut Loader) -> Result<Model> {
        let d = l.hp.n_embd as u64;
        let mut layers = Vec::new();
        for i in 0..l.hp.n_layer {
            let norm = l.f32(&format!("blk.{i}.attn_norm.weight"), &[&[d]])?;
            layers.push((norm, Mamba1::load(l, i, false)?));
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
