//! Meta-learning inside and on top of a decoder: SmolLM2's features under every learner
//! through `graft meta`, and the learners whose LoRA adapters live inside it (the prototypical
//! network and ANIL), their gradients checked against finite differences.

mod common;

use candle_core::{DType, Device, Tensor};
use graft::features::RunOutput;
use graft::meta::{ClassMembers, EpisodeSampler, EpisodeShape, MetaTrainConfig};
use graft::objectives::protonet::protonet_loss;
use graft::train::Objective;

/// Twelve one-sentence texts in four topics, three each.
fn topics() -> [(&'static str, [&'static str; 3]); 4] {
    [
        (
            "weather",
            [
                "It rained all day and the streets flooded.",
                "A cold wind blew snow across the hills.",
                "The sun came out after a week of fog.",
            ],
        ),
        (
            "cooking",
            [
                "Stir the onions until they turn golden.",
                "Bake the bread for forty minutes.",
                "Add salt to the boiling water before the pasta.",
            ],
        ),
        (
            "sport",
            [
                "The striker scored twice in the second half.",
                "She won the marathon in record time.",
                "The team lost the final on penalties.",
            ],
        ),
        (
            "music",
            [
                "The orchestra tuned before the concert began.",
                "He plays the cello every evening.",
                "The band released a new album of folk songs.",
            ],
        ),
    ]
}

