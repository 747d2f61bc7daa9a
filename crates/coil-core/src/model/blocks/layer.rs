//! The layer most hybrids are made of, and the mixers it can hold:
//! ```text
//! h += s · mixer(rms_norm(h) · attn_norm)
//! h += s · ffn(rms_norm(h) · ffn_norm)          (s: Granite's residual scale, else 1)
//! ```

use super::attention::{Attention, Out};
use super::ffn::Ffn;
use super::mamba1::Mamba1;
use super::mamba2::Mamba2;
use super::shortconv::ShortConv;
use super::Pass;
use crate::error::Result;
use crate::model::weights::Loader;

/// A layer's token mixer: `sc.u` in, `sc.out` out.
pub(crate) enum Mixer {
    Mamba1(Mamba1),
    Mamba2(Mamba2),
    Attention(Attention),
    ShortConv(ShortConv),
}

impl Mixer {
    pub fn forward(&self, p: &mut Pass) -> Result<()> {
        match self {
            Mixer::Mamba1(m) => m.forward(p),
            Mixer::Mamba2(m) => m.forward(p),
            Mixer::Attention(a) => a.forward(p, Out::Out),
            Mixer::ShortConv(c) => c.forward(p),
        }
    }
}

/// A pre-norm mixer then a pre-norm FFN (jamba, granitehybrid, lfm2).
pub(crate) struct PreNormLayer {
    attn_norm: Vec<f32>,
    mixer: Mixer,
    ffn_norm: Vec<f32>,
    ffn: Ffn,
}

impl PreNormLayer {
    /// `blk.i.attn_norm.weight`, the mixer, `blk.i.ffn_norm.weight`, the FFN — in that order.
    pub fn load(
        l: &mut Loader,
        i: usize,
        mixer: impl FnOnce(&mut Loader) -> Result<Mixer>,
        ffn: impl FnOnce(&mut Loader) -> Result<Ffn>,
    ) -> Result<PreNormLayer> {
        let d = l.hp.n_embd as u64;
        let attn_norm = l.f32(&format!("blk.{i}.attn_norm.weight"), &[&[d]])?;
        let mixer = mixer(l)?;
        let ffn_norm = l.f32(&format!("blk.{i}.ffn_norm.weight"), &[&[d]])?;
        Ok(PreNormLayer { attn_norm, mixer, ffn_norm, ffn: ffn(l)? })
    }

    /// The layer on `sc.h`; `residual_scale` 0 means none.
    pub fn forward(&self, p: &mut Pass, residual_scale: f32) -> Result<()> {
        p.norm(&self.attn_norm);
        self.mixer.forward(p)?;
        p.residual(residual_scale);
        p.norm(&self.ffn_norm);
        self.ffn.forward(p)?;
        p.residual(residual_scale);
        Ok(())
    }
}
