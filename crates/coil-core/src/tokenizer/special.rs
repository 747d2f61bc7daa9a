//! Splitting text around special tokens before tokenization (llama.cpp's
//! `tokenizer_st_partition`).
//!
//! Candidates are the control, unknown and user-defined tokens, longest text first (ties: lower id
//! first). Control and unknown tokens are candidates only when `parse_special`; user-defined tokens
//! always are (as in llama.cpp and HF `tokenizers`, e.g. GPT-NeoX's whitespace-run tokens). Each
//! candidate in turn takes its leftmost non-overlapping occurrences inside the text that earlier
//! candidates left. A token with the `lstrip` attribute drops the ASCII whitespace before it, one
//! with `rstrip` the whitespace after it.

/// A piece of the partitioned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frag {
    /// Byte range of the input still to be tokenized.
    Text(usize, usize),
    Token(u32),
}

/// A candidate special token.
pub(crate) struct Special {
    pub id: u32,
    /// Control or unknown: only with `parse_special`.
    pub needs_parse_special: bool,
    pub lstrip: bool,
    pub rstrip: bool,
}

/// The special-token table: candidates by priority, and a byte trie of their texts.
pub(crate) struct Specials {
    list: Vec<Special>,
    nodes: Vec<Node>,
    /// Child of the root for each first byte (0 = none; node 0 is the root).
    root: Vec<u32>,
}

#[derive(Default)]
struct Node {
    /// (byte, node), few per node.
    children: Vec<(u8, u32)>,
    /// Index into `list` of the candidate whose text ends here.
    terminal: Option<u32>,
}

/// C `isspace` in the "C" locale.
#[inline]
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

impl Specials {
    /// `list` must be in priority order.
    pub(crate) fn new<'t>(list: Vec<Special>, text_of: &dyn Fn(u32) -> &'t str) -> Specials {
        let mut nodes = vec![Node::default()];
        let mut root = vec![0u32; 256];
        for (i, s) in list.iter().enumerate() {
            let t = text_of(s.id).as_bytes();
            let Some((&b0, rest)) = t.split_first() else { continue };
            if root[b0 as usize] == 0 {
                nodes.push(Node::default());
                root[b0 as usize] = (nodes.len() - 1) as u32;
            }
            let mut n = root[b0 as usize] as usize;
            for &b in rest {
                n = match nodes[n].children.iter().find(|c| c.0 == b) {
                    Some(&(_, c)) => c as usize,
                    None => {
                        nodes.push(Node::default());
                        let c = nodes.len() - 1;
                        nodes[n].children.push((b, c as u32));
                        c
                    }
                };
            }
            // Texts are unique, so each node ends at most one candidate.
            nodes[n].terminal = Some(i as u32);
        }
        Specials { list, nodes, root }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Partition `text` (non-empty) into fragments.
    pub(crate) fn partition<'t>(&self, text: &str, parse_special: bool, text_of: &dyn Fn(u32) -> &'t str) -> Vec<Frag> {
        let bytes = text.as_bytes();
        let mut frags = vec![Frag::Text(0, bytes.len())];
        if self.list.is_empty() {
            return frags;
        }
        // Which eligible candidates occur at all (one pass over the text with the trie).
        let mut present = vec![false; self.list.len()];
        let mut any = false;
        for (pos, &b) in bytes.iter().enumerate() {
            let mut n = self.root[b as usize] as usize;
            if n == 0 {
                continue;
            }
            let mut k = pos + 1;
            loop {
                let node = &self.nodes[n];
                if let Some(ci) = node.terminal {
                    if parse_special || !self.list[ci as usize].needs_parse_special {
                        present[ci as usize] = true;
                        any = true;
                    }
                }
                let Some(&nb) = bytes.get(k) else { break };
                match node.children.iter().find(|c| c.0 == nb) {
                    Some(&(_, c)) => {
                        n = c as usize;
                        k += 1;
                    }
                    None => break,
                }
            }
        }
        if !any {
            return frags;
        }
        // Then each present candidate in priority order takes its occurrences in what is left.
        for (ci, s) in self.list.iter().enumerate() {
            if present[ci] {
                frags = apply(&frags, s, text_of(s.id), text);
            }
        }
        frags
    }
}

/// Let one candidate take its leftmost non-overlapping occurrences inside each text fragment.
fn apply(frags: &[Frag], s: &Special, pat: &str, text: &str) -> Vec<Frag> {
    let bytes = text.as_bytes();
    let len = pat.len();
    let mut out = Vec::with_capacity(frags.len() + 2);
    for &f in frags {
        let (start, end) = match f {
            Frag::Token(_) => {
                out.push(f);
                continue;
            }
            Frag::Text(a, b) => (a, b),
        };
        let mut cur = start;
        // Fragment bounds are always character boundaries (matches are whole tokens, and
        // stripping only removes ASCII whitespace).
        while let Some(i) = text[cur..end].find(pat) {
            let p = cur + i;
            if p > cur {
                let mut left_end = p;
                if s.lstrip {
                    while left_end > cur && c_isspace(bytes[left_end - 1]) {
                        left_end -= 1;
                    }
                }
                if left_end > cur {
                    out.push(Frag::Text(cur, left_end));
                }
            }
            out.push(Frag::Token(s.id));
            cur = p + len;
            if s.rstrip {
                while cur < end && c_isspace(bytes[cur]) {
                    cur += 1;
                }
            }
        }
        if cur < end {
            out.push(Frag::Text(cur, end));
        }
    }
    out
}
