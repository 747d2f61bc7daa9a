//! Saving and restoring sequence states: the versioned binary format of `docs/state-format.md`.
//!
//! A saved state records the model's identity (architecture, shapes, a hash of the GGUF metadata
//! and tensor table), then one sequence (or every sequence of a context): its position, token
//! history, recurrent state and optionally its checkpoints, as tagged sections, and ends with a
//! checksum over everything before it. Every length is checked against the bytes that remain;
//! the whole buffer is parsed and validated before anything changes, so a failed load leaves the
//! target exactly as it was. Everything is little-endian and independent of the target, so a
//! state saved by the native engine loads in the wasm one and vice versa.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::tree::{Ckpt, SeqMeta};
use super::Context;
use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::{GgufArray, GgufValue};
use crate::model::Model;

pub const MAGIC: &[u8; 8] = b"COILSTAT";
pub const VERSION: u32 = 1;
const KIND_SEQUENCE: u32 = 1;
const KIND_CONTEXT: u32 = 2;
const FLAG_HISTORY: u32 = 1;
const FLAG_CHECKPOINTS: u32 = 2;
/// A token of a history that was not saved (its state was, but not the tokens that led there).
pub(crate) const UNKNOWN_TOKEN: u32 = u32::MAX;

/// What a save includes besides the state and position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    /// The token history (4 bytes per token; needed to roll back before the saved position and
    /// for prompt reuse after loading). Without it the size is constant in the position.
    pub history: bool,
    /// The checkpoints (shared ones once in a context save).
    pub checkpoints: bool,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions { history: true, checkpoints: false }
    }
}

fn invalid(msg: impl Into<String>) -> CoilError {
    CoilError::new(ErrorCode::StateInvalid, msg)
}

/// The checksum of the format: a 64-bit multiply-rotate hash over 8-byte little-endian words
/// (the tail zero-padded), seeded with the length.
pub fn checksum(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (bytes.len() as u64).wrapping_mul(K) ^ 0x636f_696c_7374_6174;
    let mut it = bytes.chunks_exact(8);
    for c in &mut it {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h.rotate_left(23) ^ w).wrapping_mul(K);
    }
    let rest = it.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(b)).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

// ---- Model identity ----

struct Hasher(Vec<u8>);
impl Hasher {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn array(&mut self, a: &GgufArray) {
        macro_rules! each {
            ($v:expr, $tag:expr, $f:expr) => {{
                self.u64($tag);
                self.u64($v.len() as u64);
                for x in $v {
                    #[allow(clippy::redundant_closure_call)]
                    $f(self, x);
                }
            }};
        }
        match a {
            GgufArray::U8(v) => each!(v, 0, |h: &mut Self, x: &u8| h.u64(*x as u64)),
            GgufArray::I8(v) => each!(v, 1, |h: &mut Self, x: &i8| h.u64(*x as u64)),
            GgufArray::U16(v) => each!(v, 2, |h: &mut Self, x: &u16| h.u64(*x as u64)),
            GgufArray::I16(v) => each!(v, 3, |h: &mut Self, x: &i16| h.u64(*x as u64)),
            GgufArray::U32(v) => each!(v, 4, |h: &mut Self, x: &u32| h.u64(*x as u64)),
            GgufArray::I32(v) => each!(v, 5, |h: &mut Self, x: &i32| h.u64(*x as u64)),
            GgufArray::F32(v) => each!(v, 6, |h: &mut Self, x: &f32| h.u64(x.to_bits() as u64)),
            GgufArray::Bool(v) => each!(v, 7, |h: &mut Self, x: &bool| h.u64(*x as u64)),
            GgufArray::String(v) => each!(v, 8, |h: &mut Self, x: &String| h.str(x)),
            GgufArray::U64(v) => each!(v, 10, |h: &mut Self, x: &u64| h.u64(*x)),
            GgufArray::I64(v) => each!(v, 11, |h: &mut Self, x: &i64| h.u64(*x as u64)),
            GgufArray::F64(v) => each!(v, 12, |h: &mut Self, x: &f64| h.u64(x.to_bits())),
            GgufArray::Array(v) => each!(v, 9, |h: &mut Self, x: &GgufArray| h.array(x)),
        }
    }
    fn value(&mut self, v: &GgufValue) {
        match v {
            GgufValue::U8(x) => self.u64(*x as u64),
            GgufValue::I8(x) => self.u64(*x as u64),
            GgufValue::U16(x) => self.u64(*x as u64),
            GgufValue::I16(x) => self.u64(*x as u64),
            GgufValue::U32(x) => self.u64(*x as u64),
            GgufValue::I32(x) => self.u64(*x as u64),
            GgufValue::F32(x) => self.u64(x.to_bits() as u64),
            GgufValue::Bool(x) => self.u64(*x as u64),
            GgufValue::String(s) => self.str(s),
            GgufValue::Array(a) => self.array(a),
            GgufValue::U64(x) => self.u64(*x),
            GgufValue::I64(x) => self.u64(*x as u64),
            GgufValue::F64(x) => self.u64(x.to_bits()),
        }
    }
}

