//! Evaluation contexts: recurrent state and KV cells for several sequences, and batched
//! evaluation.
//!
//! A [`Context`] owns a [`HybridMemory`]: one recurrent-state slot per sequence id `0..n_seq_max`
//! (per recurrent layer a conv state of (d_conv−1)·conv_dim floats and an SSM state of
//! d_state·d_inner floats, all f32), for attention models a paged KV cache (`kv`) of up to
//! `n_ctx` tokens per sequence, and a position per sequence: how many tokens it has absorbed. [`Context::evaluate`] runs a
//! [`Batch`] — tokens of any of the sequences, interleaved or not, of different lengths — and
//! returns [`Logits`] for the tokens that asked for them, in batch order.
//!
//! Each sequence's tokens must continue it: the first token of sequence s in a batch has position
//! `ctx.position(s)`, the next one more, and so on (a recurrent state cannot rewind). Everything
//! in a batch is checked before any state changes, so a failed `evaluate` leaves every sequence
//! exactly as it was.
//!
//! Internally a batch is regrouped by sequence and cut into micro-batches of at most `n_ubatch`
//! tokens in which every sequence has the same number of tokens (`split`); within a micro-batch
//! the projections run as one batched matmul over all tokens and the conv and scan step every
//! sequence on its slot, in place.
//!
//! Sequence operations beyond evaluation — fork, truncate (rollback through checkpoints), prompt
//! reuse — live in `tree`; saving and restoring states in `state_io`.

mod split;
pub mod state_io;
mod tree;

pub mod kv;
pub mod memory;

use std::sync::Arc;

use crate::error::{CoilError, ErrorCode, Result};
use crate::model::compat::{physical_cores, ThreadPool};
use crate::model::graph::{forward, Scratch, Segment};
use crate::model::{HParams, Model};
pub use kv::{KvCache, KvType, BLOCK_TOKENS};
pub use memory::HybridMemory;

/// The context length used when none is asked for: the model's training context
/// (`{arch}.context_length`), capped at 4096 tokens.
pub const DEFAULT_CONTEXT_CAP: u32 = 4096;

/// [`DEFAULT_CONTEXT_CAP`] applied to `hp`.
pub fn default_context_length(hp: &HParams) -> u32 {
    match hp.n_ctx_train {
        0 => DEFAULT_CONTEXT_CAP,
        n => (n as u64).min(DEFAULT_CONTEXT_CAP as u64) as u32,
    }
}

pub use state_io::SaveOptions;
pub use tree::CheckpointPolicy;

/// Parameters of a [`Context`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextParams {
    /// Sequences the context holds (ids `0..n_seq_max`), each with its own state slot.
    pub n_seq_max: u32,
    /// Threads for evaluation (0: the number of cores).
    pub n_threads: usize,
    /// Most tokens processed together per step (activation memory grows with it). 0: 512.
    pub n_ubatch: usize,
    /// Tokens each sequence may hold in the KV cache of attention layers (0: the model's
    /// training context capped at 4096, see [`default_context_length`]). Recurrent-only models
    /// have no KV cache and no bound.
    pub n_ctx: u32,
    /// Element type of the KV cache.
    pub kv_type: KvType,
}

impl Default for ContextParams {
    fn default() -> Self {
        ContextParams { n_seq_max: 1, n_threads: 0, n_ubatch: 512, n_ctx: 0, kv_type: KvType::F16 }
    }
}

/// Tokens to evaluate. All vectors have one entry per token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub tokens: Vec<u32>,
    /// The sequence of each token.
    pub seq: Vec<u32>,
    /// Positions; when given, each must be the one its sequence is at (checked). `None`: continue
    /// every sequence where it is.
    pub pos: Option<Vec<u32>>,
    /// Whether to return logits for each token.
    pub logits: Vec<bool>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    /// `tokens` of sequence `seq`, with logits for the last token only (or for every token).
    pub fn for_sequence(seq: u32, tokens: &[u32], all_logits: bool) -> Batch {
        let n = tokens.len();
        Batch {
            tokens: tokens.to_vec(),
            seq: vec![seq; n],
            pos: None,
            logits: (0..n).map(|i| all_logits || i + 1 == n).collect(),
        }
    }

    /// Appends one token (positions left implicit: `pos` is not touched, so a batch built with
    /// explicit positions must get them through [`Batch::push_at`]).
    pub fn push(&mut self, token: u32, seq: u32, logits: bool) -> &mut Batch {
        self.tokens.push(token);
        self.seq.push(seq);
        self.logits.push(logits);
        self
    }

    /// Appends one token with an explicit position (a batch holds positions for all of its
    /// tokens or for none; mixing is rejected by `evaluate`).
    pub fn push_at(&mut self, token: u32, seq: u32, pos: u32, logits: bool) -> &mut Batch {
        self.push(token, seq, logits);
        // If earlier tokens had no positions the lengths now differ, which evaluate reports.
        self.pos.get_or_insert_with(Vec::new).push(pos);
        self
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Logits of the tokens that asked for them: `len()` rows of `n_vocab` f32, in batch order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Logits {
    n_vocab: usize,
    data: Vec<f32>,
    /// Batch index of each row.
    index: Vec<u32>,
}

impl Logits {
    pub fn n_vocab(&self) -> usize {
        self.n_vocab
    }
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
    /// Row `i` (the i-th token that asked for logits, in batch order).
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.n_vocab..(i + 1) * self.n_vocab]
    }
    /// All rows, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
    /// The batch index of each row.
    pub fn batch_indices(&self) -> &[u32] {
        &self.index
    }
    /// The row of batch index `i`, if it asked for logits.
    pub fn for_batch_index(&self, i: u32) -> Option<&[f32]> {
        self.index.binary_search(&i).ok().map(|r| self.row(r))
    }
}

