//! Meta-learning: the class splits and the episode sampler; the class choice over the real
//! AppStream file when the machine has one.

mod common;

use graft::meta::{split_classes, ClassMembers, EpisodeSampler, EpisodeShape};
use std::collections::HashSet;

/// `n` classes named `c00`, `c01`, ... with `per` examples each, example ids unique.
fn classes(n: usize, per: usize) -> ClassMembers {
    (0..n).map(|c| (format!("c{c:02}"), (0..per).map(|i| c * 1000 + i).collect())).collect()
}

const SHAPE: EpisodeShape = EpisodeShape { n_way: 5, k_shot: 2, q_query: 3 };

#[test]
fn splits_share_no_class_and_no_example() {
    let s = split_classes(classes(20, 8), 0.2, 0.25, 7).unwrap();
    assert_eq!((s.train.len(), s.val.len(), s.test.len()), (11, 4, 5));
    let names = |c: &ClassMembers| c.iter().map(|(n, _)| n.clone()).collect::<HashSet<_>>();
    let examples = |c: &ClassMembers| c.iter().flat_map(|(_, m)| m.iter().copied()).collect::<HashSet<_>>();
    for (a, b) in [(&s.train, &s.val), (&s.train, &s.test), (&s.val, &s.test)] {
        assert!(names(a).is_disjoint(&names(b)));
        assert!(examples(a).is_disjoint(&examples(b)));
    }
    assert_eq!(names(&s.train).len() + names(&s.val).len() + names(&s.test).len(), 20);
    // Episodes of a split only ever use that split's examples.
    let test_examples = examples(&s.test);
    let sampler = EpisodeSampler::new("meta-test", s.test.clone(), SHAPE, 3).unwrap();
    for i in 0..50 {
        let ep = sampler.episode(i);
        assert!(ep.support.iter().chain(&ep.query).all(|e| test_examples.contains(e)));
    }
    assert_eq!(split_classes(classes(20, 8), 0.2, 0.25, 7).unwrap(), s, "the same seed deals the same split");
    assert_ne!(split_classes(classes(20, 8), 0.2, 0.25, 8).unwrap(), s, "another seed deals another split");
}

#[test]
fn episodes_are_disjoint_well_formed_and_reproducible() {
    let data = classes(8, 6);
    let sampler = EpisodeSampler::new("meta-train", data.clone(), SHAPE, 11).unwrap();
    let again = EpisodeSampler::new("meta-train", data.clone(), SHAPE, 11).unwrap();
    let other = EpisodeSampler::new("meta-train", data.clone(), SHAPE, 12).unwrap();
    let mut differs = 0;
    for i in 0..100 {
        let ep = sampler.episode(i);
        assert_eq!(ep, again.episode(i), "episode {i} differs for the same seed");
        differs += usize::from(ep != other.episode(i));
        assert_eq!(ep.ways.len(), 5);
        assert_eq!(ep.ways.iter().collect::<HashSet<_>>().len(), 5, "ways are distinct classes");
        assert_eq!((ep.support.len(), ep.query.len()), (10, 15));
        let support: HashSet<usize> = ep.support.iter().copied().collect();
        let query: HashSet<usize> = ep.query.iter().copied().collect();
        assert_eq!((support.len(), query.len()), (10, 15), "no example twice in a set");
        assert!(support.is_disjoint(&query), "episode {i}: shots and queries overlap");
        for (e, &way) in ep.support.iter().zip(&ep.support_labels).chain(ep.query.iter().zip(&ep.query_labels)) {
            assert!(data[ep.ways[way]].1.contains(e), "example {e} is labelled with a class it is not in");
        }
    }
    assert!(differs > 90, "another seed should give other episodes ({differs} of 100 differ)");
    // Episodes vary with the index and cover every class.
    let seen: HashSet<usize> = (0..100).flat_map(|i| sampler.episode(i).ways).collect();
    assert_eq!(seen.len(), 8);
}

