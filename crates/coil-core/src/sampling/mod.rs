//! Token samplers: a user-ordered chain of logit transforms and truncations ending in a choice
//! (`greedy` or `dist`), with llama.cpp's semantics for each stage (`src/llama-sampling.cpp`).
//!
//! [`SamplerChain::sample`] copies the logits into a candidate array `(id, logit)` (reused between
//! calls, nothing allocated per token once warm), runs the stages in order, and picks a token.
//! Stages that truncate use partial selection, not a full sort: `top_k` is one O(n) selection plus
//! a sort of the k kept; `top_p` on an unsorted array sorts the best 256, then 1024, 4096, ...
//! until the nucleus is complete. Logit bias and penalties index the array directly while it is
//! still in vocabulary order.
//!
//! # Determinism across targets
//! The same seed gives the same tokens for the same logits on native and wasm32:
//! * probabilities are computed in f64 with this module's own [`math::exp`] and [`math::ln`],
//!   built from IEEE basic operations only (std's `exp`/`ln` call the platform libm, which differs
//!   between targets in the last ulp); logit arithmetic (bias, penalties, temperature) is f32
//!   `+ - * /`, correctly rounded everywhere; Rust never fuses multiply-adds on its own;
//! * every sum runs sequentially in candidate order, and the candidate order is a deterministic
//!   function of the input: vocabulary order, or sorted by (logit descending, id ascending) — a
//!   total order (`f32::total_cmp`), so the unstable sort/select algorithms cannot produce
//!   different orders for ties;
//! * the random numbers come from SplitMix64 ([`crate::util::SplitMix64`]): one `u64` per draw,
//!   mapped to a uniform f64 in [0, 1) with 53 bits (`(x >> 11) · 2^-53`);
//! * no hash maps.
//!
//! # Differences from llama.cpp
//! * The PRNG (SplitMix64 instead of `std::mt19937`), so seeds do not reproduce llama.cpp's text.
//! * Probabilities and thresholds are computed in f64 (llama.cpp: f32 `expf`), min-p's threshold is
//!   `max + ln p` in f64; results differ only for values within rounding of a boundary.
//! * `dist` picks the first candidate whose running weight *exceeds* the target (llama.cpp: reaches
//!   it, which can pick a zero-probability token when the draw is exactly 0).
//! * Ties are broken by lower token id wherever an order matters (llama.cpp: unspecified).
//! * NaN logits are treated as −∞ (never chosen); all-NaN logits and a chain that leaves only −∞
//!   (every token banned) are errors instead of asserts.
//! * `top_k` with k ≥ the number of candidates leaves them in place (llama.cpp sorts them, which
//!   only changes the order `dist` walks).
//! * Temperature ≤ 0 removes every candidate but the top one (llama.cpp sets them to −∞; the
//!   outcome is the same).

pub mod config;
pub mod math;

use std::cmp::Ordering;

pub use config::{LogitBias, SamplerConfig, Seed, StageConfig};

use crate::error::{CoilError, ErrorCode, Result};
use crate::util::SplitMix64;

fn bad(msg: impl Into<String>) -> CoilError {
    CoilError::new(ErrorCode::InvalidArgument, msg)
}

/// A token and its (transformed) logit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub id: u32,
    pub logit: f32,
}

