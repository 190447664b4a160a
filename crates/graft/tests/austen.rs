//! Jane Austen's novels from the real `janeaustenr` Debian package (fetched into the cache by
//! graft; 1.6 MB): the R lazy-load database read in Rust, the chapters found in each novel, the
//! built dataset's held-out chapters, and the dialogue build's turns.

mod common;

use graft::datasets::austen::{self, NOVELS};
use graft::io::rdata::{Compression, LazyLoadDb};
use graft::recipes::austen_data::{build_austen, AustenOptions};
use graft::recipes::austen_dialogue_data::{build_austen_dialogue, DialogueOptions};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The asset folder, fetched when missing; `None` (a skip outside CI) without apt's index.
fn asset() -> Option<PathBuf> {
    common::require_apt_index().then(|| graft::assets::ensure("janeaustenr", false).expect("fetch janeaustenr"))
}

#[test]
fn six_novels_with_their_first_lines() {
    let Some(dir) = asset() else { return };
    let db = LazyLoadDb::open(&dir.join("Rdata.rdx"), &dir.join("Rdata.rdb")).unwrap();
    assert_eq!(db.compression(), Compression::Zlib);
    assert_eq!(
        db.names(),
        ["emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility"]
    );
    let novels = austen::read_novels(&dir).unwrap();
    let got: Vec<(&str, &str, usize)> =
        novels.iter().map(|n| (n.info.key, n.lines[0].as_str(), n.lines.len())).collect();
    assert_eq!(
        got,
        [
            ("sensesensibility", "SENSE AND SENSIBILITY", 12624),
            ("prideprejudice", "PRIDE AND PREJUDICE", 13030),
            ("mansfieldpark", "MANSFIELD PARK", 15349),
            ("emma", "EMMA", 16235),
            ("northangerabbey", "NORTHANGER ABBEY", 7856),
            ("persuasion", "Persuasion", 8328),
        ]
    );
    // The one string flagged UTF-8 (the others are ASCII).
    let mansfield = &novels[2].lines;
    assert!(mansfield.iter().any(|l| l.contains("her £20,000")), "the pound sign is decoded");
}

#[test]
fn chapters_per_novel_and_where_the_text_starts_and_ends() {
    let Some(dir) = asset() else { return };
    let novels = austen::read_novels(&dir).unwrap();
    let chapters: Vec<Vec<austen::Chapter>> = novels.iter().map(|n| austen::chapters(n).unwrap()).collect();
    let counts: Vec<usize> = chapters.iter().map(Vec::len).collect();
    assert_eq!(counts, [50, 61, 48, 55, 31, 24]);
    let pride = &chapters[1];
    assert_eq!(pride[0].heading, "Chapter 1");
    assert!(pride[0].paragraphs[0].starts_with("It is a truth universally acknowledged, that a single man"));
    // Emma's numerals restart with each volume; the chapter numbers run on.
    let emma = &chapters[3];
    assert_eq!((emma[18].number, emma[18].heading.as_str()), (19, "CHAPTER I"));
    assert!(emma.iter().all(|c| c.paragraphs.iter().all(|p| !p.starts_with("VOLUME"))));
    // Front and back matter are not text.
    for (novel, chs) in NOVELS.iter().zip(&chapters) {
        let all: Vec<&String> = chs.iter().flat_map(|c| &c.paragraphs).collect();
        for marker in ["By Jane Austen", "ADVERTISEMENT BY THE AUTHORESS", "A NOTE ON THE TEXT", "Signet Classic"] {
            assert!(all.iter().all(|p| !p.contains(marker)), "{}: `{marker}`", novel.title);
        }
        let last = all.last().unwrap();
        assert!(!last.contains("THE END") && !last.eq_ignore_ascii_case("finis"), "{}: {last}", novel.title);
    }
}

/// (novel, chapter) of every line of a built file.
fn chapters_in(path: &std::path::Path) -> (BTreeSet<(String, u64)>, usize) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut set = BTreeSet::new();
    let mut longest = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        set.insert((v["novel"].as_str().unwrap().to_string(), v["chapter"].as_u64().unwrap()));
        longest = longest.max(v["text"].as_str().unwrap().chars().count());
    }
    (set, longest)
}

