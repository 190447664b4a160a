//! `graft vision detect` and `graft vision segment`: a dense head (CenterNet-style detector or
//! FCN-style segmenter, `vision::dense`) on EfficientNet-Lite0's feature pyramid, trained on
//! scenes composed from a labelled image dataset's items (`vision::scenes`) on the one trainer,
//! then scored on test scenes composed from its test split: mAP@0.5 for detection, mean IoU for
//! segmentation. The backbone is pretrained (frozen or fine-tuned) or random (from scratch), so
//! the two can be compared at the same budget.

pub mod config;

use crate::config::ModelInit;
use crate::eval::dense::{detection_report, segmentation_report, DetectionReport, SegmentationReport};
use crate::features::head::RunOutput;
use crate::features::HeadConfig;
use crate::models::batch_norm::DEFAULT_MOMENTUM;
use crate::models::efficientnet::{EfficientNetLite, LITE0_UNITS};
use crate::objectives::dense::DenseObjective;
use crate::recipes::image_train::{load_backbone, load_dataset};
use crate::report::LossPoint;
use crate::train::{Event, ParamGroup, RunDir};
use crate::vision::dense::{DenseHead, DenseTask};
use crate::vision::preprocess::Preprocess;
use crate::vision::scenes::{compose, Scene};
use crate::vision::Image;
use crate::Result;
use config::{SceneBackbone, SceneTrainConfig};
use serde::Serialize;
use std::time::Instant;

/// Learning-rate multiple of a fine-tuned pretrained backbone relative to the head's rate.
pub const BACKBONE_LR_RATIO: f64 = 0.1;

/// Blocks of the stages the pyramid reads (stages 1 to 5 of EfficientNet-Lite0: 11 blocks).
const PYRAMID_BLOCKS: usize = 11;

/// What a detection or segmentation run measured, written to `output.dir/summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct SceneTrainSummary {
    /// `detection` or `segmentation`.
    pub task: DenseTask,
    /// The items' dataset.
    pub dataset: String,
    /// `pretrained` or `random`.
    pub init: ModelInit,
    /// Whether the backbone trained.
    pub backbone_trained: bool,
    /// Training and test scenes.
    pub train_scenes: usize,
    /// Test scenes scored.
    pub test_scenes: usize,
    /// Items in the training and test scenes.
    pub train_objects: usize,
    /// Items in the test scenes.
    pub test_objects: usize,
    /// Head weights plus trained backbone weights.
    pub trainable_params: usize,
    /// Training wall time in seconds (this process's part of it).
    pub train_s: f64,
    /// Mean training loss per epoch (per scene for detection, per pixel for segmentation).
    pub epoch_losses: Vec<LossPoint>,
    /// Detection: mAP@0.5 and AP per class.
    pub detection: Option<DetectionReport>,
    /// Segmentation: mean IoU, per-label IoU and pixel accuracy.
    pub segmentation: Option<SegmentationReport>,
}

