//! Custom tensor operations candle 0.11 lacks or runs slowly: depthwise convolution and max-pooling with backward.

/// Depthwise 2-D convolution: `x` N×C×H×W, `w` C×1×k×k, padding `[top, bottom, left, right]`.
///
/// Reference implementation through candle's grouped convolution (correct, slow: one small convolution per channel).
pub fn depthwise_conv2d(
    x: &candle_core::Tensor,
    w: &candle_core::Tensor,
    stride: usize,
    pad: [usize; 4],
) -> candle_core::Result<candle_core::Tensor> {
    let c = x.dim(1)?;
    let symmetric = pad.iter().all(|&p| p == pad[0]);
    if symmetric {
        x.conv2d(w, pad[0], stride, 1, c)
    } else {
        x.pad_with_zeros(2, pad[0], pad[1])?
            .pad_with_zeros(3, pad[2], pad[3])?
            .conv2d(w, 0, stride, 1, c)
    }
}

/// Max-pooling with a square `kernel`, `stride` and symmetric zero-free `padding` (padded cells never win).
///
/// Reference implementation: candle's forward; its backward fails when `kernel != stride`.
pub fn max_pool2d(
    x: &candle_core::Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> candle_core::Result<candle_core::Tensor> {
    let x = if padding > 0 {
        let (n, c, h, w) = x.dims4()?;
        let neg = candle_core::Tensor::full(f32::MIN, (n, c, h + 2 * padding, w + 2 * padding), x.device())?
            .to_dtype(x.dtype())?;
        neg.slice_assign(&[0..n, 0..c, padding..padding + h, padding..padding + w], x)?
    } else {
        x.clone()
    };
    x.max_pool2d_with_stride(kernel, stride)
}
