//! Dense heads on a backbone's feature pyramid: an anchor-free single-scale detector (CenterNet:
//! a per-class centre heat map, box size and sub-cell offset at stride 4) and an FCN-style
//! segmentation head (per-pixel class logits at stride 4, upsampled to the image).
//!
//! Both read [`EfficientNetLite::pyramid`]'s maps at strides 4, 8 and 16 through one small
//! neck: each map is projected to [`NECK_WIDTH`] channels by a 1x1 convolution, the coarser two
//! upsampled (nearest) to stride 4 and summed (FPN-style), then a ReLU and a 3x3 convolution
//! with ReLU; a 1x1 convolution gives the task's outputs. Weights are drawn from a seeded ChaCha
//! stream: the neck's Kaiming-uniform (fan-in, for the ReLUs after them), the output
//! convolutions' small (uniform with standard deviation 0.01, as RetinaNet's heads: the
//! pretrained maps are large enough that PyTorch's default made the first detection loss
//! thousands of times its usual size); biases start at 0 except the heat map's, which start at
//! −2.19 (a prior of 0.1, as CenterNet starts).
//!
//! Detection targets and loss follow CenterNet: a Gaussian per object on its class's heat map
//! at its centre cell (radius from the box size, CornerNet's rule at overlap 0.7), the
//! penalty-reduced focal loss (α = 2, β = 4) normalised by the number of objects, and L1 losses
//! on the size (weight 0.1, in cells) and offset (weight 1) at the centre cells. Decoding keeps
//! heat-map cells that are the maximum of their 3x3 neighbourhood.

use candle_core::{DType, Device, Tensor, Var, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::eval::dense::Detection;
use crate::features::head::uniform_within;
use crate::models::efficientnet::{EfficientNetLite, PYRAMID_CHANNELS};
use crate::vision::scenes::{Scene, SceneObject};
use crate::{GraftError, Result};

/// Channels of the neck.
pub const NECK_WIDTH: usize = 64;

/// Stride of the head's output grid relative to the image.
pub const STRIDE: usize = 4;

/// Weight of the size loss in the detection loss.
pub const SIZE_WEIGHT: f64 = 0.1;

/// Heat-map cells kept per image when decoding.
pub const MAX_DETECTIONS: usize = 20;

/// What a dense head predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DenseTask {
    /// Boxes with classes.
    Detection,
    /// A class per pixel (background included).
    Segmentation,
}

/// A neck and task head over the feature pyramid, with its variables by name.
#[derive(Debug, Clone)]
pub struct DenseHead {
    task: DenseTask,
    classes: usize,
    vars: Vec<(String, Var)>,
}

