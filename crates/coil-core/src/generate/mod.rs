//! Token-by-token generation on one sequence of a [`Context`]: evaluate, sample, decode, stop.
//!
//! A [`Generator`] holds what one generation needs besides the recurrent state — the sampler
//! chain, a UTF-8-safe [`StreamDecoder`], the [`StopMatcher`] and counters — and nothing of how it
//! is driven: the bindings keep it next to a context and call [`Generator::step`] once per token
//! (or evaluate themselves, e.g. many sequences in one batch, and call [`Generator::advance`]
//! with each sequence's logits).
//!
//! # Steps and the position contract
//! Let the sequence be at position `P0` before the first step (it may already hold tokens: the
//! prompt continues it) and let the prompt have `L` tokens.
//! * Step 1 is called with `feed = prompt`. It evaluates the prompt, samples token `t1` from the
//!   logits after the prompt's last token and returns it. The sequence is then at `P0 + L`:
//!   **`t1` is not in the state yet.**
//! * Step `k ≥ 2` is called with `feed = [t(k-1)]` (or `&[]`, meaning the same): it evaluates the
//!   token returned by the previous step and samples `tk`. Afterwards the sequence is at
//!   `P0 + L + k − 1`.
//! * So at any point between steps — after a normal stop, after the caller stops calling (abort),
//!   or after an error in sampling — the sequence holds exactly the prompt and the tokens that
//!   were fed: `ctx.position(seq) == gen.start_position() + gen.n_fed()`. The last sampled token
//!   ([`Generator::pending_token`]) is never in the state; a caller that wants it there (to
//!   continue the sequence later, e.g. the end-of-turn token of a chat) evaluates it itself.
//! * On a stop string, the tokens that make up the stop string up to the last one are in the
//!   state (they were fed before the match completed), although their text is not shown.
//! * [`Generator::step`] checks the position before evaluating and refuses (`InvalidArgument`)
//!   if the sequence was changed between steps. If the evaluation itself fails with anything but
//!   `INTERNAL`, nothing changed (neither the sequence nor the generator) and the step can be
//!   retried. A sampling error (e.g. every token banned) happens after the evaluation: the fed
//!   tokens are in the state and counted in `n_fed`, and the generator is finished.
//!
//! # Text
//! Each step's `text` is what is safe to show now: never half a UTF-8 character, never a
//! possible start of a stop string. Concatenated, the steps' texts are [`Generator::text`]. When a
//! step stops, the held-back text is flushed into its `text` (an incomplete character as U+FFFD),
//! except a matched stop string and anything after it. An end-of-generation token (per the
//! tokenizer's EOG set) stops with [`StopReason::Eos`] and contributes no text. Tokens render as
//! `Tokenizer::token_to_piece` (control tokens as nothing unless `special`). Stop strings are
//! matched against this text.
//!
//! # Counting
//! [`Generator::generated`] lists every sampled token including the last (pending) one and an
//! EOG token that ended generation; `max_tokens` limits its length. Precedence when one token
//! triggers several: Eos, then Stop, then MaxTokens.

pub mod runner;
pub mod stop;

use std::sync::Arc;

use serde::Deserialize;

pub use stop::StopMatcher;

use crate::context::{Batch, Context, Logits};
use crate::error::{CoilError, ErrorCode, Result};
use crate::model::Model;
use crate::sampling::{SamplerChain, SamplerConfig};
use crate::tokenizer::StreamDecoder;

fn bad(msg: impl Into<String>) -> CoilError {
    CoilError::new(ErrorCode::InvalidArgument, msg)
}

/// What a generation does. JSON (camelCase or snake_case keys):
/// `{"sampler": {...SamplerConfig...}, "maxTokens": 128, "stop": ["\n\n"], "ignoreEos": false,
/// "special": false}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateParams {
    /// The sampler chain (see [`crate::sampling::config`]); default: llama.cpp's defaults.
    #[serde(default)]
    pub sampler: SamplerConfig,
    /// Most tokens to sample (≥ 1); `None`: no limit.
    #[serde(default, alias = "maxTokens")]
    pub max_tokens: Option<u32>,
    /// Stop strings (none may be empty).
    #[serde(default)]
    pub stop: Vec<String>,
    /// Never sample an end-of-generation token (they get a −∞ bias, as llama.cpp's
    /// `ignore_eos`), so generation only ends by `max_tokens` or a stop string.
    #[serde(default, alias = "ignoreEos")]
    pub ignore_eos: bool,
    /// Render control tokens as their text (`<|im_start|>`) instead of nothing.
    #[serde(default)]
    pub special: bool,
}

