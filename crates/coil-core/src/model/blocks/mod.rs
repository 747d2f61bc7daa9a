//! The shared blocks every architecture file composes: the Mamba-1 and Mamba-2 mixers, attention,
//! the FFNs (dense SwiGLU or ReLU², MoE), LFM2's short convolution — and what they share: the
//! micro-batch being computed ([`Pass`]), the recurrent states of every sequence slot
//! ([`States`]) and the activation buffers ([`Scratch`]).
//!
//! A micro-batch holds the tokens of one or more sequences, each sequence's tokens contiguous
//! ([`Segment`]). Projections run batched over all its tokens (one matmul per weight and layer);
//! convs and scans run per sequence, each on its own state slot, in place, split over channels or
//! heads and sequences across the thread pool; attention runs per sequence and KV head over the
//! sequence's paged KV cells. Every block reads `Scratch::u` (the normed input) and writes
//! `Scratch::out`.

pub(crate) mod attention;
pub(crate) mod ffn;
pub(crate) mod layer;
pub(crate) mod mamba1;
pub(crate) mod mamba2;
pub(crate) mod shortconv;

use super::compat::{SendPtr, ThreadPool};
use super::hparams::HParams;
use super::weights::Weights;
use crate::context::kv::KvCache;
use crate::error::Result;
use crate::kernels::conv::{ssm_conv_range_raw, ConvArgs};
use crate::kernels::norm::rms_norm_with;
use crate::kernels::ops::{add_inplace, Isa};

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
/// token). Each block documents which it uses.
#[derive(Default)]
pub(crate) struct Scratch {
    cap: usize,
    /// Residual stream `[T][D]`.
    pub h: Vec<f32>,
    /// Normed input `[T][D]`.
    pub u: Vec<f32>,
    /// in_proj output `[T][d_in_proj]`.
    pub proj: Vec<f32>,
    /// Conv output `[T][conv_dim]`.
    pub conv: Vec<f32>,
    /// Mamba-1: x_proj output `[T][R+2N]`, dt_r copy `[T][R]`, dt `[T][E]`.
    pub xdb: Vec<f32>,
    pub dtr: Vec<f32>,
    pub dt: Vec<f32>,
    /// Scan output `[T][E]` (the short conv's B·x).
    pub y: Vec<f32>,
    /// Mixer / FFN output `[T][D]`.
    pub out: Vec<f32>,
    /// A second mixer output `[T][D]` (Falcon-H1's parallel attention).
    pub out2: Vec<f32>,
    /// Attention: q `[T][H·hd]`, k and v `[T][kv_dim]`, output `[T][H·hd]`.
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub att: Vec<f32>,
    /// FFN: gate and up `[T][F]`, router `[T][X]`; MoE gathered rows `[T][D]` and their output.
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub router: Vec<f32>,
    pub xe: Vec<f32>,
    pub ye: Vec<f32>,
    /// Logit rows: input `[R][D]`, normed `[R][D]`, output `[R][V]`.
    pub lm_in: Vec<f32>,
    pub lm_norm: Vec<f32>,
    pub lm_out: Vec<f32>,
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
            grow(&mut self.out, n_t * d)?;
            if hp.n_recurrent_layers() > 0 {
                grow(&mut self.proj, n_t * hp.d_in_proj())?;
                grow(&mut self.conv, n_t * hp.conv_dim())?;
                grow(&mut self.y, n_t * e)?;
            }
            if hp.dt_rank > 0 {
                grow(&mut self.xdb, n_t * (hp.dt_rank + 2 * hp.d_state))?;
                grow(&mut self.dtr, n_t * hp.dt_rank)?;
                grow(&mut self.dt, n_t * e)?;
            }
            if hp.n_attention_layers() > 0 {
                let qd = hp.n_head_attn * hp.attn_head_dim();
                let kvd = hp.kv_dims().into_iter().max().unwrap_or(0);
                grow(&mut self.q, n_t * qd)?;
                grow(&mut self.k, n_t * kvd)?;
                grow(&mut self.v, n_t * kvd)?;
                grow(&mut self.att, n_t * qd)?;
                if hp.n_recurrent_layers() > 0 {
                    grow(&mut self.out2, n_t * d)?;
                }
            }
            let f = hp.max_ff().max(hp.n_ff_exp).max(hp.n_ff_shexp);
            if f > 0 {
                grow(&mut self.gate, n_t * f)?;
                grow(&mut self.up, n_t * f)?;
            }
            if hp.n_expert > 0 {
                grow(&mut self.router, n_t * hp.n_expert)?;
                grow(&mut self.xe, n_t * d)?;
                grow(&mut self.ye, n_t * d)?;
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
    pub const OPS: [&str; 15] = [
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
        "short_conv",
    ];
    static NS: [AtomicU64; 15] = [const { AtomicU64::new(0) }; 15];
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
pub(crate) struct Timer(Option<std::time::Instant>);
#[cfg(not(target_arch = "wasm32"))]
impl Timer {
    #[inline]
    pub(crate) fn start() -> Timer {
        Timer(if profile::enabled() { Some(std::time::Instant::now()) } else { None })
    }
    #[inline]
    pub(crate) fn lap(&mut self, op: usize) {
        if let Some(t) = self.0 {
            let now = std::time::Instant::now();
            profile::add(op, (now - t).as_nanos() as u64);
            self.0 = Some(now);
        }
    }
}
#[cfg(target_arch = "wasm32")]
pub(crate) struct Timer;
#[cfg(target_arch = "wasm32")]
impl Timer {
    #[inline]
    pub(crate) fn start() -> Timer {
        Timer
    }
    #[inline]
    pub(crate) fn lap(&mut self, _op: usize) {}
}

/// Below this many element-steps a kernel runs as one task per sequence (thread hand-off would
/// cost more than it saves).
pub(crate) const MIN_PARALLEL_WORK: usize = 16 * 1024;

/// Chunk size splitting `n` items into about `parts` chunks, a multiple of `align`.
pub(crate) fn chunk(n: usize, parts: usize, align: usize) -> usize {
    let c = n.div_ceil(parts.max(1));
    c.div_ceil(align).max(1) * align
}

/// One micro-batch on its way through the layers: what every block reads and writes.
pub(crate) struct Pass<'a> {
    pub w: &'a Weights,
    pub hp: &'a HParams,
    pub pool: &'a ThreadPool,
    pub isa: Isa,
    pub segs: &'a [Segment],
    pub n_t: usize,
    pub states: &'a mut States,
    pub kv: Option<&'a mut KvCache>,
    pub sc: &'a mut Scratch,
    pub tm: Timer,
}

impl Pass<'_> {
    /// `u = rms_norm(h) · w`.
    pub fn norm(&mut self, w: &[f32]) {
        let nd = self.n_t * self.hp.n_embd;
        rms_norm_with(self.isa, &self.sc.h[..nd], w, self.hp.eps, &mut self.sc.u[..nd]);
        self.tm.lap(1);
    }

