//! `graft data build austen-dialogue`: the dialogue of Jane Austen's novels (the `janeaustenr`
//! asset, read as [`crate::datasets::austen`] does) as chat turns for giving a model a
//! character's voice, and as single lines for a style classifier.
//!
//! Speeches and turns are found by [`crate::datasets::austen_dialogue`]. Chapters are split as
//! the `austen` build splits them, with a validation share taken out of training:
//! chapters `N`, `2N`, ... of each novel (`N` = `test_every`) are the test chapters, chapters
//! `N/2`, `N/2 + N`, ... (5, 15, 25, ... for 10) the validation chapters, the rest training.
//! Files (every line also carries `novel` and `chapter`, which training ignores):
//!
//! - `chat.{train,valid,test}.jsonl`: one turn per line, `messages` = the line as the user's
//!   message, the reply as the assistant's; turns whose line or reply is longer than `max_chars`
//!   characters are left out.
//! - `lines.{train,test}.jsonl`: every speech of at most `max_chars` characters as `text`.
//!
//! The build is a pure function of the asset and the options.

use super::data_build::BuildSummary;
use crate::assets;
use crate::datasets::austen::{self, Chapter};
use crate::datasets::austen_dialogue;
use crate::datasets::task_files;
use crate::{GraftError, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// How the dialogue is cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogueOptions {
    /// Longest line or reply kept, in characters.
    pub max_chars: usize,
    /// Chapters `test_every`, `2·test_every`, ... of each novel are test chapters (and
    /// chapters `test_every/2`, ... validation chapters).
    pub test_every: usize,
}

impl Default for DialogueOptions {
    /// Lines and replies of at most 300 characters (about 65 SmolLM2 tokens: a game
    /// character's line, and a turn fits a 256-token window with the chat template), every
    /// 10th chapter a test chapter (as the `austen` build).
    fn default() -> Self {
        Self { max_chars: 300, test_every: 10 }
    }
}

/// Which file a chapter's dialogue goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Train,
    Valid,
    Test,
}

fn split_of(number: usize, every: usize) -> Split {
    if austen::is_held_out(number, every) {
        Split::Test
    } else if number % every == every / 2 {
        Split::Valid
    } else {
        Split::Train
    }
}

/// Writes the chat and line files (see the module documentation) into `out`, fetching the
/// `janeaustenr` asset if needed.
pub fn build_austen_dialogue(
    opts: &DialogueOptions,
    out: &Path,
    on_note: &mut dyn FnMut(String),
) -> Result<BuildSummary> {
    if opts.test_every < 3 {
        return Err(GraftError::Input(format!(
            "test_every = {}: the dialogue build holds out test and validation chapters, so N must be at least 3",
            opts.test_every
        )));
    }
    if opts.max_chars < 20 {
        return Err(GraftError::Input(format!("max_chars = {}: lines need at least 20 characters", opts.max_chars)));
    }
    let dir = assets::ensure("janeaustenr", false)?;
    on_note("reading the six novels from the janeaustenr R database".into());
    let mut chat: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    let mut lines: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for novel in austen::read_novels(&dir)? {
        let (mut n_turns, mut n_lines) = (0, 0);
        for chapter in &austen::chapters(&novel)? {
            let (turns, speeches) = dialogue(chapter, opts.max_chars);
            (n_turns, n_lines) = (n_turns + turns.len(), n_lines + speeches.len());
            let split = split_of(chapter.number, opts.test_every);
            let name = match split {
                Split::Train => "train",
                Split::Valid => "valid",
                Split::Test => "test",
            };
            chat.entry(name).or_default().extend(turns);
            // Validation chapters give no lines: the style classifier has a train and a test set.
            if split != Split::Valid {
                lines.entry(name).or_default().extend(speeches);
            }
        }
        on_note(format!("{}: {n_turns} turns, {n_lines} lines", novel.info.title));
    }
    std::fs::create_dir_all(out).map_err(|e| GraftError::io(out, e))?;
    let mut files = BTreeMap::new();
    for (prefix, mut sets, splits) in
        [("chat", chat, &["train", "valid", "test"][..]), ("lines", lines, &["train", "test"][..])]
    {
        for split in splits {
            let name = format!("{prefix}.{split}.jsonl");
            let rows = sets.remove(split).unwrap_or_default();
            files.insert(name.clone(), task_files::write_jsonl(&out.join(&name), rows)?);
        }
    }
    Ok(BuildSummary { dataset: "austen-dialogue".into(), out: out.to_path_buf(), files })
}

/// The chapter's turns (chat lines) and speeches (text lines) of at most `max_chars` characters.
fn dialogue(chapter: &Chapter, max_chars: usize) -> (Vec<Value>, Vec<Value>) {
    let fits = |s: &str| s.chars().count() <= max_chars;
    let (novel, number) = (chapter.novel, chapter.number);
    let turns = austen_dialogue::turns(&chapter.paragraphs)
        .into_iter()
        .filter(|t| fits(&t.line) && fits(&t.reply))
        .map(|t| {
            json!({
                "messages": [{ "role": "user", "content": t.line }, { "role": "assistant", "content": t.reply }],
                "novel": novel, "chapter": number,
            })
        })
        .collect();
    let speeches = austen_dialogue::speeches(&chapter.paragraphs)
        .into_iter()
        .filter(|s| fits(&s.text))
        .map(|s| json!({ "text": s.text, "novel": novel, "chapter": number }))
        .collect();
    (turns, speeches)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chapters_split_into_train_valid_and_test() {
        let splits: Vec<Split> = (1..=20).map(|n| split_of(n, 10)).collect();
        for (i, s) in splits.iter().enumerate() {
            let n = i + 1;
            let want = match n {
                10 | 20 => Split::Test,
                5 | 15 => Split::Valid,
                _ => Split::Train,
            };
            assert_eq!(*s, want, "chapter {n}");
        }
        assert_eq!([1, 2, 3].map(|n| split_of(n, 3)), [Split::Valid, Split::Train, Split::Test]);
    }

    #[test]
    fn long_turns_and_lines_are_left_out() {
        let chapter = Chapter {
            novel: "emma",
            number: 4,
            heading: "CHAPTER IV".into(),
            paragraphs: vec![
                r#""Short line," said she."#.into(),
                format!(r#""{}""#, "word ".repeat(10).trim()),
                r#""Yes.""#.into(),
            ],
        };
        let (turns, speeches) = dialogue(&chapter, 20);
        assert_eq!(speeches.len(), 2, "{speeches:?}");
        assert_eq!(speeches[0], json!({ "text": "Short line.", "novel": "emma", "chapter": 4 }));
        assert!(turns.is_empty(), "both turns hold the 49-character speech: {turns:?}");
        let (turns, _) = dialogue(&chapter, 100);
        assert_eq!(turns.len(), 2);
        assert_eq!(turns[0]["messages"][0]["content"], "Short line.");
        assert_eq!(turns[1]["messages"][1], json!({ "role": "assistant", "content": "Yes." }));
        let e = build_austen_dialogue(
            &DialogueOptions { test_every: 2, ..Default::default() },
            Path::new("x"),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("at least 3"), "{e}");
    }
}
