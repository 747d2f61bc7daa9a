//! The converter on the hybrid architectures (Granite-4.0-H / Bamba, Nemotron-H, Falcon-H1, LFM2),
//! on the tiny transformers checkpoints of `tests/fixtures/hf/` (see
//! `scripts/fixtures/hybrid_fixtures.py`). For each fixture:
//!
//! 1. coil converts it to an F32 GGUF, which must carry the same metadata keys and values, tensor
//!    names, shapes, types and (to f16 rounding) data as the `llama.cpp.gguf` llama.cpp's
//!    `convert_hf_to_gguf.py` wrote for it, except for the differences listed in [`FIXTURES`]
//!    with their reasons; a `config.legacy.json` (the transformers 4 spelling of the same config)
//!    must convert to the same file;
//! 2. coil's runtime evaluates every prompt of `reference.json` (float64 transformers logits) on
//!    the converted file, and every logit must be within 1e-4 · max(1, |reference|);
//! 3. the same for `llama.cpp.gguf` itself, unless the fixture lists why llama.cpp's file computes
//!    something else (then it must indeed be off by more than the bound).
//!
//! A missing fixture fails. Run with `--nocapture` to see the deviations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use coil_core::context::{Batch, Context, ContextParams, KvType};
use coil_core::convert::{convert, ConvertOptions, OutType};
use coil_core::gguf::{GgmlType, GgufValue, MappedGguf};
use coil_core::model::Model;
use serde_json::Value;

/// How coil's file and llama.cpp's may differ for one fixture, each with the reason.
struct Fixture {
    name: &'static str,
    arch: &'static str,
    /// Keys only coil writes.
    extra_keys: &'static [(&'static str, &'static str)],
    /// Keys both write with different values.
    changed_keys: &'static [(&'static str, &'static str)],
    /// Tensors only coil writes.
    extra_tensors: &'static [(&'static str, &'static str)],
    /// Tensors (name suffixes) whose data coil writes differently.
    changed_data: &'static [(&'static str, &'static str)],
    /// Why llama.cpp's own file does not reproduce transformers (`None`: it must).
    llama_cpp_logits: Option<&'static str>,
}

const NO: &[(&str, &str)] = &[];

const FIXTURES: &[Fixture] = &[
    Fixture {
        name: "granite-hybrid-moe",
        arch: "granitehybrid",
        extra_keys: NO,
        changed_keys: NO,
        extra_tensors: NO,
        changed_data: NO,
        llama_cpp_logits: None,
    },
    Fixture {
        name: "granite-hybrid-dense",
        arch: "granitehybrid",
        extra_keys: &[(
            "tokenizer.ggml.unknown_token_id",
            "coil takes the UNK id that no JSON file names from the SentencePiece model's trainer spec \
             (convert/vocab.rs); llama.cpp leaves it out",
        )],
        changed_keys: NO,
        extra_tensors: NO,
        changed_data: NO,
        llama_cpp_logits: None,
    },
    Fixture {
        name: "bamba",
        arch: "granitehybrid",
        extra_keys: NO,
        changed_keys: NO,
        extra_tensors: NO,
        changed_data: NO,
        // llama.cpp's own runtime rotates other pairs than transformers on this file (its
        // whole-head q/k permutation does not suit a partial RoPE, reference.json
        // sensitivity.rope_pairing); coil's runtime reads the permuted rows right.
        llama_cpp_logits: None,
    },
    Fixture {
        name: "nemotron-h",
        arch: "nemotron_h",
        extra_keys: NO,
        changed_keys: NO,
        extra_tensors: NO,
        changed_data: NO,
        llama_cpp_logits: None,
    },
    Fixture {
        name: "nemotron-h-moe",
        arch: "nemotron_h_moe",
        extra_keys: &[(
            "nemotron_h_moe.ssm.dt_min",
            "transformers clamps Delta at time_step_min; coil's runtime applies this key, llama.cpp has none and \
             does not clamp (no Delta falls below it in this fixture, so llama.cpp's logits still match)",
        )],
        changed_keys: NO,
        extra_tensors: NO,
        changed_data: NO,
        llama_cpp_logits: None,
    },
    Fixture {
        name: "falcon-h1",
        arch: "falcon-h1",
        extra_keys: NO,
        changed_keys: NO,
        extra_tensors: NO,
        changed_data: NO,
        llama_cpp_logits: Some(
            "llama.cpp folds the muP multipliers in the checkpoint's dtype (F16 here), rounding every folded weight \
             to f16 once more; coil folds in f64 and rounds once to f32",
        ),
    },
    Fixture {
        name: "falcon-h1-tied",
        arch: "falcon-h1",
        extra_keys: NO,
        changed_keys: NO,
        extra_tensors: &[(
            "output.weight",
            "tied embeddings: transformers' logits use the unscaled embedding x lm_head_multiplier, but llama.cpp's \
             token_embd carries embedding_multiplier and is reused as output; coil writes the right output matrix",
        )],
        changed_data: NO,
        llama_cpp_logits: Some(
            "its reused token_embd scales the logits by embedding_multiplier instead of lm_head_multiplier \
             (reference.json sensitivity.tied_output_scale)",
        ),
    },
    Fixture {
        name: "falcon-h1-norm-first",
        arch: "falcon-h1",
        extra_keys: &[(
            "falcon-h1.ssm.norm_before_gate",
            "transformers normalises the Mamba output before the SiLU gate (mamba_norm_before_gate, its default); \
             llama.cpp has no key for it and always gates first",
        )],
        changed_keys: NO,
        extra_tensors: NO,
        changed_data: NO,
        llama_cpp_logits: Some(
            "llama.cpp gates before the group norm whatever the checkpoint says \
             (reference.json sensitivity.norm_before_gate)",
        ),
    },
    Fixture {
        name: "lfm2",
        arch: "lfm2",
        extra_keys: NO,
        changed_keys: NO,
        extra_tensors: NO,
        changed_data: NO,
        llama_cpp_logits: None,
    },
    Fixture {
        name: "lfm2-moe",
        arch: "lfm2moe",
        extra_keys: &[(
            "lfm2moe.expert_weights_scale",
            "transformers multiplies the chosen experts' weights by routed_scaling_factor (1.25 here); llama.cpp's \
             converter drops it",
        )],
        changed_keys: NO,
        extra_tensors: NO,
        changed_data: NO,
        llama_cpp_logits: Some(
            "without expert_weights_scale the experts' weights miss routed_scaling_factor \
             (reference.json sensitivity.routed_scaling_factor)",
        ),
    },
];

