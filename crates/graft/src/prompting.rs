//! Prompting as a transfer technique: a task phrased as chat instructions (zero-shot), optionally
//! preceded by k solved examples drawn from the train split (k-shot), and classified by label
//! scoring — the likelihood of each label word right after the prompt.
//!
//! Prompts go through the model's own chat template, so what the model sees here is what it sees
//! after fine-tuning on the same instructions: prompting and fine-tuning are compared on equal
//! terms.

use crate::eval::classification;
use crate::models::Model;
use crate::tokenizer::{Message, Tokenizer};
use crate::{GraftError, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The slot in [`PromptTemplate::instruction`] that the input text replaces.
pub const TEXT_SLOT: &str = "{text}";

/// How a classification task is put to a chat model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromptTemplate {
    /// System message (none when empty).
    pub system: String,
    /// The user turn; `{text}` is replaced by the input.
    pub instruction: String,
}

impl Default for PromptTemplate {
    /// The tweet-sentiment prompt the quick start trains on.
    fn default() -> Self {
        Self {
            system: "You label the sentiment of tweets.".into(),
            instruction: "Is the sentiment of this tweet negative, neutral or positive?\n\n{text}".into(),
        }
    }
}

/// A solved example shown before the question (k-shot prompting).
#[derive(Debug, Clone, PartialEq)]
pub struct Shot {
    /// The input text.
    pub text: String,
    /// Its label word.
    pub label: String,
}

impl PromptTemplate {
    /// Checks that the instruction has exactly one `{text}` slot.
    pub fn validate(&self) -> Result<()> {
        match self.instruction.matches(TEXT_SLOT).count() {
            1 => Ok(()),
            n => Err(GraftError::Input(format!(
                "prompt instruction must contain `{TEXT_SLOT}` exactly once (found {n} times): {:?}",
                self.instruction
            ))),
        }
    }

    /// The user turn for `text`.
    pub fn user_turn(&self, text: &str) -> String {
        self.instruction.replacen(TEXT_SLOT, text, 1)
    }

    /// The conversation asking about `text`: the system message, each shot as a user turn
    /// answered by its label, then the question (no answer).
    pub fn messages(&self, shots: &[Shot], text: &str) -> Vec<Message> {
        let mut out = Vec::with_capacity(2 + 2 * shots.len());
        if !self.system.is_empty() {
            out.push(Message::system(self.system.clone()));
        }
        for s in shots {
            out.push(Message::user(self.user_turn(&s.text)));
            out.push(Message::assistant(s.label.clone()));
        }
        out.push(Message::user(self.user_turn(text)));
        out
    }

    /// [`Self::messages`] as plain text, for a model without a chat template: the system
    /// message, then each turn — a question followed by a blank line and `Answer:` on a line of
    /// its own, an answer followed by a blank line — ending after the last `Answer:` line.
    pub fn plain_prompt(&self, shots: &[Shot], text: &str) -> String {
        let mut out = String::new();
        for m in self.messages(shots, text) {
            match m.role.as_str() {
                "user" => out.push_str(&format!("{}\n\nAnswer:\n", m.content)),
                _ => out.push_str(&format!("{}\n\n", m.content)),
            }
        }
        out
    }

    /// Token ids asking about `text` after `shots`: the conversation through the model's chat
    /// template, or [`Self::plain_prompt`] for a model without one.
    pub fn prompt_ids(&self, tok: &Tokenizer, shots: &[Shot], text: &str) -> Result<Vec<u32>> {
        match tok.chat_template() {
            Some(_) => crate::data::prompt_ids(tok, &self.messages(shots, text)),
            None => crate::data::plain_prompt_ids(tok, &self.plain_prompt(shots, text)),
        }
    }

    /// [`Self::messages`] with the answer appended: one supervised training conversation.
    pub fn training_messages(&self, text: &str, label: &str) -> Vec<Message> {
        let mut m = self.messages(&[], text);
        m.push(Message::assistant(label.to_string()));
        m
    }
}

/// The training format [`write_training_jsonl_for`] writes for a model with tokenizer `tok`:
/// `messages` when it has a chat template, `prompt_completion` otherwise.
pub fn training_format(tok: &Tokenizer) -> crate::data::DataFormat {
    match tok.chat_template() {
        Some(_) => crate::data::DataFormat::Messages,
        None => crate::data::DataFormat::PromptCompletion,
    }
}

