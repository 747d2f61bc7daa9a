//! Which tensors `llama-quantize` quantizes, and to which type (`src/llama-quant.cpp`).
//!
//! What is reproduced, for the file types coil can write ([`QuantTarget`]):
//! * [`tensor_allows_quantization`]: only tensors with at least 2 dimensions (counted as ggml's
//!   `ggml_n_dims`, so trailing 1s do not count) whose name ends in `weight`, minus norms, MoE
//!   router (`ffn_gate_inp`), SSM conv, positional / token-type embeddings and a list of other
//!   small tensors.
//! * the default mixture (`llama_tensor_get_type_impl`) for those file types:
//!   - `output.weight`, and `token_embd.weight` when the model has no separate `output.weight`
//!     (tied embeddings), become **Q6_K** for every quantized target except Q8_0, or **Q8_0** when the
//!     row length is not a multiple of the target's block size (or the arch is `falcon`);
//!   - Q4_K_S / Q4_K_M / Q5_K_M give some `attn_v` / `ffn_down` tensors (and, with exactly 8
//!     experts, `attn_k` / `attn_output`) more bits; with exactly 8 experts `attn_v`/`attn_k` become
//!     Q8_0 for every target. These only touch attention and FFN tensors (Jamba), never Mamba's
//!     `ssm_*` tensors.
//!   - Not reproduced: the `LLM_TYPE_70B` bump of `attn_v` (llama-family 70B models only), and
//!     the rules of file types coil does not write (Q2_K, Q3_K, IQ*, MXFP4, TQ*).
//! * [`fallback_type`] (`tensor_type_fallback`): a row length that is not a multiple of the block
//!   size demotes Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0 (Q2_K/Q3_K -> Q4_0), then to F16 if even
//!   that does not fit. It applies after the mixture, also with `pure`.
//! * `--pure` ([`QuantOptions::pure`](super::QuantOptions)) skips the mixture.

use crate::error::{CoilError, ErrorCode, Result};
use crate::gguf::GgmlType;

/// A llama.cpp file type (`enum llama_ftype`) that coil can produce: a default tensor type plus
/// llama-quantize's mixture rules for it.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantTarget {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
}

impl QuantTarget {
    pub const ALL: [QuantTarget; 13] = [
        QuantTarget::F32,
        QuantTarget::F16,
        QuantTarget::BF16,
        QuantTarget::Q4_0,
        QuantTarget::Q4_1,
        QuantTarget::Q5_0,
        QuantTarget::Q5_1,
        QuantTarget::Q8_0,
        QuantTarget::Q4_K_S,
        QuantTarget::Q4_K_M,
        QuantTarget::Q5_K_S,
        QuantTarget::Q5_K_M,
        QuantTarget::Q6_K,
    ];

    /// llama.cpp's `LLAMA_FTYPE_*` number, written to `general.file_type`.
    pub fn ftype(self) -> u32 {
        use QuantTarget::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q8_0 => 7,
            Q5_0 => 8,
            Q5_1 => 9,
            Q4_K_S => 14,
            Q4_K_M => 15,
            Q5_K_S => 16,
            Q5_K_M => 17,
            Q6_K => 18,
            BF16 => 32,
        }
    }

    /// The tensor type most tensors get (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> GgmlType {
        use QuantTarget::*;
        match self {
            F32 => GgmlType::F32,
            F16 => GgmlType::F16,
            BF16 => GgmlType::BF16,
            Q4_0 => GgmlType::Q4_0,
            Q4_1 => GgmlType::Q4_1,
            Q5_0 => GgmlType::Q5_0,
            Q5_1 => GgmlType::Q5_1,
            Q8_0 => GgmlType::Q8_0,
            Q4_K_S | Q4_K_M => GgmlType::Q4_K,
            Q5_K_S | Q5_K_M => GgmlType::Q5_K,
            Q6_K => GgmlType::Q6_K,
        }
    }

    /// The name as llama-quantize spells it: "Q4_K_M", "Q8_0", "F16".
    pub fn name(self) -> &'static str {
        use QuantTarget::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            BF16 => "BF16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q4_K_S => "Q4_K_S",
            Q4_K_M => "Q4_K_M",
            Q5_K_S => "Q5_K_S",
            Q5_K_M => "Q5_K_M",
            Q6_K => "Q6_K",
        }
    }

    /// Parses a file type name, case-insensitively. A plain tensor type name is accepted too and
    /// means [`QuantTarget::from_type`] ("q4_k" -> Q4_K_S).
    pub fn from_name(s: &str) -> Option<QuantTarget> {
        QuantTarget::ALL
            .iter()
            .copied()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .or_else(|| GgmlType::from_name(s).and_then(QuantTarget::from_type))
    }

    /// The file type for a plain tensor type: each type's own file type, and for Q4_K / Q5_K the
    /// "small" variants Q4_K_S (14) / Q5_K_S (16), whose mixtures stay closest to the plain type
    /// (for Mamba models they are exactly "everything Q4_K / Q5_K, output Q6_K").
    pub fn from_type(t: GgmlType) -> Option<QuantTarget> {
        use QuantTarget::*;
        Some(match t {
            GgmlType::F32 => F32,
            GgmlType::F16 => F16,
            GgmlType::BF16 => BF16,
            GgmlType::Q4_0 => Q4_0,
            GgmlType::Q4_1 => Q4_1,
            GgmlType::Q5_0 => Q5_0,
            GgmlType::Q5_1 => Q5_1,
            GgmlType::Q8_0 => Q8_0,
            GgmlType::Q4_K => Q4_K_S,
            GgmlType::Q5_K => Q5_K_S,
            GgmlType::Q6_K => Q6_K,
            _ => return None,
        })
    }
}