/// The hash of a model's GGUF metadata (every key, type and value) and tensor table (names,
/// types, shapes, offsets): what tells two models apart even when their shapes agree.
pub fn metadata_hash(model: &Model) -> u64 {
    let f = model.file();
    let mut h = Hasher(Vec::new());
    for (k, v) in &f.metadata {
        h.str(k);
        h.u64(v.value_type() as u64);
        h.value(v);
    }
    for t in &f.tensors {
        h.str(&t.name);
        h.u64(t.type_id as u64);
        h.u64(t.dims.len() as u64);
        for &d in &t.dims {
            h.u64(d);
        }
        h.u64(t.offset);
    }
    checksum(&h.0)
}

/// The identity block: architecture, shapes, state size, metadata hash.
fn identity(ctx: &Context) -> Result<Vec<u8>> {
    let hp = ctx.model.require_weights()?.hp.clone();
    let mut b = Vec::new();
    let arch = hp.arch.name();
    b.extend_from_slice(&(arch.len() as u32).to_le_bytes());
    b.extend_from_slice(arch.as_bytes());
    for v in [
        hp.n_vocab,
        hp.n_embd,
        hp.n_layer,
        hp.d_inner,
        hp.d_state,
        hp.d_conv,
        hp.dt_rank,
        hp.n_head,
        hp.head_dim,
        hp.n_group,
        ctx.mem.rec.conv_len,
        ctx.mem.rec.ssm_len,
        ctx.mem.rec.slot_len(),
    ] {
        b.extend_from_slice(&(v as u32).to_le_bytes());
    }
    // Hybrid models: the attention layers' K/V widths (recurrent-only models add nothing, so
    // their identity is what version 1 always wrote).
    if let Some(kv) = ctx.mem.kv() {
        b.extend_from_slice(&(kv.kv_dims().len() as u32).to_le_bytes());
        for &d in kv.kv_dims() {
            b.extend_from_slice(&(d as u32).to_le_bytes());
        }
    }
    b.extend_from_slice(&metadata_hash(&ctx.model).to_le_bytes());
    Ok(b)
}

fn describe_identity(id: &[u8]) -> String {
    let mut r = Reader { b: id, at: 0 };
    let name = r.u32().ok().and_then(|n| r.take(n as usize).ok()).map(|s| String::from_utf8_lossy(s).into_owned());
    let shapes: Vec<u32> = (0..13).map_while(|_| r.u32().ok()).collect();
    let hash = r.u64().unwrap_or(0);
    format!(
        "{} (vocab {}, d_model {}, {} layers, d_inner {}, d_state {}, metadata hash {hash:016x})",
        name.as_deref().unwrap_or("?"),
        shapes.first().unwrap_or(&0),
        shapes.get(1).unwrap_or(&0),
        shapes.get(2).unwrap_or(&0),
        shapes.get(3).unwrap_or(&0),
        shapes.get(4).unwrap_or(&0)
    )
}

// ---- Writing ----

