//! inspect_json: value printing, array summaries, and the summary's derived fields.

use coil_core::gguf::inspect::{inspect_json, recurrent_state_bytes_per_sequence, InspectOptions};
use coil_core::gguf::{GgmlType, GgufArray, GgufFile, GgufValue, GgufWriter};
use serde_json::{json, Value};

fn build(f: impl FnOnce(&mut GgufWriter)) -> GgufFile {
    let mut w = GgufWriter::new();
    f(&mut w);
    let b = w.to_bytes().unwrap();
    GgufFile::parse(&b, b.len() as u64).unwrap()
}

fn inspect(f: &GgufFile, head: Option<usize>) -> (String, Value) {
    let s = inspect_json(f, &InspectOptions { array_head: head });
    let v = serde_json::from_str(&s).unwrap_or_else(|e| panic!("{e}: {s}"));
    (s, v)
}

#[test]
fn floats_print_shortest_and_specials_as_strings() {
    let f = build(|w| {
        w.add_metadata("a", GgufValue::F32(0.1));
        w.add_metadata("b", GgufValue::F32(1e-5));
        w.add_metadata("c", GgufValue::F32(f32::NAN));
        w.add_metadata("d", GgufValue::F32(f32::INFINITY));
        w.add_metadata("e", GgufValue::F64(f64::NEG_INFINITY));
        w.add_metadata("f", GgufValue::F32(3.0));
        w.add_metadata("g", GgufValue::F32(f32::MAX));
        w.add_metadata("h", GgufValue::F64(0.1));
        w.add_metadata("i", GgufValue::from(vec![0.5f32, f32::NAN, -0.0, 1e-45]));
        w.add_metadata("j", GgufValue::F32(16777216.0));
    });
    let (s, v) = inspect(&f, None);
    assert!(s.contains("\"a\":0.1,"), "{s}");
    assert!(s.contains("\"b\":1e-5,"), "{s}");
    assert!(s.contains("\"f\":3.0,"), "{s}");
    assert_eq!(v["c"], Value::Null); // (top level has no such key)
    let md = &v["metadata"];
    assert_eq!(md["c"], "NaN");
    assert_eq!(md["d"], "Infinity");
    assert_eq!(md["e"], "-Infinity");
    assert_eq!(md["g"].as_f64().unwrap() as f32, f32::MAX);
    assert_eq!(md["h"], json!(0.1));
    assert!(s.contains("\"i\":[0.5,\"NaN\",-0.0,1e-45]"), "{s}");
    assert_eq!(md["i"][3].as_f64().unwrap() as f32, 1e-45f32);
    assert_eq!(md["j"], json!(16777216.0));
    assert_eq!(v["metadata_types"]["i"], "array<f32>");
}

#[test]
fn integers_bools_and_strings() {
    let f = build(|w| {
        w.add_metadata("u64", GgufValue::U64(u64::MAX));
        w.add_metadata("i64", GgufValue::I64(i64::MIN));
        w.add_metadata("i8", GgufValue::I8(-5));
        w.add_metadata("b", GgufValue::Bool(false));
        w.add_metadata("s", GgufValue::from("q\"u\\o\nte\t\u{1}\u{7f}é\u{2028}"));
        w.add_metadata("k\"ey\n", GgufValue::U8(1));
    });
    let (s, v) = inspect(&f, None);
    assert!(s.contains("\"u64\":18446744073709551615"), "{s}");
    assert!(s.contains("\"i64\":-9223372036854775808"), "{s}");
    let md = &v["metadata"];
    assert_eq!(md["i8"], -5);
    assert_eq!(md["b"], false);
    assert_eq!(md["s"], "q\"u\\o\nte\t\u{1}\u{7f}é\u{2028}");
    assert_eq!(md["k\"ey\n"], 1);
    assert_eq!(v["metadata_types"]["u64"], "u64");
    assert_eq!(v["metadata_types"]["b"], "bool");
    assert_eq!(v["metadata_types"]["s"], "string");
}

