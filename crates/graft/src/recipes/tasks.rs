//! Summarization and question-answering tasks: build their data from AppStream metadata
//! ([`build_appstream`]) and score a model's greedy answers ([`eval_summarize`], [`eval_qa`]) with
//! ROUGE and SQuAD exact match / F1.

use crate::datasets::appstream::{self, Component, ParseReport};
use crate::datasets::task_files::{self, char_find, qa_messages, summarize_messages, Answer, QaItem, SummaryPair};
use crate::eval::rouge::{self, RougeScores};
use crate::eval::squad::{self, SquadScores};
use crate::generate::{generate_text, GenerateOptions, StopStrings};
use crate::models::Model;
use crate::tokenizer::{Message, Tokenizer};
use crate::{GraftError, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What to build from AppStream metadata.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// AppStream files to read (see [`appstream::default_files`]).
    pub sources: Vec<PathBuf>,
    /// Output folder.
    pub out: PathBuf,
    /// Most components to use (in file order, after skips); `None` = all.
    pub max: Option<usize>,
    /// Seed of the train/test split.
    pub seed: u64,
    /// Share of components (by ID hash) in the test split.
    pub test_fraction: f64,
    /// Components whose plain-text description is longer (in characters) are skipped, so
    /// prompts fit a modest training `seq_len`.
    pub max_description_chars: usize,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            out: PathBuf::from("data/appstream"),
            max: None,
            seed: 0,
            test_fraction: 0.1,
            max_description_chars: 1200,
        }
    }
}

/// What [`build_appstream`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// Files read.
    pub sources: Vec<PathBuf>,
    /// Components kept (both splits).
    pub n_components: usize,
    /// Components skipped, by reason (parse skips plus `description_too_long`).
    pub skipped: BTreeMap<String, usize>,
    /// Kept components without a `ProjectLicense` (they get no license question).
    pub n_without_license: usize,
    /// Lines written per output file name.
    pub files: BTreeMap<String, usize>,
    /// The output folder.
    pub out: PathBuf,
}

/// The summarization pair of a component: its description → its summary.
pub fn summary_pair(c: &Component) -> SummaryPair {
    SummaryPair { id: c.id.clone(), document: c.description.clone(), summary: c.summary.clone() }
}

/// The questions about a component, over the context `"{name}: {summary}. {description}
/// License: {license}."` (the license sentence only when there is one): "What is the summary of
/// {name}?" (answer: the summary) and "Which license does {name} use?" (answer: the license).
/// Every answer is checked to occur in the context at its offset.
pub fn qa_items(c: &Component) -> Result<Vec<QaItem>> {
    let mut context = format!("{}: ", c.name);
    let summary_start = context.chars().count();
    context.push_str(&c.summary);
    if !c.summary.ends_with(['.', '!', '?']) {
        context.push('.');
    }
    context.push(' ');
    context.push_str(&c.description.replace('\n', " "));
    let mut license_start = None;
    if let Some(license) = &c.license {
        context.push_str(" License: ");
        license_start = Some(context.chars().count());
        context.push_str(license);
        context.push('.');
    }
    let mut items = vec![QaItem {
        id: format!("{}#summary", c.id),
        context: context.clone(),
        question: format!("What is the summary of {}?", c.name),
        answers: vec![Answer { text: c.summary.clone(), start: summary_start }],
    }];
    if let (Some(license), Some(start)) = (&c.license, license_start) {
        items.push(QaItem {
            id: format!("{}#license", c.id),
            context,
            question: format!("Which license does {} use?", c.name),
            answers: vec![Answer { text: license.clone(), start }],
        });
    }
    for item in &items {
        item.check()
            .map_err(|why| GraftError::Input(format!("component {}: question `{}`: {why}", c.id, item.question)))?;
    }
    Ok(items)
}

