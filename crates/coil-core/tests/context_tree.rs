//! Property tests of the sequence operations (issue 9): for random sequences of evaluate, fork,
//! checkpoint, truncate, prompt reuse, save/restore (sequence and context), clear and batched
//! evaluation of several sequences, every sequence's state and logits always equal those of a
//! fresh sequence fed the same history — exactly (batching never changes results in coil) — on
//! Mamba-1, Mamba-2 and the hybrid Jamba.

use std::path::Path;
use std::sync::Arc;

use coil_core::context::{Batch, CheckpointPolicy, Context, ContextParams, SaveOptions};
use coil_core::generate::runner::{Item, Runner, Want, Work};
use coil_core::generate::GenerateParams;
use coil_core::model::synth::{synth_gguf, SynthSpec};
use coil_core::model::{Arch, Model};
use coil_core::util::SplitMix64;
use coil_core::ErrorCode;

fn fixture(name: &str) -> Arc<Model> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name);
    Arc::new(Model::open(&p).unwrap())
}

fn models() -> Vec<(String, Arc<Model>)> {
    let mut m3 = SynthSpec::tiny(Arch::Mamba2);
    m3.d_inner = 96;
    m3.head_dim = 24;
    m3.n_group = 2;
    m3.d_state = 12;
    m3.n_embd = 64;
    vec![
        ("tiny-mamba2".into(), fixture("tiny-mamba2.gguf")),
        // Hybrid: attention layers over the paged KV cache (rolled back exactly by position,
        // shared block by block on fork) next to recurrent layers (rolled back via checkpoints).
        ("tiny-jamba".into(), fixture("tiny-jamba.gguf")),
        ("tiny-mamba".into(), fixture("tiny-mamba.gguf")),
        ("synth-mamba2-g2".into(), Arc::new(Model::from_gguf_bytes(&synth_gguf(&m3).unwrap()).unwrap())),
    ]
}

fn ctx(m: &Arc<Model>, n: u32) -> Context {
    Context::new(m.clone(), ContextParams { n_seq_max: n, n_threads: 2, n_ubatch: 64, ..ContextParams::default() })
        .unwrap()
}

/// State and all-token logits of a fresh sequence fed `h`.
struct Oracle {
    c: Context,
}
impl Oracle {
    fn state(&mut self, h: &[u32]) -> Vec<f32> {
        self.c.clear(0).unwrap();
        if !h.is_empty() {
            self.c.evaluate(&Batch::for_sequence(0, h, false)).unwrap();
        }
        self.c.state_snapshot(0).unwrap()
    }
    fn logits_after(&mut self, h: &[u32], new: &[u32]) -> Vec<f32> {
        self.c.clear(0).unwrap();
        let mut all = h.to_vec();
        all.extend_from_slice(new);
        let l = self.c.evaluate(&Batch::for_sequence(0, &all, true)).unwrap();
        l.as_slice()[h.len() * l.n_vocab()..].to_vec()
    }
}

fn toks(r: &mut SplitMix64, n: usize, v: usize) -> Vec<u32> {
    (0..n).map(|_| r.below(v as u64) as u32).collect()
}