#[test]
fn array_heads() {
    let long: Vec<String> = (0..40).map(|i| format!("t{i}")).collect();
    let f = build(|w| {
        w.add_metadata("long", GgufValue::Array(GgufArray::String(long.clone())));
        w.add_metadata("short", GgufValue::from(vec![1u32, 2, 3]));
        w.add_metadata("exact", GgufValue::from(vec![0u8; 16]));
        w.add_metadata(
            "nested",
            GgufValue::Array(GgufArray::Array(vec![GgufArray::I32((0..20).collect()), GgufArray::I32(vec![7])])),
        );
    });
    let (_, v) = inspect(&f, Some(16));
    let md = &v["metadata"];
    assert_eq!(md["long"]["type"], "array<string>");
    assert_eq!(md["long"]["length"], 40);
    assert_eq!(md["long"]["head"], json!(long[..16]));
    assert_eq!(md["short"], json!([1, 2, 3]));
    assert_eq!(md["exact"].as_array().unwrap().len(), 16);
    assert_eq!(md["nested"][0]["length"], 20);
    assert_eq!(md["nested"][0]["type"], "array<i32>");
    assert_eq!(md["nested"][1], json!([7]));
    assert_eq!(v["metadata_types"]["nested"], "array<array<i32>>");
    let (_, v) = inspect(&f, Some(0));
    assert_eq!(v["metadata"]["short"], json!({"type":"array<u32>","length":3,"head":[]}));
    let (_, v) = inspect(&f, None);
    assert_eq!(v["metadata"]["long"].as_array().unwrap().len(), 40);
    assert_eq!(v["metadata"]["nested"][0].as_array().unwrap().len(), 20);
}

