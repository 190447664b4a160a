//! Meta-learning: the class splits and the episode sampler; the class choice over the real
//! AppStream file when the machine has one.

mod common;

use graft::meta::{split_classes, ClassMembers, EpisodeSampler, EpisodeShape};
use std::collections::HashSet;

/// `n` classes named `c00`, `c01`, ... with `per` examples each, example ids unique.
fn classes(n: usize, per: usize) -> ClassMembers {
    (0..n).map(|c| (format!("c{c:02}"), (0..per).map(|i| c * 1000 + i).collect())).collect()
}

const SHAPE: EpisodeShape = EpisodeShape { n_way: 5, k_shot: 2, q_query: 3 };

#[test]
fn splits_share_no_class_and_no_example() {
    let s = split_classes(classes(20, 8), 0.2, 0.25, 7).unwrap();
    assert_eq!((s.train.len(), s.val.len(), s.test.len()), (11, 4, 5));
    let names = |c: &ClassMembers| c.iter().map(|(n, _)| n.clone()).collect::<HashSet<_>>();
    let examples = |c: &ClassMembers| c.iter().flat_map(|(_, m)| m.iter().copied()).collect::<HashSet<_>>();
    for (a, b) in [(&s.train, &s.val), (&s.train, &s.test), (&s.val, &s.test)] {
        assert!(names(a).is_disjoint(&names(b)));
        assert!(examples(a).is_disjoint(&examples(b)));
    }
    assert_eq!(names(&s.train).len() + names(&s.val).len() + names(&s.test).len(), 20);
    // Episodes of a split only ever use that split's examples.
    let test_examples = examples(&s.test);
    let sampler = EpisodeSampler::new("meta-test", s.test.clone(), SHAPE, 3).unwrap();
    for i in 0..50 {
        let ep = sampler.episode(i);
        assert!(ep.support.iter().chain(&ep.query).all(|e| test_examples.contains(e)));
    }
    assert_eq!(split_classes(classes(20, 8), 0.2, 0.25, 7).unwrap(), s, "the same seed deals the same split");
    assert_ne!(split_classes(classes(20, 8), 0.2, 0.25, 8).unwrap(), s, "another seed deals another split");
}

#[test]
fn episodes_are_disjoint_well_formed_and_reproducible() {
    let data = classes(8, 6);
    let sampler = EpisodeSampler::new("meta-train", data.clone(), SHAPE, 11).unwrap();
    let again = EpisodeSampler::new("meta-train", data.clone(), SHAPE, 11).unwrap();
    let other = EpisodeSampler::new("meta-train", data.clone(), SHAPE, 12).unwrap();
    let mut differs = 0;
    for i in 0..100 {
        let ep = sampler.episode(i);
        assert_eq!(ep, again.episode(i), "episode {i} differs for the same seed");
        differs += usize::from(ep != other.episode(i));
        assert_eq!(ep.ways.len(), 5);
        assert_eq!(ep.ways.iter().collect::<HashSet<_>>().len(), 5, "ways are distinct classes");
        assert_eq!((ep.support.len(), ep.query.len()), (10, 15));
        let support: HashSet<usize> = ep.support.iter().copied().collect();
        let query: HashSet<usize> = ep.query.iter().copied().collect();
        assert_eq!((support.len(), query.len()), (10, 15), "no example twice in a set");
        assert!(support.is_disjoint(&query), "episode {i}: shots and queries overlap");
        for (e, &way) in ep.support.iter().zip(&ep.support_labels).chain(ep.query.iter().zip(&ep.query_labels)) {
            assert!(data[ep.ways[way]].1.contains(e), "example {e} is labelled with a class it is not in");
        }
    }
    assert!(differs > 90, "another seed should give other episodes ({differs} of 100 differ)");
    // Episodes vary with the index and cover every class.
    let seen: HashSet<usize> = (0..100).flat_map(|i| sampler.episode(i).ways).collect();
    assert_eq!(seen.len(), 8);
}

#[test]
fn too_few_classes_or_examples_are_refused_by_name() {
    let e = EpisodeSampler::new("meta-val", classes(4, 10), SHAPE, 0).unwrap_err().to_string();
    assert!(e.contains("meta-val") && e.contains("4 classes") && e.contains("5-way"), "{e}");
    let mut data = classes(6, 10);
    data[3].1.truncate(4);
    let e = EpisodeSampler::new("meta-train", data, SHAPE, 0).unwrap_err().to_string();
    assert!(e.contains("class `c03`") && e.contains("4 examples") && e.contains("at least 5"), "{e}");
    let bad = EpisodeShape { n_way: 5, k_shot: 0, q_query: 3 };
    assert!(EpisodeSampler::new("meta-train", classes(6, 10), bad, 0).is_err());
    let mut shared = classes(6, 10);
    shared[1].1[0] = shared[0].1[0];
    let e = split_classes(shared, 0.2, 0.2, 0).unwrap_err().to_string();
    assert!(e.contains("c00") && e.contains("c01"), "{e}");
    assert!(split_classes(classes(2, 10), 0.3, 0.3, 0).is_err(), "no class left for training");
    assert!(split_classes(classes(10, 10), 0.5, 0.5, 0).is_err(), "fractions summing to 1");
}

#[test]
fn appstream_categories_give_classes_on_the_real_file() {
    use graft::datasets::appstream::{self, default_files};
    use graft::datasets::appstream_classes::{category_classes, ClassRule};
    let files = default_files();
    if !common::require(files.is_ok(), "no AppStream metadata in /var/lib/apt/lists (run `apt-get update`)") {
        return;
    }
    let mut comps = Vec::new();
    for f in files.unwrap() {
        comps.extend(appstream::read(&f).unwrap().0);
    }
    let with_cats = comps.iter().filter(|c| !c.categories.is_empty()).count();
    assert!(with_cats * 10 > comps.len() * 8, "most components list categories ({with_cats} of {})", comps.len());
    let specific = category_classes(&comps, 20, ClassRule::MostSpecific);
    let first = category_classes(&comps, 20, ClassRule::First);
    eprintln!(
        "{} components, {with_cats} with categories; classes with ≥ 20 members: most specific {} ({} unlabelled), first {} ({} unlabelled)",
        comps.len(),
        specific.classes.len(),
        specific.unlabelled,
        first.classes.len(),
        first.unlabelled
    );
    assert!(specific.classes.len() > first.classes.len());
    assert!(specific.classes.len() >= 15, "enough classes for 5-way splits");
    for (name, members) in &specific.classes {
        assert!(members.len() >= 20, "{name}");
        assert!(members.iter().all(|&m| comps[m].categories.contains(name)));
    }
    split_classes(specific.classes, 0.2, 0.2, 0).unwrap();
}
