//! The legacy `torch.save` layout (PyTorch < 1.6): five pickles — the magic number, the protocol
//! version (1001), a `sys_info` dict, the object itself and the list of storage keys — then, for
//! each key in that order, the storage's element count (u64, little-endian) and its raw bytes.

use std::borrow::Cow;

use candle_core::{Device, Tensor};

use super::pickle::unpickle;
use super::value::Value;
use super::{materialize, state_dict, storage_table, Storages, TorchErrorKind};

/// The first pickle of every legacy file: protocol 2, `LONG1` of the 10-byte magic number
/// 0x1950a86a20f9469cfc6c, `STOP`.
pub const MAGIC: [u8; 15] = [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e];

/// The protocol version legacy files record.
const PROTOCOL_VERSION: i64 = 1001;

/// Reads the tensors of the legacy checkpoint `bytes` onto `device`.
pub fn read(bytes: &[u8], device: &Device) -> Result<Vec<(String, Tensor)>, TorchErrorKind> {
    if !bytes.starts_with(&MAGIC) {
        return Err(match bytes.len() < MAGIC.len() {
            true => TorchErrorKind::Truncated { offset: bytes.len(), needed: MAGIC.len() - bytes.len() },
            false => TorchErrorKind::Layout("the legacy magic number is wrong".into()),
        });
    }
    let mut pos = MAGIC.len();
    let next = |pos: &mut usize| {
        let out = unpickle(&bytes[*pos..], *pos)?;
        *pos += out.len;
        Ok::<_, TorchErrorKind>(out)
    };
    match next(&mut pos)?.value {
        Value::Int(PROTOCOL_VERSION) => {}
        other => return Err(TorchErrorKind::Layout(format!("protocol version is {other:?}, expected 1001"))),
    }
    check_sys_info(&next(&mut pos)?.value)?;
    let main = next(&mut pos)?;
    let tensors = state_dict(&main.value)?;
    let table = storage_table(&main.storages)?;
    let keys = next(&mut pos)?.value;
    let Value::List(keys) = keys else {
        return Err(TorchErrorKind::Layout(format!("the storage key list is a {}", keys.type_name())));
    };
    let mut storages: Storages<'_> = Storages::new();
    for key in &keys.items {
        let key = key.as_str().ok_or_else(|| TorchErrorKind::Layout("a storage key is not a string".into()))?;
        let &(dtype, numel) = table
            .get(key)
            .ok_or_else(|| TorchErrorKind::Layout(format!("storage `{key}` is listed but no tensor names it")))?;
        let count = read_u64(bytes, pos)?;
        pos += 8;
        if count != numel as u64 {
            return Err(TorchErrorKind::Layout(format!(
                "storage `{key}` at offset {}: {count} elements stored, {numel} expected",
                pos - 8
            )));
        }
        let left = bytes.len() - pos;
        let len = numel.checked_mul(dtype.size_in_bytes()).filter(|&n| n <= left).ok_or(TorchErrorKind::Truncated {
            offset: pos,
            needed: numel.saturating_mul(dtype.size_in_bytes()).saturating_sub(left),
        })?;
        if storages.insert(key.to_string(), Cow::Borrowed(&bytes[pos..pos + len])).is_some() {
            return Err(TorchErrorKind::Layout(format!("storage `{key}` is listed twice")));
        }
        pos += len;
    }
    if pos != bytes.len() {
        return Err(TorchErrorKind::Layout(format!("{} bytes follow the last storage", bytes.len() - pos)));
    }
    materialize(tensors, &storages, device)
}

/// Refuses big-endian files; `sys_info` is `{'protocol_version', 'little_endian', 'type_sizes'}`.
fn check_sys_info(v: &Value) -> Result<(), TorchErrorKind> {
    let Value::Dict(d) = v else {
        return Err(TorchErrorKind::Layout(format!("sys_info is a {}, not a dict", v.type_name())));
    };
    match d.items.iter().find(|(k, _)| k.as_str() == Some("little_endian")) {
        Some((_, Value::Bool(true))) | None => Ok(()),
        Some(_) => Err(TorchErrorKind::Layout("the checkpoint was written big-endian, which is not supported".into())),
    }
}

/// The little-endian u64 at `pos`.
fn read_u64(bytes: &[u8], pos: usize) -> Result<u64, TorchErrorKind> {
    let Some(b) = bytes.get(pos..pos + 8) else {
        return Err(TorchErrorKind::Truncated { offset: pos, needed: pos + 8 - bytes.len() });
    };
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_le_bytes(a))
}