struct Writer(Vec<u8>);
impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn section(&mut self, tag: &[u8; 4], body: impl FnOnce(&mut Writer)) {
        self.0.extend_from_slice(tag);
        let at = self.0.len();
        self.u64(0);
        body(self);
        let len = (self.0.len() - at - 8) as u64;
        self.0[at..at + 8].copy_from_slice(&len.to_le_bytes());
    }
    fn u32s(&mut self, v: &[u32]) {
        self.0.reserve(v.len() * 4);
        for x in v {
            self.u32(*x);
        }
    }
    fn f32s(&mut self, v: &[f32]) {
        self.0.reserve(v.len() * 4);
        for x in v {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }
}

fn header(w: &mut Writer, kind: u32, opts: SaveOptions, id: &[u8]) {
    w.0.extend_from_slice(MAGIC);
    w.u32(VERSION);
    w.u32(kind);
    w.u32(if opts.history { FLAG_HISTORY } else { 0 } | if opts.checkpoints { FLAG_CHECKPOINTS } else { 0 });
    w.u32(id.len() as u32);
    w.0.extend_from_slice(id);
}

impl Context {
    fn write_seq(&self, w: &mut Writer, s: usize, opts: SaveOptions, table: Option<&[Arc<Ckpt>]>) {
        let m = &self.tree.seqs[s];
        w.section(b"SLOT", |w| w.u32(s as u32));
        w.section(b"POS\0", |w| w.u32(self.mem.position(s as u32).unwrap_or(0)));
        if opts.history {
            w.section(b"TOKS", |w| w.u32s(&m.history));
        }
        let mut st = Vec::new();
        self.mem.rec.copy_slot(self.tree.source(s), &mut st);
        w.section(b"RSTA", |w| w.f32s(&st));
        if let Some(kv) = self.mem.kv() {
            let cells = kv.serialize(s as u32);
            w.section(b"KVCL", |w| w.0.extend_from_slice(&cells));
        }
        if opts.checkpoints {
            match table {
                None => {
                    for c in &m.ckpts {
                        w.section(b"CKPT", |w| {
                            w.u32(c.pos);
                            w.f32s(&c.state);
                        });
                    }
                }
                Some(t) => w.section(b"CKRF", |w| {
                    for c in &m.ckpts {
                        w.u32(t.iter().position(|x| Arc::ptr_eq(x, c)).expect("in the table") as u32);
                    }
                }),
            }
        }
        w.section(b"END\0", |_| {});
    }

    fn finish(w: Writer) -> Vec<u8> {
        let mut b = w.0;
        let c = checksum(&b);
        b.extend_from_slice(&c.to_le_bytes());
        b
    }

    /// Saves sequence `seq` (see `docs/state-format.md`).
    pub fn save_sequence(&self, seq: u32, opts: SaveOptions) -> Result<Vec<u8>> {
        let s = self.check_seq(seq)?;
        let id = identity(self)?;
        let mut w = Writer(Vec::new());
        header(&mut w, KIND_SEQUENCE, opts, &id);
        self.write_seq(&mut w, s, opts, None);
        Ok(Self::finish(w))
    }

    /// Saves every sequence of the context (shared checkpoints stored once).
    pub fn save_all(&self, opts: SaveOptions) -> Result<Vec<u8>> {
        let id = identity(self)?;
        let mut w = Writer(Vec::new());
        header(&mut w, KIND_CONTEXT, opts, &id);
        let n = self.mem.n_seq();
        w.u32(n as u32);
        let (table, _) = self.tree.unique();
        if opts.checkpoints {
            w.section(b"CKTB", |w| {
                w.u32(table.len() as u32);
                for c in &table {
                    w.u32(c.pos);
                    w.f32s(&c.state);
                }
            });
        }
        for s in 0..n {
            self.write_seq(&mut w, s, opts, Some(&table));
        }
        Ok(Self::finish(w))
    }
}

