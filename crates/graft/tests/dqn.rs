//! DQN on the one trainer: the Huber loss of the one-step target (plain and Double DQN) against
//! values computed by hand from the network's weights, its gradients against finite differences,
//! the exploration schedule, learning that raises the cart-pole's return, and a killed run (its
//! replay buffer and target network in the checkpoint) that resumes bit-identically.

mod common;

use candle_core::{DType, Device, Tensor};
use graft::games::dqn::{train_dqn, DqnConfig, DqnObjective, Transitions};
use graft::games::policy::{Part, PolicyNet};
use graft::games::{CartPoleContext, EnvSpec};
use graft::train::{Event, Objective, RunDir};
use std::path::Path;

const ALL: [(Part, f64); 4] = [(Part::Input, 1.0), (Part::Hidden, 1.0), (Part::Policy, 1.0), (Part::Value, 1.0)];

/// Q-values of one observation, computed here from the actor's weights (one hidden layer of 3).
fn q_by_hand(p: &PolicyNet, x: [f64; 2]) -> [f64; 2] {
    let t: std::collections::BTreeMap<String, Vec<f64>> = p
        .named_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()))
        .collect();
    let (w, b) = (&t["actor.0.weight"], &t["actor.0.bias"]);
    let h: Vec<f64> = (0..3).map(|j| (w[j * 2] * x[0] + w[j * 2 + 1] * x[1] + b[j]).tanh()).collect();
    [0, 1].map(|a| (0..3).map(|j| t["policy.weight"][a * 3 + j] * h[j]).sum::<f64>() + t["policy.bias"][a])
}

fn tiny(double: bool) -> (DqnObjective, Transitions, PolicyNet) {
    let net = PolicyNet::new(2, 2, &[3], 5, &Device::Cpu).unwrap().to_dtype(DType::F64).unwrap();
    // Larger policy-head weights than a fresh policy's, so Q-values differ visibly.
    let w = Tensor::new(&[[0.9f64, -0.4, 0.3], [-0.2, 0.7, 0.5]], &Device::Cpu).unwrap();
    let net = net.with_tensor("policy.weight", w).unwrap();
    let cfg = DqnConfig { gamma: 0.9, double, buffer_size: 1000, ..DqnConfig::default() };
    let reference = net.clone();
    let objective = DqnObjective::new(net, &ALL, &cfg).unwrap();
    let d = &Device::Cpu;
    let batch = Transitions {
        observations: Tensor::new(&[[0.1f64, -0.2], [0.5, 0.3], [-0.4, 0.9]], d).unwrap(),
        actions: Tensor::new(&[0u32, 1, 1], d).unwrap(),
        rewards: Tensor::new(&[1.0f64, 0.0, 2.5], d).unwrap(),
        next_observations: Tensor::new(&[[0.2f64, -0.1], [0.6, 0.2], [-0.3, 0.8]], d).unwrap(),
        terminal: Tensor::new(&[0.0f64, 0.0, 1.0], d).unwrap(),
    };
    (objective, batch, reference)
}

#[test]
fn the_huber_loss_of_the_one_step_target_matches_a_hand_computation() {
    for double in [false, true] {
        let (objective, b, net) = tiny(double);
        let out = objective.loss(&b, 0).unwrap();
        let got = out.loss.sum.to_scalar::<f64>().unwrap();
        let obs = [[0.1, -0.2], [0.5, 0.3], [-0.4, 0.9]];
        let next = [[0.2, -0.1], [0.6, 0.2], [-0.3, 0.8]];
        let (actions, rewards, terminal) = ([0usize, 1, 1], [1.0, 0.0, 2.5], [0.0, 0.0, 1.0]);
        let mut want = 0.0;
        for i in 0..3 {
            let q = q_by_hand(&net, obs[i])[actions[i]];
            // The target network starts as a copy of the network.
            let qn = q_by_hand(&net, next[i]);
            let best = if qn[1] > qn[0] { 1 } else { 0 };
            let bootstrap = if double { qn[best] } else { qn[0].max(qn[1]) };
            let y = rewards[i] + 0.9 * (1.0 - terminal[i]) * bootstrap;
            let d = (q - y).abs();
            want += if d < 1.0 { 0.5 * d * d } else { d - 0.5 };
        }
        assert!((got - want).abs() < 1e-12, "double {double}: {got} vs {want}");
        assert_eq!(out.loss.count, 3);
    }
}

