//! Few-shot episodes: an N-way K-shot Q-query task drawn from a labelled dataset's classes.
//!
//! A dataset is given as its classes ([`ClassMembers`]: each class's name and its examples,
//! as indices into the dataset's inputs). [`split_classes`] deals whole classes, by a seed, into
//! meta-train, meta-validation and meta-test, so no class (and, since each example belongs to
//! one class, no example) is seen in two splits. An [`EpisodeSampler`] over one split draws
//! episode `i` as a pure function of `(seed, i)`: `n_way` distinct classes, then per class
//! `k_shot + q_query` distinct examples, the first `k_shot` the support set and the rest the
//! query set. The same seed gives the same episodes, so a resumed meta-training run sees the
//! episodes an uninterrupted one would.

use crate::data::{permute, stream_rng};
use crate::{GraftError, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A labelled dataset's classes: `(name, example indices)` per class.
pub type ClassMembers = Vec<(String, Vec<usize>)>;

/// The ChaCha stream of the class split (episodes use stream = episode index).
const CLASS_SPLIT_STREAM: u64 = u64::MAX - 1;

/// The size of an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpisodeShape {
    /// Classes per episode (N).
    pub n_way: usize,
    /// Labelled support examples per class (K).
    pub k_shot: usize,
    /// Query examples per class, scored after adapting to the support set (Q).
    pub q_query: usize,
}

impl EpisodeShape {
    /// Refuses shapes no episode can have: fewer than 2 ways, no shot or no query.
    pub fn validate(&self) -> Result<()> {
        if self.n_way < 2 || self.k_shot == 0 || self.q_query == 0 {
            return Err(GraftError::Input(format!(
                "episodes need n_way ≥ 2, k_shot ≥ 1 and q_query ≥ 1, got {}-way {}-shot {}-query",
                self.n_way, self.k_shot, self.q_query
            )));
        }
        Ok(())
    }

    /// Examples an episode draws from each of its classes (K + Q).
    pub fn per_class(&self) -> usize {
        self.k_shot + self.q_query
    }
}

/// A dataset's classes dealt into the three meta-learning splits, each sorted by class name.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassSplits {
    /// Classes the algorithms meta-train on.
    pub train: ClassMembers,
    /// Classes for choosing settings (never trained on).
    pub val: ClassMembers,
    /// Classes of the reported accuracy (never trained on, never used for choices).
    pub test: ClassMembers,
}