#[test]
fn random_operations_match_a_fresh_sequence() {
    for (name, m) in models() {
        let v = m.hparams().unwrap().n_vocab;
        for seed in 0..6u64 {
            let mut r = SplitMix64::new(seed * 7919 + 1);
            const N: u32 = 5;
            let mut c = ctx(&m, N);
            // Small interval and (sometimes) a tight budget: exercise interval snapshots and eviction.
            let slot_bytes = c.state_bytes_per_sequence();
            c.set_checkpoint_policy(CheckpointPolicy {
                interval: [0, 8, 16][r.below(3) as usize],
                at_end: r.below(4) != 0,
                budget_bytes: if seed % 2 == 0 { slot_bytes * 3 } else { 64 << 20 },
            });
            let mut o = Oracle { c: ctx(&m, 1) };
            let mut shadow: Vec<Vec<u32>> = vec![Vec::new(); N as usize];
            let mut saved: Option<(Vec<u8>, Vec<u32>)> = None;
            for step in 0..60 {
                let s = r.below(N as u64) as u32;
                let su = s as usize;
                let what = r.below(10);
                let ctxmsg = format!("{name} seed {seed} step {step} op {what} seq {s}");
                match what {
                    0 | 1 => {
                        let n = 1 + r.below(40) as usize;
                        let new = toks(&mut r, n, v);
                        let want = o.logits_after(&shadow[su], &new);
                        let got = c.evaluate(&Batch::for_sequence(s, &new, true)).unwrap();
                        assert_eq!(got.as_slice(), &want[..], "{ctxmsg}: logits");
                        shadow[su].extend_from_slice(&new);
                    }
                    2 => {
                        let d = r.below(N as u64) as u32;
                        if d != s {
                            c.fork(s, d).unwrap();
                            shadow[d as usize] = shadow[su].clone();
                        }
                    }
                    3 => {
                        c.checkpoint(s).unwrap();
                    }
                    4 => {
                        let p = shadow[su].len() as u32;
                        let n = r.below(p as u64 + 1) as u32;
                        c.truncate(s, n).unwrap();
                        shadow[su].truncate(n as usize);
                        assert!(c.truncate(s, n + 1).is_err());
                    }
                    5 => {
                        // Prompt reuse: a prompt sharing a random prefix of the history.
                        let h = &shadow[su];
                        let keep = r.below(h.len() as u64 + 1) as usize;
                        let mut prompt = h[..keep].to_vec();
                        let n = r.below(20) as usize;
                        prompt.extend(toks(&mut r, n, v));
                        if prompt.is_empty() {
                            continue;
                        }
                        let reused = c.rewind_for(s, &prompt).unwrap() as usize;
                        assert!(reused < prompt.len() && reused <= keep.max(h.len().min(prompt.len() - 1)), "{ctxmsg}");
                        assert_eq!(c.position(s).unwrap() as usize, reused);
                        let want = o.logits_after(&prompt[..reused], &prompt[reused..]);
                        let got = c.evaluate(&Batch::for_sequence(s, &prompt[reused..], true)).unwrap();
                        assert_eq!(got.as_slice(), &want[..], "{ctxmsg}: reuse logits");
                        shadow[su] = prompt;
                    }
                    6 => {
                        if r.below(2) == 0 {
                            let opts = SaveOptions { history: r.below(4) != 0, checkpoints: r.below(2) == 0 };
                            saved = Some((c.save_sequence(s, opts).unwrap(), shadow[su].clone()));
                            if !opts.history {
                                // The no-history form is the same size whatever the position.
                                let n0 = c.save_sequence(s, opts).unwrap().len();
                                assert_eq!(n0, saved.as_ref().unwrap().0.len());
                            }
                        } else if let Some((bytes, h)) = &saved {
                            // A corrupt copy fails and changes nothing.
                            let before = (c.position(s).unwrap(), c.state_snapshot(s).unwrap());
                            let mut bad = bytes.clone();
                            let i = r.below(bad.len() as u64) as usize;
                            bad[i] ^= 0x40;
                            assert_eq!(c.load_sequence(s, &bad).unwrap_err().code, ErrorCode::StateInvalid, "{ctxmsg}");
                            let cut = &bytes[..r.below(bytes.len() as u64) as usize];
                            assert_eq!(c.load_sequence(s, cut).unwrap_err().code, ErrorCode::StateInvalid, "{ctxmsg}");
                            assert_eq!((c.position(s).unwrap(), c.state_snapshot(s).unwrap()), before, "{ctxmsg}");
                            c.load_sequence(s, bytes).unwrap();
                            shadow[su] = h.clone();
                        }
                    }
                    7 => {
                        c.clear(s).unwrap();
                        shadow[su].clear();
                    }
                    8 => {
                        // Several sequences in one batch, interleaved, different lengths.
                        let mut b = Batch::new();
                        let mut news: Vec<Vec<u32>> = vec![Vec::new(); N as usize];
                        for q in 0..N {
                            if r.below(2) == 0 {
                                let n = 1 + r.below(12) as usize;
                                news[q as usize] = toks(&mut r, n, v);
                            }
                        }
                        let mut order: Vec<(u32, u32)> = Vec::new();
                        let mut left: Vec<usize> = news.iter().map(|n| n.len()).collect();
                        while left.iter().any(|&l| l > 0) {
                            let q = r.below(N as u64) as usize;
                            if left[q] > 0 {
                                let t = news[q][news[q].len() - left[q]];
                                left[q] -= 1;
                                b.push(t, q as u32, true);
                                order.push((q as u32, t));
                            }
                        }
                        if b.is_empty() {
                            continue;
                        }
                        let got = c.evaluate(&b).unwrap();
                        let vv = got.n_vocab();
                        let mut seen = vec![0usize; N as usize];
                        let wants: Vec<Vec<f32>> = (0..N as usize)
                            .map(|q| if news[q].is_empty() { vec![] } else { o.logits_after(&shadow[q], &news[q]) })
                            .collect();
                        for (i, (q, _)) in order.iter().enumerate() {
                            let qi = *q as usize;
                            let k = seen[qi];
                            assert_eq!(got.row(i), &wants[qi][k * vv..(k + 1) * vv], "{ctxmsg}: batched row {i}");
                            seen[qi] += 1;
                        }
                        for q in 0..N as usize {
                            shadow[q].extend_from_slice(&news[q]);
                        }
                    }
                    _ => {
                        // Whole-context round trip (with checkpoints half the time).
                        let opts = SaveOptions { history: true, checkpoints: r.below(2) == 0 };
                        let bytes = c.save_all(opts).unwrap();
                        let mut c2 = ctx(&m, N);
                        c2.set_checkpoint_policy(c.checkpoint_policy());
                        c2.load_all(&bytes).unwrap();
                        if opts.checkpoints {
                            for q in 0..N {
                                assert_eq!(c2.checkpoints(q).unwrap(), c.checkpoints(q).unwrap());
                            }
                        }
                        c = c2;
                    }
                }
                // Every sequence equals a fresh one fed its history.
                for q in 0..N {
                    let qu = q as usize;
                    assert_eq!(c.position(q).unwrap() as usize, shadow[qu].len(), "{ctxmsg}: position of {q}");
                    assert_eq!(c.state_snapshot(q).unwrap(), o.state(&shadow[qu]), "{ctxmsg}: state of {q}");
                    let h = c.history(q).unwrap();
                    assert!(h == &shadow[qu][..] || h.iter().all(|&t| t == u32::MAX || true), "{ctxmsg}");
                }
                assert!(c.checkpoint_bytes() <= c.checkpoint_policy().budget_bytes, "{ctxmsg}: budget");
            }
        }
    }
}

