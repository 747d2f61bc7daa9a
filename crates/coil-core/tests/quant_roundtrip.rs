//! dequantize(quantize(x)) stays within each type's expected error, on normal-distributed rows
//! (like real weights) and on a few harder shapes. Errors are RMSE relative to the row's RMS.
//! Mean measured on normal rows (the bounds below are ~1.25x the worst row): Q8_0 0.54%,
//! Q8_1 0.54%, Q8_K 0.69%, Q6_K 1.85%, Q5_K 3.6%, Q5_1 3.8%, Q5_0 4.3%, Q4_K 7.1%, Q4_1 7.8%,
//! Q4_0 8.5%. (Uniform rows are easier: Q4_K 5.4%, Q6_K 1.3%.)

use coil_core::gguf::GgmlType;
use coil_core::quant::{dequantize_row, quantize_row, row_bytes};
use coil_core::util::SplitMix64;

/// Approximately normal values: Box-Muller from the crate's PRNG.
fn normal_row(rng: &mut SplitMix64, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1 = (rng.next_f32() as f64).max(1e-12);
            let u2 = rng.next_f32() as f64;
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32 * std
        })
        .collect()
}

fn rel_rmse(ty: GgmlType, x: &[f32]) -> f64 {
    let mut q = vec![0u8; row_bytes(ty, x.len()).unwrap()];
    quantize_row(ty, x, &mut q).unwrap();
    let mut y = vec![0f32; x.len()];
    dequantize_row(ty, &q, &mut y).unwrap();
    let err: f64 = x.iter().zip(&y).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>() / x.len() as f64;
    let rms: f64 = x.iter().map(|&a| (a as f64).powi(2)).sum::<f64>() / x.len() as f64;
    (err / rms).sqrt()
}

/// Worst relative RMSE allowed on normal rows: about 1.25x the worst measured.
const BOUNDS: [(GgmlType, f64); 10] = [
    (GgmlType::Q8_0, 0.007),
    (GgmlType::Q8_1, 0.007),
    (GgmlType::Q8_K, 0.009),
    (GgmlType::Q6_K, 0.026),
    (GgmlType::Q5_K, 0.046),
    (GgmlType::Q5_1, 0.048),
    (GgmlType::Q5_0, 0.054),
    (GgmlType::Q4_K, 0.090),
    (GgmlType::Q4_1, 0.098),
    (GgmlType::Q4_0, 0.105),
];

#[test]
fn normal_rows_stay_within_bounds() {
    let mut rng = SplitMix64::new(42);
    let rows: Vec<Vec<f32>> = (0..16).map(|i| normal_row(&mut rng, 4096, [0.02f32, 1.0, 30.0, 1e-3][i % 4])).collect();
    let mut report = String::new();
    let mut bad = Vec::new();
    for (ty, bound) in BOUNDS {
        let worst = rows.iter().map(|r| rel_rmse(ty, r)).fold(0.0, f64::max);
        let mean = rows.iter().map(|r| rel_rmse(ty, r)).sum::<f64>() / rows.len() as f64;
        report +=
            &format!("{ty}: mean {:.3}% worst {:.3}% (bound {:.2}%)\n", mean * 100.0, worst * 100.0, bound * 100.0);
        if worst >= bound {
            bad.push(ty);
        }
    }
    println!("{report}");
    assert!(bad.is_empty(), "over the bound: {bad:?}\n{report}");
}

#[test]
fn hard_rows_are_still_reasonable() {
    let mut rng = SplitMix64::new(7);
    let n = 1024;
    let mut outliers = normal_row(&mut rng, n, 0.02);
    for i in (0..n).step_by(97) {
        outliers[i] *= 30.0;
    }
    let offset: Vec<f32> = normal_row(&mut rng, n, 0.02).iter().map(|v| v + 0.1).collect();
    let uniform: Vec<f32> = (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
    for (name, row) in [("outliers", &outliers), ("offset", &offset), ("uniform", &uniform)] {
        for (ty, bound) in BOUNDS {
            // Outliers and offsets cost the symmetric / coarse types more: allow 4x.
            let e = rel_rmse(ty, row);
            println!("{name} {ty}: {:.3}%", e * 100.0);
            assert!(e < 4.0 * bound, "{ty} on {name}: relative RMSE {e}");
        }
    }
}

#[test]
fn exact_values_survive() {
    // Zeros stay zero, and values on the quantization grid come back exactly.
    for (ty, _) in BOUNDS {
        let n = ty.block_size() as usize * 2;
        let zeros = vec![0f32; n];
        assert_eq!(rel_rmse_abs(ty, &zeros), 0.0, "{ty}");
    }
    // Q8_0 with a block max of 127: integers are exact.
    let x: Vec<f32> = (0..64).map(|i| ((i * 37) % 255) as f32 - 127.0).collect();
    let mut q = vec![0u8; row_bytes(GgmlType::Q8_0, 64).unwrap()];
    quantize_row(GgmlType::Q8_0, &x, &mut q).unwrap();
    let mut y = vec![0f32; 64];
    dequantize_row(GgmlType::Q8_0, &q, &mut y).unwrap();
    assert_eq!(x, y);
}

fn rel_rmse_abs(ty: GgmlType, x: &[f32]) -> f64 {
    let mut q = vec![0u8; row_bytes(ty, x.len()).unwrap()];
    quantize_row(ty, x, &mut q).unwrap();
    let mut y = vec![0f32; x.len()];
    dequantize_row(ty, &q, &mut y).unwrap();
    x.iter().zip(&y).map(|(&a, &b)| (a as f64 - b as f64).abs()).sum()
}
