//! Scenes for detection and segmentation, composed from real labelled items: each scene is a
//! black square canvas with a few items (Fashion-MNIST garments, digits) pasted at random
//! positions, with every item's box and a per-pixel class mask. Seeded: scene `i` of a seed is
//! always the same, whatever else is composed.
//!
//! An item's pixels at or above [`INK`] are its shape: its box is their tight bounding box and
//! its mask their pixels. Items are pasted at their own size, later ones over earlier ones
//! (pixel-wise maximum for the image, overwrite for the mask), and a placement whose box
//! overlaps an earlier box by more than `max_overlap` (intersection over union) is redrawn, up
//! to [`PLACEMENT_TRIES`] times, then the item is left out.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Image, ImageSet};
use crate::{GraftError, Result};

/// Grey level from which an item's pixel counts as part of it (of 255).
pub const INK: u8 = 48;

/// Placements tried for an item before it is left out of the scene.
pub const PLACEMENT_TRIES: usize = 30;

/// How scenes are composed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SceneSpec {
    /// Side of the square canvas in pixels.
    pub canvas: usize,
    /// Fewest items a scene asks for.
    pub min_items: usize,
    /// Most items a scene asks for.
    pub max_items: usize,
    /// Largest intersection over union allowed between two items' boxes.
    pub max_overlap: f64,
}

impl Default for SceneSpec {
    /// 96 x 96 canvases with 1 to 4 items overlapping by at most 0.2.
    fn default() -> Self {
        Self { canvas: 96, min_items: 1, max_items: 4, max_overlap: 0.2 }
    }
}

impl SceneSpec {
    /// Refuses specs that cannot compose a scene, naming the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(GraftError::Input(m));
        if self.min_items == 0 || self.min_items > self.max_items {
            return bad(format!(
                "scenes.min_items = {} and scenes.max_items = {}: expected 1 <= min_items <= max_items",
                self.min_items, self.max_items
            ));
        }
        if !(0.0..=1.0).contains(&self.max_overlap) {
            return bad(format!("scenes.max_overlap = {}: expected a share from 0 to 1", self.max_overlap));
        }
        Ok(())
    }
}

/// One item of a scene.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SceneObject {
    /// Its class.
    pub class: usize,
    /// Its box `[x0, y0, x1, y1]` in pixels, edges (`x1 - x0` is the width).
    pub bbox: [f32; 4],
}

/// A composed scene.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// The grey canvas.
    pub image: Image,
    /// The items pasted, in pasting order.
    pub objects: Vec<SceneObject>,
    /// Per pixel (row-major, `canvas²`): 0 for background, `class + 1` where an item is.
    pub mask: Vec<u8>,
}

/// Intersection over union of two boxes `[x0, y0, x1, y1]`.
pub fn box_iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// The tight box of `img`'s pixels at or above [`INK`], `[x0, y0, x1, y1]`, or `None` if it has
/// none.
fn ink_box(img: &Image) -> Option<[usize; 4]> {
    let mut b = [usize::MAX, usize::MAX, 0, 0];
    for y in 0..img.height {
        for x in 0..img.width {
            if img.pixels[y * img.width + x] >= INK {
                b = [b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1)];
            }
        }
    }
    (b[0] != usize::MAX).then_some(b)
}

/// `count` scenes of items drawn from `items` (grey images, each smaller than the canvas), scene
/// `i` from a ChaCha stream `i` of `seed`.
pub fn compose(items: &ImageSet, spec: &SceneSpec, count: usize, seed: u64) -> Result<Vec<Scene>> {
    spec.validate()?;
    if items.images.is_empty() {
        return Err(GraftError::Input("no items to compose scenes from".into()));
    }
    if let Some(big) =
        items.images.iter().find(|i| i.channels != 1 || i.width >= spec.canvas || i.height >= spec.canvas)
    {
        return Err(GraftError::Input(format!(
            "scene items must be grey and smaller than the {0}x{0} canvas: one is {1}x{2} with {3} channels",
            spec.canvas, big.width, big.height, big.channels
        )));
    }
    Ok((0..count).map(|i| compose_one(items, spec, seed, i as u64)).collect())
}

