//! `graft classify`: the top classes of image files under a pretrained ImageNet classifier.

use anyhow::{Context, Result};
use candle_core::DType;
use clap::Args;
use graft::models::efficientnet::EfficientNetLite;
use graft::vision::preprocess::Preprocess;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Classify images with EfficientNet-Lite0 (ImageNet-1k) and print each one's top classes.
#[derive(Debug, Args)]
#[command(after_help = "Example: graft classify photo.jpg scan.png --top 5 --json\n\n\
PNG and JPEG files are read, resized to 256 x 256 (bilinear), centre-cropped to 224 x 224,\n\
grey images replicated to three channels, and normalised with ImageNet's mean and std (as the\n\
weights were trained). Probabilities are the softmax of the 1,000 logits. --model also takes a\n\
checkpoint file (legacy or zip torch.save, or safetensors) with the same tensor names, e.g. one\n\
written by a fine-tuning run; a checkpoint with other than 1,000 classes prints class indices.")]
pub struct ClassifyArgs {
    /// Image files (PNG or JPEG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// The classifier: the asset `efficientnet-lite0` or a checkpoint file.
    #[arg(long, default_value = "efficientnet-lite0")]
    model: String,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Side of the centre crop the model sees (the image is first resized to 8/7 of it).
    #[arg(long, default_value_t = 224)]
    image_size: usize,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute precision: f32 or f64.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Never download: fail if the model or the class names are not in the cache.
    #[arg(long)]
    offline: bool,
    /// Print exactly one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// The checkpoint file `model` names: an existing file, or an asset fetched into the cache.
fn checkpoint(model: &str, offline: bool) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    Ok(graft::assets::ensure(model, offline)?)
}

/// `exp(l − max) / Σ exp(l − max)`.
fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// Runs `graft classify`.
pub fn run(args: ClassifyArgs) -> Result<()> {
    if args.top == 0 {
        super::bail_input!("--top must be at least 1");
    }
    if args.image_size < 32 {
        super::bail_input!("--image-size must be at least 32, got {}", args.image_size);
    }
    let dtype = graft::device::parse_dtype(&args.dtype)?;
    if !matches!(dtype, DType::F32 | DType::F64) {
        super::bail_input!("--dtype {} is not supported for classification: use f32 or f64", args.dtype);
    }
    let device = graft::device::parse_device(&args.device)?;
    let images = args
        .images
        .iter()
        .map(|p| graft::vision::files::read_image(p).with_context(|| format!("reading image {}", p.display())))
        .collect::<Result<Vec<_>>>()?;

    let start = Instant::now();
    let path = checkpoint(&args.model, args.offline)?;
    let model = EfficientNetLite::load(&path, &device, dtype).with_context(|| format!("loading `{}`", args.model))?;
    let n_classes = model.num_classes();
    let names = if n_classes == graft::datasets::imagenet_classes::COUNT {
        Some(graft::datasets::imagenet_classes::load(args.offline)?)
    } else {
        None
    };
    eprintln!("loaded {} ({n_classes} classes) in {:.1}s", args.model, start.elapsed().as_secs_f64());

    let crop = args.image_size;
    let preprocess = Preprocess { resize: crop * 8 / 7, crop, ..Preprocess::imagenet(crop) };
    let refs: Vec<_> = images.iter().collect();
    let x = preprocess.batch(&refs, None, &device)?.to_dtype(dtype)?;
    let logits: Vec<Vec<f64>> = model.forward(&x, false)?.to_dtype(DType::F64)?.to_vec2()?;
    let probs: Vec<Vec<f64>> = logits.iter().map(|l| softmax(l)).collect();

    let mut rows = Vec::with_capacity(images.len());
    for ((file, l), p) in args.images.iter().zip(&logits).zip(&probs) {
        let mut order: Vec<usize> = (0..n_classes).collect();
        order.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
        let top: Vec<serde_json::Value> = order
            .iter()
            .take(args.top)
            .map(|&c| {
                serde_json::json!({
                    "class": c,
                    "label": names.as_ref().map(|n| n[c].clone()),
                    "probability": p[c],
                    "logit": l[c],
                })
            })
            .collect();
        if !args.json {
            println!("{}", file.display());
            for (rank, t) in top.iter().enumerate() {
                let label = t["label"].as_str().map_or_else(|| format!("class {}", t["class"]), str::to_string);
                println!("  {}. {label}  {:.1} %", rank + 1, t["probability"].as_f64().unwrap_or(0.0) * 100.0);
            }
        }
        rows.push(serde_json::json!({ "image": file.display().to_string(), "top": top }));
    }
    if args.json {
        let out = serde_json::json!({
            "model": args.model,
            "classes": n_classes,
            "image_size": crop,
            "images": rows,
        });
        println!("{out}");
    }
    Ok(())
}
