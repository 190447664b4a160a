//! The agents' network: an actor-critic pair of MLPs of the same shape. Each has a **trunk** (an
//! input layer from the observation, then hidden layers, tanh after each); the actor's feeds a
//! **policy head** (one logit per action), the critic's a **value head** (the state's value).
//! Separate trunks keep the value loss, whose scale follows the returns, from swamping the
//! policy's gradient in a shared clipped step (as PPO implementations do for small control
//! tasks). The parts have names, so transfer methods can keep, freeze or replace each: the input
//! layers when observation spaces differ, the policy head when action spaces differ, both trunks
//! for a frozen-trunk transfer.

use crate::features::head::uniform_init;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The header key of a saved policy's description.
pub const POLICY_METADATA_KEY: &str = "graft.policy";
/// The description's format tag.
pub const POLICY_FORMAT: &str = "graft-policy/1";

/// What a saved policy is (JSON under [`POLICY_METADATA_KEY`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDescription {
    /// [`POLICY_FORMAT`].
    pub format: String,
    /// Observation width.
    pub observations: usize,
    /// Number of actions.
    pub actions: usize,
    /// Hidden widths of both trunks.
    pub hidden: Vec<usize>,
}

/// A part of the network, as transfer methods and parameter groups name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// The first layer, from the observation.
    Input,
    /// The hidden layers after it.
    Hidden,
    /// The action logits.
    Policy,
    /// The state value.
    Value,
}

/// Scale of the policy head's initial weights: near-zero logits, so a fresh policy starts
/// close to uniform over the actions (as PPO implementations initialise it).
pub const POLICY_INIT_SCALE: f64 = 0.01;

/// An actor-critic MLP pair with its tensors by name: `actor.{i}.weight` / `.bias` and
/// `critic.{i}.weight` / `.bias` for the trunks (`i = 0` is the input layer), `policy.weight` /
/// `.bias`, `value.weight` / `.bias` for the heads.
#[derive(Debug, Clone)]
pub struct PolicyNet {
    tensors: BTreeMap<String, Tensor>,
    hidden: Vec<usize>,
    observations: usize,
    actions: usize,
}

impl PolicyNet {
    /// A fresh network for `observations` inputs and `actions` actions with hidden widths
    /// `hidden` (at least one layer): layers as PyTorch's `nn.Linear` starts them (uniform in
    /// ±1/√fan_in), the policy head scaled by [`POLICY_INIT_SCALE`], drawn from `seed`.
    pub fn new(observations: usize, actions: usize, hidden: &[usize], seed: u64, device: &Device) -> Result<Self> {
        if observations == 0 || actions < 2 || hidden.is_empty() || hidden.contains(&0) {
            return Err(GraftError::Input(format!(
                "a policy needs observations, two or more actions and hidden widths of at least 1; got {observations}, {actions}, {hidden:?}"
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = BTreeMap::new();
        let mut fan_in = observations;
        for trunk in ["actor", "critic"] {
            fan_in = observations;
            for (i, &h) in hidden.iter().enumerate() {
                tensors.insert(format!("{trunk}.{i}.weight"), uniform_init(&[h, fan_in], fan_in, &mut rng, device)?);
                tensors.insert(format!("{trunk}.{i}.bias"), uniform_init(&[h], fan_in, &mut rng, device)?);
                fan_in = h;
            }
        }
        let policy = uniform_init(&[actions, fan_in], fan_in, &mut rng, device)?;
        tensors.insert("policy.weight".into(), (policy * POLICY_INIT_SCALE)?);
        tensors.insert("policy.bias".into(), Tensor::zeros(actions, DType::F32, device)?);
        tensors.insert("value.weight".into(), uniform_init(&[1, fan_in], fan_in, &mut rng, device)?);
        tensors.insert("value.bias".into(), Tensor::zeros(1, DType::F32, device)?);
        Ok(Self { tensors, hidden: hidden.to_vec(), observations, actions })
    }

    /// Observation width.
    pub fn observations(&self) -> usize {
        self.observations
    }

    /// Number of actions.
    pub fn actions(&self) -> usize {
        self.actions
    }

    /// The device its tensors are on.
    pub fn device(&self) -> Device {
        self.tensors["value.bias"].device().clone()
    }

    /// Its tensors' dtype.
    pub fn dtype(&self) -> DType {
        self.tensors["value.bias"].dtype()
    }

    /// The network in `dtype` (a finite-difference check runs it in f64).
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let tensors =
            self.tensors.iter().map(|(n, t)| Ok((n.clone(), t.detach().to_dtype(dtype)?))).collect::<Result<_>>()?;
        Ok(Self { tensors, ..self.clone() })
    }

    /// Hidden widths.
    pub fn hidden(&self) -> &[usize] {
        &self.hidden
    }

    /// The part a tensor name belongs to.
    pub fn part_of(name: &str) -> Part {
        if name.starts_with("actor.0.") || name.starts_with("critic.0.") {
            Part::Input
        } else if name.starts_with("actor.") || name.starts_with("critic.") {
            Part::Hidden
        } else if name.starts_with("policy.") {
            Part::Policy
        } else {
            Part::Value
        }
    }

    /// Every tensor by name, as it stands.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.tensors.iter().map(|(n, t)| (n.clone(), t.clone())).collect()
    }

    /// Makes the tensors of `parts` variables (training updates them in place) and returns them
    /// by name.
    pub fn trainable(&mut self, parts: &[Part]) -> Result<Vec<(String, Var)>> {
        self.trainable_where(|name| parts.contains(&Self::part_of(name)))
    }

    /// Writes the network as safetensors with a [`PolicyDescription`] in the header, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let desc = PolicyDescription {
            format: POLICY_FORMAT.into(),
            observations: self.observations,
            actions: self.actions,
            hidden: self.hidden.clone(),
        };
        let meta = HashMap::from([(POLICY_METADATA_KEY.to_string(), serde_json::to_string(&desc)?)]);
        let tensors = self.tensors.iter().map(|(n, t)| (n.clone(), t.detach()));
        crate::io::safetensors::save_atomic_with_metadata(tensors, meta, path)
    }

