//! Training objectives: what a technique's loss is, as the trainer's
//! [`Objective`](crate::train::Objective) seam sees it.
//!
//! - [`causal_lm`]: next-token loss on the supervised positions of token batches (fine-tuning
//!   with LoRA, QLoRA, full, freeze, prompt and prefix tuning).
//! - [`classification`]: cross-entropy of a head on pooled features — fixed features (probes),
//!   a decoder's top blocks or a sentence encoder's top layers trained with it.
//! - [`masked_lm`]: masked-language modelling of a BERT-family encoder with its tied MLM head;
//!   [`masking`] chooses and replaces the target tokens.
//! - [`simcse`]: unsupervised SimCSE of a sentence encoder (two dropout views, in-batch
//!   negatives), with alignment / uniformity to catch collapse.
//! - [`distillation`]: cross-entropy mixed with a divergence from a frozen teacher's next-token
//!   distribution (knowledge distillation); [`hidden_match`]: its hidden-state term;
//!   [`distillation_cached`]: the same against a teacher cache (top-k log-probabilities on disk).
//!   [`cross_distillation`]: the same across tokenizers (ULD), on the answer positions
//!   [`token_pairing`] pairs. [`on_policy`]: the batches of on-policy steps, the student's own
//!   samples after each row's prompt (GKD).
//! - [`anil`]: ANIL — a linear softmax head adapted per episode by a few gradient steps, its
//!   exact second-order meta-gradient through closed-form Hessian-vector products.
//! - [`protonet`]: prototypical networks — one episode per micro-batch, queries classified by
//!   their negative squared distance to the support set's class means.
//! - [`multitask`]: next-token loss on a micro-batch of one task, weighted per task (equal,
//!   fixed or learned uncertainty weights).
//! - [`transcript`]: Whisper's transcript loss given the audio (speech fine-tuning).

pub mod anil;
pub mod causal_lm;
pub mod classification;
pub mod cross_distillation;
pub mod dense;
pub mod distillation;
pub mod distillation_cached;
pub mod domain_adapted;
pub mod hidden_match;
pub mod maml;
pub mod masked_lm;
pub mod masking;
pub mod multitask;
pub mod on_policy;
pub mod protonet;
pub mod simcse;
pub mod token_pairing;
pub mod transcript;