/// Evaluation state for several sequences of one model.
pub struct Context {
    model: Arc<Model>,
    params: ContextParams,
    pool: ThreadPool,
    mem: HybridMemory,
    scratch: Scratch,
    /// Token histories, checkpoints and copy-on-write forks of every slot (see `tree`).
    tree: tree::Tree,
    /// Reused per evaluate: the tokens of one micro-batch.
    tokens: Vec<u32>,
}

fn bad(msg: impl Into<String>) -> CoilError {
    CoilError::new(ErrorCode::InvalidArgument, msg)
}

/// The most sequences one context may hold (a sanity bound; memory is the real limit).
pub const MAX_SEQ: u32 = 1 << 16;

impl Context {
    pub fn new(model: Arc<Model>, params: ContextParams) -> Result<Context> {
        let hp = model.require_weights()?.hp.clone();
        if params.n_seq_max == 0 || params.n_seq_max > MAX_SEQ {
            return Err(bad(format!("n_seq_max must be in 1..={MAX_SEQ}, got {}", params.n_seq_max)));
        }
        let mut params = params;
        if params.n_threads == 0 {
            params.n_threads = physical_cores();
        }
        if params.n_threads > 1024 {
            return Err(bad(format!("n_threads {} is absurd", params.n_threads)));
        }
        if params.n_ubatch == 0 {
            params.n_ubatch = 512;
        }
        params.n_ubatch = params.n_ubatch.min(1 << 16);
        if params.n_ctx == 0 {
            params.n_ctx = default_context_length(&hp);
        }
        let mem = HybridMemory::new(&hp, params.n_seq_max as usize, params.n_ctx as usize, params.kv_type)?;
        Ok(Context {
            pool: ThreadPool::new(params.n_threads),
            mem,
            scratch: Scratch::default(),
            tree: tree::Tree::new(params.n_seq_max as usize),
            tokens: Vec::new(),
            model,
            params,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn params(&self) -> ContextParams {
        self.params
    }

    pub fn n_seq_max(&self) -> u32 {
        self.params.n_seq_max
    }

    pub fn n_threads(&self) -> usize {
        self.pool.n_threads()
    }

    /// Bytes of recurrent state each sequence owns (all recurrent layers, f32).
    pub fn state_bytes_per_sequence(&self) -> u64 {
        self.mem.recurrent_bytes_per_sequence()
    }

    /// Tokens per sequence the KV cache holds (see [`ContextParams::n_ctx`]).
    pub fn n_ctx(&self) -> u32 {
        self.params.n_ctx
    }

    pub fn kv_type(&self) -> KvType {
        self.params.kv_type
    }

    /// Bytes of KV cache per token (0 for recurrent-only models).
    pub fn kv_bytes_per_token(&self) -> u64 {
        self.mem.kv_bytes_per_token()
    }

    /// Bytes of KV cache one sequence takes at the full context length.
    pub fn kv_bytes_per_sequence(&self) -> u64 {
        self.mem.kv_bytes_per_sequence()
    }

    /// The memory accounting as JSON: `{"context_length","kv_type","attention_layers",
    /// "recurrent_state_bytes_per_sequence","kv_bytes_per_token","kv_bytes_per_sequence"}`.
    pub fn memory_json(&self) -> String {
        format!(
            "{{\"context_length\":{},\"kv_type\":\"{}\",\"attention_layers\":{},\"recurrent_state_bytes_per_sequence\":{},\"kv_bytes_per_token\":{},\"kv_bytes_per_sequence\":{}}}",
            self.params.n_ctx,
            self.params.kv_type.name(),
            self.mem.kv().map_or(0, |k| k.n_layers()),
            self.state_bytes_per_sequence(),
            self.kv_bytes_per_token(),
            self.kv_bytes_per_sequence()
        )
    }

    /// The sequences' memory (recurrent states and KV cells).
    pub fn memory(&self) -> &HybridMemory {
        &self.mem
    }

    /// Mutable access to the memory, for operations on whole sequences (fork, truncate,
    /// save/load). Each of them is all-or-nothing.
    pub fn memory_mut(&mut self) -> &mut HybridMemory {
        &mut self.mem
    }

    fn check_seq(&self, seq: u32) -> Result<usize> {
        if seq >= self.params.n_seq_max {
            return Err(bad(format!(
                "sequence {seq} is out of range: this context holds sequences 0..{}",
                self.params.n_seq_max
            )));
        }
        Ok(seq as usize)
    }

    /// The position the next token of `seq` must have: the number of tokens its state holds.
    pub fn position(&self, seq: u32) -> Result<u32> {
        self.check_seq(seq)?;
        self.mem.position(seq)
    }

    /// Resets `seq` to the empty state (position 0): recurrent state and KV cells.
    pub fn clear(&mut self, seq: u32) -> Result<()> {
        let s = self.check_seq(seq)?;
        self.tree.reset(&mut self.mem.rec, s);
        self.mem.clear(seq)
    }

    /// Resets every sequence.
    pub fn clear_all(&mut self) {
        self.mem.clear_all();
        let policy = self.tree.policy;
        self.tree = tree::Tree::new(self.mem.n_seq());
        self.tree.policy = policy;
    }

    /// A copy of `seq`'s recurrent state (conv states of every recurrent layer, then SSM
    /// states), for tests and debugging.
    pub fn state_snapshot(&self, seq: u32) -> Result<Vec<f32>> {
        let s = self.check_seq(seq)?;
        let mut v = Vec::new();
        self.mem.rec.copy_slot(self.tree.source(s), &mut v);
        Ok(v)
    }

    /// Evaluates `batch`; returns the logits of the tokens that asked, in batch order.
    pub fn evaluate(&mut self, batch: &Batch) -> Result<Logits> {
        let mut out = Logits::default();
        self.evaluate_into(batch, &mut out)?;
        Ok(out)
    }

    /// As [`Context::evaluate`], reusing `out`'s memory.
    pub fn evaluate_into(&mut self, batch: &Batch, out: &mut Logits) -> Result<()> {
        let model = Arc::clone(&self.model);
        let w = model.require_weights()?;
        let n_vocab = w.hp.n_vocab;
        let n = batch.tokens.len();

        // ---- Validate everything before touching any state. ----
        if n == 0 {
            return Err(bad("the batch is empty"));
        }
        if batch.seq.len() != n || batch.logits.len() != n {
            return Err(bad(format!(
                "batch vectors differ in length: {n} tokens, {} sequence ids, {} logits flags",
                batch.seq.len(),
                batch.logits.len()
            )));
        }
        if let Some(p) = &batch.pos {
            if p.len() != n {
                return Err(bad(format!("batch has {n} tokens but {} positions", p.len())));
            }
        }
        if n > u32::MAX as usize {
            return Err(bad("batch too large"));
        }
        for (i, &t) in batch.tokens.iter().enumerate() {
            if t as usize >= n_vocab {
                return Err(CoilError::new(
                    ErrorCode::TokenOutOfRange,
                    format!("token {t} at batch index {i} is outside the model's vocabulary (0..{n_vocab})"),
                ));
            }
        }
        // Next position per sequence as the batch advances (only touched sequences matter).
        let n_seq = self.params.n_seq_max as usize;
        let mut next: Vec<u32> = (0..n_seq as u32).map(|s| self.mem.position(s).unwrap_or(0)).collect();
        let start_pos = next.clone();
        for (i, &s) in batch.seq.iter().enumerate() {
            let su = self.check_seq(s).map_err(|e| bad(format!("batch index {i}: {}", e.message)))?;
            let want = next[su];
            if let Some(p) = &batch.pos {
                if p[i] != want {
                    return Err(bad(format!(
                        "batch index {i}: sequence {s} is at position {want}, but the token has position {} (a sequence must \
                         continue where it is: no gaps, no rewinds; clear() it to start over)",
                        p[i]
                    )));
                }
            }
            next[su] = want.checked_add(1).ok_or_else(|| bad(format!("sequence {s}: position overflow")))?;
        }

        // Room in the KV cache for every touched sequence (CONTEXT_FULL names the first that
        // would overflow); reserving changes no observable state.
        let per_seq: Vec<(u32, usize)> = (0..n_seq)
            .filter(|&s| next[s] != start_pos[s])
            .map(|s| (s as u32, (next[s] - start_pos[s]) as usize))
            .collect();
        self.mem.check_capacity_all(&per_seq)?;

        // ---- Regroup by sequence (stable), plan equal-length micro-batches. ----
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by_key(|&i| batch.seq[i]);
            for bi in order {
                let slot = batch.seq[bi] as usize;
                match groups.last_mut() {
                    Some((s, v)) if *s == slot => v.push(bi),
                    _ => groups.push((slot, vec![bi])),
                }
            }
        }
        let n_req = batch.logits.iter().filter(|&&b| b).count();
        // Logit row of each batch index (batch order).
        let mut row_of = vec![u32::MAX; n];
        let mut index = Vec::with_capacity(n_req);
        for (i, &want) in batch.logits.iter().enumerate() {
            if want {
                row_of[i] = index.len() as u32;
                index.push(i as u32);
            }
        }
        out.n_vocab = n_vocab;
        out.index = index;
        out.data.clear();
        let want = n_req.checked_mul(n_vocab).filter(|&v| v <= isize::MAX as usize / 4);
        match want {
            Some(v) if out.data.try_reserve_exact(v).is_ok() => out.data.resize(v, 0.0),
            _ => {
                return Err(bad(format!(
                    "cannot allocate logits for {n_req} tokens of {n_vocab}: ask for logits on fewer tokens per batch"
                )))
            }
        }

        let ub = self.params.n_ubatch;
        let interval = self.tree.policy.interval;
        let starts: Vec<u32> = groups.iter().map(|(s, _)| start_pos[*s]).collect();
        let lens: Vec<usize> = groups.iter().map(|(_, v)| v.len()).collect();
        let plan = split::split_equal(&starts, &lens, ub, interval);
        // Activation memory for the largest micro-batch, before any state changes.
        let biggest = plan.iter().map(|mb| mb.iter().map(|r| r.2).sum::<usize>()).max().unwrap_or(0);
        self.scratch.ensure(&w.hp, biggest, n_req.min(biggest))?;
        self.mem.reserve(&per_seq)?;
        // Forks that share a touched slot's state get their own copy first (copy-on-write).
        for (s, _) in &groups {
            self.tree.detach(&mut self.mem.rec, *s);
        }
        let mut segs: Vec<Segment> = Vec::new();
        let mut outputs: Vec<(usize, usize)> = Vec::new();
        let result = (|| -> Result<()> {
            for mb in &plan {
                self.tokens.clear();
                segs.clear();
                outputs.clear();
                for &(g, off, k) in mb {
                    let (slot, idx) = &groups[g];
                    let pos = (starts[g] as usize) + off;
                    segs.push(Segment { slot: *slot, start: self.tokens.len(), len: k, pos });
                    for &bi in &idx[off..off + k] {
                        if row_of[bi] != u32::MAX {
                            outputs.push((self.tokens.len(), row_of[bi] as usize));
                        }
                        self.tokens.push(batch.tokens[bi]);
                    }
                }
                forward(
                    w,
                    &self.pool,
                    &mut self.mem.rec,
                    self.mem.kv.as_mut(),
                    &mut self.scratch,
                    &self.tokens,
                    &segs,
                    &outputs,
                    &mut out.data,
                )?;
                if interval > 0 {
                    for &(g, off, k) in mb {
                        let p = starts[g] + (off + k) as u32;
                        if p % interval == 0 {
                            self.tree.snapshot(&self.mem.rec, groups[g].0, p);
                        }
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                for &(s, _) in &per_seq {
                    self.mem.commit(s, next[s as usize]);
                }
                for (slot, idx) in &groups {
                    let h = std::sync::Arc::make_mut(&mut self.tree.seqs[*slot].history);
                    h.extend(idx.iter().map(|&bi| batch.tokens[bi]));
                    if self.tree.policy.at_end && idx.len() > 1 {
                        self.tree.snapshot(&self.mem.rec, *slot, next[*slot]);
                    }
                }
                Ok(())
            }
            Err(e) => {
                // Only an internal failure can get here (everything the caller controls was
                // checked above). The touched sequences hold partial updates in both halves
                // (recurrent states advanced, KV cells written): reset both rather than leave
                // them inconsistent with their positions; release every reservation.
                for &(s, _) in &per_seq {
                    self.tree.reset(&mut self.mem.rec, s as usize);
                    let _ = self.mem.clear(s);
                }
                Err(CoilError::new(
                    ErrorCode::Internal,
                    format!("evaluation failed ({}); the sequences in the batch were reset", e.message),
                ))
            }
        }
    }
}
