//! Replay of general data during domain training (against forgetting): a fixed sample of the
//! replay examples, drawn by seed, joined to the domain examples in a given share.

use super::split::shuffle;

/// ChaCha "epoch" stream of the replay draw, apart from the per-epoch shuffles (streams 0, 1, …)
/// and the train/eval split (stream `u64::MAX`).
const REPLAY_STREAM: u64 = u64::MAX - 1;

/// How many replay examples join `n_domain` domain examples so that replay makes up `share` of
/// the whole: `round(n_domain · share / (1 − share))`; 0 for a share outside `(0, 1)`.
/// Example: 80 domain examples at share 0.2 → 20 replay examples (20 of 100).
pub fn replay_count(n_domain: usize, share: f64) -> usize {
    if share.is_nan() || share <= 0.0 || share >= 1.0 {
        return 0;
    }
    (n_domain as f64 * share / (1.0 - share)).round() as usize
}

/// `domain` followed by [`replay_count`] examples of `replay`, drawn without repetition in an
/// order fixed by `seed` (cycling through `replay` again when it holds fewer). The result is
/// the training set of every epoch (each epoch shuffles it), so the draw is the same on resume.
pub fn mix_in<T: Clone>(mut domain: Vec<T>, replay: &[T], share: f64, seed: u64) -> Vec<T> {
    let k = replay_count(domain.len(), share);
    if replay.is_empty() || k == 0 {
        return domain;
    }
    let mut order: Vec<usize> = (0..replay.len()).collect();
    shuffle(&mut order, seed, REPLAY_STREAM);
    domain.extend(order.iter().cycle().take(k).map(|&i| replay[i].clone()));
    domain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_takes_its_share_of_every_epoch_and_of_its_batches() {
        let domain: Vec<u32> = (0..800).collect();
        let replay: Vec<u32> = (10_000..13_000).collect();
        let mixed = mix_in(domain, &replay, 0.2, 7);
        assert_eq!(mixed.len(), 1000);
        let is_replay = |x: &u32| *x >= 10_000;
        assert_eq!(mixed.iter().filter(|x| is_replay(x)).count(), 200, "exactly 20 % of the epoch");
        let distinct: std::collections::BTreeSet<_> = mixed.iter().filter(|x| is_replay(x)).collect();
        assert_eq!(distinct.len(), 200, "no replay example twice while the file has more");
        // Over many shuffled epochs, batches of 8 carry replay at the share (within tolerance).
        let (mut seen, mut total) = (0usize, 0usize);
        for epoch in 0..50 {
            let mut e = mixed.clone();
            shuffle(&mut e, 7, epoch);
            for batch in e.chunks(8).take(40) {
                seen += batch.iter().filter(|x| is_replay(x)).count();
                total += batch.len();
            }
        }
        let share = seen as f64 / total as f64;
        assert!((share - 0.2).abs() < 0.01, "replay share over batches {share}");
    }

    #[test]
    fn the_draw_is_fixed_by_the_seed() {
        let domain: Vec<u32> = (0..30).collect();
        let replay: Vec<u32> = (100..200).collect();
        assert_eq!(mix_in(domain.clone(), &replay, 0.5, 1), mix_in(domain.clone(), &replay, 0.5, 1));
        assert_ne!(mix_in(domain.clone(), &replay, 0.5, 1), mix_in(domain.clone(), &replay, 0.5, 2));
        // Fewer replay examples than the share asks for: they cycle.
        let small = mix_in(domain.clone(), &[100, 101], 0.5, 1);
        assert_eq!(small.len(), 60);
        assert_eq!(small[30..].iter().filter(|&&x| x == 100).count(), 15);
        assert_eq!(mix_in(domain.clone(), &replay, 0.0, 1), domain);
    }
}
