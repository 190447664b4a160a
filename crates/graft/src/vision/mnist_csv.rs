//! The MNIST-5k CSV (asset `mnist-5k`, gzip'd or plain): one row per 28x28 grey image, the 784
//! pixel values 0-255 in row-major order, then the label 0-9; no header.

use std::io::Read;
use std::path::Path;

use super::{Image, ImageSet};
use crate::{GraftError, Result};

/// Side of an MNIST image.
pub const SIDE: usize = 28;

/// The 5,000 digits of the `mnist-5k` asset, fetched unless `offline`.
pub fn mnist_5k(offline: bool) -> Result<ImageSet> {
    read(&crate::assets::ensure("mnist-5k", offline)?)
}

/// Reads a CSV of `784 pixels, label` rows; any other row shape, a pixel outside 0-255 or a label
/// outside 0-9 is an error naming its line.
pub fn read(path: &Path) -> Result<ImageSet> {
    let file = std::fs::File::open(path).map_err(|e| GraftError::io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let gz = std::io::BufRead::fill_buf(&mut reader).map_err(|e| GraftError::io(path, e))?.starts_with(&[0x1f, 0x8b]);
    let input: Box<dyn Read> = if gz { Box::new(flate2::bufread::GzDecoder::new(reader)) } else { Box::new(reader) };
    let mut csv = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input);
    let mut set = ImageSet { images: Vec::new(), labels: Vec::new() };
    let pixels = SIDE * SIDE;
    for (i, row) in csv.records().enumerate() {
        let line = i + 1;
        let at = |what: String| GraftError::Input(format!("{}:{line}: {what}", path.display()));
        let row = row.map_err(|e| at(e.to_string()))?;
        if row.len() != pixels + 1 {
            return Err(at(format!("{} columns, expected {} (784 pixels and the label)", row.len(), pixels + 1)));
        }
        let mut px = Vec::with_capacity(pixels);
        for (col, v) in row.iter().take(pixels).enumerate() {
            px.push(v.trim().parse::<u8>().map_err(|_| at(format!("pixel {} is `{v}`, not 0-255", col + 1)))?);
        }
        let label = row.get(pixels).unwrap_or_default().trim();
        let label =
            label.parse::<usize>().ok().filter(|&l| l < 10).ok_or_else(|| at(format!("label `{label}` is not 0-9")))?;
        set.images.push(Image::grey(SIDE, SIDE, px));
        set.labels.push(label);
    }
    if set.images.is_empty() {
        return Err(GraftError::Input(format!("{}: no rows", path.display())));
    }
    Ok(set)
}
