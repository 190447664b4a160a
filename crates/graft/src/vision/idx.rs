//! IDX files, the format of MNIST and Fashion-MNIST (plain or gzip'd): a magic number — two zero
//! bytes, the element type (0x08 = unsigned byte) and the number of dimensions — then each
//! dimension as a big-endian u32, then the elements. Images are `idx3` (`N x rows x cols`),
//! labels `idx1` (`N`).
//!
//! The header is checked before the body is read; the body is read up to the size the header
//! declares (memory grows with the data actually present, never with a claimed size) and must
//! be exactly that long.

use std::io::Read;
use std::path::Path;

use super::{Image, ImageSet};
use crate::{GraftError, Result};

/// Largest body accepted (Fashion-MNIST's training images are 47 MB).
const MAX_BODY_BYTES: u64 = 1 << 30;

/// The ten Fashion-MNIST classes, in label order.
pub const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// A Fashion-MNIST split of the `fashion-mnist` asset (`train`: 60,000 images, `test`: 10,000),
/// fetched unless `offline`.
pub fn fashion_mnist(split: &str, offline: bool) -> Result<ImageSet> {
    let prefix = match split {
        "train" => "train",
        "test" => "t10k",
        other => return Err(GraftError::Input(format!("Fashion-MNIST has splits `train` and `test`, not `{other}`"))),
    };
    let dir = crate::assets::ensure("fashion-mnist", offline)?;
    let set = read_pair(
        &dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
        &dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
    )?;
    if let Some(bad) = set.labels.iter().find(|&&l| l >= FASHION_CLASSES.len()) {
        return Err(GraftError::Input(format!("Fashion-MNIST label {bad} is not one of the 10 classes")));
    }
    Ok(set)
}

/// Reads an `idx3` image file and its `idx1` label file; the counts must agree.
pub fn read_pair(images: &Path, labels: &Path) -> Result<ImageSet> {
    let images_v = read_images(images)?;
    let labels_v = read_labels(labels)?;
    if images_v.len() != labels_v.len() {
        return Err(GraftError::Input(format!(
            "{} has {} images but {} has {} labels",
            images.display(),
            images_v.len(),
            labels.display(),
            labels_v.len()
        )));
    }
    Ok(ImageSet { images: images_v, labels: labels_v })
}

/// Reads the grey images of an `idx3` unsigned-byte file.
pub fn read_images(path: &Path) -> Result<Vec<Image>> {
    let (dims, body) = read_idx(path, 3)?;
    let (h, w) = (dims[1], dims[2]);
    if h == 0 || w == 0 {
        return Err(bad(path, format!("images of {h}x{w} pixels")));
    }
    Ok(body.chunks_exact(h * w).map(|px| Image::grey(h, w, px.to_vec())).collect())
}

/// Reads the labels of an `idx1` unsigned-byte file.
pub fn read_labels(path: &Path) -> Result<Vec<usize>> {
    let (_, body) = read_idx(path, 1)?;
    Ok(body.into_iter().map(usize::from).collect())
}

/// The error for a malformed IDX file.
fn bad(path: &Path, what: String) -> GraftError {
    GraftError::Input(format!("{}: not a valid IDX file: {what}", path.display()))
}

/// Reads an unsigned-byte IDX file of `ndims` dimensions: its dimensions and its body.
fn read_idx(path: &Path, ndims: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let file = std::fs::File::open(path).map_err(|e| GraftError::io(path, e))?;
    let mut head = [0u8; 2];
    let mut reader = std::io::BufReader::new(file);
    let peek = std::io::BufRead::fill_buf(&mut reader).map_err(|e| GraftError::io(path, e))?;
    head[..peek.len().min(2)].copy_from_slice(&peek[..peek.len().min(2)]);
    let mut r: Box<dyn Read> =
        if head == [0x1f, 0x8b] { Box::new(flate2::bufread::GzDecoder::new(reader)) } else { Box::new(reader) };
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => bad(path, "truncated (the file or its gzip stream ends early)".into()),
        _ => GraftError::io(path, e),
    };
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).map_err(io)?;
    if magic[..2] != [0, 0] || magic[2] != 0x08 {
        return Err(bad(path, format!("magic {:02x?} is not 00 00 08 (unsigned bytes)", magic)));
    }
    if usize::from(magic[3]) != ndims {
        return Err(bad(path, format!("{} dimensions, expected {ndims}", magic[3])));
    }
    let mut dims = Vec::with_capacity(ndims);
    for _ in 0..ndims {
        let mut d = [0u8; 4];
        r.read_exact(&mut d).map_err(io)?;
        dims.push(u32::from_be_bytes(d) as usize);
    }
    let len = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)).filter(|&n| n <= MAX_BODY_BYTES);
    let len = len.ok_or_else(|| bad(path, format!("dimensions {dims:?} exceed {MAX_BODY_BYTES} bytes")))?;
    let mut body = Vec::new();
    r.by_ref().take(len).read_to_end(&mut body).map_err(io)?;
    if (body.len() as u64) < len {
        return Err(bad(path, format!("truncated: dimensions {dims:?} need {len} bytes, the file has {}", body.len())));
    }
    let mut extra = [0u8; 1];
    if r.read(&mut extra).map_err(|e| GraftError::io(path, e))? != 0 {
        return Err(bad(path, format!("data continues past the {len} bytes that dimensions {dims:?} describe")));
    }
    Ok((dims, body))
}
