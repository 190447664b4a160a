//! Sentences to speak, per language, from real text: the translated summaries of Debian's
//! AppStream metadata and the first sentences of the translated descriptions
//! ([`crate::datasets::appstream::read_localized`]).
//!
//! Each candidate is cleaned ([`clean`]): whitespace collapsed, then refused when it is too short
//! or too long (characters and words), holds a URL, digits (which a synthesiser reads in ways
//! the written text does not show), an emoticon or symbols other than plain punctuation, has a
//! letter outside the Latin script, or — for a translation — equals the untranslated English
//! text. Repeats (same words, ignoring case and punctuation) are kept once. The kept sentences
//! are sorted, then shuffled with a seed, so the order depends on the seed and the text only.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::datasets::appstream::{self, LocalizedText};
use crate::{GraftError, Result};

/// A language the speech data can be built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Language {
    /// ISO 639-1 code (`de`), as used in manifests and on the command line.
    pub code: &'static str,
    /// English name, for messages.
    pub name: &'static str,
    /// The AppStream locale key of its text (`C` is the untranslated English).
    pub appstream_key: &'static str,
    /// The espeak-ng voices (regional pronunciations) it is spoken with; each is combined with
    /// the voice variants of [`super::synth::VARIANTS`].
    pub espeak_voices: &'static [&'static str],
}

/// The languages the speech data can be built in.
pub const LANGUAGES: &[Language] = &[
    Language { code: "de", name: "German", appstream_key: "de", espeak_voices: &["de"] },
    Language { code: "en", name: "English", appstream_key: "C", espeak_voices: &["en-us", "en-gb"] },
    Language { code: "es", name: "Spanish", appstream_key: "es", espeak_voices: &["es", "es-419"] },
    Language { code: "fr", name: "French", appstream_key: "fr", espeak_voices: &["fr-fr", "fr-be"] },
    Language { code: "it", name: "Italian", appstream_key: "it", espeak_voices: &["it"] },
    Language { code: "pt", name: "Portuguese", appstream_key: "pt", espeak_voices: &["pt", "pt-br"] },
];

/// Fewest characters a sentence may have.
pub const MIN_CHARS: usize = 20;
/// Most characters a sentence may have.
pub const MAX_CHARS: usize = 160;
/// Fewest words a sentence may have.
pub const MIN_WORDS: usize = 4;
/// Most words a sentence may have.
pub const MAX_WORDS: usize = 24;

/// Punctuation a sentence may hold besides letters and spaces.
const PUNCTUATION: &str = ".,;:!?'\"()-–—’‘“”„«»¿¡…";

/// The language with this code, or an error listing the known ones.
pub fn language(code: &str) -> Result<&'static Language> {
    LANGUAGES.iter().find(|l| l.code == code).ok_or_else(|| {
        let known: Vec<&str> = LANGUAGES.iter().map(|l| l.code).collect();
        GraftError::Input(format!("unknown language `{code}`: the speech data knows {}", known.join(", ")))
    })
}

/// The sentences of one language, and what was left out.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LanguageSentences {
    /// The kept sentences in seeded order.
    pub sentences: Vec<String>,
    /// Candidates seen (summaries and first description sentences).
    pub candidates: usize,
    /// Candidates left out, by reason (`too_short`, `too_long`, `url`, `digits`, `symbols`,
    /// `script`, `untranslated`, `duplicate`).
    pub skipped: BTreeMap<String, usize>,
}

/// Why [`clean`] refused a text.
pub type Skip = &'static str;

/// The text with its whitespace collapsed, or why it cannot be a sentence to speak.
pub fn clean(text: &str) -> std::result::Result<String, Skip> {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let n_chars = text.chars().count();
    let n_words = text.split(' ').filter(|w| w.chars().any(char::is_alphabetic)).count();
    if n_chars < MIN_CHARS || n_words < MIN_WORDS {
        return Err("too_short");
    }
    if n_chars > MAX_CHARS || n_words > MAX_WORDS {
        return Err("too_long");
    }
    let lower = text.to_lowercase();
    if lower.contains("://") || lower.contains("www.") {
        return Err("url");
    }
    if [":-", ";-", ":)", ";)", ":(", ";("].iter().any(|e| text.contains(e)) {
        return Err("symbols"); // an emoticon
    }
    for c in text.chars() {
        if c.is_numeric() {
            return Err("digits");
        }
        if c.is_alphabetic() {
            if !is_latin(c) {
                return Err("script");
            }
        } else if c != ' ' && !PUNCTUATION.contains(c) {
            return Err("symbols");
        }
    }
    Ok(text)
}