fn compose_one(items: &ImageSet, spec: &SceneSpec, seed: u64, index: u64) -> Scene {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index);
    let side = spec.canvas;
    let mut pixels = vec![0u8; side * side];
    let mut mask = vec![0u8; side * side];
    let mut objects: Vec<SceneObject> = Vec::new();
    let wanted = rng.random_range(spec.min_items..=spec.max_items);
    for _ in 0..wanted {
        let pick = rng.random_range(0..items.images.len());
        let (img, class) = (&items.images[pick], items.labels[pick]);
        let Some(ink) = ink_box(img) else { continue };
        let placed = (0..PLACEMENT_TRIES).find_map(|_| {
            let (x, y) = (rng.random_range(0..=side - img.width), rng.random_range(0..=side - img.height));
            let bbox = [(x + ink[0]) as f32, (y + ink[1]) as f32, (x + ink[2]) as f32, (y + ink[3]) as f32];
            let clear = objects.iter().all(|o| f64::from(box_iou(&o.bbox, &bbox)) <= spec.max_overlap);
            clear.then_some((x, y, bbox))
        });
        let Some((x, y, bbox)) = placed else { continue };
        for row in 0..img.height {
            for col in 0..img.width {
                let v = img.pixels[row * img.width + col];
                let at = (y + row) * side + x + col;
                pixels[at] = pixels[at].max(v);
                if v >= INK {
                    mask[at] = class as u8 + 1;
                }
            }
        }
        objects.push(SceneObject { class, bbox });
    }
    Scene { image: Image::grey(side, side, pixels), objects, mask }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 4x4 item whose ink is the 2x2 block at rows 1-2, columns 1-2 (value 200).
    fn item() -> Image {
        let mut p = vec![0u8; 16];
        for (r, c) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
            p[r * 4 + c] = 200;
        }
        p[0] = INK - 1;
        Image::grey(4, 4, p)
    }

    #[test]
    fn boxes_and_masks_cover_exactly_the_ink_and_scenes_follow_the_seed() {
        let set = ImageSet { images: vec![item(), item()], labels: vec![3, 5] };
        let spec = SceneSpec { canvas: 12, min_items: 2, max_items: 3, max_overlap: 0.0 };
        let scenes = compose(&set, &spec, 20, 7).unwrap();
        for s in &scenes {
            assert!(!s.objects.is_empty() && s.objects.len() <= 3);
            for o in &s.objects {
                assert_eq!((o.bbox[2] - o.bbox[0], o.bbox[3] - o.bbox[1]), (2.0, 2.0));
                let [x0, y0] = [o.bbox[0] as usize, o.bbox[1] as usize];
                for (r, c) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    assert_eq!(s.mask[(y0 + r) * 12 + x0 + c], o.class as u8 + 1);
                    assert_eq!(s.image.pixels[(y0 + r) * 12 + x0 + c], 200);
                }
            }
            // No overlap allowed: the mask has exactly four pixels per item.
            assert_eq!(s.mask.iter().filter(|&&m| m > 0).count(), 4 * s.objects.len());
            for (i, a) in s.objects.iter().enumerate() {
                for b in &s.objects[i + 1..] {
                    assert_eq!(box_iou(&a.bbox, &b.bbox), 0.0);
                }
            }
        }
        assert_eq!(compose(&set, &spec, 20, 7).unwrap(), scenes);
        assert_eq!(compose(&set, &spec, 5, 7).unwrap()[..], scenes[..5], "scene i does not depend on the count");
        assert_ne!(compose(&set, &spec, 20, 8).unwrap(), scenes);
    }

    #[test]
    fn box_iou_of_known_boxes() {
        assert_eq!(box_iou(&[0.0, 0.0, 2.0, 2.0], &[1.0, 1.0, 3.0, 3.0]), 1.0 / 7.0);
        assert_eq!(box_iou(&[0.0, 0.0, 2.0, 2.0], &[0.0, 0.0, 2.0, 2.0]), 1.0);
        assert_eq!(box_iou(&[0.0, 0.0, 1.0, 1.0], &[2.0, 2.0, 3.0, 3.0]), 0.0);
    }

    #[test]
    fn bad_specs_and_items_are_refused() {
        let set = ImageSet { images: vec![item()], labels: vec![0] };
        let spec = |min, max| SceneSpec { canvas: 12, min_items: min, max_items: max, max_overlap: 0.2 };
        assert!(compose(&set, &spec(0, 2), 1, 0).is_err());
        assert!(compose(&set, &spec(3, 2), 1, 0).is_err());
        let small = SceneSpec { canvas: 4, ..spec(1, 1) };
        let err = compose(&set, &small, 1, 0).unwrap_err().to_string();
        assert!(err.contains("smaller than the 4x4 canvas"), "{err}");
        assert!(compose(&ImageSet::default(), &spec(1, 1), 1, 0).is_err());
    }
}