impl GenerateParams {
    pub fn from_json(json: &str) -> Result<GenerateParams> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        serde_json::from_str(json).map_err(|e| bad(format!("invalid generation parameters: {e}")))
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// The sampled token is an end-of-generation token (not shown as text).
    Eos,
    /// `max_tokens` tokens were sampled.
    MaxTokens,
    /// A stop string was completed (it is not shown).
    Stop,
}

impl StopReason {
    /// `"eos"`, `"maxTokens"`, `"stop"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::MaxTokens => "maxTokens",
            StopReason::Stop => "stop",
        }
    }
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The sampled token (not yet in the sequence's state: see the module documentation).
    pub token: u32,
    /// Text that is safe to show now (possibly empty).
    pub text: String,
    /// Set when generation is over; no further step is allowed.
    pub stop: Option<StopReason>,
}

impl Step {
    /// `{"token":..,"text":..,"stop":null|"eos"|"maxTokens"|"stop"}` for the bindings.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "token": self.token,
            "text": self.text,
            "stop": self.stop.map(|r| r.as_str()),
        })
        .to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the first step.
    Fresh,
    Running,
    /// Stopped (`None`: ended by [`Generator::finish`]).
    Done(Option<StopReason>),
    /// A step failed after changing the state.
    Failed,
}

/// One generation on one sequence. See the module documentation for the contract.
pub struct Generator {
    model: Arc<Model>,
    sampler: SamplerChain,
    decoder: StreamDecoder,
    stops: StopMatcher,
    max_tokens: Option<u32>,
    ignore_eos: bool,
    /// Logit rows must have this length (the model's vocabulary), when known.
    n_vocab: Option<usize>,
    /// Tokens the sequence held before the prompt that the penalties should see, then everything
    /// fed.
    history: Vec<u32>,
    generated: Vec<u32>,
    text: String,
    pending: Option<u32>,
    n_fed: usize,
    prompt_len: Option<usize>,
    seq: Option<u32>,
    start_pos: Option<u32>,
    state: State,
    logits: Logits,
}

impl Generator {
    /// Prepares a generation. Errors (`InvalidArgument`): a bad sampler config, `max_tokens` 0,
    /// an empty stop string, or stop strings for a model without a tokenizer.
    pub fn new(model: Arc<Model>, params: GenerateParams) -> Result<Generator> {
        let mut sampler = SamplerChain::new(&params.sampler)?;
        if params.max_tokens == Some(0) {
            return Err(bad("maxTokens must be at least 1 (leave it out for no limit)"));
        }
        let stops = StopMatcher::new(params.stop)?;
        let tok = model.tokenizer().ok();
        if tok.is_none() && !stops.stops().is_empty() {
            return Err(bad("stop strings need a tokenizer, and this model has none"));
        }
        if params.ignore_eos {
            if let Some(t) = tok {
                sampler.ban(t.eog_tokens());
            }
        }
        let n_vocab = model.hparams().map(|h| h.n_vocab);
        Ok(Generator {
            sampler,
            decoder: StreamDecoder::new(params.special),
            stops,
            max_tokens: params.max_tokens,
            ignore_eos: params.ignore_eos,
            n_vocab,
            history: Vec::new(),
            generated: Vec::new(),
            text: String::new(),
            pending: None,
            n_fed: 0,
            prompt_len: None,
            seq: None,
            start_pos: None,
            state: State::Fresh,
            logits: Logits::default(),
            model,
        })
    }

    /// Tokens the sequence already holds before the prompt (e.g. earlier turns of a chat), for
    /// the repetition penalties only. Only before the first step.
    pub fn set_context_tokens(&mut self, tokens: &[u32]) -> Result<()> {
        if self.state != State::Fresh {
            return Err(bad("context tokens can only be set before the first step"));
        }
        self.history.clear();
        self.history.extend_from_slice(tokens);
        Ok(())
    }

    fn check_can_step(&self) -> Result<()> {
        match self.state {
            State::Fresh | State::Running => Ok(()),
            State::Done(Some(r)) => Err(bad(format!("generation has finished ({})", r.as_str()))),
            State::Done(None) => Err(bad("generation has finished (ended by the caller)")),
            State::Failed => Err(bad("generation has failed; start a new one")),
        }
    }

    /// The tokens to feed: the prompt on the first step, then the pending token.
    fn resolve_feed<'a>(&self, feed: &'a [u32], one: &'a mut [u32; 1]) -> Result<&'a [u32]> {
        if self.prompt_len.is_none() {
            if feed.is_empty() {
                return Err(bad("the first step needs the prompt (at least one token)"));
            }
            return Ok(feed);
        }
        let p = self.pending.ok_or_else(|| CoilError::new(ErrorCode::Internal, "no pending token"))?;
        if feed.is_empty() || feed == [p] {
            one[0] = p;
            Ok(&one[..])
        } else {
            Err(bad(format!(
                "after the first step, feed the token the previous step returned ({p}) or nothing; got {} token(s)",
                feed.len()
            )))
        }
    }

