//! Progressive columns over a real encoder's own blocks: all-MiniLM-L6-v2 with its top block
//! copied per task, on tweets (sentiment, then polarity of the non-neutral ones). The first
//! task's logits are bit-identical after the second is learned and the shared encoder is
//! untouched; a new column's lateral adapters start silent (`U = 0`) yet get gradients; the loss
//! falls; save / load keeps every task's logits bit for bit; bad settings and unknown tasks are
//! refused by name.

use candle_core::{DType, Device, Tensor};
use graft::features::progressive::{
    fit_encoder_column, EncoderColumnObjective, EncoderColumnsConfig, ProgressiveEncoder,
};
use graft::features::RunOutput;
use graft::models::bert::SentenceEncoder;
use graft::train::Objective;
use std::sync::OnceLock;

struct Data {
    encoder: SentenceEncoder,
    train: Vec<String>,
    labels: Vec<usize>,
    test: Vec<String>,
}

/// 96 training and 24 held-out tweets (split seed 7) and the encoder.
fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let corpus = graft::assets::ensure("tweets", false).expect("tweets dataset");
        let tweets = graft::datasets::tweets::read(&corpus).unwrap();
        let (train, test) = graft::datasets::tweets::split(&tweets, 96, 24, 7);
        let dir = graft::assets::ensure("all-minilm-l6-v2", false).expect("MiniLM");
        let encoder = SentenceEncoder::from_hf_folder(&dir, &Device::Cpu, DType::F32).unwrap();
        Data {
            encoder,
            train: train.iter().map(|t| t.text.clone()).collect(),
            labels: train.iter().map(|t| t.label).collect(),
            test: test.iter().map(|t| t.text.clone()).collect(),
        }
    })
}

fn names(l: &[&str]) -> Vec<String> {
    l.iter().map(|s| s.to_string()).collect()
}

fn cfg() -> EncoderColumnsConfig {
    EncoderColumnsConfig {
        top_layers: 1,
        lateral_rank: 8,
        epochs: 3,
        batch_size: 16,
        ..EncoderColumnsConfig::default()
    }
}

fn quiet<'a>(on_event: &'a mut dyn FnMut(graft::train::Event)) -> RunOutput<'a> {
    RunOutput { dir: None, on_event }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

/// The polarity task: the non-neutral training tweets, negative (0) or positive (1).
fn polarity() -> (Vec<String>, Vec<usize>) {
    let d = data();
    d.train.iter().zip(&d.labels).filter(|(_, &l)| l != 1).map(|(t, &l)| (t.clone(), usize::from(l == 2))).unzip()
}

