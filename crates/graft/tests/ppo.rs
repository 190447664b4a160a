//! PPO on the one trainer: generalised advantage estimates and the clipped loss against values
//! computed by hand in the test, its gradients against finite differences, a rollout that
//! repeats by seed, learning that raises the cart-pole's return, and a killed run that resumes
//! bit-identically (in the middle of an update too).

mod common;

use candle_core::{DType, Device, Tensor};
use graft::games::policy::{Part, PolicyNet};
use graft::games::ppo::{train_ppo, Minibatch, PpoConfig, PpoObjective, ROLLOUTS_FILE};
use graft::games::rollout::{collect, gae, Acting, RolloutPlan};
use graft::games::{CartPoleContext, EnvSpec};
use graft::train::{Event, Objective, RunDir};
use std::path::Path;

const ALL: [(Part, f64); 4] = [(Part::Input, 1.0), (Part::Hidden, 1.0), (Part::Policy, 1.0), (Part::Value, 1.0)];

#[test]
fn advantages_by_hand() {
    // Three steps, γ = 0.9, λ = 0.5, cut at the step limit with the final state worth 2.
    let (adv, ret) = gae(&[1.0, 0.0, 2.0], &[0.5, 1.0, 1.5], 2.0, 0.9, 0.5);
    let d2 = 2.0 + 0.9 * 2.0 - 1.5; // 2.3
    let d1 = 0.0 + 0.9 * 1.5 - 1.0; // 0.35
    let d0 = 1.0 + 0.9 * 1.0 - 0.5; // 1.4
    let a2 = d2;
    let a1 = d1 + 0.45 * a2;
    let a0 = d0 + 0.45 * a1;
    for (got, want) in adv.iter().zip([a0, a1, a2]) {
        assert!((*got as f64 - want).abs() < 1e-6, "{adv:?}");
    }
    for (r, (a, v)) in ret.iter().zip(adv.iter().zip([0.5f32, 1.0, 1.5])) {
        assert_eq!(*r, a + v);
    }
    // A terminated episode: nothing after the last step.
    let (adv, _) = gae(&[1.0], &[0.25], 0.0, 0.99, 0.95);
    assert_eq!(adv, [0.75]);
}

fn tiny() -> (PpoObjective, Minibatch, PolicyNet) {
    let policy = PolicyNet::new(2, 2, &[3], 5, &Device::Cpu).unwrap().to_dtype(DType::F64).unwrap();
    let cfg = PpoConfig { clip: 0.2, value_coef: 0.5, entropy_coef: 0.01, ..PpoConfig::default() };
    let reference = policy.clone();
    let objective = PpoObjective::new(policy, &ALL, &cfg).unwrap();
    let obs = Tensor::new(&[[0.1f64, -0.2], [0.5, 0.3], [-0.4, 0.9]], &Device::Cpu).unwrap();
    // Old log-probabilities chosen around the current ones, so the ratios are 1, e^-0.5 and
    // e^0.5: the second and third fall outside 1 ± 0.2.
    let current = by_hand(&reference, &[[0.1, -0.2], [0.5, 0.3], [-0.4, 0.9]]);
    let actions = [0usize, 1, 1];
    let old: Vec<f64> = (0..3).map(|i| current[i].0[actions[i]] + [0.0, 0.5, -0.5][i]).collect();
    let mb = Minibatch {
        observations: obs,
        actions: Tensor::new(&[0u32, 1, 1], &Device::Cpu).unwrap(),
        old_log_probs: Tensor::new(old.as_slice(), &Device::Cpu).unwrap(),
        advantages: Tensor::new(&[1.0f64, -0.5, 2.0], &Device::Cpu).unwrap(),
        returns: Tensor::new(&[0.3f64, -0.1, 1.2], &Device::Cpu).unwrap(),
    };
    (objective, mb, reference)
}

