//! Contexts with several sequences: batching must not change results. Several sequences of
//! different lengths in one evaluate = each alone; token-by-token = whole prompt; micro-batch size
//! and thread count do not matter; clear() resets; logits come back only where asked, in batch
//! order.

use std::path::Path;
use std::sync::Arc;

use coil_core::context::{Batch, Context, ContextParams, Logits};
use coil_core::gguf::GgmlType;
use coil_core::model::synth::{synth_gguf, synth_hybrid_gguf, HybridSpec, SynthSpec};
use coil_core::model::{Arch, Model};
use coil_core::util::SplitMix64;

/// The models every test runs on: the repository's tiny GGUFs and synthetic ones covering the
/// kernel shapes (vector tails, Mamba-2 with 128-state heads of 64, Falcon's dt/B/C norms).
fn models() -> Vec<(String, Arc<Model>)> {
    let mut v = Vec::new();
    for name in [
        "tiny-mamba.gguf",
        "tiny-mamba2.gguf",
        "tiny-jamba.gguf",
        "tiny-granite-hybrid.gguf",
        "tiny-nemotron-h.gguf",
        "tiny-falcon-h1.gguf",
        "tiny-lfm2.gguf",
    ] {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name);
        v.push((name.to_string(), Arc::new(Model::open(&p).unwrap())));
    }
    let mut m1 = SynthSpec::tiny(Arch::Mamba);
    m1.d_inner = 72; // not a multiple of 16: vector tails
    m1.dt_b_c_rms = true;
    m1.tied = true;
    let mut m2 = SynthSpec::tiny(Arch::Mamba2);
    m2.d_inner = 128;
    m2.head_dim = 64;
    m2.d_state = 128;
    m2.n_group = 1;
    let mut m3 = SynthSpec::tiny(Arch::Mamba2);
    m3.d_inner = 96;
    m3.head_dim = 24; // 4 heads of 24: vector tails in the scan
    m3.n_group = 2;
    m3.d_state = 12;
    m3.matrix_type = GgmlType::Q8_0;
    m3.n_embd = 64;
    // Jamba with KV heads of 2 and 4 (GQA groups of 2 and 1), head_dim 8 < a vector on AVX-512.
    let mut m4 = SynthSpec::tiny(Arch::Jamba);
    m4.matrix_type = GgmlType::Q8_0;
    for (n, s) in [
        ("synth-mamba-falcon", m1),
        ("synth-mamba2-p64-n128", m2),
        ("synth-mamba2-tails-q8", m3),
        ("synth-jamba-q8", m4),
    ] {
        v.push((n.to_string(), Arc::new(Model::from_gguf_bytes(&synth_gguf(&s).unwrap()).unwrap())));
    }
    // The benchmark shapes of the hybrids at test size: dense FFNs (Granite, Nemotron-H's ReLU²
    // MLP, LFM2), Mamba-2 heads of 24 (vector tails), attention heads of 12.
    for name in ["granite-4.0-h-1b", "lfm2-1.2b", "nemotron-h-9b-slice", "falcon-h1-0.5b"] {
        let s = HybridSpec::by_name(name).unwrap().shrunk();
        v.push((format!("synth-{name}"), Arc::new(Model::from_gguf_bytes(&synth_hybrid_gguf(&s).unwrap()).unwrap())));
    }
    v
}

fn ctx(m: &Arc<Model>, n_seq: u32, threads: usize, ubatch: usize) -> Context {
    Context::new(
        m.clone(),
        ContextParams { n_seq_max: n_seq, n_threads: threads, n_ubatch: ubatch, ..ContextParams::default() },
    )
    .unwrap()
}

fn tokens(rng: &mut SplitMix64, n: usize, n_vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(n_vocab as u64) as u32).collect()
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / scale).fold(0f32, f32::max)
}

fn all_rows(l: &Logits) -> Vec<Vec<f32>> {
    (0..l.len()).map(|i| l.row(i).to_vec()).collect()
}

