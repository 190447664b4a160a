//! Recipes: one transfer technique each, written as plain glue over the components (build the
//! parts from the config, run the loop, evaluate, write results). No math lives here.

pub mod austen_data;
pub mod austen_dialogue_data;
pub mod classify_eval;
pub mod compare;
pub mod continual;
mod continual_report;
pub mod continual_score;
pub mod data_build;
pub mod distill;
pub mod distill_cache;
mod distill_cross;
pub mod distill_fill;
pub mod encoder_eval;
pub mod export;
pub mod export_check;
pub mod finetune;
pub mod from_run;
pub mod games;
pub mod image_train;
pub mod labelled;
pub mod meta;
pub mod mlm;
pub mod multitask;
pub mod parts;
pub mod progressive;
pub mod quickstart;
pub mod scene_train;
pub mod speech_data;
pub mod speech_train;
pub mod tasks;
pub mod teacher_answers;
