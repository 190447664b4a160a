//! The domain-adaptation losses and scores against hand-computed values, their gradients
//! against central finite differences (f64), and the gradient-reversal op.

mod common;

use candle_core::{Device, Tensor, Var};
use common::values;
use graft::domain_adapt::{
    coral_loss, dann_lambda, domain_loss, information_maximization, mean_entropy, mmd2, Bandwidths,
};

const DEV: Device = Device::Cpu;

fn t(rows: &[&[f64]]) -> Tensor {
    let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), rows[0].len()), &DEV).unwrap()
}

fn scalar(x: &Tensor) -> f64 {
    x.to_dtype(candle_core::DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// The gradient of `loss(v)` from backward against central differences, every element.
fn check_grad(v: &Var, loss: impl Fn(&Tensor) -> Tensor) {
    let grads = loss(v.as_tensor()).backward().unwrap();
    let analytic: Vec<f64> = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let base: Vec<f64> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    let h = 1e-6;
    for i in 0..base.len() {
        let at = |d: f64| {
            let mut x = base.clone();
            x[i] += d;
            scalar(&loss(&Tensor::from_vec(x, v.as_tensor().dims(), &DEV).unwrap()))
        };
        let numeric = (at(h) - at(-h)) / (2.0 * h);
        assert!(
            (numeric - analytic[i]).abs() < 1e-6 * (1.0 + numeric.abs()),
            "element {i}: {} vs {numeric}",
            analytic[i]
        );
    }
}

#[test]
fn the_dann_schedule_rises_from_zero_to_almost_one() {
    assert_eq!(dann_lambda(0.0, 10.0), 0.0);
    assert!((dann_lambda(1.0, 10.0) - (2.0 / (1.0 + (-10f64).exp()) - 1.0)).abs() < 1e-15);
    assert!((dann_lambda(0.5, 10.0) - 0.986_614_298_151_430_3).abs() < 1e-12);
    assert!(dann_lambda(0.1, 10.0) < dann_lambda(0.2, 10.0));
    assert_eq!(dann_lambda(2.0, 10.0), dann_lambda(1.0, 10.0), "progress is clamped");
}

#[test]
fn gradient_reversal_is_the_identity_forward_and_negates_the_gradient() {
    let x = Var::from_tensor(&Tensor::from_vec(values(6, 1), (2, 3), &DEV).unwrap()).unwrap();
    let probe = Tensor::from_vec(values(6, 2), (2, 3), &DEV).unwrap();
    let y = graft::ops::grad_reverse(x.as_tensor(), 0.3).unwrap();
    assert_eq!(y.to_vec2::<f64>().unwrap(), x.as_tensor().to_vec2::<f64>().unwrap());
    let g = (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
    let got: Vec<f64> = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<f64> = probe.flatten_all().unwrap().to_vec1::<f64>().unwrap().iter().map(|p| -0.3 * p).collect();
    assert_eq!(got, want);
}

#[test]
fn the_domain_loss_is_the_summed_binary_cross_entropy() {
    let source = Tensor::new(&[0.0f64, 2.0], &DEV).unwrap();
    let target = Tensor::new(&[-1.0f64], &DEV).unwrap();
    let (sum, count) = domain_loss(&source, &target).unwrap();
    let softplus = |z: f64| (1.0 + z.exp()).ln();
    // Source says 1: −log σ(z) = softplus(−z); target says 0: −log(1 − σ(z)) = softplus(z).
    let want = softplus(0.0) + softplus(-2.0) + softplus(-1.0);
    assert!((scalar(&sum) - want).abs() < 1e-14);
    assert_eq!(count, 3);
    // Large logits stay finite.
    let (big, _) =
        domain_loss(&Tensor::new(&[-800.0f64], &DEV).unwrap(), &Tensor::new(&[800.0f64], &DEV).unwrap()).unwrap();
    assert!((scalar(&big) - 1600.0).abs() < 1e-9);
    let v = Var::from_tensor(&Tensor::from_vec(values(5, 3), 5, &DEV).unwrap()).unwrap();
    check_grad(&v, |x| domain_loss(&x.narrow(0, 0, 3).unwrap(), &x.narrow(0, 3, 2).unwrap()).unwrap().0);
}

#[test]
fn coral_is_the_scaled_covariance_distance() {
    // Source varies along x only (covariance diag(2, 0)), target along y only (diag(0, 2)):
    // ‖diag(2, −2)‖² = 8, over 4·d² = 16.
    let source = t(&[&[0.0, 0.0], &[2.0, 0.0]]);
    let target = t(&[&[0.0, 0.0], &[0.0, 2.0]]);
    assert!((scalar(&coral_loss(&source, &target).unwrap()) - 0.5).abs() < 1e-15);
    // A shift changes no covariance.
    let shifted = (&source + 5.0).unwrap();
    assert!(scalar(&coral_loss(&source, &shifted).unwrap()).abs() < 1e-12);
    let v = Var::from_tensor(&Tensor::from_vec(values(7 * 3, 4), (7, 3), &DEV).unwrap()).unwrap();
    check_grad(&v, |x| coral_loss(&x.narrow(0, 0, 4).unwrap(), &x.narrow(0, 4, 3).unwrap()).unwrap());
    let e = coral_loss(&t(&[&[1.0, 2.0]]), &target).unwrap_err().to_string();
    assert!(e.contains("CORAL: needs at least 2 source and 2 target rows, got 1 and 2"), "{e}");
}

#[test]
fn mmd_matches_the_hand_computed_kernel_sums_and_grows_with_the_shift() {
    // One point each, distance 1, σ² = 1: k(s,s) = k(t,t) = 1, k(s,t) = e^−½.
    let s = t(&[&[0.0]]);
    let tt = t(&[&[1.0]]);
    let one = mmd2(&s, &tt, &Bandwidths::Fixed(vec![1.0])).unwrap();
    assert!((scalar(&one) - (2.0 - 2.0 * (-0.5f64).exp())).abs() < 1e-15);
    // Two kernels add.
    let two = mmd2(&s, &tt, &Bandwidths::Fixed(vec![1.0, 4.0])).unwrap();
    assert!((scalar(&two) - (4.0 - 2.0 * ((-0.5f64).exp() + (-0.125f64).exp()))).abs() < 1e-15);
    // The same sample twice: zero.
    let x = Tensor::from_vec(values(8, 5), (4, 2), &DEV).unwrap();
    assert!(scalar(&mmd2(&x, &x, &Bandwidths::default()).unwrap()).abs() < 1e-12);
    // A target moved further away is further away.
    let near = mmd2(&x, &(&x + 0.5).unwrap(), &Bandwidths::default()).unwrap();
    let far = mmd2(&x, &(&x + 2.0).unwrap(), &Bandwidths::default()).unwrap();
    assert!(scalar(&far) > scalar(&near) && scalar(&near) > 0.0);
    let v = Var::from_tensor(&Tensor::from_vec(values(6 * 3, 6), (6, 3), &DEV).unwrap()).unwrap();
    let fixed = Bandwidths::Fixed(vec![0.5, 1.0, 2.0]);
    check_grad(&v, |x| mmd2(&x.narrow(0, 0, 3).unwrap(), &x.narrow(0, 3, 3).unwrap(), &fixed).unwrap());
    let e = mmd2(&s, &t(&[&[1.0, 2.0]]), &Bandwidths::default()).unwrap_err().to_string();
    assert!(e.contains("MMD: source features have 1 dimensions, target features 2"), "{e}");
    assert!(mmd2(&s, &tt, &Bandwidths::Fixed(vec![0.0])).is_err());
    // Collapsed features (every row the same point): the mean distance, and so every data-driven
    // bandwidth, is zero, and the discrepancy is exactly zero rather than an error.
    let v = Var::from_tensor(&t(&[&[0.5, -1.0], &[0.5, -1.0], &[0.5, -1.0]])).unwrap();
    let collapsed = mmd2(&v.narrow(0, 0, 2).unwrap(), &v.narrow(0, 2, 1).unwrap(), &Bandwidths::default()).unwrap();
    assert_eq!(scalar(&collapsed), 0.0);
    let grads = collapsed.backward().unwrap();
    let grad = grads.get(&v).map(|g| g.flatten_all().unwrap().to_vec1::<f64>().unwrap()).unwrap_or_default();
    assert!(grad.iter().all(|x| *x == 0.0), "no pull on collapsed features: {grad:?}");
}

#[test]
fn entropy_and_information_maximization_score_confidence_and_balance() {
    let ln2 = std::f64::consts::LN_2;
    let uniform = t(&[&[0.0, 0.0], &[0.0, 0.0]]);
    assert!((mean_entropy(&uniform).unwrap() - ln2).abs() < 1e-15);
    assert!(information_maximization(&uniform).unwrap().abs() < 1e-15);
    // Confident and balanced: close to ln 2. Confident but all one class: close to 0.
    let balanced = t(&[&[30.0, 0.0], &[0.0, 30.0]]);
    let collapsed = t(&[&[30.0, 0.0], &[30.0, 0.0]]);
    assert!(mean_entropy(&balanced).unwrap() < 1e-10);
    assert!((information_maximization(&balanced).unwrap() - ln2).abs() < 1e-10);
    assert!(information_maximization(&collapsed).unwrap().abs() < 1e-10);
}

mod adapted {
    use super::*;
    use graft::features::HeadKind;
    use graft::features::Standardizer;
    use graft::objectives::classification::{Classification, PooledFeatures};
    use graft::objectives::domain_adapted::{Alignment, DomainAdapted};
    use graft::train::optim::{AdamWConfig, OptimizerKind};
    use graft::train::schedule::{Schedule, ScheduleKind};
    use graft::train::{Epochs, LoopSettings, Objective, ParamGroup, Trainer};

    /// Features `x W` of fixed inputs `x`, `W` trained (starting at the identity).
    struct Projected {
        x: Tensor,
        w: Var,
    }

    impl PooledFeatures for Projected {
        fn pooled(&self, rows: &[usize]) -> graft::Result<Tensor> {
            let idx = Tensor::from_vec(rows.iter().map(|&r| r as u32).collect::<Vec<_>>(), rows.len(), &DEV)?;
            Ok(self.x.index_select(&idx, 0)?.matmul(self.w.as_tensor())?)
        }
        fn param_group(&self) -> Option<ParamGroup> {
            Some(ParamGroup::new("projection", vec![("w".into(), self.w.clone())]))
        }
    }

    /// 40 source points in two classes along the first axis, then 40 target points: the same
    /// points with the third axis stretched four times and shifted by 3.
    fn domains() -> (Tensor, Vec<usize>) {
        let noise = values(40 * 3, 11);
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..40 {
            let c = i % 2;
            let p = [if c == 0 { -1.0 } else { 1.0 } + 0.3 * noise[3 * i], noise[3 * i + 1], noise[3 * i + 2]];
            rows.push(p);
            labels.push(c);
        }
        let target: Vec<[f64; 3]> = rows.iter().map(|p| [p[0], p[1], 4.0 * p[2] + 3.0]).collect();
        let flat: Vec<f64> = rows.iter().chain(&target).flat_map(|p| p.iter().copied()).collect();
        (Tensor::from_vec(flat, (80, 3), &DEV).unwrap(), labels)
    }

    fn objective(alignment: Alignment, weight: f64, steps: u64) -> DomainAdapted<Projected> {
        let (x, labels) = domains();
        let w = Var::from_tensor(&Tensor::eye(3, candle_core::DType::F64, &DEV).unwrap()).unwrap();
        let standardizer = Standardizer::fit(&x.narrow(0, 0, 40).unwrap()).unwrap();
        let inner = Classification::new(Projected { x, w }, standardizer, &labels, 2, HeadKind::Linear, 0).unwrap();
        DomainAdapted::new(inner, 40, 40, alignment, weight, 5, steps).unwrap()
    }

    /// CORAL between all source and all target inputs of the head.
    fn gap(o: &DomainAdapted<Projected>) -> f64 {
        let all = |from: usize| o.inner().inputs(&(from..from + 40).collect::<Vec<_>>()).unwrap();
        scalar(&coral_loss(&all(0), &all(40)).unwrap())
    }

    fn train(o: &DomainAdapted<Projected>, steps: u64) {
        let mut batches = Epochs::new(|epoch| {
            let mut order: Vec<usize> = (0..40).collect();
            graft::data::shuffle(&mut order, 1, epoch);
            Ok(order.chunks(8).map(<[usize]>::to_vec).collect())
        })
        .unwrap();
        let settings = LoopSettings {
            total_steps: steps,
            grad_accum: 1,
            max_grad_norm: 0.0,
            schedule: Schedule { kind: ScheduleKind::Constant, peak: 0.05, warmup: 0, total: steps },
            eval_every: 0,
            pcgrad: None,
            precision: graft::ops::MatmulPrecision::F32,
        };
        let optimizer = OptimizerKind::AdamW(AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() });
        let outcome =
            Trainer { settings, optimizer, run_dir: None, evaluate: None }.run(o, &mut batches, &mut |_| {}).unwrap();
        assert!(outcome.history.iter().all(|r| r.loss.is_finite()));
    }

    #[test]
    fn at_weight_zero_the_loss_is_the_classification_loss() {
        let o = objective(Alignment::Coral, 0.0, 10);
        let rows: Vec<usize> = (0..8).collect();
        let adapted = o.loss(&rows, 3).unwrap();
        let plain = o.inner().loss(&rows, 3).unwrap();
        assert_eq!(scalar(&adapted.loss.sum), scalar(&plain.loss.sum));
        assert!(adapted.metrics.iter().any(|(name, v)| *name == "alignment" && *v > 0.0));
    }

    #[test]
    fn coral_and_mmd_training_close_the_gap_between_the_domains() {
        // The control: the same training without the alignment leaves a gap (training the
        // projection for the classes alone shrinks it somewhat: 6.58 -> about 1).
        let control = objective(Alignment::Coral, 0.0, 60);
        let before = gap(&control);
        train(&control, 60);
        let unaligned = gap(&control);
        assert!(unaligned > 0.1, "{before} -> {unaligned}");
        for alignment in [Alignment::Coral, Alignment::Mmd(Bandwidths::default())] {
            let o = objective(alignment.clone(), 1.0, 60);
            assert_eq!(gap(&o), before);
            train(&o, 60);
            let after = gap(&o);
            assert!(after < unaligned / 100.0, "{alignment:?}: CORAL gap {before} -> {after} (unaligned {unaligned})");
        }
    }

    #[test]
    fn dann_trains_a_domain_classifier_beside_the_head() {
        let o = objective(Alignment::Dann { hidden: 8, gamma: 10.0 }, 1.0, 20);
        let groups: Vec<String> = o.param_groups().iter().map(|g| g.name.clone()).collect();
        assert_eq!(groups, ["head", "projection", "discriminator"]);
        train(&o, 20);
    }
}
