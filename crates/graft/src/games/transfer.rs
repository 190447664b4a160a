//! How an agent for a target variant starts from a source variant's trained policy: nothing of
//! it, all of it, its frozen trunks under new heads, the layers whose shapes fit when the
//! spaces differ, or the whole source kept frozen as a column that a new network reads
//! through lateral adapters (a progressive network: Rusu et al. 2016).

use super::policy::{Part, PolicyNet};
use crate::{GraftError, Result};
use candle_core::Tensor;

/// The inner width of the lateral adapters of a `progressive` transfer unless the config sets
/// one.
pub const DEFAULT_LATERAL_RANK: usize = 16;

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
    /// A fresh network (a new column) with lateral adapters from every trunk layer of the
    /// source, which stays frozen; the new column and the adapters train. The adapters start
    /// at zero, so the column starts as `scratch` does. The observation spaces must match; the
    /// action counts may differ.
    Progressive,
}

impl PolicyNet {
    /// The starting policy of `method` for a target of `observations` and `actions` from
    /// `source` (fresh parts drawn from `seed`, with the source's hidden widths; `lateral_rank`
    /// is the inner width of a progressive column's adapters), the parts that train, and the
    /// names of the tensors taken from the source (a progressive column's frozen source under
    /// `source.`).
    pub fn transfer(
        source: &PolicyNet,
        observations: usize,
        actions: usize,
        method: TransferMethod,
        (seed, lateral_rank): (u64, usize),
    ) -> Result<(PolicyNet, Vec<Part>, Vec<String>)> {
        let fresh = PolicyNet::new(observations, actions, &source.hidden, seed, &source.device())?;
        let same_obs = observations == source.observations;
        let same_actions = actions == source.actions;
        let all = vec![Part::Input, Part::Hidden, Part::Policy, Part::Value];
        let needs_same = match method {
            TransferMethod::WarmStart => !same_obs || !same_actions,
            TransferMethod::FrozenTrunk | TransferMethod::Progressive => !same_obs,
            TransferMethod::Scratch | TransferMethod::Remap => false,
        };
        let name = serde_json::to_value(method)?.as_str().unwrap_or_default().to_string();
        if needs_same {
            return Err(GraftError::Input(format!(
                "transfer `{name}` needs the source's spaces ({} observations, {} actions) but the target has {observations} and {actions}: use `remap`",
                source.observations,
                source.actions
            )));
        }
        if source.source.is_some() && !matches!(method, TransferMethod::Scratch | TransferMethod::Progressive) {
            return Err(GraftError::Input(format!(
                "transfer `{name}` cannot start from a progressive policy (its layers read a source column): use `progressive` to add another column on it"
            )));
        }
        if method == TransferMethod::Progressive {
            let mut kept = Vec::new();
            source.all_tensors("source.", &mut kept);
            let net = fresh.with_source(source.snapshot()?, lateral_rank, seed)?;
            let parts = vec![Part::Input, Part::Hidden, Part::Policy, Part::Value, Part::Lateral];
            return Ok((net, parts, kept.into_iter().map(|(n, _)| n).collect()));
        }
        let keep = |name: &str| match method {
            TransferMethod::Scratch | TransferMethod::Progressive => false,
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
