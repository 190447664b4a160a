//! Generation throughput: greedy, batch 1, a fixed prompt and a fixed number of new tokens.

use super::{median, Repeats};
use crate::generate::{generate, GenerateOptions};
use crate::models::Model;
use crate::{GraftError, Result};
use serde::Serialize;
use std::ops::ControlFlow;

/// One timed generation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateRun {
    /// Prompt forward plus choosing the first token, in seconds.
    pub prefill_secs: f64,
    /// Producing the remaining `new_tokens − 1` tokens, in seconds.
    pub decode_secs: f64,
    /// `prompt_tokens / prefill_secs`.
    pub prefill_tokens_per_s: f64,
    /// `(new_tokens − 1) / decode_secs`.
    pub decode_tokens_per_s: f64,
}

/// The result of [`bench_generate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateBench {
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Tokens generated per run.
    pub new_tokens: usize,
    /// Median prefill throughput over the timed runs.
    pub prefill_tokens_per_s: f64,
    /// Median decode throughput over the timed runs.
    pub decode_tokens_per_s: f64,
    /// Every timed run.
    pub runs: Vec<GenerateRun>,
    /// The generated ids of the last run (the same every run: greedy).
    pub new_ids: Vec<u32>,
}

/// Generates `new_tokens` greedily after `prompt_ids`, `repeats.warmup` times untimed and
/// `repeats.runs` times timed. `eos_ids` are masked (as transformers' `min_new_tokens`), so
/// every run produces exactly `new_tokens` tokens. `on_run(i, run)` reports each timed run.
pub fn bench_generate(
    model: &dyn Model,
    prompt_ids: &[u32],
    new_tokens: usize,
    eos_ids: &[u32],
    repeats: Repeats,
    on_run: &mut dyn FnMut(usize, &GenerateRun),
) -> Result<GenerateBench> {
    if repeats.runs == 0 || new_tokens < 2 {
        return Err(GraftError::Input("a generation benchmark needs at least 1 run and 2 new tokens".into()));
    }
    let opts = GenerateOptions {
        max_new_tokens: new_tokens,
        min_new_tokens: new_tokens,
        eos_ids: eos_ids.to_vec(),
        ..GenerateOptions::default()
    };
    let mut runs = Vec::with_capacity(repeats.runs);
    let mut new_ids = Vec::new();
    for i in 0..repeats.warmup + repeats.runs {
        let g = generate(model, prompt_ids, &opts, &mut |_| Ok(ControlFlow::Continue(())))?;
        if i < repeats.warmup {
            continue;
        }
        let run = GenerateRun {
            prefill_secs: g.prefill_secs,
            decode_secs: g.decode_secs,
            prefill_tokens_per_s: g.prefill_tokens_per_s(),
            decode_tokens_per_s: g.decode_tokens_per_s(),
        };
        on_run(i - repeats.warmup, &run);
        runs.push(run);
        new_ids = g.new_ids;
    }
    let pick = |f: fn(&GenerateRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    Ok(GenerateBench {
        prompt_tokens: prompt_ids.len(),
        new_tokens: new_ids.len(),
        prefill_tokens_per_s: pick(|r| r.prefill_tokens_per_s),
        decode_tokens_per_s: pick(|r| r.decode_tokens_per_s),
        runs,
        new_ids,
    })
}
