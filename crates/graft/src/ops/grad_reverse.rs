//! Gradient reversal (Ganin & Lempitsky, 2015): the identity going forward, `−λ ·` the gradient
//! going back. Put between a feature extractor and a domain classifier, it lets one backward
//! pass train the classifier to tell the domains apart and the features to make them
//! indistinguishable (DANN).

use super::attach::attach1;
use candle_core::Tensor;

/// `x` unchanged, with a backward that hands `−lambda · g` to `x`.
pub fn grad_reverse(x: &Tensor, lambda: f64) -> candle_core::Result<Tensor> {
    attach1("grad-reverse", x, x.detach(), Box::new(move |_, _, g| Ok(Some(g.affine(-lambda, 0.0)?))))
}
