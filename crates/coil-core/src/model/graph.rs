//! The forward pass of `mamba`, `mamba2` and `jamba` over one micro-batch: the tokens of one or
//! more sequences, each sequence's tokens contiguous. Projections run batched over all tokens of
//! the micro-batch (one matmul per weight and layer); the conv and the scan run per sequence, each
//! on its own recurrent-state slot, in place, split over channels (Mamba-1) or heads (Mamba-2) and
//! sequences across the thread pool; attention runs per sequence and KV head over the sequence's
//! paged KV cells.
//!
//! Per layer (llama.cpp `build_mamba_layer` / `build_mamba2_layer` / the Jamba graph,
//! transformers' mixers):
//! ```text
//! u = rms_norm(h) · attn_norm
//! Mamba-1:  [x | z] = W_in u;  x = silu(conv(x) + b);  [dt_r | B | C] = W_x x
//!           (Falcon: weightless rms_norm of dt_r, B, C; Jamba: weighted);  dt = W_dt dt_r
//!           y = scan(x, dt + b_dt, A, B, C, D) · silu(z)
//! Mamba-2:  [z | xBC | dt] = W_in u;  xBC = silu(conv(xBC) + b);  [x | B | C] = xBC
//!           y = group_rms_norm(scan(x, dt + b_dt, A, B, C, D) · silu(z)) · w
//! Jamba attention (no RoPE, GQA): q, k, v = W_q u, W_k u, W_v u; k, v appended to the cache;
//!           y = softmax(q·Kᵀ/√hd over the sequence's positions ≤ the token's) · V
//! h += W_out y
//! Jamba only, then:  v = rms_norm(h) · ffn_norm
//!           dense:  h += W_down (silu(W_gate v) ⊙ W_up v)
//!           MoE:    p = softmax(W_router v); for the top-k experts e (p not renormalised):
//!                   h += Σ p_e · W_down,e (silu(W_gate,e v) ⊙ W_up,e v)
//! ```
//! then `logits = W_output (rms_norm(h) · output_norm)` for the rows that asked for logits.

use std::cell::RefCell;

use super::compat::{get_rows, matmul, SendPtr, ThreadPool};
use super::hparams::HParams;
use super::weights::{ArchWeights, AttnLayer, Ffn, JambaMixer, MambaLayer, Weights};
use crate::context::kv::{KvCache, KvType};
use crate::error::Result;
use crate::kernels::attn::{attend_f16_with, attend_f32_with, AttnArgs};
use crate::kernels::conv::{ssm_conv_range_raw, ConvArgs};
use crate::kernels::norm::{
    group_rms_norm_inplace_with, rms_norm_segments_inplace_with, rms_norm_segments_weighted_inplace_with, rms_norm_with,
};
use crate::kernels::ops::{add_inplace, mul_silu_with, Isa};
use crate::kernels::ssm::{ssm_scan1_range_raw, ssm_scan2_range_raw, Scan1Args, Scan2Args};

/// A sequence's tokens in a micro-batch: rows `[start, start + len)`, state slot `slot` (= the
/// sequence id), the first token at position `pos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub slot: usize,
    pub start: usize,
    pub len: usize,
    pub pos: usize,
}

/// The recurrent states of every slot: per recurrent layer, `n_slot` conv states of `conv_len`
/// floats and `n_slot` SSM states of `ssm_len` floats (layouts: see `kernels::conv` and
/// `kernels::ssm`). Attention layers have none (they are skipped in the layer numbering).
pub(crate) struct States {
    pub n_slot: usize,
    /// Recurrent layers.
    pub n_layer: usize,
    pub conv_len: usize,
    pub ssm_len: usize,
    pub conv: Vec<f32>,
    pub ssm: Vec<f32>,
}

impl States {
    pub fn new(hp: &HParams, n_slot: usize) -> Result<States> {
        let conv_len = hp.conv_state_len();
        let ssm_len = hp.ssm_state_len();
        let n_layer = hp.n_recurrent_layers();
        let alloc = |n: usize| -> Result<Vec<f32>> {
            let mut v = Vec::new();
            v.try_reserve_exact(n).map_err(|_| {
                crate::error::CoilError::new(
                    crate::error::ErrorCode::InvalidArgument,
                    format!("cannot allocate {} MiB of recurrent state", (n as u64 * 4) >> 20),
                )
            })?;
            v.resize(n, 0.0);
            Ok(v)
        };
        let conv = alloc(n_layer * n_slot * conv_len)?;
        let ssm = alloc(n_layer * n_slot * ssm_len)?;
        Ok(States { n_slot, n_layer, conv_len, ssm_len, conv, ssm })
    }

