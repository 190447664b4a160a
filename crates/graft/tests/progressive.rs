//! Progressive networks on real features: all-MiniLM-L6-v2 sentence embeddings of tweets, three
//! tasks learned in sequence (sentiment in 3 classes, polarity of the non-neutral tweets,
//! neutral vs opinion). Earlier tasks' logits are bit-identical after later columns are learned;
//! the lateral adapters get gradients and carry the earlier columns' activations; without them a
//! column is a plain MLP head (the first column equals one trained by `train_head`); save / load
//! keeps logits bit for bit; bad input is refused by name.

use candle_core::{DType, Device, Tensor};
use graft::features::progressive::ColumnObjective;
use graft::features::{
    encoder_features, fit_column, train_head, HeadKind, ProgressiveConfig, ProgressiveNet, RunOutput,
};
use graft::train::Objective;
use graft::GraftError;
use std::sync::OnceLock;

/// One task: its name, label names and the (feature row, label) pairs of its training examples.
struct Task {
    name: &'static str,
    labels: Vec<String>,
    rows: Vec<usize>,
    y: Vec<usize>,
}

struct Data {
    train: Tensor,
    test: Tensor,
    tasks: Vec<Task>,
}

fn names(l: &[&str]) -> Vec<String> {
    l.iter().map(|s| s.to_string()).collect()
}

/// 240 training and 80 held-out tweets (split seed 7), embedded once.
fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let corpus = graft::assets::ensure("tweets", false).expect("tweets dataset");
        let tweets = graft::datasets::tweets::read(&corpus).unwrap();
        let (train, test) = graft::datasets::tweets::split(&tweets, 240, 80, 7);
        let dir = graft::assets::ensure("all-minilm-l6-v2", false).expect("MiniLM");
        let enc = graft::models::bert::SentenceEncoder::from_hf_folder(&dir, &Device::Cpu, DType::F32).unwrap();
        let texts = |ts: &[graft::datasets::tweets::Tweet]| ts.iter().map(|t| t.text.clone()).collect::<Vec<_>>();
        let (x, xt) =
            (encoder_features(&enc, &texts(&train), 32).unwrap(), encoder_features(&enc, &texts(&test), 32).unwrap());
        let all: Vec<usize> = (0..train.len()).collect();
        let sentiment = Task {
            name: "sentiment",
            labels: names(&graft::datasets::tweets::LABELS),
            y: train.iter().map(|t| t.label).collect(),
            rows: all.clone(),
        };
        let polar: Vec<usize> = all.iter().copied().filter(|&i| train[i].label != 1).collect();
        let polarity = Task {
            name: "polarity",
            labels: names(&["negative", "positive"]),
            y: polar.iter().map(|&i| usize::from(train[i].label == 2)).collect(),
            rows: polar,
        };
        let subjective = Task {
            name: "subjective",
            labels: names(&["neutral", "opinion"]),
            y: train.iter().map(|t| usize::from(t.label != 1)).collect(),
            rows: all,
        };
        Data { train: x, test: xt, tasks: vec![sentiment, polarity, subjective] }
    })
}

fn features(t: &Task) -> Tensor {
    let idx =
        Tensor::from_vec(t.rows.iter().map(|&i| i as u32).collect::<Vec<_>>(), t.rows.len(), &Device::Cpu).unwrap();
    data().train.index_select(&idx, 0).unwrap()
}

fn cfg() -> ProgressiveConfig {
    ProgressiveConfig { hidden: vec![32], epochs: 8, batch_size: 32, ..ProgressiveConfig::default() }
}

fn quiet<'a>(on_event: &'a mut dyn FnMut(graft::train::Event)) -> RunOutput<'a> {
    RunOutput { dir: None, on_event }
}

/// Learns the first `n` tasks in order with `cfg`.
fn learn(n: usize, cfg: &ProgressiveConfig) -> ProgressiveNet {
    let mut net = ProgressiveNet::new(384, cfg.hidden.clone()).unwrap();
    for t in &data().tasks[..n] {
        let losses = fit_column(&mut net, t.name, &t.labels, &features(t), &t.y, cfg, quiet(&mut |_| {})).unwrap();
        assert_eq!(losses.len(), cfg.epochs);
        assert!(losses.last().unwrap().loss < losses[0].loss, "{}: loss {losses:?}", t.name);
    }
    net
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().into_iter().map(f32::to_bits).collect()
}

