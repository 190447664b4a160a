//! A progressive column for game agents: a fresh network reading a frozen source policy through
//! lateral adapters. It starts as learning from scratch does (the adapters are zero), keeps its
//! source bit for bit through training, saves and loads with the source inside, has gradients
//! that match finite differences through the adapters, and refuses what cannot work.

mod common;

use candle_core::{DType, Device, Tensor};
use graft::games::dqn::{DqnConfig, DqnObjective};
use graft::games::policy::{Part, PolicyNet};
use graft::games::ppo::{train_ppo, Minibatch, PpoConfig, PpoObjective};
use graft::games::transfer::TransferMethod::{self, *};
use graft::games::{CartPoleContext, EnvSpec};
use graft::train::Objective;

const EVERY_PART: [Part; 5] = [Part::Input, Part::Hidden, Part::Policy, Part::Value, Part::Lateral];

fn column(source: &PolicyNet, actions: usize, method: TransferMethod) -> (PolicyNet, Vec<Part>, Vec<String>) {
    PolicyNet::transfer(source, source.observations(), actions, method, (9, 4)).unwrap()
}

fn outputs(p: &PolicyNet, obs: &Tensor) -> (Vec<Vec<f32>>, Vec<f32>) {
    let (logits, values) = p.forward(obs).unwrap();
    (logits.to_vec2().unwrap(), values.to_vec1().unwrap())
}

fn named(p: &PolicyNet, prefix: &str) -> Vec<(String, Vec<usize>)> {
    p.named_tensors().into_iter().filter(|(n, _)| n.starts_with(prefix)).map(|(n, t)| (n, t.dims().to_vec())).collect()
}

/// The column with its adapters' `U` set away from zero, so the source's activations count.
fn with_open_laterals(mut p: PolicyNet, seed: u64) -> PolicyNet {
    for (name, t) in named(&p, "lateral.") {
        if name.ends_with(".u") {
            let n = t.iter().product();
            let v: Vec<f32> = common::values(n, seed + name.len() as u64).iter().map(|x| *x as f32).collect();
            p = p.with_tensor(&name, Tensor::from_vec(v, t.as_slice(), &Device::Cpu).unwrap()).unwrap();
        }
    }
    p
}

#[test]
fn a_progressive_column_starts_as_scratch_with_adapters_from_its_source() {
    let source = PolicyNet::new(4, 2, &[8, 8], 1, &Device::Cpu).unwrap();
    // The target may have another action count: the source's heads are not read.
    let (col, parts, kept) = column(&source, 3, Progressive);
    assert_eq!(parts, EVERY_PART);
    let source_names: Vec<String> = source.named_tensors().into_iter().map(|(n, _)| format!("source.{n}")).collect();
    assert_eq!(kept, source_names);
    assert_eq!(common::policy_bits(col.source().unwrap()), common::policy_bits(&source));

    let scratch = PolicyNet::new(4, 3, &[8, 8], 9, &Device::Cpu).unwrap();
    let own: Vec<(String, Tensor)> =
        col.named_tensors().into_iter().filter(|(n, _)| PolicyNet::part_of(n) != Part::Lateral).collect();
    let fresh = scratch.named_tensors();
    assert_eq!(own.len(), fresh.len());
    for ((a, ta), (b, tb)) in own.iter().zip(&fresh) {
        assert_eq!(a, b);
        assert_eq!(ta.to_vec2::<f32>().ok(), tb.to_vec2::<f32>().ok(), "{a}");
        assert_eq!(ta.to_vec1::<f32>().ok(), tb.to_vec1::<f32>().ok(), "{a}");
    }
    let rank = 4;
    let want = [
        ("lateral.actor.1.u", vec![8, rank]),
        ("lateral.actor.1.v", vec![rank, 8]),
        ("lateral.critic.1.u", vec![8, rank]),
        ("lateral.critic.1.v", vec![rank, 8]),
        ("lateral.policy.u", vec![3, rank]),
        ("lateral.policy.v", vec![rank, 8]),
        ("lateral.value.u", vec![1, rank]),
        ("lateral.value.v", vec![rank, 8]),
    ];
    let got = named(&col, "lateral.");
    assert_eq!(got, want.iter().map(|(n, d)| (n.to_string(), d.clone())).collect::<Vec<_>>());

    // U = 0: the column computes exactly what the same network from scratch does.
    let obs = Tensor::new(&[[0.02f32, -0.3, 0.05, 0.4], [-0.1, 0.2, -0.04, -0.6]], &Device::Cpu).unwrap();
    assert_eq!(outputs(&col, &obs), outputs(&scratch, &obs));
    // With open adapters the source's activations change the outputs.
    assert_ne!(outputs(&with_open_laterals(col.clone(), 3), &obs), outputs(&scratch, &obs));

    // A column on a column: its source is the progressive policy, source and all.
    let (third, _, kept) = PolicyNet::transfer(&col, 4, 2, Progressive, (10, 4)).unwrap();
    assert!(
        kept.contains(&"source.lateral.policy.u".to_string()) && kept.contains(&"source.source.actor.0.weight".into())
    );
    assert_eq!(third.source().unwrap().source().map(common::policy_bits), Some(common::policy_bits(&source)));
}

