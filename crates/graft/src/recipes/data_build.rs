//! Building the files of graft's named datasets ([`crate::data::source::BUILT_DATASETS`]):
//! into a folder ([`build_tweets`], [`super::tasks::build_appstream`],
//! [`super::austen_data::build_austen`], [`super::austen_dialogue_data::build_austen_dialogue`];
//! `graft data build NAME --out DIR`), or into the cache on first use of a `dataset:NAME/FILE` data path
//! ([`resolve`]), so that a config naming one runs with nothing else to prepare.
//!
//! The cache copy is built once with the default options into a work folder, then renamed into
//! `<cache>/built/NAME/` in one step, under a per-dataset lock: readers see every file or none,
//! and concurrent runs build it once. Later runs reuse it.

use super::tasks::{build_appstream, BuildOptions};
use crate::assets::{self, cache};
use crate::config::DataSection;
use crate::data::source::{self, BuiltDataset, DataSource};
use crate::datasets::task_files;
use crate::datasets::tweets::{self, Tweet, LABELS};
use crate::prompting::{self, PromptTemplate};
use crate::{GraftError, Result};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Version of what a build writes; a cached build of another version is rebuilt.
const BUILD_VERSION: u32 = 1;

/// Marker file of a finished cached build.
const MARKER: &str = ".built.json";

/// The instruction of the tweets' alpaca lines (the tweet is the input).
pub const TWEET_ALPACA_INSTRUCTION: &str = "Label the sentiment of this tweet: negative, neutral or positive.";

/// How much of the tweet corpus a tweets build uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TweetsOptions {
    /// Training tweets.
    pub n_train: usize,
    /// Test tweets (disjoint from the training ones).
    pub n_test: usize,
    /// Seed of the draw.
    pub seed: u64,
}

impl Default for TweetsOptions {
    /// The quick start's split: 2,000 training and 500 test tweets, seed 42.
    fn default() -> Self {
        Self { n_train: 2000, n_test: 500, seed: 42 }
    }
}

/// What a build wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BuildSummary {
    /// The dataset.
    pub dataset: String,
    /// The folder written.
    pub out: PathBuf,
    /// Lines per file name.
    pub files: BTreeMap<String, usize>,
}

/// Writes the tweets dataset into `out`: `chat.{train,test}.jsonl` (`messages`, the quick
/// start's prompt: system message, question with the tweet, the label as the answer),
/// `alpaca.{train,test}.jsonl` (instruction, the tweet as input, the label as output) and
/// `text.{train,test}.jsonl` (the tweets as plain text). Fetches the `tweets` asset if needed.
pub fn build_tweets(opts: &TweetsOptions, out: &Path, on_note: &mut dyn FnMut(String)) -> Result<BuildSummary> {
    if opts.n_train == 0 || opts.n_test == 0 {
        return Err(GraftError::Input("the tweets build needs at least 1 training and 1 test tweet".into()));
    }
    on_note("reading the tweet sentiment corpus".into());
    let corpus = assets::ensure("tweets", false)?;
    let all = tweets::read(&corpus)?;
    let (train, test) = tweets::split(&all, opts.n_train, opts.n_test, opts.seed);
    std::fs::create_dir_all(out).map_err(|e| GraftError::io(out, e))?;
    let template = PromptTemplate::default();
    let mut files = BTreeMap::new();
    for (split, rows) in [("train", &train), ("test", &test)] {
        let name = format!("chat.{split}.jsonl");
        prompting::write_training_jsonl(&out.join(&name), &template, rows.iter().map(|t| (t.text.as_str(), label(t))))?;
        files.insert(name, rows.len());
        let alpaca = rows
            .iter()
            .map(|t| json!({ "instruction": TWEET_ALPACA_INSTRUCTION, "input": t.text, "output": label(t) }));
        let name = format!("alpaca.{split}.jsonl");
        files.insert(name.clone(), task_files::write_jsonl(&out.join(&name), alpaca)?);
        let name = format!("text.{split}.jsonl");
        files.insert(
            name.clone(),
            task_files::write_jsonl(&out.join(&name), rows.iter().map(|t| json!({ "text": t.text })))?,
        );
    }
    Ok(BuildSummary { dataset: "tweets".into(), out: out.to_path_buf(), files })
}

fn label(t: &Tweet) -> &'static str {
    LABELS[t.label]
}

/// Builds `dataset` with its default options into `out`.
pub fn build_default(dataset: &BuiltDataset, out: &Path, on_note: &mut dyn FnMut(String)) -> Result<BuildSummary> {
    match dataset.name {
        "tweets" => build_tweets(&TweetsOptions::default(), out, on_note),
        "appstream" => {
            let opts = BuildOptions {
                sources: crate::datasets::appstream::default_files()?,
                out: out.to_path_buf(),
                ..BuildOptions::default()
            };
            let report = build_appstream(&opts, on_note)?;
            Ok(BuildSummary { dataset: "appstream".into(), out: report.out, files: report.files })
        }
        "austen" => super::austen_data::build_austen(&Default::default(), out, on_note),
        "austen-dialogue" => super::austen_dialogue_data::build_austen_dialogue(&Default::default(), out, on_note),
        other => Err(GraftError::Input(format!("dataset `{other}` has no builder"))),
    }
}

