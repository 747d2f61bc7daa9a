//! `ssm_conv`: the depthwise causal convolution of the Mamba mixers, with its recurrent state.
//!
//! For channel c and token t (K = d_conv):
//! `out[t][c] = silu(Σ_{j<K} w[j][c] · u[t + j][c] + bias[c])`, where `u` is the sequence's last
//! K−1 inputs (the conv state) followed by the T new inputs. Afterwards the state holds the last
//! K−1 entries of `u`. This equals PyTorch's `conv1d(groups=C, padding=K−1)[..., :T]` with the
//! state as the left padding (zeros for a fresh sequence), and llama.cpp's `ssm_conv` + bias + silu.
//!
//! Layouts (all f32, channels contiguous, so the SIMD paths run across channels):
//! * input rows `x[t*x_stride + c]` (a column range of the in_proj output),
//! * weights transposed to `w[j*C + c]` (GGUF stores `{K, C}`, i.e. `[c][j]`; the model transposes
//!   once at load),
//! * state `[K−1][C]` (row j = the input j+1 steps before the next token's window ends),
//! * output `out[t*out_stride + c]`.

use super::ops::{dispatch, max_rel_diff, names, silu_v, Isa, Portable, Vf32};

/// The largest d_conv the kernels take (real models use 4; the model loader rejects more).
pub const MAX_D_CONV: usize = 16;

/// Reference, with the GGUF weight layout `w_gguf[c*K + j]`; `state` is `[K−1][C]`.
#[allow(clippy::too_many_arguments)]
pub fn ssm_conv_ref(
    x: &[f32],
    x_stride: usize,
    n_t: usize,
    n_c: usize,
    k: usize,
    w_gguf: &[f32],
    bias: Option<&[f32]>,
    state: &mut [f32],
    out: &mut [f32],
    out_stride: usize,
    silu: bool,
) {
    let at = |state: &[f32], idx: usize, c: usize| -> f32 {
        if idx < k - 1 {
            state[idx * n_c + c]
        } else {
            x[(idx - (k - 1)) * x_stride + c]
        }
    };
    for t in 0..n_t {
        for c in 0..n_c {
            let mut acc = 0f32;
            for j in 0..k {
                acc += w_gguf[c * k + j] * at(state, t + j, c);
            }
            if let Some(b) = bias {
                acc += b[c];
            }
            out[t * out_stride + c] = if silu { super::ops::silu_ref(acc) } else { acc };
        }
    }
    let old = state.to_vec();
    for j in 0..k - 1 {
        for c in 0..n_c {
            state[j * n_c + c] = at(&old, n_t + j, c);
        }
    }
}

/// The channel range `[c0, c1)` of the convolution (all T tokens), then its state update.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn conv_g<V: Vf32>(
    x: *const f32,
    x_stride: usize,
    n_t: usize,
    n_c: usize,
    c0: usize,
    c1: usize,
    k: usize,
    w: *const f32,
    bias: *const f32,
    state: *mut f32,
    out: *mut f32,
    out_stride: usize,
    silu: bool,
) {
    let km1 = k - 1;
    #[inline(always)]
    unsafe fn one<W: Vf32>(
        c: usize,
        srcs: &[*const f32; MAX_D_CONV],
        k: usize,
        w: *const f32,
        n_c: usize,
        bias: *const f32,
        silu: bool,
    ) -> W {
        let mut acc = W::splat(0.0);
        for (j, src) in srcs.iter().enumerate().take(k) {
            acc = W::load(w.add(j * n_c + c)).fmadd(W::load(src.add(c)), acc);
        }
        if !bias.is_null() {
            acc = acc.add(W::load(bias.add(c)));
        }
        if silu {
            silu_v(acc)
        } else {
            acc
        }
    }
    let mut srcs = [std::ptr::null::<f32>(); MAX_D_CONV];
    for t in 0..n_t {
        for (j, s) in srcs.iter_mut().enumerate().take(k) {
            let idx = t + j;
            *s = if idx < km1 { state.add(idx * n_c) as *const f32 } else { x.add((idx - km1) * x_stride) };
        }
        let o = out.add(t * out_stride);
        let mut c = c0;
        while c + V::LANES <= c1 {
            one::<V>(c, &srcs, k, w, n_c, bias, silu).store(o.add(c));
            c += V::LANES;
        }
        while c < c1 {
            one::<Portable>(c, &srcs, k, w, n_c, bias, silu).store(o.add(c));
            c += 1;
        }
    }
    // New state: the last K−1 entries of [state; x]. Row j takes entry n_t + j, which is either a
    // later state row (j + n_t < K−1: moving rows up, so ascending j never overwrites a row still
    // to be read) or an input row.
    for j in 0..km1 {
        let idx = n_t + j;
        let from = if idx < km1 { state.add(idx * n_c) as *const f32 } else { x.add((idx - km1) * x_stride) };
        let to = state.add(j * n_c);
        std::ptr::copy(from.add(c0), to.add(c0), c1 - c0);
    }
}

