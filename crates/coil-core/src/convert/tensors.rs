//! The conversion plan and the [`Planner`] that builds it: every GGUF tensor of the output file, in
//! file order, as a list of element runs ([`Piece`]s) of source tensors, with the per-element
//! transform and scale. Each architecture (`archs/<arch>.rs`) asks the planner for the GGUF tensors
//! it writes, naming the source tensor and the PyTorch shape it must have; the planner checks
//! dtype and shape, and at the end refuses any source tensor nobody asked for (llama.cpp's
//! converter refuses unknown tensors too).
//!
//! What a GGUF tensor can be made of (all only regroup elements, plus the elementwise transform):
//! * a whole source tensor, possibly reshaped (`conv1d.weight` `[C, 1, K]` -> `{K, C}`, Mamba-2's
//!   `A`/`D` `[H]` -> `{1, H}`, `norm.weight` `[E]` -> `{E/G, G}`);
//! * a range of rows of each matrix of a source tensor (fused gate/up projections split in two);
//! * row blocks with a scale each (Falcon-H1's µP multipliers on `in_proj`'s z/x/B/C/dt rows);
//! * rows in another order (llama.cpp's q/k permutation for ggml's NORM RoPE);
//! * source tensors stacked on a new outer dimension (per-expert weights -> `ffn_*_exps`).
//!
//! Transforms: `A = -exp(A_log)` ([`Transform::NegExp`]) and a constant factor per piece.

use std::collections::HashMap;

use super::safetensors::{Checkpoint, StDtype, StTensor};
use crate::error::{CoilError, ErrorCode, Result};

/// A contiguous run of elements of one source tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// Index into `Checkpoint::tensors`.
    pub tensor: usize,
    /// First element (in the source tensor's flat order).
    pub first: u64,
    pub count: u64,
    /// Every element is multiplied by it (in f64, rounded once to f32); 1 for none.
    pub scale: f64,
}

/// An elementwise transform applied after reading (before the scale).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    None,
    /// `A = -exp(A_log)`.
    NegExp,
}

/// One tensor of the output file.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedTensor {
    pub name: String,
    /// ggml order (`dims[0]` contiguous).
    pub dims: Vec<u64>,
    /// Where the elements come from, in output order.
    pub pieces: Vec<Piece>,
    pub transform: Transform,
    /// F32 whatever the output type (see [`forced_f32`]).
    pub forced_f32: bool,
}

impl PlannedTensor {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// The conversion plan: every output tensor, in file order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tensors: Vec<PlannedTensor>,
    /// Rows of the token embedding (the vocabulary size the file must have).
    pub n_vocab: u64,
    /// Whether an `output.weight` equal to the embedding was left out.
    pub tied_output_omitted: bool,
    pub warnings: Vec<String>,
}

/// Largest vocabulary accepted (the tokenizer's limit).
const MAX_VOCAB: u64 = 1 << 24;

pub(crate) fn shape_err(ck: &Checkpoint, t: &StTensor, msg: impl std::fmt::Display) -> CoilError {
    CoilError::new(
        ErrorCode::BadTensorShape,
        format!("{}: tensor \"{}\" has shape {:?}: {msg}", ck.path_of(t).display(), t.name, t.shape),
    )
}

pub(crate) fn unmapped(ck: &Checkpoint, t: &StTensor, why: &str) -> CoilError {
    CoilError::new(
        ErrorCode::InvalidArgument,
        format!("{}: cannot map tensor \"{}\" to GGUF: {why}", ck.path_of(t).display(), t.name),
    )
}

/// Names that llama.cpp's converter drops.
fn ignored(name: &str) -> bool {
    name.ends_with(".attention.masked_bias")
        || name.ends_with(".attention.bias")
        || name.ends_with(".rotary_emb.inv_freq")
}

fn is_float(d: StDtype) -> bool {
    matches!(d, StDtype::F32 | StDtype::F16 | StDtype::BF16)
}

/// Which rows of the source tensor's matrices a GGUF tensor takes. The matrix is the last two
/// dimensions (`[R, C]`; a vector is `[R, 1]`); anything before them (experts) repeats.
#[derive(Debug, Clone, PartialEq)]
pub enum Rows {
    All,
    /// Rows `first..first + count` of each matrix.
    Range(u64, u64),
    /// Consecutive blocks of rows covering the matrix, each with its own scale.
    Blocks(Vec<(u64, f64)>),
    /// Row `i` of the output is row `perm[i]` of the source.
    Permute(Vec<u64>),
}

