//! The agents' network: an actor-critic pair of MLPs of the same shape. Each has a **trunk** (an
//! input layer from the observation, then hidden layers, tanh after each); the actor's feeds a
//! **policy head** (one logit per action), the critic's a **value head** (the state's value).
//! Separate trunks keep the value loss, whose scale follows the returns, from swamping the
//! policy's gradient in a shared clipped step (as PPO implementations do for small control
//! tasks). The parts have names, so transfer methods can keep, freeze or replace each: the input
//! layers when observation spaces differ, the policy head when action spaces differ, both trunks
//! for a frozen-trunk transfer.
//!
//! A network may also carry a frozen **source column**: another trained network reading the
//! same observations, whose trunk activations feed this network's layers through lateral
//! adapters (a progressive network's new column; see [`super::transfer`]).

use crate::features::head::uniform_init;
use crate::{GraftError, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

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
    /// Inner width of the lateral adapters from the source column, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lateral_rank: Option<usize>,
    /// The frozen source column the laterals read (its tensors saved under `source.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Box<PolicyDescription>>,
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
    /// The lateral adapters from a source column.
    Lateral,
}

/// Scale of the policy head's initial weights: near-zero logits, so a fresh policy starts
/// close to uniform over the actions (as PPO implementations initialise it).
pub const POLICY_INIT_SCALE: f64 = 0.01;

