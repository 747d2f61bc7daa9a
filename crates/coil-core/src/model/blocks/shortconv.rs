//! LFM2's gated short convolution (llama.cpp `lfm2.cpp` `build_shortconv_block`, transformers'
//! `Lfm2ShortConv`): a depthwise causal conv of width L (3) with no bias and no activation,
//! gated before and after. Its recurrent state is the last L−1 inputs of the conv.
//! ```text
//! [B | C | x] = W_in u
//! out = W_out (C ⊙ conv(B ⊙ x))
//! ```

use super::{conv_segments, ConvSrc, Pass};
use crate::error::Result;
use crate::model::compat::matmul;
use crate::model::weights::{Loader, Matrix};

pub struct ShortConv {
    /// Recurrent layer index (state row).
    rl: usize,
    in_proj: Matrix,
    /// `[L][D]`.
    conv_w: Vec<f32>,
    out_proj: Matrix,
}

impl ShortConv {
    /// `blk.i.shortconv.{in_proj,conv,out_proj}.weight`.
    pub fn load(l: &mut Loader, i: usize) -> Result<ShortConv> {
        let hp = l.hp;
        let (d, k) = (hp.n_embd as u64, hp.d_conv as u64);
        let b = |x: &str| format!("blk.{i}.shortconv.{x}");
        let conv = l.f32(&b("conv.weight"), &[&[k, d], &[k, 1, d]])?;
        Ok(ShortConv {
            rl: hp.recurrent_index(i),
            in_proj: l.mat(&b("in_proj.weight"), &[d, 3 * d])?,
            conv_w: crate::kernels::conv::transpose_conv_weights(&conv, hp.n_embd, hp.d_conv),
            out_proj: l.mat(&b("out_proj.weight"), &[d, d])?,
        })
    }

    /// `sc.u` in, `sc.out` out.
    pub fn forward(&self, p: &mut Pass) -> Result<()> {
        let (w, hp, pool, n_t) = (p.w, p.hp, p.pool, p.n_t);
        let d = hp.n_embd;
        let sc = &mut *p.sc;
        matmul(&w.mat(&self.in_proj)?, &sc.u[..n_t * d], n_t, &mut sc.proj[..n_t * 3 * d], pool)?;
        p.tm.lap(2);
        for t in 0..n_t {
            let row = &sc.proj[t * 3 * d..(t + 1) * 3 * d];
            let (b, x) = (&row[..d], &row[2 * d..]);
            for ((y, &b), &x) in sc.y[t * d..(t + 1) * d].iter_mut().zip(b).zip(x) {
                *y = b * x;
            }
        }
        conv_segments(p, ConvSrc::Y, self.rl, &self.conv_w, None, 0, d, false);
        let sc = &mut *p.sc;
        for t in 0..n_t {
            let c = &sc.proj[t * 3 * d + d..t * 3 * d + 2 * d];
            for (y, &c) in sc.conv[t * d..(t + 1) * d].iter_mut().zip(c) {
                *y *= c;
            }
        }
        p.tm.lap(14);
        matmul(&w.mat(&self.out_proj)?, &sc.conv[..n_t * d], n_t, &mut sc.out[..n_t * d], pool)?;
        p.tm.lap(7);
        Ok(())
    }
}
