//! Meta-learning: few-shot episodes over a labelled dataset's classes, the learners meta-trained
//! on them and the frozen-feature baselines they are compared with (docs/meta-learning.md).
//!
//! - [`episodes`]: disjoint class splits for meta-train / meta-validation / meta-test and a
//!   seeded N-way K-shot Q-query [`EpisodeSampler`].
//! - [`projection`]: the residual MLP over frozen embeddings that metric learners train.
//! - [`train`]: prototypical networks, ANIL, MAML, first-order MAML and Reptile meta-trained on
//!   the one trainer (an episode per micro-batch; the losses are [`crate::objectives::protonet`],
//!   [`crate::objectives::anil`] and [`crate::objectives::maml`]).
//! - [`lora_protonet`]: a prototypical network whose adapters live inside a decoder.
//! - [`lora_anil`]: ANIL whose body is the decoder itself, its adapters meta-trained with the
//!   head's start.
//! - [`lora_maml`]: first-order MAML, MAML and Reptile whose inner loop adapts those adapters
//!   and the head.
//! - [`score_log`]: per-episode scores kept as they are made, so that scoring resumes.
//! - [`evaluate`]: accuracy over episodes with a 95 % confidence interval; the nearest-centroid
//!   and fresh-linear-head baselines, and the whole-backbone ones.

pub mod episodes;
pub mod evaluate;
pub mod lora_anil;
pub mod lora_maml;
pub mod lora_protonet;
pub mod projection;
pub mod score_log;
pub mod train;

pub use episodes::{split_classes, ClassMembers, ClassSplits, Episode, EpisodeSampler, EpisodeShape};
pub use evaluate::Accuracy;
pub use projection::Projection;
pub use train::{fit_anil, fit_maml, fit_protonet, MetaTrainConfig};