/// Writes labelled examples `(text, label word)` as a training file in `format`: `messages`
/// (one conversation per line, the label as the assistant's answer) or `prompt_completion`
/// ([`PromptTemplate::plain_prompt`] and the label), as [`training_format`] picks for a model.
pub fn write_training_jsonl_for<'a>(
    path: &Path,
    template: &PromptTemplate,
    format: crate::data::DataFormat,
    examples: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<()> {
    if format != crate::data::DataFormat::PromptCompletion {
        return write_training_jsonl(path, template, examples);
    }
    write_lines(
        path,
        examples.into_iter().map(
            |(text, label)| serde_json::json!({ "prompt": template.plain_prompt(&[], text), "completion": label }),
        ),
    )
}

/// Writes labelled examples `(text, label word)` as a `messages`-format JSONL training file:
/// one conversation per line, the label as the assistant's answer.
pub fn write_training_jsonl<'a>(
    path: &Path,
    template: &PromptTemplate,
    examples: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<()> {
    write_lines(
        path,
        examples
            .into_iter()
            .map(|(text, label)| serde_json::json!({ "messages": template.training_messages(text, label) })),
    )
}

/// Writes one JSON value per line into `path`, creating its folder.
fn write_lines(path: &Path, lines: impl IntoIterator<Item = serde_json::Value>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| GraftError::io(dir, e))?;
    }
    crate::datasets::task_files::write_jsonl(path, lines).map(|_| ())
}

/// Indices of `k` examples to show, drawn by `seed` from a pool with labels `labels`: classes
/// take turns (in a seeded order) so that every class appears once `k` reaches the number of
/// classes present, and each class's examples are drawn without replacement. Fewer than `k` come
/// back only when the pool is smaller than `k`.
pub fn draw_shots(labels: &[usize], k: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n_classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    for pool in &mut by_class {
        pool.shuffle(&mut rng);
    }
    let mut order: Vec<usize> = (0..n_classes).filter(|&c| !by_class[c].is_empty()).collect();
    order.shuffle(&mut rng);
    let mut out = Vec::with_capacity(k);
    let mut round = 0;
    while out.len() < k && out.len() < labels.len() {
        for &c in &order {
            if out.len() == k {
                break;
            }
            if let Some(&i) = by_class[c].get(round) {
                out.push(i);
            }
        }
        round += 1;
    }
    // Shown in a shuffled order, so the class order carries no signal.
    out.shuffle(&mut rng);
    out
}

/// The first token of each label word: what label scoring compares. Labels must start with
/// different tokens.
pub fn label_first_ids(tok: &Tokenizer, labels: &[&str]) -> Result<Vec<u32>> {
    labels
        .iter()
        .map(|l| {
            tok.encode_plain(l)
                .map_err(GraftError::from)?
                .first()
                .copied()
                .ok_or_else(|| GraftError::Input(format!("label `{l}` has no tokens")))
        })
        .collect()
}

/// Classifies each text by label scoring under `template` with `shots` in front: the index of
/// the label whose first token is most likely as the assistant's answer.
pub fn classify(
    model: &dyn Model,
    tok: &Tokenizer,
    template: &PromptTemplate,
    shots: &[Shot],
    texts: &[String],
    labels: &[&str],
) -> Result<Vec<usize>> {
    Ok(label_log_probs(model, tok, template, shots, texts, labels)?
        .iter()
        .map(|row| classification::argmax(row))
        .collect())
}

/// Inputs that carry no content, for [`classify_calibrated`] (Zhao et al., 2021).
pub const CONTENT_FREE: [&str; 3] = ["N/A", "", "[MASK]"];

/// [`classify`] with contextual calibration: the label probabilities the prompt gives to
/// content-free inputs ([`CONTENT_FREE`], averaged) measure its bias — a few-shot prompt often
/// pulls every answer towards the label of its last example — and each prediction divides it
/// out: `argmax_l p(l | text) / p(l | content-free)`.
pub fn classify_calibrated(
    model: &dyn Model,
    tok: &Tokenizer,
    template: &PromptTemplate,
    shots: &[Shot],
    texts: &[String],
    labels: &[&str],
) -> Result<Vec<usize>> {
    let free: Vec<String> = CONTENT_FREE.iter().map(|s| s.to_string()).collect();
    let bias = label_log_probs(model, tok, template, shots, &free, labels)?;
    let scores = label_log_probs(model, tok, template, shots, texts, labels)?;
    Ok(calibrate(&scores, &bias))
}