#[test]
fn too_few_classes_or_examples_are_refused_by_name() {
    let e = EpisodeSampler::new("meta-val", classes(4, 10), SHAPE, 0).unwrap_err().to_string();
    assert!(e.contains("meta-val") && e.contains("4 classes") && e.contains("5-way"), "{e}");
    let mut data = classes(6, 10);
    data[3].1.truncate(4);
    let e = EpisodeSampler::new("meta-train", data, SHAPE, 0).unwrap_err().to_string();
    assert!(e.contains("class `c03`") && e.contains("4 examples") && e.contains("at least 5"), "{e}");
    let bad = EpisodeShape { n_way: 5, k_shot: 0, q_query: 3 };
    assert!(EpisodeSampler::new("meta-train", classes(6, 10), bad, 0).is_err());
    let mut shared = classes(6, 10);
    shared[1].1[0] = shared[0].1[0];
    let e = split_classes(shared, 0.2, 0.2, 0).unwrap_err().to_string();
    assert!(e.contains("c00") && e.contains("c01"), "{e}");
    assert!(split_classes(classes(2, 10), 0.3, 0.3, 0).is_err(), "no class left for training");
    assert!(split_classes(classes(10, 10), 0.5, 0.5, 0).is_err(), "fractions summing to 1");
}

#[test]
fn appstream_categories_give_classes_on_the_real_file() {
    use graft::datasets::appstream::{self, default_files};
    use graft::datasets::appstream_classes::{category_classes, ClassRule};
    let files = default_files();
    if !common::require(files.is_ok(), "no AppStream metadata in /var/lib/apt/lists (run `apt-get update`)") {
        return;
    }
    let mut comps = Vec::new();
    for f in files.unwrap() {
        comps.extend(appstream::read(&f).unwrap().0);
    }
    let with_cats = comps.iter().filter(|c| !c.categories.is_empty()).count();
    assert!(with_cats * 10 > comps.len() * 8, "most components list categories ({with_cats} of {})", comps.len());
    let specific = category_classes(&comps, 20, ClassRule::MostSpecific);
    let first = category_classes(&comps, 20, ClassRule::First);
    eprintln!(
        "{} components, {with_cats} with categories; classes with ≥ 20 members: most specific {} ({} unlabelled), first {} ({} unlabelled)",
        comps.len(),
        specific.classes.len(),
        specific.unlabelled,
        first.classes.len(),
        first.unlabelled
    );
    assert!(specific.classes.len() > first.classes.len());
    assert!(specific.classes.len() >= 15, "enough classes for 5-way splits");
    for (name, members) in &specific.classes {
        assert!(members.len() >= 20, "{name}");
        assert!(members.iter().all(|&m| comps[m].categories.contains(name)));
    }
    split_classes(specific.classes, 0.2, 0.2, 0).unwrap();
}

// ---- Prototypical networks and the frozen-feature baselines ----

use candle_core::{DType, Device, Tensor};
use graft::features::{HeadConfig, RunOutput, Standardizer};
use graft::meta::evaluate::{linear_head, nearest_centroid, protonet_accuracy};
use graft::meta::{fit_protonet, Accuracy, MetaTrainConfig, Projection};
use graft::objectives::protonet::{protonet_loss, ProtoNet};
use graft::train::{Objective, RunDir};

/// Deterministic values in about ±`scale`.
fn values(n: usize, seed: f64, scale: f64) -> Vec<f64> {
    (0..n).map(|i| ((i as f64 + seed) * 12.9898).sin() * 43758.5453 % 1.0 * scale).collect()
}

