//! Learning-rate schedules: linear warm-up, then constant, linear decay or cosine decay to zero.

/// The decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Peak rate for every step after warm-up.
    Constant,
    /// Linear decay from the peak to 0 at the last step.
    Linear,
    /// Half-cosine decay from the peak to 0 at the last step.
    Cosine,
}

/// A learning-rate schedule over `total` optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Decay shape.
    pub kind: ScheduleKind,
    /// Peak learning rate.
    pub peak: f64,
    /// Steps of linear warm-up: step `s < warmup` uses `peak · s / warmup`, so the first step
    /// uses 0.
    pub warmup: u64,
    /// Total optimizer steps.
    pub total: u64,
}

impl Schedule {
    /// Learning rate for optimizer step `step` (0-based: the first update is step 0), as
    /// transformers' `get_{constant,linear,cosine}_schedule_with_warmup` compute it for the
    /// update they precede: `peak · step / warmup` during warm-up (0 for the first update), then
    /// the decay over the remaining `total - warmup` steps.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.peak * step as f64 / self.warmup as f64;
        }
        let decay_steps = self.total.saturating_sub(self.warmup).max(1) as f64;
        let progress = ((step - self.warmup) as f64 / decay_steps).min(1.0);
        match self.kind {
            ScheduleKind::Constant => self.peak,
            ScheduleKind::Linear => self.peak * (1.0 - progress),
            ScheduleKind::Cosine => self.peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of transformers' `get_cosine_schedule_with_warmup(opt, 2, 10)` /
    /// `get_linear_schedule_with_warmup`: the multiplier in effect for updates 0, 1, 2 and 6.
    #[test]
    fn warmup_then_decay() {
        let s = Schedule { kind: ScheduleKind::Cosine, peak: 1.0, warmup: 2, total: 10 };
        assert_eq!(s.lr(0), 0.0, "the first update of a warm-up uses lr 0, as in transformers");
        assert_eq!(s.lr(1), 0.5);
        assert_eq!(s.lr(2), 1.0);
        assert!((s.lr(6) - 0.5).abs() < 1e-12);
        let l = Schedule { kind: ScheduleKind::Linear, ..s };
        assert!((l.lr(6) - 0.5).abs() < 1e-12);
        assert_eq!(Schedule { kind: ScheduleKind::Constant, ..s }.lr(9), 1.0);
    }
}
