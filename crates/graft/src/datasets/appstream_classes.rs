//! One class per AppStream component for few-shot episodes: the component's menu categories
//! (`Categories:`) are a list such as `[AudioVideo, Audio, Player]` or `[Game, LogicGame]`,
//! broad categories first. A classifier needs one label, so [`category_classes`] picks one by a
//! [`ClassRule`] and keeps only classes with at least `min_members` components (an episode
//! draws `k_shot + q_query` examples of a class).
//!
//! [`ClassRule::MostSpecific`] (the default) gives the most classes: on Debian bookworm's main
//! section, 40 classes with at least 20 components against 11 when taking the first category
//! (docs/meta-learning.md).

use super::appstream::Component;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How a component's class is chosen among its categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassRule {
    /// The component's category with the fewest components in the whole file (ties by name)
    /// among the categories that keep at least `min_members` components: `Player` rather than
    /// `AudioVideo`, `LogicGame` rather than `Game`. Categories falling below `min_members`
    /// after the choice are dropped and their components choose again, until nothing changes.
    #[default]
    MostSpecific,
    /// The first category listed (usually a broad main category such as `Game` or `Utility`).
    First,
}

/// Classes of components: each class's name and its members (indices into the components,
/// ascending), classes sorted by name; every component is in at most one class.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryClasses {
    /// `(category, member indices)` of every class kept.
    pub classes: Vec<(String, Vec<usize>)>,
    /// Components left without a class (no categories, or only categories with too few members).
    pub unlabelled: usize,
}

/// Gives each component of `comps` one category as its class by `rule`, keeping the classes that
/// have at least `min_members` members.
pub fn category_classes(comps: &[Component], min_members: usize, rule: ClassRule) -> CategoryClasses {
    let mut totals: BTreeMap<&str, usize> = BTreeMap::new();
    for c in comps {
        for cat in &c.categories {
            *totals.entry(cat.as_str()).or_default() += 1;
        }
    }
    let mut allowed: BTreeSet<&str> = match rule {
        ClassRule::MostSpecific => totals.iter().filter(|&(_, &n)| n >= min_members).map(|(&c, _)| c).collect(),
        ClassRule::First => totals.keys().copied().collect(),
    };
    loop {
        let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, c) in comps.iter().enumerate() {
            if let Some(cat) = choose(c, &allowed, &totals, rule) {
                members.entry(cat).or_default().push(i);
            }
        }
        let kept: BTreeSet<&str> = members.iter().filter(|(_, m)| m.len() >= min_members).map(|(&c, _)| c).collect();
        // First: a dropped category's components have no other choice, so one pass settles it.
        if kept == allowed || rule == ClassRule::First {
            let classes: Vec<(String, Vec<usize>)> =
                members.into_iter().filter(|(c, _)| kept.contains(c)).map(|(c, m)| (c.to_string(), m)).collect();
            let labelled: usize = classes.iter().map(|(_, m)| m.len()).sum();
            return CategoryClasses { classes, unlabelled: comps.len() - labelled };
        }
        // Only shrinks, so the loop ends.
        allowed = kept;
    }
}

/// The class of `c` among the `allowed` categories by `rule` (`totals`: members per category).
fn choose<'a>(
    c: &'a Component,
    allowed: &BTreeSet<&str>,
    totals: &BTreeMap<&str, usize>,
    rule: ClassRule,
) -> Option<&'a str> {
    let mut cands = c.categories.iter().map(String::as_str).filter(|cat| allowed.contains(cat));
    match rule {
        ClassRule::First => c.categories.first().map(String::as_str).filter(|cat| allowed.contains(cat)),
        ClassRule::MostSpecific => cands.by_ref().min_by_key(|cat| (totals.get(cat).copied().unwrap_or(0), *cat)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(cats: &[&str]) -> Component {
        Component {
            id: format!("id.{}", cats.join(".")),
            name: "n".into(),
            summary: "s".into(),
            description: "d".into(),
            license: None,
            categories: cats.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn most_specific_picks_the_rarest_category_with_enough_members() {
        // Game: 5, LogicGame: 3, BoardGame: 1 (too few), Utility: 2.
        let comps = vec![
            comp(&["Game", "LogicGame"]),
            comp(&["Game", "LogicGame"]),
            comp(&["Game", "LogicGame", "BoardGame"]),
            comp(&["Game"]),
            comp(&["Game"]),
            comp(&["Utility"]),
            comp(&["Utility"]),
            comp(&[]),
        ];
        let got = category_classes(&comps, 2, ClassRule::MostSpecific);
        let names: Vec<&str> = got.classes.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(names, ["Game", "LogicGame", "Utility"]);
        assert_eq!(got.classes[0].1, [3, 4]);
        assert_eq!(got.classes[1].1, [0, 1, 2], "BoardGame has one member: component 2 takes LogicGame");
        assert_eq!(got.classes[2].1, [5, 6]);
        assert_eq!(got.unlabelled, 1);
    }

    #[test]
    fn dropped_classes_send_their_members_to_another_choice() {
        // Rare: 2 members overall, but Rarer (1 member) makes no class; with min 3, Rare is out
        // too after the first pass and both fall back to Common.
        let comps = vec![comp(&["Common", "Rare"]), comp(&["Common", "Rare"]), comp(&["Common"]), comp(&["Solo"])];
        let got = category_classes(&comps, 3, ClassRule::MostSpecific);
        assert_eq!(got.classes, vec![("Common".to_string(), vec![0, 1, 2])]);
        assert_eq!(got.unlabelled, 1);
    }

    #[test]
    fn first_rule_takes_the_first_category() {
        let comps = vec![comp(&["Game", "LogicGame"]), comp(&["Game"]), comp(&["LogicGame", "Game"])];
        let got = category_classes(&comps, 2, ClassRule::First);
        assert_eq!(got.classes, vec![("Game".to_string(), vec![0, 1])]);
        assert_eq!(got.unlabelled, 1);
    }
}