    fn conv_off(&self, layer: usize, slot: usize) -> usize {
        (layer * self.n_slot + slot) * self.conv_len
    }
    fn ssm_off(&self, layer: usize, slot: usize) -> usize {
        (layer * self.n_slot + slot) * self.ssm_len
    }

    /// Floats of one slot, all layers.
    pub fn slot_len(&self) -> usize {
        self.n_layer * (self.conv_len + self.ssm_len)
    }

    /// Zeroes a slot in every layer.
    pub fn clear(&mut self, slot: usize) {
        for l in 0..self.n_layer {
            let c = self.conv_off(l, slot);
            self.conv[c..c + self.conv_len].fill(0.0);
            let s = self.ssm_off(l, slot);
            self.ssm[s..s + self.ssm_len].fill(0.0);
        }
    }

    /// A slot's state, all layers: conv states then SSM states (each in layer order).
    pub fn copy_slot(&self, slot: usize, out: &mut Vec<f32>) {
        out.clear();
        for l in 0..self.n_layer {
            let c = self.conv_off(l, slot);
            out.extend_from_slice(&self.conv[c..c + self.conv_len]);
        }
        for l in 0..self.n_layer {
            let s = self.ssm_off(l, slot);
            out.extend_from_slice(&self.ssm[s..s + self.ssm_len]);
        }
    }

    /// Sets a slot from [`States::copy_slot`]'s layout (`v.len() == slot_len()`, checked by the
    /// caller).
    pub fn set_slot(&mut self, slot: usize, v: &[f32]) {
        let mut at = 0;
        for l in 0..self.n_layer {
            let c = self.conv_off(l, slot);
            self.conv[c..c + self.conv_len].copy_from_slice(&v[at..at + self.conv_len]);
            at += self.conv_len;
        }
        for l in 0..self.n_layer {
            let s = self.ssm_off(l, slot);
            self.ssm[s..s + self.ssm_len].copy_from_slice(&v[at..at + self.ssm_len]);
            at += self.ssm_len;
        }
    }

    /// Copies slot `src` into slot `dst`.
    pub fn copy_between(&mut self, src: usize, dst: usize) {
        if src == dst {
            return;
        }
        for l in 0..self.n_layer {
            let (a, b) = (self.conv_off(l, src), self.conv_off(l, dst));
            self.conv.copy_within(a..a + self.conv_len, b);
            let (a, b) = (self.ssm_off(l, src), self.ssm_off(l, dst));
            self.ssm.copy_within(a..a + self.ssm_len, b);
        }
    }
}

/// Activation buffers, grown to the largest micro-batch seen and then reused (no allocation per
/// token).
#[derive(Default)]
pub(crate) struct Scratch {
    cap: usize,
    /// Residual stream `[T][D]`.
    h: Vec<f32>,
    /// Normed input `[T][D]`.
    u: Vec<f32>,
    /// in_proj output `[T][d_in_proj]`.
    proj: Vec<f32>,
    /// Conv output `[T][conv_dim]`.
    conv: Vec<f32>,
    /// Mamba-1: x_proj output `[T][R+2N]`, dt_r copy `[T][R]`, dt `[T][E]`.
    xdb: Vec<f32>,
    dtr: Vec<f32>,
    dt: Vec<f32>,
    /// Scan output `[T][E]`.
    y: Vec<f32>,
    /// Mixer / FFN output `[T][D]`.
    out: Vec<f32>,
    /// Attention: q `[T][H·hd]`, k and v `[T][kv_dim]`, output `[T][H·hd]`.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    /// FFN: gate and up `[T][F]`, router `[T][X]`; MoE gathered rows `[T][D]` and their output.
    gate: Vec<f32>,
    up: Vec<f32>,
    router: Vec<f32>,
    xe: Vec<f32>,
    ye: Vec<f32>,
    /// Logit rows: input `[R][D]`, normed `[R][D]`, output `[R][V]`.
    lm_in: Vec<f32>,
    lm_norm: Vec<f32>,
    lm_out: Vec<f32>,
}

