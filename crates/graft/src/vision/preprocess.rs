//! From decoded images to a model input: each image is resized (bilinear, half-pixel centres as
//! PyTorch's `interpolate(..., align_corners=False)` without antialiasing) to a square of side
//! `resize` (the aspect ratio is not kept), cropped to `crop` (centred, or at a random position
//! when augmenting), optionally flipped left-right, grey replicated to three channels, scaled to
//! 0-1 and normalised per channel; the batch is one `f32` tensor `[N, 3, crop, crop]`.
//!
//! Augmentation is deterministic: it draws from a ChaCha8 generator seeded by the caller (for
//! example from the run seed, the epoch and the batch index), so a resumed run sees the same
//! crops and flips.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::Image;
use crate::{GraftError, Result};

/// ImageNet's per-channel mean (RGB), the normalisation ImageNet-trained backbones expect.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];

/// ImageNet's per-channel standard deviation (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// How images become a model input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocess {
    /// Side, in pixels, of the square every image is resized to before cropping.
    pub resize: usize,
    /// Side of the square crop the model sees (at most `resize`).
    pub crop: usize,
    /// When augmenting, crop at a uniformly random position instead of the centre.
    pub random_crop: bool,
    /// When augmenting, flip each image left-right with probability 1/2.
    pub hflip: bool,
    /// Per-channel mean (RGB) subtracted after scaling pixels to 0-1.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (RGB) divided by after subtracting the mean.
    pub std: [f32; 3],
}

impl Preprocess {
    /// ImageNet evaluation preprocessing for a `crop x crop` input: resize to `crop * 8 / 7`
    /// (256 for 224), centre crop, ImageNet mean and std, no augmentation.
    pub fn imagenet(crop: usize) -> Self {
        Preprocess {
            resize: crop * 8 / 7,
            crop,
            random_crop: false,
            hflip: false,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// Checks the sizes and the standard deviations.
    pub fn validate(&self) -> Result<()> {
        if self.crop == 0 || self.crop > self.resize {
            return Err(GraftError::Input(format!(
                "preprocess: crop {} must be between 1 and resize ({})",
                self.crop, self.resize
            )));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || self.mean.iter().any(|m| !m.is_finite()) {
            return Err(GraftError::Input("preprocess: std must be positive and mean finite".into()));
        }
        Ok(())
    }

    /// The batch `[N, 3, crop, crop]` of `images` on `device`. With `augment = Some(seed)` crops
    /// and flips are drawn from that seed (as `random_crop` / `hflip` allow); with `None` every
    /// image is centre-cropped and not flipped.
    pub fn batch(&self, images: &[&Image], augment: Option<u64>, device: &Device) -> Result<Tensor> {
        self.validate()?;
        let mut rng = augment.map(ChaCha8Rng::seed_from_u64);
        let (r, c) = (self.resize, self.crop);
        let mut out = Vec::with_capacity(images.len() * 3 * c * c);
        for (i, img) in images.iter().enumerate() {
            if img.width == 0 || img.height == 0 || !matches!(img.channels, 1 | 3) {
                return Err(GraftError::Input(format!(
                    "image {i} is {}x{} with {} channels; expected a non-empty grey or RGB image",
                    img.width, img.height, img.channels
                )));
            }
            if img.pixels.len() != img.width * img.height * img.channels {
                return Err(GraftError::Input(format!("image {i} has {} pixel values for its size", img.pixels.len())));
            }
            let resized = resize_bilinear(img, r, r);
            let (mut top, mut left, mut flip) = ((r - c) / 2, (r - c) / 2, false);
            if let Some(rng) = rng.as_mut() {
                if self.random_crop {
                    top = rng.random_range(0..=r - c);
                    left = rng.random_range(0..=r - c);
                }
                if self.hflip {
                    flip = rng.random_bool(0.5);
                }
            }
            for ch in 0..3 {
                let src_ch = if img.channels == 1 { 0 } else { ch };
                for y in 0..c {
                    for x in 0..c {
                        let sx = if flip { c - 1 - x } else { x };
                        let v = resized[((top + y) * r + left + sx) * img.channels + src_ch] / 255.0;
                        out.push((v - self.mean[ch]) / self.std[ch]);
                    }
                }
            }
        }
        Ok(Tensor::from_vec(out, (images.len(), 3, c, c), device)?)
    }
}

/// `img` resized to `out_h x out_w` by bilinear interpolation with half-pixel centres (values
/// stay 0-255, as `f32`, HWC).
pub fn resize_bilinear(img: &Image, out_h: usize, out_w: usize) -> Vec<f32> {
    let ch = img.channels;
    let taps = |out: usize, inp: usize| -> Vec<(usize, usize, f32)> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|o| {
                let src = ((o as f32 + 0.5) * scale - 0.5).clamp(0.0, (inp - 1) as f32);
                let lo = src.floor() as usize;
                let hi = (lo + 1).min(inp - 1);
                (lo, hi, src - lo as f32)
            })
            .collect()
    };
    let (ys, xs) = (taps(out_h, img.height), taps(out_w, img.width));
    let px = |y: usize, x: usize, k: usize| f32::from(img.pixels[(y * img.width + x) * ch + k]);
    let mut out = Vec::with_capacity(out_h * out_w * ch);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            for k in 0..ch {
                let top = px(y0, x0, k) * (1.0 - fx) + px(y0, x1, k) * fx;
                let bottom = px(y1, x0, k) * (1.0 - fx) + px(y1, x1, k) * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_uses_half_pixel_centres() {
        let img = Image::grey(1, 2, vec![0, 255]);
        assert_eq!(resize_bilinear(&img, 1, 4), [0.0, 63.75, 191.25, 255.0]);
        let same = Image { width: 2, height: 2, channels: 3, pixels: (0..12).collect() };
        let back: Vec<u8> = resize_bilinear(&same, 2, 2).into_iter().map(|v| v as u8).collect();
        assert_eq!(back, same.pixels);
    }
}
