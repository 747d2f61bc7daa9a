//! Stop strings over streamed text.
//!
//! [`StopMatcher::push`] takes the next piece of generated text and returns what is safe to show
//! now. Text is held back only while it could still be the start of a stop string (the longest
//! suffix of the unshown text that is a proper prefix of some stop string); as soon as a stop
//! string is complete, the text before it is released, and the stop string and everything after
//! it are dropped.
//!
//! When several stop strings occur, the one that *ends* first wins (ties: the one that starts
//! first, i.e. the longer). That is the only rule that does not depend on how the text was cut
//! into pieces: a streamed generation stops as soon as any stop string is complete. For example
//! with stops `["abcde", "bc"]`, the text `"abcde"` stops at `"bc"` and shows `"a"`, whether it
//! arrives whole or a character at a time.
//!
//! Matching is on Unicode text (`&str`), so multi-byte characters are never split: a held-back
//! suffix always starts on a character boundary.

use crate::error::{CoilError, ErrorCode, Result};

#[derive(Debug, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    /// Longest stop string, in bytes.
    max_len: usize,
    /// Text received but not yet released (a possible start of a stop string).
    pending: String,
    /// The stop string that matched, once one has.
    matched: Option<usize>,
}

impl StopMatcher {
    /// `stops`: the stop strings (`InvalidArgument` for an empty one). An empty list never holds
    /// anything back.
    pub fn new(stops: Vec<String>) -> Result<StopMatcher> {
        if let Some(i) = stops.iter().position(|s| s.is_empty()) {
            return Err(CoilError::new(
                ErrorCode::InvalidArgument,
                format!("stop string {i} is empty (an empty stop string would stop before anything is generated)"),
            ));
        }
        let max_len = stops.iter().map(|s| s.len()).max().unwrap_or(0);
        Ok(StopMatcher { stops, max_len, pending: String::new(), matched: None })
    }

    pub fn stops(&self) -> &[String] {
        &self.stops
    }

    /// Adds generated text. Returns the text that can be shown now and whether a stop string has
    /// matched (then the returned text is everything before it, and later pushes return nothing).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.matched.is_some() {
            return (String::new(), true);
        }
        if self.stops.is_empty() {
            return (text.to_string(), false);
        }
        // Everything before `pending` was checked: any complete match ends inside `text`.
        let old = self.pending.len();
        self.pending.push_str(text);
        // The match that ends first; ties: the one that starts first.
        let mut best: Option<(usize, usize, usize)> = None; // (end, start, stop index)
        for (si, s) in self.stops.iter().enumerate() {
            // Only occurrences ending after `old` are new; earlier ones cannot exist. Searching
            // from `old + 1 - len` (at a char boundary at or before it) is enough.
            let from = floor_boundary(&self.pending, (old + 1).saturating_sub(s.len()));
            if let Some(pos) = self.pending[from..].find(s.as_str()) {
                let start = from + pos;
                let end = start + s.len();
                if best.is_none_or(|b| (end, start) < (b.0, b.1)) {
                    best = Some((end, start, si));
                }
            }
        }
        if let Some((_, start, si)) = best {
            let out = self.pending[..start].to_string();
            self.pending.clear();
            self.matched = Some(si);
            return (out, true);
        }
        // Hold back the longest suffix that is a proper prefix of a stop string.
        let hold = self.held_suffix();
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    /// Length in bytes of the longest suffix of `pending` that is a proper prefix of some stop.
    fn held_suffix(&self) -> usize {
        let p = &self.pending;
        let lo = floor_boundary(p, p.len().saturating_sub(self.max_len.saturating_sub(1)));
        // Longest first: the first char boundary from the left that works.
        for (i, _) in p[lo..].char_indices() {
            let suffix = &p[lo + i..];
            if self.stops.iter().any(|s| s.len() > suffix.len() && s.starts_with(suffix)) {
                return suffix.len();
            }
        }
        0
    }

    /// End of the text: releases whatever is held back (nothing after a match).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Text received but not released yet.
    pub fn pending(&self) -> &str {
        &self.pending
    }

    /// The stop string that matched, if one has.
    pub fn matched(&self) -> Option<&str> {
        self.matched.map(|i| self.stops[i].as_str())
    }
}

/// The largest char boundary of `s` at or before `i`.
fn floor_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect()).unwrap();
        let mut out = String::new();
        for p in pieces {
            let (s, hit) = m.push(p);
            out.push_str(&s);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn basics() {
        assert_eq!(run(&["END"], &["hello E", "N", "D more"]), ("hello ".into(), true));
        assert_eq!(run(&["END"], &["hello E", "N", "x"]), ("hello ENx".into(), false));
        assert_eq!(run(&["END"], &["END"]), ("".into(), true));
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run(&["abcde", "bc"], &["abcde"]), ("a".into(), true));
        assert_eq!(run(&["abcde", "bc"], &["a", "b", "c", "d", "e"]), ("a".into(), true));
        assert!(StopMatcher::new(vec!["".into()]).is_err());
    }
}