/// Whether `name` (a checkpoint name of EfficientNet-Lite0) is in a layer the pyramid reads.
fn in_pyramid(name: &str) -> bool {
    name.starts_with("_conv_stem")
        || name.starts_with("_bn0")
        || name
            .strip_prefix("_blocks.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| i < PYRAMID_BLOCKS)
}

/// Runs the config for `task`: composes the scenes, trains (resuming from `output.dir` when
/// `resume`), scores the test scenes and writes `summary.json`, `head.safetensors` and, when the
/// backbone trained, `model.safetensors`.
pub fn run(
    cfg: &SceneTrainConfig,
    task: DenseTask,
    resume: bool,
    on_event: &mut dyn FnMut(Event),
) -> Result<SceneTrainSummary> {
    let s = &cfg.scenes;
    let (train_items, test_items, classes) = load_dataset(&s.dataset, cfg.model.offline)?;
    let train_scenes = compose(&train_items, &s.spec(), s.train, s.seed)?;
    let test_scenes = compose(&test_items, &s.spec(), s.test, s.seed.wrapping_add(1))?;
    let count = |scenes: &[Scene]| scenes.iter().map(|s| s.objects.len()).sum::<usize>();
    on_event(Event::Note(format!(
        "{} training scenes of {} ({} items), {} test scenes ({} items), {}x{} pixels",
        train_scenes.len(),
        s.dataset,
        count(&train_scenes),
        test_scenes.len(),
        count(&test_scenes),
        s.canvas,
        s.canvas
    )));
    let device = crate::device::parse_device(&cfg.model.device)?;
    let dtype = crate::device::parse_dtype(&cfg.model.dtype)?;
    let n_classes = classes.len();
    let t = &cfg.train;
    let (mut model, scratch) = match cfg.model.init {
        ModelInit::Pretrained => (load_backbone(&cfg.model.name, cfg.model.offline, &device, dtype)?, false),
        ModelInit::Random => (EfficientNetLite::random(n_classes, t.seed, &device, dtype)?, true),
    };
    let head = DenseHead::new(task, n_classes, t.seed, &device)?;
    let mut buffers = Vec::new();
    let backbone = if scratch || t.backbone == SceneBackbone::FineTune {
        let vars: Vec<_> = model.unfreeze_top(LITE0_UNITS)?.into_iter().filter(|(n, _)| in_pyramid(n)).collect();
        if scratch {
            buffers = model.track_running_stats(DEFAULT_MOMENTUM)?.into_iter().filter(|(n, _)| in_pyramid(n)).collect();
        }
        let lr_scale = if scratch { 1.0 } else { BACKBONE_LR_RATIO };
        Some(ParamGroup { name: "backbone".into(), vars, lr_scale, weight_decay: None })
    } else {
        None
    };
    let backbone_params: usize = backbone.iter().flat_map(|g| &g.vars).map(|(_, v)| v.elem_count()).sum();
    let preprocess = Preprocess { resize: s.canvas, crop: s.canvas, ..Preprocess::imagenet(s.canvas) };
    let objective = DenseObjective {
        model: &model,
        head: &head,
        scenes: &train_scenes,
        preprocess,
        backbone,
        buffers,
        batch_stats: scratch,
    };
    let head_cfg = HeadConfig {
        epochs: t.epochs,
        batch_size: t.batch_size,
        lr: t.lr,
        weight_decay: t.weight_decay,
        seed: t.seed,
        ..HeadConfig::default()
    };
    let settings = serde_json::json!({ "task": task, "model": cfg.model, "scenes": cfg.scenes, "train": cfg.train });
    let dir = &cfg.output.dir;
    let run_dir = RunDir::open(dir, resume, cfg.output.save_every)?;
    let start = Instant::now();
    let out = RunOutput { dir: Some(run_dir), on_event: &mut *on_event };
    let epoch_losses = crate::features::head::fit_epochs(&objective, train_scenes.len(), &head_cfg, &settings, out)?;
    let train_s = start.elapsed().as_secs_f64();

    on_event(Event::Note(format!("scoring {} test scenes", test_scenes.len())));
    let (mut detections, mut masks) = (Vec::new(), Vec::new());
    for chunk in test_scenes.chunks(t.batch_size) {
        let images: Vec<&Image> = chunk.iter().map(|s| &s.image).collect();
        let x = preprocess.batch(&images, None, &device)?.to_dtype(dtype)?;
        let out = head.run(&model, &x, false)?.detach();
        match task {
            DenseTask::Detection => detections.extend(head.detections(&out)?),
            DenseTask::Segmentation => masks.extend(head.masks(&out)?),
        }
    }
    let (detection, segmentation) = match task {
        DenseTask::Detection => {
            let truth: Vec<_> = test_scenes.iter().map(|s| s.objects.clone()).collect();
            (Some(detection_report(&detections, &truth, n_classes, 0.5)), None)
        }
        DenseTask::Segmentation => {
            let truth: Vec<Vec<u8>> = test_scenes.iter().map(|s| s.mask.clone()).collect();
            (None, Some(segmentation_report(&masks, &truth, n_classes + 1)))
        }
    };
    let summary = SceneTrainSummary {
        task,
        dataset: s.dataset.clone(),
        init: cfg.model.init,
        backbone_trained: backbone_params > 0,
        train_scenes: train_scenes.len(),
        test_scenes: test_scenes.len(),
        train_objects: count(&train_scenes),
        test_objects: count(&test_scenes),
        trainable_params: head.params() + backbone_params,
        train_s,
        epoch_losses,
        detection,
        segmentation,
    };
    let head_tensors: Vec<_> = head.vars().iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
    crate::io::safetensors::save_atomic(head_tensors, &dir.join("head.safetensors"))?;
    if summary.backbone_trained {
        model.save(&dir.join("model.safetensors"))?;
    }
    crate::io::write_atomic(&dir.join("summary.json"), &serde_json::to_string_pretty(&summary)?)?;
    Ok(summary)
}
