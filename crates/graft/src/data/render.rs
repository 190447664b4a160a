//! Records → token ids with a supervision flag per token.
//!
//! Content written by users (text, prompts, completions, message content) is tokenized with
//! special-token parsing off ([`Tokenizer::encode_plain`]), so a `<|im_end|>` inside a message is
//! ordinary text and cannot forge a turn boundary. A conversation is rendered with the model's
//! chat template twice: once with each content replaced by a sentinel, which splits the output
//! into the template's own text (tokenized with special tokens on) and the contents; once as is,
//! to check that the template inserts contents verbatim (or trimmed), so that the pieces spell
//! exactly what the template would produce.

use super::record::Record;
use super::{DataError, Example, LineProblem};
use crate::tokenizer::{ChatTemplate, Message, Tokenizer};

/// Opens and closes a content sentinel (Unicode private-use characters).
const OPEN: char = '\u{F0000}';
const CLOSE: char = '\u{F0001}';

/// A piece of a tokenized conversation.
pub(crate) struct Piece {
    /// Its token ids.
    pub ids: Vec<u32>,
    /// The message whose content this is; `None` for the template's own text.
    pub message: Option<usize>,
}

/// Turns records into examples for one tokenizer.
pub(crate) struct Renderer<'a> {
    tok: &'a Tokenizer,
    template: Option<ChatTemplate>,
    eos: u32,
    /// Prepended (unsupervised) to `text` and `prompt_completion` samples when the tokenizer adds
    /// BOS to encoded text.
    bos: Option<u32>,
    /// Prepended (unsupervised) to conversations rendered with a borrowed template (one that
    /// cannot know this tokenizer's BOS).
    chat_bos: Option<u32>,
}

impl<'a> Renderer<'a> {
    /// A renderer for `tok`; errors when the tokenizer has no EOS.
    pub(crate) fn new(tok: &'a Tokenizer) -> Result<Self, DataError> {
        let eos = tok.eos_id().ok_or(DataError::NoEos)?;
        let bos = if tok.adds_bos() { tok.bos_id() } else { None };
        Ok(Self { tok, template: tok.chat_template(), eos, bos, chat_bos: None })
    }

    /// A renderer for `tok` that renders conversations with `fallback` when `tok` has no chat
    /// template of its own: the template's text is then tokenized by `tok` like any text, after
    /// `tok`'s BOS when it adds one.
    pub(crate) fn with_fallback_template(
        tok: &'a Tokenizer,
        fallback: Option<ChatTemplate>,
    ) -> Result<Self, DataError> {
        let mut renderer = Self::new(tok)?;
        if renderer.template.is_none() {
            renderer.template = fallback;
            renderer.chat_bos = renderer.bos;
        }
        Ok(renderer)
    }

    /// The model's chat template, if it has one.
    pub(crate) fn template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// Tokenizes one record. Every example ends with a supervised EOS, and its first token is
    /// never supervised (nothing precedes it to predict it from).
    pub(crate) fn example(&self, record: &Record) -> Result<Example, LineProblem> {
        let mut ex = Example { ids: Vec::new(), supervised: Vec::new() };
        match record {
            Record::Text(text) => {
                ex.push_all(self.bos, false);
                ex.extend(self.plain(text)?, true);
                ex.push(self.eos, true);
            }
            Record::PromptCompletion { prompt, completion } => {
                ex.push_all(self.bos, false);
                ex.extend(self.plain(prompt)?, false);
                ex.extend(self.plain(completion)?, true);
                ex.push(self.eos, true);
            }
            Record::Chat(messages) => self.chat(messages, &mut ex)?,
        }
        if let Some(first) = ex.supervised.first_mut() {
            *first = false;
        }
        if !ex.supervised.iter().any(|&s| s) {
            let what = match record {
                Record::Text(_) => "the `text` is empty",
                _ => "nothing precedes the completion to predict it from",
            };
            return Err(LineProblem::NoTargets(what.into()));
        }
        Ok(ex)
    }

