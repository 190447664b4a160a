//! The text of each table cell, shared by the Markdown and HTML renderers so that both show the
//! same numbers in the same form.

use super::{CurvePoint, TechniqueResult};

/// What a cell shows for a value that is missing or not a finite number.
pub(crate) const NOT_AVAILABLE: &str = "n/a";

/// Column titles of the results table, in [`result_cells`] order.
pub(crate) const RESULT_COLUMNS: [&str; 7] =
    ["technique", "accuracy", "macro-F1", "trainable params", "train time", "eval time", "peak RSS"];

/// Column titles of the learning-curve table, in [`curve_cells`] order.
pub(crate) const CURVE_COLUMNS: [&str; 5] = ["technique", "train share", "n_train", "accuracy", "macro-F1"];

/// One results row: technique, accuracy, macro-F1, trainable params, train time, eval time,
/// peak RSS (unescaped text).
pub(crate) fn result_cells(t: &TechniqueResult) -> [String; 7] {
    [
        t.technique.clone(),
        score(t.accuracy),
        score(t.macro_f1),
        count(t.trainable_params),
        seconds(t.train_time_s),
        seconds(t.eval_time_s),
        t.peak_rss_mb.map_or_else(|| NOT_AVAILABLE.to_string(), megabytes),
    ]
}

/// One learning-curve row: technique, share of the train split, examples, accuracy, macro-F1.
pub(crate) fn curve_cells(p: &CurvePoint) -> [String; 5] {
    [p.technique.clone(), share(p.fraction), count(p.n_train), score(p.accuracy), score(p.macro_f1)]
}

/// A score in `[0, 1]` with three decimals: `0.875`.
pub(crate) fn score(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        NOT_AVAILABLE.to_string()
    }
}

/// A fraction as a percentage with at most one decimal: `0.1` -> `10%`, `0.025` -> `2.5%`.
pub(crate) fn share(v: f64) -> String {
    if !v.is_finite() {
        return NOT_AVAILABLE.to_string();
    }
    let pct = format!("{:.1}", v * 100.0);
    let pct = pct.strip_suffix(".0").unwrap_or(&pct);
    format!("{pct}%")
}

/// An integer with thousands separators: `1234567` -> `1,234,567`.
pub(crate) fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration: `0.42 s` below a second, `12.3 s` below a minute, then `4 min 05 s`, `2 h 03 min`.
pub(crate) fn seconds(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return NOT_AVAILABLE.to_string();
    }
    if s < 1.0 {
        format!("{s:.2} s")
    } else if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        let whole = s.round() as u64;
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else {
        let minutes = (s / 60.0).round() as u64;
        format!("{} h {:02} min", minutes / 60, minutes % 60)
    }
}

/// Resident memory in whole megabytes with separators: `1,024 MB`.
pub(crate) fn megabytes(mb: f64) -> String {
    if mb.is_finite() && mb >= 0.0 {
        format!("{} MB", count(mb.round() as usize))
    } else {
        NOT_AVAILABLE.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_the_same_everywhere() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(134_515_008), "134,515,008");
        assert_eq!(score(0.87549), "0.875");
        assert_eq!(score(f64::NAN), "n/a");
        assert_eq!(share(0.1), "10%");
        assert_eq!(share(0.025), "2.5%");
        assert_eq!(share(1.0), "100%");
        assert_eq!(seconds(0.4249), "0.42 s");
        assert_eq!(seconds(12.34), "12.3 s");
        assert_eq!(seconds(245.0), "4 min 05 s");
        assert_eq!(seconds(7380.0), "2 h 03 min");
        assert_eq!(seconds(f64::INFINITY), "n/a");
        assert_eq!(megabytes(1023.6), "1,024 MB");
        assert_eq!(megabytes(f64::NAN), "n/a");
    }
}
