//! Text generation: [`generate`] plus incremental detokenization and stop strings, streaming
//! only text that is final (complete characters, and never the beginning of a stop string).

use super::generator::{generate, GenerateOptions, Generation, StopReason};
use super::stop::StopStrings;
use super::stream::{Detokenizer, IncrementalDecoder};
use crate::models::Model;
use crate::Result;
use std::ops::ControlFlow;

/// A finished text generation.
#[derive(Debug, Clone, PartialEq)]
pub struct TextGeneration {
    /// Ids and timings.
    pub generation: Generation,
    /// The generated text, without an ending EOS and cut before the first stop string.
    pub text: String,
}

/// Tracks generated text, what has been streamed, and where stop strings are.
struct TextState<'a> {
    detok: &'a dyn Detokenizer,
    stops: &'a StopStrings,
    decoder: IncrementalDecoder,
    text: String,
    emitted: usize,
    stopped: bool,
}

impl TextState<'_> {
    /// Appends `piece`; returns the text that is now safe to stream. Once a stop string is
    /// found, the text is cut before it and `stopped` is set.
    fn add(&mut self, piece: &str, final_piece: bool) -> &str {
        let search_from = self.text.len().saturating_sub(self.stops.max_len());
        self.text.push_str(piece);
        let start = self.emitted;
        if let Some(at) = self.stops.find(&self.text, search_from) {
            self.text.truncate(at);
            self.stopped = true;
        }
        // Nothing streamed can hold a stop string's beginning, so a cut never reaches below it.
        let start = start.min(self.text.len());
        let hold = if self.stopped || final_piece { 0 } else { self.stops.partial_suffix_len(&self.text) };
        let end = (self.text.len() - hold).max(start);
        self.emitted = end;
        &self.text[start..end]
    }
}

/// Generates text after `prompt_ids`: calls `on_text` with each new piece of final text as it
/// appears, stops at EOS, `max_new_tokens`, the end of the context, or the first of `stops`
/// (which is removed from the text).
pub fn generate_text(
    model: &dyn Model,
    detok: &dyn Detokenizer,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    stops: &StopStrings,
    on_text: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<TextGeneration> {
    let mut state =
        TextState { detok, stops, decoder: IncrementalDecoder::new(), text: String::new(), emitted: 0, stopped: false };
    let mut on_token = |id: u32| -> Result<ControlFlow<StopReason>> {
        if opts.eos_ids.contains(&id) {
            return Ok(ControlFlow::Continue(()));
        }
        let piece = state.decoder.push(state.detok, id)?;
        let ready = state.add(&piece, false);
        if !ready.is_empty() {
            on_text(ready)?;
        }
        Ok(if state.stopped { ControlFlow::Break(StopReason::StopString) } else { ControlFlow::Continue(()) })
    };
    let mut generation = generate(model, prompt_ids, opts, &mut on_token)?;
    if !state.stopped {
        let tail = state.decoder.finish(detok)?;
        let ready = state.add(&tail, true);
        if !ready.is_empty() {
            on_text(ready)?;
        }
        if state.stopped {
            generation.stop_reason = StopReason::StopString;
        }
    }
    Ok(TextGeneration { generation, text: state.text })
}
