//! The forward pass over one micro-batch — the tokens of one or more sequences, each sequence's
//! tokens contiguous — for every architecture:
//! ```text
//! h = token_embd[tokens]  (× embedding_scale, Granite)
//! h = the architecture's layers (model/archs/<arch>.rs, composed from model/blocks/)
//! logits = W_output (rms_norm(h) · output_norm)  (÷ logit_scale, Granite)
//! ```
//! for the rows that asked for logits.

use super::compat::{get_rows, matmul, ThreadPool};
use super::weights::Weights;
use crate::context::kv::KvCache;
use crate::error::Result;
use crate::kernels::norm::rms_norm_with;
use crate::kernels::ops::Isa;

pub use super::blocks::profile;
use super::blocks::{Pass, Timer};
pub(crate) use super::blocks::{Scratch, Segment, States};

/// One micro-batch through the model. `tokens[i]` is row i; `segs` cover the rows, each a run of
/// one sequence; `outputs` lists `(row, logits_row)` for the rows whose logits are wanted, written
/// to `logits[logits_row * n_vocab..]`. Attention models need `kv` with every segment's cells
/// reserved.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    w: &Weights,
    pool: &ThreadPool,
    states: &mut States,
    kv: Option<&mut KvCache>,
    scratch: &mut Scratch,
    tokens: &[u32],
    segs: &[Segment],
    outputs: &[(usize, usize)],
    logits: &mut [f32],
) -> Result<()> {
    let hp = &w.hp;
    let n_t = tokens.len();
    if n_t == 0 {
        return Ok(());
    }
    scratch.ensure(hp, n_t, outputs.len())?;
    let d = hp.n_embd;
    let isa = Isa::best();
    let mut p = Pass { w, hp, pool, isa, segs, n_t, states, kv, sc: scratch, tm: Timer::start() };

    get_rows(&w.mat(&w.token_embd)?, tokens, &mut p.sc.h[..n_t * d])?;
    if hp.embedding_scale != 0.0 {
        for v in &mut p.sc.h[..n_t * d] {
            *v *= hp.embedding_scale;
        }
    }
    p.tm.lap(0);

    w.layers.forward(&mut p)?;

    // Logits for the rows that asked.
    let sc = &mut *p.sc;
    let n_out = outputs.len();
    if n_out > 0 {
        for (i, &(row, _)) in outputs.iter().enumerate() {
            sc.lm_in[i * d..(i + 1) * d].copy_from_slice(&sc.h[row * d..(row + 1) * d]);
        }
        rms_norm_with(isa, &sc.lm_in[..n_out * d], &w.output_norm, hp.eps, &mut sc.lm_norm[..n_out * d]);
        let v = hp.n_vocab;
        matmul(&w.mat(&w.output)?, &sc.lm_norm[..n_out * d], n_out, &mut sc.lm_out[..n_out * v], pool)?;
        if hp.logit_scale != 0.0 && hp.logit_scale != 1.0 {
            for x in &mut sc.lm_out[..n_out * v] {
                *x /= hp.logit_scale;
            }
        }
        for (i, &(_, lr)) in outputs.iter().enumerate() {
            logits[lr * v..(lr + 1) * v].copy_from_slice(&sc.lm_out[i * v..(i + 1) * v]);
        }
    }
    p.tm.lap(9);
    Ok(())
}
