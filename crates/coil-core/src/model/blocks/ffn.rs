//! Feed-forward blocks (llama.cpp `build_ffn` / `build_moe_ffn`):
//! ```text
//! SwiGLU:  out = W_down (silu(W_gate v + b_gate) ⊙ (W_up v + b_up)) + b_down
//! ReLU²:   out = W_down relu(W_up v + b_up)² + b_down                      (Nemotron-H)
//! MoE:     p = softmax(W_router v) or sigmoid(W_router v)
//!          top-k experts by p (+ the selection bias, sigmoid routers), weights p of those,
//!          renormalised to sum 1 and scaled when the model says so;
//!          out = Σ_e p_e · expert_e(v)  (+ shared_expert(v))
//! ```
//! Per token, experts are added in expert order whatever the batch, so a token's result does not
//! depend on the other tokens.

use super::Pass;
use crate::error::{CoilError, ErrorCode, Result};
use crate::kernels::ops::{exp_ref, mul_silu_with, Isa};
use crate::model::compat::matmul;
use crate::model::hparams::Gating;
use crate::model::weights::{Loader, Matrix};

/// The activation between up and down.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Act {
    /// `silu(gate) ⊙ up`.
    SwiGlu,
    /// `relu(up)²` (no gate).
    Relu2,
}

/// A dense FFN.
pub struct Dense {
    act: Act,
    gate: Option<Matrix>,
    up: Matrix,
    down: Matrix,
    b_gate: Option<Vec<f32>>,
    b_up: Option<Vec<f32>>,
    b_down: Option<Vec<f32>>,
    n_ff: usize,
}

impl Dense {
    /// `blk.i.ffn_{gate,up,down}{suffix}.weight` (+ optional biases), `n_ff` wide.
    pub fn load(l: &mut Loader, i: usize, suffix: &str, act: Act, n_ff: usize) -> Result<Dense> {
        let (d, f) = (l.hp.n_embd as u64, n_ff as u64);
        let b = |x: &str, what: &str| format!("blk.{i}.ffn_{x}{suffix}.{what}");
        Ok(Dense {
            act,
            gate: if act == Act::SwiGlu { Some(l.mat(&b("gate", "weight"), &[d, f])?) } else { None },
            up: l.mat(&b("up", "weight"), &[d, f])?,
            down: l.mat(&b("down", "weight"), &[f, d])?,
            b_gate: if act == Act::SwiGlu { l.f32_opt(&b("gate", "bias"), &[&[f]])? } else { None },
            b_up: l.f32_opt(&b("up", "bias"), &[&[f]])?,
            b_down: l.f32_opt(&b("down", "bias"), &[&[d]])?,
            n_ff,
        })
    }

    /// `sc.u` in; the result in `sc.out`, or added to `sc.out` when `accumulate`.
    pub fn forward(&self, p: &mut Pass, accumulate: bool) -> Result<()> {
        let (w, hp, pool, isa, n_t) = (p.w, p.hp, p.pool, p.isa, p.n_t);
        let (d, nf) = (hp.n_embd, self.n_ff);
        let sc = &mut *p.sc;
        let u = &sc.u[..n_t * d];
        if let Some(g) = &self.gate {
            matmul(&w.mat(g)?, u, n_t, &mut sc.gate[..n_t * nf], pool)?;
            super::add_bias(&mut sc.gate[..n_t * nf], self.b_gate.as_deref());
        }
        matmul(&w.mat(&self.up)?, u, n_t, &mut sc.up[..n_t * nf], pool)?;
        super::add_bias(&mut sc.up[..n_t * nf], self.b_up.as_deref());
        activate(isa, self.act, &mut sc.up[..n_t * nf], &sc.gate[..n_t * nf]);
        let o = if accumulate { &mut sc.ye } else { &mut sc.out };
        matmul(&w.mat(&self.down)?, &sc.up[..n_t * nf], n_t, &mut o[..n_t * d], pool)?;
        super::add_bias(&mut o[..n_t * d], self.b_down.as_deref());
        if accumulate {
            crate::kernels::ops::add_inplace(&mut sc.out[..n_t * d], &sc.ye[..n_t * d]);
        }
        p.tm.lap(12);
        Ok(())
    }
}

