//! Matrix-product throughput per weight type, path, token count and thread count.
//!
//! `cargo run --release -p coil-core --example bench_matmul [-- options]`
//!
//! Options: `--types F16,Q8_0,Q4_K` (default: all), `--paths avx512,avx2` (default: all but scalar),
//! `--shapes 3072x768,768x1536,50280x768` (rows x cols; default: the mamba-130m shapes),
//! `--tokens 1,128`, `--threads 1,2`, `--secs 0.3` (time per measurement), `--bandwidth` (print only
//! the streaming read bandwidth per thread count, JSON, and exit), `--hot` (n_tokens = 1
//! with one weight copy, i.e. cache-resident when it fits; by default generation is measured with
//! enough copies of the matrix (1 GiB) to stream from DRAM, as in real decoding).
//!
//! Prints, for n_tokens = 1, the weight bytes read per second (GB/s, 1e9), and for n_tokens > 1
//! the arithmetic rate (GFLOP/s = 2·rows·cols·tokens / time, 1e9).

use coil_core::gguf::GgmlType;
use coil_core::kernels::matmul::{matmul_paths, WeightRef, MATMUL_TYPES};
use coil_core::quant;
use coil_core::threads::ThreadPool;
use std::time::Instant;

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).map(|s| s.as_str())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let types: Vec<GgmlType> = match arg(&args, "--types") {
        Some(s) => s.split(',').map(|t| GgmlType::from_name(t).expect("type name")).collect(),
        None => MATMUL_TYPES.to_vec(),
    };
    let want_paths: Option<Vec<String>> = arg(&args, "--paths").map(|s| s.split(',').map(String::from).collect());
    let shapes: Vec<(usize, usize)> = arg(&args, "--shapes")
        .unwrap_or("3072x768,768x1536,50280x768")
        .split(',')
        .map(|s| {
            let (r, c) = s.split_once('x').expect("RxC");
            (r.parse().unwrap(), c.parse().unwrap())
        })
        .collect();
    let tokens: Vec<usize> = arg(&args, "--tokens").unwrap_or("1,128").split(',').map(|s| s.parse().unwrap()).collect();
    let threads: Vec<usize> = arg(&args, "--threads").unwrap_or("1,2").split(',').map(|s| s.parse().unwrap()).collect();
    let secs: f64 = arg(&args, "--secs").unwrap_or("0.3").parse().unwrap();
    let hot = args.iter().any(|a| a == "--hot");

    let paths: Vec<_> = matmul_paths()
        .into_iter()
        .filter(|p| match &want_paths {
            Some(w) => w.iter().any(|n| n == p.name()),
            None => p.name() != "scalar",
        })
        .collect();
    let pools: Vec<(usize, ThreadPool)> = threads.iter().map(|&n| (n, ThreadPool::new(n))).collect();
    if args.iter().any(|a| a == "--bandwidth") {
        // Only the read bandwidth, as JSON (bench/models.mjs divides generation by it).
        let bw: Vec<String> = pools.iter().map(|(n, p)| format!("\"{n}\": {:.2}", read_bandwidth(p, *n))).collect();
        println!("{{{}}}", bw.join(", "));
        return;
    }
    println!("cpu features: {:?}", coil_core::cpu::features());
    for (n, pool) in &pools {
        println!("read bandwidth, {n} thread(s): {:.1} GB/s", read_bandwidth(pool, *n));
    }
    // Thread pool hand-off: an empty job, back to back (workers spinning), and after a pause
    // (workers parked).
    for (n, pool) in &pools {
        if *n < 2 {
            continue;
        }
        let reps = 20000;
        let t0 = Instant::now();
        for _ in 0..reps {
            pool.run(*n, |_| {});
        }
        let hot = t0.elapsed().as_secs_f64() / reps as f64;
        let mut cold = f64::MAX;
        for _ in 0..5 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let t = Instant::now();
            pool.run(*n, |_| {});
            cold = cold.min(t.elapsed().as_secs_f64());
        }
        // Tasks of 20 us each, one per thread: the overhead is the time beyond 20 us.
        let spin = |_| {
            let t = Instant::now();
            while t.elapsed().as_secs_f64() < 20e-6 {
                std::hint::spin_loop();
            }
        };
        let mut busy = f64::MAX;
        for _ in 0..2000 {
            let t = Instant::now();
            pool.run(*n, spin);
            busy = busy.min(t.elapsed().as_secs_f64());
        }
        // Share of the tasks the workers take in 16-task jobs of ~2 us tasks (the caller does the
        // rest): 1/n when all threads are running.
        let on_caller = std::sync::atomic::AtomicUsize::new(0);
        let main_id = std::thread::current().id();
        for _ in 0..2000 {
            pool.run(16, |_| {
                let t = Instant::now();
                while t.elapsed().as_secs_f64() < 2e-6 {
                    std::hint::spin_loop();
                }
                if std::thread::current().id() == main_id {
                    on_caller.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        println!(
            "pool of {n}: workers ran {:.0}% of the tasks of 16-task jobs",
            100.0 - on_caller.load(std::sync::atomic::Ordering::Relaxed) as f64 / (2000.0 * 16.0) * 100.0
        );
        println!(
            "pool of {n}: empty job {:.2} us back to back, {:.1} us after 20 ms idle; {n} x 20 us tasks take {:.1} us",
            hot * 1e6,
            cold * 1e6,
            busy * 1e6
        );
    }
    println!(
        "{:<6} {:>11} {:>6} {:>8} {:>3} {:>12} {:>10}",
        "type", "shape", "tokens", "path", "thr", "time/call", "rate"
    );
    for &ty in &types {
        for &(rows, cols) in &shapes {
            let bs = ty.block_size() as usize;
            if cols % bs != 0 {
                continue;
            }
            let rb = quant::row_bytes(ty, cols).unwrap();
            let bytes = rb * rows;
            // Quantize one random matrix, replicate it so generation streams from memory.
            let mut rng = coil_core::util::SplitMix64::new(7);
            let vals: Vec<f32> = (0..rows * cols).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
            let mut one = vec![0u8; bytes];
            for r in 0..rows {
                quant::quantize_row(ty, &vals[r * cols..(r + 1) * cols], &mut one[r * rb..(r + 1) * rb]).unwrap();
            }
            drop(vals);
            // 1 GiB of copies: more than any last-level cache (some of these VMs report 480 MiB of L3, which
            // 256 MiB of copies fitted in, and then measured the cache instead of memory).
            let copies = if hot { 1 } else { (1024usize << 20).div_ceil(bytes).clamp(1, 1024) };
            let mut all = Vec::with_capacity(bytes * copies);
            for _ in 0..copies {
                all.extend_from_slice(&one);
            }
            drop(one);
            for &nt in &tokens {
                let x: Vec<f32> = (0..nt * cols).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
                let mut out = vec![0f32; nt * rows];
                for p in &paths {
                    for (nthr, pool) in &pools {
                        let n_copies = if nt == 1 { copies } else { 1 };
                        let ws: Vec<WeightRef> = (0..n_copies)
                            .map(|c| WeightRef::new(ty, &all[c * bytes..(c + 1) * bytes], rows, cols).unwrap())
                            .collect();
                        // Warm up, then time.
                        p.run(&ws[0], &x, nt, &mut out, pool);
                        let mut best = f64::MAX;
                        let start = Instant::now();
                        let mut calls = 0usize;
                        while start.elapsed().as_secs_f64() < secs || calls < 3 {
                            let t0 = Instant::now();
                            let reps = n_copies.max(1);
                            for w in &ws {
                                p.run(w, &x, nt, &mut out, pool);
                            }
                            let dt = t0.elapsed().as_secs_f64() / reps as f64;
                            best = best.min(dt);
                            calls += reps;
                        }
                        let rate = if nt == 1 {
                            format!("{:7.1} GB/s", bytes as f64 / best / 1e9)
                        } else {
                            format!("{:7.1} GFLOP/s", 2.0 * (rows * cols * nt) as f64 / best / 1e9)
                        };
                        println!(
                            "{:<6} {:>11} {:>6} {:>8} {:>3} {:>9.1} us {}",
                            ty.name(),
                            format!("{rows}x{cols}"),
                            nt,
                            p.used_for(ty),
                            nthr,
                            best * 1e6,
                            rate
                        );
                    }
                }
            }
        }
    }
}

/// Streaming read bandwidth with `n` threads (GB/s, 1e9): each thread sums its contiguous share of a
/// 1 GiB buffer as u64 words (vectorised by the compiler; far more arithmetic headroom than memory),
/// best of 10 passes. The "limit" the generation rates above are compared with.
fn read_bandwidth(pool: &ThreadPool, n: usize) -> f64 {
    let words = (1usize << 30) / 8;
    let buf: Vec<u64> = (0..words as u64).collect();
    let per = words.div_ceil(n);
    let sink = std::sync::atomic::AtomicU64::new(0);
    let mut best = f64::MAX;
    for _ in 0..10 {
        let t0 = Instant::now();
        pool.run(n, |i| {
            let part = &buf[(i * per).min(words)..((i + 1) * per).min(words)];
            let s = part.iter().fold(0u64, |a, &b| a.wrapping_add(b));
            sink.fetch_add(s, std::sync::atomic::Ordering::Relaxed);
        });
        best = best.min(t0.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink.load(std::sync::atomic::Ordering::Relaxed));
    (words * 8) as f64 / best / 1e9
}
