//! The model's kernels (SSM scans, conv, norms, element-wise math): every instruction-set path this
//! machine can run against the scalar references (within 1e-5) and against the portable path
//! (bit for bit), over a sweep of shapes (vector tails, long and
//! single-token runs, states carried between calls), plus the properties the model relies on.

use coil_core::kernels::conv::{ssm_conv_ref, ssm_conv_with, transpose_conv_weights, ConvArgs};
use coil_core::kernels::norm::{
    gated_group_rms_norm_ref, group_rms_norm_inplace_with, rms_norm_row_ref, rms_norm_with,
};
use coil_core::kernels::ops::{exp_ref, mul_silu_with, silu_ref, softplus_inplace_with, softplus_ref, Isa};
use coil_core::kernels::ssm::{ssm_scan1_ref, ssm_scan1_with, ssm_scan2_ref, ssm_scan2_with, Scan1Args, Scan2Args};
use coil_core::util::SplitMix64;

fn rnd(r: &mut SplitMix64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| lo + (hi - lo) * r.next_f32()).collect()
}

/// Bit-identical (every ISA path must give exactly what the portable path gives: no FMA, the
/// canonical reduction order; that is what makes native and wasm agree bit for bit).
#[track_caller]
fn same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(a.to_bits() == b.to_bits(), "{what}: element {i}: {a} != portable {b}");
    }
}

fn rel(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .map(|(a, b)| if a.is_nan() || b.is_nan() { f32::INFINITY } else { (a - b).abs() / scale })
        .fold(0f32, f32::max)
}

#[test]
fn selfcheck_reports_every_model_kernel_within_1e_5() {
    let res = coil_core::kernels::selfcheck();
    for k in [
        "exp",
        "softplus",
        "silu",
        "rms_norm",
        "group_rms_norm_gated",
        "ssm_conv",
        "ssm_scan_mamba1",
        "ssm_scan_mamba2",
    ] {
        for isa in Isa::available() {
            let name = format!("{k}/{}", isa.name());
            let (_, d) = res.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("selfcheck lacks {name}"));
            assert!(*d < 1e-5, "{name}: {d}");
        }
    }
}

#[test]
fn scan1_sweep() {
    let mut r = SplitMix64::new(1);
    for &(t, e, n, bcs_extra) in
        &[(1usize, 16usize, 16usize, 0usize), (64, 48, 16, 7), (3, 1, 4, 1), (17, 33, 16, 3), (2, 130, 32, 0)]
    {
        let x = rnd(&mut r, t * e, -3.0, 3.0);
        let dt = rnd(&mut r, t * e, -8.0, 25.0); // crosses the softplus threshold
        let dtb = rnd(&mut r, e, -1.0, 1.0);
        let w = n * 2 + bcs_extra;
        let bc = rnd(&mut r, t * w, -2.0, 2.0);
        let a_g: Vec<f32> = rnd(&mut r, e * n, -1.0, 3.0).iter().map(|v| -v.exp()).collect();
        let mut a = vec![0f32; e * n];
        for ei in 0..e {
            for ni in 0..n {
                a[ni * e + ei] = a_g[ei * n + ni];
            }
        }
        let d = rnd(&mut r, e, -1.0, 1.0);
        let z = rnd(&mut r, t * (e + 2), -5.0, 5.0);
        let st0 = rnd(&mut r, n * e, -2.0, 2.0);
        for (with_gate, with_d) in [(true, true), (false, false)] {
            let args = Scan1Args {
                n_t: t,
                n_e: e,
                n_s: n,
                x: &x,
                x_stride: e,
                dt: &dt,
                dt_stride: e,
                dt_bias: Some(&dtb),
                b: &bc[bcs_extra..],
                c: &bc[bcs_extra + n..],
                bc_stride: w,
                a: &a,
                d: if with_d { Some(&d) } else { None },
                z: if with_gate { Some(&z) } else { None },
                z_stride: e + 2,
                y_stride: e,
            };
            let (mut s_ref, mut y_ref) = (st0.clone(), vec![0f32; t * e]);
            ssm_scan1_ref(&args, &a_g, &mut s_ref, &mut y_ref);
            for isa in Isa::available() {
                let (mut s, mut y) = (st0.clone(), vec![0f32; t * e]);
                ssm_scan1_with(isa, &args, &mut s, &mut y);
                assert!(rel(&y, &y_ref) < 1e-5, "{isa:?} t{t} e{e} n{n}: y {}", rel(&y, &y_ref));
                assert!(rel(&s, &s_ref) < 1e-5, "{isa:?} t{t} e{e} n{n}: state {}", rel(&s, &s_ref));
                let (mut sp, mut yp) = (st0.clone(), vec![0f32; t * e]);
                ssm_scan1_with(Isa::Portable, &args, &mut sp, &mut yp);
                same(&y, &yp, &format!("scan1 {isa:?} t{t} e{e} n{n}: y"));
                same(&s, &sp, &format!("scan1 {isa:?} t{t} e{e} n{n}: state"));
            }
        }
    }
}

