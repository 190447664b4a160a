//! Distillation end to end on small decoders that share the default model's tokenizer: the KD
//! term falls on real text with the default model as teacher, `kd_ratio = 0` is plain training
//! to the bit, a killed run resumes bit-identically, and teachers with another vocabulary or
//! tokenizer are refused with the reason, the teacher-cache store refuses a stale cache and checks
//! its shards, and (on demand) the error of a top-k teacher on real text is measured.

mod common;

use graft::config::distill::{DistillConfig, HiddenLossName, LossName};
use graft::config::{AdapterKind, TrainConfig};
use graft::data::DataFormat;
use graft::models::llama::random::small_config;
use graft::recipes::{distill, finetune};
use graft::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

/// A small decoder (seeded random weights) in `dir/name`.
fn small_model(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let path = dir.join(name);
    if !path.exists() {
        common::write_model_seeded(&path, &small_config(), seed);
    }
    path
}

/// A teacher wider and deeper than the small student: 3 blocks of width 96.
fn wide_teacher(dir: &Path) -> PathBuf {
    let path = dir.join("wide-teacher");
    let cfg = graft::models::llama::LlamaConfig {
        hidden_size: 96,
        num_hidden_layers: 3,
        head_dim: Some(24),
        intermediate_size: 192,
        ..small_config()
    };
    common::write_model_seeded(&path, &cfg, 11);
    path
}

/// LoRA (or `kind`) on the small student over the licence text, distilled from `teacher`.
fn config(dir: &Path, run: &str, kind: AdapterKind, teacher: &Path) -> DistillConfig {
    let mut cfg = DistillConfig::default();
    cfg.model.name = small_model(dir, "student", 3).display().to_string();
    cfg.adapter.kind = kind;
    cfg.adapter.r = 4;
    cfg.adapter.dropout = 0.1;
    cfg.adapter.targets = vec!["q_proj".into(), "v_proj".into()];
    cfg.data.train =
        if dir.join("licence.jsonl").exists() { dir.join("licence.jsonl") } else { common::licence_jsonl(dir) };
    cfg.data.seq_len = 32;
    cfg.data.eval_fraction = 0.2;
    cfg.train.batch_size = 2;
    cfg.train.max_steps = Some(4);
    cfg.train.eval_batches = 2;
    cfg.train.lr = 1e-3;
    cfg.output.dir = dir.join(run);
    cfg.teacher.model = teacher.display().to_string();
    cfg.distill.temperature = 2.0;
    cfg
}

fn losses(run: &Path) -> Vec<f64> {
    common::metrics_without_timing(run).iter().map(|r| r["loss"].as_f64().unwrap()).collect()
}

#[test]
fn kd_ratio_zero_is_plain_training_to_the_bit() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = small_model(dir.path(), "teacher", 7);
    // ULD reads every example twice and batches them in pairs; the student's side is unchanged.
    for (kind, loss) in [
        (AdapterKind::Lora, LossName::ReverseKl),
        (AdapterKind::None, LossName::ReverseKl),
        (AdapterKind::Lora, LossName::Uld),
    ] {
        let mut cfg = config(dir.path(), &format!("distill-{kind:?}-{loss:?}"), kind, &teacher);
        cfg.distill.kd_ratio = 0.0;
        cfg.distill.loss = loss;
        let distilled = distill::run(&cfg, false, &mut |_| {}).unwrap();
        let plain_cfg =
            TrainConfig { output: graft::config::OutputSection { dir: dir.path().join("plain") }, ..cfg.student() };
        std::fs::remove_dir_all(dir.path().join("plain")).ok();
        let plain = finetune::run(&plain_cfg, false, &mut |_| {}).unwrap();
        assert_eq!(losses(&cfg.output.dir), losses(&plain_cfg.output.dir), "{kind:?}");
        assert_eq!(distilled.final_eval_loss, plain.final_eval_loss, "{kind:?}");
        // The KD term is still measured and logged beside the cross-entropy.
        let first = &common::metrics_without_timing(&cfg.output.dir)[0];
        assert!(first["metrics"]["kd"].as_f64().unwrap() > 0.0, "{first}");
        assert_eq!(first["metrics"]["ce"].as_f64().unwrap(), first["loss"].as_f64().unwrap(), "{first}");
    }
}