#[test]
fn several_sequences_in_one_batch_equal_each_alone() {
    for (name, m) in models() {
        let nv = m.hparams().unwrap().n_vocab;
        let mut rng = SplitMix64::new(11);
        let lens = [5usize, 1, 9, 3];
        let prompts: Vec<Vec<u32>> = lens.iter().map(|&n| tokens(&mut rng, n, nv)).collect();
        // Each alone, in its own fresh context.
        let alone: Vec<Vec<Vec<f32>>> = prompts
            .iter()
            .map(|p| all_rows(&ctx(&m, 1, 2, 512).evaluate(&Batch::for_sequence(0, p, true)).unwrap()))
            .collect();
        // All together, interleaved round-robin, in one evaluate.
        let mut c = ctx(&m, 4, 2, 512);
        let mut b = Batch::new();
        let mut who = Vec::new();
        for i in 0..*lens.iter().max().unwrap() {
            for (s, p) in prompts.iter().enumerate() {
                if i < p.len() {
                    b.push(p[i], s as u32, true);
                    who.push((s, i));
                }
            }
        }
        let l = c.evaluate(&b).unwrap();
        assert_eq!(l.len(), b.len());
        for (row, &(s, i)) in who.iter().enumerate() {
            let d = rel(l.row(row), &alone[s][i]);
            assert!(d <= 1e-5, "{name}: seq {s} token {i}: {d}");
        }
        for (s, p) in prompts.iter().enumerate() {
            assert_eq!(c.position(s as u32).unwrap(), p.len() as u32);
        }
        // Continue every sequence by one more token, together, and compare with alone again.
        let next = tokens(&mut rng, 4, nv);
        let mut b2 = Batch::new();
        for (s, &t) in next.iter().enumerate().rev() {
            b2.push(t, s as u32, true);
        }
        let l2 = c.evaluate(&b2).unwrap();
        for (row, s) in (0..4).rev().enumerate() {
            let mut full = prompts[s].clone();
            full.push(next[s]);
            let a = ctx(&m, 1, 1, 512).evaluate(&Batch::for_sequence(0, &full, false)).unwrap();
            let d = rel(l2.row(row), a.row(0));
            assert!(d <= 1e-5, "{name}: continued seq {s}: {d}");
        }
    }
}

#[test]
fn token_by_token_equals_whole_prompt() {
    for (name, m) in models() {
        let nv = m.hparams().unwrap().n_vocab;
        let mut rng = SplitMix64::new(12);
        let p = tokens(&mut rng, 23, nv);
        let whole = all_rows(&ctx(&m, 1, 2, 512).evaluate(&Batch::for_sequence(0, &p, true)).unwrap());
        // The logits are finite and spread (NaNs would compare equal in the checks below).
        for row in &whole {
            assert!(row.iter().all(|v| v.is_finite()), "{name}: non-finite logits");
            let mean = row.iter().sum::<f32>() / row.len() as f32;
            let sd = (row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / row.len() as f32).sqrt();
            assert!(sd > 0.05, "{name}: logits barely vary (sd {sd})");
        }
        let mut c = ctx(&m, 1, 2, 512);
        for (i, &t) in p.iter().enumerate() {
            let l = c.evaluate(&Batch::for_sequence(0, &[t], true)).unwrap();
            let d = rel(l.row(0), &whole[i]);
            assert!(d <= 1e-5, "{name}: token {i}: {d}");
        }
        // Uneven chunks.
        let mut c = ctx(&m, 1, 2, 512);
        let mut s = 0;
        for n in [3usize, 7, 1, 12] {
            let l = c.evaluate(&Batch::for_sequence(0, &p[s..s + n], true)).unwrap();
            for j in 0..n {
                assert!(rel(l.row(j), &whole[s + j]) <= 1e-5, "{name}: chunked token {}", s + j);
            }
            s += n;
        }
    }
}

