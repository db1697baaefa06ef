//! Convolution + eval-mode BatchNorm + activation as one convolution: the BatchNorm folded into the weight and
//! bias ([`fold_bn`]), ReLU/ReLU6 fused into the convolution's epilogue.

use candle_core::Tensor;

use crate::conv::{conv2d_bias_act, relu6, Epilogue};
use crate::error::Result;
use crate::fold::{fold_bn, BatchNormStats};
use crate::ops::depthwise_conv2d;

/// `epi(bn(conv(x)))` with `bn` folded in: a dense (groups = 1) or depthwise (`depthwise`) convolution of `x`
/// (N×C×H×W) by `weight` with an optional `bias`, `stride` and padding `[top, bottom, left, right]`.
///
/// The folded weight is recomputed per call (cheap), so it follows weight updates, and gradients still reach
/// trainable parameters through the fold.
#[allow(clippy::too_many_arguments)]
pub fn conv_bn_act(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    bn: &BatchNormStats,
    depthwise: bool,
    stride: usize,
    pad: [usize; 4],
    epi: Epilogue,
) -> Result<Tensor> {
    let (w, bias) = fold_bn(weight, bias, bn)?;
    if depthwise {
        let co = w.dim(0)?;
        let y = depthwise_conv2d(x, &w, stride, pad)?.broadcast_add(&bias.reshape((1, co, 1, 1))?)?;
        return Ok(match epi {
            Epilogue::None => y,
            Epilogue::Relu => y.relu()?,
            Epilogue::Relu6 => relu6(&y)?,
        });
    }
    Ok(conv2d_bias_act(x, &w, &bias, stride, pad, epi)?)
}