/// `general.*` keys llama.cpp derives from its own metadata heuristics (names from the directory,
/// parameter-count labels); coil writes `general.name` from the directory name.
fn general_key_ignored(k: &str) -> bool {
    k.starts_with("general.")
        && !matches!(k, "general.architecture" | "general.file_type" | "general.quantization_version")
}

fn fixture_dir(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hf").join(name);
    assert!(p.join("config.json").is_file(), "fixture {} is missing", p.display());
    p
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let d = std::env::temp_dir().join(format!("coil-convert-hybrids-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn convert_dir(dir: &Path, out: &Path, name: &str) -> coil_core::convert::ConvertReport {
    convert(dir, out, ConvertOptions { outtype: OutType::F32, name: Some(name.into()) }, &mut |_| true)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Metadata, tensor list and tensor data against llama.cpp's file.
fn compare_with_llama_cpp(fx: &Fixture, ours: &MappedGguf, theirs: &MappedGguf) {
    let (a, b) = (&ours.file, &theirs.file);
    let name = fx.name;
    let listed = |l: &[(&str, &str)], k: &str| l.iter().any(|(n, _)| *n == k);
    // Keys.
    let ka: BTreeMap<&str, &GgufValue> = a.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let kb: BTreeMap<&str, &GgufValue> = b.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    for (k, v) in &ka {
        if general_key_ignored(k) {
            continue;
        }
        match kb.get(k) {
            None => assert!(listed(fx.extra_keys, k), "{name}: coil writes {k} = {v:?}, llama.cpp does not"),
            Some(w) => {
                let same = v == w;
                if listed(fx.changed_keys, k) {
                    assert!(!same, "{name}: {k} is listed as different but is the same");
                } else {
                    assert!(same, "{name}: {k}: coil {v:?}, llama.cpp {w:?}");
                }
            }
        }
    }
    for (k, w) in &kb {
        if !general_key_ignored(k) {
            assert!(ka.contains_key(k), "{name}: llama.cpp writes {k} = {w:?}, coil does not");
        }
    }
    for (k, _) in fx.extra_keys {
        assert!(ka.contains_key(k) && !kb.contains_key(k), "{name}: {k} is listed as coil-only");
    }
    // Tensors.
    for t in &a.tensors {
        let Some(u) = b.tensor(&t.name) else {
            assert!(listed(fx.extra_tensors, &t.name), "{name}: coil writes tensor {}, llama.cpp does not", t.name);
            continue;
        };
        assert_eq!(t.dims, u.dims, "{name}: {} dims", t.name);
        assert_eq!(t.ggml_type, u.ggml_type, "{name}: {} type", t.name);
        assert_eq!(t.ggml_type, Some(GgmlType::F32));
        let (x, y) = (f32s(ours.tensor_data(t).unwrap()), f32s(theirs.tensor_data(u).unwrap()));
        // llama.cpp computes -exp(A_log) and the muP products in the checkpoint's dtype: allow one
        // f16 rounding.
        let close = x.iter().zip(&y).all(|(p, q)| (p - q).abs() <= 1e-3 * q.abs().max(1e-3));
        let changed = fx.changed_data.iter().any(|(s, _)| t.name.ends_with(s));
        if changed {
            assert!(!close, "{name}: {} is listed as written differently but is the same", t.name);
        } else {
            assert!(close, "{name}: the data of {} differ from llama.cpp's", t.name);
        }
    }
    for u in &b.tensors {
        assert!(a.tensor(&u.name).is_some(), "{name}: llama.cpp writes tensor {}, coil does not", u.name);
    }
}

/// The largest |logit − reference| / max(1, |reference|) over every prompt, each evaluated in one
/// batch from a fresh state with an f32 KV cache.
fn worst_deviation(path: &Path, r: &Value) -> f64 {
    let model = Arc::new(Model::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    let params =
        ContextParams { n_seq_max: 1, n_threads: 2, n_ubatch: 512, kv_type: KvType::F32, ..ContextParams::default() };
    let mut ctx = Context::new(model, params).unwrap();
    let mut worst = 0f64;
    for p in r["prompts"].as_array().unwrap() {
        let tokens: Vec<u32> = p["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        ctx.clear(0).unwrap();
        let logits = ctx.evaluate(&Batch::for_sequence(0, &tokens, true)).unwrap();
        let want = p["logits"].as_array().unwrap();
        assert_eq!(want.len(), tokens.len());
        for (t, row) in want.iter().enumerate() {
            let got = logits.row(t);
            let row = row.as_array().unwrap();
            assert_eq!(row.len(), got.len());
            for (g, w) in got.iter().zip(row) {
                let w = w.as_f64().unwrap();
                worst = worst.max((*g as f64 - w).abs() / w.abs().max(1.0));
            }
        }
    }
    worst
}

const TOL: f64 = 1e-4;

fn check(name: &str) {
    let fx = FIXTURES.iter().find(|f| f.name == name).unwrap();
    let dir = fixture_dir(name);
    let tmp = TempDir::new(name);
    let out = tmp.0.join("coil.gguf");
    let report = convert_dir(&dir, &out, name);
    assert_eq!(report.arch, fx.arch, "{name}");
    for w in &report.warnings {
        eprintln!("{name}: warning: {w}");
    }
    let ours = MappedGguf::open(&out).unwrap();

    // The transformers 4 spelling of the config gives the same file.
    if dir.join("config.legacy.json").is_file() {
        let copy = tmp.0.join(name);
        std::fs::create_dir_all(&copy).unwrap();
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let f = e.file_name().into_string().unwrap();
            if f == "config.json" || f.starts_with("llama.cpp") {
                continue;
            }
            let to = if f == "config.legacy.json" { "config.json".to_string() } else { f };
            std::fs::copy(e.path(), copy.join(to)).unwrap();
        }
        let legacy = tmp.0.join("legacy.gguf");
        convert_dir(&copy, &legacy, name);
        assert!(
            std::fs::read(&legacy).unwrap() == std::fs::read(&out).unwrap(),
            "{name}: config.legacy.json gives another file"
        );
    }

    let llama = dir.join("llama.cpp.gguf");
    let theirs = llama.is_file().then(|| MappedGguf::open(&llama).unwrap());
    if let Some(theirs) = &theirs {
        compare_with_llama_cpp(fx, &ours, theirs);
    }

    let r: Value = serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let d = worst_deviation(&out, &r);
    eprintln!("{name}: coil's file: max |logit - reference| / max(1, |reference|) = {d:.3e}");
    assert!(d <= TOL, "{name}: coil's file deviates by {d:e} > {TOL:e}");
    if theirs.is_some() {
        let d = worst_deviation(&llama, &r);
        eprintln!("{name}: llama.cpp.gguf: max deviation = {d:.3e}");
        match fx.llama_cpp_logits {
            None => assert!(d <= TOL, "{name}: llama.cpp.gguf deviates by {d:e} > {TOL:e}"),
            Some(why) => {
                assert!(d > TOL, "{name}: llama.cpp.gguf is listed as wrong ({why}) but deviates by only {d:e}")
            }
        }
    }
}

#[test]
fn granite_hybrid_moe() {
    check("granite-hybrid-moe");
}

#[test]
fn granite_hybrid_dense() {
    check("granite-hybrid-dense");
}

#[test]
fn bamba() {
    check("bamba");
}

#[test]
fn nemotron_h() {
    check("nemotron-h");
}

#[test]
fn nemotron_h_moe() {
    check("nemotron-h-moe");
}

#[test]
fn falcon_h1() {
    check("falcon-h1");
}

#[test]
fn falcon_h1_tied() {
    check("falcon-h1-tied");
}

#[test]
fn falcon_h1_norm_first() {
    check("falcon-h1-norm-first");
}

#[test]
fn lfm2() {
    check("lfm2");
}

#[test]
fn lfm2_moe() {
    check("lfm2-moe");
}

/// Copies a fixture (without llama.cpp's files) with its config changed by `edit`.
fn respelled(name: &str, tmp: &TempDir, tag: &str, edit: impl Fn(&mut serde_json::Map<String, Value>)) -> PathBuf {
    let dir = fixture_dir(name);
    let copy = tmp.0.join(tag).join(name);
    std::fs::create_dir_all(&copy).unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let f = e.file_name().into_string().unwrap();
        if !f.starts_with("llama.cpp") && !f.starts_with("config") {
            std::fs::copy(e.path(), copy.join(f)).unwrap();
        }
    }
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap().replace("Infinity", "null"))
            .unwrap();
    edit(cfg.as_object_mut().unwrap());
    std::fs::write(copy.join("config.json"), serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    copy
}

/// Every spelling of the layer kinds and renamed keys in use gives the same file.
#[test]
fn config_spellings() {
    type Edit = fn(&mut serde_json::Map<String, Value>);
    let cases: &[(&str, &str, Edit)] = &[
        ("granite-hybrid-moe", "attn_layer_indices", |c| {
            c.remove("layer_types");
            c.insert("attn_layer_indices".into(), serde_json::json!([1, 3]));
        }),
        ("granite-hybrid-moe", "attn_layer_period", |c| {
            c.remove("layer_types");
            c.insert("attn_layer_period".into(), 2.into());
            c.insert("attn_layer_offset".into(), 1.into());
        }),
        ("bamba", "layer_types", |c| {
            c.remove("attn_layer_indices");
            c.insert("layer_types".into(), serde_json::json!(["mamba", "mamba", "attention", "mamba"]));
        }),
        ("bamba", "layer_types (transformers 5)", |c| {
            c.remove("attn_layer_indices");
            c.insert(
                "layer_types".into(),
                serde_json::json!(["linear_attention", "linear_attention", "full_attention", "linear_attention"]),
            );
        }),
        ("nemotron-h", "legacy list", |c| {
            c.insert(
                "layers_block_type".into(),
                serde_json::json!(["mamba", "mlp", "attention", "mamba", "mlp", "mamba"]),
            );
        }),
        ("nemotron-h", "pattern in layers_block_type", |c| {
            c.insert("layers_block_type".into(), "M-*M-M".into());
        }),
        ("nemotron-h-moe", "hybrid_override_pattern", |c| {
            c.remove("layers_block_type");
            c.insert("hybrid_override_pattern".into(), "MEM*E".into());
            c.insert("num_hidden_layers".into(), 5.into());
        }),
        ("lfm2", "transformers 4 keys", |c| {
            let ff = c.remove("intermediate_size").unwrap();
            c.insert("block_ff_dim".into(), ff);
            let t = c.remove("tie_word_embeddings").unwrap();
            c.insert("tie_embedding".into(), t);
            c.remove("layer_types");
            c.insert("full_attn_idxs".into(), serde_json::json!([1, 4]));
        }),
    ];
    let tmp = TempDir::new("spellings");
    for (i, (name, what, edit)) in cases.iter().enumerate() {
        let want = tmp.0.join(format!("{i}-want.gguf"));
        convert_dir(&fixture_dir(name), &want, name);
        let dir = respelled(name, &tmp, &format!("{i}"), edit);
        let got = tmp.0.join(format!("{i}-got.gguf"));
        convert_dir(&dir, &got, name);
        assert!(std::fs::read(&got).unwrap() == std::fs::read(&want).unwrap(), "{name}: {what} gives another file");
    }
}

/// Every output type converts, loads in coil's runtime and computes finite logits (norms, conv
/// weights, A, D, biases and routers stay F32). The deviation from the reference is printed only:
/// these tiny random models amplify rounding a lot (a rounding can flip a router's choice).
#[test]
fn every_outtype_loads() {
    let tmp = TempDir::new("outtypes");
    for fx in FIXTURES {
        let dir = fixture_dir(fx.name);
        let r: Value = serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
        for ot in [OutType::F16, OutType::Bf16, OutType::Q8_0, OutType::Q4K] {
            let out = tmp.0.join(format!("{}-{}.gguf", fx.name, ot.name()));
            convert(&dir, &out, ConvertOptions { outtype: ot, name: None }, &mut |_| true)
                .unwrap_or_else(|e| panic!("{} {}: {e}", fx.name, ot.name()));
            let d = worst_deviation(&out, &r);
            eprintln!("{} {}: max deviation {d:.3e}", fx.name, ot.name());
            assert!(d.is_finite(), "{} {}: deviation {d:e}", fx.name, ot.name());
            std::fs::remove_file(&out).unwrap();
        }
    }
}
