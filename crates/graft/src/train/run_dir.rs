//! A run directory: held under an exclusive lock for the life of the run, it keeps the
//! checkpoints and `metrics.jsonl` of the [`Trainer`](super::trainer::Trainer), and a resumed
//! run picks up from its newest good checkpoint when the settings still match.

use super::checkpoint::{self, LoopState};
use super::events::{Event, StepRecord};
use super::optim::Optimizer;
use crate::{GraftError, Result};
use candle_core::Var;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// Checkpoints kept in a run directory (the newest and the one before, for a damaged newest).
const KEEP_CHECKPOINTS: usize = 2;

/// Says which settings differ between a checkpoint's (`saved`) and this run's (empty: it may
/// resume).
pub type SettingsCheck = Box<dyn Fn(&str) -> Result<Vec<String>>>;

/// Where a training run keeps its files, and whether it continues from them.
pub struct RunDir {
    path: PathBuf,
    _lock: File,
    resume: bool,
    save_every: u64,
    settings: String,
    differing: SettingsCheck,
    on_accept: Option<(String, String)>,
}

impl RunDir {
    /// Creates and locks `path` for this run: a second run into the same directory is refused
    /// while this one lives. `resume` continues from the newest good checkpoint; `save_every`
    /// writes a checkpoint every N steps (0 = only at the end).
    pub fn open(path: &Path, resume: bool, save_every: u64) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| GraftError::io(path, e))?;
        let lock_path = path.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| GraftError::io(&lock_path, e))?;
        if file.try_lock().is_err() {
            return Err(GraftError::RunDirLocked { path: path.to_path_buf() });
        }
        Ok(Self {
            path: path.to_path_buf(),
            _lock: file,
            resume,
            save_every,
            settings: String::new(),
            differing: Box::new(|_| Ok(Vec::new())),
            on_accept: None,
        })
    }

    /// Records the run's `settings` (kept in every checkpoint) and how a resume compares them
    /// with a checkpoint's; [`RunDir::same_text`] wants them equal.
    pub fn with_settings(mut self, settings: String, differing: SettingsCheck) -> Self {
        self.settings = settings;
        self.differing = differing;
        self
    }

    /// Writes `text` into the file `name` of the directory once the run is accepted (a fresh
    /// start, or a resume whose settings match): a refused resume leaves the file as it was.
    pub fn writing_on_accept(mut self, name: &str, text: String) -> Self {
        self.on_accept = Some((name.to_string(), text));
        self
    }

    /// Writes the file of [`RunDir::writing_on_accept`], if any.
    fn accepted(&self) -> Result<()> {
        if let Some((name, text)) = &self.on_accept {
            let path = self.path.join(name);
            std::fs::write(&path, text).map_err(|e| GraftError::io(&path, e))?;
        }
        Ok(())
    }

    /// A check that refuses a resume unless the checkpoint's settings equal `settings`.
    pub fn same_text(settings: &str) -> SettingsCheck {
        let now = settings.to_string();
        Box::new(move |saved| Ok(if saved == now { Vec::new() } else { vec!["settings".into()] }))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a checkpoint is due after `step` (the last step always gets one).
    pub(crate) fn save_due(&self, step: u64, total: u64) -> bool {
        self.save_every > 0 && step.is_multiple_of(self.save_every) && step < total
    }

    /// The loop state to start from and the step records logged up to it: a fresh state (and
    /// an emptied `metrics.jsonl`), or, on resume, the newest good checkpoint's weights and
    /// optimizer state loaded into `optimizer` and its saved `buffers` into those.
    pub(crate) fn start(
        &self,
        optimizer: &mut Optimizer,
        buffers: &[(String, Var)],
        on_event: &mut dyn FnMut(Event),
    ) -> Result<(LoopState, Vec<StepRecord>)> {
        let metrics = self.metrics_path();
        if !self.resume {
            // A fresh run replaces earlier metrics.
            let _ = std::fs::remove_file(&metrics);
            self.accepted()?;
            return Ok((LoopState::start(self.settings.clone()), Vec::new()));
        }
        let device = match optimizer.params().first() {
            Some((_, v)) => v.device().clone(),
            None => return Err(GraftError::Input("nothing to train: the objective has no variables".into())),
        };
        let out = &self.path;
        let ckpt = checkpoint::load_latest(out, &device, |w| on_event(Event::Note(w)))?.ok_or_else(|| {
            checkpoint::damaged(out, "none complete to resume from (run without --resume to start over)")
        })?;
        let changed = (self.differing)(&ckpt.state.config_toml)?;
        if !changed.is_empty() {
            return Err(GraftError::Input(format!(
                "cannot resume {}: the config differs from the checkpoint's in {}",
                out.display(),
                changed.join(", ")
            )));
        }
        for (name, var) in optimizer.params().iter().chain(buffers) {
            let t = ckpt.weights.get(name).ok_or_else(|| checkpoint::damaged(&ckpt.dir, format!("lacks `{name}`")))?;
            var.set(&t.to_dtype(var.dtype())?)?;
        }
        optimizer.load_state(&ckpt.optimizer).map_err(|e| checkpoint::damaged(&ckpt.dir, e.to_string()))?;
        self.accepted()?;
        on_event(Event::Note(format!("resuming from {} (step {})", ckpt.dir.display(), ckpt.state.step)));
        let history = keep_metrics_through(&metrics, ckpt.state.step)?;
        Ok((ckpt.state, history))
    }

    /// `metrics.jsonl`, opened for appending.
    pub(crate) fn metrics_log(&self) -> Result<File> {
        let path = self.metrics_path();
        OpenOptions::new().create(true).append(true).open(&path).map_err(|e| GraftError::io(&path, e))
    }

    /// Writes `value` as pretty JSON into the file `name` of the directory.
    pub fn write_json(&self, name: &str, value: &impl serde::Serialize) -> Result<()> {
        let path = self.path.join(name);
        std::fs::write(&path, serde_json::to_string_pretty(value)?).map_err(|e| GraftError::io(&path, e))
    }

    /// The path of `metrics.jsonl`.
    pub fn metrics_path(&self) -> PathBuf {
        self.path.join("metrics.jsonl")
    }

    /// Writes a checkpoint of the optimizer's variables and state, and of `buffers`, at `state`.
    pub(crate) fn save(&self, optimizer: &Optimizer, buffers: &[(String, Var)], state: &LoopState) -> Result<()> {
        let all = optimizer.params().iter().chain(buffers);
        let weights: Vec<_> = all.map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
        checkpoint::save(&self.path, &weights, &optimizer.state()?, state, KEEP_CHECKPOINTS)?;
        Ok(())
    }
}

/// Drops the lines of `metrics.jsonl` logged after `step` (by a run killed after its last
/// checkpoint), so a resumed run's log has each step once; returns the records kept.
fn keep_metrics_through(path: &Path, step: u64) -> Result<Vec<StepRecord>> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(Vec::new()) };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .collect();
    let body: String = kept.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, body).map_err(|e| GraftError::io(path, e))?;
    Ok(kept.iter().filter_map(|l| serde_json::from_str(l).ok()).collect())
}