#[test]
fn the_kd_term_falls_on_real_text_with_the_default_model_as_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "run", AdapterKind::None, &common::default_gguf());
    // Four paragraphs in one batch, seen at every step, so the steps' KD terms are comparable.
    let text = std::fs::read_to_string(&cfg.data.train).unwrap();
    let four = dir.path().join("four.jsonl");
    std::fs::write(&four, text.lines().take(4).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    (cfg.data.train, cfg.data.eval) = (four.clone(), Some(four));
    cfg.train.batch_size = 4;
    cfg.train.max_steps = Some(12);
    cfg.train.lr = 1e-2;
    cfg.train.schedule = graft::train::schedule::ScheduleKind::Constant;
    cfg.distill.kd_ratio = 0.9;
    let summary = distill::run(&cfg, false, &mut |_| {}).unwrap();
    let kd: Vec<f64> =
        common::metrics_without_timing(&cfg.output.dir).iter().map(|r| r["metrics"]["kd"].as_f64().unwrap()).collect();
    let (first, last) = (kd[..3].iter().sum::<f64>() / 3.0, kd[9..].iter().sum::<f64>() / 3.0);
    assert!(last < 0.75 * first, "KD per token {first} -> {last}: {kd:?}");
    assert!(summary.final_eval_loss < summary.base_eval_loss, "{summary:?}");
    assert!(cfg.output.dir.join("model/config.json").is_file(), "full training writes the model");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cfg.output.dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(written["steps"], 12);
}

#[test]
fn a_killed_distillation_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    // A wider teacher with hidden-state pairs: the projections train and resume too.
    let teacher = wide_teacher(dir.path());
    let mut whole = config(dir.path(), "whole", AdapterKind::Lora, &teacher);
    whole.train.max_steps = Some(6);
    whole.train.save_every = 2;
    whole.distill.loss = LossName::SkewKl;
    whole.distill.alpha = Some(0.1);
    whole.distill.hidden_layers = vec![[3, 2], [1, 1]];
    whole.distill.hidden_loss = HiddenLossName::Cosine;
    common::distill_resumes_bit_identically(&whole, dir.path());
}

#[test]
fn a_killed_uld_distillation_resumes_bit_identically() {
    // Examples rendered twice travel as one through the shuffles: the resumed run sees the same
    // paired batches.
    let dir = tempfile::tempdir().unwrap();
    let teacher = wide_teacher(dir.path());
    let mut whole = config(dir.path(), "whole", AdapterKind::Lora, &teacher);
    whole.train.max_steps = Some(6);
    whole.train.save_every = 2;
    whole.distill.loss = LossName::Uld;
    whole.distill.uld_top_k = Some(8);
    common::distill_resumes_bit_identically(&whole, dir.path());
    let first = &common::metrics_without_timing(&whole.output.dir)[0];
    // One tokenizer: every supervised position is paired with itself.
    assert_eq!(first["metrics"]["paired"].as_f64().unwrap(), 1.0, "{first}");
    assert!(first["metrics"]["kd"].as_f64().unwrap() > 0.0, "{first}");
}

#[test]
fn hidden_states_of_a_wider_teacher_are_matched_through_a_trained_projection() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = wide_teacher(dir.path());
    let mut cfg = config(dir.path(), "run", AdapterKind::Lora, &teacher);
    let text = std::fs::read_to_string(&cfg.data.train).unwrap();
    let four = dir.path().join("four.jsonl");
    std::fs::write(&four, text.lines().take(4).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    (cfg.data.train, cfg.data.eval) = (four.clone(), Some(four));
    cfg.train.batch_size = 4;
    cfg.train.max_steps = Some(8);
    cfg.train.lr = 1e-2;
    cfg.train.schedule = graft::train::schedule::ScheduleKind::Constant;
    cfg.distill.hidden_layers = vec![[3, 2]];
    let summary = distill::run(&cfg, false, &mut |_| {}).unwrap();
    let hidden: Vec<f64> = common::metrics_without_timing(&cfg.output.dir)
        .iter()
        .map(|r| r["metrics"]["hidden"].as_f64().unwrap())
        .collect();
    assert!(hidden[7] < 0.7 * hidden[0], "hidden-state MSE per token {hidden:?}");
    // LoRA r 4 on q and v of 2 blocks of width 64 (q: 64 -> 64, v: 64 -> 32), plus one 96 x 64
    // projection.
    assert_eq!(summary.trainable_params, 2 * (4 * (64 + 64) + 4 * (64 + 32)) + 96 * 64);
    // A layer the student does not have is refused, naming the key.
    cfg.distill.hidden_layers = vec![[3, 3]];
    cfg.output.dir = dir.path().join("bad");
    let err = distill::run(&cfg, false, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("distill.hidden_layers") && err.contains("student layer 3"), "{err}");
}