fn grow(v: &mut Vec<f32>, n: usize) -> Result<()> {
    if v.len() < n {
        v.try_reserve_exact(n - v.len()).map_err(|_| {
            crate::error::CoilError::new(
                crate::error::ErrorCode::InvalidArgument,
                format!("cannot allocate {} MiB of activations: use a smaller n_ubatch", (n as u64 * 4) >> 20),
            )
        })?;
        v.resize(n, 0.0);
    }
    Ok(())
}

impl Scratch {
    /// Grows the buffers for micro-batches of up to `n_t` tokens with `n_out` logit rows.
    pub(crate) fn ensure(&mut self, hp: &HParams, n_t: usize, n_out: usize) -> Result<()> {
        if n_t > self.cap {
            let (d, e) = (hp.n_embd, hp.d_inner);
            grow(&mut self.h, n_t * d)?;
            grow(&mut self.u, n_t * d)?;
            grow(&mut self.proj, n_t * hp.d_in_proj())?;
            grow(&mut self.conv, n_t * hp.conv_dim())?;
            if hp.dt_rank > 0 {
                grow(&mut self.xdb, n_t * (hp.dt_rank + 2 * hp.d_state))?;
                grow(&mut self.dtr, n_t * hp.dt_rank)?;
                grow(&mut self.dt, n_t * e)?;
            }
            grow(&mut self.y, n_t * e)?;
            grow(&mut self.out, n_t * d)?;
            if hp.n_attention_layers() > 0 {
                let qd = hp.n_head_attn * hp.attn_head_dim();
                let kvd = hp.kv_dims().into_iter().max().unwrap_or(0);
                grow(&mut self.q, n_t * qd)?;
                grow(&mut self.k, n_t * kvd)?;
                grow(&mut self.v, n_t * kvd)?;
                grow(&mut self.att, n_t * qd)?;
            }
            if hp.n_ff > 0 {
                grow(&mut self.gate, n_t * hp.n_ff)?;
                grow(&mut self.up, n_t * hp.n_ff)?;
                if hp.n_expert > 0 {
                    grow(&mut self.router, n_t * hp.n_expert)?;
                    grow(&mut self.xe, n_t * d)?;
                    grow(&mut self.ye, n_t * d)?;
                }
            }
            self.cap = n_t;
        }
        grow(&mut self.lm_in, n_out * hp.n_embd)?;
        grow(&mut self.lm_norm, n_out * hp.n_embd)?;
        grow(&mut self.lm_out, n_out * hp.n_vocab)?;
        Ok(())
    }
}

/// Optional per-op wall-clock accounting (`COIL_PROFILE=1` in the environment, native only): for
/// finding where the time goes. Off, it costs one relaxed load per op.
pub mod profile {
    use std::sync::atomic::{AtomicU64, Ordering};
    pub const OPS: [&str; 14] = [
        "embd",
        "norm",
        "in_proj",
        "conv",
        "x_proj+dt",
        "scan",
        "group_norm",
        "out_proj",
        "residual",
        "logits",
        "attn_proj",
        "attention",
        "ffn_dense",
        "ffn_moe",
    ];
    static NS: [AtomicU64; 14] = [const { AtomicU64::new(0) }; 14];
    static ON: AtomicU64 = AtomicU64::new(2);
    #[inline]
    pub fn enabled() -> bool {
        match ON.load(Ordering::Relaxed) {
            0 => false,
            1 => true,
            _ => {
                #[cfg(not(target_arch = "wasm32"))]
                let on = std::env::var("COIL_PROFILE").is_ok_and(|v| v != "0");
                #[cfg(target_arch = "wasm32")]
                let on = false;
                ON.store(on as u64, Ordering::Relaxed);
                on
            }
        }
    }
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub(crate) fn add(op: usize, ns: u64) {
        NS[op].fetch_add(ns, Ordering::Relaxed);
    }
    /// (op, seconds) accumulated so far; `reset` zeroes the counters.
    pub fn take(reset: bool) -> Vec<(&'static str, f64)> {
        OPS.iter()
            .zip(NS.iter())
            .map(|(n, v)| {
                (*n, (if reset { v.swap(0, Ordering::Relaxed) } else { v.load(Ordering::Relaxed) }) as f64 * 1e-9)
            })
            .collect()
    }
}

