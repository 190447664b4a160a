//! Levenshtein alignment of a reference with a hypothesis (words or characters), counting the
//! substitutions, deletions and insertions of a minimal alignment.

use serde::Serialize;
use std::ops::AddAssign;

/// The edits of a minimal alignment of a hypothesis against its reference, and the reference's
/// length: the numerator and denominator of an error rate. Counts of several utterances add up,
/// which is how a corpus rate is formed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EditCounts {
    /// Reference tokens (words or characters).
    pub reference: usize,
    /// Reference tokens replaced by another token.
    pub substitutions: usize,
    /// Reference tokens missing from the hypothesis.
    pub deletions: usize,
    /// Hypothesis tokens with no reference token.
    pub insertions: usize,
}

impl EditCounts {
    /// Substitutions + deletions + insertions: the Levenshtein distance.
    pub fn edits(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// Edits per reference token; `None` when the reference is empty (the rate is undefined).
    pub fn rate(&self) -> Option<f64> {
        (self.reference > 0).then(|| self.edits() as f64 / self.reference as f64)
    }
}

impl AddAssign for EditCounts {
    fn add_assign(&mut self, o: Self) {
        self.reference += o.reference;
        self.substitutions += o.substitutions;
        self.deletions += o.deletions;
        self.insertions += o.insertions;
    }
}

/// Aligns `hypothesis` to `reference` with unit costs and counts the edits of a minimal alignment.
///
/// The total is the Levenshtein distance. Where several minimal alignments exist (`a b` → `b a`:
/// two substitutions, or a deletion and an insertion), the one kept prefers, cell by cell, a match
/// or substitution, then a deletion, then an insertion; only the total is the same for every
/// minimal alignment. Time is the product of the lengths, memory linear in the hypothesis length.
pub fn align<T: PartialEq>(reference: &[T], hypothesis: &[T]) -> EditCounts {
    let empty = EditCounts::default();
    // prev[j]: the best alignment of the first i-1 reference tokens with the first j hypothesis tokens.
    let mut prev: Vec<EditCounts> = (0..=hypothesis.len()).map(|j| EditCounts { insertions: j, ..empty }).collect();
    let mut cur = prev.clone();
    for (i, r) in reference.iter().enumerate() {
        cur[0] = EditCounts { deletions: i + 1, ..empty };
        for (j, h) in hypothesis.iter().enumerate() {
            let mut diag = prev[j];
            if r != h {
                diag.substitutions += 1;
            }
            let mut del = prev[j + 1];
            del.deletions += 1;
            let mut ins = cur[j];
            ins.insertions += 1;
            let mut best = diag;
            for c in [del, ins] {
                if c.edits() < best.edits() {
                    best = c;
                }
            }
            cur[j + 1] = best;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    EditCounts { reference: reference.len(), ..prev[hypothesis.len()] }
}

#[cfg(test)]
mod tests {
    use super::{align, EditCounts};

    fn words(s: &str) -> Vec<&str> {
        s.split_whitespace().collect()
    }

    fn counts(reference: usize, s: usize, d: usize, i: usize) -> EditCounts {
        EditCounts { reference, substitutions: s, deletions: d, insertions: i }
    }

    #[test]
    fn identical_empty_and_one_sided() {
        assert_eq!(align(&words("a b c"), &words("a b c")), counts(3, 0, 0, 0));
        assert_eq!(align::<&str>(&[], &[]), counts(0, 0, 0, 0));
        // Empty hypothesis: every reference word is deleted, WER 1.
        assert_eq!(align(&words("a b c"), &[]), counts(3, 0, 3, 0));
        assert_eq!(align(&words("a b c"), &[]).rate(), Some(1.0));
        // Empty reference: only insertions, and no rate.
        assert_eq!(align(&[], &words("x y")), counts(0, 0, 0, 2));
        assert_eq!(align(&[], &words("x y")).rate(), None);
    }

    #[test]
    fn insertions_only_can_exceed_one() {
        let c = align(&words("a b"), &words("x a y b z"));
        assert_eq!(c, counts(2, 0, 0, 3));
        assert_eq!(c.rate(), Some(1.5));
    }

    #[test]
    fn jiwer_readme_example() {
        // jiwer's README: "hello world" against "hello duck" has WER 0.5; and its longer example
        // "this is the reference" / "this is the hypothesis" has one substitution in four words.
        assert_eq!(align(&words("hello world"), &words("hello duck")), counts(2, 1, 0, 0));
        assert_eq!(align(&words("this is the reference"), &words("this is the hypothesis")).rate(), Some(0.25));
        // "the cat sat on the mat" → "the cat sit on mat": sat→sit, "the" deleted: 2 / 6.
        let c = align(&words("the cat sat on the mat"), &words("the cat sit on mat"));
        assert_eq!(c, counts(6, 1, 1, 0));
        assert_eq!(c.edits(), 2);
    }

    #[test]
    fn characters_substitution_preferred_to_delete_insert() {
        let r: Vec<char> = "kitten".chars().collect();
        let h: Vec<char> = "sitting".chars().collect();
        // The classic distance 3: k→s, e→i, one g inserted.
        assert_eq!(align(&r, &h), counts(6, 2, 0, 1));
        let r: Vec<char> = "ab".chars().collect();
        let h: Vec<char> = "ba".chars().collect();
        assert_eq!(align(&r, &h).edits(), 2);
    }

    #[test]
    fn deletions_and_insertions_in_the_middle() {
        assert_eq!(align(&words("a b c d"), &words("a d")), counts(4, 0, 2, 0));
        assert_eq!(align(&words("a d"), &words("a b c d")), counts(2, 0, 0, 2));
        assert_eq!(align(&words("a b c"), &words("x b y z")), counts(3, 2, 0, 1));
    }
}