impl std::fmt::Display for QuantTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The LLAMA_FTYPE number written to `general.file_type` when quantizing to plain type `t`
/// (Q4_K -> 14 "Q4_K_S", Q5_K -> 16 "Q5_K_S"); `None` for types that are not file types.
pub fn llama_ftype_for(t: GgmlType) -> Option<u32> {
    QuantTarget::from_type(t).map(QuantTarget::ftype)
}

/// ggml's `ggml_n_dims`: the number of dimensions up to the last one that is not 1 (at least 1).
pub fn ggml_n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d != 1).map(|i| i + 1).unwrap_or(1)
}

/// Why llama-quantize leaves a tensor as it is, or `None` if it may be quantized.
/// `n_dims` is counted as [`ggml_n_dims`] does.
pub fn quantization_blocker(name: &str, n_dims: usize) -> Option<&'static str> {
    if n_dims < 2 {
        return Some("fewer than 2 dimensions");
    }
    if !name.ends_with("weight") {
        return Some("name does not end in \"weight\"");
    }
    const CONTAINS: [(&str, &str); 35] = [
        ("_norm.weight", "normalization weights"),
        ("ffn_gate_inp.weight", "MoE router (ffn_gate_inp)"),
        ("ffn_gate_tid2eid.weight", "token-to-expert table"),
        ("altup", "small altup tensor"),
        ("laurel", "small laurel tensor"),
        ("per_layer_model_proj", "per-layer model projection"),
        ("ssm_conv1d", "SSM conv1d weights"),
        ("shortconv.conv.weight", "short conv weights"),
        ("indexer.k_proj.weight", "small indexer projection"),
        ("indexer.q_proj.weight", "small indexer projection"),
        ("time_mix_first.weight", "small RWKV tensor"),
        ("time_mix_w0.weight", "small RWKV tensor"),
        ("time_mix_w1.weight", "small RWKV tensor"),
        ("time_mix_w2.weight", "small RWKV tensor"),
        ("time_mix_v0.weight", "small RWKV tensor"),
        ("time_mix_v1.weight", "small RWKV tensor"),
        ("time_mix_v2.weight", "small RWKV tensor"),
        ("time_mix_a0.weight", "small RWKV tensor"),
        ("time_mix_a1.weight", "small RWKV tensor"),
        ("time_mix_a2.weight", "small RWKV tensor"),
        ("time_mix_g1.weight", "small RWKV tensor"),
        ("time_mix_g2.weight", "small RWKV tensor"),
        ("time_mix_decay_w1.weight", "small RWKV tensor"),
        ("time_mix_decay_w2.weight", "small RWKV tensor"),
        ("time_mix_lerp_fused.weight", "small RWKV tensor"),
        ("attn_rel_b.weight", "relative position bias"),
        (".position_embd", "multimodal position embeddings"),
        ("sam.pos_embd", "multimodal tensor"),
        ("sam.neck.", "multimodal tensor"),
        ("sam.net_", "multimodal tensor"),
        (".rel_pos", "multimodal tensor"),
        (".patch_embd", "multimodal tensor"),
        (".patch_merger", "multimodal tensor"),
        ("a.rvq.codebook", "audio codebook"),
        ("mm.a.code_embd", "audio codebook"),
    ];
    for (pat, why) in CONTAINS.iter() {
        if name.contains(pat) {
            return Some(why);
        }
    }
    if name == "position_embd.weight" {
        return Some("positional embeddings");
    }
    if name == "token_types.weight" {
        return Some("token type embeddings");
    }
    None
}

