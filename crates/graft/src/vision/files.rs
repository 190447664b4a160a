//! PNG and JPEG files (the `image` crate, with only those two decoders): grey images stay one
//! channel, colour images become RGB, an alpha channel is dropped. Decoding is bounded (at most
//! 16384 pixels a side and 512 MiB of pixel data), so a hostile header cannot claim a huge image.

use std::path::Path;

use super::Image;
use crate::{GraftError, Result};

/// Largest width or height accepted.
const MAX_SIDE: u32 = 16_384;

/// Largest decoded allocation accepted, in bytes.
const MAX_ALLOC: u64 = 512 << 20;

/// Decodes the PNG or JPEG file at `path` (the format is taken from its first bytes).
pub fn read_image(path: &Path) -> Result<Image> {
    let fail = |what: String| GraftError::Input(format!("{}: cannot decode the image: {what}", path.display()));
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| GraftError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| GraftError::io(path, e))?;
    if !matches!(reader.format(), Some(image::ImageFormat::Png | image::ImageFormat::Jpeg)) {
        return Err(fail("it is neither PNG nor JPEG".into()));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let decoded = reader.decode().map_err(|e| fail(e.to_string()))?;
    let (width, height) = (decoded.width() as usize, decoded.height() as usize);
    Ok(if decoded.color().has_color() {
        Image { width, height, channels: 3, pixels: decoded.into_rgb8().into_raw() }
    } else {
        Image { width, height, channels: 1, pixels: decoded.into_luma8().into_raw() }
    })
}