#[test]
fn micro_batch_size_does_not_matter() {
    for (name, m) in models() {
        let nv = m.hparams().unwrap().n_vocab;
        let mut rng = SplitMix64::new(13);
        let a = tokens(&mut rng, 17, nv);
        let b = tokens(&mut rng, 6, nv);
        let mut batch = Batch::for_sequence(0, &a, true);
        for &t in &b {
            batch.push(t, 1, true);
        }
        let big = ctx(&m, 2, 2, 512).evaluate(&batch).unwrap();
        for ub in [1usize, 4, 5, 16] {
            let small = ctx(&m, 2, 2, ub).evaluate(&batch).unwrap();
            assert!(rel(small.as_slice(), big.as_slice()) <= 1e-5, "{name}: n_ubatch {ub}");
        }
    }
}

#[test]
fn thread_counts_agree() {
    for (name, m) in models() {
        let nv = m.hparams().unwrap().n_vocab;
        let mut rng = SplitMix64::new(14);
        let a = tokens(&mut rng, 40, nv);
        let b = tokens(&mut rng, 3, nv);
        let mut batch = Batch::for_sequence(0, &a, true);
        for &t in &b {
            batch.push(t, 1, true);
        }
        let run = |threads: usize| {
            let mut c = ctx(&m, 2, threads, 512);
            let mut out = c.evaluate(&batch).unwrap().into_vec();
            // And a decode step for both sequences.
            let mut step = Batch::new();
            step.push(1, 0, true).push(2, 1, true);
            out.extend(c.evaluate(&step).unwrap().into_vec());
            (out, c.state_snapshot(0).unwrap())
        };
        let (l1, s1) = run(1);
        for t in [2usize, 3] {
            let (lt, st) = run(t);
            // Every output element is computed by one thread with the same instructions whatever
            // the split, so the results are bit-identical.
            assert_eq!(lt, l1, "{name}: {t} threads");
            assert_eq!(st, s1, "{name}: {t} threads (state)");
        }
    }
}

#[test]
fn clear_resets_a_sequence_and_only_it() {
    for (name, m) in models() {
        let nv = m.hparams().unwrap().n_vocab;
        let mut rng = SplitMix64::new(15);
        let a = tokens(&mut rng, 8, nv);
        let b = tokens(&mut rng, 5, nv);
        let fresh_b = ctx(&m, 1, 2, 512).evaluate(&Batch::for_sequence(0, &b, true)).unwrap();
        let mut c = ctx(&m, 2, 2, 512);
        c.evaluate(&Batch::for_sequence(0, &a, false)).unwrap();
        c.evaluate(&Batch::for_sequence(1, &a, false)).unwrap();
        let s1 = c.state_snapshot(1).unwrap();
        c.clear(0).unwrap();
        assert_eq!(c.position(0).unwrap(), 0);
        assert!(c.state_snapshot(0).unwrap().iter().all(|&v| v == 0.0), "{name}");
        assert_eq!(c.position(1).unwrap(), 8);
        assert_eq!(c.state_snapshot(1).unwrap(), s1, "{name}: clear(0) touched sequence 1");
        let again = c.evaluate(&Batch::for_sequence(0, &b, true)).unwrap();
        assert_eq!(again.as_slice(), fresh_b.as_slice(), "{name}");
        c.clear_all();
        assert_eq!(c.position(1).unwrap(), 0);
    }
}