/// Deals `classes` into meta-train / meta-validation / meta-test by a seeded shuffle of the
/// classes: `round(n · val_fraction)` and `round(n · test_fraction)` classes (at least one each
/// when its fraction is above 0) go to validation and test, the rest to training.
///
/// Errors: fractions outside [0, 1) or summing to 1 or more, too few classes to leave one for
/// training, a repeated class name, an example listed in two classes (it would leak between
/// splits).
pub fn split_classes(classes: ClassMembers, val_fraction: f64, test_fraction: f64, seed: u64) -> Result<ClassSplits> {
    let ok = |f: f64| (0.0..1.0).contains(&f);
    if !ok(val_fraction) || !ok(test_fraction) || val_fraction + test_fraction >= 1.0 {
        return Err(GraftError::Input(format!(
            "class split fractions must be in [0, 1) and sum below 1, got val {val_fraction} and test {test_fraction}"
        )));
    }
    let mut owner: HashMap<usize, &str> = HashMap::new();
    let mut names: HashMap<&str, ()> = HashMap::new();
    for (name, members) in &classes {
        if names.insert(name.as_str(), ()).is_some() {
            return Err(GraftError::Input(format!("class `{name}` is listed twice")));
        }
        for &m in members {
            if let Some(other) = owner.insert(m, name.as_str()) {
                if other != name {
                    return Err(GraftError::Input(format!(
                        "example {m} is in both class `{other}` and class `{name}`: each example needs one class"
                    )));
                }
            }
        }
    }
    let n = classes.len();
    let count = |f: f64| if f > 0.0 { ((n as f64 * f).round() as usize).max(1) } else { 0 };
    let (n_val, n_test) = (count(val_fraction), count(test_fraction));
    if n_val + n_test >= n {
        return Err(GraftError::Input(format!(
            "{n} classes cannot be split into {n_val} validation, {n_test} test and at least one training class"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    permute(&mut order, &mut stream_rng(seed, CLASS_SPLIT_STREAM));
    let mut slots: Vec<Option<(String, Vec<usize>)>> = classes.into_iter().map(Some).collect();
    let mut take = |idx: &[usize]| -> ClassMembers {
        let mut out: ClassMembers = idx.iter().filter_map(|&i| slots[i].take()).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    };
    let test = take(&order[..n_test]);
    let val = take(&order[n_test..n_test + n_val]);
    let train = take(&order[n_test + n_val..]);
    Ok(ClassSplits { train, val, test })
}

/// One episode: examples as indices into the dataset, labels as the way (0..n_way) of their
/// class; support and query are way-major (all of way 0, then way 1, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// The split's class index of each way.
    pub ways: Vec<usize>,
    /// Support examples (`n_way · k_shot`).
    pub support: Vec<usize>,
    /// The way of each support example.
    pub support_labels: Vec<usize>,
    /// Query examples (`n_way · q_query`).
    pub query: Vec<usize>,
    /// The way of each query example.
    pub query_labels: Vec<usize>,
}

/// Draws episodes of one shape from one split's classes.
#[derive(Debug, Clone)]
pub struct EpisodeSampler {
    classes: ClassMembers,
    shape: EpisodeShape,
    seed: u64,
}

impl EpisodeSampler {
    /// A sampler of `shape` episodes over `classes` (the split called `split` in errors).
    ///
    /// Errors: an invalid shape, fewer classes than `n_way`, a class with fewer than
    /// `k_shot + q_query` examples (naming it) or with a repeated example.
    pub fn new(split: &str, classes: ClassMembers, shape: EpisodeShape, seed: u64) -> Result<Self> {
        shape.validate()?;
        if classes.len() < shape.n_way {
            return Err(GraftError::Input(format!(
                "the {split} split has {} classes; {}-way episodes need at least {}",
                classes.len(),
                shape.n_way,
                shape.n_way
            )));
        }
        for (name, members) in &classes {
            if members.len() < shape.per_class() {
                return Err(GraftError::Input(format!(
                    "class `{name}` of the {split} split has {} examples; {}-shot {}-query episodes need at least {} per class",
                    members.len(),
                    shape.k_shot,
                    shape.q_query,
                    shape.per_class()
                )));
            }
            let mut sorted = members.clone();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                return Err(GraftError::Input(format!("class `{name}` lists an example twice")));
            }
        }
        Ok(Self { classes, shape, seed })
    }

    /// The split's classes.
    pub fn classes(&self) -> &ClassMembers {
        &self.classes
    }

    /// The episode shape.
    pub fn shape(&self) -> EpisodeShape {
        self.shape
    }

    /// Episode `index`: a pure function of the seed and `index`.
    pub fn episode(&self, index: u64) -> Episode {
        let s = self.shape;
        let mut rng = stream_rng(self.seed, index);
        let mut order: Vec<usize> = (0..self.classes.len()).collect();
        permute(&mut order, &mut rng);
        let ways: Vec<usize> = order[..s.n_way].to_vec();
        let mut ep = Episode {
            support: Vec::with_capacity(s.n_way * s.k_shot),
            support_labels: Vec::with_capacity(s.n_way * s.k_shot),
            query: Vec::with_capacity(s.n_way * s.q_query),
            query_labels: Vec::with_capacity(s.n_way * s.q_query),
            ways: Vec::new(),
        };
        for (way, &c) in ways.iter().enumerate() {
            let mut members = self.classes[c].1.clone();
            permute(&mut members, &mut rng);
            ep.support.extend_from_slice(&members[..s.k_shot]);
            ep.support_labels.extend(std::iter::repeat_n(way, s.k_shot));
            ep.query.extend_from_slice(&members[s.k_shot..s.per_class()]);
            ep.query_labels.extend(std::iter::repeat_n(way, s.q_query));
        }
        ep.ways = ways;
        ep
    }
}
