//! Hugging Face tokenizer folders: reading `tokenizer.json` + `tokenizer_config.json`
//! (+ `chat_template.jinja`), and writing them so that transformers' `AutoTokenizer` loads the
//! same tokenizer.

use super::{Parts, Tokenizer, TokenizerError};
use serde_json::{json, Map, Value};
use std::path::Path;

const TOKENIZER_JSON: &str = "tokenizer.json";
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
const MODEL_CONFIG: &str = "config.json";

fn file_err(path: &Path, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::File { path: path.to_path_buf(), reason: reason.into() }
}

fn read_json(path: &Path) -> Result<Option<Value>, TokenizerError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e.to_string()))?;
    serde_json::from_str(&text).map(Some).map_err(|e| file_err(path, format!("invalid JSON: {e}")))
}

/// A special token in `tokenizer_config.json`: a string, or an AddedToken object with `content`.
fn token_string(config: &Value, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// `chat_template` in `tokenizer_config.json`: a string, or a list of `{name, template}`
/// (the one named `default` is used, or the only one).
fn config_template(path: &Path, config: &Value) -> Result<Option<(String, String)>, TokenizerError> {
    let label = |name: &str| format!("{} (chat_template {name})", path.display());
    match config.get("chat_template") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some((format!("{} (chat_template)", path.display()), s.clone()))),
        Some(Value::Array(list)) => {
            let named: Vec<(&str, &str)> =
                list.iter().filter_map(|t| Some((t.get("name")?.as_str()?, t.get("template")?.as_str()?))).collect();
            let pick = named.iter().find(|(n, _)| *n == "default").or(match named.as_slice() {
                [only] => Some(only),
                _ => None,
            });
            match pick {
                Some((name, src)) => Ok(Some((label(name), src.to_string()))),
                None => Err(file_err(
                    path,
                    format!(
                        "chat_template lists {} templates ({}) and none is named `default`",
                        named.len(),
                        named.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    ),
                )),
            }
        }
        Some(_) => Err(file_err(path, "chat_template is neither a string nor a list of {name, template}")),
    }
}

/// The first id of `config.json`'s `key` (an integer or a list of integers).
fn config_id(config: Option<&Value>, key: &str) -> Option<u32> {
    let v = config?.get(key)?;
    let n = v.as_u64().or_else(|| v.as_array()?.first()?.as_u64())?;
    u32::try_from(n).ok()
}

/// Reads a Hugging Face tokenizer folder.
pub(crate) fn parts(dir: &Path) -> Result<Parts, TokenizerError> {
    let json_path = dir.join(TOKENIZER_JSON);
    if !json_path.is_file() {
        return Err(file_err(
            dir,
            "no tokenizer.json here: graft reads fast-tokenizer folders (save one with \
             transformers' `tokenizer.save_pretrained`), or give a GGUF file",
        ));
    }
    let mut inner =
        tokenizers::Tokenizer::from_file(&json_path).map_err(|e| file_err(&json_path, format!("cannot load: {e}")))?;
    // Padding and truncation saved in tokenizer.json (MiniLM's pads every text to 128 tokens)
    // are batch-time choices: graft pads by position and truncates where the task says.
    inner.with_padding(None);
    inner.with_truncation(None).map_err(|e| file_err(&json_path, format!("cannot switch truncation off: {e}")))?;
    let config_path = dir.join(TOKENIZER_CONFIG);
    let config = read_json(&config_path)?.unwrap_or(Value::Null);
    let model_config = read_json(&dir.join(MODEL_CONFIG))?;

    let id_of = |key: &str, id_key: &str| -> Result<Option<u32>, TokenizerError> {
        match token_string(&config, key) {
            Some(token) => inner.token_to_id(&token).map(Some).ok_or_else(|| {
                file_err(&config_path, format!("{key} `{token}` is not in tokenizer.json's vocabulary"))
            }),
            None => Ok(config_id(model_config.as_ref(), id_key)),
        }
    };
    let bos = id_of("bos_token", "bos_token_id")?;
    let eos = id_of("eos_token", "eos_token_id")?;
    let pad = id_of("pad_token", "pad_token_id")?;
    let unk = id_of("unk_token", "unk_token_id")?;
    let flag = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(false);

    let jinja_path = dir.join(CHAT_TEMPLATE_FILE);
    let chat_template = if jinja_path.is_file() {
        let src = std::fs::read_to_string(&jinja_path).map_err(|e| file_err(&jinja_path, e.to_string()))?;
        Some((jinja_path.display().to_string(), src))
    } else {
        config_template(&config_path, &config)?
    };
    Ok(Parts {
        inner,
        bos,
        eos,
        pad,
        unk,
        add_bos: flag("add_bos_token"),
        add_eos: flag("add_eos_token"),
        chat_template,
        origin: dir.to_path_buf(),
    })
}

impl Tokenizer {
    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir` (created if needed): the
    /// complete pipeline, the special tokens, `add_bos_token`/`add_eos_token` and the chat
    /// template, so that transformers' `AutoTokenizer.from_pretrained(dir)` and
    /// [`Tokenizer::from_hf_folder`] give the same ids and chat renders as this tokenizer.
    pub fn save_hf(&self, dir: &Path) -> Result<(), TokenizerError> {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e.to_string()))?;
        let json_path = dir.join(TOKENIZER_JSON);
        self.inner.save(&json_path, true).map_err(|e| file_err(&json_path, format!("cannot write: {e}")))?;

        let mut config = Map::new();
        config.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
        for (key, token) in [
            ("bos_token", self.bos_token()),
            ("eos_token", self.eos_token()),
            ("pad_token", self.pad_token()),
            ("unk_token", self.unk_token()),
        ] {
            config.insert(key.into(), token.map_or(Value::Null, |t| json!(t)));
        }
        config.insert("add_bos_token".into(), json!(self.add_bos));
        config.insert("add_eos_token".into(), json!(self.add_eos));
        config.insert("clean_up_tokenization_spaces".into(), json!(false));
        let mut added: Vec<_> = self.inner.get_added_tokens_decoder().into_iter().collect();
        added.sort_by_key(|(id, _)| *id);
        let decoder: Map<String, Value> = added
            .into_iter()
            .map(|(id, t)| {
                let entry = json!({
                    "content": t.content,
                    "lstrip": t.lstrip,
                    "normalized": t.normalized,
                    "rstrip": t.rstrip,
                    "single_word": t.single_word,
                    "special": t.special,
                });
                (id.to_string(), entry)
            })
            .collect();
        config.insert("added_tokens_decoder".into(), Value::Object(decoder));
        if let Some(t) = &self.chat_template {
            config.insert("chat_template".into(), json!(t.source()));
        }
        let config_path = dir.join(TOKENIZER_CONFIG);
        let text =
            serde_json::to_string_pretty(&Value::Object(config)).map_err(|e| file_err(&config_path, e.to_string()))?;
        std::fs::write(&config_path, text + "\n").map_err(|e| file_err(&config_path, e.to_string()))
    }
}
