//! Deterministic held-out splits and per-epoch shuffles.
//!
//! Both draw from ChaCha8 (whose output is fixed by its specification) through a Fisher–Yates
//! shuffle written here, so that the order depends only on `(seed, epoch)` and not on the
//! sampling algorithms of a `rand` release: a resumed run sees the same data order.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// ChaCha stream used for the train/eval split (shuffles use stream `epoch`).
const SPLIT_STREAM: u64 = u64::MAX;

/// Splits off `eval_fraction` of `examples` (training examples, texts, ...) as a held-out set,
/// chosen by `seed`; both sides keep the file's order.
///
/// `n_eval = round(n · eval_fraction)`, at least 1 when `eval_fraction > 0` and at most `n - 1`
/// (when `n ≥ 2`), so neither side is empty when it need not be; `eval_fraction ≤ 0` (or NaN)
/// holds nothing out. Example: 10 examples at 0.2 → 8 train, 2 eval.
pub fn split_train_eval<T>(examples: Vec<T>, eval_fraction: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    let n = examples.len();
    let n_eval = if n < 2 || eval_fraction.is_nan() || eval_fraction <= 0.0 {
        0
    } else {
        ((n as f64 * eval_fraction).round() as usize).clamp(1, n - 1)
    };
    let mut order: Vec<usize> = (0..n).collect();
    permute(&mut order, &mut rng(seed, SPLIT_STREAM));
    let mut held_out = vec![false; n];
    for &i in &order[..n_eval] {
        held_out[i] = true;
    }
    let (mut train, mut eval) = (Vec::with_capacity(n - n_eval), Vec::with_capacity(n_eval));
    for (ex, out) in examples.into_iter().zip(held_out) {
        if out {
            eval.push(ex)
        } else {
            train.push(ex)
        }
    }
    (train, eval)
}

/// Shuffles `items` (examples, or example indices) in place, deterministically by
/// `(seed, epoch)`: the same pair always gives the same order, different epochs give different
/// orders.
pub fn shuffle<T>(items: &mut [T], seed: u64, epoch: u64) {
    permute(items, &mut rng(seed, epoch));
}

/// A uniform draw in [0, 1) from the top 53 bits of one ChaCha output.
pub(crate) fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A ChaCha8 generator on `stream` of `seed` (streams are independent sequences).
pub(crate) fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Fisher–Yates with unbiased bounded draws.
pub(crate) fn permute<T>(items: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..items.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// A uniform integer in `0..bound` (`bound ≥ 1`), by rejection: draws above the largest multiple
/// of `bound` are redrawn.
pub(crate) fn below(rng: &mut ChaCha8Rng, bound: u64) -> u64 {
    let zone = u64::MAX - (u64::MAX - bound + 1) % bound;
    loop {
        let x = rng.next_u64();
        if x <= zone {
            return x % bound;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_draws_cover_the_range() {
        let mut r = rng(1, 0);
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            seen[below(&mut r, 3) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (900..1100).contains(&c)), "{seen:?}");
        assert_eq!(below(&mut r, 1), 0);
    }
}