/// One GGUF tensor from one source tensor: see the `Take::*` builders.
#[derive(Debug, Clone)]
pub struct Take {
    pub gguf: String,
    /// The (canonical) source name.
    pub src: String,
    /// The PyTorch shape the source must have.
    pub shape: Vec<u64>,
    /// Another shape accepted for the same elements (a conv weight without its middle 1).
    pub alt: Option<Vec<u64>>,
    /// PyTorch-order shape written (reversed into ggml dims); default: the shape after `rows`.
    pub out: Option<Vec<u64>>,
    pub rows: Rows,
    pub transform: Transform,
    pub scale: f64,
    pub required: bool,
}

impl Take {
    pub fn new(gguf: impl Into<String>, src: impl Into<String>, shape: &[u64]) -> Take {
        Take {
            gguf: gguf.into(),
            src: src.into(),
            shape: shape.to_vec(),
            alt: None,
            out: None,
            rows: Rows::All,
            transform: Transform::None,
            scale: 1.0,
            required: true,
        }
    }
    pub fn alt(mut self, shape: &[u64]) -> Take {
        self.alt = Some(shape.to_vec());
        self
    }
    pub fn out(mut self, shape: &[u64]) -> Take {
        self.out = Some(shape.to_vec());
        self
    }
    pub fn rows(mut self, rows: Rows) -> Take {
        self.rows = rows;
        self
    }
    pub fn neg_exp(mut self) -> Take {
        self.transform = Transform::NegExp;
        self
    }
    pub fn scale(mut self, s: f64) -> Take {
        self.scale = s;
        self
    }
    pub fn optional(mut self) -> Take {
        self.required = false;
        self
    }
    pub fn required(mut self, r: bool) -> Take {
        self.required = r;
        self
    }
}

/// Builds a [`Plan`]: the architecture asks for each GGUF tensor in file order.
pub struct Planner<'a> {
    pub ck: &'a Checkpoint,
    /// `general.architecture`, for messages.
    pub arch: &'static str,
    index: HashMap<String, usize>,
    used: Vec<bool>,
    out: Vec<PlannedTensor>,
    pub warnings: Vec<String>,
}