/// Whether a letter belongs to the Latin script (Basic Latin, Latin-1, Latin Extended-A/B and
/// Additional).
fn is_latin(c: char) -> bool {
    matches!(c, 'a'..='z' | 'A'..='Z' | 'ª' | 'º' | '\u{c0}'..='\u{24f}' | '\u{1e00}'..='\u{1eff}')
}

/// The words of a text, lowercased, without punctuation: two texts with the same key are one
/// sentence.
fn dedup_key(text: &str) -> String {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first sentence of a plain-text description: its first paragraph up to the first `.`,
/// `!` or `?` that a space and a capital letter follow (or the whole paragraph). `None` when
/// the description starts with a list item.
pub fn first_sentence(description: &str) -> Option<&str> {
    let para = description.lines().next()?.trim();
    if para.starts_with("- ") {
        return None;
    }
    let chars: Vec<(usize, char)> = para.char_indices().collect();
    for w in chars.windows(3) {
        let [(_, p), (_, ' '), (_, next)] = w else { continue };
        if matches!(p, '.' | '!' | '?') && next.is_uppercase() {
            return Some(&para[..w[1].0]);
        }
    }
    Some(para)
}

/// The candidate sentences of `lang` in `texts`, in file order: each component's summary, then
/// the first sentence of its description. A translation equal to the English text (case
/// ignored) is an untranslated entry and gives `Err("untranslated")`.
fn candidates<'a>(
    texts: &'a [LocalizedText],
    lang: &'a Language,
) -> impl Iterator<Item = std::result::Result<&'a str, Skip>> + 'a {
    let key = lang.appstream_key;
    texts.iter().flat_map(move |t| {
        let english_summary = t.summaries.get("C").map(String::as_str);
        let english_first = t.descriptions.get("C").and_then(|d| first_sentence(d));
        let summary = t.summaries.get(key).map(|s| (s.as_str(), english_summary));
        let description = t.descriptions.get(key).and_then(|d| first_sentence(d)).map(|s| (s, english_first));
        [summary, description].into_iter().flatten().map(move |(text, english)| {
            if key != "C" && english.is_some_and(|e| e.trim().eq_ignore_ascii_case(text.trim())) {
                Err("untranslated")
            } else {
                Ok(text)
            }
        })
    })
}

/// The cleaned, deduplicated sentences of `lang` in `texts`, sorted, then shuffled with `seed`
/// (a per-language stream: another language's sentences never change this order).
pub fn sentences(texts: &[LocalizedText], lang: &Language, seed: u64) -> LanguageSentences {
    let mut out = LanguageSentences::default();
    let mut seen = HashSet::new();
    for candidate in candidates(texts, lang) {
        out.candidates += 1;
        match candidate.and_then(clean) {
            Ok(s) if seen.insert(dedup_key(&s)) => out.sentences.push(s),
            Ok(_) => *out.skipped.entry("duplicate".into()).or_default() += 1,
            Err(why) => *out.skipped.entry(why.into()).or_default() += 1,
        }
    }
    out.sentences.sort();
    out.sentences.shuffle(&mut ChaCha8Rng::seed_from_u64(sub_seed(seed, lang.code)));
    out
}

