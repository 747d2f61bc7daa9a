//! RMS normalisation: the per-token norms of the Mamba blocks, the weightless dt/B/C norms of
//! Falcon-Mamba, and Mamba-2's gated grouped norm.
//!
//! `y = x / sqrt(mean(x²) + eps) · w` per row, the mean in f32 (summed in the canonical order of `ops::canon_sum`, the same bits on every ISA:
//! ggml sums in double, which differs at the 1e-7 relative level). The scale is
//! computed as `1/sqrt(mean + eps)` in f32, then `x · scale · w`, in that order, as ggml does.

use super::ops::{canon_sum, dispatch, max_rel_diff, names, silu_ref, Isa, Portable, Vf32};

/// Reference: one row, `w` optional (weightless when `None`).
pub fn rms_norm_row_ref(x: &[f32], w: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    let n = x.len();
    let mut s = 0f32;
    for &v in x {
        s += v * v;
    }
    let scale = 1.0 / (s / n as f32 + eps).sqrt();
    for i in 0..n {
        let v = x[i] * scale;
        out[i] = match w {
            Some(w) => v * w[i],
            None => v,
        };
    }
}

/// Sum of squares of `n` floats at `p`, in the canonical order of [`canon_sum`] (the same bits on
/// every ISA).
#[inline(always)]
unsafe fn sumsq<V: Vf32>(p: *const f32, n: usize) -> f32 {
    canon_sum::<V>(
        n,
        |i| {
            let a = V::load(p.add(i));
            a.mul(a)
        },
        |i| *p.add(i) * *p.add(i),
    )
}

/// `out[i] = x[i] * scale * w[i]` (or without `w`), `n` floats.
#[inline(always)]
unsafe fn scale_row<V: Vf32>(x: *const f32, w: *const f32, scale: f32, out: *mut f32, n: usize) {
    let vs = V::splat(scale);
    let mut i = 0;
    if w.is_null() {
        while i + V::LANES <= n {
            V::load(x.add(i)).mul(vs).store(out.add(i));
            i += V::LANES;
        }
        while i < n {
            *out.add(i) = *x.add(i) * scale;
            i += 1;
        }
    } else {
        while i + V::LANES <= n {
            V::load(x.add(i)).mul(vs).mul(V::load(w.add(i))).store(out.add(i));
            i += V::LANES;
        }
        while i < n {
            *out.add(i) = *x.add(i) * scale * *w.add(i);
            i += 1;
        }
    }
}

/// RMS-normalises `n_rows` rows of `row_len` floats. Row r is read from `x[r*x_stride..]` and
/// written to `out[r*out_stride..]` (may be the same buffer: in place is allowed when the strides
/// are equal). `w` (length `row_len · n_w`) is the weight, row r using `w[(r % n_w)·row_len..]`
/// — `n_w` > 1 gives the grouped norm, where the rows of one token are its groups. `w` empty:
/// weightless.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn rms_norm_rows_g<V: Vf32>(
    x: *const f32,
    x_stride: usize,
    out: *mut f32,
    out_stride: usize,
    n_rows: usize,
    row_len: usize,
    w: &[f32],
    n_w: usize,
    eps: f32,
) {
    for r in 0..n_rows {
        let xr = x.add(r * x_stride);
        let s = sumsq::<V>(xr, row_len);
        let scale = 1.0 / (s / row_len as f32 + eps).sqrt();
        let wp = if w.is_empty() { std::ptr::null() } else { w.as_ptr().add((r % n_w) * row_len) };
        scale_row::<V>(xr, wp, scale, out.add(r * out_stride), row_len);
    }
}

dispatch!(
    unsafe fn rms_norm_rows_raw / rms_norm_rows_g(
        x: *const f32,
        x_stride: usize,
        out: *mut f32,
        out_stride: usize,
        n_rows: usize,
        row_len: usize,
        w: &[f32],
        n_w: usize,
        eps: f32,
    )
);

fn check_rows(len: usize, stride: usize, n_rows: usize, row_len: usize, what: &str) {
    assert!(n_rows == 0 || (stride >= row_len && (n_rows - 1) * stride + row_len <= len), "{what}: buffer too short");
}

