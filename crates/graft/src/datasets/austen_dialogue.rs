//! The dialogue of Jane Austen's novels: what the characters say, and conversational turns (one
//! speech, then the next paragraph's speech in reply), read from a chapter's paragraphs
//! ([`super::austen::Chapter`]).
//!
//! - A paragraph is *speech* when it opens with a double quote (`"` or `“`, after spaces):
//!   the novels give every new speaker a new paragraph that starts with the speech, so a
//!   quotation inside narration (a title, a word someone used) is not taken for dialogue.
//! - Its words are the quoted segments: a straight `"` alternately opens and closes, `“` opens
//!   and `”` closes. The segments are trimmed and joined with single spaces, which drops the
//!   narration between them (`"Well," said Elinor, "for one morning"` gives `Well, for one
//!   morning`); a comma that ended the last segment, where the narration took over, becomes a
//!   full stop.
//! - A quote left open at the paragraph's end is the convention for a speech that goes on in the
//!   next paragraph, which opens with a quote again: the two are one speech.
//! - A *turn* is two consecutive speeches of one chapter: the first is the line, the second the
//!   reply (a new paragraph is, in these novels, almost always a new speaker). A paragraph of
//!   narration between them breaks the chain; a chain of speeches `A B C` gives `A→B` and `B→C`.

/// One speech: what a character says in a paragraph (or in several, when a quote stays open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speech {
    /// Index of the speech's first paragraph in the chapter.
    pub paragraph: usize,
    /// The quoted words (see the module documentation).
    pub text: String,
}

/// A conversational turn: a speech and the speech that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// What was said.
    pub line: String,
    /// The answer, from the next paragraph.
    pub reply: String,
}

/// The quoted segments of `paragraph`, trimmed, in order, and whether the last quote is left
/// open (the segment then runs to the end of the paragraph). Empty segments are dropped.
pub fn quoted_segments(paragraph: &str) -> (Vec<String>, bool) {
    let mut segments = Vec::new();
    let mut open: Option<usize> = None;
    let push = |s: &str, out: &mut Vec<String>| {
        let s = s.trim();
        if !s.is_empty() {
            out.push(s.to_string());
        }
    };
    for (i, c) in paragraph.char_indices() {
        match (c, open) {
            ('"' | '“', None) => open = Some(i + c.len_utf8()),
            ('"' | '”', Some(start)) => {
                push(&paragraph[start..i], &mut segments);
                open = None;
            }
            _ => {}
        }
    }
    if let Some(start) = open {
        push(&paragraph[start..], &mut segments);
    }
    (segments, open.is_some())
}

/// Whether `paragraph` is speech: its first character after spaces opens a double quote.
pub fn is_speech(paragraph: &str) -> bool {
    paragraph.trim_start().starts_with(['"', '“'])
}

/// The chapter's speeches in order (see the module documentation): speech paragraphs with at
/// least one letter in their quotes, a paragraph whose quote stays open joined with the
/// speech paragraph after it.
pub fn speeches(paragraphs: &[String]) -> Vec<Speech> {
    let mut out: Vec<Speech> = Vec::new();
    // Whether the previous paragraph was speech whose quote stayed open.
    let mut continues = false;
    for (i, p) in paragraphs.iter().enumerate() {
        if !is_speech(p) {
            continues = false;
            continue;
        }
        let (segments, open) = quoted_segments(p);
        let words = segments.join(" ");
        match out.last_mut() {
            Some(last) if continues => {
                last.text.push(' ');
                last.text.push_str(&words);
            }
            _ => out.push(Speech { paragraph: i, text: words }),
        }
        continues = open;
    }
    // Tidy each speech, and drop those with no letter (a quote of punctuation only).
    out.retain_mut(|s| {
        if s.text.ends_with(',') {
            s.text.pop();
            s.text.push('.');
        }
        s.text.chars().any(char::is_alphabetic)
    });
    out
}

/// The chapter's turns: each speech with the speech that follows it directly, when that one
/// starts in the paragraph right after the first one ends.
pub fn turns(paragraphs: &[String]) -> Vec<Turn> {
    let speeches = speeches(paragraphs);
    let mut out = Vec::new();
    for pair in speeches.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if ends_just_before(paragraphs, a.paragraph, b.paragraph) {
            out.push(Turn { line: a.text.clone(), reply: b.text.clone() });
        }
    }
    out
}

/// Whether every paragraph from `first` up to (not including) `next` belongs to the speech that
/// starts at `first`: all of them are speech paragraphs, each before the last left open.
fn ends_just_before(paragraphs: &[String], first: usize, next: usize) -> bool {
    (first..next).all(|i| is_speech(&paragraphs[i]) && (i + 1 == next || quoted_segments(&paragraphs[i]).1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paras(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quotes_are_extracted_exactly() {
        let (s, open) =
            quoted_segments(r#""Well, Marianne," said Elinor, "for ONE morning I think you have done well.""#);
        assert_eq!(s, ["Well, Marianne,", "for ONE morning I think you have done well."]);
        assert!(!open);
        let (s, open) = quoted_segments("“Oh!” cried she, “I am so glad”—and stopped.");
        assert_eq!(s, ["Oh!", "I am so glad"]);
        assert!(!open);
        let (s, open) = quoted_segments(r#""I have more to say.   And it goes on"#);
        assert_eq!(s, ["I have more to say.   And it goes on"]);
        assert!(open);
        assert_eq!(quoted_segments("No speech here.").0, Vec::<String>::new());
        assert_eq!(quoted_segments(r#""" said nobody"#).0, Vec::<String>::new());
    }

    #[test]
    fn speeches_join_segments_and_open_quotes_and_skip_narration() {
        let p = paras(&[
            "The morning was fine.",
            r#""That is exactly what I think of him," cried Marianne."#,
            r#"She laughed at "romantic" notions."#,
            r#""My dear," said he, "let me go on. It is long"#,
            r#""and it ends here.""#,
            r#""--!" "#,
        ]);
        let s = speeches(&p);
        assert_eq!(
            s,
            [
                Speech { paragraph: 1, text: "That is exactly what I think of him.".into() },
                Speech { paragraph: 3, text: "My dear, let me go on. It is long and it ends here.".into() },
            ]
        );
    }

    #[test]
    fn turns_pair_consecutive_speeches_and_narration_breaks_them() {
        let p = paras(&[
            r#""Is it very ugly?" asked Mrs. Palmer."#,
            r#""As vile a spot as I ever saw," said Mr. Palmer."#,
            r#""Then it must be another place. It is long"#,
            r#""and pretty.""#,
            r#""Not at all.""#,
            "Marianne said nothing for some time.",
            r#""Shall we walk?""#,
        ]);
        let t = turns(&p);
        let got: Vec<(&str, &str)> = t.iter().map(|t| (t.line.as_str(), t.reply.as_str())).collect();
        assert_eq!(
            got,
            [
                ("Is it very ugly?", "As vile a spot as I ever saw."),
                ("As vile a spot as I ever saw.", "Then it must be another place. It is long and pretty."),
                ("Then it must be another place. It is long and pretty.", "Not at all."),
            ]
        );
        assert!(turns(&paras(&["Narration.", "More narration."])).is_empty());
        assert!(turns(&paras(&[r#""Alone.""#])).is_empty());
    }
}