#[test]
fn teachers_with_another_vocabulary_or_tokenizer_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The same tokenizer files, but a model with a larger vocabulary.
    let big = dir.path().join("big-vocab");
    let cfg = graft::models::llama::LlamaConfig { vocab_size: small_config().vocab_size + 64, ..small_config() };
    common::write_model_seeded(&big, &cfg, 5);
    let err = distill::run(&config(dir.path(), "a", AdapterKind::Lora, &big), false, &mut |_| {}).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("49216") && text.contains("49152"), "{text}");
    assert!(text.contains("distill.loss = \"uld\"") && text.contains("graft data teacher-answers"), "{text}");
    assert!(matches!(err, graft::GraftError::Input(_)), "{err:?}");

    // Equal sizes, another tokenizer: two tokens of the teacher's vocabulary swapped.
    let swapped = dir.path().join("swapped");
    common::write_model_seeded(&swapped, &small_config(), 5);
    let path = swapped.join("tokenizer.json");
    let mut tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let vocab = tok["model"]["vocab"].as_object_mut().unwrap();
    let (a, b) = (vocab["hello"].clone(), vocab["world"].clone());
    vocab.insert("hello".into(), b);
    vocab.insert("world".into(), a);
    std::fs::write(&path, serde_json::to_string(&tok).unwrap()).unwrap();
    let err = distill::run(&config(dir.path(), "b", AdapterKind::Lora, &swapped), false, &mut |_| {}).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("tokenizers differ") && text.contains("hello"), "{text}");
}

#[test]
fn distill_config_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let write = |body: &str| {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, format!("[data]\ntrain = \"x.jsonl\"\n[teacher]\nmodel = \"m\"\n{body}")).unwrap();
        DistillConfig::load(&p, &[]).map(|_| ()).unwrap_err().to_string()
    };
    assert!(write("[distill]\nratio = 0.5\n").contains("unknown field `ratio`"));
    assert!(write("[distill]\nkd_ratio = 1.5\n").contains("distill.kd_ratio"));
    assert!(write("[distill]\ntemperature = 0.0\n").contains("distill.temperature"));
    assert!(write("[distill]\nloss = \"jsd\"\nbeta = 2.0\n").contains("distill.beta"));
    assert!(write("[distill]\nbeta = 0.5\n").contains("only applies to loss = \"jsd\""));
    assert!(write("[distill]\nloss = \"skew_kl\"\nalpha = 1.0\n").contains("distill.alpha"));
    assert!(write("[distill]\nloss = \"kl\"\n").contains("unknown variant `kl`"));
    assert!(write("[distill]\ncache_top_k = 0\n").contains("distill.cache_top_k"));
    let p = dir.path().join("ok.toml");
    std::fs::write(&p, "[data]\ntrain = \"x.jsonl\"\n[teacher]\nmodel = \"m\"\n").unwrap();
    let mut cfg = DistillConfig::load(&p, &[]).unwrap();
    cfg.distill.teacher_cache = Some("cache".into());
    cfg.validate().unwrap();
    cfg.data.packing = true;
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("distill.teacher_cache") && e.contains("data.packing"), "{e}");
    (cfg.data.packing, cfg.distill.loss) = (false, graft::config::distill::LossName::Uld);
    let e = cfg.validate().unwrap_err().to_string();
    assert!(e.contains("distill.teacher_cache") && e.contains("top-k teacher"), "{e}");
    assert!(write("[distill]\nuld_top_k = 8\n").contains("only applies to loss = \"uld\""));
    assert!(write("[distill]\nloss = \"uld\"\nuld_top_k = 0\n").contains("distill.uld_top_k"));
    assert!(write("[distill]\nloss = \"uld\"\nhidden_layers = [[1, 1]]\n").contains("distill.hidden_layers"));
    assert!(DistillConfig::load(&p, &[]).is_ok());
    let packed = ["data.packing=true".to_string(), "distill.loss=\"uld\"".to_string()];
    assert!(DistillConfig::load(&p, &packed).unwrap_err().to_string().contains("data.packing"));
    std::fs::write(&p, "[data]\ntrain = \"x.jsonl\"\n").unwrap();
    assert!(DistillConfig::load(&p, &[]).unwrap_err().to_string().contains("teacher.model"));
}