#[test]
fn tensors_and_unknown_types() {
    let f = build(|w| {
        w.add_metadata("general.architecture", GgufValue::from("llama"));
        w.add_tensor("a", vec![256, 2], GgmlType::Q4_K.id(), vec![0; 288]).unwrap();
        w.add_tensor("b", vec![3], 77, vec![0; 9]).unwrap();
        w.add_tensor("c", vec![4], GgmlType::F32.id(), vec![0; 16]).unwrap();
        w.add_tensor("d", vec![5], 4, vec![0; 3]).unwrap();
        w.add_tensor("e", vec![6], 77, vec![0; 3]).unwrap();
    });
    let (_, v) = inspect(&f, None);
    let t = v["tensors"].as_array().unwrap();
    assert_eq!(t[0], json!({"name":"a","type":"Q4_K","type_id":12,"shape":[256,2],"offset":0,"bytes":288}));
    assert_eq!(t[1], json!({"name":"b","type":"UNKNOWN(77)","type_id":77,"shape":[3],"offset":288,"bytes":null}));
    let s = &v["summary"];
    assert_eq!(s["architecture"], "llama");
    assert_eq!(s["name"], Value::Null);
    assert_eq!(s["parameters"], 512 + 3 + 4 + 5 + 6);
    assert_eq!(s["tensor_bytes"], 288 + 16);
    // over the tensors of known size only: 304 bytes for 516 elements, to 4 decimals
    assert_eq!(s["bits_per_weight"], json!(4.7132));
    assert_eq!(s["tensor_types"], json!({"F32":1,"UNKNOWN(4)":1,"Q4_K":1,"UNKNOWN(77)":2}));
    assert_eq!(s["unknown_type_ids"], json!([4, 77]));
    assert_eq!(s["tokenizer"], Value::Null);
    assert_eq!(s["layers"], json!([]));
    assert_eq!(s["ssm"], Value::Null);
    assert_eq!(s["recurrent_state_bytes_per_sequence"], Value::Null);
    // tensor_types are listed in type-id order
    let (raw, _) = inspect(&f, None);
    let raw = &raw[raw.find("\"tensor_types\"").unwrap()..];
    let order: Vec<usize> =
        ["\"F32\":1", "\"UNKNOWN(4)\"", "\"Q4_K\"", "\"UNKNOWN(77)\""].iter().map(|k| raw.find(k).unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{raw}");
}

#[test]
fn jamba_layer_kinds_from_scalar_or_missing_head_count_kv() {
    let jamba = |kv: Option<GgufValue>, with_ffn: bool| {
        build(|w| {
            w.add_metadata("general.architecture", GgufValue::from("jamba"));
            w.add_metadata("jamba.block_count", GgufValue::U32(2));
            w.add_metadata("jamba.attention.head_count", GgufValue::U32(4));
            if let Some(kv) = kv {
                w.add_metadata("jamba.attention.head_count_kv", kv);
            }
            w.add_metadata("jamba.ssm.conv_kernel", GgufValue::U32(4));
            w.add_metadata("jamba.ssm.inner_size", GgufValue::U32(8));
            w.add_metadata("jamba.ssm.state_size", GgufValue::U32(2));
            w.add_metadata("jamba.ssm.time_step_rank", GgufValue::U32(1));
            w.add_metadata("jamba.embedding_length", GgufValue::U32(4));
            w.add_metadata("jamba.feed_forward_length", GgufValue::U32(8));
            w.add_metadata("jamba.expert_count", GgufValue::U32(2));
            w.add_metadata("jamba.expert_used_count", GgufValue::U32(1));
            w.add_metadata("jamba.attention.layer_norm_rms_epsilon", GgufValue::F32(1e-6));
            if with_ffn {
                w.add_tensor("blk.0.ffn_down.weight", vec![1], 0, vec![0; 4]).unwrap();
                w.add_tensor("blk.1.ffn_gate_inp.weight", vec![1], 0, vec![0; 4]).unwrap();
            }
        })
    };
    let (_, v) = inspect(&jamba(Some(GgufValue::U32(0)), true), None);
    assert_eq!(
        v["summary"]["layers"],
        json!([{"index":0,"kind":"ssm","ffn":"dense"},{"index":1,"kind":"ssm","ffn":"moe"}])
    );
    assert_eq!(v["summary"]["recurrent_state_bytes_per_sequence"], 2 * (3 * 8 + 2 * 8) * 4);
    // without head_count_kv llama.cpp falls back to head_count: all attention, no recurrent state
    let f = jamba(None, false);
    let (_, v) = inspect(&f, None);
    assert_eq!(
        v["summary"]["layers"],
        json!([{"index":0,"kind":"attention","ffn":"none"},{"index":1,"kind":"attention","ffn":"none"}])
    );
    assert_eq!(recurrent_state_bytes_per_sequence(&f), Some(0));
    // an array shorter than block_count: the engine refuses the file, so no layout is claimed
    let (_, v) = inspect(&jamba(Some(GgufValue::from(vec![3u32])), false), None);
    assert_eq!(v["summary"]["layers"], json!([]));
    assert_eq!(v["summary"]["recurrent_state_bytes_per_sequence"], Value::Null);
}

#[test]
fn recurrent_state_needs_the_hyperparameters() {
    let f = build(|w| {
        w.add_metadata("general.architecture", GgufValue::from("mamba"));
        w.add_metadata("mamba.block_count", GgufValue::U32(3));
        w.add_metadata("mamba.ssm.inner_size", GgufValue::U32(8));
    });
    // The layout and state come from the hyperparameters the engine reads: none without them.
    let (_, v) = inspect(&f, None);
    assert_eq!(v["summary"]["layers"], json!([]));
    assert_eq!(v["summary"]["recurrent_state_bytes_per_sequence"], Value::Null);
    assert_eq!(v["summary"]["ssm"], json!({"d_conv":null,"d_inner":8,"d_state":null,"dt_rank":null,"n_group":null}));
    // absurd values do not overflow, they give null
    let f = build(|w| {
        w.add_metadata("general.architecture", GgufValue::from("mamba2"));
        w.add_metadata("mamba2.block_count", GgufValue::U64(1 << 40));
        w.add_metadata("mamba2.ssm.conv_kernel", GgufValue::U64(u64::MAX));
        w.add_metadata("mamba2.ssm.inner_size", GgufValue::U64(u64::MAX));
        w.add_metadata("mamba2.ssm.state_size", GgufValue::U64(u64::MAX));
    });
    let (_, v) = inspect(&f, None);
    assert_eq!(v["summary"]["layers"], json!([]));
    assert_eq!(v["summary"]["recurrent_state_bytes_per_sequence"], Value::Null);
    assert_eq!(v["summary"]["block_count"], 1u64 << 40);
}
