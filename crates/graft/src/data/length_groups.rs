//! Batches of similar length: a batch that mixes short and long sequences spends most of its
//! compute on padding, so rows are run in groups whose padded size stays close to their real
//! size, and put back in input order. The result (and its gradient) is the one padded batch's
//! up to rounding, for any model whose real positions do not see the padding.

use crate::Result;
use candle_core::Tensor;

/// How much padding a group may carry: its padded tokens may exceed its real tokens by this
/// share.
pub const PADDING_SLACK: f64 = 0.25;

/// Indices of sequences of lengths `lens` in groups to be padded together: ascending by length
/// (ties in input order), each group extended while its padded size (`members × longest`) stays
/// within `1 + slack` times its real tokens. Every index appears exactly once.
pub fn length_groups(lens: &[usize], slack: f64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| lens[i]);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let (mut real, mut current) = (0usize, Vec::new());
    for i in order {
        let padded = (current.len() + 1) * lens[i];
        if !current.is_empty() && padded as f64 > (1.0 + slack) * (real + lens[i]) as f64 {
            groups.push(std::mem::take(&mut current));
            real = 0;
        }
        current.push(i);
        real += lens[i];
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// Runs `run` on each group of [`length_groups`] (`lens`, [`PADDING_SLACK`]), which returns one
/// row per member in the group's order, and returns all rows in input order (differentiable
/// through `run`'s rows). One group: `run` over every row, as they are.
pub fn in_length_groups(lens: &[usize], mut run: impl FnMut(&[usize]) -> Result<Tensor>) -> Result<Tensor> {
    let groups = length_groups(lens, PADDING_SLACK);
    if groups.len() <= 1 {
        return run(&(0..lens.len()).collect::<Vec<_>>());
    }
    let parts = groups.iter().map(|g| run(g)).collect::<Result<Vec<_>>>()?;
    let mut position = vec![0u32; lens.len()];
    for (row, &i) in groups.iter().flatten().enumerate() {
        position[i] = row as u32;
    }
    let position = Tensor::new(position, parts[0].device())?;
    Ok(Tensor::cat(&parts, 0)?.index_select(&position, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn length_groups_cover_every_sequence_once_within_the_slack() {
        let lens = [12, 200, 15, 256, 14, 90, 100, 13, 256, 95];
        let groups = length_groups(&lens, 0.25);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lens.len()).collect::<Vec<_>>());
        for g in &groups {
            let real: usize = g.iter().map(|&i| lens[i]).sum();
            let longest = g.iter().map(|&i| lens[i]).max().unwrap();
            assert!((g.len() * longest) as f64 <= 1.25 * real as f64 || g.len() == 1, "{g:?}");
        }
        assert_eq!(groups, vec![vec![0, 7, 4, 2], vec![5, 9, 6], vec![1, 3, 8]]);
    }

    #[test]
    fn equal_lengths_make_one_group_and_nothing_makes_none() {
        assert_eq!(length_groups(&[7, 7, 7], 0.0), vec![vec![0, 1, 2]]);
        assert!(length_groups(&[], 0.25).is_empty());
    }

    #[test]
    fn rows_come_back_in_input_order() {
        let lens = [3, 40, 4, 41, 5];
        let mut calls = 0;
        let rows = in_length_groups(&lens, |g| {
            calls += 1;
            let v: Vec<f32> = g.iter().map(|&i| lens[i] as f32).collect();
            Ok(Tensor::new(v, &Device::Cpu)?.unsqueeze(1)?)
        })
        .unwrap();
        assert_eq!(calls, 2);
        assert_eq!(rows.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![3.0, 40.0, 4.0, 41.0, 5.0]);
    }
}
