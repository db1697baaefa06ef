//! Folding an eval-mode BatchNorm into the convolution before it: the one place where
//! `scale = γ / √(var + ε)` and `shift = β − mean · scale` are computed and applied.

use candle_core::Tensor;

use crate::error::{Error, Result};

/// The parameters and running statistics of a BatchNorm that normalises with its running statistics.
#[derive(Debug, Clone)]
pub struct BatchNormStats {
    /// Scale γ, one per channel.
    pub gamma: Tensor,
    /// Shift β, one per channel.
    pub beta: Tensor,
    /// Running mean, one per channel.
    pub mean: Tensor,
    /// Running (biased) variance, one per channel.
    pub var: Tensor,
    /// Epsilon added to the variance.
    pub eps: f64,
}

impl BatchNormStats {
    /// The per-channel affine `(scale, shift)` equal to eval-mode normalisation: `y = x · scale + shift`.
    ///
    /// Built from tensor ops, so gradients reach γ and β when they are variables.
    pub fn scale_shift(&self) -> Result<(Tensor, Tensor)> {
        let scale = self.gamma.broadcast_div(&(&self.var + self.eps)?.sqrt()?)?;
        let shift = (&self.beta - self.mean.broadcast_mul(&scale)?)?;
        Ok((scale, shift))
    }
}

/// Fold `bn` into the convolution before it: `(weight · scale, bias · scale + shift)`.
///
/// `weight` is `out × in/groups × k × k`, `bias` (if any) and every statistic of `bn` have `out` elements.
/// Convolving with the result equals the convolution followed by the BatchNorm, exactly up to rounding; the fold
/// is made of tensor ops, so gradients flow to trainable weights and BatchNorm parameters through it.
pub fn fold_bn(weight: &Tensor, bias: Option<&Tensor>, bn: &BatchNormStats) -> Result<(Tensor, Tensor)> {
    let out = weight.dim(0)?;
    for (what, t) in [
        ("gamma", Some(&bn.gamma)),
        ("beta", Some(&bn.beta)),
        ("running mean", Some(&bn.mean)),
        ("running variance", Some(&bn.var)),
        ("conv bias", bias),
    ] {
        if let Some(t) = t {
            if t.dims() != [out] {
                return Err(Error::Msg(format!(
                    "fold_bn: {what} has shape {:?}, expected [{out}]",
                    t.dims()
                )));
            }
        }
    }
    let (scale, shift) = bn.scale_shift()?;
    let mut bshape = vec![1; weight.rank()];
    bshape[0] = out;
    let weight = weight.broadcast_mul(&scale.reshape(bshape)?)?;
    let bias = match bias {
        Some(b) => (b.mul(&scale)? + shift)?,
        None => shift,
    };
    Ok((weight, bias))
}
