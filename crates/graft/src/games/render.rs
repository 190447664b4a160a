//! Drawing environment frames and writing them out: a small RGB canvas (filled rectangles,
//! thick line segments, discs — all an environment's picture needs) and writers for one PNG per
//! frame or one animated PNG (APNG, which browsers and documentation pages play like a GIF,
//! without its 256-colour limit).

use crate::{GraftError, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

/// An RGB image being drawn on, with coordinates in pixels (x right, y down).
pub struct Canvas {
    image: RgbImage,
}

impl Canvas {
    /// A `width × height` canvas filled with `background`.
    pub fn new(width: u32, height: u32, background: [u8; 3]) -> Self {
        Self { image: RgbImage::from_pixel(width.max(1), height.max(1), Rgb(background)) }
    }

    /// Fills the pixels whose centres satisfy `inside`, within the box `from`–`to`.
    fn fill(&mut self, from: (f64, f64), to: (f64, f64), color: [u8; 3], inside: impl Fn(f64, f64) -> bool) {
        let (w, h) = (self.image.width() as f64, self.image.height() as f64);
        let x0 = from.0.min(to.0).floor().clamp(0.0, w) as u32;
        let x1 = from.0.max(to.0).ceil().clamp(0.0, w) as u32;
        let y0 = from.1.min(to.1).floor().clamp(0.0, h) as u32;
        let y1 = from.1.max(to.1).ceil().clamp(0.0, h) as u32;
        for y in y0..y1 {
            for x in x0..x1 {
                if inside(x as f64 + 0.5, y as f64 + 0.5) {
                    self.image.put_pixel(x, y, Rgb(color));
                }
            }
        }
    }

    /// The axis-aligned rectangle between corners `a` and `b`.
    pub fn rect(&mut self, a: (f64, f64), b: (f64, f64), color: [u8; 3]) {
        self.fill(a, b, color, |_, _| true);
    }

    /// The segment `a`–`b`, `width` pixels thick.
    pub fn line(&mut self, a: (f64, f64), b: (f64, f64), width: f64, color: [u8; 3]) {
        let r = (width / 2.0).max(0.5);
        let (dx, dy) = (b.0 - a.0, b.1 - a.1);
        let len2 = (dx * dx + dy * dy).max(f64::MIN_POSITIVE);
        let near = |x: f64, y: f64| {
            let t = (((x - a.0) * dx + (y - a.1) * dy) / len2).clamp(0.0, 1.0);
            let (px, py) = (a.0 + t * dx - x, a.1 + t * dy - y);
            px * px + py * py <= r * r
        };
        let lo = (a.0.min(b.0) - r, a.1.min(b.1) - r);
        let hi = (a.0.max(b.0) + r, a.1.max(b.1) + r);
        self.fill(lo, hi, color, near);
    }

    /// The disc of radius `r` around `c`.
    pub fn circle(&mut self, c: (f64, f64), r: f64, color: [u8; 3]) {
        let inside = |x: f64, y: f64| (x - c.0).powi(2) + (y - c.1).powi(2) <= r * r;
        self.fill((c.0 - r, c.1 - r), (c.0 + r, c.1 + r), color, inside);
    }

    /// The finished image.
    pub fn into_image(self) -> RgbImage {
        self.image
    }
}

/// Writes `image` as a PNG file at `path` (atomically).
pub fn write_png(image: &RgbImage, path: &Path) -> Result<()> {
    encode(std::slice::from_ref(image), 0, path)
}

/// Writes `frames` (all of one size) as one animated PNG at `path`, each shown `delay_ms`
/// milliseconds, looping forever (atomically).
pub fn write_apng(frames: &[RgbImage], delay_ms: u16, path: &Path) -> Result<()> {
    if frames.is_empty() {
        return Err(GraftError::Input("an animation needs at least one frame".into()));
    }
    encode(frames, delay_ms.max(1), path)
}

/// PNG bytes of `frames` (animated when `delay_ms > 0`), written to `path`.
fn encode(frames: &[RgbImage], delay_ms: u16, path: &Path) -> Result<()> {
    let (w, h) = frames[0].dimensions();
    if let Some(f) = frames.iter().find(|f| f.dimensions() != (w, h)) {
        return Err(GraftError::Input(format!("frames differ in size: {w}x{h} and {:?}", f.dimensions())));
    }
    let png_err = |e: png::EncodingError| GraftError::Input(format!("{}: PNG encoding: {e}", path.display()));
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        if delay_ms > 0 {
            encoder.set_animated(frames.len() as u32, 0).map_err(png_err)?;
            encoder.set_frame_delay(delay_ms, 1000).map_err(png_err)?;
        }
        let mut writer = encoder.write_header().map_err(png_err)?;
        for f in frames {
            writer.write_image_data(f.as_raw()).map_err(png_err)?;
        }
        writer.finish().map_err(png_err)?;
    }
    crate::io::write_atomic_bytes(path, &bytes)
}
