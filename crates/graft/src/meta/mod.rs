//! Meta-learning: few-shot episodes over a labelled dataset's classes (docs/meta-learning.md).
//!
//! - [`episodes`]: disjoint class splits for meta-train / meta-validation / meta-test and a
//!   seeded N-way K-shot Q-query [`EpisodeSampler`].

pub mod episodes;

pub use episodes::{split_classes, ClassMembers, ClassSplits, Episode, EpisodeSampler, EpisodeShape};