/// The cached build of `dataset`: `<cache>/built/NAME/`, built with the default options when
/// it is missing or was written by another version of graft.
pub fn ensure_built(dataset: &BuiltDataset, on_note: &mut dyn FnMut(String)) -> Result<PathBuf> {
    ensure_built_in(&assets::cache_dir(), dataset, on_note)
}

/// [`ensure_built`] in an explicit cache folder.
pub fn ensure_built_in(cache_root: &Path, dataset: &BuiltDataset, on_note: &mut dyn FnMut(String)) -> Result<PathBuf> {
    let dir = cache_root.join("built").join(dataset.name);
    if is_complete(&dir, dataset) {
        return Ok(dir);
    }
    let work_name = format!("built-{}", dataset.name);
    let _lock = cache::lock(cache_root, &work_name)?;
    // Another process may have finished the build while this one waited for the lock.
    if is_complete(&dir, dataset) {
        return Ok(dir);
    }
    cache::remove_stale_work(cache_root, &work_name);
    let tmp = cache::tmp_root(cache_root);
    std::fs::create_dir_all(&tmp).map_err(|e| GraftError::io(&tmp, e))?;
    let work = tempfile::Builder::new()
        .prefix(&format!("{work_name}."))
        .tempdir_in(&tmp)
        .map_err(|e| GraftError::io(&tmp, e))?;
    let stage = work.path().join("stage");
    on_note(format!("building dataset `{}` into {} (once)", dataset.name, dir.display()));
    let summary = build_default(dataset, &stage, on_note)?;
    let marker = json!({ "dataset": dataset.name, "version": BUILD_VERSION, "files": summary.files });
    let path = stage.join(MARKER);
    std::fs::write(&path, marker.to_string()).map_err(|e| GraftError::io(&path, e))?;
    cache::install(&stage, &dir, work.path())?;
    Ok(dir)
}

/// True when `dir` holds a finished build of this version with every file of `dataset`.
fn is_complete(dir: &Path, dataset: &BuiltDataset) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(MARKER)) else { return false };
    let Ok(marker) = serde_json::from_str::<serde_json::Value>(&text) else { return false };
    marker["dataset"] == dataset.name
        && marker["version"] == BUILD_VERSION
        && dataset.files.iter().all(|f| dir.join(f.name).is_file())
}

/// The file a data path stands for: the path itself, or for `dataset:NAME/FILE` the file in
/// the cached build (built first when needed).
pub fn resolve(path: &Path, on_note: &mut dyn FnMut(String)) -> Result<PathBuf> {
    match source::parse(path)? {
        DataSource::File(p) => Ok(p.to_path_buf()),
        DataSource::Built { dataset, file } => Ok(ensure_built(source::built_dataset(dataset)?, on_note)?.join(file)),
    }
}

/// The training file and the evaluation file (if any) of a `[data]` section, resolved.
pub fn data_files(data: &DataSection, on_note: &mut dyn FnMut(String)) -> Result<(PathBuf, Option<PathBuf>)> {
    let train = resolve(&data.train, on_note)?;
    let eval = data.eval.as_ref().map(|p| resolve(p, on_note)).transpose()?;
    Ok((train, eval))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in dataset whose "build" is checked without the real sources: an unfinished or
    /// foreign folder is not taken for a build.
    #[test]
    fn only_a_finished_build_of_this_version_counts() {
        let dir = tempfile::tempdir().unwrap();
        let ds = source::built_dataset("tweets").unwrap();
        assert!(!is_complete(dir.path(), ds));
        for f in ds.files {
            std::fs::write(dir.path().join(f.name), "{}\n").unwrap();
        }
        assert!(!is_complete(dir.path(), ds), "files without a marker are a build in progress");
        let marker = |v: u32| json!({ "dataset": "tweets", "version": v, "files": {} }).to_string();
        std::fs::write(dir.path().join(MARKER), marker(BUILD_VERSION + 1)).unwrap();
        assert!(!is_complete(dir.path(), ds));
        std::fs::write(dir.path().join(MARKER), marker(BUILD_VERSION)).unwrap();
        assert!(is_complete(dir.path(), ds));
        std::fs::remove_file(dir.path().join(ds.files[0].name)).unwrap();
        assert!(!is_complete(dir.path(), ds));
    }

    #[test]
    fn plain_paths_resolve_to_themselves() {
        let p = Path::new("some/where.jsonl");
        assert_eq!(resolve(p, &mut |_| {}).unwrap(), p);
        assert!(resolve(Path::new("dataset:nope/x.jsonl"), &mut |_| {}).is_err());
    }
}
