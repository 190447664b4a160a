//! Hyperparameters a model file can lie about (docs/formats.md, "Model hyperparameters"): the
//! real default GGUF, a small Llama Hugging Face folder and the MiniLM encoder folder, each
//! rewritten with one value changed (0, 1, -1, huge, NaN, out of range, wrong type, missing) and
//! run through load, tokenizer and one short forward. Every case must either be refused with an
//! error naming the key, or run and give finite outputs; none may panic or hold more than a few
//! hundred MB. Each loop prints its counts.

mod common;

use candle_core::quantized::gguf_file::Value;
use candle_core::{DType, Device, Tensor};
use graft::assets::ModelSource;
use graft::io::gguf::{GgufFile, GgufWriter};
use graft::models::bert::SentenceEncoder;
use graft::models::llama::random::RandomWeights;
use graft::models::llama::{Llama, LlamaConfig, LoadOptions, WeightFormat};
use graft::models::load::load_causal_lm;
use graft::models::Model;
use graft::tokenizer::Tokenizer;
use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

// ---------------------------------------------------------------------------------------------
// Memory accounting: bytes allocated by the whole process (candle computes on worker threads),
// with the tests of this file run one at a time so a case's peak is its own.

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CURRENT.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() {
            let now = CURRENT.fetch_add(new - l.size(), Ordering::Relaxed) + new - l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        } else {
            CURRENT.fetch_sub(l.size() - new, Ordering::Relaxed);
        }
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Most bytes one case may hold above what was allocated before it started. The default model
/// held with quantized projections needs about 220 MB (its embedding dequantized, the blocks
/// kept as Q4_1/Q8_0).
const CASE_MEMORY_CAP: usize = 400 << 20;

