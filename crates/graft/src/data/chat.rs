//! Tokenizing chat conversations so that message content can never forge template structure.
//!
//! The conversation is rendered with each content replaced by a private-use sentinel; the
//! rendered text is split at the sentinels, the template's own pieces are tokenized with special
//! tokens recognised, and each content with special-token parsing off. For ordinary content the
//! result equals tokenizing the plainly rendered conversation.

use crate::tokenizer::{ChatTemplate, Message, Tokenizer};
use crate::{GraftError, Result};

/// A piece of a tokenized conversation.
pub struct Piece {
    /// Its token ids.
    pub ids: Vec<u32>,
    /// The message index when the piece is a message's content; `None` for template text.
    pub message: Option<usize>,
}

fn sentinel(i: usize) -> String {
    format!("\u{E000}{i}\u{E001}")
}

/// The template of `tok`, or an error saying the format needs one.
pub fn template_of(tok: &Tokenizer) -> Result<ChatTemplate> {
    tok.chat_template()
        .ok_or_else(|| GraftError::Input("this model has no chat template; use data.format = \"text\" or \"prompt_completion\"".into()))
}

/// Tokenizes `messages` rendered through `template`, piece by piece.
pub fn tokenize_chat(tok: &Tokenizer, template: &ChatTemplate, messages: &[Message], add_generation_prompt: bool) -> Result<Vec<Piece>> {
    let masked: Vec<Message> =
        messages.iter().enumerate().map(|(i, m)| Message { role: m.role.clone(), content: sentinel(i) }).collect();
    let rendered = template.render(&masked, add_generation_prompt)?;
    let mut pieces = Vec::new();
    let mut rest = rendered.as_str();
    while let Some(start) = rest.find('\u{E000}') {
        let (before, after) = rest.split_at(start);
        if !before.is_empty() {
            pieces.push(Piece { ids: tok.encode(before, false)?, message: None });
        }
        let end = after
            .find('\u{E001}')
            .ok_or_else(|| GraftError::Input("chat template altered a message's content marker".into()))?;
        let index: usize = after['\u{E000}'.len_utf8()..end]
            .parse()
            .map_err(|_| GraftError::Input("chat template altered a message's content marker".into()))?;
        let content = &messages
            .get(index)
            .ok_or_else(|| GraftError::Input("chat template produced an unknown content marker".into()))?
            .content;
        pieces.push(Piece { ids: tok.encode_plain(content)?, message: Some(index) });
        rest = &after[end + '\u{E001}'.len_utf8()..];
    }
    if !rest.is_empty() {
        pieces.push(Piece { ids: tok.encode(rest, false)?, message: None });
    }
    Ok(pieces)
}

/// Token ids of a prompt: `messages` rendered with the generation prompt appended, content
/// tokenized with special-token parsing off.
pub fn prompt_ids(tok: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>> {
    let template = template_of(tok)?;
    Ok(tokenize_chat(tok, &template, messages, true)?.into_iter().flat_map(|p| p.ids).collect())
}
