//! Digit CSVs (gzip'd or plain): one row per square grey image, its pixel values in row-major
//! order, then the label 0-9; no header. The MNIST-5k CSV (asset `mnist-5k`) has 28x28 pixels
//! of 0-255; scikit-learn's 8x8 digits (asset `digits-8x8`) have 8x8 pixels of 0-16, scaled to
//! 0-255 on reading.

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

/// Side of a scikit-learn digit.
pub const DIGITS_SIDE: usize = 8;

/// The 1,797 digits of the `digits-8x8` asset (scikit-learn's), fetched unless `offline`;
/// pixels scaled from 0-16 to 0-255.
pub fn digits_8x8(offline: bool) -> Result<ImageSet> {
    read_rows(&crate::assets::ensure("digits-8x8", offline)?, DIGITS_SIDE, 16)
}

/// Reads a CSV of `784 pixels, label` rows; any other row shape, a pixel outside 0-255 or a label
/// outside 0-9 is an error naming its line.
pub fn read(path: &Path) -> Result<ImageSet> {
    read_rows(path, SIDE, 255)
}

/// Reads a CSV of `side²` pixels (each 0 to `max`, rescaled to 0-255 with rounding) and a
/// label per row; any other row shape, a pixel out of range or a label outside 0-9 is an error
/// naming its line.
pub fn read_rows(path: &Path, side: usize, max: u8) -> Result<ImageSet> {
    if max == 0 {
        return Err(GraftError::Input("the largest pixel value must be at least 1".into()));
    }
    let file = std::fs::File::open(path).map_err(|e| GraftError::io(path, e))?;
    let mut reader = std::io::BufReader::new(file);
    let gz = std::io::BufRead::fill_buf(&mut reader).map_err(|e| GraftError::io(path, e))?.starts_with(&[0x1f, 0x8b]);
    let input: Box<dyn Read> = if gz { Box::new(flate2::bufread::GzDecoder::new(reader)) } else { Box::new(reader) };
    let mut csv = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(input);
    let mut set = ImageSet { images: Vec::new(), labels: Vec::new() };
    let pixels = side * side;
    let scale = |v: u8| ((v as u32 * 255 + max as u32 / 2) / max as u32) as u8;
    for (i, row) in csv.records().enumerate() {
        let line = i + 1;
        let at = |what: String| GraftError::Input(format!("{}:{line}: {what}", path.display()));
        let row = row.map_err(|e| at(e.to_string()))?;
        if row.len() != pixels + 1 {
            return Err(at(format!("{} columns, expected {} ({pixels} pixels and the label)", row.len(), pixels + 1)));
        }
        let mut px = Vec::with_capacity(pixels);
        for (col, v) in row.iter().take(pixels).enumerate() {
            let value = v.trim().parse::<u8>().ok().filter(|&p| p <= max);
            px.push(scale(value.ok_or_else(|| at(format!("pixel {} is `{v}`, not 0-{max}", col + 1)))?));
        }
        let label = row.get(pixels).unwrap_or_default().trim();
        let label =
            label.parse::<usize>().ok().filter(|&l| l < 10).ok_or_else(|| at(format!("label `{label}` is not 0-9")))?;
        set.images.push(Image::grey(side, side, px));
        set.labels.push(label);
    }
    if set.images.is_empty() {
        return Err(GraftError::Input(format!("{}: no rows", path.display())));
    }
    Ok(set)
}