    /// Token ids of the prompt a model answers in `record`'s place: for `prompt_completion`, BOS
    /// (when the tokenizer adds one) and the prompt, as [`Renderer::example`] writes them; for a
    /// conversation, every turn before the last (an assistant turn) through the chat template
    /// with the assistant header appended. `text` samples have no prompt.
    pub(crate) fn answer_prompt(&self, record: &Record) -> Result<Vec<u32>, LineProblem> {
        let mut ex = Example { ids: Vec::new(), supervised: Vec::new() };
        match record {
            Record::Text(_) => return Err(LineProblem::NoTargets("a `text` sample has no prompt to answer".into())),
            Record::PromptCompletion { prompt, .. } => {
                ex.push_all(self.bos, false);
                ex.extend(self.plain(prompt)?, false);
            }
            Record::Chat(messages) => {
                let template = self.template.as_ref().ok_or_else(|| {
                    LineProblem::Template("the model has no chat template: use format `prompt_completion`".into())
                })?;
                let history = &messages[..messages.len().saturating_sub(1)];
                for piece in tokenize_chat(self.tok, template, history, true)? {
                    ex.extend(piece.ids, false);
                }
            }
        }
        Ok(ex.ids)
    }

    /// Assistant content is supervised, and so is the template text that closes it up to and
    /// including its EOS (`<|im_end|>`), where no other special token comes first. The sample
    /// ends at the last supervised token; a supervised EOS is appended if that is not an EOS.
    fn chat(&self, messages: &[Message], ex: &mut Example) -> Result<(), LineProblem> {
        let template = self.template.as_ref().ok_or_else(|| {
            LineProblem::Template("the model has no chat template: use format `text` or `prompt_completion`".into())
        })?;
        let pieces = tokenize_chat(self.tok, template, messages, false)?;
        ex.push_all(self.chat_bos, false);
        let mut after_assistant = false;
        for piece in pieces {
            match piece.message {
                Some(i) => {
                    after_assistant = messages[i].role == "assistant";
                    ex.extend(piece.ids, after_assistant);
                }
                None => {
                    let closing = if after_assistant { self.closing_len(&piece.ids) } else { 0 };
                    let mut ids = piece.ids.into_iter();
                    ex.extend(ids.by_ref().take(closing).collect(), true);
                    ex.extend(ids.collect(), false);
                    after_assistant = false;
                }
            }
        }
        let end = ex.supervised.iter().rposition(|&s| s).map_or(0, |i| i + 1);
        ex.ids.truncate(end);
        ex.supervised.truncate(end);
        if ex.ids.last() != Some(&self.eos) {
            ex.push(self.eos, true);
        }
        Ok(())
    }

    /// How many leading ids of the template text after an assistant turn close that turn: up to
    /// and including the first EOS, unless another special token (a new turn) comes first.
    fn closing_len(&self, ids: &[u32]) -> usize {
        for (i, &id) in ids.iter().enumerate() {
            if id == self.eos {
                return i + 1;
            }
            if self.tok.is_special(id) {
                return 0;
            }
        }
        0
    }

    fn plain(&self, text: &str) -> Result<Vec<u32>, LineProblem> {
        self.tok.encode_plain(text).map_err(|e| LineProblem::Tokenizer(e.to_string()))
    }
}

impl Example {
    fn push(&mut self, id: u32, supervised: bool) {
        self.ids.push(id);
        self.supervised.push(supervised);
    }

    fn push_all(&mut self, id: Option<u32>, supervised: bool) {
        if let Some(id) = id {
            self.push(id, supervised);
        }
    }

    fn extend(&mut self, ids: Vec<u32>, supervised: bool) {
        self.supervised.extend(std::iter::repeat_n(supervised, ids.len()));
        self.ids.extend(ids);
    }
}

fn sentinel(i: usize) -> String {
    format!("{OPEN}{i}{CLOSE}")
}

