//! Unsupervised SimCSE of BERT encoders: the loss and geometry against a hand-computed case,
//! gradients through the dropout views against central finite differences (f64, a tiny random
//! BERT), dropout making two views differ in training and nothing in evaluation, a killed run
//! resuming bit-identically, and the loss falling on real tweets with all-MiniLM-L6-v2.

mod common;
#[path = "common/tiny_bert.rs"]
mod tiny_bert;

use candle_core::{DType, Device, Tensor};
use graft::models::bert::{Dropout, Pass, SentenceEncoder};
use graft::objectives::simcse::{contrastive_loss, geometry, Simcse, SimcseSpec};
use graft::recipes::mlm::{simcse, MlmConfig};
use graft::train::Event;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use tiny_bert::{metrics_without_timing, minilm, tweet_corpus, write_tiny_bert};

#[test]
fn loss_and_geometry_match_a_hand_computed_case() {
    let t = |v: Vec<f64>| Tensor::from_vec(v, (2, 2), &Device::Cpu).unwrap();
    let (a, b) = (t(vec![1.0, 0.0, 0.0, 1.0]), t(vec![1.0, 0.0, 0.6, 0.8]));
    // τ = 0.5: logits [[2, 1.2], [0, 1.6]], positives on the diagonal:
    // (−2 + ln(e² + e^1.2)) + (−1.6 + ln(1 + e^1.6)) = 0.5550014068361164.
    let loss = contrastive_loss(&a, &b, 0.5).unwrap().to_scalar::<f64>().unwrap();
    assert!((loss - 0.5550014068361164).abs() < 1e-12, "{loss}");
    let g = geometry(&a, &b).unwrap();
    // Alignment: (0 + 0.6² + 0.2²) / 2; uniformity: ln exp(−2·2); cosine of the two first views: 0.
    assert!((g.alignment - 0.2).abs() < 1e-12, "{g:?}");
    assert!((g.uniformity + 4.0).abs() < 1e-12, "{g:?}");
    assert!(g.mean_cosine.abs() < 1e-12, "{g:?}");
    assert!(contrastive_loss(&a.narrow(0, 0, 1).unwrap(), &b.narrow(0, 0, 1).unwrap(), 0.5).is_err());
}

fn texts(enc: &SentenceEncoder) -> Vec<Vec<u32>> {
    ["the flight was delayed again", "great service, thank you!", "lost my bag"]
        .iter()
        .map(|t| enc.tokenize(t).unwrap().ids)
        .collect()
}