#[cfg(not(target_arch = "wasm32"))]
struct Timer(Option<std::time::Instant>);
#[cfg(not(target_arch = "wasm32"))]
impl Timer {
    #[inline]
    fn start() -> Timer {
        Timer(if profile::enabled() { Some(std::time::Instant::now()) } else { None })
    }
    #[inline]
    fn lap(&mut self, op: usize) {
        if let Some(t) = self.0 {
            let now = std::time::Instant::now();
            profile::add(op, (now - t).as_nanos() as u64);
            self.0 = Some(now);
        }
    }
}
#[cfg(target_arch = "wasm32")]
struct Timer;
#[cfg(target_arch = "wasm32")]
impl Timer {
    #[inline]
    fn start() -> Timer {
        Timer
    }
    #[inline]
    fn lap(&mut self, _op: usize) {}
}

/// Below this many element-steps a kernel runs as one task per sequence (thread hand-off would
/// cost more than it saves).
const MIN_PARALLEL_WORK: usize = 16 * 1024;

/// Chunk size splitting `n` items into about `parts` chunks, a multiple of `align`.
fn chunk(n: usize, parts: usize, align: usize) -> usize {
    let c = n.div_ceil(parts.max(1));
    c.div_ceil(align).max(1) * align
}

/// What every layer function needs about the micro-batch.
struct Env<'a> {
    w: &'a Weights,
    hp: &'a HParams,
    pool: &'a ThreadPool,
    isa: Isa,
    segs: &'a [Segment],
    n_t: usize,
}

/// Causal depthwise conv (+ bias, SiLU) of `proj`'s columns `col0..col0+conv_dim` over each
/// sequence's rows, with its state slot of recurrent layer `rl`; output in `sc.conv`.
fn conv_segments(
    env: &Env,
    states: &mut States,
    sc: &mut Scratch,
    rl: usize,
    conv_w: &[f32],
    conv_b: Option<&[f32]>,
    col0: usize,
) {
    let (hp, n_t, segs, isa) = (env.hp, env.n_t, env.segs, env.isa);
    let dip = hp.d_in_proj();
    let cd = hp.conv_dim();
    let per_seq = if n_t * cd < MIN_PARALLEL_WORK { 1 } else { env.pool.n_threads() };
    let ch = chunk(cd, per_seq, 16);
    let n_ch = cd.div_ceil(ch);
    let conv_out = SendPtr(sc.conv.as_mut_ptr());
    let st_base = SendPtr(states.conv.as_mut_ptr());
    let proj = &sc.proj[..n_t * dip];
    let conv_len = states.conv_len;
    let n_slot = states.n_slot;
    env.pool.run(segs.len() * n_ch, |task| {
        let (conv_out, st_base) = (conv_out, st_base);
        let s = segs[task / n_ch];
        let c0 = (task % n_ch) * ch;
        let c1 = (c0 + ch).min(cd);
        let a = ConvArgs {
            x: &proj[s.start * dip + col0..],
            x_stride: dip,
            n_t: s.len,
            n_c: cd,
            k: hp.d_conv,
            w: conv_w,
            bias: conv_b,
            silu: true,
            out_stride: cd,
        };
        // SAFETY: the state slot and the output rows of segment s are disjoint from every other
        // segment's; channel chunks [c0, c1) are disjoint between the tasks of one segment; the
        // sizes follow from `Scratch::ensure` and `States::new`.
        unsafe {
            let st = st_base.0.add((rl * n_slot + s.slot) * conv_len);
            ssm_conv_range_raw(isa, &a, c0, c1, st, conv_out.0.add(s.start * cd));
        }
    });
}