/// Log-probabilities and value of each observation, computed here from the weights.
fn by_hand(p: &PolicyNet, obs: &[[f64; 2]]) -> Vec<(Vec<f64>, f64)> {
    let t: std::collections::BTreeMap<String, Vec<f64>> = p
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()))
        .collect();
    obs.iter()
        .map(|x| {
            let trunk = |name: &str| -> Vec<f64> {
                let (w, b) = (&t[&format!("{name}.0.weight")], &t[&format!("{name}.0.bias")]);
                (0..3).map(|j| (w[j * 2] * x[0] + w[j * 2 + 1] * x[1] + b[j]).tanh()).collect()
            };
            let (h, hv) = (trunk("actor"), trunk("critic"));
            let logit =
                |a: usize| (0..3).map(|j| t["policy.weight"][a * 3 + j] * h[j]).sum::<f64>() + t["policy.bias"][a];
            let (l0, l1) = (logit(0), logit(1));
            let m = l0.max(l1);
            let lse = m + ((l0 - m).exp() + (l1 - m).exp()).ln();
            let value = (0..3).map(|j| t["value.weight"][j] * hv[j]).sum::<f64>() + t["value.bias"][0];
            (vec![l0 - lse, l1 - lse], value)
        })
        .collect()
}

#[test]
fn the_clipped_loss_matches_a_hand_computation() {
    let (objective, mb, reference) = tiny();
    let out = objective.loss(&mb, 0).unwrap();
    let got = out.loss.sum.to_scalar::<f64>().unwrap();
    let rows = by_hand(&reference, &[[0.1, -0.2], [0.5, 0.3], [-0.4, 0.9]]);
    let old = mb.old_log_probs.to_vec1::<f64>().unwrap();
    let (adv, ret, actions) = ([1.0, -0.5, 2.0], [0.3, -0.1, 1.2], [0usize, 1, 1]);
    let mut want = 0.0;
    for i in 0..3 {
        let (lp, v) = &rows[i];
        let ratio = (lp[actions[i]] - old[i]).exp();
        let pg = -(ratio * adv[i]).min(ratio.clamp(0.8, 1.2) * adv[i]);
        let entropy = -lp.iter().map(|l| l.exp() * l).sum::<f64>();
        want += pg + 0.5 * (v - ret[i]).powi(2) - 0.01 * entropy;
    }
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    assert_eq!(out.loss.count, 3);
    let metric = |name: &str| out.metrics.iter().find(|(n, _)| *n == name).unwrap().1;
    assert_eq!(metric("clip_fraction"), 2.0, "two of the three ratios are outside 1 ± 0.2");
    assert!(metric("approx_kl") > 0.0);
}

#[test]
fn gradients_match_finite_differences() {
    let (objective, mb, _) = tiny();
    let loss = || objective.loss(&mb, 0).unwrap().loss.sum;
    let groups = objective.param_groups();
    let checked = common::check_gradients(groups.iter().flat_map(|g| g.vars.iter()), &loss, &|n| vec![0, n / 2, n - 1]);
    assert_eq!(checked, 8 * 3, "the weights and biases of both trunks and both heads");
}

#[test]
fn rollouts_repeat_by_seed_and_hold_whole_episodes() {
    let spec = EnvSpec::Cartpole(CartPoleContext::default());
    let policy = PolicyNet::new(4, 2, &[16], 1, &Device::Cpu).unwrap();
    let plan = RolloutPlan { envs: 3, min_steps: 200, gamma: 0.99, lambda: 0.95, acting: Acting::Sample };
    let a = collect(&spec, 7, &policy, 2, plan).unwrap();
    let b = collect(&spec, 7, &policy, 2, plan).unwrap();
    assert_eq!((a.actions.clone(), a.observations.clone()), (b.actions.clone(), b.observations.clone()));
    assert!(a.len() >= 200);
    assert_eq!(a.episodes.iter().map(|e| e.length).sum::<usize>(), a.len(), "whole episodes only");
    assert_eq!(a.observations.len(), 4 * a.len());
    // A cart-pole episode earns 1 per step.
    assert!(a.episodes.iter().all(|e| e.episode_return == e.length as f64));
    let c = collect(&spec, 8, &policy, 2, plan).unwrap();
    assert_ne!(a.actions, c.actions);
    // A policy for other spaces is refused.
    let wrong = PolicyNet::new(6, 3, &[16], 1, &Device::Cpu).unwrap();
    let err = collect(&spec, 7, &wrong, 0, plan).unwrap_err().to_string();
    assert!(err.contains("the policy reads 6 observations"), "{err}");
}

