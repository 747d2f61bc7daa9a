//! Prompt-processing and generation speed of a model.
//!
//! ```text
//! cargo run --release -p coil-core --example bench_model -- --arch ARCH [--pp 512] [--tg 128]
//!     [--threads N] [--type f16|f32|q8_0|q4_0|q4_k|...] [--reps 3] [--gguf FILE] [--write FILE] [--seqs 1]
//!     [--vocab VOCAB.gguf] [--kv-type f16|f32]
//! ```
//! Without `--gguf`, builds a random-weight model of the mamba-130m shape (d_model 768, 24 layers,
//! d_state 16), the mamba2-130m shape (d_state 128, head_dim 64) or a small Jamba
//! (`SynthSpec::jamba_bench`: d_model 1024, 8 layers, attention at 2 and 6, 8 experts top-2 on
//! the odd layers, vocabulary 32000) — or, for `--arch granite-4.0-h-1b | lfm2-1.2b |
//! nemotron-h-9b-slice | falcon-h1-0.5b`, a hybrid of that shape (`HybridSpec`) —, writes it to a
//! temporary GGUF
//! (or to `--write FILE`, e.g. to run llama.cpp's `llama-bench` on the same file) and maps it.
//! pp: one batch of `--pp` random tokens from an empty state (logits for the last token only),
//! best of `--reps`. tg: `--tg` single-token steps (logits every step), best of `--reps`.
//! `--seqs S` > 1 also measures S sequences decoding together (one token each per step).

use std::sync::Arc;
use std::time::Instant;

