//! The memory of a context: per sequence, the recurrent states of the Mamba layers and the KV
//! cells of the attention layers, kept consistent. Every operation on a sequence applies to both
//! halves or to neither: all checks run before anything changes.
//!
//! A sequence's **position** is how many tokens it holds. For attention models it equals its KV
//! length, and is bounded by the context length `n_ctx` (`CONTEXT_FULL` beyond); recurrent-only
//! models hold no KV cells and have no bound.

use super::kv::{KvCache, KvType};
use crate::error::{CoilError, ErrorCode, Result};
use crate::model::graph::States;
use crate::model::HParams;

/// Recurrent states and KV cache of `n_seq` sequences (see the module docs).
pub struct HybridMemory {
    pub(crate) rec: States,
    pub(crate) kv: Option<KvCache>,
    pos: Vec<u32>,
    n_ctx: usize,
    kv_type: KvType,
}

fn bad(msg: impl Into<String>) -> CoilError {
    CoilError::new(ErrorCode::InvalidArgument, msg)
}

const MAGIC: &[u8; 4] = b"CHM1";

impl HybridMemory {
    /// Memory for `n_seq` sequences of a model with hyperparameters `hp`; attention layers get a
    /// KV cache of `n_ctx` cells per sequence in `kv_type`. Allocates the recurrent states now,
    /// KV blocks as sequences grow.
    pub fn new(hp: &HParams, n_seq: usize, n_ctx: usize, kv_type: KvType) -> Result<HybridMemory> {
        if n_ctx == 0 || n_ctx > u32::MAX as usize {
            return Err(bad(format!("the context length must be in 1..={}, got {n_ctx}", u32::MAX)));
        }
        let rec = States::new(hp, n_seq)?;
        let kv =
            if hp.n_attention_layers() > 0 { Some(KvCache::new(hp.kv_dims(), kv_type, n_seq, n_ctx)?) } else { None };
        Ok(HybridMemory { rec, kv, pos: vec![0; n_seq], n_ctx, kv_type })
    }

