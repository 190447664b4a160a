//! `graft report`: a measurement's JSONL results grouped and summarised as Markdown, JSON and an
//! HTML page with a chart per metric.

use anyhow::Result;
use clap::Args as ClapArgs;
use graft::report::{summarize_files, summary_markdown, write_summary, Baseline, SummarySpec};
use std::path::PathBuf;

/// Summarise JSONL results by group: mean ± sample std per metric, with charts.
#[derive(Debug, ClapArgs)]
#[command(after_help = "Example: graft report runs/dapt/results.jsonl --by start,labels \\\n    \
--metric rouge1 --metric eval_loss --against start=base --title 'DAPT before a few-label LoRA' \\\n    \
--out reports/dapt\n\n\
Every line of every FILE is one JSON object (one run: the lines measurement scripts and\n\
`--json` outputs write). Rows whose --by fields have the same values form a group; a row lacking\n\
one of them is left out and counted. Each metric (a numeric field; dotted paths reach into\n\
objects, as in `loss.domain`) gets its mean, sample standard deviation, range and values per\n\
group; `null` counts as no value. Without --metric, every numeric field except the --by fields\n\
and `seed` is summarised. With --against FIELD=VALUE, each group is also compared with the group\n\
that has FIELD = VALUE and the same other --by values: run minus baseline run, paired by\n\
--pair-on (default `seed`), summarised the same way. Writes OUT/report.md, OUT/report.json\n\
and OUT/report.html (the tables and one chart per metric: bars at the mean, whiskers at ± std,\n\
dots at the single values) and prints the Markdown tables.")]
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
    let spec = SummarySpec { title: args.title, group_by: args.by, metrics: args.metrics, against };
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