impl<'a> Planner<'a> {
    /// `canon` gives each source name the name the architecture looks it up by (a rename of
    /// another spelling), or `None` to leave the tensor out.
    pub fn new(ck: &'a Checkpoint, arch: &'static str, canon: impl Fn(&str) -> Option<String>) -> Result<Planner<'a>> {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut used = vec![false; ck.tensors.len()];
        for (i, t) in ck.tensors.iter().enumerate() {
            let name = if ignored(&t.name) { None } else { canon(&t.name) };
            match name {
                None => used[i] = true,
                Some(n) => {
                    if let Some(&j) = index.get(&n) {
                        return Err(unmapped(
                            ck,
                            t,
                            &format!("\"{}\" is the same tensor under another name", ck.tensors[j].name),
                        ));
                    }
                    index.insert(n, i);
                }
            }
        }
        Ok(Planner { ck, arch, index, used, out: Vec::new(), warnings: Vec::new() })
    }

    /// Whether the checkpoint has a tensor of this (canonical) name.
    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The first of `names` the checkpoint has.
    pub fn pick(&self, names: &[String]) -> Option<String> {
        names.iter().find(|n| self.has(n)).cloned()
    }

    /// The source tensor of a (canonical) name.
    pub fn source(&self, name: &str) -> Option<&'a StTensor> {
        self.index.get(name).map(|&i| &self.ck.tensors[i])
    }

    fn missing(&self, gguf: &str, src: &str) -> CoilError {
        CoilError::new(
            ErrorCode::MissingTensor,
            format!("the checkpoint has no tensor {src} for {gguf} (required for {})", self.arch),
        )
    }

    /// Looks a source up for `gguf`, checks its dtype and marks it used.
    fn get(&mut self, gguf: &str, src: &str, required: bool) -> Result<Option<usize>> {
        let Some(&i) = self.index.get(src) else {
            return if required { Err(self.missing(gguf, src)) } else { Ok(None) };
        };
        let t = &self.ck.tensors[i];
        if !is_float(t.dtype) {
            return Err(CoilError::new(
                ErrorCode::UnsupportedType,
                format!(
                    "{}: tensor \"{}\" is {}; only F32, F16 and BF16 tensors can be converted",
                    self.ck.path_of(t).display(),
                    t.name,
                    t.dtype
                ),
            ));
        }
        self.used[i] = true;
        Ok(Some(i))
    }

    /// Plans one GGUF tensor from one source tensor; `false` if an optional source is absent.
    pub fn take(&mut self, t: Take) -> Result<bool> {
        let Some(i) = self.get(&t.gguf, &t.src, t.required)? else { return Ok(false) };
        let st = &self.ck.tensors[i];
        if st.shape != t.shape && t.alt.as_ref() != Some(&st.shape) {
            return Err(shape_err(self.ck, st, format!("expected {:?} for {}", t.shape, t.gguf)));
        }
        let n = t.shape.len();
        let (lead, r, c) = match n {
            0 => (1, 1, 1),
            1 => (1, t.shape[0], 1),
            _ => (t.shape[..n - 2].iter().product::<u64>(), t.shape[n - 2], t.shape[n - 1]),
        };
        let mut pieces: Vec<Piece> = Vec::new();
        let mut push = |first: u64, count: u64, scale: f64| {
            if let Some(last) = pieces.last_mut() {
                if last.first + last.count == first && last.scale == scale {
                    last.count += count;
                    return;
                }
            }
            pieces.push(Piece { tensor: i, first, count, scale });
        };
        let s = t.scale;
        let mut out_rows = r;
        match &t.rows {
            Rows::All => push(0, lead * r * c, s),
            Rows::Range(first, count) => {
                if first + count > r {
                    return Err(CoilError::new(ErrorCode::Internal, format!("{}: row range past {r}", t.gguf)));
                }
                for l in 0..lead {
                    push((l * r + first) * c, count * c, s);
                }
                out_rows = *count;
            }
            Rows::Blocks(blocks) => {
                if blocks.iter().map(|b| b.0).sum::<u64>() != r {
                    return Err(CoilError::new(
                        ErrorCode::Internal,
                        format!("{}: row blocks do not cover {r}", t.gguf),
                    ));
                }
                for l in 0..lead {
                    let mut at = 0;
                    for &(count, bs) in blocks {
                        push((l * r + at) * c, count * c, s * bs);
                        at += count;
                    }
                }
            }
            Rows::Permute(perm) => {
                if perm.len() as u64 != r || perm.iter().any(|&p| p >= r) {
                    return Err(CoilError::new(ErrorCode::Internal, format!("{}: bad row permutation", t.gguf)));
                }
                for l in 0..lead {
                    for &p in perm {
                        push((l * r + p) * c, c, s);
                    }
                }
            }
        }
        let shape = match t.out {
            Some(o) => o,
            None => {
                let mut o = t.shape.clone();
                if n >= 1 {
                    o[n.saturating_sub(2).min(n - 1)] = out_rows;
                }
                o
            }
        };
        self.push(&t.gguf, shape, pieces, t.transform);
        Ok(true)
    }

    /// Stacks per-expert matrices of PyTorch shape `per` (`[a, b]`) on a new outer dimension:
    /// GGUF dims `{b, a, X}`.
    pub fn stack(&mut self, gguf: &str, srcs: &[String], per: &[u64]) -> Result<()> {
        let mut pieces = Vec::with_capacity(srcs.len());
        for (e, src) in srcs.iter().enumerate() {
            let i = self.get(gguf, src, true)?.unwrap_or(0);
            let st = &self.ck.tensors[i];
            if st.shape != per {
                return Err(shape_err(self.ck, st, format!("expected {per:?} for expert {e} of {gguf}")));
            }
            pieces.push(Piece { tensor: i, first: 0, count: st.n_elements(), scale: 1.0 });
        }
        let mut shape = vec![srcs.len() as u64];
        shape.extend_from_slice(per);
        self.push(gguf, shape, pieces, Transform::None);
        Ok(())
    }

    fn push(&mut self, gguf: &str, torch_shape: Vec<u64>, pieces: Vec<Piece>, transform: Transform) {
        let dims: Vec<u64> = torch_shape.iter().rev().copied().collect();
        self.out.push(PlannedTensor {
            name: gguf.to_string(),
            forced_f32: forced_f32(gguf, dims.len()),
            dims,
            pieces,
            transform,
        });
    }

    /// Plans the token embedding `gguf` (`[n_vocab, d_model]`) and returns `n_vocab`, checked
    /// against the config's `vocab_size` (also padded to `pad`, as llama.cpp pads it).
    pub fn embedding(
        &mut self,
        gguf: &str,
        src: &str,
        d_model: u64,
        vocab_size: Option<u64>,
        pad: Option<u64>,
        scale: f64,
    ) -> Result<u64> {
        let Some(&i) = self.index.get(src) else {
            return Err(CoilError::new(
                ErrorCode::MissingTensor,
                format!("the checkpoint has no token embedding ({src} for {gguf})"),
            ));
        };
        let embd = &self.ck.tensors[i];
        if embd.shape.len() != 2 || embd.shape[1] != d_model || embd.shape[0] == 0 {
            return Err(shape_err(self.ck, embd, format!("expected [n_vocab, {d_model}]")));
        }
        let n_vocab = embd.shape[0];
        if n_vocab > MAX_VOCAB {
            return Err(shape_err(self.ck, embd, format!("more than {MAX_VOCAB} vocabulary rows")));
        }
        if let Some(v) = vocab_size {
            let padded = pad.map(|m| super::config::pad_vocab(v, m)).unwrap_or(v);
            if n_vocab != v && n_vocab != padded {
                return Err(shape_err(
                    self.ck,
                    embd,
                    format!("the config's vocab_size {v} (padded: {padded}) contradicts the {n_vocab} embedding rows"),
                ));
            }
            if n_vocab != padded {
                self.warnings.push(format!(
                    "llama.cpp's converter pads the vocabulary to {padded} tokens but the embedding has {n_vocab} rows; the file has {n_vocab} tokens"
                ));
            }
        }
        self.take(Take::new(gguf, src, &[n_vocab, d_model]).scale(scale))?;
        Ok(n_vocab)
    }

    /// Marks a source as consumed without writing it (a tensor found equal to another).
    pub fn consume(&mut self, src: &str) {
        if let Some(&i) = self.index.get(src) {
            self.used[i] = true;
        }
    }

    /// Ends the plan: any source tensor not asked for is an error.
    pub fn finish(self, n_vocab: u64, tied_output_omitted: bool) -> Result<Plan> {
        let mut left: Vec<usize> = (0..self.used.len()).filter(|&i| !self.used[i]).collect();
        left.sort_by(|&a, &b| self.ck.tensors[a].name.cmp(&self.ck.tensors[b].name));
        if let Some(&i) = left.first() {
            return Err(unmapped(
                self.ck,
                &self.ck.tensors[i],
                &format!(
                    "no {} tensor has this name with this config (llama.cpp's converter refuses it too)",
                    self.arch
                ),
            ));
        }
        Ok(Plan { tensors: self.out, n_vocab, tied_output_omitted, warnings: self.warnings })
    }
}

