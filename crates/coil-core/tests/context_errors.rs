//! Misuse of a context is a typed error, and a failed evaluate leaves every sequence's state and
//! position exactly as before.

use std::path::Path;
use std::sync::Arc;

use coil_core::context::{Batch, Context, ContextParams};
use coil_core::gguf::GgufFile;
use coil_core::model::Model;
use coil_core::ErrorCode;

fn model(name: &str) -> Arc<Model> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name);
    Arc::new(Model::open(&p).unwrap())
}

fn params(n_seq_max: u32) -> ContextParams {
    ContextParams { n_seq_max, n_threads: 2, n_ubatch: 4, ..ContextParams::default() }
}

#[test]
fn failed_evaluate_leaves_state_untouched() {
    for name in ["tiny-mamba.gguf", "tiny-mamba2.gguf"] {
        let m = model(name);
        let nv = m.hparams().unwrap().n_vocab as u32;
        let mut c = Context::new(m.clone(), params(3)).unwrap();
        c.evaluate(&Batch::for_sequence(0, &[1, 2, 3, 4, 5, 6, 7], false)).unwrap();
        c.evaluate(&Batch::for_sequence(2, &[9, 8], false)).unwrap();
        let snap = |c: &Context| -> Vec<(u32, Vec<f32>)> {
            (0..3).map(|s| (c.position(s).unwrap(), c.state_snapshot(s).unwrap())).collect()
        };
        let before = snap(&c);
        // Each bad batch starts with valid tokens of sequences 0 and 2 (which would change their
        // states if anything ran before the check), and is longer than n_ubatch.
        let good = || {
            let mut b = Batch::new();
            for t in [10u32, 11, 12, 13, 14] {
                b.push(t, 0, true);
            }
            b.push(3, 2, true);
            b
        };
        let cases: Vec<(Batch, ErrorCode)> = vec![
            (
                {
                    let mut b = good();
                    b.push(nv, 0, true);
                    b
                },
                ErrorCode::TokenOutOfRange,
            ),
            (
                {
                    let mut b = good();
                    b.push(u32::MAX, 2, false);
                    b
                },
                ErrorCode::TokenOutOfRange,
            ),
            (
                {
                    let mut b = good();
                    b.push(1, 3, true);
                    b
                },
                ErrorCode::InvalidArgument,
            ),
            (
                {
                    let mut b = good();
                    b.push(1, u32::MAX, true);
                    b
                },
                ErrorCode::InvalidArgument,
            ),
            (
                {
                    let mut b = good();
                    b.logits.pop();
                    b
                },
                ErrorCode::InvalidArgument,
            ),
            (
                {
                    let mut b = good();
                    b.seq.push(0);
                    b
                },
                ErrorCode::InvalidArgument,
            ),
            // Positions: a gap, a rewind, a repeat, a wrong length.
            (
                {
                    let mut b = good();
                    b.pos = Some(vec![7, 8, 9, 10, 12, 2]);
                    b
                },
                ErrorCode::InvalidArgument,
            ),
            (
                {
                    let mut b = good();
                    b.pos = Some(vec![7, 8, 9, 10, 11, 1]);
                    b
                },
                ErrorCode::InvalidArgument,
            ),
            (
                {
                    let mut b = good();
                    b.pos = Some(vec![7, 8, 8, 9, 10, 2]);
                    b
                },
                ErrorCode::InvalidArgument,
            ),
            (
                {
                    let mut b = good();
                    b.pos = Some(vec![7, 8, 9, 10, 11]);
                    b
                },
                ErrorCode::InvalidArgument,
            ),
            (Batch::new(), ErrorCode::InvalidArgument),
        ];
        for (i, (b, code)) in cases.iter().enumerate() {
            let e = c.evaluate(b).unwrap_err();
            assert_eq!(e.code, *code, "{name} case {i}: {}", e.message);
            assert_eq!(snap(&c), before, "{name} case {i} changed the state");
        }
        // The valid version of the same batch works afterwards, with the right positions.
        let mut ok = good();
        ok.pos = Some(vec![7, 8, 9, 10, 11, 2]);
        assert_eq!(c.evaluate(&ok).unwrap().len(), 6);
        assert_eq!(c.position(0).unwrap(), 12);
        assert_eq!(c.position(2).unwrap(), 3);
        assert_eq!(c.position(1).unwrap(), 0);
    }
}

#[test]
fn sequence_ids_and_params_are_checked() {
    let m = model("tiny-mamba.gguf");
    for bad in [0u32, 1 << 20] {
        let e = Context::new(m.clone(), params(bad)).err().unwrap();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
    }
    let mut c = Context::new(m.clone(), params(2)).unwrap();
    assert_eq!(c.position(2).unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(c.clear(2).unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(c.state_snapshot(7).unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(c.position(1).unwrap(), 0);
    // Defaults: n_threads 0 = the cores, n_ubatch 0 = 512.
    let c =
        Context::new(m.clone(), ContextParams { n_seq_max: 1, n_threads: 0, n_ubatch: 0, ..ContextParams::default() })
            .unwrap();
    assert!(c.n_threads() >= 1);
    assert_eq!(c.params().n_ubatch, 512);
}

#[test]
fn a_model_without_weights_cannot_evaluate() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/tiny-mamba.gguf");
    let bytes = std::fs::read(p).unwrap();
    let header_only = Model::from_header(GgufFile::parse(&bytes, bytes.len() as u64).unwrap()).unwrap();
    assert!(!header_only.has_weights());
    // Its header still serves.
    assert!(header_only.info_json(Some(2)).contains("mamba"));
    let e = Context::new(Arc::new(header_only), params(1)).err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
}