#[test]
fn dropout_views_differ_in_training_and_match_without_dropout() {
    let tmp = tempfile::tempdir().unwrap();
    let enc = SentenceEncoder::from_hf_folder(&write_tiny_bert(tmp.path(), &[]), &Device::Cpu, DType::F32).unwrap();
    let objective = Simcse::new(&enc, texts(&enc), SimcseSpec::default(), 7, Vec::new()).unwrap();
    let (a, b) = objective.views(&[0, 1, 2], 4, Pass::Train).unwrap();
    assert!(common::max_abs_diff(&a, &b) > 1e-3, "dropout gave the two views the same masks");
    // Masks are a function of (seed, micro-step): the same step repeats, another differs.
    let (a2, b2) = objective.views(&[0, 1, 2], 4, Pass::Train).unwrap();
    assert_eq!(common::max_abs_diff(&a, &a2), 0.0);
    assert_eq!(common::max_abs_diff(&b, &b2), 0.0);
    let (a5, _) = objective.views(&[0, 1, 2], 5, Pass::Train).unwrap();
    assert!(common::max_abs_diff(&a, &a5) > 1e-3);
    // Without dropout (evaluation, embedding) the two copies are the same.
    let seqs = texts(&enc);
    let doubled: Vec<Vec<u32>> = seqs.iter().chain(&seqs).cloned().collect();
    for pass in [Pass::Train, Pass::Infer] {
        let z = enc.embed_ids(&doubled, pass).unwrap();
        let d = common::max_abs_diff(&z.narrow(0, 0, 3).unwrap(), &z.narrow(0, 3, 3).unwrap());
        assert!(d < 1e-6, "{pass:?}: {d}");
    }
    // A zero rate is the identity.
    let x = Tensor::ones((4, 5), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(common::max_abs_diff(&Dropout::new(0.0, 1, 2).apply(&x).unwrap(), &x), 0.0);
}

#[test]
fn simcse_gradients_match_finite_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_bert(tmp.path(), &[]);
    let mut enc = SentenceEncoder::from_hf_folder(&dir, &Device::Cpu, DType::F64).unwrap();
    let vars = enc.model_mut().make_trainable(|_| true).unwrap();
    let spec = SimcseSpec { temperature: 0.5, dropout: 0.1 };
    let objective = Simcse::new(&enc, texts(&enc), spec, 11, Vec::new()).unwrap();
    let value = || {
        let (a, b) = objective.views(&[0, 1, 2], 3, Pass::Train).unwrap();
        contrastive_loss(&a, &b, spec.temperature).unwrap()
    };
    let loss = value();
    let grads = loss.backward().unwrap();
    let checks: Vec<(&str, Vec<usize>)> = vec![
        ("embeddings.word_embeddings.weight", vec![101 * 16 + 3, 3462 * 16 + 5, 500 * 16 + 7]),
        ("embeddings.position_embeddings.weight", vec![16 + 2, 3 * 16 + 9]),
        ("encoder.layer.0.attention.self.query.weight", vec![0, 17, 100]),
        ("encoder.layer.0.attention.self.value.bias", vec![5]),
        ("encoder.layer.1.intermediate.dense.weight", vec![40, 300]),
        ("encoder.layer.1.output.LayerNorm.weight", vec![6]),
    ];
    let eps = 1e-5;
    let mut nonzero = 0;
    for (name, elems) in checks {
        let v = &vars.iter().find(|(n, _)| n == name).unwrap().1;
        let g = grads.get(v).unwrap_or_else(|| panic!("no gradient for {name}")).flatten_all().unwrap();
        let g = g.to_vec1::<f64>().unwrap();
        let base = v.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for &i in &elems {
            let at = |delta: f64| {
                let mut w = base.clone();
                w[i] += delta;
                v.set(&Tensor::from_vec(w, v.dims(), &Device::Cpu).unwrap()).unwrap();
                value().to_scalar::<f64>().unwrap()
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            v.set(&Tensor::from_vec(base.clone(), v.dims(), &Device::Cpu).unwrap()).unwrap();
            let err = (fd - g[i]).abs();
            assert!(err <= 1e-6 * (1.0 + fd.abs()), "{name}[{i}]: backward {} vs finite differences {fd}", g[i]);
            nonzero += usize::from(fd.abs() > 1e-8);
        }
    }
    assert!(nonzero >= 8, "too few checked gradients are non-zero ({nonzero})");
}

fn config(model: &Path, corpus: &Path, out: &Path, steps: u64) -> MlmConfig {
    let mut cfg = MlmConfig::default();
    cfg.model.name = model.to_str().unwrap().into();
    cfg.data.train = corpus.to_path_buf();
    cfg.data.seq_len = 32;
    cfg.data.eval_fraction = 0.2;
    cfg.train.max_steps = Some(steps);
    cfg.train.batch_size = 4;
    cfg.train.lr = 1e-3;
    cfg.output.dir = out.to_path_buf();
    cfg.simcse = Some(SimcseSpec::default());
    cfg
}

#[test]
fn a_killed_simcse_run_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write_tiny_bert(&tmp.path().join("tiny"), &[]);
    let corpus = tweet_corpus(tmp.path(), 40);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut cfg_a = config(&model, &corpus, &a, 8);
    cfg_a.train.save_every = 2;
    cfg_a.train.eval_every = 3;
    let whole = simcse::run(&cfg_a, false, &mut |_| {}).unwrap();
    assert_eq!(whole.run.steps, 8);
    let cfg_b = MlmConfig { output: graft::config::OutputSection { dir: b.clone() }, ..cfg_a.clone() };
    let died = std::panic::catch_unwind(AssertUnwindSafe(|| {
        simcse::run(&cfg_b, false, &mut |e| {
            if let Event::Step(r) = e {
                assert!(r.step < 5, "simulated kill after step {}", r.step);
            }
        })
    }));
    assert!(died.is_err(), "the run should have died at step 5");
    let resumed = simcse::run(&cfg_b, true, &mut |_| {}).unwrap();
    assert_eq!(resumed.run.steps, 8);
    let (ma, mb) = (metrics_without_timing(&a), metrics_without_timing(&b));
    assert_eq!(ma, mb);
    let logged = |m: &serde_json::Value, k: &str| m["metrics"].get(k).is_some_and(serde_json::Value::is_f64);
    assert!(ma.iter().all(|m| ["alignment", "uniformity", "mean_cosine"].iter().all(|k| logged(m, k))), "{ma:?}");
    assert_eq!(whole.run.final_eval_loss, resumed.run.final_eval_loss);
    assert_eq!(whole.final_eval_geometry, resumed.final_eval_geometry);
    let weights = |dir: &Path| std::fs::read(dir.join("encoder/model.safetensors")).unwrap();
    assert!(weights(&a) == weights(&b), "the resumed run's encoder differs from the uninterrupted one's");
}

#[test]
fn simcse_loss_falls_on_tweets_and_the_export_embeds() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tweet_corpus(tmp.path(), 120);
    let out = tmp.path().join("run");
    let mut cfg = config(&minilm(), &corpus, &out, 6);
    cfg.train.batch_size = 8;
    cfg.train.lr = 3e-5;
    let s = simcse::run(&cfg, false, &mut |e| eprintln!("{e:?}")).unwrap();
    let (base, fin) = (s.run.base_eval_loss.unwrap(), s.run.final_eval_loss.unwrap());
    let (g0, g1) = (s.base_eval_geometry.unwrap(), s.final_eval_geometry.unwrap());
    eprintln!("MiniLM SimCSE held-out loss {base:.4} -> {fin:.4}; geometry {g0:?} -> {g1:?}");
    assert!(fin < base, "held-out SimCSE loss {base} -> {fin}");
    assert!(g1.mean_cosine < 0.9, "collapsed: {g1:?}");
    let export = out.join("encoder");
    let adapted = SentenceEncoder::from_hf_folder(&export, &Device::Cpu, DType::F32).unwrap();
    let base_enc = SentenceEncoder::from_hf_folder(&minilm(), &Device::Cpu, DType::F32).unwrap();
    let texts = ["the flight was delayed again", "great service, thank you!"];
    let e0 = base_enc.embed(&texts, 2, &mut |_| {}).unwrap().vectors;
    let e1 = adapted.embed(&texts, 2, &mut |_| {}).unwrap().vectors;
    assert!(common::max_abs_diff(&e0, &e1) > 1e-4);
    assert!(export.join("1_Pooling/config.json").is_file());
}
