//! Dropout on the encoder's training path (BERT's hidden and attention-probability dropout),
//! with masks drawn from a ChaCha8 stream fixed by `(seed, stream)`: a resumed run, or a
//! gradient check, draws exactly the masks of the original. Sites draw in forward order, so one
//! forward's masks are a pure function of the seed, the stream and the batch's shape.

use crate::Result;
use candle_core::Tensor;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;

/// Mixed into the seed so the dropout streams differ from the masking and data-order streams of
/// the same seed.
const DROPOUT_SALT: u64 = 0x5d0b_0a7e_11c3_9e15;

/// Dropout of one forward: rate `p` and a generator drawn from in forward order.
#[derive(Debug)]
pub struct Dropout {
    p: f64,
    rng: RefCell<ChaCha8Rng>,
}

impl Dropout {
    /// Dropout at rate `p` (in `[0, 1)`) with masks from the stream `(seed, stream)`; a training
    /// step uses its micro-step as the stream.
    pub fn new(p: f64, seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ DROPOUT_SALT);
        rng.set_stream(stream);
        Self { p, rng: RefCell::new(rng) }
    }

    /// `x` with each element zeroed with probability `p` and the rest scaled by `1 / (1 − p)`
    /// (inverted dropout, as PyTorch). Differentiable: the mask is a constant factor.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = (1.0 / (1.0 - self.p)) as f32;
        // A draw below `p · 2³²` drops the element.
        let threshold = (self.p * 4_294_967_296.0) as u64;
        let mut rng = self.rng.borrow_mut();
        let mask: Vec<f32> =
            (0..x.elem_count()).map(|_| if u64::from(rng.next_u32()) < threshold { 0.0 } else { keep }).collect();
        let mask = Tensor::from_vec(mask, x.dims(), x.device())?.to_dtype(x.dtype())?;
        Ok(x.mul(&mask)?)
    }
}
