//! Percentile bootstrap of corpus error rates: utterances resampled with replacement, each
//! resample's rate formed from its summed counts, the 2.5th and 97.5th percentiles kept.

use super::align::EditCounts;
use crate::{GraftError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The 95 % percentile-bootstrap interval of the corpus rate `Σ edits / Σ reference` of each of
/// `K` measures (e.g. words and characters) of the same utterances.
///
/// Each of `resamples` rounds draws `items.len()` utterances with replacement (one ChaCha8 stream
/// seeded with `seed`, so the same inputs and seed give the same interval), and the same draw
/// serves all `K` measures. A round whose drawn references hold no token of a measure has no rate
/// for it and is left out of that measure's percentiles. The interval's ends are the 2.5th and
/// 97.5th percentiles, interpolated linearly between order statistics (numpy's default).
pub fn ci95<const K: usize>(items: &[[EditCounts; K]], resamples: usize, seed: u64) -> Result<[[f64; 2]; K]> {
    if items.is_empty() || resamples == 0 {
        return Err(GraftError::Input(format!(
            "a bootstrap interval needs utterances and resamples (got {} and {resamples})",
            items.len()
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut rates: [Vec<f64>; K] = std::array::from_fn(|_| Vec::with_capacity(resamples));
    for _ in 0..resamples {
        let mut sums = [EditCounts::default(); K];
        for _ in 0..items.len() {
            let item = &items[rng.random_range(0..items.len())];
            for (sum, c) in sums.iter_mut().zip(item) {
                *sum += *c;
            }
        }
        for (r, sum) in rates.iter_mut().zip(&sums) {
            r.extend(sum.rate());
        }
    }
    let mut out = [[0.0; 2]; K];
    for (o, mut r) in out.iter_mut().zip(rates) {
        if r.is_empty() {
            return Err(GraftError::Input("no bootstrap resample has a reference token".into()));
        }
        r.sort_by(f64::total_cmp);
        *o = [percentile(&r, 0.025), percentile(&r, 0.975)];
    }
    Ok(out)
}

/// The `p` quantile (0 ≤ p ≤ 1) of ascending, non-empty `sorted`, linearly interpolated between
/// the order statistics around position `p · (n − 1)`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let pos = p * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo])
}

#[cfg(test)]
mod tests {
    use super::{ci95, percentile, EditCounts};

    fn item(reference: usize, substitutions: usize) -> [EditCounts; 1] {
        [EditCounts { reference, substitutions, ..Default::default() }]
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 1.0), 5.0);
        // numpy.percentile([1, 2, 3, 4, 5], 2.5) = 1.1, 97.5 → 4.9
        assert!((percentile(&v, 0.025) - 1.1).abs() < 1e-12);
        assert!((percentile(&v, 0.975) - 4.9).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 0.975), 7.0);
    }

    #[test]
    fn constant_rates_give_a_point_interval() {
        let items: Vec<_> = (0..20).map(|_| item(4, 1)).collect();
        assert_eq!(ci95(&items, 200, 1).unwrap(), [[0.25, 0.25]]);
    }

    #[test]
    fn refuses_nothing_to_resample() {
        assert!(ci95::<1>(&[], 100, 1).is_err());
        assert!(ci95(&[item(3, 1)], 0, 1).is_err());
        assert!(ci95(&[item(0, 0)], 10, 1).is_err());
    }

    #[test]
    fn rounds_without_reference_are_left_out() {
        // Half the utterances have an empty reference: the rate of every round that has a
        // reference is still 1 / 2.
        let items = [item(2, 1), item(0, 0)];
        assert_eq!(ci95(&items, 100, 3).unwrap(), [[0.5, 0.5]]);
    }
}