#[test]
fn scan2_sweep() {
    let mut r = SplitMix64::new(2);
    for &(t, h, p, n, g) in &[
        (1usize, 24usize, 64usize, 128usize, 1usize),
        (33, 4, 16, 16, 2),
        (5, 6, 7, 9, 3),
        (2, 8, 80, 64, 8),
        (9, 1, 1, 1, 1),
    ] {
        let e = h * p;
        let xw = e + 2 * g * n + 3;
        let xbc = rnd(&mut r, t * xw, -2.0, 2.0);
        let dt = rnd(&mut r, t * (h + 1), -8.0, 25.0);
        let dtb = rnd(&mut r, h, -1.0, 1.0);
        let a: Vec<f32> = rnd(&mut r, h, -1.0, 3.0).iter().map(|v| -v.exp()).collect();
        let d = rnd(&mut r, h, -1.0, 1.0);
        let z = rnd(&mut r, t * e, -5.0, 5.0);
        let st0 = rnd(&mut r, h * n * p, -2.0, 2.0);
        let args = Scan2Args {
            n_t: t,
            n_h: h,
            n_p: p,
            n_s: n,
            n_g: g,
            x: &xbc,
            x_stride: xw,
            dt: &dt,
            dt_stride: h + 1,
            dt_bias: Some(&dtb),
            dt_min: 0.0,
            a: &a,
            b: &xbc[e..],
            c: &xbc[e + g * n..],
            bc_stride: xw,
            d: Some(&d),
            z: Some(&z),
            z_stride: e,
            y_stride: e,
        };
        let (mut s_ref, mut y_ref) = (st0.clone(), vec![0f32; t * e]);
        ssm_scan2_ref(&args, &mut s_ref, &mut y_ref);
        for isa in Isa::available() {
            let (mut s, mut y) = (st0.clone(), vec![0f32; t * e]);
            ssm_scan2_with(isa, &args, &mut s, &mut y);
            assert!(rel(&y, &y_ref) < 1e-5, "{isa:?} t{t} h{h} p{p} n{n}: y {}", rel(&y, &y_ref));
            assert!(rel(&s, &s_ref) < 1e-5, "{isa:?} t{t} h{h} p{p} n{n}: state {}", rel(&s, &s_ref));
            let (mut sp, mut yp) = (st0.clone(), vec![0f32; t * e]);
            ssm_scan2_with(Isa::Portable, &args, &mut sp, &mut yp);
            same(&y, &yp, &format!("scan2 {isa:?} t{t} h{h} p{p} n{n}: y"));
            same(&s, &sp, &format!("scan2 {isa:?} t{t} h{h} p{p} n{n}: state"));
        }
    }
}

