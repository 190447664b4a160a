//! Retrieval metrics: how well each query finds its own target among all targets, ranked by
//! cosine similarity of embeddings (recall@k and mean reciprocal rank).
//!
//! Query `i`'s own target is target `i`. Its rank is 1 + the number of *other* targets whose
//! similarity is at least the true target's: a tie counts against the query, so a model that
//! maps every text to one point scores recall@1 = 0, not 1.

use crate::{GraftError, Result};
use candle_core::{DType, Tensor, D};
use serde::Serialize;

/// Recall at 1, 5 and 10 and the mean reciprocal rank over `n` queries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrievalScores {
    /// Number of queries (and targets).
    pub n: usize,
    /// Share of queries whose own target ranks first.
    pub recall_at_1: f64,
    /// Share of queries whose own target ranks in the top 5.
    pub recall_at_5: f64,
    /// Share of queries whose own target ranks in the top 10.
    pub recall_at_10: f64,
    /// Mean of 1 / rank of the own target.
    pub mrr: f64,
}

/// The rank (1-based) of target `i` for query `i` in each row of `sims` (`sims[i][j]` = the
/// similarity of query `i` and target `j`, a square matrix): 1 + the number of `j ≠ i` with
/// `sims[i][j] >= sims[i][i]`.
pub fn ranks(sims: &[Vec<f32>]) -> Result<Vec<usize>> {
    let n = sims.len();
    sims.iter()
        .enumerate()
        .map(|(i, row)| {
            if row.len() != n {
                return Err(GraftError::Input(format!(
                    "similarity row {i} has {} entries for {n} queries: the matrix must be square",
                    row.len()
                )));
            }
            let own = row[i];
            if own.is_nan() {
                return Err(GraftError::Input(format!("query {i}: its similarity with its target is NaN")));
            }
            Ok(1 + row.iter().enumerate().filter(|&(j, &s)| j != i && s >= own).count())
        })
        .collect()
}

/// Recall@1/5/10 and MRR of the given ranks.
pub fn scores_from_ranks(ranks: &[usize]) -> RetrievalScores {
    let n = ranks.len();
    let share = |k: usize| ranks.iter().filter(|&&r| r <= k).count() as f64 / n.max(1) as f64;
    let mrr = ranks.iter().map(|&r| 1.0 / r as f64).sum::<f64>() / n.max(1) as f64;
    RetrievalScores { n, recall_at_1: share(1), recall_at_5: share(5), recall_at_10: share(10), mrr }
}

/// Scores retrieving target row `i` for query row `i` by cosine similarity; `queries` and
/// `targets` are `[n, d]` embeddings (normalised here, so any scale is fine).
pub fn retrieval_scores(queries: &Tensor, targets: &Tensor) -> Result<RetrievalScores> {
    let (nq, dq) = queries.dims2()?;
    let (nt, dt) = targets.dims2()?;
    if nq != nt || dq != dt {
        return Err(GraftError::Input(format!(
            "{nq} queries of {dq} dims against {nt} targets of {dt} dims: need one target per query, same dims"
        )));
    }
    if nq == 0 {
        return Err(GraftError::Input("retrieval needs at least one query".into()));
    }
    let unit = |x: &Tensor| -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
        Ok(x.broadcast_div(&norm)?)
    };
    let sims: Vec<Vec<f32>> = unit(queries)?.matmul(&unit(targets)?.t()?)?.to_vec2()?;
    Ok(scores_from_ranks(&ranks(&sims)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn hand_computed_ranks_and_scores() {
        // Query 0 finds its target first; query 1 has one better target (rank 2); query 2 ties
        // with one other target (rank 2: a tie counts against it).
        let sims = vec![vec![0.9, 0.1, 0.2], vec![0.8, 0.5, 0.1], vec![0.3, 0.4, 0.4]];
        let r = ranks(&sims).unwrap();
        assert_eq!(r, vec![1, 2, 2]);
        let s = scores_from_ranks(&r);
        assert!((s.recall_at_1 - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!((s.recall_at_5, s.recall_at_10), (1.0, 1.0));
        assert!((s.mrr - (1.0 + 0.5 + 0.5) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn identical_embeddings_are_all_ties() {
        let x = Tensor::ones((12, 4), DType::F32, &Device::Cpu).unwrap();
        let s = retrieval_scores(&x, &x).unwrap();
        assert_eq!((s.n, s.recall_at_1, s.recall_at_5, s.recall_at_10), (12, 0.0, 0.0, 0.0));
        assert!((s.mrr - 1.0 / 12.0).abs() < 1e-12);
    }

    #[test]
    fn scale_does_not_matter_and_shapes_are_checked() {
        let q = Tensor::new(&[[1f32, 0.0], [0.0, 2.0]], &Device::Cpu).unwrap();
        let t = Tensor::new(&[[5f32, 0.1], [0.1, 0.3]], &Device::Cpu).unwrap();
        let s = retrieval_scores(&q, &t).unwrap();
        assert_eq!((s.recall_at_1, s.mrr), (1.0, 1.0));
        let three = Tensor::ones((3, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(retrieval_scores(&q, &three).unwrap_err().to_string().contains("one target per query"));
        assert!(ranks(&[vec![1.0, 0.0]]).unwrap_err().to_string().contains("square"));
    }
}