#[test]
fn dqn_gradients_match_finite_differences_and_skip_the_critic() {
    let (objective, b, _) = tiny(false);
    let groups = objective.param_groups();
    let names: Vec<&str> = groups.iter().flat_map(|g| g.vars.iter().map(|(n, _)| n.as_str())).collect();
    assert_eq!(names, ["actor.0.bias", "actor.0.weight", "policy.bias", "policy.weight"], "the critic never trains");
    let loss = || objective.loss(&b, 0).unwrap().loss.sum;
    let vars = groups.iter().flat_map(|g| g.vars.iter());
    assert_eq!(common::check_gradients(vars, &loss, &|n| (0..n).collect()), 6 + 3 + 6 + 2);
}

#[test]
fn exploration_falls_linearly_then_stays() {
    let cfg = DqnConfig {
        updates: 100,
        epsilon_start: 1.0,
        epsilon_end: 0.1,
        exploration_fraction: 0.2,
        ..DqnConfig::default()
    };
    assert_eq!(cfg.epsilon(0), 1.0);
    assert!((cfg.epsilon(10) - 0.55).abs() < 1e-12);
    assert!((cfg.epsilon(20) - 0.1).abs() < 1e-12);
    assert!((cfg.epsilon(99) - 0.1).abs() < 1e-12);
    let bad = DqnConfig { buffer_size: 10, ..DqnConfig::default() }.validate().unwrap_err().to_string();
    assert!(bad.contains("dqn: `buffer_size`"), "{bad}");
}

fn run(
    cfg: &DqnConfig,
    dir: Option<&Path>,
    resume: bool,
    on_event: &mut dyn FnMut(Event),
) -> graft::games::ppo::AgentOutcome {
    let spec = EnvSpec::Cartpole(CartPoleContext::default());
    let net = PolicyNet::new(4, 2, &[32], cfg.seed, &Device::Cpu).unwrap();
    let run_dir = dir.map(|d| RunDir::open(d, resume, 5).unwrap());
    train_dqn(&spec, net, &ALL, cfg, run_dir, on_event).unwrap()
}

#[test]
fn a_killed_dqn_run_resumes_bit_identically() {
    let cfg = DqnConfig {
        updates: 4,
        steps_per_update: 40,
        learning_starts: 60,
        train_steps: 4,
        batch_size: 8,
        buffer_size: 100,
        target_update: 3,
        ..DqnConfig::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let whole = run(&cfg, Some(&tmp.path().join("whole")), false, &mut |_| {});
    assert_eq!(whole.records.len(), 4);
    assert_eq!(whole.trainer.history.len(), 16);
    // Killed after step 12: the checkpoint of step 10 is in the middle of the third update, its
    // buffer already holding that update's episodes (and the buffer has wrapped round).
    let cut = tmp.path().join("cut");
    common::killed_at(12, |on_event| run(&cfg, Some(&cut), false, on_event));
    let resumed = run(&cfg, Some(&cut), true, &mut |_| {});
    assert_eq!(common::policy_bits(&resumed.policy), common::policy_bits(&whole.policy));
    assert_eq!(resumed.records, whole.records);
    assert_eq!(common::metrics_without_timing(&cut), common::metrics_without_timing(&tmp.path().join("whole")));
    assert_eq!(common::policy_bits(&run(&cfg, None, false, &mut |_| {}).policy), common::policy_bits(&whole.policy));
}

/// Learning, not a benchmark: a short DQN run raises the cart-pole's mean episode return well
/// above the random start (about 22).
#[test]
fn dqn_raises_the_cartpole_return() {
    let cfg = DqnConfig { updates: 20, seed: 2, ..DqnConfig::default() };
    let spec = EnvSpec::Cartpole(CartPoleContext::default());
    let net = PolicyNet::new(4, 2, &[64, 64], cfg.seed, &Device::Cpu).unwrap();
    let out = train_dqn(&spec, net, &ALL, &cfg, None, &mut |_| {}).unwrap();
    let returns: Vec<i64> = out.records.iter().map(|r| r.mean_return as i64).collect();
    let last: f64 = out.records[15..].iter().map(|r| r.mean_return).sum::<f64>() / 5.0;
    assert!(out.records[0].mean_return < 40.0, "{returns:?}");
    assert!(last > 2.0 * out.records[0].mean_return && last > 40.0, "{returns:?}");
}
