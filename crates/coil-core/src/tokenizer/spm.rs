//! SentencePiece-style BPE over scores (llama.cpp's `llm_tokenizer_spm_session`).
//!
//! The text (spaces already replaced by `▁`) starts as one symbol per UTF-8 character; the
//! adjacent pair whose concatenation is a token with the highest score (leftmost on ties) is
//! merged until none is left. A final symbol that is not a token (a character outside the
//! vocabulary) is emitted byte by byte as `<0xXX>` tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

#[derive(Clone, Copy)]
struct Sym {
    start: u32,
    len: u32,
    prev: i32,
    next: i32,
}

struct Bigram {
    score: f32,
    left: u32,
    right: u32,
    size: u32,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// Greater = popped first: higher score, then smaller left index.
    fn cmp(&self, o: &Self) -> Ordering {
        if self.score < o.score {
            Ordering::Less
        } else if o.score < self.score {
            Ordering::Greater
        } else {
            o.left.cmp(&self.left)
        }
    }
}

#[derive(Default)]
pub(crate) struct SpmScratch {
    syms: Vec<Sym>,
    heap: BinaryHeap<Bigram>,
}

/// Tokenize `text` (already space-escaped), appending ids to `out`.
/// `lookup` finds a token by text; `score` gives a token's score; `byte_token` gives the token
/// for a raw byte (`<0xXX>`, else the one-byte text), if any.
pub(crate) fn tokenize(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<u32>,
    score: &dyn Fn(u32) -> f32,
    byte_token: &dyn Fn(u8) -> Option<u32>,
    out: &mut Vec<u32>,
    sc: &mut SpmScratch,
) {
    let syms = &mut sc.syms;
    let heap = &mut sc.heap;
    syms.clear();
    heap.clear();
    for (idx, (i, c)) in text.char_indices().enumerate() {
        let idx = idx as i32;
        syms.push(Sym { start: i as u32, len: c.len_utf8() as u32, prev: idx - 1, next: idx + 1 });
    }
    if let Some(last) = syms.last_mut() {
        last.next = -1;
    }
    if syms.is_empty() {
        return;
    }

    let try_add = |syms: &Vec<Sym>, heap: &mut BinaryHeap<Bigram>, left: i32, right: i32| {
        if left < 0 || right < 0 {
            return;
        }
        let (l, r) = (syms[left as usize], syms[right as usize]);
        let s = l.start as usize;
        let size = l.len + r.len;
        if let Some(id) = lookup(&text[s..s + size as usize]) {
            heap.push(Bigram { score: score(id), left: left as u32, right: right as u32, size });
        }
    };

    for i in 1..syms.len() as i32 {
        try_add(syms, heap, i - 1, i);
    }

    while let Some(b) = heap.pop() {
        let (li, ri) = (b.left as usize, b.right as usize);
        let (l, r) = (syms[li], syms[ri]);
        // Skip when either symbol has been merged away or has grown since.
        if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
            continue;
        }
        syms[li].len += r.len;
        syms[ri].len = 0;
        syms[li].next = r.next;
        if r.next >= 0 {
            syms[r.next as usize].prev = b.left as i32;
        }
        let (p, nx) = (syms[li].prev, syms[li].next);
        try_add(syms, heap, p, b.left as i32);
        try_add(syms, heap, b.left as i32, nx);
    }

    let mut i = 0i32;
    while i >= 0 {
        let s = syms[i as usize];
        let piece = &text[s.start as usize..(s.start + s.len) as usize];
        match lookup(piece) {
            Some(id) => out.push(id),
            None => {
                for &byte in piece.as_bytes() {
                    if let Some(id) = byte_token(byte) {
                        out.push(id);
                    }
                }
            }
        }
        i = s.next;
    }
}