/// The error of a top-`k` teacher against the full one on real text: the default model as
/// teacher, its every-second-block version as student, every position of a few tweet chats.
/// Prints, per `k`, the mean `KL(p̂‖p)` between the reconstructed and the full teacher and the
/// mean `|kd_cached − kd_full|` (forward KL, T = 1), and checks that the cached term is a lower
/// bound of the full one at every position and that both errors shrink as `k` grows
/// (`--nocapture` shows the figures: `cargo test -p graft --test distill -- --nocapture top_k`).
#[test]
fn top_k_teacher_approximation_error_on_real_text_shrinks_with_k() {
    use candle_core::{Device, Tensor};
    use graft::models::llama::student::EveryNth;
    use graft::models::llama::{KeepLayers, LoadOptions, Pass};
    use graft::ops;
    use graft::tokenizer::Message;
    let source = graft::assets::resolve_model(graft::assets::DEFAULT_MODEL, false).unwrap();
    let tok = graft::tokenizer::Tokenizer::from_source(&source).unwrap();
    let template = tok.chat_template().unwrap();
    let teacher = common::default_llama();
    let keep = KeepLayers::Every(EveryNth { every: 2, offset: 0 });
    let student = graft::models::load::load_causal_lm_keeping(&source, &LoadOptions::default(), Some(&keep)).unwrap();
    let file = graft::recipes::data_build::resolve(Path::new("dataset:tweets/chat.train.jsonl"), &mut |_| {}).unwrap();
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(file).unwrap().lines().take(4).map(|l| serde_json::from_str(l).unwrap()).collect();
    let (mut ths, mut shs) = (Vec::new(), Vec::new());
    for row in &rows {
        let messages: Vec<Message> = row["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let ids = tok.encode(&template.render(&messages, false).unwrap(), false).unwrap();
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        ths.push(teacher.hidden_states(&ids, None, Pass::Infer).unwrap().squeeze(0).unwrap());
        shs.push(student.hidden_states(&ids, None, Pass::Infer).unwrap().squeeze(0).unwrap());
    }
    let (th, sh) = (Tensor::cat(&ths, 0).unwrap(), Tensor::cat(&shs, 0).unwrap());
    let n = th.dims()[0];
    let (tw, sw) = (teacher.head_weight().unwrap(), student.head_weight().unwrap());
    let zt = th.matmul(&tw.dense(th.dtype()).unwrap().t().unwrap()).unwrap();
    let targets = Tensor::zeros(n, candle_core::DType::U32, &Device::Cpu).unwrap();
    let mask = Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).unwrap();
    let spec = ops::KdSpec { divergence: ops::Divergence::ForwardKl, temperature: 1.0, kd_ratio: 1.0 };
    let full = ops::lm_head_kd(&sh, &sw, &th, &tw, &targets, &mask, &spec).unwrap().kd;
    let mean = |t: &Tensor| t.mean_all().unwrap().to_scalar::<f32>().unwrap();
    eprintln!("{n} positions of {} chats; mean forward KL(teacher‖student) = {:.4}", rows.len(), mean(&full));
    let mut errors: Vec<(f32, f32)> = Vec::new();
    for k in [8, 32, 64, 256] {
        let sparse = ops::teacher_top_k(&th, &tw, k, 1.0).unwrap();
        let zs = sh.matmul(&sw.dense(sh.dtype()).unwrap().t().unwrap()).unwrap();
        let rebuilt = sparse.log_probs_given(&zs, 1.0).unwrap();
        let kl = ops::divergence(&zt, &rebuilt, ops::Divergence::ForwardKl, 1.0).unwrap();
        let cached = ops::lm_head_kd_sparse(&sh, &sw, &sparse, &targets, &mask, &spec).unwrap().kd;
        // Coarsening never increases a divergence: the cached term is a lower bound, per position.
        let above = (&cached - &full).unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(above < 1e-3 * mean(&full), "k = {k}: a cached term exceeds the full one by {above}");
        let gap = (&cached - &full).unwrap().abs().unwrap();
        let mass = mean(&sparse.log_probs.exp().unwrap().sum(1).unwrap());
        eprintln!(
            "k = {k:3}: top-k mass {mass:.4}, KL(reconstructed‖full) {:.5}, |kd_cached − kd_full| mean {:.5} max {:.5}",
            mean(&kl),
            mean(&gap),
            gap.max(0).unwrap().to_scalar::<f32>().unwrap()
        );
        errors.push((mean(&kl), mean(&gap)));
    }
    for pair in errors.windows(2) {
        assert!(pair[1].0 < pair[0].0 && pair[1].1 < pair[0].1, "the error must shrink with k: {errors:?}");
    }
    assert!(errors[3].1 < 0.1 * mean(&full), "k = 256 within 10 % of the full KD term: {errors:?}");
}

