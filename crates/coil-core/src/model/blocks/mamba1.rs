//! The Mamba-1 mixer (llama.cpp `build_mamba_layer`, transformers' `MambaMixer`), with
//! Falcon-Mamba's weightless and Jamba's weighted dt/B/C norms:
//! ```text
//! [x | z] = W_in u;  x = silu(conv(x) + b);  [dt_r | B | C] = W_x x
//! (Falcon: weightless rms_norm of dt_r, B, C; Jamba: weighted);  dt = W_dt dt_r
//! out = W_out (scan(x, dt + b_dt, A, B, C, D) · silu(z))
//! ```

use super::{chunk, conv_segments, ConvSrc, Pass, MIN_PARALLEL_WORK};
use crate::error::Result;
use crate::kernels::norm::{rms_norm_segments_inplace_with, rms_norm_segments_weighted_inplace_with};
use crate::kernels::ssm::{ssm_scan1_range_raw, Scan1Args};
use crate::model::compat::{matmul, SendPtr};
use crate::model::weights::{Loader, Matrix};

pub struct Mamba1 {
    /// Recurrent layer index (state row).
    rl: usize,
    ssm_in: Matrix,
    /// `[K][E]`.
    conv_w: Vec<f32>,
    conv_b: Option<Vec<f32>>,
    ssm_x: Matrix,
    ssm_dt: Matrix,
    dt_bias: Option<Vec<f32>>,
    /// `[N][E]`.
    a: Vec<f32>,
    d: Vec<f32>,
    ssm_out: Matrix,
    /// Jamba: RMS norm weights on dt_r (`[R]`), B and C (`[N]`), when the file has them.
    dt_norm: Option<Vec<f32>>,
    b_norm: Option<Vec<f32>>,
    c_norm: Option<Vec<f32>>,
}

impl Mamba1 {
    /// The tensors of layer `i` (`blk.i.ssm_*`); `norms`: Jamba's optional dt/B/C norm weights.
    pub fn load(l: &mut Loader, i: usize, norms: bool) -> Result<Mamba1> {
        let hp = l.hp;
        let (d, e, n, k, r) =
            (hp.n_embd as u64, hp.d_inner as u64, hp.d_state as u64, hp.d_conv as u64, hp.dt_rank as u64);
        let b = |x: &str| format!("blk.{i}.{x}");
        let a_g = l.f32(&b("ssm_a"), &[&[n, e]])?;
        let (eu, nu) = (hp.d_inner, hp.d_state);
        let mut a = vec![0f32; nu * eu];
        for ei in 0..eu {
            for ni in 0..nu {
                a[ni * eu + ei] = a_g[ei * nu + ni];
            }
        }
        let conv = l.f32(&b("ssm_conv1d.weight"), &[&[k, e]])?;
        let mut m = Mamba1 {
            rl: hp.recurrent_index(i),
            ssm_in: l.mat(&b("ssm_in.weight"), &[d, 2 * e])?,
            conv_w: crate::kernels::conv::transpose_conv_weights(&conv, eu, hp.d_conv),
            conv_b: l.f32_opt(&b("ssm_conv1d.bias"), &[&[e]])?,
            ssm_x: l.mat(&b("ssm_x.weight"), &[e, r + 2 * n])?,
            ssm_dt: l.mat(&b("ssm_dt.weight"), &[r, e])?,
            dt_bias: l.f32_opt(&b("ssm_dt.bias"), &[&[e]])?,
            a,
            d: l.f32(&b("ssm_d"), &[&[e]])?,
            ssm_out: l.mat(&b("ssm_out.weight"), &[e, d])?,
            dt_norm: None,
            b_norm: None,
            c_norm: None,
        };
        if norms {
            m.dt_norm = l.f32_opt(&b("ssm_dt_norm.weight"), &[&[r]])?;
            m.b_norm = l.f32_opt(&b("ssm_b_norm.weight"), &[&[n]])?;
            m.c_norm = l.f32_opt(&b("ssm_c_norm.weight"), &[&[n]])?;
        }
        Ok(m)
    }

