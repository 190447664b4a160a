//! Images in, for vision models: decoded images held as 8-bit pixels ([`Image`], [`ImageSet`]),
//! the readers that produce them — IDX files (MNIST / Fashion-MNIST, [`idx`]), the MNIST-5k CSV
//! ([`mnist_csv`]), PNG and JPEG files ([`files`]) — and the preprocessing that turns a batch of
//! them into a model input tensor `[N, 3, H, W]` ([`preprocess`]: resize, grey to three
//! channels, ImageNet normalisation, seeded random crop and horizontal flip) — and image
//! classifiers on a pretrained backbone ([`classifier`]).

pub mod classifier;
pub mod dense;
pub mod files;
pub mod idx;
pub mod mnist_csv;
pub mod preprocess;
pub mod scenes;

/// One decoded image: 8-bit pixels, row-major, channels interleaved (HWC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `height * width * channels` values.
    pub pixels: Vec<u8>,
}

impl Image {
    /// A grey image of `height x width` from its row-major pixels.
    pub fn grey(height: usize, width: usize, pixels: Vec<u8>) -> Self {
        Image { width, height, channels: 1, pixels }
    }
}

/// Labelled images: `labels[i]` is the class index of `images[i]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSet {
    /// The images.
    pub images: Vec<Image>,
    /// One class index per image.
    pub labels: Vec<usize>,
}

impl ImageSet {
    /// How many images each class has, for classes `0..num_classes`.
    pub fn class_counts(&self, num_classes: usize) -> Vec<usize> {
        let mut counts = vec![0; num_classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l) {
                *c += 1;
            }
        }
        counts
    }
}