/// A seed for one named stream of draws: SHA-256 of `seed` and `tag`, first 8 bytes.
pub fn sub_seed(seed: u64, tag: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(tag.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    u64::from_le_bytes(first)
}

/// Reads the AppStream `files` and returns the sentences of each of `langs`, in that order.
pub fn read_sentences(files: &[PathBuf], langs: &[&Language], seed: u64) -> Result<Vec<LanguageSentences>> {
    let mut locales: Vec<&str> = langs.iter().map(|l| l.appstream_key).collect();
    locales.push("C");
    locales.sort();
    locales.dedup();
    let mut texts = Vec::new();
    let mut seen = HashSet::new();
    for f in files {
        texts.extend(appstream::read_localized(f, &locales)?.into_iter().filter(|t| seen.insert(t.id.clone())));
    }
    Ok(langs.iter().map(|l| sentences(&texts, l, seed)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_rules() {
        let ok = "Zeigt die Daten in der Seitenleiste an";
        assert_eq!(clean(&format!("  {}\n", ok.replace(' ', "  "))), Ok(ok.to_string()));
        assert_eq!(clean("Muy corto aquí"), Err("too_short"));
        assert_eq!(clean(&"palabra ".repeat(30)), Err("too_long"));
        assert_eq!(clean("Besuchen Sie www.example.org für mehr"), Err("url"));
        assert_eq!(clean("Ein Spiel für 2 Spieler am Computer"), Err("digits"));
        assert_eq!(clean("Ein Editor für C++ und andere Sprachen"), Err("symbols"));
        assert_eq!(clean("Ein Programm für Musik (spielen ;-) am Rechner"), Err("symbols"));
        assert_eq!(clean("Un éditeur de texte Юникод pour tous"), Err("script"));
        assert_eq!(clean("¿Dónde está el archivo, señor García?"), Ok("¿Dónde está el archivo, señor García?".into()));
        assert_eq!(
            clean("L’éditeur « simple » et rapide — voilà."),
            Ok("L’éditeur « simple » et rapide — voilà.".into())
        );
    }

    #[test]
    fn first_sentences() {
        assert_eq!(first_sentence("Ein Programm. Es tut etwas.\nMehr."), Some("Ein Programm."));
        assert_eq!(first_sentence("Version 2.0 ist da. Neu!"), Some("Version 2.0 ist da."));
        assert_eq!(first_sentence("Ein Satz ohne Punkt am Ende"), Some("Ein Satz ohne Punkt am Ende"));
        assert_eq!(first_sentence("- ein Punkt\nText"), None);
    }

    fn text(id: &str, summaries: &[(&str, &str)], descriptions: &[(&str, &str)]) -> LocalizedText {
        let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        LocalizedText { id: id.into(), summaries: map(summaries), descriptions: map(descriptions) }
    }

    #[test]
    fn sentences_are_deduplicated_untranslated_text_dropped_and_order_seeded() {
        let texts = vec![
            text("a", &[("C", "Shows the map of the world"), ("de", "Zeigt die Karte der Welt an")], &[]),
            text("b", &[("C", "A simple text editor for you"), ("de", "A simple text editor for you")], &[]),
            text("c", &[("de", "zeigt die Karte der Welt an!")], &[("de", "Ein kleines Programm zum Malen. Mehr.")]),
            text("d", &[("de", "Ein Werkzeug für alle Dateien")], &[("de", "- Liste")]),
        ];
        let de = language("de").unwrap();
        let got = sentences(&texts, de, 1);
        assert_eq!(got.candidates, 5, "a description that starts with a list item gives none");
        let mut sorted = got.sentences.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            ["Ein Werkzeug für alle Dateien", "Ein kleines Programm zum Malen.", "Zeigt die Karte der Welt an"]
        );
        let skipped: Vec<(&str, usize)> = got.skipped.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(skipped, [("duplicate", 1), ("untranslated", 1)]);
        assert_eq!(sentences(&texts, de, 1).sentences, got.sentences, "the same seed gives the same order");
        let orders: HashSet<Vec<String>> = (0..20).map(|s| sentences(&texts, de, s).sentences).collect();
        assert!(orders.len() > 1, "the seed changes the order");
        let en = sentences(&texts, language("en").unwrap(), 1);
        assert_eq!(en.sentences.len(), 2, "English text is never `untranslated`: {:?}", en.skipped);
    }

    #[test]
    fn unknown_languages_are_refused() {
        let e = language("xx").unwrap_err().to_string();
        assert!(e.contains("`xx`") && e.contains("de, en, es, fr, it, pt"), "{e}");
    }
}