/// `classes × per` examples of `dim` features (f64): class `k`'s centre plus noise; example
/// `k * per + i` is class `k`'s `i`-th.
fn clustered(classes: usize, per: usize, dim: usize, centre: f64, noise: f64) -> (Tensor, ClassMembers) {
    let centres = values(classes * dim, 0.5, centre);
    let jitter = values(classes * per * dim, 7.25, noise);
    let mut x = Vec::with_capacity(classes * per * dim);
    for k in 0..classes {
        for i in 0..per {
            for d in 0..dim {
                x.push(centres[k * dim + d] + jitter[(k * per + i) * dim + d]);
            }
        }
    }
    let members = (0..classes).map(|k| (format!("c{k}"), (k * per..(k + 1) * per).collect())).collect();
    (Tensor::from_vec(x, (classes * per, dim), &Device::Cpu).unwrap(), members)
}

#[test]
fn protonet_loss_matches_a_hand_computed_case() {
    let dev = Device::Cpu;
    // Way 0: support (0,0) and (1,0) → prototype (0.5,0); way 1: support (2,0).
    let s = Tensor::new(&[[0.0f64, 0.0], [1.0, 0.0], [2.0, 0.0]], &dev).unwrap();
    let q = Tensor::new(&[[0.5f64, 0.0], [1.5, 1.0]], &dev).unwrap();
    // Query 1: distances 0 and 2.25; query 2: 1 + 1 = 2 and 0.25 + 1 = 1.25.
    let (loss, correct) = protonet_loss(&s, &[0, 0, 1], &q, &[0, 1], 2).unwrap();
    let want = (1.0 + (-2.25f64).exp()).ln() + (1.0 + (-0.75f64).exp()).ln();
    assert!((loss.to_scalar::<f64>().unwrap() - want).abs() < 1e-12);
    assert_eq!(correct, 2);
    let (loss, correct) = protonet_loss(&s, &[0, 0, 1], &q, &[0, 0], 2).unwrap();
    let want = (1.0 + (-2.25f64).exp()).ln() + (1.0 + 0.75f64.exp()).ln();
    assert!((loss.to_scalar::<f64>().unwrap() - want).abs() < 1e-12);
    assert_eq!(correct, 1, "the second query is nearer way 1");
    assert!(protonet_loss(&s, &[0, 0, 0], &q, &[0, 1], 2).is_err(), "a way without support is refused");
}

#[test]
fn protonet_gradient_matches_finite_differences() {
    let (features, members) = clustered(3, 4, 3, 1.0, 0.3);
    let proj = Projection::new(3, 4, 5, &Device::Cpu, DType::F64).unwrap();
    // Off the identity start, so every weight has a gradient.
    for (i, (_, v)) in proj.vars().iter().enumerate() {
        let t = v.as_tensor();
        let shift = Tensor::from_vec(values(t.elem_count(), i as f64 + 3.0, 0.5), t.dims(), &Device::Cpu).unwrap();
        v.set(&(t + shift).unwrap()).unwrap();
    }
    let shape = EpisodeShape { n_way: 2, k_shot: 2, q_query: 2 };
    let ep = EpisodeSampler::new("t", members, shape, 1).unwrap().episode(0);
    let objective = ProtoNet::new(&features, &proj);
    let loss = |o: &ProtoNet| o.loss(&ep, 0).unwrap().loss.sum.to_scalar::<f64>().unwrap();
    let grads = objective.loss(&ep, 0).unwrap().loss.sum.backward().unwrap();
    let numeric = numeric_gradients(proj.vars(), || loss(&objective));
    for ((name, v), numeric) in proj.vars().iter().zip(&numeric) {
        let analytic = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for (j, (a, n)) in analytic.iter().zip(numeric).enumerate() {
            assert!((n - a).abs() < 1e-6 * a.abs().max(1.0), "{name}[{j}]: {a} vs {n}");
        }
    }
}