/// RMSNorm with weight `w` over `n_rows` contiguous rows of `w.len()` floats: `out = norm(x)·w`.
pub fn rms_norm_with(isa: Isa, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    if d == 0 {
        return;
    }
    let n_rows = x.len() / d;
    check_rows(x.len(), d, n_rows, d, "rms_norm x");
    check_rows(out.len(), d, n_rows, d, "rms_norm out");
    // SAFETY: both buffers hold n_rows rows of d floats (checked above).
    unsafe { rms_norm_rows_raw(isa, x.as_ptr(), d, out.as_mut_ptr(), d, n_rows, d, w, 1, eps) };
}

pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    rms_norm_with(Isa::best(), x, w, eps, out)
}

/// Weighted RMS normalisation in place of `n_rows` segments `x[r*stride + off .. + w.len()]`
/// (Jamba's dt, B and C norms inside the x_proj output rows).
pub fn rms_norm_segments_weighted_inplace_with(
    isa: Isa,
    x: &mut [f32],
    stride: usize,
    off: usize,
    w: &[f32],
    n_rows: usize,
    eps: f32,
) {
    let len = w.len();
    if len == 0 || n_rows == 0 {
        return;
    }
    assert!(off + len <= stride);
    check_rows(x.len().saturating_sub(off), stride, n_rows, len, "rms_norm_segments");
    // SAFETY: as in `rms_norm_segments_inplace_with`.
    unsafe {
        let p = x.as_mut_ptr().add(off);
        rms_norm_rows_raw(isa, p, stride, p, stride, n_rows, len, w, 1, eps);
    }
}

/// Weightless RMS normalisation in place of `n_rows` segments `x[r*stride + off .. + len]`
/// (Falcon-Mamba's dt, B and C inside the x_proj output rows).
pub fn rms_norm_segments_inplace_with(
    isa: Isa,
    x: &mut [f32],
    stride: usize,
    off: usize,
    len: usize,
    n_rows: usize,
    eps: f32,
) {
    if len == 0 || n_rows == 0 {
        return;
    }
    assert!(off + len <= stride);
    check_rows(x.len().saturating_sub(off), stride, n_rows, len, "rms_norm_segments");
    // SAFETY: every row lies inside `x` (checked above); reading and writing the same row is the
    // in-place case the kernel supports (each element is read before it is written).
    unsafe {
        let p = x.as_mut_ptr().add(off);
        rms_norm_rows_raw(isa, p, stride, p, stride, n_rows, len, &[], 1, eps);
    }
}

pub fn rms_norm_segments_inplace(x: &mut [f32], stride: usize, off: usize, len: usize, n_rows: usize, eps: f32) {
    rms_norm_segments_inplace_with(Isa::best(), x, stride, off, len, n_rows, eps)
}

/// Mamba-2's grouped norm, in place over `y` (`[T][E]`): each token's `E` channels form `n_group`
/// contiguous groups of `E / n_group`, each RMS-normalised on its own and multiplied by the
/// matching slice of `w` (`E` floats). The SiLU gate (`y · silu(z)`, applied *before* the norm as
/// in llama.cpp and mamba_ssm's `RMSNormGated(norm_before_gate=False)`) is fused into the Mamba-2
/// scan's epilogue, so it is not repeated here; [`gated_group_rms_norm_ref`] has the whole thing.
pub fn group_rms_norm_inplace_with(isa: Isa, y: &mut [f32], w: &[f32], n_group: usize, eps: f32) {
    let e = w.len();
    if e == 0 || n_group == 0 {
        return;
    }
    assert!(e.is_multiple_of(n_group), "group_rms_norm: {e} channels in {n_group} groups");
    let gs = e / n_group;
    let n_rows = y.len() / e * n_group;
    check_rows(y.len(), gs, n_rows, gs, "group_rms_norm");
    let p = y.as_mut_ptr();
    // SAFETY: n_rows rows of gs floats fill y (checked above); in place is supported.
    unsafe { rms_norm_rows_raw(isa, p, gs, p, gs, n_rows, gs, w, n_group, eps) };
}