/// Best first: higher logit, then lower id. Total, so every correct sort gives the same order.
#[inline]
fn cmp_best(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// Unnormalised probability of `l` relative to the maximum logit `max` (1 for the maximum itself,
/// which also covers max = +∞).
#[inline]
fn weight(l: f32, max: f32) -> f64 {
    if l == max {
        1.0
    } else {
        math::exp(l as f64 - max as f64)
    }
}

/// The maximum logit and the sum of the weights, in candidate order. The sum is 0 when every
/// candidate is −∞ (or there are none).
fn weights_sum(c: &[Candidate]) -> (f32, f64) {
    let mut max = f32::NEG_INFINITY;
    for x in c {
        if x.logit > max {
            max = x.logit;
        }
    }
    if max == f32::NEG_INFINITY {
        return (max, 0.0);
    }
    let mut sum = 0.0f64;
    for x in c {
        sum += weight(x.logit, max);
    }
    (max, sum)
}

/// As [`weights_sum`], also storing each candidate's weight in `out`.
fn weights_into(c: &[Candidate], out: &mut Vec<f64>) -> (f32, f64) {
    out.clear();
    let mut max = f32::NEG_INFINITY;
    for x in c {
        if x.logit > max {
            max = x.logit;
        }
    }
    if max == f32::NEG_INFINITY {
        return (max, 0.0);
    }
    let mut sum = 0.0f64;
    for x in c {
        let w = weight(x.logit, max);
        out.push(w);
        sum += w;
    }
    (max, sum)
}

/// Given `c[..from]` holding the best `from` candidates in order, makes `c[from..to]` hold the
/// next best ones, in order.
fn extend_sorted(c: &mut [Candidate], from: usize, to: usize) {
    if to <= from {
        return;
    }
    if to < c.len() {
        c[from..].select_nth_unstable_by(to - from - 1, cmp_best);
    }
    c[from..to].sort_unstable_by(cmp_best);
}

#[derive(Debug, Clone)]
enum Stage {
    /// Sorted by id (stable: a token listed twice gets both biases in the given order).
    Bias {
        list: Vec<(u32, f32)>,
        max_id: u32,
    },
    Penalties {
        last_n: Option<usize>,
        repeat: f32,
        freq: f32,
        presence: f32,
    },
    TopK(usize),
    TopP {
        p: f64,
        min_keep: usize,
    },
    MinP {
        ln_p: f64,
        min_keep: usize,
    },
    Typical {
        p: f64,
        min_keep: usize,
    },
    Temperature(f32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Greedy,
    Dist,
}

/// Reused buffers: the candidates and their state, and scratch space for the stages.
#[derive(Debug, Clone, Default)]
struct Work {
    c: Vec<Candidate>,
    /// `c` is ordered best first (as far as the stages that ordered it could tell).
    sorted: bool,
    /// `c[i].id == i` for every i: the untouched vocabulary, indexable by id.
    dense: bool,
    probs: Vec<f64>,
    logp: Vec<f64>,
    idx: Vec<u32>,
    tmp: Vec<Candidate>,
    window: Vec<u32>,
    counts: Vec<(u32, u32)>,
}

/// A configured sampler chain. Build one per generation (or [`SamplerChain::reset`] it).
#[derive(Debug, Clone)]
pub struct SamplerChain {
    stages: Vec<Stage>,
    choice: Choice,
    /// The resolved stage list (seed filled in), for [`SamplerChain::to_json`].
    resolved: Vec<StageConfig>,
    seed: Option<u64>,
    rng: SplitMix64,
    work: Work,
    n_accepted: u64,
}

/// A seed for a `dist` stage that was given none. Native: from the OS-seeded hasher keys and the
/// clock. wasm32 has no entropy source without imports: there it is a fixed sequence (the facade
/// should always pass a seed, e.g. from `crypto.getRandomValues`).
fn random_seed() -> u64 {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Relaxed) as u64;
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        h.finish()
    }
    #[cfg(target_arch = "wasm32")]
    {
        SplitMix64::new(0x636f_696c ^ n).next_u64()
    }
}

fn finite(name: &str, v: f64) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(bad(format!("invalid sampler config: {name} must be a finite number, got {v}")))
    }
}

fn keep(n: u64) -> usize {
    n.min(usize::MAX as u64) as usize
}

