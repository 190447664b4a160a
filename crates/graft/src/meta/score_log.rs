//! Per-episode scores kept as they are made: one learner's meta-test accuracies appended to a
//! JSONL file, one line per episode, so that an interrupted scoring run (the whole-backbone
//! baseline fine-tunes a network per episode, hours over 600 episodes) resumes at the first
//! episode it had not finished, and so that the scores made so far can be read while it runs.
//!
//! The first line holds the settings the scores were made under; a resume reads the scores back
//! only when they are the same, and otherwise scores again from the first episode (the learner
//! changed, e.g. it trained for more steps). A last line cut off mid-write (the process killed)
//! is dropped; any other unreadable line is an error naming it.

use crate::{GraftError, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One scored episode.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    episode: usize,
    accuracy: f64,
}

/// The first line: what the scores depend on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    settings: serde_json::Value,
}

/// An open per-episode score file: the accuracies read back and the file new ones go to.
pub struct ScoreLog {
    path: PathBuf,
    file: File,
    done: Vec<f64>,
    stale: bool,
}

impl ScoreLog {
    /// Opens the score file at `path` for scores made under `settings`. With `resume`, the
    /// accuracies of episodes `0, 1, …` already in it are read back when they were made under
    /// the same settings; without (or when they were not), the file starts afresh.
    pub fn open(path: &Path, settings: &serde_json::Value, resume: bool) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
        }
        let header = Header { settings: settings.clone() };
        let read = if resume && path.is_file() { read_back(path, &header)? } else { Some(Vec::new()) };
        let stale = read.is_none();
        let done = read.unwrap_or_default();
        let mut text = serde_json::to_string(&header)? + "\n";
        for (episode, &accuracy) in done.iter().enumerate() {
            text += &(serde_json::to_string(&Line { episode, accuracy })? + "\n");
        }
        // Rewritten whole (dropping a cut-off last line), then appended to episode by episode.
        crate::io::write_atomic(path, &text)?;
        let file = OpenOptions::new().append(true).open(path).map_err(|e| GraftError::io(path, e))?;
        Ok(Self { path: path.to_path_buf(), file, done, stale })
    }

    /// Whether a resume found scores made under other settings and dropped them.
    pub fn stale(&self) -> bool {
        self.stale
    }

    /// The accuracies read back, episode 0 first.
    pub fn done(&self) -> &[f64] {
        &self.done
    }

    /// Appends episode `episode`'s accuracy (it must be the next one) and flushes it to disk.
    pub fn record(&mut self, episode: usize, accuracy: f64) -> Result<()> {
        if episode != self.done.len() {
            return Err(GraftError::Input(format!(
                "{}: episode {episode} scored after {} episodes",
                self.path.display(),
                self.done.len()
            )));
        }
        let line = serde_json::to_string(&Line { episode, accuracy })? + "\n";
        self.file.write_all(line.as_bytes()).map_err(|e| GraftError::io(&self.path, e))?;
        self.file.sync_data().map_err(|e| GraftError::io(&self.path, e))?;
        self.done.push(accuracy);
        Ok(())
    }
}

/// The accuracies in the score file at `path`, or `None` when it opens with another header than
/// `header`.
fn read_back(path: &Path, header: &Header) -> Result<Option<Vec<f64>>> {
    let text = std::fs::read_to_string(path).map_err(|e| GraftError::io(path, e))?;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let bad = |n: usize, what: String| GraftError::Input(format!("{} line {n}: {what}", path.display()));
    let Some(first) = lines.first() else { return Ok(Some(Vec::new())) };
    let found: Header = serde_json::from_str(first).map_err(|e| bad(1, e.to_string()))?;
    if found != *header {
        return Ok(None);
    }
    let mut done = Vec::new();
    for (i, raw) in lines.iter().enumerate().skip(1) {
        let last = i + 1 == lines.len();
        match serde_json::from_str::<Line>(raw) {
            Ok(l) if l.episode == done.len() => done.push(l.accuracy),
            Ok(l) => return Err(bad(i + 1, format!("episode {} where {} was expected", l.episode, done.len()))),
            // The write the process was killed in.
            Err(_) if last && !complete => break,
            Err(e) => return Err(bad(i + 1, e.to_string())),
        }
    }
    Ok(Some(done))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(k: u64) -> serde_json::Value {
        serde_json::json!({ "k_shot": k })
    }

    #[test]
    fn scores_are_read_back_on_resume_and_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scores").join("anil.jsonl");
        let mut log = ScoreLog::open(&path, &settings(1), false).unwrap();
        for (i, a) in [0.5, 0.25, 1.0].into_iter().enumerate() {
            log.record(i, a).unwrap();
        }
        assert!(log.record(5, 0.0).unwrap_err().to_string().contains("episode 5 scored after 3 episodes"));
        drop(log);
        let mut again = ScoreLog::open(&path, &settings(1), true).unwrap();
        assert_eq!(again.done(), [0.5, 0.25, 1.0]);
        assert!(!again.stale());
        again.record(3, 0.75).unwrap();
        drop(again);
        assert_eq!(ScoreLog::open(&path, &settings(1), true).unwrap().done(), [0.5, 0.25, 1.0, 0.75]);
        let other = ScoreLog::open(&path, &settings(5), true).unwrap();
        assert!(other.stale() && other.done().is_empty(), "other settings score again");
        drop(other);
        assert!(ScoreLog::open(&path, &settings(5), false).unwrap().done().is_empty());
    }

    #[test]
    fn a_cut_off_last_line_is_dropped_and_a_broken_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baseline.jsonl");
        let mut log = ScoreLog::open(&path, &settings(1), false).unwrap();
        log.record(0, 0.5).unwrap();
        log.record(1, 0.25).unwrap();
        drop(log);
        let whole = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, whole.clone() + "{\"episode\": 2, \"accur").unwrap();
        let log = ScoreLog::open(&path, &settings(1), true).unwrap();
        assert_eq!(log.done(), [0.5, 0.25], "the write the process died in is dropped");
        drop(log);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), whole, "and the file is whole again");

        let lines: Vec<&str> = whole.lines().collect();
        std::fs::write(&path, format!("{}\nnot json\n{}\n", lines[0], lines[2])).unwrap();
        let err = ScoreLog::open(&path, &settings(1), true).err().unwrap().to_string();
        assert!(err.contains("line 2"), "{err}");
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        let err = ScoreLog::open(&path, &settings(1), true).err().unwrap().to_string();
        assert!(err.contains("line 2: episode 1 where 0 was expected"), "{err}");
    }
}