/// `up = act(gate, up)` in place.
fn activate(isa: Isa, act: Act, up: &mut [f32], gate: &[f32]) {
    match act {
        Act::SwiGlu => mul_silu_with(isa, up, gate),
        Act::Relu2 => {
            for v in up.iter_mut() {
                let r = v.max(0.0);
                *v = r * r;
            }
        }
    }
}

/// Experts behind a router, with an optional shared expert.
pub struct Moe {
    act: Act,
    router: Matrix,
    /// Added to the probabilities for choosing experts only (`exp_probs_b.bias`).
    probs_bias: Option<Vec<f32>>,
    gate: Option<Matrix>,
    up: Matrix,
    down: Matrix,
    shared: Option<Dense>,
}

impl Moe {
    /// `blk.i.ffn_gate_inp.weight`, `ffn_{gate,up,down}_exps.weight`, the selection bias
    /// `exp_probs_b.bias` when `probs_bias`, and the shared expert `ffn_*_shexp` when the model
    /// has one (`n_ff_shexp > 0`).
    pub fn load(l: &mut Loader, i: usize, act: Act, probs_bias: bool) -> Result<Moe> {
        let hp = l.hp;
        let (d, f, x) = (hp.n_embd as u64, hp.n_ff_exp as u64, hp.n_expert as u64);
        let b = |s: &str| format!("blk.{i}.{s}");
        if l.has(&b("ffn_latent_down.weight")) {
            return Err(CoilError::new(
                ErrorCode::UnsupportedType,
                format!("blk.{i}: latent MoE projections (ffn_latent_down/up) are not supported yet"),
            ));
        }
        Ok(Moe {
            act,
            router: l.mat(&b("ffn_gate_inp.weight"), &[d, x])?,
            probs_bias: if probs_bias { Some(l.f32(&b("exp_probs_b.bias"), &[&[x]])?) } else { None },
            gate: if act == Act::SwiGlu { Some(l.mat(&b("ffn_gate_exps.weight"), &[d, f, x])?) } else { None },
            up: l.mat(&b("ffn_up_exps.weight"), &[d, f, x])?,
            down: l.mat(&b("ffn_down_exps.weight"), &[f, d, x])?,
            shared: if hp.n_ff_shexp > 0 { Some(Dense::load(l, i, "_shexp", act, hp.n_ff_shexp)?) } else { None },
        })
    }

