//! Debian's AppStream component metadata (DEP-11): one gzip'd multi-document YAML file per
//! archive section, written by `apt-get update` to `/var/lib/apt/lists/*_dep11_Components-ARCH.yml.gz`.
//! The first document is a header (`File: DEP-11`); each later one describes a component
//! (application, add-on, font, ...) with localized `Name`, `Summary` and `Description` maps whose
//! `C` key is the untranslated English text.
//!
//! [`read`] keeps the English text of every component that has an ID, a name, a summary and a
//! description, with the description's markup (`<p>`, `<ul>`/`<ol>`, `<li>`, inline tags)
//! turned into plain text by [`markup_to_text`]; components missing any of those are counted in
//! [`ParseReport::skipped`]. These pairs feed the summarization and question-answering recipes.
//!
//! [`read_localized`] keeps the translations instead: each component's summary and description
//! in the locales asked for (`C`, `de`, `pt_BR`, ...), whatever English fields it has. They feed
//! the multilingual speech data ([`crate::speech::sentences`]).

use crate::{GraftError, Result};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where `apt-get update` writes package lists (and the AppStream files).
pub const APT_LISTS: &str = "/var/lib/apt/lists";

/// One component's English metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// The AppStream ID (`org.gnome.Maps`, `eog-exif-display`, ...); unique within a read.
    pub id: String,
    /// The display name (`Name: {C: ...}`).
    pub name: String,
    /// The one-line summary (`Summary: {C: ...}`).
    pub summary: String,
    /// The description as plain text: one line per paragraph or list item (items start `- `).
    pub description: String,
    /// The SPDX-like license expression (`ProjectLicense`), when given.
    pub license: Option<String>,
    /// The freedesktop menu categories (`Categories:`, a YAML list), in file order; empty when
    /// the component has none. Meta-learning episodes use them as classes
    /// ([`crate::datasets::appstream_classes`]).
    pub categories: Vec<String>,
}

/// What [`read`] saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParseReport {
    /// YAML documents read, the header included.
    pub n_documents: usize,
    /// Components kept.
    pub n_components: usize,
    /// Components skipped, by reason (`no_id`, `empty_name`, `empty_summary`,
    /// `empty_description`, `duplicate_id`).
    pub skipped: BTreeMap<String, usize>,
}

impl ParseReport {
    /// All skipped components.
    pub fn n_skipped(&self) -> usize {
        self.skipped.values().sum()
    }
}

/// The fields of a component document that are used; everything else is ignored.
#[derive(Deserialize)]
struct RawDoc {
    #[serde(rename = "File")]
    file: Option<String>,
    #[serde(rename = "ID")]
    id: Option<serde_norway::Value>,
    #[serde(rename = "Name")]
    name: Option<serde_norway::Value>,
    #[serde(rename = "Summary")]
    summary: Option<serde_norway::Value>,
    #[serde(rename = "Description")]
    description: Option<serde_norway::Value>,
    #[serde(rename = "ProjectLicense")]
    license: Option<serde_norway::Value>,
    #[serde(rename = "Categories")]
    categories: Option<serde_norway::Value>,
}

/// A scalar as text (YAML may type `C: 2048` as a number).
fn scalar(v: &serde_norway::Value) -> Option<String> {
    match v {
        serde_norway::Value::String(s) => Some(s.clone()),
        serde_norway::Value::Number(n) => Some(n.to_string()),
        serde_norway::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The entries of a `Categories:` list, trimmed, empty ones and repeats left out; anything that
/// is not a list of scalars gives none.
fn categories_of(v: Option<&serde_norway::Value>) -> Vec<String> {
    let Some(serde_norway::Value::Sequence(items)) = v else { return Vec::new() };
    let mut out: Vec<String> = Vec::new();
    for c in items.iter().filter_map(scalar) {
        let c = c.trim();
        if !c.is_empty() && !out.iter().any(|o| o == c) {
            out.push(c.to_string());
        }
    }
    out
}

/// The untranslated (`C`) entry of a localized map, trimmed; `None` when absent or empty.
fn english(v: Option<&serde_norway::Value>) -> Option<String> {
    localized(v, "C")
}

/// The `locale` entry of a localized map, trimmed; `None` when absent or empty.
fn localized(v: Option<&serde_norway::Value>, locale: &str) -> Option<String> {
    let text = scalar(v?.get(locale)?)?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// One component's text in the locales [`read_localized`] was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalizedText {
    /// The AppStream ID; unique within a read.
    pub id: String,
    /// The one-line summary by locale key (`C` is the untranslated English), trimmed; locales
    /// without one are absent.
    pub summaries: BTreeMap<String, String>,
    /// The description as plain text ([`markup_to_text`]) by locale key; empty ones are absent.
    pub descriptions: BTreeMap<String, String>,
}

/// The AppStream component files of `dir` for this machine's architecture
/// (`*_dep11_Components-ARCH.yml.gz`), sorted. An empty list means none are there.
pub fn find_files(dir: &Path) -> Vec<PathBuf> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "i386",
        other => other,
    };
    let suffix = format!("_dep11_Components-{arch}.yml.gz");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(&suffix)))
        .collect();
    out.sort();
    out
}

