//! One data file rendered for two tokenizers: each kept example of the student's tokenizer with
//! the same record rendered for the teacher's (its own chat template, or the student's when it
//! has none), for distillation across tokenizers (`distill.loss = "uld"`).

use super::load::{load_examples_and, truncate, Cut};
use super::render::Renderer;
use super::{DataError, DataFormat, Example, LineProblem, LoadOptions, LoadReport};
use crate::tokenizer::Tokenizer;
use std::path::Path;

/// Reads `path` as [`load_examples`](super::load_examples) does for `student` (which decides
/// what is kept, truncated or dropped, and the report), and renders every kept line also with
/// `teacher`: `(student example, teacher example)` per line, in the file's order.
///
/// The teacher's rendering uses the teacher's chat template, or, for a teacher without one (a
/// base model), the student's template as text tokenized by the teacher, after the teacher's BOS.
/// It is cut to `seq_len` teacher tokens by the same rule; when that leaves none of its
/// supervised tokens, it keeps its first `seq_len` tokens with none supervised (the example then
/// has no teacher position to pair), so the student's example is never dropped for the teacher.
pub fn load_paired_examples(
    path: &Path,
    format: DataFormat,
    student: &Tokenizer,
    teacher: &Tokenizer,
    seq_len: usize,
) -> Result<(Vec<(Example, Example)>, LoadReport), DataError> {
    let renderer = Renderer::with_fallback_template(teacher, student.chat_template())?;
    let eos = teacher.eos_id().ok_or(DataError::NoEos)?;
    let render = |record: &_| -> Result<Example, LineProblem> {
        let mut ex = renderer.example(record)?;
        if truncate(&mut ex, seq_len, eos) == Cut::Dropped {
            ex.ids.truncate(seq_len);
            ex.supervised = vec![false; ex.ids.len()];
        }
        Ok(ex)
    };
    load_examples_and(path, format, student, seq_len, &LoadOptions::default(), render)
}
