//! Validation of model hyperparameters read from files (GGUF metadata, `config.json`): ranges,
//! relations between values, and agreement with the shapes of the stored tensors.
//!
//! A model file is untrusted input: a head count of 0 divides by zero, a context length of
//! 2^32 sizes a RoPE table in terabytes, a block count of 2^32 sizes a vector of blocks. Both
//! model families (Llama, BERT) check every value through [`Checks`] before it is used, so the
//! bounds live here, once; errors name the key as the file spells it (`llama.attention.head_count`
//! in a GGUF file, `num_attention_heads` in `config.json`) and the value found. The bounds are
//! listed in `docs/formats.md`.

use serde_json::{Map, Value};
use std::fmt;

/// Most token embeddings (the largest released vocabularies have about 2^18).
pub const MAX_VOCAB: usize = 1 << 21;
/// Widest residual stream (the largest released models use 2^14 to 2^15).
pub const MAX_HIDDEN: usize = 1 << 16;
/// Widest feed-forward layer.
pub const MAX_FFN: usize = 1 << 18;
/// Most blocks.
pub const MAX_LAYERS: usize = 1024;
/// Most attention heads (query or key/value).
pub const MAX_HEADS: usize = 1024;
/// Widest attention head.
pub const MAX_HEAD_DIM: usize = 1024;
/// Longest context. Nothing is allocated in proportion to it (RoPE tables are capped
/// separately), the bound only refuses nonsense.
pub const MAX_CONTEXT: usize = 1 << 24;
/// Most token types (BERT segments; checkpoints have 2).
pub const MAX_TYPE_VOCAB: usize = 1 << 16;
/// Largest normalisation ε accepted (checkpoints use 1e-12 to 1e-5).
pub const MAX_NORM_EPS: f64 = 1.0;

/// A hyperparameter that is out of range or disagrees with another one.
#[derive(Debug, Clone, PartialEq)]
pub struct HparamError {
    /// The key, as the file names it.
    pub key: String,
    /// What is wrong, with the value found.
    pub reason: String,
}

impl fmt::Display for HparamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.key, self.reason)
    }
}

impl std::error::Error for HparamError {}

/// One dimension of an expected tensor shape: the product of hyperparameters, each given by its
/// `config.json` name and value, so a mismatch can say which keys produced the expectation.
#[derive(Debug, Clone, Copy)]
pub struct Dim<'a>(pub &'a [(&'static str, usize)]);

impl Dim<'_> {
    /// The expected size (the product of the factors; the factors are bounded, so no overflow).
    pub fn size(&self) -> usize {
        self.0.iter().map(|&(_, v)| v).product()
    }
}

/// Checks with the file's key names: `name` maps a `config.json` field name to the key the file
/// uses (the identity for `config.json`, `llama.*` / `tokenizer.ggml.*` keys for GGUF).
pub struct Checks<'a> {
    name: &'a dyn Fn(&str) -> String,
}

impl<'a> Checks<'a> {
    /// Checks whose errors spell keys through `name`.
    pub fn new(name: &'a dyn Fn(&str) -> String) -> Self {
        Self { name }
    }

    /// The file's name for field `field`.
    pub fn key(&self, field: &str) -> String {
        (self.name)(field)
    }

    /// An error for `field`.
    pub fn fail(&self, field: &str, reason: impl Into<String>) -> HparamError {
        HparamError { key: self.key(field), reason: reason.into() }
    }

    /// `min ≤ value ≤ max`.
    pub fn count(&self, field: &str, value: usize, min: usize, max: usize) -> Result<(), HparamError> {
        if value < min || value > max {
            return Err(self.fail(field, format!("found {value}, must be between {min} and {max}")));
        }
        Ok(())
    }

    /// A finite `value` with `min ≤ value ≤ max` (NaN and infinities are refused; `max` may be
    /// `f64::MAX` for no upper bound).
    pub fn float(&self, field: &str, value: f64, min: f64, max: f64) -> Result<(), HparamError> {
        if !value.is_finite() || value < min || value > max {
            let range = if max == f64::MAX {
                format!("at least {}", short(min))
            } else {
                format!("between {} and {}", short(min), short(max))
            };
            return Err(self.fail(field, format!("found {}, must be a finite number {range}", short(value))));
        }
        Ok(())
    }

