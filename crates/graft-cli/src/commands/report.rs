//! `graft report`: a measurement's JSONL results grouped and summarised as Markdown, JSON and an
//! HTML page with a chart per metric.

use anyhow::Result;
use clap::Args as ClapArgs;
use graft::report::{summarize_files, summary_markdown, write_summary, Baseline, CurveSpec, SummarySpec};
use std::path::PathBuf;

/// Summarise JSONL results by group: mean ± sample std per metric, with charts.
#[derive(Debug, ClapArgs)]
#[command(after_help = "Example: graft report runs/dapt/results.jsonl --by start,labels \\\n    \
--metric rouge1 --metric eval_loss --against start=base --title 'DAPT before a few-label LoRA' \\\n    \
--out reports/dapt\n       graft report runs/games-transfer/results.jsonl --by pair,method \\\n    \
--metric episodes_to_threshold --curve curve:episodes:mean_return --out reports/games\n\n\
Every line of every FILE is one JSON object (one run: the lines measurement scripts and\n\
`--json` outputs write). Rows whose --by fields have the same values form a group; a row lacking\n\
one of them is left out and counted. Each metric (a numeric field; dotted paths reach into\n\
objects, as in `loss.domain`) gets its mean, sample standard deviation, range and values per\n\
group; `null` counts as no value. Without --metric, every numeric field except the --by fields\n\
and `seed` is summarised. With --against FIELD=VALUE, each group is also compared with the group\n\
that has FIELD = VALUE and the same other --by values: run minus baseline run, paired by\n\
--pair-on (default `seed`), summarised the same way. Writes OUT/report.md, OUT/report.json\n\
and OUT/report.html (the tables and one chart per metric: bars at the mean, whiskers at ± std,\n\
dots at the single values) and prints the Markdown tables. With --curve FIELD:X:Y, rows whose\n\
FIELD is an array of points (objects with numbers at X and Y) get each group's mean curve, point\n\
by point, in report.json and drawn in report.html with a ± std band: one chart per value of the\n\
first --by field when there are several, a line per group. With --x FIELD (a numeric --by field),\n\
every metric is also drawn against it: a line per combination of the other --by fields through\n\
the group means, on a log axis when the values span two orders of magnitude.")]
pub struct Args {
    /// JSONL results files, read in order.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Fields that name a group, comma-separated or repeated (dotted paths allowed).
    #[arg(long, value_delimiter = ',', default_value = "name")]
    by: Vec<String>,
    /// Numeric fields to summarise, comma-separated or repeated (default: every numeric field).
    #[arg(long = "metric", value_delimiter = ',')]
    metrics: Vec<String>,
    /// Also report each group's differences from a baseline group, run by run: FIELD=VALUE
    /// names a --by field and its value in the baseline groups (`start=base`).
    #[arg(long, value_name = "FIELD=VALUE")]
    against: Option<String>,
    /// The field that pairs a run with its baseline run for --against.
    #[arg(long, default_value = "seed")]
    pair_on: String,
    /// The report's heading.
    #[arg(long, default_value = "Results")]
    title: String,
    /// Folder for report.md, report.json and report.html.
    #[arg(long, default_value = "report")]
    out: PathBuf,
    /// A learning curve to average per group and draw: FIELD:X:Y (an array field, its points'
    /// x and y keys), repeatable.
    #[arg(long = "curve", value_name = "FIELD:X:Y")]
    curves: Vec<CurveSpec>,
    /// A numeric --by field to draw every metric against: a line per combination of the other
    /// --by fields through the groups' means (a label-efficiency curve over a label fraction).
    #[arg(long, value_name = "FIELD")]
    x: Option<String>,
    /// Print the summary as one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// Runs `graft report`.
pub fn run(args: Args) -> Result<()> {
    let against = match args.against {
        None => None,
        Some(a) => match a.split_once('=') {
            Some((field, value)) if !field.is_empty() => {
                Some(Baseline { field: field.to_string(), value: value.to_string(), pair_on: args.pair_on })
            }
            _ => super::bail_input!("--against wants FIELD=VALUE (a --by field and its baseline value), got `{a}`"),
        },
    };
    let spec = SummarySpec {
        title: args.title,
        group_by: args.by,
        metrics: args.metrics,
        against,
        curves: args.curves,
        x: args.x,
    };
    let summary = summarize_files(&args.files, &spec)?;
    let files = write_summary(&summary, &args.out)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print!("{}", summary_markdown(&summary));
    }
    eprintln!("wrote {}, {} and {}", files.markdown.display(), files.json.display(), files.html.display());
    Ok(())
}
