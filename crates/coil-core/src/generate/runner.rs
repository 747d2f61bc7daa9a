//! A context plus the generations running on it, driven in batches: what both bindings hold.
//!
//! [`Runner::run`] takes work for several sequences — evaluations (logits none/last/all) and
//! generation steps — and runs it as **one** [`Context::evaluate`] call, so concurrent requests on
//! different sequences share every projection matmul and one pass of the scan (the context splits
//! the batch into equal-length micro-batches). Each item may ask for prompt reuse: its tokens are
//! then the whole sequence from position 0; the sequence is first rolled back to the longest
//! prefix it holds or can restore from a checkpoint (nothing is evaluated for that), and only the
//! rest is fed. Everything the caller controls is checked before anything changes; a failed
//! batch changes nothing (except an `INTERNAL` failure, which resets the sequences in it).
//! A sampling failure of one generation is reported for that item only.

use std::collections::HashMap;

use serde_json::json;

use super::{GenerateParams, Generator, Step};
use crate::context::{Batch, Context};
use crate::error::{CoilError, ErrorCode, Result};

/// Which logits an evaluation returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    None,
    Last,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Eval(Want),
    /// One step of generator `id` (its prompt on the first step, then the pending token).
    Step(u32),
}

/// One sequence's part of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub seq: u32,
    pub tokens: Vec<u32>,
    pub work: Work,
    /// `tokens` are the whole sequence from position 0: reuse what the sequence already holds.
    pub reuse: bool,
}

impl Item {
    /// Items of a batch from the flat arrays both bindings receive from the facade: per item its
    /// sequence, kind (low two bits: 0 evaluate without logits, 1 last logits, 2 all logits, 3 a
    /// step of generator `gens[i]`; +4: prompt reuse) and token count; then every item's tokens,
    /// concatenated. Inconsistent lengths are an `InvalidArgument` error.
    pub fn decode_flat(seqs: &[u32], kinds: &[u8], gens: &[u32], lens: &[u32], tokens: &[u32]) -> Result<Vec<Item>> {
        let n = seqs.len();
        let bad = |m: &str| CoilError::new(ErrorCode::InvalidArgument, m.to_string());
        if kinds.len() != n || gens.len() != n || lens.len() != n {
            return Err(bad("batch arrays differ in length"));
        }
        if lens.iter().map(|&l| l as u64).sum::<u64>() != tokens.len() as u64 {
            return Err(bad("item lengths do not add up to the tokens"));
        }
        let mut at = 0usize;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let l = lens[i] as usize;
            let work = match kinds[i] & 3 {
                0 => Work::Eval(Want::None),
                1 => Work::Eval(Want::Last),
                2 => Work::Eval(Want::All),
                _ => Work::Step(gens[i]),
            };
            out.push(Item { seq: seqs[i], tokens: tokens[at..at + l].to_vec(), work, reuse: kinds[i] & 4 != 0 });
            at += l;
        }
        Ok(out)
    }
}

#[derive(Debug)]
pub struct ItemResult {
    /// Prompt tokens that were not evaluated again (reuse items; 0 otherwise).
    pub reused: u32,
    /// Floats of logits this item contributed to [`RunOutput::logits`].
    pub n_logits: usize,
    pub step: Option<Result<Step>>,
}

#[derive(Debug, Default)]
pub struct RunOutput {
    /// The evaluation items' logits, concatenated in item order.
    pub logits: Vec<f32>,
    pub items: Vec<ItemResult>,
}

impl RunOutput {
    /// `[{"reused": n, "step": {...} | null, "error": "<wire error>" | null}, ...]` for the bindings.
    pub fn results_json(&self) -> String {
        let v: Vec<serde_json::Value> = self
            .items
            .iter()
            .map(|r| {
                let (step, error) = match &r.step {
                    None => (serde_json::Value::Null, serde_json::Value::Null),
                    Some(Ok(s)) => (
                        json!({"token": s.token, "text": s.text, "stop": s.stop.map(|r| r.as_str())}),
                        serde_json::Value::Null,
                    ),
                    Some(Err(e)) => (serde_json::Value::Null, json!(e.to_wire())),
                };
                json!({"reused": r.reused, "step": step, "error": error})
            })
            .collect();
        serde_json::Value::Array(v).to_string()
    }
}

fn bad(msg: impl Into<String>) -> CoilError {
    CoilError::new(ErrorCode::InvalidArgument, msg)
}

pub struct Runner {
    ctx: Context,
    gens: HashMap<u32, (u32, Generator)>,
    next_id: u32,
}

