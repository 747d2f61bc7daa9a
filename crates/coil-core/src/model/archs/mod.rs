//! One file per architecture, each reading top to bottom: its hyperparameters (the GGUF keys it
//! adds to the common ones), its tensors (through [`Loader`](super::weights::Loader)), and its
//! forward pass over the layers, composed from the shared blocks in `model/blocks/`. The token
//! embedding and the output head around them are the same for every architecture
//! (`model/graph.rs`).
//!
//! Adding an architecture: a file here, its `Arch` variant in `hparams.rs`, its lines in the
//! three functions below, and its entry in the converter (`convert/`).

mod falcon_h1;
mod granite_hybrid;
mod jamba;
mod lfm2;
mod mamba;
mod mamba2;
mod nemotron_h;

use super::blocks::Pass;
use super::hparams::{Arch, HParams, Keys};
use super::weights::Loader;
use crate::error::Result;

/// An architecture's layers: `sc.h` (the embedded tokens) in, `sc.h` (the last layer's
/// residual stream) out.
pub(crate) trait Layers: Send + Sync {
    fn forward(&self, p: &mut Pass) -> Result<()>;
}

/// Reads the architecture's own keys into `hp` (the common ones are read already).
pub(crate) fn read_hparams(k: &Keys, hp: &mut HParams) -> Result<()> {
    match k.arch {
        Arch::Mamba => mamba::hparams(k, hp),
        Arch::Mamba2 => mamba2::hparams(k, hp),
        Arch::Jamba => jamba::hparams(k, hp),
        Arch::GraniteHybrid => granite_hybrid::hparams(k, hp),
        Arch::NemotronH | Arch::NemotronHMoe => nemotron_h::hparams(k, hp),
        Arch::FalconH1 => falcon_h1::hparams(k, hp),
        Arch::Lfm2 | Arch::Lfm2Moe => lfm2::hparams(k, hp),
    }
}

/// Loads the layers.
pub(crate) fn load(l: &mut Loader) -> Result<Box<dyn Layers>> {
    Ok(match l.hp.arch {
        Arch::Mamba => Box::new(mamba::Model::load(l)?),
        Arch::Mamba2 => Box::new(mamba2::Model::load(l)?),
        Arch::Jamba => Box::new(jamba::Model::load(l)?),
        Arch::GraniteHybrid => Box::new(granite_hybrid::Model::load(l)?),
        Arch::NemotronH | Arch::NemotronHMoe => Box::new(nemotron_h::Model::load(l)?),
        Arch::FalconH1 => Box::new(falcon_h1::Model::load(l)?),
        Arch::Lfm2 | Arch::Lfm2Moe => Box::new(lfm2::Model::load(l)?),
    })
}

/// The final norm's tensor name.
pub(crate) fn output_norm_name(arch: Arch) -> &'static str {
    match arch {
        // llama.cpp's LLM_TENSOR_OUTPUT_NORM_LFM2 ("fix for wrong tensor name"): transformers'
        // `embedding_norm`, applied after the last layer.
        Arch::Lfm2 | Arch::Lfm2Moe => "token_embd_norm.weight",
        _ => "output_norm.weight",
    }
}
