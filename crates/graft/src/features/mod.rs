//! Feature extraction: a frozen backbone's representations of texts (an encoder's pooled
//! embeddings, or a decoder's pooled / last-token hidden states from a chosen layer), and the
//! classification heads trained on top of them.
//!
//! - [`extract`]: [`decoder_features`] (a chosen layer, mean or last-token pooling, batched with
//!   padding) and [`encoder_features`] (sentence embeddings).
//! - [`head`]: [`train_head`] fits a standardised linear or MLP head ([`HeadConfig`]) on fixed
//!   features; [`TrainedHead`] predicts, saves and loads.
//! - [`tune`]: [`train_decoder_classifier`] also trains a decoder's top blocks, running the
//!   frozen blocks below them only once.
//! - [`encoder_tune`]: [`train_encoder_classifier`], the same for a sentence encoder's top layers.
//! - [`progressive`]: progressive networks, one MLP column per task with lateral adapters from
//!   the frozen earlier columns ([`ProgressiveNet`], [`fit_column`]).
//!
//! Every head trains on the one [`Trainer`](crate::train::Trainer) with the
//! [classification objective](crate::objectives::classification); the `fit_*` forms take a
//! [`RunOutput`] for checkpoints, `metrics.jsonl`, exact resume and progress.

pub mod encoder_tune;
pub mod extract;
pub mod head;
pub mod progressive;
pub mod tune;

pub use encoder_tune::{fit_encoder_classifier, train_encoder_classifier, EncoderClassifier};
pub use extract::{decoder_features, encoder_features, Pooling};
pub use head::{fit_head, train_head, HeadConfig, HeadKind, RunOutput, Standardizer, TrainedHead};
pub use progressive::{fit_column, ProgressiveConfig, ProgressiveNet};
pub use tune::{fit_decoder_classifier, train_decoder_classifier, DecoderClassifier, DecoderTuning};