/// llama.cpp's converter rules for tensors that are always F32: 1-D tensors, `*_norm.weight`,
/// `ffn_gate_inp`, `ssm_conv1d`, `shortconv.conv`, and every name not ending in `.weight`
/// (`ssm_a`, `ssm_d`, biases, Falcon-H1's `ffn_norm`).
pub fn forced_f32(name: &str, n_dims: usize) -> bool {
    n_dims <= 1
        || name.ends_with("_norm.weight")
        || name.ends_with(".ffn_gate_inp.weight")
        || name.ends_with(".ffn_gate_inp_shexp.weight")
        || name.ends_with(".ssm_conv1d.weight")
        || name.ends_with(".shortconv.conv.weight")
        || !name.ends_with(".weight")
}

/// The row order llama.cpp's `LlamaModel.permute` gives the q or k projection of `n_head` heads
/// of `head_dim` (even) rows: within each head, output row `2j + s` is source row `s·head_dim/2 +
/// j`, so transformers' rotate-half pairs `(j, j + head_dim/2)` become the adjacent pairs ggml's
/// NORM RoPE rotates.
pub fn llama_permutation(n_head: u64, head_dim: u64) -> Vec<u64> {
    let half = head_dim / 2;
    let mut perm = Vec::with_capacity((n_head * head_dim) as usize);
    for h in 0..n_head {
        for i in 0..head_dim {
            perm.push(h * head_dim + (i % 2) * half + i / 2);
        }
    }
    perm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_llamas() {
        // LlamaModel.permute: reshape(n_head, 2, hd/2, ...).swapaxes(1, 2): new row (h, j, s) is
        // old row (h, s, j).
        let p = llama_permutation(2, 8);
        assert_eq!(p, vec![0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]);
    }

    #[test]
    fn forced_types() {
        assert!(forced_f32("blk.0.ffn_norm", 1));
        assert!(forced_f32("blk.0.shortconv.conv.weight", 2));
        assert!(forced_f32("blk.0.exp_probs_b.bias", 1));
        assert!(!forced_f32("blk.0.attn_q.weight", 2));
    }
}