/// Central finite differences (step 1e-6) of `value` with respect to every weight of `vars`:
/// one flat vector per variable, in order. Every weight is back at its value afterwards.
fn numeric_gradients(vars: &[(String, candle_core::Var)], value: impl Fn() -> f64) -> Vec<Vec<f64>> {
    let eps = 1e-6;
    vars.iter()
        .map(|(_, v)| {
            let base = v.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let set = |p: Vec<f64>| v.set(&Tensor::from_vec(p, v.dims(), &Device::Cpu).unwrap()).unwrap();
            let at = |j: usize, x: f64| {
                let mut p = base.clone();
                p[j] = x;
                set(p);
                value()
            };
            let numeric =
                (0..base.len()).map(|j| (at(j, base[j] + eps) - at(j, base[j] - eps)) / (2.0 * eps)).collect();
            set(base.clone());
            numeric
        })
        .collect()
}

#[test]
fn baselines_and_an_untrained_protonet_on_separated_classes() {
    let (features, members) = clustered(6, 8, 6, 2.0, 0.1);
    let features = features.to_dtype(DType::F32).unwrap();
    let sampler = EpisodeSampler::new("t", members, SHAPE, 4).unwrap();
    let fresh = Projection::new(6, 8, 0, &Device::Cpu, DType::F32).unwrap();
    let standardizer = Standardizer::fit(&features).unwrap();
    let head = HeadConfig { epochs: 100, lr: 5e-2, ..HeadConfig::default() };
    for i in 0..4 {
        let ep = sampler.episode(i);
        assert_eq!(nearest_centroid(&features, &ep).unwrap(), 1.0);
        assert_eq!(linear_head(&features, &standardizer, &head, &ep).unwrap(), 1.0);
        assert_eq!(protonet_accuracy(&features, &fresh, &ep).unwrap(), 1.0, "an untrained projection is the identity");
    }
    let a = Accuracy::of(&[1.0, 0.0]).unwrap();
    assert_eq!((a.mean, a.episodes), (0.5, 2));
    assert!((a.std - 0.5f64.sqrt()).abs() < 1e-12 && (a.ci95 - 0.98).abs() < 1e-12, "{a:?}");
    assert!(Accuracy::of(&[]).is_err());
}

#[test]
fn protonet_meta_training_lowers_the_loss_and_resumes_exactly() {
    // The classes differ in the first 3 features and are noisy in the other 3: the projection
    // can learn to look at the first ones.
    let (signal, members) = clustered(8, 10, 3, 0.6, 0.1);
    let nuisance = Tensor::from_vec(values(240, 11.0, 1.0), (80, 3), &Device::Cpu).unwrap();
    let features = Tensor::cat(&[signal, nuisance], 1).unwrap().to_dtype(DType::F32).unwrap();
    let splits = split_classes(members, 0.25, 0.0, 0).unwrap();
    let shape = EpisodeShape { n_way: 3, k_shot: 2, q_query: 3 };
    let train = EpisodeSampler::new("meta-train", splits.train, shape, 0).unwrap();
    let val = EpisodeSampler::new("meta-val", splits.val.clone(), EpisodeShape { n_way: 2, ..shape }, 1).unwrap();
    let cfg =
        MetaTrainConfig { hidden: 8, steps: 8, episodes_per_step: 2, lr: 2e-2, val_episodes: 6, ..Default::default() };
    let settings = serde_json::json!({ "test": 1 });
    let fit = |dir: &std::path::Path, resume: bool, on_event: &mut dyn FnMut(graft::train::Event)| {
        let out = RunOutput { dir: Some(RunDir::open(dir, resume, 2).unwrap()), on_event };
        fit_protonet(&features, &train, Some(&val), &cfg, &settings, out).unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("whole"), tmp.path().join("killed"));
    let (whole, outcome) = fit(&a, false, &mut |_| {});
    let (base, last) = (outcome.state.base_eval_loss.unwrap(), outcome.final_eval_loss.unwrap());
    assert!(last < base, "meta-training should lower the validation loss: {base} -> {last}");
    common::killed_at(5, |on_event| fit(&b, false, on_event));
    let (resumed, _) = fit(&b, true, &mut |_| {});
    for ((name, x), (_, y)) in whole.vars().iter().zip(resumed.vars()) {
        let (x, y) =
            (x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), y.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_eq!(x, y, "{name} differs after resume");
    }
    assert_eq!(common::metrics_without_timing(&a), common::metrics_without_timing(&b));
}