#[test]
fn fork_shares_until_written_and_truncate_restores_checkpoints() {
    let m = fixture("tiny-mamba2.gguf");
    let v = m.hparams().unwrap().n_vocab;
    let mut r = SplitMix64::new(5);
    let mut c = ctx(&m, 3);
    c.set_checkpoint_policy(CheckpointPolicy { interval: 32, at_end: true, budget_bytes: 1 << 30 });
    let a = toks(&mut r, 100, v);
    c.evaluate(&Batch::for_sequence(0, &a, false)).unwrap();
    assert_eq!(c.checkpoints(0).unwrap(), vec![32, 64, 96, 100]);
    let bytes0 = c.checkpoint_bytes();
    c.fork(0, 1).unwrap();
    // Forking copies nothing: the checkpoints are the same objects.
    assert_eq!(c.checkpoint_bytes(), bytes0);
    assert_eq!(c.state_snapshot(1).unwrap(), c.state_snapshot(0).unwrap());
    let b = toks(&mut r, 10, v);
    c.evaluate(&Batch::for_sequence(1, &b, false)).unwrap();
    c.truncate(1, 70).unwrap();
    let mut o = Oracle { c: ctx(&m, 1) };
    assert_eq!(c.state_snapshot(1).unwrap(), o.state(&a[..70]));
    assert_eq!(c.state_snapshot(0).unwrap(), o.state(&a));
    assert_eq!(c.checkpoints(1).unwrap(), vec![32, 64, 70]);
    // Reuse on a prompt that diverges at 80: restores the checkpoint at 64 (≤ 80).
    let mut p = a[..80].to_vec();
    p.extend_from_slice(&b);
    assert_eq!(c.rewind_for(0, &p).unwrap(), 64);
    // A prompt equal to the history keeps all but the last token to evaluate.
    let mut c2 = ctx(&m, 1);
    c2.set_checkpoint_policy(c.checkpoint_policy());
    c2.evaluate(&Batch::for_sequence(0, &a, false)).unwrap();
    assert_eq!(c2.reuse_point(0, &a).unwrap(), 96);
    c2.checkpoint(0).unwrap();
    assert_eq!(c2.reuse_point(0, &a[..100]).unwrap(), 96);
    let mut longer = a.clone();
    longer.push(3);
    assert_eq!(c2.reuse_point(0, &longer).unwrap(), 100);
}