#[test]
fn columns_learn_and_never_change_earlier_tasks() {
    let d = data();
    let cfg = cfg();
    let before = bits(&d.encoder.embed(&d.test, 8, &mut |_| {}).unwrap().vectors);
    let mut net = ProgressiveEncoder::new(d.encoder.clone(), cfg.top_layers).unwrap();
    let losses = fit_encoder_column(
        &mut net,
        "sentiment",
        &names(&graft::datasets::tweets::LABELS),
        &d.train,
        &d.labels,
        &cfg,
        quiet(&mut |_| {}),
    )
    .unwrap();
    assert_eq!(losses.len(), 3);
    assert!(losses[2].loss < losses[0].loss, "sentiment loss {losses:?}");
    let sentiment = bits(&net.logits("sentiment", &d.test, 8).unwrap());

    let (texts, y) = polarity();
    let losses = fit_encoder_column(
        &mut net,
        "polarity",
        &names(&["negative", "positive"]),
        &texts,
        &y,
        &cfg,
        quiet(&mut |_| {}),
    )
    .unwrap();
    assert!(losses[2].loss < losses[0].loss, "polarity loss {losses:?}");
    assert_eq!(bits(&net.logits("sentiment", &d.test, 8).unwrap()), sentiment, "sentiment after polarity");
    assert_eq!(net.logits("polarity", &d.test, 5).unwrap().dims(), [24, 2]);
    assert_eq!(net.predict("polarity", &d.test, 8).unwrap().len(), 24);
    // The shared encoder is what it was: columns train copies of its blocks.
    assert_eq!(bits(&net.encoder().embed(&d.test, 8, &mut |_| {}).unwrap().vectors), before);

    // Saved and read back on the same encoder: the same logits, bit for bit, for every task.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("columns.safetensors");
    net.save(&path).unwrap();
    let back = ProgressiveEncoder::load(&path, d.encoder.clone()).unwrap();
    assert_eq!(bits(&back.logits("sentiment", &d.test, 8).unwrap()), sentiment);
    let polarity_logits = bits(&net.logits("polarity", &d.test, 8).unwrap());
    assert_eq!(bits(&back.logits("polarity", &d.test, 8).unwrap()), polarity_logits);
    assert_eq!(back.trainable_params(), net.trainable_params());
    assert_eq!(back.description(), net.description());

    let err = net.logits("topic", &d.test, 8).unwrap_err().to_string();
    assert!(err.contains("unknown task `topic`: the network's tasks are sentiment, polarity"), "{err}");
    let err = fit_encoder_column(&mut net, "polarity", &names(&["a", "b"]), &texts, &y, &cfg, quiet(&mut |_| {}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("task `polarity` has a column already"), "{err}");
    let wide = EncoderColumnsConfig { top_layers: 2, ..cfg.clone() };
    let err =
        fit_encoder_column(&mut net, "other", &names(&["a", "b"]), &texts, &y, &wide, quiet(&mut |_| {})).unwrap_err();
    assert!(err.to_string().contains("differs from the network's 1"), "{err}");
}

#[test]
fn a_new_column_starts_silent_but_its_laterals_get_gradients() {
    let d = data();
    let cfg = cfg();
    let mut net = ProgressiveEncoder::new(d.encoder.clone(), 1).unwrap();
    let labels = names(&graft::datasets::tweets::LABELS);
    fit_encoder_column(&mut net, "sentiment", &labels, &d.train, &d.labels, &cfg, quiet(&mut |_| {})).unwrap();
    let (texts, y) = polarity();
    let two = names(&["negative", "positive"]);
    let obj = EncoderColumnObjective::new(&net, "polarity", &two, &texts, &y, &cfg, 11).unwrap();
    // Blocks: one MiniLM block (1,774,464 weights); head 384·2 + 2; one lateral into the head
    // (level 1) from column 0: V [8, 384] and U [384, 8].
    assert_eq!(obj.trainable_params(), 1_774_464 + 770 + 2 * 8 * 384);

    let batch: Vec<usize> = (0..12).collect();
    let loss = obj.loss(&batch, 0).unwrap();
    let grads = loss.loss.sum.backward().unwrap();
    let groups = obj.param_groups();
    let norm = |name: &str| {
        let (_, v) = groups.iter().flat_map(|g| &g.vars).find(|(n, _)| n == name).unwrap();
        grads.get(v.as_tensor()).map_or(0.0, |g| g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap())
    };
    // U = 0: the adapter adds nothing yet, so V's gradient is exactly zero, while U's is not.
    assert!(norm("columns.1.lateral.1.0.u") > 0.0, "U gets a gradient");
    assert_eq!(norm("columns.1.lateral.1.0.v"), 0.0, "V's gradient passes through U = 0");
    assert!(norm("columns.1.head.weight") > 0.0);
    assert!(norm("columns.1.block.0.encoder.layer.5.output.dense.weight") > 0.0, "the copied block trains");
    assert_eq!(groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(), ["blocks", "head"]);

    assert!(ProgressiveEncoder::new(d.encoder.clone(), 0).is_err());
    let err = ProgressiveEncoder::new(d.encoder.clone(), 7).unwrap_err().to_string();
    assert!(err.contains("between 1 and the encoder's 6 blocks"), "{err}");
}
