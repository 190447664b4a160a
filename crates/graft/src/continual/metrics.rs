//! Continual-learning metrics from a score matrix `R` (T × T): `R[j][i]` is the score on task
//! `i` after training through task `j` (0-based here; the papers count from 1).
//!
//! - backward transfer (Lopez-Paz & Ranzato 2017, GEM): `BWT = 1/(T−1) Σ_{i<T−1} (R[T−1][i] − R[i][i])`;
//! - forward transfer, with `b_i` the score of the model before any training:
//!   `FWT = 1/(T−1) Σ_{i≥1} (R[i−1][i] − b_i)`;
//! - forgetting of task `i < T−1` (Chaudhry et al. 2018): `max_{l<T−1} R[l][i] − R[T−1][i]`,
//!   and the average forgetting, their mean;
//! - average final score: `1/T Σ_i R[T−1][i]`.
//!
//! Each task's score is "higher is better" (accuracy) or a loss ("lower is better"); with a loss the
//! forgetting is `R[T−1][i] − min_{l<T−1} R[l][i]`, so forgetting is positive when the task got
//! worse in either direction. BWT and FWT stay differences of raw scores (a loss that rose
//! gives a positive BWT: read it with the direction).

use crate::{GraftError, Result};
use serde::{Deserialize, Serialize};

/// Which way a score improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Higher is better (accuracy).
    HigherIsBetter,
    /// Lower is better (a held-out loss).
    LowerIsBetter,
}

/// A T × T score matrix with the direction of its scores and, optionally, the base scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreMatrix {
    /// `r[j][i]`: score on task `i` after training through task `j`.
    pub r: Vec<Vec<f64>>,
    /// The score on each task before any training (`b_i`), for FWT.
    pub base: Option<Vec<f64>>,
    /// Which way each task's score improves (one per task: an accuracy and a loss may sit in
    /// one matrix; the averages then mix their units, the per-task values do not).
    pub directions: Vec<Direction>,
}

/// The metrics of one score matrix. BWT, FWT and forgetting are `None` for T = 1 (they need
/// an earlier task); FWT also without base scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinualMetrics {
    /// Forgetting of each task but the last (empty for T = 1).
    pub forgetting: Vec<f64>,
    /// Mean of `forgetting`.
    pub average_forgetting: Option<f64>,
    /// Backward transfer.
    pub bwt: Option<f64>,
    /// Forward transfer (needs base scores).
    pub fwt: Option<f64>,
    /// Mean score of the last row.
    pub average_final: f64,
}

impl ScoreMatrix {
    /// Checks the shape (square, at least 1 × 1, base of length T) and that every entry is a
    /// finite number; names the first bad entry.
    pub fn check(&self) -> Result<()> {
        let t = self.r.len();
        if t == 0 {
            return Err(GraftError::Input("continual metrics: the score matrix has no row (no task)".into()));
        }
        for (j, row) in self.r.iter().enumerate() {
            if row.len() != t {
                return Err(GraftError::Input(format!(
                    "continual metrics: row {j} has {} scores; a matrix of {t} tasks needs {t} per row",
                    row.len()
                )));
            }
            if let Some(i) = row.iter().position(|x| !x.is_finite()) {
                return Err(GraftError::Input(format!(
                    "continual metrics: score R[{j}][{i}] (task {i} after stage {j}) is missing or not a finite \
                     number ({})",
                    row[i]
                )));
            }
        }
        if self.directions.len() != t {
            return Err(GraftError::Input(format!(
                "continual metrics: {} score directions for {t} tasks",
                self.directions.len()
            )));
        }
        if let Some(b) = &self.base {
            if b.len() != t {
                return Err(GraftError::Input(format!("continual metrics: {} base scores for {t} tasks", b.len())));
            }
            if let Some(i) = b.iter().position(|x| !x.is_finite()) {
                return Err(GraftError::Input(format!(
                    "continual metrics: base score of task {i} is missing or not a finite number ({})",
                    b[i]
                )));
            }
        }
        Ok(())
    }

    /// Every metric of the matrix (after [`ScoreMatrix::check`]).
    pub fn metrics(&self) -> Result<ContinualMetrics> {
        self.check()?;
        let t = self.r.len();
        let last = &self.r[t - 1];
        let average_final = last.iter().sum::<f64>() / t as f64;
        let forgetting: Vec<f64> = (0..t - 1)
            .map(|i| {
                let earlier = self.r[..t - 1].iter().map(|row| row[i]);
                match self.directions[i] {
                    Direction::HigherIsBetter => earlier.fold(f64::NEG_INFINITY, f64::max) - last[i],
                    Direction::LowerIsBetter => last[i] - earlier.fold(f64::INFINITY, f64::min),
                }
            })
            .collect();
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let bwt: Vec<f64> = (0..t - 1).map(|i| last[i] - self.r[i][i]).collect();
        let fwt = self.base.as_ref().and_then(|b| {
            let d: Vec<f64> = (1..t).map(|i| self.r[i - 1][i] - b[i]).collect();
            mean(&d)
        });
        Ok(ContinualMetrics { average_forgetting: mean(&forgetting), forgetting, bwt: mean(&bwt), fwt, average_final })
    }