/// [`find_files`] in [`APT_LISTS`], or an error that says how to get the files.
pub fn default_files() -> Result<Vec<PathBuf>> {
    let files = find_files(Path::new(APT_LISTS));
    if files.is_empty() {
        return Err(GraftError::Input(format!(
            "no AppStream metadata in {APT_LISTS} (*_dep11_Components-*.yml.gz): run `apt-get update` \
             (with the appstream metadata enabled, as Debian and Ubuntu do by default), or give a file with --appstream"
        )));
    }
    Ok(files)
}

/// Reads an AppStream component file (gzip'd or plain YAML).
pub fn read(path: &Path) -> Result<(Vec<Component>, ParseReport)> {
    parse(&read_text(path)?, &path.display().to_string())
}

/// Reads the summaries and descriptions in `locales` of every component of an AppStream file
/// (gzip'd or plain YAML); see [`parse_localized`].
pub fn read_localized(path: &Path, locales: &[&str]) -> Result<Vec<LocalizedText>> {
    parse_localized(&read_text(path)?, &path.display().to_string(), locales)
}

/// The text of an AppStream file, decompressed when it is gzip'd.
fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| GraftError::io(path, e))?;
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_string(&mut s)
            .map_err(|e| GraftError::Input(format!("{}: cannot decompress as gzip'd UTF-8: {e}", path.display())))?;
        s
    } else {
        String::from_utf8(bytes).map_err(|e| GraftError::Input(format!("{}: not UTF-8: {e}", path.display())))?
    };
    Ok(text)
}

/// The component documents of AppStream YAML text, the DEP-11 header left out; a document that
/// is not valid YAML, or whose fields have the wrong shape, is an error naming its number.
fn documents<'a>(text: &'a str, source: &'a str) -> impl Iterator<Item = Result<RawDoc>> + 'a {
    serde_norway::Deserializer::from_str(text).enumerate().filter_map(move |(i, doc)| {
        match RawDoc::deserialize(doc) {
            Err(e) => Some(Err(GraftError::Input(format!("{source}: YAML document {}: {e}", i + 1)))),
            // The DEP-11 header.
            Ok(raw) if raw.file.is_some() && raw.id.is_none() => None,
            Ok(raw) => Some(Ok(raw)),
        }
    })
}

/// The trimmed, non-empty ID of a document.
fn id_of(raw: &RawDoc) -> Option<String> {
    raw.id.as_ref().and_then(scalar).map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Parses the summaries and descriptions in `locales` (`C` for English) out of AppStream YAML
/// text (`source` names it in errors). Components without an ID, repeats of an ID and
/// components with no text in any of the locales are left out; file order is kept.
pub fn parse_localized(text: &str, source: &str, locales: &[&str]) -> Result<Vec<LocalizedText>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for raw in documents(text, source) {
        let raw = raw?;
        let Some(id) = id_of(&raw) else { continue };
        let pick = |v: Option<&serde_norway::Value>, f: &dyn Fn(String) -> String| -> BTreeMap<String, String> {
            locales
                .iter()
                .filter_map(|&l| localized(v, l).map(|t| (l.to_string(), f(t))))
                .filter(|(_, t)| !t.is_empty())
                .collect()
        };
        let summaries = pick(raw.summary.as_ref(), &|t| t);
        let descriptions = pick(raw.description.as_ref(), &|t| markup_to_text(&t));
        if (summaries.is_empty() && descriptions.is_empty()) || !seen.insert(id.clone()) {
            continue;
        }
        out.push(LocalizedText { id, summaries, descriptions });
    }
    Ok(out)
}

/// Parses AppStream YAML text (`source` names it in errors). A document that is not valid
/// YAML, or whose fields have the wrong shape, is an error naming its number and line.
pub fn parse(text: &str, source: &str) -> Result<(Vec<Component>, ParseReport)> {
    let mut report = ParseReport::default();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let skip = |report: &mut ParseReport, why: &str| *report.skipped.entry(why.to_string()).or_default() += 1;
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        report.n_documents += 1;
        let raw = RawDoc::deserialize(doc)
            .map_err(|e| GraftError::Input(format!("{source}: YAML document {}: {e}", i + 1)))?;
        if raw.file.is_some() && raw.id.is_none() {
            continue; // the DEP-11 header
        }
        let Some(id) = id_of(&raw) else {
            skip(&mut report, "no_id");
            continue;
        };
        let Some(name) = english(raw.name.as_ref()) else {
            skip(&mut report, "empty_name");
            continue;
        };
        let Some(summary) = english(raw.summary.as_ref()) else {
            skip(&mut report, "empty_summary");
            continue;
        };
        let description = english(raw.description.as_ref()).map(|d| markup_to_text(&d)).unwrap_or_default();
        if description.is_empty() {
            skip(&mut report, "empty_description");
            continue;
        }
        if !seen.insert(id.clone()) {
            skip(&mut report, "duplicate_id");
            continue;
        }
        let license = raw.license.as_ref().and_then(scalar).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        let categories = categories_of(raw.categories.as_ref());
        out.push(Component { id, name, summary, description, license, categories });
    }
    report.n_components = out.len();
    Ok((out, report))
}