#[test]
fn logits_only_where_requested_in_batch_order() {
    let (_, m) = models().remove(1);
    let nv = m.hparams().unwrap().n_vocab;
    let mut rng = SplitMix64::new(16);
    let a = tokens(&mut rng, 6, nv);
    let b = tokens(&mut rng, 4, nv);
    let want_a = all_rows(&ctx(&m, 1, 1, 512).evaluate(&Batch::for_sequence(0, &a, true)).unwrap());
    let want_b = all_rows(&ctx(&m, 1, 1, 512).evaluate(&Batch::for_sequence(0, &b, true)).unwrap());
    // b's tokens first (sequence 1), then a's (sequence 0), flags on a few.
    let mut batch = Batch::new();
    let mut expect = Vec::new();
    for (i, &t) in b.iter().enumerate() {
        let want = i == 1 || i == 3;
        batch.push(t, 1, want);
        if want {
            expect.push(want_b[i].clone());
        }
    }
    for (i, &t) in a.iter().enumerate() {
        let want = i % 2 == 0;
        batch.push(t, 0, want);
        if want {
            expect.push(want_a[i].clone());
        }
    }
    let mut c = ctx(&m, 2, 2, 512);
    let l = c.evaluate(&batch).unwrap();
    assert_eq!(l.len(), expect.len());
    assert_eq!(l.n_vocab(), nv);
    assert_eq!(l.batch_indices(), &[1, 3, 4, 6, 8]);
    for (i, w) in expect.iter().enumerate() {
        assert!(rel(l.row(i), w) <= 1e-5);
    }
    assert!(l.for_batch_index(2).is_none());
    assert!(rel(l.for_batch_index(6).unwrap(), &want_a[2]) <= 1e-5);
    // No logits at all is fine too.
    let none = c.evaluate(&Batch { tokens: vec![1], seq: vec![0], pos: None, logits: vec![false] }).unwrap();
    assert!(none.is_empty());
}

#[test]
fn explicit_positions() {
    let (_, m) = models().remove(0);
    let mut c = ctx(&m, 2, 1, 512);
    let mut b = Batch::new();
    b.push_at(5, 0, 0, false).push_at(6, 0, 1, true).push_at(7, 1, 0, true);
    c.evaluate(&b).unwrap();
    assert_eq!(c.position(0).unwrap(), 2);
    assert_eq!(c.position(1).unwrap(), 1);
    let mut b = Batch::new();
    b.push_at(8, 1, 1, true).push_at(9, 0, 2, true);
    c.evaluate(&b).unwrap();
    assert_eq!((c.position(0).unwrap(), c.position(1).unwrap()), (3, 2));
}

#[test]
fn state_size() {
    for (name, m) in models() {
        let hp = m.hparams().unwrap().clone();
        let c = ctx(&m, 3, 1, 512);
        // Per recurrent layer: (K−1) conv columns and the SSM state (none for LFM2's short conv).
        let (conv_dim, ssm) = match hp.arch {
            Arch::Mamba | Arch::Jamba => (hp.d_inner, hp.d_state * hp.d_inner),
            Arch::Mamba2 | Arch::GraniteHybrid | Arch::NemotronH | Arch::NemotronHMoe | Arch::FalconH1 => {
                (hp.d_inner + 2 * hp.n_group * hp.d_state, hp.d_state * hp.d_inner)
            }
            Arch::Lfm2 | Arch::Lfm2Moe => (hp.n_embd, 0),
        };
        // Which layers are recurrent, as llama.cpp's hybrid memory filters them: attention layers
        // hold no recurrent state, except in Falcon-H1 (both mixers on every layer); Nemotron-H's
        // FFN layers hold none either.
        let n_rec = match hp.arch {
            Arch::FalconH1 => hp.n_layer,
            Arch::NemotronH | Arch::NemotronHMoe => {
                (0..hp.n_layer).filter(|&l| !hp.is_attention(l) && !hp.moe[l] && hp.n_ff[l] == 0).count()
            }
            _ => (0..hp.n_layer).filter(|&l| !hp.is_attention(l)).count(),
        };
        let want = 4 * n_rec * ((hp.d_conv - 1) * conv_dim + ssm);
        assert_eq!(c.state_bytes_per_sequence(), want as u64, "{name}");
        assert_eq!(c.state_snapshot(2).unwrap().len() * 4, want, "{name}");
    }
}
