//! Chat templates: the Jinja program a model ships to turn a conversation into its prompt text.
//!
//! Rendered with minijinja configured as transformers configures Jinja2 for
//! `apply_chat_template`: `trim_blocks` and `lstrip_blocks` on, the trailing newline of the
//! template dropped, no auto-escaping, `loopcontrols`, Python string/dict methods (pycompat),
//! `raise_exception(msg)`, a `tojson` filter with Python's `json.dumps` spacing, and the variables
//! `messages`, `add_generation_prompt`, `bos_token`, `eos_token`.
//!
//! Templates come from model files, so they are treated as untrusted: every render runs on a
//! fuel budget (minijinja instructions) and an output-size cap, and fails with
//! [`TokenizerError::Template`] instead of hanging or filling memory. Message content is data:
//! it is passed as a variable and never parsed as Jinja.

use super::TokenizerError;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{context, AutoEscape, Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

/// The roles a message may have, in transformers' spelling.
pub const CHAT_ROLES: [&str; 3] = ["system", "user", "assistant"];

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text of the turn (plain data: never evaluated as a template).
    pub content: String,
}

impl Message {
    /// A message with any role (checked when rendered).
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Minijinja instructions allowed per render before the template is stopped, plus
/// [`FUEL_PER_MESSAGE`] for each message. A real template uses a few hundred per message.
pub const BASE_FUEL: u64 = 1_000_000;
/// Extra fuel per message of the conversation.
pub const FUEL_PER_MESSAGE: u64 = 20_000;
/// Rendered output allowed beyond twice the conversation's content, in bytes.
pub const BASE_OUTPUT_BYTES: usize = 1 << 20;

/// A model's chat template, with the special-token strings it may refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    name: String,
    source: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl ChatTemplate {
    /// A template from its Jinja source; `bos_token`/`eos_token` are the values of the template
    /// variables of the same names (undefined when `None`).
    pub fn new(source: String, bos_token: Option<String>, eos_token: Option<String>) -> Self {
        Self { name: "chat_template".into(), source, bos_token, eos_token }
    }

    /// Names the template after where it came from (shown in errors).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Where the template came from, e.g. `model.gguf (tokenizer.chat_template)`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Jinja source, verbatim.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Checks that the template compiles.
    pub fn check(&self) -> Result<(), TokenizerError> {
        let env = environment(BASE_FUEL);
        env.template_from_named_str(&self.name, &self.source).map(|_| ()).map_err(|e| self.error(&e))
    }

    /// Renders `messages` into prompt text, byte-identical to transformers'
    /// `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`.
    ///
    /// Roles must be `system`, `user` or `assistant`, with `system` only as the first message;
    /// anything else is a [`TokenizerError::Role`] naming the message. Consecutive messages with
    /// the same role are rendered as given (nothing is merged or dropped).
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String, TokenizerError> {
        check_roles(messages)?;
        let fuel = BASE_FUEL + FUEL_PER_MESSAGE * messages.len() as u64;
        let content_bytes: usize = messages.iter().map(|m| m.content.len()).sum();
        let cap = BASE_OUTPUT_BYTES + 2 * content_bytes;
        let env = environment(fuel);
        let template = env.template_from_named_str(&self.name, &self.source).map_err(|e| self.error(&e))?;
        let token = |t: &Option<String>| t.as_deref().map(Value::from).unwrap_or(Value::UNDEFINED);
        let ctx = context! {
            messages => Value::from_serialize(messages),
            add_generation_prompt => add_generation_prompt,
            bos_token => token(&self.bos_token),
            eos_token => token(&self.eos_token),
        };
        let mut out = CappedWriter { buf: Vec::new(), cap, overflowed: false };
        match template.render_captured_to(ctx, &mut out) {
            Ok(_) => {}
            Err(_) if out.overflowed => {
                return Err(self.fail(format!("rendered output exceeds {cap} bytes; the template looks runaway")))
            }
            Err(e) => return Err(self.error(&e)),
        }
        String::from_utf8(out.buf).map_err(|_| self.fail("rendered output is not UTF-8".into()))
    }

    fn fail(&self, reason: String) -> TokenizerError {
        TokenizerError::Template { name: self.name.clone(), reason }
    }

    fn error(&self, e: &Error) -> TokenizerError {
        let mut reason = match e.kind() {
            ErrorKind::OutOfFuel => {
                "stopped after too many steps (fuel exhausted); the template looks runaway".to_string()
            }
            _ => e.to_string(),
        };
        let mut source = std::error::Error::source(e);
        while let Some(inner) = source {
            reason.push_str(&format!(": {inner}"));
            source = inner.source();
        }
        self.fail(reason)
    }
}

/// Rejects roles the templates are not written for (RELIABILITY D4).
fn check_roles(messages: &[Message]) -> Result<(), TokenizerError> {
    for (index, m) in messages.iter().enumerate() {
        let known = CHAT_ROLES.contains(&m.role.as_str());
        if !known || (m.role == "system" && index > 0) {
            return Err(TokenizerError::Role { index, role: m.role.clone() });
        }
    }
    Ok(())
}

/// A minijinja environment set up as transformers sets up Jinja2 for chat templates.
fn environment(fuel: u64) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(false);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(fuel));
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", raise_exception);
    env.add_filter("tojson", tojson);
    env
}

