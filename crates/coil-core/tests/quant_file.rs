//! quantize_gguf on the tiny model fixtures: the output parses, types follow llama-quantize's
//! rules, weights stay close to the source, metadata is otherwise unchanged, progress is
//! reported, aborts and errors leave no files behind.

use std::path::{Path, PathBuf};

use coil_core::gguf::{GgmlType, GgufValue, MappedGguf, TensorInfo};
use coil_core::quant::rules::ggml_n_dims;
use coil_core::quant::{
    dequantize_row, fallback_type, quantize_gguf, quantize_gguf_with, tensor_allows_quantization, QuantOptions,
    QuantProgress, QuantTarget,
};
use coil_core::ErrorCode;

fn model(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models").join(name)
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("coil-quant-file-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn values(m: &MappedGguf, t: &TensorInfo) -> Vec<f32> {
    let data = m.tensor_data(t).unwrap();
    let mut out = vec![0f32; t.n_elements() as usize];
    dequantize_row(t.ggml_type.unwrap(), data, &mut out).unwrap();
    out
}

fn rel_rmse(a: &[f32], b: &[f32]) -> f64 {
    let err: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    let rms: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum();
    (err / rms.max(1e-30)).sqrt()
}

/// Loose per-type bound on the relative RMSE of a whole tensor of random weights.
fn bound(t: GgmlType) -> f64 {
    match t {
        GgmlType::F32 => 0.0,
        GgmlType::F16 | GgmlType::BF16 => 0.005,
        GgmlType::Q8_0 => 0.01,
        GgmlType::Q6_K => 0.03,
        GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5_K => 0.06,
        _ => 0.12,
    }
}

/// The type llama-quantize gives `t` of a file without `output.weight` (all tiny fixtures tie
/// or not; passed in) when quantizing to `target`.
fn expected_type(target: QuantTarget, tied: bool, t: &TensorInfo) -> GgmlType {
    let from = t.ggml_type.unwrap();
    if !tensor_allows_quantization(&t.name, ggml_n_dims(&t.dims)) {
        return from;
    }
    let d = target.default_type();
    if !d.is_quantized() {
        return d;
    }
    let row = t.dims[0];
    let wanted = if t.name == "output.weight" || (tied && t.name == "token_embd.weight") {
        if !row.is_multiple_of(d.block_size()) {
            GgmlType::Q8_0
        } else if d != GgmlType::Q8_0 {
            GgmlType::Q6_K
        } else {
            d
        }
    } else {
        d
    };
    fallback_type(wanted, row)
}

fn check_model(name: &str, tied: bool) {
    let dir = tmpdir(&format!("targets-{name}"));
    let input = model(name);
    let src = MappedGguf::open(&input).unwrap();
    for target in QuantTarget::ALL {
        // The mixture rules for attention / FFN tensors are covered by quant_llama_parity; only
        // mamba's tensors are predicted here.
        if name.contains("jamba") && matches!(target, QuantTarget::Q4_K_S | QuantTarget::Q4_K_M | QuantTarget::Q5_K_M) {
            continue;
        }
        let out = dir.join(format!("{target}.gguf"));
        let mut calls = Vec::new();
        let report = quantize_gguf_with(&input, &out, &QuantOptions::new(target), &mut |p: QuantProgress| {
            calls.push(p);
            true
        })
        .unwrap();
        let q = MappedGguf::open(&out).unwrap();
        assert_eq!(q.file.version, 3);
        assert_eq!(report.file_size, q.bytes().len() as u64);
        assert_eq!(report.ftype, target.ftype());

        // Metadata: the input's, in order, with quantization_version and file_type at the end.
        let mut want: Vec<(String, GgufValue)> = src
            .file
            .metadata
            .iter()
            .filter(|(k, _)| k != "general.file_type" && k != "general.quantization_version")
            .cloned()
            .collect();
        want.push(("general.quantization_version".into(), GgufValue::U32(2)));
        want.push(("general.file_type".into(), GgufValue::U32(target.ftype())));
        assert_eq!(q.file.metadata, want, "{name} {target}");

        // Tensors: same set and shapes, types by the rules, values close to the source.
        assert_eq!(q.file.tensors.len(), src.file.tensors.len());
        for t in &src.file.tensors {
            let o = q.file.tensor(&t.name).unwrap_or_else(|| panic!("{} missing", t.name));
            assert_eq!(o.dims, t.dims, "{}", t.name);
            let want_ty = expected_type(target, tied, t);
            assert_eq!(o.ggml_type, Some(want_ty), "{name} {target}: {}", t.name);
            let r = report.tensors.iter().find(|r| r.name == t.name).unwrap();
            assert_eq!((r.from, r.to), (t.ggml_type.unwrap(), want_ty));
            assert_eq!(r.bytes_before, t.size.unwrap());
            assert_eq!(r.bytes_after, o.size.unwrap());
            if r.to == r.from || r.to != target.default_type() {
                assert!(r.reason().is_some(), "{}: kept or changed type without a reason", t.name);
            }
            let (a, b) = (values(&src, t), values(&q, o));
            if want_ty == t.ggml_type.unwrap() {
                assert_eq!(src.tensor_data(t).unwrap(), q.tensor_data(o).unwrap(), "{} copied", t.name);
            } else {
                let e = rel_rmse(&a, &b);
                assert!(e <= bound(want_ty), "{name} {target} {}: {want_ty} error {e}", t.name);
            }
        }

        // Progress: one call per tensor at least, monotonic, ending at the total.
        assert!(calls.len() >= src.file.tensors.len());
        assert!(calls.windows(2).all(|w| w[0].bytes_done <= w[1].bytes_done && w[0].tensor_index <= w[1].tensor_index));
        let last = calls.last().unwrap();
        assert_eq!(last.bytes_done, last.bytes_total);
        assert_eq!(last.tensor_index + 1, last.tensor_count);
        let json = report.to_json();
        assert_eq!(json["tensors"].as_array().unwrap().len(), src.file.tensors.len());
    }
    // Nothing else was left in the directory.
    assert_eq!(files_in(&dir).len(), QuantTarget::ALL.len() - if name.contains("jamba") { 3 } else { 0 });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tiny_mamba_every_target() {
    check_model("tiny-mamba.gguf", true);
}

#[test]
fn tiny_mamba2_every_target() {
    check_model("tiny-mamba2.gguf", false);
}

#[test]
fn tiny_jamba_every_target() {
    check_model("tiny-jamba.gguf", false);
}

#[test]
fn plain_type_entry_point() {
    let dir = tmpdir("plain");
    let input = model("tiny-mamba.gguf");
    for (t, ft) in [(GgmlType::Q4_K, 14), (GgmlType::Q5_K, 16), (GgmlType::Q8_0, 7), (GgmlType::Q4_0, 2)] {
        let out = dir.join(format!("{t}.gguf"));
        let r = quantize_gguf(&input, &out, t, &mut |_| true).unwrap();
        assert_eq!(r.ftype, ft);
        let q = MappedGguf::open(&out).unwrap();
        assert_eq!(q.file.get_u64("general.file_type"), Some(ft as u64));
        // K-quants need rows of 256: tiny-mamba's rows of 64 and 128 fall back.
        if t == GgmlType::Q4_K {
            assert_eq!(q.file.tensor("blk.0.ssm_in.weight").unwrap().ggml_type, Some(GgmlType::Q5_0));
            assert_eq!(q.file.tensor("blk.0.ssm_dt.weight").unwrap().ggml_type, Some(GgmlType::F16));
            assert_eq!(q.file.tensor("token_embd.weight").unwrap().ggml_type, Some(GgmlType::Q8_0));
        }
    }
    let e = quantize_gguf(&input, &dir.join("x.gguf"), GgmlType::Q8_K, &mut |_| true).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnsupportedType);
    let e = quantize_gguf(&input, &dir.join("x.gguf"), GgmlType::IQ2_XS, &mut |_| true).unwrap_err();
    assert_eq!(e.code, ErrorCode::UnsupportedType);
    assert_eq!(files_in(&dir).len(), 4);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn abort_leaves_no_files() {
    let dir = tmpdir("abort");
    let input = model("tiny-jamba.gguf");
    let out = dir.join("out.gguf");
    for stop_at in [0usize, 1, 5, 20] {
        let mut n = 0;
        let e = quantize_gguf(&input, &out, GgmlType::Q8_0, &mut |_| {
            n += 1;
            n <= stop_at
        })
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::Aborted);
        assert!(files_in(&dir).is_empty(), "left behind: {:?}", files_in(&dir));
    }
    // An existing output survives an abort untouched.
    std::fs::write(&out, b"previous").unwrap();
    let e = quantize_gguf(&input, &out, GgmlType::Q4_0, &mut |_| false).unwrap_err();
    assert_eq!(e.code, ErrorCode::Aborted);
    assert_eq!(std::fs::read(&out).unwrap(), b"previous");
    assert_eq!(files_in(&dir), vec!["out.gguf".to_string()]);
    // ... and is replaced by a successful run.
    quantize_gguf(&input, &out, GgmlType::Q4_0, &mut |_| true).unwrap();
    assert!(MappedGguf::open(&out).is_ok());
    assert_eq!(files_in(&dir), vec!["out.gguf".to_string()]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn errors_leave_no_files() {
    let dir = tmpdir("errors");
    // Missing input.
    let e = quantize_gguf(&dir.join("nope.gguf"), &dir.join("out.gguf"), GgmlType::Q8_0, &mut |_| true).unwrap_err();
    assert_eq!(e.code, ErrorCode::Io);
    // Not a GGUF.
    std::fs::write(dir.join("bad.gguf"), b"not a gguf file at all").unwrap();
    let e = quantize_gguf(&dir.join("bad.gguf"), &dir.join("out.gguf"), GgmlType::Q8_0, &mut |_| true).unwrap_err();
    assert_eq!(e.code, ErrorCode::GgufBadMagic);
    // Output directory missing.
    let e = quantize_gguf(&model("tiny-mamba.gguf"), &dir.join("no/such/dir/out.gguf"), GgmlType::Q8_0, &mut |_| true)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Io);
    assert_eq!(files_in(&dir), vec!["bad.gguf".to_string()]);
    // Output = input.
    let copy = dir.join("copy.gguf");
    std::fs::copy(model("tiny-mamba.gguf"), &copy).unwrap();
    let e = quantize_gguf(&copy, &copy, GgmlType::Q8_0, &mut |_| true).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(model("tiny-mamba.gguf")).unwrap());
    assert_eq!(files_in(&dir), vec!["bad.gguf".to_string(), "copy.gguf".to_string()]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn requantizing_a_quantized_file() {
    let dir = tmpdir("requant");
    let input = model("tiny-mamba2.gguf");
    let q8 = dir.join("q8.gguf");
    quantize_gguf(&input, &q8, GgmlType::Q8_0, &mut |_| true).unwrap();
    let q4 = dir.join("q4.gguf");
    let r = quantize_gguf(&q8, &q4, GgmlType::Q4_0, &mut |_| true).unwrap();
    let src = MappedGguf::open(&input).unwrap();
    let out = MappedGguf::open(&q4).unwrap();
    let t = src.file.tensor("blk.0.ssm_in.weight").unwrap();
    let o = out.file.tensor("blk.0.ssm_in.weight").unwrap();
    assert_eq!(o.ggml_type, Some(GgmlType::Q4_0));
    assert!(rel_rmse(&values(&src, t), &values(&out, o)) < 0.12);
    let rr = r.tensors.iter().find(|x| x.name == "blk.0.ssm_in.weight").unwrap();
    assert_eq!((rr.from, rr.to), (GgmlType::Q8_0, GgmlType::Q4_0));
    // output.weight wants Q6_K, which falls back to Q8_0 for rows of 64: already Q8_0, copied.
    let ro = r.tensors.iter().find(|x| x.name == "output.weight").unwrap();
    assert_eq!((ro.from, ro.to), (GgmlType::Q8_0, GgmlType::Q8_0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn output_does_not_depend_on_threads() {
    let dir = tmpdir("threads");
    let input = model("tiny-jamba.gguf");
    let mut outs = Vec::new();
    for threads in [1usize, 2, 3, 7] {
        let out = dir.join(format!("t{threads}.gguf"));
        let opts = QuantOptions { target: QuantTarget::Q5_1, pure: false, threads };
        quantize_gguf_with(&input, &out, &opts, &mut |_| true).unwrap();
        outs.push(std::fs::read(&out).unwrap());
    }
    assert!(outs.windows(2).all(|w| w[0] == w[1]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn custom_alignment_is_kept_consistent() {
    use coil_core::gguf::GgufWriter;
    let dir = tmpdir("align");
    let mut w = GgufWriter::new();
    w.add_metadata("general.architecture", GgufValue::from("mamba"));
    w.add_metadata("general.alignment", GgufValue::U32(64));
    let data: Vec<u8> = (0..256 * 3).flat_map(|i| ((i % 17) as f32 - 8.0).to_le_bytes()).collect();
    w.add_tensor("blk.0.ssm_in.weight", vec![256, 3], GgmlType::F32.id(), data).unwrap();
    w.add_tensor("blk.0.attn_norm.weight", vec![3], GgmlType::F32.id(), vec![0u8; 12]).unwrap();
    w.add_tensor("blk.0.ssm_out.weight", vec![32, 1, 2], GgmlType::F32.id(), vec![0u8; 256]).unwrap();
    let input = dir.join("in.gguf");
    std::fs::write(&input, w.to_bytes().unwrap()).unwrap();
    let out = dir.join("out.gguf");
    quantize_gguf(&input, &out, GgmlType::Q4_K, &mut |_| true).unwrap();
    let m = MappedGguf::open(&out).unwrap();
    assert_eq!(m.file.alignment, 64);
    assert_eq!(m.bytes().len() % 64, 0);
    for t in &m.file.tensors {
        assert_eq!(t.offset % 64, 0);
    }
    // The loader's order: attn_norm, ssm_in, ssm_out (names within layer 0).
    let names: Vec<&str> = m.file.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["blk.0.attn_norm.weight", "blk.0.ssm_in.weight", "blk.0.ssm_out.weight"]);
    // [32, 1, 2] keeps its middle 1 (only trailing 1s are dropped).
    assert_eq!(m.file.tensor("blk.0.ssm_out.weight").unwrap().dims, vec![32, 1, 2]);
    assert_eq!(m.file.tensor("blk.0.ssm_out.weight").unwrap().ggml_type, Some(GgmlType::Q5_0));
    let _ = std::fs::remove_dir_all(&dir);
}