    /// Evaluates `feed` on sequence `seq` of `ctx` (the prompt on the first call, then the token
    /// the previous step returned, or `&[]` for it), samples the next token, decodes it, and runs
    /// the stop checks. See the module documentation for the position contract.
    pub fn step(&mut self, ctx: &mut Context, seq: u32, feed: &[u32]) -> Result<Step> {
        let pos = self.check_target(ctx, seq)?;
        let mut one = [0u32; 1];
        let toks = self.resolve_feed(feed, &mut one)?;
        let batch = Batch::for_sequence(seq, toks, false);
        if let Err(e) = ctx.evaluate_into(&batch, &mut self.logits) {
            if e.code == ErrorCode::Internal {
                self.state = State::Failed;
            }
            return Err(e);
        }
        if self.start_pos.is_none() {
            self.start_pos = Some(pos);
            self.seq = Some(seq);
        }
        let logits = std::mem::take(&mut self.logits);
        let r = self.advance_inner(toks, logits.row(logits.len().saturating_sub(1)));
        self.logits = logits;
        r
    }

    /// As [`Generator::step`] for a caller that evaluated `fed` itself (e.g. several sequences
    /// in one batch): `fed` are the tokens it evaluated (the prompt first, then the token the
    /// previous step returned), `logits` the logits after the last of them. No position checks.
    pub fn advance(&mut self, fed: &[u32], logits: &[f32]) -> Result<Step> {
        self.check_can_step()?;
        let mut one = [0u32; 1];
        let toks = self.resolve_feed(fed, &mut one)?;
        if let Some(n) = self.n_vocab {
            if logits.len() != n {
                return Err(bad(format!("expected {n} logits (the vocabulary), got {}", logits.len())));
            }
            if let Some(&t) = toks.iter().find(|&&t| t as usize >= n) {
                return Err(CoilError::new(
                    ErrorCode::TokenOutOfRange,
                    format!("token {t} is outside the vocabulary (0..{n})"),
                ));
            }
        }
        self.advance_inner(toks, logits)
    }

    /// For a caller that evaluates several generations in one batch ([`runner::Runner`]): checks
    /// what [`Generator::step`] checks — the model, the sequence, that it is where this generation
    /// left it — and returns the tokens this step feeds. Changes nothing.
    pub fn next_feed(&self, ctx: &Context, seq: u32, feed: &[u32]) -> Result<Vec<u32>> {
        self.check_target(ctx, seq)?;
        let mut one = [0u32; 1];
        Ok(self.resolve_feed(feed, &mut one)?.to_vec())
    }

    /// The checks before a step on `seq` of `ctx`: the generation can step, the context is of its
    /// model, it runs on `seq`, and `seq` is where it left it. Returns `seq`'s position.
    fn check_target(&self, ctx: &Context, seq: u32) -> Result<u32> {
        self.check_can_step()?;
        if !Arc::ptr_eq(ctx.model(), &self.model) {
            return Err(bad("the context belongs to a different model than the generator"));
        }
        if let Some(s) = self.seq {
            if s != seq {
                return Err(bad(format!("this generation runs on sequence {s}, not {seq}")));
            }
        }
        let pos = ctx.position(seq)?;
        if let Some(want) = self.position() {
            if pos as u64 != want {
                return Err(bad(format!(
                    "sequence {seq} is at position {pos}, but this generation left it at {want}: it was changed between steps"
                )));
            }
        }
        Ok(pos)
    }

    /// Continues after the caller evaluated `fed` (from [`Generator::next_feed`]) on `seq`,
    /// which was at `pos_before`; `logits` are those after the last fed token. As `step` would.
    pub fn advance_on(&mut self, seq: u32, pos_before: u32, fed: &[u32], logits: &[f32]) -> Result<Step> {
        if self.start_pos.is_none() {
            self.start_pos = Some(pos_before);
            self.seq = Some(seq);
        }
        self.advance(fed, logits)
    }

