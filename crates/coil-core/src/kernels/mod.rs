//! Compute kernels. Each kernel has a plain scalar reference (`*_ref`) and SIMD paths per ISA:
//! AVX2+FMA and AVX-512 on x86-64 and NEON on aarch64 (chosen at run time, so one native binary is
//! fast on every CPU), and simd128 on wasm32 (chosen at compile time). Tests compare every path the
//! machine can run against the reference; `selfcheck` lets the JS test suites do the same on each
//! target through the bindings.

pub mod attn;
pub mod conv;
pub mod dot;
pub mod matmul;
pub mod norm;
pub mod ops;
pub mod ssm;
pub mod vecdot;

/// Runs every kernel path available here against its scalar reference on fixed pseudo-random
/// inputs; returns (path name, max relative difference) per path.
pub fn selfcheck() -> Vec<(&'static str, f32)> {
    let mut out = Vec::new();
    let mut rng = crate::util::SplitMix64::new(0x5eed);
    for &n in &[1usize, 7, 16, 33, 64, 255, 1024, 4099] {
        let a: Vec<f32> = (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
        let r = dot::dot_f32_ref(&a, &b) as f64;
        let scale = a.iter().zip(&b).map(|(x, y)| (x * y).abs() as f64).sum::<f64>().max(1e-30);
        for (name, f) in dot::dot_f32_paths() {
            let d = ((f(&a, &b) as f64 - r).abs() / scale) as f32;
            match out.iter_mut().find(|(p, _)| *p == name) {
                Some((_, m)) => *m = f32::max(*m, d),
                None => out.push((name, d)),
            }
        }
    }
    ops::selfcheck(&mut out);
    norm::selfcheck(&mut out);
    conv::selfcheck(&mut out);
    ssm::selfcheck(&mut out);
    attn::selfcheck(&mut out);
    matmul::selfcheck(&mut out);
    out
}

/// `selfcheck` as JSON, `[{"path":"matmul/avx2/Q8_0","max_rel_diff":1e-7},...]`, for the bindings.
pub fn selfcheck_json() -> String {
    let items: Vec<String> = selfcheck()
        .into_iter()
        .map(|(p, d)| format!("{{\"path\":\"{p}\",\"max_rel_diff\":{}}}", if d.is_finite() { d } else { f32::MAX }))
        .collect();
    format!("[{}]", items.join(","))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_path_matches_the_reference() {
        let res = super::selfcheck();
        assert!(res.iter().any(|(n, _)| *n == "dot/scalar"));
        for (name, d) in res {
            assert!(d < 1e-5, "{name}: relative difference {d}");
        }
    }
}
