//! `graft meta`: few-shot learning on episodes — prototypical networks, ANIL and the MAML family
//! meta-trained on a frozen sentence encoder's embeddings, scored beside the frozen-feature
//! baselines.

use super::train::with_progress;
use anyhow::Result;
use clap::Args as ClapArgs;
use graft::recipes::meta::config::MetaConfig;
use graft::recipes::meta::results_table;
use std::path::PathBuf;

/// Meta-train and evaluate few-shot learners on N-way K-shot episodes (docs/meta-learning.md):
/// the dataset's classes are dealt into meta-train / meta-val / meta-test, a prototypical network,
/// ANIL and the enabled MAML family (first-order MAML, MAML, Reptile) are meta-trained on
/// meta-train episodes (checkpoints and `--resume` under output.dir/LEARNER), and they are scored with the nearest-centroid and linear-head baselines on the same meta-test
/// episodes: mean accuracy ± 95 % confidence interval. With [decoder], the learners inside the
/// decoder (LoRA ProtoNet, ANIL and the MAML family on LoRA adapters) can join them;
/// baselines.fine_tune adds the whole-backbone baseline. Writes output.dir/summary.json.
#[derive(Debug, ClapArgs)]
#[command(after_help = "Examples:\n  graft meta configs/meta-appstream.toml\n  \
graft meta configs/meta-appstream.toml --set episodes.k_shot=1 --set output.dir=runs/meta-1shot --json\n  \
graft meta configs/meta-appstream.toml --resume\n\n\
with a config such as:\n  \
[data]\n  source = \"appstream\"        # or a JSONL file of {\"text\": ..., \"label\": ...} lines\n  \
min_class_size = 20\n\n  \
[episodes]\n  n_way = 5\n  k_shot = 5\n  q_query = 15\n\n  \
[protonet]\n  steps = 300\n\n  \
[maml]\n  enabled = true\n  inner = { steps = 5, lr = 0.5, adapt = \"all\" }\n\n  \
[eval]\n  episodes = 600\n\n  \
[output]\n  dir = \"runs/meta-appstream\"")]
pub struct Args {
    /// The run's config, a TOML file: [data], [episodes], [backbone], [decoder], [protonet],
    /// [anil], [fomaml], [maml], [reptile], [lora_protonet], [lora_anil], [lora_fomaml],
    /// [lora_maml], [lora_reptile], [baselines], [eval], [output].
    config: PathBuf,
    /// Override one config key: section.key=value (TOML value syntax). Repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    overrides: Vec<String>,
    /// Continue the meta-training from its newest checkpoint (the settings must match) and the
    /// scoring from the episodes already scored (output.dir/scores).
    #[arg(long)]
    resume: bool,
    /// Device of the encoder and the learners: `cpu`, `cuda` or `cuda:N` (the same as
    /// `--set backbone.device=...`).
    #[arg(long)]
    device: Option<String>,
    /// Print the run summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `graft meta`.
pub fn run(args: Args) -> Result<()> {
    let mut overrides = args.overrides.clone();
    if let Some(device) = &args.device {
        overrides.push(format!("backbone.device={device}"));
    }
    let cfg = MetaConfig::load(&args.config, &overrides)?;
    let summary = with_progress(|on_event| graft::recipes::meta::run(&cfg, args.resume, on_event))?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("{}", results_table(&summary));
        let m = &summary.meta_train;
        println!(
            "protonet: {} steps ({} episodes) in {:.1}s, {} parameters; summary in {}",
            m.steps,
            m.episodes,
            m.wall_time_s,
            m.trainable_params,
            cfg.output.dir.join("summary.json").display()
        );
    }
    Ok(())
}
