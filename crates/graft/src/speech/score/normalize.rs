//! The text normaliser applied to references and hypotheses before WER and CER: the rules of
//! Whisper's multilingual `BasicTextNormalizer` (with its defaults: diacritics kept, letters not
//! split), so that graft's rates compare with those published for Whisper and with the Hugging
//! Face fine-tuning recipe, which scores after the same normaliser.

use unicode_general_category::get_general_category;
use unicode_normalization::UnicodeNormalization;

/// Normalises `text` for scoring, in this order:
///
/// 1. lowercase (Unicode full case mapping);
/// 2. remove every span that opens with `[` or `<` and runs to the first `]` or `>` after it,
///    both included (`[laughter]`, `<unk>`); an opener with no closer after it stays;
/// 3. remove every span from `(` to the first `)` after it, when at least one character lies
///    between them (`(inaudible)`; `()` stays, and becomes spaces in step 4);
/// 4. NFKC (compatibility composition: `ﬁ` → `fi`, `²` → `2`, `e` + combining acute → `é`), then
///    replace every character whose Unicode general category is a mark (`M*`), a symbol (`S*`) or
///    punctuation (`P*`) by a space — so `l'homme` becomes `l homme`, `¿qué?` becomes ` qué `,
///    and letters with diacritics (`é`, `ñ`, `ü`, `ç`, `ß`, `ã`) stay as they are;
/// 5. lowercase again (NFKC can produce capitals);
/// 6. replace each run of whitespace by one space and trim both ends.
///
/// Steps 1–6 are Whisper's `BasicTextNormalizer()`, except the trim of step 6 (which changes no
/// word, and matches the strip jiwer applies before its character error rate). There is no
/// English variant (Whisper's `EnglishTextNormalizer` spells out numbers and standardises
/// spellings); English text gets these same rules.
pub fn normalize(text: &str) -> String {
    let lower = text.to_lowercase();
    let no_brackets = remove_spans(&lower, &['[', '<'], &[']', '>'], false);
    let no_parens = remove_spans(&no_brackets, &['('], &[')'], true);
    let cleaned: String = no_parens
        .nfkc()
        .map(|c| if is_mark_symbol_or_punctuation(c) { ' ' } else { c })
        .collect::<String>()
        .to_lowercase();
    let mut out = String::with_capacity(cleaned.len());
    for word in cleaned.split(is_space).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// Whether `c` is in one of the general categories Whisper's normaliser replaces by a space:
/// marks (`Mn`, `Mc`, `Me`), symbols (`Sm`, `Sc`, `Sk`, `So`) and punctuation (`Pc`, `Pd`, `Ps`,
/// `Pe`, `Pi`, `Pf`, `Po`).
fn is_mark_symbol_or_punctuation(c: char) -> bool {
    matches!(get_general_category(c).abbreviation().as_bytes().first(), Some(b'M' | b'S' | b'P'))
}

/// Whitespace as Python's `\s` sees it in a text pattern: Unicode white space, plus the
/// information separators U+001C–U+001F that Python also counts.
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `text` without the spans that start with one of `open` and end with the first of `close` after
/// it (both included); with `non_empty`, a span must hold at least one character besides its ends.
/// An opener without a closer after it is kept, and the scan moves on from the next character.
fn remove_spans(text: &str, open: &[char], close: &[char], non_empty: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let after = &rest[c.len_utf8()..];
        if open.contains(&c) {
            if let Some(end) = after.find(close) {
                if !(non_empty && end == 0) {
                    let closer = after[end..].chars().next().map_or(0, char::len_utf8);
                    rest = &after[end + closer..];
                    continue;
                }
            }
        }
        out.push(c);
        rest = after;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn case_punctuation_and_space() {
        assert_eq!(normalize("  Hello,   WORLD!\tHow are\nyou?  "), "hello world how are you");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize("?!... ---"), "");
        assert_eq!(normalize("a\u{1f}b"), "a b");
    }

    #[test]
    fn brackets_and_parentheses() {
        assert_eq!(normalize("Hi [laughter] there <unk> friend"), "hi there friend");
        assert_eq!(normalize("a [mixed> b"), "a b");
        assert_eq!(normalize("keep (inaudible) this"), "keep this");
        assert_eq!(normalize("an (unclosed paren"), "an unclosed paren");
        assert_eq!(normalize("empty () parens"), "empty parens");
        assert_eq!(normalize("a [b [c] d] e"), "a d e");
        assert_eq!(normalize("x ((y)) z"), "x z");
    }

    #[test]
    fn german_keeps_umlauts_and_sharp_s() {
        assert_eq!(normalize("Die Straße führt zur Brücke – „schön“, oder?"), "die straße führt zur brücke schön oder");
        assert_eq!(normalize("ÄRGER über Öl"), "ärger über öl");
    }

    #[test]
    fn spanish_keeps_accents_and_tilde() {
        assert_eq!(normalize("¿Qué año es? ¡El niño está aquí!"), "qué año es el niño está aquí");
    }

    #[test]
    fn french_apostrophes_split_words() {
        assert_eq!(normalize("L'homme n'est pas là; c'est « déjà » fini."), "l homme n est pas là c est déjà fini");
        // The typographic apostrophe is punctuation too.
        assert_eq!(normalize("Aujourd’hui, ça va"), "aujourd hui ça va");
    }

    #[test]
    fn portuguese_keeps_tildes_and_cedilla() {
        assert_eq!(normalize("Informação: não há ações (nenhuma)."), "informação não há ações");
    }

    #[test]
    fn compatibility_forms_and_combining_marks() {
        // Decomposed accents are composed first, so they stay letters.
        assert_eq!(normalize("cafe\u{301} Cafe\u{301}"), "café café");
        assert_eq!(normalize("ﬁnal x² ＡＢＣ"), "final x2 abc");
        // A mark that composes with nothing is replaced like punctuation.
        assert_eq!(normalize("a\u{301}\u{301}b"), "á b");
        assert_eq!(normalize("50 % of €5 + 3 = #1"), "50 of 5 3 1");
    }
}
