//! The KV cache of the attention layers: paged, per sequence, f16 or f32 cells.
//!
//! # Layout
//! Memory comes in **blocks** of [`BLOCK_TOKENS`] token cells. One block holds, for every attention
//! layer `l` (in layer order), the K rows of its cells (`[BLOCK_TOKENS][kv_dim(l)]`) followed by
//! the V rows (same shape), in the cache's element type. Each sequence has a **block table**: block
//! `b` of the table holds the sequence's positions `b·BLOCK_TOKENS ..`. Attention reads keys and
//! values through the table (see [`KvCache::block_ptrs`] and `kernels::attn`).
//!
//! Blocks are **reference-counted**: [`KvCache::fork`] makes a sequence share another's blocks,
//! and the first write into a shared block copies it (copy-on-write, in [`KvCache::reserve`]).
//! Freed blocks go back to a pool and are reused, so memory grows only to the most cells ever held
//! at once. Nothing is allocated up front: a sequence takes blocks as it grows.
//!
//! # Capacity
//! Every sequence may hold up to `n_ctx` cells (the context length). [`KvCache::check_capacity`]
//! and [`KvCache::reserve`] fail with `CONTEXT_FULL`, naming the sequence, its position and the
//! context length, before anything changes.
//!
//! # Writing
//! Evaluation first [`reserve`](KvCache::reserve)s the cells a batch will write (blocks allocated
//! and made exclusive; the sequence's length is unchanged), then writes them
//! ([`KvCache::write`]), then [`commit`](KvCache::commit)s the new length. A failure in between is
//! undone by [`KvCache::truncate`] (or [`KvCache::clear`]).

use crate::error::{CoilError, ErrorCode, Result};
use crate::kernels::attn::KvElem;

/// Token cells per block.
pub const BLOCK_TOKENS: usize = 32;

/// Element type of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KvType {
    /// IEEE half (the default: half the memory; moves logits by ~1e-2 on small models).
    #[default]
    F16,
    /// f32 (exact comparisons: `coil eval` uses it).
    F32,
}

impl KvType {
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::F32 => "f32",
        }
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            KvType::F16 => 2,
            KvType::F32 => 4,
        }
    }
    /// `"f16"` or `"f32"` (case-insensitive); `InvalidArgument` otherwise.
    pub fn parse(s: &str) -> Result<KvType> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(KvType::F16),
            "f32" => Ok(KvType::F32),
            _ => Err(CoilError::new(
                ErrorCode::InvalidArgument,
                format!("kv type must be \"f16\" or \"f32\", got {s:?}"),
            )),
        }
    }
    fn tag(self) -> u8 {
        match self {
            KvType::F16 => 1,
            KvType::F32 => 2,
        }
    }
}

/// One block's storage: 4-byte words (f32 cells, or two f16 cells per word).
struct Block {
    words: Vec<u32>,
}

#[derive(Debug, Clone, Default)]
struct SeqCells {
    /// Block ids, in position order. May run past `len` after a `reserve`.
    table: Vec<u32>,
    /// Committed cells (positions `0..len`).
    len: usize,
}

/// The paged KV cache of one context (see the module docs).
pub struct KvCache {
    ty: KvType,
    /// K (= V) elements per token cell of each attention layer.
    kv_dims: Vec<usize>,
    /// Element offset of layer l's K rows in a block; its V rows follow `BLOCK_TOKENS·kv_dims[l]`
    /// later.
    layer_off: Vec<usize>,
    /// Elements per block.
    block_elems: usize,
    n_ctx: usize,
    blocks: Vec<Block>,
    refs: Vec<u32>,
    /// Ids of blocks with no reference, ready for reuse.
    free: Vec<u32>,
    seqs: Vec<SeqCells>,
}

fn full(seq: u32, pos: usize, want: usize, n_ctx: usize) -> CoilError {
    CoilError::new(
        ErrorCode::ContextFull,
        format!(
            "sequence {seq} is full: it holds {pos} tokens and {} more would take it to {want}, past the context length {n_ctx} \
             (create the context with a larger contextLength, or clear the sequence)",
            want - pos
        ),
    )
}

fn oom(what: &str) -> CoilError {
    CoilError::new(ErrorCode::InvalidArgument, format!("cannot allocate {what}: out of memory"))
}

