//! The Mamba-2 mixer (llama.cpp `build_mamba2_layer`, transformers' `Mamba2Mixer`), shared by
//! mamba2, Granite-4.0-H, Nemotron-H and Falcon-H1:
//! ```text
//! [z | xBC | dt] = W_in u;  xBC = silu(conv(xBC) + b);  [x | B | C] = xBC
//! y = scan(x, dt + b_dt, A, B, C, D) · silu(z)      (Δ clamped at ssm.dt_min when the file says)
//! y = group_rms_norm(y) · w          (when the layer has ssm_norm; gate first, then norm —
//!                                     or norm first, then gate, with ssm.norm_before_gate)
//! out = W_out y
//! ```

use super::{chunk, conv_segments, ConvSrc, Pass, MIN_PARALLEL_WORK};
use crate::error::Result;
use crate::kernels::norm::group_rms_norm_inplace_with;
use crate::kernels::ops::mul_silu_with;
use crate::kernels::ssm::{ssm_scan2_range_raw, Scan2Args};
use crate::model::compat::{matmul, SendPtr};
use crate::model::weights::{Loader, Matrix};

pub struct Mamba2 {
    /// Recurrent layer index (state row).
    rl: usize,
    ssm_in: Matrix,
    /// `[K][E+2GN]`.
    conv_w: Vec<f32>,
    conv_b: Option<Vec<f32>>,
    dt_bias: Option<Vec<f32>>,
    /// `[H]`.
    a: Vec<f32>,
    /// `[H]`.
    d: Vec<f32>,
    /// `[E]`, group-major; `None`: no norm (Falcon-H1 without `mamba_rms_norm`).
    norm: Option<Vec<f32>>,
    ssm_out: Matrix,
}

impl Mamba2 {
    /// The tensors of layer `i` (`blk.i.ssm_*`). `norm_required`: whether `ssm_norm` must exist.
    pub fn load(l: &mut Loader, i: usize, norm_required: bool) -> Result<Mamba2> {
        let hp = l.hp;
        let (d, e, k) = (hp.n_embd as u64, hp.d_inner as u64, hp.d_conv as u64);
        let (h, g) = (hp.n_head as u64, hp.n_group as u64);
        let cd = hp.conv_dim() as u64;
        let b = |x: &str| format!("blk.{i}.{x}");
        let norm_shapes: &[&[u64]] = &[&[e / g, g], &[e]];
        let conv = l.f32(&b("ssm_conv1d.weight"), &[&[k, cd]])?;
        Ok(Mamba2 {
            rl: hp.recurrent_index(i),
            ssm_in: l.mat(&b("ssm_in.weight"), &[d, hp.d_in_proj() as u64])?,
            conv_w: crate::kernels::conv::transpose_conv_weights(&conv, hp.conv_dim(), hp.d_conv),
            conv_b: l.f32_opt(&b("ssm_conv1d.bias"), &[&[cd]])?,
            dt_bias: l.f32_opt(&b("ssm_dt.bias"), &[&[h]])?,
            a: l.f32(&b("ssm_a"), &[&[1, h], &[h]])?,
            d: l.f32(&b("ssm_d"), &[&[1, h], &[h]])?,
            norm: if norm_required {
                Some(l.f32(&b("ssm_norm.weight"), norm_shapes)?)
            } else {
                l.f32_opt(&b("ssm_norm.weight"), norm_shapes)?
            },
            ssm_out: l.mat(&b("ssm_out.weight"), &[e, d])?,
        })
    }

    /// `sc.u` in, `sc.out` out.
    pub fn forward(&self, p: &mut Pass) -> Result<()> {
        let (w, hp, pool, isa, n_t, segs) = (p.w, p.hp, p.pool, p.isa, p.n_t, p.segs);
        let (d, e) = (hp.n_embd, hp.d_inner);
        let dip = hp.d_in_proj();
        matmul(&w.mat(&self.ssm_in)?, &p.sc.u[..n_t * d], n_t, &mut p.sc.proj[..n_t * dip], pool)?;
        p.tm.lap(2);
        let cd = hp.conv_dim();
        conv_segments(p, ConvSrc::Proj, self.rl, &self.conv_w, self.conv_b.as_deref(), e, cd, true);
        p.tm.lap(3);
        let (h, hdim, n, g) = (hp.n_head, hp.head_dim, hp.d_state, hp.n_group);
        let per_seq = if n_t * e * n < MIN_PARALLEL_WORK { 1 } else { pool.n_threads() };
        let ch = chunk(h, per_seq, 1);
        let n_ch = h.div_ceil(ch);
        let sc = &mut *p.sc;
        let y = SendPtr(sc.y.as_mut_ptr());
        let st_base = SendPtr(p.states.ssm.as_mut_ptr());
        let (ssm_len, n_slot, rl) = (p.states.ssm_len, p.states.n_slot, self.rl);
        let (conv, proj) = (&sc.conv[..n_t * cd], &sc.proj[..n_t * dip]);
        let dt_col = 2 * e + 2 * g * n;
        let gate_after = hp.norm_before_gate && self.norm.is_some();
        pool.run(segs.len() * n_ch, |task| {
            let (y, st_base) = (y, st_base);
            let s = segs[task / n_ch];
            let h0 = (task % n_ch) * ch;
            let h1 = (h0 + ch).min(h);
            let args = Scan2Args {
                n_t: s.len,
                n_h: h,
                n_p: hdim,
                n_s: n,
                n_g: g,
                x: &conv[s.start * cd..],
                x_stride: cd,
                dt: &proj[s.start * dip + dt_col..],
                dt_stride: dip,
                dt_bias: self.dt_bias.as_deref(),
                dt_min: hp.dt_min,
                a: &self.a,
                b: &conv[s.start * cd + e..],
                c: &conv[s.start * cd + e + g * n..],
                bc_stride: cd,
                d: Some(&self.d),
                // Gate in the scan's epilogue, unless the norm comes first.
                z: if gate_after { None } else { Some(&proj[s.start * dip..]) },
                z_stride: dip,
                y_stride: e,
            };
            // SAFETY: disjoint slots/rows per segment, disjoint head ranges per task.
            unsafe {
                let st = st_base.0.add((rl * n_slot + s.slot) * ssm_len);
                ssm_scan2_range_raw(isa, &args, h0, h1, st, y.0.add(s.start * e));
            }
        });
        p.tm.lap(5);
        if let Some(norm) = &self.norm {
            group_rms_norm_inplace_with(isa, &mut sc.y[..n_t * e], norm, g, hp.eps);
            if gate_after {
                for t in 0..n_t {
                    mul_silu_with(isa, &mut sc.y[t * e..(t + 1) * e], &sc.proj[t * dip..t * dip + e]);
                }
            }
            p.tm.lap(6);
        }
        matmul(&w.mat(&self.ssm_out)?, &sc.y[..n_t * e], n_t, &mut sc.out[..n_t * d], pool)?;
        p.tm.lap(7);
        Ok(())
    }
}