// ---- ANIL ----

use graft::objectives::anil::{Anil, AnilModel, InnerLoop};

/// `proj`'s variables moved off their start by deterministic amounts (every weight then has a
/// gradient).
fn perturb(vars: &[(String, candle_core::Var)], seed: f64) {
    for (i, (_, v)) in vars.iter().enumerate() {
        let t = v.as_tensor();
        let shift = Tensor::from_vec(values(t.elem_count(), seed + i as f64, 0.5), t.dims(), &Device::Cpu).unwrap();
        v.set(&(t + shift).unwrap()).unwrap();
    }
}

#[test]
fn anil_meta_gradient_matches_finite_differences_of_the_adapted_query_loss() {
    let (features, members) = clustered(3, 4, 3, 1.0, 0.3);
    let shape = EpisodeShape { n_way: 2, k_shot: 2, q_query: 2 };
    let ep = EpisodeSampler::new("t", members, shape, 1).unwrap().episode(0);
    let mut worst_first_order = 0f64;
    for second_order in [true, false] {
        let inner = InnerLoop { steps: 3, eval_steps: 3, lr: 0.7, second_order };
        let proj = Projection::new(3, 4, 5, &Device::Cpu, DType::F64).unwrap();
        let model = AnilModel::new(proj, 2, inner).unwrap();
        perturb(&model.vars(), 3.0);
        let objective = Anil::new(&features, &model);
        let value = |o: &Anil| o.loss(&ep, 0).unwrap().loss.sum.to_scalar::<f64>().unwrap();

        // The loss is the adapted head's query loss, the inner loop checked against autograd:
        // three steps of W ← W − α ∇W (mean support cross-entropy), ∇ from candle's backward.
        let zs =
            model.projection().apply(&graft::meta::evaluate::select_rows(&features, &ep.support).unwrap()).unwrap();
        let zq = model.projection().apply(&graft::meta::evaluate::select_rows(&features, &ep.query).unwrap()).unwrap();
        let vars = model.vars();
        let (mut w, mut b) = (vars[4].1.as_tensor().detach(), vars[5].1.as_tensor().detach());
        let ys =
            Tensor::from_vec(ep.support_labels.iter().map(|&l| l as u32).collect::<Vec<_>>(), 4, &Device::Cpu).unwrap();
        for _ in 0..3 {
            let (wv, bv) = (candle_core::Var::from_tensor(&w).unwrap(), candle_core::Var::from_tensor(&b).unwrap());
            let logits = zs.matmul(&wv.as_tensor().t().unwrap()).unwrap().broadcast_add(bv.as_tensor()).unwrap();
            let (sum, n) = graft::train::loss::nll_sum(&logits, &ys).unwrap();
            let g = (sum / n as f64).unwrap().backward().unwrap();
            w = (&w - (g.get(wv.as_tensor()).unwrap() * 0.7).unwrap()).unwrap();
            b = (&b - (g.get(bv.as_tensor()).unwrap() * 0.7).unwrap()).unwrap();
        }
        let logits = zq.matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
        let yq =
            Tensor::from_vec(ep.query_labels.iter().map(|&l| l as u32).collect::<Vec<_>>(), 4, &Device::Cpu).unwrap();
        let reference = graft::train::loss::nll_sum(&logits, &yq).unwrap().0.to_scalar::<f64>().unwrap();
        assert!((value(&objective) - reference).abs() < 1e-10, "{} vs {reference}", value(&objective));

        let grads = objective.loss(&ep, 0).unwrap().loss.sum.backward().unwrap();
        let numeric = numeric_gradients(&vars, || value(&objective));
        for ((name, v), numeric) in vars.iter().zip(&numeric) {
            let analytic = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            for (j, (a, n)) in analytic.iter().zip(numeric).enumerate() {
                let err = (n - a).abs() / a.abs().max(1.0);
                if second_order {
                    assert!(err < 1e-6, "{name}[{j}]: {a} vs {n}");
                } else {
                    worst_first_order = worst_first_order.max(err);
                }
            }
        }
    }
    assert!(worst_first_order > 1e-3, "first-order ANIL drops terms, so it must differ ({worst_first_order})");
}

