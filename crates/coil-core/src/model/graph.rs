//! The forward pass of `mamba` and `mamba2` over one micro-batch: the tokens of one or more
//! sequences, each sequence's tokens contiguous. Projections run batched over all tokens of the
//! micro-batch (one matmul per weight and layer); the conv and the scan run per sequence, each on
//! its own recurrent-state slot, in place, split over channels (Mamba-1) or heads (Mamba-2) and
//! sequences across the thread pool.
//!
//! Per layer (llama.cpp `build_mamba_layer` / `build_mamba2_layer`, transformers' mixers):
//! ```text
//! u = rms_norm(h) · attn_norm
//! Mamba-1:  [x | z] = W_in u;  x = silu(conv(x) + b);  [dt_r | B | C] = W_x x
//!           (Falcon: weightless rms_norm of dt_r, B, C);  dt = W_dt dt_r
//!           y = scan(x, dt + b_dt, A, B, C, D) · silu(z)
//! Mamba-2:  [z | xBC | dt] = W_in u;  xBC = silu(conv(xBC) + b);  [x | B | C] = xBC
//!           y = group_rms_norm(scan(x, dt + b_dt, A, B, C, D) · silu(z)) · w
//! h += W_out y
//! ```
//! then `logits = W_output (rms_norm(h) · output_norm)` for the rows that asked for logits.

use super::compat::{get_rows, matmul, SendPtr, ThreadPool};
use super::hparams::HParams;
use super::weights::{ArchWeights, Weights};
use crate::error::Result;
use crate::kernels::conv::{ssm_conv_range_raw, ConvArgs};
use crate::kernels::norm::{group_rms_norm_inplace_with, rms_norm_segments_inplace_with, rms_norm_with};
use crate::kernels::ops::{add_inplace, Isa};
use crate::kernels::ssm::{ssm_scan1_range_raw, ssm_scan2_range_raw, Scan1Args, Scan2Args};

/// A sequence's tokens in a micro-batch: rows `[start, start + len)`, state slot `slot`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub slot: usize,
    pub start: usize,
    pub len: usize,
}

/// The recurrent states of every slot: per layer, `n_slot` conv states of `conv_len` floats and
/// `n_slot` SSM states of `ssm_len` floats (layouts: see `kernels::conv` and `kernels::ssm`).
pub(crate) struct States {
    pub n_slot: usize,
    pub conv_len: usize,
    pub ssm_len: usize,
    pub conv: Vec<f32>,
    pub ssm: Vec<f32>,
}

impl States {
    pub fn new(hp: &HParams, n_slot: usize) -> Result<States> {
        let conv_len = hp.conv_state_len();
        let ssm_len = hp.ssm_state_len();
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
        let conv = alloc(hp.n_layer * n_slot * conv_len)?;
        let ssm = alloc(hp.n_layer * n_slot * ssm_len)?;
        Ok(States { n_slot, conv_len, ssm_len, conv, ssm })
    }

    fn conv_off(&self, layer: usize, slot: usize) -> usize {
        (layer * self.n_slot + slot) * self.conv_len
    }
    fn ssm_off(&self, layer: usize, slot: usize) -> usize {
        (layer * self.n_slot + slot) * self.ssm_len
    }

    /// Zeroes a slot in every layer.
    pub fn clear(&mut self, n_layer: usize, slot: usize) {
        for l in 0..n_layer {
            let c = self.conv_off(l, slot);
            self.conv[c..c + self.conv_len].fill(0.0);
            let s = self.ssm_off(l, slot);
            self.ssm[s..s + self.ssm_len].fill(0.0);
        }
    }

