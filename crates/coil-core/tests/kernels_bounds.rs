//! No kernel reads past the end of the weight data: the matrix is the last bytes of a file mapping
//! whose next page lies beyond the end of the file, so any such read is a SIGBUS (the test process
//! dies). Weights come from GGUF mappings in real use, so this is the layout that matters.
#![cfg(target_os = "linux")]

use coil_core::gguf::GgmlType;
use coil_core::kernels::matmul::{get_rows, matmul_exact, matmul_paths, WeightRef, MATMUL_TYPES};
use coil_core::quant;
use coil_core::threads::ThreadPool;
use std::io::Write;

const PAGE: usize = 4096;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[test]
fn kernels_never_read_past_the_end_of_the_weights() {
    let pool = ThreadPool::new(2);
    let dir = std::env::temp_dir().join(format!("coil-bounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for &ty in &MATMUL_TYPES {
        // Row lengths with partial groups too (32-value types: 5 and 9 blocks).
        let cols_list: &[usize] = match ty.block_size() {
            1 => &[64, 75],
            32 => &[256, 160, 288],
            _ => &[256, 768],
        };
        for &n_cols in cols_list {
            let rb = quant::row_bytes(ty, n_cols).unwrap();
            // Whole pages of rows, at least 3 rows.
            let unit = PAGE / gcd(PAGE, rb);
            let n_rows = unit * 3usize.div_ceil(unit);
            let size = n_rows * rb;
            assert_eq!(size % PAGE, 0);
            let mut rng = coil_core::util::SplitMix64::new(n_cols as u64);
            let mut data = vec![0u8; size];
            for r in 0..n_rows {
                let v: Vec<f32> = (0..n_cols).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
                quant::quantize_row(ty, &v, &mut data[r * rb..(r + 1) * rb]).unwrap();
            }
            let path = dir.join(format!("{}-{n_cols}.bin", ty.name()));
            std::fs::File::create(&path).unwrap().write_all(&data).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            // One page more than the file: touching it raises SIGBUS.
            let map = unsafe { memmap2::MmapOptions::new().len(size + PAGE).map(&file) }.unwrap();
            let w = WeightRef::new(ty, &map[..size], n_rows, n_cols).unwrap();
            for n_tokens in [1usize, 3, 20] {
                let x: Vec<f32> = (0..n_tokens * n_cols).map(|_| rng.next_f32() - 0.5).collect();
                let mut want = vec![0f32; n_rows * n_tokens];
                matmul_exact(&w, &x, n_tokens, &mut want);
                for p in matmul_paths() {
                    let mut got = vec![0f32; n_rows * n_tokens];
                    p.run(&w, &x, n_tokens, &mut got, &pool);
                    for (a, b) in got.iter().zip(&want) {
                        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{ty} {} {n_cols}: {a} vs {b}", p.name());
                    }
                }
            }
            let mut row = vec![0f32; n_cols];
            get_rows(&w, &[n_rows as u32 - 1], &mut row).unwrap();
            drop(map);
            std::fs::remove_file(&path).ok();
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    let _ = GgmlType::F32;
}