pub fn group_rms_norm_inplace(y: &mut [f32], w: &[f32], n_group: usize, eps: f32) {
    group_rms_norm_inplace_with(Isa::best(), y, w, n_group, eps)
}

/// Reference of the whole Mamba-2 gated norm: `y ← groupRMS(y · silu(z)) · w`.
pub fn gated_group_rms_norm_ref(y: &mut [f32], z: &[f32], w: &[f32], n_group: usize, eps: f32) {
    let e = w.len();
    let gs = e / n_group;
    for t in 0..y.len() / e {
        for i in 0..e {
            y[t * e + i] *= silu_ref(z[t * e + i]);
        }
        for g in 0..n_group {
            let r = t * e + g * gs;
            let seg: Vec<f32> = y[r..r + gs].to_vec();
            rms_norm_row_ref(&seg, Some(&w[g * gs..(g + 1) * gs]), eps, &mut y[r..r + gs]);
        }
    }
}

/// Selfcheck of the norm paths against the references.
pub(crate) fn selfcheck(out: &mut Vec<(&'static str, f32)>) {
    let mut rng = crate::util::SplitMix64::new(0x40e);
    let mut r = || rng.next_f32() * 2.0 - 1.0;
    for isa in Isa::available() {
        let mut worst = 0f32;
        for &d in &[1usize, 7, 64, 100, 768] {
            let x: Vec<f32> = (0..3 * d).map(|_| r() * 3.0).collect();
            let w: Vec<f32> = (0..d).map(|_| r()).collect();
            let mut got = vec![0f32; 3 * d];
            rms_norm_with(isa, &x, &w, 1e-5, &mut got);
            let mut want = vec![0f32; 3 * d];
            for t in 0..3 {
                rms_norm_row_ref(&x[t * d..(t + 1) * d], Some(&w), 1e-5, &mut want[t * d..(t + 1) * d]);
            }
            worst = worst.max(max_rel_diff(&got, &want));
        }
        out.push((names::RMS_NORM[isa as usize], worst));
        let mut worst = 0f32;
        for &(e, g) in &[(128usize, 2usize), (64, 1), (96, 8), (1536, 1)] {
            let y: Vec<f32> = (0..3 * e).map(|_| r() * 2.0).collect();
            let z: Vec<f32> = (0..3 * e).map(|_| r() * 4.0).collect();
            let w: Vec<f32> = (0..e).map(|_| r()).collect();
            let mut want = y.clone();
            gated_group_rms_norm_ref(&mut want, &z, &w, g, 1e-5);
            let mut got = y.clone();
            super::ops::mul_silu_with(isa, &mut got, &z);
            group_rms_norm_inplace_with(isa, &mut got, &w, g, 1e-5);
            worst = worst.max(max_rel_diff(&got, &want));
        }
        out.push((names::GROUP_NORM[isa as usize], worst));
    }
    let _ = Portable::LANES;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_reference() {
        let mut out = Vec::new();
        selfcheck(&mut out);
        for (n, d) in out {
            assert!(d < 2e-6, "{n}: {d}");
        }
    }

    #[test]
    fn segments_and_grouping() {
        // Falcon-style segments: normalise [2..5) of each 8-float row, leave the rest alone.
        let mut x: Vec<f32> = (0..24).map(|i| i as f32 - 7.0).collect();
        let orig = x.clone();
        for isa in Isa::available() {
            let mut y = orig.clone();
            rms_norm_segments_inplace_with(isa, &mut y, 8, 2, 3, 3, 1e-6);
            for r in 0..3 {
                let mut want = [0f32; 3];
                rms_norm_row_ref(&orig[r * 8 + 2..r * 8 + 5], None, 1e-6, &mut want);
                for i in 0..8 {
                    let v = y[r * 8 + i];
                    if (2..5).contains(&i) {
                        assert!((v - want[i - 2]).abs() < 1e-6);
                    } else {
                        assert_eq!(v, orig[r * 8 + i]);
                    }
                }
            }
            x.clone_from(&y);
        }
        let _ = x;
    }
}