/// Predictions from per-text label log-probabilities `scores`, each divided (in probability)
/// by the mean content-free probability of `bias` rows.
pub fn calibrate(scores: &[Vec<f32>], bias: &[Vec<f32>]) -> Vec<usize> {
    let k = scores.first().map_or(0, Vec::len);
    let mean_p: Vec<f32> =
        (0..k).map(|l| bias.iter().map(|row| row[l].exp()).sum::<f32>() / bias.len().max(1) as f32).collect();
    scores
        .iter()
        .map(|row| {
            let adjusted: Vec<f32> =
                row.iter().zip(&mean_p).map(|(lp, p)| lp - p.max(f32::MIN_POSITIVE).ln()).collect();
            classification::argmax(&adjusted)
        })
        .collect()
}

/// Per text, the log-probabilities of the labels (softmax over the labels' first-token logits).
fn label_log_probs(
    model: &dyn Model,
    tok: &Tokenizer,
    template: &PromptTemplate,
    shots: &[Shot],
    texts: &[String],
    labels: &[&str],
) -> Result<Vec<Vec<f32>>> {
    template.validate()?;
    let prompts = texts.iter().map(|t| template.prompt_ids(tok, shots, t)).collect::<Result<Vec<_>>>()?;
    let label_ids = label_first_ids(tok, labels)?;
    let pad = tok.pad_id().or(tok.eos_id()).unwrap_or(0);
    let logits = classification::label_logits(model, &prompts, &label_ids, pad, 16)?;
    Ok(logits
        .into_iter()
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let log_z = max + row.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
            row.iter().map(|v| v - log_z).collect()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shots_cover_every_class_and_are_reproducible() {
        let labels = [0, 0, 0, 0, 1, 1, 2, 2, 2, 0, 0, 1];
        let a = draw_shots(&labels, 3, 7);
        assert_eq!(a, draw_shots(&labels, 3, 7));
        let mut classes: Vec<usize> = a.iter().map(|&i| labels[i]).collect();
        classes.sort_unstable();
        assert_eq!(classes, vec![0, 1, 2]);
        // Without replacement, and a different seed draws differently somewhere.
        let b = draw_shots(&labels, 12, 7);
        let mut sorted = b.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 12);
        assert!((0..20).any(|s| draw_shots(&labels, 3, s) != a));
        assert_eq!(draw_shots(&labels, 50, 1).len(), labels.len());
    }

    #[test]
    fn k_shot_conversation_alternates_turns() {
        let t = PromptTemplate { system: "sys".into(), instruction: "Q: {text}".into() };
        let shots = [Shot { text: "a".into(), label: "x".into() }, Shot { text: "b".into(), label: "y".into() }];
        let m = t.messages(&shots, "c");
        let roles: Vec<&str> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user", "assistant", "user"]);
        assert_eq!((m[1].content.as_str(), m[4].content.as_str(), m[5].content.as_str()), ("Q: a", "y", "Q: c"));
        let no_system = PromptTemplate { system: String::new(), ..t };
        assert_eq!(no_system.messages(&[], "c").len(), 1);
    }

    #[test]
    fn calibration_divides_out_the_content_free_bias() {
        let lp = |p: [f32; 3]| p.iter().map(|x| x.ln()).collect::<Vec<f32>>();
        // The prompt favours label 2 everywhere; relative to that bias, text 0 leans to label 0.
        let bias = vec![lp([0.1, 0.2, 0.7]), lp([0.1, 0.2, 0.7])];
        let scores = vec![lp([0.3, 0.2, 0.5]), lp([0.05, 0.15, 0.8]), lp([0.1, 0.4, 0.5])];
        assert_eq!(scores.iter().map(|r| classification::argmax(r)).collect::<Vec<_>>(), vec![2, 2, 2]);
        assert_eq!(calibrate(&scores, &bias), vec![0, 2, 1]);
        // Uniform bias changes nothing.
        let flat = vec![lp([1.0 / 3.0; 3])];
        assert_eq!(calibrate(&scores, &flat), vec![2, 2, 2]);
    }

    #[test]
    fn instruction_needs_one_text_slot() {
        assert!(PromptTemplate::default().validate().is_ok());
        let e = PromptTemplate { instruction: "no slot".into(), ..Default::default() }.validate().unwrap_err();
        assert!(e.to_string().contains("{text}"), "{e}");
    }
}
