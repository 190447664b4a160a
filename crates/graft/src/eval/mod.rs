//! Evaluation protocols.
