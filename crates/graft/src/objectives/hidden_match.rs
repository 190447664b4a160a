//! Hidden-state distillation: the student's residual stream after chosen blocks matched to the
//! teacher's at the same positions, through a learned linear projection when the widths differ.
//!
//! Per supervised position and `(teacher layer, student layer)` pair, with `h_s` the student's
//! state (`P h_s` when projected, `P` of shape `[teacher width, student width]`) and `h_t` the
//! teacher's: `mse = mean_d (h_s − h_t)²` or `cosine = 1 − h_s·h_t / (‖h_s‖ ‖h_t‖)`. The term
//! added to the loss is `weight` times their sum over pairs (summed over positions like the
//! cross-entropy, so the step normalises it by the supervised token count).

use crate::config::distill::HiddenLossName;
use crate::{GraftError, Result};
use candle_core::{Device, Tensor, Var, D};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The hidden-state term of a distillation: layer pairs, distance, weight and projections.
pub struct HiddenMatch {
    /// `(teacher layer, student layer)` pairs (block counts, from 1).
    pub pairs: Vec<(usize, usize)>,
    loss: HiddenLossName,
    weight: f64,
    /// One projection per pair when the widths differ (trainable, `distill.projection.{i}`).
    projections: Vec<Var>,
}

impl HiddenMatch {
    /// The term for `pairs` between a teacher of width `teacher_width` and a student of width
    /// `student_width`; projections (when the widths differ) start as PyTorch's `nn.Linear`
    /// weights do, uniform in ±1/√(student width), drawn from `seed`.
    pub fn new(
        pairs: Vec<(usize, usize)>,
        loss: HiddenLossName,
        weight: f64,
        (teacher_width, student_width): (usize, usize),
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut projections = Vec::new();
        if teacher_width != student_width {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6869_6464_656e);
            let bound = 1.0 / (student_width as f32).sqrt();
            for _ in &pairs {
                let w: Vec<f32> = (0..teacher_width * student_width).map(|_| rng.random_range(-bound..bound)).collect();
                projections.push(Var::from_tensor(&Tensor::from_vec(w, (teacher_width, student_width), device)?)?);
            }
        }
        Ok(Self { pairs, loss, weight, projections })
    }

    /// The projections as named trainable variables (empty when the widths agree).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        self.projections.iter().enumerate().map(|(i, v)| (format!("distill.projection.{i}"), v.clone())).collect()
    }

    /// The student's layers, in pair order.
    pub fn student_layers(&self) -> Vec<usize> {
        self.pairs.iter().map(|p| p.1).collect()
    }

    /// The teacher's layers, in pair order.
    pub fn teacher_layers(&self) -> Vec<usize> {
        self.pairs.iter().map(|p| p.0).collect()
    }

    /// The summed, weighted term over supervised rows: `student[i]` `[n, h_s]` (with a graph)
    /// and `teacher[i]` `[n, h_t]` per pair, `mask [n]` (f32 or f64).
    pub fn loss(&self, student: &[Tensor], teacher: &[Tensor], mask: &Tensor) -> Result<Tensor> {
        if student.len() != self.pairs.len() || teacher.len() != self.pairs.len() {
            return Err(GraftError::Input("hidden-state distillation: one state per layer pair expected".into()));
        }
        let work = mask.dtype();
        let mut total: Option<Tensor> = None;
        for (i, (hs, ht)) in student.iter().zip(teacher).enumerate() {
            let mut hs = hs.to_dtype(work)?;
            if let Some(p) = self.projections.get(i) {
                hs = hs.matmul(&p.as_tensor().to_dtype(work)?.t()?)?;
            }
            let ht = ht.to_dtype(work)?.detach();
            if hs.dims() != ht.dims() {
                return Err(GraftError::Input(format!(
                    "hidden-state distillation: student state {:?} and teacher state {:?} differ",
                    hs.dims(),
                    ht.dims()
                )));
            }
            let rows = match self.loss {
                HiddenLossName::Mse => (&hs - &ht)?.sqr()?.mean(D::Minus1)?,
                HiddenLossName::Cosine => {
                    let dot = (&hs * &ht)?.sum(D::Minus1)?;
                    let norms = (hs.sqr()?.sum(D::Minus1)?.sqrt()? * ht.sqr()?.sum(D::Minus1)?.sqrt()?)?;
                    (1.0 - (dot / (norms + 1e-12)?)?)?
                }
            };
            let part = (rows * mask)?.sum_all()?;
            total = Some(match total {
                Some(t) => (t + part)?,
                None => part,
            });
        }
        let total = match total {
            Some(t) => t,
            None => Tensor::zeros((), work, mask.device())?,
        };
        Ok((total * self.weight)?)
    }
}
