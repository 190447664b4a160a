//! `graft compare`: one task, several transfer techniques, one table.
//!
//! Every technique starts from the same pretrained model (or, for `scratch`, its architecture),
//! sees the same train split and is scored on the same held-out examples, so the table says what
//! each technique buys over the base model and over training from scratch. The report (Markdown,
//! JSON, HTML with plots) is rewritten after every technique, so an interrupted comparison keeps
//! what it finished.

pub mod config;
mod decoder;
mod probes;

pub use config::{is_compare_config, CompareConfig, Technique};

use crate::assets::{self, resolve_model, ModelSource};
use crate::datasets::tweets::{self, Tweet, LABELS};
use crate::eval::classification::{self, ClassificationReport};
use crate::recipes::finetune::Event;
use crate::report::{self, CompareReport, CurvePoint, ReportFiles, TechniqueResult};
use crate::tokenizer::Tokenizer;
use crate::{GraftError, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What every technique shares: the config, the model source and tokenizer, the held-out set.
struct Context<'a> {
    cfg: &'a CompareConfig,
    source: ModelSource,
    tok: Tokenizer,
    test: Vec<Tweet>,
    /// `test.jsonl` in chat-messages form (the training runs' held-out loss).
    test_jsonl: PathBuf,
    /// Run techniques again even when a result of the same settings exists.
    rerun: bool,
}

impl Context<'_> {
    fn test_texts(&self) -> Vec<String> {
        self.test.iter().map(|t| t.text.clone()).collect()
    }

    fn gold(&self) -> Vec<usize> {
        self.test.iter().map(|t| t.label).collect()
    }

    fn score(&self, pred: &[usize]) -> ClassificationReport {
        classification::report(&self.gold(), pred, &LABELS)
    }
}

/// Runs the comparison `cfg` describes, reporting progress through `on_event`; writes
/// `compare.md`, `compare.json` and `report.html` into `cfg.output.dir`.
///
/// A technique whose folder already holds a result of the same settings (same task, model,
/// prompt, budget and train share — see [`fingerprint`]) is not run again unless `rerun`: an
/// interrupted comparison continues where it stopped.
pub fn run(cfg: &CompareConfig, rerun: bool, on_event: &mut dyn FnMut(Event)) -> Result<(CompareReport, ReportFiles)> {
    cfg.validate()?;
    let out = cfg.output.dir.clone();
    std::fs::create_dir_all(&out).map_err(|e| GraftError::io(&out, e))?;
    on_event(Event::Note(format!("fetching the model `{}` and the tweet sentiment corpus", cfg.model.name)));
    let source = resolve_model(&cfg.model.name, false)?;
    let corpus = assets::ensure("tweets", false)?;
    let all = tweets::read(&corpus)?;
    let (train, test) = tweets::split(&all, cfg.task.n_train, cfg.task.n_test, cfg.task.seed);
    if train.is_empty() {
        return Err(GraftError::Input(format!(
            "the corpus has {} tweets: none left for training after {} held out",
            all.len(),
            test.len()
        )));
    }
    let tok = Tokenizer::from_source(&source)?;
    refuse_unsaveable(cfg, &source)?;
    let test_jsonl = out.join("data").join("test.jsonl");
    decoder::write_task_jsonl(&test_jsonl, &cfg.prompt, crate::prompting::training_format(&tok), &test)?;
    let ctx = Context { cfg, tok, source, test, test_jsonl, rerun };

    let mut report = CompareReport {
        task: "sentiment".into(),
        model: cfg.model.name.clone(),
        n_train: train.len(),
        n_test: ctx.test.len(),
        labels: LABELS.iter().map(|l| l.to_string()).collect(),
        rows: Vec::new(),
        learning_curve: Vec::new(),
    };
    let total = cfg.techniques.len();
    for (i, &t) in cfg.techniques.iter().enumerate() {
        on_event(Event::Note(format!(
            "[{}/{total}] {} on {} train / {} held-out tweets",
            i + 1,
            t.name(),
            train.len(),
            ctx.test.len()
        )));
        let row = run_technique(&ctx, t, &train, &out.join(t.name()), on_event)?;
        on_event(Event::Note(format!("{}: accuracy {:.3}, macro-F1 {:.3}", t.name(), row.accuracy, row.macro_f1)));
        report.rows.push(row);
        report::write_report(&report, &out)?;
    }

    for &fraction in &cfg.learning_curve.fractions {
        let n = ((train.len() as f64 * fraction).round() as usize).clamp(1, train.len());
        for &t in &cfg.learning_curve.techniques {
            // The full split was already run as a table row with the same data and budget.
            let done = report.rows.iter().find(|r| r.technique == t.name() && n == train.len());
            let (accuracy, macro_f1) = match done {
                Some(r) => (r.accuracy, r.macro_f1),
                None => {
                    on_event(Event::Note(format!(
                        "learning curve: {} on {n} train tweets ({:.0}%)",
                        t.name(),
                        fraction * 100.0
                    )));
                    let dir = out.join("curve").join(format!("{}-{n}", t.name()));
                    let row = run_technique(&ctx, t, &train[..n], &dir, on_event)?;
                    (row.accuracy, row.macro_f1)
                }
            };
            report.learning_curve.push(CurvePoint {
                technique: t.name().into(),
                fraction,
                n_train: n,
                accuracy,
                macro_f1,
            });
            report::write_report(&report, &out)?;
        }
    }
    let files = report::write_report(&report, &out)?;
    Ok((report, files))
}

