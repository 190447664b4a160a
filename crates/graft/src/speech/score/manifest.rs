//! The utterances to score from two JSONL files: a speech manifest (`graft data build speech`'s
//! `{"audio", "text", "language", ...}` lines) and a hypotheses file of `{"audio", "text"}`
//! lines, matched by `audio`.

use super::Utterance;
use crate::datasets::task_files::{for_each_line, string_field};
use crate::{GraftError, Result};
use std::collections::HashMap;
use std::path::Path;

/// One utterance per manifest line, in manifest order, with the hypothesis of the same `audio`.
///
/// Every manifest line needs string fields `audio`, `text` and `language` (other fields are
/// ignored); every hypothesis line `audio` and `text`. An `audio` that appears twice in either
/// file, a hypothesis whose `audio` is not in the manifest, and a manifest line without a
/// hypothesis are errors naming the file and line.
pub fn read_pairs(manifest: &Path, hypotheses: &Path) -> Result<Vec<Utterance>> {
    let mut hyps: HashMap<String, (usize, String, bool)> = HashMap::new();
    for_each_line(hypotheses, &mut |line, v| {
        let at = format!("{}:{line}", hypotheses.display());
        let audio = string_field(v, "audio", &at)?;
        let text = string_field(v, "text", &at)?;
        if let Some((first, _, _)) = hyps.insert(audio.to_string(), (line, text.to_string(), false)) {
            return Err(GraftError::Input(format!("{at}: audio `{audio}` already has a hypothesis on line {first}")));
        }
        Ok(())
    })?;
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for_each_line(manifest, &mut |line, v| {
        let at = format!("{}:{line}", manifest.display());
        let audio = string_field(v, "audio", &at)?;
        if let Some(first) = seen.insert(audio.to_string(), line) {
            return Err(GraftError::Input(format!("{at}: audio `{audio}` is already listed on line {first}")));
        }
        let Some((_, hypothesis, used)) = hyps.get_mut(audio) else {
            return Err(GraftError::Input(format!(
                "{at}: no hypothesis for audio `{audio}` in {}",
                hypotheses.display()
            )));
        };
        *used = true;
        out.push(Utterance {
            language: string_field(v, "language", &at)?.to_string(),
            reference: string_field(v, "text", &at)?.to_string(),
            hypothesis: hypothesis.clone(),
        });
        Ok(())
    })?;
    if let Some((audio, (line, _, _))) =
        hyps.iter().filter(|(_, (_, _, used))| !used).min_by_key(|(_, (line, _, _))| *line)
    {
        return Err(GraftError::Input(format!(
            "{}:{line}: audio `{audio}` is not in the manifest {}",
            hypotheses.display(),
            manifest.display()
        )));
    }
    Ok(out)
}
