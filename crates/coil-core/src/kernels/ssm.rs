//! `ssm_scan`: the selective scans of Mamba-1 and Mamba-2, reading and writing a sequence's state
//! in place.
//!
//! # Mamba-1 (per channel e and state index n; `N` = d_state)
//! `Δ = softplus(dt[t][e] + dt_bias[e])`,
//! `h[n][e] ← h[n][e] · exp(Δ·A[n][e]) + B[t][n] · (x[t][e] · Δ)`,
//! `y[t][e] = (Σ_n h[n][e] · C[t][n] + D[e] · x[t][e]) · silu(z[t][e])`.
//! State layout `[N][E]` (channels contiguous): the SIMD paths run across channels, so each lane
//! does exactly the scalar recurrence (no horizontal sums, the same summation order over n as the
//! reference). A is taken in the same `[N][E]` layout (transposed from GGUF's `{N, E}` at load).
//!
//! # Mamba-2 (per head h, row p < P = head_dim, state index n; group g = h / (H/G))
//! `Δ = softplus(dt[t][h] + dt_bias[h])`, `dA = exp(Δ·A[h])` (one scalar per token and head),
//! `h[h][n][p] ← h[h][n][p] · dA + B[t][g][n] · (x[t][h][p] · Δ)`,
//! `y[t][h][p] = (Σ_n h[h][n][p] · C[t][g][n] + D[h] · x[t][h][p]) · silu(z[t][h][p])`.
//! D is fused into the scan (as llama.cpp does) and so is the SiLU gate (Mamba-2 gates before its
//! grouped norm). State layout `[H][N][P]` (rows p contiguous): the SIMD paths run across p with
//! B and C broadcast, again lane-for-lane the scalar recurrence; one head's state (P·N floats,
//! 32 KiB for P=64, N=128) stays in L1 while all T tokens run through it ("head outer, time
//! inner").
//!
//! Both take the gate and D as optional (null pointers / `None`), for testing the bare scan.
//! Threads split channels (Mamba-1) or heads (Mamba-2): disjoint state and output, no reduction.
//!
//! Compared with llama.cpp's layouts (`{N, E}` and `{N, P, H}`, d_state fastest) these states are
//! transposed; code that exchanges states with llama.cpp must transpose.

use super::ops::{
    dispatch, exp_ref, exp_v, max_rel_diff, names, silu_ref, silu_v, softplus_ref, softplus_v, Isa, Portable, Vf32,
};

// ---------------------------------------------------------------------------------------------
// Mamba-1
// ---------------------------------------------------------------------------------------------

/// The inputs of a Mamba-1 scan over one sequence. Row-strided views into the layer's buffers.
#[derive(Clone, Copy)]
pub struct Scan1Args<'a> {
    pub n_t: usize,
    /// d_inner (E).
    pub n_e: usize,
    /// d_state (N).
    pub n_s: usize,
    /// `x[t*x_stride + e]`: the conv output.
    pub x: &'a [f32],
    pub x_stride: usize,
    /// `dt[t*dt_stride + e]`: dt_proj output without its bias (softplus is applied here).
    pub dt: &'a [f32],
    pub dt_stride: usize,
    pub dt_bias: Option<&'a [f32]>,
    /// `B[t][n] = b[t*bc_stride + n]`, `C[t][n] = c[t*bc_stride + n]`.
    pub b: &'a [f32],
    pub c: &'a [f32],
    pub bc_stride: usize,
    /// A `[N][E]` (already −exp(A_log)).
    pub a: &'a [f32],
    pub d: Option<&'a [f32]>,
    /// Gate `z[t*z_stride + e]`.
    pub z: Option<&'a [f32]>,
    pub z_stride: usize,
    pub y_stride: usize,
}

fn rows_fit(len: usize, n_t: usize, stride: usize, width: usize) -> bool {
    n_t == 0
        || (stride >= width
            && (n_t - 1).checked_mul(stride).and_then(|v| v.checked_add(width)).is_some_and(|v| v <= len))
}

