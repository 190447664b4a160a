//! Tokenizers (from GGUF metadata or `tokenizer.json`) and chat templates.
//!
//! A [`Tokenizer`] wraps a Hugging Face `tokenizers::Tokenizer` together with the special-token
//! ids a model declares and its chat template, however the model was stored:
//!
//! - [`Tokenizer::from_gguf`] rebuilds the tokenizer from llama.cpp's `tokenizer.ggml.*` metadata
//!   the way transformers does when it loads a GGUF file (see `from_gguf.rs`, `spm.rs`);
//! - [`Tokenizer::from_hf_folder`] reads `tokenizer.json` (+ `tokenizer_config.json`);
//! - [`Tokenizer::save_hf`] writes a folder that transformers' `AutoTokenizer` loads identically.
//!
//! Two encoders are kept: [`Tokenizer::encode`] matches special tokens written in the text (what
//! transformers does, and what a rendered chat template needs), [`Tokenizer::encode_plain`] never
//! does, so that user content cannot forge `<|im_start|>`-style role boundaries.

mod chat_template;
mod from_gguf;
mod hf_files;
mod pre_tokenizer;
mod spm;

pub use chat_template::{ChatTemplate, Message, CHAT_ROLES};

use crate::assets::ModelSource;
use std::path::{Path, PathBuf};

/// Why a tokenizer or chat template could not be built or applied.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The tokenizer description is incomplete or inconsistent.
    #[error("tokenizer: {0}")]
    Invalid(String),
    /// A `tokenizer.*` GGUF metadata key is missing, has the wrong type or an unusable value.
    #[error("{path}: tokenizer metadata `{key}`: {reason}")]
    Metadata {
        /// The GGUF file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong and, where possible, what to do.
        reason: String,
    },
    /// A tokenizer file (`tokenizer.json`, `tokenizer_config.json`, ...) is missing or malformed.
    #[error("{path}: {reason}")]
    File {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong and, where possible, what to do.
        reason: String,
    },
    /// The `tokenizers` library failed to encode or decode.
    #[error("tokenizer: {what}: {reason}")]
    Codec {
        /// What was being done (`encoding`, `decoding`).
        what: &'static str,
        /// The library's message.
        reason: String,
    },
    /// A message's role is not one that chat templates are rendered with.
    #[error(
        "chat message {index}: role `{role}` is not supported: use one of system, user, assistant \
         (a system message may only be the first)"
    )]
    Role {
        /// Position of the message in the conversation (0-based).
        index: usize,
        /// The role it had.
        role: String,
    },
    /// A chat template failed to compile or render (syntax error, `raise_exception`, runaway
    /// loop, oversized output, ...).
    #[error("chat template `{name}`: {reason}")]
    Template {
        /// The template's name (where it came from).
        name: String,
        /// What went wrong.
        reason: String,
    },
}

/// A tokenizer with its model's special tokens and chat template.
#[derive(Clone)]
pub struct Tokenizer {
    /// Special tokens written in the text are matched (transformers' behaviour).
    inner: tokenizers::Tokenizer,
    /// The same tokenizer with special-token matching off (for untrusted content).
    plain: tokenizers::Tokenizer,
    bos: Option<SpecialToken>,
    eos: Option<SpecialToken>,
    pad: Option<SpecialToken>,
    unk: Option<SpecialToken>,
    add_bos: bool,
    add_eos: bool,
    /// Ids of the added tokens marked special (sorted).
    special_ids: Vec<u32>,
    chat_template: Option<ChatTemplate>,
}

/// A special token: its id and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SpecialToken {
    id: u32,
    content: String,
}

