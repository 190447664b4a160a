//! Masked-language modelling of BERT encoders: the loss and its gradients against central
//! finite differences (f64, a tiny random BERT with MiniLM's vocabulary and tokenizer), the tied
//! decoder sharing the word embeddings' storage, a killed run resuming bit-identically, the
//! loss falling on real tweets with all-MiniLM-L6-v2, the exported folder embedding differently
//! from the base, and the errors for bad input.

mod common;
#[path = "common/tiny_bert.rs"]
mod tiny_bert;

use candle_core::{DType, Device, Tensor, Var};
use graft::models::bert::{Bert, BertWeights, MlmHead, Pass, SentenceEncoder};
use graft::objectives::masked_lm::mlm_loss;
use graft::objectives::masking::{mask_batch, MaskVocab, MaskingSpec};
use graft::recipes::mlm::{self, MlmConfig};
use graft::train::Event;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use tiny_bert::{metrics_without_timing, minilm, tiny_config, tweet_corpus, write_tiny_bert};

/// Two `[CLS] … [SEP]` sequences of different lengths (so one is padded), masked.
fn masked_pair(vocab: &MaskVocab) -> graft::objectives::masking::Masked {
    let seqs = vec![vec![101, 2023, 2003, 1037, 3231, 6251, 102], vec![101, 7592, 2088, 999, 102]];
    let spec = MaskingSpec { rate: 0.4, ..MaskingSpec::default() };
    let m = mask_batch(&seqs, vocab, &spec, 0, 3);
    assert!(m.targets.len() >= 3, "{:?}", m.targets);
    m
}

#[test]
fn mlm_loss_and_gradients_match_finite_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_bert(tmp.path(), &[]);
    let cfg = tiny_config();
    let mut model = Bert::load(cfg.clone(), &BertWeights::open(&dir).unwrap(), &Device::Cpu, DType::F64).unwrap();
    let mut head = MlmHead::init(&cfg, 5, &Device::Cpu, DType::F64).unwrap();
    let mut vars = model.make_trainable(|_| true).unwrap();
    vars.extend(head.make_trainable().unwrap());
    // A non-trivial head: biases and LayerNorm away from their initial 0 / 1.
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for (name, v) in &vars {
        if name.starts_with("cls.") && !name.ends_with("dense.weight") {
            let n = v.elem_count();
            let noise: Vec<f64> = (0..n).map(|_| 0.5 * (rng.random::<f64>() - 0.5)).collect();
            let t = (v.as_tensor() + Tensor::from_vec(noise, v.dims(), &Device::Cpu).unwrap()).unwrap();
            v.set(&t).unwrap();
        }
    }
    let tok = SentenceEncoder::from_hf_folder(&minilm(), &Device::Cpu, DType::F32).unwrap();
    let vocab = MaskVocab::from_tokenizer(tok.hf_tokenizer(), cfg.vocab_size).unwrap();
    let masked = masked_pair(&vocab);
    let loss = |pass| mlm_loss(&model, &head, &masked, 0, pass).unwrap();
    let value = |pass| loss(pass).sum.to_scalar::<f64>().unwrap();
    let l = loss(Pass::Train);
    assert_eq!(l.count, masked.targets.len());
    assert!((value(Pass::Infer) - value(Pass::Train)).abs() < 1e-9, "the two passes compute the same loss");
    let grads = l.sum.backward().unwrap();
    let var = |name: &str| -> &Var { &vars.iter().find(|(n, _)| n == name).unwrap().1 };
    // The tied table gets gradient from the input lookup and from the decoder: check rows of
    // both kinds (a masked token's input row, a target's decoder row, an unrelated row).
    let targets: Vec<usize> = masked.targets.iter().map(|t| t.id as usize).collect();
    let checks: Vec<(&str, Vec<usize>)> = vec![
        ("embeddings.word_embeddings.weight", vec![103 * 16 + 3, targets[0] * 16 + 5, 2023 * 16 + 1, 500 * 16 + 7]),
        ("embeddings.position_embeddings.weight", vec![16 + 2, 3 * 16 + 9]),
        ("encoder.layer.0.attention.self.query.weight", vec![0, 17, 100]),
        ("encoder.layer.1.output.dense.bias", vec![4]),
        ("encoder.layer.1.output.LayerNorm.weight", vec![6]),
        ("cls.predictions.transform.dense.weight", vec![0, 33, 255]),
        ("cls.predictions.transform.LayerNorm.bias", vec![2]),
        ("cls.predictions.bias", vec![targets[1], 999]),
    ];
    let eps = 1e-5;
    for (name, elems) in checks {
        let v = var(name);
        let g = grads.get(v).unwrap_or_else(|| panic!("no gradient for {name}")).flatten_all().unwrap();
        let g = g.to_vec1::<f64>().unwrap();
        let base = v.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for &i in &elems {
            let at = |delta: f64| {
                let mut w = base.clone();
                w[i] += delta;
                v.set(&Tensor::from_vec(w, v.dims(), &Device::Cpu).unwrap()).unwrap();
                value(Pass::Train)
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            v.set(&Tensor::from_vec(base.clone(), v.dims(), &Device::Cpu).unwrap()).unwrap();
            let err = (fd - g[i]).abs();
            assert!(err <= 1e-6 * (1.0 + fd.abs()), "{name}[{i}]: backward {} vs finite differences {fd}", g[i]);
        }
    }
    // Padding is never a target, and the loss does not depend on what the padding holds.
    let other_pad = mlm_loss(&model, &head, &masked, 1000, Pass::Infer).unwrap().sum.to_scalar::<f64>().unwrap();
    assert!((other_pad - value(Pass::Infer)).abs() < 1e-9);
}

