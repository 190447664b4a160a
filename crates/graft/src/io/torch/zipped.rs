//! The zip layout of `torch.save` (PyTorch >= 1.6): `<prefix>/data.pkl` holds the pickle, each
//! storage is the raw entry `<prefix>/data/<key>`, and `<prefix>/byteorder` (when present) says
//! `little` or `big`.

use std::borrow::Cow;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use candle_core::{Device, Tensor};
use zip::ZipArchive;

use super::pickle::unpickle;
use super::{materialize, state_dict, storage_table, Storages, TorchErrorKind};

/// Largest `data.pkl` accepted (the pickle of a state dict is kilobytes to a few megabytes).
const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Reads the tensors of the zip-format checkpoint at `path` onto `device`.
pub fn read(path: &Path, device: &Device) -> Result<Vec<(String, Tensor)>, TorchErrorKind> {
    let file = File::open(path).map_err(TorchErrorKind::Io)?;
    let mut zip = ZipArchive::new(file).map_err(|e| TorchErrorKind::Layout(format!("not a readable zip: {e}")))?;
    let pkl_name = zip
        .file_names()
        .filter_map(|n| n.ok())
        .find(|n| n.ends_with("data.pkl") && n.matches('/').count() <= 1)
        .map(|n| n.into_owned())
        .ok_or_else(|| TorchErrorKind::Layout("the zip archive has no data.pkl".into()))?;
    let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or_default().to_string();
    if let Ok(order) = read_entry(&mut zip, &format!("{prefix}byteorder"), 16) {
        if order.trim_ascii() != b"little" {
            return Err(TorchErrorKind::Layout("the checkpoint was written big-endian, which is not supported".into()));
        }
    }
    let pkl = read_entry(&mut zip, &pkl_name, MAX_PICKLE_BYTES)?;
    let main = unpickle(&pkl, 0)?;
    let tensors = state_dict(&main.value)?;
    let mut storages: Storages<'_> = Storages::new();
    for (key, (dtype, numel)) in storage_table(&main.storages)? {
        let name = format!("{prefix}data/{key}");
        let len = (numel as u64).saturating_mul(dtype.size_in_bytes() as u64);
        let bytes = read_entry(&mut zip, &name, len)?;
        if bytes.len() as u64 != len {
            return Err(TorchErrorKind::Layout(format!(
                "storage `{key}` has {} bytes, {numel} elements of {dtype:?} need {len}",
                bytes.len()
            )));
        }
        storages.insert(key, Cow::Owned(bytes));
    }
    materialize(tensors, &storages, device)
}

/// The bytes of entry `name`, refused when it declares more than `max` bytes (and never reading
/// past `max + 1`, whatever it declares).
fn read_entry(zip: &mut ZipArchive<File>, name: &str, max: u64) -> Result<Vec<u8>, TorchErrorKind> {
    let entry = zip.by_name(name).map_err(|e| TorchErrorKind::Layout(format!("zip entry `{name}`: {e}")))?;
    if entry.size() > max {
        return Err(TorchErrorKind::Layout(format!(
            "zip entry `{name}` is {} bytes, more than {max} expected",
            entry.size()
        )));
    }
    let mut out = Vec::new();
    entry.take(max.saturating_add(1)).read_to_end(&mut out).map_err(TorchErrorKind::Io)?;
    Ok(out)
}