dispatch!(
    unsafe fn conv_raw / conv_g(
        x: *const f32,
        x_stride: usize,
        n_t: usize,
        n_c: usize,
        c0: usize,
        c1: usize,
        k: usize,
        w: *const f32,
        bias: *const f32,
        state: *mut f32,
        out: *mut f32,
        out_stride: usize,
        silu: bool,
    )
);

/// Arguments of [`ssm_conv`] for one sequence.
pub struct ConvArgs<'a> {
    /// `n_t` input rows, row t at `x[t*x_stride..][..n_c]`.
    pub x: &'a [f32],
    pub x_stride: usize,
    pub n_t: usize,
    pub n_c: usize,
    pub k: usize,
    /// Transposed weights `[K][C]`.
    pub w: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub silu: bool,
    pub out_stride: usize,
}

impl ConvArgs<'_> {
    fn check(&self, state: &[f32], out: &[f32]) {
        let (t, c, k) = (self.n_t, self.n_c, self.k);
        assert!((1..=MAX_D_CONV).contains(&k), "ssm_conv: d_conv {k}");
        assert!(self.w.len() >= k * c, "ssm_conv: weights");
        assert!(self.bias.is_none_or(|b| b.len() >= c), "ssm_conv: bias");
        assert!(state.len() >= (k - 1) * c, "ssm_conv: state");
        if t > 0 {
            assert!(self.x_stride >= c && self.x.len() >= (t - 1) * self.x_stride + c, "ssm_conv: input");
            assert!(self.out_stride >= c && out.len() >= (t - 1) * self.out_stride + c, "ssm_conv: output");
        }
    }
}

/// Runs the convolution for channels `[c0, c1)` of one sequence: writes those channels of `out`
/// and updates those channels of `state` (`[K−1][C]`). Disjoint channel ranges may run on
/// different threads through [`ssm_conv_range_raw`].
pub fn ssm_conv_with(isa: Isa, a: &ConvArgs, state: &mut [f32], out: &mut [f32]) {
    a.check(state, out);
    // SAFETY: all ranges checked by `check`.
    unsafe { ssm_conv_range_raw(isa, a, 0, a.n_c, state.as_mut_ptr(), out.as_mut_ptr()) }
}

pub fn ssm_conv(a: &ConvArgs, state: &mut [f32], out: &mut [f32]) {
    ssm_conv_with(Isa::best(), a, state, out)
}

/// The channel range `[c0, c1)` with raw state/output pointers, for threads splitting channels.
///
/// # Safety
/// `state` must be valid for `(K−1)·C` floats and `out` for the rows `ConvArgs` describes (what
/// `ssm_conv_with` checks); no other thread may touch channels `[c0, c1)` of either meanwhile, and
/// `x` must not alias `state` or `out`.
pub unsafe fn ssm_conv_range_raw(isa: Isa, a: &ConvArgs, c0: usize, c1: usize, state: *mut f32, out: *mut f32) {
    if a.n_t == 0 || c0 >= c1 {
        return;
    }
    let bias = a.bias.map(|b| b.as_ptr()).unwrap_or(std::ptr::null());
    conv_raw(
        isa,
        a.x.as_ptr(),
        a.x_stride,
        a.n_t,
        a.n_c,
        c0,
        c1,
        a.k,
        a.w.as_ptr(),
        bias,
        state,
        out,
        a.out_stride,
        a.silu,
    )
}

