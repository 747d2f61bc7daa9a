//! The tree of recurrent states: what lets a sequence be forked, rolled back and re-used.
//!
//! A recurrent state cannot be un-applied, so a sequence keeps (a) its **token history** — every
//! token its state has absorbed, `history.len() == position` — and (b) **checkpoints**: copies of
//! its state at chosen positions. `truncate(p)` restores the nearest checkpoint at or before `p`
//! (position 0, the zero state, always qualifies) and re-evaluates the history tokens between it
//! and `p`. Checkpoints are taken automatically by a [`CheckpointPolicy`] — at the end of every
//! evaluation that fed a sequence more than one token, every `interval` positions inside long
//! prompts, and when a generation ends — and on request ([`Context::checkpoint`]), under a memory
//! budget: past it, the least recently used checkpoints are evicted.
//!
//! # Sharing, not copying
//! * Checkpoints are immutable and reference-counted. A checkpoint of a sequence at position `p`
//!   stays valid for every sequence whose history agrees with it up to `p`, so a fork starts with
//!   the parent's checkpoint list (pointer copies): the snapshots of a sequence and its forks form
//!   a tree whose common trunk is stored once. Truncating below a checkpoint drops it from that
//!   sequence's list only.
//! * A fork does not copy the live state either: the new slot records that its state *is* the
//!   source slot's ([`SeqMeta::alias`]). The copy happens only when one of them changes: before an
//!   evaluation writes a slot, an alias is materialised from its source, and a source hands its
//!   current state to the slots aliasing it. Token histories are shared (`Arc`) the same way.
//!
//! The KV cache of a hybrid model needs none of this — it rolls back exactly by position and its
//! blocks are shared copy-on-write by the cache itself — so checkpoints hold recurrent state only;
//! the operations here apply the KV half alongside (`KvCache::truncate` to the restored position,
//! `KvCache::fork`; `clear` goes through `HybridMemory::clear`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{bad, Batch, Context};
use crate::error::Result;
use crate::model::graph::States;

/// When checkpoints are taken automatically, and how much memory they may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Within long evaluations, snapshot whenever a sequence reaches a multiple of this position
    /// (0: never).
    pub interval: u32,
    /// Snapshot at the end of every evaluation that fed a sequence more than one token (a prompt;
    /// single-token generation steps are not snapshotted, the end of a generation is).
    pub at_end: bool,
    /// Most bytes all checkpoints of the context may hold (shared ones counted once); the least
    /// recently used are evicted beyond it. 0: no automatic or explicit checkpoints are kept.
    pub budget_bytes: u64,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy { interval: 256, at_end: true, budget_bytes: 128 << 20 }
    }
}

/// An immutable snapshot of one sequence's recurrent state at `pos`.
pub(crate) struct Ckpt {
    pub pos: u32,
    /// The slot's state as `States::read_slot` lays it out.
    pub state: Vec<f32>,
    pub last_used: AtomicU64,
}

impl Ckpt {
    fn bytes(&self) -> u64 {
        self.state.len() as u64 * 4
    }
}

/// Per-slot bookkeeping besides the live state.
#[derive(Default, Clone)]
pub(crate) struct SeqMeta {
    /// Every token the state has absorbed (shared with forks until one of them changes).
    pub history: Arc<Vec<u32>>,
    /// Checkpoints valid for this sequence, by increasing position (all ≤ its position).
    pub ckpts: Vec<Arc<Ckpt>>,
    /// The state of this slot is that of slot `alias` (a fork not yet materialised).
    pub alias: Option<usize>,
}

pub(crate) struct Tree {
    pub seqs: Vec<SeqMeta>,
    pub policy: CheckpointPolicy,
    tick: u64,
}

/// One slot's state in `States::copy_slot`'s layout.
fn read_slot(st: &States, slot: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(st.slot_len());
    st.copy_slot(slot, &mut v);
    v
}

impl Tree {
    pub fn new(n_slot: usize) -> Tree {
        Tree { seqs: vec![SeqMeta::default(); n_slot], policy: CheckpointPolicy::default(), tick: 0 }
    }

    /// The slot holding `s`'s state now.
    pub fn source(&self, s: usize) -> usize {
        self.seqs[s].alias.unwrap_or(s)
    }

    /// Before slot `s`'s state is replaced wholesale: slots aliasing it get their copy, and `s`
    /// stops aliasing anything.
    pub fn overwrite(&mut self, st: &mut States, s: usize) {
        self.release_dependents(st, s);
        self.seqs[s].alias = None;
    }

    /// Before slot `s`'s state is updated in place: materialise it if it aliases another slot,
    /// and give the slots aliasing it their copy.
    pub fn detach(&mut self, st: &mut States, s: usize) {
        if let Some(src) = self.seqs[s].alias.take() {
            st.copy_between(src, s);
        }
        self.release_dependents(st, s);
    }