impl SamplerChain {
    /// Builds the chain a configuration stands for (`InvalidArgument` for bad values).
    pub fn new(cfg: &SamplerConfig) -> Result<SamplerChain> {
        let list = cfg.stages()?;
        if list.is_empty() {
            return Err(bad("invalid sampler config: the chain is empty (it must end with \"greedy\" or \"dist\")"));
        }
        let mut stages = Vec::new();
        let mut resolved = Vec::new();
        let mut choice = None;
        let mut seed = None;
        let last = list.len() - 1;
        for (i, st) in list.iter().enumerate() {
            if choice.is_some() {
                break;
            }
            let stage = match st {
                StageConfig::Greedy | StageConfig::Dist { .. } => {
                    if i != last {
                        return Err(bad(format!(
                            "invalid sampler config: \"{}\" is a final choice and must be the last stage of the chain",
                            if matches!(st, StageConfig::Greedy) { "greedy" } else { "dist" }
                        )));
                    }
                    if let StageConfig::Dist { seed: s } = st {
                        let s = s.map(|s| s.0).unwrap_or_else(random_seed);
                        seed = Some(s);
                        resolved.push(StageConfig::Dist { seed: Some(Seed(s)) });
                        choice = Some(Choice::Dist);
                    } else {
                        resolved.push(StageConfig::Greedy);
                        choice = Some(Choice::Greedy);
                    }
                    continue;
                }
                StageConfig::LogitBias { bias } => {
                    let mut list = bias.0.clone();
                    list.sort_by_key(|e| e.0); // stable
                    list.last().map(|&(max_id, _)| max_id).map(|max_id| Stage::Bias { list, max_id })
                }
                &StageConfig::Penalties { last_n, repeat, frequency, presence } => {
                    if last_n < -1 {
                        return Err(bad(format!(
                            "invalid sampler config: penalties lastN must be >= -1 (-1: the whole history, 0: off), got {last_n}"
                        )));
                    }
                    let repeat = finite("penalties repeat", repeat)?;
                    if repeat <= 0.0 {
                        return Err(bad(format!(
                            "invalid sampler config: penalties repeat must be > 0 (1: off), got {repeat}"
                        )));
                    }
                    let frequency = finite("penalties frequency", frequency)?;
                    let presence = finite("penalties presence", presence)?;
                    if last_n == 0 || (repeat == 1.0 && frequency == 0.0 && presence == 0.0) {
                        None
                    } else {
                        Some(Stage::Penalties {
                            last_n: if last_n < 0 { None } else { Some(keep(last_n as u64)) },
                            repeat: repeat as f32,
                            freq: frequency as f32,
                            presence: presence as f32,
                        })
                    }
                }
                &StageConfig::TopK { k } => (k > 0).then(|| Stage::TopK(keep(k as u64))),
                &StageConfig::TopP { p, min_keep } => {
                    let p = finite("top_p p", p)?;
                    (p < 1.0).then(|| Stage::TopP { p, min_keep: keep(min_keep) })
                }
                &StageConfig::MinP { p, min_keep } => {
                    let p = finite("min_p p", p)?;
                    (p > 0.0).then(|| Stage::MinP { ln_p: math::ln(p), min_keep: keep(min_keep) })
                }
                &StageConfig::TypicalP { p, min_keep } => {
                    let p = finite("typical_p p", p)?;
                    (p < 1.0).then(|| Stage::Typical { p, min_keep: keep(min_keep) })
                }
                &StageConfig::Temperature { t } => {
                    let t = finite("temperature", t)?;
                    (t != 1.0).then_some(Stage::Temperature(t as f32))
                }
            };
            resolved.push(st.clone());
            if let Some(s) = stage {
                stages.push(s);
            }
        }
        let choice = choice.ok_or_else(|| {
            bad("invalid sampler config: the chain must end with a final choice, {\"type\": \"greedy\"} or {\"type\": \"dist\"}")
        })?;
        Ok(SamplerChain {
            stages,
            choice,
            resolved,
            seed,
            rng: SplitMix64::new(seed.unwrap_or(0)),
            work: Work::default(),
            n_accepted: 0,
        })
    }