use coil_core::context::{Batch, Context, ContextParams};
use coil_core::gguf::GgmlType;
use coil_core::model::synth::{synth_gguf, synth_hybrid_gguf, HybridSpec, SynthSpec};
use coil_core::model::{Arch, Model};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arch_name = arg::<String>(&args, "--arch").unwrap_or_else(|| "mamba".into());
    let hybrid = HybridSpec::by_name(&arch_name);
    let arch = match arch_name.as_str() {
        "mamba" => Arch::Mamba,
        "mamba2" => Arch::Mamba2,
        "jamba" => Arch::Jamba,
        _ if hybrid.is_some() => hybrid.as_ref().map(|h| h.arch).unwrap(),
        a => {
            eprintln!(
                "unknown --arch {a} (mamba | mamba2 | jamba | granite-4.0-h-1b | lfm2-1.2b | nemotron-h-9b-slice | falcon-h1-0.5b)"
            );
            std::process::exit(2);
        }
    };
    let pp: usize = arg(&args, "--pp").unwrap_or(512);
    let tg: usize = arg(&args, "--tg").unwrap_or(128);
    let threads: usize = arg(&args, "--threads").unwrap_or(0);
    let reps: usize = arg(&args, "--reps").unwrap_or(3).max(1);
    let seqs: u32 = arg(&args, "--seqs").unwrap_or(1).max(1);
    let ty_name: String = arg(&args, "--type").unwrap_or_else(|| "f16".into());
    let ty = GgmlType::from_name(&ty_name).unwrap_or_else(|| {
        eprintln!("unknown --type {ty_name}");
        std::process::exit(2)
    });

    let (path, _tmp) = match arg::<String>(&args, "--gguf") {
        Some(p) => (std::path::PathBuf::from(p), None),
        None => {
            let mut spec = match arch {
                Arch::Mamba => SynthSpec::mamba_130m(),
                Arch::Mamba2 => SynthSpec::mamba2_130m(),
                Arch::Jamba => SynthSpec::jamba_bench(),
                _ => SynthSpec::mamba2_130m(), // unused: the hybrid spec below is
            };
            spec.matrix_type = ty;
            let mut hybrid = hybrid.clone();
            if let Some(h) = hybrid.as_mut() {
                h.matrix_type = ty;
            }
            // `--vocab FILE.gguf`: take that file's tokenizer (llama.cpp-based peers refuse a
            // model without one), with the embedding sized to its token count.
            let vocab = arg::<String>(&args, "--vocab").map(|v| {
                let b = std::fs::read(&v).expect("reading --vocab");
                coil_core::gguf::GgufFile::parse(&b, b.len() as u64).expect("parsing --vocab")
            });
            if let Some(v) = &vocab {
                spec.n_vocab = v.get_array("tokenizer.ggml.tokens").map(|a| a.len()).expect("--vocab has no tokens");
                if let Some(h) = hybrid.as_mut() {
                    h.n_vocab = spec.n_vocab;
                }
            }
            let t0 = Instant::now();
            let mut bytes = match &hybrid {
                Some(h) => synth_hybrid_gguf(h).expect("building the model"),
                None => synth_gguf(&spec).expect("building the model"),
            };
            if let Some(v) = &vocab {
                let f = coil_core::gguf::GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
                let mut w = coil_core::gguf::GgufWriter::from_file(&f, &bytes).unwrap();
                for (k, val) in v.metadata.iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
                    w.add_metadata(k.clone(), val.clone());
                }
                bytes = w.to_bytes().unwrap();
            }
            let p = match arg::<String>(&args, "--write") {
                Some(p) => std::path::PathBuf::from(p),
                None => std::env::temp_dir().join(format!(
                    "coil-bench-{}-{}-{}.gguf",
                    arch.name(),
                    ty_name,
                    std::process::id()
                )),
            };
            std::fs::write(&p, &bytes).expect("writing the model");
            eprintln!(
                "built a random {}-bench-shaped model ({ty}, {:.0} MB) in {:.1} s: {}",
                arch.name(),
                bytes.len() as f64 / 1e6,
                t0.elapsed().as_secs_f64(),
                p.display()
            );
            let keep = arg::<String>(&args, "--write").is_some();
            (p.clone(), if keep { None } else { Some(TempFile(p)) })
        }
    };

    let model = Arc::new(Model::open(&path).expect("loading the model"));
    let hp = model.hparams().unwrap().clone();
    let kv_type = coil_core::context::KvType::parse(&arg::<String>(&args, "--kv-type").unwrap_or_else(|| "f16".into()))
        .unwrap_or_else(|e| {
            eprintln!("{}", e.message);
            std::process::exit(2)
        });
    let n_ctx = (pp.max(tg) + 64) as u32;
    let params = ContextParams { n_seq_max: seqs, n_threads: threads, n_ubatch: 512, n_ctx, kv_type };
    let mut ctx = Context::new(model.clone(), params).unwrap();
    println!(
        "model: {} d_model {} layers {} d_inner {} d_state {} vocab {} | threads {} | isa {} | matmul {} | state {:.2} MiB/seq",
        hp.arch.name(),
        hp.n_embd,
        hp.n_layer,
        hp.d_inner,
        hp.d_state,
        hp.n_vocab,
        ctx.n_threads(),
        coil_core::kernels::ops::Isa::best().name(),
        coil_core::kernels::matmul::best_path().name(),
        ctx.state_bytes_per_sequence() as f64 / (1 << 20) as f64
    );

    let mut rng = coil_core::util::SplitMix64::new(42);
    let n_vocab = hp.n_vocab as u64;
    let prompt: Vec<u32> = (0..pp).map(|_| rng.below(n_vocab) as u32).collect();

    // Warm-up (page in the weights, grow the scratch buffers).
    let warm: Vec<u32> = if pp > 0 { prompt[..pp.min(64)].to_vec() } else { vec![1] };
    ctx.evaluate(&Batch::for_sequence(0, &warm, false)).unwrap();
    coil_core::model::graph::profile::take(true);

    if pp > 0 {
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            ctx.clear(0).unwrap();
            let t = Instant::now();
            ctx.evaluate(&Batch::for_sequence(0, &prompt, false)).unwrap();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("pp{pp}: {:8.1} tokens/s ({:.1} ms)", pp as f64 / best, best * 1e3);
        print_profile(reps);
    }
    if tg > 0 {
        let mut best = f64::INFINITY;
        let mut logits = coil_core::context::Logits::default();
        for _ in 0..reps {
            ctx.clear(0).unwrap();
            let mut tok = prompt.first().copied().unwrap_or(1);
            let t = Instant::now();
            for _ in 0..tg {
                ctx.evaluate_into(&Batch::for_sequence(0, &[tok], true), &mut logits).unwrap();
                let row = logits.row(0);
                tok = (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0) as u32;
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("tg{tg}: {:8.1} tokens/s ({:.2} ms/token)", tg as f64 / best, best * 1e3 / tg as f64);
        print_profile(reps * tg);
    }
    if seqs > 1 && tg > 0 {
        let mut best = f64::INFINITY;
        let mut logits = coil_core::context::Logits::default();
        for _ in 0..reps {
            for s in 0..seqs {
                ctx.clear(s).unwrap();
            }
            let mut toks: Vec<u32> = (0..seqs).map(|s| prompt.get(s as usize).copied().unwrap_or(1)).collect();
            let t = Instant::now();
            for _ in 0..tg {
                let mut b = Batch::new();
                for s in 0..seqs {
                    b.push(toks[s as usize], s, true);
                }
                ctx.evaluate_into(&b, &mut logits).unwrap();
                for (s, tok) in toks.iter_mut().enumerate() {
                    let row = logits.row(s);
                    *tok = (0..row.len()).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap_or(0) as u32;
                }
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "tg{tg} x {seqs} sequences: {:8.1} tokens/s in total ({:.2} ms/step)",
            (tg * seqs as usize) as f64 / best,
            best * 1e3 / tg as f64
        );
    }
}

/// With COIL_PROFILE=1: time per op, per evaluate call, averaged over `calls`.
fn print_profile(calls: usize) {
    let p = coil_core::model::graph::profile::take(true);
    let total: f64 = p.iter().map(|x| x.1).sum();
    if total == 0.0 {
        return;
    }
    let parts: Vec<String> = p
        .iter()
        .filter(|x| x.1 > 0.0)
        .map(|(n, s)| format!("{n} {:.2} ms ({:.0}%)", s * 1e3 / calls as f64, 100.0 * s / total))
        .collect();
    println!("    per call: {}", parts.join(", "));
}

struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
