//! The hybrid memory of attention models (Jamba): KV cells and recurrent states move together.
//! CONTEXT_FULL is reported before anything changes; fork shares KV blocks and continues exactly
//! like the original; truncate (with the recurrent state saved at that point) and save/load give
//! back exactly the same logits; the accounting matches the layout.

use std::sync::Arc;

use coil_core::context::{Batch, Context, ContextParams, KvType, BLOCK_TOKENS};
use coil_core::model::synth::{synth_gguf, SynthSpec};
use coil_core::model::{Arch, Model};
use coil_core::ErrorCode;

fn model() -> Arc<Model> {
    Arc::new(Model::from_gguf_bytes(&synth_gguf(&SynthSpec::tiny(Arch::Jamba)).unwrap()).unwrap())
}

fn ctx(m: &Arc<Model>, n_seq: u32, n_ctx: u32, kv_type: KvType) -> Context {
    Context::new(m.clone(), ContextParams { n_seq_max: n_seq, n_threads: 2, n_ubatch: 16, n_ctx, kv_type }).unwrap()
}

fn toks(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 31 + seed * 7 + 3) % 96).collect()
}

fn eval(c: &mut Context, seq: u32, t: &[u32]) -> Vec<f32> {
    c.evaluate(&Batch::for_sequence(seq, t, true)).unwrap().into_vec()
}

#[test]
fn context_full_is_checked_first_and_names_everything() {
    let m = model();
    for kv_type in [KvType::F16, KvType::F32] {
        let mut c = ctx(&m, 2, 40, kv_type);
        let a = eval(&mut c, 0, &toks(30, 1));
        let snap = c.state_snapshot(0).unwrap();
        // 11 more tokens do not fit in 40; nothing changes, in either sequence.
        let mut b = Batch::for_sequence(1, &toks(3, 2), true);
        for &t in &toks(11, 3) {
            b.push(t, 0, true);
        }
        let e = c.evaluate(&b).unwrap_err();
        assert_eq!(e.code, ErrorCode::ContextFull);
        assert!(
            e.message.contains("sequence 0") && e.message.contains("30") && e.message.contains("40"),
            "{}",
            e.message
        );
        assert_eq!(c.position(0).unwrap(), 30);
        assert_eq!(c.position(1).unwrap(), 0);
        assert_eq!(c.state_snapshot(0).unwrap(), snap);
        // The sequence goes on exactly as if the failed call never happened.
        let next = eval(&mut c, 0, &toks(10, 4));
        let mut fresh = ctx(&m, 1, 40, kv_type);
        let whole = eval(&mut fresh, 0, &[toks(30, 1), toks(10, 4)].concat());
        assert_eq!(&whole[..a.len()], &a[..]);
        assert_eq!(&whole[a.len()..], &next[..]);
        // Exactly full: one more token is refused.
        assert_eq!(c.position(0).unwrap(), 40);
        assert_eq!(c.evaluate(&Batch::for_sequence(0, &[1], true)).unwrap_err().code, ErrorCode::ContextFull);
        c.clear(0).unwrap();
        assert_eq!(eval(&mut c, 0, &toks(30, 1)), a);
    }
}

#[test]
fn fork_continues_like_the_original() {
    let m = model();
    let mut c = ctx(&m, 3, 256, KvType::F16);
    eval(&mut c, 0, &toks(45, 5));
    c.fork(0, 1).unwrap();
    assert_eq!(c.position(1).unwrap(), 45);
    let kv = c.memory().kv().unwrap();
    assert_eq!(kv.block_table(1), kv.block_table(0));
    assert_eq!(kv.blocks_in_use(), 45usize.div_ceil(BLOCK_TOKENS));
    let cont = toks(7, 6);
    let a = eval(&mut c, 0, &cont);
    let b = eval(&mut c, 1, &cont);
    assert_eq!(a, b);
    // The forked sequence copied only the shared tail block.
    let kv = c.memory().kv().unwrap();
    assert_eq!(kv.block_table(1)[0], kv.block_table(0)[0]);
    assert_ne!(kv.block_table(1)[1], kv.block_table(0)[1]);
    // Clearing the source leaves the fork intact.
    c.clear(0).unwrap();
    let x = eval(&mut c, 1, &[9]);
    let mut fresh = ctx(&m, 1, 256, KvType::F16);
    let whole = eval(&mut fresh, 0, &[toks(45, 5), cont.clone(), vec![9]].concat());
    assert_eq!(&whole[whole.len() - x.len()..], &x[..]);
}

