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
pub mod rope;
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

/// Kernel benchmark support: runs `reps` matrix products of a `rows × cols` matrix of type
/// `ty_name` (random values, quantized like a model's) with `tokens` tokens on this build's fastest
/// path, one thread; the caller times it (wasm32 has no clock). Returns a checksum of the outputs
/// (so nothing is optimised away), or None for an unknown type or a bad shape.
pub fn bench_matmul(ty_name: &str, rows: usize, cols: usize, tokens: usize, reps: usize) -> Option<f64> {
    use crate::gguf::GgmlType;
    let ty = GgmlType::from_name(ty_name)?;
    let mut s = 0x2545_f491_u32;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s as f32 / u32::MAX as f32) * 2.0 - 1.0
    };
    let rb = crate::quant::row_bytes(ty, cols)?;
    let mut data = vec![0u8; rb * rows];
    let mut row = vec![0f32; cols];
    for r in 0..rows {
        row.iter_mut().for_each(|v| *v = rnd());
        crate::quant::quantize_row(ty, &row, &mut data[r * rb..(r + 1) * rb]).ok()?;
    }
    let x: Vec<f32> = (0..cols * tokens).map(|_| rnd()).collect();
    // Marked finite as a model load marks F16 weights on wasm.
    let finite = ty == GgmlType::F16 && matmul::f16_all_finite(&data);
    let w = matmul::WeightRef::new(ty, &data, rows, cols).ok()?.with_finite(finite);
    let mut out = vec![0f32; rows * tokens];
    let pool = crate::threads::ThreadPool::new(1);
    let mut sum = 0f64;
    for _ in 0..reps {
        matmul::matmul(&w, &x, tokens, &mut out, &pool);
        sum += out[0] as f64;
    }
    Some(sum)
}
