//! Convolution + BatchNorm (+ activation) with the BatchNorm folded into the convolution when it normalises with
//! running statistics: one convolution with the folded weight and bias, the activation fused into its epilogue
//! (`kernels::fused`).
//!
//! Exact up to rounding. Used whenever BatchNorm is not using batch statistics (eval, frozen stages); the folded
//! weight is recomputed per call (cheap), so freezing/unfreezing and weight updates need no cache invalidation.
//! Gradients still flow to trainable parameters through the folding ops.

use candle_core::Tensor;

use crate::conv::{conv2d_bias_act, Epilogue};
use crate::error::Result;
use crate::layers::{Activation, BatchNorm2d, Conv2d};

/// The part of `act` the convolution epilogue can apply, and the rest applied after it.
fn split(act: Activation) -> (Option<Epilogue>, Activation) {
    match act {
        Activation::None => (Some(Epilogue::None), Activation::None),
        Activation::Relu => (Some(Epilogue::Relu), Activation::None),
        Activation::Relu6 => (Some(Epilogue::Relu6), Activation::None),
        other => (None, other),
    }
}

/// `act(bn(conv(x)))`, folded into one convolution when `bn` does not use batch statistics for this call.
pub fn conv_bn_act(conv: &Conv2d, bn: &BatchNorm2d, act: Activation, x: &Tensor, train: bool) -> Result<Tensor> {
    let depthwise = conv.is_depthwise();
    let fold = !bn.uses_batch_stats(train) && (depthwise || conv.cfg.groups == 1);
    if !fold {
        return bn.forward_act(&conv.forward(x)?, train, act);
    }
    let (_, _, h, wd) = x.dims4()?;
    let c = &conv.cfg;
    let pad = c.padding.amounts(h, wd, c.kernel, c.stride, 1);
    let (epi, rest) = split(act);
    let y = kernels::fused::conv_bn_act(
        x,
        &conv.weight.tensor(),
        conv.bias.as_ref().map(|b| b.tensor()).as_ref(),
        &bn.stats(),
        depthwise,
        c.stride,
        pad,
        epi.unwrap_or(Epilogue::None),
    )?;
    rest.forward(&y)
}

/// `act(conv(x))` with the bias and activation fused into the convolution's epilogue where possible.
pub fn conv_act(conv: &Conv2d, act: Activation, x: &Tensor) -> Result<Tensor> {
    match (&conv.bias, split(act)) {
        (Some(b), (Some(epi), _)) if conv.cfg.groups == 1 => {
            let (_, _, h, wd) = x.dims4()?;
            let c = &conv.cfg;
            let pad = c.padding.amounts(h, wd, c.kernel, c.stride, 1);
            Ok(conv2d_bias_act(
                x,
                &conv.weight.tensor(),
                &b.tensor(),
                c.stride,
                pad,
                epi,
            )?)
        }
        _ => act.forward(&conv.forward(x)?),
    }
}
