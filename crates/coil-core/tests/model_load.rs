//! Loading weights: both ways (memory-mapped, and pushed chunk by chunk as the wasm facade does)
//! give the same model; every bad file is a typed error naming the tensor or key.

use std::path::Path;
use std::sync::Arc;

use coil_core::context::{Batch, Context, ContextParams};
use coil_core::gguf::{GgmlType, GgufFile, GgufValue, GgufWriter};
use coil_core::model::synth::{synth_gguf, SynthSpec};
use coil_core::model::{Arch, Model};
use coil_core::ErrorCode;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)).unwrap()
}

/// Rebuilds a GGUF, letting `meta` edit the metadata and `tensor` edit or drop each tensor
/// (name, dims, type id, data).
fn rebuild(
    bytes: &[u8],
    meta: impl Fn(&mut Vec<(String, GgufValue)>),
    tensor: impl Fn(&str, Vec<u64>, u32, Vec<u8>) -> Option<(Vec<u64>, u32, Vec<u8>)>,
) -> Vec<u8> {
    let f = GgufFile::parse(bytes, bytes.len() as u64).unwrap();
    let mut md = f.metadata.clone();
    meta(&mut md);
    let mut w = GgufWriter::new();
    for (k, v) in md {
        w.add_metadata(k, v);
    }
    for t in &f.tensors {
        let r = f.tensor_range(t).unwrap();
        let data = bytes[r.start as usize..r.end as usize].to_vec();
        if let Some((dims, ty, data)) = tensor(&t.name, t.dims.clone(), t.type_id, data) {
            w.add_tensor(t.name.clone(), dims, ty, data).unwrap();
        }
    }
    w.to_bytes().unwrap()
}

fn set(md: &mut [(String, GgufValue)], key: &str, v: GgufValue) {
    md.iter_mut().find(|(k, _)| k == key).unwrap().1 = v;
}

fn load_err(bytes: &[u8]) -> coil_core::CoilError {
    // The chunked path reports at weights_plan, before any data moves...
    let mut m = Model::from_header(GgufFile::parse(bytes, bytes.len() as u64).unwrap()).unwrap();
    let e1 = m.weights_plan().unwrap_err();
    // ... and the in-memory loader reports the same.
    let e2 = Model::from_gguf_bytes(bytes).err().unwrap();
    assert_eq!(e1, e2);
    e1
}

fn logits(m: &Arc<Model>, toks: &[u32]) -> Vec<f32> {
    let mut c = Context::new(
        m.clone(),
        ContextParams { n_seq_max: 1, n_threads: 1, n_ubatch: 512, ..ContextParams::default() },
    )
    .unwrap();
    c.evaluate(&Batch::for_sequence(0, toks, true)).unwrap().into_vec()
}

#[test]
fn tiny_models_load_both_ways_identically() {
    for (name, arch, tied) in [("tiny-mamba.gguf", Arch::Mamba, true), ("tiny-mamba2.gguf", Arch::Mamba2, false)] {
        let bytes = fixture(name);
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name);
        let mapped = Arc::new(Model::open(&p).unwrap());
        let w = mapped.weights().unwrap();
        assert_eq!(w.hp.arch, arch);
        assert_eq!(w.tied_output, tied, "{name}");
        assert_eq!((w.hp.n_embd, w.hp.n_layer, w.hp.d_inner, w.hp.d_state, w.hp.d_conv), (64, 2, 128, 16, 4));
        if arch == Arch::Mamba2 {
            assert_eq!((w.hp.n_head, w.hp.head_dim, w.hp.n_group), (8, 16, 2));
        } else {
            assert_eq!(w.hp.dt_rank, 4);
        }
        // Chunked: tensors in reverse order, 100-byte chunks, some pushed twice.
        let mut m = Model::from_header(GgufFile::parse(&bytes, bytes.len() as u64).unwrap()).unwrap();
        let plan = m.weights_plan().unwrap();
        assert!(plan.windows(2).all(|p| p[0].1 < p[1].1), "plan in file order");
        for &(idx, off, len) in plan.iter().rev() {
            let data = &bytes[off as usize..(off + len) as usize];
            for (i, c) in data.chunks(100).enumerate() {
                m.push_tensor_bytes(idx, (i * 100) as u64, c).unwrap();
                if i % 3 == 0 {
                    m.push_tensor_bytes(idx, (i * 100) as u64, c).unwrap();
                }
            }
        }
        m.finish_weights().unwrap();
        let chunked = Arc::new(m);
        let toks = [1u32, 50, 200, 3, 99];
        assert_eq!(logits(&mapped, &toks), logits(&chunked, &toks), "{name}");
        assert!(logits(&mapped, &toks).iter().all(|v| v.is_finite()));
        // The header API still works.
        assert!(chunked.info_json(Some(4)).contains(arch.name()));
    }
}