/// The Mamba-1 mixer (Falcon's weightless and Jamba's weighted dt/B/C norms included) of
/// recurrent layer `rl`: `sc.u` in, `sc.out` out.
fn mamba1_mixer(
    env: &Env,
    l: &MambaLayer,
    states: &mut States,
    sc: &mut Scratch,
    rl: usize,
    tm: &mut Timer,
) -> Result<()> {
    let (w, hp, pool, isa, segs, n_t) = (env.w, env.hp, env.pool, env.isa, env.segs, env.n_t);
    let (d, e, r, n) = (hp.n_embd, hp.d_inner, hp.dt_rank, hp.d_state);
    let dip = hp.d_in_proj();
    matmul(&w.mat(&l.ssm_in)?, &sc.u[..n_t * d], n_t, &mut sc.proj[..n_t * dip], pool)?;
    tm.lap(2);
    conv_segments(env, states, sc, rl, &l.conv_w, l.conv_b.as_deref(), 0);
    tm.lap(3);
    let xw = r + 2 * n;
    matmul(&w.mat(&l.ssm_x)?, &sc.conv[..n_t * e], n_t, &mut sc.xdb[..n_t * xw], pool)?;
    {
        let xdb = &mut sc.xdb[..n_t * xw];
        if hp.dt_b_c_rms {
            rms_norm_segments_inplace_with(isa, xdb, xw, 0, r, n_t, hp.dt_b_c_eps);
            rms_norm_segments_inplace_with(isa, xdb, xw, r, n, n_t, hp.dt_b_c_eps);
            rms_norm_segments_inplace_with(isa, xdb, xw, r + n, n, n_t, hp.dt_b_c_eps);
        }
        if let Some(wn) = &l.dt_norm {
            rms_norm_segments_weighted_inplace_with(isa, xdb, xw, 0, wn, n_t, hp.eps);
        }
        if let Some(wn) = &l.b_norm {
            rms_norm_segments_weighted_inplace_with(isa, xdb, xw, r, wn, n_t, hp.eps);
        }
        if let Some(wn) = &l.c_norm {
            rms_norm_segments_weighted_inplace_with(isa, xdb, xw, r + n, wn, n_t, hp.eps);
        }
    }
    for t in 0..n_t {
        sc.dtr[t * r..(t + 1) * r].copy_from_slice(&sc.xdb[t * xw..t * xw + r]);
    }
    matmul(&w.mat(&l.ssm_dt)?, &sc.dtr[..n_t * r], n_t, &mut sc.dt[..n_t * e], pool)?;
    tm.lap(4);

    let per_seq = if n_t * e * n < MIN_PARALLEL_WORK { 1 } else { pool.n_threads() };
    let ch = chunk(e, per_seq, 16);
    let n_ch = e.div_ceil(ch);
    let y = SendPtr(sc.y.as_mut_ptr());
    let st_base = SendPtr(states.ssm.as_mut_ptr());
    let (ssm_len, n_slot) = (states.ssm_len, states.n_slot);
    let (conv, dt, xdb, proj) = (&sc.conv[..n_t * e], &sc.dt[..n_t * e], &sc.xdb[..n_t * xw], &sc.proj[..n_t * dip]);
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
            dt_bias: l.dt_bias.as_deref(),
            b: &xdb[s.start * xw + r..],
            c: &xdb[s.start * xw + r + n..],
            bc_stride: xw,
            a: &l.a,
            d: Some(&l.d),
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
    tm.lap(5);
    matmul(&w.mat(&l.ssm_out)?, &sc.y[..n_t * e], n_t, &mut sc.out[..n_t * d], pool)?;
    tm.lap(7);
    Ok(())
}

fn add_bias(x: &mut [f32], b: Option<&[f32]>) {
    if let Some(b) = b {
        for row in x.chunks_exact_mut(b.len()) {
            add_inplace(row, b);
        }
    }
}