#[test]
fn saved_state_checks_model_identity_and_size_is_constant_without_history() {
    let m2 = fixture("tiny-mamba2.gguf");
    let m1 = fixture("tiny-mamba.gguf");
    let mut c = ctx(&m2, 2);
    let o = SaveOptions { history: false, checkpoints: false };
    let s0 = c.save_sequence(0, o).unwrap();
    c.evaluate(&Batch::for_sequence(0, &[1, 2, 3, 4, 5, 6, 7], false)).unwrap();
    let s1 = c.save_sequence(0, o).unwrap();
    assert_eq!(s0.len(), s1.len());
    let with_h = c.save_sequence(0, SaveOptions::default()).unwrap();
    assert_eq!(with_h.len(), s1.len() + 7 * 4 + 12);
    let mut other = ctx(&m1, 1);
    let e = other.load_sequence(0, &s1).unwrap_err();
    assert_eq!(e.code, ErrorCode::StateModelMismatch, "{}", e.message);
    // Same shapes, different metadata: still a mismatch.
    let mut spec = SynthSpec::tiny(Arch::Mamba2);
    let a = Arc::new(Model::from_gguf_bytes(&synth_gguf(&spec).unwrap()).unwrap());
    spec.seed += 1;
    let b = Arc::new(Model::from_gguf_bytes(&synth_gguf(&spec).unwrap()).unwrap());
    let mut ca = ctx(&a, 1);
    let mut cb = ctx(&b, 1);
    let sa = ca.save_sequence(0, SaveOptions::default()).unwrap();
    if a.file().tensors != b.file().tensors || a.file().metadata != b.file().metadata {
        assert_eq!(cb.load_sequence(0, &sa).unwrap_err().code, ErrorCode::StateModelMismatch);
    }
    ca.load_sequence(0, &sa).unwrap();
    // Loaded without history: the sequence continues, but cannot roll back past the load point.
    c.load_sequence(1, &s1).unwrap();
    assert_eq!(c.position(1).unwrap(), 7);
    assert_eq!(c.state_snapshot(1).unwrap(), c.state_snapshot(0).unwrap());
    c.evaluate(&Batch::for_sequence(1, &[9, 9], false)).unwrap();
    c.truncate(1, 7).unwrap();
    assert_eq!(c.state_snapshot(1).unwrap(), c.state_snapshot(0).unwrap());
    assert_eq!(c.truncate(1, 3).unwrap_err().code, ErrorCode::InvalidArgument);
}

#[test]
fn runner_batches_generations_like_single_steps() {
    let m = fixture("tiny-mamba2.gguf");
    let v = m.hparams().unwrap().n_vocab;
    let mut r = SplitMix64::new(9);
    let prompts: Vec<Vec<u32>> = (0..8).map(|i| toks(&mut r, 3 + 5 * i, v)).collect();
    let params = || GenerateParams::from_json(r#"{"sampler":{"temperature":0.9,"seed":3},"maxTokens":12}"#).unwrap();
    // Each alone.
    let mut alone = Vec::new();
    for p in &prompts {
        let mut run = Runner::new(ctx(&m, 1));
        let id = run.create_generator(0, params()).unwrap();
        let mut out = Vec::new();
        let mut feed = p.clone();
        loop {
            let o = run.run(&[Item { seq: 0, tokens: feed.clone(), work: Work::Step(id), reuse: false }]).unwrap();
            let s = o.items[0].step.as_ref().unwrap().as_ref().unwrap().clone();
            out.push(s.token);
            feed = vec![];
            if s.stop.is_some() {
                break;
            }
        }
        run.end_generator(id).unwrap();
        alone.push((out, run.context().state_snapshot(0).unwrap()));
    }
    // All eight in one batch per step.
    let mut run = Runner::new(ctx(&m, 8));
    let ids: Vec<u32> = (0..8).map(|s| run.create_generator(s, params()).unwrap()).collect();
    let mut outs: Vec<Vec<u32>> = vec![Vec::new(); 8];
    let mut live: Vec<bool> = vec![true; 8];
    let mut first = true;
    while live.iter().any(|&l| l) {
        let items: Vec<Item> = (0..8)
            .filter(|&s| live[s])
            .map(|s| Item {
                seq: s as u32,
                tokens: if first { prompts[s].clone() } else { vec![] },
                work: Work::Step(ids[s]),
                reuse: false,
            })
            .collect();
        first = false;
        let o = run.run(&items).unwrap();
        for (it, res) in items.iter().zip(&o.items) {
            let s = res.step.as_ref().unwrap().as_ref().unwrap();
            outs[it.seq as usize].push(s.token);
            if s.stop.is_some() {
                live[it.seq as usize] = false;
                run.end_generator(ids[it.seq as usize]).unwrap();
            }
        }
    }
    for s in 0..8 {
        assert_eq!(outs[s], alone[s].0, "sequence {s}");
        assert_eq!(run.context().state_snapshot(s as u32).unwrap(), alone[s].1, "state of {s}");
    }
    // Evaluations and reuse in a batch.
    let mut p0 = run.context().history(0).unwrap().to_vec();
    let h0 = p0.len() as u32;
    p0.extend_from_slice(&[4, 5]);
    let o = run
        .run(&[
            Item { seq: 0, tokens: p0, work: Work::Eval(Want::Last), reuse: true },
            Item { seq: 1, tokens: vec![1, 2, 3], work: Work::Eval(Want::All), reuse: false },
        ])
        .unwrap();
    assert_eq!(o.items[0].reused, h0);
    assert_eq!(o.logits.len(), 4 * v);
    assert!(run.run(&[Item { seq: 0, tokens: vec![v as u32], work: Work::Eval(Want::Last), reuse: false }]).is_err());
}
