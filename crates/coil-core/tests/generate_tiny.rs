//! The generation step on real models: `tests/fixtures/models/tiny-mamba.gguf` (random weights,
//! a 256-token byte-level vocabulary, bos = eos = 0) and the converted HF fixture `mamba`.
//! Greedy determinism (and agreement with a hand-written evaluate/argmax loop), max_tokens, stop
//! strings taken from the greedy output, EOS, ignore_eos, text hold-back and flushing, the
//! position contract, misuse errors, and golden ids of a seeded run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use coil_core::context::{Batch, Context, ContextParams};
use coil_core::generate::{GenerateParams, Generator, Step, StopReason};
use coil_core::model::Model;
use coil_core::sampling::SamplerConfig;
use coil_core::ErrorCode;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The fixture as it is (a 256-token byte-level vocabulary with no merges; bos = eos = 0).
fn tiny() -> Arc<Model> {
    Arc::new(Model::open(&root().join("tests/fixtures/models/tiny-mamba.gguf")).unwrap())
}

/// The fixture without any tokenizer metadata: ids only.
fn tiny_without_tokenizer() -> Arc<Model> {
    use coil_core::gguf::{GgufFile, GgufWriter};
    let bytes = std::fs::read(root().join("tests/fixtures/models/tiny-mamba.gguf")).unwrap();
    let mut file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
    file.metadata.retain(|(k, _)| !k.starts_with("tokenizer."));
    let w = GgufWriter::from_file(&file, &bytes).unwrap();
    Arc::new(Model::from_gguf_bytes(&w.to_bytes().unwrap()).unwrap())
}

/// The fixture with a tokenizer that loads: token 127 (byte 0x7F) is replaced by "ĠĠ" (two
/// spaces) and given the merge "Ġ Ġ". Every other token i is still byte i; bos = eos = 0.
fn tiny_tok() -> Arc<Model> {
    use coil_core::gguf::{GgufArray, GgufFile, GgufValue, GgufWriter};
    let bytes = std::fs::read(root().join("tests/fixtures/models/tiny-mamba.gguf")).unwrap();
    let file = GgufFile::parse(&bytes, bytes.len() as u64).unwrap();
    let mut tokens: Vec<String> = match file.get("tokenizer.ggml.tokens") {
        Some(GgufValue::Array(GgufArray::String(t))) => t.clone(),
        other => panic!("tokens: {other:?}"),
    };
    tokens[127] = "\u{120}\u{120}".into();
    let mut w = GgufWriter::from_file(&file, &bytes).unwrap();
    w.add_metadata("tokenizer.ggml.tokens", GgufValue::Array(GgufArray::String(tokens)));
    w.add_metadata("tokenizer.ggml.merges", GgufValue::Array(GgufArray::String(vec!["\u{120} \u{120}".into()])));
    let m = Model::from_gguf_bytes(&w.to_bytes().unwrap()).unwrap();
    m.tokenizer().expect("the patched tokenizer loads");
    Arc::new(m)
}

fn context(m: &Arc<Model>) -> Context {
    Context::new(m.clone(), ContextParams { n_seq_max: 2, n_threads: 1, n_ubatch: 0, ..ContextParams::default() })
        .unwrap()
}

