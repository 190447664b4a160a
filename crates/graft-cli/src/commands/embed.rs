//! `graft embed`: sentence embeddings of a JSONL file with a BERT encoder.

use anyhow::{Context, Result};
use candle_core::{DType, Tensor};
use clap::Args;
use graft::models::bert::SentenceEncoder;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Embed the `text` of every line of a JSONL file.
#[derive(Debug, Args)]
#[command(after_help = "Example: graft embed --input sentences.jsonl --out embeddings\n\n\
Each input line is a JSON object with a \"text\" field (other fields are ignored). Writes\n\
OUT.jsonl ({\"text\": ..., \"embedding\": [...]} per line, in input order) and OUT.safetensors\n\
(one f32 tensor `embeddings` [n, dim], row i = line i). Embeddings are the mean of the\n\
encoder's last hidden states over the text's tokens, scaled to unit length, so a dot product\n\
is a cosine similarity. Texts longer than the model's limit (256 tokens for all-minilm-l6-v2)\n\
are truncated; the count is reported.")]
pub struct EmbedArgs {
    /// Encoder: an asset name or a Hugging Face BERT folder (config.json, model.safetensors,
    /// tokenizer.json).
    #[arg(long, default_value = "all-minilm-l6-v2")]
    model: String,
    /// JSONL file, one {"text": ...} object per line.
    #[arg(long)]
    input: PathBuf,
    /// Output path without extension: OUT.jsonl and OUT.safetensors are written.
    #[arg(long)]
    out: PathBuf,
    /// Texts per forward pass (texts of similar length are batched together).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Compute precision: f32 or f64 (files are written as f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Never download: fail if the model is not in the cache.
    #[arg(long)]
    offline: bool,
    /// Print exactly one JSON summary object on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `graft embed`.
pub fn run(args: EmbedArgs) -> Result<()> {
    if args.batch_size == 0 {
        super::bail_input!("--batch-size must be at least 1");
    }
    let dtype = graft::device::parse_dtype(&args.dtype)?;
    if !matches!(dtype, DType::F32 | DType::F64) {
        super::bail_input!("--dtype {} is not supported for embeddings: use f32 or f64", args.dtype);
    }
    let device = graft::device::parse_device(&args.device)?;
    let (jsonl, st) = output_paths(&args.out)?;
    for out in [&jsonl, &st] {
        if same_file(out, &args.input) {
            super::bail_input!("--out would overwrite the input {}: choose another --out", args.input.display());
        }
    }
    let texts = graft::data::read_texts(&args.input)?;

    let source = graft::assets::resolve_model(&args.model, args.offline)?;
    let start = Instant::now();
    let encoder =
        SentenceEncoder::load(&source, &device, dtype).with_context(|| format!("loading encoder `{}`", args.model))?;
    eprintln!("loaded {} ({} dims) in {:.1}s", args.model, encoder.dim(), start.elapsed().as_secs_f64());

    let bar = if texts.len() > args.batch_size {
        let bar = ProgressBar::with_draw_target(Some(texts.len() as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} texts  {per_sec}  eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let start = Instant::now();
    let out = encoder.embed(&texts, args.batch_size, &mut |done| bar.set_position(done as u64))?;
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let vectors = out.vectors.to_dtype(DType::F32)?;
    let (n, dim) = vectors.dims2()?;
    write_jsonl(&jsonl, &texts, &vectors.to_vec2::<f32>()?)?;
    write_safetensors(&st, vectors)?;

    let texts_per_s = n as f64 / seconds.max(1e-9);
    if out.n_truncated > 0 {
        eprintln!("{} of {n} texts were longer than {} tokens and were truncated", out.n_truncated, encoder.max_len());
    }
    if args.json {
        let report = serde_json::json!({
            "model": args.model,
            "input": args.input,
            "n": n,
            "dim": dim,
            "seconds": seconds,
            "texts_per_s": texts_per_s,
            "tokens": out.n_tokens,
            "n_truncated": out.n_truncated,
            "max_len": encoder.max_len(),
            "batch_size": args.batch_size,
            "device": args.device,
            "dtype": args.dtype,
            "threads": graft::device::cpu_threads(),
            "out_jsonl": jsonl,
            "out_safetensors": st,
        });
        println!("{report}");
    } else {
        println!(
            "embedded {n} texts ({dim} dims) in {seconds:.2}s ({texts_per_s:.1} texts/s); wrote {} and {}",
            jsonl.display(),
            st.display()
        );
    }
    Ok(())
}

/// `OUT.jsonl` and `OUT.safetensors`; an `OUT` already ending in one of those extensions is
/// taken as the stem.
fn output_paths(out: &Path) -> Result<(PathBuf, PathBuf)> {
    let stem = match out.extension().and_then(|e| e.to_str()) {
        Some("jsonl" | "safetensors") => out.with_extension(""),
        _ => out.to_path_buf(),
    };
    if stem.file_name().is_none() {
        super::bail_input!("--out {} must name a file stem, e.g. --out embeddings", out.display());
    }
    if let Some(parent) = stem.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let with = |ext: &str| {
        let mut s = stem.clone().into_os_string();
        s.push(ext);
        PathBuf::from(s)
    };
    Ok((with(".jsonl"), with(".safetensors")))
}

/// Whether `a` and `b` name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A temporary sibling of `path`, renamed over it once complete, so a crash never leaves a
/// half-written output.
fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn write_jsonl(path: &Path, texts: &[String], rows: &[Vec<f32>]) -> Result<()> {
    let tmp = tmp_path(path);
    let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(file);
    for (text, row) in texts.iter().zip(rows) {
        serde_json::to_writer(&mut w, &serde_json::json!({ "text": text, "embedding": row }))?;
        w.write_all(b"\n")?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all().with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn write_safetensors(path: &Path, vectors: Tensor) -> Result<()> {
    let tmp = tmp_path(path);
    let tensors = HashMap::from([("embeddings".to_string(), vectors)]);
    candle_core::safetensors::save(&tensors, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
