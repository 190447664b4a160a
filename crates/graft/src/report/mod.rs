//! Comparing transfer techniques on one task: the result types `graft compare` fills in, and the
//! renderers that turn them into a Markdown table, a JSON file and a self-contained HTML report
//! with plots; and summaries of any measurement's JSONL results (`graft report`), rendered the
//! same way.

use serde::{Deserialize, Serialize};

mod cells;
mod curves;
mod html;
mod markdown;
mod paired;
mod plots;
mod summary;
mod summary_page;
mod write;

pub use curves::{curve_charts, CurveSpec, CurveStats, CurveSummary, GroupCurve};
pub use html::html_report;
pub use markdown::markdown_table;
pub use plots::{learning_curve_svg, loss_curves_svg, metric_bars_svg, technique_color};
pub use summary::{
    summarize_files, summary_markdown, Baseline, Differences, GroupSummary, MetricStats, ResultsSummary, SummarySpec,
};
pub use summary_page::{metric_summary_svg, summary_html, write_summary};
pub use write::{write_report, ReportFiles};

/// Everything one `graft compare` run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    /// Task name (`sentiment`, ...).
    pub task: String,
    /// The pretrained model every technique starts from (asset name or path).
    pub model: String,
    /// Training examples available to the techniques that train.
    pub n_train: usize,
    /// Held-out examples every technique is scored on.
    pub n_test: usize,
    /// Class names, in label-index order.
    pub labels: Vec<String>,
    /// One row per technique, in the order they ran.
    pub rows: Vec<TechniqueResult>,
    /// Learning-curve points (empty when the mode was off).
    pub learning_curve: Vec<CurvePoint>,
}

/// What one technique achieved and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TechniqueResult {
    /// Short name: `zero_shot`, `few_shot`, `linear_probe`, `encoder_probe`, `soft_prompt`,
    /// `prefix`, `lora`, `full`, `scratch`.
    pub technique: String,
    /// One line saying what was done (model, head, k, steps, ...).
    pub description: String,
    /// Share of held-out examples labelled correctly.
    pub accuracy: f64,
    /// Unweighted mean of per-class F1 on the held-out examples.
    pub macro_f1: f64,
    /// Parameters that were trained (0 for prompting).
    pub trainable_params: usize,
    /// Seconds spent training (0 for prompting).
    pub train_time_s: f64,
    /// Seconds spent scoring the held-out examples.
    pub eval_time_s: f64,
    /// Peak resident memory while this technique ran, MB (`None` where the OS cannot say).
    pub peak_rss_mb: Option<f64>,
    /// Training loss per optimizer step (empty for prompting).
    pub losses: Vec<LossPoint>,
}

/// One training-loss measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossPoint {
    /// Optimizer step (1-based) or, for heads trained in epochs, the epoch.
    pub step: u64,
    /// Mean loss per supervised token / example at that step.
    pub loss: f64,
}

/// One point of the learning curve: a technique trained on a fraction of the train split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Technique name, as in [`TechniqueResult::technique`].
    pub technique: String,
    /// Share of the train split used (0 < fraction <= 1).
    pub fraction: f64,
    /// Training examples that share was.
    pub n_train: usize,
    /// Held-out accuracy.
    pub accuracy: f64,
    /// Held-out macro-F1.
    pub macro_f1: f64,
}