// ---- Reading ----

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.b.len() - self.at {
            return Err(CoilError::at(
                ErrorCode::StateInvalid,
                self.at as u64,
                format!(
                    "saved state is truncated: {n} bytes needed at byte {}, {} left",
                    self.at,
                    self.b.len() - self.at
                ),
            ));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn tag(&mut self) -> Result<[u8; 4]> {
        Ok(self.take(4)?.try_into().expect("4"))
    }
    fn section(&mut self) -> Result<([u8; 4], Reader<'a>)> {
        let at = self.at;
        let tag = self.tag()?;
        let len = self.u64()?;
        if len > (self.b.len() - self.at) as u64 {
            return Err(CoilError::at(
                ErrorCode::StateInvalid,
                at as u64,
                format!("section {} declares {len} bytes but only {} remain", tag_name(&tag), self.b.len() - self.at),
            ));
        }
        let body = self.take(len as usize)?;
        Ok((tag, Reader { b: body, at: 0 }))
    }
    fn done(&self, what: &str) -> Result<()> {
        if self.at != self.b.len() {
            return Err(invalid(format!("{what}: {} unexpected trailing bytes", self.b.len() - self.at)));
        }
        Ok(())
    }
    fn u32s(&mut self) -> Result<Vec<u32>> {
        let rest = self.b.len() - self.at;
        if rest % 4 != 0 {
            return Err(invalid("a token list is not a whole number of u32"));
        }
        let s = self.take(rest)?;
        Ok(s.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4"))).collect())
    }
    fn f32s(&mut self, n: usize, what: &str) -> Result<Vec<f32>> {
        let rest = self.b.len() - self.at;
        if rest != n * 4 {
            return Err(invalid(format!("{what} holds {rest} bytes, this model's state is {} bytes", n * 4)));
        }
        let s = self.take(rest)?;
        Ok(s.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect())
    }
}

fn tag_name(t: &[u8; 4]) -> String {
    String::from_utf8_lossy(t).trim_end_matches('\0').to_string()
}

/// One sequence as parsed, before it is applied.
struct Parsed {
    slot: u32,
    pos: u32,
    history: Option<Vec<u32>>,
    state: Vec<f32>,
    ckpts: Vec<(u32, Vec<f32>)>,
    ckrefs: Vec<u32>,
    /// The KV cells (hybrid models), as `KvCache::serialize` wrote them.
    kv: Option<Vec<u8>>,
}

struct Header<'a> {
    kind: u32,
    body: Reader<'a>,
}

fn open<'a>(bytes: &'a [u8], want_id: &[u8]) -> Result<Header<'a>> {
    if bytes.len() < 8 || &bytes[..8] != MAGIC {
        return Err(CoilError::at(ErrorCode::StateInvalid, 0, "not a coil saved state (bad magic)"));
    }
    if bytes.len() < 8 + 4 * 4 + 8 {
        return Err(invalid(format!("saved state is truncated ({} bytes)", bytes.len())));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4"));
    if version != VERSION {
        return Err(CoilError::at(
            ErrorCode::StateInvalid,
            8,
            format!("saved state has format version {version}; this build reads version {VERSION}"),
        ));
    }
    let (data, tail) = bytes.split_at(bytes.len() - 8);
    let want = u64::from_le_bytes(tail.try_into().expect("8"));
    if checksum(data) != want {
        return Err(invalid("saved state is truncated or corrupt (checksum mismatch)"));
    }
    let mut r = Reader { b: data, at: 12 };
    let kind = r.u32()?;
    let _flags = r.u32()?;
    let id_len = r.u32()? as usize;
    let id = r.take(id_len)?;
    if id != want_id {
        return Err(CoilError::new(
            ErrorCode::StateModelMismatch,
            format!(
                "this state was saved from another model: {}; this context runs {}",
                describe_identity(id),
                describe_identity(want_id)
            ),
        ));
    }
    Ok(Header { kind, body: Reader { b: &data[r.at..], at: 0 } })
}