thread_local! {
    /// Per-thread attention scratch: block pointers and scores.
    static ATTN_SCRATCH: RefCell<(Vec<usize>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Attention mixer of attention layer `al` (cache layer index): `sc.u` in, `sc.out` out. The
/// segments' K/V cells must be reserved in `kv`.
fn attention(env: &Env, a: &AttnLayer, kv: &mut KvCache, sc: &mut Scratch, al: usize, tm: &mut Timer) -> Result<()> {
    let (w, hp, pool, isa, segs, n_t) = (env.w, env.hp, env.pool, env.isa, env.segs, env.n_t);
    let d = hp.n_embd;
    let (nh, hd, nkv) = (hp.n_head_attn, hp.attn_head_dim(), a.n_head_kv);
    let (qd, kvd) = (nh * hd, nkv * hd);
    let u = &sc.u[..n_t * d];
    matmul(&w.mat(&a.wq)?, u, n_t, &mut sc.q[..n_t * qd], pool)?;
    matmul(&w.mat(&a.wk)?, u, n_t, &mut sc.k[..n_t * kvd], pool)?;
    matmul(&w.mat(&a.wv)?, u, n_t, &mut sc.v[..n_t * kvd], pool)?;
    add_bias(&mut sc.q[..n_t * qd], a.bq.as_deref());
    add_bias(&mut sc.k[..n_t * kvd], a.bk.as_deref());
    add_bias(&mut sc.v[..n_t * kvd], a.bv.as_deref());
    for s in segs {
        for i in 0..s.len {
            let r = s.start + i;
            kv.write(s.slot as u32, al, s.pos + i, &sc.k[r * kvd..(r + 1) * kvd], &sc.v[r * kvd..(r + 1) * kvd]);
        }
    }
    tm.lap(10);

    // Tasks: (segment, KV head, chunk of query rows).
    let grp = nh / nkv;
    let scale = 1.0 / (hd as f32).sqrt();
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
                    let mut p: Vec<*const f32> = Vec::new();
                    kv_ref.block_ptrs(s.slot as u32, &mut p);
                    ptrs.extend(p.iter().map(|x| *x as usize));
                }
                KvType::F16 => {
                    let mut p: Vec<*const u16> = Vec::new();
                    kv_ref.block_ptrs(s.slot as u32, &mut p);
                    ptrs.extend(p.iter().map(|x| *x as usize));
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
    tm.lap(11);
    matmul(&w.mat(&a.wo)?, &sc.att[..n_t * qd], n_t, &mut sc.out[..n_t * d], pool)?;
    add_bias(&mut sc.out[..n_t * d], a.bo.as_deref());
    tm.lap(7);
    Ok(())
}

/// Jamba's FFN on `sc.u` (normed), result in `sc.out`.
fn ffn(env: &Env, f: &Ffn, sc: &mut Scratch, tm: &mut Timer) -> Result<()> {
    let (w, hp, pool, isa, n_t) = (env.w, env.hp, env.pool, env.isa, env.n_t);
    let (d, nf) = (hp.n_embd, hp.n_ff);
    match f {
        Ffn::Dense { gate, up, down } => {
            let u = &sc.u[..n_t * d];
            matmul(&w.mat(gate)?, u, n_t, &mut sc.gate[..n_t * nf], pool)?;
            matmul(&w.mat(up)?, u, n_t, &mut sc.up[..n_t * nf], pool)?;
            mul_silu_with(isa, &mut sc.up[..n_t * nf], &sc.gate[..n_t * nf]);
            matmul(&w.mat(down)?, &sc.up[..n_t * nf], n_t, &mut sc.out[..n_t * d], pool)?;
            tm.lap(12);
        }
        Ffn::Moe { router, gate, up, down } => {
            let (nx, k) = (hp.n_expert, hp.n_expert_used);
            matmul(&w.mat(router)?, &sc.u[..n_t * d], n_t, &mut sc.router[..n_t * nx], pool)?;
            // Softmax over all experts, then the top k (ties: the lower index), weights kept
            // as they are (no renormalisation).
            let mut chosen: Vec<Vec<(usize, f32)>> = vec![Vec::new(); nx];
            let mut order: Vec<usize> = Vec::with_capacity(nx);
            for t in 0..n_t {
                let p = &mut sc.router[t * nx..(t + 1) * nx];
                let m = p.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let mut sum = 0f32;
                for v in p.iter_mut() {
                    *v = crate::kernels::ops::exp_ref(*v - m);
                    sum += *v;
                }
                for v in p.iter_mut() {
                    *v /= sum;
                }
                order.clear();
                order.extend(0..nx);
                order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
                for &x in &order[..k] {
                    chosen[x].push((t, p[x]));
                }
            }
            sc.out[..n_t * d].fill(0.0);
            let (gm, um, dm) = (w.mat(gate)?, w.mat(up)?, w.mat(down)?);
            // Per token, experts are added in expert order, whatever the batch: a token's result
            // does not depend on the other tokens.
            for (x, rows) in chosen.iter().enumerate() {
                let m = rows.len();
                if m == 0 {
                    continue;
                }
                for (i, &(t, _)) in rows.iter().enumerate() {
                    sc.xe[i * d..(i + 1) * d].copy_from_slice(&sc.u[t * d..(t + 1) * d]);
                }
                matmul(&gm.rows(x * nf, nf)?, &sc.xe[..m * d], m, &mut sc.gate[..m * nf], pool)?;
                matmul(&um.rows(x * nf, nf)?, &sc.xe[..m * d], m, &mut sc.up[..m * nf], pool)?;
                mul_silu_with(isa, &mut sc.up[..m * nf], &sc.gate[..m * nf]);
                matmul(&dm.rows(x * d, d)?, &sc.up[..m * nf], m, &mut sc.ye[..m * d], pool)?;
                for (i, &(t, p)) in rows.iter().enumerate() {
                    let o = &mut sc.out[t * d..(t + 1) * d];
                    for (a, b) in o.iter_mut().zip(&sc.ye[i * d..(i + 1) * d]) {
                        *a += p * *b;
                    }
                }
            }
            tm.lap(13);
        }
    }
    Ok(())
}

/// One micro-batch through the model. `tokens[i]` is row i; `segs` cover the rows, each a run of
/// one sequence; `outputs` lists `(row, logits_row)` for the rows whose logits are wanted, written
/// to `logits[logits_row * n_vocab..]`. Attention models need `kv` with every segment's cells
/// reserved.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    w: &Weights,
    pool: &ThreadPool,
    states: &mut States,
    mut kv: Option<&mut KvCache>,
    scratch: &mut Scratch,
    tokens: &[u32],
    segs: &[Segment],
    outputs: &[(usize, usize)],
    logits: &mut [f32],
) -> Result<()> {
    let hp = &w.hp;
    let isa = Isa::best();
    let n_t = tokens.len();
    if n_t == 0 {
        return Ok(());
    }
    scratch.ensure(hp, n_t, outputs.len())?;
    let d = hp.n_embd;
    let e = hp.d_inner;
    let sc = scratch;
    let env = Env { w, hp, pool, isa, segs, n_t };

    let mut tm = Timer::start();
    get_rows(&w.mat(&w.token_embd)?, tokens, &mut sc.h[..n_t * d])?;
    tm.lap(0);

    let mut rl = 0; // recurrent layer index
    let mut al = 0; // attention layer index
    for layer in 0..hp.n_layer {
        match &w.arch {
            ArchWeights::Mamba(m) => {
                let l = &m.layers[layer];
                rms_norm_with(isa, &sc.h[..n_t * d], &l.attn_norm, hp.eps, &mut sc.u[..n_t * d]);
                tm.lap(1);
                mamba1_mixer(&env, l, states, sc, rl, &mut tm)?;
                rl += 1;
            }
            ArchWeights::Jamba(j) => {
                let l = &j.layers[layer];
                rms_norm_with(isa, &sc.h[..n_t * d], &l.attn_norm, hp.eps, &mut sc.u[..n_t * d]);
                tm.lap(1);
                match &l.mixer {
                    JambaMixer::Mamba(ml) => {
                        mamba1_mixer(&env, ml, states, sc, rl, &mut tm)?;
                        rl += 1;
                    }
                    JambaMixer::Attention(a) => {
                        let kv = kv.as_deref_mut().ok_or_else(|| {
                            crate::error::CoilError::new(
                                crate::error::ErrorCode::Internal,
                                "attention layer without a KV cache",
                            )
                        })?;
                        attention(&env, a, kv, sc, al, &mut tm)?;
                        al += 1;
                    }
                }
            }
            ArchWeights::Mamba2(m) => {
                let l = &m.layers[layer];
                rms_norm_with(isa, &sc.h[..n_t * d], &l.attn_norm, hp.eps, &mut sc.u[..n_t * d]);
                tm.lap(1);
                let dip = hp.d_in_proj();
                matmul(&w.mat(&l.ssm_in)?, &sc.u[..n_t * d], n_t, &mut sc.proj[..n_t * dip], pool)?;
                tm.lap(2);
                conv_segments(&env, states, sc, rl, &l.conv_w, l.conv_b.as_deref(), e);
                tm.lap(3);
                let cd = hp.conv_dim();
                let (h, p, n, g) = (hp.n_head, hp.head_dim, hp.d_state, hp.n_group);
                let per_seq = if n_t * e * n < MIN_PARALLEL_WORK { 1 } else { pool.n_threads() };
                let ch = chunk(h, per_seq, 1);
                let n_ch = h.div_ceil(ch);
                let y = SendPtr(sc.y.as_mut_ptr());
                let st_base = SendPtr(states.ssm.as_mut_ptr());
                let (ssm_len, n_slot) = (states.ssm_len, states.n_slot);
                let (conv, proj) = (&sc.conv[..n_t * cd], &sc.proj[..n_t * dip]);
                let dt_col = 2 * e + 2 * g * n;
                pool.run(segs.len() * n_ch, |task| {
                    let (y, st_base) = (y, st_base);
                    let s = segs[task / n_ch];
                    let h0 = (task % n_ch) * ch;
                    let h1 = (h0 + ch).min(h);
                    let args = Scan2Args {
                        n_t: s.len,
                        n_h: h,
                        n_p: p,
                        n_s: n,
                        n_g: g,
                        x: &conv[s.start * cd..],
                        x_stride: cd,
                        dt: &proj[s.start * dip + dt_col..],
                        dt_stride: dip,
                        dt_bias: l.dt_bias.as_deref(),
                        a: &l.a,
                        b: &conv[s.start * cd + e..],
                        c: &conv[s.start * cd + e + g * n..],
                        bc_stride: cd,
                        d: Some(&l.d),
                        z: Some(&proj[s.start * dip..]),
                        z_stride: dip,
                        y_stride: e,
                    };
                    // SAFETY: disjoint slots/rows per segment, disjoint head ranges per task.
                    unsafe {
                        let st = st_base.0.add((rl * n_slot + s.slot) * ssm_len);
                        ssm_scan2_range_raw(isa, &args, h0, h1, st, y.0.add(s.start * e));
                    }
                });
                tm.lap(5);
                group_rms_norm_inplace_with(isa, &mut sc.y[..n_t * e], &l.norm, g, hp.eps);
                tm.lap(6);
                matmul(&w.mat(&l.ssm_out)?, &sc.y[..n_t * e], n_t, &mut sc.out[..n_t * d], pool)?;
                tm.lap(7);
                rl += 1;
            }
        }
        add_inplace(&mut sc.h[..n_t * d], &sc.out[..n_t * d]);
        tm.lap(8);
        if let ArchWeights::Jamba(j) = &w.arch {
            let l = &j.layers[layer];
            rms_norm_with(isa, &sc.h[..n_t * d], &l.ffn_norm, hp.eps, &mut sc.u[..n_t * d]);
            tm.lap(1);
            ffn(&env, &l.ffn, sc, &mut tm)?;
            add_inplace(&mut sc.h[..n_t * d], &sc.out[..n_t * d]);
            tm.lap(8);
        }
    }

    // Logits for the rows that asked.
    let n_out = outputs.len();
    if n_out > 0 {
        for (i, &(row, _)) in outputs.iter().enumerate() {
            sc.lm_in[i * d..(i + 1) * d].copy_from_slice(&sc.h[row * d..(row + 1) * d]);
        }
        rms_norm_with(isa, &sc.lm_in[..n_out * d], &w.output_norm, hp.eps, &mut sc.lm_norm[..n_out * d]);
        let v = hp.n_vocab;
        matmul(&w.mat(&w.output)?, &sc.lm_norm[..n_out * d], n_out, &mut sc.lm_out[..n_out * v], pool)?;
        for (i, &(_, lr)) in outputs.iter().enumerate() {
            logits[lr * v..(lr + 1) * v].copy_from_slice(&sc.lm_out[i * v..(i + 1) * v]);
        }
    }
    tm.lap(9);
    Ok(())
}