/// The scans carry their state: T tokens in one call = the same tokens split over calls (exactly,
/// since each token's arithmetic is the same).
#[test]
fn scans_split_over_calls_equal_one_call() {
    let mut r = SplitMix64::new(3);
    let (t, h, p, n) = (10usize, 4usize, 16usize, 32usize);
    let e = h * p;
    let x = rnd(&mut r, t * e, -2.0, 2.0);
    let dt = rnd(&mut r, t * h, -4.0, 1.0);
    let a: Vec<f32> = rnd(&mut r, h, 0.0, 2.0).iter().map(|v| -v.exp()).collect();
    let bc = rnd(&mut r, t * 2 * n, -1.0, 1.0);
    let mk = |s: usize, len: usize| Scan2Args {
        n_t: len,
        n_h: h,
        n_p: p,
        n_s: n,
        n_g: 1,
        x: &x[s * e..],
        x_stride: e,
        dt: &dt[s * h..],
        dt_stride: h,
        dt_bias: None,
        dt_min: 0.0,
        a: &a,
        b: &bc[s * 2 * n..],
        c: &bc[s * 2 * n + n..],
        bc_stride: 2 * n,
        d: None,
        z: None,
        z_stride: 0,
        y_stride: e,
    };
    let isa = Isa::best();
    let (mut s1, mut y1) = (vec![0f32; h * n * p], vec![0f32; t * e]);
    ssm_scan2_with(isa, &mk(0, t), &mut s1, &mut y1);
    let (mut s2, mut y2) = (vec![0f32; h * n * p], vec![0f32; t * e]);
    for (s, len) in [(0usize, 1usize), (1, 4), (5, 5)] {
        ssm_scan2_with(isa, &mk(s, len), &mut s2, &mut y2[s * e..]);
    }
    assert_eq!(y1, y2);
    assert_eq!(s1, s2);
}

#[test]
fn conv_sweep() {
    let mut r = SplitMix64::new(4);
    for &(t, c, k) in &[(1usize, 1536usize, 4usize), (512, 40, 4), (2, 17, 4), (1, 5, 3), (6, 100, 2), (3, 64, 1)] {
        let xs = c + 11;
        let x = rnd(&mut r, t * xs, -2.0, 2.0);
        let wg = rnd(&mut r, c * k, -1.0, 1.0);
        let b = rnd(&mut r, c, -0.5, 0.5);
        let st0 = rnd(&mut r, (k - 1) * c, -2.0, 2.0);
        let wt = transpose_conv_weights(&wg, c, k);
        for silu in [true, false] {
            let (mut s_ref, mut o_ref) = (st0.clone(), vec![0f32; t * c]);
            ssm_conv_ref(&x, xs, t, c, k, &wg, Some(&b), &mut s_ref, &mut o_ref, c, silu);
            for isa in Isa::available() {
                let a =
                    ConvArgs { x: &x, x_stride: xs, n_t: t, n_c: c, k, w: &wt, bias: Some(&b), silu, out_stride: c };
                let (mut s, mut o) = (st0.clone(), vec![0f32; t * c]);
                ssm_conv_with(isa, &a, &mut s, &mut o);
                assert!(rel(&o, &o_ref) < 1e-5, "{isa:?} t{t} c{c} k{k}");
                let (mut sp, mut op) = (st0.clone(), vec![0f32; t * c]);
                ssm_conv_with(Isa::Portable, &a, &mut sp, &mut op);
                same(&o, &op, &format!("conv {isa:?} t{t} c{c} k{k}"));
                assert_eq!(s, s_ref, "{isa:?} t{t} c{c} k{k}: the state is a copy of inputs");
            }
        }
    }
}