#[test]
fn the_decoder_is_the_word_embedding_variable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_bert(tmp.path(), &[]);
    let cfg = tiny_config();
    let mut model = Bert::load(cfg.clone(), &BertWeights::open(&dir).unwrap(), &Device::Cpu, DType::F32).unwrap();
    let head = MlmHead::init(&cfg, 1, &Device::Cpu, DType::F32).unwrap();
    let vars = model.make_trainable(|_| true).unwrap();
    let (_, emb) = vars.iter().find(|(n, _)| n == "embeddings.word_embeddings.weight").unwrap();
    // The same tensor (one id, one storage) serves the lookup and the decoder.
    assert_eq!(model.word_embeddings().id(), emb.as_tensor().id());
    let rows = Tensor::randn(0f32, 1.0, (3, 16), &Device::Cpu).unwrap();
    let before = head.logits(&rows, model.word_embeddings(), Pass::Infer).unwrap();
    // An update of the embedding variable (what the optimizer does) changes the decoder: with
    // the table zeroed, every logit is the output bias (0 for a fresh head).
    emb.set(&emb.as_tensor().zeros_like().unwrap()).unwrap();
    let after = head.logits(&rows, model.word_embeddings(), Pass::Infer).unwrap();
    assert!(common::max_abs_diff(&before, &Tensor::zeros_like(&before).unwrap()) > 0.1);
    assert_eq!(common::max_abs_diff(&after, &Tensor::zeros_like(&after).unwrap()), 0.0);
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
    cfg
}

#[test]
fn a_killed_mlm_run_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let model = write_tiny_bert(&tmp.path().join("tiny"), &[]);
    let corpus = tweet_corpus(tmp.path(), 40);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut cfg_a = config(&model, &corpus, &a, 8);
    cfg_a.train.save_every = 2;
    cfg_a.train.eval_every = 3;
    cfg_a.mlm.whole_word = true;
    let whole = mlm::run(&cfg_a, false, &mut |_| {}).unwrap();
    assert_eq!(whole.run.steps, 8);
    let cfg_b = MlmConfig { output: graft::config::OutputSection { dir: b.clone() }, ..cfg_a.clone() };
    let died = std::panic::catch_unwind(AssertUnwindSafe(|| {
        mlm::run(&cfg_b, false, &mut |e| {
            if let Event::Step(r) = e {
                assert!(r.step < 5, "simulated kill after step {}", r.step);
            }
        })
    }));
    assert!(died.is_err(), "the run should have died at step 5");
    let resumed = mlm::run(&cfg_b, true, &mut |_| {}).unwrap();
    assert_eq!(resumed.run.steps, 8);
    assert_eq!(metrics_without_timing(&a), metrics_without_timing(&b));
    assert_eq!(whole.run.final_eval_loss, resumed.run.final_eval_loss);
    let weights = |dir: &Path| std::fs::read(dir.join("encoder/model.safetensors")).unwrap();
    assert!(weights(&a) == weights(&b), "the resumed run's encoder differs from the uninterrupted one's");
    // The run directory has what every trainer run has.
    for f in ["summary.json", "config.resolved.toml", "checkpoints/LATEST", "encoder/config.json"] {
        assert!(b.join(f).exists(), "{f}");
    }
}