impl Scan1Args<'_> {
    /// Panics (a bug in the caller, never user input) when a buffer is too short.
    pub fn check(&self, state: &[f32], y: &[f32]) {
        let (t, e, n) = (self.n_t, self.n_e, self.n_s);
        assert!(rows_fit(self.x.len(), t, self.x_stride, e), "scan1: x");
        assert!(rows_fit(self.dt.len(), t, self.dt_stride, e), "scan1: dt");
        assert!(
            rows_fit(self.b.len(), t, self.bc_stride, n) && rows_fit(self.c.len(), t, self.bc_stride, n),
            "scan1: B/C"
        );
        assert!(self.dt_bias.is_none_or(|v| v.len() >= e) && self.d.is_none_or(|v| v.len() >= e), "scan1: bias/D");
        assert!(self.a.len() >= n * e && state.len() >= n * e, "scan1: A/state");
        assert!(self.z.is_none_or(|z| rows_fit(z.len(), t, self.z_stride, e)), "scan1: z");
        assert!(rows_fit(y.len(), t, self.y_stride, e), "scan1: y");
    }
}

/// Reference. `a_gguf` in GGUF's layout `[E][N]` (`A[e*N + n]`); `state` `[N][E]`.
pub fn ssm_scan1_ref(p: &Scan1Args, a_gguf: &[f32], state: &mut [f32], y: &mut [f32]) {
    let (e_n, n_n) = (p.n_e, p.n_s);
    for t in 0..p.n_t {
        for e in 0..e_n {
            let dt = softplus_ref(p.dt[t * p.dt_stride + e] + p.dt_bias.map_or(0.0, |b| b[e]));
            let x = p.x[t * p.x_stride + e];
            let xd = x * dt;
            let mut acc = 0f32;
            for n in 0..n_n {
                let h = &mut state[n * e_n + e];
                *h = *h * exp_ref(dt * a_gguf[e * n_n + n]) + xd * p.b[t * p.bc_stride + n];
                acc += *h * p.c[t * p.bc_stride + n];
            }
            let mut v = acc + p.d.map_or(0.0, |d| d[e]) * x;
            if let Some(z) = p.z {
                v *= silu_ref(z[t * p.z_stride + e]);
            }
            y[t * p.y_stride + e] = v;
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn scan1_block<V: Vf32>(p: &Scan1Args, e: usize, state: *mut f32, y: *mut f32) {
    let n_e = p.n_e;
    let bias = match p.dt_bias {
        Some(b) => V::load(b.as_ptr().add(e)),
        None => V::splat(0.0),
    };
    let dv = match p.d {
        Some(d) => V::load(d.as_ptr().add(e)),
        None => V::splat(0.0),
    };
    let a = p.a.as_ptr().add(e);
    let st = state.add(e);
    for t in 0..p.n_t {
        let dt = softplus_v(V::load(p.dt.as_ptr().add(t * p.dt_stride + e)).add(bias));
        let xv = V::load(p.x.as_ptr().add(t * p.x_stride + e));
        let xd = xv.mul(dt);
        let bt = p.b.as_ptr().add(t * p.bc_stride);
        let ct = p.c.as_ptr().add(t * p.bc_stride);
        let mut acc = V::splat(0.0);
        for n in 0..p.n_s {
            let sp = st.add(n * n_e);
            let da = exp_v(dt.mul(V::load(a.add(n * n_e))));
            let h = V::load(sp).fmadd(da, xd.mul(V::splat(*bt.add(n))));
            h.store(sp);
            acc = h.fmadd(V::splat(*ct.add(n)), acc);
        }
        let mut v = dv.fmadd(xv, acc);
        if let Some(z) = p.z {
            v = v.mul(silu_v(V::load(z.as_ptr().add(t * p.z_stride + e))));
        }
        v.store(y.add(t * p.y_stride + e));
    }
}

/// Channels `[e0, e1)`: full vectors, then single channels.
#[inline(always)]
unsafe fn scan1_g<V: Vf32>(p: &Scan1Args, e0: usize, e1: usize, state: *mut f32, y: *mut f32) {
    let mut e = e0;
    while e + V::LANES <= e1 {
        scan1_block::<V>(p, e, state, y);
        e += V::LANES;
    }
    while e < e1 {
        scan1_block::<Portable>(p, e, state, y);
        e += 1;
    }
}

dispatch!(
    unsafe fn scan1_raw / scan1_g(p: &Scan1Args, e0: usize, e1: usize, state: *mut f32, y: *mut f32)
);

/// The whole Mamba-1 scan of one sequence on this thread.
pub fn ssm_scan1_with(isa: Isa, p: &Scan1Args, state: &mut [f32], y: &mut [f32]) {
    p.check(state, y);
    // SAFETY: checked above.
    unsafe { scan1_raw(isa, p, 0, p.n_e, state.as_mut_ptr(), y.as_mut_ptr()) }
}

pub fn ssm_scan1(p: &Scan1Args, state: &mut [f32], y: &mut [f32]) {
    ssm_scan1_with(Isa::best(), p, state, y)
}

/// Channels `[e0, e1)` only, for threads splitting the channels.
///
/// # Safety
/// `p.check(state, y)` must hold for the full buffers behind `state` and `y`; no other thread may
/// touch channels `[e0, e1)` of them meanwhile; the inputs in `p` must not alias them.
pub unsafe fn ssm_scan1_range_raw(isa: Isa, p: &Scan1Args, e0: usize, e1: usize, state: *mut f32, y: *mut f32) {
    if e0 < e1 && e1 <= p.n_e {
        scan1_raw(isa, p, e0, e1, state, y)
    }
}

// ---------------------------------------------------------------------------------------------
// Mamba-2
// ---------------------------------------------------------------------------------------------

/// The inputs of a Mamba-2 scan over one sequence.
#[derive(Clone, Copy)]
pub struct Scan2Args<'a> {
    pub n_t: usize,
    /// Heads (H).
    pub n_h: usize,
    /// head_dim (P).
    pub n_p: usize,
    /// d_state (N).
    pub n_s: usize,
    /// Groups (G); H must be a multiple.
    pub n_g: usize,
    /// `x[t*x_stride + h*P + p]`.
    pub x: &'a [f32],
    pub x_stride: usize,
    /// `dt[t*dt_stride + h]` without its bias.
    pub dt: &'a [f32],
    pub dt_stride: usize,
    pub dt_bias: Option<&'a [f32]>,
    /// Δ is clamped to at least this after the softplus (transformers' `time_step_limit[0]`,
    /// Nemotron-H's `time_step_min`); 0: no clamp.
    pub dt_min: f32,
    /// A `[H]` (−exp(A_log)).
    pub a: &'a [f32],
    /// `B[t][g][n] = b[t*bc_stride + g*N + n]`, C likewise.
    pub b: &'a [f32],
    pub c: &'a [f32],
    pub bc_stride: usize,
    pub d: Option<&'a [f32]>,
    pub z: Option<&'a [f32]>,
    pub z_stride: usize,
    pub y_stride: usize,
}

impl Scan2Args<'_> {
    pub fn check(&self, state: &[f32], y: &[f32]) {
        let (t, h, p, n, g) = (self.n_t, self.n_h, self.n_p, self.n_s, self.n_g);
        let e = h * p;
        assert!(g >= 1 && h % g == 0, "scan2: {h} heads in {g} groups");
        assert!(rows_fit(self.x.len(), t, self.x_stride, e), "scan2: x");
        assert!(rows_fit(self.dt.len(), t, self.dt_stride, h), "scan2: dt");
        assert!(
            rows_fit(self.b.len(), t, self.bc_stride, g * n) && rows_fit(self.c.len(), t, self.bc_stride, g * n),
            "scan2: B/C"
        );
        assert!(
            self.dt_bias.is_none_or(|v| v.len() >= h) && self.d.is_none_or(|v| v.len() >= h) && self.a.len() >= h,
            "scan2: A/D/bias"
        );
        assert!(state.len() >= h * n * p, "scan2: state");
        assert!(self.z.is_none_or(|z| rows_fit(z.len(), t, self.z_stride, e)), "scan2: z");
        assert!(rows_fit(y.len(), t, self.y_stride, e), "scan2: y");
    }
}

/// Reference; `state` `[H][N][P]`.
pub fn ssm_scan2_ref(p: &Scan2Args, state: &mut [f32], y: &mut [f32]) {
    let (hn, pn, nn) = (p.n_h, p.n_p, p.n_s);
    let hpg = hn / p.n_g;
    for t in 0..p.n_t {
        for h in 0..hn {
            let g = h / hpg;
            let mut dt = softplus_ref(p.dt[t * p.dt_stride + h] + p.dt_bias.map_or(0.0, |b| b[h]));
            if p.dt_min > 0.0 {
                dt = dt.max(p.dt_min);
            }
            let da = exp_ref(dt * p.a[h]);
            for q in 0..pn {
                let x = p.x[t * p.x_stride + h * pn + q];
                let xd = x * dt;
                let mut acc = 0f32;
                for n in 0..nn {
                    let s = &mut state[(h * nn + n) * pn + q];
                    *s = *s * da + xd * p.b[t * p.bc_stride + g * nn + n];
                    acc += *s * p.c[t * p.bc_stride + g * nn + n];
                }
                let mut v = acc + p.d.map_or(0.0, |d| d[h]) * x;
                if let Some(z) = p.z {
                    v *= silu_ref(z[t * p.z_stride + h * pn + q]);
                }
                y[t * p.y_stride + h * pn + q] = v;
            }
        }
    }
}

/// Rows `[q0, q0 + M·LANES)` of head h at token t: `M` vectors of rows held in registers while
/// the state index runs.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn scan2_cols<V: Vf32, const M: usize>(
    p: &Scan2Args,
    t: usize,
    h: usize,
    q0: usize,
    dt: f32,
    da: f32,
    bt: *const f32,
    ct: *const f32,
    st: *mut f32,
    y: *mut f32,
) {
    let (pn, nn) = (p.n_p, p.n_s);
    let xrow = p.x.as_ptr().add(t * p.x_stride + h * pn + q0);
    let dtv = V::splat(dt);
    let dav = V::splat(da);
    let mut xv = [V::splat(0.0); M];
    let mut xd = [V::splat(0.0); M];
    let mut acc = [V::splat(0.0); M];
    for k in 0..M {
        xv[k] = V::load(xrow.add(k * V::LANES));
        xd[k] = xv[k].mul(dtv);
    }
    let mut sp = st.add(q0);
    for n in 0..nn {
        let bv = V::splat(*bt.add(n));
        let cv = V::splat(*ct.add(n));
        for k in 0..M {
            let s = V::load(sp.add(k * V::LANES)).fmadd(dav, xd[k].mul(bv));
            s.store(sp.add(k * V::LANES));
            acc[k] = s.fmadd(cv, acc[k]);
        }
        sp = sp.add(pn);
    }
    let dv = V::splat(p.d.map_or(0.0, |d| *d.as_ptr().add(h)));
    let yrow = y.add(t * p.y_stride + h * pn + q0);
    for k in 0..M {
        let mut v = dv.fmadd(xv[k], acc[k]);
        if let Some(z) = p.z {
            v = v.mul(silu_v(V::load(z.as_ptr().add(t * p.z_stride + h * pn + q0 + k * V::LANES))));
        }
        v.store(yrow.add(k * V::LANES));
    }
}