    /// Parses the JSON configuration (see [`config`]) and builds the chain.
    pub fn from_json(json: &str) -> Result<SamplerChain> {
        SamplerChain::new(&SamplerConfig::from_json(json)?)
    }

    /// Greedy decoding.
    pub fn greedy() -> SamplerChain {
        SamplerChain::new(&SamplerConfig::greedy()).expect("the greedy chain is valid")
    }

    /// The seed of the `dist` choice (the one picked at random when none was given), `None` for
    /// greedy. Passing it back in reproduces the run.
    pub fn seed(&self) -> Option<u64> {
        self.seed
    }

    pub fn is_greedy(&self) -> bool {
        self.choice == Choice::Greedy
    }

    /// The chain as an explicit `{"chain": [...]}` JSON with the seed filled in: feeding it back
    /// to [`SamplerChain::from_json`] gives the same samples. Stages without effect (top_k 0,
    /// top_p 1, ...) are listed as given. The seed is a number below 2^53, a string above.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\"chain\":[");
        for (i, s) in self.resolved.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&stage_json(s));
        }
        out.push_str("]}");
        out
    }

    /// Bans `tokens` (a −∞ bias applied before every other stage), e.g. the end-of-generation
    /// tokens for `ignore_eos`.
    pub fn ban(&mut self, tokens: &[u32]) {
        if tokens.is_empty() {
            return;
        }
        let mut list: Vec<(u32, f32)> = tokens.iter().map(|&t| (t, f32::NEG_INFINITY)).collect();
        list.sort_by_key(|e| e.0);
        list.dedup_by_key(|e| e.0);
        let max_id = list.last().map(|e| e.0).unwrap_or(0);
        self.stages.insert(0, Stage::Bias { list: list.clone(), max_id });
        self.resolved.insert(0, StageConfig::LogitBias { bias: LogitBias(list) });
    }

    /// Restarts the random sequence from the seed.
    pub fn reset(&mut self) {
        self.rng = SplitMix64::new(self.seed.unwrap_or(0));
        self.n_accepted = 0;
    }

    /// Tells the chain that `token` was chosen and appended to the sequence. No stage keeps state
    /// today (penalties read the history passed to [`SamplerChain::sample`], so editing a sequence
    /// cannot desynchronise them); this is the hook for stateful ones (grammars) and counts tokens.
    pub fn accept(&mut self, _token: u32) {
        self.n_accepted += 1;
    }

    /// Tokens accepted since creation or the last reset.
    pub fn n_accepted(&self) -> u64 {
        self.n_accepted
    }

    /// Picks the next token from `logits` (one f32 per vocabulary entry). `history`: the
    /// sequence's tokens so far (prompt and generated, oldest first); the penalties look at its
    /// last `lastN`. Errors (`InvalidArgument`): empty or all-NaN logits, or nothing left to pick
    /// (every candidate −∞); `TokenOutOfRange`: a logit-bias token outside the logits.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32> {
        self.run(logits, history)?;
        match self.choice {
            Choice::Greedy => greedy(&self.work.c),
            Choice::Dist => {
                let u = (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
                let w = &mut self.work;
                dist(&w.c, &mut w.probs, u)
            }
        }
    }

    /// The distribution the final choice draws from, after every stage: `(token, probability)`
    /// in candidate order (for greedy, the chosen token with 1). Does not advance the random
    /// sequence. For tests, and for reporting probabilities.
    pub fn distribution(&mut self, logits: &[f32], history: &[u32]) -> Result<Vec<(u32, f64)>> {
        self.run(logits, history)?;
        let w = &mut self.work;
        match self.choice {
            Choice::Greedy => Ok(vec![(greedy(&w.c)?, 1.0)]),
            Choice::Dist => {
                let (_, total) = weights_into(&w.c, &mut w.probs);
                if total <= 0.0 {
                    return Err(nothing_left());
                }
                Ok(w.c.iter().zip(&w.probs).map(|(x, &p)| (x.id, p / total)).collect())
            }
        }
    }

    /// The candidates left after the stages of the last `sample`/`distribution` call, in order.
    pub fn candidates(&self) -> &[Candidate] {
        &self.work.c
    }

    fn run(&mut self, logits: &[f32], history: &[u32]) -> Result<()> {
        let n = logits.len();
        if n == 0 {
            return Err(bad("cannot sample from empty logits"));
        }
        if n > u32::MAX as usize {
            return Err(bad("too many logits"));
        }
        let w = &mut self.work;
        w.c.clear();
        let mut nan = 0usize;
        w.c.extend(logits.iter().enumerate().map(|(i, &l)| {
            let logit = if l.is_nan() {
                nan += 1;
                f32::NEG_INFINITY
            } else {
                l
            };
            Candidate { id: i as u32, logit }
        }));
        if nan == n {
            return Err(bad("cannot sample: every logit is NaN"));
        }
        w.sorted = false;
        w.dense = true;
        for st in &self.stages {
            match *st {
                Stage::Bias { ref list, max_id } => {
                    if max_id as usize >= n {
                        return Err(CoilError::new(
                            ErrorCode::TokenOutOfRange,
                            format!("logit bias for token {max_id}, outside the vocabulary (0..{n})"),
                        ));
                    }
                    apply_bias(w, list);
                }
                Stage::Penalties { last_n, repeat, freq, presence } => {
                    let win = match last_n {
                        None => history,
                        Some(k) => &history[history.len().saturating_sub(k)..],
                    };
                    apply_penalties(w, win, repeat, freq, presence);
                }
                Stage::TopK(k) => top_k(w, k),
                Stage::TopP { p, min_keep } => top_p(w, p, min_keep),
                Stage::MinP { ln_p, min_keep } => min_p(w, ln_p, min_keep),
                Stage::Typical { p, min_keep } => typical(w, p, min_keep),
                Stage::Temperature(t) => temperature(w, t),
            }
        }
        Ok(())
    }
}