#[test]
fn mlm_loss_falls_on_tweets_and_the_export_embeds_differently() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tweet_corpus(tmp.path(), 120);
    let out = tmp.path().join("run");
    let mut cfg = config(&minilm(), &corpus, &out, 6);
    cfg.train.batch_size = 8;
    cfg.train.lr = 2e-4;
    let s = mlm::run(&cfg, false, &mut |e| eprintln!("{e:?}")).unwrap();
    let (base, fin) = (s.run.base_eval_loss.unwrap(), s.run.final_eval_loss.unwrap());
    eprintln!(
        "MiniLM MLM held-out loss {base:.3} -> {fin:.3}, accuracy {:?} -> {:?}",
        s.base_eval_accuracy, s.final_eval_accuracy
    );
    // all-MiniLM-L6-v2 has no MLM head: all of it is fresh.
    assert_eq!(s.head_initialised.len(), 5, "{:?}", s.head_initialised);
    assert!(fin < base - 0.5, "held-out MLM loss {base} -> {fin}");
    assert_eq!(s.run.steps, 6);

    // The export loads as an encoder (the head now from the checkpoint) and embeds differently.
    let export = out.join("encoder");
    let listing: Vec<_> = std::fs::read_dir(&export).unwrap().map(|e| e.unwrap().file_name()).collect();
    for f in ["1_Pooling/config.json", "tokenizer.json", "modules.json", "config.json"] {
        assert!(export.join(f).is_file(), "{f} not in the export: {listing:?}");
    }
    let stored = graft::io::safetensors::open_safetensors(export.join("model.safetensors")).unwrap();
    assert!(stored.info("bert.embeddings.word_embeddings.weight").is_some());
    assert!(stored.info("cls.predictions.bias").is_some());
    assert!(stored.info("cls.predictions.decoder.weight").is_none(), "the decoder is tied, not stored");
    let adapted = SentenceEncoder::from_hf_folder(&export, &Device::Cpu, DType::F32).unwrap();
    let head = MlmHead::load_or_init(
        adapted.model().config(),
        &BertWeights::open(&export).unwrap(),
        0,
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    assert!(head.fresh().is_empty());
    let base_enc = SentenceEncoder::from_hf_folder(&minilm(), &Device::Cpu, DType::F32).unwrap();
    let texts = ["the flight was delayed again", "great service, thank you!"];
    let e0 = base_enc.embed(&texts, 2, &mut |_| {}).unwrap().vectors;
    let e1 = adapted.embed(&texts, 2, &mut |_| {}).unwrap().vectors;
    let d = common::max_abs_diff(&e0, &e1);
    assert!(d > 1e-3, "the adapted encoder embeds as the base does (max diff {d})");
}

#[test]
fn bad_input_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tweet_corpus(tmp.path(), 10);
    // An encoder checkpoint without word embeddings has nothing to tie the decoder to.
    let no_emb = write_tiny_bert(&tmp.path().join("no-emb"), &["embeddings.word_embeddings.weight"]);
    let err = mlm::run(&config(&no_emb, &corpus, &tmp.path().join("r1"), 1), false, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("embeddings.word_embeddings.weight"), "{err}");
    // A corpus without a token to mask, and an empty file.
    let model = write_tiny_bert(&tmp.path().join("tiny"), &[]);
    let blank = tmp.path().join("blank.jsonl");
    std::fs::write(&blank, "{\"text\": \"\"}\n{\"text\": \"  \"}\n").unwrap();
    let err = mlm::run(&config(&model, &blank, &tmp.path().join("r2"), 1), false, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("no text with a token to mask"), "{err}");
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let err = mlm::run(&config(&model, &empty, &tmp.path().join("r3"), 1), false, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("no text with a token to mask"), "{err}");
    // A decoder is not an encoder; a non-text format is refused.
    let err =
        mlm::run(&config(&common::default_gguf(), &corpus, &tmp.path().join("r4"), 1), false, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("BERT encoder folder"), "{err}");
    let mut cfg = config(&model, &corpus, &tmp.path().join("r5"), 1);
    cfg.data.format = graft::data::DataFormat::Alpaca;
    assert!(cfg.validate().unwrap_err().to_string().contains("data.format"));
}