/// Heads `[h0, h1)`, each through all T tokens.
#[inline(always)]
unsafe fn scan2_g<V: Vf32>(p: &Scan2Args, h0: usize, h1: usize, state: *mut f32, y: *mut f32) {
    let (pn, nn) = (p.n_p, p.n_s);
    let hpg = p.n_h / p.n_g;
    for h in h0..h1 {
        let g = h / hpg;
        let st = state.add(h * nn * pn);
        let bias = p.dt_bias.map_or(0.0, |b| *b.as_ptr().add(h));
        let a = *p.a.as_ptr().add(h);
        for t in 0..p.n_t {
            // The per-token scalars go through the one-lane instantiation of the vector math, so
            // every path computes them identically.
            let mut dt = softplus_v(Portable::splat(*p.dt.as_ptr().add(t * p.dt_stride + h) + bias)).hsum();
            if p.dt_min > 0.0 {
                dt = dt.max(p.dt_min);
            }
            let da = exp_v(Portable::splat(dt * a)).hsum();
            let bt = p.b.as_ptr().add(t * p.bc_stride + g * nn);
            let ct = p.c.as_ptr().add(t * p.bc_stride + g * nn);
            let mut q = 0;
            while q + 4 * V::LANES <= pn {
                scan2_cols::<V, 4>(p, t, h, q, dt, da, bt, ct, st, y);
                q += 4 * V::LANES;
            }
            while q + V::LANES <= pn {
                scan2_cols::<V, 1>(p, t, h, q, dt, da, bt, ct, st, y);
                q += V::LANES;
            }
            while q < pn {
                scan2_cols::<Portable, 1>(p, t, h, q, dt, da, bt, ct, st, y);
                q += 1;
            }
        }
    }
}