/// `[decoder]`: the texts of a labelled file read by SmolLM2 (hidden states after two blocks,
/// mean-pooled): every learner runs on them, the features file is reused for the same decoder
/// settings and recomputed for others; the whole-backbone baseline fine-tunes the blocks below
/// the feature layer.
#[test]
fn decoder_features_feed_every_learner() {
    let topics = topics();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("topics.jsonl");
    let lines: Vec<String> = topics
        .iter()
        .flat_map(|(label, texts)| {
            texts.iter().map(move |t| serde_json::json!({"text": t, "label": label}).to_string())
        })
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n").unwrap();
    let config = |name: &str, decoder: &str, extra: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        let text = format!(
            "[data]\nsource = {data:?}\nval_fraction = 0.0\ntest_fraction = 0.5\n\n\
             [episodes]\nn_way = 2\nk_shot = 1\nq_query = 2\n\n\
             [backbone]\nencoder = \"smollm2-135m-instruct\"\n\n[decoder]\n{decoder}\n\n\
             [protonet]\nhidden = 8\nsteps = 2\nval_episodes = 0\n\n[anil]\nenabled = false\n\n{extra}\
             [eval]\nepisodes = 3\n\n[output]\ndir = {:?}\nfeatures = {:?}\n",
            dir.path().join(name).to_str().unwrap(),
            dir.path().join("features.safetensors").to_str().unwrap()
        );
        std::fs::write(&path, text).unwrap();
        graft::recipes::meta::config::MetaConfig::load(&path, &[])
    };
    let first = graft::recipes::meta::run(&config("a", "layer = 2", "").unwrap(), false, &mut |_| {}).unwrap();
    assert!(!first.features_cached);
    let names: Vec<&str> = first.results.iter().map(|r| r.learner.as_str()).collect();
    assert_eq!(names, ["nearest_centroid", "linear_head", "protonet"]);
    let features = candle_core::safetensors::load(dir.path().join("features.safetensors"), &candle_core::Device::Cpu)
        .unwrap()
        .remove("features")
        .unwrap();
    assert_eq!(features.dims2().unwrap(), (12, 576), "one SmolLM2 state (width 576) per text");
    let again = graft::recipes::meta::run(&config("b", "layer = 2", "").unwrap(), false, &mut |_| {}).unwrap();
    assert!(again.features_cached, "the same decoder settings read the features back");
    assert_eq!(again.results[0].accuracy, first.results[0].accuracy);
    // Every learner's scores are kept per episode; a resumed run reads them back (a score
    // changed in the file shows in the mean) and scores only what is missing.
    let log = dir.path().join("a").join("scores").join("nearest_centroid.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    assert_eq!(lines.len(), 1 + 3, "the settings and three episodes");
    let kept: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    lines[1] = r#"{"episode":0,"accuracy":0.123}"#.into();
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let resumed = graft::recipes::meta::run(&config("a", "layer = 2", "").unwrap(), true, &mut |_| {}).unwrap();
    let expected = first.results[0].accuracy.mean + (0.123 - kept["accuracy"].as_f64().unwrap()) / 3.0;
    assert!((resumed.results[0].accuracy.mean - expected).abs() < 1e-12, "episode 0 read back");
    assert_eq!(resumed.results[2].accuracy, first.results[2].accuracy, "the resumed ProtoNet scores alike");
    let other = graft::recipes::meta::run(&config("c", "layer = 3", "").unwrap(), false, &mut |_| {}).unwrap();
    assert!(!other.features_cached, "another layer computes its own features");

    // The whole-backbone baseline inside the decoder: both blocks under the feature layer
    // fine-tuned per episode; the other learners' scores stay as they were.
    let tune = "[baselines]\nfine_tune = true\nfine_tune_head = { epochs = 3 }\n\n";
    let tuned = graft::recipes::meta::run(&config("d", "layer = 2", tune).unwrap(), false, &mut |_| {}).unwrap();
    let names: Vec<&str> = tuned.results.iter().map(|r| r.learner.as_str()).collect();
    assert_eq!(names, ["nearest_centroid", "linear_head", "fine_tuned_encoder", "protonet"]);
    assert_eq!(tuned.results[0].accuracy, first.results[0].accuracy);
    assert_eq!(tuned.results[3].accuracy, first.results[2].accuracy);
    assert_eq!(tuned.results[2].accuracy.episodes, 3);
    let err =
        config("d", "layer = 2", "[baselines]\nfine_tune = true\nfine_tune_layers = 3\n\n").unwrap_err().to_string();
    assert!(err.contains("fine_tune_layers = 3: only the decoder.layer = 2 blocks"), "{err}");
    let err = config("e", "max_tokens = 0", "").unwrap_err().to_string();
    assert!(err.contains("decoder.max_tokens must be at least 1"), "{err}");

    // The LoRA prototypical network: rank-8 adapters on all seven projections of blocks 0 and 1
    // (SmolLM2: 576 wide, 192-wide keys and values, 1536 MLP units) = 2 · 81,408 parameters.
    let lora = "[lora_protonet]\nenabled = true\ntrain = { steps = 2, val_episodes = 0 }\n\n";
    let with_lora = graft::recipes::meta::run(&config("f", "layer = 2", lora).unwrap(), false, &mut |_| {}).unwrap();
    let names: Vec<&str> = with_lora.results.iter().map(|r| r.learner.as_str()).collect();
    assert_eq!(names, ["nearest_centroid", "linear_head", "protonet", "lora_protonet"]);
    let trained = with_lora.lora_protonet_train.as_ref().expect("its meta-training summary");
    assert_eq!((trained.steps, trained.trainable_params), (2, 2 * 81_408));
    assert!(trained.run.join("metrics.jsonl").is_file());
    assert_eq!(with_lora.results[0].accuracy, first.results[0].accuracy, "the other learners are unchanged");
    let too_many = "[lora_protonet]\nenabled = true\nblocks = 3\ntrain = { steps = 2, val_episodes = 0 }\n\n";
    let err = graft::recipes::meta::run(&config("g", "layer = 2", too_many).unwrap(), false, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 adapted blocks below feature layer 2"), "{err}");
    let mut no_decoder = config("h", "layer = 2", lora).unwrap();
    no_decoder.decoder = None;
    let err = no_decoder.validate().unwrap_err().to_string();
    assert!(err.contains("lora_protonet adapts a decoder"), "{err}");

    // ANIL inside the decoder, beside the LoRA prototypical network: the same adapters, plus a
    // 2-way head's start over SmolLM2's 576-wide states.
    let both = format!("{lora}[lora_anil]\nenabled = true\ninner = {{ steps = 2, eval_steps = 3 }}\ntrain = {{ steps = 2, val_episodes = 0 }}\n\n");
    let with_anil = graft::recipes::meta::run(&config("i", "layer = 2", &both).unwrap(), false, &mut |_| {}).unwrap();
    let names: Vec<&str> = with_anil.results.iter().map(|r| r.learner.as_str()).collect();
    assert_eq!(names, ["nearest_centroid", "linear_head", "protonet", "lora_protonet", "lora_anil"]);
    let trained = with_anil.lora_anil_train.as_ref().expect("its meta-training summary");
    assert_eq!((trained.steps, trained.trainable_params), (2, 2 * 81_408 + 2 * 576 + 2));
    assert!(trained.run.join("metrics.jsonl").is_file());
    assert_eq!(with_anil.results[3].accuracy, with_lora.results[3].accuracy, "lora_protonet is unchanged beside it");
    let stray = "[lora_protonet]\nenabled = true\ninner = { steps = 2 }\n\n";
    let err = config("j", "layer = 2", stray).unwrap_err().to_string();
    assert!(err.contains("lora_protonet has no inner loop"), "{err}");
    let mut no_decoder = config("k", "layer = 2", "[lora_anil]\nenabled = true\n\n").unwrap();
    no_decoder.decoder = None;
    let err = no_decoder.validate().unwrap_err().to_string();
    assert!(err.contains("lora_anil adapts a decoder"), "{err}");

    // First-order MAML and Reptile inside the decoder, after the learners above: the same
    // adapters and head as ANIL's; the prototypical network inside the decoder is unchanged.
    let inner = "inner = { steps = 1, eval_steps = 2 }\ntrain = { steps = 2, val_episodes = 0 }\n\n";
    let family = format!("{both}[lora_fomaml]\nenabled = true\n{inner}[lora_reptile]\nenabled = true\n{inner}");
    let with_maml = graft::recipes::meta::run(&config("l", "layer = 2", &family).unwrap(), false, &mut |_| {}).unwrap();
    let names: Vec<&str> = with_maml.results.iter().map(|r| r.learner.as_str()).collect();
    assert_eq!(
        names,
        ["nearest_centroid", "linear_head", "protonet", "lora_protonet", "lora_anil", "lora_fomaml", "lora_reptile"]
    );
    assert_eq!(with_maml.results[3].accuracy, with_lora.results[3].accuracy, "lora_protonet is unchanged beside them");
    for trained in [&with_maml.lora_fomaml_train, &with_maml.lora_reptile_train] {
        let trained = trained.as_ref().expect("its meta-training summary");
        assert_eq!((trained.steps, trained.trainable_params), (2, 2 * 81_408 + 2 * 576 + 2));
        assert!(trained.run.join("metrics.jsonl").is_file());
    }
    assert!(with_maml.lora_maml_train.is_none());
    let mut no_decoder = config("m", "layer = 2", "[lora_reptile]\nenabled = true\n\n").unwrap();
    no_decoder.decoder = None;
    let err = no_decoder.validate().unwrap_err().to_string();
    assert!(err.contains("lora_reptile adapts a decoder"), "{err}");
    let err =
        config("n", "layer = 2", "[lora_maml]\nenabled = true\ninner = { lr = 0.0 }\n\n").unwrap_err().to_string();
    assert!(err.contains("lora_maml.inner"), "{err}");
}

/// The LoRA prototypical network inside SmolLM2 (f64): with its adapters fresh it computes the
/// frozen decoder features; its episode loss has the gradient central finite differences give;
/// meta-training starts from nearest centroid's ProtoNet loss and lowers it.
#[test]
fn lora_protonet_starts_at_the_frozen_features_and_its_gradient_is_exact() {
    use graft::adapters::lora::{attach, unload, LoraSpec};
    use graft::features::Pooling;
    use graft::meta::lora_protonet::{fit_lora_protonet, AdaptedBlocks, DecoderTexts, LoraProtoNetConfig};
    use graft::models::llama::Pass;

    let (mut model, seqs, frozen) = smollm2_on_topics();

    let spec = LoraSpec {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        rslora: false,
        targets: vec!["layers.1.*.q_proj".into(), "layers.2.*.down_proj".into()],
    };
    let set = attach(&mut model, &spec, 0).unwrap();
    let vars = set.named_vars();
    let texts = DecoderTexts::new(&seqs, 4);
    let blocks = AdaptedBlocks::over(&model, &texts, Some(3), 2, Pooling::Mean).unwrap();
    assert_eq!(blocks.blocks(), 1..3);
    assert_eq!(texts.kept_starts(), [1], "the states below block 1 are kept");
    let kept = texts.states_below(&model, 1).unwrap()[0].id();
    let start = blocks.all_features().unwrap().to_dtype(DType::F32).unwrap();
    let gap = (start - &frozen).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(gap < 1e-5, "fresh adapters change nothing: {gap}");

    move_b(&vars);
    let members: ClassMembers = (0..4).map(|c| (format!("topic{c}"), (3 * c..3 * c + 3).collect())).collect();
    let shape = EpisodeShape { n_way: 2, k_shot: 1, q_query: 2 };
    let ep = EpisodeSampler::new("meta-train", members.clone(), shape, 0).unwrap().episode(0);
    let loss = || {
        let s = blocks.features(&ep.support, Pass::Train).unwrap();
        let q = blocks.features(&ep.query, Pass::Train).unwrap();
        protonet_loss(&s, &ep.support_labels, &q, &ep.query_labels, 2).unwrap().0
    };
    let checked = common::check_gradients(&vars, &loss, &|n| vec![0, n / 2, n - 1]);
    assert_eq!(checked, 12);
    drop(blocks);

    unload(&mut model);
    let train = EpisodeSampler::new("meta-train", members.clone(), shape, 0).unwrap();
    let val = EpisodeSampler::new("meta-val", members, shape, 1).unwrap();
    let mut cfg = LoraProtoNetConfig { enabled: true, blocks: 2, ..LoraProtoNetConfig::default() };
    cfg.train = MetaTrainConfig { steps: 6, lr: 3e-3, val_episodes: 4, eval_every: 0, save_every: 0, ..cfg.train };
    let out = RunOutput { dir: None, on_event: &mut |_| {} };
    let settings = serde_json::Value::Null;
    let (adapted, outcome) =
        fit_lora_protonet(&mut model, &texts, (Some(3), Pooling::Mean), &train, Some(&val), &cfg, &settings, out)
            .unwrap();
    assert_eq!(texts.kept_starts(), [1], "the learner reads the states below the same block");
    assert_eq!(texts.states_below(&model, 1).unwrap()[0].id(), kept, "they are the kept ones, not computed again");
    assert_eq!(adapted.dims2().unwrap(), (12, 576));
    let frozen_loss: f64 = (0..4)
        .map(|i| {
            let ep = val.episode(i);
            let (s, q) = (select(&frozen, &ep.support), select(&frozen, &ep.query));
            let (sum, _) = protonet_loss(&s, &ep.support_labels, &q, &ep.query_labels, 2).unwrap();
            sum.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
        })
        .sum::<f64>()
        / 16.0;
    let base = outcome.state.base_eval_loss.unwrap();
    assert!((base - frozen_loss).abs() < 1e-5, "starts at nearest centroid's loss: {base} vs {frozen_loss}");
    let last = outcome.final_eval_loss.unwrap();
    assert!(last < base, "meta-training lowers the validation loss: {base} -> {last}");
}

/// The whole-backbone baseline inside SmolLM2 (f64): a copy of the decoder whose two blocks
/// under feature layer 3 train with a fresh head on one support set; its support loss falls,
/// exactly those blocks change in the copy and the decoder it was copied from stays as it was.
#[test]
fn decoder_baseline_fine_tunes_a_copy_of_the_blocks_under_the_feature_layer() {
    use graft::features::{HeadConfig, Pooling};
    use graft::meta::evaluate::{fine_tune_decoder_on_support, fine_tuned_decoder};
    use graft::meta::lora_protonet::AdaptedBlocks;

    let (model, seqs, _) = smollm2_on_topics();
    let before = model.named_tensors().unwrap();
    let blocks = AdaptedBlocks::new(&model, &seqs, Some(3), 2, Pooling::Mean, 4).unwrap();
    let members: ClassMembers = (0..4).map(|c| (format!("topic{c}"), (3 * c..3 * c + 3).collect())).collect();
    let shape = EpisodeShape { n_way: 2, k_shot: 2, q_query: 1 };
    let ep = EpisodeSampler::new("meta-test", members, shape, 2).unwrap().episode(0);
    let cfg = HeadConfig { epochs: 6, lr: 1e-2, ..HeadConfig::default() };
    let tuned = fine_tune_decoder_on_support(&blocks, &cfg, &ep).unwrap();
    assert_eq!(tuned.losses.len(), 6);
    let (first, last) = (tuned.losses[0].loss, tuned.losses[5].loss);
    assert!(last < first * 0.5, "the support loss falls: {first} -> {last}");
    assert_eq!(tuned.head.trainable_params(), 576 * 2 + 2);
    let (mut changed, mut kept) = (0, 0);
    for ((name, a), (_, b)) in before.iter().zip(&tuned.model.named_tensors().unwrap()) {
        let d = common::max_abs_diff(a, b);
        if name.starts_with("model.layers.1.") || name.starts_with("model.layers.2.") {
            changed += usize::from(d > 0.0);
        } else {
            assert_eq!(d, 0.0, "{name} is outside the trained blocks but changed");
            kept += 1;
        }
    }
    assert_eq!(changed, 2 * 9, "every tensor of blocks 1 and 2 trained");
    assert!(kept > 200, "{kept}");
    for ((name, a), (_, b)) in before.iter().zip(&model.named_tensors().unwrap()) {
        assert_eq!(common::max_abs_diff(a, b), 0.0, "{name} of the original decoder changed");
    }
    // Scoring fine-tunes again (the same seed: the same copy) and classifies the queries with it.
    let query = blocks.through(&tuned.model).features(&ep.query, graft::models::llama::Pass::Infer).unwrap();
    let pred = tuned.head.predict(&query).unwrap();
    let right = pred.iter().zip(&ep.query_labels).filter(|(p, l)| p == l).count() as f64 / ep.query.len() as f64;
    assert_eq!(fine_tuned_decoder(&blocks, &cfg, &ep).unwrap(), right);
}

/// The MAML family inside SmolLM2 (f64), adapters on blocks 1–2 under feature layer 3 and a
/// 2-way head, every factor and the head's start moved off zero: MAML's meta-gradient (through
/// finite-difference Hessian-vector products) matches central finite differences of the adapted
/// query loss; first-order MAML's is the query gradient at the parameters a hand-written inner
/// loop reaches, and Reptile's is `(θ − θ_T)` times the queries; all three leave the adapters
/// where they were.
#[test]
fn lora_maml_family_meta_gradients_match_their_references() {
    use candle_core::Var;
    use graft::features::Pooling;
    use graft::meta::lora_maml::LoraMaml;
    use graft::meta::lora_protonet::AdaptedBlocks;
    use graft::models::llama::Pass;
    use graft::objectives::maml::{Adapt, MamlInner, MetaUpdate};

    let (mut model, seqs, _) = smollm2_on_topics();
    let (_, ep, adapters) = topic_episode_with_adapters(&mut model, ["layers.1.*.k_proj", "layers.2.*.gate_proj"]);
    let (steps, lr) = (2, 2.0);
    let inner = MamlInner { steps, eval_steps: steps, lr, adapt: Adapt::All, hvp_step: 1e-4 };
    let learner = |update| {
        let blocks = AdaptedBlocks::new(&model, &seqs, Some(3), 2, Pooling::Mean, 4).unwrap();
        let learner = LoraMaml::new(blocks, adapters.clone(), 2, (inner, update), "lora_maml").unwrap();
        for (k, (_, v)) in learner.vars().iter().rev().take(2).enumerate() {
            let start = Tensor::from_vec(common::values(v.elem_count(), 20 + k as u64), v.shape(), &Device::Cpu);
            v.set(&(start.unwrap() * 0.5).unwrap()).unwrap();
        }
        learner
    };
    let values =
        |vars: &[(String, Var)]| -> Vec<Tensor> { vars.iter().map(|(_, v)| v.as_tensor().copy().unwrap()).collect() };

    // MAML: the meta-gradient against finite differences of the adapted query loss.
    let maml = learner(MetaUpdate::SecondOrder);
    let vars = maml.vars();
    let checked = common::check_gradients(&vars, &|| maml.loss(&ep, 0).unwrap().loss.sum, &|n| vec![0, n / 2, n - 1]);
    assert_eq!(checked, 6 * 3, "four adapter factors and the head's weight and bias");

    // The hand-written reference: plain gradient steps on the support set's mean cross-entropy,
    // each gradient from candle's backward through the adapted blocks.
    let blocks = AdaptedBlocks::new(&model, &seqs, Some(3), 2, Pooling::Mean, 4).unwrap();
    let cross_entropy = |theta: &[Tensor], rows: &[usize], labels: &[usize], mean: bool| {
        for ((_, v), t) in adapters.iter().zip(theta) {
            v.set(t).unwrap();
        }
        let (w, b) = (Var::from_tensor(&theta[4]).unwrap(), Var::from_tensor(&theta[5]).unwrap());
        let z = blocks.features(rows, Pass::Train).unwrap();
        let logits = z.matmul(&w.as_tensor().t().unwrap()).unwrap().broadcast_add(b.as_tensor()).unwrap();
        let y = Tensor::new(labels.iter().map(|&l| l as u32).collect::<Vec<_>>(), &Device::Cpu).unwrap();
        let picked = candle_nn::ops::log_softmax(&logits, 1).unwrap().gather(&y.unsqueeze(1).unwrap(), 1).unwrap();
        let loss = (picked.sum_all().unwrap() * -1.0).unwrap();
        let loss = if mean { (loss / labels.len() as f64).unwrap() } else { loss };
        let g = loss.backward().unwrap();
        let params: Vec<&Tensor> =
            adapters.iter().map(|(_, v)| v.as_tensor()).chain([w.as_tensor(), b.as_tensor()]).collect();
        params.iter().map(|p| g.get(p).unwrap().clone()).collect::<Vec<_>>()
    };
    for update in [MetaUpdate::FirstOrder, MetaUpdate::Reptile] {
        let learner = learner(update);
        let vars = learner.vars();
        let theta = values(&vars);
        let mut end = theta.clone();
        for _ in 0..steps {
            let g = cross_entropy(&end, &ep.support, &ep.support_labels, true);
            end = end.iter().zip(&g).map(|(t, g)| (t - (g * lr).unwrap()).unwrap()).collect();
        }
        let expected: Vec<Tensor> = match update {
            MetaUpdate::FirstOrder => cross_entropy(&end, &ep.query, &ep.query_labels, false),
            _ => theta.iter().zip(&end).map(|(t, e)| ((t - e).unwrap() * ep.query.len() as f64).unwrap()).collect(),
        };
        for ((_, v), t) in adapters.iter().zip(&theta) {
            v.set(t).unwrap();
        }
        let grads = learner.loss(&ep, 0).unwrap().loss.sum.backward().unwrap();
        for ((name, v), want) in vars.iter().zip(&expected) {
            let got = grads.get(v.as_tensor()).unwrap();
            let scale = 1.0 + want.abs().unwrap().max_all().unwrap().to_scalar::<f64>().unwrap();
            let gap = common::max_abs_diff(got, want);
            assert!(gap < 1e-9 * scale, "{update:?} {name}: differs from the reference by {gap}");
        }
        for ((name, v), t) in vars.iter().zip(&theta) {
            assert_eq!(common::max_abs_diff(v.as_tensor(), t), 0.0, "{name} was not set back after the episode");
        }
    }
}

/// The four topics as classes, the first 2-way 1-shot 2-query meta-train episode over them, and
/// rank-2 adapters (α = 4) attached to `targets` of `model`, their `B` moved off zero.
fn topic_episode_with_adapters(
    model: &mut graft::models::llama::Llama,
    targets: [&str; 2],
) -> (ClassMembers, graft::meta::Episode, Vec<(String, candle_core::Var)>) {
    let members: ClassMembers = (0..4).map(|c| (format!("topic{c}"), (3 * c..3 * c + 3).collect())).collect();
    let shape = EpisodeShape { n_way: 2, k_shot: 1, q_query: 2 };
    let ep = EpisodeSampler::new("meta-train", members.clone(), shape, 0).unwrap().episode(0);
    let spec = graft::adapters::lora::LoraSpec {
        r: 2,
        alpha: 4.0,
        dropout: 0.0,
        rslora: false,
        targets: targets.map(String::from).to_vec(),
    };
    let adapters = graft::adapters::lora::attach(model, &spec, 0).unwrap().named_vars();
    move_b(&adapters);
    (members, ep, adapters)
}

/// SmolLM2 in f64, the twelve topic texts' tokens/// SmolLM2 in f64, the twelve topic texts' tokens and their frozen unit-length features after
/// block 3 (mean-pooled).
fn smollm2_on_topics() -> (graft::models::llama::Llama, Vec<Vec<u32>>, Tensor) {
    use graft::features::{decoder_features, Pooling};
    use graft::models::llama::{LoadOptions, WeightFormat};
    let source = graft::assets::resolve_model(graft::assets::DEFAULT_MODEL, false).unwrap();
    let opts = LoadOptions { device: Device::Cpu, dtype: DType::F64, format: WeightFormat::Dense };
    let model = graft::models::load::load_causal_lm(&source, &opts).unwrap();
    let tok = graft::tokenizer::Tokenizer::from_source(&source).unwrap();
    let texts: Vec<String> = topics().iter().flat_map(|(_, t)| t.map(String::from)).collect();
    let seqs = graft::recipes::meta::data::decoder_tokens(&tok, &texts, 128).unwrap();
    let frozen = decoder_features(&model, &seqs, Some(3), Pooling::Mean, 4).unwrap();
    (model, seqs, graft::models::bert::l2_normalize(&frozen).unwrap())
}

/// Every `lora_B` of `vars` moved off zero by deterministic amounts (so that every adapter
/// factor has a gradient).
fn move_b(vars: &[(String, candle_core::Var)]) {
    for (k, (_, v)) in vars.iter().enumerate().filter(|(_, (n, _))| n.ends_with("lora_B")) {
        let moved = Tensor::from_vec(common::values(v.elem_count(), k as u64 + 1), v.shape(), &Device::Cpu).unwrap();
        v.set(&(moved * 0.05).unwrap()).unwrap();
    }
}

fn select(features: &Tensor, rows: &[usize]) -> Tensor {
    graft::meta::evaluate::select_rows(features, rows).unwrap()
}

/// ANIL inside SmolLM2 (f64): its meta-gradient with respect to the adapters and the head's
/// start is the one central finite differences of the adapted head's query loss give (second
/// order; first order drops the path through the support features and differs); with fresh
/// adapters and a zero head its first validation loss is ANIL's inner loop on the frozen decoder
/// features, and meta-training lowers it.
#[test]
fn lora_anil_meta_gradient_is_exact_and_starts_at_the_frozen_features() {
    use graft::adapters::lora::unload;
    use graft::features::Pooling;
    use graft::meta::lora_anil::{fit_lora_anil, LoraAnil};
    use graft::meta::lora_protonet::{AdaptedBlocks, DecoderTexts, LoraLearnerConfig};
    use graft::objectives::anil::{meta_grads, InnerLoop};

    let (mut model, seqs, frozen) = smollm2_on_topics();
    let (members, ep, adapters) = topic_episode_with_adapters(&mut model, ["layers.1.*.v_proj", "layers.2.*.up_proj"]);
    let shape = EpisodeShape { n_way: 2, k_shot: 1, q_query: 2 };
    let blocks = AdaptedBlocks::new(&model, &seqs, Some(3), 2, Pooling::Mean, 4).unwrap();
    let mut gaps = Vec::new();
    for second_order in [true, false] {
        let inner = InnerLoop { steps: 2, eval_steps: 2, lr: 4.0, second_order };
        let objective = LoraAnil::new(&blocks, adapters.clone(), 2, inner).unwrap();
        let vars = objective.vars();
        for (k, (_, v)) in vars.iter().rev().take(2).enumerate() {
            let start = Tensor::from_vec(common::values(v.elem_count(), 10 + k as u64), v.shape(), &Device::Cpu);
            v.set(&(start.unwrap() * 0.5).unwrap()).unwrap();
        }
        let loss = || objective.loss(&ep, 0).unwrap().loss.sum;
        if second_order {
            let checked = common::check_gradients(&vars, &loss, &|n| vec![0, n / 2, n - 1]);
            assert_eq!(checked, 6 * 3, "four adapter factors and the head's weight and bias");
        } else {
            // First order: the same value, a gradient that misses the support path.
            let grads = loss().backward().unwrap();
            let (name, a) = &vars[0];
            let g = grads.get(a.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let base = a.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let at = |delta: f64| {
                let mut v = base.clone();
                v[0] += delta;
                a.set(&Tensor::from_vec(v, a.as_tensor().shape(), &Device::Cpu).unwrap()).unwrap();
                loss().to_scalar::<f64>().unwrap()
            };
            let fd = (at(1e-6) - at(-1e-6)) / 2e-6;
            at(0.0);
            gaps.push((name.clone(), (fd - g[0]).abs() / (1.0 + fd.abs())));
        }
    }
    assert!(gaps[0].1 > 1e-4, "first order drops the support path, so it must differ: {gaps:?}");
    drop(blocks);

    unload(&mut model);
    let train = EpisodeSampler::new("meta-train", members.clone(), shape, 0).unwrap();
    let val = EpisodeSampler::new("meta-val", members, shape, 1).unwrap();
    let inner = InnerLoop { steps: 3, eval_steps: 3, lr: 4.0, second_order: true };
    let mut cfg = LoraLearnerConfig { enabled: true, blocks: 2, inner: Some(inner), ..LoraLearnerConfig::default() };
    cfg.train = MetaTrainConfig { steps: 6, lr: 3e-3, val_episodes: 4, eval_every: 0, save_every: 0, ..cfg.train };
    let out = RunOutput { dir: None, on_event: &mut |_| {} };
    let settings = serde_json::Value::Null;
    let (adapted, outcome) = fit_lora_anil(
        &mut model,
        &DecoderTexts::new(&seqs, 4),
        (Some(3), Pooling::Mean),
        &train,
        Some(&val),
        &cfg,
        &settings,
        out,
    )
    .unwrap();
    assert_eq!(adapted.features.dims2().unwrap(), (12, 576));
    let zero = Tensor::zeros((2, 576), DType::F64, &Device::Cpu).unwrap();
    let zero_bias = Tensor::zeros(2, DType::F64, &Device::Cpu).unwrap();
    let frozen = frozen.to_dtype(DType::F64).unwrap();
    let frozen_loss: f64 = (0..4)
        .map(|i| {
            let ep = val.episode(i);
            let (s, q) = (select(&frozen, &ep.support), select(&frozen, &ep.query));
            meta_grads(&zero, &zero_bias, &s, &ep.support_labels, &q, &ep.query_labels, &inner).unwrap().query_loss
        })
        .sum::<f64>()
        / 16.0;
    let base = outcome.state.base_eval_loss.unwrap();
    assert!((base - frozen_loss).abs() < 1e-5, "starts at ANIL on the frozen features: {base} vs {frozen_loss}");
    let last = outcome.final_eval_loss.unwrap();
    assert!(last < base, "meta-training lowers the validation loss: {base} -> {last}");
}