impl KvCache {
    /// A cache for `n_seq` sequences of up to `n_ctx` cells each, with attention layers of
    /// `kv_dims` K (= V) elements per token. Allocates no cells yet.
    pub fn new(kv_dims: Vec<usize>, ty: KvType, n_seq: usize, n_ctx: usize) -> Result<KvCache> {
        if n_ctx == 0 {
            return Err(CoilError::new(ErrorCode::InvalidArgument, "the context length must be at least 1"));
        }
        let mut layer_off = Vec::with_capacity(kv_dims.len());
        let mut off = 0usize;
        for &d in &kv_dims {
            layer_off.push(off);
            off = d
                .checked_mul(2 * BLOCK_TOKENS)
                .and_then(|x| x.checked_add(off))
                .ok_or_else(|| CoilError::new(ErrorCode::InvalidArgument, "KV layout too large"))?;
        }
        Ok(KvCache {
            ty,
            kv_dims,
            layer_off,
            block_elems: off,
            n_ctx,
            blocks: Vec::new(),
            refs: Vec::new(),
            free: Vec::new(),
            seqs: vec![SeqCells::default(); n_seq],
        })
    }

    pub fn ty(&self) -> KvType {
        self.ty
    }
    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }
    pub fn n_seq(&self) -> usize {
        self.seqs.len()
    }
    pub fn n_layers(&self) -> usize {
        self.kv_dims.len()
    }
    pub fn kv_dims(&self) -> &[usize] {
        &self.kv_dims
    }
    /// Committed cells of `seq`.
    pub fn len(&self, seq: u32) -> usize {
        self.seqs[seq as usize].len
    }
    /// Whether `seq` holds no cells.
    pub fn is_empty(&self, seq: u32) -> bool {
        self.len(seq) == 0
    }

    /// Bytes of K and V per token cell, all attention layers.
    pub fn bytes_per_token(&self) -> u64 {
        2 * self.kv_dims.iter().sum::<usize>() as u64 * self.ty.size() as u64
    }

    /// Bytes one sequence takes when it holds the full context length (whole blocks).
    pub fn bytes_per_sequence(&self) -> u64 {
        self.n_ctx.div_ceil(BLOCK_TOKENS) as u64 * BLOCK_TOKENS as u64 * self.bytes_per_token()
    }

    /// Bytes of one block.
    pub fn block_bytes(&self) -> usize {
        self.block_elems * self.ty.size()
    }

    /// Blocks referenced by at least one sequence.
    pub fn blocks_in_use(&self) -> usize {
        self.refs.iter().filter(|&&r| r > 0).count()
    }

    /// Blocks allocated (in use or pooled).
    pub fn blocks_allocated(&self) -> usize {
        self.blocks.len()
    }

    /// The reference count of block `id` (tests).
    pub fn block_refs(&self, id: u32) -> u32 {
        self.refs[id as usize]
    }

    /// `seq`'s block table (block ids in position order; may run past its length after a
    /// `reserve`).
    pub fn block_table(&self, seq: u32) -> &[u32] {
        &self.seqs[seq as usize].table
    }

    /// `CONTEXT_FULL` if `seq` cannot take `n_new` more cells.
    pub fn check_capacity(&self, seq: u32, n_new: usize) -> Result<()> {
        let pos = self.seqs[seq as usize].len;
        let want = pos.saturating_add(n_new);
        if want > self.n_ctx {
            return Err(full(seq, pos, want, self.n_ctx));
        }
        Ok(())
    }

    fn alloc_block(&mut self) -> Result<u32> {
        if let Some(id) = self.free.pop() {
            self.refs[id as usize] = 1;
            return Ok(id);
        }
        let words = (self.block_elems * self.ty.size()).div_ceil(4);
        let mut v = Vec::new();
        v.try_reserve_exact(words).map_err(|_| oom("a KV cache block"))?;
        v.resize(words, 0);
        self.blocks.push(Block { words: v });
        self.refs.push(1);
        Ok((self.blocks.len() - 1) as u32)
    }

    fn release(&mut self, id: u32) {
        let r = &mut self.refs[id as usize];
        debug_assert!(*r > 0);
        *r -= 1;
        if *r == 0 {
            self.free.push(id);
        }
    }

    /// Makes room for `n_new` cells after `seq`'s committed length: checks the capacity, then
    /// allocates the blocks they fall in and copies any shared block among them (copy-on-write).
    /// The sequence's length and contents are unchanged; on failure nothing is.
    pub fn reserve(&mut self, seq: u32, n_new: usize) -> Result<()> {
        self.check_capacity(seq, n_new)?;
        if n_new == 0 {
            return Ok(());
        }
        let s = seq as usize;
        let len = self.seqs[s].len;
        let first = len / BLOCK_TOKENS;
        let last = (len + n_new - 1) / BLOCK_TOKENS;
        let old_table = self.seqs[s].table.clone();
        let mut added: Vec<u32> = Vec::new();
        let mut replaced: Vec<(usize, u32)> = Vec::new();
        let res = (|| -> Result<()> {
            for b in first..=last {
                match self.seqs[s].table.get(b).copied() {
                    Some(id) if self.refs[id as usize] > 1 => {
                        let nid = self.alloc_block()?;
                        added.push(nid);
                        let (src, dst) = (id as usize, nid as usize);
                        let copy = self.blocks[src].words.clone();
                        self.blocks[dst].words.copy_from_slice(&copy);
                        replaced.push((b, id));
                        self.seqs[s].table[b] = nid;
                    }
                    Some(_) => {}
                    None => {
                        let nid = self.alloc_block()?;
                        added.push(nid);
                        self.seqs[s].table.push(nid);
                    }
                }
            }
            Ok(())
        })();
        match res {
            Ok(()) => {
                for (_, old) in replaced {
                    self.release(old);
                }
                Ok(())
            }
            Err(e) => {
                for id in added {
                    self.release(id);
                }
                self.seqs[s].table = old_table;
                Err(e)
            }
        }
    }

    /// Sets `seq`'s committed length to `n` (cells `0..n` written); blocks past it are released.
    pub fn commit(&mut self, seq: u32, n: usize) {
        self.drop_blocks_after(seq, n);
        self.seqs[seq as usize].len = n;
    }

    fn drop_blocks_after(&mut self, seq: u32, n: usize) {
        let keep = n.div_ceil(BLOCK_TOKENS);
        let s = seq as usize;
        while self.seqs[s].table.len() > keep {
            if let Some(id) = self.seqs[s].table.pop() {
                self.release(id);
            }
        }
    }

    /// Drops every cell of `seq`.
    pub fn clear(&mut self, seq: u32) {
        self.drop_blocks_after(seq, 0);
        self.seqs[seq as usize].len = 0;
    }

    /// Drops the cells of `seq` at positions `>= n_tokens` (`InvalidArgument` past its length).
    pub fn truncate(&mut self, seq: u32, n_tokens: usize) -> Result<()> {
        let len = self.seqs[seq as usize].len;
        if n_tokens > len {
            return Err(CoilError::new(
                ErrorCode::InvalidArgument,
                format!("cannot truncate sequence {seq} to {n_tokens} tokens: it holds {len}"),
            ));
        }
        self.commit(seq, n_tokens);
        Ok(())
    }

    /// Makes `dst` share `src`'s cells (its own are dropped first). Later writes into a shared
    /// block copy it. `src == dst` does nothing.
    pub fn fork(&mut self, src: u32, dst: u32) {
        if src == dst {
            return;
        }
        self.clear(dst);
        let s = &self.seqs[src as usize];
        let keep = s.len.div_ceil(BLOCK_TOKENS);
        let table: Vec<u32> = s.table[..keep].to_vec();
        let len = s.len;
        for &id in &table {
            self.refs[id as usize] += 1;
        }
        self.seqs[dst as usize] = SeqCells { table, len };
    }

    /// Writes the K and V rows of `seq`'s cell `pos` in attention layer `layer` (a cell reserved
    /// by [`KvCache::reserve`]; converts to the cache's type).
    pub fn write(&mut self, seq: u32, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let d = self.kv_dims[layer];
        let id = self.seqs[seq as usize].table[pos / BLOCK_TOKENS] as usize;
        debug_assert_eq!(self.refs[id], 1, "write into a shared block");
        let c = pos % BLOCK_TOKENS;
        let ko = self.layer_off[layer] + c * d;
        let vo = self.layer_off[layer] + BLOCK_TOKENS * d + c * d;
        let words = &mut self.blocks[id].words;
        match self.ty {
            KvType::F32 => {
                // SAFETY: the block holds `block_elems` f32 in its words.
                let e = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut f32, self.block_elems) };
                e[ko..ko + d].copy_from_slice(&k[..d]);
                e[vo..vo + d].copy_from_slice(&v[..d]);
            }
            KvType::F16 => {
                // SAFETY: the block holds at least `block_elems` u16 in its words.
                let e = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u16, self.block_elems) };
                for i in 0..d {
                    e[ko + i] = u16::from_f32(k[i]);
                    e[vo + i] = u16::from_f32(v[i]);
                }
            }
        }
    }

    /// Base pointers of `seq`'s blocks (as `T`, which must be the cache's element type: `f32` or
    /// `u16` for f16), for the attention kernel.
    pub fn block_ptrs<T: KvElem>(&self, seq: u32, out: &mut Vec<*const T>) {
        out.clear();
        for &id in &self.seqs[seq as usize].table {
            out.push(self.blocks[id as usize].words.as_ptr() as *const T);
        }
    }

    /// `(k_off, v_off, cell_stride)` of KV head `head` of attention layer `layer` (elements from a
    /// block's base; heads of `head_dim` elements).
    pub fn offsets(&self, layer: usize, head: usize, head_dim: usize) -> (usize, usize, usize) {
        let d = self.kv_dims[layer];
        let k = self.layer_off[layer] + head * head_dim;
        (k, k + BLOCK_TOKENS * d, d)
    }

    /// One cell's K and V rows as f32 (tests and debugging).
    pub fn read(&self, seq: u32, layer: usize, pos: usize) -> (Vec<f32>, Vec<f32>) {
        let d = self.kv_dims[layer];
        let id = self.seqs[seq as usize].table[pos / BLOCK_TOKENS] as usize;
        let c = pos % BLOCK_TOKENS;
        let ko = self.layer_off[layer] + c * d;
        let vo = self.layer_off[layer] + BLOCK_TOKENS * d + c * d;
        let w = &self.blocks[id].words;
        match self.ty {
            KvType::F32 => {
                // SAFETY: as in `write`.
                let e = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const f32, self.block_elems) };
                (e[ko..ko + d].to_vec(), e[vo..vo + d].to_vec())
            }
            KvType::F16 => {
                // SAFETY: as in `write`.
                let e = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u16, self.block_elems) };
                (e[ko..ko + d].iter().map(|x| x.to_f32()).collect(), e[vo..vo + d].iter().map(|x| x.to_f32()).collect())
            }
        }
    }

    /// Bytes of [`KvCache::serialize`]'s output for a sequence of `len` cells.
    pub fn serialized_len(&self, len: usize) -> usize {
        16 + 4 * self.kv_dims.len() + len * self.bytes_per_token() as usize
    }

    /// `seq`'s cells as bytes, in the cache's element type (little-endian):
    /// `"CKV1"`, type tag (1 = f16, 2 = f32), 3 zero bytes, n_layers u32, kv_dim u32 per layer,
    /// length u32, then per layer the K rows of cells `0..len`, then the V rows.
    pub fn serialize(&self, seq: u32) -> Vec<u8> {
        let len = self.len(seq);
        let mut out = Vec::with_capacity(self.serialized_len(len));
        out.extend_from_slice(b"CKV1");
        out.extend_from_slice(&[self.ty.tag(), 0, 0, 0]);
        out.extend_from_slice(&(self.kv_dims.len() as u32).to_le_bytes());
        for &d in &self.kv_dims {
            out.extend_from_slice(&(d as u32).to_le_bytes());
        }
        out.extend_from_slice(&(len as u32).to_le_bytes());
        let es = self.ty.size();
        let table = &self.seqs[seq as usize].table;
        for (l, &d) in self.kv_dims.iter().enumerate() {
            for part in 0..2 {
                for pos in 0..len {
                    let id = table[pos / BLOCK_TOKENS] as usize;
                    let off = self.layer_off[l] + part * BLOCK_TOKENS * d + (pos % BLOCK_TOKENS) * d;
                    let w = &self.blocks[id].words;
                    // SAFETY: the words hold `block_elems * es` bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u8, self.block_elems * es) };
                    out.extend_from_slice(&bytes[off * es..(off + d) * es]);
                }
            }
        }
        out
    }

    /// Replaces `seq`'s cells with `bytes` from [`KvCache::serialize`] (same layout and type).
    /// Everything is checked first (`STATE_INVALID` for a mismatch or bad length, `CONTEXT_FULL`
    /// past the context length); on failure `seq` is unchanged.
    pub fn deserialize(&mut self, seq: u32, bytes: &[u8]) -> Result<()> {
        let bad = |m: String| CoilError::new(ErrorCode::StateInvalid, format!("KV state: {m}"));
        let u32_at = |o: usize| -> Result<u32> {
            bytes
                .get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| bad("truncated header".into()))
        };
        if bytes.len() < 12 || &bytes[..4] != b"CKV1" {
            return Err(bad("not a coil KV state (bad magic)".into()));
        }
        if bytes[4] != self.ty.tag() {
            return Err(bad(format!("saved with another KV type (this cache is {})", self.ty.name())));
        }
        let nl = u32_at(8)? as usize;
        if nl != self.kv_dims.len() {
            return Err(bad(format!("{nl} attention layers, this model has {}", self.kv_dims.len())));
        }
        for (l, &d) in self.kv_dims.iter().enumerate() {
            let got = u32_at(12 + 4 * l)? as usize;
            if got != d {
                return Err(bad(format!("layer {l} has {got} K values per token, this model {d}")));
            }
        }
        let len = u32_at(12 + 4 * nl)? as usize;
        if len > self.n_ctx {
            return Err(full(seq, 0, len, self.n_ctx));
        }
        if bytes.len() != self.serialized_len(len) {
            return Err(bad(format!("{} bytes, expected {} for {len} cells", bytes.len(), self.serialized_len(len))));
        }
        // Build the new table aside, then swap it in.
        let n_blocks = len.div_ceil(BLOCK_TOKENS);
        let mut table = Vec::with_capacity(n_blocks);
        for _ in 0..n_blocks {
            match self.alloc_block() {
                Ok(id) => table.push(id),
                Err(e) => {
                    for id in table {
                        self.release(id);
                    }
                    return Err(e);
                }
            }
        }
        let es = self.ty.size();
        let mut at = 16 + 4 * nl;
        for (l, &d) in self.kv_dims.iter().enumerate() {
            for part in 0..2 {
                for pos in 0..len {
                    let id = table[pos / BLOCK_TOKENS] as usize;
                    let off = self.layer_off[l] + part * BLOCK_TOKENS * d + (pos % BLOCK_TOKENS) * d;
                    let w = &mut self.blocks[id].words;
                    // SAFETY: as in `serialize`.
                    let dst =
                        unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr() as *mut u8, self.block_elems * es) };
                    dst[off * es..(off + d) * es].copy_from_slice(&bytes[at..at + d * es]);
                    at += d * es;
                }
            }
        }
        self.clear(seq);
        self.seqs[seq as usize] = SeqCells { table, len };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u32, layer: usize, pos: usize, d: usize, kv: usize) -> Vec<f32> {
        // Values exact in f16.
        (0..d).map(|i| ((seq as usize * 7 + layer * 5 + pos * 3 + i + kv * 11) % 64) as f32 / 8.0 - 4.0).collect()
    }

    fn fill(c: &mut KvCache, seq: u32, n: usize) {
        let start = c.len(seq);
        c.reserve(seq, n).unwrap();
        for pos in start..start + n {
            for l in 0..c.n_layers() {
                let d = c.kv_dims()[l];
                c.write(seq, l, pos, &row(seq, l, pos, d, 0), &row(seq, l, pos, d, 1));
            }
        }
        c.commit(seq, start + n);
    }

    fn check(c: &KvCache, seq: u32, origin: u32, n: usize) {
        assert_eq!(c.len(seq), n);
        for pos in 0..n {
            for l in 0..c.n_layers() {
                let d = c.kv_dims()[l];
                let (k, v) = c.read(seq, l, pos);
                assert_eq!(k, row(origin, l, pos, d, 0), "seq {seq} layer {l} pos {pos}");
                assert_eq!(v, row(origin, l, pos, d, 1));
            }
        }
    }

    #[test]
    fn write_read_clear_and_capacity() {
        for ty in [KvType::F16, KvType::F32] {
            let mut c = KvCache::new(vec![16, 8], ty, 3, 100).unwrap();
            assert_eq!(c.bytes_per_token(), 2 * 24 * ty.size() as u64);
            assert_eq!(c.bytes_per_sequence(), 128 * c.bytes_per_token());
            fill(&mut c, 0, 40);
            fill(&mut c, 1, 5);
            fill(&mut c, 0, 3);
            check(&c, 0, 0, 43);
            check(&c, 1, 1, 5);
            assert_eq!(c.block_table(0).len(), 2);
            // Capacity: 57 more fit, 58 do not; the failed reserve changes nothing.
            c.check_capacity(0, 57).unwrap();
            let e = c.reserve(0, 58).unwrap_err();
            assert_eq!(e.code, ErrorCode::ContextFull);
            assert!(
                e.message.contains("sequence 0") && e.message.contains("43") && e.message.contains("100"),
                "{}",
                e.message
            );
            check(&c, 0, 0, 43);
            assert_eq!(c.block_table(0).len(), 2);
            c.clear(0);
            assert_eq!(c.len(0), 0);
            assert_eq!(c.blocks_in_use(), 1);
            // Freed blocks are reused.
            fill(&mut c, 2, 64);
            assert_eq!(c.blocks_allocated(), 3);
            check(&c, 2, 2, 64);
        }
    }

    #[test]
    fn truncate_drops_cells_and_blocks() {
        let mut c = KvCache::new(vec![8], KvType::F32, 1, 200).unwrap();
        fill(&mut c, 0, 70);
        c.truncate(0, 33).unwrap();
        assert_eq!(c.block_table(0).len(), 2);
        check(&c, 0, 0, 33);
        assert!(c.truncate(0, 34).is_err());
        c.truncate(0, 32).unwrap();
        assert_eq!(c.block_table(0).len(), 1);
        // Writing again after a truncate overwrites the old cells.
        fill(&mut c, 0, 10);
        check(&c, 0, 0, 42);
        c.truncate(0, 0).unwrap();
        assert_eq!(c.blocks_in_use(), 0);
    }

    #[test]
    fn fork_shares_blocks_copy_on_write() {
        for ty in [KvType::F16, KvType::F32] {
            let mut c = KvCache::new(vec![4, 12], ty, 3, 256).unwrap();
            fill(&mut c, 0, 40); // blocks: one full, one with 8 cells
            c.fork(0, 1);
            assert_eq!(c.block_table(1), c.block_table(0));
            assert_eq!(c.blocks_in_use(), 2);
            for &id in c.block_table(0) {
                assert_eq!(c.block_refs(id), 2);
            }
            check(&c, 1, 0, 40);
            // Writing into seq 1 copies only the shared tail block.
            let tail0 = c.block_table(0)[1];
            c.reserve(1, 1).unwrap();
            assert_eq!(c.block_table(1)[0], c.block_table(0)[0]);
            assert_ne!(c.block_table(1)[1], tail0);
            assert_eq!(c.block_refs(tail0), 1);
            let d: Vec<usize> = c.kv_dims().to_vec();
            for (l, &dl) in d.iter().enumerate() {
                c.write(1, l, 40, &vec![1.5; dl], &vec![-2.5; dl]);
            }
            c.commit(1, 41);
            check(&c, 0, 0, 40);
            for pos in 0..40 {
                assert_eq!(c.read(1, 0, pos), c.read(0, 0, pos));
            }
            assert_eq!(c.read(1, 1, 40).0, vec![1.5; 12]);
            // Dropping the source keeps the shared block alive for the fork.
            c.clear(0);
            assert_eq!(c.block_refs(c.block_table(1)[0]), 1);
            assert_eq!(c.read(1, 1, 39), (row(0, 1, 39, 12, 0), row(0, 1, 39, 12, 1)));
            // Fork onto a sequence that has cells releases them.
            fill(&mut c, 2, 5);
            c.fork(1, 2);
            assert_eq!(c.len(2), 41);
            assert_eq!(c.blocks_in_use(), 2);
            c.fork(2, 2);
            assert_eq!(c.len(2), 41);
        }
    }

    #[test]
    fn serialize_round_trip_and_rejects() {
        for ty in [KvType::F16, KvType::F32] {
            let mut c = KvCache::new(vec![8, 16], ty, 2, 100).unwrap();
            fill(&mut c, 0, 37);
            let b = c.serialize(0);
            assert_eq!(b.len(), c.serialized_len(37));
            fill(&mut c, 1, 3);
            c.deserialize(1, &b).unwrap();
            check(&c, 1, 0, 37);
            assert_eq!(c.serialize(1), b);
            // Rejections leave the sequence alone.
            let before = c.serialize(1);
            assert_eq!(c.deserialize(1, &b[..b.len() - 1]).unwrap_err().code, ErrorCode::StateInvalid);
            let mut wrong = b.clone();
            wrong[4] = if ty == KvType::F16 { 2 } else { 1 };
            assert_eq!(c.deserialize(1, &wrong).unwrap_err().code, ErrorCode::StateInvalid);
            let mut other = KvCache::new(vec![8, 8], ty, 1, 100).unwrap();
            assert_eq!(other.deserialize(0, &b).unwrap_err().code, ErrorCode::StateInvalid);
            let mut small = KvCache::new(vec![8, 16], ty, 1, 10).unwrap();
            assert_eq!(small.deserialize(0, &b).unwrap_err().code, ErrorCode::ContextFull);
            assert_eq!(c.serialize(1), before);
        }
    }
}