dispatch!(
    unsafe fn scan2_raw / scan2_g(p: &Scan2Args, h0: usize, h1: usize, state: *mut f32, y: *mut f32)
);

/// The whole Mamba-2 scan of one sequence on this thread.
pub fn ssm_scan2_with(isa: Isa, p: &Scan2Args, state: &mut [f32], y: &mut [f32]) {
    p.check(state, y);
    // SAFETY: checked above.
    unsafe { scan2_raw(isa, p, 0, p.n_h, state.as_mut_ptr(), y.as_mut_ptr()) }
}

pub fn ssm_scan2(p: &Scan2Args, state: &mut [f32], y: &mut [f32]) {
    ssm_scan2_with(Isa::best(), p, state, y)
}

/// Heads `[h0, h1)` only, for threads splitting the heads.
///
/// # Safety
/// `p.check(state, y)` must hold for the full buffers behind `state` and `y`; no other thread may
/// touch heads `[h0, h1)` of them meanwhile; the inputs in `p` must not alias them.
pub unsafe fn ssm_scan2_range_raw(isa: Isa, p: &Scan2Args, h0: usize, h1: usize, state: *mut f32, y: *mut f32) {
    if h0 < h1 && h1 <= p.n_h {
        scan2_raw(isa, p, h0, h1, state, y)
    }
}