/// Runs `f`, catching a panic; returns its result and the most bytes it held at once.
fn measured<R>(f: impl FnOnce() -> R) -> (std::thread::Result<R>, usize) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = catch_unwind(AssertUnwindSafe(f));
    (r, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

// ---------------------------------------------------------------------------------------------
// The mutation loop.

/// One rewritten file: which key, the value written (`None`: the key removed), and whether a
/// correct loader must refuse it (a zero, negative, NaN or huge hyperparameter).
struct Case<V> {
    key: String,
    value: Option<V>,
    label: String,
    must_refuse: bool,
}

/// Counts of a mutation loop, printed for the record.
#[derive(Default)]
struct Tally {
    cases: usize,
    refused: usize,
    ran: usize,
    peak: usize,
    failures: Vec<String>,
}

impl Tally {
    /// Runs one case: `run` loads, tokenizes and runs a short forward, returning the outputs.
    fn run<V>(
        &mut self,
        case: &Case<V>,
        run: impl FnOnce() -> Result<Vec<f32>, String>,
        names_key: impl Fn(&str) -> bool,
    ) {
        self.cases += 1;
        let (outcome, peak) = measured(run);
        self.peak = self.peak.max(peak);
        let what = format!("`{}` = {}", case.key, case.label);
        if peak > CASE_MEMORY_CAP {
            self.failures.push(format!("{what}: held {} MiB", peak >> 20));
        }
        match outcome {
            Err(_) => self.failures.push(format!("{what}: PANIC")),
            Ok(Err(msg)) => {
                self.refused += 1;
                if !names_key(&msg) {
                    self.failures.push(format!("{what}: refused without naming the key: {msg}"));
                }
            }
            Ok(Ok(out)) => {
                self.ran += 1;
                if case.must_refuse {
                    self.failures.push(format!("{what}: accepted"));
                } else if !out.iter().all(|x| x.is_finite()) {
                    self.failures.push(format!("{what}: ran with non-finite outputs"));
                }
            }
        }
    }

    fn finish(self, what: &str) {
        let panics = self.failures.iter().filter(|f| f.ends_with("PANIC")).count();
        println!(
            "{what}: {} cases, {} refused naming the key, {} ran with finite outputs, {panics} panics, \
             peak {} MiB per case",
            self.cases,
            self.refused,
            self.ran,
            self.peak >> 20
        );
        assert!(self.failures.is_empty(), "{what}: {} failures:\n{}", self.failures.len(), self.failures.join("\n"));
    }
}

// ---------------------------------------------------------------------------------------------
// GGUF.

/// The default model as a writer holding all its metadata and tensors, to rewrite one value.
fn default_model_writer() -> (GgufWriter, GgufFile) {
    let src = GgufFile::open(common::default_gguf()).unwrap();
    let mut w = GgufWriter::new();
    let mut keys: Vec<_> = src.metadata().keys().cloned().collect();
    keys.sort();
    for k in keys {
        w.add_metadata(k.clone(), src.metadata()[&k].clone()).unwrap();
    }
    for name in src.tensor_names() {
        w.add_qtensor(name, src.qtensor(name, &Device::Cpu).unwrap()).unwrap();
    }
    (w, src)
}

/// What `graft generate --model FILE` does with a GGUF file, up to the first logits: model
/// (quantized projections), tokenizer, one forward over at most 3 prompt tokens.
fn run_gguf(gguf: &GgufFile) -> Result<Vec<f32>, String> {
    let opts = LoadOptions { format: WeightFormat::Quantized, ..LoadOptions::default() };
    let model = Llama::from_gguf(gguf, &opts).map_err(|e| e.to_string())?;
    let tok = Tokenizer::from_gguf(gguf).map_err(|e| e.to_string())?;
    let mut ids = tok.encode("The capital of France is", true).map_err(|e| e.to_string())?;
    ids.truncate(3.min(model.info().max_position_embeddings));
    forward(&model, &ids)
}

fn forward(model: &Llama, ids: &[u32]) -> Result<Vec<f32>, String> {
    let run = || -> graft::Result<Vec<f32>> {
        let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let logits = model.forward_infer(&input, &mut model.new_cache())?;
        Ok(logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?)
    };
    run().map_err(|e| e.to_string())
}

/// Rewrites the model with `key` set to `value` (or removed) and opens the result in memory.
fn rewritten(w: &mut GgufWriter, key: &str, value: Option<Value>) -> GgufFile {
    let old = match value {
        Some(v) => {
            let old = w.remove_metadata(key);
            w.set_metadata(key, v).unwrap();
            old
        }
        None => w.remove_metadata(key),
    };
    let bytes = w.to_bytes().unwrap();
    w.remove_metadata(key);
    if let Some(old) = old {
        w.set_metadata(key, old).unwrap();
    }
    GgufFile::from_bytes(bytes, "mutant.gguf").unwrap()
}

#[test]
fn a_zero_head_count_is_refused_naming_the_key() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut w, _) = default_model_writer();
    let gguf = rewritten(&mut w, "llama.attention.head_count", Some(Value::U32(0)));
    let (outcome, _) = measured(|| run_gguf(&gguf));
    let err = outcome.expect("loading panicked").expect_err("a zero head count was accepted");
    assert!(
        err.contains("mutant.gguf") && err.contains("`llama.attention.head_count`") && err.contains("found 0"),
        "{err}"
    );
}

/// The values tried for a metadata key holding `orig`.
fn gguf_values(key: &str, orig: Option<&Value>, n_tokens: u32) -> Vec<(Option<Value>, String, bool)> {
    let s = |v: Value, must: bool| (Some(v.clone()), format!("{v:?}"), must);
    let hyper = key.starts_with("llama.");
    if key.starts_with("tokenizer.") {
        return vec![
            s(Value::U32(0), false),
            s(Value::U32(n_tokens - 1), false),
            s(Value::U32(n_tokens), true),
            s(Value::U32(u32::MAX), true),
            s(Value::I32(-1), true),
            s(Value::U64(1 << 40), true),
            s(Value::F32(1.0), true),
            s(Value::String("1".into()), true),
            (None, "removed".into(), false),
        ];
    }
    let mut out = match orig {
        Some(Value::F32(x)) => vec![
            s(Value::F32(0.0), true),
            s(Value::F32(-*x), true),
            s(Value::F32(f32::NAN), true),
            s(Value::F32(f32::INFINITY), true),
            s(Value::F32(f32::NEG_INFINITY), true),
            s(Value::F32(f32::MAX), false),
            s(Value::F32(f32::MIN_POSITIVE), false),
            s(Value::F32(1.0), false),
            s(Value::F32(x * 2.0), false),
            s(Value::F64(f64::from(*x)), false),
            s(Value::U32(1), true),
        ],
        _ => {
            // The default model states no `llama.vocab_size`: its vocabulary is the token table.
            let n = orig.and_then(graft::io::gguf::value_as_int).map_or(n_tokens, |n| n as u32);
            vec![
                s(Value::U32(0), hyper),
                s(Value::U32(1), false),
                s(Value::I32(-1), true),
                s(Value::U32(n + 1), false),
                s(Value::U32(n.saturating_mul(2)), false),
                s(Value::U32(n.saturating_sub(1).max(2)), false),
                s(Value::U32(u32::MAX), hyper),
                s(Value::U64(u64::MAX), true),
                s(Value::U64(u64::from(n)), false),
                s(Value::F32(n as f32), true),
                s(Value::Bool(true), true),
            ]
        }
    };
    out.push(s(Value::String("12".into()), true));
    out.push((None, "removed".into(), false));
    out
}