fn params(json: &str) -> GenerateParams {
    GenerateParams::from_json(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

/// Steps until a stop; returns the steps.
fn run(gen: &mut Generator, ctx: &mut Context, seq: u32, prompt: &[u32]) -> Vec<Step> {
    let mut steps = vec![gen.step(ctx, seq, prompt).unwrap()];
    while steps.last().unwrap().stop.is_none() {
        let t = steps.last().unwrap().token;
        steps.push(gen.step(ctx, seq, &[t]).unwrap());
        assert!(steps.len() < 10_000);
    }
    steps
}

fn tokens(steps: &[Step]) -> Vec<u32> {
    steps.iter().map(|s| s.token).collect()
}

fn joined(steps: &[Step]) -> String {
    steps.iter().map(|s| s.text.as_str()).collect()
}

const HELLO: [u32; 5] = [72, 101, 108, 108, 111]; // "Hello", one byte per token

#[test]
fn prompt_tokenizes_to_bytes() {
    let m = tiny_tok();
    assert_eq!(m.tokenize("Hello", Some(false), false).unwrap(), HELLO);
    assert!(m.tokenizer().unwrap().is_eog(0));
}

/// Greedy generation equals evaluate + argmax by hand, is the same on another sequence and in a
/// second run, and its text is the bytes of the tokens.
#[test]
fn greedy_matches_manual_loop_and_is_deterministic() {
    let m = tiny_tok();
    let mut ctx = context(&m);
    let p = params(r#"{"sampler":{"temperature":0},"maxTokens":32}"#);
    let mut gen = Generator::new(m.clone(), p.clone()).unwrap();
    let steps = run(&mut gen, &mut ctx, 0, &HELLO);
    let toks = tokens(&steps);
    assert_eq!(gen.generated(), &toks[..]);

    // By hand.
    let mut ctx2 = context(&m);
    let mut want = Vec::new();
    let mut feed = HELLO.to_vec();
    loop {
        let l = ctx2.evaluate(&Batch::for_sequence(1, &feed, false)).unwrap();
        let row = l.row(0);
        let mut best = 0;
        for (i, &x) in row.iter().enumerate() {
            if x > row[best] {
                best = i;
            }
        }
        want.push(best as u32);
        if best == 0 || want.len() == 32 {
            break;
        }
        feed = vec![best as u32];
    }
    assert_eq!(toks, want);
    let last = steps.last().unwrap().stop.unwrap();
    assert_eq!(last, if *want.last().unwrap() == 0 { StopReason::Eos } else { StopReason::MaxTokens });

    // Again, on sequence 1 of the first context, and in a new generator.
    let mut gen2 = Generator::new(m.clone(), p).unwrap();
    assert_eq!(tokens(&run(&mut gen2, &mut ctx, 1, &HELLO)), toks);

    // The text: the tokens' pieces (byte i for token i, but "  " for 127), an EOS contributing
    // nothing.
    let tok = m.tokenizer().unwrap();
    let bytes: Vec<u8> =
        toks.iter().filter(|&&t| t != 0).flat_map(|&t| tok.token_to_piece(t, false).unwrap()).collect();
    assert_eq!(joined(&steps), String::from_utf8_lossy(&bytes));
    assert_eq!(gen.text(), joined(&steps));
    eprintln!("greedy: {toks:?} {:?}", gen.text());
}

/// max_tokens stops with MaxTokens after exactly that many tokens, and the position contract:
/// the sequence holds the prompt and every token but the last.
#[test]
fn max_tokens_and_position_contract() {
    let m = tiny_tok();
    let mut ctx = context(&m);
    // The sequence already holds 3 tokens: the prompt continues it.
    ctx.evaluate(&Batch::for_sequence(0, &[10, 20, 30], false)).unwrap();
    let mut gen =
        Generator::new(m.clone(), params(r#"{"sampler":{"seed":3},"maxTokens":7,"ignoreEos":true}"#)).unwrap();
    assert_eq!(gen.pending_token(), None);
    let s1 = gen.step(&mut ctx, 0, &HELLO).unwrap();
    assert_eq!(gen.start_position(), Some(3));
    assert_eq!(ctx.position(0).unwrap(), 3 + 5);
    assert_eq!(gen.pending_token(), Some(s1.token));
    assert_eq!(gen.n_fed(), 5);
    let mut steps = vec![s1];
    while steps.last().unwrap().stop.is_none() {
        // `&[]` feeds the pending token, the same as passing it.
        let feed: Vec<u32> = if steps.len() % 2 == 0 { vec![] } else { vec![steps.last().unwrap().token] };
        steps.push(gen.step(&mut ctx, 0, &feed).unwrap());
        assert_eq!(ctx.position(0).unwrap() as usize, 3 + 5 + steps.len() - 1);
        assert_eq!(gen.position(), Some(ctx.position(0).unwrap() as u64));
    }
    assert_eq!(steps.len(), 7);
    assert_eq!(steps.last().unwrap().stop, Some(StopReason::MaxTokens));
    assert!(steps[..6].iter().all(|s| s.stop.is_none()));
    assert_eq!(gen.stop_reason(), Some(StopReason::MaxTokens));
    assert!(gen.is_finished());
    assert_eq!(gen.generated().len(), 7);
    // The last token is pending: not in the state.
    assert_eq!(ctx.position(0).unwrap(), 3 + 5 + 6);
    assert_eq!(gen.n_fed(), 5 + 6);
    assert_eq!(gen.history(), &[&HELLO[..], &tokens(&steps)[..6]].concat()[..]);
    let pending = gen.pending_token().unwrap();
    assert_eq!(pending, steps[6].token);
    // No more steps.
    assert_eq!(gen.step(&mut ctx, 0, &[pending]).unwrap_err().code, ErrorCode::InvalidArgument);
    // The caller may feed it to have the state include it.
    ctx.evaluate(&Batch::for_sequence(0, &[pending], false)).unwrap();
    assert_eq!(ctx.position(0).unwrap(), 3 + 5 + 7);
}

/// Greedy with strong repetition penalties: plain greedy repeats one token forever on this
/// random model, this walks through many.
const PENALIZED_GREEDY: &str =
    r#"{"temperature":0,"repeatPenalty":1.5,"frequencyPenalty":1.0,"presencePenalty":2.0,"penaltyLastN":-1}"#;

/// The penalized greedy output with ignore_eos, for the stop-string tests.
fn greedy_text(m: &Arc<Model>, n: u32) -> (Vec<u32>, String) {
    let mut ctx = context(m);
    let mut gen = Generator::new(
        m.clone(),
        params(&format!(r#"{{"sampler":{PENALIZED_GREEDY},"maxTokens":{n},"ignoreEos":true}}"#)),
    )
    .unwrap();
    let steps = run(&mut gen, &mut ctx, 0, &HELLO);
    (tokens(&steps), joined(&steps))
}

#[test]
fn stop_string_from_greedy_output() {
    let m = tiny_tok();
    let (toks, text) = greedy_text(&m, 48);
    // A stop string made of the text of tokens 20..23 (whatever it is: with random weights it may
    // contain U+FFFD for stray bytes; the matcher sees the same text).
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 24, "greedy text too short: {text:?}");
    let stop: String = chars[20..23].iter().collect();
    eprintln!("penalized greedy: {toks:?} {text:?}, stop {stop:?}");
    let cut = text.find(&stop).unwrap();
    let want = &text[..cut];

    let mut ctx = context(&m);
    let p = GenerateParams {
        sampler: SamplerConfig::from_json(PENALIZED_GREEDY).unwrap(),
        max_tokens: Some(48),
        stop: vec![stop.clone(), "\u{1}never\u{2}".into()],
        ignore_eos: true,
        special: false,
    };
    let mut gen = Generator::new(m.clone(), p).unwrap();
    let steps = run(&mut gen, &mut ctx, 0, &HELLO);
    assert_eq!(steps.last().unwrap().stop, Some(StopReason::Stop));
    assert_eq!(gen.matched_stop(), Some(stop.as_str()));
    assert_eq!(joined(&steps), want);
    assert!(!joined(&steps).contains(&stop));
    // Same tokens as the free run up to the one that completed the stop string.
    let n = steps.len();
    assert_eq!(tokens(&steps), toks[..n]);
    assert!(n < 48);
    // The position contract holds on a stop too.
    assert_eq!(ctx.position(0).unwrap() as usize, 5 + n - 1);

    // A stop string at the very start of the output stops at once, showing nothing.
    let first: String = text.chars().take(2).collect();
    let mut ctx = context(&m);
    let mut gen = Generator::new(
        m.clone(),
        GenerateParams {
            stop: vec![first.clone()],
            ..params(&format!(r#"{{"sampler":{PENALIZED_GREEDY},"maxTokens":48,"ignoreEos":true}}"#))
        },
    )
    .unwrap();
    let steps = run(&mut gen, &mut ctx, 0, &HELLO);
    assert_eq!(steps.last().unwrap().stop, Some(StopReason::Stop));
    assert_eq!(joined(&steps), "", "stop {first:?}");
}

#[test]
fn eos_forced_by_logit_bias() {
    let m = tiny_tok();
    let mut ctx = context(&m);
    let mut gen =
        Generator::new(m.clone(), params(r#"{"sampler":{"logitBias":{"0":"inf"},"seed":1},"maxTokens":10}"#)).unwrap();
    let s = gen.step(&mut ctx, 0, &HELLO).unwrap();
    assert_eq!(s, Step { token: 0, text: String::new(), stop: Some(StopReason::Eos) });
    assert_eq!(gen.generated(), &[0]);
    assert_eq!(gen.pending_token(), Some(0));
    assert_eq!(ctx.position(0).unwrap(), 5);

    // ignore_eos bans it, whatever the bias says.
    let mut ctx = context(&m);
    let mut gen = Generator::new(
        m.clone(),
        params(r#"{"sampler":{"logitBias":{"0":50},"seed":1},"maxTokens":30,"ignoreEos":true}"#),
    )
    .unwrap();
    let steps = run(&mut gen, &mut ctx, 0, &HELLO);
    assert_eq!(steps.len(), 30);
    assert!(steps.iter().all(|s| s.token != 0));
    assert_eq!(steps.last().unwrap().stop, Some(StopReason::MaxTokens));
    assert!(gen.sampler().to_json().starts_with(r#"{"chain":[{"type":"logit_bias","bias":[[0,"-inf"]]}"#));
}

/// One-hot logits that force `token` (greedy).
fn force(token: u32) -> Vec<f32> {
    let mut l = vec![0.0f32; 256];
    l[token as usize] = 10.0;
    l
}

/// Drives a generator with forced tokens through `advance`; returns the steps.
fn forced(m: &Arc<Model>, json: &str, stop: &[&str], toks: &[u32]) -> (Generator, Vec<Step>) {
    let mut p = params(json);
    p.stop = stop.iter().map(|s| s.to_string()).collect();
    let mut gen = Generator::new(m.clone(), p).unwrap();
    let mut steps: Vec<Step> = Vec::new();
    for &t in toks {
        let fed = match steps.last() {
            None => vec![b'>' as u32],
            Some(s) => vec![s.token],
        };
        let s = gen.advance(&fed, &force(t)).unwrap();
        assert_eq!(s.token, t);
        let done = s.stop.is_some();
        steps.push(s);
        if done {
            break;
        }
    }
    (gen, steps)
}

#[test]
fn text_hold_back_and_flush() {
    let m = tiny_tok();
    let g = r#"{"sampler":{"temperature":0}}"#;
    let b = |s: &str| s.bytes().map(|x| x as u32).collect::<Vec<u32>>();

    // Held-back text ("lo", a possible start of "lo!") is flushed when EOS stops.
    let (gen, steps) = forced(&m, g, &["lo!"], &[&b("hello")[..], &[0]].concat());
    let texts: Vec<&str> = steps.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts, ["h", "e", "", "l", "", "lo"]);
    assert_eq!(steps.last().unwrap().stop, Some(StopReason::Eos));
    assert_eq!(gen.text(), "hello");

    // ... and when max_tokens stops.
    let (gen, steps) = forced(&m, r#"{"sampler":{"temperature":0},"maxTokens":5}"#, &["lo!"], &b("hello"));
    assert_eq!(steps.last().unwrap().stop, Some(StopReason::MaxTokens));
    assert_eq!(steps.last().unwrap().text, "lo");
    assert_eq!(gen.text(), "hello");

    // A stop string across tokens is dropped, and so is everything after it in the token.
    let (gen, steps) = forced(&m, g, &["lo!"], &b("hello!x"));
    assert_eq!(steps.len(), 6);
    assert_eq!(steps.last().unwrap().stop, Some(StopReason::Stop));
    assert_eq!(gen.text(), "hel");

    // Multi-byte characters: never split; "é" is 2 tokens here.
    let (gen, steps) = forced(&m, g, &[], &[&b("caf")[..], &[0xC3, 0xA9], &b("!"), &[0]].concat());
    let texts: Vec<&str> = steps.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts, ["c", "a", "f", "", "é", "!", ""]);
    assert_eq!(gen.text(), "café!");
    // A stop string with a multi-byte character, split inside the character.
    let (gen, steps) = forced(&m, g, &["é!"], &[&b("caf")[..], &[0xC3, 0xA9], &b("!")].concat());
    assert_eq!(steps.last().unwrap().stop, Some(StopReason::Stop));
    assert_eq!(gen.text(), "caf");
    // A 4-byte emoji over 4 tokens.
    let (gen, steps) = forced(&m, g, &[], &[0xF0, 0x9F, 0x98, 0x80, 0]);
    assert_eq!(steps.iter().map(|s| s.text.as_str()).collect::<Vec<_>>(), ["", "", "", "😀", ""]);
    assert_eq!(gen.text(), "😀");
    // An incomplete character at the end is flushed as U+FFFD.
    let (gen, steps) = forced(&m, r#"{"sampler":{"temperature":0},"maxTokens":3}"#, &[], &[b'a' as u32, 0xF0, 0x9F]);
    assert_eq!(steps.last().unwrap().text, "\u{FFFD}");
    assert_eq!(gen.text(), "a\u{FFFD}");

    // finish() (abort) hands back what is held.
    let (mut gen, steps) = forced(&m, g, &["lo!"], &b("hel"));
    assert_eq!(steps.last().unwrap().stop, None);
    assert_eq!(gen.text(), "he");
    assert_eq!(gen.finish(), "l");
    assert_eq!(gen.text(), "hel");
    assert!(gen.is_finished());
    assert_eq!(gen.stop_reason(), None);
    assert_eq!(gen.finish(), "");
    assert_eq!(gen.advance(&[b'l' as u32], &force(1)).unwrap_err().code, ErrorCode::InvalidArgument);
}

#[test]
fn misuse_is_refused() {
    let m = tiny_tok();
    let g = || Generator::new(m.clone(), params(r#"{"sampler":{"temperature":0},"maxTokens":20}"#)).unwrap();
    let mut ctx = context(&m);

    // Bad parameters.
    assert!(Generator::new(m.clone(), params(r#"{"maxTokens":0}"#)).is_err());
    assert!(Generator::new(m.clone(), GenerateParams { stop: vec![String::new()], ..Default::default() }).is_err());
    assert!(GenerateParams::from_json(r#"{"maxTokenz":3}"#).is_err());
    assert!(GenerateParams::from_json(r#"{"sampler":{"topk":3}}"#).is_err());
    let p = GenerateParams::from_json(r#"{"max_tokens":3,"ignore_eos":true,"stop":["a"],"special":true}"#).unwrap();
    assert_eq!((p.max_tokens, p.ignore_eos, p.special), (Some(3), true, true));

    // An empty prompt; a prompt with a token outside the vocabulary (nothing changes: retry works).
    let mut gen = g();
    assert_eq!(gen.step(&mut ctx, 0, &[]).unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(gen.step(&mut ctx, 0, &[1, 300]).unwrap_err().code, ErrorCode::TokenOutOfRange);
    assert_eq!(ctx.position(0).unwrap(), 0);
    let s = gen.step(&mut ctx, 0, &HELLO).unwrap();
    assert_eq!(ctx.position(0).unwrap(), 5);

    // Feeding something else than the pending token.
    let other = (s.token + 1) % 256;
    assert_eq!(gen.step(&mut ctx, 0, &[other]).unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(gen.step(&mut ctx, 0, &[s.token, s.token]).unwrap_err().code, ErrorCode::InvalidArgument);
    // Another sequence.
    assert_eq!(gen.step(&mut ctx, 1, &[s.token]).unwrap_err().code, ErrorCode::InvalidArgument);
    // The sequence changed between steps.
    ctx.evaluate(&Batch::for_sequence(0, &[s.token], false)).unwrap();
    assert_eq!(gen.step(&mut ctx, 0, &[s.token]).unwrap_err().code, ErrorCode::InvalidArgument);
    ctx.clear(0).unwrap();
    assert_eq!(gen.step(&mut ctx, 0, &[s.token]).unwrap_err().code, ErrorCode::InvalidArgument);

    // A context of another model.
    let m2 = tiny_tok();
    let mut ctx2 = context(&m2);
    assert_eq!(g().step(&mut ctx2, 0, &HELLO).unwrap_err().code, ErrorCode::InvalidArgument);

    // advance: wrong logits length; a sampling error finishes the generation, with the fed
    // tokens counted.
    let mut gen = g();
    assert_eq!(gen.advance(&[1], &[0.0; 10]).unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(gen.advance(&[1], &[f32::NAN; 256]).unwrap_err().code, ErrorCode::InvalidArgument);
    assert_eq!(gen.n_fed(), 1);
    assert!(gen.is_finished());
    assert_eq!(gen.pending_token(), None);

    // Context tokens only before the first step, and they feed the penalties' history.
    let mut gen = g();
    gen.set_context_tokens(&[7, 8]).unwrap();
    gen.advance(&[9], &force(3)).unwrap();
    assert_eq!(gen.history(), &[7, 8, 9]);
    assert!(gen.set_context_tokens(&[1]).is_err());
}

/// The seeded chain of the golden run: temperature first (this random model's logits are so
/// peaked that llama.cpp's default order would always pick the same token), the EOS token banned
/// explicitly (so the ids do not depend on whether the tokenizer loads), penalties, and every
/// truncation stage.
const GOLDEN_PARAMS: &str = r#"{"sampler":{"chain":[
    {"type":"logit_bias","bias":{"0":false}},
    {"type":"penalties","lastN":16,"repeat":1.3,"frequency":0.1,"presence":0.2},
    {"type":"temperature","t":4},
    {"type":"top_k","k":40},
    {"type":"typical_p","p":0.98},
    {"type":"top_p","p":0.95},
    {"type":"min_p","p":0.02},
    {"type":"dist","seed":42}]},"maxTokens":32}"#;

/// Golden ids of a seeded run on tiny-mamba. These must be the same on every target: the wasm
/// build must reproduce them exactly.
///
/// Recipe: model `tests/fixtures/models/tiny-mamba.gguf` as it is; a fresh context (sequence 0 at
/// position 0; thread count and micro-batch size do not matter); prompt `"Hello"` = ids
/// `[72, 101, 108, 108, 111]` (one token per byte); generation parameters [`GOLDEN_PARAMS`]
/// (32 tokens; EOS cannot be drawn); step with `feed` = the prompt, then each returned token.
#[test]
fn golden_seeded_run() {
    let go = |m: &Arc<Model>, ctx: &mut Context, seq: u32| {
        let mut gen = Generator::new(m.clone(), params(GOLDEN_PARAMS)).unwrap();
        tokens(&run(&mut gen, ctx, seq, &HELLO))
    };
    let m = tiny();
    let mut ctx = context(&m);
    let toks = go(&m, &mut ctx, 0);
    eprintln!("golden tiny-mamba ids: {toks:?}");
    assert_eq!(toks, GOLDEN_TINY_MAMBA);
    // Reproducible, on another sequence with other threads and micro-batches, and with the
    // tokenizer loaded.
    let mut ctx =
        Context::new(m.clone(), ContextParams { n_seq_max: 3, n_threads: 4, n_ubatch: 2, ..ContextParams::default() })
            .unwrap();
    assert_eq!(go(&m, &mut ctx, 2), GOLDEN_TINY_MAMBA);
    let mt = tiny_tok();
    let mut ctx = context(&mt);
    assert_eq!(go(&mt, &mut ctx, 1), GOLDEN_TINY_MAMBA);
    // Another seed differs.
    let mut gen = Generator::new(m.clone(), params(&GOLDEN_PARAMS.replace("\"seed\":42", "\"seed\":43"))).unwrap();
    let mut ctx = context(&m);
    assert_ne!(tokens(&run(&mut gen, &mut ctx, 0, &HELLO)), GOLDEN_TINY_MAMBA);
}

const GOLDEN_TINY_MAMBA: [u32; 32] = [
    113, 113, 147, 35, 35, 51, 51, 83, 148, 103, 103, 32, 197, 160, 63, 63, 63, 254, 254, 106, 172, 172, 55, 55, 55,
    55, 227, 5, 232, 192, 190, 125,
];

/// A model without a tokenizer still generates ids: no text, no EOS detection, and stop strings
/// are refused.
#[test]
fn without_tokenizer() {
    assert!(tiny().tokenizer().is_ok());
    let m = tiny_without_tokenizer();
    assert!(m.tokenizer().is_err());
    let mut ctx = context(&m);
    let mut gen =
        Generator::new(m.clone(), params(r#"{"sampler":{"logitBias":{"0":"inf"},"seed":1},"maxTokens":4}"#)).unwrap();
    let steps = run(&mut gen, &mut ctx, 0, &HELLO);
    assert_eq!(tokens(&steps), [0, 0, 0, 0]);
    assert!(steps.iter().all(|s| s.text.is_empty()));
    assert_eq!(steps.last().unwrap().stop, Some(StopReason::MaxTokens));
    let e = Generator::new(m.clone(), params(r#"{"stop":["x"]}"#)).err().unwrap();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let d = std::env::temp_dir().join(format!("coil-generate-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The HF `mamba` fixture converted to GGUF: a real BPE tokenizer, padded vocabulary.
#[test]
fn converted_hf_mamba() {
    use coil_core::convert::{convert, ConvertOptions, OutType};
    let dir = root().join("tests/fixtures/hf/mamba");
    if !dir.is_dir() {
        eprintln!("skipping: {} is missing", dir.display());
        return;
    }
    let tmp = TempDir::new("hf-mamba");
    let out = tmp.0.join("mamba.gguf");
    convert(&dir, &out, ConvertOptions { outtype: OutType::F32, ..Default::default() }, &mut |_| true).unwrap();
    let m = Arc::new(Model::open(&out).unwrap());
    let tok = m.tokenizer().unwrap();
    let prompt = m.tokenize("To be, or not to be", None, false).unwrap();
    let mut ctx = context(&m);

    let p = params(r#"{"sampler":{"temperature":0},"maxTokens":24,"ignoreEos":true}"#);
    let mut gen = Generator::new(m.clone(), p.clone()).unwrap();
    let steps = run(&mut gen, &mut ctx, 0, &prompt);
    assert_eq!(steps.len(), 24);
    let toks = tokens(&steps);
    let mut gen2 = Generator::new(m.clone(), p).unwrap();
    assert_eq!(tokens(&run(&mut gen2, &mut ctx, 1, &prompt)), toks);
    // The streamed text is the concatenated pieces.
    let mut bytes = Vec::new();
    for &t in &toks {
        if (t as usize) < tok.n_vocab() {
            bytes.extend(tok.token_to_piece(t, false).unwrap());
        }
    }
    assert_eq!(gen.text(), String::from_utf8_lossy(&bytes));
    eprintln!("hf mamba greedy: {toks:?} {:?}", gen.text());

    // EOS by the tokenizer's id.
    let eos = tok.eos().expect("the fixture has an eos token");
    let mut ctx = context(&m);
    let mut gen = Generator::new(
        m.clone(),
        params(&format!(r#"{{"sampler":{{"logitBias":{{"{eos}":"inf"}},"seed":9}},"maxTokens":24}}"#)),
    )
    .unwrap();
    let s = gen.step(&mut ctx, 0, &prompt).unwrap();
    assert_eq!((s.token, s.text.as_str(), s.stop), (eos, "", Some(StopReason::Eos)));

    // A stop string from the greedy text.
    let text = gen2.text().to_string();
    let chars: Vec<char> = text.chars().collect();
    if chars.len() >= 12 {
        let stop: String = chars[8..11].iter().collect();
        let want = &text[..text.find(&stop).unwrap()];
        let mut ctx = context(&m);
        let mut gen = Generator::new(
            m.clone(),
            GenerateParams {
                stop: vec![stop],
                ..params(r#"{"sampler":{"temperature":0},"maxTokens":24,"ignoreEos":true}"#)
            },
        )
        .unwrap();
        let steps = run(&mut gen, &mut ctx, 0, &prompt);
        assert_eq!(steps.last().unwrap().stop, Some(StopReason::Stop));
        assert_eq!(gen.text(), want);
    }
}

/// The bindings keep these in JS objects (and may move them to worker threads).
#[test]
fn generator_and_sampler_are_send() {
    fn send<T: Send + 'static>() {}
    send::<Generator>();
    send::<coil_core::sampling::SamplerChain>();
    send::<coil_core::generate::StopMatcher>();
}