// ---------------------------------------------------------------------------------------------
// Selfcheck
// ---------------------------------------------------------------------------------------------

fn rnd(rng: &mut crate::util::SplitMix64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| lo + (hi - lo) * rng.next_f32()).collect()
}

/// Runs each path over several tokens and shapes (tails included: E or P not a multiple of the
/// vector width), from a non-zero state, with D and the gate, and compares outputs and final
/// states with the references.
pub(crate) fn selfcheck(out: &mut Vec<(&'static str, f32)>) {
    let mut rng = crate::util::SplitMix64::new(0x55);
    for isa in Isa::available() {
        let mut worst = 0f32;
        for &(t, e, n) in &[(1usize, 64usize, 16usize), (5, 37, 16), (9, 48, 8), (3, 128, 5)] {
            let r = &mut rng;
            let x = rnd(r, t * e, -2.0, 2.0);
            let dt = rnd(r, t * e, -5.0, 1.0);
            let dtb = rnd(r, e, -1.0, 0.5);
            let bc = rnd(r, t * (3 + 2 * n), -1.5, 1.5);
            let a_g: Vec<f32> = rnd(r, e * n, 0.0, 2.8).iter().map(|v| -v.exp()).collect();
            let mut a_t = vec![0f32; e * n];
            for ei in 0..e {
                for ni in 0..n {
                    a_t[ni * e + ei] = a_g[ei * n + ni];
                }
            }
            let d = rnd(r, e, -1.0, 1.0);
            let z = rnd(r, t * e, -3.0, 3.0);
            let st0 = rnd(r, e * n, -1.0, 1.0);
            let w = 3 + 2 * n;
            let args = Scan1Args {
                n_t: t,
                n_e: e,
                n_s: n,
                x: &x,
                x_stride: e,
                dt: &dt,
                dt_stride: e,
                dt_bias: Some(&dtb),
                b: &bc[3..],
                c: &bc[3 + n..],
                bc_stride: w,
                a: &a_t,
                d: Some(&d),
                z: Some(&z),
                z_stride: e,
                y_stride: e,
            };
            let (mut s_ref, mut y_ref) = (st0.clone(), vec![0f32; t * e]);
            ssm_scan1_ref(&args, &a_g, &mut s_ref, &mut y_ref);
            let (mut s, mut y) = (st0.clone(), vec![0f32; t * e]);
            args.check(&s, &y);
            let h = e / 3;
            // SAFETY: checked; two disjoint channel ranges, as two threads would split them.
            unsafe {
                ssm_scan1_range_raw(isa, &args, 0, h, s.as_mut_ptr(), y.as_mut_ptr());
                ssm_scan1_range_raw(isa, &args, h, e, s.as_mut_ptr(), y.as_mut_ptr());
            }
            worst = worst.max(max_rel_diff(&y, &y_ref)).max(max_rel_diff(&s, &s_ref));
        }
        out.push((names::SCAN1[isa as usize], worst));

        let mut worst = 0f32;
        for &(t, hn, pn, n, g) in
            &[(1usize, 4usize, 64usize, 128usize, 1usize), (6, 8, 16, 16, 2), (4, 3, 13, 7, 3), (2, 2, 40, 32, 1)]
        {
            let r = &mut rng;
            let e = hn * pn;
            let x = rnd(r, t * e, -2.0, 2.0);
            let dt = rnd(r, t * hn, -5.0, 1.0);
            let dtb = rnd(r, hn, -1.0, 0.5);
            let bcs = 2 * g * n + 1;
            let bc = rnd(r, t * bcs, -1.5, 1.5);
            let a: Vec<f32> = rnd(r, hn, 0.0, 2.8).iter().map(|v| -v.exp()).collect();
            let d = rnd(r, hn, -1.0, 1.0);
            let z = rnd(r, t * e, -3.0, 3.0);
            let st0 = rnd(r, e * n, -1.0, 1.0);
            let args = Scan2Args {
                n_t: t,
                n_h: hn,
                n_p: pn,
                n_s: n,
                n_g: g,
                x: &x,
                x_stride: e,
                dt: &dt,
                dt_stride: hn,
                dt_bias: Some(&dtb),
                // One case clamps Δ (some of these dt fall below 0.3).
                dt_min: if g == 2 { 0.3 } else { 0.0 },
                a: &a,
                b: &bc,
                c: &bc[g * n..],
                bc_stride: bcs,
                d: Some(&d),
                z: Some(&z),
                z_stride: e,
                y_stride: e,
            };
            let (mut s_ref, mut y_ref) = (st0.clone(), vec![0f32; t * e]);
            ssm_scan2_ref(&args, &mut s_ref, &mut y_ref);
            let (mut s, mut y) = (st0.clone(), vec![0f32; t * e]);
            args.check(&s, &y);
            let h = hn / 2;
            // SAFETY: checked; disjoint head ranges.
            unsafe {
                ssm_scan2_range_raw(isa, &args, 0, h, s.as_mut_ptr(), y.as_mut_ptr());
                ssm_scan2_range_raw(isa, &args, h, hn, s.as_mut_ptr(), y.as_mut_ptr());
            }
            worst = worst.max(max_rel_diff(&y, &y_ref)).max(max_rel_diff(&s, &s_ref));
        }
        out.push((names::SCAN2[isa as usize], worst));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_reference() {
        let mut out = Vec::new();
        selfcheck(&mut out);
        for (n, d) in &out {
            assert!(*d < 2e-6, "{n}: {d}");
        }
    }
}