fn nothing_left() -> CoilError {
    bad("cannot sample: no token is left with a non-zero probability (every logit is -inf or NaN, or every remaining token is banned)")
}

fn fix_nan(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x
    }
}

fn apply_bias(w: &mut Work, list: &[(u32, f32)]) {
    if w.dense {
        for &(id, b) in list {
            let x = &mut w.c[id as usize].logit;
            *x = fix_nan(*x + b);
        }
    } else {
        for cand in w.c.iter_mut() {
            let start = list.partition_point(|e| e.0 < cand.id);
            for &(id, b) in &list[start..] {
                if id != cand.id {
                    break;
                }
                cand.logit = fix_nan(cand.logit + b);
            }
        }
    }
    w.sorted = false;
}

fn apply_penalties(w: &mut Work, window: &[u32], repeat: f32, freq: f32, presence: f32) {
    if window.is_empty() {
        return;
    }
    w.window.clear();
    w.window.extend_from_slice(window);
    w.window.sort_unstable();
    w.counts.clear();
    for &t in &w.window {
        match w.counts.last_mut() {
            Some(e) if e.0 == t => e.1 += 1,
            _ => w.counts.push((t, 1)),
        }
    }
    let pen = |l: f32, count: u32| -> f32 {
        let l = if l <= 0.0 { l * repeat } else { l / repeat };
        l - (count as f32 * freq + presence)
    };
    if w.dense {
        for &(id, count) in &w.counts {
            if let Some(x) = w.c.get_mut(id as usize) {
                x.logit = fix_nan(pen(x.logit, count));
            }
        }
    } else {
        for x in w.c.iter_mut() {
            if let Ok(i) = w.counts.binary_search_by_key(&x.id, |e| e.0) {
                x.logit = fix_nan(pen(x.logit, w.counts[i].1));
            }
        }
    }
    w.sorted = false;
}