fn small() -> PpoConfig {
    PpoConfig { updates: 3, envs: 2, steps_per_update: 64, epochs: 2, minibatches: 2, ..PpoConfig::default() }
}

fn run(
    cfg: &PpoConfig,
    dir: Option<&Path>,
    resume: bool,
    on_event: &mut dyn FnMut(Event),
) -> graft::games::ppo::AgentOutcome {
    run_with(cfg, &[16], dir, resume, on_event)
}

fn run_with(
    cfg: &PpoConfig,
    hidden: &[usize],
    dir: Option<&Path>,
    resume: bool,
    on_event: &mut dyn FnMut(Event),
) -> graft::games::ppo::AgentOutcome {
    let spec = EnvSpec::Cartpole(CartPoleContext::default());
    let policy = PolicyNet::new(4, 2, hidden, cfg.seed, &Device::Cpu).unwrap();
    let run_dir = dir.map(|d| RunDir::open(d, resume, 3).unwrap());
    train_ppo(&spec, policy, &ALL, cfg, run_dir, on_event).unwrap()
}

#[test]
fn a_killed_ppo_run_resumes_bit_identically() {
    let cfg = small();
    let tmp = tempfile::tempdir().unwrap();
    let whole = run(&cfg, Some(&tmp.path().join("whole")), false, &mut |_| {});
    assert_eq!(whole.records.len(), 3);
    assert_eq!(whole.trainer.history.len(), 12);
    // Killed after step 7, in the second update (steps 5 to 8); the last checkpoint is step 6.
    let cut = tmp.path().join("cut");
    common::killed_at(7, |on_event| run(&cfg, Some(&cut), false, on_event));
    let resumed = run(&cfg, Some(&cut), true, &mut |_| {});
    assert_eq!(common::policy_bits(&resumed.policy), common::policy_bits(&whole.policy));
    assert_eq!(resumed.records, whole.records);
    assert_eq!(common::metrics_without_timing(&cut), common::metrics_without_timing(&tmp.path().join("whole")));
    let lines = |d: &Path| std::fs::read_to_string(d.join(ROLLOUTS_FILE)).unwrap();
    assert_eq!(lines(&cut), lines(&tmp.path().join("whole")), "one line per update, none repeated");
    // In memory, the same again.
    assert_eq!(common::policy_bits(&run(&cfg, None, false, &mut |_| {}).policy), common::policy_bits(&whole.policy));
}

/// Learning, not a benchmark: 12 small updates raise the mean episode return of the rollouts
/// well above where the untrained policy starts (about 20 steps).
#[test]
fn ppo_raises_the_cartpole_return() {
    let cfg = PpoConfig {
        updates: 12,
        envs: 4,
        steps_per_update: 512,
        epochs: 4,
        minibatches: 4,
        lr: 1e-3,
        seed: 3,
        ..PpoConfig::default()
    };
    let out = run_with(&cfg, &[64, 64], None, false, &mut |_| {});
    let first = out.records[0].mean_return;
    let last = out.records.last().unwrap().mean_return;
    eprintln!("mean returns: {:?}", out.records.iter().map(|r| r.mean_return as i64).collect::<Vec<_>>());
    assert!(first < 40.0, "an untrained policy falls soon: {first}");
    assert!(last > 2.0 * first && last > 60.0, "return {first} -> {last}");
}

