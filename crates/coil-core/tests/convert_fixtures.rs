//! The converter on the tiny HF checkpoints of `tests/fixtures/hf/` (written by transformers, see
//! `scripts/fixtures/make_hf_fixtures.py`): every GGUF tensor is compared with its source tensor
//! after the documented transform (independently re-derived here from the HF names), the metadata
//! with the fixture's config, and, where the fixture has a tokenizer, coil's tokenizer built from
//! the converted file with the fixture's `expected_ids`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use coil_core::convert::safetensors::{Checkpoint, StDtype, StTensor};
use coil_core::convert::{bf16_to_f32, convert, f16_to_f32, f32_to_bf16, f32_to_f16, ConvertOptions, OutType};
use coil_core::gguf::{GgmlType, GgufValue, MappedGguf};
use coil_core::tokenizer::Tokenizer;
use serde_json::Value;

fn hf_dir(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf").join(name);
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!("skipping: fixture {} is missing", p.display());
        None
    }
}

struct TempOut(PathBuf);

impl TempOut {
    fn new(tag: &str) -> TempOut {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let d = std::env::temp_dir().join(format!("coil-convfix-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempOut(d)
    }
    fn file(&self, n: &str) -> PathBuf {
        self.0.join(n)
    }
}

impl Drop for TempOut {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn decode(t: &StTensor, b: &[u8]) -> Vec<f32> {
    match t.dtype {
        StDtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        StDtype::F16 => b.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        StDtype::BF16 => b.chunks_exact(2).map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        d => panic!("unexpected dtype {d}"),
    }
}

fn encode(ty: GgmlType, vals: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    for &v in vals {
        match ty {
            GgmlType::F32 => out.extend_from_slice(&v.to_le_bytes()),
            GgmlType::F16 => out.extend_from_slice(&f32_to_f16(v).to_le_bytes()),
            GgmlType::BF16 => out.extend_from_slice(&f32_to_bf16(v).to_le_bytes()),
            _ => unreachable!(),
        }
    }
    out
}

/// The GGUF name, ggml dims and whether `-exp` applies, derived from an HF name on its own
/// (not with the converter's code). Experts map to `(name, expert index)`.
#[derive(Debug, Clone)]
struct Want {
    gguf: String,
    expert: Option<u64>,
    neg_exp: bool,
}

fn want_for(arch: &str, name: &str, moe_layers: &[u64]) -> Want {
    let mut n = name.to_string();
    if arch == "mamba2" {
        if let Some(r) = n.strip_prefix("model.") {
            n = r.to_string();
        }
        n = n.replace(".dt_bias", ".dt_proj.bias");
    }
    let w = |g: String| Want { neg_exp: g.ends_with(".ssm_a"), gguf: g, expert: None };
    match n.as_str() {
        "backbone.embeddings.weight" | "backbone.embedding.weight" | "model.embed_tokens.weight" => {
            return w("token_embd.weight".into())
        }
        "backbone.norm_f.weight" | "model.final_layernorm.weight" => return w("output_norm.weight".into()),
        "lm_head.weight" => return w("output.weight".into()),
        _ => {}
    }
    let rest = n.strip_prefix("backbone.layers.").or_else(|| n.strip_prefix("model.layers.")).unwrap();
    let (bid, local) = rest.split_once('.').unwrap();
    let bid: u64 = bid.parse().unwrap();
    if let Some(e) = local.strip_prefix("feed_forward.experts.") {
        let (x, kind) = e.split_once('.').unwrap();
        let kind = kind.trim_end_matches("_proj.weight");
        let x: u64 = x.parse().unwrap();
        if moe_layers.contains(&bid) {
            return Want { gguf: format!("blk.{bid}.ffn_{kind}_exps.weight"), expert: Some(x), neg_exp: false };
        }
        assert_eq!(x, 0);
        return w(format!("blk.{bid}.ffn_{kind}.weight"));
    }
    let g = match local {
        "norm.weight" | "input_layernorm.weight" => "attn_norm.weight",
        "pre_ff_layernorm.weight" => "ffn_norm.weight",
        "mixer.in_proj.weight" | "mamba.in_proj.weight" => "ssm_in.weight",
        "mixer.conv1d.weight" | "mamba.conv1d.weight" => "ssm_conv1d.weight",
        "mixer.conv1d.bias" | "mamba.conv1d.bias" => "ssm_conv1d.bias",
        "mixer.x_proj.weight" | "mamba.x_proj.weight" => "ssm_x.weight",
        "mixer.dt_proj.weight" | "mamba.dt_proj.weight" => "ssm_dt.weight",
        "mixer.dt_proj.bias" | "mamba.dt_proj.bias" => "ssm_dt.bias",
        "mixer.A_log" | "mamba.A_log" => "ssm_a",
        "mixer.D" | "mamba.D" => "ssm_d",
        "mixer.norm.weight" => "ssm_norm.weight",
        "mixer.out_proj.weight" | "mamba.out_proj.weight" => "ssm_out.weight",
        "mamba.dt_layernorm.weight" => "ssm_dt_norm.weight",
        "mamba.b_layernorm.weight" => "ssm_b_norm.weight",
        "mamba.c_layernorm.weight" => "ssm_c_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "feed_forward.router.weight" => "ffn_gate_inp.weight",
        "feed_forward.gate_proj.weight" => "ffn_gate.weight",
        "feed_forward.up_proj.weight" => "ffn_up.weight",
        "feed_forward.down_proj.weight" => "ffn_down.weight",
        other => panic!("fixture tensor {name}: unexpected local name {other}"),
    };
    w(format!("blk.{bid}.{g}"))
}

/// The type the converter's rules give `name` (ggml dims `dims`) for matrix type `matrix`.
fn rule_type(name: &str, dims: &[u64], matrix: GgmlType) -> GgmlType {
    let f32 = dims.len() <= 1
        || name.ends_with("_norm.weight")
        || name.ends_with(".ffn_gate_inp.weight")
        || name.ends_with(".ssm_conv1d.weight")
        || !name.ends_with(".weight");
    if f32 {
        GgmlType::F32
    } else {
        matrix
    }
}

struct Converted {
    out: MappedGguf,
    report: coil_core::convert::ConvertReport,
    ck: Checkpoint,
    reference: Value,
}

fn convert_fixture(name: &str, outtype: OutType, tmp: &TempOut) -> Option<Converted> {
    let dir = hf_dir(name)?;
    let outp = tmp.file(&format!("{name}-{}.gguf", outtype.name()));
    let report = convert(&dir, &outp, ConvertOptions { outtype, name: None }, &mut |_| true)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let out = MappedGguf::open(&outp).unwrap();
    let ck = Checkpoint::open_dir(&dir).unwrap();
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    Some(Converted { out, report, ck, reference })
}

/// Every source tensor reaches the GGUF exactly (after the transform), every GGUF tensor comes
/// from a source tensor, and the dims / types follow the rules.
fn check_tensors(c: &Converted, arch: &str, matrix: GgmlType, moe_layers: &[u64], n_group: u64) {
    type Sources<'a> = Vec<(Option<u64>, &'a StTensor, bool)>;
    let mut groups: BTreeMap<String, Sources> = BTreeMap::new();
    for t in &c.ck.tensors {
        let w = want_for(arch, &t.name, moe_layers);
        groups.entry(w.gguf).or_default().push((w.expert, t, w.neg_exp));
    }
    // Mamba-1 leaves out an output equal to the embedding (none of these fixtures has one).
    for (gname, mut srcs) in groups {
        srcs.sort_by_key(|s| s.0);
        let info = c.out.file.tensor(&gname).unwrap_or_else(|| panic!("{arch}: no GGUF tensor {gname}"));
        let first = srcs[0].1;
        // Expected ggml dims.
        let mut shape = first.shape.clone();
        if gname.ends_with("ssm_conv1d.weight") {
            shape.remove(1);
        }
        if arch == "mamba2" && (gname.ends_with(".ssm_a") || gname.ends_with(".ssm_d")) {
            shape = vec![shape[0], 1];
        }
        if arch == "mamba2" && gname.ends_with(".ssm_norm.weight") {
            shape = vec![n_group, shape[0] / n_group];
        }
        if srcs[0].0.is_some() {
            shape.insert(0, srcs.len() as u64);
        }
        let dims: Vec<u64> = shape.iter().rev().copied().collect();
        assert_eq!(info.dims, dims, "{arch}: {gname} dims");
        let ty = rule_type(&gname, &dims, matrix);
        assert_eq!(info.ggml_type, Some(ty), "{arch}: {gname} type");
        // Expected bytes.
        let mut want = Vec::new();
        for (_, t, neg_exp) in &srcs {
            let raw = c.ck.data(t);
            let same = matches!(
                (t.dtype, ty),
                (StDtype::F32, GgmlType::F32) | (StDtype::F16, GgmlType::F16) | (StDtype::BF16, GgmlType::BF16)
            );
            if same && !neg_exp {
                want.extend_from_slice(raw);
                continue;
            }
            let mut vals = decode(t, raw);
            if *neg_exp {
                for v in vals.iter_mut() {
                    *v = -((*v as f64).exp() as f32);
                }
            }
            want.extend(encode(ty, &vals));
        }
        let got = c.out.tensor_data(info).unwrap();
        assert!(got == want.as_slice(), "{arch}: {gname} bytes differ from the transformed source");
    }
}

fn u32_of(c: &Converted, k: &str) -> u32 {
    match c.out.file.get(k) {
        Some(GgufValue::U32(v)) => *v,
        v => panic!("{k}: {v:?}"),
    }
}

/// coil's tokenizer from the converted file gives the fixture's expected ids.
fn check_expected_ids(c: &Converted, parse_special: bool) {
    let Some(cases) = c.reference.get("expected_ids").and_then(Value::as_array) else { return };
    let tok = Tokenizer::from_gguf(&c.out.file).expect("coil builds a tokenizer from the converted file");
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let got = tok.tokenize(text, false, parse_special);
        if got != want {
            failures.push(format!("{text:?}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} expected_ids differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn fixture_mamba() {
    let tmp = TempOut::new("mamba");
    for outtype in [OutType::F32, OutType::F16] {
        let Some(c) = convert_fixture("mamba", outtype, &tmp) else { return };
        assert_eq!(c.report.arch, "mamba");
        check_tensors(&c, "mamba", outtype.ggml_type().unwrap(), &[], 0);
        // Tied: no lm_head on disk, no output tensor.
        assert!(c.out.file.tensor("output.weight").is_none());
        assert_eq!(u32_of(&c, "mamba.ssm.time_step_rank"), 12);
        assert_eq!(u32_of(&c, "mamba.embedding_length"), 64);
        assert_eq!(c.out.file.get("mamba.ssm.dt_b_c_rms"), Some(&GgufValue::Bool(false)));
        // 507 embedding rows: llama.cpp's multiple-of-8 padding (512) would contradict them.
        assert_eq!(c.report.n_vocab, 507);
        let toks = c.out.file.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap().as_strings().unwrap().to_vec();
        assert_eq!(toks.len(), 507);
        assert_eq!(toks[506], "[PAD506]");
        assert!(c.report.warnings.iter().any(|w| w.contains("512")), "{:?}", c.report.warnings);
        assert_eq!(c.out.file.get("tokenizer.ggml.pre").and_then(|v| v.as_str()), Some("gpt-2"));
        assert_eq!(u32_of(&c, "tokenizer.ggml.bos_token_id"), 0);
        assert_eq!(u32_of(&c, "tokenizer.ggml.padding_token_id"), 1);
        check_expected_ids(&c, true);
    }
}

#[test]
fn fixture_mamba_untied() {
    let tmp = TempOut::new("untied");
    let Some(c) = convert_fixture("mamba-untied", OutType::Auto, &tmp) else { return };
    assert_eq!(c.report.outtype, OutType::F16);
    assert!(!c.report.tied_output_omitted);
    check_tensors(&c, "mamba", GgmlType::F16, &[], 0);
    assert_eq!(u32_of(&c, "mamba.ssm.conv_kernel"), 3);
    check_expected_ids(&c, true);
}

#[test]
fn fixture_falcon_mamba() {
    let tmp = TempOut::new("falcon");
    let Some(c) = convert_fixture("falcon-mamba", OutType::Bf16, &tmp) else { return };
    check_tensors(&c, "mamba", GgmlType::BF16, &[], 0);
    assert_eq!(c.out.file.get("mamba.ssm.dt_b_c_rms"), Some(&GgufValue::Bool(true)));
    check_expected_ids(&c, true);
}

#[test]
fn fixture_mamba2() {
    let tmp = TempOut::new("mamba2");
    let Some(c) = convert_fixture("mamba2", OutType::F32, &tmp) else { return };
    assert_eq!(c.report.arch, "mamba2");
    check_tensors(&c, "mamba2", GgmlType::F32, &[], 1);
    assert_eq!(u32_of(&c, "mamba2.ssm.time_step_rank"), 8);
    assert_eq!(u32_of(&c, "mamba2.ssm.group_count"), 1);
    assert_eq!(u32_of(&c, "mamba2.ssm.inner_size"), 128);
    check_expected_ids(&c, true);
}

#[test]
fn fixture_mamba2_groups_without_tokenizer() {
    let tmp = TempOut::new("g2");
    let Some(c) = convert_fixture("mamba2-g2", OutType::F16, &tmp) else { return };
    check_tensors(&c, "mamba2", GgmlType::F16, &[], 2);
    assert_eq!(u32_of(&c, "mamba2.ssm.group_count"), 2);
    assert_eq!(u32_of(&c, "mamba2.ssm.time_step_rank"), 6);
    assert_eq!(u32_of(&c, "mamba2.block_count"), 3);
    assert!(c.report.tokenizer.is_none());
    assert!(c.out.file.get("tokenizer.ggml.model").is_none());
    assert!(c.report.warnings.iter().any(|w| w.contains("no tokenizer")), "{:?}", c.report.warnings);
}

#[test]
fn fixture_mamba_codestral_layout() {
    let tmp = TempOut::new("codestral");
    let Some(c) = convert_fixture("mamba-codestral-layout", OutType::Bf16, &tmp) else { return };
    assert_eq!(c.report.arch, "mamba2");
    assert_eq!(c.report.config_source, coil_core::convert::ConfigSource::MistralParams);
    check_tensors(&c, "mamba2", GgmlType::BF16, &[], 1);
    // llama.cpp's Mamba-2 defaults: head dim 64 (one head), state size 128.
    assert_eq!(u32_of(&c, "mamba2.ssm.time_step_rank"), 1);
    assert_eq!(u32_of(&c, "mamba2.ssm.state_size"), 128);
    assert_eq!(c.report.tokenizer.as_ref().unwrap().source, "tokenizer.model.v3");
    check_expected_ids(&c, false);
}

#[test]
fn fixture_jamba() {
    let tmp = TempOut::new("jamba");
    let Some(c) = convert_fixture("jamba", OutType::F16, &tmp) else { return };
    assert_eq!(c.report.arch, "jamba");
    check_tensors(&c, "jamba", GgmlType::F16, &[1, 3, 5], 0);
    let kv = c.out.file.get("jamba.attention.head_count_kv").unwrap().as_array().unwrap().as_i32s().unwrap().to_vec();
    assert_eq!(kv, [0, 2, 0, 0, 2, 0]);
    assert_eq!(u32_of(&c, "jamba.expert_count"), 4);
    assert_eq!(u32_of(&c, "jamba.expert_used_count"), 2);
    assert_eq!(u32_of(&c, "jamba.feed_forward_length"), 48);
    assert_eq!(u32_of(&c, "jamba.ssm.time_step_rank"), 6);
    assert_eq!(u32_of(&c, "jamba.context_length"), 4096);
    // SentencePiece vocabulary padded by HF's vocab_size (500 pieces, 512 rows).
    let toks = c.out.file.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap().as_strings().unwrap().to_vec();
    assert_eq!(toks.len(), 512);
    assert_eq!(toks[511], "[PAD511]");
    assert_eq!(c.out.file.get("tokenizer.ggml.add_bos_token"), Some(&GgufValue::Bool(true)));
    assert_eq!(u32_of(&c, "tokenizer.ggml.bos_token_id"), 1);
    assert_eq!(u32_of(&c, "tokenizer.ggml.eos_token_id"), 2);
    check_expected_ids(&c, false);
}