/// Decodes the XML entities AppStream text may hold (`&amp;`, `&lt;`, `&#39;`, ...); an unknown
/// entity is kept as written.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let decoded = rest.find(';').filter(|&end| end <= 10).and_then(|end| {
            let name = &rest[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Turns AppStream description markup into plain text: each paragraph (`<p>`) and list item
/// (`<li>`, written `- item`) becomes one line with its whitespace collapsed; inline tags
/// (`<em>`, `<code>`, ...) are dropped and entities decoded. Empty blocks are left out.
pub fn markup_to_text(markup: &str) -> String {
    let mut blocks: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut in_item = false;
    let flush = |current: &mut String, in_item: bool, blocks: &mut Vec<String>| {
        let text = decode_entities(&current.split_whitespace().collect::<Vec<_>>().join(" "));
        let text = text.trim();
        if !text.is_empty() {
            blocks.push(if in_item { format!("- {text}") } else { text.to_string() });
        }
        current.clear();
    };
    let mut rest = markup;
    while let Some(lt) = rest.find('<') {
        current.push_str(&rest[..lt]);
        let Some(gt) = rest[lt..].find('>') else {
            // A lone `<` is text.
            current.push_str(&rest[lt..]);
            rest = "";
            break;
        };
        let tag = rest[lt + 1..lt + gt].trim();
        rest = &rest[lt + gt + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        match name.as_str() {
            "p" | "ul" | "ol" | "li" | "br" | "div" => {
                flush(&mut current, in_item, &mut blocks);
                if name == "li" {
                    in_item = !closing;
                }
            }
            // Inline tags separate nothing; keep the words apart only where the source did.
            _ => {}
        }
    }
    current.push_str(rest);
    flush(&mut current, in_item, &mut blocks);
    blocks.join("\n")
}

/// Whether the component `id` belongs to the test split: a SHA-256 of the seed and the ID,
/// read as a number in [0, 1), below `test_fraction`. The same ID always lands on the same side
/// for the same seed, whatever else is in the file.
pub fn is_test(id: &str, seed: u64, test_fraction: f64) -> bool {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(id.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    let x = (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64;
    x < test_fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"---
File: DEP-11
Version: '0.16'
Origin: debian-bookworm-main
---
Type: desktop-application
ID: org.example.Maps
Package: maps
Name:
  de: Karten
  C: Maps
Summary:
  C: Find places around the world
Description:
  C: "<p>\n  Maps gives you quick access to maps &amp; routes.\n  </p>\n<p>It can:</p>\n<ul>\n  <li>show\n
    <em>traffic</em></li>\n  <li>find places</li>\n</ul>"
ProjectLicense: GPL-2.0+
Categories:
- Education
- Geography
- ' '
- Geography
---
Type: addon
ID: no-description
Name:
  C: Nothing Here
Summary:
  C: A component without a description
---
Type: font
ID: org.example.Font
Name:
  C: 2048
Summary:
  C: A font
Description:
  C: <p>A font.</p>
---
Type: addon
ID: no-english-name
Name:
  de: Nur Deutsch
Summary:
  C: Only a German name
Description:
  C: <p>Text.</p>
---
Type: addon
ID: org.example.Maps
Name:
  C: Maps again
Summary:
  C: Duplicate
Description:
  C: <p>Dup.</p>
"#;

    #[test]
    fn parses_english_fields_and_counts_skips() {
        let (comps, report) = parse(SAMPLE, "sample").unwrap();
        assert_eq!(report.n_documents, 6);
        assert_eq!(comps.len(), 2);
        assert_eq!(report.n_components, 2);
        let maps = &comps[0];
        assert_eq!(maps.id, "org.example.Maps");
        assert_eq!(maps.name, "Maps");
        assert_eq!(maps.summary, "Find places around the world");
        assert_eq!(
            maps.description,
            "Maps gives you quick access to maps & routes.\nIt can:\n- show traffic\n- find places"
        );
        assert_eq!(maps.license.as_deref(), Some("GPL-2.0+"));
        assert_eq!(maps.categories, ["Education", "Geography"], "blank and repeated categories are dropped");
        assert_eq!(comps[1].name, "2048", "a numeric name is kept as text");
        assert!(comps[1].categories.is_empty());
        assert_eq!(comps[1].license, None);
        let expected: BTreeMap<String, usize> = [("empty_description", 1), ("empty_name", 1), ("duplicate_id", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(report.skipped, expected);
        assert_eq!(report.n_skipped(), 3);
    }

    #[test]
    fn keeps_translations_in_the_locales_asked_for() {
        let text = "---\nFile: DEP-11\n---\nID: a\nSummary:\n  C: Maps\n  de: Karten\n  fr: ' '\n  pt_BR: Mapas\n\
            Description:\n  de: <p>Zeigt <em>Karten</em>.</p><p>Mehr.</p>\n---\nID: b\nSummary:\n  it: Solo italiano\n\
            ---\nID: a\nSummary:\n  de: Doppelt\n---\nSummary:\n  de: Ohne ID\n";
        let got = parse_localized(text, "t", &["C", "de", "fr"]).unwrap();
        assert_eq!(got.len(), 1, "b has nothing in these locales; the repeat of a and the ID-less one are left out");
        assert_eq!(got[0].id, "a");
        let summaries: Vec<(&str, &str)> = got[0].summaries.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(summaries, [("C", "Maps"), ("de", "Karten")], "blank and unasked locales are dropped");
        assert_eq!(got[0].descriptions.get("de").map(String::as_str), Some("Zeigt Karten.\nMehr."));
        let it = parse_localized(text, "t", &["it"]).unwrap();
        assert_eq!((it.len(), it[0].id.as_str()), (1, "b"), "no English fields are needed");
        // The English reader keeps its own rules on the same text.
        let (comps, _) = parse(SAMPLE, "sample").unwrap();
        let loc = parse_localized(SAMPLE, "sample", &["C"]).unwrap();
        assert_eq!(loc.len(), 4, "every component with an English summary, descriptions or not");
        assert_eq!(loc[0].summaries["C"], comps[0].summary);
        assert_eq!(loc[0].descriptions["C"], comps[0].description);
    }

    #[test]
    fn bad_yaml_names_the_document() {
        let err = parse("---\nFile: DEP-11\n---\nID: [unclosed\n", "bad.yml").unwrap_err().to_string();
        assert!(err.contains("bad.yml") && err.contains("document 2"), "{err}");
    }

    #[test]
    fn reads_gzip_and_plain_files() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("c.yml");
        std::fs::write(&plain, SAMPLE).unwrap();
        let gz = dir.path().join("c.yml.gz");
        let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(SAMPLE.as_bytes()).unwrap();
        enc.finish().unwrap();
        assert_eq!(read(&plain).unwrap(), read(&gz).unwrap());
        assert!(read(&dir.path().join("missing.yml.gz")).is_err());
    }

    #[test]
    fn markup_to_text_handles_lists_entities_and_stray_brackets() {
        assert_eq!(markup_to_text("<p>a &lt; b &#39;c&#x27; &bogus; x & y</p>"), "a < b 'c' &bogus; x & y");
        assert_eq!(markup_to_text("<ol><li>one</li><li></li><li>two <code>x</code></li></ol>"), "- one\n- two x");
        assert_eq!(markup_to_text("plain text, no tags"), "plain text, no tags");
        assert_eq!(markup_to_text("<p>1 < 2"), "1 < 2");
        assert_eq!(markup_to_text("<p> </p>"), "");
    }

    #[test]
    fn split_is_deterministic_and_near_the_fraction() {
        let ids: Vec<String> = (0..2000).map(|i| format!("org.example.app{i}")).collect();
        let n_test = ids.iter().filter(|id| is_test(id, 7, 0.1)).count();
        assert!((150..250).contains(&n_test), "{n_test}");
        assert!(ids.iter().all(|id| is_test(id, 7, 0.1) == is_test(id, 7, 0.1)));
        let other = ids.iter().filter(|id| is_test(id, 7, 0.1) != is_test(id, 8, 0.1)).count();
        assert!(other > 0, "a different seed gives a different split");
        assert!(!ids.iter().any(|id| is_test(id, 1, 0.0)));
        assert!(ids.iter().all(|id| is_test(id, 1, 1.0)));
    }

    #[test]
    fn finds_files_by_architecture_suffix() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find_files(dir.path()).is_empty());
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "i386",
            other => other,
        };
        let name = format!("deb.example_dists_main_dep11_Components-{arch}.yml.gz");
        std::fs::write(dir.path().join(&name), b"").unwrap();
        std::fs::write(dir.path().join("deb.example_dists_main_dep11_icons-64x64.tar.gz"), b"").unwrap();
        assert_eq!(find_files(dir.path()), vec![dir.path().join(name)]);
    }
}