/// Tokenizes `messages` rendered through `template`, piece by piece: template text with special
/// tokens on, contents with special tokens off.
pub(crate) fn tokenize_chat(
    tok: &Tokenizer,
    template: &ChatTemplate,
    messages: &[Message],
    add_generation_prompt: bool,
) -> Result<Vec<Piece>, LineProblem> {
    let template_err = |e: crate::tokenizer::TokenizerError| LineProblem::Template(e.to_string());
    let masked: Vec<Message> =
        messages.iter().enumerate().map(|(i, m)| Message::new(m.role.clone(), sentinel(i))).collect();
    let skeleton = template.render(&masked, add_generation_prompt).map_err(template_err)?;
    let parts = split_skeleton(&skeleton, messages.len()).ok_or_else(|| {
        LineProblem::Template(format!(
            "chat template `{}` does not insert each message's content exactly once and in order; \
             graft cannot tell which tokens to train on",
            template.name()
        ))
    })?;
    let contents = verbatim_contents(template, messages, &parts, add_generation_prompt)?;
    let encode_err = |e: crate::tokenizer::TokenizerError| LineProblem::Tokenizer(e.to_string());
    let mut pieces = Vec::with_capacity(2 * messages.len() + 1);
    for (i, text) in parts.iter().enumerate() {
        if !text.is_empty() {
            pieces.push(Piece { ids: tok.encode(text, false).map_err(encode_err)?, message: None });
        }
        if let Some(content) = contents.get(i) {
            pieces.push(Piece { ids: tok.encode_plain(content).map_err(encode_err)?, message: Some(i) });
        }
    }
    Ok(pieces)
}

/// The template text around the sentinels: `n + 1` parts when sentinel `i` is the `i`-th one,
/// each exactly once; `None` otherwise.
fn split_skeleton(skeleton: &str, n: usize) -> Option<Vec<&str>> {
    let mut parts = Vec::with_capacity(n + 1);
    let mut rest = skeleton;
    for i in 0..n {
        let s = sentinel(i);
        let at = rest.find(&s)?;
        parts.push(&rest[..at]);
        rest = &rest[at + s.len()..];
    }
    parts.push(rest);
    // A sentinel met out of order stays in a part.
    if parts.iter().any(|p| p.contains(OPEN)) {
        return None;
    }
    Some(parts)
}

/// The contents as the template writes them: verbatim, or trimmed for templates that trim
/// (`message.content | trim`). Checked against a plain render of the conversation.
fn verbatim_contents<'m>(
    template: &ChatTemplate,
    messages: &'m [Message],
    parts: &[&str],
    add_generation_prompt: bool,
) -> Result<Vec<&'m str>, LineProblem> {
    let rendered =
        template.render(messages, add_generation_prompt).map_err(|e| LineProblem::Template(e.to_string()))?;
    let spells = |contents: &[&str]| {
        let mut pos = 0;
        for (i, part) in parts.iter().enumerate() {
            let Some(rest) = rendered.get(pos..).and_then(|r| r.strip_prefix(part)) else { return false };
            pos = rendered.len() - rest.len();
            if let Some(c) = contents.get(i) {
                if !rest.starts_with(c) {
                    return false;
                }
                pos += c.len();
            }
        }
        pos == rendered.len()
    };
    let as_is: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    if spells(&as_is) {
        return Ok(as_is);
    }
    let trimmed: Vec<&str> = messages.iter().map(|m| m.content.trim()).collect();
    if spells(&trimmed) {
        return Ok(trimmed);
    }
    Err(LineProblem::Template(format!(
        "chat template `{}` changes message content (beyond trimming it); graft cannot tell which tokens \
         to train on",
        template.name()
    )))
}

/// Token ids of a plain-text prompt, as a `prompt_completion` sample's prompt is rendered (the
/// tokenizer's BOS when it adds one, then the text): what a model without a chat template is asked.
pub fn plain_prompt_ids(tok: &Tokenizer, prompt: &str) -> crate::Result<Vec<u32>> {
    let renderer = Renderer::new(tok).map_err(|e| crate::GraftError::Input(format!("plain prompt: {e}")))?;
    let record = Record::PromptCompletion { prompt: prompt.to_string(), completion: String::new() };
    renderer.answer_prompt(&record).map_err(|p| crate::GraftError::Input(format!("plain prompt: {p}")))
}

/// Token ids of a generation prompt: `messages` rendered with the model's chat template and the
/// assistant header appended, content tokenized with special-token parsing off.
pub fn prompt_ids(tok: &Tokenizer, messages: &[Message]) -> crate::Result<Vec<u32>> {
    let template = tok.chat_template().ok_or_else(|| {
        crate::GraftError::Input("this model has no chat template; give the prompt as plain text".into())
    })?;
    let pieces = tokenize_chat(tok, &template, messages, true)
        .map_err(|p| crate::GraftError::Input(format!("chat prompt: {p}")))?;
    Ok(pieces.into_iter().flat_map(|p| p.ids).collect())
}