    /// `part` (field `part_field`) divides `whole` (field `whole_field`).
    pub fn divides(&self, part_field: &str, part: usize, whole_field: &str, whole: usize) -> Result<(), HparamError> {
        if part == 0 || !whole.is_multiple_of(part) {
            let whole_key = self.key(whole_field);
            return Err(self.fail(part_field, format!("found {part}, must divide `{whole_key}` ({whole})")));
        }
        Ok(())
    }

    /// A token id, when present, names a row of the vocabulary (field `vocab_field`).
    pub fn token_id(&self, field: &str, id: Option<u32>, vocab_field: &str, vocab: usize) -> Result<(), HparamError> {
        match id {
            Some(id) if id as usize >= vocab => {
                let vocab_key = self.key(vocab_field);
                Err(self.fail(field, format!("found {id}, outside the vocabulary of {vocab} tokens (`{vocab_key}`)")))
            }
            _ => Ok(()),
        }
    }

    /// Tensor `tensor` (as the file names it) has shape `found` (`None`: it is missing), which
    /// must be `expected`. The error names the keys behind every dimension that differs.
    pub fn shape(&self, tensor: &str, found: Option<&[usize]>, expected: &[Dim<'_>]) -> Result<(), String> {
        let want: Vec<usize> = expected.iter().map(Dim::size).collect();
        let Some(found) = found else {
            return Err(format!("tensor `{tensor}` (shape {want:?}) is missing"));
        };
        if found == want.as_slice() {
            return Ok(());
        }
        let mut why = Vec::new();
        for (i, d) in expected.iter().enumerate() {
            if found.get(i) != Some(&d.size()) {
                let factors: Vec<String> = d.0.iter().map(|&(f, v)| format!("`{}` = {v}", self.key(f))).collect();
                why.push(format!("dimension {i} from {}", factors.join(" × ")));
            }
        }
        if why.is_empty() {
            why.push(format!("{} dimensions expected", want.len()));
        }
        Err(format!("tensor `{tensor}` has shape {found:?}, expected {want:?} ({})", why.join("; ")))
    }
}

/// A float as a reader would write it: plain in `[1e-4, 1e6)`, else in scientific notation.
fn short(x: f64) -> String {
    if x == 0.0 || !x.is_finite() || (1e-4..1e6).contains(&x.abs()) {
        format!("{x}")
    } else {
        format!("{x:e}")
    }
}

/// The JSON type a `config.json` field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonKind {
    /// A non-negative integer (a size or count).
    Count,
    /// A token id (an integer that fits in u32).
    TokenId,
    /// A number.
    Number,
    /// A string.
    Text,
}