#[test]
fn a_progressive_column_refuses_other_observations_and_other_methods_refuse_it() {
    let source = PolicyNet::new(4, 2, &[8, 8], 1, &Device::Cpu).unwrap();
    let err = PolicyNet::transfer(&source, 6, 3, Progressive, (9, 4)).unwrap_err().to_string();
    assert!(err.contains("transfer `progressive` needs the source's spaces") && err.contains("use `remap`"), "{err}");
    let err = PolicyNet::transfer(&source, 4, 2, Progressive, (9, 0)).unwrap_err().to_string();
    assert!(err.contains("rank at least 1"), "{err}");
    let (col, _, _) = column(&source, 2, Progressive);
    for method in [WarmStart, FrozenTrunk, Remap] {
        let err = PolicyNet::transfer(&col, 4, 2, method, (9, 4)).unwrap_err().to_string();
        assert!(err.contains("cannot start from a progressive policy") && err.contains("use `progressive`"), "{err}");
    }
    assert!(PolicyNet::transfer(&col, 4, 2, Scratch, (9, 4)).is_ok());
}

#[test]
fn a_progressive_policy_saves_and_loads_with_its_source() {
    let source = PolicyNet::new(4, 2, &[8, 8], 1, &Device::Cpu).unwrap();
    let col = with_open_laterals(column(&source, 2, Progressive).0, 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.safetensors");
    col.save(&path).unwrap();
    let back = PolicyNet::load(&path, &Device::Cpu).unwrap();
    assert_eq!(back.description(), col.description());
    let desc = back.description();
    assert_eq!((desc.lateral_rank, desc.source.as_ref().map(|s| s.hidden.clone())), (Some(4), Some(vec![8, 8])));
    assert_eq!(common::policy_bits(&back), common::policy_bits(&col));
    assert_eq!(common::policy_bits(back.source().unwrap()), common::policy_bits(&source));
    let obs = Tensor::new(&[[0.02f32, -0.3, 0.05, 0.4]], &Device::Cpu).unwrap();
    assert_eq!(outputs(&back, &obs), outputs(&col, &obs));

    // A file whose source column lost a tensor is refused by name.
    let mut map = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    map.remove("source.critic.1.bias");
    let meta = std::collections::HashMap::from([(
        graft::games::policy::POLICY_METADATA_KEY.to_string(),
        serde_json::to_string(&col.description()).unwrap(),
    )]);
    let broken = dir.path().join("broken.safetensors");
    graft::io::safetensors::save_atomic_with_metadata(map, meta, &broken).unwrap();
    let err = PolicyNet::load(&broken, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("lacks tensor `source.critic.1.bias`"), "{err}");
}

#[test]
fn gradients_through_the_adapters_match_finite_differences() {
    let source = PolicyNet::new(2, 2, &[3, 3], 1, &Device::Cpu).unwrap();
    let col = with_open_laterals(column(&source, 2, Progressive).0, 7).to_dtype(DType::F64).unwrap();
    let train: Vec<(Part, f64)> = EVERY_PART.map(|p| (p, 1.0)).to_vec();
    let cfg = PpoConfig { entropy_coef: 0.01, ..PpoConfig::default() };
    let objective = PpoObjective::new(col.clone(), &train, &cfg).unwrap();
    let d = &Device::Cpu;
    let mb = Minibatch {
        observations: Tensor::new(&[[0.1f64, -0.2], [0.5, 0.3], [-0.4, 0.9]], d).unwrap(),
        actions: Tensor::new(&[0u32, 1, 1], d).unwrap(),
        old_log_probs: Tensor::new(&[-0.6f64, -0.8, -0.7], d).unwrap(),
        advantages: Tensor::new(&[1.0f64, -0.5, 2.0], d).unwrap(),
        returns: Tensor::new(&[0.3f64, -0.1, 1.2], d).unwrap(),
    };
    let loss = || objective.loss(&mb, 0).unwrap().loss.sum;
    let groups = objective.param_groups();
    let laterals = groups.iter().find(|g| g.name == "lateral").unwrap();
    assert_eq!(laterals.vars.len(), 8, "U and V into both second layers and both heads");
    let checked = common::check_gradients(groups.iter().flat_map(|g| g.vars.iter()), &loss, &|n| vec![0, n / 2, n - 1]);
    assert_eq!(
        checked,
        (12 + 8) * 3,
        "every tensor of the column (two layers in each trunk, two heads) and its adapters"
    );

    // A value-based learner trains the actor's side only: no critic, no adapter into it.
    let dqn = DqnObjective::new(col, &train, &DqnConfig::default()).unwrap();
    let names: Vec<String> = dqn.param_groups().iter().flat_map(|g| g.vars.iter().map(|(n, _)| n.clone())).collect();
    assert!(names.iter().all(|n| !PolicyNet::is_critic(n)), "{names:?}");
    assert!(names.contains(&"lateral.policy.v".to_string()) && names.contains(&"lateral.actor.1.u".to_string()));
}

#[test]
fn training_a_column_leaves_its_source_as_it_was() {
    let source = PolicyNet::new(4, 2, &[16], 1, &Device::Cpu).unwrap();
    let (col, parts, _) = column(&source, 2, Progressive);
    let train: Vec<(Part, f64)> = parts.iter().map(|p| (*p, 1.0)).collect();
    let cfg =
        PpoConfig { updates: 2, envs: 2, steps_per_update: 64, epochs: 2, minibatches: 2, ..PpoConfig::default() };
    let spec = EnvSpec::Cartpole(CartPoleContext::default());
    let out = train_ppo(&spec, col, &train, &cfg, None, &mut |_| {}).unwrap();
    assert_eq!(common::policy_bits(out.policy.source().unwrap()), common::policy_bits(&source));
    let column_params = 2 * (16 * 4 + 16) + (2 * 16 + 2) + (16 + 1);
    let adapters = (4 * 16 + 2 * 4) + (4 * 16 + 4);
    assert_eq!(out.trainer.trainable_params, column_params + adapters);
    let u = out.policy.named_tensors().into_iter().find(|(n, _)| n == "lateral.policy.u").unwrap().1;
    assert!(u.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "the adapters learn");
}