    fn release_dependents(&mut self, st: &mut States, s: usize) {
        let mut first: Option<usize> = None;
        for y in 0..self.seqs.len() {
            if self.seqs[y].alias == Some(s) {
                match first {
                    None => {
                        st.copy_between(s, y);
                        self.seqs[y].alias = None;
                        first = Some(y);
                    }
                    Some(f) => self.seqs[y].alias = Some(f),
                }
            }
        }
    }

    /// Forgets everything about slot `s` (its state is handled by the caller).
    pub fn reset(&mut self, st: &mut States, s: usize) {
        self.overwrite(st, s);
        self.seqs[s].history = Arc::new(Vec::new());
        self.seqs[s].ckpts.clear();
    }

    pub fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Snapshots slot `s` at `pos` (its current position) unless a checkpoint there exists.
    pub fn snapshot(&mut self, st: &States, s: usize, pos: u32) {
        if self.policy.budget_bytes == 0 {
            return;
        }
        let t = self.next_tick();
        let list = &mut self.seqs[s].ckpts;
        if let Some(c) = list.iter().find(|c| c.pos == pos) {
            c.last_used.store(t, Ordering::Relaxed);
            return;
        }
        let state = read_slot(st, self.seqs[s].alias.unwrap_or(s));
        let c = Arc::new(Ckpt { pos, state, last_used: AtomicU64::new(t) });
        let list = &mut self.seqs[s].ckpts;
        let at = list.partition_point(|c| c.pos < pos);
        list.insert(at, c);
        self.enforce_budget();
    }

    /// Distinct checkpoints of the context (shared ones once) and their total size.
    pub fn unique(&self) -> (Vec<Arc<Ckpt>>, u64) {
        let mut seen: Vec<Arc<Ckpt>> = Vec::new();
        for m in &self.seqs {
            for c in &m.ckpts {
                if !seen.iter().any(|x| Arc::ptr_eq(x, c)) {
                    seen.push(c.clone());
                }
            }
        }
        let total = seen.iter().map(|c| c.bytes()).sum();
        (seen, total)
    }

    /// Evicts least recently used checkpoints until the budget holds.
    pub fn enforce_budget(&mut self) {
        let (mut all, mut total) = self.unique();
        while total > self.policy.budget_bytes && !all.is_empty() {
            let (i, _) =
                all.iter().enumerate().min_by_key(|(_, c)| c.last_used.load(Ordering::Relaxed)).expect("not empty");
            let victim = all.swap_remove(i);
            total -= victim.bytes();
            for m in &mut self.seqs {
                m.ckpts.retain(|c| !Arc::ptr_eq(c, &victim));
            }
        }
    }

    /// The nearest checkpoint of `s` at or before `p`.
    pub fn nearest(&self, s: usize, p: u32) -> Option<Arc<Ckpt>> {
        self.seqs[s].ckpts.iter().rev().find(|c| c.pos <= p).cloned()
    }
}

