//! Feature extraction and classification heads: heads on synthetic data (a linear head separates
//! separable classes, fails XOR where an MLP head fits it, survives save/load bit for bit),
//! decoder features on the default SmolLM2 model (batched with padding equals one at a time,
//! last-token pooling equals the model's own hidden state), training a decoder's top blocks
//! (loss falls, lower blocks untouched), an encoder probe on real tweets, and heads trained
//! through the trainer that are killed mid-run and resumed to bit-identical weights.

mod common;

use candle_core::{DType, Device, Tensor};
use graft::features::{
    decoder_features, encoder_features, fit_decoder_classifier, fit_head, train_decoder_classifier, train_head,
    DecoderTuning, HeadConfig, HeadKind, Pooling, RunOutput, TrainedHead,
};
use graft::models::llama::{Llama, LoadOptions, Pass};
use graft::models::Model;
use graft::train::{Event, RunDir};
use graft::GraftError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::OnceLock;

fn accuracy(pred: &[usize], labels: &[usize]) -> f64 {
    pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / labels.len() as f64
}

fn tensor(rows: &[Vec<f32>]) -> Tensor {
    let d = rows[0].len();
    Tensor::from_vec(rows.concat(), (rows.len(), d), &Device::Cpu).unwrap()
}

/// Points in 8 dimensions (drawn from `seed`) labelled by the argmax of one fixed random linear map into 3 classes,
/// keeping only points with a margin of at least 0.5 between the top two scores.
fn separable(n: usize, seed: u64) -> (Tensor, Vec<usize>) {
    let mut rule = ChaCha8Rng::seed_from_u64(0);
    let w: Vec<Vec<f32>> = (0..3).map(|_| (0..8).map(|_| rule.random_range(-1.0..1.0)).collect()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    while xs.len() < n {
        let x: Vec<f32> = (0..8).map(|_| rng.random_range(-3.0..3.0)).collect();
        let mut s: Vec<(f32, usize)> =
            w.iter().enumerate().map(|(c, wc)| (wc.iter().zip(&x).map(|(a, b)| a * b).sum(), c)).collect();
        s.sort_by(|a, b| b.0.total_cmp(&a.0));
        if s[0].0 - s[1].0 >= 0.5 {
            xs.push(x);
            ys.push(s[0].1);
        }
    }
    (tensor(&xs), ys)
}

/// Four noisy clusters at (±1, ±1) (plus two noise features), labelled by XOR of the signs.
fn xor(n: usize, seed: u64) -> (Tensor, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for i in 0..n {
        let (a, b) = (i % 2, (i / 2) % 2);
        let sign = |bit: usize| if bit == 1 { 1f32 } else { -1f32 };
        let mut noise = || rng.random_range(-0.3f32..0.3);
        xs.push(vec![sign(a) + noise(), sign(b) + noise(), noise(), noise()]);
        ys.push(a ^ b);
    }
    (tensor(&xs), ys)
}

#[test]
fn linear_head_separates_linearly_separable_classes() {
    let (x, y) = separable(300, 1);
    let cfg = HeadConfig { epochs: 100, lr: 0.05, weight_decay: 0.0, ..HeadConfig::default() };
    let (head, losses) = train_head(&x, &y, 3, &cfg).unwrap();
    assert_eq!(losses.len(), 100);
    assert_eq!((losses[0].step, losses[99].step), (1, 100));
    assert!(losses[99].loss < losses[0].loss / 5.0, "loss {} -> {}", losses[0].loss, losses[99].loss);
    let acc = accuracy(&head.predict(&x).unwrap(), &y);
    assert_eq!(acc, 1.0, "training accuracy on separable data");
    assert_eq!(head.trainable_params(), 8 * 3 + 3);
    let (xt, yt) = separable(200, 2);
    let test_acc = accuracy(&head.predict(&xt).unwrap(), &yt);
    assert!(test_acc >= 0.95, "held-out accuracy {test_acc}");
}

#[test]
fn max_grad_norm_clips_every_step_of_a_head() {
    let (x, y) = separable(300, 1);
    let free = HeadConfig { epochs: 20, lr: 0.05, weight_decay: 0.0, ..HeadConfig::default() };
    let (_, free_losses) = train_head(&x, &y, 3, &free).unwrap();
    // Clipped to far below AdamW's ε, each update shrinks to a sliver of the learning rate: the
    // loss hardly moves where the unclipped head's fell.
    let clipped = HeadConfig { max_grad_norm: 1e-12, ..free.clone() };
    let (_, clipped_losses) = train_head(&x, &y, 3, &clipped).unwrap();
    let fall = |l: &[graft::report::LossPoint]| l[0].loss - l.last().unwrap().loss;
    assert!(fall(&free_losses) > 0.5, "unclipped: {free_losses:?}");
    assert!(fall(&clipped_losses) < 0.05 * fall(&free_losses), "clipped: {clipped_losses:?}");
    // A loose bound changes nothing.
    let loose = HeadConfig { max_grad_norm: 1e6, ..free.clone() };
    assert_eq!(train_head(&x, &y, 3, &loose).unwrap().1, free_losses);
    let bad = HeadConfig { max_grad_norm: -1.0, ..free };
    let e = train_head(&x, &y, 3, &bad).unwrap_err().to_string();
    assert!(e.contains("max_grad_norm must be 0 (off) or more"), "{e}");
}

#[test]
fn xor_defeats_a_linear_head_but_not_an_mlp() {
    let (x, y) = xor(400, 3);
    let (xt, yt) = xor(200, 4);
    let linear = HeadConfig { epochs: 60, lr: 0.02, ..HeadConfig::default() };
    let (lin, _) = train_head(&x, &y, 2, &linear).unwrap();
    let lin_acc = accuracy(&lin.predict(&xt).unwrap(), &yt);
    assert!(lin_acc < 0.7, "a linear head cannot fit XOR, yet got {lin_acc}");
    let mlp = HeadConfig { kind: HeadKind::Mlp { hidden: 32 }, ..linear };
    let (head, losses) = train_head(&x, &y, 2, &mlp).unwrap();
    let acc = accuracy(&head.predict(&xt).unwrap(), &yt);
    assert!(acc >= 0.97, "MLP held-out accuracy on XOR {acc}");
    assert!(losses.last().unwrap().loss < 0.1, "MLP final loss {}", losses.last().unwrap().loss);
    assert_eq!(head.trainable_params(), 4 * 32 + 32 + 32 * 2 + 2);
}

#[test]
fn saved_head_loads_with_identical_logits() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = xor(64, 5);
    for (name, kind) in [("linear", HeadKind::Linear), ("mlp", HeadKind::Mlp { hidden: 8 })] {
        let cfg = HeadConfig { kind, epochs: 5, ..HeadConfig::default() };
        let (head, _) = train_head(&x, &y, 2, &cfg).unwrap();
        let path = dir.path().join(format!("{name}.safetensors"));
        head.save(&path).unwrap();
        let back = TrainedHead::load(&path, &Device::Cpu).unwrap();
        assert_eq!(back.kind(), kind);
        let (a, b) =
            (head.logits(&x).unwrap().to_vec2::<f32>().unwrap(), back.logits(&x).unwrap().to_vec2::<f32>().unwrap());
        assert_eq!(a, b, "{name}: logits after save/load");
        assert_eq!(back.trainable_params(), head.trainable_params());
    }
    // A file that is not a head is refused with its name.
    let other = dir.path().join("other.safetensors");
    let t = Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap();
    candle_core::safetensors::save(&std::collections::HashMap::from([("x".to_string(), t)]), &other).unwrap();
    let err = TrainedHead::load(&other, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("other.safetensors") && err.contains("standardize.mean"), "{err}");
}