#[test]
fn the_build_holds_out_whole_chapters_the_same_way_every_time() {
    let Some(_) = asset() else { return };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let opts = AustenOptions::default();
    let summary = build_austen(&opts, a.path(), &mut |_| {}).unwrap();
    build_austen(&opts, b.path(), &mut |_| {}).unwrap();
    for name in ["text.train.jsonl", "text.test.jsonl"] {
        let bytes = std::fs::read(a.path().join(name)).unwrap();
        assert_eq!(bytes, std::fs::read(b.path().join(name)).unwrap(), "{name} differs between two builds");
    }
    let (train, train_longest) = chapters_in(&a.path().join("text.train.jsonl"));
    let (test, test_longest) = chapters_in(&a.path().join("text.test.jsonl"));
    assert!(train.is_disjoint(&test));
    assert_eq!((train.len(), test.len()), (244, 25));
    assert!(test.iter().all(|(_, ch)| ch.is_multiple_of(10)), "{test:?}");
    assert!(train_longest <= 1000 && test_longest <= 1000);
    eprintln!("austen build: {:?}", summary.files);

    let e = build_austen(&AustenOptions { test_every: 1, ..opts }, a.path(), &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("test_every = 1"), "{e}");
}

#[test]
fn the_dialogue_build_pairs_real_turns_and_holds_out_whole_chapters() {
    let Some(_) = asset() else { return };
    let dir = tempfile::tempdir().unwrap();
    let summary = build_austen_dialogue(&DialogueOptions::default(), dir.path(), &mut |_| {}).unwrap();
    let read = |name: &str| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let turn = |v: &serde_json::Value| {
        let m = &v["messages"];
        (m[0]["content"].as_str().unwrap().to_string(), m[1]["content"].as_str().unwrap().to_string())
    };
    let train = read("chat.train.jsonl");
    // Pride and Prejudice, chapter 1: Mrs. Bennet's question and her husband's answer.
    let first: Vec<(String, String)> =
        train.iter().filter(|v| v["novel"] == "prideprejudice" && v["chapter"] == 1).map(turn).take(3).collect();
    assert_eq!(
        first[0],
        (
            "Do you not want to know who has taken it?".to_string(),
            "_You_ want to tell me, and I have no objection to hearing it.".to_string()
        )
    );
    assert_eq!(first[1], ("What is his name?".to_string(), "Bingley.".to_string()));
    // Chapters: test 10, 20, ...; validation 5, 15, ...; never two files for one chapter.
    let chapter = |v: &serde_json::Value| v["chapter"].as_u64().unwrap();
    assert!(read("chat.test.jsonl").iter().all(|v| chapter(v) % 10 == 0));
    assert!(read("chat.valid.jsonl").iter().all(|v| chapter(v) % 10 == 5));
    assert!(train.iter().all(|v| chapter(v) % 5 != 0));
    assert!(read("lines.test.jsonl").iter().all(|v| chapter(v) % 10 == 0));
    // Every speech is quote-free, short enough and has a letter.
    for v in read("lines.train.jsonl") {
        let t = v["text"].as_str().unwrap();
        assert!(!t.contains('"') && t.chars().count() <= 300 && t.chars().any(char::is_alphabetic), "{t}");
    }
    for (name, n) in &summary.files {
        assert!(*n > 150, "{name}: only {n} lines");
    }
}

#[test]
fn a_truncated_database_is_a_clear_error() {
    let Some(dir) = asset() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let rdb = std::fs::read(dir.join("Rdata.rdb")).unwrap();
    std::fs::copy(dir.join("Rdata.rdx"), tmp.path().join("Rdata.rdx")).unwrap();
    std::fs::write(tmp.path().join("Rdata.rdb"), &rdb[..rdb.len() / 2]).unwrap();
    let db = LazyLoadDb::open(&tmp.path().join("Rdata.rdx"), &tmp.path().join("Rdata.rdb")).unwrap();
    db.read("emma").unwrap();
    let e = db.read("sensesensibility").unwrap_err().to_string();
    assert!(e.contains("`sensesensibility` spans bytes"), "{e}");
    // A blob whose zlib stream is damaged in the middle.
    let mut damaged = rdb.clone();
    damaged[1000..1100].fill(0);
    std::fs::write(tmp.path().join("Rdata.rdb"), damaged).unwrap();
    let e = db.read("emma").unwrap_err().to_string();
    assert!(e.contains("compressed R data"), "{e}");
}