    /// [`ScoreMatrix::metrics`] with the backward transfer required: an error for T = 1,
    /// where there is no earlier task to transfer to.
    pub fn bwt(&self) -> Result<f64> {
        self.metrics()?.bwt.ok_or_else(|| {
            GraftError::Input("continual metrics: backward transfer needs at least two tasks (T = 1)".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn accuracy_matrix_by_hand() {
        // After task 0: 0.9 on it; after task 1: task 0 drops to 0.6; after task 2: 0.5.
        let m = ScoreMatrix {
            r: vec![vec![0.9, 0.3, 0.2], vec![0.6, 0.8, 0.4], vec![0.5, 0.7, 0.95]],
            base: Some(vec![0.25, 0.25, 0.3]),
            directions: vec![Direction::HigherIsBetter; 3],
        };
        let got = m.metrics().unwrap();
        // forgetting: task 0 max(0.9, 0.6) − 0.5 = 0.4; task 1 max(0.3, 0.8) − 0.7 = 0.1.
        assert_eq!(got.forgetting.len(), 2);
        close(got.forgetting[0], 0.4);
        close(got.forgetting[1], 0.1);
        close(got.average_forgetting.unwrap(), 0.25);
        // BWT: ((0.5 − 0.9) + (0.7 − 0.8)) / 2 = −0.25.
        close(got.bwt.unwrap(), -0.25);
        // FWT: ((0.3 − 0.25) + (0.4 − 0.3)) / 2 = 0.075.
        close(got.fwt.unwrap(), 0.075);
        close(got.average_final, (0.5 + 0.7 + 0.95) / 3.0);
        close(m.bwt().unwrap(), -0.25);
    }

    #[test]
    fn loss_matrix_forgetting_is_the_rise_over_the_best() {
        let m = ScoreMatrix {
            r: vec![vec![1.0, 3.0], vec![1.5, 0.8]],
            base: None,
            directions: vec![Direction::LowerIsBetter; 2],
        };
        let got = m.metrics().unwrap();
        close(got.forgetting[0], 0.5); // 1.5 − min(1.0)
        close(got.bwt.unwrap(), 0.5); // raw difference: the loss rose
        assert_eq!(got.fwt, None);
        close(got.average_final, 1.15);
        // The same entries read as accuracies forget nothing on task 0 beyond 1.0 − 1.5 < 0.
        let acc = ScoreMatrix { directions: vec![Direction::HigherIsBetter; 2], ..m };
        close(acc.metrics().unwrap().forgetting[0], -0.5);
    }

    #[test]
    fn one_task_has_no_transfer() {
        let m = ScoreMatrix { r: vec![vec![0.7]], base: Some(vec![0.5]), directions: vec![Direction::HigherIsBetter] };
        let got = m.metrics().unwrap();
        assert!(got.forgetting.is_empty());
        assert_eq!((got.average_forgetting, got.bwt, got.fwt), (None, None, None));
        close(got.average_final, 0.7);
        let e = m.bwt().unwrap_err().to_string();
        assert!(e.contains("at least two tasks"), "{e}");
    }

    #[test]
    fn bad_matrices_are_refused_naming_the_entry() {
        let nan = ScoreMatrix {
            r: vec![vec![0.9, 0.1], vec![f64::NAN, 0.8]],
            base: None,
            directions: vec![Direction::HigherIsBetter; 2],
        };
        let e = nan.metrics().unwrap_err().to_string();
        assert!(e.contains("R[1][0]"), "{e}");
        let ragged = ScoreMatrix { r: vec![vec![0.9, 0.1], vec![0.8]], ..nan.clone() };
        assert!(ragged.metrics().unwrap_err().to_string().contains("row 1 has 1 scores"));
        let empty = ScoreMatrix { r: vec![], ..nan.clone() };
        assert!(empty.metrics().unwrap_err().to_string().contains("no task"));
        let base = ScoreMatrix { r: vec![vec![0.9, 0.1], vec![0.8, 0.7]], base: Some(vec![0.5]), ..nan.clone() };
        assert!(base.metrics().unwrap_err().to_string().contains("1 base scores for 2 tasks"));
        let dirs =
            ScoreMatrix { r: vec![vec![0.9, 0.1], vec![0.8, 0.7]], directions: vec![Direction::LowerIsBetter], ..nan };
        assert!(dirs.metrics().unwrap_err().to_string().contains("1 score directions for 2 tasks"));
    }
}