fn top_k(w: &mut Work, k: usize) {
    let n = w.c.len();
    if k == 0 || k >= n {
        return;
    }
    if !w.sorted {
        extend_sorted(&mut w.c, 0, k);
        w.sorted = true;
    }
    w.c.truncate(k);
    w.dense = false;
}

fn top_p(w: &mut Work, p: f64, min_keep: usize) {
    let n = w.c.len();
    if n <= 1 {
        return;
    }
    let (max, total) = weights_sum(&w.c);
    if total <= 0.0 {
        return;
    }
    let mut have = if w.sorted {
        n
    } else {
        let m = if n > 1024 { 256 } else { n };
        extend_sorted(&mut w.c, 0, m);
        m
    };
    let mut cum = 0.0f64;
    let mut last = n;
    for i in 0..n {
        if i == have {
            let m = n.min(have.saturating_mul(4));
            extend_sorted(&mut w.c, have, m);
            have = m;
        }
        cum += weight(w.c[i].logit, max) / total;
        if cum >= p && i + 1 >= min_keep {
            last = i + 1;
            break;
        }
    }
    w.c.truncate(last);
    w.sorted = true;
    w.dense = false;
}

fn min_p(w: &mut Work, ln_p: f64, min_keep: usize) {
    let n = w.c.len();
    if n == 0 {
        return;
    }
    let mut max = f32::NEG_INFINITY;
    for x in &w.c {
        if x.logit > max {
            max = x.logit;
        }
    }
    if max == f32::NEG_INFINITY {
        return;
    }
    // p_i >= p * p_max  <=>  logit_i >= max + ln p.
    let thr = max as f64 + ln_p;
    let count = w.c.iter().filter(|x| x.logit as f64 >= thr).count();
    if count == n {
        return;
    }
    let need = min_keep.max(1);
    if count >= need {
        w.c.retain(|x| x.logit as f64 >= thr);
    } else {
        let need = need.min(n);
        if !w.sorted {
            extend_sorted(&mut w.c, 0, need);
            w.sorted = true;
        }
        w.c.truncate(need);
    }
    w.dense = false;
}

fn typical(w: &mut Work, p: f64, min_keep: usize) {
    let n = w.c.len();
    if n <= 1 {
        return;
    }
    let (max, total) = weights_sum(&w.c);
    if total <= 0.0 {
        return;
    }
    let ln_total = math::ln(total);
    w.probs.clear();
    w.logp.clear();
    let mut entropy = 0.0f64;
    for x in &w.c {
        let shifted = if x.logit == max { 0.0 } else { x.logit as f64 - max as f64 };
        let lp = shifted - ln_total;
        let pi = weight(x.logit, max) / total;
        if pi > 0.0 {
            entropy -= pi * lp;
        }
        w.probs.push(pi);
        w.logp.push(lp);
    }
    // Shifted score |−log p − H| (∞ for p = 0), kept in `logp`.
    for lp in w.logp.iter_mut() {
        *lp = (-*lp - entropy).abs();
    }
    w.idx.clear();
    w.idx.extend(0..n as u32);
    {
        let (scores, c) = (&w.logp, &w.c);
        w.idx.sort_unstable_by(|&a, &b| {
            scores[a as usize].total_cmp(&scores[b as usize]).then_with(|| cmp_best(&c[a as usize], &c[b as usize]))
        });
    }
    let mut cum = 0.0f64;
    let mut last = n;
    for (r, &i) in w.idx.iter().enumerate() {
        cum += w.probs[i as usize];
        if cum > p && r + 1 >= min_keep {
            last = r + 1;
            break;
        }
    }
    w.tmp.clear();
    for &i in &w.idx[..last] {
        w.tmp.push(w.c[i as usize]);
    }
    std::mem::swap(&mut w.c, &mut w.tmp);
    w.sorted = false;
    w.dense = false;
}

