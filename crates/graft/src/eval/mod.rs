//! Evaluation protocols.
//!
//! - [`perplexity`]: windowed perplexity of a token sequence (the protocol of the golden
//!   reference values).

pub mod perplexity;
pub mod classification;

pub use perplexity::{perplexity, Perplexity};