    /// Reads a network written by [`Self::save`] onto `device`; a file without the description,
    /// or with a missing or misshapen tensor, is an error naming it.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let file = crate::io::safetensors::open_safetensors(path)?;
        let bad = |m: String| GraftError::model(path, m);
        let text = file
            .user_metadata()
            .and_then(|m| m.get(POLICY_METADATA_KEY))
            .ok_or_else(|| bad(format!("no `{POLICY_METADATA_KEY}` description: not a graft policy")))?;
        let desc: PolicyDescription =
            serde_json::from_str(text).map_err(|e| bad(format!("the `{POLICY_METADATA_KEY}` description: {e}")))?;
        if desc.format != POLICY_FORMAT {
            return Err(bad(format!("format `{}`, expected `{POLICY_FORMAT}`", desc.format)));
        }
        let mut net =
            Self::new(desc.observations, desc.actions, &desc.hidden, 0, device).map_err(|e| bad(e.to_string()))?;
        let mut map = file.load_all(device)?;
        for (name, t) in net.tensors.iter_mut() {
            let got = map.remove(name).ok_or_else(|| bad(format!("lacks tensor `{name}`")))?.to_dtype(DType::F32)?;
            if got.dims() != t.dims() {
                return Err(bad(format!("tensor `{name}` has shape {:?}, expected {:?}", got.dims(), t.dims())));
            }
            *t = got;
        }
        Ok(net)
    }

    /// A copy with its own storage: later training of `self` does not change it.
    pub fn snapshot(&self) -> Result<Self> {
        let tensors = self.tensors.iter().map(|(n, t)| Ok((n.clone(), t.detach().copy()?))).collect::<Result<_>>()?;
        Ok(Self { tensors, ..self.clone() })
    }

    /// The network with `name`'s tensor replaced by `t` (same shape required).
    pub fn with_tensor(mut self, name: &str, t: Tensor) -> Result<Self> {
        let old =
            self.tensors.get(name).ok_or_else(|| GraftError::Input(format!("the policy has no tensor `{name}`")))?;
        if old.dims() != t.dims() {
            return Err(GraftError::Input(format!(
                "policy tensor `{name}`: shape {:?}, expected {:?}",
                t.dims(),
                old.dims()
            )));
        }
        self.tensors.insert(name.to_string(), t);
        Ok(self)
    }

    fn layer(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        let w = &self.tensors[&format!("{name}.weight")];
        let b = &self.tensors[&format!("{name}.bias")];
        Ok(x.matmul(&w.t()?)?.broadcast_add(b)?)
    }

    /// A trunk's activations `[n, width]` after each of its layers, for observations
    /// `[n, obs]`: the actor's (`"actor"`) or the critic's (`"critic"`).
    pub fn trunk(&self, which: &str, obs: &Tensor) -> Result<Vec<Tensor>> {
        let mut h = obs.clone();
        let mut out = Vec::with_capacity(self.hidden.len());
        for i in 0..self.hidden.len() {
            h = self.layer(&h, &format!("{which}.{i}"))?.tanh()?;
            out.push(h.clone());
        }
        Ok(out)
    }

    /// Action outputs `[n, actions]` (the actor alone: logits for a policy, Q-values for a
    /// value-based learner) for observations `[n, obs]`.
    pub fn action_outputs(&self, obs: &Tensor) -> Result<Tensor> {
        let last = self.trunk("actor", obs)?.into_iter().last().expect("at least one hidden layer");
        self.layer(&last, "policy")
    }

    /// Makes the tensors whose names satisfy `pick` variables (training updates them in place)
    /// and returns them by name.
    pub fn trainable_where(&mut self, pick: impl Fn(&str) -> bool) -> Result<Vec<(String, Var)>> {
        let mut vars = Vec::new();
        for (name, t) in self.tensors.iter_mut() {
            if pick(name) {
                let var = Var::from_tensor(&t.detach())?;
                *t = var.as_tensor().clone();
                vars.push((name.clone(), var));
            }
        }
        Ok(vars)
    }

    /// Action logits `[n, actions]` and state values `[n]` for observations `[n, obs]`.
    pub fn forward(&self, obs: &Tensor) -> Result<(Tensor, Tensor)> {
        let last = |t: Vec<Tensor>| t.into_iter().last().expect("at least one hidden layer");
        let logits = self.layer(&last(self.trunk("actor", obs)?), "policy")?;
        let values = self.layer(&last(self.trunk("critic", obs)?), "value")?.squeeze(D::Minus1)?;
        Ok((logits, values))
    }
}

