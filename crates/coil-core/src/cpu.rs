//! What SIMD the running CPU offers. Kernels pick their implementation from this at run time on
//! native (one binary is fast everywhere); on wasm32 it reports what the module was compiled with.

/// Names of the instruction sets available to the kernels, most basic first.
pub fn features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut out: Vec<&'static str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => { $( if std::is_x86_feature_detected!($f) { out.push($f); } )* };
        }
        detect!("sse4.1", "avx", "f16c", "fma", "avx2", "avx512f", "avx512bw", "avx512vnni", "avx512bf16");
    }
    #[cfg(target_arch = "aarch64")]
    {
        out.push("neon");
        if std::arch::is_aarch64_feature_detected!("dotprod") {
            out.push("dotprod");
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    out.push("simd128");
    out
}