/// Reads the AppStream files and writes, into `opts.out`:
/// `summarize.{train,test}.jsonl` (`messages` format), `qa.{train,test}.jsonl` (SQuAD-style) and
/// `qa.{train,test}.messages.jsonl` (the same questions in `messages` format: train with
/// `graft train`, hold out with a run's `eval`).
pub fn build_appstream(opts: &BuildOptions, on_note: &mut dyn FnMut(String)) -> Result<BuildReport> {
    if !(0.0..=1.0).contains(&opts.test_fraction) {
        return Err(GraftError::Input(format!("test fraction {} must be within 0..=1", opts.test_fraction)));
    }
    if opts.sources.is_empty() {
        return Err(GraftError::Input("no AppStream file given".into()));
    }
    let mut parsed = ParseReport::default();
    let mut components = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for source in &opts.sources {
        on_note(format!("reading {}", source.display()));
        let (comps, report) = appstream::read(source)?;
        on_note(format!("{}: {} components, {} skipped", source.display(), report.n_components, report.n_skipped()));
        for (k, v) in report.skipped {
            *parsed.skipped.entry(k).or_default() += v;
        }
        for c in comps {
            if seen.insert(c.id.clone()) {
                components.push(c);
            } else {
                *parsed.skipped.entry("duplicate_id".into()).or_default() += 1;
            }
        }
    }
    let mut skipped = parsed.skipped;
    let before = components.len();
    components.retain(|c| c.description.chars().count() <= opts.max_description_chars);
    if before > components.len() {
        skipped.insert("description_too_long".into(), before - components.len());
    }
    if let Some(max) = opts.max {
        components.truncate(max);
    }
    if components.is_empty() {
        return Err(GraftError::Input("no usable AppStream components (every one was skipped)".into()));
    }
    let (test, train): (Vec<&Component>, Vec<&Component>) =
        components.iter().partition(|c| appstream::is_test(&c.id, opts.seed, opts.test_fraction));
    std::fs::create_dir_all(&opts.out).map_err(|e| GraftError::io(&opts.out, e))?;
    let mut files = BTreeMap::new();
    let mut write = |name: &str, lines: Vec<serde_json::Value>| -> Result<()> {
        let n = task_files::write_jsonl(&opts.out.join(name), lines)?;
        files.insert(name.to_string(), n);
        Ok(())
    };
    for (split, comps) in [("train", &train), ("test", &test)] {
        write(&format!("summarize.{split}.jsonl"), comps.iter().map(|c| summary_pair(c).to_messages_json()).collect())?;
        let qa: Vec<QaItem> =
            comps.iter().map(|c| qa_items(c)).collect::<Result<Vec<_>>>()?.into_iter().flatten().collect();
        write(&format!("qa.{split}.jsonl"), qa.iter().map(QaItem::to_json).collect())?;
        write(&format!("qa.{split}.messages.jsonl"), qa.iter().map(QaItem::to_messages_json).collect())?;
    }
    Ok(BuildReport {
        sources: opts.sources.clone(),
        n_components: components.len(),
        skipped,
        n_without_license: components.iter().filter(|c| c.license.is_none()).count(),
        files,
        out: opts.out.clone(),
    })
}

