//! Logits processors and the sampler on hand-computed cases (transformers' semantics:
//! `RepetitionPenaltyLogitsProcessor`, `TemperatureLogitsWarper`, `TopKLogitsWarper`,
//! `TopPLogitsWarper`, in that order).

use graft::generate::sampler::{
    apply_repetition_penalty, apply_temperature, apply_top_k, apply_top_p, argmax, softmax, Sampler, SamplingConfig,
};

const NEG: f32 = f32::NEG_INFINITY;

fn ln(p: &[f64]) -> Vec<f32> {
    p.iter().map(|x| x.ln() as f32).collect()
}

fn finite(logits: &[f32]) -> Vec<usize> {
    (0..logits.len()).filter(|&i| logits[i] > NEG).collect()
}

#[test]
fn repetition_penalty_divides_positive_and_multiplies_negative_once_per_id() {
    let mut l = vec![2.0, -1.0, 0.5, 3.0];
    // id 1 appears twice but is penalised once; ids 2 and 3 are not in the context.
    apply_repetition_penalty(&mut l, &[0, 1, 1], 2.0);
    assert_eq!(l, vec![1.0, -2.0, 0.5, 3.0]);
}

#[test]
fn repetition_penalty_of_one_changes_nothing() {
    let mut l = vec![2.0, -1.0];
    apply_repetition_penalty(&mut l, &[0, 1], 1.0);
    assert_eq!(l, vec![2.0, -1.0]);
}

#[test]
fn temperature_divides_logits() {
    let mut l = vec![2.0, -4.0];
    apply_temperature(&mut l, 0.5);
    assert_eq!(l, vec![4.0, -8.0]);
}

#[test]
fn top_k_keeps_ties_with_the_kth_value() {
    let mut l = vec![1.0, 3.0, 3.0, 2.0];
    apply_top_k(&mut l, 2);
    assert_eq!(l, vec![NEG, 3.0, 3.0, NEG]);
    let mut l = vec![1.0, 3.0, 3.0, 2.0];
    apply_top_k(&mut l, 3);
    assert_eq!(l, vec![NEG, 3.0, 3.0, 2.0]);
    let mut l = vec![1.0, 2.0];
    apply_top_k(&mut l, 0);
    assert_eq!(l, vec![1.0, 2.0]);
}

#[test]
fn top_p_removes_the_low_tail_whose_mass_is_at_most_one_minus_p() {
    // Probabilities 0.5, 0.3, 0.15, 0.05; ascending cumulative sums 0.05, 0.20, 0.50, 1.00.
    let probs = [0.5, 0.3, 0.15, 0.05];
    let cases: [(f32, &[usize]); 4] = [
        (0.9, &[0, 1, 2]), // remove cum <= 0.1: only 0.05
        (0.75, &[0, 1]),   // remove cum <= 0.25: 0.05 and 0.15
        (0.3, &[0]),       // remove cum <= 0.7: all but the top
        (1e-4, &[0]),      // the most likely token always survives
    ];
    for (p, keep) in cases {
        let mut l = ln(&probs);
        apply_top_p(&mut l, p);
        assert_eq!(finite(&l), keep, "top_p {p}");
    }
}

#[test]
fn temperature_is_applied_before_top_p() {
    // p = [0.25, 0.75]. With T = 1, top-p 0.7 removes the 0.25 token; with T = 10 the
    // distribution flattens to ~[0.47, 0.53] and both survive. Top-p before temperature would
    // remove the 0.25 token in both cases.
    let cfg = |temperature| SamplingConfig { temperature, top_p: 0.7, ..SamplingConfig::default() };
    let mut l = ln(&[0.25, 0.75]);
    Sampler::new(cfg(1.0), 0).unwrap().process(&mut l, &[], &[]);
    assert_eq!(finite(&l), vec![1]);
    let mut l = ln(&[0.25, 0.75]);
    Sampler::new(cfg(10.0), 0).unwrap().process(&mut l, &[], &[]);
    assert_eq!(finite(&l), vec![0, 1]);
}

#[test]
fn greedy_takes_the_first_maximum_after_penalty_and_masks() {
    let mut s = Sampler::new(SamplingConfig::default(), 0).unwrap();
    assert_eq!(argmax(&[1.0, 5.0, 5.0]), Some(1));
    // Penalty 2 on id 0 turns [3, 2] into [1.5, 2].
    let mut s2 = Sampler::new(SamplingConfig { repetition_penalty: 2.0, ..SamplingConfig::default() }, 0).unwrap();
    assert_eq!(s2.sample(&mut vec![3.0, 2.0], &[0], &[]).unwrap(), 1);
    // Masking the best id picks the runner-up; masking everything is an error.
    assert_eq!(s.sample(&mut vec![1.0, 9.0, 3.0], &[], &[1]).unwrap(), 2);
    assert!(s.sample(&mut vec![1.0, 9.0], &[], &[0, 1]).is_err());
}

#[test]
fn sampling_follows_the_softmax_and_is_reproducible() {
    let probs = [0.5, 0.3, 0.2];
    let cfg = SamplingConfig { temperature: 1.0, ..SamplingConfig::default() };
    let draw = |seed| {
        let mut s = Sampler::new(cfg.clone(), seed).unwrap();
        (0..20_000).map(|_| s.sample(&mut ln(&probs), &[], &[]).unwrap()).collect::<Vec<u32>>()
    };
    let a = draw(7);
    assert_eq!(a, draw(7), "same seed, same draws");
    assert_ne!(a, draw(8), "another seed, other draws");
    for (id, p) in probs.iter().enumerate() {
        let freq = a.iter().filter(|&&x| x as usize == id).count() as f64 / a.len() as f64;
        assert!((freq - p).abs() < 0.015, "id {id}: frequency {freq}, probability {p}");
    }
}

#[test]
fn top_k_one_sampling_is_greedy() {
    let cfg = SamplingConfig { temperature: 1.5, top_k: 1, ..SamplingConfig::default() };
    let mut s = Sampler::new(cfg, 3).unwrap();
    for _ in 0..50 {
        assert_eq!(s.sample(&mut vec![0.1, 0.3, 0.2], &[], &[]).unwrap(), 1);
    }
}

#[test]
fn softmax_is_normalised_and_ignores_minus_infinity() {
    let p = softmax(&[0.0, 3f32.ln(), NEG]);
    assert!((p[0] - 0.25).abs() < 1e-7 && (p[1] - 0.75).abs() < 1e-7 && p[2] == 0.0);
}

#[test]
fn invalid_settings_are_refused() {
    let bad = [
        SamplingConfig { temperature: -1.0, ..SamplingConfig::default() },
        SamplingConfig { top_p: 0.0, ..SamplingConfig::default() },
        SamplingConfig { top_p: 1.5, ..SamplingConfig::default() },
        SamplingConfig { repetition_penalty: 0.0, ..SamplingConfig::default() },
    ];
    for cfg in bad {
        assert!(Sampler::new(cfg.clone(), 0).is_err(), "{cfg:?}");
    }
}