    pub fn n_seq(&self) -> usize {
        self.pos.len()
    }
    /// Tokens per sequence the KV cache holds (unbounded, and unused, without attention layers).
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }
    /// The KV cache, for attention models.
    pub fn kv(&self) -> Option<&KvCache> {
        self.kv.as_ref()
    }

    fn check(&self, seq: u32) -> Result<usize> {
        if seq as usize >= self.pos.len() {
            return Err(bad(format!(
                "sequence {seq} is out of range: this context holds sequences 0..{}",
                self.pos.len()
            )));
        }
        Ok(seq as usize)
    }

    /// Tokens `seq` holds (the position its next token gets).
    pub fn position(&self, seq: u32) -> Result<u32> {
        Ok(self.pos[self.check(seq)?])
    }

    /// Empties `seq`: zero recurrent state, no KV cells, position 0.
    pub fn clear(&mut self, seq: u32) -> Result<()> {
        let s = self.check(seq)?;
        self.rec.clear(s);
        if let Some(kv) = &mut self.kv {
            kv.clear(seq);
        }
        self.pos[s] = 0;
        Ok(())
    }

    /// Empties every sequence.
    pub fn clear_all(&mut self) {
        self.rec.conv.fill(0.0);
        self.rec.ssm.fill(0.0);
        if let Some(kv) = &mut self.kv {
            for s in 0..self.pos.len() {
                kv.clear(s as u32);
            }
        }
        self.pos.fill(0);
    }

    /// `CONTEXT_FULL` if `seq` cannot take `n_new` more tokens.
    pub fn check_capacity(&self, seq: u32, n_new: usize) -> Result<()> {
        self.check(seq)?;
        if let Some(kv) = &self.kv {
            kv.check_capacity(seq, n_new)?;
        }
        if self.pos[seq as usize] as u64 + n_new as u64 > u32::MAX as u64 {
            return Err(bad(format!("sequence {seq}: position overflow")));
        }
        Ok(())
    }

    /// [`HybridMemory::check_capacity`] for each listed sequence.
    pub fn check_capacity_all(&self, per_seq: &[(u32, usize)]) -> Result<()> {
        for &(s, n) in per_seq {
            self.check_capacity(s, n)?;
        }
        Ok(())
    }

    /// Makes room for `n_new` more tokens in each listed sequence (each sequence at most once):
    /// all capacities are checked first, then KV blocks reserved; on any failure nothing changed.
    pub fn reserve(&mut self, per_seq: &[(u32, usize)]) -> Result<()> {
        for &(s, n) in per_seq {
            self.check_capacity(s, n)?;
        }
        if let Some(kv) = &mut self.kv {
            for (i, &(s, n)) in per_seq.iter().enumerate() {
                if let Err(e) = kv.reserve(s, n) {
                    for &(s2, _) in &per_seq[..i] {
                        let len = kv.len(s2);
                        kv.commit(s2, len);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Records that `seq` now holds `n` tokens (after a successful evaluation wrote them).
    pub fn commit(&mut self, seq: u32, n: u32) {
        if let Some(kv) = &mut self.kv {
            kv.commit(seq, n as usize);
        }
        self.pos[seq as usize] = n;
    }

    /// Makes `dst` a copy of `src`: recurrent state copied, KV cells shared copy-on-write.
    pub fn fork(&mut self, src: u32, dst: u32) -> Result<()> {
        let (s, d) = (self.check(src)?, self.check(dst)?);
        if s == d {
            return Ok(());
        }
        self.rec.copy_between(s, d);
        if let Some(kv) = &mut self.kv {
            kv.fork(src, dst);
        }
        self.pos[d] = self.pos[s];
        Ok(())
    }

    /// Sets `seq`'s position without touching its state: the sequence tree (`tree.rs`) restores
    /// recurrent states and rolls the KV cells back itself, then records where the sequence is.
    pub(crate) fn set_position(&mut self, seq: usize, n: u32) {
        self.pos[seq] = n;
    }

    /// Floats of one sequence's recurrent state (all recurrent layers: conv states, then SSM
    /// states).
    pub fn recurrent_len(&self) -> usize {
        self.rec.slot_len()
    }

    /// A copy of `seq`'s recurrent state.
    pub fn recurrent_state(&self, seq: u32) -> Result<Vec<f32>> {
        let s = self.check(seq)?;
        let mut v = Vec::new();
        self.rec.copy_slot(s, &mut v);
        Ok(v)
    }

    /// Rolls `seq` back to `n_tokens` tokens: its KV cells past `n_tokens` are dropped and its
    /// recurrent state becomes `recurrent` (which the caller saved when the sequence held
    /// `n_tokens` tokens: a recurrent state cannot be rewound). Checked first, then both applied.
    pub fn truncate(&mut self, seq: u32, n_tokens: u32, recurrent: &[f32]) -> Result<()> {
        let s = self.check(seq)?;
        if n_tokens > self.pos[s] {
            return Err(bad(format!("cannot truncate sequence {seq} to {n_tokens} tokens: it holds {}", self.pos[s])));
        }
        if recurrent.len() != self.rec.slot_len() {
            return Err(CoilError::new(
                ErrorCode::StateInvalid,
                format!("a recurrent state of {} floats, this model's has {}", recurrent.len(), self.rec.slot_len()),
            ));
        }
        if let Some(kv) = &mut self.kv {
            kv.truncate(seq, n_tokens as usize)?;
        }
        self.rec.set_slot(s, recurrent);
        self.pos[s] = n_tokens;
        Ok(())
    }

    /// `seq` as bytes: `"CHM1"`, position u32, recurrent floats u32, the recurrent state (f32
    /// LE), then the KV cells ([`KvCache::serialize`]; absent without attention layers).
    pub fn save_sequence(&self, seq: u32) -> Result<Vec<u8>> {
        let s = self.check(seq)?;
        let rec = self.recurrent_state(seq)?;
        let mut out = Vec::with_capacity(12 + 4 * rec.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.pos[s].to_le_bytes());
        out.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        for v in &rec {
            out.extend_from_slice(&v.to_le_bytes());
        }
        if let Some(kv) = &self.kv {
            out.extend_from_slice(&kv.serialize(seq));
        }
        Ok(out)
    }

    /// Replaces `seq` with `bytes` from [`HybridMemory::save_sequence`] of the same model and KV
    /// type. Everything is checked before anything changes (`STATE_INVALID`, `CONTEXT_FULL`).
    pub fn load_sequence(&mut self, seq: u32, bytes: &[u8]) -> Result<()> {
        let s = self.check(seq)?;
        let bad_state = |m: &str| CoilError::new(ErrorCode::StateInvalid, format!("saved sequence: {m}"));
        if bytes.len() < 12 || &bytes[..4] != MAGIC {
            return Err(bad_state("not a coil sequence state (bad magic)"));
        }
        let u = |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let pos = u(4);
        let n_rec = u(8) as usize;
        if n_rec != self.rec.slot_len() {
            return Err(bad_state(&format!("{n_rec} recurrent floats, this model has {}", self.rec.slot_len())));
        }
        let rec_end = 12 + 4 * n_rec;
        if bytes.len() < rec_end {
            return Err(bad_state("truncated"));
        }
        let rec: Vec<f32> =
            bytes[12..rec_end].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        match &mut self.kv {
            Some(kv) => {
                let kvb = &bytes[rec_end..];
                // The KV length sits after the 12-byte header and the per-layer dims.
                let lo = 12 + 4 * kv.n_layers();
                let kv_len = kvb.get(lo..lo + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                if kv_len != Some(pos) {
                    return Err(bad_state("the KV cells do not match the position"));
                }
                kv.deserialize(seq, kvb)?;
            }
            None => {
                if bytes.len() != rec_end {
                    return Err(bad_state("trailing bytes"));
                }
            }
        }
        self.rec.set_slot(s, &rec);
        self.pos[s] = pos;
        Ok(())
    }

    /// Bytes of recurrent state per sequence (f32).
    pub fn recurrent_bytes_per_sequence(&self) -> u64 {
        4 * self.rec.slot_len() as u64
    }
    /// Bytes of KV per token (0 without attention layers).
    pub fn kv_bytes_per_token(&self) -> u64 {
        self.kv.as_ref().map_or(0, |k| k.bytes_per_token())
    }
    /// Bytes of KV one sequence takes at the full context length.
    pub fn kv_bytes_per_sequence(&self) -> u64 {
        self.kv.as_ref().map_or(0, |k| k.bytes_per_sequence())
    }
}