#[test]
fn a_teacher_cache_is_reused_refused_when_stale_and_checked_shard_by_shard() {
    use candle_core::{DType, Device, Tensor};
    use graft::recipes::distill_cache::{CacheWriter, TeacherCache};
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("teacher_cache");
    let print = serde_json::json!({"teacher": {"sha256": "aa"}, "data": {"seq_len": 64}, "k": 2, "temperature": 1.0});
    let dev = Device::Cpu;
    let shard = |n: usize, off: f32| graft::ops::SparseTeacher {
        ids: Tensor::from_vec((0..2 * n as u32).collect::<Vec<_>>(), (n, 2), &dev).unwrap(),
        log_probs: Tensor::from_vec((0..2 * n).map(|i| -(i as f32) - off).collect::<Vec<_>>(), (n, 2), &dev).unwrap(),
        rest: Tensor::from_vec((0..n).map(|i| -(i as f32)).collect::<Vec<_>>(), n, &dev).unwrap(),
    };
    assert!(TeacherCache::open(&cache_dir, &print).unwrap().is_none(), "nothing cached yet");
    let mut w = CacheWriter::create(&cache_dir, print.clone()).unwrap();
    w.push(&shard(3, 0.5)).unwrap();
    w.push(&shard(2, 1.5)).unwrap();
    w.finish().unwrap();
    let cache = TeacherCache::open(&cache_dir, &print).unwrap().expect("finished cache");
    let back = cache.shard(1, &dev).unwrap();
    assert_eq!(back.log_probs.to_vec2::<f32>().unwrap(), shard(2, 1.5).log_probs.to_vec2::<f32>().unwrap());
    assert_eq!(back.ids.dtype(), DType::U32);
    // Another k (or teacher, data, temperature) is refused, naming the key and both values.
    let mut other = print.clone();
    other["k"] = serde_json::json!(4);
    let err = TeacherCache::open(&cache_dir, &other).unwrap_err().to_string();
    assert!(err.contains("stale") && err.contains("k: cached 2, now 4"), "{err}");
    // An altered or missing shard is an error naming the file.
    let path = cache_dir.join("shard-00000.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let err = cache.shard(0, &dev).unwrap_err().to_string();
    assert!(err.contains("shard-00000.safetensors") && err.contains("sha256"), "{err}");
    std::fs::remove_file(&path).unwrap();
    let err = cache.shard(0, &dev).unwrap_err().to_string();
    assert!(err.contains("shard-00000.safetensors") && err.contains("missing"), "{err}");
}

/// Runs `cfg`, returning its summary and whether the teacher was loaded (its load note).
fn run_noting_teacher(cfg: &DistillConfig) -> graft::Result<(finetune::Summary, bool)> {
    let mut loaded = false;
    let summary = distill::run(cfg, false, &mut |e| {
        if let graft::train::Event::Note(n) = e {
            loaded |= n.starts_with("loading the teacher");
        }
    })?;
    Ok((summary, loaded))
}

/// The default model teaching a LoRA copy of itself on three paragraphs (seq_len 16, batch 2,
/// 3 steps: the second epoch reads the cache again), uncached and through caches of `k = V`
/// and `k = 8`, then once more through the first cache, which is reused without the teacher.
#[test]
fn a_teacher_cache_is_filled_once_reused_without_the_teacher_and_matches_it_at_full_k() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = common::default_gguf();
    let mut plain = config(dir.path(), "plain", AdapterKind::Lora, &gguf);
    plain.model.name = gguf.display().to_string();
    let text = std::fs::read_to_string(&plain.data.train).unwrap();
    let three = dir.path().join("three.jsonl");
    std::fs::write(&three, text.lines().take(3).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    (plain.data.train, plain.data.eval) = (three.clone(), Some(three));
    (plain.data.seq_len, plain.train.max_steps, plain.train.eval_batches) = (16, Some(3), 1);
    plain.distill.kd_ratio = 0.9;
    let vocab = 49152;
    let cached = |run: &str, cache: &str, k: usize| {
        let mut cfg =
            DistillConfig { output: graft::config::OutputSection { dir: dir.path().join(run) }, ..plain.clone() };
        (cfg.distill.teacher_cache, cfg.distill.cache_top_k) = (Some(dir.path().join(cache)), k);
        cfg
    };
    let (_, loaded) = run_noting_teacher(&plain).unwrap();
    assert!(loaded);
    let full = cached("full", "cache-full", vocab);
    let (summary, loaded) = run_noting_teacher(&full).unwrap();
    let report = summary.teacher_cache.expect("teacher_cache in the summary");
    assert!(loaded && report.state == graft::recipes::distill_fill::CacheState::Filled, "{report:?}");
    // 3 rows of 16 tokens: 15 supervised positions each, every id kept (u32 + f32 per id).
    assert_eq!((report.examples, report.positions, report.top_k), (3, 45, vocab), "{report:?}");
    assert!(report.bytes > 45 * vocab as u64 * 8, "{report:?}");
    // With every id kept the cache is the teacher: the same losses up to float rounding (the
    // teacher's states come from other batches, so their sums run in another order).
    let (a, b) = (losses(&plain.output.dir), losses(&full.output.dir));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4 * x.abs().max(1.0), "uncached {a:?} vs cached {b:?}");
    }
    // Reused: the teacher is not loaded, and the run is the first cached run to the bit.
    let again = cached("again", "cache-full", vocab);
    let (summary, loaded) = run_noting_teacher(&again).unwrap();
    let report = summary.teacher_cache.unwrap();
    assert!(!loaded && report.state == graft::recipes::distill_fill::CacheState::Reused, "{report:?}");
    assert_eq!(report.fill_time_s, 0.0);
    assert_eq!(losses(&again.output.dir), b);
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(again.output.dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(written["teacher_cache"]["state"], "reused", "{written}");
    // Fewer ids: at step 1 the student is the teacher (LoRA starts at zero), so the uncached KD
    // term is 0, and so is the cached one at any k (top-k ids and one remainder bucket, the same
    // on both sides); the cross-entropy does not involve the teacher and is the same to the bit.
    let first = |run: &Path, key: &str| common::metrics_without_timing(run)[0]["metrics"][key].as_f64().unwrap();
    assert_eq!(first(&plain.output.dir, "kd"), 0.0);
    for k in [8, 256] {
        let small = cached(&format!("k{k}"), &format!("cache-{k}"), k);
        run_noting_teacher(&small).unwrap();
        assert_eq!(first(&small.output.dir, "ce"), first(&plain.output.dir, "ce"), "k = {k}");
        let kd = first(&small.output.dir, "kd");
        assert!(kd.abs() < 1e-4, "k = {k}: step-1 KD term {kd} where the student is the teacher");
    }
}