#[test]
fn truncate_and_save_load_restore_exactly() {
    let m = model();
    for kv_type in [KvType::F16, KvType::F32] {
        let mut c = ctx(&m, 2, 128, kv_type);
        eval(&mut c, 0, &toks(37, 7));
        let rec = c.state_snapshot(0).unwrap();
        let saved = c.memory().save_sequence(0).unwrap();
        let after = eval(&mut c, 0, &toks(20, 8));
        // Roll back to 37 tokens: the same continuation gives the same logits.
        c.memory_mut().truncate(0, 37, &rec).unwrap();
        assert_eq!(c.position(0).unwrap(), 37);
        assert_eq!(eval(&mut c, 0, &toks(20, 8)), after);
        // A bad rollback changes nothing.
        assert!(c.memory_mut().truncate(0, 58, &rec).is_err());
        assert_eq!(c.memory_mut().truncate(0, 10, &rec[1..]).unwrap_err().code, ErrorCode::StateInvalid);
        assert_eq!(c.position(0).unwrap(), 57);
        // Load into the other sequence: it continues like the saved one.
        c.memory_mut().load_sequence(1, &saved).unwrap();
        assert_eq!(c.position(1).unwrap(), 37);
        assert_eq!(eval(&mut c, 1, &toks(20, 8)), after);
        // Corrupt or foreign states are refused, leaving the sequence as it was.
        let pos = c.position(1).unwrap();
        for bad in [&saved[..saved.len() - 1], &saved[..10]] {
            assert_eq!(c.memory_mut().load_sequence(1, bad).unwrap_err().code, ErrorCode::StateInvalid);
        }
        let mut other = ctx(&m, 1, 128, if kv_type == KvType::F16 { KvType::F32 } else { KvType::F16 });
        assert_eq!(other.memory_mut().load_sequence(0, &saved).unwrap_err().code, ErrorCode::StateInvalid);
        let mut small = ctx(&m, 1, 20, kv_type);
        assert_eq!(small.memory_mut().load_sequence(0, &saved).unwrap_err().code, ErrorCode::ContextFull);
        assert_eq!(c.position(1).unwrap(), pos);
    }
}

#[test]
fn accounting() {
    let m = model();
    let hp = m.hparams().unwrap().clone();
    // tiny jamba: 4 heads of 8, KV heads [0, 2, 0, 4] -> K+V per token = 2·(16 + 32) values.
    let per_tok = 2 * (2 * 8 + 4 * 8);
    for (kv_type, size) in [(KvType::F16, 2u64), (KvType::F32, 4)] {
        let c = ctx(&m, 1, 100, kv_type);
        assert_eq!(c.kv_bytes_per_token(), per_tok * size);
        assert_eq!(c.kv_bytes_per_sequence(), per_tok * size * 128); // 100 tokens in 4 blocks of 32
        let rec = 4 * 2 * ((hp.d_conv - 1) * hp.d_inner + hp.d_state * hp.d_inner) as u64;
        assert_eq!(c.state_bytes_per_sequence(), rec);
        let j = c.memory_json();
        assert!(
            j.contains(&format!("\"kv_bytes_per_token\":{}", per_tok * size)) && j.contains("\"context_length\":100"),
            "{j}"
        );
    }
    // The default context length: the model's (4096 here), capped at 4096.
    let c = Context::new(m.clone(), ContextParams::default()).unwrap();
    assert_eq!(c.n_ctx(), 4096);
    assert_eq!(c.kv_type(), KvType::F16);
}
