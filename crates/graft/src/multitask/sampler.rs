//! Task samplers: which task a step (or micro-batch) trains on, by the mixing strategies of T5
//! (Raffel et al. 2020, §3.5.2) and mT5 (Xue et al. 2021).
//!
//! With `n_i` the training examples of task `i`, the share of task `i` is
//!
//! | mixing | share `p_i` |
//! |---|---|
//! | proportional | `n_i / Σ n_j` |
//! | capped proportional (cap `K`) | `min(n_i, K) / Σ min(n_j, K)` |
//! | temperature `T` | `n_i^(1/T) / Σ n_j^(1/T)` (T = 1 is proportional, T → ∞ equal) |
//! | equal | `1 / tasks` |
//! | round-robin | `1 / tasks`, drawn as the cycle `0, 1, …, tasks−1, 0, …` |
//!
//! A draw is a pure function of `(seed, step)` — one uniform number from the ChaCha8 stream
//! `step` of the seed, inverted through the cumulative shares — so a resumed run draws the
//! tasks an uninterrupted one did, whatever was drawn before.

use crate::data::uniform;
use crate::{GraftError, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Mixed into the seed so task draws differ from the data-order and masking streams of the same
/// seed.
const SAMPLER_SALT: u64 = 0x6d74_6c5f_7461_736b;

/// How tasks are mixed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mixing {
    /// Shares proportional to example counts.
    Proportional,
    /// Proportional to example counts capped at `cap` (T5's "examples-proportional mixing with
    /// an artificial limit"): a large task counts as `cap` examples.
    Capped {
        /// The cap `K` (≥ 1).
        cap: usize,
    },
    /// Proportional to `n_i^(1/t)`: `t > 1` flattens the mixture towards equal (mT5 uses
    /// `1/t = 0.3`).
    Temperature {
        /// The temperature `T` (> 0, finite).
        t: f64,
    },
    /// Every task the same share, drawn at random.
    Equal,
    /// Every task in turn: step `s` trains task `s mod tasks`.
    RoundRobin,
}

/// A task's name and its number of training examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSize {
    /// The task's name, for messages.
    pub name: String,
    /// Its training examples.
    pub examples: usize,
}

impl TaskSize {
    /// A task of `examples` training examples.
    pub fn new(name: &str, examples: usize) -> Self {
        Self { name: name.into(), examples }
    }
}

/// Draws a task per step by a [`Mixing`] strategy, deterministically from `(seed, step)`.
#[derive(Debug, Clone)]
pub struct TaskSampler {
    mixing: Mixing,
    shares: Vec<f64>,
    /// Upper ends of the tasks' intervals in [0, 1); the last is 1.
    cumulative: Vec<f64>,
    seed: u64,
}

impl TaskSampler {
    /// A sampler over `tasks` (at least one, each with examples and a unique name).
    ///
    /// Refused with [`GraftError::Input`]: no task, a task with no examples or a repeated name,
    /// a cap of 0, a temperature that is not a finite number above 0.
    pub fn new(tasks: &[TaskSize], mixing: Mixing, seed: u64) -> Result<Self> {
        let shares = shares(tasks, mixing)?;
        let mut cumulative = Vec::with_capacity(shares.len());
        let mut acc = 0.0;
        for p in &shares {
            acc += p;
            cumulative.push(acc);
        }
        if let Some(last) = cumulative.last_mut() {
            *last = 1.0;
        }
        Ok(Self { mixing, shares, cumulative, seed })
    }

    /// The formula's share of each task, in the order given (they sum to 1).
    pub fn shares(&self) -> &[f64] {
        &self.shares
    }

    /// The strategy.
    pub fn mixing(&self) -> Mixing {
        self.mixing
    }

    /// The task (its index in the order given) that `step` trains on.
    pub fn task(&self, step: u64) -> usize {
        if let Mixing::RoundRobin = self.mixing {
            return (step % self.shares.len() as u64) as usize;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ SAMPLER_SALT);
        rng.set_stream(step);
        let u = uniform(&mut rng);
        self.cumulative.iter().position(|&c| u < c).unwrap_or(self.cumulative.len() - 1)
    }
}