/// Transposes GGUF conv weights `[c][j]` (`{K, C}`) to the kernels' `[j][c]`.
pub fn transpose_conv_weights(w_gguf: &[f32], n_c: usize, k: usize) -> Vec<f32> {
    let mut w = vec![0f32; n_c * k];
    for c in 0..n_c {
        for j in 0..k {
            w[j * n_c + c] = w_gguf[c * k + j];
        }
    }
    w
}

/// Selfcheck: several T (including T < K−1, which only shifts the state) and channel counts.
pub(crate) fn selfcheck(out: &mut Vec<(&'static str, f32)>) {
    let mut rng = crate::util::SplitMix64::new(0xc0);
    let mut r = || rng.next_f32() * 2.0 - 1.0;
    for isa in Isa::available() {
        let mut worst = 0f32;
        for &(t, c, k) in &[(1usize, 37usize, 4usize), (2, 64, 4), (7, 129, 4), (33, 96, 3), (5, 16, 2), (3, 8, 1)] {
            let xs = c + 5;
            let x: Vec<f32> = (0..t * xs).map(|_| r()).collect();
            let wg: Vec<f32> = (0..c * k).map(|_| r()).collect();
            let b: Vec<f32> = (0..c).map(|_| r()).collect();
            let st0: Vec<f32> = (0..(k - 1) * c).map(|_| r()).collect();
            let mut st_ref = st0.clone();
            let mut o_ref = vec![0f32; t * c];
            ssm_conv_ref(&x, xs, t, c, k, &wg, Some(&b), &mut st_ref, &mut o_ref, c, true);
            let wt = transpose_conv_weights(&wg, c, k);
            let a =
                ConvArgs { x: &x, x_stride: xs, n_t: t, n_c: c, k, w: &wt, bias: Some(&b), silu: true, out_stride: c };
            let mut st = st0.clone();
            let mut o = vec![0f32; t * c];
            // Two channel halves, as two threads would do it.
            let h = c / 2;
            a.check(&st, &o);
            // SAFETY: checked above; the halves are disjoint.
            unsafe {
                ssm_conv_range_raw(isa, &a, 0, h, st.as_mut_ptr(), o.as_mut_ptr());
                ssm_conv_range_raw(isa, &a, h, c, st.as_mut_ptr(), o.as_mut_ptr());
            }
            worst = worst.max(max_rel_diff(&o, &o_ref)).max(max_rel_diff(&st, &st_ref));
        }
        out.push((names::CONV[isa as usize], worst));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_reference() {
        let mut out = Vec::new();
        selfcheck(&mut out);
        for (n, d) in out {
            assert!(d < 1e-6, "{n}: {d}");
        }
    }

    #[test]
    fn token_by_token_equals_whole() {
        let (t, c, k) = (9usize, 20usize, 4usize);
        let mut rng = crate::util::SplitMix64::new(3);
        let x: Vec<f32> = (0..t * c).map(|_| rng.next_f32() - 0.5).collect();
        let wg: Vec<f32> = (0..c * k).map(|_| rng.next_f32() - 0.5).collect();
        let wt = transpose_conv_weights(&wg, c, k);
        let mut st_a = vec![0f32; (k - 1) * c];
        let mut out_a = vec![0f32; t * c];
        ssm_conv(
            &ConvArgs { x: &x, x_stride: c, n_t: t, n_c: c, k, w: &wt, bias: None, silu: false, out_stride: c },
            &mut st_a,
            &mut out_a,
        );
        let mut st_b = vec![0f32; (k - 1) * c];
        let mut out_b = vec![0f32; t * c];
        // 1, then 2, then 6 tokens.
        let mut s = 0;
        for n in [1usize, 2, 6] {
            let a = ConvArgs {
                x: &x[s * c..],
                x_stride: c,
                n_t: n,
                n_c: c,
                k,
                w: &wt,
                bias: None,
                silu: false,
                out_stride: c,
            };
            ssm_conv(&a, &mut st_b, &mut out_b[s * c..]);
            s += n;
        }
        assert_eq!(out_a, out_b);
        assert_eq!(st_a, st_b);
    }
}
