//! Ollama Modelfiles for exported GGUFs: `FROM` the model (or the base model plus an `ADAPTER`),
//! the chat template in Ollama's Go-template syntax, and the stop tokens.
//!
//! Models ship their chat template as Jinja; Ollama wants a Go template over `.Messages`.
//! Translating Jinja in general is not possible, so graft recognises the ChatML family
//! (`<|im_start|>{role}\n{content}<|im_end|>\n` per turn, then `<|im_start|>assistant\n`; SmolLM2,
//! Qwen and many others) by *rendering* probe conversations through the model's own template
//! and comparing the text with ChatML turns — a template that merely mentions the tokens but
//! lays them out differently is not mistaken for ChatML. A system message the template inserts
//! when a conversation has none becomes the Modelfile's `SYSTEM` (Ollama prepends it the same
//! way). Any other template gets no `TEMPLATE` line and a comment saying so.

use crate::tokenizer::{ChatTemplate, Message};
use crate::{GraftError, Result};
use std::io::Write;
use std::path::Path;

/// ChatML's turn opener.
pub const IM_START: &str = "<|im_start|>";
/// ChatML's end-of-turn token.
pub const IM_END: &str = "<|im_end|>";

/// ChatML as an Ollama Go template: every message as a ChatML turn, then the assistant's opener
/// (what the Jinja template renders with `add_generation_prompt`).
pub const CHATML_GO_TEMPLATE: &str =
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n";

/// What graft recognised in a model's Jinja chat template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatFormat {
    /// ChatML turns; `default_system` is the system message the template inserts when a
    /// conversation has none.
    ChatMl {
        /// The inserted system message, if any.
        default_system: Option<String>,
    },
    /// A template graft does not translate, and why.
    Unknown(String),
}

/// One ChatML turn.
fn turn(role: &str, content: &str) -> String {
    format!("{IM_START}{role}\n{content}{IM_END}\n")
}

/// Recognises ChatML by rendering probe conversations through `template` (see the module docs).
pub fn detect_chat_format(template: &ChatTemplate) -> ChatFormat {
    let src = template.source();
    if !(src.contains(IM_START) && src.contains(IM_END)) {
        return ChatFormat::Unknown(format!("the template does not use {IM_START} / {IM_END}"));
    }
    let (sys, u1, a1, u2) =
        ("graft probe: system", "graft probe: user 1", "graft probe: assistant", "graft probe: user 2");
    let render = |messages: &[Message], generation: bool| template.render(messages, generation);
    let unknown =
        |what: &str| ChatFormat::Unknown(format!("the template renders {what} differently from ChatML turns"));
    let gen = format!("{IM_START}assistant\n");

    let full = [Message::system(sys), Message::user(u1), Message::assistant(a1), Message::user(u2)];
    let want = [turn("system", sys), turn("user", u1), turn("assistant", a1), turn("user", u2), gen.clone()].concat();
    match render(&full, true) {
        Ok(text) if text == want => {}
        Ok(_) => return unknown("a conversation"),
        Err(e) => return ChatFormat::Unknown(format!("rendering a probe conversation failed: {e}")),
    }
    match render(&full[..2], false) {
        Ok(text) if text == [turn("system", sys), turn("user", u1)].concat() => {}
        Ok(_) => return unknown("a conversation without the generation prompt"),
        Err(e) => return ChatFormat::Unknown(format!("rendering a probe conversation failed: {e}")),
    }
    // Without a system message: what comes before the first turn is the inserted default.
    let tail = [turn("user", u1), turn("assistant", a1), gen].concat();
    let text = match render(&full[1..3], true) {
        Ok(text) => text,
        Err(e) => return ChatFormat::Unknown(format!("rendering a probe conversation failed: {e}")),
    };
    let Some(prefix) = text.strip_suffix(&tail) else {
        return unknown("a conversation without a system message");
    };
    if prefix.is_empty() {
        return ChatFormat::ChatMl { default_system: None };
    }
    let inner =
        prefix.strip_prefix(&format!("{IM_START}system\n")).and_then(|p| p.strip_suffix(&format!("{IM_END}\n")));
    match inner {
        Some(d) if !d.contains(IM_START) && !d.contains(IM_END) => {
            ChatFormat::ChatMl { default_system: Some(d.to_string()) }
        }
        _ => unknown("the text before the first turn"),
    }
}