/// Every `llama.*` number of the default model (plus the optional keys it lacks) and every
/// special-token id, each set to each value of [`gguf_values`].
#[test]
fn gguf_metadata_mutations_never_panic() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (mut w, src) = default_model_writer();
    let n_tokens = match src.meta("tokenizer.ggml.tokens").unwrap() {
        Value::Array(a) => a.len() as u32,
        other => panic!("tokens: {other:?}"),
    };
    let mut keys: Vec<String> = src
        .metadata()
        .iter()
        .filter(|(k, v)| {
            k.starts_with("llama.")
                && (graft::io::gguf::value_as_int(v).is_some() || matches!(v, Value::F32(_) | Value::F64(_)))
        })
        .map(|(k, _)| k.clone())
        .collect();
    for extra in [
        "llama.vocab_size",
        "llama.attention.head_count_kv",
        "llama.rope.dimension_count",
        "llama.rope.freq_base",
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.unknown_token_id",
    ] {
        keys.push(extra.to_string());
    }
    keys.sort();
    keys.dedup();
    let mut cases = Vec::new();
    for key in &keys {
        for (value, label, must_refuse) in gguf_values(key, src.metadata().get(key), n_tokens) {
            cases.push(Case { key: key.clone(), value, label, must_refuse });
        }
    }
    let mut tally = Tally::default();
    for case in &cases {
        let gguf = rewritten(&mut w, &case.key, case.value.clone());
        tally.run(case, || run_gguf(&gguf), |msg| msg.contains(&format!("`{}`", case.key)));
    }
    // The loop must not be vacuous: the real file runs as is.
    assert!(tally.ran > 0 && tally.refused > 0);
    tally.finish(&format!("GGUF metadata mutations over {} keys", keys.len()));
}

// ---------------------------------------------------------------------------------------------
// config.json.

/// A JSON value to write for a key: a value, the literal `NaN` Python's json module writes, or
/// the key removed.
#[derive(Clone)]
enum Json {
    Value(serde_json::Value),
    NaN,
}

/// The values tried for a `config.json` key holding `orig`.
fn json_values(key: &str, orig: &serde_json::Value) -> Vec<(Option<Json>, String, bool)> {
    use serde_json::json;
    let v = |x: serde_json::Value, must: bool| (Some(Json::Value(x.clone())), x.to_string(), must);
    let mut out = if orig.is_f64() {
        let x = orig.as_f64().unwrap();
        vec![
            v(json!(0.0), true),
            v(json!(-x), true),
            v(json!(1e300), false),
            v(json!(1e-300), true),
            v(json!(2.0), false),
            v(json!(x * 2.0), false),
            (Some(Json::NaN), "NaN".into(), true),
        ]
    } else if let Some(n) = orig.as_u64() {
        vec![
            v(json!(0), !key.ends_with("token_id")),
            v(json!(1), false),
            v(json!(-1), true),
            v(json!(n + 1), false),
            v(json!(n * 2), false),
            v(json!(u64::from(u32::MAX)), true),
            v(json!(u64::MAX), true),
            v(json!(1e30), true),
            v(json!(2.5), true),
        ]
    } else {
        vec![v(json!(0), true), v(json!("x"), true)]
    };
    out.push(v(json!("7"), true));
    out.push(v(json!([1]), true));
    out.push(v(serde_json::Value::Null, false));
    out.push((None, "removed".into(), false));
    out
}