fn logit_bits(net: &ProgressiveNet, task: &str) -> Vec<u32> {
    bits(&net.logits(task, &data().test).unwrap())
}

#[test]
fn earlier_tasks_logits_are_bit_identical_after_later_tasks_are_learned() {
    let cfg = cfg();
    let mut net = learn(1, &cfg);
    let sentiment = logit_bits(&net, "sentiment");
    let t = &data().tasks[1];
    fit_column(&mut net, t.name, &t.labels, &features(t), &t.y, &cfg, quiet(&mut |_| {})).unwrap();
    let polarity = logit_bits(&net, "polarity");
    assert_eq!(logit_bits(&net, "sentiment"), sentiment, "sentiment after polarity");
    let t = &data().tasks[2];
    fit_column(&mut net, t.name, &t.labels, &features(t), &t.y, &cfg, quiet(&mut |_| {})).unwrap();
    assert_eq!(logit_bits(&net, "sentiment"), sentiment, "sentiment after subjective");
    assert_eq!(logit_bits(&net, "polarity"), polarity, "polarity after subjective");
    assert_eq!(net.tasks(), ["sentiment", "polarity", "subjective"]);
    assert_eq!(net.logits("polarity", &data().test).unwrap().dims(), [80, 2]);

    // Column sizes: 384->32->labels, plus per later layer α [k], V [32, 32k], U [labels, 32].
    let own = |labels: usize| 384 * 32 + 32 + 32 * labels + labels;
    assert_eq!(net.columns()[0].trainable_params(), own(3));
    assert_eq!(net.columns()[1].trainable_params(), own(2) + 1 + 32 * 32 + 2 * 32);
    assert_eq!(net.columns()[2].trainable_params(), own(2) + 2 + 32 * 64 + 2 * 32);

    // The first column has no laterals: it is the MLP head `train_head` trains with the same
    // settings, bit for bit.
    let s = &data().tasks[0];
    let (head, _) = train_head(&features(s), &s.y, 3, &cfg.head_config()).unwrap();
    assert_eq!(bits(&head.logits(&data().test).unwrap()), sentiment, "column 0 = an MLP head");
}

#[test]
fn lateral_adapters_get_gradients_and_carry_earlier_columns() {
    let cfg = cfg();
    let net = learn(2, &cfg);
    let t = &data().tasks[2];
    // One loss of a fresh third column: every variable it trains, lateral ones included, gets a
    // non-zero gradient; no earlier column's tensor is among them.
    let obj = ColumnObjective::new(&net, t.name, &t.labels, &features(t), &t.y, 5).unwrap();
    let loss = obj.loss(&(0..32).collect::<Vec<usize>>(), 0).unwrap();
    let grads = loss.loss.sum.backward().unwrap();
    let groups = obj.param_groups();
    let group_names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(group_names, ["column", "alpha"]);
    let mut laterals = 0;
    for (name, var) in groups.iter().flat_map(|g| &g.vars) {
        assert!(name.starts_with("columns.2."), "{name} is not column 2's");
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(norm > 0.0, "zero gradient for {name}");
        laterals += usize::from(name.contains(".laterals."));
    }
    assert_eq!(laterals, 3, "alpha, V and U into the output layer");

    // Another first column under the same second column changes the second task's logits, and
    // only through the adapter: without laterals both networks agree bit for bit.
    let s = &data().tasks[0];
    let mut other = ProgressiveNet::new(384, cfg.hidden.clone()).unwrap();
    let reseeded = ProgressiveConfig { seed: 11, ..cfg.clone() };
    fit_column(&mut other, s.name, &s.labels, &features(s), &s.y, &reseeded, quiet(&mut |_| {})).unwrap();
    let swapped = ProgressiveNet::from_columns(
        384,
        cfg.hidden.clone(),
        vec![other.columns()[0].clone(), net.columns()[1].clone()],
    )
    .unwrap();
    assert_ne!(logit_bits(&swapped, "polarity"), logit_bits(&net, "polarity"), "the laterals read column 0");
    assert_eq!(
        logit_bits(&swapped.without_laterals().unwrap(), "polarity"),
        logit_bits(&net.without_laterals().unwrap(), "polarity")
    );
}