#[test]
fn a_stale_or_damaged_teacher_cache_is_refused_naming_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = small_model(dir.path(), "teacher", 7);
    let mut cfg = config(dir.path(), "run", AdapterKind::Lora, &teacher);
    let cache = dir.path().join("cache");
    (cfg.distill.teacher_cache, cfg.distill.cache_top_k, cfg.train.max_steps) = (Some(cache.clone()), 4, Some(2));
    let run = |cfg: &DistillConfig, out: &str| {
        let cfg = DistillConfig { output: graft::config::OutputSection { dir: dir.path().join(out) }, ..cfg.clone() };
        run_noting_teacher(&cfg)
    };
    run(&cfg, "a").unwrap();
    let err = |c: &DistillConfig, out: &str| {
        let e = run(c, out).unwrap_err();
        assert!(matches!(e, graft::GraftError::Input(_)), "{e:?}");
        e.to_string()
    };
    let other_k = DistillConfig {
        distill: graft::config::distill::DistillSection { cache_top_k: 8, ..cfg.distill.clone() },
        ..cfg.clone()
    };
    let e = err(&other_k, "b");
    assert!(e.contains("stale") && e.contains("k: cached 4, now 8"), "{e}");
    let mut other_t = cfg.clone();
    other_t.distill.temperature = 1.0;
    assert!(err(&other_t, "c").contains("temperature: cached 2.0, now 1.0"));
    // Another data file (one paragraph more) is refused by its digest.
    let mut more = std::fs::read_to_string(&cfg.data.train).unwrap();
    more.push_str("{\"text\": \"One more paragraph.\"}\n");
    let file = dir.path().join("more.jsonl");
    std::fs::write(&file, more).unwrap();
    let other_data =
        DistillConfig { data: graft::config::DataSection { train: file, ..cfg.data.clone() }, ..cfg.clone() };
    assert!(err(&other_data, "d").contains("data.sha256: cached"));
    // A damaged or missing shard is named.
    let shard = cache.join("shard-00000.safetensors");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&shard, &bytes).unwrap();
    let e = err(&cfg, "e");
    assert!(e.contains("shard-00000.safetensors") && e.contains("sha256"), "{e}");
    std::fs::remove_file(&shard).unwrap();
    let e = err(&cfg, "f");
    assert!(e.contains("shard-00000.safetensors") && e.contains("missing"), "{e}");
    // Without its manifest (an interrupted fill) the folder is filled again.
    std::fs::remove_file(cache.join("manifest.json")).unwrap();
    let (summary, loaded) = run(&cfg, "g").unwrap();
    assert!(loaded && summary.teacher_cache.unwrap().state == graft::recipes::distill_fill::CacheState::Filled);
    assert!(shard.is_file());
    // Hidden-state pairs need the teacher's states, which the cache does not hold.
    let mut hidden = cfg.clone();
    hidden.distill.hidden_layers = vec![[1, 1]];
    let e = err(&hidden, "h");
    assert!(e.contains("distill.teacher_cache") && e.contains("hidden_layers") && e.contains("hidden states"), "{e}");
}

