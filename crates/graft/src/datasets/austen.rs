//! Jane Austen's six completed novels (the `janeaustenr` asset, Debian `r-cran-janeaustenr`):
//! one R character vector of text lines per novel in the package's lazy-load database, read with
//! [`crate::io::rdata`], cut into chapters and paragraphs.
//!
//! A chapter starts at a line that is only `CHAPTER <n>` or `Chapter <n>` (`n` in digits or
//! Roman numerals, as the six texts write it). Lines before the first chapter (title, author,
//! Northanger Abbey's advertisement), `VOLUME <n>` lines (Emma) and everything from an end
//! line on (`THE END`, `FINIS`, Northanger Abbey's editorial `A NOTE ON THE TEXT`) are not
//! text. A paragraph is a run of non-blank lines joined by single spaces (the texts' double
//! spaces after a sentence become one); paragraphs without a letter or digit (`* * * * *`) are
//! dropped. Chapters are numbered 1, 2, ... in reading order (Emma restarts its Roman numerals
//! in every volume; the numbers here do not).

use crate::io::rdata::LazyLoadDb;
use crate::{GraftError, Result};
use std::path::Path;

/// A novel of the package: its variable name in the database and its title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NovelInfo {
    /// The R variable (`prideprejudice`).
    pub key: &'static str,
    /// The title.
    pub title: &'static str,
}

/// The six novels in publication order (the package's order).
pub const NOVELS: [NovelInfo; 6] = [
    NovelInfo { key: "sensesensibility", title: "Sense and Sensibility" },
    NovelInfo { key: "prideprejudice", title: "Pride and Prejudice" },
    NovelInfo { key: "mansfieldpark", title: "Mansfield Park" },
    NovelInfo { key: "emma", title: "Emma" },
    NovelInfo { key: "northangerabbey", title: "Northanger Abbey" },
    NovelInfo { key: "persuasion", title: "Persuasion" },
];

/// One novel's text lines, as the package stores them.
#[derive(Debug, Clone, PartialEq)]
pub struct Novel {
    /// Which novel.
    pub info: NovelInfo,
    /// The lines (an `NA` line, which the package has none of, is read as an empty line).
    pub lines: Vec<String>,
}

/// One chapter's text.
#[derive(Debug, Clone, PartialEq)]
pub struct Chapter {
    /// The novel's key.
    pub novel: &'static str,
    /// 1-based position in the novel, in reading order.
    pub number: usize,
    /// The heading line as written (`CHAPTER XIV`).
    pub heading: String,
    /// The paragraphs, each on one line.
    pub paragraphs: Vec<String>,
}

/// Reads the six novels from the `janeaustenr` asset folder (`Rdata.rdx` + `Rdata.rdb`).
pub fn read_novels(dir: &Path) -> Result<Vec<Novel>> {
    let rdb = dir.join("Rdata.rdb");
    let db = LazyLoadDb::open(&dir.join("Rdata.rdx"), &rdb)?;
    NOVELS
        .iter()
        .map(|&info| {
            let value = db.read(info.key)?;
            let lines = value.strings().ok_or_else(|| {
                GraftError::Input(format!("{}: `{}` is not a character vector", rdb.display(), info.key))
            })?;
            Ok(Novel { info, lines: lines.iter().map(|l| l.clone().unwrap_or_default()).collect() })
        })
        .collect()
}

/// Whether `line` is a chapter heading: `CHAPTER` or `Chapter`, one space, then a number in
/// digits or upper-case Roman numerals, and nothing else.
pub fn is_chapter_heading(line: &str) -> bool {
    let line = line.trim();
    let Some(n) = line.strip_prefix("CHAPTER ").or_else(|| line.strip_prefix("Chapter ")) else { return false };
    !n.is_empty() && (n.bytes().all(|b| b.is_ascii_digit()) || n.bytes().all(|b| b"IVXLC".contains(&b)))
}

/// Whether `line` ends the novel's text.
fn is_end(line: &str) -> bool {
    let line = line.trim();
    line.eq_ignore_ascii_case("THE END") || line.eq_ignore_ascii_case("FINIS") || line == "A NOTE ON THE TEXT"
}

/// Whether `line` is a volume heading (`VOLUME II`).
fn is_volume_heading(line: &str) -> bool {
    line.trim().strip_prefix("VOLUME ").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b"IVX".contains(&b)))
}

/// The novel's chapters (see the module documentation for the rules). A novel without a
/// chapter heading, or with an empty chapter, is an error: the text is not what the rules
/// were written for.
pub fn chapters(novel: &Novel) -> Result<Vec<Chapter>> {
    let mut out: Vec<Chapter> = Vec::new();
    let mut paragraph: Vec<&str> = Vec::new();
    let flush = |paragraph: &mut Vec<&str>, out: &mut Vec<Chapter>| {
        let text = paragraph.iter().flat_map(|l| l.split_whitespace()).collect::<Vec<_>>().join(" ");
        paragraph.clear();
        if let Some(ch) = out.last_mut() {
            if text.chars().any(char::is_alphanumeric) {
                ch.paragraphs.push(text);
            }
        }
    };
    for line in &novel.lines {
        if is_end(line) {
            break;
        }
        if is_chapter_heading(line) {
            flush(&mut paragraph, &mut out);
            let number = out.len() + 1;
            out.push(Chapter {
                novel: novel.info.key,
                number,
                heading: line.trim().to_string(),
                paragraphs: Vec::new(),
            });
        } else if line.trim().is_empty() || is_volume_heading(line) {
            flush(&mut paragraph, &mut out);
        } else {
            paragraph.push(line.trim());
        }
    }
    flush(&mut paragraph, &mut out);
    if out.is_empty() {
        return Err(GraftError::Input(format!("{}: no chapter heading found", novel.info.title)));
    }
    if let Some(ch) = out.iter().find(|c| c.paragraphs.is_empty()) {
        return Err(GraftError::Input(format!(
            "{}: chapter {} (`{}`) has no text",
            novel.info.title, ch.number, ch.heading
        )));
    }
    Ok(out)
}