    /// A slot's state, all layers: conv states then SSM states (each in layer order).
    pub fn copy_slot(&self, n_layer: usize, slot: usize, out: &mut Vec<f32>) {
        out.clear();
        for l in 0..n_layer {
            let c = self.conv_off(l, slot);
            out.extend_from_slice(&self.conv[c..c + self.conv_len]);
        }
        for l in 0..n_layer {
            let s = self.ssm_off(l, slot);
            out.extend_from_slice(&self.ssm[s..s + self.ssm_len]);
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
    /// out_proj output `[T][D]`.
    out: Vec<f32>,
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
    pub const OPS: [&str; 10] =
        ["embd", "norm", "in_proj", "conv", "x_proj+dt", "scan", "group_norm", "out_proj", "residual", "logits"];
    static NS: [AtomicU64; 10] = [const { AtomicU64::new(0) }; 10];
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

/// One micro-batch through the model. `tokens[i]` is row i; `segs` cover the rows, each a run of
/// one sequence; `outputs` lists `(row, logits_row)` for the rows whose logits are wanted, written
/// to `logits[logits_row * n_vocab..]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(
    w: &Weights,
    pool: &ThreadPool,
    states: &mut States,
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
    let n_threads = pool.n_threads();
    let sc = scratch;

    let mut tm = Timer::start();
    get_rows(&w.mat(&w.token_embd)?, tokens, &mut sc.h[..n_t * d])?;
    tm.lap(0);

    for layer in 0..hp.n_layer {
        let (attn_norm, ssm_in, ssm_out) = match &w.arch {
            ArchWeights::Mamba(m) => (&m.layers[layer].attn_norm, &m.layers[layer].ssm_in, &m.layers[layer].ssm_out),
            ArchWeights::Mamba2(m) => (&m.layers[layer].attn_norm, &m.layers[layer].ssm_in, &m.layers[layer].ssm_out),
        };
        rms_norm_with(isa, &sc.h[..n_t * d], attn_norm, hp.eps, &mut sc.u[..n_t * d]);
        tm.lap(1);
        let dip = hp.d_in_proj();
        matmul(&w.mat(ssm_in)?, &sc.u[..n_t * d], n_t, &mut sc.proj[..n_t * dip], pool)?;
        tm.lap(2);

        // Conv over each sequence's rows, with its state slot.
        let (conv_w, conv_b, col0) = match &w.arch {
            ArchWeights::Mamba(m) => (&m.layers[layer].conv_w, &m.layers[layer].conv_b, 0),
            ArchWeights::Mamba2(m) => (&m.layers[layer].conv_w, &m.layers[layer].conv_b, e),
        };
        let cd = hp.conv_dim();
        {
            let per_seq = if n_t * cd < MIN_PARALLEL_WORK { 1 } else { n_threads };
            let ch = chunk(cd, per_seq, 16);
            let n_ch = cd.div_ceil(ch);
            let conv_out = SendPtr(sc.conv.as_mut_ptr());
            let st_base = SendPtr(states.conv.as_mut_ptr());
            let proj = &sc.proj[..n_t * dip];
            let conv_len = states.conv_len;
            let n_slot = states.n_slot;
            pool.run(segs.len() * n_ch, |task| {
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
                    bias: conv_b.as_deref(),
                    silu: true,
                    out_stride: cd,
                };
                // SAFETY: the state slot and the output rows of segment s are disjoint from every
                // other segment's; channel chunks [c0, c1) are disjoint between the tasks of one
                // segment; the sizes follow from `Scratch::ensure` and `States::new`.
                unsafe {
                    let st = st_base.0.add((layer * n_slot + s.slot) * conv_len);
                    ssm_conv_range_raw(isa, &a, c0, c1, st, conv_out.0.add(s.start * cd));
                }
            });
        }
        tm.lap(3);

        match &w.arch {
            ArchWeights::Mamba(m) => {
                let l = &m.layers[layer];
                let (r, n) = (hp.dt_rank, hp.d_state);
                let xw = r + 2 * n;
                matmul(&w.mat(&l.ssm_x)?, &sc.conv[..n_t * e], n_t, &mut sc.xdb[..n_t * xw], pool)?;
                if hp.dt_b_c_rms {
                    let xdb = &mut sc.xdb[..n_t * xw];
                    rms_norm_segments_inplace_with(isa, xdb, xw, 0, r, n_t, hp.dt_b_c_eps);
                    rms_norm_segments_inplace_with(isa, xdb, xw, r, n, n_t, hp.dt_b_c_eps);
                    rms_norm_segments_inplace_with(isa, xdb, xw, r + n, n, n_t, hp.dt_b_c_eps);
                }
                for t in 0..n_t {
                    sc.dtr[t * r..(t + 1) * r].copy_from_slice(&sc.xdb[t * xw..t * xw + r]);
                }
                matmul(&w.mat(&l.ssm_dt)?, &sc.dtr[..n_t * r], n_t, &mut sc.dt[..n_t * e], pool)?;
                tm.lap(4);

                let per_seq = if n_t * e * n < MIN_PARALLEL_WORK { 1 } else { n_threads };
                let ch = chunk(e, per_seq, 16);
                let n_ch = e.div_ceil(ch);
                let y = SendPtr(sc.y.as_mut_ptr());
                let st_base = SendPtr(states.ssm.as_mut_ptr());
                let (ssm_len, n_slot) = (states.ssm_len, states.n_slot);
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
                    // SAFETY: as for the conv: disjoint slots/rows per segment, disjoint channel
                    // ranges per task; buffer sizes from `Scratch::ensure` / `States::new`.
                    unsafe {
                        let st = st_base.0.add((layer * n_slot + s.slot) * ssm_len);
                        ssm_scan1_range_raw(isa, &args, e0, e1, st, y.0.add(s.start * e));
                    }
                });
                tm.lap(5);
            }
            ArchWeights::Mamba2(m) => {
                let l = &m.layers[layer];
                let (h, p, n, g) = (hp.n_head, hp.head_dim, hp.d_state, hp.n_group);
                let per_seq = if n_t * e * n < MIN_PARALLEL_WORK { 1 } else { n_threads };
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
                        let st = st_base.0.add((layer * n_slot + s.slot) * ssm_len);
                        ssm_scan2_range_raw(isa, &args, h0, h1, st, y.0.add(s.start * e));
                    }
                });
                tm.lap(5);
                group_rms_norm_inplace_with(isa, &mut sc.y[..n_t * e], &l.norm, g, hp.eps);
                tm.lap(6);
            }
        }

        matmul(&w.mat(ssm_out)?, &sc.y[..n_t * e], n_t, &mut sc.out[..n_t * d], pool)?;
        tm.lap(7);
        add_inplace(&mut sc.h[..n_t * d], &sc.out[..n_t * d]);
        tm.lap(8);
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