/// The labels no example of `train` has (a small learning-curve share can miss a class).
fn classes_without_examples(train: &[Tweet]) -> Vec<&'static str> {
    (0..LABELS.len()).filter(|&c| !train.iter().any(|x| x.label == c)).map(|c| LABELS[c]).collect()
}

/// Runs one technique on `train` (a prefix of the shuffled train split), with its files in `dir`.
fn run_technique(
    ctx: &Context,
    t: Technique,
    train: &[Tweet],
    dir: &Path,
    on_event: &mut dyn FnMut(Event),
) -> Result<TechniqueResult> {
    std::fs::create_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
    let print = fingerprint(ctx.cfg, t, train.len())?;
    let (result_path, print_path) = (dir.join("result.json"), dir.join("settings.sha256"));
    if !ctx.rerun && std::fs::read_to_string(&print_path).is_ok_and(|p| p.trim() == print) {
        if let Some(row) =
            std::fs::read_to_string(&result_path).ok().and_then(|s| serde_json::from_str::<TechniqueResult>(&s).ok())
        {
            on_event(Event::Note(format!(
                "{}: reusing the result in {} (same settings; --rerun runs it again)",
                t.name(),
                dir.display()
            )));
            return Ok(row);
        }
    }
    let _ = std::fs::remove_file(&print_path);
    crate::bench::memory::reset_peak_rss();
    let started = Instant::now();
    let mut row = match t {
        Technique::ZeroShot | Technique::FewShot => decoder::prompting(ctx, t, train)?,
        Technique::SoftPrompt | Technique::Prefix | Technique::Lora | Technique::Full | Technique::Scratch => {
            decoder::fine_tune(ctx, t, train, dir, on_event)?
        }
        Technique::LinearProbe | Technique::DecoderHead | Technique::EncoderProbe => {
            probes::run(ctx, t, train, dir, on_event)?
        }
    };
    // The run finished and its adapter / model / head is written: its checkpoint (weights plus
    // optimizer moments, three model sizes for full training) is only needed to resume, so it goes.
    let checkpoints = dir.join("checkpoints");
    if checkpoints.is_dir() {
        std::fs::remove_dir_all(&checkpoints).map_err(|e| GraftError::io(&checkpoints, e))?;
    }
    row.peak_rss_mb = crate::bench::memory::peak_rss_bytes().map(|b| b as f64 / 1e6);
    let missing = classes_without_examples(train);
    if t.trains() && !missing.is_empty() {
        let note = format!("no training example of {}", missing.join(", "));
        on_event(Event::Note(format!("warning: {}: {note}; such a class is only predicted by chance", t.name())));
        row.description = format!("{} ({note})", row.description);
    }
    tracing::debug!(technique = t.name(), secs = started.elapsed().as_secs_f64(), "technique finished");
    std::fs::write(&result_path, serde_json::to_string_pretty(&row)?).map_err(|e| GraftError::io(&result_path, e))?;
    std::fs::write(&print_path, &print).map_err(|e| GraftError::io(&print_path, e))?;
    Ok(row)
}