impl DenseHead {
    /// A fresh head for `classes` object classes, drawn with `seed`, as f32 on `device`.
    pub fn new(task: DenseTask, classes: usize, seed: u64, device: &Device) -> Result<Self> {
        if classes == 0 || classes > 254 {
            return Err(GraftError::Input(format!("a dense head needs 1 to 254 classes, not {classes}")));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut vars = Vec::new();
        let mut conv = |name: &str, out: usize, inp: usize, k: usize, bias: f32| -> Result<()> {
            let bound = match name.starts_with("neck") {
                true => (6.0 / (inp * k * k) as f32).sqrt(),
                false => 0.01 * 3f32.sqrt(),
            };
            let w = uniform_within(&[out, inp, k, k], bound, &mut rng, device)?;
            vars.push((format!("{name}.weight"), Var::from_tensor(&w)?));
            vars.push((format!("{name}.bias"), Var::from_tensor(&Tensor::full(bias, out, device)?)?));
            Ok(())
        };
        for (i, &c) in PYRAMID_CHANNELS.iter().enumerate() {
            conv(&format!("neck.lateral.{i}"), NECK_WIDTH, c, 1, 0.0)?;
        }
        conv("neck.smooth", NECK_WIDTH, NECK_WIDTH, 3, 0.0)?;
        match task {
            DenseTask::Detection => {
                conv("head.heatmap", classes, NECK_WIDTH, 1, -2.19)?;
                conv("head.box", 4, NECK_WIDTH, 1, 0.0)?;
            }
            DenseTask::Segmentation => conv("head.classes", classes + 1, NECK_WIDTH, 1, 0.0)?,
        }
        Ok(Self { task, classes, vars })
    }

    /// The task.
    pub fn task(&self) -> DenseTask {
        self.task
    }

    /// Number of object classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The variables by name, in a fixed order.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// Number of trainable weights.
    pub fn params(&self) -> usize {
        self.vars.iter().map(|(_, v)| v.elem_count()).sum()
    }

    fn get(&self, name: &str) -> Result<&Tensor> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_tensor())
            .ok_or_else(|| GraftError::Input(format!("dense head lacks `{name}`")))
    }

    fn conv(&self, name: &str, x: &Tensor, padding: usize) -> Result<Tensor> {
        let w = self.get(&format!("{name}.weight"))?;
        let b = self.get(&format!("{name}.bias"))?.reshape((1, (), 1, 1))?;
        Ok(x.conv2d(w, padding, 1, 1, 1)?.broadcast_add(&b)?)
    }

    /// The head's raw outputs `[N, K, H/4, W/4]` for the pyramid of images `[N, 3, H, W]`
    /// (`H`, `W` multiples of 16): detection `K = classes + 4` (heat-map logits, then width,
    /// height, x and y offset), segmentation `K = classes + 1` (label logits).
    pub fn forward(&self, pyramid: &[Tensor; 3]) -> Result<Tensor> {
        let (_, _, h, w) = pyramid[0].dims4()?;
        let mut sum = self.conv("neck.lateral.0", &pyramid[0].to_dtype(DType::F32)?, 0)?;
        for (i, map) in pyramid.iter().enumerate().skip(1) {
            let lateral = self.conv(&format!("neck.lateral.{i}"), &map.to_dtype(DType::F32)?, 0)?;
            sum = (sum + lateral.upsample_nearest2d(h, w)?)?;
        }
        let x = self.conv("neck.smooth", &sum.relu()?, 1)?.relu()?;
        match self.task {
            DenseTask::Detection => {
                Ok(Tensor::cat(&[self.conv("head.heatmap", &x, 0)?, self.conv("head.box", &x, 0)?], 1)?)
            }
            DenseTask::Segmentation => self.conv("head.classes", &x, 0),
        }
    }

    /// [`Self::forward`] on images `[N, 3, H, W]` through `model` (its batch norms on batch
    /// statistics when `batch_stats`).
    pub fn run(&self, model: &EfficientNetLite, x: &Tensor, batch_stats: bool) -> Result<Tensor> {
        self.forward(&model.pyramid(x, batch_stats)?)
    }

    /// The summed loss of `out` (from [`Self::forward`]) against `scenes`, and its unit count:
    /// detection per image (the CenterNet loss of each image summed), segmentation per pixel
    /// (cross-entropy of the logits upsampled to the image).
    pub fn loss(&self, out: &Tensor, scenes: &[&Scene]) -> Result<(Tensor, usize)> {
        match self.task {
            DenseTask::Detection => detection_loss(out, scenes, self.classes),
            DenseTask::Segmentation => {
                let (n, k, h, w) = out.dims4()?;
                let side = scenes.first().map_or(0, |s| s.image.height);
                if h * STRIDE != side || w * STRIDE != side {
                    return Err(GraftError::Input(format!("output grid {h}x{w} does not cover {side}-pixel scenes")));
                }
                let logits = out.upsample_nearest2d(side, side)?;
                let logits = logits.permute((0, 2, 3, 1))?.reshape((n * side * side, k))?;
                let labels: Vec<u32> = scenes.iter().flat_map(|s| s.mask.iter().map(|&m| u32::from(m))).collect();
                let labels = Tensor::from_vec(labels, n * side * side, out.device())?;
                crate::train::loss::nll_sum(&logits, &labels)
            }
        }
    }

    /// Detections of each image of `out` (detection heads only): the [`MAX_DETECTIONS`] best
    /// local maxima of the heat maps, with boxes from their size and offset, in pixels.
    pub fn detections(&self, out: &Tensor) -> Result<Vec<Vec<Detection>>> {
        let (n, _, h, w) = out.dims4()?;
        let c = self.classes;
        let heat: Vec<f32> = candle_nn::ops::sigmoid(&out.narrow(1, 0, c)?)?.flatten_all()?.to_vec1()?;
        let boxes: Vec<f32> = out.narrow(1, c, 4)?.contiguous()?.flatten_all()?.to_vec1()?;
        let mut all = Vec::with_capacity(n);
        for img in 0..n {
            let at = |ch: usize, y: usize, x: usize| heat[((img * c + ch) * h + y) * w + x];
            let mut found = Vec::new();
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let v = at(ch, y, x);
                        let peak = (y.saturating_sub(1)..(y + 2).min(h))
                            .all(|yy| (x.saturating_sub(1)..(x + 2).min(w)).all(|xx| at(ch, yy, xx) <= v));
                        if peak {
                            let b = |k: usize| boxes[((img * 4 + k) * h + y) * w + x];
                            let (cx, cy) = (x as f32 + b(2), y as f32 + b(3));
                            let (bw, bh) = (b(0).max(0.0), b(1).max(0.0));
                            let s = STRIDE as f32;
                            let bbox =
                                [(cx - bw / 2.0) * s, (cy - bh / 2.0) * s, (cx + bw / 2.0) * s, (cy + bh / 2.0) * s];
                            found.push(Detection { class: ch, score: v, bbox });
                        }
                    }
                }
            }
            found.sort_by(|a, b| b.score.total_cmp(&a.score));
            found.truncate(MAX_DETECTIONS);
            all.push(found);
        }
        Ok(all)
    }

    /// The label of every pixel of each image of `out` (segmentation heads only), row-major.
    pub fn masks(&self, out: &Tensor) -> Result<Vec<Vec<u8>>> {
        let (n, _, h, w) = out.dims4()?;
        // Each cell's label repeated over its STRIDE x STRIDE pixels (nearest upsampling).
        let cells: Vec<Vec<Vec<u32>>> = out.argmax(1)?.to_dtype(DType::U32)?.to_vec3()?;
        let side = (h * STRIDE, w * STRIDE);
        Ok((0..n)
            .map(|i| (0..side.0 * side.1).map(|p| cells[i][p / side.1 / STRIDE][(p % side.1) / STRIDE] as u8).collect())
            .collect())
    }
}

