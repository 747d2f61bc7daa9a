//! Stop strings over streamed text: split across pieces, at the very start, overlapping
//! candidates, multi-byte characters, and a randomized comparison with a whole-text reference.

use coil_core::generate::StopMatcher;
use coil_core::util::SplitMix64;
use coil_core::ErrorCode;

fn matcher(stops: &[&str]) -> StopMatcher {
    StopMatcher::new(stops.iter().map(|s| s.to_string()).collect()).unwrap()
}

/// Pushes `pieces`; returns each push's output, whether a stop matched, and the final text
/// (including the flush when nothing matched).
fn stream(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
    let mut m = matcher(stops);
    let mut outs = Vec::new();
    let mut text = String::new();
    for p in pieces {
        let (o, hit) = m.push(p);
        text.push_str(&o);
        outs.push(o);
        if hit {
            assert_eq!(m.push("more"), (String::new(), true), "after a match nothing more comes out");
            assert_eq!(m.flush(), "");
            return (outs, true, text);
        }
    }
    text.push_str(&m.flush());
    (outs, false, text)
}

#[test]
fn split_across_pieces() {
    let (outs, hit, text) = stream(&["<|end|>"], &["Hello <", "|en", "d|>", " more"]);
    assert!(hit);
    assert_eq!(text, "Hello ");
    assert_eq!(outs, ["Hello ", "", ""]);
    // A stop spread over many one-character pieces.
    let pieces: Vec<String> = "abc<|end|>xyz".chars().map(|c| c.to_string()).collect();
    let refs: Vec<&str> = pieces.iter().map(|s| s.as_str()).collect();
    let (_, hit, text) = stream(&["<|end|>"], &refs);
    assert!(hit);
    assert_eq!(text, "abc");
}

#[test]
fn at_the_very_start() {
    assert_eq!(stream(&["STOP"], &["STOP"]), (vec![String::new()], true, String::new()));
    assert_eq!(stream(&["STOP"], &["ST", "OP", "x"]), (vec![String::new(), String::new()], true, String::new()));
    assert_eq!(stream(&["STOP"], &["STOPPED"]).2, "");
    assert_eq!(stream(&["\n"], &["\nfoo"]).2, "");
}

#[test]
fn held_back_only_while_a_stop_can_complete() {
    // "ab" could start "abc": held; "d" rules it out: released.
    let (outs, hit, text) = stream(&["abc"], &["a", "b", "d"]);
    assert!(!hit);
    assert_eq!(outs, ["", "", "abd"]);
    assert_eq!(text, "abd");
    // Only the longest suffix that is a prefix is held.
    let (outs, _, _) = stream(&["abc"], &["xxab"]);
    assert_eq!(outs, ["xx"]);
    let (outs, _, text) = stream(&["aab"], &["a", "a", "a", "b"]);
    assert_eq!(outs, ["", "", "a", ""]);
    assert_eq!(text, "a");
    // Nothing that can start a stop is never held.
    let (outs, _, _) = stream(&["xyz"], &["hello", " world"]);
    assert_eq!(outs, ["hello", " world"]);
    // The end flushes what is held.
    let (_, hit, text) = stream(&["abc"], &["hello ab"]);
    assert!(!hit);
    assert_eq!(text, "hello ab");
    // No stops: everything passes through at once.
    assert_eq!(stream(&[], &["a", "b"]).0, ["a", "b"]);
}

#[test]
fn overlapping_candidates() {
    // "ab" completes before "abc" could.
    assert_eq!(stream(&["abc", "ab"], &["xabc"]).2, "x");
    assert_eq!(stream(&["ab", "abc"], &["x", "a", "b", "c"]).2, "x");
    // Same end: the one that starts first (the longer).
    assert_eq!(stream(&["bc", "abc"], &["xabc"]).2, "x");
    // The first to complete wins, even if another started earlier, however the text is cut.
    for pieces in [&["abcde"][..], &["a", "b", "c", "d", "e"], &["ab", "cde"], &["abc", "de"]] {
        assert_eq!(stream(&["abcde", "bc"], pieces).2, "a", "{pieces:?}");
    }
    // A long candidate fails, a shorter one inside it completes.
    assert_eq!(stream(&["abcx", "cd"], &["ab", "c", "d"]).2, "ab");
    assert_eq!(stream(&["abcx", "bcd"], &["abcd"]).2, "a");
}

