//! Grouped-query attention over the paged KV cache (llama.cpp `build_attn`), with what the
//! hybrids add: per-head RMS norms on q and k (LFM2's QK-norm), RoPE (NORM or NEOX, on the first
//! `n_rot` dims of each head), a head size other than `d_model / heads` (Nemotron-H), and a
//! fixed score scale (Granite's `attention.scale`):
//! ```text
//! q, k, v = W_q u + b_q, W_k u + b_k, W_v u + b_v
//! q, k = rms_norm(q)·w_q, rms_norm(k)·w_k per head   (QK-norm)
//! q, k = rope(q, pos), rope(k, pos)                    (RoPE)
//! k, v appended to the sequence's cache
//! y = softmax(scale · q·Kᵀ over the sequence's positions ≤ the token's) · V
//! out = W_o y + b_o
//! ```

use std::cell::RefCell;

use super::{add_bias, chunk, Pass, MIN_PARALLEL_WORK};
use crate::context::kv::{KvCache, KvType};
use crate::error::Result;
use crate::kernels::attn::{attend_f16_with, attend_f32_with, AttnArgs};
use crate::kernels::norm::rms_norm_segments_weighted_inplace_with;
use crate::kernels::rope::{angles, inv_freqs, rope_row};
use crate::model::compat::{matmul, SendPtr};
use crate::model::hparams::Rope;
use crate::model::weights::{Loader, Matrix};