/// Checks the types of the listed fields of a `config.json` object before it is deserialized,
/// so a wrong type is reported with its key (serde's messages give only a line and column).
/// `fields` lists `(name, kind, optional)`; optional fields may be absent or `null`, required
/// ones may be absent too (deserialization then reports them as missing).
pub fn check_json_types(obj: &Map<String, Value>, fields: &[(&str, JsonKind, bool)]) -> Result<(), HparamError> {
    for &(field, kind, optional) in fields {
        let Some(v) = obj.get(field) else { continue };
        let ok = match (kind, v) {
            (_, Value::Null) => optional,
            (JsonKind::Count, v) => v.as_u64().is_some_and(|n| usize::try_from(n).is_ok()),
            (JsonKind::TokenId, v) => v.as_u64().is_some_and(|n| u32::try_from(n).is_ok()),
            (JsonKind::Number, v) => v.is_number(),
            (JsonKind::Text, v) => v.is_string(),
        };
        if !ok {
            let want = match kind {
                JsonKind::Count => "a non-negative integer",
                JsonKind::TokenId => "a token id (an integer from 0 to 4294967295)",
                JsonKind::Number => "a number",
                JsonKind::Text => "a string",
            };
            let mut shown = v.to_string();
            if shown.len() > 40 {
                shown = format!("{}…", shown.chars().take(40).collect::<String>());
            }
            return Err(HparamError { key: field.to_string(), reason: format!("found {shown}, must be {want}") });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gguf_name(field: &str) -> String {
        format!("x.{field}")
    }

    #[test]
    fn errors_name_the_key_and_the_value() {
        let c = Checks::new(&gguf_name);
        assert_eq!(c.count("heads", 0, 1, 8).unwrap_err().to_string(), "`x.heads`: found 0, must be between 1 and 8");
        assert!(c.count("heads", 8, 1, 8).is_ok());
        for (bad, shown) in [(f64::NAN, "NaN"), (f64::INFINITY, "inf"), (0.0, "0"), (-1e-5, "-1e-5"), (2.0, "2")] {
            let e = c.float("eps", bad, 1e-30, 1.0).unwrap_err().to_string();
            assert_eq!(e, format!("`x.eps`: found {shown}, must be a finite number between 1e-30 and 1"));
        }
        assert!(c.float("eps", 1e-30, 1e-30, 1.0).is_ok() && c.float("eps", 1.0, 1e-30, 1.0).is_ok());
        let e = c.float("theta", 1e300, 2.0, f64::MAX).map(|_| ()).and(c.float("theta", 0.5, 2.0, f64::MAX));
        assert_eq!(e.unwrap_err().to_string(), "`x.theta`: found 0.5, must be a finite number at least 2");
        let e = c.divides("kv", 2, "heads", 9).unwrap_err().to_string();
        assert_eq!(e, "`x.kv`: found 2, must divide `x.heads` (9)");
        assert!(c.divides("kv", 0, "heads", 9).is_err() && c.divides("kv", 3, "heads", 9).is_ok());
        let e = c.token_id("bos", Some(10), "vocab", 10).unwrap_err().to_string();
        assert_eq!(e, "`x.bos`: found 10, outside the vocabulary of 10 tokens (`x.vocab`)");
        assert!(c.token_id("bos", Some(9), "vocab", 10).is_ok() && c.token_id("bos", None, "vocab", 0).is_ok());
    }

    #[test]
    fn shape_errors_name_the_keys_behind_each_wrong_dimension() {
        let c = Checks::new(&gguf_name);
        let want = [Dim(&[("heads", 2), ("head_dim", 4)]), Dim(&[("hidden", 8)])];
        assert!(c.shape("q", Some(&[8, 8]), &want).is_ok());
        let e = c.shape("q", Some(&[16, 8]), &want).unwrap_err();
        assert_eq!(
            e,
            "tensor `q` has shape [16, 8], expected [8, 8] (dimension 0 from `x.heads` = 2 × `x.head_dim` = 4)"
        );
        assert!(c.shape("q", Some(&[8]), &want).unwrap_err().contains("`x.hidden` = 8"));
        assert!(c.shape("q", Some(&[8, 8, 1]), &want).unwrap_err().contains("2 dimensions expected"));
        assert_eq!(c.shape("q", None, &want).unwrap_err(), "tensor `q` (shape [8, 8]) is missing");
    }

    #[test]
    fn json_types_are_checked_by_key() {
        let obj = |text: &str| serde_json::from_str::<Map<String, Value>>(text).unwrap();
        let fields = [("n", JsonKind::Count, false), ("id", JsonKind::TokenId, true), ("eps", JsonKind::Number, false)];
        assert!(check_json_types(&obj(r#"{"n": 3, "id": null, "eps": 1e-5, "other": "x"}"#), &fields).is_ok());
        assert!(check_json_types(&obj(r#"{}"#), &fields).is_ok());
        for (text, key) in [
            (r#"{"n": -1}"#, "`n`: found -1"),
            (r#"{"n": 2.5}"#, "`n`: found 2.5"),
            (r#"{"n": null}"#, "`n`: found null"),
            (r#"{"id": 4294967296}"#, "`id`: found 4294967296"),
            (r#"{"eps": "small"}"#, "`eps`: found \"small\""),
        ] {
            let e = check_json_types(&obj(text), &fields).unwrap_err().to_string();
            assert!(e.starts_with(key), "{text}: {e}");
        }
    }
}
