//! Evaluation protocols.
//!
//! - [`perplexity`](mod@perplexity): windowed perplexity of a token sequence (the protocol of the golden
//!   reference values).
//! - [`classification`]: label scoring, accuracy and macro-F1.
//! - [`retrieval`]: recall@k and MRR of finding each query's own target by cosine similarity.
//! - [`rouge`]: ROUGE-1/2/L as the `rouge-score` package computes them.
//! - [`squad`]: SQuAD exact match and token F1.

pub mod classification;
pub mod dense;
pub mod perplexity;
pub mod retrieval;
pub mod rouge;
pub mod squad;

pub use perplexity::{perplexity, perplexity_with_bos, Perplexity};
