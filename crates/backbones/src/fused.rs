//! Convolution + BatchNorm (+ activation) with the BatchNorm folded into the convolution when it normalises with
//! running statistics: one convolution with weight·scale and bias = shift, the activation fused into its epilogue.
//!
//! Exact up to rounding. Used whenever BatchNorm is not using batch statistics (eval, frozen stages); the folded
//! weight is recomputed per call (cheap), so freezing/unfreezing and weight updates need no cache invalidation.
//! Gradients still flow to trainable parameters through the folding ops.

use candle_core::Tensor;

use crate::conv::{conv2d_bias_act, Epilogue};
use crate::error::Result;
use crate::layers::{Activation, BatchNorm2d, Conv2d};

/// `act(bn(conv(x)))`, folded into one convolution when `bn` does not use batch statistics for this call.
pub fn conv_bn_act(conv: &Conv2d, bn: &BatchNorm2d, act: Activation, x: &Tensor, train: bool) -> Result<Tensor> {
    let depthwise = conv.is_depthwise();
    let fold = !bn.uses_batch_stats(train) && (depthwise || conv.cfg.groups == 1);
    if !fold {
        return act.forward(&bn.forward(&conv.forward(x)?, train)?);
    }
    let (scale, shift) = bn.eval_affine()?;
    let co = conv.cfg.out_channels;
    let w = conv.weight.tensor().broadcast_mul(&scale.reshape((co, 1, 1, 1))?)?;
    let bias = match &conv.bias {
        Some(b) => (b.tensor().mul(&scale)? + shift)?,
        None => shift,
    };
    let (_, _, h, wd) = x.dims4()?;
    let c = &conv.cfg;
    let pad = c.padding.amounts(h, wd, c.kernel, c.stride, 1);
    let (epi, rest) = match act {
        Activation::None => (Epilogue::None, Activation::None),
        Activation::Relu => (Epilogue::Relu, Activation::None),
        Activation::Relu6 => (Epilogue::Relu6, Activation::None),
        other => (Epilogue::None, other),
    };
    if depthwise {
        let y = crate::ops::depthwise_conv2d(x, &w, c.stride, pad)?.broadcast_add(&bias.reshape((1, co, 1, 1))?)?;
        return act.forward(&y);
    }
    let y = conv2d_bias_act(x, &w, &bias, c.stride, pad, epi)?;
    rest.forward(&y)
}

/// `act(conv(x))` with the bias and activation fused into the convolution's epilogue where possible.
pub fn conv_act(conv: &Conv2d, act: Activation, x: &Tensor) -> Result<Tensor> {
    let epi = match act {
        Activation::None => Some(Epilogue::None),
        Activation::Relu => Some(Epilogue::Relu),
        Activation::Relu6 => Some(Epilogue::Relu6),
        _ => None,
    };
    match (&conv.bias, epi) {
        (Some(b), Some(epi)) if conv.cfg.groups == 1 => {
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