/// What a loader found, before it becomes a [`Tokenizer`].
pub(crate) struct Parts {
    /// The assembled tokenizer (model, pre-tokenizer, decoder, post-processor, added tokens).
    pub inner: tokenizers::Tokenizer,
    /// Beginning-of-sequence id.
    pub bos: Option<u32>,
    /// End-of-sequence id.
    pub eos: Option<u32>,
    /// Padding id.
    pub pad: Option<u32>,
    /// Unknown-token id.
    pub unk: Option<u32>,
    /// Whether encoding with special tokens prepends BOS, as declared (used only when a probe
    /// encoding fails).
    pub add_bos: bool,
    /// Whether encoding with special tokens appends EOS, as declared.
    pub add_eos: bool,
    /// `(name, source)` of the chat template, where the model has one.
    pub chat_template: Option<(String, String)>,
    /// Where the description came from (named in errors).
    pub origin: PathBuf,
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` metadata.
    ///
    /// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`) and SentencePiece-style vocabularies
    /// (`"llama"`, Gemma's included) are supported; see docs/tokenizer.md for the details.
    pub fn from_gguf(gguf: &crate::io::gguf::GgufFile) -> Result<Self, TokenizerError> {
        Self::from_parts(from_gguf::parts(gguf.path(), gguf.metadata())?)
    }

    /// Reads a Hugging Face tokenizer folder: `tokenizer.json`, plus `tokenizer_config.json`
    /// (special tokens, chat template) and `chat_template.jinja` where present.
    pub fn from_hf_folder(dir: &Path) -> Result<Self, TokenizerError> {
        Self::from_parts(hf_files::parts(dir)?)
    }

    /// The tokenizer of a resolved `--model` argument (GGUF file or Hugging Face folder).
    pub fn from_source(src: &ModelSource) -> crate::Result<Self> {
        match src {
            ModelSource::Gguf(path) => {
                let gguf = crate::io::gguf::GgufFile::open(path)?;
                Ok(Self::from_gguf(&gguf)?)
            }
            ModelSource::HfFolder(dir) => Ok(Self::from_hf_folder(dir)?),
        }
    }

    fn from_parts(parts: Parts) -> Result<Self, TokenizerError> {
        let Parts { inner, bos, eos, pad, unk, add_bos, add_eos, chat_template, origin } = parts;
        let special = |id: Option<u32>, what: &str| -> Result<Option<SpecialToken>, TokenizerError> {
            let Some(id) = id else { return Ok(None) };
            let content = inner.id_to_token(id).ok_or_else(|| TokenizerError::File {
                path: origin.clone(),
                reason: format!(
                    "{what} token id {id} is outside the vocabulary ({} tokens)",
                    inner.get_vocab_size(true)
                ),
            })?;
            Ok(Some(SpecialToken { id, content }))
        };
        let bos = special(bos, "BOS")?;
        let eos = special(eos, "EOS")?;
        let pad = special(pad, "padding")?;
        let unk = special(unk, "unknown")?;
        let chat_template = chat_template.map(|(name, source)| {
            ChatTemplate::new(source, bos.as_ref().map(|t| t.content.clone()), eos.as_ref().map(|t| t.content.clone()))
                .with_name(name)
        });
        // What `encode(text, true)` does is decided by the post-processor; report that, whatever
        // a config file claims.
        let (add_bos, add_eos) = match (inner.encode("a", true), inner.encode("a", false)) {
            (Ok(with), Ok(without)) if with.get_ids() != without.get_ids() => {
                let (with, without) = (with.get_ids(), without.get_ids());
                let id = |t: &Option<SpecialToken>| t.as_ref().map(|t| t.id);
                (
                    id(&bos).is_some() && with.first().copied() == id(&bos) && without.first() != with.first(),
                    id(&eos).is_some() && with.last().copied() == id(&eos) && without.last() != with.last(),
                )
            }
            (Ok(_), Ok(_)) => (false, false),
            _ => (add_bos, add_eos),
        };
        let mut special_ids: Vec<u32> =
            inner.get_added_tokens_decoder().into_iter().filter(|(_, t)| t.special).map(|(id, _)| id).collect();
        special_ids.sort_unstable();
        let mut plain = inner.clone();
        plain.set_encode_special_tokens(true);
        Ok(Self { inner, plain, bos, eos, pad, unk, add_bos, add_eos, special_ids, chat_template })
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) become their
    /// single ids, as in transformers. `add_special` adds BOS/EOS where the model asks for them.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, TokenizerError> {
        Ok(self.encode_with_tokens(text, add_special)?.0)
    }

    /// Like [`Tokenizer::encode`], also returning each id's token string.
    pub fn encode_with_tokens(&self, text: &str, add_special: bool) -> Result<(Vec<u32>, Vec<String>), TokenizerError> {
        let enc = self
            .inner
            .encode(text, add_special)
            .map_err(|e| TokenizerError::Codec { what: "encoding", reason: e.to_string() })?;
        Ok((enc.get_ids().to_vec(), enc.get_tokens().to_vec()))
    }

    /// Token ids of untrusted `text` with special-token matching off: `"<|im_end|>"` in user
    /// content becomes ordinary tokens (`<`, `|`, `im`, ...), never the special id. No BOS/EOS.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self
            .plain
            .encode(text, false)
            .map_err(|e| TokenizerError::Codec { what: "encoding", reason: e.to_string() })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`; special tokens are dropped when `skip_special`, kept verbatim otherwise.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| TokenizerError::Codec { what: "decoding", reason: e.to_string() })
    }

    /// The vocabulary entry of `id` (byte-level spelling, e.g. `Ġworld`), if it exists.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a vocabulary entry or added token, if it exists.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Whether `id` is a special token (control token: BOS, EOS, role markers, ...), the ids
    /// [`Tokenizer::encode_plain`] never produces and `decode(.., true)` drops.
    pub fn is_special(&self, id: u32) -> bool {
        self.special_ids.binary_search(&id).is_ok()
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Beginning-of-sequence id.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|t| t.id)
    }

    /// End-of-sequence id (generation stops here).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos.as_ref().map(|t| t.id)
    }

    /// Padding id.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad.as_ref().map(|t| t.id)
    }

    /// The id training batches are padded with: the padding id, else EOS, else 0 (padding is
    /// never a target, so which id it is does not matter beyond being in the vocabulary).
    pub fn batch_pad_id(&self) -> u32 {
        self.pad_id().or(self.eos_id()).unwrap_or(0)
    }

    /// Unknown-token id.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk.as_ref().map(|t| t.id)
    }

    /// Beginning-of-sequence token text (e.g. `<|im_start|>`).
    pub fn bos_token(&self) -> Option<&str> {
        self.bos.as_ref().map(|t| t.content.as_str())
    }

    /// End-of-sequence token text (e.g. `<|im_end|>`).
    pub fn eos_token(&self) -> Option<&str> {
        self.eos.as_ref().map(|t| t.content.as_str())
    }

    /// Padding token text.
    pub fn pad_token(&self) -> Option<&str> {
        self.pad.as_ref().map(|t| t.content.as_str())
    }

    /// Unknown token text.
    pub fn unk_token(&self) -> Option<&str> {
        self.unk.as_ref().map(|t| t.content.as_str())
    }

    /// Whether `encode(text, true)` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `encode(text, true)` appends EOS.
    pub fn adds_eos(&self) -> bool {
        self.add_eos
    }

    /// The model's chat template, with its BOS/EOS strings; `None` when the model has none.
    pub fn chat_template(&self) -> Option<ChatTemplate> {
        self.chat_template.clone()
    }

    /// The wrapped `tokenizers` tokenizer (special-token matching on).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .field("unk", &self.unk)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("chat_template", &self.chat_template.as_ref().map(|t| t.name().to_string()))
            .finish()
    }
}