/// Writes `orig` with `key` set to `value` (or removed) as `dir/config.json`.
fn write_config(dir: &Path, orig: &serde_json::Map<String, serde_json::Value>, key: &str, value: Option<&Json>) {
    let mut obj = orig.clone();
    let marker = "__graft_nan__";
    match value {
        Some(Json::Value(v)) => {
            obj.insert(key.to_string(), v.clone());
        }
        Some(Json::NaN) => {
            obj.insert(key.to_string(), marker.into());
        }
        None => {
            obj.remove(key);
        }
    }
    let text = serde_json::to_string_pretty(&obj).unwrap().replace(&format!("\"{marker}\""), "NaN");
    std::fs::write(dir.join("config.json"), text).unwrap();
}

/// A refusal names the key, or (for `NaN`, which JSON cannot hold) is a JSON syntax error with
/// its line and column.
fn names_json_key(msg: &str, key: &str, value: Option<&Json>) -> bool {
    match value {
        Some(Json::NaN) => msg.contains("config.json") && msg.contains("line") && msg.contains("column"),
        _ => msg.contains(&format!("`{key}`")),
    }
}

/// Runs every case of `keys` × [`json_values`] against the folder `dir`, whose `config.json` is
/// `orig`; `run` loads the folder and computes a forward.
fn config_json_loop(
    what: &str,
    dir: &Path,
    orig: &serde_json::Map<String, serde_json::Value>,
    keys: &[&str],
    run: impl Fn() -> Result<Vec<f32>, String>,
) {
    let mut tally = Tally::default();
    for &key in keys {
        let Some(value) = orig.get(key) else { panic!("{what}: config.json has no `{key}`") };
        for (value, label, must_refuse) in json_values(key, value) {
            let case = Case { key: key.to_string(), value, label, must_refuse };
            write_config(dir, orig, key, case.value.as_ref());
            tally.run(&case, &run, |msg| names_json_key(msg, key, case.value.as_ref()));
        }
    }
    assert!(tally.ran > 0 && tally.refused > 0);
    tally.finish(&format!("{what} config.json mutations over {} keys", keys.len()));
}

/// A small Llama (the default model's tokenizer and vocabulary, 2 blocks of width 64) as a
/// Hugging Face folder.
fn small_llama_folder(root: &Path) -> PathBuf {
    let gguf = GgufFile::open(common::default_gguf()).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let cfg = LlamaConfig {
        vocab_size: tok.vocab_size(),
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        tie_word_embeddings: true,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
        ..graft::models::llama::random::small_config()
    };
    let model = Llama::load(cfg.clone(), &RandomWeights::new(cfg, 7), &LoadOptions::default()).unwrap();
    let dir = root.join("small-llama");
    graft::io::hf_folder::write_llama_folder(&model, &tok, &dir, DType::F32).unwrap();
    dir
}

#[test]
fn llama_config_json_mutations_never_panic() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = small_llama_folder(tmp.path());
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let orig: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let keys = [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "rope_theta",
        "rms_norm_eps",
        "max_position_embeddings",
        "bos_token_id",
        "eos_token_id",
    ];
    let source = ModelSource::HfFolder(dir.clone());
    config_json_loop("Llama", &dir, &orig, &keys, || {
        let model = load_causal_lm(&source, &LoadOptions::default()).map_err(|e| e.to_string())?;
        let ids = [1u32, 2, 3];
        forward(&model, &ids[..3.min(model.info().max_position_embeddings)])
    });
}

#[test]
fn bert_config_json_mutations_never_panic() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let minilm = graft::assets::ensure("all-minilm-l6-v2", false).expect("fetch all-minilm-l6-v2");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("minilm");
    std::fs::create_dir(&dir).unwrap();
    for entry in std::fs::read_dir(&minilm).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "config.json" {
            std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    let text = std::fs::read_to_string(minilm.join("config.json")).unwrap();
    let orig: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    let keys = [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
        "type_vocab_size",
        "layer_norm_eps",
        "pad_token_id",
        "hidden_act",
        "position_embedding_type",
    ];
    config_json_loop("BERT", &dir, &orig, &keys, || {
        let enc = SentenceEncoder::from_hf_folder(&dir, &Device::Cpu, DType::F32).map_err(|e| e.to_string())?;
        let out = enc.embed(&["a short sentence"], 1, &mut |_| {}).map_err(|e| e.to_string())?;
        out.vectors.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| e.to_string())
    });
}