/// Greedy generation for each prompt, up to the end of the assistant turn (EOS) or
/// `max_new_tokens`; `on_progress(done, total)` after each.
pub fn greedy_answers(
    model: &dyn Model,
    tok: &Tokenizer,
    prompts: &[Vec<Message>],
    max_new_tokens: usize,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<String>> {
    let opts =
        GenerateOptions { max_new_tokens, eos_ids: tok.eos_id().into_iter().collect(), ..GenerateOptions::default() };
    let detok = |ids: &[u32]| tok.decode(ids, true).map_err(GraftError::from);
    let stops = StopStrings::new(Vec::new())?;
    let mut out = Vec::with_capacity(prompts.len());
    for (i, messages) in prompts.iter().enumerate() {
        let ids = crate::data::prompt_ids(tok, messages)?;
        let g = generate_text(model, &detok, &ids, &opts, &stops, &mut |_| Ok(()))?;
        out.push(g.text.trim().to_string());
        on_progress(i + 1, prompts.len());
    }
    Ok(out)
}

/// One scored example, for reports.
#[derive(Debug, Clone, Serialize)]
pub struct TaskSample {
    /// The example's id.
    pub id: String,
    /// What the model generated.
    pub prediction: String,
    /// The reference (the first gold answer for QA).
    pub reference: String,
}

/// Mean ROUGE F1 of greedy summaries.
#[derive(Debug, Clone, Serialize)]
pub struct SummarizeScores {
    /// Examples scored.
    pub n: usize,
    /// Mean ROUGE-1 F1.
    pub rouge1: f64,
    /// Mean ROUGE-2 F1.
    pub rouge2: f64,
    /// Mean ROUGE-L F1.
    #[serde(rename = "rougeL")]
    pub rouge_l: f64,
    /// Every example's prediction and reference.
    pub samples: Vec<TaskSample>,
}

/// Summarizes each pair's document greedily and scores it against the reference summary.
pub fn eval_summarize(
    model: &dyn Model,
    tok: &Tokenizer,
    pairs: &[SummaryPair],
    max_new_tokens: usize,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<SummarizeScores> {
    if pairs.is_empty() {
        return Err(GraftError::Input("no summarization pairs to evaluate".into()));
    }
    let prompts: Vec<Vec<Message>> = pairs.iter().map(|p| summarize_messages(&p.document)).collect();
    let preds = greedy_answers(model, tok, &prompts, max_new_tokens, on_progress)?;
    let scores: Vec<RougeScores> = preds.iter().zip(pairs).map(|(p, r)| rouge::rouge(p, &r.summary)).collect();
    let mean = rouge::mean_rouge(&scores);
    Ok(SummarizeScores {
        n: pairs.len(),
        rouge1: mean.rouge1.f1,
        rouge2: mean.rouge2.f1,
        rouge_l: mean.rouge_l.f1,
        samples: preds
            .into_iter()
            .zip(pairs)
            .map(|(prediction, p)| TaskSample { id: p.id.clone(), prediction, reference: p.summary.clone() })
            .collect(),
    })
}

/// SQuAD scores of greedy answers.
#[derive(Debug, Clone, Serialize)]
pub struct QaScores {
    /// Exact match, token F1 and count.
    #[serde(flatten)]
    pub squad: SquadScores,
    /// Share of predictions found verbatim in their context.
    pub in_context: f64,
    /// Every question's prediction and first gold answer.
    pub samples: Vec<TaskSample>,
}

/// Answers each question greedily from its context and scores the answers (SQuAD
/// normalisation, best over the gold answers).
pub fn eval_qa(
    model: &dyn Model,
    tok: &Tokenizer,
    items: &[QaItem],
    max_new_tokens: usize,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<QaScores> {
    if items.is_empty() {
        return Err(GraftError::Input("no questions to evaluate".into()));
    }
    let prompts: Vec<Vec<Message>> = items.iter().map(|q| qa_messages(&q.context, &q.question)).collect();
    let preds = greedy_answers(model, tok, &prompts, max_new_tokens, on_progress)?;
    let golds: Vec<Vec<&str>> = items.iter().map(|q| q.answers.iter().map(|a| a.text.as_str()).collect()).collect();
    let squad = squad::squad_scores(&preds, &golds)?;
    let in_context =
        preds.iter().zip(items).filter(|(p, q)| !p.is_empty() && char_find(&q.context, p).is_some()).count() as f64
            / items.len() as f64;
    Ok(QaScores {
        squad,
        in_context,
        samples: preds
            .into_iter()
            .zip(items)
            .map(|(prediction, q)| TaskSample { id: q.id.clone(), prediction, reference: q.answers[0].text.clone() })
            .collect(),
    })
}

/// Reads the pairs of a summarization file and keeps the first `limit`.
pub fn load_summarize(path: &Path, limit: Option<usize>) -> Result<(Vec<SummaryPair>, task_files::SkipReport)> {
    let (mut pairs, report) = task_files::read_summarize_file(path)?;
    if let Some(n) = limit {
        pairs.truncate(n);
    }
    Ok((pairs, report))
}

/// Reads the questions of a SQuAD-style file and keeps the first `limit`.
pub fn load_qa(path: &Path, limit: Option<usize>) -> Result<(Vec<QaItem>, task_files::SkipReport)> {
    let (mut items, report) = task_files::read_qa_file(path)?;
    if let Some(n) = limit {
        items.truncate(n);
    }
    Ok((items, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(id: &str, summary: &str, license: Option<&str>) -> Component {
        Component {
            id: id.into(),
            name: "Ünïcode Maps".into(),
            summary: summary.into(),
            description: "Maps shows places.\n- routes\n- traffic".into(),
            license: license.map(str::to_string),
            categories: Vec::new(),
        }
    }

    #[test]
    fn qa_answers_occur_in_their_context() {
        let items = qa_items(&comp("a", "Find places", Some("GPL-2.0+"))).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[0].context,
            "Ünïcode Maps: Find places. Maps shows places. - routes - traffic License: GPL-2.0+."
        );
        assert_eq!(items[0].answers[0].text, "Find places");
        assert_eq!(items[1].question, "Which license does Ünïcode Maps use?");
        assert_eq!(items[1].answers[0].text, "GPL-2.0+");
        for q in &items {
            q.check().unwrap();
            let start = q.answers[0].start;
            let at: String = q.context.chars().skip(start).take(q.answers[0].text.chars().count()).collect();
            assert_eq!(at, q.answers[0].text);
        }
        let items = qa_items(&comp("b", "Ends with a stop.", None)).unwrap();
        assert_eq!(items.len(), 1, "no license, no license question");
        assert!(items[0].context.starts_with("Ünïcode Maps: Ends with a stop. Maps"));
    }

    #[test]
    fn builds_split_files_from_a_sample() {
        let dir = tempfile::tempdir().unwrap();
        let mut yaml = String::from("---\nFile: DEP-11\n");
        for i in 0..40 {
            yaml.push_str(&format!(
                "---\nID: app{i}\nName:\n  C: App {i}\nSummary:\n  C: Does thing {i}\nDescription:\n  C: <p>App {i} does thing {i} well.</p>\nProjectLicense: MIT\n"
            ));
        }
        yaml.push_str("---\nID: long\nName:\n  C: Long\nSummary:\n  C: Long one\nDescription:\n  C: <p>");
        yaml.push_str(&"word ".repeat(400));
        yaml.push_str("</p>\n");
        let src = dir.path().join("Components-amd64.yml");
        std::fs::write(&src, yaml).unwrap();
        let opts = BuildOptions {
            sources: vec![src],
            out: dir.path().join("out"),
            max: Some(30),
            seed: 3,
            test_fraction: 0.3,
            max_description_chars: 500,
        };
        let report = build_appstream(&opts, &mut |_| {}).unwrap();
        assert_eq!(report.n_components, 30);
        assert_eq!(report.skipped.get("description_too_long"), Some(&1));
        let (n_train, n_test) = (report.files["summarize.train.jsonl"], report.files["summarize.test.jsonl"]);
        assert_eq!(n_train + n_test, 30);
        assert!(n_test > 0 && n_train > 0);
        assert_eq!(report.files["qa.train.jsonl"], 2 * n_train);
        assert_eq!(report.files["qa.train.messages.jsonl"], 2 * n_train);
        assert_eq!(report.files["qa.test.messages.jsonl"], 2 * n_test);
        let (qa, skips) = task_files::read_qa_file(&opts.out.join("qa.test.jsonl")).unwrap();
        assert_eq!((qa.len(), skips.n_skipped), (2 * n_test, 0));
        let (pairs, _) = task_files::read_summarize_file(&opts.out.join("summarize.test.jsonl")).unwrap();
        assert!(pairs.iter().all(|p| appstream::is_test(&p.id, 3, 0.3)));
        assert!(pairs.iter().all(|p| p.summary.starts_with("Does thing")));
        // Same inputs, same files.
        let again = BuildOptions { out: dir.path().join("again"), ..opts.clone() };
        build_appstream(&again, &mut |_| {}).unwrap();
        for f in report.files.keys() {
            assert_eq!(std::fs::read(opts.out.join(f)).unwrap(), std::fs::read(again.out.join(f)).unwrap(), "{f}");
        }
        let bad = BuildOptions { test_fraction: 1.5, ..opts };
        assert!(build_appstream(&bad, &mut |_| {}).is_err());
    }
}