    /// `h += out`, or `h += scale · out` when `scale` is not 0 (Granite's residual scale).
    pub fn residual(&mut self, scale: f32) {
        let nd = self.n_t * self.hp.n_embd;
        if scale != 0.0 {
            for v in &mut self.sc.out[..nd] {
                *v *= scale;
            }
        }
        add_inplace(&mut self.sc.h[..nd], &self.sc.out[..nd]);
        self.tm.lap(8);
    }
}

/// Causal depthwise conv (+ bias, SiLU when `silu`) of `src`'s columns `col0..col0+n_c` (rows of
/// `stride` floats) over each sequence's rows, with its state slot of recurrent layer `rl`;
/// output `[T][n_c]` in `sc.conv`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_segments(
    p: &mut Pass,
    src: ConvSrc,
    rl: usize,
    conv_w: &[f32],
    conv_b: Option<&[f32]>,
    col0: usize,
    n_c: usize,
    silu: bool,
) {
    let (hp, n_t, segs, isa, pool) = (p.hp, p.n_t, p.segs, p.isa, p.pool);
    let sc = &mut *p.sc;
    let (x, stride): (&[f32], usize) = match src {
        ConvSrc::Proj => (&sc.proj, hp.d_in_proj()),
        ConvSrc::Y => (&sc.y, hp.d_inner),
    };
    let per_seq = if n_t * n_c < MIN_PARALLEL_WORK { 1 } else { pool.n_threads() };
    let ch = chunk(n_c, per_seq, 16);
    let n_ch = n_c.div_ceil(ch);
    let conv_out = SendPtr(sc.conv.as_mut_ptr());
    let states = &mut *p.states;
    let st_base = SendPtr(states.conv.as_mut_ptr());
    let x = &x[..n_t * stride];
    let conv_len = states.conv_len;
    let n_slot = states.n_slot;
    pool.run(segs.len() * n_ch, |task| {
        let (conv_out, st_base) = (conv_out, st_base);
        let s = segs[task / n_ch];
        let c0 = (task % n_ch) * ch;
        let c1 = (c0 + ch).min(n_c);
        let a = ConvArgs {
            x: &x[s.start * stride + col0..],
            x_stride: stride,
            n_t: s.len,
            n_c,
            k: hp.d_conv,
            w: conv_w,
            bias: conv_b,
            silu,
            out_stride: n_c,
        };
        // SAFETY: the state slot and the output rows of segment s are disjoint from every other
        // segment's; channel chunks [c0, c1) are disjoint between the tasks of one segment; the
        // sizes follow from `Scratch::ensure` and `States::new`.
        unsafe {
            let st = st_base.0.add((rl * n_slot + s.slot) * conv_len);
            ssm_conv_range_raw(isa, &a, c0, c1, st, conv_out.0.add(s.start * n_c));
        }
    });
}

/// Which buffer a conv reads.
#[derive(Clone, Copy)]
pub(crate) enum ConvSrc {
    /// `Scratch::proj` (rows of `d_in_proj`).
    Proj,
    /// `Scratch::y` (rows of `d_inner`).
    Y,
}

/// `x[t] += b` for every row of `x` (nothing without a bias).
pub(crate) fn add_bias(x: &mut [f32], b: Option<&[f32]>) {
    if let Some(b) = b {
        for row in x.chunks_exact_mut(b.len()) {
            add_inplace(row, b);
        }
    }
}