fn parse_seq(r: &mut Reader, state_len: usize) -> Result<Parsed> {
    let mut p = Parsed {
        slot: 0,
        pos: u32::MAX,
        history: None,
        state: Vec::new(),
        ckpts: Vec::new(),
        ckrefs: Vec::new(),
        kv: None,
    };
    let mut have_state = false;
    loop {
        let (tag, mut s) = r.section()?;
        match &tag {
            b"END\0" => break,
            b"SLOT" => p.slot = s.u32()?,
            b"POS\0" => p.pos = s.u32()?,
            b"TOKS" => p.history = Some(s.u32s()?),
            b"RSTA" => {
                p.state = s.f32s(state_len, "the recurrent state")?;
                have_state = true;
            }
            b"CKPT" => {
                let pos = s.u32()?;
                p.ckpts.push((pos, s.f32s(state_len, "a checkpoint")?));
            }
            b"CKRF" => p.ckrefs = s.u32s()?,
            b"KVCL" => {
                let rest = s.b.len() - s.at;
                p.kv = Some(s.take(rest)?.to_vec());
            }
            _ => return Err(invalid(format!("unknown section \"{}\" in a saved sequence", tag_name(&tag)))),
        }
        s.done(&tag_name(&tag))?;
    }
    if p.pos == u32::MAX || !have_state {
        return Err(invalid("a saved sequence lacks its position or its state"));
    }
    if let Some(h) = &p.history {
        if h.len() != p.pos as usize {
            return Err(invalid(format!("a saved sequence at position {} has {} history tokens", p.pos, h.len())));
        }
    }
    Ok(p)
}

impl Context {
    fn check_parsed(&self, p: &Parsed, n_vocab: usize, table: &[(u32, Vec<f32>)]) -> Result<()> {
        match (self.mem.kv(), &p.kv) {
            (None, None) => {}
            (Some(kv), Some(cells)) => {
                if p.pos as usize > kv.n_ctx() {
                    return Err(CoilError::new(
                        ErrorCode::ContextFull,
                        format!("the saved sequence holds {} tokens; this context's length is {}", p.pos, kv.n_ctx()),
                    ));
                }
                if cells.len() != kv.serialized_len(p.pos as usize) {
                    return Err(invalid(format!("the KV cells do not match the position {}", p.pos)));
                }
            }
            (Some(_), None) => return Err(invalid("a saved sequence of a hybrid model lacks its KV cells")),
            (None, Some(_)) => return Err(invalid("KV cells in a saved sequence of a recurrent-only model")),
        }
        if let Some(h) = &p.history {
            if let Some(&t) = h.iter().find(|&&t| t as usize >= n_vocab && t != UNKNOWN_TOKEN) {
                return Err(invalid(format!("saved history holds token {t}, outside the vocabulary")));
            }
        }
        let mut last = 0;
        for (pos, _) in &p.ckpts {
            if *pos == 0 || *pos > p.pos || *pos <= last {
                return Err(invalid(format!("checkpoint at {pos} out of order or past position {}", p.pos)));
            }
            last = *pos;
        }
        let mut last = 0;
        for &i in &p.ckrefs {
            let c = table.get(i as usize).ok_or_else(|| invalid(format!("checkpoint reference {i} out of range")))?;
            if c.0 == 0 || c.0 > p.pos || c.0 <= last {
                return Err(invalid(format!("checkpoint at {} out of order or past position {}", c.0, p.pos)));
            }
            last = c.0;
        }
        Ok(())
    }

    /// Replaces slot `s` with a parsed sequence (already validated). Only the KV cells can still
    /// fail (the cache may have no free block): they go first, so a failure changes nothing.
    fn apply(&mut self, s: usize, p: Parsed, table: &[Arc<Ckpt>]) -> Result<()> {
        if let (Some(kv), Some(cells)) = (self.mem.kv.as_mut(), &p.kv) {
            kv.deserialize(s as u32, cells)?;
        }
        self.tree.reset(&mut self.mem.rec, s);
        self.mem.rec.set_slot(s, &p.state);
        let mut ckpts: Vec<Arc<Ckpt>> = p
            .ckpts
            .into_iter()
            .map(|(pos, state)| Arc::new(Ckpt { pos, state, last_used: AtomicU64::new(0) }))
            .collect();
        ckpts.extend(p.ckrefs.iter().map(|&i| table[i as usize].clone()));
        let history = match p.history {
            Some(h) => h,
            None => {
                // The tokens are unknown: keep the state itself as a checkpoint, so the sequence
                // can still be rolled back to where it was loaded.
                if p.pos > 0 && !ckpts.iter().any(|c| c.pos == p.pos) {
                    ckpts.push(Arc::new(Ckpt { pos: p.pos, state: p.state.clone(), last_used: AtomicU64::new(0) }));
                }
                vec![UNKNOWN_TOKEN; p.pos as usize]
            }
        };
        self.tree.seqs[s] = SeqMeta { history: Arc::new(history), ckpts, alias: None };
        self.mem.set_position(s, p.pos);
        Ok(())
    }