/// Length of the longest common prefix.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Context {
    /// Sets when checkpoints are taken and how much memory they may use (applies the new budget
    /// at once).
    pub fn set_checkpoint_policy(&mut self, policy: CheckpointPolicy) {
        self.tree.policy = policy;
        self.tree.enforce_budget();
    }

    pub fn checkpoint_policy(&self) -> CheckpointPolicy {
        self.tree.policy
    }

    /// The tokens `seq`'s state has absorbed (`len() == position(seq)`).
    pub fn history(&self, seq: u32) -> Result<&[u32]> {
        Ok(&self.tree.seqs[self.check_seq(seq)?].history)
    }

    /// Positions of `seq`'s checkpoints, increasing.
    pub fn checkpoints(&self, seq: u32) -> Result<Vec<u32>> {
        Ok(self.tree.seqs[self.check_seq(seq)?].ckpts.iter().map(|c| c.pos).collect())
    }

    /// Bytes held by all checkpoints of the context (shared ones counted once).
    pub fn checkpoint_bytes(&self) -> u64 {
        self.tree.unique().1
    }

    /// Snapshots `seq`'s state at its current position (kept under the budget like automatic
    /// ones); returns the position.
    pub fn checkpoint(&mut self, seq: u32) -> Result<u32> {
        let s = self.check_seq(seq)?;
        let p = self.mem.position(seq)?;
        if p > 0 {
            self.tree.snapshot(&self.mem.rec, s, p);
        }
        Ok(p)
    }

    /// The checkpoint the policy takes when a generation ends on `seq`.
    pub fn checkpoint_auto(&mut self, seq: u32) -> Result<()> {
        if self.tree.policy.at_end {
            self.checkpoint(seq)?;
        }
        Ok(())
    }

    /// Makes `dst` a copy of `src` — position, history, checkpoints and state — sharing all of
    /// them until one of the two changes (copy-on-write). Whatever `dst` held is dropped.
    pub fn fork(&mut self, src: u32, dst: u32) -> Result<()> {
        let (s, d) = (self.check_seq(src)?, self.check_seq(dst)?);
        if s == d {
            return Err(bad(format!("cannot fork sequence {src} onto itself")));
        }
        self.tree.overwrite(&mut self.mem.rec, d);
        let root = self.tree.source(s);
        let meta = self.tree.seqs[s].clone();
        self.tree.seqs[d] = SeqMeta { alias: if root == d { None } else { Some(root) }, ..meta };
        // The KV cells are shared block by block (copy-on-write in the cache itself).
        if let Some(kv) = &mut self.mem.kv {
            kv.fork(src, dst);
        }
        let p = self.mem.position(src)?;
        self.mem.set_position(d, p);
        Ok(())
    }

    /// Rolls `seq` back to position `n` (≤ its position): restores the nearest checkpoint at or
    /// before `n` and re-evaluates the history tokens after it. Checkpoints past `n` are dropped.
    pub fn truncate(&mut self, seq: u32, n: u32) -> Result<()> {
        let s = self.check_seq(seq)?;
        let p = self.mem.position(seq)?;
        if n > p {
            return Err(bad(format!("cannot truncate sequence {seq} to {n}: it holds only {p} tokens")));
        }
        if n == p {
            return Ok(());
        }
        let from = self.tree.nearest(s, n).map_or(0, |c| c.pos);
        if self.tree.seqs[s].history[from as usize..n as usize].contains(&super::state_io::UNKNOWN_TOKEN) {
            return Err(bad(format!(
                "cannot truncate sequence {seq} to {n}: its tokens before position {p} are unknown (its state was loaded \
                 without history) and no checkpoint at or before {n} restores it"
            )));
        }
        let (from, replay) = self.restore_at_or_before(s, n);
        if from < n {
            let toks = replay[from as usize..n as usize].to_vec();
            let batch = Batch { seq: vec![seq; toks.len()], logits: vec![false; toks.len()], pos: None, tokens: toks };
            self.evaluate(&batch)?;
        }
        Ok(())
    }

    /// Restores `s` to its nearest checkpoint at or before `n` (or the empty state) and drops
    /// everything after it; returns that position and the history as it was.
    fn restore_at_or_before(&mut self, s: usize, n: u32) -> (u32, Arc<Vec<u32>>) {
        let old = self.tree.seqs[s].history.clone();
        let ck = self.tree.nearest(s, n);
        self.tree.overwrite(&mut self.mem.rec, s);
        let from = match &ck {
            Some(c) => {
                self.mem.rec.set_slot(s, &c.state);
                let t = self.tree.next_tick();
                c.last_used.store(t, Ordering::Relaxed);
                c.pos
            }
            None => {
                self.mem.rec.clear(s);
                0
            }
        };
        // The KV cells roll back exactly by position.
        if let Some(kv) = &mut self.mem.kv {
            kv.truncate(s as u32, from as usize).expect("from <= the sequence's length");
        }
        let m = &mut self.tree.seqs[s];
        m.ckpts.retain(|c| c.pos <= from);
        Arc::make_mut(&mut m.history).truncate(from as usize);
        self.mem.set_position(s, from);
        (from, old)
    }

    /// Where an evaluation of `prompt` (the whole sequence, from position 0) can start on `seq`:
    /// the longest prefix of `prompt` that `seq` holds or can restore without evaluating
    /// anything, keeping at least the prompt's last token to evaluate (its logits are wanted).
    /// Changes nothing.
    pub fn reuse_point(&self, seq: u32, prompt: &[u32]) -> Result<u32> {
        let s = self.check_seq(seq)?;
        let h = &self.tree.seqs[s].history;
        let l = common_prefix(h, prompt).min(prompt.len().saturating_sub(1)) as u32;
        if l as usize == h.len() {
            return Ok(l);
        }
        Ok(self.tree.nearest(s, l).map_or(0, |c| c.pos))
    }

    /// Prepares `seq` for `prompt` (the whole sequence, from position 0): rolls it back to
    /// [`Context::reuse_point`] — a checkpoint or its current position, so nothing is evaluated —
    /// and returns that position. The caller evaluates `prompt[reused..]`.
    pub fn rewind_for(&mut self, seq: u32, prompt: &[u32]) -> Result<u32> {
        let c = self.reuse_point(seq, prompt)?;
        let s = seq as usize;
        if c < self.mem.position(seq)? {
            let (from, _) = self.restore_at_or_before(s, c);
            debug_assert_eq!(from, c);
        }
        Ok(c)
    }
}