impl Runner {
    pub fn new(ctx: Context) -> Runner {
        Runner { ctx, gens: HashMap::new(), next_id: 1 }
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    pub fn context_mut(&mut self) -> &mut Context {
        &mut self.ctx
    }

    /// A generation for sequence `seq`; returns its id.
    pub fn create_generator(&mut self, seq: u32, params: GenerateParams) -> Result<u32> {
        self.ctx.position(seq)?;
        let g = Generator::new(self.ctx.model().clone(), params)?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.gens.insert(id, (seq, g));
        Ok(id)
    }

    /// Drops a generation without feeding its last token.
    pub fn release_generator(&mut self, id: u32) {
        self.gens.remove(&id);
    }

    /// Ends generation `id` the way the JS API does ([`Generator::end`]: the last sampled token is
    /// fed), takes the policy's end-of-generation checkpoint, and drops it. Returns the text still
    /// held back.
    pub fn end_generator(&mut self, id: u32) -> Result<String> {
        let (seq, mut g) = self.gens.remove(&id).ok_or_else(|| bad(format!("no generation {id}")))?;
        let stepped = g.sequence().is_some();
        let tail = g.end(&mut self.ctx, seq)?;
        if stepped {
            self.ctx.checkpoint_auto(seq)?;
        }
        Ok(tail)
    }

    /// Runs `items` (at most one per sequence) as one batch. See the module documentation.
    pub fn run(&mut self, items: &[Item]) -> Result<RunOutput> {
        if items.is_empty() {
            return Err(bad("nothing to run"));
        }
        let n_vocab = self.ctx.model().require_weights()?.hp.n_vocab;
        // ---- Check everything; plan the rewinds and feeds. ----
        let mut plan: Vec<(u32, std::ops::Range<usize>)> = Vec::with_capacity(items.len()); // (reused, feed range)
        let mut feeds: Vec<Vec<u32>> = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            self.ctx.position(it.seq)?;
            if items[..i].iter().any(|o| o.seq == it.seq) {
                return Err(bad(format!("sequence {} appears twice in one batch", it.seq)));
            }
            let reused = if it.reuse {
                if it.tokens.is_empty() {
                    return Err(bad("a prompt to reuse needs at least one token"));
                }
                self.ctx.reuse_point(it.seq, &it.tokens)?
            } else {
                0
            };
            let rest = &it.tokens[reused as usize..];
            let feed = match it.work {
                Work::Eval(_) => {
                    if rest.is_empty() {
                        return Err(bad("evaluate needs at least one token"));
                    }
                    rest.to_vec()
                }
                Work::Step(id) => {
                    let (gseq, g) = self.gens.get(&id).ok_or_else(|| bad(format!("no generation {id}")))?;
                    if *gseq != it.seq {
                        return Err(bad(format!("generation {id} runs on sequence {gseq}, not {}", it.seq)));
                    }
                    if it.reuse && g.prompt_len().is_some() {
                        return Err(bad("prompt reuse applies to the first step of a generation only"));
                    }
                    if it.reuse {
                        // Position checks come after the rewind; the first step has none.
                        if g.is_finished() {
                            return Err(bad("generation has finished"));
                        }
                        rest.to_vec()
                    } else {
                        g.next_feed(&self.ctx, it.seq, rest)?
                    }
                }
            };
            if let Some(&t) = feed.iter().find(|&&t| t as usize >= n_vocab) {
                return Err(CoilError::new(
                    ErrorCode::TokenOutOfRange,
                    format!("token {t} is outside the model's vocabulary (0..{n_vocab})"),
                ));
            }
            plan.push((reused, 0..0));
            feeds.push(feed);
        }

        // ---- Rewind (no evaluation), then one batch. ----
        let mut pos_before = Vec::with_capacity(items.len());
        for (it, (reused, _)) in items.iter().zip(&plan) {
            if it.reuse {
                self.ctx.rewind_for(it.seq, &it.tokens)?;
                if let Work::Step(id) = it.work {
                    let (_, g) = self.gens.get_mut(&id).expect("checked");
                    g.set_context_tokens(&it.tokens[..*reused as usize])?;
                }
            }
            pos_before.push(self.ctx.position(it.seq)?);
        }
        let mut batch = Batch::new();
        for ((it, feed), p) in items.iter().zip(&feeds).zip(plan.iter_mut()) {
            let n = feed.len();
            for (j, &t) in feed.iter().enumerate() {
                let want = match it.work {
                    Work::Eval(Want::None) => false,
                    Work::Eval(Want::All) => true,
                    Work::Eval(Want::Last) | Work::Step(_) => j + 1 == n,
                };
                batch.push(t, it.seq, want);
            }
            let rows = match it.work {
                Work::Eval(Want::None) => 0,
                Work::Eval(Want::All) => n,
                _ => 1,
            };
            p.1 = 0..rows;
        }
        let logits = self.ctx.evaluate(&batch)?;

        // ---- Hand each item its rows; advance the generations. ----
        let v = logits.n_vocab();
        let mut out = RunOutput::default();
        let mut row = 0;
        for (((it, feed), (reused, rows)), p0) in items.iter().zip(&feeds).zip(&plan).zip(&pos_before) {
            let r = rows.len();
            let data = &logits.as_slice()[row * v..(row + r) * v];
            row += r;
            let mut res = ItemResult { reused: *reused, n_logits: 0, step: None };
            match it.work {
                Work::Eval(_) => {
                    out.logits.extend_from_slice(data);
                    res.n_logits = data.len();
                }
                Work::Step(id) => {
                    let (_, g) = self.gens.get_mut(&id).expect("checked");
                    res.step = Some(g.advance_on(it.seq, *p0, feed, data));
                }
            }
            out.items.push(res);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{Item, Want, Work};

    #[test]
    fn decode_flat_items() {
        let items = Item::decode_flat(&[0, 1, 2], &[1, 2 | 4, 3], &[0, 0, 7], &[2, 1, 0], &[5, 6, 9]).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(
            (items[0].seq, items[0].tokens.clone(), items[0].work, items[0].reuse),
            (0, vec![5, 6], Work::Eval(Want::Last), false)
        );
        assert_eq!((items[1].tokens.clone(), items[1].work, items[1].reuse), (vec![9], Work::Eval(Want::All), true));
        assert_eq!((items[2].tokens.len(), items[2].work), (0, Work::Step(7)));
        assert!(Item::decode_flat(&[0], &[1, 1], &[0], &[1], &[5]).is_err());
        assert!(Item::decode_flat(&[0], &[1], &[0], &[2], &[5]).is_err());
        assert!(Item::decode_flat(&[0], &[1], &[0], &[u32::MAX], &[5]).is_err());
    }
}
