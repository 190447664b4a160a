//! `graft data build austen`: Jane Austen's novels (the `janeaustenr` asset) as causal-LM
//! training text, `text.{train,test}.jsonl`, with whole chapters held out.
//!
//! Every `test_every`-th chapter of each novel (chapters 10, 20, ... by default: 25 of 269)
//! goes to the test file, the others to the training file, so no passage of a held-out chapter
//! is ever trained on. Each line is one passage — consecutive paragraphs of one chapter, up to
//! `max_chars` characters — as `{"text", "novel", "chapter"}` (`graft train` reads `text` and
//! ignores the rest). The build is a pure function of the asset and the options.

use super::data_build::BuildSummary;
use crate::assets;
use crate::datasets::austen::{self, Chapter};
use crate::datasets::task_files;
use crate::{GraftError, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;

/// How the novels are cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AustenOptions {
    /// Longest passage, in characters.
    pub max_chars: usize,
    /// Hold out chapters `test_every`, `2·test_every`, ... of each novel.
    pub test_every: usize,
}

impl Default for AustenOptions {
    /// Passages of at most 1,000 characters (about 215 SmolLM2 tokens at the 4.7 characters per
    /// token measured on these texts, so one fits the default `data.seq_len` of 256), every
    /// 10th chapter held out.
    fn default() -> Self {
        Self { max_chars: 1000, test_every: 10 }
    }
}

/// Writes `text.train.jsonl` and `text.test.jsonl` into `out`, fetching the `janeaustenr`
/// asset if needed.
pub fn build_austen(opts: &AustenOptions, out: &Path, on_note: &mut dyn FnMut(String)) -> Result<BuildSummary> {
    if opts.test_every < 2 {
        return Err(GraftError::Input(format!(
            "test_every = {}: hold out every N-th chapter with N of at least 2",
            opts.test_every
        )));
    }
    if opts.max_chars < 100 {
        return Err(GraftError::Input(format!(
            "max_chars = {}: passages need at least 100 characters",
            opts.max_chars
        )));
    }
    let dir = assets::ensure("janeaustenr", false)?;
    on_note("reading the six novels from the janeaustenr R database".into());
    let mut train = Vec::new();
    let mut test = Vec::new();
    for novel in austen::read_novels(&dir)? {
        let chapters = austen::chapters(&novel)?;
        let held = chapters.iter().filter(|c| austen::is_held_out(c.number, opts.test_every)).count();
        on_note(format!("{}: {} chapters, {held} held out", novel.info.title, chapters.len()));
        for chapter in &chapters {
            let side = if austen::is_held_out(chapter.number, opts.test_every) { &mut test } else { &mut train };
            side.extend(records(chapter, opts.max_chars));
        }
    }
    std::fs::create_dir_all(out).map_err(|e| GraftError::io(out, e))?;
    let mut files = BTreeMap::new();
    for (name, rows) in [("text.train.jsonl", train), ("text.test.jsonl", test)] {
        files.insert(name.to_string(), task_files::write_jsonl(&out.join(name), rows)?);
    }
    Ok(BuildSummary { dataset: "austen".into(), out: out.to_path_buf(), files })
}

/// The chapter's passages as JSONL rows.
fn records(chapter: &Chapter, max_chars: usize) -> impl Iterator<Item = serde_json::Value> + '_ {
    austen::passages(&chapter.paragraphs, max_chars)
        .into_iter()
        .map(|text| json!({ "text": text, "novel": chapter.novel, "chapter": chapter.number }))
}
