//! Paired differences between groups of a results summary: each run minus the baseline run with
//! the same seed (or other pairing field), so that the spread of seeds cancels out of the
//! comparison, as in "the same LoRA with and without the extra stage, seed by seed".

use super::summary::{key_text, lookup, metric_value, stats_of, Baseline, Differences, Group, GroupSummary, Row};
use crate::{GraftError, Result};

/// The differences of every non-baseline group in `groups` from its baseline group.
///
/// A group's baseline has the same grouping values except `baseline.field`, which is
/// `baseline.value`. Rows pair up when their `baseline.pair_on` values are equal; a pairing value
/// that appears twice in one group is an error (the pairs would be ambiguous). Groups without a
/// baseline group are skipped; if none has one, that is an error naming what was looked for.
pub(super) fn differences(
    groups: &[Group<'_, '_>],
    group_by: &[String],
    baseline: &Baseline,
    metrics: &[String],
) -> Result<Differences> {
    let Some(k) = group_by.iter().position(|f| *f == baseline.field) else {
        return Err(GraftError::Input(format!(
            "--against names `{}`, which is not a grouping field ({})",
            baseline.field,
            group_by.join(", ")
        )));
    };
    let mut out = Vec::new();
    for (keys, members) in groups {
        if keys[k] == baseline.value {
            continue;
        }
        let Some((base_keys, base_members)) = groups.iter().find(|(bk, _)| {
            bk[k] == baseline.value && bk.iter().zip(keys).enumerate().all(|(i, (a, b))| i == k || a == b)
        }) else {
            continue;
        };
        let pairs = pair_rows(members, base_members, &baseline.pair_on)?;
        let mut stats = Vec::new();
        for metric in metrics {
            let mut diffs = Vec::new();
            for (row, base) in &pairs {
                if let (Some(a), Some(b)) = (metric_value(row, metric)?, metric_value(base, metric)?) {
                    diffs.push(a - b);
                }
            }
            stats.extend(stats_of(metric, diffs));
        }
        out.push(GroupSummary {
            label: format!("{} − {}", keys.join(" · "), base_keys.join(" · ")),
            keys: keys.clone(),
            rows: pairs.len(),
            metrics: stats,
        });
    }
    if out.is_empty() {
        return Err(GraftError::Input(format!(
            "no group has a baseline group with {} = {} and the same other grouping values",
            baseline.field, baseline.value
        )));
    }
    Ok(Differences { baseline: baseline.clone(), groups: out })
}

type Pair<'r, 'a> = (&'r Row<'a>, &'r Row<'a>);

/// The rows of `members` matched with the rows of `base` that have the same `pair_on` value, in
/// `members` order; rows without a partner are left out.
fn pair_rows<'r, 'a>(members: &[&'r Row<'a>], base: &[&'r Row<'a>], pair_on: &str) -> Result<Vec<Pair<'r, 'a>>> {
    let key = |row: &Row<'_>| lookup(&row.obj, pair_on).map(key_text);
    for rows in [members, base] {
        let mut seen = Vec::new();
        for row in rows {
            if let Some(v) = key(row) {
                if seen.contains(&v) {
                    return Err(GraftError::Input(format!(
                        "{}:{}: `{pair_on}` = {v} appears twice in one group, so rows cannot be paired",
                        row.path.display(),
                        row.line
                    )));
                }
                seen.push(v);
            }
        }
    }
    let mut pairs = Vec::new();
    for row in members {
        let Some(v) = key(row) else { continue };
        if let Some(b) = base.iter().find(|b| key(b).as_deref() == Some(v.as_str())) {
            pairs.push((*row, *b));
        }
    }
    Ok(pairs)
}