    /// `sc.u` in, `sc.out` out.
    pub fn forward(&self, p: &mut Pass) -> Result<()> {
        let (w, hp, pool, isa, n_t) = (p.w, p.hp, p.pool, p.isa, p.n_t);
        let (d, nf) = (hp.n_embd, hp.n_ff_exp);
        let (nx, k) = (hp.n_expert, hp.n_expert_used);
        let sc = &mut *p.sc;
        matmul(&w.mat(&self.router)?, &sc.u[..n_t * d], n_t, &mut sc.router[..n_t * nx], pool)?;
        let mut chosen: Vec<Vec<(usize, f32)>> = vec![Vec::new(); nx];
        let mut order: Vec<usize> = Vec::with_capacity(nx);
        let mut sel: Vec<f32> = vec![0.0; nx];
        let mut picked: Vec<(usize, f32)> = Vec::with_capacity(k);
        for t in 0..n_t {
            let pr = &mut sc.router[t * nx..(t + 1) * nx];
            match hp.gating {
                Gating::Softmax => {
                    let m = pr.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                    let mut sum = 0f32;
                    for v in pr.iter_mut() {
                        *v = exp_ref(*v - m);
                        sum += *v;
                    }
                    for v in pr.iter_mut() {
                        *v /= sum;
                    }
                }
                Gating::Sigmoid => {
                    for v in pr.iter_mut() {
                        *v = 1.0 / (1.0 + exp_ref(-*v));
                    }
                }
            }
            sel.copy_from_slice(pr);
            if let Some(bias) = &self.probs_bias {
                for (s, b) in sel.iter_mut().zip(bias) {
                    *s += b;
                }
            }
            // The top k by selection score (ties: the lower index).
            order.clear();
            order.extend(0..nx);
            order.sort_by(|&a, &b| sel[b].total_cmp(&sel[a]).then(a.cmp(&b)));
            picked.clear();
            picked.extend(order[..k].iter().map(|&x| (x, pr[x])));
            if hp.expert_weights_norm {
                let sum: f32 = picked.iter().map(|&(_, v)| v).sum();
                let sum = sum.max(1.0 / 16384.0); // llama.cpp clamps the sum at 6.1035e-5
                for v in picked.iter_mut() {
                    v.1 /= sum;
                }
            }
            let s = hp.expert_weights_scale;
            if s != 0.0 && s != 1.0 {
                for v in picked.iter_mut() {
                    v.1 *= s;
                }
            }
            for &(x, v) in &picked {
                chosen[x].push((t, v));
            }
        }
        sc.out[..n_t * d].fill(0.0);
        let (gm, um, dm) = (self.gate.as_ref().map(|g| w.mat(g)).transpose()?, w.mat(&self.up)?, w.mat(&self.down)?);
        for (x, rows) in chosen.iter().enumerate() {
            let m = rows.len();
            if m == 0 {
                continue;
            }
            for (i, &(t, _)) in rows.iter().enumerate() {
                sc.xe[i * d..(i + 1) * d].copy_from_slice(&sc.u[t * d..(t + 1) * d]);
            }
            if let Some(gm) = &gm {
                matmul(&gm.rows(x * nf, nf)?, &sc.xe[..m * d], m, &mut sc.gate[..m * nf], pool)?;
            }
            matmul(&um.rows(x * nf, nf)?, &sc.xe[..m * d], m, &mut sc.up[..m * nf], pool)?;
            activate(isa, self.act, &mut sc.up[..m * nf], &sc.gate[..m * nf]);
            matmul(&dm.rows(x * d, d)?, &sc.up[..m * nf], m, &mut sc.ye[..m * d], pool)?;
            for (i, &(t, pw)) in rows.iter().enumerate() {
                let o = &mut sc.out[t * d..(t + 1) * d];
                for (a, b) in o.iter_mut().zip(&sc.ye[i * d..(i + 1) * d]) {
                    *a += pw * *b;
                }
            }
        }
        p.tm.lap(13);
        if let Some(sh) = &self.shared {
            sh.forward(p, true)?;
        }
        Ok(())
    }
}

/// A layer's FFN.
pub enum Ffn {
    Dense(Dense),
    Moe(Moe),
}

impl Ffn {
    /// Layer `i`'s FFN: MoE where the model says so (`hp.moe[i]`, with the selection bias when
    /// `probs_bias`), else dense of `hp.n_ff[i]`.
    pub fn load(l: &mut Loader, i: usize, act: Act, probs_bias: bool) -> Result<Ffn> {
        Ok(if l.hp.moe[i] {
            Ffn::Moe(Moe::load(l, i, act, probs_bias)?)
        } else {
            Ffn::Dense(Dense::load(l, i, "", act, l.hp.n_ff[i])?)
        })
    }

    /// `sc.u` in, `sc.out` out.
    pub fn forward(&self, p: &mut Pass) -> Result<()> {
        match self {
            Ffn::Dense(f) => f.forward(p, false),
            Ffn::Moe(m) => m.forward(p),
        }
    }
}