/// Whether chapter `number` is held out when every `every`-th chapter of each novel is:
/// chapters `every`, `2·every`, ... (`every` = 10 holds out 25 of the 269 chapters).
pub fn is_held_out(number: usize, every: usize) -> bool {
    every > 0 && number.is_multiple_of(every)
}

/// Consecutive paragraphs joined by a blank line into passages of at most `max_chars`
/// characters; a paragraph longer than that is cut at spaces (a word longer than `max_chars`,
/// at a character). Passages never cross the given slice, so a chapter's passages stay in it.
pub fn passages(paragraphs: &[String], max_chars: usize) -> Vec<String> {
    let max_chars = max_chars.max(1);
    let mut out = Vec::new();
    let mut current = String::new();
    let mut current_chars = 0;
    for piece in paragraphs.iter().flat_map(|p| cut(p, max_chars)) {
        let n = piece.chars().count();
        if current_chars > 0 && current_chars + 2 + n > max_chars {
            out.push(std::mem::take(&mut current));
            current_chars = 0;
        }
        if current_chars > 0 {
            current.push_str("\n\n");
            current_chars += 2;
        }
        current.push_str(&piece);
        current_chars += n;
    }
    if current_chars > 0 {
        out.push(current);
    }
    out
}

/// `text` in pieces of at most `max_chars` characters, cut at the last space that fits (or at
/// `max_chars` when there is none); the space at a cut is dropped.
fn cut(text: &str, max_chars: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while rest.chars().count() > max_chars {
        // Byte offset just past the first `max_chars` characters.
        let limit = rest.char_indices().nth(max_chars).map_or(rest.len(), |(i, _)| i);
        let space = if rest[limit..].starts_with(' ') { Some(limit) } else { rest[..limit].rfind(' ') };
        let (head, tail) = match space {
            Some(space) if space > 0 => (&rest[..space], &rest[space + 1..]),
            _ => (&rest[..limit], &rest[limit..]),
        };
        out.push(head.trim_end().to_string());
        rest = tail.trim_start();
    }
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn novel(lines: &[&str]) -> Novel {
        Novel { info: NOVELS[0], lines: lines.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn headings_are_whole_lines_with_a_number() {
        for h in ["CHAPTER 1", "Chapter 12", "CHAPTER XLVIII", "  CHAPTER IV "] {
            assert!(is_chapter_heading(h), "{h}");
        }
        for h in ["CHAPTER", "chapter 1", "CHAPTER 1.", "end of the chapter 2", "Chapter one", "CHAPTER  2"] {
            assert!(!is_chapter_heading(h), "{h}");
        }
    }

    #[test]
    fn front_matter_volumes_separators_and_the_end_are_not_text() {
        let n = novel(&[
            "TITLE",
            "",
            "By Jane Austen",
            "VOLUME I",
            "",
            "CHAPTER I",
            "",
            "It is a  truth ",
            "universally",
            "",
            "   * * * * *",
            "",
            "Second.",
            "VOLUME II",
            "CHAPTER II",
            "Third.",
            "",
            "",
            "THE END",
            "after",
        ]);
        let ch = chapters(&n).unwrap();
        assert_eq!(ch.len(), 2);
        assert_eq!((ch[0].number, ch[0].heading.as_str()), (1, "CHAPTER I"));
        assert_eq!(ch[0].paragraphs, ["It is a truth universally", "Second."]);
        assert_eq!(ch[1].paragraphs, ["Third."]);
        assert!(chapters(&novel(&["no headings"])).is_err());
        assert!(chapters(&novel(&["CHAPTER 1", "", "CHAPTER 2", "x"])).unwrap_err().to_string().contains("no text"));
    }

    #[test]
    fn passages_join_paragraphs_up_to_the_bound_and_cut_long_ones_at_spaces() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(passages(&p(&["aaa", "bbb", "ccc"]), 8), ["aaa\n\nbbb", "ccc"]);
        assert_eq!(passages(&p(&["one two three four"]), 9), ["one two", "three", "four"]);
        assert_eq!(passages(&p(&["abcdefghij"]), 4), ["abcd", "efgh", "ij"]);
        assert_eq!(passages(&p(&["é é é"]), 3), ["é é", "é"]);
        for s in passages(&p(&["word ".repeat(500).as_str(), "x"]), 100) {
            assert!(s.chars().count() <= 100, "{s}");
        }
    }

    #[test]
    fn every_tenth_chapter_is_held_out() {
        let held: Vec<usize> = (1..=31).filter(|&n| is_held_out(n, 10)).collect();
        assert_eq!(held, [10, 20, 30]);
        assert!(!is_held_out(5, 0));
    }
}