    /// Restores sequence `seq` from `bytes` (a sequence save, from any slot). On any error —
    /// another model (`STATE_MODEL_MISMATCH`), a truncated or corrupt buffer (`STATE_INVALID`) —
    /// the sequence is left exactly as it was.
    pub fn load_sequence(&mut self, seq: u32, bytes: &[u8]) -> Result<()> {
        let s = self.check_seq(seq)?;
        let id = identity(self)?;
        let mut h = open(bytes, &id)?;
        if h.kind != KIND_SEQUENCE {
            return Err(invalid("this is a whole-context state: load it into a context, not a sequence"));
        }
        let p = parse_seq(&mut h.body, self.mem.rec.slot_len())?;
        h.body.done("saved sequence")?;
        let n_vocab = self.model.require_weights()?.hp.n_vocab;
        self.check_parsed(&p, n_vocab, &[])?;
        self.apply(s, p, &[])?;
        self.tree.enforce_budget();
        Ok(())
    }

    /// Restores every sequence from a context save (slots it does not cover are cleared). All or
    /// nothing.
    pub fn load_all(&mut self, bytes: &[u8]) -> Result<()> {
        let id = identity(self)?;
        let mut h = open(bytes, &id)?;
        if h.kind != KIND_CONTEXT {
            return Err(invalid("this is a one-sequence state: load it into a sequence"));
        }
        let r = &mut h.body;
        let n = r.u32()? as usize;
        if n > self.mem.n_seq() {
            return Err(CoilError::new(
                ErrorCode::InvalidArgument,
                format!("the saved context has {n} sequences; this one holds {}", self.mem.n_seq()),
            ));
        }
        let state_len = self.mem.rec.slot_len();
        let mut table: Vec<(u32, Vec<f32>)> = Vec::new();
        let mut seqs = Vec::new();
        for _ in 0..n {
            if seqs.is_empty() && table.is_empty() && r.b[r.at..].starts_with(b"CKTB") {
                let (_, mut s) = r.section()?;
                let count = s.u32()? as usize;
                if count > (s.b.len() - s.at) / (4 + state_len * 4).max(1) {
                    return Err(invalid(format!("checkpoint table of {count} entries does not fit its section")));
                }
                for _ in 0..count {
                    let pos = s.u32()?;
                    let st = s.take(state_len * 4)?;
                    table.push((
                        pos,
                        st.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect(),
                    ));
                }
                s.done("checkpoint table")?;
            }
            let p = parse_seq(r, state_len)?;
            if p.slot as usize >= n || seqs.iter().any(|q: &Parsed| q.slot == p.slot) {
                return Err(invalid(format!("saved sequence slot {} is out of range or repeated", p.slot)));
            }
            seqs.push(p);
        }
        r.done("saved context")?;
        let n_vocab = self.model.require_weights()?.hp.n_vocab;
        for p in &seqs {
            self.check_parsed(p, n_vocab, &table)?;
        }
        // Everything checked: apply.
        let shared: Vec<Arc<Ckpt>> =
            table.into_iter().map(|(pos, state)| Arc::new(Ckpt { pos, state, last_used: AtomicU64::new(0) })).collect();
        for s in 0..self.mem.n_seq() {
            self.tree.reset(&mut self.mem.rec, s);
            self.mem.clear(s as u32)?;
        }
        for p in seqs {
            let s = p.slot as usize;
            // (A hybrid cache out of free blocks can fail here, after the clear: an allocation
            // failure, not something the bytes control.)
            self.apply(s, p, &shared)?;
        }
        self.tree.enforce_budget();
        Ok(())
    }
}