#[test]
fn a_column_without_its_laterals_is_an_independent_head() {
    let net = learn(2, &cfg());
    let plain = net.columns()[1].own_head().unwrap();
    assert_eq!(plain.kind(), HeadKind::Mlp { hidden: 32 });
    let ablated = net.without_laterals().unwrap();
    assert_eq!(logit_bits(&ablated, "polarity"), bits(&plain.logits(&data().test).unwrap()));
    assert_ne!(logit_bits(&net, "polarity"), logit_bits(&ablated, "polarity"), "the laterals contribute");
    // Column 0 has no laterals to remove.
    assert_eq!(logit_bits(&ablated, "sentiment"), logit_bits(&net, "sentiment"));
}

#[test]
fn save_and_load_keep_logits_and_refuse_bad_files_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let net = learn(3, &ProgressiveConfig { hidden: vec![16, 8], epochs: 3, ..cfg() });
    let path = dir.path().join("net.safetensors");
    net.save(&path).unwrap();
    let back = ProgressiveNet::load(&path, &Device::Cpu).unwrap();
    assert_eq!(back.description(), net.description());
    assert_eq!(back.hidden(), [16, 8]);
    for task in net.tasks() {
        assert_eq!(logit_bits(&back, task), logit_bits(&net, task), "{task} after save/load");
    }

    // A description whose label count does not fit the output layer: `neutral` of the sentiment
    // task becomes two labels, in a header of the same length.
    let bytes = std::fs::read(&path).unwrap();
    let (from, to) = (br#"\"neutral\",\"positive\""#.as_slice(), br#"\"n\",\"x\",\"positive\""#.as_slice());
    assert_eq!(from.len(), to.len());
    let at = bytes.windows(from.len()).position(|w| w == from).expect("the sentiment labels in the header");
    let mut bad = bytes.clone();
    bad[at..at + from.len()].copy_from_slice(to);
    let bad_path = dir.path().join("relabelled.safetensors");
    std::fs::write(&bad_path, bad).unwrap();
    let err = ProgressiveNet::load(&bad_path, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("relabelled.safetensors") && err.contains("sentiment") && err.contains("4 labels"), "{err}");

    // A plain head's file has no description.
    let s = &data().tasks[0];
    let (head, _) = train_head(&features(s), &s.y, 3, &Default::default()).unwrap();
    let head_path = dir.path().join("head.safetensors");
    head.save(&head_path).unwrap();
    let err = ProgressiveNet::load(&head_path, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("head.safetensors") && err.contains("graft.progressive"), "{err}");
}

#[test]
fn unknown_tasks_repeated_tasks_and_bad_settings_are_input_errors() {
    let cfg = cfg();
    let mut net = learn(1, &cfg);
    match net.logits("topic", &data().test) {
        Err(GraftError::Input(m)) => assert!(m.contains("unknown task `topic`") && m.contains("sentiment"), "{m}"),
        other => panic!("expected an input error, got {other:?}"),
    }
    let s = &data().tasks[0];
    let err = fit_column(&mut net, s.name, &s.labels, &features(s), &s.y, &cfg, quiet(&mut |_| {})).unwrap_err();
    assert!(err.to_string().contains("task `sentiment` has a column already"), "{err}");
    let wide = ProgressiveConfig { hidden: vec![64], ..cfg.clone() };
    let err = fit_column(&mut net, "p", &s.labels, &features(s), &s.y, &wide, quiet(&mut |_| {})).unwrap_err();
    assert!(err.to_string().contains("hidden [64] differs"), "{err}");
    let narrow = data().test.narrow(1, 0, 100).unwrap();
    assert!(matches!(net.logits("sentiment", &narrow), Err(GraftError::Input(_))));
    assert!(ProgressiveConfig { hidden: vec![], ..cfg.clone() }.validate().is_err());
    assert!(ProgressiveConfig { epochs: 0, ..cfg }.validate().is_err());
    let parsed: ProgressiveConfig = toml::from_str("hidden = [8, 4]\nepochs = 2").unwrap();
    assert_eq!(parsed, ProgressiveConfig { hidden: vec![8, 4], epochs: 2, ..ProgressiveConfig::default() });
    assert!(toml::from_str::<ProgressiveConfig>("hiden = [8]").is_err(), "unknown keys are refused");
}