#[test]
fn norms_sweep() {
    let mut r = SplitMix64::new(5);
    for &d in &[1usize, 3, 16, 17, 768, 1000] {
        let x = rnd(&mut r, 4 * d, -5.0, 5.0);
        let w = rnd(&mut r, d, -2.0, 2.0);
        let mut want = vec![0f32; 4 * d];
        for t in 0..4 {
            rms_norm_row_ref(&x[t * d..(t + 1) * d], Some(&w), 1e-6, &mut want[t * d..(t + 1) * d]);
        }
        for isa in Isa::available() {
            let mut got = vec![0f32; 4 * d];
            rms_norm_with(isa, &x, &w, 1e-6, &mut got);
            assert!(rel(&got, &want) < 1e-5, "{isa:?} d{d}");
            let mut port = vec![0f32; 4 * d];
            rms_norm_with(Isa::Portable, &x, &w, 1e-6, &mut port);
            same(&got, &port, &format!("rms_norm {isa:?} d{d}"));
        }
    }
    for &(e, g) in &[(1536usize, 1usize), (8192, 8), (96, 3), (64, 64)] {
        let y = rnd(&mut r, 3 * e, -3.0, 3.0);
        let z = rnd(&mut r, 3 * e, -4.0, 4.0);
        let w = rnd(&mut r, e, 0.5, 1.5);
        let mut want = y.clone();
        gated_group_rms_norm_ref(&mut want, &z, &w, g, 1e-5);
        for isa in Isa::available() {
            let mut got = y.clone();
            mul_silu_with(isa, &mut got, &z);
            group_rms_norm_inplace_with(isa, &mut got, &w, g, 1e-5);
            assert!(rel(&got, &want) < 1e-5, "{isa:?} e{e} g{g}");
            let mut port = y.clone();
            mul_silu_with(Isa::Portable, &mut port, &z);
            group_rms_norm_inplace_with(Isa::Portable, &mut port, &w, g, 1e-5);
            same(&got, &port, &format!("gated group norm {isa:?} e{e} g{g}"));
        }
    }
}

#[test]
fn the_grouped_norm_normalises_each_group_on_its_own() {
    // Two groups with very different scales: each comes out with unit RMS (weight 1).
    let e = 8;
    let mut y: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0, 100.0, 200.0, 300.0, 400.0];
    group_rms_norm_inplace_with(Isa::best(), &mut y, &vec![1.0; e], 2, 0.0);
    for g in 0..2 {
        let ms: f32 = y[g * 4..(g + 1) * 4].iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!((ms - 1.0).abs() < 1e-5, "group {g}: {ms}");
    }
    assert!((y[0] - y[4]).abs() < 1e-5);
}

#[test]
fn vector_math_edges() {
    assert_eq!(softplus_ref(20.5), 20.5);
    assert!((softplus_ref(0.0) - std::f32::consts::LN_2).abs() < 1e-7);
    assert!((silu_ref(0.0)).abs() == 0.0);
    assert!((exp_ref(0.0) - 1.0).abs() == 0.0);
    assert!((exp_ref(1.0) - std::f32::consts::E).abs() < 3e-7);
    assert_eq!(exp_ref(-100.0), 0.0);
    assert!(exp_ref(f32::NAN).is_nan() && softplus_ref(f32::NAN).is_nan() && silu_ref(f32::NAN).is_nan());
    for isa in Isa::available() {
        let mut v = vec![f32::NAN, -100.0, 0.5];
        coil_core::kernels::ops::silu_inplace_with(isa, &mut v);
        assert!(v[0].is_nan() && v[1] <= 0.0 && v[1] > -1e-30, "{isa:?}: {v:?}");
        let mut v = vec![f32::NAN; 20];
        softplus_inplace_with(isa, &mut v);
        assert!(v.iter().all(|x| x.is_nan()), "{isa:?}: NaN must stay NaN");
    }
    for isa in Isa::available() {
        let mut v = vec![-100.0f32, -20.0, -1e-8, 0.0, 1e-8, 19.99, 20.0, 20.01, 60.0, 88.5];
        softplus_inplace_with(isa, &mut v);
        for (i, &x) in [-100.0f32, -20.0, -1e-8, 0.0, 1e-8, 19.99, 20.0, 20.01, 60.0, 88.5].iter().enumerate() {
            let want = if x > 20.0 { x as f64 } else { (x as f64).exp().ln_1p() };
            // Relative 1e-6, or absolute 1e-37 where the result is below the normal f32 range.
            assert!((v[i] as f64 - want).abs() <= 1e-6 * want.abs() + 1e-37, "{isa:?} softplus({x}) = {}", v[i]);
        }
    }
}