/// The Gaussian radius (in cells) of a box of `h x w` cells, as CenterNet's `gaussian_radius`
/// computes it (CornerNet's three cases of a corner shift that keeps the IoU with the true box
/// at `min_overlap`, each root taken as `(b + √(b² − 4ac)) / 2`), the smallest of the three.
pub fn gaussian_radius(h: f64, w: f64, min_overlap: f64) -> f64 {
    let root = |a: f64, b: f64, c: f64| (b + (b * b - 4.0 * a * c).max(0.0).sqrt()) / 2.0;
    let r1 = root(1.0, h + w, w * h * (1.0 - min_overlap) / (1.0 + min_overlap));
    let r2 = root(4.0, 2.0 * (h + w), (1.0 - min_overlap) * w * h);
    let r3 = root(4.0 * min_overlap, -2.0 * min_overlap * (h + w), (min_overlap - 1.0) * w * h);
    r1.min(r2).min(r3)
}

/// The CenterNet targets of one scene on a `grid x grid` output: heat map `[classes, grid,
/// grid]` and, per object, its centre cell index and `[w, h, dx, dy]` in cells.
pub fn detection_targets(objects: &[SceneObject], classes: usize, grid: usize) -> (Vec<f32>, Vec<(usize, [f32; 4])>) {
    let mut heat = vec![0f32; classes * grid * grid];
    let mut centres = Vec::with_capacity(objects.len());
    let s = STRIDE as f32;
    for o in objects {
        let (w, h) = ((o.bbox[2] - o.bbox[0]) / s, (o.bbox[3] - o.bbox[1]) / s);
        let (cx, cy) = ((o.bbox[0] + o.bbox[2]) / 2.0 / s, (o.bbox[1] + o.bbox[3]) / 2.0 / s);
        let (px, py) = ((cx.floor() as usize).min(grid - 1), (cy.floor() as usize).min(grid - 1));
        let radius = gaussian_radius(f64::from(h), f64::from(w), 0.7).floor().max(0.0);
        let sigma = (2.0 * radius + 1.0) / 6.0;
        let r = radius as isize;
        for dy in -r..=r {
            for dx in -r..=r {
                let (x, y) = (px as isize + dx, py as isize + dy);
                if x < 0 || y < 0 || x >= grid as isize || y >= grid as isize {
                    continue;
                }
                let g = (-((dx * dx + dy * dy) as f64) / (2.0 * sigma * sigma)).exp() as f32;
                let at = (o.class * grid + y as usize) * grid + x as usize;
                heat[at] = heat[at].max(g);
            }
        }
        centres.push((py * grid + px, [w, h, cx - px as f32, cy - py as f32]));
    }
    (heat, centres)
}