// ---- MAML, first-order MAML, Reptile ----

use graft::objectives::maml::{Adapt, Maml, MamlInner, MamlModel, MetaUpdate};

/// Reference cross-entropy of `θ = [W₁, b₁, W₂, b₂, W, b]` on `(x, y)` (summed, or the mean) and
/// its gradient, the model written out here and differentiated by candle's backward.
fn reference_loss_grad(theta: &[Tensor], x: &Tensor, y: &[usize], mean: bool) -> (f64, Vec<Tensor>) {
    let vars: Vec<candle_core::Var> =
        theta.iter().map(|t| candle_core::Var::from_tensor(&t.detach()).unwrap()).collect();
    let t = |i: usize| vars[i].as_tensor();
    let h = x.matmul(&t(0).t().unwrap()).unwrap().broadcast_add(t(1)).unwrap().relu().unwrap();
    let z = (x + h.matmul(&t(2).t().unwrap()).unwrap().broadcast_add(t(3)).unwrap()).unwrap();
    let logits = z.matmul(&t(4).t().unwrap()).unwrap().broadcast_add(t(5)).unwrap();
    let logp = candle_nn::ops::log_softmax(&logits, 1).unwrap();
    let n_way = theta[5].dim(0).unwrap();
    let one_hot: Vec<f64> = y.iter().flat_map(|&l| (0..n_way).map(move |k| f64::from(u8::from(k == l)))).collect();
    let one_hot = Tensor::from_vec(one_hot, (y.len(), n_way), &Device::Cpu).unwrap();
    let mut loss = (logp * one_hot).unwrap().sum_all().unwrap().neg().unwrap();
    if mean {
        loss = (loss / y.len() as f64).unwrap();
    }
    let g = loss.backward().unwrap();
    let grads = vars.iter().map(|v| g.get(v.as_tensor()).unwrap().clone()).collect();
    (loss.to_scalar::<f64>().unwrap(), grads)
}

/// Reference inner loop: `steps` plain gradient steps of rate `lr` on the mean support loss,
/// the projection's four tensors left alone when `head_only`.
fn reference_adapt(theta: &[Tensor], x: &Tensor, y: &[usize], steps: usize, lr: f64, head_only: bool) -> Vec<Tensor> {
    let mut th = theta.to_vec();
    for _ in 0..steps {
        let (_, g) = reference_loss_grad(&th, x, y, true);
        for i in (if head_only { 4 } else { 0 })..6 {
            th[i] = (&th[i] - (&g[i] * lr).unwrap()).unwrap();
        }
    }
    th
}

/// A tiny f64 MAML model (3 features, 4 hidden units, 2 ways) moved off its start, the
/// objective's value and gradient on `ep`, and its parameters.
fn maml_case(
    features: &Tensor,
    ep: &graft::meta::Episode,
    inner: MamlInner,
    update: MetaUpdate,
) -> (MamlModel, f64, Vec<Vec<f64>>) {
    let model = MamlModel::new(Projection::new(3, 4, 5, &Device::Cpu, DType::F64).unwrap(), 2, inner, update).unwrap();
    perturb(&model.vars(), 3.0);
    let loss = Maml::new(features, &model).loss(ep, 0).unwrap().loss.sum;
    let grads = loss.backward().unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let g = model.vars().iter().map(|(_, v)| flat(grads.get(v.as_tensor()).unwrap())).collect();
    (model, loss.to_scalar::<f64>().unwrap(), g)
}