#[test]
fn multibyte_utf8() {
    assert_eq!(
        stream(&["é!"], &["caf", "é", "!", " ok"]),
        (vec!["caf".into(), "".into(), "".into()], true, "caf".into())
    );
    // "è" shares its first byte with "é" but is not a prefix of it: not held.
    assert_eq!(stream(&["é"], &["è"]).0, ["è"]);
    assert_eq!(stream(&["😀x"], &["a😀", "y"]), (vec!["a".into(), "😀y".into()], false, "a😀y".into()));
    assert_eq!(stream(&["😀x"], &["a😀", "x"]).2, "a");
    assert_eq!(stream(&["日本"], &["私は日", "本人"]).2, "私は");
    assert_eq!(stream(&["本人です"], &["私は日本", "人"]).2, "私は日本人");
    // Stops around multi-byte neighbours.
    assert_eq!(stream(&["</s>"], &["ü</", "s>ü"]).2, "ü");
}

#[test]
fn empty_stop_rejected() {
    let e = StopMatcher::new(vec!["ok".into(), String::new()]).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
}

/// Random texts, stop sets and cuts against the whole-text rule: the occurrence that ends first
/// (ties: starts first) decides; the output is the text before it, or all of it.
#[test]
fn random_against_reference() {
    let alphabet = ['a', 'b', 'c', 'é', '日', '😀'];
    let mut r = SplitMix64::new(77);
    let pick = |r: &mut SplitMix64, n: usize| -> String {
        (0..n).map(|_| alphabet[r.below(alphabet.len() as u64) as usize]).collect()
    };
    for _ in 0..20_000 {
        let text_len = 1 + r.below(24) as usize;
        let text = pick(&mut r, text_len);
        let n_stops = 1 + r.below(3) as usize;
        let stops: Vec<String> = (0..n_stops)
            .map(|_| {
                let len = 1 + r.below(4) as usize;
                pick(&mut r, len)
            })
            .collect();
        // Reference.
        let mut best: Option<(usize, usize)> = None;
        for s in &stops {
            if let Some(start) = text.find(s.as_str()) {
                let end = start + s.len();
                if best.is_none_or(|b| (end, start) < b) {
                    best = Some((end, start));
                }
            }
        }
        let want = match best {
            Some((_, start)) => text[..start].to_string(),
            None => text.clone(),
        };
        // Stream with random cuts at char boundaries.
        let chars: Vec<char> = text.chars().collect();
        let mut m = StopMatcher::new(stops.clone()).unwrap();
        let mut got = String::new();
        let mut i = 0;
        let mut hit = false;
        let max_stop = stops.iter().map(|s| s.len()).max().unwrap();
        while i < chars.len() {
            let n = 1 + r.below(5) as usize;
            let piece: String = chars[i..(i + n).min(chars.len())].iter().collect();
            i += n;
            let (o, h) = m.push(&piece);
            got.push_str(&o);
            assert!(want.starts_with(&got), "text {text:?} stops {stops:?}: emitted {got:?} beyond {want:?}");
            if h {
                hit = true;
                break;
            }
            assert!(m.pending().len() < max_stop, "holds more than a stop prefix");
        }
        if !hit {
            got.push_str(&m.flush());
        }
        assert_eq!(hit, best.is_some(), "text {text:?} stops {stops:?}");
        assert_eq!(got, want, "text {text:?} stops {stops:?}");
    }
}
