//! The comparison as GitHub-flavoured Markdown: a header, the results table, what each technique
//! did, and the learning-curve table when there is one.

use super::cells::{self, CURVE_COLUMNS, RESULT_COLUMNS};
use super::CompareReport;

/// Renders `r` as GitHub-flavoured Markdown.
///
/// The header names the task, the model and the split sizes; the results table has one row per
/// technique (technique | accuracy | macro-F1 | trainable params | train time | eval time | peak
/// RSS), followed by one line per technique saying what was done, and a learning-curve table
/// (technique | train share | n_train | accuracy | macro-F1) when `r.learning_curve` has points.
/// Text from the report is escaped so that a `|` or `*` in a name cannot break the table.
pub fn markdown_table(r: &CompareReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("# Technique comparison: {}\n\n", escape(&r.task)));
    out.push_str(&format!(
        "model: {} · n_train: {} · n_test: {}",
        escape(&r.model),
        cells::count(r.n_train),
        cells::count(r.n_test)
    ));
    if !r.labels.is_empty() {
        let labels: Vec<String> = r.labels.iter().map(|l| escape(l)).collect();
        out.push_str(&format!(" · labels: {}", labels.join(", ")));
    }
    out.push_str("\n\n");

    table_head(&mut out, &RESULT_COLUMNS);
    for t in &r.rows {
        table_row(&mut out, &cells::result_cells(t));
    }
    if r.rows.is_empty() {
        out.push_str("\nNo technique ran.\n");
    }

    let described: Vec<_> = r.rows.iter().filter(|t| !t.description.trim().is_empty()).collect();
    if !described.is_empty() {
        out.push('\n');
        for t in described {
            out.push_str(&format!("- **{}**: {}\n", escape(&t.technique), escape(&t.description)));
        }
    }

    if !r.learning_curve.is_empty() {
        out.push_str("\n## Learning curve\n\n");
        table_head(&mut out, &CURVE_COLUMNS);
        for p in &r.learning_curve {
            table_row(&mut out, &cells::curve_cells(p));
        }
    }
    out
}

/// Writes the title row and the alignment row (first column left, numbers right).
fn table_head(out: &mut String, columns: &[&str]) {
    out.push_str(&format!("| {} |\n|", columns.join(" | ")));
    for i in 0..columns.len() {
        out.push_str(if i == 0 { "---|" } else { "---:|" });
    }
    out.push('\n');
}

/// Writes one table row, escaping every cell.
fn table_row(out: &mut String, row: &[String]) {
    let cells: Vec<String> = row.iter().map(|c| escape(c)).collect();
    out.push_str(&format!("| {} |\n", cells.join(" | ")));
}

/// Makes `s` inert inline Markdown on one line: line breaks become spaces, and characters that
/// would start markup or end a table cell are backslash-escaped. `_` is left alone between
/// letters or digits (`zero_shot`), where GFM never reads it as emphasis.
pub(crate) fn escape(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '\r' | '\n' => {
                // A CRLF pair becomes one space.
                if !(c == '\n' && i > 0 && chars[i - 1] == '\r') {
                    out.push(' ');
                }
            }
            '\\' | '|' | '*' | '`' | '<' | '>' | '[' | ']' | '&' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '_' => {
                let inside_word =
                    i > 0 && chars[i - 1].is_alphanumeric() && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
                if !inside_word {
                    out.push('\\');
                }
                out.push('_');
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escaping_keeps_cells_and_names_intact() {
        assert_eq!(escape("zero_shot"), "zero_shot");
        assert_eq!(escape("_x_"), "\\_x\\_");
        assert_eq!(escape("a|b"), "a\\|b");
        assert_eq!(escape("line\r\nbreak\nhere"), "line break here");
        assert_eq!(escape("<b>*x*</b>"), "\\<b\\>\\*x\\*\\</b\\>");
    }
}
