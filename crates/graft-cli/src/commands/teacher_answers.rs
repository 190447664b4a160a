//! `graft data teacher-answers`: a teacher model answers the prompts of a training file, and the
//! answers replace the file's own (sequence-level distillation data), resumably.

use super::generate::{AdapterArgs, ModelArgs};
use anyhow::Result;
use clap::Args;
use graft::data::DataFormat;
use graft::recipes::teacher_answers::{write_teacher_answers, AnswerEvent, AnswerJob, AnswerSettings, TeacherSpec};
use std::path::PathBuf;
use std::time::Instant;

/// `graft data teacher-answers` options.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  graft data teacher-answers --model runs/teacher/model --data dataset:tweets/chat.train.jsonl \\\n      \
--out runs/student/teacher_answers.jsonl --max-new-tokens 32 --json\n  \
graft data teacher-answers --adapter runs/quickstart --data data/alpaca.jsonl --format alpaca \\\n      \
--out answers.jsonl --temperature 0.7 --top-p 0.9 --seed 1\n\n\
Writes one line per input line, in the same format, with the answer (the last assistant message,\n\
`output` or `completion`) replaced by the teacher's and `teacher_tokens` / `teacher_stop` added:\n\
train a student on it with `graft train` (data.train = the output file). The file is a cache:\n\
rerun the same command after an interruption and it continues after the last complete line;\n\
OUT.meta.json records digests of teacher, adapter, data and settings, and a file made from other\n\
inputs is refused with what changed (docs/distillation.md)."
)]
pub struct TeacherAnswersArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    adapter: AdapterArgs,
    /// Training file whose prompts the teacher answers: a JSONL path or dataset:NAME/FILE.
    #[arg(long)]
    data: PathBuf,
    /// Its format: messages, alpaca or prompt_completion.
    #[arg(long, default_value = "messages")]
    format: DataFormat,
    /// The answers file (JSONL, same format as --data).
    #[arg(long)]
    out: PathBuf,
    /// Most tokens per answer (an answer also ends at the teacher's EOS).
    #[arg(long, default_value_t = AnswerSettings::default().max_new_tokens)]
    max_new_tokens: usize,
    /// How the next token is drawn.
    #[command(flatten)]
    sampling: super::generate::SamplingArgs,
    /// Seed: record i samples with a generator seeded from (seed, i), so a resumed file equals
    /// one written in one go.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Runs `graft data teacher-answers`.
pub fn run(args: TeacherAnswersArgs) -> Result<()> {
    args.adapter.check()?;
    let job = AnswerJob {
        teacher: TeacherSpec {
            name: args.model.model.clone(),
            source: args.model.source()?,
            load: args.model.load_options()?,
            adapter: args.adapter.adapter.clone(),
        },
        data: args.data,
        format: args.format,
        out: args.out,
        settings: AnswerSettings {
            max_new_tokens: args.max_new_tokens,
            temperature: args.sampling.temperature,
            top_k: args.sampling.top_k,
            top_p: args.sampling.top_p,
            repetition_penalty: args.sampling.repetition_penalty,
            seed: args.seed,
        },
    };
    let mut last_print: Option<Instant> = None;
    let summary = write_teacher_answers(&job, &mut |event| match event {
        AnswerEvent::Note(note) => eprintln!("{note}"),
        AnswerEvent::Answered { done, total, tokens, secs } => {
            // One line a second at most, and always the last.
            if done == total || last_print.is_none_or(|t| t.elapsed().as_secs_f64() >= 1.0) {
                let rate = if secs > 0.0 { tokens as f64 / secs } else { 0.0 };
                eprintln!("  answered {done}/{total}  {tokens} tokens  {rate:.1} tokens/s");
                last_print = Some(Instant::now());
            }
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{}: {} records ({} kept from before, {} answered now: {} tokens, {:.1} tokens/s, {} cut short)",
            summary.out.display(),
            summary.records,
            summary.resumed,
            summary.generated,
            summary.tokens_generated,
            summary.tokens_per_s,
            summary.cut_short
        );
    }
    Ok(())
}