thread_local! {
    /// Per-thread attention scratch: block pointers and scores.
    static ATTN_SCRATCH: RefCell<(Vec<usize>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn no_kv() -> crate::error::CoilError {
    crate::error::CoilError::new(crate::error::ErrorCode::Internal, "attention layer without a KV cache")
}

/// Which optional parts a layer's attention has.
#[derive(Clone, Copy, Default)]
pub struct AttnOpts {
    /// `attn_q_norm.weight` / `attn_k_norm.weight` (`[hd]`) are required.
    pub qk_norm: bool,
    /// Ignore `attn_output.bias` (Falcon-H1: llama.cpp creates it but never applies it).
    pub no_out_bias: bool,
}

pub struct Attention {
    /// Attention layer index (KV cache layer).
    al: usize,
    n_head_kv: usize,
    wq: Matrix,
    wk: Matrix,
    wv: Matrix,
    wo: Matrix,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    bo: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    /// RoPE inverse frequencies (empty without RoPE).
    inv_freq: Vec<f64>,
}

/// Where a block's output goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// `Scratch::out`.
    Out,
    /// `Scratch::out2` (a second mixer running beside the first).
    Out2,
}

impl Attention {
    /// The tensors of layer `i` (`blk.i.attn_*`).
    pub fn load(l: &mut Loader, i: usize, opts: AttnOpts) -> Result<Attention> {
        let hp = l.hp;
        let d = hp.n_embd as u64;
        let hd = hp.attn_head_dim() as u64;
        let q = hp.n_head_attn as u64 * hd;
        let kvd = hp.n_head_kv[i] as u64 * hd;
        let b = |x: &str| format!("blk.{i}.{x}");
        let norm = |l: &mut Loader, name: &str| -> Result<Option<Vec<f32>>> {
            if opts.qk_norm {
                Ok(Some(l.f32(&b(name), &[&[hd]])?))
            } else {
                Ok(None)
            }
        };
        Ok(Attention {
            al: hp.attention_index(i),
            n_head_kv: hp.n_head_kv[i],
            wq: l.mat(&b("attn_q.weight"), &[d, q])?,
            wk: l.mat(&b("attn_k.weight"), &[d, kvd])?,
            wv: l.mat(&b("attn_v.weight"), &[d, kvd])?,
            bq: l.f32_opt(&b("attn_q.bias"), &[&[q]])?,
            bk: l.f32_opt(&b("attn_k.bias"), &[&[kvd]])?,
            bv: l.f32_opt(&b("attn_v.bias"), &[&[kvd]])?,
            q_norm: norm(l, "attn_q_norm.weight")?,
            k_norm: norm(l, "attn_k_norm.weight")?,
            wo: l.mat(&b("attn_output.weight"), &[q, d])?,
            bo: if opts.no_out_bias { None } else { l.f32_opt(&b("attn_output.bias"), &[&[d]])? },
            inv_freq: if hp.rope == Rope::None { Vec::new() } else { inv_freqs(hp.n_rot, hp.rope_freq_base) },
        })
    }

    /// `sc.u` in, `sc.out` (or `sc.out2`) out. The segments' K/V cells must be reserved.
    pub fn forward(&self, p: &mut Pass, dst: Out) -> Result<()> {
        let (w, hp, pool, isa, segs, n_t) = (p.w, p.hp, p.pool, p.isa, p.segs, p.n_t);
        let d = hp.n_embd;
        let (nh, hd, nkv) = (hp.n_head_attn, hp.attn_head_dim(), self.n_head_kv);
        let (qd, kvd) = (nh * hd, nkv * hd);
        let al = self.al;
        let kv: &mut KvCache = p.kv.as_deref_mut().ok_or_else(no_kv)?;
        let sc = &mut *p.sc;
        let u = &sc.u[..n_t * d];
        matmul(&w.mat(&self.wq)?, u, n_t, &mut sc.q[..n_t * qd], pool)?;
        matmul(&w.mat(&self.wk)?, u, n_t, &mut sc.k[..n_t * kvd], pool)?;
        matmul(&w.mat(&self.wv)?, u, n_t, &mut sc.v[..n_t * kvd], pool)?;
        add_bias(&mut sc.q[..n_t * qd], self.bq.as_deref());
        add_bias(&mut sc.k[..n_t * kvd], self.bk.as_deref());
        add_bias(&mut sc.v[..n_t * kvd], self.bv.as_deref());
        if let Some(wn) = &self.q_norm {
            rms_norm_segments_weighted_inplace_with(isa, &mut sc.q[..n_t * qd], hd, 0, wn, n_t * nh, hp.eps);
        }
        if let Some(wn) = &self.k_norm {
            rms_norm_segments_weighted_inplace_with(isa, &mut sc.k[..n_t * kvd], hd, 0, wn, n_t * nkv, hp.eps);
        }
        if !self.inv_freq.is_empty() {
            let mut cs = vec![0f32; hp.n_rot];
            for s in segs {
                for i in 0..s.len {
                    let r = s.start + i;
                    angles(&self.inv_freq, s.pos + i, &mut cs);
                    rope_row(hp.rope, &mut sc.q[r * qd..(r + 1) * qd], hd, hp.n_rot, &cs);
                    rope_row(hp.rope, &mut sc.k[r * kvd..(r + 1) * kvd], hd, hp.n_rot, &cs);
                }
            }
        }
        for s in segs {
            for i in 0..s.len {
                let r = s.start + i;
                kv.write(s.slot as u32, al, s.pos + i, &sc.k[r * kvd..(r + 1) * kvd], &sc.v[r * kvd..(r + 1) * kvd]);
            }
        }
        p.tm.lap(10);

        // Tasks: (segment, KV head, chunk of query rows).
        let grp = nh / nkv;
        let scale = if hp.attn_scale != 0.0 { hp.attn_scale } else { 1.0 / (hd as f32).sqrt() };
        let work: usize = segs.iter().map(|s| s.len * (s.pos + s.len)).sum::<usize>() * qd;
        let parts = if work < MIN_PARALLEL_WORK { 1 } else { (8 * pool.n_threads()).div_ceil(nkv.max(1)) };
        let mut tasks: Vec<(usize, usize, usize, usize)> = Vec::new(); // (seg, head, row0, row1)
        for (si, s) in segs.iter().enumerate() {
            let rows = chunk(s.len, parts.min(s.len), 1);
            for g in 0..nkv {
                let mut r0 = 0;
                while r0 < s.len {
                    tasks.push((si, g, r0, (r0 + rows).min(s.len)));
                    r0 += rows;
                }
            }
        }
        let out = SendPtr(sc.att.as_mut_ptr());
        let q = &sc.q[..n_t * qd];
        let kv_ref: &KvCache = kv;
        let ty = kv_ref.ty();
        let run = |&(si, g, r0, r1): &(usize, usize, usize, usize)| {
            let out = out;
            let s = segs[si];
            let (k_off, v_off, stride) = kv_ref.offsets(al, g, hd);
            ATTN_SCRATCH.with(|cell| {
                let mut cell = cell.borrow_mut();
                let (ptrs, scores) = &mut *cell;
                ptrs.clear();
                match ty {
                    KvType::F32 => {
                        let mut bp: Vec<*const f32> = Vec::new();
                        kv_ref.block_ptrs(s.slot as u32, &mut bp);
                        ptrs.extend(bp.iter().map(|x| *x as usize));
                    }
                    KvType::F16 => {
                        let mut bp: Vec<*const u16> = Vec::new();
                        kv_ref.block_ptrs(s.slot as u32, &mut bp);
                        ptrs.extend(bp.iter().map(|x| *x as usize));
                    }
                }
                let max_keys = s.pos + r1;
                if scores.len() < grp * max_keys {
                    scores.resize(grp * max_keys, 0.0);
                }
                for i in r0..r1 {
                    let row = s.start + i;
                    let n_keys = s.pos + i + 1;
                    let qrow = &q[row * qd + g * grp * hd..row * qd + (g + 1) * grp * hd];
                    // SAFETY: rows of different tasks are disjoint (segment rows × KV head columns).
                    let o = unsafe { std::slice::from_raw_parts_mut(out.0.add(row * qd + g * grp * hd), grp * hd) };
                    macro_rules! attend {
                        ($elem:ty, $kernel:ident) => {{
                            let blocks = std::slice::from_raw_parts(ptrs.as_ptr() as *const *const $elem, ptrs.len());
                            let args = AttnArgs {
                                q: qrow,
                                n_q: grp,
                                hd,
                                n_keys,
                                blocks,
                                block_size: crate::context::kv::BLOCK_TOKENS,
                                k_off,
                                v_off,
                                cell_stride: stride,
                                scale,
                            };
                            $kernel(isa, &args, &mut scores[..grp * n_keys], o);
                        }};
                    }
                    // SAFETY: the block pointers address blocks holding at least `n_keys` reserved and
                    // written cells of this sequence; the offsets come from the cache's layout.
                    unsafe {
                        match ty {
                            KvType::F32 => attend!(f32, attend_f32_with),
                            KvType::F16 => attend!(u16, attend_f16_with),
                        }
                    }
                }
            });
        };
        if tasks.len() == 1 {
            run(&tasks[0]);
        } else {
            pool.run(tasks.len(), |t| run(&tasks[t]));
        }
        p.tm.lap(11);
        let o = match dst {
            Out::Out => &mut sc.out,
            Out::Out2 => &mut sc.out2,
        };
        matmul(&w.mat(&self.wo)?, &sc.att[..n_t * qd], n_t, &mut o[..n_t * d], pool)?;
        add_bias(&mut o[..n_t * d], self.bo.as_deref());
        p.tm.lap(7);
        Ok(())
    }
}
