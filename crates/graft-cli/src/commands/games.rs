//! `graft games`: agents for game variants. `train` learns a variant with PPO and measures its
//! learning curve; `render` plays a trained policy into an animated PNG.

use super::run_args::RunArgs;
use super::train::with_progress_in;
use anyhow::Result;
use clap::{Args, Subcommand};
use graft::games::policy::PolicyNet;
use graft::recipes::games::{play, GamesConfig, GamesSummary, POLICY_FILE};
use std::path::PathBuf;

/// Agents for game variants (docs/games.md).
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  graft games train configs/games-cartpole.toml\n  \
graft games render runs/cartpole --out cartpole.png")]
pub struct GamesArgs {
    #[command(subcommand)]
    command: GamesCommand,
}

#[derive(Debug, Subcommand)]
enum GamesCommand {
    /// Learn a game variant with PPO; measure the return of the first rollout, the episodes to
    /// the goal, the area under the learning curve and the final return.
    Train(TrainArgs),
    /// Play one episode of a trained policy and write its frames as an animated PNG.
    Render(RenderArgs),
}

/// Trains a PPO agent on the config's `[env]` (checkpoints, `metrics.jsonl`, `rollouts.jsonl`,
/// `policy.safetensors` and `summary.json` in output.dir) and prints its learning summary.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  graft games train configs/games-cartpole.toml\n  \
graft games train configs/games-cartpole.toml --set env.gravity=15.0 --set output.dir=\"runs/heavy\" --json\n\n\
with games-cartpole.toml:\n  \
[env]\n  kind = \"cartpole\"     # or acrobot, gridworld\n  pole_length = 0.5\n\n  \
[ppo]\n  updates = 60\n  seed = 1\n\n  \
[output]\n  dir = \"runs/cartpole\"")]
pub struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
}

/// Plays episode N of a trained run's variant with its policy (its most likely action at every
/// step unless --sample) and writes every K-th frame as an animated PNG.
#[derive(Debug, Args)]
#[command(after_help = "Example:\n  graft games render runs/cartpole --out cartpole.png --every 4")]
pub struct RenderArgs {
    /// A `graft games train` output folder (its summary.json and policy.safetensors).
    run: PathBuf,
    /// The animated PNG to write.
    #[arg(long)]
    out: PathBuf,
    /// The episode of the variant's seeded series to play.
    #[arg(long, default_value_t = 0)]
    episode: u64,
    /// Keep every K-th frame (and the first and last).
    #[arg(long, default_value_t = 2)]
    every: usize,
    /// Milliseconds each frame is shown.
    #[arg(long, default_value_t = 40)]
    delay_ms: u16,
    /// Sample actions from the policy instead of taking the most likely one.
    #[arg(long)]
    sample: bool,
    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `graft games`.
pub fn run(args: GamesArgs) -> Result<()> {
    match args.command {
        GamesCommand::Train(a) => train(a),
        GamesCommand::Render(a) => render(a),
    }
}

fn train(args: TrainArgs) -> Result<()> {
    let mut overrides = args.run.overrides.clone();
    if let Some(device) = &args.run.device {
        overrides.push(format!("model.device={device}"));
    }
    let cfg = GamesConfig::load(&args.run.config, &overrides)?;
    let summary =
        with_progress_in("transitions/s", |on_event| graft::recipes::games::run(&cfg, args.run.resume, on_event))?;
    if args.run.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let reached = match (summary.episodes_to_threshold, summary.steps_to_threshold) {
            (Some(e), Some(s)) => format!("reached {} after {e} episodes ({s} steps)", summary.threshold),
            _ => format!("did not reach {}", summary.threshold),
        };
        println!(
            "{}: return {:.1} -> {:.1} over {} updates ({} episodes, {} steps); {reached}; mean return over training {:.1}",
            summary.env,
            summary.first_return,
            summary.final_return,
            summary.updates,
            summary.episodes,
            summary.steps,
            summary.auc
        );
        println!("policy in {}", summary.policy.display());
    }
    Ok(())
}

fn render(args: RenderArgs) -> Result<()> {
    if args.every == 0 {
        super::bail_input!("--every must be at least 1");
    }
    let summary_path = args.run.join("summary.json");
    let text = std::fs::read_to_string(&summary_path).map_err(|e| {
        graft::GraftError::Input(format!("{}: {e}: is it a `graft games train` folder?", summary_path.display()))
    })?;
    let summary: GamesSummary = serde_json::from_str(&text)
        .map_err(|e| graft::GraftError::Input(format!("{}: {e}", summary_path.display())))?;
    let policy = PolicyNet::load(&args.run.join(POLICY_FILE), &candle_core::Device::Cpu)?;
    let played = play(&summary.spec, 0, &policy, args.episode, !args.sample, args.every)?;
    graft::games::render::write_apng(&played.frames, args.delay_ms, &args.out)?;
    if args.json {
        let out = serde_json::json!({
            "env": summary.env, "episode": args.episode, "return": played.episode_return,
            "length": played.length, "frames": played.frames.len(), "out": args.out,
        });
        println!("{out}");
    } else {
        println!(
            "{} episode {}: return {:.1} in {} steps; {} frames in {}",
            summary.env,
            args.episode,
            played.episode_return,
            played.length,
            played.frames.len(),
            args.out.display()
        );
    }
    Ok(())
}