#[test]
fn a_killed_distillation_with_a_teacher_cache_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = small_model(dir.path(), "teacher", 7);
    let mut whole = config(dir.path(), "whole", AdapterKind::Lora, &teacher);
    (whole.train.max_steps, whole.train.save_every) = (Some(6), 2);
    (whole.distill.teacher_cache, whole.distill.cache_top_k) = (Some(dir.path().join("cache")), 16);
    let (summary, _) = run_noting_teacher(&whole).unwrap();
    assert_eq!(summary.teacher_cache.unwrap().state, graft::recipes::distill_fill::CacheState::Filled);
    let cut = DistillConfig { output: graft::config::OutputSection { dir: dir.path().join("cut") }, ..whole.clone() };
    common::killed_at(3, |on_event| distill::run(&cut, false, on_event));
    distill::run(&cut, true, &mut |_| {}).unwrap();
    let (a, b) = (common::metrics_without_timing(&whole.output.dir), common::metrics_without_timing(&cut.output.dir));
    assert_eq!(a.len(), 6);
    assert_eq!(a, b);
    let read = |run: &Path| std::fs::read(run.join("adapter/adapter_model.safetensors")).unwrap();
    assert!(read(&whole.output.dir) == read(&cut.output.dir), "the adapters differ");
}

/// Gemma-3-270M (262,144 ids), the cross-tokenizer teacher.
fn gemma() -> PathBuf {
    match graft::assets::resolve_model("gemma3-270m", false).expect("gemma3-270m") {
        graft::assets::ModelSource::Gguf(p) => p,
        other => panic!("gemma3-270m resolved to {other:?}"),
    }
}

/// Two short tweet-sentiment chats in `dir/chat.jsonl`.
fn short_chats(dir: &Path) -> PathBuf {
    let path = dir.join("chat.jsonl");
    let line = |tweet: &str, label: &str| {
        let messages = serde_json::json!([
            {"role": "user", "content": format!("Sentiment of this tweet? {tweet}")},
            {"role": "assistant", "content": label},
        ]);
        format!("{}\n", serde_json::json!({ "messages": messages }))
    };
    std::fs::write(&path, line("I love sunny days", "positive") + &line("My train is late again", "negative")).unwrap();
    path
}

