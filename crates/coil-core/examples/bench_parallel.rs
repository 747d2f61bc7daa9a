//! Decode throughput with n sequences stepped in one batch vs one: where the time goes.
//!   cargo run --release -p coil-core --example bench_parallel -- model.gguf [threads] [steps]
use std::sync::Arc;
use std::time::Instant;

use coil_core::context::{Batch, Context, ContextParams};
use coil_core::model::graph::profile;
use coil_core::model::Model;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = Arc::new(Model::open(std::path::Path::new(&args[1])).unwrap());
    let threads: usize = args.get(2).map_or(2, |s| s.parse().unwrap());
    let steps: usize = args.get(3).map_or(32, |s| s.parse().unwrap());
    for n in [1u32, 2, 4, 8] {
        let mut c = Context::new(
            model.clone(),
            ContextParams { n_seq_max: n, n_threads: threads, n_ubatch: 512, ..ContextParams::default() },
        )
        .unwrap();
        let step = |c: &mut Context, t: u32| {
            let mut b = Batch::new();
            for s in 0..n {
                b.push(t + s, s, true);
            }
            c.evaluate(&b).unwrap();
        };
        for t in 0..4 {
            step(&mut c, t);
        }
        profile::take(true);
        let t0 = Instant::now();
        for t in 0..steps as u32 {
            step(&mut c, 100 + t);
        }
        let dt = t0.elapsed().as_secs_f64();
        let prof: Vec<String> =
            profile::take(true).iter().map(|(k, v)| format!("{k} {:.2}", v * 1e3 / steps as f64)).collect();
        println!(
            "{n} seqs: {:.1} t/s aggregate, {:.2} ms/step | ms/step: {}",
            (n as usize * steps) as f64 / dt,
            dt * 1e3 / steps as f64,
            prof.join(", ")
        );
    }
}