/// An Ollama Modelfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Modelfile {
    /// Comment lines written at the top (without the `# `).
    pub comments: Vec<String>,
    /// The model (`FROM`): a GGUF path relative to the Modelfile, or an Ollama model name.
    pub from: String,
    /// A LoRA adapter GGUF applied on top of `from` (`ADAPTER`).
    pub adapter: Option<String>,
    /// The chat template in Go-template syntax (`TEMPLATE`).
    pub template: Option<String>,
    /// The default system message (`SYSTEM`).
    pub system: Option<String>,
    /// Strings that end a reply (`PARAMETER stop`), in order.
    pub stops: Vec<String>,
}

/// Whether `s` can be written inside `"..."` on one Modelfile line.
fn quotable(s: &str) -> bool {
    !s.is_empty() && !s.contains(['"', '\\', '\n', '\r'])
}

impl Modelfile {
    /// The Modelfile for a GGUF at `from` (plus `adapter`), with the chat template translated
    /// where it is ChatML and `eos_token` — the token training ended every example with — as a
    /// stop; ChatML's turn tokens are stops too (a new turn means the reply is over).
    pub fn new(
        from: impl Into<String>,
        adapter: Option<String>,
        template: Option<&ChatTemplate>,
        eos_token: Option<&str>,
    ) -> Self {
        let mut mf = Modelfile {
            comments: Vec::new(),
            from: from.into(),
            adapter,
            template: None,
            system: None,
            stops: Vec::new(),
        };
        let mut stops: Vec<&str> = eos_token.into_iter().collect();
        match template.map(detect_chat_format) {
            Some(ChatFormat::ChatMl { default_system }) => {
                mf.template = Some(CHATML_GO_TEMPLATE.to_string());
                match default_system {
                    Some(s) if s.contains("\"\"\"") => {
                        mf.comments.push("No SYSTEM: the template's default system message contains `\"\"\"`, which a Modelfile cannot quote.".into())
                    }
                    other => mf.system = other,
                }
                stops.extend([IM_END, IM_START]);
            }
            Some(ChatFormat::Unknown(why)) => mf.comments.extend([
                format!("No TEMPLATE: graft translates ChatML chat templates only, and {why}."),
                "Ollama falls back on the chat template stored in the GGUF where it recognises it;".into(),
                "otherwise write a TEMPLATE in Go template syntax by hand (see Ollama's docs/template.md).".into(),
            ]),
            None => {
                mf.comments.push("No TEMPLATE: the model has no chat template; prompts are sent as plain text.".into())
            }
        }
        for s in stops {
            if !quotable(s) {
                mf.comments.push(format!("Stop token {s:?} cannot be quoted in a Modelfile and is left out."));
            } else if !mf.stops.iter().any(|x| x == s) {
                mf.stops.push(s.to_string());
            }
        }
        mf
    }

    /// The Modelfile's text.
    pub fn text(&self) -> String {
        let mut out = String::from("# Ollama Modelfile written by `graft export`.\n");
        out.push_str("# Create the model with: ollama create NAME -f Modelfile (paths are relative to this file)\n");
        for c in &self.comments {
            out.push_str(&format!("# {c}\n"));
        }
        out.push_str(&format!("FROM {}\n", self.from));
        if let Some(a) = &self.adapter {
            out.push_str(&format!("ADAPTER {a}\n"));
        }
        if let Some(t) = &self.template {
            out.push_str(&format!("TEMPLATE \"\"\"{t}\"\"\"\n"));
        }
        if let Some(s) = &self.system {
            out.push_str(&format!("SYSTEM \"\"\"{s}\"\"\"\n"));
        }
        for s in &self.stops {
            out.push_str(&format!("PARAMETER stop \"{s}\"\n"));
        }
        out
    }

    /// Writes the text to `path` atomically (a temporary file in the same folder, renamed).
    pub fn write(&self, path: &Path) -> Result<()> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let mut tmp =
            tempfile::Builder::new().prefix(".Modelfile.").tempfile_in(dir).map_err(|e| GraftError::io(dir, e))?;
        tmp.write_all(self.text().as_bytes()).map_err(|e| GraftError::io(path, e))?;
        // Temporary files are private (0600); a Modelfile is meant to be read by others.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(|e| GraftError::io(path, e))?;
        }
        tmp.as_file().sync_all().map_err(|e| GraftError::io(path, e))?;
        tmp.persist(path).map_err(|e| GraftError::io(path, e.error))?;
        Ok(())
    }
}