    /// `sc.u` in, `sc.out` out.
    pub fn forward(&self, p: &mut Pass) -> Result<()> {
        let (w, hp, pool, isa, n_t) = (p.w, p.hp, p.pool, p.isa, p.n_t);
        let (d, e, r, n) = (hp.n_embd, hp.d_inner, hp.dt_rank, hp.d_state);
        let dip = hp.d_in_proj();
        matmul(&w.mat(&self.ssm_in)?, &p.sc.u[..n_t * d], n_t, &mut p.sc.proj[..n_t * dip], pool)?;
        p.tm.lap(2);
        conv_segments(p, ConvSrc::Proj, self.rl, &self.conv_w, self.conv_b.as_deref(), 0, e, true);
        p.tm.lap(3);
        let sc = &mut *p.sc;
        let xw = r + 2 * n;
        matmul(&w.mat(&self.ssm_x)?, &sc.conv[..n_t * e], n_t, &mut sc.xdb[..n_t * xw], pool)?;
        {
            let xdb = &mut sc.xdb[..n_t * xw];
            if hp.dt_b_c_rms {
                rms_norm_segments_inplace_with(isa, xdb, xw, 0, r, n_t, hp.dt_b_c_eps);
                rms_norm_segments_inplace_with(isa, xdb, xw, r, n, n_t, hp.dt_b_c_eps);
                rms_norm_segments_inplace_with(isa, xdb, xw, r + n, n, n_t, hp.dt_b_c_eps);
            }
            if let Some(wn) = &self.dt_norm {
                rms_norm_segments_weighted_inplace_with(isa, xdb, xw, 0, wn, n_t, hp.eps);
            }
            if let Some(wn) = &self.b_norm {
                rms_norm_segments_weighted_inplace_with(isa, xdb, xw, r, wn, n_t, hp.eps);
            }
            if let Some(wn) = &self.c_norm {
                rms_norm_segments_weighted_inplace_with(isa, xdb, xw, r + n, wn, n_t, hp.eps);
            }
        }
        for t in 0..n_t {
            sc.dtr[t * r..(t + 1) * r].copy_from_slice(&sc.xdb[t * xw..t * xw + r]);
        }
        matmul(&w.mat(&self.ssm_dt)?, &sc.dtr[..n_t * r], n_t, &mut sc.dt[..n_t * e], pool)?;
        p.tm.lap(4);

        let segs = p.segs;
        let per_seq = if n_t * e * n < MIN_PARALLEL_WORK { 1 } else { pool.n_threads() };
        let ch = chunk(e, per_seq, 16);
        let n_ch = e.div_ceil(ch);
        let y = SendPtr(sc.y.as_mut_ptr());
        let st_base = SendPtr(p.states.ssm.as_mut_ptr());
        let (ssm_len, n_slot, rl) = (p.states.ssm_len, p.states.n_slot, self.rl);
        let (conv, dt, xdb, proj) =
            (&sc.conv[..n_t * e], &sc.dt[..n_t * e], &sc.xdb[..n_t * xw], &sc.proj[..n_t * dip]);
        pool.run(segs.len() * n_ch, |task| {
            let (y, st_base) = (y, st_base);
            let s = segs[task / n_ch];
            let e0 = (task % n_ch) * ch;
            let e1 = (e0 + ch).min(e);
            let args = Scan1Args {
                n_t: s.len,
                n_e: e,
                n_s: n,
                x: &conv[s.start * e..],
                x_stride: e,
                dt: &dt[s.start * e..],
                dt_stride: e,
                dt_bias: self.dt_bias.as_deref(),
                b: &xdb[s.start * xw + r..],
                c: &xdb[s.start * xw + r + n..],
                bc_stride: xw,
                a: &self.a,
                d: Some(&self.d),
                z: Some(&proj[s.start * dip + e..]),
                z_stride: dip,
                y_stride: e,
            };
            // SAFETY: as for the conv: disjoint slots/rows per segment, disjoint channel ranges per
            // task; buffer sizes from `Scratch::ensure` / `States::new`.
            unsafe {
                let st = st_base.0.add((rl * n_slot + s.slot) * ssm_len);
                ssm_scan1_range_raw(isa, &args, e0, e1, st, y.0.add(s.start * e));
            }
        });
        p.tm.lap(5);
        matmul(&w.mat(&self.ssm_out)?, &p.sc.y[..n_t * e], n_t, &mut p.sc.out[..n_t * d], pool)?;
        p.tm.lap(7);
        Ok(())
    }
}