/// llama-quantize's `tensor_allows_quantization` (with default parameters): whether a tensor
/// named `name` with `n_dims` dimensions (as [`ggml_n_dims`] counts them) may be quantized.
pub fn tensor_allows_quantization(name: &str, n_dims: usize) -> bool {
    quantization_blocker(name, n_dims).is_none()
}

/// llama-quantize's `tensor_type_fallback`: the type a tensor whose rows are `row_len` long gets
/// when `target` is wanted. `target` itself when `row_len` is a multiple of its block size; else
/// Q2_K/Q3_K/TQ1_0/TQ2_0 -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, IQ* (256) -> IQ4_NL, and
/// F16 when that does not fit either (or for a 32-block target). llama-quantize refuses targets
/// with no fallback (Q8_K); this returns F16 for them.
pub fn fallback_type(target: GgmlType, row_len: u64) -> GgmlType {
    let bs = target.block_size();
    if row_len.is_multiple_of(bs) {
        return target;
    }
    use GgmlType::*;
    let t = match target {
        IQ1_S | IQ1_M | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ4_XS => IQ4_NL,
        Q2_K | Q3_K | TQ1_0 | TQ2_0 => Q4_0,
        Q4_K => Q5_0,
        Q5_K => Q5_1,
        Q6_K => Q8_0,
        t if t.block_size() <= 32 => t,
        _ => F16,
    };
    if row_len.is_multiple_of(t.block_size()) {
        t
    } else {
        F16
    }
}

/// Tensor categories of `tensor_get_category` (llama-quant.cpp), matched on the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

pub(crate) fn category(name: &str) -> Category {
    use Category::*;
    if name == "output.weight" {
        Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        TokenEmbd
    } else if name.contains("attn_qkv.weight") {
        AttnQkv
    } else if name.contains("attn_kv_b.weight") {
        AttnKvB
    } else if name.contains("attn_v.weight") {
        AttnV
    } else if name.contains("attn_k.weight") {
        AttnK
    } else if name.contains("attn_q.weight") {
        AttnQ
    } else if name.contains("attn_output.weight") {
        AttnOutput
    } else if name.contains("ffn_up") {
        FfnUp
    } else if name.contains("ffn_gate") {
        FfnGate
    } else if name.contains("ffn_down") {
        FfnDown
    } else {
        Other
    }
}

/// `sscanf(name, "blk.%d.", &layer)`: the layer number after a leading `blk.`.
pub(crate) fn blk_layer(name: &str) -> Option<i64> {
    let rest = name.strip_prefix("blk.")?;
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\u{b}', '\u{c}', '\r']);
    let (neg, digits) = match rest.as_bytes().first() {
        Some(b'-') => (true, &rest[1..]),
        Some(b'+') => (false, &rest[1..]),
        _ => (false, rest),
    };
    let n = digits.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 {
        return None;
    }
    let v = digits[..n].parse::<i64>().unwrap_or(i64::MAX);
    Some(if neg { -v } else { v })
}

/// Orders tensors as llama.cpp's model loader does (`weight_name_comparer`), which is the order
/// llama-quantize writes them in: by the `blk.N.` layer number (tensors outside layers first),
/// then by name.
pub(crate) fn llama_tensor_order(a: &str, b: &str) -> std::cmp::Ordering {
    let la = blk_layer(a).unwrap_or(-1);
    let lb = blk_layer(b).unwrap_or(-1);
    la.cmp(&lb).then_with(|| a.cmp(b))
}

/// Model facts the mixture rules look at.
#[derive(Debug, Clone, Default)]
pub(crate) struct ModelFacts {
    pub arch: String,
    /// `{arch}.block_count`.
    pub n_layer: i64,
    /// `{arch}.expert_count` (0 when absent).
    pub n_expert: i64,
    /// No tensor is named `output.weight`.
    pub tied_embeddings: bool,
    /// Number of attn_v-like tensors (`attn_v`, `attn_qkv`, `attn_kv_b`).
    pub n_attention_wv: i64,
}

