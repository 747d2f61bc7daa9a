//! Cutting a batch into micro-batches: the equal-length split.
//!
//! A batch holds new tokens of several sequences, of unequal lengths. It is cut into micro-batches
//! in which every sequence present contributes the same number of tokens `k` (llama.cpp's
//! `split_equal`), so one pass of the conv and the scan steps all of them together, `k` steps
//! each, and the batched projections see a rectangular `[n_seq × k]` block. `k` is the shortest
//! remaining run, capped so a micro-batch holds at most `n_ubatch` tokens and so that no sequence
//! crosses a checkpoint boundary (a multiple of the policy's interval) inside a micro-batch — the
//! state is only observable between micro-batches. With more sequences than `n_ubatch`, the first
//! `n_ubatch` go one token each and the rest wait for the next micro-batch.

/// One sequence's part of a micro-batch: `(group, offset, len)` — tokens `offset..offset + len`
/// of group `group`.
pub(crate) type Run = (usize, usize, usize);

/// Plans the micro-batches for groups of `lens[i]` tokens starting at positions `starts[i]`.
pub(crate) fn split_equal(starts: &[u32], lens: &[usize], n_ubatch: usize, interval: u32) -> Vec<Vec<Run>> {
    let n_ubatch = n_ubatch.max(1);
    let mut cur = vec![0usize; lens.len()];
    let mut out = Vec::new();
    loop {
        let active: Vec<usize> = (0..lens.len()).filter(|&i| cur[i] < lens[i]).collect();
        if active.is_empty() {
            return out;
        }
        let take = &active[..active.len().min(n_ubatch)];
        let mut k = n_ubatch / take.len();
        for &i in take {
            k = k.min(lens[i] - cur[i]);
            if interval > 0 {
                let p = starts[i] as u64 + cur[i] as u64;
                let to_boundary = interval as u64 - p % interval as u64;
                k = k.min(to_boundary as usize);
            }
        }
        let k = k.max(1);
        out.push(take.iter().map(|&i| (i, cur[i], k)).collect());
        for &i in take {
            cur[i] += k;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(starts: &[u32], lens: &[usize], ub: usize, iv: u32) -> Vec<Vec<Run>> {
        let plan = split_equal(starts, lens, ub, iv);
        let mut seen = vec![0usize; lens.len()];
        for mb in &plan {
            let k = mb[0].2;
            assert!(mb.iter().all(|r| r.2 == k), "unequal runs {mb:?}");
            assert!(mb.len() * k <= ub.max(1));
            for &(g, off, len) in mb {
                assert_eq!(off, seen[g], "runs of a group are in order");
                seen[g] += len;
                if iv > 0 {
                    let a = starts[g] as usize + off;
                    // No boundary strictly inside the run.
                    assert!((a + 1..a + len).all(|p| p % iv as usize != 0), "{mb:?} crosses a boundary");
                }
            }
        }
        assert_eq!(seen, lens);
        plan
    }

    #[test]
    fn equal_runs_cover_everything() {
        let p = check(&[0, 0, 0], &[5, 1, 3], 512, 0);
        assert_eq!(p, vec![vec![(0, 0, 1), (1, 0, 1), (2, 0, 1)], vec![(0, 1, 2), (2, 1, 2)], vec![(0, 3, 2)]]);
        check(&[250, 0], &[100, 100], 512, 256);
        check(&[0; 10], &[3; 10], 4, 0);
        check(&[7, 300, 1000], &[1000, 17, 600], 64, 128);
        let mut r = crate::util::SplitMix64::new(1);
        for _ in 0..200 {
            let n = 1 + r.below(9) as usize;
            let starts: Vec<u32> = (0..n).map(|_| r.below(600) as u32).collect();
            let lens: Vec<usize> = (0..n).map(|_| 1 + r.below(300) as usize).collect();
            check(&starts, &lens, 1 + r.below(300) as usize, r.below(3) as u32 * 64);
        }
    }
}