#[test]
fn a_gemma_teachers_answer_tokens_are_paired_in_order_with_the_students() {
    let dir = tempfile::tempdir().unwrap();
    let student =
        Tokenizer::from_source(&graft::assets::resolve_model(graft::assets::DEFAULT_MODEL, false).unwrap()).unwrap();
    let teacher = Tokenizer::from_gguf(&graft::io::gguf::GgufFile::open(gemma()).unwrap()).unwrap();
    let (pairs, _) =
        graft::data::load_paired_examples(&short_chats(dir.path()), DataFormat::Messages, &student, &teacher, 128)
            .unwrap();
    assert_eq!(pairs.len(), 2);
    let (s, t) = &pairs[0];
    // The base Gemma file has no chat template: it reads the student's, as its own text, after
    // its BOS.
    assert_eq!(t.ids[0], teacher.bos_id().unwrap());
    let text = teacher.decode(&t.ids, false).unwrap();
    assert!(text.contains("<|im_start|>assistant\npositive"), "{text:?} {:?}", t.ids);
    // Supervised: the answer and an end token on each side; they pair in order.
    let answer = |tok: &Tokenizer, ex: &graft::data::Example| {
        let ids: Vec<u32> = ex.ids.iter().zip(&ex.supervised).filter(|(_, &s)| s).map(|(&id, _)| id).collect();
        tok.decode(&ids, true).unwrap()
    };
    assert_eq!((answer(&student, s).trim(), answer(&teacher, t).trim()), ("positive", "positive"));
    let paired = graft::objectives::token_pairing::pair_positions(s, t);
    let n_t = t.supervised.iter().filter(|&&x| x).count();
    let n_s = s.supervised.iter().filter(|&&x| x).count();
    assert_eq!(paired.len(), n_s.min(n_t));
    let first_s = s.supervised.iter().position(|&x| x).unwrap();
    let first_t = t.supervised.iter().position(|&x| x).unwrap();
    assert_eq!(paired[0], (first_s - 1, first_t - 1), "position i predicts token i + 1");
    let (teacher_targets, student_targets): (Vec<u32>, Vec<u32>) =
        paired.iter().map(|&(i, j)| (t.ids[j + 1], s.ids[i + 1])).unzip();
    assert_eq!(teacher.decode(&teacher_targets, true).unwrap().trim(), "positive");
    assert_eq!(student.decode(&student_targets, true).unwrap().trim(), "positive");
}

/// A LoRA SmolLM2-135M student of the Gemma teacher on `data`, `steps` steps of 2 examples.
fn gemma_config(dir: &Path, data: PathBuf, steps: u64) -> DistillConfig {
    let mut cfg = DistillConfig::default();
    cfg.adapter.kind = AdapterKind::Lora;
    cfg.adapter.r = 4;
    cfg.adapter.targets = vec!["q_proj".into(), "v_proj".into()];
    cfg.data.format = DataFormat::Messages;
    (cfg.data.train, cfg.data.eval) = (data.clone(), Some(data));
    cfg.data.seq_len = 128;
    cfg.train.batch_size = 2;
    cfg.train.max_steps = Some(steps);
    cfg.train.eval_batches = 1;
    cfg.output.dir = dir.join("run");
    cfg.teacher.model = "gemma3-270m".into();
    cfg.distill.loss = LossName::Uld;
    cfg.distill.temperature = 2.0;
    cfg
}

#[test]
fn uld_distils_a_gemma_teacher_into_a_smollm2_lora_student() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = gemma_config(dir.path(), short_chats(dir.path()), 2);
    let summary = distill::run(&cfg, false, &mut |_| {}).unwrap();
    assert_eq!(summary.steps, 2);
    for step in common::metrics_without_timing(&cfg.output.dir) {
        let m = &step["metrics"];
        let (kd, ce) = (m["kd"].as_f64().unwrap(), m["ce"].as_f64().unwrap());
        assert!(kd.is_finite() && kd > 0.0 && ce.is_finite(), "{step}");
        // Every student answer token here has a teacher one (the answers are as long).
        assert!(m["paired"].as_f64().unwrap() > 0.5, "{step}");
        let loss = step["loss"].as_f64().unwrap();
        assert!((loss - (0.5 * ce + 0.5 * kd)).abs() < 1e-4 * loss.abs().max(1.0), "{step}");
    }
    assert!(cfg.output.dir.join("adapter/adapter_model.safetensors").is_file());

    // The same pair with a loss that compares token by token is refused, naming both sizes.
    let mut same = gemma_config(dir.path(), cfg.data.train.clone(), 1);
    same.distill.loss = LossName::ForwardKl;
    same.output.dir = dir.path().join("refused");
    let err = distill::run(&same, false, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("262144") && err.contains("49152"), "{err}");
    assert!(err.contains("distill.loss = \"uld\""), "{err}");
}
