//! Each sampler stage against hand-computed distributions on tiny vocabularies, the
//! configuration JSON, and the error cases.

use coil_core::sampling::{SamplerChain, SamplerConfig, StageConfig};
use coil_core::ErrorCode;

fn chain(json: &str) -> SamplerChain {
    SamplerChain::from_json(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

/// The final distribution as a dense vector over the vocabulary.
fn probs(json: &str, logits: &[f32], history: &[u32]) -> Vec<f64> {
    let mut c = chain(json);
    let d = c.distribution(logits, history).unwrap();
    let mut out = vec![0.0; logits.len()];
    for (id, p) in d {
        out[id as usize] += p;
    }
    out
}

fn softmax(xs: &[f64]) -> Vec<f64> {
    let m = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = xs.iter().map(|&x| if x == f64::NEG_INFINITY { 0.0 } else { (x - m).exp() }).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn assert_close(got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= tol, "index {i}: got {g}, want {w} (got {got:?}, want {want:?})");
    }
}

const L4: [f32; 4] = [1.0, 2.0, 3.0, 4.0];

/// Logits whose softmax is exactly `p` (up to rounding).
fn ln_probs(p: &[f64]) -> Vec<f32> {
    p.iter().map(|&x| x.ln() as f32).collect()
}

#[test]
fn plain_softmax() {
    let got = probs(r#"{"chain":[{"type":"dist","seed":1}]}"#, &L4, &[]);
    assert_close(&got, &softmax(&[1.0, 2.0, 3.0, 4.0]), 1e-12);
}

#[test]
fn top_k() {
    let (e3, e4) = (3f64.exp(), 4f64.exp());
    let got = probs(r#"{"chain":[{"type":"top_k","k":2},{"type":"dist","seed":1}]}"#, &L4, &[]);
    assert_close(&got, &[0.0, 0.0, e3 / (e3 + e4), e4 / (e3 + e4)], 1e-12);
    // k <= 0 and k >= n change nothing.
    for k in [0, -3, 4, 100] {
        let got = probs(&format!(r#"{{"chain":[{{"type":"top_k","k":{k}}},{{"type":"dist","seed":1}}]}}"#), &L4, &[]);
        assert_close(&got, &softmax(&[1.0, 2.0, 3.0, 4.0]), 1e-12);
    }
    // Ties: the lower id is kept.
    let got = probs(r#"{"chain":[{"type":"top_k","k":1},{"type":"dist"}]}"#, &[1.0, 3.0, 3.0, 2.0], &[]);
    assert_close(&got, &[0.0, 1.0, 0.0, 0.0], 0.0);
    let got = probs(r#"{"chain":[{"type":"top_k","k":2},{"type":"dist"}]}"#, &[3.0, 1.0, 3.0, 3.0], &[]);
    assert_close(&got, &[0.5, 0.0, 0.5, 0.0], 1e-15);
}

#[test]
fn top_p() {
    let l = ln_probs(&[0.1, 0.2, 0.3, 0.4]);
    let j = |p: f64, mk: u64| {
        format!(r#"{{"chain":[{{"type":"top_p","p":{p},"minKeep":{mk}}},{{"type":"dist","seed":1}}]}}"#)
    };
    // 0.4 >= 0.35: only the top token.
    assert_close(&probs(&j(0.35, 1), &l, &[]), &[0.0, 0.0, 0.0, 1.0], 1e-12);
    // 0.4 + 0.3 = 0.7 >= 0.5.
    assert_close(&probs(&j(0.5, 1), &l, &[]), &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0], 1e-7);
    // 0.7 < 0.75 <= 0.9.
    assert_close(&probs(&j(0.75, 1), &l, &[]), &[0.0, 2.0 / 9.0, 3.0 / 9.0, 4.0 / 9.0], 1e-7);
    // min_keep wins over p.
    assert_close(&probs(&j(0.35, 3), &l, &[]), &[0.0, 2.0 / 9.0, 3.0 / 9.0, 4.0 / 9.0], 1e-7);
    // p = 0 keeps one token; p >= 1 keeps everything.
    assert_close(&probs(&j(0.0, 0), &l, &[]), &[0.0, 0.0, 0.0, 1.0], 1e-12);
    assert_close(&probs(&j(1.0, 1), &l, &[]), &[0.1, 0.2, 0.3, 0.4], 1e-7);
}

/// The adaptive partial sort (best 256, then 1024, ...) keeps the same set as a full sort.
#[test]
fn top_p_large_vocab_matches_full_sort() {
    let mut rng = coil_core::util::SplitMix64::new(9);
    for (n, scale, p) in [(5000usize, 2.0f32, 0.9f64), (50_000, 0.5, 0.95), (3000, 8.0, 0.5), (200_000, 0.1, 0.3)] {
        let logits: Vec<f32> = (0..n).map(|_| (rng.next_f32() - 0.5) * 2.0 * scale).collect();
        let mut c = chain(&format!(r#"{{"chain":[{{"type":"top_p","p":{p}}},{{"type":"dist","seed":3}}]}}"#));
        let d = c.distribution(&logits, &[]).unwrap();
        // Reference: full sort, f64 std exp.
        let mut idx: Vec<usize> = (0..n).collect();
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        let m = logits[idx[0]] as f64;
        let w: Vec<f64> = logits.iter().map(|&x| (x as f64 - m).exp()).collect();
        let total: f64 = w.iter().sum();
        let mut cum = 0.0;
        let mut keep = n;
        for (i, &t) in idx.iter().enumerate() {
            cum += w[t] / total;
            if cum >= p {
                keep = i + 1;
                break;
            }
        }
        let got: Vec<u32> = d.iter().map(|x| x.0).collect();
        let want: Vec<u32> = idx[..keep].iter().map(|&i| i as u32).collect();
        assert_eq!(got.len(), want.len(), "n={n}");
        assert_eq!(got, want, "n={n}");
        let s: f64 = d.iter().map(|x| x.1).sum();
        assert!((s - 1.0).abs() < 1e-9);
    }
}

#[test]
fn min_p() {
    let l = ln_probs(&[0.1, 0.2, 0.3, 0.4]);
    let j = |p: f64, mk: u64| {
        format!(r#"{{"chain":[{{"type":"min_p","p":{p},"minKeep":{mk}}},{{"type":"dist","seed":1}}]}}"#)
    };
    // Threshold 0.6 * 0.4 = 0.24: keeps 0.3 and 0.4.
    assert_close(&probs(&j(0.6, 1), &l, &[]), &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0], 1e-7);
    // Threshold 0.08: keeps everything.
    assert_close(&probs(&j(0.2, 1), &l, &[]), &[0.1, 0.2, 0.3, 0.4], 1e-7);
    // Threshold 0.36: only the top; min_keep 3 keeps the top three.
    assert_close(&probs(&j(0.9, 1), &l, &[]), &[0.0, 0.0, 0.0, 1.0], 1e-12);
    assert_close(&probs(&j(0.9, 3), &l, &[]), &[0.0, 2.0 / 9.0, 3.0 / 9.0, 4.0 / 9.0], 1e-7);
    // p <= 0: no-op; p > 1: the top token.
    assert_close(&probs(&j(0.0, 1), &l, &[]), &[0.1, 0.2, 0.3, 0.4], 1e-7);
    assert_close(&probs(&j(1.5, 0), &l, &[]), &[0.0, 0.0, 0.0, 1.0], 1e-12);
    // After a sort (top_k) the sorted path gives the same set.
    let got = probs(r#"{"chain":[{"type":"top_k","k":3},{"type":"min_p","p":0.6},{"type":"dist"}]}"#, &l, &[]);
    assert_close(&got, &[0.0, 0.0, 3.0 / 7.0, 4.0 / 7.0], 1e-7);
}

#[test]
fn typical_p() {
    // p = [0.1, 0.2, 0.3, 0.4]: H = 1.27985; |-ln p - H| = [1.0227, 0.3296, 0.0759, 0.3636], so the
    // typical order is 0.3, 0.2, 0.4, 0.1 (ids 2, 1, 3, 0).
    let l = ln_probs(&[0.1, 0.2, 0.3, 0.4]);
    let j = |p: f64, mk: u64| {
        format!(r#"{{"chain":[{{"type":"typical_p","p":{p},"minKeep":{mk}}},{{"type":"dist","seed":1}}]}}"#)
    };
    // cum 0.3, 0.5 > 0.45: ids 2 and 1.
    assert_close(&probs(&j(0.45, 1), &l, &[]), &[0.0, 0.4, 0.6, 0.0], 1e-7);
    // cum 0.3, 0.5, 0.9 > 0.6: ids 2, 1, 3.
    assert_close(&probs(&j(0.6, 1), &l, &[]), &[0.0, 2.0 / 9.0, 3.0 / 9.0, 4.0 / 9.0], 1e-7);
    // 0.3 > 0.2 at once; min_keep 2 adds id 1.
    assert_close(&probs(&j(0.2, 1), &l, &[]), &[0.0, 0.0, 1.0, 0.0], 1e-12);
    assert_close(&probs(&j(0.2, 2), &l, &[]), &[0.0, 0.4, 0.6, 0.0], 1e-7);
    // The candidates come out in typical order.
    let mut c = chain(&j(0.95, 1));
    let d = c.distribution(&l, &[]).unwrap();
    assert_eq!(d.iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 1, 3, 0]);
    // p >= 1: no-op.
    assert_close(&probs(&j(1.0, 1), &l, &[]), &[0.1, 0.2, 0.3, 0.4], 1e-7);
}

#[test]
fn temperature() {
    let got = probs(r#"{"chain":[{"type":"temperature","t":2},{"type":"dist","seed":1}]}"#, &L4, &[]);
    assert_close(&got, &softmax(&[0.5, 1.0, 1.5, 2.0]), 1e-12);
    let got = probs(r#"{"chain":[{"type":"temp","t":0.5},{"type":"dist","seed":1}]}"#, &L4, &[]);
    assert_close(&got, &softmax(&[2.0, 4.0, 6.0, 8.0]), 1e-12);
    // t <= 0: only the top token is left.
    for t in ["0", "-1"] {
        let json = format!(r#"{{"chain":[{{"type":"temperature","t":{t}}},{{"type":"dist","seed":1}}]}}"#);
        assert_close(&probs(&json, &[0.5, 9.0, 9.0, -3.0], &[]), &[0.0, 1.0, 0.0, 0.0], 0.0);
        let mut c = chain(&json);
        for _ in 0..50 {
            assert_eq!(c.sample(&[0.5, 9.0, 9.0, -3.0], &[]).unwrap(), 1);
        }
    }
    // Options form: temperature 0 is greedy.
    let mut c = chain(r#"{"temperature":0,"seed":5}"#);
    assert!(c.is_greedy());
    assert_eq!(c.sample(&[0.1, 0.3, 0.2], &[]).unwrap(), 1);
}

/// llama.cpp's penalties: positive logits divided by `repeat`, the rest multiplied, then
/// `count * frequency + presence` subtracted, over the last `lastN` tokens.
fn penalized(logits: &[f32], history: &[u32], repeat: f32, freq: f32, presence: f32) -> Vec<f64> {
    logits
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let c = history.iter().filter(|&&t| t as usize == i).count() as u32;
            if c == 0 {
                return l as f64;
            }
            let l = if l <= 0.0 { l * repeat } else { l / repeat };
            (l - (c as f32 * freq + presence)) as f64
        })
        .collect()
}

#[test]
fn penalties() {
    let l = [1.0f32, -1.0, 2.0, 0.5, 0.0];
    let h = [0u32, 1, 0, 3, 4];
    // Hand-computed: token 0 (twice): 1/2 - (2*0.1 + 0.5) = -0.2; token 1: -1*2 - 0.6 = -2.6;
    // token 3: 0.25 - 0.6 = -0.35; token 4: 0*2 - 0.6 = -0.6; token 2 untouched.
    let want = softmax(&[-0.2, -2.6, 2.0, -0.35, -0.6]);
    let j = r#"{"chain":[{"type":"penalties","lastN":64,"repeat":2,"frequency":0.1,"presence":0.5},{"type":"dist","seed":1}]}"#;
    assert_close(&probs(j, &l, &h), &want, 1e-6);
    assert_close(&probs(j, &l, &h), &softmax(&penalized(&l, &h, 2.0, 0.1, 0.5)), 1e-12);
    // Window of 2: only [3, 4] count.
    let j2 = r#"{"chain":[{"type":"penalties","lastN":2,"repeat":2,"frequency":0.1,"presence":0.5},{"type":"dist","seed":1}]}"#;
    assert_close(&probs(j2, &l, &h), &softmax(&penalized(&l, &[3, 4], 2.0, 0.1, 0.5)), 1e-12);
    // lastN -1: the whole history.
    let long: Vec<u32> = std::iter::repeat_n(2, 100).chain([0]).collect();
    let jall = r#"{"chain":[{"type":"penalties","lastN":-1,"repeat":1.5},{"type":"dist","seed":1}]}"#;
    assert_close(&probs(jall, &l, &long), &softmax(&penalized(&l, &long, 1.5, 0.0, 0.0)), 1e-12);
    // Empty window, lastN 0, neutral values: no-ops.
    assert_close(&probs(j, &l, &[]), &softmax(&l.map(|x| x as f64)), 1e-12);
    let j0 = r#"{"chain":[{"type":"penalties","lastN":0,"repeat":2},{"type":"dist","seed":1}]}"#;
    assert_close(&probs(j0, &l, &h), &softmax(&l.map(|x| x as f64)), 1e-12);
    // History ids outside the vocabulary are ignored.
    assert_close(&probs(j, &l, &[0, 0, 99, 4000]), &softmax(&penalized(&l, &[0, 0], 2.0, 0.1, 0.5)), 1e-12);
    // After a truncation (not indexable by id any more) the result is the same.
    let jk = r#"{"chain":[{"type":"top_k","k":4},{"type":"penalties","repeat":2,"frequency":0.1,"presence":0.5},{"type":"dist"}]}"#;
    let mut pen = penalized(&l, &h, 2.0, 0.1, 0.5);
    pen[1] = f64::NEG_INFINITY; // -1 is the lowest logit: top_k 4 drops it
    assert_close(&probs(jk, &l, &h), &softmax(&pen), 1e-12);
    // Options form builds the same stage.
    let c = SamplerConfig::from_json(r#"{"repeatPenalty":1.1,"penaltyLastN":32,"temperature":0}"#).unwrap();
    assert_eq!(
        c.stages().unwrap(),
        vec![StageConfig::Penalties { last_n: 32, repeat: 1.1, frequency: 0.0, presence: 0.0 }, StageConfig::Greedy]
    );
}

#[test]
fn logit_bias() {
    let j = r#"{"chain":[{"type":"logit_bias","bias":{"1":5,"2":false}},{"type":"dist","seed":1}]}"#;
    assert_close(&probs(j, &L4, &[]), &softmax(&[1.0, 7.0, f64::NEG_INFINITY, 4.0]), 1e-12);
    // Array form; a token listed twice gets both; "-inf" strings.
    let j = r#"{"chain":[{"type":"logit_bias","bias":[[3,-1],[0,"-inf"],[3,-1.5]]},{"type":"dist","seed":1}]}"#;
    assert_close(&probs(j, &L4, &[]), &softmax(&[f64::NEG_INFINITY, 2.0, 3.0, 1.5]), 1e-12);
    // After a truncation.
    let j = r#"{"chain":[{"type":"top_k","k":3},{"type":"logitBias","bias":{"1":5,"3":"-Infinity"}},{"type":"dist"}]}"#;
    assert_close(&probs(j, &L4, &[]), &softmax(&[f64::NEG_INFINITY, 7.0, 3.0, f64::NEG_INFINITY]), 1e-12);
    // +inf forces a token.
    let j = r#"{"logitBias":{"0":"inf"},"seed":3}"#;
    assert_close(&probs(j, &L4, &[]), &[1.0, 0.0, 0.0, 0.0], 0.0);
    let mut c = chain(j);
    for _ in 0..20 {
        assert_eq!(c.sample(&L4, &[]).unwrap(), 0);
    }
    // Banning everything is an error; so is a bias outside the vocabulary.
    let mut c = chain(r#"{"logitBias":{"0":false,"1":false,"2":false,"3":false},"seed":1}"#);
    assert_eq!(c.sample(&L4, &[]).unwrap_err().code, ErrorCode::InvalidArgument);
    let mut c = chain(r#"{"logitBias":{"0":false,"1":false,"2":false,"3":false},"temperature":0}"#);
    assert_eq!(c.sample(&L4, &[]).unwrap_err().code, ErrorCode::InvalidArgument);
    let mut c = chain(r#"{"logitBias":{"7":1}}"#);
    assert_eq!(c.sample(&L4, &[]).unwrap_err().code, ErrorCode::TokenOutOfRange);
    // null (what JSON.stringify makes of -Infinity) is rejected, not guessed.
    assert!(SamplerChain::from_json(r#"{"logitBias":{"1":null}}"#).is_err());
    assert!(SamplerChain::from_json(r#"{"logitBias":{"x":1}}"#).is_err());
}

#[test]
fn greedy_and_edge_cases() {
    let mut g = SamplerChain::greedy();
    assert_eq!(g.sample(&[1.0, 5.0, 5.0, 2.0], &[]).unwrap(), 1);
    assert_eq!(g.sample(&[f32::NAN, 0.0, f32::NAN], &[]).unwrap(), 1);
    assert_eq!(g.sample(&[f32::NEG_INFINITY, -1e30, f32::NAN], &[]).unwrap(), 1);
    assert_eq!(g.sample(&[], &[]).unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(g.sample(&[f32::NAN; 3], &[]).unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(g.sample(&[f32::NEG_INFINITY; 3], &[]).unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(g.seed(), None);
    let mut d = chain(r#"{"seed":1}"#);
    assert_eq!(d.sample(&[f32::NAN; 3], &[]).unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(d.sample(&[f32::NEG_INFINITY; 3], &[]).unwrap_err().code, ErrorCode::InvalidArgument);
    // NaN is never drawn.
    let mut d = chain(r#"{"chain":[{"type":"dist","seed":2}]}"#);
    for _ in 0..200 {
        assert_ne!(d.sample(&[0.0, f32::NAN, 0.0], &[]).unwrap(), 1);
    }
    // +inf logits: uniform over them.
    let p = probs(r#"{"chain":[{"type":"dist","seed":1}]}"#, &[f32::INFINITY, 3.0, f32::INFINITY], &[]);
    assert_close(&p, &[0.5, 0.0, 0.5], 0.0);
    // One candidate.
    assert_eq!(chain(r#"{"seed":1}"#).sample(&[0.3], &[]).unwrap(), 0);
}

#[test]
fn config_forms_and_defaults() {
    // llama.cpp's defaults and order.
    let c = SamplerConfig::from_json("{}").unwrap();
    assert_eq!(
        c.stages().unwrap(),
        vec![
            StageConfig::TopK { k: 40 },
            StageConfig::TopP { p: 0.95, min_keep: 0 },
            StageConfig::MinP { p: 0.05, min_keep: 0 },
            StageConfig::Temperature { t: 0.8 },
            StageConfig::Dist { seed: None },
        ]
    );
    assert_eq!(SamplerConfig::from_json("").unwrap(), c);
    let c = SamplerConfig::from_json(
        r#"{"logitBias":{"5":1},"repeatPenalty":1.1,"frequency_penalty":0.2,"topK":10,"typicalP":0.9,"topP":0.8,"minP":0.1,"temp":0.7,"seed":"18446744073709551615"}"#,
    )
    .unwrap();
    let names: Vec<&str> = c
        .stages()
        .unwrap()
        .iter()
        .map(|s| match s {
            StageConfig::LogitBias { .. } => "logit_bias",
            StageConfig::Penalties { .. } => "penalties",
            StageConfig::TopK { .. } => "top_k",
            StageConfig::TypicalP { .. } => "typical_p",
            StageConfig::TopP { .. } => "top_p",
            StageConfig::MinP { .. } => "min_p",
            StageConfig::Temperature { .. } => "temperature",
            StageConfig::Greedy => "greedy",
            StageConfig::Dist { .. } => "dist",
        })
        .collect();
    assert_eq!(names, ["logit_bias", "penalties", "top_k", "typical_p", "top_p", "min_p", "temperature", "dist"]);
    let sc = SamplerChain::new(&c).unwrap();
    assert_eq!(sc.seed(), Some(u64::MAX));
    // to_json round-trips to the same chain (same draws).
    let j = sc.to_json();
    assert!(j.contains("\"seed\":\"18446744073709551615\""), "{j}");
    let mut a = SamplerChain::from_json(&j).unwrap();
    let mut b = sc.clone();
    let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
    for _ in 0..100 {
        assert_eq!(a.sample(&logits, &[1, 2, 3]).unwrap(), b.sample(&logits, &[1, 2, 3]).unwrap());
    }
    // A random seed is reported and reproduces the run.
    let mut r = chain("{}");
    let seed = r.seed().unwrap();
    let mut r2 = chain(&format!(r#"{{"seed":"{seed}"}}"#));
    for _ in 0..100 {
        assert_eq!(r.sample(&logits, &[]).unwrap(), r2.sample(&logits, &[]).unwrap());
    }

    // Errors.
    for bad in [
        r#"{"chain":[{"type":"greedy"}],"temperature":1}"#,
        r#"{"topk":3}"#,
        r#"{"chain":[]}"#,
        r#"{"chain":[{"type":"top_k","k":3}]}"#,
        r#"{"chain":[{"type":"greedy"},{"type":"top_k","k":3}]}"#,
        r#"{"chain":[{"type":"dist"},{"type":"greedy"}]}"#,
        r#"{"chain":[{"type":"top_k","k":3,"p":1},{"type":"greedy"}]}"#,
        r#"{"chain":[{"type":"nope"},{"type":"greedy"}]}"#,
        r#"{"chain":[{"type":"penalties","repeat":0},{"type":"greedy"}]}"#,
        r#"{"chain":[{"type":"penalties","lastN":-2,"repeat":1.1},{"type":"greedy"}]}"#,
        r#"{"repeatPenalty":-1}"#,
        r#"{"seed":-1}"#,
        r#"{"seed":1.5}"#,
        r#"{"seed":"abc"}"#,
        r#"not json"#,
    ] {
        let e = SamplerChain::from_json(bad).expect_err(bad);
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad}: {e}");
    }
}
