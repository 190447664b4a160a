//! One module per `graft` subcommand.

/// Returns early with a bad-input error (exit code 3, like the library's own input errors), for
/// the flag values and arguments the binary checks itself.
macro_rules! bail_input {
    ($($arg:tt)*) => {
        return Err(graft::GraftError::Input(format!($($arg)*)).into())
    };
}
pub(crate) use bail_input;

pub mod bench;
pub mod classify;
pub mod compare;
pub mod continual;
pub mod data;
pub mod distill;
pub mod embed;
pub mod eval;
pub mod eval_encoder;
pub mod eval_tasks;
pub mod export;
pub mod features;
pub mod fetch;
pub mod games;
pub mod generate;
pub mod meta;
pub mod multitask;
pub mod pretrain_mlm;
pub mod pretrain_simcse;
pub mod quickstart;
pub mod report;
pub mod run_args;
pub mod selftest;
pub mod speech;
pub mod teacher_answers;
pub mod tokenize;
pub mod train;
pub mod transcribe;
pub mod validate;
pub mod vision;
