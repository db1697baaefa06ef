//! Folding an eval-mode BatchNorm into the convolution before it.

use candle_core::{bail, Result, Tensor};

/// Fold a per-channel affine `y · scale + shift` (eval-mode BatchNorm) into the preceding convolution.
///
/// `conv_weight` is `out × in/groups × k × k`, `conv_bias` (if any), `bn_scale` and `bn_shift` have `out` elements.
/// Returns `(weight · scale, bias · scale + shift)`: convolving with them equals the convolution followed by the
/// affine, exactly up to rounding.
pub fn fold_bn(
    conv_weight: &Tensor,
    conv_bias: Option<&Tensor>,
    bn_scale: &Tensor,
    bn_shift: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let out = conv_weight.dim(0)?;
    for (what, t) in [
        ("scale", Some(bn_scale)),
        ("shift", Some(bn_shift)),
        ("conv bias", conv_bias),
    ] {
        if let Some(t) = t {
            if t.dims() != [out] {
                bail!("fold_bn: {what} has shape {:?}, expected [{out}]", t.dims());
            }
        }
    }
    let mut bshape = vec![1; conv_weight.rank()];
    bshape[0] = out;
    let weight = conv_weight.broadcast_mul(&bn_scale.reshape(bshape)?)?;
    let bias = match conv_bias {
        Some(b) => (b * bn_scale)?.add(bn_shift)?,
        None => bn_shift.clone(),
    };
    Ok((weight, bias))
}
