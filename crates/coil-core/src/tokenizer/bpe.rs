//! Byte-level BPE (llama.cpp's `llm_tokenizer_bpe_session`).
//!
//! Each pre-tokenized word becomes one symbol per byte (the token of the byte's GPT-2 character),
//! then the adjacent pair with the lowest merge rank (leftmost on ties) is merged until no pair
//! has a rank. Symbols are token ids: every merge's parts and result are required to be tokens
//! (checked when the tokenizer is built), so merging never needs the texts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::config::invalid;
use super::hash::FastMap;
use super::unicode::BYTE_TO_CHAR;
use crate::error::Result;

/// A byte whose GPT-2 character is not in the vocabulary: never merges, emits nothing (llama.cpp
/// finds no token for it either).
pub(crate) const NO_SYM: u32 = u32::MAX;

/// Words up to this many bytes are merged with a simple rescan; longer ones with a heap.
const SMALL_WORD: usize = 48;

pub(crate) struct Bpe {
    /// `left << 32 | right` -> (rank, merged token).
    merges: FastMap<u64, (u32, u32)>,
    byte_sym: [u32; 256],
    ignore_merges: bool,
}

#[inline]
fn key(a: u32, b: u32) -> u64 {
    (a as u64) << 32 | b as u64
}

impl Bpe {
    pub(crate) fn new(merges: &[String], lookup: &dyn Fn(&str) -> Option<u32>, ignore_merges: bool) -> Result<Bpe> {
        let mut map: FastMap<u64, (u32, u32)> = FastMap::default();
        map.reserve(merges.len());
        let mut joined = String::new();
        for (rank, m) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first byte.
            let sp = m.as_bytes().iter().skip(1).position(|&b| b == b' ').map(|i| i + 1);
            let (a, b) = match sp {
                Some(i) => (&m[..i], &m[i + 1..]),
                None => return Err(invalid(format!("merge {rank} ({m:?}) is not two tokens separated by a space"))),
            };
            let ia = lookup(a).ok_or_else(|| invalid(format!("merge {rank} ({m:?}) names an unknown token {a:?}")))?;
            let ib = lookup(b).ok_or_else(|| invalid(format!("merge {rank} ({m:?}) names an unknown token {b:?}")))?;
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            let im = lookup(&joined)
                .ok_or_else(|| invalid(format!("merge {rank} ({m:?}) makes {joined:?}, which is not a token")))?;
            // The first occurrence of a pair keeps its rank (llama.cpp's emplace).
            map.entry(key(ia, ib)).or_insert((rank as u32, im));
        }
        let mut byte_sym = [NO_SYM; 256];
        let mut buf = [0u8; 4];
        for (b, s) in byte_sym.iter_mut().enumerate() {
            if let Some(id) = lookup(BYTE_TO_CHAR[b].encode_utf8(&mut buf)) {
                *s = id;
            }
        }
        Ok(Bpe { merges: map, byte_sym, ignore_merges })
    }

    #[inline]
    fn rank(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        self.merges.get(&key(a, b)).copied()
    }

    /// Tokenize one word (raw bytes), appending to `out`. `syms` and `ranks` are scratch space.
    pub(crate) fn word(
        &self,
        word: &[u8],
        lookup: &dyn Fn(&str) -> Option<u32>,
        out: &mut Vec<u32>,
        scratch: &mut Scratch,
    ) {
        if word.is_empty() {
            return;
        }
        if self.ignore_merges {
            let s = &mut scratch.text;
            s.clear();
            for &b in word {
                s.push(BYTE_TO_CHAR[b as usize]);
            }
            if let Some(id) = lookup(s) {
                out.push(id);
                return;
            }
        }
        if word.len() == 1 {
            let s = self.byte_sym[word[0] as usize];
            if s != NO_SYM {
                out.push(s);
            }
            return;
        }
        if word.len() <= SMALL_WORD {
            self.merge_small(word, out, scratch)
        } else {
            self.merge_heap(word, out, scratch)
        }
    }

    fn merge_small(&self, word: &[u8], out: &mut Vec<u32>, sc: &mut Scratch) {
        let syms = &mut sc.syms;
        let ranks = &mut sc.ranks;
        syms.clear();
        ranks.clear();
        syms.extend(word.iter().map(|&b| self.byte_sym[b as usize]));
        // ranks[i]: (rank, merged) of the pair (syms[i], syms[i + 1]).
        for i in 0..syms.len() - 1 {
            ranks.push(self.rank(syms[i], syms[i + 1]).unwrap_or((u32::MAX, 0)));
        }
        loop {
            let mut best = u32::MAX;
            let mut at = usize::MAX;
            for (i, &(r, _)) in ranks.iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if at == usize::MAX {
                break;
            }
            syms[at] = ranks[at].1;
            syms.remove(at + 1);
            ranks.remove(at);
            if at > 0 {
                ranks[at - 1] = self.rank(syms[at - 1], syms[at]).unwrap_or((u32::MAX, 0));
            }
            if at < ranks.len() {
                ranks[at] = self.rank(syms[at], syms[at + 1]).unwrap_or((u32::MAX, 0));
            }
        }
        out.extend(syms.iter().copied().filter(|&s| s != NO_SYM));
    }

    fn merge_heap(&self, word: &[u8], out: &mut Vec<u32>, sc: &mut Scratch) {
        let n = word.len();
        let sym = &mut sc.syms;
        sym.clear();
        sym.extend(word.iter().map(|&b| self.byte_sym[b as usize]));
        let prev = &mut sc.prev;
        let next = &mut sc.next;
        prev.clear();
        next.clear();
        prev.extend((0..n).map(|i| i as i32 - 1));
        next.extend((0..n).map(|i| if i + 1 < n { i as i32 + 1 } else { -1 }));
        // (rank, left index, right index, left sym, right sym), smallest first.
        let heap = &mut sc.heap;
        heap.clear();
        for i in 0..n - 1 {
            if let Some((r, _)) = self.rank(sym[i], sym[i + 1]) {
                heap.push(Reverse((r, i as u32, (i + 1) as u32, sym[i], sym[i + 1])));
            }
        }
        let alive = |s: u32| s != u32::MAX - 1;
        const DEAD: u32 = u32::MAX - 1;
        while let Some(Reverse((_, l, r, ls, rs))) = heap.pop() {
            let (l, r) = (l as usize, r as usize);
            // Outdated when either side has changed since the pair was queued.
            if !alive(sym[l]) || !alive(sym[r]) || sym[l] != ls || sym[r] != rs {
                continue;
            }
            let (_, merged) = match self.rank(ls, rs) {
                Some(x) => x,
                None => continue,
            };
            sym[l] = merged;
            sym[r] = DEAD;
            next[l] = next[r];
            if next[r] >= 0 {
                prev[next[r] as usize] = l as i32;
            }
            if prev[l] >= 0 {
                let p = prev[l] as usize;
                if let Some((rk, _)) = self.rank(sym[p], sym[l]) {
                    heap.push(Reverse((rk, p as u32, l as u32, sym[p], sym[l])));
                }
            }
            if next[l] >= 0 {
                let q = next[l] as usize;
                if let Some((rk, _)) = self.rank(sym[l], sym[q]) {
                    heap.push(Reverse((rk, l as u32, q as u32, sym[l], sym[q])));
                }
            }
        }
        let mut i = 0i32;
        while i >= 0 {
            let s = sym[i as usize];
            if s != NO_SYM {
                out.push(s);
            }
            i = next[i as usize];
        }
    }
}

/// A queued pair: (rank, left index, right index, left symbol, right symbol), smallest first.
type Pending = Reverse<(u32, u32, u32, u32, u32)>;

/// Reusable buffers for one tokenize call.
#[derive(Default)]
pub(crate) struct Scratch {
    syms: Vec<u32>,
    ranks: Vec<(u32, u32)>,
    prev: Vec<i32>,
    next: Vec<i32>,
    heap: BinaryHeap<Pending>,
    text: String,
}