#[test]
fn chunked_loading_misuse() {
    let bytes = fixture("tiny-mamba2.gguf");
    let mut m = Model::from_header(GgufFile::parse(&bytes, bytes.len() as u64).unwrap()).unwrap();
    // finish before anything was pushed
    assert_eq!(m.finish_weights().unwrap_err().code, ErrorCode::InvalidArgument);
    let plan = m.weights_plan().unwrap();
    let (idx, off, len) = plan[0];
    // unknown tensor index, a chunk past the end, an offset past the end
    assert_eq!(m.push_tensor_bytes(10_000, 0, &[0]).unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(m.push_tensor_bytes(idx, len - 1, &[0, 0]).unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(m.push_tensor_bytes(idx, u64::MAX, &[0]).unwrap_err().code, ErrorCode::InvalidArgument);
    // everything but the last byte of the last tensor
    for &(i, o, l) in &plan {
        let n = if (i, o, l) == *plan.last().unwrap() { l - 1 } else { l };
        m.push_tensor_bytes(i, 0, &bytes[o as usize..(o + n) as usize]).unwrap();
    }
    let e = m.finish_weights().unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(e.message.contains("incomplete"), "{}", e.message);
    // the missing byte, then finish works
    let &(i, o, l) = plan.last().unwrap();
    m.push_tensor_bytes(i, l - 1, &bytes[(o + l - 1) as usize..(o + l) as usize]).unwrap();
    m.finish_weights().unwrap();
    assert!(m.has_weights());
    assert_eq!(
        m.push_tensor_bytes(idx, 0, &bytes[off as usize..off as usize + 1]).unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    assert_eq!(m.weights_plan().unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(m.finish_weights().unwrap_err().code, ErrorCode::InvalidArgument);
}

#[test]
fn architecture_errors() {
    // Jamba loads (it used to be refused).
    let j = Model::from_gguf_bytes(&fixture("tiny-jamba.gguf")).unwrap();
    assert_eq!(j.hparams().unwrap().n_attention_layers(), 1);
    let b = rebuild(
        &fixture("tiny-mamba.gguf"),
        |md| set(md, "general.architecture", GgufValue::String("llama".into())),
        |_, d, t, x| Some((d, t, x)),
    );
    assert_eq!(load_err(&b).code, ErrorCode::UnknownArchitecture);
    let b = rebuild(
        &fixture("tiny-mamba.gguf"),
        |md| md.retain(|(k, _)| k != "general.architecture"),
        |_, d, t, x| Some((d, t, x)),
    );
    assert_eq!(load_err(&b).code, ErrorCode::MissingKey);
    // A header-only load of an unknown architecture still works (for tokenization).
    assert!(Model::from_header(GgufFile::parse(&b, b.len() as u64).unwrap()).is_ok());
}

#[test]
fn metadata_errors_name_the_key() {
    for key in [
        "mamba.ssm.state_size",
        "mamba.embedding_length",
        "mamba.attention.layer_norm_rms_epsilon",
        "mamba.ssm.conv_kernel",
    ] {
        let b = rebuild(&fixture("tiny-mamba.gguf"), |md| md.retain(|(k, _)| k != key), |_, d, t, x| Some((d, t, x)));
        let e = load_err(&b);
        assert_eq!(e.code, ErrorCode::MissingKey, "{key}");
        assert!(e.message.contains(key), "{}", e.message);
    }
    let b = rebuild(
        &fixture("tiny-mamba2.gguf"),
        |md| md.retain(|(k, _)| k != "mamba2.ssm.group_count"),
        |_, d, t, x| Some((d, t, x)),
    );
    assert_eq!(load_err(&b).code, ErrorCode::MissingKey);
    // Inconsistent values.
    let b = rebuild(
        &fixture("tiny-mamba2.gguf"),
        |md| set(md, "mamba2.ssm.time_step_rank", GgufValue::U32(7)),
        |_, d, t, x| Some((d, t, x)),
    );
    let e = load_err(&b);
    assert_eq!(e.code, ErrorCode::GgufInvalid, "{}", e.message);
    let b = rebuild(
        &fixture("tiny-mamba.gguf"),
        |md| set(md, "mamba.ssm.conv_kernel", GgufValue::U32(99)),
        |_, d, t, x| Some((d, t, x)),
    );
    assert_eq!(load_err(&b).code, ErrorCode::GgufInvalid);
    let b = rebuild(
        &fixture("tiny-mamba.gguf"),
        |md| set(md, "mamba.block_count", GgufValue::String("two".into())),
        |_, d, t, x| Some((d, t, x)),
    );
    assert_eq!(load_err(&b).code, ErrorCode::GgufInvalid);
}

#[test]
fn tensor_errors_name_the_tensor() {
    // Missing.
    for name in ["blk.1.ssm_x.weight", "blk.0.ssm_a", "output_norm.weight", "token_embd.weight"] {
        let b =
            rebuild(&fixture("tiny-mamba.gguf"), |_| {}, |n, d, t, x| if n == name { None } else { Some((d, t, x)) });
        let e = load_err(&b);
        assert_eq!(e.code, ErrorCode::MissingTensor, "{name}");
        assert!(e.message.contains(name), "{}", e.message);
    }
    for name in ["blk.0.ssm_norm.weight", "blk.1.ssm_in.weight"] {
        let b =
            rebuild(&fixture("tiny-mamba2.gguf"), |_| {}, |n, d, t, x| if n == name { None } else { Some((d, t, x)) });
        assert_eq!(load_err(&b).code, ErrorCode::MissingTensor, "{name}");
    }
    // Wrong shape: the same bytes, other dims.
    let swap = |name: &'static str| {
        move |n: &str, mut d: Vec<u64>, t: u32, x: Vec<u8>| {
            if n == name {
                d.swap(0, 1);
            }
            Some((d, t, x))
        }
    };
    for name in ["blk.0.ssm_in.weight", "blk.1.ssm_a", "blk.0.ssm_conv1d.weight", "blk.0.ssm_dt.weight"] {
        let b = rebuild(&fixture("tiny-mamba.gguf"), |_| {}, swap(name));
        let e = load_err(&b);
        assert_eq!(e.code, ErrorCode::BadTensorShape, "{name}: {}", e.message);
        assert!(e.message.contains(name), "{}", e.message);
    }
    let b = rebuild(
        &fixture("tiny-mamba2.gguf"),
        |_| {},
        |n, d, t, x| {
            if n == "blk.0.ssm_d" {
                Some((vec![1, 4], t, x[..16].to_vec()))
            } else {
                Some((d, t, x))
            }
        },
    );
    assert_eq!(load_err(&b).code, ErrorCode::BadTensorShape);
    // The output matrix must match the embedding's vocabulary.
    let b = rebuild(
        &fixture("tiny-mamba2.gguf"),
        |_| {},
        |n, d, t, x| {
            if n == "output.weight" {
                let rb = x.len() / d[1] as usize;
                Some((vec![d[0], d[1] - 1], t, x[..x.len() - rb].to_vec()))
            } else {
                Some((d, t, x))
            }
        },
    );
    assert_eq!(load_err(&b).code, ErrorCode::BadTensorShape);
}

#[test]
fn tensor_type_errors() {
    // A norm in F16: F32 is required.
    let b = rebuild(
        &fixture("tiny-mamba.gguf"),
        |_| {},
        |n, d, t, x| {
            if n == "blk.0.attn_norm.weight" {
                let h: Vec<u8> = x
                    .chunks_exact(4)
                    .flat_map(|c| {
                        coil_core::quant::half::f32_to_f16(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
                    })
                    .collect();
                Some((d, GgmlType::F16.id(), h))
            } else {
                Some((d, t, x))
            }
        },
    );
    let e = load_err(&b);
    assert_eq!(e.code, ErrorCode::UnsupportedType);
    assert!(e.message.contains("blk.0.attn_norm.weight") && e.message.contains("F32"), "{}", e.message);
    // A matrix in a type the kernels lack (Q2_K needs 256-wide rows: use an I8 matrix instead).
    let b = rebuild(
        &fixture("tiny-mamba.gguf"),
        |_| {},
        |n, d, t, x| {
            if n == "blk.1.ssm_out.weight" {
                let n_el = (d[0] * d[1]) as usize;
                Some((d, GgmlType::I8.id(), vec![0u8; n_el]))
            } else {
                Some((d, t, x))
            }
        },
    );
    let e = load_err(&b);
    assert_eq!(e.code, ErrorCode::UnsupportedType, "{}", e.message);
}

#[test]
fn quantized_matrices_evaluate_close_to_f32() {
    for arch in [Arch::Mamba, Arch::Mamba2] {
        let mut s = SynthSpec::tiny(arch);
        s.n_embd = 256;
        s.d_inner = 256;
        s.dt_rank = 16;
        let f32m = Arc::new(Model::from_gguf_bytes(&synth_gguf(&s).unwrap()).unwrap());
        let want = logits(&f32m, &[3, 1, 4, 1, 5, 9, 2, 6]);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (ty, tol) in [
            (GgmlType::F16, 2e-3),
            (GgmlType::BF16, 2e-2),
            (GgmlType::Q8_0, 5e-2),
            (GgmlType::Q4_K, 0.25),
            (GgmlType::Q6_K, 8e-2),
        ] {
            let mut q = s.clone();
            q.matrix_type = ty;
            let m = Arc::new(Model::from_gguf_bytes(&synth_gguf(&q).unwrap()).unwrap());
            let got = logits(&m, &[3, 1, 4, 1, 5, 9, 2, 6]);
            let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) / scale;
            eprintln!("{arch:?} {ty}: max |diff| / max |logit| = {d:.2e}");
            assert!(d < tol, "{arch:?} {ty}: relative difference {d}");
        }
    }
}
