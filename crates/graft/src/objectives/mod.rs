//! Training objectives: what a technique's loss is, as the trainer's
//! [`Objective`](crate::train::Objective) seam sees it.
//!
//! - [`causal_lm`]: next-token loss on the supervised positions of token batches (fine-tuning
//!   with LoRA, QLoRA, full, freeze, prompt and prefix tuning).

pub mod causal_lm;