/// The CenterNet loss of detection outputs `out` `[N, classes + 4, g, g]` against `scenes`,
/// summed over images, with the number of images.
fn detection_loss(out: &Tensor, scenes: &[&Scene], classes: usize) -> Result<(Tensor, usize)> {
    let (n, _, g, _) = out.dims4()?;
    let device = out.device();
    let mut heat = Vec::with_capacity(n * classes * g * g);
    let (mut index, mut target, mut image_of) = (Vec::new(), Vec::new(), Vec::new());
    for (i, s) in scenes.iter().enumerate() {
        let (h, centres) = detection_targets(&s.objects, classes, g);
        heat.extend(h);
        for (cell, t) in centres {
            index.push((i * g * g + cell) as u32);
            target.extend(t);
            image_of.push(i);
        }
    }
    let dt = out.dtype();
    let gt = Tensor::from_vec(heat, (n, classes, g, g), device)?.to_dtype(dt)?;
    let logits = out.narrow(1, 0, classes)?;
    let p = candle_nn::ops::sigmoid(&logits)?.clamp(1e-4, 1.0 - 1e-4)?;
    let pos = gt.ge(1.0)?.to_dtype(dt)?;
    let neg = (1.0 - &pos)?;
    let one_minus_p = (1.0 - &p)?;
    let pos_term = (p.log()? * one_minus_p.sqr()? * &pos)?;
    let neg_weight = (1.0 - &gt)?.powf(4.0)?;
    let neg_term = (one_minus_p.log()? * p.sqr()? * neg_weight * neg)?;
    // Per image: focal loss over its objects (at least 1), plus the box losses at its centres.
    let per_image_focal = (pos_term + neg_term)?.sum((1, 2, 3))?.neg()?;
    let objects: Vec<f32> = scenes.iter().map(|s| s.objects.len().max(1) as f32).collect();
    let objects = Tensor::from_vec(objects, n, device)?.to_dtype(dt)?;
    let mut total = (per_image_focal / &objects)?.sum_all()?;
    if !index.is_empty() {
        let k = index.len();
        let boxes = out.narrow(1, classes, 4)?.permute((0, 2, 3, 1))?.reshape((n * g * g, 4))?;
        let picked = boxes.index_select(&Tensor::from_vec(index, k, device)?, 0)?;
        let diff = (picked - Tensor::from_vec(target, (k, 4), device)?.to_dtype(dt)?)?.abs()?;
        let per_object =
            (diff.narrow(1, 0, 2)?.sum(D::Minus1)? * SIZE_WEIGHT + diff.narrow(1, 2, 2)?.sum(D::Minus1)?)?;
        let weights: Vec<f32> = image_of.iter().map(|&i| 1.0 / scenes[i].objects.len() as f32).collect();
        let weighted = (per_object * Tensor::from_vec(weights, k, device)?.to_dtype(dt)?)?.sum_all()?;
        total = (total + weighted)?;
    }
    Ok((total, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_radius_matches_cornernet() {
        // CenterNet's gaussian_radius((10, 10), 0.7) and ((7, 5), 0.7), computed by hand from
        // its formula: the third case both times.
        let r = gaussian_radius(10.0, 10.0, 0.7);
        assert!((r - 2.733_200_530_681_511).abs() < 1e-12, "{r}");
        let r = gaussian_radius(7.0, 5.0, 0.7);
        assert!((r - 1.597_999_799_959_991).abs() < 1e-12, "{r}");
    }

    #[test]
    fn targets_put_a_one_at_each_centre() {
        let objects = [SceneObject { class: 1, bbox: [8.0, 8.0, 24.0, 24.0] }];
        let (heat, centres) = detection_targets(&objects, 2, 8);
        // Centre (16, 16) px = cell (4, 4); size 4 x 4 cells; no offset.
        assert_eq!(centres, [(4 * 8 + 4, [4.0, 4.0, 0.0, 0.0])]);
        assert_eq!(heat[64 + 4 * 8 + 4], 1.0);
        assert_eq!(heat.iter().filter(|&&v| v == 1.0).count(), 1);
        assert!(heat[..64].iter().all(|&v| v == 0.0), "class 0 untouched");
        assert!(heat[64 + 4 * 8 + 5] > 0.0 && heat[64 + 4 * 8 + 5] < 1.0);
    }

    fn scene(objects: Vec<SceneObject>) -> Scene {
        Scene { image: crate::vision::Image::grey(64, 64, vec![0; 64 * 64]), mask: vec![0; 64 * 64], objects }
    }

    /// Outputs that say exactly what the targets say: heat-map logits +12 at each centre of its
    /// class and −12 elsewhere, the box channels the targets' size and offset at the centres.
    fn perfect_outputs(objects: &[SceneObject], classes: usize) -> Tensor {
        let g = 16;
        let (_, centres) = detection_targets(objects, classes, g);
        let mut v = vec![-12f32; (classes + 4) * g * g];
        for (o, (cell, t)) in objects.iter().zip(&centres) {
            v[o.class * g * g + cell] = 12.0;
            for (k, value) in t.iter().enumerate() {
                v[(classes + k) * g * g + cell] = *value;
            }
        }
        Tensor::from_vec(v, (1, classes + 4, g, g), &Device::Cpu).unwrap()
    }

    #[test]
    fn outputs_that_match_the_targets_decode_to_the_true_boxes_at_a_low_loss() {
        let objects = vec![
            SceneObject { class: 2, bbox: [4.0, 6.0, 26.0, 30.0] },
            SceneObject { class: 0, bbox: [33.0, 35.0, 60.0, 57.0] },
        ];
        let head = DenseHead::new(DenseTask::Detection, 3, 0, &Device::Cpu).unwrap();
        let out = perfect_outputs(&objects, 3);
        let found = head.detections(&out).unwrap();
        assert_eq!(found[0].len(), MAX_DETECTIONS);
        for (d, o) in found[0].iter().take(2).zip([&objects[1], &objects[0]]) {
            assert_eq!(d.class, o.class);
            for (a, b) in d.bbox.iter().zip(o.bbox) {
                assert!((a - b).abs() < 1e-4, "{:?} vs {:?}", d.bbox, o.bbox);
            }
        }
        let report = crate::eval::dense::detection_report(&found, std::slice::from_ref(&objects), 3, 0.5);
        assert_eq!(report.map, 1.0);
        let s = scene(objects.clone());
        let (perfect, n) = head.loss(&out, &[&s]).unwrap();
        let (blank, _) = head.loss(&out.zeros_like().unwrap(), &[&s]).unwrap();
        let (perfect, blank) = (perfect.to_scalar::<f32>().unwrap(), blank.to_scalar::<f32>().unwrap());
        assert_eq!(n, 1);
        assert!(perfect < 0.05 && blank > 1.0, "perfect {perfect}, blank {blank}");
    }

    #[test]
    fn masks_repeat_each_cells_label_over_its_pixels() {
        let head = DenseHead::new(DenseTask::Segmentation, 2, 0, &Device::Cpu).unwrap();
        // Cells (0,0) label 1, (0,1) label 2, (1,0) and (1,1) label 0.
        let mut v = vec![0f32; 3 * 4];
        for (label, cell) in [(1, 0), (2, 1), (0, 2), (0, 3)] {
            v[label * 4 + cell] = 5.0;
        }
        let out = Tensor::from_vec(v, (1, 3, 2, 2), &Device::Cpu).unwrap();
        let mask = &head.masks(&out).unwrap()[0];
        assert_eq!(mask.len(), 64);
        assert_eq!((mask[0], mask[3 * 8 + 3], mask[4], mask[3 * 8 + 7], mask[4 * 8], mask[63]), (1, 1, 2, 2, 0, 0));
    }

    #[test]
    fn the_detection_loss_gradient_matches_finite_differences() {
        let objects = vec![SceneObject { class: 1, bbox: [10.0, 12.0, 30.0, 40.0] }];
        let s = scene(objects);
        let head = DenseHead::new(DenseTask::Detection, 2, 0, &Device::Cpu).unwrap();
        let base: Vec<f64> = (0..6 * 256).map(|i| ((i * 37 % 101) as f64 / 101.0 - 0.5) * 0.8).collect();
        let loss_of = |v: &[f64]| -> (f64, Vec<f64>) {
            let var = Var::from_tensor(&Tensor::from_vec(v.to_vec(), (1, 6, 16, 16), &Device::Cpu).unwrap()).unwrap();
            let (l, _) = head.loss(var.as_tensor(), &[&s]).unwrap();
            let grads = l.backward().unwrap();
            let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            (l.to_scalar::<f64>().unwrap(), g)
        };
        let (_, grad) = loss_of(&base);
        // A heat-map cell at the centre, one beside it, one far away, and the four box channels
        // at the centre: the box's centre (20, 26) px is cell (5, 6) at stride 4.
        let centre = 6 * 16 + 5;
        for i in
            [256 + centre, 256 + centre + 1, 3, 2 * 256 + centre, 3 * 256 + centre, 4 * 256 + centre, 5 * 256 + centre]
        {
            let h = 1e-6;
            let (mut up, mut down) = (base.clone(), base.clone());
            up[i] += h;
            down[i] -= h;
            let fd = (loss_of(&up).0 - loss_of(&down).0) / (2.0 * h);
            assert!(
                (fd - grad[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                "at {i}: finite differences {fd}, backward {}",
                grad[i]
            );
        }
    }
}