/// How a new policy for a target variant starts from a source variant's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferMethod {
    /// A fresh network; nothing of the source.
    Scratch,
    /// Every weight of the source (the spaces must match); everything trains.
    WarmStart,
    /// The source's trunks, frozen, under fresh policy and value heads; only the heads train
    /// (the observation spaces must match).
    FrozenTrunk,
    /// Every source weight whose shape fits the target — the hidden layers and the value head
    /// always; the input layers when the observation widths match, the policy head when the
    /// action counts do — the rest fresh; everything trains. For variants whose spaces differ.
    Remap,
}

impl PolicyNet {
    /// The starting policy of `method` for a target of `observations` and `actions` from
    /// `source` (fresh parts drawn from `seed`, with the source's hidden widths), the parts that
    /// train, and the names of the tensors taken from the source.
    pub fn transfer(
        source: &PolicyNet,
        observations: usize,
        actions: usize,
        method: TransferMethod,
        seed: u64,
    ) -> Result<(PolicyNet, Vec<Part>, Vec<String>)> {
        let fresh = PolicyNet::new(observations, actions, &source.hidden, seed, &source.device())?;
        let same_obs = observations == source.observations;
        let same_actions = actions == source.actions;
        let all = vec![Part::Input, Part::Hidden, Part::Policy, Part::Value];
        let needs_same = match method {
            TransferMethod::WarmStart => !same_obs || !same_actions,
            TransferMethod::FrozenTrunk => !same_obs,
            TransferMethod::Scratch | TransferMethod::Remap => false,
        };
        if needs_same {
            return Err(GraftError::Input(format!(
                "transfer `{}` needs the source's spaces ({} observations, {} actions) but the target has {observations} and {actions}: use `remap`",
                serde_json::to_value(method)?.as_str().unwrap_or_default(),
                source.observations,
                source.actions
            )));
        }
        let keep = |name: &str| match method {
            TransferMethod::Scratch => false,
            TransferMethod::WarmStart | TransferMethod::Remap => true,
            TransferMethod::FrozenTrunk => matches!(Self::part_of(name), Part::Input | Part::Hidden),
        };
        let parts = match method {
            TransferMethod::FrozenTrunk => vec![Part::Policy, Part::Value],
            _ => all,
        };
        let mut net = fresh;
        let mut kept = Vec::new();
        // A layer carries over whole: its weight and bias both fit, or neither is taken.
        let fits = |name: &str| {
            let layer = name.rsplit_once('.').map_or(name, |(l, _)| l);
            ["weight", "bias"].iter().all(|p| {
                let n = format!("{layer}.{p}");
                net.tensors.get(&n).map(|t| t.dims().to_vec()) == source.tensors.get(&n).map(|t| t.dims().to_vec())
            })
        };
        let taken: Vec<(String, Tensor)> =
            source.named_tensors().into_iter().filter(|(name, _)| fits(name) && keep(name)).collect();
        for (name, t) in taken {
            net.tensors.insert(name.clone(), t.detach().copy()?);
            kept.push(name);
        }
        Ok((net, parts, kept))
    }
}