fn tiny_episode() -> (Tensor, graft::meta::Episode) {
    let (features, members) = clustered(3, 4, 3, 1.0, 0.3);
    let shape = EpisodeShape { n_way: 2, k_shot: 2, q_query: 2 };
    (features, EpisodeSampler::new("t", members, shape, 1).unwrap().episode(0))
}

#[test]
fn first_order_maml_and_reptile_meta_steps_match_a_hand_written_reference() {
    let (features, ep) = tiny_episode();
    let rows = |r: &[usize]| graft::meta::evaluate::select_rows(&features, r).unwrap();
    let (xs, xq) = (rows(&ep.support), rows(&ep.query));
    for adapt in [Adapt::All, Adapt::Head] {
        for update in [MetaUpdate::FirstOrder, MetaUpdate::Reptile] {
            let inner = MamlInner { steps: 3, eval_steps: 3, lr: 0.7, adapt, hvp_step: 1e-3 };
            let (model, value, grads) = maml_case(&features, &ep, inner, update);
            let theta: Vec<Tensor> = model.vars().iter().map(|(_, v)| v.as_tensor().detach()).collect();
            let adapted = reference_adapt(&theta, &xs, &ep.support_labels, 3, 0.7, adapt == Adapt::Head);
            let (query_loss, query_grad) = reference_loss_grad(&adapted, &xq, &ep.query_labels, false);
            assert!((value - query_loss).abs() < 1e-10, "{adapt:?} {update:?}: value {value} vs {query_loss}");
            for (i, (name, _)) in model.vars().iter().enumerate() {
                // First order: the query gradient at the adapted parameters. Reptile: θ − θ_T, times
                // the 4 queries the trainer divides by.
                let expected = match update {
                    MetaUpdate::FirstOrder => query_grad[i].clone(),
                    _ => ((&theta[i] - &adapted[i]).unwrap() * 4.0).unwrap(),
                };
                let expected = expected.flatten_all().unwrap().to_vec1::<f64>().unwrap();
                let moved = expected.iter().any(|x| x.abs() > 1e-6);
                assert!(moved || (update == MetaUpdate::Reptile && adapt == Adapt::Head && i < 4), "{name}: no signal");
                for (a, e) in grads[i].iter().zip(&expected) {
                    assert!((a - e).abs() < 1e-10, "{adapt:?} {update:?} {name}: {a} vs {e}");
                }
            }
        }
    }
}

#[test]
fn maml_meta_gradient_matches_finite_differences_of_the_adapted_query_loss() {
    let (features, ep) = tiny_episode();
    for adapt in [Adapt::All, Adapt::Head] {
        let inner = MamlInner { steps: 2, eval_steps: 2, lr: 0.7, adapt, hvp_step: 1e-5 };
        let (model, _, grads) = maml_case(&features, &ep, inner, MetaUpdate::SecondOrder);
        let (_, _, first_order) = maml_case(&features, &ep, inner, MetaUpdate::FirstOrder);
        let objective = Maml::new(&features, &model);
        let value = || objective.loss(&ep, 0).unwrap().loss.sum.to_scalar::<f64>().unwrap();
        let mut worst_first_order = 0f64;
        let vars = model.vars();
        for (i, ((name, _), numeric)) in vars.iter().zip(numeric_gradients(&vars, value)).enumerate() {
            for (j, n) in numeric.into_iter().enumerate() {
                let scale = n.abs().max(1.0);
                let err = (n - grads[i][j]).abs() / scale;
                assert!(err < 1e-6, "{adapt:?} {name}[{j}]: {} vs {n}", grads[i][j]);
                worst_first_order = worst_first_order.max((n - first_order[i][j]).abs() / scale);
            }
        }
        assert!(
            worst_first_order > 1e-3,
            "{adapt:?}: first order drops terms, so it must differ ({worst_first_order})"
        );
    }
}
