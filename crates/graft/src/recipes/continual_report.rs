//! The Markdown report of `graft continual` (`output.dir/report.md`): one overview table of
//! the methods, then each method's score matrix.

use super::continual::ContinualSummary;
use std::fmt::Write;

/// A score, or a dash for a metric that does not exist (T = 1, or the `multitask` row).
fn cell(x: Option<f64>) -> String {
    x.map_or_else(|| "—".into(), |x| format!("{x:.4}"))
}

/// The report of `summary`.
pub fn markdown(summary: &ContinualSummary) -> String {
    let mut s = String::from("# Continual learning\n\nTasks, in training order (score; base model's score):\n\n");
    for (i, t) in summary.tasks.iter().enumerate() {
        let _ = writeln!(s, "{}. `{}` ({}; base {:.4})", i + 1, t.name, t.score.name(), t.base);
    }
    s.push_str("\n| method | average final score | average forgetting | BWT | FWT |\n|---|---|---|---|---|\n");
    for m in &summary.methods {
        let metric = |f: fn(&crate::continual::ContinualMetrics) -> Option<f64>| cell(m.metrics.as_ref().and_then(f));
        let _ = writeln!(
            s,
            "| {} | {:.4} | {} | {} | {} |",
            m.method.name(),
            m.average_final,
            metric(|x| x.average_forgetting),
            metric(|x| x.bwt),
            metric(|x| x.fwt)
        );
    }
    s.push_str(
        "\nForgetting is positive when a task got worse (for a loss: it rose). BWT and FWT are \
         differences of raw scores: for a loss, a negative BWT is an improvement.\n",
    );
    let names: Vec<&str> = summary.tasks.iter().map(|t| t.name.as_str()).collect();
    for m in &summary.methods {
        let _ = write!(
            s,
            "\n## {}\n\n| after | {} |\n|---|{}\n",
            m.method.name(),
            names.join(" | "),
            "---|".repeat(names.len())
        );
        for (j, row) in m.r.iter().enumerate() {
            let after =
                if m.r.len() == 1 && names.len() > 1 { "all tasks".to_string() } else { format!("`{}`", names[j]) };
            let cells: Vec<String> = row.iter().map(|x| format!("{x:.4}")).collect();
            let _ = writeln!(s, "| {after} | {} |", cells.join(" | "));
        }
    }
    s
}