/// `raise_exception(msg)`: the template's way of rejecting a conversation.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, format!("the template raised an exception: {message}")))
}

/// `tojson(indent=None, sort_keys=False)` as transformers defines it: `json.dumps` with
/// `ensure_ascii=False`, so `", "`/`": "` separators without indent and no HTML escaping.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_json(&value, indent, sort_keys.unwrap_or(false), 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(v: &Value, indent: Option<usize>, sort: bool, level: usize, out: &mut String) -> Result<(), Error> {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
            if v.as_i64().is_some() || !f.is_finite() {
                out.push_str(&v.to_string());
            } else {
                out.push_str(&serde_json::to_string(&f).map_err(json_err)?);
            }
        }
        ValueKind::String => out.push_str(&serde_json::to_string(v.as_str().unwrap_or_default()).map_err(json_err)?),
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if sort {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                let key = k.as_str().map(str::to_string).unwrap_or_else(|| k.to_string());
                out.push_str(&serde_json::to_string(&key).map_err(json_err)?);
                out.push_str(": ");
                write_json(&v.get_item(k)?, indent, sort, level + 1, out)?;
            }
            newline(out, level);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                write_json(item, indent, sort, level + 1, out)?;
            }
            newline(out, level);
            out.push(']');
        }
        _ => out.push_str(&serde_json::to_string(&v.to_string()).map_err(json_err)?),
    }
    Ok(())
}

fn json_err(e: serde_json::Error) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}"))
}

/// Collects rendered output and refuses to grow past `cap` bytes.
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            self.overflowed = true;
            return Err(std::io::Error::other("chat template output cap reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, messages: &[Message]) -> Result<String, TokenizerError> {
        ChatTemplate::new(src.into(), Some("<s>".into()), Some("</s>".into())).render(messages, true)
    }

    #[test]
    fn tojson_uses_python_spacing() {
        let out = render("{{ messages | tojson }}", &[Message::user("a<b> é \"q\"")]).unwrap();
        assert_eq!(out, r#"[{"role": "user", "content": "a<b> é \"q\""}]"#);
        let out = render("{{ messages[0] | tojson(indent=2) }}", &[Message::user("x")]).unwrap();
        assert_eq!(out, "{\n  \"role\": \"user\",\n  \"content\": \"x\"\n}");
    }

    #[test]
    fn blocks_are_trimmed_like_transformers() {
        let src = "{% for m in messages %}\n  {% if m.role == 'user' %}\n[{{ m.content.strip() }}]\n  {% endif %}\n{% endfor %}\n";
        assert_eq!(render(src, &[Message::user("  hi "), Message::assistant("x")]).unwrap(), "[hi]\n");
    }

    #[test]
    fn special_token_variables_and_undefined() {
        let t = ChatTemplate::new("{{ bos_token }}|{{ eos_token }}".into(), None, Some("E".into()));
        assert_eq!(t.render(&[], false).unwrap(), "|E");
    }
}