fn temperature(w: &mut Work, t: f32) {
    if t <= 0.0 {
        // Keep only the first maximum in candidate order.
        if w.c.is_empty() {
            return;
        }
        let mut best = 0;
        for i in 1..w.c.len() {
            if w.c[i].logit > w.c[best].logit {
                best = i;
            }
        }
        let keep = w.c[best];
        w.c.clear();
        w.c.push(keep);
        w.sorted = true;
        w.dense = false;
        return;
    }
    for x in w.c.iter_mut() {
        x.logit /= t;
    }
}

fn greedy(c: &[Candidate]) -> Result<u32> {
    let Some(mut best) = c.first().copied() else { return Err(nothing_left()) };
    for x in &c[1..] {
        if x.logit > best.logit {
            best = *x;
        }
    }
    if best.logit > f32::NEG_INFINITY {
        Ok(best.id)
    } else {
        Err(nothing_left())
    }
}

/// The first candidate whose running weight exceeds `u` times the total.
fn dist(c: &[Candidate], weights: &mut Vec<f64>, u: f64) -> Result<u32> {
    let (_, total) = weights_into(c, weights);
    if total <= 0.0 {
        return Err(nothing_left());
    }
    let target = u * total;
    let mut cum = 0.0f64;
    let mut last_nonzero = None;
    for (x, &wx) in c.iter().zip(weights.iter()) {
        cum += wx;
        if wx > 0.0 {
            if cum > target {
                return Ok(x.id);
            }
            last_nonzero = Some(x.id);
        }
    }
    // Only reachable when u·total rounds up to the total.
    last_nonzero.ok_or_else(nothing_left)
}

fn num_json(v: f64) -> String {
    if v.is_finite() {
        // Rust prints the shortest representation that round-trips.
        let s = format!("{v}");
        s
    } else if v > 0.0 {
        "\"inf\"".into()
    } else {
        "\"-inf\"".into()
    }
}

fn stage_json(s: &StageConfig) -> String {
    match s {
        StageConfig::LogitBias { bias } => {
            let items: Vec<String> = bias.0.iter().map(|&(id, b)| format!("[{id},{}]", num_json(b as f64))).collect();
            format!("{{\"type\":\"logit_bias\",\"bias\":[{}]}}", items.join(","))
        }
        StageConfig::Penalties { last_n, repeat, frequency, presence } => format!(
            "{{\"type\":\"penalties\",\"lastN\":{last_n},\"repeat\":{},\"frequency\":{},\"presence\":{}}}",
            num_json(*repeat),
            num_json(*frequency),
            num_json(*presence)
        ),
        StageConfig::TopK { k } => format!("{{\"type\":\"top_k\",\"k\":{k}}}"),
        StageConfig::TopP { p, min_keep } => {
            format!("{{\"type\":\"top_p\",\"p\":{},\"minKeep\":{min_keep}}}", num_json(*p))
        }
        StageConfig::MinP { p, min_keep } => {
            format!("{{\"type\":\"min_p\",\"p\":{},\"minKeep\":{min_keep}}}", num_json(*p))
        }
        StageConfig::TypicalP { p, min_keep } => {
            format!("{{\"type\":\"typical_p\",\"p\":{},\"minKeep\":{min_keep}}}", num_json(*p))
        }
        StageConfig::Temperature { t } => format!("{{\"type\":\"temperature\",\"t\":{}}}", num_json(*t)),
        StageConfig::Greedy => "{\"type\":\"greedy\"}".into(),
        StageConfig::Dist { seed } => match seed {
            Some(Seed(s)) if *s < (1u64 << 53) => format!("{{\"type\":\"dist\",\"seed\":{s}}}"),
            Some(Seed(s)) => format!("{{\"type\":\"dist\",\"seed\":\"{s}\"}}"),
            None => "{\"type\":\"dist\"}".into(),
        },
    }
}