/// The formula's shares of `tasks` under `mixing`, after checking the input.
pub fn shares(tasks: &[TaskSize], mixing: Mixing) -> Result<Vec<f64>> {
    if tasks.is_empty() {
        return Err(GraftError::Input("a task mixture needs at least one task".into()));
    }
    for (i, task) in tasks.iter().enumerate() {
        if task.examples == 0 {
            return Err(GraftError::Input(format!(
                "task `{}` has no training examples; give it data or leave it out of the mixture",
                task.name
            )));
        }
        if tasks[..i].iter().any(|t| t.name == task.name) {
            return Err(GraftError::Input(format!("task `{}` is listed twice; task names must be unique", task.name)));
        }
    }
    let rates: Vec<f64> = match mixing {
        Mixing::Proportional => tasks.iter().map(|t| t.examples as f64).collect(),
        Mixing::Capped { cap } => {
            if cap == 0 {
                return Err(GraftError::Input(format!(
                    "the mixing cap is 0, which gives every task (`{}`, ...) no share; use a cap of at least 1",
                    tasks[0].name
                )));
            }
            tasks.iter().map(|t| t.examples.min(cap) as f64).collect()
        }
        Mixing::Temperature { t } => {
            if !(t.is_finite() && t > 0.0) {
                return Err(GraftError::Input(format!(
                    "the mixing temperature is {t}; it must be a finite number above 0 (1 = proportional, larger = flatter)"
                )));
            }
            // n^(1/T) through logs, normalised by the largest term, so large counts at small T do
            // not overflow.
            let logs: Vec<f64> = tasks.iter().map(|t_| (t_.examples as f64).ln() / t).collect();
            let top = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            logs.iter().map(|l| (l - top).exp()).collect()
        }
        Mixing::Equal | Mixing::RoundRobin => vec![1.0; tasks.len()],
    };
    let total: f64 = rates.iter().sum();
    Ok(rates.iter().map(|r| r / total).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skewed() -> Vec<TaskSize> {
        vec![TaskSize::new("big", 1000), TaskSize::new("mid", 100), TaskSize::new("small", 10)]
    }

    fn empirical(sampler: &TaskSampler, draws: u64) -> Vec<f64> {
        let mut counts = vec![0usize; sampler.shares().len()];
        for step in 0..draws {
            counts[sampler.task(step)] += 1;
        }
        counts.iter().map(|&c| c as f64 / draws as f64).collect()
    }

    #[test]
    fn formula_shares_of_each_mixing() {
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
        let p = shares(&skewed(), Mixing::Proportional).unwrap();
        assert!(close(&p, &[1000.0 / 1110.0, 100.0 / 1110.0, 10.0 / 1110.0]));
        let c = shares(&skewed(), Mixing::Capped { cap: 100 }).unwrap();
        assert!(close(&c, &[100.0 / 210.0, 100.0 / 210.0, 10.0 / 210.0]));
        // T = 2: √1000, √100, √10.
        let r = [1000f64.sqrt(), 10.0, 10f64.sqrt()];
        let s: f64 = r.iter().sum();
        let t = shares(&skewed(), Mixing::Temperature { t: 2.0 }).unwrap();
        assert!(close(&t, &[r[0] / s, r[1] / s, r[2] / s]));
        let one = shares(&skewed(), Mixing::Temperature { t: 1.0 }).unwrap();
        assert!(close(&one, &p));
        assert!(close(&shares(&skewed(), Mixing::Equal).unwrap(), &[1.0 / 3.0; 3]));
    }

    #[test]
    fn empirical_shares_over_10k_draws_are_within_one_percent() {
        for mixing in [Mixing::Proportional, Mixing::Capped { cap: 100 }, Mixing::Temperature { t: 2.0 }, Mixing::Equal]
        {
            let sampler = TaskSampler::new(&skewed(), mixing, 17).unwrap();
            let seen = empirical(&sampler, 10_000);
            for (i, (e, p)) in seen.iter().zip(sampler.shares()).enumerate() {
                assert!((e - p).abs() < 0.01, "{mixing:?} task {i}: drawn {e}, formula {p}");
            }
        }
    }

    #[test]
    fn round_robin_is_an_exact_cycle() {
        let sampler = TaskSampler::new(&skewed(), Mixing::RoundRobin, 3).unwrap();
        let drawn: Vec<usize> = (0..7).map(|s| sampler.task(s)).collect();
        assert_eq!(drawn, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(empirical(&sampler, 9_999), [1.0 / 3.0; 3]);
    }

    #[test]
    fn draws_depend_only_on_seed_and_step() {
        let a = TaskSampler::new(&skewed(), Mixing::Equal, 5).unwrap();
        let b = TaskSampler::new(&skewed(), Mixing::Equal, 5).unwrap();
        // Resuming at step 500 draws what the uninterrupted run drew there.
        let whole: Vec<usize> = (0..1000).map(|s| a.task(s)).collect();
        let resumed: Vec<usize> = (500..1000).map(|s| b.task(s)).collect();
        assert_eq!(&whole[500..], &resumed[..]);
        let other = TaskSampler::new(&skewed(), Mixing::Equal, 6).unwrap();
        assert_ne!(whole, (0..1000).map(|s| other.task(s)).collect::<Vec<_>>());
    }

    #[test]
    fn bad_input_is_refused_naming_the_task() {
        let err = |tasks: &[TaskSize], m| TaskSampler::new(tasks, m, 0).unwrap_err().to_string();
        let empty = [TaskSize::new("qa", 5), TaskSize::new("summaries", 0)];
        assert!(err(&empty, Mixing::Proportional).contains("task `summaries` has no training examples"));
        assert!(err(&skewed(), Mixing::Capped { cap: 0 }).contains("cap is 0"));
        for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(err(&skewed(), Mixing::Temperature { t }).contains("temperature"), "{t}");
        }
        assert!(err(&[], Mixing::Equal).contains("at least one task"));
        let twice = [TaskSize::new("qa", 5), TaskSize::new("qa", 6)];
        assert!(err(&twice, Mixing::Equal).contains("task `qa` is listed twice"));
    }
}