    fn advance_inner(&mut self, fed: &[u32], logits: &[f32]) -> Result<Step> {
        if self.prompt_len.is_none() {
            self.prompt_len = Some(fed.len());
        }
        self.history.extend_from_slice(fed);
        self.n_fed += fed.len();
        self.pending = None;
        self.state = State::Running;
        let token = match self.sampler.sample(logits, &self.history) {
            Ok(t) => t,
            Err(e) => {
                self.state = State::Failed;
                return Err(e);
            }
        };
        self.sampler.accept(token);
        self.generated.push(token);
        self.pending = Some(token);

        let model = Arc::clone(&self.model);
        let tok = model.tokenizer().ok();
        let mut stop = None;
        let mut text;
        if !self.ignore_eos && tok.is_some_and(|t| t.is_eog(token)) {
            stop = Some(StopReason::Eos);
            text = self.drain();
        } else {
            let piece = match tok {
                // Ids past the tokenizer (padding rows of the output matrix) render as nothing.
                Some(t) if (token as usize) < t.n_vocab() => self.decoder.push(t, token)?,
                _ => String::new(),
            };
            let (out, hit) = self.stops.push(&piece);
            text = out;
            if hit {
                stop = Some(StopReason::Stop);
            } else if self.max_tokens.is_some_and(|m| self.generated.len() >= m as usize) {
                stop = Some(StopReason::MaxTokens);
                text.push_str(&self.drain());
            }
        }
        if stop.is_some() {
            self.state = State::Done(stop);
        }
        self.text.push_str(&text);
        Ok(Step { token, text, stop })
    }

    /// Flushes the decoder and the stop matcher.
    fn drain(&mut self) -> String {
        let rest = self.decoder.flush();
        let (mut out, hit) = self.stops.push(&rest);
        if !hit {
            out.push_str(&self.stops.flush());
        }
        out
    }

    /// Ends the generation early (abort): returns the text still held back (a possible start of
    /// a stop string, an incomplete character as U+FFFD), which the caller may show or drop.
    /// Further steps are refused. Empty when generation had already stopped.
    pub fn finish(&mut self) -> String {
        match self.state {
            State::Fresh | State::Running => {
                self.state = State::Done(None);
                let s = self.drain();
                self.text.push_str(&s);
                s
            }
            _ => String::new(),
        }
    }

    /// Ends the generation the way coil's JS API does: the pending token (the last one sampled,
    /// an end-of-generation token included) is evaluated into the sequence, so its position
    /// counts the prompt and every generated token, and the text still held back is returned
    /// (see [`Generator::finish`]). Both bindings call this, so both targets agree.
    pub fn end(&mut self, ctx: &mut Context, seq: u32) -> Result<String> {
        if let Some(t) = self.pending {
            // Only when the sequence is where this generation left it.
            if self.sequence() == Some(seq) && Some(ctx.position(seq)? as u64) == self.position() {
                ctx.evaluate(&crate::context::Batch {
                    tokens: vec![t],
                    seq: vec![seq],
                    pos: None,
                    logits: vec![false],
                })?;
                self.pending = None;
            }
        }
        Ok(self.finish())
    }

    /// The token the last step sampled, which is not in the sequence's state (feed it to include
    /// it). `None` before the first step and after a sampling error.
    pub fn pending_token(&self) -> Option<u32> {
        self.pending
    }

    /// Every token sampled so far, including the pending one (and an EOG that ended generation).
    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    /// All text shown so far (the concatenation of the steps' `text`).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Tokens evaluated into the sequence by this generation (prompt + fed tokens).
    pub fn n_fed(&self) -> usize {
        self.n_fed
    }

    /// Length of the prompt (after the first step).
    pub fn prompt_len(&self) -> Option<usize> {
        self.prompt_len
    }

    /// The sequence's position before the prompt (after the first [`Generator::step`]).
    pub fn start_position(&self) -> Option<u32> {
        self.start_pos
    }

    /// The sequence's position now, by this generation's account:
    /// `start_position() + n_fed()` (after the first [`Generator::step`]).
    pub fn position(&self) -> Option<u64> {
        self.start_pos.map(|p| p as u64 + self.n_fed as u64)
    }

    /// The sequence this generation runs on (after the first [`Generator::step`]).
    pub fn sequence(&self) -> Option<u32> {
        self.seq
    }

    /// Why generation stopped (`None` while running, after [`Generator::finish`] or a failure).
    pub fn stop_reason(&self) -> Option<StopReason> {
        match self.state {
            State::Done(r) => r,
            _ => None,
        }
    }

    /// Whether further steps are refused.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Done(_) | State::Failed)
    }

    /// The stop string that ended generation.
    pub fn matched_stop(&self) -> Option<&str> {
        self.stops.matched()
    }

    /// The tokens the penalties see: context tokens, prompt, fed tokens.
    pub fn history(&self) -> &[u32] {
        &self.history
    }

    /// The sampler chain (its seed, its JSON).
    pub fn sampler(&self) -> &SamplerChain {
        &self.sampler
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }
}