#[test]
fn bad_labels_and_inputs_are_input_errors() {
    let (x, mut y) = xor(8, 6);
    let cfg = HeadConfig { epochs: 1, ..HeadConfig::default() };
    y[5] = 7;
    match train_head(&x, &y, 2, &cfg) {
        Err(GraftError::Input(m)) => assert!(m.contains("label 7") && m.contains("example 5"), "{m}"),
        other => panic!("expected an input error, got {other:?}"),
    }
    match train_head(&x, &y[..4], 2, &cfg) {
        Err(GraftError::Input(m)) => assert!(m.contains("4 labels for 8 examples"), "{m}"),
        other => panic!("expected an input error, got {other:?}"),
    }
    let empty = Tensor::zeros((0, 4), DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(train_head(&empty, &[], 2, &cfg), Err(GraftError::Input(_))));
    let zero_epochs = HeadConfig { epochs: 0, ..cfg };
    assert!(matches!(train_head(&x, &[0; 8], 2, &zero_epochs), Err(GraftError::Input(_))));
}

#[test]
fn head_config_reads_from_json_with_defaults() {
    let cfg: HeadConfig = serde_json::from_str(r#"{"kind": {"type": "mlp", "hidden": 16}, "epochs": 5}"#).unwrap();
    assert_eq!(cfg, HeadConfig { kind: HeadKind::Mlp { hidden: 16 }, epochs: 5, ..HeadConfig::default() });
    assert!(serde_json::from_str::<HeadConfig>(r#"{"epoch": 5}"#).is_err(), "unknown fields are refused");
    let clipped: HeadConfig = serde_json::from_str(r#"{"max_grad_norm": 1.0}"#).unwrap();
    assert_eq!(clipped, HeadConfig { max_grad_norm: 1.0, ..HeadConfig::default() });
    assert_eq!(serde_json::to_string(&Pooling::Last).unwrap(), "\"last\"");
}

fn smollm() -> &'static Llama {
    static M: OnceLock<Llama> = OnceLock::new();
    M.get_or_init(|| {
        let source = graft::assets::resolve_model("smollm2-135m-instruct", false).expect("default model");
        graft::models::load::load_causal_lm(&source, &LoadOptions::default()).unwrap()
    })
}

fn tokenize(texts: &[&str]) -> Vec<Vec<u32>> {
    let source = graft::assets::resolve_model("smollm2-135m-instruct", false).unwrap();
    let tok = graft::tokenizer::Tokenizer::from_source(&source).unwrap();
    texts.iter().map(|t| tok.encode(t, false).unwrap()).collect()
}

#[test]
fn batched_decoder_features_equal_one_at_a_time() {
    let model = smollm();
    let seqs =
        tokenize(&["Hi", "The cat sat on the mat.", "Transfer learning reuses what a model already knows.", "ok then"]);
    let lens: Vec<usize> = seqs.iter().map(Vec::len).collect();
    assert!(lens.iter().min() < lens.iter().max(), "lengths differ, so batches carry padding: {lens:?}");
    for pooling in [Pooling::Mean, Pooling::Last] {
        let batched = decoder_features(model, &seqs, Some(4), pooling, 4).unwrap();
        assert_eq!(batched.dims(), [4, 576]);
        assert_eq!(batched.dtype(), DType::F32);
        let single = decoder_features(model, &seqs, Some(4), pooling, 1).unwrap();
        // Padding done wrong moves features by O(1); a different summation order (batched vs
        // single GEMMs, AVX2 vs AVX-512 kernels) by a few f32 ulps of the largest activation,
        // which in SmolLM2 is in the hundreds: bound relative to it (~32 ulps).
        let d = common::max_abs_diff(&batched, &single);
        let scale = single.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(
            d <= 4e-6 * f64::from(scale),
            "{pooling:?}: batched and single features differ by {d} (largest |feature| {scale})"
        );
    }
    // Mean and last pooling differ (except on a one-token sequence).
    let mean = decoder_features(model, &seqs, Some(4), Pooling::Mean, 4).unwrap();
    let last = decoder_features(model, &seqs, Some(4), Pooling::Last, 4).unwrap();
    assert!(common::max_abs_diff(&mean.get(1).unwrap(), &last.get(1).unwrap()) > 1e-2);
}

#[test]
fn last_pooling_is_the_models_hidden_state_at_the_last_real_token() {
    let model = smollm();
    let seqs = tokenize(&["Hello there", "A longer sentence about decoders and their states."]);
    let feats = decoder_features(model, &seqs, None, Pooling::Last, 2).unwrap();
    let n = model.config().num_hidden_layers;
    assert_eq!(common::max_abs_diff(&feats, &decoder_features(model, &seqs, Some(n), Pooling::Last, 2).unwrap()), 0.0);
    for (i, s) in seqs.iter().enumerate() {
        let ids = Tensor::new(s.as_slice(), model.device()).unwrap().unsqueeze(0).unwrap();
        let hidden = model.hidden_states(&ids, None, Pass::Infer).unwrap();
        let want = hidden.get(0).unwrap().get(s.len() - 1).unwrap();
        let d = common::max_abs_diff(&feats.get(i).unwrap(), &want);
        assert!(d <= 1e-4, "sequence {i}: last-token feature differs from the model's hidden state by {d}");
    }
    // Layer 0 is the token embedding itself.
    let emb = decoder_features(model, &seqs, Some(0), Pooling::Last, 2).unwrap();
    let last_id = Tensor::new(&[*seqs[0].last().unwrap()], model.device()).unwrap();
    let want = model.embedding_rows(&last_id).unwrap().squeeze(0).unwrap();
    assert_eq!(common::max_abs_diff(&emb.get(0).unwrap(), &want), 0.0);
    // Bad inputs are named.
    let err = decoder_features(model, &seqs, Some(n + 1), Pooling::Last, 2).unwrap_err().to_string();
    assert!(err.contains(&format!("{}", n + 1)), "{err}");
    let err = decoder_features(model, &[vec![1], vec![]], None, Pooling::Mean, 2).unwrap_err().to_string();
    assert!(err.contains("sequence 1 is empty"), "{err}");
    assert!(decoder_features(model, &[], None, Pooling::Mean, 2).is_err());
}

#[test]
fn training_the_top_blocks_lowers_the_loss_and_leaves_lower_blocks_alone() {
    let mut model = smollm().clone();
    let texts = [
        "I love this, it is wonderful",
        "What a great and happy day",
        "This is excellent news",
        "Fantastic work, well done",
        "I hate this, it is awful",
        "What a terrible and sad day",
        "This is horrible news",
        "Dreadful work, badly done",
    ];
    let seqs = tokenize(&texts);
    let labels = [0, 0, 0, 0, 1, 1, 1, 1];
    let n = model.config().num_hidden_layers;
    let before = model.named_tensors().unwrap();
    let cfg = HeadConfig { epochs: 8, batch_size: 4, lr: 1e-2, ..HeadConfig::default() };
    let (clf, losses) = train_decoder_classifier(&mut model, &seqs, &labels, 2, 2, Pooling::Last, &cfg).unwrap();
    assert_eq!(losses.len(), 8);
    let (first, last) = (losses[0].loss, losses[7].loss);
    assert!(last < first * 0.5, "loss should fall: {first} -> {last}");
    let after = model.named_tensors().unwrap();
    let top = [format!("model.layers.{}.", n - 2), format!("model.layers.{}.", n - 1)];
    let (mut same, mut changed) = (0, 0);
    for ((name, a), (name_b, b)) in before.iter().zip(&after) {
        assert_eq!(name, name_b);
        let d = common::max_abs_diff(a, b);
        if top.iter().any(|p| name.starts_with(p)) || name == "model.norm.weight" {
            changed += usize::from(d > 0.0);
        } else {
            assert_eq!(d, 0.0, "{name} is below the unfrozen blocks but changed");
            same += 1;
        }
    }
    assert!(same > 200 && changed >= 18, "{same} frozen tensors unchanged, {changed} trained tensors changed");
    // 2 blocks of SmolLM2-135M (9 tensors each) + final norm + a 576 -> 2 linear head.
    let block: usize = after.iter().filter(|(n, _)| n.starts_with(&top[0])).map(|(_, t)| t.elem_count()).sum();
    assert_eq!(clf.trainable_params(), 2 * block + 576 + 576 * 2 + 2);
    let acc = accuracy(&clf.predict(&model, &seqs, 4).unwrap(), &labels);
    assert_eq!(acc, 1.0, "the classifier fits its 8 training texts");
}

#[test]
fn encoder_probe_beats_the_majority_class_on_held_out_tweets() {
    let corpus = graft::assets::ensure("tweets", false).expect("tweets dataset");
    let tweets = graft::datasets::tweets::read(&corpus).unwrap();
    let (train, test) = graft::datasets::tweets::split(&tweets, 300, 100, 7);
    let dir = graft::assets::ensure("all-minilm-l6-v2", false).expect("MiniLM");
    let enc = graft::models::bert::SentenceEncoder::from_hf_folder(&dir, &Device::Cpu, DType::F32).unwrap();
    let texts = |ts: &[graft::datasets::tweets::Tweet]| ts.iter().map(|t| t.text.clone()).collect::<Vec<_>>();
    let labels = |ts: &[graft::datasets::tweets::Tweet]| ts.iter().map(|t| t.label).collect::<Vec<_>>();
    let (x, y) = (encoder_features(&enc, &texts(&train), 32).unwrap(), labels(&train));
    let (xt, yt) = (encoder_features(&enc, &texts(&test), 32).unwrap(), labels(&test));
    assert_eq!(x.dims(), [300, 384]);
    let (head, losses) = train_head(&x, &y, 3, &HeadConfig::default()).unwrap();
    assert!(losses.last().unwrap().loss < losses[0].loss);
    let acc = accuracy(&head.predict(&xt).unwrap(), &yt);
    // The majority class of the training split, scored on the test split.
    let majority = (0..3).max_by_key(|&c| y.iter().filter(|&&l| l == c).count()).unwrap();
    let baseline = yt.iter().filter(|&&l| l == majority).count() as f64 / yt.len() as f64;
    eprintln!("encoder probe: held-out accuracy {acc:.3}, majority baseline {baseline:.3}");
    assert!(acc > baseline + 0.05, "probe accuracy {acc} does not beat the majority baseline {baseline}");
}

#[test]
fn training_the_top_encoder_layer_lowers_the_loss() {
    let corpus = graft::assets::ensure("tweets", false).expect("tweets dataset");
    let tweets = graft::datasets::tweets::read(&corpus).unwrap();
    let (train, _) = graft::datasets::tweets::split(&tweets, 24, 0, 11);
    let dir = graft::assets::ensure("all-minilm-l6-v2", false).expect("MiniLM");
    let mut enc = graft::models::bert::SentenceEncoder::from_hf_folder(&dir, &Device::Cpu, DType::F32).unwrap();
    let texts: Vec<String> = train.iter().map(|t| t.text.clone()).collect();
    let labels: Vec<usize> = train.iter().map(|t| t.label).collect();
    let frozen_before = enc.model().layers()[0].attn[0].dense_weight(DType::F32).unwrap();
    let top_before = enc.model().layers()[5].ffn[1].dense_weight(DType::F32).unwrap();
    let cfg = HeadConfig { epochs: 6, batch_size: 8, ..HeadConfig::default() };
    let (clf, losses) = graft::features::train_encoder_classifier(&mut enc, &texts, &labels, 3, 1, &cfg).unwrap();
    assert!(losses[5].loss < losses[0].loss * 0.7, "loss {} -> {}", losses[0].loss, losses[5].loss);
    let frozen_after = enc.model().layers()[0].attn[0].dense_weight(DType::F32).unwrap();
    let top_after = enc.model().layers()[5].ffn[1].dense_weight(DType::F32).unwrap();
    assert_eq!(common::max_abs_diff(&frozen_before, &frozen_after), 0.0, "layer 0 is frozen");
    assert!(common::max_abs_diff(&top_before, &top_after) > 0.0, "layer 5 trained");
    // One MiniLM layer: 4 attention projections 384x384 + 2 FFN 384<->1536, biases, 2 LayerNorms.
    let layer = 4 * (384 * 384 + 384) + 384 * 1536 + 1536 + 1536 * 384 + 384 + 2 * 2 * 384;
    assert_eq!(clf.trainable_params(), layer + 384 * 3 + 3);
    let acc = accuracy(&clf.predict(&enc, &texts, 8).unwrap(), &labels);
    assert!(acc > 0.8, "training accuracy {acc}");
}

#[test]
fn length_grouped_encoder_pass_matches_one_padded_batch_in_value_and_gradient() {
    let corpus = graft::assets::ensure("tweets", false).expect("tweets dataset");
    let tweets = graft::datasets::tweets::read(&corpus).unwrap();
    let mut texts: Vec<String> = tweets.iter().take(9).map(|t| t.text.clone()).collect();
    texts.insert(2, tweets.iter().skip(9).take(6).map(|t| t.text.as_str()).collect::<Vec<_>>().join(" "));
    let dir = graft::assets::ensure("all-minilm-l6-v2", false).expect("MiniLM");
    let mut enc = graft::models::bert::SentenceEncoder::from_hf_folder(&dir, &Device::Cpu, DType::F32).unwrap();
    let vars = enc.model_mut().unfreeze_top_layers(2).unwrap();
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| enc.tokenize(t).unwrap().ids).collect();
    let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
    let groups = graft::data::length_groups(&lens, graft::data::PADDING_SLACK);
    assert!(groups.len() >= 2, "the texts should not share one group: lengths {lens:?}");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let probe: Vec<f32> = (0..texts.len() * enc.dim()).map(|_| rng.random_range(-1.0..1.0)).collect();
    let probe = Tensor::from_vec(probe, (texts.len(), enc.dim()), &Device::Cpu).unwrap();
    let run = |grouped: bool| {
        let e = if grouped { enc.embed_ids_grouped(&ids, Pass::Train) } else { enc.embed_ids(&ids, Pass::Train) };
        let e = e.unwrap();
        let grads = (&e * &probe).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<Tensor> = vars.iter().map(|(_, v)| grads.get(v).expect("gradient").clone()).collect();
        (e, g)
    };
    let (one, g_one) = run(false);
    let (split, g_split) = run(true);
    assert!(common::max_abs_diff(&one, &split) < 1e-5, "embeddings differ by {}", common::max_abs_diff(&one, &split));
    let largest = |t: &Tensor| t.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() as f64;
    // A floor for gradients that are zero in exact arithmetic (the key bias: softmax ignores it).
    let floor = 1e-6 * g_one.iter().map(largest).fold(0.0, f64::max);
    for ((name, _), (a, b)) in vars.iter().zip(g_one.iter().zip(&g_split)) {
        let diff = common::max_abs_diff(a, b);
        assert!(diff <= 1e-4 * largest(a) + floor, "{name}: gradients differ by {diff} (largest entry {})", largest(a));
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

#[test]
fn a_killed_head_run_resumes_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    // 60 examples in batches of 8: 8 steps per epoch, the last one of 4 examples.
    let (x, y) = xor(60, 8);
    let cfg = HeadConfig { kind: HeadKind::Mlp { hidden: 16 }, epochs: 3, batch_size: 8, ..HeadConfig::default() };
    let fit = |dir: &Path, resume: bool, on_event: &mut dyn FnMut(Event)| {
        let out = RunOutput { dir: Some(RunDir::open(dir, resume, 5).unwrap()), on_event };
        fit_head(&x, &y, 2, &cfg, out)
    };
    let (whole, whole_losses) = fit(&tmp.path().join("whole"), false, &mut |_| {}).unwrap();
    assert_eq!(whole_losses.len(), 3);

    let cut = tmp.path().join("cut");
    common::killed_at(12, |on_event| fit(&cut, false, on_event));
    assert!(cut.join("checkpoints/step-00000010").is_dir(), "a checkpoint at step 10");
    assert_eq!(common::metrics_without_timing(&cut).len(), 12, "step 12 was logged before the kill");
    let (resumed, resumed_losses) = fit(&cut, true, &mut |_| {}).unwrap();

    assert_eq!(resumed_losses, whole_losses, "per-epoch losses after resume");
    assert_eq!(bits(&resumed.logits(&x).unwrap()), bits(&whole.logits(&x).unwrap()), "logits after resume");
    let (a, b) = (common::metrics_without_timing(&tmp.path().join("whole")), common::metrics_without_timing(&cut));
    assert_eq!(a.len(), 24);
    assert_eq!(a, b, "metrics.jsonl after resume");
    assert!(a.iter().all(|m| (0.0..=1.0).contains(&m["metrics"]["accuracy"].as_f64().unwrap())), "{:?}", a[0]);
    // Both runs end with the trainer's summary: 24 steps over 3 × 60 examples.
    for run in [tmp.path().join("whole"), cut.clone()] {
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
        assert_eq!((summary["steps"].as_u64(), summary["units"].as_u64()), (Some(24), Some(180)), "{summary}");
        assert_eq!(summary["trainable_params"], 4 * 16 + 16 + 16 * 2 + 2, "{summary}");
    }
    // The run directory changes nothing: the same head in memory.
    let (in_memory, losses) = train_head(&x, &y, 2, &cfg).unwrap();
    assert_eq!(losses, whole_losses);
    assert_eq!(bits(&in_memory.logits(&x).unwrap()), bits(&whole.logits(&x).unwrap()));
    // Other head settings do not resume this run's checkpoint.
    let other = HeadConfig { lr: 0.5, ..cfg.clone() };
    let out = RunOutput { dir: Some(RunDir::open(&cut, true, 5).unwrap()), on_event: &mut |_| {} };
    let err = fit_head(&x, &y, 2, &other, out).unwrap_err().to_string();
    assert!(err.contains("cannot resume"), "{err}");
}

/// A decoder head with its top block trained: two parameter groups (head at `lr`, block at a
/// hundredth of it, without weight decay) are restored exactly, on a small random decoder.
#[test]
fn a_killed_decoder_head_run_resumes_bit_identically() {
    use graft::models::llama::random::{small_config, RandomWeights};
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config();
    let load = || Llama::load(config.clone(), &RandomWeights::new(config.clone(), 3), &LoadOptions::default()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let seqs: Vec<Vec<u32>> =
        (0..12).map(|i| (0..3 + i % 5).map(|_| rng.random_range(0..config.vocab_size as u32)).collect()).collect();
    let labels: Vec<usize> = (0..12).map(|i| i % 2).collect();
    let cfg = HeadConfig { epochs: 2, batch_size: 4, ..HeadConfig::default() };
    let tuning = DecoderTuning { unfreeze_top: 1, pooling: Pooling::Mean, block_lr: 1e-3 };
    let fit = |model: &mut Llama, dir: &Path, resume: bool, on_event: &mut dyn FnMut(Event)| {
        let out = RunOutput { dir: Some(RunDir::open(dir, resume, 2).unwrap()), on_event };
        fit_decoder_classifier(model, &seqs, &labels, 2, tuning, &cfg, out)
    };
    let mut whole = load();
    let (clf, losses) = fit(&mut whole, &tmp.path().join("whole"), false, &mut |_| {}).unwrap();
    assert_eq!(losses.len(), 2);

    let cut = tmp.path().join("cut");
    common::killed_at(5, |on_event| fit(&mut load(), &cut, false, on_event));
    // A resumed process starts from the weights on disk, not from the dead run's memory.
    let mut resumed = load();
    let (clf_resumed, losses_resumed) = fit(&mut resumed, &cut, true, &mut |_| {}).unwrap();
    assert_eq!(losses_resumed, losses);
    let (a, b) = (whole.named_tensors().unwrap(), resumed.named_tensors().unwrap());
    let mut trained = 0;
    for ((name, ta), (_, tb)) in a.iter().zip(&b) {
        assert_eq!(bits(ta), bits(tb), "{name} after resume");
        trained += usize::from(name.starts_with("model.layers.1."));
    }
    assert!(trained > 0);
    let (la, lb) = (clf.logits(&whole, &seqs, 4).unwrap(), clf_resumed.logits(&resumed, &seqs, 4).unwrap());
    assert_eq!(bits(&la), bits(&lb), "logits after resume");
    assert_eq!(common::metrics_without_timing(&tmp.path().join("whole")), common::metrics_without_timing(&cut));
}