/// An actor-critic MLP pair with its tensors by name: `actor.{i}.weight` / `.bias` and
/// `critic.{i}.weight` / `.bias` for the trunks (`i = 0` is the input layer), `policy.weight` /
/// `.bias`, `value.weight` / `.bias` for the heads; with a source column, the adapters
/// `lateral.{actor,critic}.{i}.{v,u}` into hidden layer `i ≥ 1` and `lateral.{policy,value}.{v,u}`
/// into the heads.
#[derive(Debug, Clone)]
pub struct PolicyNet {
    pub(super) tensors: BTreeMap<String, Tensor>,
    pub(super) hidden: Vec<usize>,
    pub(super) observations: usize,
    pub(super) actions: usize,
    /// The frozen source column and the adapters' inner width.
    pub(super) source: Option<(Arc<PolicyNet>, usize)>,
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
        Ok(Self { tensors, hidden: hidden.to_vec(), observations, actions, source: None })
    }

    /// The network with lateral adapters of inner width `rank` from `source` (frozen; it must
    /// read the same observations): `V` uniform in ±1/√width from a stream of `seed` of its own
    /// (so the network's other tensors stay those of [`Self::new`] with `seed`), `U = 0`, so
    /// the network starts computing exactly what it computed without them.
    pub fn with_source(mut self, source: PolicyNet, rank: usize, seed: u64) -> Result<Self> {
        if source.observations != self.observations || rank == 0 {
            return Err(GraftError::Input(format!(
                "a source column must read the same observations ({} here, {} there) through adapters of rank at least 1 (got {rank})",
                self.observations, source.observations
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(1);
        let device = self.device();
        let (from, into) = (&source.hidden, &self.hidden);
        let mut adapters: Vec<(String, usize, usize)> = Vec::new();
        for which in ["actor", "critic"] {
            adapters.extend((1..into.len()).map(|i| (format!("lateral.{which}.{i}"), from[i - 1], into[i])));
        }
        let last = *from.last().expect("at least one hidden layer");
        adapters.push(("lateral.policy".into(), last, self.actions));
        adapters.push(("lateral.value".into(), last, 1));
        for (name, width_from, width_into) in adapters {
            self.tensors.insert(format!("{name}.v"), uniform_init(&[rank, width_from], width_from, &mut rng, &device)?);
            self.tensors.insert(format!("{name}.u"), Tensor::zeros((width_into, rank), DType::F32, &device)?);
        }
        self.source = Some((Arc::new(source), rank));
        Ok(self)
    }

    /// The frozen source column, when the network has one.
    pub fn source(&self) -> Option<&PolicyNet> {
        self.source.as_ref().map(|(s, _)| s.as_ref())
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
        let source = match &self.source {
            Some((s, rank)) => Some((Arc::new(s.to_dtype(dtype)?), *rank)),
            None => None,
        };
        Ok(Self { tensors, source, ..self.clone() })
    }

    /// Hidden widths.
    pub fn hidden(&self) -> &[usize] {
        &self.hidden
    }

    /// The part a tensor name belongs to.
    pub fn part_of(name: &str) -> Part {
        if name.starts_with("lateral.") {
            Part::Lateral
        } else if name.starts_with("actor.0.") || name.starts_with("critic.0.") {
            Part::Input
        } else if name.starts_with("actor.") || name.starts_with("critic.") {
            Part::Hidden
        } else if name.starts_with("policy.") {
            Part::Policy
        } else {
            Part::Value
        }
    }

    /// Whether a tensor serves only the value estimate (the critic's trunk, the value head and
    /// the adapters into them), which a value-based learner neither uses nor trains.
    pub fn is_critic(name: &str) -> bool {
        ["critic.", "value.", "lateral.critic.", "lateral.value."].iter().any(|p| name.starts_with(p))
    }

    /// Every tensor of the network by name, as it stands (not the source column's).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.tensors.iter().map(|(n, t)| (n.clone(), t.clone())).collect()
    }

    /// Makes the tensors of `parts` variables (training updates them in place) and returns them
    /// by name.
    pub fn trainable(&mut self, parts: &[Part]) -> Result<Vec<(String, Var)>> {
        self.trainable_where(|name| parts.contains(&Self::part_of(name)))
    }

    /// What the network is, for a saved file's header.
    pub fn description(&self) -> PolicyDescription {
        PolicyDescription {
            format: POLICY_FORMAT.into(),
            observations: self.observations,
            actions: self.actions,
            hidden: self.hidden.clone(),
            lateral_rank: self.source.as_ref().map(|(_, rank)| *rank),
            source: self.source.as_ref().map(|(s, _)| Box::new(s.description())),
        }
    }

    /// The network's tensors and its source column's (under `source.`), names prefixed.
    pub(super) fn all_tensors(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        out.extend(self.tensors.iter().map(|(n, t)| (format!("{prefix}{n}"), t.detach())));
        if let Some((s, _)) = &self.source {
            s.all_tensors(&format!("{prefix}source."), out);
        }
    }

    /// Writes the network (with its source column) as safetensors with a
    /// [`PolicyDescription`] in the header, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = HashMap::from([(POLICY_METADATA_KEY.to_string(), serde_json::to_string(&self.description())?)]);
        let mut tensors = Vec::new();
        self.all_tensors("", &mut tensors);
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
        let mut map = file.load_all(device)?;
        Self::from_tensors(&desc, &mut map, "", device).map_err(bad)
    }

    /// The network `desc` describes, its tensors taken from `map` under `prefix`.
    fn from_tensors(
        desc: &PolicyDescription,
        map: &mut HashMap<String, Tensor>,
        prefix: &str,
        device: &Device,
    ) -> std::result::Result<Self, String> {
        if desc.format != POLICY_FORMAT {
            return Err(format!("format `{}`, expected `{POLICY_FORMAT}`", desc.format));
        }
        let mut net = Self::new(desc.observations, desc.actions, &desc.hidden, 0, device).map_err(|e| e.to_string())?;
        match (&desc.source, desc.lateral_rank) {
            (Some(source), Some(rank)) => {
                let source = Self::from_tensors(source, map, &format!("{prefix}source."), device)?;
                net = net.with_source(source, rank, 0).map_err(|e| e.to_string())?;
            }
            (None, None) => {}
            _ => return Err("the description names a source column without a lateral rank, or the reverse".into()),
        }
        for (name, t) in net.tensors.iter_mut() {
            let name = format!("{prefix}{name}");
            let got = map.remove(&name).ok_or_else(|| format!("lacks tensor `{name}`"))?;
            let got = got.to_dtype(DType::F32).map_err(|e| e.to_string())?;
            if got.dims() != t.dims() {
                return Err(format!("tensor `{name}` has shape {:?}, expected {:?}", got.dims(), t.dims()));
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
        Ok(self.trunks(which, obs)?.0)
    }

    /// The trunk's activations and, with a source column, the source's same trunk's (each
    /// layer `i ≥ 1` adds the adapter from the source's layer `i − 1`).
    fn trunks(&self, which: &str, obs: &Tensor) -> Result<(Vec<Tensor>, Option<Vec<Tensor>>)> {
        let source = self.source().map(|s| s.trunk(which, obs)).transpose()?;
        let mut h = obs.clone();
        let mut out = Vec::with_capacity(self.hidden.len());
        for i in 0..self.hidden.len() {
            let mut z = self.layer(&h, &format!("{which}.{i}"))?;
            if let (Some(s), Some(below)) = (&source, i.checked_sub(1)) {
                z = (z + self.lateral(&format!("lateral.{which}.{i}"), &s[below])?)?;
            }
            h = z.tanh()?;
            out.push(h.clone());
        }
        Ok((out, source))
    }

    /// `x` through the adapter `name`: `U·tanh(V·x)`.
    fn lateral(&self, name: &str, x: &Tensor) -> Result<Tensor> {
        let (v, u) = (&self.tensors[&format!("{name}.v")], &self.tensors[&format!("{name}.u")]);
        Ok(x.matmul(&v.t()?)?.tanh()?.matmul(&u.t()?)?)
    }

    /// Head `head` (`"policy"` or `"value"`) on trunk `which`, plus the adapter from the
    /// source's last layer.
    fn head(&self, which: &str, head: &str, obs: &Tensor) -> Result<Tensor> {
        let (own, source) = self.trunks(which, obs)?;
        let last = |t: &[Tensor]| t.last().expect("at least one hidden layer").clone();
        let mut z = self.layer(&last(&own), head)?;
        if let Some(s) = source {
            z = (z + self.lateral(&format!("lateral.{head}"), &last(&s))?)?;
        }
        Ok(z)
    }

    /// Action outputs `[n, actions]` (the actor alone: logits for a policy, Q-values for a
    /// value-based learner) for observations `[n, obs]`.
    pub fn action_outputs(&self, obs: &Tensor) -> Result<Tensor> {
        self.head("actor", "policy", obs)
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
        let logits = self.head("actor", "policy", obs)?;
        let values = self.head("critic", "value", obs)?.squeeze(D::Minus1)?;
        Ok((logits, values))
    }
}
