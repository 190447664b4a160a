//! `graft vision`: image tasks on a pretrained CNN backbone.

use super::run_args::RunArgs;
use super::train::with_progress;
use anyhow::Result;
use clap::{Args, Subcommand};
use graft::recipes::image_train::config::ImageTrainConfig;
use graft::recipes::scene_train::config::SceneTrainConfig;
use graft::vision::dense::DenseTask;

/// Image tasks on a pretrained backbone (EfficientNet-Lite0).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  graft vision train configs/vision-fashion-mnist.toml --set data.label_fraction=0.01\n  graft vision detect scenes.toml"
)]
pub struct VisionArgs {
    #[command(subcommand)]
    command: VisionCommand,
}

#[derive(Debug, Subcommand)]
enum VisionCommand {
    /// Train a classification head on the backbone, frozen, with its top units fine-tuned or with
    /// LoRA on its 1x1 convolutions.
    Train(TrainArgs),
    /// Train an object detector (CenterNet-style heads on the backbone's feature pyramid) on
    /// scenes composed from a dataset's items, and score it with mAP@0.5.
    Detect(SceneArgs),
    /// Train a segmentation head (FCN-style, on the backbone's feature pyramid) on scenes
    /// composed from a dataset's items, and score it with mean IoU.
    Segment(SceneArgs),
}

/// Train a dense head on EfficientNet-Lite0's feature maps (strides 4, 8, 16) on scenes composed
/// from a labelled dataset's items (Fashion-MNIST garments pasted on a black canvas with their
/// boxes and masks; seeded), then score test scenes composed from its test split: `detect` with
/// mAP@0.5, `segment` with mean IoU (docs/vision.md). The backbone is pretrained (frozen or
/// fine-tuned: `train.backbone`) or random (`model.init = "random"`, from scratch). Writes
/// checkpoints, metrics.jsonl, summary.json, head.safetensors and, when the backbone trained,
/// model.safetensors to output.dir.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  graft vision detect scenes.toml\n  \
graft vision segment scenes.toml --set 'model.init=\"random\"' --set output.dir=runs/seg-scratch --json\n  \
graft vision detect scenes.toml --resume\n\n\
with a config such as:\n  \
[scenes]\n  dataset = \"fashion-mnist\"\n  canvas = 96\n  min_items = 1\n  max_items = 4\n  train = 2000\n  test = 500\n\n  \
[train]\n  backbone = \"fine-tune\"   # or \"frozen\"\n  epochs = 5\n  batch_size = 16\n  lr = 1e-3\n\n  \
[output]\n  dir = \"runs/scenes\"")]
pub struct SceneArgs {
    #[command(flatten)]
    run: RunArgs,
}

/// Train a new classification head on EfficientNet-Lite0's pooled features on a share of a
/// dataset's labels, with the backbone frozen (`train.unfreeze_top = 0`, a linear probe) or its
/// top units fine-tuned (1 = the head convolution, ..., 9 = every layer) or LoRA adapters on its
/// 1x1 convolutions trained (`train.lora = { r = 8, alpha = 16.0 }`), or the same architecture
/// trained from random weights (`model.init = "random"`), then score the test images
/// (docs/vision.md). Writes checkpoints, metrics.jsonl, summary.json (test accuracy,
/// macro-F1, per-class scores, confusion matrix), head.safetensors and, when backbone units or
/// LoRA adapters or a from-scratch network trained, model.safetensors (LoRA merged in; loadable by `graft classify
/// --model`) to output.dir.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  graft vision train configs/vision-fashion-mnist.toml\n  \
graft vision train configs/vision-fashion-mnist.toml --set train.unfreeze_top=2 --set output.dir=runs/fmnist-top2 --json\n  \
graft vision train configs/vision-fashion-mnist.toml --set 'model.init=\"random\"' --set output.dir=runs/fmnist-scratch\n  \
graft vision train configs/vision-fashion-mnist.toml --resume\n\n\
with a config such as:\n  \
[data]\n  dataset = \"fashion-mnist\"   # or \"mnist-5k\"\n  label_fraction = 0.1\n  eval_limit = 2000\n\n  \
[input]\n  resize = 64\n  crop = 64\n\n  \
[train]\n  unfreeze_top = 1   # or unfreeze_top = 0 and lora = { r = 8, alpha = 16.0 }\n\n  \
[head]\n  epochs = 5\n  batch_size = 32\n  lr = 1e-2\n\n  \
[output]\n  dir = \"runs/fashion-mnist\"")]
pub struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
}

/// Runs `graft vision ...`.
pub fn run(args: VisionArgs) -> Result<()> {
    match args.command {
        VisionCommand::Detect(a) => scenes(a, DenseTask::Detection)?,
        VisionCommand::Segment(a) => scenes(a, DenseTask::Segmentation)?,
        VisionCommand::Train(a) => {
            let a = a.run;
            let cfg = ImageTrainConfig::load(&a.config, &a.overrides())?;
            let s = with_progress(|on_event| graft::recipes::image_train::run(&cfg, a.resume, on_event))?;
            if a.json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!(
                    "{}: {} labelled images, {}, {} trainable parameters, {:.1}s; test accuracy {:.4}, macro-F1 {:.4} on {} images; summary in {}",
                    s.dataset,
                    s.train_examples,
                    match (s.lora, s.init) {
                        (Some(l), _) => format!("LoRA r {} alpha {}", l.r, l.alpha),
                        (None, graft::config::ModelInit::Random) => "from scratch".to_string(),
                        (None, _) => format!("unfreeze_top {}", s.unfreeze_top),
                    },
                    s.trainable_params,
                    s.train_s,
                    s.test.accuracy,
                    s.test.macro_f1,
                    s.test_examples,
                    cfg.output.dir.join("summary.json").display()
                );
            }
        }
    }
    Ok(())
}

/// Runs `graft vision detect` or `graft vision segment`.
fn scenes(args: SceneArgs, task: DenseTask) -> Result<()> {
    let a = args.run;
    let cfg = SceneTrainConfig::load(&a.config, &a.overrides())?;
    let s = with_progress(|on_event| graft::recipes::scene_train::run(&cfg, task, a.resume, on_event))?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    let score = match (&s.detection, &s.segmentation) {
        (Some(d), _) => format!("mAP@0.5 {:.4}", d.map),
        (_, Some(m)) => {
            format!("mean IoU {:.4} (objects {:.4}), pixel accuracy {:.4}", m.miou, m.miou_objects, m.pixel_accuracy)
        }
        _ => String::new(),
    };
    println!(
        "{} scenes of {} ({:?} backbone, {}), {} trainable parameters, {:.1}s; {score} on {} test scenes ({} items); summary in {}",
        s.train_scenes,
        s.dataset,
        s.init,
        if s.backbone_trained { "trained" } else { "frozen" },
        s.trainable_params,
        s.train_s,
        s.test_scenes,
        s.test_objects,
        cfg.output.dir.join("summary.json").display()
    );
    Ok(())
}