fn values(p: &PolicyNet, name: &str) -> Vec<u32> {
    let t = p.named_tensors().into_iter().find(|(n, _)| n == name).unwrap().1;
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn transfer_methods_take_what_fits_and_train_what_they_say() {
    use graft::games::transfer::TransferMethod::*;
    let source = PolicyNet::new(4, 2, &[8, 8], 1, &Device::Cpu).unwrap();
    let all_names: Vec<String> = source.named_tensors().into_iter().map(|(n, _)| n).collect();

    let (warm, parts, kept) = PolicyNet::transfer(&source, 4, 2, WarmStart, (9, 4)).unwrap();
    assert_eq!(kept, all_names);
    assert_eq!(parts, [Part::Input, Part::Hidden, Part::Policy, Part::Value]);
    assert_eq!(common::policy_bits(&warm), common::policy_bits(&source));

    let (frozen, parts, kept) = PolicyNet::transfer(&source, 4, 2, FrozenTrunk, (9, 4)).unwrap();
    assert_eq!(parts, [Part::Policy, Part::Value]);
    assert!(kept.iter().all(|n| n.starts_with("actor.") || n.starts_with("critic.")) && kept.len() == 8);
    assert_eq!(values(&frozen, "actor.1.weight"), values(&source, "actor.1.weight"));
    assert_ne!(values(&frozen, "policy.weight"), values(&source, "policy.weight"), "fresh heads");

    // Cart-pole (4 observations, 2 actions) to acrobot (6, 3): the hidden layers and the value
    // head carry over; the input layers and the policy head are fresh.
    let (remapped, _, kept) = PolicyNet::transfer(&source, 6, 3, Remap, (9, 4)).unwrap();
    let mut want =
        vec!["actor.1.bias", "actor.1.weight", "critic.1.bias", "critic.1.weight", "value.bias", "value.weight"];
    want.sort();
    assert_eq!(kept, want);
    assert_eq!((remapped.observations(), remapped.actions()), (6, 3));
    assert_eq!(values(&remapped, "critic.1.weight"), values(&source, "critic.1.weight"));

    let (scratch, _, kept) = PolicyNet::transfer(&source, 4, 2, Scratch, (9, 4)).unwrap();
    assert!(kept.is_empty());
    assert_eq!(
        common::policy_bits(&scratch),
        common::policy_bits(&PolicyNet::new(4, 2, &[8, 8], 9, &Device::Cpu).unwrap())
    );

    for (method, obs, actions) in [(WarmStart, 6, 3), (WarmStart, 4, 3), (FrozenTrunk, 6, 2)] {
        let err = PolicyNet::transfer(&source, obs, actions, method, (9, 4)).unwrap_err().to_string();
        assert!(
            err.contains("needs the source's spaces (4 observations, 2 actions)") && err.contains("use `remap`"),
            "{err}"
        );
    }

    // Frozen trunk trains only the heads: the trunks are the source's after training.
    let cfg = small();
    let spec = EnvSpec::Cartpole(CartPoleContext::default());
    let train: Vec<(Part, f64)> = [Part::Policy, Part::Value].map(|p| (p, 1.0)).to_vec();
    let out = train_ppo(&spec, frozen, &train, &cfg, None, &mut |_| {}).unwrap();
    assert_eq!(out.trainer.trainable_params, (8 * 2 + 2) + (8 + 1));
    for name in ["actor.0.weight", "actor.1.weight", "critic.0.bias"] {
        assert_eq!(values(&out.policy, name), values(&source, name), "{name} stays frozen");
    }
    assert_ne!(
        values(&out.policy, "policy.weight"),
        values(&PolicyNet::transfer(&source, 4, 2, FrozenTrunk, (9, 4)).unwrap().0, "policy.weight")
    );
}