/// The mutable counters of `quantize_state_impl`.
#[derive(Debug, Default)]
pub(crate) struct MixState {
    i_attention_wv: i64,
    i_ffn_down: i64,
    i_ffn_gate: i64,
    i_ffn_up: i64,
}

fn use_more_bits(i_layer: i64, n_layers: i64) -> bool {
    i_layer < n_layers / 8 || i_layer >= 7 * n_layers / 8 || (i_layer - n_layers / 8) % 3 == 2
}

fn layer_info(facts: &ModelFacts, counter: i64, name: &str) -> Result<(i64, i64)> {
    let n_layer = facts.n_layer;
    if facts.n_expert.max(1) > 1 {
        let i = blk_layer(name).ok_or_else(|| {
            CoilError::new(ErrorCode::InvalidArgument, format!("Failed to determine layer for tensor {name}"))
        })?;
        if i < 0 || i >= n_layer {
            return Err(CoilError::new(
                ErrorCode::InvalidArgument,
                format!("Bad layer {i} for tensor {name}. Must be in [0, {n_layer})"),
            ));
        }
        return Ok((i, n_layer));
    }
    Ok((counter, n_layer))
}

/// `llama_tensor_get_type_impl` for the file types of [`QuantTarget`]: the type the default
/// mixture picks for a quantizable tensor, and the rule that picked it when it is not `default`.
/// Must be called for the quantizable tensors in [`llama_tensor_order`] (the counters depend on
/// it).
pub(crate) fn mixture_type(
    target: QuantTarget,
    facts: &ModelFacts,
    st: &mut MixState,
    name: &str,
    row_len: u64,
) -> Result<(GgmlType, Option<&'static str>)> {
    use Category::*;
    use QuantTarget as F;
    let default = target.default_type();
    let mut t = default;
    let mut why = None;
    let falcon = facts.arch == "falcon";
    let cat = category(name);
    let mut set = |nt: GgmlType, w: &'static str| {
        t = nt;
        why = Some(w);
    };
    if cat == Output || (facts.tied_embeddings && cat == TokenEmbd) {
        if falcon || !row_len.is_multiple_of(default.block_size()) {
            set(GgmlType::Q8_0, "output / tied embedding tensor with an unusual row length -> Q8_0");
        } else if default != GgmlType::Q8_0 {
            set(GgmlType::Q6_K, "output (or tied token embedding) tensor -> Q6_K");
        }
    } else if cat == TokenEmbd {
        // No rule for coil's file types.
    } else if matches!(cat, AttnV | AttnQkv | AttnKvB) {
        if matches!(target, F::Q4_K_M | F::Q5_K_M) && use_more_bits(st.i_attention_wv, facts.n_attention_wv) {
            set(GgmlType::Q6_K, "attn_v of a Q4_K_M/Q5_K_M file in a more-bits layer -> Q6_K");
        } else if target == F::Q4_K_S && st.i_attention_wv < 4 {
            set(GgmlType::Q5_K, "one of the first 4 attn_v tensors of a Q4_K_S file -> Q5_K");
        }
        if facts.n_expert == 8 {
            set(GgmlType::Q8_0, "attn_v of an 8-expert model -> Q8_0");
        }
        st.i_attention_wv += 1;
    } else if cat == AttnK {
        if facts.n_expert == 8 {
            set(GgmlType::Q8_0, "attn_k of an 8-expert model -> Q8_0");
        }
    } else if cat == AttnQ {
        // No rule for coil's file types.
    } else if cat == FfnDown {
        let (i_layer, n_layer) = layer_info(facts, st.i_ffn_down, name)?;
        if target == F::Q4_K_M {
            if falcon {
                if i_layer < n_layer / 16 {
                    set(GgmlType::Q6_K, "ffn_down of a Q4_K_M falcon in the first 1/16 layers -> Q6_K");
                } else if use_more_bits(i_layer, n_layer) {
                    set(GgmlType::Q5_K, "ffn_down of a Q4_K_M falcon in a more-bits layer -> Q5_K");
                }
            } else if use_more_bits(i_layer, n_layer) {
                set(GgmlType::Q6_K, "ffn_down of a Q4_K_M file in a more-bits layer -> Q6_K");
            }
        } else if target == F::Q5_K_M && use_more_bits(i_layer, n_layer) {
            set(GgmlType::Q6_K, "ffn_down of a Q5_K_M file in a more-bits layer -> Q6_K");
        } else if target == F::Q4_K_S && !falcon && i_layer < n_layer / 8 {
            set(GgmlType::Q5_K, "ffn_down of a Q4_K_S file in the first 1/8 layers -> Q5_K");
        }
        st.i_ffn_down += 1;
    } else if cat == AttnOutput {
        if !falcon && facts.n_expert == 8 && matches!(target, F::Q4_K_S | F::Q4_K_M) {
            set(GgmlType::Q5_K, "attn_output of an 8-expert model -> Q5_K");
        }
    } else if cat == FfnGate {
        layer_info(facts, st.i_ffn_gate, name)?;
        st.i_ffn_gate += 1;
    } else if cat == FfnUp {
        layer_info(facts, st.i_ffn_up, name)?;
        st.i_ffn_up += 1;
    }
    Ok((t, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_quantization_like_llama_quantize() {
        assert!(tensor_allows_quantization("blk.0.ssm_in.weight", 2));
        assert!(tensor_allows_quantization("token_embd.weight", 2));
        assert!(tensor_allows_quantization("blk.3.ffn_down_exps.weight", 3));
        assert!(!tensor_allows_quantization("blk.0.ssm_in.weight", 1));
        assert!(!tensor_allows_quantization("blk.0.attn_norm.weight", 2));
        assert!(!tensor_allows_quantization("blk.0.ssm_conv1d.weight", 2));
        assert!(!tensor_allows_quantization("blk.1.ffn_gate_inp.weight", 2));
        assert!(!tensor_allows_quantization("blk.0.ssm_a", 2));
        assert!(!tensor_allows_quantization("blk.0.ssm_dt.bias", 2));
        assert!(!tensor_allows_quantization("position_embd.weight", 2));
        assert!(tensor_allows_quantization("xposition_embd.weight", 2));
        assert!(tensor_allows_quantization("blk.0.ssm_x_weight", 2)); // ends with "weight"
        assert_eq!(ggml_n_dims(&[64, 1]), 1);
        assert_eq!(ggml_n_dims(&[1, 8]), 2);
        assert_eq!(ggml_n_dims(&[]), 1);
    }

    #[test]
    fn fallbacks() {
        assert_eq!(fallback_type(GgmlType::Q4_K, 256), GgmlType::Q4_K);
        assert_eq!(fallback_type(GgmlType::Q4_K, 48), GgmlType::F16);
        assert_eq!(fallback_type(GgmlType::Q4_K, 64), GgmlType::Q5_0);
        assert_eq!(fallback_type(GgmlType::Q5_K, 96), GgmlType::Q5_1);
        assert_eq!(fallback_type(GgmlType::Q6_K, 4), GgmlType::F16);
        assert_eq!(fallback_type(GgmlType::Q6_K, 128), GgmlType::Q8_0);
        assert_eq!(fallback_type(GgmlType::Q3_K, 32), GgmlType::Q4_0);
        assert_eq!(fallback_type(GgmlType::IQ2_XS, 32), GgmlType::IQ4_NL);
        assert_eq!(fallback_type(GgmlType::Q8_0, 48), GgmlType::F16);
        assert_eq!(fallback_type(GgmlType::F16, 3), GgmlType::F16);
        assert_eq!(fallback_type(GgmlType::Q8_K, 128), GgmlType::F16);
    }

    #[test]
    fn loader_order() {
        let mut v = vec!["blk.10.a", "output.weight", "blk.2.b", "blk.2.a", "token_embd.weight", "blk.x"];
        v.sort_by(|a, b| llama_tensor_order(a, b));
        assert_eq!(v, ["blk.x", "output.weight", "token_embd.weight", "blk.2.a", "blk.2.b", "blk.10.a"]);
        assert_eq!(blk_layer("blk. -3.x"), Some(-3));
        assert_eq!(blk_layer("blk.7"), Some(7));
    }

    #[test]
    fn names_and_ftypes() {
        assert_eq!(llama_ftype_for(GgmlType::Q4_K), Some(14));
        assert_eq!(llama_ftype_for(GgmlType::Q8_0), Some(7));
        assert_eq!(llama_ftype_for(GgmlType::Q8_K), None);
        assert_eq!(QuantTarget::from_name("q4_k_m"), Some(QuantTarget::Q4_K_M));
        assert_eq!(QuantTarget::from_name("q5_k"), Some(QuantTarget::Q5_K_S));
        for t in QuantTarget::ALL {
            assert_eq!(QuantTarget::from_name(t.name()), Some(t));
        }
    }
}