/// A digest of everything that decides technique `t`'s result on `n_train` examples: the task,
/// model and prompt, plus the section of the config that technique reads (`few_shot`, `probe` or
/// `train`). The technique list, the learning curve and the output folder do not enter.
pub fn fingerprint(cfg: &CompareConfig, t: Technique, n_train: usize) -> Result<String> {
    use sha2::{Digest, Sha256};
    let own = match t {
        Technique::ZeroShot => serde_json::Value::Null,
        Technique::FewShot => serde_json::to_value(&cfg.few_shot)?,
        Technique::LinearProbe | Technique::DecoderHead | Technique::EncoderProbe => serde_json::to_value(&cfg.probe)?,
        Technique::SoftPrompt | Technique::Prefix | Technique::Lora | Technique::Full | Technique::Scratch => {
            serde_json::to_value(&cfg.train)?
        }
    };
    let settings = serde_json::json!({
        "technique": t.name(),
        "n_train": n_train,
        "task": cfg.task,
        "model": cfg.model,
        "prompt": cfg.prompt,
        "own": own,
    });
    Ok(hex::encode(Sha256::digest(serde_json::to_string(&settings)?.as_bytes())))
}

/// Refuses, before anything runs, techniques whose trained model graft cannot write for the
/// model's family: `full` and `scratch` train every weight and save the model, and the writers
/// know the Llama layout only (Gemma 3).
fn refuse_unsaveable(cfg: &CompareConfig, source: &crate::assets::ModelSource) -> Result<()> {
    let whole: Vec<&str> =
        cfg.techniques.iter().filter(|t| matches!(t, Technique::Full | Technique::Scratch)).map(|t| t.name()).collect();
    if whole.is_empty() {
        return Ok(());
    }
    let family = crate::models::load::read_config_of(source)?;
    family
        .require_llama("saving a fully trained model")
        .map_err(|e| GraftError::Input(format!("techniques {}: {e}; leave them out of `techniques`", whole.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_follows_the_settings_that_matter() {
        let cfg = CompareConfig::default().resolved().unwrap();
        let base = fingerprint(&cfg, Technique::Lora, 100).unwrap();
        assert_eq!(base, fingerprint(&cfg, Technique::Lora, 100).unwrap());
        assert_ne!(base, fingerprint(&cfg, Technique::Full, 100).unwrap());
        assert_ne!(base, fingerprint(&cfg, Technique::Lora, 10).unwrap());
        let mut other = cfg.clone();
        other.train.lr.lora = 2e-3;
        assert_ne!(base, fingerprint(&other, Technique::Lora, 100).unwrap());
        // A section the technique does not read does not change its digest.
        assert_eq!(
            fingerprint(&cfg, Technique::ZeroShot, 100).unwrap(),
            fingerprint(&other, Technique::ZeroShot, 100).unwrap()
        );
        other.few_shot.k = 5;
        assert_ne!(
            fingerprint(&cfg, Technique::FewShot, 100).unwrap(),
            fingerprint(&other, Technique::FewShot, 100).unwrap()
        );
        // The technique list, the curve and the output folder do not change a result.
        other = cfg.clone();
        other.techniques = vec![Technique::Lora];
        other.output.dir = "elsewhere".into();
        other.learning_curve.fractions = vec![0.5];
        assert_eq!(base, fingerprint(&other, Technique::Lora, 100).unwrap());
    }

    #[test]
    fn reports_classes_missing_from_a_small_share() {
        let t = |label| Tweet { text: "x".into(), label };
        assert_eq!(classes_without_examples(&[t(0), t(2), t(0)]), vec!["neutral"]);
        assert!(classes_without_examples(&[t(0), t(1), t(2)]).is_empty());
    }
}
